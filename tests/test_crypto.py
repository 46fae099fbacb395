"""Tests for transforms/crypto.py (AES-CBC batch vs per-record, AES-256-GCM key ring) and
transforms/secrets.py (key and key ring loading)."""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import pickle
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cbc_reference import decrypt_cbc_per_record
from transforms import cbc_kernel, crypto
from transforms.crypto import CbcDecryptor, GcmDecryptor, decrypt_cbc_batch
from transforms.encrypt import encrypt_cbc, encrypt_gcm
from transforms.errors import KeyMaterialError
from transforms.outcomes import Reason
from transforms.secrets import RingKey, load_keyring, load_secret

DECRYPT_FAILED, EXPIRED_KEY, INVALID_PLAINTEXT, KEY_NOT_ACTIVE, UNKNOWN_KEY = (
    Reason.DECRYPT_FAILED, Reason.EXPIRED_KEY, Reason.INVALID_PLAINTEXT, Reason.KEY_NOT_ACTIVE, Reason.UNKNOWN_KEY)

# NIST SP 800-38A appendix F.2 keys and IV.
KEY128 = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
KEY192 = bytes.fromhex("8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b")
KEY256 = bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
IV = bytes(range(16))
KEYS = {128: KEY128, 192: KEY192, 256: KEY256}

EMAILS = [
    "alice@example.com",
    "b@x.io",
    "exactly16bytes@x",  # 16 bytes: a whole block of padding follows
    "Zoë.Müller@exämple.de",
    "very.long.address.with.many.parts+tag@subdomain.example.co.uk",
    "nul\x00inside@example.com",
    "中文@例子.公司",
    "x",
]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _cbc_raw(blocks: bytes, key: bytes = KEY256, iv: bytes = IV) -> str:
    """Token for already-padded (or deliberately mis-padded) plaintext blocks."""
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return _b64(enc.update(blocks) + enc.finalize())


def _flip(token: str, index: int, mask: int = 0x01) -> str:
    raw = bytearray(base64.b64decode(token))
    raw[index] ^= mask
    return _b64(bytes(raw))


def _both(tokens, key=KEY256, iv=IV):
    """Run both implementations; they must agree exactly; return (plaintexts, reasons) as lists."""
    plain_b, reason_b = decrypt_cbc_batch(tokens, key, iv)
    plain_r, reason_r = decrypt_cbc_per_record(tokens, key, iv)
    assert plain_b.type == pa.string() and reason_b.type == pa.string()
    assert plain_r.type == pa.string() and reason_r.type == pa.string()
    assert plain_b.equals(plain_r)
    assert reason_b.equals(reason_r)
    plain_b.validate(full=True)
    reason_b.validate(full=True)
    return plain_b.to_pylist(), reason_b.to_pylist()


# --------------------------------------------------------------------------------------------------
# AES-CBC
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [128, 192, 256])
def test_cbc_round_trip(bits):
    key = KEYS[bits]
    tokens = encrypt_cbc(EMAILS, key, IV)
    plains, reasons = _both(pa.array(tokens), key)
    assert plains == EMAILS
    assert reasons == [None] * len(EMAILS)


@pytest.mark.parametrize(
    "bits, first_block",
    [
        (128, "7649abac8119b246cee98e9b12e9197d"),
        (192, "4f021db243bc633d7178183a9fa071e8"),
        (256, "f58c4c04d6e5f1ba779eabfb5f7bfbd6"),
    ],
)
def test_encrypt_cbc_known_answer(bits, first_block):
    # NIST SP 800-38A F.2.1/F.2.3/F.2.5, first block; PKCS#7 then adds a full block of 0x10.
    block = bytes.fromhex("6bc1bee22e409f96e93d7e117393172a")
    (token,) = encrypt_cbc([block], KEYS[bits], IV)
    raw = base64.b64decode(token)
    assert len(raw) == 32
    assert raw[:16].hex() == first_block
    assert token == _cbc_raw(block + b"\x10" * 16, KEYS[bits])


def test_encrypt_cbc_matches_per_record_cipher():
    rng = random.Random(7)
    plaintexts = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 70))) for _ in range(300)]
    expected = []
    for pt in plaintexts:
        n_pad = 16 - len(pt) % 16
        expected.append(_cbc_raw(pt + bytes([n_pad]) * n_pad, KEY192))
    assert encrypt_cbc(plaintexts, KEY192, IV) == expected
    assert encrypt_cbc([], KEY192, IV) == []


