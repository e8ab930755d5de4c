"""``batchd run`` as a real process: sd_notify over a real datagram socket, SIGTERM, SIGHUP and the lock.

Repositories are tiny (two or three todos scripted for the demo agent, a check that always passes);
agents that must still be running when a signal lands sleep with ``BATCHD_DEMO_SPEED=1``.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from procs import (
    PY,
    DaemonProcess,
    alive,
    base_env,
    batchd,
    group_members,
    make_repo,
    projection,
    read_events,
    status_json,
    todo_name,
    todo_text,
    wait_for,
    write_config,
)

from store.eventlog import StoredEvent

WATCHDOG_USEC = 200_000
QUICK = "write: [{path: quick.txt, content: quick}]"


def slow(name: str, seconds: float = 30) -> str:
    """An agent script that sleeps (at BATCHD_DEMO_SPEED=1) before writing ``name``."""
    return f"sleep: {seconds}\nwrite: [{{path: {name}, content: done}}]"


# --- sd_notify ------------------------------------------------------------------------------------


@dataclass
class NotifyListener:
    """A bound AF_UNIX datagram socket read by a thread, standing in for systemd.

    The socket queue is short (net.unix.max_dgram_qlen, often 10), so messages are drained as
    they come; when READY=1 arrives, the log is read at once to see what was there before it.
    """

    path: Path
    root: Path
    messages: list[tuple[float, str]] = field(default_factory=list)
    log_at_ready: list[StoredEvent] | None = None

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.05)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            text = data.decode()
            if text == "READY=1" and self.log_at_ready is None:
                self.log_at_ready = read_events(self.root)
            self.messages.append((time.monotonic(), text))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()

    def last_status(self) -> str:
        statuses = [m for _, m in self.messages if m.startswith("STATUS=")]
        return statuses[-1].removeprefix("STATUS=") if statuses else ""

    def times(self, text: str) -> list[float]:
        return [at for at, message in self.messages if message == text]


@dataclass
class NotifyRun:
    listener: NotifyListener
    crashed_seq: int  # last event of the daemon that was killed before this one
    sigterm_at: float
    ticking: tuple[float, float]  # from READY to the SIGTERM
    idle_from: float  # the run had completed and its last STATUS was in
    returncode: int


@pytest.fixture(scope="module")
def notify_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifyRun]:
    """A daemon killed (-9) right after spawning an agent, then restarted under a fake systemd.

    The restart has work to reconcile (the dead daemon's running attempt), runs the todos to the
    end, idles a little, and is stopped with SIGTERM; every notification is kept with its time.
    """
    base = tmp_path_factory.mktemp("notify")
    root = make_repo(base / "repo", {"1": slow("one.txt", 0.5), "2": QUICK}, speed="0")
    crashed = DaemonProcess(root, env=base_env(BATCHD_CRASH_AFTER="todo.agent_spawned"))
    assert crashed.wait() == -signal.SIGKILL
    crashed_seq = read_events(root)[-1].seq
    listener = NotifyListener(base / "notify.sock", root)
    env = base_env(NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC=str(WATCHDOG_USEC))
    daemon = DaemonProcess(root, env=env)
    try:
        daemon.wait_events("run.completed", timeout=30)
        wait_for(lambda: listener.last_status().startswith("completed"), what="the final STATUS=")
        idle_from = time.monotonic()
        time.sleep(1.0)  # idle ticks: the watchdog must keep coming when there is nothing to do
        sigterm_at = time.monotonic()
        code = daemon.stop(signal.SIGTERM)
        time.sleep(0.2)  # the last datagrams
        ready = listener.times("READY=1")
        assert ready, f"no READY=1 among {listener.messages}"
        yield NotifyRun(listener, crashed_seq, sigterm_at, (ready[0], sigterm_at), idle_from, code)
    finally:
        listener.close()
        crashed.kill()
        daemon.kill()


def test_ready_comes_after_reconciliation_and_attach(notify_run: NotifyRun) -> None:
    """READY=1 is sent only once the dead daemon's agent was reconciled and run.daemon_attached is logged."""
    seen = notify_run.listener.log_at_ready
    assert seen is not None
    new = [e for e in seen if e.seq > notify_run.crashed_seq]
    types = [e.type for e in new]
    assert "todo.agent_interrupted" in types, types
    assert "run.daemon_attached" in types, types
    assert types.index("todo.agent_interrupted") < types.index("run.daemon_attached")
    assert len(notify_run.listener.times("READY=1")) == 1


def test_status_lines_are_one_line_summaries(notify_run: NotifyRun) -> None:
    """STATUS= messages are sent while the run goes on, each a single non-empty line."""
    statuses = [m.removeprefix("STATUS=") for _, m in notify_run.listener.messages if m.startswith("STATUS=")]
    assert statuses, notify_run.listener.messages
    assert all(s.strip() and "\n" not in s for s in statuses), statuses
    assert any("agents running" in s for s in statuses), statuses
    assert statuses[-1] == "completed: 2 complete", statuses


def test_watchdog_pings_arrive_while_the_loop_runs(notify_run: NotifyRun) -> None:
    """With WATCHDOG_USEC=0.2 s the loop pings about every 0.1 s, from READY until it stops."""
    start, end = notify_run.ticking
    pings = [t for t in notify_run.listener.times("WATCHDOG=1") if start <= t <= end]
    assert len(pings) >= 5, f"{len(pings)} pings in {end - start:.1f}s"
    # Half the interval, not flooding: at most one ping per 0.1 s tick (plus slack for jitter).
    assert len(pings) <= (end - start) / 0.1 + 3
    # Pings keep coming when there is nothing left to do (1 s idle after the run completed).
    assert len([t for t in pings if t >= notify_run.idle_from]) >= 2


def test_stopping_is_sent_on_sigterm(notify_run: NotifyRun) -> None:
    """SIGTERM makes the daemon send STOPPING=1, nothing but that after it, and exit 0."""
    assert notify_run.returncode == 0
    after = [m for t, m in notify_run.listener.messages if t >= notify_run.sigterm_at]
    assert "STOPPING=1" in after, after
    assert all(m in ("STOPPING=1", "WATCHDOG=1") or m.startswith("STATUS=") for m in after), after
    assert notify_run.listener.messages[-1][1] == "STOPPING=1"


# --- SIGTERM --------------------------------------------------------------------------------------


@dataclass
class Terminated:
    root: Path
    spawned: list[StoredEvent]
    events: list[StoredEvent]
    returncode: int
    seconds: float


@pytest.fixture(scope="module")
def terminated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminated]:
    """A daemon (no --once) stopped with SIGTERM while two agents sleep 30 s (stop_timeout = 1 s)."""
    root = make_repo(
        tmp_path_factory.mktemp("term") / "repo",
        {"1": slow("one.txt"), "2": slow("two.txt"), "3": QUICK},
        speed="1",
        stop_timeout=1,
    )
    daemon = DaemonProcess(root)
    try:
        spawned = daemon.wait_events("todo.agent_spawned", count=2, timeout=30)
        started = time.monotonic()
        code = daemon.stop(signal.SIGTERM)
        yield Terminated(root, spawned, read_events(root), code, time.monotonic() - started)
    finally:
        daemon.kill()


