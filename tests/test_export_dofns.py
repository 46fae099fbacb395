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
from transforms.config_load import parse_config
from transforms.errors import InputError, RunFailed
from transforms.export_spec import export_config, export_spec
from transforms.stable_hash import KeyFilter, bucket_of, hash64
from transforms.export_classify import (
    CANDIDATE_SCHEMA,
    DESIRED_SCHEMA,
    EARLIER,
    EARLIER_SCHEMA,
    PROFILES,
    TARGETS,
    ClassifyShard,
    ReadEarlierPart,
)
from transforms.export_profiles import ReadBlockedProfiles, ReadTargetedProfiles
from transforms.export_decide import (
    BLOCKED,
    DESIRED,
    FATE_SCHEMA,
    HELD,
    OTHERS,
    CountProfileOutcomes,
    DecideShard,
    Traits,
    profile_outcomes,
)
from transforms.onboarding import (
    LINE_SCHEMA,
    FileNames,
    SplitIntoFiles,
    WriteOnboardingFile,
)
from transforms.outcomes import Count, Metric, Removal
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
    """Typed ``(Count, n)`` outputs -> ``{metric: total}`` (all of them job-wide; an email or phone column's
    values are counted per column, their detail)."""
    totals: dict[Metric, int] = defaultdict(int)
    for key, n in outputs:
        assert isinstance(key, Count) and key.data_source is None
        assert key.detail is None or key.metric in (Metric.ADDRESS_VALUES, Metric.ADDRESS_VALUES_AS_NUMBERS), key
        totals[key.metric] += n
    return dict(totals)


def assert_sharded(shards: list, column: str = "profile_id") -> None:
    """Each ``(bucket, table)`` holds exactly the rows whose ``column`` hashes to that bucket."""
    for bucket, table in shards:
        assert set(bucket_of(table[column], BUCKETS)) == {bucket}


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


def test_read_target_file_reads_float_ids_as_their_integers_and_a_gzip_csv(tmp_path):
    """A targets file written by pandas from an integer column with gaps stores its ids as floats:
    12-digit ids are the integers they hold (Arrow's own cast writes ``1.23456789012e+11``, an id
    no profile has), one of 2^53 or more fails naming the column; a ``.csv.gz`` reads as the CSV."""
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"profile_id": [123456789012.0, None, 7.0]}), path)
    out = run_dofn(ReadTargetFile(BUCKETS), [str(path)])
    assert rows(out[MAIN]) == [("123456789012",), ("7",)]
    pq.write_table(pa.table({"profile_id": [2.0 ** 53]}), path)
    with pytest.raises(InputError, match="column 'profile_id': 1 value"):
        run_dofn(ReadTargetFile(BUCKETS), [str(path)])
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(b"profile_id\np1\np2\n"))
    assert rows(run_dofn(ReadTargetFile(BUCKETS), [str(packed)])[MAIN]) == [("p1",), ("p2",)]
    packed.write_bytes(gzip.compress(b"profile_id\n" + b"p1\n" * 5000)[:-40])
    with pytest.raises(InputError, match="cut short"):
        run_dofn(ReadTargetFile(BUCKETS), [str(packed)])


