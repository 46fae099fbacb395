"""Suppression lists on the import side: a suppressed address is never written to the file audience,
tonight's or carried over by nightly, and appears in no output; the line counts stay additive."""
from __future__ import annotations

import base64
import csv
import hashlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import DEMO, delivered
from platform_sim import output_text

from pipelines import import_audience, nightly
from transforms.config_load import parse_config
from transforms.encrypt import encrypt_cbc
from transforms.errors import InputError
from transforms.suppression import Suppressor, read_suppression_file

RUN_DATE = "2026-11-22"
LINE_CATEGORIES = ("format_errors", "invalid_ids", "removals_only", "unmatched", "reconciled", "file_audience")


def sha(address: str) -> str:
    return hashlib.sha256(address.strip().lower().encode()).hexdigest()


def test_a_suppressed_address_is_not_written_to_the_import_file_audience(demo_copy, tmp_path):
    rows = list(csv.DictReader((demo_copy / "expected" / "file_audience.csv").open()))
    plain, hashed = rows[0]["address"], rows[1]["address"]
    assert plain != hashed
    (demo_copy / "suppress.txt").write_text(plain.upper() + "\n")
    (demo_copy / "suppress.sha").write_text(sha(hashed) + "\n")
    config = yaml.safe_load((demo_copy / "job.yaml").read_text())
    config["suppression"] = [{"path": "suppress.txt", "kind": "email"},
                             {"path": "suppress.sha", "kind": "email", "hashed": True}]
    (demo_copy / "job.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "imp"
    report = import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(out), "--run-date", RUN_DATE])
    entry = report["data_sources"]["web-encrypted-emails"]
    expected_rows = [r for r in rows if r["address"] in (plain, hashed)]
    assert entry["suppressed"] == len(expected_rows) > 0
    written = sum(s.get("file_audience", 0) for s in entry["segments"].values())
    assert written == len(rows) - len(expected_rows)
    assert entry["received"] == sum(entry[k] for k in ("format_errors", "invalid_ids", "removals_only", "unmatched",
                                                       "reconciled", "file_audience"))
    text = output_text(out)
    for address in (plain, hashed):
        assert address not in text and sha(address) not in text


def _encrypted_nightly(tmp_path, buckets: int = 2):
    """A data source of encrypted emails keeping a file audience (the demo's key), its dumps under
    dumps/YYYYMMDD/: its config, and a function writing a night's dump of (address, 'SEGMENTS
    REMOVED') lines."""
    key = bytes.fromhex((DEMO / "keys" / "demo-only-aes256.key").read_text().strip())
    iv = bytes.fromhex((DEMO / "keys" / "demo-only-iv.hex").read_text().strip())
    config = {
        "profiles": {"path": "profiles.parquet", "phone": None, "visitor_ids": None},
        "buckets": buckets,
        "data_sources": [{
            "name": "enc", "dpid": 23456, "segments": "dumps/{date:%Y%m%d}/*.sync", "id_type": "declared",
            "declared": "encrypted", "match_on": "email", "channel": "email",
            "encryption": {"algorithm": "aes-cbc", "key": f"file:{DEMO / 'keys' / 'demo-only-aes256.key'}",
                           "key_encoding": "hex", "iv": f"file:{DEMO / 'keys' / 'demo-only-iv.hex'}",
                           "iv_encoding": "hex"}}],
    }

    def night(day: str, mode: str, lines: list[tuple[str, str]]):
        folder = tmp_path / "dumps" / day.replace("-", "")
        folder.mkdir(parents=True)
        tokens = encrypt_cbc([address for address, _ in lines], key, iv)
        (folder / f"ftp_1_23456_{mode}_{delivered(day)}.sync").write_text(
            "".join(f"{t} {seg}\n" for t, (_, seg) in zip(tokens, lines)))

    return config, night


