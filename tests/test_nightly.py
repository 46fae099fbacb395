"""Nightly runs: dated partitions, incremental state, idempotence, atomic publish, integrity."""
from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from made_once import made_once_fixture

from conftest import DEMO, ROOT, cli_in_process, delivered
from pipelines import nightly

V = {i: str(i) * 38 for i in range(1, 6)}


def write_job(tmp_path) -> Path:
    pq.write_table(
        pa.table({"profile_id": ["p1", "p2", "p3", "p4"], "visitor_ids": [[V[1]], [V[2]], [V[3]], [V[4]]]}),
        tmp_path / "profiles.parquet",
    )
    config = {
        "profiles": {"path": "profiles.parquet", "email": None, "phone": None},
        "data_sources": [{"name": "vis", "dpid": 7, "segments": "dumps/{date:%Y%m%d}/*.sync*", "id_type": "visitor"}],
        "buckets": 4,
    }
    (tmp_path / "job.yaml").write_text(json.dumps(config))
    return tmp_path / "job.yaml"


def dump(tmp_path, day: str, mode: str, lines: list[str]):
    folder = tmp_path / "dumps" / day.replace("-", "")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"ftp_1_7_{mode}_{delivered(day)}.sync.gz").write_bytes(gzip.compress("".join(l + "\n" for l in lines).encode(), mtime=0))


def members(root: Path, day: str) -> set[tuple]:
    table = pq.read_table(root / f"dt={day}" / "reconciled")
    return {(r["segment_id"], r["profile_id"]) for r in table.to_pylist()}


def run(config, root, *args):
    return nightly.run(["--config", str(config), "--root", str(root), *args])


def test_iter_dumps_update_and_full_dumps_replace_the_previous_night(tmp_path):
    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-20", "full", [f"{V[1]} 10", f"{V[2]} 10,11"])
    dump(tmp_path, "2026-11-21", "iter", [f"{V[1]}  10", f"{V[3]} 11", f"{V[2]} 12 11"])
    dump(tmp_path, "2026-11-22", "full", [f"{V[4]} 12 10"])
    # the third night's full dump shrinks the audience from 3 to 1: intended here
    results = run(config, root, "--backfill", "2026-11-20:2026-11-22", "--allow-shrink")
    assert [r["status"] for r in results] == ["published"] * 3
    assert members(root, "2026-11-20") == {("10", "p1"), ("10", "p2"), ("11", "p2")}
    # iter: p1 leaves 10 (a removal-only line), p3 joins 11, p2 joins 12 and leaves 11
    assert members(root, "2026-11-21") == {("10", "p2"), ("11", "p3"), ("12", "p2")}
    assert members(root, "2026-11-22") == {("12", "p4")}  # full: replaces, removals ignored
    night2 = results[1]
    assert night2["previous"] == "dt=2026-11-20"
    entry = night2["report"]["data_sources"]["vis"]
    assert entry["previous_state"] == {"reconciled_carried": 1, "reconciled_removed": 2}
    assert entry["received"] == entry["reconciled"] == 3  # the removal-only line counts as applied
    manifest = json.loads((root / "dt=2026-11-21" / "_SUCCESS").read_text())
    assert manifest["previous_partition"] == "dt=2026-11-20" and manifest["run_date"] == "2026-11-21"
    for entry in manifest["files"]:
        data = (root / "dt=2026-11-21" / entry["path"]).read_bytes()
        assert len(data) == entry["bytes"]
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert sum(f.get("rows", 0) for f in manifest["files"] if f["path"].startswith("reconciled/")) == 3


