"""Digests of match keys: SHA-256 (and, for partners that use them, SHA-1 / MD5 / SHA-512) of
normalized keys, their hex / base64 text, and the raw bytes the join compares.

* Hashing is over the UTF-8 bytes of the normalized string: DuckDB's vectorized SHA-256 kernel for
  large batches, ``hashlib`` (the only per-row Python) for small ones, other algorithms, or without
  DuckDB. Both give the same bytes (tested).
* Hex / base64 encoding and decoding of digests is done in bulk (``binascii`` / numpy tables).

Normalization (what is hashed) is :mod:`transforms.normalize`. No key values are ever logged or
included in exception messages.
"""

from __future__ import annotations

import binascii
import hashlib
import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import fixed_width_binary, plain_array, rows_of_width

ENCODINGS = ("hex", "base64")
# Digest algorithms a hashed data source may use (``hash_algorithm``; the platforms use SHA-256),
# by digest length in bytes.
DIGEST_BYTES = {"sha256": 32, "sha1": 20, "md5": 16, "sha512": 64}

_INT32_MAX = 2**31 - 1


def digest_widths(algorithm: str) -> tuple[int, int, int]:
    """(hex chars, base64 chars, base64 '=' pads) of one digest."""
    if algorithm not in DIGEST_BYTES:
        raise ValueError(f"unknown digest algorithm {algorithm!r}; expected one of {tuple(DIGEST_BYTES)}")
    size = DIGEST_BYTES[algorithm]
    padded = -(-size // 3) * 3
    return 2 * size, padded // 3 * 4, padded - size


def digest_pattern(encoding: str, algorithm: str) -> str:
    """A digest's text: hex of either case, or canonical padded base64 -- the last character before
    the '=' pads carries padding bits that must be 0 (SHA-256: 43 characters + '=', the 43rd one of
    AEIMQUYcgkosw048), the only form hash_keys produces."""
    hex_width, b64_width, pad = digest_widths(algorithm)
    if encoding == "hex":
        return rf"^[0-9A-Fa-f]{{{hex_width}}}$"
    last = {0: "A-Za-z0-9+/", 1: "AEIMQUYcgkosw048", 2: "AQgw"}[pad]
    return rf"^[A-Za-z0-9+/]{{{b64_width - pad - 1}}}[{last}]{'=' * pad}$"


def check_encoding(encoding: str) -> None:
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; expected one of {ENCODINGS}")


def _encode_b64(raw: bytes, m: int, algorithm: str = "sha256") -> bytes:
    """Standard padded base64 of m consecutive digests (SHA-256: 32 bytes -> 44 chars each).

    Each digest is padded with zero bytes to a multiple of 3 (SHA-256: 33) so one bulk b2a_base64
    call over the whole stream stays aligned per digest; the last chars of each block (encoding the
    zero pad bytes) are then replaced by "=", which is exactly the standard padded encoding.
    """
    _, width, pad = digest_widths(algorithm)
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
_database: dict = {}  # pid -> this process's one in-memory DuckDB database (a forked child makes its own)
_database_lock = threading.Lock()


def duckdb_connection():
    """This thread's DuckDB connection (one thread each: the callers' pools give the parallelism),
    or None when DuckDB is not installed. The threads' connections are cursors of one in-memory
    database per process (a cursor costs ~0.4 ms, a database of its own ~16 ms and its own buffers:
    every DoFn's pool starts new threads)."""
    con = getattr(_local, "duckdb", None)
    if con is None or _local.pid != os.getpid():
        try:
            import duckdb
        except ImportError:
            return None
        with _database_lock:
            database = _database.get(os.getpid())
            if database is None:
                database = _database[os.getpid()] = duckdb.connect(config={"threads": 1})
                database.execute("SET enable_progress_bar = false")  # never draw on a worker's stderr
            con = _local.duckdb = database.cursor()
        _local.pid = os.getpid()
    return con


def _sha256_concat(present: pa.Array) -> bytes:
    """The 32-byte SHA-256 digests of the rows of a null-free string array, concatenated, in order."""
    con = duckdb_connection() if len(present) >= DUCKDB_MIN_ROWS else None
    if con is not None:
        # A projection of one registered Arrow table keeps row order (DuckDB preserves insertion
        # order unless told otherwise).
        con.register("audience_sync_keys", pa.table({"v": present}))
        try:
            out = con.sql("SELECT sha256(v) AS d FROM audience_sync_keys").to_arrow_table()
        finally:
            con.unregister("audience_sync_keys")
        # 64 hex characters a row, decoded chunk by chunk by binascii: cheaper than DuckDB's own
        # unhex() and a combine of its chunks (1M emails: 0.31 vs 0.36 s).
        hexes = (c if c.type in (pa.string(), pa.binary()) else c.cast(pa.string()) for c in out["d"].chunks)
        return b"".join(binascii.unhexlify(rows_of_width(c, 64)) for c in hexes)
    # to_pylist on a binary view yields each row's UTF-8 bytes without a decode / re-encode round
    # trip; the hashlib call is then the only per-row Python.
    sha256 = hashlib.sha256
    return b"".join([sha256(x).digest() for x in present.cast(pa.binary()).to_pylist()])


def _digest_concat(present: pa.Array, algorithm: str) -> bytes:
    """The raw digests of the rows of a null-free string array, concatenated, in order (SHA-256 with
    the vectorized kernel; the other algorithms, rare, with hashlib per row)."""
    if algorithm == "sha256":
        return _sha256_concat(present)
    digest_widths(algorithm)
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
    check_encoding(encoding)
    hex_width, b64_width, _ = digest_widths(algorithm)
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
    check_encoding(encoding)
    arr = plain_array(normalized, text="strict")
    n = len(arr)
    hex_width, b64_width, _ = digest_widths(algorithm)
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
