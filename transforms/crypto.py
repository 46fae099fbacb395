"""AES for declared IDs: decryption on import, encryption on export (reference: shared/reference/
formats.md, section 5).

Two schemes:

* **AES-CBC + PKCS#7** (128/192/256-bit key, one fixed IV per data source) -- the scheme the marketing
  platform supports.  Tokens are base64 strings.  :class:`CbcDecryptor` decrypts an Arrow string array
  in slices of ``_CHUNK_ROWS`` rows (sized so the intermediates stay in cache) with the vectorized
  kernel of :mod:`transforms.cbc_kernel`: per slice, all tokens are base64-decoded by one C call, all
  ciphertext blocks go through ONE AES-ECB ``update()``, and the CBC chaining, PKCS#7
  validation/stripping and the UTF-8 check are numpy; only odd rows (malformed base64, non-ASCII
  plaintexts) take a per-row path.  ``tests/cbc_reference.py`` holds the plain
  one-``Cipher``-per-record reference, used as the oracle in tests and as the benchmark baseline; the
  two return identical arrays.  Base64 is standard-alphabet and padded, with the semantics of
  ``binascii.a2b_base64(strict_mode=True)``; anything it rejects is ``DECRYPT_FAILED``.

* **AES-256-GCM with a key ring** (rotation): ``token = base64(key_id u32 BE | nonce 12 | ct | tag 16)``,
  no associated data.  :class:`GcmDecryptor` returns a status per record and never raises per record.

The export encrypts with the same schemes (:mod:`transforms.encrypt`); :func:`build_decryptor` gives
what a data source needs.

Every decrypt function returns ``(plaintexts, reasons)``: two ``pa.StringArray`` of the input's length;
a plaintext is null exactly where the reason is not, and the reason is one of the constants below.

Key material comes from :mod:`transforms.secrets` (:func:`~transforms.secrets.load_secret`,
:func:`~transforms.secrets.load_keyring`).  No exception message, log line or repr in this module
contains key material or a plaintext; :class:`KeyMaterialError` names the problem only.
"""

from __future__ import annotations

import binascii
from datetime import datetime

import numpy as np
import pyarrow as pa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from transforms import cbc_kernel
from transforms.arrow_utils import plain_array
from transforms.cbc_kernel import BLOCK, V16
from transforms.config import DataSourceConfig
from transforms.errors import KeyMaterialError
from transforms.reasons import Reason
from transforms.secrets import AES_KEY_LENGTHS, RingKey, is_aware, load_keyring, load_secret

__all__ = [
    "REASONS",
    "decrypt_cbc_batch",
    "CbcDecryptor",
    "GcmDecryptor",
    "build_decryptor",
]

# --------------------------------------------------------------------------------------------------
# Reason codes
# --------------------------------------------------------------------------------------------------
# (transforms.outcomes.Reason) decrypt_failed: bad base64, bad length, bad PKCS#7 padding, GCM tag
# failure, too short; unknown_key: GCM key id not in the key ring; expired_key: run clock >= the key's
# expires; key_not_active: run clock < its activates; invalid_plaintext: decrypted bytes are empty or
# not valid UTF-8.
REASONS = (Reason.DECRYPT_FAILED, Reason.UNKNOWN_KEY, Reason.EXPIRED_KEY, Reason.KEY_NOT_ACTIVE, Reason.INVALID_PLAINTEXT)

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
    if len(iv) != BLOCK:
        raise KeyMaterialError(f"CBC IV must be 16 bytes, got {len(iv)}")
    return key, iv


# --------------------------------------------------------------------------------------------------
# Arrow helpers
# --------------------------------------------------------------------------------------------------
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
        self._iv_block = np.frombuffer(iv, dtype=V16)[0]
        self._prevalidate = False  # see _decrypt_chunk: check base64 before the bulk decode

    def __repr__(self) -> str:
        return f"CbcDecryptor(aes_{self._key_bits})"

    def __reduce_ex__(self, protocol):
        raise TypeError("CbcDecryptor holds key material and cannot be pickled; build it in DoFn.setup()")

    def decrypt(self, tokens) -> tuple[pa.StringArray, pa.StringArray]:
        arr = plain_array(tokens, text="raw")
        n = len(arr)
        if n <= _CHUNK_ROWS:
            return self._decrypt_chunk(arr)
        parts = [self._decrypt_chunk(arr.slice(i, _CHUNK_ROWS)) for i in range(0, n, _CHUNK_ROWS)]
        return (
            pa.concat_arrays([plain for plain, _ in parts]),
            pa.concat_arrays([reason for _, reason in parts]),
        )

    def _decrypt_chunk(self, arr: pa.Array) -> tuple[pa.StringArray, pa.StringArray]:
        """One slice through the kernel's four phases (see :mod:`transforms.cbc_kernel`)."""
        if len(arr) == 0:
            return pa.array([], type=pa.string()), pa.array([], type=pa.string())
        # After a slice with non-alphabet rows, the next slice's base64 is checked before the bulk
        # decode (a performance hint only: results never depend on it).
        ciphertexts = cbc_kernel.decode_base64(cbc_kernel.token_rows(arr), validate_first=self._prevalidate)
        self._prevalidate = ciphertexts.odd_rows
        blocks = cbc_kernel.decrypt_blocks(ciphertexts, self._cipher, self._iv_block)
        plaintexts = cbc_kernel.check_utf8(cbc_kernel.strip_pkcs7(blocks, len(arr)))
        return cbc_kernel.result_arrays(plaintexts)


def decrypt_cbc_batch(tokens, key: bytes, iv: bytes) -> tuple[pa.StringArray, pa.StringArray]:
    """Decrypt base64 AES-CBC/PKCS#7 tokens in bulk; see :class:`CbcDecryptor`.

    Returns ``(plaintexts, reasons)`` of the input's length: plaintext null where the record failed,
    reason null where it succeeded.  A null token gives a null plaintext and ``DECRYPT_FAILED``.
    """
    return CbcDecryptor(key, iv).decrypt(tokens)


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

    @property
    def key_ids(self) -> set[int]:
        return set(self._keys)

    def decrypt(self, tokens) -> tuple[pa.StringArray, pa.StringArray]:
        plains, reasons = [], []
        for pt, reason in map(self._open, _token_bytes(plain_array(tokens, text="raw"))):
            plain, reason = (None, reason) if reason is not None else _finish_utf8(pt)
            plains.append(plain)
            reasons.append(reason)
        return _result_arrays(plains, reasons)

    def plaintexts(self, tokens) -> list[bytes | None]:
        """Each token's decrypted bytes, not read as text (the diagnosis reads another charset)."""
        return [self._open(token)[0] for token in _token_bytes(plain_array(tokens, text="raw"))]

    def _open(self, token: bytes | None) -> tuple[bytes | None, str | None]:
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
        return pt, None


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
