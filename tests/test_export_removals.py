"""Issue #14: an export that also removes. The round trip through a simulated platform, the export
state, .sync vs .overwrite, suppression, global device-ID data sources, and the report's checks."""
from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import cli_in_process
from made_once import MadeOnce, made_once_fixture
from platform_sim import Platform, output_text

from pipelines import export_audience, import_audience
from transforms.config import ConfigError
from transforms.errors import RunFailed
from transforms.export_report import check_export_report

RUN_DATE, NEXT_DATE = "2026-11-22", "2026-11-23"
TS, NEXT_TS = 1795305600, 1795392000
DPID, SID = 12345, 777


def email(i: int) -> str:
    return f"person{i:02d}@example.com"


def sha(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def write_profiles(folder: Path, ids: list[int], opt_out: dict[int, bool | None] | None = None) -> None:
    opt_out = opt_out or {}
    pq.write_table(pa.table({
        "profile_id": [f"p{i:02d}" for i in ids],
        "email": [email(i) for i in ids],
        "opt_out": pa.array([opt_out.get(i, False) for i in ids], pa.bool_()),
    }), folder / "profiles.parquet")


def write_job(folder: Path, suppression: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "profiles": {"path": "profiles.parquet", "phone": None, "visitor_ids": None, "opt_out": "opt_out"},
        "buckets": 4,
        "data_sources": [{"name": "crm", "dpid": DPID, "segments": "dumps/*.sync", "id_type": "declared",
                          "declared": "hashed", "match_on": "email"}],
        **({"suppression": suppression} if suppression else {}),
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    return folder / "job.yaml"


def write_targets(path: Path, ids: list[int]) -> Path:
    path.write_text("profile_id\n" + "".join(f"p{i:02d}\n" for i in ids))
    return path


def export(job: Path, targets: Path, out: Path, *flags, audience: str = "A", run_date: str = RUN_DATE) -> dict:
    return export_audience.run(["--config", str(job), "--audience", audience, "--targets", str(targets),
                                "--output", str(out), "--run-date", run_date, *map(str, flags)])


def lines(out: Path) -> list[tuple[str, str]]:
    report = json.loads((out / "report.json").read_text())
    text = b"".join(gzip.decompress((out / "onboarding" / f["name"]).read_bytes()) for f in report["files"])
    return [tuple(line.split("\t")) for line in text.decode().splitlines()]


# The scenario of the issue. First export: p00..p19 targeted and sent, p24 (opted out) and p26
# (consent unknown) targeted and never sent. Then: p00..p02 opt out (still targeted), p03..p07 leave
# the target, p08 and p09 leave the extract (still targeted), p20..p23 join.
FIRST_TARGETS = [*range(20), 24, 26]
SECOND_TARGETS = [0, 1, 2, *range(8, 24), 24, 26]
OPTED_OUT, UNTARGETED, DELETED, JOINED = [0, 1, 2], [3, 4, 5, 6, 7], [8, 9], [20, 21, 22, 23]
EXPECTED = [*range(10, 24)]


def first_and_second(tmp_path: Path, job: Path, *flags, extra_first=None) -> tuple[dict, dict, Path, Path]:
    folder = job.parent
    write_profiles(folder, [*range(30)], {24: True, 26: None})
    first = tmp_path / "first"
    r1 = export(job, write_targets(tmp_path / "t1.csv", FIRST_TARGETS), first, *flags)
    write_profiles(folder, [i for i in range(30) if i not in DELETED], {24: True, 26: None, 0: True, 1: True, 2: True})
    second = tmp_path / "second"
    r2 = export(job, write_targets(tmp_path / "t2.csv", SECOND_TARGETS), second, *flags, run_date=NEXT_DATE)
    return r1, r2, first, second


@pytest.fixture(scope="module")
def made_sync_pair(tmp_path_factory) -> MadeOnce:
    """The issue's two exports (first_and_second, .sync, --segment-id SID, --state), run once for the
    module: their reports."""
    def make(work: Path) -> tuple[dict, dict]:
        return first_and_second(work, write_job(work / "job"), "--segment-id", SID, "--state", work / "state")[:2]

    return MadeOnce(tmp_path_factory, "sync-pair", make)


@pytest.fixture
def sync_pair(made_sync_pair) -> tuple[Path, Path, dict, dict, Path, Path]:
    """(job, state, r1, r2, first, second) of the module's one sync pair, as that run left them: its
    folder is put back from the untouched copy before each test, at the same paths (the export state
    names its outputs by path), so a test may rerun, export again or damage it as on a run of its own.
    The targets are beside the job's folder (t1.csv, t2.csv)."""
    r1, r2 = made_sync_pair.restored()
    work = made_sync_pair.work
    return work / "job" / "job.yaml", work / "state", r1, r2, work / "first", work / "second"


def test_round_trip_sync_adds_the_joiners_removes_the_leavers_and_the_import_finds_the_audience(tmp_path, sync_pair):
    job, state, r1, r2, first, second = sync_pair
    assert sorted(lines(first)) == sorted((sha(email(i)), f"d_sid={SID}") for i in range(20))
    assert (r1["added"], r1["removed"], r1["opted_out"], r1["consent_unknown"]) == (20, 0, 1, 1)

    got = lines(second)
    assert sorted(u for u, t in got if t == f"d_sid={SID}") == sorted(sha(email(i)) for i in JOINED)
    assert sorted(u for u, t in got if t == f"d_unsid={SID}") == sorted(
        sha(email(i)) for i in OPTED_OUT + UNTARGETED + DELETED)
    assert len(got) == 14 and json.loads((second / "report.json").read_text())["files"][0]["name"] == (
        f"ftp_dpm_{DPID}_{NEXT_TS}.sync.gz")
    assert (r2["added"], r2["removed"], r2["unchanged"], r2["earlier_user_ids"], r2["audience_user_ids"]) == (
        4, 10, 10, 20, 14)
    assert r2["removed_by_reason"] == {"suppressed": 0, "opted_out": 3, "consent_unknown": 0, "deleted_profile": 2,
                                       "untargeted": 5, "id_changed": 0}
    assert (r2["opted_out"], r2["consent_unknown"], r2["unknown_profile"], r2["exported"], r2["already_present"]) == (
        4, 1, 2, 4, 10)
    assert {(r["profile_id"], r["reason"]) for r in pq.read_table(second / "removed").to_pylist()} == {
        *((f"p{i:02d}", "opted_out") for i in OPTED_OUT), *((f"p{i:02d}", "untargeted") for i in UNTARGETED),
        *((f"p{i:02d}", "deleted_profile") for i in DELETED)}

    # No opted-out or unknown-consent profile is ever added, in any file.
    never = {sha(email(i)) for i in (24, 26)}
    for out in (first, second):
        assert not [u for u, t in lines(out) if u in never]
    assert not [u for u, t in lines(second) if u in {sha(email(i)) for i in OPTED_OUT} and t.startswith("d_sid")]

    # The platform applies both files; the dump it shares back imports as the audience we expect.
    platform = Platform()
    platform.apply(first)
    platform.apply(second)
    assert platform.members(f"d_sid={SID}") == {sha(email(i)) for i in EXPECTED}
    platform.write_dump(job.parent / "dumps", DPID, NEXT_TS * 1000)
    report = import_audience.run(["--config", str(job), "--output", str(tmp_path / "imp"), "--run-date", NEXT_DATE])
    assert report["data_sources"]["crm"]["reconciled"] == len(EXPECTED)
    members = {r["profile_id"] for r in pq.read_table(tmp_path / "imp" / "reconciled").to_pylist()
               if r["segment_id"] == str(SID)}
    assert members == {f"p{i:02d}" for i in EXPECTED}

    # The state: two committed versions, the second holding exactly the audience.
    folder = state / "crm" / "A"
    assert sorted(p.name for p in folder.iterdir()) == ["v-000001", "v-000002"]
    manifest = json.loads((folder / "v-000002" / "_SUCCESS").read_text())
    assert (manifest["version"], manifest["previous"], manifest["pairs"], manifest["segment"]) == (2, 1, 14, f"d_sid={SID}")
    held = {r["profile_id"] for r in pq.read_table(folder / "v-000002" / "members").to_pylist()}
    assert held == {f"p{i:02d}" for i in EXPECTED}

    # Same inputs again: nothing to send; the state moves to v-000003 with the same members.
    again = export(job, state.parent / "t2.csv", tmp_path / "again", "--segment-id", SID, "--state", state,
                   run_date=NEXT_DATE)
    assert again["nothing_to_send"] and (again["unchanged"], again["added"], again["removed"]) == (14, 0, 0)


def test_overwrite_gives_the_same_final_audience_as_sync(tmp_path):
    """Two audiences share the data source (B: segment 888, p10..p12 and p00). The .sync path and the
    .overwrite path leave the platform with the same traits for every user, once B is exported again
    after A (p00 opts out between the runs: each path takes it out of B by then)."""
    finals = {}
    for mode in ("sync", "overwrite"):
        base = tmp_path / mode
        job = write_job(base / "job")
        state = base / "state"
        write_profiles(job.parent, [*range(30)], {24: True, 26: None})
        platform = Platform()
        b = base / "b"
        export(job, write_targets(base / "tb.csv", [0, 10, 11, 12]), b, "--segment-id", 888, "--state", state,
               "--mode", mode, audience="B")
        platform.apply(b)
        _, r2, first, second = first_and_second(base, job, "--segment-id", SID, "--state", state, "--mode", mode)
        platform.apply(first)
        platform.apply(second)
        assert platform.members(f"d_sid={SID}") == {sha(email(i)) for i in EXPECTED}
        assert (r2["added"], r2["removed"], r2["unchanged"]) == (4, 10, 10)
        if mode == "overwrite":
            got = dict(lines(second))
            assert got[sha(email(10))] == f"d_sid={SID},d_sid=888"  # A's member keeps B
            # p00 left A opted out: its B trait is not listed (that would send an opted-out user as a
            # member of B), so it keeps no trait at all.
            assert got[sha(email(0))] == f"d_unsid={SID}"
            assert got[sha(email(3))] == f"d_unsid={SID}"  # left A, no trait left
            assert len(got) == 14 + 10 and r2["lines"] == 24
            assert r2["files"][0]["name"] == f"ftp_dpm_{DPID}_{NEXT_TS}.overwrite.gz"
        b2 = base / "b2"
        export(job, write_targets(base / "tb.csv", [0, 10, 11, 12]), b2, "--segment-id", 888, "--state", state,
               "--mode", mode, audience="B", run_date=NEXT_DATE)
        platform.apply(b2)
        assert sha(email(0)) not in platform.members("d_sid=888")
        finals[mode] = platform.state()
    assert finals["sync"] == finals["overwrite"]


def test_a_key_value_audience_removes_only_with_overwrite(tmp_path):
    job = write_job(tmp_path / "job")
    state = tmp_path / "state"
    write_profiles(job.parent, [*range(10)])
    export(job, write_targets(tmp_path / "t1.csv", [0, 1, 2]), tmp_path / "first", "--state", state)
    targets = write_targets(tmp_path / "t2.csv", [0, 1])
    with pytest.raises(RunFailed, match=r"1 user ID\(s\) must leave it \(untargeted=1\) but a key-value audience"):
        export(job, targets, tmp_path / "second", "--state", state)
    assert not (tmp_path / "second" / "report.json").exists()
    assert sorted(p.name for p in (state / "crm" / "A").iterdir()) == ["v-000001"]  # nothing committed, nothing left
    report = export(job, targets, tmp_path / "second", "--state", state, "--mode", "overwrite")
    assert lines(tmp_path / "second") == sorted([(sha(email(0)), '"segment"="A"'), (sha(email(1)), '"segment"="A"'),
                                                 (sha(email(2)), "")])
    platform = Platform()
    platform.apply(tmp_path / "first")
    platform.apply(tmp_path / "second")
    assert platform.members('"segment"="A"') == {sha(email(0)), sha(email(1))}
    assert report["removed_by_reason"]["untargeted"] == 1


def test_consent_unknown_is_removed_if_it_was_sent_before(tmp_path):
    job = write_job(tmp_path / "job")
    state = tmp_path / "state"
    write_profiles(job.parent, [0, 1])
    export(job, write_targets(tmp_path / "t.csv", [0, 1]), tmp_path / "first", "--segment-id", SID, "--state", state)
    write_profiles(job.parent, [0, 1], {1: None})  # p01's opt-out value is now empty
    report = export(job, tmp_path / "t.csv", tmp_path / "second", "--segment-id", SID, "--state", state)
    assert lines(tmp_path / "second") == [(sha(email(1)), f"d_unsid={SID}")]
    assert report["removed_by_reason"]["consent_unknown"] == 1 and report["consent_unknown"] == 1


def test_a_rerun_into_the_same_output_and_date_sends_the_same_changes(sync_pair):
    """A retried export (an Airflow retry after the commit, an operator's rerun) replaces the files
    of the run it repeats. Computed against the state that run committed, it found nothing to send
    and replaced the removals with nothing, while the state counted them as sent: the platform never
    got them. It is computed against the version that run read, and sends the same changes."""
    job, state, r1, r2, first, second = sync_pair
    flags, t2 = ("--segment-id", SID, "--state", state), state.parent / "t2.csv"
    sent = sorted(lines(second))
    again = export(job, t2, second, *flags, run_date=NEXT_DATE)
    assert sorted(lines(second)) == sent and len(sent) == 14
    for key in ("added", "removed", "unchanged", "earlier_user_ids", "audience_user_ids", "removed_by_reason"):
        assert again[key] == r2[key], key
    assert (again["state_previous_version"], again["state_version"], again["state_replaced_version"]) == (1, 3, 2)
    folder = state / "crm" / "A"
    manifest = json.loads((folder / "v-000003" / "_SUCCESS").read_text())
    assert (manifest["version"], manifest["previous"], manifest["pairs"]) == (3, 1, 14)
    members = [{(r["profile_id"], r["user_id"]) for r in pq.read_table(folder / v / "members").to_pylist()}
               for v in ("v-000002", "v-000003")]
    assert members[0] == members[1]
    platform = Platform()
    platform.apply(first)
    platform.apply(second)
    assert platform.members(f"d_sid={SID}") == {sha(email(i)) for i in EXPECTED}

    # A rerun of the rerun repeats it again; a run on another date into the same folder is a new run.
    assert export(job, t2, second, *flags, run_date=NEXT_DATE)["state_previous_version"] == 1
    later = export(job, t2, second, *flags, run_date="2026-11-24")
    assert later["nothing_to_send"] and (later["state_previous_version"], later["state_replaced_version"]) == (4, None)


def test_a_rerun_that_would_replace_files_a_later_version_builds_on_is_refused(sync_pair):
    job, state, _, _, first, second = sync_pair
    flags = ("--segment-id", SID, "--state", state)
    with pytest.raises(ConfigError, match=rf"--output {first}: it holds the files of export state version 1 "
                                          r"\(run date .*\), which version 2 builds on"):
        export(job, state.parent / "t1.csv", first, *flags)
    assert len(lines(first)) == 20  # untouched


def test_an_existing_export_that_is_also_the_output_is_refused(tmp_path):
    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1])
    targets = write_targets(tmp_path / "t.csv", [0])
    first = tmp_path / "first"
    export(job, targets, first, "--segment-id", SID)
    with pytest.raises(ConfigError, match=rf"--existing {first}: it is this run's --output"):
        export(job, targets, first, "--segment-id", SID, "--existing", first)
    assert lines(first) == [(sha(email(0)), f"d_sid={SID}")]


