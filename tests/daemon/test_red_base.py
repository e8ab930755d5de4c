"""Tests red on the base blame nobody, end to end (issue 14): a baseline whose failures are named
tests is not a pause, those tests are excused for the batch and carried to the next one (``known_red``),
a todo that fixes one clears it, and a todo breaking another test is still rejected for that test.

Real daemons (``batchd run --once`` as a process) on real repositories with a real bare remote; the
verify command is the real ``unittest`` runner over the repository's ``tests/``, whose output names
the failing tests. Per-tree call counters (for the test that flakes on the base) live outside the
repository, as in ``test_flake_records.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flake_repo import (
    FRAGILE_TEST_ID,
    KEY,
    MODS_TEST_ID,
    TEST_FRAGILE,
    TEST_MODS,
    UNITTEST_CHECK,
    flaky_repo,
    run_cli,
)
from gitrepo import UNNAMED_BREAK
from phase_repo import CHECK, PhaseRepo, module, todo_name, todo_text, writes
from procs import batchd, status_json

# Red on every tree, deterministically, until a todo adds fixed.txt.
TEST_RED = """\
import os, unittest

class Red(unittest.TestCase):
    def test_red(self):
        self.assertTrue(os.path.exists("fixed.txt"), "red on the base")
"""

RED_TEST_ID = "test_red.Red.test_red"


def unittest_repo(
    tmp: Path,
    todos: dict[str, str],
    tests: dict[str, str],
    *,
    max_parallel: int,
    red_base: str = "continue",
) -> PhaseRepo:
    """A repository checked by the unittest runner over ``tests``, with the default confirmation
    (``retries = 5``) and ``[verify] red_base`` (the tests here are about going on past a base red on
    named tests)."""
    checks = {"check.py": UNITTEST_CHECK, **{f"tests/{name}": text for name, text in tests.items()}}
    verify = f'retries = 5\nred_base = "{red_base}"'
    return flaky_repo(tmp, todos, checks, verify=verify, max_parallel=max_parallel)


def payloads(repo: PhaseRepo, type_: str, since: int = 0) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in repo.events(type_) if e.seq > since]


def remote_files(repo: PhaseRepo) -> list[str]:
    return repo.remote_git("ls-tree", "-r", "--name-only", "main").split()


# --- a test red on every base: the run goes on, a culprit is still found, a fix clears it ----------


@dataclass(frozen=True)
class TwoRuns:
    """The first run's records (todo 1 good, todo 2 breaks test_mods, test_red red throughout), then
    the second's, after todo 3 (which adds fixed.txt) was dropped in."""

    repo: PhaseRepo
    first_seq: int  # the last event of the first run
    first_status: str
    first_json: dict[str, Any]
    first_human: str  # `batchd status`, its whitespace folded
    second_status: str
    second_json: dict[str, Any]


@pytest.fixture(scope="module")
def red_base(tmp_path_factory: pytest.TempPathFactory) -> TwoRuns:
    repo = unittest_repo(
        tmp_path_factory.mktemp("red-base"),
        {"1": module("1"), "2": module("2", UNNAMED_BREAK)},
        {"test_mods.py": TEST_MODS, "test_red.py": TEST_RED},
        max_parallel=3,
    )
    run_cli(repo)
    first_seq = repo.events()[-1].seq
    first_status, first_json = repo.status(), status_json(repo.root)
    human = batchd(repo.root, "status")
    assert human.returncode == 0, human.stderr
    todo = todo_text("3", writes("fixed.txt", content="fixed\n"))
    (repo.root / "todos" / todo_name("3")).write_text(todo, encoding="utf-8")
    run_cli(repo)
    first_human = " ".join(human.stdout.split())
    second_status, second_json = repo.status(), status_json(repo.root)
    return TwoRuns(repo, first_seq, first_status, first_json, first_human, second_status, second_json)


def test_a_baseline_red_only_for_named_tests_does_not_pause_the_run(red_base: TwoRuns) -> None:
    """The base fails test_red in every run: its baseline passes with test_red excused, no batch is
    paused."""
    baselines = [p for p in payloads(red_base.repo, "batch.verify_run") if p["baseline"]]
    assert baselines and all(p["passed"] for p in baselines)
    assert [KEY, RED_TEST_ID] in baselines[0]["excused"]
    assert payloads(red_base.repo, "batch.paused") == []


def test_a_todo_beside_a_test_red_on_the_base_is_accepted_and_pushed(red_base: TwoRuns) -> None:
    """Todo 1 does not touch test_red: it is accepted, its module is on the remote."""
    accepted = [p["todo_id"] for p in payloads(red_base.repo, "todo.accepted") if p["todo_id"] != "3"]
    assert accepted == ["1"]
    assert "mods/m1.py" in remote_files(red_base.repo)


def test_a_todo_breaking_another_test_is_rejected_for_that_test_alone(red_base: TwoRuns) -> None:
    """Todo 2 breaks test_mods while test_red is red on the base: rejected, naming test_mods only;
    nobody is rejected for test_red."""
    rejected = payloads(red_base.repo, "todo.rejected")
    assert [(p["todo_id"], p["failed_tests"]) for p in rejected] == [("2", [MODS_TEST_ID])]
    assert RED_TEST_ID not in rejected[0]["reason"]


