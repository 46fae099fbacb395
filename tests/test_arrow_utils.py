"""Vectorized table helpers (pure functions)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from transforms.arrow_utils import distinct, sorted_rows


def _random_table(seed: int, n: int = 2000) -> pa.Table:
    rng = np.random.default_rng(seed)
    seg = [None if x == 0 else f"s{x}" for x in rng.integers(0, 4, n)]
    pid = [None if x == 0 else f"p{x:03d}" for x in rng.integers(0, 60, n)]
    return pa.table({"data_source": pa.array(["d1", "d2"] * (n // 2)), "segment_id": seg, "profile_id": pid})


def test_sorted_rows_dedupes_like_distinct_then_sort():
    for seed in range(5):
        table = _random_table(seed)
        expected = distinct(table).sort_by([(c, "ascending") for c in table.column_names])
        got = sorted_rows(table, ["data_source", "segment_id", "profile_id"], dedupe=True)
        assert got.equals(expected)
        assert got.num_rows < table.num_rows  # there were repeats, nulls included


def test_sorted_rows_breaks_ties_with_the_other_columns_so_repeats_meet():
    table = pa.table({"k": ["a", "a", "a", "b"], "v": [2, 1, 2, 1]})
    assert sorted_rows(table, ["k"], dedupe=True).to_pylist() == [
        {"k": "a", "v": 1}, {"k": "a", "v": 2}, {"k": "b", "v": 1}]
    # without dedupe every row stays, sorted by the key only
    assert sorted_rows(table, ["k"]).column("k").to_pylist() == ["a", "a", "a", "b"]
