"""The import job end to end on gs:// paths, against a local Cloud Storage emulator.

The emulator (``gcp-storage-emulator``) is started once for the module; see ``gcs_emulator.py`` for
how Beam's GCS filesystem is pointed at it anonymously. Nothing here reaches a Google endpoint.
"""
from __future__ import annotations

import csv
import gzip
import json
import posixpath
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

try:  # tests/ is on sys.path in pytest's default (prepend) import mode
    from gcs_emulator import gcs_emulator, storage_client
except ImportError:  # e.g. --import-mode=importlib, run from the project root
    from tests.gcs_emulator import gcs_emulator, storage_client

from pipelines.launch import classify_failure
from transforms.config import ConfigError
from pipelines.import_audience import OUTPUTS, run
from transforms.report import OUTCOMES

DEMO = Path(__file__).resolve().parent.parent / "testdata" / "demo"
EXPECTED = DEMO / "expected"
BOGUS_PART = "part-99999-of-99999.parquet"

# The columns that identify a row of each output (the rejected rows also carry the dump's path,
# compared by file name since it differs between a local and a gs:// run).
KEY_COLUMNS = {
    "reconciled": ["data_source", "segment_id", "profile_id"],
    "file_audience": ["data_source", "segment_id", "channel", "address", "profile_id"],
    "rejected": ["data_source", "source_file", "line", "reason"],
}


# ---------------------------------------------------------------------------------------------
# helpers


def _demo_config(prefix: str) -> dict:
    """The demo job with absolute paths: profiles and segments under ``prefix`` (gs:// or local),
    key references as local absolute ``file:`` paths."""
    cfg = yaml.safe_load((DEMO / "job.yaml").read_text())
    cfg["profiles"]["path"] = posixpath.join(prefix, cfg["profiles"]["path"])
    for ds in cfg["data_sources"]:
        ds["segments"] = posixpath.join(prefix, ds["segments"])
        enc = ds.get("encryption") or {}
        for field in ("key", "iv", "keyring"):
            if (enc.get(field) or "").startswith("file:"):
                enc[field] = "file:" + str(DEMO / enc[field][len("file:"):])
    return cfg


def _upload_demo(bucket, prefix: str) -> str:
    """Upload the demo inputs under ``gs://BUCKET/PREFIX/`` and a gs:// job config; returns its URI."""
    inputs = [DEMO / "profiles.parquet", *sorted((DEMO / "segments").rglob("*.sync*"))]
    for path in inputs:
        bucket.blob(f"{prefix}/{path.relative_to(DEMO).as_posix()}").upload_from_filename(str(path))
    cfg = _demo_config(f"gs://{bucket.name}/{prefix}")
    bucket.blob(f"{prefix}/job.yaml").upload_from_string(yaml.safe_dump(cfg), content_type="text/yaml")
    return f"gs://{bucket.name}/{prefix}/job.yaml"


def _objects(client, bucket: str, prefix: str) -> dict[str, int]:
    """``{object name: generation}`` under ``prefix``."""
    return {b.name: b.generation for b in client.list_blobs(bucket, prefix=prefix)}


def _read_gcs_output(client, bucket: str, prefix: str, name: str) -> pa.Table:
    blobs = sorted(client.list_blobs(bucket, prefix=f"{prefix}/{name}/"), key=lambda b: b.name)
    assert blobs, f"no part files under gs://{bucket}/{prefix}/{name}/"
    tables = [pq.read_table(pa.BufferReader(b.download_as_bytes())) for b in blobs]
    for b, t in zip(blobs, tables):
        assert t.schema.equals(OUTPUTS[name]), f"{b.name}: schema {t.schema} != {OUTPUTS[name]}"
    return pa.concat_tables(tables)


def _read_local_output(folder: Path, name: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(p) for p in sorted((folder / name).glob("*.parquet"))])


