"""The mismatch diagnosis' parts: the sample, the probes (its DoFns driven directly) and the decrypt
failure patterns. The findings' rules are in tests/test_diagnosis_findings.py, the whole graph runs
in tests/test_diagnosis.py."""
from __future__ import annotations

import base64
import random
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from transforms.config import DataSourceConfig, JobConfig
from transforms.crypto import GcmDecryptor
from transforms.diagnosis import AssembleFindings, ConfirmForms, ScreenForms, screen_step, worth_confirming
from transforms.diagnosis_crypto import CbcMaterial, cbc_findings
from transforms.diagnosis_forms import SCREEN_ALL, screen_columns, screen_rows, screen_whole, spread
from transforms.diagnosis_gcm import gcm_findings
from transforms.diagnosis_sample import SAMPLE_SCHEMA, SampleLines, bottom_k, candidates, place_hashes, rejected_candidates
from transforms.encrypt import encrypt_cbc, encrypt_gcm
from transforms.normalize import normalize_and_hash
from transforms.outcomes import Reason
from transforms.profiles import read_profiles
from transforms.secrets import RingKey

KEY, IV = bytes(range(32)), bytes(range(16, 32))


# ------------------------------------------------------------------------------------------ sample
def _lines(n: int) -> pa.Array:
    return pa.array([f"id-{i % (n // 2)}".encode() for i in range(n)], pa.binary())  # every ID twice


def test_the_sample_is_the_same_whatever_the_split_and_merge_order():
    values = _lines(3000)
    whole = bottom_k(candidates(values, Reason.NO_MATCHING_PROFILE, 10_000), 500, ordered=True)
    assert whole.num_rows == 500 and whole.schema == SAMPLE_SCHEMA
    assert whole["hash"].to_pylist() == sorted(whole["hash"].to_pylist())
    combine = SampleLines()
    for seed in (1, 2):
        order = list(range(0, 3000, 250))
        random.Random(seed).shuffle(order)
        parts = [combine.add_input(combine.create_accumulator(), (500, candidates(values.slice(s, 250), Reason.NO_MATCHING_PROFILE, 500)))
                 for s in order]
        merged = combine.merge_accumulators([combine.merge_accumulators(parts[:5]), combine.merge_accumulators(parts[5:])])
        assert combine.extract_output(merged).equals(whole)


def test_candidates_keep_the_smallest_hashes_and_their_duplicates():
    values = _lines(400)
    kept = candidates(values, Reason.NO_MATCHING_PROFILE, 50)
    assert kept.num_rows == 50
    all_hashes = np.sort(candidates(values, Reason.NO_MATCHING_PROFILE, 400)["hash"].to_numpy())
    assert np.array_equal(np.sort(kept["hash"].to_numpy()), all_hashes[:50])


def test_rejected_candidates_are_the_raw_ids_of_the_reasons_a_setting_may_explain():
    parsed = pa.table({"line": pa.array([1, 2, 3, 4], pa.int64()), "id": ["abc", "", "12345", "x:y"]})
    rejected = pa.table({"line": pa.array([1, 2, 3, 4], pa.int64()),
                         "reason": pa.array([Reason.INVALID_HASH, Reason.MISSING_VALUE, Reason.INVALID_VISITOR_ID,
                                             Reason.INVALID_DECLARED_ID]).dictionary_encode()})
    got = rejected_candidates(parsed, rejected, 10, "d.sync")
    assert sorted(zip(got["value"].to_pylist(), got["reason"].to_pylist())) == [
        (b"12345", "invalid_visitor_id"), (b"abc", "invalid_hash")]
    assert rejected_candidates(parsed, rejected, 0, "d.sync") is None


def test_the_sample_draws_lines_not_values():
    """One rejected ID on 600 of 1,000 lines (a placeholder the partner wrote for its empty cells):
    hashed by value, its lines came into a sample of 100 all or none (0 or 100 of the 100 where
    they are 60%). Drawn by place, each line on its own."""
    n = 1000
    ids = ["unknown" if i % 5 < 3 else f"{i:040x}" for i in range(n)]
    parsed = pa.table({"line": pa.array(range(1, n + 1), pa.int64()), "id": ids})
    rejected = pa.table({"line": parsed["line"], "reason": pa.array([Reason.INVALID_HASH] * n).dictionary_encode()})
    got = rejected_candidates(parsed, rejected, 100, "segments/d.sync")
    assert got.num_rows == 100 and 40 <= got["value"].to_pylist().count(b"unknown") <= 80
    files = pa.array(["a.sync", "b.sync"] * 500).dictionary_encode()  # the join's lines: a file each, dictionary-encoded
    places = place_hashes(files, parsed["line"])
    assert len(set(places.tolist())) == n
    assert np.array_equal(places, place_hashes(files.dictionary_decode(), parsed["line"]))
    assert np.array_equal(place_hashes("a.sync", parsed["line"]), place_hashes(pa.array(["a.sync"] * n), parsed["line"]))
    # the file's name, not its folder: the same dumps copied to gs:// or to another run folder, the same sample
    assert np.array_equal(place_hashes("/tmp/run1/in/a.sync", parsed["line"]), place_hashes("gs://b/in/a.sync", parsed["line"]))


# ------------------------------------------------------------------------------- probes, directly
def _job(tmp_path, **source) -> JobConfig:
    ds = {"name": "h", "dpid": 1, "segments": "/x/*", "id_type": "declared", "declared": "hashed", "match_on": "email"}
    return JobConfig(profiles={"path": str(tmp_path / "p.parquet"), "email": "email", "phone": None}, data_sources=[ds | source])


