"""Encrypted declared IDs end to end: AES-CBC and AES-GCM key rings, channels, forced reconciliation,
the file audience, wrong keys, and no key or address in logs."""
from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT
from pipelines import import_audience
from transforms.crypto import CbcDecryptor
from transforms.encrypt import encrypt_cbc, encrypt_gcm
from transforms.errors import RunFailed
from transforms.secrets import RingKey

CBC_KEY = bytes(range(32))
CBC_IV = bytes(range(100, 116))
GCM_OLD = RingKey(1, bytes([1]) * 32, datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2027, 1, 1, tzinfo=timezone.utc))
GCM_NEW = RingKey(2, bytes([2]) * 32, datetime(2026, 11, 1, tzinfo=timezone.utc), None)
GCM_EXPIRED = RingKey(3, bytes([3]) * 32, datetime(2025, 1, 1, tzinfo=timezone.utc), datetime(2026, 6, 1, tzinfo=timezone.utc))
GCM_FUTURE = RingKey(4, bytes([4]) * 32, datetime(2027, 1, 1, tzinfo=timezone.utc), None)
RUN_DATE = "2026-11-22"


def ring_json(*keys: RingKey) -> str:
    return json.dumps({"keys": [
        {"id": k.id, "secret": base64.b64encode(k.secret).decode(), "activates": k.activates.isoformat(),
         "expires": k.expires.isoformat() if k.expires else None} for k in keys]})


def write_job(tmp_path, source: dict, tokens: list[str], segments: str = "501") -> str:
    pq.write_table(
        pa.table({
            "profile_id": ["p1", "p2", "p3"],
            "email": ["Ann@Example.com", "bob@example.org", None],
            "mobile": ["+33 6 1234 5678", None, "0044 7700 900123"],
            "crm_token": ["tok-A", "tok-B", "tok-C"],
        }),
        tmp_path / "profiles.parquet",
    )
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / "ftp_1_9_full_1795305600000.sync").write_text("".join(f"{t} {segments}\n" for t in tokens))
    base = {"name": "enc", "dpid": 9, "segments": "dumps/*", "id_type": "declared", "declared": "encrypted"}
    job = {"profiles": {"path": "profiles.parquet", "visitor_ids": None}, "data_sources": [{**base, **source}]}
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(job))  # JSON is YAML
    return str(path)


def run_job(config: str, out, *extra) -> dict:
    return import_audience.run(["--config", config, "--output", str(out), "--run-date", RUN_DATE, *extra])


def table(out, name) -> list[tuple]:
    return sorted(tuple(r.values()) for r in pq.read_table(out / name).to_pylist())


def reasons(out) -> dict[int, str]:
    return {r["line"]: r["reason"] for r in pq.read_table(out / "rejected").to_pylist()}


@pytest.fixture
def cbc_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_CBC_KEY", CBC_KEY.hex())
    monkeypatch.setenv("TEST_CBC_IV", base64.b64encode(CBC_IV).decode())
    return {"algorithm": "aes-cbc", "key": "env:TEST_CBC_KEY", "key_encoding": "hex",
            "iv": "env:TEST_CBC_IV", "iv_encoding": "base64"}


def test_cbc_email_file_audience_keeps_every_address(tmp_path, cbc_env):
    tokens = encrypt_cbc(["  ann@example.COM", "Stranger@Example.net", "stranger@example.net", "not an email"], CBC_KEY, CBC_IV)
    tokens.append("AAAA")  # not a whole block
    config = write_job(tmp_path, {"match_on": "email", "channel": "email", "encryption": cbc_env}, tokens)
    report = run_job(config, tmp_path / "out")["data_sources"]["enc"]
    assert table(tmp_path / "out", "reconciled") == [("enc", "501", "p1")]
    # every decrypted address, matched (with its profile) or not; two lines, one address after
    # normalization: de-duplicated per segment
    assert table(tmp_path / "out", "file_audience") == [
        ("enc", "501", "email", "ann@example.com", "p1"), ("enc", "501", "email", "stranger@example.net", None)]
    assert reasons(tmp_path / "out") == {4: "invalid_plaintext", 5: "decrypt_failed"}
    # a line counts once: reconciled if it matched, else file_audience
    assert (report["received"], report["reconciled"], report["file_audience"], report["invalid_ids"]) == (5, 1, 2, 2)
    # the three lines with a valid ID name 501 (the two that failed to decrypt never reach the join)
    assert report["segments"]["501"] == {"members": 1, "file_audience": 2, "lines": 3}


