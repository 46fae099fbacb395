"""Mismatch diagnosis end to end: dumps made (with the project's own hashing and encryption) the way a
partner gets it wrong -- another normalization profile, digest encoding, column, algorithm, no
normalization, visitor IDs without their leading zeros, plain IDs in another case, an encrypted
source with the wrong IV or key encoding -- run through the real import. The top finding must name
the right config change, and the import re-run with that change applied must match every line."""
from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines import import_audience
from transforms.encrypt import encrypt_cbc
from transforms.errors import RunFailed
from transforms.normalize import normalize_and_hash, normalize_keys

N = 240
UNKNOWN = 12  # lines per data source that no profile has, whatever the settings
KEY_HEX = "000102030405060708090a0b0c0d0e0f"  # 32 characters: hex of 16 bytes, or base64 of 24 (DEMO/TEST ONLY)
IV_HEX = "f0e0d0c0b0a090807060504030201000"
OTHER_IV_HEX = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def _profiles() -> pa.Table:
    emails, phones, crm, visitors = [], [], [], []
    for i in range(N):
        email = [f"user{i}@example.com", f"first.last{i}@gmail.com", f"  User{i}@Example.ORG "][i % 3]
        emails.append(email)
        phones.append(f"+33 6 12 {i // 100:02d} {i % 100:02d} 10")
        crm.append(f"CRM-{i:05d}")
        digits = f"{(i + 1) * 7919 ** 9:038d}"[-38:]
        visitors.append([("000" + digits[3:]) if i % 3 == 0 else ("9" + digits[1:])])
    return pa.table({"profile_id": [f"P{i:04d}" for i in range(N)], "email": emails, "mobile": phones,
                     "crm_id": crm, "visitor_ids": visitors})


def _hashed(values, kind, profile="adobe", encoding="hex", algorithm="sha256") -> list[str]:
    return normalize_and_hash(pa.array(values), kind, profile, encoding, algorithm=algorithm)[0].to_pylist()


def _unknown_emails() -> list[str]:
    return [f"nobody{i}@example.invalid" for i in range(UNKNOWN)]


def _build(root: Path) -> tuple[dict, dict]:
    """Profiles, dumps and a config with one data source per mistake; returns (config, the top
    suggestion each data source must get)."""
    profiles = _profiles()
    pq.write_table(profiles, root / "profiles.parquet")
    emails, phones = profiles["email"].to_pylist(), profiles["mobile"].to_pylist()
    key16, key24 = bytes.fromhex(KEY_HEX), base64.b64decode(KEY_HEX)
    normalized = normalize_keys(pa.array(emails + _unknown_emails()), "email", "adobe")[0].to_pylist()
    unknown_phones = [f"+33 7 00 00 {i:02d} 00" for i in range(UNKNOWN)]
    e164 = normalize_keys(pa.array(phones + unknown_phones), "phone", "adobe")[0].to_pylist()  # one AES block each
    dumps = {
        "as-configured": _hashed(emails + _unknown_emails(), "email"),
        "wrong-profile": _hashed(emails + _unknown_emails(), "email", "uid2", "base64"),
        "wrong-encoding": _hashed(emails + _unknown_emails(), "email", "adobe", "base64"),
        "wrong-column": _hashed(phones + _unknown_emails(), "phone"),
        "wrong-algorithm": _hashed(emails + _unknown_emails(), "email", algorithm="sha1"),
        "sha1-wrong-profile": _hashed(emails + _unknown_emails(), "email", "uid2", "base64", algorithm="sha1"),
        "sha1-got-sha256": _hashed(emails + _unknown_emails(), "email"),
        "not-normalized": _hashed(emails + _unknown_emails(), "email", "none"),
        "visitors": [v[0].lstrip("0") for v in profiles["visitor_ids"].to_pylist()] + [f"{i:038d}" for i in range(1, UNKNOWN + 1)],
        "plain-case": [f" {c.lower()} " if i % 2 else c.lower() for i, c in enumerate(profiles["crm_id"].to_pylist())]
        + [f"crm-x{i}" for i in range(UNKNOWN)],
        "wrong-iv": encrypt_cbc(normalized, key16, bytes.fromhex(OTHER_IV_HEX)),
        "wrong-key-encoding": encrypt_cbc(normalized, key24, bytes.fromhex(IV_HEX)),
        "sms-wrong-iv": encrypt_cbc(e164, key16, bytes.fromhex(OTHER_IV_HEX)),
    }
    (root / "keys").mkdir()
    (root / "keys" / "key.txt").write_text(KEY_HEX + "\n")
    (root / "keys" / "iv.txt").write_text(IV_HEX + "\n")
    sources = []
    for n, (name, ids) in enumerate(dumps.items()):
        folder = root / "segments" / name
        folder.mkdir(parents=True)
        sep = "\t" if name == "plain-case" else " "
        (folder / "dump.sync").write_text("".join(f"{i}{sep}11\n" for i in ids))
        if name.startswith(("wrong-i", "wrong-key", "sms-")):
            # One line the configured key and IV decrypt: a source none of whose IDs decrypts fails the
            # run whatever max_decrypt_failure_ratio, and these runs must publish their report.
            right = encrypt_cbc((e164 if name.startswith("sms-") else normalized)[:1], key16, bytes.fromhex(IV_HEX))
            (folder / "planted.sync").write_text(f"{right[0]} 11\n")
        ds = {"name": name, "dpid": 100 + n, "segments": f"segments/{name}/*.sync", "id_type": "declared",
              "declared": "hashed", "match_on": "email", "normalization": "adobe"}
        if name == "visitors":
            ds = {k: ds[k] for k in ("name", "dpid", "segments")} | {"id_type": "visitor"}
        elif name == "plain-case":
            ds |= {"declared": "plain", "match_on": "crm_id", "field_separator": "\t"}
            del ds["normalization"]
        elif name.startswith("sha1-"):  # configured with another algorithm than SHA-256
            ds |= {"hash_algorithm": "sha1"}
        elif name.startswith("wrong-i") or name.startswith("wrong-key") or name.startswith("sms-"):
            ds |= {"declared": "encrypted", "channel": "email", "max_decrypt_failure_ratio": 1.0,
                   "encryption": {"key": "file:keys/key.txt", "key_encoding": "hex", "iv": "file:keys/iv.txt", "iv_encoding": "hex"}}
            if name.startswith("sms-"):
                ds |= {"channel": "sms", "match_on": "phone"}
        ds["max_invalid_id_ratio"] = 1.0  # wrong on purpose: the run publishes, with its findings
        if ds["id_type"] == "declared":
            ds["allow_no_match"] = True  # (and so does one whose IDs all match no profile)
        sources.append(ds)
    cfg = {"profiles": {"path": "profiles.parquet", "email": "email", "phone": "mobile", "visitor_ids": "visitor_ids"},
           "buckets": 4, "data_sources": sources}
    expected = {
        "as-configured": None,
        "wrong-profile": ("normalization", {"normalization": "uid2"}),
        "wrong-encoding": ("digest", {"digest": "base64"}),
        "wrong-column": ("column", {"match_on": "phone"}),
        "wrong-algorithm": ("algorithm", {"hash_algorithm": "sha1"}),
        "sha1-wrong-profile": ("normalization", {"normalization": "uid2"}),
        "sha1-got-sha256": ("algorithm", {"hash_algorithm": "sha256"}),
        "not-normalized": ("normalization", {"normalization": "none"}),
        "visitors": ("leading_zeros", {"restore_leading_zeros": True}),
        "plain-case": ("case", {"ignore_case": True}),
        "wrong-iv": ("iv", {"encryption.iv": None}),
        "wrong-key-encoding": ("key_encoding", {"encryption.key_encoding": "base64"}),
        "sms-wrong-iv": ("iv", {"encryption.iv": None}),  # E.164 numbers: the padding is in the garbled block
    }
    return cfg, expected


