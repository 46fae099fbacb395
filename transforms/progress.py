"""Progress of a running job on the local runner: per stage, files and lines so far and lines per
second, logged at a steady interval by a thread of the launcher (never per record, never a value).

Why not the runner's metrics: the local runner (FnApiRunner) runs the whole pipeline inside
``Pipeline.run()``, so its ``PipelineResult`` -- and ``result.metrics()`` -- only exists once the run
is over; nothing of a running job can be queried from another thread. So every counter the DoFns keep
for the runner's UI (:func:`transforms.outcomes.runner_counter`) also adds into :data:`TALLY`, a tally
of this process, which :func:`reporting` reads. It is live when the DoFns run in this process (the
local runner's ``in_memory`` and ``multi_threading`` modes); workers in other processes
(``multi_processing``, Dataflow, Flink) keep their own, never read: there the runner's UI shows the
same counters (namespace ``audience_sync``), and no progress is logged here.
"""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

LOG = logging.getLogger("audience_sync.progress")
DEFAULT_INTERVAL = 30.0  # seconds between two progress lines
_interval = DEFAULT_INTERVAL


class Tally:
    """Counter name -> total so far, added to from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def add(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + int(n)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


TALLY = Tally()


class ProgressCounter:
    """A Beam metrics counter that also adds into :data:`TALLY` (what ``runner_counter`` returns)."""

    def __init__(self, counter, name: str):
        self._counter, self._name = counter, name

    def inc(self, n: int = 1) -> None:
        self._counter.inc(n)
        TALLY.add(self._name, n)


@dataclass(frozen=True)
class Stage:
    """How a stage's counters read: ``lines`` counted (and their unit), ``files`` done (optional)."""

    name: str
    lines: str
    unit: str
    files: str | None = None


STAGES = (
    Stage("read dumps", "dump_lines_read", "lines", files="dump_files_read"),
    Stage("read profiles", "profile_rows_read", "rows"),
    Stage("join", "lines_reconciled", "lines reconciled"),
    Stage("read targets", "target_rows", "rows"),
    Stage("read targeted profiles", "profiles_read", "rows"),
    Stage("onboarding files", "onboarding_lines_written", "lines written"),
)


def progress_line(now: dict[str, int], before: dict[str, int], elapsed: float, since: float) -> str:
    """One progress line: each stage with counts so far, and its rate over the last ``since`` seconds."""
    parts, known = [], set()
    for stage in STAGES:
        known.update({stage.lines, stage.files})
        if stage.lines not in now and (stage.files is None or stage.files not in now):
            continue
        lines = now.get(stage.lines, 0)
        rate = (lines - before.get(stage.lines, 0)) / since if since > 0 else 0.0
        files = f"{now.get(stage.files, 0):,} files, " if stage.files else ""
        speed = f" ({rate:,.0f}/s)" if rate > 0 else ""  # a stage that did not move: no rate
        parts.append(f"{stage.name}: {files}{lines:,} {stage.unit}{speed}")
    parts += [f"{name}: {n:,}" for name, n in sorted(now.items()) if name not in known]
    minutes, seconds = divmod(int(elapsed), 60)
    return f"running {minutes}:{seconds:02d} | " + (" | ".join(parts) if parts else "starting")


def set_interval(seconds: float) -> None:
    """Seconds between two progress lines (``0``: none)."""
    global _interval
    _interval = float(seconds)


@contextmanager
def reporting(in_process: bool):
    """While the block runs a pipeline, log a progress line every interval (when INFO is enabled for
    ``audience_sync.progress``, the interval is positive and the DoFns run in this process:
    ``in_process``, :func:`pipelines.options.runs_here`)."""
    interval = _interval
    if interval <= 0 or not LOG.isEnabledFor(logging.INFO) or not in_process:
        yield
        return
    TALLY.reset()
    stop = threading.Event()
    thread = threading.Thread(target=_report, args=(stop, interval), name="audience-sync-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _report(stop: threading.Event, interval: float) -> None:
    start = last_time = time.monotonic()
    last: dict[str, int] = {}
    while not stop.wait(interval):
        now, snapshot = time.monotonic(), TALLY.snapshot()
        LOG.info("%s", progress_line(snapshot, last, now - start, now - last_time))
        last, last_time = snapshot, now
