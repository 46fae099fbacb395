"""The import on Google Cloud Dataflow, up to the submission boundary: nothing leaves this machine.

What Beam 2.77 does, and why this needs no Google endpoint (runners/dataflow/dataflow_runner.py and
runners/dataflow/internal/apiclient.py):

* ``DataflowRunner.run_pipeline`` translates the graph to the portable proto (Runner v2), resolves the
  SDK environment (``--sdk_container_image``; the sdist built from ``--setup_file``) and builds the
  ``apiclient.Job``. With ``--dry_run=True`` it returns right there: no client, nothing staged.
* Otherwise it creates a ``DataflowApplicationClient``. With ``--no_auth`` that asks for no
  credentials (anonymous gapic clients, which open no connection before a call) and builds an
  anonymous storage client, which honours ``STORAGE_EMULATOR_HOST``. ``create_job`` uploads the
  artifacts and ``pipeline.pb`` to ``--staging_location`` (the emulator's bucket here), writes the
  job JSON to ``--template_location`` (a local file) and, since a template location is set, returns
  without calling the Dataflow API: the job is never submitted.
* ``--region`` is given, so Beam never shells out to ``gcloud`` for a default region; ``--project``
  is only a name. Other GCS access goes through tests/gcs_emulator.py's anonymous client.

Every test here runs behind a guard that refuses sockets and name lookups for anything but loopback,
and the emulator handle records any Google credential lookup (there must be none).
"""
from __future__ import annotations

import base64
import bz2
import io
import json
import os
import posixpath
import shutil
import socket
import subprocess
import sys
import tarfile
import textwrap
import zlib
from datetime import date
from pathlib import Path
from types import SimpleNamespace

import apache_beam as beam
import pytest
import yaml
from apache_beam.io.filesystems import FileSystems
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from google.protobuf.descriptor import FieldDescriptor

try:  # tests/ is on sys.path in pytest's default (prepend) import mode
    from gcs_emulator import gcs_emulator, storage_client
except ImportError:  # pragma: no cover
    from tests.gcs_emulator import gcs_emulator, storage_client

from conftest import DEMO, ROOT
from pipelines.import_audience import build_pipeline, run
from pipelines.options import pipeline_options
from transforms import listing
from transforms.config_load import load_config, parse_config

RUN_DATE = date(2026, 11, 22)
KEY_ENV, IV_ENV = "AUDIENCE_SYNC_DEMO_KEY", "AUDIENCE_SYNC_DEMO_IV"
IMAGE = "europe-docker.pkg.dev/audience-sync-test/images/audience-sync:2.77.0"
JOB_NAME = "audience-sync-import-test"
DATAFLOW_FLAGS = [
    "--runner=DataflowRunner",
    "--project=audience-sync-test",
    "--region=europe-west1",
    "--no_auth",
    f"--sdk_container_image={IMAGE}",
    f"--job_name={JOB_NAME}",
]
# Transforms a reader sees in the Dataflow UI: the import's stages, by their stable labels.
IMPORT_STEPS = {
    "Reconcile/ListDumpPatterns", "Reconcile/MatchDumpFiles", "Reconcile/SpreadDumpFiles", "Reconcile/ReadDumps",
    "Reconcile/BuildKeyFilters", "Reconcile/KeyProfiles", "Reconcile/GroupShards", "Reconcile/JoinShards",
    "WriteReconciled/WriteShards", "WriteFileAudience/WriteShards", "WriteRejected/WriteShards",
    "Publish/SumCounts", "Publish/PublishOutputs",
}
COMBINE_URNS = {
    common_urns.composites.COMBINE_PER_KEY.urn,
    common_urns.composites.COMBINE_GLOBALLY.urn,
    common_urns.combine_components.COMBINE_GROUPED_VALUES.urn,
    common_urns.combine_components.COMBINE_PER_KEY_PRECOMBINE.urn,
    common_urns.combine_components.COMBINE_PER_KEY_MERGE_ACCUMULATORS.urn,
    common_urns.combine_components.COMBINE_PER_KEY_EXTRACT_OUTPUTS.urn,
}


