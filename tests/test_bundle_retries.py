"""A bundle run twice: Dataflow retries a failed bundle (a fused step after a DoFn failing, a worker
lost before it reported the bundle done) and may run a slow one twice; Flink reruns a failed task.
Only one attempt's output elements are committed, but the side effects (files a DoFn writes itself)
happen once per attempt. The local runner never retries, so these tests run a bundle's attempts
themselves: a real pipeline with a test-only DoFn subclass running its attempt twice, or a DoFn's
lifecycle methods called directly, then the real publish and the next run on what is there."""
from __future__ import annotations

import hashlib
import json

from test_export_removals import SID, export, write_profiles, write_targets
from test_export_removals import lines as export_lines, write_job as write_export_job
from test_nightly import V, dump, members, run, write_job

import transforms.export
from pipelines import import_audience
from transforms import publish
from transforms.key_cache_publish import PublishKeyCache
from transforms.progress import TALLY
from transforms.publish import SUCCESS


class AttemptedTwice:
    """A step (the DoFn after it in the bases) whose bundle the runner retried after its first attempt
    had done its work (a fused step after it failed, its worker was lost before it reported): the
    first attempt's side effects happen whole, the second attempt's outputs are committed."""

    def process(self, *args):
        list(super().process(*args) or ())  # (a step whose process returns None, not a generator: no outputs)
        yield from super().process(*args) or ()


class PublishedTwice(AttemptedTwice, publish._Publish):
    """The publish step, retried after its first attempt published."""


def test_a_nightly_publish_retried_after_it_published_keeps_its_manifest_and_the_next_night_its_members(
        tmp_path, monkeypatch):
    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-21", "full", [f"{V[1]} 10", f"{V[2]} 10,11"])
    dump(tmp_path, "2026-11-22", "iter", [f"{V[3]} 11", f"{V[4]} 12"])
    with monkeypatch.context() as patched:
        patched.setattr(publish, "_Publish", PublishedTwice)
        assert run(config, root, "--date", "2026-11-21")[0]["status"] == "published"
    night = root / "dt=2026-11-21"
    assert members(root, "2026-11-21") == {("10", "p1"), ("10", "p2"), ("11", "p2")}
    manifest = json.loads((night / SUCCESS).read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    parts = sorted(str(p.relative_to(night)) for p in night.glob("*/*.parquet"))
    assert parts and set(parts) <= set(listed)  # every part the night holds, as the manifest says
    for path in parts:
        assert hashlib.sha256((night / path).read_bytes()).hexdigest() == listed[path]["sha256"]
    assert sum(f.get("rows", 0) for p, f in listed.items() if p.startswith("reconciled/")) == 3
    # The next night carries the memberships of the night before (its manifest names its parts).
    assert run(config, root, "--date", "2026-11-22")[0]["status"] == "published"
    assert members(root, "2026-11-22") == {("10", "p1"), ("10", "p2"), ("11", "p2"), ("11", "p3"), ("12", "p4")}


class ExportPublishedTwice(AttemptedTwice, transforms.export.PublishExport):
    """The export's publish step, retried after its first attempt published the files and committed
    the audience's state version."""


def test_an_export_publish_retried_after_it_committed_its_state_stands_as_published(tmp_path, monkeypatch):
    job = write_export_job(tmp_path / "job")
    write_profiles(tmp_path / "job", [*range(10)])
    targets = write_targets(tmp_path / "t.csv", [*range(6)])
    flags = ("--segment-id", SID, "--state")
    expected = export(job, targets, tmp_path / "once", *flags, tmp_path / "state-once")
    with monkeypatch.context() as patched:
        patched.setattr(transforms.export, "PublishExport", ExportPublishedTwice)
        # It failed: '--state: another export committed audience state ... Nothing was published'.
        retried = export(job, targets, tmp_path / "twice", *flags, tmp_path / "state-twice")
    assert retried["added"] == expected["added"] == 6 and retried["state_version"] == 1
    assert export_lines(tmp_path / "twice") == export_lines(tmp_path / "once")
    versions = sorted(p.relative_to(tmp_path / "state-twice") for p in (tmp_path / "state-twice").rglob("*") if p.is_file())
    assert versions == sorted(p.relative_to(tmp_path / "state-once") for p in (tmp_path / "state-once").rglob("*")
                              if p.is_file())
    assert not list((tmp_path / "state-twice").rglob("_PENDING"))


class CacheSavedTwice(AttemptedTwice, PublishKeyCache):
    """The step saving the profile-key cache after the publish (fused with it on Dataflow), retried
    after its first attempt moved the run's parts into the cache and wrote its manifest."""


def test_a_key_cache_save_retried_after_it_saved_the_cache_leaves_the_run_published_and_the_cache_used(
        tmp_path, monkeypatch):
    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-21", "full", [f"{V[1]} 10", f"{V[2]} 10,11"])
    dump(tmp_path, "2026-11-22", "iter", [f"{V[3]} 11"])
    with monkeypatch.context() as patched:
        patched.setattr(import_audience, "PublishKeyCache", CacheSavedTwice)
        # It failed (exit 1): '...: the outputs are published, but the profile-key cache could not be saved'.
        assert run(config, root, "--date", "2026-11-21")[0]["status"] == "published"
    cache = json.loads((root / "_key_cache" / "MANIFEST.json").read_text())
    assert [p["rows"] for p in cache["parts"]] == [4]
    assert sorted(p.name for p in (root / "_key_cache").glob("part-*")) == [p["file"] for p in cache["parts"]]
    TALLY.reset()
    assert run(config, root, "--date", "2026-11-22")[0]["status"] == "published"
    assert TALLY.snapshot().get("profile_rows_keyed_from_cache", 0) == 4  # every profile's keys from the cache
    assert members(root, "2026-11-22") == {("10", "p1"), ("10", "p2"), ("11", "p2"), ("11", "p3")}
