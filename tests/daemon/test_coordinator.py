"""The coordinator's side of workers (daemon.engine.dispatching), with real ``batchd run`` and
``batchd worker`` processes sharing one SQLite log on this host: it survives its own kill -9 with
the worker's outcome picked up, takes a worker's change only through its own door, refuses a report
the remote does not back, and releases a claim whose todo is gone (the worker kills its agent)."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from procs import alive, base_env, git, group_members, wait_for
from worker.fleet import (
    Fleet,
    log_events,
    of_type,
    wait_event,
    worker_clone,
)

from statemachine import dispatch as dp
from store import EventLog
from store.registry import EventRegistry

pytestmark = pytest.mark.timeout(180)

SLOW = "sleep: 4\nwrite: [{path: slow.py, content: 'SLOW = 1'}]"


def test_a_restarted_coordinator_takes_the_outcome_of_an_agent_that_ran_meanwhile(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet({"001": SLOW})
    first = fleet.start(fleet.root, "--once")
    fleet.worker("w1")
    wait_event(fleet.root, "agent.claimed")
    first.proc.kill()  # kill -9 while the worker's agent runs
    first.proc.wait(timeout=10)
    wait_event(fleet.root, "agent.reported", timeout=60)  # the worker went on without it
    second = fleet.start(fleet.root, "--once")
    assert second.wait(timeout=90) == 0, second.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert len(of_type(events, "agent.claimed")) == 1  # not run again
    assert of_type(events, "todo.agent_interrupted") == []
    assert [e.payload["attempt"] for e in of_type(events, "todo.agent_finished")] == [1]
    assert of_type(events, "agent.released")[0].payload["reason"] == "its outcome is recorded"
    assert "SLOW = 1" in git(fleet.root, "show", "main:slow.py")


def test_a_workers_change_to_batchds_own_files_is_dropped_by_the_coordinator(
    make_fleet: Callable[..., Fleet],
) -> None:
    script = "write: [{path: a.py, content: 'A = 1'}, {path: batchd.toml, content: '[agent]'}]"
    fleet = make_fleet({"001": script})
    before = git(fleet.root, "show", "main:batchd.toml")
    coordinator = fleet.start(fleet.root, "--once")
    fleet.worker("w1")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    finished = of_type(log_events(fleet.root), "todo.agent_finished")
    assert any("batchd.toml" in d for d in finished[0].payload["dropped"])
    assert git(fleet.root, "show", "main:batchd.toml") == before
    assert "A = 1" in git(fleet.root, "show", "main:a.py")


def _hostile_worker(fleet: Fleet, stop: threading.Event, *, name_base: bool = False) -> None:
    """A worker that claims, pushes one commit and reports another (in a thread of the test);
    ``name_base``: it reports the pushed one, under the name of the base the coordinator pushed."""
    log = EventLog(fleet.db)
    name = "liar"
    version = log.append(
        dp.worker_stream(name), [dp.WorkerRegistered(name=name, host="h", slots=1, pid=os.getpid())], 0
    )[-1].version
    try:
        while not stop.is_set():
            version = log.append(dp.worker_stream(name), [dp.WorkerHeartbeat(name=name)], version)[-1].version
            queued = [e for e in log.read(stream_prefix=dp.CLAIM_PREFIX) if e.type == "agent.queued"]
            claimed = {e.stream for e in log.read(stream_prefix=dp.CLAIM_PREFIX) if e.type == "agent.claimed"}
            for q in [q for q in queued if q.stream not in claimed][:1]:
                p = q.payload
                v = log.append(q.stream, [dp.AgentClaimed(token=p["token"], worker=name)], 1)[-1].version
                clone = fleet.tmp / "liar"
                if not clone.exists():
                    worker_clone(str(fleet.remote), clone)
                git(clone, "fetch", "-q", "origin", f"{p['base_ref']}:{p['base_ref']}")
                pushed = _commit_on(clone, p["base_sha"], "pushed.py")
                reported = _commit_on(clone, p["base_sha"], "reported.py")
                git(
                    clone,
                    "push",
                    "-q",
                    "-f",
                    "origin",
                    f"{pushed}:{dp.todo_ref(p['todo_id'], p['attempt'], p['token'])}",
                )
                ref = p["base_ref"] if name_base else dp.todo_ref(p["todo_id"], p["attempt"], p["token"])
                report = dp.AgentReported(
                    token=p["token"], worker=name, ok=True, returncode=0,
                    commit=pushed if name_base else reported, ref=ref,
                )  # fmt: skip
                log.append(q.stream, [report], v)
            time.sleep(0.3)
    finally:
        log.close()


@contextlib.contextmanager
def _liar(fleet: Fleet, *, name_base: bool = False) -> Iterator[Callable[[], None]]:
    """:func:`_hostile_worker` in a thread for the block; yields what stops it (stopped at the end)."""
    stop = threading.Event()
    liar = threading.Thread(
        target=_hostile_worker, args=(fleet, stop), kwargs={"name_base": name_base}, daemon=True
    )
    liar.start()

    def halt() -> None:
        stop.set()
        liar.join(timeout=10)

    try:
        yield halt
    finally:
        halt()


def test_a_report_naming_refs_not_its_claims_fails_and_prunes_nothing_of_others(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet({"001": "write: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root)
    with _liar(fleet, name_base=True) as halt:
        failed = wait_event(fleet.root, "todo.agent_failed", timeout=60)
        halt()  # its retry waits for a worker: the run is not complete, its base must stay
        queued = of_type(log_events(fleet.root), "agent.queued")[0].payload
        own = dp.todo_ref(queued["todo_id"], queued["attempt"], queued["token"])
        # What it pushed under its own name is pruned; the base it named is left for the claims to come.
        wait_for(
            lambda: own not in git(fleet.remote, "for-each-ref") or None, timeout=30, what="own ref pruned"
        )
        assert queued["base_ref"] in git(fleet.remote, "for-each-ref")
    coordinator.stop()
    assert failed[0].payload["reason"] == "exchange"
    assert "not its claim's refs" in failed[0].payload["detail"]


def _commit_on(clone: Path, base: str, path: str) -> str:
    env = {**os.environ, "GIT_INDEX_FILE": str(clone / ".git" / "liar-index")}
    subprocess.run(["git", "read-tree", base], cwd=clone, env=env, check=True)
    blob = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=clone, input=base64.b64encode(os.urandom(8)),
        capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    subprocess.run(
        ["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},{path}"],
        cwd=clone,
        env=env,
        check=True,
    )
    tree = subprocess.run(
        ["git", "write-tree"], cwd=clone, env=env, capture_output=True, text=True, check=True
    )
    return git(clone, "commit-tree", tree.stdout.strip(), "-p", base, "-m", "liar")


def test_a_report_the_remote_does_not_back_fails_the_attempt(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet({"001": "write: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root)
    with _liar(fleet):
        failed = wait_event(fleet.root, "todo.agent_failed", timeout=60)
    coordinator.stop()
    assert failed[0].payload["reason"] == "exchange"
    assert "not the reported" in failed[0].payload["detail"]
    tree = git(fleet.root, "ls-tree", "-r", "--name-only", "main")
    assert "pushed.py" not in tree and "reported.py" not in tree


def test_a_claim_whose_todo_was_deleted_is_released_and_its_agent_killed(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet({"001": "sleep: 30\nwrite: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root)
    w1 = fleet.worker("w1")

    def pgid() -> int | None:
        renewals = of_type(log_events(fleet.root), "agent.lease_renewed")
        return next((int(e.payload["pgid"]) for e in renewals if e.payload["pgid"]), None)

    group = wait_for(pgid, timeout=60, what="the agent on record")
    next((fleet.root / "todos").glob("001-*.md")).unlink()
    released = wait_event(fleet.root, "agent.released", timeout=30)
    assert "no longer wants it" in released[0].payload["reason"]
    w1.wait_logged("claim_lost")
    wait_for(lambda: not group_members(group) or None, timeout=15, what="the agent killed")
    coordinator.stop()
    assert of_type(log_events(fleet.root), "agent.reported") == []


def test_sigterm_on_a_worker_gives_its_claims_back_at_once(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet({"001": "sleep: 30\nwrite: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root)
    w1 = fleet.worker("w1")
    wait_event(fleet.root, "agent.claimed")
    w1.proc.send_signal(signal.SIGTERM)
    assert w1.proc.wait(timeout=20) == 0
    expired = wait_event(fleet.root, "agent.lease_expired")
    assert expired[0].payload["by"] == "w1"
    interrupted = wait_event(fleet.root, "todo.agent_interrupted")
    assert "gave the agent up" in interrupted[0].payload["reason"]
    assert of_type(log_events(fleet.root), "worker.stopped")
    coordinator.stop()


def test_the_remote_keeps_no_batchd_refs_once_the_run_is_complete(make_fleet: Callable[..., Fleet]) -> None:
    fleet = make_fleet(
        {"001": "write: [{path: a.py, content: 'A = 1'}]", "002": "write: [{path: b.py, content: 'B = 1'}]"}
    )
    coordinator = fleet.start(fleet.root, "--once")
    fleet.worker("w1")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert len(of_type(events, "agent.reported")) == 2  # both went through the remote
    assert git(fleet.remote, "for-each-ref", "refs/batchd/") == ""
    assert git(fleet.root, "for-each-ref", "refs/batchd/") == ""
    assert "B = 1" in git(fleet.root, "show", "main:b.py")


# The remote takes its time over a base: the push of refs/batchd/base/... lasts a second and a half.
SLOW_BASE_HOOK = """#!/bin/sh
while read old new ref; do
  case "$ref" in refs/batchd/base/*) sleep 1.5 ;; esac
done
"""


def test_an_attempt_is_queued_only_once_its_base_is_on_the_remote(make_fleet: Callable[..., Fleet]) -> None:
    """Two attempts started together on a new base: the one that does not push it waits for the push
    (else the worker that claims it cannot fetch the base, and the attempt fails in its set-up)."""
    fleet = make_fleet({tid: f"write: [{{path: f{tid}.py, content: 'X = 1'}}]" for tid in ("001", "002")})
    hook = fleet.remote / "hooks" / "pre-receive"
    hook.write_text(SLOW_BASE_HOOK, encoding="utf-8")
    hook.chmod(0o755)
    coordinator = fleet.start(fleet.root, "--once")
    fleet.worker("w1", slots=2)  # both attempts are queued in one tick, on the same base
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert [e.payload["detail"] for e in of_type(events, "todo.agent_failed")] == []
    assert sorted(e.payload["todo_id"] for e in of_type(events, "todo.accepted")) == ["1", "2"]
    assert {e.payload["base_ref"] for e in of_type(events, "agent.queued")} == {
        of_type(events, "agent.queued")[0].payload["base_ref"]
    }


def _agents_under(folder: Path) -> list[int]:
    """Live demo agents whose working folder is inside ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if b"daemon.demo.agent" in cmdline and cwd.is_relative_to(folder) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_a_worker_stopped_while_it_prepares_an_attempt_leaves_no_agent_running(
    make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    """SIGTERM while the claimed attempt is still being prepared (a slow fetch of its base): the agent
    that preparation starts after the worker gave the claim up is killed, not left running."""
    fleet = make_fleet({"001": "sleep: 30\nwrite: [{path: a.py, content: 'A = 1'}]"})
    shims = tmp_path / "shims"
    shims.mkdir()
    real = Path(git(fleet.root, "--exec-path")) / "git-upload-pack"
    shim = shims / "git-upload-pack"  # every fetch from the remote takes two seconds
    shim.write_text(f'#!/bin/sh\nsleep 2\nexec "{real}" "$@"\n', encoding="utf-8")
    shim.chmod(0o755)
    coordinator = fleet.start(fleet.root)
    w1 = fleet.worker("w1", env=base_env(PATH=f"{shims}{os.pathsep}{os.environ['PATH']}"))
    try:
        wait_event(fleet.root, "agent.claimed", timeout=60)
        w1.proc.send_signal(signal.SIGTERM)  # its prepare is fetching the base
        assert w1.proc.wait(timeout=30) == 0
        left = _agents_under(fleet.tmp / "w1")
        assert left == [], f"agents left running by the stopped worker: {left}"
        assert not any((fleet.tmp / "w1" / ".batchd" / "remote").iterdir())
    finally:
        for pid in _agents_under(fleet.tmp / "w1"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        coordinator.stop()


def test_a_coordinator_with_no_slots_says_it_waits_for_a_worker_until_one_is_up(
    make_fleet: Callable[..., Fleet],
) -> None:
    fleet = make_fleet({"001": "write: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root, "--once")
    [line] = coordinator.wait_logged("waiting_for_workers", timeout=30)
    assert "start one with `batchd worker`" in line["detail"]
    assert of_type(log_events(fleet.root), "todo.agent_started") == []  # it does not run it itself
    fleet.worker("w1")
    assert coordinator.wait_logged("workers_up", timeout=30)[0]["workers"] == ["w1"]
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    assert len(coordinator.logged("waiting_for_workers")) == 1  # said once, not every tick


def _malformed_registry() -> EventRegistry:
    """Event types of batchd's names with fields of their own: what a broken or foreign writer
    (another version, another program) may append to the worker and claim streams."""
    reg = EventRegistry()

    @reg.register("worker.registered", 1)
    @dataclass(frozen=True)
    class Registered:
        name: str

    @reg.register("agent.queued", 1)
    @dataclass(frozen=True)
    class Queued:
        token: str

    @reg.register("agent.released", 1)
    @dataclass(frozen=True)
    class Released:
        token: str

    return reg


def test_malformed_worker_and_claim_events_kill_neither_the_coordinator_nor_a_worker(
    make_fleet: Callable[..., Fleet],
) -> None:
    """Missing keys and wrong types on the worker and claim streams are ignored by the fold (of the
    coordinator and of every worker), and the run goes on with a sound worker."""
    fleet = make_fleet({"001": "write: [{path: a.py, content: 'A = 1'}]"})
    foreign = EventLog(fleet.db, reg=_malformed_registry())
    log = EventLog(fleet.db)
    try:
        foreign.append(
            dp.worker_stream("ghost"), [foreign.registry.cls_for("worker.registered")(name="ghost")], 0
        )
        foreign.append(dp.claim_stream("t1"), [foreign.registry.cls_for("agent.queued")(token="t1")], 0)
        log.append(
            dp.worker_stream("typo"),
            [dp.WorkerRegistered(name="typo", host="h", slots="many", pid=1)],
            0,  # type: ignore[arg-type]
        )
        queued = dp.AgentQueued(
            token="t2", todo_id="9", attempt="x", shown="9", title="t", todo_path="todos/9.md",  # type: ignore[arg-type]
            todo_b64="", base_sha="0" * 40, base_ref="refs/batchd/base/x/1", branch="main", lease=3.0,
        )  # fmt: skip
        log.append(dp.claim_stream("t2"), [queued], 0)
        queued = dp.AgentQueued(
            token="t3", todo_id="9", attempt=1, shown="9", title="t", todo_path="todos/9.md",
            todo_b64="", base_sha="0" * 40, base_ref="refs/batchd/base/x/1", branch="main", lease=3.0,
        )  # fmt: skip
        log.append(dp.claim_stream("t3"), [queued], 0)
        log.append(dp.claim_stream("t3"), [dp.AgentClaimed(token="t3", worker="typo")], 1)
        log.append(dp.claim_stream("t3"), [dp.LeaseRenewed(token="t3", worker="typo", pid="x")], 2)  # type: ignore[arg-type]
        foreign.append(dp.claim_stream("t3"), [foreign.registry.cls_for("agent.released")(token="t3")], 3)
    finally:
        foreign.close()
        log.close()
    coordinator = fleet.start(fleet.root, "--once")
    w1 = fleet.worker("w1")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    assert w1.proc.poll() is None, w1.log_path.read_text()[-3000:]
    assert "A = 1" in git(fleet.root, "show", "main:a.py")


def _on_another_host(hostname: str) -> list[str]:
    """A command prefix that runs the rest in a UTS namespace of its own, named ``hostname``."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("another host name needs root and unshare(1)")
    return ["unshare", "-u", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh"]


def test_a_second_worker_of_a_live_workers_name_on_another_host_takes_nothing_from_it(
    make_fleet: Callable[..., Fleet],
) -> None:
    """Two hosts started with the same --name: the second refuses to start while the first beats,
    instead of giving the first one's claims up (its agents killed, their work lost)."""
    fleet = make_fleet({"001": SLOW})
    coordinator = fleet.start(fleet.root, "--once")
    first = fleet.worker("build")
    wait_event(fleet.root, "agent.lease_renewed", worker="build", timeout=60)
    second = fleet.worker("build", clone_name="build-b", wrap=_on_another_host("otherhost"))
    assert second.proc.wait(timeout=30) != 0
    assert "already running" in second.log_path.read_text(encoding="utf-8")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert of_type(events, "agent.lease_expired") == []
    assert [e.payload["worker"] for e in of_type(events, "agent.reported")] == ["build"]
    assert first.proc.poll() is None, first.log_path.read_text()[-3000:]


def test_a_fenced_workers_late_push_does_not_spoil_the_next_run_of_the_attempt(
    make_fleet: Callable[..., Fleet],
) -> None:
    """A worker cut off from the log past its lease may still reach the remote and push its result
    late. The attempt runs again (uncounted, same attempt number) on another worker; that late push,
    landing between the second worker's push and the coordinator's fetch, must not make the second
    worker's good change fail as "not the reported" one."""
    fleet = make_fleet({"001": "sleep: 3\nwrite: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root, "--once")
    log = EventLog(fleet.db)
    try:
        # The fenced worker: claims the attempt, is never heard from again, and its lease expires.
        log.append(dp.worker_stream("cut"), [dp.WorkerRegistered(name="cut", host="h", slots=1, pid=1)], 0)
        [queued] = wait_event(fleet.root, "agent.queued", timeout=60)
        p = queued.payload
        log.append(queued.stream, [dp.AgentClaimed(token=p["token"], worker="cut")], 1)
        wait_event(fleet.root, "agent.lease_expired", worker="cut", timeout=30)
        clone = worker_clone(str(fleet.remote), fleet.tmp / "cut")
        git(clone, "fetch", "-q", "origin", f"{p['base_ref']}:{p['base_ref']}")
        late = _commit_on(clone, p["base_sha"], "late.py")
        fleet.worker("w2")
        wait_event(fleet.root, "agent.claimed", worker="w2", timeout=60)
        os.kill(coordinator.proc.pid, signal.SIGSTOP)  # its fetch of w2's refs comes after the late push
        try:
            wait_event(fleet.root, "agent.reported", worker="w2", timeout=60)
            git(clone, "push", "-q", "-f", "origin", f"{late}:{_fenced_ref(p)}")
        finally:
            os.kill(coordinator.proc.pid, signal.SIGCONT)
    finally:
        log.close()
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert [e.payload["detail"] for e in of_type(events, "todo.agent_failed")] == []
    assert "A = 1" in git(fleet.root, "show", "main:a.py")
    assert "late.py" not in git(fleet.root, "ls-tree", "-r", "--name-only", "main")
    assert git(fleet.remote, "for-each-ref", "refs/batchd/") == ""  # the late push is pruned too


def _fenced_ref(queued: dict[str, object]) -> str:
    """The ref a worker pushes its change of this claim to."""
    return dp.todo_ref(str(queued["todo_id"]), int(str(queued["attempt"])), str(queued["token"]))


def test_a_second_worker_on_the_same_clone_refuses_to_start_and_leaves_the_first_ones_agent_alone(
    make_fleet: Callable[..., Fleet],
) -> None:
    """Two workers of different names started on one clone: the second would remove the first's
    workspaces as leftovers of a dead run (and share its agent logs); it refuses to start instead."""
    fleet = make_fleet({"001": "sleep: 6\nwrite: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root, "--once")
    first = fleet.worker("a")
    wait_event(fleet.root, "agent.lease_renewed", worker="a", timeout=60)
    second = fleet.worker("b", clone_name="a")
    assert second.proc.wait(timeout=30) != 0
    assert "already" in second.log_path.read_text(encoding="utf-8")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    events = log_events(fleet.root)
    assert [e.payload["detail"] for e in of_type(events, "todo.agent_failed")] == []
    assert [e.payload["worker"] for e in of_type(events, "agent.reported")] == ["a"]
    assert first.proc.poll() is None, first.log_path.read_text()[-3000:]


def test_a_workers_slow_clock_does_not_charge_its_lost_attempt_with_hours_of_agent_time(
    make_fleet: Callable[..., Fleet],
) -> None:
    """A worker whose wall clock is ten hours behind claims an attempt and is lost: the interruption
    records the agent time the coordinator saw pass, not ten hours (which the budget would count)."""
    fleet = make_fleet({"001": "write: [{path: a.py, content: 'A = 1'}]"})
    coordinator = fleet.start(fleet.root)
    behind = EventLog(fleet.db, clock=lambda: datetime.now(UTC) - timedelta(hours=10))
    try:
        behind.append(
            dp.worker_stream("late"), [dp.WorkerRegistered(name="late", host="h", slots=1, pid=1)], 0
        )
        [queued] = wait_event(fleet.root, "agent.queued", timeout=60)
        behind.append(queued.stream, [dp.AgentClaimed(token=queued.payload["token"], worker="late")], 1)
        [interrupted] = wait_event(fleet.root, "todo.agent_interrupted", timeout=60)
    finally:
        behind.close()
        coordinator.stop()
    assert "late" in interrupted.payload["reason"]
    assert interrupted.payload["duration"] < 600, interrupted.payload


POISONS = {
    "todo not text": {"todo_b64": 12345},
    "base not batchd's": {"base_ref": "refs/heads/main"},
    "base holds another commit": {"base_sha": "main~1"},
}


@pytest.mark.parametrize("poison_kind", list(POISONS))
def test_a_poisoned_claim_fails_its_attempt_and_the_worker_goes_on(
    make_fleet: Callable[..., Fleet], poison_kind: str
) -> None:
    """A claim in the log that batchd never wrote (by anyone with the database's password): the
    worker reports that attempt failed and runs the next one. It is not the worker's trouble with
    the remote, so the worker does not back off."""
    fleet = make_fleet({"001": "write: [{path: a.py, content: 'A = 1'}]"})
    w1 = fleet.worker("w1")
    w1.wait_logged("worker_registered")
    base = git(fleet.root, "rev-parse", "main")
    git(fleet.root, "push", "-q", "origin", f"{base}:refs/batchd/base/poison/1")
    fields: dict[str, Any] = {
        "todo_b64": base64.b64encode(b"# poison\n").decode(),
        "base_sha": base,
        "base_ref": "refs/batchd/base/poison/1",
        **POISONS[poison_kind],
    }
    if fields["base_sha"] == "main~1":
        fields["base_sha"] = git(fleet.root, "rev-parse", "main~1")
    poison = dp.AgentQueued(
        token="feedface" * 4, todo_id="999", attempt=1, shown="999", title="poison",
        todo_path="todos/999-ready-p2-poison.md", branch="batchd/todo-999", lease=3.0, **fields,
    )  # fmt: skip
    log = EventLog(fleet.db)
    try:
        log.append(dp.claim_stream(poison.token), [poison], 0)
    finally:
        log.close()
    [reported] = wait_event(fleet.root, "agent.reported", timeout=30, token=poison.token)
    assert reported.payload["ok"] is False and reported.payload["reason"] == "setup"
    assert w1.proc.poll() is None, w1.log_path.read_text()[-3000:]
    coordinator = fleet.start(fleet.root, "--once")
    assert coordinator.wait(timeout=90) == 0, coordinator.log_path.read_text()[-3000:]
    assert not w1.logged("worker_backing_off")
    # The coordinator never takes a base ref from a claim it did not write (it would force-push
    # its base there: a branch of a person's, for a claim naming refs/heads/...).
    ours = [e for e in of_type(log_events(fleet.root), "agent.queued") if e.payload["todo_id"] != "999"]
    assert ours and all(e.payload["base_ref"].startswith(dp.BASE_REFS) for e in ours), ours
    assert "A = 1" in git(fleet.root, "show", "main:a.py")  # run by the same worker
