"""The mismatch diagnosis' findings as the report reads them: sorted, thresholded, never repeating
what a better one explains; a change that would lose the lines matching now is a partial
explanation; the one-line failure of a run names only a finding that explains what failed. The
findings themselves are made in tests/test_diagnosis_parts.py and tests/test_diagnosis.py."""
from __future__ import annotations

import numpy as np
import pytest

from transforms.config import DataSourceConfig, JobConfig
from transforms.diagnosis_findings import assemble
from transforms.errors import RunFailed
from transforms.outcomes import Counts, Metric, Reason, count
from transforms.report import build_report, check_report


def _email_source(**extra) -> DataSourceConfig:
    return DataSourceConfig(name="e", dpid=1, segments="/x/*", id_type="declared", declared="encrypted", match_on="email",
                            channel="email", encryption={"key": "env:K", "iv": "env:I"}, **extra)


def test_findings_are_sorted_thresholded_and_never_repeat_what_a_better_one_explains():
    ds = DataSourceConfig(name="h", dpid=1, segments="/x/*", id_type="declared", declared="hashed", match_on="email")
    cfg = JobConfig(profiles={"path": "p.parquet"}, data_sources=[ds])
    probed = {
        ("normalization", (("normalization", "uid2"), ("digest", "hex"))): np.arange(0, 300),
        ("normalization", (("normalization", "meta"),)): np.arange(0, 300),  # the same lines: one finding
        ("normalization", (("normalization", "none"),)): np.arange(0, 120),  # explained by the one above
        ("column", (("match_on", "phone"),)): np.arange(600, 660),
        ("digest", (("digest", "base64"),)): np.arange(900, 909),  # under 1% of 1,000
    }
    findings = assemble(ds, cfg, 1000, probed, [])
    assert [(f["suggestion"], f["would_match"]) for f in findings] == [({"normalization": "meta"}, 300),
                                                                        ({"match_on": "phone"}, 60)]
    assert findings[0]["message"].startswith("300 of 1,000 sampled lines without a match are SHA-256 digests")
    assert all(f["sampled"] == 1000 for f in findings)


def _two_email_sources() -> JobConfig:
    hashed = DataSourceConfig(name="h", dpid=1, segments="/x/*", id_type="declared", declared="hashed", match_on="email")
    plain = DataSourceConfig(name="p", dpid=2, segments="/y/*", id_type="declared", declared="plain", match_on="email")
    return JobConfig(profiles={"path": "p.parquet"}, data_sources=[hashed, plain])


WORK_EMAIL = ("column", (("match_on", "email"), ("profiles.email", "work_email")))


def test_a_column_suggestion_names_no_field_already_so_and_says_a_profiles_field_is_job_wide():
    cfg = _two_email_sources()
    counts = Counts([count(Metric.RECEIVED, 30, "h"), count(Metric.REJECTED, 30, "h", Reason.NO_MATCHING_PROFILE)])
    findings = {"h": assemble(cfg.data_sources[0], cfg, 30, {WORK_EMAIL: np.arange(30)}, [])}
    (finding,) = build_report(cfg, counts, diagnosis=findings)["data_sources"]["h"]["diagnosis"]
    assert finding["suggestion"] == {"profiles.email": "work_email"}  # match_on is already email
    assert "'work_email'" in finding["message"]
    assert "profiles.email applies to every data source" in finding["message"] and "'p'" in finding["message"]


