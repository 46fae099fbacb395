"""Which profiles an export shares: every distinct target id gets exactly one outcome, and every
(profile, user ID) pair the platform holds for the audience is kept or leaves with a reason.

Three inputs meet per shard of ``profile_id`` (a stable hash, so all rows of an id land in the same
shard and are counted exactly): the target ids (:mod:`transforms.targets`), the candidate rows of
the profiles that are targeted or held by the platform
(:class:`transforms.export_profiles.ReadTargetedProfiles` lets them through a Bloom filter of both
and computes their user IDs), and the earlier state's pairs
(:class:`ReadEarlierPart`: the export state, or previous exports' ``exported/``/``removed/``).
:func:`classify` decides per shard with Arrow kernels; :class:`ClassifyShard` runs it on a
``CoGroupByKey``'s output and re-keys what it finds by user ID for the second stage
(:mod:`transforms.export_decide`), where a user ID's fate is decided across profiles.

A profile's status is the worst of its extract rows: suppressed (its email or phone is on a
suppression list), opted out, consent unknown, or eligible. A user ID that such a profile has, on any
of its rows, is never sent, even for another, consented profile (a shared device or address): the
reader emits the user IDs of every non-eligible row of the whole extract (``BLOCKED``), and since a
profile's rows may be in several files, a first, narrow pass
(:class:`transforms.export_profiles.ReadBlockedProfiles`: id, opt-out and suppression columns) adds
the profiles with a non-eligible row to the Bloom filter, so that all their rows meet in their shard,
where :func:`blocked_by_profile` blocks the user IDs of their eligible rows too.
"""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import concat, distinct, split_by_bucket
from transforms.errors import InputError
from transforms.export_zeros import targets_without_zeros
from transforms.outcomes import Metric, Removal, count
from transforms.parallel import HeapDoFn
from transforms.stable_hash import bucket_of, hash64
from transforms.targets import TARGET_SCHEMA, TARGETS_COLUMN

EXPORTED_SCHEMA = pa.schema([("profile_id", pa.string()), ("user_id", pa.string())])
# A desired pair (stage 2's input): ``only`` when it is its profile's only one, whose outcome then
# follows from that user ID alone (no regrouping by profile).
DESIRED_SCHEMA = pa.schema([*EXPORTED_SCHEMA, ("only", pa.bool_())])
UNMAPPED_SCHEMA = pa.schema([("profile_id", pa.string())])
# A candidate profile as read from the extract: one row per extract row (user_id null) with its
# status, plus one row per usable user ID of an eligible row (status OK).
CANDIDATE_SCHEMA = pa.schema([("profile_id", pa.string()), ("status", pa.int8()), ("user_id", pa.string())])
# An earlier pair: ``run`` orders earlier exports (0 for the export state); ``removed`` marks a pair
# that run removed.
EARLIER_SCHEMA = pa.schema([("profile_id", pa.string()), ("user_id", pa.string()), ("run", pa.int16()),
                            ("removed", pa.bool_())])
# An earlier pair as stage 1 leaves it: ``reason`` is the Removal code if its profile leaves, else null.
HELD_SCHEMA = pa.schema([("profile_id", pa.string()), ("user_id", pa.string()), ("reason", pa.int8())])
BLOCKED_SCHEMA = pa.schema([("user_id", pa.string()), ("status", pa.int8())])

# Profile statuses, worst last (a profile's status is the max over its rows).
OK, CONSENT_UNKNOWN, OPTED_OUT, SUPPRESSED = 0, 1, 2, 3
STATUS_REMOVAL = {SUPPRESSED: Removal.SUPPRESSED, OPTED_OUT: Removal.OPTED_OUT, CONSENT_UNKNOWN: Removal.CONSENT_UNKNOWN}

# The first CoGroupByKey's inputs, by name: each a PCollection of ``(profile bucket, table)``.
TARGETS, PROFILES, EARLIER = "targets", "profiles", "earlier"


