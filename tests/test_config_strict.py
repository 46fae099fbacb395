"""Config strictness: a duplicated YAML key is an error naming the key and its line (the last one
used to win silently), and a key reference that is not a reference (a key pasted after ``env:`` or
``file:``) is refused at load time without echoing what was pasted, down to the real CLI's stderr."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from transforms.config import ConfigError, load_config, parse_config
from transforms.errors import KeyMaterialError
from transforms.secrets import load_secret

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


def test_the_cli_names_a_duplicate_key(demo_copy, tmp_path):
    config = demo_copy / "job.yaml"
    config.write_text(config.read_text() + "buckets: 4\nbuckets: 8\n")
    result = subprocess.run([sys.executable, "-m", "pipelines.cli", "import", "--config", str(config),
                             "--output", str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "duplicate key 'buckets'" in result.stderr and "Traceback" not in result.stderr


def test_parse_config_still_takes_plain_mappings():
    cfg = parse_config({"profiles": {"path": "p.parquet"},
                        "data_sources": [{"name": "v", "dpid": 1, "segments": "s", "id_type": "visitor"}]})
    assert cfg.data_sources[0].name == "v"
