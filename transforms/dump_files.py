"""Dump files as stored: their bytes read safely (which files are dumps: :mod:`transforms.dump_listing`).

A dump may be gzip or plain whatever its name says (the magic bytes decide), and its first bytes
are checked before anything is parsed: a byte order mark is dropped; another encoding, NUL bytes
or CR-only line breaks fail the file by name. Past them, a CR line break or a block of NULs fails
the file naming the line (as chunks are parsed: :func:`transforms.dumps.check_lines`, and here for
a line longer than a piece), and a byte order mark starting a line (a later gzip member's) is
dropped. :func:`line_chunks` yields the decompressed bytes in pieces that end on a line break, with
their first line's number, and records what a control file promises about the stored file
(:class:`FileStats`). Parsing lines is :mod:`transforms.dumps`.
"""
from __future__ import annotations

import codecs
import hashlib
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from isal import igzip, isal_zlib

from transforms.errors import InputError
from transforms.reasons import not_stray

# Decompressed bytes read at a time, and the unit of the dump stage's pool. 8 MiB rather than 64:
# a 64 MiB chunk and its parse buffers are fresh mmaps (glibc maps blocks over its threshold) whose
# pages fault in again for every chunk, and a file of one chunk is keyed by one thread while the
# other idles at the end of the stage. Alternating runs, medians of 2: 10M encrypted 41.6 -> 38.8 s
# (system CPU 14.4 -> 9.9 s), 10M split 37.2 -> 35.2 s; 1M encrypted 6.40 -> 6.24 s (4 rounds);
# 4 MiB gave no more. Outputs are the same bytes (line numbers come from the file).
CHUNK_BYTES = 8 << 20
SAMPLE_BYTES = 1 << 20  # the start of a dump that check_text_start looks at
NUL_RUN = b"\0" * 16  # zeros no line of text holds: a file with them fails (nul_block)


@dataclass
class FileStats:
    """What a control (.info) file promises about a dump: stored bytes, their md5, and lines; and, of a
    dump read, the number of its last line when that has no line break in a plain file (0: none), which
    may be a transfer cut short inside it (:func:`transforms.control_files.check_control_files`)."""

    lines: int = 0
    size: int = 0
    md5: str = ""
    unterminated: int = 0


class _Tally:
    """Wraps the stored (possibly compressed) byte stream: counts and md5-hashes what is read.

    The md5 is taken in a thread of its own, in the order the bytes were read (one worker, a FIFO
    queue; hashlib releases the GIL): it overlaps the decompression instead of adding to the one
    sequential reader of a big dump. A reader faster than the hash (a plain file from the page
    cache) waits once MAX_BACKLOG reads are queued, so a file never piles up in memory. The first
    INLINE_BYTES are hashed as they are read, and the thread starts only after them: a file of a few
    thousand lines (a batch split in hundreds of files) was over in less time than starting it took."""

    MAX_BACKLOG = 4
    INLINE_BYTES = 1 << 20

    def __init__(self, raw):
        self._raw, self._md5, self.size = raw, hashlib.md5(usedforsecurity=False), 0
        self._hasher: ThreadPoolExecutor | None = None
        self._backlog: deque[Future] = deque()

    def read(self, n=-1):
        data = self._raw.read(n)
        if data and self._hasher is None and self.size + len(data) <= self.INLINE_BYTES:
            self._md5.update(data)
        elif data:
            if self._hasher is None:
                self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dump-md5")
            while len(self._backlog) >= self.MAX_BACKLOG:
                self._backlog.popleft().result()
            self._backlog.append(self._hasher.submit(self._md5.update, data))
        self.size += len(data)
        return data

    def readable(self):
        return True

    def hexdigest(self) -> str:
        while self._backlog:
            self._backlog.popleft().result()
        return self._md5.hexdigest()

    def close(self):
        if self._hasher is not None:
            self._hasher.shutdown(wait=True, cancel_futures=True)
        self._raw.close()


