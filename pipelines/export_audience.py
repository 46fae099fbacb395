"""Export an audience: targeted profiles -> the platform's onboarding files for one data source.

    audience-sync export --config job.yaml --audience NAME --targets TARGETS --output OUT_DIR
        [--state ROOT | --existing PREVIOUS_EXPORT_DIR ...] [--mode sync|overwrite]
        [--data-source NAME] [--segment-id N] [--max-lines-per-file N] [--allow-shrink] [--run-date YYYY-MM-DD]
        [Beam flags...]
    python -m pipelines.export_audience ...   (same flags)

Outputs under OUT_DIR: ``onboarding/`` (gzip data files + ``.info`` control file), ``exported/``,
``removed/`` and ``unmapped/`` (Parquet) and ``report.json`` (written last: its presence means the
run completed); with ``--state ROOT``, the audience's new export state, committed after them.
See the README and :mod:`transforms.export`.
"""
from __future__ import annotations

import argparse
import contextlib
import posixpath
import sys
from urllib.parse import unquote

import apache_beam as beam

from pipelines import launch
from pipelines.flags import parse_job_args
from pipelines.options import pipeline_options
from transforms.config import JobConfig
from transforms.errors import RunFailed
from transforms.export import ExportAudience
from transforms.export_others import strippable
from transforms.export_report import summary_lines
from transforms.export_paths import audience_dir
from transforms.export_spec import MODES, ExportSpec, export_config, export_spec
from transforms.export_state import (
    PENDING,
    ExportState,
    StateVersion,
    audience_folders,
    published_uncommitted,
)
from transforms.output_lock import LockHeld, LockNotCreated
from transforms.preflight_export import check_export_inputs
from transforms.publish import REPORT, join_path
from transforms.publish_journal import remove_run_dir
from transforms.storage import absolute


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="audience-sync export", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="job YAML (local path or gs://)")
    parser.add_argument("--audience", required=True, help="the audience (segment) name sent on every line")
    parser.add_argument("--targets", required=True,
                        help="the targeted profiles: CSV (header) or Parquet file(s) with a 'profile_id' column; "
                        "local path, glob or gs://")
    parser.add_argument("--output", required=True, help="output folder (local path or gs://)")
    parser.add_argument("--state", default=None, metavar="ROOT",
                        help="the export state root (local or gs://): adds and removals are computed against what "
                        "the platform holds for this data source and audience, and the new state is committed after "
                        "the files")
    parser.add_argument("--existing", action="append", default=[], metavar="PREVIOUS_EXPORT_DIR",
                        help="instead of --state: a previous export of this audience (repeat the flag for several, "
                        "oldest first); what they sent and removed is what the platform holds")
    parser.add_argument("--mode", choices=MODES, default="sync",
                        help="sync (default): .sync files adding new members (d_sid) and removing leavers (d_unsid); "
                        "overwrite: .overwrite files listing every member's full trait list for the data source "
                        "(needs --state)")
    parser.add_argument("--data-source", default=None,
                        help="the data source to share through (default: the config's export.data_source, "
                        "or its only data source)")
    parser.add_argument("--segment-id", type=_positive_int, default=None,
                        help="send 'd_sid=N' on every line instead of '\"segment\"=\"<audience>\"'")
    parser.add_argument("--max-lines-per-file", type=_positive_int, default=None,
                        help="split the data into numbered files of at most N lines "
                        "(default: export.max_lines_per_file, or 5000000)")
    parser.add_argument("--allow-shrink", action="store_true",
                        help="publish even when the run removes more than max_shrink of the user IDs the platform "
                        "holds for the audience (a header-only or truncated targets file fails without it)")
    launch.add_run_date(parser, "the files' timestamp and the clock for AES-GCM keys")
    return parse_job_args(parser, argv)


def build_pipeline(p: beam.Pipeline, cfg: JobConfig, spec: ExportSpec, targets: str, state: ExportState,
                   output: str, run_dir: str) -> None:
    """Wire the export graph onto ``p``. Reads nothing: all I/O happens when the pipeline runs."""
    _ = p | "Export" >> ExportAudience(cfg, spec, targets, state, output, run_dir)


