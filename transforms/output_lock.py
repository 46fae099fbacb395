"""One live run per output folder: a lock object, and a write probe before a pipeline starts.

The lock is ``OUT/_lock.json`` (``ROOT/_lock.json`` for the nightly job): the holder's run id, job,
host, pid and start time (UTC). It is created only if it does not exist — on local disk with
``O_CREAT | O_EXCL``, on GCS with the google-cloud-storage client's ``if_generation_match=0`` (an
object create that fails with 412 when the object exists; Beam's FileSystems has no such
precondition) — so of two runs started together exactly one gets it; the other fails at once,
naming the lock and its holder. The holder deletes it at the end, success or failure (a delete that
fails is one logged line naming the lock left behind: the run's own error, or success, stands). A lock
holding this run's own id is its own: google-cloud-storage retries an upload whose answer was lost
(a reset connection, a 503), and the retry of a create that reached the server gets 412; when the
client gives up instead (every retry lost too), the lock is read: holding this run's id, it is taken.

A lock left by a run that died without releasing it (SIGKILL, a lost machine) is **stale** when
  * it was taken on this host and its pid is no longer running, or
  * it is older than ``max_age`` (24 hours by default: longer than any run of this job should take).
A stale lock is taken over (compare-and-delete: on GCS a delete with ``if_generation_match`` of the
stale object; locally the stale file is renamed aside and checked to be the one judged stale), with
a warning. Any other lock fails the run: delete the file by hand only if its holder is gone.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import socket
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from apache_beam.io.filesystems import FileSystems

from transforms.errors import RunFailed
from transforms.storage import join_path

LOG = logging.getLogger("audience_sync.lock")
LOCK = "_lock.json"
PROBE_PREFIX = "_write-probe-"
PROBE_BYTES = 64 * 1024
MAX_AGE = timedelta(hours=24)
READ_BACK_SECONDS = 10.0  # the read-back after a failed create: GCS down, it waited the client's 120 s again


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (the lock file's content)."""

    run_id: str
    job: str
    host: str
    pid: int
    started: str  # ISO 8601, UTC

    def describe(self) -> str:
        return f"run {self.run_id} ({self.job}, host {self.host}, pid {self.pid}, started {self.started})"


class LockHeld(RunFailed):
    """The lock is held by a live run (the one line names the folder, the holder and the lock)."""


