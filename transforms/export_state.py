"""The export state: what the platform should hold, per data source and audience, after each export.

    ROOT/<data source>/<audience, %-quoted>/v-000001/members/part-*.parquet   (profile_id, user_id)
    ROOT/<data source>/<audience, %-quoted>/v-000001/_SUCCESS                  manifest, written last

An export with ``--state ROOT`` computes its adds and removals against the audience's current
version (the highest ``v-N`` with ``_SUCCESS``), writes the pairs the platform holds after it into
``v-(N+1)/members/`` and, once its own outputs (files, ``report.json``) are published, writes
``v-(N+1)/_SUCCESS``: the commit point, as for the nightly partitions. A version without
``_SUCCESS`` (a failed or killed run) is invisible and is cleared by the next run, unless the run
published its files (``report.json``) before it stopped: its manifest waits as ``_PENDING``
(written before the publish), those files may be on the platform, and computed against the older
state a run would never remove what they added; the next run is refused, but a rerun into its
``--output`` on its run date (which replaces them), until ``_PENDING`` is renamed ``_SUCCESS``
(they were delivered) (:func:`published_uncommitted`). Versions are
kept (audit; to fall back, delete the latest ``_SUCCESS``). One export per audience at a time.

A rerun into the same ``--output`` on the same run date (a retry) replaces the files of the run it
repeats, so it is computed against the version that run read (its manifest's ``previous``) and
sends the same changes again: computed against the version that run committed, it would find
nothing to send and replace the unsent changes with nothing. A rerun that would replace the files of
a version a later one builds on is refused.

An overwrite that takes users out of the data source's other audiences (a leaver that is not
eligible keeps no trait) records it in their states: a new version of each such audience without
those pairs, written, held ``_PENDING`` and committed with the overwrite's own, its manifest
naming the overwrite (``stripped_by``; :mod:`transforms.export_others`).

``--existing DIR ...`` (previous export outputs) is the hand-passed alternative: the earlier state is
rebuilt from their ``exported/`` (pairs sent) and ``removed/`` (pairs removed) in run order.
"""
from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from urllib.parse import unquote

import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.errors import InputError, RunFailed
from transforms.export_paths import audience_dir, same_output, version_dir
from transforms.output_lock import write_error
from transforms.publish import REPORT, SUCCESS
from transforms.publish_journal import write_whole
from transforms.storage import absolute, glob, join_path

MEMBERS = "members"
PENDING = "_PENDING"  # a version's manifest while its run publishes its files (renamed _SUCCESS by hand)
STRIPPED_BY = "stripped_by"  # a version an overwrite of another audience wrote: that run, its files


def read_json(path: str) -> dict:
    """A manifest: a JSON object, or an error naming the file (a damaged or emptied manifest)."""
    with FileSystems.open(path) as handle:
        data = handle.read()
    try:
        doc = json.loads(data)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise InputError(path, "not a JSON object (a damaged manifest: restore it, or delete it to fall back to the "
                               "version before)")
    return doc


@dataclass(frozen=True)
class StateVersion:
    number: int
    path: str
    manifest: dict

    @property
    def members(self) -> str:
        return join_path(self.path, MEMBERS, "*.parquet")


def committed_versions(folder: str, marker: str = SUCCESS) -> list[StateVersion]:
    """The committed versions of one audience, oldest first (``marker=PENDING``: the versions whose
    manifest waits as ``_PENDING``)."""
    return [StateVersion(n, posixpath.dirname(path), read_json(path)) for n, path in _markers(folder, marker)]


def _markers(folder: str, marker: str) -> list[tuple[int, str]]:
    """``(version number, path of its marker)`` of one audience's versions with ``marker``, oldest first."""
    found = []
    for path in glob(join_path(folder, "v-*", marker), missing_ok=True):
        try:
            found.append((int(posixpath.basename(posixpath.dirname(path)).removeprefix("v-")), path))
        except ValueError:
            continue
    return sorted(found)


def published_uncommitted(folder: str, latest: int | None) -> list[StateVersion]:
    """The versions above ``latest`` whose run published files (its ``report.json`` names the
    version) but stopped before writing ``_SUCCESS``: those files may be on the platform."""
    return [v for v in committed_versions(folder, PENDING) if v.number > (latest or 0) and _published(folder, v)
            and not FileSystems.exists(join_path(v.path, SUCCESS))]


def _published(folder: str, v: StateVersion) -> bool:
    """Whether the files of the run that wrote ``v`` are published: its ``report.json`` names ``v``
    (an overwrite's names the versions it wrote for other audiences in ``state_others``)."""
    by = v.manifest.get(STRIPPED_BY)
    run = by if isinstance(by, dict) else v.manifest
    report = join_path(str(run.get("output", "")), REPORT)
    if not (run.get("files") and FileSystems.exists(report)):
        return False
    doc = read_json(report)
    if by is None:
        return doc.get("state_version") == v.number
    return doc.get("state_version") == by.get("version") and any(
        same_output(str(o.get("state_folder")), folder) and o.get("version") == v.number
        for o in doc.get("state_others") or [])


