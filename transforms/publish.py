"""An all-or-nothing publish of a run's outputs: the parts its writers made
(:mod:`transforms.write_parts`: deterministic Parquet parts, one per shard).

Publishing is the pipeline's last step, run once after every part is written: it builds and checks
the report (counts must add up), then replaces the previous outputs through a publish journal
(:mod:`transforms.publish_journal`), ``report.json`` last. ``report.json`` is the completion marker:
an output folder without it is not a finished run. ``report.html`` (the same report as a page,
:mod:`transforms.html_report`) is rendered before anything is staged and moves in just before
``report.json``: a finished run always has the page of its report.
"""
from __future__ import annotations

import json
import posixpath
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems

from transforms.code_version import check_worker_code, launcher_code
from transforms.config import JobConfig, ProfilesConfig
from transforms.control_files import check_control_files
from transforms.extract_copies import check_extract_copies
from transforms.dump_names import parse_dump_name
from transforms.html_report import PAGE, render_run
from transforms.outcomes import Counts, SumCounts
from transforms import publish_journal
from transforms.publish_journal import Journal, apply, commit, read_journal
from transforms.match_columns import check_match_columns
from transforms.profile_columns import check_address_numbers, check_profile_ids, check_visitor_entries
from transforms.report import build_report, check_report
from transforms.storage import glob, join_path
from transforms.write_parts import EMPTY_PART, write_parquet

REPORT = "report.json"
SUCCESS = "_SUCCESS"


def _list_files(folder: str) -> list[str]:
    return glob(join_path(folder, "*"), missing_ok=True)  # a missing folder lists nothing


def _json_bytes(doc: dict, **dumps) -> bytes:
    return (json.dumps(doc, **dumps) + "\n").encode("utf-8")


def publish_outputs(output_dir: str, run_dir: str, outputs: dict[str, pa.Schema | None], parts: list, report: dict,
                    manifest: dict | None = None) -> None:
    """Replace the outputs under ``output_dir`` with the run's parts, ``report.json`` last (with
    ``manifest``, the nightly ``_SUCCESS`` after it); see :mod:`transforms.publish_journal`.

    An output with a schema but no parts gets one empty Parquet part (a readable empty dataset); an
    output whose schema is ``None`` (plain files, like the export's onboarding files) is exactly the
    files the run wrote, possibly none. Anything else in the output folders is removed."""
    pending = read_journal(output_dir)
    if pending is not None:  # this publish step retried by the runner, or an earlier run's publish
        apply(output_dir, pending)
        if pending.run_dir == run_dir:
            return
    if _published_before(output_dir, run_dir, parts):
        return
    page = render_run(report)  # before anything is staged: a page that cannot be rendered publishes nothing
    files = {}
    for name, schema in outputs.items():
        mine = sorted(posixpath.basename(path) for n, path, _ in parts if n == name)
        if not mine and schema is not None:
            write_parquet(schema.empty_table(), join_path(run_dir, name, EMPTY_PART))
            mine = [EMPTY_PART]
        files[name] = mine
    publish_journal.write_file(join_path(run_dir, PAGE), page.encode("utf-8"), mime_type="text/html")
    publish_journal.write_file(join_path(run_dir, REPORT), _json_bytes(report, indent=2, sort_keys=False))
    markers = [PAGE, REPORT]
    if manifest is not None:
        publish_journal.write_file(join_path(run_dir, SUCCESS), manifest_bytes(run_dir, files, parts, manifest))
        markers.append(SUCCESS)
    commit(output_dir, Journal(run_dir=run_dir, files=files, markers=markers))


def _published_before(output_dir: str, run_dir: str, parts: list) -> bool:
    """Whether an earlier attempt of this publish step (the runner retried its bundle: a step fused
    after it failed, its worker was lost before reporting it) published these parts already: none
    is staged any more, every one is in its output folder, and no journal is left (the publish was
    applied whole, then its journal and run folder deleted). Published again, the run folder then
    held none of them: the nightly ``_SUCCESS`` listed no part, and the next night carried none of
    its rows."""
    if not parts:
        return False  # nothing but empty parts and markers: staged again, published again, the same
    mine = {(name, posixpath.basename(path)) for name, path, _ in parts}
    names = sorted({name for name, _ in mine})
    if mine & _listed(run_dir, names):  # one listing per output, not a look-up per part
        return False
    return mine <= _listed(output_dir, names)


def _listed(folder: str, names: list[str]) -> set[tuple[str, str]]:
    return {(name, posixpath.basename(path)) for name in names for path in _list_files(join_path(folder, name))}


