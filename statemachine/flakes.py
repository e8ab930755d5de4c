"""How often each verify command, and each test, fails on a good tree: learned from the log.

Flaky tests only ever fail falsely: a flaky test fails a good tree, it never passes a broken one. So
a green run is trusted at once, and what the log can teach is how often a red one is false. A red run
of a command followed by a green run of it on the same tree is a flake; the runs of a command on the
trees it passed (green runs and the red runs before them) are the trials. The rate is
``(flakes + prior * PRIOR_RUNS) / (trials + PRIOR_RUNS)``: the configured prior until there is data,
the measured rate once there is much of it. Trees on which a command stayed red teach nothing (broken,
or unlucky: nobody can tell), so they are left out rather than guessed.

Old observations fade with a half-life of :data:`HALF_LIFE_DAYS` (by the events' recorded times, so a
replay learns exactly what the run learned): a test fixed a month ago stops costing re-runs.

A test that flaked twice lately (:data:`QUARANTINE_FLAKES`, decayed) is quarantined: its failures
no longer blame anyone, and the status file lists it with its measured rate so a person can fix it.
Only a seen flake (failed, then passed on the same tree) counts for a test. An *excused* failure does
not: an excused run is not re-run, so it cannot tell a flake from a real break, and counting it would
keep a quarantined test quarantined for as long as it fails, which would hide for good a todo that
really breaks it. So a quarantine lapses after :data:`QUARANTINE_FLAKES` decays away (about 6 days
after two flakes) unless new flakes are seen. Then the test's next failure is re-run again: if it
flakes, one flake quarantines it again; if it stays red, it blames.

The estimate reads a little low. Trees whose runs were all red are left out, and among them are the
good trees that were unlucky every time (a share of about ``rate ** runs``): a true 0.2 reads as
about 0.18 (0.184 at 3 runs a tree, 0.14 at 2). This does not change how many runs are needed except
close to a step of :func:`runs_needed`, and correcting it would need each tree's cap (the runs it was
allowed), which the record does not hold.

Everything here is a pure function of the folded events (their ``recorded_at``, never a clock). So
replay from zero and snapshot plus tail do the same float operations in the same order and agree
exactly, and ``to_json`` holds only finite floats, which JSON round-trips exactly.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "FORGET_FLAKES",
    "HALF_LIFE_DAYS",
    "PRIOR_RUNS",
    "QUARANTINE_FLAKES",
    "CommandFlakes",
    "CommandRate",
    "FlakeModel",
    "command_key",
    "runs_needed",
]

HALF_LIFE_DAYS = 14.0
PRIOR_RUNS = 10.0  # the prior weighs as much as this many observed runs
# One flake can be a fluke of the machine; two make a flaky test. Decayed: two flakes count 1.5 or more
# for about 6 days, so a test that stops flaking (and so stops failing) leaves quarantine by itself.
QUARANTINE_FLAKES = 1.5
# A test whose decayed flakes fell below this (about 100 days after its last flake) is forgotten, so the
# model does not grow with every test that ever flaked once.
FORGET_FLAKES = 0.01
# A count read from a record is kept within this: a damaged record must not make the sums overflow.
_MAX_RUNS = 10_000
# A rate is kept inside these bounds when it decides re-runs: 0 would never re-run, 1 never stop.
MIN_RATE = 1e-4
MAX_RATE = 0.9
_HALF_LIFE_S = HALF_LIFE_DAYS * 86400.0


def _count(value: Any) -> int:
    """A run count from a record, within 0 and :data:`_MAX_RUNS`."""
    return min(max(int(value), 0), _MAX_RUNS)


def command_key(argv: Sequence[str]) -> str:
    """The one spelling of a verify command in records and rates (as a shell would show it)."""
    return shlex.join(argv)


def runs_needed(rate: float, false_blame: float, max_reruns: int) -> int:
    """How many runs, all red, make a red verdict: the fewest ``n`` with ``rate ** n < false_blame``
    (3 at a rate of 0.2 and 0.01), but never more than ``1 + max_reruns``."""
    cap = 1 + max(0, max_reruns)
    if false_blame <= 0.0:
        return cap  # no chance of a wrong blame is accepted: every run allowed (config refuses 0)
    if false_blame >= 1.0:
        return 1
    f = min(max(rate, MIN_RATE), MAX_RATE)
    # The 1e-9 keeps an exact power (0.1 ** 2 = 0.01) from needing a run more through rounding.
    n = max(1, math.ceil(math.log(false_blame) / math.log(f) - 1e-9))
    return min(n, cap)


class CommandRate(NamedTuple):
    """A command's measured flake rate, for ``batchd status`` and the status file."""

    command: str
    rate: float  # with the prior blended in
    trials: float  # decayed runs on trees it passed
    flakes: float  # decayed red runs among them


