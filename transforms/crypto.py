"""Decryption of encrypted declared IDs (reference: shared/reference/formats.md, section 5).

Two schemes:

* **AES-CBC + PKCS#7** (128/192/256-bit key, one fixed IV per data source) -- the scheme the marketing
  platform supports.  Tokens are base64 strings.  :class:`CbcDecryptor` decrypts an Arrow string array
  in slices of ``_CHUNK_ROWS`` rows (sized so the intermediates stay in cache): per slice, all tokens
  are base64-decoded by one C call, all ciphertext blocks go through ONE AES-ECB ``update()``, and the
  CBC chaining (XOR with the previous ciphertext block, or the IV for a record's first block), PKCS#7
  validation/stripping and the UTF-8 check are vectorized with numpy; only odd rows (malformed base64,
  non-ASCII plaintexts) take a per-row path.  ``tests/cbc_reference.py`` holds the plain
  one-``Cipher``-per-record reference, used as the oracle in tests and as the benchmark baseline; the
  two return identical arrays.  Base64 is standard-alphabet and padded, with the semantics of
  ``binascii.a2b_base64(strict_mode=True)``; anything it rejects is ``DECRYPT_FAILED``.

* **AES-256-GCM with a key ring** (rotation): ``token = base64(key_id u32 BE | nonce 12 | ct | tag 16)``,
  no associated data.  :class:`GcmDecryptor` returns a status per record and never raises per record.

Every decrypt function returns ``(plaintexts, reasons)``: two ``pa.StringArray`` of the input's length;
a plaintext is null exactly where the reason is not, and the reason is one of the constants below.

Key material comes from :mod:`transforms.secrets` (:func:`~transforms.secrets.load_secret`,
:func:`~transforms.secrets.load_keyring`).  No exception message, log line or repr in this module
contains key material or a plaintext; :class:`KeyMaterialError` names the problem only.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import os
from datetime import datetime
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms.config import DataSourceConfig
from transforms.errors import KeyMaterialError
from transforms.outcomes import Reason
from transforms.secrets import AES_KEY_LENGTHS, RingKey, is_aware, load_keyring, load_secret

__all__ = [
    "REASONS",
    "decrypt_cbc_batch",
    "encrypt_cbc",
    "CbcDecryptor",
    "GcmDecryptor",
    "encrypt_gcm",
    "CbcEncryptor",
    "GcmEncryptor",
    "build_decryptor",
    "build_encryptor",
]

# --------------------------------------------------------------------------------------------------
# Reason codes
# --------------------------------------------------------------------------------------------------
# (transforms.outcomes.Reason) decrypt_failed: bad base64, bad length, bad PKCS#7 padding, GCM tag
# failure, too short; unknown_key: GCM key id not in the key ring; expired_key: run clock >= the key's
# expires; key_not_active: run clock < its activates; invalid_plaintext: decrypted bytes are empty or
# not valid UTF-8.
REASONS = (Reason.DECRYPT_FAILED, Reason.UNKNOWN_KEY, Reason.EXPIRED_KEY, Reason.KEY_NOT_ACTIVE, Reason.INVALID_PLAINTEXT)

_BLOCK = 16
_V16 = np.dtype("V16")  # one AES block as a single numpy item
_GCM_NONCE = 12
_GCM_TAG = 16
_GCM_KEY_ID = 4
_GCM_MIN_TOKEN = _GCM_KEY_ID + _GCM_NONCE + _GCM_TAG  # 32 bytes: an empty plaintext

# Rows handed to the vectorized CBC kernel at a time: keeps every intermediate array in cache.
_CHUNK_ROWS = 1 << 14


# --------------------------------------------------------------------------------------------------
# Key and IV checks
# --------------------------------------------------------------------------------------------------
def _check_key_iv(key: bytes, iv: bytes) -> tuple[bytes, bytes]:
    if not isinstance(key, (bytes, bytearray, memoryview)) or not isinstance(iv, (bytes, bytearray, memoryview)):
        raise TypeError("key and iv must be bytes")
    key, iv = bytes(key), bytes(iv)
    if len(key) not in AES_KEY_LENGTHS:
        raise KeyMaterialError(f"AES key must be 16, 24 or 32 bytes, got {len(key)}")
    if len(iv) != _BLOCK:
        raise KeyMaterialError(f"CBC IV must be 16 bytes, got {len(iv)}")
    return key, iv


# --------------------------------------------------------------------------------------------------
# Arrow helpers
# --------------------------------------------------------------------------------------------------
def _as_text_array(tokens) -> pa.Array:
    """Normalise ``tokens`` to a ``string`` or ``large_string`` Arrow array (no UTF-8 validation)."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.chunk(0) if tokens.num_chunks == 1 else tokens.combine_chunks()
    if not isinstance(tokens, pa.Array):
        if isinstance(tokens, (str, bytes)):
            raise TypeError("tokens must be an Arrow array or an iterable of strings, not a single value")
        items = list(tokens)
        if any(isinstance(item, (bytes, bytearray)) for item in items):
            tokens = pa.array(items, type=pa.binary())
        else:
            tokens = pa.array(items, type=pa.string())
    if pa.types.is_dictionary(tokens.type):
        tokens = tokens.dictionary_decode()
    t = tokens.type
    if t == pa.string() or t == pa.large_string():
        return tokens
    if t == pa.binary():
        return tokens.view(pa.string())
    if t == pa.large_binary():
        return tokens.view(pa.large_string())
    if t == pa.string_view():
        return tokens.cast(pa.large_string())
    if t == pa.binary_view():
        return tokens.cast(pa.large_binary()).view(pa.large_string())
    if pa.types.is_null(t):
        return pa.nulls(len(tokens), pa.string())
    raise TypeError(f"tokens must be a string array, got Arrow type {t}")


