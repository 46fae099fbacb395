"""Incremental sync: tonight's audience = the previous night's, minus tonight's removals, plus
tonight's additions — per data source, unless tonight's dumps for it are ``full``, which replace it.

Whether a dump is ``full`` or ``iter`` is the data source's ``sync_mode`` when configured, else its
file name's (:func:`~transforms.dump_names.sync_mode_of`); a nightly dump whose name does not say is a configuration error.

The merge happens inside the output shuffle (:class:`transforms.write_parts.WriteParts` with ``merge``):
previous rows, additions and removals of a shard meet in one group, keyed by profile (or address).
When the previous night was bucketed as tonight (same bucket count and hash, recorded in its
``_SUCCESS``), each shard's writer reads the previous part of its bucket itself
(:class:`PreviousParts`, checked against its ``_SUCCESS`` entry and its rows' buckets); otherwise
the previous parts are read whole and re-split (:class:`PreviousState`).
An addition and a removal of the same membership on the same night: the addition wins. In the file
audience, tonight's rows for an address in a segment replace the previous ones (its profile_id may
have changed: the newest line about an address says which profile it matches). Previous rows of a
data source no longer in the config are dropped (and reported), and so are previous memberships of
profiles no longer in tonight's extract (the profile stage sends the writers tonight's ids,
tagged ``PROFILE_IDS``); the file audience's rows are addresses, kept whatever their profile.

What may run, and what a night is checked against before it is published: :mod:`transforms.night_guard`.
"""
from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import count_by
from transforms.config import JobConfig
from transforms.dump_listing import dump_paths
from transforms.dump_names import sync_mode_of
from transforms.errors import ConfigError, RunFailed
from transforms.outcomes import Metric, count
from transforms.publish import SUCCESS
from transforms.stable_hash import bucket_of
from transforms.storage import glob, join_path, open_for_arrow
from transforms.write_parts import ADD, PREVIOUS, PROFILE_IDS, PROFILE_IDS_SCHEMA, part_name

REMOVE = "remove"


class ReadParquetFolder(beam.DoFn):
    """A published output folder of Parquet parts -> ``(tag, table)`` per part (no file: nothing).
    Each part must be one its partition's ``_SUCCESS`` lists, with the bytes (sha256) and rows it
    lists (rows only where it records the bucketing), and every listed part must be there: otherwise
    the run fails naming the part
    (a missing part would silently drop its rows). With ``schema``, a nullable column a part lacks
    (an output that gained it since that night) is added as nulls.

    With ``cfg``, the side input ``files`` (the night's ``(data_source, dump path)`` list) names the
    data sources with a full dump tonight: their rows are replaced, so they are not read at all (the
    ``data_source`` column decides; a part holding only such rows costs that column). The merge
    (:func:`merge_state`) drops them anyway, without a count: its result is the same."""

    def __init__(self, tag: str, schema: pa.Schema | None = None, cfg: JobConfig | None = None):
        self._tag = tag
        self._schema = schema
        self._cfg = cfg

    def process(self, folder: str, files=()):
        replaced = full_sources(files, self._cfg) if self._cfg is not None else []
        folder = folder.rstrip("/")
        partition, output = posixpath.split(folder)
        manifest = read_manifest(partition)
        # Releases that did not record the bucketing also wrote some parts' row counts wrong (another
        # output's part of the same name): there the bytes (sha256) are checked, not the rows.
        rows_known = "bucketing" in manifest
        listed = {join_path(partition, f["path"]): (f["rows"] if rows_known else None, f["sha256"])
                  for f in manifest["files"] if f["path"].startswith(output + "/")}
        found = glob(folder + "/*.parquet")
        stray = sorted(set(found) - set(listed))
        if stray:
            raise RunFailed(f"{stray[0]}: a previous night's part its {SUCCESS} does not list; nothing was published")
        missing = sorted(p for p in set(listed) - set(found) if p.endswith(".parquet"))
        if missing:
            raise RunFailed(f"{missing[0]}: the previous night's part is missing; nothing was published")
        for path in found:
            table = _read_part(verified_part(path, *listed[path]), replaced)
            if table is not None and table.num_rows:
                yield self._tag, _with_new_columns(table, self._schema)


def read_manifest(partition: str, night: str = "the previous night") -> dict:
    """A published partition's ``_SUCCESS`` manifest, or a failure naming it (and ``night``, what the
    partition is to the run)."""
    path = join_path(partition, SUCCESS)
    try:
        with FileSystems.open(path) as handle:
            return json.loads(handle.read())
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise RunFailed(f"{path}: cannot read {night}'s manifest ({type(exc).__name__})") from None


