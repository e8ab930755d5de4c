"""The flake model and its place in the fold: runs needed, learned rates, decay, quarantine, base failures.

Pure: events are built as the log would hold them (registry-encoded, then through JSON) and folded by
the real projection; no database, no clock.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from statemachine import Projection, SnapshotIncompatible
from statemachine import events as ev
from statemachine.flakes import HALF_LIFE_DAYS, FlakeModel, command_key, runs_needed
from statemachine.handlers import epoch_seconds
from store import StoredEvent
from store.eventlog import format_time
from store.hashing import canonical_json
from tests.statemachine.builders import stored

PRIOR = 0.05
FALSE_BLAME = 0.01
RETRIES = 5
ARGV = ("pytest", "-q")
KEY = command_key(ARGV)
TEST = "tests/test_x.py::test_y"
START = datetime(2026, 1, 1, tzinfo=UTC)


class Log:
    """Verify runs of one batch as the log would hold them: seq, time and payload through JSON."""

    def __init__(self) -> None:
        self.rows: list[StoredEvent] = []
        self.add(ev.BatchPlanned(key="1.1", phase=1, todo_ids=()), START)

    def add(self, evt: object, at: datetime) -> None:
        row = stored(len(self.rows) + 1, "batch-1.1", evt, at=format_time(at))
        self.rows.append(row._replace(payload=json.loads(canonical_json(row.payload))))

    def run(self, at: datetime, *, baseline: bool = False, sha: str = "", **fields: Any) -> None:
        """A verify run; ``passed`` follows from ``tries`` unless given."""
        tries = fields.get("tries", ())
        fields.setdefault("passed", all(runs > reds for _, runs, reds in tries))
        n = sum(1 for r in self.rows if r.type == "batch.verify_run")
        self.add(ev.BatchVerifyRun(key="1.1", run=n, todo_ids=(), baseline=baseline, sha=sha, **fields), at)

    def fold(self, upto: int | None = None) -> Projection:
        pr = Projection()
        pr.apply_all(self.rows[:upto])
        return pr


def _days(n: float) -> datetime:
    return START + timedelta(days=n)


# --- runs needed ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rate", "max_reruns", "expected"),
    [(0.2, RETRIES, 3), (PRIOR, RETRIES, 2), (0.5, 2, 3), (0.001, RETRIES, 2), (0.2, 0, 1)],
    ids=[
        "three-at-0.2",
        "two-at-the-prior",
        "capped-by-retries",
        "a-re-run-even-at-a-tiny-rate",
        "none-allowed",
    ],
)
def test_runs_needed_is_the_fewest_all_red_runs_below_false_blame(
    rate: float, max_reruns: int, expected: int
) -> None:
    """Red runs needed: 3 at f=0.2, 2 at the 0.05 prior, at most 1 + retries; a red is re-run once even
    when flakes are rare (else a command that starts to flake is never seen to), unless retries = 0."""
    assert runs_needed(rate, FALSE_BLAME, max_reruns) == expected


# --- learning the rate ---------------------------------------------------------------------------


def test_rate_is_the_prior_before_any_verify_run() -> None:
    """A command never run has the configured prior as its rate."""
    assert Log().fold().flakes.rate(KEY, PRIOR) == PRIOR


def _simulate(log: Log, trees: int, flake: float, seed: int) -> Projection:
    """``trees`` good trees verified as the engine would: each red run re-run until green or until
    ``runs_needed`` of the rate learned so far are red; every run red with probability ``flake``."""
    rng = random.Random(seed)
    pr = log.fold()
    for i in range(trees):
        needed = runs_needed(pr.flakes.rate(KEY, PRIOR), FALSE_BLAME, RETRIES)
        runs = reds = 0
        while runs < needed:
            runs += 1
            if rng.random() >= flake:
                break
            reds += 1
        passed = runs > reds
        log.run(
            START + timedelta(minutes=i),
            tries=((KEY, runs, reds),),
            command=() if passed else ARGV,
            flaked=passed and reds > 0,
            confirmed=(0, 0) if passed else (reds, runs),
        )
        pr.apply(log.rows[-1])
    return pr


def test_rate_converges_to_a_twenty_percent_flake_from_the_log() -> None:
    """Seeded verify runs of a command that flakes 20% of the time teach a rate of 0.2 +- 0.04.

    2000 runs, not 500: the estimate reads about 0.18 (see the flakes module: unlucky good trees
    are left out), and at 500 runs one seed in ten strays past 0.16; at 2000 about one in 300."""
    pr = _simulate(Log(), 2000, 0.2, seed=14)
    assert abs(pr.flakes.rate(KEY, PRIOR) - 0.2) <= 0.04


def test_learned_rate_is_the_same_when_folded_again_from_the_log() -> None:
    """The rate learned run by run is exactly what a fresh fold of the same log gives."""
    log = Log()
    live = _simulate(log, 100, 0.2, seed=3)
    assert log.fold().flakes.to_json() == live.flakes.to_json() != {}


def test_trees_red_to_the_end_teach_nothing() -> None:
    """Runs on trees that stayed red (broken, or unlucky every time) leave the rate at the prior."""
    log = Log()
    for i in range(50):
        log.run(_days(i / 100), tries=((KEY, 3, 3),), command=ARGV, confirmed=(3, 3))
    pr = log.fold()
    assert (pr.flakes.rate(KEY, PRIOR), pr.flakes.measured(PRIOR)) == (PRIOR, [])


def test_a_verify_run_recorded_before_issue_14_folds_as_before() -> None:
    """An old record without tries or tests counts as a run and teaches the flake model nothing."""
    log = Log()
    log.add(ev.BatchVerifyRun(key="1.1", run=1, todo_ids=("7",), passed=False, command=ARGV), START)
    pr = log.fold()
    assert (pr.batches["1.1"].runs, pr.verify_runs, pr.flakes.to_json()) == (1, 1, {})


def test_an_old_flake_weighs_half_after_the_half_life() -> None:
    """A flake recorded HALF_LIFE_DAYS before a later run counts as half a flake (and its runs half)."""
    log = Log()
    log.run(_days(0), tries=((KEY, 2, 1),))
    log.run(_days(HALF_LIFE_DAYS), tries=((KEY, 1, 0),))
    (measured,) = log.fold().flakes.measured(PRIOR)
    assert (measured.flakes, measured.trials) == pytest.approx((0.5, 2.0))


def test_recorded_at_is_read_as_utc_epoch_seconds() -> None:
    """The log's fixed-width UTC time is epoch seconds; a time batchd did not write is 0 (no decay)."""
    assert (epoch_seconds(format_time(START)), epoch_seconds("not a time")) == (START.timestamp(), 0.0)


