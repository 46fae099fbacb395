"""The import's join, one shard at a time: a shard's dump lines meet its profile keys in one Arrow
hash join. Every line of the shard counts in exactly one place: memberships (``reconciled``) if it
matched a profile; else the file audience (sources that keep one) or a ``no_matching_profile``
rejection. A file audience holds *every* decrypted address of its source, matched or not.
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import concat, constant, distinct, explode_list
from transforms.config import JobConfig
from transforms.diagnosis_sample import KEPT_IN_FILE_AUDIENCE, candidates
from transforms.dumps import rejected_table
from transforms.keys import DUMP_SHARD_SCHEMA, PROFILE_SHARD_SCHEMA, narrow_dictionary, segment_lists
from transforms.memory import release_free_memory
from transforms.outcomes import COUNTS, Metric, Reason, count, runner_counter

MEMBERSHIP_SCHEMA = pa.schema(
    [("data_source", pa.string()), ("segment_id", pa.string()), ("profile_id", pa.string())]
)
FILE_AUDIENCE_SCHEMA = pa.schema(
    [("data_source", pa.string()), ("segment_id", pa.string()), ("channel", pa.string()), ("address", pa.string()),
     ("profile_id", pa.string())]  # the profile the address matched; null if none (one row per profile it matched)
)


class ShardResult(NamedTuple):
    """What one shard's join gives: tables (None where the data source has no such output) and the
    line counts of the two places a matched or kept line goes."""

    members: pa.Table
    removed_members: pa.Table
    file_audience: pa.Table | None
    file_audience_removed: pa.Table | None
    rejected: pa.Table | None
    reconciled: int  # lines that matched a profile
    file_audience_lines: int  # lines that matched no profile, kept in the file audience
    unmatched_keys: pa.Array | None = None  # join keys of the lines no profile matched (the diagnosis samples them)


def _pairs_by_segment(pairs: pa.Table, lists: pa.Array, *values: str) -> pa.Table:
    """``(segment_id, *values)`` for each pair times each segment of its line's list, de-duplicated.
    Segment ids are dictionary-encoded (a byte a row on the way to the writers)."""
    per_pair = pa.table({**{v: pairs[v] for v in values}, "segments": lists})
    table = distinct(explode_list(per_pair, "segments", "segment_id").select(["segment_id", *values]))
    return table.set_column(0, "segment_id", narrow_dictionary(pc.dictionary_encode(table["segment_id"])))


def join_bucket(dump: pa.Table, prof: pa.Table, data_source: str, channel: str, keep_file_audience: bool) -> ShardResult:
    """Match one shard. One hash join of (line index, key) with the profile keys gives both the
    matched lines and the (line, profile) pairs; memberships are those pairs times the lines'
    segments, removals the pairs times the lines' removed segments (incremental syncs only)."""
    lines = pa.table({"row": pa.array(np.arange(dump.num_rows, dtype=np.int64)), "key": dump["key"]})
    pairs = lines.join(prof.select(["key", "profile_id"]), keys="key", join_type="inner")
    matched = np.zeros(dump.num_rows, dtype=bool)
    matched[pairs["row"].to_numpy()] = True
    miss = dump.filter(pa.array(~matched))

    def with_source(table: pa.Table, **extra) -> pa.Table:
        table = table.add_column(0, "data_source", narrow_dictionary(constant(data_source, table.num_rows)))
        for i, (name, value) in enumerate(extra.items(), start=2):
            table = table.add_column(i, name, narrow_dictionary(constant(value, table.num_rows)))
        return table

    def by_segment(column: str) -> pa.Table:
        return with_source(_pairs_by_segment(pairs, segment_lists(dump[column].take(pairs["row"])), "profile_id"))

    file_audience = file_audience_removed = rejected = None
    if keep_file_audience:
        # Every decrypted address (its join key is the normalized address's UTF-8 bytes): once per
        # profile it matched, once with a null profile_id if it matched none.
        both = pa.concat_tables([
            pa.table({"address": dump["key"].take(pairs["row"]).cast(pa.string()), "profile_id": pairs["profile_id"]}),
            pa.table({"address": miss["key"].cast(pa.string()), "profile_id": pa.nulls(miss.num_rows, pa.string())}),
        ])
        rows = pa.concat_arrays([pairs["row"].combine_chunks(), pa.array(np.flatnonzero(~matched))])

        def addresses(column: str) -> pa.Table:
            return with_source(_pairs_by_segment(both, segment_lists(dump[column].take(rows)), "address", "profile_id"),
                               channel=channel)

        file_audience, file_audience_removed = addresses("segments"), addresses("removed")
    else:
        reasons = pa.repeat(pa.scalar(Reason.NO_MATCHING_PROFILE), miss.num_rows)
        rejected = rejected_table(data_source, miss["source_file"].combine_chunks(), miss["line"].combine_chunks(), reasons)
    return ShardResult(
        members=by_segment("segments"),
        removed_members=by_segment("removed"),
        file_audience=file_audience,
        file_audience_removed=file_audience_removed,
        rejected=rejected,
        reconciled=int(matched.sum()),
        file_audience_lines=miss.num_rows if keep_file_audience else 0,
        unmatched_keys=miss["key"],
    )


