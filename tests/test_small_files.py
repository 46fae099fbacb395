"""Inputs in many small files: a delivery the platform splits by size, an extract in Spark's parts.
Their text or batches are keyed together and the tables they give are gathered over the bundle
(``transforms.bundle_tables``, ``ReadDumpFile._key_small``, ``KeyProfiles._take_small``). Neither may
change a byte of the outputs."""
from __future__ import annotations

import gzip
import json
import re
import threading
from types import SimpleNamespace

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_import_e2e import expected, rows

from pipelines import import_audience
from transforms import bundle_tables, join_inputs, profile_reads
from transforms.key_profiles import KeyProfiles
from transforms.arrow_utils import narrow_dictionary
from transforms.bundle_tables import TableGatherer, concat_hashes, concat_tables
from transforms.config import DataSourceConfig
from transforms.diagnosis_sample import bottom_k, rejected_candidates
from transforms.dumps import parse_chunk
from transforms.keys import dump_keys
from transforms.progress import TALLY


def split_deliveries(demo, lines_per_file: int) -> int:
    """Every data source's dumps cut into splits of ``lines_per_file`` lines (gzip, numbered from 001);
    returns how many files there are now."""
    made = 0
    for folder in sorted((demo / "segments").iterdir()):
        files = sorted(folder.iterdir())
        text = b"".join(gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes() for f in files)
        stem = re.match(r"ftp_\d+_\d+_full_\d{13}", files[0].name).group(0)
        for f in files:
            f.unlink()
        lines = text.splitlines(keepends=True)
        for i in range(0, len(lines), lines_per_file):
            (folder / f"{stem}{i // lines_per_file + 1:03d}.sync.gz").write_bytes(gzip.compress(b"".join(lines[i:i + lines_per_file])))
            made += 1
    return made


def test_many_small_dumps_keyed_together_give_the_bytes_they_give_apart(demo_copy, tmp_path, monkeypatch):
    """100 dumps of 10 lines: keyed together and gathered (the default) or each on its own (both
    turned off): every part and report.json the same; the memberships are the demo's."""
    assert split_deliveries(demo_copy, 10) == 100
    job = str(demo_copy / "job.yaml")
    TALLY.reset()
    together = import_audience.run(["--config", job, "--output", str(tmp_path / "together")])
    assert TALLY.snapshot().get("small_dumps_keyed_together") == 100
    monkeypatch.setattr(join_inputs, "SMALL_FILE_BYTES", 0)
    monkeypatch.setattr(bundle_tables, "FLUSH_BYTES", 0)
    TALLY.reset()
    apart = import_audience.run(["--config", job, "--output", str(tmp_path / "apart")])
    assert TALLY.snapshot().get("small_dumps_keyed_together", 0) == 0
    assert rows(tmp_path / "together" / "reconciled") == expected("memberships.csv")
    parts = sorted(p.relative_to(tmp_path / "apart") for p in (tmp_path / "apart").rglob("*.parquet"))
    assert len(parts) > 3
    for rel in parts:
        assert (tmp_path / "together" / rel).read_bytes() == (tmp_path / "apart" / rel).read_bytes(), rel
    assert together == apart
    assert json.loads((tmp_path / "together" / "report.json").read_text()) == \
        json.loads((tmp_path / "apart" / "report.json").read_text())
    assert together["totals"]["received"] == 1000


def extract_in_parts(demo, parts: int):
    """The demo's extract cut into ``parts`` Parquet files under ``parts/``; returns the job's path."""
    profiles = pq.read_table(demo / "profiles.parquet")
    (demo / "parts").mkdir()
    for i, part in enumerate(np.array_split(np.arange(profiles.num_rows), parts)):
        pq.write_table(profiles.take(pa.array(part)), demo / "parts" / f"part-{i:05d}.parquet")
    (demo / "profiles.parquet").unlink()
    job = demo / "job.yaml"
    job.write_text(job.read_text().replace("path: profiles.parquet", "path: parts/part-*.parquet"))
    return job


def batch_sizes(monkeypatch, method: str) -> list[int]:
    """The rows of each profile batch KeyProfiles hands to ``method`` (``_keying``, ``_batch_work``)."""
    sizes, original = [], getattr(KeyProfiles, method)
    monkeypatch.setattr(KeyProfiles, method, lambda self, batch, filters: sizes.append(batch.num_rows) or original(self, batch, filters))
    return sizes