def _token_bytes(arr: pa.Array) -> list:
    """Values of a text array as ``bytes`` (or None), without UTF-8 validation."""
    binary = pa.large_binary() if arr.type == pa.large_string() else pa.binary()
    return arr.view(binary).to_pylist()


def _finish_utf8(pt: bytes) -> tuple[str | None, str | None]:
    if not pt:
        return None, Reason.INVALID_PLAINTEXT
    try:
        return pt.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, Reason.INVALID_PLAINTEXT


def _result_arrays(plains: list, reasons: list) -> tuple[pa.StringArray, pa.StringArray]:
    return pa.array(plains, type=pa.string()), pa.array(reasons, type=pa.string())


def _to_plain_bytes(value) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"plaintexts must be str or bytes, got {type(value).__name__}")


def _exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.cumsum(values, dtype=np.int64)
    out -= values
    return out


def _span_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """All positions ``starts[j] .. starts[j] + lengths[j] - 1``, concatenated."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    return np.repeat(starts.astype(np.int64) - _exclusive_cumsum(lengths), lengths) + np.arange(total, dtype=np.int64)


# codes used inside the CBC kernel
_OK, _FAILED, _INVALID = 0, 1, 2
_CODE_REASONS = pa.array([None, Reason.DECRYPT_FAILED, Reason.INVALID_PLAINTEXT], type=pa.string())

_B64_PAD = ord("=")
_B64_FILL = ord("A")  # stands in for '=': decodes the same leading bytes, plus garbage we drop
_B64_SKIP = ord(" ")  # non-strict a2b_base64 skips it: blanks out rows we do not decode in bulk


def _pkcs7_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per possible last byte p (0..255) of a decrypted record: is p a valid PKCS#7 pad (1..16), the
    expected last block under the pad (p in its last p bytes), the mask of those bytes, and the keep
    mask (0x01 for the 16 - p plaintext bytes), each block as one 16-byte item."""
    valid = np.zeros(256, dtype=bool)
    pattern = np.zeros((256, _BLOCK), dtype=np.uint8)
    mask = np.zeros((256, _BLOCK), dtype=np.uint8)
    keep = np.zeros((256, _BLOCK), dtype=np.uint8)
    for p in range(1, _BLOCK + 1):
        valid[p] = True
        pattern[p, _BLOCK - p :] = p
        mask[p, _BLOCK - p :] = 0xFF
        keep[p, : _BLOCK - p] = 1
    as_blocks = lambda table: table.reshape(-1).view(_V16)  # noqa: E731
    return valid, as_blocks(pattern), as_blocks(mask), as_blocks(keep)


