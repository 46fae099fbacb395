"""The profile-key cache (transforms.key_cache): same bytes with and without it, unchanged profiles
reused, and anything wrong with a cache (damaged, foreign, from other rules) means a full recompute."""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import import_audience, nightly
from transforms import key_cache, key_cache_index, key_cache_rows, key_profiles, keys, profiles
from transforms.config_load import load_config, parse_config
from transforms.errors import RunFailed
from transforms.key_cache import CacheLayout, CacheWriter, column_name, load_cache, row_hashes, source_identity
from transforms.key_cache_index import LoadedCache
from transforms.key_cache_publish import PublishKeyCache
from transforms.key_cache_rows import EMPTY_COLUMN, ComputedColumn, computed_entries, merged_entries, shared_work
from transforms.parallel import OnceEach, make_pool
from transforms.progress import TALLY
from transforms.stable_hash import KeyFilter, hash64

from bench import CHANGED  # noqa: E402 - scripts/ is on the path (conftest)

NIGHTS = ("2026-11-22", "2026-11-23")
PROFILES = 3000
HITS = "profile_rows_keyed_from_cache"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Two nights of the generator's job (night 2: 2% of the profiles changed, a quarter of those
    renamed) and the partitions of a run without the cache, for reference."""
    from bench import make_data

    work = tmp_path_factory.mktemp("kc")
    folder, _ = make_data(work, "nightly", PROFILES, 1.0)
    reference = work / "reference"
    for day in NIGHTS:
        nightly.run(["--config", str(folder / "job.yaml"), "--root", str(reference), "--date", day, "--no-key-cache"])
    return folder


def _small_batches(monkeypatch):
    # several record batches per part: a batch's rows are found across the cache's chunks
    monkeypatch.setattr(profiles, "BATCH_ROWS", 700)
    monkeypatch.setattr(key_profiles.KeyProfiles, "BATCH_ROWS", 700)


@pytest.fixture(autouse=True)
def small_batches(monkeypatch):
    _small_batches(monkeypatch)


def night(data: Path, root: Path, day: str, *flags: str) -> int:
    """Run one night; returns the profile rows keyed from the cache."""
    TALLY.reset()
    result = nightly.run(["--config", str(data / "job.yaml"), "--root", str(root), "--date", day, *flags])
    assert result[0]["status"] == "published"
    return TALLY.snapshot().get(HITS, 0)


def same_partition(root: Path, data: Path, day: str) -> None:
    reference = data.parent / "reference" / f"dt={day}"
    mine = root / f"dt={day}"
    files = sorted(p.relative_to(reference) for p in reference.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(mine) for p in mine.rglob("*") if p.is_file())
    for name in files:
        assert (mine / name).read_bytes() == (reference / name).read_bytes(), name


def manifest(root: Path) -> dict:
    return json.loads((root / "_key_cache" / "MANIFEST.json").read_text())


def test_unchanged_profiles_reuse_their_keys_and_outputs_are_the_same_bytes(data, cached_nights, tmp_path):
    root = tmp_path / "root"
    assert cached_nights.hits[NIGHTS[0]] == 0  # nothing cached yet
    assert [p["rows"] for p in manifest(cached_nights.one)["parts"]] == [PROFILES]
    shutil.copytree(cached_nights.two, root)  # the same root after night 2
    hits = cached_nights.hits[NIGHTS[1]]
    changed = round(PROFILES * CHANGED)  # values changed in place, or a new id (one profile gone, one new)
    assert hits == PROFILES - changed
    for day in NIGHTS:
        same_partition(root, data, day)
    parts = manifest(root)["parts"]
    assert [p["rows"] for p in parts] == [PROFILES, changed]  # night 2 appended only what it computed
    assert pa.ipc.open_file(root / "_key_cache" / parts[0]["file"]).num_record_batches == -(-PROFILES // 700)
    assert sorted(p.name for p in (root / "_key_cache").iterdir()) == sorted(["MANIFEST.json", "_incoming"] + [p["file"] for p in parts])
    assert not list((root / "_key_cache" / "_incoming").iterdir())
    # the same night again: every row is in the cache now
    assert night(data, root, NIGHTS[1], "--force") == PROFILES
    same_partition(root, data, NIGHTS[1])


def _corrupt(cache: Path) -> None:
    part = cache / manifest(cache.parent)["parts"][0]["file"]
    raw = bytearray(part.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    part.write_bytes(bytes(raw))


def _truncate(cache: Path) -> None:
    part = cache / manifest(cache.parent)["parts"][0]["file"]
    part.write_bytes(part.read_bytes()[:-100])


def _edit_manifest(change):
    def edit(cache: Path) -> None:
        doc = json.loads((cache / "MANIFEST.json").read_text())
        change(doc)
        (cache / "MANIFEST.json").write_text(json.dumps(doc))
    return edit


DAMAGE = {
    "flipped byte": _corrupt,
    "truncated part": _truncate,
    "missing part": lambda cache: (cache / manifest(cache.parent)["parts"][0]["file"]).unlink(),
    "missing manifest": lambda cache: (cache / "MANIFEST.json").unlink(),
    "not json": lambda cache: (cache / "MANIFEST.json").write_text("{not json"),
    "other code": _edit_manifest(lambda doc: doc["code"].update(code="0" * 64)),
    "other library": _edit_manifest(lambda doc: doc["code"]["libraries"].update(pyarrow="1.0.0")),
    "other format": _edit_manifest(lambda doc: doc.update(format=0)),
    "other rules": _edit_manifest(lambda doc: next(iter(doc["columns"].values())).update(normalization="google")),
    "row count": _edit_manifest(lambda doc: doc["parts"][0].update(rows=doc["parts"][0]["rows"] - 1)),
}


@pytest.fixture(scope="module")
def cached_nights(data, tmp_path_factory) -> SimpleNamespace:
    """Roots after night 1 (``one``) and after nights 1 and 2 (``two``) with the cache on, in small
    batches as every run of this module, and the profile rows each night keyed from the cache
    (``hits``). Read-only: a test that runs another night, or damages one, copies the root first."""
    base = tmp_path_factory.mktemp("cached")
    with pytest.MonkeyPatch.context() as patch:
        _small_batches(patch)
        hits = {NIGHTS[0]: night(data, base / "one", NIGHTS[0])}
        shutil.copytree(base / "one", base / "two")
        hits[NIGHTS[1]] = night(data, base / "two", NIGHTS[1])
    return SimpleNamespace(one=base / "one", two=base / "two", hits=hits)


@pytest.fixture(scope="module")
def night_one(cached_nights) -> Path:
    """A root after night 1 with the cache on."""
    return cached_nights.one


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_or_foreign_cache_is_not_read(data, night_one, tmp_path, damage):
    cache = tmp_path / "root" / "_key_cache"
    shutil.copytree(night_one / "_key_cache", cache)
    cfg = load_config(str(data / "job.yaml"))
    layout, code = CacheLayout.of(cfg), key_cache.code_identity()
    assert load_cache(str(cache), layout, code) is not None
    DAMAGE[damage](cache)
    assert load_cache(str(cache), layout, code) is None


def test_a_damaged_cache_means_every_key_is_computed_and_the_same_bytes(data, night_one, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(night_one, root)
    _corrupt(root / "_key_cache")
    assert night(data, root, NIGHTS[1]) == 0
    same_partition(root, data, NIGHTS[1])
    assert [p["rows"] for p in manifest(root)["parts"]] == [PROFILES]  # rewritten whole
    assert night(data, root, NIGHTS[1], "--force") == PROFILES


def test_a_part_found_corrupt_once_batches_were_keyed_with_it_leaves_nothing_of_it(data, night_one, tmp_path, monkeypatch, caplog):
    # A big cache's digest check ends after the first batches were keyed with it; this one finds a
    # flipped byte: those batches are keyed again without the cache, and nothing read from it left
    # (no profile counted as keyed from it, the night's bytes those of a night without it).
    root = tmp_path / "root"
    shutil.copytree(night_one, root)
    _corrupt(root / "_key_cache")
    checked = key_cache._file_digest

    def slow_check(path: str) -> str:
        time.sleep(1.5)
        return checked(path)

    monkeypatch.setattr(key_cache, "_file_digest", slow_check)
    monkeypatch.setattr(key_profiles.KeyProfiles, "BATCH_ROWS", 100)
    keyed = []
    cached_batch = key_profiles.KeyProfiles._cached_batch
    monkeypatch.setattr(key_profiles.KeyProfiles, "_cached_batch",
                        lambda self, *a: keyed.append(self._loaded[0] is not None) or cached_batch(self, *a))
    with caplog.at_level(logging.WARNING, logger="audience_sync.key_cache"):
        assert night(data, root, NIGHTS[1]) == 0
    assert "a part differs from its manifest entry" in caplog.text
    assert sum(keyed) >= 2  # batches were keyed with the cache before its check was over
    same_partition(root, data, NIGHTS[1])
    assert [p["rows"] for p in manifest(root)["parts"]] == [PROFILES]  # rewritten whole


@pytest.mark.parametrize("damaged", [False, True])
def test_an_empty_extract_names_tonights_base_only_once_the_cache_is_checked(data, night_one, tmp_path, monkeypatch,
                                                                            caplog, damaged):
    # No batch is keyed, so nothing waits for the parts' check but the base the profile reader names
    # for tonight's cache: an intact cache stays whole, a corrupt part is never carried on.
    cache = tmp_path / "root" / "_key_cache"
    shutil.copytree(night_one / "_key_cache", cache)
    if damaged:
        _corrupt(cache)
    checked = key_cache._file_digest
    monkeypatch.setattr(key_cache, "_file_digest", lambda path: time.sleep(1.0) or checked(path))
    extract = tmp_path / "empty.parquet"
    pq.write_table(pq.read_table(data / NIGHTS[1].replace("-", "") / "profiles.parquet").slice(0, 0), extract)
    dofn = key_profiles.KeyProfiles(load_config(str(data / "job.yaml")), key_cache.cache_dirs(str(cache), str(tmp_path / "run")))
    dofn.setup()
    try:
        with caplog.at_level(logging.WARNING, logger="audience_sync.key_cache"):
            dofn.start_bundle()
            outputs = [*dofn.process(str(extract), {}), *dofn.finish_bundle()]
    finally:
        dofn.teardown()
    parts = [o.value.value for o in outputs if getattr(o, "tag", None) == key_profiles.KeyProfiles.CACHE_PARTS]
    assert len(parts) == 1 and parts[0]["live_rows"] == 0
    assert parts[0]["base"] == ([] if damaged else manifest(cache.parent)["parts"])
    assert ("a part differs from its manifest entry" in caplog.text) == damaged


def test_an_extract_read_in_another_order_finds_its_rows_in_an_index_of_every_row(data, night_one, tmp_path):
    # Night 2's extract shuffled: no batch's rows sit in runs of the cache; the rows are searched.
    job = tmp_path / "job"
    shutil.copytree(data, job)
    extract = job / NIGHTS[1].replace("-", "") / "profiles.parquet"
    table = pq.read_table(extract)
    pq.write_table(table.take(pa.array(np.random.default_rng(1).permutation(table.num_rows))), extract)
    roots = {"cached": tmp_path / "cached", "plain": tmp_path / "plain"}
    # Night 1 (its inputs the same as this copy's), with the cache and without it (the reference's).
    shutil.copytree(night_one, roots["cached"])
    reference = data.parent / "reference"
    shutil.copytree(reference, roots["plain"], ignore=lambda folder, names: [f"dt={NIGHTS[1]}"] if folder == str(reference) else [])
    assert night(job, roots["cached"], NIGHTS[1]) == PROFILES - round(PROFILES * CHANGED)
    night(job, roots["plain"], NIGHTS[1], "--no-key-cache")
    partitions = {name: root / f"dt={NIGHTS[1]}" for name, root in roots.items()}
    files = sorted(p.relative_to(partitions["plain"]) for p in partitions["plain"].rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(partitions["cached"]) for p in partitions["cached"].rglob("*") if p.is_file())
    for name in files:
        assert (partitions["cached"] / name).read_bytes() == (partitions["plain"] / name).read_bytes(), name


def test_a_failed_night_leaves_the_cache_as_it_was(data, night_one, tmp_path):
    job = tmp_path / "job"
    shutil.copytree(data, job)
    root = tmp_path / "root"
    shutil.copytree(night_one, root)  # night 1 (its inputs the same as this copy's)
    before = {p.name: p.read_bytes() for p in (root / "_key_cache").iterdir() if p.is_file()}
    victim = next((job / NIGHTS[1].replace("-", "") / "segments").rglob("*.gz"))
    victim.write_bytes(victim.read_bytes()[:-20])
    with pytest.raises(Exception):
        nightly.run(["--config", str(job / "job.yaml"), "--root", str(root), "--date", NIGHTS[1]])
    assert {p.name: p.read_bytes() for p in (root / "_key_cache").iterdir() if p.is_file()} == before
    assert not list((root / "_key_cache" / "_incoming").iterdir())


def test_too_many_parts_rewrite_the_cache(data, cached_nights, tmp_path, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(cached_nights.two, root)  # nights 1 and 2: MAX_RUNS 2 rewrites from a third run on
    monkeypatch.setattr(key_cache, "MAX_RUNS", 2)
    assert len(manifest(root)["parts"]) == 2
    assert night(data, root, NIGHTS[1], "--force") == 0  # due for a rewrite: not read
    assert [p["rows"] for p in manifest(root)["parts"]] == [PROFILES]
    same_partition(root, data, NIGHTS[1])


def test_an_extract_of_more_files_than_the_runs_allowed_still_reuses_keys(data, tmp_path, monkeypatch):
    # Each extract file added a part a night: an extract of 3 files held 3 parts after night 1, and
    # with MAX_RUNS 2 every night rewrote the cache and took nothing from it (20 files at 16). A
    # bundle's files now write one part (the local runner: one bundle, so one part a night).
    monkeypatch.setattr(key_cache, "MAX_RUNS", 2)
    job = tmp_path / "job"
    shutil.copytree(data, job)
    for day in NIGHTS:
        folder = job / day.replace("-", "")
        table = pq.read_table(folder / "profiles.parquet")
        (folder / "profiles.parquet").unlink()
        (folder / "profiles").mkdir()
        for i, start in enumerate(range(0, PROFILES, PROFILES // 3 + 1)):
            pq.write_table(table.slice(start, PROFILES // 3 + 1), folder / "profiles" / f"part-{i}.parquet")
    text = (job / "job.yaml").read_text()
    (job / "job.yaml").write_text(text.replace("{date:%Y%m%d}/profiles.parquet", "{date:%Y%m%d}/profiles/*.parquet"))
    root = tmp_path / "root"
    night(job, root, NIGHTS[0])
    assert len(manifest(root)["parts"]) == 1
    assert night(job, root, NIGHTS[1]) == PROFILES - round(PROFILES * CHANGED)
    assert night(job, root, NIGHTS[1], "--force") == 0  # two runs' parts: due for a rewrite
    assert len(manifest(root)["parts"]) == 1


def test_import_uses_a_cache_only_when_asked(data, tmp_path):
    day = NIGHTS[1].replace("-", "")
    cfg = (data / "job.yaml").read_text().replace("{date:%Y%m%d}", day)
    (data / f"import-{day}.yaml").write_text(cfg)
    args = ["--config", str(data / f"import-{day}.yaml"), "--run-date", NIGHTS[1]]
    TALLY.reset()
    import_audience.run([*args, "--output", str(tmp_path / "plain")])
    assert HITS not in TALLY.snapshot() and not (tmp_path / "cache").exists()
    for name in ("first", "second"):
        TALLY.reset()
        import_audience.run([*args, "--output", str(tmp_path / name), "--key-cache", str(tmp_path / "cache")])
    assert TALLY.snapshot()[HITS] == PROFILES
    for name in ("first", "second"):
        for path in (tmp_path / "plain").rglob("*.parquet"):
            assert (tmp_path / name / path.relative_to(tmp_path / "plain")).read_bytes() == path.read_bytes()


# ------------------------------------------------------------------------------------- units
def _profiles(rows: list[tuple]) -> pa.Table:
    ids, emails, visitors = zip(*rows)
    return pa.table({"profile_id": list(ids), "visitor_ids": pa.array(list(visitors), pa.list_(pa.string())),
                     "opt_out": [False] * len(rows), "k:email": list(emails), "k:mobile": [None] * len(rows),
                     "k:crm_id": [f"c-{i}" for i in ids]})


V1, V2 = "1" * 38, "2" * 38
BEFORE = [("a", "A@example.com", [V1]), ("b", None, []), ("c", "c@example.com", [V1, " x ", None, V2]),
          ("d", "d@example.com", None), ("e", "e@example.com", [V2]), ("g", "g@example.com", [" y ", V2])]
AFTER = [("a", "A@example.com", [V1]), ("c", "c@example.com", [V1, " x ", None]), ("b", None, []),  # c changed
         ("f", "f@example.com", [V2, V2]), ("d", "new@example.com", None), ("a", "A@example.com", [V1]),  # e gone, f new, a twice
         ("g", "g@example.com", [" y ", V2])]  # g: a list with a value that gives no key, cached


@pytest.mark.parametrize("batches", [[6], [2, 4], [1, 1, 4]], ids=["one-batch", "two-batches", "three-batches"])
def test_merged_keys_equal_computed_keys_row_for_row(tmp_path, batches):
    # The cache is read chunk by chunk (a chunk per cached batch): a batch's rows found in several
    # chunks, lists whose entries cross no chunk, null keys read from each chunk's validity bits.
    cfg = load_config(str(Path(__file__).resolve().parent.parent / "testdata" / "demo" / "job.yaml"))
    layout = CacheLayout.of(cfg)
    before, after = _profiles(BEFORE), _profiles(AFTER)
    (tmp_path / "stage").mkdir()
    writer = CacheWriter(str(tmp_path / "stage"), "extract.parquet", layout.schema())
    start = 0
    for rows in batches:
        batch, columns = before.slice(start, rows), {}
        for ds in cfg.data_sources:
            columns.update(ComputedColumn.of(batch, ds, cfg).part_columns(layout.sources[ds.name]))
        writer.write(*row_hashes(batch, layout.values), columns)
        start += rows
    part = writer.close()
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.move(part["file"], cache / "part-1.arrow")
    doc = {**layout.doc(key_cache.code_identity()), "format": key_cache.CACHE_FORMAT, "live_rows": part["rows"],
           "parts": [{"file": "part-1.arrow", "rows": part["rows"], key_cache.PART_DIGEST: part[key_cache.PART_DIGEST]}]}
    (cache / "MANIFEST.json").write_text(json.dumps(doc))
    loaded = load_cache(str(cache), layout, key_cache.code_identity())
    found = loaded.lookup(*row_hashes(after, layout.values))
    assert [int(f >= 0) for f in found] == [1, 0, 1, 0, 0, 1, 1]
    missed = np.flatnonzero(found < 0)
    sub = after.take(pa.array(missed))
    for ds in cfg.data_sources:
        name = layout.sources[ds.name]
        every = computed_entries(after, ds, cfg, None).candidates  # (a filter keeping nothing: no candidates)
        assert every()[0].num_rows == 0
        hashes = hash64(computed_entries(after, ds, cfg, KeyFilter(np.zeros(0, np.uint64))).reference())
        filters = [None, KeyFilter(hashes), KeyFilter(hashes[::2]), KeyFilter(hashes[1:2])]  # none, all, some, one
        for key_filter in filters:
            plain = computed_entries(after, ds, cfg, key_filter)
            flags, reference_flags = {}, {}
            for _ in range(2):  # the second time, the chunks' flags of the first are read back
                merged = merged_entries(after["profile_id"], found, missed, loaded.columns[name], ComputedColumn.of(sub, ds, cfg),
                                        key_filter, flags, reference_flags)
                assert (merged.keys, merged.without_key) == (plain.keys, plain.without_key)
                loaded.release_pages()  # the parts' mapped pages dropped (as after each batch): read again from the file
                (table, at), (want, want_at) = merged.candidates(), plain.candidates()
                assert table.equals(want) and at.tolist() == want_at.tolist()
                assert sorted(merged.reference().to_pylist()) == sorted(plain.reference().to_pylist())
            nothing = merged_entries(after["profile_id"], np.full(len(after), -1), np.arange(len(after)), EMPTY_COLUMN,
                                     ComputedColumn.of(after, ds, cfg), key_filter, {}, {})
            assert nothing.candidates()[0].equals(plain.candidates()[0]) and nothing.keys == plain.keys
        if key_filter is not None and plain.keys:
            assert flags  # the candidates' flags were read from the chunks
    assert sum(len(computed_entries(after, ds, cfg, None).reference()) for ds in cfg.data_sources) > 10


def test_merged_reference_keys_of_a_big_batch_are_the_sampled_ones(tmp_path, monkeypatch):
    # A batch of REFERENCE_ALL keys or more adds 1 in 2**REFERENCE_SHARE_BITS of them (by hash):
    # made small here, so that the six rows' keys are a big batch, sampled 1 in 2.
    monkeypatch.setattr("transforms.iv_check.REFERENCE_ALL", 2)
    monkeypatch.setattr("transforms.iv_check.REFERENCE_SHARE_BITS", 1)
    test_merged_keys_equal_computed_keys_row_for_row(tmp_path, [2, 4])
    cfg = load_config(str(Path(__file__).resolve().parent.parent / "testdata" / "demo" / "job.yaml"))
    sampled = [computed_entries(_profiles(AFTER), ds, cfg, None) for ds in cfg.data_sources]
    assert 0 < sum(len(e.reference()) for e in sampled) < sum(e.keys for e in sampled)


def test_a_batch_computes_what_its_data_sources_share_once(monkeypatch):
    # A second partner's hashed emails under the same rules have the same keys as the first's: one
    # computation for both. The encrypted email source normalizes emails as they do: one
    # normalization for the three. Each gets what it gets computed alone, keyed side by side.
    cfg = load_config(str(Path(__file__).resolve().parent.parent / "testdata" / "demo" / "job.yaml"))
    hashed = next(ds for ds in cfg.data_sources if ds.declared == "hashed" and ds.match_on == "email")
    encrypted = next(ds for ds in cfg.data_sources if ds.decrypts)
    sources = [hashed, hashed.model_copy(update={"name": "partner-emails", "dpid": 99999}), encrypted]
    batch = _profiles(AFTER)
    filters = [KeyFilter(hash64(computed_entries(batch, ds, cfg, KeyFilter(np.zeros(0, np.uint64))).reference()))
               for ds in sources]
    alone = [computed_entries(batch, ds, cfg, f) for ds, f in zip(sources, filters)]
    calls = {"normalize": 0, "keys": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(keys.normalize, "normalize_keys", counted("normalize", keys.normalize.normalize_keys))
    monkeypatch.setattr(key_cache_rows, "profile_keys", counted("keys", key_cache_rows.profile_keys))
    memo, pool = OnceEach(), make_pool(3)
    try:
        shared = [f.result() for f in [pool.submit(computed_entries, batch, ds, cfg, f, memo) for ds, f in zip(sources, filters)]]
    finally:
        pool.shutdown()
    assert calls == {"normalize": 1, "keys": 2}
    for want, got in zip(alone, shared):
        assert (got.keys, got.without_key) == (want.keys, want.without_key) and want.keys
        (table, at), (want_table, want_at) = got.candidates(), want.candidates()
        assert table.equals(want_table) and at.tolist() == want_at.tolist() and table.num_rows
        assert got.reference().equals(want.reference())
    # With the cache, a batch's changed rows are computed per cached column: normalized once too.
    memo, calls["normalize"] = OnceEach(), 0
    columns = [ComputedColumn.of(batch, ds, cfg, memo) for ds in (hashed, encrypted)]
    assert calls["normalize"] == 1
    for ds, column in zip((hashed, encrypted), columns):
        assert column.row_keys.equals(ComputedColumn.of(batch, ds, cfg).row_keys)


def test_only_what_several_data_sources_ask_for_is_kept_in_a_batchs_memo():
    cfg = load_config(str(Path(__file__).resolve().parent.parent / "testdata" / "demo" / "job.yaml"))
    hashed = next(ds for ds in cfg.data_sources if ds.declared == "hashed" and ds.match_on == "email")
    # The demo: hashed and encrypted emails normalized alike; nothing else shared.
    assert shared_work(cfg) == {keys.normalization_key(hashed, cfg)}
    partner = hashed.model_copy(update={"name": "partner-emails", "dpid": 99999})
    uid2 = hashed.model_copy(update={"name": "uid2-emails", "dpid": 99998, "normalization": "uid2"})
    with_partner = cfg.model_copy(update={"data_sources": [*cfg.data_sources, partner, uid2]})
    assert shared_work(with_partner) == {keys.normalization_key(hashed, cfg), key_cache.column_name(hashed, cfg)}
    alone = cfg.model_copy(update={"data_sources": [ds for ds in cfg.data_sources if not ds.decrypts]})
    assert shared_work(alone) == frozenset()


def test_the_index_drops_row_hash_collisions_and_keeps_the_first_repeat():
    index = key_cache_index._row_index(np.array([5, 3, 5, 7, 7], np.uint64), np.array([1, 2, 9, 4, 4], np.uint32))
    queries, checks = np.array([5, 3, 7, 7, 8], np.uint64), np.array([1, 2, 4, 5, 0], np.uint32)
    assert key_cache_index._search(index, queries, checks).tolist() == [-1, 1, 3, -1, -1]  # 5: two ids; 7: first; another id
    rows = key_cache_index._row_index(np.array([5, 3, 5, 7, 7], np.uint64), np.array([1, 2, 9, 4, 4], np.uint32),
                                np.array([10, 11, 12, 13, 14]))
    assert key_cache_index._search(rows, queries, checks).tolist() == [-1, 11, 13, -1, -1]


@pytest.mark.parametrize("n", [0, 1, 2, 3, 1000, 50_000])
def test_hash_order_sorts_like_argsort(n):
    rng = np.random.default_rng(n)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    if n > 3:  # hashes whose bits above the packed positions tie, in groups, and repeats
        shift = np.uint64(max(1, (n - 1).bit_length()))
        low = rng.integers(0, 2**int(shift), n // 4, dtype=np.uint64)
        hashes[: n // 4] = (rng.integers(0, 7, n // 4, dtype=np.uint64) << shift) | low
        hashes[n // 4: n // 4 + 50] = hashes[0]
    order = key_cache_index.hash_order(hashes)
    assert sorted(order.tolist()) == list(range(n))
    assert hashes[order].tolist() == np.sort(hashes).tolist()


@pytest.mark.parametrize("n", [1, 2, 1000, 40_000])
def test_lookup_finds_what_a_binary_search_finds(n):
    rng = np.random.default_rng(n)
    hashes = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    if n > 2:  # crowded buckets: hashes that share their top bits
        hashes[: n // 3] = (hashes[: n // 3] & np.uint64(0xFFFFFF)) | (rng.integers(0, 3, n // 3, dtype=np.uint64) << np.uint64(60))
        hashes = rng.permutation(np.unique(hashes))  # no repeats: a repeat is the index's business (test above)
        n = len(hashes)
    checks = rng.integers(0, 2**32, n, dtype=np.uint32)
    loaded = LoadedCache(pa.table({"row_hash": hashes, "id_check": checks}), {"parts": []}, CacheLayout({}, {}, ()))
    absent = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False)
    neighbours = hashes + np.uint64(1)  # in the same bucket as a cached hash, but not cached
    queries = np.concatenate((hashes, absent, neighbours, hashes))
    query_checks = np.concatenate((checks, checks, checks, checks ^ np.uint32(1)))  # last: another id
    order = np.argsort(hashes, kind="stable")
    at = np.minimum(np.searchsorted(hashes[order], queries), n - 1)
    expected = np.where((hashes[order][at] == queries) & (checks[order][at] == query_checks), order[at], -1)
    assert loaded.lookup(queries, query_checks).tolist() == expected.tolist()
    assert (loaded.lookup(hashes, checks) >= 0).all()


def _cache(hashes: np.ndarray, checks: np.ndarray, parts: list[int]) -> LoadedCache:
    table = pa.table({"row_hash": hashes, "id_check": checks})
    return LoadedCache(table, {"parts": [{"rows": rows} for rows in parts]}, CacheLayout({}, {}, ()))


def test_lookup_finds_rows_in_place_in_the_first_nights_part_and_anywhere_in_later_ones():
    # A cache of a first night's extract (5000 rows) and a later night's computed rows (300). Tonight's
    # batches come in the cache's order with rows inserted, deleted, changed, moved, or in another
    # order: a row found is one with the same row hash and id check; every row of the later part is
    # found wherever it is; a row of the first part is found where the batch's runs sit, and by a
    # search of every row when much of a batch is left (another order).
    rng = np.random.default_rng(7)
    n, later = 5000, 300
    hashes = rng.integers(0, 2**64, n + later, dtype=np.uint64, endpoint=False)
    checks = rng.integers(0, 2**32, n + later, dtype=np.uint32)
    hashes[1000:1010], checks[1000:1010] = hashes[10:20], checks[10:20]  # the same rows twice
    hashes[2000:2010], checks[2000:2010] = hashes[30:40], checks[30:40] ^ np.uint32(5)  # two ids, one row hash
    loaded = _cache(hashes, checks, [n, later])
    rows = np.arange(n)
    later_rows = n + rng.permutation(later)
    orders = {
        "as cached": rows,
        "rows deleted and inserted": np.concatenate((rows[:700], rows[900:3000], rng.integers(0, n, 300), rows[3000:])),
        "blocks moved": np.concatenate((rows[2500:], rows[:2500])),
        "later rows among them": np.insert(rows, rng.integers(0, n, later), later_rows),
        "reversed": rows[::-1],
        "shuffled": rng.permutation(n),
        "a batch ending past the cache": np.concatenate((rows[4900:], rows[:50])),
    }
    for name, order in orders.items():
        queries, query_checks = hashes[order].copy(), checks[order].copy()
        changed = rng.random(len(order)) < 0.05  # another row hash, or the same hash and another id
        queries[changed & (rng.random(len(order)) < 0.5)] ^= np.uint64(1 << 40)
        query_checks[changed & (rng.random(len(order)) < 0.5)] ^= np.uint32(1)
        found = loaded.lookup(queries, query_checks)
        hit = found >= 0
        assert (hashes[found[hit]] == queries[hit]).all() and (checks[found[hit]] == query_checks[hit]).all(), name
        unchanged = (hashes[order] == queries) & (checks[order] == query_checks)
        collided = np.isin(order, np.r_[30:40, 2000:2010])  # found in place by their id check, or not at all
        assert not (hit & ~unchanged).any(), name
        assert hit[np.isin(order, later_rows) & unchanged].all(), name  # the later part's rows, wherever they are
        missed = unchanged & ~hit & ~collided
        if name == "rows deleted and inserted":  # only the rows of the first part moved one by one are left
            assert not missed[:2800].any() and not missed[3100:].any(), name
        elif name in ("as cached", "blocks moved", "later rows among them", "a batch ending past the cache"):
            assert not missed.any(), name  # runs found in place
        assert missed.sum() <= key_cache_index.FULL_SEARCH_SHARE * len(order), name


def test_row_hashes_tell_lists_apart():
    import itertools

    entries = [None, "", "a", "b", "ab", "0" * 38]
    lists = [None, []] + [list(c) for n in (1, 2, 3) for c in itertools.product(entries, repeat=n)]
    table = pa.table({"profile_id": ["p"] * len(lists), "visitor_ids": pa.array(lists, pa.list_(pa.string()))})
    hashes, checks = row_hashes(table, ("visitor_ids",))
    assert len(set(hashes.tolist())) == len(lists) and len(set(checks.tolist())) == 1
    other = pa.table({"profile_id": ["q"], "visitor_ids": pa.array([["a"]], pa.list_(pa.string()))})
    assert row_hashes(other, ("visitor_ids",))[0][0] != hashes[lists.index(["a"])]


def test_whatever_decides_a_key_is_in_its_identity(monkeypatch):
    cfg = load_config(str(Path(__file__).resolve().parent.parent / "testdata" / "demo" / "job.yaml"))
    hashed = next(ds for ds in cfg.data_sources if ds.declared == "hashed")
    base = source_identity(hashed, cfg)
    for change in ({"normalization": "google"}, {"digest": "base64"}, {"match_on": "phone"}, {"hash_algorithm": "sha1"}):
        other = hashed.model_copy(update=change)
        assert source_identity(other, cfg) != base, change
    plain = next(ds for ds in cfg.data_sources if ds.declared == "plain")
    assert source_identity(plain.model_copy(update={"ignore_case": True}), cfg) != source_identity(plain, cfg)
    phone_cfg = cfg.model_copy(update={"profiles": cfg.profiles.model_copy(update={"default_region": "FR"})})
    phone = hashed.model_copy(update={"match_on": "phone"})
    assert source_identity(phone, phone_cfg) != source_identity(phone, cfg)
    code = key_cache.code_identity()
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: real(self) + (b"#" if self.name == "normalize.py" else b""))
    assert key_cache.code_identity()["code"] != code["code"]
    monkeypatch.undo()
    monkeypatch.setattr(key_cache.metadata, "version", lambda name: "0")
    assert key_cache.code_identity()["libraries"] != code["libraries"]
    monkeypatch.undo()
    # Python's own Unicode data lowercases and classifies characters (str.lower, unicodedata): a
    # worker on another Python (3.14 lowercases U+A7CB, 3.11 does not) keys some values otherwise.
    monkeypatch.setattr(key_cache, "unicodedata", SimpleNamespace(unidata_version="99.0.0"))
    assert key_cache.code_identity() != code
    monkeypatch.undo()
    monkeypatch.setattr(key_cache, "sys", SimpleNamespace(version_info=(3, 99, 0)))
    assert key_cache.code_identity() != code


def test_a_changed_match_as_keys_its_column_anew():
    """``match_as`` decides how a column's values are keyed: a cache written while ``work_email`` was
    compared as written must not give its keys once it is read as emails (nor the other way), and
    two sources reading one column alike still share their cached column."""
    job = {"profiles": {"path": "p.parquet"}, "data_sources": [
        {"name": f"s{i}", "dpid": i + 1, "segments": "d/*", "id_type": "declared", "declared": "hashed",
         "match_on": "work_email", **({"match_as": kind} if kind else {})}
        for i, kind in enumerate([None, "other", "email", "email"])]}
    cfg = parse_config(job)
    names = [column_name(ds, cfg) for ds in cfg.data_sources]
    assert names[0] == names[1] != names[2] == names[3]  # left out is 'other'
    assert CacheLayout.of(cfg).sources == dict(zip(["s0", "s1", "s2", "s3"], names))


def _published_cache(tmp_path: Path, batch: pa.Table) -> tuple[Path, dict, CacheLayout, dict]:
    """A cache of one part holding ``batch``'s rows under the demo's layout, published by
    PublishKeyCache from a staged part: ``(cache folder, the staged part's entry, layout, code)``."""
    cfg = load_config(str(Path(__file__).resolve().parent.parent / "testdata" / "demo" / "job.yaml"))
    layout, code = CacheLayout.of(cfg), key_cache.code_identity()
    dirs = key_cache.cache_dirs(str(tmp_path / "_key_cache"), str(tmp_path / "run"))
    writer = CacheWriter(dirs.staging, "extract.parquet", layout.schema())
    columns = {}
    for ds in cfg.data_sources:
        columns.update(ComputedColumn.of(batch, ds, cfg).part_columns(layout.sources[ds.name]))
    writer.write(*row_hashes(batch, layout.values), columns)
    part = writer.close()
    staged = Path(part["file"]).read_bytes()
    staged_part = {**part, "layout": layout.doc(code), **key_cache.base_of(None), "live_rows": part["rows"]}
    PublishKeyCache(dirs).process(None, [staged_part])
    return Path(dirs.root), {**part, "bytes": staged}, layout, code


def _staged_again(run: Path, cache: Path, part: dict, layout: CacheLayout, code: dict):
    """A run staging ``part``'s content again (an unchanged extract): its dirs and staged entry."""
    dirs = key_cache.cache_dirs(str(cache), str(run))
    Path(dirs.staging).mkdir(parents=True)
    staged = Path(dirs.staging) / Path(part["file"]).name
    staged.write_bytes(part["bytes"])
    return dirs, {"file": str(staged), "rows": part["rows"], key_cache.PART_DIGEST: part[key_cache.PART_DIGEST],
                  "layout": layout.doc(code), **key_cache.base_of(None), "live_rows": part["rows"]}


def test_a_damaged_part_is_replaced_when_a_run_stages_the_same_content(tmp_path):
    # A part damaged on disk: the next run computes every key and, when the extract did not change,
    # stages a part of the same content, hence the same name. It replaces the damaged file; kept,
    # it made every later run find the cache damaged and compute every key again, for good.
    cache, part, layout, code = _published_cache(tmp_path / "first", _profiles(BEFORE))
    published = cache / manifest(cache.parent)["parts"][0]["file"]
    _corrupt(cache)
    assert load_cache(str(cache), layout, code) is None
    dirs, entry = _staged_again(tmp_path / "run2", cache, part, layout, code)
    PublishKeyCache(dirs).process(None, [entry])
    assert published.read_bytes() == part["bytes"]
    assert load_cache(str(cache), layout, code) is not None


def test_a_part_replaced_while_its_map_is_read_is_not_intact(tmp_path, monkeypatch):
    # The rows are read from the file as mapped when the cache was loaded; the digest check reads
    # the file by its path, later. A damaged part replaced meanwhile by an intact one (another run
    # publishing the same part) must not vouch for the damaged bytes the map holds.
    cache, part, layout, code = _published_cache(tmp_path, _profiles(BEFORE))
    published = cache / manifest(cache.parent)["parts"][0]["file"]
    _corrupt(cache)
    checked = key_cache._file_digest

    def replaced_first(path: str) -> str:
        fresh = tmp_path / "fresh.arrow"
        fresh.write_bytes(part["bytes"])
        fresh.rename(published)  # as PublishKeyCache moves a staged part in
        return checked(path)

    monkeypatch.setattr(key_cache, "_file_digest", replaced_first)
    loaded = load_cache(str(cache), layout, code, wait=False)
    assert loaded is not None and not loaded.intact()


def test_a_cache_that_cannot_be_saved_fails_saying_the_outputs_are_published(tmp_path):
    # PublishKeyCache runs once the outputs are published: its failure gave a bare
    # 'IsADirectoryError [while running PublishKeyCache]', as if nothing were published.
    cache, part, layout, code = _published_cache(tmp_path / "first", _profiles(BEFORE))
    (cache / key_cache.MANIFEST).unlink()
    (cache / key_cache.MANIFEST).mkdir()  # a manifest that cannot be written
    dirs, entry = _staged_again(tmp_path / "run2", cache, part, layout, code)
    with pytest.raises(RunFailed) as info:
        PublishKeyCache(dirs).process(None, [entry])
    assert str(info.value) == (f"{cache}: the outputs are published, but the profile-key cache could not be saved "
                               "(IsADirectoryError); the next run computes the keys it lacks again")
