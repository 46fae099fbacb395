"""Reconciliation keys: turn dump IDs and profile fields into comparable join keys.

Pure functions over Arrow tables, one rule per data source kind:

==================  =====================================  =======================================
data source         dump side                               profile side
==================  =====================================  =======================================
visitor             the 38-digit ID                         each of the profile's visitor IDs
declared plain      the ID as is (no ``:``)                 the ``match_on`` value as is
declared hashed     the digest, canonical form              normalize + SHA-256 of ``match_on``
declared encrypted  decrypt, then normalize (email/sms)     normalize ``match_on``
  (channel other)   the token as is                         the ``match_on`` value as is
==================  =====================================  =======================================
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import normalize
from transforms.arrow_utils import NAME, constant, explode_list
from transforms.config import DataSourceConfig, JobConfig
from transforms.dumps import rejected_table
from transforms.profiles import KEY_PREFIX

KEYED_SCHEMA = pa.schema(
    [
        ("data_source", NAME),
        ("source_file", NAME),
        ("line", pa.int64()),
        ("key", pa.string()),
        ("segments", pa.list_(pa.string())),
        ("removed", pa.list_(pa.string())),  # applied by incremental (iter) syncs only; else empty
        ("address", pa.string()),  # decrypted, normalized address (file audience); null otherwise
    ]
)
PROFILE_KEY_SCHEMA = pa.schema([("data_source", NAME), ("key", pa.string()), ("profile_id", pa.string())])

INVALID_VISITOR_ID = "invalid_visitor_id"
INVALID_DECLARED_ID = "invalid_declared_id"
INVALID_PLAINTEXT = "invalid_plaintext"
_VISITOR_ID = r"^[0-9]{38}$"


def _mask(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _plain_key_reasons(ids: pa.Array) -> np.ndarray:
    """Declared IDs used as they are: non-empty, and no ':' (the platform forbids it in a DPUUID)."""
    ids = pc.fill_null(ids, "")
    bad = _mask(pc.equal(pc.utf8_length(ids), 0)) | _mask(pc.match_substring(ids, ":"))
    return np.where(bad, INVALID_DECLARED_ID, None)


def build_decryptor(ds: DataSourceConfig, run_date: datetime | None):
    """The decryptor a data source needs (None when its IDs are not decrypted). Reads key material:
    call it in ``DoFn.setup()`` on the worker, never at pipeline construction."""
    if not ds.decrypts:
        return None
    from transforms import crypto

    enc = ds.encryption
    if enc.algorithm == "aes-cbc":
        key = crypto.load_secret(enc.key, enc.key_encoding)
        iv = crypto.load_secret(enc.iv, enc.iv_encoding, lengths=(16,))
        return crypto.CbcDecryptor(key, iv)
    if run_date is None:
        raise ValueError(f"data source '{ds.name}': aes-gcm needs the run date (the key ring's clock)")
    return crypto.GcmDecryptor(crypto.load_keyring(enc.keyring), run_date)


def dump_keys(parsed: pa.Table, ds: DataSourceConfig, decryptor=None) -> tuple[pa.Table, pa.Table]:
    """Join keys for parsed dump lines: returns (keyed lines, rejected lines)."""
    ids = parsed["id"].combine_chunks() if isinstance(parsed["id"], pa.ChunkedArray) else parsed["id"]
    address = pa.nulls(len(ids), pa.string())
    if ds.id_type == "visitor":
        keys = ids
        reasons = np.where(_mask(pc.match_substring_regex(pc.fill_null(ids, ""), _VISITOR_ID)), None, INVALID_VISITOR_ID)
    elif ds.declared == "hashed":
        keys, reason_arr = normalize.canonical_digests(ids, ds.digest_encoding)
        reasons = np.array(reason_arr.to_pylist(), dtype=object) if reason_arr.null_count < len(reason_arr) else np.full(len(ids), None, dtype=object)
    elif ds.decrypts:
        plain, dec_reasons = decryptor.decrypt(ids)
        keys, norm_reasons = normalize.normalize_keys(plain, ds.key_kind, ds.normalization)
        reasons = np.array(dec_reasons.to_pylist(), dtype=object)
        failed_norm = (reasons == None) & _mask(pc.is_valid(norm_reasons))  # noqa: E711
        reasons[failed_norm] = INVALID_PLAINTEXT
        address = keys
    else:  # declared plain, or encrypted with channel 'other' (the token is the key)
        keys = ids
        reasons = _plain_key_reasons(ids)
    good = pa.array(reasons == None)  # noqa: E711
    keyed = pa.table(
        {
            "data_source": parsed["data_source"].filter(good),
            "source_file": parsed["source_file"].filter(good),
            "line": parsed["line"].filter(good),
            "key": keys.filter(good),
            "segments": parsed["segments"].filter(good),
            "removed": parsed["removed"].filter(good),
            "address": address.filter(good),
        },
        schema=KEYED_SCHEMA,
    )
    rejected = rejected_table(ds.name, parsed["source_file"].combine_chunks(), parsed["line"].combine_chunks(), reasons)
    return keyed, rejected


def profile_keys(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig) -> tuple[pa.Table, int]:
    """``(data_source, key, profile_id)`` rows for one data source, and the number of profile
    values that could not give a key (null, or invalid once normalized)."""
    if ds.id_type == "visitor":
        exploded = explode_list(profiles.select(["profile_id", "visitor_ids"]), "visitor_ids", "key")
        trimmed = pc.utf8_trim_whitespace(exploded["key"])
        valid = pc.fill_null(pc.match_substring_regex(trimmed, _VISITOR_ID), False)
        invalid = int(pc.sum(pc.invert(valid)).as_py() or 0)
        keys, ids = pc.filter(trimmed, valid), pc.filter(exploded["profile_id"], valid)
    else:
        values = profiles[KEY_PREFIX + cfg.profiles.column_for(ds.match_on)]
        if ds.declared == "hashed":
            keys, reasons = normalize.normalize_and_hash(values, ds.key_kind, ds.normalization, ds.digest_encoding)
        elif ds.decrypts:
            keys, reasons = normalize.normalize_keys(values, ds.key_kind, ds.normalization)
        else:
            keys = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
            reasons = pa.array(_plain_key_reasons(keys), pa.string())
        ok = pc.is_null(reasons)
        invalid = int(pc.sum(pc.invert(ok)).as_py() or 0)
        keys, ids = pc.filter(keys, ok), pc.filter(profiles["profile_id"], ok)
    table = pa.table(
        {"data_source": constant(ds.name, len(keys)), "key": keys, "profile_id": ids},
        schema=PROFILE_KEY_SCHEMA,
    )
    return table, invalid
