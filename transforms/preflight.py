"""Checks run by the launchers before any pipeline starts: inputs exist, columns exist, keys load
(the import and nightly jobs: :func:`check_inputs`; the export's own: :mod:`transforms.preflight_export`).

These two modules are the only places that read inputs at launch time; transforms read them on the workers.
"""
from __future__ import annotations

import fnmatch
import os
import posixpath

from transforms.config import ConfigError, JobConfig
from transforms.control_files import controls_promising
from transforms.dump_listing import dump_folders, is_dump_file, unfinished_delivery, upload_glob, uploads_beside
from transforms.dump_names import (iter_after_full, misfiled_dump, missing_splits, older_full_delivery, parse_dump_name,
                                   sync_mode_of, unnamed_beside_named)
from transforms.errors import InputError, KeyMaterialError
from transforms.extract_header import read_schema_names
from transforms.jsonl_keys import Samples, jsonl_key_problems
from transforms.key_cache import INCOMING, MANIFEST, NIGHTLY_CACHE
from transforms.profiles import column_field, doubled_column, key_columns, needed_columns
from transforms.storage import folder_hint, glob, join_path, listing_failure, literal, matched, one_file_twice


def profile_column_problems(cfg: JobConfig, needed: list[str], optional: tuple = ()) -> list[str]:
    """Problems with the profile extract: no file matches, or a file of it unreadable or missing a
    needed column (each named by the config field that asks for it). Every file of a glob is
    checked: its header, footer or first record only."""
    extracts = glob(cfg.profiles.path, missing_ok=True)
    if not extracts:
        return [f"profiles.path: no file matches '{cfg.profiles.path}'{folder_hint(cfg.profiles.path, typed=True)}"]
    problems, headers = [], {}
    if (twice := one_file_twice(extracts)) is not None:
        problems.append(f"profiles.path: {twice[0]} and {twice[1]} are one file (a link to the "
                        "other): its profiles would be read twice; narrow the glob")
    # The opt-out is left out: a part without it fails when read (an unknown opt-out is never a yes).
    omissible = [col for col in optional if col in needed and col != cfg.profiles.consent_column]
    samples = Samples(omissible if cfg.profiles.resolved_format == "jsonl" and len(extracts) > 1 else [])
    for extract in extracts:
        try:
            names = read_schema_names(extract, cfg.profiles.resolved_format, then=samples.reader(extract),
                                      pattern=cfg.profiles.path)
        except (InputError, OSError, ValueError) as exc:
            problems.append(f"profiles.path: {exc}")
            continue
        headers[extract] = columns = set(names)
        doubled = doubled_column(names, needed)
        if doubled:
            problems.append(f"profiles.path: {extract}: {doubled}")
        spaced = {name.strip(): name for name in names if name != name.strip()}
        # A CSV header of one column holding another separator: Excel in a European locale writes ';'.
        other = next((c for c in ";\t|" if len(names) == 1 and c in names[0]), None) \
            if cfg.profiles.resolved_format == "csv" else None
        problems += [f"{column_field(cfg, col)}: column '{col}' is not in the extract {extract}"
                     + (f" (its header has '{spaced[col]}', with spaces)" if col in spaced else "")
                     + (f" (its header is one column holding '{other.encode('unicode_escape').decode()}': a CSV is "
                        "separated by commas)" if other else "")
                     for col in needed if col not in columns and col not in optional]
    keys = set(key_columns(cfg, export=True))
    return (problems + _optional_in_some_files(cfg, headers, [col for col in optional if col in needed])
            + (jsonl_key_problems(cfg, headers, samples, [col for col in omissible if col in keys])
               if len(headers) == len(extracts) else []))  # a file not read is a problem named already


def first_record_optional(cfg: JobConfig, export: bool = False) -> tuple[str, ...]:
    """Columns a JSONL extract's first record may lack: the key columns and the visitor IDs (JSON
    writers omit null fields: Spark's to_json; a part without them is read as profiles without
    them, the extract's records checked by :mod:`transforms.jsonl_keys`) and the export's opt-out
    (unknown consent; a part without it is an error, which the reading finds)."""
    if cfg.profiles.resolved_format != "jsonl":
        return ()
    p = cfg.profiles
    return (*key_columns(cfg, export), *((p.consent_column,) if export and p.consent_column else ()),
            *((p.visitor_ids,) if export and p.visitor_ids else ()))


