"""What :mod:`transforms.phones` needs from libphonenumber (``phonenumbers``): the per-row parse,
and per-country / per-region tables for its vectorized fast paths, read from the library's own
metadata once per process (lazily: a job without phones never loads it).

A pattern that RE2 (Arrow's regex engine) cannot run makes its country or region take the library
path: slower, never different.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MAX_DIGITS = 15  # E.164: country code and national number together
MAX_NATIONAL = 17  # libphonenumber's longest national number
MIN_NATIONAL = 4  # and its shortest possible one, of any country (Niue, Saint Helena, ...)


def _phonenumbers():
    import phonenumbers  # on first use: loading the module and its metadata takes a moment

    return phonenumbers


def check_region(region: str) -> str:
    """``region`` if libphonenumber knows it (ISO 3166-1 alpha-2, upper case), else ValueError."""
    if region not in _phonenumbers().SUPPORTED_REGIONS:
        raise ValueError(f"unknown region '{region}': use an ISO 3166-1 alpha-2 code libphonenumber knows (FR, US, GB, ...)")
    return region


def library(value: str, region: str | None) -> str | None:
    """libphonenumber's E.164 form of one ASCII value (``region``: how a number without a country
    code is read; None for '+' numbers), or None: not a number, not a possible one, or longer than
    E.164 allows. Valid means ``IS_POSSIBLE`` (not "local only"): see transforms.phones."""
    p = _phonenumbers()
    try:
        number = p.parse(value, region)
    except p.NumberParseException:
        return None
    if p.is_possible_number_with_reason(number) != p.ValidationResult.IS_POSSIBLE:
        return None
    e164 = p.format_number(number, p.PhoneNumberFormat.E164)
    return e164 if len(e164) <= MAX_DIGITS + 1 else None


@dataclass(frozen=True)
class Country:
    code: int
    code_str: str
    possible: np.ndarray  # bool by national length 0..MAX_NATIONAL: IS_POSSIBLE, <= 15 digits in all
    prefix_literal: tuple[str, ...] | None  # the national prefix for parsing when it is plain digits or
    # an alternation of them ("0", "1", "0|180020")
    prefix_re: str | None  # otherwise "^(?:pattern)"; both None: the country has none
    fast: bool  # False: every number of this code goes to the library


@dataclass(frozen=True)
class Region:
    """A region whose national numbers the national fast path may settle."""

    country: Country
    idd_literal: str | None  # the international prefix when it is plain digits ("00")
    idd_re: str | None  # otherwise "^(?:pattern)"
    prefix_literal: str | None  # the national prefix for parsing, plain digits
    prefix_re: str | None  # otherwise "^(?P<p>(?:pattern))": the match is what is removed
    national_re: str  # "^(?:national number pattern)$"


def _literal(pattern: str | None) -> str | None:
    return pattern if pattern and re.fullmatch(r"[0-9]+", pattern) else None


def _re2_ok(pattern: str | None, extract: bool = False) -> bool:
    if pattern is None:
        return True
    try:
        (pc.extract_regex if extract else pc.match_substring_regex)(pa.array([""], pa.string()), pattern)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False


def _non_capturing(pattern: str) -> str:
    """Capturing groups made non-capturing (Arrow's extract_regex takes named groups only)."""
    return re.sub(r"(?<!\\)\((?!\?)", "(?:", pattern)


def _possible_lengths(code: int) -> np.ndarray:
    """By national length, whether the library calls a number of this code IS_POSSIBLE (asked of
    the library itself, length by length)."""
    p = _phonenumbers()
    ok = np.zeros(MAX_NATIONAL + 1, dtype=bool)
    for length in range(1, MAX_NATIONAL + 1):
        if len(str(code)) + length > MAX_DIGITS:
            break
        number = p.PhoneNumber(country_code=code, national_number=int("9" * length))
        ok[length] = p.is_possible_number_with_reason(number) == p.ValidationResult.IS_POSSIBLE
    return ok


def _build_country(code: int) -> Country:
    p = _phonenumbers()
    metadata = p.PhoneMetadata.metadata_for_region_or_calling_code(code, p.region_code_for_country_code(code))
    pattern = metadata.national_prefix_for_parsing if metadata is not None else None
    literals = tuple(pattern.split("|")) if pattern and re.fullmatch(r"[0-9]+(\|[0-9]+)*", pattern) else None
    prefix_re = f"^(?:{pattern})" if pattern and literals is None else None
    return Country(code, str(code), _possible_lengths(code), literals, prefix_re, metadata is not None and _re2_ok(prefix_re))


def _build_region(region: str, country) -> Region | None:
    p = _phonenumbers()
    metadata = p.PhoneMetadata.metadata_for_region(region)
    if metadata is None or p.region_code_for_country_code(metadata.country_code) != region:
        return None  # not the main region of its code: its lengths differ from the validity check's
    if metadata.national_prefix_transform_rule:
        return None
    idd, prefix = metadata.international_prefix, metadata.national_prefix_for_parsing
    idd_re = f"^(?:{idd})" if idd and _literal(idd) is None else None
    prefix_re = f"^(?P<p>(?:{_non_capturing(prefix)}))" if prefix and _literal(prefix) is None else None
    national_re = f"^(?:{metadata.general_desc.national_number_pattern})$"
    if not (_re2_ok(idd_re) and _re2_ok(prefix_re, extract=True) and _re2_ok(national_re)):
        return None
    return Region(country(metadata.country_code), _literal(idd), idd_re, _literal(prefix), prefix_re, national_re)


class Tables:
    """Country codes by their first digits, and the countries and regions met so far; for the
    countries, whole-array lookup tables indexed by country code (filled by :meth:`learn`)."""

    def __init__(self):
        codes = set(_phonenumbers().COUNTRY_CODE_TO_REGION_CODE)
        self.code_length = np.zeros(1000, dtype=np.int8)  # by the first 3 digits: length of the country code
        for first3 in range(100, 1000):
            self.code_length[first3] = next((n for n in (1, 2, 3) if first3 // 10 ** (3 - n) in codes), 0)
        self.fast = np.zeros(1000, dtype=bool)  # by code: its numbers may take the fast path
        self.possible = np.zeros((1000, MAX_NATIONAL + 2), dtype=bool)  # by code and national length
        self.prefix_digit = np.full(1000, -1, dtype=np.int64)  # a one-digit national prefix; -1 none, -2 other
        self._learned = np.zeros(1000, dtype=bool)
        self._countries: dict[int, Country] = {}
        self._regions: dict[str, Region | None] = {}
        self._lock = threading.RLock()

    def learn(self, codes: np.ndarray) -> None:
        """Fill the lookup tables for these country codes (each read from the metadata once)."""
        seen = np.zeros(1000, dtype=bool)
        seen[codes] = True
        with self._lock:
            for code in np.flatnonzero(seen & ~self._learned).tolist():
                country = self.country(code)
                self.possible[code, : MAX_NATIONAL + 1] = country.possible
                literals = country.prefix_literal
                one_digit = literals is not None and len(literals) == 1 and len(literals[0]) == 1
                self.prefix_digit[code] = int(literals[0]) if one_digit else -1 if literals is None and country.prefix_re is None else -2
                self.fast[code] = country.fast  # last: the row is complete before it is used
                self._learned[code] = True

    def country(self, code: int) -> Country:
        with self._lock:
            if code not in self._countries:
                self._countries[code] = _build_country(code)
            return self._countries[code]

    def region(self, region: str) -> Region | None:
        """The region's facts for the national fast path, or None where it does not apply."""
        with self._lock:
            if region not in self._regions:
                self._regions[region] = _build_region(region, self.country)
            return self._regions[region]


_tables: Tables | None = None
_tables_lock = threading.Lock()


def tables() -> Tables:
    global _tables
    with _tables_lock:
        if _tables is None:
            _tables = Tables()
        return _tables