def test_a_profile_whose_only_id_is_withheld_is_not_counted_as_exported(tmp_path):
    """p01 and p02 share an address; p02 opted out, so the address is withheld: nothing is sent for
    p01. The report counted p01 as exported (it had a new pair) while no line carried it."""
    job = write_job(tmp_path / "job")
    pq.write_table(pa.table({"profile_id": ["p00", "p01", "p02", "p03"],
                             "email": [email(0), email(1), email(1), email(3)],
                             "opt_out": [False, False, True, False]}), job.parent / "profiles.parquet")
    state = tmp_path / "state"
    export(job, write_targets(tmp_path / "t0.csv", [3]), tmp_path / "zero", "--segment-id", SID, "--state", state)
    report = export(job, write_targets(tmp_path / "t.csv", [0, 1, 3]), tmp_path / "o", "--segment-id", SID,
                    "--state", state)
    assert lines(tmp_path / "o") == [(sha(email(0)), f"d_sid={SID}")]
    assert (report["exported"], report["already_present"], report["shares_blocked_id"]) == (1, 1, 1)
    assert (report["added"], report["unchanged"], report["withheld"]) == (1, 1, 1)
    check_export_report(report)


def test_every_user_id_of_an_opted_out_profile_is_withheld_whichever_extract_row_says_it(tmp_path):
    """p00 is opted out on one row (file b) and has e9 on another (file a); p01 is targeted with e9: e9
    was sent (withheld=0), only the opted-out row's own ID was blocked. p02 (targeted) is opted out on
    its row in file b, not on its row in file a: opted_out, and p03 shares the address of that row."""
    job = write_job(tmp_path / "job")
    config = yaml.safe_load(job.read_text())
    job.write_text(yaml.safe_dump({**config, "profiles": {**config["profiles"], "path": "profiles-*.parquet"}}))
    pq.write_table(pa.table({"profile_id": ["p00", "p01", "p02", "p03", "p03", "p04"],
                             "email": [email(9), email(9), email(2), email(2), email(3), email(4)],
                             "opt_out": [False] * 6}), job.parent / "profiles-a.parquet")
    pq.write_table(pa.table({"profile_id": ["p00", "p02"], "email": [email(0), email(7)], "opt_out": [True, True]}),
                   job.parent / "profiles-b.parquet")
    report = export(job, write_targets(tmp_path / "t.csv", [1, 2, 3, 4]), tmp_path / "o", "--segment-id", SID)
    assert lines(tmp_path / "o") == sorted([(sha(email(3)), f"d_sid={SID}"), (sha(email(4)), f"d_sid={SID}")])
    assert (report["exported"], report["shares_blocked_id"], report["opted_out"]) == (2, 1, 1)
    assert (report["added"], report["withheld"]) == (2, 2)
    check_export_report(report)