_PAD_VALID, _PAD_PATTERN, _PAD_MASK, _KEEP_BLOCKS = _pkcs7_tables()
_KEEP_ALL_WORD = np.frombuffer(b"\x01" * 8, dtype=np.uint64)[0]


def _reasons_from_codes(codes: np.ndarray) -> pa.StringArray:
    if not codes.any():
        return pa.nulls(len(codes), pa.string())
    indices = pa.array(codes, mask=codes == _OK)
    return _CODE_REASONS.take(indices)


def _string_array(n: int, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray) -> pa.StringArray:
    null_count = int(n - np.count_nonzero(valid))
    bitmap = None if null_count == 0 else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(), n, [bitmap, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)], null_count=null_count
    )


def _demote_non_base64_rows(
    data: np.ndarray, offs: np.ndarray, fast: np.ndarray, pad: np.ndarray, buf: np.ndarray
) -> int:
    """Take out of the bulk path (in place: ``fast``, ``pad``, blanked in ``buf``) every row holding a
    byte outside the base64 alphabet other than its trailing padding; return how many were taken."""
    bad_byte = _not_base64_alphabet(data)
    fast_ends = offs[1:][fast]
    fast_pad = pad[fast]
    bad_byte[fast_ends[fast_pad >= 1] - 1] = False
    bad_byte[fast_ends[fast_pad == 2] - 2] = False
    bad_rows = np.zeros(len(fast), dtype=bool)
    bad_rows[np.searchsorted(offs, np.flatnonzero(bad_byte), side="right") - 1] = True
    demote = fast & bad_rows
    if demote.any():
        fast &= ~demote
        pad[demote] = 0
        starts = offs[:-1][demote]
        buf[_span_positions(starts, offs[1:][demote] - starts)] = _B64_SKIP
    return int(np.count_nonzero(demote))


def _not_base64_alphabet(data: np.ndarray) -> np.ndarray:
    """Per byte: True when not in ``A-Z a-z 0-9 + /`` (uint8 wrap-around range checks, no table)."""
    letter = ((data | 0x20) - np.uint8(ord("a"))) < 26
    digit = (data - np.uint8(ord("0"))) < 10
    return ~(letter | digit | (data == ord("+")) | (data == ord("/")))


