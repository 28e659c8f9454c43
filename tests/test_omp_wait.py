"""benchmarks/omp_wait.py: spin against passive waiting, each in a child, with and without a neighbour."""
import sys

import pytest

from spotlib.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
import omp_wait  # noqa: E402


@pytest.mark.slow
def test_the_benchmark_measures_every_variant_and_finds_the_same_numbers(capsys):
    omp_wait.main(["--profile", "test", "--rounds", "1", "--steps", "1", "--prompts", "2"])
    out = capsys.readouterr().out
    rows = [line.split()[:2] for line in out.splitlines() if line.startswith(("quiet ", "busy "))]
    assert sorted(rows) == [["busy", "active"], ["busy", "passive"], ["quiet", "active"], ["quiet", "passive"]]
    assert "passive / spin, busy:" in out
    assert "same weights and samples under every variant: yes" in out
