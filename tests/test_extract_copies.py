"""Two files of one extract's glob holding the same profiles: a copy beside it (`profiles-copy.parquet`)
or yesterday's extract kept there (`profiles-2026-12-05.parquet`). Both were read, `profiles read: 600`,
exit 0: erased profiles came back with their old keys, changed emails kept their old memberships.
Judged once over the extract's files (transforms.extract_copies), before anything is published."""
from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import assert_failed_cleanly, cli_in_process
from generate_data import generate
from transforms.extract_copies import (FileSketcher, candidate_pairs, check_extract_copies, distinct_estimate,
                                       row_hashes, shared_ids, shared_rows, whole_hash)


def extract_job(folder, n_profiles: int = 3000, glob: str = "profiles*.parquet", **generated):
    """A generated job (``n_profiles``, as many dump lines) whose config reads the extract by ``glob``."""
    generate(folder, n_profiles=n_profiles, n_lines=3000, **generated)
    job = folder / "job.yaml"
    job.write_text(job.read_text().replace("path: profiles.parquet", f"path: {glob}")
                   .replace("path: profiles/part-*.parquet", f"path: {glob}"))
    return job


def run_import(job, out):
    return cli_in_process("import", "--config", job, "--output", out)


def run_export(job, out):
    extract = job.parent / "profiles.parquet"
    targets = extract if extract.exists() else job.parent / "profiles" / "part-00000.parquet"
    return cli_in_process("export", "--config", job, "--audience", "A", "--data-source", "crm-plain",
                          "--targets", targets, "--output", out)


def test_a_copy_of_the_extract_beside_it_fails_the_import_and_the_export_naming_both_files(tmp_path):
    job = extract_job(tmp_path)
    shutil.copy(tmp_path / "profiles.parquet", tmp_path / "profiles-copy.parquet")
    last = assert_failed_cleanly(run_import(job, tmp_path / "o"), tmp_path / "o", "profiles.path: ",
                                 str(tmp_path / "profiles.parquet"), str(tmp_path / "profiles-copy.parquet"),
                                 "hold the same profiles (~100% of", "narrow the glob",
                                 "profiles.files_may_repeat_rows: true")
    ids = pq.read_table(tmp_path / "profiles.parquet", columns=["profile_id", "email"])
    assert not any(value in last for value in ids["profile_id"].to_pylist()[:50] + ids["email"].to_pylist()[:50] if value)
    assert_failed_cleanly(run_export(job, tmp_path / "e"), tmp_path / "e", "hold the same profiles",
                          "profiles-copy.parquet")


