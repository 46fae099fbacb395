"""Where an import's time goes: wall time per stage of the pinned local runner (FnApiRunner).

    python scripts/profile_stages.py --config job.yaml --output /tmp/out [more import flags...]

Runs ``pipelines.import_audience.run`` in this process with the runner's bundle execution timed per
fused stage, and prints the stages by wall time, then the time outside any stage (interpreter and
Beam imports, preflight, pipeline construction, the publish's moves after the last stage). A stage's
name is the runner's (its fused steps, e.g. ``Reconcile/ReadDumps``). Timings only: nothing is
asserted, and the outputs are the import's own.
"""
from __future__ import annotations

import sys
import time
from collections import defaultdict

START = time.perf_counter()

from apache_beam.runners.portability.fn_api_runner import fn_runner  # noqa: E402

from pipelines import import_audience  # noqa: E402

STAGES: dict[str, float] = defaultdict(float)
BUNDLES: dict[str, int] = defaultdict(int)


def _timed(original):
    def execute(self, context, bundle_context_manager, bundle_input):
        began = time.perf_counter()
        try:
            return original(self, context, bundle_context_manager, bundle_input)
        finally:
            name = bundle_context_manager.stage.name
            STAGES[name] += time.perf_counter() - began
            BUNDLES[name] += 1
    return execute


def _short(name: str, width: int = 90) -> str:
    """A fused stage's name lists its steps joined by '+': keep the step names, not the ref ids."""
    steps = [part.split("/")[0] if part.startswith("ref_") else part for part in name.split("+")]
    text = "+".join(s.replace("ref_AppliedPTransform_", "") for s in steps)
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str]) -> int:
    fn_runner.FnApiRunner._execute_bundle = _timed(fn_runner.FnApiRunner._execute_bundle)
    began = time.perf_counter()
    code = import_audience.main(argv)
    total = time.perf_counter() - START
    in_stages = sum(STAGES.values())
    print(f"\nimport exit code {code}; {total:.1f} s in all ({began - START:.1f} s of imports before the job)")
    print(f"{'wall s':>7} {'share':>6} {'bundles':>7}  stage")
    for name, seconds in sorted(STAGES.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.05:
            print(f"{seconds:7.2f} {seconds / total:6.1%} {BUNDLES[name]:7d}  {_short(name)}")
    print(f"{total - in_stages:7.2f} {(total - in_stages) / total:6.1%} {'':7}  outside the stages (imports, preflight, "
          "construction, publish moves)")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
