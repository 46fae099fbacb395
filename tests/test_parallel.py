"""The thread pool helpers DoFns use: order kept, errors raised, in-flight work bounded."""
from __future__ import annotations

import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from transforms.memory import map_big_blocks, release_free_memory, use_heap_allocator
from transforms.parallel import OnceEach, PooledDoFn, make_pool, ordered_map

ROOT = Path(__file__).resolve().parent.parent


def test_results_come_back_in_input_order_whatever_finishes_first():
    pool = make_pool(3)
    try:
        def slow_first(i):
            time.sleep(0.02 if i % 3 == 0 else 0)
            return i * i

        assert list(ordered_map(slow_first, range(20), pool, ahead=3)) == [i * i for i in range(20)]
    finally:
        pool.shutdown()


def test_one_thread_means_no_pool_and_the_same_results():
    assert make_pool(1) is None
    assert list(ordered_map(str, range(5), None, ahead=2)) == ["0", "1", "2", "3", "4"]


def test_an_error_in_the_pool_is_raised_to_the_caller():
    pool = make_pool(2)
    try:
        def fail_on_three(i):
            if i == 3:
                raise ValueError("bad chunk")
            return i

        with pytest.raises(ValueError, match="bad chunk"):
            list(ordered_map(fail_on_three, range(10), pool, ahead=2))
    finally:
        pool.shutdown()


def test_items_are_pulled_only_as_results_are_taken():
    """``ahead`` bounds memory: the caller's iterator is not drained ahead of the consumer."""
    pool = make_pool(2)
    pulled = []
    lock = threading.Lock()

    def items():
        for i in range(100):
            with lock:
                pulled.append(i)
            yield i

    try:
        results = ordered_map(lambda i: i, items(), pool, ahead=2)
        assert [next(results) for _ in range(3)] == [0, 1, 2]
        assert len(pulled) <= 3 + 2
    finally:
        pool.shutdown()


def test_once_each_computes_a_key_once_for_every_task_that_asks():
    memo, calls, started = OnceEach(), [], threading.Event()

    def slow():  # the first task is still computing when the others ask
        calls.append("k")
        started.set()
        time.sleep(0.2)
        return object()

    pool = make_pool(4)
    try:
        first = pool.submit(memo.get, "k", slow)
        started.wait(5)
        others = [pool.submit(memo.get, "k", slow) for _ in range(3)]
        values = [first.result(), *(f.result() for f in others)]
    finally:
        pool.shutdown()
    assert calls == ["k"] and all(v is values[0] for v in values)
    assert memo.get("other", lambda: 2) == 2 and memo.get("other", lambda: 3) == 2  # per key
    only = OnceEach(shared={"k"})  # a key no other task asks for is computed, not kept
    assert [only.get("alone", lambda: n) for n in (1, 2)] == [1, 2]
    assert [only.get("k", lambda: n) for n in (1, 2)] == [1, 1]


def test_once_each_raises_a_failed_computation_to_every_task_that_asked():
    memo = OnceEach()

    def broken():
        raise RuntimeError("normalize failed")

    for _ in range(2):  # the asker that computed it, then one that finds it computed
        with pytest.raises(RuntimeError, match="normalize failed"):
            memo.get("k", broken)


def test_free_memory_goes_back_to_the_os_on_glibc():
    released = release_free_memory()
    assert released is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


@pytest.fixture
def arrow_pool():
    """The test process's Arrow pool, set back after the test."""
    before = pa.default_memory_pool()
    yield
    pa.set_memory_pool(before)


def test_arrow_buffers_come_from_glibcs_heap_once_chosen(arrow_pool, monkeypatch):
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    assert use_heap_allocator() is True
    before = pa.system_memory_pool().bytes_allocated()
    column = pa.array(["a@example.com"] * 100_000)
    assert pa.default_memory_pool().backend_name == "system"
    assert pa.system_memory_pool().bytes_allocated() - before >= column.nbytes
    assert use_heap_allocator() is True  # idempotent


def test_an_operators_arrow_pool_wins(arrow_pool, monkeypatch):
    monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", "mimalloc")
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    assert use_heap_allocator() is False
    assert pa.default_memory_pool().backend_name == "mimalloc"


