"""Pipeline options shared by the launchers, with the local runner pinned.

Beam 2.7x's ``DirectRunner`` first tries the Prism runner, which downloads a binary from the
internet. We never let it guess: without ``--runner`` the job runs on ``FnApiRunner`` (Beam's
portable local runner, in this process) in ``in_memory`` mode with one worker. Any ``--runner`` /
``--direct_running_mode`` / ``--direct_num_workers`` given on the command line wins.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

LOCAL_RUNNER = "FnApiRunner"
LOCAL_DEFAULTS = {"direct_running_mode": "in_memory", "direct_num_workers": 1}


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(beam_args)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = LOCAL_RUNNER
        given = options.get_all_options(drop_default=True)
        overrides = {k: v for k, v in LOCAL_DEFAULTS.items() if k not in given}
        options = PipelineOptions(beam_args, runner=LOCAL_RUNNER, **overrides)
    return options


def is_local(options: PipelineOptions) -> bool:
    runner = options.view_as(StandardOptions).runner or LOCAL_RUNNER
    return runner.rsplit(".", 1)[-1] in StandardOptions.LOCAL_RUNNERS + ("FnApiRunner",)


# Beam loggers that print whole elements at DEBUG level ("Processing [...]"). Our elements are
# tables of IDs and addresses, so these loggers never go below INFO, whatever the root level is.
ELEMENT_LOGGERS = ("apache_beam.runners.worker.operations", "apache_beam.runners.worker.bundle_processor")


def keep_elements_out_of_logs() -> None:
    import logging

    for name in ELEMENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
