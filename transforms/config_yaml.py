"""The config's YAML, read strictly: what PyYAML would read silently in a way the writer did not
mean is an error naming its line (never its value: a key may have been pasted anywhere), and what
it reads as another type than a field's, which pydantic would convert, an error naming the field
(:class:`StrictModel`, the base of :mod:`transforms.config`'s models)."""
from __future__ import annotations

import codecs
import re
from typing import get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, field_validator

from transforms.errors import ConfigError

# YAML 1.1 integers that YAML 1.2 and readers take for decimal: a leading zero is octal (``0123``:
# 83), ``1:40`` is base 60 (100). ``0x``/``0b`` say what they are, and ``09`` is a string anyway.
_OTHER_BASE = re.compile(r"[-+]?0[0-7]+|[-+]?[1-9][0-9]*(?::[0-5]?[0-9])+")


_MERGE = "tag:yaml.org,2002:merge"
# Keys whose value is a section (its fields, or a list of entries): left empty over its fields commented
# out, it is none of that section, as the line left out is (their default). Left empty with no field
# commented out below it (a template's placeholder rendered empty) it is refused as any key without a
# value: ``suppression:`` so read as none exported the addresses of every list it was to hold.
SECTIONS = frozenset({"encryption", "export", "suppression"})
_COMMENTED_ENTRY = re.compile(r"#\s*-\s")  # '# - {path: ...}': a list's entry commented out, at its key's column


class _Refused(yaml.YAMLError):
    def __init__(self, message: str, line: int):
        super().__init__(message)
        self.message, self.line = message, line


class _StrictLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently:
    a data source would read another folder's dumps), a key left without a value (null, which is not
    the field's default: ``opt_out:`` from a template rendered empty was no opt-out column, and under
    ``opt_out_missing: consented`` the opted-out were exported), and integers in another base than
    they read. Keys beside a ``<<`` merge may override it; ``null`` or ``~`` written is none, as is a
    section (:data:`SECTIONS`) left empty."""

    def construct_mapping(self, node, deep=False):
        self._check_merges(node)
        seen = set()
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            if value_node.tag == "tag:yaml.org,2002:null" and value_node.value == "" \
                    and not (key in SECTIONS and not node.flow_style and self._commented_out(key_node)):
                if node.flow_style and value_node.start_mark.pointer == key_node.end_mark.pointer:  # {date}: no ':'
                    raise _Refused(_quote_it("{"), node.start_mark.line + 1)
                raise _Refused(f"'{key}' has no value (YAML reads it as null, not as the field's default): write "
                               "the value, remove the line for the default, or write null for none",
                               key_node.start_mark.line + 1)
            if isinstance(key, (str, int, float, bool)) or key is None:
                if key in seen:
                    raise _Refused(f"duplicate key '{key}' (YAML keeps only the last one)", key_node.start_mark.line + 1)
                seen.add(key)
        return super().construct_mapping(node, deep)

    def _commented_out(self, key_node) -> bool:
        """Whether the first line after ``key_node``'s that is not blank is a comment below it: deeper
        than the key, or an entry of a list at the key's column (its fields or entries commented out)."""
        mark = key_node.start_mark
        for line in (mark.buffer or self.buffer or "").rstrip("\0").splitlines()[mark.line + 1:]:
            text = line.lstrip()
            if text:
                indent = len(line) - len(text)
                return text.startswith("#") and (indent > mark.column
                                                 or indent == mark.column and bool(_COMMENTED_ENTRY.match(text)))
        return False

    @staticmethod
    def _check_merges(node):
        """Mappings merged into ``node`` (``<<: [*a, *b]``, or two ``<<`` keys) that set one key two ways,
        not set in ``node`` itself: YAML takes the first one's, where a reader takes the later one's."""
        own = {k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE}
        merged = {}  # key: its value node's form in the first mapping setting it
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE:
                continue
            for sub in value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]:
                if not isinstance(sub, yaml.MappingNode):
                    continue  # PyYAML's own error
                pairs = {k.value: v for k, v in sub.value if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE}
                for key, value in pairs.items():
                    form = (value.tag, value.value) if isinstance(value, yaml.ScalarNode) else id(value)
                    if key not in own and merged.setdefault(key, form) != form:
                        raise _Refused(f"'{key}' is set by two of the mappings merged here (YAML keeps the first "
                                       "one's): set it beside the '<<'", key_node.start_mark.line + 1)

    def construct_yaml_int(self, node):
        if _OTHER_BASE.fullmatch(self.construct_scalar(node).replace("_", "")):
            raise _Refused("a number with a leading zero is octal in YAML (010 is 8) and one with ':' is base 60 "
                           "(1:30 is 90): write it without the zero, or quote it", node.start_mark.line + 1)
        return super().construct_yaml_int(node)


