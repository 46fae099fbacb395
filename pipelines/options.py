"""Pipeline options shared by the launchers, with the local runner pinned.

Beam 2.7x's ``DirectRunner`` first tries the Prism runner, which downloads a binary from the
internet. We never let it guess. Without ``--runner`` the jobs run on Beam's
**BundleBasedDirectRunner**: in this process, one worker thread, elements kept as Python objects
between steps. Our elements are whole Arrow tables, so the runner's per-element cost is nil, and
not encoding every table between stages makes it the fastest and leanest local choice (measured
in the README against FnApiRunner's ``in_memory`` and ``multi_processing`` modes; all give
byte-identical outputs). ``--direct_running_mode`` without ``--runner`` selects ``FnApiRunner`` in
that mode. Any ``--runner`` given on the command line wins.
"""
from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

LOCAL_RUNNER = "BundleBasedDirectRunner"
FNAPI_RUNNER = "FnApiRunner"


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    options = PipelineOptions(beam_args)
    if options.view_as(StandardOptions).runner is None:
        given = options.get_all_options(drop_default=True)
        runner = FNAPI_RUNNER if "direct_running_mode" in given else LOCAL_RUNNER
        options = PipelineOptions(beam_args, runner=runner)
    return options


# Beam loggers that print whole elements at DEBUG level ("Processing [...]"). Our elements are
# tables of IDs and addresses, so these loggers never go below INFO, whatever the root level is.
ELEMENT_LOGGERS = ("apache_beam.runners.worker.operations", "apache_beam.runners.worker.bundle_processor")


def keep_elements_out_of_logs() -> None:
    import logging

    for name in ELEMENT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO or logger.level < logging.INFO:
            logger.setLevel(logging.INFO)