def _rows(table: pa.Table, name: str) -> list[tuple]:
    columns = table.select(KEY_COLUMNS[name]).to_pydict()
    if "source_file" in columns:
        columns["source_file"] = [posixpath.basename(p) for p in columns["source_file"]]
    if "profile_id" in columns:  # the CSV writes a null profile_id (file audience) as an empty field
        columns["profile_id"] = [p or "" for p in columns["profile_id"]]
    return sorted(zip(*columns.values()))


def _expected_csv(name: str) -> list[tuple]:
    with open(EXPECTED / name, newline="") as f:
        return sorted(tuple(row.values()) for row in csv.DictReader(f))


def _incomplete(client, bucket: str) -> list[str]:
    return [b.name for b in client.list_blobs(bucket) if "_incomplete-" in b.name]


def _assert_counts_add_up(report: dict) -> None:
    for name, entry in report["data_sources"].items():
        accounted = sum(entry[k] for k in OUTCOMES)
        assert entry["received"] == accounted, f"{name}: received {entry['received']} != {accounted} accounted"
    assert report["totals"]["received"] == sum(e["received"] for e in report["data_sources"].values())


# ---------------------------------------------------------------------------------------------
# fixtures (module scope: one emulator, one upload, one local and one gs:// run)


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator() as handle:
        yield handle
        # Nothing in this module may have looked for real Google credentials.
        assert handle.credential_lookups == []


@pytest.fixture(scope="module")
def client(gcs):
    return storage_client()


@pytest.fixture(scope="module")
def gcs_config(gcs, client):
    return _upload_demo(client.bucket(gcs.bucket), "in")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The same demo run on local paths: the reference for the gs:// run."""
    out = tmp_path_factory.mktemp("local") / "out"
    report = run(["--config", str(DEMO / "job.yaml"), "--output", str(out)])
    return out, report


@pytest.fixture(scope="module")
def first_run(gcs, client, gcs_config):
    report = run(["--config", gcs_config, "--output", f"gs://{gcs.bucket}/out"])
    return report, _objects(client, gcs.bucket, "out/")


@pytest.fixture(scope="module")
def first_night(gcs, gcs_config):
    """The demo's night 2026-11-22 published under gs://BUCKET/nightly, run once for the nightly tests:
    one reruns it as it is, one with --force, one copies it as the night before the next."""
    from pipelines import nightly

    root = f"gs://{gcs.bucket}/nightly"
    return root, nightly.run(["--config", gcs_config, "--root", root, "--date", "2026-11-22"])


# ---------------------------------------------------------------------------------------------
# tests


def test_gs_run_writes_all_outputs_and_report(gcs, client, first_run):
    report, objects = first_run
    assert "out/report.json" in objects
    stored = json.loads(client.bucket(gcs.bucket).blob("out/report.json").download_as_bytes())
    assert stored == report
    _assert_counts_add_up(stored)
    for name in OUTPUTS:
        assert any(o.startswith(f"out/{name}/part-") for o in objects), f"no {name} parts"
    assert all(o in ("out/report.json", "out/report.html") or o.split("/")[1] in OUTPUTS for o in objects), sorted(objects)
    assert objects["out/report.html"] <= objects["out/report.json"]  # the page is there before the completion marker
    assert _incomplete(client, gcs.bucket) == []
    # The report names the gs:// dumps it read.
    files = [f["path"] for e in stored["data_sources"].values() for f in e["files"]]
    assert files and all(p.startswith(f"gs://{gcs.bucket}/in/segments/") for p in files)


def test_gs_counts_match_expected(first_run):
    report, _ = first_run
    expected = json.loads((EXPECTED / "counts.json").read_text())
    for name, counts in expected.items():
        entry = report["data_sources"][name]
        assert {k: entry[k] for k in counts} == counts, name


