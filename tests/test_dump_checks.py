"""Dumps are checked before they are trusted: what an operator's or a transfer tool's mistake makes of
a dump file (wrong compression name, empty .gz, another encoding, CR-only lines, a wrong separator,
an upload still in progress) ends in the right answer or in one line naming the file or data source."""
from __future__ import annotations

import codecs
import gzip
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import assert_failed_cleanly, run_import_cli

from transforms.config import DataSourceConfig
from transforms.dump_files import read_chunks
from transforms.dump_listing import is_dump_file
from transforms.dump_names import older_full_delivery
from transforms.dumps import read_dump
from transforms.errors import InputError

VID = "59767559181262060060278870901087098252"
VID2 = "08382830887934830189014177072406221371"
BODY = f"{VID} 24,26 25\n{VID2} 27\n".encode()


def ds(**kw) -> DataSourceConfig:
    return DataSourceConfig(**{**dict(name="v", dpid=1, segments="unused", id_type="visitor"), **kw})


def read_all(path) -> tuple[list, dict]:
    """(parsed ids, {line: reason}) of a whole dump file."""
    ids, reasons = [], {}
    for parsed, rejected, _ in read_dump(str(path), ds()):
        ids += parsed["id"].to_pylist()
        reasons.update({r["line"]: r["reason"] for r in rejected.to_pylist()})
    return ids, reasons


