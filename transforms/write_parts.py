"""Deterministic Parquet parts, an output's writers: rows are split by a stable hash into
``buckets`` groups, and each group is de-duplicated, sorted and written to
``part-BBBBB-of-NNNNN.parquet`` under the run's temporary folder (:class:`WriteParts`). The same
input always gives the same files, whatever the runner's bundle order. On a nightly night the
writer of a shard also merges the previous night's rows (``merge``, :mod:`transforms.incremental`).
The run's publish step (:mod:`transforms.publish`) then moves the parts into place.
"""
from __future__ import annotations

from collections import deque
from typing import Iterator, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import concat, concat_promoted, count_by
from transforms.keys import SEGMENT_SET, segment_rows
from transforms.memory import release_free_memory
from transforms.output_lock import write_error
from transforms.outcomes import BundleCounts, Metric, count
from transforms.packed_tables import PackedTable, concat_packed, unpacked
from transforms.parallel import PooledDoFn, in_global_window, windowed
from transforms.row_order import sorted_rows, sorted_segment_rows
from transforms.stable_hash import BucketPieces, split_for_write
from transforms.storage import join_path

ADD = "add"
PREVIOUS = "previous"  # the previous night's rows (nightly merge)
CARRY = "carry"  # a shard whose previous part its writer reads (no rows: a marker)
# Tonight's profile ids of a shard (nightly merge of memberships): not rows of the output, the set
# the merge keeps previous rows of (transforms.incremental.merge_state). A shard with only these
# has nothing to write.
PROFILE_IDS = "profile_ids"
PROFILE_IDS_SCHEMA = pa.schema([("profile_id", pa.string())])
# Rows held back from an output (the file audience's suppressed addresses): tagged WITHHELD[tag],
# the tag they would have had. The writer merges them as it would have merged them (tonight's rows
# replace the previous ones, removals apply), counts what is left once de-duplicated, and writes none.
WITHHELD = {ADD: "withheld_add", PREVIOUS: "withheld_previous"}


def part_name(bucket: int, buckets: int) -> str:
    """The file name of an output's part for ``bucket`` of ``buckets``."""
    return f"part-{bucket:05d}-of-{buckets:05d}.parquet"


EMPTY_PART = part_name(0, 1)


def write_parquet(table: pa.Table, path: str) -> None:
    """Write ``table`` (zstd); a full disk or a read-only folder fails with one line naming ``path``."""
    try:
        with FileSystems.create(path) as sink:
            pq.write_table(table, sink, compression="zstd")
    except OSError as exc:
        raise write_error(path, exc) from None


class _SplitForWrite(beam.DoFn):
    """Tables -> ``(bucket, (tag, rows))``; plain tables are tagged ``add``.

    A bundle's tables of one tag are gathered (up to ``GATHER_ROWS`` rows) and split once: the
    join emits a table per shard, and splitting each into ``buckets`` pieces made shards x buckets
    small elements, each pickled, shuffled and unpickled (most of a small run's write time). A
    table that comes already split for this output (:class:`~transforms.stable_hash.BucketPieces`:
    the join's memberships and file audience, split in its pool) is gathered by bucket as it is;
    a bucket's pieces go on as one table of several chunks. The parts do not change: each is
    sorted and de-duplicated whatever its pieces."""

    GATHER_ROWS = 1 << 20

    def __init__(self, bucket_column: str, buckets: int):
        self._column, self._buckets = bucket_column, buckets

    def start_bundle(self):
        self._gathered: dict[str, tuple[list[pa.Table], dict[int, list[pa.Table]]]] = {}
        self._rows: dict[str, int] = {}

    def process(self, element):
        tag, table = element if isinstance(element, tuple) and not isinstance(element, BucketPieces) else (ADD, element)
        tables, pieces = self._gathered.setdefault(tag, ([], {}))
        if isinstance(table, BucketPieces) and (table.bucket_by, table.buckets) == (self._column, self._buckets):
            for bucket, rows in table.pieces:
                pieces.setdefault(bucket, []).append(rows)
        else:  # a plain table (or one split otherwise: split again)
            tables.append(table.table() if isinstance(table, BucketPieces) else table)
        self._rows[tag] = self._rows.get(tag, 0) + table.num_rows
        if self._rows[tag] >= self.GATHER_ROWS:
            del self._rows[tag]
            yield from self._split(tag, *self._gathered.pop(tag))

    def finish_bundle(self):
        for tag in sorted(self._gathered):
            for out in self._split(tag, *self._gathered[tag]):
                yield in_global_window(out)
        self._gathered, self._rows = {}, {}

    def _split(self, tag: str, tables: list[pa.Table], pieces: dict[int, list[pa.Table]]):
        if tables:
            # Dictionary columns may differ in index width between tables: promoted to a common one,
            # then narrowed again in each piece.
            for bucket, rows in split_for_write(concat_promoted(tables), self._column, self._buckets).pieces:
                pieces.setdefault(bucket, []).append(rows)
        for bucket in sorted(pieces):
            rows = pieces[bucket]
            if all(isinstance(piece, PackedTable) for piece in rows):  # unpacked where the part is written
                yield bucket, (tag, concat_packed(rows))
            else:
                yield bucket, (tag, concat_promoted([unpacked(piece) for piece in rows]))


