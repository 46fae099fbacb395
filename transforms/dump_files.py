"""Dump files as stored: which files are dumps, and their bytes read safely.

A dump may be gzip or plain whatever its name says (the magic bytes decide), and its first bytes
are checked before anything is parsed: a byte order mark is dropped; another encoding, NUL bytes
or CR-only line breaks fail the file by name. :func:`read_chunks` yields the decompressed bytes in
pieces that end on a line break and records what a control file promises about the stored file
(:class:`FileStats`). Parsing lines is :mod:`transforms.dumps`.
"""
from __future__ import annotations

import codecs
import hashlib
import posixpath
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

from isal import igzip, isal_zlib

from transforms.errors import InputError

# Decompressed bytes read at a time, and the unit of the dump stage's pool. 8 MiB rather than 64:
# a 64 MiB chunk and its parse buffers are fresh mmaps (glibc maps blocks over its threshold) whose
# pages fault in again for every chunk, and a file of one chunk is keyed by one thread while the
# other idles at the end of the stage. Alternating runs, medians of 2: 10M encrypted 41.6 -> 38.8 s
# (system CPU 14.4 -> 9.9 s), 10M split 37.2 -> 35.2 s; 1M encrypted 6.40 -> 6.24 s (4 rounds);
# 4 MiB gave no more. Outputs are the same bytes (line numbers come from the file).
CHUNK_BYTES = 8 << 20
SAMPLE_BYTES = 1 << 20  # the start of a dump that check_text_start looks at
GZIP_MAGIC = b"\x1f\x8b"


# Names transfer tools give a file while it is still being written (WinSCP .filepart, browsers .part /
# .crdownload, editors ~, ...): such a file is incomplete, never a dump, whatever it ends up called.
PARTIAL_SUFFIXES = (".filepart", ".part", ".partial", ".crdownload", ".download", ".tmp", ".temp",
                    ".incomplete", ".uploading", ".swp", "~")


def is_dump_file(path: str) -> bool:
    """Control files (``.info``), hidden or temporary files (names starting with ``.`` or ``_``) and
    partial uploads (:data:`PARTIAL_SUFFIXES`, any case, e.g. ``*.sync.gz.filepart``) are not dumps."""
    base = posixpath.basename(path)
    lower = base.lower()
    return not (lower.endswith(".info") or base.startswith((".", "_")) or lower.endswith(PARTIAL_SUFFIXES))


def dump_paths(pattern: str, missing_ok: bool = False) -> list[str]:
    """The dump files a data source's ``segments`` glob matches (sorted; see :func:`is_dump_file`).
    With ``missing_ok``, a failed match is no file instead of an error."""
    from transforms.storage import glob  # Beam's file systems: imported where files are listed, as in _open

    return [p for p in glob(pattern, missing_ok=missing_ok) if is_dump_file(p)]


@dataclass
class FileStats:
    """What a control (.info) file promises about a dump: stored bytes, their md5, and lines."""

    lines: int = 0
    size: int = 0
    md5: str = ""


class _Tally:
    """Wraps the stored (possibly compressed) byte stream: counts and md5-hashes what is read.

    The md5 is taken in a thread of its own, in the order the bytes were read (one worker, a FIFO
    queue; hashlib releases the GIL): it overlaps the decompression instead of adding to the one
    sequential reader of a big dump. A reader faster than the hash (a plain file from the page
    cache) waits once MAX_BACKLOG reads are queued, so a file never piles up in memory."""

    MAX_BACKLOG = 4

    def __init__(self, raw):
        self._raw, self._md5, self.size = raw, hashlib.md5(usedforsecurity=False), 0
        self._hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dump-md5")
        self._backlog: deque[Future] = deque()

    def read(self, n=-1):
        data = self._raw.read(n)
        if data:
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
    transfer tool may drop or keep a ``.gz`` suffix that no longer says what the bytes are."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    raw = _Tally(FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED))
    head = _read_exactly(raw, len(GZIP_MAGIC))
    stream = _Prefixed(head, raw)
    if head == GZIP_MAGIC:
        return raw, igzip.IGzipFile(fileobj=stream, mode="rb")
    if path.lower().endswith(".gz"):
        raw.close()
        problem = "empty file (0 bytes): a .gz dump is never empty" if not head else \
            "named .gz but not gzip (no gzip header): compressed by another tool, or decompressed and not renamed?"
        raise InputError(path, problem)
    return raw, stream


def check_text_start(path: str, head: bytes) -> int:
    """Check the first decompressed bytes of a dump; return how many to skip (a UTF-8 byte order mark).

    A dump is UTF-8 text with LF (or CRLF) line breaks. Another encoding or CR-only line breaks
    would make every line a format error (or the whole file one line): the file fails here, named,
    instead. Looks at the first :data:`SAMPLE_BYTES` with C-speed byte counts only."""
    sample = head[:SAMPLE_BYTES]
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
        if bad >= 3 and bad * 100 >= line_feeds + 1:
            raise InputError(path, f"not UTF-8 ({bad} invalid byte sequences in the first {line_feeds + 1} lines): "
                                   "Latin-1 / Windows-1252? Save the dump as UTF-8") from None
    return 0


def read_chunks(path: str, chunk_bytes: int = CHUNK_BYTES, stats: FileStats | None = None) -> Iterator[bytes]:
    """Yield the decompressed file in pieces that end on a line break (the last may not).

    gzip is recognised by its magic bytes; the first piece is checked by :func:`check_text_start`
    (a UTF-8 byte order mark is dropped). A truncated or corrupt gzip stream raises :class:`InputError` naming the file: the gzip
    reader checks the end-of-stream marker, the CRC and the length, which a plain text reader does
    not. ``stats``, if given, receives the stored size and md5 once the file is read to its end.

    The reader is ISA-L's (:mod:`isal.igzip`): it reads what Python's gzip module reads, multi-member
    files included, and refuses what it refuses (tested case by case), at twice its speed (354 MB
    of the 10M bench's dumps: 2.3 -> 1.15 s, and it releases the GIL as zlib does). One difference
    in wording: bytes after the last member that are not gzip fail as a truncated stream, where
    Python's module says "not a gzipped file"; both fail the file.
    """
    raw, stream = _open(path)
    try:
        rest, first = b"", True
        while True:
            try:
                piece = stream.read(chunk_bytes)
            except EOFError:
                raise InputError(path, "truncated gzip stream (the file ended before the end-of-stream marker)") from None
            except (isal_zlib.error, OSError) as exc:  # (gzip.BadGzipFile is an OSError)
                raise InputError(path, f"corrupt gzip stream ({type(exc).__name__})") from None
            if first:
                skip, first = check_text_start(path, piece), False
                piece = piece[skip:] if skip else piece
            if not piece:
                break
            cut = piece.rfind(b"\n") + 1
            if not cut:  # a line longer than a piece: it goes on in the next one
                rest += piece
                continue
            # One copy of the piece: the line begun in the last one, then this one's whole lines
            # (none when the piece ends on a line break: a full slice of bytes is the bytes).
            yield b"".join((rest, memoryview(piece)[:cut])) if rest else piece[:cut]
            rest = piece[cut:]
        if rest:
            yield rest
        while raw.read(1 << 20):  # gzip may stop before trailing bytes: hash the whole stored file
            pass
        if stats is not None:
            stats.size, stats.md5 = raw.size, raw.hexdigest()
    finally:
        stream.close()
        raw.close()