def _mixed_batch():
    """(token, expected plaintext, expected reason) rows covering every failure mode."""
    valid = encrypt_cbc(EMAILS, KEY256, IV)
    two_blocks = encrypt_cbc(["alice.smith@example.com"], KEY256, IV)[0]  # 23 bytes, pad 9
    seventeen = _b64(bytes(range(17)))
    rows = [
        (valid[0], EMAILS[0], None),
        (two_blocks, "alice.smith@example.com", None),
        # tampering: a byte of the last block -> the whole last block is garbage -> padding error
        (_flip(two_blocks, 20), None, DECRYPT_FAILED),
        # the pad byte's twin in the previous block: pad 9 becomes 8, bytes before it still 9
        (_flip(two_blocks, 15), None, DECRYPT_FAILED),
        # a byte of the first block -> first plaintext block is garbage (not UTF-8), padding intact
        (_flip(two_blocks, 0), None, INVALID_PLAINTEXT),
        (valid[1], EMAILS[1], None),
        # wrong padding, well-formed ciphertext
        (_cbc_raw(b"A" * 15 + b"\x00"), None, DECRYPT_FAILED),  # pad 0
        (_cbc_raw(b"A" * 15 + b"\x11"), None, DECRYPT_FAILED),  # pad 17
        (_cbc_raw(b"A" * 14 + b"\x03\x02"), None, DECRYPT_FAILED),  # bytes before it differ
        (_cbc_raw(b"A" * 16 + b"B" * 13 + b"\x02\x03\x03"), None, DECRYPT_FAILED),
        (_cbc_raw(b"A" * 16 + b"\x10" * 16), "A" * 16, None),  # a whole block of padding
        (_cbc_raw(b"\x10" * 16), None, INVALID_PLAINTEXT),  # empty plaintext
        # bad base64 / bad length
        ("not base64!", None, DECRYPT_FAILED),
        ("QUJD=QUJ", None, DECRYPT_FAILED),  # misplaced padding, length multiple of 4
        ("QUJD!!!!", None, DECRYPT_FAILED),
        (valid[2].rstrip("="), None, DECRYPT_FAILED),  # padding stripped
        (valid[2][:20] + "\n" + valid[2][20:], None, DECRYPT_FAILED),  # embedded newline
        (" " + valid[2], None, DECRYPT_FAILED),  # leading space
        (valid[2][:-4] + "é===", None, DECRYPT_FAILED),  # non-ASCII
        (base64.urlsafe_b64encode(b"\xfb\xff" * 8).decode(), None, DECRYPT_FAILED),  # URL-safe alphabet
        ("", None, DECRYPT_FAILED),  # empty string (= 0-byte ciphertext)
        (None, None, DECRYPT_FAILED),
        (_b64(b""), None, DECRYPT_FAILED),
        (seventeen, None, DECRYPT_FAILED),  # 17-byte ciphertext
        (_b64(bytes(15)), None, DECRYPT_FAILED),
        ("QUJD", None, DECRYPT_FAILED),  # 3 bytes
        # plaintext not UTF-8
        (encrypt_cbc([b"\xff\xfe@example.com"], KEY256, IV)[0], None, INVALID_PLAINTEXT),
        (encrypt_cbc([b"\xed\xa0\x80@surrogate.com"], KEY256, IV)[0], None, INVALID_PLAINTEXT),
        (encrypt_cbc([b"\xc0\xafoverlong"], KEY256, IV)[0], None, INVALID_PLAINTEXT),
        (encrypt_cbc([b"truncated\xe2\x82"], KEY256, IV)[0], None, INVALID_PLAINTEXT),
    ]
    rows += [(token, email, None) for token, email in zip(valid[3:], EMAILS[3:])]
    rows.append((valid[0], EMAILS[0], None))
    return rows


def test_cbc_batch_equals_per_record_on_mixed_batch():
    rows = _mixed_batch()
    plains, reasons = _both(pa.array([t for t, _, _ in rows], type=pa.string()))
    assert plains == [p for _, p, _ in rows]
    assert reasons == [r for _, _, r in rows]


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 1 << 14])
def test_cbc_batch_chunking_and_input_shapes(monkeypatch, chunk_rows):
    monkeypatch.setattr(crypto, "_CHUNK_ROWS", chunk_rows)
    rows = _mixed_batch()
    tokens = [t for t, _, _ in rows]
    expected = ([p for _, p, _ in rows], [r for _, _, r in rows])
    decryptor = CbcDecryptor(KEY256, IV)
    arr = pa.array(["padding-row"] * 5 + tokens + ["tail"] * 4, type=pa.string())
    shapes = {
        "list": tokens,
        "array": pa.array(tokens, type=pa.string()),
        "sliced": arr.slice(5, len(tokens)),
        "chunked": pa.chunked_array([pa.array(tokens[:9]), pa.array(tokens[9:])], type=pa.string()),
        "large_string": pa.array(tokens, type=pa.large_string()),
        "binary": pa.array([None if t is None else t.encode() for t in tokens], type=pa.binary()),
        "string_view": pa.array(tokens, type=pa.string_view()),
        "large_binary": pa.array([None if t is None else t.encode() for t in tokens], type=pa.large_binary()),
        "binary_view": pa.array([None if t is None else t.encode() for t in tokens], type=pa.binary_view()),
        "list_of_bytes": [None if t is None else t.encode() for t in tokens],
        "dictionary": pa.array(tokens, type=pa.string()).dictionary_encode(),
    }
    for name, value in shapes.items():
        plain, reason = decryptor.decrypt(value)
        assert (plain.to_pylist(), reason.to_pylist()) == expected, name
        assert plain.type == pa.string() and reason.type == pa.string(), name
        plain.validate(full=True)


def test_cbc_rows_outside_the_bulk_path_follow_the_strict_stdlib_decoder():
    # Rows the vectorized base64 path does not take (length not a multiple of 4, stray characters, extra
    # '=' after a complete quad, which strict a2b_base64 tolerates) are decoded one by one exactly like
    # the reference does.
    email = "forty.characters.long.address@example.eu"
    long_token = encrypt_cbc([email], KEY256, IV)[0]  # 48-byte ciphertext: 64 characters, no '='
    assert (len(email), len(long_token), long_token.count("=")) == (40, 64, 0)
    suffixes = ["".join(p) for n in range(5) for p in itertools.product("=A! ", repeat=n)]
    tokens = [long_token + x for x in suffixes] + [x + long_token for x in suffixes] + [long_token]
    plains, reasons = _both(pa.array(tokens, type=pa.string()))
    expected = []
    for token in tokens:
        try:
            decodes = len(binascii.a2b_base64(token, strict_mode=True)) == 48
        except (binascii.Error, ValueError):
            decodes = False
        expected.append((email, None) if decodes else (None, DECRYPT_FAILED))
    assert list(zip(plains, reasons)) == expected
    assert (plains[0], plains[-1]) == (email, email)
    assert plains.count(email) > 2  # a few lenient forms are accepted as well


def test_cbc_empty_and_all_null_inputs():
    for value in ([], pa.array([], type=pa.string()), pa.chunked_array([], type=pa.string())):
        plain, reason = decrypt_cbc_batch(value, KEY128, IV)
        assert (plain.type, len(plain), reason.type, len(reason)) == (pa.string(), 0, pa.string(), 0)
    plain, reason = decrypt_cbc_batch(pa.nulls(3), KEY128, IV)
    assert plain.to_pylist() == [None, None, None]
    assert reason.to_pylist() == [DECRYPT_FAILED] * 3


