"""report.html: what the page shows (funnel, reasons, segments, diagnosis, trend), that it is one
self-contained file with no record value in it, and where it is written (every run, the nightly
root, ``audience-sync report``)."""
from __future__ import annotations

import copy
import json
import re
import sys
from html import unescape
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import DEMO, ROOT, cli_in_process
from page_dom import figures
from pipelines import nightly
from transforms.html_report import render_nightly, render_run, NightReport
from transforms.outcomes import DECRYPT_FAILURES, Reason
from transforms.publish import publish_outputs


# A finding in the shape the mismatch diagnosis writes (report.json, per data source).
FINDINGS = [
    {"kind": "digest", "suggestion": {"digest": "base64"}, "would_match": 310, "sampled": 5000,
     "message": "310 of 5,000 sampled lines without a match are profile emails hashed as base64 digests"},
    {"kind": "normalization", "suggestion": {"normalization": "uid2"}, "would_match": 4120, "sampled": 5000,
     "message": "4,120 of 5,000 sampled lines without a match are digests of profile emails under uid2 rules"},
]


def cli(*args):
    return cli_in_process(*args)


@pytest.fixture(scope="module")
def demo_out(demo_cli_run):
    return demo_cli_run[0]  # (conftest.py: the same demo run as tests/test_import_e2e.py's)


def expected_figures(report: dict) -> dict[tuple, str]:
    """What the page must show for an import report, computed here from report.json alone:
    ``{(data source, row, name): text}`` (see tests/page_dom.py)."""
    want = {}
    for name, e in report["data_sources"].items():
        rejected = e["format_errors"] + e["invalid_ids"] + e["removals_only"]
        members = sum(s["members"] for s in e["segments"].values())
        looked_up = e["reconciled"] + e["unmatched"] + e["file_audience"]
        rate = expected_rate(e["reconciled"], looked_up)
        overview = ("data-row", "overview")
        for key, value in (("received", e["received"]), ("reconciled", e["reconciled"]), ("file_audience", e["file_audience"]),
                           ("unmatched", e["unmatched"]), ("rejected", rejected), ("members", members)):
            want[(name, overview, key)] = f"{value:,}"
        want[(name, overview, "match_rate")] = rate
        want[(name, None, "match_rate")] = rate
        want[(name, None, "memberships")] = f"{members:,}"
        to_add = e["received"] - e["format_errors"] - e["removals_only"]
        steps = {"received": e["received"], "well_formed": e["received"] - e["format_errors"], "to_add": to_add,
                 "valid_ids": to_add - e["invalid_ids"], "matched": e["reconciled"]}
        if e["decrypts"]:  # a line without a token is not decrypted either
            steps["decrypted"] = to_add - sum(e["rejected_by_reason"].get(r, 0) for r in (*DECRYPT_FAILURES, "missing_value"))
        if "suppressed" in e or e["file_audience"]:  # keeps a file audience (or some lines went there)
            steps["file_audience"] = e["file_audience"]
        for step, value in steps.items():
            want[(name, ("data-step", step), step)] = f"{value:,}"
        if e.get("suppressed"):
            want[(name, None, "suppressed")] = f"{e['suppressed']:,}"
        if e.get("iv_suspect"):
            want[(name, None, "iv_suspect_position")] = f"{e['iv_suspect']['position']:,}"
            want[(name, None, "iv_suspect_matched")] = f"{e['reconciled']:,}"
            want[(name, None, "iv_suspect_decrypted")] = f"{looked_up:,}"
        for reason, n in e["rejected_by_reason"].items():
            want[(name, ("data-reason", reason), "reason")] = f"{n:,}"
        # A segment's lines: absent when 0, or in a report of a release before they were counted (no
        # match_form, and no segment has them): the page then shows no lines column.
        lines_counted = "match_form" in e or any("lines" in s for s in e["segments"].values())
        for segment, s in e["segments"].items():
            want[(name, ("data-segment", segment), "members")] = f"{s['members']:,}"
            if lines_counted:
                want[(name, ("data-segment", segment), "segment_lines")] = f"{s.get('lines', 0):,}"
        seen: dict[str, int] = {}  # the page's order (most lines first); a kind's next findings are kind.2, ...
        for finding in sorted(e.get("diagnosis", []), key=lambda f: -f["would_match"]):
            seen[finding["kind"]] = seen.get(finding["kind"], 0) + 1
            row = ("data-finding", finding["kind"] + (f".{seen[finding['kind']]}" if seen[finding["kind"]] > 1 else ""))
            want[(name, row, "would_match")] = f"{finding['would_match']:,}"
            want[(name, row, "sampled")] = f"{finding['sampled']:,}"
    # The total row (several data sources): every data source's figures added up, as report.json's totals are.
    entries = list(report["data_sources"].values())
    if len(entries) > 1:
        total = {k: sum(e[k] for e in entries) for k in ("received", "reconciled", "file_audience", "unmatched",
                                                           "format_errors", "invalid_ids", "removals_only")}
        members = sum(s["members"] for e in entries for s in e["segments"].values())
        overview = ("data-row", "overview")
        for key, value in (("received", total["received"]), ("reconciled", total["reconciled"]), ("members", members),
                           ("file_audience", total["file_audience"]), ("unmatched", total["unmatched"]),
                           ("rejected", total["format_errors"] + total["invalid_ids"] + total["removals_only"])):
            want[("", overview, key)] = f"{value:,}"
        want[("", overview, "match_rate")] = expected_rate(
            total["reconciled"], total["reconciled"] + total["unmatched"] + total["file_audience"])
    want[(None, None, "profiles_read")] = f"{report['profiles_read']:,}"
    return want


