"""Paths and globs, local or ``gs://``, through Beam's FileSystems: the one place every module
lists files, so they all sort and fail the same way."""
from __future__ import annotations

import codecs
import fnmatch
import io
import logging
import os
import posixpath
import re
import warnings

import apache_beam as beam
from apache_beam.io.filesystem import FileSystem
from apache_beam.io.filesystems import FileSystems

from transforms import listing
from transforms.errors import ConfigError, InputError


# A file's first bytes that begin a compressed stream: (the compression, its file extension). bzip2's
# is 'BZh', a block size digit and a block's magic (an empty stream's end-of-stream magic aside).
_MAGIC = ((b"\x1f\x8b", ("gzip", ".gz")), (b"\x28\xb5\x2f\xfd", ("zstd", ".zst")), (b"\xfd7zXZ\x00", ("xz", ".xz")),
          (b"PK\x03\x04", ("zip", None)), (b"PK\x05\x06", ("zip", None)))  # an archive, no stream: no extension reads it
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")
MAGIC_BYTES = 10  # what compression_of needs of a file's start (bzip2's)


def compression_of(head: bytes) -> tuple[str, str | None] | None:
    """The compression whose stream a file's first bytes (:data:`MAGIC_BYTES` of them) begin, as
    ``(name, extension)``: gzip, zstd, xz or bzip2, or a zip archive (no extension: no reader takes
    one); None for none. The one detector of the dump reader (which reads gzip whatever the name) and
    of the extracts' header reader (which refuses a compressed file under a plain name)."""
    kind = next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)
    return ("bzip2", ".bz2") if kind is None and _BZIP2.match(head) else kind


def not_text(path: str, head: bytes, what: str, pattern: str | None = None) -> str | None:
    """Why a text file's first bytes (as read: decompressed by its name) are no UTF-8 text, naming
    the cause: a compressed stream under a name without its extension (and the name to give it),
    or UTF-16/UTF-32 (a byte order mark, or NUL bytes, which no UTF-8 text holds); None otherwise.
    ``what``: the file, in the message ('extract', 'list'); ``pattern``: the path or glob that listed
    it, when the name to give it must still match it (:func:`_renamed_unread`)."""
    kind = compression_of(head)
    if head.startswith(b"PAR1"):
        renamed = posixpath.splitext(path)[0] + ".parquet"
        return "Parquet content, not text: name the file .parquet" + _renamed_unread(renamed, pattern)
    if kind is not None and kind[1] is None:  # (an .xlsx workbook is a zip archive)
        return f"a {kind[0]} archive (an Excel workbook?), which is not read: extract the file from it, or save it as CSV"
    if kind is not None:
        return (f"{kind[0]} content under a name without {kind[1]}: rename it {path.rsplit('/', 1)[-1]}{kind[1]}"
                + _renamed_unread(f"{path}{kind[1]}", pattern))
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or b"\0" in head:  # (UTF-32's BOMs too)
        return f"UTF-16/UTF-32 text (a byte order mark or NUL bytes), not UTF-8: save the {what} as UTF-8"
    return None


def not_parquet(path: str, head: bytes, pattern: str | None = None, setting: str | None = None) -> str | None:
    """What a file read as Parquet that is none holds, from its first bytes: a compressed stream (a
    Parquet file gzipped for a transfer, 'p.parquet.gz': Parquet compresses its own pages, and its
    reader needs the file as written) and the name to give it once decompressed, or text (a CSV or
    JSONL file under a Parquet name, or under a ``setting`` that says Parquet); None when neither (a
    damaged Parquet file). ``pattern``: as for :func:`not_text`."""
    kind = compression_of(head)
    if kind is not None and kind[1] is not None:
        name = posixpath.basename(path)
        plain = name[: -len(kind[1])] if name.lower().endswith(kind[1]) else name
        plain = plain if plain.lower().endswith(".parquet") else plain + ".parquet"
        renamed = "" if plain == name else f" and name it {plain}" + _renamed_unread(plain, pattern)
        return f"{kind[0]} content, not Parquet (a Parquet file compresses its own pages): decompress it{renamed}"
    try:
        head.decode("utf-8")
        text = bool(head)
    except UnicodeDecodeError as exc:  # (a character cut by the end of the bytes read is text still)
        text = exc.start >= len(head) - 3
    if text and b"\0" not in head and not head.startswith(b"PAR1"):  # (a Parquet file cut short is damaged)
        return "text, not Parquet (a CSV or JSONL file?): name it by its format" + (f" or set {setting}" if setting else "")
    return None


