"""Give freed heap memory back to the operating system between big steps.

glibc's malloc keeps most of what a process frees in its heaps, and Arrow's memory pool (mimalloc)
keeps freed pages for reuse, so after a step that built and dropped gigabytes of tables (a whole
dump, a shard of the join) the process's resident memory stays at that high-water mark and the next
step piles on top of it. ``malloc_trim(0)`` and the pool's ``release_unused()`` return the free
pages; the heavy DoFns call them when a bundle ends. A no-op where there is no glibc
(macOS, musl): those allocators manage their own release.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return freed heap pages to the OS (Arrow's memory pool and glibc's heap); True if glibc's
    malloc_trim was available."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
