"""The export's checks before its pipeline starts (:func:`check_export_inputs`): what
:mod:`transforms.preflight` checks of every job's inputs, and the export's own: the targets files, the
data source's keys, and the state or previous exports it runs against (finished, comparable, whole).
"""
from __future__ import annotations

import json
import posixpath

from apache_beam.io.filesystems import FileSystems

from transforms.config import ConfigError, JobConfig
from transforms.consent import reads_as_opt_in, reads_as_opt_out
from transforms.encrypt import build_encryptor
from transforms.errors import InputError, KeyMaterialError
from transforms.export import EXPORTED, REMOVED
from transforms.export_others import missing_runs, run_order, stripped_since
from transforms.export_paths import audience_dir, same_output
from transforms.export_spec import ExportSpec, export_config
from transforms.export_state import ExportState, committed_versions, existing_state, parquet_rows, state_for
from transforms.extract_header import read_schema_names
from transforms.preflight import (dated_path_problems, first_record_optional, profile_column_problems,
                                  suppression_problems)
from transforms.profiles import needed_columns
from transforms.publish import REPORT
from transforms.storage import folder_hint, glob, join_path
from transforms.targets import TARGETS_COLUMN, targets_format


def check_export_inputs(cfg: JobConfig, spec: ExportSpec, targets: str, existing: list[str],
                        state_root: str | None = None, output: str = "") -> ExportState:
    """Raise :class:`ConfigError` (one line per problem) when the export cannot run as asked; else the
    earlier state it runs against. Reads headers, previous reports, the export state's manifests and
    (once, to fail early; never printed) the data source's keys."""
    if dated := dated_path_problems(cfg, segments=False):
        raise ConfigError("\n".join(dated))
    problems: list[str] = []
    ecfg = export_config(cfg, spec)
    index = [ds.name for ds in cfg.data_sources].index(spec.data_source.name)
    p = cfg.profiles
    if not p.consent_column and p.opt_out_missing != "consented":
        problems.append("profiles.opt_out: the export needs the opt-out column (opted-out profiles are never "
                        "exported; unknown consent is never consent), or profiles.opt_in a consent column; a source "
                        "without one must say so: profiles.opt_out_missing: consented")
    if p.opt_out and reads_as_opt_in(p.opt_out):
        problems.append(f"profiles.opt_out: '{p.opt_out}' reads as a consent (opt-in) column, where true means "
                        "consented: read as opt-outs, its consenting profiles would be withheld and its refusing "
                        f"ones exported; set profiles.opt_in: {p.opt_out} instead (the same spellings, true: "
                        "consented)")
    if p.opt_in and p.opt_out_missing == "consented":
        problems.append("profiles.opt_in with profiles.opt_out_missing: consented: an empty cell of a consent column "
                        "would read as consent, and a source writing consents only would export every profile that "
                        "gave none; leave profiles.opt_out_missing out (an empty cell is unknown: never exported)")
    if p.opt_in and reads_as_opt_out(p.opt_in):
        problems.append(f"profiles.opt_in: '{p.opt_in}' reads as an opt-out column, where true means opted out: "
                        "read as consents, its opted-out profiles would be exported and its consenting ones withheld; "
                        f"set profiles.opt_out: {p.opt_in} instead")
    problems += profile_column_problems(ecfg, needed_columns(ecfg, export=True), optional=first_record_optional(ecfg, True))
    problems += _targets_problems(targets)
    problems += suppression_problems(cfg)
    if spec.data_source.decrypts:
        try:
            build_encryptor(spec.data_source, spec.clock)
        except KeyMaterialError as exc:
            problems.append(f"data_sources[{index}].encryption: {exc}")
    problems += _output_problems(output, spec)
    state = ExportState()
    if state_root and existing:
        problems.append("--state and --existing: give one (the state replaces hand-passed previous exports)")
    elif spec.mode == "overwrite" and not state_root:
        problems.append("--mode overwrite needs --state ROOT: an .overwrite file replaces each listed user's traits "
                        "for the whole data source, which only the state of every audience exported through it knows")
    elif state_root:
        state = state_for(state_root.rstrip("/"), spec, problems, output)
        problems += _state_before_quoting(state_root.rstrip("/"), spec)
    elif existing:
        reports = []
        for folder in existing:
            found, report = _existing_problems(folder, spec)
            if output and same_output(folder, output):
                found.insert(0, "it is this run's --output: publishing would replace the files it lists")
            problems += [f"--existing {folder}: {p}" for p in found]
            reports.append(report)
        given = list(zip(existing, reports))
        problems += stripped_since(given) + missing_runs(given)
        if not problems:
            order = run_order(given)  # as they ran, whatever their run dates or the order given
            state = existing_state([existing[i] for i in order], [reports[i] for i in order])
    if problems:
        raise ConfigError("\n".join(problems))
    return state


