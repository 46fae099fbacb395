"""How a declared data source's ``match_on`` column is read: the rules of ``match_as`` and of a role's
column named by its name, as one-line problems (:mod:`transforms.config`'s validators raise them).

``match_on: email`` / ``phone`` are the roles (the extract's ``profiles.email`` / ``profiles.phone``
columns, normalized as emails / phones); any other column is read as ``match_as`` says (``email``,
``phone``, or ``other``: trimmed, its case kept), ``other`` when it is left out.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transforms.config import DataSourceConfig, ProfilesConfig

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
