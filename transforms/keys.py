"""Reconciliation keys: turn dump IDs and profile fields into comparable join keys.

Pure functions over Arrow tables, one rule per data source kind:

==================  =====================================  =======================================
data source         dump side                               profile side
==================  =====================================  =======================================
visitor             the 38-digit ID (zero-padded with       each of the profile's visitor IDs
                    ``restore_leading_zeros``)
declared plain      the ID as is (no ``:``; trimmed and     the ``match_on`` value as is (the same
                    lower-cased with ``ignore_case``)       with ``ignore_case``)
declared hashed     the digest, canonical form              normalize + SHA-256 of ``match_on``
declared encrypted  decrypt, then normalize (email/sms)     normalize ``match_on``
  (channel other)   the token as is                         the ``match_on`` value as is
==================  =====================================  =======================================

The join itself runs on binary keys (:func:`join_keys`): visitor IDs in packed decimal (19 bytes),
digests as their 32 raw bytes (hex is matched in either case), other keys as their UTF-8 bytes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms import digests, normalize
from transforms.arrow_utils import NAME, explode_list, fixed_width_binary, narrow_dictionary, plain_array, rows_of_width
from transforms.config import DataSourceConfig, JobConfig
from transforms.dumps import rejected_table, split_tokens
from transforms.iv_check import OTHER_CHANNEL, SCHEMES, FirstBlocks
from transforms.reasons import Reason
from transforms.profile_columns import MIN_PADDED_DIGITS
from transforms.profiles import KEY_PREFIX

if TYPE_CHECKING:
    from transforms.parallel import OnceEach

# What the join shuffles, per side. Every byte here is copied several times by a local runner's
# in-memory shuffle and paid for on Dataflow's, so rows are compact: the join key in its binary form
# (see join_keys), a line's segment lists as dictionary-encoded "segment sets" (a few distinct values
# in a whole dump), and no column the shard's key already says (the data source).
# dump_keys emits narrower types still (int32 lines, the smallest dictionary index type that fits);
# the join widens them to this schema when it concatenates a shard.
DUMP_SHARD_SCHEMA = pa.schema(
    [
        ("source_file", NAME),
        ("line", pa.int64()),
        ("key", pa.binary()),
        ("segments", NAME),  # segment set: the line's segment ids joined by ","
        ("removed", NAME),  # same for removed ids; applied by incremental (iter) syncs only, else ""
    ]
)
PROFILE_SHARD_SCHEMA = pa.schema([("key", pa.binary()), ("profile_id", pa.string())])
PROFILE_KEY_SCHEMA = pa.schema([("key", pa.string()), ("profile_id", pa.string())])


def is_visitor_id(values: pa.Array | pa.ChunkedArray) -> pa.BooleanArray | pa.ChunkedArray:
    """True where a value is exactly 38 ASCII digits (``^[0-9]{38}$``), false elsewhere and for
    nulls: a length and a character-class kernel, several times cheaper than the regex."""
    return pc.fill_null(pc.and_(pc.equal(pc.binary_length(values), 38), pc.ascii_is_decimal(values)), False)


def _mask(values: pa.Array) -> np.ndarray:
    return pc.fill_null(values, False).to_numpy(zero_copy_only=False)


def _plain_key_reasons(ids: pa.Array) -> np.ndarray:
    """Declared IDs used as they are: non-empty, and no ':' (the platform forbids it in a DPUUID)."""
    ids = pc.fill_null(ids, "")
    bad = _mask(pc.equal(pc.utf8_length(ids), 0)) | _mask(pc.match_substring(ids, ":"))
    return np.where(bad, Reason.INVALID_DECLARED_ID, None)


def restore_leading_zeros(ids: pa.Array) -> pa.Array:
    """Visitor IDs that lost their leading zeros upstream (stored as a number): all-digit IDs of 30
    to 37 digits, zero-padded to 38, as the profile side pads them. Other IDs are left as they are:
    fewer digits (9 leading zeros, one visitor ID in 10^9) are customer numbers, invalid IDs, where
    padded they matched nobody and passed the invalid-ID guard as unmatched."""
    short = pc.fill_null(pc.match_substring_regex(ids, rf"^[0-9]{{{MIN_PADDED_DIGITS},37}}$"), False)
    return pc.if_else(short, pc.utf8_lpad(ids, 38, "0"), ids)


def fold_case(ids: pa.Array) -> pa.Array:
    """Plain declared IDs compared loosely (``ignore_case``): trimmed and lower-cased."""
    return pc.utf8_lower(pc.utf8_trim_whitespace(ids))


class DumpKeys(NamedTuple):
    """What :func:`dump_keys` gives for a table of parsed lines."""

    keyed: pa.Table  # DUMP_SHARD_SCHEMA: the lines with a join key
    rejected: pa.Table  # the lines without one, with their reason
    first_blocks: FirstBlocks | None  # AES-CBC data sources: what the IV check needs


# Control characters that are not whitespace (normalization trims whitespace, the email rule refuses
# it inside), and invisible format characters (Unicode Cf: a byte order mark, a zero-width space): a
# decrypted ID holding one is no address, even where the email rule would take it (a C string
# encrypted with its terminating NUL would give 'ann@example.com\0', UTF-8 written with a BOM
# '\ufeffann@example.com': keys that match nobody, and a file audience of them).
CONTROL = r"[\x00-\x08\x0e-\x1b\x7f\x{80}-\x{84}\x{86}-\x{9f}\p{Cf}]"
# A URI scheme in front ('mailto:ann@example.com'; the email rule takes a ':' in the local part): no
# address. An AES-GCM source, which has no IV check, published a file audience of them, exit 0.
_SCHEME = r"(?i)^\s*(?:" + "|".join(scheme.rstrip(":") for scheme in SCHEMES) + "):"


def dump_keys(parsed: pa.Table, ds: DataSourceConfig, decryptor=None, default_region: str | None = None) -> DumpKeys:
    """Join keys for parsed dump lines (see :class:`DumpKeys`). ``default_region``: where decrypted
    phones without a country code are read (JobConfig.region_for)."""
    ids = parsed["id"].combine_chunks() if isinstance(parsed["id"], pa.ChunkedArray) else parsed["id"]
    first_blocks = None
    if ds.id_type == "visitor":
        keys = restore_leading_zeros(ids) if ds.restore_leading_zeros else ids
        reasons = np.where(_mask(is_visitor_id(keys)), None, Reason.INVALID_VISITOR_ID)
    elif ds.declared == "hashed":
        keys, reason_arr = normalize.canonical_digests(ids, ds.digest_encoding, ds.hash_algorithm)
        reasons = np.array(reason_arr.to_pylist(), dtype=object) if reason_arr.null_count < len(reason_arr) else np.full(len(ids), None, dtype=object)
    elif ds.decrypts:
        plain, dec_reasons = decryptor.decrypt(ids)
        keys, norm_reasons = normalize.normalize_keys(plain, ds.key_kind, ds.normalization, default_region)
        reasons = np.array(dec_reasons.to_pylist(), dtype=object)
        failed_norm = (reasons == None) & _mask(pc.is_valid(norm_reasons))  # noqa: E711
        failed_norm |= (reasons == None) & _mask(pc.match_substring_regex(plain, CONTROL))  # noqa: E711
        failed_norm |= (reasons == None) & _mask(pc.match_substring_regex(plain, _SCHEME))  # noqa: E711
        reasons[failed_norm] = Reason.INVALID_PLAINTEXT
        _mark_url_safe_tokens(ids, reasons, ds, decryptor, default_region)
        # No token at all is a missing value, as for a hashed source, not a failed decryption (which
        # blames the key or IV).
        reasons[_mask(normalize.missing_mask(pc.utf8_trim_whitespace(ids)))] = Reason.MISSING_VALUE
        if ds.encryption.algorithm == "aes-cbc":
            first_blocks = FirstBlocks.of(plain, keys.filter(pa.array(reasons == None)),  # noqa: E711
                                          _other_channel(plain, reasons, ds, default_region))
    else:  # declared plain, or encrypted with channel 'other' (the token is the key)
        keys = fold_case(ids) if ds.ignore_case else ids
        reasons = _plain_key_reasons(keys)
    good = pa.array(reasons == None)  # noqa: E711
    keyed = pa.table(
        {
            "source_file": narrow_dictionary(parsed["source_file"].filter(good)),
            "line": parsed["line"].filter(good).cast(pa.int32()),  # numbered_chunks stops before 2**31
            "key": join_keys(keys.filter(good), ds),
            "segments": segment_sets(parsed["segments"].filter(good)),
            "removed": segment_sets(parsed["removed"].filter(good)),
        }
    )
    rejected = rejected_table(ds.name, parsed["source_file"].combine_chunks(), parsed["line"].combine_chunks(), reasons)
    return DumpKeys(keyed, rejected, first_blocks)


def _other_channel(plain: pa.Array, reasons: np.ndarray, ds: DataSourceConfig, default_region: str | None) -> int:
    """How many decrypted IDs, no address of the channel, are one of the other channel's (an email on
    an sms source): the IV check names the channel then, not the IV (:class:`iv_check.CheckFirstBlocks`).
    Looks only at the invalid plaintexts: none to look at on a good delivery."""
    rows = np.flatnonzero(reasons == Reason.INVALID_PLAINTEXT)
    if not rows.size:
        return 0
    kind = OTHER_CHANNEL[ds.channel][0]
    region = default_region if kind == "phone" else None
    other, _ = normalize.normalize_keys(pc.take(plain, pa.array(rows)), kind, ds.normalization, region)
    return len(other) - other.null_count


def _mark_url_safe_tokens(ids: pa.Array, reasons: np.ndarray, ds: DataSourceConfig, decryptor,
                          default_region: str | None) -> None:
    """Tokens that failed to decrypt, hold '-' or '_', and decrypt to an address of the channel once
    read as standard base64 ('+' and '/'): the partner sends url-safe base64, and its tokens without
    either character only look standard. Marked ``NOT_STANDARD_BASE64`` in place, which fails the run
    (:func:`transforms.report.check_report`): about half of the file would be dropped otherwise."""
    failed = reasons == Reason.DECRYPT_FAILED
    if not failed.any():
        return
    rows = np.flatnonzero(failed & _mask(pc.match_substring_regex(ids, "[-_]")))
    if not rows.size:
        return
    tokens = pc.take(ids, pa.array(rows))
    standard = pc.replace_substring(pc.replace_substring(tokens, "-", "+"), "_", "/")
    plain, _ = decryptor.decrypt(standard)
    keys, _ = normalize.normalize_keys(plain, ds.key_kind, ds.normalization, default_region)
    reasons[rows[_mask(pc.is_valid(keys))]] = Reason.NOT_STANDARD_BASE64


def join_keys(keys: pa.Array, ds: DataSourceConfig) -> pa.BinaryArray:
    """Valid text keys (both sides' form after validation) -> the binary join key: a visitor ID's
    38 digits packed into 19 bytes, a digest's raw bytes (32 for SHA-256), anything else its UTF-8 bytes. One
    text key gives one binary key and back, so matching on either is the same."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    if ds.id_type == "visitor":
        return pack_visitor_ids(keys)
    if ds.declared == "hashed":
        return digests.decode_digests(keys, ds.digest_encoding, ds.hash_algorithm)
    return keys.cast(pa.binary())


def pack_visitor_ids(ids: pa.Array) -> pa.BinaryArray:
    """38-digit visitor IDs (validated, no nulls) -> 19 bytes each, two digits a byte (packed
    decimal: one-to-one, and a few numpy byte operations for a whole batch)."""
    digits = rows_of_width(ids, 38) - np.uint8(ord("0"))
    return fixed_width_binary((digits[:, 0::2] << 4) | digits[:, 1::2], len(ids), 19)


def segment_sets(lists: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    """list<string> segment ids -> one dictionary-encoded string per line ("1401,1402"; "" for
    none), with the smallest index type that fits: 1-2 bytes a line instead of the lists, since a
    dump has few distinct combinations."""
    lists = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    return narrow_dictionary(pc.dictionary_encode(pc.binary_join(lists, ",")))


def segment_lists(sets: pa.Array | pa.ChunkedArray) -> pa.ListArray:
    """Inverse of :func:`segment_sets`: the lines' segment id lists ("" -> []). Splits each chunk's
    dictionary (its distinct sets) once, then takes by index."""
    chunks = sets.chunks if isinstance(sets, pa.ChunkedArray) else [sets]
    out = []
    for chunk in chunks:
        out.append(split_tokens(chunk.dictionary, ",")[0].take(chunk.indices))
    if not out:
        return pa.array([], pa.list_(pa.string()))
    return pa.concat_arrays(out) if len(out) > 1 else out[0]


# A table's column of segment sets (as DUMP_SHARD_SCHEMA's ``segments``): the join sends each matched
# (line set, profile) pair to the writers once, with its set, and the writers make it one row per
# segment (:func:`segment_rows`). Exploded in the join, a line naming a dozen segments was a dozen
# rows through the shuffle: 77M membership rows held by the local runner for a 10M-line dump.
SEGMENT_SET = "segment_set"


def segment_rows(table: pa.Table) -> pa.Table:
    """A table with a :data:`SEGMENT_SET` column as one row per segment id of each row's set, in a
    ``segment_id`` column where the set was (a row with no segment goes); any other table as it is."""
    if SEGMENT_SET not in table.column_names:
        return table
    names = [("segment_id" if n == SEGMENT_SET else n) for n in table.column_names]
    listed = table.set_column(table.column_names.index(SEGMENT_SET), SEGMENT_SET, segment_lists(table[SEGMENT_SET]))
    return explode_list(listed, SEGMENT_SET, "segment_id").select(names)


def segment_line_counts(sets: pa.Array | pa.ChunkedArray) -> list[tuple[str, int]]:
    """``(segment id, lines naming it)`` for the lines' segment sets (dictionary-encoded, as in
    :data:`DUMP_SHARD_SCHEMA`): each chunk's distinct sets counted (a bincount of the indices), split
    once, and the counts summed per segment id (a weighted bincount of the ids' codes); a set naming
    an id twice ("5,5") counts once for it. No per-line Python: ~6 ms for 60,000 distinct sets
    (split_tokens and a group_by took 22 ms)."""
    chunks = sets.chunks if isinstance(sets, pa.ChunkedArray) else [sets]
    tokens, weights, parents, offset = [], [], [], 0
    for chunk in chunks:
        per_set = np.bincount(chunk.indices.to_numpy(zero_copy_only=False), minlength=len(chunk.dictionary))
        split = pc.split_pattern(chunk.dictionary, ",")
        parent = pc.list_parent_indices(split).to_numpy()
        tokens.append(pc.list_flatten(split))
        weights.append(per_set[parent])
        parents.append(parent.astype(np.int64) + offset)
        offset += len(chunk.dictionary)
    if not tokens:
        return []
    encoded = pc.dictionary_encode(pa.concat_arrays(tokens))
    codes, weight = encoded.indices.to_numpy().astype(np.int64), np.concatenate(weights)
    parent = np.concatenate(parents)
    # A (set, id) pair once. A set's ids are neighbours (parent ascending) and few: compared with the
    # ones before them in their set, a shift at a time; a long set (or a repeat, rare) is sorted out.
    longest = int(np.bincount(parent).max()) if len(parent) else 0
    repeat = longest > 16
    for shift in range(1, longest if not repeat else 0):
        if ((parent[shift:] == parent[:-shift]) & (codes[shift:] == codes[:-shift])).any():
            repeat = True
            break
    if repeat:
        _, once = np.unique(parent * len(encoded.dictionary) + codes, return_index=True)
        codes, weight = codes[once], weight[once]
    summed = np.bincount(codes, weights=weight, minlength=len(encoded.dictionary))
    return sorted((s, int(n)) for s, n in zip(encoded.dictionary.to_pylist(), summed) if s and n)


def profile_keys(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, binary: bool = False,
                 memo: OnceEach | None = None) -> tuple[pa.Table, int]:
    """``(key, profile_id)`` rows for one data source, and the number of profile values that could
    not give a key (null, or invalid once normalized). Keys are text (as the platform shows them:
    hex/base64 digests, the export's user IDs) or, with ``binary``, the join keys of
    :func:`join_keys` (PROFILE_SHARD_SCHEMA, via :func:`profile_row_keys`); hashed keys then skip
    the text encoding. ``memo``: see :func:`normalized`."""
    if binary:
        return profile_key_rows(profiles, ds, cfg, memo)
    if ds.id_type == "visitor":
        exploded = explode_list(profiles.select(["profile_id", "visitor_ids"]), "visitor_ids", "key")
        trimmed = pc.utf8_trim_whitespace(exploded["key"])
        ok = is_visitor_id(trimmed)
        keys, ids = pc.filter(trimmed, ok), pc.filter(exploded["profile_id"], ok)
    else:
        values = profiles[KEY_PREFIX + cfg.profiles.column_for(ds.match_on)]
        if ds.declared == "hashed":
            keys, reasons = normalize.normalize_and_hash(values, ds.key_kind, ds.normalization, ds.digest_encoding,
                                                         cfg.profile_region_for(ds), ds.hash_algorithm)
        elif ds.decrypts:
            keys, reasons = normalized(profiles, ds, cfg)
        else:
            keys, reasons = _plain_keys(values, ds)
        ok = pc.is_null(reasons)
        keys, ids = pc.filter(keys, ok), pc.filter(profiles["profile_id"], ok)
    invalid = len(ok) - int(pc.sum(ok).as_py() or 0)
    return pa.table({"key": keys, "profile_id": ids}, schema=PROFILE_KEY_SCHEMA), invalid


def normalization_key(ds: DataSourceConfig, cfg: JobConfig) -> tuple | None:
    """What decides a data source's normalized profile values (:func:`normalized`), or None when
    its keys are not normalized values (visitor IDs, plain declared IDs)."""
    if not (ds.declared == "hashed" or ds.decrypts):
        return None
    return "normalized", cfg.profiles.column_for(ds.match_on), ds.key_kind, ds.normalization, cfg.profile_region_for(ds)


def normalized(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig,
               memo: OnceEach | None = None) -> tuple[pa.Array, pa.Array]:
    """(keys, reasons) of a hashed or decrypting data source's ``match_on`` values normalized under
    its rules. With ``memo`` (one per profile batch), data sources that normalize the same column
    alike (a hashed and an encrypted email source, say) share one computation."""
    key = normalization_key(ds, cfg)
    _, column, *rules = key

    def compute():
        return normalize.normalize_keys(profiles[KEY_PREFIX + column], *rules)

    return compute() if memo is None else memo.get(key, compute)


def _plain_keys(values, ds: DataSourceConfig) -> tuple[pa.Array, pa.Array]:
    """(keys, reasons) of declared profile values that are neither hashed nor decrypted: as they are
    (or folded, ``ignore_case``)."""
    keys = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    keys = fold_case(keys) if ds.ignore_case else keys
    return keys, pa.array(_plain_key_reasons(keys), pa.string())


class RowKeys(NamedTuple):
    """A data source's binary join keys of a profile batch, before they are placed: ``ok`` marks
    the entries that give a key (one entry a row, or, for visitor IDs, a row's list entries),
    ``keys`` holds those keys in order (binary) and ``lists`` is the visitor-ID lists (None otherwise)."""

    ok: pa.BooleanArray
    keys: pa.Array
    lists: pa.ListArray | None


def _row_keys(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, memo: OnceEach | None) -> RowKeys:
    if ds.id_type == "visitor":
        lists = plain_array(profiles["visitor_ids"])
        trimmed = pc.utf8_trim_whitespace(pc.list_flatten(lists))
        ok = is_visitor_id(trimmed)
        return RowKeys(ok, pack_visitor_ids(pc.filter(trimmed, ok)), lists)
    if normalization_key(ds, cfg) is not None:
        keys, reasons = normalized(profiles, ds, cfg, memo)
    else:
        keys, reasons = _plain_keys(profiles[KEY_PREFIX + cfg.profiles.column_for(ds.match_on)], ds)
    ok = pc.is_null(reasons)
    valid = pc.filter(keys, ok)
    return RowKeys(ok, digests.digests(valid, ds.hash_algorithm) if ds.declared == "hashed" else valid.cast(pa.binary()), None)


def profile_row_keys(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig, memo: OnceEach | None = None) -> pa.Array:
    """Each profile row's binary join keys, aligned with the rows: for a visitor source a list per
    row (null entries for IDs that are not 38 digits), otherwise one key per row (null where the
    value gives none). What the key cache stores. ``memo``: see :func:`normalized`."""
    ok, keys, lists = _row_keys(profiles, ds, cfg, memo)
    values = pc.replace_with_mask(pa.nulls(len(ok), pa.binary()), ok, keys)
    if lists is None:
        return values
    lengths = np.bincount(pc.list_parent_indices(lists).to_numpy(), minlength=profiles.num_rows)
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def profile_key_rows(profiles: pa.Table, ds: DataSourceConfig, cfg: JobConfig,
                     memo: OnceEach | None = None) -> tuple[pa.Table, int]:
    """The ``(key, profile_id)`` rows (PROFILE_SHARD_SCHEMA) of a profile batch, in row order, and
    the number of values without a key: :func:`profile_row_keys`' keys with their profile ids,
    without placing them among nulls first (what the run does without the key cache)."""
    ok, keys, lists = _row_keys(profiles, ds, cfg, memo)
    if lists is None:
        ids = pc.filter(profiles["profile_id"], ok)
    else:  # a visitor ID's row: its list's
        ids = pc.take(profiles["profile_id"], pc.filter(pc.list_parent_indices(lists), ok))
    table = pa.table({"key": keys, "profile_id": ids}, schema=PROFILE_SHARD_SCHEMA)
    return table, len(ok) - table.num_rows