def expected_rate(reconciled: int, looked_up: int) -> str:
    """A match rate as the page must print it: one decimal, but never 100.0% or 0.0% unless exact."""
    if not looked_up:
        return "-"
    text = f"{reconciled / looked_up:.1%}"
    if text == "100.0%" and reconciled < looked_up:
        return ">99.9%"
    if text == "0.0%" and reconciled:
        return "<0.1%"
    return text


def shown(html: str) -> dict[tuple, str]:
    return {(f.source, f.row, f.name): f.text for f in figures(html)}


def assert_shows_the_report(html: str, report: dict) -> None:
    want, got = expected_figures(report), shown(html)
    wrong = {k: (v, got.get(k)) for k, v in want.items() if got.get(k) != v}
    assert not wrong, wrong
    assert {s for s, _, _ in got if s} == set(report["data_sources"])


def assert_self_contained(html: str) -> None:
    """One file: nothing fetched, nothing run (checked on the parsed tags, not on escaped text)."""
    tags = elements(html)
    assert not {t for t, _ in tags} & {"script", "link", "img", "iframe", "object", "embed", "base", "image", "use"}
    for tag, attrs in tags:
        assert not [a for a in attrs if a.startswith("on")], (tag, attrs)  # no event handler
        for attr in ("src", "href", "xlink:href", "action", "srcset"):
            target = (attrs.get(attr) or "").strip().lower()
            assert not target or target.startswith("#") or re.fullmatch(r"dt=\d{4}-\d{2}-\d{2}/report\.html", target), (tag, attrs)
    style = html.lower()[html.lower().index("<style>"):html.lower().index("</style>")]
    assert "url(" not in style and "@import" not in style and "@font-face" not in style


def elements(html: str) -> list[tuple[str, dict]]:
    from html.parser import HTMLParser

    found = []

    class Tags(HTMLParser):
        def handle_starttag(self, tag, attrs):
            found.append((tag, dict(attrs)))

    Tags().feed(html)
    return found


def demo_needles() -> list[str]:
    """Every demo address, phone, visitor ID and the demo key and IV."""
    profiles = pq.read_table(DEMO / "profiles.parquet").to_pylist()
    needles = [(DEMO / "keys" / f).read_text().strip() for f in ("demo-only-aes256.key", "demo-only-iv.hex")]
    needles += [p["email"].strip() for p in profiles if p["email"]]
    needles += [p["mobile"] for p in profiles if p["mobile"]] + [v for p in profiles for v in p["visitor_ids"]]
    needles += [p["profile_id"] for p in profiles if len(p["profile_id"]) > 6]
    return needles


# -------------------------------------------------------------------------------------------------
# A run's page
# -------------------------------------------------------------------------------------------------
def test_demo_run_writes_its_page_with_the_reports_numbers(demo_out):
    report = json.loads((demo_out / "report.json").read_text())
    html = (demo_out / "report.html").read_text()
    assert_shows_the_report(html, report)
    assert_self_contained(html)
    for entry in report["data_sources"].values():  # every reason is explained
        for reason in entry["rejected_by_reason"]:
            assert Reason(reason).description.replace("'", "&#39;") in html


def test_demo_page_carries_no_address_id_or_key(demo_out):
    html = (demo_out / "report.html").read_text().lower()
    needles = demo_needles()
    assert len(needles) > 500
    assert [n for n in needles if n.lower() in html] == []


def test_findings_are_shown_best_first_with_their_config_change():
    report = _import_report()
    entry = report["data_sources"]["crm-hashed-emails"]
    entry["diagnosis"] = copy.deepcopy(FINDINGS)
    report["data_sources"]["visitors"]["diagnosis"] = []
    html = render_run(report)
    assert_shows_the_report(html, report)
    section = html[html.index('data-source="crm-hashed-emails"', html.index("</table>")):]
    best, other = section.index("under uid2 rules"), section.index("as base64 digests")
    assert best < other  # sorted by would_match
    assert "normalization: uid2" in section and "digest: base64" in section  # the change, as YAML
    overview_row = html[html.index('<tr data-source="crm-hashed-emails"'):].split("</tr>")[0]
    assert "normalization: uid2 (4,120 of 5,000 sampled)" in overview_row
    visitors = html[html.index('id="ds-visitors"'):html.index('id="ds-crm-hashed-emails"')]
    assert "No finding" in visitors
    plain = html[html.index('id="ds-crm-plain"'):html.index('id="ds-web-encrypted-emails"')]
    assert "Diagnosis" not in plain  # not diagnosed: no section at all


def test_a_finding_says_would_match_and_a_decryption_finding_would_decrypt():
    """Sampled lines may be rejected ones (invalid_hash, decrypt_failed), not only unmatched ones; a
    decryption finding's lines would decrypt, whether they then match is not counted."""
    report = _import_report()
    report["data_sources"]["crm-hashed-emails"]["diagnosis"] = copy.deepcopy(FINDINGS[:1])
    report["data_sources"]["web-encrypted-emails"]["diagnosis"] = [
        {"kind": kind, "suggestion": {"encryption.iv": None}, "would_match": 20, "sampled": 20, "message": "..."}
        for kind in ("iv",)]
    html = render_run(report)
    hashed = html[html.index('id="ds-crm-hashed-emails"'):html.index('id="ds-uid2-phones"')]
    encrypted = html[html.index('id="ds-web-encrypted-emails"'):]
    text = lambda part: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", part))  # noqa: E731
    assert "310 of 5,000 sampled lines without a match would match" in text(hashed)
    assert "20 of 20 sampled lines without a match would decrypt" in text(encrypted)
    assert "unmatched IDs" not in text(html)


