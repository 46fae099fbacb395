"""Nightly: the config edited between two nights. Memberships carried from a night matched under
other settings (another platform data source, profile column or keying rule) are refused on a night
that would carry them, unless a full dump rebuilds them or --allow-gap carries them as they are."""
from __future__ import annotations

import gzip
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import delivered
from made_once import made_once_fixture
from test_nightly_guards import V, dump, everyone, members, restored, run, write_job
from transforms.config_load import parse_config
from transforms.errors import ConfigError


def edit(config, **changes) -> None:
    """Change the first data source's settings in the job file."""
    job = json.loads(config.read_text())
    job["data_sources"][0].update(changes)
    config.write_text(json.dumps(job))


def a_published_night(source: str, ids=range(1, 13)):
    """A make for :func:`made_once_fixture`: in the new folder ``work``, the job folder ``work/A`` of one
    visitor data source ``source``, its full dump of 2026-11-20 (``ids`` in segment 10) published under
    ``work/root``; returns ``(config, root)``."""
    def make(work):
        (work / "A").mkdir(parents=True)
        config, root = write_job(work / "A", sources=(source,)), work / "root"
        dump(work / "A", source, "2026-11-20", everyone(source, ids=ids))
        run(config, root, "--date", "2026-11-20")
        return config, root

    make.__name__ = f"a_published_night_of_{source}"
    return make


# Nights several tests start from, run once for the module; each test takes them as its own run left
# them (restored at the same paths: a night's report names the dumps it read by path).
made_night_of_a = made_once_fixture("night-of-a", a_published_night("a"))
made_night_of_crm = made_once_fixture("night-of-crm", a_published_night("crm"))
made_three_of_a = made_once_fixture("three-of-a", a_published_night("a", ids=range(1, 4)))


def crm_job(tmp_path):
    """Six profiles whose crm_id and alt_id columns hold the same ids in reverse order; one plain
    declared source on crm_id, its dumps under crm/YYYYMMDD/."""
    ids = [f"C{i}" for i in range(1, 7)]
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(1, 7)], "crm_id": ids, "alt_id": ids[::-1]}),
                   tmp_path / "profiles.parquet")
    config = {"profiles": {"path": "profiles.parquet", "email": None, "phone": None, "visitor_ids": None},
              "data_sources": [{"name": "crm", "dpid": 8, "segments": "crm/{date:%Y%m%d}/*", "id_type": "declared",
                                "declared": "plain", "match_on": "crm_id"}],
              "buckets": 2}
    (tmp_path / "job.yaml").write_text(json.dumps(config))
    return tmp_path / "job.yaml"


def crm_dump(tmp_path, day: str, mode: str, lines: list[str]) -> None:
    folder = tmp_path / "crm" / day.replace("-", "")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    data = gzip.compress("".join(line + "\n" for line in lines).encode(), mtime=0)
    (folder / f"ftp_1_8_{mode}_{delivered(day)}.sync.gz").write_bytes(data)


def test_an_iter_night_after_match_on_changed_is_refused(tmp_path):
    """match_on: alt_id (a wrong column) on night 1, crm_id on night 2, an iter night: C1 and C2 had
    made p6 and p5 members of 10, carried as they were; C1's removal, read on crm_id, named p1 and
    removed nothing. p5 and p6 stayed in 10 for good (p2, whom C2 is, never joined), exit 0."""
    config, root = crm_job(tmp_path), tmp_path / "root"
    edit(config, match_on="alt_id")
    crm_dump(tmp_path, "2026-11-20", "full", ["C1 10", "C2 10"])
    run(config, root, "--date", "2026-11-20")
    assert members(root, "2026-11-20") == {("crm", "10", "p6"), ("crm", "10", "p5")}
    edit(config, match_on="crm_id")
    crm_dump(tmp_path, "2026-11-21", "iter", ["C1  10", "C3 11"])
    with pytest.raises(ConfigError, match=r"^data source 'crm': dt=2026-11-20 matched its IDs to profiles under "
                                          r"other settings \(column alt_id, now crm_id\): .*deliver a full dump "
                                          r"to rebuild its audience, or --allow-gap"):
        run(config, root, "--date", "2026-11-21")
    assert not (root / "dt=2026-11-21").exists()
    crm_dump(tmp_path, "2026-11-21", "full", ["C2 10", "C3 11"])  # a full dump: nothing carried
    run(config, root, "--date", "2026-11-21")
    assert members(root, "2026-11-21") == {("crm", "10", "p2"), ("crm", "11", "p3")}
    crm_dump(tmp_path, "2026-11-22", "iter", ["C2  10"])  # the next iter night builds on the new form
    run(config, root, "--date", "2026-11-22")
    assert members(root, "2026-11-22") == {("crm", "11", "p3")}


