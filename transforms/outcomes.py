"""Outcomes, in one place: the typed keys counts travel with from the transforms to the report
builders, and (re-exported from :mod:`transforms.reasons`) every rejection reason and the report
category it counts in.

Counts travel as ``(Count(metric, data_source, detail), n)``: ``metric`` says what is counted,
``data_source`` is ``None`` for job-wide counts (profiles read, an export's targets), ``detail`` is
the reason, segment id or output name the metric needs. No key is ever a formatted string.
"""
from __future__ import annotations

import typing
from collections import defaultdict
from enum import StrEnum
from typing import Iterable, NamedTuple

import apache_beam as beam
from apache_beam import coders
from apache_beam.metrics import Metrics

from transforms.progress import ProgressCounter
from transforms.reasons import DECRYPT_FAILURES, OUTCOMES, Category, Reason  # noqa: F401 - re-exported

# The project's one Beam metrics namespace (live progress counters in the runner's UI).
NAMESPACE = "audience_sync"
# The tag of every transform's counts output.
COUNTS = "counts"


class Metric(StrEnum):
    """What a count counts. Import metrics are per data source unless said; export metrics are job-wide."""

    # Import, per data source.
    RECEIVED = "received"  # dump lines read
    RECONCILED = "reconciled"  # lines that matched a profile
    FILE_AUDIENCE = "file_audience"  # lines kept in the file audience
    REJECTED = "rejected"  # detail: the Reason
    MEMBERS = "members"  # detail: segment id (rows written to reconciled/)
    FILE_AUDIENCE_MEMBERS = "file_audience_members"  # detail: segment id
    SEGMENT_LINES = "segment_lines"  # detail: segment id (lines with a valid ID naming it to add)
    PROFILE_KEYS = "profile_keys"
    PROFILE_KEYS_SHUFFLED = "profile_keys_shuffled"
    PROFILE_VALUES_WITHOUT_KEY = "profile_values_without_key"
    FIRST_BLOCKS_CHECKED = "first_blocks_checked"  # AES-CBC: decrypted IDs whose first block the IV check saw
    IV_SUSPECT = "iv_suspect"  # AES-CBC: a position that looks weakly XORed; detail: it; n: the gain, in 1/1000
    FILE_DECRYPTED = "file_decrypted"  # decrypting sources: a dump's IDs that decrypted to an address; detail: its path
    FILE_DECRYPT_FAILED = "file_decrypt_failed"  # and those rejected with one of DECRYPT_FAILURES; detail: its path
    CARRIED = "carried"  # nightly: rows kept from the previous night; detail: the output
    REMOVED = "removed"  # nightly: previous rows removed tonight; detail: the output
    DROPPED = "dropped"  # nightly: previous rows of a data source no longer configured; detail: the output
    PROFILE_LEFT = "profile_left"  # nightly: previous rows whose profile left tonight's extract; detail: the output
    REPLACED = "replaced"  # nightly: previous file-audience rows tonight's rows supersede; detail: the output
    SUPPRESSED = "suppressed"  # file-audience entries withheld (suppressed addresses), counted once merged
    # Import, job-wide.
    PROFILES_READ = "profiles_read"
    # Import and export, job-wide: the extract's visitor-ID entries, judged over all its files
    # (transforms.profile_columns.check_visitor_entries); detail: the column's kind, list or text.
    VISITOR_ENTRIES = "visitor_entries"  # entries read
    VISITOR_ENTRIES_JOINED = "visitor_entries_joined"  # holding several IDs joined by another character
    VISITOR_ENTRIES_JOINED_BY = "visitor_entries_joined_by"  # detail: the joining character, as shown
    VISITOR_ENTRIES_LISTED = "visitor_entries_listed"  # holding a list written as text ('[...]')
    VISITOR_ENTRIES_AS_NUMBERS = "visitor_entries_as_numbers"  # holding a number's text (9.01078E+37)
    # Import and export, job-wide: an email or phone column's values (detail: the column), judged over
    # all the extract's files (transforms.profile_columns.check_address_numbers).
    ADDRESS_VALUES = "address_values"  # its non-empty values
    ADDRESS_VALUES_AS_NUMBERS = "address_values_as_numbers"  # holding a number's text (1.2E+11, 1,234)
    # Import and export, job-wide: at most this many distinct profile ids, summed over the extract's
    # batches (transforms.profile_columns.check_profile_ids).
    PROFILE_IDS_AT_MOST = "profile_ids_at_most"
    # Import and export, per data source: the match column of a hashed source read as written
    # (transforms.match_columns.check_match_columns), judged over all the extract's files.
    MATCH_VALUES = "match_values"  # its non-empty values
    MATCH_VALUES_EMAILS = "match_values_emails"  # those that look like email addresses
    # Export (job-wide): target rows, then one outcome per distinct target (SUPPRESSED above too),
    # then the user IDs against the earlier state, then what was sent.
    TARGET_ROWS = "target_rows"
    BLANK_TARGET_IDS = "blank_target_ids"
    DUPLICATE_TARGET_ROWS = "duplicate_target_rows"
    TARGETS = "targets"
    UNKNOWN_PROFILE = "unknown_profile"
    # unknown targets that are profile ids without their leading zeros (a spreadsheet saved the targets)
    TARGETS_WITHOUT_ZEROS = "targets_without_zeros"
    OPTED_OUT = "opted_out"
    CONSENT_UNKNOWN = "consent_unknown"  # the opt-out value is empty/null/missing: never exported
    UNMAPPED = "unmapped"
    ALREADY_PRESENT = "already_present"
    SHARES_BLOCKED_ID = "shares_blocked_id"  # every user ID it has is withheld (a blocked profile has it too)
    EXPORTED = "exported"
    SUPPRESSION_ENTRIES = "suppression_entries"  # entries of the suppression lists applied
    BLOCKED_USER_IDS = "blocked_user_ids"  # user IDs of opted-out/unknown/suppressed profiles (any row of theirs)
    CONSENT_UNKNOWN_ROWS = "consent_unknown_rows"  # extract rows whose opt-out is unknown (all of them: a guard)
    # extract rows without an opt-out value read as consented (opt_out_missing: consented; all of them: a guard)
    CONSENTED_BY_DEFAULT_ROWS = "consented_by_default_rows"
    EARLIER_PAIRS_READ = "earlier_pairs_read"  # rows of the earlier state / exports read
    EARLIER_USER_IDS = "earlier_user_ids"  # distinct user IDs the platform holds before this run
    DESIRED_USER_IDS = "desired_user_ids"  # distinct user IDs of the eligible targeted profiles
    WITHHELD = "withheld"  # desired user IDs that an opted-out/unknown/suppressed profile also has
    ADDED = "added"
    UNCHANGED = "unchanged"
    USER_IDS_REMOVED = "user_ids_removed"  # detail: the Removal reason
    USER_IDS_STRIPPED = "user_ids_stripped"  # overwrite: taken out of another audience; detail: its segment
    AUDIENCE_USER_IDS = "audience_user_ids"  # distinct user IDs the platform holds after this run
    PAIRS_SENT = "pairs_sent"
    PAIRS_REMOVED = "pairs_removed"
    STATE_PAIRS = "state_pairs"  # (profile, user ID) pairs of the new state
    LINES = "lines"