# --------------------------------------------------------------------------------------------------
# AES-CBC
# --------------------------------------------------------------------------------------------------
class CbcDecryptor:
    """Batch AES-CBC/PKCS#7 decryptor for one key and IV; build once (e.g. in ``DoFn.setup()``).

    ``decrypt(tokens)`` takes an Arrow string array (or chunked array, or an iterable of str/None) of
    base64 tokens and returns ``(plaintexts, reasons)``: plaintext null where the record failed, reason
    null where it succeeded.  Never raises per record.  Refuses to be pickled (it holds the key).
    """

    def __init__(self, key: bytes, iv: bytes):
        key, iv = _check_key_iv(key, iv)
        self._key_bits = len(key) * 8
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())
        self._iv_block = np.frombuffer(iv, dtype=_V16)[0]
        self._prevalidate = False  # see _decrypt_chunk: check base64 before the bulk decode

    def __repr__(self) -> str:
        return f"CbcDecryptor(aes_{self._key_bits})"

    def __reduce_ex__(self, protocol):
        raise TypeError("CbcDecryptor holds key material and cannot be pickled; build it in DoFn.setup()")

    def decrypt(self, tokens) -> tuple[pa.StringArray, pa.StringArray]:
        arr = _as_text_array(tokens)
        n = len(arr)
        if n <= _CHUNK_ROWS:
            return self._decrypt_chunk(arr)
        parts = [self._decrypt_chunk(arr.slice(i, _CHUNK_ROWS)) for i in range(0, n, _CHUNK_ROWS)]
        return (
            pa.concat_arrays([plain for plain, _ in parts]),
            pa.concat_arrays([reason for _, reason in parts]),
        )

    # -- kernel ------------------------------------------------------------------------------------
    def _decrypt_chunk(self, arr: pa.Array) -> tuple[pa.StringArray, pa.StringArray]:
        n = len(arr)
        if n == 0:
            return pa.array([], type=pa.string()), pa.array([], type=pa.string())

        # Offsets (relative to this slice's first value) and the slice's value bytes.
        offset_type = np.int64 if arr.type == pa.large_string() else np.int32
        buffers = arr.buffers()
        offs = np.frombuffer(
            buffers[1], dtype=offset_type, count=n + 1, offset=arr.offset * np.dtype(offset_type).itemsize
        ).astype(np.int64)
        first_byte, last_byte = int(offs[0]), int(offs[-1])
        offs -= first_byte
        if buffers[2] is None or last_byte == first_byte:
            data = np.zeros(0, dtype=np.uint8)
        else:
            data = np.frombuffer(buffers[2], dtype=np.uint8, count=last_byte - first_byte, offset=first_byte)
        if arr.null_count:
            valid_in = arr.is_valid().to_numpy(zero_copy_only=False)
        else:
            valid_in = np.ones(n, dtype=bool)
        starts, ends = offs[:-1], offs[1:]
        lens = ends - starts
        codes = np.full(n, _FAILED, dtype=np.int8)

        # ---- 1. base64 ------------------------------------------------------------------------
        # Bulk candidates: non-null, length a positive multiple of 4.  Their trailing '=' become 'A'
        # (decodes the same leading bytes plus pad_i garbage bytes we drop); every other row is blanked
        # with spaces, which non-strict a2b_base64 skips; then ONE a2b_base64 call decodes the chunk.
        fast = valid_in & (lens > 0) & ((lens & 3) == 0)
        pad = np.zeros(n, dtype=np.int64)
        buf = data.copy()
        if fast.any():
            fast_ends = ends[fast]
            last1 = data[fast_ends - 1] == _B64_PAD
            last2 = last1 & (data[fast_ends - 2] == _B64_PAD)
            pad[fast] = last1.astype(np.int64) + last2
            buf[fast_ends[last1] - 1] = _B64_FILL
            buf[fast_ends[last2] - 2] = _B64_FILL
        blank = ~fast & (lens > 0)
        if blank.any():
            buf[_span_positions(starts[blank], lens[blank])] = _B64_SKIP
        # Optimistic: one decode, checked by its output length.  If it fails, some bulk candidate holds a
        # non-alphabet character (or a misplaced '='): find those rows, hand them to the per-record
        # decoder and decode the rest again.  After a chunk with such rows, the next chunk is checked
        # before decoding (a performance hint only: results never depend on it).
        raw = None if self._prevalidate else self._bulk_b64decode(buf, lens, fast)
        if raw is None:
            self._prevalidate = _demote_non_base64_rows(data, offs, fast, pad, buf) > 0
            raw = self._bulk_b64decode(buf, lens, fast)
            if raw is None:  # pragma: no cover - would be a bug in the validity check
                raise RuntimeError("internal error: bulk base64 decode failed after validation")

        decoded_full = np.where(fast, (lens >> 2) * 3, 0)
        dec_start = _exclusive_cumsum(decoded_full)
        dec_len = decoded_full - pad

        # Rows the bulk path did not take (not a multiple of 4, odd characters, ...) are decoded one by
        # one with the same strict decoder as the reference; their bytes go after the bulk output.
        slow = np.flatnonzero(valid_in & (lens > 0) & ~fast)
        if slow.size:
            extra, pos = [], len(raw)
            for i in slow.tolist():
                try:
                    ct = binascii.a2b_base64(data[starts[i] : ends[i]].tobytes(), strict_mode=True)
                except (binascii.Error, ValueError):
                    continue
                extra.append(ct)
                dec_start[i], dec_len[i] = pos, len(ct)
                pos += len(ct)
            if extra:
                raw = raw + b"".join(extra)

        # ---- 2. one AES-ECB pass over every block, CBC chaining with numpy --------------------------
        cand = np.flatnonzero((dec_len > 0) & ((dec_len & (_BLOCK - 1)) == 0))
        out_len = np.zeros(n, dtype=np.int64)
        data_out = np.zeros(0, dtype=np.uint8)
        if cand.size:
            nblocks = dec_len[cand] >> 4
            total_blocks = int(nblocks.sum())
            first_block = _exclusive_cumsum(nblocks)
            block_src = np.repeat(dec_start[cand] - _BLOCK * first_block, nblocks) + _BLOCK * np.arange(
                total_blocks, dtype=np.int64
            )
            # Numpy fancy indexing is fast on 1-d arrays of 16-byte items ("V16"), so every per-block
            # gather/scatter below works on blocks as items and arithmetic on two uint64 words per block.
            # Every 16-byte window of raw as one item: gathering the ciphertext blocks is one fancy index.
            windows = np.ndarray(shape=(len(raw) - _BLOCK + 1,), dtype=_V16, buffer=raw, strides=(1,))
            ct_blocks = windows[block_src]
            dec = self._cipher.decryptor().update(memoryview(ct_blocks.view(np.uint8)))
            # CBC: plaintext block i = AES^-1(C_i) XOR C_(i-1), with the IV for each record's first block.
            chain = np.empty(total_blocks, dtype=_V16)
            chain[1:] = ct_blocks[:-1]
            chain[first_block] = self._iv_block
            plain_words = chain.view(np.uint64)
            np.bitwise_xor(np.frombuffer(dec, dtype=np.uint64), plain_words, out=plain_words)
            plain_blocks = chain  # now holds the plaintext blocks

            # ---- 3. PKCS#7: pad byte p in 1..16 and the last p bytes all equal p ---------------------
            # Table-driven on 64-bit words: per value of the last byte, the expected bytes and their mask.
            last_block = first_block + nblocks - 1
            tail_blocks = plain_blocks[last_block]
            pad_byte = tail_blocks.view(np.uint8)[_BLOCK - 1 :: _BLOCK]
            diff = (tail_blocks.view(np.uint64) ^ _PAD_PATTERN[pad_byte].view(np.uint64)) & _PAD_MASK[
                pad_byte
            ].view(np.uint64)
            pad_ok = _PAD_VALID[pad_byte] & ((diff[0::2] | diff[1::2]) == 0)
            plain_len = dec_len[cand] - pad_byte
            good = pad_ok & (plain_len > 0)
            codes[cand[pad_ok & (plain_len == 0)]] = _INVALID
            out_len[cand[good]] = plain_len[good]

            # Keep mask, one 0/1 byte per plaintext byte: every byte of a good row's blocks except the
            # padding of its last block; then one boolean compaction gives the output data buffer.
            keep = np.empty(total_blocks, dtype=_V16)
            keep.view(np.uint64)[:] = _KEEP_ALL_WORD
            keep[last_block] = _KEEP_BLOCKS[np.where(good, pad_byte, 0)]
            if not good.all():
                keep.view(np.uint64)[2 * _span_positions(first_block[~good], nblocks[~good])[:, None] + [0, 1]] = 0
            data_out = plain_blocks.view(np.uint8)[keep.view(bool)]
            codes[cand[good]] = _OK

        # ---- 4. UTF-8: rows with bytes >= 0x80 are checked one by one ----------------------------
        out_offs = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(out_len, out=out_offs[1:])
        if data_out.size and int(data_out.max()) >= 0x80:
            rows = np.unique(np.searchsorted(out_offs, np.flatnonzero(data_out >= 0x80), side="right") - 1)
            bad_utf8 = []
            for r in rows.tolist():
                try:
                    data_out[out_offs[r] : out_offs[r + 1]].tobytes().decode("utf-8")
                except UnicodeDecodeError:
                    bad_utf8.append(r)
            if bad_utf8:
                bad_utf8 = np.asarray(bad_utf8, dtype=np.int64)
                drop = np.zeros(data_out.size, dtype=bool)
                drop[_span_positions(out_offs[bad_utf8], out_len[bad_utf8])] = True
                data_out = data_out[~drop]
                codes[bad_utf8] = _INVALID
                out_len[bad_utf8] = 0
                np.cumsum(out_len, out=out_offs[1:])

        if out_offs[-1] > np.iinfo(np.int32).max:  # pragma: no cover - chunks are far smaller
            raise OverflowError("decrypted chunk exceeds 2 GiB")
        plaintexts = _string_array(n, out_offs, data_out, codes == _OK)
        return plaintexts, _reasons_from_codes(codes)

    @staticmethod
    def _bulk_b64decode(buf: np.ndarray, lens: np.ndarray, fast: np.ndarray) -> bytes | None:
        """Decode the prepared buffer; None unless every kept character was a base64 data character.

        Non-strict a2b_base64 skips unknown characters and stops at a complete pad, so the output is
        exactly 3/4 of the kept characters long only when all of them are alphabet characters.
        """
        try:
            raw = binascii.a2b_base64(buf)
        except binascii.Error:
            return None
        expected = int(lens[fast].sum()) // 4 * 3
        return raw if len(raw) == expected else None


