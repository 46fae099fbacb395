"""Deterministic Parquet parts and an all-or-nothing publish of a run's outputs.

Each output is written by shard: rows are split by a stable hash into ``buckets`` groups, and each
group is deduplicated, sorted and written to ``part-BBBBB-of-NNNNN.parquet`` under the run's
temporary folder. The same input always gives the same files, whatever the runner's bundle order.

Publishing is the pipeline's last step, run once after every part is written: it builds and checks
the report (counts must add up), replaces the previous outputs, and writes ``report.json`` last.
``report.json`` is the completion marker: an output folder without it is not a finished run.
``report.html`` (the same report as a page, :mod:`transforms.html_report`) is rendered before anything
is touched and written just before ``report.json``: a finished run always has the page of its report.
"""
from __future__ import annotations

import json
import posixpath
from collections import deque
from typing import NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.arrow_utils import bucket_of, concat, count_by, sorted_rows, split_by_bucket
from transforms.config import JobConfig
from transforms.control_files import check_control_files
from transforms.dumps import parse_dump_name
from transforms.html_report import PAGE, render_run, write_page
from transforms.memory import release_free_memory
from transforms.outcomes import Counts, Metric, SumCounts, count
from transforms.parallel import PooledDoFn
from transforms.report import build_report, check_report
from transforms.storage import glob, join_path

REPORT = "report.json"
SUCCESS = "_SUCCESS"
ADD = "add"


def write_parquet(table: pa.Table, path: str) -> None:
    with FileSystems.create(path) as sink:
        pq.write_table(table, sink, compression="zstd")


class _SplitForWrite(beam.DoFn):
    """Table -> ``(bucket, (tag, rows))``; plain tables are tagged ``add``."""

    def __init__(self, bucket_column: str, buckets: int):
        self._column, self._buckets = bucket_column, buckets

    def process(self, element):
        tag, table = element if isinstance(element, tuple) else (ADD, element)
        for bucket, rows in split_by_bucket(table, bucket_of(table[self._column], self._buckets)):
            yield bucket, (tag, rows)


class _WritePart(PooledDoFn):
    """One shard's tables -> a sorted (deduplicated) Parquet part, plus its counts.

    With ``threads`` > 1, shards of a bundle are sorted and written in a small pool (Arrow's sort
    and Parquet writer run without the GIL), ``threads`` at a time: ``process`` hands a shard over
    and emits the outputs of the oldest finished one; ``finish_bundle`` emits the rest. The files do
    not depend on it, and the outputs (part paths, counts) are only summed or sorted downstream."""

    def __init__(self, spec: "WriteParts"):
        self._name, self._schema, self._sort_by, self._dedupe = spec.name, spec.schema, spec.sort_by, spec.dedupe
        self._run_dir, self._buckets = spec.run_dir, spec.buckets
        self._count_column, self._count_metric = spec.count_column, spec.count_metric
        self._merge = spec.merge
        self._threads = spec.threads

    def start_bundle(self):
        self._pending: deque = deque()

    def process(self, element, *side_inputs):
        side_inputs = tuple(list(s) for s in side_inputs)  # read here: pool threads never touch runner state
        if self._pool is None:
            yield from self._write(element, side_inputs)
        else:
            self._pending.append(self._pool.submit(self._write, element, side_inputs))
            while len(self._pending) > self._threads:
                yield from self._pending.popleft().result()

    def finish_bundle(self):
        while self._pending:
            for out in self._pending.popleft().result():
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, _in_global_window(out.value))
                else:
                    yield _in_global_window(out)
        release_free_memory()

    def _write(self, element, side_inputs) -> list:
        bucket, tagged = element
        by_tag: dict[str, list[pa.Table]] = {}
        for tag, rows in tagged:
            by_tag.setdefault(tag, []).append(rows)
        out = []
        if self._merge is None:
            table = concat(by_tag.get(ADD, []), self._schema)
        else:
            table, merge_counts = self._merge({tag: concat(t, self._schema) for tag, t in by_tag.items()}, *side_inputs)
            out.extend(merge_counts)
        table = sorted_rows(table, self._sort_by, dedupe=self._dedupe)
        path = join_path(self._run_dir, self._name, f"part-{bucket:05d}-of-{self._buckets:05d}.parquet")
        write_parquet(table, path)
        out.append(beam.pvalue.TaggedOutput(WriteParts.PARTS, (self._name, path, table.num_rows)))
        if self._count_column:
            for (data_source, value), n in count_by(table, ["data_source", self._count_column]):
                out.append(count(self._count_metric, n, data_source, value))
        return out


