"""A wrong AES-CBC IV fails the run. With a wrong IV, CBC still decrypts with valid padding: only the
first 16 bytes of every plaintext change, each XORed with the same byte. A one-bit error turns
``user@gmail.com`` into ``user@gmail.bom``, a valid address that would go to the file audience.

The check (transforms/iv_check.py) looks at the first-block bytes of all decrypted IDs of a data
source: bytes implausible for the channel that one XOR would make plausible (test 1), or a byte
distribution that, with one XOR undone, matches the profiles' keys much better (test 2). Bytes >= 0x80
(bit 7) make the plaintext invalid UTF-8, and a flip inside the padding breaks it: both count toward
``max_decrypt_failure_ratio``. What no test on the bytes can see is a flip that maps every byte seen at
a position onto another plausible byte with the same distribution (bit 0 on a position holding
uniformly random digits); such cases are listed below, and a flip of bit 0x20 on a position holding
only letters is a case change that normalization undoes: the answer is right, nothing needs to trip.
"""
from __future__ import annotations

import functools
import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import DEMO, assert_failed_cleanly, run_import_cli
from transforms.config import DataSourceConfig
from transforms.crypto import CbcDecryptor
from transforms.dumps import read_dump
from transforms.encrypt import encrypt_cbc
from transforms.stable_hash import hash64
from transforms.iv_check import (
    PLAUSIBLE,
    FirstBlocks,
    first_block_histogram,
    garbled_positions,
    implausible_positions,
    reference_positions,
)
from transforms.keys import dump_keys
from transforms.normalize import normalize_keys

KEY = bytes(range(32))
IV = bytes(range(100, 116))

FIRST = ("james mary john patricia robert jennifer michael linda william elizabeth david barbara richard susan "
         "joseph jessica thomas sarah charles karen daniel lisa matthew nancy anthony betty mark sandra paul "
         "ashley steven emily andrew donna kevin michelle brian carol george amanda edward melissa ronald "
         "timothy rebecca jason laura ryan amy eric anna zoe yves kyle olivia hugo ines").split()
LAST = ("smith johnson williams brown jones garcia miller davis rodriguez martinez lopez wilson anderson "
        "thomas taylor moore jackson martin lee perez thompson white harris clark lewis robinson walker "
        "young allen king wright scott torres nguyen hill green adams baker nelson carter mitchell roberts "
        "dupont durand lefebvre moreau laurent michel garnier faure rousseau").split()
DOMAINS = ["gmail.com"] * 5 + ["yahoo.com", "yahoo.fr", "hotmail.com", "outlook.com", "orange.fr", "icloud.com",
                               "free.fr", "acme-corp.com", "web.de"]


@functools.lru_cache(maxsize=16)
def realistic_emails(n: int, seed: int) -> list[str]:
    """Addresses shaped like people's: first/last names, separators, years and numbers, several
    domains, some capitalized or upper case."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        f, last, domain = rng.choice(FIRST), rng.choice(LAST), rng.choice(DOMAINS)
        local = rng.choice([f"{f}.{last}", f"{f}{last}", f"{f[0]}{last}", f"{f}_{last}", f"{f}.{last}{rng.randrange(100)}",
                            f"{f[0]}.{last}{rng.randrange(1950, 2010)}", f"{f}{rng.randrange(1000)}", f"{last}.{f}"])
        address = f"{local}@{domain}"
        roll = rng.random()
        out.append(address.capitalize() if roll < 0.2 else address.upper() if roll < 0.25 else address)
    return out


@functools.lru_cache(maxsize=16)
def generator_emails(n: int, seed: int) -> list[str]:
    """The shapes of scripts/generate_data.py: user<N>@..., USER<N>@..., User.<N>@gmail.com, Visitor<N>@Example.net."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        i, domain = rng.randrange(1_000_000), rng.choice(["example.com", "example.org", "gmail.com", "example.net"])
        address = f"{'user.' if domain == 'gmail.com' and i % 2 else 'user'}{i}@{domain}"
        style = rng.randrange(5)
        out.append([address, address.upper(), address.capitalize(), address, f"Visitor{i % 100000}@Example.net"][style])
    return out