def test_nightly_drops_a_newly_suppressed_address_carried_from_the_previous_night(tmp_path):
    pq.write_table(pa.table({"profile_id": ["p1"], "email": ["a@x.com"]}), tmp_path / "profiles.parquet")
    config, night = _encrypted_nightly(tmp_path)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    night("2026-11-21", "full", [("a@x.com", "10"), ("b@x.com", "10"), ("c@x.com", "10"), ("f@x.com", "10")])
    nightly.run(["--config", str(tmp_path / "job.yaml"), "--root", str(tmp_path / "root"), "--date", "2026-11-21"])
    # The next night: b (carried over, and in tonight's dump again), d (tonight) and f (carried over,
    # removed tonight) are suppressed: 2 entries withheld, (10, b) and (11, d). Counted per row before
    # the merge, it was 4: b's previous row and tonight's, and f's previous row, which the removal
    # takes out anyway.
    (tmp_path / "suppress.txt").write_text("B@x.com\nd@x.com\nf@x.com\n")
    config["suppression"] = [{"path": "suppress.txt", "kind": "email"}]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    night("2026-11-22", "iter", [("d@x.com", "11"), ("e@x.com", "11"), ("b@x.com", "10"),
                                 ("f@x.com", " 10")])  # f: removed from 10
    [result] = nightly.run(["--config", str(tmp_path / "job.yaml"), "--root", str(tmp_path / "root"),
                            "--date", "2026-11-22"])
    entry = result["report"]["data_sources"]["enc"]
    partition = tmp_path / "root" / "dt=2026-11-22"
    rows = {(r["segment_id"], r["address"], r["profile_id"])
            for r in pq.read_table(partition / "file_audience").to_pylist()}
    # a matched profile p1: the file audience keeps every decrypted address, with its profile
    assert rows == {("10", "a@x.com", "p1"), ("10", "c@x.com", None), ("11", "e@x.com", None)}
    # every line went the file-audience way, the suppressed ones too (the line counts stay additive)
    assert entry["suppressed"] == 2 and entry["file_audience"] == 4
    assert entry["received"] == sum(entry[k] for k in LINE_CATEGORIES)
    text = output_text(partition)
    assert "b@x.com" not in text and "d@x.com" not in text


def test_a_nightly_file_audience_naming_hundreds_of_segments_goes_through_suppression_and_removals(tmp_path):
    """300 addresses, each on its own segment: the file audience names 300 segments, each shard's
    share of it fewer than 128. Through the suppression lists (the first night) and tonight's
    removals (the second), the shards' tables meet in the writer's split, where their segment ids'
    dictionaries, sized per shard (a byte an index), could not be combined: each night failed,
    ArrowInvalid. Every entry now ends in one place: written, withheld (suppressed) or removed."""
    addresses = [f"a{i}@x.com" for i in range(300)]
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(10)], "email": addresses[:10]}),
                   tmp_path / "profiles.parquet")
    config, night = _encrypted_nightly(tmp_path, buckets=4)
    (tmp_path / "suppress.txt").write_text("a3@x.com\na150@x.com\n")
    config["suppression"] = [{"path": "suppress.txt", "kind": "email"}]
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    suppressed = {3, 150}

    def written(day: str) -> set:
        return {(r["segment_id"], r["address"], r["profile_id"])
                for r in pq.read_table(tmp_path / "root" / f"dt={day}" / "file_audience").to_pylist()}

    def entry(i: int, segment: int) -> tuple:
        return str(segment), addresses[i], f"p{i}" if i < 10 else None

    def check(result: dict, kept: set, withheld: int, lines: int):
        ds = result["report"]["data_sources"]["enc"]
        assert (ds["file_audience"] + ds["reconciled"], ds["suppressed"]) == (lines, withheld)
        assert ds["received"] == sum(ds[k] for k in LINE_CATEGORIES)
        assert sum(s.get("file_audience", 0) for s in ds["segments"].values()) == len(kept)

    night("2026-11-21", "full", [(a, str(100 + i)) for i, a in enumerate(addresses)])
    [first] = nightly.run(["--config", str(tmp_path / "job.yaml"), "--root", str(tmp_path / "root"),
                           "--date", "2026-11-21"])
    kept = {entry(i, 100 + i) for i in range(300) if i not in suppressed}
    assert written("2026-11-21") == kept
    check(first, kept, withheld=2, lines=300)
    # Tonight the first 200 move from their segment (removed) to another; the last 100 are carried over.
    night("2026-11-22", "iter", [(a, f"{2000 + i} {100 + i}") for i, a in enumerate(addresses[:200])])
    [second] = nightly.run(["--config", str(tmp_path / "job.yaml"), "--root", str(tmp_path / "root"),
                            "--date", "2026-11-22"])
    kept = {entry(i, 2000 + i if i < 200 else 100 + i) for i in range(300) if i not in suppressed}
    assert written("2026-11-22") == kept
    check(second, kept, withheld=2, lines=200)


