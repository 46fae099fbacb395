"""Exports over sequences of runs, checked against the simulated platform (tests/platform_sim.py):
what a run that stopped part-way, or an operator's mistake, leaves on the platform for the runs after."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from made_once import made_once_fixture
from platform_sim import Platform
from test_export_removals import SID, email, export, sha, write_job, write_profiles, write_targets

import transforms.export
import transforms.export_paths
from transforms.config import ConfigError
from transforms.output_lock import LockHeld


def stopped_before_commit(commit_state):
    """``commit_state`` failing where it would write ``_SUCCESS``: the run stops after its publish."""
    def stopped(state, manifest, name="_SUCCESS"):
        if name == "_SUCCESS":
            raise OSError("stopped before the state's commit")
        commit_state(state, manifest, name)
    return stopped


def _stopped_second_export(work):
    """Three profiles; audience A's export of p0, p1 into out1 on 2026-11-01 (its state in ``state``),
    then its export of all three (t2.csv) into out2 on 2026-11-02, stopped after its publish, before
    its state's commit: ``(job, state, flags)``."""
    job = write_job(work / "job")
    write_profiles(job.parent, [0, 1, 2])
    state = work / "state"
    flags = ("--segment-id", SID, "--state", state, "--allow-shrink")
    export(job, write_targets(work / "t1.csv", [0, 1]), work / "out1", *flags, run_date="2026-11-01")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", stopped_before_commit(transforms.export.commit_state))
        with pytest.raises(Exception):
            export(job, write_targets(work / "t2.csv", [0, 1, 2]), work / "out2", *flags, run_date="2026-11-02")
    return job, state, flags


made_stopped_second_export = made_once_fixture("stopped-second-export", _stopped_second_export)


@pytest.fixture
def stopped_second_export(made_stopped_second_export):
    """``(work, job, state, flags)``: the module's stopped second export as its runs left it. Its folder
    ``work`` is put back from the untouched copy before each test, at the same paths (the export state
    records its outputs by absolute path): each test runs on what runs of its own would leave."""
    return (made_stopped_second_export.work, *made_stopped_second_export.restored())


def test_a_run_stopped_between_its_published_files_and_its_state_is_not_forgotten(stopped_second_export, monkeypatch):
    """Its report.json says it completed, so its files go to the platform; the next run, computed
    against the state before it, never removed what it added (p02 stayed in the audience for good)."""
    work, job, state, flags = stopped_second_export
    platform, member = Platform(), f"d_sid={SID}"
    platform.apply(work / "out1")
    assert (work / "out2" / "report.json").exists()  # the stopped run's
    platform.apply(work / "out2")  # published: delivered

    later = ("--targets", write_targets(work / "t3.csv", [0]))
    with pytest.raises(ConfigError, match="version 2 .* never committed.*out2.*2026-11-02.*_PENDING"):
        export(job, later[1], work / "out3", *flags, run_date="2026-11-03")
    # A retry into its --output on its run date replaces its files (not delivered), as after a commit.
    retry = export(job, write_targets(work / "t2.csv", [0, 1, 2]), work / "out2", *flags,
                   run_date="2026-11-02")
    assert (retry["state_version"], retry["added"]) == (2, 1)

    # Delivered: its manifest is committed by hand, and the next run removes what it added.
    stopped = stopped_before_commit(transforms.export.commit_state)
    with monkeypatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", stopped)
        with pytest.raises(Exception):
            export(job, write_targets(work / "t4.csv", [0, 1]), work / "out4", *flags, run_date="2026-11-04")
    platform.apply(work / "out4")
    pending = next(state.rglob("_PENDING"))
    pending.rename(pending.with_name("_SUCCESS"))
    export(job, later[1], work / "out5", *flags, run_date="2026-11-05")
    platform.apply(work / "out5")
    assert platform.members(member) == {sha(email(0))}