class Removal(StrEnum):
    """Why a user ID the platform holds for an audience leaves it, in priority order: a user ID
    with several reasons (held by several profiles) counts under the first."""

    SUPPRESSED = "suppressed"
    OPTED_OUT = "opted_out"
    CONSENT_UNKNOWN = "consent_unknown"
    DELETED_PROFILE = "deleted_profile"
    UNTARGETED = "untargeted"
    ID_CHANGED = "id_changed"

    @property
    def code(self) -> int:
        return REMOVALS.index(self)

    @property
    def description(self) -> str:
        return _REMOVAL_DESCRIPTION[self]


REMOVALS: tuple[Removal, ...] = tuple(Removal)
_REMOVAL_DESCRIPTION = {
    Removal.SUPPRESSED: "a profile holding it has a suppressed email or phone",
    Removal.OPTED_OUT: "a profile holding it opted out",
    Removal.CONSENT_UNKNOWN: "a profile holding it has no recorded consent (empty opt-out)",
    Removal.DELETED_PROFILE: "the profile that held it is no longer in the extract",
    Removal.UNTARGETED: "the profile that held it is no longer targeted",
    Removal.ID_CHANGED: "the profile is still targeted but no longer has this user ID (new address, "
                        "visitor ID gone, new encryption key)",
}
assert set(_REMOVAL_DESCRIPTION) == set(Removal), "every removal reason needs a description"


