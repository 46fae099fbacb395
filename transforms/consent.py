"""Consent is explicit: the opt-out column read as *opted out*, *consented* or *unknown*.

An opt-out value is one of (case-insensitive, surrounding whitespace ignored):

==========  =====================================================================================
opted out   ``true t yes y 1 on``; a boolean ``true``; the integer ``1``; the number ``1.0``
consented   ``false f no n 0 off``; a boolean ``false``; the integer ``0``; the number ``0.0``
unknown     null: an empty CSV cell (or one of Arrow's null spellings: ``NA``, ``NULL``, ``NaN``,
            ``N/A``...), a Parquet null, a JSONL record without the key or with ``null``, a NaN,
            an empty or blank string
==========  =====================================================================================

Numbers are accepted only from typed columns (Parquet, JSONL): a float column is what a boolean
column with gaps becomes in pandas. In text (CSV, string columns) only the words above count: the
text ``1.0`` is refused like ``X``, ``opted_out`` or ``2``. Any other value fails the run; the error
names the file, line (or Parquet row) and column, never the value.

*Unknown* is never consent: the export never sends such a profile (``consent_unknown``) and removes
it from the platform if an earlier export sent it. ``profiles.opt_out_missing: consented`` declares
that unknown means consented (for sources that record opt-outs only, or have no opt-out column:
then ``profiles.opt_out`` may be left out). It is never the default.

A consent (opt-in) column, where true means consented, is ``profiles.opt_in`` instead: the same
spellings, read the other way round (unknown stays unknown). Given as ``profiles.opt_out``, a column
whose name reads as consent (:func:`reads_as_opt_in`: ``marketing_consent``, ``email_opt_in``; an
opt-out turned round: ``not_unsubscribed``) is refused: every consenting profile would be withheld and
every refusing one exported.
"""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

OPTED_OUT_WORDS = ("true", "t", "yes", "y", "1", "on")
CONSENTED_WORDS = ("false", "f", "no", "n", "0", "off")
SPELLINGS = f"{'/'.join(OPTED_OUT_WORDS)} or {'/'.join(CONSENTED_WORDS)}; empty means unknown"


class BadOptOut(ValueError):
    """An opt-out value that is none of the accepted spellings: ``row`` is its index in the array
    (``None`` when the column's type is wrong as a whole)."""

    def __init__(self, row: int | None, problem: str):
        super().__init__(problem)
        self.row, self.problem = row, problem


def _first_bad(bad: pa.Array) -> int | None:
    mask = np.asarray(pc.fill_null(bad, False).to_numpy(zero_copy_only=False), dtype=bool)
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None


def _from_text(values: pa.Array) -> pa.Array:
    text = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    blank = pc.equal(pc.utf8_length(text), 0)
    text = pc.if_else(blank, pa.scalar(None, pa.string()), text)
    yes = pc.is_in(text, value_set=pa.array(OPTED_OUT_WORDS))
    no = pc.is_in(text, value_set=pa.array(CONSENTED_WORDS))
    row = _first_bad(pc.and_(pc.is_valid(text), pc.invert(pc.or_(yes, no))))
    if row is not None:
        raise BadOptOut(row, f"not an opt-out value ({SPELLINGS})")
    return pc.if_else(pc.is_null(text), pa.scalar(None, pa.bool_()), yes)


def _from_numbers(values: pa.Array) -> pa.Array:
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
    one, zero = pc.equal(values, 1), pc.equal(values, 0)
    row = _first_bad(pc.and_(pc.is_valid(values), pc.invert(pc.or_(one, zero))))
    if row is not None:
        raise BadOptOut(row, "not an opt-out value (a number must be 0 or 1)")
    return one


