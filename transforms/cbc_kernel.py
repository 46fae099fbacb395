"""The vectorized AES-CBC/PKCS#7 kernel behind :class:`transforms.crypto.CbcDecryptor`.

One slice of base64 tokens (a few thousand rows, so every intermediate stays in cache) goes through
four phases, each a function of numpy arrays with a named result:

1. :func:`decode_base64` -- every token that can be is base64-decoded by ONE ``a2b_base64`` call;
   odd rows (length not a multiple of 4, characters outside the alphabet) are decoded one by one
   with the strict decoder.  Result: :class:`Ciphertexts`.
2. :func:`decrypt_blocks` -- every ciphertext block of the slice goes through ONE AES-ECB
   ``update()``; the CBC chaining (XOR with the previous ciphertext block, the IV for a record's first
   block) is numpy.  Result: :class:`Blocks`.
3. :func:`strip_pkcs7` -- the padding of every record is checked and stripped, table-driven on 64-bit
   words.  Result: :class:`Plaintexts`.
4. :func:`check_utf8` -- the rows holding a byte >= 0x80 are checked one by one; the others are ASCII.

:func:`token_rows` reads the slice's buffers for phase 1, :func:`result_arrays` builds the Arrow
arrays from phase 4.  Per row, a code says the outcome: :data:`OK`, :data:`FAILED` (``decrypt_failed``)
or :data:`INVALID` (``invalid_plaintext``).  Base64 has the semantics of
``binascii.a2b_base64(strict_mode=True)``: the bulk path only takes rows that decoder would take the
same way.
"""

from __future__ import annotations

import binascii
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from cryptography.hazmat.primitives.ciphers import Cipher

from transforms.reasons import Reason

BLOCK = 16
V16 = np.dtype("V16")  # one AES block as a single numpy item

# Row codes: where each row of a slice stands.
OK, FAILED, INVALID = 0, 1, 2
_CODE_REASONS = pa.array([None, Reason.DECRYPT_FAILED, Reason.INVALID_PLAINTEXT], type=pa.string())

_B64_PAD = ord("=")
_B64_FILL = ord("A")  # stands in for '=': decodes the same leading bytes, plus garbage we drop
_B64_SKIP = ord(" ")  # non-strict a2b_base64 skips it: blanks out rows we do not decode in bulk


class TokenRows(NamedTuple):
    """A slice of tokens as numpy views: the value bytes and per-row offsets into them."""

    data: np.ndarray  # uint8: the slice's value bytes
    offsets: np.ndarray  # int64, len + 1, relative to data
    valid: np.ndarray  # bool per row: not null


class Ciphertexts(NamedTuple):
    """Phase 1's result: every row's decoded bytes, back to back in ``raw``."""

    raw: bytes
    start: np.ndarray  # int64 per row: where its bytes start in raw
    length: np.ndarray  # int64 per row: how many (0: null, empty or not base64)
    odd_rows: bool  # rows with characters outside the alphabet were found (a hint for the next slice)


class Blocks(NamedTuple):
    """Phase 2's result: the plaintext blocks (padding included) of every row whose ciphertext is a
    positive multiple of 16 bytes (the others cannot be CBC and stay ``FAILED``)."""

    rows: np.ndarray  # int64: those rows, ascending
    first: np.ndarray  # int64 per such row: index of its first block in plain
    count: np.ndarray  # int64 per such row: its number of blocks
    plain: np.ndarray  # V16: all their plaintext blocks, row after row


class Plaintexts(NamedTuple):
    """Phases 3 and 4's result: per row a code and a length, and the ``OK`` rows' bytes."""

    codes: np.ndarray  # int8 per row: OK, FAILED or INVALID
    length: np.ndarray  # int64 per row: plaintext bytes (0 unless OK)
    data: np.ndarray  # uint8: the OK rows' plaintexts, back to back


# --------------------------------------------------------------------------------------------------
# Small numpy helpers
# --------------------------------------------------------------------------------------------------
def exclusive_cumsum(values: np.ndarray) -> np.ndarray:
    out = np.cumsum(values, dtype=np.int64)
    out -= values
    return out