def test_rerun_is_a_no_op_and_force_replaces_whole(tmp_path):
    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-22", "full", [f"{V[1]} 10", f"{V[2]} 11"])
    run(config, root, "--date", "2026-11-22")
    part = root / "dt=2026-11-22"
    before = {p: p.read_bytes() for p in part.rglob("*") if p.is_file()}
    stamps = {p: p.stat().st_mtime_ns for p in before}
    assert run(config, root, "--date", "2026-11-22")[0]["status"] == "already published"
    assert {p: p.stat().st_mtime_ns for p in before} == stamps
    stale = part / "reconciled" / "part-99999-of-99999.parquet"
    stale.write_bytes(b"stale")
    assert run(config, root, "--date", "2026-11-22", "--force")[0]["status"] == "published"
    assert not stale.exists()
    after = {p: p.read_bytes() for p in part.rglob("*") if p.is_file()}
    assert set(after) == set(before)
    for path, data in before.items():
        if path.name != "_SUCCESS":  # the manifest may name another code version; data files may not differ
            assert after[path] == data, path
    assert not list((root / "_staging").glob("*"))


@pytest.mark.parametrize("damage", ["truncate", "control"])
def test_bad_input_publishes_nothing_for_the_date(tmp_path, damage):
    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-22", "full", [f"{V[i % 4 + 1]} {i}" for i in range(3000)])
    victim = next((tmp_path / "dumps" / "20261122").glob("*.gz"))
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-20])
    else:
        (victim.parent / "ftp_1_7_full_1795305600000.info").write_text(json.dumps(
            {"Files": [{"FileName": victim.name, "FileSequenceNumber": 1, "FileLineCount": 3001,
                        "FileByteSize": victim.stat().st_size, "md5": "0" * 32}], "Totals": {}}))
    result = cli_in_process("nightly", "--config", config, "--root", root, "--date", "2026-11-22")
    assert result.returncode == 1
    assert victim.name in result.stderr and "Traceback" not in result.stderr
    assert not (root / "dt=2026-11-22" / "_SUCCESS").exists()
    assert not list(root.glob("dt=2026-11-22/*/*.parquet"))
    assert not list((root / "_staging").glob("*"))


