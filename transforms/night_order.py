"""Which nights may run, checked at launch by the nightly job (:mod:`pipelines.nightly`) before
anything is read: a night has ended (UTC); no published night comes after it unless this run
republishes every one of them, in order; a rebuild of the nights that did not finish is finished
first (``ROOT/_rebuild.json``); no night with dumps is missing between the previous published night
and this one; a night's folder holds no dump delivered weeks before it; a published night is skipped
as done only when no data source of this job is missing from it or another one under its name. What
a night is checked against once it runs: :mod:`transforms.night_guard`.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from apache_beam.io.filesystems import FileSystems

from transforms.config import JobConfig
from transforms.control_files import controls_promising
from transforms.dump_names import parse_dump_name
from transforms.dump_listing import is_dump_file, unfinished_delivery, upload_glob, upload_of
from transforms.errors import ConfigError
from transforms.incremental import read_manifest
from transforms.night_guard import night_report
from transforms.publish_journal import write_whole
from transforms.storage import folder_hint, glob, join_path, matches_any


def check_nights_over(days: list[date], today: date) -> None:
    """A night is imported once it has ended (UTC): its dumps may not all be there yet, and a
    partial night, once published, would be skipped by the scheduled run as already published."""
    late = [day for day in days if day >= today]
    if late:
        raise ConfigError(f"dt={late[0].isoformat()} is not over (today is {today.isoformat()} UTC): import a night "
                          "once it has ended")


def folder_per_night(template: JobConfig, day: date) -> set[str]:
    """The data sources whose ``segments``, filled for ``day`` and for the night before, differ: each
    night's deliveries in a folder of their own (a dump listed there is that night's)."""
    before = {ds.name: ds.segments for ds in template.for_date(day - timedelta(days=1)).data_sources}
    return {ds.name for ds in template.for_date(day).data_sources if ds.segments != before[ds.name]}


STALE_DAYS = 7  # days: a dump in a night's folder delivered longer before the night began is another night's


def check_delivery_dates(template: JobConfig, day: date, files: list, allow_old: bool = False) -> None:
    """A data source whose ``segments`` name a folder per night (filled for ``day`` and for the night
    before, they differ) holds that night's deliveries there. A dump whose name says it was delivered
    more than :data:`STALE_DAYS` days before the night began (``files``: ``(data_source, path)``) is
    another night's: a ``{date:...}`` format with day and month swapped reads, on the 1st to 12th of
    a month, another date's folder, and on a first night, or when each night's is later than the one
    before, nothing else sees it (its audience was published as the night's, exit 0). Refused (one
    line naming the dump and the field) unless ``allow_old`` (``--allow-old-delivery``; not ``--allow-gap``,
    which waives every data source's missed nights too: followed, this refusal's advice lost another
    source's missed night, exit 0). A later one is fine: a late delivery goes in its own night's folder."""
    if allow_old:
        return
    begun = datetime.combine(day - timedelta(days=STALE_DAYS), time(), timezone.utc).timestamp() * 1000
    per_night = folder_per_night(template, day)
    for i, ds in enumerate(template.for_date(day).data_sources):
        names = [path for name, path in sorted(files) if name == ds.name and ds.name in per_night]
        old = [(path, parsed.timestamp_ms) for path in names
               if (parsed := parse_dump_name(path)) is not None and parsed.timestamp_ms < begun]
        if old:
            path, ms = old[0]
            when = datetime.fromtimestamp(ms / 1000, timezone.utc).date()
            raise ConfigError(f"data_sources[{i}].segments: {path}: delivered {when}, {(day - when).days} days before "
                              f"dt={day}, whose folder ('{ds.segments}') it is in ({len(old)} such dump(s)): another "
                              "night's delivery (a {date:...} format naming another date's folder, day and month "
                              "swapped?); correct the format, move it to its own night's folder, or "
                              "--allow-old-delivery to read it as this night's")


def check_published_holds(cfg: JobConfig, partition: str, config_digest: str,
                          per_night: set[str] = frozenset()) -> None:
    """A night already published is skipped as done; but published by another config (its manifest's
    ``config_digest``) without some data source of this one (``cfg``, filled for the night), or with
    another under its name (:func:`_another`: two jobs' sources named alike, or a job folder's copy,
    its config's text the same), that data source's dumps of the night were never imported (the
    second of two jobs sharing one root skipped every night, exit 0). Refused, one line naming it.
    ``per_night``: the data sources whose ``segments`` name a folder per night (:func:`folder_per_night`:
    a dump listed there is that night's)."""
    name = partition.rstrip("/").rsplit("/", 1)[-1]
    same_text = read_manifest(partition, night="a published night").get("config_digest") == config_digest
    held = night_report(partition)["data_sources"]
    missing = [] if same_text else [ds.name for ds in cfg.data_sources if ds.name not in held]
    if missing:
        raise ConfigError(f"{name} is already published, by another config, without data source '{missing[0]}' of this "
                          f"one ({len(missing)} such): its dumps of that night were not imported. Two configs sharing "
                          "one root? give each its own --root; a data source added since? --force republishes the night "
                          "with it (or leave the night as it is)")
    for ds in cfg.data_sources:
        if ds.name in held and (other := _another(ds, held[ds.name], ds.name in per_night)) is not None:
            raise ConfigError(f"{name} is already published by another job: its data source '{ds.name}' is not this "
                              f"one's ({other}), whose dumps of that night were not imported. Two jobs sharing one "
                              "root? give each its own --root; its dpid or segments edited since? --force republishes "
                              "the night with it (or leave the night as it is)")


def _another(ds, entry: dict, nightly_folder: bool = False) -> str | None:
    """Why a night's entry of ``ds``'s name is another data source: another dpid, or dumps read that
    ``ds.segments`` does not match and that are still where it read them (another job's, live), or,
    ``ds.segments`` naming a folder per night (``nightly_folder``), where that night's folder holds a
    dump it did not read (another job's, its own dumps purged once imported: taken for this job's past,
    the night was skipped as done, exit 0); None when it may be this one (this job's segments moved
    since, the old folder's dumps purged: a backfill over its published nights was refused, advising a
    --force an older night refuses)."""
    if entry.get("dpid", ds.dpid) != ds.dpid:
        return f"dpid {entry.get('dpid')}, not {ds.dpid}"
    read = [f["path"] for f in entry.get("files") or () if isinstance(f, dict) and f.get("path")]
    if read and not matches_any(ds.segments, read) and (
            any(FileSystems.exists(path) for path in read[:3]) or nightly_folder and _unread(ds.segments, read)):
        return f"it read {posixpath.basename(read[0])}, which its segments '{ds.segments}' do not match"
    return None


def _unread(pattern: str, read: list[str]) -> bool:
    """Whether ``pattern`` lists a dump not among those ``read`` (by name)."""
    names = {posixpath.basename(path) for path in read}
    return any(posixpath.basename(path) not in names for path in glob(pattern, missing_ok=True))


def check_night_order(days: list[date], published: list[date], force: bool) -> None:
    """Each night builds on the latest night published before it: importing a night before a
    published one would leave its changes out of that one and of every night after it. Refused,
    unless this run (re)publishes every published night after it, in order (``--backfill --force``)."""
    rerun = set(days) if force else set(days) - set(published)
    for day in sorted(rerun):
        after = [d for d in published if d > day and d not in rerun]
        if after:
            raise ConfigError(
                f"dt={day.isoformat()}: dt={after[0].isoformat()} is published after it and was built without it; "
                f"rebuild the nights in order: --backfill {day.isoformat()}:{published[-1].isoformat()} --force")


def _span(nights: list[date]) -> str:
    return f"dt={nights[0]}" + (f"..dt={nights[-1]}" if len(nights) > 1 else "")


def check_no_gap(template: JobConfig, previous: date, day: date, allow_gap: bool = False,
                 replaced: list[str] = (), read: dict[str, list[str]] | None = None) -> None:
    """A night that carries the partition of ``previous`` over misses the changes of every night
    between them: refused (one line naming them) unless ``allow_gap``. A missed night is no gap when
    it had no delivery (:func:`no_delivery`: no dump listed, nor an upload in progress). A data
    source whose path is the same for that night as for ``day`` cannot tell the nights apart, nor can
    a listing that fails: the night counts.
    So is a data source whose ``segments``, filled for ``previous``, would not match the dumps that
    night read (``read``: data source -> paths): edited since, its listing of the nights between
    (under the new glob) proves nothing.
    The data sources ``replaced`` by a full dump tonight start from nothing: their nights are not looked at."""
    missed = [previous + timedelta(days=i) for i in range(1, (day - previous).days)]
    if not missed or allow_gap:
        return
    tonight = {ds.name: ds.segments for ds in template.for_date(day).data_sources}
    blind: list[str] = []  # data sources whose path is tonight's on a missed night
    unlisted: list[tuple[str, date]] = []  # (data source, missed night) whose listing failed
    moved = [ds.name for ds in template.for_date(previous).data_sources  # segments edited since previous
             if ds.name not in replaced and (read or {}).get(ds.name) and not matches_any(ds.segments, read[ds.name])]

    def delivered(night: date) -> bool:
        sources = [ds for ds in template.for_date(night).data_sources if ds.name not in replaced]
        same = [ds.name for ds in sources if ds.segments == tonight[ds.name]]
        blind.extend(name for name in same if name not in blind)
        if same or moved:
            return True
        for ds in sources:
            listed = delivery_listed(ds.segments)
            if listed is None:
                unlisted.append((ds.name, night))
            if listed is None or listed:
                return True
        return False

    gap = [night for night in missed if delivered(night)]
    if not gap:
        return
    one, in_order = len(gap) == 1, len(gap) == (gap[-1] - gap[0]).days + 1
    if unlisted:
        name, night = unlisted[0]
        which = (f" ({_span(missed)}) and data source '{name}' could not be listed for dt={night} (its dumps "
                 "may be there)")
    elif moved:
        which = (f" ({_span(missed)}) and data source '{moved[0]}' cannot tell which had dumps (its segments changed "
                 f"since dt={previous}: they would not match the dumps it read)")
    elif blind:
        which = (f" ({_span(missed)}) and data source '{blind[0]}' cannot tell which had dumps (its segments path "
                 "does not change with the date)")
    elif len(gap) == len(missed):
        which = f" and had dumps ({_span(gap)})"
    else:
        which = (f" ({_span(missed)}) and {len(gap)} had dumps ("
                 + (_span(gap) if in_order else f"from dt={gap[0]} to dt={gap[-1]}") + ")")
    how = f"--backfill {gap[0]}:{gap[-1]}"  # its nights without a delivery are skipped (no_delivery)
    if moved and not unlisted:  # listed under tonight's glob, those nights look undelivered: give the old one
        how += f" with the segments data source '{moved[0]}' had then"
    nights = "1 night between them was" if len(missed) == 1 else f"{len(missed)} nights between them were"
    raise ConfigError(f"dt={day} would build on dt={previous}, but {nights} not imported{which}: "
                      f"{'its' if one else 'their'} changes would be missing; import {'it' if one else 'them'} first, "
                      f"in order ({how}), or rerun with --allow-gap to build on dt={previous} anyway")


def check_nothing_unread(template: JobConfig, previous: date, day: date, read: dict[str, list[str]],
                         allow_gap: bool = False, replaced: list[str] = ()) -> None:
    """A night that carries the partition of ``previous`` over misses the changes of a dump that
    landed in that night's folder after it was published (a slow transfer; a later night's dump put
    in the wrong folder): nothing reads that folder again. Each data source's ``segments`` filled for
    ``previous`` is listed (one listing; not when it lists tonight's folder too, nor for one
    ``replaced`` by a full dump tonight), and a dump that night did not read (``read``: data source ->
    paths, compared by name: the job folder may have moved), or an upload still in progress there, is
    refused, naming it, unless ``allow_gap``; so is a listing that fails. A glob that no longer lists any dump the night read
    (edited since, or a retention rule) proves nothing and is passed."""
    if allow_gap:
        return
    tonight = {ds.name: ds.segments for ds in template.for_date(day).data_sources}
    for ds in template.for_date(previous).data_sources:
        if ds.name in replaced or ds.name not in read or ds.segments == tonight.get(ds.name):
            continue
        files = files_listed(ds.segments)
        # The wider glob also lists the uploads in progress a glob naming the dumps' suffix misses.
        wider = files_listed(uploads) if files is not None and (uploads := upload_glob(ds.segments)) else []
        if files is None or wider is None:
            raise ConfigError(f"data source '{ds.name}': its segments for dt={previous} ('{ds.segments}') could not be "
                              f"listed (a storage outage or a denied prefix?), so a dump that landed there after that "
                              "night was published cannot be ruled out; rerun once they can be listed, or --allow-gap")
        had = {posixpath.basename(path) for path in read[ds.name]}
        listed = sorted(posixpath.basename(path) for path in files if is_dump_file(path))
        if had and not had & set(listed):
            continue  # the glob lists none of the dumps that night read: edited since, or a retention rule
        late = [name for name in listed if name not in had]
        if late:
            raise ConfigError(f"data source '{ds.name}': {late[0]} is in the folder of dt={previous}, which did not "
                              f"read it ({len(late)} such dump(s): delivered after that night was published?); dt={day} "
                              f"builds on dt={previous} and would miss its changes for good; republish dt={previous} "
                              f"with it (--date {previous} --force), move it to its own night's folder if it belongs "
                              "to a later night, or --allow-gap to leave it unread")
        # A dump still being written is one that night did not read either: once it has arrived,
        # nothing reads that folder again.
        uploading = sorted({posixpath.basename(path) for path in (*files, *wider)
                            if (final := upload_of(path)) is not None and not posixpath.basename(path).startswith((".", "_"))
                            and posixpath.basename(final) not in had})
        if uploading:
            raise ConfigError(f"data source '{ds.name}': {uploading[0]} is in the folder of dt={previous}, which did not "
                              f"read it (an upload in progress, begun after that night was published?); dt={day} builds "
                              f"on dt={previous} and would miss its changes for good; once it has arrived, republish "
                              f"dt={previous} with it (--date {previous} --force), or --allow-gap to leave it unread")


def no_delivery(template: JobConfig, night: date) -> bool:
    """Whether ``night`` had no delivery: with its ``{date}`` placeholders filled, no data source's
    ``segments`` lists a dump, or what a delivery that did not finish leaves (a listing per data
    source, no file read). A listing that fails is no proof that nothing was delivered, nor is an
    upload in progress: False (the night then runs, and fails, as any other)."""
    return all(delivery_listed(ds.segments) == [] and not folder_hint(ds.segments)  # (a folder matches nothing)
               for ds in template.for_date(night).data_sources)


def delivery_listed(pattern: str) -> list[str] | None:
    """The dumps ``pattern`` lists (:func:`files_listed`), or without one what a delivery that did not
    finish leaves (:func:`~transforms.dump_listing.unfinished_delivery`); None when the listing failed."""
    files = files_listed(pattern)
    dumps = None if files is None else [path for path in files if is_dump_file(path)]
    if dumps or files is None:
        return dumps
    wider = files_listed(uploads) if (uploads := upload_glob(pattern)) else []
    return None if wider is None else unfinished_delivery(files, wider) or controls_promising(pattern)


def files_listed(pattern: str) -> list[str] | None:
    """The files ``pattern`` lists; None when the listing failed (a denied prefix, an outage past the
    client's retries): that is no proof that nothing was delivered. Nothing matched is no error (Beam's
    match), and a bucket or folder that does not exist (404, FileNotFoundError) lists nothing."""
    try:
        return glob(pattern)
    except Exception as exc:  # noqa: BLE001 - only "not found" means no dump
        causes = list(exc.exception_details.values()) if getattr(exc, "exception_details", None) else [exc]
        if all(isinstance(c, FileNotFoundError) or getattr(c, "code", None) == 404 for c in causes):
            return []
        return None


REBUILD = "_rebuild.json"  # ROOT/_rebuild.json: the nights a --backfill --force still has to republish


@dataclass(frozen=True)
class Rebuild:
    """A rebuild of published nights in order (``--backfill FROM:NEWEST --force``) that has begun:
    until its last night is republished, the nights after the first one republished were built on
    an older version of it. Recorded in ``ROOT/_rebuild.json`` before the first night is republished,
    moved on after each, deleted at the end; while it is there, only a run finishing it may run."""

    root: str
    next: date  # the first night still to republish
    through: date  # the newest published night when the rebuild began

    @property
    def path(self) -> str:
        return join_path(self.root, REBUILD)

    @classmethod
    def pending(cls, root: str) -> "Rebuild | None":
        path = join_path(root, REBUILD)
        if not FileSystems.exists(path):
            return None
        try:
            with FileSystems.open(path) as handle:
                doc = json.loads(handle.read())
            return cls(root, date.fromisoformat(doc["next"]), date.fromisoformat(doc["through"]))
        except Exception as exc:  # noqa: BLE001 - one line naming the file
            raise ConfigError(f"{path}: cannot read the record of an unfinished rebuild ({type(exc).__name__}); "
                              "delete it, then rebuild the nights from the first one in doubt with --backfill "
                              "FROM:NEWEST --force (while it is there, every run is refused)") from None

    def check_finished_by(self, days: list[date], force: bool) -> None:
        """Refuse a run that does not republish every night the rebuild still has to."""
        needed = {self.next + timedelta(days=i) for i in range((self.through - self.next).days + 1)}
        if not (force and needed <= set(days)):
            span = f"{self.next.isoformat()}:{self.through.isoformat()}"
            raise ConfigError(f"the rebuild of dt={self.next.isoformat()}..dt={self.through.isoformat()} did not finish "
                              f"({self.path}): those nights were built on an older night before them; finish it first: "
                              f"--backfill {span} --force")

    def record(self) -> None:
        """Whole or unchanged: killed while it was written, a torn record refused every run, this rebuild's too."""
        write_whole(self.path, json.dumps({"next": self.next.isoformat(), "through": self.through.isoformat()}).encode())

    def after(self, day: date) -> "Rebuild | None":
        """The rebuild once ``day`` is republished (recorded), or None when it is done (deleted)."""
        if day >= self.through:
            FileSystems.delete([self.path])
            return None
        moved = dataclasses.replace(self, next=day + timedelta(days=1))
        moved.record()
        return moved


def rebuild_for(root: str, days: list[date], published: list[date], force: bool) -> Rebuild | None:
    """The rebuild this run begins or continues: with ``--force``, when a night it republishes has a
    published night after it (:func:`check_night_order` made sure the run republishes them all)."""
    pending = Rebuild.pending(root)
    if pending is not None:
        pending.check_finished_by(days, force)
        return pending
    if force and published and min(days) < published[-1]:
        return Rebuild(root, min(days), published[-1])
    return None