def test_cbc_batch_equals_per_record_fuzz():
    rng = random.Random(20260101)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    valid = encrypt_cbc([f"user{i}@example{i % 7}.com" * (1 + i % 3) for i in range(400)], KEY192, IV)
    tokens = []
    for i in range(2000):
        kind = rng.randrange(8)
        if kind <= 2:
            tokens.append(valid[i % len(valid)])
        elif kind == 3:  # random ciphertext of random length
            tokens.append(_b64(bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 15, 16, 17, 32, 48, 50])))))
        elif kind == 4:  # one character replaced
            t = list(valid[i % len(valid)])
            t[rng.randrange(len(t))] = rng.choice(alphabet + "=!- \n")
            tokens.append("".join(t))
        elif kind == 5:  # truncated
            t = valid[i % len(valid)]
            tokens.append(t[: rng.randrange(len(t))])
        elif kind == 6:  # ciphertext byte flipped
            t = valid[i % len(valid)]
            tokens.append(_flip(t, rng.randrange(len(base64.b64decode(t))), 1 << rng.randrange(8)))
        else:
            tokens.append(None)
    plains, reasons = _both(pa.array(tokens, type=pa.string()), KEY192)
    counts = {r: reasons.count(r) for r in (None, DECRYPT_FAILED, INVALID_PLAINTEXT)}
    assert sum(counts.values()) == len(tokens)
    assert counts[None] >= 750  # the 3/8 untouched rows, at least
    assert counts[INVALID_PLAINTEXT] > 0 and counts[DECRYPT_FAILED] > 0
    for token, plain in zip(tokens, plains):
        if token in valid:
            assert plain is not None


def test_cbc_wrong_key_mostly_fails():
    emails = [f"person{i}@example.com" for i in range(2000)]
    tokens = encrypt_cbc(emails, KEY256, IV)
    wrong_key = bytes(range(32))
    plains, reasons = _both(pa.array(tokens), wrong_key)
    assert all(p is None for p in plains)
    assert reasons.count(DECRYPT_FAILED) == 1993
    assert reasons.count(INVALID_PLAINTEXT) == 7  # padding happened to be valid: garbage, not UTF-8
    # a wrong IV only XORs the first block with (IV ^ wrong IV): padding intact, first 16 bytes altered
    plains, reasons = _both(pa.array(tokens), KEY256, bytes(16))
    assert reasons == [None] * 2000
    assert plains == [bytes(a ^ b for a, b in zip(e.encode(), IV)).decode() + e[16:] for e in emails]
    assert plains[0] == "pdppkk6Gmqkf|ak!com"


def test_cbc_key_and_iv_validation_and_no_leaks():
    with pytest.raises(KeyMaterialError) as exc:
        CbcDecryptor(b"k" * 20, IV)
    assert str(exc.value) == "AES key must be 16, 24 or 32 bytes, got 20"
    with pytest.raises(KeyMaterialError) as exc:
        decrypt_cbc_per_record(["x"], KEY128, b"\x00" * 8)
    assert str(exc.value) == "CBC IV must be 16 bytes, got 8"
    with pytest.raises(TypeError):
        encrypt_cbc(["a"], "not bytes", IV)
    with pytest.raises(TypeError):
        encrypt_cbc([None], KEY128, IV)
    decryptor = CbcDecryptor(KEY192, IV)
    assert repr(decryptor) == "CbcDecryptor(aes_192)"
    with pytest.raises(TypeError) as exc:
        pickle.dumps(decryptor)
    assert KEY192.hex() not in str(exc.value)
    with pytest.raises(TypeError):
        decryptor.decrypt("a single string")
    with pytest.raises(TypeError):
        decryptor.decrypt(pa.array([1, 2]))


# --------------------------------------------------------------------------------------------------
# AES-256-GCM key ring
# --------------------------------------------------------------------------------------------------
UTC = timezone.utc
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = RingKey(1, bytes([1]) * 32, datetime(2025, 1, 1, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC))
CURRENT = RingKey(2, bytes([2]) * 32, datetime(2026, 3, 1, tzinfo=UTC), None)
EXPIRED = RingKey(3, bytes([3]) * 32, datetime(2024, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))
FUTURE = RingKey(4, bytes([4]) * 32, datetime(2026, 9, 1, tzinfo=UTC), None)
RING = [OLD, CURRENT, EXPIRED, FUTURE]
NOT_IN_RING = RingKey(99, bytes([9]) * 32, datetime(2020, 1, 1, tzinfo=UTC))


def test_ring_key_repr_hides_secret():
    key = RingKey(7, b"\xab" * 32, datetime(2026, 1, 1, tzinfo=UTC))
    assert repr(key) == (
        "RingKey(id=7, activates=datetime.datetime(2026, 1, 1, 0, 0, tzinfo=datetime.timezone.utc), expires=None)"
    )
    assert "ab" * 4 not in repr(key) and "secret" not in repr(key)
    assert str(key) == repr(key)


def test_ring_key_validation():
    with pytest.raises(KeyMaterialError) as exc:
        RingKey(1, b"\x07" * 16, NOW)
    assert str(exc.value) == "key id 1: secret must be 32 bytes (AES-256)"
    with pytest.raises(KeyMaterialError):
        RingKey(-1, b"\x07" * 32, NOW)
    with pytest.raises(KeyMaterialError):
        RingKey(1, b"\x07" * 32, datetime(2026, 1, 1))  # naive
    with pytest.raises(KeyMaterialError):
        RingKey(1, b"\x07" * 32, NOW, NOW)  # expires == activates
    with pytest.raises(ValueError):
        GcmDecryptor(RING, datetime(2026, 6, 1))  # naive clock
    with pytest.raises(KeyMaterialError):
        GcmDecryptor([OLD, OLD], NOW)