def _hashed_email_source_with_a_list(normalization: str):
    """A config of one hashed-email data source and one email suppression list, l.txt."""
    return parse_config({
        "profiles": {"path": "p.parquet"},
        "data_sources": [{"name": "h", "dpid": 1, "segments": "x", "id_type": "declared", "declared": "hashed",
                          "match_on": "email", "normalization": normalization}],
        "suppression": [{"path": "l.txt", "kind": "email"}],
    })


def test_suppression_lists_compile_per_data_source_and_name_a_bad_line(tmp_path):
    cfg = _hashed_email_source_with_a_list("uid2")
    path = tmp_path / "l.txt"
    path.write_text("\n  Jane.Saoirse+Work@GMAIL.com \n")
    entries = read_suppression_file(str(path), cfg.suppression[0])
    assert entries.lines.to_pylist() == [2]
    suppressor = Suppressor([entries], cfg.data_sources[0])
    normalized = suppressor.normalized(pa.array(["janesaoirse@gmail.com", "jane@gmail.com", None]), "email")
    assert suppressor.suppressed(normalized, "email").to_pylist() == [True, False, False]  # uid2 rules on both sides
    path.write_text("a@b.c\nnot an address\n")
    with pytest.raises(InputError, match=r"l\.txt:2: not a valid email"):
        Suppressor([read_suppression_file(str(path), cfg.suppression[0])], cfg.data_sources[0])


@pytest.mark.parametrize("written", ['"{}"', "'{}'", "<{}>", "{},", "{};", "{},2024-05-01", "mailto:{}", "MAILTO:{}"])
def test_a_plain_list_written_as_csv_or_copied_from_a_mail_client_fails_naming_the_line(tmp_path, written):
    """A do-not-share list exported with its cells quoted ('"jane@example.com"'), with a second
    column or a trailing separator, or copied as '<jane@example.com>' / 'mailto:...': each entry
    passed as an email (one '@', no space) that no profile's address could ever equal, so it
    suppressed nobody and the export sent its addresses, exit 0."""
    cfg = _hashed_email_source_with_a_list("adobe")
    path = tmp_path / "l.txt"
    path.write_text("o'brien@example.com\n" + written.format("Jane@example.com") + "\n")
    entries = read_suppression_file(str(path), cfg.suppression[0])
    with pytest.raises(InputError) as info:
        Suppressor([entries], cfg.data_sources[0])
    assert str(info.value).startswith(f"{path}:2: not an address on its own")
    assert "jane" not in str(info.value).lower()  # never the entry


def test_plain_addresses_a_mail_server_takes_still_suppress(tmp_path):
    """What the check of wrapped entries must leave alone: a quote in the local part, a quoted
    local part, a sub-domain, an international domain."""
    cfg = parse_config({
        "profiles": {"path": "p.parquet"},
        "data_sources": [{"name": "h", "dpid": 1, "segments": "x", "id_type": "declared", "declared": "hashed",
                          "match_on": "email", "normalization": "adobe"}],
        "suppression": [{"path": "l.txt", "kind": "email"}],
    })
    addresses = ["o'brien@example.com", '"j.doe"@example.com', "a@mail.example.co.uk", "a@bücher.example"]
    path = tmp_path / "l.txt"
    path.write_text("".join(a + "\n" for a in addresses))
    suppressor = Suppressor([read_suppression_file(str(path), cfg.suppression[0])], cfg.data_sources[0])
    normalized = suppressor.normalized(pa.array(addresses + ["other@example.com"]), "email")
    assert suppressor.suppressed(normalized, "email").to_pylist() == [True] * len(addresses) + [False]


