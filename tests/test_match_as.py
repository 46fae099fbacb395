"""``match_as``: a declared hashed data source's match column other than the roles (a second email
column, ``work_email``) read as what it holds. Its keys are the role's, value for value; the import and
the export key it so."""
from __future__ import annotations

import gzip
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import cli_in_process, run_import_cli
from transforms.config_load import parse_config
from transforms.errors import RunFailed
from transforms.keys import profile_key_rows, profile_keys
from transforms.match_columns import check_match_columns, match_column_counts
from transforms.normalize import PROFILES, normalize_and_hash
from transforms.outcomes import Counts, Metric
from transforms.profiles import KEY_PREFIX

# Capitals, edge whitespace of every kind, gmail dots and +tags, Unicode case, an invalid value, empties.
EMAILS = [" Jane.Doe+News@GMail.com", "\tJOHN@example.ORG\u00a0", "j.o.e@googlemail.com", "Ünïcode@Exämple.de",
          "not an email", "", None, "x@y.org", "A@B.C"]
PHONES = ["+33 6 12 34 56 78", "06 12 34 56 78", "+44 (0)7340 760837", "0033612345678", "12", "", None]


def _keys(column: str, values: list, match_on: str, normalization: str, **source) -> tuple[list, list]:
    """The (text, binary) profile keys of ``values`` in the extract column ``column``, per profile."""
    cfg = parse_config({"profiles": {"path": "p.parquet", "default_region": "FR"}, "data_sources": [
        {"name": "s", "dpid": 1, "segments": "d/*", "id_type": "declared", "declared": "hashed",
         "match_on": match_on, "normalization": normalization, **source}]})
    profiles = pa.table({"profile_id": [f"p{i}" for i in range(len(values))],
                         KEY_PREFIX + column: pa.array(values, pa.string())})
    text, _ = profile_keys(profiles, cfg.data_sources[0], cfg)
    binary, _ = profile_key_rows(profiles, cfg.data_sources[0], cfg)
    return (list(zip(text["profile_id"].to_pylist(), text["key"].to_pylist())),
            list(zip(binary["profile_id"].to_pylist(), binary["key"].to_pylist())))


@pytest.mark.parametrize("normalization", PROFILES)
@pytest.mark.parametrize("role, column, values", [("email", "email", EMAILS), ("phone", "mobile", PHONES)])
def test_a_column_read_as_the_roles_kind_gives_the_roles_keys_value_for_value(normalization, role, column, values):
    """Golden vectors: a second column read with match_as gives exactly the role's keys (the same
    normalization and hashing functions), under every profile, as text and as the join's bytes."""
    as_role = _keys(column, values, role, normalization)
    assert as_role == _keys("second", values, "second", normalization, match_as=role)
    assert len(as_role[0]) >= 3  # valid values gave keys
    # Left out, the column is compared as written (trimmed, its case kept): other keys.
    assert _keys("second", values, "second", normalization) != as_role


def _work_email_job(folder: Path, match_as: str | None) -> Path:
    """An extract with a home and a work email column; a partner's dump of SHA-256 digests of the
    normalized work emails (as the platform hashes them); a hashed source on ``work_email``."""
    work = [f" Work{i}@Corp.Example " for i in range(60)] + [f"work{i}@corp.example" for i in range(60, 100)]
    pq.write_table(pa.table({"profile_id": [f"P{i:03d}" for i in range(100)],
                             "email": [f"home{i}@example.org" for i in range(100)], "work_email": work,
                             "opt_out": [False] * 100}), folder / "profiles.parquet")
    (folder / "dumps").mkdir()
    digests = normalize_and_hash(pa.array(work), "email", "adobe")[0].to_pylist()
    (folder / "dumps" / "dump.sync").write_text("".join(f"{d} 11\n" for d in digests))
    source = {"name": "work", "dpid": 12345, "segments": "dumps/*.sync", "id_type": "declared", "declared": "hashed",
              "normalization": "adobe", "match_on": "work_email", **({"match_as": match_as} if match_as else {})}
    cfg = {"profiles": {"path": "profiles.parquet", "visitor_ids": None, "phone": None, "opt_out": "opt_out"},
           "buckets": 2, "diagnosis_sample": 0, "data_sources": [source]}
    (folder / "job.yaml").write_text(yaml.safe_dump(cfg))
    return folder / "job.yaml"


