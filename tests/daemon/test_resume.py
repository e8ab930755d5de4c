"""Repairs continue the agent's session; every agent gets why its last attempt was not accepted.

Real daemon runs: a stand-in ``claude`` (or ``codex``) first on PATH does the todo's work through the
scripted demo agent, prints the result the real CLI prints (with its session id), and records its
argv to a file outside the workspace. A check rejects the first attempt (``bad.txt``), so the second
is a repair: with the claude preset it must pass ``--resume <that id>``, and only then.
"""

from __future__ import annotations

import itertools
import json
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procs import PY, DaemonProcess, base_env, git, make_repo, read_events

from daemon.config import load_config
from daemon.service import preflight
from daemon.workspace import Workspace
from daemon.world.sandbox import Sandbox

# Fails with a long output (far more than an event keeps) while bad.txt exists without good.txt (the
# repair adds good.txt: on top of its carried change, or on a fresh workspace with resume off).
FAILING_CHECK = """\
import os, sys
if os.path.exists("bad.txt") and not os.path.exists("good.txt"):
    for n in range(3000):
        print(f"line {n} of the test output")
    print("FAILED: bad.txt must not exist")
    sys.exit(1)
print("ok")
"""
# Attempt 1 breaks the check, attempt 2 (the repair) does the work right.
REJECTED_ONCE = (
    "write: [{path: bad.txt, content: bad}]\nattempts: {2: {write: [{path: good.txt, content: good}]}}"
)
SESSION = "3f2a9c1e-7b4d-4e8a-9f10-2c5d6e7f8a9b"

STAND_IN = """#!{python}
import json, os, subprocess, sys
name = os.path.basename(sys.argv[0])
with open(os.environ["STAND_IN_RECORD"], "a", encoding="utf-8") as f:
    f.write(json.dumps({{"attempt": int(os.environ["BATCHD_ATTEMPT"]), "argv": sys.argv[1:]}}) + "\\n")
session = os.environ.get("STAND_IN_SESSION", "")
if name == "codex" and session:
    print(json.dumps({{"type": "thread.started", "thread_id": session}}), flush=True)
rc = subprocess.run([{python!r}, "-m", "daemon.demo.agent", os.environ["BATCHD_TODO_PATH"]]).returncode
if name == "claude":
    result = {{"type": "result", "subtype": "success", "is_error": False, "result": "done",
              "num_turns": 3, "duration_ms": 900, "total_cost_usd": 0.01}}
    if session:
        result["session_id"] = session
    print(json.dumps(result))
else:
    print(json.dumps({{"type": "turn.completed", "usage": {{"input_tokens": 10, "output_tokens": 5}}}}))
sys.exit(rc)
"""

# A custom agent that copies what {failure_file} and BATCHD_FAILURE_FILE hold, per attempt.
CUSTOM_AGENT = """\
import os, subprocess, sys
out, attempt = os.environ["STAND_IN_RECORD_DIR"], os.environ["BATCHD_ATTEMPT"]
for label, path in (("arg", sys.argv[1]), ("env", os.environ["BATCHD_FAILURE_FILE"])):
    with open(path, encoding="utf-8") as src, open(f"{out}/{label}-{attempt}.txt", "w") as dst:
        dst.write(src.read())
todo = os.environ["BATCHD_TODO_PATH"]
sys.exit(subprocess.run([sys.executable, "-m", "daemon.demo.agent", todo]).returncode)
"""


