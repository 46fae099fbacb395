"""Mismatch diagnosis, the findings: what each data source's probes found, as the report's
``diagnosis`` list -- ``{"kind", "suggestion", "would_match", "sampled", "message"}`` per finding,
most lines first, none under 1% of the sample. Messages name counts, config fields and profile
column names; never a record's value, a key or an IV. :func:`assemble` runs in the pipeline;
:func:`in_context` when the report is built, with the data source's counts (a change of column that
would lose more matching lines than it explains is a partial explanation, not a suggestion).
"""
from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.config import DataSourceConfig, JobConfig
from transforms.diagnosis_plan import UNREADABLE_BASE64
from transforms.diagnosis_sample import sampled_from
from transforms.normalize import AS_IS, DEFAULT_DIGEST, PROFILES

MIN_SHARE = 0.01  # a finding must explain at least this share of the sample (and at least one line)
MIN_DISTINCT = 3  # and a profile form's finding, lines holding at least this many distinct values
MAX_FINDINGS = 10
# Preference between findings that explain exactly the same lines (adobe and meta rules give the
# same email keys, say): the fewest changed fields, then this order of kinds, then of values.
KIND_ORDER = ("digest", "normalization", "column", "algorithm", "case", "leading_zeros", "id_type", "line_break",
              "token_encoding", "channel", "region", "key_encoding", "iv_encoding", "embedded_iv", "iv", "key", "key_or_iv",
              "key_id")
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
             decryption: list, rejected: np.ndarray | None = None, values: pa.Array | None = None,
             kept: dict | None = None) -> list[dict]:
    """The findings of one data source. ``probed``: ``(kind, suggestion) -> sample rows it explains``
    (rows are unique and sorted);
    ``decryption``: :class:`~transforms.diagnosis_plaintext.CryptoFinding` items (every one about
    tokens that failed); ``rejected``: the sample rows of rejected IDs (the others matched no
    profile). Each finding says how many of its lines were rejected IDs (``rejected``): a run that
    fails on invalid IDs names only a finding that explains some. ``values``: the sampled lines' values;
    a probe's lines must hold at least MIN_DISTINCT (and the threshold's) distinct ones: a placeholder
    ('0', 'unknown') on many lines, found in a column most profiles share, is no evidence. ``kept``:
    ``(kind, suggestion) -> (profile keys the change keeps, profile keys)`` of normalization changes,
    as the finding's ``keys_kept`` share (0: the change would lose every line matching now)."""
    least = threshold(sampled)
    rejected = np.zeros(0, np.int64) if rejected is None else rejected
    found, covered = [], np.zeros(0, np.int64)
    # Most lines first; a finding is kept only if it explains enough lines the kept ones do not (uid2
    # rules explain the non-gmail part of what adobe rules explain: one finding, not two).
    for (kind, suggestion), rows in sorted(probed.items(), key=lambda kv: (-len(kv[1]), preference(*kv[0]))):
        enough = len(rows) >= least and len(np.setdiff1d(rows, covered)) >= least
        if enough and _distinct(values, rows) >= max(least, MIN_DISTINCT):
            same, keyed = (kept or {}).get((kind, suggestion), (0, 0))
            share = {"keys_kept": round(int(same) / int(keyed), 4)} if keyed else {}
            found.append((kind, suggestion, len(rows), len(np.intersect1d(rows, rejected)),
                          describe(ds, cfg, kind, suggestion), share))
            covered = np.union1d(covered, rows)
    found += [(f.kind, f.suggestion, f.would_match, f.would_match, f.message, {}) for f in decryption if f.would_match >= least]
    found.sort(key=lambda f: (-f[2], preference(f[0], f[1])))
    return [
        {"kind": kind, "suggestion": {} if _no_setting(suggestion) else _changed(ds, cfg, suggestion),
         "would_match": n, "rejected": of_rejected,
         "sampled": sampled, **share, "message": f"{n:,} of {sampled:,} sampled lines without a match {message}"}
        for kind, suggestion, n, of_rejected, message, share in found[:MAX_FINDINGS]
    ]


def _no_setting(suggestion: tuple) -> bool:
    """Whether a finding is of digests no setting reads: in url-safe or unpadded base64, or of values
    hashed with a line break (the partner must change what it sends)."""
    change = dict(suggestion)
    return change.get("digest") == UNREADABLE_BASE64 or bool(change.get("line_break"))


