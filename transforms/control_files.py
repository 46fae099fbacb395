"""Platform control files (``.info``): what a batch promises about its dumps (lines, stored size, md5),
checked against what was read before anything is published. A dump that disagrees, or that a control
file lists and that was not read, fails the run naming the file."""
from __future__ import annotations

import json
import posixpath
from fnmatch import fnmatchcase

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.dump_files import FileStats
from transforms.dump_names import empty_splits
from transforms.errors import InputError


def parse_control_file(path: str, data: bytes) -> dict[str, FileStats]:
    """``{listed file path: FileStats}`` from a platform ``.info`` control file (names are relative
    to the control file's folder). Byte size and md5 are of the file as stored (compressed)."""
    try:
        doc = json.loads(data)
        files = doc["Files"]
        folder = path.rsplit("/", 1)[0]
        return {
            f"{folder}/{f['FileName']}": FileStats(int(f["FileLineCount"]), int(f["FileByteSize"]), str(f["md5"]).lower())
            for f in files
        }
    except (ValueError, KeyError, TypeError):
        raise InputError(path, "not a valid control file (expected Files[].FileName/FileLineCount/FileByteSize/md5)") from None


def control_files_in(folders: str, missing_ok: bool = False) -> list[str]:
    """The control files (``.info``, any case, as :func:`~transforms.dump_listing.is_dump_file` skips
    them) in the folders the glob ``folders`` matches."""
    from transforms.storage import glob  # Beam's file systems: imported where files are listed

    return glob(f"{folders}/*.[iI][nN][fF][oO]", missing_ok=missing_ok)


def controls_promising(pattern: str) -> list[str]:
    """The control files in ``pattern``'s folder that list a file ``pattern`` matches: where it lists
    no dump, what a delivery that did not finish left, also under a glob naming the dumps' suffix
    ('*.sync.gz' lists no '.info'). A control file listing only other files (another partner's, in a
    shared folder) is none; one that cannot be read or parsed (a transfer cut short) is one: it
    cannot say it is another source's, and taken for none the source was carried, exit 0."""
    from transforms.storage import literal

    found = []
    folder = posixpath.dirname(pattern)
    for control in control_files_in(folder if any(c in folder for c in "*?[") else literal(folder), missing_ok=True):
        try:
            with FileSystems.open(control) as handle:
                listed = parse_control_file(control, handle.read())
        except (InputError, OSError):  # cut short, or unreadable: it cannot say it is another source's
            found.append(control)
            continue
        if lists_a_match(listed, pattern):
            found.append(control)
    return found


def lists_a_match(listed: dict[str, FileStats], pattern: str) -> bool:
    """Whether a control file listing ``listed`` is of the data source whose glob is ``pattern``: it
    lists a file the glob matches. One listing only other files is another partner's, in a shared
    folder (its dumps not read, and not to be)."""
    return any(fnmatchcase(path, pattern) for path in listed)


def check_against_control(path: str, actual: FileStats, promised: FileStats, control: str) -> None:
    """Raise :class:`InputError` naming the dump when it disagrees with its control file."""
    for what, got, want in (("line count", actual.lines, promised.lines), ("byte size", actual.size, promised.size),
                            ("md5", actual.md5, promised.md5)):
        if got != want:
            detail = f"{got} != {want}" if what != "md5" else "checksum differs"
            raise InputError(path, f"{what} disagrees with control file {control.rsplit('/', 1)[-1]} ({detail})")


class ReadControlFile(beam.DoFn):
    """``(.info control file, the glob of the data source beside whose dumps it is)`` -> ``(control
    path, {listed dump: promised FileStats})``; nothing for a control file listing no file the glob
    matches (:func:`lists_a_match`: another partner's, whose dumps the run does not read)."""

    def process(self, element: tuple[str, str]):
        control, pattern = element
        with FileSystems.open(control) as handle:
            listed = parse_control_file(control, handle.read())
        if lists_a_match(listed, pattern):
            yield control, listed


def check_control_files(controls: list, stats: list) -> None:
    """Compare every dump a control file lists with what was read (lines, stored size, md5): a batch
    that arrived incomplete or altered fails the run, naming the file. So does a split holding no
    line beside splits of its batch that do (:func:`~transforms.dump_names.empty_splits`), unless a
    control file lists it: it then promised the 0 lines. So does a plain dump whose last line has no line
    break (a transfer cut short inside it read that line in part: `<ID> 3301,33` gave segment 33 a
    member), unless a control file lists it: its size and md5 say it is whole. And two dumps of the same
    stored bytes (of some lines: empty iter dumps are alike) in one folder, one delivery twice under two
    names (a transfer retried as another split or timestamp), whose lines were counted twice; in two
    folders they are two data sources' deliveries. Runs in the publish step."""
    read = dict(stats)
    for control, promised in sorted(controls):
        for path, expected in sorted(promised.items()):
            actual = read.get(path)
            if actual is None:
                raise InputError(path, f"listed in control file {control.rsplit('/', 1)[-1]} but not read (missing?)")
            check_against_control(path, actual, expected, control)
    listed = {path for _, promised in controls for path in promised}
    for path, problem in empty_splits({path: actual.lines for path, actual in read.items()}):
        if path not in listed:
            raise InputError(path, f"{problem} (its transfer cut short?): the batch read without its lines would "
                                   "publish part of the audience. Nothing was published")
    first_of: dict[tuple[str, str, int], str] = {}  # per folder: a retried transfer lands beside the first
    for path, actual in sorted(read.items()):
        same = (posixpath.dirname(path), actual.md5, actual.size)  # (two folders' copies: two data sources' own)
        first = first_of.setdefault(same, path) if actual.lines else path
        if first != path:
            raise InputError(path, f"the same bytes as {posixpath.basename(first)} ({actual.lines:,} lines): one "
                                   "delivery read twice (a transfer retried under another name?), its lines counted "
                                   "twice; remove one. Nothing was published")
        if actual.unterminated and path not in listed:
            raise InputError(path, f"line {actual.unterminated:,}, its last, ends without a line break: the file may "
                                   "be cut short (a transfer that stopped?) and that line read in part; deliver it "
                                   "again, or end it with a line break if it is whole. Nothing was published")
