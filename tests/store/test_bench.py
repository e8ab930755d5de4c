"""The store benchmark stays runnable (its numbers are read by people, not asserted here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import store as bench_store


def test_quick_bench_runs_and_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """python -m bench.store --quick completes and prints a row per measurement with a ratio."""
    assert bench_store.main(["--quick", "--dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("durable single-event appends", "batched appends", "read + JSON decode"):
        assert name in out
    assert out.count("x\n") == 3
