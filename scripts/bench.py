"""Benchmark: `audience-sync import` / `nightly` end to end against a DuckDB baseline, in one run of this script.

    python scripts/bench.py                                    # every scenario at 1M and 10M dump lines
    python scripts/bench.py --scenarios single --sizes 1000000 # one scenario, one size
    python scripts/bench.py --scenarios nightly --sizes 1000000 --repeat 3

Scenarios (each generated with the project's generator, as many profiles as dump lines, seed 42):

* ``split``: the generator's layout, 1-2 files per data source; five data sources with equal shares
  (visitor IDs, adobe-hashed emails, uid2-hashed phones, plain CRM ids, AES-CBC encrypted emails).
* ``single``: the same data, each data source delivered as **one** file.
* ``encrypted``: one file per data source and **a third** of the lines AES-CBC encrypted emails.
* ``segments``: one file per data source, each line naming **a dozen** segments (a Poisson mean of
  12, at least 1) of its data source's **2,000**, as partners' AAM dumps do (the others: 1-3 of 2-4).
* ``many-files``: each data source's lines in **100** files (a batch the platform splits by size).
* ``extract-parts``: one file per data source and the extract in **200** Parquet parts (Spark's).
* ``nightly``: two nights of ``audience-sync nightly`` (key cache on, its default) with full dumps of
  ``--nightly-lines`` x size lines each; night 2's extract has 2% of the profiles changed (new
  values, a quarter of them new profile ids). Timed: night 1 and night 2; the baseline runs on night
  2's data; ``nightly-nocache`` is the same with ``--no-key-cache``.
* ``nightly-iter``: the same night 1, then a night 2 of ``iter`` dumps (the night's changes: 5% of
  night 1's lines, whose removed segments apply) with the 2% changed extract, as a partner sending
  daily changes delivers them; the baseline runs on night 2's data and merges with its own night 1
  (``--previous``); ``nightly-iter-nocache`` without the key cache.

Each timed run is a fresh process. Ours and the baseline (`scripts/baseline_duckdb.py`: DuckDB, 2
threads, the same rules in SQL, AES-CBC with our vectorized decryptor) alternate ``--repeat`` times
(ours, baseline, ours, baseline, ...) so that load on a shared machine hits both alike; the table
shows medians, the largest peak RSS, and CPU seconds (user + system, less sensitive to load than
wall time). The script checks that ours and the baseline give the same membership set and that our
repeated runs give byte-identical outputs. Timings are printed, never asserted; the ratio is what
to compare across machines. The table at the end is markdown, ready for the README.
"""
from __future__ import annotations

import argparse
import compileall
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from generate_data import SOURCES, config_text, generate  # noqa: E402

ENCRYPTED = "web-encrypted-emails"
NIGHTS = ("2026-11-22", "2026-11-23")
CHANGED = 0.02
ITER_LINES = 0.05  # nightly-iter: night 2's dump lines, as a share of night 1's
NIGHT2_TS_MS = 1795305600000 + 86_400_000  # night 2's delivery, a day after night 1's (generate's default)
SCENARIOS = {
    "split": {},
    "single": {"parts": 1},
    "encrypted": {"parts": 1, "shares": {name: 2.0 if name == ENCRYPTED else 1.0 for name, *_ in SOURCES}},
    "segments": {"parts": 1, "segment_pool": 2000, "segments_per_line": 12},
    "many-files": {"parts": 100},
    "extract-parts": {"parts": 1, "profile_parts": 200},
    "nightly": {},
    "nightly-nocache": {},
    "nightly-iter": {},
    "nightly-iter-nocache": {},
}


@dataclass
class Run:
    wall: float
    cpu: float  # user + system seconds of the process and its children
    rss: float  # peak RSS, GiB


@dataclass
class Result:
    scenario: str
    size: int
    lines: int
    ours: list[Run] = field(default_factory=list)
    night1: list[Run] = field(default_factory=list)
    baseline: list[Run] = field(default_factory=list)
    same_members: bool = True
    identical: bool | None = None


