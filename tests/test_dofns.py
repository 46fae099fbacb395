"""The import's main DoFns driven directly (``setup()`` / ``process()`` / ``finish_bundle()``), without
a pipeline: a change to one of them is checked in a second, not through the end-to-end suite."""
from __future__ import annotations

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.utils.windowed_value import WindowedValue

from test_pipeline import UNKNOWN, V1, V2, V3, make_job
from transforms.dump_files import FileStats
from transforms.dumps import REJECTED_SCHEMA
from transforms.join import JoinShard
from transforms.stable_hash import KeyFilter, bucket_of, hash64
from transforms import key_profiles
from transforms.join_inputs import ReadDumpFile
from transforms.key_profiles import KeyProfiles
from transforms.keys import pack_visitor_ids, segment_rows
from transforms.outcomes import COUNTS, Count, Metric, Reason
from transforms.packed_tables import PackedTable, pack_pieces, unpacked
from transforms.write_parts import ADD, WriteParts, _WritePart


def run_dofn(fn: beam.DoFn, *elements_and_side_inputs) -> tuple[list, dict[str, list]]:
    """setup(), start_bundle(), process() per element, finish_bundle(), teardown(): the main outputs
    and the tagged outputs by tag (WindowedValues of finish_bundle unwrapped)."""
    main, tagged = [], {}

    def collect(out):
        if isinstance(out, beam.pvalue.TaggedOutput):
            value = out.value.value if isinstance(out.value, WindowedValue) else out.value
            tagged.setdefault(out.tag, []).append(value)
        else:
            main.append(out.value if isinstance(out, WindowedValue) else out)

    fn.setup()
    fn.start_bundle()
    for element, side_inputs in elements_and_side_inputs:
        for out in fn.process(element, *side_inputs) or ():
            collect(out)
    for out in fn.finish_bundle() or ():
        collect(out)
    fn.teardown()
    return main, tagged


def summed(counts: list) -> dict[Count, int]:
    totals: dict[Count, int] = {}
    for key, n in counts:
        totals[key] = totals.get(key, 0) + n
    return totals


def test_read_dump_file_keys_shards_and_routes_every_line(tmp_path):
    cfg = make_job(tmp_path)
    path = str(next((tmp_path / "vis").iterdir()))
    shards, tagged = run_dofn(ReadDumpFile(cfg, run_date=None), (("vis", path), ()))
    keyed = pa.concat_tables([packed.unpack() for _, packed in shards])
    assert {bucket for (name, bucket), _ in shards} <= set(range(cfg.buckets))
    assert all(name == "vis" for (name, _), _ in shards)
    # six lines: V1, V3, UNKNOWN and V2 (removals only) are keyed... except the removals-only line
    assert sorted(keyed["line"].to_pylist()) == [1, 2, 3]
    assert set(keyed["key"].to_pylist()) == set(pack_visitor_ids(pa.array([V1, V3, UNKNOWN])).to_pylist())
    rejected = pa.concat_tables(tagged[ReadDumpFile.REJECTED])
    assert sorted(zip(rejected["line"].to_pylist(), rejected["reason"].to_pylist())) == [
        (4, "invalid_visitor_id"), (5, "empty_line"), (6, "removals_only")]
    assert summed(tagged[COUNTS]) == {Count(Metric.RECEIVED, "vis"): 6}
    (stats_path, stats), = tagged[ReadDumpFile.FILE_STATS]
    assert stats_path == path and isinstance(stats, FileStats) and stats.lines == 6
    (name, hashes), = tagged[ReadDumpFile.KEY_HASHES]
    assert name == "vis" and np.array_equal(np.sort(hashes), np.sort(hash64(keyed["key"])))


