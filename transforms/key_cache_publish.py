"""The profile-key cache's save, after the run published its outputs: the run's staged parts join the
cache, then its manifest (the commit point). Apart from :mod:`transforms.key_cache` because the save
decides no key: that module's code identifies the cache (``KEY_MODULES``), and a change to the save
alone need not make the next run compute every key again."""
from __future__ import annotations

import json
import posixpath
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.errors import RunFailed
from transforms.key_cache import CACHE_FORMAT, MANIFEST, PART_DIGEST, RUNS, KeyCacheDirs, remove_folder
from transforms.storage import glob, join_path


class PublishKeyCache(beam.DoFn):
    """After the run published its outputs (the main input is its report): the run's parts join the
    cache under ``root`` (moved in under content-addressed names), then the manifest (the commit
    point), then the parts no manifest names any more are deleted. Each staged part says which
    published parts it extends (:func:`base_of`)."""

    def __init__(self, dirs: KeyCacheDirs):
        self._dirs = dirs

    def process(self, _report, parts):
        try:
            self._publish(parts)
        except Exception as exc:  # noqa: BLE001 - after the outputs: say they are published, in one line
            raise RunFailed(f"{self._dirs.root}: the outputs are published, but the profile-key cache could not be "
                            f"saved ({type(exc).__name__}); the next run computes the keys it lacks again") from None

    def _publish(self, parts):
        root = self._dirs.root
        if parts:
            if "://" not in root:
                Path(root).mkdir(parents=True, exist_ok=True)
            entries = list(parts[0]["base"])
            for part in sorted(parts, key=lambda p: p["file"]):
                name = f"part-{part[PART_DIGEST][:24]}.arrow"
                # Moved over a part of that name: the same content, or that content damaged on disk
                # (kept, a damaged part would make every later run compute every key). Not staged but
                # there: moved by an attempt of this step the runner retried (after it, a step failed).
                if FileSystems.exists(part["file"]) or not FileSystems.exists(join_path(root, name)):
                    FileSystems.rename([part["file"]], [join_path(root, name)])
                entries.append({"file": name, "rows": part["rows"], PART_DIGEST: part[PART_DIGEST]})
            doc = {**parts[0]["layout"], "format": CACHE_FORMAT, "parts": entries, RUNS: parts[0][RUNS],
                   "live_rows": sum(p["live_rows"] for p in parts)}
            with FileSystems.create(join_path(root, MANIFEST), mime_type="application/json") as sink:
                sink.write((json.dumps(doc, indent=1, sort_keys=True) + "\n").encode())
            named = {e["file"] for e in entries}
            stale = [p for p in glob(join_path(root, "part-*.arrow"), missing_ok=True) if posixpath.basename(p) not in named]
            if stale:
                FileSystems.delete(stale)
        remove_folder(self._dirs.staging)
