"""A small repository for phase-level tests: todos that script the demo agent, an optional plan, the
module check of ``gitrepo`` as the verify command, and a real bare remote (``origin``) beside it.

The daemon runs in-process (``serve(load_config(root), once=True)``): the same loop as
``batchd run --once`` without a Python start-up per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gitrepo import CHECK_PY, GOOD_MOD, git

from daemon.config import load_config
from daemon.service.loop import serve
from daemon.service.signals import SignalFlags
from daemon.workspace import open_log
from store.eventlog import StoredEvent

PY = sys.executable
AGENT = [PY, "-m", "daemon.demo.agent", "{todo_path}"]
CHECK = [PY, "-B", "check.py"]
STATUS_FILE = "plans/EXECUTION-STATUS.md"

# check() of a module that fails once mods/feature.py exists: the remote's commit that breaks ours.
IDENTITY = (("user.name", "Test"), ("user.email", "test@example.com"), ("commit.gpgsign", "false"))

GUARD_MOD = "import os\n\ndef check():\n    return not os.path.exists('mods/feature.py')\n"


def todo_name(todo_id: str, status: str = "ready") -> str:
    return f"{todo_id}-{status}-p2-thing-{todo_id}.md"


def todo_text(todo_id: str, script: str, *, status: str = "ready") -> str:
    """A todo with the convention's front matter and a ``batchd-agent`` block ``script`` (YAML)."""
    return (
        f'---\nstatus: {status}\npriority: p2\nissue_id: "{todo_id}"\ntags: []\ndependencies: []\n---\n\n'
        f"# Thing {todo_id}\n\nDo thing {todo_id}.\n\n"
        f"```batchd-agent\n{textwrap.dedent(script).strip()}\n```\n"
    )


HOSTILE = [PY, str(Path(__file__).resolve().parents[1] / "agents" / "hostile.py"), "{todo_path}"]


def hostile_text(todo_id: str, *actions: str, status: str = "ready") -> str:
    """A todo for ``tests/agents/hostile.py``: its ``hostile`` block lists the actions, one a line."""
    block = "\n".join(actions)
    return (
        f'---\nstatus: {status}\npriority: p2\nissue_id: "{todo_id}"\n---\n\n# Thing {todo_id}\n\n'
        f"Do thing {todo_id}.\n\n```hostile\n{block}\n```\n"
    )


def writes(*paths: str, content: str = GOOD_MOD) -> str:
    """An agent script writing ``content`` to each path."""
    items = ", ".join(f"{{path: {p}, content: {json.dumps(content)}}}" for p in paths)
    return f"write: [{items}]"


def module(todo_id: str, content: str = GOOD_MOD) -> str:
    """An agent script that adds its own passing module mods/m<id>.py."""
    return writes(f"mods/m{todo_id}.py", content=content)


def plan_text(phases: Mapping[int, tuple[str, list[list[str]], str]]) -> str:
    """``plans/PLAN.md``: number -> (title, batches of todo ids, commit message or "")."""
    lines = ["# Plan", "", "## Execution Phases", ""]
    for number, (title, batches, _) in phases.items():
        lines.append(f"### Phase {number}: {title}")
        for i, ids in enumerate(batches, start=1):
            lines.append(f"- **Batch {number}.{i}:** Todos {', '.join(ids)}")
        if not batches:
            lines.append("- Final integration testing")
        lines.append("")
    lines += ["## Commit Messages by Phase", ""]
    lines += [f"- **Phase {n}:** `{msg}`" for n, (_, _, msg) in phases.items() if msg]
    return "\n".join(lines) + "\n"


def config_text(
    *,
    remote: str = "origin",
    plan: str = "",
    max_parallel: int = 3,
    max_attempts: int = 1,
    commit_mode: str = "phase",
    schedule: str = "barrier",
    repair: bool = False,
    verify_writable: tuple[str, ...] = (),
    agent: list[str] | None = None,
    agent_timeout: float = 30,
    agent_extra: str = "",
    verify_extra: str = "",
    batchd_extra: str = "",
) -> str:
    """``batchd.toml``; ``*_extra`` are TOML lines added to those sections."""
    return textwrap.dedent(
        f"""\
        [batchd]
        plan = {json.dumps(plan)}
        status_file = "{STATUS_FILE}"
        remote = {json.dumps(remote)}
        max_parallel = {max_parallel}
        max_attempts = {max_attempts}
        commit_mode = "{commit_mode}"
        schedule = "{schedule}"
        stop_timeout = 1
        rescan_interval = 30
        {batchd_extra}

        [agent]
        command = {json.dumps(agent or AGENT)}
        timeout = {agent_timeout}
        env = {{ BATCHD_DEMO_SPEED = "0" }}
        {agent_extra}

        [verify]
        commands = [{json.dumps(CHECK)}]
        retries = 0
        repair = {json.dumps(repair)}
        timeout = 60
        writable = {json.dumps(list(verify_writable))}
        {verify_extra}
        """
    )


