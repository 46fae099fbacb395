"""The export's DoFns, called directly (setup, start_bundle, process, finish_bundle, teardown) as a
runner would, without a pipeline: exact outputs, tagged outputs included."""
from __future__ import annotations

import gzip
import hashlib
from collections import defaultdict
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.windowed_value import WindowedValue

from transforms import onboarding
from transforms.arrow_utils import KeyFilter, bucket_of, hash64
from transforms.config import parse_config
from transforms.errors import InputError, RunFailed
from transforms.export import export_config, export_spec
from transforms.export_classify import (CANDIDATE_SCHEMA, EXISTING, EXPORTED_SCHEMA, PROFILES, TARGETS, ClassifyShard,
                                        ReadExistingPart, ReadTargetedProfiles)
from transforms.onboarding import FileNames, SplitIntoFiles, WriteOnboardingFile
from transforms.outcomes import Count, Metric
from transforms.targets import TARGET_SCHEMA, ReadTargetFile

BUCKETS = 4
MAIN = None


def run_dofn(fn, elements, *side_inputs) -> dict[str | None, list]:
    """Run ``fn`` over ``elements`` in one bundle; outputs by tag (``MAIN`` for the main output)."""
    out: dict[str | None, list] = defaultdict(list)

    def collect(results):
        for item in results or ():
            tag, value = (item.tag, item.value) if isinstance(item, TaggedOutput) else (MAIN, item)
            out[tag].append(value.value if isinstance(value, WindowedValue) else value)

    fn.setup()
    fn.start_bundle()
    for element in elements:
        collect(fn.process(element, *side_inputs))
    collect(fn.finish_bundle())
    fn.teardown()
    return out


def counts(outputs: list) -> dict[Metric, int]:
    """Typed ``(Count, n)`` outputs -> ``{metric: total}`` (all of them job-wide)."""
    totals: dict[Metric, int] = defaultdict(int)
    for key, n in outputs:
        assert isinstance(key, Count) and key.data_source is None and key.detail is None
        totals[key.metric] += n
    return dict(totals)


def assert_sharded(shards: list) -> None:
    """Each ``(bucket, table)`` holds exactly the rows whose profile id hashes to that bucket."""
    for bucket, table in shards:
        assert set(bucket_of(table["profile_id"], BUCKETS)) == {bucket}


def rows(shards: list) -> list[tuple]:
    return sorted((tuple(r.values()) for _, t in shards for r in t.to_pylist()), key=repr)