def test_read_target_file_names_the_line_of_an_id_written_as_a_floats_text(tmp_path):
    """A targets file saved by a spreadsheet (`1.23457E+11`) or pandas (`123.0`): the extract's rule
    (test_extract_forms.py), at its line or row; they were unknown profiles, 12-digit ids made one."""
    path = tmp_path / "t.csv"
    path.write_text("profile_id\np1\n1.23457E+11\n")
    with pytest.raises(InputError) as info:
        run_dofn(ReadTargetFile(BUCKETS), [str(path)])
    assert str(info.value).startswith(f"{path}:3: column 'profile_id': 1 value(s) written as a "
                                      "floating-point number's text"), str(info.value)
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"profile_id": ["p1", "p2", "7.0"]}), path)
    with pytest.raises(InputError, match=r"t\.parquet: row 3: column 'profile_id': 1 value\(s\) written as"):
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
    out = run_dofn(ReadTargetedProfiles(cfg, spec, BUCKETS), [cfg.profiles.path], target_filter, [])
    assert counts(out[ReadTargetedProfiles.COUNTS]) == {Metric.PROFILES_READ: 4, Metric.CONSENT_UNKNOWN_ROWS: 0,
                                                         Metric.PROFILE_IDS_AT_MOST: 4, Metric.BLOCKED_USER_IDS: 1,
                                                         Metric.ADDRESS_VALUES: 3}
    assert all(t.schema == CANDIDATE_SCHEMA for _, t in out[MAIN])
    # One row per extract row (user_id null) with its status, plus one per usable user ID of an
    # eligible row: p2 is opted out (status 2), p3 has no email, p4 is not targeted.
    assert rows(out[MAIN]) == sorted([("p1", 0, None), ("p1", 0, sha("ann@example.com")),
                                      ("p2", 2, None), ("p3", 0, None)], key=repr)
    assert_sharded(out[MAIN])
    # The opted-out row's user ID, sharded by user ID: no one may send it.
    assert rows(out[ReadTargetedProfiles.BLOCKED]) == [(sha("bob@example.org"), 2)]
    assert_sharded(out[ReadTargetedProfiles.BLOCKED], "user_id")


def test_read_blocked_profiles_gives_the_hashes_of_the_profiles_with_a_row_that_is_not_eligible(tmp_path):
    cfg, spec = job(tmp_path)
    out = run_dofn(ReadBlockedProfiles(cfg, spec), [cfg.profiles.path], [])
    assert [list(h) for h in out[MAIN]] == [list(hash64(pa.array(["p2"])))]  # p2 is opted out


def test_read_targeted_profiles_refuses_an_extract_without_the_opt_out_column(tmp_path):
    cfg, spec = job(tmp_path, opt_out=False)
    with pytest.raises(InputError, match=r"profiles.parquet: no column 'opt_out' \(profiles.opt_out\)"):
        run_dofn(ReadTargetedProfiles(cfg, spec, BUCKETS), [cfg.profiles.path], KeyFilter(hash64(pa.array(["p1"]))), [])


def test_read_earlier_part_keeps_every_pair_with_its_run(tmp_path):
    part = tmp_path / "part-00000-of-00001.parquet"
    pq.write_table(pa.table({"profile_id": ["p1", "p1", "p2", "p9"], "user_id": ["u1", "u2", "u3", "u9"]}), part)
    out = run_dofn(ReadEarlierPart(BUCKETS), [(1, False, str(part))])
    assert counts(out[ReadEarlierPart.COUNTS]) == {Metric.EARLIER_PAIRS_READ: 4}
    assert rows(out[MAIN]) == [("p1", "u1", 1, False), ("p1", "u2", 1, False), ("p2", "u3", 1, False),
                               ("p9", "u9", 1, False)]
    assert all(t.schema == EARLIER_SCHEMA for _, t in out[MAIN])
    assert [list(h) for h in out[ReadEarlierPart.HASHES]] == [list(hash64(pa.array(["p1", "p1", "p2", "p9"])))]
    assert_sharded(out[MAIN])
    part.write_bytes(b"not parquet")
    with pytest.raises(InputError, match="cannot read the earlier export state"):
        run_dofn(ReadEarlierPart(BUCKETS), [(0, False, str(part))])


