"""Dumps are checked before they are trusted: what an operator's or a transfer tool's mistake makes of
a dump file (wrong compression name, empty .gz, another encoding, CR-only lines, a wrong separator,
an upload still in progress) ends in the right answer or in one line naming the file or data source."""
from __future__ import annotations

import codecs
import gzip
import shutil

import pytest
from conftest import assert_failed_cleanly, run_import_cli

from transforms.config import DataSourceConfig
from transforms.dump_files import is_dump_file, read_chunks
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