def test_an_export_with_a_quoted_suppression_list_fails_before_sending_anything(demo_copy, tmp_path):
    """The operator's view: the export of the demo's profiles with a do-not-share list saved with its
    cells quoted sent every listed address (suppressed=0), exit 0."""
    from conftest import cli_in_process

    profiles = pq.read_table(demo_copy / "profiles.parquet").to_pylist()
    emails = [p["email"].strip() for p in profiles if p["email"]][:20]
    (demo_copy / "dns.txt").write_text("".join(f'"{e}"\n' for e in emails))
    (demo_copy / "targets.csv").write_text("profile_id\n" + "".join(p["profile_id"] + "\n" for p in profiles))
    config = yaml.safe_load((demo_copy / "job.yaml").read_text())
    config["suppression"] = [{"path": "dns.txt", "kind": "email"}]
    (demo_copy / "job.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "exp"
    result = cli_in_process("export", "--config", demo_copy / "job.yaml", "--audience", "A", "--targets",
                            demo_copy / "targets.csv", "--output", out, "--data-source", "crm-hashed-emails")
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"{demo_copy / 'dns.txt'}:1: not an address on its own" in last and "Traceback" not in result.stderr
    assert not (out / "report.json").exists() and not any(out.rglob("*.sync*"))
    assert not any(e.lower() in result.stderr.lower() for e in emails)


@pytest.mark.parametrize("joined", ["\ufeff", "\u200b", "\u00ad"], ids=["bom", "zero-width-space", "soft-hyphen"])
def test_a_plain_email_list_holding_an_invisible_character_fails_naming_the_line(tmp_path, joined):
    """Two lists joined with `cat a.txt b.txt`, b.txt saved with a byte order mark (Notepad, Excel):
    its first entry read '\\ufeffjane@example.com', which the email rule takes and no profile's address
    equals, so it suppressed nobody and the export sent jane's address, exit 0 (only the file's own
    first BOM is dropped). So did an address copied with a zero-width space or a soft hyphen."""
    from conftest import cli_in_process

    (tmp_path / "a.txt").write_bytes("\ufeffbob@example.com\r\n".encode())
    (tmp_path / "b.txt").write_bytes(f"{joined}jane@example.com\r\n".encode())
    (tmp_path / "dns.txt").write_bytes((tmp_path / "a.txt").read_bytes() + (tmp_path / "b.txt").read_bytes())
    (tmp_path / "p.csv").write_text("profile_id,email,opt_out\np0,jane@example.com,no\np1,bob@example.com,no\n"
                                    "p2,cy@example.com,no\n")
    (tmp_path / "t.csv").write_text("profile_id\np0\np1\np2\n")
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "profiles": {"path": "p.csv", "phone": None, "visitor_ids": None, "opt_out": "opt_out"},
        "data_sources": [{"name": "h", "dpid": 45678, "segments": "dumps/*.sync", "id_type": "declared",
                          "declared": "hashed", "match_on": "email"}],
        "suppression": [{"path": "dns.txt", "kind": "email"}]}))
    out = tmp_path / "out"
    result = cli_in_process("export", "--config", tmp_path / "job.yaml", "--audience", "A", "--targets",
                            tmp_path / "t.csv", "--output", out, "--segment-id", 7, "--run-date", RUN_DATE)
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"{tmp_path / 'dns.txt'}:2: an invisible or control character" in last, last
    assert "Traceback" not in result.stderr and "jane" not in result.stderr and "bob" not in result.stderr
    assert not (out / "report.json").exists() and not any(out.rglob("*.sync*"))


