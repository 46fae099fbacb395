"""The export: targeted profiles -> the platform's onboarding files (formats.md sections 3 and 6).

A user's targeting result (a list of profile ids) is matched with the profile extract, and every
targeted profile ends in exactly one outcome:

==================  ===============================================================================
``unknown_profile``  the id is not in the extract
``opted_out``        the profile is opted out: never exported, whatever the targets or the existing
                     audience say
``unmapped``         no usable ID for the data source (listed in ``unmapped/``)
``already_present``  every (profile, user ID) pair is already in the existing export(s)
``exported``         at least one new (profile, user ID) pair is sent (listed in ``exported/``)
==================  ===============================================================================

The user ID a data source shares a profile by: its visitor IDs (``id_type: visitor``, one line per
valid 38-digit ID), or its declared ID (``match_on``): as is (plain, or encrypted with channel
other), normalized + SHA-256 + the digest encoding (hashed), or normalized + encrypted (encrypted,
channel email/sms; see :class:`CbcEncryptor` and :class:`GcmEncryptor`).

Elements are Arrow tables. Targets are few next to the profile base: a Bloom filter of their ids
(a side input) drops non-targeted profiles, and existing-export rows of other profiles, before
anything is shuffled; targets, candidate profiles and existing pairs then meet in one ``GroupByKey``
per shard of ``profile_id`` (duplicates of an id always land in the same shard, so they are counted
exactly), where Arrow kernels classify them. The user IDs to send are gathered once, de-duplicated,
sorted and cut into numbered files; each file is gzip-compressed (mtime 0) by its own worker.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.arrow_utils import KeyFilter, buckets_from_hash, concat, distinct, hash64, split_by_bucket
from transforms.config import ConfigError, DataSourceConfig, JobConfig, format_from_extension
from transforms.crypto import build_encryptor
from transforms.errors import InputError, RunFailed
from transforms.keys import profile_keys
from transforms.join_inputs import BuildKeyFilter
from transforms.preflight import profile_column_problems
from transforms.storage import MatchFiles, glob
from transforms.profiles import needed_columns, read_profiles, read_schema_names
from transforms.publish import REPORT, WriteParts, join_path, publish_outputs

NAMESPACE = "audience_sync"

EXPORTED, UNMAPPED, ONBOARDING = "exported", "unmapped", "onboarding"
EXPORTED_SCHEMA = pa.schema([("profile_id", pa.string()), ("user_id", pa.string())])
UNMAPPED_SCHEMA = pa.schema([("profile_id", pa.string())])
TARGET_SCHEMA = pa.schema([("profile_id", pa.string())])
# A targeted profile as read from the extract: one row per extract row (user_id null), plus one row
# per usable user ID (opt_out false). A profile is opted out when any of its rows says so.
CANDIDATE_SCHEMA = pa.schema([("profile_id", pa.string()), ("opt_out", pa.bool_()), ("user_id", pa.string())])
TARGETS_COLUMN = "profile_id"

# Every distinct target id is counted in exactly one of these.
OUTCOMES = ("exported", "already_present", "unmapped", "opted_out", "unknown_profile")
# Every row of the targets file(s) is a distinct target, a duplicate of one, or a blank id.
TARGET_ROWS = ("targets", "duplicate_target_rows", "blank_target_ids")

DEFAULT_MAX_LINES_PER_FILE = 5_000_000
MAX_FILE_BYTES = 1 << 30  # formats.md section 3: keep each compressed file under 1 GB
WRITE_CHUNK_LINES = 1 << 18

COUNTS = "counts"
TARGET_HASHES = "target_hashes"
TARGET_SIDE, PROFILE_SIDE, EXISTING_SIDE = "t", "p", "e"

# A user ID goes between the start of a line and a tab: no whitespace or control character at all
# (the platform's dumps are space-separated, so such an ID could never come back either).
_BAD_USER_ID = r"[\p{Cc}\p{Z}\s]"
# Audience names go inside "segment"="..." : no quote, comma, backslash or control character.
_AUDIENCE_NAME = re.compile(r'^[^",\\\x00-\x1f\x7f]+$')


def _counter(name: str):
    return Metrics.counter(NAMESPACE, name)


# ----------------------------------------------------------------------------------------------------
# What is exported, and how the files are named
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportSpec:
    """Everything about one export that is not the job config: picklable, no key material."""

    audience: str
    data_source: DataSourceConfig
    run_date: date
    segment_id: int | None = None
    max_lines_per_file: int = DEFAULT_MAX_LINES_PER_FILE

    @property
    def clock(self) -> datetime:
        """The run's clock: UTC midnight of the run date (never the wall clock)."""
        return datetime(self.run_date.year, self.run_date.month, self.run_date.day, tzinfo=timezone.utc)

    @property
    def timestamp(self) -> int:
        return int(self.clock.timestamp())

    @property
    def trait(self) -> str:
        """What each line adds: ``d_sid=N`` with a segment id, else ``"segment"="<audience>"``."""
        if self.segment_id is not None:
            return f"d_sid={self.segment_id}"
        return f'"segment"="{self.audience}"'

    @property
    def stem(self) -> str:
        return f"ftp_dpm_{self.data_source.dpid}_{self.timestamp}"

    def data_file_name(self, sequence: int, n_files: int) -> str:
        """``ftp_dpm_<DPID>_<UNIX_SECONDS>.sync.gz``, or ``.sync.<N>.gz`` (N from 1) when split."""
        return f"{self.stem}.sync.gz" if n_files == 1 else f"{self.stem}.sync.{sequence}.gz"

    @property
    def control_file_name(self) -> str:
        return f"{self.stem}.info"