# ----------------------------------------------------------------------------------------------------
# Classifying, then deciding per user ID
# ----------------------------------------------------------------------------------------------------
def test_classify_shard_keys_desired_and_held_pairs_by_user_id():
    targets = [pa.table({"profile_id": ["a", "b", "c"]}, schema=TARGET_SCHEMA),
               pa.table({"profile_id": ["a", "zz"]}, schema=TARGET_SCHEMA)]
    profiles = [pa.table({"profile_id": ["a", "a", "a", "b", "b", "c"], "status": [0] * 6,
                          "user_id": [None, "u1", "u2", None, "u3", None]}, schema=CANDIDATE_SCHEMA)]
    earlier = [pa.table({"profile_id": ["a", "b"], "user_id": ["u1", "u3"], "run": [0, 0], "removed": [False, False]},
                        schema=EARLIER_SCHEMA)]
    out = run_dofn(ClassifyShard((True,), BUCKETS), [(2, {TARGETS: targets, PROFILES: profiles, EARLIER: earlier})])
    assert rows(out[MAIN]) == [("a", "u1", False), ("a", "u2", False), ("b", "u3", True)]  # only: b's one pair
    assert_sharded(out[MAIN], "user_id")
    assert rows(out[ClassifyShard.HELD]) == [("a", "u1", None), ("b", "u3", None)]
    assert [t.to_pylist() for t in out[ClassifyShard.UNMAPPED]] == [[{"profile_id": "c"}]]
    assert counts(out[ClassifyShard.COUNTS]) == {
        Metric.TARGETS: 4, Metric.DUPLICATE_TARGET_ROWS: 1, Metric.UNKNOWN_PROFILE: 1, Metric.OPTED_OUT: 0,
        Metric.CONSENT_UNKNOWN: 0, Metric.SUPPRESSED: 0, Metric.UNMAPPED: 1,
    }


def test_classify_shard_without_targets_or_earlier_pairs_gives_nothing():
    profiles = [pa.table({"profile_id": ["a"], "status": [0], "user_id": ["u1"]}, schema=CANDIDATE_SCHEMA)]
    assert run_dofn(ClassifyShard(), [(0, {TARGETS: [], PROFILES: profiles, EARLIER: []})]) == {}


@pytest.mark.parametrize("order", [1, -1])
def test_classify_shard_blocks_every_user_id_of_a_profile_one_of_whose_rows_is_not_eligible(order):
    """p has a consented row with u1 and an opted-out one; q a consented row with u2 and a suppressed
    one: u1 and u2 are blocked with their profile's status, whichever row comes first, targeted or not."""
    p = pa.table({"profile_id": ["p", "p", "p"], "status": [0, 0, 2], "user_id": [None, "u1", None]},
                 schema=CANDIDATE_SCHEMA)
    q = pa.table({"profile_id": ["q", "q", "q", "r", "r"], "status": [3, 0, 0, 0, 0],
                  "user_id": [None, None, "u2", None, "u3"]}, schema=CANDIDATE_SCHEMA)
    profiles = [p, q][::order]
    out = run_dofn(ClassifyShard((), BUCKETS), [(0, {TARGETS: [], PROFILES: profiles, EARLIER: []})])
    assert rows(out[ClassifyShard.BLOCKED]) == [("u1", 2), ("u2", 3)]
    assert_sharded(out[ClassifyShard.BLOCKED], "user_id")
    assert counts(out[ClassifyShard.COUNTS]) == {Metric.BLOCKED_USER_IDS: 2}
    targets = [pa.table({"profile_id": ["p", "q", "r"]}, schema=TARGET_SCHEMA)]
    out = run_dofn(ClassifyShard((), BUCKETS), [(0, {TARGETS: targets, PROFILES: profiles, EARLIER: []})])
    assert rows(out[MAIN]) == [("r", "u3", True)]
    found = counts(out[ClassifyShard.COUNTS])
    assert (found[Metric.OPTED_OUT], found[Metric.SUPPRESSED], found[Metric.BLOCKED_USER_IDS]) == (1, 1, 2)
    assert rows(out[ClassifyShard.BLOCKED]) == [("u1", 2), ("u2", 3)]