def test_sigterm_stops_the_daemon_with_exit_0(terminated: Terminated) -> None:
    """SIGTERM mid-batch is a clean stop of the daemon: exit 0, after about stop_timeout seconds."""
    assert terminated.returncode == 0
    assert terminated.seconds < 10  # stop_timeout (1 s) and the kill, not the agents' 30 s sleep


def test_sigterm_leaves_no_agent_process(terminated: Terminated) -> None:
    """Every agent the daemon spawned is gone, with its whole process group (checked in /proc)."""
    assert len(terminated.spawned) == 2
    for event in terminated.spawned:
        assert not alive(event.payload["pid"]), event.payload
        assert group_members(event.payload["pgid"]) == [], event.payload


def test_sigterm_records_interrupted_attempts_in_a_valid_log(terminated: Terminated) -> None:
    """Both running attempts are logged as todo.agent_interrupted, and `batchd audit verify` passes."""
    interrupted = {
        (e.payload["todo_id"], e.payload["attempt"])
        for e in terminated.events
        if e.type == "todo.agent_interrupted"
    }
    assert interrupted == {("1", 1), ("2", 1)}
    types = [e.type for e in terminated.events]
    assert types.index("run.stopping") < types.index("todo.agent_interrupted")
    done = batchd(terminated.root, "audit", "verify")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok:")


def test_restart_after_sigterm_completes_without_using_an_attempt(terminated: Terminated) -> None:
    """A restart re-runs the interrupted todos as the same attempt and completes the run."""
    write_config(terminated.root, speed="0", stop_timeout=1)  # the re-run need not sleep
    rerun = DaemonProcess(terminated.root, "--once")
    try:
        assert rerun.wait(timeout=60) == 0, rerun.log_path.read_text()
    finally:
        rerun.kill()
    todos = {t["id"]: t for t in status_json(terminated.root)["todos"]}
    assert {k: t["state"] for k, t in todos.items()} == {"1": "complete", "2": "complete", "3": "complete"}
    assert todos["1"]["attempt"] == todos["2"]["attempt"] == 1
    assert projection(terminated.root).todos["1"].attempts_used == 0
    starts = [
        (e.payload["todo_id"], e.payload["attempt"])
        for e in read_events(terminated.root)
        if e.type == "todo.agent_started"
    ]
    assert starts.count(("1", 1)) == 2 and starts.count(("2", 1)) == 2, starts


def test_sigterm_during_run_once_exits_128_plus_15(
    tmp_path: Path,
    start_daemon: Callable[..., DaemonProcess],
) -> None:
    """`batchd run --once` that is stopped before the run finished exits 143 (interrupted by SIGTERM)."""
    root = make_repo(tmp_path / "repo", {"1": slow("one.txt")}, speed="1", stop_timeout=0.5)
    daemon = start_daemon(root, "--once")
    (spawned,) = daemon.wait_events("todo.agent_spawned", timeout=30)
    assert daemon.stop(signal.SIGTERM) == 128 + signal.SIGTERM
    assert not alive(spawned.payload["pid"])


