"""Nightly: data sources with ``max_nights_without_delivery`` (a partner silent at weekends) against
the guards that look at the night before (transforms/undelivered.py, transforms/night_guard.py)."""
from __future__ import annotations

import errno
import gzip
import json
import os
import shutil

import pytest
from made_once import MadeOnce, made_once_fixture

from conftest import delivered
from test_nightly_guards import V, dump, everyone, members, restored, run, write_job
from transforms.errors import ConfigError


def first_night(tmp_path, **b):
    """a and b deliver on 2026-11-26 (full), published; b may be silent for 2 nights."""
    config, root = write_job(tmp_path, sources=("a", "b"), b={"max_nights_without_delivery": 2, **b}), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-26", everyone("a", ids=range(1, 5)))
    dump(tmp_path, "b", "2026-11-26", everyone("b", "20", ids=range(5, 9)))
    run(config, root, "--date", "2026-11-26")
    return config, root


def two_nights(tmp_path, **b):
    """a and b deliver on 2026-11-26 (full) and 2026-11-27 (iter: p5 leaves b's segment 20); b may
    be silent for 2 nights."""
    config, root = first_night(tmp_path, **b)
    dump(tmp_path, "a", "2026-11-27", [f"{V[1]}  10"], mode="iter")
    dump(tmp_path, "b", "2026-11-27", [f"{V[5]}  20"], mode="iter")
    run(config, root, "--date", "2026-11-27")
    return config, root


def in_new_folder(nights):
    """``nights(work)`` (first_night or two_nights) in the folder ``work``, made first."""
    def make(work):
        work.mkdir()
        return nights(work)
    return make


made_first_night = made_once_fixture("first-night", in_new_folder(first_night))  # b's settings as written by default


made_two_nights = made_once_fixture("two-nights", in_new_folder(two_nights))  # b's settings as written by default


@pytest.fixture
def one_night(made_first_night):
    """first_night's ``(work, config, root)`` (:func:`restored`)."""
    return restored(made_first_night)


@pytest.fixture
def nights(made_two_nights):
    """two_nights's ``(work, config, root)`` (:func:`restored`)."""
    return restored(made_two_nights)


def test_a_rebuild_of_a_night_whose_dumps_of_a_silent_source_are_gone_is_refused(nights):
    """A night that read b's dump, republished (--force) after b's folder for it was deleted (retention),
    carried b as a night without its dump: p5, whom that dump removed, was back in segment 20, exit 0.
    The night's report says it read b's dumps: they are missing, not undelivered."""
    work, config, root = nights
    shutil.rmtree(work / "b" / "20261127")
    with pytest.raises(ConfigError, match=r"^data source 'b': no segment dump matches .*, but dt=2026-11-27 read 1 of "
                                          r"its dumps when it was published"):
        run(config, root, "--backfill", "2026-11-27:2026-11-27", "--force")
    assert ("b", "20", "p5") not in members(root, "2026-11-27")  # the published night stays


def test_the_night_after_a_silent_one_is_checked_against_the_latest_night_that_read_its_dumps(nights):
    """b silent on 2026-11-28: the guards of 2026-11-29 looked at that night only, which read none of
    b's dumps. A copy of b's 2026-11-26 full dump in its 2026-11-29 folder (a transfer re-run) was
    applied: p5, removed by 2026-11-27, was back, exit 0. A full dump lacking a destination (DID)
    2026-11-27 read dropped its members the same way."""
    work, config, root = nights
    dump(work, "a", "2026-11-28", [f"{V[2]}  10"], mode="iter")
    run(config, root, "--date", "2026-11-28")  # b silent
    dump(work, "a", "2026-11-29", [f"{V[3]}  10"], mode="iter")
    shutil.copytree(work / "b" / "20261126", work / "b" / "20261129")
    with pytest.raises(ConfigError, match=r"ftp_1_7_full_\d+\.sync\.gz: delivered no later than ftp_1_7_iter_\d+\.sync"
                                          r"\.gz, which dt=2026-11-27 read for the same data source"):
        run(config, root, "--date", "2026-11-29")
    dump(work, "b", "2026-11-29", everyone("b", "20", ids=range(6, 9)),
         name=f"ftp_2_7_full_{delivered('2026-11-29')}.sync.gz")
    with pytest.raises(ConfigError, match=r"data source 'b': .* destination DID 1 \(MASTER_DPID 7\), read by "
                                          r"dt=2026-11-27, has no dump tonight"):
        run(config, root, "--date", "2026-11-29")