def check_audience_name(name: str) -> str:
    if not name or name != name.strip() or not _AUDIENCE_NAME.match(name):
        raise ConfigError(
            "--audience: must be non-empty, without leading/trailing spaces, quotes, commas, "
            "backslashes or control characters"
        )
    return name


def export_spec(cfg: JobConfig, audience: str, data_source: str | None, run_date: date,
                segment_id: int | None = None, max_lines_per_file: int | None = None) -> ExportSpec:
    """Resolve the export's data source and settings (flags first, then the config's ``export:``)."""
    section = cfg.export
    name = data_source or (section.data_source if section else None)
    if name is None:
        if len(cfg.data_sources) != 1:
            raise ConfigError(
                "--data-source: name the data source to share through (or set export.data_source); "
                f"configured: {', '.join(ds.name for ds in cfg.data_sources)}"
            )
        name = cfg.data_sources[0].name
    try:
        ds = cfg.data_source(name)
    except KeyError:
        raise ConfigError(
            f"--data-source: '{name}' is not a configured data source "
            f"(configured: {', '.join(d.name for d in cfg.data_sources)})"
        ) from None
    if segment_id is not None and segment_id <= 0:
        raise ConfigError("--segment-id: must be a positive integer")
    max_lines = max_lines_per_file or (section.max_lines_per_file if section else DEFAULT_MAX_LINES_PER_FILE)
    if max_lines < 1:
        raise ConfigError("--max-lines-per-file: must be at least 1")
    return ExportSpec(check_audience_name(audience), ds, run_date, segment_id, max_lines)


def export_config(cfg: JobConfig, spec: ExportSpec) -> JobConfig:
    """The job config narrowed to the exported data source: the extract is read for its columns only."""
    return cfg.model_copy(update={"data_sources": [spec.data_source]})


# ----------------------------------------------------------------------------------------------------
# Pure table functions
# ----------------------------------------------------------------------------------------------------
def usable_user_ids(values: pa.Array) -> pa.Array:
    """True where a user ID can go into an onboarding line: non-empty, no whitespace/control chars."""
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    present = pc.and_(pc.is_valid(values), pc.greater(pc.fill_null(pc.utf8_length(values), 0), 0))
    clean = pc.invert(pc.fill_null(pc.match_substring_regex(values, _BAD_USER_ID), True))
    return pc.and_(present, clean)