def _optional_in_some_files(cfg: JobConfig, headers: dict[str, set], optional: list[str]) -> list[str]:
    """An optional column (the visitor IDs) that a CSV or Parquet file's header has and another's
    lacks: a partial export, whose profiles would give no key (their lines unmatched, exit 0). A
    JSONL record may omit it: only its first record is read here."""
    if cfg.profiles.resolved_format == "jsonl":
        return []
    problems = []
    for col in optional:
        having = [extract for extract, columns in headers.items() if col in columns]
        problems += [f"{column_field(cfg, col)}: column '{col}' is not in the extract {extract}, where {having[0]} has it"
                     for extract, columns in headers.items() if having and col not in columns]
    return problems


def copied_delivery(paths: list[str]) -> tuple[str, str] | None:
    """Two of one data source's dumps that are one delivery in two folders (an archive, a transfer
    run again into another folder), or compressed and not (``gunzip -k``), else None: read both, its
    lines counted twice. A dump's name says its delivery (DID, DPID, timestamp, split): one such name
    twice, with or without ``.gz``, is one; a name that does not parse is taken for one when its size
    is the same too."""
    by_name: dict[str, list[str]] = {}
    for path in paths:
        name = posixpath.basename(path)
        by_name.setdefault(name.removesuffix(".gz") if parse_dump_name(name) is not None else name, []).append(path)
    for name, same in sorted(by_name.items()):
        if len(same) < 2:
            continue
        if parse_dump_name(name) is not None:
            return same[0], same[1]
        sizes: dict[int, str] = {}
        for path in same:
            size = matched(literal(path))[0].size_in_bytes
            if size in sizes:
                return sizes[size], path
            sizes[size] = path
    return None


def dated_path_problems(cfg: JobConfig, segments: bool = True) -> list[str]:
    """The input paths holding a ``{date}`` placeholder, one line each, for a job that does not fill
    it (the import; the export, which reads no dump: ``segments`` False): a nightly's config given to
    it looked its paths up as written and said 'no file matches' them."""
    fields = [("profiles.path", cfg.profiles.path)]
    fields += [(f"data_sources[{i}].segments", ds.segments) for i, ds in enumerate(cfg.data_sources)] if segments else []
    return [f"{field}: '{path}' holds a {{date}} placeholder, which only the nightly job fills (audience-sync nightly "
            "--date YYYY-MM-DD): give this job the path of one night" for field, path in fields if "{date" in path]


