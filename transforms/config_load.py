"""Reading a job config: its YAML read strictly (:mod:`transforms.config_yaml`), validated into
:class:`~transforms.config.JobConfig` (errors as one line per field, never a value), and the paths
in it resolved against the file's folder (a local folder or a ``gs://`` prefix)."""
from __future__ import annotations

import difflib
import posixpath
import re
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from transforms import storage
from transforms.config import (DataSourceConfig, EncryptionConfig, ExportConfig, JobConfig, ProfilesConfig,
                               SuppressionList)
from transforms.config_yaml import config_text, read_yaml, yaml_lines
from transforms.errors import ConfigError, KeyMaterialError
from transforms.secrets import pinned_reference


# Where each field is: an unknown one is named as the field it may be.
_SECTIONS = {"the top level": JobConfig, "profiles": ProfilesConfig, "data_sources": DataSourceConfig,
             "encryption": EncryptionConfig, "export": ExportConfig, "suppression": SuppressionList}


def _unknown_field(loc: tuple) -> str:
    """``unknown field``, with the field it may be: another case or ``-`` for ``_`` (``Match_On``), a
    misspelling (``segment``), or a field of another section (``buckets`` in a data source)."""
    model = JobConfig
    for part in loc[:-1]:
        if not isinstance(part, int) and model is not None:
            kinds = get_args(model.model_fields[part].annotation) if part in model.model_fields else ()
            model = next((k for k in kinds if k in _SECTIONS.values()), _SECTIONS.get(part))
    name = str(loc[-1]).strip().lower().replace("-", "_")
    fields = list(model.model_fields) if model is not None else []
    near = [name] if name in fields else difflib.get_close_matches(name, fields, n=1, cutoff=0.8)
    if near:
        return f"unknown field (did you mean '{near[0]}'?)"
    others = [section for section, other in _SECTIONS.items() if other is not model and name in other.model_fields]
    return f"unknown field (a field of {' and '.join(others)})" if others else "unknown field"


