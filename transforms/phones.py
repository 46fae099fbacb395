"""Phone numbers to E.164 with libphonenumber (``phonenumbers``), vectorized wherever the answer
can be read off the digits.

The rules (README "Phone numbers"):

* A phone is digits (any script; they become ASCII), at most one leading ``+``, and separators:
  whitespace and libphonenumber's punctuation (``- . / ( ) [ ]`` and their Unicode variants).
  Anything else (letters, extension marks ``x ~ # ;``) is ``invalid_phone``: no vanity numbers, no
  extension, no number picked out of text.
* ``+`` then digits: international, whatever the default region. Without a default region, a
  leading ``00`` (the ITU international prefix) reads as ``+``; any other number without a country
  code is ``invalid_phone`` (never guessed). With a default region, such numbers are read as
  libphonenumber reads them dialled in that region (its international prefix, national prefix).
* Valid means libphonenumber's ``is_possible_number_with_reason(...) == IS_POSSIBLE``: a known
  country code and a national number of a possible length for it (not "local only"), at most 15
  digits in all (E.164). ``is_valid_number`` is not used: it checks number ranges, which change
  with every metadata release, so a library upgrade would silently change which members match.

Only rows that need it go through the library (per-row Python, 50-250 us a row). Two vectorized
fast paths, numpy over the bytes of the separator-free values, give byte-for-byte the library's
answer (tested against it, row by row):

* international: ``+`` (or ``00`` without a region), a known country code, a national number of a
  possible length that the country's national-prefix-for-parsing pattern does not match at its
  start (so libphonenumber strips nothing): the E.164 form is the digits as written;
* national, with a default region that is the main region of its country code and has no prefix
  transform rule: the region's international prefix does not match, the number does not start with
  the country code, the national prefix (if any) matches and is removed, and what remains matches
  the region's national number pattern with a possible length: ``+``, country code, the rest.

The country tables come from libphonenumber's metadata (:mod:`transforms.phone_metadata`).
"""
from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import delete_bytes, string_buffers
from transforms.phone_metadata import MAX_NATIONAL, MIN_NATIONAL, Country, Region, check_region, library, tables

__all__ = ["check_region", "to_e164", "without_country_code"]

# Removed before anything else: every whitespace (as str.isspace, plus what RE2 calls \p{Z}),
# and libphonenumber's punctuation without the characters it also reads as an extension label
# ('x', '~', '～'): extensions are refused.
_SEPARATORS_RE = (
    r"[\s\v\x{85}\p{Z}\x{1c}-\x{1f}\x{ad}\x{200b}\x{2060}"
    r"\-\x{2010}-\x{2015}\x{2212}\x{30fc}\x{ff0d}-\x{ff0f}()\x{ff08}\x{ff09}\x{ff3b}\x{ff3d}.\[\]/\x{2053}\x{223c}]+"
)
_ASCII_SEPARATORS = np.zeros(256, dtype=bool)
_ASCII_SEPARATORS[list(b" \t\n\v\f\r\x1c\x1d\x1e\x1f-.()[]/")] = True
_SHAPE_RE = r"^[+\x{ff0b}]?\p{Nd}+$"
_ZERO = ord("0")


class _Bytes:
    """The bytes of a null-free ASCII string array, for per-row tests without per-row Python."""

    def __init__(self, values: pa.StringArray):
        self.values = values
        self.offsets, self.data = string_buffers(values)
        self.starts = (self.offsets[:-1] - self.offsets[0]).astype(np.int64)
        self.lengths = np.diff(self.offsets).astype(np.int64)

    def tails(self, rows: np.ndarray, offset: np.ndarray) -> pa.StringArray:
        """Each row of ``rows`` from byte ``offset`` on (ASCII: bytes are characters)."""
        out = self.values.take(pa.array(rows))
        for k in np.unique(offset).tolist():
            mask = pa.array(offset == k)
            out = pc.replace_with_mask(out, mask, pc.utf8_slice_codeunits(out.filter(mask), k))
        return out

    def at(self, rows: np.ndarray, offset) -> np.ndarray:
        """The byte at ``offset`` of each row in ``rows`` (0 past its end)."""
        offset = np.broadcast_to(np.asarray(offset, dtype=np.int64), rows.shape)
        inside = offset < self.lengths[rows]
        where = np.where(inside, self.starts[rows] + offset, 0)
        return np.where(inside, self.data[where] if len(self.data) else 0, 0)

    def literal(self, rows: np.ndarray, offset, text: str) -> np.ndarray:
        """True where the row has ``text`` at ``offset``."""
        ok = np.ones(len(rows), dtype=bool)
        for i, ch in enumerate(text.encode()):
            ok &= self.at(rows, np.asarray(offset) + i) == ch
        return ok

    def number(self, rows: np.ndarray, offset, width: int) -> np.ndarray:
        """The ``width`` digits at ``offset`` as an integer (rows known to have them: no bounds check)."""
        at = self.starts[rows] + offset
        out = np.zeros(len(rows), dtype=np.int64)
        for i in range(width):
            out = out * 10 + (self.data[at + i].astype(np.int64) - _ZERO)
        return out