def user_ids(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, encryptor=None) -> pa.Table:
    """``(profile_id, user_id)``: the IDs the data source shares each profile by, usable ones only."""
    keyed, _ = profile_keys(profiles, ds, cfg)
    ids = keyed["key"].combine_chunks()
    if encryptor is not None:
        ids = encryptor.encrypt(ids)
    ok = usable_user_ids(ids)
    return pa.table({"profile_id": pc.filter(keyed["profile_id"], ok), "user_id": pc.filter(ids, ok)},
                    schema=EXPORTED_SCHEMA)


def candidate_rows(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, encryptor=None) -> pa.Table:
    """Standardized profile rows -> :data:`CANDIDATE_SCHEMA`. User IDs are computed (hashed,
    encrypted) for profiles that are not opted out only."""
    opt_out = pc.fill_null(profiles["opt_out"], True)
    base = pa.table({"profile_id": profiles["profile_id"], "opt_out": opt_out,
                     "user_id": pa.nulls(profiles.num_rows, pa.string())}, schema=CANDIDATE_SCHEMA)
    pairs = user_ids(profiles.filter(pc.invert(opt_out)), ds, cfg, encryptor)
    pairs = pa.table({"profile_id": pairs["profile_id"], "opt_out": pa.repeat(pa.scalar(False), pairs.num_rows),
                      "user_id": pairs["user_id"]}, schema=CANDIDATE_SCHEMA)
    return concat([base, pairs], CANDIDATE_SCHEMA)


def _unique(values) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    return pc.unique(values)


def _count(mask) -> int:
    return int(pc.sum(pc.cast(mask, pa.int64())).as_py() or 0)


def classify(targets: pa.Table, candidates: pa.Table, existing: pa.Table) -> tuple[pa.Table, pa.Table, dict]:
    """Classify one shard's targets. ``targets``: :data:`TARGET_SCHEMA` rows (non-blank, possibly
    repeated); ``candidates``: :data:`CANDIDATE_SCHEMA`; ``existing``: :data:`EXPORTED_SCHEMA` pairs of
    previous exports. Returns ``(pairs to send, unmapped profile ids, counts)``; the counts hold
    :data:`OUTCOMES` (summing to ``targets``, the distinct ids), ``duplicate_target_rows``,
    ``pairs_sent`` and ``opted_out_in_existing``."""
    rows = targets[TARGETS_COLUMN].combine_chunks()
    ids = _unique(rows)
    cand = candidates.filter(pc.is_in(candidates["profile_id"], value_set=ids))  # drop Bloom false positives
    known = pc.is_in(ids, value_set=_unique(cand["profile_id"]))
    opted_ids = _unique(cand.filter(cand["opt_out"])["profile_id"])
    opted = pc.is_in(ids, value_set=opted_ids)
    eligible = pc.filter(ids, pc.and_(known, pc.invert(opted)))

    pairs = cand.filter(pc.and_(pc.is_valid(cand["user_id"]), pc.is_in(cand["profile_id"], value_set=eligible)))
    pairs = distinct(pairs.select(["profile_id", "user_id"]))
    mapped = _unique(pairs["profile_id"])
    unmapped = pc.filter(eligible, pc.invert(pc.is_in(eligible, value_set=mapped)))

    previous = existing.select(["profile_id", "user_id"]).cast(EXPORTED_SCHEMA)
    if previous.num_rows and pairs.num_rows:
        new = pairs.join(previous, keys=["profile_id", "user_id"], join_type="left anti", use_threads=False)
    else:
        new = pairs
    new = new.select(["profile_id", "user_id"]).cast(EXPORTED_SCHEMA)
    sent_profiles = len(_unique(new["profile_id"]))
    counts = {
        "targets": len(ids),
        "duplicate_target_rows": len(rows) - len(ids),
        "unknown_profile": _count(pc.invert(known)),
        "opted_out": _count(opted),
        "unmapped": len(unmapped),
        "already_present": len(mapped) - sent_profiles,
        "exported": sent_profiles,
        "pairs_sent": new.num_rows,
        "opted_out_in_existing": _count(pc.is_in(opted_ids, value_set=_unique(previous["profile_id"])))
        if previous.num_rows else 0,
    }
    return new, pa.table({"profile_id": unmapped}, schema=UNMAPPED_SCHEMA), counts


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


