"""Releases meeting each other's files: a night, a state or a cache written by an earlier (or a
later) release of audience-sync, read by this one. An artifact lacking what this release records
is not read as 'nothing changed'."""
from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from test_nightly import encrypted_nights
from test_nightly_config_changes import crm_dump, crm_job, edit
from test_nightly_guards import members, run
from transforms.config_load import parse_config
from transforms.errors import ConfigError
from transforms.night_guard import NightGuard


def as_before_match_forms(partition) -> None:
    """Rewrite a published night's report.json as the releases before a6e8a9f (2026-12-05; the last
    one d12abca, reproduced with it) wrote it: no ``match_form`` nor ``address_form`` per data source."""
    report = json.loads((partition / "report.json").read_text())
    for entry in report["data_sources"].values():
        entry.pop("match_form", None)
        entry.pop("address_form", None)
    (partition / "report.json").write_text(json.dumps(report))


def test_an_iter_night_on_a_night_of_a_release_that_recorded_no_match_form_after_a_config_change_is_refused(tmp_path):
    """Night 1 published by a release that did not record its match_form, under match_on: alt_id;
    upgraded, match_on corrected to crm_id, an iter night: the guard had nothing to compare and carried
    p5 and p6 as the wrong column had matched them; C1's removal, read on crm_id, removed nothing,
    exit 0 (as with d12abca's night 1 for real). The config changed since that night: refused."""
    config, root = crm_job(tmp_path), tmp_path / "root"
    edit(config, match_on="alt_id")
    crm_dump(tmp_path, "2026-11-20", "full", ["C1 10", "C2 10"])
    run(config, root, "--date", "2026-11-20")
    as_before_match_forms(root / "dt=2026-11-20")
    edit(config, match_on="crm_id")
    crm_dump(tmp_path, "2026-11-21", "iter", ["C1  10", "C3 11"])
    with pytest.raises(ConfigError, match=r"^data source 'crm': dt=2026-11-20 was published by an earlier release, "
                                          r"which did not record the settings it matched IDs under \(report.json "
                                          r"match_form\), and the config has changed since: .*deliver a full dump to "
                                          r"rebuild its audience, or --allow-gap"):
        run(config, root, "--date", "2026-11-21")
    assert not (root / "dt=2026-11-21").exists()
    assert members(root, "2026-11-20") == {("crm", "10", "p6"), ("crm", "10", "p5")}


def earlier_release_night(root, config_digest: str) -> None:
    """A night dt=2026-11-20 as d12abca (before match_form) published it: its report.json (the fields
    the guard reads) and its _SUCCESS (config_digest), for the guard alone (no part is read)."""
    night = root / "dt=2026-11-20"
    night.mkdir(parents=True)
    entry = {"dpid": 8, "id_type": "declared/plain", "decrypts": False, "received": 2, "reconciled": 2,
             "file_audience": 0, "segments": {"10": {"members": 2, "lines": 2}},
             "files": [{"path": "crm/20261120/ftp_1_8_full_1763640000000.sync.gz", "timestamp_ms": 1763640000000,
                        "sync_mode": "full", "lines": 2}]}
    (night / "report.json").write_text(json.dumps({"job": "import", "profiles_read": 6, "data_sources": {"crm": entry}}))
    (night / "_SUCCESS").write_text(json.dumps({"run_date": "2026-11-20", "config_digest": config_digest,
                                                "previous_partition": None, "files": []}))


def test_a_night_of_a_release_that_recorded_no_match_form_is_built_on_when_the_config_is_the_same(tmp_path):
    """The same night under the same config text (its _SUCCESS config_digest): nothing that decides a
    membership changed, the night builds on it; with --allow-gap, after a change, too."""
    config = crm_job(tmp_path)
    cfg = parse_config(json.loads(config.read_text()))
    earlier_release_night(tmp_path / "root", "same")
    guard = NightGuard.against(str(tmp_path / "root" / "dt=2026-11-20"))
    files = [("crm", "crm/20261121/ftp_1_8_iter_1763726400000.sync.gz")]
    guard.check_base(cfg, files, False, config_digest="same")
    guard.check_base(cfg, files, True, config_digest="other")
    with pytest.raises(ConfigError, match=r"^data source 'crm': dt=2026-11-20 was published by an earlier release"):
        guard.check_base(cfg, files, False, config_digest="other")


def test_the_profile_id_form_changes_with_the_rules_that_write_profile_ids(monkeypatch):
    """The rules turning an id column into text (profile_columns.id_text) decide every carried
    membership's id: 4e139e0 (2026-12-04) read a decimal(38,10) id 123 as '123' where the release
    before read '123.0000000000'. Such a change changes the form a night records."""
    from transforms import match_forms, profile_columns
    form = match_forms.profile_id_form()
    assert form == match_forms.profile_id_form()
    real = profile_columns.id_text
    monkeypatch.setattr(profile_columns, "id_text", lambda values, path, column: real(values, path, column)
                        if not pa.types.is_decimal(values.type) else values.cast(pa.string()))
    assert match_forms.profile_id_form() != form