# ---------------------------------------------------------------------------------------------
# reading a job: every payload of the portable proto, decoded down to the pickles


def _bytes_fields(message):
    """Every ``bytes`` value anywhere in a protobuf message (nested, repeated and map fields)."""
    for field, value in message.ListFields():
        repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == FieldDescriptor.LABEL_REPEATED
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                items = value.values()
                if field.message_type.fields_by_name["value"].type != FieldDescriptor.TYPE_MESSAGE:
                    yield from (v for v in items if isinstance(v, bytes))
                    continue
            else:
                items = value if repeated else [value]
            for item in items:
                yield from _bytes_fields(item)
        elif field.type == FieldDescriptor.TYPE_BYTES:
            yield from (value if repeated else [value])


def _layers(blob: bytes, depth: int = 5):
    """``blob`` and what it decodes to: Beam stores pickled functions as base64 of base64 of a
    bz2-compressed pickle, so key material or paths inside a DoFn never show in the raw bytes."""
    layers = [blob]
    for _ in range(depth):
        current, decoded = layers[-1], None
        try:
            decoded = base64.b64decode(current, validate=True)
        except (ValueError, TypeError):
            for unpack in (bz2.decompress, zlib.decompress):
                try:
                    decoded = unpack(current)
                    break
                except (OSError, ValueError, zlib.error):
                    continue
        if not decoded or decoded == current:
            break
        layers.append(decoded)
    return layers


def job_payloads(pipeline: beam_runner_api_pb2.Pipeline) -> list[bytes]:
    """All decoded layers of all payloads of a pipeline proto, DoFn and CombineFn pickles included."""
    blobs = list(_bytes_fields(pipeline))
    for transform in pipeline.components.transforms.values():
        if transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            blobs += _bytes_fields(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload))
        elif transform.spec.urn in COMBINE_URNS:
            blobs += _bytes_fields(beam_runner_api_pb2.CombinePayload.FromString(transform.spec.payload))
    return [layer for blob in blobs for layer in _layers(blob)]


def launcher_local_references(pipeline: beam_runner_api_pb2.Pipeline, local_roots: list[Path]) -> set[str]:
    """References in the job to the launcher's own files: data paths under ``local_roots`` and
    ``file:`` key references to absolute paths (workers cannot see the launcher's disk)."""
    found = set()
    for layer in job_payloads(pipeline):
        for root in local_roots:
            if str(root).encode() in layer:
                found.add(str(root))
        if b"file:/" in layer:
            found.add("file:/...")
    return found


def secret_forms(secret: bytes) -> list[bytes]:
    return [secret, secret.hex().encode(), secret.hex().upper().encode(), base64.b64encode(secret)]


# ---------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module", autouse=True)
def no_remote_network():
    """Refuse any connection or name lookup that is not loopback, for the whole module."""
    attempts: list = []
    real_connect, real_connect_ex, real_getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo

    def local(host) -> bool:
        if isinstance(host, bytes):
            host = host.decode()
        return host is None or host in ("localhost", "::1", "") or str(host).startswith("127.")

    def connect(self, address):
        if isinstance(address, tuple) and not local(address[0]):
            attempts.append(address)
            raise ConnectionRefusedError(f"test guard: no network to {address[0]}")
        return real_connect(self, address)

    def connect_ex(self, address):
        if isinstance(address, tuple) and not local(address[0]):
            attempts.append(address)
            return 111  # ECONNREFUSED
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if not local(host):
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, f"test guard: no name lookup for {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
    try:
        yield attempts
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = real_connect, real_connect_ex, real_getaddrinfo
    assert attempts == [], f"something tried to reach the network: {attempts}"


@pytest.fixture(scope="module")
def demo_key_env():
    """The demo's AES key and IV as environment variables (what a worker would get from a secret)."""
    values = {
        KEY_ENV: (DEMO / "keys" / "demo-only-aes256.key").read_text().strip(),
        IV_ENV: (DEMO / "keys" / "demo-only-iv.hex").read_text().strip(),
    }
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    yield {k: bytes.fromhex(v) for k, v in values.items()}
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def gcs():
    with gcs_emulator() as handle:
        yield handle
        assert handle.credential_lookups == [], "something looked for Google credentials"


