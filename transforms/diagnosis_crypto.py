"""Mismatch diagnosis of encrypted data sources: why sampled tokens failed to decrypt.

* AES-CBC: tokens that are not standard padded base64 (hex ciphertexts, url-safe, unpadded, blanks
  inside) and decrypt once read back as such are a finding of their own (no setting reads them: the
  partner must send standard base64). Then the key and IV references are read again under the other encoding (hex <->
  base64) where that gives a valid key or IV; a combination that turns failures into valid
  addresses is a finding (``encryption.key_encoding`` / ``iv_encoding``). Tokens that carry a random
  IV each in front (IV || ciphertext) decrypt, read so, to whole addresses, and their first blocks
  under the configured IV are unrelated garbage: a scheme of its own, not a wrong encryption.iv; so
  are plaintexts padded otherwise than PKCS#7 (zero bytes, ANSI X.923). Failing that, the failures' pattern points at the IV or the key: CBC with a wrong IV garbles only
  the first 16 bytes (the padding is valid and the rest reads as text), a wrong key garbles every
  block (the padding of a token of two blocks or more fails). A one-block token (a phone number, a
  short email) has its padding in the block a wrong IV garbles: there the last decrypted byte is a
  padding XOR one constant (the IV) or random (the key).
* AES-GCM: :mod:`transforms.diagnosis_gcm`.
* Failures that are addresses in another form (in clear, Latin-1, the other channel, national phone
  numbers), on either scheme, and what a finding is: :mod:`transforms.diagnosis_plaintext`.

Key material is read on the worker (the DoFn in :mod:`transforms.diagnosis`); findings name config
fields and the key ring's own key ids, never a key, an IV, a plaintext or 4 bytes of a token the ring
does not know.
"""
from __future__ import annotations

import binascii
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from transforms import cbc_kernel
from transforms.config import DataSourceConfig
from transforms.crypto import CbcDecryptor
from transforms.diagnosis_plaintext import (CryptoFinding, address_noun, addresses, as_text, national_numbers,
                                            other_channel, other_charset, unencrypted)
from transforms.digests import ENCODINGS
from transforms.errors import KeyMaterialError
from transforms.reasons import Reason
from transforms.secrets import AES_KEY_LENGTHS, load_secret

_FAILURES = (Reason.DECRYPT_FAILED, Reason.INVALID_PLAINTEXT, Reason.UNKNOWN_KEY, Reason.EXPIRED_KEY, Reason.KEY_NOT_ACTIVE)


class CbcMaterial(NamedTuple):
    """The configured key and IV, and what the key reference decodes to under each encoding (an IV
    never reads validly both ways: 32 hex characters are 24 bytes of base64)."""

    key: bytes
    iv: bytes
    keys: dict[str, bytes]  # encoding -> key bytes, where that encoding gives a valid AES key

    def __repr__(self) -> str:
        return f"CbcMaterial(<key: {len(self.key)} bytes>, <iv: {len(self.iv)} bytes>, encodings={sorted(self.keys)})"

    __str__ = __repr__

    def __reduce_ex__(self, protocol):
        raise TypeError("CbcMaterial holds key material and cannot be pickled; load it in DoFn.setup()")


def load_cbc_material(ds: DataSourceConfig) -> CbcMaterial:
    """Read the data source's key and IV references (the key under every encoding). Reads key
    material: call it on the worker."""
    enc = ds.encryption
    keys = {}
    for encoding in ENCODINGS:
        try:
            keys[encoding] = load_secret(enc.key, encoding, AES_KEY_LENGTHS)
        except KeyMaterialError:
            pass
    return CbcMaterial(load_secret(enc.key, enc.key_encoding), load_secret(enc.iv, enc.iv_encoding, lengths=(16,)), keys)


def failed_tokens(sample: pa.Table) -> pa.Array:
    """The sampled tokens that failed to decrypt (or decrypted to something that is not an address)."""
    keep = np.isin(np.asarray(sample["reason"].to_pylist(), dtype=object), [str(r) for r in _FAILURES])
    return sampled_text(sample["value"].combine_chunks().filter(pa.array(keep)))