class Count(NamedTuple):
    """The key of one summed count."""

    metric: Metric
    data_source: str | None = None  # None: job-wide
    detail: str | None = None  # the reason, segment id or output the metric is about


def count(metric: Metric, n: int, data_source: str | None = None, detail: str | None = None) -> tuple[Count, int]:
    """One ``(Count, n)`` element, as every transform emits them."""
    return Count(metric, data_source, None if detail is None else str(detail)), int(n)


class BundleCounts:
    """Counts a DoFn sums over a bundle and emits once, at its end (:meth:`drain`), one element per key:
    a count per segment of every shard or part was one element each, and with thousands of segments
    the runner coded, flattened and combined hundreds of thousands of them (27 s of a 1M import with
    2,000 segments, against the join's own work). Counts are only summed downstream, so the report
    does not change. Added to from the DoFn's own thread only."""

    def __init__(self):
        self._sums: dict[Count, int] = {}

    def add(self, element: tuple[Count, int]) -> None:
        key, n = element
        self._sums[key] = self._sums.get(key, 0) + n

    def drain(self, tag: str | None = COUNTS) -> Iterable:
        """The bundle's sums as finish_bundle emits them, to ``tag`` (None: the main output), in the
        order their keys were first counted; empty afterwards."""
        from transforms.parallel import in_global_window

        sums, self._sums = self._sums, {}
        for element in sums.items():
            yield in_global_window(element) if tag is None else beam.pvalue.TaggedOutput(tag, in_global_window(element))


def runner_counter(name: str) -> ProgressCounter:
    """A Beam metrics counter in the project's namespace (what a runner's UI shows while a job runs),
    also read by the launcher's progress lines on the local runner (:mod:`transforms.progress`)."""
    return ProgressCounter(Metrics.counter(NAMESPACE, name), name)


class CountCoder(coders.Coder):
    """A deterministic, compact coder for :class:`Count` (GroupByKey keys must encode deterministically;
    Beam's generic fallback works too, but pickles the classes and warns on every run)."""

    def encode(self, value: Count) -> bytes:
        return "\x1f".join((value.metric.value, _opt(value.data_source), _opt(value.detail))).encode("utf-8")

    def decode(self, encoded: bytes) -> Count:
        metric, data_source, detail = encoded.decode("utf-8").split("\x1f")
        return Count(Metric(metric), _unopt(data_source), _unopt(detail))

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self):
        return Count


def _opt(text: str | None) -> str:
    return "\x00" if text is None else text


def _unopt(text: str) -> str | None:
    return None if text == "\x00" else text


coders.registry.register_coder(Count, CountCoder)


class SumCounts(beam.PTransform):
    """``(Count, n)`` elements -> one ``(Count, total)`` per key, keys coded by :class:`CountCoder`."""

    def expand(self, counts):
        return (
            counts
            | "Typed" >> beam.Map(lambda kv: kv).with_output_types(typing.Tuple[Count, int])
            | "Sum" >> beam.CombinePerKey(sum)
        )


class Counts:
    """Summed counts, read back by metric (the report builders' view)."""

    def __init__(self, summed: Iterable[tuple[Count, int]]):
        self._totals: dict[Count, int] = defaultdict(int)
        for key, n in summed:
            self._totals[key] += n
        # {(metric, data source): {detail: n}}: what details() reads, once. Scanning every total on each
        # call made a report of 40 data sources of 5,000 segments 5 s (160: 91 s), since each data
        # source's entry asks for several metrics' details.
        self._details: dict[tuple[Metric, str | None], dict[str, int]] = defaultdict(dict)
        for key, n in self._totals.items():
            self._details[(key.metric, key.data_source)][key.detail] = n

    def get(self, metric: Metric, data_source: str | None = None, detail: str | None = None) -> int:
        return self._totals.get(Count(metric, data_source, detail), 0)

    def sources(self, metric: Metric) -> list[str]:
        """The data sources with a count of ``metric``, sorted."""
        return sorted({k.data_source for k in self._totals if k.metric == metric and k.data_source is not None})

    def details(self, metric: Metric, data_source: str | None = None) -> dict[str, int]:
        """``{detail: n}`` for one metric (and data source), sorted by detail."""
        return dict(sorted(self._details.get((metric, data_source), {}).items()))
