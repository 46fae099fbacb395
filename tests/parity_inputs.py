"""Deterministic generators of tricky emails and phone numbers for the parity tests.

Every value is built from a seeded ``random.Random``: the same call gives the same list on every
machine. All addresses use example/reserved domains or well-known mail domains with made-up local
parts; phone numbers start from libphonenumber's own example numbers with random endings. Nothing
here is real PII.
"""
from __future__ import annotations

import random
from typing import NamedTuple

import phonenumbers

# Whitespace of every kind (str.isspace), and look-alikes that are not whitespace.
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x85", "\u00a0", "\u2003", "\u2009", "\u202f",
              "\u3000", "\u2028", "\x1c", "\x1f"]
NOT_WHITESPACE = ["\u200b", "\ufeff", "\u2060"]

LOCALS = [
    "john", "Jane.Doe", "j.o.h.n", "JANE.SAOIRSE", "JaneSaoirse", "name", "first.last", "o'brien", "x", "a_b-c",
    "user123", "élodie", "ÉLODIE", "İbrahim", "İSTANBUL", "ΟΔΥΣΣΕΥΣ", "Σοφία", "straße", "STRASSE", "Юлия",
    "ЮЛИЯ", "王伟", "😀smile", "\"john doe\"", "\"a.b+c\"", "\"a@b\"", "\"\"", "!#$%&'*/=?^_`{|}~-",
    ".leading", "trailing.", "dot..dot", "ǅemal", "ﬃ", "KELVIN\u212a",
]
DOMAINS = [
    "gmail.com", "GMAIL.COM", "Gmail.Com", "googlemail.com", "GoogleMail.com", "example.com", "Example.ORG",
    "mail.gmail.com", "gmail.co", "gmail.com.", "sub.example.co.uk", "localhost", "bücher.example",
    "BÜCHER.EXAMPLE", "xn--bcher-kva.example", "[192.0.2.1]", "example", "e.x", "ex ample.com",
    "İSTANBUL.example", "gmail.com\u00a0", "ΕΛΛΑΔΑ.example",
]
TAGS = ["", "", "", "+tag", "+Work", "+a.b", "+", "++x", "+news+letter"]


