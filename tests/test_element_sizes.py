"""The PCollections' coder (transforms.element_sizes): Beam's bytes, tables weighed without pickling."""
from __future__ import annotations

import pickle
import subprocess
import sys

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pytest
from apache_beam.coders import coder_impl, coders, typecoders
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.typehints import typehints

from conftest import ROOT, local_test_pipeline
from transforms.element_sizes import SizedFastPrimitivesCoder
from transforms.packed_tables import PackedTable
from transforms.stable_hash import split_for_write


class _CountingPickleCoder(coders.PickleCoder):
    """Beam's pickle fallback, counting what it encodes."""

    encoded = 0

    def _create_impl(self):
        def dumps(value):
            _CountingPickleCoder.encoded += 1
            return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

        return coder_impl.CallbackCoderImpl(dumps, pickle.loads)


def _table(n: int = 50_000) -> pa.Table:
    return pa.table({"key": pa.array([b"k%07d" % i for i in range(n)]), "profile_id": [f"P{i}" for i in range(n)]})


def _values() -> list:
    table = _table()
    return [
        table,
        (("crm-plain", 3), table),
        (("crm-plain", 3), PackedTable.pack(table)),  # a dump shard (transforms.packed_tables)
        split_for_write(table, "profile_id", 4),
        ("hashes", np.arange(1000, dtype=np.uint64)),
        table.slice(10, 100),
        {"a": 1, "b": [1.5, None]},
        ("crm-plain", 7),
        "text",
        [1, 2, 3],
    ]


@pytest.mark.parametrize("i", range(len(_values())))
def test_values_encode_to_beams_bytes_and_back(i):
    value = _values()[i]
    mine, beams = SizedFastPrimitivesCoder(), coders.FastPrimitivesCoder()
    encoded = mine.encode(value)
    assert encoded == beams.encode(value)
    decoded = mine.decode(encoded)
    if isinstance(value, np.ndarray) or (isinstance(value, tuple) and isinstance(value[-1], np.ndarray)):
        assert np.array_equal(decoded[-1], value[-1])
    elif isinstance(value, tuple) and isinstance(value[-1], PackedTable):
        assert decoded[0] == value[0] and decoded[-1].unpack().equals(value[-1].unpack())
    else:
        assert decoded == value


def test_a_value_holding_tables_is_weighed_by_its_buffers_without_encoding_it():
    counting = _CountingPickleCoder()
    table = _table()
    for value in ((("crm-plain", 3), table), (("crm-plain", 3), PackedTable.pack(table)),
                  split_for_write(table, "profile_id", 4), ("hashes", np.zeros(10**5))):
        _CountingPickleCoder.encoded = 0
        size, observables = SizedFastPrimitivesCoder(counting).get_impl().get_estimated_size_and_observables(value, True)
        assert _CountingPickleCoder.encoded == 0 and observables == []
        real = len(coders.FastPrimitivesCoder().encode(value))
        assert 0.9 * real <= size <= 1.1 * real, (size, real)
        assert SizedFastPrimitivesCoder(counting).get_impl().estimate_size(value) == size
        assert _CountingPickleCoder.encoded == 0
    # Beam's own coder pickles the table once more to weigh it: what this coder is for
    coders.FastPrimitivesCoder(counting).get_impl().get_estimated_size_and_observables((("crm-plain", 3), table), True)
    assert _CountingPickleCoder.encoded == 1


@pytest.mark.parametrize("value", [("crm-plain", 7), {"a": [1, 2]}, "text", list(range(2000)), None])
def test_values_without_buffers_are_weighed_as_beam_weighs_them(value):
    mine, beams = SizedFastPrimitivesCoder().get_impl(), coders.FastPrimitivesCoder().get_impl()
    assert mine.get_estimated_size_and_observables(value, True) == beams.get_estimated_size_and_observables(value, True)
    assert mine.estimate_size(value) == beams.estimate_size(value)


def test_a_job_builds_every_untyped_pcollection_with_it():
    """In a fresh interpreter: importing a job registers the coder, before any pipeline is built."""
    script = ("import pipelines.import_audience; from apache_beam.coders import typecoders; "
              "from apache_beam.typehints import typehints; print(type(typecoders.registry.get_coder(typehints.Any)).__name__)")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["SizedFastPrimitivesCoder"], out.stderr[-2000:]


def test_tables_cross_a_shuffle_with_it():
    assert type(typecoders.registry.get_coder(typehints.Any)) is SizedFastPrimitivesCoder
    table = _table(1000)
    with local_test_pipeline() as p:
        grouped = (p | beam.Create([0, 1, 2]) | beam.Map(lambda i: (i % 2, table.slice(i * 100, 100)))
                   | beam.GroupByKey() | beam.MapTuple(lambda k, ts: (k, sorted(t["profile_id"][0].as_py() for t in ts))))
        assert_that(grouped, equal_to([(0, ["P0", "P200"]), (1, ["P100"])]))