@functools.lru_cache(maxsize=16)
def phones(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        cc = rng.choice(["+33", "+33", "+33", "+44", "+1", "+49"])
        digits = "".join(str(rng.randrange(10)) for _ in range(10 if cc == "+1" else 9))
        out.append(rng.choice([cc + digits, cc + " " + " ".join(digits[i:i + 2] for i in range(0, len(digits), 2))]))
    return out


# -- the histogram -----------------------------------------------------------------------------------
def naive_histogram(values) -> np.ndarray:
    h = np.zeros((16, 256), dtype=np.int64)
    for v in values:
        if v is not None:
            for j, b in enumerate((v.encode() if isinstance(v, str) else v)[:16]):
                h[j, b] += 1
    return h


@pytest.mark.parametrize("type_", [pa.string(), pa.large_string(), pa.binary()])
def test_first_block_histogram_counts_every_first_byte(type_):
    values = ["ann@example.com", None, "", "a", "x" * 40, "\u00e9t\u00e9@example.fr", "0123456789abcdef"]
    if type_ == pa.binary():
        values = [v.encode() if v is not None else None for v in values]
    arr = pa.array(values, type_)
    assert (first_block_histogram(arr) == naive_histogram(values)).all()
    assert (first_block_histogram(arr.slice(2)) == naive_histogram(values[2:])).all()
    chunked = pa.chunked_array([arr.slice(0, 3), arr.slice(3)])
    assert (first_block_histogram(chunked) == naive_histogram(values)).all()
    assert not first_block_histogram(pa.array([], type_)).any()


# -- the statistics, on decrypted plaintexts ---------------------------------------------------------
KIND = {"email": "email", "sms": "phone"}


def outcome(addresses: list[str], profiles: list[str], iv: bytes, channel: str) -> tuple[list[int], float, int]:
    """What the import does with a dump of ``addresses`` encrypted under IV and decrypted under ``iv``:
    (garbled positions found, share of IDs counted toward max_decrypt_failure_ratio, normalized
    addresses that differ from the truth)."""
    return _outcome(tuple(addresses), tuple(profiles), iv, channel)


@functools.lru_cache(maxsize=8)
def _reference(profiles: tuple, channel: str) -> np.ndarray:
    return first_block_histogram(normalize_keys(pa.array(profiles), KIND[channel], "adobe")[0])


@functools.lru_cache(maxsize=8)
def _encrypted(addresses: tuple, channel: str) -> tuple[pa.Array, list]:
    truth = normalize_keys(pa.array(addresses), KIND[channel], "adobe")[0].to_pylist()
    return pa.array(encrypt_cbc(addresses, KEY, IV)), truth


def _outcome(addresses: tuple, profiles: tuple, iv: bytes, channel: str) -> tuple[list[int], float, int]:
    tokens, truth = _encrypted(addresses, channel)
    plain, reasons = CbcDecryptor(KEY, iv).decrypt(tokens)
    keys, invalid = normalize_keys(plain, KIND[channel], "adobe")
    failed = pc.sum(pc.or_(pc.is_valid(reasons), pc.is_valid(invalid))).as_py()
    ok = pc.and_(pc.is_null(reasons), pc.is_null(invalid))
    blocks = FirstBlocks.of(plain, pc.filter(keys, ok))
    wrong = sum(a != b for a, b in zip(keys.to_pylist(), truth) if a is not None)
    positions = garbled_positions(blocks.plaintexts, blocks.keys, _reference(profiles, channel), channel)
    return positions, failed / len(addresses), wrong


def flipped(position: int, bit: int) -> bytes:
    iv = bytearray(IV)
    iv[position] ^= 1 << bit
    return bytes(iv)


def a_dump(population: list[str], strangers: list[str], n: int = 300) -> list[str]:
    """A dump of ``n`` IDs: 70 % are customers (in the profile ``population``), 30 % are not."""
    return population[: int(n * 0.7)] + strangers[: n - int(n * 0.7)]


@pytest.mark.parametrize("make", [realistic_emails, generator_emails])
def test_the_right_iv_never_trips_on_emails(make):
    population = make(20_000, 1)
    for dump in (a_dump(population, make(300, 2)), a_dump(population, make(20_000, 3), 20_000), make(5000, 4)):
        positions, ratio, wrong = outcome(dump, population, IV, "email")
        assert (positions, wrong) == ([], 0) and ratio < 0.01


def test_the_right_iv_never_trips_on_phones():
    population = phones(20_000, 1)
    for dump in (a_dump(population, phones(300, 2)), a_dump(population, phones(20_000, 3), 20_000)):
        positions, ratio, wrong = outcome(dump, population, IV, "sms")
        assert (positions, ratio, wrong) == ([], 0.0, 0)


def test_odd_but_real_addresses_do_not_trip():
    """Apostrophes, accents, plus tags, digits first, stray spaces: odd bytes that no single XOR explains."""
    rng = random.Random(5)
    odd = [rng.choice(["o'brien", "zo\u00eb", "jos\u00e9", "1john", " ann", "bob+news", "x-y", "\u00e9lodie"])
           + f"{rng.randrange(100)}@{rng.choice(DOMAINS)}" for _ in range(2000)]
    population = realistic_emails(20_000, 1)
    positions, ratio, wrong = outcome(a_dump(population, odd, 3000) + odd, population, IV, "email")
    assert (positions, wrong) == ([], 0) and ratio < 0.01


@pytest.mark.parametrize("position", range(16))
@pytest.mark.parametrize("bit", range(8))
def test_a_one_bit_iv_error_fails_the_run_on_a_few_hundred_emails(position, bit):
    population = realistic_emails(20_000, 1)
    dump = a_dump(population, realistic_emails(300, 7))
    positions, ratio, wrong = outcome(dump, population, flipped(position, bit), "email")
    if bit == 7:  # bytes >= 0x80: not UTF-8, counted invalid_plaintext
        assert ratio > 0.5
    elif wrong:  # a silent wrong answer unless the IV check sees it
        assert position in positions
    else:  # bit 0x20 on a position holding only letters: a case change, normalization undoes it
        assert bit == 5 and positions == []


@pytest.mark.parametrize("position", range(16))
@pytest.mark.parametrize("bit", range(7))
def test_a_one_bit_iv_error_on_generator_shaped_emails(position, bit):
    """The generator's addresses share their first letters ("user", "USER", "Visitor"): a flip there
    keeps letters letters, and only the comparison with the profiles' keys (test 2) sees it. Its
    digits are uniformly random: bit 0 there gives other digits (and 'o' 'n') with the same
    distribution, which nothing can see."""
    population = generator_emails(20_000, 1)
    dump = a_dump(population, generator_emails(300, 7))
    positions, ratio, wrong = outcome(dump, population, flipped(position, bit), "email")
    if wrong and not positions and ratio <= 0.5:
        assert bit == 0 and stays_plausible(dump, position, bit, "email"), (position, bit)
    if bit != 5 and position < 4:  # the shared first letters: seen through the profiles (test 2)
        assert position in positions


def _sampled_reference(profiles: list[str], channel: str) -> np.ndarray:
    """The reference as the profile reader makes it from a big batch: 1 key in 8, by key hash."""
    keys = normalize_keys(pa.array(profiles), KIND[channel], "adobe")[0].drop_null()
    at = reference_positions(hash64(keys))
    assert 0.10 < len(at) / len(keys) < 0.15  # sampled, about 1 in 8
    return first_block_histogram(keys.take(pa.array(at)))


@pytest.mark.parametrize("make, channel", [(generator_emails, "email"), (realistic_emails, "email"), (phones, "sms")])
def test_a_sampled_reference_decides_as_the_whole_one(monkeypatch, make, channel):
    """Big profile batches add 1 key in 8 to the reference of test 2: every right and one-bit-wrong IV
    is judged the same as with every key (the generator's shared first letters are seen through it)."""
    monkeypatch.setattr("transforms.iv_check.REFERENCE_ALL", 1000)  # a 20,000-key batch is sampled
    population = make(20_000, 1)
    sampled, whole = _sampled_reference(population, channel), _reference(tuple(population), channel)
    dump = a_dump(population, make(300, 7))
    tripped = 0
    for iv in [IV] + [flipped(position, bit) for position in range(16) for bit in range(7)]:
        tokens, _ = _encrypted(tuple(dump), channel)
        plain, reasons = CbcDecryptor(KEY, iv).decrypt(tokens)
        keys, invalid = normalize_keys(plain, KIND[channel], "adobe")
        blocks = FirstBlocks.of(plain, pc.filter(keys, pc.and_(pc.is_null(reasons), pc.is_null(invalid))))
        decided = garbled_positions(blocks.plaintexts, blocks.keys, sampled, channel)
        assert decided == garbled_positions(blocks.plaintexts, blocks.keys, whole, channel), iv.hex()
        tripped += bool(decided)
    assert tripped > 50  # most flips trip the check


def stays_plausible(values: list[str], position: int, bit: int, channel: str) -> bool:
    """Whether flipping ``bit`` keeps every byte at ``position`` plausible for the channel (digits
    stay digits, letters letters): then no test on the bytes alone can see the flip."""
    seen = [v.encode()[position] for v in values if len(v.encode()) > position]
    return all(b ^ (1 << bit) in PLAUSIBLE[channel] for b in seen)


@pytest.mark.parametrize("position", range(16))
@pytest.mark.parametrize("bit", range(7))
def test_a_one_bit_iv_error_on_phones(position, bit):
    """Phones are mostly uniformly random digits: bit 0 there yields other valid numbers with the same
    distribution, which no test on the bytes can see (listed here); every other flip fails the run
    or changes nothing (a '+' that becomes a ')' is stripped by normalization)."""
    population = phones(20_000, 1)
    dump = a_dump(population, phones(300, 7))
    positions, ratio, wrong = outcome(dump, population, flipped(position, bit), "sms")
    if wrong and not positions and ratio <= 0.5:
        assert bit == 0 and stays_plausible(dump, position, bit, "sms"), (position, bit)


@pytest.mark.parametrize("channel, scheme", [("email", "mailto:"), ("sms", "tel:"), ("email", "MAILTO:")])
def test_ids_written_with_a_uri_scheme_are_named_so_not_blamed_on_the_iv(channel, scheme):
    """'mailto:ann@example.com' (or 'tel:+33...') encrypted under the right key and IV: the IV check
    failed the run 'decrypted IDs look garbled in their first 16 bytes (byte positions 0, 1, 2, 3, 6,
    ...): wrong IV?'. The scheme is named (from a fixed list: no plaintext), the IV not blamed; under
    a wrong IV, whose first bytes are no scheme, the IV still is."""
    from transforms.config_load import parse_config
    from transforms.errors import RunFailed
    from transforms.iv_check import CheckFirstBlocks

    addresses = realistic_emails(300, 1) if channel == "email" else phones(300, 1)
    cfg = parse_config({"profiles": {"path": "p.csv", "visitor_ids": None},
                        "data_sources": [{"name": "enc", "dpid": 1, "segments": "s", "id_type": "declared",
                                          "declared": "encrypted", "match_on": KIND[channel], "channel": channel,
                                          "encryption": {"key": "env:K", "iv": "env:I"}}]})
    tokens = pa.array(encrypt_cbc([scheme + a for a in addresses], KEY, IV))
    for iv, named in ((IV, f"start with '{scheme.lower()}'"), (flipped(0, 6), "wrong IV?")):
        plain = CbcDecryptor(KEY, iv).decrypt(tokens)[0]
        keys, _ = normalize_keys(plain, KIND[channel], "adobe")
        blocks = FirstBlocks.of(plain, pc.drop_null(keys))
        with pytest.raises(RunFailed) as info:
            list(CheckFirstBlocks(cfg).process(("enc", blocks), {"enc": _reference(tuple(addresses), channel)}))
        assert named in str(info.value) and ("wrong IV" in str(info.value)) == (iv != IV)


@pytest.mark.parametrize("iv, named", [(IV, "are email addresses, not phone numbers"), (bytes(range(16)), "wrong IV?")])
def test_email_addresses_on_an_sms_source_are_named_so_not_blamed_on_the_iv(iv, named):
    """A data source configured 'channel: sms' whose partner encrypts email addresses, under the
    right key and IV: every ID is invalid_plaintext (no phone number), and, on addresses of a few
    shapes (the generator's: user<N>@...), the IV check failed the run first with 'decrypted IDs look
    garbled in their first 16 bytes (byte positions 1, 2, 3, 14, 15): wrong IV?' -- letters read as
    digits XORed by one byte -- sending the operator to the partner about an IV that was right. The
    channel is named instead; phone numbers under a wrong IV still blame the IV."""
    from transforms.config_load import parse_config
    from transforms.errors import RunFailed
    from transforms.iv_check import CheckFirstBlocks

    cfg = parse_config({"profiles": {"path": "p.csv", "visitor_ids": None},
                        "data_sources": [{"name": "enc", "dpid": 1, "segments": "s", "id_type": "declared",
                                          "declared": "encrypted", "match_on": "phone", "channel": "sms",
                                          "encryption": {"key": "env:K", "iv": "env:I"}}]})
    sent = generator_emails(300, 1) if iv == IV else phones(300, 1)
    n = len(sent)
    parsed = pa.table({"source_file": pa.array(["f"] * n).dictionary_encode(), "line": pa.array(range(1, n + 1), pa.int64()),
                       "id": pa.array(encrypt_cbc(sent, KEY, IV), pa.string()), "segments": pa.array([["1"]] * n),
                       "removed": pa.array([[]] * n, pa.list_(pa.string()))})
    blocks = dump_keys(parsed, cfg.data_source("enc"), CbcDecryptor(KEY, iv)).first_blocks
    with pytest.raises(RunFailed) as info:
        list(CheckFirstBlocks(cfg).process(("enc", blocks), {"enc": _reference(tuple(phones(300, 1)), "sms")}))
    assert named in str(info.value) and ("wrong IV" in str(info.value)) == (iv != IV)
    if iv == IV:
        assert "300 of 300 decrypted IDs" in str(info.value) and "channel: email and match_on: email?" in str(info.value)


def test_the_implausible_bytes_test_alone_sees_a_flip_on_varied_addresses():
    """Test 1 needs no profiles: bit 0 at position 1 turns a-names into '`'-names (and 'z' into '{')."""
    tokens = pa.array(encrypt_cbc(realistic_emails(300, 7), KEY, IV))
    plain, _ = CbcDecryptor(KEY, flipped(1, 0)).decrypt(tokens)
    assert 1 in implausible_positions(first_block_histogram(plain), "email")
    plain, _ = CbcDecryptor(KEY, IV).decrypt(tokens)
    assert implausible_positions(first_block_histogram(plain), "email") == []
    assert set(PLAUSIBLE) == {"email", "sms"}


# -- the generator's own data, as the pipeline reads it -------------------------------------------------
def test_the_demo_keys_never_trip_the_check_on_the_demo_data():
    cfg_ds = DataSourceConfig(
        name="web-encrypted-emails", dpid=23456, segments="x", id_type="declared", declared="encrypted",
        match_on="email", channel="email",
        encryption={"key": f"file:{DEMO / 'keys' / 'demo-only-aes256.key'}", "key_encoding": "hex",
                    "iv": f"file:{DEMO / 'keys' / 'demo-only-iv.hex'}", "iv_encoding": "hex"})
    from transforms.crypto import build_decryptor

    decryptor = build_decryptor(cfg_ds, None)
    total = None
    for path in sorted((DEMO / "segments" / "web-encrypted-emails").glob("*.sync*")):
        for parsed, _, _ in read_dump(str(path), cfg_ds):
            blocks = dump_keys(parsed, cfg_ds, decryptor).first_blocks
            total = blocks if total is None else total + blocks
    import pyarrow.parquet as pq

    emails = pq.read_table(DEMO / "profiles.parquet", columns=["email"])["email"]
    reference = first_block_histogram(normalize_keys(emails, "email", "adobe")[0])
    assert total.plaintexts[0].sum() > 150
    assert garbled_positions(total.plaintexts, total.keys, reference, "email") == []


# -- through the real job ----------------------------------------------------------------------------
def run_demo_with_iv(demo_copy, tmp_path, iv: bytes):
    (demo_copy / "keys" / "demo-only-iv.hex").write_text(iv.hex() + "\n")
    out = tmp_path / "o"
    return run_import_cli(demo_copy / "job.yaml", out), out


@pytest.mark.parametrize("position, bit", [(0, 0), (9, 1)])  # 'user' -> 'tser'; 'example' -> 'exam`le'
def test_a_one_bit_iv_error_fails_the_demo_import(demo_copy, tmp_path, position, bit):
    true_iv = bytes.fromhex((demo_copy / "keys" / "demo-only-iv.hex").read_text().strip())
    iv = bytearray(true_iv)
    iv[position] ^= 1 << bit
    result, out = run_demo_with_iv(demo_copy, tmp_path, bytes(iv))
    assert_failed_cleanly(result, out, "data source 'web-encrypted-emails': decrypted IDs look garbled",
                          f"byte positions {position}", "wrong IV?")
    key = (demo_copy / "keys" / "demo-only-aes256.key").read_text().strip()
    assert key not in result.stderr and bytes(iv).hex() not in result.stderr and "@example" not in result.stderr


def test_an_email_channel_that_decrypts_to_no_emails_fails_the_run(demo_copy, tmp_path):
    """A data source configured as channel email whose website encrypts phone numbers: every ID
    decrypts, none is an email: invalid_plaintext, counted by max_decrypt_failure_ratio. The
    diagnosis names the channel (it said only 'they decrypt, but not to email addresses (another
    channel or field ...?)')."""
    folder = demo_copy / "segments" / "web-encrypted-emails"
    key = bytes.fromhex((demo_copy / "keys" / "demo-only-aes256.key").read_text().strip())
    iv = bytes.fromhex((demo_copy / "keys" / "demo-only-iv.hex").read_text().strip())
    for dump in folder.iterdir():
        dump.unlink()
    tokens = encrypt_cbc(phones(200, 3), key, iv)
    (folder / "ftp_1234_23456_full_1795305600000.sync").write_text("".join(f"{t} 5501\n" for t in tokens))
    out = tmp_path / "o"
    assert_failed_cleanly(run_import_cli(demo_copy / "job.yaml", out), out,
                          "data source 'web-encrypted-emails': 200 of 200 IDs failed to decrypt or decrypted to no "
                          "valid address", "decrypt under the configured key and IV to phone numbers, not email "
                          "addresses", "(suggested: channel: sms, match_on: phone)")


def test_the_check_leaves_the_demo_report_unchanged(demo_copy, tmp_path):
    from pipelines import import_audience

    report = import_audience.run(["--config", str(demo_copy / "job.yaml"), "--output", str(tmp_path / "o")])
    truth = json.loads((DEMO / "expected" / "counts.json").read_text())["web-encrypted-emails"]
    entry = report["data_sources"]["web-encrypted-emails"]
    assert {k: entry[k] for k in truth} == truth


def _sms_job(tmp_path, dump: list[str], iv: bytes) -> Path:
    """An encrypted SMS data source (a file audience) over 20,000 profiles' phones; the IV in a file."""
    from pathlib import Path as _Path

    import pyarrow.parquet as pq

    population = phones(20_000, 1)
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(len(population))], "mobile": population}),
                   tmp_path / "profiles.parquet")
    (tmp_path / "key.hex").write_text(KEY.hex() + "\n")
    (tmp_path / "iv.hex").write_text(iv.hex() + "\n")
    (tmp_path / "dumps").mkdir(exist_ok=True)
    (tmp_path / "dumps" / "ftp_1_9_full_1795305600000.sync").write_text(
        "".join(f"{t} 501\n" for t in encrypt_cbc(dump, KEY, IV)))
    job = {"profiles": {"path": "profiles.parquet", "email": None, "visitor_ids": None},
           "data_sources": [{"name": "sms", "dpid": 9, "segments": "dumps/*", "id_type": "declared",
                             "declared": "encrypted", "match_on": "phone", "channel": "sms",
                             "encryption": {"key": f"file:{tmp_path / 'key.hex'}", "key_encoding": "hex",
                                            "iv": f"file:{tmp_path / 'iv.hex'}", "iv_encoding": "hex"}}]}
    (tmp_path / "job.yaml").write_text(json.dumps(job))
    return _Path(tmp_path / "job.yaml")