def blocked_by_profile(candidates: pa.Table) -> pa.Table:
    """:data:`BLOCKED_SCHEMA`: the user IDs of the eligible rows of the profiles that are not eligible
    (a row of theirs is not), with the profile's status. ``candidates``: every row of each profile."""
    if not candidates.num_rows or not pc.any(pc.not_equal(candidates["status"], OK)).as_py():
        return BLOCKED_SCHEMA.empty_table()
    worst = candidates.group_by("profile_id", use_threads=False).aggregate([("status", "max")])
    worst = worst.filter(pc.not_equal(worst["status_max"], OK))
    pairs = candidates.filter(pc.is_valid(candidates["user_id"])).select(["profile_id", "user_id"])
    pairs = pairs.join(worst, keys="profile_id", join_type="inner", use_threads=False)
    return distinct(pa.table({"user_id": pairs["user_id"], "status": pairs["status_max"]}, schema=BLOCKED_SCHEMA))


def _unique(values) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.unique(values)


def _only_pair(profile_ids: pa.ChunkedArray) -> pa.Array:
    """Whether each pair is its profile's only one (``profile_ids``: distinct pairs' profiles)."""
    ids = profile_ids.combine_chunks()
    if not len(ids):
        return pa.array([], pa.bool_())
    encoded = pc.dictionary_encode(ids)
    pairs = np.bincount(encoded.indices.to_numpy(zero_copy_only=False), minlength=len(encoded.dictionary))
    return pa.array(pairs[encoded.indices.to_numpy(zero_copy_only=False)] == 1)


def _count(mask) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def earlier_pairs(earlier: pa.Table, replaces: tuple[bool, ...]) -> pa.Table:
    """The pairs the platform holds, from the earlier runs in order: a run that ``replaces`` (the
    export state, an overwrite export) holds its pairs; any other adds its sent pairs and drops the
    ones it removed. A run without rows in this shard still counts (a replacing one empties it)."""
    held = EXPORTED_SCHEMA.empty_table()
    for run, replace in enumerate(replaces):
        rows = earlier.filter(pc.equal(earlier["run"], run)) if earlier.num_rows else earlier
        sent = rows.filter(pc.invert(rows["removed"])).select(EXPORTED_SCHEMA.names).cast(EXPORTED_SCHEMA)
        if replace:
            held = sent
            continue
        gone = rows.filter(pc.and_(rows["removed"], pc.is_valid(rows["user_id"]))).select(EXPORTED_SCHEMA.names)
        if gone.num_rows and held.num_rows:
            held = held.join(gone, keys=EXPORTED_SCHEMA.names, join_type="left anti", use_threads=False)
        # A suppressed pair is removed without its user ID (null, never recorded): which of its
        # profile's pairs left is not known, so they all stay held. Forgetting them all lost the ones
        # still on the platform (the profile only shared a suppressed ID): never removed after, even
        # once it opted out. Kept, a removed one is removed again (the platform ignores it), and is not
        # sent again once the address leaves the suppression list (a known limit of --existing; the
        # export state, --state, records what the platform holds).
        held = concat([held, sent], EXPORTED_SCHEMA)
    return distinct(held)


