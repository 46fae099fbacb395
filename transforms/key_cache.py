"""Profile-key cache: the previous runs' profile keys, reused for the profiles that did not change.

A profile extract changes by a few percent a night, yet every night normalized and hashed every
profile. The cache keeps, per profile row, each data source's binary join keys and their 64-bit
hashes (what the Bloom filter and the shards use), found by a **row hash**: DuckDB's 64-bit hash of
the profile id and every value the keys are computed from. A row whose id and values hash as in the
cache (and whose id's own hash agrees too) takes the cached keys; every other row (changed, added)
is computed and added to the cache, and rows that are gone are simply never asked for. Only the keys
that pass tonight's Bloom filter are read from the cache (:mod:`transforms.key_cache_rows`), so an
unchanged profile costs a hash and a lookup. Outputs are byte-identical with and without the cache:
a row's keys are the same bytes in the same order (tested).

Never a wrong key:

* Each cached column is named by a digest of what decides its keys (:func:`source_identity`:
  column, kind, normalization profile, digest encoding, hash algorithm, case folding, default
  region), and the cache is made by
  one :func:`code_identity` (a digest of the code that computes keys, and the versions of Arrow,
  DuckDB, phonenumbers and Python with its Unicode data): another code, another column set or
  other hashed columns, and the whole cache is recomputed (a change of rules, of a library or of
  Python's minor version invalidates it).
* Parts are checked against the manifest's digest (xxh3-128 of the file: a check of integrity,
  at ~6 GB/s where sha256 reads ~1.3 GB/s) and row count: a missing, truncated or corrupt part (or
  manifest) means a full recompute, never a partial read. The check runs in a thread while the
  first batches are keyed; their outputs wait for it (the profile reader keeps them in flight),
  and a part that fails it has them keyed again without the cache.
* A row is taken from the cache only when its row hash and its id check (32 bits of another hash
  of the id) both agree. Two different profiles with the same row hash (a 64-bit collision: ~1e-6
  per night at 10M profiles) are told apart by their ids' checks, and both dropped from the
  indexes that search rows; a changed value that hashes like the old one is a 2**-64 event per
  changed profile.

Finding a row (:mod:`transforms.key_cache_index`): a night's extract is usually read in the order
it was cached, so a batch's rows are compared in place with runs of cached rows (a slice compared,
not a search a row), the rows later nights computed are searched in a small index, and an index of
every row is built only for an extract read in another order. A row not found is computed: slower,
never wrong.

Layout: ``DIR/MANIFEST.json`` and ``DIR/part-*.arrow`` (Arrow IPC, one record batch per profile
batch). A run appends one part per extract file with the rows it computed; when the parts hold
more than ``MAX_DEAD_SHARE`` rows of profiles that changed or left, or the parts of ``MAX_RUNS``
runs (counted in runs, not parts: an extract of many files adds many a night), the run rewrites the
cache whole (and computes every key that night). The nightly job uses
``ROOT/_key_cache``. A run writes its parts to ``DIR/_incoming/<run>/``; they join the cache only
after the run published its outputs (:class:`transforms.key_cache_publish.PublishKeyCache`, the manifest last), so a failed run
leaves the cache as it was. The workers that key profiles read the cache themselves (Dataflow: from
GCS), once per bundle.
"""
from __future__ import annotations

import hashlib
import json
import logging
import mmap
import os
import posixpath
import sys
import unicodedata
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import xxhash
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import plain_array
from transforms.config import DataSourceConfig, JobConfig
from transforms.digests import duckdb_connection
from transforms.errors import RunFailed
from transforms.key_cache_index import HASH_SUFFIX, ID_CHECK, ROW_HASH, LoadedCache
from transforms.output_lock import write_error
from transforms.profiles import KEY_PREFIX
from transforms.storage import join_path