def _mask(values: pa.BooleanArray) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def _ascii_digits(value: str) -> str:
    """Digits of any script as ASCII, the fullwidth plus as '+' (for the rows that are not ASCII);
    "" (invalid) when a character has no decimal value in Python's Unicode data, which can be older
    than the regex engine's (Kawi digits: Unicode 15, unknown to Python 3.11)."""
    digits = [c if c == "+" else "+" if c == "\uff0b" else unicodedata.decimal(c, None) for c in value]
    return "" if None in digits else "".join(map(str, digits))


def _strip(trimmed: pa.StringArray) -> pa.StringArray:
    """Separators removed; the few rows with other scripts' characters made ASCII where they are
    digits, emptied (invalid) where they are anything else."""
    stripped = delete_bytes(trimmed, _ASCII_SEPARATORS)
    other = pc.invert(pc.string_is_ascii(stripped))
    if not pc.any(other).as_py():
        return stripped
    rows = pc.replace_substring_regex(pc.filter(stripped, other), _SEPARATORS_RE, "")
    shaped = pc.match_substring_regex(rows, _SHAPE_RE).to_pylist()
    fixed = [_ascii_digits(v) if ok else "" for v, ok in zip(rows.to_pylist(), shaped)]
    return pc.replace_with_mask(stripped, other, pa.array(fixed, pa.string()))


def to_e164(trimmed: pa.StringArray, region: str | None) -> pa.StringArray:
    """E.164 strings (``+`` and digits) of trimmed phone values; null where invalid. ``trimmed``
    has no nulls (the caller marks missing values first; an empty string is simply invalid)."""
    n = len(trimmed)
    if n == 0:
        return pa.array([], pa.string())
    stripped = _strip(trimmed)
    b = _Bytes(stripped)
    digits = _mask(pc.ascii_is_decimal(stripped))  # "" is not
    plus = _mask(pc.starts_with(stripped, "+")) & _mask(pc.ascii_is_decimal(pc.utf8_slice_codeunits(stripped, 1)))
    double_zero = digits & _mask(pc.starts_with(stripped, "00"))
    if region is None:
        intl, skip, national = plus | double_zero, np.where(double_zero, 2, 1), np.zeros(n, dtype=bool)
    else:
        intl, skip, national = plus, np.ones(n, dtype=np.int64), digits
    t = tables()
    fast = _fast_international(b, np.flatnonzero(intl), skip, t)
    as_written, idd = fast[skip[fast] == 1], fast[skip[fast] == 2]
    parts = []  # (rows, values): the E.164 forms of rows not as written
    if len(idd):  # 00 rows: "+" and what follows the 00
        parts.append((idd, pc.binary_join_element_wise("+", b.tails(idd, np.full(len(idd), 2)), "")))
    if region is not None:
        parts.append(_fast_national(b, stripped, np.flatnonzero(national), t.region(region)))
    done = np.zeros(n, dtype=bool)
    done[fast] = True
    for rows, _ in parts:
        done[rows] = True
    slow = np.flatnonzero((intl | national) & ~done)
    if len(slow):
        texts = stripped.take(pa.array(slow)).to_pylist()
        values = [library("+" + v[2:] if s == 2 else v, None if s else region)
                  for v, s in zip(texts, np.where(intl[slow], skip[slow], 0).tolist())]
        parts.append((slow, pa.array(values, pa.string())))
    return _assemble(stripped, as_written, parts)


def without_country_code(values: pa.Array) -> np.ndarray:
    """Where a phone is written without a country code (digits and separators, no leading ``+``
    nor ``00``): a number only a default region reads (:func:`to_e164` without one: invalid). Not
    under the shortest national number of any country (4 digits): a placeholder ('0', '000') that
    no region reads, which failed an international extract's export asking for a region."""
    stripped = _strip(pc.utf8_trim_whitespace(pc.fill_null(values, "")))
    return (_mask(pc.ascii_is_decimal(stripped)) & ~_mask(pc.starts_with(stripped, "00"))
            & (pc.utf8_length(stripped).to_numpy(zero_copy_only=False) >= MIN_NATIONAL))


