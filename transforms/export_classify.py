"""Which targeted profiles an export sends: every distinct target id gets exactly one outcome.

Three inputs meet per shard of ``profile_id`` (a stable hash, so all rows of an id land in the same
shard and are counted exactly): the target ids (:mod:`transforms.targets`), the candidate rows of
the profiles the targets' Bloom filter lets through (:class:`ReadTargetedProfiles`, which computes
their user IDs), and the pairs of previous exports (:class:`ReadExistingPart`). :func:`classify`
decides per shard with Arrow kernels; :class:`ClassifyShard` runs it on a ``CoGroupByKey``'s output.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import KeyFilter, bucket_of, concat, distinct, hash64, split_by_bucket
from transforms.config import DataSourceConfig, JobConfig
from transforms.crypto import build_encryptor
from transforms.errors import InputError
from transforms.keys import profile_keys
from transforms.onboarding import usable_user_ids
from transforms.outcomes import Metric, runner_counter, count
from transforms.profiles import read_profiles, read_schema_names
from transforms.targets import TARGET_SCHEMA, TARGETS_COLUMN

if TYPE_CHECKING:
    from transforms.export import ExportSpec

EXPORTED_SCHEMA = pa.schema([("profile_id", pa.string()), ("user_id", pa.string())])
UNMAPPED_SCHEMA = pa.schema([("profile_id", pa.string())])
# A targeted profile as read from the extract: one row per extract row (user_id null), plus one row
# per usable user ID (opt_out false). A profile is opted out when any of its rows says so.
CANDIDATE_SCHEMA = pa.schema([("profile_id", pa.string()), ("opt_out", pa.bool_()), ("user_id", pa.string())])

# The CoGroupByKey's inputs, by name: each a PCollection of ``(bucket, table)``.
TARGETS, PROFILES, EXISTING = "targets", "profiles", "existing"


def user_ids(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, encryptor=None) -> pa.Table:
    """``(profile_id, user_id)``: the IDs the data source shares each profile by, usable ones only."""
    keyed, _ = profile_keys(profiles, ds, cfg)
    ids = keyed["key"].combine_chunks()
    if encryptor is not None:
        ids = encryptor.encrypt(ids)
    ok = usable_user_ids(ids)
    return pa.table({"profile_id": pc.filter(keyed["profile_id"], ok), "user_id": pc.filter(ids, ok)},
                    schema=EXPORTED_SCHEMA)


def candidate_rows(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, encryptor=None) -> pa.Table:
    """Standardized profile rows -> :data:`CANDIDATE_SCHEMA`. User IDs are computed (hashed,
    encrypted) for profiles that are not opted out only."""
    opt_out = pc.fill_null(profiles["opt_out"], True)
    base = pa.table({"profile_id": profiles["profile_id"], "opt_out": opt_out,
                     "user_id": pa.nulls(profiles.num_rows, pa.string())}, schema=CANDIDATE_SCHEMA)
    pairs = user_ids(profiles.filter(pc.invert(opt_out)), ds, cfg, encryptor)
    pairs = pa.table({"profile_id": pairs["profile_id"], "opt_out": pa.repeat(pa.scalar(False), pairs.num_rows),
                      "user_id": pairs["user_id"]}, schema=CANDIDATE_SCHEMA)
    return concat([base, pairs], CANDIDATE_SCHEMA)


def _unique(values) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.unique(values)


def _count(mask) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def classify(targets: pa.Table, candidates: pa.Table, existing: pa.Table) -> tuple[pa.Table, pa.Table, dict[Metric, int]]:
    """Classify one shard's targets. ``targets``: :data:`TARGET_SCHEMA` rows (non-blank, possibly
    repeated); ``candidates``: :data:`CANDIDATE_SCHEMA`; ``existing``: :data:`EXPORTED_SCHEMA` pairs of
    previous exports. Returns ``(pairs to send, unmapped profile ids, counts)``; the counts hold the
    five outcomes (summing to ``TARGETS``, the distinct ids), ``DUPLICATE_TARGET_ROWS``,
    ``PAIRS_SENT`` and ``OPTED_OUT_IN_EXISTING``."""
    rows = targets[TARGETS_COLUMN].combine_chunks()
    ids = _unique(rows)
    cand = candidates.filter(pc.is_in(candidates["profile_id"], value_set=ids))  # drop Bloom false positives
    known = pc.is_in(ids, value_set=_unique(cand["profile_id"]))
    opted_ids = _unique(cand.filter(cand["opt_out"])["profile_id"])
    opted = pc.is_in(ids, value_set=opted_ids)
    eligible = pc.filter(ids, pc.and_(known, pc.invert(opted)))

    pairs = cand.filter(pc.and_(pc.is_valid(cand["user_id"]), pc.is_in(cand["profile_id"], value_set=eligible)))
    pairs = distinct(pairs.select(["profile_id", "user_id"]))
    mapped = _unique(pairs["profile_id"])
    unmapped = pc.filter(eligible, pc.invert(pc.is_in(eligible, value_set=mapped)))

    previous = existing.select(["profile_id", "user_id"]).cast(EXPORTED_SCHEMA)
    if previous.num_rows and pairs.num_rows:
        new = pairs.join(previous, keys=["profile_id", "user_id"], join_type="left anti", use_threads=False)
    else:
        new = pairs
    new = new.select(["profile_id", "user_id"]).cast(EXPORTED_SCHEMA)
    sent_profiles = len(_unique(new["profile_id"]))
    counts = {
        Metric.TARGETS: len(ids),
        Metric.DUPLICATE_TARGET_ROWS: len(rows) - len(ids),
        Metric.UNKNOWN_PROFILE: _count(pc.invert(known)),
        Metric.OPTED_OUT: _count(opted),
        Metric.UNMAPPED: len(unmapped),
        Metric.ALREADY_PRESENT: len(mapped) - sent_profiles,
        Metric.EXPORTED: sent_profiles,
        Metric.PAIRS_SENT: new.num_rows,
        Metric.OPTED_OUT_IN_EXISTING: _count(pc.is_in(opted_ids, value_set=_unique(previous["profile_id"])))
        if previous.num_rows else 0,
    }
    return new, pa.table({"profile_id": unmapped}, schema=UNMAPPED_SCHEMA), counts


def _shards(table: pa.Table, buckets: int):
    """``(bucket, rows)`` by the stable hash of ``profile_id`` (the same shards as the targets')."""
    return split_by_bucket(table, bucket_of(table["profile_id"], buckets))


class ReadTargetedProfiles(beam.DoFn):
    """One profile extract -> shards ``(bucket, candidate rows)`` of the profiles the Bloom filter
    (a side input) says may be targeted, with their user IDs for the data source (hashed/encrypted
    here, for those profiles only), and counts (``COUNTS``). Key material is loaded in setup()."""

    COUNTS = "counts"

    def __init__(self, cfg: JobConfig, spec: ExportSpec, buckets: int):
        self._cfg, self._spec, self._buckets = cfg, spec, buckets

    def setup(self):

        self._encryptor = build_encryptor(self._spec.data_source, self._spec.clock)
        self._read = runner_counter("profiles_read")

    def process(self, path: str, target_filter: KeyFilter):
        column = self._cfg.profiles.opt_out
        if column not in read_schema_names(path, self._cfg.profiles.resolved_format):
            # standardize() would read a missing column as "nobody opted out": never for an export.
            raise InputError(path, f"no opt-out column '{column}' in this extract")
        for profiles in read_profiles(path, self._cfg):
            self._read.inc(profiles.num_rows)
            yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.PROFILES_READ, profiles.num_rows))
            keep = target_filter.might_contain(hash64(profiles["profile_id"]))
            if keep.any():
                rows = candidate_rows(profiles.filter(pa.array(keep)), self._spec.data_source, self._cfg, self._encryptor)
                yield from _shards(rows, self._buckets)