def _hashed_suppressor(tmp_path, kind: str, digests: list[str], normalization: str) -> Suppressor:
    cfg = parse_config({
        "profiles": {"path": "p.parquet"},
        "data_sources": [{"name": "d", "dpid": 1, "segments": "x", "id_type": "declared", "declared": "hashed",
                          "match_on": kind, "normalization": normalization}],
        "suppression": [{"path": "l.txt", "kind": kind, "hashed": True}],
    })
    path = tmp_path / "l.txt"
    path.write_text("".join(d + "\n" for d in digests))
    return Suppressor([read_suppression_file(str(path), cfg.suppression[0])], cfg.data_sources[0], "FR")


@pytest.mark.parametrize("list_form, data_source", [
    ("jo.doe@gmail.com", "google"),  # hashed under adobe (dots kept); the data source's google drops them
    ("jodoe@gmail.com", "adobe"),  # hashed under google; the data source's adobe keeps the dots
    ("jane@gmail.com", "adobe"),  # hashed under uid2 (no dots, no +suffix)
    ("jo.doe+news@gmail.com", "uid2"),  # hashed under adobe; uid2 drops dots and +suffix
])
def test_a_hashed_list_suppresses_an_address_hashed_under_another_normalization(tmp_path, list_form, data_source):
    """One mailbox, written by each normalization its own way: a list hashed when the data source
    normalized otherwise (its normalization changed since, or one list serves two data sources)
    suppressed nobody, and a suppressed address was exported, exit 0."""
    raw = {"jo.doe@gmail.com": " Jo.Doe@GMAIL.com", "jodoe@gmail.com": "Jo.Doe@gmail.com",
           "jane@gmail.com": "Ja.ne+work@gmail.com", "jo.doe+news@gmail.com": "Jo.Doe+News@gmail.com"}[list_form]
    digest = (lambda a: base64.b64encode(bytes.fromhex(sha(a))).decode()) if data_source == "uid2" else sha  # uid2: base64
    suppressor = _hashed_suppressor(tmp_path, "email", [digest(list_form), digest("other@example.com")], data_source)
    values = pa.array([raw, "jo.doe@example.com", None])
    assert suppressor.suppressed(suppressor.normalized(values, "email"), "email", raw=values).to_pylist() == [
        True, False, False]
    if data_source == "adobe":  # the file audience has the data source's normalized form only: enough here
        assert suppressor.suppressed(suppressor.normalized(values, "email"), "email").to_pylist() == [True, False, False]


@pytest.mark.parametrize("list_form, data_source", [("33612345678", "adobe"), ("+33612345678", "meta")])
def test_a_hashed_list_suppresses_a_phone_hashed_with_or_without_its_plus(tmp_path, list_form, data_source):
    """meta hashes a phone's digits without '+', the others with it."""
    suppressor = _hashed_suppressor(tmp_path, "phone", [hashlib.sha256(list_form.encode()).hexdigest()], data_source)
    values = pa.array(["06 12 34 56 78", "06 12 34 56 79"])
    assert suppressor.suppressed(suppressor.normalized(values, "phone"), "phone").to_pylist() == [True, False]