def test_an_overwrite_while_another_audience_waits_as_pending_is_refused(tmp_path, monkeypatch):
    """B's stopped run delivered its files (p01..p03 left B) but B's state still says they hold B: an
    .overwrite of A, listing them with the traits B's state gives, put them back in B."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    state, platform = tmp_path / "state", Platform()
    b = ("--segment-id", 22, "--state", state, "--allow-shrink")
    export(job, write_targets(tmp_path / "t.csv", [0, 1, 2, 3]), tmp_path / "b1", *b, audience="B")
    platform.apply(tmp_path / "b1")
    with monkeypatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", stopped_before_commit(transforms.export.commit_state))
        with pytest.raises(Exception):
            export(job, write_targets(tmp_path / "t0.csv", [0]), tmp_path / "b2", *b, audience="B", run_date="2026-11-23")
    platform.apply(tmp_path / "b2")
    with pytest.raises(ConfigError, match="audience 'B' .*version 2, published but never committed"):
        export(job, tmp_path / "t.csv", tmp_path / "a", "--segment-id", SID, "--state", state, "--mode", "overwrite",
               run_date="2026-11-24")


def test_an_existing_export_that_lost_a_part_is_refused(tmp_path):
    """A copy of a previous export that lost a part of exported/ (or removed/) is what the platform
    holds minus those pairs: their members were never removed (exit 0). Its report's pair counts
    are checked against the parts, as the export state's are."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [*range(12)])
    first = tmp_path / "first"
    export(job, write_targets(tmp_path / "t1.csv", [*range(12)]), first, "--segment-id", SID)
    parts = sorted((first / "exported").glob("*.parquet"))
    assert len(parts) > 1
    parts[0].unlink()
    with pytest.raises(ConfigError, match=r"--existing .*first: exported/ holds \d+ pairs, its report.json sent 12"):
        export(job, write_targets(tmp_path / "t2.csv", [0]), tmp_path / "second", "--segment-id", SID,
               "--existing", first, "--allow-shrink", run_date="2026-11-23")


def test_an_overwrite_with_another_audience_missing_a_state_part_is_refused(tmp_path):
    """The other audiences' traits an .overwrite line keeps come from their export state: with a part
    of B's gone, A's overwrite listed B's members without B's trait, taking them out of B on the
    platform while B's state still held them (never sent again)."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [*range(12)])
    state, platform = tmp_path / "state", Platform()
    export(job, write_targets(tmp_path / "t.csv", [*range(12)]), tmp_path / "b", "--segment-id", 22, "--state", state,
           audience="B")
    platform.apply(tmp_path / "b")
    parts = sorted(state.glob("crm/B/v-000001/members/*.parquet"))
    assert len(parts) > 1
    parts[0].unlink()
    with pytest.raises(ConfigError, match=r"audience 'B' holds \d+ pairs in .*members.*, its _SUCCESS says 12"):
        export(job, tmp_path / "t.csv", tmp_path / "a", "--segment-id", SID, "--state", state, "--mode", "overwrite")


@pytest.mark.parametrize("run_date", ["2001-09-08", "2001-09-09", "2286-11-21"])
def test_a_run_date_whose_timestamp_is_not_ten_digits_is_refused(tmp_path, run_date):
    """formats.md: the onboarding file's TIMESTAMP is 10-digit UNIX seconds; 2001-09-08 named the
    files ftp_dpm_12345_999907200.sync.gz, exit 0."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0])
    # 2001-09-09's midnight is 999993600 (10**9 is at 01:46:40): the message named it as allowed.
    with pytest.raises(ConfigError, match=f"--run-date {run_date}: .* not 10-digit UNIX seconds"
                                          ".*2001-09-10 to 2286-11-20"):
        export(job, write_targets(tmp_path / "t.csv", [0]), tmp_path / "out", run_date=run_date)
    assert not (tmp_path / "out" / "onboarding").exists()


def test_a_retry_of_a_stopped_run_that_fails_before_its_publish_keeps_it_pending(stopped_second_export, monkeypatch):
    """The retry the refusal asks for (its --output, its run date) cleared the stopped run's version,
    _PENDING and all, at launch: failing before its own publish, it left the stopped run's files (maybe
    delivered) in --output with nothing recording them, and the next export was no longer refused."""
    work, job, state, flags = stopped_second_export
    t2 = work / "t2.csv"  # the stopped run's targets

    def failing(state, manifest, name="_SUCCESS"):
        raise OSError("the retry stops before its publish")

    with monkeypatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", failing)
        with pytest.raises(Exception, match="before its publish"):
            export(job, t2, work / "out2", *flags, run_date="2026-11-02")
    assert (work / "out2" / "report.json").exists()  # the stopped run's files, still there
    with pytest.raises(ConfigError, match="version 2 .* never committed"):
        export(job, write_targets(work / "t3.csv", [0]), work / "out3", *flags, run_date="2026-11-03")