def test_killed_run_leaves_no_visible_partition_and_the_next_run_recovers(tmp_path):
    from generate_data import generate

    data = tmp_path / "data"
    generate(data, n_profiles=150_000, n_lines=300_000, seed=5)
    root = tmp_path / "root"
    cmd = [sys.executable, "-m", "pipelines.cli", "nightly", "--config", str(data / "job.yaml"), "--root", str(root),
           "--date", "2026-11-22"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(root.glob("_staging/*/*/*.parquet")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(root.glob("_staging/*/*/*.parquet")), "the run ended before it could be killed midway"
    assert not (root / "dt=2026-11-22" / "_SUCCESS").exists()
    done = nightly.run(["--config", str(data / "job.yaml"), "--root", str(root), "--date", "2026-11-22"])
    assert done[0]["status"] == "published"
    with open(data / "expected" / "memberships.csv") as fh:
        expected = {tuple(r) for r in list(csv.reader(fh))[1:]}
    got = {tuple(r.values()) for r in pq.read_table(root / "dt=2026-11-22" / "reconciled").to_pylist()}
    assert got == expected


def test_a_night_killed_before_its_root_page_is_on_the_page_after_its_rerun(tmp_path):
    """SIGKILLed after its night was published, before ``ROOT/report.html`` was rewritten: the rerun said
    'already published' (as it must) and left the page without the night (a first night: no page at all)
    until another night was published."""
    from test_export_kills import TORN_WRITE

    config, root = write_job(tmp_path), tmp_path / "root"
    dump(tmp_path, "2026-11-21", "full", [f"{V[1]} 10", f"{V[2]} 10"])
    run(config, root, "--date", "2026-11-21")
    dump(tmp_path, "2026-11-22", "iter", [f"{V[3]} 10"])
    argv = ["--config", str(config), "--root", str(root), "--date", "2026-11-22"]
    killed = subprocess.run([sys.executable, "-c", TORN_WRITE + "from pipelines import nightly\nnightly.run(sys.argv[1:])\n",
                             *argv], cwd=ROOT, capture_output=True, timeout=300,
                            env={**os.environ, "KILL_IN_WRITE": ".partial"})  # the page, written beside
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert (root / "dt=2026-11-22" / "_SUCCESS").exists()
    assert 'href="dt=2026-11-22/report.html"' not in (root / "report.html").read_text()
    assert run(config, root, "--date", "2026-11-22")[0]["status"] == "already published"
    assert 'href="dt=2026-11-22/report.html"' in (root / "report.html").read_text()
    # A page it cannot write is a warning there: the night stands published (exit 0, as before).
    (root / "report.html").unlink()
    (root / "report.html").mkdir()
    (root / "report.html" / "x").write_text("")
    again = cli_in_process("nightly", *argv)
    assert again.returncode == 0 and "report.html: cannot write the page" in again.stderr, again.stderr


def test_demo_night_publishes_a_complete_partition(tmp_path):
    results = nightly.run(["--config", str(DEMO / "job.yaml"), "--root", str(tmp_path), "--date", "2026-11-22"])
    report = results[0]["report"]
    for entry in report["data_sources"].values():
        assert entry["received"] == sum(entry[k] for k in ("format_errors", "invalid_ids", "removals_only",
                                                            "unmatched", "reconciled", "file_audience"))
    manifest = json.loads((tmp_path / "dt=2026-11-22" / "_SUCCESS").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {str(p.relative_to(tmp_path / "dt=2026-11-22")) for p in (tmp_path / "dt=2026-11-22").rglob("*")
               if p.is_file() and p.name != "_SUCCESS"}
    assert listed == on_disk
    assert len(manifest["config_digest"]) == 64 and manifest["code_version"].startswith("0.1.0+")


def encrypted_email_job(tmp_path, profiles: str) -> Path:
    """One AES-CBC encrypted email data source (a file audience), key and IV from NIGHTLY_KEY / NIGHTLY_IV."""
    config = {
        "profiles": {"path": profiles, "phone": None, "visitor_ids": None},
        "data_sources": [{"name": "enc", "dpid": 7, "segments": "dumps/{date:%Y%m%d}/*.sync*", "id_type": "declared",
                          "declared": "encrypted", "match_on": "email", "channel": "email",
                          "encryption": {"key": "env:NIGHTLY_KEY", "key_encoding": "hex", "iv": "env:NIGHTLY_IV",
                                         "iv_encoding": "hex"}}],
        "buckets": 2,
    }
    (tmp_path / "job.yaml").write_text(json.dumps(config))
    return tmp_path / "job.yaml"


def nightly_key_and_iv(monkeypatch) -> tuple[bytes, bytes]:
    """The key and IV of encrypted_email_job, set in NIGHTLY_KEY and NIGHTLY_IV."""
    key, iv = bytes(range(32)), bytes(range(16))
    monkeypatch.setenv("NIGHTLY_KEY", key.hex())
    monkeypatch.setenv("NIGHTLY_IV", iv.hex())
    return key, iv


def encrypted_nights(tmp_path, monkeypatch) -> Path:
    """Encrypted emails (a file audience) over two nights: night 1 full, night 2 iter (zed now matches
    a profile, bob leaves 10, ann joins 12); returns the config."""
    from transforms.encrypt import encrypt_cbc

    key, iv = nightly_key_and_iv(monkeypatch)
    for day, emails in (("20261120", ["ann@example.com"]), ("20261121", ["ann@example.com", "zed@example.net"])):
        (tmp_path / day).mkdir(exist_ok=True)
        pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(len(emails))], "email": emails}),
                       tmp_path / day / "profiles.parquet")
    config = encrypted_email_job(tmp_path, "{date:%Y%m%d}/profiles.parquet")
    ann, zed, bob = encrypt_cbc(["ann@example.com", "zed@example.net", "bob@example.org"], key, iv)
    dump(tmp_path, "2026-11-20", "full", [f"{ann} 10,11", f"{zed} 10", f"{bob} 10"])
    dump(tmp_path, "2026-11-21", "iter", [f"{zed} 10", f"{bob}  10", f"{ann} 12"])
    return config


