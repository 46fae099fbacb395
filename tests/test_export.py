"""The export pipeline, run for real: exact onboarding files, deltas, opt-out, counts, determinism,
a round trip through the import, and logs without personal data."""
from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import logging
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import DEMO, ROOT, cli_in_process, local_test_pipeline
from made_once import made_once_fixture

from pipelines import export_audience, import_audience
from transforms.config import ConfigError
from transforms.config_load import load_config, parse_config
from transforms.errors import RunFailed
from transforms.encrypt import GcmEncryptor
from transforms.export import ExportAudience, ExportOutputs
from transforms.export_classify import CANDIDATE_SCHEMA, EARLIER_SCHEMA, EXPORTED_SCHEMA, classify
from transforms.export_report import OUTCOMES
from transforms.export_spec import check_audience_name, export_spec
from transforms.export_state import ExportState
from transforms.onboarding import control_document, line_bytes
from transforms.outcomes import Count, Metric, Removal
from transforms.targets import TARGET_SCHEMA

RUN_DATE = "2026-11-22"
TS = 1795305600  # 2026-11-22T00:00:00Z
V1, V2, V3, V4, V5, V6 = (str(d) * 38 for d in range(1, 7))
V0 = "0" + "7" * 37  # leading zero kept


def sha(email: str) -> str:
    """Independent oracle for the adobe profile: trim, lowercase, SHA-256, lowercase hex."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


PROFILES = [
    # profile_id, email, visitor_ids, opt_out
    ("p1", " Ann@Example.com", [V1, V2], False),
    ("p2", "bob@example.org", [V3], False),
    ("p3", None, [V4], False),  # no email: unmapped for the hashed data source
    ("p4", "carl@example.net", ["123", " "], False),  # no valid visitor ID: unmapped for visitors
    ("p5", "dora@example.com", [V5], True),  # opted out
    ("p6", "eve@example.com", [V6], False),  # never targeted
    ("p7", "ann@example.com ", [V1, V0], False),  # same address and a shared visitor ID as p1
]
# 9 rows: 7 distinct ids (p1..p5, p7, zz), one duplicate (p1), one blank
TARGETS = ["p1", "p2", "p3", "p4", "p5", "p7", "p1", "", "zz"]


def write_profiles(folder: Path, rows=PROFILES) -> Path:
    path = folder / "profiles.parquet"
    pq.write_table(
        pa.table({
            "profile_id": [r[0] for r in rows],
            "email": [r[1] for r in rows],
            "visitor_ids": pa.array([r[2] for r in rows], pa.list_(pa.string())),
            "opt_out": [r[3] for r in rows],
        }),
        path,
    )
    return path


def write_job(folder: Path, extra: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_profiles(folder)
    config = {
        "profiles": {"path": "profiles.parquet", "phone": None, "opt_out": "opt_out"},
        "buckets": 4,
        "data_sources": [
            {"name": "vis", "dpid": 56789, "segments": "unused/*.sync", "id_type": "visitor"},
            {"name": "hashed", "dpid": 12345, "segments": "unused/*.sync", "id_type": "declared",
             "declared": "hashed", "match_on": "email"},
        ],
        **(extra or {}),
    }
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    return folder / "job.yaml"


def write_targets(path: Path, ids: list[str]) -> Path:
    if path.suffix == ".csv":
        path.write_text("profile_id,note\n" + "".join(f"{i},x\n" for i in ids))
    else:
        pq.write_table(pa.table({"profile_id": ids}), path)
    return path


@pytest.fixture
def job(tmp_path) -> Path:
    cfg = write_job(tmp_path / "job")
    write_targets(tmp_path / "targets.csv", TARGETS)
    return cfg


def export(cfg: Path, targets: Path, out: Path, *flags) -> dict:
    return export_audience.run(["--config", str(cfg), "--audience", "Summer sale", "--targets", str(targets),
                                "--output", str(out), "--run-date", RUN_DATE, *map(str, flags)])


def _hashed_export(work: Path) -> tuple[Path, dict]:
    """The ``job`` fixture's job and targets in ``work``, exported through the hashed data source into
    ``work / "out"``: ``(job, report)``."""
    job = write_job(work / "job")
    write_targets(work / "targets.csv", TARGETS)
    return job, export(job, work / "targets.csv", work / "out", "--data-source", "hashed")


made_hashed_export = made_once_fixture("hashed-export", _hashed_export)


@pytest.fixture
def hashed_export(made_hashed_export) -> tuple[Path, Path, dict]:
    """``(work, job, report)``: the module's hashed export as its run left it (its targets in
    ``work / "targets.csv"``, its output in ``work / "out"``). The folder ``work`` is put back from the
    untouched copy before each test, at the same paths, and the report is a copy: each test reads
    what a run of its own would leave."""
    return (made_hashed_export.work, *made_hashed_export.restored())


def onboarding(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "onboarding").iterdir())}


def rows(folder: Path) -> set[tuple]:
    return {tuple(r.values()) for r in pq.read_table(folder).to_pylist()}


def assert_adds_up(report: dict) -> None:
    assert report["targets"] == sum(report[k] for k in OUTCOMES)
    assert report["target_rows"] == report["targets"] + report["duplicate_target_rows"] + report["blank_target_ids"]


def assert_control_file_matches(out: Path, report: dict) -> dict:
    files = onboarding(out)
    info = json.loads(files.pop(report["control_file"]))
    assert [f["FileName"] for f in info["Files"]] == [f["name"] for f in report["files"]]
    assert set(files) == {f["name"] for f in report["files"]}
    for seq, entry in enumerate(info["Files"], start=1):
        data = files[entry["FileName"]]
        assert entry["FileSequenceNumber"] == seq
        assert entry["FileByteSize"] == len(data)
        assert entry["md5"] == hashlib.md5(data).hexdigest()
        assert entry["FileLineCount"] == gzip.decompress(data).count(b"\n")
        assert data[3] == 0 and data[4:8] == b"\0\0\0\0"  # gzip: no file name, mtime 0
    assert info["Totals"] == {
        "TotalNumberFiles": len(files),
        "TotalNumberLines": report["lines"],
        "TotalByteSize": sum(len(d) for d in files.values()),
    }
    return info


# ----------------------------------------------------------------------------------------------------
# Exact files
# ----------------------------------------------------------------------------------------------------
def test_hashed_export_writes_exactly_the_expected_files(hashed_export):
    work, _, report = hashed_export
    out = work / "out"

    ann, bob, carl = sha("ann@example.com"), sha("bob@example.org"), sha("carl@example.net")
    files = onboarding(out)
    assert sorted(files) == [f"ftp_dpm_12345_{TS}.info", f"ftp_dpm_12345_{TS}.sync.gz"]
    text = gzip.decompress(files[f"ftp_dpm_12345_{TS}.sync.gz"]).decode("utf-8")
    assert text == "".join(f'{h}\t"segment"="Summer sale"\n' for h in sorted([ann, bob, carl]))
    assert_control_file_matches(out, report)

    assert rows(out / "exported") == {("p1", ann), ("p7", ann), ("p2", bob), ("p4", carl)}
    assert rows(out / "unmapped") == {("p3",)}
    assert pq.read_table(out / "exported").schema == EXPORTED_SCHEMA
    assert {k: report[k] for k in (*OUTCOMES, "targets", "target_rows", "duplicate_target_rows", "blank_target_ids",
                                    "lines", "pairs_sent")} == {
        "exported": 4, "already_present": 0, "unmapped": 1, "opted_out": 1, "unknown_profile": 1, "consent_unknown": 0,
        "suppressed": 0, "shares_blocked_id": 0,
        "targets": 7, "target_rows": 9, "duplicate_target_rows": 1, "blank_target_ids": 1,
        "lines": 3, "pairs_sent": 4,
    }
    assert_adds_up(report)
    assert report["profiles_read"] == 7 and report["nothing_to_send"] is False
    assert json.loads((out / "report.json").read_text()) == report
    assert not list(out.glob("_incomplete-*"))


def test_visitor_export_is_split_in_numbered_files_with_segment_ids(job, tmp_path):
    out = tmp_path / "out"
    report = export(job, tmp_path / "targets.csv", out, "--data-source", "vis", "--segment-id", 24,
                    "--max-lines-per-file", 2)
    files = onboarding(out)
    stem = f"ftp_dpm_56789_{TS}"
    assert sorted(files) == [f"{stem}.info", f"{stem}.sync.1.gz", f"{stem}.sync.2.gz", f"{stem}.sync.3.gz"]
    lines = [gzip.decompress(files[f"{stem}.sync.{k}.gz"]).decode() for k in (1, 2, 3)]
    assert lines == [f"{V0}\td_sid=24\n{V1}\td_sid=24\n", f"{V2}\td_sid=24\n{V3}\td_sid=24\n", f"{V4}\td_sid=24\n"]
    info = assert_control_file_matches(out, report)
    assert [f["FileLineCount"] for f in info["Files"]] == [2, 2, 1]
    assert rows(out / "exported") == {("p1", V1), ("p1", V2), ("p7", V1), ("p7", V0), ("p2", V3), ("p3", V4)}
    assert rows(out / "unmapped") == {("p4",)}  # '123' and ' ' are not visitor IDs
    assert (report["exported"], report["unmapped"], report["opted_out"], report["unknown_profile"]) == (4, 1, 1, 1)
    assert report["lines"] == 5 and report["segment"] == "d_sid=24"
    assert_adds_up(report)


def test_export_audience_returns_its_report_and_counts_by_name(job, tmp_path):
    import apache_beam as beam
    from apache_beam.testing.util import assert_that, equal_to

    cfg = load_config(str(job))
    spec = export_spec(cfg, "Summer sale", "hashed", datetime.strptime(RUN_DATE, "%Y-%m-%d").date())
    out = tmp_path / "out"
    with local_test_pipeline() as p:
        outputs = p | "Export" >> ExportAudience(cfg, spec, str(tmp_path / "targets.csv"), ExportState(), str(out),
                                                 str(out / "_incomplete-test"))
        assert isinstance(outputs, ExportOutputs)
        assert_that(outputs.report | beam.Map(lambda r: (r["targets"], r["exported"], r["lines"])),
                    equal_to([(7, 4, 3)]), label="Report")
        assert_that(outputs.counts | beam.Filter(lambda kv: kv[0].metric in (Metric.TARGET_ROWS, Metric.LINES)),
                    equal_to([(Count(Metric.TARGET_ROWS), 9), (Count(Metric.LINES), 3)]), label="Counts")
    assert json.loads((out / "report.json").read_text())["exported"] == 4


def test_parquet_targets_and_config_data_source(tmp_path):
    cfg = write_job(tmp_path / "job", {"export": {"data_source": "hashed", "max_lines_per_file": 1}})
    report = export(cfg, write_targets(tmp_path / "t.parquet", TARGETS), tmp_path / "out")
    assert report["data_source"] == "hashed"
    assert [f["lines"] for f in report["files"]] == [1, 1, 1]
    assert_adds_up(report)


# ----------------------------------------------------------------------------------------------------
# Delta, opt-out, nothing to send
# ----------------------------------------------------------------------------------------------------
def test_existing_export_is_not_sent_again_and_opt_out_leaves(tmp_path):
    cfg = write_job(tmp_path / "job")
    write_profiles(tmp_path / "job", [(p, e, v, False) for p, e, v, _ in PROFILES])  # nobody opted out yet
    first = tmp_path / "first"
    export(cfg, write_targets(tmp_path / "t1.csv", ["p1", "p2", "p5"]), first, "--data-source", "vis",
           "--segment-id", 24)
    assert rows(first / "exported") == {("p1", V1), ("p1", V2), ("p2", V3), ("p5", V5)}

    # Since then: p5 opted out (still targeted), p2 got a second visitor ID.
    changed = [(p, e, v + ([V6] if p == "p2" else []), True if p == "p5" else o) for p, e, v, o in PROFILES]
    write_profiles(tmp_path / "job", changed)
    second = tmp_path / "second"
    report = export(cfg, write_targets(tmp_path / "t2.csv", ["p1", "p2", "p3", "p5"]), second,
                    "--data-source", "vis", "--segment-id", 24, "--existing", first)
    files = onboarding(second)
    text = gzip.decompress(files[f"ftp_dpm_56789_{TS}.sync.gz"]).decode()
    assert text == f"{V4}\td_sid=24\n{V5}\td_unsid=24\n{V6}\td_sid=24\n"
    assert rows(second / "exported") == {("p2", V6), ("p3", V4)}
    assert rows(second / "removed") == {("p5", V5, "opted_out")}
    assert (report["exported"], report["already_present"], report["opted_out"]) == (2, 1, 1)
    assert (report["added"], report["removed"], report["unchanged"]) == (2, 1, 3)
    assert report["removed_by_reason"]["opted_out"] == 1
    assert report["earlier_pairs_read"] == 4
    assert_adds_up(report)
    assert_control_file_matches(second, report)

    # A third run from both earlier runs (oldest first): V5 was removed, so it is not held any more.
    third = tmp_path / "third"
    report = export(cfg, tmp_path / "t2.csv", third, "--data-source", "vis", "--segment-id", 24,
                    "--existing", first, "--existing", second)
    assert report["nothing_to_send"] is True and (report["earlier_user_ids"], report["removed"]) == (5, 0)


def test_a_key_value_audience_with_leavers_fails_in_sync_mode(tmp_path):
    cfg = write_job(tmp_path / "job")
    first = tmp_path / "first"
    export(cfg, write_targets(tmp_path / "t1.csv", ["p1", "p2"]), first, "--data-source", "vis")
    second = tmp_path / "second"
    result = cli_in_process("export", "--config", cfg, "--audience", "Summer sale", "--targets",
                            write_targets(tmp_path / "t2.csv", ["p1"]), "--output", second,
                            "--run-date", RUN_DATE, "--data-source", "vis", "--existing", first)
    assert result.returncode == 1
    assert ("audience 'Summer sale': 1 user ID(s) must leave it (untargeted=1) but a key-value audience "
            '("segment"="Summer sale") cannot be removed by a .sync file: rerun with --mode overwrite') in result.stderr
    assert not (second / "report.json").exists() and not list(second.glob("_incomplete-*"))


def test_nothing_new_writes_no_data_file(hashed_export):
    work, job, _ = hashed_export
    first = work / "out"
    again = work / "again"
    report = export(job, work / "targets.csv", again, "--data-source", "hashed", "--existing", first)
    assert report["nothing_to_send"] is True and report["files"] == [] and report["control_file"] is None
    assert list((again / "onboarding").iterdir()) == []
    assert (report["exported"], report["already_present"], report["lines"]) == (0, 4, 0)
    assert (report["added"], report["unchanged"], report["removed"]) == (0, 3, 0)
    assert rows(again / "exported") == set()  # an empty dataset with its schema
    assert pq.read_table(again / "exported").schema == EXPORTED_SCHEMA
    assert_adds_up(report)


def test_targets_none_of_which_is_a_profile_fail_the_export_unless_allowed(job, tmp_path):
    """A targets file of another column's values (emails, CRM keys) or of ids written otherwise
    ('1' for 'p1') names no profile of the extract. A first export holds nothing, so the collapse
    guard has nothing to protect: it sent nothing and exited 0 ('nothing to send'), the audience
    never shared. It fails now, naming both files; --allow-shrink publishes it."""
    wrong = write_targets(tmp_path / "emails.csv", ["ann@example.com", "bob@example.org", "1"])
    out = tmp_path / "out"
    with pytest.raises(RunFailed, match=rf"^targets: none of the 3 target ids in '{wrong}' is a profile of the extract "
                                        r"\('.*profiles.parquet', column 'profile_id'\) \(a targets file of another "
                                        r"column, or ids written otherwise\?\); nothing was published \(rerun with "
                                        r"--allow-shrink if intended\)"):
        export(job, wrong, out, "--data-source", "hashed")
    assert not (out / "report.json").exists()
    report = export(job, wrong, out, "--data-source", "hashed", "--allow-shrink")
    assert (report["targets"], report["unknown_profile"], report["nothing_to_send"]) == (3, 3, True)
    assert_adds_up(report)
    report = export(job, write_targets(tmp_path / "one.csv", ["zz", "p2"]), tmp_path / "o2", "--data-source", "hashed")
    assert (report["unknown_profile"], report["exported"]) == (1, 1)  # some unknown: the export runs


def test_targets_that_lost_their_leading_zeros_fail_the_export(tmp_path):
    """A targets file saved by a spreadsheet: the extract's ids 00001.. became 1.. for some targets.
    Each was an unknown_profile: with a state holding them they left the audience as untargeted, exit
    0 (4 of 12 is within max_shrink); a first export never sent them, exit 0. Both fail now in one line
    naming the targets file and how many (never an id); nothing is published, the state does not move.
    An unknown numeric target that is no profile id without its zeros still only counts."""
    job = write_job(tmp_path / "job")
    ids = [f"{i:05d}" for i in range(1, 13)]
    write_profiles(tmp_path / "job", [(i, f"user{int(i)}@example.com", [], False) for i in ids])
    state = tmp_path / "state"
    base = ["--config", job, "--audience", "A", "--segment-id", 7, "--data-source", "hashed"]
    result = cli_in_process("export", *base, "--targets", write_targets(tmp_path / "all.csv", [*ids, "13"]),
                            "--output", tmp_path / "o1", "--state", state, "--run-date", RUN_DATE)
    assert result.returncode == 0, result.stderr
    assert "exported=12" in result.stdout and "unknown_profile=1" in result.stdout  # '13': no profile 00013
    excel = write_targets(tmp_path / "excel.csv", [*ids[:8], *(str(int(i)) for i in ids[8:])])  # 00009 -> 9
    for out, flags in ((tmp_path / "o2", ["--state", state]), (tmp_path / "o3", [])):
        result = cli_in_process("export", *base, "--targets", excel, "--output", out, *flags,
                                "--run-date", "2026-11-23")
        assert result.returncode == 1, result.stdout
        assert (f"run failed: targets: 4 of the 12 target ids in '{excel}' are not profiles of the extract ('"
                f"{tmp_path / 'job' / 'profiles.parquet'}', column 'profile_id') but are profile ids without their "
                "leading zeros (a spreadsheet dropped them?): write the targets' ids as text, keeping the zeros; "
                "nothing was published") in result.stderr
        assert "Traceback" not in result.stderr and not (out / "report.json").exists()
    assert sorted(p.name for p in (state / "hashed" / "A").iterdir() if p.name.startswith("v-")) == ["v-000001"]


def test_only_unknown_all_digit_targets_meet_zero_led_profile_ids_without_their_zeros():
    """The two sides of the dropped-zeros check (transforms/export_zeros.py): a target that is itself a
    profile ('7' beside '007'), an id that is not all digits ('0a1', '12x'), the profile id '0' (no
    zero to drop) and a stripped id the profile filter does not hold ('0099') give nothing; '000' is
    '0' without its zeros. An extract without an id starting with '0' gives nothing to look for."""
    from transforms.export_zeros import stripped_zero_led, targets_without_zeros
    from transforms.stable_hash import KeyFilter, hash64

    everything = KeyFilter(hash64(pa.array(["7", "12", "0", "34", "55"])))
    assert stripped_zero_led(pa.array(["p1", "12", "7"]), everything).size == 0  # the usual case
    profile_ids = pa.chunked_array([["007", "0012", "0012", "0a1", "0", "000", "0099", None]])
    zero_led = stripped_zero_led(profile_ids, everything)
    assert sorted(zero_led.tolist()) == sorted(hash64(pa.array(["7", "12", "0"])).tolist())  # '99': not a target
    targets = pa.table({"profile_id": ["7", "12", "12", "12x", "0", "55", "0012"]}, schema=TARGET_SCHEMA)
    candidates = pa.table({"profile_id": ["7", "0012"], "status": pa.array([0, 0], pa.int8()),
                           "user_id": [None, None]}, schema=CANDIDATE_SCHEMA)
    assert targets_without_zeros(targets, candidates, [zero_led[:1], zero_led[1:]]) == 2  # '12' and '0'
    assert targets_without_zeros(targets, candidates, []) == 0


def test_targets_without_their_zeros_fail_the_report_check_even_with_allow_shrink():
    from transforms.export_report import check_export_targets

    report = {"targets": 5, "unknown_profile": 2, "targets_without_zeros": 2}
    with pytest.raises(RunFailed, match=r"^targets: 2 of the 5 target ids in 'T' are not profiles of the extract "
                                        r"\('P', column 'id'\) but are profile ids without their leading zeros"):
        check_export_targets(report, "T", "P", "id", True)
    check_export_targets({**report, "targets_without_zeros": 0}, "T", "P", "id", False)


def test_existing_export_of_another_data_source_is_refused(hashed_export):
    work, job, _ = hashed_export
    first = work / "out"
    with pytest.raises(ConfigError, match="--existing .*data source 'hashed', not 'vis'"):
        export(job, work / "targets.csv", work / "o", "--data-source", "vis", "--existing", first)
    with pytest.raises(ConfigError, match="no readable report.json"):
        export(job, work / "targets.csv", work / "o", "--data-source", "vis", "--existing", work / "nope")


def test_rerun_replaces_previous_files(job, tmp_path):
    out = tmp_path / "out"
    export(job, tmp_path / "targets.csv", out, "--data-source", "hashed", "--max-lines-per-file", 1)
    assert len(onboarding(out)) == 4
    report = export(job, tmp_path / "targets.csv", out, "--data-source", "hashed")
    assert sorted(onboarding(out)) == [f"ftp_dpm_12345_{TS}.info", f"ftp_dpm_12345_{TS}.sync.gz"]
    assert_control_file_matches(out, report)


# ----------------------------------------------------------------------------------------------------
# Determinism and the round trip on the demo
# ----------------------------------------------------------------------------------------------------
def demo_targets(tmp_path) -> Path:
    ids = pq.read_table(DEMO / "profiles.parquet")["profile_id"].to_pylist()
    return write_targets(tmp_path / "targets.parquet", ids[::2] + ids[:10] + ["unknown-1"])


def test_two_runs_give_byte_identical_outputs(tmp_path):
    targets = demo_targets(tmp_path)
    outs = []
    # Both on FnApiRunner, which encodes every element between stages as remote runners do: the first by
    # default (pipelines.options.LOCAL_RUNNER and LOCAL_DEFAULTS), the second with the same options given
    # as flags (Beam's options compare equal). A third run here was a copy of the first.
    for name, flags in (("a", []), ("c", ["--runner=FnApiRunner", "--direct_running_mode=in_memory"])):
        out = tmp_path / name
        export(DEMO / "job.yaml", targets, out, "--data-source", "crm-hashed-emails", "--max-lines-per-file", 50, *flags)
        outs.append(out)
    files = sorted(p.relative_to(outs[0]) for p in outs[0].rglob("*") if p.is_file())
    assert len([f for f in files if f.suffix == ".gz"]) == 3
    for other in outs[1:]:
        assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
        for rel in files:
            assert (outs[0] / rel).read_bytes() == (other / rel).read_bytes(), (other.name, rel)


def import_config_for(tmp_path: Path, data_source: str, dump_dir: Path) -> Path:
    demo = yaml.safe_load((DEMO / "job.yaml").read_text())
    ds = next(d for d in demo["data_sources"] if d["name"] == data_source)
    ds["segments"] = str(dump_dir / "*.sync*")
    for field in ("key", "iv", "keyring"):
        ref = ds.get("encryption", {}).get(field)
        if ref and ref.startswith("file:") and not Path(ref[5:]).is_absolute():
            ds["encryption"][field] = "file:" + str(DEMO / ref[5:])
    demo["profiles"]["path"] = str(DEMO / demo["profiles"]["path"])
    demo["data_sources"] = [ds]
    path = tmp_path / f"import-{data_source}.yaml"
    path.write_text(yaml.safe_dump(demo))
    return path


def round_trip(tmp_path: Path, config: Path, export_out: Path, data_source: str, dpid: int) -> set[str]:
    """Feed the exported user IDs back to the import as a platform dump; return the profiles it finds."""
    lines = b"".join(gzip.decompress((export_out / "onboarding" / f["name"]).read_bytes())
                     for f in json.loads((export_out / "report.json").read_text())["files"])
    dump_dir = tmp_path / f"dump-{data_source}"
    dump_dir.mkdir()
    user_ids = [line.split(b"\t")[0].decode() for line in lines.splitlines()]
    (dump_dir / f"ftp_1234_{dpid}_full_{TS}000.sync").write_text("".join(f"{u} 777\n" for u in user_ids))
    import_cfg = import_config_for(tmp_path, data_source, dump_dir) if config == DEMO / "job.yaml" else config
    report = import_audience.run(["--config", str(import_cfg), "--output", str(tmp_path / f"imp-{data_source}"),
                                  "--run-date", RUN_DATE])
    assert report["data_sources"][data_source]["received"] == len(user_ids)
    assert report["data_sources"][data_source]["reconciled"] == len(user_ids)  # every line matched
    members = pq.read_table(tmp_path / f"imp-{data_source}" / "reconciled").to_pylist()
    return {m["profile_id"] for m in members if m["segment_id"] == "777"}


@pytest.mark.parametrize("data_source,dpid", [("crm-hashed-emails", 12345), ("uid2-phones", 34567),
                                              ("web-encrypted-emails", 23456), ("visitors", 56789)])
def test_round_trip_through_the_import_finds_the_same_profiles(tmp_path, data_source, dpid):
    out = tmp_path / "export"
    report = export(DEMO / "job.yaml", demo_targets(tmp_path), out, "--data-source", data_source)
    exported = {r["profile_id"] for r in pq.read_table(out / "exported").to_pylist()}
    assert len(exported) == report["exported"] > 100
    optouts = {p["profile_id"] for p in pq.read_table(DEMO / "profiles.parquet").to_pylist() if p["opt_out"]}
    assert report["opted_out"] > 0 and not exported & optouts
    assert round_trip(tmp_path, DEMO / "job.yaml", out, data_source, dpid) == exported


def test_aes_gcm_uses_the_newest_active_key_with_a_deterministic_nonce(tmp_path):
    secrets = {i: bytes([i]) * 32 for i in (1, 2, 3)}
    ring = {"keys": [
        {"id": 1, "secret": secrets[1].hex(), "activates": "2026-01-01T00:00:00Z", "expires": "2027-01-01T00:00:00Z"},
        {"id": 2, "secret": secrets[2].hex(), "activates": "2026-06-01T00:00:00Z", "expires": None},
        {"id": 3, "secret": secrets[3].hex(), "activates": "2026-12-01T00:00:00Z", "expires": None},  # not yet
    ]}
    folder = tmp_path / "job"
    write_job(folder)
    (folder / "ring.json").write_text(json.dumps(ring))
    config = yaml.safe_load((folder / "job.yaml").read_text())
    config["data_sources"] = [{
        "name": "gcm", "dpid": 777, "segments": str(tmp_path / "dump-gcm" / "*.sync"), "id_type": "declared",
        "declared": "encrypted", "match_on": "email", "channel": "email", "force_reconciliation": True,
        "encryption": {"algorithm": "aes-gcm", "keyring": "file:ring.json"},
    }]
    (folder / "job.yaml").write_text(yaml.safe_dump(config))
    write_targets(tmp_path / "targets.csv", TARGETS)
    out = tmp_path / "out"
    report = export(folder / "job.yaml", tmp_path / "targets.csv", out)
    assert (report["exported"], report["unmapped"], report["lines"]) == (4, 1, 3)
    text = gzip.decompress(onboarding(out)[f"ftp_dpm_777_{TS}.sync.gz"]).decode()
    tokens = [line.split("\t")[0] for line in text.splitlines()]
    for token in tokens:
        raw = base64.b64decode(token)
        assert int.from_bytes(raw[:4], "big") == 2
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plain = {AESGCM(secrets[2]).decrypt(base64.b64decode(t)[4:16], base64.b64decode(t)[16:], None) for t in tokens}
    assert plain == {b"ann@example.com", b"bob@example.org", b"carl@example.net"}
    for token in tokens:
        raw = base64.b64decode(token)
        pt = AESGCM(secrets[2]).decrypt(raw[4:16], raw[16:], None)
        assert raw[4:16] == hmac.new(secrets[2], pt, hashlib.sha256).digest()[:12]
    assert round_trip(tmp_path, folder / "job.yaml", out, "gcm", 777) == {"p1", "p2", "p4", "p7"}


# ----------------------------------------------------------------------------------------------------
# Privacy, command line, failures
# ----------------------------------------------------------------------------------------------------
def test_logs_carry_no_addresses_ids_or_keys(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    targets = demo_targets(tmp_path)
    outs = {}
    for ds in ("crm-hashed-emails", "visitors", "web-encrypted-emails"):
        outs[ds] = tmp_path / ds
        export(DEMO / "job.yaml", targets, outs[ds], "--data-source", ds)
    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err
    profiles = pq.read_table(DEMO / "profiles.parquet").to_pylist()
    needles = [(DEMO / "keys" / f).read_text().strip() for f in ("demo-only-aes256.key", "demo-only-iv.hex")]
    needles += [p["email"].strip() for p in profiles if p["email"]] + [p["mobile"] for p in profiles if p["mobile"]]
    needles += [v for p in profiles for v in p["visitor_ids"]]
    needles += [r["user_id"] for out in outs.values() for r in pq.read_table(out / "exported").to_pylist()]
    needles += [p["profile_id"] for p in profiles]
    assert len(needles) > 800
    leaked = [n for n in needles if n in text or n.lower() in text.lower()]
    assert leaked == []
    for out in outs.values():
        report_text = (out / "report.json").read_text()
        assert "@" not in report_text and not [n for n in needles if n in report_text]


def test_cli_prints_a_summary_and_module_entry_ignores_launcher_flags(job, tmp_path):
    args = ["--config", str(job), "--audience", "Summer sale", "--targets", str(tmp_path / "targets.csv"),
            "--run-date", RUN_DATE, "--data-source", "hashed"]
    result = cli_in_process("export", *args, "--output", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    assert "targets=7 exported=4 already_present=0 shares_blocked_id=0 unmapped=1 opted_out=1 unknown_profile=1" in result.stdout
    assert f"ftp_dpm_12345_{TS}.sync.gz" in result.stdout
    result = subprocess.run([sys.executable, "-m", "pipelines.export_audience", *args, "--output", str(tmp_path / "b"),
                             "--labels=team=crm", "--job_name=nightly-export"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert onboarding(tmp_path / "a") == onboarding(tmp_path / "b")


def test_configuration_errors_are_one_clear_line(job, tmp_path):
    base = ["export", "--config", job, "--audience", "Summer sale", "--targets", tmp_path / "targets.csv",
            "--output", tmp_path / "o"]
    result = cli_in_process(*base, "--data-source", "nope")
    assert result.returncode == 2
    assert "--data-source: 'nope' is not a configured data source" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()
    result = cli_in_process(*base)  # two sources, none named
    assert result.returncode == 2 and "--data-source: name the data source" in result.stderr


def test_a_malformed_targets_file_fails_and_publishes_nothing(job, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("profile_id,note\np1,x\np2,x,extra\n")
    out = tmp_path / "o"
    result = cli_in_process("export", "--config", job, "--audience", "A", "--targets", bad, "--output", out,
                            "--data-source", "hashed")
    assert result.returncode == 1
    assert "bad.csv:3: wrong number of columns" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "report.json").exists() and not list(out.glob("_incomplete-*"))


def test_export_config_section_is_validated(tmp_path):
    base = {"profiles": {"path": "p.parquet"},
            "data_sources": [{"name": "a", "dpid": 1, "segments": "x", "id_type": "visitor"}]}
    assert parse_config({**base, "export": {"data_source": "a"}}).export.data_source == "a"
    with pytest.raises(ConfigError, match="export.data_source 'b' is not a configured data source"):
        parse_config({**base, "export": {"data_source": "b"}})
    with pytest.raises(ConfigError, match="export.colour: unknown field"):
        parse_config({**base, "export": {"colour": "red"}})


def test_export_needs_the_opt_out_column(tmp_path):
    cfg = write_job(tmp_path / "job")
    config = yaml.safe_load(cfg.read_text())
    del config["profiles"]["opt_out"]
    cfg.write_text(yaml.safe_dump(config))
    write_targets(tmp_path / "t.csv", ["p1"])
    with pytest.raises(ConfigError, match="profiles.opt_out: the export needs the opt-out column"):
        export(cfg, tmp_path / "t.csv", tmp_path / "o", "--data-source", "vis")


@pytest.mark.parametrize("name", ['say "hi"', "a,b", "tab\there", " padded", ""])
def test_audience_names_that_would_break_a_line_are_refused(name):
    with pytest.raises(ConfigError, match="--audience"):
        check_audience_name(name)


# ----------------------------------------------------------------------------------------------------
# Pure functions
# ----------------------------------------------------------------------------------------------------
def test_classify_counts_each_distinct_target_once():
    targets = pa.table({"profile_id": ["a", "b", "c", "d", "e", "a", "zz", "f", "g"]}, schema=TARGET_SCHEMA)
    candidates = pa.table({
        "profile_id": ["a", "b", "c", "d", "e", "a", "a", "b", "d", "x", "f", "g", "h"],
        "status": [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 3, 0],
        "user_id": [None, None, None, None, None, None, "u1", "u2", "u4", "ux", None, None, None],
    }, schema=CANDIDATE_SCHEMA)
    earlier = pa.table({"profile_id": ["b", "d", "h", "gone", "a"], "user_id": ["u2", "u4", "uh", "ug", "u0"],
                        "run": [0] * 5, "removed": [False] * 5}, schema=EARLIER_SCHEMA)
    desired, held, unmapped, counts = classify(targets, candidates, earlier, (True,))
    assert sorted(desired.to_pylist(), key=repr) == [{"profile_id": "a", "user_id": "u1", "only": True},
                                                     {"profile_id": "b", "user_id": "u2", "only": True}]
    assert sorted(unmapped["profile_id"].to_pylist()) == ["c", "e"]
    reasons = {r["profile_id"]: r["reason"] for r in held.to_pylist()}
    assert reasons == {"b": None, "d": Removal.OPTED_OUT.code, "h": Removal.UNTARGETED.code,
                       "gone": Removal.DELETED_PROFILE.code, "a": Removal.ID_CHANGED.code}
    assert counts == {"targets": 8, "duplicate_target_rows": 1, "unknown_profile": 1, "opted_out": 1,
                      "consent_unknown": 1, "suppressed": 1, "unmapped": 2}  # a and b: their user IDs decide (stage 2)


def test_line_bytes_and_control_document():
    assert line_bytes(pa.array(["b", "a"]).slice(1), "d_sid=5") == b"a\td_sid=5\n"
    assert line_bytes(pa.array(["a", "b"]), pa.array(["d_sid=5,d_sid=6", ""])) == b"a\td_sid=5,d_sid=6\nb\t\n"
    assert line_bytes(pa.array([], pa.string()), "x") == b""
    doc = control_document([{"name": "f.2.gz", "sequence": 2, "lines": 1, "bytes": 30, "md5": "m2"},
                            {"name": "f.1.gz", "sequence": 1, "lines": 4, "bytes": 50, "md5": "m1"}])
    assert doc == {"Files": [
        {"FileName": "f.1.gz", "FileSequenceNumber": 1, "FileLineCount": 4, "FileByteSize": 50, "md5": "m1"},
        {"FileName": "f.2.gz", "FileSequenceNumber": 2, "FileLineCount": 1, "FileByteSize": 30, "md5": "m2"}],
        "Totals": {"TotalNumberFiles": 2, "TotalNumberLines": 5, "TotalByteSize": 80}}


def test_gcm_encryptor_refuses_a_ring_without_an_active_key_and_pickling():
    import pickle

    from transforms.errors import KeyMaterialError
    from transforms.secrets import RingKey

    now = datetime(2026, 11, 22, tzinfo=timezone.utc)
    old = RingKey(1, b"\1" * 32, datetime(2025, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(KeyMaterialError, match="no key is active on 2026-11-22"):
        GcmEncryptor([old], now)
    current = RingKey(2, b"\2" * 32, datetime(2026, 1, 1, tzinfo=timezone.utc))
    encryptor = GcmEncryptor([old, current], now)
    assert encryptor.key_id == 2 and "\\x02" not in repr(encryptor)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(encryptor)
    assert encryptor.encrypt(pa.array(["a@b.c"])) == encryptor.encrypt(pa.array(["a@b.c"]))


def test_a_job_flag_spelled_with_underscores_is_refused_not_dropped(job, tmp_path):
    """Flex Template parameters and Airflow's beam_options come with underscores: --data_source went to
    Beam, which dropped it with a warning, and the export went through the default data source."""
    with pytest.raises(ConfigError, match=r"unknown option\(s\): --data_source, --segment_id \(.*--data-source"):
        export(job, tmp_path / "targets.csv", tmp_path / "o", "--data_source", "hashed", "--segment_id", 24)
    assert not (tmp_path / "o").exists()
    # a flag already dashed was told to be spelled as it is ('... spelled with dashes: --frobnicate')
    with pytest.raises(ConfigError) as info:
        export(job, tmp_path / "targets.csv", tmp_path / "o", "--frobnicate", 1)
    assert str(info.value) == "unknown option(s): --frobnicate (neither this job's nor Beam's)"
