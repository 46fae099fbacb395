"""Mismatch diagnosis, the plan: for one data source, how its sampled lines may be seen
(:func:`sample_views`) and which profile forms to try them against, each pair with the config change
it would mean (:func:`probes`).

=================  ========================================  =====================================
data source        sampled lines seen as                     tried against
=================  ========================================  =====================================
declared hashed    digests of each encoding and length       every email/phone column, hashed under
                   (a SHA-1 hex digest is 20 bytes)          every profile (or none), that algorithm
visitor            the IDs; rejected all-digit IDs           the visitor IDs; every other column
                   zero-padded to 38 digits                  (as visitor IDs, or as declared IDs)
declared plain     the IDs, as is and trimmed + lower-cased  the match_on column folded; every
                                                             other column as is and folded
encrypted          the decrypted addresses                   every other column of the channel's
                                                             kind (decrypt failures: diagnosis_crypto)
=================  ========================================  =====================================

A suggestion is a tuple of ``(config field, value)`` pairs: only what differs from the data
source's configuration, applicable as it stands.
"""
from __future__ import annotations

import binascii
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import fixed_width_binary, plain_array, rows_of_width
from transforms.config import DataSourceConfig, JobConfig
from transforms.diagnosis_forms import (
    ADDRESS, DIGEST, DIGEST_ALGORITHMS, FOLDED, RAW, VISITOR, Form, View, extract_column,
)
from transforms.diagnosis_sample import KEPT_IN_FILE_AUDIENCE
from transforms.keys import fold_case, restore_leading_zeros
from transforms.digests import ENCODINGS
from transforms.normalize import AS_IS, DEFAULT_DIGEST, PROFILES
from transforms.reasons import Reason
from transforms.profiles import KEY_PREFIX

Suggestion = tuple[tuple[str, object], ...]


class Probe(NamedTuple):
    """One alternative to try: the profile form, the view of the sample it meets, and what a match
    would mean (the finding's kind and its config change)."""

    form: Form
    view: str
    kind: str
    suggestion: Suggestion


def sample_views(ds: DataSourceConfig, sample: pa.Table) -> dict[str, View]:
    """The ways a data source's sampled lines are looked at, by name (a view without rows is left out)."""
    reasons = plain_array(sample["reason"])
    values = plain_array(sample["value"]) if sample.num_rows else pa.array([], pa.binary())

    def rows_of(*wanted) -> np.ndarray:
        return np.flatnonzero(pc.is_in(reasons, value_set=pa.array(wanted, pa.string())).to_numpy(zero_copy_only=False))

    missed = rows_of(Reason.NO_MATCHING_PROFILE, KEPT_IN_FILE_AUDIENCE)
    rejected = {r: rows_of(r) for r in (Reason.INVALID_HASH, Reason.INVALID_VISITOR_ID)}
    if ds.id_type == "visitor":
        views = {"id": View(missed, _unpack_visitor_ids(values.take(pa.array(missed))))}
        raw = _stripped(values, rejected[Reason.INVALID_VISITOR_ID])
        views["raw"] = raw
        padded = restore_leading_zeros(raw.keys.cast(pa.string())).cast(pa.binary())
        changed = np.asarray([a != b for a, b in zip(raw.keys.to_pylist(), padded.to_pylist())], dtype=bool)
        views["padded"] = View(raw.rows[changed], padded.filter(pa.array(changed)))
    elif ds.declared == "hashed":
        views = _digest_views(ds, values, missed, rejected[Reason.INVALID_HASH])
    else:
        views = {"id": View(missed, values.take(pa.array(missed)))}
        if ds.declared == "plain" and not ds.ignore_case:
            views["folded"] = View(missed, fold_case(views["id"].keys.cast(pa.string())).cast(pa.binary()))
    return {name: view for name, view in views.items() if len(view.rows)}