def test_gs_memberships_match_expected_and_local_run(gcs, client, first_run, local_run):
    local_out, local_report = local_run
    reconciled = _read_gcs_output(client, gcs.bucket, "out", "reconciled")
    assert _rows(reconciled, "reconciled") == _expected_csv("memberships.csv")
    file_audience = _read_gcs_output(client, gcs.bucket, "out", "file_audience")
    assert _rows(file_audience, "file_audience") == _expected_csv("file_audience.csv")
    # Every output, row for row, as the local run wrote it (rejected rows compared by dump file name).
    for name in OUTPUTS:
        gcs_rows = _rows(_read_gcs_output(client, gcs.bucket, "out", name), name)
        assert gcs_rows == _rows(_read_local_output(local_out, name), name), name
    report, _ = first_run
    strip = lambda r: {n: {k: v for k, v in e.items() if k != "files"} for n, e in r["data_sources"].items()}
    assert strip(report) == strip(local_report)
    assert report["totals"] == local_report["totals"]


def test_second_gs_run_replaces_outputs(gcs, client, gcs_config, first_run):
    _, before = first_run
    bucket = client.bucket(gcs.bucket)
    bogus = [f"out/{name}/{BOGUS_PART}" for name in OUTPUTS]
    for name in bogus:  # a stale part from an earlier run with more shards
        bucket.blob(name).upload_from_string(b"not parquet")
    report = run(["--config", gcs_config, "--output", f"gs://{gcs.bucket}/out"])
    after = _objects(client, gcs.bucket, "out/")
    assert not set(bogus) & set(after), "stale part files survived the second run"
    assert set(after) == set(before)  # the same deterministic part names, nothing else
    stale = sorted(n for n in after if after[n] == before[n])
    assert stale == [], f"objects not rewritten by the second run: {stale}"
    assert _incomplete(client, gcs.bucket) == []
    _assert_counts_add_up(report)
    reconciled = _read_gcs_output(client, gcs.bucket, "out", "reconciled")
    assert _rows(reconciled, "reconciled") == _expected_csv("memberships.csv")