def decrypt_cbc_batch(tokens, key: bytes, iv: bytes) -> tuple[pa.StringArray, pa.StringArray]:
    """Decrypt base64 AES-CBC/PKCS#7 tokens in bulk; see :class:`CbcDecryptor`.

    Returns ``(plaintexts, reasons)`` of the input's length: plaintext null where the record failed,
    reason null where it succeeded.  A null token gives a null plaintext and ``DECRYPT_FAILED``.
    """
    return CbcDecryptor(key, iv).decrypt(tokens)


def encrypt_cbc(plaintexts: Iterable[str], key: bytes, iv: bytes) -> list[str]:
    """AES-CBC/PKCS#7-encrypt and base64-encode each plaintext (str as UTF-8, or raw bytes).

    For tests and data generators.  Vectorized across records: block k of every record is encrypted
    in one AES-ECB call.
    """
    key, iv = _check_key_iv(key, iv)
    padded = []
    for value in plaintexts:
        pt = _to_plain_bytes(value)
        n_pad = _BLOCK - len(pt) % _BLOCK
        padded.append(pt + bytes((n_pad,)) * n_pad)
    if not padded:
        return []
    nblocks = np.fromiter((len(p) >> 4 for p in padded), dtype=np.int64, count=len(padded))
    blocks = np.frombuffer(b"".join(padded), dtype=np.uint64).reshape(-1, 2)
    first = _exclusive_cumsum(nblocks)
    out = np.empty_like(blocks)
    prev = np.tile(np.frombuffer(iv, dtype=np.uint64), (len(padded), 1))
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    for k in range(int(nblocks.max())):
        rows = np.flatnonzero(nblocks > k)
        at = first[rows] + k
        mixed = np.ascontiguousarray(blocks[at] ^ prev[rows])
        enc = np.frombuffer(encryptor.update(memoryview(mixed.view(np.uint8))), dtype=np.uint64).reshape(-1, 2)
        out[at] = enc
        prev[rows] = enc
    ct = out.tobytes()
    return [
        binascii.b2a_base64(ct[f * _BLOCK : (f + b) * _BLOCK], newline=False).decode("ascii")
        for f, b in zip(first.tolist(), nblocks.tolist())
    ]