def _stripped(values: pa.BinaryArray, rows: np.ndarray) -> View:
    keys = [v.strip() for v in values.take(pa.array(rows)).to_pylist()]
    keep = np.asarray([bool(k) for k in keys], dtype=bool)
    return View(rows[keep], pa.array([k for k in keys if k], pa.binary()))


def _unpack_visitor_ids(packed: pa.BinaryArray) -> pa.BinaryArray:
    """Inverse of keys.pack_visitor_ids: 19 bytes -> the 38 ASCII digits."""
    nibbles = rows_of_width(packed, 19)
    digits = np.empty((len(packed), 38), dtype=np.uint8)
    digits[:, 0::2], digits[:, 1::2] = nibbles >> 4, nibbles & 15
    return fixed_width_binary(digits + np.uint8(ord("0")), len(packed), 38)


def _digest_views(ds: DataSourceConfig, values: pa.BinaryArray, missed: np.ndarray, invalid: np.ndarray) -> dict[str, View]:
    """Views named ``encoding:algorithm``. Missed lines are digests of the configured encoding and
    algorithm (the join decoded them); a rejected one is read in each encoding, and the length of
    what it decodes to names the algorithm (only lengths of known digests count)."""
    found: dict[str, list] = {}
    texts = pc.utf8_trim_whitespace(values.take(pa.array(invalid)).cast(pa.string()))
    plausible = pc.is_in(pc.utf8_length(texts), value_set=pa.array(_DIGEST_TEXT_LENGTHS)).to_numpy(zero_copy_only=False)
    for row, text in zip(invalid[plausible].tolist(), texts.filter(pa.array(plausible)).cast(pa.binary()).to_pylist()):
        read = [(encoding, _decode(text, encoding)) for encoding in ENCODINGS]
        if not any(decoded is not None and len(decoded) in DIGEST_ALGORITHMS for _, decoded in read):
            read = [(UNREADABLE_BASE64, _decode_nonstandard(text))]
        for encoding, decoded in read:
            if decoded is not None and len(decoded) in DIGEST_ALGORITHMS:
                entry = found.setdefault(f"{encoding}:{DIGEST_ALGORITHMS[len(decoded)]}", [[], []])
                entry[0].append(row)
                entry[1].append(decoded)
    views = {name: View(np.asarray(r, dtype=np.int64), pa.array(k, pa.binary())) for name, (r, k) in found.items()}
    configured = f"{ds.digest_encoding}:{ds.hash_algorithm}"
    mine = View(missed, values.take(pa.array(missed)))
    if configured in views:  # base64 that decodes but is not canonical: read as it is
        other = views[configured]
        mine = View(np.concatenate([mine.rows, other.rows]), pa.concat_arrays([mine.keys, other.keys]))
    views[configured] = mine
    return views


