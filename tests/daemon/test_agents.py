"""Agent argv, prompt and environment; real agent subprocesses, timeouts and their process groups."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon.config import AgentConfig
from daemon.exceptions import AgentError
from daemon.world.agentproc import (
    AgentProcess,
    enforce_timeout,
    group_members,
    kill_leftover_group,
    process_alive,
    process_start_ticks,
    start_agent,
    token_holders,
)
from daemon.world.agentresult import AgentOutcome, finish, read_result, read_thread_id, run_agent, run_setup
from daemon.world.agents import (
    agent_env,
    build_argv,
    default_template,
    failure_text,
    load_template,
    render_prompt,
    repair_text,
    resume_prompt,
    resume_session,
    todo_title,
    valid_session_id,
)

AGENTS = Path(__file__).resolve().parents[1] / "agents"
PY = sys.executable
HOSTILE = "$(rm -rf /) `reboot`; echo 'single' \"double\"\nsecond line {todo_id} \\ ${HOME}"


def py_agent(code: str) -> list[str]:
    return [PY, "-c", code]


def wait_for_file(path: Path, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared")


def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process_alive(pid):
            return True
        time.sleep(0.01)
    return False


@pytest.fixture
def env() -> dict[str, str]:
    return dict(os.environ)


@pytest.fixture
def stray_pids() -> Iterator[list[int]]:
    """Pids a test started indirectly; killed at teardown if the test failed to."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- argv


def test_claude_preset_argv() -> None:
    """The claude preset puts the prompt in one argv element and asks for JSON output."""
    argv = build_argv(AgentConfig(), prompt="do it", todo_path="/r/todos/1.md", todo_id="1", worktree="/w")
    assert argv == ["claude", "-p", "do it", "--dangerously-skip-permissions", "--output-format", "json"]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("codex", ["codex", "exec", "--json", "--full-auto", "P"]),
        ("aider", ["aider", "--yes-always", "--message", "P"]),
    ],
)
def test_other_presets_argv(preset: str, expected: list[str]) -> None:
    """codex and aider presets run non-interactively with the prompt as one argument."""
    agent = AgentConfig(preset=preset)  # type: ignore[arg-type]
    assert build_argv(agent, prompt="P", todo_path="t", todo_id="1", worktree="w") == expected


def test_placeholders_inside_elements() -> None:
    """Placeholders are substituted inside larger elements, all four of them."""
    agent = AgentConfig(command=("a", "--todo={todo_path}", "{todo_id}@{worktree}", "{prompt}"))
    argv = build_argv(agent, prompt="p", todo_path="/t.md", todo_id="7", worktree="/w")
    assert argv == ["a", "--todo=/t.md", "7@/w", "p"]


def test_hostile_prompt_stays_one_argument(tmp_path: Path, env: dict[str, str]) -> None:
    """Shell syntax, quotes and newlines in a prompt reach the agent as one unchanged argument."""
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    agent = AgentConfig(command=(PY, "-c", code, "{prompt}", "{todo_id}"))
    argv = build_argv(agent, prompt=HOSTILE, todo_path="t", todo_id="9", worktree=str(tmp_path))
    outcome = run_agent(argv, cwd=tmp_path, log_path=tmp_path / "a.log", env=env, timeout=10)
    assert outcome.rc == 0
    assert outcome.summary is None  # a JSON list is not a result object
    assert json.loads(outcome.log_tail) == [HOSTILE, "9"]


def test_substituted_value_is_not_substituted_again() -> None:
    """A prompt containing "{todo_id}" keeps it literally."""
    agent = AgentConfig(command=("a", "{prompt}"))
    assert build_argv(agent, prompt="{todo_id}", todo_path="t", todo_id="9", worktree="w") == [
        "a",
        "{todo_id}",
    ]


# ---------------------------------------------------------------------------- prompt and env


def render(template: str, repair: str = "") -> str:
    return render_prompt(
        template,
        todo_id="273",
        todo_path="/repo/todos/273-ready-p1-x.md",
        title="Fix it",
        verify_commands=[["npm", "run", "typecheck"], ["npm", "test"]],
        worktree="/wt",
        repair=repair,
    )