# --------------------------------------------------------------------------------------------------
# AES-256-GCM with a key ring
# --------------------------------------------------------------------------------------------------
class GcmDecryptor:
    """AES-256-GCM key-ring decryptor; build once per ``DoFn.setup()`` with the run's clock.

    Per token: bad base64 or shorter than 32 bytes -> ``DECRYPT_FAILED``; key id not in the ring ->
    ``UNKNOWN_KEY``; ``now >= expires`` -> ``EXPIRED_KEY``; ``now < activates`` -> ``KEY_NOT_ACTIVE``;
    tag mismatch -> ``DECRYPT_FAILED``; empty / non-UTF-8 plaintext -> ``INVALID_PLAINTEXT``.
    """

    def __init__(self, keys: list[RingKey], now: datetime):
        if not is_aware(now):
            raise ValueError("now must be a timezone-aware datetime")
        self._now = now
        self._keys: dict[int, tuple[AESGCM, str | None]] = {}
        for key in keys:
            if key.id in self._keys:
                raise KeyMaterialError(f"duplicate key id {key.id} in key ring")
            if key.expires is not None and now >= key.expires:
                status = Reason.EXPIRED_KEY
            elif now < key.activates:
                status = Reason.KEY_NOT_ACTIVE
            else:
                status = None
            self._keys[key.id] = (AESGCM(key.secret), status)

    def __repr__(self) -> str:
        return f"GcmDecryptor(key_ids={sorted(self._keys)}, now={self._now.isoformat()})"

    def __reduce_ex__(self, protocol):
        raise TypeError("GcmDecryptor holds key material and cannot be pickled; build it in DoFn.setup()")

    def decrypt(self, tokens) -> tuple[pa.StringArray, pa.StringArray]:
        plains, reasons = [], []
        for token in _token_bytes(_as_text_array(tokens)):
            plain, reason = self._decrypt_one(token)
            plains.append(plain)
            reasons.append(reason)
        return _result_arrays(plains, reasons)

    def _decrypt_one(self, token: bytes | None) -> tuple[str | None, str | None]:
        if token is None:
            return None, Reason.DECRYPT_FAILED
        try:
            raw = binascii.a2b_base64(token, strict_mode=True)
        except (binascii.Error, ValueError):
            return None, Reason.DECRYPT_FAILED
        if len(raw) < _GCM_MIN_TOKEN:
            return None, Reason.DECRYPT_FAILED
        entry = self._keys.get(int.from_bytes(raw[:_GCM_KEY_ID], "big"))
        if entry is None:
            return None, Reason.UNKNOWN_KEY
        aead, status = entry
        if status is not None:
            return None, status
        nonce_end = _GCM_KEY_ID + _GCM_NONCE
        try:
            pt = aead.decrypt(raw[_GCM_KEY_ID:nonce_end], raw[nonce_end:], None)
        except InvalidTag:
            return None, Reason.DECRYPT_FAILED
        return _finish_utf8(pt)