@pytest.fixture(scope="module")
def client(gcs):
    return storage_client()


def _dataflow_config(prefix: str) -> dict:
    """The demo job with its inputs under ``prefix`` and its keys as ``env:`` references."""
    cfg = yaml.safe_load((DEMO / "job.yaml").read_text())
    cfg["profiles"]["path"] = posixpath.join(prefix, cfg["profiles"]["path"])
    for ds in cfg["data_sources"]:
        ds["segments"] = posixpath.join(prefix, ds["segments"])
        if ds.get("encryption"):
            ds["encryption"].update(key=f"env:{KEY_ENV}", iv=f"env:{IV_ENV}")
    return cfg


@pytest.fixture(scope="module")
def gcs_config(gcs, client, demo_key_env) -> str:
    """The demo's inputs and a config on the emulator; returns the config's gs:// URI."""
    bucket = client.bucket(gcs.bucket)
    for path in [DEMO / "profiles.parquet", *sorted((DEMO / "segments").rglob("*.sync*"))]:
        bucket.blob(f"in/{path.relative_to(DEMO).as_posix()}").upload_from_filename(str(path))
    bucket.blob("in/job.yaml").upload_from_string(yaml.safe_dump(_dataflow_config(f"gs://{gcs.bucket}/in")))
    return f"gs://{gcs.bucket}/in/job.yaml"


@pytest.fixture(scope="module")
def dataflow_template(gcs, client, gcs_config, tmp_path_factory):
    """Build the import for Dataflow and write it as a classic template: artifacts and pipeline.pb go
    to the emulator's bucket, the job JSON to a local file. FileSystems calls are recorded meanwhile."""
    folder = tmp_path_factory.mktemp("dataflow")
    template_file = folder / "import-template.json"
    # Beam builds the sdist in the setup file's folder: use a copy of the project's packaging files and
    # code, so the test never writes into the working tree (and parallel runs do not collide).
    project = folder / "project"
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy2(ROOT / name, project / name)
    for package in ("pipelines", "transforms"):
        shutil.copytree(ROOT / package, project / package, ignore=shutil.ignore_patterns("__pycache__"))
    options = pipeline_options([
        *DATAFLOW_FLAGS,
        f"--temp_location=gs://{gcs.bucket}/dataflow/tmp",
        f"--staging_location=gs://{gcs.bucket}/dataflow/staging",
        f"--template_location={template_file}",
        f"--setup_file={project / 'setup.py'}",
    ])
    cfg = load_config(gcs_config)  # the launcher reads the config; nothing else until the job runs
    accessed: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("match", "open", "exists", "create", "copy", "rename", "delete", "mkdirs"):
            real = getattr(FileSystems, name)

            def spy(*args, _real=real, **kwargs):
                first = args[0] if args else None
                accessed.extend(first if isinstance(first, list) else [first])
                return _real(*args, **kwargs)

            mp.setattr(FileSystems, name, staticmethod(spy))
        real_listing = listing.match  # the project's listings (transforms.storage.matched)
        mp.setattr(listing, "match", lambda pattern, *args, **kwargs: accessed.append(pattern) or real_listing(
            pattern, *args, **kwargs))
        p = beam.Pipeline(options=options)
        build_pipeline(p, cfg, f"gs://{gcs.bucket}/out", f"gs://{gcs.bucket}/out/_incomplete-dataflowtest", RUN_DATE)
        result = p.run()
        result.wait_until_finish()
    staged = {
        blob.name.rsplit("/", 1)[1]: (blob.name, blob.download_as_bytes())
        for blob in client.list_blobs(gcs.bucket, prefix="dataflow/staging/")
    }
    return SimpleNamespace(
        result=result,
        template_text=template_file.read_text(),
        template=json.loads(template_file.read_text()),
        staged=staged,
        pipeline=beam_runner_api_pb2.Pipeline.FromString(staged["pipeline.pb"][1]),
        accessed=[str(a) for a in accessed if isinstance(a, str)],
        bucket=gcs.bucket,
    )