def verified_part(path: str, rows: int | None, sha256: str) -> pq.ParquetFile:
    """A previous night's part, which must be the bytes (sha256) and rows (unless None) its
    ``_SUCCESS`` entry names: otherwise the run fails naming it (a damaged or replaced partition)."""
    try:
        with FileSystems.open(path) as handle:
            data = handle.read()
    except Exception as exc:  # noqa: BLE001 - one line naming the part
        raise RunFailed(f"{path}: cannot read the previous night's part ({type(exc).__name__})") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise RunFailed(f"{path}: the previous night's part differs from its {SUCCESS} entry (damaged or replaced); "
                        "nothing was published")
    part = pq.ParquetFile(pa.BufferReader(data))
    if rows is not None and part.metadata.num_rows != rows:
        raise RunFailed(f"{path}: the previous night's part has {part.metadata.num_rows} rows, its {SUCCESS} says "
                        f"{rows}; nothing was published")
    return part


def _read_part(part: pq.ParquetFile, replaced: list[str]) -> pa.Table | None:
    """A previous part's rows, less those of the ``replaced`` data sources (None: none left)."""
    if not replaced:
        return part.read()
    sources = part.read(columns=["data_source"])["data_source"]
    keep = pc.invert(pc.is_in(sources, value_set=pa.array(replaced, pa.string())))
    if not pc.any(keep).as_py():
        return None
    table = part.read()
    return table if pc.all(keep).as_py() else table.filter(keep)


