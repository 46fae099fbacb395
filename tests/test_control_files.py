"""Platform control files (.info): a dump that disagrees with its control file fails the run."""
from __future__ import annotations

import gzip
import hashlib
import json

import pytest

from pipelines import import_audience
from transforms.errors import InputError

SEGMENTS = "segments/visitors"


def write_info(folder, name="ftp_1234_20914_full_1795305600000.info", **override):
    files = []
    for i, path in enumerate(sorted(folder.glob("*.sync*")), start=1):
        data = path.read_bytes()
        lines = (gzip.decompress(data) if path.suffix == ".gz" else data).count(b"\n")
        entry = {"FileName": path.name, "FileSequenceNumber": i, "FileLineCount": lines,
                 "FileByteSize": len(data), "md5": hashlib.md5(data).hexdigest()}
        entry.update(override.get(path.name, {}))
        files.append(entry)
    doc = {"Files": files, "Totals": {"TotalNumberFiles": len(files),
                                       "TotalNumberLines": sum(f["FileLineCount"] for f in files),
                                       "TotalByteSize": sum(f["FileByteSize"] for f in files)}}
    (folder / name).write_text(json.dumps(doc))
    return sorted(p.name for p in folder.glob("*.sync*"))


@pytest.fixture(params=["fused", "split"])
def layout(request, demo_copy, monkeypatch):
    """A test twice: dumps read where they are keyed, and dumps split into 2 KB chunks keyed apart
    (split_dump_bytes: 1), whose stats are taken once by the step that reads them. Taken by the tests
    of the stats themselves: that both ways take them alike (test_matching_control_file_passes: each
    demo dump's lines, size and md5 as promised) and the files whose stats a chunked read could take
    otherwise (an empty dump, a 0-byte split, a last line cut short or followed by blanks). A test of
    what the checks make of the stats (a control file disagreeing, listing a missing dump or another
    partner's, one delivery under two names) or of the listing before the run is the same either way:
    it runs once, the way the import reads by default."""
    if request.param == "split":
        import transforms.dumps as dumps

        monkeypatch.setattr(dumps, "CHUNK_BYTES", 2048)
        job = demo_copy / "job.yaml"
        job.write_text(job.read_text() + "\nsplit_dump_bytes: 1\n")
    return request.param


def run(demo, tmp_path):
    return import_audience.run(["--config", str(demo / "job.yaml"), "--output", str(tmp_path / "out")])


@pytest.mark.usefixtures("layout")
def test_matching_control_file_passes(demo_copy, tmp_path):
    write_info(demo_copy / SEGMENTS)
    assert run(demo_copy, tmp_path)["data_sources"]["visitors"]["received"] > 0


@pytest.mark.parametrize(
    "change, message",
    [({"FileLineCount": 1}, "line count disagrees"), ({"md5": "0" * 32}, "md5 disagrees"),
     ({"FileByteSize": 7}, "byte size disagrees")],
)
def test_disagreeing_control_file_fails_and_publishes_nothing(demo_copy, tmp_path, change, message):
    names = write_info(demo_copy / SEGMENTS)
    write_info(demo_copy / SEGMENTS, **{names[0]: change})
    with pytest.raises(Exception, match=message) as info:
        run(demo_copy, tmp_path)
    assert names[0] in str(info.value)
    assert not (tmp_path / "out" / "report.json").exists()
    assert not list((tmp_path / "out").glob("_incomplete-*"))


@pytest.mark.usefixtures("layout")
def test_empty_dump_where_lines_are_promised_fails(demo_copy, tmp_path):
    names = write_info(demo_copy / SEGMENTS)
    (demo_copy / SEGMENTS / names[1]).write_bytes(gzip.compress(b"", mtime=0))
    with pytest.raises(Exception, match=f"{names[1]}.*line count disagrees"):
        run(demo_copy, tmp_path)


def test_listed_but_missing_dump_fails(demo_copy, tmp_path):
    names = write_info(demo_copy / SEGMENTS)
    (demo_copy / SEGMENTS / names[1]).unlink()
    with pytest.raises(Exception, match=f"{names[1]}: listed in control file"):
        run(demo_copy, tmp_path)


def test_another_partners_batch_in_a_shared_folder_is_not_the_data_sources(demo_copy, tmp_path):
    """Two partners' deliveries in one folder, the data source's glob naming its own dumps, the other
    partner not imported (yet): the run failed 'ftp_1234_99999_...sync: listed in control file ... but
    not read (missing?)', the file there, a valid delivery refused. A control file listing no file
    the glob matches is another source's, as the nightly's listing already took it; one listing a
    file it matches that is missing still fails (test_listed_but_missing_dump_fails)."""
    folder = demo_copy / SEGMENTS
    write_info(folder, "ftp_1234_56789_full_1795305600000.info")
    other = folder / "partner-b"
    other.mkdir()
    (other / "ftp_1234_99999_full_1795305600000.sync").write_text("x 1\n")
    write_info(other, "ftp_1234_99999_full_1795305600000.info")
    for path in other.iterdir():
        path.rename(folder / path.name)
    job = demo_copy / "job.yaml"
    job.write_text(job.read_text().replace(f"{SEGMENTS}/*.sync*", f"{SEGMENTS}/ftp_1234_56789_*.sync*"))
    assert run(demo_copy, tmp_path)["data_sources"]["visitors"]["received"] == 200
    own = folder / "ftp_1234_56789_full_1795305600000002.sync.gz"
    own.write_bytes(gzip.compress(gzip.decompress(own.read_bytes())[:-50], mtime=0))
    with pytest.raises(Exception, match=f"{own.name}: line count disagrees"):
        run(demo_copy, tmp_path)