def _one_export(work: Path) -> tuple[Path, Path, Path]:
    """Two profiles; audience A's export of p00 (targets ``t.csv``) into ``first``, with its state in
    ``state``: ``(job, state, targets)``."""
    job = write_job(work / "job")
    state = work / "state"
    write_profiles(job.parent, [0, 1])
    targets = write_targets(work / "t.csv", [0])
    export(job, targets, work / "first", "--segment-id", SID, "--state", state)
    return job, state, targets


made_one_export = made_once_fixture("one-export", _one_export)


@pytest.fixture
def one_export(made_one_export) -> tuple[Path, Path, Path, Path]:
    """``(work, job, state, targets)``: the module's one export as its run left it. Its folder ``work`` is
    put back from the untouched copy before each test, at the same paths (the export state names its
    outputs by path), so a test may damage it or export again as after a run of its own."""
    return (made_one_export.work, *made_one_export.restored())


def test_state_refusals_are_configuration_errors(one_export):
    work, job, state, targets = one_export
    with pytest.raises(ConfigError, match="--mode overwrite needs --state ROOT"):
        export(job, targets, work / "o", "--mode", "overwrite")
    with pytest.raises(ConfigError, match="--state and --existing: give one"):
        export(job, targets, work / "o", "--state", state, "--existing", work / "first")
    with pytest.raises(ConfigError, match=r"--state: audience 'A' was exported as d_sid=777, this run sends d_sid=778"):
        export(job, targets, work / "o", "--segment-id", 778, "--state", state)
    # A renamed audience (or a typo) starts with nothing held: A's members would never be removed,
    # and two audiences on one segment undo each other's removals.
    with pytest.raises(ConfigError, match=r"--state: audience 'A' of data source '\w+' already sends d_sid=777"):
        export(job, targets, work / "o", "--segment-id", SID, "--state", state, audience="A (renamed)")
    # So is a renamed data source (the platform's is its dpid): the state is kept by name.
    job.write_text(job.read_text().replace("name: crm", "name: crm-renamed"))
    with pytest.raises(ConfigError, match=r"--state: audience 'A' of data source 'crm' already sends d_sid=777"):
        export(job, targets, work / "o", "--segment-id", SID, "--state", state)
    assert not (work / "o").exists()


