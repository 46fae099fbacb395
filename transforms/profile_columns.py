"""Profile-extract columns as the text keys are computed from: ids and keys (numbers become their
digits, :func:`id_text`) and the visitor-ID column as lists of IDs (split, padded back to 38 digits),
its entries counted and judged over the whole extract (several IDs joined by another separator, IDs
saved as numbers). Ids and keys written as a number's formatted text fail at their row. Used by
:mod:`transforms.profiles` and by the export's targets (:mod:`transforms.targets`); part of the
profile-key cache's code identity (:data:`transforms.key_cache.KEY_MODULES`)."""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import is_text_or_binary, plain_array, string_buffers
from transforms.config import ProfilesConfig
from transforms.errors import InputError, RowProblem, RunFailed
from transforms.outcomes import Counts, Metric, count
from transforms.reasons import not_stray


def id_text(values, path: str, column: str) -> pa.Array:
    """An id or key column as text (numbers become their text). Floating-point numbers that hold an
    integer are its digits: Arrow writes a double of 1e10 or more as exponent text
    ("1.23456789012e+11", what pandas writes for an integer column with gaps), an id or key no dump
    has. One of 2^53 or more is not the integer that was written (a 17-digit id stored as a double
    lost its last digits; a JSON number beyond int64 reads as one): the file fails, naming the
    column (never a value). Text of a number formatted (:func:`_refuse_number_text`) fails at its row.
    Profile extracts and the export's targets."""
    values = plain_array(values)
    _refuse_nested(values.type, path, column, "text or numbers")
    if is_text_or_binary(values.type):
        text = plain_array(values, text="cast")
        _refuse_number_text(text, column)
        return text
    if pa.types.is_decimal(values.type) and values.type.scale > 0:
        # A decimal with a scale (NUMBER(38,10)) holding an integer: its digits, not "12.0000000000".
        whole = pc.fill_null(pc.equal(values, pc.floor(values)), False)
        make = pa.decimal256 if pa.types.is_decimal256(values.type) else pa.decimal128
        digits = pc.if_else(whole, values, pa.scalar(0, values.type)).cast(
            make(values.type.precision, 0)).cast(pa.string())
        return pc.if_else(whole, digits, values.cast(pa.string()))
    if not pa.types.is_floating(values.type):
        return plain_array(values, text="cast")
    bits = {16: 11, 32: 24}.get(values.type.bit_width, 53)  # a float holds every integer below 2^bits exactly
    big = pc.sum(pc.greater_equal(pc.abs(values), 2.0 ** bits)).as_py() or 0
    if big:
        raise InputError(path, f"column '{column}': {big} value(s) stored as floating-point numbers of 2^{bits} "
                               "or more, whose last digits are lost: write the column as text")
    whole = pc.fill_null(pc.equal(values, pc.floor(values)), False)  # (NaN: false)
    digits = pc.if_else(whole, values, 0).cast(pa.int64()).cast(pa.string())
    return pc.if_else(whole, digits, values.cast(pa.string()))


# The text a number column becomes in a spreadsheet (Excel: 1.23457E+11, 6 digits kept), pandas (an
# integer column with gaps is a float column: 123456789012.0) or a float's writer (1.23456789012e+16,
# Java's 1.23456789012E11). An exponent needs a point or a sign: hexadecimal ids (1e3456) have neither.
# And a spreadsheet's number format grouping digits (50,000): (regex, bytes one of which it holds, problem).
_NUMBER_TEXTS = (
    (r"^[-+]?[0-9]+(\.0+|\.[0-9]*[eE][-+]?[0-9]+|[eE][-+][0-9]+)$", b".eE",
     "written as a floating-point number's text (1.0, 1.2E+11: a number column saved by a spreadsheet or pandas; "
     "an exponent drops digits)"),
    (r"^[-+]?[0-9]{1,3}(,[0-9]{3})+(\.[0-9]+)?$", b",",
     "written as a number's text with its digits grouped (1,234,567: a number column formatted by a spreadsheet)"),
)


