"""An overwrite and the data source's other audiences (``--mode overwrite --state ROOT``).

An ``.overwrite`` line gives a user its full trait list for the data source, so each listed user
keeps the traits the other audiences' export states hold for it (:class:`ReadOtherAudience`), but a
leaver whose profile is not eligible (opted out, consent unknown, suppressed) keeps none: the line
takes it out of those audiences on the platform too. Their states must say so, or an audience's next
``.sync`` export, finding the user held, never sends it again once it is eligible and targeted.

For each audience the overwrite takes users out of, :class:`StripOtherAudience` writes the next
version of its state: its current members without those user IDs' pairs, every part (before
anything is published, as the overwrite's own version's parts). :func:`other_versions` names them for
the report (``state_others``: each version, its pairs before and after, the pairs and user IDs taken
out); :func:`commit_others` writes each version's manifest (its ``stripped_by`` names the overwrite:
audience, version, output, run date, files), ``_PENDING`` with the overwrite's own before the files
are published, ``_SUCCESS`` just before the overwrite's own: a run stopped between the two leaves
only its own version pending, and its retry is computed against what the other audiences committed.
An audience the overwrite takes no one out of gets no new version.

What ``--existing`` folders cannot rebuild is checked here too: users an overwrite took out of the
audience (:func:`stripped_since`), and an earlier export a given one was computed against but that
is not given (:func:`missing_runs`); and the order they ran in (:func:`run_order`).
"""
from __future__ import annotations

import heapq
import posixpath

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from transforms.arrow_utils import split_by_bucket
from transforms.errors import InputError, RunFailed
from transforms.export_paths import output_key, same_output
from transforms.export_state import (
    MEMBERS,
    STRIPPED_BY,
    ExportState,
    OtherAudience,
    committed_versions,
    match_parts,
    published_uncommitted,
)
from transforms.outcomes import Counts, Metric
from transforms.write_parts import write_parquet
from transforms.stable_hash import bucket_of
from transforms.storage import join_path

_READ_ERRORS = (pa.ArrowInvalid, OSError, ValueError, KeyError)


def _read_part(path: str, columns: list[str] | None = None) -> pa.Table:
    try:
        with FileSystems.open(path) as handle:
            return pq.read_table(handle, columns=columns)
    except _READ_ERRORS as exc:
        raise InputError(path, f"cannot read the export state ({type(exc).__name__})") from None


class ReadOtherAudience(beam.DoFn):
    """``(segment, path)``: a part of another audience's current state -> ``(user bucket, (user_id,
    trait))`` tables (what an overwrite line must keep for those users)."""

    def __init__(self, buckets: int):
        self._buckets = buckets

    def process(self, element):
        trait, path = element
        ids = pc.unique(_read_part(path, ["user_id"])["user_id"].combine_chunks().cast(pa.string()))
        table = pa.table({"user_id": ids, "trait": pa.array([trait] * len(ids), pa.string())})
        yield from split_by_bucket(table, bucket_of(table["user_id"], self._buckets))


def strippable(state: ExportState) -> dict[str, OtherAudience]:
    """The other audiences an overwrite may take users out of, by segment: those holding pairs (one
    per segment and platform data source: :func:`transforms.export_state.state_for`)."""
    return {o.segment: o for o in state.others if int(o.version.manifest.get("pairs", 0)) > 0}


class StripOtherAudience(beam.DoFn):
    """``(segment, path)``: a part of another audience's current state, and (side input) the
    ``(user_id, trait)`` tables of the users the overwrite takes out of other audiences -> for an
    audience it takes users out of, the same part in its next version without their pairs, as
    ``(segment, path, rows, pairs taken out)``; for any other, nothing."""

    def __init__(self, versions: dict[str, str]):
        self._versions = versions  # segment -> the next version's folder

    def setup(self):
        self._ids = None

    def process(self, element, stripped: list):
        segment, path = element
        if self._ids is None:
            rows = pa.concat_tables(stripped) if stripped else pa.table({"user_id": [], "trait": []})
            self._ids = {t: pc.unique(rows.filter(pc.equal(rows["trait"], t))["user_id"].combine_chunks())
                         for t in set(rows["trait"].to_pylist())}
        if segment not in self._ids:
            return
        table = _read_part(path)
        kept = table.filter(pc.invert(pc.is_in(table["user_id"], value_set=self._ids[segment])))
        out = join_path(self._versions[segment], MEMBERS, posixpath.basename(path))
        write_parquet(kept, out)
        yield segment, out, kept.num_rows, table.num_rows - kept.num_rows