def _in_global_window(value) -> WindowedValue:
    """What finish_bundle must emit: the value in the global window (where a batch GroupByKey's
    outputs live), at its end."""
    return WindowedValue(value, GlobalWindow().max_timestamp(), (GlobalWindow(),))


class WrittenParts(NamedTuple):
    parts: beam.PCollection  # (output name, part path, rows)
    counts: beam.PCollection  # (Count, n): rows per data source and ``count_column`` value, and merge counts


class WriteParts(beam.PTransform):
    """Write a PCollection of Arrow tables as sorted, deduplicated Parquet shards of the output ``name``
    under ``run_dir``: rows are split by a stable hash of ``bucket_by`` into ``buckets`` parts, each
    sorted by ``sort_by`` (and de-duplicated with ``dedupe``). With ``count_column``, each part's rows
    are counted per data source and value of that column, as ``count_metric``.

    With ``merge``, elements are ``(tag, table)`` pairs and each shard's tables, grouped by tag, go
    through ``merge(tables_by_tag, *merge_side_inputs) -> (table, counts)`` before writing (the nightly
    job merges the previous state with tonight's adds and removals this way, in the same shuffle).
    """

    PARTS = "parts"

    def __init__(self, name: str, schema: pa.Schema, sort_by: list[str], bucket_by: str, run_dir: str,
                 buckets: int, dedupe: bool = True, count_column: str | None = None,
                 count_metric: Metric | None = None, merge=None, merge_side_inputs: tuple = (), threads: int = 1):
        super().__init__()
        self.name, self.schema, self.sort_by, self.bucket_by = name, schema, sort_by, bucket_by
        self.run_dir, self.buckets, self.dedupe = run_dir, buckets, dedupe
        self.count_column, self.count_metric = count_column, count_metric
        self.merge, self.merge_side_inputs, self.threads = merge, merge_side_inputs, threads

    def expand(self, tables) -> WrittenParts:
        written = (
            tables
            | "SplitByShard" >> beam.ParDo(_SplitForWrite(self.bucket_by, self.buckets))
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShards" >> beam.ParDo(_WritePart(self), *self.merge_side_inputs).with_outputs(self.PARTS, main="counts")
        )
        return WrittenParts(parts=written[self.PARTS], counts=written.counts)


def _exists(path: str) -> bool:
    return FileSystems.exists(path)


def _list_files(folder: str) -> list[str]:
    return glob(join_path(folder, "*"), missing_ok=True)  # a missing folder lists nothing


def _mkdirs(path: str) -> None:
    if "://" in path:
        return  # object stores have no folders
    try:
        FileSystems.mkdirs(path)
    except OSError:
        pass  # already there


def publish_outputs(output_dir: str, run_dir: str, outputs: dict[str, pa.Schema | None], parts: list, report: dict) -> None:
    """Replace the outputs under ``output_dir`` with the run's parts; ``report.json`` goes last.

    An output with a schema but no parts gets one empty Parquet part (a readable empty dataset); an
    output whose schema is ``None`` (plain files, like the export's onboarding files) is exactly the
    files the run wrote, possibly none."""
    page = render_run(report)  # before anything is touched: a page that cannot be rendered publishes nothing
    report_path = join_path(output_dir, REPORT)
    if _exists(report_path):
        FileSystems.delete([report_path])  # from here on the folder no longer looks complete
    for name, schema in outputs.items():
        final_dir = join_path(output_dir, name)
        stale = _list_files(final_dir)
        if stale:
            FileSystems.delete(stale)
        _mkdirs(final_dir)
        mine = sorted(path for n, path, _ in parts if n == name)
        if mine:
            FileSystems.rename(mine, [join_path(final_dir, posixpath.basename(p)) for p in mine])
        elif schema is not None:
            write_parquet(schema.empty_table(), join_path(final_dir, "part-00000-of-00001.parquet"))
    write_page(join_path(output_dir, PAGE), page)
    with FileSystems.create(report_path, mime_type="application/json") as sink:
        sink.write((json.dumps(report, indent=2, sort_keys=False) + "\n").encode("utf-8"))
    leftovers = _list_files(run_dir) + [f for n in outputs for f in _list_files(join_path(run_dir, n))]
    if leftovers:
        FileSystems.delete(leftovers)
    remove_run_dir(run_dir)


