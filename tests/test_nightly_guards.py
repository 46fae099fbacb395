"""Nightly refuses to shrink by accident: full dumps known by configuration, unnamed dumps refused,
a collapsing audience (per data source) or an empty full dump failing the night, a data source
removed from the config reported (its rows dropped)."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from made_once import MadeOnce, made_once_fixture

from conftest import cli_in_process, delivered
from pipelines import nightly
from transforms.errors import ConfigError, RunFailed

V = {i: str(i) * 38 if i < 10 else f"{i:038d}" for i in range(1, 13)}


def write_job(tmp_path: Path, sources=("a", "b"), **extra) -> Path:
    """Twelve profiles (p1..p12, one visitor ID each); one visitor data source per name, its dumps
    under ``<name>/YYYYMMDD/``."""
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in V], "visitor_ids": [[v] for v in V.values()]}),
                   tmp_path / "profiles.parquet")
    config = {
        "profiles": {"path": "profiles.parquet", "email": None, "phone": None},
        "data_sources": [{"name": name, "dpid": 10 + i, "segments": f"{name}/{{date:%Y%m%d}}/*", "id_type": "visitor",
                          **extra.pop(name, {})} for i, name in enumerate(sources)],
        "buckets": 2,
        **extra,
    }
    (tmp_path / "job.yaml").write_text(json.dumps(config))
    return tmp_path / "job.yaml"


def dump(tmp_path, source: str, day: str, lines: list[str], name: str | None = None, mode: str = "full"):
    folder = tmp_path / source / day.replace("-", "")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    name = name or f"ftp_1_7_{mode}_{delivered(day)}.sync.gz"
    data = "".join(l + "\n" for l in lines).encode()
    (folder / name).write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)


def members(root: Path, day: str) -> set[tuple]:
    return {(r["data_source"], r["segment_id"], r["profile_id"])
            for r in pq.read_table(root / f"dt={day}" / "reconciled").to_pylist()}


def run(config, root, *args):
    return nightly.run(["--config", str(config), "--root", str(root), *args])


def cli(config, root, *args):
    return cli_in_process("nightly", "--config", config, "--root", root, *args)


class NotRead:
    """Stands in for PreviousState where a run must not read the previous state whole."""

    def __init__(self, *args, **kwargs):
        raise AssertionError("the previous state was read whole")


def everyone(source: str, segment: str = "10", ids=range(1, 13)) -> list[str]:
    return [f"{V[i]} {segment}" for i in ids]


def restored(made: MadeOnce) -> tuple:
    """``(work, *what its make returned)``: a run the module made once, as it left it. Its folder ``work``
    is put back from the untouched copy before each test, at the same paths (a night's report names
    the dumps it read by path): each test runs on what a run of its own would leave."""
    return (made.work, *made.restored())


def a_night(work: Path) -> tuple[Path, Path]:
    """Data source a alone, its full dump of 2026-11-21 (p1..p12 in segment 10) published, in the new
    folder ``work``: ``(config, root)``."""
    work.mkdir()
    config, root = write_job(work, sources=("a",)), work / "root"
    dump(work, "a", "2026-11-21", everyone("a"))
    run(config, root, "--date", "2026-11-21")
    return config, root


made_a_night = made_once_fixture("a-night", a_night)


@pytest.fixture
def night_of_a(made_a_night) -> tuple[Path, Path, Path]:
    """``(work, config, root)`` of :func:`a_night` (:func:`restored`)."""
    return restored(made_a_night)


# ---------------------------------------------------------------------------------------------
# sync_mode


def test_a_dump_whose_name_does_not_say_full_or_iter_is_a_config_error_in_nightly(tmp_path):
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-22", everyone("a"), name="audience-export.sync.gz")  # renamed by a transfer tool
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 2, result.stderr
    assert "audience-export.sync.gz" in result.stderr and "sync_mode" in result.stderr and "Traceback" not in result.stderr
    assert not (root / "dt=2026-11-22" / "_SUCCESS").exists()


def test_configured_sync_mode_full_replaces_the_audience_whatever_the_file_name(tmp_path):
    config, root = write_job(tmp_path, sources=("a",), a={"sync_mode": "full"}), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-21", everyone("a", ids=range(1, 7)), name="export-1.sync.gz")
    dump(tmp_path, "a", "2026-11-22", everyone("a", ids=range(2, 7)), name="export-2.sync.gz")
    run(config, root, "--backfill", "2026-11-21:2026-11-22")
    assert members(root, "2026-11-22") == {("a", "10", f"p{i}") for i in range(2, 7)}  # p1 left: removed
    files = json.loads((root / "dt=2026-11-22" / "report.json").read_text())["data_sources"]["a"]["files"]
    assert [f["sync_mode"] for f in files] == ["full"]


def test_configured_sync_mode_iter_wins_over_the_file_name(tmp_path):
    config, root = write_job(tmp_path, sources=("a",), a={"sync_mode": "iter"}), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-21", everyone("a", ids=range(1, 7)))
    dump(tmp_path, "a", "2026-11-22", [f"{V[7]} 10", f"{V[1]}  10"])  # named full; configured iter
    run(config, root, "--backfill", "2026-11-21:2026-11-22", "--allow-gap")  # its first night is iter
    assert members(root, "2026-11-22") == {("a", "10", f"p{i}") for i in range(2, 8)}


def test_a_full_night_missing_a_destination_the_previous_night_read_is_refused(tmp_path):
    """Two destinations (DIDs) delivering full dumps into one data source's folder are two audiences;
    a night with only one's dump replaced the data source's whole audience: the other's (3 of 12
    rows, under max_shrink) was dropped, exit 0."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    one, other = [f"{V[i]} 10" for i in (1, 2, 3)], [f"{V[i]} 20" for i in range(4, 13)]
    dump(tmp_path, "a", "2026-11-21", one, name="ftp_1234_7_full_1795305600000.sync.gz")
    (tmp_path / "a" / "20261121" / "ftp_1235_7_full_1795305900000.sync.gz").write_bytes(
        gzip.compress("".join(f"{line}\n" for line in other).encode(), mtime=0))
    run(config, root, "--date", "2026-11-21")
    dump(tmp_path, "a", "2026-11-22", other, name="ftp_1235_7_full_1795392000000.sync.gz")
    with pytest.raises(ConfigError, match="data source 'a': .* destination DID 1234 \\(MASTER_DPID 7\\), read by "
                                          "dt=2026-11-21, has no dump tonight"):
        run(config, root, "--date", "2026-11-22")
    run(config, root, "--date", "2026-11-22", "--allow-shrink")  # a destination retired
    assert {segment for _, segment, _ in members(root, "2026-11-22")} == {"20"}


def test_a_full_night_whose_dump_of_a_held_destination_is_empty_is_refused(tmp_path):
    """The same two destinations, the second night's dump of DID 1234 there but empty (0 bytes: a
    transfer that created the file and failed): it dropped that destination's members (3 of 12 rows,
    under max_shrink), exit 0, where the night without the file fails (above). A destination never
    held may deliver an empty full dump."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    one, other = [f"{V[i]} 10" for i in (1, 2, 3)], [f"{V[i]} 20" for i in range(4, 13)]
    dump(tmp_path, "a", "2026-11-21", one, name="ftp_1234_7_full_1795305600000.sync")
    (tmp_path / "a" / "20261121" / "ftp_1235_7_full_1795305900000.sync").write_text("".join(f"{l}\n" for l in other))
    run(config, root, "--date", "2026-11-21")
    dump(tmp_path, "a", "2026-11-22", other, name="ftp_1235_7_full_1795392000000.sync")
    (tmp_path / "a" / "20261122" / "ftp_1234_7_full_1795392000000.sync").write_bytes(b"")
    (tmp_path / "a" / "20261122" / "ftp_1236_7_full_1795392000000.sync").write_bytes(b"")  # never held
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert ("data source 'a': tonight's full dump of destination DID 1234 (MASTER_DPID 7) "
            "(ftp_1234_7_full_1795392000000.sync) is empty, where dt=2026-11-21 read its members") in line, line
    assert "1236" not in line and "--allow-shrink" in line
    run(config, root, "--date", "2026-11-22", "--allow-shrink")  # a destination emptied
    assert {segment for _, segment, _ in members(root, "2026-11-22")} == {"20"}


def test_an_iter_night_with_no_audience_to_build_on_is_refused_unless_allowed(tmp_path):
    """A first night (a fresh or moved root) of iter dumps, or a data source new to the config whose
    dumps are iter: the night published an audience of tonight's changes only, exit 0."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-21", [f"{V[1]} 10"], mode="iter")
    with pytest.raises(ConfigError, match="data source 'a': tonight's dumps are iter \\(changes\\) and no night is "
                                          "published under this root yet.*--allow-gap"):
        run(config, root, "--date", "2026-11-21")
    dump(tmp_path, "a", "2026-11-21", everyone("a"))
    run(config, root, "--date", "2026-11-21")
    config = write_job(tmp_path, sources=("a", "b"))
    dump(tmp_path, "a", "2026-11-22", [f"{V[1]}  10"], mode="iter")
    dump(tmp_path, "b", "2026-11-22", [f"{V[2]} 20"], mode="iter")
    with pytest.raises(ConfigError, match="data source 'b': .* the previous night does not hold it"):
        run(config, root, "--date", "2026-11-22")
    run(config, root, "--date", "2026-11-22", "--allow-gap")
    assert members(root, "2026-11-22") == {("a", "10", f"p{i}") for i in range(2, 13)} | {("b", "20", "p2")}


# ---------------------------------------------------------------------------------------------
# shrink