def _refuse_number_text(text: pa.StringArray, column: str) -> None:
    """Raise :class:`RowProblem` at the first id or key written as a number's formatted text
    (:func:`number_text_rows`): read as written, 12 profiles whose 12-digit ids a spreadsheet saved as
    1.23457E+11 were one profile (exit 0), an id 123,456 another, and a key so written matches no dump's
    (an export sent 50,000 as a user ID); Parquet and JSON numbers read as the integers they hold
    (:func:`id_text`). Decimals (1.5) are read as written."""
    rows, problem = number_text_rows(text)
    if len(rows):
        raise RowProblem(int(rows[0]), f"column '{column}': {len(rows)} value(s) {problem}: write the column's "
                         "integers as text")


def address_text(values, path: str, column: str, counts: list | None) -> pa.Array:
    """An email or phone column read by its normalizer only (:func:`id_text`), its values written as a
    number's formatted text counted (``counts``), not refused at their row: no address or phone is read
    from one (it gives no key, counted invalid, as any junk value), so one stray value (`0.0` typed
    into a form) must not fail an extract of millions; a column a spreadsheet saved fails over the whole
    extract (:func:`check_address_numbers`)."""
    values = plain_array(values)
    if not is_text_or_binary(values.type):
        return id_text(values, path, column)
    text = plain_array(values, text="cast")
    if counts is not None:
        filled = len(text) - text.null_count - (pc.sum(pc.equal(pc.binary_length(text), 0)).as_py() or 0)
        counts.append(count(Metric.ADDRESS_VALUES, filled, detail=column))
        numbers = len(number_text_rows(text, every=True)[0])
        if numbers:
            counts.append(count(Metric.ADDRESS_VALUES_AS_NUMBERS, numbers, detail=column))
    return text


def check_address_numbers(counts: Counts, profiles: ProfilesConfig) -> None:
    """Raise :class:`RunFailed` (nothing published) when an email or phone column (:func:`address_text`),
    over all the extract's files and batches, holds a number's formatted text in at least 3 and 1 % of
    its values (:func:`~transforms.reasons.not_stray`): a column a spreadsheet or pandas saved gave those
    profiles no key, exit 0. Fewer are stray junk values: no key, counted invalid."""
    for column, numbers in counts.details(Metric.ADDRESS_VALUES_AS_NUMBERS).items():
        total = counts.get(Metric.ADDRESS_VALUES, detail=column)
        if not_stray(numbers, total):
            raise RunFailed(f"profiles: column '{column}' of '{profiles.path}': {numbers} of {total} values hold a "
                            "number's text (1.2E+11, 1,234,567: a column saved by a spreadsheet or pandas), no address "
                            "or phone: write the column as text. Nothing was published")


def number_text_rows(text: pa.StringArray, every: bool = False) -> tuple[np.ndarray, str]:
    """The rows of ``text`` written as a number's formatted text by the first of :data:`_NUMBER_TEXTS`
    finding any, in order (``every``: by any of them), and that rule's problem; none: an empty array.
    The regexes run only on values starting with a digit or a sign and ending with a digit, where the
    column holds a point, an e or a comma at all: emails and prefixed ids stop at their first and last
    bytes, ids of digits and phones at a byte scan (7 to 30 ms a 1M batch; phones written with points,
    +33.6.12.34.56.78, each reach the regex: 60 to 90 ms)."""
    offsets, data = string_buffers(text)
    lengths = np.diff(offsets)
    if not len(data):
        return np.zeros(0, np.int64), ""
    starts = offsets[:-1] - offsets[0]
    candidate = lengths > 2  # 1.0, 1,000 and 1E+1 at least
    first, last = np.minimum(starts, len(data) - 1), np.maximum(starts + lengths - 1, 0)
    head, tail = data[first], data[last]  # (comparisons: a lookup table took 5 times as long)
    candidate &= _is_digit(head) | (head == ord("+")) | (head == ord("-"))
    candidate &= _is_digit(tail)
    if text.null_count:
        candidate &= text.is_valid().to_numpy(zero_copy_only=False)
    at = np.flatnonzero(candidate)
    values, hits = None, None
    for pattern, marks, problem in _NUMBER_TEXTS if len(at) else ():
        if not any((data == byte).any() for byte in marks):
            continue
        values = text.take(pa.array(at)) if values is None else values
        found = pc.fill_null(pc.match_substring_regex(values, pattern), False).to_numpy(zero_copy_only=False)
        if found.any() and not every:
            return at[found], problem
        hits = found if hits is None else hits | found
    return (at[hits], "") if hits is not None else (np.zeros(0, np.int64), "")