def test_a_second_run_into_a_held_output_leaves_the_live_runs_state_alone(tmp_path, monkeypatch):
    """The same export started twice (a double start, a retry while the first still runs): the second,
    refused by the output lock, had first cleared the audience's new version as a killed run's
    leftover, the parts the live run had written there; the live run committed a version holding
    none of its 6 pairs, and the next export failed ('pairs read from the export state (expected 6,
    accounted for 0)'), its delivered files recorded nowhere. (The audience's state lock refuses it now,
    before it reads the state.)"""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [*range(6)])
    state = tmp_path / "state"
    flags = ("--segment-id", SID, "--state", state, "--allow-shrink")
    export(job, write_targets(tmp_path / "t1.csv", [0, 1, 2, 3]), tmp_path / "out1", *flags, run_date="2026-11-01")
    t2, commit = write_targets(tmp_path / "t2.csv", [*range(6)]), transforms.export.commit_state

    def second_run_meanwhile(run_state, manifest, name="_SUCCESS"):
        if name == "_PENDING":  # the live run's parts are written: the same command starts again
            with pytest.raises(LockHeld, match="audience 'A' .* being exported by another run .*state/crm/A is in use"):
                export(job, t2, tmp_path / "out2", *flags, run_date="2026-11-02")
        commit(run_state, manifest, name)

    monkeypatch.setattr(transforms.export, "commit_state", second_run_meanwhile)
    assert export(job, t2, tmp_path / "out2", *flags, run_date="2026-11-02")["state_version"] == 2
    monkeypatch.undo()
    assert len(list(state.glob("crm/A/v-000002/members/*.parquet"))) > 0
    assert export(job, write_targets(tmp_path / "t3.csv", [*range(6)]), tmp_path / "out3", *flags,
                  run_date="2026-11-03")["already_present"] == 6


def _argv(job, targets, out, *flags, audience="A", run_date="2026-11-02"):
    return ["--config", str(job), "--audience", audience, "--targets", str(targets), "--output", str(out),
            "--run-date", run_date, *map(str, flags)]


def _meanwhile(run, *argv) -> dict:
    """``run(argv)`` in its own thread, started and waited for now (while the caller's run is live)."""
    import threading

    done: dict = {}

    def go():
        try:
            done["result"] = run(list(argv))
        except Exception as exc:  # noqa: BLE001 - the caller asserts what it was
            done["error"] = exc

    thread = threading.Thread(target=go)
    thread.start()
    thread.join(timeout=600)
    return done