def _distinct(values: pa.Array | None, rows: np.ndarray) -> int:
    """The distinct values of the sample rows ``rows`` (their number when the values are not given)."""
    return len(rows) if values is None else len(pc.unique(values.take(pa.array(rows))))


def _changed(ds: DataSourceConfig, cfg: JobConfig, suggestion: tuple) -> dict:
    """The suggestion without the fields that already have its value (``match_on: email`` beside
    ``profiles.email: work_email`` on a data source matching on email)."""
    def current(field: str):
        section, _, name = field.rpartition(".")
        where = cfg.profiles if section == "profiles" else getattr(ds, section, None) if section else ds
        return getattr(where, name, None)
    kept = {field: value for field, value in suggestion if value is None or current(field) != value}
    return kept or dict(suggestion)


def _job_wide(ds: DataSourceConfig, cfg: JobConfig, fields) -> str:
    """For a change of a ``profiles.*`` column (the extract's roles are the job's, not the data
    source's): that it applies to every data source, naming the others that use it."""
    roles = [field.split(".", 1)[1] for field in fields if field.startswith("profiles.")]
    if not roles:
        return ""
    users = [other.name for other in cfg.data_sources if other.name != ds.name and any(
        (other.id_type == "visitor") if role == "visitor_ids" else (other.match_on == role) for role in roles)]
    named = " and ".join(f"profiles.{role}" for role in roles)
    also = f": also {', '.join(repr(u) for u in users)}, which {'uses' if len(users) == 1 else 'use'} it" if users else ""
    return f"{named} {'applies' if len(roles) == 1 else 'apply'} to every data source{also}"


def in_context(ds: DataSourceConfig, cfg: JobConfig, findings: list[dict], entry: dict) -> list[dict]:
    """The findings as the run's counts and the job read them (``entry``: the data source's report
    entry). A change of a ``profiles.*`` column says it applies to every data source. A change that
    would lose the lines matching now (:func:`_loses_matches`) -- of the column a data source matches
    on, of a hashed source's digest encoding or algorithm (the lines matching now would be
    invalid_hash), of an encrypted source's key or IV (the lines matching now decrypted under them),
    or a normalization under which no profile keeps its key -- when the source already
    reconciles more lines than the change would explain, is a partial explanation, not a change to
    make (suggestion ``{}``): its lines hold another column's values, or are hashed or normalized
    another way. When it explains more, it stays the change, and says the lines it would lose: applied
    as if it were the whole story, they were dropped (under the ratios) with exit 0. Lines explained
    are estimated from the sample and the lines it was drawn from
    (:func:`~transforms.diagnosis_sample.sampled_from`: not the rejections no setting explains)."""
    without_match = sampled_from(entry)
    out = []
    for finding in findings:
        change = finding["suggestion"]
        job_wide = _job_wide(ds, cfg, change)
        sampled = max(1, int(finding["sampled"]))
        explained = int(finding["would_match"]) * max(without_match, sampled) / sampled
        loses = _loses_matches(ds, cfg, finding)
        matching = entry["reconciled"]
        if loses and matching > explained:
            how, what = loses
            finding = {**finding, "suggestion": {}, "message": (
                f"{finding['message']}: a partial explanation, not a change to make. The data source already matches "
                f"{matching:,} lines {how}; {what} would lose those{f' ({job_wide})' if job_wide else ''}")}
        elif loses and matching:
            # Another column may hold the values of the lines matching now too (a copy of it): not sure.
            but = (", unless the other column holds their values too" if _changes_column(change)
                   else ": the partner encrypts under two; ask it for one" if _changes_secret(ds, change)
                   else ": the partner sends lines of both kinds; ask it for one")
            finding = {**finding, "message": (
                f"{finding['message']}{f'; {job_wide}' if job_wide else ''}. Applied, the change would also lose the "
                f"{matching:,} lines matching now {loses[0]}{but}")}
        elif job_wide:
            finding = {**finding, "message": f"{finding['message']}; {job_wide}"}
        out.append(finding)
    return out