def _run_dofns(cfg: JobConfig, path: str, sample: pa.Table, profiles_batches) -> list[dict]:
    """The diagnosis' three DoFns in a row, without a pipeline (as the runner would call them)."""
    samples = {"h": sample}
    screen, confirm, assemble_ = ScreenForms(cfg), ConfirmForms(cfg), AssembleFindings(cfg)
    for dofn in (screen, confirm, assemble_):
        dofn.setup()
    screen.start_bundle()
    screened = [out for batch in profiles_batches for out in screen.process(screen_rows(batch), samples)]
    screened += [out.value for out in screen.finish_bundle()]
    probed = list(confirm.process(path, samples, screened))
    return dict(assemble_.process(None, samples, probed))["h"]


def test_digests_of_a_column_that_is_not_the_email_role_suggest_it_as_the_email_column(tmp_path):
    n = 1000
    work = [f"worker{i}@example.com" for i in range(n)]
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(n)], "email": [f"home{i}@example.org" for i in range(n)],
                             "work_email": work, "note": ["x"] * n}), tmp_path / "p.parquet")
    cfg = _job(tmp_path)
    digests = pa.array([bytes.fromhex(d) for d in normalize_and_hash(pa.array(work), "email")[0].to_pylist()])
    sample = bottom_k(candidates(digests, Reason.NO_MATCHING_PROFILE, n), n, ordered=True)
    batches = list(read_profiles(cfg.profiles.path, cfg, extra=screen_columns(cfg, cfg.profiles.path)))
    findings = _run_dofns(cfg, cfg.profiles.path, sample, batches)
    assert [(f["kind"], f["suggestion"], f["would_match"], f["sampled"]) for f in findings] == [
        ("column", {"profiles.email": "work_email"}, n, n)]  # match_on is already email
    assert "'work_email'" in findings[0]["message"] and "@" not in findings[0]["message"]


def test_screen_rows_screened_together_give_what_they_give_apart(tmp_path, monkeypatch):
    """ScreenForms screens a bundle's elements together (an extract of many small parts): per data
    source and probe, the sampled lines matched are those of the elements screened one by one, also
    where the elements' columns read otherwise (a part whose work_email holds no emails)."""
    n = 1200
    work = [f"Worker{i}@Example.com " for i in range(n)]
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(n)], "email": [f"home{i}@example.org" for i in range(n)],
                             "work_email": work, "crm": [f"C{i}" for i in range(n)]}), tmp_path / "p.parquet")
    cfg = _job(tmp_path)
    digests = pa.array([bytes.fromhex(d) for d in normalize_and_hash(pa.array(work), "email", "adobe")[0].to_pylist()]
                       + [bytes.fromhex(d) for d in normalize_and_hash(pa.array([f"home{i}@example.org" for i in range(0, n, 7)]), "email", "google")[0].to_pylist()])
    sample = bottom_k(candidates(digests, Reason.NO_MATCHING_PROFILE, len(digests)), len(digests), ordered=True)
    whole = next(read_profiles(cfg.profiles.path, cfg, extra=screen_columns(cfg, cfg.profiles.path)))
    batches = [screen_rows(whole.slice(i, 150)) for i in range(0, n, 150)]
    other = batches[3].set_column(batches[3].column_names.index("k:work_email"), "k:work_email",
                                  pa.array(["x"] * batches[3].num_rows))
    batches[3] = other  # this part's column reads as 'other', not 'email'

    def screened(hold: int) -> dict:
        monkeypatch.setattr(ScreenForms, "HOLD_ROWS", hold)
        screen = ScreenForms(cfg)
        screen.setup()
        screen.start_bundle()
        out = [o for batch in batches for o in screen.process(batch, {"h": sample})]
        out += [o.value for o in screen.finish_bundle()]
        united: dict = {}
        for name, probe, rows in out:
            united[(name, probe)] = np.union1d(united.get((name, probe), np.zeros(0, np.int64)), rows)
        return {k: v.tolist() for k, v in united.items()}

    apart, together = screened(1), screened(1 << 30)
    assert apart == together
    assert len(apart) >= 2 and sum(len(rows) for rows in apart.values()) > 100


def test_the_screen_reads_fewer_profiles_for_bigger_samples():
    def sample(n):
        return pa.table({"hash": pa.array(range(n), pa.uint64()), "reason": ["r"] * n, "value": [b"v"] * n})
    assert screen_step({"a": sample(50)}) == 1
    assert screen_step({"a": sample(100_000)}) == 10  # a finding needs 1,000 lines: 1 in 160 profiles shows ~6
    assert screen_step({"a": sample(100_000), "b": sample(2_000)}) == 1  # the smallest threshold decides


def test_only_forms_that_add_lines_on_the_screen_are_computed_over_every_profile():
    def probe(normalization, rows):
        form = ("k:email", "digest", "email", normalization, "sha256")
        return "h", (form, "hex:sha256", "normalization", (("normalization", normalization),)), np.asarray(rows)
    screened = [probe("adobe", [1, 2, 3, 4]), probe("meta", [1, 2, 3, 4]),  # the same lines: the preferred one
                probe("google", [1, 2, 3, 5]),  # as many lines, not the same: all profiles decide
                probe("uid2", [1, 2]), probe("uid2", [3]),  # two batches: [1, 2, 3], inside adobe's lines
                probe("none", [2, 9])]  # line 9: something no better probe has
    kept = {p.form.normalization for _, p in worth_confirming(screened)}
    assert kept == {"adobe", "google", "none"}
    assert worth_confirming([]) == []