class _WritePart(PooledDoFn):
    """One shard's tables -> a sorted (deduplicated) Parquet part, plus its counts.

    With ``threads`` > 1, shards of a bundle are sorted and written in a small pool (Arrow's sort
    and Parquet writer run without the GIL), ``threads`` at a time: ``process`` hands a shard over
    and emits the outputs of the oldest finished one; ``finish_bundle`` emits the rest. The files do
    not depend on it, and the outputs (part paths, counts) are only summed or sorted downstream."""

    def __init__(self, spec: "WriteParts"):
        self._name, self._schema, self._sort_by, self._dedupe = spec.name, spec.schema, spec.sort_by, spec.dedupe
        self._run_dir, self._buckets = spec.run_dir, spec.buckets
        self._count_column, self._count_metric = spec.count_column, spec.count_metric
        self._withheld_metric = spec.withheld_metric
        self._merge, self._previous, self._bucket_by = spec.merge, spec.previous, spec.bucket_by
        self._threads = spec.threads

    def start_bundle(self):
        self._pending: deque = deque()
        self._counts = BundleCounts()  # the main output's counts (a part's per segment: thousands), summed over the bundle

    def process(self, element, *side_inputs):
        side_inputs = tuple(list(s) for s in side_inputs)  # read here: pool threads never touch runner state
        if self._pool is None:
            yield from self._parts(self._write(element, side_inputs))
        else:
            self._pending.append(self._pool.submit(self._write, element, side_inputs))
            while len(self._pending) > self._threads:
                yield from self._parts(self._pending.popleft().result())

    def finish_bundle(self):
        while self._pending:
            yield from map(windowed, self._parts(self._pending.popleft().result()))
        yield from self._counts.drain(tag=None)
        release_free_memory()

    def _parts(self, outputs: list) -> Iterator[beam.pvalue.TaggedOutput]:
        """A shard's tagged outputs (its part); its counts join the bundle's."""
        for out in outputs:
            if isinstance(out, beam.pvalue.TaggedOutput):
                yield out
            else:
                self._counts.add(out)

    def _write(self, element, side_inputs) -> list:
        bucket, tagged = element
        by_tag: dict[str, list[pa.Table]] = {}
        for tag, rows in tagged:
            if tag != CARRY:
                by_tag.setdefault(tag, []).append(unpacked(rows))
        if self._previous is not None:
            previous = self._previous.read(bucket, self._buckets, self._bucket_by, self._schema, *side_inputs)
            if previous is not None:
                by_tag.setdefault(self._previous.TAG, []).append(previous)
        if not by_tag.keys() - {PROFILE_IDS}:
            return []  # no previous rows left, none tonight (profile ids are no rows): no part, as with no shard
        out = []
        table = self._sorted_sets(by_tag)
        if table is None:
            # The join's memberships and file audience come as (pair, segment set) rows: one per segment here.
            by_tag = {tag: [segment_rows(t) for t in tables] for tag, tables in by_tag.items()}
            withheld = {tag: by_tag.pop(held) for tag, held in WITHHELD.items() if held in by_tag}
            if withheld and self._withheld_metric is not None:
                # The held-back rows stand for the output's rows of their tag; the other tags apply to them.
                held, _ = self._merged({**{t: v for t, v in by_tag.items() if t not in WITHHELD}, **withheld}, side_inputs)
                for (data_source,), n in count_by(sorted_rows(held, self._sort_by, dedupe=True), ["data_source"]):
                    out.append(count(self._withheld_metric, n, data_source))
            if not by_tag:
                return out  # only held-back rows: no part (as without them)
            table, merge_counts = self._merged(by_tag, side_inputs)
            out.extend(merge_counts)
            table = sorted_rows(table, self._sort_by, dedupe=self._dedupe)
        path = join_path(self._run_dir, self._name, part_name(bucket, self._buckets))
        write_parquet(table, path)
        out.append(beam.pvalue.TaggedOutput(WriteParts.PARTS, (self._name, path, table.num_rows)))
        if self._count_column:
            for (data_source, value), n in count_by(table, ["data_source", self._count_column], self._sort_by):
                out.append(count(self._count_metric, n, data_source, value))
        return out

    def _sorted_sets(self, by_tag: dict[str, list[pa.Table]]) -> pa.Table | None:
        """The part's rows when they are tonight's alone, every table (pair, segment set) rows from
        the join, to be de-duplicated: sorted as they are exploded, without the exploded table
        (:func:`~transforms.row_order.sorted_segment_rows`). None for any other shard (a merge, held-back
        or previous rows, rows that came exploded)."""
        tables = by_tag.get(ADD, [])
        if (self._merge is not None or not self._dedupe or by_tag.keys() != {ADD}
                or not all(SEGMENT_SET in t.column_names for t in tables)):
            return None
        names = [SEGMENT_SET if n == "segment_id" else n for n in self._schema.names]
        table = sorted_segment_rows(concat_promoted([t.select(names) for t in tables]), self._sort_by)
        return table.cast(self._schema) if table is not None else None

    def _merged(self, by_tag: dict[str, list[pa.Table]], side_inputs) -> tuple[pa.Table, list]:
        """A shard's rows to write (and the merge's counts): tonight's, or the merge's result."""
        if self._merge is None:
            return concat(by_tag.get(ADD, []), self._schema), []
        return self._merge({tag: concat(t, PROFILE_IDS_SCHEMA if tag == PROFILE_IDS else self._schema)
                            for tag, t in by_tag.items()}, *side_inputs)