@dataclass(frozen=True)
class PhaseRepo:
    root: Path
    remote: Path

    def git(self, *args: str) -> str:
        return git(self.root, *args)

    def run(self, flags: SignalFlags | None = None) -> int:
        """``batchd run --once`` in this process; returns its exit code."""
        return serve(load_config(self.root), once=True, flags=flags)

    def run_cli(self, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """``batchd run --once`` as a real process."""
        argv = [PY, "-m", "daemon", "run", "--once", "--log-json", "-C", str(self.root)]
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "BATCHD_DEMO_SPEED": "0"}
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)

    def events(self, type_: str | None = None) -> list[StoredEvent]:
        log = open_log(self.root)
        try:
            found = list(log.read(since=0))
        finally:
            log.close()
        return [e for e in found if type_ is None or e.type == type_]

    def status(self) -> str:
        return (self.root / STATUS_FILE).read_text(encoding="utf-8")

    def todo(self, todo_id: str, status: str = "ready") -> Path:
        return self.root / "todos" / todo_name(todo_id, status)

    def remote_git(self, *args: str) -> str:
        return git(self.remote, *args)

    def other_clone(self) -> Path:
        """A second clone of the remote, as another person's machine."""
        dest = self.root.parent / "other"
        if not dest.exists():
            git(self.root.parent, "clone", "-q", str(self.remote), str(dest))
            for key, value in (("user.name", "Other"), ("user.email", "other@example.com")):
                git(dest, "config", key, value)
        return dest

    def push_from_other(self, files: Mapping[str, str], message: str = "other: change") -> str:
        """Another person commits ``files`` and pushes them to the remote; returns the commit."""
        dest = self.other_clone()
        git(dest, "pull", "-q", "--ff-only")
        for rel, text in files.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(text, encoding="utf-8")
        git(dest, "add", "--", *files)
        git(dest, "commit", "-q", "-m", message)
        git(dest, "push", "-q", "origin", "main")
        return git(dest, "rev-parse", "HEAD")


def build_repo(
    tmp_path: Path,
    todos: Mapping[str, str],
    *,
    plan: Mapping[int, tuple[str, list[list[str]], str]] | None = None,
    files: Mapping[str, str] | None = None,
    untracked: Collection[str] = (),
    hostile: Mapping[str, Sequence[str]] | None = None,
    **config: object,
) -> PhaseRepo:
    """A repository ``tmp_path/repo`` on ``main``, pushed to the bare ``tmp_path/remote.git``.

    ``todos`` maps ids to agent scripts; the ids in ``untracked`` are left untracked (dropped into
    the folder, never committed), as people often do. With ``hostile`` (id -> actions) the agent is
    ``tests/agents/hostile.py`` and those todos list its actions.
    """
    if hostile is not None:
        config.setdefault("agent", HOSTILE)
    root = tmp_path / "repo"
    remote = tmp_path / "remote.git"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    for key, value in IDENTITY:
        git(root, "config", key, value)
    tree = {"check.py": CHECK_PY, "mods/base.py": GOOD_MOD, "todos/.gitkeep": "", **(files or {})}
    if plan is not None:
        tree["plans/PLAN.md"] = plan_text(plan)
        config.setdefault("plan", "plans/PLAN.md")
    tree["batchd.toml"] = config_text(**config)  # type: ignore[arg-type]
    for rel, text in tree.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    texts = {t: todo_text(t, script) for t, script in todos.items()}
    texts.update({t: hostile_text(t, *actions) for t, actions in (hostile or {}).items()})
    for todo_id, text in texts.items():
        (root / "todos" / todo_name(todo_id)).write_text(text, encoding="utf-8")
    git(root, "add", "--", *tree, *[f"todos/{todo_name(t)}" for t in texts if t not in untracked])
    git(root, "commit", "-q", "-m", "initial")
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "-q", "origin", "main")
    return PhaseRepo(root=root, remote=remote)


def refuse_pushes(remote: Path, message: str, *, times: int | None = None) -> None:
    """A pre-receive hook declining pushes (CI runs as root: permissions cannot refuse), every push
    or only the first ``times``."""
    counter = remote / "refused-count"
    if times is None:
        body = f"echo '{message}' >&2\nexit 1\n"
    else:
        body = (
            f"n=$(cat '{counter}' 2>/dev/null || echo 0)\nn=$((n + 1))\necho $n > '{counter}'\n"
            f"if [ $n -le {times} ]; then echo '{message}' >&2; exit 1; fi\nexit 0\n"
        )
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    hook.chmod(0o755)


def committed_paths(repo: Path, sha: str) -> list[str]:
    """The paths ``sha`` changes against its first parent (renames as delete + add)."""
    out = git(repo, "diff-tree", "--no-commit-id", "-r", "--name-only", "--no-renames", f"{sha}^", sha)
    return sorted(out.splitlines())


def show(repo: Path, sha: str, rel: str) -> str:
    return git(repo, "show", f"{sha}:{rel}")
