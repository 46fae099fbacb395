"""Mismatch diagnosis, the findings: what each data source's probes found, as the report's
``diagnosis`` list -- ``{"kind", "suggestion", "would_match", "sampled", "message"}`` per finding,
most lines first, none under 1% of the sample. Messages name counts, config fields and profile
column names; never a record's value, a key or an IV.
"""
from __future__ import annotations

import math

import numpy as np

from transforms.config import DataSourceConfig, JobConfig
from transforms.normalize import AS_IS, PROFILES

MIN_SHARE = 0.01  # a finding must explain at least this share of the sample (and at least one line)
MAX_FINDINGS = 10
# Preference between findings that explain exactly the same lines (adobe and meta rules give the
# same email keys, say): the fewest changed fields, then this order of kinds, then of values.
KIND_ORDER = ("digest", "normalization", "column", "algorithm", "case", "leading_zeros", "id_type",
              "token_encoding", "key_encoding", "iv_encoding", "embedded_iv", "iv", "key", "key_or_iv", "key_id")
_VALUE_ORDER = {name: i for i, name in enumerate((*PROFILES, AS_IS, "hex", "base64", "email", "phone"))}
_ALGORITHM_NAMES = {"sha256": "SHA-256", "sha1": "SHA-1", "md5": "MD5", "sha512": "SHA-512"}


def threshold(sampled: int) -> int:
    return max(1, math.ceil(MIN_SHARE * sampled))


def preference(kind: str, suggestion: tuple) -> tuple:
    """Sort key among findings explaining the same lines: the fewest changed fields, then KIND_ORDER, then values."""
    values = tuple((field, _VALUE_ORDER.get(value, len(_VALUE_ORDER)) if isinstance(value, str) else -1, str(value))
                   for field, value in suggestion)
    return len(suggestion), KIND_ORDER.index(kind), values


def assemble(ds: DataSourceConfig, cfg: JobConfig, sampled: int, probed: dict[tuple, np.ndarray],
             decryption: list) -> list[dict]:
    """The findings of one data source. ``probed``: ``(kind, suggestion) -> sample rows it explains``
    (rows are unique and sorted);
    ``decryption``: :class:`~transforms.diagnosis_crypto.CryptoFinding` items."""
    least = threshold(sampled)
    found, covered = [], np.zeros(0, np.int64)
    # Most lines first; a finding is kept only if it explains enough lines the kept ones do not (uid2
    # rules explain the non-gmail part of what adobe rules explain: one finding, not two).
    for (kind, suggestion), rows in sorted(probed.items(), key=lambda kv: (-len(kv[1]), preference(*kv[0]))):
        if len(rows) >= least and len(np.setdiff1d(rows, covered)) >= least:
            found.append((kind, suggestion, len(rows), describe(ds, cfg, kind, suggestion)))
            covered = np.union1d(covered, rows)
    found += [(f.kind, f.suggestion, f.would_match, f.message) for f in decryption if f.would_match >= least]
    found.sort(key=lambda f: (-f[2], preference(f[0], f[1])))
    return [
        {"kind": kind, "suggestion": dict(suggestion), "would_match": n, "sampled": sampled,
         "message": f"{n:,} of {sampled:,} sampled lines without a match {message}"}
        for kind, suggestion, n, message in found[:MAX_FINDINGS]
    ]


def describe(ds: DataSourceConfig, cfg: JobConfig, kind: str, suggestion: tuple) -> str:
    """What a probe's finding says about the lines it explains (after "N of M sampled lines without a match")."""
    change = dict(suggestion)
    if ds.declared == "hashed":
        return _describe_digests(ds, cfg, change)
    column = change.get("profiles.visitor_ids") or _column_named(cfg, change)
    folded = " once trimmed and lower-cased" if change.get("ignore_case") else ""
    if kind == "leading_zeros":
        return ("are visitor IDs that lost their leading zeros (all digits, fewer than 38: stored as a number "
                "upstream); restore_leading_zeros pads them")
    if kind == "id_type":
        return f"are values of the profile column '{column}': declared IDs, not visitor IDs"
    if "profiles.visitor_ids" in change:
        padded = " once zero-padded to 38 digits" if change.get("restore_leading_zeros") else ""
        return f"are visitor IDs of the profile column '{column}'{padded}"
    if kind == "case":
        return f"match the profile column '{cfg.profiles.column_for(ds.match_on)}' once both are trimmed and lower-cased"
    if ds.decrypts:
        return f"decrypt to {_noun(ds.key_kind)} found in the profile column '{column}'"
    return f"match the profile column '{column}'{folded}"


def _column_named(cfg: JobConfig, change: dict) -> str:
    """The extract column a ``match_on`` change points at."""
    for role in ("email", "phone"):
        if f"profiles.{role}" in change:
            return change[f"profiles.{role}"]
    return cfg.profiles.column_for(change["match_on"]) if "match_on" in change else ""


def _noun(kind: str) -> str:
    return {"email": "email addresses", "phone": "phone numbers"}.get(kind, "values")


def _describe_digests(ds: DataSourceConfig, cfg: JobConfig, change: dict) -> str:
    algorithm = _ALGORITHM_NAMES[change.get("hash_algorithm", ds.hash_algorithm)]
    encoding = change.get("digest")
    normalization = change.get("normalization", ds.normalization)
    column = cfg.profiles.column_for(ds.match_on)
    what = f"profile {_noun(ds.key_kind)} ('{column}')"
    if "match_on" in change:
        target = change.get("profiles.email") or change.get("profiles.phone") or cfg.profiles.column_for(change["match_on"])
        what = f"the profile column '{target}' ({_noun(change['match_on']) if change['match_on'] in ('email', 'phone') else 'values'})"
    how = ("exactly as stored (not trimmed or lower-cased)" if normalization == AS_IS
           else f"normalized under {normalization} rules")
    encoded = f"{encoding}-encoded " if "digest" in change else ""
    extra = f" (not {_ALGORITHM_NAMES[ds.hash_algorithm]})" if "hash_algorithm" in change else ""
    return f"are {encoded}{algorithm} digests{extra} of {what} {how}"