class LockNotCreated(RunFailed):
    """The lock file cannot be created (a read-only folder, a file in its way, no such bucket): its
    ``path`` and the one-line ``reason``, for a caller whose lock is not an output's to say so."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: cannot create the output lock ({reason})")
        self.path, self.reason = path, reason


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def stale_reason(holder: Holder | None, now: datetime, max_age: timedelta = MAX_AGE) -> str | None:
    """Why a lock is stale (None: it is live). An unreadable lock file counts as live: it may be
    being written."""
    if holder is None:
        return None
    if holder.host == socket.gethostname() and not _pid_running(holder.pid):
        return f"its process {holder.pid} on this host is gone"
    try:
        started = datetime.fromisoformat(holder.started)
    except ValueError:
        return None
    if now - started > max_age:
        return f"it is older than {max_age.total_seconds() / 3600:g} hours"
    return None


class _LocalLocks:
    """Lock files on local disk: exclusive create, read, compare-and-delete (by content)."""

    def create(self, path: str, data: bytes) -> object | None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError:
            os.unlink(path)  # never leave an empty lock behind (a full disk)
            raise
        return data

    def read(self, path: str, deadline: float | None = None) -> tuple[bytes, object] | None:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        return data, data

    def delete(self, path: str, token: object) -> bool:
        aside = f"{path}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(path, aside)  # atomic: from here no other run can delete or replace it
        except FileNotFoundError:
            return False
        with open(aside, "rb") as handle:
            mine = handle.read() == token
        if not mine:  # another run's fresh lock: put it back (unless the place was taken meanwhile)
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
        os.unlink(aside)
        return mine


class _GcsLocks:
    """Lock objects on GCS through google-cloud-storage: generation preconditions make create and
    delete atomic (412 Precondition Failed when another run got there first)."""

    def __init__(self, options):
        from apache_beam.io.gcp.gcsio import create_storage_client
        from apache_beam.options.pipeline_options import PipelineOptions

        self._client = create_storage_client(options or PipelineOptions([]))

    def _blob(self, path: str):
        bucket, _, name = path[len("gs://"):].partition("/")
        return self._client.bucket(bucket).blob(name)

    def create(self, path: str, data: bytes) -> object | None:
        from google.api_core.exceptions import PreconditionFailed

        blob = self._blob(path)
        try:
            blob.upload_from_string(data, content_type="application/json", if_generation_match=0)
        except PreconditionFailed:
            return None
        return blob.generation

    def read(self, path: str, deadline: float | None = None) -> tuple[bytes, object] | None:
        """The lock's bytes and generation (None: no lock); ``deadline``: seconds for all the client's
        retries and each request (None: the client's own, 120 s and 60 s)."""
        from google.api_core.exceptions import NotFound
        from google.cloud.storage.retry import DEFAULT_RETRY

        bucket, _, name = path[len("gs://"):].partition("/")
        limits = {} if deadline is None else {"retry": DEFAULT_RETRY.with_timeout(deadline), "timeout": deadline}
        try:
            blob = self._client.bucket(bucket).get_blob(name, **limits)  # its generation: the delete's precondition
            if blob is None:
                return None
            generation = blob.generation  # before the download, which sets it from a header (none: None)
            return blob.download_as_bytes(**limits), generation
        except NotFound:
            return None

    def delete(self, path: str, token: object) -> bool:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        try:
            self._blob(path).delete(if_generation_match=token)
        except (NotFound, PreconditionFailed):
            return False
        return True


def _store(path: str, options):
    if path.startswith("gs://"):
        return _GcsLocks(options)
    if "://" in path:
        raise RunFailed(f"{path}: output locks are implemented for local folders and gs:// only")
    return _LocalLocks()


def _parse(data: bytes) -> Holder | None:
    try:
        return Holder(**json.loads(data))
    except (ValueError, TypeError):
        return None


class OutputLock:
    """``with OutputLock(folder, job, options):`` — hold ``folder`` for one run (see the module doc)."""

    def __init__(self, folder: str, job: str, options=None, max_age: timedelta = MAX_AGE):
        self.folder, self.path, self.max_age = folder, join_path(folder, LOCK), max_age
        self.holder = Holder(uuid.uuid4().hex[:12], job, socket.gethostname(), os.getpid(),
                             datetime.now(timezone.utc).isoformat(timespec="seconds"))
        self._store, self._token = _store(self.path, options), None

    def acquire(self) -> "OutputLock":
        data = (json.dumps(asdict(self.holder), indent=2) + "\n").encode("utf-8")
        for _ in range(3):  # at most: create, take a stale lock over, create again
            try:
                self._token = self._store.create(self.path, data)
            except Exception as exc:  # noqa: BLE001 - read-only, no permission, no such bucket: one line
                if self._own(self._read_after_failure()):  # the client gave up on a create that reached the server
                    return self
                raise LockNotCreated(self.path, _reason(exc)) from None
            if self._token is not None:
                return self
            found = self._store.read(self.path)
            if found is None:
                continue  # released meanwhile
            holder = _parse(found[0])
            if self._own(found):  # our own create, retried by the client after a lost answer: 412
                return self
            why = stale_reason(holder, datetime.now(timezone.utc), self.max_age)
            if why is None:
                who = holder.describe() if holder else "a run whose lock cannot be read"
                raise LockHeld(f"{self.folder} is in use by {who}: lock {self.path}; "
                                "if that run is no longer running, delete the lock and run again")
            if self._store.delete(self.path, found[1]):
                LOG.warning("%s: took over a stale lock of %s (%s)", self.path, holder.describe(), why)
        raise RunFailed(f"{self.folder}: could not take the output lock {self.path} (other runs keep taking it)")

    def _own(self, found: tuple[bytes, object] | None) -> bool:
        """Whether the lock ``found`` holds this run's own id: then it is this run's (its token kept)."""
        if found is None or _parse(found[0]) != self.holder:
            return False
        self._token = found[1]
        return True

    def _read_after_failure(self) -> tuple[bytes, object] | None:
        """The lock after a create that raised (None: unreadable too, and the create's error stands), read
        with a short deadline: the storage is failing, and the client has retried the create for long."""
        try:
            return self._store.read(self.path, READ_BACK_SECONDS)
        except Exception:  # noqa: BLE001 - the storage is failing: the create's error is the one line
            return None

    def release(self, failed: bool = False) -> None:
        """Delete the lock. A delete that fails (the storage down past the client's retries, a read-only
        folder) raises nothing: the run's own error (``failed``), or its success, stands, and one more
        line names the lock left behind, which refuses other hosts' runs for up to ``max_age``."""
        token, self._token = self._token, None
        if token is None:
            return
        try:
            self._store.delete(self.path, token)
        except Exception as exc:  # noqa: BLE001 - any storage error: the line below
            ended = "failed (its error follows)" if failed else "succeeded (what it published stays published)"
            LOG.error("%s: this run's lock could not be deleted (%s); the run %s. Until the lock is deleted (this "
                      "run has ended: delete it), other hosts' runs that take it are refused for up to %g hours",
                      self.path, _reason(exc), ended, self.max_age.total_seconds() / 3600)

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, kind, value, trace) -> None:
        self.release(failed=kind is not None)


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    return os.strerror(code) if code else (str(exc).splitlines() or [type(exc).__name__])[0]


def probe_writable(folder: str, *, what: str = "the output folder", named: str | None = None, remedy: str = "") -> None:
    """Write (and delete) a small file in ``folder``: a read-only folder, a full disk or a missing
    permission fails here, before any pipeline runs, with one line naming the folder (or ``named``:
    the flag that chose it), ``what`` it is, and the ``remedy`` if any."""
    path = join_path(folder, f"{PROBE_PREFIX}{uuid.uuid4().hex[:12]}")
    try:
        with FileSystems.create(path) as sink:
            sink.write(b"\0" * PROBE_BYTES)
        FileSystems.delete([path])
    except Exception as exc:  # noqa: BLE001 - any storage error is the one line below
        cause = exc
        while getattr(cause, "__cause__", None) is not None and not getattr(cause, "errno", None):
            cause = cause.__cause__
        try:
            FileSystems.delete([path])
        except Exception:  # noqa: BLE001 - best effort
            pass
        raise RunFailed(f"{named or folder}: cannot write to {what} ({_reason(cause)}); "
                        f"nothing was run{remedy}") from None


def write_error(path: str, exc: BaseException, outcome: str = "nothing was published") -> RunFailed:
    """The one-line error of a failed write (disk full, read-only, no permission), naming the file."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
        return RunFailed(f"{path}: cannot write ({_reason(exc)}); {outcome}")
    return RunFailed(f"{path}: cannot write ({type(exc).__name__}: {_reason(exc)}); {outcome}")