# --- quarantine ----------------------------------------------------------------------------------


def _flaky(log: Log, at: datetime) -> None:
    """A run on which TEST failed once and passed on the re-run."""
    log.run(at, tries=((KEY, 2, 1),), flaky_tests=((KEY, TEST),), flaked=True)


def test_one_flake_of_a_test_does_not_quarantine_it() -> None:
    """A single flake may be the machine's: the test is not quarantined."""
    log = Log()
    _flaky(log, _days(0))
    assert log.fold().flakes.quarantined() == {}


def test_two_flakes_of_a_test_quarantine_it_with_its_rate() -> None:
    """A test seen flaking twice is quarantined, with its flakes per run of the command as its rate."""
    log = Log()
    _flaky(log, _days(0))
    _flaky(log, _days(0.01))
    rate = log.fold().flakes.quarantined()[(KEY, TEST)]
    assert rate == pytest.approx(2 / 4, rel=1e-3)


def test_quarantine_is_lifted_after_a_week_without_flakes() -> None:
    """A quarantined test that stopped flaking leaves quarantine once its flakes decayed (7 days)."""
    log = Log()
    _flaky(log, _days(0))
    _flaky(log, _days(0.01))
    log.run(_days(7), tries=((KEY, 1, 0),))
    assert log.fold().flakes.quarantined() == {}


def test_excused_failures_do_not_keep_a_test_quarantined() -> None:
    """Failures excused by the quarantine are not flakes seen: a test failing every day still leaves
    quarantine after a week, so a todo that really breaks it is blamed again."""
    log = Log()
    _flaky(log, _days(0))
    _flaky(log, _days(0.01))
    for day in range(1, 8):
        log.run(_days(day), tries=((KEY, 1, 0),), excused=((KEY, TEST),))
    assert log.fold().flakes.quarantined() == {}


def test_a_test_long_quiet_is_forgotten() -> None:
    """A test that last flaked months ago is dropped from the model, which does not grow for ever."""
    log = Log()
    _flaky(log, _days(0))
    log.run(_days(120), tries=((KEY, 1, 0),))
    assert log.fold().flakes.to_json()[KEY]["tests"] == {}


# --- base failures -------------------------------------------------------------------------------


