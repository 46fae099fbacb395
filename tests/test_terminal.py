"""What a person sees on the terminal: the end-of-run table, the page's path, progress while a job
runs (at a steady interval, counts only), and nothing but errors with --quiet."""
from __future__ import annotations

import argparse
import copy
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from conftest import DEMO, ROOT, cli_in_process
from pipelines.options import pipeline_options, runs_here
from test_html_report import FINDINGS, demo_needles
from transforms import progress
from transforms.outcomes import runner_counter
from transforms.summary import COLUMNS, rate_text, summary_lines

REPORT = json.loads((Path(__file__).parent / "data" / "report-import.json").read_text())


def cli(*args):
    return cli_in_process(*args)


def columns(header: str) -> list[tuple[int, int]]:
    """(start, end) of each header cell (cells are separated by two or more blanks)."""
    return [m.span() for m in re.finditer(r"\S+(?: \S+)*", header)]


def test_a_rate_that_is_not_exactly_all_or_none_never_prints_as_100_or_0_percent():
    """19,999 of 20,000 was "100.0%" and 1 of 20,000 "0.0%" (the terminal's table and the page)."""
    assert rate_text(19_999 / 20_000) == ">99.9%" and rate_text(1 / 20_000) == "<0.1%"
    assert rate_text(1.0) == "100.0%" and rate_text(0.0) == "0.0%" and rate_text(None) == "-"
    assert rate_text(0.9994) == "99.9%" and rate_text(0.0006) == "0.1%" and rate_text(0.655) == "65.5%"
    report = copy.deepcopy(REPORT)
    e = report["data_sources"]["crm-hashed-emails"]
    e["reconciled"], e["unmatched"], e["file_audience"] = 19_999, 1, 0
    row = next(line for line in summary_lines(report) if line.startswith("crm-hashed-emails"))
    assert row.split()[6] == ">99.9%"


def test_summary_is_an_aligned_table_with_a_total_and_the_top_finding():
    report = copy.deepcopy(REPORT)
    report["data_sources"]["crm-hashed-emails"]["diagnosis"] = copy.deepcopy(FINDINGS)
    lines = summary_lines(report)
    assert lines[0] == "profiles read: 300"
    header = lines[1]
    assert [header[a:b] for a, b in columns(header)] == list(COLUMNS)
    rows = {line.split("  ")[0].strip(): line for line in lines[2:8]}
    assert list(rows) == [*report["data_sources"], "total"]
    spans = columns(header)
    for name, line in rows.items():
        for (start, end), column in zip(spans, COLUMNS):
            if column in ("data source", "top diagnosis"):
                continue
            assert line[end - 1] != " " and (end == len(line) or line[end] == " "), (name, column)  # right-aligned
    hashed = rows["crm-hashed-emails"].split()
    assert hashed[1:8] == ["200", "116", "0", "61", "23", "65.5%", "203"]
    assert rows["crm-hashed-emails"][spans[-1][0]:] == "normalization: uid2 (4,120 of 5,000 sampled)"
    assert rows["visitors"][spans[-1][0]:] == "-"
    assert rows["total"].split()[1:8] == ["1,000", "638", "47", "216", "99", "70.8%", "1,010"]
    assert lines[8] == "rejected by reason:"
    # the lines of the "rejected" column: no_matching_profile counts as unmatched (its own column)
    assert lines[9].split() == ["visitors", "invalid_visitor_id", "10,", "empty_line", "5,",
                                "removals_only", "3,", "malformed_line", "2,", "trait_not_importable", "1"]
    for line in lines[9:]:
        name, *cells = line.replace(",", "").split()
        assert sum(map(int, cells[1::2])) == int(rows[name].split()[5]), name


def test_progress_lines_name_each_stage_with_its_rate():
    now = {"dump_files_read": 3, "dump_lines_read": 1_500_000, "profile_rows_read": 200_000, "lines_reconciled": 0,
           "custom_counter": 7}
    before = {"dump_files_read": 1, "dump_lines_read": 900_000, "profile_rows_read": 200_000}
    line = progress.progress_line(now, before, 95.0, 30.0)
    assert line == ("running 1:35 | read dumps: 3 files, 1,500,000 lines (20,000/s) | read profiles: 200,000 rows"
                    " | join: 0 lines reconciled | custom_counter: 7")
    assert progress.progress_line({}, {}, 2.0, 2.0) == "running 0:02 | starting"


