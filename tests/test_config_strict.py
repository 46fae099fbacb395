"""Config strictness: a duplicated YAML key is an error naming the key and its line (the last one
used to win silently), and a key reference that is not a reference (a key pasted after ``env:`` or
``file:``) is refused at load time without echoing what was pasted, down to the real CLI's stderr."""
from __future__ import annotations

import base64
import random
import re
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, cli_in_process
from transforms.config import ConfigError
from transforms.config_load import load_config, parse_config
from transforms.errors import KeyMaterialError
from transforms.secrets import load_secret, looks_like_key_material, reference_problem

HEX_KEY = "7e458de6b88246e052b607aea40d094868c886c2d86cd9b00ef9524ff084a123"
B64_KEY = "fkWN5riCRuBStgeupA0JSGjIhsLYbNmwDvlST/CEoSM="
B64_KEY_24 = "fkWN5riCRuBStgeupA0JSGjIhsLYbNmw"  # 24 bytes, letters and digits only: a valid env name


def write(tmp_path, text: str):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return str(path)


BASE = """\
profiles:
  path: profiles.parquet
data_sources:
  - name: visitors
    dpid: 1
    segments: dumps/*.sync
    id_type: visitor
"""


# -- duplicate keys -----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, key, line", [
    (BASE + "buckets: 4\nbuckets: 8\n", "buckets", 9),
    (BASE.replace("    segments: dumps/*.sync\n", "    segments: dumps/*.sync\n    segments: other/*.sync\n"),
     "segments", 7),
    (BASE.replace("  path: profiles.parquet\n", "  path: profiles.parquet\n  path: old.parquet\n"), "path", 3),
    ("profiles: {path: a.parquet, path: b.parquet}\n" + BASE.split("\n", 2)[2], "path", 1),
])
def test_a_duplicate_key_anywhere_is_an_error_naming_key_and_line(tmp_path, text, key, line):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert f"line {line}: duplicate key '{key}'" in message and "\n" not in message


def test_the_same_key_in_two_mappings_is_fine(tmp_path):
    text = BASE + "  - name: other\n    dpid: 2\n    segments: dumps/*.sync\n    id_type: visitor\n"
    assert [ds.name for ds in load_config(write(tmp_path, text)).data_sources] == ["visitors", "other"]


def test_yaml_merge_keys_still_work(tmp_path):
    """A key given beside a ``<<`` merge overrides the merged one: that is YAML, not a duplicate."""
    text = ("profiles: {path: p.parquet}\n"
            "data_sources:\n"
            "  - &v {name: visitors, dpid: 1, segments: dumps/*.sync, id_type: visitor}\n"
            "  - <<: *v\n"
            "    name: other\n")
    assert [ds.name for ds in load_config(write(tmp_path, text)).data_sources] == ["visitors", "other"]


MERGED = ("profiles: {path: p.parquet}\n"
          "data_sources:\n"
          "  - &crm {name: crm, dpid: 10, segments: crm/*.sync, id_type: visitor}\n"
          "  - &web {name: web, dpid: 20, segments: web/*.sync, id_type: visitor}\n")


@pytest.mark.parametrize("merge, line", [
    ("  - <<: *crm\n    <<: *web\n    name: both\n    segments: both/*.sync\n", 6),
    ("  - <<: [*crm, *web]\n    name: both\n    segments: both/*.sync\n", 5),
])
def test_merged_mappings_that_set_the_same_key_are_an_error(tmp_path, merge, line):
    """Two mappings merged into one that both set a key (``dpid``) the mapping does not set itself:
    YAML takes the first one's (dpid 10, crm's), silently, where a reader of the file takes the later
    one's for an override (20). So do two ``<<`` keys in one mapping (both merged, the first winning)."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MERGED + merge))
    message = str(info.value)
    assert f"job.yaml: line {line}: " in message and "'dpid'" in message and "\n" not in message


def test_merged_mappings_whose_shared_keys_are_set_beside_them_are_fine(tmp_path):
    """A key both set is set beside the ``<<`` (that one wins), or both set it alike (``id_type``)."""
    text = MERGED + "  - <<: [*crm, *web]\n    name: both\n    dpid: 30\n    segments: both/*.sync\n"
    both = load_config(write(tmp_path, text)).data_source("both")
    assert (both.dpid, both.id_type, both.segments.endswith("/both/*.sync")) == (30, "visitor", True)


# -- key references ----------------------------------------------------------------------------------
ENCRYPTED = """\
profiles:
  path: profiles.parquet