def current_version(folder: str) -> StateVersion | None:
    """The audience's newest committed version, its manifest the only one read (an overwrite asks
    for every other audience's: a daily export's hundreds of versions each were a read, on gs:// a
    request)."""
    found = _markers(folder, SUCCESS)
    if not found:
        return None
    number, path = found[-1]
    return StateVersion(number, posixpath.dirname(path), read_json(path))


@dataclass(frozen=True)
class OtherAudience:
    """Another audience of the data source, for an overwrite: its ``segment`` (the trait its members
    keep) and current ``version``; ``state`` is where the overwrite records the users it takes out."""

    segment: str
    version: StateVersion

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.version.path.rstrip("/"))

    @property
    def state(self) -> ExportState:
        n = self.version.number
        return ExportState(folder=self.folder, previous=n, latest=n)


@dataclass(frozen=True)
class EarlierRun:
    """Parquet parts of one earlier run: the pairs it left on the platform (``exported``) and those
    it removed (``removed``, optional). ``replaces``: its exported pairs are the whole audience."""

    exported: str
    removed: str | None = None
    replaces: bool = False


@dataclass(frozen=True)
class ExportState:
    """What the launcher resolved about the earlier state and where this run's state goes."""

    runs: tuple[EarlierRun, ...] = ()
    others: tuple[OtherAudience, ...] = ()  # the data source's other audiences (an overwrite)
    root: str | None = None
    folder: str | None = None  # the audience's state folder (--state)
    previous: int | None = None  # the version read (None: no state yet)
    latest: int | None = None  # the newest committed version at launch (a rerun reads the one before)
    replaced: int | None = None  # the version whose run this rerun repeats (same --output and run date)
    expected_pairs: int | None = None  # that version's pair count, checked against what was read
    existing: tuple[str, ...] = ()  # --existing folders (local ones absolute)

    @property
    def replaces(self) -> tuple[bool, ...]:
        return tuple(run.replaces for run in self.runs)

    @property
    def version(self) -> int | None:
        """The version this run commits (None without --state)."""
        return None if self.folder is None else (self.latest or 0) + 1

    @property
    def version_dir(self) -> str | None:
        return None if self.folder is None else version_dir(self.folder, self.version)

    def earlier_parts(self) -> list[tuple[int, bool, str]]:
        """``(run, removed, glob)`` of every earlier part, for :class:`transforms.export_classify.ReadEarlierPart`."""
        out = []
        for k, run in enumerate(self.runs):
            out.append((k, False, run.exported))
            if run.removed:
                out.append((k, True, run.removed))
        return out