def test_a_source_with_force_reconciliation_keeps_no_file_audience_on_its_page():
    """An encrypted email source with force_reconciliation: true decrypts but keeps no file audience
    (report.json: no ``suppressed``, as night_guard reads it): its lines without a profile are
    unmatched, and the page said "unmatched or kept in the file audience" and "kept in the file
    audience 0". A source that keeps one shows the row, also at 0."""
    report = _import_report()
    forced = report["data_sources"]["web-encrypted-emails"]
    forced["unmatched"], forced["file_audience"] = forced["file_audience"], 0
    for segment in forced["segments"].values():
        segment.pop("file_audience")
    forced.pop("suppressed", None)
    html = render_run(report)
    assert_shows_the_report(html, report)
    section = html[html.index('id="ds-web-encrypted-emails"'):]
    assert 'data-step="file_audience"' not in section and "kept in the file audience" not in section
    kept = copy.deepcopy(report)
    kept["data_sources"]["web-encrypted-emails"]["suppressed"] = 0
    section = render_run(kept)[html.index('id="ds-web-encrypted-emails"'):]
    assert 'data-step="file_audience"' in section and "unmatched or kept in the file audience" in section


def test_the_funnel_step_before_the_ids_does_not_say_segments_to_add():
    """A nightly's iter dump looks up the lines that only remove segments (their removals apply),
    so its funnel's third step holds them: the page labelled it "with segments to add"."""
    html = render_run(_import_report())
    assert "with segments to add" not in html and html.count("IDs to look up") == len(_import_report()["data_sources"])


def test_lines_without_a_token_are_not_counted_as_decrypted():
    """An encrypted source's blank tokens are missing_value, never decrypted (no key or IV is blamed
    for them). The funnel counted them in its "decrypted" step: 30 blank lines beside 12 decrypt
    failures read "decrypted 180", where 150 were, and "-30 invalid IDs" at the next step."""
    report = _import_report()
    e = report["data_sources"]["web-encrypted-emails"]
    e["received"] += 30
    e["invalid_ids"] += 30
    e["rejected_by_reason"]["missing_value"] = 30
    html = render_run(report)
    assert_shows_the_report(html, report)
    decrypted = [f for f in figures(html) if f.source == "web-encrypted-emails" and f.row == ("data-step", "decrypted")]
    to_add = e["received"] - e["format_errors"] - e["removals_only"]
    assert [f.number for f in decrypted] == [to_add - 12 - 30]
    funnel = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[html.index('id="ds-web-encrypted-emails"'):]))
    assert "&minus;42 decrypt failures or blank tokens" in funnel, funnel[:600]


def test_a_data_source_with_no_line_to_diagnose_does_not_say_sampled_lines_were_tried():
    """Every line with a valid ID matched, and the IDs rejected are empty (no setting explains those):
    the page said "No finding: no alternative setting that was tried explains the sampled lines
    without a match", of lines there were none of."""
    report = _import_report()
    e = report["data_sources"]["crm-hashed-emails"]
    e["reconciled"], e["unmatched"], e["diagnosis"] = e["reconciled"] + e["unmatched"], 0, []
    reasons = e["rejected_by_reason"]
    del reasons["no_matching_profile"]
    reasons["missing_value"] = reasons.pop("invalid_hash")
    html = render_run(report)
    assert_shows_the_report(html, report)
    section = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[html.index('id="ds-crm-hashed-emails"'):html.index('id="ds-uid2-phones"')]))
    assert "sampled lines" not in section and "Nothing to diagnose" in section, section[:800]
    e["unmatched"], e["reconciled"] = 1, e["reconciled"] - 1  # one line without a match: sampled, no finding
    reasons["no_matching_profile"] = 1
    section = render_run(report)
    assert "No finding: no alternative setting that was tried explains the sampled lines without a match" in section


def test_a_data_source_without_a_valid_id_does_not_say_every_line_with_one_matched():
    """Every line malformed (max_format_error_ratio: 1.0), or every ID empty: nothing was looked up,
    and the page said "Nothing to diagnose: every line with a valid ID matched a profile", of lines
    there were none of (the operator read that the lines matched). It says no line had a valid ID."""
    report = _import_report()
    e = report["data_sources"]["crm-hashed-emails"]
    received = e["received"]
    for k in ("reconciled", "unmatched", "file_audience", "invalid_ids", "removals_only"):
        e[k] = 0
    e["format_errors"], e["rejected_by_reason"], e["diagnosis"] = received, {"malformed_line": received}, []
    for seg in e["segments"].values():
        seg.update(members=0, lines=0)
    html = render_run(report)
    assert_shows_the_report(html, report)
    section = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html[html.index('id="ds-crm-hashed-emails"'):html.index('id="ds-uid2-phones"')]))
    assert "every line with a valid ID matched" not in section, section[:800]
    assert "Nothing to diagnose: no line had a valid ID to look up" in section, section[:800]


def test_file_audience_entries_withheld_by_suppression_lists_are_on_the_page():
    """report.json counts the file-audience entries a suppression list withheld (``suppressed``); the
    page did not show them, so the entries written were fewer than the lines kept with no word why."""
    report = _import_report()
    report["data_sources"]["web-encrypted-emails"]["suppressed"] = 28
    html = render_run(report)
    assert_shows_the_report(html, report)
    assert shown(html)[("web-encrypted-emails", None, "suppressed")] == "28"
    report["data_sources"]["web-encrypted-emails"]["suppressed"] = 0
    assert ("web-encrypted-emails", None, "suppressed") not in shown(render_run(report))