def test_an_earlier_state_is_rebuilt_run_by_run():
    """Run 0 sent u1, u2; run 1 removed u1; run 2 (an overwrite) held only u3; run 3 sent u1 again."""
    from transforms.export_classify import earlier_pairs

    table = pa.table({"profile_id": ["a"] * 5, "user_id": ["u1", "u2", "u1", "u3", "u1"], "run": [0, 0, 1, 2, 3],
                      "removed": [False, False, True, False, False]}, schema=EARLIER_SCHEMA)
    held = lambda replaces: sorted(earlier_pairs(table, replaces)["user_id"].to_pylist())  # noqa: E731
    assert held((False, False, False, False)) == ["u1", "u2", "u3"]
    assert held((False, False, True, False)) == ["u1", "u3"]
    assert held((False, False)) == ["u2"]
    assert held((False, False, False, False, True)) == []  # a replacing run without rows here empties it


def test_a_suppressed_removal_in_an_earlier_export_keeps_its_profiles_pairs_held():
    """An earlier export's removed/ records a suppressed pair without its user ID (null): which of
    the profile's pairs left is unknown. Run 0 sent a's u1 and u3 and b's u2; run 1 removed u1 (its
    address, shared with a suppressed profile). Forgetting all of a's pairs lost u3, still on the
    platform: never removed after, even once a opted out (found in review of today's diff). They
    stay held: u1 is removed again if it must go (the platform ignores it)."""
    from transforms.export_classify import earlier_pairs

    table = pa.table({"profile_id": ["a", "b", "a", "a"], "user_id": ["u1", "u2", "u3", None], "run": [0, 0, 0, 1],
                      "removed": [False, False, False, True]}, schema=EARLIER_SCHEMA)
    assert sorted(earlier_pairs(table, (False, False))["user_id"].to_pylist()) == ["u1", "u2", "u3"]


def test_a_profile_counts_once_under_its_best_user_id_fate():
    # p's user IDs met in two user shards: one withheld, one added. q: withheld and unchanged. r: all withheld.
    fates = pa.table({"profile_id": ["p", "q", "r", "p", "q", "r"], "fate": [0, 0, 0, 2, 1, 0]}, schema=FATE_SCHEMA)
    assert profile_outcomes(fates) == {Metric.EXPORTED: 1, Metric.ALREADY_PRESENT: 1, Metric.SHARES_BLOCKED_ID: 1}
    out = run_dofn(CountProfileOutcomes(), [(0, [fates.slice(0, 3), fates.slice(3)])])
    assert sorted((c.metric, n) for c, n in out[MAIN]) == sorted(
        [(Metric.EXPORTED, 1), (Metric.ALREADY_PRESENT, 1), (Metric.SHARES_BLOCKED_ID, 1)])


def test_decide_shard_adds_removes_withholds_and_keeps():
    # a and b: their profiles' only pairs (decided here); c and d: profiles with other pairs elsewhere.
    desired = [pa.table({"profile_id": ["a", "b", "c", "d"], "user_id": ["u1", "u2", "u3", "u9"],
                         "only": [True, True, False, False]})]
    held = [pa.table({"profile_id": ["b", "x", "y", "z"], "user_id": ["u2", "u4", "u5", "u3"],
                      "reason": pa.array([None, Removal.UNTARGETED.code, Removal.DELETED_PROFILE.code,
                                          Removal.UNTARGETED.code], pa.int8())})]
    blocked = [pa.table({"user_id": ["u3", "u5"], "status": pa.array([2, 3], pa.int8())})]
    element = (0, {DESIRED: desired, HELD: held, BLOCKED: blocked, OTHERS: []})
    out = run_dofn(DecideShard(Traits("d_sid=7", "d_unsid=7"), BUCKETS), [element])
    lines = [r for t in out[MAIN] for r in t.to_pylist()]
    assert_sharded(out[DecideShard.FATES], "profile_id")
    # c: withheld, d: added, regrouped by profile; a (added) and b (unchanged) counted here.
    assert rows(out[DecideShard.FATES]) == [("c", 0), ("d", 2)]
    assert sorted((r["user_id"], r["traits"]) for r in lines) == [
        ("u1", "d_sid=7"), ("u3", "d_unsid=7"), ("u4", "d_unsid=7"), ("u5", "d_unsid=7"), ("u9", "d_sid=7")]
    assert rows([(0, t) for t in out[DecideShard.SENT]]) == [("a", "u1"), ("d", "u9")]
    assert rows([(0, t) for t in out[DecideShard.STATE]]) == [("a", "u1"), ("b", "u2"), ("d", "u9")]
    # u3: withheld (an opted-out profile has it too) and removed as opted out; u5: suppressed, its ID not kept.
    assert rows([(0, t) for t in out[DecideShard.REMOVED]]) == sorted(
        [("x", "u4", "untargeted"), ("y", None, "suppressed"), ("z", "u3", "opted_out")], key=repr)
    totals = defaultdict(int)
    for key, n in out[DecideShard.COUNTS]:
        totals[(key.metric, key.detail)] += n
    assert {k: v for k, v in totals.items() if v} == {
        (Metric.DESIRED_USER_IDS, None): 4, (Metric.WITHHELD, None): 1, (Metric.EARLIER_USER_IDS, None): 4,
        (Metric.ADDED, None): 2, (Metric.UNCHANGED, None): 1, (Metric.AUDIENCE_USER_IDS, None): 3,
        (Metric.PAIRS_SENT, None): 2, (Metric.PAIRS_REMOVED, None): 3, (Metric.STATE_PAIRS, None): 3,
        (Metric.USER_IDS_REMOVED, "opted_out"): 1, (Metric.USER_IDS_REMOVED, "untargeted"): 1,
        (Metric.USER_IDS_REMOVED, "suppressed"): 1, (Metric.EXPORTED, None): 1, (Metric.ALREADY_PRESENT, None): 1,
    }