def _first_export(tmp_path):
    """Six profiles; audience A's first export (p0, p1) into out1 with its state in ``state``, applied to
    a platform: ``(job, state, platform, flags)`` for the exports that follow."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [*range(6)])
    state, platform = tmp_path / "state", Platform()
    flags = ("--segment-id", SID, "--state", state, "--allow-shrink")
    export(job, write_targets(tmp_path / "t1.csv", [0, 1]), tmp_path / "out1", *flags, run_date="2026-11-01")
    platform.apply(tmp_path / "out1")
    return job, state, platform, flags


made_first_export = made_once_fixture("first-export", _first_export)


@pytest.fixture
def first_export(made_first_export):
    """``(work, job, state, platform, flags)``: the module's first export as its run left it. Its folder
    ``work`` is put back from the untouched copy before each test, at the same paths (the export state
    records its outputs by absolute path), and the platform is a copy: each test runs on what a run of
    its own would leave."""
    job, state, platform, flags = made_first_export.restored()
    return made_first_export.work, job, state, platform, flags


def test_two_exports_of_one_audience_into_two_outputs_at_once_the_second_is_refused(first_export, monkeypatch, capsys):
    """X and Y export audience A into out_x and out_y (the output lock is per folder). Y ran while X was
    between its _PENDING and its publish: it cleared X's version as a killed run's, committed its own;
    X published its files, then failed 'another export committed ... Nothing was published': its 4
    members went to the platform, no state recorded them, and no later export removed them."""
    from pipelines import export_audience

    work, job, state, platform, flags = first_export
    member = f"d_sid={SID}"
    commit, y = transforms.export.commit_state, {}

    def y_meanwhile(run_state, manifest, name="_SUCCESS"):
        commit(run_state, manifest, name)
        if name == "_PENDING" and not y:  # X is live, its parts and _PENDING written: Y starts and ends
            y["started"] = True  # (Y's own commits come here too)
            y.update(_meanwhile(export_audience.main, *_argv(job, write_targets(work / "ty.csv", [0, 1]),
                                                             work / "out_y", *flags)))

    monkeypatch.setattr(transforms.export, "commit_state", y_meanwhile)
    x = export(job, write_targets(work / "tx.csv", [*range(6)]), work / "out_x", *flags, run_date="2026-11-02")
    monkeypatch.undo()
    line = [l for l in capsys.readouterr().err.splitlines() if "audience 'A'" in l]
    # exit 1, as a held output lock: a live run is no configuration error, and a retry once it ends runs (exit 2 is not retried)
    assert y["result"] == 1 and len(line) == 1 and "being exported by another run" in line[0], (y, line)
    assert not (work / "out_y").exists() and not list(state.rglob("_PENDING"))
    assert (x["state_version"], x["added"]) == (2, 4)
    platform.apply(work / "out_x")
    later = export(job, write_targets(work / "t3.csv", [0, 1]), work / "out3", *flags, run_date="2026-11-03")
    platform.apply(work / "out3")
    assert later["removed"] == 4 and platform.members(member) == {sha(email(i)) for i in (0, 1)}


def test_an_export_that_read_the_state_before_a_live_run_committed_is_refused(first_export, monkeypatch):
    """The state was read in the preflight, the output lock taken after: Y (the next run date, the same
    --output) read version 1 while X was live; X committed version 2 (delivered) and released the lock;
    Y then cleared version 2 as a killed run's, computed against version 1 and committed its own version
    2, exit 0: 3 of X's members stayed on the platform for good. The state's lock is taken before it is
    read: the run that comes second is refused."""
    from pipelines import export_audience

    work, job, state, platform, flags = first_export
    member = f"d_sid={SID}"
    read, x = export_audience.check_export_inputs, {}

    def x_meanwhile(*args, **kwargs):
        found = read(*args, **kwargs)
        if not x:  # Y has read the state: X runs whole (and its files are delivered)
            x["started"] = True  # (X's own preflight comes here too)
            x.update(_meanwhile(export_audience.run, *_argv(job, write_targets(work / "tx.csv", [*range(6)]),
                                                            work / "out2", *flags)))
            if "result" in x:
                platform.apply(work / "out2")
        return found

    monkeypatch.setattr(export_audience, "check_export_inputs", x_meanwhile)
    export(job, write_targets(work / "ty.csv", [0, 1, 2]), work / "out2", *flags, run_date="2026-11-03")
    monkeypatch.undo()
    assert isinstance(x.get("error"), LockHeld) and "audience 'A'" in str(x["error"]), x
    platform.apply(work / "out2")
    later = export(job, write_targets(work / "t3.csv", [0, 1]), work / "out3", *flags, run_date="2026-11-04")
    platform.apply(work / "out3")
    assert later["removed"] == 1 and platform.members(member) == {sha(email(i)) for i in (0, 1)}  # p2, Y's


def test_an_export_of_another_audience_while_an_overwrite_runs_is_refused(tmp_path, monkeypatch):
    """A's .overwrite lists its users with every trait the data source's other audiences' states give,
    read at its start. B's sync export ran meanwhile and removed p02 and p03 from B (delivered first);
    A's file then listed them with B's trait again: back in B on the platform while B's state says
    they left, and no later export of B removed them (exit 0 everywhere). An overwrite holds the other
    audiences' state folders too."""
    from pipelines import export_audience

    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    state, platform = tmp_path / "state", Platform()
    b = ("--segment-id", 22, "--state", state, "--allow-shrink")
    export(job, write_targets(tmp_path / "tb.csv", [0, 1, 2, 3]), tmp_path / "b1", *b, audience="B", run_date="2026-11-01")
    platform.apply(tmp_path / "b1")
    commit, b2 = transforms.export.commit_state, {}

    def b_meanwhile(run_state, manifest, name="_SUCCESS"):
        if name == "_PENDING" and not b2:  # A's overwrite is live: B's next export starts and ends
            b2["started"] = True
            b2.update(_meanwhile(export_audience.run, *_argv(job, write_targets(tmp_path / "tb2.csv", [0, 1]),
                                                             tmp_path / "b2", *b, audience="B")))
            if "result" in b2:
                platform.apply(tmp_path / "b2")
        commit(run_state, manifest, name)

    monkeypatch.setattr(transforms.export, "commit_state", b_meanwhile)
    export(job, write_targets(tmp_path / "ta.csv", [0, 1, 2, 3]), tmp_path / "a", "--segment-id", SID, "--state", state,
           "--mode", "overwrite", run_date="2026-11-02")
    monkeypatch.undo()
    assert isinstance(b2.get("error"), LockHeld) and "audience 'B' of data source 'crm' is being exported" in str(
        b2["error"]), b2
    platform.apply(tmp_path / "a")
    export(job, tmp_path / "tb2.csv", tmp_path / "b3", *b, audience="B", run_date="2026-11-03")
    platform.apply(tmp_path / "b3")
    assert platform.members("d_sid=22") == {sha(email(i)) for i in (0, 1)}
    assert platform.members(f"d_sid={SID}") == {sha(email(i)) for i in (0, 1, 2, 3)}