def run(argv=None) -> dict:
    """Run the export; returns the report (``{"status": "staged"}`` when the runner only staged the
    job). Raises ConfigError / AudienceSyncError on failure."""
    known, beam_args = parse_args(argv)
    run_date = known.run_date or launch.today()
    existing = [folder.rstrip("/") for folder in known.existing]
    # Absolute: the reports and manifests name state folders, found again from another working folder.
    root = absolute(known.state) if known.state else None
    checked = {}
    with contextlib.ExitStack() as held:

        def preflight(cfg: JobConfig) -> JobConfig:
            spec = checked["spec"] = export_spec(cfg, known.audience, known.data_source, run_date, known.segment_id,
                                                 known.max_lines_per_file, known.mode, known.allow_shrink)
            if known.state:
                _hold_state(held, root, spec, beam_args)
            checked["state"] = check_export_inputs(cfg, spec, known.targets, existing, root,
                                                   known.output.rstrip("/"))
            return export_config(cfg, spec)

        job = launch.start(known.config, beam_args, preflight, paths={
            "--output": known.output, "--targets": known.targets, "--state": known.state, "--existing": existing})
        return _run(job, checked["spec"], checked["state"], known.targets, known.output.rstrip("/"))


def _hold_state(held: contextlib.ExitStack, root: str, spec: ExportSpec, beam_args: list[str]) -> None:
    """The audience's state folder held until the run ends (the output lock's mechanism), taken before
    its state is read: another export of the audience, into any --output, would clear the version this
    run writes, or commit one this run's changes never saw. An overwrite holds every other audience's
    under ROOT too: it lists their members with the traits their state gives when it is read. While
    another run holds one, this run is refused (:class:`LockHeld`, exit 1 as a held output lock: a
    live run is no configuration error, and a retry once it ends runs). Every run takes them in one order (sorted): two
    overwrites started together, each first taking its own, were both refused."""
    folder = audience_dir(root, spec.data_source.name, spec.audience).rstrip("/")
    others = audience_folders(root) if spec.mode == "overwrite" else []
    options = pipeline_options(beam_args)
    for path in sorted({folder, *(path.rstrip("/") for path in others)}):
        source, name = (unquote(posixpath.basename(p)) for p in (posixpath.dirname(path), path))
        try:
            held.enter_context(launch.lock(path, "export_audience", options))
        except LockNotCreated as exc:  # its message says 'output lock': this one is the audience's state's
            raise RunFailed(f"--state {root}: cannot create the lock of audience '{name}' of data source "
                            f"'{source}' ({exc.path}: {exc.reason})") from None
        except LockHeld as exc:
            why = "" if path == folder else (": this overwrite would list its members with the traits its state "
                                              "holds now; run it after")
            raise LockHeld(f"--state: audience '{name}' of data source '{source}' is being exported by another "
                           f"run ({exc}){why}") from None


def _run(job: launch.Started, spec: ExportSpec, state: ExportState, targets: str, output: str) -> dict:
    run_dir = launch.new_run_dir(output)
    # The versions this run may write: its audience's, and an overwrite's of the other audiences (held).
    written = [state, *(o.state for o in strippable(state).values())] if state.version_dir is not None else []
    # Held before the version is cleared: a run refused by a live run's lock cleared that run's parts.
    with launch.hold(output, "export_audience", job.options):
        for version in written:
            _clear_version(version)  # an uncommitted version left by a failed or killed run
        try:
            return launch.run_pipeline(job.options, run_dir, join_path(output, REPORT), lambda p: build_pipeline(
                p, job.cfg, spec, targets, state, output, run_dir), held=True)
        except BaseException:
            for version in written:
                if version.latest == _committed(version) and _pending(version) is None:
                    remove_run_dir(version.version_dir)  # never committed nor published: nothing of it stays
            raise


def _committed(state: ExportState) -> int | None:
    from transforms.export_state import current_version

    current = current_version(state.folder)
    return None if current is None else current.number


def _clear_version(state: ExportState) -> None:
    """Remove what a failed or killed run left of this run's version, but the ``_PENDING`` of a run
    that published its files (this run retries it): until this run replaces them, they may be on the
    platform, and a failure before its publish must leave the next runs refused as before."""
    # The manifest stays in place: deleted with the rest and written again, a kill between the two lost it.
    remove_run_dir(state.version_dir, keep=None if _pending(state) is None else PENDING)


def _pending(state: ExportState) -> StateVersion | None:
    """This run's version when a run published its files under it but never committed it (the next
    runs must know: see :func:`transforms.export_state.published_uncommitted`), else None."""
    return next((v for v in published_uncommitted(state.folder, state.latest) if v.number == state.version), None)


def main(argv=None) -> int:
    return launch.run_job_cli(run, argv, summary_lines, page=lambda argv: launch.page_line(parse_args(argv)[0].output))


if __name__ == "__main__":
    sys.exit(main())