def _run(root: Path, cfg: dict, out: str) -> dict:
    (root / f"{out}.yaml").write_text(yaml.safe_dump(cfg))
    return import_audience.run(["--config", str(root / f"{out}.yaml"), "--output", str(root / out)])


def _apply(ds: dict, suggestion: dict) -> dict:
    ds = copy.deepcopy(ds)
    for field, value in suggestion.items():
        target, *rest = field.split(".")
        if rest:
            ds[target][rest[0]] = value
        else:
            ds[field] = value
    return ds


@pytest.fixture(scope="module")
def diagnosed(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnosis")
    cfg, expected = _build(root)
    return root, cfg, expected, _run(root, cfg, "first")


@pytest.mark.parametrize("name", ["wrong-profile", "wrong-encoding", "wrong-column", "wrong-algorithm", "not-normalized",
                                  "visitors", "plain-case", "wrong-iv", "wrong-key-encoding", "sha1-wrong-profile",
                                  "sha1-got-sha256", "sms-wrong-iv"])
def test_the_top_finding_names_the_config_change(diagnosed, name):
    _, _, expected, report = diagnosed
    entry = report["data_sources"][name]
    top = entry["diagnosis"][0]
    kind, suggestion = expected[name]
    assert (top["kind"], top["suggestion"]) == (kind, suggestion), entry["diagnosis"]
    assert top["sampled"] == entry["unmatched"] + entry["invalid_ids"] + entry["file_audience"]
    assert top["would_match"] >= top["sampled"] - UNKNOWN  # every line made from a profile
    assert top["message"].startswith(f"{top['would_match']:,} of {top['sampled']:,} ")
    assert [f["would_match"] for f in entry["diagnosis"]] == sorted((f["would_match"] for f in entry["diagnosis"]), reverse=True)


def test_a_source_hashed_with_sha1_is_diagnosed_with_sha1_and_named_so(diagnosed):
    """hash_algorithm: sha1 configured: the diagnosis read the unmatched digests as SHA-256, tried
    forms hashed with SHA-256 (no finding for a sha1 partner with other rules) and, for a partner
    sending SHA-256, suggested a normalization that could not work."""
    _, _, _, report = diagnosed
    assert report["data_sources"]["sha1-wrong-profile"]["diagnosis"][0]["message"].endswith(
        "are SHA-1 digests of profile email addresses ('email') normalized under uid2 rules")
    assert " are SHA-256 digests (not SHA-1) of " in report["data_sources"]["sha1-got-sha256"]["diagnosis"][0]["message"]


def test_a_data_source_that_matches_as_configured_gets_no_finding(diagnosed):
    _, _, _, report = diagnosed
    entry = report["data_sources"]["as-configured"]
    assert entry["reconciled"] == N and entry["unmatched"] == UNKNOWN  # the unknown lines only
    assert entry["diagnosis"] == []


def test_findings_carry_no_record_value(diagnosed):
    root, _, _, report = diagnosed
    text = json.dumps([e["diagnosis"] for e in report["data_sources"].values()])
    for value in _profiles()["email"].to_pylist()[:30] + _profiles()["crm_id"].to_pylist()[:30]:
        assert value.strip().lower() not in text.lower()
    assert "@" not in text and KEY_HEX not in text and IV_HEX not in text and OTHER_IV_HEX not in text


def test_applying_the_top_suggestion_matches_every_line(diagnosed):
    root, cfg, expected, report = diagnosed
    fixed = copy.deepcopy(cfg)
    applicable = [n for n, e in expected.items() if e and None not in e[1].values()]
    fixed["data_sources"] = [_apply(ds, report["data_sources"][ds["name"]]["diagnosis"][0]["suggestion"])
                             for ds in cfg["data_sources"] if ds["name"] in applicable]
    for ds in fixed["data_sources"]:  # without the line planted for the first run: the fix fails it
        ds["segments"] = ds["segments"].replace("*.sync", "dump.sync")
    again = _run(root, fixed, "fixed")
    for name in applicable:
        entry = again["data_sources"][name]
        assert (entry["reconciled"], entry["diagnosis"]) == (N, []), (name, entry)


def test_a_wrong_key_encoding_fails_the_run_with_the_diagnosis(diagnosed):
    root, cfg, _, _ = diagnosed
    one = copy.deepcopy(cfg)
    one["data_sources"] = [ds for ds in cfg["data_sources"] if ds["name"] == "wrong-key-encoding"]
    del one["data_sources"][0]["max_decrypt_failure_ratio"]
    with pytest.raises(RunFailed) as info:
        _run(root, one, "failing")
    message = str(info.value)
    assert "failed to decrypt" in message and "suggested: encryption.key_encoding: base64" in message
    assert KEY_HEX not in message
    assert not (root / "failing" / "report.json").exists()


def test_url_safe_tokens_of_an_sms_source_fail_the_run_naming_their_base64(tmp_path):
    """Right key and IV, tokens sent as url-safe base64: the ones holding '-' or '_' (about half of
    one-block tokens) fail to decode; under max_decrypt_failure_ratio the run published without them
    (the diagnosis said why). Now the run fails, in one line naming url-safe base64, never the key or IV."""
    numbers = [f"+336{(i * 7919) % 10 ** 8:08d}" for i in range(200)]  # E.164: one AES block each
    tokens = [t.replace("+", "-").replace("/", "_") for t in encrypt_cbc(numbers, bytes.fromhex(KEY_HEX), bytes.fromhex(IV_HEX))]
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(200)], "mobile": numbers}), tmp_path / "profiles.parquet")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key.txt").write_text(KEY_HEX + "\n")
    (tmp_path / "keys" / "iv.txt").write_text(IV_HEX + "\n")
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "dump.sync").write_text("".join(f"{t} 11\n" for t in tokens))
    ds = {"name": "sms", "dpid": 1, "segments": "segments/*.sync", "id_type": "declared", "declared": "encrypted",
          "match_on": "phone", "channel": "sms", "max_decrypt_failure_ratio": 0.7,
          "encryption": {"key": "file:keys/key.txt", "key_encoding": "hex", "iv": "file:keys/iv.txt", "iv_encoding": "hex"}}
    cfg = {"profiles": {"path": "profiles.parquet", "phone": "mobile", "visitor_ids": None}, "buckets": 2, "data_sources": [ds]}
    failed = sum("-" in t or "_" in t for t in tokens)
    assert 60 < failed < 140
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "out")
    message = str(info.value)
    assert message.startswith(f"data source 'sms': {failed} of 200 IDs are url-safe base64") and "\n" not in message
    assert "encryption.iv" not in message and "encryption.key" not in message and KEY_HEX not in message
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_few_lines_of_another_column_are_a_partial_explanation_not_a_column_change(tmp_path):
    """A hashed source matches 250 lines on the personal email column; 30 more are work emails. Moving
    its match column to work_email would lose the 250 (a change of profiles.email, the plain source's
    250 that match on it too: the change named is the hashed source's own, the plain source reading the role)."""
    emails, work = [f"user{i}@example.com" for i in range(300)], [f"u{i}@corp-{i % 7}.com" for i in range(300)]
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(300)], "email": emails, "work_email": work}),
                   tmp_path / "profiles.parquet")
    dumps = {"hashed": _hashed(emails[:250] + work[250:280], "email"), "plain": emails[:250]}
    sources = []
    for n, (name, ids) in enumerate(dumps.items()):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dump.sync").write_text("".join(f"{i} 11\n" for i in ids))
        sources.append({"name": name, "dpid": n + 1, "segments": f"{name}/*.sync", "id_type": "declared",
                        "declared": name, "match_on": "email"})
    cfg = {"profiles": {"path": "profiles.parquet", "email": "email", "visitor_ids": None}, "buckets": 2, "data_sources": sources}
    entry = _run(tmp_path, cfg, "out")["data_sources"]["hashed"]
    assert (entry["reconciled"], entry["unmatched"]) == (250, 30)
    (finding,) = entry["diagnosis"]
    assert (finding["kind"], finding["suggestion"], finding["would_match"]) == ("column", {}, 30)
    assert "'work_email'" in finding["message"] and "partial explanation" in finding["message"]
    assert "already matches 250 lines on its current column ('email')" in finding["message"]
    assert "every data source" not in finding["message"]


