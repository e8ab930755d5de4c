"""The daemon: one loop of single ticks over the event log.

Each tick reads what happened (new events, file changes, finished agents and jobs), then decides
what to do next from the projected state alone, writing every side effect as intent event ->
effect -> outcome event. Decisions are level-triggered: after a crash the same state leads to the
same next step, so recovery is mostly "keep going" plus reconciling intents that lost their outcome
(see :mod:`daemon.engine.recovery`). Blocking work (worktree set-up, verification, commits, pushes) runs
in a small thread pool; only the main thread appends to the log.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.config import Config
from daemon.exceptions import CannotProceed
from daemon.intake.scanner import ScanResult
from daemon.workspace import Workspace, config_log
from daemon.world import deps
from daemon.world.agentproc import AgentProcess
from daemon.world.faults import FaultInjector
from daemon.world.homeguard import Snapshot
from daemon.world.hooks import PersonHooks
from daemon.world.notify import Notifier
from daemon.world.remote import PinnedRemote
from daemon.world.sandbox import Sandbox, resolve
from statemachine.exceptions import InvalidTransition
from statemachine.machines import LiveModel
from statemachine.projection import Projection, replay, save_snapshot
from statemachine.tables import EVENT_TRIGGERS, TRANSITIONS
from store import Append, EventLog
from store.eventlog import StoredEvent

log = structlog.get_logger(__name__)

SNAPSHOT_EVERY = 500  # events between projection snapshots, so a restart replays only a short tail


@dataclass(slots=True)
class Job:
    """A blocking piece of work in the pool; ``done`` turns its result into events on the main thread."""

    key: str
    future: Future[Any]
    done: Callable[[Any], None]
    failed: Callable[[BaseException], None]


class Daemon:
    """Owns the log, the projection, running agents and jobs. ``tick()`` is one step of the loop."""

    def __init__(
        self,
        config: Config,
        *,
        log_: EventLog | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.monotonic,
        faults: FaultInjector | None = None,
        pinned: PinnedRemote | None = None,
        hooks: PersonHooks | None = None,
    ) -> None:
        self.config = config
        self.pinned = pinned
        self.hooks = hooks
        self.sandbox, self.verify_sandbox = sandboxes(config)
        self.root = config.root
        self.ws = Workspace(config.root)
        self.clock = clock
        self.log = log_ if log_ is not None else config_log(config)
        self.notifier = notifier if notifier is not None else Notifier.from_env()
        self.faults = faults if faults is not None else FaultInjector()
        self.proj: Projection = Projection()
        self.versions: dict[str, int] = {}
        self.agents: dict[str, AgentProcess] = {}
        self.jobs: dict[str, Job] = {}
        self.pool = ThreadPoolExecutor(max_workers=3, thread_name_prefix="batchd-job")
        # Jobs hand progress events (verify runs) to the main thread, which alone appends.
        self.inbox: queue.Queue[list[Append | tuple[str, Sequence[object]]]] = queue.Queue()
        # git serialises writes to the shared repository badly (config, ref and worktree locks):
        # worktree creation and removal from several job threads take turns.
        self.git_lock = threading.Lock()
        self.status_dirty = True
        self.last_scan: ScanResult | None = None
        self.last_snapshot_seq = 0
        self.stopping = False
        self.attached = False  # the run is this process's (after daemon_attached): errors are crashes now
        self.exit_code: int | None = None
        self.fatal: CannotProceed | None = None
        # The todo file batchd wrote into each running agent's workspace (to tell its edits from ours).
        self.placed: dict[str, bytes] = {}
        # The files a carried change left with conflict markers, by todo (its attempt must remove them).
        self.markers: dict[str, tuple[str, ...]] = {}
        # The step the main thread is in (todo id, place): what a crash is blamed on.
        self.current_step: tuple[str, str] = ("", "")
        self.notes: list[str] = []  # found at start-up, shown in the status file
        # (phase, passed, detail): the final check of a run's last phase, made before its commit
        # (whose status file shows the verdict it gives); recorded as the verdict once the phase is done.
        self.final_checked: tuple[int, bool, str] | None = None
        # What steers later agent sessions, noted before each attempt (see daemon.world.homeguard).
        self.home_snapshots: dict[str, Snapshot] = {}
        # Agents handed to workers (see daemon.engine.dispatching): todos whose base is being pushed
        # before their claim is queued, and when each claim or worker stream last moved (monotonic).
        self.queueing: set[str] = set()
        self.seen: dict[str, tuple[int, float]] = {}
        self.base_refs: dict[str, str] = {}  # base sha -> the ref this process named it
        self.pushed_bases: set[str] = set()  # base shas this process's pushes put on the remote
        self.pruned_bases: set[str] = set()  # base refs this process deleted on the remote
        self.taken_refs: list[str] = []  # workers' refs whose outcome is taken, to delete on the remote
        self.waiting_note = ""  # why nothing can start for want of a worker, as last logged
        # Called from any thread when there is something to look at (a job done, an agent exited):
        # the loop sets it to end its sleep early. Never from a signal handler.
        self.wake: Callable[[], None] = lambda: None

    @contextlib.contextmanager
    def person_hooks(self) -> Iterator[Path | None]:
        """The person's hooks as pinned at start-up (none when they were not pinned)."""
        if self.hooks is None:
            yield None
            return
        with self.hooks.folder() as folder:
            yield folder

    def reconfigure(self, config: Config) -> None:
        """A reloaded ``batchd.toml`` (SIGHUP); the sandboxes follow it. A sandbox that cannot be had
        (``"bwrap"`` where it cannot run) raises before anything changes: the old config stays."""
        agent, check = sandboxes(config)
        self.config, self.sandbox, self.verify_sandbox = config, agent, check

    def warnings(self) -> list[str]:
        """What the status file says a person should know about this daemon's set-up."""
        found = list(self.notes)
        if not self.sandbox.active:
            found.append(f"agents run without a sandbox ({self.sandbox.note})")
        return found

    @contextlib.contextmanager
    def step(self, todo_id: str, place: str) -> Iterator[None]:
        """Mark the main thread as working on ``todo_id`` at ``place``: an unexpected error raised
        inside is blamed on it (see the crash-loop breaker in :mod:`daemon.service.loop`)."""
        before = self.current_step
        self.current_step = (todo_id, place)
        yield
        # Not in a finally: when the step raises, the crash handler reads where it was.
        self.current_step = before

    # -- the log -------------------------------------------------------------------------------

    def load(self) -> None:
        """Replay snapshot + tail into the projection (no side effects fire)."""
        self.proj = replay(self.log)
        self.last_snapshot_seq = self.proj.last_seq
        log.info("replayed", last_seq=self.proj.last_seq)

    def sync(self) -> list[StoredEvent]:
        """Apply every event appended since the projection's last one: ours and other processes' (the CLI)."""
        new = list(self.log.read(since=self.proj.last_seq))
        for event in new:
            self.proj.apply(event)
            self.versions[event.stream] = event.version
        if new:
            self.status_dirty = True
        return new

    def version_of(self, stream: str) -> int:
        """A stream's version, asked of the log once and then kept current by :meth:`sync`."""
        if stream not in self.versions:
            self.versions[stream] = self.log.stream_version(stream)
        return self.versions[stream]

    def emit(self, *appends: Append | tuple[str, Sequence[object]]) -> list[StoredEvent]:
        """Append events atomically and fold them in.

        ``(stream, events)`` parts are appended at the version this daemon decided on (a stale one
        is a ConcurrencyError, nothing written); an :class:`Append` is taken as given (the control
        stream, which CLI processes append to as well, is written with no expected version).
        """
        parts = [a for a in appends if (a.events if isinstance(a, Append) else a[1])]
        if not parts:
            return []
        self.sync()  # what other processes appended is folded in first
        batch = [
            a if isinstance(a, Append) else Append(a[0], list(a[1]), self.version_of(a[0])) for a in parts
        ]
        self.check(batch)
        stored = self.log.append_many(batch)
        self.faults.after_append(stored)
        self.sync()
        if self.proj.last_seq - self.last_snapshot_seq >= SNAPSHOT_EVERY:
            save_snapshot(self.log, self.proj)
            self.last_snapshot_seq = self.proj.last_seq
        return stored

    def check(self, batch: Sequence[Append]) -> None:
        """Refuse, before anything is written, an event its entity's live machine does not allow.

        Each event is asked of the entity's ``transitions`` model (``may_<trigger>()``, with the
        transition's conditions on data: a todo's dependencies accepted, the phases before a phase
        done), then fired on it, so the next event of the same transaction meets the state this one
        leads to. The fold would refuse a state the table does not allow on replay too: written, it
        would make the log unreadable for every later start. Refused here, it is a bug report and
        the log stays sound.
        """
        models: dict[str, LiveModel] = {}
        for part in batch:
            for event in part.events:
                spec = EVENT_TRIGGERS.get(type(event))
                if spec is None:
                    continue  # control requests move no machine
                _, trigger = spec
                model = models.get(part.stream) or self.proj.machine(part.stream)
                models[part.stream] = model
                if not model.may(trigger):
                    raise InvalidTransition(
                        stream=part.stream,
                        state=model.state,
                        event=getattr(type(event), "event_name", type(event).__name__),
                        detail="refused before it was written" + _why_not(model, trigger),
                    )
                model.fire(trigger)

    def emit_one(self, stream: str, *events: object) -> list[StoredEvent]:
        return self.emit((stream, list(events)))

    # -- jobs ----------------------------------------------------------------------------------

    def submit(
        self,
        key: str,
        fn: Callable[[], Any],
        done: Callable[[Any], None],
        failed: Callable[[BaseException], None],
    ) -> None:
        if key in self.jobs:
            return
        future = self.pool.submit(fn)
        future.add_done_callback(lambda _: self.wake())
        self.jobs[key] = Job(key, future, done, failed)

    def has_job(self, key: str) -> bool:
        return key in self.jobs

    def drain_inbox(self) -> None:
        """Append the progress events jobs handed over (verify runs), in the order they came."""
        while True:
            try:
                appends = self.inbox.get_nowait()
            except queue.Empty:
                return
            self.emit(*appends)

    def poll_jobs(self) -> None:
        """Turn finished jobs into events, each exactly once.

        A job is taken out of ``jobs`` before its callback runs, so a callback that reaches this
        method again (directly or through a step) cannot run it twice or trip over its removal.
        """
        self.drain_inbox()
        for key in [k for k, job in self.jobs.items() if job.future.done()]:
            job = self.jobs.pop(key, None)
            if job is None:
                continue  # a nested poll took it already
            error = job.future.exception()
            if error is None:
                job.done(job.future.result())
            else:
                log.error("job_failed", job=key, error=str(error), error_type=type(error).__name__)
                job.failed(error)

    def wait_jobs(self, timeout: float) -> None:
        deadline = self.clock() + timeout
        while self.jobs and self.clock() < deadline:
            self.poll_jobs()
            time.sleep(0.05)

    # -- housekeeping --------------------------------------------------------------------------

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.proj.last_seq > self.last_snapshot_seq:
            save_snapshot(self.log, self.proj)
        self.log.close()


def _why_not(model: LiveModel, trigger: str) -> str:
    """The condition that refused ``trigger`` when the state itself allows it."""
    if trigger not in model.triggers():
        return ""
    row = next(
        (t for t in TRANSITIONS[model.kind] if t.trigger == trigger and model.state in t.sources), None
    )
    failed = [c for c in (row.conditions if row else ()) if not getattr(model, c)()]
    return f" ({', '.join(failed)} is false)" if failed else ""


def sandboxes(config: Config) -> tuple[Sandbox, Sandbox]:
    """The agents' sandbox and the checks' (``[agent] sandbox``, ``[verify] sandbox``)."""
    agent = resolve(config.agent.sandbox, config.agent.writable, key="[agent] sandbox")
    check = resolve(config.verify.sandbox, config.verify.writable, key="[verify] sandbox")
    # Workspaces link to the person's installed dependencies: read-only inside both sandboxes.
    guarded = deps.protected(config.root)
    return dataclasses.replace(agent, readonly=guarded), dataclasses.replace(check, readonly=guarded)
