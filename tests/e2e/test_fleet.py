"""The demo scenario on a fleet (issue 15): a PostgreSQL log, a coordinator with no slots of its own and
two workers, each with its own clone and, where the machine allows it, its own network namespace
that reaches the coordinator's database and the bare remote only over a veth pair (the remote served
by ``git daemon``). One worker is killed with kill -9 while an agent of its runs. The outcome is held
to that of the same scenario run by one host alone: the same verdict and exit code, the same complete
and blocked todos, the same tree and phase commits on the target branch and the remote.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_harness import Outcome, collect_outcome, events, git, reap, run_daemon, start_daemon, wait_daemon
from procs import wait_for
from sqlalchemy.engine import make_url
from worker.fleet import Forwarder, WorkerProcess, git_daemon, netns, netns_available, worker_clone

from daemon.demo.project import build_demo
from daemon.demo.scenario import EXPECTED_BLOCKED, EXPECTED_COMPLETE
from tests.pgserver import PgServer

pytestmark = pytest.mark.timeout(600)

AGENT_TIMEOUT = 2.0  # as in the single-host demo test: 283's agent hangs until it
SPEED = 1.0  # the demo's own pacing: agents live long enough to be killed mid-run
LEASE = 4.0
SLOTS = 3  # per worker: with two, more than the demo's max_parallel, so the fleet is never the limit
SAME_CONFIG = f"lease_seconds = {LEASE}\n"  # both runs: the trees differ in batchd.toml's db and slots only


@dataclass
class FleetRun:
    outcome: Outcome
    reference: Outcome
    log: list[dict[str, object]]
    remote: Path
    killed: str  # the todo whose agent ran on the killed worker
    isolated: bool  # the workers ran in network namespaces of their own


def _configure(root: Path, extra: str) -> None:
    config = root / "batchd.toml"
    text = config.read_text(encoding="utf-8").replace('remote = "origin"\n', f'remote = "origin"\n{extra}', 1)
    config.write_text(text, encoding="utf-8")
    git(root, "commit", "-qam", "batchd: run agents on workers")
    git(root, "push", "-q", "origin", "main")


def _running_agent(worker_pid: int) -> bool | None:
    """True while a demo agent the worker started is alive (a child of it: agents get their own
    session, never another parent)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if ppid == worker_pid and b"daemon.demo.agent" in (stat.parent / "cmdline").read_bytes():
                return True
    return None


def _reference(folder: Path) -> Outcome:
    project = build_demo(folder / "alone", speed=SPEED, agent_timeout=AGENT_TIMEOUT)
    _configure(project.root, SAME_CONFIG)
    base = git(project.root, "rev-parse", "main").strip()
    return collect_outcome(project.root, project.remote, [run_daemon(project.root)], base=base)


@contextlib.contextmanager
def _hosts(count: int) -> Iterator[list[tuple[str, str]]]:
    """(namespace, address the host is reached at) per worker: namespaces when they can be made,
    else this host's loopback for each."""
    if netns_available():
        yield [("", "127.0.0.1")] * count
        return
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(netns()) for _ in range(count)]


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[FleetRun]:
    if pg_server.tcp_port is None:
        pytest.skip("the fleet test needs the private PostgreSQL server (it listens on TCP)")
    folder = tmp_path_factory.mktemp("fleet")
    try:
        reference = _reference(folder)
        with pg_server.fresh_database() as url:
            yield _fleet(folder, pg_server, make_url(url).database or "", reference)
    finally:
        reap(str(folder))


def _fleet(folder: Path, pg_server: PgServer, database: str, reference: Outcome) -> FleetRun:
    project = build_demo(folder / "fleet", speed=SPEED, agent_timeout=AGENT_TIMEOUT)
    root = project.root
    local_url = pg_server.tcp_url(database)
    _configure(root, f'{SAME_CONFIG}local_slots = 0\ndb = "{local_url}"\n')
    base = git(root, "rev-parse", "main").strip()
    assert pg_server.tcp_port is not None
    with contextlib.ExitStack() as stack, git_daemon(root) as git_port, _hosts(2) as hosts:
        workers: list[WorkerProcess] = []
        for n, (ns, address) in enumerate(hosts, 1):
            forwarder = Forwarder(pg_server.tcp_port)
            stack.callback(forwarder.close)
            clone = worker_clone(f"git://{address}:{git_port}/{project.remote.name}", folder / f"host{n}")
            url = make_url(local_url).set(host=address, port=forwarder.port).render_as_string(False)
            worker = WorkerProcess(clone, name=f"host{n}", db=url, slots=SLOTS, netns=ns)
            stack.callback(worker.kill)
            workers.append(worker)
        started = time.monotonic()
        proc, log_path = start_daemon(root)
        victim = workers[0]
        wait_for(lambda: _running_agent(victim.pid), timeout=120, what="an agent of host1 running")
        victim.kill()  # kill -9 mid-agent; its agent is left to the reaper, as a dead host's would be
        killed = str(victim.logged("agent_claimed")[-1]["todo_id"])
        run = wait_daemon(proc, log_path, started)
        isolated = bool(hosts[0][0])
    # The git daemon and the workers gone, what is left running was left by batchd.
    outcome = collect_outcome(root, project.remote, [run], base=base)
    return FleetRun(outcome, reference, events(root), project.remote, killed, isolated)