def test_a_collapsing_audience_fails_the_night_unless_allowed(night_of_a):
    work, config, root = night_of_a
    dump(work, "a", "2026-11-22", everyone("a", ids=range(1, 6)))  # 12 -> 5 members: -58%
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "'a'" in line and "12" in line and "5" in line and "max_shrink" in line and "--allow-shrink" in line, line
    assert not (root / "dt=2026-11-22").exists() or not (root / "dt=2026-11-22" / "_SUCCESS").exists()
    done = run(config, root, "--date", "2026-11-22", "--allow-shrink")
    assert done[0]["status"] == "published"
    assert members(root, "2026-11-22") == {("a", "10", f"p{i}") for i in range(1, 6)}


def test_an_extract_missing_a_file_fails_the_night_unless_allowed(tmp_path):
    """One of the extract's two files missing tonight (a partial export): an iter night dropped the
    memberships of its profiles as gone from the extract, for good (the next night, the extract
    whole again, does not bring them back), and 3 of 12 members lost stayed under max_shrink."""
    config, root = write_job(tmp_path, sources=("a",), a={"sync_mode": "iter"}), tmp_path / "root"
    table = pq.read_table(tmp_path / "profiles.parquet")
    (tmp_path / "extract").mkdir()
    pq.write_table(table.slice(0, 9), tmp_path / "extract" / "part-0.parquet")
    pq.write_table(table.slice(9), tmp_path / "extract" / "part-1.parquet")
    config.write_text(config.read_text().replace('"profiles.parquet"', '"extract/*.parquet"'))
    dump(tmp_path, "a", "2026-11-21", everyone("a"))
    run(config, root, "--date", "2026-11-21", "--allow-gap")  # configured iter: its first night too
    (tmp_path / "extract" / "part-1.parquet").rename(tmp_path / "part-1.parquet")  # 12 -> 9 profiles: -25%
    dump(tmp_path, "a", "2026-11-22", [f"{V[1]}  10"])
    with pytest.raises(RunFailed, match=r"profiles: tonight's extract holds 9 profiles against 12 in dt=2026-11-21 "
                                        r"\(more than profiles.max_shrink=0.1 fewer\).*--allow-shrink"):
        run(config, root, "--date", "2026-11-22")
    assert not (root / "dt=2026-11-22" / "_SUCCESS").exists()
    (tmp_path / "part-1.parquet").rename(tmp_path / "extract" / "part-1.parquet")
    run(config, root, "--date", "2026-11-22")
    assert members(root, "2026-11-22") == {("a", "10", f"p{i}") for i in range(2, 13)}
    # A profile less (-8 %) is an ordinary night; --allow-shrink lets a purge through.
    pq.write_table(table.slice(9, 2), tmp_path / "extract" / "part-1.parquet")
    dump(tmp_path, "a", "2026-11-23", [f"{V[2]}  10"])
    run(config, root, "--date", "2026-11-23")
    pq.write_table(table.slice(0, 1), tmp_path / "extract" / "part-0.parquet")
    dump(tmp_path, "a", "2026-11-24", [])
    assert run(config, root, "--date", "2026-11-24", "--allow-shrink")[0]["status"] == "published"


def test_halving_is_allowed_and_the_limit_is_configurable_per_data_source(tmp_path):
    config, root = write_job(tmp_path, sources=("a", "b"), b={"max_shrink": 0.9}), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-21", everyone("a"))
    dump(tmp_path, "b", "2026-11-21", everyone("b"))
    dump(tmp_path, "a", "2026-11-22", everyone("a", ids=range(1, 7)))  # 12 -> 6: exactly half, allowed
    dump(tmp_path, "b", "2026-11-22", everyone("b", ids=range(1, 3)))  # 12 -> 2: -83%, b allows 90%
    results = run(config, root, "--backfill", "2026-11-21:2026-11-22")
    assert [r["status"] for r in results] == ["published", "published"]


def test_one_collapsing_source_among_several_still_fails_the_night(tmp_path):
    config, root = write_job(tmp_path, sources=("a", "b")), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-21", everyone("a", ids=range(1, 4)))
    dump(tmp_path, "b", "2026-11-21", everyone("b"))
    run(config, root, "--date", "2026-11-21")
    dump(tmp_path, "a", "2026-11-22", everyone("a", "10") + everyone("a", "11"))  # a grows a lot
    dump(tmp_path, "b", "2026-11-22", everyone("b", ids=range(1, 3)))  # b collapses: 12 -> 2
    with pytest.raises(RunFailed, match="'b'") as info:
        run(config, root, "--date", "2026-11-22")
    assert "'a'" not in str(info.value)


def test_an_iter_night_that_removes_most_of_the_audience_fails_too(night_of_a):
    """Removal lines and profiles gone from the extract (their memberships dropped) both shrink the
    audience: five of each, 12 -> 2 members; either alone leaves 7, which max_shrink allows."""
    work, config, root = night_of_a
    dump(work, "a", "2026-11-22", [f"{V[i]}  10" for i in range(1, 6)], mode="iter")  # removes 5 of 12
    stay = [i for i in V if i not in range(6, 11)]  # p6..p10 deleted from the extract
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in stay], "visitor_ids": [[V[i]] for i in stay]}),
                   work / "profiles.parquet")
    with pytest.raises(RunFailed, match="from 12 to 2 rows .*max_shrink"):
        run(config, root, "--date", "2026-11-22")
    assert (root / "dt=2026-11-21" / "_SUCCESS").exists() and not (root / "dt=2026-11-22" / "_SUCCESS").exists()


def test_an_empty_full_dump_is_a_failure_not_an_empty_audience(tmp_path):
    config, root = write_job(tmp_path, sources=("a", "b")), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-22", everyone("a"))
    dump(tmp_path, "b", "2026-11-22", [])  # a full dump with no line (first night: no shrink to measure)
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "'b'" in line and "empty" in line and f"ftp_1_7_full_{delivered('2026-11-22')}.sync.gz" in line, line
    assert run(config, root, "--date", "2026-11-22", "--allow-shrink")[0]["status"] == "published"


# ---------------------------------------------------------------------------------------------
# a data source removed from the config


def test_a_removed_data_source_is_reported_and_its_rows_dropped_only_when_allowed(tmp_path):
    config, root = write_job(tmp_path, sources=("a", "b")), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-21", everyone("a"))
    dump(tmp_path, "b", "2026-11-21", everyone("b", ids=range(1, 5)))
    run(config, root, "--date", "2026-11-21")
    config = write_job(tmp_path, sources=("a",))  # b is taken out of the config
    dump(tmp_path, "a", "2026-11-22", everyone("a"))
    with pytest.raises(RunFailed, match="'b'.*no longer configured"):
        run(config, root, "--date", "2026-11-22")
    result = run(config, root, "--date", "2026-11-22", "--allow-shrink")[0]
    assert result["report"]["removed_data_sources"] == {"b": {"action": "dropped", "reconciled_dropped": 4}}
    assert members(root, "2026-11-22") == {("a", "10", f"p{i}") for i in range(1, 13)}
    assert any("b: no longer configured" in line for line in nightly.summary_lines([result]))
    assert 'data-key="b.reconciled_dropped"' in (root / "dt=2026-11-22" / "report.html").read_text()  # the page too


def test_previous_rows_of_a_source_with_a_full_dump_tonight_are_not_read(tmp_path):
    """The merge replaces them anyway: the reader leaves them out (a part with only such rows costs
    its data_source column), keeps the others, and reads everything without the night's files."""
    from transforms.config import JobConfig
    from transforms.incremental import PREVIOUS, ReadParquetFolder

    folder = tmp_path / "reconciled"
    folder.mkdir()
    pq.write_table(pa.table({"data_source": ["a", "b", "a", "gone"], "segment_id": ["1"] * 4,
                             "profile_id": ["p1", "p2", "p3", "p4"]}), folder / "part-00000-of-00002.parquet")
    pq.write_table(pa.table({"data_source": ["a"], "segment_id": ["1"], "profile_id": ["p5"]}),
                   folder / "part-00001-of-00002.parquet")
    (tmp_path / "_SUCCESS").write_text(json.dumps({"files": [
        {"path": f"reconciled/{p.name}", "rows": pq.read_metadata(p).num_rows,
         "sha256": hashlib.sha256(p.read_bytes()).hexdigest()} for p in folder.glob("*.parquet")]}))
    sources = [{"name": n, "dpid": i + 1, "id_type": "visitor", "segments": f"/x/{n}/*", "sync_mode": mode}
               for i, (n, mode) in enumerate([("a", "full"), ("b", "iter")])]
    cfg = JobConfig(profiles={"path": "p.csv"}, data_sources=sources)

    def rows(files, with_cfg=True):
        reader = ReadParquetFolder(PREVIOUS, cfg=cfg if with_cfg else None)
        return sorted(pid for tag, table in reader.process(str(folder), files) for pid in table["profile_id"].to_pylist())

    tonight = [("a", "/x/a/dump.sync"), ("b", "/x/b/dump.sync")]
    assert rows(tonight) == ["p2", "p4"]  # b carried, the unconfigured source's row left to the merge (dropped, counted)
    assert rows([("b", "/x/b/dump.sync")]) == ["p1", "p2", "p3", "p4", "p5"]  # a has no full dump tonight
    assert rows(tonight, with_cfg=False) == ["p1", "p2", "p3", "p4", "p5"]


# ---------------------------------------------------------------------------------------------
# a night whose full dumps replace every data source does not read (or merge) the previous state


def partition_bytes(root: Path, day: str) -> dict[str, bytes]:
    folder = root / f"dt={day}"
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.parquet"))}


