"""Segment dump reader: lines, separators, file names, gzip integrity."""
from __future__ import annotations

import gzip

import pytest

from transforms.config import DataSourceConfig
from transforms.dump_files import FileStats, read_chunks
from transforms.dump_listing import is_dump_file
from transforms.dump_names import DumpName, missing_splits, older_full_delivery, parse_dump_name
from transforms.dumps import numbered_chunks, parse_lines, read_dump, split_lines
from transforms.errors import InputError

VID = "59767559181262060060278870901087098252"
VID2 = "08382830887934830189014177072406221371"


def ds(**kw) -> DataSourceConfig:
    base = dict(name="v", dpid=1, segments="unused", id_type="visitor")
    return DataSourceConfig(**{**base, **kw})


def parse(data: bytes, **kw):
    parsed, rejected = parse_lines(split_lines(data), 1, "f.sync", ds(**kw))
    return parsed.to_pylist(), {r["line"]: r["reason"] for r in rejected.to_pylist()}


def test_reference_line_is_parsed_with_added_and_removed_segments():
    rows, rejected = parse(f"{VID} 24,26,27 25,28\n".encode())
    assert rejected == {}
    assert rows == [
        {"data_source": "v", "source_file": "f.sync", "line": 1, "id": VID,
         "segments": ["24", "26", "27"], "removed": ["25", "28"]}
    ]


def test_removed_column_may_be_empty_or_absent():
    rows, rejected = parse(f"{VID} 24 \n{VID2} 25\n".encode())
    assert rejected == {}
    assert [(r["line"], r["segments"], r["removed"]) for r in rows] == [(1, ["24"], []), (2, ["25"], [])]


def test_every_bad_line_is_rejected_with_its_line_number_and_reason():
    data = (
        f"{VID} 24\n"            # 1 ok
        "\n"                     # 2 empty
        "just-one-field\n"       # 3 malformed
        f"{VID} d_sid=24,c_color=blue\n"  # 4 trait / key-value
        f"{VID} 12,ab\n"         # 5 not a segment id
        f"{VID}  25\n"           # 6 only removals
        f"{VID} 1 2 3\n"         # 7 too many fields
        "\xff\xfe 1\n"           # 8 not UTF-8 (written as latin-1 below)
        f"{VID2} 7"              # 9 ok, no final newline
    ).encode("latin-1")
    rows, rejected = parse(data)
    assert [r["line"] for r in rows] == [1, 9]
    assert rejected == {
        2: "empty_line",
        3: "malformed_line",
        4: "trait_not_importable",
        5: "invalid_segment_id",
        6: "removals_only",
        7: "malformed_line",
        8: "not_utf8",
    }


def test_a_segment_list_ending_with_its_separator_before_another_field_is_malformed():
    """'<ID> 100, 200' (a space after the comma) has the three fields of the layout: it read as
    segments '100,' and removed '200', and every user left segment 200, exit 0. A list ending with
    its separator is followed by no field in the platform's lines (alone, a trailing one is read)."""
    rows, rejected = parse(f"{VID} 24, 25\n{VID2} 26,\n{VID} 27, \n".encode())
    assert rejected == {1: "malformed_line"} and [(r["line"], r["segments"]) for r in rows] == [(2, ["26"]), (3, ["27"])]
    rows, rejected = parse(f"{VID} 24, 25\n".encode(), columns=("id", "removed", "segments"))
    assert rejected == {1: "malformed_line"}


def test_crlf_line_breaks_are_accepted():
    rows, rejected = parse(f"{VID} 24 25\r\n{VID2} 26\r\n".encode())
    assert rejected == {}
    assert [(r["id"], r["segments"], r["removed"]) for r in rows] == [(VID, ["24"], ["25"]), (VID2, ["26"], [])]