def _case(text: str, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.25:
        return text.upper()
    if roll < 0.45:
        return text.lower()
    if roll < 0.55:
        return text.title()
    return text


def _dots(local: str, rng: random.Random) -> str:
    if not local or rng.random() > 0.3:
        return local
    at = rng.randrange(len(local) + 1)
    return local[:at] + rng.choice([".", "..", "."]) + local[at:]


def _structure(rng: random.Random) -> str:
    """A value that is not one plain address: no '@', two '@', empty sides, digests, blanks."""
    local, domain = rng.choice(LOCALS), rng.choice(DOMAINS)
    return rng.choice([
        local + domain, f"{local}@{local}@{domain}", f"@{domain}", f"{local}@", "@", "", " ", "\t\u00a0",
        "%032x" % rng.getrandbits(128), "%064x" % rng.getrandbits(256), ("%064X" % rng.getrandbits(256)),
        f"{local}@@{domain}", f"{local}@{domain}@", "...@gmail.com", "+only@gmail.com", ".+x@googlemail.com",
    ])


def emails(n: int = 20_000, seed: int = 12) -> list[str]:
    """``n`` email-like strings: gmail dots and +tags, googlemail, case, Unicode (İ, final sigma,
    ß, ligatures, Kelvin sign), whitespace of every kind at the edges and inside, quoted local parts,
    and structural mistakes."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if rng.random() < 0.12:
            value = _structure(rng)
        else:
            local = _dots(_case(rng.choice(LOCALS), rng), rng) + rng.choice(TAGS)
            value = f"{local}@{_case(rng.choice(DOMAINS), rng)}"
        if rng.random() < 0.3:
            value = rng.choice(WHITESPACE + NOT_WHITESPACE[:1]) + value
        if rng.random() < 0.3:
            value += rng.choice(WHITESPACE + NOT_WHITESPACE)
        if rng.random() < 0.04 and value:
            at = rng.randrange(len(value) + 1)
            value = value[:at] + rng.choice(WHITESPACE + NOT_WHITESPACE) + value[at:]
        out.append(value)
    return out


# ------------------------------------------------------------------------------------- phones
REGIONS = ["FR", "GB", "US", "DE", "IT", "ES", "BE", "NL", "CH", "AU", "JP", "BR", "AR", "IN", "CN", "RU", "MX",
           "SG", "IE", "PT", "SE", "AT", "PL", "NZ", "ZA", "MA", "HK", "KR", "IL", "AE", "CA", "LU", "MC", "NU",
           "SH", "GG", "CO", "HU", "BY", "MG", "SM", "KZ"]
SEPARATORS = [" ", " ", " ", "-", ".", "/", "\u00a0", "\u2009", "\u202f", "\t", "", "\u2011", "\u2013", "~"]
DIGIT_ZEROS = [0x0660, 0x06F0, 0x0966, 0xFF10, 0x09E6, 0x0E50]  # Arabic-Indic, Persian, Devanagari, fullwidth, Bengali, Thai
TYPES = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
_FMT = phonenumbers.PhoneNumberFormat


class Written(NamedTuple):
    """What a generated phone value was made from: the number (E.164), the region whose example
    number it started from, and the form it was written in (e164, international, national, 00, +cc,
    +cc trunk, cc digits, (cc), tel:)."""

    e164: str
    region: str
    form: str


def _example(region: str, rng: random.Random) -> phonenumbers.PhoneNumber | None:
    number = phonenumbers.example_number_for_type(region, rng.choice(TYPES)) or phonenumbers.example_number(region)
    if number is None:
        return None
    nsn = phonenumbers.national_significant_number(number)
    keep = max(1, len(nsn) - rng.randint(1, 4))
    nsn = nsn[:keep] + "".join(rng.choice("0123456789") for _ in range(len(nsn) - keep))
    try:
        return phonenumbers.parse("+%d%s" % (number.country_code, nsn), None)
    except phonenumbers.NumberParseException:
        return None


def _spaced(digits: str, rng: random.Random) -> str:
    """Digits grouped at random, joined by one separator kind (sometimes mixed)."""
    sep = rng.choice(SEPARATORS)
    out, i = [], 0
    while i < len(digits):
        size = rng.randint(1, 4)
        out.append(digits[i:i + size])
        i += size
    if rng.random() < 0.1:
        return "".join(part + rng.choice(SEPARATORS) for part in out).rstrip()
    return sep.join(out)


def _written(number: phonenumbers.PhoneNumber, region: str, rng: random.Random) -> tuple[str, str]:
    """(form, text): the number written one of the ways people write numbers; the form names it."""
    e164 = phonenumbers.format_number(number, _FMT.E164)
    cc = str(number.country_code)
    nsn = phonenumbers.national_significant_number(number)
    national = phonenumbers.format_number(number, _FMT.NATIONAL)
    prefix = phonenumbers.PhoneMetadata.metadata_for_region(region).national_prefix or "0"
    return rng.choice([
        ("e164", e164), ("e164", e164), ("international", phonenumbers.format_number(number, _FMT.INTERNATIONAL)),
        ("national", national), ("national", national),
        ("00", "00" + cc + " " + _spaced(nsn, rng)), ("+cc", "+" + cc + " " + _spaced(nsn, rng)),
        ("+cc trunk", f"+{cc} ({prefix}){_spaced(nsn, rng)}"), ("+cc trunk", f"+{cc}{prefix}{nsn}"),
        ("+cc trunk", f"+{cc} {prefix}{_spaced(nsn, rng)}"),
        ("national", "".join(c for c in national if c.isdigit())), ("cc digits", cc + nsn),
        ("(cc)", f"({cc}) {_spaced(nsn, rng)}"), ("tel:", phonenumbers.format_number(number, _FMT.RFC3966)),
    ])


def _random_digits(rng: random.Random) -> str:
    digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(7, 16)))
    return rng.choice(["", "", "+", "00", "+0", "0", "+00", "000"]) + digits


def _to_script(text: str, rng: random.Random) -> str:
    zero = rng.choice(DIGIT_ZEROS)
    return "".join(chr(zero + int(c)) if c.isdigit() and rng.random() < 0.9 else c for c in text)


def phones(n: int = 20_000, seed: int = 12) -> list[str]:
    """``n`` phone-like strings: E.164, international and national formats of many countries
    (libphonenumber's example numbers, random endings), 00 and + prefixes, trunk (0), separators of
    every kind, 7-16 digit strings, non-ASCII digits, letters and extensions."""
    return [value for value, _ in written_phones(n, seed)]


def written_phones(n: int = 20_000, seed: int = 12) -> list[tuple[str, Written | None]]:
    """``phones(n, seed)``, each with what was written when it was made from a number (None for
    random digits and junk): the number's E.164, its region, and the form it was written in."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        roll = rng.random()
        written = None
        if roll < 0.72:
            region = rng.choice(REGIONS)
            number = _example(region, rng)
            if number is None:
                continue
            form, value = _written(number, region, rng)
            written = Written(phonenumbers.format_number(number, _FMT.E164), region, form)
        elif roll < 0.92:
            value = _spaced(_random_digits(rng), rng) if rng.random() < 0.5 else _random_digits(rng)
        else:
            value = rng.choice(["", " ", "n/a", "+33 6 12 34 56 78 ext. 12", "+1-800-FLOWERS", "tel:+33612345678",
                                "+33 6 12 34 56 78;", "++33612345678", "33+612345678", "+", "00", "()",
                                "+44 7700 900123 x5", "＋３３６１２３４５６７８", "+(33) 6 12 34 56 78", "0033 (0)6 12 34 56 78"])
        if rng.random() < 0.05:
            value = _to_script(value, rng)
        if rng.random() < 0.15:
            value = rng.choice(WHITESPACE) + value + rng.choice(WHITESPACE + [""])
        out.append((value, written))
    return out
