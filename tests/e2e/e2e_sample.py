"""A small sample repository for the crash and continuous-mode tests (the demo is too slow to run
a dozen times): a tiny package with its own unittest suite, todo files whose ``batchd-agent`` blocks
script the demo agent, an optional ``plans/PLAN.md``, and a bare remote beside the checkout.

The plan: phase 1 (batch 1.1: 101, 102, 103; batch 1.2: 104), phase 2 (batch 2.1: 105, 106, 107).
103 breaks the tests on every attempt (rejected, then blocked); 105 and 106 append to the end of
the same file (a textual conflict that batchd merges keeping both, 105's line first: no agent runs
again; 106's attempt-2 block is there for a run with ``conflicts = "redo"``). Every
attempt number acts the same each time it runs, so a crash that adds an uncounted re-run changes nothing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import yaml

BRANCH = "main"
IDENTITY = ("sample", "sample@batchd.invalid")

SOURCES = {
    ".gitignore": "__pycache__/\n*.pyc\n",
    "app/__init__.py": "",
    "app/core.py": 'GREETING = "hello"\n\n\ndef greet(name: str) -> str:\n    return f"{GREETING}, {name}"\n',
    "app/settings.py": "TIMEOUT = 5\n",
    "tests/test_core.py": textwrap.dedent(
        """\
        import unittest

        from app.core import greet


        class GreetTest(unittest.TestCase):
            def test_greets_by_name(self) -> None:
                self.assertEqual(greet("ann"), "hello, ann")
        """
    ),
    "todos/README.md": "Work items for batchd.\n",
}


def _test_module(module: str, value: int) -> str:
    return (
        f"import unittest\n\nfrom app.{module} import {module}\n\n\n"
        f"class {module.title()}Test(unittest.TestCase):\n"
        f"    def test_value(self) -> None:\n        self.assertEqual({module}(), {value})\n"
    )


def _adds_module(module: str, value: int) -> dict[str, object]:
    return {
        "write": [
            {"path": f"app/{module}.py", "content": f"def {module}() -> int:\n    return {value}\n"},
            {"path": f"tests/test_{module}.py", "content": _test_module(module, value)},
        ],
        "stdout": f"added app/{module}.py and its test\n",
    }


@dataclass(frozen=True, slots=True)
class SampleTodo:
    todo_id: str
    priority: str
    slug: str
    title: str
    script: dict[str, object]
    files: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        return f"{self.todo_id}-ready-{self.priority}-{self.slug}.md"

    def render(self) -> str:
        front = {
            "status": "ready",
            "priority": self.priority,
            "issue_id": self.todo_id,
            "tags": ["sample"],
            "dependencies": [],
            "files": list(self.files),
        }
        block = yaml.safe_dump(self.script, sort_keys=False)
        return (
            f"---\n{yaml.safe_dump(front, sort_keys=False)}---\n\n# {self.title}\n\n"
            f"## Problem Statement\n{self.title}.\n\n## Acceptance Criteria\n"
            f"- [ ] `python -m unittest discover -s tests -q` passes\n\n"
            f"```batchd-agent\n{block}```\n"
        )


LOUD_CORE = SOURCES["app/core.py"].replace('"hello"', '"HELLO"')
RESOLVED_SETTINGS = "TIMEOUT = 5\nRETRIES = 2\nBACKOFF = 3\n"

TODOS: tuple[SampleTodo, ...] = (
    SampleTodo("101", "p1", "add-alpha", "Add alpha", _adds_module("alpha", 1), ("app/alpha.py",)),
    SampleTodo("102", "p1", "add-beta", "Add beta", _adds_module("beta", 2), ("app/beta.py",)),
    SampleTodo(
        "103",
        "p1",
        "shout-greeting",
        "Shout the greeting",
        {
            # The whole file, not a replace: its repair starts from its own change (already loud).
            "write": [{"path": "app/core.py", "content": LOUD_CORE}],
            "stdout": "the greeting is louder now\n",
        },
        ("app/core.py",),
    ),
    SampleTodo("104", "p2", "add-gamma", "Add gamma", _adds_module("gamma", 3), ("app/gamma.py",)),
    SampleTodo(
        "105",
        "p2",
        "retry-setting",
        "Add a retries setting",
        {"append": [{"path": "app/settings.py", "text": "RETRIES = 2\n"}]},
        ("app/settings.py",),
    ),
    SampleTodo(
        "106",
        "p2",
        "backoff-setting",
        "Add a backoff setting",
        {
            "append": [{"path": "app/settings.py", "text": "BACKOFF = 3\n"}],
            # Under conflicts = "merge" batchd keeps both appended lines itself; a resolve or redo
            # attempt (conflicts = "redo"/"strict") ends with the file holding both settings too.
            "attempts": {
                2: {"append": [], "write": [{"path": "app/settings.py", "content": RESOLVED_SETTINGS}]}
            },
        },
        ("app/settings.py",),
    ),
    SampleTodo("107", "p3", "add-delta", "Add delta", _adds_module("delta", 4), ("app/delta.py",)),
)

PHASE_MESSAGES = {
    1: "feat(app): complete phase 1 - modules",
    2: "feat(settings): complete phase 2 - settings",
}
PLAN = f"""\
# Sample plan

