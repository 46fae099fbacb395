"""Suppression lists: addresses that must never be shared, whatever a target list or a dump says.

A list (config ``suppression:``) is one or more files of emails or phones, one per line (blank lines
skipped, ``.gz`` read as gzip), plain or hashed. Both sides are compared the way the data source
compares addresses: plain entries are normalized with the data source's profile; hashed entries
must be SHA-256 digests in the data source's ``digest`` encoding, of addresses normalized under any
profile, and are compared with the digests of our addresses in every profile's form (:func:`_forms`). An entry that
is not a valid address or digest fails the run naming the file and line (a typo would otherwise
silently not suppress anyone); a configured list that matches no file fails the preflight.

Applied to the export (a profile whose email or phone is suppressed is never sent, and removed from
the platform if it was: :class:`transforms.export_profiles.ReadTargetedProfiles`) and to the import's
file audience (a suppressed address is not written: :class:`SuppressFileAudience`). Nothing here
logs, counts or reports an entry: only how many there are; the file-audience writer counts the
entries they withheld (:class:`transforms.write_parts.WriteParts`, ``withheld_metric``).
"""
from __future__ import annotations

from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.arrow_utils import plain_array
from transforms.config import DataSourceConfig, JobConfig, SuppressionList
from transforms.errors import InputError
from transforms.digests import hash_keys
from transforms.keys import CONTROL
from transforms.normalize import AS_IS, PROFILES, canonical_digests, normalize_keys
from transforms.phones import without_country_code
from transforms.write_parts import ADD, WITHHELD
from transforms.storage import glob, not_text, open_decompressed


class SuppressionEntries(NamedTuple):
    """One suppression file as read: its entries (trimmed, non-blank) and their line numbers."""

    path: str
    kind: str  # email | phone
    hashed: bool
    values: pa.Array  # string
    lines: pa.Array  # int64, from 1


def read_suppression_file(path: str, entry: SuppressionList) -> SuppressionEntries:
    try:
        with open_decompressed(path) as handle:  # .gz is decompressed by its extension; one cut short fails
            data = handle.read()
    except OSError as exc:
        raise InputError(path, f"cannot read the suppression list ({type(exc).__name__})") from None
    problem = not_text(path, data[:4096], "list", entry.path)  # compressed under a plain name, UTF-16
    if problem:
        raise InputError(path, problem)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "not UTF-8 text (Latin-1?): save the list as UTF-8") from None
    raw = pa.array(text.splitlines(), pa.string())
    trimmed = pc.utf8_trim_whitespace(raw)
    keep = pc.greater(pc.utf8_length(trimmed), 0)
    if not pc.any(keep).as_py():  # a copy that wrote nothing would suppress nobody: its addresses shared
        raise InputError(path, "the suppression list holds no entry (a failed copy or export?); take it out of the "
                               "config to run without it")
    lines = pa.array(np.arange(1, len(raw) + 1, dtype=np.int64))
    return SuppressionEntries(path, entry.kind, entry.hashed, pc.filter(trimmed, keep), pc.filter(lines, keep))


class ReadSuppressionLists(beam.PTransform):
    """The config's suppression lists -> one :class:`SuppressionEntries` per file (empty without lists)."""

    def __init__(self, cfg: JobConfig):
        super().__init__()
        self._lists = list(cfg.suppression)

    def expand(self, root):
        return (
            root
            | "ListSuppressionLists" >> beam.Create(self._lists)
            | "ReadSuppressionFiles" >> beam.FlatMap(_read_entries)
        )


def _read_entries(entry: SuppressionList):
    paths = glob(entry.path, missing_ok=True)
    if not paths:
        raise InputError(entry.path, "no suppression list matches")
    for path in paths:
        yield read_suppression_file(path, entry)


# What a list's format or a mail client wraps an email in ('"a@x.com"', "<a@x.com>", 'a@x.com,', 'mailto:a@x.com'):
# the platforms' email rules take it (one '@', no space), and no profile's address ever equals it, so it
# suppressed nobody. A domain never holds these characters (a local part may: "o'brien", '"j.doe"').
_WRAPPED = r"^(?i:mailto:)|@[^@]*[\"'<>,;][^@]*$"


def _first_invalid(valid: pa.Array, lines: pa.Array) -> int | None:
    bad = np.flatnonzero(~np.asarray(pc.fill_null(valid, False).to_numpy(zero_copy_only=False), dtype=bool))
    return int(lines[int(bad[0])].as_py()) if len(bad) else None