# The text lengths of known digests in hex, base64, and base64 without its '=' padding (other
# rejected IDs are not looked at).
_DIGEST_TEXT_LENGTHS = sorted({n * 2 for n in DIGEST_ALGORITHMS} | {-(-n // 3) * 4 for n in DIGEST_ALGORITHMS}
                              | {-(-n * 4 // 3) for n in DIGEST_ALGORITHMS})
# The "encoding" of digests written in url-safe base64 ('-', '_') or without their '=' padding (the
# base64url of JWTs and many SDKs): no setting reads them (the join reads standard base64), so a
# finding of them names no change (transforms.diagnosis_findings); the partner must send standard base64.
UNREADABLE_BASE64 = "url-safe or unpadded base64"
_URL_SAFE = bytes.maketrans(b"-_", b"+/")


def _decode(text: bytes, encoding: str) -> bytes | None:
    try:
        return binascii.unhexlify(text) if encoding == "hex" else binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _decode_nonstandard(text: bytes) -> bytes | None:
    """A digest written in url-safe base64 or without its padding, decoded; None for any other text
    (standard base64 with '+' or '/' beside '-' or '_' is no alphabet)."""
    if (b"-" in text or b"_" in text) and (b"+" in text or b"/" in text):
        return None
    return _decode(text.translate(_URL_SAFE) + b"=" * (-len(text) % 4), "base64")


def probes(ds: DataSourceConfig, cfg: JobConfig, views: dict[str, View], kinds: dict[str, str]) -> list[Probe]:
    """Every alternative worth trying for ``ds``, given its views and the profile columns' kinds
    (:func:`transforms.diagnosis_forms.column_kinds`)."""
    if ds.id_type == "visitor":
        found = _visitor_probes(ds, cfg, kinds)
    elif ds.declared == "hashed":
        found = _hashed_probes(ds, cfg, views, kinds)
    elif ds.declared == "plain":
        found = _plain_probes(ds, cfg, kinds)
    else:  # encrypted: decrypted addresses (or, channel other, tokens as plain keys) in another column
        here = _match_column(ds, cfg)
        how, kind = (ADDRESS, ds.key_kind) if ds.decrypts else (RAW, "other")
        region = cfg.profile_region_for(ds) if kind == "phone" else None
        found = [Probe(Form(c, how, kind, ds.normalization if ds.decrypts else None, region=region), "id", "column",
                       _match_on(ds, cfg, c, k))
                 for c, k in kinds.items() if c != here and k != "visitor" and (k == kind or not ds.decrypts)]
    return [p for p in found if p.view in views and p.suggestion]


def _match_column(ds: DataSourceConfig, cfg: JobConfig) -> str:
    return KEY_PREFIX + cfg.profiles.column_for(ds.match_on) if ds.match_on else "visitor_ids"


def _match_on(ds: DataSourceConfig, cfg: JobConfig, column: str, kind: str) -> Suggestion:
    """The change that makes a declared data source match on ``column``: its role name when it is the
    email or phone column (their normalization applies only to roles), else the column itself. A
    column of emails or phones takes the role (``profiles.email``) unless another data source reads
    the role: that field is every data source's, and moving it moved theirs (they then matched
    nothing). This data source's own ``match_on`` then reads it, as emails or phones (a hashed
    source's ``match_as``; an encrypted one's channel says it; a plain one compares as written)."""
    name = extract_column(cfg, column)
    if name in (cfg.profiles.email, cfg.profiles.phone):
        return (("match_on", "email" if name == cfg.profiles.email else "phone"),)
    if kind in ("email", "phone") and not _role_read_by_others(ds, cfg, kind):
        return (("match_on", kind), (f"profiles.{kind}", name))
    if kind in ("email", "phone") and ds.declared == "hashed":
        return (("match_on", name), ("match_as", kind))
    return (("match_on", name),)


def _role_read_by_others(ds: DataSourceConfig, cfg: JobConfig, role: str) -> bool:
    return any(other.name != ds.name and other.id_type == "declared" and other.match_on == role
               for other in cfg.data_sources)


def _read_as(ds: DataSourceConfig, cfg: JobConfig, kind: str, kinds: dict[str, str]) -> Suggestion:
    """The change that reads a hashed source's own match column as the emails or phones it holds:
    ``match_as``, the same keys as the role's; the role itself (``match_on: email``, ``profiles.email``:
    the column) only where the column is the extract's one of that kind and match_as is left out
    (the extract's own email column is the role's, and every data source's)."""
    role = getattr(cfg.profiles, kind)
    if ds.match_as is not None or (role is not None and KEY_PREFIX + role in kinds):
        return (("match_as", kind),)
    return _match_on(ds, cfg, _match_column(ds, cfg), kind)


def _hashed_probes(ds: DataSourceConfig, cfg: JobConfig, views: dict[str, View], kinds: dict[str, str]) -> list[Probe]:
    here = _match_column(ds, cfg)
    # The match column itself too, read as what it holds: 'match_on: e_mail' (the column, not the role)
    # compares its addresses as written, and the platform hashed them normalized.
    columns = [(here, ds.key_kind)] + [(c, k) for c, k in kinds.items()
                                       if k in ("email", "phone") and (c, k) != (here, ds.key_kind)]
    found = []
    for view in views:
        encoding, algorithm = view.split(":")
        for column, kind in columns:
            own = (column, kind) == columns[0]
            kept = ds.normalization if ds.normalization != AS_IS else PROFILES[0]
            normalizations = (*PROFILES, AS_IS) if kind != "other" else (kept, AS_IS)  # 'other': trim, or nothing
            for normalization in normalizations:
                change = (() if own else _read_as(ds, cfg, kind, kinds) if column == here
                          else _match_on(ds, cfg, column, kind))
                if normalization == AS_IS:  # values hashed as stored: how they would be normalized does not apply
                    change = tuple((field, value) for field, value in change if field != "match_as")
                change += _hashing_change(ds, normalization, encoding, algorithm)
                finding = ("algorithm" if algorithm != ds.hash_algorithm else "column" if not own
                           else "normalization" if normalization != ds.normalization else "digest")
                region = cfg.profile_region_for(ds) if kind == "phone" else None
                found.append(Probe(Form(column, DIGEST, kind, normalization, algorithm, region), view, finding, change))
        if encoding != UNREADABLE_BASE64:  # the match column's values, as configured or as stored, with a line break
            column, kind = columns[0]
            region = cfg.profile_region_for(ds) if kind == "phone" else None
            for normalization in dict.fromkeys((ds.normalization, AS_IS)):
                change = _hashing_change(ds, normalization, encoding, algorithm) + (("line_break", True),)
                found.append(Probe(Form(column, DIGEST, kind, normalization, algorithm, region, LINE_BREAK), view,
                                   "line_break", change))
    return found


def _hashing_change(ds: DataSourceConfig, normalization: str, encoding: str, algorithm: str) -> Suggestion:
    """The fields that make a hashed source read digests of ``normalization``, ``encoding`` and ``algorithm``."""
    change = () if normalization == ds.normalization else (("normalization", normalization),)
    if (ds.digest or DEFAULT_DIGEST[normalization]) != encoding:
        change += (("digest", encoding),)
    if algorithm != ds.hash_algorithm:
        change += (("hash_algorithm", algorithm),)
    return change


# Digests of values hashed with a line break after them (`echo $email | sha256sum`): no setting reads
# them, so their finding names no change (transforms.diagnosis_findings); the partner must hash the value alone.
LINE_BREAK = "\n"


def _visitor_probes(ds: DataSourceConfig, cfg: JobConfig, kinds: dict[str, str]) -> list[Probe]:
    found = [Probe(Form("visitor_ids", VISITOR), "padded", "leading_zeros", (("restore_leading_zeros", True),))]
    for column, kind in kinds.items():
        if kind == "visitor":
            continue
        moved = (("profiles.visitor_ids", extract_column(cfg, column)),)
        found += [
            Probe(Form(column, VISITOR), "id", "column", moved),
            Probe(Form(column, VISITOR), "padded", "column", moved + (("restore_leading_zeros", True),)),
            Probe(Form(column, RAW), "raw", "id_type",
                  (("id_type", "declared"), ("declared", "plain")) + _match_on(ds, cfg, column, kind)),
        ]
    return found


def _plain_probes(ds: DataSourceConfig, cfg: JobConfig, kinds: dict[str, str]) -> list[Probe]:
    here = _match_column(ds, cfg)
    folded = () if ds.ignore_case else (("ignore_case", True),)
    found = [Probe(Form(here, FOLDED), "folded", "case", folded)]
    for column, kind in kinds.items():
        if column == here or kind == "visitor":
            continue
        change = _match_on(ds, cfg, column, kind)
        if ds.ignore_case:
            found.append(Probe(Form(column, FOLDED), "id", "column", change))
        else:
            found += [Probe(Form(column, RAW), "id", "column", change),
                      Probe(Form(column, FOLDED), "folded", "column", change + folded)]
    return found
