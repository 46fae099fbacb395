"""Beam's match of a glob, listing only the folders the glob can reach.

Beam lists every file below a pattern's folder and then keeps those its regex matches: locally it
walks the whole tree under the folder (and stats every file), on ``gs://`` it lists every object
under the prefix. A dumps folder holding an archive tree ('segments/visitors/archive/...') was
listed whole at each of a run's listings of it (three or more per data source). Where no wildcard
of the pattern can match '/' (``*`` cannot, ``?`` can; a set can when it holds '/' or is negated)
and no set is written with a '/' in it (``[!/]``), a path's components line up with the pattern's,
so a folder whose name its component does not match holds no match, nor does a folder deeper than
the pattern. :func:`match` lists level by
level and enters only the folders that can hold a match (below a component holding ``**``,
everything). Beam's own ``match`` still does the rest: the short cut for a path without wildcards,
the regex every path is kept by, the order (a listing on ``gs://`` is sorted by name, as the
flat one is) and ``limit``. The same files come back; fewer entries are read."""
from __future__ import annotations

import errno
import os
import re

from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.localfilesystem import LocalFileSystem

try:  # the GCS extra is installed wherever a gs:// path is read
    from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem
    from apache_beam.io.gcp.gcsio import GcsIO, parse_gcs_path
except ImportError:  # pragma: no cover - without it, gs:// listings are Beam's own
    GCSFileSystem = None

MOST_PREFIXES = 16  # sub-prefixes of one gs:// level entered one request each; more: one flat listing


def match(pattern: str, limit: int | None = None) -> list[FileMetadata]:
    """``FileSystems.match`` of one pattern (its files' metadata, at most ``limit``), listing only
    the folders the pattern can reach where that can be told; Beam's whole listing otherwise (locally
    the same walk, failing on a folder it may not read)."""
    filesystem = FileSystems.get_filesystem(pattern)  # a new instance each call: its _list is ours alone
    parts = _parts(pattern, "://" not in pattern)
    if isinstance(filesystem, LocalFileSystem):  # Beam's own walk skips a folder it may not read, as empty
        filesystem._list = (lambda folder: _local_files(*parts)) if parts else lambda folder: _local_files(folder)
    elif parts is not None and GCSFileSystem is not None and isinstance(filesystem, GCSFileSystem):
        filesystem._list = lambda prefix: _gcs_files(filesystem, *parts[:2])
    return filesystem.match([pattern], [limit])[0].metadata_list


def _parts(pattern: str, local: bool) -> tuple[str, list[str], str] | None:
    """(the folder a listing starts from, the pattern's components below it, the pattern as Beam
    matches it), as Beam's match lists them (locally the folder of the part before the first
    wildcard; on gs:// the prefix up to its last '/'); None when a wildcard can match '/' or there
    is no wildcard (no listing)."""
    if pattern.endswith(("/", "\\")):
        pattern += "*"  # as Beam's match reads it, a trailing backslash too
    head = _literal_head(pattern)
    if head == pattern or _may_match_slash(pattern[len(head):]):
        return None
    folder = os.path.dirname(head) if local else head[: head.rfind("/") + 1]
    rest = pattern[len(folder):]
    if local:
        if not folder or folder.endswith("/") or not rest.startswith("/") or rest.startswith("//"):
            return None  # '', '/' or 'a//*': Beam's own listing
        rest = rest[1:]
    elif "://" not in folder or folder.endswith("://"):
        return None
    return folder, rest.split("/"), pattern


def _may_match_slash(glob: str) -> bool:
    """Whether a wildcard of ``glob`` (read as Beam's translate_pattern reads it) can match '/':
    ``?``, or a set holding '/' (a range across it, or a negated set); or is a set written with a '/'
    in it (``[!/]``, any character but '/'): its text spans two components, which cannot be told apart."""
    i, n = 0, len(glob)
    while i < n:
        c, i = glob[i], i + 1
        if c == "?":
            return True
        if c == "[":
            j = i + (i < n and glob[i] == "!")
            j += j < n and glob[j] == "]"
            while j < n and glob[j] != "]":
                j += 1
            if j < n and "/" in glob[i:j]:
                return True
            if j < n:  # a set (else a literal '[')
                stuff = glob[i:j].replace("\\", "\\\\")
                stuff = "^" + stuff[1:] if stuff[0] == "!" else "\\" + stuff if stuff[0] == "^" else stuff
                try:
                    if re.fullmatch(f"[{stuff}]", "/"):
                        return True
                except re.error:  # Beam's regex fails on it too: its listing says so
                    return True
                i = j + 1
    return False


