"""The second stage of the export: per shard of user IDs, what the platform's audience becomes.

A user ID is what the platform holds, and several profiles may share one (a household's device, an
address in two CRM records), so the decision is taken per user ID, where all of its pairs meet
(``CoGroupByKey`` on a stable hash of ``user_id``):

- *desired*: a pair of an eligible targeted profile has it; *withheld* if a non-eligible profile of
  the extract (opted out, consent unknown, suppressed) has it too: it is never sent;
- *earlier*: the platform holds it (the earlier state);
- ``added`` = desired, not withheld, not earlier; ``unchanged`` = desired, not withheld, earlier;
  ``removed`` = earlier and not (desired and not withheld), with the first :class:`Removal` reason
  that applies (a withheld user ID takes the blocking profile's reason).

A mapped targeted profile's outcome follows its user IDs' fates: ``exported`` when one of them is
added, else ``already_present`` when one is unchanged, else ``shares_blocked_id`` (every one is
withheld: nothing is sent for it). A profile with one user ID is counted here; one with several, whose
user IDs may fall in several shards, per shard of ``profile_id`` after this stage
(:func:`profile_outcomes`).

Each user ID gets at most one line: a ``.sync`` line adds (``d_sid=N`` or the key-value) or removes
(``d_unsid=N``; a key-value audience cannot remove: no line, and the run fails before publishing);
an ``.overwrite`` line lists the user's full trait list for the data source (this audience's trait
if it is a member, plus the traits other audiences of the data source hold for it, from their
export state, unless a profile of it is not eligible: then it keeps none, and the other audiences'
``(user_id, trait)`` it loses are ``stripped``, for their states: :mod:`transforms.export_others`),
a leaver without any trait left gets ``d_unsid=N`` (ignored by overwrite semantics: no trait
remains) or, for a key-value audience, an empty trait list.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import concat, distinct, plain_array, split_by_bucket
from transforms.errors import RunFailed
from transforms.export_classify import BLOCKED_SCHEMA, DESIRED_SCHEMA, EXPORTED_SCHEMA, HELD_SCHEMA, STATUS_REMOVAL
from transforms.onboarding import LINE_SCHEMA
from transforms.outcomes import REMOVALS, Metric, Removal, count
from transforms.parallel import HeapDoFn
from transforms.stable_hash import bucket_of

# A desired pair's fate, by profile: its user ID is withheld, unchanged (already held) or added.
FATE_SCHEMA = pa.schema([("profile_id", pa.string()), ("fate", pa.int8())])
WITHHELD_FATE, UNCHANGED_FATE, ADDED_FATE = 0, 1, 2
FATE_OUTCOMES = {WITHHELD_FATE: Metric.SHARES_BLOCKED_ID, UNCHANGED_FATE: Metric.ALREADY_PRESENT,
                 ADDED_FATE: Metric.EXPORTED}
REMOVED_SCHEMA = pa.schema([("profile_id", pa.string()), ("user_id", pa.string()), ("reason", pa.string())])
OTHER_SCHEMA = pa.schema([("user_id", pa.string()), ("trait", pa.string())])

# The second CoGroupByKey's inputs, by name: each a PCollection of ``(user bucket, table)``.
DESIRED, HELD, BLOCKED, OTHERS = "desired", "held", "blocked", "others"


@dataclass(frozen=True)
class Traits:
    """What the lines say: ``add`` (``d_sid=N`` or the key-value), ``remove`` (``d_unsid=N``, or None
    for a key-value audience) and whether the files overwrite (full trait lists) or sync."""

    add: str
    remove: str | None
    overwrite: bool = False


class Decision(NamedTuple):
    lines: pa.Table  # LINE_SCHEMA: one line per user ID
    sent: pa.Table  # EXPORTED_SCHEMA: the pairs whose user ID this run sends as a member
    removed: pa.Table  # REMOVED_SCHEMA: the earlier pairs whose user ID leaves (user_id null when suppressed)
    state: pa.Table  # EXPORTED_SCHEMA: the pairs the platform holds after this run
    counts: dict
    fates: pa.Table  # FATE_SCHEMA: one row per desired pair of a profile with several (the others are counted)
    stripped: pa.Table  # OTHER_SCHEMA: the other audiences' user IDs an overwrite line takes out of them


def _mask(values) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def _unique(values) -> pa.Array:
    return pc.unique(plain_array(values)).cast(pa.string())


def _removal_codes(removed: pa.Array, blocked: pa.Table, held: pa.Table) -> np.ndarray:
    """The Removal code of each removed user ID: the first (in :data:`REMOVALS` order) among its held
    pairs' reasons and the statuses of the non-eligible profiles that have it."""
    codes = np.full(len(removed), len(REMOVALS), dtype=np.int16)
    if held.num_rows:
        first = held.group_by("user_id", use_threads=False).aggregate([("reason", "min")])
        where = pc.index_in(removed, value_set=first["user_id"].combine_chunks())
        found = pc.take(first["reason_min"].combine_chunks(), where)
        codes = np.where(_mask(pc.is_valid(found)), np.nan_to_num(found.to_numpy(zero_copy_only=False).astype(float),
                                                                  nan=len(REMOVALS)), codes).astype(np.int16)
    if blocked.num_rows:
        worst = blocked.group_by("user_id", use_threads=False).aggregate([("status", "max")])
        where = pc.index_in(removed, value_set=worst["user_id"].combine_chunks())
        status = pc.take(worst["status_max"].combine_chunks(), where).to_numpy(zero_copy_only=False).astype(float)
        for code, removal in STATUS_REMOVAL.items():
            codes[status == code] = np.minimum(codes[status == code], removal.code)
    if (codes >= len(REMOVALS)).any():
        raise RunFailed("export: a user ID leaves the audience without a reason (internal check); nothing was published")
    return codes


