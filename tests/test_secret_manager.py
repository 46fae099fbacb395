"""``gcpsm:`` key references (Google Cloud Secret Manager), parsed and dispatched without any network.

The Secret Manager client is replaced by a fake (``secrets._secret_manager_client``); the real one is
only imported, never constructed (constructing it looks for Google credentials).
"""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import google_crc32c
import pytest

from conftest import ROOT
from transforms import secrets
from transforms.errors import KeyMaterialError
from transforms.secrets import load_keyring, load_secret

KEY = bytes(range(32))
REF = "gcpsm:projects/acme-prod/secrets/audience-sync-aes/versions/3"
NAME = "projects/acme-prod/secrets/audience-sync-aes/versions/3"


class FakeSecretManager:
    """Answers ``access_secret_version`` from a dict ``{version name: payload bytes}``."""

    def __init__(self, secrets: dict[str, bytes], crc: int | None = None, error: Exception | None = None):
        self.secrets, self.crc, self.error, self.requests = secrets, crc, error, []

    def access_secret_version(self, request):
        self.requests.append(request)
        if self.error is not None:
            raise self.error
        data = self.secrets[request["name"]]
        crc = self.crc if self.crc is not None else google_crc32c.value(data)
        return SimpleNamespace(payload=SimpleNamespace(data=data, data_crc32c=crc))


@pytest.fixture
def secret_manager(monkeypatch):
    """Install a fake client; returns a function that sets what it holds."""
    holder = {}

    def install(secrets=None, **kwargs):
        holder["client"] = FakeSecretManager(secrets or {}, **kwargs)
        return holder["client"]

    def factory():
        if "client" not in holder:
            raise AssertionError("the Secret Manager client must not be created for this reference")
        return holder["client"]

    monkeypatch.setattr(secrets, "_secret_manager_client", factory)
    return install


def test_key_and_iv_come_from_the_secret_version(secret_manager):
    fake = secret_manager({NAME: (KEY.hex() + "\n").encode(), "projects/acme-prod/secrets/iv/versions/latest": b"00" * 16})
    assert load_secret(REF, "hex") == KEY
    assert load_secret("gcpsm:projects/acme-prod/secrets/iv/versions/latest", lengths=(16,)) == bytes(16)
    assert [r["name"] for r in fake.requests] == [NAME, "projects/acme-prod/secrets/iv/versions/latest"]


def test_key_ring_comes_from_a_secret_version(secret_manager):
    ring = {"keys": [{"id": 7, "secret": KEY.hex(), "activates": "2026-01-01T00:00:00Z", "expires": None}]}
    secret_manager({NAME: json.dumps(ring).encode()})
    (key,) = load_keyring(REF)
    assert (key.id, key.secret) == (7, KEY)


@pytest.mark.parametrize(
    "ref",
    [
        "gcpsm:projects/acme-prod/secrets/audience-sync-aes",  # no version
        "gcpsm:projects/acme-prod/secrets/audience-sync-aes/versions/",
        "gcpsm:projects//secrets/audience-sync-aes/versions/1",
        "gcpsm:projects/acme-prod/locations/eu/secrets/s/versions/1",  # regional secrets: not supported
        "gcpsm:projects/acme prod/secrets/s/versions/1",
    ],
)
def test_malformed_reference_is_named_and_nothing_is_called(secret_manager, ref):
    with pytest.raises(KeyMaterialError) as exc:
        load_secret(ref, "hex")
    assert str(exc.value) == (
        f"{ref}: Secret Manager reference must look like 'gcpsm:projects/PROJECT/secrets/SECRET/versions/VERSION'"
    )


def test_reference_that_may_be_a_pasted_key_is_not_echoed(secret_manager):
    for ref in (f"gcpsm:{KEY.hex()}", "gcpsm:"):
        with pytest.raises(KeyMaterialError) as exc:
            load_secret(ref)
        assert str(exc.value).startswith("gcpsm:<not shown>: Secret Manager reference must look like")
        assert KEY.hex() not in str(exc.value)


def test_access_errors_name_the_reference_and_the_error_type_only(secret_manager):
    class PermissionDenied(Exception):
        pass

    secret_manager(error=PermissionDenied("403 caller lacks secretmanager.versions.access on " + NAME))
    with pytest.raises(KeyMaterialError) as exc:
        load_secret(REF, "hex")
    assert str(exc.value) == f"{REF}: cannot access the secret version (PermissionDenied)"


def test_client_that_cannot_be_created_is_a_key_material_error(monkeypatch):
    class DefaultCredentialsError(Exception):
        pass

    def no_credentials():
        raise DefaultCredentialsError("Your default credentials were not found")

    monkeypatch.setattr(secrets, "_secret_manager_client", no_credentials)
    with pytest.raises(KeyMaterialError) as exc:
        load_secret(REF)
    assert str(exc.value) == f"{REF}: cannot create a Secret Manager client (DefaultCredentialsError)"