def parse_opt_out(values) -> pa.Array:
    """The opt-out column as a boolean array: true = opted out, false = consented, null = unknown.
    Raises :class:`BadOptOut` at the first value that is none of the accepted spellings."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    t = values.type
    if pa.types.is_boolean(t):
        return values
    if pa.types.is_null(t):
        return pa.nulls(len(values), pa.bool_())
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return _from_numbers(values)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _from_text(values.cast(pa.string()))
    raise BadOptOut(None, f"the column holds {t}, not booleans, 0/1 or text ({SPELLINGS})")


def consent_of(opt_out: pa.Array, missing: str) -> pa.Array:
    """``opt_out`` with unknown (null) read as the config says: ``unknown`` keeps it null,
    ``consented`` makes it false."""
    return pc.fill_null(opt_out, False) if missing == "consented" else opt_out


# Words of a column name that say it records consent (true: consented) ...
_OPT_IN_WORDS = {"consent", "consents", "consented", "subscribe", "subscribes", "subscribed", "subscriber",
                 "subscription", "allow", "allowed", "allows", "permission", "permissions", "permitted", "contactable",
                 "marketable", "agree", "agrees", "agreed", "accept", "accepts", "accepted"}
# ... and words that turn it round (a withdrawn consent, an unsubscription: true means opted out): whole
# words, and the starts of words ('withdr': withdrew, withdrawal; 'cancel': cancelled, canceled; 'deni',
# 'deny': denied, denial, denies), since a legitimate opt-out column refused here had no other way in.
_NEGATIONS = {"out", "optout", "no", "not", "non", "never", "without", "dnc", "dont", "ended", "stopped"}
_NEGATION_STARTS = ("withdr", "revok", "revoc", "unsub", "block", "suppress", "reject", "declin", "refus", "deni",
                    "deny", "remov", "exclu", "cancel", "expir", "lapse", "retract", "rescind", "object", "oppos",
                    "disallow")


# A word that turns an opt-out round again ('not_unsubscribed', 'no_opt_out', 'consent_not_withdrawn'):
# consent. Such a column was refused as profiles.opt_in, and read as opt-outs, as told, exported the refusers.
_NOT = {"not", "no", "never", "non"}


def _words(column: str) -> tuple[list[str], str, bool, bool]:
    """A column name's words, them joined, whether one says consent and whether one turns it round."""
    words = [w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+", column)]
    joined = "".join(words)
    consent = "optin" in joined or "optedin" in joined or bool(_OPT_IN_WORDS.intersection(words))
    negated = bool(_NEGATIONS.intersection(words) or any(w.startswith(_NEGATION_STARTS) for w in words))
    return words, joined, consent, negated


def _turned_round_twice(words: list[str], joined: str) -> bool:
    """A negation of an opt-out or of a withdrawn consent ('not_unsubscribed', 'is_not_opted_out',
    'consent_not_withdrawn'): it records consent. ``do_not_email`` is one opt-out, not two negations."""
    return ("donot" not in joined and bool(_NOT.intersection(words))
            and (any(w in joined for w in ("optout", "optedout", "unsub"))
                 or any(w.startswith(_NEGATION_STARTS) for w in words)))


def reads_as_opt_in(column: str) -> bool:
    """Whether a column's name says it records consent (``marketing_consent``, ``emailOptIn``,
    ``is_subscribed``, ``accepts_marketing``), and nothing in it turns that round (``consent_withdrawn``,
    ``withdrew_consent``, ``no_consent``, ``unsubscribed``, ``cancelled_subscription``, ``opt_out``)."""
    words, joined, consent, negated = _words(column)
    return _turned_round_twice(words, joined) or (
        consent and not negated and not any(w in joined for w in ("optout", "unsub", "donot")))


def reads_as_opt_out(column: str) -> bool:
    """Whether a column's name says it records opt-outs (``email_opt_out``, ``unsubscribed``,
    ``do_not_email``, ``dnc``, ``consent_withdrawn``, ``no_consent``): given as ``profiles.opt_in``, read
    the other way round, every opted-out profile would be exported."""
    words, joined, consent, negated = _words(column)
    return not _turned_round_twice(words, joined) and (
        any(w in joined for w in ("optout", "optedout", "unsub", "donot")) or "dnc" in words or (consent and negated))