def reader_threads(monkeypatch) -> list[str]:
    """The thread each part of the extract is read in (where its first batch is read)."""
    readers, real = [], profile_reads.counted_profiles

    def recorded(*args, **kwargs):
        readers.append(threading.current_thread().name)
        yield from real(*args, **kwargs)

    monkeypatch.setattr(profile_reads, "counted_profiles", recorded)
    return readers


@pytest.fixture(scope="module")
def parts_runs(tmp_path_factory) -> SimpleNamespace:
    """A copy of the demo imported as it is (``one``: its report; outputs under ``base/one``), then its
    extract cut into 10 parts (``job``) and imported with the defaults (``together``: the batches
    keyed, ``keyed``; the threads the parts were read in, ``readers``) and into an empty key cache
    ``base/cache`` (``first``: the batches whose keys it computed, ``batches``). Made once for the three
    tests below, which run their other imports of the same copy (the outputs name the dumps' paths:
    same dumps, same paths) into folders of their own; a test that runs into the cache copies it."""
    import shutil

    from conftest import DEMO

    base = tmp_path_factory.mktemp("parts")
    demo = base / "demo"
    shutil.copytree(DEMO, demo)
    made = SimpleNamespace(base=base, demo=demo)
    made.one = import_audience.run(["--config", str(demo / "job.yaml"), "--output", str(base / "one")])
    made.job = extract_in_parts(demo, 10)
    with pytest.MonkeyPatch.context() as patch:
        made.keyed, made.readers = batch_sizes(patch, "_keying"), reader_threads(patch)
        made.together = import_audience.run(["--config", str(made.job), "--output", str(base / "together")])
    with pytest.MonkeyPatch.context() as patch:
        made.batches = batch_sizes(patch, "_batch_work")
        TALLY.reset()
        made.first = import_audience.run(["--config", str(made.job), "--output", str(base / "first"),
                                          "--key-cache", str(base / "cache")])
    return made


def test_an_extract_in_many_parts_keyed_together_gives_the_bytes_it_gives_apart(parts_runs, tmp_path, monkeypatch):
    """The demo's 300 profiles in 10 parts: their batches keyed together and their shards gathered
    (the default), or each part on its own: every part and report.json the same, and the memberships
    the demo's."""
    job, together, base = parts_runs.job, parts_runs.together, parts_runs.base
    assert parts_runs.keyed == [300]  # the ten parts keyed as one batch
    keyed = batch_sizes(monkeypatch, "_keying")
    monkeypatch.setattr(KeyProfiles, "SMALL_BATCH_ROWS", 0)
    monkeypatch.setattr(bundle_tables, "FLUSH_BYTES", 0)
    apart = import_audience.run(["--config", str(job), "--output", str(tmp_path / "apart")])
    assert keyed == [30] * 10
    assert rows(base / "together" / "reconciled") == expected("memberships.csv")
    parts = sorted(p.relative_to(tmp_path / "apart") for p in (tmp_path / "apart").rglob("*.parquet"))
    assert len(parts) > 3
    for rel in parts:
        assert (base / "together" / rel).read_bytes() == (tmp_path / "apart" / rel).read_bytes(), rel
    assert together == apart and together["profiles_read"] == 300
    assert json.loads((base / "together" / "report.json").read_text()) == \
        json.loads((tmp_path / "apart" / "report.json").read_text())


def test_an_extract_in_many_parts_keys_from_the_cache_as_one_file_does(parts_runs, tmp_path, monkeypatch):
    """With the key cache: the demo's extract in 10 parts is keyed as one batch and written as one
    part of the cache; a second run takes every key from it; both give the bytes of a run without
    a cache, and of the extract in one file."""
    import shutil

    one, job, base = parts_runs.one, parts_runs.job, parts_runs.base
    assert parts_runs.first["totals"] == one["totals"]
    shutil.copytree(base / "cache", tmp_path / "cache")  # the cache the first run wrote
    batches = batch_sizes(monkeypatch, "_batch_work")
    TALLY.reset()
    run = import_audience.run(["--config", str(job), "--output", str(tmp_path / "second"), "--key-cache", str(tmp_path / "cache")])
    assert run["totals"] == one["totals"]
    assert parts_runs.batches + batches == [300, 300]
    assert TALLY.snapshot().get("profile_rows_keyed_from_cache") == 300
    manifest = json.loads((tmp_path / "cache" / "MANIFEST.json").read_text())
    assert [part["rows"] for part in manifest["parts"]] == [300, 0]  # one part a run (the second computed nothing)
    for path in (base / "one").rglob("*.parquet"):
        for night in (base / "first", tmp_path / "second"):
            assert (night / path.relative_to(base / "one")).read_bytes() == path.read_bytes(), path