def test_a_control_file_named_in_capitals_is_read(tmp_path):
    """A ``.INFO`` control file is not a dump (``is_dump_file`` ignores case): it must not be
    skipped as a control file either, or what it promises is never checked."""
    from transforms.join_inputs import ExpandPatterns

    for name in ("ftp_1_2_full_1486140844000.sync", "a.INFO", "b.info", "c.Info"):
        (tmp_path / name).write_text("")
    out = list(ExpandPatterns().process(("d", f"{tmp_path}/*")))
    assert [o for o in out if isinstance(o, tuple)] == [("d", str(tmp_path / "ftp_1_2_full_1486140844000.sync"))]
    assert sorted(o.value[0].rsplit("/", 1)[1] for o in out if not isinstance(o, tuple)) == ["a.INFO", "b.info", "c.Info"]


def test_a_split_missing_from_its_batch_fails_without_a_control_file(demo_copy, tmp_path):
    """A batch delivered as splits 001..N with one missing (its transfer failed) and no control file
    to say so: the import read the splits it found and published part of the audience, exit 0."""
    missing = demo_copy / SEGMENTS / "ftp_1234_56789_full_1795305600000001.sync.gz"
    missing.unlink()
    with pytest.raises(Exception, match="ftp_1234_56789_full_1795305600000002.sync.gz: split 001 of its batch is "
                                        "missing") as info:
        run(demo_copy, tmp_path)
    assert "data_sources[" in str(info.value)
    assert not (tmp_path / "out" / "report.json").exists()
    # The pipeline's own listing says so too, for a split gone between the launch and the run.
    from transforms.join_inputs import ExpandPatterns

    with pytest.raises(InputError, match="002.sync.gz: split 001 of its batch is missing"):
        list(ExpandPatterns().process(("visitors", str(demo_copy / SEGMENTS / "*.sync*"))))


@pytest.mark.parametrize("empty", ["gzip stream of nothing", "0 bytes"])
@pytest.mark.usefixtures("layout")
def test_a_split_holding_no_line_beside_splits_that_do_fails(demo_copy, tmp_path, empty):
    """Split 002 of a batch created but left empty (a transfer that failed after creating the file)
    and no control file: read as no line, the import published the audience without its users,
    exit 0 (a batch is split by size: no split of it is empty). A control file listing it with 0
    lines says it is empty indeed, and the batch is read."""
    folder = demo_copy / SEGMENTS
    victim = folder / "ftp_1234_56789_full_1795305600000002.sync.gz"
    if empty == "0 bytes":  # under a plain name (an empty .gz fails on its own)
        victim.unlink()
        victim = victim.with_suffix("")
    victim.write_bytes(gzip.compress(b"", mtime=0) if empty != "0 bytes" else b"")
    with pytest.raises(Exception, match=f"{victim.name}: split 002 of its batch holds no line, where split 001 "
                                        "holds 100") as info:
        run(demo_copy, tmp_path)
    assert "Nothing was published" in str(info.value)
    assert not (tmp_path / "out" / "report.json").exists()
    write_info(folder)
    assert run(demo_copy, tmp_path)["data_sources"]["visitors"]["received"] == 100


def test_a_full_delivery_left_beside_a_newer_one_fails(demo_copy, tmp_path):
    """Yesterday's full dump still in the folder beside today's: the import read both, so every user
    today's dump no longer lists stayed in the audience, exit 0."""
    folder = demo_copy / SEGMENTS
    for dump in sorted(folder.glob("*.sync.gz")):
        newer = folder / dump.name.replace("1795305600000", "1795392000000")
        newer.write_bytes(gzip.compress(b"".join(gzip.decompress(dump.read_bytes()).splitlines(True)[:5]), mtime=0))
    with pytest.raises(Exception, match="ftp_1234_56789_full_1795305600000001.sync.gz: a full delivery older than "
                                        "ftp_1234_56789_full_1795392000000001.sync.gz") as info:
        run(demo_copy, tmp_path)
    assert "data_sources[0].segments" in str(info.value)
    assert not (tmp_path / "out" / "report.json").exists()


PLAIN = "segments/uid2-phones/ftp_1234_34567_full_1795305600000.sync"


