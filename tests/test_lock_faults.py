"""A run's lock when its storage fails (the disk gone read-only, GCS down past the client's retries).

A lock that cannot be deleted when the run ends: the run's own error stays the one reported, a run
that published exits 0, and one line names the lock left behind (it refuses other hosts' runs for
24 h). The failures are real (a read-only remount, a stopped emulator); a hook on
``OutputLock.release`` only times them, just before the delete, since nothing real fails exactly there."""
from __future__ import annotations

import subprocess

import pytest

from conftest import cli_in_process
from test_publish import V, members, small_job, tmpfs

try:  # tests/ is on sys.path in pytest's default (prepend) import mode
    from gcs_emulator import _stop, gcs_emulator, storage_client
except ImportError:  # e.g. --import-mode=importlib, run from the project root
    from tests.gcs_emulator import _stop, gcs_emulator, storage_client

from transforms.output_lock import OutputLock

NUL_DUMP = [f"{V[1]} 10"] + [f"bad\0line {i}" for i in range(50)]  # fails the run in its pipeline


def fail_storage_before_release(monkeypatch, fail) -> None:
    """``fail()`` (a real fault) when the run's lock is about to be deleted."""
    real = OutputLock.release

    def release(self, *args, **kwargs):
        fail()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(OutputLock, "release", release)


def lock_lines(stderr: str, lock: str) -> list[str]:
    return [line for line in stderr.splitlines() if lock in line and "could not be deleted" in line]


def assert_outcome_stands(result, lock: str, cause: str, bad_dump: bool) -> None:
    """One line names the lock left behind and its cause; the run's own outcome stands: a failed run's
    error (the NUL bytes of its dump) and exit 1, or a published run's exit 0."""
    lines = lock_lines(result.stderr, lock)
    assert len(lines) == 1 and cause in lines[0] and "Traceback" not in result.stderr, result.stderr
    if bad_dump:
        assert result.returncode == 1 and "failed (its error follows)" in lines[0]
        assert "audience-sync: run failed: " in result.stderr and "NUL bytes" in result.stderr, result.stderr
    else:
        assert result.returncode == 0 and "succeeded" in lines[0] and "run failed" not in result.stderr, result.stderr


@pytest.mark.parametrize("bad_dump", [False, True], ids=["published", "failed"])
def test_a_local_lock_that_cannot_be_deleted_leaves_the_runs_outcome_and_names_the_lock(tmp_path, monkeypatch,
                                                                                        bad_dump):
    """Locally (the output's disk remounted read-only at the end): a run that published exited 1 'run failed:
    OSError: [Errno 30] Read-only file system: OUT/_lock.json -> ...', its outputs published, nothing said so."""
    config = small_job(tmp_path, NUL_DUMP if bad_dump else None)
    with tmpfs(tmp_path / "disk", "8m") as disk:
        out = disk / "out"
        fail_storage_before_release(monkeypatch, lambda: subprocess.run(
            ["mount", "-o", "remount,ro", str(disk)], check=True))
        result = cli_in_process("import", "--config", config, "--output", out)
        assert (out / "_lock.json").exists()  # left behind, and named
        assert_outcome_stands(result, str(out / "_lock.json"), "Read-only file system", bad_dump)
        if not bad_dump:
            assert members(out) == {("10", "p1"), ("10", "p2"), ("11", "p2")} and (out / "report.json").exists()


@pytest.mark.parametrize("bad_dump", [False, True], ids=["published", "failed"])
def test_a_gs_lock_that_cannot_be_deleted_leaves_the_runs_outcome_and_names_the_lock(tmp_path, monkeypatch, bad_dump):
    """On gs:// (the emulator stopped at the end, the client's retries given up): a run that published exited 1
    'run failed: RetryError: Timeout of 120.0s exceeded, ...', its outputs published, nothing said so."""
    from apache_beam.io.gcp.gcsio_retry import DEFAULT_RETRY_WITH_THROTTLING_COUNTER as BEAM_RETRY
    from google.cloud.storage.retry import DEFAULT_RETRY

    config = small_job(tmp_path, NUL_DUMP if bad_dump else None)
    with gcs_emulator() as gcs:
        out, client = f"gs://{gcs.bucket}/out", storage_client()
        for retry in (DEFAULT_RETRY, BEAM_RETRY):  # the clients give up in half a second
            for name, value in (("_initial", 0.01), ("_maximum", 0.02), ("_timeout", 0.5), ("_deadline", 0.5)):
                monkeypatch.setattr(retry, name, value)
        stopped = []
        fail_storage_before_release(monkeypatch, lambda: (stopped.append(sorted(
            b.name for b in client.list_blobs(gcs.bucket))), _stop(gcs.process)))
        result = cli_in_process("import", "--config", config, "--output", out)
    assert "out/_lock.json" in stopped[0]  # left behind, and named
    assert_outcome_stands(result, f"{out}/_lock.json", "Timeout", bad_dump)
    if not bad_dump:
        assert "out/report.json" in stopped[0]


def test_a_gs_lock_create_while_gcs_is_down_fails_without_waiting_twice(monkeypatch):
    """The emulator stopped before the run takes its lock: the create fails after the client's retries
    (120 s by default), then the read-back (is the lock this run's own, created by an attempt whose
    answer was lost?) waited the client's whole deadline again: 216 s before 'cannot create the output
    lock', measured against a stopped emulator. The read-back has a short deadline of its own
    (``READ_BACK_SECONDS``); the client's is made 4 s here, the read-back's 0.5 s."""
    import time

    from google.cloud.storage.retry import DEFAULT_RETRY

    from transforms import output_lock
    from transforms.output_lock import LockNotCreated

    for name, value in (("_initial", 0.01), ("_maximum", 0.02), ("_timeout", 4.0), ("_deadline", 4.0)):
        monkeypatch.setattr(DEFAULT_RETRY, name, value)
    monkeypatch.setattr(output_lock, "READ_BACK_SECONDS", 0.5)
    real_read, read_back = output_lock._GcsLocks.read, []

    def timed_read(self, *args, **kwargs):
        started = time.monotonic()
        try:
            return real_read(self, *args, **kwargs)
        finally:
            read_back.append(time.monotonic() - started)

    monkeypatch.setattr(output_lock._GcsLocks, "read", timed_read)
    with gcs_emulator() as gcs:
        _stop(gcs.process)
        with pytest.raises(LockNotCreated, match=r"_lock.json: cannot create the output lock \(Timeout of 4.0s"):
            OutputLock(f"gs://{gcs.bucket}/down", "import_audience").acquire()
    assert len(read_back) == 1 and read_back[0] < 2.5, read_back  # it was the client's 4 s