def test_an_audience_that_holds_no_one_does_not_keep_its_segment_from_another(tmp_path):
    """One segment, one audience, so that a renamed audience cannot leave the old name's members on
    the platform. An old name emptied first (its last version holds no pair: nothing to remove)
    refused the new name too, for good: a rename could not be done at all. Found in review of
    today's diff."""
    from datetime import date

    from transforms.config_load import load_config
    from transforms.export_spec import export_spec
    from transforms.export_paths import audience_dir
    from transforms.export_state import state_for

    job = write_job(tmp_path / "job")
    cfg = load_config(str(job))
    state = tmp_path / "state"
    for number, pairs in ((1, 3), (2, 0)):
        version = Path(audience_dir(str(state), "crm", "A")) / f"v-{number:06d}"
        version.mkdir(parents=True)
        (version / "_SUCCESS").write_text(json.dumps({
            "data_source": "crm", "dpid": DPID, "target_dpid": None, "audience": "A", "segment": f"d_sid={SID}",
            "mode": "sync", "run_date": RUN_DATE, "pairs": pairs, "user_ids": pairs, "output": str(tmp_path / "o"),
            "files": [], "control_file": None, "parts": []}))
        problems = []
        state_for(str(state), export_spec(cfg, "B", None, date(2026, 11, 24), SID), problems, str(tmp_path / "b"))
        assert bool(problems) == bool(pairs), problems


@pytest.mark.parametrize("content", ["{not json", "", "[1, 2]"])
def test_a_damaged_state_manifest_fails_naming_it(one_export, content):
    """It gave ``JSONDecodeError: Expecting value...`` (or an AttributeError) with no file named."""
    from transforms.errors import InputError

    work, job, state, targets = one_export
    manifest = state / "crm" / "A" / "v-000001" / "_SUCCESS"
    manifest.write_text(content)
    with pytest.raises(InputError) as info:
        export(job, targets, work / "o", "--segment-id", SID, "--state", state, run_date=NEXT_DATE)
    assert str(info.value).startswith(f"{manifest}: not a JSON object")


def test_a_targets_file_that_is_not_utf8_says_so(tmp_path):
    """It said "no 'profile_id' column": the column is there, a Latin-1 id is the problem."""
    from transforms.errors import InputError

    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1])
    targets = tmp_path / "t.csv"
    targets.write_bytes(b"profile_id\np00\np\xe901\n")
    with pytest.raises(InputError) as info:
        export(job, targets, tmp_path / "o", "--segment-id", SID)
    assert str(info.value).startswith(f"{targets}: not UTF-8") and "\xe9" not in str(info.value)


def test_an_uncommitted_state_version_is_invisible_and_cleared(tmp_path):
    job = write_job(tmp_path / "job")
    state = tmp_path / "state"
    write_profiles(job.parent, [0, 1, 2])
    export(job, write_targets(tmp_path / "t.csv", [0, 1]), tmp_path / "first", "--segment-id", SID, "--state", state)
    leftover = state / "crm" / "A" / "v-000002" / "members"
    leftover.mkdir(parents=True)
    pq.write_table(pa.table({"profile_id": ["p02"], "user_id": [sha(email(2))]}), leftover / "part-00000-of-00004.parquet")
    report = export(job, write_targets(tmp_path / "t2.csv", [0, 1, 2]), tmp_path / "second", "--segment-id", SID,
                    "--state", state)
    assert (report["added"], report["unchanged"]) == (1, 2)  # the killed run's p02 was never held
    held = {r["profile_id"] for r in pq.read_table(state / "crm" / "A" / "v-000002" / "members").to_pylist()}
    assert held == {"p00", "p01", "p02"}


def test_a_state_missing_a_part_fails_the_add_up_check(tmp_path):
    job = write_job(tmp_path / "job")
    state = tmp_path / "state"
    write_profiles(job.parent, [*range(12)])
    targets = write_targets(tmp_path / "t.csv", [*range(12)])
    export(job, targets, tmp_path / "first", "--segment-id", SID, "--state", state)
    parts = sorted((state / "crm" / "A" / "v-000001" / "members").glob("*.parquet"))
    assert len(parts) > 1
    parts[0].unlink()  # the platform still holds those pairs: recomputing without them would resend them
    with pytest.raises(RunFailed, match=r"pairs read from the export state \(expected 12, accounted for \d+\)"):
        export(job, targets, tmp_path / "second", "--segment-id", SID, "--state", state)


# ----------------------------------------------------------------------------------------------------
# The report's checks fire on inconsistent counts
# ----------------------------------------------------------------------------------------------------
def consistent_report() -> dict:
    return {
        "audience": "A", "segment": "d_sid=7", "mode": "sync", "state_expected_pairs": 5,
        "target_rows": 12, "targets": 10, "duplicate_target_rows": 1, "blank_target_ids": 1,
        "exported": 3, "already_present": 2, "shares_blocked_id": 1, "unmapped": 1, "suppressed": 1, "opted_out": 1, "consent_unknown": 0,
        "unknown_profile": 1, "earlier_pairs_read": 5, "earlier_user_ids": 5, "desired_user_ids": 7, "added": 4,
        "unchanged": 2, "withheld": 1, "removed": 3, "audience_user_ids": 6, "lines": 7,
        "removed_by_reason": {"opted_out": 2, "untargeted": 1}, "files": [{"lines": 4}, {"lines": 3}],
    }