def sha(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


# ----------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------
def test_read_target_file_counts_blank_ids_and_shards_the_rest(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("note,profile_id\nx,p1\nx,\nx,p2\nx,p1\nx,NA\n")
    out = run_dofn(ReadTargetFile(BUCKETS), [str(path)])
    assert counts(out[ReadTargetFile.COUNTS]) == {Metric.TARGET_ROWS: 5, Metric.BLANK_TARGET_IDS: 1}
    kept = ["p1", "p2", "p1", "NA"]  # repeats are counted where all rows of an id meet, not here
    assert [list(h) for h in out[ReadTargetFile.HASHES]] == [list(hash64(pa.array(kept)))]
    assert rows(out[MAIN]) == sorted((i,) for i in kept)
    assert all(t.schema == TARGET_SCHEMA for _, t in out[MAIN])
    assert_sharded(out[MAIN])


def test_read_target_file_names_the_bad_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("profile_id,note\np1,x\np2,x,extra\n")
    with pytest.raises(InputError, match=r"t\.csv:3: wrong number of columns"):
        run_dofn(ReadTargetFile(BUCKETS), [str(path)])
    path.write_text("id,note\np1,x\n")
    with pytest.raises(InputError, match="no 'profile_id' column"):
        run_dofn(ReadTargetFile(BUCKETS), [str(path)])


def job(tmp_path: Path, opt_out: bool = True):
    table = {"profile_id": ["p1", "p2", "p3", "p4"], "email": [" Ann@Example.com", "bob@example.org", None, "x y@z"]}
    if opt_out:
        table["opt_out"] = [False, True, False, False]
    pq.write_table(pa.table(table), tmp_path / "profiles.parquet")
    cfg = parse_config({
        "profiles": {"path": "profiles.parquet", "phone": None, "visitor_ids": None, "opt_out": "opt_out"},
        "buckets": BUCKETS,
        "data_sources": [{"name": "hashed", "dpid": 12345, "segments": "unused/*.sync", "id_type": "declared",
                          "declared": "hashed", "match_on": "email"}],
    }, base_dir=tmp_path)
    spec = export_spec(cfg, "A", None, date(2026, 11, 22))
    return export_config(cfg, spec), spec


def test_read_targeted_profiles_keeps_the_targeted_ones_with_their_user_ids(tmp_path):
    cfg, spec = job(tmp_path)
    target_filter = KeyFilter(hash64(pa.array(["p1", "p2", "p3"])))
    out = run_dofn(ReadTargetedProfiles(cfg, spec, BUCKETS), [cfg.profiles.path], target_filter)
    assert counts(out[ReadTargetedProfiles.COUNTS]) == {Metric.PROFILES_READ: 4}
    assert all(t.schema == CANDIDATE_SCHEMA for _, t in out[MAIN])
    # One row per extract row (user_id null), plus one per usable user ID of a profile not opted out:
    # p2 is opted out (no user ID computed), p3 has no email, p4 is not targeted.
    assert rows(out[MAIN]) == sorted([("p1", False, None), ("p1", False, sha("ann@example.com")),
                                      ("p2", True, None), ("p3", False, None)], key=repr)
    assert_sharded(out[MAIN])


def test_read_targeted_profiles_refuses_an_extract_without_the_opt_out_column(tmp_path):
    cfg, spec = job(tmp_path, opt_out=False)
    with pytest.raises(InputError, match="no opt-out column 'opt_out' in this extract"):
        run_dofn(ReadTargetedProfiles(cfg, spec, BUCKETS), [cfg.profiles.path], KeyFilter(hash64(pa.array(["p1"]))))


def test_read_existing_part_keeps_the_targeted_profiles_pairs(tmp_path):
    part = tmp_path / "part-00000-of-00001.parquet"
    pq.write_table(pa.table({"profile_id": ["p1", "p1", "p2", "p9"], "user_id": ["u1", "u2", "u3", "u9"]}), part)
    out = run_dofn(ReadExistingPart(BUCKETS), [str(part)], KeyFilter(hash64(pa.array(["p1", "p2"]))))
    assert counts(out[ReadExistingPart.COUNTS]) == {Metric.EXISTING_PAIRS_READ: 4}
    assert rows(out[MAIN]) == [("p1", "u1"), ("p1", "u2"), ("p2", "u3")]
    assert all(t.schema == EXPORTED_SCHEMA for _, t in out[MAIN])
    assert_sharded(out[MAIN])
    part.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read the existing export"):
        run_dofn(ReadExistingPart(BUCKETS), [str(part)], KeyFilter(hash64(pa.array(["p1"]))))


# ----------------------------------------------------------------------------------------------------
# Classifying
# ----------------------------------------------------------------------------------------------------
def test_classify_shard_sends_new_pairs_and_tags_unmapped_ids_and_counts():
    targets = [pa.table({"profile_id": ["a", "b", "c"]}, schema=TARGET_SCHEMA),
               pa.table({"profile_id": ["a", "zz"]}, schema=TARGET_SCHEMA)]
    profiles = [pa.table({"profile_id": ["a", "a", "a", "b", "b", "c"], "opt_out": [False] * 6,
                          "user_id": [None, "u1", "u2", None, "u3", None]}, schema=CANDIDATE_SCHEMA)]
    existing = [pa.table({"profile_id": ["a", "b"], "user_id": ["u1", "u3"]}, schema=EXPORTED_SCHEMA)]
    out = run_dofn(ClassifyShard(), [(2, {TARGETS: targets, PROFILES: profiles, EXISTING: existing})])
    assert [t.to_pylist() for t in out[MAIN]] == [[{"profile_id": "a", "user_id": "u2"}]]
    assert [t.to_pylist() for t in out[ClassifyShard.UNMAPPED]] == [[{"profile_id": "c"}]]
    assert counts(out[ClassifyShard.COUNTS]) == {
        Metric.TARGETS: 4, Metric.DUPLICATE_TARGET_ROWS: 1, Metric.UNKNOWN_PROFILE: 1, Metric.OPTED_OUT: 0,
        Metric.UNMAPPED: 1, Metric.ALREADY_PRESENT: 1, Metric.EXPORTED: 1, Metric.PAIRS_SENT: 1,
        Metric.OPTED_OUT_IN_EXISTING: 0,
    }


def test_classify_shard_without_targets_gives_nothing():
    profiles = [pa.table({"profile_id": ["a"], "opt_out": [False], "user_id": ["u1"]}, schema=CANDIDATE_SCHEMA)]
    assert run_dofn(ClassifyShard(), [(0, {TARGETS: [], PROFILES: profiles, EXISTING: []})]) == {}


# ----------------------------------------------------------------------------------------------------
# Onboarding files
# ----------------------------------------------------------------------------------------------------
def test_split_into_files_dedupes_sorts_and_cuts():
    tables = [pa.table({"profile_id": ["p1", "p2"], "user_id": ["c", "a"]}),
              pa.table({"user_id": ["b", "a", "e", "d"]})]
    out = run_dofn(SplitIntoFiles(max_lines=2), [(0, tables)])
    assert counts(out[SplitIntoFiles.COUNTS]) == {Metric.LINES: 5}
    assert [(seq, n, ids.to_pylist()) for seq, n, ids in out[MAIN]] == [
        (1, 3, ["a", "b"]), (2, 3, ["c", "d"]), (3, 3, ["e"])]


def test_write_onboarding_file_writes_and_describes_one_gzip_file(tmp_path):
    names = FileNames(dpid=12345, timestamp=1795305600)
    fn = WriteOnboardingFile(names, "d_sid=7", str(tmp_path))
    out = run_dofn(fn, [(2, 3, pa.array(["u1", "u2"])), (1, 1, pa.array(["u3"]))])
    assert [f["name"] for f in out[MAIN]] == ["ftp_dpm_12345_1795305600.sync.2.gz", "ftp_dpm_12345_1795305600.sync.gz"]
    for entry, lines in zip(out[MAIN], (b"u1\td_sid=7\nu2\td_sid=7\n", b"u3\td_sid=7\n")):
        data = Path(entry["path"]).read_bytes()
        assert Path(entry["path"]).parent == tmp_path
        assert gzip.decompress(data) == lines
        assert (entry["bytes"], entry["md5"]) == (len(data), hashlib.md5(data).hexdigest())
        assert entry["lines"] == lines.count(b"\n")
    assert [f["sequence"] for f in out[MAIN]] == [2, 1]


def test_write_onboarding_file_fails_the_run_over_the_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(onboarding, "MAX_FILE_BYTES", 20)
    fn = WriteOnboardingFile(FileNames(1, 2), "d_sid=7", str(tmp_path))
    with pytest.raises(RunFailed, match=r"ftp_dpm_1_2\.sync\.gz: \d+ bytes compressed, over the platform's 1 GB limit"):
        run_dofn(fn, [(1, 1, pa.array([f"user-{i}" for i in range(50)]))])