def test_an_iter_night_after_the_dpid_changed_is_refused_unless_allowed(made_night_of_a):
    """dpid 10 -> 99 (the data source now reads another platform data source's dumps): its first
    iter dump was applied over the old data source's audience, every member of it carried under the
    new dpid, exit 0. With --allow-gap the night carries them as they are."""
    work, config, root = restored(made_night_of_a)  # a's full dump of 2026-11-20 published
    edit(config, dpid=99)
    dump(work / "A", "a", "2026-11-21", [f"{V[1]} 11"], name=f"ftp_1_99_iter_{delivered('2026-11-21')}.sync.gz")
    with pytest.raises(ConfigError, match=r"^data source 'a': dt=2026-11-20 matched its IDs to profiles under other "
                                          r"settings \(dpid 10, now 99\)"):
        run(config, root, "--date", "2026-11-21")
    run(config, root, "--date", "2026-11-21", "--allow-gap")
    assert members(root, "2026-11-21") == {("a", "10", f"p{i}") for i in range(1, 13)} | {("a", "11", "p1")}


def _form(source: dict, **profiles) -> dict:
    job = {"profiles": {"path": "p.parquet", "email": "email", "phone": "mobile", **profiles},
           "data_sources": [{"name": "s", "dpid": 1, "segments": "d/*", **source}]}
    cfg = parse_config(job, "job.yaml")
    from transforms.match_forms import match_form

    return match_form(cfg.data_sources[0], cfg)


HASHED = {"id_type": "declared", "declared": "hashed", "match_on": "email"}
PLAIN = {"id_type": "declared", "declared": "plain", "match_on": "crm_id"}


@pytest.mark.parametrize("source, profiles, changed", [
    (HASHED, {}, {"normalization": "google"}),
    (HASHED, {}, {"hash_algorithm": "sha1"}),
    (HASHED, {}, {"match_on": "work_email"}),
    ({**HASHED, "match_on": "work_email"}, {}, {"match_as": "email"}),  # the same column, read as emails
    # (match_on naming profiles.email's column, 'contact', read it as text, not an email: now refused,
    # test_config.py::test_a_hashed_source_matching_on_the_column_of_a_role_by_its_name_is_refused)
    ({**HASHED, "match_on": "phone"}, {"default_region": "FR"}, {"default_region": "BE"}),
    (PLAIN, {}, {"ignore_case": True}),
    ({"id_type": "visitor"}, {}, {"restore_leading_zeros": True}),
    ({"id_type": "visitor"}, {}, {"id_type": "declared", "declared": "plain", "match_on": "crm_id"}),
])
def test_the_settings_that_decide_a_membership_change_the_form(source, profiles, changed):
    assert _form(source, **profiles) != _form({**source, **changed}, **profiles)


SMS = {"id_type": "declared", "declared": "encrypted", "match_on": "phone", "channel": "sms",
       "encryption": {"key": "env:K", "key_encoding": "hex", "iv": "env:I", "iv_encoding": "hex"}}


