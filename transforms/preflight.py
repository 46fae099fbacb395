"""Checks run by the launchers before any pipeline starts: inputs exist, columns exist, keys load.

This is the only place that reads inputs at launch time; transforms read them on the workers.
"""
from __future__ import annotations

from transforms.config import ConfigError, JobConfig
from transforms.dump_files import is_dump_file
from transforms.errors import InputError
from transforms.profiles import needed_columns, read_schema_names
from transforms.storage import glob


def profile_column_problems(cfg: JobConfig, needed: list[str], optional: tuple = ()) -> list[str]:
    """Problems with the profile extract: no file matches, unreadable, or a needed column missing
    (each named by the config field that asks for it)."""
    extracts = glob(cfg.profiles.path, missing_ok=True)
    if not extracts:
        return [f"profiles.path: no file matches '{cfg.profiles.path}'"]
    try:
        columns = set(read_schema_names(extracts[0], cfg.profiles.resolved_format))
    except (InputError, OSError, ValueError) as exc:
        return [f"profiles.path: {exc}"]
    return [
        f"{_field_naming(cfg, col)}: column '{col}' is not in the extract {extracts[0]}"
        for col in needed
        if col not in columns and col not in optional
    ]


def check_inputs(cfg: JobConfig, check_keys: bool = True) -> None:
    """Raise :class:`ConfigError` (one line per problem) when the job cannot run as configured."""
    problems = profile_column_problems(cfg, needed_columns(cfg), optional=(cfg.profiles.visitor_ids,))
    for i, ds in enumerate(cfg.data_sources):
        if not [p for p in glob(ds.segments, missing_ok=True) if is_dump_file(p)]:
            problems.append(f"data_sources[{i}].segments: no segment dump matches '{ds.segments}'")
        if check_keys and ds.decrypts:
            from transforms.crypto import build_decryptor
            from transforms.errors import KeyMaterialError

            try:
                build_decryptor(ds, run_date=None) if ds.encryption.algorithm == "aes-cbc" else _check_keyring(ds)
            except KeyMaterialError as exc:
                problems.append(f"data_sources[{i}].encryption: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))


def _check_keyring(ds) -> None:
    from transforms.secrets import load_keyring

    load_keyring(ds.encryption.keyring)


def _field_naming(cfg: JobConfig, column: str) -> str:
    for i, ds in enumerate(cfg.data_sources):
        if ds.match_on and cfg.profiles.column_for(ds.match_on) == column:
            return f"data_sources[{i}].match_on"
    for field in ("id", "opt_out", "visitor_ids"):
        if getattr(cfg.profiles, field) == column:
            return f"profiles.{field}"
    return "profiles"
