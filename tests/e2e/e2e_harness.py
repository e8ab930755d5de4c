"""End-to-end helpers: the real daemon as a subprocess, real git, real agents.

Every run here is ``python -m daemon run`` in a child process, on a repository in a temporary
folder with a bare remote beside it; the agents are the scripted demo agent. The helpers read the
outcome back the way a person would: git, the remote, ``plans/EXECUTION-STATUS.md`` and the CLI.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

RUN_TIMEOUT = 150.0  # seconds one daemon process may take before the test gives up on it
STATUS_FILE = "plans/EXECUTION-STATUS.md"
# Fault-injection switches: never inherited by a restart unless a test sets them on purpose.
CRASH_VARS = ("BATCHD_CRASH_AFTER", "BATCHD_CRASH_AT_SEQ")


def crash_sweep_enabled(config: pytest.Config) -> bool:
    # getoption with a default: the option is only registered when this conftest loads at start-up.
    flag = bool(config.getoption("--crash-sweep", default=False))
    return flag or os.environ.get("BATCHD_CRASH_SWEEP") == "1"


# --- processes ----------------------------------------------------------------------------------


def daemon_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*CRASH_VARS, "NOTIFY_SOCKET", "WATCHDOG_USEC")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def batchd_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "daemon", *args]


@dataclass
class DaemonRun:
    """One finished ``batchd run`` process: its exit code, wall time and log file."""

    returncode: int
    seconds: float
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def start_daemon(
    root: Path, *, once: bool = True, env: Mapping[str, str] | None = None, log_name: str = "daemon"
) -> tuple[subprocess.Popen[bytes], Path]:
    """Start ``batchd run`` on ``root``; its output goes to a numbered log file beside the repository."""
    logs = root.parent / "logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{log_name}-{len(list(logs.iterdir())):02d}.log"
    argv = batchd_argv("run", *(["--once"] if once else []), "-C", str(root), "--log-json")
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=root, env=daemon_env(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return proc, log_path


def wait_daemon(
    proc: subprocess.Popen[bytes], log_path: Path, started: float, timeout: float = RUN_TIMEOUT
) -> DaemonRun:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid)
        proc.wait()
        text = log_path.read_text(encoding="utf-8", errors="replace")
        message = f"the daemon did not finish in {timeout}s; its log ends:\n{text[-4000:]}"
        raise AssertionError(message) from None
    return DaemonRun(returncode=rc, seconds=time.monotonic() - started, log_path=log_path)


def run_daemon(
    root: Path, *, env: Mapping[str, str] | None = None, timeout: float = RUN_TIMEOUT
) -> DaemonRun:
    """``batchd run --once`` to its end (or its injected crash)."""
    started = time.monotonic()
    proc, log_path = start_daemon(root, env=env)
    return wait_daemon(proc, log_path, started, timeout)


def run_until_done(
    root: Path, *, first_env: Mapping[str, str] | None = None, max_restarts: int = 4
) -> list[DaemonRun]:
    """Run once with ``first_env`` (a crash switch), then restart without it until a normal exit."""
    runs = [run_daemon(root, env=first_env)]
    while runs[-1].returncode == -signal.SIGKILL and len(runs) <= max_restarts:
        runs.append(run_daemon(root))
    last = runs[-1]
    assert last.returncode >= 0, f"still crashing after {len(runs)} runs; last log:\n{last.log_tail()}"
    return runs


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def processes_mentioning(marker: str) -> dict[int, str]:
    """Live processes whose command line names ``marker`` (a test's own folder) or that run in it."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours to look at
            continue
        cmdline = raw.replace(b"\0", b" ").decode(errors="replace")
        if state != "Z" and (marker in cmdline or cwd == marker or cwd.startswith(marker + "/")):
            found[int(entry.name)] = f"{cmdline} (in {cwd})"
    return found


def leftover_processes(marker: str, grace: float = 2.0) -> dict[int, str]:
    """Processes started for ``marker`` (a test's folder) still alive after ``grace`` seconds."""
    deadline = time.monotonic() + grace
    left = processes_mentioning(marker)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = processes_mentioning(marker)
    return left


def reap(marker: str) -> None:
    """Kill, by pid, whatever a test started for ``marker`` and left running (after a failure)."""
    for pid in processes_mentioning(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def batchd(root: Path, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        batchd_argv(*args, "-C", str(root)),
        cwd=root,
        env=daemon_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def events(root: Path) -> list[dict[str, Any]]:
    done = batchd(root, "events", "--json")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def last_seq(root: Path) -> int:
    """The log's last sequence number (0 before the first run)."""
    if not (root / ".batchd" / "events.db").exists():
        return 0
    return max((e["seq"] for e in events(root)), default=0)


def status_json(root: Path) -> dict[str, Any]:
    done = batchd(root, "status", "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


# --- git ----------------------------------------------------------------------------------------


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"git {' '.join(args)} in {cwd} failed: {done.stderr}"
    return done.stdout


def tree_files(repo: Path, rev: str, *, without: Sequence[str] = ()) -> dict[str, str]:
    """path -> blob id of ``rev``'s tree (``without``: paths to leave out)."""
    out: dict[str, str] = {}
    for line in git(repo, "ls-tree", "-r", "--full-tree", rev).splitlines():
        meta, path = line.split("\t", 1)
        if path not in without:
            out[path] = meta.split()[2]
    return out


def commit_messages(
    repo: Path, rev: str, *, since: str | None = None
) -> list[tuple[str, str, dict[str, str]]]:
    """(subject, body without trailers, trailers) of each commit, oldest first."""
    span = f"{since}..{rev}" if since else rev
    raw = git(repo, "log", "--reverse", "--format=%H", span).split()
    out = []
    for sha in raw:
        subject = git(repo, "log", "-1", "--format=%s", sha).strip()
        body = git(repo, "log", "-1", "--format=%b", sha)
        trailers_text = git(repo, "log", "-1", "--format=%(trailers:only,unfold)", sha)
        trailers = dict(line.split(": ", 1) for line in trailers_text.splitlines() if ": " in line)
        kept = "\n".join(line for line in body.splitlines() if line not in trailers_text.splitlines()).strip()
        out.append((subject, kept, trailers))
    return out


# --- the status file ----------------------------------------------------------------------------


def failed_rows(text: str) -> dict[str, tuple[str, str, str, str]]:
    """The ``## Failed/Blocked Todos`` table: todo id -> (description, reason, files reverted, action)."""
    rows: dict[str, tuple[str, str, str, str]] = {}
    inside = False
    for line in text.splitlines():
        if line.startswith("## "):
            inside = line.strip() == "## Failed/Blocked Todos"
            continue
        if not inside or not line.startswith("| ") or line.startswith(("| Todo ID", "|---")):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, f"a Failed/Blocked row without 5 cells: {line!r}"
        rows[cells[0]] = (cells[1], cells[2], cells[3], cells[4])
    return rows


# --- duplicates in the log ----------------------------------------------------------------------


@dataclass
class Tally:
    """Counts of the events that must happen at most once per key, for a duplicate check."""

    counts: dict[tuple[str, ...], int] = field(default_factory=dict)

    def add(self, *key: str) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1

    def duplicates(self) -> dict[tuple[str, ...], int]:
        return {k: n for k, n in self.counts.items() if n > 1}


AGENT_EVENTS = (
    "todo.agent_started",
    "todo.agent_spawned",
    "todo.agent_finished",
    "todo.agent_failed",
    "todo.agent_interrupted",
    "todo.rejected",
    "todo.conflicted",
)


def once_only_tally(log: Sequence[Mapping[str, Any]]) -> Tally:
    """Counts per key of events that may happen once. An interrupted attempt is re-run under its own
    number (it does not count), so agent events are keyed by attempt and by re-run as well."""
    tally = Tally()
    reruns: dict[tuple[str, int], int] = {}
    for e in log:
        p = e["payload"]
        kind = e["type"]
        if kind == "todo.accepted":
            tally.add(kind, p["todo_id"], p["batch"])
        elif kind in ("todo.completed", "todo.blocked"):
            tally.add(kind, p["todo_id"])
        elif kind in AGENT_EVENTS:
            attempt = (p["todo_id"], int(p["attempt"]))
            tally.add(kind, p["todo_id"], str(p["attempt"]), str(reruns.get(attempt, 0)))
            if kind == "todo.agent_interrupted":
                reruns[attempt] = reruns.get(attempt, 0) + 1
        elif kind.startswith("phase.") and kind != "phase.pushing":
            tally.add(kind, str(p["number"]))
        elif kind.startswith("batch.") and kind not in ("batch.verify_run", "batch.paused", "batch.resumed"):
            tally.add(kind, p["key"])
        elif kind in ("run.started", "run.completed"):
            tally.add(kind)
    return tally


# --- the outcome of a run, read back from the world --------------------------------------------


@dataclass
class Outcome:
    """What a finished run left: the parts that must not depend on crashes and restarts."""

    exit_code: int
    complete: frozenset[str]  # todos the log says are complete
    complete_files: frozenset[str]  # ids of todos/*-complete-* files in the checkout
    # The target branch's tree without the status file: that file names the run id and times, and
    # counts interrupted (uncounted) attempts and re-done verify runs, so it differs after a crash.
    tree: dict[str, str]
    remote_tree: dict[str, str]
    head: str
    remote_head: str
    messages: list[tuple[str, str]]  # (subject, body without trailers) of each new commit on main
    phase_trailers: list[str]  # Batchd-Phase of each new commit on main, oldest first
    failed: dict[str, tuple[str, str, str, str]]
    audit: subprocess.CompletedProcess[str]
    replay: subprocess.CompletedProcess[str]
    duplicates: dict[tuple[str, ...], int]
    leftovers: dict[int, str]
    event_types: dict[str, int]
    last_seq: int
    runs: list[DaemonRun] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(r.seconds for r in self.runs)


def collect_outcome(root: Path, remote: Path, runs: list[DaemonRun], *, base: str) -> Outcome:
    """Read back everything a finished run left (``base``: the target branch before the run)."""
    leftovers = leftover_processes(str(root))
    log = events(root)
    status = status_json(root)
    messages = commit_messages(root, "main", since=base)
    types: dict[str, int] = {}
    for e in log:
        types[e["type"]] = types.get(e["type"], 0) + 1
    status_path = root / STATUS_FILE
    return Outcome(
        exit_code=runs[-1].returncode,
        complete=frozenset(t["id"] for t in status["todos"] if t["state"] == "complete"),
        complete_files=frozenset(p.name.split("-", 1)[0] for p in (root / "todos").glob("*-complete-*.md")),
        tree=tree_files(root, "main", without=(STATUS_FILE,)),
        remote_tree=tree_files(remote, "main", without=(STATUS_FILE,)),
        head=git(root, "rev-parse", "main").strip(),
        remote_head=git(remote, "rev-parse", "main").strip(),
        messages=[(subject, body) for subject, body, _ in messages],
        phase_trailers=[trailers.get("Batchd-Phase", "") for _, _, trailers in messages],
        failed=failed_rows(status_path.read_text(encoding="utf-8")) if status_path.exists() else {},
        audit=batchd(root, "audit", "verify"),
        replay=batchd(root, "replay", "--verify"),
        duplicates=once_only_tally(log).duplicates(),
        leftovers=leftovers,
        event_types=types,
        last_seq=max((e["seq"] for e in log), default=0),
        runs=runs,
    )