def test_base_failures_are_the_tests_that_failed_on_the_baseline() -> None:
    """A red baseline's failed tests (keyed by its command) and a baseline's flaky and excused tests are
    base failures, each once; a candidate run's failures are not."""
    log = Log()
    log.run(_days(0), baseline=True, sha="b1", tries=((KEY, 2, 1),), flaky_tests=((KEY, "t::flaky"),))
    excused = ((KEY, "t::flaky"), (KEY, "t::q"))
    log.run(_days(0), baseline=True, sha="b1", tries=((KEY, 1, 0),), excused=excused)
    log.run(_days(0), baseline=True, sha="b1", tries=((KEY, 3, 3),), command=ARGV, failed_tests=("t::red",))
    log.run(_days(0), tries=((KEY, 3, 3),), command=ARGV, failed_tests=("t::candidate",))
    assert log.fold().batches["1.1"].base_failures == ((KEY, "t::flaky"), (KEY, "t::q"), (KEY, "t::red"))


def test_base_failures_are_those_of_the_newest_base() -> None:
    """A baseline of another base replaces the failures seen on the old one."""
    log = Log()
    log.run(_days(0), baseline=True, sha="b1", tries=((KEY, 3, 3),), command=ARGV, failed_tests=("t::red",))
    log.run(_days(1), baseline=True, sha="b2", tries=((KEY, 1, 0),))
    batch = log.fold().batches["1.1"]
    assert (batch.base_failures, batch.base_failures_sha) == ((), "b2")


def test_a_base_passing_as_red_on_its_tests_makes_them_known_red() -> None:
    """A baseline that passed with a command red in every run (known red): that command's excused
    tests are red on the newest head; a baseline's flake is not."""
    log = Log()
    log.run(_days(0), baseline=True, sha="b1", tries=((KEY, 2, 1),), flaky_tests=((KEY, "t::flaky"),))
    assert log.fold().known_red == ()
    log.run(_days(0), baseline=True, sha="b1", tries=((KEY, 3, 3),), passed=True, excused=((KEY, "t::red"),))
    assert log.fold().known_red == ((KEY, "t::red"),)


def test_a_green_baseline_of_a_new_base_clears_known_red() -> None:
    """A person's fix: the baseline of the new base passes outright, so the old head's red tests are
    no longer known red (a change breaking them now is blamed)."""
    log = Log()
    log.run(_days(0), baseline=True, sha="b1", tries=((KEY, 3, 3),), passed=True, excused=((KEY, "t::red"),))
    log.run(_days(1), baseline=True, sha="b2", tries=((KEY, 1, 0),))
    assert log.fold().known_red == ()


# --- snapshots -----------------------------------------------------------------------------------


def _flaky_history() -> Log:
    log = Log()
    _simulate(log, 40, 0.3, seed=7)
    _flaky(log, _days(1))
    _flaky(log, _days(2))
    log.run(_days(3), baseline=True, sha="b1", tries=((KEY, 3, 3),), command=ARGV, failed_tests=("t::red",))
    log.run(_days(20), tries=((KEY, 2, 1),), flaky_tests=((KEY, "t::late"),))
    return log


def test_snapshot_plus_tail_with_flakes_equals_replay_from_zero() -> None:
    """A snapshot taken mid-history (through JSON) plus the tail equals the fold from zero, flakes too."""
    log = _flaky_history()
    half = len(log.rows) // 2
    snapshot = json.loads(canonical_json(log.fold(half).to_json()))
    resumed = Projection.from_json(snapshot)
    resumed.apply_all(log.rows[half:])
    full = log.fold()
    assert (resumed.to_json() == full.to_json(), resumed.flakes.to_json()) == (True, full.flakes.to_json())


def test_snapshot_keeps_base_failures_as_pairs() -> None:
    """base_failures come back from a snapshot as tuples of pairs (hashable, as the engine's sets need)."""
    pr = _flaky_history().fold()
    again = Projection.from_json(json.loads(canonical_json(pr.to_json())))
    assert again.batches["1.1"].base_failures == pr.batches["1.1"].base_failures == ((KEY, "t::red"),)


def test_snapshot_of_the_format_before_the_flake_model_is_refused() -> None:
    """A format-1 snapshot (no flake model) raises SnapshotIncompatible, so replay starts from zero."""
    data = Projection().to_json()
    data["format"] = 1
    del data["flakes"]
    with pytest.raises(SnapshotIncompatible, match="format 1"):
        Projection.from_json(data)


def test_flake_model_json_round_trip_is_exact() -> None:
    """to_json/from_json keeps every decayed float bit for bit."""
    model = _simulate(Log(), 60, 0.25, seed=11).flakes
    model.observe([(KEY, 2, 1)], [(KEY, TEST)], [], _days(0.37).timestamp())
    again = FlakeModel.from_json(json.loads(canonical_json(model.to_json())))
    assert again.to_json() == model.to_json()