def remove_run_dir(run_dir: str) -> None:
    """Delete a run's temporary folder and anything in it (best effort)."""
    if "://" in run_dir:
        files = glob(join_path(run_dir, "**"), missing_ok=True)
        if files:
            FileSystems.delete(files)
        return
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


def write_manifest(output_dir: str, outputs: dict, parts: list, manifest: dict) -> None:
    """Write ``_SUCCESS``, the partition's commit point: every published file with its row count,
    size and sha256 (read back from storage), plus what the caller adds (config digest, code
    version, ...). A reader that sees it sees a complete partition."""
    import hashlib

    rows = {posixpath.basename(path): (name, n) for name, path, n in parts}
    files = []
    for name in outputs:
        for path in _list_files(join_path(output_dir, name)):
            with FileSystems.open(path) as handle:
                data = handle.read()
            files.append({"path": f"{name}/{posixpath.basename(path)}", "rows": rows.get(posixpath.basename(path), (name, 0))[1],
                          "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    for name in (PAGE, REPORT):
        with FileSystems.open(join_path(output_dir, name)) as handle:
            data = handle.read()
        files.append({"path": name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    doc = {**manifest, "files": files}
    with FileSystems.create(join_path(output_dir, SUCCESS), mime_type="application/json") as sink:
        sink.write((json.dumps(doc, indent=2) + "\n").encode("utf-8"))


class _Publish(beam.DoFn):
    def __init__(self, spec: "PublishRun"):
        self._cfg, self._output_dir, self._run_dir = spec.cfg, spec.output_dir, spec.run_dir
        self._outputs, self._run_date, self._manifest = spec.outputs, spec.run_date, spec.manifest

    def process(self, _, parts, counts, files, controls, file_stats, diagnosis):
        check_control_files(controls, file_stats)  # before anything is published
        by_source: dict[str, list[dict]] = {}
        for name, path in sorted(files):
            parsed = parse_dump_name(path)
            entry = {"path": path, **({"sync_mode": parsed.sync_mode, "timestamp_ms": parsed.timestamp_ms,
                                        "split": parsed.split} if parsed else {"name_parsed": False})}
            by_source.setdefault(name, []).append(entry)
        report = build_report(self._cfg, Counts(counts), by_source, self._run_date, diagnosis=dict(diagnosis))
        check_report(report, self._cfg)
        success = join_path(self._output_dir, SUCCESS)
        if self._manifest is not None and _exists(success):
            FileSystems.delete([success])  # un-publish first: a reader never sees a mix
        publish_outputs(self._output_dir, self._run_dir, self._outputs, parts, report)
        if self._manifest is not None:
            write_manifest(self._output_dir, self._outputs, parts, self._manifest)
        yield report


class PublishInputs(NamedTuple):
    parts: beam.PCollection  # (output name, part path, rows)
    counts: beam.PCollection  # (Count, n)
    files: beam.PCollection  # (data_source, dump path)
    controls: beam.PCollection  # (control file, {dump: promised FileStats})
    file_stats: beam.PCollection  # (dump path, FileStats read)
    diagnosis: beam.PCollection  # (data_source, [finding]) from the mismatch diagnosis


class PublishRun(beam.PTransform):
    """Once every part is written: build and check the report, then publish all or nothing. Takes
    :class:`PublishInputs`; ``manifest`` (nightly): the fields of the ``_SUCCESS`` file written last."""

    def __init__(self, cfg: JobConfig, output_dir: str, run_dir: str, outputs: dict[str, pa.Schema], run_date: str | None = None,
                 manifest: dict | None = None):
        super().__init__()
        self.cfg, self.output_dir, self.run_dir, self.outputs = cfg, output_dir, run_dir, outputs
        self.run_date, self.manifest = run_date, manifest

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
            )
        )
