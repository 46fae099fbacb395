"""Exports SIGKILLed (or on a full disk) where their state is written: the state's manifests
(``_PENDING``, ``_SUCCESS``) and the clearing of a version a retry replaces. A kill leaves the whole
manifest or none, and a rerun of the same command, as the README says to recover, gives the
uninterrupted run's files; a manifest that cannot be written fails in one line naming it."""
from __future__ import annotations

import errno
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from apache_beam.io.filesystems import FileSystems
from conftest import ROOT, cli_in_process
from test_export_removals import NEXT_DATE, SID, export, write_job, write_profiles, write_targets
from test_export_sequences import stopped_before_commit
from test_publish import one_line

import transforms.export
from transforms.config import ConfigError

EXPORT = ("from pipelines import export_audience\n"
          "export_audience.run(['--config', sys.argv[1], '--audience', 'A', '--targets', sys.argv[2], '--output', "
          "sys.argv[3], '--run-date', sys.argv[4], '--segment-id', sys.argv[5], '--state', sys.argv[6], '--allow-shrink'])")

# SIGKILL halfway through writing the KILL_IN_WRITE_NTH-th file (default: the first) whose name ends with
# KILL_IN_WRITE, its first half flushed to disk.
TORN_WRITE = """
import os, signal, sys
from apache_beam.io.filesystems import FileSystems
real = FileSystems.create

class Torn:
    def __init__(self, sink):
        self.sink = sink
    def __enter__(self):
        return self
    def __exit__(self, *exc):
        self.sink.close()
    def write(self, data):
        self.sink.write(data[:len(data) // 2])
        self.sink.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    def close(self):
        self.sink.close()

seen = []

def create(path, *args, **kwargs):
    sink = real(path, *args, **kwargs)
    if os.path.basename(path).endswith(os.environ['KILL_IN_WRITE']):  # the file, or its partial beside
        seen.append(path)
        if len(seen) == int(os.environ.get('KILL_IN_WRITE_NTH', '1')):
            return Torn(sink)
    return sink

FileSystems.create = create
"""

KILL_AFTER_DELETE = """
import os, signal, sys
from apache_beam.io.filesystems import FileSystems
real = FileSystems.delete

def delete(paths):
    real(paths)
    if any(str(p).startswith(os.environ['KILL_AFTER_DELETE_UNDER']) for p in paths):
        os.kill(os.getpid(), signal.SIGKILL)

FileSystems.delete = delete
"""


def killed_export(hook: str, env: dict, *args) -> subprocess.CompletedProcess:
    """The export in a process that SIGKILLs itself where ``hook`` says."""
    import os

    return subprocess.run([sys.executable, "-c", hook + EXPORT, *map(str, args)], cwd=ROOT, capture_output=True,
                          timeout=300, env={**os.environ, **env})


def setup(base: Path) -> tuple[Path, Path, Path]:
    """A job of four profiles and a first export (p00, p01) under ``base/state``."""
    job = write_job(base / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    state = base / "state"
    export(job, write_targets(base / "t1.csv", [0, 1]), base / "out1", "--segment-id", SID, "--state", state)
    return job, write_targets(base / "t2.csv", [0, 2, 3]), state


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "onboarding").iterdir())}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, bytes]:
    """The files of the second export, run without a kill (made once for both manifests)."""
    reference = tmp_path_factory.mktemp("reference")
    job, targets, state = setup(reference)
    export(job, targets, reference / "out2", "--segment-id", SID, "--state", state, "--allow-shrink", run_date=NEXT_DATE)
    return files(reference / "out2")