def _hashed_email_job(tmp_path, emails: list, ids: list) -> tuple[dict, dict]:
    """A hashed-email data source 'h' whose one dump lists ``ids`` (segment 11), and an extract of
    ``emails`` (profiles P0000, P0001, ...): the job's config and its data source, to adjust."""
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(len(emails))], "email": emails}),
                   tmp_path / "profiles.parquet")
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "dump.sync").write_text("".join(f"{i} 11\n" for i in ids))
    ds = {"name": "h", "dpid": 1, "segments": "segments/*.sync", "id_type": "declared", "declared": "hashed", "match_on": "email"}
    return {"profiles": {"path": "profiles.parquet", "email": "email", "visitor_ids": None}, "buckets": 2, "data_sources": [ds]}, ds


def test_a_hashed_source_matching_on_an_email_column_by_its_name_is_told_to_read_it_as_emails(tmp_path):
    """'match_on: e_mail' where profiles.email is left at its default: the column is read as any
    column (trimmed, its case kept), the platform hashed normalized addresses, so every address
    written with a capital missed, exit 0, and the diagnosis found nothing (it read the match column
    only as configured). It now names the column read as emails, and the change that does it. (A
    column of addresses and little else now fails the run, test_match_as.py; this one holds 150
    placeholders too, under the stop's 4 in 5.)"""
    emails = [f"  User{i}@Example.ORG " for i in range(300)] + [f"user{i}@example.net" for i in range(100)]
    column = emails + ["n/a"] * 150
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(len(column))], "e_mail": column}),
                   tmp_path / "profiles.parquet")
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "dump.sync").write_text("".join(f"{i} 11\n" for i in _hashed(emails, "email")))
    ds = {"name": "h", "dpid": 1, "segments": "segments/*.sync", "id_type": "declared", "declared": "hashed",
          "match_on": "e_mail"}
    cfg = {"profiles": {"path": "profiles.parquet", "visitor_ids": None}, "buckets": 2, "data_sources": [ds]}
    entry = _run(tmp_path, cfg, "out")["data_sources"]["h"]
    assert (entry["reconciled"], entry["unmatched"]) == (100, 300)
    finding = entry["diagnosis"][0]
    assert (finding["kind"], finding["would_match"]) == ("column", 300), finding
    assert finding["suggestion"] == {"match_on": "email", "profiles.email": "e_mail"}
    ds["match_on"], cfg["profiles"]["email"] = "email", "e_mail"  # as suggested: every line matches
    assert _run(tmp_path, cfg, "fixed")["data_sources"]["h"]["reconciled"] == 400