def _levels(components: list[str]) -> tuple[list, int | None]:
    """Each component's regex for one name, up to the first holding ``**`` (its index: below it
    everything is entered); None for that index when there is none."""
    deep = next((k for k, component in enumerate(components) if "**" in component), None)
    names = [re.compile(FileSystem.translate_pattern(component)).match for component in components[:deep]]
    return names, deep


def _local_files(folder: str, components: list[str] = ("**",), pattern: str | None = None):
    """Beam's local listing of ``folder`` (os.walk: its order, links to folders not entered, files
    gone meanwhile skipped), entering only the sub-folders the pattern can reach and statting only
    the files it matches (without a pattern: every file, as Beam's). A folder it enters and may not
    read fails the listing (os.walk skipped it: a night's folder a partner's account made unreadable
    was no delivery, its audience carried)."""
    if not os.path.exists(folder):
        return
    names, deep = _levels(list(components))
    keep = re.compile(FileSystem.translate_pattern(pattern)).match if pattern is not None else bool
    for path, subfolders, files in os.walk(folder, onerror=_unless_gone):
        depth = 0 if path == folder else path.count("/", len(folder) + 1) + 1
        if deep is None and depth + 1 >= len(components):
            subfolders[:] = []
        elif deep is None or depth < deep:
            subfolders[:] = [name for name in subfolders if names[depth](name)]
        for name in files:
            file = os.path.join(path, name)
            if keep(file):
                try:
                    yield FileMetadata(file, os.path.getsize(file), os.path.getmtime(file))
                except OSError:  # gone since the walk
                    pass


def _unless_gone(error: OSError) -> None:
    """A folder gone since its parent was read, or a file where the pattern names a folder
    ('report.json/dt=*/...'), lists nothing, as in Beam's walk; a folder it may not read fails it."""
    if error.errno not in (errno.ENOENT, errno.ENOTDIR):
        raise error


def _gcs_files(filesystem, prefix: str, components: list[str]):
    """Beam's listing of a gs:// prefix (every object's path, size and update time), one level at a
    time (the API's delimiter '/'), entering only the sub-prefixes the pattern can reach; sorted by
    name as the flat listing is. Each sub-prefix entered is a request: where a level has more than
    :data:`MOST_PREFIXES` to enter, one flat listing below it is fewer (1,000 objects a page)."""
    names, deep = _levels(components)
    io = filesystem._gcsIO()
    bucket_name, _ = parse_gcs_path(prefix, object_optional=True)
    bucket = io.client.bucket(bucket_name)
    retry = getattr(io, "_storage_client_retry", None)
    found, todo = {}, [(prefix[len(f"gs://{bucket_name}/"):], 0, False)]
    while todo:
        name, depth, flat = todo.pop()
        flat = flat or (deep is not None and depth >= deep)
        listing = io.client.list_blobs(bucket, prefix=name + _literal_head(components[depth]),
                                       delimiter=None if flat else "/", retry=retry)
        for blob in listing:
            found[f"gs://{bucket_name}/{blob.name}"] = (blob.size, GcsIO._updated_to_seconds(blob.updated))
        if not flat and depth + 1 < len(components):
            subs = [(sub, depth + 1, False) for sub in listing.prefixes if names[depth](sub[len(name):-1])]
            todo += subs if len(subs) <= MOST_PREFIXES else [(name, depth, True)]
    for path in sorted(found):
        yield FileMetadata(path, *found[path])


def _literal_head(pattern: str) -> str:
    """A pattern's (or a component's) part before its first wildcard, as Beam's match cuts it: where
    its listing starts; a component's is a narrower prefix to list."""
    return re.match(r"^[^[*?]*", pattern).group(0)