def test_default_prompt_follows_seed_template() -> None:
    """The built-in prompt names the todo, Option A, CLAUDE.md, tests and the verify commands."""
    prompt = render(default_template())
    assert "Resolve todo #273 from /repo/todos/273-ready-p1-x.md" in prompt
    for phrase in (
        "Read the todo file completely",
        "Option A",
        "CLAUDE.md",
        "AGENTS.md",
        "Write tests",
        "`npm run typecheck`",
        "`npm test`",
        "/wt",
        "What files were changed",
    ):
        assert phrase in prompt
    assert "{" not in prompt


def test_default_prompt_says_batchd_renames_and_takes_the_change() -> None:
    """The agent is told that batchd, not it, renames the todo and takes its change (committed or not),
    and not to push or weaken existing tests."""
    prompt = render(default_template())
    assert "Do NOT rename" in prompt
    assert "committed or not" in prompt and "do not push" in prompt
    assert "do not weaken or delete" in prompt
    assert "-complete-" not in prompt


def test_first_attempt_prompt_has_no_repair_text() -> None:
    """Without a repair note the prompt says nothing about a previous attempt."""
    assert "previous attempt" not in render(default_template())


def test_repair_prompt_carries_command_and_output() -> None:
    """On a repair attempt the failing command and its output tail are in the prompt."""
    note = repair_text(["npm", "test"], "FAIL src/tax.test.ts\n  expected 2, got 3\n")
    prompt = render(default_template(), repair=note)
    assert (
        "Your previous attempt broke: npm test\nFAIL src/tax.test.ts\n  expected 2, got 3\nFix it." in prompt
    )


def test_prompt_file_overrides_template(tmp_path: Path) -> None:
    """prompt_file (relative to the repository) replaces the built-in template."""
    (tmp_path / "p.md").write_text('Do {todo_id} ({title}) in {worktree}; JSON {"k": {unknown}}')
    template = load_template(AgentConfig(prompt_file="p.md"), tmp_path)
    assert render(template) == 'Do 273 (Fix it) in /wt; JSON {"k": {unknown}}'


def test_empty_prompt_file_uses_default(tmp_path: Path) -> None:
    """prompt_file = "" means the built-in template."""
    assert load_template(AgentConfig(), tmp_path) == default_template()


def test_todo_title_from_heading_after_front_matter(tmp_path: Path) -> None:
    """The title is the first markdown heading, front matter skipped."""
    todo = tmp_path / "273-ready-p1-tenant-filter.md"
    todo.write_text("---\nstatus: ready\n# not: a heading\n---\n\n# Availability query leaks\n\nbody\n")
    assert todo_title(todo) == "Availability query leaks"


def test_todo_title_from_file_name(tmp_path: Path) -> None:
    """Without a heading the title is the file name's description."""
    todo = tmp_path / "273-ready-p1-tenant-filter.md"
    todo.write_text("no heading here\n")
    assert todo_title(todo) == "tenant filter"


def test_agent_env_sets_batchd_variables() -> None:
    """Agents get BATCHD_TODO_ID/_PATH/_ATTEMPT/_WORKTREE and [agent] env over the base."""
    agent = AgentConfig(env={"NODE_ENV": "test", "KEEP": "over"})
    env = agent_env(
        agent,
        todo_id="273",
        todo_path="/r/t.md",
        attempt=2,
        worktree="/w",
        base={"PATH": "/bin", "KEEP": "base"},
    )
    assert env == {
        "PATH": "/bin",
        "KEEP": "over",
        "NODE_ENV": "test",
        "BATCHD_TODO_ID": "273",
        "BATCHD_TODO_PATH": "/r/t.md",
        "BATCHD_ATTEMPT": "2",
        "BATCHD_WORKTREE": "/w",
    }


# ---------------------------------------------------------------------------- starting


def test_missing_agent_is_an_agent_error(tmp_path: Path) -> None:
    """An agent not on PATH fails to start with a hint to install it or set [agent] command."""
    with pytest.raises(AgentError) as info:
        start_agent(
            ["no-such-agent-xyz", "p"], cwd=tmp_path, log_path=tmp_path / "a.log", env={"PATH": str(tmp_path)}
        )
    assert "no-such-agent-xyz" in str(info.value)
    assert "[agent] command" in info.value.hint


