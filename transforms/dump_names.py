"""Segment dump names and deliveries: what a dump's file name says (its destination, sync mode,
timestamp and split number: shared/reference/formats.md), and what the names of a data source's dumps
say together (a missing split, a full delivery older than another, an ``iter`` after a full one, an
unnamed dump beside named ones). Names only: no file is read here (:mod:`transforms.dumps` reads them).
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from transforms.config import DataSourceConfig

_NAME = re.compile(
    r"^(?P<sync_type>ftp|S3)_(?P<did>\d+)_(?P<master_dpid>\d+)(?:_(?P<pid_alias>.+?))?"
    r"_(?P<sync_mode>iter|full)_(?P<timestamp>\d{13})(?P<split>\d{3})?\.sync(?:\.gz)?$"
)


@dataclass(frozen=True)
class DumpName:
    sync_type: str
    did: int
    master_dpid: int
    pid_alias: str | None
    sync_mode: str  # iter | full
    timestamp_ms: int
    split: int | None  # 1-based split number; None for an unsplit file

    @property
    def destination(self) -> tuple[int, int, str]:
        """(DID, MASTER_DPID, PID_ALIAS or ""): two destinations' dumps are two audiences."""
        return self.did, self.master_dpid, self.pid_alias or ""


def parse_dump_name(path: str) -> DumpName | None:
    """Parse ``[SYNC_TYPE]_[DID]_[MASTER_DPID]_[PID_ALIAS]_[SYNC_MODE]_[TIMESTAMP][SPLITNUM].sync[.gz]``."""
    match = _NAME.match(posixpath.basename(path))
    if not match:
        return None
    g = match.groupdict()
    return DumpName(
        sync_type=g["sync_type"],
        did=int(g["did"]),
        master_dpid=int(g["master_dpid"]),
        pid_alias=g["pid_alias"],
        sync_mode=g["sync_mode"],
        timestamp_ms=int(g["timestamp"]),
        split=int(g["split"]) if g["split"] else None,
    )


def missing_splits(paths: list[str]) -> list[tuple[str, str]]:
    """``(path, problem)`` for each batch among ``paths`` whose splits do not run from 001 with no
    gap (a batch: the split dumps of one folder whose names differ only in SPLITNUM). A missing
    split is a partial delivery, a transfer that failed for one file: read as it is, it would
    publish part of the audience. A missing last split cannot be seen here; a control file says."""
    problems = []
    for found in _batches(paths):
        gaps = sorted(set(range(1, max(found) + 1)) - set(found))
        if gaps:
            numbers = ", ".join(f"{n:03d}" for n in gaps)
            missing = f"split {numbers} of its batch is" if len(gaps) == 1 else f"splits {numbers} of its batch are"
            problems.append((found[min(found)], f"{missing} missing (found {', '.join(f'{n:03d}' for n in sorted(found))})"))
    return problems


def empty_splits(lines: dict[str, int]) -> list[tuple[str, str]]:
    """``(path, problem)`` for each split holding no line (``lines``: per dump read) in a batch another
    split of which holds lines: a transfer that created the file and failed. The platform splits a
    batch by size, so no split of it is empty; read as it is, the batch would publish part of the
    audience, as a missing split would."""
    problems = []
    for found in _batches(lines):
        held = {n: lines[path] for n, path in found.items() if lines[path]}
        for n, path in found.items():
            if held and not lines[path]:
                first = min(held)
                problems.append((path, f"split {n:03d} of its batch holds no line, where split {first:03d} holds "
                                       f"{held[first]:,}"))
    return problems


def _batches(paths) -> list[dict[int, str]]:
    """The split dumps among ``paths`` by batch (one folder, names that differ only in SPLITNUM),
    each ``{split number: path}`` in split order; batches in name order."""
    batches: dict[tuple[str, str], dict[int, str]] = {}
    for path in paths:
        folder, base = posixpath.split(path)
        match = _NAME.match(base)
        if match and match["split"]:
            batches.setdefault((folder, base[:match.start("split")]), {})[int(match["split"])] = path
    return [dict(sorted(found.items())) for _, found in sorted(batches.items())]