def test_encrypt_gcm_known_answer_and_layout():
    zero_key = RingKey(0x01020304, bytes(32), datetime(2020, 1, 1, tzinfo=UTC))
    # McGrew & Viega GCM test cases 13 and 14 (256-bit zero key, zero 96-bit IV).
    tokens = encrypt_gcm([b"", bytes(16)], zero_key, nonces=[bytes(12), bytes(12)])
    assert base64.b64decode(tokens[0]).hex() == "01020304" + "00" * 12 + "530f8afbc74536b9a963b4f1c4cb738b"
    assert base64.b64decode(tokens[1]).hex() == (
        "01020304" + "00" * 12 + "cea7403d4d606b6e074ec5d3baf39d18" + "d0d1c8a799996bf0265b98b5d48ab919"
    )
    plains, reasons = GcmDecryptor([zero_key], NOW).decrypt(tokens)
    assert plains.to_pylist() == [None, "\x00" * 16]
    assert reasons.to_pylist() == [INVALID_PLAINTEXT, None]
    # random nonces by default: two encryptions differ, both decrypt
    a, b = encrypt_gcm(["same@example.com"] * 2, CURRENT)
    assert a != b
    assert GcmDecryptor(RING, NOW).decrypt([a, b])[0].to_pylist() == ["same@example.com"] * 2
    with pytest.raises(ValueError):
        encrypt_gcm(["a", "b"], CURRENT, nonces=[bytes(12)])
    with pytest.raises(ValueError):
        encrypt_gcm(["a"], CURRENT, nonces=[bytes(8)])


def test_gcm_key_ring_statuses():
    nonce = bytes(range(12))
    current = encrypt_gcm(["now@example.com"], CURRENT, [nonce])[0]
    tampered_ct = _flip(current, 16)  # first ciphertext byte
    tampered_tag = _flip(current, -1)
    rows = [
        (current, "now@example.com", None),
        (encrypt_gcm(["old@example.com"], OLD, [nonce])[0], "old@example.com", None),
        (encrypt_gcm(["gone@example.com"], EXPIRED, [nonce])[0], None, EXPIRED_KEY),
        (encrypt_gcm(["soon@example.com"], FUTURE, [nonce])[0], None, KEY_NOT_ACTIVE),
        (encrypt_gcm(["who@example.com"], NOT_IN_RING, [nonce])[0], None, UNKNOWN_KEY),
        (tampered_ct, None, DECRYPT_FAILED),
        (tampered_tag, None, DECRYPT_FAILED),
        # key id 2 -> 3 (the expired key): the key's status is checked before the tag
        (_flip(current, 3), None, EXPIRED_KEY),
        (_flip(current, 0), None, UNKNOWN_KEY),  # key id 0x01000002
        (_b64(bytes(31)), None, DECRYPT_FAILED),  # too short
        ("@@not base64@@", None, DECRYPT_FAILED),
        ("", None, DECRYPT_FAILED),
        (None, None, DECRYPT_FAILED),
        (encrypt_gcm([b"\xff\xfe"], CURRENT, [nonce])[0], None, INVALID_PLAINTEXT),
        (encrypt_gcm([""], CURRENT, [nonce])[0], None, INVALID_PLAINTEXT),
        (encrypt_gcm(["Zoë@exämple.de"], CURRENT, [nonce])[0], "Zoë@exämple.de", None),
    ]
    plains, reasons = GcmDecryptor(RING, NOW).decrypt(pa.array([t for t, _, _ in rows], type=pa.string()))
    assert plains.to_pylist() == [p for _, p, _ in rows]
    assert reasons.to_pylist() == [r for _, _, r in rows]
    assert plains.type == pa.string() and reasons.type == pa.string()


def test_gcm_decryptor_repr_and_pickling():
    decryptor = GcmDecryptor(RING, NOW)
    assert repr(decryptor) == "GcmDecryptor(key_ids=[1, 2, 3, 4], now=2026-06-01T12:00:00+00:00)"
    with pytest.raises(TypeError):
        pickle.dumps(decryptor)
    assert RingKey(5, bytearray(32), NOW).secret == bytes(32)