def fails_naming(path, *words) -> str:
    with pytest.raises(InputError) as info:
        read_all(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message
    assert VID not in message and VID2 not in message  # never a record's content
    return message


# -- compression: the bytes decide, not the name ----------------------------------------------------
def test_gzip_content_under_a_plain_name_is_read_as_gzip(tmp_path):
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"  # a transfer tool dropped the .gz
    path.write_bytes(gzip.compress(BODY))
    assert read_all(path) == ([VID, VID2], {})


def test_a_gz_name_without_gzip_content_fails(tmp_path):
    path = tmp_path / "ftp_1_2_full_1486140844000.sync.gz"  # already decompressed, name kept
    path.write_bytes(BODY)
    fails_naming(path, "not gzip")


@pytest.mark.parametrize("kind", ["zstd", "bzip2", "xz"])
@pytest.mark.parametrize("name", ["d.sync", "d.sync.gz", "d.sync.zst"])
def test_a_dump_compressed_otherwise_than_gzip_fails_naming_the_compression(tmp_path, kind, name):
    """It failed as '2 NUL bytes ...: UTF-16/UTF-32 text or a binary file' (zstd, and bzip2 and xz
    of a few lines), 'line breaks are CR only' (bzip2, xz) or 'not UTF-8 ...: Latin-1?' (zstd) of a
    bigger dump: the cause is the compression, which the extracts' reader names (one detector)."""
    import bz2
    import lzma

    import zstandard

    compress = {"zstd": zstandard.ZstdCompressor().compress, "bzip2": bz2.compress, "xz": lzma.compress}[kind]
    for body in (BODY, GOOD):
        path = tmp_path / name
        path.write_bytes(compress(body))
        assert f"{kind} content" in fails_naming(path, "plain text or gzip")


@pytest.mark.parametrize("inner", ["gzip", "zstd", "bzip2", "xz", "zip"])
@pytest.mark.parametrize("name", ["d.sync", "d.sync.gz", "d.sync.gz.gz"])
def test_a_dump_compressed_twice_fails_naming_the_inner_compression(tmp_path, inner, name):
    """A dump gzipped twice (`gzip` run on a `.gz`, a transfer tool compressing what it sends) or a
    gzip of another compression's file: it failed as 'line breaks are CR only' or 'NUL bytes ...:
    UTF-16/UTF-32 text or a binary file', naming neither compression."""
    import bz2
    import io
    import lzma
    import zipfile

    import zstandard

    def zipped(body: bytes) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("d.sync", body)
        return buf.getvalue()

    compress = {"gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress, "bzip2": bz2.compress,
                "xz": lzma.compress, "zip": zipped}[inner]
    for body in (BODY, GOOD):
        path = tmp_path / name
        path.write_bytes(gzip.compress(compress(body)))
        assert fails_naming(path).endswith(f": {inner} content inside its gzip stream (compressed twice?): "
                                           "decompress it once")


def test_an_empty_gz_file_is_corrupt(tmp_path):
    path = tmp_path / "ftp_1_2_full_1486140844000.sync.gz"
    path.write_bytes(b"")
    fails_naming(path, "empty")


def test_an_empty_plain_dump_reads_as_no_lines(tmp_path):
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"
    path.write_bytes(b"")
    assert read_all(path) == ([], {})


# -- encodings and line breaks ----------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True])
def test_a_utf8_bom_is_stripped(tmp_path, compress):
    path = tmp_path / ("d.sync.gz" if compress else "d.sync")
    data = codecs.BOM_UTF8 + BODY
    path.write_bytes(gzip.compress(data) if compress else data)
    assert read_all(path) == ([VID, VID2], {})
    assert b"".join(read_chunks(str(path))) == BODY


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_and_utf32_dumps_fail_naming_the_file(tmp_path, encoding):
    path = tmp_path / "d.sync"
    path.write_bytes(BODY.decode().encode(encoding))  # "utf-16" writes a BOM, -le/-be do not
    fails_naming(path, "UTF-16")


def test_a_latin1_dump_fails_naming_the_file(tmp_path):
    path = tmp_path / "d.sync"
    lines = "".join(f"Ren\u00e9e-{i} 24\n" for i in range(50))  # plain declared IDs with an accent
    path.write_bytes(lines.encode("latin-1"))
    with pytest.raises(InputError) as info:
        list(read_dump(str(path), ds(id_type="declared", declared="plain", match_on="crm_id")))
    assert str(path) in str(info.value) and "not UTF-8" in str(info.value)
    assert "Ren" not in str(info.value)


def test_one_bad_line_in_a_utf8_dump_stays_a_counted_rejection(tmp_path):
    path = tmp_path / "d.sync"
    path.write_bytes("".join(f"{VID} {i}\n" for i in range(200)).encode() + b"\xff\xfe 1\n")
    ids, reasons = read_all(path)
    assert len(ids) == 200 and reasons == {201: "not_utf8"}


def test_cr_only_line_breaks_fail_naming_the_file(tmp_path):
    path = tmp_path / "d.sync"
    path.write_bytes(BODY.replace(b"\n", b"\r") * 100)
    fails_naming(path, "CR")


# Past the first MiB, which check_text_start samples: every piece of the file is checked (1.3 MB of
# good lines first, so the damage is in the file's second MiB).
GOOD = b"".join(f"{VID} {i % 50},{i % 7}\n".encode() for i in range(30000))


def test_cr_only_line_breaks_after_the_first_mib_fail_naming_the_file_and_line(tmp_path):
    """Read as LF lines, the CR-only tail was one line: its 1,000 records one malformed rejection."""
    path = tmp_path / "d.sync"
    path.write_bytes(GOOD + BODY.replace(b"\n", b"\r") * 500)
    fails_naming(path, "CR", "line 30,001")


def test_a_cr_only_tail_longer_than_a_piece_fails_before_it_piles_up(tmp_path, monkeypatch):
    """With no LF left, the tail would be one line growing in memory to the end of the file."""
    import transforms.dump_files as dump_files

    path = tmp_path / "d.sync"
    path.write_bytes(BODY * 10 + BODY.replace(b"\n", b"\r") * 100)
    check, seen = dump_files._check_long_line, []
    monkeypatch.setattr(dump_files, "_check_long_line", lambda *args: seen.append(args[2]) or check(*args))
    with pytest.raises(InputError) as info:
        list(read_dump(str(path), ds(), chunk_bytes=256))
    assert str(path) in str(info.value) and "CR" in str(info.value) and "line 21" in str(info.value)
    assert seen == [21]  # the first piece without a line break failed: nothing piled up


def test_a_stray_cr_inside_a_line_fails_the_file_naming_its_line(tmp_path):
    """A CR without LF is a line break this format does not have: two records would read as one."""
    path = tmp_path / "d.sync"
    path.write_bytes(BODY * 3 + f"{VID} 24\r{VID2} 25\n".encode() + BODY)
    fails_naming(path, "CR", "line 7")


@pytest.mark.parametrize("ending", [b"\r\r\n", b"\r"])
def test_a_cr_ending_a_line_twice_or_at_the_files_end(tmp_path, ending):
    """CR CR LF (line breaks converted twice) fails; a CR ending the file's last line is a CRLF's half."""
    path = tmp_path / "d.sync"
    path.write_bytes(BODY + f"{VID} 30".encode() + ending)
    if ending == b"\r":
        assert read_all(path) == ([VID, VID2, VID], {})
    else:
        fails_naming(path, "CR", "line 3")


def test_a_block_of_nul_bytes_after_the_first_mib_fails_naming_the_file(tmp_path):
    """A write cut short and padded with zeros: one malformed line before, the rest read as good."""
    path = tmp_path / "d.sync"
    path.write_bytes(GOOD + b"\0" * 65536 + BODY)
    fails_naming(path, "NUL", "line 30,001")


def test_a_few_nul_bytes_in_a_line_leave_the_file_read_and_that_id_invalid(tmp_path):
    """A stray NUL is a bad line, not a damaged file: the line is parsed and its ID fails when keyed."""
    from transforms.keys import is_visitor_id

    path = tmp_path / "d.sync"
    path.write_bytes(BODY + f"{VID}\0 24\n".encode() + BODY)
    ids, reasons = read_all(path)
    assert ids == [VID, VID2, VID + "\0", VID, VID2] and reasons == {}
    assert is_visitor_id(pa.array(ids)).to_pylist() == [True, True, False, True, True]


def test_a_byte_order_mark_starting_a_later_gzip_member_is_dropped_like_the_first(tmp_path):
    """``cat a.sync.gz b.sync.gz``, each written with a BOM: the second's would start a line's ID."""
    path = tmp_path / "d.sync.gz"
    path.write_bytes(gzip.compress(codecs.BOM_UTF8 + BODY) + gzip.compress(codecs.BOM_UTF8 + BODY))
    assert read_all(path) == ([VID, VID2, VID, VID2], {})


def test_crlf_line_breaks_still_read(tmp_path):
    path = tmp_path / "d.sync"
    path.write_bytes(BODY.replace(b"\n", b"\r\n"))
    assert read_all(path) == ([VID, VID2], {})


# -- names that are not (yet) dumps -----------------------------------------------------------------
@pytest.mark.parametrize("name", [
    "ftp_1_2_full_1486140844000.sync.gz.filepart",
    "ftp_1_2_full_1486140844000.sync.filepart",
    "ftp_1_2_full_1486140844000.sync.gz.part",
    "ftp_1_2_full_1486140844000.sync.tmp",
    "ftp_1_2_full_1486140844000.sync.gz.crdownload",
    "ftp_1_2_full_1486140844000.sync.partial",
    "ftp_1_2_full_1486140844000.sync.gz.TMP",
    "ftp_1_2_full_1486140844000.sync~",
    ".ftp_1_2_full_1486140844000.sync.gz",
    "_ftp_1_2_full_1486140844000.sync",
    "ftp_1_2_full_1486140844000.info",
])
def test_partial_uploads_and_hidden_files_are_not_dumps(name):
    assert not is_dump_file(f"gs://bucket/in/{name}")
    assert not is_dump_file(f"/in/{name}")


@pytest.mark.parametrize("name", ["ftp_1_2_full_1486140844000.sync.gz", "ftp_1_2_full_1486140844000002.sync",
                                  "renamed-by-a-tool.txt", "dump.part1.sync"])
def test_ordinary_dump_names_are_dumps(name):
    assert is_dump_file(f"/in/{name}")


def test_an_upload_in_progress_is_not_read_by_the_import(demo_copy, tmp_path):
    folder = demo_copy / "segments" / "visitors"
    first = sorted(folder.glob("*.gz"))[0]
    shutil.copy(first, folder / (first.name + ".filepart"))  # the same lines again, half uploaded
    from pipelines import import_audience

    report = import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(tmp_path / "o")])
    assert report["data_sources"]["visitors"]["received"] == 200
    assert all(not f["path"].endswith(".filepart") for f in report["data_sources"]["visitors"]["files"])


