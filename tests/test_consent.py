"""Consent is explicit (issue #11, silent case 1): every opt-out spelling, in every extract format,
is read as opted out, consented or unknown, or fails the run naming file, line and column; unknown is
never exported; the import does not read the column at all."""
from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines import export_audience, import_audience
from transforms.config import ConfigError
from transforms.config_load import parse_config
from transforms.consent import BadOptOut, parse_opt_out
from transforms.errors import InputError, RunFailed
from transforms.profiles import read_profiles

RUN_DATE = "2026-11-22"
TS = 1795305600

# (written value, expected reading): True opted out, False consented, None unknown.
TEXT_CASES = [
    ("true", True), ("TRUE", True), (" t ", True), ("Yes", True), ("y", True), ("1", True), ("on", True), ("ON", True),
    ("false", False), ("F", False), ("no", False), (" N", False), ("0", False), ("off", False), ("Off ", False),
    ("", None), ("   ", None),
]
BAD_TEXT = ["X", "opted_out", "2", "1.0", "yes please", "-1"]


def cfg_for(path: Path, **profiles) -> object:
    return parse_config({
        "profiles": {"path": str(path), "phone": None, "visitor_ids": None, "opt_out": "opt_out", **profiles},
        "data_sources": [{"name": "hashed", "dpid": 12345, "segments": "unused/*.sync", "id_type": "declared",
                          "declared": "hashed", "match_on": "email"}],
    })


def read_opt_out(path: Path, **profiles) -> list:
    cfg = cfg_for(path, **profiles)
    return [v for t in read_profiles(str(path), cfg, export=True) for v in t["opt_out"].to_pylist()]


# ----------------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------------
def test_text_spellings_are_read_case_insensitively_and_trimmed():
    got = parse_opt_out(pa.array([w for w, _ in TEXT_CASES] + [None])).to_pylist()
    assert got == [e for _, e in TEXT_CASES] + [None]


@pytest.mark.parametrize("value", BAD_TEXT)
def test_any_other_text_is_refused_at_its_row(value):
    with pytest.raises(BadOptOut) as err:
        parse_opt_out(pa.array(["yes", None, value, "no"]))
    assert err.value.row == 2 and value not in str(err.value)


@pytest.mark.parametrize("values,expected", [
    (pa.array([True, False, None]), [True, False, None]),
    (pa.array([1, 0, None], pa.int64()), [True, False, None]),
    (pa.array([1, 0, None], pa.uint8()), [True, False, None]),
    (pa.array([1.0, 0.0, None, math.nan]), [True, False, None, None]),
    (pa.nulls(2), [None, None]),
    (pa.array(["yes", "no", None]).dictionary_encode(), [True, False, None]),
])
def test_typed_columns(values, expected):
    assert parse_opt_out(values).to_pylist() == expected


@pytest.mark.parametrize("values,row", [(pa.array([0, 2]), 1), (pa.array([1.0, 0.5]), 1), (pa.array([-1]), 0)])
def test_numbers_other_than_0_and_1_are_refused(values, row):
    with pytest.raises(BadOptOut) as err:
        parse_opt_out(values)
    assert err.value.row == row


def test_a_column_of_another_type_is_refused():
    with pytest.raises(BadOptOut, match="not booleans, 0/1 or text"):
        parse_opt_out(pa.array([[1]]))


# ----------------------------------------------------------------------------------------------------
# Every extract format
# ----------------------------------------------------------------------------------------------------
def write_csv(path: Path, cells: list[str]) -> Path:
    path.write_text("profile_id,email,opt_out\n" + "".join(f"p{i},a{i}@x.com,{c}\n" for i, c in enumerate(cells)))
    return path


def test_csv_every_spelling(tmp_path):
    path = write_csv(tmp_path / "p.csv", [w for w, _ in TEXT_CASES] + ["NA", "null", "NaN"])
    assert read_opt_out(path) == [e for _, e in TEXT_CASES] + [None, None, None]