def test_truncated_gzip_on_gcs_fails_naming_the_file(gcs, client, gcs_config):
    bucket = client.bucket(gcs.bucket)
    config = _upload_demo(bucket, "trunc")
    victim = "trunc/segments/visitors/ftp_1234_56789_full_1795305600000002.sync.gz"
    data = bucket.blob(victim).download_as_bytes()
    assert gzip.decompress(data)  # the original is a valid gzip
    bucket.blob(victim).upload_from_string(data[: len(data) // 2])
    with pytest.raises(Exception) as info:
        run(["--config", config, "--output", f"gs://{gcs.bucket}/trunc-out"])
    path = f"gs://{gcs.bucket}/{victim}"
    assert path in str(info.value)
    message = classify_failure(info.value)[1]  # the one line the CLI prints
    assert path in message and "truncated" in message, message
    assert _objects(client, gcs.bucket, "trunc-out/") == {}  # no report.json, no parts
    assert _incomplete(client, gcs.bucket) == []


def test_failed_gs_run_removes_its_parts_and_publishes_nothing(gcs, client, gcs_config, tmp_path, monkeypatch):
    """A run that fails at publish time (a wrong AES key: too many IDs fail to decrypt) has already
    written its parts under ``_incomplete-*`` on gs://: they must all be deleted again."""
    import pipelines.launch as job

    wrong_key = tmp_path / "wrong-aes256.key"
    wrong_key.write_text("00" * 32 + "\n")
    cfg = _demo_config(f"gs://{gcs.bucket}/in")
    for ds in cfg["data_sources"]:
        if ds.get("encryption"):
            ds["encryption"]["key"] = f"file:{wrong_key}"
    bucket = client.bucket(gcs.bucket)
    bucket.blob("badkey/job.yaml").upload_from_string(yaml.safe_dump(cfg))

    seen_before_cleanup = []
    real_remove_run_dir = job.remove_run_dir

    def watching_remove_run_dir(run_dir):
        seen_before_cleanup.extend(_incomplete(client, gcs.bucket))
        return real_remove_run_dir(run_dir)

    monkeypatch.setattr(job, "remove_run_dir", watching_remove_run_dir)
    with pytest.raises(Exception) as info:
        run(["--config", f"gs://{gcs.bucket}/badkey/job.yaml", "--output", f"gs://{gcs.bucket}/badkey-out"])
    message = classify_failure(info.value)[1]
    assert "failed to decrypt" in message and "web-encrypted-emails" in message, message
    assert any(n.startswith("badkey-out/_incomplete-") and n.endswith(".parquet") for n in seen_before_cleanup), (
        "expected the failed run to have written parts before it was cleaned up"
    )
    assert _incomplete(client, gcs.bucket) == []
    assert _objects(client, gcs.bucket, "badkey-out/") == {}


def test_nightly_on_gcs_publishes_with_success_last_and_is_idempotent(gcs, client, gcs_config, first_night):
    from pipelines import nightly

    root, first = first_night
    assert first[0]["status"] == "published"
    objects = _objects(client, gcs.bucket, "nightly/dt=2026-11-22/")
    assert "nightly/dt=2026-11-22/_SUCCESS" in objects
    manifest = json.loads(client.bucket(gcs.bucket).blob("nightly/dt=2026-11-22/_SUCCESS").download_as_bytes())
    listed = {f"nightly/dt=2026-11-22/{f['path']}" for f in manifest["files"]}
    assert listed == set(objects) - {"nightly/dt=2026-11-22/_SUCCESS"}
    # _SUCCESS is the commit point: written after every file it lists
    success_gen = objects["nightly/dt=2026-11-22/_SUCCESS"]
    assert all(gen <= success_gen for gen in objects.values())
    assert not _objects(client, gcs.bucket, "nightly/_staging/")
    assert "nightly/dt=2026-11-22/report.html" in listed
    page = client.bucket(gcs.bucket).blob("nightly/report.html")  # the root's trend page
    assert 'href="dt=2026-11-22/report.html"' in page.download_as_bytes().decode()
    again = nightly.run(["--config", gcs_config, "--root", root, "--date", "2026-11-22"])
    assert again[0]["status"] == "already published"
    assert _objects(client, gcs.bucket, "nightly/dt=2026-11-22/") == objects
    from pipelines import report as report_verb

    assert report_verb.run([root, "--output", f"{root}/again.html"])["nights"] == 1
    assert client.bucket(gcs.bucket).blob("nightly/again.html").download_as_bytes() == page.download_as_bytes()
    rows = _rows(_read_gcs_output(client, gcs.bucket, "nightly/dt=2026-11-22", "reconciled"), "reconciled")
    assert sorted(rows) == sorted(_expected_csv("memberships.csv"))


def test_nightly_on_gcs_keeps_its_key_cache_beside_the_partitions(gcs, client, gcs_config, first_night):
    """The workers read the cache from the bucket and the run publishes its parts there (the manifest
    last); a rerun of the night takes every profile's keys from it and writes the same bytes."""
    from pipelines import nightly
    from transforms.progress import TALLY

    root, _ = first_night
    cache = _objects(client, gcs.bucket, "nightly/_key_cache/")
    assert "nightly/_key_cache/MANIFEST.json" in cache and len(cache) == 2  # the manifest and one part
    assert cache["nightly/_key_cache/MANIFEST.json"] == max(cache.values())
    first = _objects(client, gcs.bucket, "nightly/dt=2026-11-22/")
    data = {name: client.bucket(gcs.bucket).blob(name).download_as_bytes() for name in first}
    TALLY.reset()
    nightly.run(["--config", gcs_config, "--root", root, "--date", "2026-11-22", "--force"])
    assert TALLY.snapshot()["profile_rows_keyed_from_cache"] == TALLY.snapshot()["profile_rows_read"] > 0
    assert {name: client.bucket(gcs.bucket).blob(name).download_as_bytes() for name in first} == data
    assert not [name for name in _objects(client, gcs.bucket, "nightly/") if "_incoming" in name]


def test_gs_output_is_locked_while_live_owned_by_the_job_and_cleaned_of_leftovers(gcs, client, gcs_config):
    """On gs://: a live run's lock (created with ifGenerationMatch=0) makes a second run fail fast;
    a stale sub-folder under reconciled/ and a killed run's _incomplete-* are gone after a run."""
    from transforms.errors import RunFailed
    from transforms.output_lock import OutputLock

    bucket, out = client.bucket(gcs.bucket), f"gs://{gcs.bucket}/owned"
    for name in ("owned/reconciled/old/part-00000-of-00001.parquet", "owned/_incomplete-0123456789ab/reconciled/x.parquet",
                 "owned/reconciled/console/", "owned/_incomplete-0123456789cd/"):  # folder markers: a sub-folder, a run's
        bucket.blob(name).upload_from_string(b"stale" if not name.endswith("/") else b"")
    with OutputLock(out, "another-run"):  # held by a live process (this one)
        with pytest.raises(RunFailed) as info:
            run(["--config", gcs_config, "--output", out])
        assert f"{out}/_lock.json" in str(info.value) and "another-run" in str(info.value)
        assert _objects(client, gcs.bucket, "owned/reconciled/old/")  # nothing touched
    run(["--config", gcs_config, "--output", out])
    objects = _objects(client, gcs.bucket, "owned/")
    assert not [o for o in objects if "/old/" in o or "/console/" in o or "_incomplete-" in o or o.endswith("_lock.json")], sorted(objects)
    assert _rows(_read_gcs_output(client, gcs.bucket, "owned", "reconciled"), "reconciled") == _expected_csv("memberships.csv")


def test_a_lock_create_the_client_retried_is_the_runs_own(gcs, client, monkeypatch):
    """google-cloud-storage retries an upload after a dropped connection (DEFAULT_RETRY, if_generation_match
    set or not): when the first attempt created the lock, the retry gets 412 and the run was refused by its
    own lock ('... is in use by run <its own id>'), the lock left behind (a retry on another host refused
    for 24 h). The fault is injected at the HTTP boundary: the server creates the lock, the answer is lost."""
    import requests

    from transforms.output_lock import OutputLock

    real, dropped = requests.Session.request, []

    def answer_lost(self, method, url, *args, **kwargs):
        response = real(self, method, url, *args, **kwargs)
        if method == "POST" and "uploadType=multipart" in url and not dropped:
            dropped.append(response.status_code)
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return response

    monkeypatch.setattr(requests.Session, "request", answer_lost)
    with OutputLock(f"gs://{gcs.bucket}/retried-lock", "import_audience") as lock:
        assert dropped == [200]  # the first create reached the server
        assert json.loads(client.bucket(gcs.bucket).blob("retried-lock/_lock.json").download_as_bytes())["run_id"] == lock.holder.run_id
    assert not _objects(client, gcs.bucket, "retried-lock/")  # released


def test_a_lock_create_the_client_gave_up_on_is_not_left_behind(gcs, client, monkeypatch):
    """The client gives up on a lock create (every retry lost its answer: a reset, a 503) whose first
    attempt created the object: the run failed 'cannot create the output lock' and left its own lock,
    which refused every other run for 24 h (another host). A create that raised is looked for: the
    lock holding this run's own id is its own, taken as with the 412 of a retry. Fault injected at
    the HTTP boundary: the server creates the lock, every answer is lost."""
    import requests
    from google.cloud.storage.retry import DEFAULT_RETRY

    from transforms.output_lock import OutputLock

    real, answers = requests.Session.request, []

    def answers_lost(self, method, url, *args, **kwargs):
        response = real(self, method, url, *args, **kwargs)
        if method == "POST" and "uploadType=multipart" in url:
            answers.append(response.status_code)
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return response

    for name, value in (("_initial", 0.01), ("_maximum", 0.02), ("_timeout", 0.5), ("_deadline", 0.5)):
        monkeypatch.setattr(DEFAULT_RETRY, name, value)  # the client gives up in half a second
    monkeypatch.setattr(requests.Session, "request", answers_lost)
    with OutputLock(f"gs://{gcs.bucket}/given-up-lock", "import_audience") as lock:
        assert answers[0] == 200 and set(answers[1:]) == {412}  # created, then every retry refused
        held = client.bucket(gcs.bucket).blob("given-up-lock/_lock.json").download_as_bytes()
        assert json.loads(held)["run_id"] == lock.holder.run_id
    monkeypatch.undo()
    assert not _objects(client, gcs.bucket, "given-up-lock/")  # released


def test_nightly_on_gcs_reads_the_previous_parts_by_shard(gcs, client, first_night, monkeypatch):
    """A night that carries a data source's previous rows (its dumps configured ``iter``): each
    writer reads its bucket's previous part from the bucket itself; the partition and the counts are
    those of the run that reads the previous state whole."""
    from pipelines import nightly
    import pipelines.import_audience as import_audience

    bucket = client.bucket(gcs.bucket)
    cfg = yaml.safe_load(bucket.blob("in/job.yaml").download_as_bytes())
    cfg["data_sources"][0]["sync_mode"] = "iter"  # its previous rows are carried over: the night merges
    for ds in cfg["data_sources"]:  # night 2's deliveries: the same lines, delivered a day later under in/night2/
        ds["segments"] = ds["segments"].replace("/in/segments/", "/in/night2/")
    for blob in client.list_blobs(gcs.bucket, prefix="in/segments/"):
        assert "_1795305600000" in blob.name, blob.name
        later = blob.name.replace("in/segments/", "in/night2/", 1).replace("_1795305600000", "_1795392000000")
        bucket.copy_blob(blob, bucket, later)
    bucket.blob("in/job-iter.yaml").upload_from_string(yaml.safe_dump(cfg), content_type="text/yaml")
    for blob in client.list_blobs(gcs.bucket, prefix="nightly/"):  # the same night 1 for both
        for name in ("whole", "by-shard"):
            bucket.copy_blob(blob, bucket, f"{name}/" + blob.name.split("/", 1)[1])
    results = {}
    for name, by_shard in (("whole", False), ("by-shard", True)):
        root = f"gs://{gcs.bucket}/{name}"
        with monkeypatch.context() as m:
            if by_shard:
                m.setattr(import_audience, "PreviousState", None)  # never read whole
            else:
                m.setattr(nightly, "previous_parts", lambda *args: {})
            report = nightly.run(["--config", f"gs://{gcs.bucket}/in/job-iter.yaml", "--root", root,
                                  "--date", "2026-11-23"])[0]["report"]
        parts = {b.name.split("/", 1)[1]: b.download_as_bytes() for b in client.list_blobs(gcs.bucket, prefix=f"{name}/dt=2026-11-23/")
                 if b.name.endswith(".parquet")}
        results[name] = (parts, report["data_sources"])
    assert results["by-shard"] == results["whole"]
    assert report["data_sources"][cfg["data_sources"][0]["name"]]["previous_state"]["reconciled_carried"] > 0


def test_gs_export_state_is_locked_per_audience_while_live(gcs, client, gcs_config, tmp_path):
    """Two exports of one audience into two outputs: the state folder is the audience's, not the
    output's; the second run is refused (exit 1, as by a held output lock) naming the audience before it reads the state, and
    the lock (created with ifGenerationMatch=0 as the output lock's) is released after a run."""
    from pipelines import export_audience
    from transforms.output_lock import LockHeld, OutputLock

    state, out = f"gs://{gcs.bucket}/export-state", f"gs://{gcs.bucket}/export-b"
    targets = tmp_path / "targets.csv"
    targets.write_text("profile_id\nP00000000\nP00000001\n")
    argv = ["--config", gcs_config, "--audience", "A", "--data-source", "crm-plain", "--segment-id", "5",
            "--targets", str(targets), "--output", out, "--state", state]
    with OutputLock(f"{state}/crm-plain/A", "export_audience"):  # another export of A, into another output
        with pytest.raises(LockHeld, match="audience 'A' of data source 'crm-plain' is being exported by another "
                                              f"run .*{state}/crm-plain/A/_lock.json"):
            export_audience.run(argv)
    assert not _objects(client, gcs.bucket, "export-b/")
    assert export_audience.run(argv)["state_version"] == 1
    assert not [o for o in _objects(client, gcs.bucket, "export-state/") if o.endswith("_lock.json")]


def test_gs_overwrite_records_the_users_it_takes_out_of_another_audience(gcs, client, tmp_path, monkeypatch):
    """The export state on gs://: A's .overwrite takes p1 (opted out) out of B on the platform, and
    writes B's next version without it; stopped after its publish, B's version waits as _PENDING
    beside A's (B's next export is refused naming the overwrite), and A's retry commits both."""
    import transforms.export
    from test_export_removals import export, write_job, write_profiles, write_targets

    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2])
    state, out = f"gs://{gcs.bucket}/strip-state", f"gs://{gcs.bucket}/strip"
    a = ("--segment-id", 7, "--state", state, "--mode", "overwrite", "--allow-shrink")
    every = write_targets(tmp_path / "t.csv", [0, 1, 2])
    export(job, every, f"{out}/b1", "--segment-id", 22, "--state", state, audience="B", run_date="2026-11-01")
    export(job, every, f"{out}/a1", *a, run_date="2026-11-01")
    write_profiles(job.parent, [0, 1, 2], {1: True})
    commit = transforms.export.commit_state

    def stopped(run_state, manifest, name="_SUCCESS"):
        if name == "_SUCCESS":
            raise OSError("stopped before the state's commit")
        commit(run_state, manifest, name)

    with monkeypatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", stopped)
        with pytest.raises(OSError):
            export(job, every, f"{out}/a2", *a, run_date="2026-11-02")
    with pytest.raises(ConfigError, match="version 2 of audience 'B' records the users the overwrite of audience 'A'"):
        export(job, every, f"{out}/b2", "--segment-id", 22, "--state", state, audience="B", run_date="2026-11-03")
    retry = export(job, every, f"{out}/a2", *a, run_date="2026-11-02")
    assert [(o["audience"], o["version"], o["pairs"], o["pairs_removed"]) for o in retry["state_others"]] == [
        ("B", 2, 2, 1)]
    names = _objects(client, gcs.bucket, "strip-state/crm/B/")
    assert "strip-state/crm/B/v-000002/_SUCCESS" in names and not [n for n in names if n.endswith("_PENDING")]


