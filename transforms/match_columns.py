"""A hashed data source's match column compared as written while it holds email addresses: counted per
profile batch (:func:`match_column_counts`, Arrow kernels) and judged over the whole extract
(:func:`check_match_columns`), as the visitor-ID entries are (:mod:`transforms.profile_columns`).

``match_on`` naming a column other than the roles, ``match_as`` left out: its values are trimmed, their
case kept, and hashed so (``key_kind`` ``other``); a partner's digests of normalized addresses then miss
every one written with a capital or a space, exit 0. ``match_as: email`` reads them as emails,
``match_as: other`` keeps them as written (and is never judged). Phones are left to the diagnosis: an
all-digit CRM id is a possible national number, so no content rule tells the two apart safely.
"""
from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from transforms.config import DataSourceConfig, JobConfig, ProfilesConfig
from transforms.errors import RunFailed
from transforms.outcomes import Counts, Metric, count

# One '@' between a local part and a dotted domain, nothing blank inside, once trimmed: no CRM id, UUID
# or digest (hex, base64) has an '@'; an address in a sentence or a list ('a@b.c; d@e.f') is not one.
EMAIL_LIKE = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
MIN_EMAILS = 3  # fewer looks like stray values, not a column of addresses
MAJORITY = (4, 5)  # at least 4 in 5 non-empty values


def judged(ds: DataSourceConfig) -> bool:
    """Whether a data source's match column is judged: hashed under a normalization profile, on a
    column other than the roles, ``match_as`` left out."""
    return ds.declared == "hashed" and ds.normalization != "none" and ds.match_as is None and ds.key_kind == "other"


def match_column_counts(columns: dict, cfg: JobConfig, key_prefix: str) -> list:
    """A standardized batch's counts (``(Count, n)``, per data source) of its judged match columns:
    the non-empty values (``MATCH_VALUES``) and those that look like email addresses
    (``MATCH_VALUES_EMAILS``). ``columns``: the batch's columns by name. Only values holding an '@'
    are searched (a substring kernel over the rest): a column of ids costs one pass."""
    counts, seen = [], {}
    for ds in cfg.data_sources:
        if not judged(ds):
            continue
        column = cfg.profiles.column_for(ds.match_on)
        if column not in seen:
            seen[column] = _counted(columns[key_prefix + column])
        values, emails = seen[column]
        counts += [count(Metric.MATCH_VALUES, values, ds.name), count(Metric.MATCH_VALUES_EMAILS, emails, ds.name)]
    return counts


def _counted(values) -> tuple[int, int]:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    trimmed = pc.utf8_trim_whitespace(values)
    non_empty = pc.sum(pc.greater(pc.binary_length(trimmed), 0)).as_py() or 0
    at = pc.filter(trimmed, pc.fill_null(pc.match_substring(trimmed, "@"), False))
    if not len(at):
        return non_empty, 0
    return non_empty, pc.sum(pc.match_substring_regex(at, EMAIL_LIKE)).as_py() or 0


def check_match_columns(counts: Counts, data_sources: list[DataSourceConfig], profiles: ProfilesConfig) -> None:
    """Raise :class:`RunFailed` (nothing published) when a judged data source's match column, over all
    the extract's files and batches, holds email addresses: at least MIN_EMAILS and 4 in 5 of its
    non-empty values. One line naming the data source, the column and the fix, never a value."""
    for ds in data_sources:
        if not judged(ds):
            continue
        values, emails = counts.get(Metric.MATCH_VALUES, ds.name), counts.get(Metric.MATCH_VALUES_EMAILS, ds.name)
        if emails >= MIN_EMAILS and emails * MAJORITY[1] >= values * MAJORITY[0]:
            column = profiles.column_for(ds.match_on)
            raise RunFailed(f"data source '{ds.name}': {emails:,} of {values:,} values of its match_on column "
                            f"'{column}' of '{profiles.path}' are email addresses, compared as written (trimmed, "
                            "case kept) while the platforms hash them normalized: set match_as: email (or "
                            "match_as: other to keep comparing them as written). Nothing was published")
