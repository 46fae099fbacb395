"""Checks run by the launchers before any pipeline starts: inputs exist, columns exist, keys load.

This is the only place that reads inputs at launch time; transforms read them on the workers.
"""
from __future__ import annotations

from transforms.config import ConfigError, JobConfig
from transforms.dump_files import is_dump_file
from transforms.errors import InputError
from transforms.profiles import column_field, needed_columns, read_schema_names
from transforms.storage import glob


def profile_column_problems(cfg: JobConfig, needed: list[str], optional: tuple = ()) -> list[str]:
    """Problems with the profile extract: no file matches, or a file of it unreadable or missing a
    needed column (each named by the config field that asks for it). Every file of a glob is
    checked: its header, footer or first record only."""
    extracts = glob(cfg.profiles.path, missing_ok=True)
    if not extracts:
        return [f"profiles.path: no file matches '{cfg.profiles.path}'"]
    problems = []
    for extract in extracts:
        try:
            columns = set(read_schema_names(extract, cfg.profiles.resolved_format))
        except (InputError, OSError, ValueError) as exc:
            problems.append(f"profiles.path: {exc}")
            continue
        problems += [f"{column_field(cfg, col)}: column '{col}' is not in the extract {extract}"
                     for col in needed if col not in columns and col not in optional]
    return problems


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
