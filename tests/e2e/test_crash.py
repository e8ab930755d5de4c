"""Crash suite: the daemon killed at every kind of point and restarted ends exactly like a run that
was never killed (issue 8, "Exact recovery after a crash"; issue 9, the kill -9 end-to-end test).

Each scenario builds the sample repository (``e2e_sample.py``: 7 todos in 2 phases, a culprit, a
conflict pair, a bare remote), runs ``batchd run --once`` with a crash switch
(``BATCHD_CRASH_AFTER=<event type>[:n]`` or ``BATCHD_CRASH_AT_SEQ=<n>``) or kills it from outside
with ``kill -9``, then restarts it without the switch until it exits normally. Its outcome is
compared with an uncrashed reference run of the same repository.

Scenarios are independent repositories, so they run concurrently in a small thread pool (a run is
mostly waiting: agents, git, the test command) and each test waits for its own. By default a fixed
sample of kill points runs; ``--crash-sweep`` (or ``BATCHD_CRASH_SWEEP=1``) runs every event type
the sample run emits, n-th occurrences, random ``BATCHD_CRASH_AT_SEQ`` points and more external
kills, all from fixed seeds.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_harness import (
    DaemonRun,
    Outcome,
    batchd,
    collect_outcome,
    crash_sweep_enabled,
    events,
    git,
    last_seq,
    leftover_processes,
    processes_mentioning,
    reap,
    run_daemon,
    run_until_done,
    start_daemon,
    wait_daemon,
)
from e2e_sample import (
    EXPECTED_BLOCKED,
    EXPECTED_COMPLETE,
    PHASE_MESSAGES,
    RESOLVED_SETTINGS,
    SampleTodo,
    build_sample,
)

pytestmark = pytest.mark.timeout(900)

# Kill points run in CI: agents alive at the crash, mid-bisection, an accepted todo, each step of
# the phase commit and the push (intent without outcome, outcome before the next step).
CI_KILL_POINTS = (
    "todo.agent_spawned",
    "batch.verify_run:2",
    "todo.accepted",
    "phase.committing",
    "phase.committed",
    "phase.pushing",
)
# Every event type the sample run emits, then later occurrences of the busy ones.
SWEEP_KILL_POINTS = (
    "run.daemon_attached",
    "todo.queued",
    "run.started",
    "phase.planned",
    "batch.planned",
    "phase.started",
    "todo.planned",
    "batch.started",
    "todo.agent_started",
    "todo.agent_spawned",
    "todo.agent_finished",
    "todo.verifying",
    "batch.verifying",
    "batch.verify_run",
    "todo.accepted",
    "todo.rejected",
    "todo.retry_scheduled",
    "batch.verified",
    "batch.done",
    "todo.blocked",
    "todo.conflicted",
    "phase.committing",
    "phase.committed",
    "todo.completed",
    "phase.pushing",
    "phase.pushed",
    "phase.done",
    "run.completed",
    "todo.agent_started:3",
    "todo.agent_spawned:5",
    "todo.agent_finished:8",
    "batch.verify_run:3",
    "todo.accepted:5",
    "todo.rejected:2",
    "phase.committing:2",
    "phase.committed:2",
    "todo.completed:6",
    "phase.pushing:2",
    "phase.pushed:2",
)
CI_SEQ_SEEDS: tuple[int, ...] = ()
SWEEP_SEQ_SEEDS = tuple(range(1, 13))
CI_KILL9_SEEDS = (2026,)
SWEEP_KILL9_SEEDS = (2026, 7, 11, 23, 42)
# Crash after crash: each restart dies again a few events later (during recovery, too).
CI_CHAIN_SEEDS = (5,)
SWEEP_CHAIN_SEEDS = (5, 6, 8, 13, 21)
CHAIN_CRASHES = 4
KILLS_PER_RUN = 2  # external kill -9s per scenario (each at a random moment of a daemon's life)
WORKERS = int(os.environ.get("BATCHD_E2E_WORKERS", "3"))


# Each scenario runs under both scheduling policies, each compared with its own reference run.
SCHEDULES = ("barrier", "continuous")


def scenarios(sweep: bool) -> list[str]:
    return [f"{schedule}|{name}" for schedule in SCHEDULES for name in _scenarios(sweep)]


def _scenarios(sweep: bool) -> list[str]:
    if not sweep:
        return [
            *(f"after:{k}" for k in CI_KILL_POINTS),
            *(f"seq-seed:{s}" for s in CI_SEQ_SEEDS),
            *(f"kill9-seed:{s}" for s in CI_KILL9_SEEDS),
            *(f"chain-seed:{s}" for s in CI_CHAIN_SEEDS),
        ]
    return [
        *(f"after:{k}" for k in SWEEP_KILL_POINTS),
        *(f"seq-seed:{s}" for s in SWEEP_SEQ_SEEDS),
        *(f"kill9-seed:{s}" for s in SWEEP_KILL9_SEEDS),
        *(f"chain-seed:{s}" for s in SWEEP_CHAIN_SEEDS),
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "scenario" in metafunc.fixturenames:
        metafunc.parametrize("scenario", scenarios(crash_sweep_enabled(metafunc.config)))


@dataclass
class Result:
    outcome: Outcome
    crashes: int  # daemon processes that died of SIGKILL before the normal exit
    detail: str  # what the scenario did, for failure messages


class Lab:
    """Runs the reference and every selected scenario concurrently; tests wait for their own."""

    def __init__(self, base: Path, selected: list[str]) -> None:
        self.base = base
        self.pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="crash-scenario")
        self.futures: dict[str, Future[Result]] = {
            f"{schedule}|reference": self.pool.submit(self._reference, schedule) for schedule in SCHEDULES
        }
        for name in selected:
            self.futures[name] = self.pool.submit(self._scenario, name)

    def result(self, name: str) -> Result:
        if name not in self.futures:  # selected in an unusual way (e.g. re-run): run it now
            self.futures[name] = self.pool.submit(self._scenario, name)
        return self.futures[name].result(timeout=800)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        reap(str(self.base))

    def _fresh(self, name: str, schedule: str) -> tuple[Path, Path, str]:
        folder = self.base / f"{schedule}-{name}".replace(":", "-").replace(".", "_")
        folder.mkdir()
        sample = build_sample(folder, schedule=schedule)
        return sample.root, sample.remote, git(sample.root, "rev-parse", "main").strip()

    def _reference(self, schedule: str) -> Result:
        root, remote, base = self._fresh("reference", schedule)
        runs = [run_daemon(root)]
        return Result(collect_outcome(root, remote, runs, base=base), 0, "uncrashed")

    def _scenario(self, full: str) -> Result:
        schedule, _, name = full.partition("|")
        kind, _, arg = name.partition(":")
        root, remote, base = self._fresh(name, schedule)
        reference = f"{schedule}|reference"
        if kind == "after":
            runs = run_until_done(root, first_env={"BATCHD_CRASH_AFTER": arg})
            detail = f"BATCHD_CRASH_AFTER={arg}"
        elif kind == "seq-seed":
            last = self.result(reference).outcome.last_seq
            seq = random.Random(int(arg)).randint(2, last)
            runs = run_until_done(root, first_env={"BATCHD_CRASH_AT_SEQ": str(seq)})
            detail = f"BATCHD_CRASH_AT_SEQ={seq} (of {last})"
        elif kind == "chain-seed":
            runs, detail = self._chained_crashes(root, int(arg))
        else:
            runs, detail = self._external_kills(root, int(arg), reference)
        crashes = sum(r.returncode == -signal.SIGKILL for r in runs)
        return Result(collect_outcome(root, remote, runs, base=base), crashes, detail)

    def _chained_crashes(self, root: Path, seed: int) -> tuple[list[DaemonRun], str]:
        """Crash, then crash each restart again 1-12 events after it starts, then let it finish."""
        rng = random.Random(seed)
        runs: list[DaemonRun] = []
        points: list[int] = []
        for _ in range(CHAIN_CRASHES):
            seq = last_seq(root) + rng.randint(1, 12)
            points.append(seq)
            runs.append(run_daemon(root, env={"BATCHD_CRASH_AT_SEQ": str(seq)}))
            if runs[-1].returncode != -signal.SIGKILL:
                break  # the run ended before that sequence number
        if runs[-1].returncode == -signal.SIGKILL:
            runs.extend(run_until_done(root))
        return runs, f"BATCHD_CRASH_AT_SEQ={points} one run after another (seed {seed})"

    def _external_kills(self, root: Path, seed: int, reference: str) -> tuple[list[DaemonRun], str]:
        """``kill -9`` the daemon at random moments (fixed seed), restarting each time, then let it finish."""
        rng = random.Random(seed)
        span = max(self.result(reference).outcome.seconds, 4.0)
        runs: list[DaemonRun] = []
        moments: list[float] = []
        for _ in range(KILLS_PER_RUN):
            delay = rng.uniform(0.15, 0.6) * span
            started = time.monotonic()
            proc, log_path = start_daemon(root)
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                subprocess.run(["kill", "-9", str(proc.pid)], check=True)
                moments.append(round(delay, 2))
            runs.append(wait_daemon(proc, log_path, started))
            if runs[-1].returncode != -signal.SIGKILL:
                break  # it finished before the kill: nothing left to crash
        if runs[-1].returncode == -signal.SIGKILL:
            runs.extend(run_until_done(root))
        return runs, f"kill -9 after {moments} s (seed {seed})"


def _scenario_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    value = callspec.params.get("scenario") if callspec is not None else None
    return value if isinstance(value, str) else None


@pytest.fixture(scope="module")
def lab(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    # Start every scenario selected in this module at once: they run side by side in the pool.
    selected = [
        name
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and (name := _scenario_of(item)) is not None
    ]
    opened = Lab(tmp_path_factory.mktemp("crash"), list(dict.fromkeys(selected)))
    yield opened
    opened.close()


# --- the reference run ----------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_reference_run_ends_as_the_sample_means(lab: Lab, schedule: str) -> None:
    """Uncrashed, the sample completes 6 todos, blocks the culprit, commits and pushes 2 phases."""
    ref = lab.result(f"{schedule}|reference").outcome
    assert ref.exit_code == 1, ref.runs[-1].log_tail()
    assert ref.complete == EXPECTED_COMPLETE
    assert ref.complete_files == EXPECTED_COMPLETE
    assert set(ref.failed) == EXPECTED_BLOCKED
    _, reason, reverted, _ = ref.failed["103"]
    assert reason.startswith("blocked: attempts exhausted")
    assert reverted == "app/core.py"
    assert [subject for subject, _ in ref.messages] == [PHASE_MESSAGES[1], PHASE_MESSAGES[2]]
    assert ref.phase_trailers == ["1", "2"]
    assert ref.remote_head == ref.head
    assert ref.tree["app/settings.py"] == ref.remote_tree["app/settings.py"]
    # 105 and 106 both append to app/settings.py: merged keeping both, no conflict, no second agent.
    assert ref.event_types.get("todo.conflicted") is None
    blob = RESOLVED_SETTINGS.encode()
    assert ref.tree["app/settings.py"] == hashlib.sha1(b"blob %d\0" % len(blob) + blob).hexdigest()
    assert ref.event_types.get("todo.rejected") == 2


# --- every scenario -------------------------------------------------------------------------------


def test_crash_and_restart_give_the_reference_outcome(lab: Lab, scenario: str) -> None:
    """Killed at this point and restarted until done: same todos, tree, commits, remote and table."""
    ref = lab.result(f"{scenario.partition('|')[0]}|reference").outcome
    result = lab.result(scenario)
    got = result.outcome
    context = f"{scenario}: {result.detail}; last log:\n{got.runs[-1].log_tail()}"
    assert result.crashes >= 1, f"the daemon was never killed: {context}"
    assert got.exit_code == ref.exit_code, context
    assert got.complete == ref.complete, context
    assert got.complete_files == ref.complete_files, context
    assert got.tree == ref.tree, context
    assert got.messages == ref.messages, context
    assert got.phase_trailers == ["1", "2"], context
    assert got.remote_head == got.head, context
    assert got.remote_tree == ref.remote_tree, context
    assert got.failed == ref.failed, context


def test_crash_and_restart_leave_a_clean_log_and_no_processes(lab: Lab, scenario: str) -> None:
    """After the crash and restarts: the audit and replay checks pass, nothing happened twice, no orphans."""
    result = lab.result(scenario)
    got = result.outcome
    context = f"{scenario}: {result.detail}"
    assert got.audit.returncode == 0, f"{context}: {got.audit.stdout}{got.audit.stderr}"
    assert got.replay.returncode == 0, f"{context}: {got.replay.stdout}{got.replay.stderr}"
    assert got.duplicates == {}, context
    assert got.leftovers == {}, context
    assert got.event_types.get("run.completed") == 1, context


# --- an agent still running when the daemon dies --------------------------------------------------

HANGING = SampleTodo(
    "201",
    "p1",
    "hang",
    "Hang after the change",
    {"write": [{"path": "app/hang.py", "content": "HANG = 1\n"}], "hang": True},
    ("app/hang.py",),
)


def test_restart_adopts_the_agent_a_crashed_daemon_left_running(reaper: Path) -> None:
    """An agent that outlives the killed daemon (it hangs) is taken over by the next start, not killed
    and not run again (issue 13); the stop that follows kills it and records it interrupted."""
    sample = build_sample(reaper, todos=(HANGING,), with_plan=False)
    crashed = run_daemon(sample.root, env={"BATCHD_CRASH_AFTER": "todo.agent_spawned"})
    assert crashed.returncode == -signal.SIGKILL, crashed.log_tail()
    orphans = leftover_processes(str(sample.root), grace=0)
    assert any("daemon.demo.agent" in cmd for cmd in orphans.values()), orphans

    started = time.monotonic()
    proc, log_path = start_daemon(sample.root)
    try:
        deadline = started + 30
        while (
            time.monotonic() < deadline
            and proc.poll() is None
            and '"recovered_agent"' not in log_path.read_text()
        ):
            time.sleep(0.1)
        adopted = [line for line in log_path.read_text().splitlines() if '"recovered_agent"' in line]
        still = set(orphans) & set(processes_mentioning(str(sample.root)))
        running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        stopped = wait_daemon(proc, log_path, started, timeout=60)
    assert adopted and '"adopted"' in adopted[0], adopted
    assert still == set(orphans), "the adopted agent was killed at the restart"
    assert running, "the restarted daemon exited before the test could stop it"
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.log_tail()
    log = events(sample.root)
    interrupted = [e["payload"] for e in log if e["type"] == "todo.agent_interrupted"]
    assert [p["todo_id"] for p in interrupted] == ["201"]  # the SIGTERM only: the crash lost nothing
    assert interrupted[0]["duration"] > 0
    assert sum(e["type"] == "todo.agent_spawned" for e in log) == 1
    assert leftover_processes(str(sample.root)) == {}
    assert batchd(sample.root, "audit", "verify").returncode == 0