def test_dump_shards_cross_the_shuffle_compressed(tmp_path):
    """Lines that each name a dozen of 2,000 segments (as AAM dumps do): the shards' segment sets
    were most of what the runner coded, shuffled and held for the join, whose stage got its whole
    grouped input as one byte stream before its first element (1.05 GiB at 10M lines: the run's
    peak). The shards now go packed (compressed Arrow IPC), under half their tables' bytes as the
    runner codes them, and unpack to the same rows."""
    import gzip

    from apache_beam.coders import typecoders
    from apache_beam.typehints import typehints

    cfg = make_job(tmp_path)
    rng = np.random.default_rng(5)
    n = 4000
    sets = [",".join(map(str, np.sort(rng.choice(2000, 12, replace=False)) + 44010000)) for _ in range(n)]
    ids = [f"1{v:037d}" for v in rng.integers(0, 10**18, n)]
    path = next((tmp_path / "vis").iterdir())
    path.write_bytes(gzip.compress("".join(f"{i} {s}\n" for i, s in zip(ids, sets)).encode()))
    shards, _ = run_dofn(ReadDumpFile(cfg, run_date=None), (("vis", str(path)), ()))
    coder = typecoders.registry.get_coder(typehints.Any)  # what the runner codes the ReadDumps output with
    encoded = sum(len(coder.encode(shard)) for shard in shards)
    tables = [packed.unpack() for _, packed in shards]
    assert len(tables) == cfg.buckets
    keyed = pa.concat_tables(tables).combine_chunks()
    assert keyed["line"].to_pylist() != list(range(1, n + 1))  # sharded by key...
    order = np.argsort(keyed["line"].to_numpy())
    assert keyed["line"].to_numpy()[order].tolist() == list(range(1, n + 1))  # ...every line once
    assert keyed["segments"].combine_chunks().dictionary_decode().to_numpy(zero_copy_only=False)[order].tolist() == sets
    assert encoded < sum(t.nbytes for t in tables) / 2, (encoded, sum(t.nbytes for t in tables))


def test_key_profiles_keeps_only_the_candidates_the_bloom_filter_lets_through(tmp_path):
    cfg = make_job(tmp_path)
    wanted = pack_visitor_ids(pa.array([V3]))
    filters = {"vis": KeyFilter(hash64(wanted))}  # no filter for "hashed": it keeps nothing
    shards, tagged = run_dofn(KeyProfiles(cfg), (str(tmp_path / "profiles.parquet"), (filters,)))
    # packed in the pool (transforms.packed_tables): the join's side input, which the local runner
    # holds three times to the run's end (0.7 GB at 10M profiles)
    assert shards and all(isinstance(t, PackedTable) for _, t in shards)
    rows = pa.concat_tables([t.unpack() for (name, _), t in shards if name == "vis"])
    assert sorted(rows["profile_id"].to_pylist()) == ["p2", "p3"]  # V3 is on both
    assert set(rows["key"].to_pylist()) == set(wanted.to_pylist())
    assert not [t for (name, _), t in shards if name == "hashed"]
    counts = summed(tagged[COUNTS])
    assert counts[Count(Metric.PROFILES_READ)] == 3
    assert counts[Count(Metric.PROFILE_KEYS, "vis")] == 4  # V1, V2, V3, V3
    assert counts[Count(Metric.PROFILE_KEYS_SHUFFLED, "vis")] == 2
    assert counts[Count(Metric.PROFILE_KEYS, "hashed")] == 2 and counts[Count(Metric.PROFILE_VALUES_WITHOUT_KEY, "hashed")] == 1


def test_key_profiles_gives_the_same_shards_whatever_the_batch_size_and_threads(tmp_path, monkeypatch):
    """Batches are keyed in the pool while the next one is read: the shards (and screen rows) are
    the same, in the same order, with one-row batches, one batch, one thread or two."""
    cfg = make_job(tmp_path)
    filters = {"vis": KeyFilter(hash64(pack_visitor_ids(pa.array([V1, V2, V3]))))}
    results = []
    for batch_rows, threads in ((1 << 18, 2), (1, 2), (1, 1), (2, 2)):
        monkeypatch.setattr(KeyProfiles, "BATCH_ROWS", batch_rows)
        monkeypatch.setattr(KeyProfiles, "SCREEN_ELEMENT_ROWS", 2)
        fn = KeyProfiles(cfg.model_copy(update={"threads": threads}))
        shards, tagged = run_dofn(fn, (str(tmp_path / "profiles.parquet"), (filters,)))
        rows = [(shard, r) for shard, t in shards for r in zip(t.unpack()["key"].to_pylist(), t.unpack()["profile_id"].to_pylist())]
        screened = pa.concat_tables(tagged[KeyProfiles.SCREEN])["profile_id"].to_pylist()
        results.append((rows, screened, summed(tagged[COUNTS])))
    assert len(results[0][0]) == 4 and results[0][1] == ["p1", "p2", "p3"]
    assert all(r == results[0] for r in results[1:])


