"""The code a run runs: the package's version and a digest of its modules (``pipelines/``,
``transforms/``), recorded in a nightly partition's ``_SUCCESS`` (``code_version``), and checked on the
workers against the launcher's (:func:`check_worker_code`)."""
from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path


def code_digest() -> str:
    """A digest of the code here: each module of ``pipelines/`` and ``transforms/``, name and bytes."""
    digest = hashlib.sha256()
    here = Path(__file__).resolve().parent.parent
    for path in sorted([*here.joinpath("pipelines").glob("*.py"), *here.joinpath("transforms").glob("*.py")]):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def code_version() -> str:
    """The package version and a digest of the code that ran (pipelines/ and transforms/)."""
    try:
        version = metadata.version("audience-sync")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}+{code_digest()}"


def check_worker_code(launcher: str | None) -> None:
    """On a worker: its modules must be the launcher's (``launcher``: :func:`code_digest` where the job was
    built). A DoFn is pickled by reference to its class, so a worker whose SDK container image holds another
    release runs that release's code with the launcher's settings, and nothing else notices. A ConfigError
    (exit 2): a retry meets the same image."""
    here = code_digest()
    if launcher is not None and here != launcher:
        from transforms.errors import ConfigError

        raise ConfigError(f"the workers run other code than the launcher: audience-sync code {here} here, {launcher} "
                        "where the job was launched; nothing was published (rebuild the --sdk_container_image from "
                        "the launcher's release, or stage the code with --setup_file)")
