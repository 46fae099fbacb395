"""Where a run's time and memory go: wall time, CPU time and peak RSS per stage of the pinned local runner (FnApiRunner).

    python scripts/profile_stages.py --config job.yaml --output /tmp/out [more import flags...]
    python scripts/profile_stages.py nightly --config job.yaml --root ROOT --date 2026-11-23 [...]

Runs ``pipelines.import_audience`` (or, with ``nightly`` first, ``pipelines.nightly``) in this process
with the runner's bundle execution timed per fused stage (wall, and the process's CPU seconds over all
threads: CPU ≈ 2 × wall means both cores were busy; of it the system time, and the minor page
faults), and prints the stages by wall time, then the
time outside any stage (interpreter and Beam imports, preflight, pipeline construction, the publish's
moves after the last stage). A sampler thread reads this process's resident memory every 20 ms: each
stage shows the highest value seen while it ran and the value when it began (the process's, so
both include what earlier stages left behind, e.g. the runner's buffers of their outputs). A stage's name is the runner's (its fused
steps, e.g. ``Reconcile/ReadDumps``). Timings only: nothing is asserted, and the outputs are the job's own.
"""
from __future__ import annotations

import os
import resource
import sys
import threading
import time
from collections import defaultdict

START = time.perf_counter()

from apache_beam.runners.portability.fn_api_runner import fn_runner  # noqa: E402

from pipelines import import_audience, nightly  # noqa: E402

STAGES: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)  # process CPU seconds (all threads) while the stage ran
SYS: dict[str, float] = defaultdict(float)  # of which in the kernel (page faults, mostly)
FAULTS: dict[str, int] = defaultdict(int)  # the process's minor page faults while the stage ran
BUNDLES: dict[str, int] = defaultdict(int)
PEAK: dict[str, int] = defaultdict(int)  # bytes
AT_START: dict[str, int] = {}  # bytes resident when the stage's first bundle began
_PAGE = os.sysconf("SC_PAGE_SIZE")


class _Sampler(threading.Thread):
    """The process's RSS every ``period`` seconds; ``peak`` since the last ``reset``."""

    def __init__(self, period: float = 0.02):
        super().__init__(daemon=True)
        self.period, self.peak = period, 0

    def rss(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE

    def reset(self) -> None:
        self.peak = self.rss()

    def run(self):
        while True:
            self.peak = max(self.peak, self.rss())
            time.sleep(self.period)


SAMPLER = _Sampler()


def _timed(original):
    def execute(self, context, bundle_context_manager, bundle_input):
        began, cpu, usage = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_SELF)
        SAMPLER.reset()
        AT_START.setdefault(bundle_context_manager.stage.name, SAMPLER.peak)
        try:
            return original(self, context, bundle_context_manager, bundle_input)
        finally:
            name = bundle_context_manager.stage.name
            STAGES[name] += time.perf_counter() - began
            CPU[name] += time.process_time() - cpu
            after = resource.getrusage(resource.RUSAGE_SELF)
            SYS[name] += after.ru_stime - usage.ru_stime
            FAULTS[name] += after.ru_minflt - usage.ru_minflt
            BUNDLES[name] += 1
            PEAK[name] = max(PEAK[name], SAMPLER.peak, SAMPLER.rss())
    return execute


def _short(name: str, width: int = 90) -> str:
    """A fused stage's name lists its steps joined by '+': keep the step names, not the ref ids."""
    steps = [part.split("/")[0] if part.startswith("ref_") else part for part in name.split("+")]
    text = "+".join(s.replace("ref_AppliedPTransform_", "") for s in steps)
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str]) -> int:
    job = nightly if argv[:1] == ["nightly"] else import_audience
    argv = argv[1:] if argv[:1] in (["nightly"], ["import"]) else argv
    fn_runner.FnApiRunner._execute_bundle = _timed(fn_runner.FnApiRunner._execute_bundle)
    SAMPLER.start()
    began = time.perf_counter()
    code = job.main(argv)
    total = time.perf_counter() - START
    in_stages = sum(STAGES.values())
    print(f"\n{job.__name__.rsplit('.', 1)[-1]} exit code {code}; {total:.1f} s in all "
          f"({began - START:.1f} s of imports before the job)")
    print(f"{'wall s':>7} {'share':>6} {'CPU s':>6} {'sys s':>6} {'faults':>8} {'bundles':>7} {'RSS GiB':>7} {'at start':>8}  stage")
    for name, seconds in sorted(STAGES.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            print(f"{seconds:7.2f} {seconds / total:6.1%} {CPU[name]:6.2f} {SYS[name]:6.2f} {FAULTS[name]:8d} {BUNDLES[name]:7d} {PEAK[name] / 2**30:7.2f} "
                  f"{AT_START[name] / 2**30:8.2f}  {_short(name)}")
    print(f"{total - in_stages:7.2f} {(total - in_stages) / total:6.1%} {'':6} {'':6} {'':8} {'':7} {'':7} {'':8}  outside the stages (imports, "
          "preflight, construction, publish moves)")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
