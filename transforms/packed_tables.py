"""Arrow tables packed for the shuffle: compressed Arrow IPC streams, made and read in a DoFn's pool.

The dump shards are most of what the import shuffles, and where a line names a dozen of thousands
of segments their segment sets are most of the shards (the 1M ``segments`` mix: 134 MB pickled,
102 MB of it the sets' text). The local runner hands a stage its whole grouped input as one byte
stream, copied into its data channel's buffer and message before the first element: at 10M lines
on that mix the join's stage peaked at ~6.9 GiB, then the memberships' writers (pairs with their
sets) at ~6.5 GiB. A :class:`PackedTable` holds tables as Arrow IPC with compressed buffers
(``CODEC``): the dump shards are packed where they are made (``ReadDumpFile``) and unpacked where
they are joined, the join's memberships and file audience packed once split for the writers and
unpacked where their part is written, all in the DoFns' pools. The profile keys' shards, the
join's side input (which the local runner holds three times, from the profile stage to the run's
end: 0.7 GB at 10M profiles), are packed where they are keyed and unpacked where they are joined. The runner holds and copies the compressed bytes, and a
table is whole again only while its shard is worked on.

LZ4 (Arrow's LZ4 frame): the 1M mix's shards 134 -> 69 MB, ~0.2 s to pack and ~0.1 s to unpack in
one thread; zstd (level 1) gave 52 MB at about twice that CPU. Each table gets the codec that pays
for it (:func:`codec_for`): zstd where dictionaries (the segment sets' text) are most of its bytes,
which it compresses a third better, LZ4 elsewhere (keys and ids, that zstd compresses no better
for twice the CPU: zstd on every table cost the plain mix 4% CPU). The profile keys' shards get
zstd (:data:`PROFILE_KEYS_CODEC`): their profile ids are text, 1M profiles' shards 24.4 MB, 15.7 MB
with zstd, 19.9 MB with LZ4, each in tens of milliseconds. A reader needs no flag: an IPC stream
names its codec.
"""
from __future__ import annotations

import pyarrow as pa

from transforms.arrow_utils import concat_promoted
from transforms.bundle_tables import concat_tables
from transforms.stable_hash import BucketPieces

CODEC, SETS_CODEC = "lz4", "zstd"
_WRITE = {codec: pa.ipc.IpcWriteOptions(compression=pa.Codec(codec, compression_level=level), use_threads=False)
          for codec, level in ((CODEC, None), (SETS_CODEC, 1))}  # the callers are pool threads already
_READ = pa.ipc.IpcReadOptions(use_threads=False)
PROFILE_KEYS_CODEC = SETS_CODEC


class PackedTable:
    """One or more tables, each an IPC stream of compressed buffers (``parts``, bytes: they pickle
    as they are). :meth:`unpack` gives what :func:`~transforms.bundle_tables.concat_tables` of the
    tables gives; ``nbytes`` is the packed size (what a runner codes and holds)."""

    __slots__ = ("parts", "num_rows")

    def __init__(self, parts: tuple[bytes, ...], num_rows: int):
        self.parts, self.num_rows = tuple(parts), num_rows

    @classmethod
    def pack(cls, table: pa.Table, codec: str | None = None) -> "PackedTable":
        """``table`` packed with ``codec`` (:data:`CODEC` or :data:`SETS_CODEC`), by default the one
        :func:`codec_for` gives it."""
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema, options=_WRITE[codec or codec_for(table)]) as writer:
            writer.write_table(table)
        return cls((sink.getvalue().to_pybytes(),), table.num_rows)

    @property
    def nbytes(self) -> int:
        return sum(len(part) for part in self.parts)

    def tables(self) -> list[pa.Table]:
        """The tables packed, in order, as they were (chunks, dictionaries and their index types)."""
        return [pa.ipc.open_stream(part, options=_READ).read_all() for part in self.parts]

    def unpack(self) -> pa.Table:
        return concat_tables(self.tables())

    def __reduce__(self):
        return PackedTable, (self.parts, self.num_rows)


def codec_for(table: pa.Table) -> str:
    """:data:`SETS_CODEC` where the table's dictionaries (segment sets, a distinct one a line on a
    mix of many segments) hold at least half its bytes, else :data:`CODEC`."""
    dictionaries = sum(chunk.dictionary.nbytes for column in table.columns if pa.types.is_dictionary(column.type)
                       for chunk in column.chunks)
    return SETS_CODEC if 2 * dictionaries >= table.nbytes else CODEC


def concat_packed(packed: list[PackedTable]) -> PackedTable:
    """Several packed tables as one (their parts, in order): what a :class:`~transforms.bundle_tables.TableGatherer`
    gathers, unpacked as :func:`~transforms.bundle_tables.concat_tables` of the tables."""
    if len(packed) == 1:
        return packed[0]
    return PackedTable(tuple(part for p in packed for part in p.parts), sum(p.num_rows for p in packed))


def pack_pieces(split: BucketPieces) -> BucketPieces:
    """A table split for an output's writers with each piece packed: the writers' stage gets its
    grouped input as one byte stream too (the join's memberships and file audience, a segment set a
    row), and the runner holds one output's pieces while another's are written."""
    return split._replace(pieces=tuple((bucket, PackedTable.pack(rows)) for bucket, rows in split.pieces))


def unpacked(rows: pa.Table | PackedTable) -> pa.Table:
    """A writer's table: a packed one's tables as :func:`~transforms.arrow_utils.concat_promoted` makes them one."""
    return concat_promoted(rows.tables()) if isinstance(rows, PackedTable) else rows
