"""Visitor-ID entries holding several IDs joined by another character than
``profiles.visitor_ids_separator`` (or a list written as text) are judged once, over the whole
extract (all its files and batches), by the import and the export alike: at least 3 and 1 % of the
entries fail the run, naming the column, the count and the joining character; fewer are stray bad
rows, which give no key (``profile_values_without_key``). Judged per batch, the same profiles with
one stray entry imported as 10 parts of 250 rows and failed as 500 parts of 5."""
from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import assert_failed_cleanly, run_import_cli
from pipelines import export_audience, import_audience
from transforms.config_load import parse_config
from transforms.errors import RunFailed
from transforms.outcomes import Counts, Metric
from transforms.profile_columns import check_visitor_entries
from transforms.profiles import counted_profiles

VIDS = [f"{i:038d}" for i in range(1, 9)]
PARTS, ROWS = 50, 5  # the extract in many small parts


def vid(i: int) -> str:
    return f"{i + 1:038d}"


def visitor_cfg(path) -> object:
    return parse_config({"profiles": {"path": str(path)},
                         "data_sources": [{"name": "web", "dpid": 9, "segments": "s", "id_type": "visitor"}]})


def judged(path, cfg) -> Counts:
    """The extract read as the import reads it, its visitor-ID entries judged; their counts."""
    counts = Counts(n for _, entries in counted_profiles(str(path), cfg) for n in entries)
    check_visitor_entries(counts, cfg.profiles)
    return counts


def visitor_job(tmp_path, ids, profiles: str = "profiles.csv") -> object:
    """Beside the extract (``profiles``, under tmp_path): a dump of ``ids`` (segment 501) and a job reading
    both with one visitor data source; the output folder to give the import."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ftp_1_9_full_1795305600000.sync").write_text("".join(f"{v} 501\n" for v in ids))
    (tmp_path / "job.yaml").write_text(
        f"profiles: {{path: {profiles}}}\n"
        "data_sources: [{name: web, dpid: 9, segments: d/*, id_type: visitor}]\n")
    return tmp_path / "o"


@pytest.mark.parametrize("joined, shown", [("|", "'|'"), (", ", "','")])
def test_visitor_ids_joined_by_another_separator_fail_the_import(tmp_path, joined, shown):
    """An extract whose visitor-ID lists are joined by another separator than the configured one
    ('|' where ';' is configured): the profiles with one ID matched, those with several had no key,
    and their lines were published as unmatched (here 6 of 8), exit 0."""
    (tmp_path / "profiles.csv").write_text(f"profile_id,visitor_ids\nP1,\"{VIDS[0]}{joined}{VIDS[1]}\"\nP2,{VIDS[2]}\n"
                                           f"P3,\"{VIDS[3]}{joined}{VIDS[4]}\"\nP4,{VIDS[5]}\n"
                                           f"P5,\"{VIDS[6]}{joined}{VIDS[7]}\"\n")
    out = visitor_job(tmp_path, VIDS)
    assert_failed_cleanly(run_import_cli(tmp_path / "job.yaml", out), out, "profiles.csv", "column 'visitor_ids'",
                          f"3 of 5 entries hold several visitor IDs joined by {shown}", "visitor_ids_separator")
    (tmp_path / "job.yaml").write_text((tmp_path / "job.yaml").read_text().replace(
        "path: profiles.csv}", f"path: profiles.csv, visitor_ids_separator: '{joined.strip()}'}}"))
    report = import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(out)])
    assert report["data_sources"]["web"]["reconciled"] == 8


def test_ids_joined_by_a_tab_are_said_to_be(tmp_path):
    """A tab was stripped as blank and shown as ' ': the message pointed at a space separator."""
    path = tmp_path / "p.csv"
    path.write_text("profile_id,visitor_ids\n" + "".join(f"P{i},\"{VIDS[i]}\t{VIDS[i + 1]}\"\n" for i in range(4)))
    with pytest.raises(RunFailed, match=r"4 of 4 entries hold several visitor IDs joined by a tab: set "):
        judged(path, visitor_cfg(path))


def test_a_list_entry_holding_several_visitor_ids_fails_the_extract(tmp_path):
    """A list entry of Parquet or JSONL holding a joined string: no separator setting splits it."""
    path = tmp_path / "p.parquet"
    lists = [[VIDS[0], f"{VIDS[1]},{VIDS[2]}"], [f"{VIDS[3]},{VIDS[4]}"], [f"{VIDS[5]},{VIDS[6]}"], None]
    pq.write_table(pa.table({"profile_id": ["P1", "P2", "P3", "P4"], "visitor_ids": lists}), path)
    with pytest.raises(RunFailed, match=r"column 'visitor_ids' of '.*p\.parquet': 3 of 4 entries hold several visitor "
                                        r"IDs joined by ',': write one ID per list entry\. Nothing was published"):
        judged(path, visitor_cfg(path))


def test_one_stray_joined_entry_among_many_does_not_stop_the_extract(tmp_path):
    """A wrong separator joins the IDs of every profile holding several; one stray joined entry among
    hundreds is a bad row, not a configuration: it gives no key (counted in
    profile_values_without_key) and the extract is read, or a nightly would stop for one row."""
    path = tmp_path / "p.parquet"
    lists = [[VIDS[0]]] * 150 + [[f"{VIDS[1]}|{VIDS[2]}"]]
    pq.write_table(pa.table({"profile_id": [f"P{i}" for i in range(len(lists))], "visitor_ids": lists}), path)
    counts = judged(path, visitor_cfg(path))
    assert (counts.get(Metric.VISITOR_ENTRIES), counts.details(Metric.VISITOR_ENTRIES_JOINED)) == (151, {"list": 1})


def write_parts(folder: Path, joined_per_part: int, export: bool = False) -> list[str]:
    """The extract as PARTS CSV files of ROWS profiles, each with one visitor ID; in each of the first
    ``joined_per_part`` parts (all: -1) the first profile's entry holds two IDs joined by '|'. Returns
    the IDs a dump or targets can name: every profile's, and the joined ones."""
    folder.mkdir(parents=True)
    named = []
    for part in range(PARTS):
        lines = ["profile_id,visitor_ids" + (",opt_out" if export else "")]
        for row in range(ROWS):
            i = part * ROWS + row
            ids = [vid(i)]
            if row == 0 and (joined_per_part < 0 or part < joined_per_part):
                ids = [vid(i), vid(10_000 + i)]
            named += ids
            lines.append(f"P{i},{'|'.join(ids)}" + (",false" if export else ""))
        (folder / f"part-{part:03d}.csv").write_text("\n".join(lines) + "\n")
    return named


