"""scripts/bench.py's summary of a nightly pair: what the README quotes comes from here."""
from bench import Result, Run, night_ratio  # scripts/ is on the path (conftest)


def _runs(*walls: float) -> list[Run]:
    return [Run(wall, 1.0, 1.0) for wall in walls]


def test_one_run_shows_its_own_ratio():
    result = Result("nightly", 10, 10, ours=_runs(17.8), night1=_runs(26.7), baseline=_runs(15.0))
    assert night_ratio(result) == "0.67"


def test_several_runs_show_the_ratio_of_medians_and_the_range_of_each_runs_ratio():
    # The tenth session's big-extract runs (docs/performance-history.md): night 1 moved from 26.7 to
    # 36.5 s, so the ratio of the medians (19.3 / 33.7) alone looked better than two of the three runs.
    result = Result("nightly", 10, 10, ours=_runs(17.8, 21.8, 19.3), night1=_runs(26.7, 36.5, 33.7),
                    baseline=_runs(15.0, 16.5, 14.2))
    assert night_ratio(result) == "0.57 (0.57-0.67)"
