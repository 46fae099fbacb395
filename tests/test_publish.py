"""Publishing under faults, on local disk: output folders owned by the job, leftovers of killed runs
cleaned, a live run's output locked, unwritable or full outputs refused before the pipeline runs.
(The publish journal's kill-at-every-step tests are in test_publish_journal.py.)"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import DEMO, ROOT, cli_in_process
from pipelines import import_audience

V = {i: str(i) * 38 for i in range(1, 6)}


def small_job(tmp_path: Path, lines: list[str] | None = None) -> Path:
    """Four profiles, one visitor data source, one dump."""
    pq.write_table(pa.table({"profile_id": ["p1", "p2", "p3", "p4"], "visitor_ids": [[V[1]], [V[2]], [V[3]], [V[4]]]}),
                   tmp_path / "profiles.parquet")
    (tmp_path / "dumps").mkdir(exist_ok=True)
    body = lines if lines is not None else [f"{V[1]} 10", f"{V[2]} 10,11", f"{V[5]} 12"]
    (tmp_path / "dumps" / "ftp_1_7_full_1795305600000.sync").write_text("".join(f"{l}\n" for l in body))
    config = {"profiles": {"path": "profiles.parquet", "email": None, "phone": None},
              "data_sources": [{"name": "vis", "dpid": 7, "segments": "dumps/*.sync", "id_type": "visitor"}],
              "buckets": 2}
    (tmp_path / "job.yaml").write_text(json.dumps(config))
    return tmp_path / "job.yaml"


def members(folder: Path) -> set[tuple]:
    return {(r["segment_id"], r["profile_id"]) for r in pq.read_table(folder / "reconciled").to_pylist()}


def run_cli(config: Path, out: Path):
    return cli_in_process("import", "--config", config, "--output", out)


def one_line(stderr: str) -> str:
    lines = [l for l in stderr.splitlines() if l.startswith("audience-sync:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# ---------------------------------------------------------------------------------------------
# the job owns its output folders


def test_anything_the_run_did_not_write_in_its_output_folders_is_removed(tmp_path):
    config, out = small_job(tmp_path), tmp_path / "out"
    import_audience.run(["--config", str(config), "--output", str(out)])
    # A sub-folder (say from another tool, or an older layout) is read as part of the dataset.
    stale = out / "reconciled" / "old"
    stale.mkdir()
    pq.write_table(pa.table({"data_source": ["vis"], "segment_id": ["99"], "profile_id": ["ghost"]}),
                   stale / "part-00000-of-00001.parquet")
    (out / "rejected" / "notes.txt").write_text("not ours")
    (out / "file_audience" / "deeper" / "still").mkdir(parents=True)
    assert ("99", "ghost") in members(out)  # the reader really does pick it up
    import_audience.run(["--config", str(config), "--output", str(out)])
    assert members(out) == {("10", "p1"), ("10", "p2"), ("11", "p2")}
    for name in ("reconciled", "file_audience", "rejected"):
        assert all(p.is_file() and p.name.startswith("part-") for p in (out / name).iterdir()), name
    assert sorted(p.name for p in out.iterdir()) == ["file_audience", "reconciled", "rejected", "report.html", "report.json"]


def test_leftovers_of_killed_runs_are_cleaned_at_the_next_start(tmp_path):
    config, out = small_job(tmp_path), tmp_path / "out"
    for name in ("_incomplete-0123456789ab/reconciled", "_incomplete-ba9876543210"):
        (out / name).mkdir(parents=True)
    (out / "_incomplete-0123456789ab" / "reconciled" / "part-00000-of-00002.parquet").write_bytes(b"profile ids")
    (out / "_write-probe-0123456789ab").write_bytes(b"\0" * 100)  # killed while probing
    import_audience.run(["--config", str(config), "--output", str(out)])
    assert not list(out.glob("_incomplete-*")) and not list(out.glob("_write-probe-*"))
    assert (out / "report.json").exists()


def test_a_killed_imports_staged_key_cache_parts_are_cleaned_with_its_run_folder(tmp_path):
    """A killed import --key-cache DIR left its staged parts (profile keys) in DIR/_incoming/ for good:
    its run folder went at the next run's start, nothing removed them. They are named after its output."""
    config, out, cache = small_job(tmp_path), tmp_path / "out", tmp_path / "cache"
    (out / "_incomplete-0123456789ab").mkdir(parents=True)
    other = import_audience.staging_prefix(str(tmp_path / "other")) + "_incomplete-ba9876543210"  # another output's run
    for run in (import_audience.staging_prefix(str(out)) + "_incomplete-0123456789ab", other):
        (cache / "_incoming" / run).mkdir(parents=True)
        (cache / "_incoming" / run / "part-0123.arrow").write_bytes(b"profile keys")
    import_audience.run(["--config", str(config), "--output", str(out), "--key-cache", str(cache)])
    assert sorted(p.name for p in (cache / "_incoming").iterdir()) == [other]