def test_a_night_replacing_every_source_skips_the_previous_state_and_publishes_the_same(tmp_path, monkeypatch):
    """Night 2's full dumps replace both data sources: the run neither reads nor merges the previous
    partition (the merge's Flatten costs the local runner a copy of every row), and publishes the
    same bytes and counts as the merging run."""
    import pipelines.import_audience as import_audience
    from transforms.night_guard import NightGuard

    config = write_job(tmp_path, sources=("a", "b"))
    for day, ids in (("2026-11-21", range(1, 13)), ("2026-11-22", range(3, 11))):
        dump(tmp_path, "a", day, everyone("a", ids=ids))
        dump(tmp_path, "b", day, everyone("b", "20", ids=ids))
    merged, direct = tmp_path / "merged", tmp_path / "direct"
    run(config, merged, "--date", "2026-11-21")
    shutil.copytree(merged, direct)  # night 1 as published (a root records no path of its own)
    with monkeypatch.context() as m:  # the merging run, as before
        m.setattr(NightGuard, "replacing_all", lambda self, cfg, files: None)
        expected = run(config, merged, "--date", "2026-11-22", "--allow-shrink")[0]["report"]

    monkeypatch.setattr(import_audience, "PreviousState", NotRead)
    report = run(config, direct, "--date", "2026-11-22", "--allow-shrink")[0]["report"]
    assert members(direct, "2026-11-22") == {(s, seg, f"p{i}") for s, seg in (("a", "10"), ("b", "20")) for i in range(3, 11)}
    assert partition_bytes(direct, "2026-11-22") == partition_bytes(merged, "2026-11-22")
    assert report["data_sources"] == expected["data_sources"]


def test_a_source_still_carried_over_keeps_the_merge(tmp_path):
    """Only when no previous row can survive: an iter source, or a previous data source no longer
    configured (its rows dropped and counted), needs the merge."""
    from transforms.config import JobConfig
    from transforms.night_guard import NightGuard

    sources = [{"name": n, "dpid": i + 1, "id_type": "visitor", "segments": f"/x/{n}/*"} for i, n in enumerate("ab")]
    cfg = JobConfig(profiles={"path": "p.csv"}, data_sources=sources)
    full = [("a", "/x/a/ftp_1_7_full_1795305600000.sync"), ("b", "/x/b/ftp_1_7_full_1795305600000.sync")]
    guard = NightGuard("dt=2026-11-21", {"a": 3, "b": 2})
    assert guard.replacing_all(cfg, full).replaced == ("a", "b")
    assert guard.replacing_all(cfg, [full[0], ("b", "/x/b/ftp_1_7_iter_1795305600000.sync")]) is None
    assert guard.replacing_all(cfg, full[:1]) is None  # b has no dump: carried over
    assert NightGuard("dt=2026-11-21", {"a": 3, "gone": 1}).replacing_all(cfg, full) is None


def test_a_full_dump_renamed_after_the_launch_fails_the_night(night_of_a, monkeypatch):
    """The launch saw a full dump for 'a' (so the previous state is not read); by the time the
    pipeline lists the files it is an iter dump: publishing would lose a's carried-over members."""
    work, config, root = night_of_a
    dump(work, "a", "2026-11-22", everyone("a", ids=[1]), mode="iter")
    launch_view = [("a", str(work / "a" / "20261122" / "ftp_1_7_full_1795305600000.sync.gz"))]
    monkeypatch.setattr(nightly, "tonight_files", lambda cfg: launch_view)
    with pytest.raises(RunFailed, match="a: no full dump among the files read"):
        run(config, root, "--date", "2026-11-22", "--allow-shrink")
    assert not (root / "dt=2026-11-22").exists()


# ---------------------------------------------------------------------------------------------
# the writers read the previous night's parts shard by shard


def night_one(work: Path, buckets: int) -> Path:
    """Night 1 of :func:`two_nights` in the new folder ``work``: full dumps for a and b, published under
    ``work / "root"``. Returns the config."""
    work.mkdir()
    config = write_job(work, sources=("a", "b"), buckets=buckets)
    dump(work, "a", "2026-11-21", everyone("a"))
    dump(work, "b", "2026-11-21", everyone("b", "20"))
    run(config, work / "root", "--date", "2026-11-21")
    return config


@pytest.fixture(scope="module")
def made_night_one(tmp_path_factory):
    """``made(buckets)``: the MadeOnce of :func:`night_one` with ``buckets``, run once for the module
    (when first asked for)."""
    made = {}

    def made_for(buckets: int) -> MadeOnce:
        if buckets not in made:
            made[buckets] = MadeOnce(tmp_path_factory, f"night-one-{buckets}", lambda work: night_one(work, buckets))
        return made[buckets]

    return made_for


def two_nights(made_night_one, buckets: int = 4, a_mode: str = "iter", left: tuple = ()) -> tuple[Path, Path, Path]:
    """Night 1: full dumps for a and b (the module's run with ``buckets``, :func:`night_one`: its folder
    ``work`` put back from the untouched copy, at the same paths, as a night's report names the dumps
    it read by path). Night 2 (not run here): a's dump adds and removes (``a_mode``: iter, or full: it
    replaces a's audience), b's iter dump adds nothing new (carried over); the profiles ``left``
    (numbers) are no longer in night 2's extract. Returns ``(work, root, config)``."""
    made = made_night_one(buckets)
    config, work = made.restored(), made.work
    stay = [i for i in V if i not in left]
    pq.write_table(pa.table({"profile_id": [f"p{i}" for i in stay], "visitor_ids": [[V[i]] for i in stay]}),
                   work / "profiles.parquet")
    dump(work, "a", "2026-11-22", [f"{V[1]} 11", f"{V[2]}  10", f"{V[3]} 12 10"], mode=a_mode)
    dump(work, "b", "2026-11-22", [f"{V[4]} 20"], mode="iter")
    return work, work / "root", config


@pytest.mark.parametrize("a_mode", ["iter", "full"])
def test_the_writers_read_the_previous_parts_by_shard_and_publish_the_same(made_night_one, monkeypatch, a_mode):
    """No previous row goes through the runner (the local runner's Flatten held them twice); the
    partition and the counts are those of the run that reads the previous state whole, also when
    one data source's full dump replaces its previous rows while another's are carried. Profiles
    p11 and p12 left night 2's extract: their carried memberships are dropped and counted
    (``reconciled_profile_left``), whichever way the previous state is read, and every previous
    row of an iter data source is carried, removed or dropped."""
    import pipelines.import_audience as import_audience

    work, whole, config = two_nights(made_night_one, a_mode=a_mode, left=(11, 12))
    direct = work / "direct"
    shutil.copytree(whole, direct)  # night 1 as published (a root records no path of its own)
    # 2 of 12 profiles leave (-17 %, over profiles.max_shrink's default); a's full dump keeps 2 of its 12 members
    config.write_text(config.read_text().replace('"phone": null', '"phone": null, "max_shrink": 0.2'))
    flags = ["--allow-shrink"] if a_mode == "full" else []
    with monkeypatch.context() as m:
        m.setattr(nightly, "previous_parts", lambda *args: {})
        expected = run(config, whole, "--date", "2026-11-22", *flags)[0]["report"]

    monkeypatch.setattr(import_audience, "PreviousState", NotRead)
    report = run(config, direct, "--date", "2026-11-22", *flags)[0]["report"]
    stay = [i for i in V if i not in (11, 12)]
    carried = {("a", "10", f"p{i}") for i in stay if i not in (2, 3)} if a_mode == "iter" else set()  # full: replaced
    a_members = carried | {("a", "11", "p1"), ("a", "12", "p3")}
    assert members(direct, "2026-11-22") == a_members | {("b", "20", f"p{i}") for i in stay}
    assert partition_bytes(direct, "2026-11-22") == partition_bytes(whole, "2026-11-22")
    assert report["data_sources"] == expected["data_sources"]
    b = report["data_sources"]["b"]["previous_state"]
    assert b == {"reconciled_carried": 10, "reconciled_profile_left": 2}  # b's 12 previous rows, accounted for
    if a_mode == "iter":
        a = report["data_sources"]["a"]["previous_state"]
        assert a == {"reconciled_carried": 8, "reconciled_profile_left": 2, "reconciled_removed": 2}
        assert sum(a.values()) == 12  # night 1's members of a
    else:
        assert "previous_state" not in report["data_sources"]["a"]  # replaced: nothing carried, nothing counted


def test_the_merge_drops_previous_memberships_of_profiles_gone_from_tonights_extract(tmp_path):
    """merge_state with ``profiles``: a previous membership whose profile_id is not among tonight's
    ids of its shard (tagged PROFILE_IDS) is dropped and counted (``profile_left``), after the rows
    of full-dump and unconfigured data sources; a shard without ids drops every one; the file
    audience's merge (no ``profiles``) keeps them."""
    from transforms.config_load import load_config
    from transforms.incremental import REMOVE, merge_state
    from transforms.outcomes import Count, Metric
    from transforms.write_parts import ADD, PREVIOUS, PROFILE_IDS

    cfg = load_config(str(write_job(tmp_path, sources=("a", "b", "c"))))
    keys = ["data_source", "segment_id", "profile_id"]

    def rows(*triples):
        return pa.table({k: pa.array([t[i] for t in triples], pa.string()) for i, k in enumerate(keys)})

    def night(*modes):
        return [(name, f"/in/{name}/ftp_1_7_{mode}_1795305600000.sync.gz") for name, mode in modes]

    def summed(counts):
        totals = {}
        for key, n in counts:
            totals[key] = totals.get(key, 0) + n
        return totals

    previous = rows(("a", "10", "p1"), ("a", "10", "p2"), ("a", "11", "p2"), ("b", "20", "p2"), ("b", "20", "p3"),
                    ("c", "30", "p2"), ("gone", "1", "p2"))
    merge = merge_state(keys, "reconciled", cfg, profiles=True)
    table, counts = merge({PREVIOUS: previous, ADD: rows(("a", "12", "p1")), REMOVE: rows(("b", "20", "p3")),
                           PROFILE_IDS: pa.table({"profile_id": ["p1", "p3", "p1"]})},
                          night(("a", "iter"), ("b", "iter"), ("c", "full")))
    assert sorted(zip(*(table[k].to_pylist() for k in keys))) == [("a", "10", "p1"), ("a", "12", "p1")]
    assert summed(counts) == {
        Count(Metric.DROPPED, "gone", "reconciled"): 1,  # unconfigured: dropped, whatever its profile
        Count(Metric.PROFILE_LEFT, "a", "reconciled"): 2, Count(Metric.PROFILE_LEFT, "b", "reconciled"): 1,
        Count(Metric.REMOVED, "b", "reconciled"): 1, Count(Metric.CARRIED, "a", "reconciled"): 1,
    }  # c's full dump replaced its row: not counted
    table, counts = merge({PREVIOUS: previous.slice(0, 3)}, night(("a", "iter")))  # no id of tonight's in the shard
    assert table.num_rows == 0 and summed(counts) == {Count(Metric.PROFILE_LEFT, "a", "reconciled"): 3}
    table, counts = merge_state(keys, "reconciled", cfg)({PREVIOUS: previous.slice(0, 3)}, night(("a", "iter")))
    assert table.num_rows == 3 and summed(counts) == {Count(Metric.CARRIED, "a", "reconciled"): 3}


