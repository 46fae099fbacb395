"""Shared fixtures. Every pipeline in the tests runs for real on the pinned local runner."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "testdata" / "demo"
sys.path.insert(0, str(ROOT / "scripts"))


def local_test_pipeline(runner: str | None = None) -> TestPipeline:
    """A TestPipeline on the runner the jobs use by default (or the one named)."""
    from pipelines.options import LOCAL_RUNNER

    return TestPipeline(runner=runner or LOCAL_RUNNER, options=PipelineOptions([]))


@pytest.fixture
def demo_copy(tmp_path) -> Path:
    """A private copy of the bundled demo (tests may damage it)."""
    target = tmp_path / "demo"
    shutil.copytree(DEMO, target)
    return target