def test_non_executable_agent_is_an_agent_error(tmp_path: Path) -> None:
    """A relative agent path that is not executable is refused, naming the path."""
    (tmp_path / "agent.sh").write_text("#!/bin/sh\n")
    with pytest.raises(AgentError, match="is not executable"):
        start_agent(["./agent.sh"], cwd=tmp_path, log_path=tmp_path / "a.log", env={})


def test_agent_runs_in_cwd_with_output_in_log(tmp_path: Path, env: dict[str, str]) -> None:
    """stdout and stderr go to the log, the cwd is the given folder, stdin is empty."""
    code = "import os, sys; print(os.getcwd()); print('err', file=sys.stderr); print(repr(sys.stdin.read()))"
    proc = start_agent(py_agent(code), cwd=tmp_path, log_path=tmp_path / "logs" / "a.log", env=env)
    assert proc.pgid == proc.pid == os.getpgid(proc.pid)
    outcome = run_to_end(proc)
    assert outcome.rc == 0
    assert (tmp_path / "logs" / "a.log").read_text().split("\n")[:3] == [str(tmp_path), "err", "''"]


def run_to_end(proc: AgentProcess) -> AgentOutcome:
    while proc.poll() is None:
        time.sleep(0.01)
    return finish(proc)


def test_nonzero_exit_is_a_failed_outcome(tmp_path: Path, env: dict[str, str]) -> None:
    """Exit code 3 gives a failed outcome whose reason says so."""
    outcome = run_agent(
        py_agent("raise SystemExit(3)"), cwd=tmp_path, log_path=tmp_path / "a.log", env=env, timeout=10
    )
    assert (outcome.rc, outcome.ok, outcome.reason) == (3, False, "exited with code 3")


def test_duration_is_measured(tmp_path: Path, env: dict[str, str]) -> None:
    """duration covers the agent's run time."""
    outcome = run_agent(
        py_agent("import time; time.sleep(0.3)"),
        cwd=tmp_path,
        log_path=tmp_path / "a.log",
        env=env,
        timeout=10,
    )
    assert 0.3 <= outcome.duration < 3


# ---------------------------------------------------------------------------- results


CLAUDE_RESULT = {
    "type": "result",
    "subtype": "success",
    "is_error": False,
    "result": "Done.",
    "duration_ms": 1234,
    "num_turns": 7,
    "session_id": "abc-123",
    "total_cost_usd": 0.42,
    "usage": {"input_tokens": 10},
}


def json_agent(obj: object, rc: int = 0, before: str = "working...") -> list[str]:
    return py_agent(f"import json; print({before!r}); print(json.dumps({obj!r})); raise SystemExit({rc})")


def test_claude_result_is_read(tmp_path: Path, env: dict[str, str]) -> None:
    """The claude JSON result gives cost, turns and session id."""
    outcome = run_agent(
        json_agent(CLAUDE_RESULT), cwd=tmp_path, log_path=tmp_path / "a.log", env=env, timeout=10
    )
    assert outcome.ok
    assert (outcome.cost_usd, outcome.num_turns, outcome.session_id) == (0.42, 7, "abc-123")
    assert outcome.summary == CLAUDE_RESULT


def test_is_error_result_fails_despite_exit_zero(tmp_path: Path, env: dict[str, str]) -> None:
    """is_error true with exit code 0 is a failed attempt."""
    result = {**CLAUDE_RESULT, "is_error": True, "subtype": "error_during_execution", "result": "API down"}
    outcome = run_agent(json_agent(result), cwd=tmp_path, log_path=tmp_path / "a.log", env=env, timeout=10)
    assert outcome.rc == 0
    assert not outcome.ok
    assert outcome.reason == "agent reported an error: API down"


def test_error_subtype_fails(tmp_path: Path, env: dict[str, str]) -> None:
    """A result whose subtype is error_max_turns is a failed attempt."""
    result = {**CLAUDE_RESULT, "subtype": "error_max_turns"}
    del result["result"]
    outcome = run_agent(json_agent(result), cwd=tmp_path, log_path=tmp_path / "a.log", env=env, timeout=10)
    assert outcome.is_error


def test_older_cost_field_is_read(tmp_path: Path) -> None:
    """Older output names the cost cost_usd."""
    log = tmp_path / "a.log"
    log.write_text(json.dumps({"type": "result", "is_error": False, "cost_usd": 0.1}) + "\n")
    result = read_result(log)
    assert result is not None
    assert result["cost_usd"] == 0.1


