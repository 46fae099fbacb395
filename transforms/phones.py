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

Only rows that need it go through the library (per-row Python, ~50 us a row). Two vectorized fast
paths give byte-for-byte the library's answer (tested against it):

* international: ``+``, a known country code, a national number of a possible length that the
  country's national-prefix-for-parsing pattern does not match at its start (so libphonenumber
  strips nothing): the E.164 form is the digits as written;
* national, with a default region that is the main region of its country code and has no prefix
  transform rule: the region's international prefix does not match, the number does not start with
  the country code, the national prefix (if any) matches and is removed, and what remains matches
  the region's national number pattern with a possible length: ``+``, country code, the rest.
"""
from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import delete_bytes

__all__ = ["to_e164", "check_region"]

_MAX_DIGITS = 15  # E.164
_MAX_NATIONAL = 17  # libphonenumber's longest national number

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
_ASCII_SHAPE_RE = r"^\+?[0-9]+$"
_INTL_RE = r"^\+[1-9][0-9]{3,}$"  # '+', a country code never starting with 0, enough digits to slice


def _phonenumbers():
    import phonenumbers  # imported on first use: workers that never see a phone never load its metadata

    return phonenumbers


def check_region(region: str) -> str:
    """``region`` if libphonenumber knows it (ISO 3166 two letters, upper case), else ValueError."""
    if region not in _phonenumbers().SUPPORTED_REGIONS:
        raise ValueError(f"unknown region '{region}': use an ISO 3166-1 alpha-2 code libphonenumber knows (FR, US, GB, ...)")
    return region


# ------------------------------------------------------------------------- per-country tables
@dataclass(frozen=True)
class _Country:
    code: int
    possible: np.ndarray  # bool by national length 0.._MAX_NATIONAL: IS_POSSIBLE and <= 15 digits in all
    prefix_re: str | None  # "^(?:national prefix for parsing)", None if the country has none
    fast: bool  # False: every number of this code goes to the library (a pattern RE2 cannot run)


@dataclass(frozen=True)
class _Region:
    country: _Country
    idd_re: str | None  # "^(?:international prefix)"
    prefix_re: str | None  # national prefix for parsing, "^(?:...)" capturing the match as 'p'
    national_re: str  # "^(?:national number pattern)$"


class _Tables:
    """Country and region facts read once from libphonenumber's metadata (lazily, per process)."""

    def __init__(self):
        p = _phonenumbers()
        self.code_length = np.zeros(1000, dtype=np.int8)  # by the first 3 digits: length of the country code
        codes = set(p.COUNTRY_CODE_TO_REGION_CODE)
        for first3 in range(100, 1000):
            self.code_length[first3] = next((n for n in (1, 2, 3) if first3 // 10 ** (3 - n) in codes), 0)
        self._countries: dict[int, _Country] = {}
        self._regions: dict[str, _Region | None] = {}
        self._lock = threading.Lock()

    def country(self, code: int) -> _Country:
        with self._lock:
            if code not in self._countries:
                self._countries[code] = _build_country(code)
            return self._countries[code]

    def region(self, region: str) -> _Region | None:
        """Facts for the national fast path, or None where it does not apply (library only)."""
        with self._lock:
            if region not in self._regions:
                self._regions[region] = _build_region(region, self._countries)
            return self._regions[region]


def _re2_ok(pattern: str, extract: bool = False) -> bool:
    try:
        kernel = pc.extract_regex if extract else pc.match_substring_regex
        kernel(pa.array([""], pa.string()), pattern)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def _non_capturing(pattern: str) -> str:
    """Capturing groups made non-capturing (Arrow's extract_regex wants named groups only)."""
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)


def _possible_lengths(code: int) -> np.ndarray:
    p = _phonenumbers()
    ok = np.zeros(_MAX_NATIONAL + 1, dtype=bool)
    for length in range(1, _MAX_NATIONAL + 1):
        if len(str(code)) + length > _MAX_DIGITS:
            break
        number = p.PhoneNumber(country_code=code, national_number=int("9" * length))
        ok[length] = p.is_possible_number_with_reason(number) == p.ValidationResult.IS_POSSIBLE
    return ok


def _build_country(code: int) -> _Country:
    p = _phonenumbers()
    main = p.region_code_for_country_code(code)
    metadata = p.PhoneMetadata.metadata_for_region_or_calling_code(code, main)
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    prefix_re = f"^(?:{pattern})" if pattern else None
    return _Country(code, _possible_lengths(code), prefix_re, metadata is not None and (prefix_re is None or _re2_ok(prefix_re)))


def _build_region(region: str, countries: dict) -> _Region | None:
    p = _phonenumbers()
    metadata = p.PhoneMetadata.metadata_for_region(region)
    if metadata is None or p.region_code_for_country_code(metadata.country_code) != region:
        return None  # not the main region of its code: its lengths differ from the validity check's
    if metadata.national_prefix_transform_rule:
        return None
    code = metadata.country_code
    if code not in countries:
        countries[code] = _build_country(code)
    idd_re = f"^(?:{metadata.international_prefix})" if metadata.international_prefix else None
    pattern = metadata.national_prefix_for_parsing
    prefix_re = f"^(?P<p>(?:{_non_capturing(pattern)}))" if pattern else None
    national_re = f"^(?:{metadata.general_desc.national_number_pattern})$"
    if not all(r is None or _re2_ok(r) for r in (idd_re, prefix_re, national_re)) or (
        prefix_re is not None and not _re2_ok(prefix_re, extract=True)
    ):
        return None
    return _Region(countries[code], idd_re, prefix_re, national_re)


_tables: _Tables | None = None
_tables_lock = threading.Lock()


def _get_tables() -> _Tables:
    global _tables
    with _tables_lock:
        if _tables is None:
            _tables = _Tables()
        return _tables


# ------------------------------------------------------------------------------- the rules
def _strip(values: pa.StringArray) -> pa.StringArray:
    """Separators removed (a byte mask for an all-ASCII batch, a regex otherwise)."""
    if pc.all(pc.string_is_ascii(values)).as_py() is not False:
        return delete_bytes(values, _ASCII_SEPARATORS)
    return pc.replace_substring_regex(values, _SEPARATORS_RE, "")


def _ascii_digits(value: str) -> str:
    """Digits of any script as ASCII, the fullwidth plus as '+' (for the rows that are not ASCII)."""
    return "".join(c if c == "+" else "+" if c == "\uff0b" else str(unicodedata.decimal(c)) for c in value)


def _mask(values) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False).to_numpy(zero_copy_only=False), dtype=bool)