def _rewrite_part(part: Path, table: pa.Table) -> None:
    """Replace a published part and make its _SUCCESS entry agree (as a tool rewriting it would)."""
    import hashlib

    pq.write_table(table, part)
    success = part.parent.parent / "_SUCCESS"
    manifest = json.loads(success.read_text())
    for entry in manifest["files"]:
        if entry["path"] == f"{part.parent.name}/{part.name}":
            entry.update(rows=table.num_rows, bytes=part.stat().st_size, sha256=hashlib.sha256(part.read_bytes()).hexdigest())
    success.write_text(json.dumps(manifest))


def test_a_previous_part_holding_rows_of_another_shard_fails_the_night(made_night_one):
    """Rows in the wrong part would escape the removals aimed at their shard: a silent wrong answer."""
    _, root, config = two_nights(made_night_one)
    parts = sorted((root / "dt=2026-11-21" / "reconciled").glob("part-*.parquet"))
    first, second = pq.read_table(parts[0]), pq.read_table(parts[1])
    _rewrite_part(parts[0], second)
    _rewrite_part(parts[1], first)
    with pytest.raises(RunFailed, match=f"{parts[0].name}: the previous night's part holds rows of other shards"):
        run(config, root, "--date", "2026-11-22")
    assert not (root / "dt=2026-11-22").exists()


def test_an_unreadable_previous_manifest_fails_the_night_naming_it(made_night_one):
    """The launch reads the previous night's _SUCCESS to decide how to read its parts: a damaged
    one is a damaged partition, not a reason to guess."""
    _, root, config = two_nights(made_night_one)
    (root / "dt=2026-11-21" / "_SUCCESS").write_text('{"files": [')
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 1, result.stderr
    assert "dt=2026-11-21/_SUCCESS: cannot read the previous night's manifest" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "dt=2026-11-22").exists()


@pytest.mark.parametrize("damage", ["rewritten", "missing"])
def test_a_previous_part_unlike_its_manifest_fails_the_night(made_night_one, damage):
    _, root, config = two_nights(made_night_one)
    part = sorted((root / "dt=2026-11-21" / "reconciled").glob("part-*.parquet"))[0]
    if damage == "rewritten":
        pq.write_table(pq.read_table(part).slice(1), part)  # one row lost, still a valid file
    else:
        part.unlink()
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 1, result.stderr
    assert part.name in result.stderr and "previous night's part" in result.stderr and "Traceback" not in result.stderr
    assert not (root / "dt=2026-11-22").exists()


def test_a_night_bucketed_otherwise_is_read_whole(made_night_one):
    """Another bucket count (or another hash) than the previous night's: its parts are read whole and
    re-split, and the night is right."""
    from transforms.config import JobConfig
    from transforms.incremental import previous_parts

    work, root, _ = two_nights(made_night_one, buckets=2)
    config = write_job(work, sources=("a", "b"), buckets=3)
    cfg = JobConfig.model_validate(json.loads(config.read_text()))
    previous = str(root / "dt=2026-11-21")
    assert previous_parts(previous, ["reconciled"], cfg) == {}
    as_before = cfg.model_copy(update={"buckets": 2})
    assert set(previous_parts(previous, ["reconciled"], as_before)) == {"reconciled"}
    success = root / "dt=2026-11-21" / "_SUCCESS"
    manifest = json.loads(success.read_text())
    manifest["bucketing"]["hash"] = "0" * 16  # rows bucketed by another hash (another release), same count
    success.write_text(json.dumps(manifest))
    assert previous_parts(previous, ["reconciled"], as_before) == {}
    run(config, root, "--date", "2026-11-22")
    assert members(root, "2026-11-22") == (
        {("a", "10", f"p{i}") for i in V if i not in (2, 3)} | {("a", "11", "p1"), ("a", "12", "p3")}
        | {("b", "20", f"p{i}") for i in V})


# ---------------------------------------------------------------------------------------------
# nights in order


def test_a_night_before_a_published_one_is_refused_unless_the_chain_is_rebuilt(tmp_path, capsys):
    """A missed night filled after a newer one: the newer night was built without its changes, and
    every later night builds on that one. Refused, naming the newer night; a --backfill --force from
    the missed night to the newest rebuilds the chain in order and gets the right audience. (The
    newer night itself is first refused for the gap: test_a_gap_of_missed_nights_with_dumps_...)"""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-20", everyone("a", ids=range(1, 4)))
    dump(tmp_path, "a", "2026-11-21", [f"{V[1]}  10", f"{V[4]} 10"], mode="iter")  # p1 leaves, p4 joins
    dump(tmp_path, "a", "2026-11-22", [f"{V[5]} 10"], mode="iter")
    run(config, root, "--date", "2026-11-20")
    assert nightly.main(["--config", str(config), "--root", str(root), "--date", "2026-11-22"]) == 2  # 11-21 missed
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("dt=2026-11-22 would build on dt=2026-11-20") and "--allow-gap" in line, line
    assert not (root / "dt=2026-11-22").exists()  # refused before any pipeline ran
    run(config, root, "--date", "2026-11-22", "--allow-gap")  # forced over the gap: 11-21's changes are missing
    result = cli(config, root, "--date", "2026-11-21")
    assert result.returncode == 2, result.stderr
    assert "dt=2026-11-22 is published after it" in result.stderr and "Traceback" not in result.stderr
    for args in (["--date", "2026-11-20", "--force"], ["--backfill", "2026-11-20:2026-11-21"],
                 ["--backfill", "2026-11-21:2026-11-22"]):
        with pytest.raises(ConfigError, match="dt=2026-11-22 is published after it"):
            run(config, root, *args)
    assert not (root / "dt=2026-11-21").exists()
    run(config, root, "--backfill", "2026-11-21:2026-11-22", "--force")
    assert members(root, "2026-11-22") == {("a", "10", f"p{i}") for i in (2, 3, 4, 5)}


def test_a_gap_of_missed_nights_with_dumps_is_refused_unless_allowed(tmp_path):
    """A night built on a partition older than the night before it: the missed nights' iter dumps
    (additions and removals) were never applied, and the night published a wrong audience with exit
    0. Refused when a missed night lists a dump (its {date} paths filled), or when a data source's
    path does not change with the date (nothing tells its nights apart); listings only."""
    from datetime import date

    from transforms.config_load import load_config
    from transforms.night_order import check_no_gap

    cfg = load_config(str(write_job(tmp_path, sources=("a", "b"))))
    d = date.fromisoformat
    check_no_gap(cfg, d("2026-12-04"), d("2026-12-05"))  # the night before: no gap
    check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"))  # 12-03, 12-04 delivered nothing: a weekend
    (tmp_path / "b" / "20261203").mkdir(parents=True)
    (tmp_path / "b" / "20261203" / ".DS_Store").write_bytes(b"")  # hidden: still no delivery
    check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"))
    for name in ("ftp_1_7_iter_1795305600000.sync.gz.filepart", "ftp_1_7_iter_1795305600000.sync.info"):
        dump(tmp_path, "b", "2026-12-03", [f"{V[1]} 10"], name=name)  # a delivery that did not finish
        with pytest.raises(ConfigError, match=r"1 had dumps \(dt=2026-12-03\)"):
            check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"))
    (tmp_path / "b" / "20261203" / "ftp_1_7_iter_1795305600000.sync.info").unlink()
    dump(tmp_path, "b", "2026-12-04", [f"{V[1]} 10"], mode="iter")  # one source's delivery is enough
    with pytest.raises(ConfigError) as info:
        check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"))
    message = str(info.value)
    assert message == ("dt=2026-12-05 would build on dt=2026-12-02, but 2 nights between them were not imported "
                       "(dt=2026-12-03..dt=2026-12-04) and 1 had dumps (dt=2026-12-04): its changes would be missing; "
                       "import it first, in order (--backfill 2026-12-04:2026-12-04), or rerun with --allow-gap to "
                       "build on dt=2026-12-02 anyway"), message
    assert V[1] not in message
    check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"), allow_gap=True)
    dump(tmp_path, "a", "2026-12-02", [f"{V[1]} 10"], mode="iter")  # the previous night's own: not missed
    dump(tmp_path, "a", "2026-12-06", [f"{V[1]} 10"], mode="iter")
    with pytest.raises(ConfigError, match=r"4 nights between them were not imported \(dt=2026-12-03\.\.dt=2026-12-06\) "
                       r"and 2 had dumps \(from dt=2026-12-04 to dt=2026-12-06\).*\(--backfill 2026-12-04:2026-12-06\)"):
        check_no_gap(cfg, d("2026-12-02"), d("2026-12-07"))  # 12-05 has none: the backfill skips it
    undated = load_config(str(write_job(tmp_path, sources=("a", "b"), b={"segments": "b/*.sync.gz"})))
    with pytest.raises(ConfigError, match=r"2 nights between them were not imported \(dt=2026-12-07\.\.dt=2026-12-08\) "
                       r"and data source 'b' cannot tell which had dumps.*--backfill 2026-12-07:2026-12-08"):
        check_no_gap(undated, d("2026-12-06"), d("2026-12-09"))  # no dump anywhere, but b's path cannot tell
    check_no_gap(undated, d("2026-12-06"), d("2026-12-09"), allow_gap=True)


