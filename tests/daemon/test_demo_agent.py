"""The scripted agent, run as a real subprocess in a temporary git repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.config import AgentConfig
from daemon.world.agentproc import enforce_timeout, start_agent
from daemon.world.agentresult import finish, read_result, run_agent
from daemon.world.agents import agent_env, build_argv

PY = sys.executable
FENCE = "```"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "src").mkdir()
    (root / "src" / "core.py").write_text("def add(a, b):\n    return a + b\n\n# return a + b\n")
    (root / "old.py").write_text("x = 1\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def todo(tmp_path: Path, block: str | None, name: str = "273-ready-p1-demo.md") -> Path:
    folder = tmp_path / "todos"
    folder.mkdir(exist_ok=True)
    body = (
        f"# Demo todo\n\nSome text.\n\n{FENCE}batchd-agent\n{block}\n{FENCE}\n"
        if block is not None
        else "# x\n"
    )
    path = folder / name
    path.write_text(body)
    return path


def agent(
    repo: Path, todo_path: Path | None, *, attempt: int | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATCHD_DEMO_SPEED": "0", **(extra_env or {})}
    if attempt is not None:
        env["BATCHD_ATTEMPT"] = str(attempt)
    args = [str(todo_path)] if todo_path is not None else []
    return subprocess.run(
        [PY, "-m", "daemon.demo.agent", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def changed(repo: Path) -> list[str]:
    return sorted(line[3:] for line in git(repo, "status", "--porcelain", "-uall").splitlines())


def test_without_block_appends_to_notes(repo: Path, tmp_path: Path) -> None:
    """A todo with no batchd-agent block still makes a change: a line in NOTES.md."""
    done = agent(repo, todo(tmp_path, None), attempt=2)
    assert done.returncode == 0, done.stderr
    assert (repo / "NOTES.md").read_text() == "- todo 273: handled by the scripted agent (attempt 2)\n"


def test_write_creates_nested_files(repo: Path, tmp_path: Path) -> None:
    """write creates files and their folders relative to the cwd."""
    block = "write:\n  - path: src/calc/tax.py\n    content: |\n      def tax(x): return x * 0.2\n"
    done = agent(repo, todo(tmp_path, block))
    assert done.returncode == 0, done.stderr
    assert (repo / "src/calc/tax.py").read_text() == "def tax(x): return x * 0.2\n"
    assert changed(repo) == ["src/calc/tax.py"]


def test_replace_edits_first_occurrence_only(repo: Path, tmp_path: Path) -> None:
    """replace changes the first match of find and leaves later ones."""
    block = 'replace:\n  - path: src/core.py\n    find: "return a + b"\n    with: "return b + a"\n'
    assert agent(repo, todo(tmp_path, block)).returncode == 0
    assert (repo / "src/core.py").read_text() == "def add(a, b):\n    return b + a\n\n# return a + b\n"


def test_replace_not_found_exits_3(repo: Path, tmp_path: Path) -> None:
    """A find string that is absent exits 3 with a message naming file and text."""
    block = 'replace:\n  - path: src/core.py\n    find: "nope"\n    with: "x"\n'
    done = agent(repo, todo(tmp_path, block))
    assert done.returncode == 3
    assert "'nope' not found" in done.stderr
    assert "src/core.py" in done.stderr


def test_replace_in_missing_file_exits_3(repo: Path, tmp_path: Path) -> None:
    """replace on a file that does not exist exits 3."""
    block = 'replace:\n  - path: src/none.py\n    find: "a"\n    with: "b"\n'
    done = agent(repo, todo(tmp_path, block))
    assert done.returncode == 3
    assert "does not exist" in done.stderr


def test_append_adds_text(repo: Path, tmp_path: Path) -> None:
    """append adds text at the end, creating the file if needed."""
    block = (
        'append:\n  - path: CHANGELOG.md\n    text: "- fixed things\\n"\n'
        '  - path: old.py\n    text: "y = 2\\n"\n'
    )
    assert agent(repo, todo(tmp_path, block)).returncode == 0
    assert (repo / "CHANGELOG.md").read_text() == "- fixed things\n"
    assert (repo / "old.py").read_text() == "x = 1\ny = 2\n"


def test_delete_removes_files(repo: Path, tmp_path: Path) -> None:
    """delete removes the listed files."""
    assert agent(repo, todo(tmp_path, "delete: [old.py]")).returncode == 0
    assert not (repo / "old.py").exists()


def test_delete_missing_exits_3(repo: Path, tmp_path: Path) -> None:
    """Deleting a file that does not exist exits 3."""
    done = agent(repo, todo(tmp_path, "delete: [gone.py]"))
    assert (done.returncode, "gone.py does not exist" in done.stderr) == (3, True)


def test_rename_moves_a_file(repo: Path, tmp_path: Path) -> None:
    """rename moves a file (as old agents renamed their todo)."""
    assert agent(repo, todo(tmp_path, "rename: [{from: old.py, to: lib/new.py}]")).returncode == 0
    assert (repo / "lib/new.py").read_text() == "x = 1\n"
    assert not (repo / "old.py").exists()


def test_stdout_and_exit_code(repo: Path, tmp_path: Path) -> None:
    """stdout is printed and exit sets the exit status."""
    done = agent(repo, todo(tmp_path, 'stdout: "some text"\nexit: 5'))
    assert (done.returncode, done.stdout) == (5, "some text\n")


def test_json_result_is_claude_like(repo: Path, tmp_path: Path) -> None:
    """json_result prints one result object with claude's fields, the given ones overriding."""
    block = "stdout: before\njson_result: {is_error: false, total_cost_usd: 0.01, num_turns: 3}"
    done = agent(repo, todo(tmp_path, block), attempt=1)
    last = json.loads(done.stdout.splitlines()[-1])
    assert last == {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": "scripted agent handled todo 273",
        "duration_ms": 0,
        "num_turns": 3,
        "session_id": "demo-273-1",
        "total_cost_usd": 0.01,
        "simulated": True,
    }


