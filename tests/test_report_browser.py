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
