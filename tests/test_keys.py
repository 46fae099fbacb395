"""Join keys: the compact binary forms both sides of the join are matched on (pure functions)."""
from __future__ import annotations

import base64
import hashlib

import pyarrow as pa
import pytest

from transforms.arrow_utils import rows_of_width
from transforms.config import DataSourceConfig, JobConfig
from transforms.digests import decode_digests, hash_keys, sha256_digests
from transforms.keys import dump_keys, join_keys, pack_visitor_ids, profile_keys, segment_lists, segment_sets

EMAILS = ["johndoe@example.com", "ecid@adobe.com", "a@b.co", "é中@example.org"]


def _hashed(encoding: str) -> DataSourceConfig:
    return DataSourceConfig(name="h", dpid=1, id_type="declared", declared="hashed", match_on="email",
                            digest=encoding, segments="/x/*")


def test_sha256_digests_are_raw_sha256():
    digests = sha256_digests(pa.array(EMAILS))
    assert digests.to_pylist() == [hashlib.sha256(e.encode()).digest() for e in EMAILS]
    with pytest.raises(ValueError):
        sha256_digests(pa.array(["x", None]))


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_dump_digests_decode_to_the_profiles_digests(encoding):
    """The dump side's text digest and the profile side's hash meet as the same 32 bytes."""
    text = hash_keys(pa.array(EMAILS), encoding)
    assert decode_digests(text, encoding).equals(sha256_digests(pa.array(EMAILS)))
    assert join_keys(text, _hashed(encoding)).equals(sha256_digests(pa.array(EMAILS)))


def test_hex_digests_decode_in_either_case_and_from_slices():
    hexes = [hashlib.sha256(e.encode()).hexdigest() for e in EMAILS]
    upper = pa.array([h.upper() for h in hexes])
    assert decode_digests(upper, "hex").to_pylist() == [bytes.fromhex(h) for h in hexes]
    assert decode_digests(pa.array(hexes).slice(1, 2), "hex").to_pylist() == [bytes.fromhex(h) for h in hexes[1:3]]


def test_base64_decoding_matches_the_standard_library():
    values = [base64.b64encode(hashlib.sha256(str(i).encode()).digest()).decode() for i in range(300)]
    assert decode_digests(pa.array(values), "base64").to_pylist() == [base64.b64decode(v) for v in values]


def test_decode_refuses_values_of_another_width():
    with pytest.raises(ValueError):
        decode_digests(pa.array(["ab" * 32, "ab" * 31]), "hex")


def test_visitor_ids_pack_one_to_one_into_19_bytes():
    ids = ["0" * 38, "9" * 38, "1" + "0" * 37, "0" * 37 + "1", "12345678901234567890123456789012345678"]
    packed = pack_visitor_ids(pa.array(ids)).to_pylist()
    assert all(len(p) == 19 for p in packed)
    assert len(set(packed)) == len(ids)
    # packed decimal: the hex of the bytes spells the digits back
    assert [p.hex() for p in packed] == ids
    with pytest.raises(ValueError):
        pack_visitor_ids(pa.array(["1" * 37]))


def test_rows_of_width_reads_chunked_and_offset_arrays():
    arr = pa.chunked_array([pa.array(["ab", "cd"]), pa.array(["ef"])])
    assert rows_of_width(arr, 2).tobytes() == b"abcdef"
    assert rows_of_width(pa.array(["xx", "yy", "zz"]).slice(1), 2).tobytes() == b"yyzz"


def test_segment_sets_round_trip_through_several_dictionaries():
    first = pa.array([["1401", "1402"], [], ["1401", "1402"], ["7"]], pa.list_(pa.string()))
    second = pa.array([["7"], ["1", "2", "3"], []], pa.list_(pa.string()))
    sets = [segment_sets(first), segment_sets(second)]
    assert len(sets[0].dictionary) == 3  # three distinct combinations, one int32 per line
    chunked = pa.chunked_array(sets)
    assert segment_lists(chunked).to_pylist() == first.to_pylist() + second.to_pylist()
    # a take across chunks (what the join does with matched rows) keeps the lists
    taken = chunked.take(pa.array([6, 0, 5]))
    assert segment_lists(taken).to_pylist() == [[], ["1401", "1402"], ["1", "2", "3"]]


def test_dictionaries_travel_with_the_smallest_index_type():
    from transforms.keys import narrow_dictionary

    few = segment_sets(pa.array([["1"], ["2"], []], pa.list_(pa.string())))
    assert few.type.index_type == pa.int8()
    many = narrow_dictionary(pa.array([str(i) for i in range(300)]).dictionary_encode())
    assert many.type.index_type == pa.int16() and many.to_pylist() == [str(i) for i in range(300)]
    huge = narrow_dictionary(pa.array([str(i) for i in range(40000)]).dictionary_encode())
    assert huge.type.index_type == pa.int32()