## Execution Phases

### Phase 1: Modules (Batches 1.1 + 1.2)
- **Batch 1.1:** Todos 101, 102, 103 (3 parallel)
- **Batch 1.2:** Todos 104 (1 parallel)
- **After Phase 1:** Commit and push

### Phase 2: Settings (Batch 2.1)
- **Batch 2.1:** Todos 105, 106, 107 (3 parallel)
- **After Phase 2:** Commit and push

## Commit Messages by Phase

- **Phase 1:** `{PHASE_MESSAGES[1]}`
- **Phase 2:** `{PHASE_MESSAGES[2]}`
"""
EXPECTED_COMPLETE = frozenset({"101", "102", "104", "105", "106", "107"})
EXPECTED_BLOCKED = frozenset({"103"})


def render_config(*, with_plan: bool, rescan_interval: float = 30.0, schedule: str = "barrier") -> str:
    agent = [sys.executable, "-m", "daemon.demo.agent", "{todo_path}"]
    verify = [sys.executable, "-B", "-m", "unittest", "discover", "-s", "tests", "-q"]
    plan = 'plan = "plans/PLAN.md"\n' if with_plan else ""
    return (
        "[batchd]\n"
        f'todos_dir = "todos"\n{plan}status_file = "plans/EXECUTION-STATUS.md"\n'
        f'branch = "{BRANCH}"\nremote = "origin"\nmax_parallel = 3\nmax_attempts = 2\n'
        f'commit_mode = "phase"\nschedule = "{schedule}"\nstop_timeout = 5.0\n'
        f"rescan_interval = {rescan_interval!r}\n\n"
        "[agent]\n"
        f"command = {_toml_list(agent)}\ntimeout = 20.0\n"
        'env = { BATCHD_DEMO_SPEED = "0" }\n\n'
        "[verify]\n"
        f"commands = [{_toml_list(verify)}]\n"
        'strategy = "bisect"\nretries = 0\nrepair = true\ntimeout = 60\nconflicts = "merge"\n'
    )


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items) + "]"


def _git(cwd: Path, *args: str) -> None:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)} failed: {done.stderr}"


@dataclass(frozen=True, slots=True)
class Sample:
    root: Path
    remote: Path


def build_sample(
    dest: Path,
    *,
    todos: tuple[SampleTodo, ...] = TODOS,
    with_plan: bool = True,
    rescan_interval: float = 30.0,
    schedule: str = "barrier",
) -> Sample:
    """The sample repository at ``dest/repo`` (committed on main, pushed to ``dest/remote.git``)."""
    root, remote = dest / "repo", dest / "remote.git"
    files = dict(SOURCES)
    files["batchd.toml"] = render_config(
        with_plan=with_plan, rescan_interval=rescan_interval, schedule=schedule
    )
    if with_plan:
        files["plans/PLAN.md"] = PLAN
    for todo in todos:
        files[f"todos/{todo.filename}"] = todo.render()
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _git(dest, "init", "-q", "--bare", "-b", BRANCH, str(remote))
    _git(root, "init", "-q", "-b", BRANCH)
    _git(root, "config", "user.name", IDENTITY[0])
    _git(root, "config", "user.email", IDENTITY[1])
    _git(root, "config", "commit.gpgsign", "false")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "chore: sample project")
    _git(root, "remote", "add", "origin", str(remote))
    _git(root, "push", "-q", "-u", "origin", BRANCH)
    return Sample(root=root, remote=remote)