class ReadExistingPart(beam.DoFn):
    """One Parquet part of a previous export's ``exported/`` -> shards ``(bucket, pairs)`` of the
    targeted profiles (per the Bloom filter, a side input), and counts (``COUNTS``)."""

    COUNTS = "counts"

    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, path: str, target_filter: KeyFilter):
        try:
            with FileSystems.open(path) as handle:
                pf = pq.ParquetFile(handle)
                for batch in pf.iter_batches(batch_size=1 << 20, columns=["profile_id", "user_id"]):
                    table = pa.Table.from_batches([batch]).cast(EXPORTED_SCHEMA)
                    yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.EXISTING_PAIRS_READ, table.num_rows))
                    keep = target_filter.might_contain(hash64(table["profile_id"]))
                    if keep.any():
                        yield from _shards(table.filter(pa.array(keep)), self._buckets)
        except (pa.ArrowInvalid, OSError, ValueError, KeyError) as exc:
            raise InputError(path, f"cannot read the existing export ({type(exc).__name__})") from None


class ClassifyShard(beam.DoFn):
    """One shard ``(bucket, {TARGETS: [...], PROFILES: [...], EXISTING: [...]})`` -> pairs to send
    (main output), unmapped ids (``UNMAPPED``) and counts (``COUNTS``). A shard without targets
    (profiles or existing pairs let through by the Bloom filter only) gives nothing."""

    COUNTS, UNMAPPED = "counts", "unmapped"

    def process(self, element):
        _bucket, grouped = element
        targets = list(grouped[TARGETS])  # CoGroupByKey promises iterables only
        if not targets:
            return
        sent, unmapped, counts = classify(
            concat(targets, TARGET_SCHEMA),
            concat(list(grouped[PROFILES]), CANDIDATE_SCHEMA),
            concat(list(grouped[EXISTING]), EXPORTED_SCHEMA),
        )
        for metric, n in counts.items():
            yield beam.pvalue.TaggedOutput(self.COUNTS, count(metric, n))
        if unmapped.num_rows:
            yield beam.pvalue.TaggedOutput(self.UNMAPPED, unmapped)
        if sent.num_rows:
            yield sent