def _span_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """All positions ``starts[j] .. starts[j] + lengths[j] - 1``, concatenated."""
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    return np.repeat(starts.astype(np.int64) - exclusive_cumsum(lengths), lengths) + np.arange(total, dtype=np.int64)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def token_rows(arr: pa.Array) -> TokenRows:
    """The buffers of a ``string`` or ``large_string`` array (possibly a slice), without copying."""
    n = len(arr)
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
    valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else np.ones(n, dtype=bool)
    return TokenRows(data, offs, valid)


# --------------------------------------------------------------------------------------------------
# Phase 1: base64
# --------------------------------------------------------------------------------------------------
def decode_base64(tokens: TokenRows, validate_first: bool = False) -> Ciphertexts:
    """Decode every row, in bulk where possible.

    Bulk candidates are the non-null rows whose length is a positive multiple of 4.  Their trailing
    '=' become 'A' (which decodes the same leading bytes, plus garbage bytes we drop); every other row
    is blanked with spaces, which non-strict ``a2b_base64`` skips; then ONE call decodes the slice.
    Optimistic: the decode is checked by its output length.  If it fails (or with ``validate_first``,
    before it), the candidates holding a non-alphabet character or a misplaced '=' are found and
    demoted.  Rows outside the bulk path are decoded one by one with the strict decoder; their bytes
    go after the bulk output.
    """
    data, offs, valid = tokens
    lens = offs[1:] - offs[:-1]
    fast, pad, buf = _bulk_candidates(tokens)
    raw = None if validate_first else _bulk_b64decode(buf, lens, fast)
    odd_rows = False
    if raw is None:
        odd_rows = _demote_non_base64_rows(data, offs, fast, pad, buf) > 0
        raw = _bulk_b64decode(buf, lens, fast)
        if raw is None:  # pragma: no cover - would be a bug in the validity check
            raise RuntimeError("internal error: bulk base64 decode failed after validation")
    decoded_full = np.where(fast, (lens >> 2) * 3, 0)
    start = exclusive_cumsum(decoded_full)
    length = decoded_full - pad
    raw = _decode_rows_one_by_one(tokens, np.flatnonzero(valid & (lens > 0) & ~fast), raw, start, length)
    return Ciphertexts(raw, start, length, odd_rows)