# Linux keeps a process's peak RSS across exec: a child forked from this (large, after it compared
# 10M memberships) process would report at least this process's size. A small Python in between
# forks the command and reports the command's own rusage.
_MEASURE = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def timed(cmd: list[str]) -> Run:
    """Run ``cmd`` in a fresh process; its wall time, CPU time and peak RSS (its own)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r", suffix=".rusage") as rusage:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _MEASURE, rusage.name, *cmd], cwd=ROOT, stdout=out, stderr=err)
        status = proc.wait()
        wall = time.perf_counter() - start
        if status:
            err.seek(0)
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
        maxrss_kib, cpu = rusage.read().split()
        return Run(wall, float(cpu), int(maxrss_kib) / 1024 / 1024)


def runner_flags(spec: str) -> list[str]:
    if spec == "default":
        return []
    runner, _, mode = spec.partition(":")
    flags = [f"--runner={runner}"]
    if mode:
        flags += [f"--direct_running_mode={mode}", f"--direct_num_workers={1 if mode == 'in_memory' else 2}"]
    return flags


def sorted_memberships(path: Path) -> pa.Table:
    table = pq.read_table(path).select(["data_source", "segment_id", "profile_id"])
    table = table.cast(pa.schema([(n, pa.string()) for n in table.column_names]))
    return table.sort_by([(n, "ascending") for n in table.column_names])


def digest_tree(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def data_tag(size: int, lines: int) -> str:
    """How the files of ``size`` profiles with ``lines`` dump lines a night are named (another line
    count, another name: generated data and baseline outputs are kept and reused by name)."""
    return f"{size}" if lines == size else f"{size}-lines-{lines}"


def make_data(work: Path, scenario: str, size: int, nightly_lines: float) -> tuple[Path, int]:
    """Generate (once, kept in ``work``) the scenario's data; returns (folder, dump lines a run reads)."""
    if scenario.startswith("nightly"):
        lines = int(size * nightly_lines)
        full = work / f"nightly-{data_tag(size, lines)}"
        changes = "-iter" in scenario  # night 2's dumps are iter: the night's changes
        folder = work / f"nightly-iter-{data_tag(size, lines)}" if changes else full
        first, second = (day.replace("-", "") for day in NIGHTS)
        if not (full / first / "job.yaml").exists():
            _generate(full / first, size, lines)
        if changes and not (folder / first).exists():  # night 1 is the full-dump pair's
            folder.mkdir(parents=True, exist_ok=True)
            (folder / first).symlink_to(full / first)
        if changes:
            lines = int(lines * ITER_LINES)
        if not any((folder / second).glob(f"segments/*/*_{NIGHT2_TS_MS}*")):  # also data of older benches
            shutil.rmtree(folder / second, ignore_errors=True)
            _generate(folder / second, size, lines, changed=CHANGED, sync_mode="iter" if changes else "full",
                      ts_ms=NIGHT2_TS_MS)
        text = config_text("'{date:%Y%m%d}/profiles.parquet'")
        text = re.sub(r"segments: segments/(\S+)", r"segments: '{date:%Y%m%d}/segments/\1'", text)
        (folder / "job.yaml").write_text(text.replace("file:keys/", f"file:{NIGHTS[0].replace('-', '')}/keys/"))
        return folder, lines
    folder = work / f"data-{scenario}-{size}"
    if not (folder / "job.yaml").exists():
        _generate(folder, size, size, **SCENARIOS[scenario])
    return folder, size


def _generate(folder: Path, profiles: int, lines: int, **kwargs) -> None:
    t = time.perf_counter()
    generate(folder, n_profiles=profiles, n_lines=lines, seed=42, **kwargs)
    print(f"generated {folder.name} in {time.perf_counter() - t:.1f}s", flush=True)


def run_scenario(work: Path, scenario: str, size: int, repeat: int, flags: list[str], nightly_lines: float) -> Result:
    data, lines = make_data(work, scenario, size, nightly_lines)
    result = Result(scenario, size, lines)
    nightly = scenario.startswith("nightly")
    base_data = data / NIGHTS[1].replace("-", "") if nightly else data
    base_flags = []
    if "-iter" in scenario:  # the baseline merges night 2's changes into its own night 1 (not timed)
        previous = work / f"baseline-night1-{data_tag(size, int(size * nightly_lines))}.parquet"
        if not previous.exists():
            timed([sys.executable, "scripts/baseline_duckdb.py", "--data", str(data / NIGHTS[0].replace("-", "")),
                   "--out", str(previous)])
        base_flags = ["--previous", str(previous)]
    outs = []
    for attempt in range(repeat):
        out = work / f"ours-{scenario}-{size}-{attempt}"
        shutil.rmtree(out, ignore_errors=True)
        if nightly:
            cmd = [sys.executable, "-m", "pipelines.cli", "nightly", "--config", str(data / "job.yaml"), "--root", str(out),
                   *(["--no-key-cache"] if scenario.endswith("-nocache") else []), *flags]
            result.night1.append(timed([*cmd, "--date", NIGHTS[0]]))
            result.ours.append(timed([*cmd, "--date", NIGHTS[1]]))
            outs.append(out / f"dt={NIGHTS[1]}")
        else:
            result.ours.append(timed([sys.executable, "-m", "pipelines.cli", "import", "--config", str(data / "job.yaml"),
                                      "--output", str(out), "--run-date", "2026-11-23", *flags]))
            outs.append(out)
        base_out = work / f"baseline-{scenario}-{data_tag(size, int(size * nightly_lines) if nightly else size)}.parquet"
        result.baseline.append(timed([sys.executable, "scripts/baseline_duckdb.py", "--data", str(base_data), "--out", str(base_out),
                                      *base_flags]))
        print(f"[{scenario} {size:,}] run {attempt + 1}: ours {result.ours[-1].wall:.1f}s"
              + (f" (night 1 {result.night1[-1].wall:.1f}s)" if nightly else "")
              + f", baseline {result.baseline[-1].wall:.1f}s, load {os.getloadavg()[0]:.1f}", flush=True)
        if attempt == 0:
            result.same_members = sorted_memberships(outs[0] / "reconciled").equals(sorted_memberships(base_out))
        else:
            same = digest_tree(outs[-1]) == digest_tree(outs[0])
            result.identical = same and result.identical is not False
            shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / f"ours-{scenario}-{size}-0", ignore_errors=True)
    return result


