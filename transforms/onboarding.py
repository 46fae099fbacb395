"""The platform's inbound files (formats.md section 3): what an export sends, byte for byte.

- Names: ``ftp_dpm_<DPID>[_<TARGET_DPID>]_<UNIX_SECONDS>.sync.gz`` (``.overwrite.gz`` in overwrite
  mode), or ``.sync.<N>.gz`` (N from 1) when the lines are split over several files, plus one
  ``ftp_dpm_<DPID>[_<TARGET_DPID>]_<UNIX_SECONDS>.info`` control file. ``TARGET_DPID`` is the data
  source's ``target_dpid`` (required for the global device-ID data sources 20914 and 20915).
- Lines: ``<USER_ID>\\t<trait>,<trait>...\\n``, traits such as ``d_sid=N`` (add), ``d_unsid=N``
  (remove) or ``"segment"="<audience>"``; one line per user ID (its traits combined on it, so the
  platform's 200-lines-per-user limit is never near), sorted over the whole export.
- Files: gzip (no name, mtime 0: the same lines give the same bytes), at most ``max_lines_per_file``
  lines each, each under 1 GB compressed (checked as written: over it, the run fails).
- The ``.info`` control file: per data file its name, sequence, line count, byte size and MD5, then
  the totals.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import concat
from transforms.errors import RunFailed
from transforms.outcomes import Metric, runner_counter, count
from transforms.storage import join_path

DEFAULT_MAX_LINES_PER_FILE = 5_000_000
MAX_FILE_BYTES = 1 << 30  # formats.md section 3: keep each compressed file under 1 GB
WRITE_CHUNK_LINES = 1 << 18

# A user ID goes between the start of a line and a tab: no whitespace or control character at all
# (the platform's dumps are space-separated, so such an ID could never come back either).
_BAD_USER_ID = r"[\p{Cc}\p{Z}\s]"
# Audience names go inside "segment"="..." : no quote, comma, backslash or control character.
_AUDIENCE_NAME = re.compile(r'^[^",\\\x00-\x1f\x7f]+$')


def valid_audience_name(name: str) -> bool:
    """Whether ``name`` can go inside ``"segment"="..."``: non-empty, not padded, no quote, comma,
    backslash or control character."""
    return bool(name) and name == name.strip() and bool(_AUDIENCE_NAME.match(name))


def trait(audience: str, segment_id: int | None) -> str:
    """What each line adds: ``d_sid=N`` with a segment id, else ``"segment"="<audience>"``."""
    if segment_id is not None:
        return f"d_sid={segment_id}"
    return f'"segment"="{audience}"'


def untrait(segment_id: int | None) -> str | None:
    """What removes the audience from a user in a ``.sync`` file: ``d_unsid=N``; a key-value
    audience has no id, hence no removal (None)."""
    return None if segment_id is None else f"d_unsid={segment_id}"


@dataclass(frozen=True)
class FileNames:
    """The names of one export's files, from the data source's DPID (and target DPID), the run's
    UNIX seconds and the kind of file (``sync`` or ``overwrite``)."""

    dpid: int
    timestamp: int
    target_dpid: int | None = None
    kind: str = "sync"

    @property
    def stem(self) -> str:
        target = "" if self.target_dpid is None else f"_{self.target_dpid}"
        return f"ftp_dpm_{self.dpid}{target}_{self.timestamp}"

    def data_file(self, sequence: int, n_files: int) -> str:
        """``<stem>.<kind>.gz``, or ``<stem>.<kind>.<N>.gz`` (N from 1) when split."""
        return f"{self.stem}.{self.kind}.gz" if n_files == 1 else f"{self.stem}.{self.kind}.{sequence}.gz"

    @property
    def control_file(self) -> str:
        return f"{self.stem}.info"


def usable_user_ids(values: pa.Array) -> pa.Array:
    """True where a user ID can go into an onboarding line: non-empty, no whitespace/control chars."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    present = pc.and_(pc.is_valid(values), pc.greater(pc.fill_null(pc.utf8_length(values), 0), 0))
    clean = pc.invert(pc.fill_null(pc.match_substring_regex(values, _BAD_USER_ID), True))
    return pc.and_(present, clean)


def line_bytes(user_ids: pa.Array, traits) -> bytes:
    """``<USER_ID>\\t<traits>\\n`` for every ID (``traits``: one string for all, or an array), as one
    UTF-8 buffer (one Arrow kernel, no per-row Python)."""
    traits = pa.scalar(traits) if isinstance(traits, str) else traits
    lines = pc.binary_join_element_wise(user_ids, pa.scalar("\t"), traits, pa.scalar("\n"), "")
    lines = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    if len(lines) == 0:
        return b""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)[lines.offset : lines.offset + len(lines) + 1]
    return lines.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