def _parsed(ids: list) -> pa.Table:
    n = len(ids)
    return pa.table({"source_file": pa.array(["f"] * n).dictionary_encode(), "line": pa.array(range(1, n + 1), pa.int64()),
                     "id": pa.array(ids, pa.string()), "segments": pa.array([["1"]] * n), "removed": pa.array([[]] * n, pa.list_(pa.string()))})


def test_restore_leading_zeros_pads_short_all_digit_visitor_ids_only():
    ds = DataSourceConfig(name="v", dpid=1, id_type="visitor", segments="/x/*", restore_leading_zeros=True)
    short = "12345" * 6 + "123"  # 33 digits: 5 leading zeros lost
    keyed, rejected, _ = dump_keys(_parsed([short, "7" * 38, "12a45", "0" * 39, ""]), ds)
    assert keyed["key"].to_pylist() == [pack_visitor_ids(pa.array(["0" * 5 + short, "7" * 38])).to_pylist()[i] for i in (0, 1)]
    assert rejected["line"].to_pylist() == [3, 4, 5]
    keyed, _, _ = dump_keys(_parsed([short]), DataSourceConfig(name="v", dpid=1, id_type="visitor", segments="/x/*"))
    assert keyed.num_rows == 0  # off by default: a short ID is invalid


def test_restore_leading_zeros_leaves_numbers_of_fewer_than_30_digits_invalid(tmp_path):
    """restore_leading_zeros padded any all-digit ID: a dump of customer numbers (8 digits) read as a
    visitor source became 200 visitor IDs matching nobody, counted unmatched, not invalid, so the
    invalid-ID guard was passed and an empty audience published, exit 0 (without the setting the run
    failed naming the profile column holding them). As the profile side pads: 30 to 37 digits only
    (fewer is 9 leading zeros, one visitor ID in 10^9)."""
    from pipelines import import_audience
    from transforms.errors import RunFailed

    ds = DataSourceConfig(name="v", dpid=1, id_type="visitor", segments="/x/*", restore_leading_zeros=True)
    keyed, rejected, _ = dump_keys(_parsed(["1" * 30, "1" * 29, "12345678"]), ds)
    assert keyed["key"].to_pylist() == pack_visitor_ids(pa.array(["0" * 8 + "1" * 30])).to_pylist()
    assert rejected["reason"].to_pylist() == ["invalid_visitor_id"] * 2
    (tmp_path / "p.csv").write_text("profile_id,visitor_ids,crm\n" + "".join(f"P{i},{i:038d},{10 ** 7 + i}\n" for i in range(200)))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ftp_1_9_full_1795305600000.sync").write_text("".join(f"{10 ** 7 + i} 501\n" for i in range(200)))
    (tmp_path / "job.yaml").write_text("profiles: {path: p.csv, visitor_ids: visitor_ids}\ndata_sources: [{name: web, dpid: 9, "
                                       "segments: d/*, id_type: visitor, restore_leading_zeros: true}]\n")
    with pytest.raises(RunFailed, match=r"data source 'web': 200 of 200 IDs are invalid, most of them invalid_visitor_id"):
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o" / "report.json").exists()


def test_ignore_case_folds_both_sides_of_a_plain_source():
    ds = DataSourceConfig(name="p", dpid=1, id_type="declared", declared="plain", match_on="crm", segments="/x/*",
                          ignore_case=True)
    keyed, rejected, _ = dump_keys(_parsed([" CRM-1 ", "crm-2", "   "]), ds)
    assert keyed["key"].to_pylist() == [b"crm-1", b"crm-2"] and rejected["line"].to_pylist() == [3]
    cfg = JobConfig(profiles={"path": "p.csv"}, data_sources=[ds])
    profiles = pa.table({"profile_id": ["a", "b"], "k:crm": ["Crm-1", "CRM-2 "]})
    assert profile_keys(profiles, ds, cfg, binary=True)[0]["key"].to_pylist() == [b"crm-1", b"crm-2"]