def test_an_iv_typo_that_swaps_country_codes_fails_the_import(tmp_path):
    """IV byte 1 XOR 7 (one hex digit mistyped) turns +33 numbers into +43 ones and +44 into +34: other
    valid numbers, all published in the file audience, none matching a profile. The byte histogram
    alone gains too little (+33/+44 are both common); with almost no decrypted number matching, the
    run fails. The right IV, and a dump of strangers (a prospect list: nothing matches), publish."""
    population, strangers = phones(20_000, 1), phones(3000, 7)
    typo = bytearray(IV)
    typo[1] ^= 0x07
    out = tmp_path / "o"
    result = run_import_cli(_sms_job(tmp_path, a_dump(population, strangers, 3000), bytes(typo)), out)
    assert_failed_cleanly(result, out, "data source 'sms'", "byte position 1", "wrong IV?")
    from pipelines import import_audience

    (tmp_path / "iv.hex").write_text(IV.hex() + "\n")
    report = import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "right")])
    assert report["data_sources"]["sms"]["reconciled"] == 2100
    (tmp_path / "dumps" / "ftp_1_9_full_1795305600000.sync").write_text(
        "".join(f"{t} 501\n" for t in encrypt_cbc(strangers, KEY, IV)))
    report = import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "prospects")])
    assert (report["data_sources"]["sms"]["reconciled"], report["data_sources"]["sms"]["file_audience"]) == (0, 3000)