@pytest.mark.parametrize("leftover", ["ftp_1_7_iter_{ms}.sync.gz.filepart", "ftp_dpm_7_{s}.info"])
def test_a_delivery_that_did_not_finish_is_not_taken_for_silence(one_night, leftover):
    """b's folder tonight holds an upload in progress, or a control file whose dumps are not there
    (a transfer that stopped part-way): no dump matched, so the night took b for silent and carried
    its audience, exit 0; the delivery, once complete in that night's folder, was never imported.
    Without the setting the night failed ('no segment dump matches'); now it fails naming the file."""
    work, config, root = one_night
    dump(work, "a", "2026-11-27", [f"{V[1]}  10"], mode="iter")
    name = leftover.format(ms=delivered("2026-11-27"), s=delivered("2026-11-27") // 1000)
    (work / "b" / "20261127").mkdir()
    (work / "b" / "20261127" / name).write_bytes(b"partial")
    (work / "b" / "20261127" / ".DS_Store").write_bytes(b"")  # hidden files are no delivery
    with pytest.raises(ConfigError, match=rf"^data source 'b': no segment dump matches '.*', but {name} is there "
                                          r"\(a delivery that did not finish\?\)"):
        run(config, root, "--date", "2026-11-27")
    assert not (root / "dt=2026-11-27").exists()
    (work / "b" / "20261127" / name).unlink()  # the partner sent nothing after all
    run(config, root, "--date", "2026-11-27")
    assert ("b", "20", "p5") in members(root, "2026-11-27")


def test_an_upload_in_progress_is_seen_under_a_glob_naming_the_dumps_suffix(tmp_path):
    """With segments '.../*.sync.gz' (a glob naming the dumps' suffix), '….sync.gz.filepart' is not
    listed: b's upload in progress was taken for silence (its audience carried, exit 0), and a backfill
    skipped the night as one without a delivery (exit 0); that delivery, once complete, was never
    imported. The glob with '*' appended lists it: both fail naming the file."""
    glob = {name: {"segments": f"{name}/{{date:%Y%m%d}}/*.sync.gz"} for name in ("a", "b")}
    config = write_job(tmp_path, sources=("a", "b"), a=glob["a"], b={**glob["b"], "max_nights_without_delivery": 2})
    root = tmp_path / "root"
    dump(tmp_path, "a", "2026-11-26", everyone("a", ids=range(1, 5)))
    dump(tmp_path, "b", "2026-11-26", everyone("b", "20", ids=range(5, 9)))
    run(config, root, "--date", "2026-11-26")
    name = f"ftp_1_7_iter_{delivered('2026-11-27')}.sync.gz.filepart"
    (tmp_path / "b" / "20261127").mkdir()
    (tmp_path / "b" / "20261127" / name).write_bytes(b"partial")
    unfinished = rf"no segment dump matches '.*', but {name} is there \(a delivery that did not finish\?\)"
    dump(tmp_path, "a", "2026-11-27", [f"{V[1]}  10"], mode="iter")
    with pytest.raises(ConfigError, match=rf"^data source 'b': {unfinished}"):
        run(config, root, "--date", "2026-11-27")
    shutil.rmtree(tmp_path / "a" / "20261127")  # no data source lists a dump: a backfill's night to skip?
    config = write_job(tmp_path, sources=("a", "b"), **glob)  # (b without the setting: preflight's message)
    dump(tmp_path, "a", "2026-11-28", [f"{V[2]}  10"], mode="iter")
    with pytest.raises(ConfigError, match=rf"data_sources\[1\]\.segments: {unfinished}"):
        run(config, root, "--backfill", "2026-11-27:2026-11-28")
    assert not (root / "dt=2026-11-27").exists() and not (root / "dt=2026-11-28").exists()


def test_segments_naming_the_nights_folder_is_not_taken_for_silence(one_night):
    """b's segments edited to 'b/{date:%Y%m%d}' (the night's folder, no '/*'): such a path matches
    nothing (a folder is no file, on gs:// as locally), so with max_nights_without_delivery b was
    taken for silent, its audience carried and its delivered dump never read, exit 0 (p5, whom it
    removes, stayed). The night fails naming the folder and how to name its files."""
    work, _, root = one_night
    config = write_job(work, sources=("a", "b"), b={"max_nights_without_delivery": 2, "segments": "b/{date:%Y%m%d}"})
    dump(work, "a", "2026-11-27", [f"{V[1]}  10"], mode="iter")
    dump(work, "b", "2026-11-27", [f"{V[5]}  20"], mode="iter")
    folder = work / "b" / "20261127"
    with pytest.raises(ConfigError, match=rf"^data source 'b': no segment dump matches '{folder}': it is a folder, not a "
                                          rf"file: name its files \('{folder}/\*'\); taken for a night without"):
        run(config, root, "--date", "2026-11-27")
    folders = {name: {"segments": f"{name}/{{date:%Y%m%d}}"} for name in ("a", "b")}  # a backfill skipped the night
    with pytest.raises(ConfigError, match="it is a folder, not a file"):  # as one without a delivery (exit 0)
        run(write_job(work, sources=("a", "b"), **folders), root, "--backfill", "2026-11-27:2026-11-27")
    assert not (root / "dt=2026-11-27").exists()


def test_a_nights_folder_that_cannot_be_read_is_not_taken_for_silence(one_night, monkeypatch):
    """b's folder tonight not readable by the run's account (permission denied; chmod 000 here, and its
    listing denied as the kernel denies it to an account that is not root): the local listing skipped
    it as empty, so b was taken for silent, its audience carried and its dump never read, exit 0 (p5,
    whom it removes, stayed). The night fails as on a denied gs:// prefix."""
    work, config, root = one_night
    dump(work, "a", "2026-11-27", [f"{V[1]}  10"], mode="iter")
    dump(work, "b", "2026-11-27", [f"{V[5]}  20"], mode="iter")
    folder = work / "b" / "20261127"
    scandir = os.scandir

    def denied(path="."):
        if path in (folder, str(folder)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    folder.chmod(0)
    try:
        monkeypatch.setattr(os, "scandir", denied)
        with pytest.raises(ConfigError, match=r"^data source 'b': its segments '.*' could not be listed tonight"):
            run(config, root, "--date", "2026-11-27")
    finally:
        folder.chmod(0o755)
    assert not (root / "dt=2026-11-27").exists()


def test_a_control_file_alone_is_seen_under_a_glob_naming_the_dumps_suffix(tmp_path):
    """With segments '.../*.sync.gz', a control file whose dumps are not there (the transfer stopped
    after it) is not listed: b was taken for silent, its audience carried, exit 0, and its delivery,
    once complete, never imported. A control file in the glob's folder listing a file the glob
    matches is seen; one listing only other files (another partner's, in a shared folder) is not b's."""
    glob = {"segments": "b/{date:%Y%m%d}/*.sync.gz", "max_nights_without_delivery": 2}
    config, root = write_job(tmp_path, sources=("a", "b"), b=glob), tmp_path / "root"
    dump(tmp_path, "a", "2026-11-26", everyone("a", ids=range(1, 5)))
    dump(tmp_path, "b", "2026-11-26", everyone("b", "20", ids=range(5, 9)))
    run(config, root, "--date", "2026-11-26")
    dump(tmp_path, "a", "2026-11-27", [f"{V[1]}  10"], mode="iter")
    (tmp_path / "b" / "20261127").mkdir()
    control = tmp_path / "b" / "20261127" / f"ftp_dpm_7_{delivered('2026-11-27') // 1000}.info"

    def promise(name: str) -> None:
        control.write_text(json.dumps({"Files": [{"FileName": name, "FileSequenceNumber": 1, "FileLineCount": 1,
                                                  "FileByteSize": 30, "md5": "0" * 32}]}))

    unfinished = rf"^data source 'b': no segment dump matches '.*', but {control.name} is there \(a delivery that did not finish\?\)"
    promise(f"ftp_1_7_iter_{delivered('2026-11-27')}.sync.gz")
    with pytest.raises(ConfigError, match=unfinished):
        run(config, root, "--date", "2026-11-27")
    control.write_text('{"Files": [{"FileName": "ftp_1_7_iter_')  # cut short: it cannot say whose it is
    with pytest.raises(ConfigError, match=unfinished):
        run(config, root, "--date", "2026-11-27")
    promise("ftp_1_99_iter_1.sync")  # not a file b's glob matches
    run(config, root, "--date", "2026-11-27")
    assert ("b", "20", "p5") in members(root, "2026-11-27")  # carried


def test_segments_edited_so_they_would_not_match_the_last_delivery_are_not_taken_for_silence(one_night):
    """b's segments edited to 'b2/{date:%Y%m%d}/*' (a typo, or a layout the partner does not use):
    it listed nothing, so b was taken for silent, its audience carried and its delivered dump (p5
    leaving 20) never read, exit 0, for as many nights as max_nights_without_delivery. Filled for
    the last night that read b's dumps, the glob does not match them: the night fails saying so,
    unless --allow-gap (a glob moved on purpose, and the partner silent tonight)."""
    work, _, root = one_night
    config = write_job(work, sources=("a", "b"), b={"max_nights_without_delivery": 2,
                                                    "segments": "b2/{date:%Y%m%d}/*"})
    dump(work, "a", "2026-11-27", [f"{V[1]}  10"], mode="iter")
    dump(work, "b", "2026-11-27", [f"{V[5]}  20"], mode="iter")
    with pytest.raises(ConfigError, match=rf"^data source 'b': no segment dump matches '{work}/b2/20261127/\*', "
                                          r"and filled for dt=2026-11-26 it would not match the dumps that night read "
                                          r"\(ftp_1_7_full_\d+\.sync\.gz\): .*--allow-gap"):
        run(config, root, "--date", "2026-11-27")
    assert not (root / "dt=2026-11-27").exists()
    run(config, root, "--date", "2026-11-27", "--allow-gap")
    assert ("b", "20", "p5") in members(root, "2026-11-27")  # carried, as asked
    shutil.rmtree(work / "b" / "20261127")  # a glob unchanged: a silent night is carried as before
    dump(work, "a", "2026-11-28", [f"{V[2]}  10"], mode="iter")
    config = write_job(work, sources=("a", "b"), b={"max_nights_without_delivery": 2})
    run(config, root, "--date", "2026-11-28")
    assert ("b", "20", "p5") in members(root, "2026-11-28")


def test_a_silent_night_after_the_job_folder_moved_is_carried(tmp_path):
    """The job's folder (config, dumps, root) moved to another disk, segments unchanged as written
    (relative to the config): b silent that night was refused 'its segments changed since (a
    typo?)', the paths the last night read being under the old folder. Its dumps, listed under the
    new one, are the same files: b is carried."""
    (tmp_path / "old").mkdir()
    two_nights(tmp_path / "old")
    shutil.move(tmp_path / "old", tmp_path / "new")
    dump(tmp_path / "new", "a", "2026-11-28", [f"{V[2]}  10"], mode="iter")
    run(tmp_path / "new" / "job.yaml", tmp_path / "new" / "root", "--date", "2026-11-28")
    assert ("b", "20", "p6") in members(tmp_path / "new" / "root", "2026-11-28")


def two_nights_as(made: MadeOnce, tmp_path, **b):
    """``(work, config, root)`` of two_nights(**b): the module's (:func:`restored`) when ``b`` writes the
    same config as b's defaults (its default segments given as written), else two nights run in
    ``tmp_path``."""
    work, config, root = restored(made)
    if write_job(tmp_path, sources=("a", "b"), b={"max_nights_without_delivery": 2, **b}).read_text() == config.read_text():
        return work, config, root
    return (tmp_path, *two_nights(tmp_path, **b))


def _published_before_a_late_dump(work, config, root, silent: bool):
    """After two_nights (in ``work``), 2026-11-28 published (b read a dump that night, or, ``silent``, was
    carried without one); returns (config, root, the path a late b dump of that night lands at, its
    folder made)."""
    dump(work, "a", "2026-11-28", [f"{V[2]}  10"], mode="iter")
    if not silent:
        dump(work, "b", "2026-11-28", [f"{V[9]} 20"], mode="iter")
    run(config, root, "--date", "2026-11-28")
    late = work / "b" / "20261128" / f"ftp_3_7_iter_{delivered('2026-11-28') + 3_600_000}.sync.gz"
    late.parent.mkdir(exist_ok=True)
    return config, root, late


def _second_nights_dumps(tmp_path) -> None:
    dump(tmp_path, "a", "2026-11-29", [f"{V[3]}  10"], mode="iter")
    dump(tmp_path, "b", "2026-11-29", [f"{V[7]}  20"], mode="iter")


@pytest.mark.parametrize("silent", [False, True], ids=["read_a_dump", "carried_without_one"])
def test_a_delivery_landing_in_a_published_nights_folder_is_not_left_unread(nights, silent):
    """b's iter dump removing p6 arrived in its 2026-11-28 folder after that night was published (a
    slow transfer; the night had read b's other dump, or, b allowed to be silent, carried b without
    one). The next night built on 2026-11-28 and never looked there again: p6 stayed in segment 20
    for good, exit 0. The night is refused naming the dump and the night; republished with it
    (--force), the next night runs."""
    work, config, root = nights
    config, root, late = _published_before_a_late_dump(work, config, root, silent)
    late.write_bytes(gzip.compress(f"{V[6]}  20\n".encode(), mtime=0))
    _second_nights_dumps(work)
    with pytest.raises(ConfigError, match=rf"^data source 'b': {late.name} is in the folder of dt=2026-11-28, which "
                                          r"did not read it"):
        run(config, root, "--date", "2026-11-29")
    assert not (root / "dt=2026-11-29").exists()
    run(config, root, "--date", "2026-11-28", "--force")
    run(config, root, "--date", "2026-11-29")
    assert {m for m in members(root, "2026-11-29") if m[0] == "b"} == {("b", "20", "p8")} | (
        set() if silent else {("b", "20", "p9")})


@pytest.mark.parametrize("silent, glob", [(False, "*"), (True, "*.sync.gz")],
                         ids=["read_a_dump-*", "carried_without_one-*.sync.gz"])  # each way once: 13 s a case
def test_an_upload_still_in_progress_in_a_published_nights_folder_is_not_left_unread(made_two_nights, tmp_path,
                                                                                   silent, glob):
    """b's late iter dump (removing p6) was still being written to its 2026-11-28 folder, after that night
    was published, when 2026-11-29 ran: the check for a dump that night did not read passed over an
    upload in progress, so 2026-11-29 built on 2026-11-28, and once the upload finished nothing read
    that folder again: p6 in segment 20 for good, exit 0. Refused naming the upload and the night (also
    under a glob naming the dumps' suffix, which does not list it)."""
    work, config, root = two_nights_as(made_two_nights, tmp_path, segments=f"b/{{date:%Y%m%d}}/{glob}")
    config, root, late = _published_before_a_late_dump(work, config, root, silent)
    uploading = late.with_name(late.name + ".filepart")
    uploading.write_bytes(gzip.compress(f"{V[6]}  20\n".encode(), mtime=0)[:10])
    _second_nights_dumps(work)
    with pytest.raises(ConfigError, match=rf"^data source 'b': {uploading.name} is in the folder of dt=2026-11-28, "
                                          r"which did not read it \(an upload in progress"):
        run(config, root, "--date", "2026-11-29")
    assert not (root / "dt=2026-11-29").exists()
    uploading.unlink()
    late.write_bytes(gzip.compress(f"{V[6]}  20\n".encode(), mtime=0))  # the upload finished
    run(config, root, "--date", "2026-11-28", "--force")
    run(config, root, "--date", "2026-11-29")
    assert ("b", "20", "p6") not in members(root, "2026-11-29")
