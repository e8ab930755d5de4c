"""Recovery's look at the world before a run resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from procs import PY, DaemonProcess, alive, git, group_members, make_repo, projection, read_events, wait_for

from daemon.config import load_config
from daemon.engine import executor
from daemon.engine.recovery import check_checkout, reconcile
from daemon.engine.runner import Daemon
from daemon.exceptions import UsageError
from daemon.world import adopted, agentshim, agentspace
from daemon.world.adopted import AdoptedProcess
from daemon.world.agentproc import AgentProcess, enforce_timeout, process_start_ticks, start_agent
from statemachine import events as ev
from store.eventlog import StoredEvent


def test_a_checkout_on_another_branch_is_refused_with_how_to_fix(tmp_path: Path) -> None:
    """`batchd run` on a checkout that is not on [batchd] branch stops at once (exit 2) naming both."""
    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "checkout", "-q", "-b", "feature"], check=True)
    with pytest.raises(UsageError) as caught:
        check_checkout(tmp_path, "main")
    assert "'feature'" in caught.value.message and "'main'" in caught.value.message
    assert caught.value.exit_code == 2
    assert "git checkout main" in caught.value.hint


# --- killing only what batchd started -------------------------------------------------------------


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """A daemon whose log says todo 7's agent runs, with the given pid, start time and token."""
    made: list[Daemon] = []

    def make(*, pid: int | None, start_ticks: int | None, token: str) -> Daemon:
        root = make_repo(tmp_path / "repo", {})
        d = Daemon(load_config(root))
        d.load()
        d.emit_one(
            ev.todo_stream("7"),
            ev.TodoQueued(todo_id="7", path="todos/7.md", title="t", priority="p2", digest="d"),
        )
        d.emit_one(ev.todo_stream("7"), ev.TodoPlanned(todo_id="7", batch="1.1", phase=1))
        d.emit_one(
            ev.todo_stream("7"),
            ev.AgentStarted(
                todo_id="7", attempt=1, batch="1.1", worktree=".batchd/workspaces/todo-7", branch="b",
                base_sha="0" * 40, log_path=".batchd/logs/x.log", token=token,
            ),
        )  # fmt: skip
        if pid is not None:
            d.emit_one(
                ev.todo_stream("7"),
                ev.AgentSpawned(todo_id="7", attempt=1, pid=pid, pgid=pid, start_ticks=start_ticks),
            )
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def sleeper(**env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sleep", "60"], start_new_session=True, env={**os.environ, **env})


def gone(proc: subprocess.Popen[bytes]) -> bool:
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return False
    return True


def test_the_recorded_agent_group_is_killed_and_the_attempt_interrupted(
    running: Callable[..., Daemon],
) -> None:
    """The group whose leader has the recorded start time is the dead daemon's agent: killed, re-run."""
    agent = sleeper()
    d = running(pid=agent.pid, start_ticks=process_start_ticks(agent.pid), token="t1")
    reconcile(d)
    assert gone(agent)
    assert d.proj.todos["7"].state == "planned"
    assert d.proj.todos["7"].history[-1].outcome == "interrupted"


def test_a_reused_pid_is_never_killed(running: Callable[..., Daemon]) -> None:
    """A live process at the recorded pid that started at another time is someone else's: spared."""
    stranger = sleeper()
    try:
        ticks = process_start_ticks(stranger.pid)
        assert ticks is not None
        d = running(pid=stranger.pid, start_ticks=ticks - 1, token="t2")
        reconcile(d)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_an_agent_started_but_never_recorded_is_found_by_its_token(running: Callable[..., Daemon]) -> None:
    """A crash between starting the agent and recording its pid: the agent carries the attempt's token."""
    agent = sleeper(BATCHD_AGENT_TOKEN="t3")
    bystander = sleeper(BATCHD_AGENT_TOKEN="another-attempt")
    try:
        d = running(pid=None, start_ticks=None, token="t3")
        reconcile(d)
        assert gone(agent)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# --- an agent that outlives its daemon is collected, not paid for twice (issue 13) ----------------

CRASH_AGENT = Path(__file__).resolve().parents[1] / "agents" / "crash_agent.py"


@dataclass
class Crashed:
    """A repository with one todo whose ``crash_agent.py`` runs, the daemon that ran it killed -9."""

    root: Path
    folder: Path  # the agent's run counter, start markers and release file (outside the workspace)
    spawned: StoredEvent

    @property
    def exit_record(self) -> Path:
        return self.root / self.spawned.payload["exit_path"]

    def runs(self) -> int:
        counter = self.folder / "runs-1"
        return len(counter.read_text(encoding="utf-8").splitlines()) if counter.exists() else 0

    def release(self) -> None:
        (self.folder / "release-1").write_text("go", encoding="utf-8")

    def outcomes(self) -> list[StoredEvent]:
        kinds = ("todo.agent_finished", "todo.agent_failed", "todo.agent_interrupted")
        return [e for e in read_events(self.root) if e.type in kinds]


@pytest.fixture
def crashed(tmp_path: Path) -> Iterator[Callable[..., Crashed]]:
    """``crashed(rc=0)``: run the daemon until the agent started, then ``kill -9`` the daemon only
    (the agent, in its own session, goes on). Everything started is killed at the end."""
    daemons: list[DaemonProcess] = []

    def make(*, rc: int = 0) -> Crashed:
        folder = tmp_path / "agent"
        folder.mkdir()
        root = make_repo(tmp_path / "repo", {})
        (root / "todos" / "1-ready-p2-thing.md").write_text("# Thing\n\nDo the thing.\n", encoding="utf-8")
        (root / "batchd.toml").write_text(
            textwrap.dedent(
                f"""\
                [batchd]
                remote = ""
                max_parallel = 1
                max_attempts = 1
                stop_timeout = 2.0
                rescan_interval = 30

                [agent]
                command = {json.dumps([PY, str(CRASH_AGENT), "{todo_id}"])}
                timeout = 120.0
                sandbox = "none"
                env = {{ CRASH_DIR = {json.dumps(str(folder))}, CRASH_RC = "{rc}" }}

                [verify]
                commands = [{json.dumps([PY, "-B", "check.py"])}]
                retries = 0
                """
            ),
            encoding="utf-8",
        )
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "todo")
        first = DaemonProcess(root, "--once")
        daemons.append(first)
        spawned = first.wait_events("todo.agent_spawned")[0]
        wait_for((folder / "started-1-1").exists, what="the agent's first run")
        first.proc.kill()  # kill -9 of the daemon alone
        first.wait()
        return Crashed(root=root, folder=folder, spawned=spawned)

    yield make
    for daemon in daemons:
        daemon.kill()