def state_for(root: str, spec, problems: list[str], output: str = "") -> ExportState:
    """The ``--state ROOT`` of one export (``spec``: :class:`transforms.export_spec.ExportSpec`) into
    ``output``; appends to ``problems`` why it cannot serve."""
    ds = spec.data_source
    folder = audience_dir(root, ds.name, spec.audience)
    versions = committed_versions(folder)
    latest = versions[-1] if versions else None
    current, replaced = latest, None
    run_date = spec.run_date.isoformat()
    written_here = [v for v in versions if v.manifest.get("run_date") == run_date and STRIPPED_BY not in v.manifest
                    and same_output(str(v.manifest.get("output", "")), output)] if output else []
    if written_here and written_here[-1] is not latest:
        v, by = written_here[-1], latest.manifest.get(STRIPPED_BY)
        problems.append(f"--output {output}: it holds the files of export state version {v.number} (run date "
                        f"{run_date}), which version {latest.number} builds on"
                        + (f" (the overwrite of audience '{by.get('audience')}' took users out of it)"
                           if isinstance(by, dict) else "")
                        + ": replacing them would lose what they send; write to another --output")
    elif written_here:
        replaced = latest.number
        base = latest.manifest.get("previous")
        current = next((v for v in versions if v.number == base), None)
        if base is not None and current is None:
            problems.append(f"--state: this run repeats version {latest.number} (same --output and run date) and is "
                            f"computed against the version it read, {base}, which is not committed; write to another "
                            "--output to export against the current version")
    for v in published_uncommitted(folder, None if latest is None else latest.number):
        m = v.manifest
        if STRIPPED_BY in m:
            problems.append(stripped_pending(spec.audience, v))
        elif m.get("run_date") != run_date or not same_output(str(m.get("output")), output):
            # Computed against the version before it, a run would never remove what those files added.
            problems.append(f"--state: version {v.number} of audience '{spec.audience}' published its files to "
                            f"{m.get('output')} but was never committed (its run stopped before its state): rerun into "
                            f"--output {m.get('output')} --run-date {m.get('run_date')} to replace them if they did not "
                            f"go to the platform; if they did, rename {join_path(v.path, PENDING)} to {SUCCESS}"
                            + "".join(f" and {path} too" for path in _others_pending(m)))
    runs, expected = (), None
    if current is not None:
        m = current.manifest
        if (m.get("dpid"), m.get("target_dpid")) != (ds.dpid, ds.target_dpid):
            problems.append(f"--state: audience '{spec.audience}' was exported through dpid {m.get('dpid')} "
                            f"(target {m.get('target_dpid')}), data source '{ds.name}' is now dpid {ds.dpid} "
                            f"(target {ds.target_dpid}): its user IDs are not comparable")
        if m.get("segment") != spec.trait and spec.mode == "sync":
            problems.append(f"--state: audience '{spec.audience}' was exported as {m.get('segment')}, this run "
                            f"sends {spec.trait}: a .sync file cannot move members from one to the other; "
                            "use --mode overwrite (or another audience name)")
        runs, expected = (EarlierRun(current.members, None, True),), int(m.get("pairs", 0))
    others, version = [], (0 if latest is None else latest.number) + 1
    # Every audience under ROOT that goes to the same platform data source (dpid, target dpid),
    # under whatever data-source name the config gave it then.
    for path in audience_folders(root):
        other = current_version(path) if path.rstrip("/") != folder.rstrip("/") else None
        if spec.mode == "overwrite" and path.rstrip("/") != folder.rstrip("/"):
            problems += _stopped_other(path, other, ds, (folder, version, run_date, output))
        if other is None or (other.manifest.get("dpid"), other.manifest.get("target_dpid")) != (ds.dpid, ds.target_dpid):
            continue
        m = other.manifest
        if m.get("segment") == spec.trait and int(m.get("pairs", 1)) > 0:
            # A renamed audience or data source (or a typo in --audience) starts with nothing held: the
            # members the other name holds would never be removed; two live audiences on one segment
            # undo each other's removals. One that holds no one (emptied first, as a rename does) keeps nothing.
            source, name = (unquote(posixpath.basename(p)) for p in (posixpath.dirname(path.rstrip("/")), path.rstrip("/")))
            problems.append(f"--state: audience '{name}' of data source '{source}' already sends {spec.trait} "
                            f"({path}): one segment, one audience (a renamed audience would never remove the members "
                            f"the old name holds); export it under that name, or give '{spec.audience}' its own segment")
        if spec.mode == "overwrite":
            # A lost part would list its users without that audience's trait: out of it on the platform.
            held = parquet_rows(other.members)
            if held != int(m.get("pairs", 0)):
                problems.append(f"--state: audience '{unquote(posixpath.basename(path.rstrip('/')))}' holds {held} "
                                f"pairs in {other.members}, its {SUCCESS} says {m.get('pairs')}: a part is missing or "
                                "foreign; an overwrite would take those users out of it")
            others.append(OtherAudience(m["segment"], other))
    return ExportState(runs=runs, others=tuple(others), root=root, folder=folder,
                       previous=None if current is None else current.number, expected_pairs=expected,
                       latest=None if latest is None else latest.number, replaced=replaced)


def audience_folders(root: str) -> list[str]:
    """The state folders of every audience under ``root`` (a version committed or waiting as ``_PENDING``)."""
    return sorted({posixpath.dirname(posixpath.dirname(p)) for marker in (SUCCESS, PENDING)
                   for p in glob(join_path(root, "*", "*", "v-*", marker), missing_ok=True)})


def _stopped_other(path: str, other: StateVersion | None, ds, run: tuple) -> list[str]:
    """An overwrite lists users with the traits the other audiences' states give: one whose run
    published files it never committed (:func:`published_uncommitted`) may hold other traits now.
    But the version a stopped run of this overwrite (``run``: its state folder, version, run date and
    output) wrote for it: this run, repeating that one, writes it again."""
    folder, version, run_date, output = run
    return [f"--state: audience '{unquote(posixpath.basename(path.rstrip('/')))}' ({path}) has version {v.number}, "
            "published but never committed: what it holds is not known, and an overwrite would list its users with "
            "the traits of the version before; settle it first (its next export says how)"
            for v in published_uncommitted(path, None if other is None else other.number)
            if (v.manifest.get("dpid"), v.manifest.get("target_dpid")) == (ds.dpid, ds.target_dpid)
            and not _repeats(v.manifest.get(STRIPPED_BY), folder, version, run_date, output)]


