"""The run's verdict says what became of each todo, counts only todos whose files are still there, and
only the last push: each test is a whole ``batchd run --once`` on a real repository and bare remote,
with ``tests/agents/hostile.py`` as the agent (no sandbox: it acts as the person too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from phase_repo import PhaseRepo, build_repo, hostile_text, refuse_pushes, todo_name
from procs import batchd

NO_SANDBOX = 'sandbox = "none"'


def verdict(repo: PhaseRepo) -> dict[str, object]:
    return dict(repo.events("run.completed")[-1].payload)


def status_text(repo: PhaseRepo) -> str:
    done = batchd(repo.root, "status")
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhaseRepo, int]:
    """One run: 1 completes, 2 is blocked (its dependency 9 is pending), 3 is rejected (its module
    breaks the check), 4 is invalid (bad front matter), 5 is cancelled with `batchd cancel` while its
    agent runs, and 6's file is deleted by a person while its agent runs."""
    tmp = tmp_path_factory.mktemp("kinds")
    repo = build_repo(
        tmp,
        {},
        hostile={
            "1": [],
            "3": ["write mods/broken3.py 1/0"],
            "5": ["batchd cancel 5", "sleep 60"],
            "6": ["delete {root}/todos/" + todo_name("6"), "sleep 60"],
        },
        agent_extra=NO_SANDBOX,
        max_parallel=4,
    )
    todos = repo.root / "todos"
    (todos / todo_name("2")).write_text(
        hostile_text("2").replace("---\n\n", "dependencies: [9]\n---\n\n", 1), encoding="utf-8"
    )
    (todos / todo_name("9", "pending")).write_text(hostile_text("9", status="pending"), encoding="utf-8")
    (todos / todo_name("4")).write_text("---\nstatus: [ready\n---\n\n# Four\n", encoding="utf-8")
    return repo, repo.run()


def test_the_verdict_names_what_each_unfinished_todo_is(kinds: tuple[PhaseRepo, int]) -> None:
    """blocked, rejected, invalid and cancelled, per todo; never "missing"; exit 1."""
    repo, rc = kinds
    found = verdict(repo)
    assert (rc, found["success"], found["complete"]) == (1, False, ["1"])
    assert dict(found["not_complete"]) == {  # type: ignore[call-overload]
        "2": "blocked",
        "3": "rejected",
        "4": "invalid",
        "5": "cancelled",
    }
    assert "missing" not in json.dumps(found)


def test_a_todo_deleted_mid_run_is_removed_not_counted(kinds: tuple[PhaseRepo, int]) -> None:
    """The todo whose file a person deleted while its agent ran is listed as removed, not as failing."""
    repo, _ = kinds
    found = verdict(repo)
    assert found["removed"] == ["6"]
    assert "6" not in dict(found["not_complete"])  # type: ignore[call-overload]


def test_human_status_and_status_file_say_each_kind(kinds: tuple[PhaseRepo, int]) -> None:
    """`batchd status` and the status file's verdict line name each kind with its todos."""
    repo, _ = kinds
    expected = "blocked: 2; rejected: 3; invalid: 4; cancelled: 5; removed (file deleted or renamed away): 6"
    assert expected in " ".join(status_text(repo).split())
    assert expected in repo.status()


def test_a_todo_deleted_between_runs_stops_failing_the_verdict(tmp_path: Path) -> None:
    """Run 1 fails on a rejected todo; a person deletes its file; the next `run --once` amends the
    verdict (the todo is removed) and exits 0."""
    repo = build_repo(
        tmp_path, {}, hostile={"1": [], "2": ["write mods/broken2.py 1/0"]}, agent_extra=NO_SANDBOX
    )
    assert repo.run() == 1
    assert dict(verdict(repo)["not_complete"]) == {"2": "rejected"}  # type: ignore[call-overload]
    repo.todo("2").unlink()
    assert repo.run() == 0
    found = verdict(repo)
    assert (found["success"], found["not_complete"], found["removed"]) == (True, [], ["2"])


def test_a_failed_push_superseded_by_a_later_one_does_not_fail_the_verdict(tmp_path: Path) -> None:
    """Phases 1 and 2 fail to push (the remote refuses six pushes: three attempts each); the final
    phase's push carries their commits and goes out: success, exit 0, the remote has everything."""
    repo = build_repo(
        tmp_path,
        {},
        hostile={"1": [], "2": []},
        agent_extra=NO_SANDBOX,
        plan={1: ("One", [["1"]], ""), 2: ("Two", [["2"]], ""), 3: ("Final", [], "")},
    )
    refuse_pushes(repo.remote, "not now", times=6)
    assert repo.run() == 0
    assert len(repo.events("phase.push_failed")) == 2
    found = verdict(repo)
    assert (found["success"], found["unpushed"]) == (True, "")
    assert repo.remote_git("rev-parse", "main") == repo.git("rev-parse", "main")


def test_a_failed_last_push_fails_the_verdict_after_it(tmp_path: Path) -> None:
    """The final phase's push fails after the verdict was recorded: the verdict is amended to a failure
    naming the phase, and `run --once` exits 1."""
    repo = build_repo(
        tmp_path,
        {},
        hostile={"1": []},
        agent_extra=NO_SANDBOX,
        plan={1: ("One", [["1"]], ""), 2: ("Final", [], "")},
    )
    refuse_pushes(repo.remote, "closed for maintenance")
    assert repo.run() == 1
    found = verdict(repo)
    assert found["success"] is False
    assert str(found["unpushed"]).startswith("phase 2 was not pushed")
