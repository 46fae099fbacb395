"""The one launch skeleton of every job (import, export, nightly), and their command-line behaviour.

A job's ``run(argv)`` parses its own flags, then: :func:`start` (logs kept free of elements, config
loaded, the job's preflight, pipeline options with the local runner pinned, the worker-key warning),
and :func:`run_pipeline` per pipeline (output lock, recovery of an interrupted publish, leftovers
of killed runs deleted, write probe; run; remove the run's folder on any failure; staged-only runs;
the report read back). Its ``main(argv)`` is :func:`run_job_cli`: a summary on success, one
clear line on failure (exit 2 for a configuration error, 1 for a failed run), the traceback only
with ``--debug``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import posixpath
import sys
import threading
import traceback
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from functools import partial
from typing import Callable

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.flags import check_given
from pipelines.options import (
    beam_parser,
    check_runner,
    keep_elements_out_of_logs,
    only_stages,
    pipeline_options,
    runner_kinds,
    runs_here,
    unknown_options,
    warn_about_worker_keys,
)
from transforms import element_sizes, progress  # noqa: F401 - element_sizes: the PCollections' coder
from transforms.config import ConfigError, JobConfig
from transforms.config_load import load_config, pin_secret_versions
from transforms.errors import RunFailed, Terminated
from transforms.failures import OwnErrorsOnce, classify_failure
from transforms.html_report import PAGE
from transforms.memory import use_heap_allocator
from transforms.output_lock import OutputLock
from transforms.publish_journal import apply, hold_output, read_journal, remove_run_dir
from transforms.publish import REPORT, SUCCESS
from transforms.storage import check_gcs_credentials, file_in_the_way, glob, join_path

LOG = logging.getLogger("audience_sync.launch")

STAGED = "staged"


def add_run_date(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--run-date",
        "--run_date",  # the spelling Flex Template parameters arrive with
        dest="run_date",
        type=iso_date,
        default=None,
        help=f"the run's date (YYYY-MM-DD; default: today, UTC). Its UTC midnight is {what}; "
        "the pipeline never reads the clock itself",
    )


def today() -> date:
    return datetime.now(timezone.utc).date()


@dataclass(frozen=True)
class Started:
    """A job ready to build pipelines: its validated config and pipeline options."""

    cfg: JobConfig
    options: PipelineOptions


def start(config_path: str, beam_args: list[str], preflight: Callable[[JobConfig], JobConfig | None],
          paths: dict[str, str | list[str] | None] | None = None) -> Started:
    """Everything before a pipeline is built. ``preflight(cfg)`` checks the inputs (raising
    ConfigError) and may return the config narrowed to what the job uses (whose key references and
    paths are then the ones checked). ``paths``: the job's own path flags (``{"--output": ...}``),
    which must be readable by the workers too."""
    keep_elements_out_of_logs()
    use_heap_allocator()  # before the preflight reads anything with Arrow (see transforms.memory)
    flags = [v for value in (paths or {}).values() for v in (value if isinstance(value, list) else [value])]
    check_gcs_credentials([config_path, *flags], beam_args)  # before the first gs:// touch
    _check_folders(paths or {})
    unknown = unknown_options(beam_args)
    if unknown:
        dashed = [u.replace("_", "-") for u in unknown if "_" in u]  # only a spelling with underscores has another
        hint = f"; a job flag is spelled with dashes: {', '.join(dashed)}" if dashed else ""
        raise ConfigError(f"unknown option(s): {', '.join(unknown)} (neither this job's nor Beam's{hint})")
    check_given(beam_parser(), beam_args, empty=False)  # a Beam flag given twice with two values
    cfg = load_config(config_path)
    check_gcs_credentials([path for _, path in input_paths(cfg)], beam_args)
    cfg = pin_secret_versions(cfg)  # the key the preflight checks is the key every worker reads
    used = preflight(cfg) or cfg
    options = pipeline_options(beam_args)
    check_runner(options)
    _check_worker_paths(used, options, paths or {})
    warn_about_worker_keys(used, options)
    return Started(cfg, options)


FOLDER_FLAGS = ("--output", "--root", "--key-cache", "--state")  # folders the jobs write


def _check_folders(paths: dict[str, str | list[str] | None]) -> None:
    """The folders the job's flags name, refused before the run, naming the flag. A flag may name
    several folders (a nightly's --root, then ROOT/_key_cache): the first refused is named."""
    problems = []
    for flag, value in paths.items():
        problems += [p for p in map(partial(_folder_problem, flag), value if isinstance(value, list) else [value]) if p][:1]
    if problems:
        raise ConfigError("\n".join(problems))


def _folder_problem(flag: str, path: str | None) -> str | None:
    """A folder the job writes, or reads as a folder, whose name holds a glob character: the job lists
    and deletes the files under it by pattern, and Beam's patterns have no escape (a local 'out [1]'
    failed deleting its own write probe; on gs:// a publish was left half done). A folder the job
    writes naming a file (or a path below one): the run failed taking the output lock, 'cannot create
    the output lock (File exists)' (a lock, to the operator), or, for --key-cache, with a traceback
    once the profiles were keyed."""
    if not path:
        return None
    if flag != "--targets" and any(c in path for c in "*?["):
        return (f"{flag}: {path} holds a glob character ('*', '?' or '['): the job lists and deletes the files "
                "under it by pattern, which would reach other files or none; use a folder whose name has none")
    if flag in FOLDER_FLAGS and (file := file_in_the_way(path)):
        return f"{flag} {path}: {file} is a file, not a folder"
    return None


def _check_worker_paths(cfg: JobConfig, options, paths: dict[str, str | list[str] | None]) -> None:
    """On Dataflow the workers read the inputs and write the outputs, on their own disks: a local path
    would be listed there as empty (or written there, never published where the launcher looks). The
    preflight had read the launcher's files, so the job was submitted. Refused (exit 2), naming each."""
    if "DataflowRunner" not in runner_kinds(options):
        return
    named = input_paths(cfg)
    for flag, value in paths.items():  # a folder below another of its flag (ROOT/_key_cache) goes with it
        values = [v for v in (value if isinstance(value, list) else [value]) if v]
        named += [(flag, v) for v in values if not any(v.startswith(other.rstrip("/") + "/") for other in values)]
    local = [f"{field} ({path})" for field, path in named if path and "://" not in path]
    if local:
        raise ConfigError(f"Dataflow workers cannot read local paths: {', '.join(local)}; put them on gs://")


def input_paths(cfg: JobConfig) -> list[tuple[str, str]]:
    """The config's input paths, each with the field that names it."""
    named = [("profiles.path", cfg.profiles.path)]
    named += [(f"data source '{ds.name}': segments", ds.segments) for ds in cfg.data_sources]
    return named + [(f"suppression.{i}.path", entry.path) for i, entry in enumerate(cfg.suppression)]


def new_run_dir(parent: str, prefix: str = "_incomplete-") -> str:
    return join_path(parent, f"{prefix}{uuid.uuid4().hex[:12]}")


def run_pipeline(options: PipelineOptions, run_dir: str, report_path: str, build: Callable[[beam.Pipeline], None],
                 held: bool = False) -> dict:
    """Build (``build(p)``) and run one pipeline that publishes into ``report_path``'s folder,
    staging under ``run_dir``. Unless ``held`` (the caller holds it: nightly holds its root), the
    output folder (``run_dir``'s parent) is held for the run (:func:`transforms.publish_journal.hold_output`:
    lock, recovery, leftovers, write probe). On any failure before the publish's commit point the
    run's folder is removed (nothing of a failed run stays behind) and the error goes up; after it,
    the publish is completed. When the runner only stages the job (``--dry_run``,
    ``--template_location``) there is no report (``{"status": "staged"}``) and no lock: nothing is
    published now. Otherwise the report the pipeline published."""
    staged_only = only_stages(options)
    job = getattr(build, "__module__", None) or "run"
    with hold(posixpath.dirname(run_dir), job.rsplit(".", 1)[-1], options) if not held else contextlib.nullcontext():
        try:
            with progress.reporting(runs_here(options)), beam.Pipeline(options=options) as p:
                build(p)
        except BaseException as exc:
            if not _complete_committed_publish(posixpath.dirname(report_path), run_dir, exc):
                raise
    if staged_only:
        return {"status": STAGED}
    with FileSystems.open(report_path) as handle:
        return json.loads(handle.read())


def hold(folder: str, job: str, options: PipelineOptions, **kwargs):
    """``folder`` held for one run (:func:`transforms.publish_journal.hold_output`, ``kwargs`` passed on),
    or nothing when the runner only stages the job (no publish now, nothing to hold). A job that
    changes anything of a previous run before its pipeline (clears what a killed run left) must do
    it holding it: another run may be live there."""
    if only_stages(options):
        return contextlib.nullcontext()
    _check_other_job(folder, job)
    return hold_output(folder, job, options, **kwargs)


# The report.json "job" of each job's runs; a nightly's root holds none (its partitions do).
REPORT_JOBS = {"import_audience": "import", "export_audience": "export", "nightly": None}


def _check_other_job(folder: str, job: str) -> None:
    """A folder holding another job's outputs is refused before anything in it is touched: an export into
    an import's --output replaced its report.json and left reconciled/ beside onboarding/, exit 0 (the
    folder read as an export whose report has no data source); a nightly root and a run's folder mixed
    the same way (the report verb read the root as a run)."""
    if job not in REPORT_JOBS:
        return
    flag, own = ("--root", None) if job == "nightly" else ("--output", REPORT_JOBS[job])
    try:
        with FileSystems.open(join_path(folder, REPORT)) as handle:
            other = json.loads(handle.read()).get("job")
    except Exception:  # noqa: BLE001 - none (or not a report): no other job's run
        other = None
    if other in ("import", "export") and other != own:
        raise ConfigError(f"{flag} {folder}: holds an {other} run's outputs (report.json); this run would mix its "
                          "outputs with them: write to a folder of its own")
    if own is not None and glob(join_path(folder, "dt=*", SUCCESS), missing_ok=True):
        raise ConfigError(f"{flag} {folder}: holds a nightly root (dt=YYYY-MM-DD/ partitions); this run would mix its "
                          "outputs with them: write to a folder of its own")


def lock(folder: str, job: str, options: PipelineOptions):
    """Only ``folder``'s lock (:class:`transforms.output_lock.OutputLock`, the output lock's file and
    rules), or nothing when the runner only stages the job: for what a run reads before its pipeline
    and commits after it, which no other run may change meanwhile (an export's audience state)."""
    return contextlib.nullcontext() if only_stages(options) else OutputLock(folder, job, options)


def _complete_committed_publish(output_dir: str, run_dir: str, exc: BaseException) -> bool:
    """After a failed pipeline: if it failed after its publish committed (the journal names its run
    folder), complete the publish and say so (True: the run is published); else remove the run's
    folder (False: the error stands)."""
    journal = read_journal(output_dir)
    if journal is None or journal.run_dir != run_dir:
        remove_run_dir(run_dir)
        return False
    try:
        apply(output_dir, journal)
    except Exception as again:  # noqa: BLE001 - the next run into output_dir completes it
        raise RunFailed(f"{output_dir}: the publish was interrupted ({type(again).__name__}); the new outputs are "
                        "complete in the run's folder and the next run into this folder publishes them") from exc
    LOG.warning("%s: the publish step failed after its commit point (%s) and was completed", output_dir, type(exc).__name__)
    return isinstance(exc, Exception)  # an interrupt (Ctrl-C) still stops the job, after completing


# -------------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------------
def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= threading.TIMEOUT_MAX:  # above, the progress thread's wait overflowed (a traceback)
        raise argparse.ArgumentTypeError(f"not a number of seconds from 0 to {int(threading.TIMEOUT_MAX)}: {text!r}")
    return value


def iso_date(text: str) -> date:
    """A flag's date, YYYY-MM-DD (argparse named the parser's function: 'invalid fromisoformat value')."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date YYYY-MM-DD: {text!r}") from None


# Flags every verb takes, besides --debug and --quiet.
COMMON = argparse.ArgumentParser(prog="audience-sync", add_help=False, allow_abbrev=False)
COMMON.add_argument("--progress", type=_seconds, default=progress.DEFAULT_INTERVAL, metavar="SECONDS")


def page_line(folder: str) -> list[str]:
    """``report: FOLDER/report.html`` when the run wrote its page there (not for staged-only runs). Storage
    failing after the run (its lock's release logged it) shows no page: a finished run, no traceback."""
    path = join_path(folder.rstrip("/"), PAGE)
    try:
        return [f"report: {path}"] if FileSystems.exists(path) else []
    except Exception:  # noqa: BLE001 - the run has ended: its outcome stands
        return []


@contextlib.contextmanager
def _signals_stop_the_job(received: list[int]):
    """While the block runs, SIGTERM and SIGINT (Ctrl-C) raise :class:`Terminated` (its number is appended
    to ``received``: a runner may wrap the exception, raised wherever the main thread was, into its own).
    SIGINT only where Python's own handler has it (not where a parent made the job ignore it)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        received.append(signum)
        raise Terminated(signum)

    python_handles_sigint = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    stopping = [signal.SIGTERM, *([signal.SIGINT] if python_handles_sigint else [])]
    previous = {signum: signal.signal(signum, stop) for signum in stopping}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_job_cli(run: Callable, argv, summary: Callable[[object], list[str]],
                page: Callable[[list[str]], list[str]] | None = None) -> int:
    """``run(argv)``, then ``summary(result)`` lines on stdout and ``page(argv)`` (where the HTML
    report is); on failure one line on stderr and exit 2 (configuration) or 1 (failed run).
    ``--debug`` anywhere in ``argv`` also prints the traceback; ``--quiet`` keeps only errors (no
    summary, no progress); ``--progress SECONDS`` sets the interval of the progress lines."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, quiet = "--debug" in argv, "--quiet" in argv
    argv = [a for a in argv if a not in ("--debug", "--quiet")]
    logging.basicConfig(level=logging.WARNING if not quiet else logging.ERROR,
                        format="%(levelname)s %(name)s: %(message)s")
    progress.LOG.setLevel(logging.ERROR if quiet else logging.INFO)
    common, argv = COMMON.parse_known_args(argv)
    progress.set_interval(common.progress)
    for handler in logging.getLogger().handlers:
        handler.addFilter(OwnErrorsOnce(debug))
    terminated: list[int] = []
    try:
        with _signals_stop_the_job(terminated):
            result = run(argv)
    except BaseException as exc:  # noqa: BLE001 - turned into one line (and a traceback with --debug)
        if terminated:  # whatever the runner made of the Terminated raised in it
            if debug:
                traceback.print_exc()
            import signal

            print(f"audience-sync: stopped by {signal.Signals(terminated[0]).name} (nothing of this run was published "
                  "unless its publish had committed: then it was completed)", file=sys.stderr)
            return 128 + terminated[0]
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            raise
        code, message = classify_failure(exc)
        if debug:
            traceback.print_exc()
        kind = "configuration error:\n" if code == 2 else "run failed: "
        print(f"audience-sync: {kind}{message}", file=sys.stderr)
        return code
    if not quiet:
        shown = page(argv) if page and not _only_staged(result) else []  # a staged job wrote no page (an older one may be there)
        for line in [*summary(result), *shown]:
            print(line)
    return 0


def _only_staged(result) -> bool:
    """Whether the run only staged its job(s): a report ``{"status": "staged"}``, or nightly's list of them."""
    results = result if isinstance(result, list) else [result]
    return bool(results) and all(isinstance(r, dict) and r.get("status") == STAGED for r in results)