# --- SIGHUP and the lock: one idle daemon ---------------------------------------------------------


@dataclass
class Idle:
    """A daemon with nothing to do, and the max_parallel its current config has (tests change it)."""

    daemon: DaemonProcess
    max_parallel: int = 2

    def reload(self, event: str) -> dict[str, Any]:
        """SIGHUP, and the next log line ``event`` (counted, so earlier reloads do not answer)."""
        before = len(self.daemon.logged(event))
        self.daemon.send(signal.SIGHUP)
        return self.daemon.wait_logged(event, count=before + 1)[-1]

    def reload_one_more_agent(self) -> None:
        """A good reload raising max_parallel by one: config_reloaded names only that change."""
        new = self.max_parallel + 1
        write_config(self.daemon.root, max_parallel=new)
        line = self.reload("config_reloaded")
        assert line["changes"] == [f"batchd.max_parallel: {self.max_parallel} -> {new}"]
        self.max_parallel = new


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Idle]:
    root = make_repo(tmp_path_factory.mktemp("idle") / "repo", {}, max_parallel=2)
    daemon = DaemonProcess(root)
    try:
        daemon.wait_logged("daemon_ready")
        yield Idle(daemon)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def test_sighup_reloads_a_good_config_and_reports_the_change(idle: Idle) -> None:
    """SIGHUP after max_parallel changed logs config_reloaded naming exactly that change."""
    idle.reload_one_more_agent()


def test_sighup_rejects_a_broken_config_and_keeps_the_old_one(idle: Idle) -> None:
    """SIGHUP with invalid TOML logs config_reload_rejected; the daemon runs on with the old config."""
    (idle.daemon.root / "batchd.toml").write_text("[batchd\nmax_parallel = \n", encoding="utf-8")
    rejected = idle.reload("config_reload_rejected")
    assert "batchd.toml" in rejected["error"] and "invalid TOML" in rejected["error"]
    assert idle.daemon.proc.poll() is None
    # The next good reload is compared with the config kept, not with the broken file.
    idle.reload_one_more_agent()


def test_sighup_refuses_a_config_whose_agent_cannot_be_found(idle: Idle) -> None:
    """A reload naming an agent that is not installed would fail every attempt from then on: it is
    refused like a broken file (config_reload_rejected, naming the agent), and the old config stays."""
    config = idle.daemon.root / "batchd.toml"
    good = config.read_text(encoding="utf-8")
    config.write_text(
        good.replace(
            f"max_parallel = {idle.max_parallel}", f"max_parallel = {idle.max_parallel + 1}"
        ).replace("command = [", 'command = ["no-such-agent-cli", '),
        encoding="utf-8",
    )
    rejected = idle.reload("config_reload_rejected")
    assert "[agent] command: `no-such-agent-cli` is not on PATH" in rejected["error"]
    assert idle.daemon.proc.poll() is None
    idle.reload_one_more_agent()  # compared with the config kept, not with the refused one


def test_second_daemon_on_the_same_repository_exits_3_naming_the_holder(idle: Idle) -> None:
    """A second `batchd run` on a repository with a running daemon exits 3 and names the lock holder's pid."""
    second = subprocess.run(
        [PY, "-m", "daemon", "run", "-C", str(idle.daemon.root), "--log-json"],
        capture_output=True,
        text=True,
        env=base_env(),
        timeout=60,
        check=False,
    )
    assert second.returncode == 3, second.stderr
    assert f"pid {idle.daemon.pid}" in second.stderr, second.stderr
    assert idle.daemon.proc.poll() is None


def test_a_todo_dropped_during_the_first_scan_is_seen_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher starts before the first scan: a file written while that scan runs is picked up by
    its event, while the first agent still works (2 s), not at the next rescan (30 s) or when the
    phase commit's rename happens to wake the watcher."""
    from daemon.config import load_config
    from daemon.engine import intake
    from daemon.service import loop as service

    root = make_repo(tmp_path / "repo", {"001": slow("first.txt", 2)}, speed="1")
    real_rescan = intake.rescan
    calls = [0]

    def rescan_then_drop(d: Any) -> int:
        found = real_rescan(d)
        calls[0] += 1
        if calls[0] == 1:
            later = todo_text("002", "write: [{path: later.txt, content: later}]")
            (root / "todos" / todo_name("002")).write_text(later, encoding="utf-8")
        return found

    monkeypatch.setattr(intake, "rescan", rescan_then_drop)
    assert service.serve(load_config(root), once=True) == 0
    events = read_events(root)
    queued = next(e.seq for e in events if e.type == "todo.queued" and e.stream == "todo-2")
    first_done = next(e.seq for e in events if e.type == "todo.agent_finished" and e.stream == "todo-1")
    assert queued < first_done
    assert {t.todo_id: t.state for t in projection(root).todos.values()} == {"1": "complete", "2": "complete"}