def test_csv_with_a_bom(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes("\ufeffprofile_id,email,opt_out\np1,a@x.com,yes\np2,b@x.com,\n".encode())
    assert read_opt_out(path) == [True, None]


@pytest.mark.parametrize("value", BAD_TEXT)
def test_csv_bad_value_names_file_line_and_column_not_the_value(tmp_path, value):
    path = write_csv(tmp_path / "p.csv", ["yes", "no", "", value, "no"])
    with pytest.raises(InputError) as err:
        read_opt_out(path)
    message = str(err.value)
    assert message.startswith(f"{path}:5: column 'opt_out'")  # header is line 1, the bad value line 5
    tail = message[len(str(path)):]
    assert value not in tail and "a3@x.com" not in tail and "p3" not in tail


def test_csv_line_counts_blank_lines_and_quoted_newlines(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('profile_id,email,opt_out\n\np1,"a\nb@x.com",no\n\np2,c@x.com,maybe\n')
    with pytest.raises(InputError, match=rf"^{path}:6: column 'opt_out'"):
        read_opt_out(path)


def test_csv_bad_value_in_a_later_batch_names_its_line(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["no"] * 2500 + ["X"])
    cfg = cfg_for(path)
    with pytest.raises(InputError, match=rf"^{path}:2502: column 'opt_out'"):
        list(read_profiles(str(path), cfg, batch_rows=1000, export=True))


def test_parquet_every_type(tmp_path):
    cases = {
        "bool": (pa.array([True, False, None]), [True, False, None]),
        "int": (pa.array([1, 0, None], pa.int32()), [True, False, None]),
        "float": (pa.array([1.0, 0.0, math.nan, None]), [True, False, None, None]),
        "text": (pa.array([" YES", "off", "", None]), [True, False, None, None]),
    }
    for name, (values, expected) in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(len(values))],
                                 "email": ["a@x.com"] * len(values), "opt_out": values}), path)
        assert read_opt_out(path) == expected, name


@pytest.mark.parametrize("values", [pa.array(["yes", "X"]), pa.array([1, 2]), pa.array([0.0, 0.5])])
def test_parquet_bad_value_names_the_row(tmp_path, values):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"profile_id": ["p0", "p1"], "email": ["a@x.com", "b@x.com"], "opt_out": values}), path)
    with pytest.raises(InputError, match=rf"^{path}: row 2: column 'opt_out'"):
        read_opt_out(path)


def write_jsonl(path: Path, records: list[dict], blank_lines: bool = False) -> Path:
    sep = "\n\n" if blank_lines else "\n"
    path.write_text(sep.join(json.dumps(r) for r in records) + "\n")
    return path


def test_jsonl_every_type_and_a_missing_key(tmp_path):
    cases = [
        ([True, False, None, "MISSING"], [True, False, None, None]),
        ([1, 0, None], [True, False, None]),
        ([1.0, 0.0, None], [True, False, None]),
        (["yes", "N", "", None, "MISSING"], [True, False, None, None, None]),
    ]
    for k, (values, expected) in enumerate(cases):
        records = [{"profile_id": f"p{i}", "email": "a@x.com", **({} if v == "MISSING" else {"opt_out": v})}
                   for i, v in enumerate(values)]
        path = write_jsonl(tmp_path / f"p{k}.jsonl", records)
        assert read_opt_out(path) == expected, values


def test_jsonl_nan_is_unknown(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"profile_id": "p1", "email": "a@x.com", "opt_out": NaN}\n'
                    '{"profile_id": "p2", "email": "b@x.com", "opt_out": 1}\n')
    assert read_opt_out(path) == [None, True]


def test_jsonl_bad_value_names_its_line(tmp_path):
    records = [{"profile_id": "p1", "email": "a@x.com", "opt_out": "no"}, {"profile_id": "p2", "email": "b@x.com"},
               {"profile_id": "p3", "email": "c@x.com", "opt_out": "X"}]
    path = write_jsonl(tmp_path / "p.jsonl", records, blank_lines=True)
    with pytest.raises(InputError, match=rf"^{path}:5: column 'opt_out'"):
        read_opt_out(path, email=None)