class StripOtherAudiences(beam.PTransform):
    """The users an overwrite takes out of other audiences (``(user_id, trait)`` tables) -> their
    audiences' next versions' parts (:class:`StripOtherAudience`)."""

    def __init__(self, state: ExportState):
        super().__init__()
        self._others = strippable(state)

    def expand(self, stripped):
        return (
            stripped.pipeline
            | "ListStrippableParts" >> beam.Create([(s, o.version.members) for s, o in sorted(self._others.items())])
            | "MatchStrippableParts" >> beam.FlatMap(match_parts)
            | "SpreadStrippableParts" >> beam.Reshuffle()
            | "StripParts" >> beam.ParDo(StripOtherAudience({s: o.state.version_dir for s, o in self._others.items()}),
                                         beam.pvalue.AsList(stripped))
        )


def other_versions(state: ExportState, parts: list, counts: Counts) -> list[tuple[OtherAudience, dict, list]]:
    """``(audience, report entry, parts)`` of each other audience this run takes users out of, from
    :class:`StripOtherAudience`'s parts and the user IDs counted (:data:`Metric.USER_IDS_STRIPPED`)."""
    others, taken = strippable(state), counts.details(Metric.USER_IDS_STRIPPED)
    if taken.keys() - others.keys():
        raise RunFailed("export: users taken out of an audience whose state was not read (internal check); "
                        "nothing was published")
    out = []
    for segment in sorted(taken, key=lambda s: others[s].folder):
        other, mine = others[segment], sorted(p for p in parts if p[0] == segment)
        m = other.version.manifest
        out.append((other, {
            "audience": m.get("audience"), "data_source": m.get("data_source"), "segment": segment,
            "state_folder": other.folder, "previous_version": other.version.number, "version": other.state.version,
            "previous_pairs": int(m.get("pairs", 0)), "pairs": sum(p[2] for p in mine),
            "pairs_removed": sum(p[3] for p in mine), "user_ids_removed": taken[segment],
        }, mine))
    return out


def commit_others(others: list, state: ExportState, manifest: dict, name: str, commit) -> None:
    """Write the manifest ``name`` (``_PENDING`` or ``_SUCCESS``, through ``commit``:
    :func:`transforms.export_state.commit_state`) of each other audience's new version: its current
    manifest with the pairs it now holds and ``stripped_by`` naming this run (``state``, ``manifest``:
    the overwrite's own)."""
    for other, entry, parts in others:
        m = {k: v for k, v in other.version.manifest.items() if k not in ("version", "previous", STRIPPED_BY)}
        commit(other.state, {
            **m, "run_date": manifest["run_date"], "pairs": entry["pairs"],
            "user_ids": int(m.get("user_ids", 0)) - entry["user_ids_removed"],
            "output": None, "files": [], "control_file": None,  # its own run's files are not these
            "parts": [{"part": posixpath.basename(path), "rows": n} for _, path, n, _ in parts],
            STRIPPED_BY: {"audience": manifest["audience"], "data_source": manifest["data_source"],
                          "state_folder": state.folder, "version": state.version,
                          "output": manifest["output"], "run_date": manifest["run_date"], "files": manifest["files"],
                          "pairs_removed": entry["pairs_removed"], "user_ids_removed": entry["user_ids_removed"]},
        }, name)


def stripped_since(existing: list[tuple[str, dict]]) -> list[str]:
    """Why ``--existing`` folders (``(folder, report)``) cannot rebuild what the platform holds: the
    export state their runs wrote has a version after them written by another audience's overwrite
    (``stripped_by``), which took users out of the audience. No folder of the audience records
    that: rebuilt from them, those users are held, and once eligible and targeted again never sent.
    An overwrite of the audience after it (its ``exported/`` is the whole audience) serves."""
    runs: dict[str, list[tuple[int, bool, str]]] = {}
    for folder, report in existing:
        if report.get("state_folder") and isinstance(report.get("state_version"), int):
            runs.setdefault(str(report["state_folder"]), []).append(
                (report["state_version"], report.get("mode") == "overwrite", folder))
    problems = []
    for state_folder, given in runs.items():
        first, folder = min((v, f) for v, _, f in given)
        after = max([first, *(v for v, overwrite, _ in given if overwrite)])
        committed = committed_versions(state_folder)
        latest = committed[-1].number if committed else None
        for v in [*committed, *published_uncommitted(state_folder, latest)]:
            by = v.manifest.get(STRIPPED_BY)
            if v.number > after and isinstance(by, dict):
                root = posixpath.dirname(posixpath.dirname(state_folder.rstrip("/")))
                problems.append(f"--existing {folder}: audience '{v.manifest.get('audience')}' lost users since its "
                                f"version {first}: version {v.number} of its export state {state_folder} records the "
                                f"overwrite of audience '{by.get('audience')}' (--output {by.get('output')}, run date "
                                f"{by.get('run_date')}), which took users out of it, and no folder of its own says so "
                                f"(rebuilt from them, they are held and never sent again): use --state {root}")
                break
    return problems


