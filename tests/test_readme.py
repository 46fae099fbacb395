"""The README's promises that code can check: its reasons table is transforms/outcomes.py's, and its
test command is the one CI runs."""
from __future__ import annotations

import re
from pathlib import Path

from transforms.outcomes import Reason

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _reason_rows() -> dict[str, tuple[str, str]]:
    """The rows of the README's reasons table: reason -> (category, meaning)."""
    rows = {}
    for line in README.splitlines():
        match = re.fullmatch(r"\| `([a-z_0-9]+)` \| `([a-z_]+)` \| (.+) \|", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_the_readme_lists_every_reason_with_its_category_and_meaning():
    rows = _reason_rows()
    expected = {str(r): (str(r.category), r.description) for r in Reason}
    assert rows == expected


def test_the_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/test" in ci
    assert re.search(r"^scripts/test\s+# runs the test suite", README, re.M)