def test_jsonl_mixed_types_name_the_line_and_column(tmp_path):
    records = [{"profile_id": "p1", "opt_out": True}, {"profile_id": "p2", "opt_out": None},
               {"profile_id": "p3", "opt_out": "yes"}]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    with pytest.raises(InputError, match=rf"^{path}:3: column 'opt_out'"):
        read_opt_out(path, email=None)


def test_opt_out_missing_consented_reads_unknown_as_consent(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["yes", "", "no"])
    assert read_opt_out(path, opt_out_missing="consented") == [True, False, False]


def test_opt_out_missing_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="profiles.opt_out_missing"):
        cfg_for(tmp_path / "p.csv", opt_out_missing="maybe")


# ----------------------------------------------------------------------------------------------------
# The export: unknown is never consent; the import never reads the column
# ----------------------------------------------------------------------------------------------------
def export_job(tmp_path: Path, cells: list[str], **profiles) -> Path:
    write_csv(tmp_path / "p.csv", cells)
    config = {
        "profiles": {"path": "p.csv", "phone": None, "visitor_ids": None, "opt_out": "opt_out", **profiles},
        "data_sources": [{"name": "plain", "dpid": 45678, "segments": "dumps/*.sync", "id_type": "declared",
                          "declared": "plain", "match_on": "email"}],
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "t.csv").write_text("profile_id\n" + "".join(f"p{i}\n" for i in range(len(cells))))
    return tmp_path / "job.yaml"


def export(job: Path, out: Path, *flags) -> dict:
    return export_audience.run(["--config", str(job), "--audience", "A", "--targets", str(job.parent / "t.csv"),
                                "--output", str(out), "--run-date", RUN_DATE, *flags])


def sent(out: Path) -> set[str]:
    report = json.loads((out / "report.json").read_text())
    lines = b"".join(gzip.decompress((out / "onboarding" / f["name"]).read_bytes()) for f in report["files"])
    return {line.split(b"\t")[0].decode() for line in lines.splitlines()}


def test_export_never_sends_unknown_consent(tmp_path):
    # p0 yes, p1 empty, p2 no, p3 NA, p4 off, p5 'on' (an opt-out today read as consent)
    job = export_job(tmp_path, ["yes", "", "no", "NA", "off", "on"])
    report = export(job, tmp_path / "out")
    assert sent(tmp_path / "out") == {"a2@x.com", "a4@x.com"}
    assert (report["opted_out"], report["consent_unknown"], report["exported"]) == (2, 2, 2)
    assert report["targets"] == 6


def test_export_with_missing_means_consented(tmp_path):
    job = export_job(tmp_path, ["yes", "", "no"], opt_out_missing="consented")
    report = export(job, tmp_path / "out")
    assert sent(tmp_path / "out") == {"a1@x.com", "a2@x.com"}
    assert (report["opted_out"], report["consent_unknown"], report["exported"]) == (1, 0, 2)


def test_export_without_an_opt_out_column_needs_the_explicit_switch(tmp_path):
    job = export_job(tmp_path, ["yes", "no"])
    config = yaml.safe_load(job.read_text())
    del config["profiles"]["opt_out"]
    job.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="profiles.opt_out: .*opt_out_missing: consented"):
        export(job, tmp_path / "o")
    config["profiles"]["opt_out_missing"] = "consented"
    job.write_text(yaml.safe_dump(config))
    report = export(job, tmp_path / "out")  # declared: the source records no opt-out, everyone consented
    assert sent(tmp_path / "out") == {"a0@x.com", "a1@x.com"} and report["consent_unknown"] == 0


def test_export_fails_on_an_unknown_spelling_and_publishes_nothing(tmp_path):
    job = export_job(tmp_path, ["no", "opted_out"])
    out = tmp_path / "out"
    code = export_audience.main(["--config", str(job), "--audience", "A", "--targets", str(tmp_path / "t.csv"),
                                 "--output", str(out), "--run-date", RUN_DATE])
    assert code == 1
    assert not (out / "report.json").exists() and not list(out.glob("_incomplete-*"))