def _renamed_unread(renamed: str, pattern: str | None) -> str:
    """What to add to a 'rename it' advice when the new name falls outside the path or glob that
    listed the file: a list under ``lists/*.txt`` renamed ``b.txt.gz`` as told was no longer read,
    its addresses shared, exit 0 (a part of an extract, or of the targets, dropped the same way)."""
    # (a folder's files, 'extract/', reads the renamed file as it read the old one)
    last = posixpath.basename(pattern) if pattern else ""
    if not last or fnmatch.fnmatchcase(posixpath.basename(renamed), last):
        return ""
    return f" and change '{last}' to match it (as it stands, the renamed file would not be read)"


NO_CREDENTIALS = ("no Google Cloud credentials found (set GOOGLE_APPLICATION_CREDENTIALS, or run gcloud auth "
                  "application-default login)")
_credentials_found = False  # once found, not looked up again in this process


def check_gcs_credentials(paths, beam_args=()) -> None:
    """Before the first ``gs://`` touch: Google Cloud credentials must be found, or the job fails in
    one line naming the first ``gs://`` path (ConfigError). Beam's GCS client looked them up with 4
    retries (tracebacks as warnings), then went on anonymously, and its requests were retried: a
    config on gs:// failed after 2 to 3.5 minutes with 'cannot read the config (RetryError)'. One
    look-up here, ``google.auth.default()`` as Beam makes it (a service account file, gcloud's
    application-default login, the GCE metadata server of a VM or Dataflow worker: google-auth probes
    it 3 times, 3 s each at most, where no answer comes). ``beam_args``: Beam's flags, whose ``gs://``
    values count too. Skipped with ``STORAGE_EMULATOR_HOST`` (an emulator takes no credentials) or
    Beam's ``--no_auth`` (Beam's own look-up then, as before, and its anonymous fallback)."""
    global _credentials_found
    values = [a.partition("=")[2] or a for a in beam_args]  # --temp_location=gs://... or its value alone
    remote = next((p for p in [*paths, *values] if isinstance(p, str) and p.startswith("gs://")), None)
    if remote is None or _credentials_found or os.environ.get("STORAGE_EMULATOR_HOST") or "--no_auth" in beam_args:
        return
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError
    except ImportError:  # pragma: no cover - installed with apache-beam[gcp]; Beam connects anonymously
        return
    quiet = logging.getLogger("google.auth")  # its metadata probe warns per attempt
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        google.auth.default()
    except DefaultCredentialsError:
        named = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if named:
            raise ConfigError(f"{remote}: GOOGLE_APPLICATION_CREDENTIALS names {named}, which holds no usable Google "
                              "Cloud credentials (no such file, or not a credentials file)") from None
        raise ConfigError(f"{remote}: {NO_CREDENTIALS}") from None
    finally:
        quiet.setLevel(level)
    _credentials_found = True


def join_path(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts) if "://" in base else posixpath.join(base, *parts)


def absolute(path: str) -> str:
    """A local path made absolute (a ``gs://`` one as is, without its trailing ``/``): paths as
    manifests and reports record them and as two are compared, from any working folder."""
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def open_for_arrow(path: str):
    """A file to hand to an Arrow reader: a local file memory-mapped (Arrow reads its pages in
    place, no copy through a Python file object), anything else through FileSystems. The 10M
    profiles' Parquet extract (672 MB) reads in 1.8 s instead of 2.0-2.5 s on its own; a nightly's
    night 2 (10M profiles, 1M dump lines) 15.34 -> 14.31 s, 6 alternating runs, its kernel time
    5.7 -> 4.0 s; peak RSS unchanged (the mapped pages are the page cache's, unmapped on close)."""
    import pyarrow as pa

    return FileSystems.open(path) if "://" in path else pa.memory_map(path)


def open_input(path: str, fmt: str):
    """An extract or targets file opened for its reader: Parquet for random access
    (:func:`open_for_arrow`), text formats decompressed and checked to their end
    (:func:`open_decompressed`)."""
    return open_for_arrow(path) if fmt == "parquet" else open_decompressed(path)


def open_decompressed(path: str):
    """``path`` opened for reading, decompressed by its extension as Beam's ``FileSystems.open``
    does (``.gz``, ``.bz2``, ``.xz``/``.lzma``, ``.zst``/``.zstd``), by readers that check the end
    of each stream: one cut short fails naming the file (:class:`InputError`). Beam's own
    decompressors return the bytes up to the cut as the whole file (a profile extract copied half
    way read as its first half, no error), and Arrow's CSV reader cannot read through them. Other
    files: ``FileSystems.open``."""
    from apache_beam.io.filesystem import CompressionTypes

    kind = CompressionTypes.detect_compression_type(path)
    if kind not in _STREAM_NAMES:
        return FileSystems.open(path)
    raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    return io.BufferedReader(_CheckedStream(path, kind, raw), 1 << 20)


