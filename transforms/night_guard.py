"""What a night is checked against: the night it builds on (which nights may run at all:
:mod:`transforms.night_order`).

Before it runs (the launch, :mod:`pipelines.nightly`): the previous night was built with the same
``profiles.id``. :class:`NightGuard`, read at launch from the previous night's report, checked
there (its dumps, their destinations, an iter night's base) and before the publish:
no dump the previous night imported or older than its newest, no audience that collapses (more than
``max_shrink`` per data source), no empty full delivery, no file-audience source whose addresses
stop matching profiles.
"""
from __future__ import annotations

import dataclasses
import json
import posixpath
from dataclasses import dataclass

from apache_beam.io.filesystems import FileSystems

from transforms.config import JobConfig
from transforms.dump_names import parse_dump_name, sync_mode_of
from transforms.errors import ConfigError, RunFailed
from transforms.incremental import full_sources, read_manifest
from transforms.match_forms import address_form, compared_form, match_form, profile_id_form
from transforms.normalize import same_rules
from transforms.publish import SUCCESS
from transforms.summary import rate_text


def _destination(path: str) -> tuple | None:
    """A dump's :attr:`~transforms.dump_names.DumpName.destination` from its name; None for a name without one."""
    name = parse_dump_name(path)
    return None if name is None else name.destination


def _destination_text(destination: tuple) -> str:
    did, dpid, alias = destination
    return f"DID {did} (MASTER_DPID {dpid}{', PID_ALIAS ' + alias if alias else ''})"


def check_same_profile_ids(cfg: JobConfig, previous: str, files: list) -> None:
    """The previous night's memberships are carried as its profile ids: a night whose ``profiles.id``
    names another column would hold each person under both ids (and miss the old ones' removals); so
    would one whose release writes ids otherwise (:func:`~transforms.match_forms.profile_id_form`).
    Not when tonight's ``files`` hold a full dump for every configured data source: nothing is carried
    (the rows of one taken out of the config, for which the previous state is still read, are dropped)."""
    if set(full_sources(files, cfg)) >= {ds.name for ds in cfg.data_sources}:
        return
    manifest = read_manifest(previous)
    form = manifest.get("profile_id_form")  # None: written before it was recorded
    if form is not None and form != profile_id_form():
        name = previous.rstrip("/").rsplit("/", 1)[-1]
        raise ConfigError(f"{name} wrote its profile ids by other rules than this release's (its {SUCCESS} "
                          "profile_id_form): carried, its memberships would not be found by tonight's ids; deliver "
                          "full dumps for every data source tonight (nothing is carried), or run the release that "
                          "published it")
    before = manifest.get("profile_id_column")  # None: written before it was recorded
    if before is not None and before != cfg.profiles.id:
        name = previous.rstrip("/").rsplit("/", 1)[-1]
        raise ConfigError(f"profiles.id is '{cfg.profiles.id}', {name} was built with '{before}': its memberships "
                          "cannot be carried over; deliver full dumps for every data source tonight (nothing is "
                          "carried), or set profiles.id back")


# The share of a file-audience source's addresses that match a profile falls by more than its
# max_shrink (relative) only on a wrong IV or key, or another profile column; judged on this many lines.
MIN_MATCHING_LINES = 20


def addresses_matching(report: dict) -> dict[str, tuple[int, int]]:
    """``(addresses, of which reconciled)`` per data source that keeps a file audience: lines kept as
    addresses (reconciled or in the file audience), and those matching a profile."""
    return {name: (entry["reconciled"] + entry["file_audience"], entry["reconciled"])
            for name, entry in report["data_sources"].items() if "suppressed" in entry}  # keeps_file_audience


def _same_address_form(before: str, now: str) -> bool:
    """Whether file-audience addresses written as ``before`` and as ``now`` (:func:`address_form`) are
    one text for every address: the same channel and region, under profiles that normalize its kind
    alike (:func:`~transforms.normalize.same_rules`: email/adobe and email/meta, sms/adobe and sms/google)."""
    (channel, was, *region), (channel_now, is_now, *region_now) = before.split("/"), now.split("/")
    kind = {"email": "email", "sms": "phone"}.get(channel, "other")
    return (channel, region) == (channel_now, region_now) and same_rules(kind, was, is_now)