def encrypted_first_night(work: Path) -> Path:
    """encrypted_nights in the new folder ``work``, night 1 (2026-11-20) published under
    ``work / "root"``; returns the config."""
    work.mkdir()
    with pytest.MonkeyPatch.context() as monkeypatch:
        config = encrypted_nights(work, monkeypatch)
        run(config, work / "root", "--date", "2026-11-20")
    return config


made_encrypted_night = made_once_fixture("encrypted-night", encrypted_first_night)


@pytest.fixture
def encrypted_night(made_encrypted_night, monkeypatch) -> tuple[Path, Path]:
    """``(config, root)``: encrypted_nights with night 1 published, as the module's run left it (its
    folder put back from the untouched copy before each test, at the same paths: a night's report
    names the dumps it read by path), and the key and IV in the environment again."""
    nightly_key_and_iv(monkeypatch)
    return made_encrypted_night.restored(), made_encrypted_night.work / "root"


def file_audience(root: Path, day: str) -> list[tuple]:
    return sorted((r["segment_id"], r["address"], r["profile_id"] or "")
                  for r in pq.read_table(root / f"dt={day}" / "file_audience").to_pylist())


def test_file_audience_nightly_state_follows_the_newest_line_per_address(encrypted_night):
    """Encrypted emails, night after night: tonight's row for an address in a segment replaces the
    previous one (its profile_id may change), removals drop its rows whatever their profile, and a
    previous partition written before file_audience had a profile_id column still merges with
    --allow-gap (refused without: test_release_mix.py)."""
    config, root = encrypted_night
    assert file_audience(root, "2026-11-20") == [("10", "ann@example.com", "p0"), ("10", "bob@example.org", ""),
                                                 ("10", "zed@example.net", ""), ("11", "ann@example.com", "p0")]
    # the first night as an older release wrote it: no profile_id column (nor bucketing in _SUCCESS)
    manifest = json.loads((root / "dt=2026-11-20" / "_SUCCESS").read_text())
    for part in (root / "dt=2026-11-20" / "file_audience").glob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["profile_id"]), part)
        entry = next(e for e in manifest["files"] if e["path"] == f"file_audience/{part.name}")
        entry.update(bytes=part.stat().st_size, sha256=hashlib.sha256(part.read_bytes()).hexdigest())
    del manifest["bucketing"]
    (root / "dt=2026-11-20" / "_SUCCESS").write_text(json.dumps(manifest))
    results = run(config, root, "--date", "2026-11-21", "--allow-gap")
    assert results[0]["status"] == "published"
    # zed now matches p1 (replaces its null row), bob leaves 10, ann joins 12 and keeps 10 and 11
    # (carried: the older partition's rows have a null profile_id)
    assert file_audience(root, "2026-11-21") == [("10", "ann@example.com", ""), ("10", "zed@example.net", "p1"),
                                                 ("11", "ann@example.com", ""), ("12", "ann@example.com", "p0")]


def test_file_audience_previous_parts_read_by_shard_merge_as_when_read_whole(encrypted_night, monkeypatch):
    """The file audience's merge (tonight's row for an address replaces the previous ones) gives the
    same partition and counts when each writer reads its previous part itself."""
    config, whole = encrypted_night
    direct = whole.parent / "direct"
    shutil.copytree(whole, direct)  # night 1 as published (a root records no path of its own)
    with monkeypatch.context() as m:
        m.setattr(nightly, "previous_parts", lambda *args: {})
        expected = run(config, whole, "--date", "2026-11-21")[0]["report"]
    import pipelines.import_audience as import_audience

    monkeypatch.setattr(import_audience, "PreviousState", None)  # never read whole
    report = run(config, direct, "--date", "2026-11-21")[0]["report"]
    assert file_audience(direct, "2026-11-21") == [("10", "ann@example.com", "p0"), ("10", "zed@example.net", "p1"),
                                                   ("11", "ann@example.com", "p0"), ("12", "ann@example.com", "p0")]
    assert report["data_sources"] == expected["data_sources"]
    # night 1's 4 rows, each accounted for: ann's two carried, bob's removed, zed's replaced by tonight's row
    previous = {k: v for k, v in report["data_sources"]["enc"]["previous_state"].items() if k.startswith("file_audience")}
    assert previous == {"file_audience_carried": 2, "file_audience_removed": 1, "file_audience_replaced": 1}
    for part in sorted((whole / "dt=2026-11-21").rglob("*.parquet")):
        assert (direct / part.relative_to(whole)).read_bytes() == part.read_bytes(), part.name