def _trait_lines(members: pa.Array, leavers: pa.Array, others: pa.Table, blocked: pa.Array, traits: Traits) -> pa.Table:
    """Overwrite lines: each listed user's full, sorted trait list for the data source. A ``blocked``
    user ID (a profile of it opted out, of unknown consent or suppressed) keeps no other audience's
    trait: listing them would put it back in those audiences."""
    listed = pa.concat_arrays([members, leavers])
    kept = pc.and_(pc.is_in(others["user_id"], value_set=listed),
                   pc.invert(pc.is_in(others["user_id"], value_set=blocked)))
    rows = [pa.table({"user_id": members, "trait": pa.array([traits.add] * len(members), pa.string())}),
            others.filter(kept)]
    table = distinct(concat(rows, OTHER_SCHEMA))
    bare = pc.filter(leavers, pc.invert(pc.is_in(leavers, value_set=_unique(table["user_id"]))))
    table = concat([table, pa.table({"user_id": bare, "trait": pa.array([traits.remove or ""] * len(bare),
                                                                       pa.string())})], OTHER_SCHEMA)
    table = table.sort_by([("user_id", "ascending"), ("trait", "ascending")])
    grouped = table.group_by("user_id", use_threads=False).aggregate([("trait", "list")])
    return pa.table({"user_id": grouped["user_id"], "traits": pc.binary_join(grouped["trait_list"], ",")},
                    schema=LINE_SCHEMA)


def _sync_lines(added: pa.Array, removed: pa.Array, traits: Traits) -> pa.Table:
    parts = [pa.table({"user_id": added, "traits": pa.array([traits.add] * len(added), pa.string())})]
    if traits.remove is not None:
        parts.append(pa.table({"user_id": removed, "traits": pa.array([traits.remove] * len(removed), pa.string())}))
    return concat(parts, LINE_SCHEMA)


def decide(desired: pa.Table, held: pa.Table, blocked: pa.Table, others: pa.Table, traits: Traits) -> Decision:
    """One shard of user IDs (``desired``: :data:`DESIRED_SCHEMA`): see the module's docstring."""
    wanted = _unique(desired["user_id"])
    blocked_ids = _unique(blocked["user_id"])
    withheld = _mask(pc.is_in(wanted, value_set=blocked_ids))
    members = pc.filter(wanted, pa.array(~withheld))
    earlier = _unique(held["user_id"])
    was_held = _mask(pc.is_in(members, value_set=earlier))
    added = pc.filter(members, pa.array(~was_held))
    removed = pc.filter(earlier, pc.invert(pc.is_in(earlier, value_set=members)))
    codes = _removal_codes(removed, blocked, held)

    stripped = OTHER_SCHEMA.empty_table()
    if traits.overwrite:
        lines = _trait_lines(members, removed, others, blocked_ids, traits)
        stripped = distinct(others.filter(pc.and_(pc.is_in(others["user_id"], value_set=removed),
                                                  pc.is_in(others["user_id"], value_set=blocked_ids))))
    else:
        lines = _sync_lines(added, removed, traits)
    sent = desired.filter(pc.is_in(desired["user_id"], value_set=members if traits.overwrite else added))
    fate = np.where(_mask(pc.is_in(desired["user_id"], value_set=added)), ADDED_FATE,
                    np.where(_mask(pc.is_in(desired["user_id"], value_set=members)), UNCHANGED_FATE, WITHHELD_FATE))
    only = _mask(desired["only"])
    fates = pa.table({"profile_id": desired["profile_id"], "fate": pa.array(fate.astype(np.int8))},
                     schema=FATE_SCHEMA).filter(pa.array(~only))
    decided = np.bincount(fate[only], minlength=len(FATE_OUTCOMES))  # a profile's only pair decides it here
    state = desired.filter(pc.is_in(desired["user_id"], value_set=members))

    leaving = held.filter(pc.is_in(held["user_id"], value_set=removed))
    pair_codes = pc.take(pa.array(codes, pa.int16()), pc.index_in(leaving["user_id"], value_set=removed))
    names = pc.take(pa.array([r.value for r in REMOVALS]), pair_codes)
    hidden = pc.equal(names, Removal.SUPPRESSED.value)  # a suppressed address's ID is not recorded
    removed_pairs = pa.table({"profile_id": leaving["profile_id"],
                              "user_id": pc.if_else(hidden, pa.scalar(None, pa.string()), leaving["user_id"]),
                              "reason": names}, schema=REMOVED_SCHEMA)
    by_reason = np.bincount(codes, minlength=len(REMOVALS))
    counts = {
        (Metric.DESIRED_USER_IDS, None): len(wanted),
        (Metric.WITHHELD, None): int(withheld.sum()),
        (Metric.EARLIER_USER_IDS, None): len(earlier),
        (Metric.ADDED, None): len(added),
        (Metric.UNCHANGED, None): int(was_held.sum()),
        (Metric.AUDIENCE_USER_IDS, None): len(members),
        (Metric.PAIRS_SENT, None): sent.num_rows,
        (Metric.PAIRS_REMOVED, None): removed_pairs.num_rows,
        (Metric.STATE_PAIRS, None): state.num_rows,
        **{(Metric.USER_IDS_REMOVED, r.value): int(by_reason[r.code]) for r in REMOVALS if by_reason[r.code]},
        **{(metric, None): int(decided[f]) for f, metric in FATE_OUTCOMES.items() if decided[f]},
        **{(Metric.USER_IDS_STRIPPED, t): n for t, n in Counter(stripped["trait"].to_pylist()).items()},
    }
    pairs = EXPORTED_SCHEMA.names
    return Decision(lines, sent.select(pairs).cast(EXPORTED_SCHEMA), removed_pairs,
                    state.select(pairs).cast(EXPORTED_SCHEMA), counts, fates, stripped)