class _Prefixed:
    """A stream with bytes already read from it put back in front (what :func:`_open` peeked at)."""

    def __init__(self, head: bytes, raw):
        self._head, self._raw = head, raw

    def read(self, n=-1):
        if not self._head:
            return self._raw.read(n)
        if n is None or n < 0:
            data, self._head = self._head + self._raw.read(), b""
            return data
        data, self._head = self._head[:n], self._head[n:]
        return data if len(data) == n else data + self._raw.read(n - len(data))

    def readinto(self, buffer) -> int:  # what ISA-L's gzip reader asks for
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def readable(self):
        return True

    def close(self):
        self._raw.close()


def _read_exactly(raw, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = raw.read(n - len(data))
        if not piece:
            break
        data += piece
    return data


def _open(path: str):
    """``(stored stream, decompressed stream)``. The file's first bytes decide gzip, not its name: a
    transfer tool may drop or keep a ``.gz`` suffix that no longer says what the bytes are. Another
    compression (zstd, bzip2, xz) fails naming it: its bytes read as text failed as NUL bytes, CR-only
    line breaks or Latin-1, naming no cause."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from transforms.storage import MAGIC_BYTES, compression_of

    try:
        raw = _Tally(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    except OSError as exc:  # permission denied, gone since the listing: the file and the cause, in one line
        raise InputError(path, f"cannot read ({os.strerror(exc.errno) if exc.errno else type(exc).__name__})") from None
    head = _read_exactly(raw, MAGIC_BYTES)
    kind = compression_of(head)
    if kind is not None and kind[0] == "gzip":
        return raw, igzip.IGzipFile(fileobj=_Prefixed(head, raw), mode="rb")
    if kind is not None or path.lower().endswith(".gz"):
        raw.close()
        problem = f"{kind[0]} content: a dump is plain text or gzip (decompress it, or compress it with gzip)" if kind \
            else "empty file (0 bytes): a .gz dump is never empty" if not head \
            else "named .gz but not gzip (no gzip header): compressed by another tool, or decompressed and not renamed?"
        raise InputError(path, problem)
    return raw, _Prefixed(head, raw)


def check_text_start(path: str, head: bytes) -> int:
    """Check the first decompressed bytes of a dump; return how many to skip (a UTF-8 byte order mark).

    A dump is UTF-8 text with LF (or CRLF) line breaks. Another encoding or CR-only line breaks
    would make every line a format error (or the whole file one line): the file fails here, named,
    instead. Looks at the first :data:`SAMPLE_BYTES` with C-speed byte counts only. A compressed
    stream there is inside a gzip one (:func:`_open` refuses it at a plain file's start): a dump
    compressed twice, which failed as NUL bytes or CR-only line breaks, naming neither."""
    from transforms.storage import compression_of

    sample = head[:SAMPLE_BYTES]
    kind = compression_of(sample)
    if kind is not None:
        raise InputError(path, f"{kind[0]} content inside its gzip stream (compressed twice?): decompress it once")
    if sample.startswith(codecs.BOM_UTF8):
        return len(codecs.BOM_UTF8)
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)):
        raise InputError(path, "UTF-16/UTF-32 text (byte order mark), not UTF-8: save the dump as UTF-8")
    nuls = sample.count(b"\x00")
    if nuls and nuls * 100 >= len(sample):
        raise InputError(path, f"{nuls} NUL bytes in the first {len(sample)} bytes: UTF-16/UTF-32 text or a binary "
                               "file, not a UTF-8 dump")
    line_feeds = sample.count(b"\n")
    bare_crs = sample.count(b"\r") - sample.count(b"\r\n")
    if bare_crs > line_feeds:
        raise InputError(path, "line breaks are CR only (no LF): convert the dump to LF or CRLF line breaks")
    cut = sample.rfind(b"\n") + 1 if len(head) > len(sample) else len(sample)  # whole lines only
    try:
        sample[:cut or len(sample)].decode("utf-8")
    except UnicodeDecodeError:
        bad = sample[:cut or len(sample)].decode("utf-8", errors="replace").count("\ufffd")
        if not_stray(bad, line_feeds + 1):  # 3 and 1 %: Latin-1, Windows-1252, not stray bad lines
            raise InputError(path, f"not UTF-8 ({bad} invalid byte sequences in the first {line_feeds + 1} lines): "
                                   "Latin-1 / Windows-1252? Save the dump as UTF-8") from None
    return 0


def bare_cr(path: str, line: int) -> InputError:
    """The error for a CR that does not begin a CRLF, on ``line``: a line break the format does not
    have (mixed or CR-only line breaks past :func:`check_text_start`'s sample, or converted twice:
    CR CR LF). Its records would read as one line, one rejection for many."""
    return InputError(path, f"line {line:,} holds a CR line break without LF (mixed or CR-only line breaks): "
                            "convert the dump to LF or CRLF")


def nul_block(data: bytes, end: int) -> int:
    """Where ``data[:end]`` holds NUL bytes that are no line's, or -1: a run of :data:`NUL_RUN`, or
    1% of the bytes (a write cut short and padded with zeros, UTF-16/UTF-32 text, binary data). A
    stray one is a bad line, rejected as such when its ID is checked. A memchr pass when there is none."""
    if data.find(b"\0", 0, end) < 0:
        return -1
    at = data.find(NUL_RUN, 0, end)
    if at < 0 and data.count(b"\0", 0, end) * 100 >= end:
        at = data.find(b"\0", 0, end)
    return at


def nul_bytes(path: str, line: int) -> InputError:
    return InputError(path, f"NUL bytes from line {line:,}: a damaged file (a write cut short and padded with "
                            "zeros?), UTF-16/UTF-32 text or binary data")


def _check_long_line(path: str, piece: bytes, line: int) -> None:
    """A piece without a line break, all of it line ``line``: fail now on a CR (no LF follows it
    there, unless it is the piece's last byte) or a NUL block, before the line piles up in memory
    (a CR-only tail). Other lines are checked as they are parsed (:func:`transforms.dumps.parse_chunk`)."""
    if piece.find(b"\r", 0, len(piece) - 1) >= 0:
        raise bare_cr(path, line)
    if nul_block(piece, len(piece)) >= 0:
        raise nul_bytes(path, line)


def _without_line_boms(chunk: bytes) -> bytes:
    """``chunk`` (whole lines) without a UTF-8 byte order mark starting a line: the start of a later
    gzip member of a multi-member file (``cat a.sync.gz b.sync.gz``, each written with one) is not
    the file's start, where :func:`check_text_start` drops it, and would begin that line's ID.
    (A memchr pass for its first byte, which ASCII text never holds, before the search.)"""
    if b"\xef" not in chunk or codecs.BOM_UTF8 not in chunk:
        return chunk
    chunk = chunk[len(codecs.BOM_UTF8):] if chunk.startswith(codecs.BOM_UTF8) else chunk
    return chunk.replace(b"\n" + codecs.BOM_UTF8, b"\n")


def _gzip_failure(path: str, problem: str) -> InputError:
    """The error of a gzip dump the reader refused: ``problem``, unless its gzip members are whole
    and bytes that are not gzip follow them (something appended to the file), which ISA-L's reader
    reports as a truncated or corrupt stream (a partial copy? the file is whole)."""
    after = _bytes_after_gzip(path)
    return InputError(path, problem if not after else
                      f"{after:,} bytes after the end of its gzip stream are not gzip (appended to the file?)")


def _bytes_after_gzip(path: str) -> int:
    """How many stored bytes follow the file's whole gzip members and do not start another (0: none,
    or a member is cut short or damaged). Read again with zlib, on the failure path only."""
    import zlib

    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
            member, data = zlib.decompressobj(31), b""
            while True:
                data = data or raw.read(1 << 20)
                if not data:
                    return 0  # the end inside a member, or right after one
                member.decompress(data, 1 << 20)
                data = member.unconsumed_tail
                if member.eof:
                    data = member.unused_data or raw.read(1 << 20)
                    if data and not data.startswith(b"\x1f\x8b"[:len(data)]):
                        return len(data) + sum(iter(lambda: len(raw.read(1 << 20)), 0))
                    member = zlib.decompressobj(31)
    except Exception:  # noqa: BLE001 - damaged inside a member: the reader's own problem stands
        return 0


def _within(path: str, lines: int, max_lines: int | None) -> None:
    if max_lines is not None and lines > max_lines:
        raise InputError(path, f"more than {max_lines:,} lines in one file: split it")


def read_chunks(path: str, chunk_bytes: int = CHUNK_BYTES, stats: FileStats | None = None) -> Iterator[bytes]:
    """The chunks of :func:`line_chunks`, without their line numbers."""
    return (chunk for chunk, _ in line_chunks(path, chunk_bytes, stats))


def line_chunks(path: str, chunk_bytes: int = CHUNK_BYTES, stats: FileStats | None = None,
                max_lines: int | None = None) -> Iterator[tuple[bytes, int]]:
    """Yield the decompressed file in pieces that end on a line break (the last may not), each with
    the number of its first line; a file of more than ``max_lines`` lines fails once they are read.

    gzip is recognised by its magic bytes; the first piece is checked by :func:`check_text_start`
    (a UTF-8 byte order mark is dropped, there and at the start of any line). A truncated or
    corrupt gzip stream raises :class:`InputError` naming the file: the gzip
    reader checks the end-of-stream marker, the CRC and the length, which a plain text reader does
    not. ``stats``, if given, receives the stored size and md5 once the file is read to its end, and
    the number of a last line without a line break in a plain file (a gzip stream proves its end).

    The reader is ISA-L's (:mod:`isal.igzip`): it reads what Python's gzip module reads, multi-member
    files included, and refuses what it refuses (tested case by case), at twice its speed (354 MB
    of the 10M bench's dumps: 2.3 -> 1.15 s, and it releases the GIL as zlib does). Bytes after the
    last member that are not gzip, which it reports as a truncated or corrupt stream (Python's module:
    "not a gzipped file"), fail the file naming them (:func:`_gzip_failure`).
    """
    raw, stream = _open(path)
    try:
        rest, first, line = b"", True, 1  # line: the number of the next chunk's first line
        while True:
            try:
                piece = stream.read(chunk_bytes)
            except EOFError:
                raise _gzip_failure(path, "truncated gzip stream (the file ended before the end-of-stream marker)") from None
            except (isal_zlib.error, OSError) as exc:  # (gzip.BadGzipFile is an OSError)
                raise _gzip_failure(path, f"corrupt gzip stream ({type(exc).__name__})") from None
            if not piece:  # the end (a piece left empty by a dropped byte order mark is not)
                break
            if first:
                skip, first = check_text_start(path, piece), False
                piece = piece[skip:] if skip else piece
                if not piece:
                    continue
            cut = piece.rfind(b"\n") + 1
            if not cut:  # a line longer than a piece: it goes on in the next one
                _check_long_line(path, piece, line)
                rest += piece
                continue
            # One copy of the piece: the line begun in the last one, then this one's whole lines
            # (none when the piece ends on a line break: a full slice of bytes is the bytes).
            chunk = b"".join((rest, memoryview(piece)[:cut])) if rest else piece[:cut]
            yield _without_line_boms(chunk), line
            line += chunk.count(b"\n")
            _within(path, line - 1, max_lines)
            rest = piece[cut:]
        rest, unterminated = _without_line_boms(rest), 0
        if rest:  # (a last line that was only a byte order mark is none, as at the file's start)
            # (blanks after the last line break hold no text a cut could have shortened)
            unterminated = 0 if isinstance(stream, igzip.IGzipFile) or not rest.strip() else line
            yield rest, line
            line += 1
            _within(path, line - 1, max_lines)
        while raw.read(1 << 20):  # gzip may stop before trailing bytes: hash the whole stored file
            pass
        if stats is not None:
            stats.size, stats.md5, stats.lines = raw.size, raw.hexdigest(), line - 1
            stats.unterminated = unterminated
    finally:
        stream.close()
        raw.close()