# -- end to end: the run fails with one line, nothing published --------------------------------------
def test_empty_gz_dump_fails_the_import(demo_copy, tmp_path):
    victim = sorted((demo_copy / "segments" / "visitors").glob("*.gz"))[1]
    victim.write_bytes(b"")
    out = tmp_path / "o"
    assert_failed_cleanly(run_import_cli(demo_copy / "job.yaml", out), out, victim.name, "empty")


def test_latin1_lines_spread_over_many_small_dumps_fail_the_import(tmp_path):
    """A Latin-1 delivery in 50 splits of 10 lines, 2 of each with an accented plain ID: each file's
    start passed the encoding check (at least 3 invalid lines it asks), and the import published
    without those 100 users, exit 0 (counted not_utf8), where one file of the same lines failed. The
    data source's lines are judged together, as a file's are; a stray bad line stays a rejection."""
    ids = [f"Ren\u00e9e-{n}" if n % 10 < 2 else f"Rene-{n}" for n in range(500)]
    (tmp_path / "profiles.csv").write_text("profile_id,crm\n" + "".join(f"P{n},{i}\n" for n, i in enumerate(ids)))
    (tmp_path / "d").mkdir()
    for f in range(50):
        body = "".join(f"{i} 24\n" for i in ids[f * 10:(f + 1) * 10])
        (tmp_path / "d" / f"ftp_1_9_full_1795305600000{f + 1:03d}.sync").write_bytes(body.encode("latin-1"))
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, visitor_ids: null, email: null, phone: null}\n"
        "data_sources: [{name: crm, dpid: 9, segments: d/*, id_type: declared, declared: plain, match_on: crm}]\n")
    out = tmp_path / "o"
    last = assert_failed_cleanly(run_import_cli(tmp_path / "job.yaml", out), out, "data source 'crm'",
                                 "100 of 500 lines of its dumps are not UTF-8", "Latin-1")
    assert "Ren" not in last
    for f in range(1, 50):  # 2 bad lines in 500: stray ones
        path = tmp_path / "d" / f"ftp_1_9_full_1795305600000{f + 1:03d}.sync"
        path.write_bytes(path.read_bytes().decode("latin-1").encode())
    assert run_import_cli(tmp_path / "job.yaml", out).returncode == 0