def test_key_profiles_sends_each_batchs_profile_ids_split_as_the_memberships_writers_split(tmp_path, monkeypatch):
    """With profile_ids (a nightly carrying memberships), every batch's distinct ids leave split by
    the memberships' bucketing, whatever the batch size or threads; without, none leave. A writer
    shard with only ids writes no part (ids are not rows)."""
    from transforms.join import MEMBERSHIP_SCHEMA
    from transforms.write_parts import PROFILE_IDS
    from transforms.stable_hash import BucketPieces

    cfg = make_job(tmp_path)
    for batch_rows, threads in ((1 << 18, 2), (2, 2), (1, 1)):
        monkeypatch.setattr(KeyProfiles, "BATCH_ROWS", batch_rows)
        fn = KeyProfiles(cfg.model_copy(update={"threads": threads}), profile_ids=True)
        _, tagged = run_dofn(fn, (str(tmp_path / "profiles.parquet"), ({},)))
        sent = tagged[KeyProfiles.PROFILE_IDS]
        assert all(isinstance(p, BucketPieces) and (p.bucket_by, p.buckets) == ("profile_id", cfg.buckets) for p in sent)
        pieces = [(bucket, rows) for p in sent for bucket, rows in p.pieces]
        assert all((bucket_of(rows["profile_id"], cfg.buckets) == bucket).all() for bucket, rows in pieces)
        assert sorted(i for _, rows in pieces for i in rows["profile_id"].to_pylist()) == ["p1", "p2", "p3"]
    _, tagged = run_dofn(KeyProfiles(cfg), (str(tmp_path / "profiles.parquet"), ({},)))
    assert KeyProfiles.PROFILE_IDS not in tagged
    spec = WriteParts("reconciled", MEMBERSHIP_SCHEMA, ["data_source", "segment_id", "profile_id"], "profile_id",
                      str(tmp_path / "out"), buckets=4, merge=lambda tables, files: (tables[ADD], []))
    out, tagged = run_dofn(_WritePart(spec), ((1, [(PROFILE_IDS, pa.table({"profile_id": ["p1"]}))]), ([],)))
    assert out == [] and tagged == {} and not (tmp_path / "out").exists()


def test_a_batchs_data_sources_share_one_memo_and_batches_do_not(tmp_path, monkeypatch):
    # What data sources compute alike (transforms.key_cache_rows.computed_entries: here a second
    # partner's hashed emails) is computed once a batch: one memo per batch, handed to each of its
    # data sources; a config whose data sources compute nothing alike gets none.
    plain = make_job(tmp_path)
    hashed = next(ds for ds in plain.data_sources if ds.name == "hashed")
    cfg = plain.model_copy(update={"data_sources": [*plain.data_sources, hashed.model_copy(update={"name": "partner"})]})
    monkeypatch.setattr(KeyProfiles, "BATCH_ROWS", 2)
    seen = []
    real = key_profiles.computed_entries

    def recorded(profiles, ds, cfg, key_filter, memo):
        seen.append((profiles.column("profile_id")[0].as_py(), ds.name, memo))
        return real(profiles, ds, cfg, key_filter, memo)

    monkeypatch.setattr(key_profiles, "computed_entries", recorded)
    run_dofn(KeyProfiles(cfg), (str(tmp_path / "profiles.parquet"), ({},)))
    memos: dict = {}
    for first_row, name, memo in seen:
        memos.setdefault(first_row, set()).add(id(memo))
        assert memo is not None
    assert len(memos) > 1 and all(len(ids) == 1 for ids in memos.values())  # one per batch
    assert len(set().union(*memos.values())) == len(memos)  # not shared between batches
    assert {name for _, name, _ in seen} == {"vis", "hashed", "partner"}
    seen.clear()
    run_dofn(KeyProfiles(plain), (str(tmp_path / "profiles.parquet"), ({},)))
    assert seen and all(memo is None for _, _, memo in seen)


