"""Where a record of a profile extract is, for error messages that name a line (never its content).

Arrow's readers count records, not lines. These helpers re-read the file, only when an error is
being reported, and map a record's index to the line it starts on: CSV (the header and blank lines
counted, quoted fields spanning lines followed, as Arrow reads them) and JSONL (blank lines
counted; Arrow skips them).
"""
from __future__ import annotations

import csv
import io
import json

from transforms.storage import open_decompressed


def csv_line_of_row(path: str, row: int) -> int | None:
    """The line (from 1) where data record ``row`` (from 0, the header not counted) starts."""
    with open_decompressed(path) as handle:
        text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(text)
        previous_end, seen_header, index = 0, False, 0
        for record in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if not record:  # a blank line: Arrow skips it
                continue
            if not seen_header:
                seen_header = True
                continue
            if index == row:
                return start
            index += 1
    return None


def first_line_not_utf8(path: str) -> int | None:
    """The line (from 1) of a text extract's first bytes that are not UTF-8 (CR, LF and CRLF are
    line breaks, as Arrow's CSV reader counts them), or None."""
    with open_decompressed(path) as handle:
        number = 1
        for raw in handle:  # pieces ending in LF: a multi-byte character never holds one
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as bad:
                return number + raw[:bad.start].count(b"\r")
            number += 1 + raw.rstrip(b"\r\n").count(b"\r")
    return None


def jsonl_line_of_row(path: str, row: int) -> int | None:
    """The line (from 1) of JSON record ``row`` (from 0; blank lines are not records)."""
    with open_decompressed(path) as handle:
        index = 0
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if index == row:
                return number
            index += 1
    return None


class DoubledKey(Exception):
    """A JSON object naming a key twice (:func:`refuse_doubled_keys`)."""

    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def refuse_doubled_keys(pairs: list) -> dict:
    """``json.loads``'s ``object_pairs_hook``: an object naming a key twice raises :class:`DoubledKey`."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set = set()
        raise DoubledKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return record


def _json_kind(value) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def first_json_type_change(data: bytes) -> tuple[int, str, str] | None:
    """``(line, column, "a X where earlier records have a Y")`` for the first record whose value for
    a key has another JSON type than in earlier records (nulls aside), which Arrow refuses."""
    seen: dict[str, str] = {}
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        record = json.loads(raw)
        if not isinstance(record, dict):
            continue
        for column, value in record.items():
            if value is None:
                continue
            kind = _json_kind(value)
            earlier = seen.setdefault(column, kind)
            if earlier != kind:
                return number, column, f"a {kind} where earlier records have a {earlier}"
    return None