def test_decide_overwrite_lists_full_trait_lists():
    desired = [pa.table({"profile_id": ["a", "b"], "user_id": ["u1", "u2"], "only": [True, True]})]
    held = [pa.table({"profile_id": ["b", "x", "y"], "user_id": ["u2", "u4", "u5"],
                      "reason": pa.array([None, Removal.UNTARGETED.code, Removal.UNTARGETED.code], pa.int8())})]
    others = [pa.table({"user_id": ["u1", "u4", "u8"], "trait": ["d_sid=9", '"segment"="B"', "d_sid=9"]})]
    element = (0, {DESIRED: desired, HELD: held, BLOCKED: [], OTHERS: others})
    for remove, bare in (("d_unsid=7", "d_unsid=7"), (None, "")):
        out = run_dofn(DecideShard(Traits("d_sid=7", remove, overwrite=True)), [element])
        lines = sorted((r["user_id"], r["traits"]) for t in out[MAIN] for r in t.to_pylist())
        # Members with every trait they hold; u4 keeps B only; u5 keeps nothing; u8 is not listed.
        assert lines == [("u1", "d_sid=7,d_sid=9"), ("u2", "d_sid=7"), ("u4", '"segment"="B"'), ("u5", bare)]
        assert rows([(0, t) for t in out[DecideShard.SENT]]) == [("a", "u1"), ("b", "u2")]


def test_decide_overwrite_lists_no_other_audience_trait_for_a_blocked_user_id():
    """A suppressed (or opted-out) user ID leaves this audience with no trait at all: the traits its
    other audiences' state still holds would put it back in them (a suppressed address re-sent)."""
    held = [pa.table({"profile_id": ["x", "y", "z"], "user_id": ["u4", "u5", "u6"],
                      "reason": pa.array([Removal.UNTARGETED.code] * 3, pa.int8())})]
    blocked = [pa.table({"user_id": ["u4", "u5"], "status": pa.array([3, 2], pa.int8())})]
    others = [pa.table({"user_id": ["u4", "u5", "u6"], "trait": ["d_sid=8", "d_sid=8", "d_sid=8"]})]
    element = (0, {DESIRED: [], HELD: held, BLOCKED: blocked, OTHERS: others})
    out = run_dofn(DecideShard(Traits("d_sid=7", "d_unsid=7", overwrite=True)), [element])
    lines = sorted((r["user_id"], r["traits"]) for t in out[MAIN] for r in t.to_pylist())
    # u6 left as untargeted and keeps B; u4 (suppressed) and u5 (opted out) keep nothing.
    assert lines == [("u4", "d_unsid=7"), ("u5", "d_unsid=7"), ("u6", "d_sid=8")]
    # ... so they leave B on the platform: B's state must lose them (transforms/export_others.py).
    stripped = sorted((r["user_id"], r["trait"]) for t in out[DecideShard.STRIPPED] for r in t.to_pylist())
    assert stripped == [("u4", "d_sid=8"), ("u5", "d_sid=8")]
    assert [(key.detail, n) for key, n in out[DecideShard.COUNTS] if key.metric == Metric.USER_IDS_STRIPPED] == [
        ("d_sid=8", 2)]