def test_a_failed_retry_keeps_the_pending_of_the_version_it_repeats_under_a_folder_marker(gcs, client, tmp_path,
                                                                                          monkeypatch):
    """A run published its files and stopped before its commit (``v-000002/_PENDING``); the version's
    folder has a marker object (``v-000002/``: a console's 'create folder', gcsfuse). Its retry cleared
    the version around the ``_PENDING``, but deleting the marker deletes every object under it: the
    ``_PENDING`` went too, and when the retry then failed before its publish, the next export, computed
    against v-000001, was not refused (exit 0) and never removed what the stopped run's files added."""
    import transforms.export
    from test_export_removals import NEXT_DATE, SID, export, write_job, write_profiles, write_targets
    from test_export_sequences import stopped_before_commit

    job = write_job(tmp_path / "job")
    write_profiles(job.parent, [0, 1, 2, 3])
    state, out = f"gs://{gcs.bucket}/marker-state", f"gs://{gcs.bucket}/marker-out"
    flags = ("--segment-id", SID, "--state", state, "--allow-shrink")
    export(job, write_targets(tmp_path / "t1.csv", [0, 1]), f"{out}/o1", *flags)
    targets = write_targets(tmp_path / "t2.csv", [0, 2, 3])
    with monkeypatch.context() as patch:
        patch.setattr(transforms.export, "commit_state", stopped_before_commit(transforms.export.commit_state))
        with pytest.raises(OSError):
            export(job, targets, f"{out}/o2", *flags, run_date=NEXT_DATE)
    client.bucket(gcs.bucket).blob("marker-state/crm/A/v-000002/").upload_from_string(b"")
    with monkeypatch.context() as patch:  # the retry fails before its publish (a lost connection)
        patch.setattr(transforms.export, "commit_state", lambda *args, **kwargs: (_ for _ in ()).throw(OSError("lost")))
        with pytest.raises(OSError):
            export(job, targets, f"{out}/o2", *flags, run_date=NEXT_DATE)
    assert "marker-state/crm/A/v-000002/_PENDING" in _objects(client, gcs.bucket, "marker-state/")
    with pytest.raises(ConfigError, match="version 2 .* never committed"):
        export(job, write_targets(tmp_path / "t3.csv", [0]), f"{out}/o3", *flags, run_date="2026-11-24")