@pytest.mark.parametrize("reconciled", [250, 10])
def test_a_column_finding_is_a_partial_explanation_when_the_source_already_matches_more_lines(reconciled):
    """30 lines hold work emails, 250 match on the personal email column: moving the column would
    lose the 250 (and the other source's lines). The finding stays, as an explanation, with no
    change to apply; when the source matches fewer lines than the change would, it is the change."""
    cfg = _two_email_sources()
    counts = Counts([count(Metric.RECEIVED, 280, "h"), count(Metric.RECONCILED, reconciled, "h"),
                     count(Metric.REJECTED, 280 - reconciled, "h", Reason.NO_MATCHING_PROFILE)])
    findings = {"h": assemble(cfg.data_sources[0], cfg, 30, {WORK_EMAIL: np.arange(30)}, [])}
    (finding,) = build_report(cfg, counts, diagnosis=findings)["data_sources"]["h"]["diagnosis"]
    partial = reconciled == 250
    assert finding["suggestion"] == ({} if partial else {"profiles.email": "work_email"})
    assert ("partial explanation" in finding["message"]) == partial
    if partial:
        assert "already matches 250 lines on its current column ('email')" in finding["message"]
        assert "would lose" in finding["message"]
    else:
        # (not for sure: the other column may hold their values too, as a copy of the column does)
        assert finding["message"].endswith("would also lose the 10 lines matching now on its current column ('email'), "
                                           "unless the other column holds their values too")


def test_every_kind_of_decrypt_failure_finding_reads_would_decrypt():
    """The page says "would decrypt" for these kinds (transforms.report_view), "would match" else."""
    from transforms.diagnosis_findings import KIND_ORDER
    from transforms.report_view import DECRYPTION_KINDS

    assert DECRYPTION_KINDS == set(KIND_ORDER[KIND_ORDER.index("token_encoding"):])


def test_the_report_carries_the_findings_and_a_failed_decryption_names_the_top_one():
    ds = _email_source()
    cfg = JobConfig(profiles={"path": "p.parquet"}, data_sources=[ds])
    counts = Counts([count(Metric.RECEIVED, 10, "e"), count(Metric.REJECTED, 10, "e", Reason.DECRYPT_FAILED)])
    finding = {"kind": "key_encoding", "suggestion": {"encryption.key_encoding": "base64"}, "would_match": 10,
               "rejected": 10, "sampled": 10, "message": "10 of 10 sampled lines without a match decrypt to valid email addresses with the key read as base64"}
    report = build_report(cfg, counts, diagnosis={"e": [finding]})
    assert report["data_sources"]["e"]["diagnosis"] == [finding]
    assert build_report(cfg, counts)["data_sources"]["e"]["diagnosis"] == []
    with pytest.raises(RunFailed, match=r"diagnosis: 10 of 10 .* \(suggested: encryption.key_encoding: base64\)"):
        check_report(report, cfg)
    no_setting = {**finding, "kind": "token_encoding", "suggestion": {}, "message": "10 of 10 sampled lines are base64 ..."}
    with pytest.raises(RunFailed, match=r"diagnosis: 10 of 10 sampled lines are base64 \.\.\.\. Nothing was published"):
        check_report(build_report(cfg, counts, diagnosis={"e": [no_setting]}), cfg)


def test_a_failed_decryption_names_a_finding_that_leaves_it_failing_as_what_it_explains():
    """100 tokens fail, about 20 of them decrypt with the key read as base64: the run named 'suggested:
    encryption.key_encoding: base64' as the cause; applied, 80 of 100 still fail. Such a finding comes
    after the likeliest cause, as what it explains; one that fixes enough stays the cause."""
    ds = _email_source()
    cfg = JobConfig(profiles={"path": "p.parquet"}, data_sources=[ds])
    for explained, whole in ((10, False), (30, True)):
        counts = Counts([count(Metric.RECEIVED, 100, "e"), count(Metric.REJECTED, 100, "e", Reason.DECRYPT_FAILED)])
        finding = {"kind": "key_encoding", "suggestion": {"encryption.key_encoding": "base64"}, "would_match": explained,
                   "rejected": explained, "sampled": 50, "message": f"{explained} of 50 sampled lines without a match decrypt"}
        with pytest.raises(RunFailed) as info:
            check_report(build_report(cfg, counts, diagnosis={"e": [finding]}), cfg)
        message = str(info.value)
        if whole:  # 30 of 50 sampled: about 60 of the 100, and applied, 40 fail (under the ratio)
            assert "ratio=0.5); diagnosis: 30 of 50 sampled" in message, message
        else:
            assert ("ratio=0.5); wrong key or IV? The diagnosis explains about 20 of them: 10 of 50 sampled lines without a "
                    "match decrypt (suggested: encryption.key_encoding: base64). Nothing was published") in message, message