def _is_digit(codes: np.ndarray) -> np.ndarray:
    return (codes >= ord("0")) & (codes <= ord("9"))


def profile_id_text(values, path: str, column: str) -> pa.Array:
    """The profile-id column as text (:func:`id_text`). A column of a type no id has (booleans,
    dates, times, timestamps, durations: a flag or a creation date named by mistake) fails naming the
    file and the column: its text merged every profile sharing a value into one (10 profiles read
    as 'true' and 'false', exit 0). Profile extracts and the export's targets."""
    value = values.type.value_type if pa.types.is_dictionary(values.type) else values.type
    if any(is_(value) for is_ in (pa.types.is_boolean, pa.types.is_temporal, pa.types.is_interval)):
        raise InputError(path, f"column '{column}': {value} values are no profile ids (profiles sharing one would "
                               "be one profile): is it the id column?")
    return id_text(values, path, column)


def _refuse_nested(kind: pa.DataType, path: str, column: str, wanted: str) -> None:
    """Fail naming the file and the column when it holds structs, maps or lists (where ``wanted``
    does not take them): no text key can be read from them (Arrow's cast failed the run with
    'ArrowNotImplementedError', naming neither)."""
    if pa.types.is_nested(kind):
        raise InputError(path, f"column '{column}': a {_nested_kind(kind)} column ({kind}); it must hold {wanted}")


def _nested_kind(kind: pa.DataType) -> str:
    return "struct" if pa.types.is_struct(kind) else "map" if pa.types.is_map(kind) else "list"


def visitor_lists(values: pa.Array | pa.ChunkedArray | None, n: int, sep: str, path: str, column: str) -> pa.Array:
    """The visitor-ID column as list<string> (CSV: split on ``sep``; numbers: :func:`id_text`), padded
    (:func:`_padded`). Entries are not cleaned here: consumers validate each ID (38 digits) when they use it."""
    if values is None:
        return pa.nulls(n, pa.list_(pa.string()))
    values = plain_array(values)
    if pa.types.is_large_list(values.type):
        values = values.cast(pa.list_(values.type.value_type))
    if not pa.types.is_list(values.type):
        _refuse_nested(values.type, path, column, "lists, text or numbers")
        text = id_text(values, path, column) if _is_number(values.type) else plain_array(values, text="cast")
        return _padded(pc.split_pattern(text, pattern=sep))
    entry = values.type.value_type
    if pa.types.is_nested(entry):  # BigQuery's REPEATED RECORD, Spark's collect_list(struct(...)): no ID to cast
        raise InputError(path, f"column '{column}': a list of {_nested_kind(entry)}s ({values.type}); it must hold "
                               "lists of text or numbers, one visitor ID each")
    if not _is_number(entry):
        return _padded(values if values.type == pa.list_(pa.string()) else values.cast(pa.list_(pa.string())))
    return _padded(_with_entries(values, lambda entries: id_text(entries, path, column)))


def _with_entries(lists: pa.ListArray, change) -> pa.ListArray:
    """``lists`` with ``change`` applied to its entries (the values its offsets cover); ``lists``
    itself when ``change`` returns the entries unchanged."""
    start, end = lists.offsets[0].as_py(), lists.offsets[-1].as_py()
    entries = lists.values.slice(start, end - start)
    changed = change(entries)
    if changed is entries:
        return lists
    return pa.ListArray.from_arrays(pc.subtract(lists.offsets, start), changed, mask=lists.is_null())


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_decimal(kind) or pa.types.is_floating(kind)


# Fewer digits than this is no visitor ID that lost its leading zeros (9 of them: one visitor ID in
# 10^9) but a customer number: left as it is, on the profile side and the dump side (restore_leading_zeros).
MIN_PADDED_DIGITS = 30


def _padded(lists: pa.ListArray) -> pa.ListArray:
    """IDs that lost their leading zeros upstream (a number, or text written from one), zero-padded to
    38 digits; under 30 digits (one visitor ID in 10^9) is no visitor ID (customer numbers), kept."""
    return _with_entries(lists, _padded_entries)


