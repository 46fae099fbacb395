"""The publish journal under kills: a publish over a previous good run, stopped before or in the middle
of each of its storage steps (local disk and gs://), leaves a folder that a reader either sees as
the complete old version, or as unfinished (no report.json); the next run's start (hold_output)
then leaves exactly the complete old or the complete new version, and no leftovers. Plus real
SIGKILLs of the import and of a nightly --force run in the middle of their publish."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from apache_beam.io.filesystems import FileSystems

from conftest import ROOT
from transforms import publish_journal
from transforms.publish import REPORT, SUCCESS, manifest_bytes, publish_outputs
from transforms.write_parts import write_parquet
from transforms.publish_journal import JOURNAL, hold_output
from transforms.storage import glob, join_path

try:
    from gcs_emulator import gcs_emulator
except ImportError:  # --import-mode=importlib
    from tests.gcs_emulator import gcs_emulator

SCHEMA = pa.schema([("data_source", pa.string()), ("segment_id", pa.string()), ("profile_id", pa.string())])
OUTPUTS = {"reconciled": SCHEMA, "rejected": SCHEMA, "onboarding": None}
STEPS = ("write_file", "_rename", "_delete", "_mkdirs")


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (no except/finally in the publish catches it)."""


def stage(run_dir: str, version: str, parts_per_output: int) -> list:
    """Stage a run's parts (as WriteParts does) and return its parts list."""
    parts = []
    for name in OUTPUTS:
        for b in range(parts_per_output if name != "onboarding" else 1):
            if name == "onboarding":
                path = join_path(run_dir, name, f"ftp_{version}.sync.gz")
                with FileSystems.create(path) as sink:
                    sink.write(f"onboarding {version}".encode())
                parts.append((name, path, 1))
                continue
            path = join_path(run_dir, name, f"part-{b:05d}-of-{parts_per_output:05d}.parquet")
            write_parquet(pa.table({"data_source": ["ds"], "segment_id": [version], "profile_id": [f"p{b}"]}, schema=SCHEMA), path)
            parts.append((name, path, 1))
    return parts


def snapshot(output: str) -> dict[str, bytes]:
    """Everything under ``output`` a reader could see (not the job's own bookkeeping)."""
    files = {}
    for path in glob(join_path(output, "**"), missing_ok=True) if "://" in output else \
            [str(p) for p in Path(output).rglob("*") if p.is_file()]:
        rel = path[len(output) + 1:]
        if rel.split("/")[0].startswith(("_incomplete-", "_lock", "_publish")):
            continue
        with FileSystems.open(path) as handle:
            files[rel] = handle.read()
    return files


def leftovers(output: str) -> list[str]:
    paths = glob(join_path(output, "**"), missing_ok=True) if "://" in output else [str(p) for p in Path(output).rglob("*")]
    return sorted(p for p in paths if any(m in p for m in ("_incomplete-", JOURNAL, "_lock.json", "_write-probe")))


def publish(output: str, version: str, parts_per_output: int, manifest: bool) -> None:
    run_dir = join_path(output, f"_incomplete-{version}")
    parts = stage(run_dir, version, parts_per_output)
    publish_outputs(output, run_dir, OUTPUTS, parts, {"job": "import", "profiles_read": 0, "data_sources": {}, "version": version},
                    {"run_date": version} if manifest else None)


def add_foreign_things(output: str) -> None:
    for rel in ("reconciled/old/part-00000-of-00001.parquet", "rejected/notes.txt", "onboarding/stale.sync.gz"):
        with FileSystems.create(join_path(output, rel)) as sink:
            sink.write(b"not written by the job")


