"""Import shared audiences: segment dumps + profile extract -> reconciled audiences.

    audience-sync import --config job.yaml --output OUT_DIR [--run-date YYYY-MM-DD] [Beam flags...]
    python -m pipelines.import_audience --config job.yaml --output OUT_DIR [Beam flags...]

Outputs under OUT_DIR: ``reconciled/``, ``file_audience/``, ``rejected/`` (Parquet) and
``report.json`` (written last: its presence means the run completed), with ``report.html`` beside it
(the same report as a page). See the README.
"""
from __future__ import annotations

import argparse
import hashlib
import posixpath
import sys
from datetime import date, datetime, timezone

import apache_beam as beam

from pipelines import launch
from pipelines.flags import parse_job_args
from pipelines.options import split_dump_bytes
from transforms.config import JobConfig
from transforms.dumps import REJECTED_SCHEMA
from transforms.incremental import REMOVE, PreviousParts, PreviousState, merge_state
from transforms.night_guard import NightGuard
from transforms.report import check_deliveries
from transforms.join import FILE_AUDIENCE_BUCKET_BY, FILE_AUDIENCE_SCHEMA, MEMBERS_BUCKET_BY, MEMBERSHIP_SCHEMA
from transforms.key_cache import INCOMING, KeyCacheDirs, cache_dirs, staged
from transforms.key_cache_publish import PublishKeyCache
from transforms.outcomes import Metric
from transforms.output_lock import probe_writable
from transforms.preflight import check_inputs
from transforms.publish import REPORT, PublishInputs, PublishRun, join_path
from transforms.publish_journal import clean_leftovers
from transforms.reconcile import ReconcileAudiences
from transforms.storage import absolute
from transforms.summary import summary_lines
from transforms.suppression import ReadSuppressionLists, SuppressFileAudience
from transforms.write_parts import ADD, PROFILE_IDS, WriteParts

OUTPUTS = {
    "reconciled": MEMBERSHIP_SCHEMA,
    "file_audience": FILE_AUDIENCE_SCHEMA,
    "rejected": REJECTED_SCHEMA,
}


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="audience-sync import", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="job YAML (local path or gs://)")
    parser.add_argument("--output", required=True, help="output folder (local path or gs://)")
    launch.add_run_date(parser, "the clock for AES-GCM key validity")
    parser.add_argument("--key-cache", metavar="DIR", help="reuse the profile keys of unchanged profiles from DIR "
                        "(local or gs://), and save this run's there once it is published (README: Performance)")
    return parse_job_args(parser, argv)


def build_pipeline(p: beam.Pipeline, cfg: JobConfig, output: str, run_dir: str, run_date: date,
                   previous: str | None = None, incremental: bool = False, manifest: dict | None = None,
                   guard: NightGuard | None = None, key_cache: KeyCacheDirs | None = None,
                   previous_parts: dict[str, PreviousParts] | None = None,
                   undelivered: frozenset = frozenset()) -> None:
    """Wire the import graph onto ``p``. Reads nothing: all I/O happens when the pipeline runs.

    ``incremental`` (the nightly job): ``iter`` dumps' removals apply, and each audience is the
    ``previous`` partition's state updated with tonight's lines (``full`` dumps replace it; the
    nightly job passes no ``previous`` when tonight's dumps replace every data source);
    ``manifest``: fields of the ``_SUCCESS`` file written after ``report.json``; ``guard``: the
    night's shrink checks, run before anything is published (a one-off import: no empty delivery,
    :func:`check_deliveries`); ``key_cache``: profile keys reused
    from (and, once published, saved to) a key cache (:mod:`transforms.key_cache`);
    ``previous_parts``: the outputs whose ``previous`` parts the writers read shard by shard
    (:func:`transforms.incremental.previous_parts`); the others' are read whole and re-split;
    ``undelivered``: data sources whose dumps are not read tonight (:mod:`transforms.undelivered`)."""
    clock = datetime(run_date.year, run_date.month, run_date.day, tzinfo=timezone.utc)
    carries = incremental and previous is not None  # the previous memberships meet tonight's profile ids
    result = p | "Reconcile" >> ReconcileAudiences(cfg, clock, incremental=incremental, key_cache=key_cache,
                                                   split_bytes=split_dump_bytes(cfg, p.options), profile_ids=carries,
                                                   undelivered=undelivered)

    def state(name: str, keys: list[str], removals: beam.PCollection, replace: bool = False, profiles: bool = False,
              kept_by: list[str] | None = None):
        """Tonight's rows of one output; with ``incremental`` and a ``previous`` partition, merged
        with the previous state (``replace``: tonight's rows supersede the previous rows with their
        key; ``profiles``: previous rows of profiles no longer in the extract go; ``kept_by``: the
        data sources whose previous rows the output holds, the others' go). Without one,
        removals have nothing to remove: tonight's rows are the state, written as the import writes
        them (the local runner copies every input of a Flatten once more)."""
        additions = getattr(result, name)
        if not carries:
            return additions, {}
        tonight = (
            additions | f"Tag{name}Additions" >> beam.Map(lambda t: (ADD, t)),
            removals | f"Tag{name}Removals" >> beam.Map(lambda t: (REMOVE, t)),
        )
        if profiles:
            tonight += (result.profile_ids | f"Tag{name}ProfileIds" >> beam.Map(lambda t: (PROFILE_IDS, t)),)
        merge = {"merge": merge_state(keys, name, cfg, replace, profiles, kept_by),
                 "merge_side_inputs": (beam.pvalue.AsList(result.files),)}
        # Suppression lists filter the previous rows too, on their way to the writers: then they travel.
        direct = (previous_parts or {}).get(name) if not (name == "file_audience" and cfg.suppression) else None
        if direct is not None:
            return tonight | f"Flatten{name}State" >> beam.Flatten(), {**merge, "previous": direct}
        folder = join_path(previous, name)
        state = p | f"Previous{name}" >> PreviousState(folder, OUTPUTS[name], cfg, result.files)
        return (*tonight, state) | f"Flatten{name}State" >> beam.Flatten(), merge

    keys = ["data_source", "segment_id", "profile_id"]
    tables, merge = state("reconciled", keys, result.removed_members, profiles=True)
    reconciled = tables | "WriteReconciled" >> WriteParts(
        "reconciled", MEMBERSHIP_SCHEMA, keys, MEMBERS_BUCKET_BY, run_dir, cfg.buckets, threads=cfg.threads,
        dedupe=True, count_column="segment_id", count_metric=Metric.MEMBERS, **merge,
    )
    keys = ["data_source", "segment_id", "address"]
    tables, merge = state("file_audience", keys, result.file_audience_removed, replace=True,
                          kept_by=[ds.name for ds in cfg.data_sources if ds.keeps_file_audience])
    file_audience = suppress(p, cfg, tables) | "WriteFileAudience" >> WriteParts(
        "file_audience", FILE_AUDIENCE_SCHEMA, keys, FILE_AUDIENCE_BUCKET_BY, run_dir, cfg.buckets, threads=cfg.threads,
        dedupe=True, count_column="segment_id", count_metric=Metric.FILE_AUDIENCE_MEMBERS,
        withheld_metric=Metric.SUPPRESSED, **merge,
    )
    rejected = result.rejected | "WriteRejected" >> WriteParts(
        "rejected", REJECTED_SCHEMA, ["data_source", "source_file", "line"], "line", run_dir, cfg.buckets,
        threads=cfg.threads, dedupe=False, count_column="reason", count_metric=Metric.REJECTED,
    )
    written = (reconciled, file_audience, rejected)
    parts = tuple(w.parts for w in written) | "AllParts" >> beam.Flatten()
    counts = (result.counts, *(w.counts for w in written)) | "AllCounts" >> beam.Flatten()
    published = PublishInputs(parts, counts, result.files, result.controls, result.file_stats, result.diagnosis,
                              result.extract_sketches) | "Publish" >> PublishRun(
        cfg, output, run_dir, OUTPUTS, run_date.isoformat(), manifest, guard.before_publish if guard is not None else check_deliveries
    )
    if key_cache is not None:  # after the outputs: a failed run leaves the cache as it was
        _ = published | "PublishKeyCache" >> beam.ParDo(PublishKeyCache(key_cache), beam.pvalue.AsList(result.key_cache_parts))