def test_a_renamed_opt_out_column_fails_even_when_missing_means_consented(tmp_path):
    job = export_job(tmp_path, ["no", "no"], opt_out_missing="consented")
    (tmp_path / "p.csv").write_text("profile_id,email,optout\np0,a0@x.com,yes\np1,a1@x.com,no\n")
    with pytest.raises(ConfigError, match="profiles.opt_out: column 'opt_out' is not in the extract"):
        export(job, tmp_path / "o")


def test_import_does_not_read_the_opt_out_column(tmp_path):
    """The import records who is in a segment; it does not apply consent, so it neither reads nor
    validates the column: a value the export would refuse does not stop an import."""
    job = export_job(tmp_path, ["no", "opted_out", ""])
    (tmp_path / "dumps").mkdir()
    (tmp_path / "dumps" / f"ftp_1234_45678_full_{TS}000.sync").write_text("a1@x.com 11\na2@x.com 11\n")
    report = import_audience.run(["--config", str(job), "--output", str(tmp_path / "imp"), "--run-date", RUN_DATE])
    assert report["data_sources"]["plain"]["reconciled"] == 2


def test_export_of_a_jsonl_extract_whose_first_record_lacks_the_key(tmp_path):
    """The header check sees the first record only: a record without the key is unknown consent, not
    a missing column (a file where no record has the key still fails, when it is read)."""
    job = export_job(tmp_path, ["no", "no", "no"], path="p.jsonl")
    write_jsonl(tmp_path / "p.jsonl", [{"profile_id": "p0", "email": "a0@x.com"},
                                       {"profile_id": "p1", "email": "a1@x.com", "opt_out": "no"},
                                       {"profile_id": "p2", "email": "a2@x.com", "opt_out": "YES"}])
    report = export(job, tmp_path / "out")
    assert sent(tmp_path / "out") == {"a1@x.com"}
    assert (report["consent_unknown"], report["opted_out"], report["exported"]) == (1, 1, 1)
    write_jsonl(tmp_path / "p.jsonl", [{"profile_id": "p0", "email": "a0@x.com"}])
    with pytest.raises(InputError, match=r"p.jsonl: no column 'opt_out' \(profiles.opt_out\)"):
        export(job, tmp_path / "out2")


def test_an_extract_whose_opt_out_column_came_out_empty_fails_the_export_unless_allowed(tmp_path):
    """An upstream job that wrote the extract without its consent values (the column there, every
    cell empty: a failed join) made every profile of unknown consent: every member left the audience
    as consent_unknown, exit 0, no guard (an emptied key column fails). It fails naming the column,
    nothing published; profiles.allow_empty_profiles: true lets such a run remove them."""
    job = export_job(tmp_path, ["no", "no", "no"])
    report = emptied_then_allowed(tmp_path, job, r"'opt_out' \(an emptied column\?\)")
    assert (report["consent_unknown"], report["removed_by_reason"]["consent_unknown"]) == (3, 3)


def emptied_then_allowed(tmp_path: Path, job: Path, problem: str, opted_out: int = 0) -> dict:
    """A first export (``opted_out`` of its profiles opted out), then the extract's opt-out column
    written empty: the second export fails with ``problem`` (a regex), nothing published; with
    profiles.allow_empty_profiles: true it runs. Returns that run's report."""
    state = ("--state", str(tmp_path / "state"), "--segment-id", "7")
    assert export(job, tmp_path / "first", *state)["opted_out"] == opted_out
    write_csv(tmp_path / "p.csv", ["", "", ""])
    with pytest.raises(RunFailed,
                       match=r"^profiles.opt_out: none of the 3 profiles read has a value in column " + problem):
        export(job, tmp_path / "second", *state)
    assert not (tmp_path / "second" / "report.json").exists()
    assert [p.name for p in (tmp_path / "state" / "plain" / "A").glob("v-*")] == ["v-000001"]
    config = yaml.safe_load(job.read_text())
    config["profiles"]["allow_empty_profiles"] = True
    job.write_text(yaml.safe_dump(config))
    return export(job, tmp_path / "second", *state)


