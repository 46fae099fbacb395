"""End to end: the real CLI on the bundled demo, checked against the generator's ground truth."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import DEMO, ROOT, cli_in_process
from pipelines import import_audience
from transforms.progress import TALLY
from transforms.report import OUTCOMES

CLI = [sys.executable, "-m", "pipelines.cli", "import"]


def run_cli(*args):
    return cli_in_process("import", *args)


def rows(folder: Path) -> set[tuple]:
    return {tuple(r.values()) for r in pq.read_table(folder).to_pylist()}


def written_once(folder: Path) -> set[tuple]:
    """The output's rows, each written once (the join may emit a row twice; the writers keep one)."""
    table = pq.read_table(folder)
    found = rows(folder)
    assert table.num_rows == len(found), f"{folder.name}: {table.num_rows - len(found)} repeated rows"
    return found


def expected(name: str, data: Path = DEMO) -> set[tuple]:
    """A ground-truth CSV's rows (the demo's, or the generated job's in ``data``); an empty field is a
    null (file_audience's profile_id)."""
    with open(data / "expected" / name) as fh:
        return {tuple(v or None for v in r) for r in list(csv.reader(fh))[1:]}


def assert_report_is_the_truth(out: Path, data: Path = DEMO) -> dict:
    """report.json against the generator's truth in ``data``: each data source's counts by outcome
    (counts.json), adding up to the lines received, every rejection a row of rejected/, and each
    segment's members and file-audience entries those of the truth's rows. Returns the report."""
    report = json.loads((out / "report.json").read_text())
    truth = json.loads((data / "expected" / "counts.json").read_text())
    rejected = pq.read_table(out / "rejected").to_pylist()
    per_segment = {output: Counter(row[:2] for row in expected(f"{output}.csv", data))
                   for output in ("memberships", "file_audience")}
    for name, entry in report["data_sources"].items():
        assert entry["received"] == sum(entry[k] for k in OUTCOMES), name
        for key, value in truth[name].items():
            assert entry[key] == value, (name, key)
        # every rejection is a row in rejected/, and every line is in exactly one place
        mine = [r for r in rejected if r["data_source"] == name]
        assert len(mine) == sum(entry["rejected_by_reason"].values())
        assert len(mine) == entry["received"] - entry["reconciled"] - entry["file_audience"]
        assert len({(r["source_file"], r["line"]) for r in mine}) == len(mine)
        for field, output in (("members", "memberships"), ("file_audience", "file_audience")):
            counted = {segment: n[field] for segment, n in entry["segments"].items() if n.get(field)}
            assert counted == {segment: n for (source, segment), n in per_segment[output].items() if source == name}, \
                (name, field)
    assert set(report["data_sources"]) == set(truth)
    return report


@pytest.fixture(scope="module")
def demo_run(demo_cli_run):
    return demo_cli_run  # (conftest.py: the demo run the HTML report tests read too)


def test_memberships_are_exactly_the_ground_truth(demo_run):
    out, _ = demo_run
    assert written_once(out / "reconciled") == expected("memberships.csv")


def test_file_audience_is_exactly_the_ground_truth(demo_run):
    out, _ = demo_run
    assert written_once(out / "file_audience") == expected("file_audience.csv")


def test_report_counts_match_the_truth_and_add_up(demo_run):
    out, _ = demo_run
    assert assert_report_is_the_truth(out)["profiles_read"] == 300


def test_lines_naming_a_dozen_of_thousands_of_segments_give_exactly_the_truth(tmp_path):
    """The bench's ``segments`` mix (#16): every line names about a dozen of its data source's 2,000
    segments, as partners' AAM dumps do (a 1M import took 256 s against DuckDB's 27 s before 80fb5de,
    and no scenario had it). Memberships, file audience, and the report's counts per data source and
    per segment are the generator's truth: a line's segments cut short, or a segment counted twice,
    shows here."""
    from generate_data import generate

    data, out = tmp_path / "data", tmp_path / "out"
    generate(data, n_profiles=2000, n_lines=3000, seed=16, segment_pool=2000, segments_per_line=12)
    import_audience.run(["--config", str(data / "job.yaml"), "--output", str(out)])
    assert written_once(out / "reconciled") == expected("memberships.csv", data)
    assert written_once(out / "file_audience") == expected("file_audience.csv", data)
    report = assert_report_is_the_truth(out, data)
    for name, entry in report["data_sources"].items():  # the mix is the one meant: many segments, a dozen a line
        assert len(entry["segments"]) > 1500, name
        assert 10 < sum(s["lines"] for s in entry["segments"].values()) / (entry["reconciled"] + entry["unmatched"]
                                                                          + entry["file_audience"]) < 14, name


def test_demo_sources_match_as_configured_so_the_diagnosis_finds_nothing(demo_run):
    out, _ = demo_run
    report = json.loads((out / "report.json").read_text())
    entries = report["data_sources"].values()
    assert all(e["unmatched"] + e["invalid_ids"] + e["file_audience"] for e in entries)  # it had lines to look at
    assert [e["diagnosis"] for e in entries] == [[] for _ in entries]


