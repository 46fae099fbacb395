"""Vectorized normalization and hashing of match keys (emails, phones, other keys).

Implements the profiles of ``formats.md`` section 4 on pyarrow arrays:

* Normalization runs in ``pyarrow.compute`` kernels. Per-row Python only where a rule needs it,
  for the rows that need it: Unicode lowercasing of non-ASCII emails (Python's full case mapping),
  and phones whose E.164 form libphonenumber must work out (:mod:`transforms.phones`).
* Hashing is SHA-256 over the UTF-8 bytes of the normalized string: DuckDB's vectorized kernel
  for large batches, ``hashlib`` (the only per-row Python) for small ones or without DuckDB.
  Hex / base64 encoding of the digests is done in bulk (``binascii`` / numpy).
* Invalid rows never raise: they come back as null with a reason code in a parallel
  array.  Only call-level mistakes (unknown kind, profile or encoding, non-string
  input type) raise ``ValueError`` / ``TypeError``.

No key values are ever logged or included in exception messages.
"""

from __future__ import annotations

import binascii
import hashlib
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import phones
from transforms.arrow_utils import fixed_width_binary, plain_array, rows_of_width
from transforms.reasons import Reason

__all__ = [
    "PROFILES",
    "DEFAULT_DIGEST",
    "KINDS",
    "ENCODINGS",
    "REASON_CODES",
    "normalize_keys",
    "hash_keys",
    "normalize_and_hash",
    "canonical_digests",
    "sha256_digests",
    "digests",
    "DIGEST_BYTES",
    "decode_digests",
    "normalize_email",
    "normalize_phone",
    "hash_value",
]

PROFILES = ("adobe", "uid2", "google", "meta")
# Not a profile: the value exactly as given (no trim, no lower-casing), for partners that hash or
# encrypt what they store without normalizing it. Only null and blank values are refused (missing).
AS_IS = "none"
DEFAULT_DIGEST = {"adobe": "hex", "uid2": "base64", "google": "hex", "meta": "hex", AS_IS: "hex"}
KINDS = ("email", "phone", "other")
ENCODINGS = ("hex", "base64")

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
# Digest algorithms a hashed data source may use (``hash_algorithm``; the platforms use SHA-256),
# by digest length in bytes.
DIGEST_BYTES = {"sha256": 32, "sha1": 20, "md5": 16, "sha512": 64}

_NULL_STR = pa.scalar(None, pa.string())
_INT32_MAX = 2**31 - 1