def test_a_night_that_is_not_over_is_refused(tmp_path):
    """Tonight's dumps are not all there yet: a partial night published now would be skipped as
    "already published" by the scheduled run."""
    from pipelines.launch import today

    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    night = today().isoformat()
    dump(tmp_path, "a", night, everyone("a", ids=range(1, 7)))
    result = cli(config, root, "--date", night)
    assert result.returncode == 2, result.stderr
    assert f"dt={night} is not over (today is {night} UTC)" in result.stderr and "Traceback" not in result.stderr
    assert not (root / f"dt={night}").exists()


@pytest.mark.parametrize("iter_ms, named, refusal", [
    (1795305600000, "data_sources[0].segments", "an iter delivery older than ftp_1_7_full"),
    (1795392000000, "data source 'a'", "both full and iter dumps")])
def test_a_night_mixing_full_and_iter_dumps_of_one_data_source_is_refused(tmp_path, iter_ms, named, refusal):
    """An iter dump's additions were kept on top of a later full dump (the whole audience), and a
    later iter dump's removals never reached the full dump's rows: file order was ignored. (An iter
    dump older than the full one is refused by the preflight, as in a one-off import.)"""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    folder = tmp_path / "a" / "20261122"
    dump(tmp_path, "a", "2026-11-22", [f"{V[5]} 10"], name=f"ftp_1_7_iter_{iter_ms}.sync.gz")
    (folder / "ftp_1_7_full_1795348800000.sync.gz").write_bytes(gzip.compress(f"{V[1]} 10\n{V[2]} 10\n".encode(), mtime=0))
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 2, result.stderr
    assert named in result.stderr and refusal in result.stderr
    assert "Traceback" not in result.stderr and not (root / "dt=2026-11-22").exists()


@pytest.mark.parametrize("damage", ["missing", "rewritten", "unlisted"])
def test_a_previous_night_read_whole_is_checked_against_its_manifest_too(made_night_one, damage):
    """After a change of buckets (and for the file audience when suppression lists are set) the
    previous night is read whole: a missing part silently dropped its members there."""
    work, root, _ = two_nights(made_night_one, buckets=2)
    config = write_job(work, sources=("a", "b"), buckets=3)
    folder = root / "dt=2026-11-21" / "reconciled"
    part = sorted(folder.glob("part-*.parquet"))[0]
    if damage == "missing":
        part.unlink()
    elif damage == "rewritten":
        pq.write_table(pq.read_table(part).slice(1), part)
    else:
        part = folder / "part-00009-of-00010.parquet"
        pq.write_table(pq.read_table(sorted(folder.glob("part-*.parquet"))[0]), part)
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 1, result.stderr
    assert part.name in result.stderr and "previous night's part" in result.stderr and "Traceback" not in result.stderr
    assert not (root / "dt=2026-11-22").exists()


def test_a_dump_the_previous_night_imported_is_refused(tmp_path):
    """A segments glob without {date}: every night read every delivery still in the folder, and an
    older iter addition was applied again after a later removal. Refused, naming the file."""
    config = write_job(tmp_path, sources=("a",), a={"segments": "a/*.sync.gz"})
    root, folder = tmp_path / "root", tmp_path / "a"
    folder.mkdir()
    (folder / "ftp_1_7_iter_1795305600000.sync.gz").write_bytes(gzip.compress(f"{V[1]} 10\n".encode(), mtime=0))
    run(config, root, "--date", "2026-11-20", "--allow-gap")  # its first night is iter
    (folder / "ftp_1_7_iter_1795392000000.sync.gz").write_bytes(gzip.compress(f"{V[1]}  10\n".encode(), mtime=0))
    result = cli(config, root, "--date", "2026-11-21")
    assert result.returncode == 2, result.stderr
    assert "ftp_1_7_iter_1795305600000.sync.gz: already imported by dt=2026-11-20" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "dt=2026-11-21").exists()


def full_then_removal(work: Path) -> tuple[Path, Path]:
    """Data source a alone, in the new folder ``work``: night 1 (2026-11-20) a full dump of p1..p3,
    night 2 an iter dump removing p3, both published: ``(config, root)``."""
    work.mkdir()
    config, root = write_job(work, sources=("a",)), work / "root"
    dump(work, "a", "2026-11-20", everyone("a", ids=range(1, 4)), name="ftp_1_7_full_1795132800000.sync.gz")
    run(config, root, "--date", "2026-11-20")
    dump(work, "a", "2026-11-21", [f"{V[3]}  10"], name="ftp_1_7_iter_1795219200000.sync.gz")
    run(config, root, "--date", "2026-11-21")
    return config, root


made_full_then_removal = made_once_fixture("full-then-removal", full_then_removal)


@pytest.mark.parametrize("copied", ["full", "iter"])
def test_a_delivery_older_than_the_previous_nights_newest_is_refused(made_full_then_removal, copied):
    """An earlier delivery copied into tonight's folder (a transfer re-run, a file restored): with
    {date} in the glob, its path is new. Tonight's copy of night 1's full dump put back the user
    night 2 removed (and an iter copy its addition over a later removal), exit 0. Refused, naming it."""
    work, config, root = restored(made_full_then_removal)
    assert ("a", "10", "p3") not in members(root, "2026-11-21")
    lines, name = ((everyone("a", ids=range(1, 4)), "ftp_1_7_full_1795132800000.sync.gz") if copied == "full"
                   else ([f"{V[3]} 10"], "ftp_1_7_iter_1795132800000.sync.gz"))
    dump(work, "a", "2026-11-22", lines, name=name)
    result = cli(config, root, "--date", "2026-11-22")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert f"{name}: delivered no later than ftp_1_7_iter_1795219200000.sync.gz, which dt=2026-11-21 read" in line, line
    assert "Traceback" not in result.stderr and not (root / "dt=2026-11-22").exists()
    dump(work, "a", "2026-11-22", [f"{V[4]} 10"], name="ftp_1_7_iter_1795305600000.sync.gz")  # a later one runs
    assert cli(config, root, "--date", "2026-11-22").returncode == 0
    assert members(root, "2026-11-22") == {("a", "10", "p1"), ("a", "10", "p2"), ("a", "10", "p4")}


def test_a_dump_delivered_weeks_before_its_night_is_refused(tmp_path):
    """A {date:...} format with day and month swapped ({date:%m%d%Y} for a partner's %d%m%Y folders)
    reads, on the 1st to 12th of a month, another date's folder: dt=2026-11-03 published the full
    dump of 11 March (p1..p8 for p1..p3) and dt=2026-11-04 the iter dump of 11 April, exit 0 (each
    later than the one before, so no stale delivery). A dump whose name says it was delivered more
    than 7 days before its night began is another night's: refused (exit 2) naming it and the field,
    unless --allow-gap; the right format publishes the right nights."""
    config = write_job(tmp_path, sources=("a",), a={"segments": "a/{date:%m%d%Y}/*"})
    root = tmp_path / "root"

    def partner(day: str, mode: str, lines: list[str]):  # the partner's folders: day, month, year
        folder = tmp_path / "a" / f"{day[8:]}{day[5:7]}{day[:4]}"
        folder.mkdir(parents=True)
        (folder / f"ftp_1_7_{mode}_{delivered(day)}.sync.gz").write_bytes(
            gzip.compress("".join(line + "\n" for line in lines).encode(), mtime=0))

    partner("2026-03-11", "full", everyone("a", ids=range(1, 9)))
    partner("2026-04-11", "iter", [f"{V[8]}  10"])
    partner("2026-11-03", "full", everyone("a", ids=range(1, 4)))
    partner("2026-11-04", "iter", [f"{V[1]}  10"])
    result = cli(config, root, "--date", "2026-11-03")
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert (f"data_sources[0].segments: {tmp_path}/a/11032026/ftp_1_7_full_{delivered('2026-03-11')}.sync.gz: "
            "delivered 2026-03-11, 237 days before dt=2026-11-03") in line, line
    assert "Traceback" not in result.stderr and not (root / "dt=2026-11-03").exists()
    assert cli(config, root, "--date", "2026-11-03", "--allow-old-delivery").returncode == 0  # if intended
    shutil.rmtree(root)
    config = write_job(tmp_path, sources=("a",), a={"segments": "a/{date:%d%m%Y}/*"})
    assert [r["status"] for r in run(config, root, "--backfill", "2026-11-03:2026-11-04")] == ["published"] * 2
    assert members(root, "2026-11-03") == {("a", "10", f"p{i}") for i in (1, 2, 3)}
    assert members(root, "2026-11-04") == {("a", "10", "p2"), ("a", "10", "p3")}


