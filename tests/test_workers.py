"""Work is shared out among worker processes so that no core waits."""
import pytest

from spotlib.launch.workers import balanced_shares


def test_runs_not_seeds_are_shared_out():
    runs = [f"{m}:{s}" for m in ("sft", "dpo", "spot_bco") for s in (0, 1, 2)]
    shares = balanced_shares(runs, 2)
    assert sorted(len(s) for s in shares) == [4, 5]           # 9 runs on 2 workers: 5 + 4, not 6 + 3
    assert sorted(u for s in shares for u in s) == sorted(runs)  # each run once


def test_costs_balance_the_load():
    shares = balanced_shares(["big", "a", "b", "c"], 2, cost={"big": 3.0, "a": 1.0, "b": 1.0, "c": 1.0})
    assert sorted(shares) == [["a", "b", "c"], ["big"]]


def test_fewer_units_than_workers_and_bad_counts():
    assert balanced_shares(["only"], 4) == [["only"]]
    assert balanced_shares([], 2) == []
    with pytest.raises(ValueError, match="workers=0"):
        balanced_shares(["x"], 0)