# ----------------------------------------------------------------------------------------------------
# Onboarding files
# ----------------------------------------------------------------------------------------------------
def lines_table(ids: list[str], trait: str = "d_sid=7") -> pa.Table:
    return pa.table({"user_id": ids, "traits": [trait] * len(ids)}, schema=LINE_SCHEMA)


def test_split_into_files_sorts_and_cuts():
    tables = [lines_table(["c", "a"]), lines_table(["b", "e", "d"], "d_unsid=7")]
    out = run_dofn(SplitIntoFiles(max_lines=2), [(0, tables)])
    assert counts(out[SplitIntoFiles.COUNTS]) == {Metric.LINES: 5}
    assert [(seq, n, t["user_id"].to_pylist()) for seq, n, t in out[MAIN]] == [
        (1, 3, ["a", "b"]), (2, 3, ["c", "d"]), (3, 3, ["e"])]
    assert out[MAIN][0][2]["traits"].to_pylist() == ["d_sid=7", "d_unsid=7"]


def test_split_into_files_refuses_two_lines_for_one_user():
    with pytest.raises(RunFailed, match="two lines for one user ID"):
        run_dofn(SplitIntoFiles(max_lines=2), [(0, [lines_table(["a", "b"]), lines_table(["a"], "d_unsid=7")])])


def test_write_onboarding_file_writes_and_describes_one_gzip_file(tmp_path):
    names = FileNames(dpid=12345, timestamp=1795305600)
    fn = WriteOnboardingFile(names, str(tmp_path))
    out = run_dofn(fn, [(2, 3, lines_table(["u1", "u2"])), (1, 1, lines_table(["u3"]))])
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
    fn = WriteOnboardingFile(FileNames(1, 2), str(tmp_path))
    with pytest.raises(RunFailed, match=r"ftp_dpm_1_2\.sync\.gz: \d+ bytes compressed, over the platform's 1 GB limit"):
        run_dofn(fn, [(1, 1, lines_table([f"user-{i}" for i in range(50)]))])


def test_file_names_carry_the_target_dpid_and_the_mode():
    assert FileNames(20914, 1795305600, 777).data_file(1, 1) == "ftp_dpm_20914_777_1795305600.sync.gz"
    assert FileNames(20914, 1795305600, 777, "overwrite").data_file(2, 3) == "ftp_dpm_20914_777_1795305600.overwrite.2.gz"
    assert FileNames(20914, 1795305600, 777).control_file == "ftp_dpm_20914_777_1795305600.info"


def test_a_removed_user_id_takes_the_first_reason_of_its_profiles_and_blockers():
    from transforms.export_decide import decide

    held = pa.table({"profile_id": ["a", "b"], "user_id": ["u1", "u2"],
                     "reason": pa.array([Removal.SUPPRESSED.code, Removal.UNTARGETED.code], pa.int8())})
    blocked = pa.table({"user_id": ["u1", "u2"], "status": pa.array([1, 1], pa.int8())})  # consent unknown
    decision = decide(DESIRED_SCHEMA.empty_table(),
                      held, blocked, pa.table({"user_id": pa.array([], pa.string()), "trait": pa.array([], pa.string())}),
                      Traits("d_sid=7", "d_unsid=7"))
    assert sorted(decision.removed["reason"].to_pylist()) == ["consent_unknown", "suppressed"]
