"""Export an audience: targeted profiles -> the platform's onboarding files for one data source.

    audience-sync export --config job.yaml --audience NAME --targets TARGETS --output OUT_DIR
        [--existing PREVIOUS_EXPORT_DIR ...] [--data-source NAME] [--segment-id N]
        [--max-lines-per-file N] [--run-date YYYY-MM-DD] [Beam flags...]
    python -m pipelines.export_audience ...   (same flags)

Outputs under OUT_DIR: ``onboarding/`` (gzip data files + ``.info`` control file), ``exported/`` and
``unmapped/`` (Parquet) and ``report.json`` (written last: its presence means the run completed).
See the README and :mod:`transforms.export`.
"""
from __future__ import annotations

import argparse
import sys

import apache_beam as beam

from pipelines import launch
from transforms.config import JobConfig
from transforms.export import ExportAudience, ExportSpec, export_config, export_spec
from transforms.export_report import summary_lines
from transforms.preflight import check_export_inputs
from transforms.publish import REPORT, join_path


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="audience-sync export", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="job YAML (local path or gs://)")
    parser.add_argument("--audience", required=True, help="the audience (segment) name sent on every line")
    parser.add_argument("--targets", required=True,
                        help="the targeted profiles: CSV (header) or Parquet file(s) with a 'profile_id' column; "
                        "local path, glob or gs://")
    parser.add_argument("--output", required=True, help="output folder (local path or gs://)")
    parser.add_argument("--existing", action="append", default=[], metavar="PREVIOUS_EXPORT_DIR",
                        help="a previous export of this audience: its exported/ pairs are not sent again "
                        "(repeat the flag for several)")
    parser.add_argument("--data-source", default=None,
                        help="the data source to share through (default: the config's export.data_source, "
                        "or its only data source)")
    parser.add_argument("--segment-id", type=_positive_int, default=None,
                        help="send 'd_sid=N' on every line instead of '\"segment\"=\"<audience>\"'")
    parser.add_argument("--max-lines-per-file", type=_positive_int, default=None,
                        help="split the data into numbered files of at most N lines "
                        "(default: export.max_lines_per_file, or 5000000)")
    launch.add_run_date(parser, "the files' timestamp and the clock for AES-GCM keys")
    return parser.parse_known_args(argv)


def build_pipeline(p: beam.Pipeline, cfg: JobConfig, spec: ExportSpec, targets: str, existing: list[str],
                   output: str, run_dir: str) -> None:
    """Wire the export graph onto ``p``. Reads nothing: all I/O happens when the pipeline runs."""
    _ = p | "Export" >> ExportAudience(cfg, spec, targets, existing, output, run_dir)


def run(argv=None) -> dict:
    """Run the export; returns the report (``{"status": "staged"}`` when the runner only staged the
    job). Raises ConfigError / AudienceSyncError on failure."""
    known, beam_args = parse_args(argv)
    run_date = known.run_date or launch.today()
    existing = [folder.rstrip("/") for folder in known.existing]
    checked = {}

    def preflight(cfg: JobConfig) -> JobConfig:
        spec = checked["spec"] = export_spec(cfg, known.audience, known.data_source, run_date, known.segment_id,
                                             known.max_lines_per_file)
        check_export_inputs(cfg, spec, known.targets, existing)
        return export_config(cfg, spec)

    job = launch.start(known.config, beam_args, preflight)
    output = known.output.rstrip("/")
    run_dir = launch.new_run_dir(output)
    return launch.run_pipeline(job.options, run_dir, join_path(output, REPORT), lambda p: build_pipeline(
        p, job.cfg, checked["spec"], known.targets, existing, output, run_dir))


def main(argv=None) -> int:
    return launch.run_job_cli(run, argv, summary_lines, page=lambda argv: launch.page_line(parse_args(argv)[0].output))


if __name__ == "__main__":
    sys.exit(main())