def sync_mode_of(ds: DataSourceConfig, path: str) -> str | None:
    """``full`` or ``iter``: the data source's configured ``sync_mode``, else the file name's; None
    when neither says."""
    return _sync_mode(ds.sync_mode, parse_dump_name(path))


def _sync_mode(configured: str, parsed: DumpName | None) -> str | None:
    if configured != "from_name":
        return configured
    return parsed.sync_mode if parsed is not None else None


def _deliveries(paths: list[str], sync_mode: str) -> dict[tuple, dict[int, tuple[bool, str]]]:
    """Per destination (:attr:`DumpName.destination`), each delivery's timestamp -> (full?, its first
    dump); names that do not parse are left out."""
    streams: dict[tuple, dict[int, tuple[bool, str]]] = {}
    for path in sorted(paths):
        parsed = parse_dump_name(path)
        if parsed is not None:
            full = _sync_mode(sync_mode, parsed) == "full"
            stream = streams.setdefault(parsed.destination, {})
            if not stream.get(parsed.timestamp_ms, (False,))[0]:
                stream[parsed.timestamp_ms] = (full, path)
    return dict(sorted(streams.items()))


def older_full_delivery(paths: list[str], sync_mode: str = "from_name") -> tuple[str, str] | None:
    """``(a dump of the newest full delivery, a dump of an older delivery, full or iter)`` when
    ``paths`` (one data source's) hold a delivery older than a full one of one destination
    (:func:`_deliveries`), else None. A full dump is the whole audience: read beside it, an older
    full dump would keep every user it removed, an older iter dump bring back what it no longer
    holds. ``sync_mode``: the data source's (``full`` or ``iter`` overrides the names)."""
    return _beside_newest_full(paths, sync_mode, later=False)


def _beside_newest_full(paths: list[str], sync_mode: str, later: bool) -> tuple[str, str] | None:
    """``(a dump of the newest full delivery, one of the delivery nearest it before it, or with
    ``later`` after it)`` of the first destination (:func:`_deliveries`) that has one, else None."""
    for deliveries in _deliveries(paths, sync_mode).values():
        newest = max((t for t, (full, _) in deliveries.items() if full), default=None)
        if newest is None:
            continue
        beside = [t for t in deliveries if (t > newest if later else t < newest)]
        if beside:
            return deliveries[newest][1], deliveries[min(beside) if later else max(beside)][1]
    return None


def unnamed_beside_named(paths: list[str]) -> tuple[str, str] | None:
    """``(a dump whose name does not parse, one whose name does)`` among one data source's dumps, else
    None. Its delivery cannot be told: yesterday's full dump moved aside ('.bak', a browser's
    ' (1)') still matches a '*.sync*' glob, and read beside today's kept every user it removed."""
    named = [p for p in paths if parse_dump_name(p) is not None]
    unnamed = [p for p in paths if parse_dump_name(p) is None]
    return (unnamed[0], named[0]) if named and unnamed else None


def iter_after_full(paths: list[str], sync_mode: str = "from_name") -> tuple[str, str] | None:
    """``(a dump of the newest full delivery, one of the first iter delivery after it)`` of one
    destination, else None: changes to that full dump, which a one-off import, applying no removal,
    cannot read beside it (the nightly job applies them, night by night)."""
    return _beside_newest_full(paths, sync_mode, later=True)


def misfiled_dump(paths: list[str], dpid: int, others: dict[int, str]) -> tuple[str, int, str] | None:
    """``(a dump, its name's MASTER_DPID, the data source of that dpid)`` for the first of one data
    source's dumps (dpid ``dpid``) whose name says another configured data source's IDs (``others``:
    dpid -> name), else None. A name's MASTER_DPID is the data source of the IDs the file holds: a
    delivery misfiled in this folder would be read as this data source's IDs (two partners' hashed
    emails alike: the other's segments published as its own). A dpid no data source has (a global
    data source's, say) is left alone."""
    for path in paths:
        parsed = parse_dump_name(path)
        if parsed is not None and parsed.master_dpid != dpid and parsed.master_dpid in others:
            return path, parsed.master_dpid, others[parsed.master_dpid]
    return None
