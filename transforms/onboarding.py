"""The platform's inbound files (formats.md section 3): what an export sends, byte for byte.

- Names: ``ftp_dpm_<DPID>_<UNIX_SECONDS>.sync.gz``, or ``.sync.<N>.gz`` (N from 1) when the lines are
  split over several files, plus one ``ftp_dpm_<DPID>_<UNIX_SECONDS>.info`` control file.
- Lines: ``<USER_ID>\\t<trait>\\n``, the trait being ``d_sid=N`` (a segment id) or
  ``"segment"="<audience>"``; user IDs sorted and de-duplicated over the whole export.
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


@dataclass(frozen=True)
class FileNames:
    """The names of one export's files, from the data source's DPID and the run's UNIX seconds."""

    dpid: int
    timestamp: int

    @property
    def stem(self) -> str:
        return f"ftp_dpm_{self.dpid}_{self.timestamp}"

    def data_file(self, sequence: int, n_files: int) -> str:
        """``<stem>.sync.gz``, or ``<stem>.sync.<N>.gz`` (N from 1) when split."""
        return f"{self.stem}.sync.gz" if n_files == 1 else f"{self.stem}.sync.{sequence}.gz"

    @property
    def control_file(self) -> str:
        return f"{self.stem}.info"


def usable_user_ids(values: pa.Array) -> pa.Array:
    """True where a user ID can go into an onboarding line: non-empty, no whitespace/control chars."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    present = pc.and_(pc.is_valid(values), pc.greater(pc.fill_null(pc.utf8_length(values), 0), 0))
    clean = pc.invert(pc.fill_null(pc.match_substring_regex(values, _BAD_USER_ID), True))
    return pc.and_(present, clean)


def line_bytes(user_ids: pa.Array, trait: str) -> bytes:
    """``<USER_ID>\\t<trait>\\n`` for every ID, as one UTF-8 buffer (one Arrow kernel, no per-row Python)."""
    lines = pc.binary_join_element_wise(user_ids, pa.scalar(f"\t{trait}\n"), "")
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


def write_onboarding_file(path: str, user_ids: pa.Array, trait: str) -> tuple[int, str]:
    """Write one gzip data file (no name, mtime 0: same lines, same bytes). Returns (bytes, md5)."""
    from apache_beam.io.filesystem import CompressionTypes

    # The compression type must be explicit: Beam would otherwise gzip a '.gz' path a second time.
    with FileSystems.create(path, mime_type="application/gzip", compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        sink = _CountingSink(raw)
        with gzip.GzipFile(filename="", mode="wb", fileobj=sink, compresslevel=6, mtime=0) as gz:
            for start in range(0, len(user_ids), WRITE_CHUNK_LINES):
                gz.write(line_bytes(user_ids.slice(start, WRITE_CHUNK_LINES), trait))
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


class SplitIntoFiles(beam.DoFn):
    """All user IDs to send (one group of ``user_id`` tables) -> de-duplicated, sorted, cut into
    ``(sequence, n_files, ids)`` of at most ``max_lines`` IDs; the line count goes to ``COUNTS``."""

    COUNTS = "counts"

    def __init__(self, max_lines: int):
        self._max_lines = max_lines

    def process(self, element):
        _, tables = element
        ids = concat([t.select(["user_id"]) for t in tables], pa.schema([("user_id", pa.string())]))["user_id"]
        ids = pc.unique(ids.combine_chunks())
        ids = pc.take(ids, pc.sort_indices(ids))
        yield beam.pvalue.TaggedOutput(self.COUNTS, count(Metric.LINES, len(ids)))
        n_files = -(-len(ids) // self._max_lines)
        for k in range(n_files):
            # A compact copy per file (a slice would pickle its parent's whole buffers).
            part = pc.take(ids, pa.array(np.arange(k * self._max_lines, min((k + 1) * self._max_lines, len(ids)))))
            yield k + 1, n_files, part


class WriteOnboardingFile(beam.DoFn):
    """``(sequence, n_files, ids)`` -> one gzip data file in ``folder``, described as
    ``{"name", "path", "sequence", "lines", "bytes", "md5"}``. A file of 1 GB or more fails the run."""

    def __init__(self, names: FileNames, trait: str, folder: str):
        self._names, self._trait, self._folder = names, trait, folder

    def setup(self):
        self._lines = runner_counter("onboarding_lines_written")

    def process(self, element):
        sequence, n_files, ids = element
        name = self._names.data_file(sequence, n_files)
        path = join_path(self._folder, name)
        size, md5 = write_onboarding_file(path, ids, self._trait)
        if size >= MAX_FILE_BYTES:
            raise RunFailed(f"{name}: {size} bytes compressed, over the platform's 1 GB limit; "
                            "lower --max-lines-per-file. Nothing was published")
        self._lines.inc(len(ids))
        yield {"name": name, "path": path, "sequence": sequence, "lines": len(ids), "bytes": size, "md5": md5}