def restart(crashed: Crashed, daemons: list[DaemonProcess] | None = None) -> DaemonProcess:
    daemon = DaemonProcess(crashed.root, "--once")
    if daemons is not None:
        daemons.append(daemon)
    return daemon


def test_an_agent_that_finished_while_the_daemon_was_down_is_collected_not_rerun(
    crashed: Callable[..., Crashed],
) -> None:
    """kill -9 while the agent runs, the agent ends before the restart: its change is verified and
    accepted, marked recovered, and the agent ran once."""
    lab = crashed()
    lab.release()
    wait_for(lab.exit_record.exists, what="the shim's exit record")
    daemon = restart(lab)
    try:
        assert daemon.wait(timeout=60) == 0
    finally:
        daemon.kill()
    assert lab.runs() == 1
    [outcome] = lab.outcomes()
    assert outcome.type == "todo.agent_finished"
    assert outcome.payload["recovered"] is True
    assert projection(lab.root).todos["1"].state == "complete"
    assert "out-1.txt" in git(lab.root, "ls-tree", "--name-only", "HEAD")


def test_an_agent_still_running_at_the_restart_is_adopted_and_collected_when_it_ends(
    crashed: Callable[..., Crashed],
) -> None:
    """The restarted daemon takes the running agent over (no kill, no second run) and collects it."""
    lab = crashed()
    daemon = restart(lab)
    try:
        [line] = daemon.wait_logged("recovered_agent")
        assert line["case"] == "adopted"
        assert alive(lab.spawned.payload["pid"])
        lab.release()
        assert daemon.wait(timeout=60) == 0
    finally:
        daemon.kill()
    assert lab.runs() == 1
    [outcome] = lab.outcomes()
    assert outcome.type == "todo.agent_finished"
    assert outcome.payload["recovered"] is True
    assert projection(lab.root).todos["1"].state == "complete"


