"""Nightly: data sources that deliver on some nights only (partners who send nothing at weekends).

A data source with ``max_nights_without_delivery`` set whose ``segments`` list no dump tonight is
not read: its audience is carried over from the previous night as it is (as an ``iter`` night with
no change would carry it; memberships of profiles gone from the extract still go). That holds for as
many nights in a row as the setting allows, counted from the latest published night that read one
of its dumps. Without the setting, or past it, or with no published night holding the data source,
the night fails as a night without its dump always has (``no segment dump matches``). A listing
that fails (not a folder that does not exist) is no proof that nothing was delivered: refused.
"""
from __future__ import annotations

import posixpath
from datetime import date

from transforms.config import JobConfig
from transforms.errors import ConfigError
from transforms.dump_listing import is_dump_file
from transforms.night_guard import night_report
from transforms.night_order import delivery_listed
from transforms.storage import folder_hint, join_path, matches_any


def undelivered_sources(template: JobConfig, root: str, day: date, published: list[date],
                        republishing: bool = False, allow_gap: bool = False) -> frozenset[str]:
    """The data sources that deliver no dump tonight and may skip it (else :func:`check_inputs`
    fails the night naming them); raises :class:`ConfigError` for one past its limit or with no
    audience to carry, or, ``republishing`` ``day`` (--force), for one whose dumps that night read
    when it was published (they are gone, not undelivered), or, unless ``allow_gap``, for one whose
    ``segments`` (``template``'s, filled for that night) would not match the dumps the latest night
    that read some read (edited since: a typo lists nothing, night after night). ``published``: the
    nights before ``day``."""
    cfg = template.for_date(day)
    skipping = [ds for ds in cfg.data_sources if ds.max_nights_without_delivery and _silent(ds)]
    reports: dict[date, dict] = {}
    if skipping and republishing:
        reports[day] = night_report(join_path(root, f"dt={day.isoformat()}"))
    for ds in skipping:
        read = (reports[day]["data_sources"].get(ds.name) or {}).get("files") if republishing else None
        if read:
            raise ConfigError(f"data source '{ds.name}': no segment dump matches '{ds.segments}', but dt={day} read "
                              f"{len(read)} of its dumps when it was published: they are gone (moved, or deleted by "
                              "a retention rule), and republished without them the night would lose their changes; "
                              "put them back, or leave the night as it is")
        limit = ds.max_nights_without_delivery
        last = None  # the latest published night that read one of its dumps
        for night in (n for n in reversed(published) if (day - n).days <= limit):
            if night not in reports:
                reports[night] = night_report(join_path(root, f"dt={night.isoformat()}"))
            entry = reports[night]["data_sources"].get(ds.name)
            if entry is None:
                break  # not held by that night: nothing to carry from before it
            if entry.get("files"):
                last = night
                break
        if last is None:
            raise ConfigError(f"data source '{ds.name}': no segment dump matches '{ds.segments}', and no night "
                              f"published in the {limit} before dt={day} read one of its dumps "
                              f"(max_nights_without_delivery={limit}): its audience would be carried from too long "
                              "ago, or from nothing; deliver its dump, or import the missed nights first")
        pattern = template.for_date(last).data_source(ds.name).segments
        if not allow_gap and not matches_any(pattern, [f["path"] for f in entry["files"]]):
            raise ConfigError(f"data source '{ds.name}': no segment dump matches '{ds.segments}', and filled for "
                              f"dt={last} it would not match the dumps that night read "
                              f"({posixpath.basename(entry['files'][0]['path'])}): its segments changed since (a typo?) "
                              "and may never match a delivery, its audience carried as it is; correct it, or "
                              "--allow-gap to carry the audience tonight")
    return frozenset(ds.name for ds in skipping)


def _silent(ds) -> bool:
    """Whether the data source's ``segments`` list no dump tonight. A listing that fails (a denied
    prefix, an outage) cannot tell a silent night from a delivered one, and a control file or an
    upload in progress is a delivery that did not finish: refused, naming them."""
    listed = delivery_listed(ds.segments)  # dumps, else what an unfinished delivery left
    if listed is None:  # its dump may be there, and carried without it its changes would be lost
        raise ConfigError(f"data source '{ds.name}': its segments '{ds.segments}' could not be listed tonight (a "
                          "storage outage or a denied prefix?): that is no proof it delivered nothing; rerun "
                          "once they can be listed")
    if any(is_dump_file(path) for path in listed):
        return False
    if not listed and (folder := folder_hint(ds.segments)):  # a folder matches nothing: no proof of silence
        raise ConfigError(f"data source '{ds.name}': no segment dump matches '{ds.segments}'{folder}; taken for a night "
                          "without a delivery, its dumps would never be read")
    if listed:  # a control file, an upload in progress
        raise ConfigError(f"data source '{ds.name}': no segment dump matches '{ds.segments}', but "
                          f"{posixpath.basename(listed[0])} is there (a delivery that did not finish?): taken for a "
                          "night without a delivery, its dumps would never be read; rerun once they are there, or "
                          "remove it if the partner sent none")
    return True
