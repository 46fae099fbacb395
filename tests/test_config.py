"""Config validation: one clear line per problem, before any pipeline starts."""
from __future__ import annotations

import pytest
import yaml

from transforms.config import ConfigError
from transforms.config_load import load_config, parse_config
from transforms.preflight import check_inputs

GOOD = {
    "profiles": {"path": "profiles.parquet", "id": "profile_id", "email": "email"},
    "data_sources": [
        {"name": "h", "dpid": 1, "segments": "segments/*.sync*", "id_type": "declared",
         "declared": "hashed", "match_on": "email", "normalization": "adobe"}
    ],
}


def cfg_with(**changes):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        target = data
        *parents, last = dotted.split(".")
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
    return data


def error_of(data) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="job.yaml")
    return str(info.value)


def test_good_config_parses_with_defaults():
    cfg = parse_config(GOOD)
    ds = cfg.data_sources[0]
    assert ds.field_separator == " " and ds.segment_separator == ","
    assert ds.digest_encoding == "hex" and ds.key_kind == "email"
    assert cfg.buckets == 16


def test_unknown_field_is_named():
    assert error_of(cfg_with(**{"data_sources.0.colour": "red"})) == "job.yaml: data_sources.0.colour: unknown field"


def test_bad_enum_is_named():
    message = error_of(cfg_with(**{"data_sources.0.normalization": "sha1"}))
    assert message.startswith("job.yaml: data_sources.0.normalization: Input should be")
    assert "'adobe'" in message


def test_missing_required_field_is_named():
    data = cfg_with()
    del data["data_sources"][0]["dpid"]
    assert error_of(data) == "job.yaml: data_sources.0.dpid: required field is missing"


@pytest.mark.parametrize("path", ["spark/profiles.parquet/*", "exports/profiles", "profiles.txt"])
def test_a_profiles_path_whose_format_cannot_be_told_is_named_at_load_time(path):
    """A Spark output's folder globbed as 'profiles.parquet/*': the run failed 'ValueError: cannot
    tell the format of '*' ...' (exit 1), naming no field. It is refused at load time (exit 2);
    with 'format:' the path may be anything."""
    assert error_of(cfg_with(**{"profiles.path": path})) == (
        f"job.yaml: profiles: cannot tell the format of '{path.rsplit('/', 1)[-1]}': use .csv, .parquet or .jsonl, "
        "or set 'format'")
    assert parse_config(cfg_with(**{"profiles.path": path, "profiles.format": "parquet"})).profiles.resolved_format == "parquet"


def test_declared_needs_match_on():
    data = cfg_with()
    del data["data_sources"][0]["match_on"]
    assert "needs 'match_on'" in error_of(data)