def test_the_extracts_region_under_an_sms_source_with_its_own_decides_the_form():
    """An SMS source's own default_region reads its partner's numbers, the extract's region the
    extract's (test_encrypted.py::test_an_sms_sources_own_region_reads_the_partners_numbers_not_the_extracts):
    memberships matched while the extract's were read in the partner's region are another form. With
    one region for both (the form nights before the two were told apart recorded), the form is the same."""
    nl = {**SMS, "default_region": "NL"}
    assert _form(nl, default_region="FR") != _form(nl, default_region="BE")
    assert _form(nl, default_region="FR")["profile_region"] == "FR" and _form(nl, default_region="FR")["region"] == "NL"
    assert _form(nl, default_region="NL") == _form(nl) == _form(SMS, default_region="NL")
    assert "profile_region" not in _form(nl)


def test_an_iter_night_after_the_extracts_region_became_the_sms_partners_is_refused(tmp_path, monkeypatch):
    """A Dutch partner's SMS source (default_region: NL) against a French extract (profiles FR) on night 1,
    profiles.default_region set to NL on night 2: the extract's '06 12 34 56 78' was +33612345678, now
    +31612345678. The form recorded profile_region only while it differed from the partner's, and a key
    left out tonight was not compared: the iter night passed, the partner's removal of +33612345678 from
    10 missed p1, who stayed a member, exit 0. Refused naming both regions; a full dump rebuilds."""
    from test_nightly import dump as sms_dump, encrypted_email_job

    from transforms.encrypt import encrypt_cbc

    key, iv = bytes(range(32)), bytes(range(16))
    monkeypatch.setenv("NIGHTLY_KEY", key.hex())
    monkeypatch.setenv("NIGHTLY_IV", iv.hex())
    pq.write_table(pa.table({"profile_id": ["p1"], "mobile": ["06 12 34 56 78"]}), tmp_path / "profiles.parquet")
    config, root = encrypted_email_job(tmp_path, "profiles.parquet"), tmp_path / "root"
    job = json.loads(config.read_text())
    job["profiles"].update(phone="mobile", default_region="FR")
    job["data_sources"][0].update(match_on="phone", channel="sms", default_region="NL")
    config.write_text(json.dumps(job))
    (french,) = encrypt_cbc(["+33 6 12 34 56 78"], key, iv)
    sms_dump(tmp_path, "2026-11-20", "full", [f"{french} 10"])
    run(config, root, "--date", "2026-11-20")
    assert members(root, "2026-11-20") == {("enc", "10", "p1")}
    job["profiles"]["default_region"] = "NL"
    config.write_text(json.dumps(job))
    sms_dump(tmp_path, "2026-11-21", "iter", [f"{french}  10"])  # p1 leaves 10
    with pytest.raises(ConfigError, match=r"^data source 'enc': dt=2026-11-20 matched its IDs to profiles under "
                                          r"other settings \(profile_region FR, now NL\)"):
        run(config, root, "--date", "2026-11-21")
    for old in (tmp_path / "dumps" / "20261121").iterdir():
        old.unlink()
    sms_dump(tmp_path, "2026-11-21", "full", [f"{french} 11"])  # a full dump rebuilds: no one (p1 is Dutch now)
    run(config, root, "--date", "2026-11-21", "--allow-shrink")
    assert members(root, "2026-11-21") == set()


@pytest.mark.parametrize("source, changed", [
    (HASHED, {"max_shrink": 0.9, "max_nights_without_delivery": 2, "sync_mode": "iter", "name": "t"}),
    (HASHED, {"digest": "base64"}),  # the same digest's bytes, which the join runs on
    (PLAIN, {"normalization": "google", "segments": "e/*", "allow_no_match": True}),
])
def test_settings_that_decide_no_membership_leave_the_form(source, changed):
    assert _form(source) == _form({**source, **changed})