def test_the_diagnosis_turned_off_changes_no_output(demo_run, demo_copy, tmp_path):
    first, _ = demo_run
    config = demo_copy / "job.yaml"
    config.write_text(config.read_text() + "diagnosis_sample: 0\n")
    assert run_cli("--config", config, "--output", tmp_path / "off").returncode == 0
    for output in ("reconciled", "file_audience"):
        for part in sorted((first / output).iterdir()):
            assert (tmp_path / "off" / output / part.name).read_bytes() == part.read_bytes(), part

    def lines(folder):  # rejected/ names the dump files, which are in another folder here
        return sorted((r["data_source"], Path(r["source_file"]).name, r["line"], r["reason"])
                      for r in pq.read_table(folder / "rejected").to_pylist())
    assert lines(tmp_path / "off") == lines(first)
    report = json.loads((tmp_path / "off" / "report.json").read_text())
    assert all("diagnosis" not in e for e in report["data_sources"].values())  # not diagnosed, rather than nothing found


def test_summary_is_printed_without_personal_data(demo_run):
    out, result = demo_run
    lines = result.stdout.splitlines()
    header = next(line for line in lines if line.startswith("data source"))
    row = next(line for line in lines if line.startswith("crm-hashed-emails "))
    assert row.split()[:3] == ["crm-hashed-emails", "200", "116"]  # received, reconciled (tests/test_terminal.py: layout)
    assert header.index("received") + len("received") == row.index("200") + 3  # aligned under its header
    assert lines[-1] == f"report: {out / 'report.html'}"
    assert "@" not in result.stdout + result.stderr


def test_two_runs_give_byte_identical_outputs(demo_run, tmp_path):
    first, _ = demo_run
    second = tmp_path / "again"  # another process (another hash seed), as demo_run's
    assert subprocess.run([*CLI, "--config", str(DEMO / "job.yaml"), "--output", str(second)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300).returncode == 0
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


@pytest.mark.parametrize(
    "flags",
    [["--direct_running_mode=multi_processing", "--direct_num_workers=2"],
     ["--direct_running_mode=multi_threading", "--direct_num_workers=2"]],
    ids=["fnapi-multi-processing", "fnapi-multi-threading"],
)
def test_other_local_runner_modes_give_the_same_bytes(demo_run, tmp_path, flags):
    # Bundles split and ordered differently, workers in other processes: same files, same report.
    first, _ = demo_run
    other = tmp_path / "other"
    assert run_cli("--config", DEMO / "job.yaml", "--output", other, *flags).returncode == 0
    for rel in sorted(p.relative_to(first) for p in first.rglob("*.parquet")):
        assert (first / rel).read_bytes() == (other / rel).read_bytes(), rel
    assert json.loads((first / "report.json").read_text()) == json.loads((other / "report.json").read_text())


def test_module_entry_point_ignores_launcher_flags(tmp_path):
    # Airflow's Beam operator and Flex Templates append flags the job does not know.
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.import_audience", "--config", str(DEMO / "job.yaml"),
         "--output", str(tmp_path / "o"), "--labels=team=crm", "--job_name=nightly-import"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "report.json").exists()


def test_config_error_is_one_clear_message(tmp_path):
    bad = tmp_path / "job.yaml"
    bad.write_text((DEMO / "job.yaml").read_text().replace("normalization: uid2", "normalization: sha1"))
    result = run_cli("--config", bad, "--output", tmp_path / "o")
    assert result.returncode == 2
    assert "data_sources.2.normalization: Input should be" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_force_reconciliation_on_a_hashed_source_exits_2_naming_the_field(tmp_path):
    bad = tmp_path / "job.yaml"
    text = (DEMO / "job.yaml").read_text().replace("normalization: uid2", "normalization: uid2\n    force_reconciliation: true")
    bad.write_text(text)
    result = run_cli("--config", bad, "--output", tmp_path / "o")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if "force_reconciliation" in line]
    assert len(lines) == 1 and "job.yaml: data_sources.2: force_reconciliation applies only" in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def test_truncated_gzip_fails_the_run_and_leaves_nothing_complete(demo_copy, tmp_path):
    victim = sorted((demo_copy / "segments" / "visitors").glob("*.gz"))[1]
    victim.write_bytes(victim.read_bytes()[:-40])
    out = tmp_path / "o"
    result = run_cli("--config", demo_copy / "job.yaml", "--output", out)
    assert result.returncode == 1
    assert victim.name in result.stderr and "truncated" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "report.json").exists()
    assert not list(out.glob("_incomplete-*"))
    assert not (out / "reconciled").exists()


def test_rerun_replaces_previous_outputs(demo_copy, tmp_path):
    out = tmp_path / "o"
    (out / "reconciled").mkdir(parents=True)
    stale = out / "reconciled" / "part-99999-of-99999.parquet"
    stale.write_bytes(b"stale")
    import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(out)])
    assert not stale.exists()
    assert rows(out / "reconciled") == expected("memberships.csv")