def test_an_emptied_opt_out_column_fails_the_export_where_missing_means_consented(tmp_path):
    """A source recording opt-outs only (opt_out_missing: consented), its extract written with the
    column empty (an upstream join that failed): every profile read as consented, and p1, which had
    opted out and was never sent, was exported, exit 0 (the guard for an emptied column held only
    where unknown is unknown). It fails naming the column, nothing published, unless
    profiles.allow_empty_profiles: true."""
    job = export_job(tmp_path, ["", "yes", ""], opt_out_missing="consented")
    report = emptied_then_allowed(tmp_path, job, r"'opt_out' \(an emptied column\?\): every one is read as consented"
                                  r".*\(opt-outs filtered upstream\) needs no such column: leave profiles.opt_out out",
                                  opted_out=1)
    assert (report["exported"], report["consented_by_default_rows"]) == (1, 3)
    assert sent(tmp_path / "second") == {"a1@x.com"}


def test_a_jsonl_part_without_an_opted_out_profile_of_a_source_recording_opt_outs_only(tmp_path):
    """A source that records opt-outs only (opt_out_missing: consented), its JSONL written in parts by
    a writer that leaves null fields out (Spark's default): a part with no opted-out profile has no
    opt_out field at all, and the run failed 'no column opt_out', with no way to say that parts may
    lack it. The failure now names the remedy, and profiles.parts_may_lack: [opt_out] reads such a
    part as nulls (here: consented, as declared)."""
    job = export_job(tmp_path, ["", "", "", ""], opt_out_missing="consented", path="p/*.jsonl")
    (tmp_path / "p").mkdir()
    write_jsonl(tmp_path / "p" / "part-0.jsonl", [{"profile_id": "p0", "email": "a0@x.com", "opt_out": True},
                                                  {"profile_id": "p1", "email": "a1@x.com"}])
    write_jsonl(tmp_path / "p" / "part-1.jsonl", [{"profile_id": "p2", "email": "a2@x.com"},
                                                  {"profile_id": "p3", "email": "a3@x.com"}])
    with pytest.raises(InputError, match=r"part-1.jsonl: no column 'opt_out' \(profiles.opt_out\): none of its records "
                                         r"has the field .* list it in profiles.parts_may_lack"):
        export(job, tmp_path / "o")
    config = yaml.safe_load(job.read_text())
    config["profiles"]["parts_may_lack"] = ["opt_out"]
    job.write_text(yaml.safe_dump(config))
    report = export(job, tmp_path / "out")
    assert sent(tmp_path / "out") == {"a1@x.com", "a2@x.com", "a3@x.com"}
    assert (report["opted_out"], report["exported"]) == (1, 3)


# ----------------------------------------------------------------------------------------------------
# A consent (opt-in) column: true means consented
# ----------------------------------------------------------------------------------------------------
def consent_job(tmp_path: Path, cells: list[str], **profiles) -> Path:
    """export_job's extract, its column named 'marketing_consent' (true: the profile consented)."""
    job = export_job(tmp_path, cells, **profiles)
    (tmp_path / "p.csv").write_text((tmp_path / "p.csv").read_text().replace(",opt_out\n", ",marketing_consent\n", 1))
    return job


def test_a_consent_column_given_as_the_opt_out_is_refused_naming_opt_in(tmp_path):
    """profiles.opt_out: marketing_consent (true: consented) read every consenting profile as opted out
    and exported every one that refused (p1, p3), exit 0."""
    job = consent_job(tmp_path, ["yes", "no", "yes", "no"], opt_out="marketing_consent")
    with pytest.raises(ConfigError) as error:
        export(job, tmp_path / "o")
    message = str(error.value)
    assert "profiles.opt_out: 'marketing_consent' reads as a consent (opt-in) column" in message
    assert "profiles.opt_in: marketing_consent" in message
    assert not (tmp_path / "o" / "report.json").exists()