def test_a_missed_night_is_a_gap_when_the_segments_changed_since(made_three_of_a):
    """Night 21 never imported (its dump, p1 leaving 10, under a/20261121/), then a's segments edited
    to the partner's new layout a2/{date}/: the gap check listed night 21 under the new glob, found
    nothing, and night 22 built on night 20, p1 still in 10, exit 0. A glob that would not match the
    dumps the previous night read cannot tell which missed nights had dumps: the night is refused."""
    work, config, root = restored(made_three_of_a)  # a's full dump of 2026-11-20 (p1..p3) published
    dump(work / "A", "a", "2026-11-21", [f"{V[1]}  10"], mode="iter")
    edit(config, segments="a2/{date:%Y%m%d}/*")
    dump(work / "A", "a2", "2026-11-22", [f"{V[4]} 10"], mode="iter")
    with pytest.raises(ConfigError, match=r"^dt=2026-11-22 would build on dt=2026-11-20, but 1 night between them was "
                                          r"not imported \(dt=2026-11-21\) and data source 'a' cannot tell which had "
                                          r"dumps \(its segments changed since dt=2026-11-20: they would not match "
                                          r"the dumps it read\): .*\(--backfill 2026-11-21:2026-11-21 with the "
                                          r"segments data source 'a' had then\)"):
        run(config, root, "--date", "2026-11-22")
    edit(config, segments="a/{date:%Y%m%d}/*")
    run(config, root, "--date", "2026-11-21")
    edit(config, segments="a2/{date:%Y%m%d}/*")
    run(config, root, "--date", "2026-11-22")
    assert members(root, "2026-11-22") == {("a", "10", "p2"), ("a", "10", "p3"), ("a", "10", "p4")}


def test_a_file_audience_started_on_a_night_without_a_dump_is_refused_on_the_next_iter_night(tmp_path, monkeypatch):
    """force_reconciliation turned off on a night the encrypted source delivered nothing
    (max_nights_without_delivery; crm delivered): that night carried no file audience yet recorded
    one, so the next iter night passed the check for a file audience with nothing to build on, and
    published tonight's lines only (bob and zed of night 1's full dump missing), exit 0."""
    import shutil

    from test_nightly import encrypted_nights

    config = encrypted_nights(tmp_path, monkeypatch)
    root, job = tmp_path / "root", json.loads(config.read_text())
    shutil.move(tmp_path / "dumps" / "20261121", tmp_path / "dumps" / "20261122")  # enc silent on the 21st
    shutil.copytree(tmp_path / "20261121", tmp_path / "20261122")  # the extract
    crm = {"name": "crm", "dpid": 9, "segments": "crm/{date:%Y%m%d}/*", "id_type": "declared", "declared": "plain",
           "match_on": "email"}
    for day in ("20261120", "20261121", "20261122"):
        (tmp_path / "crm" / day).mkdir(parents=True)
        (tmp_path / "crm" / day / f"ftp_1_9_iter_{delivered(day[:4] + '-' + day[4:6] + '-' + day[6:])}.sync").write_text(
            "ann@example.com 30\n")
    enc = {**job["data_sources"][0], "max_nights_without_delivery": 2}
    config.write_text(json.dumps({**job, "data_sources": [{**enc, "force_reconciliation": True}, crm]}))
    run(config, root, "--date", "2026-11-20", "--allow-gap")  # (crm's first dump is iter)
    config.write_text(json.dumps({**job, "data_sources": [enc, crm]}))
    with pytest.raises(ConfigError, match=r"^data source 'enc': it has no dump tonight and dt=2026-11-20 kept no "
                                          r"file audience for it"):
        run(config, root, "--date", "2026-11-21")
    run(config, root, "--date", "2026-11-21", "--allow-gap")  # carried as it is, asked for
    run(config, root, "--date", "2026-11-22")  # builds on a night that says it holds the (empty) file audience


def test_a_night_without_a_delivery_after_the_job_folder_moved_is_no_gap(made_three_of_a):
    """The job's folder moved between night 20 and night 22, nothing delivered on night 21: the gap
    check took the segments (relative to the config, so under the new folder) for edited since, and
    refused night 22 'cannot tell which had dumps'. Night 20's dumps are listed under the new folder:
    night 21, listed there too, delivered nothing."""
    work, _, root = restored(made_three_of_a)  # a's full dump of 2026-11-20 (p1..p3) published
    new = work / "new"
    shutil.move(work / "A", new)
    shutil.move(root, new / "root")  # its root with it
    dump(new, "a", "2026-11-22", [f"{V[1]}  10"], mode="iter")
    run(new / "job.yaml", new / "root", "--date", "2026-11-22")
    assert members(new / "root", "2026-11-22") == {("a", "10", "p2"), ("a", "10", "p3")}


