"""transforms.packed_tables: tables packed for the shuffle, each with the codec that pays for it."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from transforms.packed_tables import PackedTable


def ipc_bytes(table: pa.Table, codec: str) -> int:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=codec)) as writer:
        writer.write_table(table)
    return len(sink.getvalue())


def shard(n: int, segments_a_line: int) -> pa.Table:
    """A dump shard's columns: random 16-byte keys, and each line's set of ``segments_a_line`` of
    2,000 segment ids (none: the plain mix's few distinct sets)."""
    rng = np.random.default_rng(7)
    if segments_a_line:
        sets = [",".join(map(str, np.sort(rng.choice(2000, segments_a_line, replace=False)) + 44010000))
                for _ in range(n)]
    else:
        sets = [("44010001", "44010002,44010003")[i % 2] for i in range(n)]
    return pa.table({
        "line": pa.array(np.arange(1, n + 1), pa.int64()),
        "key": pa.array([rng.bytes(16) for _ in range(n)], pa.binary()),
        "segments": pa.array(sets).dictionary_encode(),
    })


def test_segment_sets_pack_with_zstd_and_keys_with_lz4():
    """Where a line names a dozen of 2,000 segments, the sets' text is most of a shard and zstd packs
    it a fifth smaller than LZ4 (the 10M segments mix's peak is the runner holding these bytes);
    where the shard is mostly keys (random bytes), zstd gains nothing for twice LZ4's CPU, and LZ4
    packs it. Both unpack to the table packed."""
    many, few = shard(20_000, 12), shard(20_000, 0)
    assert ipc_bytes(many, "zstd") < 0.85 * ipc_bytes(many, "lz4")
    packed = PackedTable.pack(many)
    assert packed.nbytes == ipc_bytes(many, "zstd") and packed.unpack().equals(many)
    packed = PackedTable.pack(few)
    assert packed.nbytes == ipc_bytes(few, "lz4") and packed.unpack().equals(few)