def check_inputs(cfg: JobConfig, check_keys: bool = True, one_off: bool = False, output: str | None = None,
                 undelivered: frozenset = frozenset(), key_cache: str | None = None) -> None:
    """Raise :class:`ConfigError` (one line per problem) when the job cannot run as configured;
    ``one_off``: the import, which applies no removal (:func:`~transforms.dump_names.iter_after_full`);
    ``output``: the folder the job writes (``--output``, the nightly's ROOT), whose files are no input;
    ``undelivered``: data sources a night may read no dump of (:mod:`transforms.undelivered`);
    ``key_cache``: the import's ``--key-cache`` folder (:func:`key_cache_problems`)."""
    if one_off and (dated := dated_path_problems(cfg)):
        raise ConfigError("\n".join(dated))
    problems = key_cache_problems(key_cache, output) if key_cache else []
    problems += profile_column_problems(cfg, needed_columns(cfg),
                                        optional=(cfg.profiles.visitor_ids, *first_record_optional(cfg)))
    problems += suppression_problems(cfg)
    if output:
        problems += own_output_problems("profiles.path", glob(cfg.profiles.path, missing_ok=True), output)
    if key_cache:
        problems += key_cache_input_problems("profiles.path", glob(cfg.profiles.path, missing_ok=True), key_cache)
    readers: dict[str, list[str]] = {}  # dump -> the data sources whose glob matches it
    other_inputs = _other_inputs(cfg)
    for i, ds in enumerate(cfg.data_sources):
        try:
            listed = glob(ds.segments)
        except Exception as exc:  # noqa: BLE001 - not found lists nothing; a folder it may not read is named
            if (why := listing_failure(exc)) is not None:
                problems.append(f"data_sources[{i}].segments: cannot list '{ds.segments}' ({why})")
                continue
            listed = []
        paths = [path for path in listed if is_dump_file(path)]
        wider = glob(uploads, missing_ok=True) if (uploads := upload_glob(ds.segments)) else []  # uploads too
        if not paths and ds.name not in undelivered:
            begun = unfinished_delivery(listed, wider) or controls_promising(ds.segments)
            problems.append(f"data_sources[{i}].segments: no segment dump matches '{ds.segments}'" + (
                f", but {posixpath.basename(begun[0])} is there (a delivery that did not finish?)" if begun
                else folder_hint(ds.segments)))
        own = own_output_problems(f"data_sources[{i}].segments", paths, output) if output else []
        own += key_cache_input_problems(f"data_sources[{i}].segments", paths, key_cache) if key_cache else []
        own += [f"data_sources[{i}].segments: {path} is an input of {other_inputs[_real(path)]}, not a dump: narrow the glob"
                for path in paths if _real(path) in other_inputs][:1]
        problems += own
        problems += [f"data_sources[{i}].segments: {path}: {problem}" for path, problem in missing_splits(paths)]
        problems += [f"data_sources[{i}].segments: {path}: a folder named as a dump, which the glob does not read (an "
                     "archive extracted into a folder of its name?): move its dump out in its place"
                     for path in dump_folders(ds.segments)[:1]]
        problems += [f"data_sources[{i}].segments: {path}: an upload in progress beside the dumps (a transfer not "
                     "finished?): read without it, the delivery would be partial; rerun once it is complete, or "
                     "remove it" for path in uploads_beside(paths, [*listed, *wider])[:1]]
        if (deliveries := older_full_delivery(paths, ds.sync_mode)) is not None:
            newer, older = deliveries[0].rsplit("/", 1)[-1], deliveries[1]
            what, effect = (("a full", "it keeps every user that one removed") if sync_mode_of(ds, older) == "full"
                            else ("an iter", "it would bring back what that one no longer holds"))
            problems.append(f"data_sources[{i}].segments: {older}: {what} delivery older than {newer}; a full dump "
                            f"is the whole audience, and read beside the newer one {effect}: move it away or narrow "
                            "the glob")
        if one_off and (changes := iter_after_full(paths, ds.sync_mode)) is not None:
            problems.append(f"data_sources[{i}].segments: {changes[1]}: an iter delivery after "
                            f"{changes[0].rsplit('/', 1)[-1]}; the import applies no removals, so read together "
                            "the users it takes out would stay: import the full dump alone, or run nightly")
        # A local dump by its real path: 'seg/' and 'seg/../seg/' (or a symlink to it) are one folder.
        real = {path: _real(path) for path in paths}
        for path in paths:
            readers.setdefault(real[path], []).append((ds.name, path))
        shared = [p for p in paths if len(readers[real[p]]) > 1]
        names = list(dict.fromkeys(name for name, _ in readers[real[shared[0]]])) if shared else []
        if len(names) > 1:  # its lines would be imported (and counted) once per data source
            more = f" (and {len(shared) - 1} more)" if len(shared) > 1 else ""
            problems.append(f"data_sources[{i}].segments: {shared[0]}{more} matched by "
                            f"{len(names)} data sources ({', '.join(names)}): a dump "
                            "belongs to one data source; narrow the glob")
        elif shared:  # one glob reaching a dump by two paths (a 'latest' link beside it): read twice
            first, second = (path for _, path in readers[real[shared[0]]][:2])
            problems.append(f"data_sources[{i}].segments: {first} and {second.rsplit('/', 1)[-1]} are one dump (a link "
                            "or another spelling of its folder): its lines would be read twice; narrow the glob")
        dpids = {other.dpid: other.name for other in cfg.data_sources if other.dpid != ds.dpid}
        if not shared and (misfiled := misfiled_dump(paths, ds.dpid, dpids)) is not None:
            problems.append(f"data_sources[{i}].segments: {misfiled[0]}: its name says data source {misfiled[1]} "
                            f"('{misfiled[2]}'), not {ds.dpid} ('{ds.name}'): another data source's delivery in this "
                            "folder? its IDs would be read as this one's: move it, or narrow the glob")
        copied = None if shared else copied_delivery(paths)
        if copied is not None and posixpath.dirname(copied[0]) == posixpath.dirname(copied[1]):
            problems.append(f"data_sources[{i}].segments: {copied[0]} and {posixpath.basename(copied[1])} are one "
                            "delivery, compressed and not (a copy decompressed beside it?): its lines would be read "
                            "twice; remove one")
        elif copied is not None:
            problems.append(f"data_sources[{i}].segments: {copied[0]} and {copied[1]} are one delivery in two folders: "
                            "its lines would be read twice; narrow the glob")
        # A link to a named dump is one dump read twice (above), the job's own output named already.
        aside = unnamed_beside_named([p for p in paths if len(readers[real[p]]) == 1])
        if aside is not None and not own:
            problems.append(f"data_sources[{i}].segments: {aside[0]}: its name does not say which delivery it is, "
                            f"beside {aside[1].rsplit('/', 1)[-1]} (a copy, or a dump moved aside: '.bak', ' (1)'?); "
                            "read beside a full dump it would keep users that one removed: move it away or narrow "
                            "the glob")
        if check_keys and ds.decrypts:
            from transforms.crypto import build_decryptor

            try:
                build_decryptor(ds, run_date=None) if ds.encryption.algorithm == "aes-cbc" else _check_keyring(ds)
            except KeyMaterialError as exc:
                problems.append(f"data_sources[{i}].encryption: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))


# What a run writes in its output folder (an import's --output, a nightly's ROOT): the first part of
# the path below it, or how it starts (run folders, the nightly's staging and partitions).
OWN_OUTPUTS = ("reconciled", "file_audience", "rejected", "report.json", "report.html", "_SUCCESS")
OWN_PREFIXES = ("_incomplete-", "_staging", "dt=")


def _below(path: str, folder: str) -> str | None:
    """``path`` relative to ``folder`` ('.' for the folder itself; local paths by their real paths),
    or None when it is not in it."""
    if "://" in path or "://" in folder:
        base = folder.rstrip("/") + "/"
        return "." if path.rstrip("/") + "/" == base else path[len(base):] if path.startswith(base) else None
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(folder))
    return None if relative == ".." or relative.startswith("../") else relative