def test_a_cr_only_tail_fails_the_import_naming_the_file_and_line(demo_copy, tmp_path):
    """Raised where a chunk is parsed (the stage's pool): still the one line of a failed run."""
    victim = demo_copy / "segments" / "crm-plain" / "ftp_1234_45678_full_1795305600000.sync"
    lines = victim.read_bytes().split(b"\n")
    victim.write_bytes(b"\n".join(lines[:150]) + b"\n" + b"\r".join(lines[150:]))
    out = tmp_path / "o"
    assert_failed_cleanly(run_import_cli(demo_copy / "job.yaml", out), out, victim.name, "line 151", "CR")


def test_utf16_dump_fails_the_import(demo_copy, tmp_path):
    victim = demo_copy / "segments" / "crm-plain" / "ftp_1234_45678_full_1795305600000.sync"
    victim.write_bytes(victim.read_bytes().decode().encode("utf-16"))  # "saved as Unicode" in an editor
    out = tmp_path / "o"
    assert_failed_cleanly(run_import_cli(demo_copy / "job.yaml", out), out, victim.name, "UTF-16")


def test_gzip_under_a_sync_name_gives_the_demo_answer(demo_copy, tmp_path):
    folder = demo_copy / "segments" / "visitors"
    for gz in folder.glob("*.gz"):
        gz.rename(gz.with_suffix(""))  # ".sync.gz" -> ".sync", content still gzip
    from pipelines import import_audience

    report = import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(tmp_path / "o")])
    entry = report["data_sources"]["visitors"]
    assert (entry["received"], entry["reconciled"], entry["format_errors"]) == (200, 123, 8)