def suppress(p: beam.Pipeline, cfg: JobConfig, tables: beam.PCollection) -> beam.PCollection:
    """The file-audience path through the suppression lists (when the config has any): a suppressed
    address is never written, tonight's or carried over (removals pass).

    A dump line whose address is suppressed still counts in its line category, ``file_audience``
    (where the line went: the line counts stay additive, ``received`` = the six categories); the
    entries withheld from ``file_audience/`` are counted apart, as ``suppressed``, by the writer
    (after the merge: an entry is counted once, however many rows stood for it)."""
    if not cfg.suppression:
        return tables
    lists = beam.pvalue.AsList(p | "Suppression" >> ReadSuppressionLists(cfg))
    return tables | "SuppressFileAudience" >> beam.ParDo(SuppressFileAudience(cfg, pass_tags=(REMOVE,)), lists)


def staging_prefix(output: str) -> str:
    """The start of the name of the folder where an import into ``output`` stages its key-cache parts
    (``DIR/_incoming/<prefix><run folder's name>/``): a digest of the output's path (a local one made
    absolute). The next run into ``output``, holding its lock, deletes its killed runs' by it: a run
    killed while it keyed profiles had staged parts, but had not made its run folder yet."""
    return hashlib.sha256(absolute(output).encode()).hexdigest()[:12] + "-"


def run(argv=None) -> dict:
    """Run the import; returns the report (``{"status": "staged"}`` when the runner only staged the
    job). Raises ConfigError / AudienceSyncError on failure."""
    known, beam_args = parse_args(argv)
    run_date = known.run_date or launch.today()
    job = launch.start(known.config, beam_args, lambda cfg: check_inputs(cfg, one_off=True, output=known.output,
                                                                  key_cache=known.key_cache),
                       paths={"--output": known.output, "--key-cache": known.key_cache})
    output = known.output.rstrip("/")
    run_dir = launch.new_run_dir(output)
    staging = staging_prefix(output) if known.key_cache else ""
    key_cache = cache_dirs(known.key_cache, staging + posixpath.basename(run_dir)) if known.key_cache else None
    with staged(key_cache), launch.hold(output, "import_audience", job.options) as held:
        if key_cache is not None and held is not None:  # what killed runs into it staged (held: none is live)
            clean_leftovers(join_path(known.key_cache, INCOMING), prefix=staging)
            probe_writable(key_cache.staging, what="the profile-key cache", named=f"--key-cache {known.key_cache}",
                           remedy=" (run without --key-cache to compute every key)")
        return launch.run_pipeline(job.options, run_dir, join_path(output, REPORT), lambda p: build_pipeline(
            p, job.cfg, output, run_dir, run_date, key_cache=key_cache), held=True)


def main(argv=None) -> int:
    return launch.run_job_cli(run, argv, summary_lines, page=lambda argv: launch.page_line(parse_args(argv)[0].output))


if __name__ == "__main__":
    sys.exit(main())