_StrictLoader.add_constructor("tag:yaml.org,2002:int", _StrictLoader.construct_yaml_int)


def config_text(raw: bytes, source: str) -> str:
    """A config file's text: UTF-8 (with or without a byte-order mark), or UTF-16 with its mark
    (Notepad's "Unicode"), as key files are read. Else one line naming the first line not UTF-8."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and not raw.startswith(codecs.BOM_UTF32_LE):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}: line {line}: not UTF-8 text (an accent saved as Windows-1252?): save the "
                          "config as UTF-8") from None


# What a value starting so is to YAML (``segments: *.sync*`` an alias, ``{date}/*`` a mapping): text must be quoted.
_INDICATORS = {"*": "an alias (*name)", "&": "an anchor (&name)", "{": "a mapping ({a: 1})", "[": "a list ([a, b])",
               "!": "a tag (!name)", "%": "a directive", "@": "reserved", "`": "reserved", "|": "block text",
               ">": "block text"}
_VALUE_START = re.compile(r"\s*(?:-\s+)?(?:[\w.-]+\s*:\s+)?(\S)")


def _quote_it(indicator: str) -> str:
    return f"a value starting with '{indicator}' is {_INDICATORS[indicator]} to YAML: if it is text, quote it"


def _syntax_on(text: str, line: int) -> str | None:
    """The indicator a value on ``line`` (0-based) of ``text`` starts with, if it starts with one."""
    lines = text.splitlines()
    found = _VALUE_START.match(lines[line]) if 0 <= line < len(lines) else None
    return found.group(1) if found and found.group(1) in _INDICATORS else None


# What PyYAML's parse errors mean, said without the text around them (a key may have been pasted anywhere).
_PROBLEMS = (("found character '\\t' that cannot start any token", "a tab: YAML indents and separates with spaces only"),
             ("expected a single document in the stream", "a second YAML document ('---'): a config is one"))


def read_yaml(text: str, source: str):
    """The document in ``text`` (``source`` names it in errors: one line, with the line number)."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader
    except _Refused as exc:
        raise ConfigError(f"{source}: line {exc.line}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        said = f"{getattr(exc, 'context', None)} {getattr(exc, 'problem', None)}"
        cause = next((meaning for words, meaning in _PROBLEMS if words in said), None)
        if mark is not None and cause:
            raise ConfigError(f"{source}: line {mark.line + 1}: {cause}") from None
        for near in (mark, getattr(exc, "context_mark", None)):
            if near is not None and (indicator := _syntax_on(text, near.line)):
                raise ConfigError(f"{source}: line {near.line + 1}: {_quote_it(indicator)}") from None
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} not valid YAML") from None


def yaml_lines(text: str):
    """A function giving the line where a field of the document in ``text`` (read by :func:`read_yaml`) is
    written, from its pydantic location (``('data_sources', 3, 'dpid')``), or None: a merged field's
    line is where its entry writes it, a missing one's its entry's first line."""
    root = yaml.compose(text, Loader=_StrictLoader)

    def line_of(loc: tuple) -> int | None:
        node, line = root, None
        for part in loc:
            if (found := _child(node, part)) is None:
                break
            line, node = found
        return line

    return line_of


def _child(node, part):
    """``(line, node)`` of ``part`` under ``node``: a sequence's item, a mapping's key or one it merges."""
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part].start_mark.line + 1, node.value[part]
    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if key.tag != _MERGE and isinstance(key, yaml.ScalarNode) and key.value == str(part):
            return key.start_mark.line + 1, value
    merged = [v for k, v in node.value if k.tag == _MERGE]
    for sub in [s for v in merged for s in (v.value if isinstance(v, yaml.SequenceNode) else [v])]:
        if (found := _child(sub, part)) is not None:
            return found
    return None


class StrictModel(BaseModel):
    """The config's models: unknown fields refused, and YAML's readings no field means (below)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_yaml_surprises(cls, value, info):
        """YAML reads on/off/yes/no as booleans, which pydantic takes for 1 and 0 (``max_shrink: on``: 1.0), and
        ``20.000`` (a thousands separator) as 20.0, which it took for 20 (``dpid``). ``NO`` (Norway) is false."""
        annotation = cls.model_fields[info.field_name].annotation
        kinds = set(get_args(annotation) or (annotation,)) if get_origin(annotation) not in (list, tuple) else set()
        if isinstance(value, bool) and bool not in kinds and {int, float, str} & kinds:
            raise ValueError(f"expected {'text' if str in kinds else 'a number'}, not true/false (YAML reads NO, no, on, "
                             f"off, yes as true/false){': quote it' if str in kinds else ''}")
        if int in kinds and float not in kinds and (isinstance(value, float) or isinstance(value, str) and "." in value):
            raise ValueError("expected a whole number, without a decimal point (YAML reads 20.000 as 20)")
        return value
