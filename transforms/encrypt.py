"""AES for the export's user IDs, and for tests and data generators: the schemes of
:mod:`transforms.crypto`, the other way (reference: shared/reference/formats.md, section 5).

* :func:`encrypt_cbc`: AES-CBC/PKCS#7 under one key and fixed IV, base64; :class:`CbcEncryptor` for the
  export (deterministic: exactly what the website sends and what the import decrypts).
* :func:`encrypt_gcm`: AES-256-GCM ``base64(key_id u32 BE | nonce 12 | ct | tag 16)``;
  :class:`GcmEncryptor` for the export (the ring's newest active key, a nonce derived from the address).

:func:`build_encryptor` gives what a data source needs. Encryptors hold key material and refuse to be
pickled; no message or repr here contains key material or a plaintext.
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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms.cbc_kernel import BLOCK, exclusive_cumsum
from transforms.config import DataSourceConfig
from transforms.crypto import _GCM_KEY_ID, _GCM_NONCE, _check_key_iv, _to_plain_bytes
from transforms.errors import KeyMaterialError
from transforms.secrets import AES_KEY_LENGTHS, RingKey, load_keyring, load_secret

__all__ = ["encrypt_cbc", "encrypt_gcm", "CbcEncryptor", "GcmEncryptor", "build_encryptor"]


def encrypt_cbc(plaintexts: Iterable[str], key: bytes, iv: bytes) -> list[str]:
    """AES-CBC/PKCS#7-encrypt and base64-encode each plaintext (str as UTF-8, or raw bytes).

    Used by :class:`CbcEncryptor` (the export), tests and data generators.  Vectorized across records:
    block k of every record is encrypted in one AES-ECB call.
    """
    key, iv = _check_key_iv(key, iv)
    padded = []
    for value in plaintexts:
        pt = _to_plain_bytes(value)
        n_pad = BLOCK - len(pt) % BLOCK
        padded.append(pt + bytes((n_pad,)) * n_pad)
    if not padded:
        return []
    nblocks = np.fromiter((len(p) >> 4 for p in padded), dtype=np.int64, count=len(padded))
    blocks = np.frombuffer(b"".join(padded), dtype=np.uint64).reshape(-1, 2)
    first = exclusive_cumsum(nblocks)
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
        binascii.b2a_base64(ct[f * BLOCK : (f + b) * BLOCK], newline=False).decode("ascii")
        for f, b in zip(first.tolist(), nblocks.tolist())
    ]


def encrypt_gcm(plaintexts, key: RingKey, nonces: Iterable[bytes] | None = None) -> list[str]:
    """Encrypt each plaintext (str as UTF-8, or bytes) under ``key``: :class:`GcmEncryptor`, tests, generators.

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