def profile_outcomes(fates: pa.Table) -> dict:
    """The outcome counts of the mapped profiles of one shard of ``profile_id``, from their desired
    pairs' fates (:data:`FATE_SCHEMA`): each profile counts once, under its best fate."""
    best = fates.group_by("profile_id", use_threads=False).aggregate([("fate", "max")])["fate_max"]
    found = np.bincount(best.to_numpy(zero_copy_only=False).astype(np.int64), minlength=len(FATE_OUTCOMES))
    return {metric: int(found[fate]) for fate, metric in FATE_OUTCOMES.items()}


class DecideShard(HeapDoFn):
    """One shard ``(user bucket, {DESIRED, HELD, BLOCKED, OTHERS})`` -> lines (main output), the pairs
    sent (``SENT``), removed (``REMOVED``) and held after this run (``STATE``), the desired pairs'
    fates as ``(profile bucket, table)`` (``FATES``, for :class:`CountProfileOutcomes`), the other
    audiences' user IDs an overwrite takes out of them (``STRIPPED``) and counts (``COUNTS``). A
    shard with only blocked user IDs gives nothing."""

    COUNTS, SENT, REMOVED, STATE, FATES, STRIPPED = "counts", "sent", "removed", "state", "fates", "stripped"

    def __init__(self, traits: Traits, buckets: int = 1):
        self._traits, self._buckets = traits, buckets

    def process(self, element):
        _bucket, grouped = element
        desired, held = list(grouped[DESIRED]), list(grouped[HELD])
        if not desired and not held:
            return
        decision = decide(concat(desired, DESIRED_SCHEMA), concat(held, HELD_SCHEMA),
                          concat(list(grouped[BLOCKED]), BLOCKED_SCHEMA), concat(list(grouped[OTHERS]), OTHER_SCHEMA),
                          self._traits)
        for (metric, detail), n in decision.counts.items():
            yield beam.pvalue.TaggedOutput(self.COUNTS, count(metric, n, detail=detail))
        for tag, table in ((self.SENT, decision.sent), (self.REMOVED, decision.removed), (self.STATE, decision.state),
                           (self.STRIPPED, decision.stripped)):
            if table.num_rows:
                yield beam.pvalue.TaggedOutput(tag, table)
        fates = decision.fates
        for piece in split_by_bucket(fates, bucket_of(fates["profile_id"], self._buckets)):
            yield beam.pvalue.TaggedOutput(self.FATES, piece)
        if decision.lines.num_rows:
            yield decision.lines


class CountProfileOutcomes(beam.DoFn):
    """One shard ``(profile bucket, [FATE_SCHEMA tables])`` -> the outcome counts of its mapped
    profiles (:func:`profile_outcomes`)."""

    def process(self, element):
        _bucket, tables = element
        for metric, n in profile_outcomes(concat(list(tables), FATE_SCHEMA)).items():
            yield count(metric, n)
