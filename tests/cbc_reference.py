"""Reference AES-CBC/PKCS#7 decryption, one record at a time: the oracle for
:class:`transforms.crypto.CbcDecryptor` (tests) and the baseline of ``scripts/bench_decrypt.py``.

It builds one ``Cipher(...).decryptor()`` and one PKCS#7 unpadder per record, the textbook way, and
must return arrays identical to :func:`transforms.crypto.decrypt_cbc_batch`.  It lives under
``tests/`` rather than ``transforms/`` because no job uses it: the staged package (``MANIFEST.in``
prunes ``tests/``) never carries it, and the production module keeps only what the pipelines run.
It shares the batch decryptor's input handling and key checks (so both have the same contract), not
its decoding, chaining or unpadding (so it checks them).
"""
from __future__ import annotations

import binascii

import pyarrow as pa
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from transforms.arrow_utils import plain_array
from transforms.crypto import _check_key_iv, _finish_utf8, _result_arrays, _token_bytes
from transforms.outcomes import Reason

_BLOCK = 16


def _cbc_decrypt_one(token: bytes | None, key: bytes, iv: bytes) -> tuple[str | None, str | None]:
    if token is None:
        return None, Reason.DECRYPT_FAILED
    try:
        ct = binascii.a2b_base64(token, strict_mode=True)
    except (binascii.Error, ValueError):
        return None, Reason.DECRYPT_FAILED
    if not ct or len(ct) % _BLOCK:
        return None, Reason.DECRYPT_FAILED
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(ct) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    try:
        pt = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None, Reason.DECRYPT_FAILED
    return _finish_utf8(pt)


def decrypt_cbc_per_record(tokens, key: bytes, iv: bytes) -> tuple[pa.StringArray, pa.StringArray]:
    """Reference implementation: one ``Cipher(...).decryptor()`` and one PKCS#7 unpadder per record.

    Same contract as :func:`transforms.crypto.decrypt_cbc_batch` (which must return identical arrays); slow.
    """
    key, iv = _check_key_iv(key, iv)
    plains, reasons = [], []
    for token in _token_bytes(plain_array(tokens, text="raw")):
        plain, reason = _cbc_decrypt_one(token, key, iv)
        plains.append(plain)
        reasons.append(reason)
    return _result_arrays(plains, reasons)