def test_an_error_keying_a_batch_reaches_the_caller(tmp_path, monkeypatch):
    cfg = make_job(tmp_path)
    monkeypatch.setattr(KeyProfiles, "BATCH_ROWS", 1)

    def broken(self, profiles, filters, entries, memo, ds):
        raise RuntimeError("keying failed")

    monkeypatch.setattr(KeyProfiles, "_key_source", broken)
    with pytest.raises(RuntimeError, match="keying failed"):  # not swallowed by the pool
        run_dofn(KeyProfiles(cfg), (str(tmp_path / "profiles.parquet"), ({},)))


class _MultiMap:
    """What a runner hands JoinShard for ``AsMultiMap``: lookup by key, [] when absent."""

    def __init__(self, mapping):
        self._mapping = mapping

    def __getitem__(self, key):
        return self._mapping.get(key, [])


def test_join_shard_emits_memberships_rejections_and_counts(tmp_path):
    cfg = make_job(tmp_path)
    path = str(next((tmp_path / "vis").iterdir()))
    dump_shards, _ = run_dofn(ReadDumpFile(cfg, run_date=None), (("vis", path), ()))
    profile_shards, _ = run_dofn(KeyProfiles(cfg), (str(tmp_path / "profiles.parquet"),
                                                     ({"vis": KeyFilter(hash64(pack_visitor_ids(pa.array([V1, V2, V3]))))},)))
    by_shard: dict = {}
    for shard, table in profile_shards:
        by_shard.setdefault(shard, []).append(table)
    grouped: dict = {}
    for shard, table in dump_shards:
        grouped.setdefault(shard, []).append(table)
    members, tagged = run_dofn(JoinShard(cfg), *[((shard, tables), (_MultiMap(by_shard),)) for shard, tables in grouped.items()])
    # Split for the reconciled output's writers (by profile id, cfg.buckets) and packed, in the join's pool.
    assert all((m.bucket_by, m.buckets) == ("profile_id", cfg.buckets) for m in members)
    assert all(isinstance(rows, PackedTable) for m in members for _, rows in m.pieces)
    pieces = [(bucket, rows.unpack()) for m in members for bucket, rows in m.pieces]
    assert all(set(bucket_of(rows["profile_id"], cfg.buckets)) == {bucket} for bucket, rows in pieces)
    rows = segment_rows(pa.concat_tables([rows for _, rows in pieces]))  # a row per segment, as the writers make them
    got = set(zip(rows["segment_id"].cast(pa.string()).to_pylist(), rows["profile_id"].to_pylist()))
    assert got == {("10", "p1"), ("11", "p1"), ("11", "p2"), ("11", "p3")}
    rejected = pa.concat_tables(tagged[JoinShard.REJECTED])
    assert rejected["reason"].to_pylist() == ["no_matching_profile"] and rejected["line"].to_pylist() == [3]
    # the lines naming each segment to add, the unmatched line 3 included
    assert summed(tagged[COUNTS]) == {Count(Metric.RECONCILED, "vis"): 2, Count(Metric.SEGMENT_LINES, "vis", "10"): 2,
                                      Count(Metric.SEGMENT_LINES, "vis", "11"): 2}
    # once per segment and bundle, not per shard: with thousands of segments the runner carried a count
    # per segment of every shard (27 s of a 1M import with 2,000 segments)
    assert len(grouped) > 1 and sorted(c.detail for c, _ in tagged[COUNTS] if c.metric == Metric.SEGMENT_LINES) == ["10", "11"]
    assert JoinShard.FILE_AUDIENCE not in tagged  # a visitor source keeps no file audience