def test_an_iter_night_of_the_generators_data_agrees_with_the_duckdb_baseline(tmp_path):
    """The bench's nightly-iter pair, small: night 2's iter dumps (removed segments applied) merged
    into night 1 give the memberships DuckDB computes by SQL (previous of profiles still in the
    extract, less removals, plus additions), with and without the key cache, byte for byte the same."""
    from baseline_duckdb import memberships
    from bench import NIGHTS, make_data

    folder, _ = make_data(tmp_path / "work", "nightly-iter", 3000, 1.0)
    night1, night2 = (folder / day.replace("-", "") for day in NIGHTS)
    assert all("_iter_" in p.name for p in night2.glob("segments/*/*"))
    roots = {flag: tmp_path / f"root{flag}" for flag in ("", "--no-key-cache")}
    for flag, root in roots.items():
        for day in NIGHTS:
            report = nightly.run(["--config", str(folder / "job.yaml"), "--root", str(root), "--date", day,
                                  *filter(None, [flag])])[0]["report"]
    assert sum(e["previous_state"].get("reconciled_removed", 0) for e in report["data_sources"].values()) > 0
    # night 2's extract replaced some profile ids: their memberships left (the baseline drops them too)
    assert sum(e["previous_state"].get("reconciled_profile_left", 0) for e in report["data_sources"].values()) > 0
    pq.write_table(memberships(night1), tmp_path / "night1.parquet")
    expected = memberships(night2, tmp_path / "night1.parquet")
    ours = pq.read_table(roots[""] / f"dt={NIGHTS[1]}" / "reconciled")
    as_set = lambda t: set(zip(*(t[c].cast(pa.string()).to_pylist() for c in ("data_source", "segment_id", "profile_id"))))  # noqa: E731
    assert as_set(ours) == as_set(expected) != as_set(pq.read_table(roots[""] / f"dt={NIGHTS[0]}" / "reconciled"))
    night = roots[""] / f"dt={NIGHTS[1]}"
    for part in sorted(night.rglob("*.parquet")):
        assert (roots["--no-key-cache"] / f"dt={NIGHTS[1]}" / part.relative_to(night)).read_bytes() == part.read_bytes()


def test_a_night_whose_addresses_stop_matching_fails_instead_of_filling_the_file_audience(tmp_path, monkeypatch):
    """An IV typo on an encrypted email source (byte 0 XOR 3): a small iter night decrypts to other,
    valid addresses (a few even another customer's); they went to the file audience, the IV check
    too small a sample to see it, the audience size unchanged. Against the previous night's share
    of addresses that match a profile, the night fails; the right IV publishes."""
    from test_iv_check import a_dump, realistic_emails

    from transforms.encrypt import encrypt_cbc
    from transforms.errors import RunFailed

    key, iv = bytes(range(32)), bytes(range(16))
    monkeypatch.setenv("NIGHTLY_KEY", key.hex())
    population = realistic_emails(2000, 1)
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(len(population))], "email": population}),
                   tmp_path / "profiles.parquet")
    config = encrypted_email_job(tmp_path, "profiles.parquet")
    strangers = realistic_emails(200, 7)
    night1 = a_dump(population[:1000], strangers[:100], 100)
    night2 = a_dump(population[1000:], strangers[100:], 40)
    dump(tmp_path, "2026-11-20", "full", [f"{t} 10" for t in encrypt_cbc(night1, key, iv)])
    dump(tmp_path, "2026-11-21", "iter", [f"{t} 10" for t in encrypt_cbc(night2, key, iv)])
    root = tmp_path / "root"
    monkeypatch.setenv("NIGHTLY_IV", iv.hex())
    run(config, root, "--date", "2026-11-20")
    monkeypatch.setenv("NIGHTLY_IV", bytes([iv[0] ^ 3, *iv[1:]]).hex())
    with pytest.raises(RunFailed, match=r"data source 'enc': (<0\.1|0\.\d)% of tonight's addresses match a profile, against 70\.\d% "
                                        r"in dt=2026-11-20"):
        run(config, root, "--date", "2026-11-21")
    assert not (root / "dt=2026-11-21").exists()
    monkeypatch.setenv("NIGHTLY_IV", iv.hex())
    report = run(config, root, "--date", "2026-11-21")[0]["report"]
    assert report["data_sources"]["enc"]["reconciled"] == 28