def test_last_json_object_wins(tmp_path: Path) -> None:
    """With stream-json style output, the last object is the result."""
    log = tmp_path / "a.log"
    log.write_text('{"type": "system"}\nnoise {not json\n{"type": "result", "n": 2}\ntrailing text\n')
    assert read_result(log) == {"type": "result", "n": 2}


def test_pretty_printed_json_is_read_whole(tmp_path: Path) -> None:
    """A pretty-printed result is read as the outer object, not a nested one."""
    log = tmp_path / "a.log"
    log.write_text("text\n" + json.dumps({"type": "result", "usage": [{"a": 1}]}, indent=2) + "\n")
    assert read_result(log) == {"type": "result", "usage": [{"a": 1}]}


def test_no_json_gives_no_summary(tmp_path: Path, env: dict[str, str]) -> None:
    """Plain text output: no summary, no cost, judged by exit code alone."""
    outcome = run_agent(
        py_agent("print('all done')"), cwd=tmp_path, log_path=tmp_path / "a.log", env=env, timeout=10
    )
    assert (outcome.summary, outcome.cost_usd, outcome.is_error, outcome.ok) == (None, None, False, True)
    assert outcome.log_tail == "all done\n"


def test_log_tail_is_bounded(tmp_path: Path, env: dict[str, str]) -> None:
    """Only the end of a long log is kept in the outcome."""
    outcome = run_agent(
        py_agent("print('x' * 100000 + 'END')"),
        cwd=tmp_path,
        log_path=tmp_path / "a.log",
        env=env,
        timeout=10,
    )
    assert len(outcome.log_tail) == 4000
    assert outcome.log_tail.endswith("END\n")


# ---------------------------------------------------------------------------- timeouts and groups


def start_spawner(
    tmp_path: Path, env: dict[str, str], mode: str, stray: list[int]
) -> tuple[AgentProcess, int]:
    pid_file = tmp_path / "grandchild.pid"
    proc = start_agent(
        [PY, str(AGENTS / "spawn_grandchild.py"), str(pid_file), mode],
        cwd=tmp_path,
        log_path=tmp_path / "a.log",
        env=env,
    )
    grandchild = int(wait_for_file(pid_file))
    stray.append(grandchild)
    return proc, grandchild


def test_timeout_kills_agent_and_grandchild(
    tmp_path: Path, env: dict[str, str], stray_pids: list[int]
) -> None:
    """Past its timeout the agent's whole group gets SIGTERM: no orphan is left."""
    proc, grandchild = start_spawner(tmp_path, env, "hang", stray_pids)
    assert enforce_timeout(proc, 0.1, proc.started + 0.01) is False
    while proc.poll() is None:
        enforce_timeout(proc, 0.1, time.monotonic(), grace=5)
        time.sleep(0.01)
    outcome = finish(proc)
    assert outcome.timed_out
    assert outcome.rc == -signal.SIGTERM
    assert outcome.reason.startswith("timed out")
    assert wait_gone(grandchild)
    assert group_members(proc.pgid) == []


def test_timeout_escalates_to_sigkill(tmp_path: Path, env: dict[str, str], stray_pids: list[int]) -> None:
    """An agent that ignores SIGTERM is SIGKILLed, with its grandchild, after the grace period."""
    proc, grandchild = start_spawner(tmp_path, env, "hang-ignore-term", stray_pids)
    while proc.poll() is None:
        enforce_timeout(proc, 0.05, time.monotonic(), grace=0.2)
        time.sleep(0.01)
    outcome = finish(proc)
    assert (outcome.timed_out, outcome.rc) == (True, -signal.SIGKILL)
    assert outcome.reason.startswith("timed out")
    assert wait_gone(grandchild)


def test_finish_kills_leftover_grandchild(tmp_path: Path, env: dict[str, str], stray_pids: list[int]) -> None:
    """An agent that exits leaving a background process in its group: finish kills it."""
    proc, grandchild = start_spawner(tmp_path, env, "exit", stray_pids)
    outcome = run_to_end(proc)
    assert outcome.ok
    assert wait_gone(grandchild)


def test_kill_leftover_group_kills_a_live_group(tmp_path: Path, stray_pids: list[int]) -> None:
    """After a crash the recorded group of a still-running agent is killed."""
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    stray_pids.append(child.pid)
    ticks = process_start_ticks(child.pid)
    assert kill_leftover_group(child.pid, start_ticks=ticks) is True
    assert child.wait(5) == -signal.SIGKILL