def test_an_iter_night_after_the_partner_changed_its_digest_encoding_builds_on_the_last(tmp_path):
    """The partner sends its SHA-256 digests in base64 from tonight, hex before, and the config says
    so (digest: base64): the night was refused 'matched its IDs to profiles under other settings
    (digest hex, now base64)', --allow-gap the only way on. Both encodings write the same 32 bytes,
    the key the join runs on: a digest names the profile it named, and tonight's removal removes."""
    import base64
    import hashlib

    config, root = crm_job(tmp_path), tmp_path / "root"
    emails = [f"u{i}@example.com" for i in range(1, 4)]
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in range(1, 4)], "email": emails}),
                   tmp_path / "profiles.parquet")
    edit(config, declared="hashed", match_on="email")
    job = json.loads(config.read_text())
    config.write_text(json.dumps({**job, "profiles": {"path": "profiles.parquet", "phone": None, "visitor_ids": None}}))
    sha = [hashlib.sha256(e.encode()).digest() for e in emails]
    crm_dump(tmp_path, "2026-11-20", "full", [f"{d.hex()} 10" for d in sha])
    run(config, root, "--date", "2026-11-20")
    edit(config, digest="base64")
    crm_dump(tmp_path, "2026-11-21", "iter", [f"{base64.b64encode(sha[0]).decode()}  10"])
    run(config, root, "--date", "2026-11-21")
    assert members(root, "2026-11-21") == {("crm", "10", "p2"), ("crm", "10", "p3")}


def test_an_iter_night_after_a_normalization_change_that_keys_alike_builds_on_the_last(tmp_path):
    """A hashed source on crm_id (keys trimmed, whatever the profile) given normalization: meta for
    adobe: the night was refused 'matched its IDs to profiles under other settings (normalization
    adobe, now meta)' (exit 2) though every key was the same; so were a phone source's adobe -> google
    (both '+' and digits) and an email source's adobe -> meta. Profiles that key a kind alike are
    one form; those that do not (uid2's or google's gmail rules, meta's phones) are still refused."""
    import hashlib

    config, root = crm_job(tmp_path), tmp_path / "root"
    edit(config, declared="hashed")
    sha = {c: hashlib.sha256(c.encode()).hexdigest() for c in ("C1", "C2", "C3")}
    crm_dump(tmp_path, "2026-11-20", "full", [f"{d} 10" for d in sha.values()])
    run(config, root, "--date", "2026-11-20")
    edit(config, normalization="meta")
    crm_dump(tmp_path, "2026-11-21", "iter", [f"{sha['C1']}  10"])
    run(config, root, "--date", "2026-11-21")
    assert members(root, "2026-11-21") == {("crm", "10", "p2"), ("crm", "10", "p3")}
    from transforms.normalize import same_rules

    assert same_rules("phone", "adobe", "google") and same_rules("email", "adobe", "meta")
    assert not any(same_rules(kind, a, b) for kind, a, b in [("phone", "adobe", "meta"), ("phone", "adobe", "uid2"),
                   ("email", "adobe", "google"), ("email", "uid2", "google"), ("other", "adobe", "none")])