def _reasons(held: pa.Table, desired: pa.Table, ids: pa.Array, known_ids: pa.Array, status: pa.Array) -> pa.Array:
    """The Removal code of each held pair's profile (null: it stays)."""
    marked = desired.append_column("kept", pa.array(np.ones(desired.num_rows, bool)))
    held = held.join(marked, keys=EXPORTED_SCHEMA.names, join_type="left outer", use_threads=False)
    where = pc.index_in(held["profile_id"], value_set=known_ids)
    st = pc.take(status, where).to_numpy(zero_copy_only=False)
    reason = np.full(held.num_rows, -1, dtype=np.int16)
    reason[np.asarray(pc.invert(pc.is_in(held["profile_id"], value_set=ids)).to_numpy(zero_copy_only=False), bool)] = (
        Removal.UNTARGETED.code)
    kept = np.asarray(pc.is_valid(held["kept"]).to_numpy(zero_copy_only=False), bool)
    reason[(reason < 0) & ~kept] = Removal.ID_CHANGED.code
    for code, removal in STATUS_REMOVAL.items():
        reason[np.nan_to_num(st.astype(float), nan=-1) == code] = removal.code
    reason[np.asarray(pc.is_null(where).to_numpy(zero_copy_only=False), bool)] = Removal.DELETED_PROFILE.code
    return pa.table({"profile_id": held["profile_id"], "user_id": held["user_id"],
                     "reason": pa.array(reason, pa.int8(), mask=reason < 0)}, schema=HELD_SCHEMA)


def classify(targets: pa.Table, candidates: pa.Table, earlier: pa.Table, replaces: tuple[bool, ...] = ()):
    """Classify one shard. ``targets``: :data:`TARGET_SCHEMA` rows (non-blank, possibly repeated);
    ``candidates``: :data:`CANDIDATE_SCHEMA`; ``earlier``: :data:`EARLIER_SCHEMA` of the runs
    ``replaces`` describes. Returns ``(desired pairs, held pairs with reasons, unmapped ids, counts)``:
    the desired pairs are every current pair of the eligible targets; the counts hold ``TARGETS`` (the
    distinct ids), ``DUPLICATE_TARGET_ROWS`` and the target outcomes but those of the mapped targets
    (the profiles of the desired pairs), whose outcome depends on their user IDs' fates, decided in
    stage 2 (:func:`transforms.export_decide.profile_outcomes`)."""
    rows = targets[TARGETS_COLUMN].combine_chunks()
    ids = _unique(rows)
    held = earlier_pairs(earlier, replaces)
    wanted = pa.concat_arrays([ids, _unique(held["profile_id"]).cast(pa.string())])
    cand = candidates.filter(pc.is_in(candidates["profile_id"], value_set=wanted))  # drop Bloom false positives
    if cand.num_rows:
        worst = cand.group_by("profile_id", use_threads=False).aggregate([("status", "max")])
        known_ids, status = worst["profile_id"].combine_chunks(), worst["status_max"].combine_chunks()
    else:
        known_ids, status = pa.array([], pa.string()), pa.array([], pa.int8())
    st = pc.take(status, pc.index_in(ids, value_set=known_ids))
    eligible = pc.filter(ids, pc.fill_null(pc.equal(st, OK), False))

    desired = cand.filter(pc.and_(pc.is_valid(cand["user_id"]), pc.is_in(cand["profile_id"], value_set=eligible)))
    desired = distinct(desired.select(EXPORTED_SCHEMA.names)).cast(EXPORTED_SCHEMA)
    desired = desired.append_column("only", _only_pair(desired["profile_id"]))
    mapped = _unique(desired["profile_id"])
    unmapped = pc.filter(eligible, pc.invert(pc.is_in(eligible, value_set=mapped)))
    counts = {
        Metric.TARGETS: len(ids),
        Metric.DUPLICATE_TARGET_ROWS: len(rows) - len(ids),
        Metric.UNKNOWN_PROFILE: _count(pc.is_null(st)),
        Metric.SUPPRESSED: _count(pc.equal(st, SUPPRESSED)),
        Metric.OPTED_OUT: _count(pc.equal(st, OPTED_OUT)),
        Metric.CONSENT_UNKNOWN: _count(pc.equal(st, CONSENT_UNKNOWN)),
        Metric.UNMAPPED: len(unmapped),
    }
    held = _reasons(held, desired, ids, known_ids, status) if held.num_rows else HELD_SCHEMA.empty_table()
    return desired, held, pa.table({"profile_id": unmapped}, schema=UNMAPPED_SCHEMA), counts


