"""Give freed heap memory back to the operating system between big steps.

glibc's malloc keeps most of what a process frees in its heaps, and Arrow's memory pool (mimalloc)
keeps freed pages for reuse, so after a step that built and dropped gigabytes of tables (a whole
dump, a shard of the join) the process's resident memory stays at that high-water mark and the next
step piles on top of it. ``malloc_trim(0)`` and the pool's ``release_unused()`` return the free
pages; the heavy DoFns call them when a bundle ends. A no-op where there is no glibc
(macOS, musl): those allocators manage their own release.

glibc also serves a big block from the heap, where a free leaves a hole the next block may not
fit, once a block that big has been freed (its mmap threshold grows up to 32 MiB). From the profile
stage on (:class:`transforms.key_profiles.KeyProfiles` sets it up) the threshold is fixed at 16 MiB
(:func:`map_big_blocks`): blocks that size and bigger (a runner's encoded stream, a pickled table)
get mappings of their own, unmapped when freed. The 10M encrypted import's peak, 4 alternating runs:
3.73-3.79 GiB before, 3.67-3.73 GiB after, the same time; 1M imports unchanged. Set from the dump
stage on it took the peak to 3.53-3.61 GiB but cost 1M imports 4-5% (the dump stage's many
short-lived blocks each paid their page faults), so it is not. ``MALLOC_MMAP_THRESHOLD_`` set in
the environment wins.

Arrow's buffers come from glibc's heap too (:func:`use_heap_allocator`: Arrow's ``system`` pool
for the allocations pyarrow makes), not from the mimalloc pool pyarrow picks by default. On this
project's 2-core VMs the mimalloc pool spent about a third of a 1M import's CPU in the kernel,
zeroing pages it had given back and took again (``clear_page_erms``, 21% of a profile's samples).
The 1M single-file import, 4 alternating runs, medians: system time 4.3 -> 1.7 s, wall 8.5 -> 6.8 s
(the whole process under the system pool through the environment: 6.7 s). The 10M encrypted import,
one run each: 48.2 -> 47.5 s, peak 3.45 -> 3.37 GiB. One allocator also means
:func:`release_free_memory`'s ``malloc_trim`` returns what Arrow freed. Acero's joins and the Parquet
reader's scratch space use Arrow's C++ default pool, which only the environment can choose before
pyarrow loads: the ``audience-sync`` command sets ``ARROW_DEFAULT_MEMORY_POOL=system`` first thing
(:func:`pipelines.cli.arrow_on_the_heap`; the 1M split import, 5 alternating runs: 9.5 -> 8.7 s under
load). ``ARROW_DEFAULT_MEMORY_POOL`` set by the operator wins, and is then left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

BIG_BLOCK = 16 << 20  # bytes: blocks this size and bigger are mapped on their own (see map_big_blocks)
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


@functools.lru_cache(maxsize=None)
def _glibc(name: str):
    """glibc's function ``name``, or None (another libc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return getattr(libc, name)
    except (OSError, AttributeError):
        return None


def map_big_blocks() -> bool:
    """Have glibc map every block of :data:`BIG_BLOCK` bytes or more on its own (process-wide,
    idempotent); True if set. Not where ``MALLOC_MMAP_THRESHOLD_`` is set (the operator's choice)
    or on another libc."""
    mallopt = _glibc("mallopt")
    if mallopt is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, BIG_BLOCK))


def use_heap_allocator() -> bool:
    """Make Arrow's system pool (glibc's malloc) the default pool of this process (idempotent);
    True if set. Not where ``ARROW_DEFAULT_MEMORY_POOL`` names the operator's choice. Buffers
    already allocated keep their pool and are freed to it."""
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return False
    import pyarrow as pa

    if pa.default_memory_pool().backend_name != "system":
        pa.set_memory_pool(pa.system_memory_pool())
    return True


def release_free_memory() -> bool:
    """Return freed heap pages to the OS (Arrow's memory pool and glibc's heap); True if glibc's
    malloc_trim was available."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = _glibc("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True