def stand_ins(folder: Path) -> Path:
    folder.mkdir()
    for name in ("claude", "codex"):
        path = folder / name
        path.write_text(STAND_IN.format(python=sys.executable), encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def rejecting_repo(tmp_path: Path, *, agent: str, extra: str = "") -> Path:
    """Todo 1 is rejected once by the check, then repaired; ``agent``'s lines replace the command."""
    root = make_repo(tmp_path / "repo", {"1": REJECTED_ONCE}, max_attempts=2)
    (root / "check.py").write_text(FAILING_CHECK, encoding="utf-8")
    git(root, "commit", "-q", "-am", "a check that fails on bad.txt")
    config = root / "batchd.toml"
    lines = [ln for ln in config.read_text(encoding="utf-8").splitlines() if not ln.startswith("command =")]
    writable = json.dumps([str(tmp_path / "record")])  # the record is outside the workspace, sandbox or not
    text = "\n".join(lines).replace("[agent]", f"[agent]\n{agent}\nwritable = {writable}\n{extra}")
    config.write_text(text + "\n", encoding="utf-8")
    (tmp_path / "record").mkdir()
    return root


def run(
    tmp_path: Path, root: Path, start_daemon: Callable[..., DaemonProcess], session: str | None = SESSION
) -> list[dict[str, Any]]:
    """Run the daemon once through; the stand-in's calls, in order."""
    record = tmp_path / "record" / "calls.jsonl"
    env = base_env(
        PATH=f"{stand_ins(tmp_path / 'bin')}:/usr/bin:/bin",
        STAND_IN_RECORD=str(record),
        STAND_IN_RECORD_DIR=str(tmp_path / "record"),
        STAND_IN_SESSION=session or "",
    )
    daemon = start_daemon(root, "--once", env=env)
    assert daemon.wait(timeout=120) == 0, daemon.log_path.read_text()[-3000:]
    return [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines()]


FRESH = ["--dangerously-skip-permissions", "--output-format", "json"]


def test_a_repair_after_a_rejection_resumes_the_claude_session_the_first_attempt_does_not(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """Attempt 1 starts a session; the repair passes `--resume <its id>` with a prompt holding the
    failing command and its output, not the whole task again."""
    root = rejecting_repo(tmp_path, agent='preset = "claude"')
    first, repair = run(tmp_path, root, start_daemon)
    assert first["attempt"] == 1 and first["argv"][0] == "-p" and first["argv"][2:] == FRESH
    assert repair["attempt"] == 2
    assert repair["argv"][2:] == ["--resume", SESSION, *FRESH]
    prompt = repair["argv"][1]
    assert "check.py" in prompt and "FAILED: bad.txt must not exist" in prompt
    assert "INSTRUCTIONS" not in prompt  # the task is in the session already
    finished = [e.payload for e in read_events(root) if e.type == "todo.agent_finished"]
    assert [f["session_id"] for f in finished] == [SESSION, SESSION]


def test_resume_off_starts_the_repair_afresh(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`[agent] resume = false`: the repair is a new session with the failure in the full prompt."""
    root = rejecting_repo(tmp_path, agent='preset = "claude"', extra="resume = false")
    _, repair = run(tmp_path, root, start_daemon)
    assert repair["argv"][2:] == FRESH
    assert "INSTRUCTIONS" in repair["argv"][1] and "FAILED: bad.txt must not exist" in repair["argv"][1]


@pytest.mark.parametrize(
    "session",
    ["--dangerously-skip-permissions", "abc\n--model=evil", "x" * 201, "has space", None],
    ids=["option", "newline", "huge", "space", "missing"],
)
def test_a_session_id_that_is_not_an_id_is_never_passed_on_the_repair_starts_afresh(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess], session: str | None
) -> None:
    """A hostile or absent session id in the agent's result: no `--resume`, no extra argv element,
    nothing recorded as the session (the summary drops it too); the repair runs fresh and passes."""
    root = rejecting_repo(tmp_path, agent='preset = "claude"')
    first, repair = run(tmp_path, root, start_daemon, session=session)
    assert repair["argv"][2:] == FRESH == first["argv"][2:]
    finished = [e.payload for e in read_events(root) if e.type == "todo.agent_finished"]
    assert all(f["session_id"] == "" and "session_id" not in f["summary"] for f in finished)


def test_the_codex_preset_resumes_the_thread_its_json_events_named(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """codex exec --json prints `thread.started` first: the repair is `exec --json resume ... <id> <prompt>`
    (its prompt the failure)."""
    root = rejecting_repo(tmp_path, agent='preset = "codex"')
    first, repair = run(tmp_path, root, start_daemon)
    assert first["argv"][:3] == ["exec", "--json", "--full-auto"] and len(first["argv"]) == 4
    assert repair["argv"][:5] == ["exec", "--json", "--full-auto", "resume", SESSION]
    assert "FAILED: bad.txt must not exist" in repair["argv"][5]


def test_a_custom_agent_gets_the_failing_command_and_its_whole_output_as_a_file(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """`{failure_file}` and BATCHD_FAILURE_FILE: empty on attempt 1; on the repair, the failing
    command and all of its output (first line to last), outside the workspace."""
    (tmp_path / "agent.py").write_text(CUSTOM_AGENT, encoding="utf-8")
    command = json.dumps([PY, str(tmp_path / "agent.py"), "{failure_file}"])
    root = rejecting_repo(tmp_path, agent=f"command = {command}")
    record_dir = tmp_path / "record"
    env = base_env(STAND_IN_RECORD_DIR=str(record_dir))
    daemon = start_daemon(root, "--once", env=env)
    assert daemon.wait(timeout=120) == 0, daemon.log_path.read_text()[-3000:]
    assert (record_dir / "arg-1.txt").read_text() == "" == (record_dir / "env-1.txt").read_text()
    text = (record_dir / "arg-2.txt").read_text()
    assert text == (record_dir / "env-2.txt").read_text()
    assert text.startswith("batchd: attempt 1 was rejected: ")
    assert f"$ {PY} -B check.py\n" in text
    assert "line 0 of the test output\n" in text and "line 2999 of the test output\n" in text
    assert text.endswith("FAILED: bad.txt must not exist\n[exit 1]\n")
    failure_file = root / ".batchd" / "logs" / "todo-1-attempt-2-failure.txt"
    assert failure_file.read_text() == text  # in batchd's folder, not in the agent's workspace


def test_preflight_refuses_a_resume_command_whose_program_is_missing(tmp_path: Path) -> None:
    """With resume on, `[agent] resume_command`'s program is looked for like the agent's; off, it is not."""
    root = make_repo(tmp_path / "repo", {})
    config = root / "batchd.toml"
    text = config.read_text(encoding="utf-8")
    resume = 'resume_command = ["no-such-resumer", "{session_id}"]\n'
    config.write_text(text.replace("[agent]\n", "[agent]\n" + resume), encoding="utf-8")
    [problem] = preflight.agent_problems(load_config(root))
    assert problem.key == "agent.resume_command" and "no-such-resumer" in problem.message
    config.write_text(text.replace("[agent]\n", "[agent]\nresume = false\n" + resume), encoding="utf-8")
    assert preflight.agent_problems(load_config(root)) == []


def test_the_failure_file_is_readable_inside_the_sandbox_and_outside_the_workspace(tmp_path: Path) -> None:
    """bubblewrap's argv shows the repository (and so `.batchd/logs`) read-only and hides no folder
    above the failure file; only the workspace is writable, and the file is not in it."""
    root = tmp_path / "repo"
    ws = Workspace(root)
    failure = ws.failure_file("1", 2)
    workspace = ws.workspace("1")
    failure.parent.mkdir(parents=True)
    workspace.mkdir(parents=True)
    argv = Sandbox(kind="bwrap", bwrap="bwrap").wrap(["agent"], workspace=workspace, readable=[root])
    pairs = list(itertools.pairwise(argv))
    # "/" is shown read-only; the host's /tmp is not, so a repository under it is bound again.
    assert ("--ro-bind-try", str(root)) in pairs or not root.is_relative_to("/tmp")
    hidden = [b for a, b in pairs if a == "--tmpfs"]
    assert not any(failure.is_relative_to(h) and h != "/tmp" for h in hidden)
    assert not failure.is_relative_to(workspace)
