"""`batchd status` for a person: why a run is paused or stopping, git's useful line (the whole text in
--json and in the log), and text from todos and git shown as written (no Rich markup eaten)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from phase_repo import PhaseRepo, build_repo, todo_name
from procs import base_env, batchd

NO_SANDBOX = 'sandbox = "none"'
FILES = 60  # enough that git's list of files is longer than any cut batchd ever made (800 chars)
MERGE_ERROR = "error: The following untracked working tree files would be overwritten by merge:"


@pytest.fixture(scope="module")
def blocked_checkout(tmp_path_factory: pytest.TempPathFactory) -> tuple[PhaseRepo, int]:
    """Todo 1 ("Fix the [agent] section") adds data/f0..f59.txt; meanwhile a person creates the same
    files, untracked, in their checkout: the phase commit cannot be merged there, the daemon pauses
    the run with git's message, and `run --once` stops (exit 3)."""
    tmp = tmp_path_factory.mktemp("blocked")
    actions = [f"write data/f{i:02}.txt ours" for i in range(FILES)]
    actions += [f"write {{root}}/data/f{i:02}.txt theirs" for i in range(FILES)]
    repo = build_repo(tmp, {}, hostile={"1": actions}, agent_extra=NO_SANDBOX)
    path = repo.root / "todos" / todo_name("1")
    path.write_text(path.read_text(encoding="utf-8").replace("# Thing 1", "# Fix the [agent] section"))
    return repo, repo.run()


def test_the_pause_keeps_gits_whole_message_in_the_log(blocked_checkout: tuple[PhaseRepo, int]) -> None:
    """run.paused holds git's error line and every file it named (nothing cut)."""
    repo, rc = blocked_checkout
    assert rc == 3
    reason = str(repo.events("run.paused")[-1].payload["reason"])
    assert MERGE_ERROR in reason
    assert all(f"data/f{i:02}.txt" in reason for i in range(FILES))
    assert "batchd resume" in reason.splitlines()[0]


def test_human_status_shows_why_the_run_is_paused_in_one_line(
    blocked_checkout: tuple[PhaseRepo, int],
) -> None:
    """`batchd status` says paused, with the action and git's error line, not the list of files."""
    repo, _ = blocked_checkout
    done = batchd(repo.root, "status")
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("paused: ")]
    assert len(lines) == 1, done.stdout
    assert "batchd resume" in lines[0] and MERGE_ERROR in lines[0]
    assert "data/f30.txt" not in done.stdout


def test_status_json_gives_the_whole_detail(blocked_checkout: tuple[PhaseRepo, int]) -> None:
    """`batchd status --json`: run.detail is the whole reason, git's list of files included."""
    repo, _ = blocked_checkout
    run = json.loads(batchd(repo.root, "status", "--json").stdout)["run"]
    assert run["state"] == "paused"
    assert MERGE_ERROR in run["detail"] and "data/f59.txt" in run["detail"]


def test_text_in_square_brackets_is_shown_as_written(blocked_checkout: tuple[PhaseRepo, int]) -> None:
    """A todo titled "Fix the [agent] section" appears with its brackets (Rich markup is escaped)."""
    repo, _ = blocked_checkout
    wide = base_env(COLUMNS="200")  # the title on one line of the table, not wrapped at 80 columns
    assert "Fix the [agent] section" in batchd(repo.root, "status", env=wide).stdout


def test_human_status_shows_why_the_run_is_stopping(tmp_path: Path) -> None:
    """The tests fail before any todo ran (`run --once` stops, exit 3): the status says why."""
    repo = build_repo(tmp_path, {}, hostile={"1": []}, agent_extra=NO_SANDBOX, files={"mods/red.py": "1/0\n"})
    assert repo.run() == 3
    done = batchd(repo.root, "status")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("stopping: "))
    assert "the baseline is red" in line


def test_an_error_hint_with_square_brackets_is_printed_as_written(tmp_path: Path) -> None:
    """The CLI's error output keeps `[agent]` in a message and its hint (nothing read as markup)."""
    repo = build_repo(tmp_path, {}, hostile={"1": []})
    config = repo.root / "batchd.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[batchd]\n", '[batchd]\npreset = "claude"\n')
    )
    done = batchd(repo.root, "plan", "show")
    assert done.returncode == 2
    assert "[agent]" in done.stderr, done.stderr