LOG = logging.getLogger("audience_sync.key_cache")
CACHE_FORMAT = 2  # 2: parts checked by their xxh3-128 digest (1: sha256)
PART_DIGEST = "xxh3_128"  # a part's manifest entry: its digest under this name
MANIFEST = "MANIFEST.json"
INCOMING = "_incoming"  # DIR/_incoming/<run>/: a run's parts until it published
NIGHTLY_CACHE = "_key_cache"  # a nightly's: ROOT/_key_cache (every night's start clears its _incoming)
MAX_RUNS = 16  # runs whose parts the cache holds before it is rewritten whole
RUNS = "runs"  # the manifest's count of them (a manifest without it: one run a part)
MAX_DEAD_SHARE = 0.25
# The modules whose code decides a profile's keys: a change in any of them invalidates the cache.
KEY_MODULES = ("keys", "normalize", "digests", "phones", "phone_metadata", "arrow_utils", "stable_hash", "profiles",
               "profile_columns", "key_cache", "key_cache_index", "key_cache_rows")
KEY_LIBRARIES = ("pyarrow", "duckdb", "phonenumbers")


def value_column(ds: DataSourceConfig, cfg: JobConfig) -> str:
    """The standardized profile column a data source's keys are computed from."""
    return "visitor_ids" if ds.id_type == "visitor" else KEY_PREFIX + cfg.profiles.column_for(ds.match_on)


def source_identity(ds: DataSourceConfig, cfg: JobConfig) -> dict:
    """Everything that decides a data source's profile keys, besides the code."""
    return {"column": value_column(ds, cfg), "id_type": ds.id_type, "declared": ds.declared,
            "decrypts": ds.decrypts, "key_kind": ds.key_kind, "normalization": ds.normalization,
            "digest": ds.digest_encoding, "region": cfg.profile_region_for(ds),
            "algorithm": ds.hash_algorithm, "ignore_case": ds.ignore_case}


def column_name(ds: DataSourceConfig, cfg: JobConfig) -> str:
    """The cached column holding a data source's keys, named by a digest of its
    :func:`source_identity`: data sources whose keys are decided alike share one."""
    return "k_" + _digest(source_identity(ds, cfg))[:16]


def _digest(doc) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def code_identity() -> dict:
    """The cache format, a digest of the key modules' source, the libraries' versions and Python's
    (with its Unicode data), as this process runs them (on a worker: the code that computes the keys)."""
    here = Path(__file__).resolve().parent
    code = hashlib.sha256()
    for name in KEY_MODULES:
        code.update(name.encode() + b"\0" + (here / f"{name}.py").read_bytes())
    libraries = {}
    for name in KEY_LIBRARIES:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libraries[name] = None
    # Python's minor version and Unicode data decide str.lower and unicodedata's answers, which the
    # normalization rules use: a worker on another Python may key some values otherwise.
    python = {"version": ".".join(map(str, sys.version_info[:2])), "unicode": unicodedata.unidata_version}
    return {"format": CACHE_FORMAT, "code": code.hexdigest(), "libraries": libraries, "python": python}


@dataclass(frozen=True)
class CacheLayout:
    """Which cached column each data source reads (``sources``: data source -> column name; data
    sources with the same rules on the same column share one), what each column holds
    (``columns``: name -> identity), and the profile columns the row hash covers (``values``)."""

    sources: dict[str, str]
    columns: dict[str, dict]
    values: tuple[str, ...]

    @classmethod
    def of(cls, cfg: JobConfig) -> "CacheLayout":
        sources, columns = {}, {}
        for ds in cfg.data_sources:
            name = column_name(ds, cfg)
            sources[ds.name], columns[name] = name, source_identity(ds, cfg)
        return cls(sources, columns, tuple(sorted({c["column"] for c in columns.values()})))

    def schema(self) -> pa.Schema:
        fields = [(ROW_HASH, pa.uint64()), (ID_CHECK, pa.uint32())]
        for name, identity in sorted(self.columns.items()):
            listed = identity["id_type"] == "visitor"
            fields.append((name, pa.list_(pa.binary()) if listed else pa.binary()))
            fields.append((name + HASH_SUFFIX, pa.list_(pa.uint64()) if listed else pa.uint64()))
        return pa.schema(fields)

    def doc(self, code: dict) -> dict:
        return {"code": code, "values": list(self.values), "columns": self.columns}


@dataclass(frozen=True)
class KeyCacheDirs:
    """``root``: the published cache (read, then updated on success); ``staging``: this run's parts."""

    root: str
    staging: str