def test_the_parts_of_an_extract_are_read_in_the_pool_and_give_the_bytes_read_in_the_stages_thread(parts_runs, tmp_path,
                                                                                                  monkeypatch):
    """Each part of an extract is read (opened, checked, standardized, sketched) in the profile stage's
    pool, ahead of the part being keyed: read in the stage's own thread, one after the other, Spark's
    200 parts cost 2.4-2.6 s of stage where one file cost 1.4-1.6 s. The outputs are those of a run
    reading every part in the stage's own thread (``threads: 1``), with and without the key cache."""
    job, base = parts_runs.job, parts_runs.base
    pooled, readers = parts_runs.together, parts_runs.readers  # the defaults
    assert len(readers) == 10 and all(name.startswith("audience-sync") for name in readers), readers
    cached = parts_runs.first  # into an empty key cache
    one = job.with_name("threads-1.yaml")  # beside the job's: the same dumps and extract
    one.write_text(job.read_text() + "\nthreads: 1\n")
    readers = reader_threads(monkeypatch)
    alone = import_audience.run(["--config", str(one), "--output", str(tmp_path / "alone")])
    assert len(readers) == 10 and not any(name.startswith("audience-sync") for name in readers), readers  # no pool
    assert pooled == alone == cached and pooled["profiles_read"] == 300
    parts = sorted(p.relative_to(tmp_path / "alone") for p in (tmp_path / "alone").rglob("*.parquet"))
    assert len(parts) > 3
    for rel in parts:
        for run in ("together", "first"):
            assert (base / run / rel).read_bytes() == (tmp_path / "alone" / rel).read_bytes(), (run, rel)
    for run in ("together", "first"):
        assert json.loads((base / run / "report.json").read_text()) == \
            json.loads((tmp_path / "alone" / "report.json").read_text())


def test_big_parts_of_an_extract_are_read_ahead_a_batch_of_rows_at_most(demo_copy, tmp_path, monkeypatch):
    """Parts read ahead hold their first batch until keyed: a big part's is a whole batch (BATCH_ROWS
    rows). Started 16 parts ahead, the pool read them all while the first was keyed: 16 batches held
    (Spark's parts of a 100M-row extract: 4M rows of profiles, where 2 batches were). Read ahead, parts
    hold at most a batch's rows, and one a pool thread is reading each; the others wait their turn."""
    job = extract_in_parts(demo_copy, 20)  # 15 rows a part: two batches of 8, the first a big one
    monkeypatch.setattr(KeyProfiles, "BATCH_ROWS", 8)
    monkeypatch.setattr(KeyProfiles, "SMALL_BATCH_ROWS", 4)
    lock, held, peak = threading.Lock(), [0], [0]
    start, batches = profile_reads.FileRead.start, profile_reads.FileRead.batches

    def started(read):
        start(read)
        with lock:
            held[0] += sum(profiles.num_rows for profiles, _, _ in read._read)
            peak[0] = max(peak[0], held[0])

    def handed(read):
        with lock:
            held[0] -= sum(profiles.num_rows for profiles, _, _ in read._read)
        yield from batches(read)

    monkeypatch.setattr(profile_reads.FileRead, "start", started)
    monkeypatch.setattr(profile_reads.FileRead, "batches", handed)
    report = import_audience.run(["--config", str(job), "--output", str(tmp_path / "out")])
    assert report["profiles_read"] == 300 and held == [0]
    assert 0 < peak[0] <= (2 + 1) * 8, peak  # threads: 2 (the demo's)


def _table(values: list[str]) -> pa.Table:
    return pa.table({"s": narrow_dictionary(pa.array(values).dictionary_encode()), "n": pa.array(range(len(values)))})