def _shards(table: pa.Table, buckets: int, column: str = "profile_id"):
    """``(bucket, rows)`` by the stable hash of ``column``."""
    return split_by_bucket(table, bucket_of(table[column], buckets))


class ReadEarlierPart(HeapDoFn):
    """``(run, removed, path)``: one Parquet part of the earlier state (pairs) -> shards ``(profile
    bucket, EARLIER_SCHEMA rows)``, the hashes of their profile ids (``HASHES``, for the Bloom filter)
    and counts (``COUNTS``)."""

    COUNTS, HASHES = "counts", "earlier_hashes"

    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, element):
        run, removed, path = element
        try:
            with FileSystems.open(path) as handle:
                pf = pq.ParquetFile(handle)
                for batch in pf.iter_batches(batch_size=1 << 20, columns=["profile_id", "user_id"]):
                    pairs = pa.Table.from_batches([batch]).cast(EXPORTED_SCHEMA)
                    n = pairs.num_rows
                    if not removed:
                        yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.EARLIER_PAIRS_READ, n))
                    table = pairs.append_column("run", pa.array(np.full(n, run, np.int16))).append_column(
                        "removed", pa.array(np.full(n, removed, bool)))
                    yield beam.pvalue.TaggedOutput(self.HASHES, hash64(table["profile_id"]))
                    yield from _shards(table, self._buckets)
        except (pa.ArrowInvalid, OSError, ValueError, KeyError) as exc:
            raise InputError(path, f"cannot read the earlier export state ({type(exc).__name__})") from None


class ClassifyShard(HeapDoFn):
    """One shard ``(bucket, {TARGETS: [...], PROFILES: [...], EARLIER: [...]})`` -> the desired pairs
    (main output) and the held pairs with their reasons (``HELD``), both as ``(user bucket, table)``;
    unmapped ids (``UNMAPPED``) and counts (``COUNTS``; ``TARGETS_WITHOUT_ZEROS`` from the side input
    ``zero_led``, ``ReadTargetedProfiles.ZERO_LED``). A shard with neither targets nor earlier pairs
    (profiles let through by the Bloom filter only) gives only the user IDs of its profiles that are
    not eligible (``BLOCKED``, :func:`blocked_by_profile`)."""

    COUNTS, UNMAPPED, HELD, BLOCKED = "counts", "unmapped", "held", "blocked"

    def __init__(self, replaces: tuple[bool, ...] = (), buckets: int = 1):
        self._replaces, self._buckets = tuple(replaces), buckets

    def process(self, element, zero_led=()):
        _bucket, grouped = element
        targets, earlier = list(grouped[TARGETS]), list(grouped[EARLIER])  # CoGroupByKey promises iterables only
        candidates = concat(list(grouped[PROFILES]), CANDIDATE_SCHEMA)
        blocked = blocked_by_profile(candidates)
        if blocked.num_rows:
            yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.BLOCKED_USER_IDS, blocked.num_rows))
            for piece in _shards(blocked, self._buckets, "user_id"):
                yield beam.pvalue.TaggedOutput(self.BLOCKED, piece)
        if not targets and not earlier:
            return
        targets = concat(targets, TARGET_SCHEMA)
        desired, held, unmapped, counts = classify(targets, candidates, concat(earlier, EARLIER_SCHEMA), self._replaces)
        if without_zeros := targets_without_zeros(targets, candidates, zero_led):  # transforms/export_zeros.py
            counts[Metric.TARGETS_WITHOUT_ZEROS] = without_zeros
        for metric, n in counts.items():
            yield beam.pvalue.TaggedOutput(self.COUNTS, count(metric, n))
        if unmapped.num_rows:
            yield beam.pvalue.TaggedOutput(self.UNMAPPED, unmapped)
        for piece in _shards(held, self._buckets, "user_id"):
            yield beam.pvalue.TaggedOutput(self.HELD, piece)
        yield from _shards(desired, self._buckets, "user_id")