def manifest_bytes(run_dir: str, files: dict[str, list[str]], parts: list, manifest: dict) -> bytes:
    """``_SUCCESS``, the partition's commit point: every file of the new version (``files``: output
    -> the names the run's parts carry, the empty part of an output without any; never a listing of
    the run folder) with its row count, size and sha256 (read back from storage), plus what the caller
    adds (config digest, code version, ...). A reader that sees it sees a complete partition."""
    import hashlib

    rows = {(name, posixpath.basename(path)): n for name, path, n in parts}  # outputs name their parts alike
    entries = []
    for name, names in files.items():
        for file in sorted(names):
            with FileSystems.open(join_path(run_dir, name, file)) as handle:
                data = handle.read()
            entries.append({"path": f"{name}/{file}", "rows": rows.get((name, file), 0),
                            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    for name in (PAGE, REPORT):
        with FileSystems.open(join_path(run_dir, name)) as handle:
            data = handle.read()
        entries.append({"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return _json_bytes({**manifest, "files": entries}, indent=2)


def check_extract(counts: Counts, sketches: list, profiles: ProfilesConfig, data_sources: list) -> None:
    """The checks judged over the whole extract (its files, its batches), before anything is published
    (import, nightly, export): visitor-ID entries, address and phone columns holding numbers' text, a
    profile id column of few values, two files of the
    same profiles (unless ``files_may_repeat_rows``), match columns of emails compared as written."""
    check_visitor_entries(counts, profiles)
    check_address_numbers(counts, profiles)
    check_profile_ids(counts, profiles)
    if not profiles.files_may_repeat_rows:
        check_extract_copies(sketches)
    check_match_columns(counts, data_sources, profiles)


class _Publish(beam.DoFn):
    def __init__(self, spec: "PublishRun"):
        self._cfg, self._output_dir, self._run_dir = spec.cfg, spec.output_dir, spec.run_dir
        self._outputs, self._run_date, self._manifest = spec.outputs, spec.run_date, spec.manifest
        self._check = spec.check
        self._code = launcher_code()  # checked on the worker

    def setup(self):
        check_worker_code(getattr(self, "_code", None))

    def process(self, _, parts, counts, files, controls, file_stats, diagnosis, sketches):
        check_control_files(controls, file_stats)  # before anything is published
        by_source: dict[str, list[dict]] = {}
        lines = {path: stats.lines for path, stats in file_stats}
        for name, path in sorted(files):
            by_source.setdefault(name, []).append(self._file_entry(name, path, lines.get(path)))
        counts = Counts(counts)
        check_extract(counts, sketches, self._cfg.profiles, self._cfg.data_sources)
        report = build_report(self._cfg, counts, by_source, self._run_date, diagnosis=dict(diagnosis))
        check_report(report, self._cfg)
        if self._check is not None:
            self._check(report, self._cfg, files, file_stats)
        publish_outputs(self._output_dir, self._run_dir, self._outputs, parts, report, self._manifest)
        yield report

    def _file_entry(self, name: str, path: str, lines: int | None) -> dict:
        """A dump in the report: its parsed name fields (a configured ``sync_mode`` wins) and the
        lines read of it (a destination whose full dumps hold none holds no member: night_guard)."""
        parsed = parse_dump_name(path)
        entry = {"path": path, **({"sync_mode": parsed.sync_mode, "timestamp_ms": parsed.timestamp_ms,
                                    "split": parsed.split} if parsed else {"name_parsed": False})}
        if lines is not None:
            entry["lines"] = lines
        configured = self._cfg.data_source(name).sync_mode
        if configured != "from_name":
            entry["sync_mode"] = configured
        return entry


class PublishInputs(NamedTuple):
    parts: beam.PCollection  # (output name, part path, rows)
    counts: beam.PCollection  # (Count, n)
    files: beam.PCollection  # (data_source, dump path)
    controls: beam.PCollection  # (control file, {dump: promised FileStats})
    file_stats: beam.PCollection  # (dump path, FileStats read)
    diagnosis: beam.PCollection  # (data_source, [finding]) from the mismatch diagnosis
    sketches: beam.PCollection  # per profile file, its FileSketch (transforms.extract_copies)


class PublishRun(beam.PTransform):
    """Once every part is written: build and check the report, then publish all or nothing. Takes
    :class:`PublishInputs`; ``manifest`` (nightly): the fields of the ``_SUCCESS`` file written last;
    ``check`` (nightly): ``check(report, cfg, files, file_stats)``, raising to refuse the publish."""

    def __init__(self, cfg: JobConfig, output_dir: str, run_dir: str, outputs: dict[str, pa.Schema], run_date: str | None = None,
                 manifest: dict | None = None, check=None):
        super().__init__()
        self.cfg, self.output_dir, self.run_dir, self.outputs = cfg, output_dir, run_dir, outputs
        self.run_date, self.manifest, self.check = run_date, manifest, check

    def expand(self, inputs: PublishInputs):
        summed = inputs.counts | "SumCounts" >> SumCounts()
        return (
            inputs.parts.pipeline
            | "Once" >> beam.Create([None])
            | "PublishOutputs" >> beam.ParDo(
                _Publish(self),
                beam.pvalue.AsList(inputs.parts),
                beam.pvalue.AsList(summed),
                beam.pvalue.AsList(inputs.files),
                beam.pvalue.AsList(inputs.controls),
                beam.pvalue.AsList(inputs.file_stats),
                beam.pvalue.AsList(inputs.diagnosis),
                beam.pvalue.AsList(inputs.sketches),
            )
        )