def test_a_source_that_stops_keeping_a_file_audience_has_its_previous_rows_removed(encrypted_night):
    """force_reconciliation set after a night that kept a file audience: an iter night carried the
    previous night's 4 rows (2 of addresses no profile has), exit 0, while the source imports only
    matches now (and its page no longer mentions a file audience). They are removed, and counted so."""
    config, root = encrypted_night
    job = json.loads(config.read_text())
    job["data_sources"][0]["force_reconciliation"] = True
    config.write_text(json.dumps(job))
    report = run(config, root, "--date", "2026-11-21")[0]["report"]
    assert file_audience(root, "2026-11-21") == []
    previous = report["data_sources"]["enc"]["previous_state"]
    assert (previous["file_audience_removed"], previous.get("file_audience_carried", 0)) == (4, 0)
    assert members(root, "2026-11-21") == {("10", "p0"), ("11", "p0"), ("10", "p1"), ("12", "p0")}


def test_an_iter_night_of_a_source_that_starts_keeping_a_file_audience_is_refused(tmp_path, monkeypatch):
    """force_reconciliation turned off on an iter night: the previous night kept no file audience for
    the source, so its file audience was tonight's lines only (night 1's bob and zed, delivered in
    its full dump, missing), exit 0. Refused as an iter night with nothing to build on is."""
    from transforms.errors import ConfigError

    config, root = encrypted_nights(tmp_path, monkeypatch), tmp_path / "root"
    job = json.loads(config.read_text())
    config.write_text(json.dumps({**job, "data_sources": [{**job["data_sources"][0], "force_reconciliation": True}]}))
    run(config, root, "--date", "2026-11-20")
    config.write_text(json.dumps(job))
    with pytest.raises(ConfigError, match=r"^data source 'enc': tonight's dumps are iter \(changes\) and dt=2026-11-20 "
                                          r"kept no file audience for it .*deliver a full dump first, or --allow-gap"):
        run(config, root, "--date", "2026-11-21")
    assert run(config, root, "--date", "2026-11-21", "--allow-gap")[0]["status"] == "published"


def test_an_iter_night_after_the_file_audiences_normalization_changed_is_refused(tmp_path, monkeypatch):
    """normalization: google set on an iter night (the diagnosis may suggest it): the carried rows
    stayed in adobe's form beside tonight's, and a removal, normalized the new way, missed them:
    jo.doe@gmail.com stayed in segment 10, exit 0. Refused as an iter night with nothing to build
    on is; a full dump rebuilds the file audience in the new form."""
    from transforms.encrypt import encrypt_cbc
    from transforms.errors import ConfigError

    key, iv = bytes(range(32)), bytes(range(16))
    monkeypatch.setenv("NIGHTLY_KEY", key.hex())
    monkeypatch.setenv("NIGHTLY_IV", iv.hex())
    pq.write_table(pa.table({"profile_id": ["p0"], "email": ["ann@example.com"]}), tmp_path / "profiles.parquet")
    config, root = encrypted_email_job(tmp_path, "profiles.parquet"), tmp_path / "root"
    jo, ann = encrypt_cbc(["Jo.Doe@gmail.com", "ann@example.com"], key, iv)
    dump(tmp_path, "2026-11-20", "full", [f"{jo} 10", f"{ann} 10"])
    run(config, root, "--date", "2026-11-20")
    job = json.loads(config.read_text())
    config.write_text(json.dumps({**job, "data_sources": [{**job["data_sources"][0], "normalization": "google"}]}))
    dump(tmp_path, "2026-11-21", "iter", [f"{jo}  10"])  # jo leaves 10
    with pytest.raises(ConfigError, match=r"^data source 'enc': its file audience's addresses were written as "
                                          r"email/adobe by dt=2026-11-20, email/google tonight"):
        run(config, root, "--date", "2026-11-21")
    for old in (tmp_path / "dumps" / "20261121").iterdir():
        old.unlink()
    dump(tmp_path, "2026-11-21", "full", [f"{ann} 10"])
    run(config, root, "--date", "2026-11-21")
    assert file_audience(root, "2026-11-21") == [("10", "ann@example.com", "p0")]
    dump(tmp_path, "2026-11-22", "iter", [f"{jo} 11"])  # the next iter night builds on the new form
    run(config, root, "--date", "2026-11-22")
    assert file_audience(root, "2026-11-22") == [("10", "ann@example.com", "p0"), ("11", "jodoe@gmail.com", "")]


