"""Import shared audiences: segment dumps + profile extract -> reconciled audiences.

    audience-sync import --config job.yaml --output OUT_DIR [--run-date YYYY-MM-DD] [Beam flags...]
    python -m pipelines.import_audience --config job.yaml --output OUT_DIR [Beam flags...]

Outputs under OUT_DIR: ``reconciled/``, ``file_audience/``, ``rejected/`` (Parquet) and
``report.json`` (written last: its presence means the run completed). See the README.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import date, datetime, timezone

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from pipelines.cli import run_job_cli
from pipelines.options import STAGED, keep_elements_out_of_logs, only_stages, pipeline_options, warn_about_worker_keys
from transforms.config import JobConfig, load_config
from transforms.preflight import check_inputs
from transforms.incremental import REMOVE, PreviousState, merge_state
from transforms.publish import ADD, REPORT, PublishRun, WriteParts, join_path, remove_run_dir
from transforms.reconcile import (
    FILE_AUDIENCE_REMOVED,
    FILE_AUDIENCE_SCHEMA,
    MEMBERSHIP_SCHEMA,
    REMOVED_MEMBERS,
    ReconcileAudiences,
)
from transforms.dumps import REJECTED_SCHEMA

OUTPUTS = {
    "reconciled": MEMBERSHIP_SCHEMA,
    "file_audience": FILE_AUDIENCE_SCHEMA,
    "rejected": REJECTED_SCHEMA,
}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="audience-sync import", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="job YAML (local path or gs://)")
    parser.add_argument("--output", required=True, help="output folder (local path or gs://)")
    parser.add_argument(
        "--run-date",
        "--run_date",  # the spelling Flex Template parameters arrive with
        dest="run_date",
        type=date.fromisoformat,
        default=None,
        help="the run's date (YYYY-MM-DD; default: today, UTC). Its UTC midnight is the clock for "
        "AES-GCM key validity; the pipeline never reads the clock itself",
    )
    return parser.parse_known_args(argv)


def build_pipeline(p: beam.Pipeline, cfg: JobConfig, output: str, run_dir: str, run_date: date,
                   previous: str | None = None, incremental: bool = False, manifest: dict | None = None) -> None:
    """Wire the import graph onto ``p``. Reads nothing: all I/O happens when the pipeline runs.

    ``incremental`` (the nightly job): ``iter`` dumps' removals apply, and each audience is the
    ``previous`` partition's state updated with tonight's lines (``full`` dumps replace it);
    ``manifest``: fields of the ``_SUCCESS`` file written after ``report.json``."""
    clock = datetime(run_date.year, run_date.month, run_date.day, tzinfo=timezone.utc)
    result = p | "Reconcile" >> ReconcileAudiences(cfg, clock, incremental=incremental)

    def state(name: str, schema, keys: list[str], removals_tag: str):
        """Tonight's rows of one output; with ``incremental``, merged with the previous state."""
        if not incremental:
            return result[name], {}
        folder = join_path(previous, name) if previous else None
        tagged = (
            result[name] | f"Tag{name}Additions" >> beam.Map(lambda t: (ADD, t)),
            result[removals_tag] | f"Tag{name}Removals" >> beam.Map(lambda t: (REMOVE, t)),
            p | f"Previous{name}" >> PreviousState(folder),
        ) | f"Flatten{name}State" >> beam.Flatten()
        merge = {"merge": merge_state(keys, name), "merge_side_inputs": (beam.pvalue.AsList(result["files"]),)}
        return tagged, merge

    tables, merge = state("reconciled", MEMBERSHIP_SCHEMA, ["data_source", "segment_id", "profile_id"], REMOVED_MEMBERS)
    reconciled = tables | "WriteReconciled" >> WriteParts(
        "reconciled", MEMBERSHIP_SCHEMA, ["data_source", "segment_id", "profile_id"], "profile_id",
        run_dir, cfg.buckets, threads=cfg.threads, dedupe=True, count_column="segment_id", count_prefix="members", **merge,
    )
    tables, merge = state("file_audience", FILE_AUDIENCE_SCHEMA, ["data_source", "segment_id", "address"], FILE_AUDIENCE_REMOVED)
    file_audience = tables | "WriteFileAudience" >> WriteParts(
        "file_audience", FILE_AUDIENCE_SCHEMA, ["data_source", "segment_id", "address"], "address",
        run_dir, cfg.buckets, threads=cfg.threads, dedupe=True, count_column="segment_id", count_prefix="file_audience_members", **merge,
    )
    rejected = result["rejected"] | "WriteRejected" >> WriteParts(
        "rejected", REJECTED_SCHEMA, ["data_source", "source_file", "line"], "line",
        run_dir, cfg.buckets, threads=cfg.threads, dedupe=False, count_column="reason", count_prefix="reason",
    )
    parts = (reconciled["parts"], file_audience["parts"], rejected["parts"]) | "AllParts" >> beam.Flatten()
    counts = (
        result["counts"], reconciled["counts"], file_audience["counts"], rejected["counts"]
    ) | "AllCounts" >> beam.Flatten()
    _ = (parts, counts, result["files"], result["controls"], result["file_stats"]) | "Publish" >> PublishRun(
        cfg, output, run_dir, OUTPUTS, run_date.isoformat(), manifest
    )


def run(argv=None) -> dict:
    """Run the import; returns the report. Raises ConfigError / AudienceSyncError on failure."""
    known, beam_args = parse_args(argv)
    run_date = known.run_date or datetime.now(timezone.utc).date()
    keep_elements_out_of_logs()
    cfg = load_config(known.config)
    check_inputs(cfg)
    options = pipeline_options(beam_args)
    warn_about_worker_keys(cfg, options)
    output = known.output.rstrip("/")
    run_dir = join_path(output, f"_incomplete-{uuid.uuid4().hex[:12]}")
    try:
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, cfg, output, run_dir, run_date)
    except BaseException:
        remove_run_dir(run_dir)  # nothing of a failed run stays behind
        raise
    if only_stages(options):
        return dict(STAGED)  # the job was built/staged, not run: no report yet
    with FileSystems.open(join_path(output, REPORT)) as handle:
        return json.loads(handle.read())


def main(argv=None) -> int:
    return run_job_cli(run, argv)


if __name__ == "__main__":
    sys.exit(main())