def test_join_shard_sends_one_sample_of_unmatched_lines_per_data_source_and_bundle(tmp_path):
    """The shards of a bundle pool their sampled-line candidates: one table per data source, the
    ``k`` lines the diagnosis would have kept from every shard's own candidates."""
    import gzip

    from transforms.diagnosis_sample import SampleLines, bottom_k, candidates, place_hashes

    cfg = make_job(tmp_path).model_copy(update={"diagnosis_sample": 7})
    lines = "".join(f"{10**37 + i * 7919} 10\n" for i in range(300))  # visitor IDs no profile has
    path = tmp_path / "vis" / "ftp_1_2_full_1486140844000.sync.gz"
    path.write_bytes(gzip.compress(lines.encode()))
    dump_shards, _ = run_dofn(ReadDumpFile(cfg, run_date=None), (("vis", str(path)), ()))
    grouped: dict = {}
    for shard, table in dump_shards:
        grouped.setdefault(shard, []).append(table)
    assert len(grouped) == 4  # every bucket has lines: four shards' candidates to pool
    members, tagged = run_dofn(JoinShard(cfg), *[((shard, tables), (_MultiMap({}),)) for shard, tables in grouped.items()])
    assert members == []
    (name, (k, sampled)), = tagged[JoinShard.UNMATCHED]
    per_shard = [(7, candidates(t["key"], Reason.NO_MATCHING_PROFILE, 7, place_hashes(t["source_file"], t["line"])))
                 for t in (pa.concat_tables([p.unpack() for p in packed]) for packed in grouped.values())]
    combine = SampleLines()
    expected = combine.extract_output(combine.add_input(combine.add_input(combine.add_input(combine.add_input(
        combine.create_accumulator(), per_shard[0]), per_shard[1]), per_shard[2]), per_shard[3]))
    assert (name, k, sampled.num_rows) == ("vis", 7, 7)
    assert bottom_k(sampled, 7, ordered=True).equals(expected)


def test_write_part_sorts_dedupes_writes_and_counts(tmp_path):
    spec = WriteParts("rejected", REJECTED_SCHEMA, ["data_source", "source_file", "line"], "line", str(tmp_path),
                      buckets=4, dedupe=True, count_column="reason", count_metric=Metric.REJECTED, threads=2)
    table = pa.table({"data_source": ["b", "a", "a", "a"], "source_file": ["f", "f", "f", "f"], "line": [2, 9, 1, 9],
                      "reason": ["empty_line", "malformed_line", "empty_line", "malformed_line"]}, schema=REJECTED_SCHEMA)
    counts, tagged = run_dofn(_WritePart(spec), ((3, [(ADD, table)]), ()))
    (name, path, rows), = tagged[WriteParts.PARTS]
    assert (name, rows) == ("rejected", 3) and path.endswith("rejected/part-00003-of-00004.parquet")
    written = pq.read_table(path)
    assert written.to_pylist() == [
        {"data_source": "a", "source_file": "f", "line": 1, "reason": "empty_line"},
        {"data_source": "a", "source_file": "f", "line": 9, "reason": "malformed_line"},
        {"data_source": "b", "source_file": "f", "line": 2, "reason": "empty_line"},
    ]
    assert summed(counts) == {Count(Metric.REJECTED, "a", "empty_line"): 1, Count(Metric.REJECTED, "a", "malformed_line"): 1,
                              Count(Metric.REJECTED, "b", "empty_line"): 1}


@pytest.mark.parametrize("threads", [1, 2])
def test_write_part_counts_once_per_key_and_bundle(tmp_path, threads):
    """Two parts of a bundle naming the same segments: one count per (data source, segment) for the
    bundle, summed, not one per part (thousands of segments times the parts were that many elements
    for the runner to code, flatten and combine)."""
    from transforms.join import MEMBERSHIP_SCHEMA

    spec = WriteParts("reconciled", MEMBERSHIP_SCHEMA, ["data_source", "segment_id", "profile_id"], "profile_id",
                      str(tmp_path), buckets=4, dedupe=True, count_column="segment_id", count_metric=Metric.MEMBERS,
                      threads=threads)
    part = lambda *profiles: pa.table({"data_source": ["s"] * 2 * len(profiles), "segment_id": ["7", "8"] * len(profiles),
                                       "profile_id": [p for p in profiles for _ in (0, 1)]}, schema=MEMBERSHIP_SCHEMA)
    counts, tagged = run_dofn(_WritePart(spec), ((1, [(ADD, part("p1"))]), ()), ((3, [(ADD, part("p2", "p3"))]), ()))
    assert len(tagged[WriteParts.PARTS]) == 2
    assert sorted(counts) == [(Count(Metric.MEMBERS, "s", "7"), 3), (Count(Metric.MEMBERS, "s", "8"), 3)]


