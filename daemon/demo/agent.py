"""A scripted coding agent: does what a ``batchd-agent`` block in the todo file says.

``python -m daemon.demo.agent TODO_PATH`` (or ``BATCHD_TODO_PATH``), run in the todo's worktree.
It stands in for an LLM agent in the demo and the tests, so every behaviour batchd must handle
(a change, a broken test, a conflict, a crash, a hang, a JSON result) can be written into a todo::

    ```batchd-agent
    sleep: 0.5              # seconds, times BATCHD_DEMO_SPEED (default 1.0)
    write:   [{path: a.py, content: "x = 1\\n"}]
    replace: [{path: a.py, find: "x = 1", with: "x = 2"}]     # exit 3 if `find` is absent
    append:  [{path: CHANGELOG.md, text: "- fixed\\n"}]
    delete:  [old.py]                                          # exit 3 if absent
    rename:  [{from: a.py, to: b.py}]                          # exit 3 if absent
    commit: "message"       # git add -A + git commit in the worktree (batchd usually commits)
    stdout: "text"          # printed
    stderr: "text"
    json_result: {is_error: false, total_cost_usd: 0.01}  # a claude-like result object, printed last
                            # (with "simulated": true: its cost is made up)
    exit: 0
    hang: false             # after acting, sleep until killed
    attempts: {2: {exit: 0}}  # overrides for BATCHD_ATTEMPT=2 (top-level keys replaced)
    ```

Steps run in the order listed above. Without a block it appends a line to ``NOTES.md``.
Exit codes: the block's ``exit``; 2 for a bad block or todo path; 3 for a missing target.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["EXIT_BAD_SCRIPT", "EXIT_MISSING_TARGET", "ScriptError", "find_block", "main", "run"]

EXIT_BAD_SCRIPT = 2
EXIT_MISSING_TARGET = 3

_KEYS = frozenset(
    {
        "sleep",
        "write",
        "replace",
        "append",
        "delete",
        "rename",
        "commit",
        "stdout",
        "stderr",
        "json_result",
        "exit",
        "hang",
        "attempts",
    }
)
_FENCE = re.compile(r"^(`{3,}|~{3,})[ \t]*batchd-agent[ \t]*$")


class ScriptError(Exception):
    """The block cannot be carried out; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = EXIT_BAD_SCRIPT) -> None:
        super().__init__(message)
        self.code = code