def median(runs: list[Run], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def night_ratio(r: Result) -> str:
    """Night 2's median over night 1's, and with several runs the range of each run's own ratio:
    night 1 moves too, and a ratio of medians alone hides by how much."""
    ratio = f"{median(r.ours, 'wall') / median(r.night1, 'wall'):.2f}"
    if len(r.ours) < 2:
        return ratio
    each = [two.wall / one.wall for one, two in zip(r.night1, r.ours)]
    return f"{ratio} ({min(each):.2f}-{max(each):.2f})"


def table(results: list[Result]) -> list[str]:
    rows = [
        "| scenario | dump lines | ours (s) | DuckDB baseline (s) | ratio | CPU ratio | ours lines/s "
        "| peak RSS ours / baseline (GiB) | night 2 / night 1 | same memberships | repeat identical |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        ours, base = median(r.ours, "wall"), median(r.baseline, "wall")
        cpu = median(r.ours, "cpu") / median(r.baseline, "cpu")
        rss = max(x.rss for x in r.ours + r.night1)
        nights = night_ratio(r) if r.night1 else "-"
        same = "yes" if r.same_members else "NO"
        identical = "-" if r.identical is None else "yes" if r.identical else "NO"
        rows.append(f"| {r.scenario} | {r.lines:,} | {ours:.1f} | {base:.1f} | **{ours / base:.2f}** | {cpu:.2f} | "
                    f"{r.lines / ours:,.0f} | {rss:.2f} / {max(x.rss for x in r.baseline):.2f} | {nights} | {same} | {identical} |")
    return rows


def scaling(results: list[Result]) -> list[str]:
    lines = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        times = {r.size: median(r.ours, "wall") for r in results if r.scenario == scenario}
        if len(times) > 1:
            small, big = min(times), max(times)
            lines.append(f"scaling ({scenario}): time({big:,}) / time({small:,}) = {times[big] / times[small]:.2f} "
                         f"for {big / small:.0f}x the data")
    return lines


def compile_project() -> None:
    """The project's own modules compiled to .pyc before any timing, as an installed package has them
    (pip compiles what it installs). An editable install runs from the source tree, and where
    PYTHONDONTWRITEBYTECODE is set (this machine, CI) every run compiled them again: 0.17 s of a
    1M import's start (``import pipelines.import_audience`` 1.40 -> 1.23 s, 3 runs each)."""
    for package in ("pipelines", "transforms"):
        compileall.compile_dir(str(ROOT / package), quiet=1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="split,single,encrypted,segments,nightly",
                        help=f"comma-separated, from {', '.join(SCENARIOS)} (default: %(default)s)")
    parser.add_argument("--sizes", default="1000000,10000000", help="dump lines (and profiles) per run, comma-separated")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs of ours and the baseline (medians shown)")
    parser.add_argument("--nightly-lines", type=float, default=1.0,
                        help="nightly scenarios: dump lines a night, as a share of the profiles (default 1.0)")
    parser.add_argument("--runner", default="default",
                        help="'default' (the job's pinned runner), RUNNER or RUNNER:MODE (FnApiRunner:multi_processing)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder, kept (default: a temp dir, deleted); "
                        "generated data is reused from it")
    args = parser.parse_args(argv)
    scenarios = args.scenarios.split(",")
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.work or Path(tempfile.mkdtemp(prefix="audience-sync-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    compile_project()
    load_before = os.getloadavg()
    results = []
    try:
        for size in sizes:
            for scenario in scenarios:
                results.append(run_scenario(work, scenario, size, args.repeat, runner_flags(args.runner), args.nightly_lines))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"runner: {args.runner}; {args.repeat} alternating run(s) each, medians; {os.cpu_count()} CPUs; "
          f"load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("\n".join(table(results)))
    print("\n".join(scaling(results)))
    return 0 if all(r.same_members and r.identical is not False for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
