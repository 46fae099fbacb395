"""Pipeline options shared by the launchers, with the local runner pinned.

Beam 2.7x's ``DirectRunner`` first tries the Prism runner, which downloads a binary from the
internet. We never let it guess: without ``--runner`` the jobs run on Beam's **FnApiRunner** (the
portable runner the DirectRunner itself falls back to) in **in_memory** mode with **one** worker,
in this process. Any ``--runner`` / ``--direct_running_mode`` / ``--direct_num_workers`` given on
the command line wins.

Why this one (README, "Local runner"): it runs the portable Fn API like Dataflow and Flink, so
every element crosses stages through its coder as it would remotely, and all its modes give
byte-identical outputs (a test runs them). On this 2-core machine its modes now run the benchmark
in the same time (the DoFns' own thread pools use the second core); in_memory is one process, so
its peak memory is all there is to watch, and multi_threading used a third more.
``BundleBasedDirectRunner`` was ~15% faster but gave an empty side input for a tagged ParDo output
read after a Reshuffle (a silent wrong answer): rejected.
"""
from __future__ import annotations

import contextlib
import io

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from transforms.errors import ConfigError

LOCAL_RUNNER = "FnApiRunner"
LOCAL_DEFAULTS = {"direct_running_mode": "in_memory", "direct_num_workers": 1}


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner is None:
        given = options.get_all_options(drop_default=True)
        overrides = {k: v for k, v in LOCAL_DEFAULTS.items() if k not in given}
        options = PipelineOptions(beam_args, runner=LOCAL_RUNNER, **overrides)
    return options


def unknown_options(beam_args: list[str]) -> list[str]:
    """The flags among ``beam_args`` (what the job's parser left) that no Beam option knows: Beam
    would drop them with a warning. A job flag spelled with underscores (as Flex Template parameters
    and Airflow's beam_options arrive: ``--data_source``) is one, and dropping it ran the job as if it
    were not given."""
    import logging

    options = PipelineOptions(beam_args)
    beam = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam.level
    beam.setLevel(logging.ERROR)  # its "Discarding unparseable args" warning: the caller says it in one line
    try:
        known = _parsed(options.get_all_options)
        given = _parsed(options.get_all_options, retain_unknown_options=True)
    finally:
        beam.setLevel(level)
    return sorted(f"--{name}" for name in set(given) - set(known))


def _parsed(get_all_options, **kwargs) -> dict:
    """Beam's options parsed, a flag it cannot parse (``--dry_run`` without its value, ``--direct_num_workers=abc``)
    a ConfigError of argparse's own line: its parser printed its usage first, every Beam option (136 lines)."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said):
            return get_all_options(**kwargs)
    except SystemExit:
        last = (said.getvalue().strip().splitlines() or ["a Beam flag it cannot parse"])[-1]
        raise ConfigError(f"Beam's options: {last.partition('error: ')[2] or last}") from None


def beam_parser():
    """Beam's own parser of its flags (every option class's), as ``PipelineOptions`` builds it to read them."""
    parsers = []
    PipelineOptions([]).get_all_options(add_extra_args_fn=parsers.append)
    return parsers[0]


def runner_kinds(options: PipelineOptions) -> frozenset[str]:
    """The class names of the runner ``--runner`` names, with its base classes (``{"TestDataflowRunner",
    "DataflowRunner", ...}``): Beam reads the name case-insensitively and with or without ``Runner``
    (``dataflow``, ``fnapirunner``), so the launcher never compares the text. No runner: the local one."""
    from apache_beam.runners.runner import PipelineRunner, create_runner

    runner = options.view_as(StandardOptions).runner or LOCAL_RUNNER
    if not isinstance(runner, PipelineRunner):
        try:
            runner = create_runner(runner)
        except (ValueError, ImportError):  # not a runner (the launcher refuses it): its last dotted part
            return frozenset({runner.rsplit(".", 1)[-1]})
    return frozenset(cls.__name__ for cls in type(runner).__mro__)


def only_stages(options: PipelineOptions) -> bool:
    """True when the runner only builds/stages the job (``--dry_run``, ``--template_location``: a
    Dataflow template or a Flex Template launch) and nothing runs now, so there is no report yet."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, TestOptions

    return bool(options.view_as(TestOptions).dry_run or options.view_as(GoogleCloudOptions).template_location)



def runs_here(options: PipelineOptions) -> bool:
    """Whether the pipeline's DoFns run in this process (the local runner, in_memory or
    multi_threading): where the progress lines can read their counters (:mod:`transforms.progress`)."""
    from apache_beam.options.pipeline_options import DirectOptions

    mode = options.view_as(DirectOptions).direct_running_mode or "in_memory"
    local = bool({LOCAL_RUNNER, "SwitchingDirectRunner"} & runner_kinds(options))
    return local and mode in ("in_memory", "multi_threading")

