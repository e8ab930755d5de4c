"""The flake model as people read it: each verify command's measured rate, the quarantined tests, and
the words of a confirmed red ("broke `npm test` (confirmed in 3 of 3 runs): tests/test_x.py::test_y").

One module for every place these appear (the status file, ``batchd status`` and its ``--json``, a
rejection's reason and the final check's detail), so that they always say the same thing. The numbers
come from :class:`statemachine.flakes.FlakeModel` as folded from the log; nothing here reads a clock,
so the status file is the same whenever it is rebuilt.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from statemachine.flakes import CommandRate, FlakeModel, command_key

__all__ = [
    "MAX_ROWS",
    "MAX_TESTS_NAMED",
    "broke_text",
    "command_rates",
    "flakes_json",
    "percent",
    "quarantined_rows",
    "rate_text",
    "red_text",
]

MAX_TESTS_NAMED = 3  # a reason names this many failing tests, then "+N more" (the log keeps them all)
MAX_ROWS = 100  # tests listed in the status file per table, then "+N more" (status --json has them all)


def percent(rate: float) -> str:
    """``0.0476`` -> ``4.8%``, ``0.05`` -> ``5%``: one decimal, none when it is a whole number."""
    return f"{round(rate * 100, 1):g}%"


def red_text(command: Sequence[str], confirmed: tuple[int, int], failed_tests: Sequence[str]) -> str:
    """ "`npm test` (confirmed in 3 of 3 runs): a, b, c +2 more"; without a confirmation (an old
    record, or a run that never re-ran) just the command, without named tests no colon."""
    text = f"`{command_key(command)}`"
    reds, runs = confirmed
    if runs > 0:
        text += f" (confirmed in {reds} of {runs} run{'' if runs == 1 else 's'})"
    if failed_tests:
        named = ", ".join(failed_tests[:MAX_TESTS_NAMED])
        more = len(failed_tests) - MAX_TESTS_NAMED
        text += f": {named}" + (f" +{more} more" if more > 0 else "")
    return text


def broke_text(command: Sequence[str], confirmed: tuple[int, int], failed_tests: Sequence[str]) -> str:
    """A rejected todo's reason: "broke `npm test` (confirmed in 3 of 3 runs): tests/test_x.py::test_y"."""
    return f"broke {red_text(command, confirmed, failed_tests)}"


def command_rates(
    model: FlakeModel, commands: Sequence[Sequence[str]] | None, prior: float
) -> list[CommandRate]:
    """The configured verify commands' rates, in their order: measured, or the prior with no trials.
    Commands the log knows that are no longer configured are left out (their rates decide nothing);
    ``commands`` None (no readable configuration): every command the log measured."""
    measured = {r.command: r for r in model.measured(prior)}
    if commands is None:
        return list(measured.values())
    keys = list(dict.fromkeys(command_key(c) for c in commands))
    return [measured.get(key, CommandRate(key, prior, 0.0, 0.0)) for key in keys]


def rate_text(command: str, rate: float, trials: float, flakes: float) -> str:
    """ "`npm test`: 4.8% flaky (3 of 62 runs on good trees)", or "`npm test`: prior 5% (not measured
    yet)". The counts are decayed (older runs weigh less), so they are shown rounded."""
    if round(trials) <= 0:
        return f"`{command}`: prior {percent(rate)} (not measured yet)"
    runs = round(trials)
    counted = f"{round(flakes)} of {runs} run{'' if runs == 1 else 's'} on good trees"
    return f"`{command}`: {percent(rate)} flaky ({counted})"


def quarantined_rows(model: FlakeModel) -> list[tuple[str, str, float]]:
    """(command key, test id, measured rate) of every quarantined test, by command then test."""
    return sorted((key, test, rate) for (key, test), rate in model.quarantined().items())


def flakes_json(
    model: FlakeModel,
    known_red: Sequence[tuple[str, str]],
    commands: Sequence[Sequence[str]] | None,
    prior: float,
) -> dict[str, Any]:
    """``status --json``'s ``flakes``: each configured command's rate, the quarantined tests, and
    the tests red on the newest verified head (``known_red``: they blame nobody)."""
    return {
        "commands": [
            {"command": r.command, "rate": r.rate, "trials": r.trials, "flakes": r.flakes}
            for r in command_rates(model, commands, prior)
        ],
        "quarantined": [
            {"command": key, "test": test, "rate": rate} for key, test, rate in quarantined_rows(model)
        ],
        "red_on_base": [{"command": key, "test": test} for key, test in known_red],
    }