def test_forced_reconciliation_counts_unmatched_instead(tmp_path, cbc_env):
    tokens = encrypt_cbc(["ann@example.com", "stranger@example.net"], CBC_KEY, CBC_IV)
    config = write_job(tmp_path, {"match_on": "email", "channel": "email", "force_reconciliation": True,
                                  "encryption": cbc_env}, tokens)
    report = run_job(config, tmp_path / "out")["data_sources"]["enc"]
    assert table(tmp_path / "out", "file_audience") == []
    assert reasons(tmp_path / "out") == {2: "no_matching_profile"}
    assert (report["reconciled"], report["unmatched"], report["file_audience"]) == (1, 1, 0)


def test_sms_channel_normalizes_decrypted_phones(tmp_path, cbc_env):
    tokens = encrypt_cbc(["+33612345678", "00447700900123", "+1 555 000 0000", "12"], CBC_KEY, CBC_IV)
    config = write_job(tmp_path, {"match_on": "phone", "channel": "sms", "encryption": cbc_env}, tokens)
    run_job(config, tmp_path / "out")
    assert table(tmp_path / "out", "reconciled") == [("enc", "501", "p1"), ("enc", "501", "p3")]
    assert table(tmp_path / "out", "file_audience") == [
        ("enc", "501", "sms", "+15550000000", None), ("enc", "501", "sms", "+33612345678", "p1"),
        ("enc", "501", "sms", "+447700900123", "p3")]
    assert reasons(tmp_path / "out") == {4: "invalid_plaintext"}


def _french_extract(tmp_path, config: str, source_region: str) -> None:
    """The extract's phones as a French CRM writes them (profiles.default_region: FR); the SMS data
    source's own default_region is its partner's."""
    pq.write_table(pa.table({"profile_id": ["p1", "p2"], "email": [None, None], "mobile": ["06 12 34 56 78", "+31 6 98765432"],
                             "opt_out": [False, False]}), tmp_path / "profiles.parquet")
    job = json.loads(open(config).read())
    job["profiles"].update(default_region="FR", opt_out="opt_out")
    job["data_sources"][0]["default_region"] = source_region
    open(config, "w").write(json.dumps(job))


def test_an_sms_sources_own_region_reads_the_partners_numbers_not_the_extracts(tmp_path, cbc_env):
    """A Dutch partner sending national numbers (default_region: NL on its SMS data source) against a
    French extract (profiles.default_region: FR): the extract's '06 12 34 56 78' was read in NL too,
    as +31612345678, a Dutch mobile. The partner's Dutch '06 12 34 56 78', someone else, was matched
    to the French profile, and that profile's own number sent as +33612345678 matched no one, exit 0.
    The extract's phones are read in the extract's region."""
    tokens = encrypt_cbc(["06 12 34 56 78", "+33 6 12 34 56 78"], CBC_KEY, CBC_IV)
    config = write_job(tmp_path, {"match_on": "phone", "channel": "sms", "encryption": cbc_env}, tokens)
    _french_extract(tmp_path, config, "NL")
    run_job(config, tmp_path / "out")
    assert table(tmp_path / "out", "reconciled") == [("enc", "501", "p1")]
    assert table(tmp_path / "out", "file_audience") == [
        ("enc", "501", "sms", "+31612345678", None), ("enc", "501", "sms", "+33612345678", "p1")]


def test_an_export_to_an_sms_source_with_its_own_region_sends_the_extracts_numbers(tmp_path, cbc_env):
    """The export encrypts the extract's phones: read in the SMS data source's region (BE) rather than
    the extract's (FR), '06 12 34 56 78' was sent as +32612345678, another number than the profile's,
    exit 0. It is sent as +33612345678, and the data source's import of the export finds the profile."""
    from pipelines import export_audience

    config = write_job(tmp_path, {"match_on": "phone", "channel": "sms", "encryption": cbc_env}, [])
    _french_extract(tmp_path, config, "BE")
    pq.write_table(pa.table({"profile_id": ["p1"]}), tmp_path / "targets.parquet")
    export_audience.run(["--config", config, "--audience", "a", "--targets", str(tmp_path / "targets.parquet"),
                         "--output", str(tmp_path / "export"), "--run-date", RUN_DATE])
    (sent,) = pq.read_table(tmp_path / "export" / "exported")["user_id"].to_pylist()
    assert CbcDecryptor(CBC_KEY, CBC_IV).decrypt(pa.array([sent]))[0].to_pylist() == ["+33612345678"]
    (tmp_path / "dumps" / "ftp_1_9_full_1795305600000.sync").write_text(f"{sent} 501\n")
    run_job(config, tmp_path / "out")
    assert table(tmp_path / "out", "reconciled") == [("enc", "501", "p1")]


