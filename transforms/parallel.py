"""Run a DoFn's vectorized work on more than one core, keeping its output order.

Arrow compute kernels, numpy, zlib and the AES ciphers release the GIL, so a small thread pool
inside a DoFn overlaps one chunk's parsing with the next chunk's decompression, or one data source's
key normalization with another's hashing. Results come back in input order, so what a DoFn emits
(and so every output file) is the same with 1 thread or many.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Collection, Hashable, Iterable, Iterator, TypeVar

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.memory import use_heap_allocator

T = TypeVar("T")
R = TypeVar("R")


def make_pool(threads: int) -> ThreadPoolExecutor | None:
    """A pool of ``threads`` workers, or None for ``threads <= 1`` (work runs in the caller)."""
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="audience-sync") if threads > 1 else None


def ordered_map(fn: Callable[[T], R], items: Iterable[T], pool: ThreadPoolExecutor | None, ahead: int) -> Iterator[R]:
    """``fn`` over ``items``, results in input order, with at most ``ahead`` items in flight (which
    bounds memory: each holds its input and its result). The caller's thread keeps pulling ``items``
    (reading a file, say) while the pool computes. An exception in ``fn`` is raised here, and the
    work still pending is cancelled."""
    if pool is None:
        yield from map(fn, items)
        return
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            while len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()


def submit(pool: ThreadPoolExecutor | None, fn: Callable[..., R], *args) -> Future:
    """``fn(*args)`` in ``pool``, or run now when there is no pool: a future either way."""
    if pool is not None:
        return pool.submit(fn, *args)
    done: Future = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - raised by result(), as the pool's would be
        done.set_exception(exc)
    return done


class OnceEach:
    """Values computed once per key, whichever pool task asks first; the tasks that ask for the same
    key meanwhile wait for that computation (its result, or its exception). Made per unit of work
    (a profile batch, say) whose tasks compute some things alike, and dropped with it. ``shared``:
    the keys more than one task asks for; the others are computed and not kept (None: keep all)."""

    def __init__(self, shared: Collection[Hashable] | None = None):
        self._lock = threading.Lock()
        self._values: dict[Hashable, Future] = {}
        self._shared = shared

    def get(self, key: Hashable, compute: Callable[[], R]) -> R:
        if self._shared is not None and key not in self._shared:
            return compute()
        with self._lock:
            value = self._values.get(key)
            mine = value is None
            if mine:
                value = self._values[key] = Future()
        if mine:
            try:
                value.set_result(compute())
            except BaseException as exc:  # noqa: BLE001 - raised to this caller and to every waiting one
                value.set_exception(exc)
        return value.result()


class HeapDoFn(beam.DoFn):
    """A DoFn that builds big Arrow tables: setup() gives its process's Arrow buffers glibc's heap
    (:func:`transforms.memory.use_heap_allocator`), on a worker too, where the launcher never ran
    (Dataflow, Flink, a multi-process runner). Subclasses that set up more call ``super().setup()``."""

    def setup(self):
        use_heap_allocator()


class PooledDoFn(HeapDoFn):
    """A DoFn with a pool of ``self._threads`` workers (set it in ``__init__``), built in setup()
    and shut down in teardown(); ``self._pool`` is None for one thread. Subclasses that set up more
    call ``super().setup()``. These build big Arrow tables (:class:`HeapDoFn`)."""

    _threads = 1

    def setup(self):
        super().setup()
        self._pool = make_pool(self._threads)

    def teardown(self):
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class BundleQueue:
    """A bundle's elements worked on in a DoFn's pool, at most ``ahead`` at a time: ``process``
    hands an element over (``submit``) and emits the outputs of the oldest finished ones;
    ``finish_bundle`` emits the rest (``drain``). A result becomes outputs through ``emit``, called
    in the DoFn's own thread (where Beam's counters count). With no pool, the work runs at once.
    Outputs follow input order; what the DoFns using it emit is only grouped, summed or sorted
    downstream."""

    def __init__(self, pool: ThreadPoolExecutor | None, ahead: int, emit: Callable[[R], Iterable]):
        self._pool, self._ahead, self._emit, self._pending = pool, max(ahead, 1), emit, deque()

    def submit(self, fn: Callable[..., R], *args) -> Iterator:
        if self._pool is None:
            yield from self._emit(fn(*args))
            return
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self._ahead:
            yield from self._emit(self._pending.popleft().result())

    def enqueue(self, fn: Callable[..., R], *args) -> None:
        """Hand work over and emit nothing now: :meth:`drain` emits its outputs (finish_bundle's work)."""
        if self._pool is None:
            done: Future = Future()
            done.set_result(fn(*args))
            self._pending.append(done)
        else:
            self._pending.append(self._pool.submit(fn, *args))

    def drain(self) -> Iterator:
        """The outputs still pending, as finish_bundle must emit them: in the global window (where
        a batch pipeline's elements live)."""
        while self._pending:
            yield from map(windowed, self._emit(self._pending.popleft().result()))


def in_global_window(value) -> WindowedValue:
    """What finish_bundle must emit: the value in the global window, at its end."""
    return WindowedValue(value, GlobalWindow().max_timestamp(), (GlobalWindow(),))


def windowed(out):
    """An output ``process`` would yield (a value, or a ``TaggedOutput``) as finish_bundle must emit it."""
    if isinstance(out, beam.pvalue.TaggedOutput):
        return beam.pvalue.TaggedOutput(out.tag, in_global_window(out.value))
    return in_global_window(out)
