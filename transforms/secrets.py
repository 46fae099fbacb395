"""Key material: AES keys and IVs, and AES-256-GCM key rings, read from a reference
(reference: shared/reference/formats.md, section 5).

A reference is ``env:NAME`` (an environment variable), ``file:PATH`` (a file) or
``gcpsm:projects/P/secrets/S/versions/V`` (a Google Cloud Secret Manager secret version, read with the
workers' credentials; the client library is imported only when such a reference is read, and the
payload's CRC32C is checked).  Its text is stripped and decoded as hex or standard base64, given
explicitly or auto-detected (accepted only when exactly one of the two decodes to an allowed length).

:func:`load_secret` gives one key or IV; :func:`load_keyring` gives a key ring (JSON, one
:class:`RingKey` per key).  No exception message, log line or repr here contains key material:
:class:`~transforms.errors.KeyMaterialError` names the reference and the problem only.
"""

from __future__ import annotations

import binascii
import codecs
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from transforms.errors import KeyMaterialError
from transforms.key_lookalike import looks_like_key_material

__all__ = [
    "AES_KEY_LENGTHS",
    "GCM_KEY_LENGTH",
    "SECRET_MANAGER_PREFIX",
    "RingKey",
    "SecretBytes",
    "is_aware",
    "load_keyring",
    "load_secret",
    "looks_like_key_material",
    "pinned_reference",
    "reference_problem",
]

AES_KEY_LENGTHS = (16, 24, 32)
GCM_KEY_LENGTH = 32


class SecretBytes(bytes):
    """Key or IV bytes as :func:`load_secret` gives them: plain bytes to ciphers and comparisons, but
    whatever holds them (a NamedTuple, a dict, a DoFn after setup()) neither prints nor pickles them:
    the repr is ``<secret: N bytes>`` and pickling raises, as the decryptors do. Copies share it."""

    def __repr__(self) -> str:
        return f"<secret: {len(self)} bytes>"

    __str__ = __repr__

    def __reduce_ex__(self, protocol):
        raise TypeError("key material cannot be pickled; load it in DoFn.setup()")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


# --------------------------------------------------------------------------------------------------
# References: env:, file:, gcpsm:
# --------------------------------------------------------------------------------------------------
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REFERENCE_FORMS = "'env:NAME', 'file:PATH' or 'gcpsm:projects/P/secrets/S/versions/V'"


def reference_problem(ref: object, config_dir: str | None = None) -> str | None:
    """Why ``ref`` is not a key reference (None when it is one), in words that never repeat it: an
    invalid reference may be a secret pasted in its place. A relative ``file:`` path is looked for in
    ``config_dir`` when given (the config's folder, which the path is relative to), else here."""
    hidden = "the value is not shown"
    if not isinstance(ref, str):
        return f"not a key reference: use {REFERENCE_FORMS}"
    kind, sep, name = ref.partition(":")
    if ref.startswith(SECRET_MANAGER_PREFIX):
        return None if _secret_version_name(ref) else f"not a key reference: use '{_SECRET_MANAGER_FORM}' ({hidden})"
    if not sep or kind not in ("env", "file"):
        return f"not a key reference: use {REFERENCE_FORMS}, never the secret itself ({hidden})"
    # base64/hex in any pasted form, or long random text, that names nothing here: a variable name or
    # a path that does resolve is one, however random it reads (the launch loads every key anyway).
    if looks_like_key_material(name) and not _resolves(kind, name, config_dir):
        put = ("put the key in an environment variable, a file or a Secret Manager secret and reference it "
               f"({REFERENCE_FORMS})")
        if kind == "env" and not _ENV_NAME.fullmatch(name):
            return f"not a key reference: env:<hidden: looks like key material, not a variable name>; {put}"
        # a name too, whose variable is not set or whose file is not there (a new host): say both, hidden
        missing, remedy = (("no variable of that name is set", "set it where the job runs") if kind == "env" else
                           ("no file at that path", "put it there (a relative path is the config's)"))
        return (f"not a key reference: {kind}:<hidden: reads as key material, and {missing}>; "
                f"if it is a name, {remedy}; else {put}")
    if kind == "env" and not _ENV_NAME.fullmatch(name):
        return f"not a key reference: what follows 'env:' is not an environment variable name (letters, digits, _; {hidden})"
    if kind == "file" and not name.strip():
        return "not a key reference: 'file:' needs a path"
    return None


