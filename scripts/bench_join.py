"""Many-to-many join benchmark: one key shared by N profiles and repeated on M dump lines.

    python scripts/bench_join.py                      # 10,000 x 10,000 (and smaller sizes), before and after
    python scripts/bench_join.py --sizes 5000 --impl after

Times :func:`transforms.join.join_bucket` ("after": matched lines de-duplicated on (key, segments,
removed) before the join) against the join it replaced ("before", kept below: every line joined
with every profile of its key, then de-duplicated), each size and implementation in a fresh
process, all from this one run; prints wall time of the join and the child process's peak RSS.
"before" runs under an address-space limit (``--limit-gb``) so that a quadratic blow-up is
reported instead of exhausting a shared machine.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETS = [("10,11", ""), ("12", "10"), ("13,14,15", "")]  # the repeated lines' distinct segment sets


def many_to_many_shard(n_profiles: int, m_lines: int):
    """A shard whose one key is on ``n_profiles`` profiles and ``m_lines`` dump lines."""
    import pyarrow as pa

    from transforms.arrow_utils import NAME
    from transforms.keys import DUMP_SHARD_SCHEMA, PROFILE_SHARD_SCHEMA

    key = b"shared-key"
    dump = pa.table({
        "source_file": pa.array(["dump.sync"] * m_lines).dictionary_encode().cast(NAME),
        "line": pa.array(range(1, m_lines + 1), pa.int64()),
        "key": pa.array([key] * m_lines, pa.binary()),
        "segments": pa.array([SETS[i % len(SETS)][0] for i in range(m_lines)]).dictionary_encode().cast(NAME),
        "removed": pa.array([SETS[i % len(SETS)][1] for i in range(m_lines)]).dictionary_encode().cast(NAME),
    }, schema=DUMP_SHARD_SCHEMA)
    prof = pa.table({"key": pa.array([key] * n_profiles, pa.binary()),
                     "profile_id": pa.array([f"p{i}" for i in range(n_profiles)])}, schema=PROFILE_SHARD_SCHEMA)
    return dump, prof


def join_before(dump, prof, data_source: str) -> int:
    """The join as it was before the de-duplication (reconciled rows only; for the benchmark):
    (line, key) hash-joined with (key, profile), then pairs times segments, de-duplicated."""
    import numpy as np
    import pyarrow as pa

    from transforms.join import _pairs_by_segment
    from transforms.keys import segment_lists

    lines = pa.table({"row": pa.array(np.arange(dump.num_rows, dtype=np.int64)), "key": dump["key"]})
    pairs = lines.join(prof.select(["key", "profile_id"]), keys="key", join_type="inner")
    members = _pairs_by_segment(pairs, segment_lists(dump["segments"].take(pairs["row"])), "profile_id")
    removed = _pairs_by_segment(pairs, segment_lists(dump["removed"].take(pairs["row"])), "profile_id")
    return members.num_rows + removed.num_rows


def child(impl: str, n: int, limit_gb: float) -> dict:
    if impl == "before" and limit_gb:
        limit = int(limit_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    dump, prof = many_to_many_shard(n, n)
    start = time.perf_counter()
    try:
        if impl == "before":
            rows = join_before(dump, prof, "ds")
        else:
            from transforms.join import join_bucket

            out = join_bucket(dump, prof, "ds", "other", False)
            rows = out.members.num_rows + out.removed_members.num_rows
        status = "ok"
    except MemoryError:
        rows, status = None, f"out of memory (over {limit_gb:g} GB of address space)"
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"impl": impl, "n": n, "status": status, "seconds": round(seconds, 2), "peak_rss_mb": round(peak_mb),
            "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,5000,10000", help="N = M values, comma-separated")
    parser.add_argument("--impl", choices=["before", "after", "both"], default="both")
    parser.add_argument("--limit-gb", type=float, default=8.0, help="address-space limit of a 'before' child")
    parser.add_argument("--child", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.limit_gb)))
        return 0
    impls = ["before", "after"] if args.impl == "both" else [args.impl]
    print(f"{'impl':<7} {'N x M':>15} {'seconds':>8} {'peak RSS MB':>12}  rows / status")
    for n in (int(s) for s in args.sizes.split(",")):
        for impl in impls:
            proc = subprocess.run([sys.executable, __file__, "--child", impl, str(n), "--limit-gb", str(args.limit_gb)],
                                  capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{impl:<7} {f'{n:,} x {n:,}':>15} {'-':>8} {'-':>12}  failed: {last}")
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            what = f"{r['rows']:,} rows" if r["status"] == "ok" else r["status"]
            print(f"{impl:<7} {f'{n:,} x {n:,}':>15} {r['seconds']:>8.2f} {r['peak_rss_mb']:>12,}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
