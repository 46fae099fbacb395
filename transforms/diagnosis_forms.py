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
from transforms.arrow_utils import plain_array
from transforms.config import JobConfig
from transforms.digests import DIGEST_BYTES
from transforms.digests import digests as raw_digests
from transforms.extract_header import text_columns
from transforms.keys import fold_case, is_visitor_id
from transforms.profiles import KEY_PREFIX
from transforms.stable_hash import hash64

# The screen looks at 1 in SCREEN_SHARE profiles of the extract: a form that explains n sampled
# lines shows about n/16 of them there, so one that explains more than ~100 lines is missed with a
# probability under 0.2%.
SCREEN_SHARE = 16
SCREEN_ALL = 8_192  # the extract's first rows are all screened (a share in each of its files: screen_whole)
MAX_SCREEN_COLUMNS = 16  # extract columns looked at beyond the id and visitor IDs (a wide extract)

DIGEST, ADDRESS, RAW, FOLDED, VISITOR = "digest", "address", "raw", "folded", "visitor"
DIGEST_ALGORITHMS = {size: name for name, size in DIGEST_BYTES.items()}  # by digest length in bytes


class Form(NamedTuple):
    """How one column of the standardized profile table becomes probe keys."""

    column: str  # "profile_id", "visitor_ids" or "k:<extract column>"
    how: str  # DIGEST | ADDRESS (normalized) | RAW (as is) | FOLDED (trim + lower) | VISITOR (38-digit IDs)
    kind: str = "other"  # email | phone | other: how DIGEST and ADDRESS normalize
    normalization: str | None = None  # a profile of normalize.PROFILES, or normalize.AS_IS
    algorithm: str | None = None  # DIGEST: one of DIGEST_ALGORITHMS' values
    region: str | None = None  # phones: where numbers without a country code are read (JobConfig.profile_region_for)
    suffix: str = ""  # DIGEST: appended to the normalized value before hashing (a line break, as `echo` prints it)


def none_first(value):
    """A sort key for tuples holding None beside other values (a form's region: None or "US"):
    None sorts first, and is never compared with a value."""
    if isinstance(value, tuple):
        return tuple(none_first(v) for v in value)
    return (value is not None, "" if value is None else value)


def in_order(forms) -> list[Form]:
    """Forms sorted (the same order on every worker), None fields first."""
    return sorted(forms, key=none_first)


def extract_column(cfg: JobConfig, column: str) -> str:
    """The extract's name for a column of the standardized profile table."""
    if column == "profile_id":
        return cfg.profiles.id
    if column == "visitor_ids":
        return cfg.profiles.visitor_ids or column
    return column.removeprefix(KEY_PREFIX)


def screen_columns(cfg: JobConfig, path: str) -> list[str]:
    """The extract columns the screen carries besides the job's own: its columns that read as text
    (:func:`~transforms.extract_header.text_columns`: not lists, not bytes -- a binary column the job does
    not use must not fail the import), the email and phone columns first, at most
    MAX_SCREEN_COLUMNS. Reads the extract's header or footer."""
    p = cfg.profiles
    present = text_columns(path, p.resolved_format)
    roles = [c for c in (p.email, p.phone) if c and c in present]
    others = [c for c in present if c not in roles and c not in (p.id, p.visitor_ids, p.consent_column)]
    return (roles + others)[:MAX_SCREEN_COLUMNS]


def screen_whole(files: int) -> int:
    """How many first rows of each of an extract's ``files`` files are all screened: SCREEN_ALL
    shared. Each file's first SCREEN_ALL screened Spark's 200 parts of 5,000 profiles whole, the
    whole extract (1M rows) where 1 in SCREEN_SHARE was meant: 0.2 -> 5.9 s of a 1M import."""
    return SCREEN_ALL // max(files, 1)


def screen_rows(profiles: pa.Table, first_row: int = 0, whole_rows: int = SCREEN_ALL) -> pa.Table:
    """The screen's share of a standardized profile batch whose first row is the file's row
    ``first_row``: the file's first ``whole_rows`` rows (:func:`screen_whole`: a small extract is
    screened whole), then 1 row in SCREEN_SHARE (see :func:`spread`), as a compact copy without the
    opt-out column."""
    table = profiles.drop_columns([c for c in ("opt_out",) if c in profiles.column_names])
    whole = max(0, min(profiles.num_rows, whole_rows - first_row))
    rest = spread(profiles.num_rows - whole, SCREEN_SHARE, offset=first_row + whole).to_numpy() + whole
    return table.take(pa.array(np.concatenate([np.arange(whole), rest])))