def test_capitalised_work_emails_reconcile_with_match_as_email(tmp_path):
    """The partner hashed normalized work emails; the 60 written with capitals and spaces missed their
    hash (compared as written), exit 0. With match_as: email, all 100 reconcile (the real CLI)."""
    job = _work_email_job(tmp_path, "email")
    result = run_import_cli(job, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    members = pq.read_table(tmp_path / "out" / "reconciled").to_pylist()
    assert len(members) == 100 and {m["profile_id"] for m in members} == {f"P{i:03d}" for i in range(100)}


def test_the_export_sends_a_column_read_as_emails_as_the_platform_hashes_it(tmp_path):
    """The export's declared IDs of a hashed source come from the same keys: the work emails
    normalized, then hashed (the platform's digests), not hashed as written."""
    job = _work_email_job(tmp_path, "email")
    pq.write_table(pa.table({"profile_id": ["P000", "P070"]}), tmp_path / "targets.parquet")
    result = cli_in_process("export", "--config", job, "--audience", "A", "--targets", tmp_path / "targets.parquet",
                            "--output", tmp_path / "out", "--run-date", "2026-11-22")
    assert result.returncode == 0, result.stderr
    (data,) = [p for p in (tmp_path / "out" / "onboarding").iterdir() if p.name.endswith(".sync.gz")]
    sent = {line.split("\t")[0] for line in gzip.decompress(data.read_bytes()).decode().splitlines()}
    assert sent == set(normalize_and_hash(pa.array(["work0@corp.example", "work70@corp.example"]), "email", "adobe")[0]
                       .to_pylist())


def test_a_key_cache_written_before_match_as_changed_gives_none_of_its_keys(tmp_path):
    """Imported with the column compared as written and a key cache, then again with match_as: email
    and the same cache: the rows are found in it, but not one key it holds for the old reading is
    reused (the cached column is named by the rules, key_kind among them): all 100 reconcile, as
    without a cache."""
    job = _work_email_job(tmp_path, "other")
    cache = tmp_path / "cache"
    result = cli_in_process("import", "--config", job, "--output", tmp_path / "before", "--key-cache", cache)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "before" / "reconciled").num_rows == 40  # the 60 with capitals missed
    job.write_text(job.read_text().replace("match_as: other", "match_as: email"))
    result = cli_in_process("import", "--config", job, "--output", tmp_path / "after", "--key-cache", cache)
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "after" / "reconciled").num_rows == 100


# ----------------------------------------------------------------------------------------- the stop
def test_a_hashed_source_comparing_email_addresses_as_written_fails_naming_the_fix(tmp_path):
    """match_as left out on a column of email addresses: 60 of 100 missed their hash, exit 0 (above).
    Judged over the whole extract, the run now fails: one line naming the data source, the column and
    both fixes, no address, nothing published. match_as: other written explicitly never trips it."""
    from conftest import assert_failed_cleanly

    job = _work_email_job(tmp_path, None)
    result = run_import_cli(job, tmp_path / "out")
    line = assert_failed_cleanly(result, tmp_path / "out", "'work'", "'work_email'", "match_as: email", "match_as: other")
    assert "100 of 100" in line and "@" not in result.stderr
    job.write_text(job.read_text().replace("match_on: work_email", "match_on: work_email\n  match_as: other"))
    result = run_import_cli(job, tmp_path / "as-written")
    assert result.returncode == 0, result.stderr
    assert pq.read_table(tmp_path / "as-written" / "reconciled").num_rows == 40  # as written, as asked