def test_a_segment_the_dumps_name_that_got_no_member_is_on_the_page_with_its_lines():
    """"Why does segment 1403 have no one?": its lines are listed, beside its 0 members."""
    report = _import_report()
    entry = next(iter(report["data_sources"].values()))
    entry["segments"]["1403"] = {"members": 0, "lines": 12}
    html = render_run(report)
    assert_shows_the_report(html, report)
    assert shown(html)[(next(iter(report["data_sources"])), ("data-segment", "1403"), "members")] == "0"


def test_a_report_of_a_release_that_did_not_count_segment_lines_shows_no_lines_of_0():
    """`audience-sync report` on a run of a release before 2026-12-04 (report.json's segments without
    `lines`): the page said every segment was named by 0 lines, beside its 59 members. It shows no
    lines column, and says why; a report that counts them shows a segment without lines as 0."""
    report = _import_report()  # an older release's report: segments {"members": N}, no match_form
    name, entry = "visitors", report["data_sources"]["visitors"]
    assert "match_form" not in entry and not any("lines" in s for s in entry["segments"].values())
    html = render_run(report)
    assert_shows_the_report(html, report)
    assert not [f for f in figures(html) if f.name == "segment_lines"]
    section = html[html.index(f'id="ds-{name}"'):].split("</section>")[0]
    assert "does not count the lines naming each segment" in unescape(section)
    entry["match_form"] = {"dpid": 1234}  # a report that counts them: absent is 0
    assert shown(render_run(report))[(name, ("data-segment", "1401"), "segment_lines")] == "0"


def test_a_data_source_of_many_segments_shows_its_largest_and_its_empty_ones_and_says_how_many_more():
    """A delivery naming 200,000 segments wrote a 46 MB page (525,000: 122 MB) that a browser could
    not open, one row per segment. The page lists SEGMENT_ROWS: first the segments named by lines
    that got no member ("why does segment X have no one?"), then the largest; it says how many
    more there are and that report.json lists them all."""
    from transforms.html_report import SEGMENT_ROWS

    report = _import_report()
    name, entry = next(iter(report["data_sources"].items()))
    n = SEGMENT_ROWS + 500
    entry["segments"] = {str(1000 + i): {"members": i, "lines": i + 1} for i in range(n)}  # 1000 (0 members) .. ordered
    entry["segments"]["1000"]["lines"] = 7
    html = render_run(report)
    rows = [f.row[1] for f in figures(html) if f.source == name and f.row and f.row[0] == "data-segment"
            and f.name == "members"]
    largest = [str(1000 + i) for i in range(n - SEGMENT_ROWS + 1, n)]
    assert sorted(rows) == sorted(["1000", *largest])  # the empty one, then the largest
    assert shown(html)[(name, None, "segments")] == f"{n:,}"  # the headline counts every segment
    hidden = n - SEGMENT_ROWS
    hidden_members = sum(range(1, n - SEGMENT_ROWS + 1))
    assert re.search(rf"{hidden:,} more segments \({hidden_members:,} members\), not listed here: report\.json "
                     r"lists every segment", unescape(re.sub(r"<[^>]+>", "", html))), "the page says how many more"
    small = _import_report()
    assert "more segments" not in render_run(small)


def test_segments_not_listed_of_a_file_audience_source_say_their_file_audience_entries():
    """A source keeping a file audience, 1,500 segments of 5 file-audience entries and no member: the
    page said '500 more segments (0 members)', as if the 2,500 entries they hold were none."""
    from transforms.html_report import SEGMENT_ROWS

    report = _import_report()
    entry = report["data_sources"]["web-encrypted-emails"]
    entry["segments"] = {str(1000 + i): {"members": 0, "file_audience": 5, "lines": 5} for i in range(SEGMENT_ROWS + 500)}
    text = unescape(re.sub(r"<[^>]+>", "", render_run(report)))
    assert "500 more segments (0 members, 2,500 file audience entries), not listed here" in text


def test_many_segments_without_a_member_leave_rows_for_the_largest():
    """1,500 segments named by lines that got no member filled every row: the segments with members,
    the audience itself, were not listed at all. Half the rows at most go to the empty ones."""
    from transforms.html_report import SEGMENT_ROWS

    report = _import_report()
    name, entry = next(iter(report["data_sources"].items()))
    entry["segments"] = {**{str(10_000 + i): {"members": 0, "lines": 3} for i in range(1500)},
                         **{str(20_000 + i): {"members": 10 + i, "lines": 20} for i in range(3)}}
    rows = [f.row[1] for f in figures(render_run(report)) if f.source == name and f.row
            and f.row[0] == "data-segment" and f.name == "members"]
    assert len(rows) == SEGMENT_ROWS and {"20000", "20001", "20002"} <= set(rows)
    assert sum(r.startswith("1") for r in rows) == SEGMENT_ROWS - 3  # the rest: the empty ones


def test_a_rate_short_of_every_line_or_above_none_is_never_printed_as_100_or_0_percent():
    """19,999 of 20,000 lines matched was printed "100.0%", 1 of 20,000 "0.0%": a page saying every
    line matched, or none, when one did not (or one did)."""
    report = _import_report()
    sources = report["data_sources"]
    for name, reconciled in (("crm-hashed-emails", 19_999), ("visitors", 1), ("crm-plain", 20_000)):
        e = sources[name]
        e.update(received=20_000 + e["format_errors"] + e["invalid_ids"] + e["removals_only"],
                 reconciled=reconciled, unmatched=20_000 - reconciled, file_audience=0)
    html = render_run(report)
    assert_shows_the_report(html, report)
    got = shown(html)
    assert [got[(n, None, "match_rate")] for n in ("crm-hashed-emails", "visitors", "crm-plain")] == \
        [">99.9%", "<0.1%", "100.0%"]