def _bulk_candidates(tokens: TokenRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fast, pad, buf)``: which rows are bulk candidates, their number of trailing '=', and a copy
    of the bytes prepared for one non-strict decode (pads filled, other rows blanked)."""
    data, offs, valid = tokens
    starts, ends = offs[:-1], offs[1:]
    lens = ends - starts
    fast = valid & (lens > 0) & ((lens & 3) == 0)
    pad = np.zeros(len(lens), dtype=np.int64)
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
    return fast, pad, buf


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


def _decode_rows_one_by_one(
    tokens: TokenRows, rows: np.ndarray, raw: bytes, start: np.ndarray, length: np.ndarray
) -> bytes:
    """Strict-decode ``rows`` one by one (the reference's decoder); append their bytes to ``raw`` and
    set their ``start``/``length`` in place (a row that does not decode keeps length 0)."""
    if not rows.size:
        return raw
    extra, pos = [], len(raw)
    for i in rows.tolist():
        try:
            ct = binascii.a2b_base64(tokens.data[tokens.offsets[i] : tokens.offsets[i + 1]].tobytes(), strict_mode=True)
        except (binascii.Error, ValueError):
            continue
        extra.append(ct)
        start[i], length[i] = pos, len(ct)
        pos += len(ct)
    return raw + b"".join(extra) if extra else raw


# --------------------------------------------------------------------------------------------------
# Phase 2: one AES-ECB pass over every block, CBC chaining with numpy
# --------------------------------------------------------------------------------------------------
def decrypt_blocks(ct: Ciphertexts, cipher: Cipher, iv_block: np.void) -> Blocks:
    """CBC-decrypt the rows whose ciphertext is a positive multiple of 16 bytes: plaintext block i is
    AES^-1(C_i) XOR C_(i-1), with the IV (one V16 item) for each row's first block. ``cipher`` is an
    AES-ECB ``Cipher``: all blocks go through one ``decryptor().update()``."""
    rows = np.flatnonzero((ct.length > 0) & ((ct.length & (BLOCK - 1)) == 0))
    if not rows.size:
        empty = np.empty(0, dtype=np.int64)
        return Blocks(rows, empty, empty, np.empty(0, dtype=V16))
    nblocks = ct.length[rows] >> 4
    total_blocks = int(nblocks.sum())
    first_block = exclusive_cumsum(nblocks)
    block_src = np.repeat(ct.start[rows] - BLOCK * first_block, nblocks) + BLOCK * np.arange(
        total_blocks, dtype=np.int64
    )
    # Numpy fancy indexing is fast on 1-d arrays of 16-byte items ("V16"), so every per-block
    # gather/scatter works on blocks as items and arithmetic on two uint64 words per block.
    # Every 16-byte window of raw as one item: gathering the ciphertext blocks is one fancy index.
    windows = np.ndarray(shape=(len(ct.raw) - BLOCK + 1,), dtype=V16, buffer=ct.raw, strides=(1,))
    ct_blocks = windows[block_src]
    dec = cipher.decryptor().update(memoryview(ct_blocks.view(np.uint8)))
    chain = np.empty(total_blocks, dtype=V16)
    chain[1:] = ct_blocks[:-1]
    chain[first_block] = iv_block
    plain_words = chain.view(np.uint64)
    np.bitwise_xor(np.frombuffer(dec, dtype=np.uint64), plain_words, out=plain_words)
    return Blocks(rows, first_block, nblocks, chain)  # chain now holds the plaintext blocks


def drop_first_block(blocks: Blocks) -> Blocks:
    """The rows of two blocks or more without their first block: each row's plaintext as if its first
    16 ciphertext bytes were its IV (block 1's chaining value is ciphertext block 0, whatever IV
    decrypted block 0). The diagnosis reads tokens sent as IV || ciphertext so."""
    two = blocks.count >= 2
    count = blocks.count[two] - 1
    keep = _span_positions(blocks.first[two] + 1, count)
    return Blocks(blocks.rows[two], exclusive_cumsum(count), count, blocks.plain[keep])


# --------------------------------------------------------------------------------------------------
# Phase 3: PKCS#7
# --------------------------------------------------------------------------------------------------
def _pkcs7_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per possible last byte p (0..255) of a decrypted record: is p a valid PKCS#7 pad (1..16), the
    expected last block under the pad (p in its last p bytes), the mask of those bytes, and the keep
    mask (0x01 for the 16 - p plaintext bytes), each block as one 16-byte item."""
    valid = np.zeros(256, dtype=bool)
    pattern = np.zeros((256, BLOCK), dtype=np.uint8)
    mask = np.zeros((256, BLOCK), dtype=np.uint8)
    keep = np.zeros((256, BLOCK), dtype=np.uint8)
    for p in range(1, BLOCK + 1):
        valid[p] = True
        pattern[p, BLOCK - p :] = p
        mask[p, BLOCK - p :] = 0xFF
        keep[p, : BLOCK - p] = 1
    as_blocks = lambda table: table.reshape(-1).view(V16)  # noqa: E731
    return valid, as_blocks(pattern), as_blocks(mask), as_blocks(keep)


_PAD_VALID, _PAD_PATTERN, _PAD_MASK, _KEEP_BLOCKS = _pkcs7_tables()
_KEEP_ALL_WORD = np.frombuffer(b"\x01" * 8, dtype=np.uint64)[0]


def strip_pkcs7(blocks: Blocks, n: int) -> Plaintexts:
    """Check and strip every row's padding (pad byte p in 1..16 and the last p bytes all equal p).

    A row of ``blocks`` with valid padding is ``OK`` (or ``INVALID`` when nothing is left); bad padding,
    and every row of the ``n`` not in ``blocks``, is ``FAILED``.
    """
    codes = np.full(n, FAILED, dtype=np.int8)
    length = np.zeros(n, dtype=np.int64)
    if not blocks.rows.size:
        return Plaintexts(codes, length, np.zeros(0, dtype=np.uint8))
    rows, first_block, nblocks, plain_blocks = blocks
    # Table-driven on 64-bit words: per value of the last byte, the expected bytes and their mask.
    last_block = first_block + nblocks - 1
    tail_blocks = plain_blocks[last_block]
    pad_byte = tail_blocks.view(np.uint8)[BLOCK - 1 :: BLOCK]
    diff = (tail_blocks.view(np.uint64) ^ _PAD_PATTERN[pad_byte].view(np.uint64)) & _PAD_MASK[pad_byte].view(np.uint64)
    pad_ok = _PAD_VALID[pad_byte] & ((diff[0::2] | diff[1::2]) == 0)
    plain_len = BLOCK * nblocks - pad_byte
    good = pad_ok & (plain_len > 0)
    codes[rows[pad_ok & (plain_len == 0)]] = INVALID
    codes[rows[good]] = OK
    length[rows[good]] = plain_len[good]
    # Keep mask, one 0/1 byte per plaintext byte: every byte of a good row's blocks except the
    # padding of its last block; then one boolean compaction gives the output data buffer.
    keep = np.empty(len(plain_blocks), dtype=V16)
    keep.view(np.uint64)[:] = _KEEP_ALL_WORD
    keep[last_block] = _KEEP_BLOCKS[np.where(good, pad_byte, 0)]
    if not good.all():
        keep.view(np.uint64)[2 * _span_positions(first_block[~good], nblocks[~good])[:, None] + [0, 1]] = 0
    return Plaintexts(codes, length, plain_blocks.view(np.uint8)[keep.view(bool)])


# --------------------------------------------------------------------------------------------------
# Phase 4: UTF-8
# --------------------------------------------------------------------------------------------------
def check_utf8(plain: Plaintexts) -> Plaintexts:
    """Rows holding a byte >= 0x80 are decoded one by one; those that are not UTF-8 become
    ``INVALID`` and their bytes leave ``data``.  ASCII rows need no check."""
    data = plain.data
    if not data.size or int(data.max()) < 0x80:
        return plain
    offs = _offsets(plain.length)
    rows = np.unique(np.searchsorted(offs, np.flatnonzero(data >= 0x80), side="right") - 1)
    bad = []
    for r in rows.tolist():
        try:
            data[offs[r] : offs[r + 1]].tobytes().decode("utf-8")
        except UnicodeDecodeError:
            bad.append(r)
    if not bad:
        return plain
    bad = np.asarray(bad, dtype=np.int64)
    drop = np.zeros(data.size, dtype=bool)
    drop[_span_positions(offs[bad], plain.length[bad])] = True
    codes, length = plain.codes.copy(), plain.length.copy()
    codes[bad] = INVALID
    length[bad] = 0
    return Plaintexts(codes, length, data[~drop])


# --------------------------------------------------------------------------------------------------
# Arrow results
# --------------------------------------------------------------------------------------------------
def result_arrays(plain: Plaintexts) -> tuple[pa.StringArray, pa.StringArray]:
    """``(plaintexts, reasons)``: the ``OK`` rows' text, and the reason of every other row."""
    offs = _offsets(plain.length)
    if offs[-1] > np.iinfo(np.int32).max:  # pragma: no cover - slices are far smaller
        raise OverflowError("decrypted chunk exceeds 2 GiB")
    return _string_array(len(plain.codes), offs, plain.data, plain.codes == OK), _reasons_from_codes(plain.codes)


def _reasons_from_codes(codes: np.ndarray) -> pa.StringArray:
    if not codes.any():
        return pa.nulls(len(codes), pa.string())
    indices = pa.array(codes, mask=codes == OK)
    return _CODE_REASONS.take(indices)


def _string_array(n: int, offsets: np.ndarray, data: np.ndarray, valid: np.ndarray) -> pa.StringArray:
    null_count = int(n - np.count_nonzero(valid))
    bitmap = None if null_count == 0 else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(
        pa.string(), n, [bitmap, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)], null_count=null_count
    )