def test_two_overwrites_of_two_audiences_at_once_let_one_through(tmp_path, monkeypatch):
    """Overwrites of A and of B started together each took their own audience's state lock first,
    then the other's: each found the other's held and both were refused (both, nothing
    exported that night). The locks are taken in one order (sorted): one of them runs."""
    import threading
    from types import SimpleNamespace
    from contextlib import ExitStack

    from pipelines import export_audience, launch

    for name in ("A", "B"):
        (tmp_path / "crm" / name / "v-000001").mkdir(parents=True)
        (tmp_path / "crm" / name / "v-000001" / "_SUCCESS").write_text("{}")
    lock, tried = launch.lock, threading.Barrier(2, timeout=2)

    def in_step(folder, job, options):  # both runs try a lock before either tries its next one
        held = lock(folder, job, options)

        class Stepped:
            def __enter__(self):
                try:
                    return held.__enter__()
                finally:
                    try:
                        tried.wait()
                    except threading.BrokenBarrierError:  # the other run has ended
                        pass

            def __exit__(self, *exc):
                return held.__exit__(*exc)
        return Stepped()

    monkeypatch.setattr(launch, "lock", in_step)
    outcome, stacks = {}, {}

    def overwrite(name):
        spec = SimpleNamespace(data_source=SimpleNamespace(name="crm"), audience=name, mode="overwrite")
        stacks[name] = ExitStack()
        try:
            export_audience._hold_state(stacks[name], str(tmp_path), spec, [])
            outcome[name] = "held"
        except LockHeld as exc:
            stacks[name].close()
            outcome[name] = "refused" if "being exported by another run" in str(exc) else str(exc)

    threads = [threading.Thread(target=overwrite, args=(name,)) for name in ("A", "B")]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    [stack.close() for stack in stacks.values()]
    assert sorted(outcome.values()) == ["held", "refused"], outcome


def test_a_state_folder_that_cannot_be_written_is_named_as_the_state_lock(tmp_path):
    """An audience's state folder that cannot be created (ROOT/<data source> is a file) failed
    'ROOT/crm/A/_lock.json: cannot create the output lock (Not a directory)': the wrong lock, to an
    operator who looked at --output."""
    from transforms.errors import RunFailed

    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1])
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "crm").write_text("a file\n")
    with pytest.raises(RunFailed) as info:
        export(job, write_targets(tmp_path / "t.csv", [0, 1]), tmp_path / "out", "--segment-id", SID,
               "--state", tmp_path / "state")
    assert str(info.value) == (f"--state {tmp_path / 'state'}: cannot create the lock of audience 'A' of data source 'crm' "
                               f"({tmp_path / 'state' / 'crm' / 'A' / '_lock.json'}: Not a directory)")
    assert not (tmp_path / "out").exists()


