"""How a red verify run is confirmed (issue 14): the policy the engine builds from the flake model
and the configuration, and the record of how one command fared on one tree.

:mod:`daemon.world.confirm` carries the policy out; the engine (``batches.flake_policy``) builds it;
``batch.verify_run`` records each :class:`CommandRuns` as ``tries`` and its tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from statemachine.flakes import PRIOR_RUNS, command_key, runs_needed

__all__ = ["CommandRuns", "FlakePolicy", "SpareTrees"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlakePolicy:
    """How a red run is confirmed (issue 14): built by the engine from the flake model and config.

    A command's first red run is re-run on the same tree until a run is green (a flake: the command
    passed) or ``runs_needed`` runs are red (``flakes.runs_needed`` of its rate, ``false_blame`` and
    ``max_reruns``). With ``fixed`` set, every red is re-run exactly that many times, nothing is read
    from the output, and no test is excused: today's ``retries`` rule, kept for comparison.
    """

    rates: Mapping[str, float] = field(default_factory=dict)  # command key -> measured flake rate
    prior: float = 0.05  # the rate of a command with no measurement
    false_blame: float = 0.01
    max_reruns: int = 5  # [verify] retries
    # (command key, test id) whose failures never blame: quarantined, or red on the batch's base.
    excused: frozenset[tuple[str, str]] = frozenset()
    junit: str = ""  # [verify] junit: a report path inside the tree, read after each command
    parallel: int = 1  # re-runs at once, each in a copy of the tree
    fixed: int | None = None
    # The tree is a batch's base (its baseline): a confirmed red whose runs all name their failing
    # tests is those tests red on the base, excused and recorded, not a red base. Nobody can be
    # blamed on a base, and its failures must not blame the todos built on it. Output naming no
    # tests still makes it red (the batch pauses, as before).
    base: bool = False
    # (command key, test id) red on the newest verified head, as its accepting run excused them
    # (known_red): red there, or a flake that hit that run, nobody can tell yet. They excuse a run
    # only once it is confirmed red (a re-run that passes makes them flaky tests, learned), so a
    # flaky test carried this way is still seen flaking, and quarantined.
    red_on_head: frozenset[tuple[str, str]] = frozenset()

    # command key -> the runs the measured rate rests on (decayed): how much one more run moves it.
    trials: Mapping[str, float] = field(default_factory=dict)

    def observed(self, runs: CommandRuns) -> FlakePolicy:
        """This policy with one more tree's runs of a command learned, as the log will learn them
        once the verification is recorded: a verification of ten todos that sees its flaky test flake
        on its first tree confirms the reds after it with the higher rate, not the old one."""
        if self.fixed is not None or runs.known_red or runs.runs <= runs.reds:
            return self  # red to the end (or fixed rule): nothing learned, as in the model
        key = command_key(runs.command)
        weight = self.trials.get(key, 0.0) + PRIOR_RUNS
        rate = self.rates.get(key, self.prior)
        blended = (rate * weight + runs.reds) / (weight + runs.runs)
        return replace(
            self,
            rates={**self.rates, key: blended},
            trials={**self.trials, key: self.trials.get(key, 0.0) + runs.runs},
        )

    def runs_needed(self, command: Sequence[str]) -> int:
        if self.fixed is not None:
            return 1 + self.fixed
        rate = self.rates.get(command_key(command), self.prior)
        return runs_needed(rate, self.false_blame, self.max_reruns)

    def excused_tests(self, command: Sequence[str]) -> frozenset[str]:
        key = command_key(command)
        return frozenset(test for k, test in self.excused if k == key)

    def red_on_head_tests(self, command: Sequence[str]) -> frozenset[str]:
        key = command_key(command)
        return frozenset(test for k, test in self.red_on_head if k == key)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRuns:
    """How one command fared on one tree: what ``batch.verify_run``'s ``tries`` and tests record."""

    command: tuple[str, ...]
    runs: int
    reds: int  # red runs that counted (a run whose only failures were excused is not red)
    failed_tests: tuple[str, ...] = ()  # red to the end: the tests that failed, not excused
    flaky_tests: tuple[str, ...] = ()  # failed in one run and passed in a later one on this tree
    excused: tuple[str, ...] = ()  # failed, but quarantined or red on the base: not counted
    evidence: str = ""  # testevidence's runner for the output read, "" when no red run was read
    # Red in every run, but only by tests known red (red on the base, on the head): passed.
    known_red: bool = False

    @property
    def passed(self) -> bool:
        return self.runs > self.reds or self.known_red


class SpareTrees(Protocol):
    """Copies of a tree for parallel re-runs (:mod:`daemon.world.sparetrees` implements it): ``n``
    folders whose files equal ``tree``'s git index state, dependencies placed."""

    def get(self, tree: Path, n: int) -> list[Path]: ...