@pytest.mark.parametrize("home, match_as", [(True, None), (False, "other")])
def test_a_second_email_column_compared_as_written_is_told_match_as_email(tmp_path, home, match_as):
    """'match_on: work_email' beside the extract's own email column (profiles.email: email), or with
    match_as: other written: the role is not this column's to take (the home addresses are the role's;
    match_as: other would stay beside it), so the finding suggests match_as: email, the same keys."""
    work = [f"  Work{i}@Corp.EXAMPLE " for i in range(300)] + [f"work{i}@corp.example" for i in range(300, 400)]
    columns = {"work_email": work + ["n/a"] * 150}  # placeholders: under the stop's 4 in 5
    if home:
        columns["email"] = [f"home{i}@example.org" for i in range(550)]
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(550)], **columns}), tmp_path / "profiles.parquet")
    (tmp_path / "segments").mkdir()
    (tmp_path / "segments" / "dump.sync").write_text("".join(f"{i} 11\n" for i in _hashed(work, "email")))
    ds = {"name": "h", "dpid": 1, "segments": "segments/*.sync", "id_type": "declared", "declared": "hashed",
          "match_on": "work_email", **({"match_as": match_as} if match_as else {})}
    cfg = {"profiles": {"path": "profiles.parquet", "visitor_ids": None}, "buckets": 2, "data_sources": [ds]}
    entry = _run(tmp_path, cfg, "out")["data_sources"]["h"]
    assert (entry["reconciled"], entry["unmatched"]) == (100, 300)
    finding = entry["diagnosis"][0]
    assert (finding["kind"], finding["would_match"], finding["suggestion"]) == ("column", 300, {"match_as": "email"})
    assert "'work_email' (email addresses)" in finding["message"] and "@" not in finding["message"]
    ds["match_as"] = "email"  # as suggested: every line matches
    assert _run(tmp_path, cfg, "fixed")["data_sources"]["h"]["reconciled"] == 400


@pytest.mark.parametrize("declared", ["hashed", "encrypted"])
def test_digests_of_another_email_column_beside_a_data_source_on_the_email_role_name_this_sources_column(tmp_path, declared):
    """'a' matches on profiles.email (300 lines, all matching); 'b' (hashed, or encrypted) sends the
    work emails of the same profiles. b's finding suggested profiles.email: work_email, every data
    source's column: applied, 'a' matched none. Where another data source reads the role, the finding
    names b's own column: match_on: work_email (match_as: email for a hashed source)."""
    emails = [f"user{i}@example.com" for i in range(400)]
    work = [f"W{i}@Corp{i % 5}.example" for i in range(400)]
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(400)], "email": emails, "work_email": work}),
                   tmp_path / "profiles.parquet")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key.txt").write_text(KEY_HEX + "\n")
    (tmp_path / "keys" / "iv.txt").write_text(IV_HEX + "\n")
    normalized = normalize_keys(pa.array(work[:300]), "email", "adobe")[0].to_pylist()
    dumps = {"a": _hashed(emails[:300], "email"),
             "b": _hashed(work[:300], "email") if declared == "hashed"
             else encrypt_cbc(normalized, bytes.fromhex(KEY_HEX), bytes.fromhex(IV_HEX))}
    sources = []
    for n, (name, ids) in enumerate(dumps.items()):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dump.sync").write_text("".join(f"{i} 11\n" for i in ids))
        sources.append({"name": name, "dpid": n + 1, "segments": f"{name}/*.sync", "id_type": "declared",
                        "declared": "hashed", "match_on": "email"})
    if declared == "encrypted":
        sources[1] |= {"declared": "encrypted", "channel": "email", "force_reconciliation": True,
                       "encryption": {"key": "file:keys/key.txt", "key_encoding": "hex", "iv": "file:keys/iv.txt",
                                      "iv_encoding": "hex", "iv_confirmed": True}}  # (addresses unlike the profiles' emails)
    sources[1]["allow_no_match"] = True
    cfg = {"profiles": {"path": "profiles.parquet", "email": "email", "visitor_ids": None}, "buckets": 2, "data_sources": sources}
    entry = _run(tmp_path, cfg, "out")["data_sources"]["b"]
    assert (entry["reconciled"], entry["unmatched"]) == (0, 300)
    (finding,) = entry["diagnosis"]
    local = {"match_on": "work_email", **({"match_as": "email"} if declared == "hashed" else {})}
    assert (finding["kind"], finding["would_match"], finding["suggestion"]) == ("column", 300, local), finding
    assert "'work_email'" in finding["message"] and "(values)" not in finding["message"], finding["message"]
    assert "every data source" not in finding["message"]
    sources[1] |= local  # as suggested: b matches every line, a still does
    fixed = _run(tmp_path, cfg, "fixed")["data_sources"]
    assert (fixed["a"]["reconciled"], fixed["b"]["reconciled"], fixed["b"]["diagnosis"]) == (300, 300, [])