def test_addresses_that_stop_matching_after_a_night_without_their_delivery_fail_too(tmp_path, monkeypatch):
    """The same IV typo on the first night after one that carried the source without a dump
    (max_nights_without_delivery; another source delivered): that night read no address, so there was
    nothing to compare with, and the strangers went to the file audience, exit 0. Compared with the
    latest night that read its dumps."""
    from test_iv_check import a_dump, realistic_emails

    from transforms.encrypt import encrypt_cbc
    from transforms.errors import RunFailed

    key, iv = bytes(range(32)), bytes(range(16))
    monkeypatch.setenv("NIGHTLY_KEY", key.hex())
    monkeypatch.setenv("NIGHTLY_IV", iv.hex())
    population, vid = realistic_emails(2000, 1), "1" * 38
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(len(population))], "email": population,
                             "visitor_ids": [[vid]] + [[]] * (len(population) - 1)}), tmp_path / "profiles.parquet")
    job = json.loads(encrypted_email_job(tmp_path, "profiles.parquet").read_text())
    job["profiles"]["visitor_ids"] = "visitor_ids"
    job["data_sources"][0]["max_nights_without_delivery"] = 2
    job["data_sources"].append({"name": "web", "dpid": 8, "segments": "web/{date:%Y%m%d}/*", "id_type": "visitor"})
    config, root = tmp_path / "job.yaml", tmp_path / "root"
    config.write_text(json.dumps(job))
    for day, mode in (("2026-11-20", "full"), ("2026-11-21", "iter"), ("2026-11-22", "iter")):
        (tmp_path / "web" / day.replace("-", "")).mkdir(parents=True)
        (tmp_path / "web" / day.replace("-", "") / f"ftp_1_8_{mode}_{delivered(day)}.sync").write_text(f"{vid} 5\n")
    strangers = realistic_emails(200, 7)
    night1, night3 = a_dump(population[:1000], strangers[:100], 100), a_dump(population[1000:], strangers[100:], 40)
    dump(tmp_path, "2026-11-20", "full", [f"{t} 10" for t in encrypt_cbc(night1, key, iv)])
    run(config, root, "--date", "2026-11-20")
    run(config, root, "--date", "2026-11-21")  # enc delivers nothing: carried
    bad_iv = bytes([iv[0] ^ 3, *iv[1:]])
    dump(tmp_path, "2026-11-22", "iter", [f"{t} 10" for t in encrypt_cbc(night3, key, iv)])
    monkeypatch.setenv("NIGHTLY_IV", bad_iv.hex())
    with pytest.raises(RunFailed, match=r"data source 'enc': (<0\.1|0\.\d)% of tonight's addresses match a profile, "
                                        r"against 70\.\d% in dt=2026-11-20"):
        run(config, root, "--date", "2026-11-22")
    assert not (root / "dt=2026-11-22").exists()