def _state_before_quoting(root: str, spec: ExportSpec) -> list[str]:
    """An audience or data source named ``.`` or ``..`` whose state a release before their %-quoting
    wrote where the unquoted path led (``--audience .``: ``ROOT/<data source>`` itself; on gs:// a
    ``./`` in the object names): read from its quoted folder alone, it held no one, and the members
    that state holds were never removed (exit 0). Refused, naming both folders."""
    ds = spec.data_source
    if not {ds.name, spec.audience} & {".", ".."}:
        return []
    old = join_path(root, ds.name, spec.audience)  # as audience_dir joined them before
    if not any((v.manifest.get("audience"), v.manifest.get("data_source")) == (spec.audience, ds.name)
               for v in committed_versions(old)):
        return []
    shown = old if "://" in old else posixpath.normpath(old)
    return [f"--state: audience '{spec.audience}' of data source '{ds.name}' has its state in {shown} (written before "
            f"'.' and '..' were %-quoted): move its v-* folders into {audience_dir(root, ds.name, spec.audience)}, "
            "where it is read now; read from there alone it holds no one, and its members would never be removed"]


def _output_problems(output: str, spec: ExportSpec) -> list[str]:
    """``--output`` holding another audience's finished export (another name, or another data source: its
    name and dpid both another; one of them corrected since is this one's, a rerun): two
    audiences of one data source and run date write the same file names, so this run would replace
    that one's files, delivered or not, while its state records their members as held (never sent)."""
    if not output:
        return []
    try:
        with FileSystems.open(join_path(output, REPORT)) as handle:
            previous = json.loads(handle.read())
    except Exception:  # noqa: BLE001 - no finished run there (or not one this check can read)
        return []
    if not isinstance(previous, dict) or previous.get("job") != "export":
        return []
    ds = spec.data_source
    if previous.get("audience") == spec.audience and (previous.get("data_source") == ds.name or (
            previous.get("dpid"), previous.get("target_dpid")) == (ds.dpid, ds.target_dpid)):
        # this audience's own folder, its data source's dpid or name corrected since or not: a rerun
        # replaces its files (the export state decides whether it may)
        return []
    return [f"--output {output}: it holds the export of audience '{previous.get('audience')}' of data source "
            f"'{previous.get('data_source')}' ({previous.get('segment')}, dpid {previous.get('dpid')}, run date "
            f"{previous.get('run_date')}): this run "
            "would replace its files, sent or not, and that audience's members would be held as sent; give each "
            "audience its own --output"]


def _targets_problems(targets: str) -> list[str]:
    target_files = glob(targets, missing_ok=True)
    if not target_files:
        return [f"--targets: no file matches '{targets}'{folder_hint(targets, typed=True)}"]
    problems = []
    for path in target_files:
        try:
            fmt = targets_format(path)
            if TARGETS_COLUMN not in read_schema_names(path, fmt, pattern=targets, what="targets file"):
                problems.append(f"--targets: {path}: no '{TARGETS_COLUMN}' column")
        except InputError as exc:  # it names the file itself (the line said it twice)
            problems.append(f"--targets: {exc}")
        except (OSError, ValueError) as exc:
            problems.append(f"--targets: {path}: {exc}")
    return problems


def _existing_problems(folder: str, spec: ExportSpec) -> tuple[list[str], dict]:
    """Why a previous export's folder cannot serve as ``--existing`` (not finished, another data
    source or segment, no parts; empty when it can), and its report."""
    report_path = join_path(folder.rstrip("/"), REPORT)
    try:
        with FileSystems.open(report_path) as handle:
            previous = json.loads(handle.read())
    except Exception:  # noqa: BLE001 - one line, whatever went wrong
        return [f"no readable {REPORT}: not a finished export run"], {}
    if not isinstance(previous, dict) or previous.get("job") != "export":
        return [f"{REPORT} is not an export report"], {}
    problems = []
    if previous.get("data_source") != spec.data_source.name or previous.get("dpid") != spec.data_source.dpid:
        problems.append(f"exported through data source '{previous.get('data_source')}', "
                        f"not '{spec.data_source.name}': its user IDs are not comparable")
    if previous.get("target_dpid") != spec.data_source.target_dpid:
        problems.append(f"exported to target dpid {previous.get('target_dpid')}, not {spec.data_source.target_dpid}: "
                        "what it sent is not held by this one")
    if previous.get("segment") != spec.trait:
        problems.append("exported with another segment (audience name or --segment-id differ)")
    if not glob(join_path(folder.rstrip("/"), EXPORTED, "*.parquet"), missing_ok=True):
        problems.append(f"no {EXPORTED}/ Parquet parts")
    else:
        problems += _lost_parts(folder.rstrip("/"), previous)
    return problems, previous


def _lost_parts(folder: str, report: dict) -> list[str]:
    """A copy that lost a part of ``exported/`` (or ``removed/``) holds fewer pairs than its report
    says it sent (removed): their user IDs would never be removed (never sent again). The rows of
    suppressed pairs, written without their user ID, may merge: ``removed/`` is then checked only
    for holding no more rows than the report."""
    suppressed = report.get("removed_by_reason", {}).get("suppressed", 0)
    problems = []
    for name, key, verb in ((EXPORTED, "pairs_sent", "sent"), (REMOVED, "pairs_removed", "removed")):
        rows = parquet_rows(join_path(folder, name, "*.parquet"))
        expected = report.get(key)
        if isinstance(expected, int) and (rows > expected or (rows < expected and not (name == REMOVED and suppressed))):
            problems.append(f"{name}/ holds {rows} pairs, its {REPORT} {verb} {expected}: a part is missing or "
                            "foreign (copy the whole folder again)")
    return problems