@pytest.mark.parametrize("manifest", ["_PENDING", "_SUCCESS"])
def test_an_export_killed_while_writing_its_state_manifest_is_rerun_to_the_same_files(tmp_path, manifest, uninterrupted):
    """Killed halfway through the manifest (``_PENDING`` before its publish, ``_SUCCESS`` after it):
    the manifest was left torn, and every later export failed on it ('not a JSON object (a damaged
    manifest ...)'); the documented rerun into its --output on its run date could not run."""
    job, targets, state = setup(tmp_path / "run")
    out = tmp_path / "run" / "out2"
    killed = killed_export(TORN_WRITE, {"KILL_IN_WRITE": manifest}, job, targets, out, NEXT_DATE, SID, state)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert (out / "report.json").exists() == (manifest == "_SUCCESS")  # killed after its publish, or before it
    version = state / "crm" / "A" / "v-000002"
    assert not (version / manifest).exists() or (version / manifest).read_bytes().endswith(b"}\n")  # whole or none

    report = export(job, targets, out, "--segment-id", SID, "--state", state, "--allow-shrink", run_date=NEXT_DATE)
    assert report["state_version"] == 2 and (version / "_SUCCESS").exists() and not (version / "_PENDING").exists()
    assert files(out) == uninterrupted
    assert sorted(p.name for p in version.iterdir()) == ["_SUCCESS", "members"]


def test_a_retry_killed_while_it_clears_the_version_it_repeats_keeps_it_pending(tmp_path, monkeypatch):
    """A run published its files and stopped before its commit (``v-000002/_PENDING``); its retry into
    the same --output, killed as it cleared that version's leftovers, took the ``_PENDING`` with them:
    the next export, computed against v-000001, was not refused, and never removed what the stopped
    run's delivered files added (exit 0)."""
    job, targets, state = setup(tmp_path)
    flags = ("--segment-id", SID, "--state", state, "--allow-shrink")
    with monkeypatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", stopped_before_commit(transforms.export.commit_state))
        with pytest.raises(Exception):
            export(job, targets, tmp_path / "out2", *flags, run_date=NEXT_DATE)
    version = state / "crm" / "A" / "v-000002"
    assert (version / "_PENDING").exists() and (tmp_path / "out2" / "report.json").exists()

    killed = killed_export(KILL_AFTER_DELETE, {"KILL_AFTER_DELETE_UNDER": str(version)},
                           job, targets, tmp_path / "out2", NEXT_DATE, SID, state)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]

    later = write_targets(tmp_path / "t3.csv", [0])
    with pytest.raises(ConfigError, match="version 2 .* never committed.*out2.*_PENDING"):
        export(job, later, tmp_path / "out3", *flags, run_date="2026-11-24")
    retry = export(job, targets, tmp_path / "out2", *flags, run_date=NEXT_DATE)
    assert retry["state_version"] == 2 and (version / "_SUCCESS").exists()


@pytest.mark.parametrize("manifest", ["_PENDING", "_SUCCESS"])
def test_a_state_manifest_that_cannot_be_written_fails_in_one_line_naming_it(tmp_path, monkeypatch, manifest):
    """A full disk under ``--state`` once the members' parts were written: the run failed after Beam's
    16-line traceback, its line naming no file ('run failed: RuntimeError: OSError: [Errno 28] No space
    left on device [while running 'Export/PublishExport']'), nor whether its files were published."""
    job, targets, state = setup(tmp_path)
    real = FileSystems.create

    def create(path, *args, **kwargs):
        if path.endswith(manifest):  # the manifest, or its partial beside
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(FileSystems, "create", create)
    out = tmp_path / "out2"
    result = cli_in_process("export", "--config", job, "--audience", "A", "--targets", targets, "--output", out,
                            "--run-date", NEXT_DATE, "--segment-id", SID, "--state", state, "--allow-shrink")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert f"v-000002/{manifest}: cannot write (No space left on device)" in line, line
    if manifest == "_PENDING":
        assert "nothing was published" in line and not (out / "report.json").exists()
    else:  # after its publish: the version waits as _PENDING, which the next export names
        assert "published" in line and "_PENDING" in line and (out / "report.json").exists()
        assert (state / "crm" / "A" / "v-000002" / "_PENDING").exists()