_STREAM_NAMES = {"gzip": "gzip", "bzip2": "bzip2", "lzma": "xz", "zstd": "zstd"}  # Beam's CompressionTypes


class _CheckedStream(io.RawIOBase):
    """A compressed file's decompressed bytes; a stream cut short or corrupt is an InputError."""

    def __init__(self, path: str, kind: str, raw):
        import bz2
        import lzma

        from isal import igzip

        self._path, self._name, self._raw = path, _STREAM_NAMES[kind], raw
        opener = {"gzip": lambda f: igzip.IGzipFile(fileobj=f, mode="rb"), "bzip2": bz2.BZ2File,
                  "lzma": lzma.LZMAFile, "zstd": _ZstdFrames}[kind]
        self._stream = opener(raw)
        self._started = False  # a read gave bytes (or the end of a stream that had some)

    def readable(self):
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._stream.read(len(buffer))
        except EOFError:
            raise InputError(self._path, f"{self._name} stream cut short (the file ends before its end-of-stream "
                                         "marker): a partial copy?") from None
        except Exception as exc:  # noqa: BLE001 - zlib/ISA-L, bz2 (OSError), lzma, zstd errors: one line
            raise InputError(self._path, f"corrupt {self._name} stream ({type(exc).__name__})") from None
        if not data and not self._started and self._raw.tell() == 0:
            # 0 bytes is no stream (an empty text compresses to a header and an end marker): a copy
            # that stopped before its first byte. gzip and zstd readers return it as empty text.
            raise InputError(self._path, f"{self._name} stream cut short (an empty file, no stream at all): "
                                         "a partial copy?")
        self._started = True
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        if not self.closed:
            try:
                self._stream.close()
            finally:
                self._raw.close()
                super().close()


class _ZstdFrames:
    """zstd frames end to end, decompressed; the last one cut short raises EOFError (zstandard's
    stream reader ends quietly where the bytes do)."""

    def __init__(self, raw):
        import zstandard

        self._raw, self._context = raw, zstandard.ZstdDecompressor()
        self._frame, self._input, self._output, self._at = None, b"", b"", 0

    def read(self, n: int) -> bytes:
        while self._at >= len(self._output):
            data, self._input = self._input or self._raw.read(1 << 20), b""
            if not data:
                if self._frame is not None and not self._frame.eof:
                    raise EOFError("zstd frame cut short")
                return b""
            if self._frame is None or self._frame.eof:
                self._frame = self._context.decompressobj()
            self._output, self._at = self._frame.decompress(data), 0
            if self._frame.eof:
                self._input = self._frame.unused_data
        # From an offset: slicing off the front copied the rest at every read (quadratic in small reads).
        data = self._output[self._at:self._at + n]
        self._at += len(data)
        return data

    def close(self):
        self._output, self._at = b"", 0


def file_in_the_way(folder: str) -> str | None:
    """The file where ``folder`` is to be: the path itself or, locally, the nearest existing path
    above it, when that is not a folder (on GCS, an object of that name); None otherwise, or when
    it cannot be told now (the run then says what fails there)."""
    try:
        if "://" in folder:
            return folder.rstrip("/") if FileSystems.exists(folder.rstrip("/")) else None
        path = os.path.abspath(folder)
        while not os.path.exists(path) and path != os.path.dirname(path):
            path = os.path.dirname(path)
        return path if os.path.exists(path) and not os.path.isdir(path) else None
    except Exception:  # noqa: BLE001 - not reachable now
        return None


def literal(path: str) -> str:
    """``path`` as a glob that matches only itself: Beam's patterns have no escape character, so
    ``*``, ``?`` and ``[`` go in brackets (a listed path matched again: ``d[1]/`` is no folder ``d1/``)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def matched(pattern: str, limit: int | None = None) -> list:
    """Beam's match of one pattern: its files' metadata (path, size), at most ``limit`` of them,
    listing only the folders the pattern can reach (:mod:`transforms.listing`). A
    :func:`literal` holds ``[[]``, which Python's ``re`` reads as meant but warns of (a nested set,
    some later Python): not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Possible nested set", FutureWarning)
        return listing.match(pattern, limit)


def matches_any(pattern: str, paths: list[str]) -> bool:
    """Whether the glob ``pattern`` matches one of ``paths`` (as the listing matches them: ``*``
    stops at ``/``): would a glob have found files listed before? Failing that, whether it lists
    every one of them by name where it points now: a job folder moved (relative paths are resolved
    against the config's) moves the files with it, and was taken for segments edited since."""
    regex = re.compile(FileSystem.translate_pattern(pattern))
    if any(regex.match(path) for path in paths):
        return True
    names = {posixpath.basename(path) for path in paths}
    return bool(names) and names <= {posixpath.basename(path) for path in glob(pattern, missing_ok=True)}