def _with_new_columns(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    for field in schema or []:
        if field.name not in table.column_names and field.nullable:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


class PreviousState(beam.PTransform):
    """The previous partition's rows of one output, tagged ``previous`` (empty without a previous
    night), without the rows of data sources whose dump tonight (``files``: the night's
    ``(data_source, dump path)`` list) is full."""

    def __init__(self, folder: str | None, schema: pa.Schema, cfg: JobConfig, files: beam.PCollection):
        super().__init__()
        self._folder = folder
        self._schema = schema
        self._cfg, self._files = cfg, files

    def expand(self, root):
        return (
            root
            | "PreviousFolder" >> beam.Create([self._folder] if self._folder else [])
            | "ReadPrevious" >> beam.ParDo(ReadParquetFolder(PREVIOUS, self._schema, self._cfg),
                                           beam.pvalue.AsList(self._files))
        )


def bucketing_identity(buckets: int) -> dict:
    """What decides which part a row is written to: the bucket count and a digest of the stable
    hash of fixed probe values. A night records it in its ``_SUCCESS``; the next night reads the
    previous parts shard by shard (:class:`PreviousParts`) only when its own identity is the same."""
    probe = pa.array(["", "a", "p1", "profile-0000001", "x@example.org", "+33612345678", "é" * 40])
    return {"buckets": buckets, "hash": hashlib.sha256(bucket_of(probe, 1 << 62).tobytes()).hexdigest()[:16]}


@dataclass(frozen=True)
class PreviousParts:
    """The previous partition's parts of one output, by bucket (``bucket -> (path, rows, sha256)``,
    from its ``_SUCCESS``): the writer of a bucket reads that bucket's part itself, so the previous
    rows are neither read in one place, re-split nor carried through the runner's Flatten (which
    the local runner materializes: the rows were held twice). Built by :func:`previous_parts`."""

    parts: dict
    cfg: JobConfig
    TAG = PREVIOUS

    def buckets(self) -> list[int]:
        return sorted(self.parts)

    def read(self, bucket: int, buckets: int, bucket_by: str, schema: pa.Schema, files: list) -> pa.Table | None:
        """Bucket ``bucket``'s previous rows less those of data sources with a full dump tonight
        (None: none). The part must be the bytes its ``_SUCCESS`` entry names (sha256 and rows) and
        every row must hash to this bucket: otherwise the run fails naming the part (a damaged
        partition, or rows bucketed otherwise: a merge by shard would miss their removals)."""
        if bucket not in self.parts:
            return None
        path, rows, sha256 = self.parts[bucket]
        table = _read_part(verified_part(path, rows, sha256), full_sources(files, self.cfg))
        if table is None or not table.num_rows:
            return None
        if (bucket_of(table[bucket_by], buckets) != bucket).any():
            raise RunFailed(f"{path}: the previous night's part holds rows of other shards (rows bucketed otherwise); "
                            "nothing was published")
        return _with_new_columns(table, schema)


def previous_parts(partition: str, outputs: list[str], cfg: JobConfig) -> dict[str, PreviousParts]:
    """Per output, its :class:`PreviousParts` when the previous ``partition`` was bucketed as tonight
    (its ``_SUCCESS`` records :func:`bucketing_identity`, and each of the output's parts with rows
    is ``part-BBBBB-of-NNNNN`` for tonight's bucket count); outputs left out are read whole and
    re-split (:class:`PreviousState`). Read at launch."""
    manifest = read_manifest(partition)
    if manifest.get("bucketing") != bucketing_identity(cfg.buckets):
        return {}
    bucket_of_name = {part_name(bucket, cfg.buckets): bucket for bucket in range(cfg.buckets)}  # as the writers name them
    found = {}
    for output in outputs:
        entries = [f for f in manifest["files"] if f["path"].startswith(output + "/")]
        by_bucket = {}
        for entry in entries:
            bucket = bucket_of_name.get(entry["path"][len(output) + 1:])
            if bucket is None:
                if entry["rows"]:
                    break  # a part with rows named otherwise: read whole
                continue  # an empty output's empty part
            by_bucket[bucket] = (join_path(partition, entry["path"]), entry["rows"], entry["sha256"])
        else:
            found[output] = PreviousParts(by_bucket, cfg)
    return found


def check_file_audience_columns(partition: str, cfg: JobConfig, files: list, previous_sources: set,
                                allow_gap: bool) -> None:
    """The previous ``partition``'s file audience, carried tonight into a data source keeping one (in
    ``previous_sources``, no full dump among ``files``), must have been written by a release keeping every
    address: before ef9b551 (2026-12-02) it held only the addresses matching no profile, in parts without a
    ``profile_id`` column, and carried so the addresses that matched would be missing. Refused
    (ConfigError) naming a part, unless ``allow_gap`` (carried as it is, the column read as nulls)."""
    full = set(full_sources(files, cfg))
    carried = sorted(ds.name for ds in cfg.data_sources
                     if ds.keeps_file_audience and ds.name in previous_sources and ds.name not in full)
    if allow_gap or not carried:
        return
    parts = sorted(f["path"] for f in read_manifest(partition)["files"]
                   if f["path"].startswith("file_audience/") and f["path"].endswith(".parquet"))
    if not parts:
        return
    path = join_path(partition, parts[0])  # (one release wrote them all)
    try:
        with open_for_arrow(path) as handle:
            names = pq.ParquetFile(handle).schema_arrow.names
    except Exception as exc:  # noqa: BLE001 - one line naming the part
        raise RunFailed(f"{path}: cannot read the previous night's part ({type(exc).__name__})") from None
    if "profile_id" not in names:
        raise ConfigError(f"data source '{carried[0]}': {path} has no profile_id column: written by a release before "
                          "2026-12-02, whose file audience held only the addresses matching no profile; carried, the "
                          "addresses that matched would be missing from its file audience; deliver a full dump to "
                          "rebuild it, or --allow-gap to carry it as it is")


def unnamed_dump_error(cfg: JobConfig, name: str, path: str) -> ConfigError:
    index = [ds.name for ds in cfg.data_sources].index(name)
    return ConfigError(f"{path}: the file name does not say whether the dump is full or iter; "
                       f"set data_sources[{index}].sync_mode (full or iter) for '{name}'")


def check_sync_modes(cfg: JobConfig, files: list) -> None:
    """Nightly preflight: every dump's sync mode is known (configured, or in its file name), and no
    data source has both full and iter dumps tonight; ``files``: :func:`tonight_files`."""
    problems = [str(unnamed_dump_error(cfg, name, path))
                for name, path in files if sync_mode_of(cfg.data_source(name), path) is None]
    modes: dict[str, set] = {}
    for name, path in files:
        modes.setdefault(name, set()).add(sync_mode_of(cfg.data_source(name), path))
    # A full dump is the whole audience and an iter dump changes it: in one night, which applies
    # over which would depend on delivery order, which the night does not follow. Refused.
    problems += [f"data source '{name}': both full and iter dumps tonight; deliver one kind a night (a full dump "
                 "is the whole audience), or set its sync_mode" for name, found in modes.items()
                 if {"full", "iter"} <= found]
    if problems:
        raise ConfigError("\n".join(problems))


def tonight_files(cfg: JobConfig) -> list[tuple[str, str]]:
    """The night's ``(data_source, dump path)`` list as it stands now (the launch's view; the
    pipeline lists the files again when it runs)."""
    return [(ds.name, path) for ds in cfg.data_sources for path in dump_paths(ds.segments, missing_ok=True)]


def full_sources(files: list, cfg: JobConfig) -> list[str]:
    """Data sources with a ``full`` dump tonight (their previous state is replaced, not updated)."""
    return sorted({name for name, path in files if sync_mode_of(cfg.data_source(name), path) == "full"})


def _anti_join(kept: pa.Table, other: pa.Table, key_columns: list[str], schema: pa.Schema) -> tuple[pa.Table, list]:
    """The rows of ``kept`` whose key is not in ``other``, and how many went per data source."""
    remaining = kept.join(other.select(key_columns), keys=key_columns, join_type="left anti")
    after = dict(count_by(remaining, ["data_source"]))
    gone = [(ds, n - after.get((ds,), 0)) for (ds,), n in count_by(kept, ["data_source"]) if n != after.get((ds,), 0)]
    return remaining.select(schema.names), gone


def merge_state(key_columns: list[str], label: str, cfg: JobConfig, replace: bool = False, profiles: bool = False,
                kept_by: list[str] | None = None):
    """A ``WriteParts`` merge: ``(previous - removals) + additions`` on ``key_columns``; previous
    rows of data sources with a full dump tonight are replaced, those of data sources no longer in
    the config dropped (its side input: the night's ``(data_source, dump path)`` list), and, with
    ``kept_by`` (the data sources whose rows the output holds, as the file audience's keep one), the
    previous rows of the other configured ones removed (a source set to force_reconciliation). With
    ``replace``, previous rows whose key is among tonight's additions go too (the additions supersede
    them). With ``profiles`` (memberships), the shard's tables tagged ``PROFILE_IDS`` are tonight's
    profile ids of its bucket (none: no profile of tonight's extract is in it): a previous row whose
    ``profile_id`` is not among them is dropped, its profile having left the extract. Counts what it
    carried over, removed, replaced, dropped with its data source and dropped with its profile: each
    previous row of a configured data source without a full dump tonight is one of carried, removed,
    replaced or profile_left."""
    configured = [ds.name for ds in cfg.data_sources]

    def merge(tables: dict[str, pa.Table], files: list):
        full = full_sources(files, cfg)
        schema = next(t for tag, t in tables.items() if tag != PROFILE_IDS).schema
        previous = tables.get(PREVIOUS, schema.empty_table())
        additions = tables.get(ADD, schema.empty_table())
        removals = tables.get(REMOVE, schema.empty_table())
        unknown = pc.invert(pc.is_in(previous["data_source"], value_set=pa.array(configured, pa.string())))
        counts = [count(Metric.DROPPED, n, ds, label) for (ds,), n in count_by(previous.filter(unknown), ["data_source"])]
        kept = previous.filter(pc.invert(pc.is_in(previous["data_source"], value_set=pa.array(full, pa.string()))))
        kept = kept.filter(pc.is_in(kept["data_source"], value_set=pa.array(configured, pa.string())))
        if kept_by is not None and kept.num_rows:
            held = pc.is_in(kept["data_source"], value_set=pa.array(kept_by, pa.string()))
            counts += [count(Metric.REMOVED, n, ds, label) for (ds,), n in count_by(kept.filter(pc.invert(held)), ["data_source"])]
            kept = kept.filter(held)
        if profiles and kept.num_rows:
            # Tonight's additions are of tonight's profiles, and a removal names one: only previous rows can be of a
            # profile gone. (The ids are distinct within each extract batch only; is_in's set takes them as they come.)
            ids = tables.get(PROFILE_IDS, PROFILE_IDS_SCHEMA.empty_table())["profile_id"].combine_chunks()
            present = pc.is_in(kept["profile_id"], value_set=ids)
            gone = kept.filter(pc.invert(present))
            counts += [count(Metric.PROFILE_LEFT, n, ds, label) for (ds,), n in count_by(gone, ["data_source"])]
            kept = kept.filter(present) if gone.num_rows else kept
        if kept.num_rows and removals.num_rows:
            kept, gone = _anti_join(kept, removals, key_columns, schema)
            counts += [count(Metric.REMOVED, n, ds, label) for ds, n in gone]
        if replace and kept.num_rows and additions.num_rows:
            kept, gone = _anti_join(kept, additions, key_columns, schema)
            counts += [count(Metric.REPLACED, n, ds, label) for ds, n in gone]
        counts += [count(Metric.CARRIED, n, ds, label) for (ds,), n in count_by(kept, ["data_source"])]
        return pa.concat_tables([kept.cast(schema), additions]), counts

    return merge