def test_a_run_failing_on_invalid_ids_names_no_finding_about_other_lines(tmp_path):
    """700 addresses sent unhashed to a hashed source (invalid_hash), 100 digests of unnormalized
    addresses (unmatched), 300 that match. The run fails on the invalid IDs; its line named the
    diagnosis' top finding, 'normalization: none', which explains the 100 and none of the 700 (the
    run with it applied fails the same). It names a finding only if it explains rejected IDs."""
    emails = [f"  User{i}@Example.ORG " for i in range(1100)]
    ids = [e.strip() for e in emails[:700]] + _hashed(emails[700:800], "email", "none") + _hashed(emails[800:], "email")
    cfg, ds = _hashed_email_job(tmp_path, emails, ids)
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "out")
    message = str(info.value)
    assert "700 of 1100 IDs are invalid, most of them invalid_hash" in message
    assert "normalization" not in message and "not a digest of the configured algorithm" in message
    ds["max_invalid_id_ratio"] = 1.0  # published: the finding is in the report, for the 100 lines it explains
    (finding,) = _run(tmp_path, cfg, "published")["data_sources"]["h"]["diagnosis"]
    assert (finding["kind"], finding["would_match"], finding["rejected"], finding["keys_kept"]) == ("normalization", 100, 0, 0)
    assert finding["suggestion"] == {}  # no stored address is normalized: 'none' would lose the 300 matching now


def test_a_run_failing_on_invalid_ids_names_a_finding_that_explains_few_of_them_as_such(tmp_path):
    """700 addresses sent unhashed to a hashed source (no finding explains them), 100 SHA-1 digests,
    300 digests of no profile. The run failed naming 'suggested: hash_algorithm: sha1' as the cause
    of the 800 invalid IDs: applied, the 700 stay invalid and the run fails again. A finding that
    leaves the failing IDs over the ratio is named as what it explains, after the reason's meaning."""
    emails = [f"user{i}@example.com" for i in range(1100)]
    ids = emails[:700] + _hashed(emails[700:800], "email", algorithm="sha1") + _hashed(
        [f"x{i}@nobody.example" for i in range(300)], "email")
    cfg, _ = _hashed_email_job(tmp_path, emails, ids)
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "out")
    message = str(info.value)
    assert message.startswith("data source 'h': 800 of 1100 IDs are invalid, most of them invalid_hash (more than "
                              "max_invalid_id_ratio=0.5); not a digest of the configured algorithm and encoding"), message
    assert "? The diagnosis explains 100 of them: 100 of 1,100 sampled lines without a match are SHA-1 digests" in message
    assert "(suggested: hash_algorithm: sha1)" in message and "\n" not in message and "@" not in message


def test_a_placeholder_id_on_many_lines_is_no_evidence_of_another_column(tmp_path):
    """A visitor source whose 600 lines without a visitor ID say '0', and a plain source whose 300
    lines say 'unknown', beside lines that match; the extract has columns where most profiles hold
    '0' and 'unknown'. The visitor run failed naming 'id_type: declared, declared: plain, match_on:
    points' (applied, each '0' line would join 900 profiles), and the plain source's finding said its
    lines 'hold another column's values'. One value repeated is one piece of evidence: no finding."""
    profiles = _profiles().slice(0, 200)
    n = profiles.num_rows
    profiles = profiles.append_column("points", pa.array(["0" if i % 4 else str(i) for i in range(n)]))
    profiles = profiles.append_column("tier", pa.array(["unknown" if i % 5 else "gold" for i in range(n)]))
    pq.write_table(profiles, tmp_path / "profiles.parquet")
    dumps = {"visitors": [f"{v[0]} 11" for v in profiles["visitor_ids"].to_pylist()[:150]] + ["0 11"] * 200,
             "plain": [f"{c} 11" for c in profiles["crm_id"].to_pylist()[:150]] + ["unknown 11"] * 100}
    for name, lines in dumps.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "dump.sync").write_text("".join(f"{line}\n" for line in lines))
    sources = [{"name": "visitors", "dpid": 1, "segments": "visitors/*.sync", "id_type": "visitor"},
               {"name": "plain", "dpid": 2, "segments": "plain/*.sync", "id_type": "declared", "declared": "plain",
                "match_on": "crm_id"}]
    cfg = {"profiles": {"path": "profiles.parquet", "visitor_ids": "visitor_ids"}, "buckets": 2, "data_sources": sources}
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "out")
    message = str(info.value)
    assert "200 of 350 IDs are invalid, most of them invalid_visitor_id" in message
    assert "id_type" not in message and "not a 38-digit visitor ID?" in message
    sources[0]["max_invalid_id_ratio"] = 1.0
    report = _run(tmp_path, cfg, "published")
    assert [report["data_sources"][name]["diagnosis"] for name in dumps] == [[], []]


