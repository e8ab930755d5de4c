"""Each agent preset through the same executor contract, with a stand-in CLI of that name on PATH.

The stand-ins are real executables named ``claude``, ``codex`` and ``aider``: they check that the
prompt arrived as one argument in the preset's position, do the todo's work (via the scripted demo
agent), and ``claude`` prints a result object as Claude Code's ``--output-format json`` does. Only
the language model is missing, which is the one thing a test cannot have.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest
from procs import base_env, batchd, make_repo, projection, read_events

# Each stand-in finds the prompt where its preset puts it, and refuses anything else.
STAND_IN = """#!{python}
import json, os, subprocess, sys
args = sys.argv[1:]
name = os.path.basename(sys.argv[0])
expected = {{"claude": ["-p", None, "--dangerously-skip-permissions", "--output-format", "json"],
             "codex": ["exec", "--json", "--full-auto", None],
             "aider": ["--yes-always", "--message", None]}}[name]
if len(args) != len(expected) or any(e is not None and a != e for a, e in zip(args, expected)):
    print(f"{{name}}: unexpected argv {{args}}", file=sys.stderr)
    sys.exit(64)
prompt = args[expected.index(None)]
todo = os.environ["BATCHD_TODO_PATH"]
if todo not in prompt:
    print(f"{{name}}: the prompt does not name the todo", file=sys.stderr)
    sys.exit(65)
rc = subprocess.run([{python!r}, "-m", "daemon.demo.agent", todo]).returncode
if name == "claude":
    failing = os.environ.get("STAND_IN_IS_ERROR") == os.environ["BATCHD_TODO_ID"]
    print(json.dumps({{"type": "result", "subtype": "error_during_execution" if failing else "success",
                      "is_error": failing, "result": "done", "duration_ms": 1200, "num_turns": 4,
                      "session_id": "s-" + os.environ["BATCHD_TODO_ID"], "total_cost_usd": 0.25}}))
sys.exit(rc)
"""


def install_stand_ins(folder: Path) -> Path:
    folder.mkdir()
    for name in ("claude", "codex", "aider"):
        path = folder / name
        path.write_text(STAND_IN.format(python=sys.executable), encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder


def use_preset(root: Path, preset: str) -> None:
    config = root / "batchd.toml"
    text = config.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.replace(" ", "").startswith("command=")]
    text = "\n".join(lines).replace("[agent]", f'[agent]\npreset = "{preset}"')
    config.write_text(text + "\n", encoding="utf-8")


@pytest.mark.parametrize("preset", ["claude", "codex", "aider"])
def test_preset_runs_its_cli_with_the_prompt_and_completes_the_todo(tmp_path: Path, preset: str) -> None:
    """With `preset = X` and only a stand-in `X` on PATH, the todo is done, committed and complete."""
    bin_dir = install_stand_ins(tmp_path / "bin")
    root = make_repo(tmp_path / "repo", {"1": "write: [{path: one.txt, content: one}]"})
    use_preset(root, preset)
    env = base_env(PATH=f"{bin_dir}:/usr/bin:/bin")
    done = batchd(root, "run", "--once", env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (root / "one.txt").read_text(encoding="utf-8") == "one"
    assert projection(root).todos["1"].state == "complete"


def test_claude_result_is_read_cost_is_summed_and_is_error_fails_the_attempt(tmp_path: Path) -> None:
    """Claude's JSON result: cost and session go into agent_finished; is_error with exit 0 is a failure."""
    bin_dir = install_stand_ins(tmp_path / "bin")
    root = make_repo(
        tmp_path / "repo",
        {"1": "write: [{path: one.txt, content: one}]", "2": "write: [{path: two.txt, content: two}]"},
        max_attempts=1,
    )
    use_preset(root, "claude")
    env = base_env(PATH=f"{bin_dir}:/usr/bin:/bin", STAND_IN_IS_ERROR="2")
    done = batchd(root, "run", "--once", env=env, timeout=120)
    assert done.returncode == 1, done.stderr[-2000:]
    finished = next(e for e in read_events(root) if e.type == "todo.agent_finished")
    assert finished.payload["cost_usd"] == 0.25
    assert finished.payload["summary"]["session_id"] == "s-1"
    failed = next(e for e in read_events(root) if e.type == "todo.agent_failed")
    outcome = (failed.payload["todo_id"], failed.payload["reason"], failed.payload["returncode"])
    assert outcome == ("2", "is_error", 0)
    proj = projection(root)
    assert proj.todos["1"].state == "complete" and proj.todos["2"].state == "blocked"
    assert sum(t.cost_usd for t in proj.todos.values()) == pytest.approx(0.5)
    assert json.loads(json.dumps(proj.to_json()))  # the cost survives a snapshot round trip