def test_a_dump_matched_by_two_data_sources_is_a_configuration_error(demo_copy):
    """Its lines would be imported twice, counted as received twice (an overlapping glob, or a copy
    of a data source): the preflight names the file and both data sources."""
    import yaml

    from transforms.config import ConfigError
    from transforms.config_load import load_config
    from transforms.preflight import check_inputs

    job = demo_copy / "job.yaml"
    config = yaml.safe_load(job.read_text())
    config["data_sources"][3]["segments"] = "segments/*/*.sync*"  # crm-plain's glob takes every source's dumps
    job.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as info:
        check_inputs(load_config(str(job)))
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith("data_sources[3].segments: ") and "segments/crm-hashed-emails/ftp_" in first
    assert "matched by 2 data sources (crm-hashed-emails, crm-plain)" in first


def test_a_dump_of_another_data_source_in_its_folder_is_a_configuration_error(demo_copy, tmp_path):
    """A delivery misfiled in another data source's folder: its name's MASTER_DPID (the data source of
    the IDs it holds) is another configured data source's dpid. Read as this one's, crm-plain took
    crm-hashed-emails' 100 digests as CRM ids: received 300, match rate 74% -> 50%, exit 0 (two
    partners' hashed emails alike would have published the other's segments as its own)."""
    misfiled = demo_copy / "segments" / "crm-plain" / "ftp_1234_12345_full_1795305600000001.sync.gz"
    shutil.copy(demo_copy / "segments" / "crm-hashed-emails" / misfiled.name, misfiled)
    result = run_import_cli(str(demo_copy / "job.yaml"), str(tmp_path / "out"))
    assert result.returncode == 2, result.stdout + result.stderr
    line = next(line for line in result.stderr.splitlines() if "data_sources[3].segments" in line)
    assert misfiled.name in line and "12345" in line and "crm-hashed-emails" in line and "crm-plain" in line, line
    assert not (tmp_path / "out" / "report.json").exists()


def test_a_dump_reached_by_two_spellings_of_its_folder_is_matched_by_two_data_sources(tmp_path):
    """Two globs naming one folder otherwise ('seg/' and 'seg/../seg/', or a symlink to it): the
    check compared the paths as spelled, so both data sources imported the dump, exit 0."""
    from transforms.config import ConfigError
    from transforms.config_load import parse_config
    from transforms.preflight import check_inputs

    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "ftp_1_2_full_1795305600000.sync").write_text("C1 1\n")
    (tmp_path / "link").symlink_to(tmp_path / "seg")
    (tmp_path / "profiles.csv").write_text("profile_id,crm_id\nP1,C1\n")
    for other in ("seg/../seg/*.sync", "link/*.sync"):
        cfg = parse_config({"profiles": {"path": "profiles.csv", "visitor_ids": None}, "data_sources": [
            {"name": name, "dpid": dpid, "segments": segments, "id_type": "declared", "declared": "plain", "match_on": "crm_id"}
            for name, dpid, segments in (("crm", 2, "seg/*.sync"), ("copy", 3, other))]}, base_dir=tmp_path)
        with pytest.raises(ConfigError, match=r"^data_sources\[1\]\.segments: .* matched by 2 data sources \(crm, copy\)") as info:
            check_inputs(cfg)
        assert "more)" not in str(info.value)  # one shared dump: it said '... (and 0 more) matched by ...'


def test_full_dumps_of_two_destinations_are_two_audiences_not_two_deliveries():
    """Two destinations (DIDs) delivering their own segments into one folder, minutes apart: each
    full dump is its destination's whole audience, and the import refused the two as a delivery
    left beside a newer one. A delivery is told from another of the same destination and DPID."""
    one, other = "/d/ftp_1234_9_full_1795305600000.sync", "/d/ftp_1235_9_full_1795305900000.sync"
    assert older_full_delivery([one, other]) is None
    assert older_full_delivery([one, "/d/ftp_1234_9_full_1795392000000.sync", other]) == (
        "/d/ftp_1234_9_full_1795392000000.sync", one)
    assert older_full_delivery([one, "/d/ftp_1234_9_XYZ_full_1795392000000.sync"]) is None  # another PID alias


