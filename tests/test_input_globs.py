"""What a glob reaches beside the inputs it means: the files the job writes in its own output, a dump
copied or moved aside in its folder. Never read as inputs: refused before the run, naming the file."""
from __future__ import annotations

import pytest

from pipelines import export_audience, import_audience
from transforms.config import ConfigError


def crm_job(tmp_path, one: bool = False, segments: str = "d/*") -> None:
    """A plain-CRM import job in ``tmp_path``: profiles.csv (P1 c1, P2 c2; ``one``: P1 alone), one full
    dump in d/ naming them in segments 24 and 27, read by ``segments``; its config is job.yaml."""
    (tmp_path / "profiles.csv").write_text("profile_id,crm\nP1,c1\n" + ("" if one else "P2,c2\n"))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ftp_1_9_full_1795305600000.sync").write_text("c1 24\n" + ("" if one else "c2 27\n"))
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, visitor_ids: null}\n"
        f"data_sources: [{{name: crm, dpid: 9, segments: {segments}, id_type: declared, declared: plain, match_on: crm}}]\n")


def test_a_segments_glob_reaching_the_output_folder_is_refused_before_it_reads_a_report_as_a_dump(tmp_path):
    """--output the dumps' folder: the second run read report.json and report.html as dumps and failed
    '204 of 206 lines are format errors ...: wrong field_separator or columns?' (with a bigger dump,
    under max_format_error_ratio, it published the report's lines as rejected ones, exit 0)."""
    crm_job(tmp_path)
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "d")]
    assert import_audience.run(argv)["data_sources"]["crm"]["reconciled"] == 2
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    assert str(info.value) == (f"data_sources[0].segments: {tmp_path / 'd' / 'report.html'} (and 1 more) is a file this "
                               f"job writes in its output {tmp_path / 'd'}: narrow the glob or write the output elsewhere")


def test_only_the_files_a_run_writes_are_refused_locally_and_on_gcs(tmp_path):
    """A nightly ROOT's partitions and run folders, an import's outputs; an input folder that merely
    sits in the output folder (segments/ beside reconciled/) is read."""
    from transforms.preflight import own_output_problems

    root = "gs://b/root"
    paths = [f"{root}/incoming/a.sync", f"{root}/dt=2026-11-22/report.json", f"{root}/_staging/x/a.sync", "gs://b/rooted/x"]
    assert own_output_problems("f", paths, root) == [f"f: {root}/dt=2026-11-22/report.json (and 1 more) is a file this "
                                                     f"job writes in its output {root}: narrow the glob or write the "
                                                     "output elsewhere"]
    assert own_output_problems("f", [f"{root}/_incoming/a.sync"], root) == []  # the operator's folder
    (tmp_path / "segments").mkdir()
    (tmp_path / "rejected").mkdir()
    local = [str(tmp_path / "segments" / "a.sync"), str(tmp_path / "x.sync")]
    assert own_output_problems("f", local, str(tmp_path)) == []
    assert own_output_problems("f", [str(tmp_path / "rejected" / "part-0.parquet")], str(tmp_path / "segments" / ".."))


@pytest.mark.parametrize("aside", ["ftp_1_9_full_1795219200000.sync.bak", "ftp_1_9_full_1795219200000 (1).sync",
                                   "old-ftp_1_9_full_1795219200000.sync"])
def test_a_dump_moved_aside_under_another_name_is_refused_beside_named_dumps(tmp_path, aside):
    """Yesterday's full dump renamed in its folder ('.bak', a browser's ' (1)') still matched
    'd/*.sync*'; its name no longer parsed, so the two-full-deliveries guard did not see it: read
    beside today's, its user stayed in segment 999, which today's dump no longer lists, exit 0."""
    crm_job(tmp_path, segments="d/*.sync*")
    (tmp_path / "d" / aside).write_text("c1 999\n")
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")]
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    assert str(info.value).startswith(f"data_sources[0].segments: {tmp_path / 'd' / aside}: its name does not say "
                                      "which delivery it is, beside ftp_1_9_full_1795305600000.sync")
    (tmp_path / "d" / aside).unlink()  # unnamed dumps alone are read as they are
    (tmp_path / "d" / "ftp_1_9_full_1795305600000.sync").rename(tmp_path / "d" / "crm.sync")
    assert import_audience.run(argv)["data_sources"]["crm"]["reconciled"] == 2