@pytest.mark.parametrize("hashed", [True, False])
def test_a_phone_under_uid2s_minimum_is_suppressed_under_uid2(tmp_path, hashed):
    """A 9-digit number (Faroe Islands, +298 123456) is a valid phone that UID2 does not take as an
    identity (10-15 digits): a data source normalizing as uid2 exported a profile whose phone a
    hashed list held (its uid2 form null: no form of it met the list), exit 0, and refused a plain
    list holding it ('not a valid phone', exit 1). Suppression reads such a phone as E.164."""
    digest = base64.b64encode(hashlib.sha256(b"+298123456").digest()).decode()
    if hashed:
        suppressor = _hashed_suppressor(tmp_path, "phone", [digest], "uid2")
    else:
        cfg = parse_config({"profiles": {"path": "p.parquet"},
                            "data_sources": [{"name": "d", "dpid": 1, "segments": "x", "id_type": "declared",
                                              "declared": "hashed", "match_on": "email", "normalization": "uid2"}],
                            "suppression": [{"path": "l.txt", "kind": "phone"}]})
        (tmp_path / "l.txt").write_text("+298 123456\n")
        suppressor = Suppressor([read_suppression_file(str(tmp_path / "l.txt"), cfg.suppression[0])],
                                cfg.data_sources[0])
    values = pa.array(["+298 123456", "+298 123457", "+33612345678", None])
    assert suppressor.suppressed(suppressor.normalized(values, "phone"), "phone", raw=values).to_pylist() == [
        True, False, False, False]


def test_a_gzip_suppression_list_cut_short_fails_naming_the_file(tmp_path):
    """Beam's gzip reader returned the bytes up to a cut as the whole list: the addresses after it
    were not suppressed (shared), with no error."""
    import gzip

    from transforms.config import SuppressionList

    path = tmp_path / "dns.txt.gz"
    first, second = ("".join(f"{who}{i}@example.com\n" for i in range(1000)).encode() for who in ("a", "b"))
    path.write_bytes(gzip.compress(first) + gzip.compress(second))
    entry = SuppressionList(path=str(path), kind="email")
    assert len(read_suppression_file(str(path), entry).values) == 2000
    path.write_bytes(gzip.compress(first) + gzip.compress(second)[:10])  # a copy cut short after the first member
    with pytest.raises(InputError, match=r"dns\.txt\.gz: gzip stream cut short"):
        read_suppression_file(str(path), entry)


@pytest.mark.parametrize("content", [b"", b"\n  \n\t\n", b"\xef\xbb\xbf"])
def test_a_suppression_list_without_an_entry_fails_naming_the_file(tmp_path, content):
    """An empty do-not-share list (a copy that wrote nothing, an export that failed upstream) suppressed
    nobody, and the run published their addresses; a list to run without is taken out of the config."""
    from transforms.config import SuppressionList

    path = tmp_path / "dns.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"dns\.txt: .*no entry"):
        read_suppression_file(str(path), SuppressionList(path=str(path), kind="email"))


@pytest.mark.parametrize("ext", ["gz", "bz2", "xz", "zst"])
def test_a_compressed_suppression_list_of_0_bytes_fails_as_cut_short(tmp_path, ext):
    """A copy that stopped before its first byte is no compressed stream (an empty list compresses
    to a header and an end marker). A 0-byte .gz or .zst read as an empty list, suppressing no one,
    with no error (a .bz2 or .xz one failed): found in review of today's diff."""
    from transforms.config import SuppressionList

    path = tmp_path / f"dns.txt.{ext}"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=rf"dns\.txt\.{ext}: \w+ stream cut short"):
        read_suppression_file(str(path), SuppressionList(path=str(path), kind="email"))


@pytest.mark.parametrize("old", [[], [{"name": "old", "dpid": 2, "segments": "x", "id_type": "declared",
                                        "declared": "encrypted", "match_on": "email", "channel": "other"}]],
                         ids=["out-of-the-config", "channel-other"])
