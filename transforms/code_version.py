"""The code a run runs: the package's version and a digest of its modules (``pipelines/``,
``transforms/``), recorded in a nightly partition's ``_SUCCESS`` (``code_version``)."""
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