def test_a_small_extract_is_screened_whole_and_a_big_one_in_part():
    small = pa.table({"profile_id": [f"p{i}" for i in range(1000)], "opt_out": [False] * 1000})
    assert screen_rows(small).column_names == ["profile_id"] and screen_rows(small).num_rows == 1000
    n = SCREEN_ALL + 16 * 4000
    big = pa.table({"profile_id": pa.array(np.arange(n)).cast(pa.string())})
    whole = screen_rows(big)
    assert whole["profile_id"].to_pylist()[:SCREEN_ALL] == [str(i) for i in range(SCREEN_ALL)]
    assert abs(whole.num_rows - SCREEN_ALL - 4000) < 250
    # read in two batches, the file's rows are picked the same way
    halves = [screen_rows(big.slice(0, n // 2), 0), screen_rows(big.slice(n // 2), n // 2)]
    assert pa.concat_tables(halves).equals(whole)


def test_an_extract_of_many_files_shares_the_rows_screened_whole_among_them():
    """Each file's first SCREEN_ALL rows were screened whole: Spark's 200 parts of 5,000 profiles
    were all screened, where 1 in 16 was meant. The whole rows are now SCREEN_ALL for the extract."""
    assert screen_whole(1) == SCREEN_ALL and screen_whole(0) == SCREEN_ALL
    part = pa.table({"profile_id": pa.array(np.arange(5000)).cast(pa.string())})
    screened = screen_rows(part, 0, screen_whole(200))
    assert screened["profile_id"].to_pylist()[:40] == [str(i) for i in range(40)]
    assert abs(screened.num_rows - 40 - (5000 - 40) / 16) < 60
    assert screen_rows(part.slice(0, 30), 0, screen_whole(3)).num_rows == 30  # a small extract in 3 files: whole


def test_the_screen_spreads_over_the_extract_without_a_period():
    picked = spread(160_000, 16).to_numpy()
    assert abs(len(picked) - 10_000) < 400 and np.array_equal(picked, spread(160_000, 16).to_numpy())
    assert 0.4 < np.mean(picked % 2) < 0.6  # odd and even rows alike (a stride of 16 sees only even ones)
    assert not np.array_equal(spread(1000, 4, salt=1).to_numpy(), spread(1000, 4).to_numpy())
    assert len(spread(10, 1)) == 10


# ------------------------------------------------------------------------------ decrypt failures
def _email_source(**extra) -> DataSourceConfig:
    return DataSourceConfig(name="e", dpid=1, segments="/x/*", id_type="declared", declared="encrypted", match_on="email",
                            channel="email", encryption={"key": "env:K", "iv": "env:I"}, **extra)


def _sms_source() -> DataSourceConfig:
    return DataSourceConfig(name="s", dpid=1, segments="/x/*", id_type="declared", declared="encrypted", match_on="phone",
                            channel="sms", encryption={"key": "env:K", "iv": "env:I"})


EMAILS = [f"someone.{i}@example.com" for i in range(40)]


def test_tokens_under_another_key_point_at_the_key():
    tokens = pa.array(encrypt_cbc(EMAILS, bytes(32), IV))
    (finding,) = cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}))
    assert (finding.kind, finding.suggestion) == ("key", (("encryption.key", None),))
    assert finding.would_match >= 38  # a wrong key leaves a valid padding 1 time in ~256


def test_an_aes128_key_and_iv_swapped_in_the_config_are_said_so():
    """An AES-128 key and the IV are both 16 bytes: with their references swapped (key: env:THE_IV,
    iv: env:THE_KEY) every token failed and the finding said "they are under another key ...; check
    encryption.key" -- the operator checked the key the partner gave, found it right, and looked no
    further. Read the other way round they decrypt: the finding says the two are swapped."""
    key = KEY[:16]
    tokens = pa.array(encrypt_cbc(EMAILS, key, IV))
    (finding,) = cbc_findings(_email_source(), tokens, CbcMaterial(IV, key, {"hex": IV}))
    assert (finding.kind, finding.suggestion, finding.would_match) == (
        "key_or_iv", (("encryption.key", None), ("encryption.iv", None)), 40)
    assert "swapped" in finding.message
    (finding,) = cbc_findings(_email_source(), pa.array(encrypt_cbc(EMAILS, bytes(16), IV)), CbcMaterial(IV, key, {"hex": IV}))
    assert finding.kind == "key"  # under another key: not said to be swapped


def test_tokens_under_another_iv_point_at_the_iv_and_damaged_tokens_at_nothing():
    tokens = pa.array(encrypt_cbc(EMAILS, KEY, bytes(16)))
    (finding,) = cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}))
    assert (finding.kind, finding.suggestion, finding.would_match) == ("iv", (("encryption.iv", None),), 40)
    damaged = pa.array([base64.b64encode(b"fifteen bytes!!").decode(), "not base64!"])
    assert cbc_findings(_email_source(), damaged, CbcMaterial(KEY, IV, {"hex": KEY})) == []


def test_tokens_that_are_not_whole_aes_blocks_are_said_so_not_blamed_on_the_key_or_iv():
    """AES-GCM key-ring tokens (key id, nonce, ciphertext, tag: 4 + 12 + n + 16 bytes) sent to a data
    source configured for AES-CBC: valid base64 whose values are not whole 16-byte blocks, which no
    key or IV can give; the run failed with 'wrong key or IV?'. They are said to be no AES-CBC
    ciphertexts. A damaged token or two (fewer than 8 distinct) stays no finding."""
    ring_key = RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))
    tokens = [t for t in encrypt_gcm(EMAILS, ring_key) if len(base64.b64decode(t)) % 16]
    assert len(tokens) >= 30
    (finding,) = cbc_findings(_email_source(), pa.array(tokens), CbcMaterial(KEY, IV, {"hex": KEY}))
    assert (finding.kind, finding.suggestion, finding.would_match) == ("token_encoding", (), len(tokens))
    assert "not whole 16-byte AES blocks" in finding.message and "wrong" not in finding.message
    assert cbc_findings(_email_source(), pa.array(tokens[:7]), CbcMaterial(KEY, IV, {"hex": KEY})) == []