KILLED_WHILE_STAGING = """import os, signal, sys
from transforms import key_cache
from pipelines import cli

made = key_cache.CacheWriter.__init__
def killed(self, *args, **kwargs):  # SIGKILL once the run's first key-cache part is staged
    made(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
key_cache.CacheWriter.__init__ = killed
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_import_killed_while_keying_profiles_leaves_no_staged_keys_after_the_next_run(tmp_path):
    """An import killed while it keys profiles (the long stage of a big extract) had staged key-cache
    parts but written nothing in its run folder yet: the next run into the same output found no
    run folder of it, so its profile keys stayed in DIR/_incoming/ for good (found with kill -9 on a
    600k-profile import)."""
    config, out, cache = small_job(tmp_path), tmp_path / "out", tmp_path / "cache"
    argv = ["import", "--config", str(config), "--output", str(out), "--key-cache", str(cache)]
    killed = subprocess.run([sys.executable, "-c", KILLED_WHILE_STAGING, *argv], cwd=ROOT, capture_output=True)
    assert killed.returncode == -9
    assert list((cache / "_incoming").glob("*/part-*.arrow")), "the run was killed before it staged a part"
    assert cli_in_process(*argv).returncode == 0
    assert not list((cache / "_incoming").rglob("*"))


# ---------------------------------------------------------------------------------------------
# one live run per output


def hold_lock(folder: Path) -> subprocess.Popen:
    """Another live process holding ``folder``'s lock (through the real lock code)."""
    code = ("import sys, time\nfrom transforms.output_lock import OutputLock\n"
            "OutputLock(sys.argv[1], 'test').acquire()\nprint('held', flush=True)\ntime.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(folder)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_run_into_an_output_a_live_run_holds_fails_fast_and_a_dead_holder_is_taken_over(tmp_path):
    config, out = small_job(tmp_path), tmp_path / "out"
    import_audience.run(["--config", str(config), "--output", str(out)])
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    holder = hold_lock(out)
    try:
        result = run_cli(config, out)
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert str(out / "_lock.json") in line and f"pid {holder.pid}" in line and socket.gethostname() in line, line
        after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "_lock.json"}
        assert after == before  # nothing touched, not even the holder's outputs
    finally:
        holder.kill()
        holder.wait()
    # The holder died without releasing: same host, its pid is gone -> stale, taken over.
    lock = json.loads((out / "_lock.json").read_text())
    assert lock["pid"] == holder.pid and lock["host"] == socket.gethostname()
    assert run_cli(config, out).returncode == 0
    assert not (out / "_lock.json").exists()


def test_a_lock_of_another_host_is_respected_until_it_is_older_than_the_limit(tmp_path):
    from transforms.output_lock import OutputLock

    config, out = small_job(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / "_lock.json").write_text(json.dumps({"run_id": "x", "job": "import", "host": "elsewhere", "pid": 1,
                                                "started": "2999-01-01T00:00:00+00:00"}))
    line = one_line(run_cli(config, out).stderr)
    assert "elsewhere" in line and "in use" in line
    (out / "_lock.json").write_text(json.dumps({"run_id": "x", "job": "import", "host": "elsewhere", "pid": 1,
                                                "started": "2000-01-01T00:00:00+00:00"}))
    assert run_cli(config, out).returncode == 0  # older than 24 h: stale
    with OutputLock(str(out), "test"):  # and the lock is free again
        pass


