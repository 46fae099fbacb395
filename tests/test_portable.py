"""The import through Beam's portable job API -- the path Flink (and Spark) submissions take.

Beam's own local job service (``apache_beam.runners.portability.local_job_service_main``) runs in a
child process on loopback and plays the cluster's job server: the launcher submits the pipeline proto
and its artifacts over gRPC (``--runner=PortableRunner --job_endpoint=localhost:PORT``), the service
executes it, and with ``--environment_type=LOOPBACK`` the SDK worker that runs our DoFns is served
from the launcher process. The outputs must equal a local run's, file for file.

Against a Flink cluster the same command adds ``--runner=FlinkRunner --flink_master=HOST:8081`` and a
worker environment (DOCKER / PROCESS / EXTERNAL): see the README, "Running at scale".
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:
    from gcs_emulator import _die_with_parent, _stop
except ImportError:  # pragma: no cover
    from tests.gcs_emulator import _die_with_parent, _stop

from conftest import DEMO
from pipelines.import_audience import OUTPUTS, run

RUN_DATE = "2026-11-22"
START_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def job_service(tmp_path_factory):
    """Beam's local job service in a child process; yields ``(endpoint, log path)``."""
    folder = tmp_path_factory.mktemp("job-service")
    port_file, log_path = folder / "port", folder / "job-service.log"
    env = dict(os.environ)
    for name in ("NO_PROXY", "no_proxy"):  # gRPC honours proxy variables: keep loopback direct
        env[name] = ",".join(filter(None, [env.get(name, ""), "localhost,127.0.0.1"]))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "apache_beam.runners.portability.local_job_service_main",
             "--port", "0", "--port_file", str(port_file), "--staging_dir", str(folder / "staging")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not port_file.exists():  # written (atomically) once the gRPC server listens
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"job service did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield f"localhost:{port_file.read_text().strip()}", log_path
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "out"
    return out, run(["--config", str(DEMO / "job.yaml"), "--output", str(out), "--run-date", RUN_DATE])


@pytest.fixture(scope="module")
def portable_run(job_service, tmp_path_factory):
    endpoint, log_path = job_service
    out = tmp_path_factory.mktemp("portable") / "out"
    report = run([
        "--config", str(DEMO / "job.yaml"), "--output", str(out), "--run-date", RUN_DATE,
        "--runner=PortableRunner", f"--job_endpoint={endpoint}", "--environment_type=LOOPBACK",
    ])
    return out, report, log_path.read_text()


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_job_service_ran_the_import(portable_run):
    _, report, log = portable_run
    assert "Running job" in log and "with state DONE" in log, log[-3000:]
    assert report["totals"]["received"] == 1000


def test_portable_outputs_equal_the_local_run_file_for_file(portable_run, local_run):
    portable_out, portable_report, _ = portable_run
    local_out, local_report = local_run
    assert portable_report == local_report
    portable_files, local_files = _files(portable_out), _files(local_out)
    assert sorted(portable_files) == sorted(local_files)
    assert {name.split("/")[0] for name in portable_files} == {*OUTPUTS, "report.json", "report.html"}
    for name, data in local_files.items():  # Parquet parts, report.json and report.html, byte for byte
        assert portable_files[name] == data, name
    expected = json.loads((DEMO / "expected" / "counts.json").read_text())
    for source, counts in expected.items():
        entry = portable_report["data_sources"][source]
        assert {k: entry[k] for k in counts} == counts, source