def test_rejections_the_diagnosis_never_samples_do_not_make_a_partial_explanation_a_column_change():
    """250 lines match the email column, 30 are work emails, 400 are 'email:...' IDs (invalid_declared_id,
    which no setting explains and the sample never holds). The 30 of 30 sampled were scaled to the 430
    lines without a match (more than the 250): the report suggested profiles.email: work_email, which
    would lose the 250, and the failed run named it as the cause of the 400 invalid IDs."""
    cfg = _two_email_sources()
    counts = Counts([count(Metric.RECEIVED, 680, "p"), count(Metric.RECONCILED, 250, "p"),
                     count(Metric.REJECTED, 30, "p", Reason.NO_MATCHING_PROFILE),
                     count(Metric.REJECTED, 400, "p", Reason.INVALID_DECLARED_ID)])
    findings = {"p": assemble(cfg.data_sources[1], cfg, 30, {WORK_EMAIL: np.arange(30)}, [])}
    (finding,) = build_report(cfg, counts, diagnosis=findings)["data_sources"]["p"]["diagnosis"]
    assert finding["suggestion"] == {} and "partial explanation" in finding["message"]


@pytest.mark.parametrize("change", [("algorithm", (("hash_algorithm", "sha1"),)), ("digest", (("digest", "base64"),)),
                                    ("normalization", (("normalization", "uid2"),))])  # uid2's digests are base64
def test_a_hashing_change_that_would_lose_the_lines_matching_now_is_a_partial_explanation(change):
    """500 lines match as configured (hex SHA-256), 200 are SHA-1 digests (or base64 ones): the report
    suggested hash_algorithm: sha1, which makes the 500 invalid_hash. A partner mixing two hashings
    is a partial explanation, as a mix of two columns is; when fewer lines match now, it is the change."""
    cfg = _two_email_sources()
    for reconciled, partial in ((500, True), (100, False)):
        counts = Counts([count(Metric.RECEIVED, reconciled + 200, "h"), count(Metric.RECONCILED, reconciled, "h"),
                         count(Metric.REJECTED, 200, "h", Reason.INVALID_HASH)])
        findings = {"h": assemble(cfg.data_sources[0], cfg, 200, {change: np.arange(200)}, [])}
        (finding,) = build_report(cfg, counts, diagnosis=findings)["data_sources"]["h"]["diagnosis"]
        assert finding["suggestion"] == ({} if partial else dict(change[1])), finding
        assert ("would lose those" in finding["message"]) == partial
        # The change, and what it costs: applied as the whole story, the 100 were dropped with exit 0.
        assert ("would also lose the 100 lines matching now as configured (hex SHA-256)" in finding["message"]) != partial


@pytest.mark.parametrize("kind, change", [("iv", (("encryption.iv", None),)), ("key", (("encryption.key", None),)),
                                          ("key_encoding", (("encryption.key_encoding", "base64"),))])