def test_a_rerun_into_the_same_output_by_another_path_sends_the_same_changes(tmp_path):
    """A retry naming its --output through a symlink (/data -> /mnt/data) was not recognised as a rerun
    (paths compared spelled, absolute): computed against the version its run committed, it found
    nothing to send and replaced that run's unsent files with nothing, exit 0. Compared resolved."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2])
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    flags = ("--segment-id", SID, "--state", tmp_path / "state")
    first = export(job, write_targets(tmp_path / "t.csv", [0, 1]), tmp_path / "real" / "out", *flags)
    again = export(job, tmp_path / "t.csv", tmp_path / "link" / "out", *flags)
    assert first["added"] == 2 and (again["state_replaced_version"], again["added"]) == (1, 2)


def test_existing_exports_without_the_runs_a_given_one_built_on_are_refused(tmp_path, monkeypatch):
    """--existing must name every earlier export of the audience: given only the latest (whose
    exported/ holds what it added, nothing of what the runs before it sent), the platform's members
    were rebuilt as not held, and those that left the targets were never removed, exit 0. Each
    export's report names the folders (or the state version) it was computed against: one not given
    is refused, naming it. Recorded absolute: a run started from another folder finds them."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    platform = Platform()
    monkeypatch.chdir(tmp_path)
    export(job, write_targets(tmp_path / "t.csv", [0, 1, 2, 3]), tmp_path / "first", "--segment-id", SID)
    export(job, tmp_path / "t.csv", tmp_path / "second", "--segment-id", SID, "--existing", "first",
           run_date="2026-11-23")
    for run in ("first", "second"):
        platform.apply(tmp_path / run)
    monkeypatch.chdir(tmp_path / "job")
    leave = write_targets(tmp_path / "t3.csv", [0, 1])
    with pytest.raises(ConfigError, match=r"^--existing .*second: it was computed against the export "
                                          rf"{tmp_path / 'first'}, which is not given"):
        export(job, leave, tmp_path / "third", "--segment-id", SID, "--existing", tmp_path / "second",
               run_date="2026-11-24")
    assert not (tmp_path / "third").exists()
    export(job, leave, tmp_path / "third", "--segment-id", SID, "--existing", tmp_path / "first",
           "--existing", tmp_path / "second", run_date="2026-11-24")
    platform.apply(tmp_path / "third")
    assert platform.members(f"d_sid={SID}") == {sha(email(0)), sha(email(1))}


def test_existing_exports_without_the_state_version_a_given_one_built_on_are_refused(tmp_path):
    """The same for folders written with --state: the one given was computed against a version of
    the export state that no folder given wrote."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    state = ("--segment-id", SID, "--state", tmp_path / "state")
    export(job, write_targets(tmp_path / "t.csv", [0, 1, 2, 3]), tmp_path / "first", *state)
    export(job, write_targets(tmp_path / "t2.csv", [0, 1, 2]), tmp_path / "second", *state, run_date="2026-11-23")
    leave = write_targets(tmp_path / "t3.csv", [0, 1])
    with pytest.raises(ConfigError, match=r"^--existing .*second: it was computed against version 1 of the export "
                                          r"state .*A, which no folder given wrote"):
        export(job, leave, tmp_path / "third", "--segment-id", SID, "--existing", tmp_path / "second",
               run_date="2026-11-24")
    report = export(job, leave, tmp_path / "third", "--segment-id", SID, "--existing", tmp_path / "first",
                    "--existing", tmp_path / "second", run_date="2026-11-24")
    assert (report["earlier_user_ids"], report["removed"]) == (3, 1)


@pytest.mark.parametrize("second_date, given, written", [
    ("2026-11-21", ["first", "second"], "--existing"),
    ("2026-11-22", ["second", "first"], "--existing"),
    ("2026-11-21", ["first", "second"], "--state"),
], ids=["dated-before-the-run-it-built-on", "same-date-given-newest-first", "state-version-dated-before"])
def test_existing_exports_are_applied_in_the_order_they_were_computed(tmp_path, second_date, given, written):
    """--existing folders were applied by run date, then as given: an export dated before the one it
    was computed against (its --run-date in local time after a run on the UTC default, an old command
    line run again) or two of one run date given newest first were applied in the wrong order. p03,
    which the second took out, was rebuilt as held and, targeted again, never sent (exit 0). A report
    names what its run was computed against (the --existing folders, the state version): that comes first."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    platform = Platform()
    first = ("--state", tmp_path / "state") if written == "--state" else ()
    export(job, write_targets(tmp_path / "t1.csv", [0, 1, 2, 3]), tmp_path / "first", "--segment-id", SID, *first,
           run_date="2026-11-22")
    second = first or ("--existing", tmp_path / "first")
    export(job, write_targets(tmp_path / "t2.csv", [0, 1, 2]), tmp_path / "second", "--segment-id", SID, *second,
           run_date=second_date)
    for run in ("first", "second"):
        platform.apply(tmp_path / run)
    flags = [arg for name in given for arg in ("--existing", tmp_path / name)]
    report = export(job, write_targets(tmp_path / "t3.csv", [0, 1, 2, 3]), tmp_path / "third", "--segment-id", SID,
                    *flags, run_date="2026-11-23")
    platform.apply(tmp_path / "third")
    assert (report["earlier_user_ids"], report["added"]) == (3, 1)
    assert platform.members(f"d_sid={SID}") == {sha(email(i)) for i in range(4)}


