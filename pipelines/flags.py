"""The flags of a command line as the operator wrote them, each occurrence apart (argparse keeps only
the value it ends with): what :func:`check_given` and :func:`check_stray` refuse before a job starts.

argparse reads ``--state=`` as a state folder named '' and a flag given twice as its last value;
the jobs read an empty path as the flag left out; Beam drops a word that is no flag's value. All are
refused here, naming the flag (never its value: a value may be a path or a name an operator would
rather not see in a log), for the job's flags and for Beam's (:func:`pipelines.options.beam_parser`).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
from typing import Iterator, NamedTuple

from transforms.errors import ConfigError

NEGATIVE = re.compile(r"^-\d+$|^-\d*\.\d+$")  # argparse's: such a token is a value, not a flag


class Given(NamedTuple):
    """One occurrence of a flag: its action, its option string spelled in full, the text of its value
    (None: a flag that takes none, ``--force``, or a ``nargs='?'`` one without it), and the positions in
    the command line of its tokens (the flag's, and its value's when apart)."""

    action: argparse.Action
    flag: str
    text: str | None
    tokens: range


def given(parser: argparse.ArgumentParser, argv: list[str]) -> Iterator[Given]:
    """Each occurrence in ``argv`` of one of ``parser``'s flags, found as argparse finds it (``--flag=V``
    or ``--flag V``; an unambiguous prefix where the parser allows abbreviations). Other tokens (another
    parser's flags, their values) are passed over; ``--`` ends the flags."""
    options = parser._option_string_actions  # noqa: SLF001 - argparse's own table of the flags' spellings
    i = 0
    while i < len(argv):
        token, at = argv[i], i
        i += 1
        if token == "--":
            return
        if not token.startswith("--"):
            continue
        name, eq, text = token.partition("=")
        flag = name if name in options else _abbreviated(parser, options, name)
        if flag is None:
            continue
        action = options[flag]
        if action.nargs == 0:
            yield Given(action, flag, None, range(at, i))
            continue
        if not eq:
            following = argv[i] if i < len(argv) else None
            taken = following is not None and (not following.startswith("-") or NEGATIVE.match(following))
            text, i = (following, i + 1) if taken else (None, i)
        yield Given(action, flag, text, range(at, i))


def _abbreviated(parser: argparse.ArgumentParser, options: dict, name: str) -> str | None:
    """The flag ``name`` abbreviates, when the parser allows it and only one action starts so."""
    if not parser.allow_abbrev:
        return None
    matches = [flag for flag in options if flag.startswith(name) and flag.startswith("--")]
    return matches[0] if len({id(options[flag]) for flag in matches}) == 1 else None


# Actions that keep one value: given twice, argparse keeps the last. Others gather theirs (append:
# --existing, Beam's --labels; Beam's own list and dict actions: --experiments) and may repeat.
ONE_VALUE = (argparse._StoreAction, argparse._StoreConstAction, argparse.BooleanOptionalAction)


def check_given(parser: argparse.ArgumentParser, argv: list[str], empty: bool = True) -> None:
    """``argv``'s flags of ``parser`` as given, refused (ConfigError, naming the flag): with ``empty``, one
    with an empty value (a template variable rendered empty, ``--state={{ var }}``, made an export run
    without its state, exit 0, no leaver removed) or with a space or line break at an end (``--output
    'OUT '`` published into a folder 'OUT ', exit 0: a Flex Template parameter, a pasted Variable); a flag that keeps one value given twice with two
    (under one spelling or two: ``--run-date``, ``--run_date``; ``--use_public_ips``,
    ``--no_use_public_ips``): the last was taken, an export of ``--audience B --audience A`` sent A."""
    first: dict[str, tuple[Given, object]] = {}
    for occurrence in given(parser, argv):
        if empty and occurrence.text is not None and not occurrence.text.strip():
            raise ConfigError(f"{occurrence.flag}: an empty value; give it one, or leave the flag out")
        if empty and occurrence.text is not None and occurrence.text != occurrence.text.strip():
            raise ConfigError(f"{occurrence.flag}: a space or line break at the start or end of its value; give it without")
        if not isinstance(occurrence.action, ONE_VALUE):
            continue
        earlier, value = first.setdefault(occurrence.action.dest, (occurrence, _value(occurrence)))
        if value != _value(occurrence):
            named = (f"{earlier.flag} given twice" if earlier.flag == occurrence.flag
                     else f"{earlier.flag} and {occurrence.flag} (one flag) given")
            raise ConfigError(f"{named} with two values: give it once")


def _value(occurrence: Given) -> object:
    """The value a flag's occurrence sets, as its parser reads it (``2026-11-22`` and ``20261122`` are one
    date); its text where its type refuses it (argparse has said so already, or Beam's parse will)."""
    action, text = occurrence.action, occurrence.text
    if text is None:
        return action.const
    try:
        return action.type(text) if callable(action.type) else text
    except Exception:  # noqa: BLE001 - compared as written
        return text


def check_stray(argv: list[str], rest: list[str], parser: argparse.ArgumentParser) -> None:
    """What the job's parser left (``rest``) must be Beam's flags and their values: a word neither reads
    is refused (ConfigError), named by the flag before it, never shown. Beam dropped it without a word:
    'export --audience Summer sale' sent audience 'Summer'; '--output OUT 2026-11-22' (no --run-date)
    ran for today; what follows '--' was dropped (a misspelled runner ran on the local one). A flag
    nobody knows is left to the launcher's own line (:func:`pipelines.options.unknown_options`). The
    word is found where no flag reads it (the job's ``parser``'s, or Beam's): its last occurrence on the
    line named '--run-date' for '--output OUT 2026-11-22 --run-date 2026-11-22'."""
    from pipelines.options import beam_parser

    beam = beam_parser()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # its usage, 136 lines
            left = beam.parse_known_args(rest)[1]
    except SystemExit:  # a value Beam cannot parse: the launcher says so in one line
        return
    before_end = left[:left.index("--")] if "--" in left else left
    if left in ([], ["--"]) or any(word.startswith("-") for word in before_end):  # ['--']: nothing follows it
        return
    if left[0] == "--":
        raise ConfigError("'--': what follows it is read by neither the job nor Beam; leave it out")
    read = {i for p in (parser, beam) for occurrence in given(p, argv) for i in occurrence.tokens}
    at = next((i for i, word in enumerate(argv) if word == left[0] and i not in read), argv.index(left[0]))
    flag = next((word.partition("=")[0] for word in reversed(argv[:at]) if word.startswith("--")), None)
    raise ConfigError(f"an argument{f' after {flag}' if flag else ''} is no flag and no flag's value (a value "
                      "with a space, unquoted? a flag's name left out?)")


def parse_job_args(parser: argparse.ArgumentParser, argv) -> tuple[argparse.Namespace, list[str]]:
    """``parser.parse_known_args(argv)`` (the rest: Beam's flags), the job's flags checked as given and
    the rest checked for words nobody reads."""
    argv = sys.argv[1:] if argv is None else list(argv)
    known, rest = parser.parse_known_args(argv)
    check_given(parser, argv)
    check_stray(argv, rest, parser)
    return known, rest[:-1] if rest[-1:] == ["--"] else rest  # a '--' nothing follows (Beam would warn of it)
