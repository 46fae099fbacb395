"""A glob's listing enters only the folders it can reach, and finds what Beam's own match finds.

Beam's match is the oracle: every pattern is matched both ways, on a local tree and on the same
tree in the Cloud Storage emulator, and must give the same files (path, size, update time), in the
same order, under the same limit."""
from __future__ import annotations

import os
from unittest import mock

import pytest
from apache_beam.io.filesystems import FileSystems

try:  # tests/ is on sys.path in pytest's default (prepend) import mode
    from gcs_emulator import gcs_emulator, storage_client
except ImportError:  # e.g. --import-mode=importlib, run from the project root
    from tests.gcs_emulator import gcs_emulator, storage_client

from transforms import listing, storage

TREE = [
    "segments/visitors/dump_1.sync.gz", "segments/visitors/dump_2.sync", "segments/visitors/dump_1.info",
    "segments/visitors/notes.txt", "segments/visitors/x.sync.d/part-1.gz", "segments/visitors/x.sync.d/deep/part-2.gz",
    "segments/visitors/archive/2026-11-01/dump_1.sync.gz", "segments/visitors/archive/2026-11-02/dump_1.sync.gz",
    "segments/visitors/ar[ch]/dump_9.sync.gz", "segments/crm/2026-11-21/a.sync.gz", "segments/crm/2026-11-22/b.sync.gz",
    "segments/crm/2026-11-22/old/c.sync.gz", "segments/crm*/d.sync.gz", "segments/visitorsX/e.sync.gz",
    "segments/visitors/dump\\3.sync",  # a '\\' in a name (legal on Linux and in a bucket)
]
PATTERNS = [
    "segments/visitors/*.sync*", "segments/visitors/*", "segments/visitors/", "segments/visitors/dump_[0-9]*.gz",
    "segments/visitors/*.sync*/**", "segments/visitors/**", "segments/*/2026-11-2[12]/*.sync.gz", "segments/*/*",
    "segments/visitors*/*.gz", "segments/crm/*/**.gz", "segments/visitors/ar[[]ch]/*", "segments/crm[*]/*",
    "segments/visitors/*.[iI][nN][fF][oO]", "segments/visitors/dump_?.sync.gz", "segments/visitors/[!d]*",
    "segments/visitors/dump_1.sync.gz", "segments/nowhere/*", "segments/visitors/x.sync.d", "segments/[a-z]*/*.gz",
    "segments/visitors/x.sync.d/*/*.gz", "segments/vis**/part-*.gz",
    "segments/visitors/x[!/]sync.d/*.gz",  # a set that is not '/' but holds one: no component of its own
    "segments/visitors/dump*\\",  # Beam matches a pattern ending in a backslash as one ending in "\\*"
]


def _as_beam_lists(pattern, limit=None):
    return [(m.path, m.size_in_bytes, m.last_updated_in_seconds)
            for m in FileSystems.match([pattern], limits=[limit])[0].metadata_list]


def _as_ours(pattern, limit=None):
    return [(m.path, m.size_in_bytes, m.last_updated_in_seconds) for m in storage.matched(pattern, limit)]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("listing")
    for n, name in enumerate(TREE):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x" * n)
    return root


@pytest.mark.parametrize("pattern", PATTERNS)
def test_a_local_listing_finds_what_beams_match_finds(tree, pattern):
    assert _as_ours(f"{tree}/{pattern}") == _as_beam_lists(f"{tree}/{pattern}")
    assert _as_ours(f"{tree}/{pattern}", 1) == _as_beam_lists(f"{tree}/{pattern}", 1)


