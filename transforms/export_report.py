"""The export's report (``report.json``), the check that its counts add up, and its command-line summary.

Every row of the targets file(s) is a distinct target, a repeat of one, or a blank id
(:data:`TARGET_ROWS`); every distinct target has exactly one of the :data:`OUTCOMES`; the data files
hold exactly the lines to send. The run checks this before publishing anything.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from transforms.errors import RunFailed
from transforms.outcomes import Counts, Metric

if TYPE_CHECKING:
    from transforms.export import ExportSpec

# Every distinct target id is counted in exactly one of these.
OUTCOMES = (Metric.EXPORTED, Metric.ALREADY_PRESENT, Metric.UNMAPPED, Metric.OPTED_OUT, Metric.UNKNOWN_PROFILE)
# Every row of the targets file(s) is a distinct target, a duplicate of one, or a blank id.
TARGET_ROWS = (Metric.TARGETS, Metric.DUPLICATE_TARGET_ROWS, Metric.BLANK_TARGET_IDS)


def _counted(counts: Counts, *metrics: Metric) -> dict[str, int]:
    return {m.value: counts.get(m) for m in metrics}


def build_export_report(spec: ExportSpec, counts: Counts, files: list[dict], targets: str, existing: list[str]) -> dict:
    """The report of one export run: settings, counts (job-wide, from ``counts``) and the data files."""
    ds = spec.data_source
    files = sorted(files, key=lambda f: f["sequence"])
    return {
        "job": "export",
        "run_date": spec.run_date.isoformat(),
        "audience": spec.audience,
        "segment": spec.trait,
        "data_source": ds.name,
        "dpid": ds.dpid,
        "id_type": ds.id_type if ds.id_type == "visitor" else f"declared/{ds.declared}",
        "targets_path": targets,
        "existing": list(existing),
        **_counted(counts, Metric.PROFILES_READ, Metric.TARGET_ROWS, Metric.BLANK_TARGET_IDS,
                   Metric.DUPLICATE_TARGET_ROWS, Metric.TARGETS, *OUTCOMES, Metric.OPTED_OUT_IN_EXISTING,
                   Metric.EXISTING_PAIRS_READ, Metric.PAIRS_SENT, Metric.LINES),
        "nothing_to_send": not files,
        "files": [{k: f[k] for k in ("name", "sequence", "lines", "bytes", "md5")} for f in files],
        "control_file": spec.file_names.control_file if files else None,
    }


def check_export_report(report: dict) -> None:
    """Raise :class:`RunFailed` unless every target row and every distinct target is accounted for once
    and the files hold exactly the lines to send."""
    rows = sum(report[k] for k in TARGET_ROWS)
    if rows != report["target_rows"]:
        raise RunFailed(f"export counts do not add up: {report['target_rows']} target rows, accounted for {rows}")
    outcomes = sum(report[k] for k in OUTCOMES)
    if outcomes != report["targets"]:
        raise RunFailed(f"export counts do not add up: {report['targets']} targets, accounted for {outcomes}")
    in_files = sum(f["lines"] for f in report["files"])
    if in_files != report["lines"] or (report["lines"] > 0) != (report["exported"] > 0):
        raise RunFailed(f"export files hold {in_files} lines, expected {report['lines']}")


def summary_lines(report: dict) -> list[str]:
    """The export's summary on the command line: counts and file names only, never an ID."""
    if report.get("status") == "staged":
        return ["job staged (built and submitted, or written as a template): no report until it runs"]
    out = [
        f"export '{report['audience']}' through {report['data_source']} (dpid {report['dpid']}, {report['id_type']}): "
        f"targets={report['targets']} exported={report['exported']} already_present={report['already_present']} "
        f"unmapped={report['unmapped']} opted_out={report['opted_out']} unknown_profile={report['unknown_profile']} "
        f"| target rows={report['target_rows']} duplicates={report['duplicate_target_rows']} "
        f"blank={report['blank_target_ids']}",
    ]
    if report["nothing_to_send"]:
        out.append("onboarding: nothing to send, no data file written")
    else:
        names = ", ".join(f["name"] for f in report["files"])
        out.append(f"onboarding: {report['lines']} line(s) in {len(report['files'])} file(s): {names} "
                   f"+ {report['control_file']}")
    return out