def _widths(algorithm: str) -> tuple[int, int, int]:
    """(hex chars, base64 chars, base64 '=' pads) of one digest."""
    if algorithm not in DIGEST_BYTES:
        raise ValueError(f"unknown digest algorithm {algorithm!r}; expected one of {tuple(DIGEST_BYTES)}")
    size = DIGEST_BYTES[algorithm]
    padded = -(-size // 3) * 3
    return 2 * size, padded // 3 * 4, padded - size


def _digest_re(encoding: str, algorithm: str) -> str:
    """A digest's text: hex of either case, or canonical padded base64 -- the last character before
    the '=' pads carries padding bits that must be 0 (SHA-256: 43 characters + '=', the 43rd one of
    AEIMQUYcgkosw048), the only form hash_keys produces."""
    hex_width, b64_width, pad = _widths(algorithm)
    if encoding == "hex":
        return rf"^[0-9A-Fa-f]{{{hex_width}}}$"
    last = {0: "A-Za-z0-9+/", 1: "AEIMQUYcgkosw048", 2: "AQgw"}[pad]
    return rf"^[A-Za-z0-9+/]{{{b64_width - pad - 1}}}[{last}]{'=' * pad}$"


# --------------------------------------------------------------------------- helpers
def _check_profile(profile: str) -> None:
    if profile not in PROFILES and profile != AS_IS:
        raise ValueError(f"unknown profile {profile!r}; expected one of {PROFILES} or {AS_IS!r}")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def _check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def _missing_mask(trimmed: pa.StringArray) -> pa.BooleanArray:
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
    missing = _missing_mask(lowered)
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
    missing = _missing_mask(trimmed)
    e164 = phones.to_e164(pc.fill_null(trimmed, ""), region)
    digits = pc.subtract(pc.binary_length(e164), 1)
    valid = pc.fill_null(pc.greater_equal(digits, _PHONE_MIN_DIGITS[profile]), False)
    candidate = e164 if _PHONE_PLUS[profile] else pc.utf8_slice_codeunits(e164, 1)
    return _finish(candidate, valid, missing, Reason.INVALID_PHONE)


def _normalize_other(arr: pa.StringArray):
    trimmed = pc.utf8_trim_whitespace(arr)
    missing = _missing_mask(trimmed)
    normalized = pc.if_else(missing, _NULL_STR, trimmed)
    reason = pc.if_else(missing, pa.scalar(Reason.MISSING_VALUE), _NULL_STR)
    return normalized, reason


def _as_is(arr: pa.StringArray):
    """``normalization: none``: every value kept exactly as it is; null or blank ones are missing."""
    missing = _missing_mask(pc.utf8_trim_whitespace(arr))
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


# ------------------------------------------------------------------------- hashing
def _encode_b64(raw: bytes, m: int, algorithm: str = "sha256") -> bytes:
    """Standard padded base64 of m consecutive digests (SHA-256: 32 bytes -> 44 chars each).

    Each digest is padded with zero bytes to a multiple of 3 (SHA-256: 33) so one bulk b2a_base64
    call over the whole stream stays aligned per digest; the last chars of each block (encoding the
    zero pad bytes) are then replaced by "=", which is exactly the standard padded encoding.
    """
    _, width, pad = _widths(algorithm)
    size = DIGEST_BYTES[algorithm]
    padded = np.zeros((m, size + pad), dtype=np.uint8)
    padded[:, :size] = np.frombuffer(raw, dtype=np.uint8).reshape(m, size)
    enc = np.frombuffer(binascii.b2a_base64(padded.tobytes(), newline=False), dtype=np.uint8)
    enc = enc.reshape(m, width).copy()
    enc[:, width - pad:] = ord("=")
    return enc.tobytes()


# Batches this large are hashed by DuckDB's SHA-256 kernel: vectorized C++, run without the GIL
# (so the DoFns' thread pools overlap it with other work), about 3x hashlib's per-row calls.
# Smaller ones, and installs without DuckDB, use hashlib. Both give the same bytes (tested).
DUCKDB_MIN_ROWS = 4096
_local = threading.local()


def duckdb_connection():
    """This thread's DuckDB connection (one thread each: the callers' pools give the parallelism),
    or None when DuckDB is not installed."""
    con = getattr(_local, "duckdb", None)
    if con is None:
        try:
            import duckdb
        except ImportError:
            return None
        con = _local.duckdb = duckdb.connect(config={"threads": 1})
        con.execute("SET enable_progress_bar = false")  # never draw on a worker's stderr
    return con


def _sha256_concat(present: pa.Array) -> bytes:
    """The 32-byte SHA-256 digests of the rows of a null-free string array, concatenated, in order."""
    con = duckdb_connection() if len(present) >= DUCKDB_MIN_ROWS else None
    if con is not None:
        # A projection of one registered Arrow table keeps row order (DuckDB preserves insertion
        # order unless told otherwise).
        con.register("audience_sync_keys", pa.table({"v": present}))
        try:
            out = con.sql("SELECT unhex(sha256(v)) AS d FROM audience_sync_keys").to_arrow_table()
        finally:
            con.unregister("audience_sync_keys")
        digests = out["d"].combine_chunks()
        return rows_of_width(digests.cast(pa.binary()), 32).tobytes()
    # to_pylist on a binary view yields each row's UTF-8 bytes without a decode / re-encode round
    # trip; the hashlib call is then the only per-row Python.
    sha256 = hashlib.sha256
    return b"".join([sha256(x).digest() for x in present.cast(pa.binary()).to_pylist()])


def _digest_concat(present: pa.Array, algorithm: str) -> bytes:
    """The raw digests of the rows of a null-free string array, concatenated, in order (SHA-256 with
    the vectorized kernel; the other algorithms, rare, with hashlib per row)."""
    if algorithm == "sha256":
        return _sha256_concat(present)
    _widths(algorithm)
    new = getattr(hashlib, algorithm)
    return b"".join([new(x).digest() for x in present.cast(pa.binary()).to_pylist()])


def digests(values: pa.Array, algorithm: str = "sha256") -> pa.BinaryArray:
    """Raw digests of null-free normalized keys: the join key of a hashed data source (half the
    bytes of hex; :func:`decode_digests` gives the same form for the dump side)."""
    arr = plain_array(values, text="strict")
    if arr.null_count:
        raise ValueError("digests take valid keys only (filter nulls first)")
    return fixed_width_binary(_digest_concat(arr, algorithm), len(arr), DIGEST_BYTES[algorithm])


def sha256_digests(values: pa.Array) -> pa.BinaryArray:
    """Raw 32-byte SHA-256 digests of null-free normalized keys (see :func:`digests`)."""
    return digests(values, "sha256")


_HEX_VALUE = np.zeros(256, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_c] = _HEX_VALUE[ord(chr(_c).upper())] = _i
_B64_VALUE = np.zeros(256, dtype=np.uint8)
for _i, _c in enumerate(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"):
    _B64_VALUE[_c] = _i


def decode_digests(canonical: pa.Array, encoding: str, algorithm: str = "sha256") -> pa.BinaryArray:
    """Raw digests from null-free digests validated by :func:`canonical_digests` (SHA-256: 64 hex
    chars, either case; or 44 canonical base64 chars). Vectorized with numpy lookup tables."""
    _check_encoding(encoding)
    hex_width, b64_width, _ = _widths(algorithm)
    size = DIGEST_BYTES[algorithm]
    arr = plain_array(canonical, text="strict")
    if encoding == "hex":
        nibbles = _HEX_VALUE[rows_of_width(arr, hex_width)]
        raw = (nibbles[:, 0::2] << 4) | nibbles[:, 1::2]
    else:
        quads = b64_width // 4
        sextets = _B64_VALUE[rows_of_width(arr, b64_width)].reshape(len(arr), quads, 4)  # '=' reads as 0
        a, b, c, d = (sextets[:, :, i] for i in range(4))
        triples = np.stack([(a << 2) | (b >> 4), ((b & 15) << 4) | (c >> 2), ((c & 3) << 6) | d], axis=2)
        raw = triples.reshape(len(arr), 3 * quads)[:, :size]
    return fixed_width_binary(raw, len(arr), size)


def hash_keys(normalized: pa.Array, encoding: str, algorithm: str = "sha256") -> pa.StringArray:
    """Digests over UTF-8 bytes (SHA-256 unless told); encoding 'hex' (lowercase, 64 chars for
    SHA-256) or 'base64' (standard alphabet, padded, 44 chars).  Nulls stay null."""
    _check_encoding(encoding)
    arr = plain_array(normalized, text="strict")
    n = len(arr)
    hex_width, b64_width, _ = _widths(algorithm)
    width = hex_width if encoding == "hex" else b64_width
    if n == 0:
        return pa.array([], pa.string())
    if arr.null_count == n:
        return pa.nulls(n, pa.string())

    m = n - arr.null_count
    if m * width > _INT32_MAX:
        raise ValueError("batch too large for a single string array; split it into smaller batches")
    raw = _digest_concat(arr if arr.null_count == 0 else pc.drop_null(arr), algorithm)
    encoded = binascii.hexlify(raw) if encoding == "hex" else _encode_b64(raw, m, algorithm)

    if arr.null_count == 0:
        out_offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
        validity = None
    else:
        valid_np = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        lengths = valid_np.astype(np.int32) * width
        out_offsets = np.zeros(n + 1, dtype=np.int32)
        np.cumsum(lengths, out=out_offsets[1:])
        validity = pa.py_buffer(np.packbits(valid_np, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(),
        n,
        [validity, pa.py_buffer(out_offsets), pa.py_buffer(encoded)],
        null_count=n - m,
    )


def normalize_and_hash(
    values, kind: str, profile: str = "adobe", encoding: str | None = None, default_region: str | None = None,
    algorithm: str = "sha256",
) -> tuple[pa.StringArray, pa.StringArray]:
    """Normalize then hash.  encoding None -> DEFAULT_DIGEST[profile].
    Returns ``(digests, reason)``; digests are null exactly where reason is not."""
    _check_profile(profile)
    if encoding is None:
        encoding = DEFAULT_DIGEST[profile]
    _check_encoding(encoding)
    normalized, reason = normalize_keys(values, kind, profile, default_region)
    return hash_keys(normalized, encoding, algorithm), reason


def canonical_digests(values: pa.Array, encoding: str, algorithm: str = "sha256") -> tuple[pa.StringArray, pa.StringArray]:
    """Dump-side validation of incoming digests (SHA-256 unless told).

    hex: after trimming whitespace, exactly 64 hex chars; returned lowercased.
    base64: after trimming whitespace, exactly 44 chars of the standard alphabet ending
    in a single '=' (32 bytes, canonical padding bits); returned as is.
    Invalid -> null + Reason.INVALID_HASH; null/empty/blank -> null + Reason.MISSING_VALUE.
    """
    _check_encoding(encoding)
    arr = plain_array(values, text="strict")
    trimmed = pc.utf8_trim_whitespace(arr)
    missing = _missing_mask(trimmed)
    valid = pc.fill_null(pc.match_substring_regex(trimmed, _digest_re(encoding, algorithm)), False)
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