def test_an_sms_source_under_meta_is_refused_its_export_would_not_import_back(tmp_path, cbc_env):
    """normalization: meta on an SMS source: its export encrypted the extract's numbers in Meta's form,
    without their '+' ('4915123456789'), and its own import read each back as a national number of
    the region: under DE, +494915123456789, a file audience of numbers no profile has, exit 0 (under
    FR, a Belgian member's number was invalid_plaintext, below the failure ratio: dropped, exit 0).
    Refused before anything runs, one line naming the field; no number is printed."""
    from conftest import cli_in_process

    config = write_job(tmp_path, {"match_on": "phone", "channel": "sms", "normalization": "meta",
                                  "encryption": cbc_env}, [])
    pq.write_table(pa.table({"profile_id": ["p1"], "email": [None], "mobile": ["+49 151 23456789"], "opt_out": [False]}),
                   tmp_path / "profiles.parquet")
    job = json.loads(open(config).read())
    job["profiles"].update(default_region="DE", opt_out="opt_out")
    open(config, "w").write(json.dumps(job))
    pq.write_table(pa.table({"profile_id": ["p1"]}), tmp_path / "targets.parquet")
    result = cli_in_process("export", "--config", config, "--audience", "a", "--targets", tmp_path / "targets.parquet",
                            "--output", tmp_path / "export", "--run-date", RUN_DATE)
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{config}: data_sources.0: normalization: meta writes phone numbers without their '+'"), last
    assert "Traceback" not in result.stderr
    assert "15123456789" not in result.stderr + result.stdout and not (tmp_path / "export" / "exported").exists()
    job["data_sources"][0]["normalization"] = "adobe"  # E.164 with its '+': the export imports back
    open(config, "w").write(json.dumps(job))
    assert cli_in_process("export", "--config", config, "--audience", "a", "--targets", tmp_path / "targets.parquet",
                          "--output", tmp_path / "export", "--run-date", RUN_DATE).returncode == 0
    (sent,) = pq.read_table(tmp_path / "export" / "exported")["user_id"].to_pylist()
    (tmp_path / "dumps" / "ftp_1_9_full_1795305600000.sync").write_text(f"{sent} 501\n")
    run_job(config, tmp_path / "out")
    assert table(tmp_path / "out", "file_audience") == [("enc", "501", "sms", "+4915123456789", "p1")]


@pytest.mark.parametrize("channel, sent, profile", [
    ("sms", ["+33612345678\n", "+33 7 00 00 00 01", "not a phone"], {"mobile": ["+33612345678", "+33700000001", None]}),
    ("email", ["ann@example.com\n", "Bob@Example.org", "not an address"], {"email": ["ann@example.com", "bob@example.org", None]}),
])
def test_an_encrypted_source_comparing_decrypted_text_as_written_is_refused(tmp_path, cbc_env, channel, sent, profile):
    """normalization: none (for partners hashing values as stored) on an encrypted email/SMS source: the
    decrypted text was neither trimmed, checked as an address of the channel nor normalized, so
    '+33612345678\\n' and '+33 7 00 00 00 01' matched no profile, and the file audience held them and
    'not a phone' as they were, exit 0. Decrypted text needs no such setting: refused before anything
    runs, one line naming the field; no address is printed."""
    from conftest import run_import_cli

    match_on = "phone" if channel == "sms" else "email"
    config = write_job(tmp_path, {"match_on": match_on, "channel": channel, "normalization": "none",
                                  "allow_no_match": True, "encryption": cbc_env}, encrypt_cbc(sent, CBC_KEY, CBC_IV))
    pq.write_table(pa.table({"profile_id": ["p1", "p2", "p3"], "email": [None] * 3, "mobile": [None] * 3, **profile}),
                   tmp_path / "profiles.parquet")
    result = run_import_cli(config, tmp_path / "out")
    assert result.returncode == 2, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{config}: data_sources.0: normalization: none compares"), last
    assert "Traceback" not in result.stderr and "example" not in result.stderr and not (tmp_path / "out").exists()
    job = json.loads(open(config).read())
    del job["data_sources"][0]["normalization"]
    open(config, "w").write(json.dumps(job))
    run_job(config, tmp_path / "out")
    assert table(tmp_path / "out", "reconciled") == [("enc", "501", "p1"), ("enc", "501", "p2")]