def find_block(text: str) -> str | None:
    """The body of the one fenced ``batchd-agent`` block in ``text``, or None."""
    bodies: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence = opening.group(1)
        closing = re.compile(rf"^{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
        end = next((j for j in range(i + 1, len(lines)) if closing.match(lines[j])), None)
        if end is None:
            raise ScriptError(f"the batchd-agent block opened on line {i + 1} is never closed")
        bodies.append("\n".join(lines[i + 1 : end]))
        i = end + 1
    if len(bodies) > 1:
        raise ScriptError(f"found {len(bodies)} batchd-agent blocks; write exactly one")
    return bodies[0] if bodies else None


def _parse(body: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as e:
        raise ScriptError(f"the batchd-agent block is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ScriptError(f"the batchd-agent block must be a mapping, got {type(data).__name__}")
    _check_keys(data, "the block")
    return data


def _check_keys(data: dict[Any, Any], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in _KEYS)
    if unknown:
        known = ", ".join(sorted(_KEYS))
        raise ScriptError(f"unknown key(s) in {where}: {', '.join(unknown)}; known: {known}")


def _select_attempt(data: dict[str, Any], attempt: int) -> dict[str, Any]:
    overrides = data.pop("attempts", None) or {}
    if not isinstance(overrides, dict):
        raise ScriptError("attempts must be a mapping of attempt number to overrides")
    chosen: dict[str, Any] = {}
    for key, value in overrides.items():
        if not str(key).isdigit():
            raise ScriptError(f"attempts key {key!r} is not an attempt number")
        if not isinstance(value, dict):
            raise ScriptError(f"attempts.{key} must be a mapping of overrides")
        _check_keys(value, f"attempts.{key}")
        if "attempts" in value:
            raise ScriptError(f"attempts.{key} cannot contain attempts")
        if int(key) == attempt:
            chosen = value
    return {**data, **chosen}


def _entries(data: dict[str, Any], key: str, fields: Sequence[str]) -> list[dict[str, str]]:
    items = data.get(key) or []
    if not isinstance(items, list):
        raise ScriptError(f"{key} must be a list of mappings with {', '.join(fields)}")
    out: list[dict[str, str]] = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != set(fields):
            raise ScriptError(f"{key}[{n}] must be a mapping with exactly: {', '.join(fields)}")
        if not all(isinstance(item[f], str) for f in fields):
            raise ScriptError(f"{key}[{n}]: every value must be a string")
        out.append({f: item[f] for f in fields})
    return out


def _target(cwd: Path, rel: str) -> Path:
    path = (cwd / rel).resolve()
    if Path(rel).is_absolute() or not path.is_relative_to(cwd.resolve()):
        raise ScriptError(f"path {rel!r} is outside the worktree; give a path relative to it")
    return path


def _say(message: str) -> None:
    print(f"batchd-agent: {message}", file=sys.stderr, flush=True)


def _number(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ScriptError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)


def run(data: dict[str, Any], *, cwd: Path, todo_id: str, attempt: int, speed: float) -> int:
    """Carry out a parsed block in ``cwd``; returns the exit code."""
    data = _select_attempt(dict(data), attempt)
    writes = _entries(data, "write", ("path", "content"))
    replaces = _entries(data, "replace", ("path", "find", "with"))
    appends = _entries(data, "append", ("path", "text"))
    renames = _entries(data, "rename", ("from", "to"))
    deletes = data.get("delete") or []
    if not isinstance(deletes, list) or not all(isinstance(d, str) for d in deletes):
        raise ScriptError("delete must be a list of paths")
    exit_code = data.get("exit", 0)
    if isinstance(exit_code, bool) or not isinstance(exit_code, int) or not 0 <= exit_code <= 255:
        raise ScriptError(f"exit must be an integer 0-255, got {exit_code!r}")
    for key in ("commit", "stdout", "stderr"):
        if key in data and not isinstance(data[key], str):
            raise ScriptError(f"{key} must be a string")
    json_result = data.get("json_result")
    if json_result is not None and json_result is not True and not isinstance(json_result, dict):
        raise ScriptError("json_result must be a mapping (fields of the result object) or true")
    hang = data.get("hang", False)
    if not isinstance(hang, bool):
        raise ScriptError("hang must be true or false")

    time.sleep(_number(data, "sleep", 0.0) * speed)
    for w in writes:
        path = _target(cwd, w["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(w["content"], encoding="utf-8")
        _say(f"wrote {w['path']}")
    for r in replaces:
        path = _target(cwd, r["path"])
        text = path.read_text(encoding="utf-8") if path.is_file() else None
        if text is None or r["find"] not in text:
            where = "it" if text is not None else "the file (it does not exist)"
            message = f"replace: {r['find']!r} not found in {where}: {r['path']}"
            raise ScriptError(message, EXIT_MISSING_TARGET)
        path.write_text(text.replace(r["find"], r["with"], 1), encoding="utf-8")
        _say(f"replaced in {r['path']}")
    for a in appends:
        path = _target(cwd, a["path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(a["text"])
        _say(f"appended to {a['path']}")
    for d in deletes:
        path = _target(cwd, d)
        if not path.is_file():
            raise ScriptError(f"delete: {d} does not exist", EXIT_MISSING_TARGET)
        path.unlink()
        _say(f"deleted {d}")
    for m in renames:
        src, dst = _target(cwd, m["from"]), _target(cwd, m["to"])
        if not src.exists():
            raise ScriptError(f"rename: {m['from']} does not exist", EXIT_MISSING_TARGET)
        dst.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dst)
        _say(f"renamed {m['from']} -> {m['to']}")
    if "commit" in data:
        _commit(cwd, data["commit"])
    if "stdout" in data:
        print(data["stdout"], flush=True)
    if "stderr" in data:
        print(data["stderr"], file=sys.stderr, flush=True)
    if hang:
        _say("hanging until killed")
        while True:
            time.sleep(3600)
    if json_result is not None:
        print(json.dumps(_result_object(json_result, todo_id=todo_id, attempt=attempt)), flush=True)
    return exit_code


def _commit(cwd: Path, message: str) -> None:
    env = {
        "GIT_AUTHOR_NAME": "batchd demo agent",
        "GIT_AUTHOR_EMAIL": "demo-agent@batchd.invalid",
        "GIT_COMMITTER_NAME": "batchd demo agent",
        "GIT_COMMITTER_EMAIL": "demo-agent@batchd.invalid",
        **os.environ,
    }
    for argv in (["git", "add", "-A"], ["git", "commit", "-q", "-m", message]):
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            said = done.stderr.strip() or done.stdout.strip()
            raise ScriptError(f"commit: {' '.join(argv)} failed: {said}")
    _say("committed")


def _result_object(fields: dict[str, Any] | bool, *, todo_id: str, attempt: int) -> dict[str, Any]:
    given = fields if isinstance(fields, dict) else {}
    is_error = bool(given.get("is_error", False))
    return {
        "type": "result",
        "subtype": "error_during_execution" if is_error else "success",
        "is_error": is_error,
        "result": f"scripted agent handled todo {todo_id}",
        "duration_ms": 0,
        "num_turns": 1,
        "session_id": f"demo-{todo_id}-{attempt}",
        "total_cost_usd": 0.0,
        # No LLM ran: whatever cost the script gives is made up, and batchd shows it as simulated.
        "simulated": True,
        **given,
    }


def _todo_id(path: Path) -> str:
    return os.environ.get("BATCHD_TODO_ID") or path.name.split("-", 1)[0]


def _script(args: list[str]) -> int:
    raw_path = args[0] if args else os.environ.get("BATCHD_TODO_PATH", "")
    if not raw_path or len(args) > 1:
        raise ScriptError("usage: python -m daemon.demo.agent TODO_PATH (or set BATCHD_TODO_PATH)")
    todo = Path(raw_path)
    try:
        text = todo.read_text(encoding="utf-8")
    except OSError as e:
        raise ScriptError(f"cannot read the todo file {todo}: {e.strerror}") from e
    attempt_raw = os.environ.get("BATCHD_ATTEMPT", "1")
    if not attempt_raw.isdigit():
        raise ScriptError(f"BATCHD_ATTEMPT must be a positive integer, got {attempt_raw!r}")
    speed_raw = os.environ.get("BATCHD_DEMO_SPEED", "1.0")
    try:
        speed = float(speed_raw)
    except ValueError:
        raise ScriptError(f"BATCHD_DEMO_SPEED must be a number, got {speed_raw!r}") from None
    todo_id, attempt = _todo_id(todo), int(attempt_raw)
    body = find_block(text)
    if body is None:
        note = f"- todo {todo_id}: handled by the scripted agent (attempt {attempt})\n"
        data: dict[str, Any] = {"append": [{"path": "NOTES.md", "text": note}]}
    else:
        data = _parse(body)
    return run(data, cwd=Path.cwd(), todo_id=todo_id, attempt=attempt, speed=speed)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (errors go to stderr, prefixed ``batchd-agent: error:``)."""
    try:
        return _script(list(sys.argv[1:] if argv is None else argv))
    except ScriptError as e:
        print(f"batchd-agent: error: {e}", file=sys.stderr, flush=True)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