def sampled_text(values: pa.Array) -> pa.Array:
    """Sampled tokens (bytes) as text. One that is not UTF-8 (no dump line brings one: a line is
    decoded before its IDs are read) gets U+FFFD for its bad bytes: no base64 either way."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in values.to_pylist()], pa.string())


def cbc_findings(ds: DataSourceConfig, tokens: pa.Array, material: CbcMaterial, region: str | None = None) -> list[CryptoFinding]:
    """Findings for AES-CBC failures: the key reference read in another encoding that decrypts them,
    else the pattern of the failures (wrong IV, wrong key). ``region``: JobConfig.region_for(ds)."""
    if len(tokens) == 0:
        return []
    clear = unencrypted(ds, tokens, region)
    if clear:
        return clear
    re_encoded = _hex_tokens(ds, tokens, material, region) or token_encoding(
        ds, tokens, lambda standard: _decrypt_to_addresses(ds, standard, material.key, material.iv, region), KEY_AND_IV)
    if re_encoded:
        return re_encoded
    for encoding, key in sorted(material.keys.items()):
        if key == material.key:
            continue
        n = pc.sum(_decrypt_to_addresses(ds, tokens, key, material.iv, region)).as_py()
        if n:
            return [CryptoFinding("key_encoding", (("encryption.key_encoding", encoding),), n,
                                  f"decrypt to valid {address_noun(ds)} with the key read as {encoding}")]
    swapped = _swapped(ds, tokens, material, region)
    if swapped:
        return swapped
    carried = _carried_iv(ds, tokens, material, region) or _other_padding(ds, tokens, material, region)
    if carried:
        return carried
    # Decrypted once for the three. Latin-1 plaintexts pad validly and read but for an accent, which in
    # the first 16 bytes looks like a wrong IV's garbage: said here, before the pattern blames the IV.
    plaintexts = _plaintexts(tokens, material)
    carried = (other_charset(ds, plaintexts, region, KEY_AND_IV) or other_channel(ds, plaintexts, region, KEY_AND_IV)
               or national_numbers(ds, plaintexts, region, KEY_AND_IV))
    if carried:
        return carried
    return _pattern_findings(tokens, material) + _not_whole_blocks(tokens)


def _pattern_findings(tokens: pa.Array, material: CbcMaterial) -> list[CryptoFinding]:
    """The failures' pattern under the configured key and IV (:func:`_failure_pattern`): a wrong IV,
    a wrong key, or too few one-block tokens to tell."""
    p = _failure_pattern(tokens, material.key, material.iv)
    if p.garbled_head or p.one_block_iv:
        # Only the tokens showing a wrong IV's pattern would decrypt with the right IV; the others (a
        # padding failing in the last block of two or more, a one-block token's random last byte) are
        # under another key.
        whys = [(p.garbled_head, "decrypt with valid padding and readable text after their first 16 bytes but not in them"),
                (p.one_block_iv, "are one block whose last byte decrypts to a padding XOR the same bits on each of them")]
        whys = [(n, why) for n, why in whys if n]
        why = whys[0][1] if len(whys) == 1 else "; ".join(f"{n:,} {why}" for n, why in whys)
        found = [CryptoFinding("iv", (("encryption.iv", None),), p.garbled_head + p.one_block_iv,
                               f"are whole AES blocks that fail to decrypt the way a wrong IV makes them fail ({why}): the key is "
                               "right and the IV is not (AES-CBC with a wrong IV garbles only the first block); check "
                               "encryption.iv")]
        other = p.long_bad_padding + (p.one_block - p.one_block_iv if p.one_block_verdict else 0)
        return found + ([_wrong_key(other)] if other else [])
    if p.long_bad_padding or p.one_block_verdict == "key":
        return [_wrong_key(p.bad_padding)]
    if p.one_block:
        return [CryptoFinding("key_or_iv", (("encryption.key", None), ("encryption.iv", None)), p.one_block,
                              "are one AES block each and fail to decrypt: too few to tell a wrong key from a wrong IV "
                              "(the padding of a one-block token is in the block a wrong IV garbles); check "
                              "encryption.key and encryption.iv")]
    return []


def _swapped(ds: DataSourceConfig, tokens: pa.Array, material: CbcMaterial, region: str | None) -> list[CryptoFinding]:
    """Tokens that decrypt with the key and the IV the other way round: an AES-128 key and an IV are
    both 16 bytes, and their references swapped in the config read as a wrong key."""
    if len(material.key) != len(material.iv):
        return []
    n = pc.sum(_decrypt_to_addresses(ds, tokens, material.iv, material.key, region)).as_py()
    if not n:
        return []
    return [CryptoFinding("key_or_iv", (("encryption.key", None), ("encryption.iv", None)), int(n),
                          f"decrypt to valid {address_noun(ds)} with the key and the IV swapped: encryption.key names the "
                          "IV and encryption.iv the key; swap the two references")]


# Tokens of valid base64 whose values are not whole AES blocks are another scheme's only when at least
# this many distinct ones are: a damaged line or two is noise.
MIN_NOT_WHOLE_TOKENS = 8


def _not_whole_blocks(tokens: pa.Array) -> list[CryptoFinding]:
    """Tokens that are valid standard base64 of values that are not whole 16-byte blocks: no AES-CBC
    ciphertext (no key or IV gives one), but tokens cut short or of another scheme (an AES-GCM
    key-ring token is 4 + 12 + n + 16 bytes). Hex ciphertexts' shape (whole blocks in hex, read as
    base64 24 bytes a block) is left to :func:`_hex_tokens`. No setting of AES-CBC reads them: the
    finding suggests none."""
    ciphertexts = cbc_kernel.decode_base64(cbc_kernel.token_rows(tokens))
    hex_shaped = pc.fill_null(pc.match_substring_regex(tokens.cast(pa.string()), r"^(?:[0-9A-Fa-f]{32})+$"), False)
    odd = (ciphertexts.length > 0) & (ciphertexts.length % 16 != 0) & ~hex_shaped.to_numpy(zero_copy_only=False)
    if len(set(tokens.filter(pa.array(odd)).to_pylist())) < MIN_NOT_WHOLE_TOKENS:
        return []
    return [CryptoFinding("token_encoding", (), int(odd.sum()),
                          "are base64 of values that are not whole 16-byte AES blocks, which every AES-CBC ciphertext "
                          "is: no key or IV decrypts them (cut short, or tokens of another scheme, such as AES-GCM "
                          "key-ring tokens: algorithm: aes-gcm?); check what the partner sends")]


def _wrong_key(n: int) -> CryptoFinding:
    return CryptoFinding("key", (("encryption.key", None),), n,
                         "are whole AES blocks that fail to decrypt under the configured key, not the way a wrong IV "
                         "makes them fail (the padding fails in the last of two blocks or more, or a one-block token's "
                         "last byte is random): they are under another key, or encryption.key_encoding is wrong; check "
                         "encryption.key")


KEY_AND_IV, KEY_RING = "the configured key and IV", "the key ring"  # what decrypts: AES-CBC's, AES-GCM's


def token_encoding(ds: DataSourceConfig, tokens: pa.Array, to_addresses, under: str) -> list[CryptoFinding]:
    """Tokens that are not the scheme's standard padded base64 -- url-safe ('-' and '_' for '+' and
    '/'), without their '=' padding, with blanks inside, or in quotes (a CSV writer's) -- and that
    decrypt to valid addresses (``to_addresses``: standard base64 tokens -> which do) under ``under``
    once read back as standard base64. No config field reads them (none should: the scheme is
    standard base64), so the finding suggests no change."""
    text = tokens.cast(pa.string())
    quoted = pc.fill_null(pc.match_substring_regex(text, r"""^(?:"[^"]*"|'[^']*')$"""), False)
    text = pc.if_else(quoted, pc.utf8_slice_codeunits(text, 1, -1), text)
    blanks = pc.fill_null(pc.match_substring_regex(text, r"\s"), False)
    squeezed = pc.replace_substring_regex(text, r"\s+", "")
    urlsafe = pc.fill_null(pc.match_substring_regex(squeezed, "[-_]"), False)
    length = pc.fill_null(pc.utf8_length(squeezed), 0).to_numpy(zero_copy_only=False)
    unpadded = pa.array(length % 4 != 0)
    changed = pc.or_(pc.or_(pc.or_(blanks, urlsafe), unpadded), quoted)
    if not pc.any(changed).as_py():
        return []
    standard = pc.replace_substring(pc.replace_substring(squeezed, "-", "+"), "_", "/")
    pads = np.array(["", "=", "==", "==="])[-length % 4]  # the '=' that make the length a multiple of 4
    standard = pc.binary_join_element_wise(standard, pa.array(pads), "")
    valid = to_addresses(standard.filter(changed))
    if not pc.any(valid).as_py():
        return []
    fixed = {name: pc.any(flags.filter(changed).filter(valid)).as_py()
             for name, flags in (("urlsafe", urlsafe), ("unpadded", unpadded), ("blanks", blanks), ("quoted", quoted))}
    alphabet = "url-safe base64 ('-' and '_' for '+' and '/')" if fixed["urlsafe"] else "base64"
    how = " and ".join(what for what, needed in (("without '=' padding", fixed["unpadded"]),
                                                  ("with blanks inside", fixed["blanks"]),
                                                  ("in quotes", fixed["quoted"])) if needed)
    return [CryptoFinding("token_encoding", (), pc.sum(valid).as_py(),
                          f"are {alphabet}{' ' + how if how else ''}, which the scheme does not use: read as standard "
                          f"base64 with its padding, they decrypt to valid {address_noun(ds)} under {under}; "
                          f"ask the partner for standard base64 with '=' padding{', without quotes' if fixed['quoted'] else ''} "
                          "(no setting reads other base64)")]