def test_a_night_whose_profile_ids_were_written_by_other_rules_is_not_carried(tmp_path):
    """A night published by a release writing profile ids otherwise (its _SUCCESS profile_id_form):
    carried, its memberships' ids are not tonight's: every one read as a profile gone from the
    extract (dropped, or the night failed as a shrink, naming no cause), tonight's removals missing
    them. Refused unless every data source is replaced (nothing carried); a night recording no form
    (published before it was recorded) is not compared."""
    from transforms.match_forms import profile_id_form
    from transforms.night_guard import check_same_profile_ids
    cfg = parse_config(json.loads(crm_job(tmp_path).read_text()))
    night = tmp_path / "root" / "dt=2026-11-20"
    night.mkdir(parents=True)
    for recorded in (None, profile_id_form()):
        (night / "_SUCCESS").write_text(json.dumps({"profile_id_column": "profile_id", "files": [],
                                                    **({"profile_id_form": recorded} if recorded else {})}))
        check_same_profile_ids(cfg, str(night), [])
    (night / "_SUCCESS").write_text(json.dumps({"profile_id_column": "profile_id", "profile_id_form": "0123abcd",
                                                "files": []}))
    with pytest.raises(ConfigError, match=r"^dt=2026-11-20 wrote its profile ids by other rules than this release's "
                                          r"\(its _SUCCESS profile_id_form\): .*deliver full dumps for every data "
                                          r"source tonight"):
        check_same_profile_ids(cfg, str(night), [])


def test_an_iter_night_on_a_file_audience_a_release_before_its_profile_id_column_wrote_is_refused(tmp_path, monkeypatch):
    """A file audience published by a release before ef9b551 (2026-12-02; 1498bb1 is one) held only the
    addresses matching no profile, in parts without a profile_id column. Carried by an iter night, the
    addresses that matched were missing from tonight's file audience: reproduced with 1498bb1's night 1
    of an encrypted email source, 43 rows (4 matched) where this release's own two nights give 141 (102
    matched), exit 0, until a full dump. Refused naming the part and the data source."""
    config, root = encrypted_nights(tmp_path, monkeypatch), tmp_path / "root"
    run(config, root, "--date", "2026-11-20")
    night = root / "dt=2026-11-20"
    manifest = json.loads((night / "_SUCCESS").read_text())
    for part in sorted((night / "file_audience").glob("*.parquet")):  # as 1498bb1 wrote them
        table = pq.read_table(part)
        pq.write_table(table.filter(pc.is_null(table["profile_id"])).drop_columns(["profile_id"]), part)
        entry = next(e for e in manifest["files"] if e["path"] == f"file_audience/{part.name}")
        entry.update(rows=pq.read_metadata(part).num_rows, bytes=part.stat().st_size,
                     sha256=hashlib.sha256(part.read_bytes()).hexdigest())
    (night / "_SUCCESS").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"^data source 'enc': .*dt=2026-11-20/file_audience/part-\S+\.parquet has no "
                                          r"profile_id column: written by a release before 2026-12-02, whose file "
                                          r"audience held only the addresses matching no profile; .*deliver a full "
                                          r"dump to rebuild it, or --allow-gap"):
        run(config, root, "--date", "2026-11-21")
    assert not (root / "dt=2026-11-21").exists()


def test_a_night_replacing_every_data_source_carries_no_profile_id_of_the_night_before(tmp_path):
    """Every configured data source has a full dump tonight, and the previous night holds one taken out
    of the config since (its rows are dropped, so that night's state is still read): nothing is
    carried, whatever ids that night wrote. It was refused (exit 2) asking for full dumps for every
    data source, which the night had (reproduced with two nights: crm and crm2, then crm alone)."""
    from transforms.night_guard import check_same_profile_ids
    cfg = parse_config(json.loads(crm_job(tmp_path).read_text()))
    night = tmp_path / "root" / "dt=2026-11-20"
    night.mkdir(parents=True)
    (night / "_SUCCESS").write_text(json.dumps({"profile_id_column": "alt_id", "profile_id_form": "0123abcd",
                                                "files": []}))
    for mode in ("full", "iter"):
        crm_dump(tmp_path, "2026-11-21", mode, ["C1 10"])
        files = [("crm", str(path)) for path in (tmp_path / "crm" / "20261121").iterdir()]
        if mode == "full":
            check_same_profile_ids(cfg, str(night), files)
        else:
            with pytest.raises(ConfigError, match=r"^dt=2026-11-20 wrote its profile ids by other rules"):
                check_same_profile_ids(cfg, str(night), files)