def test_reading_an_old_delivery_waives_no_missed_night(tmp_path):
    """The refusal of an old dump said '--allow-gap to read it as this night's', and --allow-gap also
    waives the missed-night checks of every data source: data source c added on dt=2026-11-22 from
    its latest full dump (made 11-12) while b's night 21 (p1 leaves) was never imported. Refused for
    c's dump alone, the night published with --allow-gap built b on night 20: p1 stayed in b, exit 0,
    no word of night 21. Reading the old dump has its own flag; --allow-gap no longer reads it."""
    config, root = write_job(tmp_path, sources=("b",)), tmp_path / "root"
    dump(tmp_path, "b", "2026-11-20", everyone("b"))
    run(config, root, "--date", "2026-11-20")
    dump(tmp_path, "b", "2026-11-21", [f"{V[1]}  10"], mode="iter")  # not imported
    config = write_job(tmp_path, sources=("b", "c"))
    dump(tmp_path, "b", "2026-11-22", [f"{V[2]}  10"], mode="iter")
    dump(tmp_path, "c", "2026-11-22", everyone("c", ids=range(1, 4)),
         name=f"ftp_1_7_full_{delivered('2026-11-12')}.sync.gz")
    result = cli(config, root, "--date", "2026-11-22", "--allow-gap")
    assert result.returncode == 2, members(root, "2026-11-22")
    assert "ftp_1_7_full_" in result.stderr.strip().splitlines()[-1] and "--allow-old-delivery" in result.stderr
    result = cli(config, root, "--date", "2026-11-22", "--allow-old-delivery")
    assert result.returncode == 2 and "(dt=2026-11-21)" in result.stderr.strip().splitlines()[-1], result.stderr
    assert not (root / "dt=2026-11-22").exists()
    run(write_job(tmp_path, sources=("b",)), root, "--date", "2026-11-21")  # the missed night first, as b ran then
    run(write_job(tmp_path, sources=("b", "c")), root, "--date", "2026-11-22", "--allow-old-delivery")
    assert ("b", "10", "p1") not in members(root, "2026-11-22") and ("c", "10", "p3") in members(root, "2026-11-22")


@pytest.mark.xfail(strict=True, reason="known limit of check_delivery_dates: a swap naming a LATER date's folder "
                   "is read as a late delivery (only earlier timestamps are refused)")
def test_a_backfill_reading_a_later_dates_folder_through_a_swapped_format_is_refused(tmp_path):
    """The other half of the swap: on a night whose day is above its month (5 February), {date:%m%d%Y}
    names the partner's folder of a later date (02052026: 2 May). A live night finds it empty, but a
    backfill run after 2 May published dt=2026-02-05 from the full dump of 2 May (p2 for p1), exit 0:
    its timestamp, after the night, reads as a late delivery."""
    config = write_job(tmp_path, sources=("a",), a={"segments": "a/{date:%m%d%Y}/*"})
    root = tmp_path / "root"
    for day, who in (("2026-02-05", 1), ("2026-05-02", 2)):  # the partner's folders: day, month, year
        folder = tmp_path / "a" / f"{day[8:]}{day[5:7]}{day[:4]}"
        folder.mkdir(parents=True)
        (folder / f"ftp_1_7_full_{delivered(day)}.sync.gz").write_bytes(
            gzip.compress(f"{V[who]} 10\n".encode(), mtime=0))
    result = cli(config, root, "--date", "2026-02-05")
    assert result.returncode == 2, members(root, "2026-02-05")