class WrittenParts(NamedTuple):
    parts: beam.PCollection  # (output name, part path, rows)
    counts: beam.PCollection  # (Count, n): rows per data source and ``count_column`` value, and merge counts


class WriteParts(beam.PTransform):
    """Write a PCollection of Arrow tables as sorted, deduplicated Parquet shards of the output ``name``
    under ``run_dir``: rows are split by a stable hash of ``bucket_by`` into ``buckets`` parts, each
    sorted by ``sort_by`` (and de-duplicated with ``dedupe``). With ``count_column``, each part's rows
    are counted per data source and value of that column, as ``count_metric``.

    With ``merge``, elements are ``(tag, table)`` pairs and each shard's tables, grouped by tag, go
    through ``merge(tables_by_tag, *merge_side_inputs) -> (table, counts)`` before writing (the nightly
    job merges the previous state with tonight's adds and removals this way, in the same shuffle).
    With ``previous`` (:class:`transforms.incremental.PreviousParts`, with ``merge``), each shard's
    writer reads the previous partition's part of its bucket itself, tagged ``previous.TAG``: every
    bucket of the previous partition gets a shard, with tonight's rows or without. Tables tagged
    ``PROFILE_IDS`` (one ``profile_id`` column: tonight's profile ids, split as this output) reach
    the merge too, but are no rows: a shard with only them writes no part.
    With ``withheld_metric``, rows tagged ``WITHHELD[tag]`` are the rows held back from the output:
    merged as they would have been (the other tags' rows, removals, apply to them too), de-duplicated,
    counted per data source as ``withheld_metric`` and never written: the count is the number of
    entries the output would have had, not of rows before the merge (a previous row and tonight's
    for the same entry, or an entry on two dump lines, are one).
    """

    PARTS = "parts"

    def __init__(self, name: str, schema: pa.Schema, sort_by: list[str], bucket_by: str, run_dir: str,
                 buckets: int, dedupe: bool = True, count_column: str | None = None,
                 count_metric: Metric | None = None, merge=None, merge_side_inputs: tuple = (), threads: int = 1,
                 previous=None, withheld_metric: Metric | None = None):
        super().__init__()
        self.name, self.schema, self.sort_by, self.bucket_by = name, schema, sort_by, bucket_by
        self.run_dir, self.buckets, self.dedupe = run_dir, buckets, dedupe
        self.count_column, self.count_metric, self.withheld_metric = count_column, count_metric, withheld_metric
        self.merge, self.merge_side_inputs, self.threads, self.previous = merge, merge_side_inputs, threads, previous

    def expand(self, tables) -> WrittenParts:
        shards = tables | "SplitByShard" >> beam.ParDo(_SplitForWrite(self.bucket_by, self.buckets))
        if self.previous is not None:
            carried = (tables.pipeline | "PreviousBuckets" >> beam.Create(self.previous.buckets())
                       | "CarryMarkers" >> beam.Map(lambda bucket: (bucket, (CARRY, None))))
            shards = (shards, carried) | "WithPrevious" >> beam.Flatten()
        written = (
            shards
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WritePart(self), *self.merge_side_inputs).with_outputs(self.PARTS, main="counts")
        )
        return WrittenParts(parts=written[self.PARTS], counts=written.counts)
