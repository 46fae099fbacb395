"""What a person reads in a run report: figures derived from ``report.json`` (the match funnel, the
match rate, rejections explained, the top diagnosis finding, a nightly trend), shared by the HTML page
(:mod:`transforms.html_report`) and the terminal summary (:mod:`transforms.summary`).

Pure functions of the report dicts: no I/O, no record value (a report holds none). The funnel counts
dump *lines*; memberships (rows written per segment) are another unit and are reported beside it.
"""
from __future__ import annotations

from dataclasses import dataclass

from transforms.diagnosis_sample import sampled_from
from transforms.outcomes import DECRYPT_FAILURES, Category, Reason


@dataclass(frozen=True)
class Step:
    """One stage of the match funnel: ``lines`` still in it, and what left it before (``lost``)."""

    key: str  # stable name (the page marks each row with it)
    label: str
    lines: int
    lost: int
    lost_as: str  # what the lines that left at this step count as


@dataclass(frozen=True)
class Rejection:
    reason: str
    category: str
    description: str
    lines: int


def looked_up(entry: dict) -> int:
    """Lines whose ID was valid and looked up in the profiles: matched, unmatched or kept in the file audience."""
    return entry[Category.RECONCILED] + entry[Category.UNMATCHED] + entry[Category.FILE_AUDIENCE]


def match_rate(entry: dict) -> float | None:
    """Share of the lines with a valid ID that matched a profile; ``None`` when no line had one."""
    n = looked_up(entry)
    return entry[Category.RECONCILED] / n if n else None


def rejected_lines(entry: dict) -> int:
    """Lines rejected before the join (format errors, invalid IDs, removals only)."""
    return entry[Category.FORMAT_ERRORS] + entry[Category.INVALID_IDS] + entry[Category.REMOVALS_ONLY]


def memberships(entry: dict) -> int:
    return sum(s.get("members", 0) for s in entry["segments"].values())


def file_audience_entries(entry: dict) -> int:
    return sum(s.get("file_audience", 0) for s in entry["segments"].values())


def segment_lines_counted(entry: dict) -> bool:
    """Whether the report counts each segment's ``lines`` (a segment without the field: 0). Reports
    of releases before 2026-12-04 have none (and no ``match_form``, which came after): showing their
    segments as named by 0 lines, beside their members, was untrue."""
    return "match_form" in entry or any("lines" in s for s in entry["segments"].values())


def totals(report: dict) -> dict:
    """The figures of every data source together: received, reconciled, file_audience, unmatched,
    rejected (lines), members, and the match rate."""
    entries = list(report["data_sources"].values())
    total = {k: sum(e[k] for e in entries) for k in ("received", "reconciled", "file_audience", "unmatched")}
    return {**total, "rejected": sum(rejected_lines(e) for e in entries),
            "members": sum(memberships(e) for e in entries), "rate": match_rate(total)}


def decrypt_failures(entry: dict) -> int:
    return sum(entry["rejected_by_reason"].get(r, 0) for r in DECRYPT_FAILURES)