def _decrypt_to_addresses(ds: DataSourceConfig, tokens: pa.Array, key: bytes, iv: bytes,
                          region: str | None) -> pa.BooleanArray:
    """Which base64 ``tokens`` decrypt (AES-CBC under ``key`` and ``iv``) to valid addresses."""
    return addresses(ds, CbcDecryptor(key, iv).decrypt(tokens)[0], region)


def _hex_tokens(ds: DataSourceConfig, tokens: pa.Array, material: CbcMaterial, region: str | None) -> list[CryptoFinding]:
    """Ciphertexts sent as hex, not base64: hex characters are base64 characters, so 64 of them read
    as 48 bytes, three whole AES blocks whose padding fails as under a wrong key. Read as hex they
    decrypt to valid addresses under the configured key and IV. No setting reads hex tokens."""
    text = tokens.cast(pa.string())
    is_hex = pc.fill_null(pc.match_substring_regex(text, r"^(?:[0-9A-Fa-f]{32})+$"), False)
    if not pc.any(is_hex).as_py():
        return []
    hex_tokens = text.filter(is_hex).to_pylist()
    standard = pa.array([binascii.b2a_base64(bytes.fromhex(t), newline=False).decode("ascii") for t in hex_tokens])
    n = pc.sum(_decrypt_to_addresses(ds, standard, material.key, material.iv, region)).as_py()
    if not n:
        return []
    return [CryptoFinding("token_encoding", (), int(n),
                          f"are hex, not base64: read as hex, they decrypt to valid {address_noun(ds)} under the configured "
                          "key and IV; ask the partner for the ciphertexts in standard base64 with '=' padding (no "
                          "setting reads hex tokens)")]


