"""The run page's agent-time accounting, kept between states of the log, equals the full one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from daemon.web.pagedata import economy_of
from daemon.workspace import open_log
from statemachine.economy import run_economy
from statemachine.projection import Projection


def test_the_kept_accounting_equals_the_full_one_after_every_event(demo_root: Path) -> None:
    """Folding the demo run's log event by event, the dashboard's incremental accounting (each todo
    classed again only when it changed) is, after every event, exactly `run_economy`'s."""
    log = open_log(demo_root)
    try:
        events = list(log.read())
    finally:
        log.close()
    proj = Projection()
    now = datetime.now(UTC)
    checked = 0
    for event in events:
        proj.apply(event)
        assert economy_of(proj, now) == run_economy(proj, now=now), f"after event {event.seq} ({event.type})"
        checked += 1
    assert checked == len(events) > 100
    assert run_economy(proj, now=now).minutes > 0  # the demo's agents ran: there was something to keep