@pytest.mark.parametrize("field,value,message", [
    ("duplicate_target_rows", 2, "target rows"),
    ("unmapped", 2, "targets"),
    ("removed_by_reason", {"opted_out": 1, "untargeted": 1}, "removed by reason"),
    ("earlier_user_ids", 6, "earlier user IDs"),
    ("withheld", 0, "desired user IDs"),
    ("audience_user_ids", 7, "audience user IDs"),
    ("earlier_pairs_read", 4, "pairs read from the export state"),
    ("lines", 8, "lines"),
    ("files", [{"lines": 7}, {"lines": 1}], "lines in the files"),
])
def test_check_export_report_fails_on_inconsistent_counts(field, value, message):
    check_export_report(consistent_report())  # the consistent one passes
    report = {**consistent_report(), field: value}
    with pytest.raises(RunFailed, match=rf"export counts do not add up: {message} \(expected"):
        check_export_report(report)


def test_an_extract_that_gives_the_export_nothing_fails_unless_allowed():
    """No profile read (a header-only extract), or no target found in it and no opted-out row with a
    user ID (an emptied or misnamed column): every member left the audience (deleted_profile,
    id_changed), exit 0. The import refused both unless profiles.allow_empty_profiles."""
    from transforms.export_report import check_export_extract

    base = {**consistent_report(), "data_source": "crm", "profiles_read": 30, "blocked_user_ids": 0}
    check_export_extract(base, "profiles.parquet", "email", allow_empty=False)
    with pytest.raises(RunFailed, match=r"profiles: no profile was read from 'profiles.parquet' \(a header-only"):
        check_export_extract({**base, "profiles_read": 0}, "profiles.parquet", "email", allow_empty=False)
    nothing = {**base, "desired_user_ids": 0}
    with pytest.raises(RunFailed, match=r"data source 'crm': none of the 1 eligible target\(s\) .* column 'email'"):
        check_export_extract(nothing, "profiles.parquet", "email", allow_empty=False)
    check_export_extract({**nothing, "blocked_user_ids": 1}, "profiles.parquet", "email", allow_empty=False)
    for allowed in ({**base, "profiles_read": 0}, nothing):
        check_export_extract(allowed, "profiles.parquet", "email", allow_empty=True)



@pytest.mark.parametrize("flags,limit", [((), 0.9), (("--allow-shrink",), None)])
def test_allow_shrink_lifts_the_export_guard_and_max_shrink_sets_it(tmp_path, monkeypatch, flags, limit):
    job = write_job(tmp_path / "job")
    job.write_text(yaml.safe_dump({**yaml.safe_load(job.read_text()), "max_shrink": 0.9}))
    write_profiles(job.parent, [0])
    specs = []
    monkeypatch.setattr(export_audience, "build_pipeline", lambda p, cfg, spec, *rest: specs.append(spec))
    monkeypatch.setattr(export_audience.launch, "run_pipeline", lambda options, run_dir, report, build, **_: build(None))
    export_audience.run(["--config", str(job), "--audience", "A", "--targets", str(write_targets(tmp_path / "t.csv", [0])),
                         "--output", str(tmp_path / "o"), *flags])
    assert [spec.max_shrink for spec in specs] == [limit]


def test_an_emptied_key_column_or_a_header_only_targets_file_fails_the_export_and_publishes_nothing(tmp_path):
    job = write_job(tmp_path / "job")
    state = tmp_path / "state"
    write_profiles(job.parent, [*range(4)])
    targets = write_targets(tmp_path / "t.csv", [*range(4)])
    export(job, targets, tmp_path / "first", "--segment-id", SID, "--state", state)
    pq.write_table(pa.table({"profile_id": [f"p{i:02d}" for i in range(4)], "email": pa.nulls(4, pa.string()),
                             "opt_out": [False] * 4}), job.parent / "profiles.parquet")
    with pytest.raises(RunFailed, match=r"none of the 4 eligible target\(s\) .* column 'email'"):
        export(job, targets, tmp_path / "second", "--segment-id", SID, "--state", state)
    assert not (tmp_path / "second" / "report.json").exists()
    assert sorted(p.name for p in (state / "crm" / "A").iterdir()) == ["v-000001"]
    write_profiles(job.parent, [*range(4)])
    with pytest.raises(RunFailed, match=r"audience 'A': 4 of the 4 user IDs .* more than max_shrink=0.5"):
        export(job, write_targets(tmp_path / "empty.csv", []), tmp_path / "third", "--segment-id", SID, "--state", state)
    assert not (tmp_path / "third" / "report.json").exists()
    assert sorted(p.name for p in (state / "crm" / "A").iterdir()) == ["v-000001"]



def test_an_export_that_would_remove_most_of_the_audience_fails_unless_allowed():
    """A header-only targets file, or one listing a small share of what the platform holds, removed
    every member with exit 0. As a night, such a run fails (max_shrink) unless --allow-shrink."""
    from transforms.export_report import check_export_shrink

    base = {**consistent_report(), "earlier_user_ids": 10, "removed": 5, "state_previous_version": 3,
            "removed_by_reason": {"untargeted": 5}}
    check_export_shrink(base, 0.5)
    with pytest.raises(RunFailed, match=r"^audience 'A': 6 of the 10 user IDs the platform holds \(state v-000003\) "
                                        r"would leave it, more than max_shrink=0.5; nothing was published \(rerun "
                                        r"with --allow-shrink if intended\)$"):
        check_export_shrink({**base, "removed": 6}, 0.5)
    check_export_shrink({**base, "removed": 10}, None)  # --allow-shrink
    check_export_shrink({**base, "earlier_user_ids": 0, "removed": 0}, 0.0)  # a first export holds nothing
    with pytest.raises(RunFailed, match=r"the 2 user IDs the platform holds \(the --existing exports\)"):
        check_export_shrink({**base, "earlier_user_ids": 2, "removed": 2, "state_previous_version": None}, 0.9)
    # Consent (an opt-out, or unknown consent: never a yes) and suppression are not a damaged input to
    # stop at: a wave of them leaves at once (held back, their IDs would stay shared until a rerun).
    chosen = {**base, "removed": 9,
              "removed_by_reason": {"untargeted": 2, "opted_out": 4, "consent_unknown": 2, "suppressed": 1}}
    check_export_shrink(chosen, 0.5)
    with pytest.raises(RunFailed, match=r"^audience 'A': 6 of the 10 user IDs .* \(besides 3 opted out, of unknown "
                                        r"consent or suppressed\)"):
        check_export_shrink({**chosen, "removed_by_reason": {"untargeted": 6, "opted_out": 1, "consent_unknown": 1,
                                                             "suppressed": 1}}, 0.5)