def test_a_folder_marker_object_is_no_file(gcs, client):
    """A GCS console's 'create folder' leaves a 0-byte object named 'folder/', which a glob's '*'
    matched (its name after the folder is empty): an empty night folder of a data source was read as
    holding a dump named '' ('the file name does not say whether the dump is full or iter'; as an
    iter dump, an empty delivery where the local empty folder fails 'no segment dump matches'), and
    beside a dump it was refused as a copy moved aside. A local folder lists no such entry."""
    from transforms.dump_listing import dump_paths
    from transforms.night_order import delivery_listed
    from transforms.storage import glob

    bucket = client.bucket(gcs.bucket)
    bucket.blob("markers/b/20261127/").upload_from_string(b"")
    bucket.blob("markers/a/20261127/").upload_from_string(b"")
    bucket.blob("markers/a/20261127/ftp_1_7_iter_1.sync").upload_from_string(b"x\n")
    night = f"gs://{gcs.bucket}/markers/{{}}/20261127/*"
    assert glob(night.format("b")) == [] and delivery_listed(night.format("b")) == []
    assert dump_paths(night.format("a")) == [f"gs://{gcs.bucket}/markers/a/20261127/ftp_1_7_iter_1.sync"]
    assert glob(f"gs://{gcs.bucket}/markers/**") == [f"gs://{gcs.bucket}/markers/a/20261127/ftp_1_7_iter_1.sync"]


