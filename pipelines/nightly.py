"""Nightly import: dated, idempotent, published all at once, on local disk or GCS.

    audience-sync nightly --config job.yaml --date 2026-11-22 --root ROOT [--force] [Beam flags...]
    audience-sync nightly --config job.yaml --backfill 2026-11-01:2026-11-22 --root ROOT
    python -m pipelines.nightly ...  (the form Airflow's BeamRunPythonPipelineOperator runs)

Each night imports every data source of the config into ``ROOT/dt=YYYY-MM-DD/`` (``{date}``
placeholders in input paths are filled: ``{date}`` or ``{date:%Y%m%d}``). The partition is written
under ``ROOT/_staging/`` and published at the end; ``_SUCCESS`` (a manifest of every file with rows,
size and sha256, the config digest and code version) is written last and is the commit point.
A date already published is skipped (``--force`` replaces it whole; one published by another config without
a data source of this one, or by another job with another under its name, is refused: two jobs sharing a
root); a partition without
``_SUCCESS`` (a killed run) is cleared and redone. A night that has not ended (UTC) is refused, and
so is a night before a published one unless the run republishes every night after it, in order
(``--backfill FROM:NEWEST --force``): each night builds on the one before. Such a rebuild is recorded
in ``ROOT/_rebuild.json`` until its last night is republished; while it is there, only a run that
finishes it may run (:mod:`transforms.night_guard`). A ``--backfill`` skips a night not published
where no data source lists a dump ("no delivery": a weekend; a rebuild's record moves past it); a
backfill that skips every night fails (a wrong ``segments`` path more likely than a quiet stretch).
``iter`` dumps update the previous published night's audiences (additions and removals), ``full``
dumps replace them (a data source's ``sync_mode``, else the file name, says which; a name that does
not say is a configuration error). A night that
carries previous rows over fails when a night between the previous published one and it had dumps
(its changes would be missing), or when that one's folder holds a dump it did not read (delivered after it
was published), unless ``--allow-gap``; so does a data source whose dumps are all ``iter`` while no published
night holds it. A night's folder holding a dump delivered weeks before the night (another date's folder)
fails unless ``--allow-old-delivery`` (not ``--allow-gap``: that waives a missed night of every data source).
A night whose audience shrinks by more than ``max_shrink`` per data source, whose full dump is
empty, that would drop a data source taken out of the config, or whose full dump lacks a destination
(DID) the previous night read for its data source fails unless ``--allow-shrink``.
The run holds ``ROOT/_lock.json`` throughout, completes an interrupted publish and deletes the
leftovers of killed runs (``_staging/``) first (:func:`transforms.publish_journal.hold_output`).
After the nights, ``ROOT/report.html`` shows match rate and members per data source over every
published night.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import sys
from datetime import date, timedelta

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import launch
from pipelines.flags import parse_job_args
from pipelines.import_audience import build_pipeline
from transforms.code_version import code_version
from transforms.config import ConfigError, JobConfig
from transforms.errors import RunFailed
from transforms.incremental import (bucketing_identity, check_file_audience_columns, check_sync_modes, full_sources,
                                    previous_parts, tonight_files)
from transforms.match_forms import profile_id_form
from transforms.night_guard import NightGuard, check_same_profile_ids
from transforms.night_order import (check_delivery_dates, check_night_order, check_nights_over, check_no_gap,
                                    check_nothing_unread, check_published_holds, folder_per_night, no_delivery,
                                    rebuild_for)
from transforms.key_cache import INCOMING, NIGHTLY_CACHE, cache_dirs, staged
from transforms.preflight import check_inputs
from transforms.undelivered import undelivered_sources
from pipelines.options import only_stages
from transforms.publish import REPORT, SUCCESS, join_path
from transforms.output_lock import probe_writable
from transforms.publish_journal import clean_leftovers, remove_run_dir
from transforms.report_pages import write_nightly_page
from transforms.storage import check_gcs_credentials, glob
from transforms.summary import import_table

LOG = logging.getLogger("audience_sync.nightly")
STAGING = "_staging"
NO_DELIVERY = "no delivery"  # a backfill's night that no data source delivered: skipped, nothing written


def _date_range(text: str) -> list[date]:
    try:
        first, last = (date.fromisoformat(part) for part in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError("expected FIRST:LAST dates, e.g. 2026-11-01:2026-11-22") from None
    if last < first:
        raise argparse.ArgumentTypeError("the backfill range ends before it starts")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="audience-sync nightly", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="job YAML (local path or gs://)")
    parser.add_argument("--root", required=True, help="partitions root (local folder or gs://bucket/prefix)")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument("--date", type=launch.iso_date, help="the night to import (YYYY-MM-DD)")
    when.add_argument("--backfill", type=_date_range, help="FIRST:LAST, imported in date order")
    parser.add_argument("--force", action="store_true", help="replace nights that were already published")
    parser.add_argument("--allow-shrink", action="store_true",
                        help="publish even when a data source's audience shrinks by more than max_shrink against the "
                        "previous night, a full dump is empty or lacks a destination (DID) the previous night read, or a data "
                        "source left the config (its rows are dropped)")
    parser.add_argument("--allow-gap", action="store_true",
                        help="build on the latest published night even when a night between it and this one was not "
                        "imported and had dumps, or cannot tell (a segments path without {date}): that night's changes "
                        "are then missing; or start a data source from iter dumps with no published night holding "
                        "it (its audience is then those changes only)")
    parser.add_argument("--allow-old-delivery", action="store_true",
                        help="read a dump whose name says it was delivered more than 7 days before its night, in "
                        "that night's folder, as that night's (no other check is waived)")
    parser.add_argument("--no-key-cache", dest="key_cache", action="store_false",
                        help="compute every profile key (default: reuse unchanged profiles' keys from ROOT/_key_cache)")
    return parse_job_args(parser, argv)


KEY_CACHE = NIGHTLY_CACHE  # ROOT/_key_cache: the profile-key cache (transforms.key_cache)


def partition_name(day: date) -> str:
    return f"dt={day.isoformat()}"


def partition(root: str, day: date) -> str:
    return join_path(root, partition_name(day))


def write_root_page(root: str) -> str:
    """``ROOT/report.html``: the trend over every published night. A night whose report cannot be read
    is named on the page and in a warning: the nights just published stand."""
    unreadable: list[str] = []
    page = write_nightly_page(root, [(day.isoformat(), partition_name(day)) for day in published_dates(root)],
                              unreadable=unreadable)
    for name in unreadable:
        LOG.warning("root page: %s not shown (no readable report)", name)
    return page


def published_dates(root: str) -> list[date]:
    """Nights whose partition has its ``_SUCCESS`` manifest."""
    found = []
    for path in glob(join_path(root, f"dt=*/{SUCCESS}")):
        folder = path.rsplit("/", 2)[-2]
        try:
            found.append(date.fromisoformat(folder.removeprefix("dt=")))
        except ValueError:
            continue
    return sorted(found)


def run_night(template: JobConfig, config_text: bytes, day: date, root: str, force: bool, options: PipelineOptions,
              allow_shrink: bool = False, key_cache: bool = True, allow_gap: bool = False,
              skip_undelivered: bool = False, allow_old_delivery: bool = False) -> dict:
    """Import one night. With ``skip_undelivered`` (a backfill), a night not published where no data
    source lists a dump is skipped (:data:`NO_DELIVERY`); a published one (``--force``) fails as any."""
    target = partition(root, day)
    success = join_path(target, SUCCESS)
    published = FileSystems.exists(success)
    if published and not force:
        check_published_holds(template.for_date(day), target, hashlib.sha256(config_text).hexdigest(),
                              folder_per_night(template, day))
        LOG.warning("dt=%s is already published (use --force to replace it)", day)
        return {"date": day.isoformat(), "status": "already published"}
    if not published:
        if skip_undelivered and no_delivery(template, day):  # a weekend: no gap for the next night either
            LOG.warning("dt=%s: no data source lists a dump (no delivery): skipped", day)
            return {"date": day.isoformat(), "status": NO_DELIVERY}
        remove_run_dir(target)  # leftovers of an interrupted run: never half-visible, now gone
    cfg = template.for_date(day)
    earlier = [d for d in published_dates(root) if d < day]
    # Data sources carried as they are, without a dump tonight (a partner's weekend):
    undelivered = undelivered_sources(template, root, day, earlier, republishing=published, allow_gap=allow_gap)
    check_inputs(cfg, output=root, undelivered=undelivered)
    files = [(name, path) for name, path in tonight_files(cfg) if name not in undelivered]
    check_sync_modes(cfg, files)
    check_delivery_dates(template, day, files, allow_old_delivery)  # a folder of another date (day, month swapped?)
    previous = partition(root, earlier[-1]) if earlier else None
    manifest = {
        "run_date": day.isoformat(),
        "config_digest": hashlib.sha256(config_text).hexdigest(),
        "code_version": code_version(),
        "previous_partition": f"dt={earlier[-1].isoformat()}" if earlier else None,
        "bucketing": bucketing_identity(cfg.buckets),  # the next night reads these parts by shard when it matches
        "profile_id_column": cfg.profiles.id,  # the ids its memberships are in (the next night carries them)
        "profile_id_form": profile_id_form(),  # and the rules that wrote them as text
    }
    run_dir = launch.new_run_dir(join_path(root, STAGING), prefix=f"dt={day.isoformat()}-")
    # A data source carried without a dump (max_nights_without_delivery): its newest dumps are older nights'.
    quiet = max((ds.max_nights_without_delivery for ds in cfg.data_sources), default=0)
    older = [partition(root, d) for d in reversed(earlier[:-1]) if (earlier[-1] - d).days <= quiet]
    guard = NightGuard.against(previous, allow_shrink, older)  # reads the previous night's report
    guard.check_new_files(files)
    guard.check_destinations(cfg, files)
    if previous:  # (a file audience of a release that kept only unmatched addresses)
        check_file_audience_columns(previous, cfg, files, set(guard.previous_sizes), allow_gap)
    guard.check_base(cfg, files, allow_gap, manifest["config_digest"])
    # Every data source replaced by a full dump tonight: no previous row survives, so the previous
    # state is not read and tonight's rows go straight to the writers (no merge, no extra copy).
    replacing = guard.replacing_all(cfg, files) if previous else None
    guard = replacing or guard
    state = None if replacing else previous
    if state:  # its rows are carried over: no night since it may be missing
        replaced = full_sources(files, cfg)
        check_no_gap(template, earlier[-1], day, allow_gap, replaced=replaced, read=guard.previous_read)
        check_nothing_unread(template, earlier[-1], day, guard.previous_read, allow_gap, replaced=replaced)
        check_same_profile_ids(cfg, state, files)
    # The writers read the previous parts shard by shard when that night was bucketed as tonight.
    direct = previous_parts(state, ["reconciled", "file_audience"], cfg) if state else None
    cache = cache_dirs(join_path(root, KEY_CACHE), run_dir) if key_cache else None
    with staged(cache):
        report = launch.run_pipeline(options, run_dir, join_path(target, REPORT), lambda p: build_pipeline(
            p, cfg, target, run_dir, day, previous=state, incremental=True, manifest=manifest, guard=guard,
            key_cache=cache, previous_parts=direct, undelivered=undelivered), held=True)
    if report.get("status") == launch.STAGED:
        return {"date": day.isoformat(), "status": launch.STAGED}
    return {"date": day.isoformat(), "status": "published", "previous": manifest["previous_partition"], "report": report}


def run(argv=None) -> list[dict]:
    """Run the night(s) in date order; stops at the first failure (later nights need it)."""
    known, beam_args = parse_args(argv)
    days = [known.date] if known.date else known.backfill
    check_nights_over(days, launch.today())
    check_gcs_credentials([known.config, known.root], beam_args)  # (launch.start checks the rest)
    try:
        with FileSystems.open(known.config) as handle:
            config_text = handle.read()
    except Exception:  # noqa: BLE001
        raise ConfigError(f"{known.config}: cannot read the config") from None
    folders = [known.root, join_path(known.root, KEY_CACHE)] if known.key_cache else known.root
    job = launch.start(known.config, beam_args, lambda cfg: None,  # inputs are checked per night, dates filled
                       paths={"--root": folders})
    if only_stages(job.options) and len(days) > 1:
        raise ConfigError("--backfill stages one job per night, and a template or a --dry_run holds one: stage "
                          "one night at a time (--date), each after the night before it has run")
    root = known.root.rstrip("/")
    results = []
    # One nightly run per root at a time (nights build on each other): the lock is the root's.
    with launch.hold(root, "nightly", job.options, partitions="dt=*", staging=STAGING):
        if not only_stages(job.options):  # parts staged by killed runs (the lock says none is live)
            clean_leftovers(join_path(root, KEY_CACHE, INCOMING), prefix="")
            if known.key_cache:
                probe_writable(join_path(root, KEY_CACHE, INCOMING), what="the profile-key cache",
                               named=f"--root {join_path(root, KEY_CACHE)}",
                               remedy=" (--no-key-cache computes every key)")
        published = published_dates(root)
        check_night_order(days, published, known.force)
        rebuild = None if only_stages(job.options) else rebuild_for(root, days, published, known.force)
        if rebuild is not None:
            rebuild.record()  # before the first night is republished: a failure part-way leaves it
        try:
            for day in days:
                result = run_night(job.cfg, config_text, day, root, known.force, job.options, known.allow_shrink,
                                   known.key_cache, known.allow_gap, skip_undelivered=bool(known.backfill),
                                   allow_old_delivery=known.allow_old_delivery)
                if rebuild is not None and result["status"] in ("published", NO_DELIVERY):
                    rebuild = rebuild.after(day)
                for line in summary_lines([result]):
                    LOG.info(line)
                results.append(result)
            check_some_delivery(job.cfg, days, results)
        finally:  # also when a later night failed: the page shows the nights published before it
            statuses = {r["status"] for r in results}
            if "published" in statuses:
                write_root_page(root)
            elif "already published" in statuses:  # a run killed after its publish never wrote the page
                try:
                    write_root_page(root)
                except RunFailed as exc:  # the night stands published: exit 0, as before
                    LOG.warning("%s", exc)
    return results


def check_some_delivery(template: JobConfig, days: list[date], results: list[dict]) -> None:
    """A backfill none of whose nights had a delivery imported nothing: more likely a wrong
    ``segments`` path than a quiet stretch of nights. Refused (one line)."""
    if not results or any(r["status"] != NO_DELIVERY for r in results):
        return
    ds = template.for_date(days[0]).data_sources[0]
    raise ConfigError(f"--backfill {days[0]}:{days[-1]}: no data source lists a dump for any of its nights, so nothing "
                      f"was imported; check data_sources.*.segments (dt={days[0]}: '{ds.segments}' lists none)")


def summary_lines(results: list[dict]) -> list[str]:
    """Per night: its status, and the import table of what it published. Counts only, no IDs."""
    lines = []
    for result in results:
        lines.append(f"dt={result['date']}: {result['status']}"
                     + (f" (updating {result['previous']})" if result.get("previous") else ""))
        if result.get("report"):
            lines += import_table(result["report"], indent="  ")
        for name, e in result.get("report", {}).get("removed_data_sources", {}).items():
            rows = " ".join(f"{k}={v}" for k, v in e.items() if k != "action")
            lines.append(f"  {name}: no longer configured, previous rows {e['action']} ({rows})")
    return lines


def main(argv=None) -> int:
    return launch.run_job_cli(run, argv, summary_lines, page=lambda argv: launch.page_line(parse_args(argv)[0].root))


if __name__ == "__main__":
    sys.exit(main())
