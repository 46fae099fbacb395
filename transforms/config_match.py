"""How a declared data source's ``match_on`` column is read: the rules of ``match_as`` and of a role's
column named by its name, and the region the extract's phones are read in, as one-line problems
(:mod:`transforms.config`'s validators raise them).

``match_on: email`` / ``phone`` are the roles (the extract's ``profiles.email`` / ``profiles.phone``
columns, normalized as emails / phones); any other column is read as ``match_as`` says (``email``,
``phone``, or ``other``: trimmed, its case kept), ``other`` when it is left out.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transforms.config import DataSourceConfig, JobConfig, ProfilesConfig

ROLES = ("email", "phone")
NOUNS = {"email": "email addresses", "phone": "phone numbers", "other": "values"}


def match_as_problem(ds: "DataSourceConfig") -> str | None:
    """Why a data source's ``match_as`` contradicts its other settings or does nothing, or None."""
    if ds.match_as is None:
        return None
    if ds.declared == "encrypted":  # decrypted IDs are the channel's addresses; channel other: tokens as written
        return ("match_as does not apply to 'declared: encrypted': its channel decides how the IDs are read "
                "(channel: email or sms; other: as written)")
    if ds.declared != "hashed":
        return ("match_as applies to 'declared: hashed' only (plain IDs are compared as written; ignore_case folds "
                "them)" if ds.declared == "plain" else "match_as applies to 'declared: hashed' only")
    if ds.normalization == "none":
        return "match_as does nothing under normalization: none (the values are hashed exactly as stored): remove it"
    if ds.match_on in ROLES:
        if ds.match_as == ds.match_on:
            return f"match_on: {ds.match_on} is read as {NOUNS[ds.match_on]} already: remove match_as"
        return (f"match_on: {ds.match_on} is the {ds.match_on} role, read as {NOUNS[ds.match_on]}: match_as: "
                f"{ds.match_as} contradicts it (match_as reads another column: match_on: <column>)")
    return None


def role_column_problem(ds: "DataSourceConfig", profiles: "ProfilesConfig") -> str | None:
    """A hashed source's ``match_on`` naming the email or phone role's column (``e_mail``) rather than
    the role: compared as any column (trimmed, case kept), every address with a capital, every phone
    not written in E.164, missed its hash, exit 0. Normalization ``none`` hashes as stored. With
    ``match_as`` the role's column still has one way to be written: the role."""
    if ds.declared != "hashed" or ds.normalization == "none" or ds.match_on in ROLES or ds.match_on is None:
        return None
    for role in ROLES:
        if ds.match_on == getattr(profiles, role):
            if ds.match_as is not None:
                return (f"match_on: {ds.match_on} is the column of profiles.{role}: write match_on: {role} "
                        "without match_as (the role reads its column)")
            return (f"match_on: {ds.match_on} is the column of profiles.{role}: write match_on: {role}, so its "
                    f"values are normalized as {role}s (named by the column, they are compared as written)")
    return None


def decrypted_normalization_problem(ds: "DataSourceConfig") -> str | None:
    """A normalization that does not read an email/SMS source's decrypted addresses as addresses:
    ``none`` (for partners hashing values as stored) kept the decrypted text as it was, untrimmed and
    unchecked ('+33612345678\\n' matched no one, 'not a phone' was a file-audience row, exit 0);
    ``meta`` on SMS drops the '+', so the source's own export encrypted '4915123456789' and its import
    read it back as a national number (+494915123456789 under DE), exit 0."""
    if ds.decrypts and ds.normalization == "none":
        return ("normalization: none compares the decrypted text as written: it is not trimmed, checked as "
                f"{'a phone number' if ds.channel == 'sms' else 'an email address'} nor normalized (meant for values "
                "hashed as stored); remove it (adobe, the default, or another profile)")
    if ds.decrypts and ds.channel == "sms" and ds.normalization == "meta":
        return ("normalization: meta writes phone numbers without their '+', and decrypted, a number without it is "
                "read as a national one (its own export did not import back); set normalization: adobe or google "
                "(E.164 with its '+') on channel: sms")
    return None


def extract_region_problem(cfg: "JobConfig") -> str | None:
    """Data sources reading the extract's phones in two regions (JobConfig.profile_region_for: two SMS
    sources' own regions without profiles.default_region, or a hashed source's own): a French extract's
    '06 12 34 56 78' was +33612345678 for one and +31612345678 (someone else's) for the other, and the
    profile matched both, exit 0. A source comparing phones as written (normalization: none), or reading
    them in no region, is no conflict; nor are sources reading two columns (a hashed source's second
    column of Dutch numbers, match_as: phone, beside the French profiles.phone)."""
    columns: dict[str, dict[str, str]] = {}  # column: {region: the first data source reading it so}, in config order
    for ds in cfg.data_sources:
        region = cfg.profile_region_for(ds)
        keyed = ds.decrypts or ds.declared == "hashed"  # plain IDs are compared as written
        if region is not None and keyed and ds.key_kind == "phone" and ds.normalization != "none":
            columns.setdefault(cfg.profiles.column_for(ds.match_on), {}).setdefault(region, ds.name)
    regions = next((r for r in columns.values() if len(r) > 1), None)
    if regions is None:
        return None
    (a, first), (b, second) = list(regions.items())[:2]
    fix = ("(their own default_region): set profiles.default_region to where they are dialled"
           if cfg.profiles.default_region is None else
           "(a hashed source's own default_region overrides profiles.default_region): remove it")
    return (f"data sources '{first}' and '{second}' read the extract's phones written without their country code in "
            f"{a} and {b}, so one such phone would be two numbers {fix}")
