"""``encryption.iv_confirmed``: the IV check's known false trip, and the operator's way through it.

A delivery wholly of another country's numbers than the profiles (UK mobiles against French ones)
shows the pattern an IV typo makes (one XOR turning the first bytes into other plausible ones), and
failed with the right IV, with no setting past it (a known limit of the README). Once the partner
confirmed the IV, ``iv_confirmed: true`` makes the check a warning (``iv_suspect`` in the report)."""
from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import assert_failed_cleanly, run_import_cli
from transforms.config_load import parse_config
from transforms.encrypt import encrypt_cbc

KEY, IV = bytes(range(32)), bytes(range(100, 116))


def numbers(n: int, prefix: str, digits: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [prefix + "".join(str(rng.randrange(10)) for _ in range(digits)) for _ in range(n)]


def uk_delivery_against_french_profiles(tmp_path, confirmed: bool):
    """20,000 French mobiles; a dump of 100 of them and 300 UK mobiles, encrypted with the right IV."""
    french = numbers(20_000, "+336", 8, 1)
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(len(french))], "mobile": french}),
                   tmp_path / "profiles.parquet")
    (tmp_path / "key.hex").write_text(KEY.hex())
    (tmp_path / "iv.hex").write_text(IV.hex())
    (tmp_path / "dumps").mkdir()
    tokens = encrypt_cbc(french[:100] + numbers(300, "+447", 9, 2), KEY, IV)
    (tmp_path / "dumps" / "ftp_1_9_full_1795305600000.sync").write_text("".join(f"{t} 501\n" for t in tokens))
    encryption = {"key": f"file:{tmp_path / 'key.hex'}", "key_encoding": "hex", "iv": f"file:{tmp_path / 'iv.hex'}",
                  "iv_encoding": "hex", **({"iv_confirmed": True} if confirmed else {})}
    job = {"profiles": {"path": "profiles.parquet", "email": None, "visitor_ids": None},
           "data_sources": [{"name": "sms", "dpid": 9, "segments": "dumps/*", "id_type": "declared",
                             "declared": "encrypted", "match_on": "phone", "channel": "sms", "encryption": encryption}]}
    (tmp_path / "job.yaml").write_text(json.dumps(job))
    return tmp_path / "job.yaml"


@pytest.mark.parametrize("confirmed", [False, True])
def test_a_confirmed_iv_turns_the_checks_failure_into_a_warning(tmp_path, confirmed):
    out = tmp_path / "out"
    result = run_import_cli(uk_delivery_against_french_profiles(tmp_path, confirmed), out)
    if not confirmed:
        assert_failed_cleanly(result, out, "decrypted IDs look garbled", "wrong IV?", "encryption.iv_confirmed: true")
        return
    assert result.returncode == 0, result.stderr
    entry = json.loads((out / "report.json").read_text())["data_sources"]["sms"]
    assert (entry["reconciled"], entry["file_audience"]) == (100, 300) and "position" in entry["iv_suspect"]


def test_an_aes_gcm_source_has_no_iv_to_confirm():
    with pytest.raises(Exception, match="aes-gcm has no IV to confirm"):
        parse_config({"profiles": {"path": "p.parquet"},
                      "data_sources": [{"name": "g", "dpid": 9, "segments": "d/*", "id_type": "declared",
                                        "declared": "encrypted", "match_on": "email", "channel": "email",
                                        "encryption": {"algorithm": "aes-gcm", "keyring": "env:RING",
                                                       "iv_confirmed": True}}]})