def _carried_iv(ds: DataSourceConfig, tokens: pa.Array, material: CbcMaterial, region: str | None) -> list[CryptoFinding]:
    """Tokens sent as a random IV per token followed by its ciphertext (IV || ciphertext): read so,
    under the configured key, they decrypt to valid addresses, and their first blocks decrypted with
    the configured IV are unrelated garbage. A wrong fixed IV also leaves the text after the first
    16 bytes readable (a valid address, for a long one), but its first blocks are plaintexts XORed
    with one IV (:func:`_one_iv`); unless the first 16 bytes are the configured IV itself, sent in
    front of the ciphertext. No value of encryption.iv fixes this: the finding suggests none."""
    ciphertexts, blocks = _decrypted_blocks(tokens, material.key, material.iv)
    rest = cbc_kernel.drop_first_block(blocks)
    plain, _ = cbc_kernel.result_arrays(cbc_kernel.check_utf8(cbc_kernel.strip_pkcs7(rest, len(tokens))))
    valid = addresses(ds, plain, region).to_numpy(zero_copy_only=False)
    heads = [ciphertexts.raw[start:start + 16] for start in ciphertexts.start[valid].tolist()]
    if valid.any() and all(head == material.iv for head in heads):
        return [CryptoFinding("embedded_iv", (), int(valid.sum()),
                              "are tokens that carry the configured IV in front of their ciphertext (IV || ciphertext): "
                              f"read without it, they decrypt to valid {address_noun(ds)} under the configured key and IV. No "
                              "setting reads it: ask the partner for the ciphertext alone")]
    if not valid.any() or _one_iv(blocks.plain[blocks.first[valid[blocks.rows]]]):
        return []
    return [CryptoFinding("embedded_iv", (), int(valid.sum()),
                          "are tokens that each carry their own IV in their first 16 bytes (IV || ciphertext, a random "
                          f"IV per token): read so, they decrypt to valid {address_noun(ds)} under the configured key. This is not the scheme "
                          "configured (one IV, encryption.iv, for every token) and no setting reads it: ask the partner "
                          "for tokens under the agreed IV")]


