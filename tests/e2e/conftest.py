"""End-to-end options and fixtures (helpers live in ``e2e_harness.py``)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--crash-sweep",
        action="store_true",
        default=False,
        help="crash suite: kill the daemon after every event type and at random sequence numbers "
        "(slow); same as BATCHD_CRASH_SWEEP=1",
    )