def test_an_iter_night_after_a_normalization_change_that_keys_alike_carries_the_file_audience(tmp_path):
    """An encrypted email source keeping a file audience given normalization: meta for adobe (one
    form for every address): the match_form guard let the night by, the file audience's was refused
    'its file audience's addresses were written as email/adobe ..., email/meta tonight' (exit 2),
    --allow-gap the only way on, every address the same. A change of profiles that key alike is no
    other form there either; one that does (google's gmail rules) is still refused."""
    from conftest import DEMO
    from transforms.encrypt import encrypt_cbc

    key, iv = (bytes.fromhex((DEMO / "keys" / f"demo-only-{n}").read_text().strip()) for n in ("aes256.key", "iv.hex"))
    pq.write_table(pa.table({"profile_id": ["p1"], "email": ["a@x.com"]}), tmp_path / "profiles.parquet")
    job = {"profiles": {"path": "profiles.parquet", "phone": None, "visitor_ids": None}, "buckets": 2,
           "data_sources": [{"name": "enc", "dpid": 23456, "segments": "d/{date:%Y%m%d}/*.sync", "id_type": "declared",
                             "declared": "encrypted", "match_on": "email", "channel": "email",
                             "encryption": {"algorithm": "aes-cbc", "key_encoding": "hex", "iv_encoding": "hex",
                                            "key": f"file:{DEMO / 'keys' / 'demo-only-aes256.key'}",
                                            "iv": f"file:{DEMO / 'keys' / 'demo-only-iv.hex'}"}}]}
    config, root = tmp_path / "job.yaml", tmp_path / "root"
    config.write_text(json.dumps(job))
    for day, mode, addresses in [("2026-11-20", "full", ["a@x.com", "b@x.com"]), ("2026-11-21", "iter", ["c@x.com"]),
                                 ("2026-11-22", "iter", ["d@x.com"])]:
        (tmp_path / "d" / day.replace("-", "")).mkdir(parents=True)
        (tmp_path / "d" / day.replace("-", "") / f"ftp_1_23456_{mode}_{delivered(day)}.sync").write_text(
            "".join(f"{t} 10\n" for t in encrypt_cbc(addresses, key, iv)))
    run(config, root, "--date", "2026-11-20")
    first = json.loads((root / "dt=2026-11-20" / "report.json").read_text())["data_sources"]["enc"]
    edit(config, normalization="meta")
    run(config, root, "--date", "2026-11-21")
    report = json.loads((root / "dt=2026-11-21" / "report.json").read_text())["data_sources"]["enc"]
    assert report["segments"]["10"]["file_audience"] == first["segments"]["10"]["file_audience"] + 1  # c added
    edit(config, normalization="google")
    with pytest.raises(ConfigError, match="written as email/meta .* email/google tonight"):
        run(config, root, "--date", "2026-11-22")


def test_a_night_published_by_another_config_sharing_the_root_is_not_skipped_as_done(made_night_of_a):
    """Two jobs (configs A and B, one data source each) pointed at one --root, B scheduled after A:
    every night B's run found the night published by A and said 'already published' (exit 0), its
    data source never imported, night after night. A night published without a data source of this
    config, by another config, is refused naming it; one published by this config is still skipped."""
    from conftest import cli_in_process

    work, a, root = restored(made_night_of_a)  # A's night 2026-11-20 (its data source a) published
    (work / "B").mkdir()
    b = write_job(work / "B", sources=("b",))
    dump(work / "B", "b", "2026-11-20", everyone("b", "20"))
    result = cli_in_process("nightly", "--config", b, "--root", root, "--date", "2026-11-20")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "dt=2026-11-20" in line and "'b'" in line and "--root" in line and "--force" in line, line
    assert {m[0] for m in members(root, "2026-11-20")} == {"a"}  # A's night stands
    assert run(a, root, "--date", "2026-11-20")[0]["status"] == "already published"
    job = json.loads(a.read_text())
    job["data_sources"][0]["max_shrink"] = 0.9  # the config edited, its data sources the same: still done
    a.write_text(json.dumps(job))
    assert run(a, root, "--date", "2026-11-20")[0]["status"] == "already published"
    (root / "dt=2026-11-20" / "_SUCCESS").write_text('{"files": [')  # damaged: neither done nor another config's
    result = cli_in_process("nightly", "--config", a, "--root", root, "--date", "2026-11-20")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("dt=2026-11-20/_SUCCESS: cannot read a published night's "
                                                           "manifest (JSONDecodeError)"), result.stderr