def test_an_export_whose_user_ids_all_changed_says_so_when_the_collapse_guard_stops_it(tmp_path):
    """The first export after an AES-GCM key activates gives every member a new token: the old ones
    leave as id_changed and the guard stopped the run saying '6 of the 6 user IDs ... would leave it',
    as for an emptied targets file, while every targeted profile was still there. It now says that
    the profiles give other user IDs (a new key, another normalization or match_on), and
    --allow-shrink replaces them."""
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "ring.json").write_text(json.dumps({"keys": [
        {"id": 2, "secret": (b"\x02" * 32).hex(), "activates": "2026-06-01T00:00:00Z", "expires": None},
        {"id": 3, "secret": (b"\x03" * 32).hex(), "activates": "2026-11-23T00:00:00Z", "expires": None}]}))
    (folder / "job.yaml").write_text(yaml.safe_dump({
        "profiles": {"path": "profiles.parquet", "phone": None, "visitor_ids": None, "opt_out": "opt_out"},
        "data_sources": [{"name": "gcm", "dpid": 777, "segments": "dumps/*.sync", "id_type": "declared",
                          "declared": "encrypted", "match_on": "email", "channel": "email",
                          "force_reconciliation": True,
                          "encryption": {"algorithm": "aes-gcm", "keyring": "file:ring.json"}}],
    }))
    write_profiles(folder, [*range(6)])
    targets = write_targets(tmp_path / "t.csv", [*range(6)])
    flags = ("--segment-id", SID, "--state", tmp_path / "state")
    export(folder / "job.yaml", targets, tmp_path / "first", *flags)
    with pytest.raises(RunFailed, match=r"^audience 'A': 6 of the 6 user IDs .* more than max_shrink=0.5; 6 of "
                                        r"them id_changed: the profiles give other user IDs than the platform holds "
                                        r"\(a new encryption key, another normalization or match_on\?\); nothing"):
        export(folder / "job.yaml", targets, tmp_path / "second", *flags, run_date=NEXT_DATE)
    report = export(folder / "job.yaml", targets, tmp_path / "second", *flags, "--allow-shrink", run_date=NEXT_DATE)
    assert (report["added"], report["removed_by_reason"]["id_changed"], report["audience_user_ids"]) == (6, 6, 6)


# ----------------------------------------------------------------------------------------------------
# Suppression: nothing suppressed in any output of export and import
# ----------------------------------------------------------------------------------------------------
def test_a_suppressed_address_is_in_no_output_of_the_export(tmp_path):
    lists = tmp_path / "job" / "lists"
    lists.mkdir(parents=True)
    (lists / "plain.txt").write_text("  PERSON21@Example.com \n\n")  # joins in the second export: never sent
    # p05 is added below (the first export sends it); an empty list fails the run, so it starts with nobody's
    (lists / "hashed.txt").write_text(sha("nobody@example.com") + "\n")
    job = write_job(tmp_path / "job", [{"path": "lists/plain.txt", "kind": "email"},
                                       {"path": "lists/hashed.txt", "kind": "email", "hashed": True}])
    state = tmp_path / "state"
    write_profiles(job.parent, [*range(30)])
    export(job, write_targets(tmp_path / "t1.csv", [*range(10)]), tmp_path / "first", "--segment-id", SID,
           "--state", state)
    (lists / "hashed.txt").write_text(sha(email(5)).upper() + "\n")
    report = export(job, write_targets(tmp_path / "t2.csv", [*range(10), 21, 22]), tmp_path / "second",
                    "--segment-id", SID, "--state", state, run_date=NEXT_DATE)
    assert (report["suppressed"], report["removed_by_reason"]["suppressed"], report["added"]) == (2, 1, 1)
    assert report["suppression_entries"] == 2
    # The one trace of p05 is the line that removes it from the platform (which holds it already).
    assert lines(tmp_path / "second") == sorted([(sha(email(22)), f"d_sid={SID}"), (sha(email(5)), f"d_unsid={SID}")])
    text = output_text(tmp_path / "second") + output_text(state / "crm" / "A" / "v-000002")
    assert email(21) not in text.lower() and sha(email(21)) not in text
    second_without_files = output_text(tmp_path / "second").replace(
        gzip.decompress((tmp_path / "second" / "onboarding" / f"ftp_dpm_{DPID}_{NEXT_TS}.sync.gz").read_bytes()).decode(), "")
    assert sha(email(5)) not in second_without_files and email(5) not in second_without_files
    assert sha(email(5)) not in output_text(state / "crm" / "A" / "v-000002")


@pytest.mark.parametrize("kind", ["email", "phone"])
def test_a_listed_address_in_the_column_the_data_source_shares_is_suppressed(tmp_path, kind):
    """A hashed data source on a second address column (match_on: work_email, match_as: email; a
    mobile column as phone): the lists were compared with profiles.email / profiles.phone only, so
    a listed work address was sent, its digest in the file, exit 0. Every column the export reads as
    that kind is compared."""
    folder = tmp_path / "job"
    (folder / "lists").mkdir(parents=True)
    listed, other = ("jane@corp.com", "bob@corp.com") if kind == "email" else ("+33612345678", "+33699999999")
    (folder / "lists" / "dns.txt").write_text(f"{listed}\n")
    column = "work_email" if kind == "email" else "mobile"
    pq.write_table(pa.table({"profile_id": ["p01", "p02", "p03"], "email": [email(1), email(2), email(3)],
                             "phone": ["+33100000001", "+33100000002", None], column: [listed.upper(), other, None],
                             "opt_out": [False, False, False]}), folder / "profiles.parquet")
    config = {"profiles": {"path": "profiles.parquet", "email": "email", "phone": "phone", "visitor_ids": None,
                           "opt_out": "opt_out"},
              "buckets": 4,
              "data_sources": [{"name": "crm", "dpid": DPID, "segments": "dumps/*.sync", "id_type": "declared",
                                "declared": "hashed", "match_on": column, "match_as": kind}],
              "suppression": [{"path": "lists/dns.txt", "kind": kind}]}
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    report = export(folder / "job.yaml", write_targets(tmp_path / "t.csv", [1, 2, 3]), tmp_path / "out",
                    "--segment-id", SID)
    assert (report["suppressed"], report["exported"], report["unmapped"]) == (1, 1, 1)
    sent = [user_id for user_id, _ in lines(tmp_path / "out")]
    assert sent == [hashlib.sha256(other.encode()).hexdigest()]
    assert hashlib.sha256(listed.encode()).hexdigest() not in output_text(tmp_path / "out")