# --- the outcome, held to the single-host run's ------------------------------------------------


def test_the_verdict_and_exit_code_are_the_single_hosts(fleet_run: FleetRun) -> None:
    out, ref = fleet_run.outcome, fleet_run.reference
    assert ref.exit_code == 1, ref.runs[-1].log_tail()  # 267 and 282 are blocked, as the scenario means
    assert out.exit_code == ref.exit_code, out.runs[-1].log_tail()
    assert out.complete == ref.complete == EXPECTED_COMPLETE
    assert out.complete_files == ref.complete_files
    assert set(out.failed) == set(ref.failed) == set(EXPECTED_BLOCKED)


def test_the_target_branch_holds_the_single_hosts_tree_and_commits(fleet_run: FleetRun) -> None:
    out, ref = fleet_run.outcome, fleet_run.reference

    def tree(o: Outcome) -> dict[str, str]:
        return {p: blob for p, blob in o.tree.items() if p != "batchd.toml"}

    assert tree(out) == tree(ref)
    assert out.remote_head == out.head
    assert {p: b for p, b in out.remote_tree.items() if p != "batchd.toml"} == tree(ref)
    assert out.messages == ref.messages
    assert out.phase_trailers == ref.phase_trailers


def test_the_failed_table_gives_the_single_hosts_reasons_and_where_the_agent_ran(
    fleet_run: FleetRun,
) -> None:
    where = re.compile(r" \(on worker host[12]\)")
    fleet = {
        todo: (title, where.sub("", reason), reverted, action)
        for todo, (title, reason, reverted, action) in fleet_run.outcome.failed.items()
    }
    assert fleet == fleet_run.reference.failed
    assert where.search(fleet_run.outcome.failed["267"][1])  # its agent's exit 1 was on a worker


def test_the_log_verifies_and_nothing_happened_twice(fleet_run: FleetRun) -> None:
    out = fleet_run.outcome
    assert out.audit.returncode == 0, out.audit.stdout + out.audit.stderr
    assert out.replay.returncode == 0, out.replay.stdout + out.replay.stderr
    assert out.duplicates == {}
    # The killed host's own agent is not the coordinator's to kill (on a real host it dies with the
    # host, or when that worker starts again); anything else left running is.
    assert {pid: cmd for pid, cmd in out.leftovers.items() if "/host1/" not in cmd} == {}


def test_the_remote_keeps_only_the_branch(fleet_run: FleetRun) -> None:
    """The bases, changes and logs that went through the remote are pruned once taken."""
    assert git(fleet_run.remote, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]


def test_every_agent_ran_on_a_worker(fleet_run: FleetRun) -> None:
    started = [e for e in fleet_run.log if e["type"] == "todo.agent_started"]
    claimed = [e for e in fleet_run.log if e["type"] == "agent.claimed"]
    assert started and all(e["payload"]["argv"] == [] for e in started)  # none ran here
    assert {e["payload"]["worker"] for e in claimed} == {"host1", "host2"}


def test_the_killed_workers_agent_ran_again_on_the_other(fleet_run: FleetRun) -> None:
    log, killed = fleet_run.log, fleet_run.killed
    todo_of = {e["stream"]: e["payload"]["todo_id"] for e in log if e["type"] == "agent.queued"}
    claims = {(e["payload"]["worker"], todo_of[e["stream"]]) for e in log if e["type"] == "agent.claimed"}
    expired = {todo_of[e["stream"]] for e in log if e["type"] == "agent.lease_expired"}
    assert ("host1", killed) in claims
    assert killed in expired, f"host1 was killed running #{killed}: its lease must have expired"
    assert ("host2", killed) in claims, f"#{killed} was not run again on host2"
    interrupted = {e["payload"]["todo_id"] for e in log if e["type"] == "todo.agent_interrupted"}
    assert killed in interrupted  # an uncounted attempt, as after a local agent's crash


def test_the_workers_ran_on_hosts_of_their_own_where_the_machine_allows(fleet_run: FleetRun) -> None:
    if reason := netns_available():
        pytest.skip(f"no network namespaces here ({reason}): the workers shared this host's network")
    assert fleet_run.isolated
