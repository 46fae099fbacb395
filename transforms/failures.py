"""A failed run as the command line shows it: its exit code and one line that is safe to print (no
record value, no key), whatever a runner wrapped our error in; and the log filter that keeps a
runner's copy of that error's traceback out of the terminal. Used by :mod:`pipelines.launch`."""
from __future__ import annotations

import logging
import re

import pyarrow as pa

from transforms.errors import AudienceSyncError, Terminated


class OwnErrorsOnce(logging.Filter):
    """Runners log a failing DoFn's traceback before re-raising; for our own errors (input problems,
    failed checks) the one line printed by :func:`pipelines.launch.run_job_cli` says it all, so drop
    the duplicate. An Arrow error's log is dropped too, unless ``debug``: its message may quote a
    row or value."""

    def __init__(self, debug: bool = False):
        super().__init__()
        self._debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if "transforms.errors." in record.getMessage():
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if error_in_chain(exc, Terminated) is not None:  # SIGTERM in a DoFn: the launcher prints its line
            return False
        return own_error(exc) is None and (self._debug or error_in_chain(exc, pa.ArrowException) is None)


def own_error(exc: BaseException | None) -> AudienceSyncError | None:
    """Our error inside whatever a runner wrapped it in (its cause / context chain)."""
    return error_in_chain(exc, AudienceSyncError)


def error_in_chain(exc: BaseException | None, kind: type) -> BaseException | None:
    """The first ``kind`` error in ``exc``'s cause / context chain, or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, kind):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def error_classes(base: type = AudienceSyncError) -> list[type]:
    found = [base]
    for sub in base.__subclasses__():
        found += error_classes(sub)
    return found


def classify_failure(exc: BaseException) -> tuple[int, str]:
    """``(exit code, one safe line)`` for a failed run.

    Our errors carry their exit code and a message that is safe to show. A runner that ran the DoFn in
    another process (multi_processing, a portable job server) re-raises our error as text: its class
    name and message are found in that text. Any other error shows its type and the first line of its
    message on one line (the traceback goes with ``--debug``), except Arrow's, whose messages quote
    the rows and values they met: their type and Beam step only."""
    own = own_error(exc)
    if own is not None:
        return own.exit_code, str(own)
    for line in str(exc).splitlines():
        for cls in error_classes():
            marker = f"{cls.__name__}: "
            if marker in line:
                return cls.exit_code, line.split(marker, 1)[1].strip()
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    arrow = type(exc).__name__ if isinstance(exc, pa.ArrowException) else next(
        iter(re.findall(r"\b(Arrow(?:Invalid|\w*Error))\b", text)), None)  # (raised in a worker process: text)
    if arrow:  # Arrow's parse and conversion messages quote the row or value they met
        steps = re.findall(r"\[while running '[^']*'\]", text)
        return 1, f"{arrow} {' '.join(steps[-1:])} (its message may quote input data: --debug shows it)"
    if len(text) > 300:
        text = text[:297] + "..."
    return 1, f"{type(exc).__name__}: {text}" if text else type(exc).__name__