def test_an_export_into_another_audiences_output_is_refused_and_leaves_its_files(first_export):
    """Audiences A and B exported through one data source on one run date into one --output (a
    folder per day, not per audience): B's publish replaced A's files, of the same name, exit 0, while
    A's state recorded its members as held. Delivered after B's run, A's file never reached the
    platform, and A's later exports found its members held: never sent. The CLI, as an operator runs it."""
    from conftest import cli_in_process

    work, job, state, _, flags = first_export
    before = {p.name: p.read_bytes() for p in (work / "out1" / "onboarding").iterdir()}
    other = ("--segment-id", SID + 1, "--state", state)
    targets_b = write_targets(work / "tb.csv", [2, 3])
    result = cli_in_process("export", *_argv(job, targets_b, work / "out1", *other, audience="B",
                                             run_date="2026-11-01"))
    assert result.returncode == 2, (result.returncode, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"--output {work / 'out1'}: it holds the export of audience 'A' of data source 'crm' "
                           "(d_sid=777, dpid 12345, run date 2026-11-01): "), result.stderr
    assert "Traceback" not in result.stderr and "person" not in result.stderr
    assert {p.name: p.read_bytes() for p in (work / "out1" / "onboarding").iterdir()} == before
    assert not list(state.glob("crm/B/v-*"))
    # Without --state alike; into its own --output B runs, and A's rerun into its own folder is still a rerun.
    assert cli_in_process("export", *_argv(job, targets_b, work / "out1", "--segment-id", SID + 1,
                                           audience="B", run_date="2026-11-01")).returncode == 2
    assert export(job, targets_b, work / "out_b", *other, audience="B", run_date="2026-11-01")["added"] == 2
    again = export(job, work / "t1.csv", work / "out1", *flags, run_date="2026-11-01")
    assert (again["state_replaced_version"], again["added"]) == (1, 2)