def test_an_iv_suspicion_of_a_run_that_passed_is_a_warning_in_its_data_sources_section():
    """report.json's ``iv_suspect`` (the IV check's weak sign of an IV typo, in a run that passed
    because enough IDs matched) was on no page: a person reading it had no reason to check the IV.
    Shown as a warning in that data source's section: the byte position, the IDs that matched, and
    the setting to check; never a key or IV byte (report.json holds none)."""
    report = _import_report()
    report["data_sources"]["web-encrypted-emails"]["iv_suspect"] = {"position": 3, "overlap_gain": 0.21}
    html = render_run(report)
    assert_shows_the_report(html, report)
    assert [a["data-warning"] for _, a in elements(html) if "data-warning" in a] == ["iv_suspect"]
    section = html[html.index('id="ds-web-encrypted-emails"'):].split("</section>")[0]
    warning = section[section.index('data-warning="iv_suspect"'):].split("</div>")[0]
    assert "wrong IV?" in warning and "encryption.iv" in warning
    iv = (DEMO / "keys" / "demo-only-iv.hex").read_text().strip()
    key = (DEMO / "keys" / "demo-only-aes256.key").read_text().strip()
    assert iv.lower() not in html.lower() and key.lower() not in html.lower()
    assert 'data-warning' not in render_run(_import_report())


def test_a_nights_page_names_the_data_sources_whose_rows_it_dropped():
    """A night run with --allow-shrink after a data source left the config drops its previous rows
    (report.json: removed_data_sources); the terminal said so, the page did not mention it at all."""
    report = _import_report()
    report["removed_data_sources"] = {"old-crm": {"action": "dropped", "reconciled_dropped": 1234,
                                                  "file_audience_dropped": 5}}
    html = render_run(report)
    assert_shows_the_report(html, report)
    got = shown(html)
    assert got[(None, ("data-key", "old-crm.reconciled_dropped"), "reconciled_dropped")] == "1,234"
    assert got[(None, ("data-key", "old-crm.file_audience_dropped"), "file_audience_dropped")] == "5"
    assert "no longer configured" in html
    assert "no longer configured" not in render_run(_import_report())


def test_data_sources_named_a_dot_b_and_a_underscore_b_get_their_own_section_links():
    """Config names may hold '.', which the page's ids turned into '_': two sections had the id
    ``ds-a_b`` and the overview's link of 'a.b' opened the section of 'a_b'."""
    report = _import_report()
    sources = report["data_sources"]
    sources["a.b"], sources["a_b"] = sources.pop("visitors"), sources.pop("crm-plain")
    tags = elements(render_run(report))
    ids = [a["id"] for _, a in tags if a.get("id", "").startswith("ds-")]
    assert len(ids) == len(set(ids)) == len(sources)
    links = {a["href"] for _, a in tags if a.get("href", "").startswith("#ds-")}
    assert links == {f"#{i}" for i in ids}