def _loses_matches(ds: DataSourceConfig, cfg: JobConfig, finding: dict) -> tuple[str, str] | None:
    """Why a finding's change would lose every line that matches now, or None when it may keep them:
    how those lines match (after "already matches N lines") and what the finding's lines are instead
    (before "would lose those")."""
    change = finding["suggestion"]
    if _changes_column(change):
        current = cfg.profiles.column_for(ds.match_on) if ds.match_on else cfg.profiles.visitor_ids
        return f"on its current column ('{current}')", "these lines hold another column's values, and changing the column"
    if _changes_secret(ds, change):
        return "under its configured key and IV", "these lines are encrypted under another key or IV, and the change"
    if _rehashes(ds, change):
        return (f"as configured ({ds.digest_encoding} {_ALGORITHM_NAMES[ds.hash_algorithm]})",
                "these lines are hashed another way, and the change")
    if finding.get("keys_kept") == 0:
        return (f"under {ds.normalization} rules",
                "these lines are normalized another way, under which no profile keeps its key, and the change")
    return None


def _changes_column(change: dict) -> bool:
    return any(f == "match_on" or f.startswith("profiles.") for f in change)


# The AES-CBC settings a finding says are wrong (or read wrong): lines that match decrypted under them as they are.
_SECRETS = ("encryption.key", "encryption.iv", "encryption.key_encoding", "encryption.iv_encoding")


def _changes_secret(ds: DataSourceConfig, change: dict) -> bool:
    """Whether a change is of an AES-CBC source's key or IV, or how they are read: a line matching a
    profile was decrypted under them as configured (a wrong IV or key turns no address into a profile's),
    so the finding's lines are under another key or IV (a second system of the partner's)."""
    return ds.decrypts and any(field in _SECRETS for field in change)


def _rehashes(ds: DataSourceConfig, change: dict) -> bool:
    """Whether a change reads a hashed source's digests in another encoding or algorithm (a new
    normalization brings its own default encoding): every digest read now would be invalid_hash."""
    if ds.declared != "hashed" or ds.id_type == "visitor":
        return False
    encoding = change.get("digest") or ds.digest or DEFAULT_DIGEST[change.get("normalization", ds.normalization)]
    return encoding != ds.digest_encoding or change.get("hash_algorithm", ds.hash_algorithm) != ds.hash_algorithm


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
        return f"decrypt to {noun(ds.key_kind)} found in the profile column '{column}'"
    return f"match the profile column '{column}'{folded}"


def _column_named(cfg: JobConfig, change: dict) -> str:
    """The extract column a ``match_on`` change points at."""
    for role in ("email", "phone"):
        if f"profiles.{role}" in change:
            return change[f"profiles.{role}"]
    return cfg.profiles.column_for(change["match_on"]) if "match_on" in change else ""


def noun(kind: str) -> str:
    return {"email": "email addresses", "phone": "phone numbers"}.get(kind, "values")


def _describe_digests(ds: DataSourceConfig, cfg: JobConfig, change: dict) -> str:
    algorithm = _ALGORITHM_NAMES[change.get("hash_algorithm", ds.hash_algorithm)]
    encoding = change.get("digest")
    normalization = change.get("normalization", ds.normalization)
    column = cfg.profiles.column_for(ds.match_on)
    what = f"profile {noun(ds.key_kind)} ('{column}')"
    if "match_as" in change:
        what = f"the profile column '{column}' ({noun(change['match_as'])})"
    if "match_on" in change:
        target = change.get("profiles.email") or change.get("profiles.phone") or cfg.profiles.column_for(change["match_on"])
        what = f"the profile column '{target}' ({noun(change.get('match_as') or change['match_on'])})"
    how = ("exactly as stored (not trimmed or lower-cased)" if normalization == AS_IS
           else f"normalized under {normalization} rules")
    encoded = f"{encoding}-encoded " if "digest" in change else ""
    extra = f" (not {_ALGORITHM_NAMES[ds.hash_algorithm]})" if "hash_algorithm" in change else ""
    described = f"are {encoded}{algorithm} digests{extra} of {what} {how}"
    if change.get("line_break"):  # the other fields are still to set once the partner hashes the value alone
        then = ", ".join(f"{field}: {value}" for field, value in change.items() if field != "line_break")
        return (f"{described}, with a line break after each value (hashed as `echo` prints it): no setting reads "
                f"them; ask the partner to hash the value alone{f', then set {then}' if then else ''}")
    if encoding == UNREADABLE_BASE64:
        then = "" if ds.digest_encoding == "base64" else ", then set digest: base64"
        return (f"{described}: no setting reads them; ask the partner for standard base64 ('+' and '/', with its '=' "
                f"padding){then}")
    return described