def test_a_listed_address_a_plain_data_source_shares_from_another_column_is_suppressed(tmp_path):
    """A plain data source on a second email column (match_on: work_email: IDs sent as written, no
    match_as there): the email lists were compared with profiles.email only, and a listed work address
    was sent as it is, exit 0. An email list is compared with the data source's own column whatever it
    reads it as (a value that is no email address, a CRM id, never matches one)."""
    folder = tmp_path / "job"
    (folder / "lists").mkdir(parents=True)
    (folder / "lists" / "dns.txt").write_text("jane@corp.com\n")
    pq.write_table(pa.table({"profile_id": ["p01", "p02", "p03"], "email": [email(1), email(2), email(3)],
                             "work_email": ["Jane@Corp.com", "bob@corp.com", "1234"],
                             "opt_out": [False, False, False]}), folder / "profiles.parquet")
    config = {"profiles": {"path": "profiles.parquet", "email": "email", "phone": None, "visitor_ids": None,
                           "opt_out": "opt_out"},
              "buckets": 4,
              "data_sources": [{"name": "crm", "dpid": DPID, "segments": "dumps/*.sync", "id_type": "declared",
                                "declared": "plain", "match_on": "work_email"}],
              "suppression": [{"path": "lists/dns.txt", "kind": "email"}]}
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    report = export(folder / "job.yaml", write_targets(tmp_path / "t.csv", [1, 2, 3]), tmp_path / "out",
                    "--segment-id", SID)
    assert (report["suppressed"], report["exported"]) == (1, 2)
    assert lines(tmp_path / "out") == [("1234", f"d_sid={SID}"), ("bob@corp.com", f"d_sid={SID}")]
    assert "jane" not in output_text(tmp_path / "out").lower()


def test_a_list_hashed_before_the_data_sources_normalization_changed_still_suppresses(tmp_path):
    """The list was hashed when the data source normalized as adobe (gmail dots kept); the data source
    is google now (dots dropped). Its digests matched none of the new form: the suppressed address
    was exported, exit 0. Every normalization's form of the extract's address is compared."""
    folder = tmp_path / "job"
    (folder / "lists").mkdir(parents=True)
    (folder / "lists" / "hashed.txt").write_text(sha("jo.doe@gmail.com") + "\n")
    job = write_job(folder, [{"path": "lists/hashed.txt", "kind": "email", "hashed": True}])
    config = yaml.safe_load(job.read_text())
    config["data_sources"][0]["normalization"] = "google"
    job.write_text(yaml.safe_dump(config))
    pq.write_table(pa.table({"profile_id": ["p01", "p02"], "email": [" Jo.Doe@Gmail.com", email(2)],
                             "opt_out": [False, False]}), folder / "profiles.parquet")
    report = export(job, write_targets(tmp_path / "t.csv", [1, 2]), tmp_path / "out", "--segment-id", SID)
    assert (report["suppressed"], report["exported"]) == (1, 1)
    google = hashlib.sha256(b"jodoe@gmail.com").hexdigest()
    assert lines(tmp_path / "out") == [(sha(email(2)), f"d_sid={SID}")] and google not in output_text(tmp_path / "out")


def test_a_list_hashed_from_the_addresses_as_written_still_suppresses(tmp_path):
    """A do-not-share list hashed from the CRM's column as it is ('Jane.Doe@Example.com', not
    normalized): no normalization's form of the address gave its digest, so it suppressed nobody and
    the address was exported, exit 0. The extract's address as written (trimmed) is compared too."""
    folder = tmp_path / "job"
    (folder / "lists").mkdir(parents=True)
    as_written = ["Jane.Doe@Example.com", "Bob+News@X.com"]
    (folder / "lists" / "hashed.txt").write_text("".join(hashlib.sha256(a.encode()).hexdigest() + "\n"
                                                         for a in as_written))
    job = write_job(folder, [{"path": "lists/hashed.txt", "kind": "email", "hashed": True}])
    pq.write_table(pa.table({"profile_id": ["p01", "p02", "p03"],
                             "email": [f" {as_written[0]}", as_written[1], email(3)],
                             "opt_out": [False, False, False]}), folder / "profiles.parquet")
    report = export(job, write_targets(tmp_path / "t.csv", [1, 2, 3]), tmp_path / "out", "--segment-id", SID)
    assert (report["suppressed"], report["exported"]) == (2, 1)
    assert lines(tmp_path / "out") == [(sha(email(3)), f"d_sid={SID}")]


@pytest.mark.parametrize("where", ["profiles", "data source"])
def test_a_phone_written_without_its_country_code_is_suppressed_in_the_default_region(tmp_path, where):
    """The profile's 06 12 34 56 78 in France is the list's +33 6 12 34 56 78, and the list's own
    national entries read in that region too: the suppression check normalizes as the keys do."""
    folder = tmp_path / "job"
    (folder / "lists").mkdir(parents=True)
    (folder / "lists" / "phones.txt").write_text("+33612345678\n07 12 34 56 78\n")
    pq.write_table(pa.table({"profile_id": ["p1", "p2", "p3"],
                             "phone": ["06 12 34 56 78", "+33712345678", "0699999999"],
                             "opt_out": [False, False, False]}), folder / "profiles.parquet")
    source = {"name": "ph", "dpid": DPID, "segments": "dumps/*.sync", "id_type": "declared", "declared": "hashed",
              "match_on": "phone"}
    profiles = {"path": "profiles.parquet", "email": None, "phone": "phone", "visitor_ids": None, "opt_out": "opt_out"}
    if where == "profiles":
        profiles["default_region"] = "FR"
    else:
        source["default_region"] = "FR"
    (folder / "job.yaml").write_text(yaml.safe_dump({"profiles": profiles, "buckets": 4, "data_sources": [source],
                                                     "suppression": [{"path": "lists/phones.txt", "kind": "phone"}]}))
    (tmp_path / "t.csv").write_text("profile_id\np1\np2\np3\n")
    report = export(folder / "job.yaml", tmp_path / "t.csv", tmp_path / "o", "--segment-id", SID)
    assert (report["suppressed"], report["exported"]) == (2, 1)
    assert lines(tmp_path / "o") == [(hashlib.sha256(b"+33699999999").hexdigest(), f"d_sid={SID}")]