def _decrypted_blocks(tokens: pa.Array, key: bytes, iv: bytes) -> tuple[cbc_kernel.Ciphertexts, cbc_kernel.Blocks]:
    """The tokens' ciphertexts and their CBC-decrypted blocks under ``key`` and ``iv``, padding unchecked."""
    ciphertexts = cbc_kernel.decode_base64(cbc_kernel.token_rows(tokens))
    cipher = Cipher(algorithms.AES(key), modes.ECB())
    return ciphertexts, cbc_kernel.decrypt_blocks(ciphertexts, cipher, np.frombuffer(iv, dtype=cbc_kernel.V16)[0])


def _other_padding(ds: DataSourceConfig, tokens: pa.Array, material: CbcMaterial, region: str | None) -> list[CryptoFinding]:
    """Plaintexts padded otherwise than PKCS#7 under the configured key and IV: zero bytes (none on a
    whole block: PHP's openssl or mcrypt, Java's NoPadding) or the pad length after other filler
    (ANSI X.923, ISO 10126). Their PKCS#7 check fails as under a wrong key; read with that padding
    they decrypt to valid addresses. No setting reads another padding: the finding suggests none."""
    blocks = _decrypted_blocks(tokens, material.key, material.iv)[1]
    failed = cbc_kernel.strip_pkcs7(blocks, len(tokens)).codes[blocks.rows] == cbc_kernel.FAILED
    data, texts = blocks.plain.tobytes(), []
    for first, count in zip(blocks.first[failed].tolist(), blocks.count[failed].tolist()):
        raw = data[16 * first:16 * (first + count)]
        texts += [raw.rstrip(b"\0"), raw[:-raw[-1]] if 1 <= raw[-1] <= 16 else b""]
    valid = addresses(ds, pa.array([as_text(t) for t in texts], pa.string()), region).to_numpy(zero_copy_only=False)
    zeros, lengths = int(valid[0::2].sum()), int((valid[1::2] & ~valid[0::2]).sum())
    if not zeros + lengths:
        return []
    how = "zero bytes as padding" if zeros >= lengths else "the pad length after other filler (ANSI X.923, ISO 10126)"
    return [CryptoFinding("token_encoding", (), zeros + lengths,
                          f"are not padded with PKCS#7, the scheme's padding: read with {how}, they decrypt to valid "
                          f"{address_noun(ds)} under the configured key and IV; ask the partner for PKCS#7 padding (no "
                          "setting reads another padding)")]


def _plaintexts(tokens: pa.Array, material: CbcMaterial) -> list[bytes | None]:
    """The tokens decrypted under the configured key and IV, padding stripped (None: no plaintext, its
    padding invalid or nothing left)."""
    plain = cbc_kernel.strip_pkcs7(_decrypted_blocks(tokens, material.key, material.iv)[1], len(tokens))
    data = plain.data.tobytes()
    return [data[start:start + length] if code == cbc_kernel.OK else None for start, length, code in
            zip(cbc_kernel.exclusive_cumsum(plain.length).tolist(), plain.length.tolist(), plain.codes.tolist())]


def _one_iv(first_blocks: np.ndarray) -> bool:
    """Whether decrypted first blocks (V16) look like plaintexts XORed with one IV: text is ASCII,
    bit 7 clear, so one IV flips bit 7 at a position in every block or in none; an IV per token
    leaves it random (constant at a position over n distinct blocks with a chance of 2**(1-n)). At
    least 12 of the 16 positions constant: one IV. One distinct block cannot tell: one IV."""
    high = np.unique(first_blocks).view(np.uint8).reshape(-1, 16) >= 0x80
    return len(high) < 2 or int((high.all(axis=0) | ~high.any(axis=0)).sum()) >= 12


# One-block tokens decide between a wrong IV and a wrong key only when at least this many distinct
# ones failed: a wrong key puts them under one padding-XOR-constant pattern with a chance of about
# 16**-(n-2).
MIN_ONE_BLOCK_TOKENS = 8