def _resolves(kind: str, name: str, config_dir: str | None = None) -> bool:
    """Whether ``env:name`` is a set variable or ``file:name`` an existing file (a relative one in
    ``config_dir`` when given)."""
    if kind == "env":
        return name in os.environ
    try:
        return os.path.isfile(os.path.join(config_dir, name) if config_dir else name)
    except (OSError, ValueError):  # not a path that can be looked at: it does not resolve
        return False


def _ref_label(ref: object) -> str:
    """The reference as it may be shown in messages (an unrecognised one may be an inline secret)."""
    return ref if reference_problem(ref) is None else "<secret reference>"


def _read_ref(ref: str) -> str:
    """Text behind an ``env:NAME`` / ``file:PATH`` reference, stripped."""
    label = _ref_label(ref)
    if isinstance(ref, str) and ref.startswith(SECRET_MANAGER_PREFIX):
        return _read_secret_manager(ref)
    if label == "<secret reference>":
        raise KeyMaterialError(reference_problem(ref))
    kind, _, name = ref.partition(":")
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise KeyMaterialError(f"{label}: environment variable is not set")
        value = value.removeprefix("\ufeff")  # set from a key file saved with the mark (KEY=$(cat key.txt))
    else:
        try:
            with open(name, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            raise KeyMaterialError(f"{label}: file not found") from None
        except OSError as exc:  # permission denied, is a directory, ...
            raise KeyMaterialError(f"{label}: cannot read file ({type(exc).__name__})") from None
        value = _secret_text(raw)
        if value is None:
            raise KeyMaterialError(f"{label}: content is not text (expected hex or base64)")
    value = value.strip()
    if not value:
        raise KeyMaterialError(f"{label}: value is empty")
    return value


# Google Cloud Secret Manager: ``gcpsm:projects/PROJECT/secrets/SECRET/versions/VERSION``. Resolved
# where the key is loaded -- on the workers, in DoFn.setup(), with the workers' service account (and
# once on the launcher by the preflight check). The client library is imported only here, so jobs
# that do not use it never load it.
SECRET_MANAGER_PREFIX = "gcpsm:"
_SECRET_MANAGER_FORM = "gcpsm:projects/PROJECT/secrets/SECRET/versions/VERSION"
_RESOURCE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:")


def _secret_version_name(ref: str) -> str | None:
    """``projects/P/secrets/S/versions/V`` from a well-formed reference, else None."""
    parts = ref[len(SECRET_MANAGER_PREFIX):].split("/")
    if len(parts) != 6 or parts[0::2] != ["projects", "secrets", "versions"]:
        return None
    if not all(p and set(p) <= _RESOURCE_CHARS for p in parts[1::2]):
        return None
    return "/".join(parts)


def _secret_manager_client():
    """A Secret Manager client (credentials: Application Default Credentials, i.e. the workers' service
    account on Dataflow). A function of its own so tests can replace it without any network."""
    from google.cloud import secretmanager  # lazy: google-cloud-secret-manager comes with apache-beam[gcp]

    return secretmanager.SecretManagerServiceClient()


def _read_secret_manager(ref: str) -> str:
    """Text of a Secret Manager secret version, stripped. Errors name the reference, never the value."""
    name = _secret_version_name(ref)
    if name is None:
        shown = ref if ref.startswith(SECRET_MANAGER_PREFIX + "projects/") else "gcpsm:<not shown>"
        raise KeyMaterialError(f"{shown}: Secret Manager reference must look like '{_SECRET_MANAGER_FORM}'")
    response = _access(ref, name)
    raw = bytes(response.payload.data)
    expected_crc = getattr(response.payload, "data_crc32c", None)
    if expected_crc:
        try:
            import google_crc32c
        except ImportError:  # pragma: no cover - installed with google-cloud-storage
            google_crc32c = None
        if google_crc32c is not None and int(google_crc32c.value(raw)) != int(expected_crc):
            raise KeyMaterialError(f"{ref}: secret payload failed its CRC32C check")
    value = _secret_text(raw)
    if value is None:
        raise KeyMaterialError(f"{ref}: content is not text (expected hex or base64)")
    value = value.strip()
    if not value:
        raise KeyMaterialError(f"{ref}: value is empty")
    return value


def _access(ref: str, name: str):
    """The Secret Manager response for the version ``name`` (of ``ref``). Errors name the reference only."""
    try:
        client = _secret_manager_client()
    except ImportError:
        raise KeyMaterialError(f"{ref}: google-cloud-secret-manager is not installed") from None
    except Exception as exc:  # noqa: BLE001 - e.g. no credentials: its message is not shown
        raise KeyMaterialError(f"{ref}: cannot create a Secret Manager client ({type(exc).__name__})") from None
    try:
        return client.access_secret_version(request={"name": name})
    except Exception as exc:  # noqa: BLE001 - NotFound, PermissionDenied, ...: only the type is shown
        raise KeyMaterialError(f"{ref}: cannot access the secret version ({type(exc).__name__})") from None


def pinned_reference(ref: str) -> str:
    """A ``gcpsm:`` reference to a version alias (``latest``) as the version it names now
    (``.../versions/7``); any other reference as it is. The launcher pins them before it checks the
    keys: the workers read them later, in DoFn.setup(), and a version added meanwhile (a key rotated
    while the job ran) gave later workers another key than the one checked."""
    name = _secret_version_name(ref) if isinstance(ref, str) and ref.startswith(SECRET_MANAGER_PREFIX) else None
    if name is None or name.rsplit("/", 1)[1].isdigit():
        return ref
    pinned = SECRET_MANAGER_PREFIX + str(getattr(_access(ref, name), "name", ""))
    if _secret_version_name(pinned) is None or not pinned.rsplit("/", 1)[1].isdigit():
        raise KeyMaterialError(f"{ref}: Secret Manager did not name the version it holds; give a version number")
    return pinned


def _secret_text(raw: bytes) -> str | None:
    """A key file's (or payload's) text, or None if it is not text. UTF-8, with or without the
    byte-order mark Windows editors write, or UTF-16 with its mark (Notepad's "Unicode"), whose text
    must then be printable ASCII lines (hex, base64 and a key ring's JSON are): a mark in front of binary bytes is no text."""
    try:
        if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            text = raw.decode("utf-16")
            return text if re.fullmatch(r"[\x20-\x7e\t\r\n]*", text) else None
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def _try_hex(text: str) -> bytes | None:
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        return None


def _try_base64(text: str) -> bytes | None:
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _decode_secret(text: str, encoding: str | None, lengths: tuple[int, ...], label: str) -> bytes:
    allowed = ", ".join(str(n) for n in lengths)
    if encoding not in (None, "hex", "base64"):
        raise ValueError(f"{label}: encoding must be 'hex', 'base64' or None, got {encoding!r}")
    if encoding is not None:
        value = _try_hex(text) if encoding == "hex" else _try_base64(text)
        if value is None:
            raise KeyMaterialError(f"{label}: value is not valid {encoding}")
        if len(value) not in lengths:
            raise KeyMaterialError(
                f"{label}: {encoding} value decodes to {len(value)} bytes; expected one of {allowed}"
            )
        return value
    candidates = [
        value for value in (_try_hex(text), _try_base64(text)) if value is not None and len(value) in lengths
    ]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise KeyMaterialError(
            f"{label}: value is valid both as hex and as base64 of an allowed length; "
            "set the encoding explicitly ('hex' or 'base64')"
        )
    raise KeyMaterialError(f"{label}: value is neither hex nor base64 of {allowed} bytes")


def load_secret(ref: str, encoding: str | None = None, lengths: tuple[int, ...] = AES_KEY_LENGTHS) -> bytes:
    """Load a key or IV from ``env:NAME``, ``file:PATH`` or ``gcpsm:projects/P/secrets/S/versions/V``
    (Secret Manager; the content is stripped).

    ``encoding`` is ``'hex'``, ``'base64'`` (standard alphabet, padded) or ``None`` to auto-detect: the
    value is accepted only when exactly one of hex/base64 decodes to an allowed length (a 32-digit hex
    AES-128 key is also 24-byte base64, so it needs ``encoding='hex'``).  Any problem raises
    :class:`KeyMaterialError`, whose message never contains the value.  The bytes come as
    :class:`SecretBytes`: never printed, never pickled.
    """
    label = _ref_label(ref)
    return SecretBytes(_decode_secret(_read_ref(ref), encoding, tuple(lengths), label))



# --------------------------------------------------------------------------------------------------
# AES-256-GCM key ring
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RingKey:
    """One key of a GCM key ring.  ``secret`` (32 bytes) is excluded from the repr."""

    id: int
    secret: bytes = field(repr=False)
    activates: datetime
    expires: datetime | None = None

    def __post_init__(self):
        if isinstance(self.id, bool) or not isinstance(self.id, int) or not 0 <= self.id < 2**32:
            raise KeyMaterialError("key id must be an integer in 0 .. 2**32-1")
        if not isinstance(self.secret, (bytes, bytearray)) or len(self.secret) != GCM_KEY_LENGTH:
            raise KeyMaterialError(f"key id {self.id}: secret must be {GCM_KEY_LENGTH} bytes (AES-256)")
        if isinstance(self.secret, bytearray):
            object.__setattr__(self, "secret", bytes(self.secret))
        if not is_aware(self.activates):
            raise KeyMaterialError(f"key id {self.id}: activates must be a timezone-aware datetime")
        if self.expires is not None:
            if not is_aware(self.expires):
                raise KeyMaterialError(f"key id {self.id}: expires must be a timezone-aware datetime or None")
            if self.expires <= self.activates:
                raise KeyMaterialError(f"key id {self.id}: expires must be later than activates")


def is_aware(value) -> bool:
    return isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None


def _parse_time(value, where: str) -> datetime:
    if not isinstance(value, str):
        raise KeyMaterialError(f"{where}: expected an ISO-8601 timestamp string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise KeyMaterialError(f"{where}: not an ISO-8601 timestamp") from None
    if not is_aware(parsed):
        raise KeyMaterialError(f"{where}: timestamp must carry a UTC offset (e.g. 'Z')")
    return parsed.astimezone(timezone.utc)


def load_keyring(ref: str) -> list[RingKey]:
    """Load a GCM key ring from ``file:PATH`` or ``env:NAME`` holding JSON::

        {"keys": [{"id": 1, "secret": "<base64 or hex of 32 bytes>",
                   "activates": "2026-01-01T00:00:00Z", "expires": "2027-01-01T00:00:00Z" or null}]}

    A key may add ``"encoding": "hex" | "base64"``; otherwise it is auto-detected.  Problems raise
    :class:`KeyMaterialError` naming the reference and the key's position/id, never a secret.
    """
    label = _ref_label(ref)
    text = _read_ref(ref)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyMaterialError(f"{label}: key ring is not valid JSON (line {exc.lineno}, column {exc.colno})") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise KeyMaterialError(f"{label}: key ring must be a JSON object with a non-empty 'keys' list")
    keys: list[RingKey] = []
    seen: set[int] = set()
    for position, entry in enumerate(entries):
        where = f"{label}: keys[{position}]"
        if not isinstance(entry, dict):
            raise KeyMaterialError(f"{where}: expected an object")
        key_id = entry.get("id")
        if isinstance(key_id, bool) or not isinstance(key_id, int) or not 0 <= key_id < 2**32:
            raise KeyMaterialError(f"{where}: 'id' must be an integer in 0 .. 2**32-1")
        where = f"{where} (id {key_id})"
        if key_id in seen:
            raise KeyMaterialError(f"{where}: duplicate key id")
        seen.add(key_id)
        secret_text = entry.get("secret")
        if not isinstance(secret_text, str) or not secret_text.strip():
            raise KeyMaterialError(f"{where}: 'secret' must be a non-empty hex or base64 string")
        encoding = entry.get("encoding")
        if encoding not in (None, "hex", "base64"):
            raise KeyMaterialError(f"{where}: 'encoding' must be 'hex' or 'base64'")
        secret = _decode_secret(secret_text.strip(), encoding, (GCM_KEY_LENGTH,), f"{where} secret")
        activates = _parse_time(entry.get("activates"), f"{where} activates")
        expires_raw = entry.get("expires")
        expires = None if expires_raw is None else _parse_time(expires_raw, f"{where} expires")
        if expires is not None and expires <= activates:
            raise KeyMaterialError(f"{where}: expires must be later than activates")
        keys.append(RingKey(id=key_id, secret=secret, activates=activates, expires=expires))
    return keys