def suppressed_columns(cfg: JobConfig, ds: DataSourceConfig) -> list[tuple[str, str]]:
    """``(kind, extract column)``: the columns each kind's suppression lists are compared with, the
    profiles' email and phone and the data source's own match column: as the kind it reads it as
    (``match_on: work_email``, ``match_as: email``), as emails where read as written (a plain source's;
    no phones: a CRM id may read as one). With profiles.email only, a listed work address was sent."""
    pairs = [(kind, cfg.profiles.column_for(kind)) for kind in ("email", "phone")]
    if ds.match_on:
        own = ({"other": "email"}.get(ds.key_kind, ds.key_kind), cfg.profiles.column_for(ds.match_on))
        if own not in pairs:
            pairs.append(own)
    return pairs


class Suppressor:
    """The suppression lists compiled for one data source: per kind, the normalized plain entries
    and the canonical digests. Built on a worker from the side input; never pickled with data."""

    def __init__(self, lists: list[SuppressionEntries], ds: DataSourceConfig, region: str | None = None):
        self._ds, self._region = ds, region  # region: where phones without a country code are read
        self.entries = 0
        plain: dict[str, list] = {"email": [], "phone": []}
        digests: dict[str, list] = {"email": [], "phone": []}
        for entries in lists:
            self.entries += len(entries.values)
            if entries.hashed:
                canon, reason = canonical_digests(entries.values, ds.digest_encoding)
                line = _first_invalid(pc.is_null(reason), entries.lines)
                if line is not None:
                    raise InputError(entries.path, f"not a {ds.digest_encoding} SHA-256 digest (data source "
                                     f"'{ds.name}' hashes with {ds.normalization}/{ds.digest_encoding})", line=line)
                digests[entries.kind].append(canon)
            else:
                normalized, reason = normalize_keys(entries.values, entries.kind, self._profile(entries.kind),
                                                    self._region_for(entries.kind))
                line = _first_invalid(pc.is_null(reason), entries.lines)
                if line is not None:
                    raise InputError(entries.path, f"not a valid {entries.kind}", line=line)
                if entries.kind == "email":
                    line = _first_invalid(pc.invert(pc.match_substring_regex(entries.values, _WRAPPED)), entries.lines)
                    if line is not None:
                        raise InputError(entries.path, "not an address on its own (quotes, <>, ',' or ';' after it, "
                                         "'mailto:': a list saved as CSV or copied from a mail client?): write one "
                                         "address per line, as it is", line=line)
                    # '\ufeffjane@x.com' (two lists joined, the second saved with a byte order mark), a
                    # zero-width space: the email rule takes it, no profile's address equals it.
                    line = _first_invalid(pc.invert(pc.match_substring_regex(entries.values, CONTROL)), entries.lines)
                    if line is not None:
                        raise InputError(entries.path, "an invisible or control character in the address (a byte "
                                         "order mark: lists joined with cat? a zero-width space?): save it without "
                                         "it", line=line)
                plain[entries.kind].append(normalized)
        self._plain = {k: _unique(v) for k, v in plain.items()}
        self._digests = {k: _unique(v) for k, v in digests.items()}

    def __bool__(self) -> bool:
        return any(len(v) for v in (*self._plain.values(), *self._digests.values()))

    def normalized(self, values, kind: str) -> pa.Array:
        """Raw addresses (a profile column) normalized with the data source's profile and, for phones,
        its default region, as its keys are (null: invalid)."""
        normalized, _ = normalize_keys(plain_array(values, text="cast"), kind, self._profile(kind),
                                       self._region_for(kind))
        return normalized

    def first_unread_phone(self, values) -> int | None:
        """The index of the first phone of ``values`` (a profile column) written without its country code
        where the data source reads phones in no region, if a phone list is set (else None): no region
        reads it, so it cannot be compared with the list (the profile was exported by its email, exit 0).
        A data source comparing phones as written (``normalization: none``) needs no region."""
        if self._region is not None or self._profile("phone") == AS_IS or not (
                len(self._plain["phone"]) or len(self._digests["phone"])):
            return None
        hits = np.flatnonzero(without_country_code(plain_array(values, text="cast")))
        return int(hits[0]) if len(hits) else None

    def _profile(self, kind: str) -> str:
        """The data source's normalization, but for phones under uid2 adobe's, the same E.164 text
        without uid2's 10-digit minimum (an identity's rule, not a number's): a 9-digit number held by
        a list was refused ('not a valid phone') or, hashed, never met (its uid2 form null)."""
        return "adobe" if kind == "phone" and self._ds.normalization == "uid2" else self._ds.normalization

    def _region_for(self, kind: str) -> str | None:
        return self._region if kind == "phone" else None

    def suppressed(self, normalized: pa.Array, kind: str, raw: pa.Array | None = None) -> pa.Array:
        """True where an address is suppressed (null addresses never are). ``normalized``: as the
        data source normalizes it; ``raw``: as written, when the caller has it (the extract's column).
        Hashed entries meet the digests of the address under every normalization (:func:`_forms`):
        a list hashed while the data source normalized otherwise (its normalization changed since,
        or one list serves two data sources) suppressed nobody, and its addresses were exported."""
        hit = pc.is_in(normalized, value_set=self._plain[kind])
        if len(self._digests[kind]):
            for form in _forms(normalized, raw, kind, self._region_for(kind), self._profile(kind)):
                hashed = hash_keys(form, self._ds.digest_encoding)
                hit = pc.or_kleene(hit, pc.is_in(hashed, value_set=self._digests[kind]))
        return pc.fill_null(hit, False)


