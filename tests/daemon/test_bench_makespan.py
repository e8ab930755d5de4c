"""bench.makespan --quick: both policies run the seed's plan with real agents and must end alike."""

from __future__ import annotations

import pytest

from bench import makespan


def test_quick_bench_ends_with_the_same_accepted_set_and_commits_in_both_modes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert makespan.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "yes (28 accepted, 5 commits)" in out
    assert "median ratio" in out