def test_json_result_says_its_cost_is_simulated(repo: Path, tmp_path: Path) -> None:
    """No LLM runs: the result says so, and batchd shows the cost as simulated."""
    done = agent(repo, todo(tmp_path, "json_result: {total_cost_usd: 0.25}"))
    assert json.loads(done.stdout)["simulated"] is True


def test_json_result_error_has_error_subtype(repo: Path, tmp_path: Path) -> None:
    """is_error true gives the error subtype, with exit code 0."""
    done = agent(repo, todo(tmp_path, "json_result: {is_error: true}"))
    assert done.returncode == 0
    assert json.loads(done.stdout)["subtype"] == "error_during_execution"


def test_json_result_true_gives_defaults(repo: Path, tmp_path: Path) -> None:
    """json_result: true prints a default success object."""
    done = agent(repo, todo(tmp_path, "json_result: true"))
    assert json.loads(done.stdout)["is_error"] is False


def test_attempt_overrides_are_selected(repo: Path, tmp_path: Path) -> None:
    """BATCHD_ATTEMPT=2 applies the attempts.2 overrides; attempt 1 uses the base block."""
    block = (
        'write: [{path: a.txt, content: "one"}]\nexit: 1\n'
        'attempts:\n  2: {write: [{path: a.txt, content: "two"}], exit: 0}'
    )
    path = todo(tmp_path, block)
    assert agent(repo, path, attempt=1).returncode == 1
    assert (repo / "a.txt").read_text() == "one"
    assert agent(repo, path, attempt=2).returncode == 0
    assert (repo / "a.txt").read_text() == "two"


def test_unknown_attempt_uses_base(repo: Path, tmp_path: Path) -> None:
    """An attempt with no override entry runs the base block."""
    assert agent(repo, todo(tmp_path, "exit: 4\nattempts: {2: {exit: 0}}"), attempt=3).returncode == 4


def test_sleep_is_scaled_by_demo_speed(repo: Path, tmp_path: Path) -> None:
    """sleep is multiplied by BATCHD_DEMO_SPEED: 0 makes it instant, 0.1 makes 3 s take 0.3 s."""
    path = todo(tmp_path, "sleep: 3")
    started = time.monotonic()
    assert agent(repo, path).returncode == 0
    assert time.monotonic() - started < 2.5
    started = time.monotonic()
    assert agent(repo, path, extra_env={"BATCHD_DEMO_SPEED": "0.1"}).returncode == 0
    assert time.monotonic() - started >= 0.3


def test_hang_runs_until_killed(repo: Path, tmp_path: Path) -> None:
    """hang: true writes its files, then sleeps until its timeout kills it."""
    path = todo(tmp_path, "write: [{path: w.txt, content: x}]\nhang: true\njson_result: true")
    proc = start_agent(
        [PY, "-m", "daemon.demo.agent", str(path)],
        cwd=repo,
        log_path=tmp_path / "a.log",
        env={**os.environ, "BATCHD_DEMO_SPEED": "0"},
    )
    while proc.poll() is None:
        if (repo / "w.txt").exists():
            enforce_timeout(proc, 0.0001, time.monotonic(), grace=2)
        time.sleep(0.02)
    outcome = finish(proc)
    assert outcome.timed_out
    assert outcome.summary is None
    assert (repo / "w.txt").read_text() == "x"


def test_commit_commits_in_the_worktree(repo: Path, tmp_path: Path) -> None:
    """commit: adds and commits everything with the message."""
    assert (
        agent(repo, todo(tmp_path, 'write: [{path: c.txt, content: c}]\ncommit: "agent did it"')).returncode
        == 0
    )
    assert git(repo, "log", "-1", "--format=%s").strip() == "agent did it"
    assert changed(repo) == []