def test_tokens_under_another_iv_beside_tokens_under_another_key_are_not_all_blamed_on_the_iv():
    """30 tokens under a wrong IV, 10 under another key (the padding of their last block fails, which
    a wrong IV never does) and 10 random whole blocks: the IV finding said all 50 would decrypt
    once encryption.iv is fixed. It counts the 30; the 20 whose padding fails point at the key."""
    random_blocks = [base64.b64encode(random.Random(i).randbytes(32)).decode() for i in range(10)]
    tokens = pa.array(encrypt_cbc(EMAILS[:30], KEY, bytes(16)) + encrypt_cbc(EMAILS[30:], bytes(32), IV) + random_blocks)
    found = cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}))
    assert [(f.kind, f.would_match) for f in found][0] == ("iv", 30)
    assert found[1].kind == "key" and 18 <= found[1].would_match <= 20


PHONES = [f"+3361200{i:04d}" for i in range(40)]  # E.164: 12 bytes, one AES block each (an SMS source)
SHORT_EMAILS = [f"u{i}@ex.fr" for i in range(40)]  # 8 to 9 bytes: one block each, padding of two lengths


@pytest.mark.parametrize("plaintexts", [PHONES, SHORT_EMAILS], ids=["phones", "short-emails"])
def test_one_block_tokens_under_another_iv_point_at_the_iv_not_the_key(plaintexts):
    """A plaintext under 16 bytes is one AES block: its padding is in the block a wrong IV garbles,
    so the padding fails as under a wrong key. But a wrong IV XORs every block with the same bytes:
    the last decrypted byte is the padding XOR a constant, a wrong key makes it random."""
    source = _sms_source() if plaintexts is PHONES else _email_source()
    wrong_iv = pa.array(encrypt_cbc(plaintexts, KEY, bytes(16)))
    (finding,) = cbc_findings(source, wrong_iv, CbcMaterial(KEY, IV, {"hex": KEY}))
    assert (finding.kind, finding.suggestion, finding.would_match) == ("iv", (("encryption.iv", None),), 40)
    wrong_key = pa.array(encrypt_cbc(plaintexts, bytes(32), IV))
    (finding,) = cbc_findings(source, wrong_key, CbcMaterial(KEY, IV, {"hex": KEY}))
    assert (finding.kind, finding.suggestion) == ("key", (("encryption.key", None),)) and finding.would_match >= 38


@pytest.mark.parametrize("under_iv", [300, 450])
def test_one_block_tokens_under_another_iv_beside_ones_under_another_key_are_told_apart(under_iv):
    """500 one-block tokens (phones), some under a wrong IV, the others under another key: at 300 / 200
    the finding said 'too few to tell a wrong key from a wrong IV' for all 500; at 450 / 50, that all
    500 would decrypt once encryption.iv is fixed. The tokens whose last byte is a padding XOR the
    IV's bits count for the IV; the others, whose last byte is random, for the key (a random byte
    fits that pattern 1 time in 16)."""
    numbers = [f"+3361200{i:04d}" for i in range(500)]
    source = _sms_source()
    tokens = encrypt_cbc(numbers[:under_iv], KEY, bytes(16)) + encrypt_cbc(numbers[under_iv:], bytes(32), IV)
    found = {f.kind: f.would_match for f in cbc_findings(source, pa.array(tokens), CbcMaterial(KEY, IV, {"hex": KEY}))}
    assert set(found) == {"iv", "key"}, found
    under_key = 500 - under_iv
    assert under_iv <= found["iv"] <= under_iv + under_key // 8 and found["iv"] + found["key"] == 500


def test_one_block_tokens_that_decrypt_to_text_that_is_no_address_blame_neither_key_nor_iv():
    """Right key and IV, plaintexts that are not addresses (invalid_plaintext): their padding is a
    padding XOR nothing -- not a wrong IV."""
    tokens = pa.array(encrypt_cbc([f"nobody {i}" for i in range(40)], KEY, IV))
    assert cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY})) == []


def test_a_few_one_block_failures_say_key_or_iv():
    """Too few one-block tokens to tell a constant from chance: both fields are named."""
    tokens = pa.array(encrypt_cbc(PHONES[:4], KEY, bytes(16)))
    (finding,) = cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}))
    assert (finding.kind, dict(finding.suggestion), finding.would_match) == (
        "key_or_iv", {"encryption.key": None, "encryption.iv": None}, 4)


def _urlsafe(tokens: list[str]) -> list[str]:
    return [t.replace("+", "-").replace("/", "_") for t in tokens]


