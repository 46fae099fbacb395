"""Read the figures shown on a report page (ours, or Chromium's serialized DOM of it).

Every figure on the page is an element with ``data-count`` (an integer, shown with thousands
separators) or ``data-figure`` (a rate); it belongs to the data source of the enclosing
``data-source`` element and to the row of the enclosing ``data-step`` / ``data-reason`` /
``data-segment`` / ``data-finding`` / ``data-night`` / ``data-key`` / ``data-row`` element, if any."""
from __future__ import annotations

from html.parser import HTMLParser
from typing import NamedTuple

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
ROWS = ("data-row", "data-step", "data-reason", "data-segment", "data-finding", "data-night", "data-key", "data-file")


class Figure(NamedTuple):
    source: str | None  # the data source (None: outside any; "" for a total row)
    row: tuple[str, str] | None  # ("data-reason", "invalid_hash"), ...
    name: str  # the data-count / data-figure value
    text: str

    @property
    def number(self) -> int:
        return int(self.text.replace(",", ""))


class _Figures(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, dict]] = []
        self.figures: list[Figure] = []
        self.text: list[list[str]] = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID:
            return
        attrs = dict(attrs)
        self.stack.append((tag, attrs))
        self.text.append([])

    def handle_startendtag(self, tag, attrs):
        pass

    def handle_endtag(self, tag):
        while self.stack:
            open_tag, attrs = self.stack.pop()
            text = "".join(self.text.pop()).strip()
            if self.text:
                self.text[-1].append(text)
            name = attrs.get("data-count") or attrs.get("data-figure")
            if name is not None:
                self.figures.append(Figure(self._nearest("data-source"), self._row(), name, text))
            if open_tag == tag:
                return

    def handle_data(self, data):
        if self.text:
            self.text[-1].append(data)

    def _nearest(self, attr: str):
        for _, attrs in reversed(self.stack):
            if attr in attrs:
                return attrs[attr]
        return None

    def _row(self):
        for _, attrs in reversed(self.stack):
            for attr in ROWS:
                if attr in attrs:
                    return attr, attrs[attr]
        return None


def figures(html: str) -> list[Figure]:
    parser = _Figures()
    parser.feed(html)
    parser.close()
    return parser.figures


def by_source(html: str) -> dict[str | None, dict[tuple, str]]:
    """``{source: {(row, name): text}}`` (row is None outside a row)."""
    out: dict = {}
    for f in figures(html):
        out.setdefault(f.source, {})[(f.row, f.name)] = f.text
    return out