# ---------------------------------------------------------------------------------------------
# unwritable and full outputs


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False):
    """A small tmpfs at ``path`` (needs mount rights: root in the test container)."""
    path.mkdir(parents=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_read_only_output_fails_before_the_pipeline_naming_the_path(tmp_path):
    config = small_job(tmp_path)
    if os.geteuid() == 0:
        ctx = tmpfs(tmp_path / "ro", "1m", read_only=True)
    else:
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        ctx = contextlib.nullcontext(tmp_path / "ro")
    with ctx as ro:
        result = run_cli(config, ro / "out")
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert str(ro / "out") in line and ("Read-only" in line or "Permission" in line), line
    assert "Pipeline" not in result.stderr


@pytest.mark.parametrize("job", ["import", "nightly"])
def test_a_read_only_key_cache_fails_before_the_pipeline_naming_it(tmp_path, job):
    """A key-cache folder the run cannot write (a read-only mount, a cache another account owns): the
    run failed once every profile was keyed, with Beam's traceback and 'run failed: RuntimeError:
    PermissionError: ... _incoming [while running ...KeyProfiles]'."""
    if job == "import":
        cache = tmp_path / "cache"
        argv = ["import", "--config", small_job(tmp_path), "--output", tmp_path / "out", "--key-cache", cache]
        flag, remedy = f"--key-cache {cache}", "without --key-cache"
    else:
        cache = tmp_path / "root" / "_key_cache"
        argv = ["nightly", "--config", DEMO / "job.yaml", "--root", tmp_path / "root", "--date", "2026-11-22"]
        flag, remedy = f"--root {cache}", "--no-key-cache"
    with tmpfs(cache, "1m", read_only=True):
        result = cli_in_process(*argv)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line.startswith(f"audience-sync: run failed: {flag}: cannot write to the profile-key cache "
                           "(Read-only file system); nothing was run") and remedy in line, line
    assert "Pipeline" not in result.stderr


def test_a_full_disk_fails_before_the_pipeline_naming_the_path(tmp_path):
    config = small_job(tmp_path)
    with tmpfs(tmp_path / "disk", "256k") as disk:
        with open(disk / "filler", "wb", buffering=0) as fh:  # fill it up
            with contextlib.suppress(OSError):
                while True:
                    fh.write(b"\0" * 4096)
        result = run_cli(config, disk / "out")
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert str(disk / "out") in line and "No space left" in line, line
        assert not list((disk / "out").glob("*")) if (disk / "out").exists() else True


def test_a_disk_that_fills_during_the_run_fails_naming_the_file_and_keeps_the_previous_output(tmp_path):
    config = small_job(tmp_path, [f"{V[1 + i % 4]} {i % 50 + 1}" for i in range(20000)])
    with tmpfs(tmp_path / "disk", "512k") as disk:
        out = disk / "out"
        import_audience.run(["--config", str(config), "--output", str(out)])
        before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        (tmp_path / "dumps" / "ftp_1_7_full_1795305600000.sync").write_text(
            "".join(f"{V[1 + i % 4]} {i % 5000 + 1}\n" for i in range(20000)))  # a bigger audience
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(free - 96 * 1024, 0))  # room for the probe, not the parts
        result = run_cli(config, out)
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert str(out) in line and "No space left" in line and "_incomplete-" in line, line  # a part, not the probe
        after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
        assert after == before  # the previous good output is untouched


def test_a_disk_that_fills_while_the_key_cache_is_written_fails_in_one_line_naming_the_file(tmp_path):
    """The profile-key cache's part, staged while the profiles are keyed, past the probe's 64 KiB on a
    disk that fills: the run failed after Beam's 20-line traceback, its line naming no file
    ('run failed: RuntimeError: OSError: [Errno 28] No space left on device [while running
    'Reconcile/KeyProfiles/ParDo(KeyProfiles)']')."""
    from generate_data import generate

    data = tmp_path / "data"
    generate(data, n_profiles=20_000, n_lines=1_000, seed=5)
    with tmpfs(tmp_path / "disk", "1m") as disk:
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(b"\0" * max(free - 96 * 1024, 0))  # room for the probe, not the part
        result = cli_in_process("import", "--config", data / "job.yaml", "--output", tmp_path / "out",
                                "--key-cache", disk / "kc")
        assert not list((disk / "kc").rglob("*.arrow"))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert str(disk / "kc" / "_incoming") in line and "No space left" in line and "--key-cache" in line, line
    assert not (tmp_path / "out" / "report.json").exists()


# ---------------------------------------------------------------------------------------------
# the export goes through the same launch and publish


def test_the_export_output_is_locked_owned_and_cleaned_the_same_way(tmp_path):
    from test_export import TARGETS, export, onboarding, write_job, write_targets

    from transforms.errors import RunFailed
    from transforms.output_lock import OutputLock

    config, targets, out = write_job(tmp_path / "job"), write_targets(tmp_path / "targets.csv", TARGETS), tmp_path / "out"
    export(config, targets, out, "--data-source", "hashed")
    sent = onboarding(out)
    (out / "onboarding" / "old").mkdir()
    (out / "onboarding" / "old" / "ftp_dpm_12345_1.sync.gz").write_bytes(b"an older delivery")  # would be uploaded
    (out / "exported" / "stale.parquet").write_bytes(b"not ours")
    (out / "_incomplete-0123456789ab").mkdir()
    with OutputLock(str(out), "another-run"):
        with pytest.raises(RunFailed, match="in use"):
            export(config, targets, out, "--data-source", "hashed")
    export(config, targets, out, "--data-source", "hashed")
    assert onboarding(out) == sent
    assert not (out / "exported" / "stale.parquet").exists() and not list(out.glob("_incomplete-*"))