class JoinShard(beam.DoFn):
    """One shard's dump lines (grouped) against its profile keys (``profiles``: a multimap side
    input from ``(data_source, bucket)`` to the profile tables of that shard).

    Only the dump side goes through the GroupByKey. The profile side, small once Bloom-filtered,
    is looked up by shard: runners index a multimap side input by key (Dataflow reads only the
    keys a worker asks for), and a local runner does not copy it through a second shuffle, or
    through the Flatten that a two-sided GroupByKey needs (FnApiRunner materializes a Flatten).
    """

    REJECTED = "rejected"
    FILE_AUDIENCE = "file_audience"
    REMOVED_MEMBERS = "removed_members"
    FILE_AUDIENCE_REMOVED = "file_audience_removed"
    UNMATCHED = "unmatched"  # (data source, (sample size, sampled-line candidates)) for the diagnosis

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg

    def setup(self):
        self._reconciled = runner_counter("lines_reconciled")

    def finish_bundle(self):
        release_free_memory()

    def process(self, element, profiles):
        shard, dump_tables = element
        name = shard[0]
        # [] for a shard without profile keys. Never test `shard in profiles`: the view has no
        # __contains__, so Python would probe it with 0, 1, 2, ... forever.
        prof_tables = list(profiles[shard])
        ds = self._cfg.data_source(name)
        out = join_bucket(
            concat(dump_tables, DUMP_SHARD_SCHEMA),
            concat(prof_tables, PROFILE_SHARD_SCHEMA),
            name,
            ds.channel,
            ds.keeps_file_audience,
        )
        self._reconciled.inc(out.reconciled)
        yield beam.pvalue.TaggedOutput(COUNTS, count(Metric.RECONCILED, out.reconciled, name))
        if out.file_audience_lines:
            yield beam.pvalue.TaggedOutput(COUNTS, count(Metric.FILE_AUDIENCE, out.file_audience_lines, name))
        for tag, table in ((self.REJECTED, out.rejected), (self.FILE_AUDIENCE, out.file_audience),
                           (self.REMOVED_MEMBERS, out.removed_members),
                           (self.FILE_AUDIENCE_REMOVED, out.file_audience_removed)):
            if table is not None and table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, table)
        if out.members.num_rows:
            yield out.members
        k = self._cfg.sample_size(ds)
        if k and out.unmatched_keys is not None and len(out.unmatched_keys):
            reason = KEPT_IN_FILE_AUDIENCE if ds.keeps_file_audience else Reason.NO_MATCHING_PROFILE
            yield beam.pvalue.TaggedOutput(self.UNMATCHED, (name, (k, candidates(out.unmatched_keys, reason, k))))