@pytest.mark.parametrize("other", [{"dpid": 20}, {}], ids=["another_dpid", "another_folder"])
def test_a_night_published_by_another_config_with_a_data_source_of_the_same_name_is_not_skipped(made_night_of_crm,
                                                                                                  other):
    """The same, the two jobs' data sources both named 'crm' (a name two configs give alike; or job B a
    copy of job A's folder, its config's text the same, its relative paths its own): the night held an
    entry 'crm' (or the same config digest), so B's run said 'already published' (exit 0) and B's dumps,
    another platform data source's or another folder's, were never imported, night after night. A
    night whose 'crm' has another dpid, or read no dump this config's segments (filled for the night)
    match, is refused as published without it."""
    from conftest import cli_in_process

    work, a, root = restored(made_night_of_crm)  # A's night 2026-11-20 (its data source crm) published
    (work / "B").mkdir()
    b = write_job(work / "B", sources=("crm",), crm=other)
    b_name = f"ftp_2_8_full_{delivered('2026-11-20')}.sync"
    dump(work / "B", "crm", "2026-11-20", everyone("crm", "20"), name=b_name)
    result = cli_in_process("nightly", "--config", b, "--root", root, "--date", "2026-11-20")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("dt=2026-11-20 is already published by another job: its data source 'crm' is not this "
                           "one's ("), line
    assert "--root" in line and "--force" in line and "Traceback" not in result.stderr, line
    assert members(root, "2026-11-20") == {("crm", "10", f"p{i}") for i in range(1, 13)}  # A's night stands
    assert run(a, root, "--date", "2026-11-20")[0]["status"] == "already published"


def test_published_nights_are_still_skipped_after_the_dumps_folder_moved_and_its_old_dumps_were_purged(tmp_path):
    """The other side of the check above: a job's segments moved to another folder, the old folder's dumps
    purged (a retention rule) -- the published nights read dumps its segments no longer match, and none
    of them is there any more. A backfill over them (or a rerun of one) was refused as 'published by
    another job', advising --force, which an older night refuses. Another job's night still has its
    dumps where it read them; this job's past, purged, has not: it is skipped as done, as before."""
    from conftest import cli_in_process

    config, root = write_job(tmp_path, sources=("crm",)), tmp_path / "root"
    for day in ("2026-11-20", "2026-11-21"):
        dump(tmp_path, "crm", day, everyone("crm"))
    run(config, root, "--backfill", "2026-11-20:2026-11-21")
    shutil.rmtree(tmp_path / "crm")  # purged
    edit(config, segments="incoming/crm/{date:%Y%m%d}/*")
    dump(tmp_path / "incoming", "crm", "2026-11-22", everyone("crm", ids=range(1, 7)))
    result = cli_in_process("nightly", "--config", config, "--root", root, "--backfill", "2026-11-20:2026-11-22")
    assert result.returncode == 0, result.stderr
    assert members(root, "2026-11-22") == {("crm", "10", f"p{i}") for i in range(1, 7)}
    assert members(root, "2026-11-20") == {("crm", "10", f"p{i}") for i in range(1, 13)}  # skipped, as published


def test_a_night_published_by_another_job_whose_dumps_were_purged_is_not_skipped_as_done(made_night_of_crm):
    """Job B a copy of job A's folder (the same config text), A's dumps purged after their import (a
    retention rule, a cleanup step): B's night was taken for this job's past (its dumps read no longer
    there, as after a moved folder) and skipped as 'already published', exit 0, B's dumps of that night
    never imported. B's own segments list a dump of that night the night did not read: another job's."""
    from conftest import cli_in_process

    work, a, root = restored(made_night_of_crm)  # A's night 2026-11-20 (its data source crm) published
    (work / "B").mkdir()
    b = write_job(work / "B", sources=("crm",))
    dump(work / "B", "crm", "2026-11-20", everyone("crm", "20"), name=f"ftp_2_8_full_{delivered('2026-11-20')}.sync")
    shutil.rmtree(work / "A" / "crm")  # A's dumps purged once imported
    result = cli_in_process("nightly", "--config", b, "--root", root, "--date", "2026-11-20")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is already published by another job: its data source 'crm' is not this one's" in result.stderr
    assert members(root, "2026-11-20") == {("crm", "10", f"p{i}") for i in range(1, 13)}  # A's night stands