def test_previous_rows_of_a_data_source_taken_out_of_the_config_pass_to_the_merge(tmp_path, old):
    """A night after an encrypted email source left the config, or stopped decrypting (channel
    'other': its tokens are plain keys): its previous file-audience rows reach the suppression step
    tagged ``previous``; they pass as they are (the writer's merge drops or removes them, counted),
    rather than failing the night on a KeyError ('other [while running SuppressFileAudience]')."""
    from transforms.write_parts import PREVIOUS, WITHHELD
    from transforms.suppression import SuppressFileAudience

    cfg = parse_config({
        "profiles": {"path": "p.parquet"},
        "data_sources": [{"name": "mail", "dpid": 1, "segments": "x", "id_type": "declared", "declared": "encrypted",
                          "match_on": "email", "channel": "email",
                          "encryption": {"key": "env:MAIL_KEY", "iv": "env:MAIL_IV"}}, *old],
        "suppression": [{"path": "l.txt", "kind": "email"}],
    })
    (tmp_path / "l.txt").write_text("gone@example.com\n")
    lists = [read_suppression_file(str(tmp_path / "l.txt"), cfg.suppression[0])]
    rows = pa.table({"data_source": ["old", "mail", "mail"], "segment_id": ["1", "1", "2"],
                     "channel": ["email"] * 3, "address": ["gone@example.com", "gone@example.com", "kept@example.com"]})
    dofn = SuppressFileAudience(cfg)
    dofn.setup()
    out = dict(dofn.process((PREVIOUS, rows), lists))
    assert out[WITHHELD[PREVIOUS]].to_pylist() == [rows.to_pylist()[1]]
    assert out[PREVIOUS].to_pylist() == [rows.to_pylist()[0], rows.to_pylist()[2]]


def test_a_suppression_list_needs_its_profile_column():
    from transforms.config import ConfigError

    with pytest.raises(ConfigError, match="suppression.0: a phone list needs the profiles.phone column"):
        parse_config({"profiles": {"path": "p.parquet", "phone": None},
                      "data_sources": [{"name": "a", "dpid": 1, "segments": "x", "id_type": "visitor"}],
                      "suppression": [{"path": "l.txt", "kind": "phone"}]})


@pytest.mark.parametrize("shape, problem", [
    ("gzip", "gzip content under a name without .gz: rename it dns.txt.gz"),
    ("zstd", "zstd content under a name without .zst: rename it dns.txt.zst"),
    ("utf-16", "UTF-16/UTF-32 text (a byte order mark or NUL bytes), not UTF-8: save the list as UTF-8"),
    ("utf-16-le", "UTF-16/UTF-32 text (a byte order mark or NUL bytes), not UTF-8: save the list as UTF-8"),
    ("latin-1", "not UTF-8 text (Latin-1?): save the list as UTF-8")])
def test_a_suppression_list_in_another_encoding_or_compressed_under_a_plain_name_is_named_so(tmp_path, shape, problem):
    """They failed 'cannot read the suppression list (UnicodeDecodeError)', naming no cause (UTF-16
    without a byte order mark: 'not a valid email' on line 1). The extracts' detectors name it."""
    import gzip

    import zstandard

    from transforms.config import SuppressionList

    text = "ann@example.com\nzoé@example.com\n"
    data = {"gzip": lambda: gzip.compress(text.encode()), "zstd": lambda: zstandard.ZstdCompressor().compress(text.encode())}
    path = tmp_path / "dns.txt"
    path.write_bytes(data[shape]() if shape in data else text.encode(shape))
    with pytest.raises(InputError) as info:
        read_suppression_file(str(path), SuppressionList(path=str(tmp_path / "dns*"), kind="email"))
    assert str(info.value) == f"{path}: {problem}"


def test_the_name_a_compressed_list_is_told_to_take_is_one_its_glob_still_reads(tmp_path):
    """lists/*.txt, one of whose files is gzip under b.txt: told 'rename it b.txt.gz', the operator did,
    the glob no longer matched it and its addresses were shared as if never listed, exit 0. The message
    now says the glob must change too (or the name it gives matches it)."""
    import gzip

    from transforms.config import SuppressionList

    (tmp_path / "lists").mkdir()
    path = tmp_path / "lists" / "b.txt"
    path.write_bytes(gzip.compress(b"ann@example.com\n"))
    with pytest.raises(InputError) as info:
        read_suppression_file(str(path), SuppressionList(path=str(tmp_path / "lists" / "*.txt"), kind="email"))
    assert str(info.value) == (f"{path}: gzip content under a name without .gz: rename it b.txt.gz and change '*.txt' "
                               "to match it (as it stands, the renamed file would not be read)")