def test_a_normalization_that_changes_every_profile_key_is_a_partial_explanation_when_more_lines_match_now(tmp_path):
    """A phone source: 150 digests of E.164 numbers (adobe, as configured) match, 90 are of numbers
    without their '+' (meta rules). 'suggested: normalization: meta' matched the 90 and lost the 150
    (every profile key loses its '+'), exit 0; the next run suggested adobe back. When more lines
    match now, such a change is a partial explanation; where meta is the whole story, the change."""
    phones = pa.array(_profiles()["mobile"].to_pylist())
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(N)], "mobile": phones}), tmp_path / "profiles.parquet")
    dumps = {"mixed": _hashed(phones[:150], "phone") + _hashed(phones[150:], "phone", "meta"),
             "meta": _hashed(phones, "phone", "meta")}
    sources = []
    for n, (name, ids) in enumerate(dumps.items()):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dump.sync").write_text("".join(f"{i} 11\n" for i in ids))
        sources.append({"name": name, "dpid": n + 1, "segments": f"{name}/*.sync", "id_type": "declared",
                        "declared": "hashed", "match_on": "phone", "allow_no_match": name == "meta"})
    cfg = {"profiles": {"path": "profiles.parquet", "phone": "mobile", "visitor_ids": None}, "buckets": 2, "data_sources": sources}
    report = _run(tmp_path, cfg, "out")["data_sources"]
    (mixed,), (meta,) = report["mixed"]["diagnosis"], report["meta"]["diagnosis"]
    assert (report["mixed"]["reconciled"], mixed["would_match"], mixed["suggestion"]) == (150, 90, {})
    assert "already matches 150 lines" in mixed["message"] and "would lose those" in mixed["message"]
    assert (meta["suggestion"], meta["would_match"]) == ({"normalization": "meta"}, N)


def test_a_hashing_change_that_explains_more_lines_than_match_now_says_it_loses_those(tmp_path):
    """A partner mixes two encodings: 30 hex digests match as configured, 70 are base64. The run fails
    on the invalid IDs and named 'suggested: digest: base64' as the whole story: applied, the 70
    matched and the 30 became invalid_hash (30%, under max_invalid_id_ratio), published without
    those users, exit 0. The change stays the suggestion (it explains more), and says what it loses."""
    emails = [f"user{i}@example.com" for i in range(100)]
    ids = _hashed(emails[:30], "email") + _hashed(emails[30:], "email", encoding="base64")
    cfg, ds = _hashed_email_job(tmp_path, emails, ids)
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "out")
    message = str(info.value)
    assert "70 of 100 IDs are invalid" in message and "(suggested: digest: base64)" in message, message
    assert "would also lose the 30 lines matching now as configured (hex SHA-256)" in message, message
    assert "\n" not in message


def test_a_dump_under_another_iv_beside_one_under_the_configured_iv_is_not_blamed_on_encryption_iv(tmp_path):
    """Two dumps of one encrypted source: 150 addresses under the configured key and IV (they
    match), 250 under another IV (a second system of the partner's). The run failed 'the key is right
    and the IV is not ... (suggested: check encryption.iv)', and the partner confirmed the IV the 150
    use. It now says the matching lines are under the configured key and IV; with 250 matching and
    150 under the other IV, the finding is a partial explanation, not a setting to check."""
    emails = [f"user{i}@example.com" for i in range(400)]
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(400)], "email": emails}), tmp_path / "profiles.parquet")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key.txt").write_text(KEY_HEX + "\n")
    (tmp_path / "keys" / "iv.txt").write_text(IV_HEX + "\n")
    (tmp_path / "segments").mkdir()
    ds = {"name": "e", "dpid": 1, "segments": "segments/*.sync", "id_type": "declared", "declared": "encrypted",
          "match_on": "email", "channel": "email",
          "encryption": {"key": "file:keys/key.txt", "key_encoding": "hex", "iv": "file:keys/iv.txt", "iv_encoding": "hex"}}
    cfg = {"profiles": {"path": "profiles.parquet", "email": "email", "visitor_ids": None}, "buckets": 2, "data_sources": [ds]}
    for n, (configured, out) in enumerate(((150, "failing"), (250, "published"))):
        for split, (ids, iv) in enumerate(((emails[:configured], IV_HEX), (emails[configured:], OTHER_IV_HEX)), start=1):
            (tmp_path / "segments" / f"ftp_dpm_1_full_170000000{n}00{split}.sync").write_text(
                "".join(f"{t} 11\n" for t in encrypt_cbc(ids, bytes.fromhex(KEY_HEX), bytes.fromhex(iv))))
        if configured == 150:
            with pytest.raises(RunFailed) as info:
                _run(tmp_path, cfg, out)
            message = str(info.value)
            assert "250 of 400 IDs failed to decrypt" in message and "(suggested: check encryption.iv)" in message, message
            assert ("Applied, the change would also lose the 150 lines matching now under its configured key and IV: "
                    "the partner encrypts under two; ask it for one") in message, message
            assert "\n" not in message and IV_HEX not in message and OTHER_IV_HEX not in message
            for old in (tmp_path / "segments").iterdir():
                old.unlink()
        else:  # split 002 none of whose IDs decrypts fails the run unless any failure but all is tolerated
            entry = _run(tmp_path, cfg | {"data_sources": [ds | {"max_decrypt_failure_ratio": 1.0}]}, out)["data_sources"]["e"]
            assert (entry["reconciled"], entry["invalid_ids"]) == (250, 150)
            (finding,) = entry["diagnosis"]
            assert (finding["kind"], finding["suggestion"], finding["would_match"]) == ("iv", {}, 150), finding
            assert "already matches 250 lines under its configured key and IV" in finding["message"]
            page = (tmp_path / out / "report.html").read_text()
            assert "Setting to check" not in page