# ----------------------------------------------------------------------------------------------------
# Reading inputs
# ----------------------------------------------------------------------------------------------------
def targets_format(path: str) -> str:
    fmt = format_from_extension(path)
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"targets must be .csv or .parquet files, not '{fmt}'")
    return fmt


def read_targets(path: str) -> Iterator[pa.Array]:
    """Yield the ``profile_id`` column of a targets file (CSV with a header, or Parquet) as strings."""
    fmt = targets_format(path)
    try:
        with FileSystems.open(path) as handle:
            if fmt == "parquet":
                pf = pq.ParquetFile(handle)
                if TARGETS_COLUMN not in pf.schema_arrow.names:
                    raise InputError(path, f"no '{TARGETS_COLUMN}' column")
                for batch in pf.iter_batches(batch_size=1 << 20, columns=[TARGETS_COLUMN]):
                    yield _strings(batch.column(0))
            else:
                yield from _csv_targets(handle, path)
    except InputError:
        raise
    except (pa.ArrowInvalid, OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"cannot read the targets ({type(exc).__name__})") from None


def _strings(values) -> pa.Array:
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    return values if pa.types.is_string(values.type) else values.cast(pa.string())


def _csv_targets(handle, path: str) -> Iterator[pa.Array]:
    bad_rows: list[int | None] = []

    def on_invalid(row) -> str:
        bad_rows.append(row.number)
        return "skip"

    try:
        reader = pacsv.open_csv(
            handle,
            read_options=pacsv.ReadOptions(block_size=16 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(include_columns=[TARGETS_COLUMN],
                                                 column_types={TARGETS_COLUMN: pa.string()}),
        )
    except (pa.ArrowInvalid, KeyError):
        raise InputError(path, f"no '{TARGETS_COLUMN}' column") from None
    for batch in reader:
        if bad_rows:
            break
        yield _strings(batch.column(0))
    if bad_rows:
        raise InputError(path, "wrong number of columns", line=bad_rows[0])


def _shards(table: pa.Table, buckets: int, side: str):
    hashes = hash64(table["profile_id"])
    for bucket, rows in split_by_bucket(table, buckets_from_hash(hashes, buckets)):
        yield bucket, (side, rows)


class ReadTargetFile(beam.DoFn):
    """One targets file -> shards ``(bucket, ("t", ids))``, the ids' hashes (for the Bloom filter) and
    counts. Blank ids (null or empty) are counted ``blank_target_ids`` and dropped."""

    def __init__(self, buckets: int):
        self._buckets = buckets

    def setup(self):
        self._rows = _counter("target_rows")

    def process(self, path: str):
        for ids in read_targets(path):
            self._rows.inc(len(ids))
            blank = pc.fill_null(pc.equal(pc.utf8_length(ids), 0), True)
            kept = pc.filter(ids, pc.invert(blank))
            yield beam.pvalue.TaggedOutput(COUNTS, ("target_rows", len(ids)))
            yield beam.pvalue.TaggedOutput(COUNTS, ("blank_target_ids", len(ids) - len(kept)))
            if len(kept):
                table = pa.table({TARGETS_COLUMN: kept}, schema=TARGET_SCHEMA)
                yield beam.pvalue.TaggedOutput(TARGET_HASHES, hash64(kept))
                yield from _shards(table, self._buckets, TARGET_SIDE)


class ReadTargetedProfiles(beam.DoFn):
    """One profile extract -> shards ``(bucket, ("p", candidate rows))`` of the profiles the Bloom
    filter says may be targeted, with their user IDs for the data source (hashed/encrypted here, for
    those profiles only). Key material is loaded in setup()."""

    def __init__(self, cfg: JobConfig, spec: ExportSpec, buckets: int):
        self._cfg, self._spec, self._buckets = cfg, spec, buckets

    def setup(self):
        self._encryptor = build_encryptor(self._spec.data_source, self._spec.clock)
        self._read = _counter("profiles_read")

    def process(self, path: str, target_filter: KeyFilter):
        column = self._cfg.profiles.opt_out
        if column not in read_schema_names(path, self._cfg.profiles.resolved_format):
            # standardize() would read a missing column as "nobody opted out": never for an export.
            raise InputError(path, f"no opt-out column '{column}' in this extract")
        for profiles in read_profiles(path, self._cfg):
            self._read.inc(profiles.num_rows)
            yield beam.pvalue.TaggedOutput(COUNTS, ("profiles_read", profiles.num_rows))
            keep = target_filter.might_contain(hash64(profiles["profile_id"]))
            if keep.any():
                rows = candidate_rows(profiles.filter(pa.array(keep)), self._spec.data_source, self._cfg, self._encryptor)
                yield from _shards(rows, self._buckets, PROFILE_SIDE)


class ReadExistingPart(beam.DoFn):
    """One Parquet part of a previous export's ``exported/`` -> shards ``(bucket, ("e", pairs))`` of
    the targeted profiles (per the Bloom filter)."""

    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, path: str, target_filter: KeyFilter):
        try:
            with FileSystems.open(path) as handle:
                pf = pq.ParquetFile(handle)
                for batch in pf.iter_batches(batch_size=1 << 20, columns=["profile_id", "user_id"]):
                    table = pa.Table.from_batches([batch]).cast(EXPORTED_SCHEMA)
                    yield beam.pvalue.TaggedOutput(COUNTS, ("existing_pairs_read", table.num_rows))
                    keep = target_filter.might_contain(hash64(table["profile_id"]))
                    if keep.any():
                        yield from _shards(table.filter(pa.array(keep)), self._buckets, EXISTING_SIDE)
        except (pa.ArrowInvalid, OSError, ValueError, KeyError) as exc:
            raise InputError(path, f"cannot read the existing export ({type(exc).__name__})") from None