# ---------------------------------------------------------------------------------------------
# tests


def test_template_is_written_and_no_job_is_submitted(dataflow_template, gcs):
    t = dataflow_template
    assert not t.result.has_job  # nothing was sent to the Dataflow API
    assert t.template["name"] == JOB_NAME and t.template["type"] == "JOB_TYPE_BATCH"
    env = t.template["environment"]
    options = env["sdkPipelineOptions"]["options"]
    assert (options["runner"], options["project"], options["region"]) == (
        "DataflowRunner", "audience-sync-test", "europe-west1",
    )
    pipeline_object, _ = t.staged["pipeline.pb"]
    assert options["pipelineUrl"] == f"gs://{t.bucket}/{pipeline_object}"
    (pool,) = env["workerPools"]
    packages = {p["name"]: p["location"] for p in pool["packages"]}
    assert "workflow.tar.gz" in packages  # our code, built from --setup_file
    for name, location in packages.items():
        assert location == f"storage.googleapis.com/{t.bucket}/{t.staged[name][0]}", name
    assert {c["containerImage"] for c in pool["sdkHarnessContainerImages"]} == {IMAGE}
    assert gcs.credential_lookups == []


def test_staged_pipeline_has_the_import_steps_and_remote_artifacts(dataflow_template):
    transforms = {t.unique_name: t for t in dataflow_template.pipeline.components.transforms.values()}
    assert IMPORT_STEPS <= set(transforms), sorted(IMPORT_STEPS - set(transforms))
    assert transforms["Reconcile/GroupShards"].spec.urn == common_urns.primitives.GROUP_BY_KEY.urn
    assert transforms["Reconcile/BuildKeyFilters"].spec.urn == common_urns.composites.COMBINE_PER_KEY.urn
    environments = dataflow_template.pipeline.components.environments
    assert environments
    for env in environments.values():
        assert env.urn == common_urns.environments.DOCKER.urn
        assert beam_runner_api_pb2.DockerPayload.FromString(env.payload).container_image == IMAGE
        for dep in env.dependencies:  # every artifact the workers fetch is in the staging bucket
            assert dep.type_urn == common_urns.artifact_types.URL.urn
            url = beam_runner_api_pb2.ArtifactUrlPayload.FromString(dep.type_payload).url
            assert url.startswith(f"gs://{dataflow_template.bucket}/dataflow/staging/"), url


def test_staged_package_carries_our_code_and_nothing_else(dataflow_template):
    _, data = dataflow_template.staged["workflow.tar.gz"]
    with tarfile.open(fileobj=io.BytesIO(data)) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if m.isfile()}
        # The dependencies pip installs on the workers with the sdist (egg-info, or PKG-INFO's Requires-Dist).
        requires = "\n".join(
            sdist.extractfile(m).read().decode()
            for m in sdist.getmembers()
            if m.name.endswith(("egg-info/requires.txt", "/PKG-INFO"))
        )
    code = {p.relative_to(ROOT).as_posix() for d in ("pipelines", "transforms") for p in (ROOT / d).glob("*.py")}
    templates = {p.relative_to(ROOT).as_posix() for p in (ROOT / "transforms" / "templates").glob("*.j2")}
    assert templates and code | templates <= members, sorted((code | templates) - members)  # the workers render report.html
    assert {"setup.py", "pyproject.toml"} <= members
    assert not [m for m in members if m.startswith(("tests/", "testdata/", "scripts/")) or m.endswith((".key", ".pyc"))]
    assert "apache-beam[gcp]==2.77.0" in requires  # workers installing it keep our Beam version


