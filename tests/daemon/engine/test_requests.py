"""When the run branch's pull request is asked for (``requests.decide``, a pure function of the log)."""

from __future__ import annotations

import dataclasses

from daemon.config import BatchdConfig
from daemon.engine import commands as cmd
from daemon.engine.requests import decide
from engine.history import BASE, History
from statemachine import events as ev

BRANCH = "batchd/run-r"
CONFIG = BatchdConfig(land="branch", open_request=("gh", "pr", "create", "--head", "{branch}"))


def pushed(h: History, number: int, *, created: bool, branch: str = BRANCH) -> History:
    sha = f"{number}" * 40
    return h.add(
        ev.phase_stream(number),
        ev.PhaseStarted(number=number, base_sha=BASE),
        ev.PhaseCommitting(number=number, todo_ids=(), message="m"),
        ev.PhaseCommitted(number=number, commits=(sha,), head_sha=sha),
        ev.PhasePushing(number=number, attempt=1, sha=sha),
        ev.PhasePushed(number=number, sha=sha, attempts=1, branch=branch, created=created),
    )


def asked(h: History, phase: int) -> History:
    return h.add(
        ev.RUN_STREAM,
        ev.RequestOpening(branch=BRANCH, phase=phase, argv=("gh",)),
        ev.RequestOpened(branch=BRANCH, url="https://x.example/pull/1"),
    )


def run(
    h: History, config: BatchdConfig = CONFIG, *, busy: frozenset[str] = frozenset()
) -> list[cmd.Command]:
    return decide(h.projection(), config, busy=busy, accepting=True)


def two_phases() -> History:
    return History().plan({1: [["1"]], 2: [["2"]]})


def test_nothing_before_the_run_branch_was_pushed() -> None:
    """No push yet: no request."""
    assert run(two_phases()) == []


def test_the_first_push_asks_for_the_request() -> None:
    """After phase 1's push to the run branch: one OpenRequest onto the target branch."""
    wanted = cmd.OpenRequest(branch=BRANCH, base="main", phase=1)
    assert run(pushed(two_phases(), 1, created=True)) == [wanted]


def test_a_later_push_to_the_same_branch_asks_for_nothing() -> None:
    """Asked after phase 1; phase 2's push updates the branch: no second request."""
    h = pushed(asked(pushed(two_phases(), 1, created=True), 1), 2, created=False)
    assert run(h) == []


def test_a_push_that_made_the_branch_anew_asks_again() -> None:
    """The branch was deleted (its request merged) and phase 2's push made it again: a new request."""
    h = pushed(asked(pushed(two_phases(), 1, created=True), 1), 2, created=True)
    assert run(h) == [cmd.OpenRequest(branch=BRANCH, base="main", phase=2)]


def test_nothing_while_the_request_runs_or_without_the_setting() -> None:
    """A request in flight, land = "push", or no open_request: nothing."""
    h = pushed(two_phases(), 1, created=True)
    assert run(h, busy=frozenset({"open-request"})) == []
    assert run(h, dataclasses.replace(CONFIG, land="push")) == []
    assert run(h, dataclasses.replace(CONFIG, open_request=())) == []
    opening = h.add(ev.RUN_STREAM, ev.RequestOpening(branch=BRANCH, phase=1, argv=("gh",)))
    assert run(opening) == []


def test_nothing_new_starts_while_stopping() -> None:
    """Stopping: the request waits for the next start."""
    assert decide(pushed(two_phases(), 1, created=True).projection(), CONFIG, busy=(), accepting=False) == []