def to_e164(trimmed: pa.StringArray, region: str | None) -> pa.StringArray:
    """E.164 strings (``+`` and digits) of trimmed, non-empty phone values; null where invalid.
    ``trimmed`` has no nulls (the caller marks missing values first)."""
    n = len(trimmed)
    out = pa.nulls(n, pa.string())
    if n == 0:
        return out
    stripped = _strip(trimmed)
    shape = _mask(pc.match_substring_regex(stripped, _SHAPE_RE))
    foreign = shape & ~_mask(pc.string_is_ascii(stripped))
    if foreign.any():  # other scripts' digits: per row, a handful of rows
        fixed = pa.array([_ascii_digits(v) for v in stripped.filter(pa.array(foreign)).to_pylist()], pa.string())
        stripped = pc.replace_with_mask(stripped, pa.array(foreign), fixed)
    plus = shape & _mask(pc.starts_with(stripped, "+"))
    if region is None:
        idd = shape & ~plus & _mask(pc.starts_with(stripped, "00"))
        if idd.any():  # the ITU international prefix, read as '+' when no region says otherwise
            rewritten = pc.binary_join_element_wise("+", pc.utf8_slice_codeunits(stripped.filter(pa.array(idd)), 2), "")
            stripped = pc.replace_with_mask(stripped, pa.array(idd), rewritten)
            plus |= idd
        national = np.zeros(n, dtype=bool)
    else:
        national = shape & ~plus
    tables = _get_tables()
    done = np.zeros(n, dtype=bool)
    for rows, values in (_fast_international(stripped, plus, tables), _fast_national(stripped, national, region, tables)):
        if len(rows):
            out = _scatter(out, rows, values)
            done[rows] = True
    slow = np.flatnonzero((plus | national) & ~done)
    if len(slow):
        values = [_library(v, None if v.startswith("+") else region) for v in stripped.take(pa.array(slow)).to_pylist()]
        out = _scatter(out, slow, pa.array(values, pa.string()))
    return out