def test_an_agent_that_failed_while_the_daemon_was_down_is_recorded_failed_not_rerun(
    crashed: Callable[..., Crashed],
) -> None:
    """Its exit record says it exited 1: the attempt failed (as if the daemon had watched), once."""
    lab = crashed(rc=1)
    lab.release()
    wait_for(lab.exit_record.exists, what="the shim's exit record")
    daemon = restart(lab)
    try:
        daemon.wait(timeout=60)
    finally:
        daemon.kill()
    assert lab.runs() == 1
    [outcome] = lab.outcomes()
    assert outcome.type == "todo.agent_failed"
    assert outcome.payload["returncode"] == 1
    assert "ended while batchd was down" in outcome.payload["detail"]


def test_an_agent_lost_with_its_daemon_is_interrupted_and_run_again(crashed: Callable[..., Crashed]) -> None:
    """No process and no exit record (killed with the daemon): its work is lost and redone, once more,
    and the interruption says so and counts the agent time it had spent."""
    lab = crashed()
    pgid = lab.spawned.payload["pgid"]
    os.killpg(pgid, signal.SIGKILL)
    wait_for(lambda: not group_members(pgid), what="the agent's group to die")
    lab.release()  # the second run ends at once
    daemon = restart(lab)
    try:
        assert daemon.wait(timeout=60) == 0
    finally:
        daemon.kill()
    assert lab.runs() == 2
    interrupted, finished = lab.outcomes()
    assert interrupted.type == "todo.agent_interrupted"
    assert "lost" in interrupted.payload["reason"] and "redone" in interrupted.payload["reason"]
    assert interrupted.payload["duration"] > 0
    assert finished.type == "todo.agent_finished"
    assert finished.payload["recovered"] is False


# --- the cases decided in-process: committed work, timeouts from the original start ----------------


def dead_pid() -> int:
    """A pid that was batchd's agent and has ended (its start time no longer matches anything)."""
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    return proc.pid


def spawned_daemon(
    tmp_path: Path,
    *,
    pid: int,
    start_ticks: int | None,
    commit: str | None,
    spawn: Callable[[Daemon], AgentProcess] | None = None,
) -> Daemon:
    """A daemon whose log says todo 7's agent runs (spawned through the shim) in a real workspace;
    ``commit``: a commit message the agent made there (None: it only left an uncommitted file);
    ``spawn``: starts the agent for real (between the intent and the spawn, as the executor does)."""
    root = make_repo(tmp_path / "repo", {})
    base = git(root, "rev-parse", "HEAD").strip()
    workspace = root / ".batchd" / "workspaces" / "todo-7"
    agentspace.create(root, workspace, branch="batchd/todo-7-a1", base_sha=base, files={})
    (workspace / "feature.py").write_text("def feature() -> int:\n    return 1\n", encoding="utf-8")
    if commit is not None:
        git(workspace, "add", "feature.py")
        git(workspace, "commit", "-q", "-m", commit)
    d = Daemon(load_config(root))
    d.load()
    stream = ev.todo_stream("7")
    d.emit_one(stream, ev.TodoQueued(todo_id="7", path="todos/7.md", title="t", priority="p2", digest="d"))
    d.emit_one(stream, ev.TodoPlanned(todo_id="7", batch="1.1", phase=1))
    d.emit_one(
        stream,
        ev.AgentStarted(
            todo_id="7", attempt=1, batch="1.1", worktree=".batchd/workspaces/todo-7",
            branch="batchd/todo-7-a1", base_sha=base, log_path=".batchd/logs/x.log", token="t7",
        ),
    )  # fmt: skip
    if spawn is not None:
        agent = spawn(d)
        pid, start_ticks = agent.pid, agent.start_ticks
    d.emit_one(
        stream,
        ev.AgentSpawned(
            todo_id="7", attempt=1, pid=pid, pgid=pid, start_ticks=start_ticks,
            exit_path=".batchd/exits/todo-7-attempt-1.json",
        ),
    )  # fmt: skip
    return d