def _padded_entries(entries: pa.Array) -> pa.Array:
    lengths = pc.binary_length(entries)  # length kernels first: most entries are 38 digits or empty
    odd = pc.fill_null(pc.and_(pc.greater_equal(lengths, MIN_PADDED_DIGITS), pc.not_equal(lengths, 38)), False)
    # 38 characters with a space at an end: 37 digits in a fixed-width column 38 wide ('{:>38}').
    if not pc.any(odd).as_py() and not pc.any(pc.or_(pc.starts_with(entries, " "),
                                                     pc.ends_with(entries, " "))).as_py():
        return entries
    trimmed = pc.utf8_trim_whitespace(entries)  # as the keys read them: spaces around an ID are no digits
    lengths = pc.binary_length(trimmed)
    short = pc.and_(pc.and_(pc.greater_equal(lengths, MIN_PADDED_DIGITS), pc.less(lengths, 38)), pc.ascii_is_decimal(trimmed))
    return pc.if_else(pc.fill_null(short, False), pc.utf8_lpad(trimmed, 38, "0"), entries)


_JOINED = re.compile(r"[0-9]{38}([^0-9]+)[0-9]{38}")  # two IDs and what joins them


def visitor_entry_counts(lists: pa.Array, kind: pa.DataType) -> list:
    """A batch's visitor-ID entries as counts (``(Count, n)``, job-wide), judged over the whole extract
    by :func:`check_visitor_entries`: the entries read; those holding a list written as text ('[...]')
    and those holding several IDs joined by another character than the separator (lists written with
    another one, or a list entry holding a joined string), ``detail`` the column's kind (``list`` or
    ``text``); the joined ones again under the character joining the batch's first (as shown, never an
    ID); and those holding a number's text (9.01078E+37: :func:`number_text_rows`). Only entries longer
    than one ID are searched for joined ones, and of another length for numbers (a length kernel over
    the rest)."""
    flat = pc.list_flatten(lists)
    counts = [count(Metric.VISITOR_ENTRIES, len(flat))]
    form = "list" if pa.types.is_list(kind) or pa.types.is_large_list(kind) else "text"
    lengths = pc.binary_length(flat)
    # A spreadsheet's number for an ID (9.01078E+37), never 38 characters: only the others are searched.
    numbers = len(number_text_rows(pc.filter(flat, pc.fill_null(pc.not_equal(lengths, 38), False)))[0])
    if numbers:
        counts.append(count(Metric.VISITOR_ENTRIES_AS_NUMBERS, numbers, detail=form))
    longer = pc.filter(flat, pc.fill_null(pc.greater(lengths, 38), False))
    if not len(longer):
        return counts
    # A list column saved to CSV (pandas: "['838...', '123...']"; JSON: '["838..."]'): no entry is an ID.
    listed = pc.sum(pc.starts_with(pc.utf8_trim_whitespace(longer), "[")).as_py() or 0
    matched = pc.fill_null(pc.match_substring_regex(longer, _JOINED.pattern), False)
    joined = pc.sum(matched).as_py() or 0
    if listed:
        counts.append(count(Metric.VISITOR_ENTRIES_LISTED, listed, detail=form))
    if joined:  # the batch's joined entries, under the character joining its first (what the message shows)
        between = _shown(_JOINED.search(longer[pc.index(matched, True).as_py()].as_py()).group(1))
        counts += [count(Metric.VISITOR_ENTRIES_JOINED, joined, detail=form),
                   count(Metric.VISITOR_ENTRIES_JOINED_BY, joined, detail=between)]
    return counts


def _shown(between: str) -> str:
    """The joining text as a message shows it: a short printable one without letters or digits, quoted
    (a count's detail: never a control character, which the counts' coder separates fields with); a
    tab named (stripped as blank, it was shown ' ', a space separator)."""
    if between.strip(" ") == "\t":
        return "a tab"
    between = between.strip() or " "
    shown = len(between) <= 3 and between.isprintable() and not any(c.isalnum() for c in between)
    return f"'{between}'" if shown else "another character"


