"""A local Cloud Storage for tests: ``gcp-storage-emulator`` on 127.0.0.1, with Beam pointed at it.

    with gcs_emulator(bucket="audience-sync-test") as (endpoint, bucket):
        ...  # gs://audience-sync-test/... works through FileSystems and google-cloud-storage

What it does, and why (read from apache-beam 2.77 and google-cloud-storage 3.x sources):

* The emulator runs in a child process (``gcs_emulator_server.py start --in-memory``: the installed
  ``gcp_storage_emulator`` with the ``ifGenerationMatch`` precondition of uploads and deletes enforced,
  as real GCS does and the output lock needs) on a free loopback port, so a hung request can never block the test process's GIL or its teardown;
  we wait until its health check (``GET /``) answers, and kill the process afterwards.
* ``STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT`` is set for the test process. Every
  ``google.cloud.storage.Client`` built afterwards sends all requests (JSON API, uploads, downloads
  and ``/batch/storage/v1``) there instead of storage.googleapis.com, and a client built *without*
  credentials gets ``AnonymousCredentials`` (client.py: "Authentication may be bypassed ... if
  STORAGE_EMULATOR_HOST is set"). ``GOOGLE_CLOUD_PROJECT`` is set too, for the test's own client.
* Beam's ``GCSFileSystem`` builds a new ``GcsIO`` per call, and ``gcsio.create_storage_client``
  always asks ``apache_beam.internal.gcp.auth.get_service_credentials(options)`` first; that calls
  ``google.auth.default()`` (with 4 retries and exponential backoff from 2 s), which would probe
  the GCE metadata server when no credentials are configured, and only then falls back to
  ``storage.Client.create_anonymous_client()``. No pipeline option turns this off for GCS in 2.77
  (``--no_auth`` is read only by the Dataflow runner's API client). So, for the duration of the
  context, ``auth.get_service_credentials`` answers ``None`` ("no credentials found"), which makes
  Beam take its own anonymous branch at once: an anonymous client, no project, that honours
  ``STORAGE_EMULATOR_HOST``. As a guard, ``google.auth.default`` is replaced by a function that
  records the call and raises, so nothing in the test process can look for real credentials or
  reach a Google endpoint; :attr:`EmulatorHandle.credential_lookups` lets a test assert it stayed 0.

This works for runners that execute in this process (the project's default ``FnApiRunner`` in
``in_memory`` mode); worker subprocesses would inherit the environment but not the patch.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

DEFAULT_BUCKET = "audience-sync-test"
SERVER = Path(__file__).resolve().parent / "gcs_emulator_server.py"
START_TIMEOUT_S = 20.0


@dataclass
class EmulatorHandle:
    endpoint: str  # http://127.0.0.1:PORT
    bucket: str
    process: subprocess.Popen
    credential_lookups: list = field(default_factory=list)  # calls to google.auth.default (should stay empty)

    def __iter__(self):  # so ``endpoint, bucket = handle`` works
        return iter((self.endpoint, self.bucket))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP proxy


def _healthy(endpoint: str) -> bool:
    try:
        with _DIRECT.open(endpoint + "/", timeout=1) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the test process dies (a pytest
    killed by a CI timeout leaves no emulator behind). Best effort; a no-op elsewhere."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def start_emulator(bucket: str = DEFAULT_BUCKET, attempts: int = 3) -> tuple[subprocess.Popen, str]:
    """Start the emulator (in memory, ``bucket`` created) on a free port; returns (process, endpoint)."""
    last_error = ""
    for _ in range(attempts):  # a port picked free can be taken before the child binds it: retry
        port = _free_port()
        endpoint = f"http://127.0.0.1:{port}"
        log = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child can never block on it
        proc = subprocess.Popen(
            [sys.executable, str(SERVER), "start", "--host", "127.0.0.1", "--port", str(port),
             "--in-memory", "--default-bucket", bucket, "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and proc.poll() is None:
            if _healthy(endpoint):
                log.close()
                return proc, endpoint
            time.sleep(0.1)
        if proc.poll() is None:
            _stop(proc)
            last_error = f"no answer on {endpoint} within {START_TIMEOUT_S:.0f} s"
        else:
            log.seek(0)
            last_error = log.read().decode(errors="replace")[-2000:]
        log.close()
    raise RuntimeError(f"gcp-storage-emulator did not start: {last_error}")


@contextlib.contextmanager
def beam_uses_emulator(endpoint: str, project: str = "audience-sync-test") -> Iterator[list]:
    """Point google-cloud-storage and Beam's GCS filesystem at ``endpoint``, anonymously.

    Yields the list that records any ``google.auth.default`` call (it should stay empty).
    Environment and patches are restored on exit.
    """
    import google.auth
    from apache_beam.internal.gcp import auth as beam_auth

    env = {"STORAGE_EMULATOR_HOST": endpoint, "GOOGLE_CLOUD_PROJECT": project}
    # requests (under google-cloud-storage) honours HTTP(S)_PROXY: keep loopback traffic direct.
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name, "")
        if "127.0.0.1" not in current.split(","):
            env[name] = ",".join(filter(None, [current, "127.0.0.1"]))
    saved_env = {k: os.environ.get(k) for k in (*env, "GOOGLE_APPLICATION_CREDENTIALS")}
    saved_beam_creds = beam_auth.get_service_credentials
    saved_default = google.auth.default
    lookups: list = []

    def no_default_credentials(*args, **kwargs):
        lookups.append((args, kwargs))
        raise google.auth.exceptions.DefaultCredentialsError("credential lookup is disabled in tests (GCS emulator)")

    os.environ.update(env)
    os.environ.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    # Beam's gcsio: credentials None -> storage.Client.create_anonymous_client(), see the module doc.
    beam_auth.get_service_credentials = lambda pipeline_options=None: None
    google.auth.default = no_default_credentials
    try:
        yield lookups
    finally:
        google.auth.default = saved_default
        beam_auth.get_service_credentials = saved_beam_creds
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def gcs_emulator(bucket: str = DEFAULT_BUCKET) -> Iterator[EmulatorHandle]:
    """Run the emulator with ``bucket`` and Beam pointed at it; yields a handle that unpacks to
    ``(endpoint, bucket)``. The server is killed and the environment restored afterwards."""
    proc, endpoint = start_emulator(bucket)
    try:
        with beam_uses_emulator(endpoint) as lookups:
            yield EmulatorHandle(endpoint, bucket, proc, lookups)
    finally:
        _stop(proc)


def storage_client():
    """A google-cloud-storage client for the emulator (call inside :func:`gcs_emulator`)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    if not os.environ.get("STORAGE_EMULATOR_HOST"):
        raise RuntimeError("STORAGE_EMULATOR_HOST is not set: use gcs_emulator() first")
    return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"), credentials=AnonymousCredentials())