def phone_list_job(tmp_path, p2_phone: str, p3_phone: str):
    """An email data source, a phone suppression list (+33612345678) and an extract of three
    profiles, p1's phone in E.164, p2's and p3's as given; targets: all three. Returns the job's
    folder, its config (as written) and the targets file."""
    folder = tmp_path / "job"
    (folder / "lists").mkdir(parents=True)
    (folder / "lists" / "phones.txt").write_text("+33612345678\n")
    (folder / "p.csv").write_text("profile_id,email,phone,opt_out\np1,a1@x.com,+33 6 99 99 99 99,no\n"
                                  f"p2,a2@x.com,{p2_phone},no\np3,a3@x.com,{p3_phone},no\n")
    config = {"profiles": {"path": "p.csv", "email": "email", "phone": "phone", "visitor_ids": None,
                           "opt_out": "opt_out"},
              "buckets": 4,
              "data_sources": [{"name": "crm", "dpid": DPID, "segments": "dumps/*.sync", "id_type": "declared",
                                "declared": "hashed", "match_on": "email"}],
              "suppression": [{"path": "lists/phones.txt", "kind": "phone"}]}
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    targets = tmp_path / "t.csv"
    targets.write_text("profile_id\np1\np2\np3\n")
    return folder, config, targets


def test_an_extract_phone_without_its_country_code_fails_when_no_region_reads_it_against_a_phone_list(tmp_path):
    """An email data source, a phone suppression list in E.164, the extract's phones written
    nationally (06 12 34 56 78) and no default_region: the extract's phone read as no number, was
    compared with nothing, and the profile was exported by its email, exit 0. It fails naming the
    file, the line, the column and profiles.default_region; set, the phone is suppressed."""
    folder, config, targets = phone_list_job(tmp_path, "", "06 12 34 56 78")
    result = cli_in_process("export", "--config", folder / "job.yaml", "--audience", "A", "--targets", targets,
                            "--output", tmp_path / "o", "--segment-id", SID, "--run-date", RUN_DATE)
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"{folder / 'p.csv'}:4: column 'phone': a phone written without its country code" in last, last
    assert "profiles.default_region" in last and "Traceback" not in result.stderr and "12 34" not in result.stderr
    assert not (tmp_path / "o" / "report.json").exists()
    config["profiles"]["default_region"] = "FR"
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    report = export(folder / "job.yaml", targets, tmp_path / "o", "--segment-id", SID)
    assert (report["suppressed"], report["exported"]) == (1, 2)
    assert sorted(lines(tmp_path / "o")) == sorted((sha(email), f"d_sid={SID}") for email in ("a1@x.com", "a2@x.com"))


def test_a_data_source_comparing_phones_as_written_needs_no_region_against_a_phone_list(tmp_path):
    """normalization: none compares phones as written, the list's and the extract's alike: a national
    number needs no region there, and the export failed 'set profiles.default_region' (from the diff
    review). The listed number, written alike, is suppressed."""
    folder, config, targets = phone_list_job(tmp_path, "", "0612345678")
    (folder / "lists" / "phones.txt").write_text("0612345678\n")
    config["data_sources"][0]["normalization"] = "none"
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    report = export(folder / "job.yaml", targets, tmp_path / "o", "--segment-id", SID)
    assert (report["suppressed"], report["exported"]) == (1, 2)


@pytest.mark.parametrize("placeholder", ["0", "000"])
def test_a_placeholder_phone_no_region_reads_does_not_fail_the_export_against_a_phone_list(tmp_path, placeholder):
    """An international extract (phones in E.164) holding a placeholder phone ('0', '000') for a
    profile without one, a phone list and no default_region: the placeholder was taken for a national
    number and the export failed 'set profiles.default_region', though no region reads fewer than 4
    digits as a phone (nor would one make it comparable). The listed number is suppressed, exit 0."""
    folder, _, targets = phone_list_job(tmp_path, placeholder, "+33 6 12 34 56 78")
    report = export(folder / "job.yaml", targets, tmp_path / "o", "--segment-id", SID)
    assert (report["suppressed"], report["exported"]) == (1, 2)
    assert sorted(lines(tmp_path / "o")) == sorted((sha(email), f"d_sid={SID}") for email in ("a1@x.com", "a2@x.com"))


def test_a_bad_suppression_entry_fails_naming_file_and_line(tmp_path):
    lists = tmp_path / "job" / "lists"
    lists.mkdir(parents=True)
    (lists / "hashed.txt").write_text(f"{sha('a@b.c')}\nnot-a-digest\n")
    job = write_job(tmp_path / "job", [{"path": "lists/hashed.txt", "kind": "email", "hashed": True}])
    write_profiles(job.parent, [0])
    code = export_audience.main(["--config", str(job), "--audience", "A", "--targets",
                                 str(write_targets(tmp_path / "t.csv", [0])), "--output", str(tmp_path / "o")])
    assert code == 1
    job_missing = write_job(tmp_path / "job", [{"path": "lists/nope*.txt", "kind": "email"}])
    with pytest.raises(ConfigError, match=r"suppression\[0\]\.path: no file matches"):
        export(job_missing, tmp_path / "t.csv", tmp_path / "o")


# ----------------------------------------------------------------------------------------------------
# Global device-ID data sources
# ----------------------------------------------------------------------------------------------------
def test_an_export_to_20914_needs_target_dpid_and_names_it_in_the_file(tmp_path):
    job = write_job(tmp_path / "job")
    config = yaml.safe_load(job.read_text())
    config["data_sources"][0]["dpid"] = 20914
    job.write_text(yaml.safe_dump(config))
    write_profiles(job.parent, [0, 1])
    targets = write_targets(tmp_path / "t.csv", [0, 1])
    result = cli_in_process("export", "--config", job, "--audience", "A", "--targets", targets,
                            "--output", tmp_path / "o", "--run-date", RUN_DATE)
    assert result.returncode == 2
    assert "data_sources[0].target_dpid: data source 'crm' has dpid 20914" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()
    config["data_sources"][0]["target_dpid"] = 45454
    job.write_text(yaml.safe_dump(config))
    report = export(job, targets, tmp_path / "o")
    assert [f["name"] for f in report["files"]] == [f"ftp_dpm_20914_45454_{TS}.sync.gz"]
    assert report["control_file"] == f"ftp_dpm_20914_45454_{TS}.info" and report["target_dpid"] == 45454
    # An earlier export sent to another target data source holds nothing for this one: refused, as
    # the state refuses it (its IDs counted as held there were never sent to this one).
    config["data_sources"][0]["target_dpid"] = 45455
    job.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match=r"--existing .*: exported to target dpid 45454, not 45455"):
        export(job, targets, tmp_path / "o2", "--existing", tmp_path / "o")