def cache_dirs(root: str, run_dir: str) -> KeyCacheDirs:
    """The cache under ``root``; this run's parts staged beside it, named after the run's folder."""
    root = root.rstrip("/")
    return KeyCacheDirs(root=root, staging=join_path(root, INCOMING, posixpath.basename(run_dir.rstrip("/"))))


@contextmanager
def staged(dirs: KeyCacheDirs | None):
    """Around a run: its staged parts are removed when it fails (publishing moves them otherwise)."""
    try:
        yield
    except BaseException:
        if dirs is not None:
            remove_folder(dirs.staging)
        raise


def remove_folder(folder: str) -> None:
    from transforms.publish_journal import remove_run_dir

    remove_run_dir(folder)


def row_hashes(profiles: pa.Table, values: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per row: DuckDB's 64-bit hash of the profile id, the values (a list with its length: lists
    that differ in any entry, null or empty hash apart; tested) and 32 bits of the id's own hash."""
    cols, args = {"id": plain_array(profiles["profile_id"])}, ["id"]
    for i, name in enumerate(values):
        cols[f"v{i}"] = plain_array(profiles[name])
        args.append(f"v{i}, len(v{i})" if pa.types.is_list(cols[f"v{i}"].type) else f"v{i}")
    con = duckdb_connection()
    con.register("audience_sync_rows", pa.table(cols))
    try:
        out = con.sql(f"SELECT hash({', '.join(args)}) AS rh, hash(id) AS ih FROM audience_sync_rows").fetchnumpy()
    finally:
        con.unregister("audience_sync_rows")
    return np.asarray(out["rh"], np.uint64), (np.asarray(out["ih"], np.uint64) >> np.uint64(32)).astype(np.uint32)


def must_rewrite(cache: LoadedCache) -> bool:
    """The parts of too many runs, or too many rows of profiles gone or changed: time to rewrite it whole."""
    live = cache.manifest.get("live_rows", cache.total_rows)
    return _runs(cache.manifest) >= MAX_RUNS or cache.total_rows - live > MAX_DEAD_SHARE * cache.total_rows


def _runs(manifest: dict) -> int:
    return manifest.get(RUNS, len(manifest["parts"]))


def base_of(cache: LoadedCache | None) -> dict:
    """What a run's staged parts extend: the published parts (``base``; none when the run rewrites
    the cache) and the runs the cache then holds (``runs``, this one included)."""
    if cache is None or must_rewrite(cache):
        return {"base": [], RUNS: 1}
    return {"base": cache.manifest["parts"], RUNS: _runs(cache.manifest) + 1}


def load_cache(root: str, layout: CacheLayout, code: dict, wait: bool = True) -> LoadedCache | None:
    """The cache under ``root`` if it is complete, intact and made by this code for ``layout``;
    None otherwise (logged with the reason when a cache was there): compute every key. The parts'
    digests are checked in a thread; with ``wait=False`` the cache is returned before that check is
    over, and the caller must see :meth:`LoadedCache.intact` say True before anything read from
    it leaves."""
    try:
        path = join_path(root, MANIFEST)
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as handle:
            manifest = json.loads(handle.read())
        if manifest != {**manifest, **layout.doc(code)} or manifest.get("format") != CACHE_FORMAT:
            LOG.warning("key cache %s not used: made by other code, libraries or rules; every profile key is computed", root)
            return None
        checker, cache = ThreadPoolExecutor(max_workers=1), None  # the parts' digests, while the cache is used
        try:
            parts = [_read_part(root, part, checker) for part in manifest["parts"]]
            tables, maps = [t for t, _, _ in parts], tuple(m for _, m, _ in parts if m is not None)
            cache = LoadedCache(pa.concat_tables(tables) if tables else layout.schema().empty_table(), manifest, layout,
                                maps, tuple(intact for _, _, intact in parts))
        finally:  # the check goes on in its thread; a load that failed drops it
            checker.shutdown(wait=False, cancel_futures=cache is None)
        if wait and not cache.intact():
            raise ValueError("a part differs from its manifest entry")
        return cache
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with a cache, the answer is to recompute
        not_used(root, type(exc).__name__)
        return None


