"""report.html in a real browser: headless Chromium (Debian's ``chromium``, installed by scripts/test)
renders the demo's page, the figures in its DOM are those of report.json, and its screenshot shows a
page (the page has no script: tests/test_html_report.py checks every tag).

Without a browser this test fails: set AUDIENCE_SYNC_SKIP_BROWSER=1 to skip it on purpose (the skip
is then listed in pytest's summary)."""
from __future__ import annotations

import json
import os
import struct

import pytest

from page_dom import figures
from report_screenshot import find_chromium, run_chromium
from test_html_report import assert_shows_the_report

SKIP_ENV = "AUDIENCE_SYNC_SKIP_BROWSER"


@pytest.fixture(scope="module")
def browser() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get(SKIP_ENV) == "1":
            pytest.skip(f"no chromium, and {SKIP_ENV}=1 says to skip the browser test")
        pytest.fail(f"chromium not found: scripts/test installs it (apt-get install chromium); "
                    f"set {SKIP_ENV}=1 to skip this test on purpose")
    return found


@pytest.fixture(scope="module")
def demo_page(demo_cli_run):
    return demo_cli_run[0]  # (conftest.py: the same demo run as tests/test_import_e2e.py's)


def test_chromium_shows_the_numbers_of_report_json(browser, demo_page):
    done = run_chromium(browser, demo_page / "report.html", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert dom.lstrip().lower().startswith("<!doctype html>"), done.stderr[-2000:]
    report = json.loads((demo_page / "report.json").read_text())
    assert_shows_the_report(dom, report)  # what Chromium parsed, not our own HTML text
    assert len(figures(dom)) > 100


def test_chromium_renders_a_screenshot_of_the_page(browser, demo_page, tmp_path):
    from PIL import Image

    png = tmp_path / "shot.png"
    done = run_chromium(browser, demo_page / "report.html", f"--screenshot={png}", size="1000,1200")
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", header[16:24]) == (1000, 1200)
    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50  # text, bars and tables, not a blank page


def _links(html: str) -> list[str]:
    from test_html_report import elements

    return [a["href"] for tag, a in elements(html) if tag == "a" and not a["href"].startswith("#")]


def test_a_root_page_written_elsewhere_links_to_the_nights_it_shows(tmp_path):
    """`audience-sync report ROOT --output OTHER/page.html`: the nights' links were 'dt=.../report.html',
    relative to ROOT, so every link of the page written elsewhere opened no page. They lead to each
    night's page from where the page is."""
    from test_html_report import _import_report, _night, cli

    root = tmp_path / "root"
    for day in ("2026-11-20", "2026-11-21"):
        _night(root, day, _import_report())
        (root / f"dt={day}" / "report.html").write_text("night")
    for page in (tmp_path / "pages" / "trend.html", root / "report.html", tmp_path / "root.html"):
        page.parent.mkdir(exist_ok=True)
        done = cli("report", root, *(["--output", page] if page != root / "report.html" else []))
        assert done.returncode == 0, done.stderr
        links = _links(page.read_text())
        assert len(links) == 1 + 2 * len(_import_report()["data_sources"])  # the latest night, each night per source
        assert {(page.parent / href).resolve() for href in links} == {(root / f"dt={d}" / "report.html").resolve() for d in ("2026-11-20", "2026-11-21")}


def _dom(browser: str, html: str, tmp_path) -> str:
    """The page as Chromium parsed it."""
    page = tmp_path / "page.html"
    page.write_text(html)
    done = run_chromium(browser, page, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _text(dom: str, start: str = "<body", end: str = "</body>") -> str:
    """The text shown from the element opening with ``start`` to ``end`` (blanks collapsed)."""
    import re
    from html import unescape

    part = dom[dom.index(start):]
    part = part[:part.index(end)]
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", part))).strip()


def _section(dom: str, name: str) -> str:
    return _text(dom, f'<section class="card source" id="ds-{name}"', "</section>")


def _carried(report: dict, name: str) -> dict:
    """``report`` with data source ``name`` carried over without a dump (max_nights_without_delivery)."""
    e = report["data_sources"][name]
    for key in ("received", "format_errors", "invalid_ids", "removals_only", "unmatched", "reconciled", "file_audience"):
        e[key] = 0
    e.update(rejected_by_reason={}, files=[], diagnosis=[], previous_state={"reconciled_carried": 227})
    for segment in e["segments"].values():
        segment.pop("lines", None)
    return report


def test_a_data_source_carried_without_a_dump_tonight_says_so(browser, tmp_path):
    """A night where a data source with max_nights_without_delivery listed no dump: its page showed
    '0 dump files', a funnel of zeros, a match rate '-' and 'No finding: no alternative setting that
    was tried explains the sampled lines without a match'; the terminal a row of zeros. Nothing said
    that no dump was read and the audience was carried over (a transfer that failed looks the same).
    The page, the trend page and the terminal say so."""
    from test_html_report import _import_report, _night, cli

    from pipelines import nightly
    from transforms.html_report import render_run

    report = _carried(_import_report(), "crm-plain")
    dom = _dom(browser, render_run(report), tmp_path)
    carried, delivered = _section(dom, "crm-plain"), _section(dom, "visitors")
    assert "No dump tonight" in carried and "carried over" in carried and "No finding" not in carried
    assert "No dump tonight" not in delivered and "No dump tonight" not in render_run(_import_report())
    assert _text(dom, '<tr data-source="crm-plain"', "</tr>") == "crm-plain 0 0 0 0 0 - 227 no dump tonight: carried over"
    rows = {line.split()[0]: line for line in nightly.summary_lines([{"date": "2026-11-21", "status": "published",
                                                                     "report": report}])}
    assert rows["crm-plain"].endswith("  no dump tonight: carried over") and rows["visitors"].endswith("  -")
    root = tmp_path / "root"
    _night(root, "2026-11-20", _import_report())
    _night(root, "2026-11-21", report)
    assert cli("report", root).returncode == 0
    trend = _section(_dom(browser, (root / "report.html").read_text(), tmp_path), "crm-plain")
    assert "2026-11-20 200" in trend and "2026-11-21 no dump: carried over 0 0 - 227" in trend


def test_the_root_page_shows_a_data_source_taken_out_of_the_config_as_dropped(browser, tmp_path):
    """A night that dropped a data source's rows (taken out of the config: removed_data_sources) was
    not on the root page: its section read 'latest (2026-11-20): ... 227 members', its members chart
    ending at 227 and no drop flagged, the audience long gone. The night is shown, 0 members, said why."""
    from test_html_report import _import_report, _night, cli

    root, after = tmp_path / "root", _import_report()
    del after["data_sources"]["crm-plain"]
    after["removed_data_sources"] = {"crm-plain": {"action": "dropped", "reconciled_dropped": 227}}
    _night(root, "2026-11-20", _import_report())
    _night(root, "2026-11-21", after)
    assert cli("report", root).returncode == 0
    gone = _section(_dom(browser, (root / "report.html").read_text(), tmp_path), "crm-plain")
    assert gone.startswith("crm-plain latest (2026-11-21): no longer configured, its rows dropped · members dropped")
    assert "2026-11-20 200 136 74.3% 227 2026-11-21 no longer configured, its rows dropped 0 0 - 0" in gone


def test_the_form_a_file_audiences_addresses_are_written_in_is_on_the_page(browser, demo_page, tmp_path):
    """report.json's address_form (email/adobe, sms/uid2/FR): a night after a change of normalization,
    channel or region with --allow-gap holds rows of both forms, and no page said which form a night
    wrote. Its data source's section says it; a source without a file audience has none."""
    report = json.loads((demo_page / "report.json").read_text())
    dom = _dom(browser, (demo_page / "report.html").read_text(), tmp_path)
    assert "file audience written as email/adobe" in _section(dom, "web-encrypted-emails")
    assert report["data_sources"]["web-encrypted-emails"]["address_form"] == "email/adobe"
    assert "file audience written as" not in _section(dom, "crm-hashed-emails")


def test_a_published_night_is_not_failed_by_an_older_nights_unreadable_report(tmp_path, caplog):
    """The root page, rewritten after tonight's night was published, read every night's report.json:
    one older night's unreadable (a partial copy, a storage error) failed the run, exit 1 'run failed:
    .../dt=2026-11-20/report.json: no readable report', tonight published (a retry: 'already published',
    exit 0, the root page never rewritten). The night stands; the page shows the nights it can read and
    names the others, and a warning says so."""
    from test_nightly import V, dump, write_job

    from pipelines import nightly

    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-20", "full", [f"{V[1]} 10", f"{V[2]} 10,11"])
    dump(tmp_path, "2026-11-21", "iter", [f"{V[3]} 10"])
    dump(tmp_path, "2026-11-22", "iter", [f"{V[4]} 11"])
    nightly.run(["--config", str(config), "--root", str(root), "--backfill", "2026-11-20:2026-11-21"])
    (root / "dt=2026-11-20" / "report.json").write_text('{"job": "import", "profiles_')  # not the night built on
    results = nightly.run(["--config", str(config), "--root", str(root), "--date", "2026-11-22"])
    assert [r["status"] for r in results] == ["published"]
    page = (root / "report.html").read_text()
    assert 'href="dt=2026-11-22/report.html"' in page and 'href="dt=2026-11-20/report.html"' not in page
    assert "Published nights not shown: dt=2026-11-20 : no readable report" in _text(page)
    assert "root page: dt=2026-11-20 not shown (no readable report)" in caplog.text


def test_a_setting_whose_right_value_cannot_be_known_is_to_check_not_to_set_to_null(browser, tmp_path):
    """A wrong key's finding (suggestion {"encryption.key": null}: a secret the run cannot know) read
    'Suggested change in this data source's entry: encryption: key: null' on the page and
    'encryption.key: null' on the terminal: pasted, the config no longer loads. The page and the
    terminal say which setting to check; a change with a value stays YAML to paste."""
    from test_html_report import _import_report

    from transforms.html_report import render_run
    from transforms.summary import summary_lines

    report = _import_report()
    report["data_sources"]["web-encrypted-emails"]["diagnosis"] = [
        {"kind": "key", "suggestion": {"encryption.key": None}, "would_match": 12, "sampled": 12, "message": "whole blocks"},
        {"kind": "key_encoding", "suggestion": {"encryption.key_encoding": "base64"}, "would_match": 3, "sampled": 12,
         "message": "the key read as base64"}]
    finding = _section(_dom(browser, render_run(report), tmp_path), "web-encrypted-emails")
    assert "null" not in finding
    assert "key · 12 of 12 sampled lines without a match would decrypt whole blocks Setting to check with the partner " \
           "(its right value cannot be known from the lines): encryption.key key_encoding" in finding
    assert "Suggested change in this data source's entry (data_sources): encryption: key_encoding: base64" in finding
    row = next(line for line in summary_lines(report) if line.startswith("web-encrypted-emails"))
    assert row.endswith("  check encryption.key (12 of 12 sampled)")


def test_a_page_that_cannot_be_moved_into_place_leaves_no_partial_file(tmp_path):
    """`audience-sync report ROOT --output ROOT/pages.html` where that is a folder: the rename failed,
    exit 1, and left ROOT/pages.html.<id>.partial beside the nights for good. The failure names the page;
    nothing stays."""
    from test_html_report import _import_report, _night, cli

    root = tmp_path / "root"
    _night(root, "2026-11-20", _import_report())
    (root / "pages.html").mkdir()
    done = cli("report", root, "--output", root / "pages.html")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"{root / 'pages.html'}: cannot write the page (Is a directory)" in done.stderr
    assert sorted(p.name for p in root.iterdir()) == ["dt=2026-11-20", "pages.html"]


def test_a_page_not_named_html_is_refused_and_nothing_is_overwritten(tmp_path, capsys):
    """`audience-sync report ROOT --output ROOT/dt=.../report.json` (a completion slip) wrote the page
    over that night's report.json, exit 0: its counts were gone and the next night, reading it, failed.
    A page is named `*.html`; any other --output is refused (exit 2) naming it, and nothing is written."""
    from test_html_report import _import_report, _night

    from pipelines import report as report_verb

    root = tmp_path / "root"
    _night(root, "2026-11-20", _import_report())
    target = root / "dt=2026-11-20" / "report.json"
    before = target.read_bytes()
    assert report_verb.main([str(root), "--output", str(target)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"--output {target}: a page is written as HTML; name it *.html" in line, line
    assert target.read_bytes() == before and sorted(p.name for p in target.parent.iterdir()) == ["_SUCCESS", "report.json"]


def test_two_findings_of_one_kind_are_each_shown_with_their_own_counts(browser, tmp_path):
    """AES-GCM gives a key_id finding per key id (expired key 2, an unknown id): both rows of the page
    were data-finding="key_id", so a page showing the second finding's counts twice, or the first's,
    passed the figure check (the last row hid the first). Each finding has its own row: kind, kind.2, ..."""
    from test_html_report import _import_report, assert_shows_the_report

    from transforms.html_report import render_run

    report = _import_report()
    report["data_sources"]["web-encrypted-emails"]["diagnosis"] = [
        {"kind": "key_id", "suggestion": {"encryption.keyring": None}, "would_match": 10, "sampled": 40, "message": "unknown"},
        {"kind": "key_id", "suggestion": {"encryption.keyring": None}, "would_match": 30, "sampled": 40, "message": "expired"}]
    dom = _dom(browser, render_run(report), tmp_path)
    assert_shows_the_report(dom, report)
    got = {(f.row, f.name): f.text for f in figures(dom) if f.source == "web-encrypted-emails" and f.row and f.row[0] == "data-finding"}
    assert got == {(("data-finding", "key_id"), "would_match"): "30", (("data-finding", "key_id"), "sampled"): "40",
                   (("data-finding", "key_id.2"), "would_match"): "10", (("data-finding", "key_id.2"), "sampled"): "40"}


def test_an_export_page_says_its_mode_which_decides_what_its_lines_are(browser, tmp_path):
    """An export's onboarding lines are its added and removed user IDs (--mode sync), or every user ID
    of the audience and the removed ones (--mode overwrite): the terminal said the mode, the page did
    not, and its 'lines 122' beside 'added 9, removed 36' could not be read. The page says it."""
    from transforms.html_report import render_run

    report = {"job": "export", "run_date": "2026-11-22", "audience": "A", "segment": "d_sid=1", "mode": "overwrite",
              "data_source": "gaid", "dpid": 20914, "id_type": "visitor", "targets_path": "t.csv", "existing": [],
              "added": 9, "unchanged": 77, "removed": 36, "audience_user_ids": 86, "lines": 122,
              "nothing_to_send": False, "files": [], "control_file": None}
    header = _text(_dom(browser, render_run(report), tmp_path), "<header", "</header>")
    assert header.endswith("· mode overwrite: a line per user ID of the audience and per removed one")
    report["mode"] = "sync"
    header = _text(_dom(browser, render_run(report), tmp_path), "<header", "</header>")
    assert header.endswith("· mode sync: a line per added and per removed user ID")
