"""What decides a data source's matching, as each night records it in its report (``match_form``,
``address_form``) and the next night compares it (:mod:`transforms.night_guard`): rows made under one
form are not what lines read under another would give. So does the text of its profile ids
(``profile_id_form``, in its ``_SUCCESS``): the ids its memberships are carried as."""
from __future__ import annotations

import decimal
import hashlib
import json

import pyarrow as pa

from transforms import profile_columns
from transforms.config import JobConfig

# Ids of each type an extract's id column may hold, as a release's rules write them (profile_id_form).
# Whole numbers only: how Arrow writes 2.5 is no id's text, and a library upgrade changing it would refuse every job.
_PROBE_IDS = (pa.array([0, 7, -5, 123456789012]), pa.array([2**63 + 1], pa.uint64()),
              pa.array([1.0, 123456789012.0]), pa.array([1.0, 16777215.0], pa.float32()),
              pa.array([decimal.Decimal("123456789012"), decimal.Decimal("-7")], pa.decimal128(38, 10)),
              pa.array(["007", " a b ", "\u00c4\u00d6", "x"]), pa.array(["007", "y"], pa.large_string()),
              pa.array(["k", "k", "007"]).dictionary_encode(), pa.array([b"bin"], pa.binary()))


def profile_id_form() -> str:
    """A digest of the profile ids this release writes for ids of every type (:data:`_PROBE_IDS`,
    through :func:`~transforms.profile_columns.profile_id_text`): a release writing them otherwise
    (4e139e0 read a decimal(38,10) id 123 as '123', the release before as '123.0000000000') gives
    another, and a night's memberships carried into one are not found by its ids."""
    texts = [profile_columns.profile_id_text(ids, "profile_id_form", "id").to_pylist() for ids in _PROBE_IDS]
    return hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]


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
