"""Benchmark: `audience-sync import` end to end against a DuckDB baseline, in one run of this script.

    python scripts/bench.py                       # 1M and 10M dump lines (as many profiles)
    python scripts/bench.py --sizes 200000 --runners BundleBasedDirectRunner,FnApiRunner:in_memory,FnApiRunner:multi_processing

For each size it generates a job with the project's generator (profiles with emails, phones and
visitor IDs; dumps with visitor, hashed, plain and encrypted declared IDs, bad lines and unknown IDs),
then times, each in a fresh process: our import on the local runner (read, normalize, hash, decrypt,
join, write Parquet, report) and `scripts/baseline_duckdb.py` (same memberships, same files). It
checks that both produced the same membership set, runs our import a second time to check the outputs
are byte-identical, and prints wall times, the ratio ours / baseline, lines/s and peak RSS. Timings
are only printed, never asserted; the ratio is what to compare across machines.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from generate_data import generate  # noqa: E402


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """Run ``cmd`` in a fresh process; return (wall seconds, its peak RSS in GiB, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # reaps the child and returns its own rusage
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"failed: {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
        return wall, usage.ru_maxrss / 1024 / 1024, out.read().decode()


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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="dump lines per run (comma-separated)")
    parser.add_argument("--runners", default="default",
                        help="local runners to compare, comma-separated: 'default' (the job's pinned runner), "
                             "RUNNER or RUNNER:MODE (FnApiRunner:in_memory, FnApiRunner:multi_processing)")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir, deleted)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.runners.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="audience-sync-bench-"))
    rows = []
    try:
        for size in sizes:
            data = work / f"data-{size}"
            if not (data / "job.yaml").exists():
                t = time.perf_counter()
                generate(data, n_profiles=size, n_lines=size, seed=42)
                print(f"[{size:,}] generated in {time.perf_counter() - t:.1f}s", flush=True)
            base_out = work / f"baseline-{size}.parquet"
            b_wall, b_rss, _ = timed([sys.executable, "scripts/baseline_duckdb.py", "--data", str(data), "--out", str(base_out)])
            print(f"[{size:,}] baseline {b_wall:.1f}s", flush=True)
            expected = sorted_memberships(base_out)
            for mode in modes:
                flags = runner_flags(mode)
                outs = []
                for attempt in (1, 2):
                    out = work / f"ours-{size}-{mode}-{attempt}"
                    shutil.rmtree(out, ignore_errors=True)
                    wall, rss, _ = timed([sys.executable, "-m", "pipelines.cli", "import", "--config",
                                          str(data / "job.yaml"), "--output", str(out), "--run-date", "2026-11-23", *flags])
                    outs.append((out, wall, rss))
                    print(f"[{size:,}] ours ({mode}, run {attempt}) {wall:.1f}s", flush=True)
                    if size > 2_000_000:
                        break  # one timed run at 10M; repeatability is checked at the smaller sizes
                same_members = sorted_memberships(outs[0][0] / "reconciled").equals(expected)
                identical = digest_tree(outs[0][0]) == digest_tree(outs[1][0]) if len(outs) > 1 else None
                out, wall, rss = outs[0]
                rows.append((size, mode, wall, b_wall, rss, b_rss, same_members, identical))
                for o, *_ in outs:
                    shutil.rmtree(o, ignore_errors=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    print()
    print("| dump lines | runner | ours (s) | DuckDB baseline (s) | ratio | ours lines/s | peak RSS ours / baseline (GiB) | same memberships | repeat identical |")
    print("|---:|---|---:|---:|---:|---:|---:|---|---|")
    for size, mode, wall, b_wall, rss, b_rss, same, identical in rows:
        print(f"| {size:,} | {mode} | {wall:.1f} | {b_wall:.1f} | {wall / b_wall:.2f} | {size / wall:,.0f} | "
              f"{rss:.2f} / {b_rss:.2f} | {'yes' if same else 'NO'} | {'-' if identical is None else 'yes' if identical else 'NO'} |")
    by_mode = {}
    for size, mode, wall, *_ in rows:
        by_mode.setdefault(mode, {})[size] = wall
    for mode, times in by_mode.items():
        if len(times) > 1:
            small, big = min(times), max(times)
            print(f"scaling ({mode}): time({big:,}) / time({small:,}) = {times[big] / times[small]:.2f} "
                  f"for {big / small:.0f}x the data")
    return 0 if all(r[6] and r[7] is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
