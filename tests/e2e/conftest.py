"""End-to-end options and fixtures (helpers live in ``e2e_harness.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_harness import reap


@pytest.fixture
def reaper(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path``, and afterwards nothing started for it is left running (killed by pid if it is)."""
    yield tmp_path
    reap(str(tmp_path))
