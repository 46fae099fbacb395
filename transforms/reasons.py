"""Rejection reasons, in one place: every reason a dump line (or a profile value) gives no
membership, the report category it counts in, and what it means.

Adding a rejection reason touches this module (the ``Reason`` member, its category and its
description), the code that emits it, and the README's table (``tests/test_readme.py`` compares
them); the report, the summary and ``report.html`` read them from here. A reason is a ``StrEnum``:
it *is* its code string, so it goes into Arrow columns and JSON as is. Free of Beam, so the pure
functions (parsing, keys, decryption) and the benchmark's baseline import it without the SDK;
:mod:`transforms.outcomes` re-exports it beside the typed counts.
"""
from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    """Where a received dump line ends: each line counts in exactly one of these."""

    FORMAT_ERRORS = "format_errors"
    INVALID_IDS = "invalid_ids"
    REMOVALS_ONLY = "removals_only"
    UNMATCHED = "unmatched"
    RECONCILED = "reconciled"
    FILE_AUDIENCE = "file_audience"


OUTCOMES: tuple[Category, ...] = tuple(Category)


class Reason(StrEnum):
    """Why a dump line (or a profile value) gives no membership. Values are the codes written in
    ``rejected/`` and ``report.json``."""

    # Reading a dump line (format errors), and valid lines with nothing to add.
    EMPTY_LINE = "empty_line"
    NOT_UTF8 = "not_utf8"
    MALFORMED_LINE = "malformed_line"
    TRAIT_NOT_IMPORTABLE = "trait_not_importable"
    INVALID_SEGMENT_ID = "invalid_segment_id"
    NO_SEGMENTS = "no_segments"
    REMOVALS_ONLY = "removals_only"
    # The line's ID.
    INVALID_VISITOR_ID = "invalid_visitor_id"
    INVALID_DECLARED_ID = "invalid_declared_id"
    INVALID_HASH = "invalid_hash"
    MISSING_VALUE = "missing_value"
    INVALID_EMAIL = "invalid_email"
    INVALID_PHONE = "invalid_phone"
    DECRYPT_FAILED = "decrypt_failed"
    NOT_STANDARD_BASE64 = "not_standard_base64"
    UNKNOWN_KEY = "unknown_key"
    EXPIRED_KEY = "expired_key"
    KEY_NOT_ACTIVE = "key_not_active"
    INVALID_PLAINTEXT = "invalid_plaintext"
    # The join.
    NO_MATCHING_PROFILE = "no_matching_profile"

    @property
    def category(self) -> Category:
        return _CATEGORY[self]

    @property
    def description(self) -> str:
        return _DESCRIPTION[self]


_F, _I = Category.FORMAT_ERRORS, Category.INVALID_IDS
_CATEGORY: dict[Reason, Category] = {
    Reason.EMPTY_LINE: _F,
    Reason.NOT_UTF8: _F,
    Reason.MALFORMED_LINE: _F,
    Reason.TRAIT_NOT_IMPORTABLE: _F,
    Reason.INVALID_SEGMENT_ID: _F,
    Reason.NO_SEGMENTS: _F,
    Reason.REMOVALS_ONLY: Category.REMOVALS_ONLY,
    Reason.INVALID_VISITOR_ID: _I,
    Reason.INVALID_DECLARED_ID: _I,
    Reason.INVALID_HASH: _I,
    Reason.MISSING_VALUE: _I,
    Reason.INVALID_EMAIL: _I,
    Reason.INVALID_PHONE: _I,
    Reason.DECRYPT_FAILED: _I,
    Reason.NOT_STANDARD_BASE64: _I,
    Reason.UNKNOWN_KEY: _I,
    Reason.EXPIRED_KEY: _I,
    Reason.KEY_NOT_ACTIVE: _I,
    Reason.INVALID_PLAINTEXT: _I,
    Reason.NO_MATCHING_PROFILE: Category.UNMATCHED,
}
_DESCRIPTION: dict[Reason, str] = {
    Reason.EMPTY_LINE: "the line is empty",
    Reason.NOT_UTF8: "the line is not valid UTF-8",
    Reason.MALFORMED_LINE: "the line does not have the configured columns (separator?)",
    Reason.TRAIT_NOT_IMPORTABLE: "a key-value trait, not a segment: traits are not shared",
    Reason.INVALID_SEGMENT_ID: "a segment id that is not a number of at most 19 digits",
    Reason.NO_SEGMENTS: "no segment to add or remove",
    Reason.REMOVALS_ONLY: "the line only removes segments (applied by nightly incremental syncs)",
    Reason.INVALID_VISITOR_ID: "not a 38-digit visitor ID",
    Reason.INVALID_DECLARED_ID: "an empty declared ID, or one containing ':'",
    Reason.INVALID_HASH: "not a digest of the configured algorithm and encoding (SHA-256: 64 hex or 44 base64 characters)",
    Reason.MISSING_VALUE: "the ID is empty",
    Reason.INVALID_EMAIL: "not an email address once normalized",
    Reason.INVALID_PHONE: "not a phone number once normalized",
    Reason.DECRYPT_FAILED: "cannot be decrypted (base64, length, padding or GCM tag)",
    Reason.NOT_STANDARD_BASE64: "url-safe base64 ('-', '_') that decrypts to an address once read as standard base64 (fails the run)",
    Reason.UNKNOWN_KEY: "encrypted under a key id that is not in the key ring",
    Reason.EXPIRED_KEY: "encrypted under a key that had expired on the run date",
    Reason.KEY_NOT_ACTIVE: "encrypted under a key not yet active on the run date",
    Reason.INVALID_PLAINTEXT: "decrypted, but not text, holding a control or invisible format character, or not an address of the data source's channel",
    Reason.NO_MATCHING_PROFILE: "a valid ID that no profile has",
}
assert set(_CATEGORY) == set(Reason) == set(_DESCRIPTION), "every reason needs a category and a description"

# Rejections that a wrong key or IV produces (the decrypt failure ratio counts them): a wrong IV keeps
# CBC padding valid and garbles the plaintext, which then is no address of the channel.
DECRYPT_FAILURES = (Reason.DECRYPT_FAILED, Reason.NOT_STANDARD_BASE64, Reason.UNKNOWN_KEY, Reason.EXPIRED_KEY,
                    Reason.KEY_NOT_ACTIVE, Reason.INVALID_PLAINTEXT)


def not_stray(bad: int, total: int) -> bool:
    """Whether ``bad`` lines or entries among ``total`` are a cause (another encoding, another
    separator), not stray bad rows: at least 3, and 1 % of them. One rule for every such judgement
    (a dump's start, a data source's dumps, an extract's visitor-ID entries)."""
    return bad >= 3 and bad * 100 >= total
