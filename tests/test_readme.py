"""The README's promises that code can check: its reasons table is transforms/outcomes.py's, its
test command is the one CI runs, and the tests it cites as proof exist."""
from __future__ import annotations

import ast
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


def _cited_tests(text: str) -> list[tuple[str, str]]:
    """The ``(file, test)`` pairs the text cites: ``test_x.py::test_y``, and ``::test_z`` after it for
    another test of the last file named (in the same paragraph); a bare ``test_x.py`` as ``(file, "")``."""
    cited = []
    for paragraph in text.split("\n\n"):
        last = None
        for match in re.finditer(r"(test_\w+\.py)?::(\w+)|(test_\w+\.py)", paragraph):
            name = match.group(1) or match.group(3)
            last = name or last
            if last is not None:
                cited.append((last, match.group(2) or ""))
    return cited


def _missing(cited: list[tuple[str, str]]) -> list[str]:
    """The cited files and tests that are not in tests/ (a test is a function or class of its file)."""
    defined: dict[str, set[str] | None] = {}
    missing = []
    for name, test in cited:
        if name not in defined:
            path = ROOT / "tests" / name
            tree = ast.parse(path.read_text(encoding="utf-8")) if path.exists() else None
            defined[name] = None if tree is None else {
                node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        if defined[name] is None or (test and test not in defined[name]):
            missing.append(f"{name}::{test}" if test else name)
    return missing


def test_every_test_the_readme_cites_exists():
    cited = _cited_tests(README)
    assert len({t for _, t in cited if t}) > 100  # the guards table's proofs are read
    assert _missing(cited) == []


def test_a_citation_of_a_renamed_test_is_found():
    text = "proved by `test_readme.py::test_the_readme_test_command_is_what_ci_runs`, `::test_gone`\n\n`test_nope.py`"
    assert _missing(_cited_tests(text)) == ["test_readme.py::test_gone", "test_nope.py"]


def test_every_install_of_the_project_the_readme_shows_is_constrained_by_the_worker_lock():
    """The Airflow section's job venv was `pip install /path/to/audience-sync`: pyproject's ranges resolved to
    whatever PyPI had that day (duckdb, pyarrow, ... newer than the lock), so the DAG's local runs, and the
    launcher of its Dataflow runs, ran versions no test ran and the workers' image (requirements-worker.txt)
    does not hold."""
    installs = [line for line in README.splitlines() if re.search(r"pip install [^\n]*audience-sync\b", line)
                and "apache-airflow" not in line]
    assert installs, "the README shows no install of the project"
    assert [line for line in installs if "-c " not in line or "requirements-worker.txt" not in line] == []