@dataclass(slots=True)
class CommandFlakes:
    """One command's decayed counts; ``at`` is the time (epoch seconds) they were last decayed to."""

    trials: float = 0.0
    flakes: float = 0.0
    tests: dict[str, float] = field(default_factory=dict)  # test id -> decayed flakes
    at: float = 0.0

    def decay_to(self, when: float) -> None:
        if when <= self.at:
            return  # a clock that went back does not make old runs count more
        if self.at > 0:
            factor = 0.5 ** ((when - self.at) / _HALF_LIFE_S)
            self.trials *= factor
            self.flakes *= factor
            self.tests = {t: w * factor for t, w in self.tests.items() if w * factor >= FORGET_FLAKES}
        self.at = when


class FlakeModel:
    """Every command's counts, folded from ``batch.verify_run`` events (see :meth:`observe`)."""

    __slots__ = ("commands",)

    def __init__(self) -> None:
        self.commands: dict[str, CommandFlakes] = {}

    def observe(
        self,
        tries: Iterable[Sequence[Any]],
        flaky_tests: Iterable[Sequence[str]],
        excused: Iterable[Sequence[str]],
        when: float,
    ) -> None:
        """One verify run's ``tries`` ((command key, runs, reds)), its ``flaky_tests`` and ``excused``
        failures ((command key, test id)), recorded at ``when`` (epoch seconds).

        ``excused`` is taken for the record's sake but teaches nothing: an excused run was not re-run,
        so it cannot tell a flake from a break (see the module docstring)."""
        del excused
        for key, ran, red in tries:
            runs, reds = _count(ran), _count(red)
            if runs <= reds:
                continue  # red to the end: broken or unlucky, nobody can tell
            c = self._at(str(key), when)
            c.trials += runs
            c.flakes += reds
        for key, test in flaky_tests:
            c = self._at(str(key), when)
            c.tests[str(test)] = c.tests.get(str(test), 0.0) + 1.0

    def _at(self, key: str, when: float) -> CommandFlakes:
        c = self.commands.get(key)
        if c is None:
            c = self.commands[key] = CommandFlakes(at=when)
        c.decay_to(when)
        return c

    def rate(self, key: str, prior: float) -> float:
        c = self.commands.get(key)
        if c is None:
            return prior
        return (c.flakes + prior * PRIOR_RUNS) / (c.trials + PRIOR_RUNS)

    def rates(self, prior: float) -> dict[str, float]:
        return {key: self.rate(key, prior) for key in self.commands}

    def measured(self, prior: float) -> list[CommandRate]:
        commands = sorted(self.commands.items())
        return [CommandRate(key, self.rate(key, prior), c.trials, c.flakes) for key, c in commands]

    def quarantined(self) -> dict[tuple[str, str], float]:
        """(command key, test id) -> the test's measured flake rate, for tests that flaked enough."""
        found: dict[tuple[str, str], float] = {}
        for key, c in self.commands.items():
            for test, flakes in c.tests.items():
                if flakes >= QUARANTINE_FLAKES:
                    found[(key, test)] = min(1.0, flakes / max(c.trials, flakes))
        return found

    def to_json(self) -> dict[str, Any]:
        return {
            key: {"trials": c.trials, "flakes": c.flakes, "tests": dict(c.tests), "at": c.at}
            for key, c in self.commands.items()
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FlakeModel:
        model = cls()
        for key, row in data.items():
            model.commands[key] = CommandFlakes(
                trials=float(row["trials"]),
                flakes=float(row["flakes"]),
                tests={str(t): float(w) for t, w in row["tests"].items()},
                at=float(row["at"]),
            )
        return model
