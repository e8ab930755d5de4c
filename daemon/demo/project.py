"""Build the sample project that ``batchd demo`` runs the seed's plan on.

The project is a small multi-tenant scheduling backend (``template/scheduling``) with its own
unittest suite (``template/tests``), 28 todo files whose ``batchd-agent`` blocks script the demo
agent (``template/todos``), a ``batchd.toml`` and ``plans/PLAN.md`` rendered here, committed on
``main`` and pushed to a bare remote beside it. The tests of the sample project run with the
Python that runs batchd and the standard library only, so the demo needs nothing but batchd.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.demo.scenario import PHASES
from daemon.exceptions import GitError, UsageError

__all__ = [
    "BRANCH",
    "REMOTE_DIR",
    "TEMPLATE_DIR",
    "DemoProject",
    "build_demo",
    "render_config",
    "render_plan",
    "verify_command",
]

TEMPLATE_DIR = Path(__file__).parent / "template"
BRANCH = "main"
REMOTE_DIR = "remote.git"  # the bare remote, inside the demo folder and excluded from the checkout

# A fixed identity, so the demo commits (its own and batchd's) work where git has none configured.
_GIT_USER = ("batchd demo", "demo@batchd.invalid")
_GITIGNORE = "__pycache__/\n*.pyc\n"
_EXCLUDE = "\n# batchd demo: the daemon's own files and the bare remote are not part of the project\n"
_EXCLUDE_PATHS = ("/.batchd/", f"/{REMOTE_DIR}/")


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoProject:
    """Where ``build_demo`` put things; every path is absolute."""

    root: Path  # the checkout, with batchd.toml at its top
    remote: Path  # the bare repository `origin` points at
    todos_dir: Path
    plan_path: Path
    config_path: Path


def verify_command(python: str = sys.executable) -> list[str]:
    """The sample project's test command (standard library unittest: the demo needs no pytest)."""
    return [python, "-m", "unittest", "discover", "-s", "tests", "-q"]


def _toml(value: object) -> str:
    # JSON string escapes are valid TOML basic-string escapes, so paths with quotes or
    # backslashes (Windows) come out right without a TOML writer dependency.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def render_config(
    *, speed: float, agent_timeout: float, python: str = sys.executable, schedule: str = ""
) -> str:
    """The demo's ``batchd.toml``: the scripted agent, the unittest suite, the seed's pacing."""
    agent = [python, "-m", "daemon.demo.agent", "{todo_path}"]
    return f"""\
# batchd configuration of the demo project (written by `batchd demo`).

[batchd]
todos_dir = "todos"
plan = "plans/PLAN.md"
status_file = "plans/EXECUTION-STATUS.md"
branch = {_toml(BRANCH)}
remote = "origin"
max_parallel = 5
max_attempts = 2
commit_mode = "phase"
{f"schedule = {_toml(schedule)}" if schedule else "# schedule: the default (see `batchd init`)"}

[agent]
# The scripted demo agent: it carries out the `batchd-agent` block at the end of each todo file.
command = {_toml(agent)}
timeout = {_toml(float(agent_timeout))}
# Scales the scripted agents' sleeps (0 = as fast as possible).
env = {_toml({"BATCHD_DEMO_SPEED": str(float(speed))})}

[verify]
commands = [{_toml(verify_command(python))}]
strategy = "bisect"
retries = 0
repair = true
timeout = 120
conflicts = "merge"
"""


def render_plan() -> str:
    """``plans/PLAN.md`` in the seed's markdown form, from :data:`daemon.demo.scenario.PHASES`."""
    lines = [
        "# Scheduling Acuity Parity: Execution Plan",
        "",
        "28 todos of the scheduling backend in 5 phases, up to 5 agents at a time, one commit and",
        "push after each phase.",
        "",
        "## Execution Phases",
        "",
    ]
    for phase in PHASES:
        ids = [batch.id for batch in phase.batches]
        scope = f" (Batch{'es' if len(ids) > 1 else ''} {' + '.join(ids)})" if ids else ""
        lines.append(f"### Phase {phase.number}: {phase.title}{scope}")
        for batch in phase.batches:
            todos = ", ".join(batch.todos)
            lines.append(f"- **Batch {batch.id}:** Todos {todos} ({len(batch.todos)} parallel)")
        if not phase.batches:
            lines.append("- Final integration testing")
        lines += [f"- **After Phase {phase.number}:** Commit and push", ""]
    lines += ["## Commit Messages by Phase", ""]
    lines += [f"- **Phase {phase.number}:** `{phase.message}`" for phase in PHASES]
    return "\n".join(lines) + "\n"


def _git(args: Sequence[str], cwd: Path) -> str:
    argv = ["git", *args]
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GitError(
            "building the demo project failed",
            command=argv,
            output=done.stderr or done.stdout,
            hint="check that git (2.28 or later) is installed and the demo folder is writable",
        )
    return done.stdout


def _check_args(dest: Path, speed: float, agent_timeout: float) -> None:
    if not math.isfinite(speed) or speed < 0:
        raise UsageError(f"demo speed must be a number >= 0, got {speed}", hint="use 1 (real pace) or 0")
    if not math.isfinite(agent_timeout) or agent_timeout <= 0:
        raise UsageError(f"agent timeout must be > 0 seconds, got {agent_timeout}", hint="use e.g. 5")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(
            f"the demo folder {dest} already exists and is not empty",
            hint="give a new or empty folder, or leave DIR out to get a fresh temporary one",
        )


def build_demo(
    dest: Path, *, speed: float = 1.0, agent_timeout: float = 5.0, schedule: str = ""
) -> DemoProject:
    """Create the sample project in ``dest`` (new or empty), committed on main and pushed."""
    dest = dest.expanduser().resolve()
    _check_args(dest, speed, agent_timeout)
    dest.mkdir(parents=True, exist_ok=True)
    project = DemoProject(
        root=dest,
        remote=dest / REMOTE_DIR,
        todos_dir=dest / "todos",
        plan_path=dest / "plans" / "PLAN.md",
        config_path=dest / "batchd.toml",
    )
    shutil.copytree(
        TEMPLATE_DIR, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    (dest / ".gitignore").write_text(_GITIGNORE, encoding="utf-8")
    project.config_path.write_text(
        render_config(speed=speed, agent_timeout=agent_timeout, schedule=schedule), encoding="utf-8"
    )
    project.plan_path.parent.mkdir(exist_ok=True)
    project.plan_path.write_text(render_plan(), encoding="utf-8")

    _git(["init", "-q", "--bare", "-b", BRANCH, str(project.remote)], dest)
    _git(["init", "-q", "-b", BRANCH], dest)
    _git(["config", "user.name", _GIT_USER[0]], dest)
    _git(["config", "user.email", _GIT_USER[1]], dest)
    exclude = dest / ".git" / "info" / "exclude"
    exclude.parent.mkdir(exist_ok=True)
    with exclude.open("a", encoding="utf-8") as f:
        f.write(_EXCLUDE + "".join(f"{p}\n" for p in _EXCLUDE_PATHS))
    _git(["add", "-A"], dest)
    _git(
        [
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "chore: sample scheduling backend for the batchd demo",
        ],
        dest,
    )
    _git(["remote", "add", "origin", str(project.remote)], dest)
    _git(["push", "-q", "-u", "origin", BRANCH], dest)
    return project