def newest_deliveries(report: dict, night: str) -> dict[tuple, tuple[int, str, str, bool]]:
    """``(timestamp_ms, path, night, held)`` of the newest dump per (data source, destination) a night's
    report knows, among the names with a timestamp (a delivery): those it read, and those earlier
    nights read that it carried forward (``earlier_deliveries``). ``held``: that destination's rows are
    in the night's audience (read since the data source's last full dump, and not only full dumps of
    no line: a destination with no member yet was refused as one emptied, night after night)."""
    newest: dict[tuple, tuple[int, str, str, bool]] = {}
    for source, entry in report["data_sources"].items():
        read: dict[tuple, list[tuple[int, dict]]] = {}  # destination: its dumps the night read
        for f in entry.get("files", ()):
            name = parse_dump_name(f["path"])
            if name is not None:
                read.setdefault(name.destination, []).append((name.timestamp_ms, f))
        for destination, dumps in read.items():
            # full dumps of no line (the report's lines; a report without them: held) left it no member
            held = not all(f.get("sync_mode") == "full" and f.get("lines") == 0 for _, f in dumps)
            for ms, f in dumps:
                key, seen = (source, destination), (ms, f["path"], night, held)
                newest[key] = max(newest.get(key, seen), seen)
        for earlier in entry.get("earlier_deliveries", ()):  # destinations the night read no dump of
            newest.setdefault((source, tuple(earlier["destination"])), (
                earlier["timestamp_ms"], earlier["path"], earlier["night"], earlier["held"]))
    return newest


def night_report(partition: str) -> dict:
    """A published night's ``report.json`` (``partition``: its ``dt=`` folder); RunFailed naming it."""
    path = partition.rstrip("/") + "/report.json"
    try:
        with FileSystems.open(path) as handle:
            return json.loads(handle.read())
    except Exception as exc:  # noqa: BLE001 - one line naming the file
        raise RunFailed(f"{path}: cannot read a published night's report ({type(exc).__name__})") from None


def last_delivered(report: dict, older: list[str]) -> dict[str, dict]:
    """The data sources a night's ``report`` holds without reading a dump of them (carried:
    ``max_nights_without_delivery``): a report of the latest of the ``older`` published partitions
    (newest first) that read one, holding only them; a night not holding one ends its search."""
    waiting, last = {name for name, entry in report["data_sources"].items() if not entry.get("files")}, {}
    for partition in older:
        if not waiting:
            break
        entries = night_report(partition)["data_sources"]
        found = {name: entries[name] for name in waiting if entries.get(name, {}).get("files")}
        if found:
            last[partition.rstrip("/").rsplit("/", 1)[-1]] = {"data_sources": found}
        waiting = {name for name in waiting if name in entries and name not in found}
    return last


def audience_sizes(report: dict) -> dict[str, int]:
    """Rows per data source of a night's report: memberships plus file-audience entries."""
    return {name: sum(s.get("members", 0) + s.get("file_audience", 0) for s in entry["segments"].values())
            for name, entry in report["data_sources"].items()}