def spread(n: int, share: int, salt: int = 0, offset: int = 0) -> pa.Array:
    """About 1 in ``share`` of the positions ``0 .. n-1`` (of a file, from ``offset``), picked by a
    stable hash of the position: deterministic, cheap (no column is hashed), and without the period
    a stride has (a stride of 16 over an extract whose every other row differs sees only one kind of
    row)."""
    if share <= 1:
        return pa.array(np.arange(n))
    positions = pa.array(np.arange(offset, offset + n, dtype=np.int64) + (salt << 40))
    return pa.array(np.flatnonzero(hash64(positions) < np.uint64(2**64 // share)))


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
        kinds[column] = ("email" if name == p.email else "phone" if name == p.phone
                         else _content_kind(profiles[column], p.default_region))
    return kinds


def _content_kind(values, region: str | None) -> str:
    present = pc.drop_null(plain_array(values, text="cast"))
    if len(present) == 0:
        return "other"
    for kind in ("email", "phone"):
        _, reasons = normalize.normalize_keys(present, kind, "adobe", region if kind == "phone" else None)
        if 2 * reasons.null_count >= len(present):
            return kind
    return "other"


class ProfileKeys:
    """The keys of some forms over one standardized profile batch, ready to probe views with.

    Digest forms are hashed together: the distinct normalized values of all of them are hashed once
    (most emails are the same under adobe and meta rules), and a probe first finds which hashed
    values hit the view at all -- usually none, so a form's own values are looked at only when
    something matched."""

    def __init__(self, profiles: pa.Table, forms: list[Form], cfg: JobConfig):
        self._keys: dict[Form, pa.Array] = {}  # non-digest forms: their keys (binary)
        self._texts: dict[Form, pa.Array] = {}  # digest forms: their normalized values
        for form in forms:
            if form.column not in profiles.column_names:
                self._keys[form] = pa.array([], pa.binary())
            elif form.how == DIGEST:
                values = plain_array(profiles[form.column], text="cast")
                texts = pc.drop_null(normalize.normalize_keys(values, form.kind, form.normalization, form.region)[0])
                self._texts[form] = pc.binary_join_element_wise(texts, form.suffix, "") if form.suffix else texts
            else:
                self._keys[form] = _plain_keys(profiles[form.column], form, cfg).cast(pa.binary())
        self._digests: dict[str, tuple[pa.Array, pa.Array]] = {}  # algorithm -> (distinct values, digests)
        for algorithm in sorted({f.algorithm for f in self._texts}):
            texts = [t for f, t in self._texts.items() if f.algorithm == algorithm]
            every = pc.unique(pa.concat_arrays(texts))
            self._digests[algorithm] = every, raw_digests(every, algorithm)
        self._hits: dict[tuple, tuple[pa.Array, pa.Array]] = {}

    def hit_rows(self, view: "View", form: Form) -> np.ndarray:
        """The rows of ``view`` whose key ``form`` gives."""
        if form in self._keys:
            return hit_rows(view, self._keys[form])
        cached = (id(view), form.algorithm)
        if cached not in self._hits:  # the hashed values (and their digests) that are in the view
            every, digests = self._digests[form.algorithm]
            found = pc.is_in(digests, value_set=view.keys)
            self._hits[cached] = pc.filter(every, found), pc.filter(digests, found)
        texts, digests = self._hits[cached]
        if len(texts) == 0:
            return np.zeros(0, np.int64)
        mine = pc.is_in(texts, value_set=self._texts[form])
        return hit_rows(view, pc.filter(digests, mine))


def keys_kept(profiles: pa.Table, form: Form, normalization: str) -> tuple[int, int]:
    """``(kept, keyed)`` over a profile batch: of the profiles whose ``form.column`` gives a key under
    ``normalization`` (the data source's), those whose key ``form``'s normalization leaves as it is.
    None kept: a change to ``form`` would lose every line that matches now."""
    if form.column not in profiles.column_names:
        return 0, 0
    values = plain_array(profiles[form.column], text="cast")
    now = normalize.normalize_keys(values, form.kind, normalization, form.region)[0]
    changed = normalize.normalize_keys(values, form.kind, form.normalization, form.region)[0]
    return int(pc.sum(pc.fill_null(pc.equal(now, changed), False)).as_py() or 0), len(now) - now.null_count


def _plain_keys(values, form: Form, cfg: JobConfig) -> pa.Array:
    if form.how == VISITOR:
        return _visitor_entries(values, cfg.profiles.visitor_ids_separator)
    if form.how == ADDRESS:
        return pc.drop_null(normalize.normalize_keys(plain_array(values, text="cast"), form.kind, form.normalization,
                                                     form.region)[0])
    keys = plain_array(values, text="cast")
    keys = fold_case(keys) if form.how == FOLDED else keys
    return pc.filter(keys, pc.fill_null(pc.greater(pc.utf8_length(keys), 0), False))


def _visitor_entries(values, separator: str) -> pa.Array:
    """The 38-digit IDs of a visitor-ID column: a list column, or strings split on ``separator``."""
    values = plain_array(values)
    if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
        values = pc.split_pattern(plain_array(values, text="cast"), pattern=separator)
    entries = pc.utf8_trim_whitespace(plain_array(pc.list_flatten(values), text="cast"))
    return pc.filter(entries, is_visitor_id(entries))


class View(NamedTuple):
    """Sampled lines seen one way: their rows in the sample, and their keys seen that way."""

    rows: np.ndarray  # int64 positions in the (sorted) sample
    keys: pa.BinaryArray


def hit_rows(view: View, keys: pa.Array) -> np.ndarray:
    """The rows of ``view`` whose key is one of ``keys`` (the smaller side is the hash table)."""
    if len(keys) == 0 or len(view.keys) == 0:
        return np.zeros(0, np.int64)
    if len(keys) <= len(view.keys):
        return view.rows[pc.is_in(view.keys, value_set=keys).to_numpy(zero_copy_only=False)]
    hits = pc.filter(keys, pc.is_in(keys, value_set=view.keys))
    if len(hits) == 0:
        return np.zeros(0, np.int64)
    found = pc.is_in(view.keys, value_set=hits).to_numpy(zero_copy_only=False)
    return view.rows[found]
