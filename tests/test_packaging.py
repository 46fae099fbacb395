"""Packaging for remote workers: one Beam version everywhere, and the files that ship the job.

The Dockerfile cannot be built here (no registry access); its structure is checked instead: base
image and Beam version, what it copies, the Flex Template entry point and its parameters.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from datetime import date
from pathlib import Path

import apache_beam
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements-worker.txt"
METADATA = ROOT / "flex" / "import" / "metadata.json"
TEST_ONLY = {"pytest", "pytest-xdist", "gcp-storage-emulator", "uid2-client", "facebook-business"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"requirements-worker.txt: not an exact pin: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            out.append((instruction.upper(), args.strip()))
    return out


def beam_image() -> tuple[str, str]:
    """``(python version, Beam version)`` of the Dockerfile's ``apache/beam_pythonX.Y_sdk:V`` stage."""
    froms = [args for ins, args in dockerfile_instructions() if ins == "FROM"]
    found = [re.fullmatch(r"apache/beam_python(\d+\.\d+)_sdk:(\S+)", f.split(" AS ")[0].strip()) for f in froms]
    found = [m for m in found if m]
    assert len(found) == 1, f"expected one FROM apache/beam_pythonX.Y_sdk:VERSION, got {froms}"
    return found[0].group(1), found[0].group(2)


def test_beam_version_agrees_in_pyproject_lock_and_dockerfile():
    (beam_dep,) = [Requirement(d) for d in pyproject()["project"]["dependencies"] if Requirement(d).name == "apache-beam"]
    (spec,) = list(beam_dep.specifier)
    assert spec.operator == "==" and "gcp" in beam_dep.extras
    _, image_version = beam_image()
    assert spec.version == lock_pins()["apache-beam"] == image_version == apache_beam.__version__


def test_python_version_agrees_with_the_image():
    image_python, _ = beam_image()
    assert Version(f"{image_python}.0") in Requirement(f"x{pyproject()['project']['requires-python']}").specifier
    assert image_python == f"{sys.version_info.major}.{sys.version_info.minor}"
    launcher = [args for ins, args in dockerfile_instructions() if ins == "ARG" and args.startswith("LAUNCHER_IMAGE=")]
    assert launcher and f"python{image_python.replace('.', '')}-template-launcher" in launcher[0]


def test_lock_pins_every_runtime_dependency_within_its_range_and_no_test_tool():
    pins = lock_pins()
    for dep in map(Requirement, pyproject()["project"]["dependencies"]):
        name = canonicalize_name(dep.name)
        assert name in pins, f"{dep.name} is not in requirements-worker.txt"
        assert dep.specifier.contains(pins[name], prereleases=True), f"{dep.name}=={pins[name]} is not {dep.specifier}"
    assert not TEST_ONLY & set(pins)
    assert canonicalize_name(pyproject()["project"]["name"]) not in pins  # our code ships as the package


def test_lock_generator_follows_runtime_dependencies_only():
    """scripts/lock_worker_requirements.py (which wrote the lock) pins the runtime closure of this
    venv: every declared dependency and Beam's [gcp] extra, no test tool, not the project itself.
    (Versions follow the venv it runs in; ``--check`` compares them with the committed lock.)"""
    sys.path.insert(0, str(ROOT / "scripts"))
    from lock_worker_requirements import runtime_closure

    closure = {canonicalize_name(n): v for n, v in runtime_closure().items()}
    declared = {canonicalize_name(Requirement(d).name) for d in pyproject()["project"]["dependencies"]}
    assert declared <= set(closure)
    assert {"google-cloud-secret-manager", "google-cloud-dataflow-client"} <= set(closure)  # from apache-beam[gcp]
    assert not (TEST_ONLY | {canonicalize_name(pyproject()["project"]["name"])}) & set(closure)
    assert closure["apache-beam"] == apache_beam.__version__