@pytest.mark.parametrize("plaintexts", [EMAILS, PHONES], ids=["emails", "one-block-phones"])
@pytest.mark.parametrize("variant", ["url-safe", "unpadded", "url-safe-unpadded", "blanks", "quoted", "single-quoted"])
def test_tokens_in_another_base64_alphabet_or_without_padding_are_a_token_encoding_finding(plaintexts, variant):
    """Right key and IV, tokens written as url-safe base64 ('-' '_') and/or without their '='
    padding (or with blanks inside): they do not decode as the scheme's standard base64, so the key,
    the IV and the key encoding are all beside the point. Read back as standard padded base64 they
    decrypt to valid addresses: the finding says so, names no config field (none fixes it) and
    repeats no token."""
    source = _sms_source() if plaintexts is PHONES else _email_source()
    standard = encrypt_cbc(plaintexts, KEY, IV)
    sent = {"url-safe": _urlsafe(standard), "unpadded": [t.rstrip("=") for t in standard],
            "url-safe-unpadded": [t.rstrip("=") for t in _urlsafe(standard)],
            "blanks": [f"{t[:8]} {t[8:]}" for t in standard], "quoted": [f'"{t}"' for t in standard],
            "single-quoted": [f"'{t}'" for t in standard]}[variant]  # (quoted: no diagnosis, 'wrong key or IV?')
    failed = [t for t, s in zip(sent, standard) if t != s]  # those the import rejects as decrypt_failed
    assert len(failed) >= 8
    (finding,) = cbc_findings(source, pa.array(failed), CbcMaterial(KEY, IV, {"hex": KEY}), "FR")
    assert (finding.kind, finding.suggestion, finding.would_match) == ("token_encoding", (), len(failed))
    assert ("url-safe" in finding.message) == variant.startswith("url-safe")
    assert ("without '=' padding" in finding.message) == variant.endswith("unpadded")
    assert ("in quotes" in finding.message) == variant.endswith("quoted")
    assert "standard base64" in finding.message and "ask the partner" in finding.message
    assert not any(t[:12] in finding.message for t in failed)


@pytest.mark.parametrize("plaintexts", [EMAILS, PHONES], ids=["emails", "one-block-phones"])
def test_hex_ciphertexts_are_a_token_encoding_finding_not_a_wrong_key(plaintexts):
    """Right key and IV, ciphertexts sent as hex: 64 hex characters are valid base64 of 48 bytes,
    three whole AES blocks whose padding fails, and the run failed naming the key ('check
    encryption.key'), which is right. Read as hex they decrypt: the finding says hex, names no field."""
    source = _sms_source() if plaintexts is PHONES else _email_source()
    sent = [base64.b64decode(t).hex() for t in encrypt_cbc(plaintexts, KEY, IV)]
    for tokens in (sent, [t.upper() for t in sent]):
        (finding,) = cbc_findings(source, pa.array(tokens), CbcMaterial(KEY, IV, {"hex": KEY}), "FR")
        assert (finding.kind, finding.suggestion, finding.would_match) == ("token_encoding", (), len(sent))
        assert "hex" in finding.message and "ask the partner" in finding.message and "encryption.key" not in finding.message
        assert not any(t[:12] in finding.message for t in tokens)
    under_another_key = [base64.b64decode(t).hex() for t in encrypt_cbc(plaintexts, bytes(32), IV)]
    assert [f.kind for f in cbc_findings(source, pa.array(under_another_key), CbcMaterial(KEY, IV, {"hex": KEY}))] != ["token_encoding"]


@pytest.mark.parametrize("plaintexts", [EMAILS, PHONES], ids=["emails", "phones"])
def test_addresses_sent_unencrypted_are_said_so_not_blamed_on_the_key_or_iv(plaintexts):
    """A partner sending the addresses in clear to a data source configured 'declared: encrypted' (or
    an operator who set it so for a plain one): no token decodes to whole AES blocks, and the run
    failed with 'wrong key or IV?' and no diagnosis -- the key and IV were checked for nothing. As
    they are, the tokens are valid addresses of the channel: the finding says they are not
    encrypted, names no field and repeats no address. On AES-GCM too."""
    source = _sms_source() if plaintexts is PHONES else _email_source()
    sent = [f" {p.upper()}" for p in plaintexts]  # as a partner's file may hold them: any case, blanks
    for found in (cbc_findings(source, pa.array(sent), CbcMaterial(KEY, IV, {"hex": KEY}), "FR"),
                  _gcm(_gcm_sample([Reason.DECRYPT_FAILED] * len(sent), [t.encode() for t in sent]),
                       [RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))], source)):
        (finding,) = found
        assert (finding.kind, finding.suggestion, finding.would_match) == ("token_encoding", (), len(sent))
        assert "not encrypted" in finding.message and "declared: plain" in finding.message
        assert not any(p.lower() in finding.message.lower() or p[-6:] in finding.message for p in plaintexts)
    assert [f.kind for f in cbc_findings(_email_source(), pa.array(encrypt_cbc(EMAILS, bytes(32), IV)),
                                         CbcMaterial(KEY, IV, {"hex": KEY}))] == ["key"]