def test_kill_leftover_group_of_gone_group_is_quiet() -> None:
    """A group that no longer exists is no error."""
    child = subprocess.Popen(["true"], start_new_session=True)
    ticks = process_start_ticks(child.pid)
    child.wait()
    assert kill_leftover_group(child.pid, start_ticks=ticks) is False


def test_kill_leftover_group_spares_reused_pid(stray_pids: list[int]) -> None:
    """A live leader whose start time differs from the recorded one is not killed."""
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    stray_pids.append(child.pid)
    ticks = process_start_ticks(child.pid)
    assert ticks is not None
    assert kill_leftover_group(child.pid, start_ticks=ticks + 1) is False
    assert child.poll() is None
    child.kill()
    child.wait()


def test_kill_leftover_group_refuses_own_group() -> None:
    """batchd never signals its own process group."""
    assert kill_leftover_group(os.getpgrp(), start_ticks=process_start_ticks(os.getpgrp())) is False


def test_kill_leftover_group_without_a_recorded_start_time_kills_nothing(stray_pids: list[int]) -> None:
    """A pid recorded without its start time (an older log) is never killed on the pid alone."""
    child = subprocess.Popen(["sleep", "60"], start_new_session=True)
    stray_pids.append(child.pid)
    assert kill_leftover_group(child.pid, start_ticks=None) is False
    assert child.poll() is None
    child.kill()
    child.wait()


def test_token_holders_finds_only_the_attempts_processes(stray_pids: list[int]) -> None:
    """Processes are found by the attempt's token in their environment, and no others."""
    env = {**os.environ, "BATCHD_AGENT_TOKEN": "tok-123"}
    marked = subprocess.Popen(["sleep", "60"], env=env)
    other = subprocess.Popen(["sleep", "60"], env={**os.environ, "BATCHD_AGENT_TOKEN": "tok-1234"})
    stray_pids += [marked.pid, other.pid]
    assert token_holders("tok-123") == [marked.pid]
    assert token_holders("") == []
    for child in (marked, other):
        child.kill()
        child.wait()


# ---------------------------------------------------------------------------- setup


def test_setup_runs_commands_in_order(tmp_path: Path, env: dict[str, str]) -> None:
    """Setup commands run in the worktree, in order, logged with a "$ command" line."""
    steps = [py_agent("open('a', 'w').write('1')"), py_agent("open('b', 'w').write(open('a').read())")]
    result = run_setup(steps, cwd=tmp_path, log_path=tmp_path / "setup.log", timeout=10, env=env)
    assert result.ok
    assert (tmp_path / "b").read_text() == "1"
    assert (tmp_path / "setup.log").read_text().startswith(f"$ {PY} -c ")


def test_setup_stops_at_first_failure(tmp_path: Path, env: dict[str, str]) -> None:
    """A failing setup command is reported and later ones do not run."""
    steps = [py_agent("raise SystemExit(4)"), py_agent("open('ran', 'w')")]
    result = run_setup(steps, cwd=tmp_path, log_path=tmp_path / "setup.log", timeout=10, env=env)
    assert (result.ok, result.rc, result.failed_command) == (False, 4, tuple(steps[0]))
    assert not (tmp_path / "ran").exists()


def test_setup_timeout_is_a_failure(tmp_path: Path, env: dict[str, str]) -> None:
    """A setup command past its timeout is killed and reported as timed out."""
    result = run_setup(
        [py_agent("import time; time.sleep(30)")],
        cwd=tmp_path,
        log_path=tmp_path / "setup.log",
        timeout=0.2,
        env=env,
    )
    assert (result.ok, result.timed_out) == (False, True)


def test_no_setup_is_ok(tmp_path: Path) -> None:
    """An empty setup succeeds without running anything."""
    assert run_setup([], cwd=tmp_path, log_path=tmp_path / "setup.log", timeout=1).ok