def test_a_local_listing_enters_no_folder_its_pattern_cannot_reach(tree):
    entered = []
    real_scandir = os.scandir

    def scandir(path="."):
        entered.append(os.path.relpath(os.fsdecode(path), tree))
        return real_scandir(path)

    with mock.patch("os.scandir", scandir):
        files = storage.glob(f"{tree}/segments/visitors/*.sync*")
        folders = storage.glob(f"{tree}/segments/visitors/*.sync*/**")
    assert [os.path.relpath(f, tree) for f in files] == ["segments/visitors/dump_1.sync.gz",
                                                         "segments/visitors/dump_2.sync"]
    assert [os.path.relpath(f, tree) for f in folders] == ["segments/visitors/x.sync.d/deep/part-2.gz",
                                                           "segments/visitors/x.sync.d/part-1.gz"]
    # the dumps' folder for each listing, and x.sync.d and below it for the second; no archive
    assert sorted(entered) == ["segments/visitors", "segments/visitors", "segments/visitors/x.sync.d",
                               "segments/visitors/x.sync.d/deep"]


def test_a_wildcard_that_can_match_a_slash_is_listed_as_beam_lists_it(tree):
    """'?' and a negated set match '/' in Beam's patterns: nothing is left out for them."""
    for pattern in ("segments/visitors/dump_?.sync.gz", "segments/visitors/[!d]*", "segments/visitors?archive/*/*"):
        assert listing._parts(f"{tree}/{pattern}", True) is None
    assert _as_ours(f"{tree}/segments/visitors?archive/*/*") == _as_beam_lists(f"{tree}/segments/visitors?archive/*/*")
    assert len(_as_ours(f"{tree}/segments/visitors?archive/*/*")) == 2


@pytest.fixture(scope="module")
def bucket_tree():
    with gcs_emulator() as handle:
        bucket = storage_client().bucket(handle.bucket)
        many = [f"segments/many/{d:02d}/x.gz" for d in range(listing.MOST_PREFIXES + 1)]
        for n, name in enumerate(TREE + many + ["segments/visitors/folder/"]):  # a console's 'create folder' marker
            bucket.blob(name).upload_from_string(b"x" * n)
        yield f"gs://{handle.bucket}"


def test_a_gcs_listing_finds_what_beams_match_finds_and_lists_no_prefix_it_cannot_reach(bucket_tree):
    for pattern in PATTERNS + ["segments/visitors/folder/", "segments/visitors/fol*/"]:
        assert _as_ours(f"{bucket_tree}/{pattern}") == _as_beam_lists(f"{bucket_tree}/{pattern}"), pattern
        assert _as_ours(f"{bucket_tree}/{pattern}", 1) == _as_beam_lists(f"{bucket_tree}/{pattern}", 1), pattern
    client = FileSystems.get_filesystem(bucket_tree)._gcsIO().client
    listed = []
    real = type(client).list_blobs

    def list_blobs(self, bucket, prefix=None, delimiter=None, **kwargs):
        blobs = real(self, bucket, prefix=prefix, delimiter=delimiter, **kwargs)
        listed.append((prefix, delimiter))
        return blobs

    with mock.patch.object(type(client), "list_blobs", list_blobs):
        assert len(storage.glob(f"{bucket_tree}/segments/visitors/*.sync*/**")) == 2
    assert listed == [("segments/visitors/", "/"), ("segments/visitors/x.sync.d/", None)]


def test_a_gcs_level_with_more_prefixes_to_enter_than_requests_are_worth_is_listed_flat(bucket_tree):
    client = FileSystems.get_filesystem(bucket_tree)._gcsIO().client
    listed = []
    real = type(client).list_blobs

    def list_blobs(self, bucket, prefix=None, delimiter=None, **kwargs):
        listed.append((prefix, delimiter))
        return real(self, bucket, prefix=prefix, delimiter=delimiter, **kwargs)

    with mock.patch.object(type(client), "list_blobs", list_blobs):
        ours = _as_ours(f"{bucket_tree}/segments/many/*/x.gz")
    assert ours == _as_beam_lists(f"{bucket_tree}/segments/many/*/x.gz")
    assert len(ours) == listing.MOST_PREFIXES + 1
    assert listed == [("segments/many/", "/"), ("segments/many/", None)]
