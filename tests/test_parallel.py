"""The thread pool helpers DoFns use: order kept, errors raised, in-flight work bounded."""
from __future__ import annotations

import threading
import time

import pytest

from transforms.memory import release_free_memory
from transforms.parallel import make_pool, ordered_map


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


def test_free_memory_goes_back_to_the_os_on_glibc():
    import platform

    released = release_free_memory()
    assert released is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")