@dataclass(frozen=True)
class NightGuard:
    """What a night is checked against before it is published (built at launch by the nightly job)."""

    previous_partition: str | None  # "dt=YYYY-MM-DD" the night builds on
    previous_sizes: dict  # audience rows per data source of that night's report ({} without one)
    allow_shrink: bool = False
    replaced: tuple[str, ...] = ()  # data sources the run replaces without reading their previous rows
    previous_files: frozenset = frozenset()  # the dumps that night read (with a timestamp in their name)
    previous_matching: dict = dataclasses.field(default_factory=dict)  # file-audience sources: (lines, matched, night)
    previous_profiles: int = 0  # profiles that night read
    # (data source, destination): (ms, path, night, held) of the newest dump any night read (newest_deliveries)
    previous_newest: dict = dataclasses.field(default_factory=dict)
    previous_forms: dict = dataclasses.field(default_factory=dict)  # file-audience sources: address_form
    previous_match: dict = dataclasses.field(default_factory=dict)  # data source: match_form
    previous_read: dict = dataclasses.field(default_factory=dict)  # data source: the paths of every dump that night read
    previous_config: str | None = None  # that night's config_digest (its _SUCCESS)

    @classmethod
    def against(cls, previous: str | None, allow_shrink: bool = False, older: list[str] = ()) -> "NightGuard":
        """The guard against the previous published partition (its report's audience sizes); read at
        launch by the nightly job. ``older``: the partitions published before it (newest first) where a
        data source it carried without a dump is looked for: its newest dumps and matching addresses."""
        if previous is None:
            return cls(None, {}, allow_shrink)
        report, night = night_report(previous), previous.rstrip("/").rsplit("/", 1)[-1]
        try:
            sizes = audience_sizes(report)
            # A timestamped name is one delivery; a fixed name may be a file overwritten every night.
            read = frozenset(f["path"] for entry in report["data_sources"].values() for f in entry.get("files", ())
                             if f.get("timestamp_ms") is not None)
            newest = newest_deliveries(report, night)
        except Exception as exc:  # noqa: BLE001 - one line naming the file
            raise RunFailed(f"{previous.rstrip('/')}/report.json: cannot read the previous night's report "
                            f"({type(exc).__name__})") from None
        matching = {name: (*counts, night) for name, counts in addresses_matching(report).items()}
        for earlier, found in last_delivered(report, older).items():  # compared with what they last read
            newest.update(newest_deliveries(found, earlier))
            matching.update({name: (*counts, earlier) for name, counts in addresses_matching(found).items()})
        return cls(night, sizes, allow_shrink, previous_files=read,
                   previous_matching=matching, previous_profiles=report.get("profiles_read", 0),
                   previous_newest=newest,
                   previous_forms={name: entry["address_form"] for name, entry in report["data_sources"].items()
                                   if "address_form" in entry},
                   previous_match={name: entry["match_form"] for name, entry in report["data_sources"].items()
                                   if "match_form" in entry},
                   previous_read={name: [f["path"] for f in entry.get("files", ())]
                                  for name, entry in report["data_sources"].items()},
                   previous_config=read_manifest(previous).get("config_digest"))

    def check_new_files(self, files: list) -> None:
        """Tonight's dumps (``(data_source, path)``) must not be deliveries the previous night imported
        (same path, a timestamp in the name): a ``segments`` glob that does not name the night's
        files (``{date}``) would apply every earlier delivery again (an old addition over a later
        removal), or publish last night's full dump as tonight's. Nor may they be older than the
        newest dump of their data source and destination any earlier night read (a timestamp no
        later; a night carries forward those of destinations it read nothing of): an earlier
        delivery copied into tonight's folder, applied again, would undo what came after it."""
        again = sorted(path for _, path in files if path in self.previous_files)
        if again:
            raise ConfigError(f"{again[0]}: already imported by {self.previous_partition} ({len(again)} such dump(s)); "
                              "a nightly segments glob names the night's files (e.g. with {date})")
        stale = []  # (path, the newest dump of its data source and destination the previous night read)
        for source, path in sorted(files):
            name = parse_dump_name(path)
            seen = None if name is None else self.previous_newest.get((source, name.destination))
            if seen is not None and name.timestamp_ms <= seen[0]:
                stale.append((path, seen))
        if stale:
            path, (_, newest, night, _) = stale[0]
            raise ConfigError(f"{path}: delivered no later than {posixpath.basename(newest)}, which "
                              f"{night} read for the same data source and destination "
                              f"({len(stale)} such dump(s)): an earlier delivery read again would undo the changes "
                              "made since; take it out of tonight's folder (a copy of an earlier delivery?); a late "
                              "delivery goes in its own night's folder")

    def check_base(self, cfg: JobConfig, files: list, allow_gap: bool, config_digest: str) -> None:
        """An ``iter`` dump is changes to an audience some earlier night holds. Tonight's dumps of a
        data source all ``iter`` while no published night holds it (a first night, a fresh or moved
        root, a data source new to the config): published, its audience would be tonight's changes
        only. So would its file audience be, for one that keeps a file audience tonight and did not
        on the previous night (force_reconciliation was set), also when it has no dump tonight (carried
        without one, max_nights_without_delivery: the next night found it held); and one whose addresses are written in
        another form tonight (:func:`~transforms.report.address_form`) would hold both forms; so would
        memberships matched under other settings (:func:`~transforms.match_forms.match_form`), and,
        where the night was published by a release that recorded no match_form, a config changed since
        (``config_digest``: tonight's, against that night's): it cannot tell. Refused (ConfigError)
        unless ``allow_gap``."""
        if allow_gap:
            return
        full = set(full_sources(files, cfg))
        changes = {name for name, _ in files} - full
        new = sorted(changes - set(self.previous_sizes))
        # (a night without its dump, max_nights_without_delivery, carries its file audience too: for one started
        # tonight, none, and the next night would find it held)
        keeping = {ds.name for ds in cfg.data_sources if ds.keeps_file_audience} - full
        started = sorted(name for name in keeping & set(self.previous_sizes) if name not in self.previous_matching)
        if new:
            where = "no night is published under this root yet" if self.previous_partition is None else \
                "the previous night does not hold it (new to the config?)"
        elif started:
            new, where = started, f"{self.previous_partition} kept no file audience for it (force_reconciliation?)"
        if new:
            dumps = "tonight's dumps are iter (changes)" if new[0] in changes else "it has no dump tonight"
            raise ConfigError(f"data source '{new[0]}': {dumps} and {where}: its audience would be tonight's changes "
                              "only; deliver a full dump first, or --allow-gap to start from these changes")
        for name in sorted(keeping):
            before, now = self.previous_forms.get(name), address_form(cfg.data_source(name), cfg)
            if before is not None and not _same_address_form(before, now):
                raise ConfigError(f"data source '{name}': its file audience's addresses were written as {before} by "
                                  f"{self.previous_partition}, {now} tonight: carried, those rows would stay beside "
                                  "tonight's (one address twice) and tonight's removals would miss them; deliver a "
                                  "full dump to rebuild it, or --allow-gap to carry them as they are")
        unrecorded = sorted(name for name in {ds.name for ds in cfg.data_sources} - full
                            if name in self.previous_sizes and name not in self.previous_match)
        if unrecorded and self.previous_config != config_digest:
            raise ConfigError(f"data source '{unrecorded[0]}': {self.previous_partition} was published by an earlier "
                              "release, which did not record the settings it matched IDs under (report.json "
                              "match_form), and the config has changed since: if a setting deciding its matching "
                              "changed (match_on, normalization, dpid, profiles.id, ...), its carried memberships "
                              "would stay as matched then; deliver a full dump to rebuild its audience, or "
                              "--allow-gap if none did")
        for name in sorted({ds.name for ds in cfg.data_sources} - full):
            now = compared_form(match_form(cfg.data_source(name), cfg))
            before = compared_form(self.previous_match.get(name))
            changed = [f"{key} {before.get(key)}, now {value}" for key, value in now.items()
                       if before is not None and before.get(key) != value
                       and not (key == "normalization" and same_rules(now["kind"], before.get(key), value))]
            if changed:
                raise ConfigError(f"data source '{name}': {self.previous_partition} matched its IDs to profiles under "
                                  f"other settings ({'; '.join(changed)}): carried, its memberships would stay as "
                                  "matched then, and tonight's lines, read the new way, would not remove them; "
                                  "deliver a full dump to rebuild its audience, or --allow-gap to carry them as "
                                  "they are")

    def check_destinations(self, cfg: JobConfig, files: list) -> None:
        """A full dump replaces its data source's whole audience: one whose folder delivers several
        destinations (DIDs, :func:`transforms.dump_names.older_full_delivery`) would lose, with no
        shrink check past ``max_shrink``, the audience of a destination the previous night holds
        (read since the data source's last full dump, on any night) and tonight's dumps lack.
        Refused (ConfigError) unless ``allow_shrink``."""
        if self.allow_shrink:
            return
        for name in full_sources(files, cfg):
            tonight = {_destination(path) for source, path in files if source == name}
            held = {destination: seen[2] for (source, destination), seen in self.previous_newest.items()
                    if source == name and seen[3]}
            lost = sorted(set(held) - tonight)
            if lost:
                raise ConfigError(f"data source '{name}': tonight's full dump replaces its audience, but destination "
                                  f"{_destination_text(lost[0])}, read by {held[lost[0]]}, has no dump tonight: its "
                                  "members would be dropped; give each destination its own data source, or --allow-shrink")

    def replacing_all(self, cfg: JobConfig, files: list) -> "NightGuard | None":
        """When tonight's ``files`` (listed at launch) hold a full dump for every configured data
        source and the previous night has no other data source, no previous row survives the night:
        the guard for a run that does not read the previous state (the run then checks that the
        files it read still say so). None when some previous rows are carried over, removed or
        dropped (counted): the run merges."""
        configured = [ds.name for ds in cfg.data_sources]
        if set(self.previous_sizes) - set(configured) or set(full_sources(files, cfg)) != set(configured):
            return None
        return dataclasses.replace(self, replaced=tuple(configured))

    def check(self, report: dict, cfg: JobConfig, files: list, file_stats: list) -> None:
        """Raise :class:`RunFailed` (one line) when a data source the run replaced without reading
        its previous rows has no full dump among the files read (they changed since the launch),
        when a data source's full delivery is empty, its audience shrinks by more than its
        ``max_shrink`` (a data source no longer configured: to 0), or the share of its addresses
        that match a profile does (a data source keeping a file audience)."""
        lost = sorted(set(self.replaced) - set(full_sources(files, cfg)))
        if lost:
            raise RunFailed(f"data source(s) {', '.join(lost)}: no full dump among the files read, unlike when the "
                            "run started (a dump renamed or removed meanwhile?); their previous rows were not read, "
                            "so nothing was published; rerun")
        if self.allow_shrink:
            return
        problems = []
        lines = dict((path, stats.lines) for path, stats in file_stats)
        full: dict[str, list[str]] = {}
        for name, path in sorted(files):
            if sync_mode_of(cfg.data_source(name), path) == "full":
                full.setdefault(name, []).append(path)
        for name, paths in full.items():
            if not sum(lines.get(path, 0) for path in paths):
                problems.append(f"data source '{name}': tonight's full dump ({', '.join(map(posixpath.basename, paths))}) "
                                "is empty, which would publish an empty audience")
            else:
                problems += self._empty_destinations(name, paths, lines)
        sizes = audience_sizes(report)
        for name, before in sorted(self.previous_sizes.items()):
            now, limit = sizes.get(name, 0), cfg.shrink_limit(name)
            if before and now < before * (1 - limit):
                gone = "" if name in sizes else " (no longer configured: its rows would be dropped)"
                problems.append(f"data source '{name}'{gone}: the audience would shrink from {before} to {now} rows "
                                f"against {self.previous_partition}, more than max_shrink={limit:g}")
        problems += self._matching_problems(report, cfg)
        # A partial extract (one of its files missing) drops, on a night that carries memberships, every
        # membership of the profiles it lacks, for good; a full night loses them until the extract is whole.
        before, now, limit = self.previous_profiles, report["profiles_read"], cfg.profiles.max_shrink
        if before and now < before * (1 - limit):
            problems.append(f"profiles: tonight's extract holds {now} profiles against {before} in "
                            f"{self.previous_partition} (more than profiles.max_shrink={limit:g} fewer): a file of "
                            "profiles.path missing?")
        if problems:
            raise RunFailed("; ".join(problems) + "; nothing was published (rerun with --allow-shrink if intended)")

    def _empty_destinations(self, name: str, paths: list[str], lines: dict[str, int]) -> list[str]:
        """A destination whose members the audience holds, whose full dump tonight holds no line
        beside other destinations' that do: 0 bytes, a transfer that created the file and failed.
        Its members would be dropped, as with no dump (:meth:`check_destinations`) the night fails."""
        by_destination: dict[tuple, list[str]] = {}
        for path in paths:
            by_destination.setdefault(_destination(path), []).append(path)
        problems = []
        for destination, dumps in sorted(by_destination.items(), key=lambda kv: str(kv[0])):
            seen = self.previous_newest.get((name, destination))
            if destination is not None and seen is not None and seen[3] and not sum(lines.get(p, 0) for p in dumps):
                problems.append(f"data source '{name}': tonight's full dump of destination {_destination_text(destination)} "
                                f"({', '.join(map(posixpath.basename, dumps))}) is empty, where {seen[2]} read its "
                                "members: they would be dropped")
        return problems

    def before_publish(self, report: dict, cfg: JobConfig, files: list, file_stats: list) -> None:
        """The nightly ``PublishRun`` check: :meth:`check`, then :meth:`carry_forward` into the report."""
        self.check(report, cfg, files, file_stats)
        self.carry_forward(report, cfg, files)

    def carry_forward(self, report: dict, cfg: JobConfig, files: list) -> None:
        """Record in tonight's report (``earlier_deliveries`` of a data source) the newest dump an
        earlier night read of each destination tonight read nothing of, so that a later night still
        knows it: a destination silent on some nights, then sent an earlier delivery again, and a
        full night lacking a destination whose rows are held (``held``: no full dump since)."""
        full, tonight = set(full_sources(files, cfg)), {(source, _destination(path)) for source, path in files}
        for (source, destination), (ms, path, night, held) in sorted(self.previous_newest.items()):
            entry = report["data_sources"].get(source)
            if entry is not None and (source, destination) not in tonight:
                entry.setdefault("earlier_deliveries", []).append({
                    "destination": list(destination), "timestamp_ms": ms, "path": path, "night": night,
                    "held": held and source not in full})

    def _matching_problems(self, report: dict, cfg: JobConfig) -> list[str]:
        """A source keeping a file audience whose addresses stop matching profiles: a wrong IV turns
        them into other valid addresses, a wrong key or profile column leaves them unmatched, and
        all of them land in the file audience, so the audience does not shrink."""
        problems = []
        for name, (lines, matched) in sorted(addresses_matching(report).items()):
            before_lines, before, night = self.previous_matching.get(name, (0, 0, None))
            if min(lines, before_lines) < MIN_MATCHING_LINES or not before:
                continue
            share, before_share, limit = matched / lines, before / before_lines, cfg.shrink_limit(name)
            if share < before_share * (1 - limit):
                problems.append(f"data source '{name}': {rate_text(share)} of tonight's addresses match a profile, "
                                f"against {rate_text(before_share)} in {night} (more than "
                                f"max_shrink={limit:g} less): "
                                "a wrong IV or key, or another profile column?")
        return problems