def test_one_digest_on_many_lines_does_not_skew_the_sampled_share(tmp_path):
    """1,200 lines match, 1,000 are SHA-1 digests, 1,500 the digest of an empty address (the partner
    hashed its empty cells), with diagnosis_sample: 200. The sample kept the lines of smallest hash
    of their value, so a value on many lines came whole or not at all: here not, and the finding said
    '200 of 200 sampled lines' are SHA-1 (40% are), was taken for 2,700 lines and suggested
    hash_algorithm: sha1, which would lose the 1,200 matching to gain 1,000. Each line is drawn on
    its own: about 40% of the sample, a partial explanation."""
    import hashlib

    emails = [f"user{i}@example.com" for i in range(2200)]
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(2200)], "email": emails}), tmp_path / "profiles.parquet")
    (tmp_path / "segments").mkdir()
    ids = (_hashed(emails[:1200], "email") + _hashed(emails[1200:], "email", algorithm="sha1")
           + [hashlib.sha256(b"").hexdigest()] * 1500)
    (tmp_path / "segments" / "dump.sync").write_text("".join(f"{i} 11\n" for i in ids))
    ds = {"name": "h", "dpid": 1, "segments": "segments/*.sync", "id_type": "declared", "declared": "hashed",
          "match_on": "email", "max_invalid_id_ratio": 1.0}
    cfg = {"profiles": {"path": "profiles.parquet", "email": "email", "visitor_ids": None}, "buckets": 2,
           "diagnosis_sample": 200, "data_sources": [ds]}
    entry = _run(tmp_path, cfg, "out")["data_sources"]["h"]
    assert (entry["reconciled"], entry["invalid_ids"], entry["unmatched"]) == (1200, 1000, 1500)
    (finding,) = entry["diagnosis"]
    assert (finding["kind"], finding["sampled"]) == ("algorithm", 200), finding
    assert 0.25 < finding["would_match"] / finding["sampled"] < 0.55, finding  # 1,000 of 2,500
    assert finding["suggestion"] == {} and "partial explanation" in finding["message"], finding


def test_digests_in_url_safe_or_unpadded_base64_are_named_so(tmp_path):
    """A base64 source whose partner writes url-safe base64 ('-', '_'): the digests without either
    character matched, the others (about 3 in 4) were invalid_hash, and the run failed 'not a digest
    of the configured algorithm and encoding (SHA-256: 64 hex or 44 base64 characters)?' over lines
    of 44 base64 characters. Digests without their '=' padding (43) were no finding either. No
    setting reads them: the finding says what they are, and that the partner must send standard base64."""
    emails = [f"user{i}@example.com" for i in range(200)]
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(200)], "email": emails}), tmp_path / "profiles.parquet")
    standard = _hashed(emails, "email", encoding="base64")
    dumps = {"url-safe": [d.replace("+", "-").replace("/", "_") for d in standard], "unpadded": [d.rstrip("=") for d in standard]}
    sources = []
    for n, (name, ids) in enumerate(dumps.items()):
        (tmp_path / name).mkdir()
        (tmp_path / name / "dump.sync").write_text("".join(f"{i} 11\n" for i in ids))
        sources.append({"name": name, "dpid": n + 1, "segments": f"{name}/*.sync", "id_type": "declared",
                        "declared": "hashed", "match_on": "email", "digest": "base64" if name == "url-safe" else "hex"})
    cfg = {"profiles": {"path": "profiles.parquet", "email": "email", "visitor_ids": None}, "buckets": 2, "data_sources": sources[:1]}
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "failing")
    message = str(info.value)
    assert "IDs are invalid, most of them invalid_hash" in message and "url-safe or unpadded base64" in message, message
    assert "standard base64" in message and "suggested" not in message and "\n" not in message
    for ds in sources:
        ds["max_invalid_id_ratio"] = 1.0
    cfg["data_sources"] = sources
    report = _run(tmp_path, cfg, "out")["data_sources"]
    for name in dumps:
        entry = report[name]
        (finding,) = entry["diagnosis"]
        assert (finding["kind"], finding["suggestion"], finding["would_match"]) == ("digest", {}, entry["invalid_ids"]), finding
        assert "url-safe or unpadded base64-encoded SHA-256 digests of profile email addresses" in finding["message"]
    assert report["url-safe"]["reconciled"] + report["url-safe"]["invalid_ids"] == 200 and report["unpadded"]["invalid_ids"] == 200
    assert report["unpadded"]["diagnosis"][0]["message"].endswith(", then set digest: base64")  # a hex source


def test_digests_of_values_with_a_line_break_are_named_so(tmp_path):
    """The partner hashed each address as `echo $email | sha256sum` prints it, with its line break:
    no digest matched, and the diagnosis found nothing ('no alternative setting that was tried
    explains the sampled lines'). No setting reads such digests; the finding says what they are."""
    import hashlib

    emails = [f"User{i}@Example.com" for i in range(150)]
    ids = [hashlib.sha256(f"{e.lower()}\n".encode()).hexdigest() for e in emails]
    cfg, ds = _hashed_email_job(tmp_path, emails, ids)
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "failing")
    message = str(info.value)
    assert "none of its 150 IDs to match matched" in message and "line break" in message and "suggested" not in message, message
    ds["allow_no_match"] = True
    (finding,) = _run(tmp_path, cfg, "out")["data_sources"]["h"]["diagnosis"]
    assert (finding["kind"], finding["suggestion"], finding["would_match"]) == ("line_break", {}, 150), finding
    assert finding["message"].startswith("150 of 150 sampled lines without a match are SHA-256 digests of profile email "
                                         "addresses ('email') normalized under adobe rules, with a line break"), finding
    assert finding["message"].endswith("ask the partner to hash the value alone")  # nothing else to change here


