"""Mismatch diagnosis of encrypted data sources, the plaintext-form findings: failed tokens that are
addresses after all, in another form than the data source reads -- sent in clear (no ciphertext),
decrypted to text that is Latin-1 not UTF-8, written with a URI scheme ('mailto:'), addresses of the
other channel, or national phone numbers on a source read in no region. No key or IV explains them.
AES-CBC (:mod:`transforms.diagnosis_crypto`) and AES-GCM (:mod:`transforms.diagnosis_gcm`) hand
them their plaintexts (None: not decrypted) and the words for what decrypted them (``under``).

What a finding is, :class:`CryptoFinding`, lives here: both of those modules import it, and this one
imports neither (no import cycle). Findings name config fields, never a plaintext.
"""
from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from transforms.config import DataSourceConfig
from transforms.iv_check import OTHER_CHANNEL, SCHEMES
from transforms.normalize import normalize_keys


class CryptoFinding(NamedTuple):
    """What one check found in a data source's failed tokens: :mod:`transforms.diagnosis_findings`
    turns it into a finding of the report (``suggestion`` empty: no setting reads these tokens)."""

    kind: str
    suggestion: tuple[tuple[str, object], ...]  # a None value: this field is wrong, its right value is secret
    would_match: int
    message: str  # what follows "N of M sampled lines ..."


def addresses(ds: DataSourceConfig, plain: pa.Array, region: str | None) -> pa.BooleanArray:
    """Which decrypted plaintexts are valid addresses of the data source's channel once normalized."""
    return pc.is_valid(normalize_keys(plain, ds.key_kind, ds.normalization, region)[0])


def unencrypted(ds: DataSourceConfig, tokens: pa.Array, region: str | None) -> list[CryptoFinding]:
    """Tokens that are no ciphertext but, as they are, valid addresses of the channel: the partner
    sends them in clear (or the data source is plain, configured 'declared: encrypted'). No key or
    IV is beside the point; no setting of this data source reads them (a plain one has no
    encryption section): the finding suggests none."""
    n = pc.sum(addresses(ds, tokens.cast(pa.string()), region)).as_py()
    if not n:
        return []
    return [CryptoFinding("token_encoding", (), int(n),
                          f"are not encrypted: as they are, they are valid {address_noun(ds)} (a data source of addresses "
                          "in clear is 'declared: plain', without an encryption section); check what the partner sends")]


def other_charset(ds: DataSourceConfig, plaintexts: list[bytes | None], region: str | None, under: str) -> list[CryptoFinding]:
    """Decrypted ``plaintexts`` (None: not decrypted) that are not UTF-8 and, read as Windows-1252,
    are valid addresses. No setting reads another charset: the finding suggests none."""
    texts = []
    for raw in plaintexts:
        try:
            (raw or b"").decode("utf-8")
            texts.append(None)  # UTF-8 (or nothing): not this
        except UnicodeDecodeError:
            texts.append(as_text(raw.decode("cp1252", errors="replace").encode("utf-8")))
    n = pc.sum(addresses(ds, pa.array(texts, pa.string()), region)).as_py()
    if not n:
        return []
    return [CryptoFinding("token_encoding", (), int(n),
                          f"decrypt under {under} to text that is not UTF-8: read as Latin-1 "
                          f"(Windows-1252), they are valid {address_noun(ds)}; ask the partner to encrypt the addresses "
                          "as UTF-8 (no setting reads another charset)")]


def other_channel(ds: DataSourceConfig, plaintexts: list[bytes | None], region: str | None, under: str) -> list[CryptoFinding]:
    """Decrypted ``plaintexts`` that are addresses of the other channel (phone numbers on an email
    source, email addresses on an sms one): the finding suggests that channel, and the match_on role
    that goes with it when match_on names a role (a column of its own is the operator's)."""
    kind, noun, channel = OTHER_CHANNEL.get(ds.channel, (None, None, None))
    if kind is None:
        return []
    texts = pa.array([as_text(raw) for raw in plaintexts], pa.string())
    n = pc.sum(pc.is_valid(normalize_keys(texts, kind, ds.normalization, region if kind == "phone" else None)[0])).as_py()
    if not n:
        return []
    change = (("channel", channel),) + ((("match_on", kind),) if ds.match_on in ("email", "phone") else ())
    return [CryptoFinding("channel", change, int(n), f"decrypt under {under} to {noun}, not {address_noun(ds)}: the "
                          f"partner encrypts the {channel} channel's addresses")]


# A phone number as dialled inside its country: a trunk '0' in front, no country code, 8 to 14 digits
# (separators removed). Read in no region, it is no phone number.
_NATIONAL = r"^0[0-9]{7,13}$"


def national_numbers(ds: DataSourceConfig, plaintexts: list[bytes | None], region: str | None, under: str) -> list[CryptoFinding]:
    """Decrypted ``plaintexts`` of a phone source read in no region (``region`` None) that are national
    numbers ('06 12 34 56 78'): default_region reads them. Which region is the partner's to say (an
    '06' mobile number is French and Dutch): the finding names the field, not a value."""
    if ds.key_kind != "phone" or region is not None:
        return []
    digits = pc.replace_substring_regex(pa.array([as_text(raw) for raw in plaintexts], pa.string()), r"[\s.()/-]", "")
    n = pc.sum(pc.fill_null(pc.match_substring_regex(digits, _NATIONAL), False)).as_py()
    if not n:
        return []
    return [CryptoFinding("region", (("default_region", None),), int(n),
                          f"decrypt under {under} to phone numbers without a country code (a leading 0, as dialled "
                          "inside a country), which are read in no region: set default_region to the partner's")]


def uri_scheme(ds: DataSourceConfig, plaintexts: list[bytes | None], region: str | None, under: str) -> list[CryptoFinding]:
    """Decrypted ``plaintexts`` written with a URI scheme of :data:`iv_check.SCHEMES` (any case:
    'mailto:ann@...') that, without it, are valid addresses. The scheme is named from that list."""
    for scheme in SCHEMES:
        cut = [as_text(raw[len(scheme):]) if raw and raw[:len(scheme)].lower() == scheme.encode() else None
               for raw in plaintexts]
        n = pc.sum(addresses(ds, pa.array(cut, pa.string()), region)).as_py()
        if n:
            return [CryptoFinding("token_encoding", (), int(n),
                                  f"decrypt under {under} to addresses written with a URI scheme ('{scheme}'): "
                                  f"without it, they are valid {address_noun(ds)}; ask the partner for bare addresses "
                                  "(no setting removes a scheme)")]
    return []


def as_text(raw: bytes) -> str | None:
    """Decrypted bytes as text; None when empty, not UTF-8 or holding a control byte (no address does)."""
    try:
        return raw.decode("utf-8") if raw and min(raw) >= 0x20 else None
    except UnicodeDecodeError:
        return None


def address_noun(ds: DataSourceConfig) -> str:
    """What the data source's addresses are called in a finding's message."""
    return {"email": "email addresses", "phone": "phone numbers"}.get(ds.key_kind, "values")