def encrypt_gcm(plaintexts, key: RingKey, nonces: Iterable[bytes] | None = None) -> list[str]:
    """Encrypt each plaintext (str as UTF-8, or bytes) under ``key``; for tests and generators.

    ``nonces`` (12 bytes each, one per plaintext) makes the output deterministic; by default each nonce
    is random.  Never reuse a nonce with the same key outside tests.
    """
    aead = AESGCM(key.secret)
    prefix = key.id.to_bytes(_GCM_KEY_ID, "big")
    items = [_to_plain_bytes(value) for value in plaintexts]
    if nonces is None:
        nonce_list = [os.urandom(_GCM_NONCE) for _ in items]
    else:
        nonce_list = [bytes(nonce) for nonce in nonces]
        if len(nonce_list) != len(items):
            raise ValueError(f"got {len(nonce_list)} nonces for {len(items)} plaintexts")
        if any(len(nonce) != _GCM_NONCE for nonce in nonce_list):
            raise ValueError("every nonce must be 12 bytes")
    return [
        binascii.b2a_base64(prefix + nonce + aead.encrypt(nonce, pt, None), newline=False).decode("ascii")
        for nonce, pt in zip(nonce_list, items)
    ]


# --------------------------------------------------------------------------------------------------
# Encryptors for the export (channel email / sms)
# --------------------------------------------------------------------------------------------------
class CbcEncryptor:
    """AES-CBC/PKCS#7 with the data source's key and fixed IV: deterministic, exactly what the website
    sends and what the import decrypts. Build in ``DoFn.setup()``; refuses to be pickled."""

    def __init__(self, key: bytes, iv: bytes):
        if len(key) not in AES_KEY_LENGTHS or len(iv) != 16:
            raise KeyMaterialError("AES-CBC needs a 16, 24 or 32-byte key and a 16-byte IV")
        self._key, self._iv = bytes(key), bytes(iv)

    def __repr__(self) -> str:
        return f"CbcEncryptor(aes_{len(self._key) * 8})"

    def __reduce_ex__(self, protocol):
        raise TypeError("CbcEncryptor holds key material and cannot be pickled; build it in DoFn.setup()")

    def encrypt(self, plaintexts: pa.Array) -> pa.Array:
        return _encrypt_present(plaintexts, lambda values: encrypt_cbc(values, self._key, self._iv))