def _others_pending(manifest: dict) -> list[str]:
    """The ``_PENDING`` manifests still waiting of the versions an overwrite wrote for other audiences."""
    paths = [join_path(version_dir(str(o.get("state_folder")), int(o.get("version", 0))), PENDING)
             for o in manifest.get("state_others") or []]
    return [path for path in paths if FileSystems.exists(path)]


def _repeats(by: dict | None, folder: str, version: int, run_date: str, output: str) -> bool:
    """Whether the overwrite that wrote a version (``by``: its manifest's ``stripped_by``) is the
    run of ``folder``'s ``version`` into ``output`` on ``run_date``."""
    return isinstance(by, dict) and by.get("version") == version and by.get("run_date") == run_date \
        and same_output(str(by.get("state_folder")), folder) and same_output(str(by.get("output")), output)


def stripped_pending(audience: str, v: StateVersion) -> str:
    """Why an export of ``audience`` is refused: its version ``v``, written by another audience's
    overwrite that published its files, was never committed."""
    by = v.manifest[STRIPPED_BY]
    run = version_dir(str(by.get("state_folder")), int(by.get("version", 0)))
    if FileSystems.exists(join_path(run, SUCCESS)):
        return (f"--state: version {v.number} of audience '{audience}' records the users the overwrite of audience "
                f"'{by.get('audience')}' took out of it (its version {by.get('version')}, committed: delivered), "
                f"but was never committed: rename {join_path(v.path, PENDING)} to {SUCCESS}")
    return (f"--state: version {v.number} of audience '{audience}' records the users the overwrite of audience "
            f"'{by.get('audience')}' took out of it; that export published its files to {by.get('output')} but was "
            f"never committed (its run stopped before its state): rerun it into --output {by.get('output')} "
            f"--run-date {by.get('run_date')} to replace them if they did not go to the platform; if they did, "
            f"rename {join_path(run, PENDING)} and {join_path(v.path, PENDING)} to {SUCCESS}")


def existing_state(folders: list[str], reports: list[dict]) -> ExportState:
    """The earlier state rebuilt from previous export outputs, applied in the order given (the order
    they ran in: :func:`transforms.export_others.run_order`); an overwrite run's ``exported/`` is the
    whole audience."""
    runs = []
    for i in range(len(folders)):
        removed = join_path(folders[i], "removed", "*.parquet")
        runs.append(EarlierRun(join_path(folders[i], "exported", "*.parquet"),
                               removed if glob(removed, missing_ok=True) else None,
                               reports[i].get("mode") == "overwrite"))
    return ExportState(runs=tuple(runs), existing=tuple(absolute(f) for f in folders))


def ensure_not_moved(state: ExportState) -> None:
    """Fail (before anything is published) when another export committed this audience's state
    since this run read it: its changes would be computed against a stale state."""
    if state.folder is None:
        return
    current = current_version(state.folder)
    if (None if current is None else current.number) != state.latest:
        raise RunFailed(f"--state: another export committed audience state {state.folder} while this run "
                        "computed its changes; rerun. Nothing was published")


def commit_state(state: ExportState, manifest: dict, name: str = SUCCESS) -> None:
    """Write the version's ``_SUCCESS`` manifest: from now on it is the audience's current state.
    With ``name=PENDING``, before the run publishes its files: a run stopped between those and its
    ``_SUCCESS`` leaves the version for the next runs to find (:func:`published_uncommitted`)."""
    ensure_not_moved(state)
    write_manifest(state.version_dir, name, {**manifest, "version": state.version, "previous": state.previous})
    if name == SUCCESS and FileSystems.exists(join_path(state.version_dir, PENDING)):
        FileSystems.delete([join_path(state.version_dir, PENDING)])


def write_manifest(version_dir: str, name: str, doc: dict) -> None:
    """A version's manifest as JSON, whole or not at all; unwritable (a full disk): one line naming it."""
    path, after = join_path(version_dir, name), f"the export's files are published, its version waits as {PENDING}"
    try:
        write_whole(path, (json.dumps(doc, indent=2) + "\n").encode("utf-8"))
    except OSError as exc:
        raise write_error(path, exc, after if name == SUCCESS else "nothing was published") from None


def parquet_rows(pattern: str) -> int:
    """The rows of the Parquet parts ``pattern`` matches, from their footers (none: 0)."""
    rows = 0
    for path in glob(pattern, missing_ok=True):
        with FileSystems.open(path) as handle:
            rows += pq.ParquetFile(handle).metadata.num_rows
    return rows


def match_parts(element):
    """``(key..., glob)`` -> ``(key..., path)`` per Parquet part (none is fine: an empty state)."""
    *key, pattern = element
    for path in glob(pattern, missing_ok=True):
        yield (*key, path)
