"""Where the export keeps things, and how two of its paths are compared: an audience's state folder
(``ROOT/<data source>/<audience>``, each %-quoted), its versions (``v-000001``), and ``--output`` folders
as manifests and reports record them (:mod:`transforms.export_state`)."""
from __future__ import annotations

import os
from urllib.parse import quote

from transforms.storage import join_path


def audience_dir(root: str, data_source: str, audience: str) -> str:
    """``ROOT/<data source>/<audience>``; the names are %-quoted (spaces, glob characters, ``/``)."""
    return join_path(root, _folder_name(data_source), _folder_name(audience))


def _folder_name(name: str) -> str:
    """``name`` %-quoted as one folder of the path: ``.`` and ``..`` too (``%2E``), which quoting leaves as
    they are and a local path resolves (``--audience .`` kept its state in ``ROOT/<data source>`` itself,
    ``..`` in ``ROOT``: unseen by the checks that list ``ROOT/*/*``)."""
    quoted = quote(name, safe="")
    return quoted.replace(".", "%2E") if quoted in (".", "..") else quoted


def version_dir(folder: str, number: int) -> str:
    return join_path(folder, f"v-{number:06d}")


def same_output(a: str, b: str) -> bool:
    """Whether two ``--output`` folders are one (:func:`output_key`)."""
    return output_key(a) == output_key(b)


def output_key(path) -> str:
    """An ``--output`` folder as two are compared: a local one resolved (a symlinked spelling of a folder
    is that folder), a ``gs://`` one as written, without its trailing ``/``."""
    path = str(path)
    return path.rstrip("/") if "://" in path else os.path.realpath(path)