class ClassifyShard(beam.DoFn):
    """One shard: targets, candidate profiles and existing pairs -> pairs to send (main), unmapped ids
    and counts."""

    def process(self, element):
        _bucket, tagged = element
        sides = {TARGET_SIDE: [], PROFILE_SIDE: [], EXISTING_SIDE: []}
        for side, table in tagged:
            sides[side].append(table)
        if not sides[TARGET_SIDE]:
            return
        sent, unmapped, counts = classify(
            concat(sides[TARGET_SIDE], TARGET_SCHEMA),
            concat(sides[PROFILE_SIDE], CANDIDATE_SCHEMA),
            concat(sides[EXISTING_SIDE], EXPORTED_SCHEMA),
        )
        for name, n in counts.items():
            yield beam.pvalue.TaggedOutput(COUNTS, (name, n))
        if unmapped.num_rows:
            yield beam.pvalue.TaggedOutput(UNMAPPED, unmapped)
        if sent.num_rows:
            yield sent


class SplitIntoFiles(beam.DoFn):
    """All user IDs to send (one group) -> de-duplicated, sorted, cut into ``(sequence, n_files, ids)``."""

    def __init__(self, max_lines: int):
        self._max_lines = max_lines

    def process(self, element):
        _, tables = element
        ids = concat([t.select(["user_id"]) for t in tables], pa.schema([("user_id", pa.string())]))["user_id"]
        ids = pc.unique(ids.combine_chunks())
        ids = pc.take(ids, pc.sort_indices(ids))
        yield beam.pvalue.TaggedOutput(COUNTS, ("lines", len(ids)))
        n_files = -(-len(ids) // self._max_lines)
        for k in range(n_files):
            # A compact copy per file (a slice would pickle its parent's whole buffers).
            part = pc.take(ids, pa.array(np.arange(k * self._max_lines, min((k + 1) * self._max_lines, len(ids)))))
            yield k + 1, n_files, part


class WriteOnboardingFile(beam.DoFn):
    def __init__(self, spec: ExportSpec, run_dir: str):
        self._spec, self._run_dir = spec, run_dir

    def setup(self):
        self._lines = _counter("onboarding_lines_written")

    def process(self, element):
        sequence, n_files, ids = element
        name = self._spec.data_file_name(sequence, n_files)
        path = join_path(self._run_dir, ONBOARDING, name)
        size, md5 = write_onboarding_file(path, ids, self._spec.trait)
        if size >= MAX_FILE_BYTES:
            raise RunFailed(f"{name}: {size} bytes compressed, over the platform's 1 GB limit; "
                            "lower --max-lines-per-file. Nothing was published")
        self._lines.inc(len(ids))
        yield {"name": name, "path": path, "sequence": sequence, "lines": len(ids), "bytes": size, "md5": md5}


# ----------------------------------------------------------------------------------------------------
# Report and publish
# ----------------------------------------------------------------------------------------------------
def build_export_report(spec: ExportSpec, counts: dict, files: list[dict], targets: str, existing: list[str]) -> dict:
    ds = spec.data_source
    c = {k: int(v) for k, v in counts.items()}
    files = sorted(files, key=lambda f: f["sequence"])
    return {
        "job": "export",
        "run_date": spec.run_date.isoformat(),
        "audience": spec.audience,
        "segment": spec.trait,
        "data_source": ds.name,
        "dpid": ds.dpid,
        "id_type": ds.id_type if ds.id_type == "visitor" else f"declared/{ds.declared}",
        "targets_path": targets,
        "existing": list(existing),
        "profiles_read": c.get("profiles_read", 0),
        "target_rows": c.get("target_rows", 0),
        "blank_target_ids": c.get("blank_target_ids", 0),
        "duplicate_target_rows": c.get("duplicate_target_rows", 0),
        "targets": c.get("targets", 0),
        **{k: c.get(k, 0) for k in OUTCOMES},
        "opted_out_in_existing": c.get("opted_out_in_existing", 0),
        "existing_pairs_read": c.get("existing_pairs_read", 0),
        "pairs_sent": c.get("pairs_sent", 0),
        "lines": c.get("lines", 0),
        "nothing_to_send": not files,
        "files": [{k: f[k] for k in ("name", "sequence", "lines", "bytes", "md5")} for f in files],
        "control_file": spec.control_file_name if files else None,
    }


def check_export_report(report: dict) -> None:
    """Raise :class:`RunFailed` unless every target row and every distinct target is accounted for once
    and the files hold exactly the lines to send."""
    rows = sum(report[k] for k in TARGET_ROWS)
    if rows != report["target_rows"]:
        raise RunFailed(f"export counts do not add up: {report['target_rows']} target rows, accounted for {rows}")
    outcomes = sum(report[k] for k in OUTCOMES)
    if outcomes != report["targets"]:
        raise RunFailed(f"export counts do not add up: {report['targets']} targets, accounted for {outcomes}")
    in_files = sum(f["lines"] for f in report["files"])
    if in_files != report["lines"] or (report["lines"] > 0) != (report["exported"] > 0):
        raise RunFailed(f"export files hold {in_files} lines, expected {report['lines']}")


class _PublishExport(beam.DoFn):
    def __init__(self, spec: ExportSpec, output_dir: str, run_dir: str, targets: str, existing: list[str]):
        self._spec, self._output_dir, self._run_dir = spec, output_dir, run_dir
        self._targets, self._existing = targets, existing

    def process(self, _, parts, counts, files):
        report = build_export_report(self._spec, dict(counts), files, self._targets, self._existing)
        check_export_report(report)
        parts = list(parts)
        if files:
            for f in files:
                parts.append((ONBOARDING, f["path"], f["lines"]))
            info = join_path(self._run_dir, ONBOARDING, self._spec.control_file_name)
            with FileSystems.create(info, mime_type="application/json") as sink:
                sink.write((json.dumps(control_document(files), indent=2) + "\n").encode("utf-8"))
            parts.append((ONBOARDING, info, 0))
        outputs = {EXPORTED: EXPORTED_SCHEMA, UNMAPPED: UNMAPPED_SCHEMA, ONBOARDING: None}
        publish_outputs(self._output_dir, self._run_dir, outputs, parts, report)
        yield report


class ExportAudience(beam.PTransform):
    """The whole export graph from a pipeline root; publishes under ``output_dir`` at the end."""

    def __init__(self, cfg: JobConfig, spec: ExportSpec, targets: str, existing: list[str], output_dir: str, run_dir: str):
        super().__init__()
        self._cfg, self._spec = export_config(cfg, spec), spec
        self._targets, self._existing = targets, list(existing)
        self._output_dir, self._run_dir = output_dir, run_dir

    def expand(self, root):
        cfg, spec, buckets = self._cfg, self._spec, self._cfg.buckets
        targets = (
            root
            | "ListTargetFiles" >> beam.Create([self._targets])
            | "MatchTargetFiles" >> beam.ParDo(MatchFiles("targets file"))
            | "SpreadTargetFiles" >> beam.Reshuffle()
            | "ReadTargets" >> beam.ParDo(ReadTargetFile(buckets)).with_outputs(COUNTS, TARGET_HASHES, main="shards")
        )
        target_filter = beam.pvalue.AsSingleton(
            targets[TARGET_HASHES] | "BuildTargetFilter" >> beam.CombineGlobally(BuildKeyFilter())
        )
        profiles = (
            root
            | "ListProfileExtracts" >> beam.Create([cfg.profiles.path])
            | "MatchProfileFiles" >> beam.ParDo(MatchFiles("profile extract"))
            | "SpreadProfileFiles" >> beam.Reshuffle()
            | "ReadTargetedProfiles" >> beam.ParDo(ReadTargetedProfiles(cfg, spec, buckets), target_filter)
            .with_outputs(COUNTS, main="shards")
        )
        existing = (
            root
            | "ListExistingExports" >> beam.Create([join_path(d, EXPORTED, "*.parquet") for d in self._existing])
            | "MatchExistingParts" >> beam.ParDo(MatchFiles("existing export part"))
            | "SpreadExistingParts" >> beam.Reshuffle()
            | "ReadExisting" >> beam.ParDo(ReadExistingPart(buckets), target_filter).with_outputs(COUNTS, main="shards")
        )
        classified = (
            (targets.shards, profiles.shards, existing.shards)
            | "FlattenShards" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "ClassifyTargets" >> beam.ParDo(ClassifyShard()).with_outputs(COUNTS, UNMAPPED, main="sent")
        )
        exported = classified.sent | "WriteExported" >> WriteParts(
            EXPORTED, EXPORTED_SCHEMA, ["profile_id", "user_id"], "profile_id", self._run_dir, buckets, dedupe=True,
            threads=cfg.threads)
        unmapped = classified[UNMAPPED] | "WriteUnmapped" >> WriteParts(
            UNMAPPED, UNMAPPED_SCHEMA, ["profile_id"], "profile_id", self._run_dir, buckets, dedupe=True,
            threads=cfg.threads)
        split = (
            classified.sent
            | "KeyUserIds" >> beam.Map(lambda table: (0, table.select(["user_id"])))
            | "GatherUserIds" >> beam.GroupByKey()
            | "SortAndSplit" >> beam.ParDo(SplitIntoFiles(spec.max_lines_per_file)).with_outputs(COUNTS, main="files")
        )
        files = (
            split.files
            | "SpreadFiles" >> beam.Reshuffle()
            | "WriteOnboardingFiles" >> beam.ParDo(WriteOnboardingFile(spec, self._run_dir))
        )
        parts = (exported.parts, unmapped.parts) | "AllParts" >> beam.Flatten()
        counts = (
            (targets[COUNTS], profiles[COUNTS], existing[COUNTS], classified[COUNTS], split[COUNTS])
            | "AllCounts" >> beam.Flatten()
            | "SumCounts" >> beam.CombinePerKey(sum)
        )
        return (
            root
            | "Once" >> beam.Create([None])
            | "PublishExport" >> beam.ParDo(
                _PublishExport(spec, self._output_dir, self._run_dir, self._targets, self._existing),
                beam.pvalue.AsList(parts), beam.pvalue.AsList(counts), beam.pvalue.AsList(files),
            )
        )


# ----------------------------------------------------------------------------------------------------
# Launcher checks
# ----------------------------------------------------------------------------------------------------
def check_export_inputs(cfg: JobConfig, spec: ExportSpec, targets: str, existing: list[str]) -> None:
    """Raise :class:`ConfigError` (one line per problem) when the export cannot run as asked. Reads
    headers, previous reports and (once, to fail early; never printed) the data source's keys."""
    problems: list[str] = []
    ecfg = export_config(cfg, spec)
    index = [ds.name for ds in cfg.data_sources].index(spec.data_source.name)
    if not cfg.profiles.opt_out:
        problems.append("profiles.opt_out: the export needs the opt-out column (opted-out profiles are never exported)")
    problems += profile_column_problems(ecfg, needed_columns(ecfg))
    target_files = glob(targets, missing_ok=True)
    if not target_files:
        problems.append(f"--targets: no file matches '{targets}'")
    for path in target_files:
        try:
            fmt = targets_format(path)
            if TARGETS_COLUMN not in read_schema_names(path, fmt):
                problems.append(f"--targets: {path}: no '{TARGETS_COLUMN}' column")
        except (InputError, OSError, ValueError) as exc:
            problems.append(f"--targets: {path}: {exc}")
    for folder in existing:
        problems += [f"--existing {folder}: {p}" for p in _existing_problems(folder, spec)]
    if spec.data_source.decrypts:
        from transforms.crypto import KeyMaterialError

        try:
            build_encryptor(spec.data_source, spec.clock)
        except KeyMaterialError as exc:
            problems.append(f"data_sources[{index}].encryption: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))


def _existing_problems(folder: str, spec: ExportSpec) -> list[str]:
    report_path = join_path(folder.rstrip("/"), REPORT)
    try:
        with FileSystems.open(report_path) as handle:
            previous = json.loads(handle.read())
    except Exception:  # noqa: BLE001 - one line, whatever went wrong
        return [f"no readable {REPORT}: not a finished export run"]
    if not isinstance(previous, dict) or previous.get("job") != "export":
        return [f"{REPORT} is not an export report"]
    problems = []
    if previous.get("data_source") != spec.data_source.name or previous.get("dpid") != spec.data_source.dpid:
        problems.append(f"exported through data source '{previous.get('data_source')}', "
                        f"not '{spec.data_source.name}': its user IDs are not comparable")
    if previous.get("segment") != spec.trait:
        problems.append("exported with another segment (audience name or --segment-id differ)")
    if not glob(join_path(folder.rstrip("/"), EXPORTED, "*.parquet"), missing_ok=True):
        problems.append(f"no {EXPORTED}/ Parquet parts")
    return problems


def summary_lines(report: dict) -> list[str]:
    """The export's summary on the command line: counts and file names only, never an ID."""
    if report.get("status") == "staged":
        return ["job staged (built and submitted, or written as a template): no report until it runs"]
    out = [
        f"export '{report['audience']}' through {report['data_source']} (dpid {report['dpid']}, {report['id_type']}): "
        f"targets={report['targets']} exported={report['exported']} already_present={report['already_present']} "
        f"unmapped={report['unmapped']} opted_out={report['opted_out']} unknown_profile={report['unknown_profile']} "
        f"| target rows={report['target_rows']} duplicates={report['duplicate_target_rows']} "
        f"blank={report['blank_target_ids']}",
    ]
    if report["nothing_to_send"]:
        out.append("onboarding: nothing to send, no data file written")
    else:
        names = ", ".join(f["name"] for f in report["files"])
        out.append(f"onboarding: {report['lines']} line(s) in {len(report['files'])} file(s): {names} "
                   f"+ {report['control_file']}")
    return out
