"""Whether the text after ``env:`` / ``file:`` is a key pasted where its reference belongs.

Operators paste keys in more forms than the strict readers of :mod:`transforms.secrets` accept: base64
without its padding or in the url-safe alphabet, hex with colons, spaces, dashes or a ``0x`` prefix, a
key cut short. Any of these must be refused without being repeated. The text is key material when:

* it is 32 or more hex digits once separators (``:``, spaces, ``-``, ``,``) and ``0x`` are dropped;
* or it is 20+ characters of the base64 alphabet (spaces aside) that read as random rather than as
  words, and either decode to 16, 24 or 32 bytes as base64 (standard or url-safe, padding restored)
  or have no path structure (a leading ``/``, ``//``; a ``.`` is not base64).

"Reads as random" keeps ordinary names working: an environment variable in capitals
(``AUDIENCE_SYNC_KEY_CAMP`` is also url-safe base64 of 16 bytes), a path in lower case, or a
mixed-case name made of words (``AudienceSyncKeyForWeb1``). A random base64 key has both cases and
few word-like runs; measured on random keys, the words test lets through about 1 in 6,000 base64
AES-256 keys and 1 in 300 unpadded 16-byte ones (hex is always caught).
"""
from __future__ import annotations

import base64
import binascii
import re

__all__ = ["looks_like_key_material"]

_KEY_BYTES = (16, 24, 32)
_MIN_LENGTH = 20  # shorter text is not a key (16 bytes are 22 base64 characters)
_HEX_SEPARATORS = re.compile(r"[\s:,-]+")
_HEX = re.compile(r"[0-9A-Fa-f]+")
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/_=-]+")
_LETTER_RUNS = re.compile(r"[A-Z][a-z]+|[A-Z]+(?![a-z])|[a-z]+")
_RUNS = re.compile(r"[A-Z][a-z]+|[A-Z]+(?![a-z])|[a-z]+|[0-9]+")
_VOWELS = frozenset("aeiouyAEIOUY")


def looks_like_key_material(text: str) -> bool:
    """Whether ``text`` reads as an AES key or IV itself (what an operator pastes after ``env:`` or
    ``file:`` by mistake) rather than as a variable name or a path."""
    text = text.strip()
    if len(text) < _MIN_LENGTH:
        return False
    digits = _hex_digits(text)
    if digits is not None and len(digits) >= 2 * min(_KEY_BYTES):
        return True
    compact = "".join(text.split())
    if not _BASE64_TEXT.fullmatch(compact) or not _reads_as_random(compact):
        return False
    # A base64 key may hold "//" or start with "/": what decodes to a key length is one whatever it
    # looks like; random text that does not (a key cut short) is one unless it has a path's structure.
    return _decodes_to_key_length(compact) or not _path_like(compact)


def _decodes_to_key_length(compact: str) -> bool:
    """Whether ``compact`` is base64 (standard or url-safe, padded or not) of 16, 24 or 32 bytes."""
    compact = compact.rstrip("=")
    for altchars in (b"+/", b"-_"):
        try:
            value = base64.b64decode(compact + "=" * (-len(compact) % 4), altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(value) in _KEY_BYTES:
            return True
    return False


def _hex_digits(text: str) -> str | None:
    """The hex digits of ``text`` with separators (``:``, spaces, ``-``, ``,``) and ``0x`` prefixes
    dropped, or None when something else is left."""
    parts = [p[2:] if p[:2] in ("0x", "0X") else p for p in _HEX_SEPARATORS.split(text) if p]
    digits = "".join(parts)
    return digits if digits and _HEX.fullmatch(digits) else None


def _path_like(text: str) -> bool:
    """A folder structure: a leading ``/`` or an empty segment (an extension's ``.`` is not base64)."""
    return text.startswith("/") or "//" in text


def _reads_as_random(text: str) -> bool:
    """Both letter cases, and not made of words: random base64 has short runs of one kind of character
    and few of them pronounceable; names are runs of words (``Audience``, ``SYNC``, ``2024``)."""
    if not (any(c.isupper() for c in text) and any(c.islower() for c in text)):
        return False
    letters = sum(c.isalpha() for c in text)
    in_words = sum(len(run) for run in _LETTER_RUNS.findall(text) if len(run) >= 3 and _VOWELS & set(run))
    runs = _RUNS.findall(text)
    mean_run = sum(map(len, runs)) / len(runs)
    return not (in_words >= 0.8 * letters and mean_run >= 2.5)