def test_gcm_clock_boundaries():
    token = encrypt_gcm(["edge@example.com"], OLD, [bytes(12)])
    at = lambda now: GcmDecryptor([OLD], now).decrypt(token)[1].to_pylist()  # noqa: E731
    assert at(OLD.activates - timedelta(microseconds=1)) == [KEY_NOT_ACTIVE]
    assert at(OLD.activates) == [None]
    assert at(OLD.expires - timedelta(microseconds=1)) == [None]
    assert at(OLD.expires) == [EXPIRED_KEY]
    # the clock may be in any timezone
    assert at(OLD.expires.astimezone(timezone(timedelta(hours=-5)))) == [EXPIRED_KEY]


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_keyring_from_file_and_env(tmp_path, monkeypatch):
    secret1, secret2 = bytes(range(32)), bytes(range(32, 64))
    doc = {
        "keys": [
            {"id": 1, "secret": _b64(secret1), "activates": "2026-01-01T00:00:00Z", "expires": "2027-01-01T00:00:00Z"},
            {"id": 2, "secret": secret2.hex(), "activates": "2026-06-01T02:00:00+02:00", "expires": None},
            {"id": 3, "secret": secret2.hex().upper(), "encoding": "hex", "activates": "2026-07-01T00:00:00Z"},
        ]
    }
    path = _write(tmp_path, "ring.json", json.dumps(doc) + "\n")
    monkeypatch.setenv("TEST_KEYRING", json.dumps(doc))
    for ref in (f"file:{path}", "env:TEST_KEYRING"):
        ring = load_keyring(ref)
        assert ring == [
            RingKey(1, secret1, datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
            RingKey(2, secret2, datetime(2026, 6, 1, tzinfo=UTC), None),
            RingKey(3, secret2, datetime(2026, 7, 1, tzinfo=UTC), None),
        ]
    token = encrypt_gcm(["ring@example.com"], ring[1], [bytes(12)])
    assert GcmDecryptor(ring, NOW).decrypt(token)[0].to_pylist() == ["ring@example.com"]


@pytest.mark.parametrize(
    "doc, message",
    [
        ("{not json", "key ring is not valid JSON (line 1, column 2)"),
        ('{"keys": []}', "key ring must be a JSON object with a non-empty 'keys' list"),
        ('[1, 2]', "key ring must be a JSON object with a non-empty 'keys' list"),
        (
            '{"keys": [{"id": 1, "secret": "SECRETVALUE", "activates": "2026-01-01T00:00:00Z"}]}',
            "keys[0] (id 1) secret: value is neither hex nor base64 of 32 bytes",
        ),
        (
            '{"keys": [{"id": 1, "secret": "%s", "activates": "2026-01-01T00:00:00Z"}]}' % ("ab" * 16),
            "keys[0] (id 1) secret: value is neither hex nor base64 of 32 bytes",
        ),
        (
            '{"keys": [{"id": 1, "secret": "%s", "activates": "2026-01-01T00:00:00"}]}' % ("ab" * 32),
            "keys[0] (id 1) activates: timestamp must carry a UTC offset (e.g. 'Z')",
        ),
        (
            '{"keys": [{"id": 1, "secret": "%s", "activates": "2026-01-01T00:00:00Z", "expires": "2025-01-01T00:00:00Z"}]}'
            % ("ab" * 32),
            "keys[0] (id 1): expires must be later than activates",
        ),
        (
            '{"keys": [{"id": 1, "secret": "%s", "activates": "2026-01-01T00:00:00Z"},'
            ' {"id": 1, "secret": "%s", "activates": "2026-01-01T00:00:00Z"}]}' % ("ab" * 32, "cd" * 32),
            "keys[1] (id 1): duplicate key id",
        ),
        ('{"keys": [{"id": "1", "secret": "x", "activates": "x"}]}', "keys[0]: 'id' must be an integer in 0 .. 2**32-1"),
        ('{"keys": ["k"]}', "keys[0]: expected an object"),
        ('{"keys": [{"id": 5, "activates": "2026-01-01T00:00:00Z"}]}',
         "keys[0] (id 5): 'secret' must be a non-empty hex or base64 string"),
        ('{"keys": [{"id": 5, "secret": "%s", "encoding": "raw", "activates": "2026-01-01T00:00:00Z"}]}' % ("ab" * 32),
         "keys[0] (id 5): 'encoding' must be 'hex' or 'base64'"),
        ('{"keys": [{"id": 5, "secret": "%s", "activates": 1767225600}]}' % ("ab" * 32),
         "keys[0] (id 5) activates: expected an ISO-8601 timestamp string"),
        ('{"keys": [{"id": 5, "secret": "%s", "activates": "tomorrow"}]}' % ("ab" * 32),
         "keys[0] (id 5) activates: not an ISO-8601 timestamp"),
        ('{"keys": [{"id": 5, "secret": "%s", "encoding": "base64", "activates": "2026-01-01T00:00:00Z"}]}' % ("ab" * 32),
         "keys[0] (id 5) secret: base64 value decodes to 48 bytes; expected one of 32"),
    ],
)
def test_load_keyring_errors(tmp_path, doc, message):
    path = _write(tmp_path, "ring.json", doc)
    with pytest.raises(KeyMaterialError) as exc:
        load_keyring(f"file:{path}")
    assert str(exc.value) == f"file:{path}: {message}"
    for secret in ("SECRETVALUE", "ab" * 16, "cd" * 32):
        assert secret not in str(exc.value)
    assert exc.value.__cause__ is None


def test_load_keyring_missing():
    with pytest.raises(KeyMaterialError) as exc:
        load_keyring("env:AUDIENCE_SYNC_TEST_NO_SUCH_RING")
    assert str(exc.value) == "env:AUDIENCE_SYNC_TEST_NO_SUCH_RING: environment variable is not set"


# --------------------------------------------------------------------------------------------------
# load_secret
# --------------------------------------------------------------------------------------------------
KEY256_B64 = _b64(KEY256)


def test_load_secret_explicit_encodings(monkeypatch, tmp_path):
    monkeypatch.setenv("T_KEY_HEX", KEY256.hex())
    monkeypatch.setenv("T_KEY_B64", KEY256_B64)
    assert load_secret("env:T_KEY_HEX", "hex") == KEY256
    assert load_secret("env:T_KEY_B64", "base64") == KEY256
    path = _write(tmp_path, "key.txt", f"  {KEY128.hex().upper()}\n")
    assert load_secret(f"file:{path}", "hex") == KEY128
    iv_path = _write(tmp_path, "iv.txt", _b64(IV) + "\n")
    assert load_secret(f"file:{iv_path}", "base64", lengths=(16,)) == IV


def test_load_secret_auto_detect(monkeypatch):
    monkeypatch.setenv("T_KEY_HEX", KEY256.hex())  # 64 hex digits: as base64 it would be 48 bytes
    monkeypatch.setenv("T_KEY_B64", KEY256_B64)  # 44 characters: not hex
    monkeypatch.setenv("T_KEY192_HEX", KEY192.hex())
    monkeypatch.setenv("T_IV_HEX", IV.hex())  # 32 hex digits; as base64: 24 bytes, not an IV length
    assert load_secret("env:T_KEY_HEX") == KEY256
    assert load_secret("env:T_KEY_B64") == KEY256
    assert load_secret("env:T_KEY192_HEX") == KEY192
    assert load_secret("env:T_IV_HEX", lengths=(16,)) == IV


def _assert_no_leak(exc: BaseException, value: str, raw: bytes | None = None) -> None:
    text = str(exc) + repr(exc) + repr(exc.args)
    assert value not in text
    if raw is not None:
        assert raw.hex() not in text.lower() and _b64(raw) not in text and repr(raw) not in text
    assert exc.__cause__ is None


def test_load_secret_ambiguous(monkeypatch):
    # 32 hex digits: 16 bytes as hex AND 24 bytes as base64 -- both valid AES key lengths
    monkeypatch.setenv("T_KEY128_HEX", KEY128.hex())
    with pytest.raises(KeyMaterialError) as exc:
        load_secret("env:T_KEY128_HEX")
    assert str(exc.value) == (
        "env:T_KEY128_HEX: value is valid both as hex and as base64 of an allowed length; "
        "set the encoding explicitly ('hex' or 'base64')"
    )
    _assert_no_leak(exc.value, KEY128.hex(), KEY128)
    assert load_secret("env:T_KEY128_HEX", "hex") == KEY128
    assert load_secret("env:T_KEY128_HEX", "base64") == base64.b64decode(KEY128.hex())


def test_load_secret_missing_env_and_file(monkeypatch, tmp_path):
    monkeypatch.delenv("T_KEY_MISSING", raising=False)
    with pytest.raises(KeyMaterialError) as exc:
        load_secret("env:T_KEY_MISSING")
    assert str(exc.value) == "env:T_KEY_MISSING: environment variable is not set"
    missing = tmp_path / "nope.key"
    with pytest.raises(KeyMaterialError) as exc:
        load_secret(f"file:{missing}")
    assert str(exc.value) == f"file:{missing}: file not found"
    assert exc.value.__cause__ is None
    with pytest.raises(KeyMaterialError) as exc:
        load_secret(f"file:{tmp_path}")
    assert str(exc.value) == f"file:{tmp_path}: cannot read file (IsADirectoryError)"
    monkeypatch.setenv("T_KEY_EMPTY", "  \n")
    with pytest.raises(KeyMaterialError) as exc:
        load_secret("env:T_KEY_EMPTY")
    assert str(exc.value) == "env:T_KEY_EMPTY: value is empty"


def test_load_secret_wrong_length_and_garbage(monkeypatch, tmp_path):
    short = bytes(range(20))
    monkeypatch.setenv("T_KEY_SHORT_HEX", short.hex())
    monkeypatch.setenv("T_KEY_SHORT_B64", _b64(short))
    monkeypatch.setenv("T_KEY_GARBAGE", "correct horse battery staple")
    cases = [
        ("env:T_KEY_SHORT_HEX", "hex", "env:T_KEY_SHORT_HEX: hex value decodes to 20 bytes; expected one of 16, 24, 32"),
        ("env:T_KEY_SHORT_B64", "base64",
         "env:T_KEY_SHORT_B64: base64 value decodes to 20 bytes; expected one of 16, 24, 32"),
        ("env:T_KEY_SHORT_HEX", None, "env:T_KEY_SHORT_HEX: value is neither hex nor base64 of 16, 24, 32 bytes"),
        ("env:T_KEY_SHORT_B64", None, "env:T_KEY_SHORT_B64: value is neither hex nor base64 of 16, 24, 32 bytes"),
        ("env:T_KEY_GARBAGE", "hex", "env:T_KEY_GARBAGE: value is not valid hex"),
        ("env:T_KEY_GARBAGE", "base64", "env:T_KEY_GARBAGE: value is not valid base64"),
        ("env:T_KEY_GARBAGE", None, "env:T_KEY_GARBAGE: value is neither hex nor base64 of 16, 24, 32 bytes"),
    ]
    for ref, encoding, message in cases:
        with pytest.raises(KeyMaterialError) as exc:
            load_secret(ref, encoding)
        assert str(exc.value) == message
        _assert_no_leak(exc.value, short.hex(), short)
        _assert_no_leak(exc.value, "correct horse")
    with pytest.raises(KeyMaterialError) as exc:
        load_secret("env:T_KEY_SHORT_HEX", lengths=(16,))
    assert str(exc.value) == "env:T_KEY_SHORT_HEX: value is neither hex nor base64 of 16 bytes"
    binary = tmp_path / "raw.key"
    binary.write_bytes(b"\xff\xfe" + bytes(30))
    with pytest.raises(KeyMaterialError) as exc:
        load_secret(f"file:{binary}")
    assert str(exc.value) == f"file:{binary}: content is not text (expected hex or base64)"


def test_a_key_file_saved_with_a_byte_order_mark_loads_its_key(tmp_path):
    """Windows editors save text as UTF-8 with a BOM, or as UTF-16 ("Unicode"): the file still holds
    the key's hex. It failed 'value is not valid hex' (UTF-8 BOM) or 'content is not text' (UTF-16),
    a file whose visible content is right."""
    for name, raw in [("bom8.key", b"\xef\xbb\xbf" + KEY256.hex().encode() + b"\r\n"),
                      ("utf16le.key", (KEY256.hex() + "\r\n").encode("utf-16")),
                      ("utf16be.key", b"\xfe\xff" + KEY256.hex().encode("utf-16-be"))]:
        path = tmp_path / name
        path.write_bytes(raw)
        assert load_secret(f"file:{path}", "hex") == KEY256, name
        assert load_secret(f"file:{path}") == KEY256, name
    ring = tmp_path / "ring.json"  # a key ring's JSON, on several lines
    ring.write_bytes(json.dumps({"keys": [{"id": 7, "secret": KEY256.hex(), "activates": "2026-01-01T00:00:00Z"}]},
                                indent=2).encode("utf-16"))
    assert [(k.id, k.secret) for k in load_keyring(f"file:{ring}")] == [(7, KEY256)]
    binary = tmp_path / "utf16-garbage.key"  # a BOM in front of bytes that are no text stays refused
    binary.write_bytes(b"\xff\xfe" + bytes(range(1, 31)))
    with pytest.raises(KeyMaterialError) as exc:
        load_secret(f"file:{binary}")
    assert str(exc.value) == f"file:{binary}: content is not text (expected hex or base64)"


def test_an_env_value_taken_from_a_key_file_with_a_byte_order_mark_loads_its_key(monkeypatch):
    """The same Notepad file handed over as an environment variable (AES_KEY=$(cat key.txt)) keeps
    its UTF-8 mark in front of the hex: file:key.txt loaded, env:AES_KEY failed 'value is not valid
    hex'. An env: value is read as the file's text is."""
    monkeypatch.setenv("AK_BOM", "\ufeff" + KEY256.hex() + "\r\n")
    assert load_secret("env:AK_BOM", "hex") == KEY256
    assert load_secret("env:AK_BOM") == KEY256


def test_load_secret_bad_reference_does_not_echo_it():
    for ref in (KEY256.hex(), KEY256_B64, "vault:thing", "env:", "file:"):
        with pytest.raises(KeyMaterialError) as exc:
            load_secret(ref)
        assert str(exc.value).startswith("not a key reference: ")
        if len(ref) > 5:
            _assert_no_leak(exc.value, ref)
    with pytest.raises(ValueError) as exc:
        load_secret("env:PATH", encoding="raw")
    assert str(exc.value) == "env:PATH: encoding must be 'hex', 'base64' or None, got 'raw'"


def test_key_material_kept_after_setup_shows_in_no_repr_and_refuses_pickling(monkeypatch):
    """The diagnosis' AssembleFindings keeps the CBC key and IV it loads in setup() (CbcMaterial, a
    NamedTuple): printing it, or pickling the DoFn, must not give them away, as CbcDecryptor does not."""
    from transforms.config import JobConfig
    from transforms.diagnosis import AssembleFindings
    from transforms.diagnosis_crypto import load_cbc_material

    monkeypatch.setenv("T_DIAG_KEY", KEY256.hex())
    monkeypatch.setenv("T_DIAG_IV", IV.hex())
    cfg = JobConfig.model_validate({"profiles": {"path": "p.parquet"}, "data_sources": [{
        "name": "enc", "dpid": 9, "segments": "x", "id_type": "declared", "declared": "encrypted",
        "match_on": "email", "channel": "email",
        "encryption": {"key": "env:T_DIAG_KEY", "key_encoding": "hex", "iv": "env:T_DIAG_IV", "iv_encoding": "hex"}}]})
    material = load_cbc_material(cfg.data_sources[0])
    text = repr(material) + str(material) + f"{material.key} {material.iv} {material.keys}"
    for secret in (KEY256, IV):
        assert secret.hex() not in text.lower() and _b64(secret) not in text and repr(secret) not in text
    assert str(material.key) == "<secret: 32 bytes>"
    with pytest.raises(TypeError, match="key material"):
        pickle.dumps(material)
    findings = AssembleFindings(cfg)
    findings.setup()
    with pytest.raises(TypeError, match="key material"):
        pickle.dumps(findings)
    assert CbcDecryptor(material.key, material.iv).decrypt(encrypt_cbc(EMAILS[:2], KEY256, IV))[0].to_pylist() == EMAILS[:2]


def test_cbc_material_from_plain_bytes_shows_no_key_and_refuses_pickling():
    from transforms.diagnosis_crypto import CbcMaterial

    material = CbcMaterial(KEY256, IV, {"hex": KEY256})
    text = repr(material) + str(material)
    for secret in (KEY256, IV):
        assert secret.hex() not in text.lower() and _b64(secret) not in text and repr(secret) not in text
    with pytest.raises(TypeError, match="key material"):
        pickle.dumps(material)


def test_secret_loaded_key_decrypts(monkeypatch):
    monkeypatch.setenv("T_KEY_B64", KEY256_B64)
    monkeypatch.setenv("T_IV_HEX", IV.hex())
    key = load_secret("env:T_KEY_B64")
    iv = load_secret("env:T_IV_HEX", lengths=(16,))
    tokens = encrypt_cbc(EMAILS[:3], KEY256, IV)
    assert CbcDecryptor(key, iv).decrypt(tokens)[0].to_pylist() == EMAILS[:3]


# --------------------------------------------------------------------------------------------------
# The CBC kernel, phase by phase (transforms/cbc_kernel.py), on crafted input
# --------------------------------------------------------------------------------------------------
def _row_bytes(raw: bytes, start, length) -> list[bytes | None]:
    """Each row's decoded bytes (None where its length is 0)."""
    return [raw[s : s + n] if n else None for s, n in zip(start.tolist(), length.tolist())]


def test_token_rows_reads_sliced_large_and_null_arrays_without_copying():
    arr = pa.array(["skip", "QUJD", None, "", "QUI="], type=pa.string()).slice(1)
    rows = cbc_kernel.token_rows(arr)
    assert rows.data.tobytes() == b"QUJDQUI="
    assert rows.offsets.tolist() == [0, 4, 4, 4, 8]
    assert rows.valid.tolist() == [True, False, True, True]
    large = cbc_kernel.token_rows(pa.array(["QUJD", "QQ=="], type=pa.large_string()))
    assert (large.data.tobytes(), large.offsets.tolist(), large.valid.tolist()) == (b"QUJDQQ==", [0, 4, 8], [True, True])


@pytest.mark.parametrize("validate_first", [False, True])
def test_decode_base64_phase_bulk_and_demoted_rows(validate_first):
    tokens = [
        "QUJD",  # bulk: ABC
        "QUI=",  # bulk, one pad: AB
        "QQ==",  # bulk, two pads: A
        "QUJD!!!!",  # length a multiple of 4, non-alphabet: demoted, strict decoder refuses it
        "QU JD",  # a space: demoted (not a multiple of 4 anyway), refused
        "QUJD=",  # not a multiple of 4: one by one; strict a2b_base64 tolerates the extra '='
        "QUJ",  # too short: refused
        "",
        None,
        "QUJDRA==",  # bulk again after the odd rows: ABCD
    ]
    ct = cbc_kernel.decode_base64(cbc_kernel.token_rows(pa.array(tokens, pa.string())), validate_first=validate_first)
    assert _row_bytes(ct.raw, ct.start, ct.length) == [
        b"ABC", b"AB", b"A", None, None, b"ABC", None, None, None, b"ABCD"
    ]
    assert ct.odd_rows  # "QUJD!!!!" was a bulk candidate holding non-alphabet characters


def test_decode_base64_phase_clean_slice_is_one_bulk_decode():
    tokens = ["QUJD", "QUI=", None, "QUJDRA=="]
    for validate_first in (False, True):
        ct = cbc_kernel.decode_base64(cbc_kernel.token_rows(pa.array(tokens)), validate_first=validate_first)
        assert not ct.odd_rows
        assert ct.raw[: len(b"ABCAB")] == b"ABCAB"  # bulk rows are back to back (pad garbage after each)
        assert _row_bytes(ct.raw, ct.start, ct.length) == [b"ABC", b"AB", None, b"ABCD"]


def _ciphertexts(rows: list[bytes | None]) -> cbc_kernel.Ciphertexts:
    """Phase 1's result for the given per-row ciphertexts (None: the row did not decode)."""
    start, length, pos = [], [], 0
    for raw in rows:
        start.append(pos)
        length.append(len(raw or b""))
        pos += len(raw or b"")
    return cbc_kernel.Ciphertexts(
        b"".join(r or b"" for r in rows), np.array(start, np.int64), np.array(length, np.int64), False
    )


def test_decrypt_blocks_phase_chains_each_row_from_the_iv():
    padded = [b"A" * 16, b"B" * 32 + b"C" * 16, b"D" * 16]
    encrypted = []
    for p in padded:
        enc = Cipher(algorithms.AES(KEY128), modes.CBC(IV)).encryptor()
        encrypted.append(enc.update(p) + enc.finalize())
    # rows 1 (17 bytes), 3 (not decoded) and 5 (empty) are not CBC ciphertexts: left out
    ct = _ciphertexts([encrypted[0], bytes(17), encrypted[1], None, encrypted[2], b""])
    cipher = Cipher(algorithms.AES(KEY128), modes.ECB())
    blocks = cbc_kernel.decrypt_blocks(ct, cipher, np.frombuffer(IV, dtype=cbc_kernel.V16)[0])
    assert blocks.rows.tolist() == [0, 2, 4]
    assert blocks.first.tolist() == [0, 1, 4]
    assert blocks.count.tolist() == [1, 3, 1]
    assert blocks.plain.tobytes() == b"".join(padded)
    none = cbc_kernel.decrypt_blocks(_ciphertexts([None, bytes(15)]), cipher, np.frombuffer(IV, cbc_kernel.V16)[0])
    assert (none.rows.size, none.plain.size) == (0, 0)


def _blocks(rows_blocks: dict[int, bytes]) -> cbc_kernel.Blocks:
    """Phase 2's result holding the given decrypted (padded) bytes for the given rows."""
    rows = sorted(rows_blocks)
    count = np.array([len(rows_blocks[r]) // 16 for r in rows], np.int64)
    first = np.concatenate(([0], np.cumsum(count)[:-1])).astype(np.int64)
    plain = np.frombuffer(b"".join(rows_blocks[r] for r in rows), dtype=cbc_kernel.V16).copy()
    return cbc_kernel.Blocks(np.array(rows, np.int64), first, count, plain)


def test_strip_pkcs7_phase_valid_and_invalid_pads():
    OK, FAILED, INVALID = cbc_kernel.OK, cbc_kernel.FAILED, cbc_kernel.INVALID
    rows = {
        0: b"hello" + b"\x0b" * 11,  # pad 11
        1: b"A" * 16 + b"B" * 15 + b"\x01",  # two blocks, pad 1
        2: b"C" * 16 + b"\x10" * 16,  # a whole block of padding
        3: b"D" * 15 + b"\x00",  # pad 0
        4: b"E" * 15 + b"\x11",  # pad 17
        5: b"F" * 13 + b"\x02\x03\x03",  # a byte under the pad differs
        6: b"\x10" * 16,  # valid pad, nothing left: invalid plaintext
        8: b"G" * 14 + b"\x02\x02",  # after a row that is not in the blocks
    }
    plain = cbc_kernel.strip_pkcs7(_blocks(rows), 9)
    assert plain.codes.tolist() == [OK, OK, OK, FAILED, FAILED, FAILED, INVALID, FAILED, OK]
    assert plain.length.tolist() == [5, 31, 16, 0, 0, 0, 0, 0, 14]
    assert plain.data.tobytes() == b"hello" + b"A" * 16 + b"B" * 15 + b"C" * 16 + b"G" * 14
    empty = cbc_kernel.strip_pkcs7(_blocks({}), 2)
    assert (empty.codes.tolist(), empty.length.tolist(), empty.data.size) == ([FAILED, FAILED], [0, 0], 0)


def _plaintexts(rows: list[bytes | None]) -> cbc_kernel.Plaintexts:
    """Phase 3's result: OK rows with the given bytes, FAILED rows where None."""
    codes = np.array([cbc_kernel.FAILED if r is None else cbc_kernel.OK for r in rows], np.int8)
    length = np.array([len(r or b"") for r in rows], np.int64)
    return cbc_kernel.Plaintexts(codes, length, np.frombuffer(b"".join(r or b"" for r in rows), np.uint8))


def test_check_utf8_phase_drops_bad_rows_only():
    OK, FAILED, INVALID = cbc_kernel.OK, cbc_kernel.FAILED, cbc_kernel.INVALID
    given = _plaintexts([b"ascii", b"\xff\xfe@x", None, "Zoë".encode(), b"\xc0\xaf", b"\xed\xa0\x80", b"tail"])
    before = (given.codes.copy(), given.length.copy(), given.data.copy())
    checked = cbc_kernel.check_utf8(given)
    assert checked.codes.tolist() == [OK, INVALID, FAILED, OK, INVALID, INVALID, OK]
    assert checked.length.tolist() == [5, 0, 0, 4, 0, 0, 4]
    assert checked.data.tobytes() == b"ascii" + "Zoë".encode() + b"tail"
    assert all(np.array_equal(a, b) for a, b in zip(before, given))  # the input is left as it was
    ascii_only = _plaintexts([b"abc", None, b"d"])
    assert cbc_kernel.check_utf8(ascii_only) is ascii_only  # nothing >= 0x80: no per-row work
    assert cbc_kernel.check_utf8(_plaintexts(["é".encode()])).codes.tolist() == [OK]


def test_result_arrays_from_codes():
    plain = cbc_kernel.Plaintexts(
        np.array([cbc_kernel.OK, cbc_kernel.FAILED, cbc_kernel.INVALID, cbc_kernel.OK], np.int8),
        np.array([2, 0, 0, 3], np.int64),
        np.frombuffer(b"abcde", np.uint8),
    )
    plains, reasons = cbc_kernel.result_arrays(plain)
    plains.validate(full=True)
    assert plains.to_pylist() == ["ab", None, None, "cde"]
    assert reasons.to_pylist() == [None, DECRYPT_FAILED, INVALID_PLAINTEXT, None]
    one = cbc_kernel.Plaintexts(np.zeros(1, np.int8), np.ones(1, np.int64), np.frombuffer(b"z", np.uint8))
    all_ok = cbc_kernel.result_arrays(one)
    assert (all_ok[0].to_pylist(), all_ok[1].to_pylist(), all_ok[0].null_count) == (["z"], [None], 0)
