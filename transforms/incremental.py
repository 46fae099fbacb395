"""Incremental sync: tonight's audience = the previous night's, minus tonight's removals, plus
tonight's additions — per data source, unless tonight's dumps for it are ``full``, which replace it.

The merge happens inside the output shuffle (:class:`transforms.publish.WriteParts` with ``merge``):
previous rows, additions and removals of a shard meet in one group, keyed by profile (or address).
An addition and a removal of the same membership on the same night: the addition wins. In the file
audience, tonight's rows for an address in a segment replace the previous ones (its profile_id may
have changed: the newest line about an address says which profile it matches).
"""
from __future__ import annotations

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import count_by
from transforms.dumps import parse_dump_name
from transforms.outcomes import Metric, count
from transforms.publish import ADD
from transforms.storage import glob

PREVIOUS = "previous"
REMOVE = "remove"


class ReadParquetFolder(beam.DoFn):
    """A folder of Parquet parts -> ``(tag, table)`` per part (no file: nothing). With ``schema``, a
    nullable column a part lacks (an output that gained it since that night) is added as nulls."""

    def __init__(self, tag: str, schema: pa.Schema | None = None):
        self._tag = tag
        self._schema = schema

    def process(self, folder: str):
        for path in glob(folder.rstrip("/") + "/*.parquet"):
            with FileSystems.open(path) as handle:
                table = pq.read_table(handle)
            if table.num_rows:
                yield self._tag, _with_new_columns(table, self._schema)


def _with_new_columns(table: pa.Table, schema: pa.Schema | None) -> pa.Table:
    for field in schema or []:
        if field.name not in table.column_names and field.nullable:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


class PreviousState(beam.PTransform):
    """The previous partition's rows of one output, tagged ``previous`` (empty without a previous night)."""

    def __init__(self, folder: str | None, schema: pa.Schema | None = None):
        super().__init__()
        self._folder = folder
        self._schema = schema

    def expand(self, root):
        return (
            root
            | "PreviousFolder" >> beam.Create([self._folder] if self._folder else [])
            | "ReadPrevious" >> beam.ParDo(ReadParquetFolder(PREVIOUS, self._schema))
        )


def full_sources(files: list) -> list[str]:
    """Data sources with a ``full`` dump tonight (their previous state is replaced, not updated)."""
    names = set()
    for data_source, path in files:
        parsed = parse_dump_name(path)
        if parsed is not None and parsed.sync_mode == "full":
            names.add(data_source)
    return sorted(names)


def merge_state(key_columns: list[str], label: str, replace: bool = False):
    """A ``WriteParts`` merge: ``(previous - removals) + additions`` on ``key_columns``, previous
    rows of data sources with a full dump tonight dropped (its side input: the night's
    ``(data_source, dump path)`` list). With ``replace``, previous rows whose key is among tonight's
    additions go too (the additions supersede them). Counts what it carried over and what it removed."""

    def merge(tables: dict[str, pa.Table], files: list):
        full = full_sources(files)
        schema = next(iter(tables.values())).schema
        previous = tables.get(PREVIOUS, schema.empty_table())
        additions = tables.get(ADD, schema.empty_table())
        removals = tables.get(REMOVE, schema.empty_table())
        counts = []
        kept = previous.filter(pc.invert(pc.is_in(previous["data_source"], value_set=pa.array(full, pa.string()))))
        if kept.num_rows and removals.num_rows:
            remaining = kept.join(removals.select(key_columns), keys=key_columns, join_type="left anti")
            before = dict(count_by(kept, ["data_source"]))
            after = dict(count_by(remaining, ["data_source"]))
            counts += [count(Metric.REMOVED, n - after.get((ds,), 0), ds, label) for (ds,), n in before.items()
                       if n != after.get((ds,), 0)]
            kept = remaining.select(schema.names)
        if replace and kept.num_rows and additions.num_rows:
            kept = kept.join(additions.select(key_columns), keys=key_columns, join_type="left anti").select(schema.names)
        counts += [count(Metric.CARRIED, n, ds, label) for (ds,), n in count_by(kept, ["data_source"])]
        return pa.concat_tables([kept.cast(schema), additions]), counts

    return merge
