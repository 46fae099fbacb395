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

from transforms.arrow_utils import concat, constant, narrow_dictionary
from transforms.config import JobConfig
from transforms.diagnosis_sample import KEPT_IN_FILE_AUDIENCE, bottom_k, candidates, compact, place_hashes
from transforms.dumps import rejected_table
from transforms.keys import DUMP_SHARD_SCHEMA, PROFILE_SHARD_SCHEMA, SEGMENT_SET, segment_line_counts
from transforms.memory import release_free_memory
from transforms.outcomes import COUNTS, BundleCounts, Metric, Reason, count, runner_counter
from transforms.packed_tables import pack_pieces
from transforms.parallel import BundleQueue, PooledDoFn, in_global_window
from transforms.stable_hash import split_for_write

# The reconciled output's parts are sharded by profile id, the file audience's by address: the join
# splits its rows so, in its pool, before they go to the writers (the file audience only without
# suppression lists, whose step between the join and the writers takes tables).
MEMBERS_BUCKET_BY = "profile_id"
FILE_AUDIENCE_BUCKET_BY = "address"
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

    members: pa.Table  # (data_source, SEGMENT_SET, profile_id): a row per pair; the writers make it one per segment
    removed_members: pa.Table  # the same, with the lines' removed sets
    file_audience: pa.Table | None  # (data_source, SEGMENT_SET, channel, address, profile_id): pairs and missed lines, as members
    file_audience_removed: pa.Table | None  # the same, with the lines' removed sets
    rejected: pa.Table | None
    reconciled: int  # lines that matched a profile
    file_audience_lines: int  # lines that matched no profile, kept in the file audience
    pairs: int  # rows of the join's (distinct line, profile) pair table: what the join materializes
    unmatched_keys: pa.Array | None = None  # join keys of the lines no profile matched (the diagnosis samples them)
    unmatched_at: tuple | None = None  # (source_file, line) of those lines: the sample draws lines, not keys
    segment_lines: tuple = ()  # (segment id, lines naming it to add), matched or not: "why has X no member?"


def _names_some(sets: pa.ChunkedArray) -> np.ndarray:
    """Which rows' segment sets (dictionary-encoded) name a segment: judged once per distinct set."""
    chunks = [c for c in sets.chunks if len(c)]
    if not chunks:
        return np.zeros(0, dtype=bool)
    return np.concatenate([pc.greater(pc.binary_length(c.dictionary), 0).to_numpy(zero_copy_only=False)[
        c.indices.to_numpy(zero_copy_only=False)] for c in chunks])


def _numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return values.to_numpy(zero_copy_only=False)


def _key_codes(dump_keys, prof_keys) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of the join keys: ``(line codes (-1: no profile has the key), profile codes,
    number of distinct profile keys)``. Two hash passes (encode the profile keys, look each line's
    key up); everything after them is integer work."""
    encoded = pc.dictionary_encode(prof_keys.combine_chunks() if isinstance(prof_keys, pa.ChunkedArray) else prof_keys)
    line_codes = _numpy(pc.fill_null(pc.index_in(dump_keys, value_set=encoded.dictionary), -1)).astype(np.int64)
    return line_codes, encoded.indices.to_numpy().astype(np.int64), len(encoded.dictionary)


def _distinct_sets(dump: pa.Table, rows: np.ndarray, codes: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """The matched lines ``rows`` (key ``codes``) de-duplicated on (key, segments, removed): one
    representative line (the first) per distinct combination, and its key code.

    Lines that repeat a key with the same segment sets give the same memberships: joining each of
    them with the key's profiles would materialize profiles x lines pairs (a key shared by 5,000
    profiles and repeated on 5,000 lines took 4.2 GB), only to be de-duplicated afterwards."""
    if not len(codes) or np.bincount(codes, minlength=n_keys).max() <= 1:
        return rows, codes  # no key repeats (the usual shard): nothing to collapse
    sets = dump.select(["segments", "removed"]).unify_dictionaries()  # comparable indices across chunks
    segments, removed = (_numpy(sets[c].combine_chunks().indices)[rows] for c in ("segments", "removed"))
    order = np.lexsort((removed, segments, codes))  # stable: the first line of a group leads it
    c, s, r = codes[order], segments[order], removed[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = (c[1:] != c[:-1]) | (s[1:] != s[:-1]) | (r[1:] != r[:-1])
    keep = np.sort(order[first])
    return rows[keep], codes[keep]


def _expand_pairs(set_codes: np.ndarray, prof_codes: np.ndarray, n_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """The inner join of the sets with the profiles on the key code: ``(set index, profile row)``
    per pair, in set order. Profiles are grouped by code (a stable sort), and each set takes the
    range of its key's profiles."""
    order = np.argsort(prof_codes, kind="stable")
    per_key = np.bincount(prof_codes, minlength=n_keys)
    starts = np.concatenate(([0], np.cumsum(per_key)[:-1])).astype(np.int64)
    per_set = per_key[set_codes] if len(set_codes) else np.zeros(0, np.int64)
    pair_set = np.repeat(np.arange(len(set_codes), dtype=np.int64), per_set)
    within = np.arange(len(pair_set), dtype=np.int64) - np.repeat(np.cumsum(per_set) - per_set, per_set)
    return pair_set, order[starts[set_codes][pair_set] + within]


