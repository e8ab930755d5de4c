"""The replay benchmark stays runnable (its numbers are read by people, not asserted here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import replay as bench_replay


def test_small_bench_runs_and_reports_every_measurement(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """python -m bench.replay on a tiny log prints the raw, full-replay and restart lines."""
    assert bench_replay.main(["--todos", "120", "--rounds", "1", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert [n for n in ("(a) full replay", "(b) restart", "(c) raw sqlite3", "x raw") if n not in out] == []