def test_profile_keys_read_phones_in_the_data_sources_region():
    """The region reaches the profile side (import and export both key profiles here): the
    extract's default_region, or the data source's own."""
    from transforms.config_load import parse_config
    from transforms.keys import profile_keys
    from transforms.profiles import KEY_PREFIX

    source = {"name": "p", "dpid": 1, "segments": "/x/*", "id_type": "declared", "declared": "hashed",
              "match_on": "phone", "normalization": "meta"}
    profiles = pa.table({"profile_id": ["a", "b"], KEY_PREFIX + "mobile": ["06 12 34 56 78", "+32 470 12 34 56"]})
    expected = {"a": hashlib.sha256(b"33612345678").hexdigest(), "b": hashlib.sha256(b"32470123456").hexdigest()}
    cfg = parse_config({"profiles": {"path": "/p.csv", "default_region": "FR"}, "data_sources": [source]})
    keys, invalid = profile_keys(profiles, cfg.data_sources[0], cfg)
    assert dict(zip(keys["profile_id"].to_pylist(), keys["key"].to_pylist())) == expected and invalid == 0
    cfg = parse_config({"profiles": {"path": "/p.csv", "default_region": "FR"},
                        "data_sources": [{**source, "default_region": "BE"}]})
    keys, invalid = profile_keys(profiles, cfg.data_sources[0], cfg)
    assert dict(zip(keys["profile_id"].to_pylist(), keys["key"].to_pylist())) == {
        **expected, "a": hashlib.sha256(b"32612345678").hexdigest()}  # read as a Belgian number
    cfg = parse_config({"profiles": {"path": "/p.csv"}, "data_sources": [source]})
    assert profile_keys(profiles, cfg.data_sources[0], cfg)[1] == 1  # no region: never guessed


@pytest.mark.parametrize("source", [
    {"id_type": "visitor"},
    {"id_type": "declared", "declared": "hashed", "match_on": "email"},
    {"id_type": "declared", "declared": "plain", "match_on": "email"},
])
def test_profile_key_rows_are_the_row_aligned_keys_without_their_nulls(source):
    """The run without the key cache takes the keys straight (profile_key_rows); the cache stores
    them row-aligned with nulls (profile_row_keys): both must give the same rows in the same order
    (the outputs are byte-identical with and without the cache)."""
    from transforms.keys import profile_key_rows, profile_row_keys
    from transforms.profiles import KEY_PREFIX

    v = "1" * 38
    profiles = pa.table({
        "profile_id": ["a", "b", "c", "d", "e"],
        "visitor_ids": pa.array([[v, " " + "2" * 38], None, [], ["123", None, "3" * 38], [""]], pa.list_(pa.string())),
        KEY_PREFIX + "email": ["A@b.co", None, "", "not an email", " x@y.org "],
    })
    ds = DataSourceConfig(name="s", dpid=1, segments="/x/*", **source)
    cfg = JobConfig(profiles={"path": "p.csv"}, data_sources=[ds])
    row_keys = profile_row_keys(profiles, ds, cfg)
    ids = profiles["profile_id"].to_pylist()
    if pa.types.is_list(row_keys.type):
        expected = [(k, ids[r]) for r, keys in enumerate(row_keys.to_pylist()) for k in keys if k is not None]
        entries = sum(len(keys) for keys in row_keys.to_pylist() if keys is not None)
    else:
        expected = [(k, ids[r]) for r, k in enumerate(row_keys.to_pylist()) if k is not None]
        entries = len(row_keys)
    table, without_key = profile_key_rows(profiles, ds, cfg)
    assert list(zip(table["key"].to_pylist(), table["profile_id"].to_pylist())) == expected
    assert without_key == entries - len(expected) and len(expected) >= 2


def test_is_visitor_id_is_the_38_ascii_digits_rule():
    """The kernels that replaced the regex ``^[0-9]{38}$``: same answer on every edge."""
    import re

    from transforms.keys import is_visitor_id

    d = "1" * 38
    values = [d, d[:-1], d + "1", " " + d, d + "\n", None, "", "٣" * 38, "１" * 38, "1" * 37 + "a", "0" * 38,
              "1" * 36 + "é", "+" + "1" * 37]
    expected = [v is not None and re.fullmatch(r"[0-9]{38}", v) is not None for v in values]
    assert is_visitor_id(pa.array(values, pa.string())).to_pylist() == expected == [
        True, False, False, False, False, False, False, False, False, False, True, False, False]


def test_url_safe_tokens_that_decrypt_so_are_not_standard_base64_rejections():
    """A partner sending url-safe base64: the tokens holding '-' or '_' (about half of one-block
    tokens) were plain decrypt failures, under the ratio, and the run published the other half as the
    whole audience. They are now their own reason, which fails the run (test_guards)."""
    from transforms.crypto import CbcDecryptor
    from transforms.encrypt import encrypt_cbc

    key, iv = bytes(range(32)), bytes(range(100, 116))
    ds = DataSourceConfig(name="e", dpid=1, segments="/x/*", id_type="declared", declared="encrypted",
                          match_on="phone", channel="sms", encryption={"key": "env:K", "iv": "env:IV"})
    phones = [f"+336123456{i:02d}" for i in range(40)]
    standard = encrypt_cbc(phones, key, iv)
    urlsafe = [t.replace("+", "-").replace("/", "_") for t in standard]
    assert 0 < sum(u != s for u, s in zip(urlsafe, standard)) < len(phones)
    damaged = "ab-_" + standard[0][4:]  # url-safe characters, but no address under any reading
    keyed, rejected, _ = dump_keys(_parsed(urlsafe + [damaged]), ds, CbcDecryptor(key, iv))
    why = dict(zip(rejected["line"].to_pylist(), rejected["reason"].to_pylist()))
    assert why == {**{i + 1: "not_standard_base64" for i, (u, s) in enumerate(zip(urlsafe, standard)) if u != s},
                   len(phones) + 1: "decrypt_failed"}
    assert keyed.num_rows == sum(u == s for u, s in zip(urlsafe, standard))