def join_bucket(dump: pa.Table, prof: pa.Table, data_source: str, channel: str, keep_file_audience: bool) -> ShardResult:
    """Match one shard. A line matches when some profile has its key; the matched lines,
    de-duplicated on (key, segments, removed), are joined with the profiles of their key, giving
    (line set, profile) pairs: memberships are those pairs times the sets' segments, removals the
    pairs times their removed segments (incremental syncs only), both left as pairs with their sets
    (the writers explode them, :func:`~transforms.keys.segment_rows`). The pair table holds profiles
    x distinct sets of a key, never profiles x lines."""
    line_codes, prof_codes, n_keys = _key_codes(dump["key"], prof["key"])
    matched = line_codes >= 0
    rows = np.flatnonzero(matched)
    set_rows, set_codes = _distinct_sets(dump, rows, line_codes[rows], n_keys)
    pair_set, pair_prof = _expand_pairs(set_codes, prof_codes, n_keys)
    pairs = pa.table({"profile_id": prof["profile_id"].take(pa.array(pair_prof))})
    pair_lines = pa.array(set_rows[pair_set])
    miss = dump.filter(pa.array(~matched))

    def with_source(table: pa.Table, **extra) -> pa.Table:
        table = table.add_column(0, "data_source", narrow_dictionary(constant(data_source, table.num_rows)))
        for i, (name, value) in enumerate(extra.items(), start=2):
            table = table.add_column(i, name, narrow_dictionary(constant(value, table.num_rows)))
        return table

    def with_sets(column: str, lines: pa.Array, **values) -> pa.Table:
        """Each row of ``values`` with its line's set (SEGMENT_SET), if not empty (a full dump's
        removed sets are): the writers make it a row per segment."""
        sets = dump[column].take(lines)
        table = pa.table({SEGMENT_SET: sets, **values})
        named = _names_some(sets)
        return table if named.all() else table.filter(pa.array(named))

    file_audience = file_audience_removed = rejected = None
    if keep_file_audience:
        # Every decrypted address (its join key is the normalized address's UTF-8 bytes): once per
        # profile it matched (a row per (line set, profile) pair), once with a null profile_id if it
        # matched none (a row per line); each with its line's set, as the memberships go.
        rows = pa.concat_arrays([pair_lines, pa.array(np.flatnonzero(~matched))])
        profile_ids = pa.chunked_array([pairs["profile_id"].combine_chunks(), pa.nulls(miss.num_rows, pa.string())])

        def addresses(column: str) -> pa.Table:
            table = with_sets(column, rows, address=dump["key"].take(rows).cast(pa.string()), profile_id=profile_ids)
            return with_source(table, channel=channel)

        file_audience, file_audience_removed = addresses("segments"), addresses("removed")
    else:
        reasons = pa.repeat(pa.scalar(Reason.NO_MATCHING_PROFILE), miss.num_rows)
        rejected = rejected_table(data_source, miss["source_file"].combine_chunks(), miss["line"].combine_chunks(), reasons)
    return ShardResult(
        members=with_source(with_sets("segments", pair_lines, profile_id=pairs["profile_id"])),
        removed_members=with_source(with_sets("removed", pair_lines, profile_id=pairs["profile_id"])),
        file_audience=file_audience,
        file_audience_removed=file_audience_removed,
        rejected=rejected,
        reconciled=dump.num_rows - miss.num_rows,
        file_audience_lines=miss.num_rows if keep_file_audience else 0,
        pairs=pairs.num_rows,
        unmatched_keys=miss["key"],
        unmatched_at=(miss["source_file"], miss["line"]),
        segment_lines=tuple(segment_line_counts(dump["segments"])),
    )