def _scatter(out: pa.StringArray, rows: np.ndarray, values: pa.StringArray) -> pa.StringArray:
    mask = np.zeros(len(out), dtype=bool)
    mask[rows] = True
    order = np.argsort(rows, kind="stable")  # replace_with_mask fills the masked rows in order
    return pc.replace_with_mask(out, pa.array(mask), values.take(pa.array(order)))


def _library(value: str, region: str | None) -> str | None:
    """libphonenumber's E.164 of one ASCII value, or None (not a number, impossible, too long)."""
    p = _phonenumbers()
    try:
        number = p.parse(value, region)
    except p.NumberParseException:
        return None
    if p.is_possible_number_with_reason(number) != p.ValidationResult.IS_POSSIBLE:
        return None
    e164 = p.format_number(number, p.PhoneNumberFormat.E164)
    return e164 if len(e164) <= _MAX_DIGITS + 1 else None


def _fast_international(stripped: pa.StringArray, plus: np.ndarray, tables: _Tables):
    """(rows, E.164 values) for the '+' rows whose E.164 form is the digits as written."""
    cand = np.flatnonzero(plus) if plus.any() else np.zeros(0, np.int64)
    if not len(cand):
        return cand, pa.array([], pa.string())
    values = stripped.take(pa.array(cand))
    shaped = _mask(pc.match_substring_regex(values, _INTL_RE))
    cand, values = cand[shaped], values.filter(pa.array(shaped))
    first3 = pc.cast(pc.utf8_slice_codeunits(values, 1, 4), pa.int32()).to_numpy(zero_copy_only=False)
    code_len = tables.code_length[first3].astype(np.int64)
    known = code_len > 0
    code = first3 // 10 ** (3 - np.maximum(code_len, 1))
    national_len = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64) - 1 - code_len
    keep = np.zeros(len(cand), dtype=bool)
    for c in np.unique(code[known]).tolist():
        rows = np.flatnonzero(known & (code == c))
        country = tables.country(c)
        if not country.fast:
            continue
        lengths = np.clip(national_len[rows], 0, _MAX_NATIONAL)
        rows = rows[country.possible[lengths] & (national_len[rows] <= _MAX_NATIONAL)]
        if len(rows) and country.prefix_re is not None:
            nsn = pc.utf8_slice_codeunits(values.take(pa.array(rows)), 1 + len(str(c)))
            rows = rows[~_mask(pc.match_substring_regex(nsn, country.prefix_re))]
        keep[rows] = True
    return cand[keep], values.filter(pa.array(keep))


def _fast_national(stripped: pa.StringArray, national: np.ndarray, region: str | None, tables: _Tables):
    """(rows, E.164 values) for the national rows the region's simple rules settle (see module doc)."""
    info = tables.region(region) if region is not None and national.any() else None
    if info is None:
        return np.zeros(0, np.int64), pa.array([], pa.string())
    cand = np.flatnonzero(national)
    values = stripped.take(pa.array(cand))
    code = str(info.country.code)
    ok = ~_mask(pc.starts_with(values, code))
    if info.idd_re is not None:
        ok &= ~_mask(pc.match_substring_regex(values, info.idd_re))
    if info.prefix_re is not None:
        matched = pc.extract_regex(values, info.prefix_re)
        prefix_len = pc.fill_null(pc.binary_length(pc.struct_field(matched, "p")), 0).to_numpy(zero_copy_only=False)
        ok &= prefix_len > 0  # no prefix written: the library may still read it otherwise
    else:
        prefix_len = np.zeros(len(cand), dtype=np.int64)
    nsn_len = pc.binary_length(values).to_numpy(zero_copy_only=False) - prefix_len
    ok &= (nsn_len <= _MAX_NATIONAL) & info.country.possible[np.clip(nsn_len, 0, _MAX_NATIONAL)]
    rows = np.flatnonzero(ok)
    if not len(rows):
        return rows, pa.array([], pa.string())
    kept, cut = values.take(pa.array(rows)), prefix_len[rows]
    nsn = kept
    for k in np.unique(cut).tolist():  # a prefix pattern has one or a few match lengths
        if k:
            nsn = pc.replace_with_mask(nsn, pa.array(cut == k), pc.utf8_slice_codeunits(kept.filter(pa.array(cut == k)), k))
    viable = _mask(pc.match_substring_regex(nsn, info.national_re))
    rows, nsn = rows[viable], nsn.filter(pa.array(viable))
    return cand[rows], pc.binary_join_element_wise("+" + code, nsn, "")
