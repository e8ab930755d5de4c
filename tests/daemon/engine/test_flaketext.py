"""daemon.engine.flaketext: the words of a confirmed red and of a measured flake rate."""

from __future__ import annotations

from daemon.engine.flaketext import broke_text, command_rates, percent, rate_text, red_text
from statemachine.flakes import FlakeModel


def test_a_confirmed_red_names_its_runs() -> None:
    """The seed's example: "broke `npm test` (confirmed in 3 of 3 runs)"."""
    assert broke_text(["npm", "test"], (3, 3), ()) == "broke `npm test` (confirmed in 3 of 3 runs)"


def test_the_failing_tests_follow_a_colon() -> None:
    """With tests named: "...: tests/test_x.py::test_y"."""
    said = broke_text(["pytest", "-q"], (2, 2), ("tests/test_x.py::test_y",))
    assert said == "broke `pytest -q` (confirmed in 2 of 2 runs): tests/test_x.py::test_y"


def test_at_most_three_tests_are_named_then_a_count() -> None:
    """Five failing tests: three named, "+2 more"."""
    said = red_text(["pytest"], (1, 1), ("a", "b", "c", "d", "e"))
    assert said == "`pytest` (confirmed in 1 of 1 run): a, b, c +2 more"


def test_a_record_without_a_confirmation_names_only_the_command() -> None:
    """An old rejection ((0, 0), no tests) reads "broke `make check`"."""
    assert broke_text(["make", "check"], (0, 0), ()) == "broke `make check`"


def test_the_command_is_spelled_as_a_shell_would() -> None:
    """An argument with a space is quoted (flakes.command_key), so the text is the rates' key."""
    assert red_text(["sh", "-c", "make test"], (0, 0), ()) == "`sh -c 'make test'`"


def test_an_unmeasured_command_says_it_is_at_the_prior() -> None:
    """A configured command the log has no runs of: "prior 5% (not measured yet)"."""
    (rate,) = command_rates(FlakeModel(), [["npm", "test"]], 0.05)
    assert rate_text(*rate) == "`npm test`: prior 5% (not measured yet)"


def test_a_measured_command_says_its_rate_and_counts() -> None:
    """3 flakes in 62 runs on trees it passed, blended with the prior: the rate and the counts."""
    model = FlakeModel()
    model.observe([("npm test", 62, 3)], [], [], when=1_000.0)
    (rate,) = command_rates(model, [["npm", "test"]], 0.05)
    assert rate_text(*rate) == f"`npm test`: {percent(rate.rate)} flaky (3 of 62 runs on good trees)"
    assert percent(rate.rate) == "4.9%"  # (3 + 0.05 * 10) / (62 + 10)


def test_commands_no_longer_configured_are_left_out() -> None:
    """The log's rate of an old command is not shown beside the configured ones."""
    model = FlakeModel()
    model.observe([("old check", 2, 1)], [], [], when=1_000.0)
    assert [r.command for r in command_rates(model, [["npm", "test"]], 0.05)] == ["npm test"]
