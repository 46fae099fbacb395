"""The end-of-run summary on the terminal: one aligned table per import (a row per data source, in the
report's order), the rejections by reason, and the best diagnosis finding. Counts only, never an ID."""
from __future__ import annotations

from transforms.report_view import match_rate, memberships, rejected_lines, rejected_reasons, top_line, totals

STAGED = "job staged (built and submitted, or written as a template): no report until it runs"

COLUMNS = ("data source", "received", "reconciled", "file audience", "unmatched", "rejected", "match rate", "members",
           "top diagnosis")
# Text columns are left-aligned, counts right-aligned.
_LEFT = {"data source", "top diagnosis"}


def table(headers: tuple[str, ...], rows: list[tuple[str, ...]], indent: str = "") -> list[str]:
    """Rows of text cells as aligned lines (trailing blanks stripped)."""
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]

    def line(cells) -> str:
        text = "  ".join(str(c).ljust(w) if h in _LEFT else str(c).rjust(w) for h, c, w in zip(headers, cells, widths))
        return (indent + text).rstrip()

    return [line(headers), *(line(r) for r in rows)]


def rate_text(rate: float | None) -> str:
    """A share as a percentage with one decimal; one short of 1 (or above 0) that would round to
    100.0% (0.0%) prints ">99.9%" ("<0.1%"): 19,999 of 20,000 is not every line."""
    if rate is None:
        return "-"
    text = f"{rate:.1%}"
    if rate < 1 and text == "100.0%":
        return ">99.9%"
    if rate > 0 and text == "0.0%":
        return "<0.1%"
    return text


def import_table(report: dict, indent: str = "") -> list[str]:
    """The per-data-source table of an import report (and its total row)."""
    rows = []
    for name, e in report["data_sources"].items():
        rows.append((name, f"{e['received']:,}", f"{e['reconciled']:,}", f"{e['file_audience']:,}",
                     f"{e['unmatched']:,}", f"{rejected_lines(e):,}", rate_text(match_rate(e)),
                     f"{memberships(e):,}", top_line(e) or "-"))
    if len(rows) > 1:
        t = totals(report)
        rows.append(("total", *(f"{t[k]:,}" for k in ("received", "reconciled", "file_audience", "unmatched", "rejected")),
                     rate_text(t["rate"]), f"{t['members']:,}", ""))
    return table(COLUMNS, rows, indent)


def reasons_lines(report: dict, indent: str = "") -> list[str]:
    """``name: reason N, reason N`` per data source with rejected lines (most frequent first): the
    lines of the table's "rejected" column, so not no_matching_profile (the "unmatched" column)."""
    out = []
    width = max((len(n) for n in report["data_sources"]), default=0)
    for name, e in report["data_sources"].items():
        reasons = rejected_reasons(e)
        if reasons:
            out.append(f"{indent}  {name.ljust(width)}  " + ", ".join(f"{r.reason} {r.lines:,}" for r in reasons))
    return [f"{indent}rejected by reason:", *out] if out else []


def summary_lines(report: dict) -> list[str]:
    """The import's summary: profiles read, the table, the rejections by reason."""
    if report.get("status") == "staged":
        return [STAGED]
    return [f"profiles read: {report['profiles_read']:,}", *import_table(report), *reasons_lines(report)]