def test_a_gatherer_holds_small_tables_per_key_and_gives_them_as_one_in_order():
    gatherer = TableGatherer(concat_tables, flush_bytes=10_000, hold_bytes=1 << 30)
    small = [_table([f"v{i}", f"w{i}"]) for i in range(3)]
    assert gatherer.add("a", small[0]) == [] and gatherer.add("b", small[1]) == [] and gatherer.add("a", small[2]) == []
    big = _table([f"x{i}" for i in range(2000)])
    assert gatherer.add("c", big) == [("c", big)]  # as big as a flush: straight through
    drained = list(gatherer.drain())
    assert [key for key, _ in drained] == ["a", "b"]  # in the order the keys came
    a = drained[0][1]
    assert a["s"].to_pylist() == ["v0", "w0", "v2", "w2"] and a["n"].to_pylist() == [0, 1, 0, 1]
    assert a["s"].num_chunks == 1 and len(a["s"].chunks[0].dictionary) == 4
    assert list(gatherer.drain()) == []


def test_a_gatherer_gives_a_key_once_its_tables_reach_the_flush_size_and_all_at_the_hold_size():
    piece = _table([f"v{i}" for i in range(100)])
    gatherer = TableGatherer(concat_tables, flush_bytes=piece.nbytes * 3, hold_bytes=piece.nbytes * 5)
    assert gatherer.add("a", piece) == [] and gatherer.add("a", piece) == []
    (key, table), = gatherer.add("a", piece)
    assert key == "a" and table.num_rows == 300
    assert gatherer.add("a", piece) == [] and gatherer.add("b", piece) == [] and gatherer.add("c", piece) == []
    assert gatherer.add("d", piece) == []
    out = gatherer.add("e", piece)  # 5 held: every key goes
    assert [(k, t.num_rows) for k, t in out] == [("a", 100), ("b", 100), ("c", 100), ("d", 100), ("e", 100)]
    hashes = TableGatherer(concat_hashes, flush_bytes=1 << 20)
    hashes.add("s", np.arange(3, dtype=np.uint64))
    hashes.add("s", np.arange(2, dtype=np.uint64))
    assert [(k, v.tolist()) for k, v in hashes.drain()] == [("s", [0, 1, 2, 0, 1])]


def test_the_diagnosis_candidates_of_files_keyed_together_are_those_of_each_file():
    """Lines of two files in one table: a rejected line is found by its file and number (the same
    numbers are in both files), and the sample's draw is the one of each file apart."""
    ds = DataSourceConfig(name="h", dpid=1, segments="x", id_type="declared", declared="hashed", match_on="email",
                          normalization="adobe")
    good = "a" * 64
    texts = {"f1.sync": [f"{good} 1", "zz1 2", f"{good} 3", "not-a-digest 4"],
             "f2.sync": ["bad-one 1", f"{good} 2", "zz2 3", "zz3 4"]}
    apart, parsed_all = [], []
    for path, lines in texts.items():
        parsed, _, _ = parse_chunk(("\n".join(lines) + "\n").encode(), 1, path, ds)
        keys = dump_keys(parsed, ds, None, None)
        apart.append(rejected_candidates(parsed, keys.rejected, 10, path))
        parsed_all.append(parsed)
    parsed = concat_tables(parsed_all)
    together = rejected_candidates(parsed, dump_keys(parsed, ds, None, None).rejected, 10, None)
    expected_sample = bottom_k(pa.concat_tables(apart), 10, ordered=True)
    assert expected_sample.num_rows == 5
    assert bottom_k(together, 10, ordered=True).equals(expected_sample)


@pytest.mark.parametrize("size", [0, 1])
def test_concat_tables_of_one_table_is_that_table(size):
    table = _table(["v"] * size)
    assert concat_tables([table]) is table


def test_chunks_of_several_files_parse_as_each_file_apart():
    """parse_chunks: the rows, line numbers, files and rejections parse_chunk gives each file; a bad
    line break fails naming its own file and line."""
    from transforms.dumps import parse_chunks
    from transforms.errors import InputError

    ds = DataSourceConfig(name="v", dpid=1, segments="x", id_type="visitor")
    vid = "1" * 38
    jobs = [(f"{vid} 1,2\nbad 3\n{vid} 4\n".encode(), 1, "a.sync"), (b"", 1, "empty.sync"),
            (f"{vid} 5\n\n{vid} 6,7 8\nx\n".encode(), 41, "b.sync")]
    parsed, rejected, lines = parse_chunks(jobs, ds)
    apart = [parse_chunk(chunk, first, path, ds) for chunk, first, path in jobs]
    assert lines == sum(n for _, _, n in apart) == 7
    assert parsed.to_pylist() == [row for p, _, _ in apart for row in p.to_pylist()]
    assert rejected.to_pylist() == [row for _, r, _ in apart for row in r.to_pylist()]
    assert [(r["source_file"], r["line"]) for r in parsed.to_pylist()] == [("a.sync", 1), ("a.sync", 2), ("a.sync", 3), ("b.sync", 41), ("b.sync", 43)]
    with pytest.raises(InputError, match=r"b\.sync.*line 42"):
        parse_chunks([jobs[0], (f"{vid} 5\n{vid}\r 6\n".encode(), 41, "b.sync")], ds)