def test_a_consent_column_given_as_opt_in_exports_who_consented(tmp_path):
    # p0 yes, p1 no, p2 empty (unknown: never a yes), p3 '1', p4 'off'
    job = consent_job(tmp_path, ["yes", "no", "", "1", "off"], opt_out=None, opt_in="marketing_consent")
    report = export(job, tmp_path / "out")
    assert sent(tmp_path / "out") == {"a0@x.com", "a3@x.com"}
    assert (report["opted_out"], report["consent_unknown"], report["exported"]) == (2, 1, 2)
    # An empty cell of a consent column read as consent (opt_out_missing: consented, kept from an opt_out
    # config): a source writing consents only exported every profile that gave none (from the review).
    job = consent_job(tmp_path, ["yes", ""], opt_out=None, opt_in="marketing_consent", opt_out_missing="consented")
    with pytest.raises(ConfigError, match="profiles.opt_in with profiles.opt_out_missing: consented: an empty cell"):
        export(job, tmp_path / "out2")
    assert not (tmp_path / "out2" / "report.json").exists()


def test_opt_in_and_opt_out_together_are_refused(tmp_path):
    job = consent_job(tmp_path, ["yes"], opt_in="marketing_consent")
    with pytest.raises(ConfigError, match="profiles.opt_in and profiles.opt_out: set one"):
        export(job, tmp_path / "o")


@pytest.mark.parametrize("name, opt_in", [
    ("marketing_consent", True), ("marketingConsent", True), ("email_opt_in", True), ("OptIn", True),
    ("opted_in", True), ("is_subscribed", True), ("newsletter_subscriber", True), ("allow_email", True),
    ("contact_permission", True), ("contactable", True), ("has_consent", True),
    ("opt_out", False), ("optout", False), ("email_opt_out_flag", False), ("consent_withdrawn", False),
    ("no_consent", False), ("unsubscribed", False), ("do_not_email", False), ("dnc", False),
    ("consent_revoked", False), ("optional_flag", False), ("status", False), ("gdpr", False),
    ("blocked", False), ("not_allowed", False), ("option_index", False),
])
def test_which_column_names_read_as_consent(name, opt_in):
    from transforms.consent import reads_as_opt_in
    assert reads_as_opt_in(name) is opt_in


def opt_out_named(tmp_path: Path, column: str, cells: list[str]) -> Path:
    """export_job's extract, its opt-out column renamed ``column``, given as profiles.opt_out."""
    job = export_job(tmp_path, cells, opt_out=column)
    (tmp_path / "p.csv").write_text((tmp_path / "p.csv").read_text().replace(",opt_out\n", f",{column}\n", 1))
    return job


@pytest.mark.parametrize("column", ["withdrew_consent", "consent_withdrawal", "cancelled_subscription",
                                    "consent_refusal", "denies_permission"])
def test_an_opt_out_column_named_for_a_consent_withdrawn_or_refused_is_read_as_opt_outs(tmp_path, column):
    """A column recording a withdrawn, cancelled or refused consent (true: opted out) was refused naming
    profiles.opt_in, which would export every profile that withdrew it; there was no other way."""
    job = opt_out_named(tmp_path, column, ["yes", "no", "yes", "no"])
    report = export(job, tmp_path / "out")
    assert sent(tmp_path / "out") == {"a1@x.com", "a3@x.com"}
    assert (report["opted_out"], report["exported"]) == (2, 2)


def test_a_consent_column_named_accepts_marketing_given_as_the_opt_out_is_refused(tmp_path):
    """'accepts_marketing' (Shopify's customer export: true, the customer consented) read as opt-outs
    exported the profiles who refused, exit 0."""
    job = opt_out_named(tmp_path, "accepts_marketing", ["yes", "no", "yes", "no"])
    with pytest.raises(ConfigError, match="profiles.opt_in: accepts_marketing"):
        export(job, tmp_path / "o")
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize("name, opt_in", [
    ("withdrew_consent", False), ("consent_withdrawal", False), ("consent_revocation", False),
    ("cancelled_subscription", False), ("subscription_canceled", False), ("subscription_ended", False),
    ("subscription_lapsed", False), ("consent_refusal", False), ("refuses_consent", False),
    ("rejects_consent", False), ("consent_denial", False), ("denies_permission", False),
    ("consent_expired", False), ("consent_retracted", False), ("consent_rescinded", False),
    ("consent_objection", False), ("dont_allow", False), ("opposed_consent", False),
    ("accepts_marketing", True), ("acceptsMarketing", True), ("accept_email", True), ("agrees_to_marketing", True),
    ("newsletter_subscribe", True), ("accepted_terms", True), ("allows_sms", True),
])
def test_which_column_names_read_as_consent_withdrawn_and_accepted(name, opt_in):
    from transforms.consent import reads_as_opt_in
    assert reads_as_opt_in(name) is opt_in