def _forms(normalized: pa.Array, raw: pa.Array | None, kind: str, region: str | None, own: str) -> list[pa.Array]:
    """An address in each form a normalization writes it (PROFILES), which all name one mailbox or
    number: a phone with and without its '+' (meta's digits); an email normalized from ``raw`` under
    each profile and ``raw`` as written (trimmed), or without ``raw`` from ``normalized`` (the file
    audience keeps no other form: a form that drops more than the data source's, uid2's from adobe's,
    is found; one that keeps what it dropped, adobe's dots from google's, is not). ``own``: the
    profile ``normalized`` was written under, whose form is not computed again (hashed twice, it was)."""
    if kind == "phone":
        digits = pc.utf8_ltrim(normalized, characters="+")
        forms = [digits, pc.binary_join_element_wise("+", digits, "")]  # (under a profile, ``normalized`` is one)
        return forms if own in PROFILES else [normalized, *forms]
    source = plain_array(raw, text="cast") if raw is not None else normalized
    # From ``raw``, the own profile's form is ``normalized`` itself (the same call made it)
    forms = [normalized, *(normalize_keys(source, kind, profile, region)[0] for profile in PROFILES
                           if raw is None or profile != own)]
    # and ``raw`` as written, trimmed: a list hashed from a CRM column as it is ('Jane.Doe@Example.com')
    # met no normalized form, and its addresses were exported
    return forms if raw is None else [*forms, pc.utf8_trim_whitespace(source)]


def _unique(arrays: list) -> pa.Array:
    if not arrays:
        return pa.array([], pa.string())
    return pc.unique(pa.chunked_array(arrays, pa.string()).combine_chunks())


class SuppressFileAudience(beam.DoFn):
    """The import's file-audience path: hold back the rows (``data_source, segment_id, channel,
    address``) whose address is suppressed. Elements are tables, or ``(tag, table)`` pairs on the
    nightly path (tonight's additions and the carried-over state are filtered alike: a newly
    suppressed address leaves; removals pass as they are). The rows kept go on as they came; the
    rows held back go on to the writer as ``(WITHHELD[tag], rows)`` (a plain table's: ``ADD``'s),
    which counts the entries they would have been once merged, as ``suppressed``, and writes none:
    counted here, a suppressed entry carried from the previous night and in tonight's dump again
    counted twice, as did an entry on two dump lines."""

    def __init__(self, cfg: JobConfig, pass_tags: tuple[str, ...] = ()):
        self._cfg, self._pass_tags = cfg, pass_tags

    def setup(self):
        self._suppressors: dict[str, Suppressor] = {}
        self._keeping = {ds.name for ds in self._cfg.data_sources if ds.keeps_file_audience}

    def process(self, element, lists):
        tag, table = element if isinstance(element, tuple) else (None, element)
        if tag in self._pass_tags or not table.num_rows:
            yield element
            return
        keep = np.ones(table.num_rows, dtype=bool)
        sources = plain_array(table["data_source"], text="cast")
        for name in pc.unique(sources).to_pylist():
            if name not in self._keeping:
                continue  # previous rows of a data source taken out of the config or keeping none now: the merge drops them
            ds = self._cfg.data_source(name)
            suppressor = self._suppressors.get(name)
            if suppressor is None:
                suppressor = self._suppressors[name] = Suppressor(lists, ds, self._cfg.profile_region_for(ds))
            rows = np.asarray(pc.equal(sources, name).to_numpy(zero_copy_only=False), dtype=bool)
            kind = {"email": "email", "sms": "phone"}[ds.channel]
            addresses = plain_array(table["address"], text="cast")
            hit = np.asarray(suppressor.suppressed(addresses, kind).to_numpy(zero_copy_only=False), dtype=bool)
            keep &= ~(rows & hit)
        if keep.all():
            yield element
            return
        yield WITHHELD[ADD if tag is None else tag], table.filter(pa.array(~keep))
        kept = table.filter(pa.array(keep))
        yield (tag, kept) if tag is not None else kept