@pytest.mark.parametrize("where", ["a file", "below a file", "the output", "an output folder"])
def test_a_key_cache_that_is_a_file_or_in_the_output_is_refused_before_the_run(tmp_path, where):
    """--key-cache a file failed once the profiles were keyed, with Beam's traceback and a bare
    'NotADirectoryError ... [while running KeyProfiles]', exit 1. In OUT/reconciled/ the publish
    removed the cache (the job owns its folders) before it was saved: every run failed exit 1 after
    publishing ('the profile-key cache could not be saved (BeamIOError)'); in OUT itself the
    profile keys lay among the outputs downstream jobs read and copy."""
    crm_job(tmp_path)
    (tmp_path / "keys").write_text("not a folder\n")
    out = tmp_path / "o"
    cache = {"a file": tmp_path / "keys", "below a file": tmp_path / "keys" / "c", "the output": out,
             "an output folder": out / "reconciled" / "c"}[where]
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(out), "--key-cache", str(cache)]
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    problem = (f"{tmp_path / 'keys'} is a file, not a folder" if "file" in where
               else f"in the output {out}: the profile keys would be published among the outputs (or removed with "
                    "a folder the job writes); keep the cache elsewhere")
    assert str(info.value) == f"--key-cache {cache}: {problem}"
    assert not out.exists()


def test_an_imports_key_cache_in_a_nightly_root_is_refused_before_the_run(tmp_path):
    """import --key-cache ROOT/_key_cache (the nightly's own cache, to reuse its keys): a night starting
    during the import deleted the import's staged keys (every run's start clears ROOT/_key_cache/_incoming),
    and the import failed after publishing ('the profile-key cache could not be saved'; from the diff
    review). Refused before the run (exit 2), naming the nightly root."""
    crm_job(tmp_path)
    root = tmp_path / "nightly"
    (root / "dt=2026-11-22").mkdir(parents=True)
    (root / "dt=2026-11-22" / "_SUCCESS").write_text("{}")
    cache = root / "_key_cache"
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o"), "--key-cache", str(cache)]
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    assert str(info.value) == (f"--key-cache {cache}: the profile-key cache of the nightly root {root}: a night "
                               "starting during this import would delete its staged keys; keep the import's cache "
                               "elsewhere")
    assert not (tmp_path / "o").exists()


def test_a_nightly_roots_key_cache_that_is_a_file_is_refused_before_the_run(tmp_path, capsys):
    """ROOT/_key_cache a file (the nightly's cache folder, under its --root): the night failed once
    the profiles were keyed, 'run failed: RuntimeError: NotADirectoryError: ... _key_cache/_incoming
    [while running ...KeyProfiles]', exit 1. Refused before anything is read or written (exit 2),
    as a --key-cache naming a file is; --no-key-cache does not use it."""
    from pipelines import nightly
    from test_nightly import V, dump, write_job

    config = write_job(tmp_path)
    dump(tmp_path, "2026-11-22", "full", [f"{V[1]} 24"])
    root = tmp_path / "root"
    root.mkdir()
    (root / "_key_cache").write_text("not a folder\n")
    argv = ["--config", str(config), "--root", str(root), "--date", "2026-11-22"]
    assert nightly.main(argv) == 2
    cache = root / "_key_cache"
    assert f"--root {cache}: {cache} is a file, not a folder" in capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["_key_cache"]
    assert nightly.run([*argv, "--no-key-cache"])[0]["status"] == "published"


def test_a_segments_glob_reaching_the_key_cache_is_refused_before_it_reads_the_cache_as_a_dump(tmp_path):
    """--key-cache the dumps' folder: the next run read MANIFEST.json and the cache's part-*.arrow as
    dumps beside the named one and was refused 'its name does not say which delivery it is ... a
    dump moved aside?' (unnamed dumps: read as dumps, NUL bytes in an Arrow file)."""
    crm_job(tmp_path)
    argv = ["--config", str(tmp_path / "job.yaml"), "--key-cache", str(tmp_path / "d")]
    assert import_audience.run([*argv, "--output", str(tmp_path / "o1")])["data_sources"]["crm"]["reconciled"] == 2
    with pytest.raises(ConfigError) as info:
        import_audience.run([*argv, "--output", str(tmp_path / "o2")])
    assert str(info.value) == (f"data_sources[0].segments: {tmp_path / 'd' / 'MANIFEST.json'} (and 1 more) is a file of "
                               f"the profile-key cache {tmp_path / 'd'}: narrow the glob or keep the cache elsewhere")


