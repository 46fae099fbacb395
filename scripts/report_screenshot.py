"""Open a report page in headless Chromium (Debian's ``chromium``): its DOM, or a screenshot.

    python scripts/report_screenshot.py OUT/report.html docs/report-screenshot.png [--size 1200,1500]

The README's screenshot is the demo's page: ``scripts/demo`` then this script on
``out/demo/report.html``. ``tests/test_report_browser.py`` uses the same command to read the page
the way a browser renders it. The browser runs offline: no first-run, sync, component updates or
background requests, a throw-away profile.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM_ENV = "AUDIENCE_SYNC_CHROMIUM"  # the browser's path, when it is not `chromium` on PATH
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
    "--no-first-run", "--no-default-browser-check", "--hide-scrollbars",
)
# Not --blink-settings=scriptEnabled=false: headless Chromium takes its screenshot and reads the DOM
# back through its own script engine, and with scripts off it prints and writes nothing. The page has
# no script to run anyway (tests/test_html_report.py checks every tag).


def find_chromium() -> str | None:
    for candidate in (os.environ.get(CHROMIUM_ENV), shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def run_chromium(browser: str, page: Path, *action: str, size: str = "1200,1500") -> subprocess.CompletedProcess:
    """Chromium with ``action`` (``--dump-dom`` or ``--screenshot=PATH``) on a local page."""
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={size}", *action,
                               page.resolve().as_uri()], capture_output=True, text=True, timeout=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("page", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--size", default="1200,1500", help="window WIDTH,HEIGHT in pixels")
    args = parser.parse_args(argv)
    browser = find_chromium()
    if browser is None:
        print(f"chromium not found (apt-get install chromium, or set {CHROMIUM_ENV})", file=sys.stderr)
        return 2
    args.png.parent.mkdir(parents=True, exist_ok=True)
    done = run_chromium(browser, args.page, f"--screenshot={args.png.resolve()}", size=args.size)
    if done.returncode != 0 or not args.png.is_file():
        print(done.stderr[-2000:], file=sys.stderr)
        return 1
    print(f"{args.png}: {args.png.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