@contextlib.contextmanager
def kill_at(monkeypatch, step: int | None):
    """Count the publish's storage steps; at step number ``step`` do half of it (a list of paths:
    the first half; a file: a truncated write) and stop dead. Yields the list of steps seen."""
    seen = []
    for name in STEPS:
        real = getattr(publish_journal, name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            seen.append(_name)
            if step is not None and len(seen) - 1 == step:
                if _name in ("_rename", "_delete") and len(args[0]) > 1:
                    half = len(args[0]) // 2
                    _real(*(a[:half] for a in args), **kwargs)
                elif _name == "write_file":
                    _real(args[0], args[1][: len(args[1]) // 2], *args[2:], **kwargs)
                raise Killed(f"killed at step {step} ({_name})")
            return _real(*args, **kwargs)

        monkeypatch.setattr(publish_journal, name, wrapped)
    yield seen
    monkeypatch.undo()


def check_kills_at_every_step(base: str, monkeypatch, manifest: bool, old_parts: int = 3, new_parts: int = 2) -> int:
    """Publish a new version (``new_parts`` per output) over an old one (``old_parts``, plus foreign
    files), killed at each step in turn; returns the number of steps."""
    # What a clean publish of each version gives, and how many storage steps it takes.
    old_ref, new_ref = join_path(base, "ref-old"), join_path(base, "ref-new")
    publish(old_ref, "old", old_parts, manifest)
    add_foreign_things(old_ref)
    publish(new_ref, "old", old_parts, manifest)
    add_foreign_things(new_ref)
    with kill_at(monkeypatch, None) as seen:
        publish(new_ref, "new", new_parts, manifest)
    steps = len(seen)
    expected_old, expected_new = snapshot(old_ref), snapshot(new_ref)
    assert expected_old != expected_new and not any("old" in k or k.endswith(".txt") for k in expected_new)
    marker = SUCCESS if manifest else REPORT
    for step in range(steps):
        output = join_path(base, f"out-{step}")
        publish(output, "old", old_parts, manifest)
        add_foreign_things(output)
        with kill_at(monkeypatch, step), pytest.raises(Killed):
            publish(output, "new", new_parts, manifest)
        seen_now = snapshot(output)
        if marker in seen_now:  # a reader that trusts the marker sees a complete version, never a mix
            assert seen_now in (expected_old, expected_new), f"step {step}: a marker over a mixed folder"
        with hold_output(output, "next-run"):  # the next run's start
            pass
        after = snapshot(output)
        assert after in (expected_old, expected_new), f"step {step}: neither the old nor the new version"
        assert leftovers(output) == [], f"step {step}: {leftovers(output)}"
    return steps


def test_a_run_folder_that_cannot_be_removed_after_the_publish_leaves_the_run_published(tmp_path, monkeypatch, caplog):
    """The disk went read-only (or the store refused a delete) after the last marker was moved in: the
    publish is complete, only the emptied run folder is left. The run failed (exit 1, Beam's
    traceback, 'Delete operation failed') though its outputs were published and right. Now it warns,
    naming the folder, and the next run's start removes it."""
    output = str(tmp_path / "out")
    publish(output, "old", 2, manifest=True)
    run_dir = join_path(output, "_incomplete-new")
    real = publish_journal._delete

    def read_only(paths):
        if paths == [run_dir]:
            raise OSError(30, "Read-only file system")
        return real(paths)

    monkeypatch.setattr(publish_journal, "_delete", read_only)
    with caplog.at_level("WARNING", logger="audience_sync.publish"):
        publish(output, "new", 1, manifest=True)
    monkeypatch.undo()
    assert json.loads(snapshot(output)[REPORT])["version"] == "new" and SUCCESS in snapshot(output)
    assert [r.getMessage() for r in caplog.records] == [
        f"{output}: published; its run folder {run_dir} could not be removed (OSError: Read-only file system): "
        "the next run into this folder removes it"]
    with hold_output(output, "next-run"):
        pass
    assert leftovers(output) == []


def test_an_output_folder_the_run_may_not_write_into_fails_before_the_commit(tmp_path):
    """OUT/reconciled/ not writable by the run's account (made by another account, chmod 555), OUT itself
    writable: the publish committed, its moves failed, the previous version's report.json was gone (no
    finished run left to read) and the run failed after Beam's 22-line log of every move refused. Now the
    folder is probed before the commit point: one line naming it, the previous version intact. The publish
    runs in a child without root's override of file permissions (setpriv), as an operator's account."""
    output = str(tmp_path / "out")
    publish(output, "old", 2, manifest=True)
    before = snapshot(output)
    drop = [] if os.geteuid() else ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                                     "--inh-caps=-dac_override,-dac_read_search"]
    if drop and not shutil.which("setpriv"):
        pytest.skip("root, and no setpriv to run the publish without its override of permissions")
    code = f"from test_publish_journal import publish; publish({output!r}, 'new', 1, manifest=True)"
    (tmp_path / "out" / "reconciled").chmod(0o555)
    try:
        result = subprocess.run([*drop, sys.executable, "-c", code], cwd=ROOT / "tests", capture_output=True, text=True,
                                timeout=120)
    finally:
        (tmp_path / "out" / "reconciled").chmod(0o755)
    assert result.returncode != 0
    assert f"RunFailed: {output}/reconciled: cannot write (Permission denied); nothing was published" in result.stderr
    assert snapshot(output) == before and not (tmp_path / "out" / JOURNAL).exists()
    publish(output, "new", 1, manifest=True)  # the folder writable again: published as usual
    assert json.loads(snapshot(output)[REPORT])["version"] == "new"


@pytest.mark.parametrize("manifest", [False, True], ids=["report", "report+_SUCCESS"])
def test_local_publish_killed_at_every_step_recovers_old_or_new(tmp_path, monkeypatch, manifest):
    steps = check_kills_at_every_step(str(tmp_path), monkeypatch, manifest)
    assert steps >= 8


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator() as handle:
        yield handle
        assert handle.credential_lookups == []


def test_gcs_publish_killed_at_every_step_recovers_old_or_new(gcs, monkeypatch):
    steps = check_kills_at_every_step(f"gs://{gcs.bucket}/journal", monkeypatch, manifest=True, old_parts=2, new_parts=1)
    assert steps >= 8


def test_a_committed_publish_interrupted_in_the_pipeline_is_completed_by_the_same_run(tmp_path, monkeypatch):
    """An error (not a kill) after the commit point: run_pipeline completes the publish itself."""
    from pipelines import import_audience
    from test_publish import members, small_job

    config, out = small_job(tmp_path), tmp_path / "out"
    real = publish_journal._rename
    calls = []

    def flaky(sources, destinations):
        calls.append(len(sources))
        if len(calls) == 2:
            raise OSError("connection reset")  # once, in the middle of the moves
        return real(sources, destinations)

    monkeypatch.setattr(publish_journal, "_rename", flaky)
    report = import_audience.run(["--config", str(config), "--output", str(out)])
    assert report["data_sources"]["vis"]["reconciled"] == 2
    assert members(out) == {("10", "p1"), ("10", "p2"), ("11", "p2")}
    assert json.loads((out / REPORT).read_text()) == report
    assert leftovers(str(out)) == []


def killed_at_second_move(job: str, *args) -> subprocess.CompletedProcess:
    """Run ``job`` (Python code; ``sys.argv[1:]`` = ``args``) in a process that SIGKILLs itself at the
    publish's second move: the journal is written, the files are moved in, the markers are not."""
    code = ("import os, signal, sys\nfrom transforms import publish_journal\nreal, n = publish_journal._rename, []\n"
            "def rename(s, d):\n    n.append(1)\n    if len(n) == 2:\n        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return real(s, d)\npublish_journal._rename = rename\n" + job + "\n")
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT, capture_output=True, timeout=300)


def test_real_sigkill_in_the_middle_of_an_import_publish_is_rolled_forward_by_the_next_run(tmp_path):
    from test_publish import members, small_job

    config, out = small_job(tmp_path), tmp_path / "out"
    assert subprocess.run([sys.executable, "-m", "pipelines.cli", "import", "--config", str(config), "--output",
                           str(out)], cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    old = snapshot(str(out))
    (tmp_path / "dumps" / "ftp_1_7_full_1795305600000.sync").write_text(f"{'3' * 38} 30\n{'4' * 38} 40\n")
    killed = killed_at_second_move("from pipelines import import_audience\n"
                                   "import_audience.run(['--config', sys.argv[1], '--output', sys.argv[2]])", config, out)
    assert killed.returncode == -signal.SIGKILL
    assert (out / JOURNAL).exists() and not (out / REPORT).exists()  # mid-publish: no reader trusts it
    assert snapshot(str(out)) != old
    # The next run (another job into the same folder would do the same) completes it at its start.
    from transforms.publish_journal import recover

    assert recover(str(out)) == "rolled forward"
    assert members(out) == {("30", "p3"), ("40", "p4")}
    assert json.loads((out / REPORT).read_text())["data_sources"]["vis"]["received"] == 2
    assert [p for p in leftovers(str(out)) if "_incomplete-" in p] == []


def test_real_sigkill_during_a_forced_nightly_publish_is_recovered_before_the_next_night(tmp_path):
    from test_nightly import V, dump, members as night_members, write_job

    from pipelines import nightly

    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-21", "full", [f"{V[1]} 10", f"{V[2]} 10"])
    nightly.run(["--config", str(config), "--root", str(root), "--date", "2026-11-21"])
    (next((tmp_path / "dumps" / "20261121").glob("*.gz"))).unlink()
    dump(tmp_path, "2026-11-21", "full", [f"{V[3]} 30", f"{V[4]} 30"])  # a corrected delivery, rerun with --force
    killed = killed_at_second_move("from pipelines import nightly\n"
                                   "nightly.run(['--config', sys.argv[1], '--root', sys.argv[2], '--date', '2026-11-21', '--force'])",
                                   config, root)
    assert killed.returncode == -signal.SIGKILL
    assert not (root / "dt=2026-11-21" / SUCCESS).exists()  # mid-publish: not a published night
    assert list((root / "_staging").iterdir())
    dump(tmp_path, "2026-11-22", "iter", [f"{V[1]} 11"])
    result = nightly.run(["--config", str(config), "--root", str(root), "--date", "2026-11-22"])
    assert result[0]["previous"] == "dt=2026-11-21"  # the recovered (forced) night, not an older one
    assert night_members(root, "2026-11-21") == {("30", "p3"), ("30", "p4")}
    assert night_members(root, "2026-11-22") == {("30", "p3"), ("30", "p4"), ("11", "p1")}
    assert not list((root / "_staging").iterdir()) and not (root / "_lock.json").exists()


def test_success_manifest_counts_each_outputs_part_apart(tmp_path):
    # Outputs name their parts alike (part-00000-of-00001.parquet): each keeps its own row count.
    run_dir = str(tmp_path / "run")
    parts = []
    for name, rows in (("reconciled", 3), ("rejected", 1)):
        path = join_path(run_dir, name, "part-00000-of-00001.parquet")
        write_parquet(pa.table({"x": list(range(rows))}), path)
        parts.append((name, path, rows))
    publish_journal.write_file(join_path(run_dir, "report.html"), b"<html></html>")
    publish_journal.write_file(join_path(run_dir, REPORT), b"{}")
    part = "part-00000-of-00001.parquet"
    doc = json.loads(manifest_bytes(run_dir, {"reconciled": [part], "rejected": [part]}, parts, {}))
    assert {f["path"]: f.get("rows") for f in doc["files"] if f["path"].endswith(".parquet")} == {
        "reconciled/part-00000-of-00001.parquet": 3, "rejected/part-00000-of-00001.parquet": 1}
