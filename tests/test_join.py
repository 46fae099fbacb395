"""The shard join (transforms.join.join_bucket) against a plain-Python reference, including the
many-to-many case: one key shared by many profiles and repeated on many dump lines."""
from __future__ import annotations

import random

import pyarrow as pa
import pytest

from transforms.arrow_utils import NAME
from transforms.join import join_bucket
from transforms.keys import DUMP_SHARD_SCHEMA, PROFILE_SHARD_SCHEMA, SEGMENT_SET, segment_rows


def shard(lines: list[tuple[bytes, str, str]], chunk: int = 0) -> pa.Table:
    """``(key, segment set, removed set)`` lines -> a dump shard (split in ``chunk``-line tables with
    their own dictionaries, as the shuffle delivers them)."""
    tables = []
    step = chunk or max(len(lines), 1)
    for start in range(0, max(len(lines), 1), step):
        part = lines[start:start + step]
        tables.append(pa.table({
            "source_file": pa.array(["f.sync"] * len(part)).dictionary_encode().cast(NAME),
            "line": pa.array(range(start + 1, start + len(part) + 1), pa.int64()),
            "key": pa.array([k for k, _, _ in part], pa.binary()),
            "segments": pa.array([s for _, s, _ in part]).dictionary_encode().cast(NAME),
            "removed": pa.array([r for _, _, r in part]).dictionary_encode().cast(NAME),
        }, schema=DUMP_SHARD_SCHEMA))
    return pa.concat_tables(tables)


def profiles(pairs: list[tuple[bytes, str]]) -> pa.Table:
    return pa.table({"key": pa.array([k for k, _ in pairs], pa.binary()),
                     "profile_id": pa.array([p for _, p in pairs], pa.string())}, schema=PROFILE_SHARD_SCHEMA)


def reference(lines, prof, keep_file_audience: bool) -> dict:
    """What the join must give, line by line in plain Python."""
    ids: dict[bytes, set[str]] = {}
    for key, pid in prof:
        ids.setdefault(key, set()).add(pid)
    split = lambda s: [t for t in s.split(",") if t]
    out = {"members": set(), "removed": set(), "file_audience": set(), "file_audience_removed": set(),
           "rejected": set(), "reconciled": 0, "file_audience_lines": 0, "segment_lines": {}}
    for n, (key, segments, removed) in enumerate(lines, start=1):
        for s in split(segments):  # lines naming each segment to add, matched or not
            out["segment_lines"][s] = out["segment_lines"].get(s, 0) + 1
        if key in ids:
            out["reconciled"] += 1
            out["members"] |= {(s, p) for s in split(segments) for p in ids[key]}
            out["removed"] |= {(s, p) for s in split(removed) for p in ids[key]}
            if keep_file_audience:  # every decrypted address, with each profile it matched
                out["file_audience"] |= {(s, key.decode(), p) for s in split(segments) for p in ids[key]}
                out["file_audience_removed"] |= {(s, key.decode(), p) for s in split(removed) for p in ids[key]}
        elif keep_file_audience:
            out["file_audience_lines"] += 1
            out["file_audience"] |= {(s, key.decode(), None) for s in split(segments)}
            out["file_audience_removed"] |= {(s, key.decode(), None) for s in split(removed)}
        else:
            out["rejected"].add(n)
    return out


def _rows(table):
    return segment_rows(table) if table is not None else None  # as the writers make them


def observed(result, keep_file_audience: bool) -> dict:
    rows = lambda t, *cols: {(r["segment_id"], *(r[c] for c in cols)) for r in t.to_pylist()} if t is not None else set()
    for table in (result.members, result.removed_members, result.file_audience, result.file_audience_removed):
        if table is None:
            continue
        assert set(table.column("data_source").to_pylist()) <= {"ds"}
        assert all(table[SEGMENT_SET].combine_chunks().dictionary_decode().to_pylist())  # no empty set travels
    return {
        "members": rows(segment_rows(result.members), "profile_id"),  # as the writers make them
        "removed": rows(segment_rows(result.removed_members), "profile_id"),
        "file_audience": rows(_rows(result.file_audience), "address", "profile_id"),
        "file_audience_removed": rows(_rows(result.file_audience_removed), "address", "profile_id"),
        "rejected": set(result.rejected["line"].to_pylist()) if result.rejected is not None else set(),
        "reconciled": result.reconciled,
        "file_audience_lines": result.file_audience_lines,
        "segment_lines": dict(result.segment_lines),
    }