def funnel(entry: dict) -> list[Step]:
    """received -> well-formed -> IDs to look up -> (decrypted) -> valid IDs -> matched.

    IDs to look up: the well-formed lines that add segments, and in a nightly's ``iter`` dump also
    those that only remove some (their removals apply, so they are looked up); a one-off import or a
    full dump rejects a line that only removes segments (``removals only``).

    The decrypted step appears for data sources that decrypt (``decrypts`` in the report); lines
    without a token leave there beside the decrypt failures (they were never decrypted). Lines
    leaving the last step are unmatched or kept in the file audience (both looked up, no profile)."""
    received = entry["received"]
    well_formed = received - entry[Category.FORMAT_ERRORS]
    to_add = well_formed - entry[Category.REMOVALS_ONLY]
    valid = to_add - entry[Category.INVALID_IDS]
    steps = [
        Step("received", "received", received, 0, ""),
        Step("well_formed", "well-formed", well_formed, received - well_formed, "format errors"),
        Step("to_add", "IDs to look up", to_add, well_formed - to_add, "removals only"),
    ]
    before_valid = to_add
    if entry.get("decrypts"):
        # A line without a token (missing_value) was not decrypted either: it leaves here too.
        failed, blank = decrypt_failures(entry), entry["rejected_by_reason"].get(Reason.MISSING_VALUE, 0)
        decrypted = to_add - failed - blank
        lost_as = " or ".join(what for what, n in (("decrypt failures", failed), ("blank tokens", blank)) if n)
        steps.append(Step("decrypted", "decrypted", decrypted, to_add - decrypted, lost_as))
        before_valid = decrypted
    steps.append(Step("valid_ids", "valid IDs", valid, before_valid - valid, "invalid IDs"))
    kept = keeps_file_audience(entry)
    steps.append(Step("matched", "matched a profile", entry[Category.RECONCILED], valid - entry[Category.RECONCILED],
                      "unmatched or kept in the file audience" if kept else "unmatched"))
    return steps


def keeps_file_audience(entry: dict) -> bool:
    """Whether the data source's unmatched addresses go to the file audience (or some did). The
    report writes ``suppressed`` for exactly the sources that keep one: an encrypted email/SMS
    source with ``force_reconciliation`` decrypts but keeps none (its lines without a profile are
    unmatched)."""
    return bool(entry[Category.FILE_AUDIENCE] or file_audience_entries(entry) or "suppressed" in entry)


@dataclass(frozen=True)
class IVSuspect:
    """The IV check's suspicion in a run that passed (``iv_suspect`` in the report): a byte position
    of the decrypted IDs that looks weakly XORed by one value, and the IDs that matched a profile
    (enough for the run to pass: transforms.report). Positions and counts only: never a key or IV byte."""

    position: int
    matched: int
    decrypted: int


def iv_suspect(entry: dict) -> IVSuspect | None:
    suspect = entry.get("iv_suspect")
    if not suspect:
        return None
    return IVSuspect(int(suspect["position"]), entry[Category.RECONCILED], looked_up(entry))


def rejected_reasons(entry: dict) -> list[Rejection]:
    """The rejections of the lines counted as rejected (:func:`rejected_lines`): not
    ``no_matching_profile``, which counts as unmatched. A code this version does not know is kept."""
    return [r for r in rejections(entry) if r.category not in (Category.UNMATCHED, Category.RECONCILED, Category.FILE_AUDIENCE)]


def rejections(entry: dict) -> list[Rejection]:
    """Rejected lines by reason, most frequent first, with the reason's category and description.
    A code this version does not know (a report written by another version) is shown as such."""
    out = []
    for code, n in entry["rejected_by_reason"].items():
        try:
            reason = Reason(code)
            category, description = reason.category.value, reason.description
        except ValueError:
            category, description = "?", "a reason this version does not know"
        out.append(Rejection(code, category, description, n))
    return sorted(out, key=lambda r: (-r.lines, r.reason))


def to_diagnose(entry: dict) -> int:
    """The lines the diagnosis samples from: without a match, or rejected for a reason a setting may
    explain (0: there was nothing to try alternatives on)."""
    return sampled_from(entry)


def findings(entry: dict) -> list[dict] | None:
    """The mismatch diagnosis' findings, best first; ``None`` when the run did not diagnose."""
    found = entry.get("diagnosis")
    if found is None:
        return None
    return sorted(found, key=lambda f: -int(f.get("would_match", 0)))


# Findings of encrypted data sources: their lines would decrypt (to a valid address) once fixed;
# whether they then match a profile is not counted.
DECRYPTION_KINDS = frozenset({"token_encoding", "channel", "region", "key_encoding", "iv_encoding", "embedded_iv", "iv",
                              "key", "key_or_iv", "key_id"})


def finding_effect(finding: dict) -> str:
    """What a finding's ``would_match`` lines would do once it is acted on: ``would match`` or
    ``would decrypt`` (the field keeps its name in report.json)."""
    return "would decrypt" if finding.get("kind") in DECRYPTION_KINDS else "would match"


