"""``report.html``: the run report as one self-contained page a person can read.

Rendered from the report dicts with Jinja2 (templates in ``transforms/templates/``, package data
that ships with the code to remote workers), autoescaped, with undefined names an error (a template
that names a missing figure fails the run instead of showing a blank). One file: inline CSS and inline
SVG, no script, no font, image or link that leaves the file; readable without JavaScript. The page
is a pure function of the report, so two identical runs write identical bytes (no clock in it).

A report holds counts, config names and file paths, never a record's value; everything shown is
escaped all the same.
"""
from __future__ import annotations

import math
import statistics
import uuid
from dataclasses import dataclass

import jinja2
import yaml
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from transforms import report_view
from transforms.errors import RunFailed
from transforms.summary import rate_text

PAGE = "report.html"

# Chart geometry (SVG user units).
_W, _H, _PAD_X, _PAD_Y = 320, 96, 8, 10
# A night's figure this far below the median of the nights before it is flagged as a drop.
DROP = 0.2


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("transforms", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=visible_bidi_controls,
    )
    env.filters["n"] = lambda v: f"{int(v):,}"
    env.filters["rate"] = rate_text
    env.filters["width"] = _width
    env.filters["yaml"] = lambda v: yaml.safe_dump(v, default_flow_style=False, sort_keys=False).rstrip("\n")
    env.filters["label"] = lambda key: str(key).replace("_", " ")
    env.filters["effect"] = report_view.finding_effect
    env.filters["suggestion_parts"] = report_view.suggestion_parts
    env.filters["to_check"] = report_view.fields_to_check
    return env


