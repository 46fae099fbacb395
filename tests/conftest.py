"""Shared fixtures. Every pipeline in the tests runs for real on the pinned local runner."""
from __future__ import annotations

import io
import logging
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from datetime import datetime, timezone
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "testdata" / "demo"
sys.path.insert(0, str(ROOT / "scripts"))


def delivered(day: str) -> int:
    """A dump name's TIMESTAMP (ms) for a delivery made at noon UTC on ``day`` (YYYY-MM-DD): a later
    night's dumps carry a later one, as a partner's do (the nightly job refuses an older delivery)."""
    return int(datetime.fromisoformat(day).replace(hour=12, tzinfo=timezone.utc).timestamp()) * 1000


def local_test_pipeline(runner: str | None = None) -> TestPipeline:
    """A TestPipeline on the runner the jobs use by default (or the one named)."""
    from pipelines.options import LOCAL_RUNNER

    return TestPipeline(runner=runner or LOCAL_RUNNER, options=PipelineOptions([]))


# The test files that take longest, longest first (measured one file at a time with --durations on 2
# cores, December 2026; the order last changed then, from those measurements). scripts/test hands whole
# files to its two workers (--dist loadfile): a module's shared runs (demo_run, the GCS emulator, the
# Airflow home) are then made once, not once per worker, and with the long files handed out first neither
# worker is left running one of them alone at the end. Files not listed follow, in their usual order.
SLOW_FILES_FIRST = (
    "test_nightly_guards.py", "test_export_sequences.py", "test_export_removals.py", "test_airflow_dag.py",
    "test_export.py", "test_gcs.py", "test_control_files.py", "test_key_cache.py", "test_nightly.py",
    "test_import_e2e.py", "test_nightly_undelivered.py", "test_export_others.py", "test_dataflow.py",
    "test_consent.py", "test_publish_journal.py", "test_diagnosis.py", "test_publish.py", "test_guards.py",
    "test_profile_inputs.py", "test_export_kills.py", "test_nightly_config_changes.py", "test_report_browser.py",
    "test_dump_checks.py", "test_extract_copies.py", "test_encrypted.py", "test_extract_forms.py", "test_iv_check.py",
    "test_terminal.py", "test_input_globs.py", "test_parity.py", "test_visitor_entries.py", "test_suppression.py",
    "test_lock_faults.py", "test_small_files.py", "test_portable.py", "test_secret_manager.py",
)


def pytest_collection_modifyitems(config, items):
    """Long files first (a stable sort: within a file, the tests keep their order)."""
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    """A private copy of the bundled demo (tests may damage it)."""
    target = tmp_path / "demo"
    shutil.copytree(DEMO, target)
    return target


def cli_in_process(*argv) -> subprocess.CompletedProcess:
    """``audience-sync ARGV`` through the CLI's own ``main`` in this process: the exit code, stdout and
    stderr (log lines included) a subprocess would give, without starting Python and importing Beam
    again (about 4 s a launch). What only a process shows (SIGTERM, the console script, a fresh
    interpreter) is tested with real subprocesses: demo_cli_run, test_terminal, test_packaging."""
    from pipelines import cli
    from transforms import progress

    root, out, err = logging.getLogger(), io.StringIO(), io.StringIO()
    handlers, level, progress_level = root.handlers[:], root.level, progress.LOG.level
    root.handlers = []  # so the CLI's logging.basicConfig writes its lines to ``err``, as in a process
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in argv])
            except SystemExit as exit_:  # argparse's usage errors, as the interpreter would exit
                code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    finally:
        root.handlers = handlers
        root.setLevel(level)
        progress.LOG.setLevel(progress_level)
        progress.set_interval(progress.DEFAULT_INTERVAL)
    return subprocess.CompletedProcess(["audience-sync", *map(str, argv)], code, out.getvalue(), err.getvalue())


def run_import_cli(config, out) -> subprocess.CompletedProcess:
    """`audience-sync import --config CONFIG --output OUT`, in this process (:func:`cli_in_process`)."""
    return cli_in_process("import", "--config", config, "--output", out)


@pytest.fixture(scope="session")
def demo_cli_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The bundled demo imported by the real CLI, once per test process for the files that read it
    (test_import_e2e, test_html_report, test_report_browser): its output folder and the finished
    process. Nothing may change that folder; a test that damages an output makes its own run."""
    out = tmp_path_factory.mktemp("demo-cli") / "out"
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "import", "--config", str(DEMO / "job.yaml"),
                             "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return out, result


def assert_failed_cleanly(result: subprocess.CompletedProcess, out: Path, *words: str) -> str:
    """A failed run: exit 1, its last stderr line names the cause (``words``), no traceback, and
    nothing published or left behind under ``out``. Returns that line."""
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("audience-sync: run failed: "), result.stderr
    for word in words:
        assert word in last, last
    assert "Traceback" not in result.stderr
    assert not (out / "report.json").exists() and not list(out.glob("_incomplete-*"))
    return last
