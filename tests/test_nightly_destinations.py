"""Nightly: destinations (DIDs) delivering full dumps into one data source's folder, against the
guards that keep a destination's members (transforms/night_guard.py: check_destinations, and the
empty-destination check of NightGuard.check)."""
from __future__ import annotations

import json

from test_nightly_guards import V, dump, members, run, write_job


def test_a_destination_whose_full_dumps_stay_empty_is_not_taken_for_one_emptied(tmp_path):
    """DID 1236 delivers an empty full dump every night (no member yet) beside DID 1235's: the first
    night passed (a destination never held), the second failed 'is empty, where dt=2026-11-21 read its
    members: they would be dropped' (exit 1), though that night read none of it, and so every night
    after, --allow-shrink (which lifts every shrink guard) the only way on. The report records each
    dump's lines; a destination whose full dumps that night held none holds no member."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    other = [f"{V[i]} 20" for i in range(4, 13)]
    for day, ms in (("2026-11-21", 1795305600000), ("2026-11-22", 1795392000000), ("2026-11-23", 1795478400000)):
        dump(tmp_path, "a", day, other, name=f"ftp_1235_7_full_{ms}.sync")
        (tmp_path / "a" / day.replace("-", "") / f"ftp_1236_7_full_{ms}.sync").write_bytes(b"")
        run(config, root, "--date", day)
        assert len(members(root, day)) == 9
    files = json.loads((root / "dt=2026-11-23" / "report.json").read_text())["data_sources"]["a"]["files"]
    assert sorted(f["lines"] for f in files) == [0, 9]
    dump(tmp_path, "a", "2026-11-24", other, name="ftp_1235_7_full_1795564800000.sync")  # DID 1236 silent
    run(config, root, "--date", "2026-11-24")  # it held nobody: nobody is dropped