def not_used(root: str, reason: str) -> None:
    """Log that the cache under ``root`` is not used, and why (a kind of problem, never its content)."""
    LOG.warning("key cache %s not used (%s); every profile key is computed", root, reason)


def _read_part(root: str, part: dict, checker: ThreadPoolExecutor) -> tuple[pa.Table, mmap.mmap | None, Future]:
    """A part, its memory map, and whether it matches its manifest entry's digest (a future:
    ``checker`` hashes it while the caller builds on it, and the caller drops everything if it does
    not match). Local parts are memory-mapped (only the keys a run reads become resident, until
    :meth:`LoadedCache.release_pages`) and hashed from the file, not through the map (those pages
    would count as this process's memory); remote ones are read into memory (no map). The row
    count is checked here."""
    path = join_path(root, posixpath.basename(part["file"]))
    if "://" in path:
        with FileSystems.open(path) as handle:
            data = handle.read()
        mapped, source = None, pa.py_buffer(data)
        intact = checker.submit(lambda: xxhash.xxh3_128(data).hexdigest() == part[PART_DIGEST])
    else:
        with open(path, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            mapped_file = os.fstat(handle.fileno())
        source = pa.py_buffer(mapped)
        # The path still names the mapped file, before and after its bytes are hashed: a part
        # replaced meanwhile (a damaged one, by a run publishing it again) vouches for nothing mapped.
        intact = checker.submit(lambda: _same_file(path, mapped_file) and _file_digest(path) == part[PART_DIGEST]
                                and _same_file(path, mapped_file))
    table = pa.ipc.open_file(pa.BufferReader(source)).read_all()
    if table.num_rows != part["rows"]:
        raise ValueError("a part has other rows than its manifest entry")
    return table, mapped, intact


def _same_file(path: str, mapped: os.stat_result) -> bool:
    now = os.stat(path)
    return (now.st_dev, now.st_ino) == (mapped.st_dev, mapped.st_ino)


def _file_digest(path: str) -> str:
    digest, buffer = xxhash.xxh3_128(), bytearray(1 << 20)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while size := handle.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


class _HashingSink:
    """A write-only file that hashes what goes through it (the part's digest for the manifest)."""

    def __init__(self, raw):
        self._raw, self.digest, self.closed = raw, xxhash.xxh3_128(), False

    def write(self, data) -> int:
        self.digest.update(data)
        return self._raw.write(data)

    def writable(self) -> bool:
        return True

    def flush(self):
        self._raw.flush()

    def close(self):
        if not self.closed:
            self._raw.close()
            self.closed = True


class CacheWriter:
    """This run's part for one profile extract: each profile batch's new rows as a record batch."""

    def __init__(self, staging: str, extract: str, schema: pa.Schema):
        self.path = join_path(staging, f"part-{hashlib.sha256(extract.encode()).hexdigest()[:16]}.arrow")
        self.schema, self.rows = schema, 0
        with self._one_line():
            self._sink = _HashingSink(FileSystems.create(self.path, mime_type="application/octet-stream"))
            self._writer = pa.ipc.new_file(self._sink, schema)

    @contextmanager
    def _one_line(self):
        """A full disk, a read-only folder: one line naming the part (it was Beam's traceback, then no file)."""
        try:
            yield
        except OSError as exc:
            raise RunFailed(f"{write_error(self.path, exc)} (--no-key-cache, or an import without --key-cache, "
                            "computes every key)") from None

    def write(self, hashes: np.ndarray, checks: np.ndarray, columns: dict[str, pa.Array]) -> None:
        """Rows (row hash, id check, each column and its ``.hash``) in the schema's order."""
        arrays = [pa.array(hashes, pa.uint64()), pa.array(checks, pa.uint32())] + [columns[n] for n in self.schema.names[2:]]
        with self._one_line():
            self._writer.write_batch(pa.record_batch(arrays, schema=self.schema))
        self.rows += len(hashes)

    def close(self) -> dict:
        with self._one_line():
            self._writer.close()
            self._sink.close()
        return {"file": self.path, "rows": self.rows, PART_DIGEST: self._sink.digest.hexdigest()}