def test_job_carries_no_key_material(dataflow_template, demo_key_env):
    secrets = [form for value in demo_key_env.values() for form in secret_forms(value)]
    haystacks = {"template JSON": [dataflow_template.template_text.encode()]}
    for name, (_, data) in dataflow_template.staged.items():
        haystacks[name] = _layers(data)
        if name.endswith(".tar.gz"):
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                haystacks[name] += [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]
    haystacks["pipeline.pb payloads"] = job_payloads(dataflow_template.pipeline)
    for where, layers in haystacks.items():
        for layer in layers:
            assert not any(s in layer for s in secrets), f"key material in {where}"
    # The decoding reaches inside the DoFns: the key *reference* is there (and only it).
    assert any(f"env:{KEY_ENV}".encode() in layer for layer in haystacks["pipeline.pb payloads"])


def test_job_does_not_depend_on_the_launcher_machine(dataflow_template, tmp_path_factory):
    local_roots = [DEMO, Path(str(tmp_path_factory.getbasetemp()))]
    assert launcher_local_references(dataflow_template.pipeline, local_roots) == set()
    # Building and staging read no input: inputs are read by the workers only.
    inputs = f"gs://{dataflow_template.bucket}/in/"
    assert [a for a in dataflow_template.accessed if a.startswith(inputs) and not a.endswith("job.yaml")] == []


def test_a_local_only_job_is_detected():
    """The check above is not vacuous: the demo's local config (local paths, ``file:`` keys) is
    flagged when its pipeline is built for any runner."""
    p = beam.Pipeline(options=pipeline_options([]))  # the graph does not depend on the runner
    build_pipeline(p, load_config(str(DEMO / "job.yaml")), "gs://b/out", "gs://b/out/_incomplete-x", RUN_DATE)
    assert launcher_local_references(p.to_runner_api(), [DEMO]) == {str(DEMO), "file:/..."}


class _KeyCarryingDoFn(beam.DoFn):
    """What the job must never contain: a DoFn holding key material (for the detector's own test)."""

    def __init__(self, key_hex: str):
        self._key_hex = key_hex

    def process(self, element):
        yield element


def test_key_inside_a_dofn_is_found_by_the_check(demo_key_env):
    """The key check is not vacuous: a key held by a DoFn is invisible in the proto's raw bytes
    (base64 of a bz2 pickle) and found once the payloads are decoded."""
    key = demo_key_env[KEY_ENV]
    p = beam.Pipeline(options=pipeline_options([]))
    _ = p | beam.Create([1]) | "CarriesKey" >> beam.ParDo(_KeyCarryingDoFn(key.hex()))
    proto = p.to_runner_api()
    assert not any(s in proto.SerializeToString() for s in secret_forms(key))
    assert any(s in layer for layer in job_payloads(proto) for s in secret_forms(key))


WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from apache_beam.internal import pickler
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2 as pb

    proto = pb.Pipeline.FromString(open(sys.argv[1], "rb").read())
    fns = []
    for t in proto.components.transforms.values():
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            spec = pb.ParDoPayload.FromString(t.spec.payload).do_fn
            if spec.urn == "beam:dofn:pickled_python_info:v1":
                fns.append(pickler.loads(spec.payload)[0])
        elif t.spec.urn == common_urns.composites.COMBINE_PER_KEY.urn:
            fns.append(pickler.loads(pb.CombinePayload.FromString(t.spec.payload).combine_fn.payload))
    failures = {}
    for fn in fns:  # as a worker without the key: setup() must fail, naming only the reference
        try:
            fn.setup()
        except Exception as exc:
            failures[type(fn).__name__] = f"{type(exc).__name__}: {exc}"
    os.environ.update(json.loads(sys.argv[2]))  # the worker's secret arrives
    for fn in fns:
        fn.setup()
    reader = next(fn for fn in fns if type(fn).__name__ == "ReadDumpFile")
    from apache_beam.runners.pipeline_context import PipelineContext
    context = PipelineContext(proto.components)
    print(json.dumps({
        "coders": sorted({type(context.coders.get_by_id(c)).__name__ for c in proto.components.coders}),
        "set_up": sorted({type(fn).__name__ for fn in fns}),
        "without_key": failures,
        "decryptors": {k: type(v).__name__ for k, v in reader._decryptors.items() if v is not None},
    }))
    """
)


def test_job_functions_unpickle_and_set_up_on_a_fresh_worker(dataflow_template, demo_key_env, tmp_path):
    """In a new interpreter, elsewhere on disk, with none of the launcher's state: every DoFn and
    CombineFn of the staged job unpickles; setup() fails without the worker's key and builds the
    cipher once the key is in the worker's environment."""
    (tmp_path / "pipeline.pb").write_bytes(dataflow_template.staged["pipeline.pb"][1])
    env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, IV_ENV)}
    secret_env = json.dumps({KEY_ENV: demo_key_env[KEY_ENV].hex(), IV_ENV: demo_key_env[IV_ENV].hex()})
    out = subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT, "pipeline.pb", secret_env],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"ReadDumpFile", "KeyProfiles", "JoinShard", "_WritePart", "_Publish", "BuildKeyFilter",
            "ScreenForms", "ConfirmForms", "AssembleFindings", "SampleLines"} <= set(report["set_up"])
    missing = f"KeyMaterialError: env:{KEY_ENV}: environment variable is not set"
    # the diagnosis reads the key too: it tries the key reference in the other encoding on decrypt failures
    assert report["without_key"] == {"ReadDumpFile": missing, "AssembleFindings": missing}
    assert report["decryptors"] == {"web-encrypted-emails": "CbcDecryptor"}
    # the PCollections' coder (transforms.element_sizes) travels with the job: a worker needs no registration
    assert "SizedFastPrimitivesCoder" in report["coders"] and "FastPrimitivesCoder" not in report["coders"], report["coders"]
    assert demo_key_env[KEY_ENV].hex() not in out.stdout + out.stderr