def test_pooled_dofns_set_up_on_glibcs_heap(arrow_pool, monkeypatch):
    """A worker's heavy DoFns (PooledDoFn) choose the pool in setup(), as the launcher does locally."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    fn = PooledDoFn()
    fn.setup()
    fn.teardown()
    assert pa.default_memory_pool().backend_name == "system"


def _export_dofns() -> list:
    """The export's DoFns that read profiles and earlier pairs and build its shards' tables."""
    from datetime import date

    from transforms.config_load import parse_config
    from transforms.export_spec import export_spec
    from transforms.export_classify import ClassifyShard, ReadEarlierPart
    from transforms.export_profiles import ReadBlockedProfiles, ReadTargetedProfiles
    from transforms.export_decide import DecideShard

    cfg = parse_config({"profiles": {"path": "p.parquet", "phone": None, "visitor_ids": None, "opt_out": None,
                                     "opt_out_missing": "consented"},
                        "data_sources": [{"name": "crm", "dpid": 1, "segments": "seg/*", "id_type": "declared",
                                          "declared": "plain", "match_on": "email"}]})
    spec = export_spec(cfg, "A", None, date(2026, 11, 22))
    return [ReadTargetedProfiles(cfg, spec, 2), ReadBlockedProfiles(cfg, spec), ReadEarlierPart(2), ClassifyShard(),
            DecideShard(spec.traits)]


@pytest.mark.parametrize("index", range(5), ids=["targeted", "blocked", "earlier", "classify", "decide"])
def test_the_exports_heavy_dofns_set_up_on_glibcs_heap(arrow_pool, monkeypatch, index):
    """The export's graph has no PooledDoFn: on a worker (Dataflow, Flink, a multi-process runner),
    where the launcher never ran, its profiles' buffers stayed in mimalloc's pool."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    fn = _export_dofns()[index]
    fn.setup()
    fn.teardown()
    assert pa.default_memory_pool().backend_name == "system"


_COMMAND_POOL = """
import os, sys
from pipelines import cli
cli.arrow_on_the_heap()
import pyarrow as pa
t = pa.table({"k": list(range(50_000)), "v": ["x"] * 50_000})
joined = t.join(t, "k", right_suffix="_r")  # Acero: Arrow's C++ default pool, out of pyarrow's reach
print(pa.default_memory_pool().backend_name, pa.mimalloc_memory_pool().bytes_allocated() > 0)
"""


@pytest.mark.parametrize("operator, expected", [(None, "system False"), ("mimalloc", "mimalloc True")])
def test_the_command_puts_arrows_cpp_pool_on_glibcs_heap_before_pyarrow_loads(monkeypatch, operator, expected):
    """``audience-sync`` chooses Arrow's C++ default pool (Acero's joins use it) through the environment
    before anything imports pyarrow; an operator's ARROW_DEFAULT_MEMORY_POOL wins."""
    monkeypatch.delenv("ARROW_DEFAULT_MEMORY_POOL", raising=False)
    if operator:
        monkeypatch.setenv("ARROW_DEFAULT_MEMORY_POOL", operator)
    out = subprocess.run([sys.executable, "-c", _COMMAND_POOL], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[0] == expected


_BIG_BLOCKS = """
import sys
from transforms.memory import map_big_blocks

def resident():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096

if sys.argv[1] == "mapped":
    assert map_big_blocks()
warm = b"x" * (30 << 20)  # freeing a 30 MiB mapped block raises glibc's threshold to 30 MiB
del warm
before = resident()
blocks = [b"x" * (20 << 20) for _ in range(10)]
above = b"x" * (1 << 20)  # a live block above them: the heap's top cannot be trimmed
del blocks[:]
print((resident() - before) >> 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_big_blocks_freed_go_back_to_the_os_once_mapped_on_their_own(monkeypatch):
    """200 MiB of 20 MiB blocks, freed: glibc's heap keeps them resident by default, and gives them
    back at once when map_big_blocks() has set its threshold (the profile stage's setting)."""
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)

    def resident_after_free(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", _BIG_BLOCKS, mode], cwd=ROOT, capture_output=True, text=True,
                             check=True)
        return int(out.stdout)

    assert resident_after_free("default") >= 150
    assert resident_after_free("mapped") <= 20


def test_an_operators_malloc_threshold_wins(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")
    assert map_big_blocks() is False