def crm_source(tmp_path, profiles: str):
    """A config of one plain CRM-id data source reading ``seg/*.sync``, with ``profiles`` (CSV text)."""
    from transforms.config_load import parse_config

    (tmp_path / "profiles.csv").write_text(profiles)
    return parse_config({"profiles": {"path": "profiles.csv", "visitor_ids": None}, "data_sources": [
        {"name": "crm", "dpid": 2, "segments": "seg/*.sync", "id_type": "declared", "declared": "plain",
         "match_on": "crm_id"}]}, base_dir=tmp_path)


def test_a_dump_reached_twice_by_one_glob_is_named_as_such(tmp_path):
    """A 'latest.sync' symlink beside the dump it points to, in one data source's folder: the check
    refused it as 'matched by 2 data sources (crm, crm)', naming a data source twice and another
    data source that does not exist. It says the dump is reached by two of the glob's paths."""
    from transforms.config import ConfigError
    from transforms.preflight import check_inputs

    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "ftp_1_2_full_1795305600000.sync").write_text("C1 1\n")
    (tmp_path / "seg" / "latest.sync").symlink_to("ftp_1_2_full_1795305600000.sync")
    cfg = crm_source(tmp_path, "profile_id,crm_id\nP1,C1\n")
    with pytest.raises(ConfigError) as info:
        check_inputs(cfg)
    message = str(info.value)
    assert message.startswith("data_sources[0].segments: ") and "crm, crm" not in message
    assert message.endswith("seg/ftp_1_2_full_1795305600000.sync and latest.sync are one dump (a link or another "
                            "spelling of its folder): its lines would be read twice; narrow the glob")


def test_an_iter_delivery_older_than_a_full_one_fails(tmp_path):
    """Yesterday's iter dump left beside today's full dump: the import read both, and a user
    yesterday's dump added to a segment today's whole audience no longer holds stayed in it, exit 0.
    A full dump supersedes every older delivery of its destination; a newer iter dump is read."""
    from transforms.config import ConfigError
    from transforms.preflight import check_inputs

    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "ftp_1_2_iter_1795219200000.sync").write_text("C2 777\n")
    (tmp_path / "seg" / "ftp_1_2_full_1795305600000.sync").write_text("C1 501\nC2 501\n")
    cfg = crm_source(tmp_path, "profile_id,crm_id\nP1,C1\nP2,C2\n")
    with pytest.raises(ConfigError, match=r"ftp_1_2_iter_1795219200000.sync: an iter delivery older than "
                                          r"ftp_1_2_full_1795305600000.sync; .* would bring back"):
        check_inputs(cfg)
    (tmp_path / "seg" / "ftp_1_2_iter_1795219200000.sync").rename(tmp_path / "seg" / "ftp_1_2_iter_1795392000000.sync")
    check_inputs(cfg)  # the changes after today's full dump


def test_an_iter_delivery_after_a_full_one_fails_a_one_off_import(tmp_path):
    """A full dump and the iter dumps the platform delivered after it, imported at once: the import
    applies no removal, so a user the iter dump took out of a segment stayed in it, exit 0. The
    nightly job applies them (one delivery a night); the one-off import refuses them."""
    from pipelines import import_audience
    from transforms.config import ConfigError

    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "ftp_1_2_full_1795305600000.sync").write_text("C1 501\nC2 501\n")
    (tmp_path / "seg" / "ftp_1_2_iter_1795392000000.sync").write_text("C2  501\n")
    (tmp_path / "profiles.csv").write_text("profile_id,crm_id\nP1,C1\nP2,C2\n")
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, visitor_ids: null}\n"
        "data_sources: [{name: crm, dpid: 2, segments: seg/*.sync, id_type: declared, declared: plain, "
        "match_on: crm_id}]\n")
    with pytest.raises(ConfigError, match=r"data_sources\[0\].segments: .*ftp_1_2_iter_1795392000000.sync: an iter "
                                          r"delivery after ftp_1_2_full_1795305600000.sync.*removals"):
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "out")])
    assert not (tmp_path / "out" / "report.json").exists()


