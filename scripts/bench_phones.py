#!/usr/bin/env python
"""Benchmark: phone normalization before/after libphonenumber, in this process.

    python scripts/bench_phones.py [--phones 1000000] [--national 0.10] [--region FR] [--baseline-ref main]

Builds a realistic mix of phone numbers (mostly international: French mobiles written
"+33 6 12 34 56 78" as the generator writes them, compact E.164, a few other countries; plus a
``--national`` share written nationally, "06 12 34 56 78") and times ``normalize_keys(..., "phone",
"uid2", region)`` of this tree against the same call in ``transforms/normalize.py`` as it was at
``--baseline-ref`` (read with ``git show``; it had no default region: national numbers were not
understood, so its answers differ, only its cost is compared). Prints rows/s of each, the ratio
after / before, and how many rows went through the per-row library (the rest took a vectorized
path). Best of ``--repeat`` rounds, before and after taking turns; single-threaded: rates are per core.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from transforms import phones  # noqa: E402
from transforms.normalize import normalize_keys  # noqa: E402


def phone_mix(n: int, national: float, seed: int = 0) -> pa.StringArray:
    """``n`` phones: ``national`` written nationally (French), the rest international."""
    rng = np.random.default_rng(seed)
    kind = rng.random(n)
    digits = rng.integers(0, 10**8, size=n)
    out = []
    for k, d in zip(kind.tolist(), digits.tolist()):
        s = f"{d:08d}"
        if k < national:
            out.append(f"0{6 + d % 2} {s[0:2]} {s[2:4]} {s[4:6]} {s[6:8]}")
        elif k < national + (1 - national) * 0.60:
            out.append(f"+33 6 {s[0:4]} {s[4:8]}")
        elif k < national + (1 - national) * 0.85:
            out.append(f"+336{s}")
        elif k < national + (1 - national) * 0.95:
            out.append(f"+44 7{s[0:3]} {s[3:8]}0")
        else:
            out.append(f"+1 {201 + d % 700}-{s[0:3]}-{s[3:7]}")
    return pa.array(out, pa.string())


def baseline_module(ref: str):
    """transforms/normalize.py as it was at ``ref``, imported under another name."""
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:transforms/normalize.py"],
                            capture_output=True, text=True, check=True).stdout
    path = ROOT / ".bench_baseline_normalize.py"
    path.write_text(source)
    try:
        spec = importlib.util.spec_from_file_location("baseline_normalize", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        path.unlink()
    return module


def best_of(repeat: int, *fns) -> list[float]:
    """The best time of each function over ``repeat`` rounds, the functions taking turns (a busy
    machine then slows both alike)."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--phones", type=int, default=1_000_000)
    parser.add_argument("--national", type=float, default=0.10, help="share written nationally (0..1)")
    parser.add_argument("--region", default="FR")
    parser.add_argument("--baseline-ref", default="main")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    values = phone_mix(args.phones, args.national)
    old = baseline_module(args.baseline_ref)
    library_rows = [0]
    library = phones.library

    def counted(value, region):
        library_rows[0] += 1
        return library(value, region)

    phones.library = counted
    normalize_keys(values, "phone", "uid2", args.region)  # warm the tables, count library rows once
    phones.library = library
    normalized, _ = normalize_keys(values, "phone", "uid2", args.region)
    before, after = best_of(args.repeat, lambda: old.normalize_keys(values, "phone", "uid2"),
                            lambda: normalize_keys(values, "phone", "uid2", args.region))
    n = len(values)
    print(f"{n} phones, {args.national:.0%} national, region {args.region}: "
          f"{n - normalized.null_count} valid, {library_rows[0]} ({library_rows[0] / n:.2%}) through the library")
    print(f"before ({args.baseline_ref}): {before:.3f} s  {n / before / 1e6:.2f} M rows/s")
    print(f"after:  {after:.3f} s  {n / after / 1e6:.2f} M rows/s")
    print(f"ratio after/before (time): {after / before:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