# ------------------------------------------------------------ AES-GCM: tokens that are not ring tokens
def _gcm_job(root: Path, tokens: list[str], emails: list[str], **source) -> dict:
    from datetime import datetime, timezone

    from test_encrypted import ring_json
    from transforms.encrypt import encrypt_gcm
    from transforms.secrets import RingKey

    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"profile_id": [f"P{i:04d}" for i in range(len(emails))], "email": emails}), root / "profiles.parquet")
    ring_key = RingKey(7, bytes([7]) * 32, datetime(2020, 1, 1, tzinfo=timezone.utc))
    (root / "ring.json").write_text(ring_json(ring_key))
    (root / "segments").mkdir(exist_ok=True)
    # One line the ring decrypts: a source none of whose IDs decrypts fails whatever max_decrypt_failure_ratio.
    planted = encrypt_gcm(["planted@example.org"], ring_key)[0]
    (root / "segments" / "dump.sync").write_text("".join(f"{t} 11\n" for t in [*tokens, planted]))
    ds = {"name": "gcm", "dpid": 1, "segments": "segments/*.sync", "id_type": "declared", "declared": "encrypted",
          "match_on": "email", "channel": "email", "encryption": {"algorithm": "aes-gcm", "keyring": "file:ring.json"}} | source
    return {"profiles": {"path": "profiles.parquet", "email": "email", "visitor_ids": None}, "buckets": 2, "data_sources": [ds]}


def _plaintext_prefixes(emails: list[str]) -> set[str]:
    """How a plaintext's first 4 bytes read as a key id: the bytes and the number."""
    heads = {e.encode()[:4] for e in emails}
    return {h.decode() for h in heads} | {str(int.from_bytes(h, "big")) for h in heads}


def test_base64_plaintext_on_a_gcm_source_prints_no_part_of_an_address(tmp_path):
    """The partner base64-encoded the addresses instead of encrypting them: the 4 bytes where a key id
    belongs are the first 4 letters of each address. No finding, page or failure line may show them,
    as text or as a key id number; the finding says the tokens are not key-ring tokens."""
    emails = [["jane.doe", "john.smith", "info.desk", "marc.dupont"][i % 4] + f"{i:03d}@example-company.com" for i in range(40)]
    tokens = [base64.b64encode(e.encode()).decode() for e in emails]
    cfg = _gcm_job(tmp_path, tokens, emails, max_decrypt_failure_ratio=1.0)
    report = _run(tmp_path, cfg, "out")
    findings = report["data_sources"]["gcm"]["diagnosis"]
    assert [f["kind"] for f in findings] == ["key_id"], findings
    assert "not key-ring tokens" in findings[0]["message"] and "key id 7" not in findings[0]["message"]
    texts = {"report.json": (tmp_path / "out" / "report.json").read_text(),
             "report.html": (tmp_path / "out" / "report.html").read_text()}
    del cfg["data_sources"][0]["max_decrypt_failure_ratio"]
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, cfg, "failing")
    texts["failure"] = str(info.value)
    assert "not key-ring tokens" in texts["failure"]
    for where, text in texts.items():
        for prefix in _plaintext_prefixes(emails):
            assert prefix not in text, (where, prefix)


def test_a_small_delivery_of_foreign_tokens_is_one_finding_not_one_per_random_prefix(tmp_path):
    emails = [f"person{i}@example.com" for i in range(40)]
    tokens = encrypt_cbc(emails, bytes(range(16)), bytes(range(16, 32)))  # another scheme: random first bytes
    report = _run(tmp_path, _gcm_job(tmp_path, tokens, emails, max_decrypt_failure_ratio=1.0), "out")
    findings = report["data_sources"]["gcm"]["diagnosis"]
    assert [(f["kind"], f["would_match"]) for f in findings] == [("key_id", 40)], findings
    assert "not key-ring tokens" in findings[0]["message"]
    heads = {str(int.from_bytes(base64.b64decode(t)[:4], "big")) for t in tokens}
    assert not any(h in (tmp_path / "out" / "report.json").read_text() for h in heads)


@pytest.mark.parametrize("sent", ["quoted", "latin-1", "mailto"])
def test_gcm_tokens_in_quotes_or_latin1_plaintexts_are_named_as_on_aes_cbc(tmp_path, sent):
    """The ring's key, tokens in quotes (a CSV writer's), addresses encrypted as Latin-1 text or with
    a URI scheme: the run failed 'wrong key or IV?' or 'they decrypt, but not to email addresses (...
    or a wrong IV ...?)', an IV that AES-GCM has not. The AES-CBC findings (the IV check's scheme)
    name them on AES-GCM too, with no plaintext."""
    from datetime import datetime, timezone

    from transforms.encrypt import encrypt_gcm
    from transforms.secrets import RingKey

    emails = [f"zoé.müller{i}@example.com" for i in range(30)]
    ring_key = RingKey(7, bytes([7]) * 32, datetime(2020, 1, 1, tzinfo=timezone.utc))
    tokens = {"quoted": lambda: [f'"{t}"' for t in encrypt_gcm(emails, ring_key)],
              "latin-1": lambda: encrypt_gcm([e.encode("latin-1") for e in emails], ring_key),
              "mailto": lambda: encrypt_gcm([f"MailTo:{e}" for e in emails], ring_key)}[sent]()
    with pytest.raises(RunFailed) as info:
        _run(tmp_path, _gcm_job(tmp_path, tokens, emails), "out")
    failure = str(info.value)
    assert {"quoted": "in quotes", "latin-1": "not UTF-8", "mailto": "URI scheme ('mailto:')"}[sent] in failure, failure
    assert "under the key ring" in failure and "IV" not in failure and "zo" not in failure