def swapped_layout(tmp_path, name: str) -> Path:
    """``tmp_path/job.yaml``: one plain CRM-id data source reading ``d/*`` with ``columns: [id, removed,
    segments]``, and its dump ``d/<name>`` in the platform's layout (`<ID> <SEGS> <REMOVED>`, the
    removed list empty): every line read as removals only. Returns the dump."""
    (tmp_path / "profiles.csv").write_text("profile_id,crm\nP1,c1\nP2,c2\n")
    (tmp_path / "d").mkdir()
    dump = tmp_path / "d" / name
    dump.write_text("c1 24,26 \nc2 27 \n")
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, visitor_ids: null}\n"
        "data_sources: [{name: crm, dpid: 9, segments: d/*, id_type: declared, declared: plain, match_on: crm,\n"
        "                columns: [id, removed, segments]}]\n")
    return dump


def test_a_full_dump_whose_lines_only_remove_segments_fails_and_an_iter_one_imports_them_as_removals(tmp_path):
    """A full dump in the platform's layout (`<ID> <SEGS> <REMOVED>`, the removed list empty) read
    with `columns: [id, removed, segments]`: every line only removed segments, and the import
    published an empty audience, exit 0. A full dump lists the segments each user is in."""
    from pipelines import import_audience
    from transforms.errors import RunFailed

    dump = swapped_layout(tmp_path, "ftp_1_9_full_1795305600000.sync")
    out = tmp_path / "o"
    with pytest.raises(RunFailed) as info:
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(out)])
    assert str(info.value).startswith("data source 'crm': 2 of 2 lines of its full or unnamed dump(s) only remove segments")
    assert not (out / "report.json").exists()
    dump.rename(tmp_path / "d" / "ftp_1_9_iter_1795305600000.sync")  # changes: removals are what they hold
    assert import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(out)])[
        "data_sources"]["crm"]["removals_only"] == 2


def test_an_unnamed_dump_whose_lines_only_remove_segments_fails_a_one_off_import(tmp_path):
    """The same swapped layout in a dump whose name does not parse ('audience.sync', a custom
    template): its sync mode unknown, the check passed it by and the import published an empty
    audience, exit 0 (removals_only 2 of 2). A one-off import reads such a dump as the audience."""
    from pipelines import import_audience
    from transforms.errors import RunFailed

    swapped_layout(tmp_path, "audience.sync")
    with pytest.raises(RunFailed, match=r"^data source 'crm': 2 of 2 lines of its full or unnamed dump\(s\) only "
                                        r"remove segments"):
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_full_dump_with_two_separators_before_its_segments_is_named_so(tmp_path):
    """'<ID>  24,26' (two spaces) in the platform's column order reads an empty segments field and the
    segments as removed: the run failed 'segments and removed swapped in columns?', which they were
    not. With the columns in that order, two separators in a row is named first."""
    from pipelines import import_audience
    from transforms.errors import RunFailed

    dump = swapped_layout(tmp_path, "ftp_1_9_full_1795305600000.sync")
    dump.write_text("c1  24,26\nc2  27\n")
    (tmp_path / "job.yaml").write_text((tmp_path / "job.yaml").read_text().replace("columns: [id, removed, segments]",
                                                                                 "columns: [id, segments, removed]"))
    with pytest.raises(RunFailed) as info:
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")])
    assert "two field separators in a row ('<ID>  5,6': no segments, removed 5,6)?" in str(info.value)


def test_a_dump_the_run_may_not_read_fails_in_one_line_naming_it(demo_copy, tmp_path, monkeypatch):
    """A dump the run's account may not read (permission denied; as the kernel denies it to an account
    that is not root): the run failed after Beam's 24-line traceback, `run failed: RuntimeError:
    PermissionError: [Errno 13] ... [while running 'Reconcile/ReadDumps/ParDo(ReadDumpFile)']`."""
    from apache_beam.io.localfilesystem import LocalFileSystem

    victim = sorted((demo_copy / "segments" / "visitors").glob("*.gz"))[1]
    opened = LocalFileSystem.open

    def denied(self, path, *args, **kwargs):
        if path == str(victim):
            raise PermissionError(13, "Permission denied", path)
        return opened(self, path, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "open", denied)
    out = tmp_path / "out"
    result = run_import_cli(demo_copy / "job.yaml", out)
    assert_failed_cleanly(result, out, str(victim), "cannot read (Permission denied)")
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