def test_a_change_of_profiles_id_between_nights_is_refused_unless_every_source_is_replaced(tmp_path):
    """The previous night's memberships are profile ids of the old column: carried into a night
    keyed by another one, each person was a member twice and removals missed the old ids."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    table = pq.read_table(tmp_path / "profiles.parquet")
    pq.write_table(table.append_column("cust", pa.array([f"c{i}" for i in V])), tmp_path / "profiles.parquet")
    dump(tmp_path, "a", "2026-11-20", everyone("a", ids=range(1, 4)))
    run(config, root, "--date", "2026-11-20")
    job = json.loads(config.read_text())
    job["profiles"]["id"] = "cust"
    config.write_text(json.dumps(job))
    dump(tmp_path, "a", "2026-11-21", [f"{V[1]}  10", f"{V[2]} 10"], mode="iter")
    result = cli(config, root, "--date", "2026-11-21")
    assert result.returncode == 2, result.stderr
    assert "profiles.id is 'cust', dt=2026-11-20 was built with 'profile_id'" in result.stderr
    assert "Traceback" not in result.stderr and not (root / "dt=2026-11-21").exists()
    dump(tmp_path, "a", "2026-11-21", everyone("a", ids=range(2, 4)))  # a full dump: nothing is carried
    run(config, root, "--date", "2026-11-21", "--allow-shrink")
    assert members(root, "2026-11-21") == {("a", "10", "c2"), ("a", "10", "c3")}


def test_a_previous_night_of_an_older_release_is_read_on_its_bytes_not_its_row_counts(made_night_one):
    """Releases that did not record the bucketing wrote some parts' row counts wrong in _SUCCESS
    (another output's part of the same name): the first night after an upgrade failed on them."""
    _, root, config = two_nights(made_night_one, buckets=2)
    success = root / "dt=2026-11-21" / "_SUCCESS"
    manifest = json.loads(success.read_text())
    del manifest["bucketing"]
    for entry in manifest["files"]:
        if entry["path"].startswith("reconciled/"):
            entry["rows"] = 1
    success.write_text(json.dumps(manifest))
    run(config, root, "--date", "2026-11-22")
    assert members(root, "2026-11-22") == (
        {("a", "10", f"p{i}") for i in V if i not in (2, 3)} | {("a", "11", "p1"), ("a", "12", "p3")}
        | {("b", "20", f"p{i}") for i in V})


@contextlib.contextmanager
def dumps_withheld(folder: Path):
    """A night's dumps taken away (not delivered yet, or deleted) while the block runs, then put back."""
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    for name in saved:
        (folder / name).unlink()
    try:
        yield
    finally:
        for name, data in saved.items():
            (folder / name).write_bytes(data)


def three_nights(work: Path) -> tuple[Path, Path]:
    """Data source a alone, in the new folder ``work``: a full dump of p1..p6 on 2026-11-21, iter dumps
    adding p7 on the 22nd and p8 on the 23rd, the three nights published by one backfill:
    ``(config, root)``."""
    work.mkdir()
    config, root = write_job(work, sources=("a",)), work / "root"
    dump(work, "a", "2026-11-21", everyone("a", ids=range(1, 7)))
    dump(work, "a", "2026-11-22", [f"{V[7]} 10"], mode="iter")
    dump(work, "a", "2026-11-23", [f"{V[8]} 10"], mode="iter")
    run(config, root, "--backfill", "2026-11-21:2026-11-23")
    return config, root


made_three_nights = made_once_fixture("three-nights", three_nights)


def test_a_rebuild_that_stops_part_way_must_be_finished_before_any_other_night(made_three_nights):
    """--backfill --force republished the first night, then failed on the next (its dump purged): the
    later nights stayed as built on the old first night, and the next scheduled night built on them
    without a word. The unfinished rebuild is recorded and refused until it is finished."""
    work, config, root = restored(made_three_nights)
    dump(work, "a", "2026-11-24", [f"{V[9]} 10"], mode="iter")  # after that backfill: none of its nights lists it
    dump(work, "a", "2026-11-21", everyone("a", ids=range(2, 7)))  # a corrected night: p1 is not a member
    with dumps_withheld(work / "a" / "20261122"):
        with pytest.raises(ConfigError, match="no segment dump matches"):
            run(config, root, "--backfill", "2026-11-21:2026-11-23", "--force")
        result = cli(config, root, "--date", "2026-11-24")
        assert result.returncode == 2, result.stderr
        assert "the rebuild of dt=2026-11-22..dt=2026-11-23 did not finish" in result.stderr, result.stderr
        assert "--backfill 2026-11-22:2026-11-23 --force" in result.stderr and "Traceback" not in result.stderr
        with pytest.raises(ConfigError, match=r"the rebuild of dt=2026-11-22\.\.dt=2026-11-23 did not finish"):
            run(config, root, "--backfill", "2026-11-23:2026-11-24", "--force")
    run(config, root, "--backfill", "2026-11-22:2026-11-23", "--force")
    run(config, root, "--date", "2026-11-24")
    assert members(root, "2026-11-24") == {("a", "10", f"p{i}") for i in range(2, 10)}
    assert not (root / "_rebuild.json").exists()


def test_a_rebuild_killed_while_recording_its_progress_is_rerun(made_three_nights):
    """SIGKILLed halfway through writing ``_rebuild.json`` (the rebuild moving past its first night),
    the record was left torn: every nightly run failed (exit 2) 'cannot read the record of an unfinished
    rebuild', the rebuild it asked for too. The record is whole or unchanged: the same command reruns."""
    import os
    import signal
    import subprocess
    import sys

    from conftest import ROOT
    from test_export_kills import TORN_WRITE

    work, config, root = restored(made_three_nights)
    dump(work, "a", "2026-11-21", everyone("a", ids=range(2, 7)))  # a corrected night: p1 is not a member
    rebuild = ("--backfill", "2026-11-21:2026-11-23", "--force")
    code = TORN_WRITE + "from pipelines import nightly\nnightly.run(sys.argv[1:])\n"
    killed = subprocess.run([sys.executable, "-c", code, "--config", str(config), "--root", str(root), *rebuild],
                            cwd=ROOT, capture_output=True, timeout=300,
                            env={**os.environ, "KILL_IN_WRITE": "_rebuild.json", "KILL_IN_WRITE_NTH": "2"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    record = root / "_rebuild.json"
    assert json.loads(record.read_text()) == {"next": "2026-11-21", "through": "2026-11-23"}  # not moved on yet
    run(config, root, *rebuild)
    assert members(root, "2026-11-23") == {("a", "10", f"p{i}") for i in range(2, 9)}
    assert not record.exists() and not list(root.glob("*_rebuild.json*"))  # nor the killed write's


def deny_listing(monkeypatch, folder: str) -> None:
    """Listings of ``folder`` fail as a denied prefix does on GCS (403, past the client's retries)."""
    from apache_beam.io.filesystem import BeamIOError

    from transforms import listing

    real = listing.match  # every listing's (transforms.storage.matched)

    class Forbidden(Exception):
        code = 403

    def match(pattern, *args, **kwargs):
        if folder in pattern:
            raise BeamIOError("Match operation failed", {pattern: Forbidden("403 caller lacks storage.objects.list")})
        return real(pattern, *args, **kwargs)

    monkeypatch.setattr(listing, "match", match)


def test_a_backfill_skips_nights_without_a_delivery_and_fails_when_none_had_one(tmp_path, monkeypatch, capsys):
    """Partners delivering on weekdays only: a --backfill over a weekend stopped at Saturday (no
    segment dump matches), and a rebuild across one could never finish. A night not published where
    no data source lists a dump is skipped; one where some data source delivers, or whose listing
    fails, runs (and fails) as before; a backfill that skips every night fails (a path typo). No
    pipeline runs here: the nights that run fail at launch."""
    config, root = write_job(tmp_path, sources=("a", "b")), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-30", everyone("a"), name="audience-export.sync.gz")  # Monday: a name without a mode
    dump(tmp_path, "b", "2026-11-30", everyone("b"))
    with pytest.raises(ConfigError, match="audience-export.sync.gz"):  # reached: Saturday and Sunday skipped
        run(config, root, "--backfill", "2026-11-28:2026-11-30")
    assert nightly.main(["--config", str(config), "--root", str(root), "--backfill", "2026-11-28:2026-11-29"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == ("--backfill 2026-11-28:2026-11-29: no data source lists a dump for any of its nights, so nothing "
                    f"was imported; check data_sources.*.segments (dt=2026-11-28: '{tmp_path}/a/20261128/*' lists none)"), line
    with pytest.raises(ConfigError, match="no segment dump matches"):  # one night: as before
        run(config, root, "--date", "2026-11-28")
    assert not root.joinpath("dt=2026-11-28").exists() and not root.joinpath("dt=2026-11-29").exists()
    dump(tmp_path, "b", "2026-11-28", [f"{V[1]} 10"], mode="iter")  # one data source's delivery: the night runs
    with pytest.raises(ConfigError, match=r"data_sources\[0\]\.segments: no segment dump matches"):
        run(config, root, "--backfill", "2026-11-28:2026-11-29")
    (tmp_path / "b" / "20261128").joinpath(f"ftp_1_7_iter_{delivered('2026-11-28')}.sync.gz").unlink()
    deny_listing(monkeypatch, "/b/20261128/")  # a failed listing is no proof of no delivery
    with pytest.raises(ConfigError, match="no segment dump matches"):
        run(config, root, "--backfill", "2026-11-28:2026-11-29")


def test_a_backfill_does_not_skip_a_night_whose_delivery_did_not_finish(tmp_path):
    """Saturday's folder of b held only an upload in progress: the backfill took the night for one
    without a delivery, skipped it and built Monday on Friday, exit 0. Completed later in Saturday's
    folder, that delivery was never imported (the gap check looks only between the previous night and
    tonight). The night now runs, and fails naming the file."""
    config, root = write_job(tmp_path, sources=("a", "b")), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-27", everyone("a", ids=range(1, 5)))
    dump(tmp_path, "b", "2026-11-27", everyone("b", "20", ids=range(5, 9)))
    partial = f"ftp_1_7_iter_{delivered('2026-11-28')}.sync.gz.filepart"
    (tmp_path / "b" / "20261128").mkdir()
    (tmp_path / "b" / "20261128" / partial).write_bytes(b"partial")
    dump(tmp_path, "a", "2026-11-30", [f"{V[1]}  10"], mode="iter")
    dump(tmp_path, "b", "2026-11-30", [f"{V[5]}  20"], mode="iter")
    with pytest.raises(ConfigError, match=rf"data_sources\[1\]\.segments: no segment dump matches '.*', but "
                                          rf"{partial} is there \(a delivery that did not finish\?\)"):
        run(config, root, "--backfill", "2026-11-27:2026-11-30")
    assert (root / "dt=2026-11-27").exists() and not (root / "dt=2026-11-30").exists()
    (tmp_path / "b" / "20261128" / partial).unlink()  # the partner sent nothing that night after all
    run(config, root, "--backfill", "2026-11-28:2026-11-30")
    assert members(root, "2026-11-30") == {("a", "10", f"p{i}") for i in (2, 3, 4)} | {
        ("b", "20", f"p{i}") for i in (6, 7, 8)}


def test_a_data_source_may_deliver_nothing_for_as_many_nights_in_a_row_as_it_allows(tmp_path):
    """Partner b delivers on weekdays only, a every night: every Saturday's scheduled night failed (no
    segment dump matches), holding a depends_on_past DAG until someone came. With
    max_nights_without_delivery: 2, a weekend night carries b's audience as it is (its profiles still
    in the extract); a third night in a row, or a night with nothing published to carry, fails."""
    config, root = write_job(tmp_path, sources=("a", "b"), b={"max_nights_without_delivery": 2}), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-26", everyone("a", ids=range(1, 5)))
    with pytest.raises(ConfigError, match=r"^data source 'b': no segment dump matches .*no night published in the 2 "
                                          r"before dt=2026-11-26 read one of its dumps"):
        run(config, root, "--date", "2026-11-26")  # nothing to carry
    dump(tmp_path, "a", "2026-11-27", everyone("a", ids=range(1, 5)))
    dump(tmp_path, "b", "2026-11-27", everyone("b", "20", ids=range(5, 9)))
    run(config, root, "--date", "2026-11-27")
    b = {("b", "20", f"p{i}") for i in range(5, 9)}
    dump(tmp_path, "a", "2026-11-28", [f"{V[1]}  10"], mode="iter")  # Saturday: p1 leaves a's segment
    dump(tmp_path, "a", "2026-11-29", [f"{V[9]} 10"], mode="iter")  # Sunday: p9 joins
    results = run(config, root, "--backfill", "2026-11-28:2026-11-29")
    assert [r["status"] for r in results] == ["published", "published"]
    assert members(root, "2026-11-28") == {("a", "10", f"p{i}") for i in (2, 3, 4)} | b
    assert members(root, "2026-11-29") == {("a", "10", f"p{i}") for i in (2, 3, 4, 9)} | b
    entry = json.loads((root / "dt=2026-11-29" / "report.json").read_text())["data_sources"]["b"]
    assert (entry["received"], entry["files"], entry["previous_state"]["reconciled_carried"]) == (0, [], 4)
    dump(tmp_path, "a", "2026-11-30", [f"{V[2]}  10"], mode="iter")
    result = cli(config, root, "--date", "2026-11-30")  # Monday, and b's dump is late: a third night
    assert result.returncode == 2, result.stderr
    assert "data source 'b': no segment dump matches" in result.stderr and "Traceback" not in result.stderr
    dump(tmp_path, "b", "2026-11-30", [f"{V[5]}  20"], mode="iter")
    run(config, root, "--date", "2026-11-30")
    assert members(root, "2026-11-30") == {("a", "10", f"p{i}") for i in (3, 4, 9)} | b - {("b", "20", "p5")}


def test_a_backfill_and_a_rebuild_across_a_weekend_without_deliveries_finish(tmp_path):
    """Weekday deliveries: the backfill from Saturday to Monday skips the weekend and Monday builds
    on Friday; a rebuild from Friday moves its record past the weekend, stops at Monday when its
    dumps are gone (published: not skipped) and is finished by a backfill across the weekend."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-27", everyone("a", ids=range(1, 5)))
    dump(tmp_path, "a", "2026-11-30", [f"{V[1]}  10", f"{V[5]} 10"], mode="iter")  # p1 leaves, p5 joins
    run(config, root, "--date", "2026-11-27")
    results = run(config, root, "--backfill", "2026-11-28:2026-11-30")
    assert [r["status"] for r in results] == ["no delivery", "no delivery", "published"]
    assert results[2]["previous"] == "dt=2026-11-27" and "dt=2026-11-28: no delivery" in nightly.summary_lines(results)
    assert sorted(p.name for p in root.glob("dt=*")) == ["dt=2026-11-27", "dt=2026-11-30"]
    assert members(root, "2026-11-30") == {("a", "10", f"p{i}") for i in (2, 3, 4, 5)}
    dump(tmp_path, "a", "2026-11-27", everyone("a", ids=range(1, 4)))  # a corrected Friday: p4 is not a member
    with dumps_withheld(tmp_path / "a" / "20261130"):
        with pytest.raises(ConfigError, match="no segment dump matches"):
            run(config, root, "--backfill", "2026-11-27:2026-11-30", "--force")
        assert json.loads((root / "_rebuild.json").read_text()) == {"next": "2026-11-30", "through": "2026-11-30"}
    results = run(config, root, "--backfill", "2026-11-28:2026-11-30", "--force")
    assert [r["status"] for r in results] == ["no delivery", "no delivery", "published"]
    assert not (root / "_rebuild.json").exists()
    assert members(root, "2026-11-30") == {("a", "10", f"p{i}") for i in (2, 3, 5)}


def test_a_staged_backfill_is_refused(tmp_path, monkeypatch):
    """A template (Flex launch, --template_location) or a --dry_run stages one job: a backfill staged
    each night into it, and the job launched ran the last night only, built without the others."""
    from pipelines import launch

    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    # Only Dataflow stages, and it refuses these local paths (test_terminal.py): that check is not this test's.
    monkeypatch.setattr(launch, "_check_worker_paths", lambda *args: None)
    with pytest.raises(ConfigError, match="--backfill stages one job per night"):
        run(config, root, "--backfill", "2026-11-20:2026-11-22", "--dry_run=True", "--runner=DataflowRunner")


def test_a_missed_night_whose_listing_fails_is_no_proof_of_no_delivery(tmp_path, monkeypatch):
    """A listing that fails (a 403 on the missed night's prefix, an outage past the client's retries)
    read as "no dump": the night built on the older partition with exit 0, the missed night's changes
    missing. A failed listing cannot tell, as a path without {date}; a missing bucket lists nothing."""
    from datetime import date

    from apache_beam.io.filesystem import BeamIOError

    from transforms import listing
    from transforms.config_load import load_config
    from transforms.night_order import check_no_gap

    cfg = load_config(str(write_job(tmp_path, sources=("a", "b"))))
    d = date.fromisoformat
    real = listing.match  # every listing's (transforms.storage.matched)

    class Forbidden(Exception):
        code = 403

    class NotFound(Exception):
        code = 404

    def failing(error):
        def match(pattern, *args, **kwargs):
            if "/b/20261204/" in pattern:
                raise BeamIOError("Match operation failed", {pattern: error})
            return real(pattern, *args, **kwargs)
        return match

    monkeypatch.setattr(listing, "match", failing(NotFound("no such bucket")))
    check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"))  # nothing there: no delivery
    monkeypatch.setattr(listing, "match", failing(Forbidden("denied")))
    with pytest.raises(ConfigError, match=r"2 nights between them were not imported \(dt=2026-12-03\.\.dt=2026-12-04\) "
                       r"and data source 'b' could not be listed for dt=2026-12-04.*--allow-gap") as info:
        check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"))
    assert "denied" not in str(info.value)
    check_no_gap(cfg, d("2026-12-02"), d("2026-12-05"), allow_gap=True)


def test_a_missed_night_of_a_data_source_replaced_tonight_is_no_gap(tmp_path):
    """A data source with a full dump tonight starts from nothing: its missed nights' changes cannot
    be missing. They were counted as a gap, and the way out (--allow-gap) lifted the check for the
    other data sources too."""
    from datetime import date

    from transforms.config_load import load_config
    from transforms.night_order import check_no_gap

    cfg = load_config(str(write_job(tmp_path, sources=("a", "b"))))
    d = date.fromisoformat
    dump(tmp_path, "a", "2026-12-04", [f"{V[1]} 10"], mode="iter")
    check_no_gap(cfg, d("2026-12-03"), d("2026-12-05"), replaced=["a"])
    with pytest.raises(ConfigError, match=r"1 night between them was not imported and had dumps \(dt=2026-12-04\)"):
        check_no_gap(cfg, d("2026-12-03"), d("2026-12-05"), replaced=["b"])


def test_a_listing_that_fails_is_no_proof_that_a_source_allowed_to_skip_nights_delivered_nothing(tmp_path, monkeypatch):
    """max_nights_without_delivery read a failed listing (a 403 on tonight's prefix, an outage past the
    client's retries) as no dump: b's audience was carried and the night published, exit 0, its dump
    never read (its changes lost for good: the next night builds on this one). Refused, naming it."""
    config, root = write_job(tmp_path, sources=("a", "b"), b={"max_nights_without_delivery": 2}), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-27", everyone("a", ids=range(1, 5)))
    dump(tmp_path, "b", "2026-11-27", everyone("b", "20", ids=range(5, 9)))
    run(config, root, "--date", "2026-11-27")
    dump(tmp_path, "a", "2026-11-28", [f"{V[1]}  10"], mode="iter")
    dump(tmp_path, "b", "2026-11-28", [f"{V[5]}  20"], mode="iter")  # delivered, but the listing fails
    deny_listing(monkeypatch, "/b/20261128/")
    with pytest.raises(ConfigError, match=r"^data source 'b': its segments '.*/b/20261128/\*' could not be listed") as info:
        run(config, root, "--date", "2026-11-28")
    assert "storage.objects.list" not in str(info.value) and not (root / "dt=2026-11-28").exists()


def test_an_earlier_delivery_after_a_night_without_one_is_refused_too(tmp_path):
    """A night where b delivered nothing (max_nights_without_delivery) lists no b dump in its report,
    so the next night had nothing to compare b's dumps with: a copy of night 1's full dump, read after
    night 2's iter removed p5 from it, put p5 back, exit 0. Compared with the night that read b's last."""
    config, root = write_job(tmp_path, sources=("a", "b"), b={"max_nights_without_delivery": 2}), tmp_path / "root"
    first = f"ftp_1_7_full_{delivered('2026-11-26')}.sync.gz"
    for day in ("2026-11-26", "2026-11-27", "2026-11-28", "2026-11-29"):
        dump(tmp_path, "a", day, everyone("a", ids=range(1, 5)))
    dump(tmp_path, "b", "2026-11-26", everyone("b", "20", ids=range(5, 9)), name=first)
    dump(tmp_path, "b", "2026-11-27", [f"{V[5]}  20"], mode="iter")  # p5 leaves
    run(config, root, "--backfill", "2026-11-26:2026-11-28")  # the 28th: nothing from b
    dump(tmp_path, "b", "2026-11-29", everyone("b", "20", ids=range(5, 9)), name=first)  # night 1's, copied
    with pytest.raises(ConfigError, match=rf"^.*{first}: delivered no later than ftp_1_7_iter_"
                                          rf"{delivered('2026-11-27')}\.sync\.gz, which dt=2026-11-27 read"):
        run(config, root, "--date", "2026-11-29")
    assert not (root / "dt=2026-11-29").exists()


def destinations(tmp_path, day: str, *dumps) -> None:
    """Tonight's dumps of data source ``a``, one per ``(did, mode, lines)``: destination DID ``did``
    (MASTER_DPID 7), delivered at noon on ``day`` plus ``did`` seconds."""
    folder = tmp_path / "a" / day.replace("-", "")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for did, mode, lines in dumps:
        data = "".join(f"{line}\n" for line in lines).encode()
        (folder / f"ftp_{did}_7_{mode}_{delivered(day) + did * 1000}.sync.gz").write_bytes(gzip.compress(data, mtime=0))


def test_an_earlier_delivery_of_a_destination_silent_the_previous_night_is_refused(tmp_path):
    """The stale-delivery guard compared tonight's dumps with those the previous night read: a
    destination that delivered nothing that night (its audience unchanged) was not known, so a copy
    of its delivery of two nights before, read after the removal that followed it, put the removed
    member back, exit 0. Each night now carries forward the newest dump of every destination."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    destinations(tmp_path, "2026-11-20", (1234, "full", [f"{V[1]} 10", f"{V[2]} 10"]),
                 (1235, "full", [f"{V[4]} 20", f"{V[5]} 20"]))
    run(config, root, "--date", "2026-11-20")
    destinations(tmp_path, "2026-11-21", (1234, "iter", [f"{V[3]} 10"]), (1235, "iter", [f"{V[6]} 20"]))
    run(config, root, "--date", "2026-11-21")
    destinations(tmp_path, "2026-11-22", (1234, "iter", [f"{V[3]}  10"]), (1235, "iter", [f"{V[7]} 20"]))
    run(config, root, "--date", "2026-11-22")  # p3 leaves
    destinations(tmp_path, "2026-11-23", (1235, "iter", [f"{V[8]} 20"]))  # 1234: nothing changed
    run(config, root, "--date", "2026-11-23")
    assert ("a", "10", "p3") not in members(root, "2026-11-23")
    copy = f"ftp_1234_7_iter_{delivered('2026-11-21') + 1234000}.sync.gz"
    (tmp_path / "a" / "20261124").mkdir()
    shutil.copy(next((tmp_path / "a" / "20261121").glob("ftp_1234_*")), tmp_path / "a" / "20261124")  # night 2's
    with pytest.raises(ConfigError, match=rf"^.*{copy}: delivered no later than ftp_1234_7_iter_"
                                          rf"{delivered('2026-11-22') + 1234000}\.sync\.gz, which dt=2026-11-22 read"):
        run(config, root, "--date", "2026-11-24")
    assert not (root / "dt=2026-11-24").exists()
    earlier = json.loads((root / "dt=2026-11-23" / "report.json").read_text())["data_sources"]["a"]["earlier_deliveries"]
    assert earlier == [{"destination": [1234, 7, ""], "timestamp_ms": delivered("2026-11-22") + 1234000,
                        "path": earlier[0]["path"], "night": "dt=2026-11-22", "held": True}]


def test_a_full_night_missing_a_destination_held_since_an_earlier_night_is_refused(tmp_path):
    """A destination silent the previous night still has its members in the audience; a full dump
    of the other destination replaced the whole audience and dropped them (2 of 8 rows, under
    max_shrink), exit 0, because the previous night had read no dump of it. Refused, naming the
    night that read it; once allowed (a destination retired), later full nights no longer ask."""
    config, root = write_job(tmp_path, sources=("a",)), tmp_path / "root"
    other = [f"{V[i]} 20" for i in range(4, 10)]
    destinations(tmp_path, "2026-11-20", (1234, "full", [f"{V[1]} 10", f"{V[2]} 10"]), (1235, "full", other[:-1]))
    run(config, root, "--date", "2026-11-20")
    destinations(tmp_path, "2026-11-21", (1235, "iter", other[-1:]))  # 1234: nothing changed
    run(config, root, "--date", "2026-11-21")
    destinations(tmp_path, "2026-11-22", (1235, "full", other))
    with pytest.raises(ConfigError, match=r"data source 'a': .* destination DID 1234 \(MASTER_DPID 7\), read by "
                                          r"dt=2026-11-20, has no dump tonight"):
        run(config, root, "--date", "2026-11-22")
    run(config, root, "--date", "2026-11-22", "--allow-shrink")  # 1234 retired
    assert {segment for _, segment, _ in members(root, "2026-11-22")} == {"20"}
    destinations(tmp_path, "2026-11-23", (1235, "full", other))
    run(config, root, "--date", "2026-11-23")
    assert len(members(root, "2026-11-23")) == 6