def test_runner_counters_feed_the_progress_tally_outside_and_inside_beam():
    progress.TALLY.reset()
    runner_counter("dump_lines_read").inc(5)
    runner_counter("dump_lines_read").inc(2)
    assert progress.TALLY.snapshot() == {"dump_lines_read": 7}


def test_progress_is_only_read_where_the_dofns_run_in_this_process():
    assert runs_here(pipeline_options([]))
    assert runs_here(pipeline_options(["--direct_running_mode=multi_threading"]))
    assert not runs_here(pipeline_options(["--direct_running_mode=multi_processing"]))
    assert not runs_here(PipelineOptions(["--runner=DataflowRunner"]))
    assert not runs_here(PipelineOptions(["--runner=PortableRunner"]))


def test_a_running_import_logs_progress_at_the_interval_asked_and_no_personal_data(tmp_path):
    result = cli("import", "--config", DEMO / "job.yaml", "--output", tmp_path / "out", "--progress", "0.05")
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "audience_sync.progress" in line]
    assert lines, result.stderr  # a run of a few seconds, a line every 0.05 s
    for line in lines:
        assert re.fullmatch(r"INFO audience_sync\.progress: running \d+:\d\d \| .+", line), line
        read = re.search(r"read dumps: (\d+) files, ([\d,]+) lines", line)
        assert read is None or (int(read[1]) <= 8 and int(read[2].replace(",", "")) <= 1000)
    text = result.stderr.lower()
    assert [n for n in demo_needles() if n.lower() in text] == []
    assert "Traceback" not in result.stderr


def test_quiet_prints_nothing_on_success_not_even_progress(tmp_path):
    result = cli("import", "--config", DEMO / "job.yaml", "--output", tmp_path / "out", "--quiet", "--progress", "0.05")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert (tmp_path / "out" / "report.html").is_file()


def test_quiet_still_prints_the_error(tmp_path):
    result = cli("import", "--config", tmp_path / "missing.yaml", "--output", tmp_path / "out", "--quiet")
    assert result.returncode == 2 and "audience-sync: configuration error" in result.stderr and result.stdout == ""


def test_a_bad_progress_interval_is_a_usage_error(tmp_path):
    result = cli("import", "--config", DEMO / "job.yaml", "--output", tmp_path / "out", "--progress", "soon")
    assert result.returncode == 2 and "--progress" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_progress_interval_must_be_a_finite_number_of_seconds():
    """'--progress inf' passed: the progress thread died on its first wait (OverflowError, a traceback
    on stderr) while the job ran on without progress lines. Checked without a run: the parser's type."""
    from pipelines.launch import _seconds

    assert _seconds("0") == 0 and _seconds("2.5") == 2.5
    for text in ("inf", "Infinity", "nan", "-1", "1e400", "1e300", "soon"):
        with pytest.raises(argparse.ArgumentTypeError, match=r"^not a number of seconds from 0 to \d+: "):
            _seconds(text)


@pytest.mark.parametrize("args, says", [
    (("import", "--run-date", "2026-13-01"), "argument --run-date/--run_date: not a date YYYY-MM-DD: '2026-13-01'"),
    (("import", "--progress", "-1"), "argument --progress: not a number of seconds from 0 to "),
    (("nightly", "--date", "22/11/2026"), "argument --date: not a date YYYY-MM-DD: '22/11/2026'"),
    (("export", "--segment-id", "abc"), "argument --segment-id: not a positive integer: 'abc'"),
    (("export", "--max-lines-per-file", "0"), "argument --max-lines-per-file: not a positive integer: '0'"),
])
def test_a_bad_flag_value_is_named_in_the_operators_words(tmp_path, args, says):
    """argparse names the type function that refused a value: it said 'invalid fromisoformat value',
    'invalid _seconds value', 'invalid _positive_int value'."""
    verb, *flag = args
    where = ["--root", tmp_path] if verb == "nightly" else ["--output", tmp_path / "out"]
    more = ["--audience", "A", "--targets", tmp_path / "t.csv"] if verb == "export" else []
    result = cli(verb, "--config", DEMO / "job.yaml", *where, *more, *flag)
    assert result.returncode == 2 and says in result.stderr
    assert not re.search(r"invalid \w+ value", result.stderr)


