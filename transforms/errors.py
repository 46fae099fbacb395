"""The project's errors: one hierarchy, each class with its exit code. Messages name files, lines
and config fields, never record content or key material, so they are safe to print as they are."""
from __future__ import annotations


class AudienceSyncError(Exception):
    """Base class: the message is safe to show (no PII, no key material)."""

    exit_code = 1


class ConfigError(AudienceSyncError, ValueError):
    """A configuration problem, reported as one line per problem naming the field."""

    exit_code = 2


class KeyMaterialError(AudienceSyncError, ValueError):
    """A key, IV or key ring cannot be loaded or is malformed. The message names the reference
    (``env:NAME`` / ``file:PATH``) and the problem, never the value."""


class InputError(AudienceSyncError):
    """An input file is unreadable, truncated, corrupt or malformed."""

    def __init__(self, path: str, problem: str | None = None, line: int | None = None):
        # InputError(message) is also accepted: runners re-create errors from their text, with
        # the step name appended, and must get an InputError back.
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {problem}" if problem is not None else path)
        self.path, self.problem, self.line = path, problem, line

    def __reduce__(self):  # keep the fields when Beam pickles the error across workers
        return (InputError, (self.path, self.problem, self.line))


class RowProblem(ValueError):
    """A problem of a batch's row (``row``: its index in the batch), located in the file by its reader
    (:func:`transforms.profiles.at_row`)."""

    def __init__(self, row: int, problem: str):
        super().__init__(problem)
        self.row, self.problem = row, problem


class RunFailed(AudienceSyncError):
    """The run's results break an invariant or a configured threshold; nothing is published."""


class Terminated(SystemExit):
    """SIGTERM (Airflow stopping a task, Kubernetes a pod, ``kill``) or SIGINT (Ctrl-C): raised in the main
    thread so the job stops cleanly -- a committed publish completed, the run's folder removed, the output
    lock released -- instead of dying with its lock in place (another host would wait 24 h for it). Here,
    beside our errors, so that a runner's logged copy of it (a DoFn it stopped) is dropped as theirs is: the
    one line ``audience-sync: stopped by SIGTERM`` (or ``SIGINT``) says it all."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
