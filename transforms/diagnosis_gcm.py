"""Mismatch diagnosis of AES-GCM key-ring data sources: failures grouped by the key id in front of each
token, with their reason (an expired key, a tag that does not verify under that key); tokens whose
key id the ring lacks are counted, their id never printed (readable text, a few repeated ids, or
first bytes that vary). Before those, the AES-CBC findings that are no key's: tokens in another
base64 (in quotes, url-safe, ...) and plaintexts in Latin-1, read with the ring's keys. The AES-CBC
findings: :mod:`transforms.diagnosis_crypto`; the plaintexts' forms, and what a finding is:
:mod:`transforms.diagnosis_plaintext`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import cbc_kernel
from transforms.config import DataSourceConfig
from transforms.crypto import GcmDecryptor
from transforms.diagnosis_crypto import KEY_RING, sampled_text, token_encoding
from transforms.diagnosis_plaintext import (CryptoFinding, addresses, national_numbers, other_channel, other_charset,
                                            unencrypted, uri_scheme)
from transforms.reasons import Reason

_GCM_WHY = {
    Reason.UNKNOWN_KEY: "which the key ring does not have",
    Reason.EXPIRED_KEY: "which had expired on the run date",
    Reason.KEY_NOT_ACTIVE: "which was not yet active on the run date",
    Reason.DECRYPT_FAILED: "whose tag does not verify under that key: its secret in the ring is wrong",
}


def gcm_findings(ds: DataSourceConfig, sample: pa.Table, ring: GcmDecryptor, region: str | None) -> list[CryptoFinding]:
    """Tokens in another base64, Latin-1 or URI-scheme plaintexts (:func:`_not_the_keys`), then AES-GCM
    failures grouped by key id and reason (the key id is the token's first 4 bytes). Only the ids of ``ring``
    (the configured key ring, on the run's clock) are ever named: the 4 bytes of a token the ring
    does not know may be anything the partner sent -- the first 4 letters of an address sent as base64
    of the plaintext. Those tokens are counted: readable text, a few repeated key ids, or prefixes
    that vary (tokens of another scheme, or of no key ring). ``region``: JobConfig.region_for(ds)."""
    rows = _gcm_rows(sample)
    known = np.isin(rows.key_id, np.fromiter(ring.key_ids, np.int64)) & rows.whole & (rows.reason != str(Reason.UNKNOWN_KEY))
    found = _not_the_keys(ds, sample, ring, region)  # tokens that do not decode, plaintexts: none counted below
    for reason in sorted(_GCM_WHY):
        ids, counts = np.unique(rows.key_id[known & (rows.reason == str(reason))], return_counts=True)
        found += [CryptoFinding("key_id", _KEYRING, int(n), f"are encrypted under key id {key_id}, {_GCM_WHY[reason]}")
                  for key_id, n in zip(ids.tolist(), counts.tolist())]
    readable = int((rows.readable & ~known).sum())
    if readable:
        found.append(CryptoFinding("key_id", _KEYRING, readable, "are not key-ring tokens: they decode to readable text "
                                   "(values base64-encoded, not encrypted); check what the partner sends"))
    return found + _unknown_key_ids(rows.key_id[rows.whole & ~known & ~rows.readable])


def _not_the_keys(ds: DataSourceConfig, sample: pa.Table, ring: GcmDecryptor, region: str | None) -> list[CryptoFinding]:
    """The AES-CBC findings that blame no key: tokens that are addresses in clear, or that fail to
    decode as standard base64 and decrypt once read back as such; plaintexts that are not UTF-8 and
    read as Latin-1, that start with a URI scheme (on AES-CBC the IV check names it), that are
    addresses of the other channel, or national phone numbers read in no region."""
    def failed(reason: Reason) -> pa.Array:
        return sampled_text(sample["value"].combine_chunks().filter(pc.equal(sample["reason"], str(reason))))

    plaintexts = ring.plaintexts(failed(Reason.INVALID_PLAINTEXT))
    undecoded = failed(Reason.DECRYPT_FAILED)
    return ((unencrypted(ds, undecoded, region)
             or token_encoding(ds, undecoded, lambda t: addresses(ds, ring.decrypt(t)[0], region), KEY_RING))
            + other_charset(ds, plaintexts, region, KEY_RING) + uri_scheme(ds, plaintexts, region, KEY_RING)
            + (other_channel(ds, plaintexts, region, KEY_RING) or national_numbers(ds, plaintexts, region, KEY_RING)))


_KEYRING = (("encryption.keyring", None),)
_GCM_MIN_TOKEN = 32  # key id, nonce, tag and at least a byte: shorter tokens carry no key id worth naming
# An unknown key id is a finding of its own only when repeated on this many sampled lines, and only
# among the few most frequent ones, and only when such ids carry most of the unknown lines: random
# 4-byte prefixes rarely repeat, a partner's unknown keys are few.
MIN_KEY_ID_LINES = 20
MAX_KEY_IDS = 4


class _GcmRows(NamedTuple):
    reason: np.ndarray  # str per failed token
    key_id: np.ndarray  # int64: its first 4 bytes, big-endian (-1 when shorter)
    whole: np.ndarray  # bool: base64 of at least _GCM_MIN_TOKEN bytes (a key id, a nonce and a tag)
    readable: np.ndarray  # bool: base64 of printable ASCII text (no token of any key ring is)


def _gcm_rows(sample: pa.Table) -> _GcmRows:
    keep = pc.is_in(sample["reason"], value_set=pa.array([str(r) for r in _GCM_WHY]))
    tokens = sample["value"].filter(keep).combine_chunks()
    ct = cbc_kernel.decode_base64(cbc_kernel.token_rows(tokens))
    raw = np.frombuffer(ct.raw, np.uint8)
    whole = ct.length >= _GCM_MIN_TOKEN
    head = raw[ct.start[whole, None] + np.arange(4)].astype(np.int64) if whole.any() else np.zeros((0, 4), np.int64)
    key_id = np.full(len(tokens), -1, np.int64)
    key_id[whole] = head @ np.array([1 << 24, 1 << 16, 1 << 8, 1], np.int64)
    data = raw[np.repeat(ct.start - cbc_kernel.exclusive_cumsum(ct.length), ct.length) + np.arange(ct.length.sum())]
    row = np.repeat(np.arange(len(tokens)), ct.length)
    unreadable = np.bincount(row[(data < 0x20) | (data > 0x7E)], minlength=len(tokens)) > 0
    reasons = sample["reason"].filter(keep).to_numpy(zero_copy_only=False).astype(str)
    return _GcmRows(reasons, key_id, whole, (ct.length > 0) & ~unreadable)


def _unknown_key_ids(key_ids: np.ndarray) -> list[CryptoFinding]:
    """Tokens whose key id the ring lacks, never naming it: one finding per key id repeated on enough
    lines (when such ids carry most of these tokens), one for the rest."""
    if not len(key_ids):
        return []
    counts = np.sort(np.unique(key_ids, return_counts=True)[1])[::-1]
    repeated = counts[:MAX_KEY_IDS][counts[:MAX_KEY_IDS] >= MIN_KEY_ID_LINES]
    if 2 * repeated.sum() < len(key_ids):  # spread: most tokens carry an id that does not repeat
        repeated = repeated[:0]
    found = [CryptoFinding("key_id", _KEYRING, int(n), f"share a key id the key ring does not have (an unknown key id "
                           f"repeated on {n:,} lines); check encryption.keyring") for n in repeated.tolist()]
    rest, distinct = len(key_ids) - int(repeated.sum()), len(counts) - len(repeated)
    if rest:
        found.append(CryptoFinding("key_id", _KEYRING, rest, "carry a key id the key ring does not have" if distinct == 1 else
                                   f"are not key-ring tokens (their first 4 bytes, where the key id belongs, vary: "
                                   f"{distinct:,} different values, none in the key ring)"))
    return found