def test_a_staged_run_prints_no_report_page_an_earlier_run_left(capsys):
    """A job only staged (a Dataflow template, --dry_run) writes no report.html, but the output may hold
    an earlier run's: its 'report: ...' line read as this run's page."""
    from pipelines.launch import run_job_cli

    page = lambda argv: ["report: OUT/report.html"]  # noqa: E731 - what page_line finds there
    for staged in ({"status": "staged"}, [{"date": "2026-11-22", "status": "staged"}]):
        assert run_job_cli(lambda argv: staged, [], lambda result: ["staged"], page) == 0
        assert capsys.readouterr().out == "staged\n"
    assert run_job_cli(lambda argv: {"status": "published"}, [], lambda result: [], page) == 0
    assert capsys.readouterr().out == "report: OUT/report.html\n"


def test_help_lists_every_verb_with_its_description():
    from pipelines.cli import VERBS

    result = cli("--help")
    assert result.returncode == 0
    for verb, (module, text) in VERBS.items():
        assert re.search(rf"^  {verb}\s+{re.escape(text)}$", result.stdout, re.M), verb
        assert callable(importlib.import_module(module).main)  # every verb's module has main(argv)
    assert "report" in VERBS and "--progress SECONDS" in result.stdout and "--quiet" in result.stdout


def test_an_arrow_error_shows_its_kind_and_step_never_its_message():
    """Arrow's parse and conversion messages quote the row or value they met (a profile's email, a
    dump's ID): the one line keeps the error's type and the Beam step, and --debug the rest."""
    import pyarrow as pa

    from pipelines.launch import classify_failure

    exc = pa.ArrowInvalid("CSV parse error: Row #101: Expected 6 columns, got 7: P1,  user@example.net ,+33 6 00"
                          " [while running 'Reconcile/KeyProfiles/ParDo(KeyProfiles)']")
    code, message = classify_failure(exc)
    assert code == 1 and "user@example.net" not in message and "+33" not in message
    assert message.startswith("ArrowInvalid") and "Reconcile/KeyProfiles" in message and "--debug" in message
    assert classify_failure(OSError(28, "No space left on device"))[1].endswith("No space left on device")
    remote = RuntimeError("Traceback ...\npyarrow.lib.ArrowInvalid: CSV parse error: Row #3: user@example.net")
    assert classify_failure(remote)[1].startswith("ArrowInvalid") and "user@" not in classify_failure(remote)[1]


