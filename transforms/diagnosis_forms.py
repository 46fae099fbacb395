"""Mismatch diagnosis, the profile side: a :class:`Form` says how a profile column becomes the keys a
partner may have made its IDs from -- the column normalized under another profile (or not at all),
hashed with another algorithm, trimmed and lower-cased, read as visitor IDs. Keys are computed with
the import's own functions (:mod:`transforms.normalize`, :mod:`transforms.keys`).

The diagnosis looks at profiles twice (see :mod:`transforms.diagnosis`): a *screen* over a fixed
1/16 of them (:func:`screen_rows`, emitted by the profile reader as it reads), which tries every
form; then a full pass for the forms the screen saw match, which gives exact counts.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import normalize
from transforms.arrow_utils import hash64, plain_array
from transforms.config import JobConfig
from transforms.keys import fold_case
from transforms.profiles import KEY_PREFIX, scalar_columns

# The screen reads the profiles whose profile_id hash falls in the lowest 1/SCREEN_SHARE of the
# range: a form that explains n sampled lines shows about n/16 of them there, so one that explains
# more than ~100 lines is missed with a probability under 0.2%.
SCREEN_SHARE = 16
MAX_SCREEN_COLUMNS = 16  # extract columns looked at beyond the id and visitor IDs (a wide extract)

DIGEST, ADDRESS, RAW, FOLDED, VISITOR = "digest", "address", "raw", "folded", "visitor"
DIGEST_ALGORITHMS = {size: name for name, size in normalize.DIGEST_BYTES.items()}  # by digest length in bytes
_VISITOR_ID = r"^[0-9]{38}$"


class Form(NamedTuple):
    """How one column of the standardized profile table becomes probe keys."""

    column: str  # "profile_id", "visitor_ids" or "k:<extract column>"
    how: str  # DIGEST | ADDRESS (normalized) | RAW (as is) | FOLDED (trim + lower) | VISITOR (38-digit IDs)
    kind: str = "other"  # email | phone | other: how DIGEST and ADDRESS normalize
    normalization: str | None = None  # a profile of normalize.PROFILES, or normalize.AS_IS
    algorithm: str | None = None  # DIGEST: one of DIGEST_ALGORITHMS' values


def extract_column(cfg: JobConfig, column: str) -> str:
    """The extract's name for a column of the standardized profile table."""
    if column == "profile_id":
        return cfg.profiles.id
    if column == "visitor_ids":
        return cfg.profiles.visitor_ids or column
    return column.removeprefix(KEY_PREFIX)


def screen_columns(cfg: JobConfig, path: str) -> list[str]:
    """The extract columns the screen carries besides the job's own: its scalar columns (the email
    and phone columns first), at most MAX_SCREEN_COLUMNS. Reads the extract's header or footer."""
    p = cfg.profiles
    present = scalar_columns(path, p.resolved_format)
    roles = [c for c in (p.email, p.phone) if c and c in present]
    others = [c for c in present if c not in roles and c not in (p.id, p.visitor_ids, p.opt_out)]
    return (roles + others)[:MAX_SCREEN_COLUMNS]


def screen_rows(profiles: pa.Table) -> pa.Table:
    """The screen's share of a standardized profile batch (a compact copy; no opt-out column)."""
    keep = hash64(profiles["profile_id"]) < np.uint64(2**64 // SCREEN_SHARE)
    table = profiles.drop_columns([c for c in ("opt_out",) if c in profiles.column_names])
    return table.take(pa.array(np.flatnonzero(keep)))


def column_kinds(profiles: pa.Table, cfg: JobConfig) -> dict[str, str]:
    """What each column of a standardized profile table holds: ``visitor`` (the visitor-ID lists),
    ``email`` / ``phone`` (the role columns, and columns where most values are valid emails or
    phones), else ``other``."""
    p = cfg.profiles
    kinds = {"profile_id": "other"}
    if "visitor_ids" in profiles.column_names:
        kinds["visitor_ids"] = "visitor"
    for column in profiles.column_names:
        if not column.startswith(KEY_PREFIX):
            continue
        name = column.removeprefix(KEY_PREFIX)
        kinds[column] = "email" if name == p.email else "phone" if name == p.phone else _content_kind(profiles[column])
    return kinds


def _content_kind(values) -> str:
    present = pc.drop_null(plain_array(values, text="cast"))
    if len(present) == 0:
        return "other"
    for kind in ("email", "phone"):
        _, reasons = normalize.normalize_keys(present, kind, "adobe")
        if 2 * reasons.null_count >= len(present):
            return kind
    return "other"


def form_keys(profiles: pa.Table, forms: list[Form], cfg: JobConfig) -> dict[Form, pa.BinaryArray]:
    """The distinct keys of each form over a standardized profile batch. Digest forms are hashed
    together: a normalized value several forms share (most emails are the same under adobe and
    meta rules) is hashed once."""
    out: dict[Form, pa.Array] = {}
    texts: dict[Form, pa.Array] = {}
    for form in forms:
        if form.column not in profiles.column_names:
            out[form] = pa.array([], pa.binary())
            continue
        values = profiles[form.column]
        if form.how == VISITOR:
            keys = _visitor_entries(values, cfg.profiles.visitor_ids_separator)
        elif form.how in (RAW, FOLDED):
            keys = plain_array(values, text="cast")
            keys = fold_case(keys) if form.how == FOLDED else keys
            keys = pc.filter(keys, pc.fill_null(pc.greater(pc.utf8_length(keys), 0), False))
        else:
            keys = pc.drop_null(normalize.normalize_keys(plain_array(values, text="cast"), form.kind, form.normalization)[0])
        keys = pc.unique(keys)
        if form.how == DIGEST:
            texts[form] = keys
        else:
            out[form] = keys.cast(pa.binary())
    for algorithm in sorted({f.algorithm for f in texts}):
        group = [f for f in texts if f.algorithm == algorithm]
        every = pc.unique(pa.concat_arrays([texts[f] for f in group]))
        digests = normalize.digests(every, algorithm)
        for form in group:
            out[form] = digests.take(pc.index_in(texts[form], value_set=every))
    return out


def _visitor_entries(values, separator: str) -> pa.Array:
    """The 38-digit IDs of a visitor-ID column: a list column, or strings split on ``separator``."""
    values = plain_array(values)
    if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
        values = pc.split_pattern(plain_array(values, text="cast"), pattern=separator)
    entries = pc.utf8_trim_whitespace(plain_array(pc.list_flatten(values), text="cast"))
    return pc.filter(entries, pc.fill_null(pc.match_substring_regex(entries, _VISITOR_ID), False))


class View(NamedTuple):
    """Sampled lines seen one way: their rows in the sample, and their keys seen that way."""

    rows: np.ndarray  # int64 positions in the (sorted) sample
    keys: pa.BinaryArray


def hit_rows(view: View, keys: pa.Array) -> np.ndarray:
    """The rows of ``view`` whose key is one of ``keys`` (the sample side is the hash table: it is
    the small one)."""
    if len(keys) == 0 or len(view.keys) == 0:
        return np.zeros(0, np.int64)
    hits = pc.filter(keys, pc.is_in(keys, value_set=view.keys))
    if len(hits) == 0:
        return np.zeros(0, np.int64)
    found = pc.is_in(view.keys, value_set=hits).to_numpy(zero_copy_only=False)
    return view.rows[found]