@pytest.mark.parametrize("job, flag", [("import", "--output"), ("nightly", "--root")])
def test_an_output_folder_that_is_a_file_is_refused_before_the_run(tmp_path, job, flag):
    """--output (or a nightly's --root) naming a file failed 'OUT/_lock.json: cannot create the output
    lock (File exists)', exit 1: a lock that exists, to the operator."""
    from pipelines import nightly

    crm_job(tmp_path, one=True)
    (tmp_path / "out").write_text("a file\n")
    argv = ["--config", str(tmp_path / "job.yaml"), flag, str(tmp_path / "out" / "x" if job == "nightly" else tmp_path / "out")]
    with pytest.raises(ConfigError) as info:
        (import_audience.run(argv) if job == "import" else nightly.run([*argv, "--date", "2026-11-22"]))
    assert str(info.value) == f"{flag} {argv[-1]}: {tmp_path / 'out'} is a file, not a folder"


def test_dumps_in_a_folder_or_under_a_name_holding_glob_characters_are_read_as_named(tmp_path):
    """A listed dump's path was matched again as a glob: in a folder 'd[1]' its control file was
    looked for as 'd[1]/*.[iI][nN][fF][oO]' ('[1]' a character class: folder 'd1'), found nothing,
    and a control file promising other lines went unchecked (exit 0); with split_dump_bytes, a dump
    named 'x[2].sync' failed 'listed, then gone before it was read'."""
    (tmp_path / "profiles.csv").write_text("profile_id,crm\nP1,c1\nP2,c2\n")
    folder = tmp_path / "d[1]"
    folder.mkdir()
    (folder / "ftp_1_9_full_1795305600000.sync").write_text("c1 24\nc2 27\n")
    (folder / "ftp_dpm_9_1795305600.info").write_text(
        '{"Files": [{"FileName": "ftp_1_9_full_1795305600000.sync", "FileSequenceNumber": 1, "FileLineCount": 5, '
        '"FileByteSize": 12, "md5": "d91d9adfb0b618d9fcf41e32fc860a0a"}], "Totals": {"TotalNumberFiles": 1, "TotalNumberLines": 5, "TotalByteSize": 12}}')
    (tmp_path / "x[2]").mkdir()
    (tmp_path / "x[2]" / "x[2].sync").write_text("c1 24\nc2 27\n")
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, visitor_ids: null}\n"
        "data_sources: [{name: crm, dpid: 9, segments: 'd[[]1]/*', id_type: declared, declared: plain, match_on: crm}]\n")
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")]
    with pytest.raises(Exception, match=r"line count disagrees with control file ftp_dpm_9_1795305600\.info \(2 != 5\)"):
        import_audience.run(argv)
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, visitor_ids: null}\nsplit_dump_bytes: 1\n"
        "data_sources: [{name: crm, dpid: 9, segments: 'x[[]2]/*', id_type: declared, declared: plain, match_on: crm}]\n")
    assert import_audience.run(argv)["data_sources"]["crm"]["reconciled"] == 2


@pytest.mark.parametrize("flag", ["--output", "--key-cache"])
def test_a_folder_the_job_writes_whose_name_holds_a_glob_character_is_refused(tmp_path, flag):
    """The job lists and deletes what it writes by pattern, and Beam's patterns have no escape: a
    local --output 'out [1]' failed on a bare 'BeamIOError: Delete operation failed' (its write probe
    matched as a pattern, and left behind), on gs:// the publish was left half done. Refused before
    anything is touched, naming the flag."""
    from pipelines import nightly

    crm_job(tmp_path, one=True)
    folder = tmp_path / "out [1]"
    argv = ["--config", str(tmp_path / "job.yaml"), *(["--output", str(tmp_path / "o")] if flag != "--output" else []),
            flag, str(folder)]
    with pytest.raises(ConfigError, match=rf"^{flag}: .*out \[1\] holds a glob character"):
        import_audience.run(argv)
    with pytest.raises(ConfigError, match=r"^--root: .*out \[1\] holds a glob character"):
        nightly.run(["--config", str(tmp_path / "job.yaml"), "--root", str(folder), "--date", "2026-11-22"])
    assert not folder.exists()