@pytest.fixture(scope="module")
def defaults_run(tmp_path_factory) -> tuple[Path, Path]:
    """A copy of the demo and its import with the defaults, made once for the four cases below (the
    outputs name the dumps' paths: the cases read this copy's, with configs of their own beside it)."""
    import shutil

    demo = tmp_path_factory.mktemp("threads") / "demo"
    shutil.copytree(DEMO, demo)
    import_audience.run(["--config", str(demo / "job.yaml"), "--output", str(demo.parent / "default")])
    return demo, demo.parent / "default"


@pytest.mark.parametrize("threads, split", [(1, False), (3, False), (1, True), (3, True)])
def test_threads_and_chunking_do_not_change_a_byte(defaults_run, tmp_path, monkeypatch, threads, split):
    """The DoFns' thread pools take results in input order: with 1 or 3 threads, dumps read in
    2 KB chunks and profiles in batches of 64 rows (many pieces in flight at once), every file is
    the same as with the defaults (2 threads, whole files in one chunk). With ``split``, every dump
    is cut into its chunks by one step and they are keyed apart, after a Reshuffle (what a big dump
    does on a distributed runner): the same bytes again."""
    import transforms.dumps as dumps
    import transforms.profiles as profiles

    demo, default = defaults_run
    monkeypatch.setattr(dumps, "CHUNK_BYTES", 2048)
    monkeypatch.setattr(profiles, "BATCH_ROWS", 64)
    job = demo / f"job-{threads}-{split}.yaml"  # beside the demo's: the same dumps and extract
    job.write_text((demo / "job.yaml").read_text() + f"\nthreads: {threads}\n" + ("split_dump_bytes: 1\n" if split else ""))
    other = tmp_path / "other"
    TALLY.reset()
    import_audience.run(["--config", str(job), "--output", str(other)])
    assert (TALLY.snapshot().get("dump_chunks_spread", 0) > 20) == split
    parts = sorted(p.relative_to(default) for p in default.rglob("*.parquet"))
    assert len(parts) > 3
    for rel in parts:
        assert (default / rel).read_bytes() == (other / rel).read_bytes(), rel
    report = json.loads((other / "report.json").read_text())
    assert report == json.loads((default / "report.json").read_text())
    assert report["profiles_read"] == 300


def test_csv_and_jsonl_extracts_give_the_same_audiences(tmp_path):
    from generate_data import generate

    results = {}
    for fmt in ("parquet", "csv", "jsonl"):
        data = tmp_path / fmt
        generate(data, n_profiles=120, n_lines=300, seed=11, profile_format=fmt)
        report = import_audience.run(["--config", str(data / "job.yaml"), "--output", str(tmp_path / f"out-{fmt}")])
        results[fmt] = rows(tmp_path / f"out-{fmt}" / "reconciled")
        assert results[fmt] == {tuple(r) for r in list(csv.reader(open(data / "expected" / "memberships.csv")))[1:]}
        assert report["profiles_read"] == 120
    assert results["parquet"] == results["csv"] == results["jsonl"]


def test_logs_carry_no_addresses_ids_or_keys(demo_copy, tmp_path, caplog, capfd):
    import logging

    caplog.set_level(logging.DEBUG)
    import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(tmp_path / "o")])
    captured = capfd.readouterr()
    text = caplog.text + captured.out + captured.err
    profiles = pq.read_table(DEMO / "profiles.parquet").to_pylist()
    secrets = [(DEMO / "keys" / f).read_text().strip() for f in ("demo-only-aes256.key", "demo-only-iv.hex")]
    needles = secrets + [p["email"].strip() for p in profiles if p["email"]]
    needles += [p["mobile"] for p in profiles if p["mobile"]] + [v for p in profiles for v in p["visitor_ids"]]
    needles += [row[3] for row in expected("file_audience.csv")]
    assert len(needles) > 500
    leaked = [n for n in needles if n in text or n.lower() in text.lower()]
    assert leaked == []


def test_big_dumps_are_split_on_distributed_runners_only_unless_configured():
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import SPLIT_DUMP_BYTES, pipeline_options, split_dump_bytes
    from transforms.config_load import load_config

    cfg = load_config(str(DEMO / "job.yaml"))
    assert split_dump_bytes(cfg, pipeline_options([])) is None  # the pinned local runner, one process
    for flags in (["--runner=DataflowRunner"], ["--runner=FlinkRunner"],
                  ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]):
        assert split_dump_bytes(cfg, pipeline_options(flags)) == SPLIT_DUMP_BYTES, flags
    mine = cfg.model_copy(update={"split_dump_bytes": 1 << 30})
    assert split_dump_bytes(mine, pipeline_options([])) == split_dump_bytes(mine, PipelineOptions(["--runner=DataflowRunner"])) == 1 << 30
