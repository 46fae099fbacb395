"""The export's report (``report.json``), the checks that its counts add up, the export state's
manifest, and the command-line summary.

Every row of the targets file(s) is a distinct target, a repeat of one, or a blank id
(:data:`TARGET_ROWS`); every distinct target has exactly one of the :data:`OUTCOMES`. Per user ID:
the earlier state's user IDs are ``unchanged`` or ``removed`` (by reason), the desired ones
``added``, ``unchanged`` or ``withheld``; the audience after the run is ``added + unchanged``; the
files hold exactly one line per added or removed user ID (sync), or per member and leaver
(overwrite). The run checks all of it before publishing anything, and refuses to publish a
``.sync`` export whose leavers it cannot remove (a key-value audience).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.errors import RunFailed
from transforms.export_paths import same_output
from transforms.export_state import current_version
from transforms.outcomes import REMOVALS, Counts, Metric, Removal
from transforms.storage import absolute

if TYPE_CHECKING:
    from transforms.export_spec import ExportSpec
    from transforms.export_state import ExportState

# Every distinct target id is counted in exactly one of these.
OUTCOMES = (Metric.EXPORTED, Metric.ALREADY_PRESENT, Metric.SHARES_BLOCKED_ID, Metric.UNMAPPED, Metric.SUPPRESSED, Metric.OPTED_OUT,
            Metric.CONSENT_UNKNOWN, Metric.UNKNOWN_PROFILE)
# Every row of the targets file(s) is a distinct target, a duplicate of one, or a blank id.
TARGET_ROWS = (Metric.TARGETS, Metric.DUPLICATE_TARGET_ROWS, Metric.BLANK_TARGET_IDS)
USER_IDS = (Metric.EARLIER_USER_IDS, Metric.DESIRED_USER_IDS, Metric.ADDED, Metric.UNCHANGED, Metric.WITHHELD)


def _counted(counts: Counts, *metrics: Metric) -> dict[str, int]:
    return {m.value: counts.get(m) for m in metrics}


def build_export_report(spec: ExportSpec, counts: Counts, files: list[dict], targets: str, state: ExportState,
                        others: list[dict] = ()) -> dict:
    """The report of one export run: settings, counts (job-wide, from ``counts``) and the data files;
    ``others``: the versions an overwrite writes for the audiences it takes users out of."""
    ds = spec.data_source
    files = sorted(files, key=lambda f: f["sequence"])
    removed = counts.details(Metric.USER_IDS_REMOVED)
    return {
        "job": "export",
        "run_date": spec.run_date.isoformat(),
        "audience": spec.audience,
        "segment": spec.trait,
        "mode": spec.mode,
        "data_source": ds.name,
        "dpid": ds.dpid,
        "target_dpid": ds.target_dpid,
        "id_type": ds.id_type if ds.id_type == "visitor" else f"declared/{ds.declared}",
        "targets_path": targets,
        "existing": list(state.existing),
        # The export state (--state): where, the version read and the one this run commits, and the
        # pair count the version read says it holds (checked against what was read).
        "state_folder": state.folder,
        "state_previous_version": state.previous,
        "state_version": state.version,
        "state_replaced_version": state.replaced,  # a rerun (same --output and run date): the version it repeats
        "state_expected_pairs": state.expected_pairs,
        # An overwrite: the other audiences' versions it writes, what each held and the pairs and user
        # IDs it takes out of them (leavers that are not eligible keep no trait: transforms/export_others.py).
        "state_others": list(others),
        **_counted(counts, Metric.PROFILES_READ, Metric.CONSENT_UNKNOWN_ROWS, Metric.CONSENTED_BY_DEFAULT_ROWS,
                   Metric.SUPPRESSION_ENTRIES,
                   Metric.BLOCKED_USER_IDS, Metric.TARGET_ROWS, Metric.BLANK_TARGET_IDS, Metric.DUPLICATE_TARGET_ROWS,
                   Metric.TARGETS, *OUTCOMES, Metric.TARGETS_WITHOUT_ZEROS, Metric.EARLIER_PAIRS_READ,
                   *USER_IDS),
        "removed": sum(removed.values()),
        "removed_by_reason": {r.value: removed.get(r.value, 0) for r in REMOVALS},
        **_counted(counts, Metric.AUDIENCE_USER_IDS, Metric.PAIRS_SENT, Metric.PAIRS_REMOVED, Metric.STATE_PAIRS,
                   Metric.LINES),
        "nothing_to_send": not files,
        "files": [{k: f[k] for k in ("name", "sequence", "lines", "bytes", "md5")} for f in files],
        "control_file": spec.file_names.control_file if files else None,
    }


def _equal(what: str, expected: int, got: int) -> None:
    if expected != got:
        raise RunFailed(f"export counts do not add up: {what} (expected {expected}, accounted for {got}); "
                        "nothing was published")


# Removals whose profile is not eligible (consent, suppression): chosen by the customer, never a collapse;
# an overwrite lists such a leaver with no trait, taking it out of the other audiences too.
INELIGIBLE = (Removal.OPTED_OUT, Removal.CONSENT_UNKNOWN, Removal.SUPPRESSED)


def _ineligible_removed(report: dict) -> int:
    """The user IDs the run removes because a profile holding them is not eligible."""
    return sum(report["removed_by_reason"].get(r, 0) for r in INELIGIBLE)


def check_export_report(report: dict) -> None:
    """Raise :class:`RunFailed` unless every count adds up (see the module's docstring), or when a
    ``.sync`` export has leavers it cannot remove."""
    _equal("target rows", report["target_rows"], sum(report[k] for k in TARGET_ROWS))
    _equal("targets", report["targets"], sum(report[k] for k in OUTCOMES))
    _equal("removed by reason", report["removed"], sum(report["removed_by_reason"].values()))
    _equal("earlier user IDs", report["earlier_user_ids"], report["unchanged"] + report["removed"])
    _equal("desired user IDs", report["desired_user_ids"], report["added"] + report["unchanged"] + report["withheld"])
    _equal("audience user IDs", report["audience_user_ids"], report["added"] + report["unchanged"])
    if report.get("state_expected_pairs") is not None:
        _equal("pairs read from the export state", report["state_expected_pairs"], report["earlier_pairs_read"])
    if report["mode"] == "sync" and report["removed"] and not report["segment"].startswith("d_sid="):
        reasons = ", ".join(f"{k}={n}" for k, n in report["removed_by_reason"].items() if n)
        raise RunFailed(
            f"audience '{report['audience']}': {report['removed']} user ID(s) must leave it ({reasons}) but a "
            f"key-value audience ({report['segment']}) cannot be removed by a .sync file: rerun with "
            "--mode overwrite --state ROOT. Nothing was published"
        )
    ineligible = _ineligible_removed(report)
    for other in report.get("state_others", []):
        _equal(f"pairs of audience '{other['audience']}'", other["previous_pairs"],
               other["pairs"] + other["pairs_removed"])
        if not 0 < other["user_ids_removed"] <= min(other["pairs_removed"], ineligible):
            raise RunFailed(f"export counts do not add up: {other['user_ids_removed']} user IDs taken out of audience "
                            f"'{other['audience']}', not one to {other['pairs_removed']} (its pairs taken out) and "
                            f"at most {ineligible} (the leavers not eligible); nothing was published")
    members = report["audience_user_ids"] if report["mode"] == "overwrite" else report["added"]
    _equal("lines", members + report["removed"], report["lines"])
    _equal("lines in the files", report["lines"], sum(f["lines"] for f in report["files"]))


def check_export_extract(report: dict, extract: str, column: str, allow_empty: bool,
                         opt_out: str | None = None, field: str = "profiles.opt_out") -> None:
    """Raise :class:`RunFailed` (nothing published) when the extract gave the export nothing to go on,
    unless ``profiles.allow_empty_profiles``: no profile read at all (a header-only or empty extract),
    none with a value in the consent column ``opt_out`` (``field``; an emptied column: every profile of unknown
    consent, or under ``opt_out_missing: consented`` every profile consented, opted-out ones exported),
    or eligible targets found but none of them, nor any opted-out, unknown or suppressed row, with a
    user ID from ``column`` (an emptied or misnamed column). Either way every member would leave the
    audience (``deleted_profile``, ``consent_unknown``, ``id_changed``)."""
    if allow_empty:
        return
    if not report["profiles_read"]:
        raise RunFailed(
            f"profiles: no profile was read from '{extract}' (a header-only or empty extract?): every member would "
            "leave the audience; set profiles.allow_empty_profiles: true if that is expected. Nothing was published"
        )
    if report.get("consent_unknown_rows") == report["profiles_read"]:
        raise RunFailed(
            f"{field}: none of the {report['profiles_read']} profiles read has a value in column "
            f"'{opt_out}' (an emptied column?): every one is of unknown consent, none is exported and every member "
            "would leave the audience; set profiles.allow_empty_profiles: true if that is expected. Nothing was "
            "published"
        )
    if report.get("consented_by_default_rows") == report["profiles_read"]:
        raise RunFailed(
            f"{field}: none of the {report['profiles_read']} profiles read has a value in column "
            f"'{opt_out}' (an emptied column?): every one is read as consented (profiles.opt_out_missing: consented) "
            "and an opted-out profile would be exported; an extract holding no opted-out profile by design "
            f"(opt-outs filtered upstream) needs no such column: leave {field} out. Nothing was published"
        )
    if report["unmapped"] and not report["desired_user_ids"] and not report["blocked_user_ids"]:
        raise RunFailed(
            f"data source '{report['data_source']}': none of the {report['unmapped']} eligible target(s) of the "
            f"{report['profiles_read']} profiles read gave a user ID from column '{column}' (an empty or misnamed "
            "column?); set profiles.allow_empty_profiles: true if that is expected. Nothing was published"
        )


def check_export_targets(report: dict, targets: str, extract: str, id_column: str, allow: bool) -> None:
    """Raise :class:`RunFailed` (nothing published) when targets were read but none of them is a
    profile of the extract (a targets file of another column's values, or of ids written otherwise),
    unless ``allow`` (``--allow-shrink``). With nothing held (a first export) the collapse guard has
    nothing to protect and such a run sent nothing, exit 0: the audience never shared. Targets that are
    profile ids without their leading zeros (a spreadsheet saved the targets: :mod:`transforms.export_zeros`)
    fail it whatever ``allow`` says: their profiles would leave the audience (or never join it), exit 0."""
    if report.get(Metric.TARGETS_WITHOUT_ZEROS.value):
        raise RunFailed(f"targets: {report[Metric.TARGETS_WITHOUT_ZEROS.value]} of the {report['targets']} target ids "
                        f"in '{targets}' are not profiles of the extract ('{extract}', column '{id_column}') but are "
                        "profile ids without their leading zeros (a spreadsheet dropped them?): write the targets' "
                        "ids as text, keeping the zeros; nothing was published")
    if allow or not report["targets"] or report["unknown_profile"] < report["targets"]:
        return
    raise RunFailed(f"targets: none of the {report['targets']} target ids in '{targets}' is a profile of the extract "
                    f"('{extract}', column '{id_column}') (a targets file of another column, or ids written "
                    "otherwise?); nothing was published (rerun with --allow-shrink if intended)")


def check_export_shrink(report: dict, max_shrink: float | None) -> None:
    """Raise :class:`RunFailed` (nothing published) when the run would remove more than ``max_shrink``
    of the user IDs the platform holds (a header-only targets file, or one listing a small share of
    the audience): the export's collapse guard, as a night's. ``None``: ``--allow-shrink``. Removals
    for consent (opted out, consent unknown: never a yes) and suppression do not count: held back
    with the rest, those IDs would stay shared until someone reran the export. Replaced user IDs
    (``id_changed``: a new encryption key) count, a wrong key or normalization looks the same; the
    message names them."""
    held = report["earlier_user_ids"]
    chosen = _ineligible_removed(report)
    removed = report["removed"] - chosen
    if max_shrink is None or not held or removed <= held * max_shrink:
        return
    version = report["state_previous_version"]
    source = f"state v-{version:06d}" if version is not None else "the --existing exports"
    besides = f" (besides {chosen} opted out, of unknown consent or suppressed)" if chosen else ""
    # Most of them replaced by the same profiles' other user IDs (the first run after an AES-GCM key
    # activates gives every member a new token): not a lost targets file, and the message must say so.
    changed = report["removed_by_reason"].get(Removal.ID_CHANGED.value, 0)
    why = (f"; {changed} of them id_changed: the profiles give other user IDs than the platform holds (a new "
           "encryption key, another normalization or match_on?)" if 2 * changed > removed else "")
    raise RunFailed(f"audience '{report['audience']}': {removed} of the {held} user IDs the platform holds ({source}) "
                    f"would leave it{besides}, more than max_shrink={max_shrink:g}{why}; nothing was published "
                    "(rerun with --allow-shrink if intended)")


def committed_before(state: "ExportState", output_dir: str) -> bool:
    """Whether the audience's newest committed version is this run's own: the runner retried the
    publish step after an earlier attempt of it published the files and committed the state (a step
    fused after it failed, its worker lost before it reported the bundle done). The run holds the
    audience's state lock from before it read the state, so the version it would write, committed
    since and naming this output, is its own. The retry failed 'another export committed audience
    state ... Nothing was published', exit 1."""
    if state.folder is None:
        return False
    current = current_version(state.folder)
    return (current is not None and current.number == state.version
            and same_output(str(current.manifest.get("output", "")), output_dir))


def state_manifest(report: dict, output_dir: str, state_parts: list) -> dict:
    """The export state version's ``_SUCCESS``: what it holds and which run wrote it."""
    return {
        "data_source": report["data_source"], "dpid": report["dpid"], "target_dpid": report["target_dpid"],
        "audience": report["audience"], "segment": report["segment"], "mode": report["mode"],
        "run_date": report["run_date"], "pairs": report["state_pairs"], "user_ids": report["audience_user_ids"],
        "output": absolute(output_dir),
        "files": [f["name"] for f in report["files"]], "control_file": report["control_file"],
        "parts": [{"part": path.rsplit("/", 1)[-1], "rows": n} for _, path, n in sorted(state_parts)],
        "state_others": report.get("state_others", []),
    }


def summary_lines(report: dict) -> list[str]:
    """The export's summary on the command line: counts and file names only, never an ID."""
    if report.get("status") == "staged":
        return ["job staged (built and submitted, or written as a template): no report until it runs"]
    reasons = " ".join(f"{k}={n}" for k, n in report["removed_by_reason"].items() if n) or "none"
    out = [
        f"export '{report['audience']}' through {report['data_source']} (dpid {report['dpid']}, {report['id_type']}, "
        f"{report['mode']}): "
        f"targets={report['targets']} exported={report['exported']} already_present={report['already_present']} "
        f"shares_blocked_id={report['shares_blocked_id']} "
        f"unmapped={report['unmapped']} opted_out={report['opted_out']} unknown_profile={report['unknown_profile']} "
        f"consent_unknown={report['consent_unknown']} suppressed={report['suppressed']} "
        f"| target rows={report['target_rows']} duplicates={report['duplicate_target_rows']} "
        f"blank={report['blank_target_ids']}",
        f"user IDs: added={report['added']} removed={report['removed']} ({reasons}) unchanged={report['unchanged']} "
        f"withheld={report['withheld']} | audience: {report['earlier_user_ids']} -> {report['audience_user_ids']}",
    ]
    for o in report.get("state_others", []):
        out.append(f"state: audience '{o['audience']}' v-{o['version']:06d}: {o['user_ids_removed']} user ID(s) "
                   f"({o['pairs_removed']} pair(s)) taken out of it, {o['previous_pairs']} -> {o['pairs']} pairs")
    if report["nothing_to_send"]:
        out.append("onboarding: nothing to send, no data file written")
    else:
        names = ", ".join(f["name"] for f in report["files"])
        out.append(f"onboarding: {report['lines']} line(s) in {len(report['files'])} file(s): {names} "
                   f"+ {report['control_file']}")
    return out