def test_a_worker_running_other_code_than_the_launcher_refuses_to_publish(monkeypatch):
    """The workers' SDK container image built from another release than the launcher's venv (the DAG's
    job venv upgraded, the image not rebuilt): a worker unpickles the launcher's DoFns into its own
    modules (cloudpickle pickles them by reference), so it ran its own code and published, exit 0, with
    _SUCCESS naming the launcher's code_version. The publish step checks the code digest it was built
    with against its worker's, in setup(), before anything is published."""
    from transforms import code_version
    from transforms.errors import ConfigError
    from transforms.publish import PublishRun, _Publish

    cfg = load_config(str(DEMO / "job.yaml"))
    publish = _Publish(PublishRun(cfg, "/nowhere/out", "/nowhere/out/_run", {}, "2026-11-22"))
    publish.setup()  # a worker of the launcher's code
    launcher = code_version.code_digest()
    worker = [(name, code + b"# another release\n" if name == "transforms/publish.py" else code)
              for name, code in code_version._modules()]
    monkeypatch.setattr(code_version, "_modules", lambda: worker)  # the worker's publish.py differs
    with pytest.raises(ConfigError, match=r"^the workers run other code than the launcher: transforms/publish\.py "
                                        rf"differs \(audience-sync code \w{{12}} here, {launcher} where the job was "
                                        r"launched\)"):
        publish.setup()


def test_a_worker_of_the_launchers_release_publishes_though_the_launchers_checkout_has_crlf_or_a_scratch_module(
        monkeypatch, tmp_path):
    """Workers of the same release as a launcher whose checkout is a Windows one (CRLF line ends) and holds a
    module no release has (an operator's scratch.py): the same code runs, nothing is refused. A module that
    differs is still refused, named."""
    from transforms import code_version
    from transforms.errors import ConfigError
    from transforms.publish import PublishRun, _Publish

    launcher = tmp_path / "checkout"
    for package in ("pipelines", "transforms"):
        (launcher / package).mkdir(parents=True)
        for module in (ROOT / package).glob("*.py"):
            (launcher / package / module.name).write_bytes(module.read_bytes().replace(b"\n", b"\r\n"))
    (launcher / "transforms" / "scratch.py").write_text("print('trying something')\n")
    cfg = load_config(str(DEMO / "job.yaml"))

    def launched():
        with monkeypatch.context() as patch:  # the launcher: its modules are the checkout's
            patch.setattr(code_version, "__file__", str(launcher / "transforms" / "code_version.py"))
            return _Publish(PublishRun(cfg, "/nowhere/out", "/nowhere/out/_run", {}, "2026-11-22"))

    launched().setup()  # a worker of this release (this tree): no refusal
    publish_py = launcher / "transforms" / "publish.py"
    publish_py.write_bytes(publish_py.read_bytes() + b"# another release\r\n")
    with pytest.raises(ConfigError, match=r"^the workers run other code than the launcher: transforms/publish\.py "
                                        r"differs \(audience-sync code \w{12} here, \w{12} where the job was launched\)"):
        launched().setup()


