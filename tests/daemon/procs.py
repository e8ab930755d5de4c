"""Helpers for the tests that drive ``batchd`` as a real process: tiny repositories whose todos
script the demo agent, a ``batchd run`` subprocess with its JSON log lines, CLI calls, and reads of
the event log (real SQLite, opened the way the CLI opens it).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from daemon.workspace import open_log
from statemachine.projection import Projection, replay
from store.eventlog import StoredEvent

PY = sys.executable
AGENT = [PY, "-m", "daemon.demo.agent", "{todo_path}"]
CHECK = [PY, "-B", "check.py"]
T = TypeVar("T")


def base_env(**extra: str) -> dict[str, str]:
    """The environment of every batchd process: no bytecode litter, scripted agents at full speed."""
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(PYTHONDONTWRITEBYTECODE="1", BATCHD_DEMO_SPEED="0")
    env.update(extra)
    return env


def todo_text(todo_id: str, script: str) -> str:
    """A todo file body whose ``batchd-agent`` block is ``script`` (YAML)."""
    block = textwrap.dedent(script).strip()
    return f"# Todo {todo_id}\n\nDo thing {todo_id}.\n\n```batchd-agent\n{block}\n```\n"


def todo_name(todo_id: str) -> str:
    return f"{todo_id}-ready-p2-thing-{todo_id}.md"


def write_config(
    root: Path,
    *,
    max_parallel: int = 2,
    max_attempts: int = 2,
    stop_timeout: float = 1.0,
    speed: str = "0",
    agent_timeout: float = 30.0,
    schedule: str = "continuous",
) -> None:
    """``batchd.toml`` for a tiny repository: the scripted agent, a check that always passes, no remote."""
    (root / "batchd.toml").write_text(
        textwrap.dedent(
            f"""\
            [batchd]
            remote = ""
            max_parallel = {max_parallel}
            max_attempts = {max_attempts}
            stop_timeout = {stop_timeout}
            rescan_interval = 30
            schedule = "{schedule}"

            [agent]
            command = {json.dumps(AGENT)}
            timeout = {agent_timeout}
            env = {{ BATCHD_DEMO_SPEED = "{speed}" }}

            [verify]
            commands = [{json.dumps(CHECK)}]
            retries = 0
            """
        ),
        encoding="utf-8",
    )


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {root}: {done.stderr}")
    return done.stdout.strip()


def make_repo(root: Path, todos: Mapping[str, str], **config: Any) -> Path:
    """A committed repository with ``todos`` (id -> agent script) as ready p2 todo files."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    for key, value in (
        ("user.name", "Test"),
        ("user.email", "test@example.com"),
        ("commit.gpgsign", "false"),
    ):
        git(root, "config", key, value)
    (root / "check.py").write_text("print('ok')\n", encoding="utf-8")
    (root / "todos").mkdir()
    (root / "todos" / ".gitkeep").write_text("", encoding="utf-8")
    for todo_id, script in todos.items():
        (root / "todos" / todo_name(todo_id)).write_text(todo_text(todo_id, script), encoding="utf-8")
    write_config(root, **config)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


def add_plan(root: Path, text: str) -> None:
    """``plans/PLAN.md`` with ``text``, named in batchd.toml, committed."""
    (root / "plans").mkdir(exist_ok=True)
    (root / "plans" / "PLAN.md").write_text(text, encoding="utf-8")
    config = root / "batchd.toml"
    config.write_text(
        config.read_text(encoding="utf-8").replace("[batchd]\n", '[batchd]\nplan = "plans/PLAN.md"\n')
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "plan")


def batchd(
    root: Path | None,
    *args: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """One ``batchd`` command as a real process, with ``-C root`` appended when a root is given."""
    argv = [PY, "-m", "daemon", *args, *(["-C", str(root)] if root is not None else [])]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(env) if env is not None else base_env(),
        check=False,
    )


def status_json(root: Path) -> dict[str, Any]:
    done = batchd(root, "status", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def read_events(root: Path) -> list[StoredEvent]:
    """Every event of the repository's log, oldest first."""
    log = open_log(root)
    try:
        return list(log.read(since=0))
    finally:
        log.close()


def projection(root: Path) -> Projection:
    """The state the CLI would show, replayed in this process from the same log (no CLI start-up)."""
    log = open_log(root)
    try:
        return replay(log)
    finally:
        log.close()


def todo_states(root: Path) -> dict[str, str]:
    return {key: str(todo.state) for key, todo in projection(root).todos.items()}


def wait_for(check: Callable[[], T | None], *, timeout: float = 20.0, what: str = "a condition") -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """True if ``pid`` is a live (not zombie) process, read from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def group_members(pgid: int) -> list[int]:
    """Live processes whose process group is ``pgid`` (field 5 of /proc/PID/stat)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text(encoding="ascii").rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


class JsonLogged:
    """A process whose JSON log lines go to ``log_path``, for the test to read."""

    log_path: Path

    def lines(self) -> list[dict[str, Any]]:
        """The log lines so far (JSON objects; a partly written last line is skipped)."""
        out = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                item = json.loads(line)
                if isinstance(item, dict):
                    out.append(item)
        return out

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line.get("event") == event]


class DaemonProcess(JsonLogged):
    """``batchd run`` as a subprocess; its JSON log lines go to a file the test can read."""

    def __init__(self, root: Path, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.root = root
        self.log_path = root.parent / f"{root.name}-daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w", encoding="utf-8")
        self.proc = subprocess.Popen(
            [PY, "-m", "daemon", "run", "-C", str(root), "--log-json", *args],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else base_env(),
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_logged(self, event: str, *, count: int = 1, timeout: float = 20.0) -> list[dict[str, Any]]:
        def check() -> list[dict[str, Any]] | None:
            self.fail_if_exited(f"log line {event}")
            found = self.logged(event)
            return found if len(found) >= count else None

        return wait_for(check, timeout=timeout, what=f"{count} log line(s) {event!r} in {self.log_path}")

    def wait_events(self, type_: str, *, count: int = 1, timeout: float = 20.0) -> list[StoredEvent]:
        def check() -> list[StoredEvent] | None:
            self.fail_if_exited(f"event {type_}")
            if not (self.root / ".batchd" / "events.db").exists():
                return None
            found = [e for e in read_events(self.root) if e.type == type_]
            return found if len(found) >= count else None

        return wait_for(check, timeout=timeout, what=f"{count} event(s) {type_!r}")

    def fail_if_exited(self, waiting_for: str) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"batchd run exited {self.proc.returncode} while waiting for {waiting_for}:\n"
                + self.log_path.read_text(encoding="utf-8")[-4000:]
            )

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Send ``signum`` and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        return self.wait(timeout)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"batchd run did not exit within {timeout}s:\n"
                + self.log_path.read_text(encoding="utf-8")[-4000:]
            ) from None

    def kill(self) -> None:
        """Teardown: SIGKILL the daemon if it still runs, and every agent group the log names."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()
        kill_agents(self.root)


def kill_agents(root: Path) -> None:
    """Kill every agent process group recorded in ``root``'s log (teardown; nothing should be left)."""
    if not (root / ".batchd" / "events.db").exists():
        return
    for event in read_events(root):
        if event.type == "todo.agent_spawned":
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(event.payload["pgid"]), signal.SIGKILL)


def agents_spawned(events: Sequence[StoredEvent]) -> list[StoredEvent]:
    return [e for e in events if e.type == "todo.agent_spawned"]