def many_to_many(n_profiles: int, m_lines: int) -> tuple[list, list]:
    """One key shared by ``n_profiles`` profiles and repeated on ``m_lines`` lines (three distinct
    segment sets among them), beside ordinary one-to-one lines and lines that match nothing."""
    shared = b"shared@example.com"
    sets = [("10,11", ""), ("12", "10"), ("10,11", "")]
    lines = [(shared, *sets[i % len(sets)]) for i in range(m_lines)]
    lines += [(f"u{i}@example.com".encode(), "20", "") for i in range(50)]
    lines += [(f"nobody{i}@example.com".encode(), "21,22", "20") for i in range(20)]
    prof = [(shared, f"p{i}") for i in range(n_profiles)] + [(f"u{i}@example.com".encode(), f"q{i}") for i in range(50)]
    random.Random(3).shuffle(lines)
    return lines, prof


@pytest.mark.parametrize("keep_file_audience", [False, True])
def test_many_to_many_shard_matches_the_line_by_line_reference(keep_file_audience):
    lines, prof = many_to_many(300, 300)
    result = join_bucket(shard(lines, chunk=97), profiles(prof), "ds", "email", keep_file_audience)
    assert observed(result, keep_file_audience) == reference(lines, prof, keep_file_audience)
    # every line in exactly one place
    placed = result.reconciled + result.file_audience_lines + (result.rejected.num_rows if result.rejected is not None else 0)
    assert placed == len(lines)


def test_many_to_many_join_materializes_profiles_times_distinct_sets_not_times_lines():
    """300 profiles share a key that 300 lines repeat with 2 distinct (segments, removed) sets: the
    join's (line, profile) pair table must hold 300 x 2 rows, not 300 x 300 (memory O(N x sets))."""
    lines, prof = many_to_many(300, 300)
    result = join_bucket(shard(lines, chunk=97), profiles(prof), "ds", "email", False)
    distinct_sets = 2
    assert result.pairs == 300 * distinct_sets + 50  # + the one-to-one lines' pairs
    assert result.reconciled == 300 + 50  # yet every repeated line still counts as reconciled


def test_random_shards_match_the_reference():
    rng = random.Random(11)
    for _ in range(20):
        keys = [f"k{i}".encode() for i in range(rng.randint(1, 12))]
        sets = ["", "1", "1,2", "3", "2,3,4"]
        lines = [(rng.choice(keys), rng.choice(sets[1:]), rng.choice(sets)) for _ in range(rng.randint(0, 60))]
        prof = [(rng.choice(keys), f"p{rng.randint(0, 15)}") for _ in range(rng.randint(0, 30))]
        for keep in (False, True):
            result = join_bucket(shard(lines, chunk=rng.randint(1, 20)), profiles(prof), "ds", "email", keep)
            assert observed(result, keep) == reference(lines, prof, keep)


def test_a_line_naming_a_segment_twice_counts_once_in_its_lines():
    """'<VID> 5,5' is one line naming segment 5: the report's lines per segment counted it twice (2
    lines read as 3 for segment 5). Found in review of today's diff."""
    from transforms.keys import segment_line_counts, segment_sets

    sets = segment_sets(pa.array([["5", "5"], ["5"], ["6", "5", "6"], []], pa.list_(pa.string())))
    assert segment_line_counts(sets) == [("5", 3), ("6", 1)]
    assert segment_line_counts(pa.chunked_array([sets, sets])) == [("5", 6), ("6", 2)]
    long = segment_sets(pa.array([[str(i) for i in range(20)] + ["7"], ["7"]], pa.list_(pa.string())))
    assert dict(segment_line_counts(long)) == {**{str(i): 1 for i in range(20)}, "7": 2}