def check_visitor_entries(counts: Counts, profiles: ProfilesConfig) -> None:
    """Raise :class:`RunFailed` (nothing published) when the extract's visitor-ID entries, over all
    its files and batches (:func:`visitor_entry_counts`), hold lists written as text, several IDs
    joined by another character than ``visitor_ids_separator`` or a spreadsheet's number (9.01078E+37:
    a cell of one ID saved as a number, one of several joined staying text), at least 3 and 1 % of them
    (:func:`~transforms.reasons.not_stray`): those profiles gave no key and their lines were
    unmatched, exit 0. Fewer are stray bad rows: they give no key (``profile_values_without_key``).
    Judged once: a batch's or a file's share depended on how the extract was split (one stray entry
    among 2,500 profiles in parts of 5 rows failed the run, in parts of 250 it did not)."""
    total, sep = counts.get(Metric.VISITOR_ENTRIES), profiles.visitor_ids_separator
    where = f"profiles: column '{profiles.visitor_ids}' of '{profiles.path}'"
    joined_by = _most_common(counts.details(Metric.VISITOR_ENTRIES_JOINED_BY) or {"another character": 0})
    one_each, as_text = "write one ID per list entry", "write the visitor IDs as text, 38 digits each"
    for metric, what, list_remedy, text_remedy in (
            (Metric.VISITOR_ENTRIES_LISTED, "a list written as text ('[...]': a list column saved to CSV)", one_each,
             f"write the IDs separated by profiles.visitor_ids_separator (now '{sep}')"),
            (Metric.VISITOR_ENTRIES_JOINED, f"several visitor IDs joined by {joined_by}", one_each,
             f"set profiles.visitor_ids_separator (now '{sep}') to the extract's"),
            (Metric.VISITOR_ENTRIES_AS_NUMBERS, "a number's text (9.1E+37: visitor IDs saved as numbers by a "
             "spreadsheet, which keeps 6 digits)", as_text, as_text)):
        found = counts.details(metric)  # by the column's kind: list or text
        if not_stray(sum(found.values()), total):
            remedy = list_remedy if _most_common(found) == "list" else text_remedy
            raise RunFailed(f"{where}: {sum(found.values())} of {total} entries hold {what}: {remedy}. "
                            "Nothing was published")


def _most_common(counted: dict[str, int]) -> str:
    return max(sorted(counted), key=counted.get)


# A profile id column of few values (profiles.id naming a country, a segment: every profile sharing a
# value merged into one, exit 0) against legitimate repeats (one row per email of a profile).
FEW_IDS_MIN_ROWS = 1_000  # fewer rows are not judged
FEW_IDS_PER_ROW = 0.01  # distinct ids under this share of the rows: 100 rows a profile, on average
_PREFIX_ROWS, _PREFIX_IDS = 4_096, 1_024  # a batch whose first rows hold this many ids is not counted


def distinct_ids_at_most(ids: pa.ChunkedArray | pa.Array) -> tuple:
    """The count ``(PROFILE_IDS_AT_MOST, n)`` of a batch: its distinct ids, or its rows when its first
    4,096 rows already hold more than 1,024 (a real extract: counting them would cost a hash of every
    id). Summed over the batches it is never below the extract's distinct ids (what
    :func:`check_profile_ids` needs to refuse safely); a column of few values is counted exactly."""
    n = len(ids)
    if pc.count_distinct(ids.slice(0, _PREFIX_ROWS)).as_py() > _PREFIX_IDS:
        return count(Metric.PROFILE_IDS_AT_MOST, n)
    return count(Metric.PROFILE_IDS_AT_MOST, pc.count_distinct(ids).as_py())


def check_profile_ids(counts: Counts, profiles: ProfilesConfig) -> None:
    """Raise :class:`RunFailed` (nothing published) when an extract of 1,000 rows or more holds fewer
    distinct ``profiles.id`` values than 1 % of its rows (:data:`FEW_IDS_PER_ROW`), over all its files
    and batches: a column of few values (a country, a segment) named as the id, whose profiles were
    merged into a handful. Rows sharing an id are legitimate (one per email of a profile), so only the
    implausible share is refused. The count is per batch, summed (:func:`distinct_ids_at_most`): an
    extract in parts of a few rows each can pass (a known limit)."""
    rows, ids = counts.get(Metric.PROFILES_READ), counts.get(Metric.PROFILE_IDS_AT_MOST)
    if rows >= FEW_IDS_MIN_ROWS and ids < rows * FEW_IDS_PER_ROW:
        raise RunFailed(f"profiles.id: column '{profiles.id}' of '{profiles.path}' holds at most {ids:,} distinct "
                        f"values in {rows:,} rows (a country, a segment?): profiles sharing an id are merged into "
                        "one; set profiles.id to the profiles' own id. Nothing was published")