@pytest.mark.parametrize("dump", ["ftp_1_9_full_1795305600000.sync", "audience.sync"])
def test_a_segments_glob_reaching_the_profile_extract_is_refused(tmp_path, dump):
    """The extract kept in the dumps' folder: beside a named dump it was refused as 'a dump moved
    aside' ('its name does not say which delivery it is'); beside an unnamed one its rows were read
    as dump lines (under max_format_error_ratio, published as the dump's rejected lines, exit 0)."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "profiles.csv").write_text("profile_id,crm\nP1,c1\nP2,c2\n")
    (tmp_path / "d" / dump).write_text("c1 24\nc2 27\n")
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: d/profiles.csv, visitor_ids: null}\n"
        "data_sources: [{name: crm, dpid: 9, segments: d/*, id_type: declared, declared: plain, match_on: crm}]\n")
    with pytest.raises(ConfigError) as info:
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")])
    assert str(info.value) == (f"data_sources[0].segments: {tmp_path / 'd' / 'profiles.csv'} is an input of profiles.path, "
                               "not a dump: narrow the glob")


@pytest.mark.parametrize("glob", ["d/*", "d/*.sync"])
def test_an_upload_in_progress_beside_complete_dumps_is_refused(tmp_path, glob):
    """Split 002 of a full delivery still being written ('….sync.filepart') beside split 001: the run
    read 001 alone and published half the audience, exit 0 (a nightly full dump removed the other
    half's members). Refused naming it, under a glob naming the suffix too; a leftover beside its
    complete dump (the transfer finished) is not."""
    (tmp_path / "profiles.csv").write_text("profile_id,crm\nP1,c1\nP2,c2\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "ftp_1_9_full_1795305600000001.sync").write_text("c1 24\n")
    upload = tmp_path / "d" / "ftp_1_9_full_1795305600000002.sync.filepart"
    upload.write_text("c2 2")
    (tmp_path / "job.yaml").write_text(
        "profiles: {path: profiles.csv, visitor_ids: null}\n"
        f"data_sources: [{{name: crm, dpid: 9, segments: {glob}, id_type: declared, declared: plain, match_on: crm}}]\n")
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "out")]
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    assert str(info.value) == (f"data_sources[0].segments: {upload}: an upload in progress beside the dumps (a transfer "
                               "not finished?): read without it, the delivery would be partial; rerun once it is "
                               "complete, or remove it")
    (tmp_path / "d" / "ftp_1_9_full_1795305600000002.sync").write_text("c2 27\n")
    assert import_audience.run(argv)["data_sources"]["crm"]["reconciled"] == 2


@pytest.mark.parametrize("field", ["profiles.path", "data_sources[0].segments"])
def test_a_path_naming_a_folder_says_so(tmp_path, field):
    """profiles.path naming a Spark extract (a folder 'profiles.parquet' of part files), or segments a
    dump an archive tool extracted into a folder of its name: it matches nothing, as on gs://, and the
    run said 'no file matches' ('no segment dump matches') a name the operator saw right there. It
    says the path is a folder and how to name its files (an extract's with its extension)."""
    crm_job(tmp_path)
    folder = tmp_path / ("p.csv" if field == "profiles.path" else "d/ftp_1_9_full_1795305600000.sync.gz")
    folder.mkdir()
    (folder / "part-0.csv").write_text("profile_id,crm\nP1,c1\n")
    job = (tmp_path / "job.yaml").read_text()
    (tmp_path / "job.yaml").write_text(job.replace("path: profiles.csv", "path: p.csv") if field == "profiles.path"
                                       else job.replace("segments: d/*", "segments: d/ftp_1_9_full_1795305600000.sync.gz"))
    with pytest.raises(ConfigError) as info:
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")])
    files = f"{folder}/*.csv" if field == "profiles.path" else f"{folder}/*"  # (an extract's: not a Spark _SUCCESS)
    assert f"{field}: no " in str(info.value) and str(info.value).endswith(
        f"'{folder}': it is a folder, not a file: name its files ('{files}')"), str(info.value)


def test_a_folder_named_as_a_dump_under_a_glob_is_refused_and_other_folders_are_not_read(tmp_path):
    """'d/*' lists files, locally as on gs:// ('*' stops at '/'): an iter dump an archive tool extracted
    into a folder of its name beside the full dump was skipped, its removal never applied, exit 0. A
    sub-folder of another name (old/, where read dumps are moved) is not read and refuses nothing."""
    crm_job(tmp_path)
    (tmp_path / "d" / "old").mkdir()
    (tmp_path / "d" / "old" / "ftp_1_9_full_1795219200000.sync").write_text("c1 999\n")
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")]
    assert import_audience.run(argv)["data_sources"]["crm"]["segments"].keys() == {"24", "27"}
    folder = tmp_path / "d" / "ftp_1_9_iter_1795392000000.sync"
    folder.mkdir()
    (folder / "ftp_1_9_iter_1795392000000.sync").write_text("c1 -24\n")
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    assert str(info.value) == (f"data_sources[0].segments: {folder}: a folder named as a dump, which the glob does "
                               "not read (an archive extracted into a folder of its name?): move its dump out in its place")


def test_a_path_with_a_date_placeholder_is_refused_by_the_import_naming_the_nightly_job(tmp_path):
    """A nightly's config given to the import (or to the export): '{date:%Y%m%d}/profiles.csv' was
    looked up as written and the run said 'no file matches' that path, with the folders of every
    night right there. Only the nightly job fills {date}: the import names it."""
    crm_job(tmp_path)
    job = (tmp_path / "job.yaml").read_text()
    (tmp_path / "job.yaml").write_text(job.replace("segments: d/*", "segments: '{date:%Y%m%d}/d/*'"))
    with pytest.raises(ConfigError) as info:
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")])
    assert str(info.value) == (f"data_sources[0].segments: '{tmp_path}/{{date:%Y%m%d}}/d/*' holds a {{date}} "
                               "placeholder, which only the nightly job fills (audience-sync nightly --date "
                               "YYYY-MM-DD): give this job the path of one night")
    (tmp_path / "job.yaml").write_text(job.replace("path: profiles.csv", "path: '{date}/profiles.csv'"))
    with pytest.raises(ConfigError, match=r"^profiles.path: '.*/\{date\}/profiles.csv' holds a \{date\} placeholder"):
        export_audience.run(["--config", str(tmp_path / "job.yaml"), "--audience", "A", "--targets",
                             str(tmp_path / "profiles.csv"), "--output", str(tmp_path / "o")])


@pytest.mark.parametrize("name", ["ftp_1_9_full_1795305600000.sync", "crm.sync"])
def test_one_delivery_in_two_folders_under_one_glob_is_refused(tmp_path, name):
    """'d/*/*' reaching a delivery and its copy in another folder (an archive, a re-run transfer): it
    was read twice, 'received' 6 for 3 lines and every rejection counted twice, exit 0. A dump's name
    says its delivery (DID, DPID, timestamp): one name in two folders is one delivery; a name that does
    not parse is taken for one when its size is the same too."""
    crm_job(tmp_path, segments="'d/*/*'")
    (tmp_path / "d" / "ftp_1_9_full_1795305600000.sync").unlink()
    for folder in ("a", "b"):
        (tmp_path / "d" / folder).mkdir()
        (tmp_path / "d" / folder / name).write_text("c1 24\nc2 27\n")
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")]
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    assert str(info.value) == (f"data_sources[0].segments: {tmp_path}/d/a/{name} and {tmp_path}/d/b/{name} are one "
                               "delivery in two folders: its lines would be read twice; narrow the glob")
    if name == "crm.sync":  # another file of the same name: read both
        (tmp_path / "d" / "b" / name).write_text("c1 24\n")
        assert import_audience.run(argv)["data_sources"]["crm"]["received"] == 3


def test_a_dump_decompressed_beside_itself_is_refused(tmp_path):
    """'gunzip -k' (a dump opened to look at it) left ftp_...sync beside ftp_...sync.gz: one delivery, as
    its name says (DID, DPID, timestamp, split), read twice: 'received' 4 for 2 lines, exit 0. Refused
    naming both, as a copy in another folder is."""
    import gzip

    crm_job(tmp_path)
    plain = tmp_path / "d" / "ftp_1_9_full_1795305600000.sync"
    plain.with_name(plain.name + ".gz").write_bytes(gzip.compress(plain.read_bytes(), mtime=0))
    argv = ["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")]
    with pytest.raises(ConfigError) as info:
        import_audience.run(argv)
    assert str(info.value) == (f"data_sources[0].segments: {plain} and {plain.name}.gz are one delivery, compressed "
                               "and not (a copy decompressed beside it?): its lines would be read twice; remove one")
    plain.unlink()
    assert import_audience.run(argv)["data_sources"]["crm"]["received"] == 2


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_an_extract_file_reached_twice_by_the_glob_is_refused(tmp_path, link):
    """'x/*.csv' with a 'latest.csv' link beside the extract it points to: its profiles were read twice,
    'profiles read' doubled, exit 0 (a nightly's too, the next night's profiles.max_shrink judged against it).
    Refused naming both paths, as a dump reached twice is; the export's start-up check is the same."""
    crm_job(tmp_path)
    folder = tmp_path / "x"
    folder.mkdir()
    (tmp_path / "profiles.csv").rename(folder / "p.csv")
    if link == "symbolic":
        (folder / "latest.csv").symlink_to("p.csv")
    else:
        (folder / "latest.csv").hardlink_to(folder / "p.csv")
    job = (tmp_path / "job.yaml").read_text()
    (tmp_path / "job.yaml").write_text(job.replace("path: profiles.csv", "path: 'x/*.csv'"))
    message = (f"profiles.path: {folder / 'latest.csv'} and {folder / 'p.csv'} are one file (a link to the "
               "other): its profiles would be read twice; narrow the glob")
    with pytest.raises(ConfigError) as info:
        import_audience.run(["--config", str(tmp_path / "job.yaml"), "--output", str(tmp_path / "o")])
    assert str(info.value) == message
    with pytest.raises(ConfigError) as info:
        export_audience.run(["--config", str(tmp_path / "job.yaml"), "--audience", "A", "--targets",
                             str(folder / "p.csv"), "--output", str(tmp_path / "e")])
    assert message in str(info.value).splitlines()


@pytest.mark.parametrize("job, holds", [("import", "export"), ("export", "import"), ("nightly", "import"),
                                        ("import", "nightly")])
def test_an_output_folder_holding_another_jobs_outputs_is_refused(tmp_path, job, holds):
    """An export into an import's --output (one dated folder for both jobs) replaced the import's
    report.json with its own and left reconciled/ beside onboarding/, exit 0: the folder read as an
    export whose report has no data source. A nightly --root holding a run's outputs, or an import
    into a nightly root, mixed the two the same way (and the report verb read the root as a run)."""
    from pipelines import nightly
    from test_export import TARGETS, write_job, write_targets

    crm_job(tmp_path, one=True)
    out = tmp_path / "out"
    if holds == "nightly":
        (out / "dt=2026-11-21").mkdir(parents=True)
        (out / "dt=2026-11-21" / "_SUCCESS").write_text("{}")
    else:
        out.mkdir()
        (out / "report.json").write_text(f'{{"job": "{holds}"}}')
    argv = ["--config", str(tmp_path / "job.yaml"), "--root" if job == "nightly" else "--output", str(out)]
    with pytest.raises(ConfigError) as info:
        if job == "import":
            import_audience.run(argv)
        elif job == "nightly":
            nightly.run([*argv, "--date", "2026-11-22"])
        else:
            export_audience.run(["--config", str(write_job(tmp_path / "job")), "--output", str(out), "--audience", "A",
                                 "--targets", str(write_targets(tmp_path / "t.csv", TARGETS)), "--data-source", "hashed"])
    flag = "--root" if job == "nightly" else "--output"
    what = "a nightly root (dt=YYYY-MM-DD/ partitions)" if holds == "nightly" else f"an {holds} run's outputs (report.json)"
    assert str(info.value).startswith(f"{flag} {out}: holds {what}"), str(info.value)
    assert (out / "report.json").exists() == (holds != "nightly")
    assert sorted(p.name for p in out.iterdir()) == (["dt=2026-11-21"] if holds == "nightly" else ["report.json"])