def _judged(batches: list[list], **source):
    """The config of a hashed source on 'col', and the counts a reader of an extract of ``batches``
    (values of 'col') gives it."""
    cfg = parse_config({"profiles": {"path": "p.parquet"}, "data_sources": [
        {"name": "s", "dpid": 1, "segments": "d/*", "id_type": "declared", "declared": "hashed", "match_on": "col",
         **source}]})
    counts = []
    for values in batches:
        counts += match_column_counts({KEY_PREFIX + "col": pa.array(values, pa.string())}, cfg, KEY_PREFIX)
    return cfg, Counts(counts)


_IDS = {
    "crm ids": [f"CRM-{i:06d}" for i in range(100)],
    "all-digit ids": [str(10**9 + i) for i in range(100)],
    "uuids": [str(uuid.UUID(int=i * 7919)) for i in range(100)],
    "hex digests": normalize_and_hash(pa.array([f"a{i}@b.co" for i in range(100)]), "email")[0].to_pylist(),
    "base64 digests": normalize_and_hash(pa.array([f"a{i}@b.co" for i in range(100)]), "email", "uid2")[0].to_pylist(),
    "phones": [f"+33 6 12 34 {i:02d} 00" for i in range(100)],
    "addresses in text": [f"mail a{i}@b.co or c@d.eu" for i in range(100)],
}


@pytest.mark.parametrize("kind", sorted(_IDS))
def test_the_stop_never_trips_on_ids_uuids_digests_or_phones(kind):
    cfg, counts = _judged([_IDS[kind]])
    check_match_columns(counts, cfg.data_sources, cfg.profiles)


def test_the_stop_trips_on_a_large_majority_of_addresses_judged_over_the_whole_extract():
    emails = [f" Ann{i}@Example.com\u00a0" for i in range(80)]
    cfg, counts = _judged([emails[:40], ["x", "", None] + _IDS["crm ids"][:19], emails[40:]])  # 80 of 100 non-empty
    with pytest.raises(RunFailed, match=r"data source 's': 80 of 100 values of its match_on column 'col' of "
                                        r"'p.parquet' are email addresses.*set match_as: email \(or match_as: other"):
        check_match_columns(counts, cfg.data_sources, cfg.profiles)
    cfg, counts = _judged([emails[:79], _IDS["crm ids"][:21]])  # 79 of 100: a mixed column, left to the diagnosis
    check_match_columns(counts, cfg.data_sources, cfg.profiles)
    cfg, counts = _judged([emails[:2]])  # two values are no column of addresses
    check_match_columns(counts, cfg.data_sources, cfg.profiles)
    for settled in ({"match_as": "other"}, {"match_as": "email"}, {"normalization": "none"}, {"declared": "plain"}):
        cfg, counts = _judged([emails], **settled)  # as written on purpose, read as emails, or hashed as stored
        assert not counts.get(Metric.MATCH_VALUES, "s")
        check_match_columns(counts, cfg.data_sources, cfg.profiles)


def test_an_export_of_a_column_of_addresses_compared_as_written_fails_too(tmp_path):
    """The export sent digests of the addresses as written (capitals and spaces): the platform's IDs of
    no one. It fails as the import does, sending nothing."""
    from conftest import assert_failed_cleanly

    job = _work_email_job(tmp_path, None)
    pq.write_table(pa.table({"profile_id": ["P000", "P070"]}), tmp_path / "targets.parquet")
    result = cli_in_process("export", "--config", job, "--audience", "A", "--targets", tmp_path / "targets.parquet",
                            "--output", tmp_path / "out", "--run-date", "2026-11-22")
    assert_failed_cleanly(result, tmp_path / "out", "'work'", "'work_email'", "match_as: email")
    assert not (tmp_path / "out" / "onboarding").exists() or not any((tmp_path / "out" / "onboarding").iterdir())