def import_job(tmp_path: Path, joined_per_part: int) -> Path:
    visitor_job(tmp_path, write_parts(tmp_path / "profiles", joined_per_part), "profiles/*.csv")
    return tmp_path / "job.yaml"


def test_many_small_parts_with_one_stray_joined_entry_import(tmp_path):
    """250 profiles in 50 parts of 5, one entry of one part joined by '|': judged per batch (1 of 5)
    it failed the run and said to change the separator, where one file of the same rows imported."""
    report = import_audience.run(["--config", str(import_job(tmp_path, 1)), "--output", str(tmp_path / "o")])
    web = report["data_sources"]["web"]
    assert (report["profiles_read"], web["reconciled"], web["unmatched"]) == (250, 249, 2)
    assert web["profile_values_without_key"] == 1  # the stray entry: counted, no key


def test_many_small_parts_all_joined_by_another_separator_fail_the_import(tmp_path):
    """One joined entry in each of 50 parts of 5: under any per-part minimum, yet 50 of the extract's
    250 entries are the extract's separator."""
    with pytest.raises(RunFailed, match=r"^profiles: column 'visitor_ids' of '[^']*/profiles/\*\.csv': 50 of 250 entries hold "
                                        r"several visitor IDs joined by '\|': set profiles\.visitor_ids_separator "
                                        r"\(now ';'\) to the extract's\. Nothing was published"):
        import_audience.run(["--config", str(import_job(tmp_path, -1)), "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o" / "report.json").exists()


def export_run(tmp_path: Path, joined_per_part: int) -> dict:
    write_parts(tmp_path / "profiles", joined_per_part, export=True)
    (tmp_path / "targets.csv").write_text("profile_id\n" + "".join(f"P{i}\n" for i in range(PARTS * ROWS)))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump({
        "profiles": {"path": "profiles/*.csv", "phone": None, "opt_out": "opt_out"},
        "data_sources": [{"name": "vis", "dpid": 9, "segments": "unused/*.sync", "id_type": "visitor"}]}))
    return export_audience.run(["--config", str(tmp_path / "job.yaml"), "--audience", "A", "--targets",
                                str(tmp_path / "targets.csv"), "--output", str(tmp_path / "o"), "--run-date",
                                "2026-11-22", "--data-source", "vis", "--segment-id", "24"])


def test_the_export_judges_the_whole_extract_too(tmp_path):
    """The export reads the same extract: one stray entry in 50 small parts is exported without it
    (its profile has no user ID); one in each part fails the export, nothing published."""
    report = export_run(tmp_path / "stray", 1)
    assert (report["profiles_read"], report["exported"], report["unmapped"]) == (250, 249, 1)
    with pytest.raises(RunFailed, match=r"^profiles: column 'visitor_ids' of '[^']*/profiles/\*\.csv': 50 of 250 entries hold "
                                        r"several visitor IDs joined by '\|'"):
        export_run(tmp_path / "all", -1)
    assert not (tmp_path / "all" / "o" / "report.json").exists()


def test_visitor_ids_a_spreadsheet_saved_as_numbers_fail_the_import(tmp_path):
    """A CSV extract saved by a spreadsheet: a cell holding one visitor ID is a number to it, written
    `9.01078E+37` (6 digits kept), one holding several joined stays text. The profiles with one ID had
    no key, 3 of 5 lines unmatched, exit 0 (CLI); the export left them unmapped. At least 3 and 1 % of
    the extract's entries fail the run, as joined ones do; a stray one is a bad row (no key)."""
    ids = [f"9{i}" + "7" * 36 for i in range(5)]
    (tmp_path / "profiles.csv").write_text(f"profile_id,visitor_ids\nP1,\"{ids[0]};{ids[1]}\"\n"
                                           + "".join(f"P{i},{'%.5E' % int(ids[i])}\n" for i in (2, 3, 4)))
    out = visitor_job(tmp_path, ids)
    last = assert_failed_cleanly(run_import_cli(tmp_path / "job.yaml", out), out, "profiles.csv",
                                 "column 'visitor_ids'", "3 of 5 entries hold a number's text (9.1E+37",
                                 "write the visitor IDs as text")
    assert "9.2" not in last and "E+37" not in last.replace("9.1E+37", "")
    stray = tmp_path / "stray.parquet"
    lists = [[VIDS[0]]] * 300 + [["9.01078E+37"]] * 2
    pq.write_table(pa.table({"profile_id": [f"P{i}" for i in range(len(lists))], "visitor_ids": lists}), stray)
    counts = judged(stray, visitor_cfg(stray))
    assert (counts.get(Metric.VISITOR_ENTRIES), counts.details(Metric.VISITOR_ENTRIES_AS_NUMBERS)) == (302, {"list": 2})