def test_dry_run_builds_the_job_without_network_or_credentials(monkeypatch):
    """``--dry_run=True``: the job is built (steps, options) with no emulator, no staging and no
    credential lookup at all -- e.g. to check a job in CI."""
    import google.auth
    from apache_beam.internal.gcp import auth as beam_auth

    lookups = []

    def refuse(*args, **kwargs):
        lookups.append(args)
        raise google.auth.exceptions.DefaultCredentialsError("credential lookup refused in this test")

    monkeypatch.setattr(google.auth, "default", refuse)
    monkeypatch.setattr(beam_auth, "get_service_credentials", refuse)
    cfg = parse_config(_dataflow_config("gs://audience-sync-no-such-bucket/in"))
    options = pipeline_options([
        *DATAFLOW_FLAGS, "--dry_run=True", "--temp_location=gs://audience-sync-no-such-bucket/tmp",
    ])
    p = beam.Pipeline(options=options)
    build_pipeline(p, cfg, "gs://audience-sync-no-such-bucket/out", "gs://audience-sync-no-such-bucket/out/_incomplete-x", RUN_DATE)
    result = p.run()
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    assert IMPORT_STEPS <= names
    assert json.loads(result.job.json())["name"] == JOB_NAME
    assert lookups == []


def test_cli_stages_the_job_like_a_flex_template_launch(gcs, gcs_config, tmp_path):
    template_file = tmp_path / "job_object.json"
    run([
        "--config", gcs_config, "--output", f"gs://{gcs.bucket}/flex-out", "--run-date", RUN_DATE.isoformat(),
        *DATAFLOW_FLAGS,
        f"--temp_location=gs://{gcs.bucket}/flex/tmp",
        f"--template_location={template_file}",
    ])
    assert json.loads(template_file.read_text())["name"] == JOB_NAME


@pytest.mark.parametrize("job", ["nightly", "export"])
def test_dry_run_builds_the_nightly_and_export_jobs(monkeypatch, job):
    """The other two pipelines build for Dataflow the same way (no network, no credentials)."""
    import google.auth
    from apache_beam.internal.gcp import auth as beam_auth

    def refuse(*args, **kwargs):
        raise google.auth.exceptions.DefaultCredentialsError("credential lookup refused in this test")

    monkeypatch.setattr(google.auth, "default", refuse)
    monkeypatch.setattr(beam_auth, "get_service_credentials", refuse)
    bucket = "gs://audience-sync-no-such-bucket"
    data = _dataflow_config(f"{bucket}/in")
    data["profiles"]["opt_out"] = "opt_out"
    cfg = parse_config(data)
    options = pipeline_options([*DATAFLOW_FLAGS, "--dry_run=True", f"--temp_location={bucket}/tmp"])
    p = beam.Pipeline(options=options)
    if job == "nightly":
        build_pipeline(p, cfg, f"{bucket}/root/dt=2026-11-22", f"{bucket}/root/_staging/x", RUN_DATE,
                       previous=f"{bucket}/root/dt=2026-11-21", incremental=True, manifest={"run_date": "2026-11-22"})
        expected = IMPORT_STEPS | {"Previousreconciled/ReadPrevious"}
    else:
        from pipelines.export_audience import build_pipeline as build_export
        from transforms.export_spec import export_spec
        from transforms.export_state import ExportState

        spec = export_spec(cfg, "summer", "crm-hashed-emails", RUN_DATE)
        build_export(p, cfg, spec, f"{bucket}/targets.csv", ExportState(), f"{bucket}/export",
                     f"{bucket}/export/_incomplete-x")
        expected = {"Export/BuildProfileFilter", "Export/GroupUserIdShards"}
    result = p.run()
    names = {t.unique_name for t in result.job.proto_pipeline.components.transforms.values()}
    assert expected <= names, sorted(expected - names)