def test_channel_other_uses_the_token_as_a_plain_key(tmp_path):
    config = write_job(tmp_path, {"match_on": "crm_token", "channel": "other"}, ["tok-B", "tok-Z"])
    report = run_job(config, tmp_path / "out")["data_sources"]["enc"]
    assert table(tmp_path / "out", "reconciled") == [("enc", "501", "p2")]
    assert report["unmatched"] == 1 and report["file_audience"] == 0


def test_gcm_key_ring_rotation(tmp_path):
    ring = tmp_path / "ring.json"
    ring.write_text(ring_json(GCM_OLD, GCM_NEW, GCM_EXPIRED, GCM_FUTURE))
    tokens = [
        encrypt_gcm(["ann@example.com"], GCM_OLD)[0],      # 1 old key, still valid
        encrypt_gcm(["bob@example.org"], GCM_NEW)[0],      # 2 current key
        encrypt_gcm(["ann@example.com"], GCM_EXPIRED)[0],  # 3 expired
        encrypt_gcm(["ann@example.com"], GCM_FUTURE)[0],   # 4 not active yet
        encrypt_gcm(["new@example.net"], GCM_NEW)[0],      # 5 no profile: file audience
    ]
    unknown = RingKey(9, bytes([9]) * 32, GCM_NEW.activates)
    tokens.append(encrypt_gcm(["ann@example.com"], unknown)[0])  # 6 unknown key id
    raw = bytearray(base64.b64decode(tokens[1]))
    raw[-1] ^= 1
    tokens.append(base64.b64encode(bytes(raw)).decode())  # 7 tampered tag
    config = write_job(tmp_path, {"match_on": "email", "channel": "email", "max_decrypt_failure_ratio": 0.9,
                                  "encryption": {"algorithm": "aes-gcm", "keyring": f"file:{ring}"}}, tokens)
    report = run_job(config, tmp_path / "out")["data_sources"]["enc"]
    assert table(tmp_path / "out", "reconciled") == [("enc", "501", "p1"), ("enc", "501", "p2")]
    assert table(tmp_path / "out", "file_audience") == [
        ("enc", "501", "email", "ann@example.com", "p1"), ("enc", "501", "email", "bob@example.org", "p2"),
        ("enc", "501", "email", "new@example.net", None)]
    assert reasons(tmp_path / "out") == {3: "expired_key", 4: "key_not_active", 6: "unknown_key", 7: "decrypt_failed"}
    assert report["received"] == report["reconciled"] + report["file_audience"] + report["invalid_ids"] == 7


def test_wrong_key_fails_the_run_loudly_and_publishes_nothing(tmp_path, cbc_env, monkeypatch):
    tokens = encrypt_cbc([f"user{i}@example.com" for i in range(50)], bytes(32), CBC_IV)  # another key
    config = write_job(tmp_path, {"match_on": "email", "channel": "email", "encryption": cbc_env}, tokens)
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "import", "--config", config,
                             "--output", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ})
    assert result.returncode == 1
    assert "data source 'enc':" in result.stderr and "failed to decrypt" in result.stderr
    assert "Nothing was published" in result.stderr
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "out").glob("_incomplete-*"))
    assert CBC_KEY.hex() not in result.stderr + result.stdout