def glob(pattern: str, missing_ok: bool = False, folders: bool = False) -> list[str]:
    """Sorted paths matching ``pattern``. With ``missing_ok``, a failed match (e.g. a folder that
    does not exist) is an empty list instead of an error. A GCS folder marker (a 0-byte object named
    ``folder/``, left by a console's "create folder") is no file, as a local folder is none: ``*``
    matched it, and an empty night folder was read as holding a dump named '' (listed ``folders``:
    what empties a folder deletes them too, as a local sub-folder goes). Nor is a local folder
    named by a path without wildcards (Beam matches it as itself; on gs:// it matches nothing): it
    was read as a dump, failing on a bare IsADirectoryError."""
    try:
        paths = sorted(m.path for m in matched(pattern) if folders or not m.path.endswith("/"))
    except Exception:  # noqa: BLE001 - only swallowed when asked to
        if missing_ok:
            return []
        raise
    if "://" not in pattern and not any(c in pattern for c in "*?["):
        return [path for path in paths if not os.path.isdir(path)]
    return paths


def listing_failure(exc: BaseException) -> str | None:
    """Why a listing failed (``exc``, raised by :func:`glob`), naming the folder: None when it is only
    'not found' (a folder or bucket that does not exist lists nothing)."""
    causes = list(exc.exception_details.values()) if getattr(exc, "exception_details", None) else [exc]
    if all(isinstance(c, FileNotFoundError) or getattr(c, "code", None) == 404 for c in causes):
        return None
    cause = next(c for c in causes if not isinstance(c, FileNotFoundError))
    code = getattr(cause, "errno", None)
    return f"{cause.filename}: {os.strerror(code)}" if code and getattr(cause, "filename", None) else type(cause).__name__


def one_file_twice(paths: list[str]) -> tuple[str, str] | None:
    """The first two of ``paths`` that are one file (a symbolic or hard link beside it), else None:
    read as two, its records would count twice. Local files by device and inode (a hard link has no
    other real path); objects on ``gs://`` by name."""
    seen: dict = {}
    for path in paths:
        first = seen.setdefault(_identity(path), path)
        if first != path:
            return first, path
    return None


def _identity(path: str):
    """A local file's (inode, device), a ``gs://`` object's name."""
    try:
        return path if "://" in path else os.stat(path)[1:3]
    except OSError:  # (gone, or a dangling link: its reader names it)
        return path


def folder_hint(pattern: str, typed: bool = False) -> str:
    """For a path that matched nothing: why, when it names a folder (a local one, or objects under it
    on gs://), and how to name its files; else ''. Such a path matches nothing (:func:`glob`), and
    'no file matches' named a path the operator saw right there (a Spark extract 'p.parquet/').
    ``typed``: files read by their extension (an extract): the glob keeps the folder name's, which
    leaves out a Spark folder's '_SUCCESS' and '.crc' files (a dump glob skips those itself)."""
    path = pattern.rstrip("/")
    if not path or path != pattern or any(c in path for c in "*?["):
        return ""
    try:
        folder = (os.path.isdir(path) if "://" not in path
                  else bool(matched(literal(path) + "/**", limit=1)))
    except Exception:  # noqa: BLE001 - only a hint: the line stands without it
        folder = False
    files = f"{path}/*{posixpath.splitext(path)[1] if typed else ''}"
    return f": it is a folder, not a file: name its files ('{files}')" if folder else ""


class MatchFiles(beam.DoFn):
    """A glob -> its files, sorted; no match fails the run naming the glob."""

    def __init__(self, what: str):
        self._what = what

    def process(self, pattern: str):
        paths = glob(pattern)
        if not paths:
            raise InputError(pattern, f"no {self._what} matches")
        yield from paths


def format_from_extension(path: str) -> str:
    name = path.lower()
    for ext in (".gz", ".bz2", ".zst"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".parquet") or name.endswith(".pq"):
        return "parquet"
    if name.endswith(".jsonl") or name.endswith(".ndjson") or name.endswith(".json"):
        return "jsonl"
    if path.endswith("/"):  # a folder's files: the basename was '' (the message named nothing)
        folder = posixpath.basename(path.rstrip("/")) + "/"
        raise ValueError(f"cannot tell the format of '{folder}' (a folder's files): name them with their extension "
                         f"('{folder}*.csv', '*.parquet', '*.jsonl') or set 'format'")
    raise ValueError(f"cannot tell the format of '{posixpath.basename(path)}': use .csv, .parquet or .jsonl, or set 'format'")
