"""``audience-sync JOB [flags...]``: one command, one module per job (each has ``run(argv)``).

Also the command-line behaviour shared by the jobs: a summary on success, and on failure one clear
line (exit 2 for a configuration error, 1 for a failed run), never a bare stack trace.
"""
from __future__ import annotations

import importlib
import logging
import sys

JOBS = {
    "import": "pipelines.import_audience",
    "nightly": "pipelines.nightly",
    "export": "pipelines.export_audience",
}


class _OwnErrorsOnce(logging.Filter):
    """Runners log a failing DoFn's traceback before re-raising; for our own errors (input problems,
    failed checks) the one line printed by :func:`run_job_cli` says it all, so drop the duplicate."""

    def filter(self, record: logging.LogRecord) -> bool:
        from transforms.errors import AudienceSyncError

        message = record.getMessage()
        if "transforms.errors." in message or "transforms.crypto.KeyMaterialError" in message:
            return False
        exc = record.exc_info[1] if record.exc_info else None
        seen = set()
        while exc is not None and id(exc) not in seen:
            seen.add(id(exc))
            if isinstance(exc, AudienceSyncError):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def run_job_cli(run, argv, summary=None) -> int:
    """Run ``run(argv)``; print ``summary(report)`` (default: the import's summary lines) or one error line."""
    from transforms.config import ConfigError

    if summary is None:
        from transforms.report import summary_lines as summary

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(_OwnErrorsOnce())
    try:
        report = run(argv)
    except ConfigError as exc:
        print(f"audience-sync: configuration error:\n{exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - turned into one line
        print(f"audience-sync: run failed: {describe_failure(exc)}", file=sys.stderr)
        return 1
    for line in summary(report):
        print(line)
    return 0


def describe_failure(exc: BaseException) -> str:
    """The safe message of our own error inside whatever the runner wrapped it in."""
    from transforms.errors import AudienceSyncError

    seen, current = set(), exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AudienceSyncError):
            return str(current)
        current = current.__cause__ or current.__context__
    for line in str(exc).splitlines():  # runners re-raise with the original error's text inside
        for marker in ("InputError: ", "RunFailed: ", "KeyMaterialError: "):
            if marker in line:
                return line.split(marker, 1)[1].strip()
    return f"{type(exc).__name__} (see the log above for the failing step)"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in JOBS:
        print(f"usage: audience-sync {{{','.join(JOBS)}}} [flags...]  (see README.md)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return importlib.import_module(JOBS[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