class _CountingSink:
    """Pass-through writer that measures what is written: size and MD5 of the file as stored."""

    def __init__(self, sink):
        self._sink, self.size, self._md5 = sink, 0, hashlib.md5()

    def write(self, data) -> int:
        self._sink.write(data)
        self._md5.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()


def write_onboarding_file(path: str, user_ids: pa.Array, traits) -> tuple[int, str]:
    """Write one gzip data file (no name, mtime 0: same lines, same bytes). Returns (bytes, md5)."""
    from apache_beam.io.filesystem import CompressionTypes

    # The compression type must be explicit: Beam would otherwise gzip a '.gz' path a second time.
    with FileSystems.create(path, mime_type="application/gzip", compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        sink = _CountingSink(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=6, mtime=0) as gz:
            for start in range(0, len(user_ids), WRITE_CHUNK_LINES):
                chunk = traits if isinstance(traits, str) else traits.slice(start, WRITE_CHUNK_LINES)
                gz.write(line_bytes(user_ids.slice(start, WRITE_CHUNK_LINES), chunk))
    return sink.size, sink.md5


def control_document(files: list[dict]) -> dict:
    """The ``.info`` control file: per data file name, sequence, lines, bytes, md5; then the totals."""
    entries = [
        {"FileName": f["name"], "FileSequenceNumber": f["sequence"], "FileLineCount": f["lines"],
         "FileByteSize": f["bytes"], "md5": f["md5"]}
        for f in sorted(files, key=lambda f: f["sequence"])
    ]
    return {
        "Files": entries,
        "Totals": {
            "TotalNumberFiles": len(entries),
            "TotalNumberLines": sum(e["FileLineCount"] for e in entries),
            "TotalByteSize": sum(e["FileByteSize"] for e in entries),
        },
    }


def write_control_file(path: str, files: list[dict]) -> None:
    """Write the ``.info`` control file of the data files ``files`` (as :class:`WriteOnboardingFile` describes them)."""
    with FileSystems.create(path, mime_type="application/json") as sink:
        sink.write((json.dumps(control_document(files), indent=2) + "\n").encode("utf-8"))


LINE_SCHEMA = pa.schema([("user_id", pa.string()), ("traits", pa.string())])


class SplitIntoFiles(beam.DoFn):
    """All lines to send (one group of :data:`LINE_SCHEMA` tables, one line per user ID) -> sorted by
    user ID and cut into ``(sequence, n_files, lines)`` of at most ``max_lines`` lines; the line count
    goes to ``COUNTS``. Two lines for one user ID would be an internal error: the run fails."""

    COUNTS = "counts"

    def __init__(self, max_lines: int):
        self._max_lines = max_lines

    def process(self, element):
        _, tables = element
        lines = concat(list(tables), LINE_SCHEMA).sort_by([("user_id", "ascending")])
        ids = lines["user_id"].combine_chunks()
        if len(ids) > 1 and pc.any(pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py():
            raise RunFailed("export: two lines for one user ID (internal check); nothing was published")
        yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.LINES, len(ids)))
        n_files = -(-len(ids) // self._max_lines)
        for k in range(n_files):
            # A compact copy per file (a slice would pickle its parent's whole buffers).
            part = lines.take(pa.array(np.arange(k * self._max_lines, min((k + 1) * self._max_lines, len(ids)))))
            yield k + 1, n_files, part


class WriteOnboardingFile(beam.DoFn):
    """``(sequence, n_files, lines)`` -> one gzip data file in ``folder``, described as
    ``{"name", "path", "sequence", "lines", "bytes", "md5"}``. A file of 1 GB or more fails the run."""

    def __init__(self, names: FileNames, folder: str):
        self._names, self._folder = names, folder

    def setup(self):
        self._lines = runner_counter("onboarding_lines_written")

    def process(self, element):
        sequence, n_files, lines = element
        name = self._names.data_file(sequence, n_files)
        path = join_path(self._folder, name)
        size, md5 = write_onboarding_file(path, lines["user_id"].combine_chunks(), lines["traits"].combine_chunks())
        if size >= MAX_FILE_BYTES:
            raise RunFailed(f"{name}: {size} bytes compressed, over the platform's 1 GB limit; "
                            "lower --max-lines-per-file. Nothing was published")
        self._lines.inc(lines.num_rows)
        yield {"name": name, "path": path, "sequence": sequence, "lines": lines.num_rows, "bytes": size, "md5": md5}