@pytest.mark.parametrize("name", [".", ".."])
def test_an_audience_named_dot_or_dot_dot_has_its_own_state_folder(tmp_path, name):
    """``--audience .`` kept its state in ROOT/crm itself and ``..`` in ROOT (the %-quoting leaves
    dots alone, the path resolved them): the one-segment check, which lists ROOT/<source>/<audience>,
    never saw either, so audience A exported on the same segment ran with nothing held, exit 0 (two
    audiences on one segment undo each other's removals), and a data source's '..' left ROOT."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2])
    state = tmp_path / "state"
    flags = ("--segment-id", SID, "--state", state)
    first = export(job, write_targets(tmp_path / "t.csv", [0, 1]), tmp_path / "first", *flags, audience=name)
    assert first["added"] == 2 and [p.name for p in state.iterdir()] == ["crm"]
    assert [p.name for p in (state / "crm").iterdir() if p.name.startswith("v-")] == []
    again = export(job, tmp_path / "t.csv", tmp_path / "second", *flags, audience=name, run_date="2026-11-23")
    assert (again["state_previous_version"], again["added"], again["unchanged"]) == (1, 0, 2)
    with pytest.raises(ConfigError, match=rf"--state: audience '{name}' of data source 'crm' already sends d_sid=777"):
        export(job, tmp_path / "t.csv", tmp_path / "o", *flags, run_date="2026-11-24")


def test_a_data_source_named_dot_dot_keeps_its_state_under_the_root(tmp_path):
    """A data source's name may be dots only (letters, digits, '.', '_', '-'): ``name: ..`` kept its
    audiences' states beside ROOT, outside it (ROOT/../A), where another job's state may be."""
    job = write_job(tmp_path / "job")
    job.write_text(job.read_text().replace("name: crm", "name: .."))
    write_profiles(job.parent, [0, 1])
    export(job, write_targets(tmp_path / "t.csv", [0, 1]), tmp_path / "first", "--segment-id", SID,
           "--state", tmp_path / "state")
    assert not (tmp_path / "A").exists() and [p.name for p in (tmp_path / "state").iterdir()] == ["%2E%2E"]


@pytest.mark.parametrize("name", [".", ".."])
def test_a_dot_audiences_state_written_before_its_folder_was_quoted_is_not_taken_for_none(tmp_path, monkeypatch,
                                                                                          name):
    """Before c8273e5, ``--audience .`` kept its state in ROOT/crm itself (``..`` in ROOT). That state is
    what the platform holds; read from ROOT/crm/%2E alone, the next export of the audience ran with
    nothing held: p01, which left the targets, was never removed, exit 0. Refused, naming where it is."""
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2])
    state, platform = tmp_path / "state", Platform()
    flags = ("--segment-id", SID, "--state", state, "--allow-shrink")
    with monkeypatch.context() as patch:  # as the release before c8273e5 wrote it
        patch.setattr(transforms.export_paths, "_folder_name", lambda n: quote(n, safe=""))
        export(job, write_targets(tmp_path / "t1.csv", [0, 1]), tmp_path / "out1", *flags, audience=name)
    platform.apply(tmp_path / "out1")
    old = state / "crm" if name == "." else state
    assert [p.name for p in old.iterdir() if p.name.startswith("v-")] == ["v-000001"]
    with pytest.raises(ConfigError) as info:
        export(job, write_targets(tmp_path / "t2.csv", [0]), tmp_path / "out2", *flags, audience=name,
               run_date="2026-11-23")
    assert str(info.value).startswith(f"--state: audience '{name}' of data source 'crm' has its state in {old} ")
    assert not (tmp_path / "out2" / "report.json").exists()
    # moved where this release keeps it, the export removes p01
    new = state / "crm" / name.replace(".", "%2E")
    new.mkdir(parents=True, exist_ok=True)
    (old / "v-000001").rename(new / "v-000001")
    report = export(job, tmp_path / "t2.csv", tmp_path / "out2", *flags, audience=name, run_date="2026-11-23")
    platform.apply(tmp_path / "out2")
    assert (report["state_previous_version"], report["removed"]) == (1, 1)
    assert platform.members(f"d_sid={SID}") == {sha(email(0))}


@pytest.mark.parametrize("edit", ["dpid", "name"])
def test_a_rerun_into_its_own_output_after_its_data_sources_dpid_or_name_was_corrected_runs(tmp_path, edit):
    """The check of 30cee4a took the audience's own --output for another audience's when its data source's
    dpid (or its name) had been corrected since: exit 2, 'it holds the export of audience 'A' ... give each
    audience its own --output', of audience A itself. The same audience through the same data source
    (its name or its dpid the same) is a rerun, as before: it replaces its files."""
    from conftest import cli_in_process
    from test_export_removals import DPID

    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2])
    argv = _argv(job, write_targets(tmp_path / "t1.csv", [0, 1]), tmp_path / "out1", "--segment-id", SID,
                 run_date="2026-11-01")
    assert cli_in_process("export", *argv).returncode == 0
    first = job.read_text()
    job.write_text(first.replace(f"dpid: {DPID}", f"dpid: {DPID + 1}") if edit == "dpid" else
                   first.replace("name: crm", "name: crm-eu"))
    result = cli_in_process("export", *argv)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out1" / "report.json").read_text())
    assert (report["dpid"], report["data_source"]) == ((DPID + 1, "crm") if edit == "dpid" else (DPID, "crm-eu"))
    # Another data source (another name and dpid) with an audience of the same name is still refused.
    job.write_text(first.replace(f"dpid: {DPID}", f"dpid: {DPID + 2}").replace("name: crm", "name: web"))
    result = cli_in_process("export", *argv)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"--output {tmp_path / 'out1'}: it holds the export of "
                                                             "audience 'A' of data source '"), result.stderr