class GcmEncryptor:
    """AES-256-GCM token ``base64(key_id | nonce | ciphertext | tag)`` under the key ring's newest key
    active at the run's clock (latest ``activates``, then highest id). The nonce is
    ``HMAC-SHA256(key, plaintext)[:12]``: the same plaintext always gives the same token (byte-identical
    reruns, and the delta against an existing export works), distinct plaintexts get distinct nonces
    (a 96-bit collision needs ~2**48 addresses). Like CBC with a fixed IV, equal tokens reveal equal
    addresses, nothing more. Build in ``DoFn.setup()``; refuses to be pickled."""

    def __init__(self, keys, now: datetime):
        active = [k for k in keys if k.activates <= now and (k.expires is None or now < k.expires)]
        if not active:
            raise KeyMaterialError(f"key ring: no key is active on {now.date().isoformat()}")
        self._key = max(active, key=lambda k: (k.activates, k.id))

    @property
    def key_id(self) -> int:
        return self._key.id

    def __repr__(self) -> str:
        return f"GcmEncryptor(key_id={self._key.id})"

    def __reduce_ex__(self, protocol):
        raise TypeError("GcmEncryptor holds key material and cannot be pickled; build it in DoFn.setup()")

    def encrypt(self, plaintexts: pa.Array) -> pa.Array:
        def run(values: list[str]) -> list[str]:
            raw = [v.encode("utf-8") for v in values]
            nonces = [hmac.new(self._key.secret, v, hashlib.sha256).digest()[:12] for v in raw]
            return encrypt_gcm(raw, self._key, nonces)

        return _encrypt_present(plaintexts, run)


def _encrypt_present(plaintexts: pa.Array, encrypt) -> pa.Array:
    if isinstance(plaintexts, pa.ChunkedArray):
        plaintexts = plaintexts.combine_chunks()
    present = pc.is_valid(plaintexts)
    values = pc.filter(plaintexts, present).to_pylist()
    tokens = pa.array(encrypt(values) if values else [], pa.string())
    if len(values) == len(plaintexts):
        return tokens
    return pc.replace_with_mask(pa.nulls(len(plaintexts), pa.string()), present, tokens)


# --------------------------------------------------------------------------------------------------
# What a data source needs (reads key material: call in DoFn.setup() or the launcher's preflight)
# --------------------------------------------------------------------------------------------------
def build_decryptor(ds: DataSourceConfig, run_date: datetime | None):
    """The decryptor a data source needs (None when its IDs are not decrypted). Reads key material:
    call it in ``DoFn.setup()`` on the worker, never at pipeline construction."""
    if not ds.decrypts:
        return None
    enc = ds.encryption
    if enc.algorithm == "aes-cbc":
        key = load_secret(enc.key, enc.key_encoding)
        iv = load_secret(enc.iv, enc.iv_encoding, lengths=(16,))
        return CbcDecryptor(key, iv)
    if run_date is None:
        raise ValueError(f"data source '{ds.name}': aes-gcm needs the run date (the key ring's clock)")
    return GcmDecryptor(load_keyring(enc.keyring), run_date)


def build_encryptor(ds: DataSourceConfig, clock: datetime):
    """The encryptor a data source's user IDs need (None unless they are encrypted addresses). Reads
    key material: call it in ``DoFn.setup()`` (or once in the launcher's preflight), never elsewhere."""
    if not ds.decrypts:
        return None
    enc = ds.encryption
    if enc.algorithm == "aes-cbc":
        return CbcEncryptor(load_secret(enc.key, enc.key_encoding),
                            load_secret(enc.iv, enc.iv_encoding, lengths=(16,)))
    return GcmEncryptor(load_keyring(enc.keyring), clock)
