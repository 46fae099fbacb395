"""An .overwrite export and the data source's other audiences (transforms/export_others.py): a leaver
that is not eligible keeps no trait, so the line takes it out of every audience of the data source on
the platform; their export states must say so. Checked against the simulated platform after each run."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from made_once import made_once_fixture
from platform_sim import Platform
from test_export_removals import SID, email, export, lines, sha, write_job, write_profiles, write_targets

import transforms.export
from transforms.config import ConfigError
from transforms.export_state import current_version


def _state_members(state, audience) -> set:
    """The user IDs the audience's current export state holds."""
    current = current_version(str(state / "crm" / audience))
    return {r["user_id"] for r in pq.read_table(current.path + "/members").to_pylist()} if current else set()


def _versions(state, audience) -> list[str]:
    return sorted(p.name for p in (state / "crm" / audience).glob("v-*"))


def _three_audiences_made(work):
    """B (d_sid=22: p0..p3) and C (d_sid=33: p0, p2) exported with .sync, then A (SID: p0..p3) with
    .overwrite, applied to a platform; then p1 opts out. Returns (job, state, platform, a flags, b flags,
    targets); the outputs are b1, c1 and a1 under ``work``."""
    job = write_job(work / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    state, platform = work / "state", Platform()
    a = ("--segment-id", SID, "--state", state, "--mode", "overwrite", "--allow-shrink")
    b = ("--segment-id", 22, "--state", state, "--allow-shrink")
    every = write_targets(work / "t.csv", [0, 1, 2, 3])
    export(job, every, work / "b1", *b, audience="B", run_date="2026-11-01")
    export(job, write_targets(work / "tc.csv", [0, 2]), work / "c1", "--segment-id", 33, "--state", state,
           audience="C", run_date="2026-11-01")
    export(job, every, work / "a1", *a, run_date="2026-11-01")
    for out in ("b1", "c1", "a1"):
        platform.apply(work / out)
    _consistent(platform, state)()
    write_profiles(job.parent, [0, 1, 2, 3], {1: True})
    return job, state, platform, a, b, every


def _consistent(platform, state):
    """A check that each audience's state is what the platform holds."""
    def consistent():
        for name, trait in (("A", f"d_sid={SID}"), ("B", "d_sid=22"), ("C", "d_sid=33")):
            assert platform.members(trait) == _state_members(state, name), name

    return consistent


made_three_audiences = made_once_fixture("three-audiences", _three_audiences_made)  # 3 exports


@pytest.fixture
def three_audiences(made_three_audiences):
    """``(work, job, state, platform, a flags, b flags, targets, consistent)``: the module's three
    audiences as their run left them. Its folder ``work`` is put back from the untouched copy before each
    test, at the same paths (export states record their outputs and folders by absolute path), and the
    platform is a copy: each test runs on what a run of its own would leave."""
    job, state, platform, a, b, every = made_three_audiences.restored()
    return made_three_audiences.work, job, state, platform, a, b, every, _consistent(platform, state)


def test_an_overwrite_that_takes_an_ineligible_leaver_out_of_another_audience_records_it_in_its_state(three_audiences):
    """p1 (in A and B) opts out: A's .overwrite lists it with no trait, so it leaves A and B on the
    platform; B's state still held it. p1 opted back in and B's next .sync export found it already
    held: nothing sent, p1 out of B for good while B's state said it was there (exit 0). The overwrite
    writes B's next version without p1; C (p1 not in it) gets none."""
    work, job, state, platform, a, b, every, consistent = three_audiences
    report = export(job, every, work / "a2", *a, run_date="2026-11-02")
    platform.apply(work / "a2")
    assert sha(email(1)) not in platform.members("d_sid=22")
    consistent()
    assert (_versions(state, "B"), _versions(state, "C")) == (["v-000001", "v-000002"], ["v-000001"])
    (other,) = report["state_others"]
    assert {k: other[k] for k in ("audience", "previous_version", "version", "previous_pairs", "pairs",
                                  "pairs_removed", "user_ids_removed")} == {
        "audience": "B", "previous_version": 1, "version": 2, "previous_pairs": 4, "pairs": 3, "pairs_removed": 1,
        "user_ids_removed": 1}
    assert sha(email(1)) not in (work / "a2" / "report.json").read_text()  # counts only
    manifest = json.loads((state / "crm" / "B" / "v-000002" / "_SUCCESS").read_text())
    assert (manifest["pairs"], manifest["previous"], manifest["stripped_by"]["audience"],
            manifest["stripped_by"]["version"]) == (3, 1, "A", 2)

    # A retry of the overwrite (same --output and run date) sends the same files; B's state already
    # says p1 left: no version of B again, none lost.
    sent = {p.name: p.read_bytes() for p in (work / "a2" / "onboarding").iterdir()}
    again = export(job, every, work / "a2", *a, run_date="2026-11-02")
    assert {p.name: p.read_bytes() for p in (work / "a2" / "onboarding").iterdir()} == sent
    assert (again["state_replaced_version"], again["state_others"]) == (2, [])
    assert (_versions(state, "B"), _versions(state, "C")) == (["v-000001", "v-000002"], ["v-000001"])
    platform.apply(work / "a2")
    consistent()

    # B's first run, rerun into its --output: version 2 builds on it (p1 left B since), refused.
    with pytest.raises(ConfigError, match=r"--output .*b1: it holds the files of export state version 1 .* which "
                                          r"version 2 builds on \(the overwrite of audience 'A' took users out of it\)"):
        export(job, every, work / "b1", *b, audience="B", run_date="2026-11-01")

    write_profiles(job.parent, [0, 1, 2, 3])  # p1 opts back in: B's next export puts it back
    later = export(job, every, work / "b3", *b, audience="B", run_date="2026-11-03")
    platform.apply(work / "b3")
    assert lines(work / "b3") == [(sha(email(1)), "d_sid=22")] and later["added"] == 1
    consistent()


def _stopped_overwrite(tmp_path, monkeypatch, job, a, every, successes: int = 0):
    """A's overwrite into a2, stopped after its files are published, once ``successes`` _SUCCESS
    manifests are written (B's version's is first, A's own last)."""
    commit, written = transforms.export.commit_state, []

    def stopped(state, manifest, name="_SUCCESS"):
        if name == "_SUCCESS":
            if len(written) == successes:
                raise OSError("stopped before the state's commit")
            written.append(state.folder)
        commit(state, manifest, name)

    with monkeypatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", stopped)
        with pytest.raises(OSError, match="stopped before"):
            export(job, every, tmp_path / "a2", *a, run_date="2026-11-02")
    assert (tmp_path / "a2" / "report.json").exists()


def test_an_overwrite_stopped_before_its_commit_leaves_the_audiences_it_took_users_out_of_pending(three_audiences,
                                                                                                    monkeypatch):
    """Its files are published: B's version without p1 waits as _PENDING with A's. B's next export is
    refused naming the overwrite to settle, as are A's into another --output and any other overwrite;
    A's retry (files not delivered) writes and commits both; once delivered, renaming both settles it."""
    work, job, state, platform, a, b, every, consistent = three_audiences
    _stopped_overwrite(work, monkeypatch, job, a, every)
    assert sorted(p.parent.relative_to(state).as_posix() for p in state.rglob("_PENDING")) == [
        "crm/A/v-000002", "crm/B/v-000002"]
    with pytest.raises(ConfigError, match=r"version 2 of audience 'B' records the users the overwrite of audience "
                                          r"'A' took out of it; .*rerun it into --output .*a2 --run-date 2026-11-02"):
        export(job, every, work / "b3", *b, audience="B", run_date="2026-11-03")
    with pytest.raises(ConfigError, match=r"version 2 of audience 'A' published .*rename .*A/v-000002/_PENDING to "
                                          r"_SUCCESS and .*B/v-000002/_PENDING too"):
        export(job, every, work / "a3", *a, run_date="2026-11-03")
    with pytest.raises(ConfigError, match=r"audience 'B' .*has version 2, published but never committed"):
        export(job, write_targets(work / "tc.csv", [0]), work / "c2", "--segment-id", 33, "--state", state,
               "--mode", "overwrite", audience="C", run_date="2026-11-03")
    retry = export(job, every, work / "a2", *a, run_date="2026-11-02")
    assert [(o["audience"], o["version"]) for o in retry["state_others"]] == [("B", 2)]
    assert not list(state.rglob("_PENDING")) and _versions(state, "B") == ["v-000001", "v-000002"]
    platform.apply(work / "a2")
    consistent()

    # Stopped again (p2, in B and C, opts out), its files delivered: A's _PENDING renamed alone leaves
    # B's and C's named.
    write_profiles(job.parent, [0, 1, 2, 3], {1: True, 2: True})
    (work / "a2").rename(work / "a2-done")
    _stopped_overwrite(work, monkeypatch, job, a, every)
    platform.apply(work / "a2")
    for pending in state.rglob("_PENDING"):
        if "/A/" in pending.as_posix():
            pending.rename(pending.with_name("_SUCCESS"))
    with pytest.raises(ConfigError, match=r"version 3 of audience 'B' records .* overwrite of audience 'A' .*"
                                          r"committed: delivered.*rename .*B/v-000003/_PENDING to _SUCCESS"):
        export(job, every, work / "b3", *b, audience="B", run_date="2026-11-03")
    assert sorted(p.parent.relative_to(state).as_posix() for p in state.rglob("_PENDING")) == [
        "crm/B/v-000003", "crm/C/v-000002"]
    for pending in state.rglob("_PENDING"):
        pending.rename(pending.with_name("_SUCCESS"))
    consistent()


def test_an_overwrite_stopped_between_the_other_audiences_commit_and_its_own_is_retried(three_audiences, monkeypatch):
    """B's version without p1 is committed, A's waits: B's exports go on from it, and A's retry (the
    same files) takes no one out of B again."""
    work, job, state, platform, a, b, every, consistent = three_audiences
    _stopped_overwrite(work, monkeypatch, job, a, every, successes=1)
    assert [p.parent.relative_to(state).as_posix() for p in state.rglob("_PENDING")] == ["crm/A/v-000002"]
    assert _state_members(state, "B") == {sha(email(i)) for i in (0, 2, 3)}
    with pytest.raises(ConfigError, match=r"version 2 of audience 'A' published .*A/v-000002/_PENDING") as refused:
        export(job, every, work / "a3", *a, run_date="2026-11-03")
    assert "B/v-000002" not in str(refused.value)  # committed: nothing of B's to rename
    sent = lines(work / "a2")
    retry = export(job, every, work / "a2", *a, run_date="2026-11-02")
    assert (lines(work / "a2"), retry["state_others"], retry["state_version"]) == (sent, [], 2)
    platform.apply(work / "a2")
    consistent()
    export(job, every, work / "b3", *b, audience="B", run_date="2026-11-03")
    platform.apply(work / "b3")
    consistent()


@pytest.mark.parametrize("other,message", [
    ({"pairs": 2}, r"pairs of audience 'B' \(expected 4, accounted for 3\)"),
    ({"user_ids_removed": 0}, r"0 user IDs taken out of audience 'B', not one to 1"),
    ({"user_ids_removed": 3, "pairs_removed": 3, "pairs": 1}, r"3 user IDs taken out .* at most 2 \(the leavers not"),
])
def test_the_report_checks_what_an_overwrite_takes_out_of_the_other_audiences(other, message):
    from test_export_removals import consistent_report

    from transforms.errors import RunFailed
    from transforms.export_report import check_export_report

    entry = {"audience": "B", "previous_pairs": 4, "pairs": 3, "pairs_removed": 1, "user_ids_removed": 1}
    check_export_report({**consistent_report(), "state_others": [entry]})  # the consistent one passes
    with pytest.raises(RunFailed, match=rf"export counts do not add up: {message}"):
        check_export_report({**consistent_report(), "state_others": [{**entry, **other}]})


def test_an_existing_export_older_than_a_version_an_overwrite_took_users_out_of_is_refused(three_audiences):
    """B's state gets version 2 from A's overwrite (p1 opted out: out of A and B on the platform).
    B exported with --existing b1 (its run of version 1) rebuilt p1 as held: p1 opted back in and
    targeted, nothing sent, exit 0, out of B for good. No folder of B's records that: refused, naming
    the overwrite. An overwrite of B after it (its exported/ is the whole audience) serves."""
    work, job, state, platform, a, b, every, consistent = three_audiences
    export(job, every, work / "a2", *a, run_date="2026-11-02")
    write_profiles(job.parent, [0, 1, 2, 3])
    with pytest.raises(ConfigError, match=r"--existing .*b1: audience 'B' lost users since its version 1: version 2 "
                                          r"of its export state .* records the overwrite of audience 'A' .*a2.*"
                                          r"use --state"):
        export(job, every, work / "b3", "--segment-id", 22, "--existing", work / "b1", audience="B",
               run_date="2026-11-03")
    export(job, every, work / "b3", *b, "--mode", "overwrite", audience="B", run_date="2026-11-03")
    report = export(job, every, work / "b4", "--segment-id", 22, "--existing", work / "b1", "--existing",
                    work / "b3", audience="B", run_date="2026-11-04")
    assert report["nothing_to_send"] and report["unchanged"] == 4


def test_a_stopped_overwrite_run_with_a_relative_state_root_is_found_from_another_folder(three_audiences, monkeypatch):
    """A's overwrite ran with '--state state' (relative) and stopped after its publish; its files were
    delivered (p1 out of A and B). B's export, from another folder with the root's absolute path, did
    not recognize B's _PENDING version (A's report named B's state folder relative): computed against
    B's version 1 it found p1 held, sent nothing, exit 0, p1 out of B for good. State folders are
    recorded absolute: refused, naming A's run."""
    work, job, state, platform, a, b, every, consistent = three_audiences
    monkeypatch.chdir(work)
    relative = tuple("state" if flag == state else flag for flag in a)
    _stopped_overwrite(work, monkeypatch, job, relative, every)
    (work / "elsewhere").mkdir()
    monkeypatch.chdir(work / "elsewhere")
    write_profiles(job.parent, [0, 1, 2, 3])
    with pytest.raises(ConfigError, match=r"version 2 of audience 'B' records the users the overwrite of audience 'A' "
                                          r"took out of it"):
        export(job, every, work / "b3", *b, audience="B", run_date="2026-11-03")