def test_split_for_write_gathers_pieces_split_in_the_join_as_it_splits_plain_tables():
    """The join's memberships come split for the writers (BucketPieces); the writers' split gathers
    them by bucket. Each bucket gets the rows that splitting the same tables itself gives, whatever
    mix of split and plain tables arrives; pieces split for another bucket count or column are split
    again, never written to the wrong part."""
    from transforms.arrow_utils import constant
    from transforms.write_parts import ADD, _SplitForWrite
    from transforms.stable_hash import split_for_write

    def members(first: int, n: int, source: str) -> pa.Table:
        return pa.table({"data_source": constant(source, n), "segment_id": pa.array([str(i % 7) for i in range(n)]),
                         "profile_id": pa.array([f"p{first + i}" for i in range(n)])})

    tables = [members(0, 500, "a"), members(400, 300, "b"), members(900, 50, "a")]

    def by_bucket(outputs: list) -> dict[int, set]:
        got: dict[int, set] = {}
        for bucket, (tag, rows) in outputs:
            assert tag == ADD
            rows = unpacked(rows)
            got.setdefault(bucket, set()).update(zip(rows["data_source"].cast(pa.string()).to_pylist(),
                                                     rows["segment_id"].to_pylist(), rows["profile_id"].to_pylist()))
        return got

    expected, _ = run_dofn(_SplitForWrite("profile_id", 8), *[(t, ()) for t in tables])
    expected = by_bucket(expected)
    assert sum(len(rows) for rows in expected.values()) == 850 and len(expected) == 8
    mixed = [split_for_write(tables[0], "profile_id", 8), tables[1], split_for_write(tables[2], "profile_id", 8)]
    got, _ = run_dofn(_SplitForWrite("profile_id", 8), *[(t, ()) for t in mixed])
    assert len(got) == 8  # one element per bucket, split and plain tables together
    assert by_bucket(got) == expected
    other = [split_for_write(t, "profile_id", 4) for t in tables[:2]] + [split_for_write(tables[2], "segment_id", 8)]
    got, _ = run_dofn(_SplitForWrite("profile_id", 8), *[(t, ()) for t in other])
    assert by_bucket(got) == expected
    tagged, _ = run_dofn(_SplitForWrite("profile_id", 8), *[((ADD, t), ()) for t in mixed])
    assert by_bucket(tagged) == expected
    # the join's pieces come packed (transforms.packed_tables): a bucket's go on packed, unpacked by its
    # writer, unless plain tables reach the bucket too
    packed = [pack_pieces(split_for_write(t, "profile_id", 8)) for t in tables]
    got, _ = run_dofn(_SplitForWrite("profile_id", 8), *[(t, ()) for t in packed])
    assert all(isinstance(rows, PackedTable) for _, (_, rows) in got) and by_bucket(got) == expected
    got, _ = run_dofn(_SplitForWrite("profile_id", 8), *[(t, ()) for t in [packed[0], tables[1], packed[2]]])
    assert by_bucket(got) == expected


def test_a_dump_gone_before_the_split_step_fails_naming_it(tmp_path):
    # Listed, then removed (a partner re-uploading) before SplitBigDumps sizes it: the match gave
    # no metadata and the step failed with "IndexError: list index out of range", no file named.
    from transforms.errors import InputError
    from transforms.join_inputs import SplitBigDumps

    split = SplitBigDumps(1)
    split.setup()
    gone = str(tmp_path / "ftp_1_2_full_1486140844000.sync")
    with pytest.raises(InputError, match="ftp_1_2_full_1486140844000.sync"):
        list(split.process(("v", gone)))
