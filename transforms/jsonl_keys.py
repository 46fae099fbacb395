"""The start-up check of a JSONL extract's key columns and visitor IDs, which its records may omit:
JSON writers leave null fields out (Spark's to_json), so a record, or a whole part file, without
one is a profile without it (:func:`transforms.profiles.read_profiles` reads it as nulls).

Two shapes are no such extract: a key in no record at all (a configuration error), and a large
part (or small parts together) none of whose first records has a field most records of the other
parts have while they name a field the other parts never do (the field renamed in that part's
export: 'crmId' for 'crm_id'), whose profiles would silently give no key. A large part that lacks
the field and names nothing new is a part whose values are all null: an extract sorted by that
column (Spark puts nulls first) or partitioned by it writes such parts, and they are read as nulls.
"""
from __future__ import annotations

import json
from collections import Counter

from transforms.config import JobConfig
from transforms.profiles import column_field
from transforms.storage import open_input

# A part is sampled by its first SAMPLE records: a part that has as many, none of them holding a
# field the records of the parts holding it have in MOST of theirs (half or more), is not a random
# part of the same extract (were its records like theirs, the chance that none of 1,000 holds it is
# at most 2^-1000). It is either a part of nulls (the extract sorted or partitioned by that column)
# or a part whose field was renamed: the second names a field no part holding the column does.
# Smaller parts naming the same new field count together (their records are as many draws); fewer
# than SAMPLE records in all (a last, short part) and fields most records lack (genuinely sparse)
# are let through.
SAMPLE = 1000
MOST = 0.5


class Samples(dict):
    """A JSONL file -> how many of its first :data:`SAMPLE` records were read, how many of them
    hold each of ``columns``, and the field names they hold (none: nothing read). Filled in the pass
    that reads each file's first record (``read_schema_names(path, fmt, then=samples.reader(path))``)."""

    def __init__(self, columns: list[str]):
        super().__init__()
        self.columns = list(dict.fromkeys(columns))

    def reader(self, path: str):
        if not self.columns:
            return None

        def read(names: list[str], handle) -> None:
            self[path] = _sample(handle, self.columns, names)
        return read


def jsonl_key_problems(cfg: JobConfig, headers: dict[str, set], samples: Samples, keys: list[str]) -> list[str]:
    """Problems with the omissible columns of a JSONL extract (its files -> their first record's names;
    ``samples`` of them where the extract has several): a part of :data:`SAMPLE` records or more
    where a field seems renamed, each of ``keys`` in no record."""
    if cfg.profiles.resolved_format != "jsonl":
        return []
    return ([problem for col in samples.columns if col not in cfg.profiles.parts_may_lack
             for problem in _renamed_in_parts(cfg, samples, col)]
            + _keys_in_no_record(cfg, headers, keys, samples))


def _renamed_in_parts(cfg: JobConfig, samples: dict[str, tuple[int, dict, set]], col: str) -> list[str]:
    """One line naming the parts (the first, how many more) where ``col`` seems renamed, or none. Parts
    lacking it that name the same new field are sampled together: small parts (500 records each, as
    Spark's 200 partitions of a 100k extract write them) are as telling as one of :data:`SAMPLE`."""
    having = [(read, held[col]) for read, held, _ in samples.values() if held[col]]
    read, held = sum(r for r, _ in having), sum(h for _, h in having)
    if not having or held < MOST * read:
        return []
    known = set().union(*(names for _, found, names in samples.values() if found[col]))
    new = {extract: names - known for extract, (_, found, names) in samples.items() if not found[col]}
    records = Counter()  # the records of the parts lacking the field, by a field they name and none holding it does
    for extract, names in new.items():
        records.update(dict.fromkeys(names, samples[extract][0]))
    parts = [extract for extract, names in new.items() if any(records[name] >= SAMPLE for name in names)]
    if not parts:
        return []
    if len(parts) == 1:
        where, which = f"the first {SAMPLE:,} records of {parts[0]}", "that part? Its"
    else:
        shared = set.intersection(*(new[part] for part in parts))
        where = (f"the {sum(samples[p][0] for p in parts):,} records of {parts[0]} and {len(parts) - 1:,} more "
                 f"part{'s' if len(parts) > 2 else ''} naming {'the same new field' if shared else 'new fields'}")
        which = "those parts? Their"
    return [f"{column_field(cfg, col)}: column '{col}' is in none of {where}, but in {held:,} of the {read:,} read of the "
            f"parts that have it: renamed in {which} profiles would have no such key (if they truly have none, write "
            f"the field as null, Spark's ignoreNullFields=false, or add '{col}' to profiles.parts_may_lack)"]


def _sample(handle, columns: list[str], first: list[str]) -> tuple[int, dict, set]:
    """How many records the first :data:`SAMPLE` lines of a JSONL file hold (the first one's names
    ``first``, the rest read from ``handle``), how many of them hold each of ``columns``, and the
    field names they hold (about 3 ms a part)."""
    names = {col: f'"{col}"'.encode() for col in columns}
    records, held, fields = 1, {col: int(col in first) for col in columns}, set(first)
    while records < SAMPLE and (raw := handle.readline()):
        if not raw.strip():
            continue
        records += 1
        try:
            record = json.loads(raw)
        except ValueError:  # not JSON, not UTF-8: the reader names the line; not taken for a rename
            record = {col: None for col, name in names.items() if name in raw}
        if isinstance(record, dict):
            fields |= record.keys()
            for col in held.keys() & record.keys():
                held[col] += 1
    return records, held, fields


def _keys_in_no_record(cfg: JobConfig, headers: dict[str, set], keys: list[str], samples: dict) -> list[str]:
    """Key columns no file's first record (nor sampled record) has: read on, file by file, until a
    record has each. A key in no record of the extract is a configuration error naming it."""
    missing = [col for col in dict.fromkeys(keys) if not any(col in names for names in headers.values())
               and not any(held.get(col) for _, held, _ in samples.values())]
    for extract in headers:
        if missing:
            missing = [col for col in missing if col not in _keys_in_records(extract, missing)]
    return [f"{column_field(cfg, col)}: column '{col}' is in no record of the extract '{cfg.profiles.path}'"
            for col in missing]


def _keys_in_records(path: str, wanted: list[str]) -> set:
    """Of ``wanted``, the keys some record of a JSONL file has (it is read until all are seen)."""
    seen: set = set()
    with open_input(path, "jsonl") as handle:
        for raw in iter(handle.readline, b""):
            if not (b"\\u" in raw or any(col.encode() in raw for col in wanted)):
                continue  # a name written with escapes is looked for in the parsed record
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # the reader names the line
            if isinstance(record, dict):
                seen |= set(wanted) & record.keys()
                if len(seen) == len(wanted):
                    break
    return seen