def test_env_and_file_key_references_are_flagged_for_dataflow(caplog):
    from pipelines.options import warn_about_worker_keys

    cfg = load_config(str(DEMO / "job.yaml"))  # its encrypted source uses file: references
    warn_about_worker_keys(cfg, pipeline_options(["--runner=DataflowRunner"]))
    assert "data source 'web-encrypted-emails': encryption.key (file:...) is read on the Dataflow workers" in caplog.text
    assert "data source 'web-encrypted-emails': encryption.iv (file:...) is read on the Dataflow workers" in caplog.text
    caplog.clear()
    warn_about_worker_keys(cfg, pipeline_options([]))
    assert caplog.text == ""


@pytest.mark.parametrize("stage", ["dry_run", "template_location"])
def test_nightly_stages_like_the_other_jobs(gcs, gcs_config, client, tmp_path, capsys, stage):
    """``nightly --dry_run`` / ``--template_location``: the job is built (or written as a template), the
    launcher says so and exits 0; it never looks for a report that a staged job does not write."""
    from pipelines import nightly

    flags = [f"--temp_location=gs://{gcs.bucket}/nightly-{stage}/tmp"]
    flags.append("--dry_run=True" if stage == "dry_run" else f"--template_location={tmp_path / 'nightly.json'}")
    root = f"gs://{gcs.bucket}/nightly-{stage}/root"
    code = nightly.main(["--config", gcs_config, "--root", root, "--date", "2026-11-22", *DATAFLOW_FLAGS, *flags])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "dt=2026-11-22: staged" in out.out
    assert not [b.name for b in client.list_blobs(gcs.bucket, prefix=f"nightly-{stage}/root/")]
    if stage == "template_location":
        assert json.loads((tmp_path / "nightly.json").read_text())["name"] == JOB_NAME


@pytest.mark.parametrize("job", ["import", "export", "nightly"])
def test_every_job_warns_about_worker_key_references_the_same_way(gcs, gcs_config, client, caplog, job):
    import importlib

    module = importlib.import_module({"import": "pipelines.import_audience", "export": "pipelines.export_audience",
                                      "nightly": "pipelines.nightly"}[job])
    client.bucket(gcs.bucket).blob("warn/targets.csv").upload_from_string("profile_id\n1\n")
    targets = f"gs://{gcs.bucket}/warn/targets.csv"  # a local one is refused for Dataflow
    where = {
        "import": ["--output", f"gs://{gcs.bucket}/warn-import"],
        "export": ["--output", f"gs://{gcs.bucket}/warn-export", "--audience", "summer", "--targets", str(targets),
                   "--data-source", "web-encrypted-emails"],
        "nightly": ["--root", f"gs://{gcs.bucket}/warn-nightly", "--date", "2026-11-22"],
    }[job]
    flags = [*DATAFLOW_FLAGS, "--dry_run=True", f"--temp_location=gs://{gcs.bucket}/warn/tmp"]
    assert module.main(["--config", gcs_config, *where, *flags]) == 0
    for field in ("key", "iv"):
        assert (f"data source 'web-encrypted-emails': encryption.{field} (env:...) is read on the "
                "Dataflow workers") in caplog.text


def test_an_error_that_is_not_ours_is_one_line_with_its_type(gcs, gcs_config, capsys):
    """Beam's own option validation: the type and the message on one line, no 'see the log above'."""
    from pipelines import nightly

    code = nightly.main(["--config", gcs_config, "--root", f"gs://{gcs.bucket}/not-ours", "--date", "2026-11-22",
                         "--runner=DataflowRunner", "--dry_run=True"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("audience-sync: run failed: ValueError: Pipeline has validations errors: "), err
    assert "Missing required option: project" in err[-1] and "see the log" not in err[-1]