def test_everything_from_the_report_is_escaped():
    report = _import_report()
    entry = report["data_sources"]["crm-plain"]
    entry["diagnosis"] = [{"kind": "<b>kind", "suggestion": {"match_on": "<img src=x onerror=alert(1)>"},
                           "would_match": 5, "sampled": 10, "message": "</p><script>alert(1)</script>"}]
    report["data_sources"]["<svg onload=alert(1)>"] = report["data_sources"].pop("visitors")
    html = render_run(report)
    assert_self_contained(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;svg onload=alert(1)&gt;" in html


BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def test_a_right_to_left_override_in_a_name_does_not_reverse_the_figures_after_it():
    """An audience named 'Summer \u202esale' (a right-to-left override, pasted with the name): Chromium
    showed the rest of the page's header reversed, 'dpid 12345' as '54321 dipd'. A bidi control
    character from the report is shown as its code point, here as in a file name or a finding's
    message (which names profile columns)."""
    export = {"job": "export", "run_date": "2026-11-22", "audience": "Summer \u202esale",
              "segment": '"segment"="Summer \u202esale"', "data_source": "hashed", "dpid": 12345, "id_type": "declared/hashed",
              "targets_path": "t.csv", "existing": [], "targets": 7, "lines": 3, "nothing_to_send": False,
              "files": [{"name": "ftp_dpm_12345_1795305600.sync.gz\u2067", "sequence": 1, "lines": 3, "bytes": 178}],
              "control_file": "ftp_dpm_12345_1795305600.info"}
    report = _import_report()
    entry = report["data_sources"]["crm-hashed-emails"]
    entry["diagnosis"] = [{"kind": "column", "suggestion": {"match_on": "mail\u202e"}, "would_match": 4120, "sampled": 5000,
                           "message": "4,120 of 5,000 sampled lines are digests of the column 'mail\u202e'"}]
    entry["files"] = [{"path": "/dumps/ftp_1234_56789_full_1795305600000001\u200f.sync.gz"}]
    for html in (render_run(export), render_run(report)):
        assert not [c for c in html if c in BIDI_CONTROLS]
    assert "Summer [U+202E]sale" in render_run(export) and "[U+2067]" in render_run(export)
    assert "'mail[U+202E]'" in unescape(render_run(report)) and "[U+200F].sync.gz" in render_run(report)


def test_a_page_that_cannot_be_rendered_publishes_nothing(tmp_path):
    out, run_dir = tmp_path / "out", tmp_path / "out" / "_incomplete-x"
    (out / "reconciled").mkdir(parents=True)
    (out / "reconciled" / "part-00000-of-00001.parquet").write_bytes(b"previous")
    (out / "report.json").write_text('{"job": "import"}')
    run_dir.mkdir()
    with pytest.raises(Exception):
        publish_outputs(str(out), str(run_dir), {"reconciled": None}, [], {"job": "import"})  # no data_sources
    assert (out / "report.json").read_text() == '{"job": "import"}'
    assert (out / "reconciled" / "part-00000-of-00001.parquet").read_bytes() == b"previous"
    assert not (out / "report.html").exists()


def test_export_page_shows_every_count_of_its_report_and_extra_ones():
    report = {"job": "export", "run_date": "2026-11-22", "audience": "Summer <sale>", "segment": '"segment"="Summer <sale>"',
              "data_source": "hashed", "dpid": 12345, "id_type": "declared/hashed", "targets_path": "t.csv", "existing": [],
              "target_rows": 9, "targets": 7, "exported": 4, "lines": 3, "nothing_to_send": False,
              "removed_by_reason": {"opted_out": 2, "left_the_audience": 5},  # a later export's extra counts
              "files": [{"name": "ftp_dpm_12345_1795305600.sync.gz", "sequence": 1, "lines": 3, "bytes": 178, "md5": "x"}],
              "control_file": "ftp_dpm_12345_1795305600.info"}
    html = render_run(report)
    got = shown(html)
    for key in ("target_rows", "targets", "exported", "lines"):
        assert got[(None, ("data-key", key), key)] == f"{report[key]:,}"
    assert (None, ("data-key", "dpid"), "dpid") not in got  # an id, not a count
    for key, n in report["removed_by_reason"].items():  # named by their table: no clash with a flat count
        name = f"removed_by_reason.{key}"
        assert got[(None, ("data-key", name), name)] == str(n)
    assert got[(None, ("data-file", "ftp_dpm_12345_1795305600.sync.gz"), "lines")] == "3"
    assert "Summer &lt;sale&gt;" in html
    assert_self_contained(html)


def test_export_page_shows_no_id_or_state_version_as_a_count():
    """target_dpid and the export state's version numbers are ids, not counts: shown as counts they
    made a '54,321' row whose bar dwarfed every real count's."""
    report = {"job": "export", "run_date": "2026-11-22", "audience": "A", "segment": "d_sid=1", "mode": "sync",
              "data_source": "gaid", "dpid": 20914, "target_dpid": 54321, "id_type": "visitor", "targets_path": "t.csv",
              "existing": [], "state_folder": "state", "state_previous_version": 3, "state_version": 4,
              "state_replaced_version": 2, "state_expected_pairs": 10, "targets": 7, "exported": 4, "lines": 4,
              "nothing_to_send": False, "files": [], "control_file": None}
    got = {row[1] for _, row, _ in shown(render_run(report)) if row}
    assert got == {"state_expected_pairs", "targets", "exported", "lines"}
    assert "target dpid 54321" in render_run(report)  # said where the dpid is


def test_export_page_names_the_other_audiences_an_overwrite_took_users_out_of():
    """An overwrite that takes ineligible leavers out of audience B writes B's next state version
    (report.json's state_others): the page showed nothing of it, B's members changed unseen."""
    other = {"audience": "B <x>", "data_source": "crm", "segment": "d_sid=22", "state_folder": "state/crm/B",
             "previous_version": 1, "version": 2, "previous_pairs": 4, "pairs": 3, "pairs_removed": 1,
             "user_ids_removed": 1}
    report = {"job": "export", "run_date": "2026-11-22", "audience": "A", "segment": "d_sid=1", "mode": "overwrite",
              "data_source": "crm", "dpid": 12345, "id_type": "declared/hashed", "targets_path": "t.csv",
              "existing": [], "state_others": [other], "targets": 7, "lines": 4, "nothing_to_send": False,
              "files": [], "control_file": None}
    html = render_run(report)
    got = shown(html)
    for key in ("previous_pairs", "pairs", "pairs_removed", "user_ids_removed"):
        assert got[(None, ("data-row", "state_others.B <x>"), key)] == str(other[key]), key
    assert "B &lt;x&gt;" in html and "v-000002" in html


def test_export_run_writes_its_page(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    import test_export as t

    cfg = t.write_job(tmp_path / "job")
    t.write_targets(tmp_path / "targets.csv", t.TARGETS)
    result = cli("export", "--config", cfg, "--audience", "Summer sale", "--targets", tmp_path / "targets.csv",
                 "--output", tmp_path / "out", "--data-source", "hashed", "--run-date", t.RUN_DATE)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    got = shown((tmp_path / "out" / "report.html").read_text())
    for key in ("target_rows", "targets", "exported", "unmapped", "opted_out", "unknown_profile", "lines"):
        assert got[(None, ("data-key", key), key)] == f"{report[key]:,}", key
    assert f"report: {tmp_path / 'out' / 'report.html'}" in result.stdout


# -------------------------------------------------------------------------------------------------
# Nightly root and the report verb
# -------------------------------------------------------------------------------------------------
def _import_report() -> dict:
    return json.loads((Path(__file__).parent / "data" / "report-import.json").read_text())


def _night(root: Path, day: str, report: dict) -> None:
    folder = root / f"dt={day}"
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(report))
    (folder / "_SUCCESS").write_text("{}")


def test_nightly_root_page_shows_the_trend_and_flags_a_drop(tmp_path):
    root = tmp_path / "root"
    base = _import_report()
    for day in ("2026-11-20", "2026-11-21", "2026-11-23"):  # a night is missing: the chart keeps dates apart
        _night(root, day, base)
    dropped = copy.deepcopy(base)
    e = dropped["data_sources"]["crm-hashed-emails"]
    e["unmatched"], e["reconciled"] = e["unmatched"] + e["reconciled"] - 3, 3
    _night(root, "2026-11-24", dropped)
    (root / "dt=2026-11-25").mkdir()  # not published (no _SUCCESS): not a night
    result = cli("report", root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {root / 'report.html'} (4 nights)"
    html = (root / "report.html").read_text()
    assert_self_contained(html)
    got = figures(html)
    rates = [(f.row[1], f.text) for f in got if f.source == "crm-hashed-emails" and f.name == "match_rate" and f.row]
    assert [d for d, _ in rates] == ["2026-11-20", "2026-11-21", "2026-11-23", "2026-11-24"]
    assert rates[-1][1] == f"{3 / (e['unmatched'] + 3 + e['file_audience']):.1%}"
    sections = {name: html[html.index(f'data-source="{name}"'):].split("</section>")[0] for name in base["data_sources"]}
    assert "match rate dropped" in sections["crm-hashed-emails"]
    assert [n for n, s in sections.items() if "dropped" in s] == ["crm-hashed-emails"]
    assert 'href="dt=2026-11-24/report.html"' in html
    assert html.count("<svg") == 2 * len(base["data_sources"])


def test_report_verb_rewrites_a_runs_page_byte_for_byte(demo_out, tmp_path):
    written = (demo_out / "report.html").read_bytes()
    result = cli("report", demo_out, "--output", tmp_path / "again.html")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "again.html").read_bytes() == written


def test_report_verb_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = cli("report", tmp_path)
    assert result.returncode == 2
    assert "not a run folder or nightly root" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "report.json").write_text("{not json")
    result = cli("report", tmp_path)
    assert result.returncode == 1 and "report.json: no readable report" in result.stderr
    # The report itself named: it said 'no report.json' of a path that is one.
    _refused(cli("report", tmp_path / "report.json"), f"{tmp_path / 'report.json'}: a file, not a folder: name the "
             f"folder of its report.json ({tmp_path})")


