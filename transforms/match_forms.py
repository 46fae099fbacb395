"""What decides a data source's matching, as each night records it in its report (``match_form``,
``address_form``) and the next night compares it (:mod:`transforms.night_guard`): rows made under one
form are not what lines read under another would give."""
from __future__ import annotations

from transforms.config import JobConfig


def address_form(ds, cfg: JobConfig) -> str:
    """How a data source's file-audience addresses are written (``email/adobe``, ``sms/uid2/FR``):
    rows written in one form are not found, replaced or removed by lines read in another."""
    return "/".join([ds.channel, ds.normalization] + ([cfg.region_for(ds) or "-"] if ds.channel == "sms" else []))


def match_form(ds, cfg: JobConfig) -> dict:
    """What decides which profile a data source's dump line makes a member: the platform data source
    (dpid), the ID type, the extract column and the rules its values are keyed by. Memberships
    matched under one form are not what lines read under another would give (a removal read so
    misses them)."""
    form = {"dpid": ds.dpid, "id_type": ds.id_type if ds.id_type == "visitor" else f"declared/{ds.declared}",
            "column": cfg.profiles.key_column(ds)}
    if ds.id_type == "visitor":
        form["restore_leading_zeros"] = ds.restore_leading_zeros
    elif ds.declared == "hashed" or ds.decrypts:
        form.update(channel=ds.channel if ds.decrypts else None, kind=ds.key_kind, normalization=ds.normalization,
                    region=cfg.region_for(ds) if ds.key_kind == "phone" else None)
        if ds.key_kind == "phone" and cfg.profile_region_for(ds) != form["region"]:  # an SMS source's partner's region
            form.update(profile_region=cfg.profile_region_for(ds))  # (only then: earlier nights' forms stay the same)
        if ds.declared == "hashed":  # (not its digest's encoding: hex and base64 write the bytes the join runs on)
            form.update(hash_algorithm=ds.hash_algorithm)
    else:  # plain, or encrypted with channel 'other' (the token is the key)
        form.update(channel=ds.channel if ds.declared == "encrypted" else None, ignore_case=ds.ignore_case)
    return form


def compared_form(form: dict | None) -> dict | None:
    """A :func:`match_form` as two nights' are compared: ``profile_region``, recorded only where it
    differs from ``region``, filled in, so that a night reading the extract's phones in the partner's
    region and one reading them in another differ whichever of the two recorded it."""
    if form is None or form.get("kind") != "phone":
        return form
    return {**form, "profile_region": form.get("profile_region", form.get("region"))}