def warn_about_worker_keys(cfg, options: PipelineOptions) -> None:
    """On Dataflow, ``env:`` and ``file:`` key references resolve on workers that have neither the
    launcher's environment nor its files: say so before submitting (names the reference, never a key)."""
    import logging

    if "DataflowRunner" not in runner_kinds(options):
        return
    for ds in cfg.data_sources:
        enc = ds.encryption
        for field in ("key", "iv", "keyring") if enc else ():
            ref = getattr(enc, field)
            if ref and ref.startswith(("env:", "file:")):
                logging.getLogger("audience_sync").warning(
                    "data source '%s': encryption.%s (%s...) is read on the Dataflow workers, which have "
                    "neither the launcher's environment nor its files; use a gcpsm: reference",
                    ds.name, field, ref.split(":", 1)[0] + ":")


# Beam loggers that print whole elements at DEBUG level ("Processing [...]"). Our elements are
# tables of IDs and addresses, so these loggers never go below INFO, whatever the root level is.
ELEMENT_LOGGERS = ("apache_beam.runners.worker.operations", "apache_beam.runners.worker.bundle_processor")


def keep_elements_out_of_logs() -> None:
    import logging

    for name in ELEMENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)


SPLIT_DUMP_BYTES = 256 << 20  # distributed runners: dumps stored in this much or more are split


def split_dump_bytes(cfg, options: PipelineOptions) -> int | None:
    """From what stored size a dump's decompressed chunks are spread over workers: the config's
    ``split_dump_bytes``, else 256 MiB on a runner with several workers, else never (the local
    runner's one process keys a file's chunks in its thread pool anyway, and a split file's text
    would be held in memory between the two steps). README "Performance" has the measurements."""
    if cfg.split_dump_bytes is not None:
        return cfg.split_dump_bytes
    from apache_beam.options.pipeline_options import DirectOptions

    direct = options.view_as(DirectOptions)
    local_one = LOCAL_RUNNER in runner_kinds(options) and (direct.direct_num_workers or 1) <= 1
    return None if local_one else SPLIT_DUMP_BYTES


# Runners the jobs refuse (README, "Local runner"), by class or base class: the DirectRunner (any
# spelling: "direct", "DirectRunner") first tries Prism, which downloads a binary from the internet,
# and falls back to whatever it picks; BundleBasedDirectRunner hands a DoFn an empty side input (a
# tagged ParDo output after a Reshuffle): it published an empty audience with exit 0.
REFUSED_RUNNERS = frozenset({"SwitchingDirectRunner", "BundleBasedDirectRunner", "PrismRunner"})


def check_runner(options: PipelineOptions) -> None:
    """A runner name Beam does not know, a runner these jobs do not run on, or a negative number of
    local workers is the operator's mistake (exit 2), found before any output folder is touched."""
    from apache_beam.options.pipeline_options import DirectOptions
    from apache_beam.runners.runner import create_runner

    name = options.view_as(StandardOptions).runner
    try:
        create_runner(name)
    except (ValueError, ImportError):
        raise ConfigError(f"--runner: {name!r} is not a Beam runner (e.g. FnApiRunner, the local one; "
                          "DataflowRunner; FlinkRunner)") from None
    kinds = runner_kinds(options)
    if REFUSED_RUNNERS & kinds:
        raise ConfigError(f"--runner: {name!r} is not a runner these jobs run on (the DirectRunner first downloads "
                          "Prism; BundleBasedDirectRunner gives DoFns empty side inputs): leave --runner out for "
                          "the local runner (FnApiRunner), or name DataflowRunner, FlinkRunner or PortableRunner")
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers is not None and workers < 0:  # the local runner failed inside: 'IndexError', exit 1
        raise ConfigError(f"--direct_num_workers: {workers} is not a number of workers (1 or more; 0: one per CPU core)")
    _check_staging_flags(options)
    if only_stages(options) and "DataflowRunner" not in kinds:
        raise ConfigError(f"--dry_run / --template_location: only DataflowRunner stages a job; {name!r} would run it "
                          "now and publish its outputs (leave both flags out to run it)")


DRY_RUN_TRUE = frozenset({"true", "1", "yes", "on"})


def _check_staging_flags(options) -> None:
    """The staging flags as Beam reads them: any text of ``--dry_run`` but '' is true ('--dry_run=False' on
    Dataflow built the job, submitted nothing and said 'job staged', exit 0), and an empty one, or an empty
    ``--template_location`` (a template variable rendered empty), ran the job it was to stage."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions, TestOptions

    dry_run = options.view_as(TestOptions).dry_run
    if isinstance(dry_run, str) and dry_run.strip().lower() not in DRY_RUN_TRUE:
        raise ConfigError(f"--dry_run {dry_run!r}: Beam reads any value but '' as true (the job only built) and '' as "
                          "false: give --dry_run=True to build the job, or leave the flag out to run it")
    if options.view_as(GoogleCloudOptions).template_location == "":
        raise ConfigError("--template_location: an empty value, on which Beam runs the job instead of writing its "
                          "template: give the template's path, or leave the flag out to run the job")