def _run_folder(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(_import_report()))
    return folder


def _refused(result, *words: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    line = result.stderr.strip().splitlines()[-1]
    assert all(w in line for w in words), line
    return line


def test_report_verb_writes_no_page_over_a_file_that_is_not_one(tmp_path):
    """`--output notes.html`, a file of the operator's: it was replaced by the page, exit 0."""
    run = _run_folder(tmp_path / "run")
    notes = tmp_path / "notes.html"
    notes.write_text("<html><body>my notes</body></html>")
    _refused(cli("report", run, "--output", notes), str(notes), "not a page audience-sync wrote")
    assert notes.read_text() == "<html><body>my notes</body></html>"
    page = tmp_path / "page.html"
    assert cli("report", run, "--output", page).returncode == 0
    assert cli("report", run, "--output", page).returncode == 0  # a page of ours is rewritten
    (tmp_path / "empty.html").touch()  # nothing to lose
    assert cli("report", run, "--output", tmp_path / "empty.html").returncode == 0


def test_report_verb_writes_no_page_into_a_runs_outputs_or_beside_another_runs_report(tmp_path):
    """`--output RUN/reconciled/page.html` put an HTML file among the Parquet parts (pyarrow's
    read_table(RUN/reconciled) then failed: 'Parquet magic bytes not found'), and `--output
    OTHER/report.html` (another run, a night) replaced that run's page with this run's, exit 0."""
    run, other = _run_folder(tmp_path / "run"), _run_folder(tmp_path / "other")
    (run / "reconciled").mkdir()
    before = (other / "report.html").write_text("<!DOCTYPE html><meta name=\"generator\" content=\"audience-sync\">")
    _refused(cli("report", run, "--output", run / "reconciled" / "page.html"), str(run / "reconciled" / "page.html"),
             f"inside the outputs of the run in {run}")
    _refused(cli("report", run, "--output", run / "reconciled" / "a" / "page.html"), f"the run in {run}")
    _refused(cli("report", run, "--output", other / "report.html"), f"beside the report.json of another run ({other})")
    _refused(cli("report", run, "--output", run / "copy.html"), f"beside the report.json of the run in {run}")
    assert not (run / "reconciled" / "page.html").exists() and not (run / "copy.html").exists()
    assert len((other / "report.html").read_text()) == before
    assert cli("report", run).returncode == 0 and (run / "report.html").exists()  # its own page, in place
    pages = run / "reconciled" / "a" / "b" / "c"  # a report.json far above (one saved in a home folder) is no run's
    pages.mkdir(parents=True)
    assert cli("report", other, "--output", pages / "page.html").returncode == 0


def test_report_verb_leaves_a_published_nights_page_as_its_manifest_lists_it(tmp_path):
    """A nightly partition's _SUCCESS lists report.html with its sha256: `audience-sync report
    ROOT/dt=...` rewrote the page of an earlier release in place, exit 0, and the manifest no longer
    described the published night. The same bytes, or a page the manifest does not list, are written."""
    import hashlib

    root = tmp_path / "root"
    _night(root, "2026-11-20", _import_report())
    night = root / "dt=2026-11-20"
    earlier = b'<!DOCTYPE html><meta name="generator" content="audience-sync"> an earlier release\'s page'
    (night / "report.html").write_bytes(earlier)
    listed = {"path": "report.html", "bytes": len(earlier), "sha256": hashlib.sha256(earlier).hexdigest()}
    (night / "_SUCCESS").write_text(json.dumps({"files": [listed]}))
    _refused(cli("report", night), str(night / "report.html"), "_SUCCESS", "--output")
    assert (night / "report.html").read_bytes() == earlier
    assert cli("report", night, "--output", tmp_path / "page.html").returncode == 0
    page = (tmp_path / "page.html").read_bytes()
    listed.update(bytes=len(page), sha256=hashlib.sha256(page).hexdigest())  # as this release writes it
    (night / "_SUCCESS").write_text(json.dumps({"files": [listed]}))
    assert cli("report", night).returncode == 0 and (night / "report.html").read_bytes() == page
    (night / "_SUCCESS").write_text(json.dumps({"files": []}))  # a release before the page: not listed
    (night / "report.html").unlink()
    assert cli("report", night).returncode == 0 and (night / "report.html").read_bytes() == page


def _live_lock(folder: Path) -> Path:
    """The output lock of a run still writing ``folder`` (this process: alive, on this host)."""
    import os
    import socket

    lock = folder / "_lock.json"
    lock.write_text(json.dumps({"run_id": "0123456789ab", "job": "import", "host": socket.gethostname(),
                                "pid": os.getpid(), "started": "2026-12-06T10:00:00+00:00"}))
    return lock


def test_report_verb_does_not_rewrite_the_page_of_a_folder_a_run_is_writing(tmp_path, monkeypatch):
    """`audience-sync report OUT` while a run republishes OUT read the previous report.json and wrote
    its page in place: written after the run moved its own page in, it stood beside the new report.json,
    the previous run's figures as the new run's. A folder a live run holds is refused, naming its lock;
    a page written elsewhere only reads the folder. A first run that has not written its report.json
    yet, or was killed before it, is named as such (it was 'not a run folder or nightly root')."""
    run = _run_folder(tmp_path / "run")
    lock = _live_lock(run)
    done = cli("report", run)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"{run} is in use by run 0123456789ab (import" in done.stderr and str(lock) in done.stderr
    assert not (run / "report.html").exists() and lock.exists()
    assert cli("report", run, "--output", tmp_path / "page.html").returncode == 0
    monkeypatch.chdir(run)  # its own page named otherwise: `cd OUT; audience-sync report . --output report.html`
    assert cli("report", ".", "--output", "report.html").returncode == 1 and not (run / "report.html").exists()
    monkeypatch.undo()
    lock.unlink()
    assert cli("report", run).returncode == 0 and not lock.exists()  # the verb's own lock is released
    first = tmp_path / "first"
    first.mkdir()
    _live_lock(first)
    _refused(cli("report", first), str(first), "no report.json yet: a run is writing it", "_lock.json")
    (first / "_lock.json").unlink()
    (first / "_incomplete-0123456789ab").mkdir()
    _refused(cli("report", first), str(first), "no report.json: its run did not finish")
    root = tmp_path / "root"  # a night's page in place: the nightly job's lock is its root's
    _night(root, "2026-11-20", _import_report())
    _live_lock(root)
    for path in (root, root / "dt=2026-11-20"):
        done = cli("report", path)
        assert done.returncode == 1 and f"{root} is in use by run 0123456789ab" in done.stderr, done.stderr
    monkeypatch.chdir(root / "dt=2026-11-20")  # the night's folder named as '.': its root's lock all the same
    done = cli("report", ".")
    assert done.returncode == 1 and f"{root} is in use by run 0123456789ab" in done.stderr, done.stderr
    assert not list(root.rglob("report.html"))


def test_nightly_run_writes_the_partition_page_and_the_root_page(tmp_path):
    sys.path.insert(0, str(ROOT / "tests"))
    from test_nightly import V, dump, write_job

    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-20", "full", [f"{V[1]} 10", f"{V[2]} 10,11"])
    dump(tmp_path, "2026-11-21", "full", [f"{V[1]} 10", f"{V[5]} 10"])
    nightly.run(["--config", str(config), "--root", str(root), "--backfill", "2026-11-20:2026-11-21",
                 "--allow-shrink"])  # the second night shrinks on purpose (test_nightly.dump)
    manifest = json.loads((root / "dt=2026-11-21" / "_SUCCESS").read_text())
    assert "report.html" in {f["path"] for f in manifest["files"]}
    night = (root / "dt=2026-11-21" / "report.html").read_text()
    assert_shows_the_report(night, json.loads((root / "dt=2026-11-21" / "report.json").read_text()))
    rates = [f.text for f in figures((root / "report.html").read_text()) if f.name == "match_rate" and f.row]
    assert rates == ["100.0%", "50.0%"]


def test_html_report_module_renders_a_root_without_nights():
    html = render_nightly([])
    assert "No published night yet" in html
    assert_self_contained(html)
    assert render_nightly([NightReport("2026-11-20", "dt=2026-11-20/report.html", _import_report())]).count("<svg") == 10


def test_a_suggested_change_is_shown_where_it_goes_in_the_config():
    """'Suggested change in this data source's config: profiles.email: work_email': profiles.email is
    the job's (every data source reads it), and a dotted key pasted into the YAML is no field. The
    page nests each field in its section and says where the profiles section is."""
    report = _import_report()
    report["data_sources"]["crm-hashed-emails"]["diagnosis"] = [
        {"kind": "column", "suggestion": {"match_on": "phone", "profiles.phone": "home_phone"}, "would_match": 9,
         "sampled": 10, "message": "..."},
        {"kind": "key_encoding", "suggestion": {"encryption.key_encoding": "base64"}, "would_match": 9, "sampled": 10,
         "message": "..."}]
    html = render_run(report)
    hashed = html[html.index('id="ds-crm-hashed-emails"'):html.index('id="ds-uid2-phones"')]
    text = lambda part: re.sub(r"[ \t]+", " ", unescape(re.sub(r"<[^>]+>", "", part)))  # noqa: E731
    assert re.findall(r'<pre class="fix">(.*?)</pre>', hashed, re.S) == [
        "match_on: phone", "profiles:\n  phone: home_phone", "encryption:\n  key_encoding: base64"]
    assert "Suggested change in the job's profiles section (every data source reads it):" in text(hashed)
    assert text(hashed).count("Suggested change in this data source's entry (data_sources):") == 2