def test_a_key_or_iv_finding_beside_lines_matching_under_the_configured_ones_is_not_the_whole_story(kind, change):
    """One dump encrypted under the configured key and IV (its lines match), another under another
    IV: the finding said 'the key is right and the IV is not; check encryption.iv', and the partner,
    asked, confirmed the IV the matching lines use. Lines that match were decrypted under the
    configured key and IV: a partial explanation when they are more, else the change and what it loses."""
    from transforms.diagnosis_plaintext import CryptoFinding

    ds = _email_source()
    cfg = JobConfig(profiles={"path": "p.parquet"}, data_sources=[ds])
    for reconciled, partial in ((250, True), (150, False)):
        counts = Counts([count(Metric.RECEIVED, reconciled + 200, "e"), count(Metric.RECONCILED, reconciled, "e"),
                         count(Metric.REJECTED, 200, "e", Reason.INVALID_PLAINTEXT)])
        found = CryptoFinding(kind, change, 200, "are under another IV: the key is right and the IV is not")
        findings = {"e": assemble(ds, cfg, 200, {}, [found], np.arange(200))}
        (finding,) = build_report(cfg, counts, diagnosis=findings)["data_sources"]["e"]["diagnosis"]
        assert finding["suggestion"] == ({} if partial else {field: value for field, value in change}), finding
        if partial:
            assert (f"a partial explanation, not a change to make. The data source already matches {reconciled} lines "
                    "under its configured key and IV") in finding["message"], finding["message"]
        else:
            assert finding["message"].endswith(f"Applied, the change would also lose the {reconciled} lines matching now "
                                               "under its configured key and IV: the partner encrypts under two; ask it "
                                               "for one"), finding["message"]


def test_sampled_tokens_that_are_not_utf8_leave_the_crypto_findings_as_they_are():
    """A sample holds bytes: a token that is not UTF-8 failed the AES-CBC and AES-GCM diagnosis on a bare
    'ArrowInvalid: Invalid UTF8 payload'. No dump line brings one (its lines are decoded before their
    IDs are read: such a line is rejected not_utf8); a direct call did. Such a token is no base64: the
    findings are those of the other tokens."""
    from datetime import datetime, timezone

    from test_diagnosis_parts import EMAILS, IV, KEY, _gcm, _gcm_sample

    from transforms.diagnosis_crypto import CbcMaterial, cbc_findings, failed_tokens
    from transforms.encrypt import encrypt_cbc, encrypt_gcm
    from transforms.secrets import RingKey

    latin1 = [f"caf\u00e9{i}".encode("latin-1") for i in range(10)]
    material, cbc = CbcMaterial(KEY, IV, {"hex": KEY}), [t.encode() for t in encrypt_cbc(EMAILS, bytes(32), IV)]
    ring = [RingKey(id=7, secret=bytes(32), activates=datetime(2026, 1, 1, tzinfo=timezone.utc))]
    quoted = [f"'{t}'".encode() for t in encrypt_gcm(EMAILS, ring[0])]
    for reason in (Reason.DECRYPT_FAILED, Reason.INVALID_PLAINTEXT):
        with_them, without = (_gcm_sample([reason] * len(values), values) for values in (cbc + latin1, cbc))
        findings = cbc_findings(_email_source(), failed_tokens(with_them), material)
        assert [f.kind for f in findings] == [f.kind for f in cbc_findings(_email_source(), failed_tokens(without), material)] == ["key"]
        with_them, without = (_gcm_sample([reason] * len(values), values) for values in (quoted + latin1, quoted))
        assert _gcm(with_them, ring) == _gcm(without, ring)


def test_digests_no_setting_reads_name_no_change_and_what_to_set_once_the_partner_fixes_them():
    """Digests of values hashed with a line break (or in url-safe base64) match once the partner
    changes what it sends: no change to apply now, and the fields that are then still wrong."""
    cfg = _two_email_sources()
    ds = cfg.data_sources[0]
    probed = {("line_break", (("normalization", "none"), ("digest", "base64"), ("line_break", True))): np.arange(40),
              ("digest", (("digest", "url-safe or unpadded base64"),)): np.arange(40, 60)}
    found = assemble(ds, cfg, 100, probed, [])
    assert [(f["kind"], f["suggestion"], f["would_match"]) for f in found] == [("line_break", {}, 40), ("digest", {}, 20)]
    assert found[0]["message"].endswith("with a line break after each value (hashed as `echo` prints it): no setting reads "
                                        "them; ask the partner to hash the value alone, then set normalization: none, digest: base64")
    assert found[1]["message"].endswith("ask the partner for standard base64 ('+' and '/', with its '=' padding), then set digest: base64")