def test_an_agent_killed_after_committing_its_work_with_its_trailers_is_collected(tmp_path: Path) -> None:
    """No process, no exit record, but its HEAD carries Batchd-Todo/Batchd-Attempt of this attempt:
    it said it was done; it is collected as a success, not re-run."""
    message = "Add feature\n\nBatchd-Todo: 7\nBatchd-Attempt: 1\n"
    d = spawned_daemon(tmp_path, pid=dead_pid(), start_ticks=1, commit=message)
    try:
        reconcile(d)
        assert d.agents["7"].recovery == "committed"
        executor.poll(d, d.clock())  # the normal path: its exit is seen and its change collected
        d.wait_jobs(timeout=30)
        d.poll_jobs()
        [finished] = [e for e in d.log.read(since=0) if e.type == "todo.agent_finished"]
        assert finished.payload["recovered"] is True
        assert finished.payload["files"] == ["feature.py"]
    finally:
        d.close()


def test_files_written_after_the_trailer_commit_make_the_work_lost_not_collected(tmp_path: Path) -> None:
    """The agent committed with its trailers, then went on writing and was killed: the commit was a
    step, not its word that it was done; the half-written file is not collected as a change."""
    message = "Add feature\n\nBatchd-Todo: 7\nBatchd-Attempt: 1\n"
    d = spawned_daemon(tmp_path, pid=dead_pid(), start_ticks=1, commit=message)
    try:
        later = time.time() + 5
        half = d.root / d.proj.todos["7"].worktree / "half.py"
        half.write_text("def half(", encoding="utf-8")
        os.utime(half, (later, later))
        reconcile(d)
        assert "7" not in d.agents
        assert d.proj.todos["7"].history[-1].outcome == "interrupted"
    finally:
        d.close()


def test_a_commit_for_another_attempt_is_not_taken_as_done(tmp_path: Path) -> None:
    """Trailers naming another attempt are not this attempt's word: its work is lost and redone."""
    message = "Add feature\n\nBatchd-Todo: 7\nBatchd-Attempt: 2\n"
    d = spawned_daemon(tmp_path, pid=dead_pid(), start_ticks=1, commit=message)
    try:
        reconcile(d)
        assert "7" not in d.agents
        assert d.proj.todos["7"].history[-1].outcome == "interrupted"
    finally:
        d.close()


def test_half_written_uncommitted_files_are_lost_and_the_attempt_interrupted(tmp_path: Path) -> None:
    """Files the agent had not committed when it was killed are not a finished change."""
    d = spawned_daemon(tmp_path, pid=dead_pid(), start_ticks=1, commit=None)
    try:
        reconcile(d)
        assert "7" not in d.agents
        record = d.proj.todos["7"].history[-1]
        assert record.outcome == "interrupted"
        assert "no committed work" in record.reason
    finally:
        d.close()


def test_an_exit_record_older_than_the_attempt_is_not_its_outcome(tmp_path: Path) -> None:
    """A record left by an earlier run of the same attempt (interrupted, then started again) does
    not say how this run ended."""
    d = spawned_daemon(tmp_path, pid=dead_pid(), start_ticks=1, commit=None)
    try:
        record = d.root / ".batchd" / "exits" / "todo-7-attempt-1.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"rc": 0, "ended_at": 1000.0}), encoding="utf-8")
        reconcile(d)
        assert "7" not in d.agents
        assert d.proj.todos["7"].history[-1].outcome == "interrupted"
    finally:
        d.close()