data_sources:
  - name: enc
    dpid: 1
    segments: dumps/*.sync
    id_type: declared
    declared: encrypted
    match_on: email
    channel: email
    encryption:
      key: '{key}'
      iv: env:AUDIENCE_SYNC_IV
"""


@pytest.mark.parametrize("ref", [f"env:{HEX_KEY}", f"env:{B64_KEY}", f"env:{B64_KEY_24}", f"file:{HEX_KEY}",
                                 f"file:{B64_KEY}", "env:", "env:MY KEY", "file:", f"{HEX_KEY}"])
def test_a_key_reference_that_is_no_reference_is_refused_without_echo(tmp_path, ref):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ENCRYPTED.format(key=ref)))
    message = str(info.value)
    assert "data_sources.0.encryption.key" in message
    assert ref.partition(":")[2] not in message or not ref.partition(":")[2]
    assert HEX_KEY not in message and B64_KEY not in message and B64_KEY_24 not in message


@pytest.mark.parametrize("ref", ["env:AUDIENCE_SYNC_KEY", "env:_k2", "file:keys/demo-only-aes256.key",
                                 "file:/run/secrets/aes.key", "gcpsm:projects/p/secrets/s/versions/1"])
def test_real_references_are_accepted(tmp_path, ref):
    assert load_config(write(tmp_path, ENCRYPTED.format(key=ref))).data_sources[0].encryption.key.endswith(
        ref.partition(":")[2].rsplit("/", 1)[-1])


def test_load_secret_never_echoes_a_pasted_key():
    for ref in (f"env:{HEX_KEY}", f"file:{HEX_KEY}", f"env:{B64_KEY_24}"):
        with pytest.raises(KeyMaterialError) as info:
            load_secret(ref)
        assert HEX_KEY not in str(info.value) and B64_KEY_24 not in str(info.value)


def test_the_cli_does_not_echo_a_key_pasted_after_env(demo_copy, tmp_path):
    key = (demo_copy / "keys" / "demo-only-aes256.key").read_text().strip()
    config = demo_copy / "job.yaml"
    for ref in (f"env:{key}", f"file:{key}"):
        config.write_text((ROOT / "testdata" / "demo" / "job.yaml").read_text().replace(
            "key: file:keys/demo-only-aes256.key", f"key: {ref}"))
        result = subprocess.run([sys.executable, "-m", "pipelines.cli", "import", "--config", str(config),
                                 "--output", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 2
        assert key not in result.stderr + result.stdout
        assert "data_sources.4.encryption.key" in result.stderr and "Traceback" not in result.stderr


# -- a key pasted in a form the strict hex/base64 readers do not take ---------------------------------
PASTED = bytes.fromhex("3c9a51e07b2d48f6a1c3e5079b2d4f618a3c5e7092b4d6f81a3c5e7f9b1d3f50")
PASTED_FORMS = {  # what an operator copies from a console, a password manager or a hex dump
    "base64 unpadded": base64.b64encode(PASTED).decode().rstrip("="),
    "url-safe base64 unpadded": base64.urlsafe_b64encode(PASTED).decode().rstrip("="),
    "url-safe base64 padded": base64.urlsafe_b64encode(PASTED).decode(),
    "hex with colons": ":".join(f"{b:02x}" for b in PASTED),
    "0x-prefixed hex": "0x" + PASTED.hex(),
    "hex in two halves": PASTED.hex().upper()[:32] + " " + PASTED.hex().upper()[32:],
    "16-byte base64 unpadded": base64.b64encode(PASTED[:16]).decode().rstrip("="),
    "truncated base64": base64.b64encode(PASTED).decode()[:38],
}
HIDDEN = {"env": "env:<hidden: looks like key material, not a variable name>",
          "file": "file:<hidden: reads as key material, and no file at that path>"}


def _shows_none_of(text: str, secret: str) -> bool:
    """No 8 characters in a row of the pasted key (separators aside) appear in ``text``."""
    compact = re.sub(r"[^0-9A-Za-z]", "", secret)
    return all(compact[i:i + 8].lower() not in text.lower() for i in range(len(compact) - 7))


@pytest.mark.parametrize("kind", ["env", "file"])
@pytest.mark.parametrize("form", PASTED_FORMS)
def test_a_key_pasted_in_another_encoding_is_refused_and_hidden(tmp_path, kind, form):
    secret = PASTED_FORMS[form]
    ref = f"{kind}:{secret}"
    problem = reference_problem(ref)
    assert problem is not None and problem.startswith(f"not a key reference: {HIDDEN[kind]}; ")
    assert "put the key in an environment variable" in problem
    with pytest.raises(KeyMaterialError) as loading:
        load_secret(ref)
    with pytest.raises(ConfigError) as config:
        load_config(write(tmp_path, ENCRYPTED.format(key=ref)))
    for text in (problem, str(loading.value), str(config.value)):
        assert _shows_none_of(text, secret) and "\n" not in text


@pytest.mark.parametrize("ref", ["env:AUDIENCE_SYNC_KEY", "env:CAMPAIGN_AES_KEY_2",
                                 "env:AUDIENCE_SYNC_KEY_CAMP",  # 22 characters: also url-safe base64 of 16 bytes
                                 "env:AudienceSyncKeyForWeb1", "file:keys/campaign.key", "file:/etc/secrets/k.b64",
                                 "file:gs://bucket/keys/x", "file:secrets/campaignaeskey", "file:secrets/CampaignAesKey"])
def test_ordinary_names_and_paths_are_accepted_and_shown(tmp_path, monkeypatch, ref):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(ref.partition(":")[2], raising=False)
    assert reference_problem(ref) is None
    with pytest.raises(KeyMaterialError) as info:
        load_secret(ref)
    assert str(info.value).startswith(f"{ref}: ")


@pytest.mark.parametrize("ref", ["env:DCM_KMS_KEY_prod_eu1", "env:AWS_KMS_dpid_48213_KEY", "env:IV_FOR_WEB_dpid_48213_v2",
                                 "env:TTD_Cbc_Iv_Prod_2024", "file:keys/prod/DmpWebCbcIv", "file:vault/aam/webCbcKey_v3",
                                 "file:keys/aam/dpid-48213/iv_2024Q4", "file:3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b"])
def test_a_reference_that_reads_as_random_is_a_name_when_it_resolves(tmp_path, monkeypatch, ref):
    """Names with abbreviations and digits, relative paths, a UUID-named file: some read as key
    material and were refused, a working config failing. What names a set variable or an existing
    file is a name; unset or missing, it is not echoed (it may be a key pasted in its place)."""
    monkeypatch.chdir(tmp_path)
    kind, _, name = ref.partition(":")
    key = "00112233445566778899aabbccddeeff"
    if kind == "env":
        monkeypatch.setenv(name, key)
    else:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(key + "\n")
    assert reference_problem(ref) is None
    assert load_secret(ref, "hex") == bytes.fromhex(key)


@pytest.mark.parametrize("ref", ["env:DCM_KMS_KEY_prod_eu1", "env:AWS_KMS_dpid_48213_KEY", "env:TTD_Cbc_Iv_Prod_2024",
                                 "file:keys/prod/DmpWebCbcIv", "file:3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b"])
def test_a_name_that_reads_as_random_and_resolves_to_nothing_is_refused_naming_both_causes(tmp_path, monkeypatch, ref):
    """A variable not exported where the job runs (a new host, an Airflow worker) or a key file not
    copied there: refused as 'looks like key material, not a variable name' (or 'not a path'), and the
    operator, who wrote a name, was told it was none. It may be either: the message says both, hidden."""
    monkeypatch.chdir(tmp_path)
    kind, _, name = ref.partition(":")
    monkeypatch.delenv(name, raising=False)
    missing = "no variable of that name is set" if kind == "env" else "no file at that path"
    problem = reference_problem(ref)
    assert problem is not None and name not in problem
    assert problem.startswith(f"not a key reference: {kind}:<hidden: reads as key material, and {missing}>; if ")
    with pytest.raises(ConfigError) as config:
        load_config(write(tmp_path, ENCRYPTED.format(key=ref)))
    assert missing in str(config.value) and name not in str(config.value)


def test_a_key_file_named_as_random_is_found_beside_the_config_from_another_folder(demo_copy, tmp_path, monkeypatch):
    """``file:`` references are relative to the config file, but the look-alike check looked for the file
    from the working folder: run from anywhere else (Airflow, cron, the repository's root), a key file
    named ``keys/prod/DmpWebCbcIv`` beside the config was refused as 'looks like key material, not a
    path' (exit 2), naming the wrong cause; run from the config's folder, the same config ran."""
    (demo_copy / "keys" / "prod").mkdir()
    (demo_copy / "keys" / "demo-only-aes256.key").rename(demo_copy / "keys" / "prod" / "DmpWebCbcIv")
    config = demo_copy / "job.yaml"
    config.write_text(config.read_text().replace("key: file:keys/demo-only-aes256.key",
                                                 "key: file:keys/prod/DmpWebCbcIv"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = cli_in_process("import", "--config", config, "--output", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "o" / "report.json").exists()
    # missing beside the config, it is still refused without echo (it may be a key pasted in its place)
    (demo_copy / "keys" / "prod" / "DmpWebCbcIv").unlink()
    result = cli_in_process("import", "--config", config, "--output", tmp_path / "o2")
    assert result.returncode == 2 and "DmpWebCbcIv" not in result.stderr
    assert "data_sources.4.encryption.key" in result.stderr


def test_random_keys_in_every_pasted_form_read_as_key_material():
    """Seeded: 24- and 32-byte keys are always caught; 16-byte base64 (22 characters) may, about once in
    300, read as words and is then refused only if it is not a valid name (transforms/key_lookalike.py)."""
    rng = random.Random(20261122)
    for key in (rng.randbytes(n) for n in (24, 32) for _ in range(300)):
        for text in (base64.b64encode(key).decode(), base64.b64encode(key).decode().rstrip("="),
                     base64.urlsafe_b64encode(key).decode().rstrip("="), key.hex(), "0x" + key.hex().upper(),
                     ":".join(f"{b:02x}" for b in key), " ".join(f"{b:02X}" for b in key)):
            assert looks_like_key_material(text)


def test_the_cli_does_not_echo_a_key_pasted_in_any_form(tmp_path, capfd):
    """Every form after env: and after file:, through the CLI's own entry point and its stderr (the
    subprocess test above covers the process around it)."""
    from pipelines import cli

    leaks, unnamed = [], []
    for form, secret in PASTED_FORMS.items():
        for kind in ("env", "file"):
            config = tmp_path / "job.yaml"
            config.write_text(ENCRYPTED.format(key=f"{kind}:{secret}"))
            code = cli.main(["import", "--config", str(config), "--output", str(tmp_path / "o")])
            out, err = capfd.readouterr()
            assert code == 2, (form, kind)
            if not _shows_none_of(err + out, secret):
                leaks.append((form, kind))
            if HIDDEN[kind] not in err or "Traceback" in err:
                unnamed.append((form, kind))
    assert leaks == [] and unnamed == []


def test_the_cli_names_a_duplicate_key(demo_copy, tmp_path):
    config = demo_copy / "job.yaml"
    config.write_text(config.read_text() + "buckets: 4\nbuckets: 8\n")
    result = cli_in_process("import", "--config", config, "--output", tmp_path / "o")
    assert result.returncode == 2
    assert "duplicate key 'buckets'" in result.stderr and "Traceback" not in result.stderr


def test_parse_config_still_takes_plain_mappings():
    cfg = parse_config({"profiles": {"path": "p.parquet"},
                        "data_sources": [{"name": "v", "dpid": 1, "segments": "s", "id_type": "visitor"}]})
    assert cfg.data_sources[0].name == "v"


# -- YAML 1.1 number forms ---------------------------------------------------------------------------
@pytest.mark.parametrize("field, text, line", [
    ("dpid", "0123", 5),  # YAML 1.1 (PyYAML): octal, 83 -- the export would name data source 83
    ("dpid", "-0123", 5),
    ("dpid", "012_345", 5),
    ("dpid", "1:40", 5),  # base 60: 100
    ("target_dpid", "045454", 8),
])
def test_a_number_yaml_reads_in_another_base_is_an_error_naming_the_line(tmp_path, field, text, line):
    """A leading zero makes a YAML 1.1 integer octal and ``1:40`` is base 60 (100): ``dpid: 0123`` was
    data source 83 (and ``dpid: 0189``, not octal, 189). Refused, naming the line, never the value."""
    config = BASE.replace("    dpid: 1\n", f"    dpid: {text}\n" if field == "dpid" else "    dpid: 20914\n")
    if field == "target_dpid":
        config += f"    target_dpid: {text}\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, config))
    message = str(info.value)
    assert f"job.yaml: line {line}: " in message and "\n" not in message and text not in message


@pytest.mark.parametrize("text, value", [("12345", 12345), ("'0123'", 123), ("10", 10), ("12_345", 12345),
                                         ("0x3039", 12345)])
def test_numbers_without_a_second_reading_are_kept(tmp_path, text, value):
    config = BASE.replace("    dpid: 1\n", f"    dpid: {text}\n")
    assert load_config(write(tmp_path, config)).data_sources[0].dpid == value


@pytest.mark.parametrize("line, field", [("max_shrink: on\n", "max_shrink"), ("buckets: yes\n", "buckets"),
                                         ("diagnosis_sample: on\n", "diagnosis_sample"),
                                         ("    max_format_error_ratio: true\n", "data_sources.0.max_format_error_ratio"),
                                         ("    target_dpid: true\n", "data_sources.0.target_dpid")])
def test_a_yaml_boolean_where_a_number_belongs_is_an_error(tmp_path, line, field):
    """YAML 1.1 reads on/off/yes/no as booleans, and pydantic took them for 1 and 0: ``max_shrink: on``
    was 1.0, a nightly guard that lets an audience vanish."""
    config = (BASE + line) if line.startswith("    ") else (line + BASE)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, config))
    assert f"job.yaml: {field}: " in str(info.value) and "\n" not in str(info.value)


def test_booleans_still_read_as_booleans(tmp_path):
    config = BASE.replace("  path: profiles.parquet\n", "  path: profiles.parquet\n  allow_empty_profiles: yes\n")
    assert load_config(write(tmp_path, config)).profiles.allow_empty_profiles is True


# -- a key left without a value ------------------------------------------------------------------------
@pytest.mark.parametrize("text, key, line", [
    # a template's placeholder rendered empty: no opt-out column, and under opt_out_missing: consented
    # every profile, the opted-out ones too, was exported (exit 0)
    (BASE.replace("  path: profiles.parquet\n", "  path: profiles.parquet\n  opt_out:   # {{ OPT_OUT }}\n"),
     "opt_out", 3),
    (BASE.replace("  path: profiles.parquet\n", "  path: profiles.parquet\n  email:\n"), "email", 3),  # not 'email'
    (BASE + "    target_dpid:\n", "target_dpid", 8),
    ("profiles: {path: profiles.parquet, opt_out: }\n" + BASE.split("\n", 2)[2], "opt_out", 1),
    # a section's placeholder rendered empty (no field commented out below it): no suppression list was
    # applied, the suppressed addresses exported (exit 0)
    (BASE + "suppression:   # {{ SUPPRESSION }}\nbuckets: 4\n", "suppression", 8),
    (BASE + "export:\n", "export", 8),
])
def test_a_key_left_without_a_value_is_an_error_naming_key_and_line(tmp_path, text, key, line):
    """YAML reads ``opt_out:`` with nothing after it as null, which is not the field's default: for
    ``email`` it is no email column at all, for ``opt_out`` no opt-out column. Refused, naming the line."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert f"job.yaml: line {line}: '{key}' has no value" in message and "\n" not in message


def test_a_section_whose_every_field_is_commented_out_is_no_section(tmp_path):
    """``encryption:`` or ``export:`` over its fields commented out, ``suppression:`` over its lists: null
    is none of that section, what leaving the line out says (the default), not a value left empty."""
    config = (BASE + "    encryption:\n      # algorithm: aes-gcm\n      # keyring: env:KEYRING\n"
              "export:\n  # data_source: crm\nsuppression:\n  # - {path: never.csv, kind: email}\n")
    cfg = load_config(write(tmp_path, config))
    assert (cfg.data_sources[0].encryption, cfg.export, cfg.suppression) == (None, None, [])
    config = BASE + "suppression:\n\n# - {path: never.csv, kind: email}\nbuckets: 4\n"  # a list at the key's column
    assert load_config(write(tmp_path, config)).suppression == []


def test_an_explicit_null_is_still_none(tmp_path):
    config = BASE.replace("  path: profiles.parquet\n", "  path: profiles.parquet\n  email: null\n  phone: ~\n")
    profiles = load_config(write(tmp_path, config)).profiles
    assert (profiles.email, profiles.phone) == (None, None)


def test_an_export_whose_opt_out_was_left_empty_is_refused_before_it_sends_the_opted_out(tmp_path):
    """``opt_out:`` left empty beside ``opt_out_missing: consented`` read as 'no opt-out column': the
    export sent p0, who had opted out, exit 0. Refused now (exit 2), nothing written."""
    (tmp_path / "p.csv").write_text("profile_id,email,opt_out\np0,a0@x.com,yes\np1,a1@x.com,\np2,a2@x.com,no\n")
    (tmp_path / "t.csv").write_text("profile_id\np0\np1\np2\n")
    config = write(tmp_path, "profiles:\n  path: p.csv\n  phone: null\n  visitor_ids: null\n"
                             "  opt_out:            # {{ OPT_OUT_COLUMN }}\n  opt_out_missing: consented\n"
                             "data_sources:\n  - {name: plain, dpid: 45678, segments: dumps/*.sync, id_type: declared,"
                             " declared: plain, match_on: email}\n")
    result = cli_in_process("export", "--config", config, "--audience", "A", "--targets", tmp_path / "t.csv",
                            "--output", tmp_path / "o", "--run-date", "2026-12-01")
    assert result.returncode == 2, result.stderr
    assert "job.yaml: line 5: 'opt_out' has no value" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o" / "onboarding").exists()


# -- the file's text ---------------------------------------------------------------------------------
def test_a_config_saved_as_utf16_reads_as_its_utf8_twin(tmp_path):
    """Notepad's "Unicode" is UTF-16 with its byte-order mark, as key files are read: it failed
    'cannot read the config (UnicodeDecodeError)', naming no cause."""
    (tmp_path / "job.yaml").write_bytes(BASE.replace("\n", "\r\n").encode("utf-16"))
    utf16 = load_config(str(tmp_path / "job.yaml"))
    assert utf16.model_dump() == parse_config(yaml.safe_load(BASE), base_dir=tmp_path).model_dump()
    assert utf16.data_sources[0].segments == str(tmp_path / "dumps/*.sync")


@pytest.mark.parametrize("text, line, cause", [
    (BASE.encode().replace(b"  path: profiles.parquet\n", b"  path: profiles.parquet   # cl\xe9 CRM\n"), 2,
     "not UTF-8 text"),  # an accent in a comment, saved as Windows-1252
    (BASE.replace("    dpid: 1\n", "\tdpid: 1\n").encode(), 5, "a tab"),
    ((BASE + "---\n" + BASE).encode(), 8, "a second YAML document"),
])
def test_a_config_that_is_not_one_yaml_document_of_utf8_text_names_the_cause_and_line(tmp_path, text, line, cause):
    """It said 'cannot read the config (UnicodeDecodeError)' or 'line N not valid YAML'."""
    (tmp_path / "job.yaml").write_bytes(text)
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "job.yaml"))
    message = str(info.value)
    assert f"job.yaml: line {line}: {cause}" in message and "\n" not in message and "CRM" not in message


@pytest.mark.parametrize("line, field", [("    dpid: 20.000\n", "data_sources.0.dpid"),  # a thousands separator: 20
                                         ("    dpid: '20.000'\n", "data_sources.0.dpid"),
                                         ("export: {max_lines_per_file: 1.000}\n", "export.max_lines_per_file"),
                                         ("diagnosis_sample: 100.000\n", "diagnosis_sample"),
                                         ("    max_nights_without_delivery: 3.0\n",
                                          "data_sources.0.max_nights_without_delivery")])
def test_a_decimal_point_where_a_whole_number_belongs_is_an_error(tmp_path, line, field):
    """YAML reads ``20.000`` (twenty thousand, written with a European thousands separator) as 20.0,
    and pydantic took it for 20: data source 20; ``max_lines_per_file: 1.000`` split an export into
    one file per line."""
    config = BASE.replace("    dpid: 1\n", line) if "dpid" in line else (
        BASE + line if line.startswith("    ") else line + BASE)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, config))
    assert f"job.yaml: {field}: expected a whole number" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("line, field", [("  default_region: NO\n", "profiles.default_region"),  # Norway
                                         ("  opt_out: off\n", "profiles.opt_out")])
def test_a_yaml_boolean_where_text_belongs_says_to_quote_it(tmp_path, line, field):
    config = BASE.replace("  path: profiles.parquet\n", "  path: profiles.parquet\n" + line)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, config))
    assert f"job.yaml: {field}: expected text, not true/false" in str(info.value) and "quote it" in str(info.value)
    quoted = config.replace(": NO\n", ": 'NO'\n").replace(": off\n", ": 'off'\n")
    assert load_config(write(tmp_path, quoted)).profiles.model_dump()[field.split(".")[1]] in ("NO", "off")


# -- an unknown field --------------------------------------------------------------------------------
@pytest.mark.parametrize("line, said", [
    ("    Match_On: email\n", "data_sources.0.Match_On: unknown field (did you mean 'match_on'?)"),
    ("    max-shrink: 0.9\n", "data_sources.0.max-shrink: unknown field (did you mean 'max_shrink'?)"),
    ("    segment: other/*.sync\n", "data_sources.0.segment: unknown field (did you mean 'segments'?)"),
    ("    buckets: 4\n", "data_sources.0.buckets: unknown field (a field of the top level)"),
    ("default_region: FR\n", "default_region: unknown field (a field of profiles and data_sources)"),
    ("    colour: red\n", "data_sources.0.colour: unknown field"),
])
def test_an_unknown_field_names_the_field_it_may_be(tmp_path, line, said):
    """A field in another case, spelled with '-', misspelled, or in another section was 'unknown field'."""
    config = BASE + line if line.startswith("    ") else line + BASE
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, config))
    assert f"job.yaml: {said} (line " in str(info.value)


# -- the line of a field -----------------------------------------------------------------------------
THREE = BASE + ("  - name: crm\n    dpid: 2\n    segments: crm/*.sync\n    id_type: declared\n    declared: hashed\n"
                "    match_on: email\n  - <<: *web\n    name: web2\n    segments: web2/*.sync\n")


@pytest.mark.parametrize("change, said", [
    (("    normalization: adobe\n", "    normalization: sha1\n"), ["data_sources.1.normalization: Input should be"]),
    (("    dpid: 2\n", ""), ["data_sources.1.dpid: required field is missing"]),  # at the entry's first line
    (("    match_on: email\n", "    match_on: email\n    Match_On: phone\n"), ["data_sources.1.Match_On: unknown field"]),
    (("    name: web\n    dpid: 3\n", "    name: web\n    dpid: 0\n"),  # web2 merges it: both, at its line
     ["data_sources.2.dpid: Input should be greater", "data_sources.3.dpid: Input should be greater"]),
])
def test_a_field_refused_is_named_with_its_line(tmp_path, change, said):
    """Errors named the field (``data_sources.23.dpid``), never the line: in a config of many data
    sources, merged ones among them, the operator counted entries. A field merged from another entry
    is named at that entry's line (where it is written); a missing one at its entry's first line."""
    text = THREE.replace("  - <<: *web\n", "  - &web\n    name: web\n    dpid: 3\n    segments: web/*.sync\n"
                         "    id_type: visitor\n  - <<: *web\n").replace("    declared: hashed\n",
                                                                       "    declared: hashed\n    normalization: adobe\n")
    text = text.replace(*change)
    lines = text.splitlines()
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value).splitlines()
    assert len(message) == len(said)
    for told, expected in zip(message, said):
        assert expected in told
        line = int(re.search(r" \(line (\d+)\)$", told).group(1))
        field = expected.split(":")[0].split(".")[-1]
        assert {"normalization": "normalization:", "Match_On": "Match_On:", "dpid": "dpid: 0"}.get(
            field if "missing" not in expected else "", "- name: crm") in lines[line - 1]


# -- paths a shell would expand ----------------------------------------------------------------------
@pytest.mark.parametrize("old, new, field", [
    ("segments: dumps/*.sync", "segments: ~/dumps/*.sync", "data_sources.0.segments"),
    ("segments: dumps/*.sync", "segments: ${DUMPS}/crm/*.sync", "data_sources.0.segments"),
    ("segments: dumps/*.sync", "segments: dumps/${date}/*.sync", "data_sources.0.segments"),  # {date} meant
    ("path: profiles.parquet", "path: $HOME/extract/profiles.parquet", "profiles.path"),
])
def test_a_path_a_shell_would_expand_is_an_error_naming_the_field(tmp_path, monkeypatch, old, new, field):
    """'~' and '$NAME' are a shell's: kept as written, the path was looked for under the config's
    folder ('no segment dump matches '<config folder>/~/dumps/*.sync'', exit 2); a nightly source allowed
    nights without a delivery reads such a night as one its partner sent nothing."""
    monkeypatch.setenv("DUMPS", str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, BASE.replace(old, new)))
    message = str(info.value)
    assert f"job.yaml: {field}: " in message and "not expanded" in message and "\n" not in message


def test_a_path_with_a_tilde_or_dollar_inside_a_name_is_kept(tmp_path):
    text = BASE.replace("segments: dumps/*.sync", "segments: dumps/a~b/x$1.sync")
    assert load_config(write(tmp_path, text)).data_sources[0].segments == str(tmp_path / "dumps/a~b/x$1.sync")


def test_a_folder_named_with_a_tilde_or_dollar_that_is_there_is_read_as_written(tmp_path):
    """A folder named '$crm' or '~archive' (legal on disk and in a bucket) is no shell's word when it is
    there: it was refused, and no writing of the path let it through. One that is not there still is."""
    (tmp_path / "dumps" / "$crm").mkdir(parents=True)
    (tmp_path / "dumps" / "$crm" / "d.sync").write_text("")
    (tmp_path / "~archive").mkdir()
    (tmp_path / "~archive" / "profiles.parquet").write_text("")
    text = BASE.replace("segments: dumps/*.sync", "segments: dumps/$crm/*.sync").replace(
        "path: profiles.parquet", "path: ~archive/profiles.parquet")
    cfg = load_config(write(tmp_path, text))
    assert (cfg.profiles.path, cfg.data_sources[0].segments) == (str(tmp_path / "~archive/profiles.parquet"),
                                                                 str(tmp_path / "dumps/$crm/*.sync"))
    with pytest.raises(ConfigError, match="segments: '~' and environment variables"):
        load_config(write(tmp_path, text.replace("$crm", "$web")))


# -- one data source under two names -----------------------------------------------------------------
@pytest.mark.parametrize("other", ["visitors", "Visitors", "VISITORS"])
def test_data_source_names_differing_only_in_case_are_an_error(tmp_path, other):
    """An export's state is kept in a folder named by its data source (ROOT/<name>/<audience>): on a
    disk that ignores case (macOS, Windows), 'crm' and 'CRM' shared one, each reading the other's
    members as its own. Two entries of one name were refused; of one name in two cases, accepted."""
    text = BASE + f"  - name: {other}\n    dpid: 2\n    segments: other/*.sync\n    id_type: visitor\n"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert "data source names must be unique" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# job.yaml: to be filled in\n", "---\n"])
def test_an_empty_config_is_said_to_be_empty(tmp_path, text):
    """An empty file (a failed copy, a template not rendered) said 'expected a mapping at the top level'."""
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert str(info.value).endswith("job.yaml: the config is empty (nothing but comments or blank lines)")


@pytest.mark.parametrize("value, indicator", [("*.sync*", "*"), ("{date}/*.sync", "{"), ("{date}", "{"),
                                              ("&x/*.sync", "&"), ("!x/*.sync", "!"), ("@x/*.sync", "@"),
                                              ("[0-9]*.sync", "[")])
def test_a_value_starting_with_yaml_syntax_says_to_quote_it(tmp_path, value, indicator):
    """``segments: *.sync*`` (every dump beside the config) is an alias to YAML, ``{date}/*.sync`` a
    mapping: 'line 6 not valid YAML', and ``{date}`` alone a mapping whose key has no value."""
    text = BASE.replace("segments: dumps/*.sync", f"segments: {value}")
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    message = str(info.value)
    assert f"job.yaml: line 6: a value starting with '{indicator}' is " in message and "quote it" in message
    assert "\n" not in message and value not in message
    quoted = load_config(write(tmp_path, BASE.replace("segments: dumps/*.sync", f"segments: '{value}'")))
    assert quoted.data_sources[0].segments == str(tmp_path / value)