class JoinShard(PooledDoFn):
    """One shard's dump lines (grouped) against its profile keys (``profiles``: a multimap side
    input from ``(data_source, bucket)`` to the profile tables of that shard).

    Only the dump side goes through the GroupByKey. The profile side, small once Bloom-filtered,
    is looked up by shard: runners index a multimap side input by key (Dataflow reads only the
    keys a worker asks for), and a local runner does not copy it through a second shuffle, or
    through the Flatten that a two-sided GroupByKey needs (FnApiRunner materializes a Flatten).
    Measured on the 10M encrypted import with both sides through a Flatten and one GroupByKey (as
    ``CoGroupByKey`` does): a Flatten stage of 6.3 s, and a peak of 4.55 GiB against 3.76 GiB.
    """

    REJECTED = "rejected"
    FILE_AUDIENCE = "file_audience"
    REMOVED_MEMBERS = "removed_members"
    FILE_AUDIENCE_REMOVED = "file_audience_removed"
    UNMATCHED = "unmatched"  # (data source, (sample size, the bundle's sampled-line candidates)) for the diagnosis

    def __init__(self, cfg: JobConfig):
        self._cfg = cfg
        self._threads = cfg.threads

    def setup(self):
        super().setup()
        self._reconciled = runner_counter("lines_reconciled")

    def start_bundle(self):
        self._queue = BundleQueue(self._pool, self._threads, self._emit)
        self._unmatched: dict[str, tuple[int, list]] = {}  # data source -> (k, the bundle's candidates so far)
        self._segment_lines = BundleCounts()  # (data source, segment) -> lines naming it, over the bundle

    def finish_bundle(self):
        yield from self._queue.drain()
        yield from self._segment_lines.drain()
        # One candidate table per data source and bundle, not one per shard: at 10M lines the 16
        # shards of a data source sent ~480,000 unmatched keys for a sample of 100,000.
        for name, (k, tables) in sorted(self._unmatched.items()):
            sampled = (name, (k, bottom_k(pa.concat_tables(tables), k)))
            yield beam.pvalue.TaggedOutput(self.UNMATCHED, in_global_window(sampled))
        release_free_memory()

    def process(self, element, profiles):
        shard, dump_tables = element
        # [] for a shard without profile keys. Never test `shard in profiles`: the view has no
        # __contains__, so Python would probe it with 0, 1, 2, ... forever. Read here: pool
        # threads never touch runner state.
        prof_tables = list(profiles[shard])
        yield from self._queue.submit(self._join, shard[0], list(dump_tables), prof_tables)

    def _join(self, name: str, dump_tables: list, prof_tables: list) -> tuple[int, list, tuple | None, list]:
        """One shard: (lines reconciled, outputs, (data source, k, sampled-line candidates) or None,
        its lines per segment).
        Runs in the pool; shards of a bundle overlap."""
        ds = self._cfg.data_source(name)
        dump = concat([packed.unpack() for packed in dump_tables], DUMP_SHARD_SCHEMA)  # packed by ReadDumpFile
        prof = concat([packed.unpack() for packed in prof_tables], PROFILE_SHARD_SCHEMA)  # packed by KeyProfiles
        out = join_bucket(dump, prof, name, ds.channel, ds.keeps_file_audience)
        outputs = [beam.pvalue.TaggedOutput(COUNTS, count(Metric.RECONCILED, out.reconciled, name))]
        if out.file_audience_lines:
            outputs.append(beam.pvalue.TaggedOutput(COUNTS, count(Metric.FILE_AUDIENCE, out.file_audience_lines, name)))
        for tag, table in ((self.REJECTED, out.rejected), (self.FILE_AUDIENCE, out.file_audience),
                           (self.REMOVED_MEMBERS, out.removed_members),
                           (self.FILE_AUDIENCE_REMOVED, out.file_audience_removed)):
            if table is not None and table.num_rows:
                if tag == self.FILE_AUDIENCE and not self._cfg.suppression:  # split and packed as the memberships
                    table = pack_pieces(split_for_write(table, FILE_AUDIENCE_BUCKET_BY, self._cfg.buckets))
                outputs.append(beam.pvalue.TaggedOutput(tag, table))
        if out.members.num_rows:  # split for the writers (and packed) here, in the pool, not on the runner's thread
            outputs.append(pack_pieces(split_for_write(out.members, MEMBERS_BUCKET_BY, self._cfg.buckets)))
        k, sampled = self._cfg.sample_size(ds), None
        if k and out.unmatched_keys is not None and len(out.unmatched_keys):
            reason = KEPT_IN_FILE_AUDIENCE if ds.keeps_file_audience else Reason.NO_MATCHING_PROFILE
            sampled = (name, k, candidates(out.unmatched_keys, reason, k, place_hashes(*out.unmatched_at)))
        segment_lines = [count(Metric.SEGMENT_LINES, n, name, segment) for segment, n in out.segment_lines]
        return out.reconciled, outputs, sampled, segment_lines

    def _emit(self, result: tuple[int, list, tuple | None, list]) -> list:
        """A shard's outputs; its sampled-line candidates and its lines per segment join the bundle's
        (emitted at its end)."""
        reconciled, outputs, sampled, segment_lines = result
        self._reconciled.inc(reconciled)
        for element in segment_lines:
            self._segment_lines.add(element)
        if sampled is not None:
            name, k, table = sampled
            self._unmatched[name] = (k, compact(k, self._unmatched.get(name, (k, []))[1] + [table]))
        return outputs