def test_a_wrong_key_fails_the_run_even_with_a_failure_ratio_of_one(tmp_path, cbc_env):
    """The config accepts max_decrypt_failure_ratio: 1.0; with a wrong key not one ID decrypts, and the
    run used to publish an empty audience with exit 0."""
    tokens = encrypt_cbc([f"user{i}@example.com" for i in range(50)], bytes(32), CBC_IV)  # another key
    config = write_job(tmp_path, {"match_on": "email", "channel": "email", "max_decrypt_failure_ratio": 1.0,
                                  "encryption": cbc_env}, tokens)
    with pytest.raises(RunFailed, match=r"^data source 'enc': 50 of 50 IDs failed to decrypt .*\(every one: fails "
                                        r"whatever max_decrypt_failure_ratio=1.0\); .*Nothing was published"):
        run_job(config, tmp_path / "out")
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_dump_under_another_key_beside_ones_that_decrypt_fails_the_run_naming_it(tmp_path, cbc_env):
    """The partner rotated its key, the config has the new one, and an older delivery under the old key
    is still in the folder: none of its IDs decrypts. A third of the data source's IDs, under
    max_decrypt_failure_ratio: its users were left out of the published audience, exit 0."""
    new = encrypt_cbc([f"user{i}@example.com" for i in range(6)], CBC_KEY, CBC_IV)
    config = write_job(tmp_path, {"match_on": "email", "channel": "email", "encryption": cbc_env}, new)
    dumps = tmp_path / "dumps"
    (dumps / "ftp_1_9_full_1795305600000.sync").rename(dumps / "ftp_1_9_iter_1795392000000.sync")
    old = encrypt_cbc(["ann@example.com", "bob@example.org", "old.customer@example.net"], bytes(32), CBC_IV)
    (dumps / "ftp_1_9_iter_1795305600000.sync").write_text("".join(f"{t} 501\n" for t in old))
    with pytest.raises(RunFailed) as info:
        run_job(config, tmp_path / "out")
    message = str(info.value)
    assert message.startswith("data source 'enc': ftp_1_9_iter_1795305600000.sync: 3 of 3 IDs failed to decrypt"), message
    assert "a delivery under another key" in message and "Nothing was published" in message, message
    assert "\n" not in message and CBC_KEY.hex() not in message and "ann@" not in message and old[0] not in message
    assert not (tmp_path / "out" / "report.json").exists()


def test_missing_key_is_a_configuration_error(tmp_path, cbc_env, monkeypatch):
    monkeypatch.delenv("TEST_CBC_KEY")
    config = write_job(tmp_path, {"match_on": "email", "channel": "email", "encryption": cbc_env}, ["x"])
    from transforms.config import ConfigError

    with pytest.raises(ConfigError, match=r"data_sources\[0\].encryption: .*TEST_CBC_KEY"):
        run_job(config, tmp_path / "out")