def missing_runs(existing: list[tuple[str, dict]]) -> list[str]:
    """Why ``--existing`` folders (``(folder, report)``) cannot rebuild what the platform holds: one
    was computed against an earlier export that is not given (its report's ``existing`` folders, or
    the export state version it read). Given the latest alone, whose ``exported/`` holds what it
    added, the members the runs before it sent were rebuilt as not held, and those leaving the
    targets were never removed (exit 0). A run that held nothing built on nothing, and the runs before
    an overwrite (its ``exported/`` is the whole audience) are not needed: they are applied first."""
    order = run_order(existing)  # existing_state's
    overwrites = [n for n, i in enumerate(order) if existing[i][1].get("mode") == "overwrite"]
    applied = [existing[i] for i in order[overwrites[-1]:]] if overwrites else [existing[i] for i in order]
    given = [folder for folder, _ in existing]
    written = [(str(r["state_folder"]), r.get("state_version")) for _, r in existing if r.get("state_folder")]
    problems = []
    for folder, report in applied:
        if report.get("mode") == "overwrite" or not report.get("earlier_user_ids"):
            continue
        for earlier in report.get("existing") or []:
            if not any(same_output(str(earlier), g) for g in given):
                problems.append(f"--existing {folder}: it was computed against the export {earlier}, which is not "
                                "given: the members that export left on the platform would be rebuilt as not "
                                "held and never removed; give every earlier export of the audience")
        state, previous = report.get("state_folder"), report.get("state_previous_version")
        if state and isinstance(previous, int) and not any(
                same_output(str(state), s) and v == previous for s, v in written):
            problems.append(f"--existing {folder}: it was computed against version {previous} of the export state "
                            f"{state}, which no folder given wrote: the members that version held would never be removed; "
                            f"use --state {posixpath.dirname(posixpath.dirname(str(state).rstrip('/')))}")
    return problems


def run_order(existing: list[tuple[str, dict]]) -> list[int]:
    """The order ``--existing`` folders (``(folder, report)``) ran in, as indices: each after what its
    report says its run was computed against (its ``existing`` folders; the earlier versions of the
    export state it wrote), then by run date, then as given. By run date alone, an export dated before
    the one it was computed against (a --run-date in local time after a run on the UTC default, an old
    command line run again), or two of one run date given newest first, were applied in the wrong
    order: a user the later one removed was rebuilt as held and, targeted again, never sent."""
    key = {output_key(folder): i for i, (folder, _) in enumerate(existing)}
    after: dict[int, set[int]] = {i: set() for i in range(len(existing))}  # i: the runs it came after
    versions: dict[str, list[tuple[int, int]]] = {}
    for i, (_, report) in enumerate(existing):
        for earlier in report.get("existing") or []:
            j = key.get(output_key(earlier))
            if j is not None and j != i:
                after[i].add(j)
        if report.get("state_folder") and isinstance(report.get("state_version"), int):
            versions.setdefault(str(report["state_folder"]).rstrip("/"), []).append((report["state_version"], i))
    for written in versions.values():
        for (_, j), (_, i) in zip(sorted(written), sorted(written)[1:]):
            after[i].add(j)
    rank = {i: (report.get("run_date", ""), i) for i, (_, report) in enumerate(existing)}
    ready = [rank[i] for i, before in after.items() if not before]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)[1]
        order.append(i)
        for j, before in after.items():
            if i in before:
                before.discard(i)
                if not before:
                    heapq.heappush(ready, rank[j])
    return order + sorted(set(range(len(existing))) - set(order), key=rank.get)  # (a cycle: by run date)