def test_agent_env_drops_the_daemons_notify_socket_and_fault_switches() -> None:
    """An agent never inherits NOTIFY_SOCKET/WATCHDOG_* (systemd's, for the daemon) or crash switches."""
    from daemon.config import AgentConfig
    from daemon.world.agents import agent_env

    base = {"PATH": "/usr/bin", "NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "BATCHD_CRASH_AFTER": "x"}
    env = agent_env(AgentConfig(), todo_id="1", todo_path="/t.md", attempt=1, worktree="/w", base=base)
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env and "BATCHD_CRASH_AFTER" not in env
    assert env["PATH"] == "/usr/bin" and env["BATCHD_TODO_ID"] == "1"


# ---------------------------------------------------------------------------- what agents print


def test_a_result_nested_deep_enough_to_break_the_parser_is_no_result(tmp_path: Path) -> None:
    """A line of a hundred thousand brackets is not a result, and reading it raises nothing."""
    log = tmp_path / "a.log"
    log.write_text('{"type": "result", "x": ' + "[" * 100_000 + "\n")
    assert read_result(log) is None


def test_nan_and_infinity_in_a_result_are_refused(tmp_path: Path) -> None:
    """NaN cannot be stored as JSON: a result carrying it is not taken."""
    log = tmp_path / "a.log"
    log.write_text(
        '{"type": "result", "total_cost_usd": NaN}\n{"type": "result", "total_cost_usd": Infinity}\n'
    )
    assert read_result(log) is None


def test_an_exit_record_written_by_someone_else_does_not_hide_a_timeout(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """An agent that writes its own 'I ended in time' exit record and runs on is still timed out."""
    record = tmp_path / "exit.json"
    code = (
        "import json, time\n"
        f"open({str(record)!r} + '.tmp', 'w').write(json.dumps({{'rc': 0, 'ended_at': time.time()}}))\n"
        f"import os; os.replace({str(record)!r} + '.tmp', {str(record)!r})\n"
        "time.sleep(30)\n"
    )
    proc = start_agent(py_agent(code), cwd=tmp_path, log_path=tmp_path / "a.log", env=env, exit_path=record)
    deadline = time.monotonic() + 20
    while proc.poll() is None:
        enforce_timeout(proc, 1.0, time.monotonic(), grace=1)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    outcome = finish(proc)
    assert outcome.timed_out and not outcome.ok


def test_a_pretty_printed_result_is_read_whole_not_a_nested_object(tmp_path: Path) -> None:
    """An indented object inside a pretty-printed result is not taken for the result."""
    log = tmp_path / "a.log"
    log.write_text('done\n{\n  "type": "result",\n  "items": [\n    {"a": 1}\n  ],\n  "is_error": false\n}\n')
    assert read_result(log) == {"type": "result", "items": [{"a": 1}], "is_error": False}


def test_a_log_of_many_opening_braces_is_no_result(tmp_path: Path) -> None:
    """Half a million lines of '{' (each a start of a would-be object) give no result: only the last few
    are tried, each in place (before, every one re-parsed the rest of the log: hours)."""
    log = tmp_path / "a.log"
    log.write_text("{\n" * 500_000)
    assert read_result(log) is None


def test_on_exit_calls_back_when_the_process_ends_and_leaves_its_status_to_poll() -> None:
    """The loop is woken as an agent exits (a pidfd, no reaping): poll() still gets the exit code."""
    from daemon.world.agentproc import on_exit

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(7)"])
    woke = threading.Event()
    on_exit(proc.pid, woke.set)
    assert not woke.wait(0.05)  # still running
    assert woke.wait(10)
    assert proc.wait(timeout=10) == 7


# ---------------------------------------------------------------------------- resuming a session


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("3f2a9c1e-7b4d-4e8a-9f10-2c5d6e7f8a9b", True),
        ("thread_01:ab.c", True),
        ("-x", False),
        ("--resume", False),
        ("a\nb", False),
        ("a b", False),
        ("", False),
        ("x" * 201, False),
        ("ünï", False),
        (None, False),
        (42, False),
    ],
)
def test_valid_session_id(value: object, ok: bool) -> None:
    """Only a bounded word of id characters that is not an option counts as a session id."""
    assert valid_session_id(value) is ok


def test_resume_argv_fills_the_session_and_prompt_in_one_pass() -> None:
    """The claude preset's resume argv: the id is one element after --resume; a prompt that says
    "{session_id}" stays literal (values are never substituted again)."""
    argv = build_argv(
        AgentConfig(), prompt="fix {session_id}", todo_path="t", todo_id="1", worktree="w", session_id="s-1"
    )
    assert argv == [
        "claude", "-p", "fix {session_id}", "--resume", "s-1",
        "--dangerously-skip-permissions", "--output-format", "json",
    ]  # fmt: skip


