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

import pyarrow as pa
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cbc_reference import decrypt_cbc_per_record
from transforms import crypto
from transforms.crypto import CbcDecryptor, GcmDecryptor, decrypt_cbc_batch, encrypt_cbc, encrypt_gcm
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


def test_load_secret_bad_reference_does_not_echo_it():
    for ref in (KEY256.hex(), KEY256_B64, "vault:thing", "env:", "file:"):
        with pytest.raises(KeyMaterialError) as exc:
            load_secret(ref)
        assert str(exc.value) == (
            "secret reference must look like 'env:NAME' or 'file:PATH' (the value given is not shown)"
        )
        if len(ref) > 5:
            _assert_no_leak(exc.value, ref)
    with pytest.raises(ValueError) as exc:
        load_secret("env:PATH", encoding="raw")
    assert str(exc.value) == "env:PATH: encoding must be 'hex', 'base64' or None, got 'raw'"


def test_secret_loaded_key_decrypts(monkeypatch):
    monkeypatch.setenv("T_KEY_B64", KEY256_B64)
    monkeypatch.setenv("T_IV_HEX", IV.hex())
    key = load_secret("env:T_KEY_B64")
    iv = load_secret("env:T_IV_HEX", lengths=(16,))
    tokens = encrypt_cbc(EMAILS[:3], KEY256, IV)
    assert CbcDecryptor(key, iv).decrypt(tokens)[0].to_pylist() == EMAILS[:3]
