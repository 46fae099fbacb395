"""An extract file read for the profile stage (:class:`transforms.key_profiles.KeyProfiles`): its first
batches in the stage's pool, ahead of the file the stage's thread keys (:class:`FileRead`), within a
bound on the rows so held (:class:`ReadAhead`)."""
from __future__ import annotations

import threading
from typing import Iterator

import pyarrow as pa

from transforms.config import JobConfig
from transforms.diagnosis_forms import screen_columns, screen_rows, screen_whole
from transforms.extract_copies import FileSketcher
from transforms.profiles import counted_profiles


class ReadAhead:
    """The rows a bundle's files read ahead hold until handled: a :class:`FileRead` start reads nothing once they
    hold a batch's (16 big files' first batches were held, where 2 were); a start already reading, one batch."""

    def __init__(self, rows: int):
        self._lock, self._rows, self._held = threading.Lock(), rows, 0

    @property
    def held(self) -> int:
        """The rows the files read ahead hold (read whole: a file being read is not counted)."""
        return self._held

    def open(self) -> bool:
        return self._held < self._rows  # (read under the GIL; starts racing past it: one batch each)

    def hold(self, rows: int) -> None:
        with self._lock:
            self._held += rows


class FileRead:
    """One extract file read for :class:`KeyProfiles`: its batches (:func:`counted_profiles`), each
    with its counts and its screen rows (None without the diagnosis), and the file's sketch
    (:class:`FileSketcher`). :meth:`start` (in the pool) reads the first batches: a small file whole,
    a big one up to its first big batch or BATCH_ROWS rows, unless ``ahead`` holds a batch's already;
    :meth:`batches` (in the DoFn's thread) gives them, then reads the rest (or all of a file not
    started). One thread at a time: the DoFn's waits for start's future."""

    def __init__(self, path: str, cfg: JobConfig, files: int, batch_rows: int, small_rows: int, ahead: ReadAhead):
        self.path, self._cfg, self._batch_rows, self._small_rows = path, cfg, batch_rows, small_rows
        self._ahead, self._started = ahead, False
        self._whole = screen_whole(files)
        self._diagnosis = any(cfg.sample_size(ds) for ds in cfg.data_sources)
        self.sketcher = FileSketcher()  # the file's own: its small batches are gathered with other files'
        self._first_row = 0
        self._read: list = []
        self._rest: Iterator | None = None
        self.rows = 0  # read by start

    def start(self) -> None:
        if not self._ahead.open():
            return  # read in its turn, in the DoFn's thread
        self._started, self._rest = True, self._opened()
        for profiles, entries in self._rest:
            self._read.append(self._prepared(profiles, entries))
            self.rows += profiles.num_rows
            if profiles.num_rows >= self._small_rows or self.rows >= self._batch_rows:
                break  # a big file: the DoFn's thread reads the rest (two batches in flight, as before)
        else:
            self._rest = None
        self._ahead.hold(self.rows)

    def _opened(self) -> Iterator:
        extra = screen_columns(self._cfg, self.path) if self._diagnosis else ()
        return counted_profiles(self.path, self._cfg, batch_rows=self._batch_rows, extra=extra)

    def batches(self) -> Iterator[tuple[pa.Table, list, pa.Table | None]]:
        if self._started:
            self._ahead.hold(-self.rows)
        else:
            self._rest = self._opened()
        read, self._read = self._read, []
        yield from read
        for profiles, entries in self._rest or ():
            yield self._prepared(profiles, entries)

    def _prepared(self, profiles: pa.Table, entries: list) -> tuple[pa.Table, list, pa.Table | None]:
        self.sketcher.add(profiles)
        screen = screen_rows(profiles, self._first_row, self._whole) if self._diagnosis else None
        self._first_row += profiles.num_rows
        return profiles, entries, screen