def _assemble(stripped: pa.StringArray, as_written: np.ndarray, parts: list) -> pa.StringArray:
    """One take: ``stripped`` itself at ``as_written``, each part's values at its rows, null elsewhere."""
    index = np.full(len(stripped), -1, dtype=np.int64)
    index[as_written] = as_written
    arrays, base = [stripped], len(stripped)
    for rows, values in parts:
        if len(rows):
            index[rows] = base + np.arange(len(rows))
            arrays.append(values)
            base += len(rows)
    combined = pa.concat_arrays(arrays) if len(arrays) > 1 else stripped
    return combined.take(pa.array(index, mask=index < 0))


def _fast_international(b: _Bytes, rows: np.ndarray, skip: np.ndarray, t) -> np.ndarray:
    """The rows (ascending) whose E.164 form is their digits as written: a known country code,
    a possible national length, and no national prefix libphonenumber would strip. Whole-array
    lookups by country code; a loop only over the few codes whose prefix is not a single digit."""
    skip = skip[rows]
    count = b.lengths[rows] - skip
    rows, skip, count = rows[count >= 4], skip[count >= 4], count[count >= 4]  # room for 3 digits of code
    first3 = b.number(rows, skip, 3)
    code_len = t.code_length[first3].astype(np.int64)  # 0: unknown (or a leading 0)
    rows, skip, count, first3, code_len = (x[code_len > 0] for x in (rows, skip, count, first3, code_len))
    code = first3 // 10 ** (3 - code_len)
    t.learn(code)
    national_len = np.minimum(count - code_len, MAX_NATIONAL + 1)
    ok = t.fast[code] & t.possible[code, national_len]
    first_national = b.number(rows[ok], skip[ok] + code_len[ok], 1)  # possible lengths are >= 1
    prefix = t.prefix_digit[code[ok]]
    ok[np.flatnonzero(ok)[(prefix >= 0) & (first_national == prefix)]] = False
    for c in np.flatnonzero(np.bincount(code[ok & (t.prefix_digit[code] == -2)], minlength=1000)).tolist():
        mine = np.flatnonzero(ok & (code == c))
        country = t.country(c)
        ok[mine[_prefix_matches(b, rows[mine], skip[mine] + len(country.code_str), country)]] = False
    return rows[ok]


def _prefix_matches(b: _Bytes, rows: np.ndarray, offset: np.ndarray, country: Country) -> np.ndarray:
    """Where the country's national-prefix-for-parsing pattern matches at ``offset`` (empty match included)."""
    if not len(rows) or (country.prefix_literal is None and country.prefix_re is None):
        return np.zeros(len(rows), dtype=bool)
    if country.prefix_literal is not None:
        found = np.zeros(len(rows), dtype=bool)
        for literal in country.prefix_literal:
            found |= b.literal(rows, offset, literal)
        return found
    matched = pc.match_substring_regex(b.tails(rows, offset), country.prefix_re)
    return np.asarray(matched.to_numpy(zero_copy_only=False), dtype=bool)


def _fast_national(b: _Bytes, stripped: pa.StringArray, rows: np.ndarray, info: Region | None):
    """(rows, E.164 values) for the national rows the region's simple rules settle (module doc)."""
    none = (np.zeros(0, np.int64), pa.array([], pa.string()))
    if info is None or not len(rows):
        return none
    code = info.country.code_str
    ok = ~b.literal(rows, 0, code)  # written with its own country code: the library decides
    if info.idd_literal is not None:
        ok &= ~b.literal(rows, 0, info.idd_literal)
    elif info.idd_re is not None:
        ok &= ~np.asarray(pc.match_substring_regex(stripped.take(pa.array(rows)), info.idd_re).to_numpy(zero_copy_only=False), dtype=bool)
    rows = rows[ok]
    if info.prefix_literal is not None:
        rows = rows[b.literal(rows, 0, info.prefix_literal)]
        cut = np.full(len(rows), len(info.prefix_literal), dtype=np.int64)
    elif info.prefix_re is not None:
        matched = pc.extract_regex(stripped.take(pa.array(rows)), info.prefix_re)
        cut = pc.fill_null(pc.binary_length(pc.struct_field(matched, "p")), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        rows, cut = rows[cut > 0], cut[cut > 0]  # no prefix written: the library may read it otherwise
    else:
        cut = np.zeros(len(rows), dtype=np.int64)
    nsn_len = b.lengths[rows] - cut
    possible = (nsn_len <= MAX_NATIONAL) & info.country.possible[np.clip(nsn_len, 0, MAX_NATIONAL)]
    rows, cut = rows[possible], cut[possible]
    if not len(rows):
        return none
    nsn = b.tails(rows, cut)  # a prefix pattern has one or a few match lengths
    viable = np.asarray(pc.match_substring_regex(nsn, info.national_re).to_numpy(zero_copy_only=False), dtype=bool)
    return rows[viable], pc.binary_join_element_wise("+" + code, nsn.filter(pa.array(viable)), "")
