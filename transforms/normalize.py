"""Vectorized normalization and hashing of match keys (emails, phones, other keys).

Implements the profiles of ``formats.md`` section 4 on pyarrow arrays:

* Normalization runs in ``pyarrow.compute`` kernels. Per-row Python only where a rule needs it,
  for the rows that need it: Unicode lowercasing of non-ASCII emails (Python's full case mapping),
  and phones whose E.164 form libphonenumber must work out (:mod:`transforms.phones`).
* Hashing (:mod:`transforms.digests`) is over the UTF-8 bytes of the normalized string;
  :func:`normalize_and_hash` composes the two, and :func:`canonical_digests` validates the digests a
  partner sends.
* Invalid rows never raise: they come back as null with a reason code in a parallel
  array.  Only call-level mistakes (unknown kind, profile or encoding, non-string
  input type) raise ``ValueError`` / ``TypeError``.

No key values are ever logged or included in exception messages.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import phones
from transforms.arrow_utils import plain_array
from transforms.digests import check_encoding, digest_pattern, hash_keys
from transforms.reasons import Reason

__all__ = [
    "PROFILES",
    "DEFAULT_DIGEST",
    "KINDS",
    "REASON_CODES",
    "normalize_keys",
    "normalize_and_hash",
    "canonical_digests",
    "normalize_email",
    "normalize_phone",
    "hash_value",
    "same_rules",
]

PROFILES = ("adobe", "uid2", "google", "meta")
# Not a profile: the value exactly as given (no trim, no lower-casing), for partners that hash or
# encrypt what they store without normalizing it. Only null and blank values are refused (missing).
AS_IS = "none"
DEFAULT_DIGEST = {"adobe": "hex", "uid2": "base64", "google": "hex", "meta": "hex", AS_IS: "hex"}
KINDS = ("email", "phone", "other")

# Reason codes (transforms.outcomes.Reason): missing (null or blank after trim), invalid email (no @,
# two @, empty local part or domain, whitespace inside), invalid phone (not a possible E.164 number:
# transforms.phones), invalid hash (a dump-side digest not of the expected form).
REASON_CODES = (Reason.MISSING_VALUE, Reason.INVALID_EMAIL, Reason.INVALID_PHONE, Reason.INVALID_HASH)

# Gmail canonicalization per profile: the domains it applies to, and whether the "+suffix" of the
# local part goes too (dots always do). uid2: gmail.com only, dots and "+suffix" (UID2's rules and
# operator); google: gmail.com and googlemail.com, dots only (Google Ads / CM360 published rules).
_GMAIL_RULES = {
    "adobe": ((), False),
    "uid2": (("gmail.com",), True),
    "google": (("gmail.com", "googlemail.com"), False),
    "meta": ((), False),
}
# Lowercasing: "ascii" lowercases A-Z only (UID2's operator and SDK); "full" is Unicode full case
# mapping as Python's str.lower (Meta's SDK; Java's and JavaScript's toLowerCase agree): "İ" becomes
# "i̇", a final "Σ" becomes "ς". Arrow's utf8_lower is simple case mapping, so only ASCII rows use it.
_LOWER = {"adobe": "full", "uid2": "ascii", "google": "full", "meta": "full"}
# Phone output: True -> E.164 with leading "+", False -> digits only.
_PHONE_PLUS = {"adobe": True, "uid2": True, "google": True, "meta": False}
# The UID2 operator accepts "+" and 10-15 digits only: shorter E.164 numbers cannot be UID2 identities.
_PHONE_MIN_DIGITS = {"adobe": 1, "uid2": 10, "google": 1, "meta": 1}

# Whitespace: what utf8_trim_whitespace trims (exactly Python's str.isspace). RE2's \s misses \v,
# NEL, the Unicode separators and the ASCII information separators \x1c-\x1f, so spell them out.
_WS = r"\s\v\x{85}\p{Z}\x{1c}-\x{1f}"
# Exactly one "@", non-empty local part and domain, no whitespace anywhere.
_EMAIL_RE = rf"^[^@{_WS}]+@[^@{_WS}]+$"
_NULL_STR = pa.scalar(None, pa.string())


# --------------------------------------------------------------------------- helpers
def _check_profile(profile: str) -> None:
    if profile not in PROFILES and profile != AS_IS:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES} or {AS_IS!r}")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def missing_mask(trimmed: pa.StringArray) -> pa.BooleanArray:
    """True where null or empty (input already trimmed)."""
    return pc.fill_null(pc.equal(pc.binary_length(trimmed), 0), True)


def _finish(candidate, valid, missing, invalid_code: str):
    """Assemble (normalized, reason) from a candidate array and masks (no nulls in masks)."""
    normalized = pc.if_else(valid, candidate, _NULL_STR)
    reason = pc.if_else(
        missing,
        pa.scalar(Reason.MISSING_VALUE),
        pc.if_else(valid, _NULL_STR, pa.scalar(invalid_code)),
    )
    return normalized, reason


def same_rules(kind: str, a: str, b: str) -> bool:
    """Whether profiles ``a`` and ``b`` normalize a ``kind`` of key alike (one key for every value):
    'other' keys are trimmed under any profile (``none`` keeps them as they are); phones differ by
    the '+' and the least digits; emails by lowercasing and the gmail rules (adobe's and meta's agree)."""
    if a == b:
        return True
    if a not in PROFILES or b not in PROFILES:
        return False
    if kind == "phone":
        return (_PHONE_PLUS[a], _PHONE_MIN_DIGITS[a]) == (_PHONE_PLUS[b], _PHONE_MIN_DIGITS[b])
    if kind == "email":
        return (_GMAIL_RULES[a], _LOWER[a]) == (_GMAIL_RULES[b], _LOWER[b])
    return kind == "other"


# ------------------------------------------------------------------- normalization
def _lower(trimmed: pa.StringArray, profile: str) -> pa.StringArray:
    if _LOWER[profile] == "ascii":
        return pc.ascii_lower(trimmed)
    lowered = pc.utf8_lower(trimmed)  # right for ASCII rows
    other = pc.invert(pc.fill_null(pc.string_is_ascii(trimmed), True))
    if pc.any(other).as_py():  # Unicode rows (a few): Python's full case mapping, per row
        full = pa.array([v.lower() for v in pc.filter(trimmed, other).to_pylist()], pa.string())
        lowered = pc.replace_with_mask(lowered, other, full)
    return lowered


def _normalize_email(arr: pa.StringArray, profile: str):
    lowered = _lower(pc.utf8_trim_whitespace(arr), profile)
    missing = missing_mask(lowered)
    valid = pc.fill_null(pc.match_substring_regex(lowered, _EMAIL_RE), False)

    domains, drop_plus = _GMAIL_RULES[profile]
    if domains:
        # valid => exactly one "@", so ends_with("@gmail.com") <=> domain == gmail.com
        is_gmail = None
        for dom in domains:
            m = pc.ends_with(lowered, "@" + dom)
            is_gmail = m if is_gmail is None else pc.or_(is_gmail, m)
        is_gmail = pc.and_(valid, pc.fill_null(is_gmail, False))
        if pc.any(is_gmail).as_py():
            # Rewrite only the gmail rows (usually a minority), then scatter back.
            sub = pc.filter(lowered, is_gmail)
            local = pc.replace_substring_regex(sub, r"@[^@]*$", "")
            domain = pc.replace_substring_regex(sub, r"^[^@]*@", "")
            if drop_plus:
                local = pc.replace_substring_regex(local, r"\+.*$", "")
            local = pc.replace_substring(local, ".", "")
            empty_local = pc.equal(pc.binary_length(local), 0)
            rewritten = pc.binary_join_element_wise(local, domain, "@")
            lowered = pc.replace_with_mask(lowered, is_gmail, rewritten)
            if pc.any(empty_local).as_py():
                bad = pc.replace_with_mask(
                    pa.array(np.zeros(len(lowered), dtype=bool)), is_gmail, empty_local
                )
                valid = pc.and_(valid, pc.invert(bad))

    return _finish(lowered, valid, missing, Reason.INVALID_EMAIL)


def _normalize_phone(arr: pa.StringArray, profile: str, region: str | None):
    """E.164 by transforms.phones (libphonenumber; vectorized where it can be), then the profile's
    form: "+" and digits, or digits only (meta); uid2 also needs 10-15 digits."""
    trimmed = pc.utf8_trim_whitespace(arr)
    missing = missing_mask(trimmed)
    e164 = phones.to_e164(pc.fill_null(trimmed, ""), region)
    digits = pc.subtract(pc.binary_length(e164), 1)
    valid = pc.fill_null(pc.greater_equal(digits, _PHONE_MIN_DIGITS[profile]), False)
    candidate = e164 if _PHONE_PLUS[profile] else pc.utf8_slice_codeunits(e164, 1)
    return _finish(candidate, valid, missing, Reason.INVALID_PHONE)


def _normalize_other(arr: pa.StringArray):
    trimmed = pc.utf8_trim_whitespace(arr)
    missing = missing_mask(trimmed)
    normalized = pc.if_else(missing, _NULL_STR, trimmed)
    reason = pc.if_else(missing, pa.scalar(Reason.MISSING_VALUE), _NULL_STR)
    return normalized, reason


def _as_is(arr: pa.StringArray):
    """``normalization: none``: every value kept exactly as it is; null or blank ones are missing."""
    missing = missing_mask(pc.utf8_trim_whitespace(arr))
    return pc.if_else(missing, _NULL_STR, arr), pc.if_else(missing, pa.scalar(Reason.MISSING_VALUE), _NULL_STR)


def normalize_keys(
    values: pa.Array, kind: str, profile: str = "adobe", default_region: str | None = None
) -> tuple[pa.StringArray, pa.StringArray]:
    """Normalize match keys according to ``profile`` (one of PROFILES, or AS_IS: values kept as they are).

    kind in {"email", "phone", "other"}; ``default_region`` (phones): the ISO region numbers written
    without a country code are read in (None: such numbers are invalid).  Returns ``(normalized, reason)``, both the
    same length as ``values``: ``normalized`` is null where invalid; ``reason`` is null
    where valid, else one of Reason.MISSING_VALUE / Reason.INVALID_EMAIL / Reason.INVALID_PHONE.
    Accepts string/large_string/dictionary arrays and ChunkedArray (returns plain
    ``pa.StringArray``s; chunks are combined).
    """
    _check_kind(kind)
    _check_profile(profile)
    if default_region is not None:
        phones.check_region(default_region)
    arr = plain_array(values, text="strict")
    if profile == AS_IS:
        out = _as_is(arr)
    elif kind == "email":
        out = _normalize_email(arr, profile)
    elif kind == "phone":
        out = _normalize_phone(arr, profile, default_region)
    else:
        out = _normalize_other(arr)
    return tuple(plain_array(a, text="cast") for a in out)  # type: ignore[return-value]


def normalize_and_hash(
    values, kind: str, profile: str = "adobe", encoding: str | None = None, default_region: str | None = None,
    algorithm: str = "sha256",
) -> tuple[pa.StringArray, pa.StringArray]:
    """Normalize then hash.  encoding None -> DEFAULT_DIGEST[profile].
    Returns ``(digests, reason)``; digests are null exactly where reason is not."""
    _check_profile(profile)
    if encoding is None:
        encoding = DEFAULT_DIGEST[profile]
    check_encoding(encoding)
    normalized, reason = normalize_keys(values, kind, profile, default_region)
    return hash_keys(normalized, encoding, algorithm), reason


def canonical_digests(values: pa.Array, encoding: str, algorithm: str = "sha256") -> tuple[pa.StringArray, pa.StringArray]:
    """Dump-side validation of incoming digests (SHA-256 unless told).

    hex: after trimming whitespace, exactly 64 hex chars; returned lowercased.
    base64: after trimming whitespace, exactly 44 chars of the standard alphabet ending
    in a single '=' (32 bytes, canonical padding bits); returned as is.
    Invalid -> null + Reason.INVALID_HASH; null/empty/blank -> null + Reason.MISSING_VALUE.
    """
    check_encoding(encoding)
    arr = plain_array(values, text="strict")
    trimmed = pc.utf8_trim_whitespace(arr)
    missing = missing_mask(trimmed)
    valid = pc.fill_null(pc.match_substring_regex(trimmed, digest_pattern(encoding, algorithm)), False)
    candidate = pc.ascii_lower(trimmed) if encoding == "hex" else trimmed
    return tuple(plain_array(a, text="cast") for a in _finish(candidate, valid, missing, Reason.INVALID_HASH))  # type: ignore[return-value]


# ---------------------------------------------------------------- scalar helpers
def _scalar(value, kind: str, profile: str, default_region: str | None = None) -> str | None:
    if value is None:
        return None
    normalized, _ = normalize_keys(pa.array([value], pa.string()), kind, profile, default_region)
    return normalized[0].as_py()


def normalize_email(value: str, profile: str = "adobe") -> str | None:
    """Normalized email, or None if missing/invalid."""
    return _scalar(value, "email", profile)


def normalize_phone(value: str, profile: str = "adobe", default_region: str | None = None) -> str | None:
    """Normalized phone, or None if missing/invalid."""
    return _scalar(value, "phone", profile, default_region)


def hash_value(
    value: str, kind: str, profile: str = "adobe", encoding: str | None = None, default_region: str | None = None
) -> str | None:
    """Digest of one value, or None if missing/invalid."""
    if value is None:
        _check_kind(kind)
        _check_profile(profile)
        return None
    digests, _ = normalize_and_hash(pa.array([value], pa.string()), kind, profile, encoding, default_region)
    return digests[0].as_py()