def test_an_adopted_agent_times_out_from_its_original_start(tmp_path: Path) -> None:
    """Its timeout counts from when the dead daemon started it, not from the adoption."""
    agent = sleeper()
    try:
        proc = AdoptedProcess(
            pid=agent.pid, start_ticks=process_start_ticks(agent.pid), token="", log_path=tmp_path / "log",
            exit_path=tmp_path / "exit.json", started_wall=time.time() - 3600,
        )  # fmt: skip
        assert proc.poll() is None
        assert enforce_timeout(proc, 60.0, time.monotonic())
        assert gone(agent)
        assert proc.poll() == -signal.SIGKILL  # no exit record: the shim was killed
        assert proc.elapsed >= 3600
    finally:
        agent.kill()
        agent.wait()


def test_an_agent_its_shim_ended_at_the_deadline_while_no_daemon_ran_is_recorded_timed_out(
    tmp_path: Path,
) -> None:
    """The daemon died and none came back; the shim ended the agent at its deadline. The next daemon
    collects that run as a timeout (not an agent that failed on its own, nor an interruption)."""
    started: list[AgentProcess] = []

    def spawn(d: Daemon) -> AgentProcess:
        proc = start_agent(
            [PY, "-c", "import time; time.sleep(1000)"],
            cwd=d.root / ".batchd" / "workspaces" / "todo-7",
            log_path=d.root / ".batchd" / "logs" / "x.log",
            env=dict(os.environ),
            exit_path=d.ws.exit_record("7", 1),
            timeout=0.0,
            deadline_margin=1.0,
            deadline_grace=0.5,
        )
        started.append(proc)
        return proc

    d = spawned_daemon(tmp_path, pid=0, start_ticks=None, commit=None, spawn=spawn)
    try:
        [shim] = started
        shim.wait(timeout=30)  # no daemon watches it: only its deadline ends it
        reconcile(d)
        assert d.agents["7"].recovery == "exited"
        executor.poll(d, d.clock())
        d.wait_jobs(timeout=30)
        d.poll_jobs()
        [failed] = [e for e in d.log.read(since=0) if e.type == "todo.agent_failed"]
        assert failed.payload["reason"] == "timeout"
    finally:
        for proc in started:
            proc.kill_group(signal.SIGKILL)
        d.close()


def test_a_reused_pid_is_not_adopted(tmp_path: Path) -> None:
    """A live process at the recorded pid with another start time is not the agent: not adopted,
    not killed; the attempt is interrupted."""
    stranger = sleeper()
    try:
        ticks = process_start_ticks(stranger.pid)
        assert ticks is not None
        d = spawned_daemon(tmp_path, pid=stranger.pid, start_ticks=ticks - 1, commit=None)
        try:
            reconcile(d)
            assert "7" not in d.agents
            assert d.proj.todos["7"].history[-1].outcome == "interrupted"
        finally:
            d.close()
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_an_agent_whose_pid_was_never_recorded_is_adopted_through_its_shim(
    running: Callable[..., Daemon],
) -> None:
    """A crash between starting the agent and recording its pid: its shim (carrying the attempt's
    token, writing the attempt's exit record) is found and adopted, not killed."""
    d = running(pid=None, start_ticks=None, token="t8")
    exit_path = d.ws.exit_record("7", 1)
    shim = subprocess.Popen(
        [PY, "-I", "-S", agentshim.__file__, str(exit_path), "sleep", "60"],
        start_new_session=True,
        env={**os.environ, "BATCHD_AGENT_TOKEN": "t8"},
    )
    try:
        wait_for(lambda: adopted.shim_leader("t8", exit_path), what="the shim to carry its token")
        reconcile(d)
        proc = d.agents["7"]
        assert (proc.recovery, proc.pid) == ("adopted", shim.pid)
        assert shim.poll() is None
    finally:
        os.killpg(shim.pid, signal.SIGKILL)
        shim.wait()
