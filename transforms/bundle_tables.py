"""Small tables of a bundle gathered into bigger ones before they are emitted.

A dump file of a few thousand lines (the platform splits a batch in many files) gave one table per
join bucket, one of rejections and one array of key hashes, each a few kilobytes: 500 such files
(100 splits a data source) were ~10,000 elements that the runner coded, shuffled and handed to the
join one by one, and the join concatenated 500 tables per bucket. The same 1M lines then took
twice as long as in one file a data source. :class:`TableGatherer` keeps a bundle's tables per
key until they reach :data:`FLUSH_BYTES` (or all of them :data:`HOLD_BYTES`) and emits them as
one. Only what is grouped, concatenated, summed or sorted downstream is gathered, so outputs do
not change; a table already that big passes straight through.
"""
from __future__ import annotations

from typing import Callable, Hashable, Iterable

import numpy as np
import pyarrow as pa

from transforms.arrow_utils import compact_dictionaries, concat_promoted

FLUSH_BYTES = 2 << 20  # a key's gathered tables go on once they hold this many bytes
HOLD_BYTES = 64 << 20  # and all of them once the bundle holds this many


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    """Tables of one schema (dictionary columns' index widths aside) as one single-chunk table whose
    dictionaries hold only the values its rows use."""
    if len(tables) == 1:
        return tables[0]
    return compact_dictionaries(concat_promoted(tables).combine_chunks())


def concat_hashes(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


class TableGatherer:
    """A bundle's values (Arrow tables, numpy arrays) gathered per key. :meth:`add` returns what
    goes on now (a ``(key, value)`` list: empty while a key's values are small), :meth:`drain`
    the rest, at the bundle's end. ``concat`` makes one value of a key's values, in the order
    they came. Used from the DoFn's own thread only."""

    def __init__(self, concat: Callable[[list], object], flush_bytes: int | None = None, hold_bytes: int | None = None):
        self._concat = concat
        self._flush = FLUSH_BYTES if flush_bytes is None else flush_bytes
        self._hold = HOLD_BYTES if hold_bytes is None else hold_bytes
        self._held: dict[Hashable, list] = {}
        self._sizes: dict[Hashable, int] = {}
        self._total = 0

    def add(self, key: Hashable, value) -> list[tuple[Hashable, object]]:
        size = value.nbytes
        if size >= self._flush and key not in self._held:
            return [(key, value)]
        self._held.setdefault(key, []).append(value)
        self._sizes[key] = self._sizes.get(key, 0) + size
        self._total += size
        if self._total >= self._hold:
            return list(self.drain())
        if self._sizes[key] >= self._flush:
            return [self._take(key)]
        return []

    def drain(self) -> Iterable[tuple[Hashable, object]]:
        """Every key's gathered values, as one each, in the order the keys first came; empty afterwards."""
        while self._held:
            yield self._take(next(iter(self._held)))

    def _take(self, key: Hashable) -> tuple[Hashable, object]:
        values = self._held.pop(key)
        self._total -= self._sizes.pop(key)
        return key, self._concat(values)