def test_candidates_of_files_keyed_together_tell_files_of_one_name_in_two_folders_apart():
    """Two small files of one name in two folders (names that do not parse, sizes that differ: the
    preflight reads both) keyed together: a rejected line is found by its file's path, not its name
    (line 1 of the one was taken for line 1 of the other too: ArrowInvalid, the run failed)."""
    from transforms.dumps import parse_chunks

    ds = DataSourceConfig(name="h", dpid=1, segments="x", id_type="declared", declared="hashed", match_on="email",
                          normalization="adobe")
    good = "a" * 64
    jobs = [(f"zz1 1\n{good} 2\n".encode(), 1, "in/a/part-1.txt"),
            (f"{good} 1\nzz2 2\n{good} 3\n".encode(), 1, "in/b/part-1.txt")]
    apart = []
    for chunk, first, path in jobs:
        parsed, _, _ = parse_chunk(chunk, first, path, ds)
        apart.append(rejected_candidates(parsed, dump_keys(parsed, ds, None, None).rejected, 10, path))
    parsed, _, _ = parse_chunks(jobs, ds)
    together = rejected_candidates(parsed, dump_keys(parsed, ds, None, None).rejected, 10, None)
    expected_sample = bottom_k(pa.concat_tables(apart), 10, ordered=True)
    assert sorted(expected_sample["value"].to_pylist()) == [b"zz1", b"zz2"]
    assert bottom_k(together, 10, ordered=True).equals(expected_sample)


def test_small_dumps_held_over_all_data_sources_stay_bounded(tmp_path, monkeypatch):
    """Small files' text is held per data source until it fills a chunk: with many data sources
    (129 in one config), each under a chunk, a bundle held up to a chunk per data source (8 MiB
    each: 1 GB). What is held over all of them stays under two chunks, and every line is still
    read once."""
    from transforms.config_load import parse_config
    from transforms.join_inputs import ReadDumpFile
    from transforms.outcomes import Metric

    chunk = 4096
    monkeypatch.setattr(join_inputs, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(join_inputs, "SMALL_FILE_BYTES", chunk)
    vid = "1" * 38
    sources, elements = [], []
    for i in range(8):
        folder = tmp_path / f"s{i}"
        folder.mkdir()
        path = folder / f"ftp_1_{i + 1}_full_1486140844000.sync"
        path.write_text("".join(f"{vid} {n}\n" for n in range(1, 60)))  # ~2.6 KB: under a chunk alone
        sources.append({"name": f"s{i}", "dpid": i + 1, "segments": str(folder / "*"), "id_type": "visitor"})
        elements.append((f"s{i}", str(path)))
    pq.write_table(pa.table({"profile_id": ["p"], "visitor_ids": [[vid]]}), tmp_path / "profiles.parquet")
    cfg = parse_config({"profiles": {"path": str(tmp_path / "profiles.parquet"), "email": None, "phone": None},
                        "data_sources": sources, "threads": 1})
    fn = ReadDumpFile(cfg, run_date=None)
    fn.setup()
    fn.start_bundle()
    received, held = {}, []

    def count(outs):
        for out in outs:
            if isinstance(out, beam.pvalue.TaggedOutput) and out.tag == "counts":
                key, n = getattr(out.value, "value", out.value)
                if key.metric == Metric.RECEIVED:
                    received[key.data_source] = received.get(key.data_source, 0) + n

    for element in elements:
        count(fn.process(element))
        held.append(sum(len(text) for jobs in fn._small.values() for text, _, _ in jobs))
    count(fn.finish_bundle())
    fn.teardown()
    assert max(held) < 2 * chunk, held
    assert received == {f"s{i}": 59 for i in range(8)}