def test_the_tests_run_with_the_versions_the_workers_get():
    """README: requirements-worker.txt holds "the exact runtime versions the tests ran with". The venv
    scripts/test makes installs pyproject's ranges constrained by the lock (scripts/_env.sh), so a
    release on PyPI since the lock was written (google-auth 2.63.0 -> 2.63.1, regex, ...) no longer
    puts the tests on versions the workers never run; a dependency added to pyproject without a new
    lock fails here."""
    check = subprocess.run([sys.executable, str(ROOT / "scripts" / "lock_worker_requirements.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_dockerfile_copies_only_what_exists_and_installs_the_lock():
    instructions = dockerfile_instructions()
    copies = [args.split() for ins, args in instructions if ins == "COPY" and not args.startswith("--from")]
    sources = [src for args in copies for src in args[:-1]]
    assert sources and all((ROOT / src).exists() for src in sources), sources
    allowed = {line.strip().lstrip("!").rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip().startswith("!")}
    assert {s.rstrip("/") for s in sources} <= allowed  # .dockerignore is an allow-list: nothing else gets in
    assert not {"testdata", "tests", ".venv"} & allowed
    runs = " ".join(args for ins, args in instructions if ins == "RUN")
    assert "-r requirements-worker.txt" in runs and "pip check" in runs
    assert ("ENTRYPOINT", '["/opt/apache/beam/boot"]') in instructions


def test_flex_template_entry_point_exists_and_runs_the_cli(tmp_path):
    envs = dict(args.split("=", 1) for ins, args in dockerfile_instructions() if ins == "ENV")
    (workdir,) = [args for ins, args in dockerfile_instructions() if ins == "WORKDIR"]
    main = Path(envs["FLEX_TEMPLATE_PYTHON_PY_FILE"])
    assert main.is_relative_to(workdir) and (ROOT / main.relative_to(workdir)).is_file()
    assert envs.get("AUDIENCE_SYNC_JOB") == "import"
    # As the launcher runs it: a file, from another directory, with the job's flags.
    out = subprocess.run([sys.executable, str(ROOT / main.relative_to(workdir)), "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout and "--output" in out.stdout and "--run-date" in out.stdout


def test_flex_template_metadata_describes_the_job_parameters():
    meta = json.loads(METADATA.read_text())
    params = {p["name"]: p for p in meta["parameters"]}
    assert set(params) == {"config", "output", "run_date"}
    assert not params["config"].get("isOptional") and not params["output"].get("isOptional")
    assert params["run_date"].get("isOptional") is True
    examples = {"config": "gs://acme/jobs/job.yaml", "output": "gs://acme/audiences/2026-11-22", "run_date": "2026-11-22"}
    for name, p in params.items():
        assert p["label"] and p["helpText"]
        for regex in p.get("regexes", []):
            assert re.fullmatch(regex, examples[name]), (name, regex)
    assert not re.fullmatch(params["config"]["regexes"][0], "/home/me/job.yaml")  # workers cannot read a laptop


def test_flex_template_regexes_refuse_a_path_with_a_space_at_an_end_or_without_an_object():
    """The regexes (``^gs:\\/\\/[^\\n\\r]+$``) let through ``output=gs://b/audiences/2026-11-22 `` (a trailing
    space: the run published into another folder, exit 0; the job now refuses it, once the launcher VM is
    up) and ``gs://b`` (no object); a date needs a real month and day. Dataflow checks the regexes when the
    template is run. Non-space is spelled ``[^ \\t\\n\\r]``, as Google's own
    examples spell line breaks, not ``\\S``."""
    params = {p["name"]: p for p in json.loads(METADATA.read_text())["parameters"]}
    bad = {"config": ["gs://acme/jobs/job.yaml ", " gs://acme/jobs/job.yaml", "gs://acme", "gs://acme/", "gs://"],
           "output": ["gs://acme/audiences/2026-11-22 ", "gs://acme/audiences/2026-11-22\t", "gs://acme", "gs://acme/"],
           "run_date": ["2026-13-01", "2026-00-10", "2026-11-32", "2026-11-00", " 2026-11-22"]}
    for name, values in bad.items():
        (regex,) = params[name]["regexes"]
        assert [v for v in values if re.fullmatch(regex, v)] == [], (name, regex)
    for name, good in {"config": ["gs://acme-data.eu/jobs/a job.yaml"], "output": ["gs://a_b/x/2026-11-22/"],
                       "run_date": ["2026-12-31", "2026-01-01", "2024-02-29"]}.items():
        assert all(re.fullmatch(params[name]["regexes"][0], v) for v in good), name


def test_flex_template_parameters_are_flags_of_the_job():
    from pipelines.import_audience import parse_args

    known, beam_args = parse_args([f"--{name}={value}" for name, value in
                                   (("config", "gs://a/job.yaml"), ("output", "gs://a/out"), ("run_date", "2026-11-22"))])
    assert (known.config, known.output, known.run_date) == ("gs://a/job.yaml", "gs://a/out", date(2026, 11, 22))
    assert beam_args == []


def test_the_test_extra_allows_no_pytest_xdist_without_the_flags_scripts_test_passes():
    """scripts/test passes --no-loadscope-reorder, new in pytest-xdist 3.8.0: with 3.5-3.7 (allowed by a
    '>=3.5' floor, and kept by an existing venv) pytest stops at once on an unrecognized argument."""
    assert "--no-loadscope-reorder" in (ROOT / "scripts" / "test").read_text()
    xdist = next(Requirement(r) for r in pyproject()["project"]["optional-dependencies"]["test"]
                 if canonicalize_name(Requirement(r).name) == "pytest-xdist")
    assert not xdist.specifier.contains("3.7.0") and xdist.specifier.contains("3.8.0"), str(xdist.specifier)


def test_flex_template_entry_point_names_a_job_variable_that_picks_no_job(tmp_path):
    """``--env AUDIENCE_SYNC_JOB=NAME`` at the template's build: a misspelled one said only "unknown verb
    'imprt'" and the CLI's usage (13 lines), naming no variable; ``report`` (which launches no job) that
    its PATH argument was missing."""
    envs = dict(args.split("=", 1) for ins, args in dockerfile_instructions() if ins == "ENV")
    (workdir,) = [args for ins, args in dockerfile_instructions() if ins == "WORKDIR"]
    main = ROOT / Path(envs["FLEX_TEMPLATE_PYTHON_PY_FILE"]).relative_to(workdir)
    for job in ("imprt", "report", ""):
        env = {**os.environ, "AUDIENCE_SYNC_JOB": job}
        out = subprocess.run([sys.executable, str(main), "--config=gs://a/job.yaml", "--output=gs://a/out"],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.splitlines() == [
            f"flex/main.py: AUDIENCE_SYNC_JOB={job!r} is not one of import, export, nightly (set it at the "
            "template's build: gcloud dataflow flex-template build ... --env AUDIENCE_SYNC_JOB=NAME)"], out.stderr