def test_an_arrow_error_in_a_dofn_leaves_no_input_data_on_stderr(tmp_path):
    """The runner logs a failing DoFn's traceback before re-raising: for an Arrow error, whose
    message may quote a row, that log is dropped too (``--debug`` prints the traceback)."""
    secret = "person42@example.com"
    code = ("import sys, pyarrow as pa\nfrom transforms import join\n"
            f"def boom(*a, **k):\n    raise pa.ArrowInvalid('CSV parse error: Row #3: {secret},+33 6 12')\n"
            "join.join_bucket = boom\nfrom pipelines import cli\nsys.argv = ['audience-sync'] + sys.argv[1:]\nsys.exit(cli.main())\n")
    args = ["import", "--config", str(DEMO / "job.yaml"), "--output", str(tmp_path / "o")]
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    assert secret not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("audience-sync: run failed: ArrowInvalid")
    debug = subprocess.run([sys.executable, "-c", code, *args, "--debug"], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert debug.returncode == 1 and secret in debug.stderr  # asked for: the whole traceback


def test_a_misspelled_runner_is_a_configuration_error_and_touches_no_output(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "import", "--config", str(DEMO / "job.yaml"),
                             "--output", str(tmp_path / "o"), "--runner=FnApiRuner"], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "--runner: 'FnApiRuner' is not a Beam runner" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


def _import_in_process(tmp_path, capsys, *flags):
    from pipelines import import_audience

    code = import_audience.main(["--config", str(DEMO / "job.yaml"), "--output", str(tmp_path / "o"), *flags])
    return code, capsys.readouterr().err


def test_the_direct_runners_and_prism_are_refused_before_any_output_is_touched(tmp_path, capsys):
    """BundleBasedDirectRunner hands a DoFn an empty side input: it published an empty audience with
    exit 0; DirectRunner (any spelling) and PrismRunner first download Prism."""
    for runner in ("BundleBasedDirectRunner", "DirectRunner", "direct", "TestDirectRunner", "PrismRunner"):
        code, err = _import_in_process(tmp_path, capsys, f"--runner={runner}")
        assert code == 2, (runner, err)
        assert f"--runner: {runner!r} is not a runner these jobs run on" in err and "FnApiRunner" in err
        assert not (tmp_path / "o").exists()


def test_staging_flags_on_a_runner_that_would_run_the_job_are_refused(tmp_path, capsys):
    """Only DataflowRunner stages a job (--dry_run, --template_location); the local runner ignored both:
    it ran the job and published over the output without its lock, then said 'job staged'."""
    for flags in (["--dry_run=True"], [f"--template_location={tmp_path / 't.json'}"],
                  ["--runner=FnApiRunner", "--dry_run=True"], ["--runner=PortableRunner", "--dry_run=True"]):
        code, err = _import_in_process(tmp_path, capsys, *flags)
        assert code == 2, (flags, err)
        assert "only DataflowRunner stages a job" in err
        assert not (tmp_path / "o").exists() and not (tmp_path / "t.json").exists()


def test_a_beam_flag_beam_cannot_parse_is_one_line_not_beams_usage(tmp_path):
    """A Beam flag without its value or with a value of the wrong type (``--dry_run``, ``--runner``,
    ``--direct_num_workers=abc``): Beam's parser printed its usage, 136 lines of every Beam option,
    before the error on the last line (exit 2)."""
    for flag, words in (("--dry_run", "--dry_run: expected one argument"),
                        ("--direct_num_workers=abc", "--direct_num_workers: invalid int value")):
        result = cli("import", "--config", DEMO / "job.yaml", "--output", tmp_path / "o", flag)
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == ["audience-sync: configuration error:", result.stderr.splitlines()[1]]
        assert words in result.stderr and "usage:" not in result.stderr
        assert not (tmp_path / "o").exists()


def test_a_runner_named_in_another_case_is_the_same_runner(caplog):
    """Beam reads --runner case-insensitively ('dataflow', 'fnapirunner'); the launcher's own checks
    compared the text: no worker-key warning for Dataflow, no progress and split dumps on the local runner."""
    from pipelines.options import split_dump_bytes, warn_about_worker_keys
    from transforms.config_load import load_config

    cfg = load_config(str(DEMO / "job.yaml"))  # its encrypted source uses file: references
    for name in ("fnapirunner", "FNAPI"):
        assert runs_here(pipeline_options([f"--runner={name}"])), name
        assert split_dump_bytes(cfg, pipeline_options([f"--runner={name}"])) is None, name
    for name in ("dataflow", "dataflowrunner", "TestDataflowRunner"):
        caplog.clear()
        warn_about_worker_keys(cfg, pipeline_options([f"--runner={name}"]))
        assert "encryption.key (file:...) is read on the Dataflow workers" in caplog.text, name
        assert not runs_here(pipeline_options([f"--runner={name}"])), name


def test_local_paths_are_refused_for_dataflow_whose_workers_cannot_read_them(tmp_path, capsys):
    """The preflight read the laptop's files and the job was submitted (exit 0 with --dry_run): the
    workers would have listed the dump globs on their own disks and published to their own disks."""
    dataflow = ["--runner=dataflow", "--project=audience-sync-test", "--region=europe-west1", "--no_auth",
                "--temp_location=gs://audience-sync-no-such-bucket/tmp", "--dry_run=True"]
    code, err = _import_in_process(tmp_path, capsys, *dataflow)
    assert code == 2, err
    assert "Dataflow workers cannot read local paths" in err
    for field in ("profiles.path", "data source 'visitors': segments", "--output"):
        assert field in err, field
    assert not (tmp_path / "o").exists()


def test_sigterm_stops_the_job_like_ctrl_c_and_releases_the_output_lock(tmp_path, capsys):
    """Airflow (a task timeout, a cleared task) and Kubernetes stop a job with SIGTERM, which killed
    the launcher on the spot: its _lock.json stayed, and a retry on another host was refused for 24 h."""
    import os
    import signal
    import time

    from pipelines import launch
    from transforms.output_lock import LOCK, OutputLock

    def run(argv):
        with OutputLock(str(tmp_path), "import"):
            assert (tmp_path / LOCK).exists()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(2)
        return {}

    def guard(*_):  # the test's own handler: never kill pytest itself
        pass

    previous = signal.signal(signal.SIGTERM, guard)
    try:
        code = launch.run_job_cli(run, [], lambda result: [])
        assert signal.getsignal(signal.SIGTERM) is guard  # put back after the run
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 128 + signal.SIGTERM
    assert "audience-sync: stopped by SIGTERM" in capsys.readouterr().err
    assert not (tmp_path / LOCK).exists()


def test_sigterm_inside_a_dofn_prints_its_one_line_and_no_runner_traceback(demo_copy, tmp_path):
    """SIGTERM landing while a DoFn runs in the main thread (the join with ``threads: 1``; a coder's size
    estimate otherwise): Beam logged the Terminated as an ERROR with a 38-line traceback before the
    one line, as if the job had crashed (exit 143 all the same)."""
    config = demo_copy / "job.yaml"
    config.write_text("threads: 1\n" + config.read_text())
    code = ("import os, signal, sys, time\nfrom transforms import join\n"
            "def stopped(*a, **k):\n    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(30)\n"
            "join.join_bucket = stopped\nfrom pipelines import cli\nsys.argv = ['audience-sync'] + sys.argv[1:]\n"
            "sys.exit(cli.main())\n")
    out = tmp_path / "o"
    result = subprocess.run([sys.executable, "-c", code, "import", "--config", str(config), "--output", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 143, result.stderr
    assert result.stderr.splitlines() == [
        "audience-sync: stopped by SIGTERM (nothing of this run was published unless its publish had committed: "
        "then it was completed)"], result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_a_nightly_root_on_local_disk_is_named_once_for_dataflow(tmp_path, capsys):
    """The nightly gives launch its --root and ROOT/_key_cache (a file there is refused): the Dataflow
    refusal named '--root (ROOT), --root (ROOT/_key_cache)', one folder twice."""
    from pipelines import nightly

    code = nightly.main(["--config", str(DEMO / "job.yaml"), "--root", str(tmp_path / "root"), "--date", "2026-11-22",
                         "--runner=dataflow", "--project=audience-sync-test", "--region=europe-west1", "--no_auth",
                         "--temp_location=gs://audience-sync-no-such-bucket/tmp", "--dry_run=True"])
    err = capsys.readouterr().err
    assert code == 2 and f"--root ({tmp_path / 'root'}); put them on gs://" in err, err
    assert err.count("--root (") == 1


@pytest.mark.parametrize("verb, flag", [("export", "--state="), ("import", "--output="), ("nightly", "--root=")])
def test_an_empty_flag_value_is_refused_not_read_as_the_flag_left_out(tmp_path, verb, flag):
    """A template variable rendered empty (``--state={{ var }}``): an export with ``--state=`` ran as one
    without a state, exit 0 (no leaver removed, no state committed); ``--output=`` and ``--root=`` failed
    as runs (exit 1: 'cannot create the output lock'), naming no flag."""
    from test_export import TARGETS, write_job, write_targets

    where = {"import": ["--config", DEMO / "job.yaml", "--output", tmp_path / "out", "--run-date", "2026-11-22"],
             "nightly": ["--config", DEMO / "job.yaml", "--root", tmp_path / "out", "--date", "2026-11-22"]}
    if verb == "export":
        targets = write_targets(tmp_path / "targets.csv", TARGETS)
        where[verb] = ["--config", write_job(tmp_path / "job"), "--output", tmp_path / "out", "--audience", "A",
                       "--targets", targets, "--data-source", "hashed", "--run-date", "2026-11-22"]
    result = cli(verb, *where[verb], flag)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == ["audience-sync: configuration error:",
                                          f"{flag.rstrip('=')}: an empty value; give it one, or leave the flag out"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("verb, flag, value", [("import", "--output", "{tmp}/out "), ("nightly", "--root", " {tmp}/out"),
                                              ("nightly", "--config", "{demo}/job.yaml\n")])
def test_a_flag_value_with_a_space_or_line_break_at_an_end_is_refused(tmp_path, verb, flag, value):
    """A value with a space or line break at an end (a Flex Template parameter its regex let through, a
    Variable pasted with one): ``--output 'OUT '`` published into a folder 'OUT ' beside OUT, exit 0, and
    ``--root ' ROOT'`` into a folder ' ' of the working directory."""
    where = {"import": ["--config", DEMO / "job.yaml", "--output", tmp_path / "out", "--run-date", "2026-11-22"],
             "nightly": ["--config", DEMO / "job.yaml", "--root", tmp_path / "out", "--date", "2026-11-22"]}[verb]
    at = where.index(flag) + 1
    where[at] = value.format(tmp=tmp_path, demo=DEMO)
    result = cli(verb, *where)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == ["audience-sync: configuration error:",
                                          f"{flag}: a space or line break at the start or end of its value; give it without"]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("verb, flags, named", [
    ("export", ["--audience", "B", "--audience", "A"], "--audience given twice"),
    ("import", ["--run-date", "2026-11-21", "--run_date=2026-11-22"], "--run-date and --run_date (one flag) given"),
    ("nightly", ["--date", "2026-11-21", "--dat", "2026-11-22"], "--date given twice"),
    ("import", ["--direct_num_workers=2", "--direct_num_workers", "1"], "--direct_num_workers given twice"),
])
def test_a_flag_given_twice_with_two_values_is_refused_not_the_last_taken(tmp_path, verb, flags, named):
    """argparse (the job's parser, Beam's) keeps the last value: an export of two audiences sent the
    second, a night given two dates imported the second, exit 0."""
    from test_export import TARGETS, write_job, write_targets

    where = {"import": ["--config", DEMO / "job.yaml", "--output", tmp_path / "out"],
             "nightly": ["--config", DEMO / "job.yaml", "--root", tmp_path / "out"]}
    if verb == "export":
        where[verb] = ["--config", write_job(tmp_path / "job"), "--output", tmp_path / "out", "--targets",
                       write_targets(tmp_path / "targets.csv", TARGETS), "--data-source", "hashed"]
    result = cli(verb, *where[verb], *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.splitlines() == ["audience-sync: configuration error:",
                                          f"{named} with two values: give it once"]
    assert not (tmp_path / "out").exists()


def test_a_flag_given_twice_with_one_value_or_one_that_takes_several_is_read_as_given():
    """What the refusal above leaves alone: one value twice (a date spelled twice over), and the flags
    that gather their values (--existing, Beam's --labels and --experiments)."""
    from pipelines.export_audience import parse_args
    from pipelines.flags import check_given
    from pipelines.options import beam_parser
    from transforms.errors import ConfigError

    known, rest = parse_args(["--config", "c", "--audience", "A", "--targets", "t", "--output", "o", "--existing", "e1",
                              "--existing=e2", "--run-date", "2026-11-22", "--run_date=20261122", "--labels=a=1",
                              "--labels", "b=2", "--experiments=x", "--experiments=y", "--no_auth", "--no_auth"])
    assert known.existing == ["e1", "e2"] and str(known.run_date) == "2026-11-22"
    check_given(beam_parser(), rest)
    with pytest.raises(ConfigError, match=r"^--use_public_ips and --no_use_public_ips \(one flag\) given with two"):
        check_given(beam_parser(), ["--use_public_ips", "--no_use_public_ips"])


def test_a_negative_number_of_local_workers_is_a_configuration_error(tmp_path):
    """``--direct_num_workers=-1`` (Beam reads 0 as one per CPU core) failed as a run, exit 1, with
    'IndexError: list index out of range' from inside the runner, naming no flag."""
    result = cli("import", "--config", DEMO / "job.yaml", "--output", tmp_path / "o", "--direct_num_workers=-1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["audience-sync: configuration error:", "--direct_num_workers: -1 is not a "
                                          "number of workers (1 or more; 0: one per CPU core)"]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("verb, words, says", [
    ("export", ["--audience", "Summer", "sale"], "an argument after --audience is no flag and no flag's value"),
    ("import", ["2026-11-22"], "an argument after --output is no flag and no flag's value"),
    ("import", ["--", "--runner=FnApiRuner"], "'--': what follows it is read by neither the job nor Beam"),
])
def test_a_stray_argument_is_refused_not_ignored(tmp_path, verb, words, says):
    """A word that no parser reads (Beam drops it without a word): 'export --audience Summer sale' sent
    audience 'Summer', 'import ... --output OUT 2026-11-22' (--run-date left out) ran for today, and
    what follows '--' was dropped (a misspelled runner ran on the local one), exit 0."""
    from test_export import TARGETS, write_job, write_targets

    where = ["--config", DEMO / "job.yaml", "--output", tmp_path / "out"]
    if verb == "export":
        where = ["--config", write_job(tmp_path / "job"), "--targets", write_targets(tmp_path / "t.csv", TARGETS),
                 "--data-source", "hashed", "--output", tmp_path / "out"]
    result = cli(verb, *where, *words)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "audience-sync: configuration error:" and len(lines) == 2 and lines[1].startswith(says), lines
    assert "sale" not in result.stderr and "2026-11-22" not in result.stderr  # named by the flag before it
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("job, argv, says", [
    ("import", ["--config", "c.yaml", "--output", "o", "2026-11-22", "--run-date", "2026-11-22"], "--output"),
    ("import", ["--run-date", "2026-11-22", "--config", "c.yaml", "--output", "o", "2026-11-22"], "--output"),
    ("export", ["--config", "c.yaml", "--audience", "Summer", "sale", "--targets", "t", "--output", "o",
                "--job_name", "sale"], "--audience"),
])
def test_a_stray_argument_is_named_by_the_flag_it_follows_though_a_flag_takes_the_same_word(job, argv, says):
    """The stray word was placed at its last occurrence on the line: where a flag later took the same
    word as its value ('--output OUT 2026-11-22 --run-date 2026-11-22'), the line named that flag."""
    from pipelines import export_audience, import_audience
    from transforms.errors import ConfigError

    parse_args = {"import": import_audience.parse_args, "export": export_audience.parse_args}[job]
    with pytest.raises(ConfigError, match=rf"^an argument after {says} is no flag and no flag's value"):
        parse_args(argv)


def test_a_command_line_ending_with_a_separator_followed_by_nothing_is_read_as_without_it():
    """A wrapper's ``... -- "$@"`` with no extra argument: nothing follows '--', nothing is dropped, and
    the line is the one without it. It was refused, "'--': what follows it is read by neither ..."."""
    from pipelines import import_audience

    known, rest = import_audience.parse_args(["--config", "c.yaml", "--output", "o", "--job_name", "j", "--"])
    assert (known.config, known.output) == ("c.yaml", "o") and rest == ["--job_name", "j"]


def test_ctrl_c_stops_the_job_in_one_line_like_sigterm(tmp_path, capsys):
    """Ctrl-C (SIGINT) stopped the job as SIGTERM does (lock released, run's folder removed) but printed
    Python's traceback of KeyboardInterrupt, 111 lines from wherever the job was (Beam's type hints)."""
    import os
    import signal
    import time

    from pipelines import launch
    from transforms.output_lock import LOCK, OutputLock

    def run(argv):
        with OutputLock(str(tmp_path), "import"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
        return {}

    try:
        code = launch.run_job_cli(run, [], lambda result: [])
    except KeyboardInterrupt:  # what it did: never let it stop pytest itself
        code = "KeyboardInterrupt raised"
    assert code == 128 + signal.SIGINT
    assert capsys.readouterr().err.splitlines() == [
        "audience-sync: stopped by SIGINT (nothing of this run was published unless its publish had committed: "
        "then it was completed)"]
    assert not (tmp_path / LOCK).exists() and signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_staging_flag_whose_value_beam_reads_otherwise_than_written_is_refused():
    """Beam reads any text of --dry_run but '' as true: '--dry_run=False' on Dataflow built the job,
    submitted nothing and printed 'job staged (built and submitted, ...)', exit 0. An empty --dry_run= or
    --template_location= (a template variable rendered empty) ran and published the job it was to stage."""
    from pipelines.options import check_runner
    from transforms.errors import ConfigError

    dataflow = ["--runner=DataflowRunner", "--project=audience-sync-test", "--region=europe-west1"]
    for flag, says in (("--dry_run=False", "--dry_run 'False': "), ("--dry_run=no", "--dry_run 'no': "),
                       ("--dry_run=", "--dry_run '': "), ("--template_location=", "--template_location: an empty value")):
        with pytest.raises(ConfigError) as info:
            check_runner(pipeline_options([*dataflow, flag]))
        assert str(info.value).startswith(says), (flag, str(info.value))
    for flag in ("--dry_run=True", "--dry_run=true", "--template_location=gs://b/t.json"):
        check_runner(pipeline_options([*dataflow, flag]))  # staged, as asked