@pytest.mark.parametrize("column", ["email_opt_out", "unsubscribed", "consent_withdrawn", "do_not_email"])
def test_an_opt_out_column_given_as_the_opt_in_is_refused_naming_opt_out(tmp_path, column):
    """profiles.opt_in: email_opt_out (true: opted out) read every opted-out profile as consented and
    exported it, withholding those who consented, exit 0."""
    job = opt_out_named(tmp_path, column, ["yes", "no", "yes", "no"])
    config = yaml.safe_load(job.read_text())
    config["profiles"]["opt_in"] = config["profiles"].pop("opt_out")
    job.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as error:
        export(job, tmp_path / "o")
    assert f"profiles.opt_in: '{column}' reads as an opt-out column" in str(error.value)
    assert f"profiles.opt_out: {column}" in str(error.value)
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize("name, opt_out", [
    ("email_opt_out", True), ("optedOut", True), ("unsubscribed", True), ("do_not_email", True), ("dnc", True),
    ("consent_withdrawn", True), ("no_consent", True), ("withdrew_consent", True), ("subscription_cancelled", True),
    ("marketing_consent", False), ("email_opt_in", False), ("is_subscribed", False), ("newsletter", False),
    ("accepts_marketing", False), ("status", False), ("optional_flag", False),
    ("not_unsubscribed", False), ("no_opt_out", False), ("consent_not_withdrawn", False), ("not_opted_in", True),
])
def test_which_column_names_read_as_opt_out(name, opt_out):
    from transforms.consent import reads_as_opt_out
    assert reads_as_opt_out(name) is opt_out


@pytest.mark.parametrize("column", ["not_unsubscribed", "is_not_opted_out", "no_opt_out", "consent_not_withdrawn"])
def test_an_opt_out_turned_round_reads_as_consent(tmp_path, column):
    """A name negating an opt-out ('not_unsubscribed': true, still subscribed) records consent. Given
    as profiles.opt_in it was refused naming profiles.opt_out; set so, as told (or given so at first),
    the still-subscribed p0 and p2 were withheld and p1, who unsubscribed, exported, exit 0."""
    job = opt_out_named(tmp_path, column, ["yes", "no", "yes"])
    refused = f"profiles.opt_out: '{column}' reads as a consent .*profiles.opt_in: {column}"
    with pytest.raises(ConfigError, match=refused):
        export(job, tmp_path / "o")
    config = yaml.safe_load(job.read_text())
    config["profiles"]["opt_in"] = config["profiles"].pop("opt_out")
    job.write_text(yaml.safe_dump(config))
    report = export(job, tmp_path / "out")
    assert sent(tmp_path / "out") == {"a0@x.com", "a2@x.com"}
    assert (report["opted_out"], report["exported"]) == (1, 2)


def test_a_renamed_or_emptied_consent_column_fails_naming_opt_in(tmp_path):
    """profiles.opt_in naming a column the extract lacks (a typo, a rename upstream) is refused before
    the run naming the field; an extract whose consent column came out empty fails naming it, nothing
    published: never 'everybody consented' nor silently nobody."""
    job = consent_job(tmp_path, ["yes", "no"], opt_out=None, opt_in="marketing_consnt")
    with pytest.raises(ConfigError, match=r"profiles.opt_in: column 'marketing_consnt' is not in the extract"):
        export(job, tmp_path / "o")
    job = consent_job(tmp_path, ["", "", ""], opt_out=None, opt_in="marketing_consent")
    with pytest.raises(RunFailed, match=r"^profiles.opt_in: none of the 3 profiles read has a value in column "
                                        r"'marketing_consent' \(an emptied column\?\)"):
        export(job, tmp_path / "o2")
    assert not (tmp_path / "o2" / "report.json").exists()