@pytest.mark.parametrize("channel", ["email", "sms"])
def test_addresses_of_the_other_channel_point_at_the_channel(channel):
    """A partner encrypting phone numbers for a data source configured 'channel: email' (or email
    addresses for 'channel: sms'), right key and IV: every ID is invalid_plaintext and the run failed
    with "they decrypt, but not to email addresses (another channel or field, a URI scheme ..., or a
    wrong IV ...?)". The finding names the channel (and the match_on role that goes with it), on
    AES-CBC and AES-GCM; it repeats no address."""
    source = _email_source() if channel == "email" else _sms_source()
    sent, other, role = (PHONES, "sms", "phone") if channel == "email" else (EMAILS, "email", "email")
    (finding,) = cbc_findings(source, pa.array(encrypt_cbc(sent, KEY, IV)), CbcMaterial(KEY, IV, {"hex": KEY}), None)
    assert (finding.kind, finding.suggestion, finding.would_match) == ("channel", (("channel", other), ("match_on", role)), 40)
    assert not any(a in finding.message for a in sent) and "someone" not in finding.message
    ring = [RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    sample = _gcm_sample([Reason.INVALID_PLAINTEXT] * 40, [t.encode() for t in encrypt_gcm(sent, ring[0])])
    assert [(f.kind, f.would_match) for f in gcm_findings(source, sample, GcmDecryptor(
        ring, datetime(2026, 6, 1, tzinfo=timezone.utc)), None)] == [("channel", 40)]


def test_phone_numbers_without_a_country_code_on_a_source_read_in_no_region_point_at_default_region():
    """A partner encrypting French numbers as dialled in France ('06 12 00 00 07'), on an SMS source
    with no default_region: every one is invalid_plaintext, and the run failed with "they decrypt, but
    not to phone numbers (another channel or field, a URI scheme ..., or a wrong IV ...?)" -- no word
    of the setting that reads them. The finding names default_region (the region is the partner's:
    '06...' is a mobile number in France and in the Netherlands), repeats no number; AES-GCM too. With
    a region, or on numbers in no national form, no such finding."""
    national = [f"06 12 00 {i // 10:02d} {i % 10:02d}" for i in range(40)]
    tokens = pa.array(encrypt_cbc(national, KEY, IV))
    (finding,) = cbc_findings(_sms_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}), None)
    assert (finding.kind, finding.suggestion, finding.would_match) == ("region", (("default_region", None),), 40)
    assert "without a country code" in finding.message and "06 12" not in finding.message
    ring = [RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    sample = _gcm_sample([Reason.INVALID_PLAINTEXT] * 40, [t.encode() for t in encrypt_gcm(national, ring[0])])
    assert [(f.kind, f.would_match) for f in gcm_findings(_sms_source(), sample, GcmDecryptor(
        ring, datetime(2026, 6, 1, tzinfo=timezone.utc)), None)] == [("region", 40)]
    assert cbc_findings(_sms_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}), "FR") == []
    others = pa.array(encrypt_cbc([f"fax 06 12 00 00 {i:02d}" for i in range(40)], KEY, IV))
    assert cbc_findings(_sms_source(), others, CbcMaterial(KEY, IV, {"hex": KEY}), None) == []


def test_tokens_that_need_another_alphabet_and_still_fail_are_no_token_encoding_finding():
    """Url-safe tokens under another key: re-read as standard base64 they still decrypt to nothing."""
    tokens = pa.array(_urlsafe(encrypt_cbc(EMAILS, bytes(32), IV)))
    assert [f.kind for f in cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}))] != ["token_encoding"]


def _padded_otherwise(plaintexts: list[str], padding: str, key: bytes = KEY) -> list[str]:
    """AES-CBC under ``key`` and IV with zero bytes as padding (none on a whole block: PHP's openssl
    or mcrypt, Java's NoPadding) or ANSI X.923's (zeros, then the pad length), not PKCS#7."""
    out = []
    for value in plaintexts:
        data = value.encode()
        n = -len(data) % 16 if padding == "zero" else 16 - len(data) % 16
        data += b"\0" * n if padding == "zero" else bytes(n - 1) + bytes([n])
        encryptor = Cipher(algorithms.AES(key), modes.CBC(IV)).encryptor()
        out.append(base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode())
    return out


@pytest.mark.parametrize("padding", ["zero", "x923"])
@pytest.mark.parametrize("plaintexts", [EMAILS, PHONES], ids=["emails", "one-block-phones"])
def test_tokens_padded_otherwise_than_pkcs7_are_said_so_not_blamed_on_the_key(plaintexts, padding):
    """Right key and IV, plaintexts zero-padded (or X.923): the PKCS#7 check fails as under a wrong
    key, and the run failed with 'they are under another key ...; check encryption.key'. Read with
    that padding they decrypt to valid addresses: the finding says so and names no field."""
    source = _sms_source() if plaintexts is PHONES else _email_source()
    tokens = _padded_otherwise(plaintexts, padding)
    (finding,) = cbc_findings(source, pa.array(tokens), CbcMaterial(KEY, IV, {"hex": KEY}), "FR")
    assert (finding.kind, finding.suggestion, finding.would_match) == ("token_encoding", (), 40)
    assert "PKCS#7" in finding.message and "ask the partner" in finding.message and "encryption.key" not in finding.message
    under_another_key = _padded_otherwise(plaintexts, padding, bytes(32))
    assert [f.kind for f in cbc_findings(source, pa.array(under_another_key), CbcMaterial(KEY, IV, {"hex": KEY}))] == ["key"]


@pytest.mark.parametrize("charset", ["latin-1", "cp1252"])
def test_plaintexts_encrypted_as_latin1_are_said_so_not_blamed_on_the_iv(charset):
    """Right key and IV, addresses encrypted as Latin-1 text (an accent in their first 16 bytes):
    their padding is valid and the rest reads, the wrong-IV shape, and the run failed 'the key is
    right and the IV is not ... (suggested: encryption.iv: null)'. Read as Windows-1252 they are
    valid addresses: the finding names the charset, no field, and no plaintext."""
    plaintexts = [f"zoé.müller{i}@example.com".encode(charset) for i in range(40)]
    tokens = pa.array(encrypt_cbc(plaintexts, KEY, IV))
    (finding,) = cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}), "FR")
    assert (finding.kind, finding.suggestion, finding.would_match) == ("token_encoding", (), 40)
    assert "not UTF-8" in finding.message and "encryption.iv" not in finding.message and "zo" not in finding.message
    under_another_iv = pa.array(encrypt_cbc(plaintexts, KEY, bytes(16)))
    assert [f.kind for f in cbc_findings(_email_source(), under_another_iv, CbcMaterial(KEY, IV, {"hex": KEY}))] == ["iv"]


