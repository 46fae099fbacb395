"""The code a run runs: the package's version and a digest of its modules (``pipelines/``,
``transforms/``), recorded in a nightly partition's ``_SUCCESS`` (``code_version``), and checked on the
workers against the launcher's (:func:`launcher_code`, :func:`check_worker_code`)."""
from __future__ import annotations

import hashlib
from importlib import metadata
from pathlib import Path


def _modules() -> list[tuple[str, bytes]]:
    """Each module of ``pipelines/`` and ``transforms/`` here ('transforms/publish.py'), its bytes with
    Windows line ends read as '\\n' (a CRLF checkout holds the same code)."""
    here = Path(__file__).resolve().parent.parent
    paths = sorted([*here.joinpath("pipelines").glob("*.py"), *here.joinpath("transforms").glob("*.py")])
    return [(f"{path.parent.name}/{path.name}", path.read_bytes().replace(b"\r\n", b"\n")) for path in paths]


def code_digest() -> str:
    """A digest of the code here: each module of ``pipelines/`` and ``transforms/``, name and bytes."""
    digest = hashlib.sha256()
    for name, code in _modules():
        digest.update(name.rpartition("/")[2].encode())
        digest.update(code)
    return digest.hexdigest()[:12]


def code_version() -> str:
    """The package version and a digest of the code that ran (pipelines/ and transforms/)."""
    try:
        version = metadata.version("audience-sync")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{version}+{code_digest()}"


def launcher_code() -> tuple[str, dict[str, str]]:
    """What :func:`check_worker_code` compares: :func:`code_digest` and each module's own digest."""
    return code_digest(), {name: hashlib.sha256(code).hexdigest()[:16] for name, code in _modules()}


def check_worker_code(launcher: tuple[str, dict[str, str]] | str | None) -> None:
    """On a worker: its modules must be the launcher's (``launcher``: :func:`launcher_code` where the job
    was built). A DoFn is pickled by reference to its class, so a worker whose SDK container image holds
    another release runs that release's code with the launcher's settings, and nothing else notices. Each
    module both hold is compared: one only the launcher holds (an operator's scratch.py) is not run here,
    and one only the worker holds is imported by no module they share. A ConfigError (exit 2): a retry
    meets the same image."""
    if launcher is None:
        return
    here, modules = launcher_code()
    digest, theirs = (launcher, None) if isinstance(launcher, str) else launcher
    differ = [name for name in sorted(modules.keys() & theirs.keys()) if modules[name] != theirs[name]] \
        if theirs is not None else ([] if here == digest else ["the code"])
    if differ:
        from transforms.errors import ConfigError

        raise ConfigError(f"the workers run other code than the launcher: {differ[0]} differs (audience-sync code "
                          f"{here} here, {digest} where the job was launched); nothing was published (rebuild the "
                          "--sdk_container_image from the launcher's release, or stage the code with --setup_file)")