def _format_validation_error(exc: ValidationError, source: str, line_of=None) -> str:
    lines = []
    for err in exc.errors():
        line = line_of(err["loc"]) if line_of is not None and err["loc"] else None
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = _unknown_field(err["loc"])
        elif err["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"{source}: {loc}: {msg}" + (f" (line {line})" if line else ""))
    return "\n".join(lines)


# A shell's, never this job's: a leading '~' (~/, ~user) and '$NAME' / '${NAME}' are kept as written.
_SHELL_WORDS = re.compile(r"^~|\$\{?[A-Za-z_]")


def _there(path: str, base) -> bool:
    """Whether ``path`` up to the end of its last name holding '~' or '$NAME' is a file or folder as
    written (one named '$crm' or '~archive': legal on disk and in a bucket): then it is no shell's word."""
    end = path.find("/", list(_SHELL_WORDS.finditer(path))[-1].end())
    literal = path if end < 0 else path[:end]
    if any(c in literal for c in "[*?{") or (base is None and "://" not in literal and not literal.startswith("/")):
        return False  # a wildcard or {date} before it, or no folder to read a relative path from
    from apache_beam.io.filesystems import FileSystems

    literal = literal if base is None else _resolve(literal, base)
    try:
        return FileSystems.exists(literal) or bool(storage.matched(literal + "/**", 1))
    except Exception:  # noqa: BLE001 - cannot be told: refused as written
        return False


def _shell_paths(cfg: JobConfig, source: str, line_of, base=None) -> list[str]:
    """Problems of paths written for a shell (``~/dumps/*``, ``$HOME/p.parquet``, ``${date}``): kept as
    written, they were looked for under the config's folder and matched nothing (a nightly source
    allowed nights without a delivery reads that as a night its partner sent nothing). A name that is
    there as written is not one (:func:`_there`)."""
    paths = [(("profiles", "path"), cfg.profiles.path)]
    paths += [(("data_sources", i, "segments"), ds.segments) for i, ds in enumerate(cfg.data_sources)]
    paths += [(("suppression", i, "path"), entry.path) for i, entry in enumerate(cfg.suppression)]
    problems = []
    for loc, path in paths:
        if _SHELL_WORDS.search(path) and not _there(path, base):
            line = line_of(loc) if line_of is not None else None
            problems.append(f"{source}: {'.'.join(map(str, loc))}: '~' and environment variables ($NAME) are not "
                            "expanded in a path: write it out (a relative path is relative to the config's folder; "
                            "a nightly's date is {date})" + (f" (line {line})" if line else ""))
    return problems


def _resolve(path: str, base: Path | str) -> str:
    """``path`` relative to ``base`` (a local folder, or a ``gs://...`` prefix for a config on GCS)."""
    if "://" in path or path.startswith("/"):
        return path
    if isinstance(base, str):
        return _join_remote(base, path)
    return str(base.resolve() / path) + ("/" if path.endswith("/") else "")  # a folder's files, as on gs://


def _join_remote(base: str, path: str) -> str:
    """``path`` under the ``gs://bucket/prefix`` ``base``, its ``.`` and ``..`` walked as a local
    folder's are (an object store has no folders to walk: ``gs://b/jobs/./a/*`` matched nothing).
    A trailing ``/`` (a folder's files) is kept; a path climbing above the bucket is left as written."""
    scheme, _, rest = base.partition("://")
    bucket, _, prefix = rest.partition("/")
    key = posixpath.normpath(posixpath.join(prefix, path))
    if key == ".." or key.startswith("../"):
        return posixpath.join(base, path)
    key = "" if key == "." else key
    return f"{scheme}://{bucket}/{key}" + ("/" if path.endswith("/") and key else "")


def _resolve_refs(enc: EncryptionConfig | None, base: Path) -> EncryptionConfig | None:
    """``file:`` key references are relative to the config file, like every other path in it."""
    if enc is None:
        return None
    update = {}
    for field in ("key", "iv", "keyring"):
        ref = getattr(enc, field)
        if ref and ref.startswith("file:") and not isinstance(base, str):  # key files are local files
            update[field] = "file:" + _resolve(ref[len("file:"):], base)
    return enc.model_copy(update=update)


def parse_config(data: dict, source: str = "config", base_dir: str | Path | None = None, line_of=None) -> JobConfig:
    """Validate a config mapping; relative paths are resolved against ``base_dir``; ``line_of`` gives the
    line of a field refused (:func:`~transforms.config_yaml.yaml_lines`)."""
    if data is None:
        raise ConfigError(f"{source}: the config is empty (nothing but comments or blank lines)")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    base = None if base_dir is None else base_dir if isinstance(base_dir, str) and "://" in base_dir else Path(base_dir)
    # a local config's folder: where its relative file: key references are (gs://: key files are local)
    context = {"config_dir": str(base.resolve())} if isinstance(base, Path) else None
    try:
        cfg = JobConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source, line_of)) from None
    if problems := _shell_paths(cfg, source, line_of, base):
        raise ConfigError("\n".join(problems))
    if base is None:
        return cfg
    profiles = cfg.profiles.model_copy(update={"path": _resolve(cfg.profiles.path, base)})
    sources = [
        ds.model_copy(update={"segments": _resolve(ds.segments, base), "encryption": _resolve_refs(ds.encryption, base)})
        for ds in cfg.data_sources
    ]
    suppression = [entry.model_copy(update={"path": _resolve(entry.path, base)}) for entry in cfg.suppression]
    return cfg.model_copy(update={"profiles": profiles, "data_sources": sources, "suppression": suppression})


def load_config(path: str) -> JobConfig:
    """Read and validate a YAML config; relative paths in it are relative to the file."""
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(path) as handle:
            raw = handle.read()
    except Exception as exc:  # noqa: BLE001 - one clear line for any I/O problem
        raise ConfigError(f"{path}: cannot read the config ({type(exc).__name__})") from None
    text = config_text(raw, path)
    data = read_yaml(text, path)
    base = path.rsplit("/", 1)[0] if "://" in path else Path(path).resolve().parent
    return parse_config(data, source=path, base_dir=base, line_of=yaml_lines(text))


def pin_secret_versions(cfg: JobConfig) -> JobConfig:
    """The config with its ``gcpsm:`` references to a version alias (``versions/latest``) pinned to the
    version the alias names now (:func:`~transforms.secrets.pinned_reference`): what the launcher
    checks is what every worker reads, however long after. Other references are left as they are."""
    sources, problems = [], []
    for i, ds in enumerate(cfg.data_sources):
        update = {}
        for field in ("key", "iv", "keyring") if ds.encryption else ():
            ref = getattr(ds.encryption, field)
            try:
                pinned = pinned_reference(ref)
            except KeyMaterialError as exc:
                problems.append(f"data_sources[{i}].encryption: {exc}")
                continue
            if pinned != ref:
                update[field] = pinned
        sources.append(ds.model_copy(update={"encryption": ds.encryption.model_copy(update=update)}) if update else ds)
    if problems:
        raise ConfigError("\n".join(problems))
    return cfg.model_copy(update={"data_sources": sources})