def test_inline_key_is_refused_without_echoing_it():
    data = cfg_with()
    data["data_sources"][0].update(
        declared="encrypted", channel="email", normalization="adobe",
        encryption={"algorithm": "aes-cbc", "key": "00112233445566778899aabbccddeeff", "iv": "env:IV"},
    )
    message = error_of(data)
    assert "data_sources.0.encryption.key: not a key reference" in message
    assert "00112233445566778899aabbccddeeff" not in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("profiles:\n  path: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert str(path) in str(info.value) and "line" in str(info.value)


def test_relative_paths_resolve_against_the_config_folder(demo_copy):
    cfg = load_config(str(demo_copy / "job.yaml"))
    assert cfg.profiles.path == str(demo_copy / "profiles.parquet")
    enc = cfg.data_source("web-encrypted-emails").encryption
    assert enc.key == "file:" + str(demo_copy / "keys" / "demo-only-aes256.key")


def test_preflight_names_missing_files_and_columns(demo_copy):
    text = (demo_copy / "job.yaml").read_text()
    text = text.replace("segments/crm-plain/*.sync*", "segments/nowhere/*.sync*").replace("match_on: crm_id", "match_on: loyalty_no")
    (demo_copy / "job.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        check_inputs(load_config(str(demo_copy / "job.yaml")))
    lines = str(info.value).splitlines()
    assert any(l.startswith("data_sources[3].segments: no segment dump matches") for l in lines)
    assert any(l.startswith("data_sources[3].match_on: column 'loyalty_no' is not in the extract") for l in lines)


def test_preflight_reports_a_missing_key_without_a_stack_trace(demo_copy):
    (demo_copy / "keys" / "demo-only-aes256.key").unlink()
    with pytest.raises(ConfigError) as info:
        check_inputs(load_config(str(demo_copy / "job.yaml")))
    assert "data_sources[4].encryption" in str(info.value)


def test_preflight_passes_on_the_demo(demo_copy):
    check_inputs(load_config(str(demo_copy / "job.yaml")))


def test_relative_paths_in_a_gcs_config_resolve_against_its_prefix():
    data = {
        "profiles": {"path": "profiles.parquet"},
        "data_sources": [{"name": "v", "dpid": 1, "segments": "segments/v/*.sync*", "id_type": "visitor"},
                         {"name": "a", "dpid": 2, "segments": "gs://other/abs/*", "id_type": "visitor"}],
    }
    cfg = parse_config(data, source="gs://b/jobs/job.yaml", base_dir="gs://b/jobs")
    assert cfg.profiles.path == "gs://b/jobs/profiles.parquet"
    assert [ds.segments for ds in cfg.data_sources] == ["gs://b/jobs/segments/v/*.sync*", "gs://other/abs/*"]



def test_dot_segments_in_a_gcs_config_resolve_as_in_a_local_one():
    """'./dumps/*' or '../shared/p.parquet' in a config moved to gs:// kept their '.' and '..': GCS
    has no folders to walk, so the run failed 'no segment dump matches 'gs://b/jobs/./a/*'' where
    the same config on local files ran. A trailing '/' (a folder's files) is kept."""
    data = {
        "profiles": {"path": "../shared/profiles.parquet"},
        "data_sources": [{"name": "v", "dpid": 1, "segments": "./segments/v/*.sync*", "id_type": "visitor"},
                         {"name": "a", "dpid": 2, "segments": "a/../b/{date:%Y%m%d}/", "id_type": "visitor"}],
        "suppression": [{"path": "./lists/*.txt", "kind": "email"}],
    }
    cfg = parse_config(data, source="gs://b/jobs/job.yaml", base_dir="gs://b/jobs")
    assert cfg.profiles.path == "gs://b/shared/profiles.parquet"
    assert [ds.segments for ds in cfg.data_sources] == ["gs://b/jobs/segments/v/*.sync*", "gs://b/jobs/b/{date:%Y%m%d}/"]
    assert cfg.suppression[0].path == "gs://b/jobs/lists/*.txt"


def test_a_folder_path_keeps_its_trailing_slash_locally_as_on_gcs(tmp_path):
    """'segments: dumps/{date:%Y%m%d}/' or 'profiles: {path: extract/}' (a folder's files): on gs://
    they read the folder's files; in a local config the '/' was dropped, so the path named the folder
    itself ('no file matches .../extract', the '/' the user wrote gone; before, the folder was read as
    a dump and failed on a bare IsADirectoryError)."""
    data = {"profiles": {"path": "extract/", "format": "parquet"},
            "data_sources": [{"name": "v", "dpid": 1, "segments": "dumps/{date:%Y%m%d}/", "id_type": "visitor"}]}
    local = parse_config(data, source="job.yaml", base_dir=tmp_path)
    remote = parse_config(data, source="gs://b/jobs/job.yaml", base_dir="gs://b/jobs")
    assert (local.profiles.path, local.data_sources[0].segments) == (f"{tmp_path}/extract/", f"{tmp_path}/dumps/{{date:%Y%m%d}}/")
    assert (remote.profiles.path, remote.data_sources[0].segments) == ("gs://b/jobs/extract/", "gs://b/jobs/dumps/{date:%Y%m%d}/")


def test_a_folder_path_without_a_format_names_the_path(tmp_path):
    """'profiles: {path: extract/}' (a folder's files, since the '/' is kept) without 'format': the
    config was refused "cannot tell the format of ''", naming nothing. It names the path and what to do."""
    data = {"profiles": {"path": "extract/"},
            "data_sources": [{"name": "v", "dpid": 1, "segments": "dumps/*", "id_type": "visitor"}]}
    for source, base in (("job.yaml", tmp_path), ("gs://b/jobs/job.yaml", "gs://b/jobs")):
        with pytest.raises(ConfigError) as info:
            parse_config(data, source=source, base_dir=base)
        assert "cannot tell the format of 'extract/' (a folder's files): name them with their extension " \
               "('extract/*.csv', '*.parquet', '*.jsonl') or set 'format'" in str(info.value), str(info.value)

def test_diagnosis_sample_is_job_wide_and_overridable_per_data_source():
    cfg = parse_config(GOOD)
    assert cfg.diagnosis_sample == 100_000 and cfg.sample_size(cfg.data_sources[0]) == 100_000
    cfg = parse_config(cfg_with(diagnosis_sample=500, **{"data_sources.0.diagnosis_sample": 0}))
    assert cfg.sample_size(cfg.data_sources[0]) == 0
    assert "diagnosis_sample" in error_of(cfg_with(diagnosis_sample=-1))


def test_key_settings_are_refused_where_they_would_do_nothing():
    assert "'ignore_case' applies to 'declared: plain' only" in error_of(cfg_with(**{"data_sources.0.ignore_case": True}))
    message = error_of(cfg_with(**{"data_sources.0.restore_leading_zeros": True}))
    assert "'restore_leading_zeros' applies to id_type 'visitor' only" in message
    assert parse_config(cfg_with(**{"data_sources.0.normalization": "none"})).data_sources[0].digest_encoding == "hex"


# ------------------------------------------------------------- force_reconciliation, default_region
@pytest.mark.parametrize(
    "changes",
    [
        {},  # declared hashed
        {"declared": "plain"},
        {"declared": "encrypted", "channel": "other"},  # the token is a plain key: nothing to force
    ],
)
def test_force_reconciliation_outside_encrypted_email_or_sms_is_an_error(changes):
    data = cfg_with(**{f"data_sources.0.{k}": v for k, v in changes.items()}, **{"data_sources.0.force_reconciliation": True})
    message = error_of(data)
    assert message.startswith("job.yaml: data_sources.0: ") and "force_reconciliation" in message
    assert "\n" not in message
    parse_config(cfg_with(**{f"data_sources.0.{k}": v for k, v in changes.items()}, **{"data_sources.0.force_reconciliation": False}))


@pytest.mark.parametrize(
    "changes",
    [
        {"declared": "encrypted"},  # channel left out: 'other', the token used as a plain key
        {"declared": "encrypted", "channel": "other"},
        {},  # declared hashed
        {"declared": "plain"},
    ],
)
def test_an_encryption_section_that_would_never_decrypt_is_an_error(changes):
    """A data source that does not decrypt (channel 'other', the default, or not 'declared: encrypted')
    ignored its encryption section: the tokens were compared undecrypted with the profiles' addresses,
    matched nobody, and an empty audience was published with exit 0."""
    data = cfg_with(**{f"data_sources.0.{k}": v for k, v in changes.items()},
                    **{"data_sources.0.encryption": {"key": "env:K", "iv": "env:IV"}})
    message = error_of(data)
    assert message.startswith("job.yaml: data_sources.0: 'encryption' applies only to ") and "never decrypted" in message
    assert "\n" not in message


@pytest.mark.parametrize("encryption, named", [
    ({"key": "env:K", "iv": "env:IV", "keyring": "file:ring.json"}, "'keyring' applies only to algorithm: aes-gcm"),
    ({"algorithm": "aes-gcm", "keyring": "file:ring.json", "key": "env:K", "key_encoding": "hex"},
     "'key', 'key_encoding' apply only to algorithm: aes-cbc"),
])
def test_a_key_setting_of_the_other_algorithm_is_an_error(encryption, named):
    """A data source moved to an AES-GCM key ring, 'keyring' added but 'algorithm: aes-gcm' forgotten:
    the ring was ignored, the tokens decrypted as AES-CBC under the old key and IV, and the run failed
    with 'wrong key or IV?' about a key and IV that were right for the old scheme. A setting of the
    other algorithm is refused, naming it."""
    data = cfg_with(**{"data_sources.0.declared": "encrypted", "data_sources.0.channel": "email",
                       "data_sources.0.match_on": "email", "data_sources.0.encryption": encryption})
    message = error_of(data)
    assert message.startswith("job.yaml: data_sources.0.encryption: ") and named in message, message
    assert "\n" not in message


@pytest.mark.parametrize("channel, match_on", [("sms", "email"), ("email", "phone")])
def test_an_encrypted_source_matching_on_the_other_channels_role_is_an_error(channel, match_on):
    """'channel: sms' with 'match_on: email': the decrypted phone numbers were compared with the
    profiles' email column read as phone numbers, no profile gave a key, and the run failed with "an
    empty or misnamed column? Set profiles.allow_empty_profiles: true if that is expected" -- which,
    followed, published a file audience in which no one matched, exit 0. Refused, naming both."""
    data = cfg_with(**{"data_sources.0.declared": "encrypted", "data_sources.0.channel": channel,
                       "data_sources.0.match_on": match_on, "data_sources.0.encryption": {"key": "env:K", "iv": "env:IV"}})
    message = error_of(data)
    assert message.startswith("job.yaml: data_sources.0: ") and f"match_on: {match_on}" in message, message
    assert f"channel: {channel}" in message and "\n" not in message
    data["data_sources"][0]["match_on"] = "crm_email"  # a column of its own: the operator's to name
    parse_config(data)


def test_force_reconciliation_on_an_encrypted_email_source_is_accepted():
    data = cfg_with(**{"data_sources.0.declared": "encrypted", "data_sources.0.channel": "sms",
                       "data_sources.0.match_on": "phone", "data_sources.0.force_reconciliation": True,
                       "data_sources.0.encryption": {"key": "env:K", "iv": "env:IV"}})
    assert parse_config(data).data_sources[0].keeps_file_audience is False


def test_default_region_on_the_extract_and_per_data_source():
    data = cfg_with(**{"profiles.default_region": "FR", "data_sources.0.match_on": "phone"})
    cfg = parse_config(data)
    assert cfg.region_for(cfg.data_sources[0]) == "FR"
    data["data_sources"][0]["default_region"] = "BE"
    cfg = parse_config(data)
    assert cfg.region_for(cfg.data_sources[0]) == "BE" and cfg.profiles.default_region == "FR"
    cfg = parse_config(cfg_with(**{"data_sources.0.match_on": "phone"}))
    assert cfg.region_for(cfg.data_sources[0]) is None


SMS = {"id_type": "declared", "declared": "encrypted", "channel": "sms", "match_on": "phone",
       "encryption": {"key": "env:K", "iv": "env:IV"}}


def test_data_sources_reading_the_extracts_phones_in_two_regions_are_refused():
    """A French partner's SMS source (default_region: FR) beside a Dutch one's (NL), no
    profiles.default_region: each read the extract's phones in its own region, so '06 12 34 56 78' was
    +33612345678 for one and +31612345678 for the other, and the profile matched the French number and
    the Dutch one, someone else's, exit 0. Refused naming both, their regions and profiles.default_region
    (never a number); set, both read the extract in it. A hashed source's own region reads the extract
    too. A source reading in no region beside one that does is no conflict (a national number is no key
    for it, never another number)."""
    data = cfg_with(**{"profiles.phone": "mobile"})
    data["data_sources"] = [{"name": "fr", "dpid": 1, "segments": "a/*", **SMS, "default_region": "FR"},
                            {"name": "nl", "dpid": 2, "segments": "b/*", **SMS, "default_region": "NL"}]
    message = error_of(data)
    assert message.startswith("job.yaml: (top level): data sources 'fr' and 'nl' read the extract's phones written without their "
                              "country code in FR and NL, so one such phone would be two numbers (their own default_region): set "
                              "profiles.default_region"), message
    assert "\n" not in message
    data["profiles"]["default_region"] = "FR"
    cfg = parse_config(data)
    assert [cfg.profile_region_for(ds) for ds in cfg.data_sources] == ["FR", "FR"]
    assert [cfg.region_for(ds) for ds in cfg.data_sources] == ["FR", "NL"]  # the partners' numbers
    data["data_sources"][1] = {"name": "nl", "dpid": 2, "segments": "b/*", "id_type": "declared", "declared": "hashed",
                               "match_on": "phone", "default_region": "NL"}
    assert error_of(data).startswith("job.yaml: (top level): data sources 'fr' and 'nl' read the extract's phones")
    del data["profiles"]["default_region"]
    data["data_sources"][1] = {"name": "nl", "dpid": 2, "segments": "b/*", **SMS}
    assert [parse_config(data).profile_region_for(ds) for ds in parse_config(data).data_sources] == ["FR", None]


def test_data_sources_reading_two_phone_columns_in_two_regions_are_accepted():
    """A hashed source on a second column of Dutch numbers (match_on: nl_mobile, match_as: phone,
    default_region: NL) beside an SMS source on the French extract's profiles.phone (profiles FR): no
    phone is read in both regions. It was refused, and its hint ('remove it') read the Dutch column in
    FR: '06 12 34 56 78' there became +33612345678, someone else's number. Two sources on one column
    still conflict."""
    data = cfg_with(**{"profiles.phone": "mobile", "profiles.default_region": "FR"})
    data["data_sources"] = [{"name": "fr", "dpid": 1, "segments": "a/*", **SMS},
                            {"name": "nl", "dpid": 2, "segments": "b/*", "id_type": "declared", "declared": "hashed",
                             "match_on": "nl_mobile", "match_as": "phone", "default_region": "NL"}]
    cfg = parse_config(data)
    assert [cfg.profile_region_for(ds) for ds in cfg.data_sources] == ["FR", "NL"]
    data["data_sources"].append({"name": "nl2", "dpid": 3, "segments": "c/*", **SMS, "match_on": "nl_mobile"})
    assert error_of(data).startswith("job.yaml: (top level): data sources 'nl' and 'nl2' read the extract's phones "
                                     "written without their country code in NL and FR")


@pytest.mark.parametrize("field", ["profiles.default_region", "data_sources.0.default_region"])
@pytest.mark.parametrize("region", ["XX", "fr", "France", ""])
def test_unknown_default_region_is_named(field, region):
    message = error_of(cfg_with(**{field: region, "data_sources.0.match_on": "phone"}))
    assert message.startswith(f"job.yaml: {field}: unknown region")


def test_default_region_on_a_source_that_does_not_match_phones_is_an_error():
    message = error_of(cfg_with(**{"data_sources.0.default_region": "FR"}))  # match_on: email
    assert message.startswith("job.yaml: data_sources.0: default_region applies only to phone")


@pytest.mark.parametrize("dpid", [0, -12345])
def test_a_dpid_is_positive(dpid):
    """``dpid: -12345`` (a stray minus) was accepted: the export's files were named ftp_dpm_-12345_..."""
    assert "data_sources.0.dpid: Input should be greater than 0" in error_of(cfg_with(**{"data_sources.0.dpid": dpid}))


@pytest.mark.parametrize("pattern", ["dumps/{date[0]}/*.sync", "dumps/{date.week}/*.sync"])
def test_a_date_placeholder_nightly_cannot_fill_is_named(pattern):
    """``{date[0]}`` or an unknown attribute failed the night with a bare TypeError / AttributeError."""
    from datetime import date

    cfg = parse_config(cfg_with(**{"data_sources.0.segments": pattern}))
    with pytest.raises(ConfigError, match=r"only \{date\} or \{date:FORMAT\} placeholders"):
        cfg.for_date(date(2026, 11, 22))


def test_an_empty_visitor_ids_separator_is_refused():
    """It failed the import with 'ArrowInvalid [while running ...]', naming neither field nor cause."""
    assert "profiles.visitor_ids_separator: String should have at least 1 character" in error_of(
        cfg_with(**{"profiles.visitor_ids_separator": ""}))


def test_a_visitor_data_source_needs_the_profiles_visitor_id_column():
    """It failed the run with "column 'None'" (the null column's name), naming no field."""
    with pytest.raises(ConfigError, match=r"data_sources\.0 \('v'\): a visitor data source needs profiles\.visitor_ids"):
        parse_config({"profiles": {"path": "p.parquet", "visitor_ids": None},
                      "data_sources": [{"name": "v", "dpid": 1, "segments": "x", "id_type": "visitor"}]})


@pytest.mark.parametrize("role, column", [("email", "e_mail"), ("phone", "gsm")])
def test_a_hashed_source_matching_on_the_column_of_a_role_by_its_name_is_refused(role, column):
    """`profiles.email: e_mail` and `match_on: e_mail` (the column's name, not the role): the column was
    compared as any other, trimmed only, its case kept, and every profile whose address had a capital
    (or a phone written otherwise than in E.164) missed its hash: 99 of the demo's 1010 memberships
    lost, exit 0. The role is what normalizes them."""
    source = {"name": "h", "dpid": 1, "segments": "x", "id_type": "declared", "declared": "hashed", "match_on": column}
    with pytest.raises(ConfigError) as info:
        parse_config({"profiles": {"path": "p.parquet", role: column}, "data_sources": [source]})
    assert (f"data_sources.0 ('h'): match_on: {column} is the column of profiles.{role}: write match_on: {role}, "
            f"so its values are normalized as {role}s") in str(info.value)
    # The role, a plain source (compared as written whatever the column) and normalization: none are as meant.
    parse_config({"profiles": {"path": "p.parquet", role: column}, "data_sources": [{**source, "match_on": role}]})
    parse_config({"profiles": {"path": "p.parquet", role: column},
                  "data_sources": [{**source, "declared": "plain"}]})
    parse_config({"profiles": {"path": "p.parquet", role: column},
                  "data_sources": [{**source, "normalization": "none"}]})


# ------------------------------------------------------------------------------------------- match_as
def test_match_as_reads_another_column_as_emails_or_phones():
    """A second email column (``work_email``) had no way to be read as emails: a column other than the
    roles is compared as written (trimmed, its case kept). ``match_as`` says what it holds."""
    assert parse_config(cfg_with(**{"data_sources.0.match_on": "work_email"})).data_sources[0].key_kind == "other"
    for kind in ("email", "phone", "other"):
        ds = parse_config(cfg_with(**{"data_sources.0.match_on": "work_email", "data_sources.0.match_as": kind})).data_sources[0]
        assert ds.key_kind == kind and ds.match_as == kind
    # A phone column read as phones takes a region, as the phone role does.
    data = cfg_with(**{"data_sources.0.match_on": "home_phone", "data_sources.0.match_as": "phone",
                       "data_sources.0.default_region": "FR"})
    cfg = parse_config(data)
    assert cfg.region_for(cfg.data_sources[0]) == "FR"
    assert parse_config(cfg_with()).data_sources[0].match_as is None  # the role's kind, as before


_ENCRYPTION = {"key": "env:K", "iv": "env:IV"}


@pytest.mark.parametrize("changes, named", [
    ({"match_on": "email", "match_as": "phone"}, "match_on: email is the email role, read as email addresses: "
                                                 "match_as: phone contradicts it"),
    ({"match_on": "phone", "match_as": "other"}, "match_on: phone is the phone role, read as phone numbers: "
                                                 "match_as: other contradicts it"),
    ({"match_on": "email", "match_as": "email"}, "match_on: email is read as email addresses already: remove match_as"),
    ({"declared": "encrypted", "channel": "email", "encryption": _ENCRYPTION, "match_on": "work_email",
      "match_as": "email"}, "match_as does not apply to 'declared: encrypted': its channel decides"),
    ({"declared": "encrypted", "match_on": "work_email", "match_as": "email"},
     "match_as does not apply to 'declared: encrypted': its channel decides"),
    ({"declared": "plain", "match_on": "work_email", "match_as": "email"},
     "match_as applies to 'declared: hashed' only (plain IDs are compared as written"),
    ({"id_type": "visitor", "declared": None, "match_on": None, "match_as": "email"},
     "match_as applies to 'declared: hashed' only"),
    ({"normalization": "none", "match_on": "work_email", "match_as": "email"},
     "match_as does nothing under normalization: none"),
    ({"match_on": "work_email", "match_as": "email", "default_region": "FR"}, "default_region applies only to phone"),
])
def test_match_as_is_refused_where_it_contradicts_or_does_nothing(changes, named):
    message = error_of(cfg_with(**{f"data_sources.0.{k}": v for k, v in changes.items()}))
    assert message.startswith("job.yaml: data_sources.0: ") and named in message, message
    assert "\n" not in message


def test_match_as_on_the_column_of_a_role_is_refused_for_the_role():
    """``match_on: e_mail`` beside ``profiles.email: e_mail`` names the role's column: the role reads it
    (whatever match_as says, one way to write it)."""
    data = cfg_with(**{"profiles.email": "e_mail", "data_sources.0.match_on": "e_mail", "data_sources.0.match_as": "email"})
    message = error_of(data)
    assert message.startswith("job.yaml: (top level): data_sources.0 ('h'): match_on: e_mail is the column of profiles.email: "
                               "write match_on: email"), message
    assert "without match_as" in message and "\n" not in message