def test_separators_and_column_roles_are_configurable():
    data = f"24|25\t{VID}\n".encode()
    rows, rejected = parse(data, field_separator="\t", segment_separator="|", columns=("segments", "id"))
    assert rejected == {}
    assert rows[0]["id"] == VID and rows[0]["segments"] == ["24", "25"] and rows[0]["removed"] == []


def test_soh_separator_written_as_escape_in_config():
    rows, _ = parse(f"{VID}\x0124,25\x01\n".encode(), field_separator="\\x01")
    assert rows[0]["segments"] == ["24", "25"]


def test_line_numbers_continue_across_chunks(tmp_path):
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"
    path.write_bytes("".join(f"{VID} {i}\n" for i in range(1, 1001)).encode())
    seen = []
    chunks = 0
    for parsed, rejected, n in read_dump(str(path), ds(), chunk_bytes=4096):
        chunks += 1
        seen += parsed["line"].to_pylist()
        assert rejected.num_rows == 0
    assert chunks > 5
    assert seen == list(range(1, 1001))


def test_a_first_read_that_is_only_the_byte_order_mark_does_not_end_the_file(tmp_path):
    # The first piece read is the BOM alone (a 3-byte read): dropped, it left an empty piece that
    # ended the file there, every line lost without a rejection (stats: 0 lines).
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(f"{VID} {i}\n" for i in range(1, 4)).encode())
    stats = FileStats()
    seen = [line for parsed, _, _ in read_dump(str(path), ds(), chunk_bytes=3, stats=stats)
            for line in parsed["line"].to_pylist()]
    assert seen == [1, 2, 3] and stats.lines == 3


def test_line_numbers_without_a_final_newline_and_crlf(tmp_path):
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"
    path.write_bytes("".join(f"{VID} {i}\r\n" for i in range(1, 300)).encode() + f"{VID} 300".encode())
    numbered = [(first, len(split_lines(chunk))) for chunk, first in numbered_chunks(str(path), chunk_bytes=1024)]
    assert len(numbered) > 3 and sum(n for _, n in numbered) == 300
    firsts = [first for first, _ in numbered]
    assert firsts == [1 + sum(n for _, n in numbered[:i]) for i in range(len(numbered))]


def test_a_file_beyond_the_line_limit_fails_naming_it(tmp_path, monkeypatch):
    import transforms.dumps as dumps

    monkeypatch.setattr(dumps, "MAX_LINES", 100)
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"
    path.write_bytes("".join(f"{VID} {i}\n" for i in range(150)).encode())
    with pytest.raises(InputError) as info:
        list(read_dump(str(path), ds(), chunk_bytes=1024))
    assert str(path) in str(info.value) and "lines in one file" in str(info.value)


def test_gzip_dump_reads_like_plain(tmp_path):
    body = f"{VID} 24\n{VID2} 25 26\n".encode()
    plain, gz = tmp_path / "a.sync", tmp_path / "a.sync.gz"
    plain.write_bytes(body)
    gz.write_bytes(gzip.compress(body))
    assert b"".join(read_chunks(str(plain))) == b"".join(read_chunks(str(gz))) == body


def _big_gzip(tmp_path):
    body = "".join(f"{VID} {i % 50}\n" for i in range(20000)).encode()
    data = gzip.compress(body)
    return data


def test_truncated_gzip_fails_naming_the_file(tmp_path):
    path = tmp_path / "ftp_1_2_full_1486140844000.sync.gz"
    path.write_bytes(_big_gzip(tmp_path)[:-30])
    with pytest.raises(InputError) as info:
        list(read_dump(str(path), ds()))
    assert str(path) in str(info.value) and "truncated" in str(info.value)
    assert VID not in str(info.value)


def test_corrupt_gzip_fails_naming_the_file(tmp_path):
    data = bytearray(_big_gzip(tmp_path))
    for i in range(200, 260):
        data[i] ^= 0x55
    path = tmp_path / "ftp_1_2_full_1486140844000.sync.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError) as info:
        list(read_dump(str(path), ds()))
    assert str(path) in str(info.value) and "corrupt" in str(info.value)