def test_gcm_run_logs_no_key_or_address(tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    ring = tmp_path / "ring.json"
    ring.write_text(ring_json(GCM_NEW))
    tokens = encrypt_gcm(["ann@example.com", "secret.person@example.net"], GCM_NEW)
    config = write_job(tmp_path, {"match_on": "email", "channel": "email",
                                  "encryption": {"algorithm": "aes-gcm", "keyring": f"file:{ring}"}}, tokens)
    run_job(config, tmp_path / "out")
    captured = capfd.readouterr()
    text = (caplog.text + captured.out + captured.err).lower()
    for needle in ["ann@example.com", "secret.person@example.net", base64.b64encode(GCM_NEW.secret).decode().lower(),
                   GCM_NEW.secret.hex(), tokens[0].lower()]:
        assert needle not in text


def test_encrypt_dump_script_round_trips(tmp_path, monkeypatch):
    from encrypt_dump import main as encrypt_dump
    from transforms.config import DataSourceConfig
    from transforms.crypto import decrypt_cbc_batch
    from transforms.dumps import read_dump

    monkeypatch.setenv("K", CBC_KEY.hex())
    monkeypatch.setenv("IV", CBC_IV.hex())
    (tmp_path / "plain.sync").write_text("ann@example.com 501 502\nbob@example.org 503\n")
    target = tmp_path / "ftp_1_9_full_1795305600000.sync.gz"
    assert encrypt_dump([str(tmp_path / "plain.sync"), str(target), "--key", "env:K", "--iv", "env:IV",
                         "--key-encoding", "hex", "--iv-encoding", "hex"]) == 0
    ds = DataSourceConfig(name="e", dpid=9, segments="x", id_type="declared", declared="encrypted",
                          match_on="email", channel="other")
    (parsed, rejected, n), = list(read_dump(str(target), ds))
    plain, failed = decrypt_cbc_batch(parsed["id"], CBC_KEY, CBC_IV)
    assert plain.to_pylist() == ["ann@example.com", "bob@example.org"] and failed.null_count == 2
    assert parsed["segments"].to_pylist() == [["501"], ["503"]] and parsed["removed"].to_pylist() == [["502"], []]


def _address_shard() -> tuple[pa.Table, pa.Table]:
    """A shard of an encrypted email source's lines (their keys the addresses) and its profile keys:
    ann matches two profiles, zed none."""
    from transforms.keys import DUMP_SHARD_SCHEMA, PROFILE_SHARD_SCHEMA

    keys = [b"ann@example.com", b"zed@example.net", b"zed@example.net", b"ann@example.com"]
    dump = pa.table({
        "source_file": pa.array(["f"] * 4).dictionary_encode(),
        "line": pa.array([1, 2, 3, 4], pa.int64()),
        "key": pa.array(keys, pa.binary()),
        "segments": pa.array(["7", "7,8", "7", "8"]).dictionary_encode(),
        "removed": pa.array(["9", "", "9", ""]).dictionary_encode(),
    }, schema=DUMP_SHARD_SCHEMA)
    prof = pa.table({"key": pa.array([b"ann@example.com", b"ann@example.com"], pa.binary()), "profile_id": ["p1", "p4"]},
                    schema=PROFILE_SHARD_SCHEMA)
    return dump, prof


def test_file_audience_rows_per_segment_address_and_profile():
    """join_bucket directly: an address that matches two profiles gives a file-audience row for each;
    an unmatched one gives one with a null profile_id; removals cover matched and unmatched lines
    alike; lines count once (reconciled or file audience). The rows leave the join with their lines'
    segment sets, as the writers read them (segment_rows makes a row per segment); repeats of a row
    may leave it (the writers keep each once: test_import_e2e's outputs against the generator's
    de-duplicated truth)."""
    from transforms.join import FILE_AUDIENCE_SCHEMA, join_bucket
    from transforms.keys import segment_rows

    out = join_bucket(*_address_shard(), "enc", "email", keep_file_audience=True)
    assert (out.reconciled, out.file_audience_lines, out.rejected) == (2, 2, None)
    file_audience, file_audience_removed = segment_rows(out.file_audience), segment_rows(out.file_audience_removed)
    rows = sorted({(r["segment_id"], r["address"], r["profile_id"] or "") for r in file_audience.to_pylist()})
    assert rows == [("7", "ann@example.com", "p1"), ("7", "ann@example.com", "p4"), ("7", "zed@example.net", ""),
                    ("8", "ann@example.com", "p1"), ("8", "ann@example.com", "p4"), ("8", "zed@example.net", "")]
    assert file_audience.column_names == FILE_AUDIENCE_SCHEMA.names
    assert {r["channel"] for r in file_audience.to_pylist()} == {"email"}
    removed = sorted({(r["segment_id"], r["address"], r["profile_id"] or "") for r in file_audience_removed.to_pylist()})
    assert removed == [("9", "ann@example.com", "p1"), ("9", "ann@example.com", "p4"), ("9", "zed@example.net", "")]


def test_the_join_sends_the_file_audience_split_and_packed_for_its_writers(tmp_path, cbc_env):
    """As the memberships: a shard's file audience leaves the join split by address for the writers
    and each piece packed (transforms.packed_tables), so the runner holds and copies compressed bytes
    (0.22 GiB of pieces at 10M on the many-segments mix, held through the memberships' writers)."""
    from transforms.config_load import parse_config
    from transforms.join import FILE_AUDIENCE_BUCKET_BY, JoinShard, join_bucket
    from transforms.packed_tables import PackedTable
    from transforms.stable_hash import BucketPieces, split_for_write

    source = {"name": "enc", "dpid": 9, "segments": "dumps/*", "id_type": "declared", "declared": "encrypted",
              "match_on": "email", "channel": "email", "encryption": cbc_env}
    cfg = parse_config({"profiles": {"path": "profiles.parquet", "visitor_ids": None}, "data_sources": [source], "buckets": 4})
    dump, prof = _address_shard()
    _, outputs, _, _ = JoinShard(cfg)._join("enc", [PackedTable.pack(dump)], [PackedTable.pack(prof)])
    sent = [out.value for out in outputs if getattr(out, "tag", None) == JoinShard.FILE_AUDIENCE]
    assert len(sent) == 1 and isinstance(sent[0], BucketPieces)
    assert (sent[0].bucket_by, sent[0].buckets) == (FILE_AUDIENCE_BUCKET_BY, 4)
    assert all(isinstance(rows, PackedTable) for _, rows in sent[0].pieces)
    expected = split_for_write(join_bucket(dump, prof, "enc", "email", True).file_audience, FILE_AUDIENCE_BUCKET_BY, 4)
    assert [(bucket, rows.unpack()) for bucket, rows in sent[0].pieces] == list(expected.pieces)