@pytest.mark.usefixtures("layout")
def test_a_plain_dump_ending_inside_a_line_fails_unless_a_control_file_lists_it(demo_copy, tmp_path):
    """A plain dump whose transfer stopped inside its last line (`… 3301,33` for `… 3301,3302`): read
    as it was, segment `33` got a member and the line lost 3302, exit 0 (a gzip dump so cut fails: its
    stream has no end). A plain file cannot say it is whole: a last line without a line break fails
    naming the file and the line, unless a control file lists the file (its size and md5 then say it
    is whole). A gzip dump whose stream ends so was written so, and is read."""
    dump = demo_copy / PLAIN
    text = dump.read_bytes()
    dump.write_bytes(text[:-3])
    lines = text.count(b"\n")
    with pytest.raises(InputError) as info:
        run(demo_copy, tmp_path)
    assert str(info.value).split(" [while running")[0] == (f"{dump}: line {lines}, its last, ends without a line break: the file may be cut "
                               "short (a transfer that stopped?) and that line read in part; deliver it again, or "
                               "end it with a line break if it is whole. Nothing was published")
    assert not (tmp_path / "out" / "report.json").exists()
    write_info(dump.parent, **{dump.name: {"FileLineCount": lines}})
    assert run(demo_copy, tmp_path)["data_sources"]["uid2-phones"]["received"] == lines
    (dump.parent / "ftp_1234_20914_full_1795305600000.info").unlink()
    dump.unlink()
    dump.with_name(dump.name + ".gz").write_bytes(gzip.compress(text.rstrip(b"\n"), mtime=0))
    assert run(demo_copy, tmp_path)["data_sources"]["uid2-phones"]["received"] == lines


@pytest.mark.usefixtures("layout")
def test_a_plain_dump_ending_in_blanks_after_its_last_line_break_is_read(demo_copy, tmp_path):
    """Spaces or a tab after a plain dump's last line break (an editor's indent, a padded export) are no
    line cut short, which holds text: the run failed as 'ends without a line break: the file may be cut
    short'. The blanks are a line of their own, counted (received and rejected) as such lines are."""
    dump = demo_copy / PLAIN
    lines = dump.read_bytes().count(b"\n")
    dump.write_bytes(dump.read_bytes() + b"  \t")
    assert run(demo_copy, tmp_path)["data_sources"]["uid2-phones"]["received"] == lines + 1


@pytest.mark.parametrize("retry", ["split 002 again as 003", "an iter delivery again, a minute later"])
def test_one_dumps_bytes_delivered_twice_under_two_names_fail_naming_both(demo_copy, tmp_path, retry):
    """A transfer retried under another name (split 002 sent again as 003; an iter delivery sent again
    with a later timestamp): both were read, 'received' 300 for 200 lines (400 for 200) and every
    rejection counted twice, exit 0; the names differ, so the name checks let it by. Two dumps of the
    same stored bytes (of some lines) are one delivery twice: the run fails naming both."""
    if retry.startswith("split"):
        first = demo_copy / SEGMENTS / "ftp_1234_56789_full_1795305600000002.sync.gz"
        again = first.with_name("ftp_1234_56789_full_1795305600000003.sync.gz")
    else:
        full = demo_copy / PLAIN
        first = full.with_name(full.name.replace("_full_", "_iter_"))
        full.rename(first)
        again = first.with_name(first.name.replace("1795305600000", "1795305660000"))
    again.write_bytes(first.read_bytes())
    with pytest.raises(InputError) as info:
        run(demo_copy, tmp_path)
    lines = 100 if retry.startswith("split") else 200
    assert str(info.value).split(" [while running")[0] == (
        f"{again}: the same bytes as {first.name} ({lines} lines): one delivery read twice (a transfer retried "
        "under another name?), its lines counted twice; remove one. Nothing was published")
    assert not (tmp_path / "out" / "report.json").exists()
    again.unlink()
    assert run(demo_copy, tmp_path)["data_sources"]["visitors"]["received"] == 200


def test_the_same_bytes_in_two_folders_are_two_deliveries_not_one_read_twice():
    """Two data sources (or a hashed source beside a copy of it under another digest's config) may be
    given one file's bytes in two folders: each folder's dump is its own delivery. A transfer retried
    under another name lands beside the first, in its folder: only that is one delivery read twice
    (the check refused the first case, failing 17 diagnosis tests and a nightly's)."""
    from transforms.control_files import check_control_files
    from transforms.dump_files import FileStats

    same = FileStats(lines=3, size=120, md5="0" * 32)
    check_control_files([], [("/d/a/ftp_1_2_full_1.sync", same), ("/d/b/ftp_1_2_full_1.sync", same)])
    with pytest.raises(InputError, match="the same bytes as ftp_1_2_full_1.sync"):
        check_control_files([], [("/d/a/ftp_1_2_full_1.sync", same), ("/d/a/ftp_1_2_full_2.sync", same)])