def _real(path: str) -> str:
    return path if "://" in path else os.path.realpath(path)


def _other_inputs(cfg: JobConfig) -> dict[str, str]:
    """The files of the profile extract and the suppression lists (real paths) -> their field: a
    segments glob reaching one read it as a dump (beside a named dump, refused as one moved aside)."""
    fields = [("profiles.path", cfg.profiles.path)] + [(f"suppression[{i}].path", e.path) for i, e in enumerate(cfg.suppression)]
    return {_real(path): field for field, pattern in fields for path in glob(pattern, missing_ok=True)}


def key_cache_problems(key_cache: str, output: str | None) -> list[str]:
    """``--key-cache`` must be a folder of its own (a file: :func:`pipelines.launch.start`). In the
    output, the profile keys lay among the outputs, or in a folder the job writes were removed by
    its publish before they were saved (every run failed after publishing)."""
    if output and _below(key_cache, output) is not None:
        return [f"--key-cache {key_cache}: in the output {output}: the profile keys would be published among the "
                "outputs (or removed with a folder the job writes); keep the cache elsewhere"]
    root = posixpath.dirname(key_cache.rstrip("/"))  # a nightly root: its nights' dt=* folders (one file is enough)
    if posixpath.basename(key_cache.rstrip("/")) == NIGHTLY_CACHE and matched(join_path(root, "dt=*", "*"), limit=1):
        return [f"--key-cache {key_cache}: the profile-key cache of the nightly root {root}: a night starting during "
                "this import would delete its staged keys; keep the import's cache elsewhere"]
    return []


def own_output_problems(field: str, paths: list[str], output: str) -> list[str]:
    """The first of ``paths`` that is a file the job writes under ``output`` (a glob reaching into it: the
    previous run's report.json read as a dump failed 'wrong field_separator or columns?', or under
    max_format_error_ratio was published as rejected lines), as a problem of ``field``."""
    return _reaching(field, paths, output, lambda rel: rel.split("/")[0] in OWN_OUTPUTS or rel.startswith(OWN_PREFIXES),
                     "a file this job writes in its output", "write the output elsewhere")


def key_cache_input_problems(field: str, paths: list[str], key_cache: str) -> list[str]:
    """The first of ``paths`` that is a file of the import's ``--key-cache`` (a glob reaching into it:
    its MANIFEST.json and parts read as dumps beside the named one were refused as a dump moved
    aside; beside unnamed dumps, as dumps), as a problem of ``field``."""
    return _reaching(field, paths, key_cache, lambda rel: rel == MANIFEST or rel.startswith(INCOMING + "/")
                     or ("/" not in rel and fnmatch.fnmatch(rel, "part-*.arrow")),
                     "a file of the profile-key cache", "keep the cache elsewhere")


def _reaching(field: str, paths: list[str], folder: str, owned, what: str, remedy: str) -> list[str]:
    """The first of ``paths`` in ``folder`` whose path there is ``owned``, as one problem of ``field``."""
    hits = [p for p in paths if (rel := _below(p, folder)) is not None and owned(rel)]
    if not hits:
        return []
    more = f" (and {len(hits) - 1} more)" if len(hits) > 1 else ""
    return [f"{field}: {hits[0]}{more} is {what} {folder}: narrow the glob or {remedy}"]


def _check_keyring(ds) -> None:
    from transforms.secrets import load_keyring

    load_keyring(ds.encryption.keyring)


def suppression_problems(cfg: JobConfig) -> list[str]:
    """A configured suppression list that matches no file would silently suppress nobody."""
    return [f"suppression[{i}].path: no file matches '{entry.path}'{folder_hint(entry.path, typed=True)}"
            for i, entry in enumerate(cfg.suppression) if not glob(entry.path, missing_ok=True)]