def test_build_argv_refuses_a_session_id_that_is_not_one() -> None:
    """The last guard: a caller passing an unchecked id gets an error, never an extra option."""
    with pytest.raises(ValueError, match="not a session"):
        build_argv(AgentConfig(), prompt="p", todo_path="t", todo_id="1", worktree="w", session_id="--evil")


@pytest.mark.parametrize(
    ("agent", "resumed"),
    [
        (AgentConfig(), "s-1"),
        (AgentConfig(resume=False), ""),
        (AgentConfig(preset="aider"), ""),  # type: ignore[arg-type]
        (AgentConfig(command=("my-agent", "{prompt}")), ""),  # its sessions are its own business
        (AgentConfig(command=("a",), resume_command=("a", "--continue", "{session_id}")), "s-1"),
    ],
)
def test_resume_session_only_when_the_agent_can_resume(agent: AgentConfig, resumed: str) -> None:
    """A session is continued only with `resume` on and a resume command (the preset's or one's own)."""
    assert resume_session(agent, "s-1") == resumed
    assert resume_session(agent, "-s") == ""


def test_custom_resume_command_gets_every_placeholder() -> None:
    """`resume_command` may use the command's placeholders as well as {session_id}."""
    agent = AgentConfig(command=("a",), resume_command=("a", "{session_id}", "{failure_file}", "{todo_path}"))
    argv = build_argv(
        agent, prompt="p", todo_path="/t.md", todo_id="1", worktree="w", failure_file="/f.txt", session_id="s"
    )
    assert argv == ["a", "s", "/f.txt", "/t.md"]


def test_agent_env_names_the_failure_file() -> None:
    """BATCHD_FAILURE_FILE is set to the failure file's path when there is one."""
    env = agent_env(
        AgentConfig(), todo_id="1", todo_path="/t", attempt=2, worktree="/w", failure_file="/f", base={}
    )
    assert env["BATCHD_FAILURE_FILE"] == "/f"


def test_failure_text_keeps_the_whole_check_output_or_the_repair() -> None:
    """A rejection: the reason, then the command and its output as kept; otherwise the repair text."""
    rejected = failure_text(
        attempt=1, outcome="rejected", reason="broke `t`", verify_output="$ t\nout\n[exit 1]\n", repair="r"
    )
    assert rejected == "batchd: attempt 1 was rejected: broke `t`\n\n$ t\nout\n[exit 1]\n"
    failed = failure_text(attempt=2, outcome="agent_failed", reason="exit", verify_output="", repair="")
    assert failed == "batchd: attempt 2 was agent failed: exit\n"


def test_resume_prompt_says_whether_the_change_is_still_there() -> None:
    """Without a carried change the session is told its edits are gone; with one, to fix it in place."""
    fresh = resume_prompt("broke t", todo_id="7", todo_path="/t.md", verify_commands=[["t"]], carried=False)
    kept = resume_prompt("broke t", todo_id="7", todo_path="/t.md", verify_commands=[["t"]], carried=True)
    assert "broke t" in fresh and "`t`" in fresh and "not in it" in fresh
    assert "Your change is in the workspace" in kept


def test_read_thread_id_finds_codex_s_last_thread_started(tmp_path: Path) -> None:
    """codex exec --json: the `thread.started` event (the last one, after a re-run) names the session."""
    log = tmp_path / "agent.log"
    events = [
        "--- batchd: todo 1 attempt 1 ---",
        json.dumps({"type": "thread.started", "thread_id": "old"}),
        json.dumps({"type": "item.completed", "item": {"text": '{"type":"thread.started","thread_id":"x"}'}}),
        json.dumps({"type": "thread.started", "thread_id": "0199-abc"}),
        "x" * (3 << 20),  # a very long line in between: no event
        json.dumps({"type": "turn.completed"}),
    ]
    log.write_text("\n".join(events) + "\n", encoding="utf-8")
    assert read_thread_id(log) == "0199-abc"
    log.write_text('{"type":"turn.completed"}\n{"type":"thread.started","thread_id":7}\n', encoding="utf-8")
    assert read_thread_id(log) is None
    assert read_thread_id(tmp_path / "missing.log") is None