def test_payload_problems_name_the_reference_never_the_value(secret_manager):
    cases = [
        ({NAME: KEY.hex().encode()}, {"crc": 12345}, "secret payload failed its CRC32C check"),
        ({NAME: b"  \n"}, {}, "value is empty"),
        ({NAME: b"\xff\xfe" + KEY}, {}, "content is not text (expected hex or base64)"),
        ({NAME: KEY[:20].hex().encode()}, {}, "hex value decodes to 20 bytes; expected one of 16, 24, 32"),
    ]
    for stored, kwargs, problem in cases:
        secret_manager(stored, **kwargs)
        with pytest.raises(KeyMaterialError) as exc:
            load_secret(REF, "hex")
        assert str(exc.value) == f"{REF}: {problem}"
        assert KEY.hex() not in str(exc.value) and KEY[:20].hex() not in str(exc.value)


def test_env_and_file_references_are_unchanged(secret_manager, monkeypatch):
    monkeypatch.setenv("T_SM_KEY", KEY.hex())
    assert load_secret("env:T_SM_KEY", "hex") == KEY
    with pytest.raises(KeyMaterialError) as exc:
        load_secret("vault:thing")
    assert str(exc.value) == ("not a key reference: use 'env:NAME', 'file:PATH' or "
                              "'gcpsm:projects/P/secrets/S/versions/V', never the secret itself (the value is not shown)")


def test_client_library_is_imported_lazily_and_provides_the_client():
    code = (
        "import sys, transforms.secrets, transforms.crypto, transforms.keys, transforms.reconcile;"
        "print('google.cloud.secretmanager' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    from google.cloud import secretmanager  # what _secret_manager_client() uses (not constructed here)

    assert callable(secretmanager.SecretManagerServiceClient.access_secret_version)


def test_job_config_accepts_secret_manager_references():
    from transforms.config_load import parse_config

    cfg = parse_config(
        {
            "profiles": {"path": "gs://b/profiles.parquet"},
            "data_sources": [
                {
                    "name": "enc", "dpid": 1, "segments": "gs://b/enc/*.sync", "id_type": "declared",
                    "declared": "encrypted", "match_on": "email", "channel": "email",
                    "encryption": {"key": REF, "key_encoding": "hex", "iv": REF.replace("aes", "iv")},
                }
            ],
        }
    )
    assert cfg.data_sources[0].encryption.key == REF


class RotatingSecretManager:
    """A secret whose versions are added while a job runs: ``versions/latest`` is the newest, and a
    response names the version it holds (as Secret Manager's does: the project's number, the version's)."""

    def __init__(self, versions: list[bytes]):
        self.versions = versions

    def access_secret_version(self, request):
        base, version = request["name"].rsplit("/versions/", 1)
        number = len(self.versions) if version == "latest" else int(version)
        data = self.versions[number - 1]
        return SimpleNamespace(name=f"{base.replace('acme-prod', '4242')}/versions/{number}",
                               payload=SimpleNamespace(data=data, data_crc32c=google_crc32c.value(data)))


def test_a_latest_version_is_read_as_the_version_checked_at_launch(monkeypatch, tmp_path):
    """``versions/latest`` was read by the launcher's check, then again by each worker in DoFn.setup(),
    minutes later on Dataflow: a version added meanwhile (the key rotated) gave later workers another
    key, and their lines failed to decrypt (under max_decrypt_failure_ratio, left out; an export's were
    encrypted under two keys). The launch pins the version the alias names then."""
    from pipelines import launch
    from transforms.crypto import build_decryptor
    from transforms.encrypt import encrypt_cbc

    manager = RotatingSecretManager([KEY.hex().encode()])
    monkeypatch.setattr(secrets, "_secret_manager_client", lambda: manager)
    latest = "gcpsm:projects/acme-prod/secrets/audience-sync-aes/versions/latest"
    enc = {"key": latest, "key_encoding": "hex", "iv": "env:T_SM_IV", "iv_encoding": "hex"}
    monkeypatch.setenv("T_SM_IV", "00" * 16)
    ds = {"name": "enc", "dpid": 1, "segments": "dumps/*.sync", "id_type": "declared", "declared": "encrypted",
          "match_on": "email", "channel": "email", "encryption": enc}
    (tmp_path / "job.yaml").write_text(json.dumps({"profiles": {"path": "p.parquet"}, "data_sources": [ds]}))
    started = launch.start(str(tmp_path / "job.yaml"), [], lambda cfg: None)
    manager.versions.append(bytes(reversed(KEY)).hex().encode())  # rotated after the launch
    (source,) = started.cfg.data_sources
    assert source.encryption.key == "gcpsm:projects/4242/secrets/audience-sync-aes/versions/1"
    plain, _ = build_decryptor(source, None).decrypt(encrypt_cbc(["ann@example.com"], KEY, bytes(16)))
    assert plain.to_pylist() == ["ann@example.com"]