class _Pattern(NamedTuple):
    """How the failed tokens decrypt under the configured key and IV."""

    aligned: int  # whole-block tokens: those a wrong key or IV explains (others are damaged, not mis-keyed)
    bad_padding: int  # of those, whose padding fails
    garbled_head: int  # 2+ blocks, valid padding, readable after the first 16 bytes but not in them: a wrong IV
    long_bad_padding: int  # 2+ blocks whose padding fails: a wrong key (a wrong IV never garbles their last block)
    one_block: int  # garbled one-block tokens: their padding is in the block a wrong IV garbles
    one_block_verdict: str | None  # "iv", "key", "mixed" (some of each), or None (too few to tell)
    one_block_iv: int  # of the one-block tokens, those a wrong IV explains (verdict "iv" or "mixed")


def _failure_pattern(tokens: pa.Array, key: bytes, iv: bytes) -> _Pattern:
    """The failures' pattern (:class:`_Pattern`). A token of two blocks or more with valid padding,
    whose bytes after the first 16 are printable and whose first 16 are not, was encrypted with this
    key and another IV (a wrong key leaves no readable block, and almost never a valid padding); its
    padding failing means a wrong key. A one-block token's padding fails under either; its last
    byte tells them apart (:func:`_one_block_verdict`)."""
    ciphertexts, blocks = _decrypted_blocks(tokens, key, iv)
    plain = cbc_kernel.strip_pkcs7(blocks, len(tokens))
    n = len(tokens)
    aligned = (ciphertexts.length > 0) & (ciphertexts.length % 16 == 0)
    row_of_byte = np.repeat(np.arange(n), plain.length)
    position = np.arange(len(plain.data)) - np.repeat(cbc_kernel.exclusive_cumsum(plain.length), plain.length)
    unreadable = (plain.data < 0x20) | (plain.data > 0x7E)
    head_bad = np.bincount(row_of_byte[unreadable & (position < 16)], minlength=n) > 0
    tail_bad = np.bincount(row_of_byte[unreadable & (position >= 16)], minlength=n) > 0
    garbled_head = (plain.codes == cbc_kernel.OK) & (plain.length > 16) & head_bad & ~tail_bad
    bad_padding = aligned & (plain.codes == cbc_kernel.FAILED)
    garbled = bad_padding | head_bad | tail_bad  # decrypted text that reads is no key or IV problem
    one = (blocks.count == 1) & garbled[blocks.rows]
    verdict, one_iv = _one_block_verdict(blocks.plain[blocks.first[one]])
    return _Pattern(int(aligned.sum()), int(bad_padding.sum()), int(garbled_head.sum()),
                    int((bad_padding & (ciphertexts.length > 16)).sum()), int(one.sum()), verdict, one_iv)


def _one_block_verdict(decrypted: np.ndarray) -> tuple[str | None, int]:
    """``(verdict, tokens a wrong IV explains)`` for one-block tokens' decrypted blocks (V16). Under
    the right key and a wrong IV each block is the plaintext XOR the same 16 bytes: the last byte, a
    PKCS#7 padding (1..16), XOR one constant for every token; under a wrong key it is random (it
    fits a constant 1 time in 16). The verdict is judged on distinct blocks (one token repeated is
    one piece of evidence): ``"iv"`` (at least 90% fit the best constant), ``"key"`` (at most half),
    ``"mixed"`` (some of each: the fitting ones count for the IV), None (too few to tell)."""
    last = decrypted.view(np.uint8).reshape(-1, 16)[:, 15]
    distinct = np.unique(decrypted).view(np.uint8).reshape(-1, 16)[:, 15]
    if len(distinct) < MIN_ONE_BLOCK_TOKENS:
        return None, 0
    counts = np.bincount(distinct, minlength=256)
    fits = counts[np.arange(256)[:, None] ^ np.arange(1, 17)].sum(axis=1)
    best, fitting = int(fits.argmax()), int(fits.max())  # the best constant and its distinct tokens
    verdict = "iv" if fitting >= 0.9 * len(distinct) else "key" if fitting <= 0.5 * len(distinct) else "mixed"
    padding = last ^ np.uint8(best)
    return verdict, int(((padding >= 1) & (padding <= 16)).sum()) if verdict != "key" else 0