def test_the_final_check_passes_beside_a_test_red_on_the_base(red_base: TwoRuns) -> None:
    """Both runs' verdicts: the final check was green (test_red excused there too, then fixed)."""
    verdicts = payloads(red_base.repo, "run.completed")
    assert [p["checks_green"] for p in verdicts] == [True, True], verdicts


def test_the_status_file_lists_the_test_red_on_the_base(red_base: TwoRuns) -> None:
    """The first run's status file has a "Red on the base" table whose row names test_red and its
    command."""
    section = red_base.first_status.split("### Red on the base", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith(f"| {RED_TEST_ID} |")]
    assert len(rows) == 1 and f"`{KEY}`" in rows[0]


def test_status_json_lists_the_test_red_on_the_base(red_base: TwoRuns) -> None:
    """The first run's `status --json`: flakes.red_on_base is test_red under its command."""
    assert red_base.first_json["flakes"]["red_on_base"] == [{"command": KEY, "test": RED_TEST_ID}]


def test_human_status_names_the_test_red_on_the_base(red_base: TwoRuns) -> None:
    """The first run's `batchd status` says one test is red on the base and names it with its command."""
    assert f"red on the base, blamed on nobody (1): {RED_TEST_ID} (`{KEY}`)" in red_base.first_human


def test_a_todo_fixing_the_test_clears_it_from_red_on_the_base(red_base: TwoRuns) -> None:
    """Todo 3 adds fixed.txt, so test_red passes on its tree: it is accepted, and afterwards neither
    `status --json` nor the status file lists test_red as red on the base."""
    assert [p["todo_id"] for p in payloads(red_base.repo, "todo.accepted", red_base.first_seq)] == ["3"]
    assert red_base.second_json["flakes"]["red_on_base"] == []
    assert "### Red on the base" not in red_base.second_status


# --- carried: red on batch 1's head, so not batch 2's todo's fault -------------------------------


@pytest.fixture(scope="module")
def carried(tmp_path_factory: pytest.TempPathFactory) -> PhaseRepo:
    """Todos 1 and 2 (good) in batches of their own. test_fragile flakes on the first base (the
    baseline sees it) and fails on every tree with todo 1's module: excused in batch 1, whose head
    batch 2 builds on without a baseline of its own (that head was seen green)."""
    repo = unittest_repo(
        tmp_path_factory.mktemp("carried"),
        {"1": module("1"), "2": module("2")},
        {"test_mods.py": TEST_MODS, "test_fragile.py": TEST_FRAGILE},
        max_parallel=1,
    )
    run_cli(repo)
    return repo


def test_batch_2_on_batch_1s_head_has_no_baseline_and_fails_the_carried_test(carried: PhaseRepo) -> None:
    """The case as set up: one baseline (on the first base) only, and batch 2's tree ran red for
    test_fragile, excused."""
    runs = payloads(carried, "batch.verify_run")
    assert len({p["sha"] for p in runs if p["baseline"]}) == 1
    (second,) = [p for p in runs if not p["baseline"] and "2" in p["todo_ids"]]
    assert [KEY, FRAGILE_TEST_ID] in second["excused"]


def test_a_failure_red_on_the_previous_batchs_head_does_not_blame_the_next_batch(carried: PhaseRepo) -> None:
    """Todo 2 does not touch test_fragile, which already failed on batch 1's head: accepted (both
    todos are), nobody rejected, and both modules are pushed."""
    assert sorted(p["todo_id"] for p in payloads(carried, "todo.accepted")) == ["1", "2"]
    assert payloads(carried, "todo.rejected") == []
    assert {"mods/m1.py", "mods/m2.py"} <= set(remote_files(carried))


# --- the default: a base red on named tests pauses ------------------------------------------------


def test_by_default_a_base_red_on_named_tests_pauses_and_blames_nobody(tmp_path: Path) -> None:
    """[verify] red_base = "pause" (the default): the base fails test_red in every run, so the batch
    is paused naming the command, no todo is accepted or rejected, nothing is pushed."""
    repo = unittest_repo(
        tmp_path,
        {"1": module("1")},
        {"test_mods.py": TEST_MODS, "test_red.py": TEST_RED},
        max_parallel=1,
        red_base="pause",
    )
    done = repo.run_cli(timeout=120)
    assert done.returncode == 3, done.stdout[-2000:] + done.stderr[-2000:]
    (paused,) = payloads(repo, "batch.paused")
    assert paused["command"] == list(CHECK)
    baseline = next(p for p in payloads(repo, "batch.verify_run") if p["baseline"])
    assert baseline["confirmed"][0] == baseline["confirmed"][1] >= 2  # confirmed, not one red run
    assert payloads(repo, "todo.accepted") == payloads(repo, "todo.rejected") == []
    assert "mods/m1.py" not in remote_files(repo)