def test_latin1_plaintexts_whose_padding_fails_are_not_counted_as_latin1():
    """Latin-1 addresses, 40 with PKCS#7 padding and 8 of exactly 32 bytes sent without any (their
    last byte, 'm', is no padding): the 8 fail to decrypt, like the lines of a wrong key, and have no
    plaintext; their bytes, were they read all the same, would be Latin-1 addresses too. The charset
    finding counts the 40 that decrypt, no more."""
    padded = [f"zoé.müller{i}@example.com".encode("latin-1") for i in range(40)]
    unpadded = []
    for i in range(8):
        data = f"zoé.müller{i:02d}@my-mail.example.com".encode("latin-1")
        assert len(data) == 32 and data[-1] > 16
        encryptor = Cipher(algorithms.AES(KEY), modes.CBC(IV)).encryptor()
        unpadded.append(base64.b64encode(encryptor.update(data) + encryptor.finalize()).decode())
    tokens = pa.array(encrypt_cbc(padded, KEY, IV) + unpadded)
    (finding,) = cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}), "FR")
    assert (finding.kind, finding.would_match) == ("token_encoding", 40) and "not UTF-8" in finding.message


def _iv_in_front(plaintexts: list[str], seed: int = 5) -> list[str]:
    """Each token under its own random IV, sent in front of its ciphertext (IV || ciphertext)."""
    rng = random.Random(seed)
    out = []
    for value in plaintexts:
        iv = rng.randbytes(16)
        out.append(base64.b64encode(iv + base64.b64decode(encrypt_cbc([value], KEY, iv)[0])).decode())
    return out


@pytest.mark.parametrize("plaintexts", [EMAILS, PHONES], ids=["emails", "phones"])
def test_tokens_that_carry_their_own_iv_in_front_are_said_so_not_blamed_on_encryption_iv(plaintexts):
    """A random IV per token, prepended: decrypted whole under the configured IV, the first block is
    garbage and the rest reads -- the wrong-IV shape. But the first blocks are unrelated garbage (a
    wrong fixed IV XORs every plaintext with the same bytes), and read as IV || ciphertext the tokens
    decrypt to valid addresses: no value of encryption.iv would fix them."""
    source = _sms_source() if plaintexts is PHONES else _email_source()
    (finding,) = cbc_findings(source, pa.array(_iv_in_front(plaintexts)), CbcMaterial(KEY, IV, {"hex": KEY}), "FR")
    assert (finding.kind, finding.suggestion, finding.would_match) == ("embedded_iv", (), 40)
    assert "their own IV in their first 16 bytes" in finding.message and "check encryption.iv" not in finding.message
    # the configured IV itself in front: every first block decrypts alike, and the run said 'check encryption.iv'
    sent = [base64.b64encode(IV + base64.b64decode(t)).decode() for t in encrypt_cbc(plaintexts, KEY, IV)]
    (finding,) = cbc_findings(source, pa.array(sent), CbcMaterial(KEY, IV, {"hex": KEY}), "FR")
    assert (finding.kind, finding.suggestion, finding.would_match) == ("embedded_iv", (), 40)
    assert "the configured IV in front" in finding.message and "check encryption.iv" not in finding.message


def test_a_wrong_fixed_iv_is_still_the_iv_when_the_text_after_the_first_block_is_an_address():
    """Long addresses under a wrong fixed IV: what follows their first 16 bytes is itself a valid
    address, as it would be with an IV in front; the first blocks, all XORed with one IV, say which."""
    emails = [f"averylongfirstname.surname{i}@example.com" for i in range(40)]  # bytes 16..: 'e.surname0@example.com'
    tokens = pa.array(encrypt_cbc(emails, KEY, bytes(16)))
    (finding,) = cbc_findings(_email_source(), tokens, CbcMaterial(KEY, IV, {"hex": KEY}))
    assert (finding.kind, finding.suggestion, finding.would_match) == ("iv", (("encryption.iv", None),), 40)


def _gcm_sample(reasons: list, values: list[bytes]) -> pa.Table:
    return pa.table({"hash": pa.array(range(len(values)), pa.uint64()), "reason": reasons, "value": pa.array(values, pa.binary())})


def _gcm(sample: pa.Table, ring: list[RingKey], source: DataSourceConfig | None = None) -> list:
    return gcm_findings(source or _email_source(), sample, GcmDecryptor(ring, datetime(2026, 6, 1, tzinfo=timezone.utc)), "FR")


def test_gcm_failures_name_only_key_ids_of_the_ring():
    """A key id of the ring is named with its reason; a key id the ring lacks is never printed (its 4
    bytes may be anything the partner sent), only how many lines repeat it."""
    ring = [RingKey(id=i, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc)) for i in (3, 7)]
    tokens = encrypt_gcm(EMAILS[:30], ring[0], [bytes(12)] * 30) + encrypt_gcm(EMAILS[:25], ring[1], [bytes(12)] * 25)
    sample = _gcm_sample([Reason.EXPIRED_KEY] * 30 + [Reason.UNKNOWN_KEY] * 25 + [Reason.DECRYPT_FAILED, Reason.NO_MATCHING_PROFILE],
                         [t.encode() for t in tokens] + [b"short", b"x"])
    expired, unknown = _gcm(sample, ring[:1])  # key 7 is not in this ring
    assert (expired.kind, expired.would_match) == ("key_id", 30)
    assert "key id 3, which had expired on the run date" in expired.message
    assert (unknown.kind, unknown.would_match) == ("key_id", 25)
    assert "an unknown key id repeated on 25 lines" in unknown.message and "7" not in unknown.message