def test_files_declared_to_repeat_rows_are_read(tmp_path):
    """profiles.files_may_repeat_rows: true (an extract of a row per purchase, split by month, repeats
    rows across files): the check is off and both files are read."""
    job = extract_job(tmp_path)
    shutil.copy(tmp_path / "profiles.parquet", tmp_path / "profiles-copy.parquet")
    job.write_text(job.read_text().replace("profiles:\n", "profiles:\n  files_may_repeat_rows: true\n", 1))
    result = run_import(job, tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert "profiles read: 6000" in result.stdout.replace(",", "")


def test_yesterdays_extract_kept_beside_todays_fails_the_import_and_the_nightly(tmp_path):
    """Yesterday's extract (10 % of its profiles changed since: new emails, some erased) beside today's."""
    extract_job(tmp_path / "yesterday")
    job = extract_job(tmp_path / "today", changed=0.1)
    kept = tmp_path / "today" / "profiles-2026-12-05.parquet"
    shutil.copy(tmp_path / "yesterday" / "profiles.parquet", kept)
    last = assert_failed_cleanly(run_import(job, tmp_path / "o"), tmp_path / "o", str(kept),
                                 str(tmp_path / "today" / "profiles.parquet"), "hold the same profiles")
    share = int(last.split("(~")[1].split("%")[0])
    assert 93 <= share <= 100, last  # 10 % changed, a quarter of those renamed: ~97.5 % of the ids stayed
    root = tmp_path / "root"
    night = cli_in_process("nightly", "--config", job, "--root", root, "--date", "2026-11-22")
    assert night.returncode == 1, night.stderr
    assert "hold the same profiles" in night.stderr.strip().splitlines()[-1] and "Traceback" not in night.stderr
    assert not list(root.glob("dt=*/_SUCCESS")) and not list(root.glob("dt=*/*/*.parquet"))


def test_an_extract_in_ten_disjoint_parts_is_read(tmp_path):
    job = extract_job(tmp_path, n_profiles=12_000, glob="profiles/part-*.parquet", profile_parts=10)
    result = run_import(job, tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert "profiles read: 12000" in result.stdout.replace(",", "")


def two_parts_sharing(folder, shared: int):
    """The generated extract in two parts of 3,000 profiles, and ``shared`` profiles of each given a
    second row (another email) in the other part: several rows a profile, spread over the parts."""
    job = extract_job(folder, n_profiles=6000, glob="profiles/part-*.parquet", profile_parts=2)
    parts = sorted((folder / "profiles").glob("part-*.parquet"))
    tables = [pq.read_table(p) for p in parts]
    for i, path in enumerate(parts):
        other = tables[1 - i].slice(0, shared)
        emails = pc.binary_join_element_wise("second.", other["profile_id"], "@example.org", "")
        extra = other.set_column(other.schema.get_field_index("email"), "email", emails)
        pq.write_table(pa.concat_tables([tables[i], extra]), path)
    return job


def test_parts_sharing_some_profiles_are_read(tmp_path):
    """750 of each part's 3,750 profiles (20 %) also have a row in the other part: read."""
    job = two_parts_sharing(tmp_path, 750)
    result = run_import(job, tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert "profiles read: 7500" in result.stdout.replace(",", "")


def test_parts_sharing_every_profile_but_no_row_are_read(tmp_path):
    """A writer that splits rows, not profiles (every profile with a row in each part): the ids are
    the same, the rows are not, as in no copy."""
    job = two_parts_sharing(tmp_path, 3000)
    result = run_import(job, tmp_path / "o")
    assert result.returncode == 0, result.stderr


def test_small_files_are_never_judged(demo_copy, tmp_path):
    """The demo's 300 profiles and their copy (600 ids in all, under 1,000): read both, a known limit."""
    shutil.copy(demo_copy / "profiles.parquet", demo_copy / "profiles-copy.parquet")
    job = demo_copy / "job.yaml"
    job.write_text(job.read_text().replace("path: profiles.parquet", "path: profiles*.parquet"))
    result = run_import(job, tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert "profiles read: 600" in result.stdout


def sketch(path: str, ids, emails=None):
    sketcher = FileSketcher()
    ids = [f"P{i}" for i in ids]
    sketcher.add(pa.table({"profile_id": ids, "k:email": emails or [f"{i}@example.org" for i in ids]}))
    return sketcher.sketch(path)


def test_the_sketches_estimate_the_share_of_ids_and_rows():
    whole, copy, other = sketch("a", range(50_000)), sketch("b", range(50_000)), sketch("c", range(50_000, 100_000))
    assert 45_000 < distinct_estimate(whole.ids) < 55_000
    assert shared_ids(whole, copy) == (1.0, 256) and shared_rows(whole, copy) == (1.0, 256)
    assert shared_ids(whole, other)[0] == 0
    fifth = sketch("d", range(40_000, 90_000))
    assert 0.14 < shared_ids(fifth, whole)[0] < 0.26
    reworded = sketch("e", range(50_000), [f"x{i}" for i in range(50_000)])
    assert shared_ids(reworded, whole)[0] == 1.0 and shared_rows(reworded, whole)[0] == 0
    batches = FileSketcher()  # read in batches, the same sketch
    for start in range(0, 50_000, 7_000):
        ids = [f"P{i}" for i in range(start, min(start + 7_000, 50_000))]
        batches.add(pa.table({"profile_id": ids, "k:email": [f"{i}@example.org" for i in ids]}))
    assert all(np.array_equal(x, y) for x, y in zip(batches.sketch("a")[1:], whole[1:]))


def test_two_hundred_parts_are_compared_by_their_shared_hashes_only():
    parts = [sketch(f"part-{i:03d}", range(i * 5000, (i + 1) * 5000)) for i in range(200)]
    assert candidate_pairs(parts, 32) == []
    check_extract_copies(parts)
    parts.append(sketch("part-copy", range(7 * 5000, 8 * 5000)))
    assert candidate_pairs(parts, 32) == [(7, 200)]
    try:
        check_extract_copies(parts)
    except Exception as error:
        assert str(error).startswith("profiles.path: part-007 and part-copy hold the same profiles (~100% of")
    else:
        raise AssertionError("the copy was read")
    assert np.all(np.diff(parts[0].ids.astype(np.float64)) > 0)  # sorted, distinct


def test_whole_values_are_hashed_their_middles_and_list_entries_too():
    """stable_hash.hash64 reads a string's ends: ids differing in their middle only would look shared."""
    long = [f"https://crm.example.org/customers/{i:06d}/profile" for i in range(1000)]
    assert len(np.unique(whole_hash(pa.array(long)))) == 1000
    table = pa.table({"profile_id": ["p", "p", "p", "p", "p"],
                      "visitor_ids": pa.array([["1" * 38, "2" * 38], ["2" * 38, "1" * 38], ["1" * 38], [], None])})
    ids = whole_hash(table["profile_id"])
    assert len(set(ids.tolist())) == 1 and len(set(row_hashes(table, ids).tolist())) == 4  # (empty and null alike)


def test_yesterdays_extract_in_one_file_beside_todays_in_parts_fails_the_import(tmp_path):
    """Today's extract in 10 parts of 1,200 profiles, yesterday's in one file of 12,000 kept among
    them (10 % changed since): each part against yesterday's file has too small a sample to judge
    (~26 ids of its 1,200 under the big file's sketch), but the extract's rows, sampled over all its
    files alike, are mostly in two files."""
    extract_job(tmp_path / "yesterday", n_profiles=12_000)
    job = extract_job(tmp_path / "today", n_profiles=12_000, glob="profiles/*.parquet", profile_parts=10, changed=0.1)
    kept = tmp_path / "today" / "profiles" / "profiles-2026-12-05.parquet"
    shutil.copy(tmp_path / "yesterday" / "profiles.parquet", kept)
    last = assert_failed_cleanly(run_import(job, tmp_path / "o"), tmp_path / "o", "profiles.path: ",
                                 "of the extract's rows are in two of its files", str(kept),
                                 "narrow the glob", "profiles.files_may_repeat_rows: true")
    share = int(last.split("~")[1].split("%")[0])
    assert 85 <= share <= 100, last


def test_the_rows_of_many_parts_are_judged_together():
    """Sketches alone: 50 disjoint parts and a file of other profiles as large as all of them pass;
    the same file holding the parts' profiles does not, nor the parts beside an older extract's parts
    cut otherwise (no part of one shares more than 2 % of another's ids)."""
    parts = [sketch(f"part-{i:02d}", range(i * 2000, (i + 1) * 2000)) for i in range(50)]
    check_extract_copies(parts + [sketch("other", range(100_000, 200_000))])
    try:
        check_extract_copies(parts + [sketch("old", range(0, 100_000))])
    except Exception as error:
        assert "of the extract's rows are in two of its files, e.g. old and part-" in str(error), error
    else:
        raise AssertionError("the old extract was read")
    old = [sketch(f"old/part-{i:02d}", range(i, 100_000, 50)) for i in range(50)]  # its parts cut otherwise
    try:
        check_extract_copies(parts + old)
    except Exception as error:
        assert "of the extract's rows are in two of its files, e.g. old/part-" in str(error), error
    else:
        raise AssertionError("the old extract's parts were read")


def test_two_files_under_1000_ids_each_are_judged_by_their_rows_together():
    """Under 1,000 ids in all (the demo's 300 and their copy) nothing is judged; a pair of files under
    1,000 ids each is not judged as a pair, but the extract's rows are: 600 ids beside their copy fail."""
    check_extract_copies([sketch("a", range(300)), sketch("b", range(300))])
    check_extract_copies([sketch("a", range(600)), sketch("b", range(600, 1200))])
    try:
        check_extract_copies([sketch("a", range(600)), sketch("b", range(600))])
    except Exception as error:
        assert "~100% of the extract's rows are in two of its files, e.g. a and b" in str(error), error
    else:
        raise AssertionError("the copy was read")


@pytest.mark.xfail(strict=True, reason="known limit since repeated_rows: the export's rows are hashed on the "
                   "columns it reads (id, crm_id, opt_out), where a profile's rows spread over parts are one row")
def test_a_profiles_rows_spread_over_ten_parts_are_read_by_the_export_as_by_the_import(tmp_path):
    """An extract in 10 parts, every profile with a second row (another email) in one of the 9 other
    parts (no two parts share more than ~15 % of their ids). The import reads it (its rows differ by
    email); the export through crm-plain (match_on: crm_id) reads no email, so a profile's two rows
    are one row in two files: it failed '~100% of the extract's rows are in two of its files', where
    before repeated_rows it was read, exit 0."""
    job = extract_job(tmp_path, n_profiles=6000, glob="profiles/part-*.parquet", profile_parts=10)
    parts = sorted((tmp_path / "profiles").glob("part-*.parquet"))
    tables = [pq.read_table(p) for p in parts]
    extra: list[list] = [[] for _ in parts]
    for i, table in enumerate(tables):
        for j in range(table.num_rows):
            extra[(i + 1 + j % 9) % 10].append(table.slice(j, 1))
    for k, path in enumerate(parts):
        other = pa.concat_tables(extra[k])
        emails = pc.binary_join_element_wise("second.", other["profile_id"], "@example.org", "")
        other = other.set_column(other.schema.get_field_index("email"), "email", emails)
        pq.write_table(pa.concat_tables([tables[k], other]), path)
    result = run_import(job, tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert "profiles read: 12000" in result.stdout.replace(",", "")
    result = run_export(job, tmp_path / "e")
    assert result.returncode == 0, result.stderr.strip().splitlines()[-1:]