# Bidi control characters: one in a name (an audience pasted with a right-to-left override) reversed
# the rest of its paragraph, figures included ('dpid 12345' showed as '54321 dipd').
_BIDI_CONTROLS = {c: f"[U+{c:04X}]" for c in (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def visible_bidi_controls(value):
    """Every value the templates print, with its bidi control characters shown as code points."""
    return value.translate(_BIDI_CONTROLS) if isinstance(value, str) and not value.isascii() else value


_ENV: jinja2.Environment | None = None


def _template(name: str) -> jinja2.Template:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV.get_template(name)


def _width(part: float, whole: float) -> str:
    """A CSS width percentage for a bar (``0`` when the whole is empty)."""
    return f"{100 * part / whole:.1f}" if whole else "0"


# Numbers in an export report that are not counts: ids and the export state's version numbers.
_NOT_COUNTS = {"dpid", "target_dpid", "state_previous_version", "state_version", "state_replaced_version"}


# -------------------------------------------------------------------------------------------------
# One run (import, nightly partition, export)
# -------------------------------------------------------------------------------------------------
# Segments a data source's table lists at most: a delivery naming 200,000 segments wrote a 46 MB page.
SEGMENT_ROWS = 1000


def _listed_segments(segments: dict) -> tuple[dict, int, int, int]:
    """The segments the page lists (in report.json's order): all of them, or SEGMENT_ROWS: those
    lines named that got no member ("why does segment X have no one?"), in half the rows at most
    (1,500 of them filled every row, the audience itself not listed), and the largest.
    Returns ``(listed, how many are not, their members, their file-audience entries)``."""
    if len(segments) <= SEGMENT_ROWS:
        return segments, 0, 0, 0

    def size(seg: dict) -> int:
        return max(seg.get("members", 0), seg.get("file_audience", 0))

    empty = [sid for sid, seg in segments.items() if not size(seg) and seg.get("lines", 0)]
    others = sorted((sid for sid, seg in segments.items() if size(seg) or not seg.get("lines", 0)),
                    key=lambda sid: -size(segments[sid]))
    largest = min(len(others), SEGMENT_ROWS - min(len(empty), SEGMENT_ROWS // 2))
    keep = {*others[:largest], *sorted(empty, key=lambda sid: -segments[sid]["lines"])[:SEGMENT_ROWS - largest]}
    listed = {sid: seg for sid, seg in segments.items() if sid in keep}
    hidden = [seg for sid, seg in segments.items() if sid not in keep]
    return (listed, len(hidden), sum(seg.get("members", 0) for seg in hidden),
            sum(seg.get("file_audience", 0) for seg in hidden))


def _source_view(name: str, entry: dict) -> dict:
    segments, hidden, hidden_members, hidden_entries = _listed_segments(entry["segments"])
    largest = max((max(s.get("members", 0), s.get("file_audience", 0)) for s in segments.values()), default=0)
    return {
        "name": name,
        "anchor": f"ds-{_anchor(name)}",
        "entry": entry,
        "rate": report_view.match_rate(entry),
        "funnel": report_view.funnel(entry),
        "rejections": report_view.rejections(entry),
        "rejected": report_view.rejected_lines(entry),
        "findings": _finding_rows(report_view.findings(entry)),
        "to_diagnose": report_view.to_diagnose(entry),
        "looked_up": report_view.looked_up(entry),
        "memberships": report_view.memberships(entry),
        "file_audience_entries": report_view.file_audience_entries(entry),
        "keeps_file_audience": report_view.keeps_file_audience(entry),
        "iv_suspect": report_view.iv_suspect(entry),
        "segments": segments,
        "segment_count": len(entry["segments"]),
        "segments_not_listed": hidden,
        "members_not_listed": hidden_members,
        "file_audience_not_listed": hidden_entries,
        "largest_segment": largest,
        "lines_counted": report_view.segment_lines_counted(entry),
        "top_finding": report_view.top_line(entry),
        "undelivered": report_view.undelivered(entry),
        "file_names": [f["path"].rsplit("/", 1)[-1] for f in entry.get("files", [])],
    }


def _finding_rows(found: list[dict] | None) -> list[tuple[str, dict]] | None:
    """``[(row, finding)]``: each finding's row on the page is its kind, the next ones of a kind
    ``kind.2``, ``kind.3`` (AES-GCM gives a key_id finding per key id)."""
    if found is None:
        return None
    seen: dict[str, int] = {}
    rows = []
    for finding in found:
        kind = str(finding.get("kind"))
        seen[kind] = seen.get(kind, 0) + 1
        rows.append((kind if seen[kind] == 1 else f"{kind}.{seen[kind]}", finding))
    return rows


def _anchor(name: str) -> str:
    """An id-safe fragment for a data source name (config names are already simple; be safe anyway).
    '.' is kept: config names may hold it, and 'a.b' and 'a_b' must not share an id."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _export_counts(report: dict) -> tuple[list[tuple[str, int]], dict[str, dict]]:
    """The export report's counts, in its own order: plain counts, and nested count tables (e.g. a
    ``..._by_reason`` mapping), whatever fields the export adds."""
    flat, nested = [], {}
    for key, value in report.items():
        if isinstance(value, bool) or key in _NOT_COUNTS:
            continue
        if isinstance(value, int):
            flat.append((key, value))
        elif isinstance(value, dict) and value and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            nested[key] = value
    return flat, nested


def render_run(report: dict) -> str:
    """The page of one run's report (``job``: ``import`` or ``export``)."""
    job = report.get("job")
    if job == "export":
        flat, nested = _export_counts(report)
        return _template("export.html.j2").render(report=report, counts=flat, tables=nested,
                                                  largest=max((v for _, v in flat), default=0))
    if job != "import":
        raise ValueError(f"not a run report: job={job!r}")
    sources = [_source_view(name, entry) for name, entry in report["data_sources"].items()]
    return _template("run.html.j2").render(report=report, sources=sources, total=_total(report))


def _total(report: dict) -> dict | None:
    """The overview's total row (several data sources only)."""
    return report_view.totals(report) if len(report["data_sources"]) > 1 else None


# -------------------------------------------------------------------------------------------------
# A nightly root: the trend over the nights found
# -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NightReport:
    date: str  # YYYY-MM-DD
    href: str  # the partition's page, relative to the root page
    report: dict


@dataclass(frozen=True)
class Chart:
    """An inline SVG line chart: polyline segments (gaps where a night has no value) and points."""

    segments: list[str]
    points: list[tuple[float, float, str]]  # x, y, tooltip
    top: str
    bottom: str
    width: int = _W
    height: int = _H


def _chart(days: list[int], values: list[float | None], top: float, tips: list[str], top_label: str) -> Chart:
    first, last = (days[0], days[-1]) if days else (0, 0)
    span = max(last - first, 1)
    points, segments, run = [], [], []
    for day, value, tip in zip(days, values, tips):
        if value is None:
            if run:
                segments.append(" ".join(run))
            run = []
            continue
        x = _PAD_X + (_W - 2 * _PAD_X) * ((day - first) / span if last > first else 0.5)
        y = _H - _PAD_Y - (_H - 2 * _PAD_Y) * (value / top if top else 0)
        points.append((round(x, 1), round(y, 1), tip))
        run.append(f"{x:.1f},{y:.1f}")
    if run:
        segments.append(" ".join(run))
    return Chart(segments, points, top_label, "0")


def _drop(values: list[float | None]) -> bool:
    """Whether the last night's value fell more than :data:`DROP` below the median of the nights before it."""
    known = [v for v in values if v is not None]
    if len(known) < 2 or values[-1] is None:
        return False
    before = statistics.median(known[:-1])
    return before > 0 and values[-1] < (1 - DROP) * before


def _ordinal(day: str) -> int:
    from datetime import date

    return date.fromisoformat(day).toordinal()


def _trend_view(name: str, nights: list[report_view.Night], hrefs: dict[str, str]) -> dict:
    days = [_ordinal(n.date) for n in nights]
    rates = [None if n.match_rate is None else 100 * n.match_rate for n in nights]
    members = [n.members for n in nights]
    top_members = max(members, default=0)
    top_members = _nice_ceiling(top_members)
    return {
        "name": name,
        "anchor": f"ds-{_anchor(name)}",
        "nights": nights,
        "hrefs": hrefs,
        "latest": nights[-1],
        "rate_chart": _chart(days, rates, 100, [f"{n.date}: {rate_text(n.match_rate)}" for n in nights], "100%"),
        "members_chart": _chart(days, members, top_members, [f"{n.date}: {n.members:,} members" for n in nights],
                                f"{top_members:,}"),
        "rate_drop": _drop(rates),
        "members_drop": _drop(members),
    }


def _nice_ceiling(value: int) -> int:
    """A round axis top at or above ``value`` (1, 2 or 5 times a power of ten)."""
    if value <= 0:
        return 1
    power = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power


def render_nightly(nights: list[NightReport], unreadable: list[str] = ()) -> str:
    """The page of a nightly root: per data source, match rate and members over the nights (date order);
    ``unreadable``: the published nights (folder names) whose report could not be read, named on it."""
    nights = sorted(nights, key=lambda n: n.date)
    series = report_view.trend([(n.date, n.report) for n in nights])
    hrefs = {n.date: n.href for n in nights}
    sources = [_trend_view(name, found, hrefs) for name, found in series.items()]
    return _template("nightly.html.j2").render(nights=nights, sources=sources, unreadable=sorted(unreadable))


# -------------------------------------------------------------------------------------------------
# Writing
# -------------------------------------------------------------------------------------------------
def write_page(path: str, html: str) -> None:
    """Write a page, local or ``gs://``. A local page is written beside and renamed into place, so
    a reader never sees half a page; an object store's write is all or nothing already."""
    data = html.encode("utf-8")
    if "://" in path:
        with FileSystems.create(path, mime_type="text/html") as sink:
            sink.write(data)
        return
    partial = f"{path}.{uuid.uuid4().hex[:8]}.partial"
    try:
        with FileSystems.create(partial, mime_type="text/html") as sink:
            sink.write(data)
        FileSystems.rename([partial], [path])
    except Exception as exc:
        if FileSystems.exists(partial):  # a page that did not reach its place leaves nothing
            FileSystems.delete([partial])
        if isinstance(exc, BeamIOError) and exc.exception_details:  # the rename's own error
            exc = next(iter(exc.exception_details.values()))
        if isinstance(exc, OSError) and exc.args and isinstance(exc.args[0], OSError):  # Beam wraps it once more
            exc = exc.args[0]
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise RunFailed(f"{path}: cannot write the page ({reason})") from None