def test_a_decrypted_address_holding_a_control_character_is_invalid_plaintext():
    """A partner encrypting C strings with their terminator ('ann@example.com\\0'): the email rule
    refuses whitespace only, so the NUL stayed in a valid-looking address that matched no profile,
    and the file audience published every address with a NUL at its end, exit 0."""
    from transforms.crypto import CbcDecryptor
    from transforms.encrypt import encrypt_cbc

    key, iv = bytes(range(32)), bytes(range(100, 116))
    ds = DataSourceConfig(name="e", dpid=1, segments="/x/*", id_type="declared", declared="encrypted",
                          match_on="email", channel="email", encryption={"key": "env:K", "iv": "env:IV"})
    # and invisible format characters: a UTF-8 byte order mark in front of every plaintext, a zero-width space
    plains = ["anna.smith@example.com\x00", "bob\x07@example.org", "c\x7f@example.net", "d@ex\u0090ample.com",
              "\ufeffgina.long.address@example.com", "hal\u200b@example.com",
              "  eve@example.com\t\r\n", "Fred@Example.com"]
    keyed, rejected, _ = dump_keys(_parsed(encrypt_cbc(plains, key, iv)), ds, CbcDecryptor(key, iv))
    assert dict(zip(rejected["line"].to_pylist(), rejected["reason"].to_pylist())) == {
        n: "invalid_plaintext" for n in range(1, 7)}
    assert keyed["key"].to_pylist() == [b"eve@example.com", b"fred@example.com"]  # whitespace is trimmed


@pytest.mark.parametrize("channel, plains", [
    ("email", ["mailto:ann@example.com", "MailTo:bob@example.org", "ann.mailto:x@example.com", "carl@example.com"]),
    ("sms", ["tel:+33612345678", "sms:+33612345679", "callto:+33612345670", "+33612345671"])])
def test_a_decrypted_id_written_with_a_uri_scheme_is_invalid_plaintext(channel, plains):
    """'mailto:ann@example.com' passed the email rule (a ':' in the local part): an AES-GCM source (no
    IV check) published 200 of 200 such addresses in its file audience, none matching a profile,
    exit 0. A scheme in front is no address: the decrypt-failure ratio judges them."""
    from transforms.crypto import CbcDecryptor
    from transforms.encrypt import encrypt_cbc

    key, iv = bytes(range(32)), bytes(range(100, 116))
    ds = DataSourceConfig(name="e", dpid=1, segments="/x/*", id_type="declared", declared="encrypted",
                          match_on="email" if channel == "email" else "phone", channel=channel,
                          encryption={"key": "env:K", "iv": "env:IV"})
    keyed, rejected, _ = dump_keys(_parsed(encrypt_cbc(plains, key, iv)), ds, CbcDecryptor(key, iv))
    expected = {1: "invalid_plaintext", 2: "invalid_plaintext"} | ({3: "invalid_plaintext"} if channel == "sms" else {})
    assert dict(zip(rejected["line"].to_pylist(), rejected["reason"].to_pylist())) == expected


def test_an_empty_encrypted_id_is_a_missing_value_as_a_hashed_one_is():
    """An empty or blank token counted as decrypt_failed, where a hashed source says missing_value: a
    dump with many empty IDs failed the run blaming 'wrong key or IV?' (found by the accounting model)."""
    from transforms.crypto import CbcDecryptor
    from transforms.encrypt import encrypt_cbc

    key, iv = bytes(range(32)), bytes(range(100, 116))
    ds = DataSourceConfig(name="e", dpid=1, segments="/x/*", id_type="declared", declared="encrypted",
                          match_on="email", channel="email", encryption={"key": "env:K", "iv": "env:IV"})
    keyed, rejected, _ = dump_keys(_parsed(["", "   ", None, *encrypt_cbc(["ann@example.com"], key, iv)]), ds,
                                   CbcDecryptor(key, iv))
    assert dict(zip(rejected["line"].to_pylist(), rejected["reason"].to_pylist())) == {
        1: "missing_value", 2: "missing_value", 3: "missing_value"}
    assert keyed["key"].to_pylist() == [b"ann@example.com"]