def test_todo_path_from_environment(repo: Path, tmp_path: Path) -> None:
    """Without an argument the todo path comes from BATCHD_TODO_PATH."""
    path = todo(tmp_path, 'write: [{path: e.txt, content: "env"}]')
    assert agent(repo, None, extra_env={"BATCHD_TODO_PATH": str(path)}).returncode == 0
    assert (repo / "e.txt").read_text() == "env"


def test_tilde_fence_among_other_code_blocks(repo: Path, tmp_path: Path) -> None:
    """The block is found by its info string among other fenced blocks, with ~~~ fences too."""
    path = tmp_path / "todo.md"
    path.write_text(
        "```yaml\nwrite: [{path: wrong.txt, content: no}]\n```\n~~~~ batchd-agent\nexit: 6\n~~~~\n"
    )
    assert agent(repo, path).returncode == 6
    assert not (repo / "wrong.txt").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{FENCE}batchd-agent\nwrite: [unclosed\n{FENCE}\n", "not valid YAML"),
        (f"{FENCE}batchd-agent\n- a list\n{FENCE}\n", "must be a mapping"),
        (f"{FENCE}batchd-agent\nwrtie: []\n{FENCE}\n", "unknown key(s) in the block: wrtie"),
        (f"{FENCE}batchd-agent\nexit: 0\n", "never closed"),
        (f"{FENCE}batchd-agent\nexit: 0\n{FENCE}\n{FENCE}batchd-agent\nexit: 1\n{FENCE}\n", "found 2"),
        (f"{FENCE}batchd-agent\nwrite: [{{path: ../x, content: a}}]\n{FENCE}\n", "outside the worktree"),
        (f"{FENCE}batchd-agent\nwrite: [{{path: /tmp/x, content: a}}]\n{FENCE}\n", "outside the worktree"),
        (f"{FENCE}batchd-agent\nwrite: [{{path: a}}]\n{FENCE}\n", "exactly: path, content"),
        (f"{FENCE}batchd-agent\nexit: nine\n{FENCE}\n", "exit must be an integer"),
        (f"{FENCE}batchd-agent\nsleep: -1\n{FENCE}\n", "sleep must be a number"),
        (f"{FENCE}batchd-agent\nattempts: {{2: {{bogus: 1}}}}\n{FENCE}\n", "unknown key(s) in attempts.2"),
    ],
)
def test_bad_block_exits_2_with_message(repo: Path, tmp_path: Path, text: str, message: str) -> None:
    """A malformed block exits 2 with a clear message on stderr and changes nothing."""
    path = tmp_path / "todo.md"
    path.write_text(text)
    done = agent(repo, path)
    assert done.returncode == 2
    assert done.stderr.startswith("batchd-agent: error: ")
    assert message in done.stderr
    assert changed(repo) == []


def test_missing_todo_file_exits_2(repo: Path, tmp_path: Path) -> None:
    """A todo path that does not exist exits 2 naming it."""
    done = agent(repo, tmp_path / "nope.md")
    assert done.returncode == 2
    assert "nope.md" in done.stderr


def test_no_todo_path_exits_2_with_usage(repo: Path) -> None:
    """Neither argument nor BATCHD_TODO_PATH: usage on stderr, exit 2."""
    env = {k: v for k, v in os.environ.items() if k != "BATCHD_TODO_PATH"}
    done = subprocess.run(
        [PY, "-m", "daemon.demo.agent"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "usage:" in done.stderr


def test_bad_attempt_variable_exits_2(repo: Path, tmp_path: Path) -> None:
    """A non-numeric BATCHD_ATTEMPT is reported."""
    done = agent(repo, todo(tmp_path, "exit: 0"), extra_env={"BATCHD_ATTEMPT": "x"})
    assert (done.returncode, "BATCHD_ATTEMPT" in done.stderr) == (2, True)


def test_runs_as_a_batchd_agent(repo: Path, tmp_path: Path) -> None:
    """Through build_argv, agent_env and run_agent it acts and its JSON result is read."""
    path = todo(tmp_path, 'write: [{path: f.txt, content: "f"}]\njson_result: {total_cost_usd: 0.5}')
    config = AgentConfig(command=(PY, "-m", "daemon.demo.agent", "{todo_path}"))
    argv = build_argv(config, prompt="p", todo_path=path, todo_id="273", worktree=repo)
    env = agent_env(config, todo_id="273", todo_path=path, attempt=1, worktree=repo)
    outcome = run_agent(
        argv, cwd=repo, log_path=tmp_path / "a.log", env={**env, "BATCHD_DEMO_SPEED": "0"}, timeout=30
    )
    assert outcome.ok
    assert (outcome.cost_usd, outcome.session_id) == (0.5, "demo-273-1")
    assert read_result(tmp_path / "a.log") == outcome.summary
    assert (repo / "f.txt").read_text() == "f"