GZIP_CASES = ("intact", "cut in the middle", "cut in the trailer", "crc differs", "length differs",
              "deflate data damaged", "zeros after the stream", "bytes after the stream", "two members",
              "one empty member", "a text line after the stream", "a member cut short after the stream")


def _damaged(body: bytes) -> dict[str, bytes]:
    """A gzip dump of ``body`` (of some KB at least) as a transfer or a tool may leave it."""
    gz = gzip.compress(body, mtime=0)
    return {
        "intact": gz,
        "cut in the middle": gz[: len(gz) // 2],
        "cut in the trailer": gz[:-4],
        "crc differs": gz[:-8] + bytes([gz[-8] ^ 1]) + gz[-7:],
        "length differs": gz[:-1] + bytes([gz[-1] ^ 1]),
        "deflate data damaged": gz[:200] + bytes([gz[200] ^ 0xFF]) + gz[201:],
        "zeros after the stream": gz + b"\0" * 10,
        "bytes after the stream": gz + b"not gzip",
        "two members": gz + gzip.compress(b"%s 7\n" % VID2.encode(), mtime=0),
        "one empty member": gzip.compress(b"", mtime=0),
        "a text line after the stream": gz + b"x" * 99 + b"\n",
        "a member cut short after the stream": gz + gzip.compress(b"%s 7\n" % VID2.encode(), mtime=0)[:-9],
    }


def _python_gzip(data: bytes) -> bytes | type:
    """What Python's own gzip module reads from ``data``: the bytes, or the exception's class."""
    try:
        return gzip.decompress(data)
    except Exception as exc:  # noqa: BLE001 - the class is the answer
        return type(exc)


@pytest.mark.parametrize("case", GZIP_CASES)
def test_gzip_reads_as_pythons_gzip_module_reads_it(tmp_path, case):
    """Dumps are decompressed by ISA-L (:mod:`isal.igzip`, twice as fast): every stream Python's
    gzip module reads gives the same bytes, and every stream it refuses fails the file by name with
    no content in the message -- never a decoder's own exception, never a partial read passed on."""
    body = "".join(f"{VID} {i % 50},{i % 7}\n" for i in range(20000)).encode()
    cases = _damaged(body)
    assert set(cases) == set(GZIP_CASES)
    data = cases[case]
    path = tmp_path / "ftp_1_2_full_1486140844000.sync.gz"
    path.write_bytes(data)
    expected = _python_gzip(data)
    if isinstance(expected, bytes):
        assert b"".join(read_chunks(str(path), chunk_bytes=4096)) == expected
        return
    with pytest.raises(InputError) as info:
        list(read_dump(str(path), ds(), chunk_bytes=4096))
    message = str(info.value)
    assert str(path) in message and any(word in message for word in ("truncated", "corrupt", "are not gzip"))
    assert VID not in message
    if expected is EOFError:
        assert "truncated" in message
    if case in ("bytes after the stream", "a text line after the stream"):  # not gzip: named so (no more 'truncated')
        tail = len(data) - len(cases["intact"])
        assert message == f"{path}: {tail} bytes after the end of its gzip stream are not gzip (appended to the file?)"


def test_dumps_are_decompressed_by_isal(tmp_path):
    from isal import igzip

    from transforms.dump_files import _open

    path = tmp_path / "a.sync.gz"
    path.write_bytes(gzip.compress(f"{VID} 24\n".encode()))
    raw, stream = _open(str(path))
    try:
        assert isinstance(stream, igzip.IGzipFile)
    finally:
        stream.close()
        raw.close()


@pytest.mark.parametrize("compressed", [False, True])
def test_read_chunks_cut_at_line_breaks_and_take_the_stored_files_stats(tmp_path, compressed):
    """Chunks end at line breaks, a line longer than a chunk included; the stats are the stored
    file's (its md5 is hashed beside the reading, in order: many small reads give the same md5)."""
    import hashlib

    from transforms.dump_files import FileStats

    lines = [f"{VID} {i % 50}".encode() for i in range(3000)]
    lines[1000] = f"{VID} ".encode() + b",".join(b"%d" % i for i in range(2000))  # ~9 KB: longer than a chunk
    body = b"\n".join(lines) + b"\n"
    stored = gzip.compress(body, mtime=0) if compressed else body
    path = tmp_path / ("ftp_1_2_full_1486140844000.sync" + (".gz" if compressed else ""))
    path.write_bytes(stored)
    stats = FileStats()
    chunks = list(read_chunks(str(path), chunk_bytes=4096, stats=stats))
    assert b"".join(chunks) == body and len(chunks) > 10
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert (stats.size, stats.md5) == (len(stored), hashlib.md5(stored).hexdigest())


def test_the_md5_thread_keeps_a_bounded_backlog_and_the_order(tmp_path, monkeypatch):
    """A reader faster than md5 (a plain file from the page cache) waits for the hash thread
    instead of queueing the whole file in memory; the digest is the file's."""
    import hashlib
    import threading
    import time

    import transforms.dump_files as dump_files

    md5 = hashlib.md5

    class SlowMd5:
        def __init__(self):
            self._md5 = md5()

        def update(self, data):
            time.sleep(0.002)
            self._md5.update(data)

        def hexdigest(self):
            return self._md5.hexdigest()

    monkeypatch.setattr(dump_files.hashlib, "md5", lambda **_: SlowMd5())
    monkeypatch.setattr(dump_files._Tally, "INLINE_BYTES", 4096)  # the thread starts after 4 KB
    body = "".join(f"{VID} {i % 50}\n" for i in range(5000)).encode()
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"
    path.write_bytes(body)
    before = set(threading.enumerate())
    raw, stream = dump_files._open(str(path))
    most = 0
    try:
        while stream.read(512):
            most = max(most, sum(not f.done() for f in raw._backlog))
        assert raw.hexdigest() == md5(body).hexdigest()
        hashers = [t for t in set(threading.enumerate()) - before if t.name.startswith("dump-md5")]
    finally:
        stream.close()
        raw.close()
    assert 1 < most <= dump_files._Tally.MAX_BACKLOG
    assert hashers and not any(t.is_alive() for t in hashers)  # closed: its thread is gone


@pytest.mark.parametrize("size", [100, 2_000_000])
def test_a_small_dump_is_hashed_without_a_thread_and_a_big_one_with_it(tmp_path, size):
    """The first MiB is hashed as it is read: a dump of a few thousand lines (one of hundreds of
    splits) starts no thread; a bigger one does after it. Either way the md5 and size are the file's."""
    import hashlib
    import threading

    from transforms.dump_files import FileStats, read_chunks

    body = "".join(f"{VID} {i % 50}\n" for i in range(size // 42 + 1)).encode()
    path = tmp_path / "ftp_1_2_full_1486140844000.sync"
    path.write_bytes(body)
    started = []
    original = threading.Thread.start
    def start(thread):
        started.append(thread.name)
        original(thread)
    stats = FileStats()
    threading.Thread.start = start
    try:
        assert b"".join(read_chunks(str(path), stats=stats)) == body
    finally:
        threading.Thread.start = original
    assert (stats.md5, stats.size) == (hashlib.md5(path.read_bytes()).hexdigest(), path.stat().st_size)
    assert any(name.startswith("dump-md5") for name in started) == (size > 1 << 20)


def test_a_segment_id_is_ascii_digits_only_token_by_token():
    """The rule is ``^[0-9]+$`` (a segment id is a number; at most 19 digits, tested below): checked per token with Arrow's
    ASCII-decimal test, which gives what the regex gives, tokens with Unicode digits (Arabic-Indic,
    fullwidth, superscripts, mathematical), signs, letters and control bytes included."""
    import random
    import re

    rng = random.Random(7)
    alphabet = list("0123456789") + list("ab.-+") + ["\u0661", "\u00b2", "\uff11", "\U0001d7d8", "\u00e9", "\x7f"]
    tokens = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(20000)]
    tokens += ["0", "007", "9" * 19, "-1", "\uff11\uff12", "\u0661\u0662"]
    numbers = [re.fullmatch("[0-9]+", token) is not None for token in tokens]
    assert 0.05 < sum(numbers) / len(numbers) < 0.95
    rows, rejected = parse("".join(f"{VID} 1,{token}\n" for token in tokens).encode())
    assert rejected == {i + 1: "invalid_segment_id" for i, number in enumerate(numbers) if not number}
    assert [r["segments"] for r in rows] == [["1", str(int(t))] for t, number in zip(tokens, numbers) if number]


def test_split_lines_gives_python_splits_lines_without_their_breaks():
    """A chunk's lines as Python splits them on LF, each without its line break: a CR before the
    LF (or at the end of a last line without one) dropped, a lone CR kept, no line after a final LF."""
    import random

    def reference(chunk: bytes) -> list[bytes]:
        lines = chunk.split(b"\n")
        lines = lines[:-1] if chunk.endswith(b"\n") or not chunk else lines
        return [line[:-1] if line.endswith(b"\r") else line for line in lines]

    rng = random.Random(11)
    chunks = [bytes(rng.choice(b"ab \r\n") for _ in range(rng.randint(0, 14))) for _ in range(20000)]
    chunks += [b"", b"\n", b"\r\n", b"\r", b"a\r", b"a\rb\n", b"\n\n", "é\r\n".encode()]
    for chunk in chunks:
        assert split_lines(chunk).to_pylist() == reference(chunk), chunk


def test_file_names_are_parsed_as_documented():
    assert parse_dump_name("gs://b/x/S3_1234_20914_XYZCustomer_iter_1486140844000.sync.gz") == DumpName(
        "S3", 1234, 20914, "XYZCustomer", "iter", 1486140844000, None
    )
    assert parse_dump_name("ftp_1234_20915_full_1486140843000001.sync.gz") == DumpName(
        "ftp", 1234, 20915, None, "full", 1486140843000, 1
    )
    assert parse_dump_name("ftp_1234_20915_full_1486140843000012.sync").split == 12
    assert parse_dump_name("random.txt") is None
    assert parse_dump_name("ftp_1234_20915_sometimes_1486140843000.sync") is None


def test_a_batch_whose_split_numbers_have_a_gap_is_named_with_its_missing_splits():
    """Splits of one batch run from 001 with no gap: a missing one is a partial delivery (a transfer
    that failed for one file), which would import part of the audience and publish it."""
    batch = "gs://b/d/ftp_1234_20915_full_1486140843000"
    whole = [f"{batch}001.sync.gz", f"{batch}002.sync.gz", f"{batch}003.sync.gz", "gs://b/d/random.sync",
             "gs://b/d/S3_1234_20914_XYZ_iter_1486140844000.sync.gz"]
    assert missing_splits(whole) == []
    assert missing_splits([f"{batch}002.sync.gz", f"{batch}003.sync.gz"]) == [
        (f"{batch}002.sync.gz", "split 001 of its batch is missing (found 002, 003)")]
    assert missing_splits([f"{batch}001.sync.gz", f"{batch}004.sync.gz"]) == [
        (f"{batch}001.sync.gz", "splits 002, 003 of its batch are missing (found 001, 004)")]
    # Another batch (timestamp, folder or data source) is judged on its own.
    other = "gs://b/e/ftp_1234_20915_full_1486140843000"
    assert missing_splits([f"{batch}001.sync.gz", f"{other}002.sync"]) == [
        (f"{other}002.sync", "split 001 of its batch is missing (found 002)")]


def test_full_dumps_of_two_deliveries_are_named_the_newest_first():
    """A full dump is the whole audience: a folder still holding yesterday's full delivery beside
    today's would keep every user today's removed."""
    old, new = "/d/ftp_1_2_full_1795305600000", "/d/ftp_1_2_full_1795392000000"
    assert older_full_delivery([f"{old}001.sync.gz", f"{old}002.sync.gz", "/d/other.sync"]) is None
    assert older_full_delivery([f"{old}001.sync.gz", f"{new}001.sync.gz", f"{new}002.sync.gz"]) == (
        f"{new}001.sync.gz", f"{old}001.sync.gz")
    iters = ["/d/ftp_1_2_iter_1795305600000.sync", "/d/ftp_1_2_iter_1795392000000.sync"]
    assert older_full_delivery(iters) is None  # changes, applied together
    assert older_full_delivery(iters, sync_mode="full") == tuple(reversed(iters))  # configured: names' mode aside
    assert older_full_delivery([f"{old}001.sync.gz", f"{new}001.sync.gz"], sync_mode="iter") is None


def test_control_files_are_not_dumps():
    assert is_dump_file("/d/ftp_1234_20915_full_1486140843000.sync.gz")
    assert not is_dump_file("/d/ftp_1234_20915_full_1486140843000.sync.info")
    assert not is_dump_file("/d/.hidden.sync")


def test_two_gzip_dumps_joined_where_the_first_lacks_its_final_newline_reject_the_merged_line(tmp_path):
    """``cat a.gz b.gz`` is one gzip file whose text is a's then b's (RFC 1952, and what ``zcat``
    reads). When a's last line has no line break, it runs into b's first: ``<VID> 1,2<VID2> 3``.
    The second visitor's 38 digits then end a segment id of 39 or more digits: no segment id is
    that long (the platform's ids are 64-bit numbers, at most 19 digits), so the merged line is a
    counted rejection, not a first visitor in a bogus segment and a second one lost."""
    path = tmp_path / "ftp_1_2_full_1486140844000.sync.gz"
    path.write_bytes(gzip.compress(f"{VID} 1,2".encode(), mtime=0)
                     + gzip.compress(f"{VID2} 3\n{VID2} 4\n".encode(), mtime=0))
    rows, rejected = [], {}
    for parsed, rejects, _ in read_dump(str(path), ds()):
        rows += parsed.to_pylist()
        rejected.update({r["line"]: r["reason"] for r in rejects.to_pylist()})
    assert rejected == {1: "invalid_segment_id"}
    assert [(r["line"], r["id"], r["segments"]) for r in rows] == [(2, VID2, ["4"])]


def test_a_segment_id_has_at_most_19_digits():
    rows, rejected = parse(f"{VID} 1,{'9' * 19}\n{VID} 1,{'1' * 20}\n{VID} 1 {'2' * 20}\n".encode())
    assert [r["segments"] for r in rows] == [["1", "9" * 19]]
    assert rejected == {2: "invalid_segment_id", 3: "invalid_segment_id"}


def test_a_segment_id_written_with_leading_zeros_is_the_same_segment():
    """Segment ids are numbers (64-bit on the platform): '0100' on one line and '100' on another made
    two audiences of one segment, each with part of its members, exit 0. Read as the number's digits."""
    rows, rejected = parse(f"{VID} 0100,7 00\n{VID2} 100,0 000\n".encode())
    assert rejected == {}
    assert [(r["segments"], r["removed"]) for r in rows] == [(["100", "7"], ["0"]), (["100", "0"], ["0"])]
    # 19 digits or fewer once its zeros are gone: a number, however many zeros it was written with
    # (it was rejected, invalid_segment_id, its length checked before they went)
    rows, rejected = parse(f"{VID} {'0' * 20}42,{'0' * 3}{'9' * 19} {'0' * 25}\n{VID2} 0{'1' * 20}\n".encode())
    assert rejected == {2: "invalid_segment_id"}
    assert [(r["segments"], r["removed"]) for r in rows] == [(["42", "9" * 19], ["0"])]
