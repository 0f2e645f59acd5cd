"""tests/parallel.py, what `make test` runs: two lanes that together are the whole suite,
each directory in one of them, and an exit status that fails when either lane fails."""
from __future__ import annotations

from tests import parallel


def test_the_two_lanes_are_the_whole_suite_once():
    (main_name, main), (beside_name, beside) = parallel.lanes(["-q", "-x"])
    assert (main_name, beside_name) == ("main", "unit+api")
    assert main[-3:] == ["tests", "--ignore=tests/unit", "--ignore=tests/api"]
    assert beside[-2:] == ["tests/unit", "tests/api"]
    assert "-x" in main and "-x" in beside  # the caller's options reach both
    assert "no:cacheprovider" in beside and "no:cacheprovider" not in main


def test_either_lane_failing_fails_the_run():
    assert parallel.status([0, 0]) == 0
    assert parallel.status([0, 5]) == 0  # nothing collected (e.g. -k matched nothing there)
    assert parallel.status([1, 0]) == 1
    assert parallel.status([0, 2]) == 2
    assert parallel.status([5, 1]) == 1