def test_gcm_tokens_that_are_not_ring_tokens_are_one_finding_that_names_no_key_id():
    """Base64 of unencrypted addresses: their first 4 bytes are the addresses' first letters, which
    repeat; random 4-byte prefixes (another scheme) each make a group of one. Either way one finding,
    and no key id number in it."""
    names = ["john", "mari", "chri", "info", "davi"]
    plain = [f"{names[i % 5]}.x{i}@example-company.com".encode() for i in range(200)]
    ring = [RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    (finding,) = _gcm(_gcm_sample([Reason.UNKNOWN_KEY] * 200, [base64.b64encode(v) for v in plain]), ring)
    assert (finding.kind, finding.would_match) == ("key_id", 200)
    assert "not key-ring tokens" in finding.message and "readable text" in finding.message
    assert not any(str(int.from_bytes(n.encode(), "big")) in finding.message or n in finding.message for n in names)
    foreign = encrypt_cbc(EMAILS, KEY, IV)
    (finding,) = _gcm(_gcm_sample([Reason.UNKNOWN_KEY] * 40, [t.encode() for t in foreign]), ring)
    assert (finding.kind, finding.would_match) == ("key_id", 40)
    assert "not key-ring tokens (their first 4 bytes, where the key id belongs, vary" in finding.message
    assert not any(str(int.from_bytes(base64.b64decode(t)[:4], "big")) in finding.message for t in foreign)


@pytest.mark.parametrize("variant", ["url-safe-unpadded", "single-quoted"])
def test_gcm_tokens_in_another_base64_are_the_cbc_token_encoding_finding(variant):
    """The AES-CBC reading of tokens in another base64 serves AES-GCM (the ring's keys decrypt them
    read back as standard base64); under a key the ring has not, no such finding."""
    ring = [RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    other = [RingKey(id=7, secret=bytes([1]) * 32, activates=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    for keys, expected in ((ring, ["token_encoding"]), (other, [])):
        standard = encrypt_gcm(EMAILS, keys[0])
        sent = [f"'{t}'" for t in standard] if variant == "single-quoted" else [t.rstrip("=") for t in _urlsafe(standard)]
        sent = [t for t, s in zip(sent, standard) if t != s]  # those the import rejects as decrypt_failed
        findings = _gcm(_gcm_sample([Reason.DECRYPT_FAILED] * len(sent), [t.encode() for t in sent]), ring)
        assert [f.kind for f in findings if f.kind == "token_encoding"] == expected, findings
        if expected:
            assert findings[0].would_match == len(sent) and "under the key ring" in findings[0].message
    old = RingKey(id=3, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc), expires=datetime(2026, 2, 1, tzinfo=timezone.utc))
    mixed = _gcm_sample([Reason.DECRYPT_FAILED] * 10 + [Reason.EXPIRED_KEY] * 40, [f"'{t}'".encode() for t in encrypt_gcm(
        EMAILS[:10], ring[0])] + [t.encode() for t in encrypt_gcm(EMAILS, old)])  # quoted, and under an expired key: both said
    assert [(f.kind, f.would_match) for f in _gcm(mixed, [*ring, old])] == [("token_encoding", 10), ("key_id", 40)]


def test_gcm_phone_numbers_written_with_a_uri_scheme_are_named_from_the_fixed_list():
    """'tel:+33...' under the ring's key: invalid_plaintext, named as the IV check names it on AES-CBC
    (from iv_check.SCHEMES, never from the text); bare numbers that fail otherwise are not."""
    ring = [RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    for sent, expected in (([f"TEL:{p}" for p in PHONES], "URI scheme ('tel:')"), ([f"fax {p}" for p in PHONES], None)):
        sample = _gcm_sample([Reason.INVALID_PLAINTEXT] * 40, [t.encode() for t in encrypt_gcm(sent, ring[0])])
        messages = [f.message for f in _gcm(sample, ring, _sms_source())]
        assert [m for m in messages if "URI scheme" in m] == ([] if expected is None else messages), messages
        assert expected is None or (expected in messages[0] and "+336" not in messages[0])


def test_the_screen_reads_the_csv_header_as_the_reader_does(tmp_path):
    """A BOM and a quoted name with a comma: the screen asks the reader for the columns it will find
    (a naive split of the header would ask for columns that do not exist and fail the import)."""
    path = tmp_path / "p.csv"
    path.write_bytes('\ufeffprofile_id,email,"work, email",mobile\np1,a@example.com,b@example.com,+33 6 12 34 56 78\n'.encode())
    cfg = JobConfig(profiles={"path": str(path), "phone": "mobile"},
                    data_sources=[{"name": "h", "dpid": 1, "segments": "/x/*", "id_type": "declared", "declared": "hashed",
                                   "match_on": "email"}])
    assert screen_columns(cfg, str(path)) == ["email", "mobile", "work, email"]
    (table,) = read_profiles(str(path), cfg, extra=screen_columns(cfg, str(path)))
    assert table["k:work, email"].to_pylist() == ["b@example.com"]


def test_forms_that_differ_only_by_a_missing_region_sort():
    """A phone data source with its own default_region beside one without (none under profiles):
    their forms of one phone column differ only in the region, "US" against None, and sorting them
    failed the import with a bare TypeError ('<' not supported between 'str' and 'NoneType')."""
    from transforms.diagnosis_forms import DIGEST, Form, in_order
    from transforms.diagnosis_plan import Probe

    us, none = (Form("k:phone", DIGEST, "phone", "adobe", "sha256", region) for region in ("US", None))
    assert in_order({us, none}) == [none, us]
    screened = [("a", (tuple(form), "id", "column", (("profiles.phone", "phone"),)), np.array(rows))
                for form, rows in ((us, [1, 2]), (none, [3, 4]))]  # other lines: both kept
    kept = worth_confirming(screened)
    assert [probe.form for _, probe in kept] == [none, us] and all(isinstance(p, Probe) for _, p in kept)