def test_a_folder_named_like_a_file_is_no_file_locally_as_on_gcs(gcs, client, tmp_path):
    """segments (or profiles.path) naming a file that is a folder (an archive tool extracted the dump
    into a folder of its name): on gs:// it matched nothing ('no segment dump matches'); on local
    files Beam's match of a path without wildcards gave the folder itself, read as a dump: the night
    failed on a bare 'RuntimeError: IsADirectoryError ...' (exit 1)."""
    from transforms.dump_listing import dump_folders, dump_paths
    from transforms.storage import folder_hint, glob

    name = "ftp_1_7_full_1795694400000.sync.gz"
    (tmp_path / "a" / name).mkdir(parents=True)
    (tmp_path / "a" / name / "inner.sync.gz").write_bytes(b"")
    client.bucket(gcs.bucket).blob(f"named/a/{name}/inner.sync.gz").upload_from_string(b"")
    for root in (str(tmp_path), f"gs://{gcs.bucket}/named"):
        assert glob(f"{root}/a/{name}") == [] and dump_paths(f"{root}/a/{name}") == [], root
        assert glob(f"{root}/a/{name}/inner.sync.gz") == [f"{root}/a/{name}/inner.sync.gz"], root
        assert folder_hint(f"{root}/a/{name}").startswith(": it is a folder, not a file"), root  # the message says so
        assert folder_hint(f"{root}/a/{name}/inner") == folder_hint(f"{root}/a/{name}/inner.sync.gz") == "", root
        assert dump_paths(f"{root}/a/*") == [] and dump_folders(f"{root}/a/*") == [f"{root}/a/{name}"], root  # preflight names it
        assert dump_folders(f"{root}/a/**") == dump_folders(f"{root}/*") == [], root  # '**' reads it; 'a' is no dump's name


def test_objects_whose_names_hold_url_characters_are_read(gcs, client):
    """The emulator's links name objects %-quoted, as GCS does: a dump named 'exp #1?%.sync' is read."""
    from transforms.dump_listing import dump_paths
    from transforms.storage import open_decompressed

    client.bucket(gcs.bucket).blob("url-names/exp #1?%.sync").upload_from_string(b"x 1\n")
    [path] = dump_paths(f"gs://{gcs.bucket}/url-names/*")
    with open_decompressed(path) as handle:
        assert handle.read() == b"x 1\n"