def suggestion_text(finding: dict) -> str:
    """``field: value, ...`` of a finding's suggested config change (one line); a field whose right
    value the run cannot know (``null``: a key, an IV) is ``check field``."""
    return ", ".join(f"check {field}" if value is None else f"{field}: {_plain(value)}"
                     for field, value in finding.get("suggestion", {}).items())


def fields_to_check(finding: dict) -> list[str]:
    """The fields a finding names as wrong without a value (``null``: a secret the run cannot know)."""
    return [field for field, value in finding.get("suggestion", {}).items() if value is None]


def suggestion_parts(finding: dict) -> list[tuple[str, dict]]:
    """A finding's suggested change as the config holds it: ``[(where, fields)]``, this data source's
    fields first, then the job's ``profiles`` section (every data source reads it); a dotted field
    nested in its section (``encryption.iv`` -> ``{"encryption": {"iv": ...}}``); not a field to check."""
    parts: dict[str, dict] = {}
    for field, value in finding.get("suggestion", {}).items():
        if value is None:  # no value to paste: fields_to_check
            continue
        section, _, name = field.rpartition(".")
        where = PROFILES_SECTION if section == "profiles" else DATA_SOURCE_ENTRY
        target = parts.setdefault(where, {})
        if section:
            target = target.setdefault(section, {})
        target[name] = value
    return [(where, parts[where]) for where in (DATA_SOURCE_ENTRY, PROFILES_SECTION) if where in parts]


DATA_SOURCE_ENTRY = "this data source's entry (data_sources)"
PROFILES_SECTION = "the job's profiles section (every data source reads it)"


NO_DUMP = "no dump tonight: carried over"


def undelivered(entry: dict) -> bool:
    """Whether a night read no dump of the data source and carried its audience over as it was
    (``max_nights_without_delivery``): its report lists no file (``files: []``). A one-off import
    reads every data source (its report lists a file each) or fails."""
    return entry.get("files") == []


def top_line(entry: dict) -> str:
    """What the "top diagnosis" column says: the best finding, that no dump was read, or ``""``."""
    return top_finding_text(entry) or (NO_DUMP if undelivered(entry) else "")


def top_finding_text(entry: dict) -> str:
    """The best finding as a short line (terminal), or ``""``."""
    found = findings(entry)
    if not found:
        return ""
    best = found[0]
    change = suggestion_text(best) or str(best.get("kind", "?"))
    return f"{change} ({int(best.get('would_match', 0)):,} of {int(best.get('sampled', 0)):,} sampled)"


def _plain(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_plain(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


@dataclass(frozen=True)
class Night:
    """One data source on one night of a nightly root."""

    date: str
    received: int
    reconciled: int
    match_rate: float | None
    members: int
    note: str = ""  # a night without a dump of it (:data:`CARRIED_NIGHT`), or that dropped it (:data:`DROPPED_NIGHT`)

    @property
    def dropped(self) -> bool:
        return self.note == DROPPED_NIGHT


CARRIED_NIGHT = "no dump: carried over"
DROPPED_NIGHT = "no longer configured, its rows dropped"


def trend(nights: list[tuple[str, dict]]) -> dict[str, list[Night]]:
    """``{data source: [Night, ...]}`` over the nights ``[(date, report), ...]`` (date order), for
    every data source found on any night; a night that dropped a data source's rows (taken out of the
    config: ``removed_data_sources``) has a night of 0 members for it, else a night without the data
    source has no entry."""
    series: dict[str, list[Night]] = {}
    for day, report in nights:
        for name, entry in report.get("data_sources", {}).items():
            series.setdefault(name, []).append(
                Night(day, entry["received"], entry[Category.RECONCILED], match_rate(entry), memberships(entry),
                      CARRIED_NIGHT if undelivered(entry) else ""))
        for name in report.get("removed_data_sources", {}):
            if name in series:
                series[name].append(Night(day, 0, 0, None, 0, DROPPED_NIGHT))
    return series
