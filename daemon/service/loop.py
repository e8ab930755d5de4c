"""``batchd run``: the long-running loop around :class:`daemon.engine.runner.Daemon`.

Start-up: checks (:mod:`daemon.service.preflight`: the agent, the verify commands, the branch, the
remote) -> lock -> pin the remote -> verify the log's tail -> replay -> reconcile ->
attach -> scan -> READY. Then single ticks until there is nothing left (``--once``) or a signal
asks to stop. Signal handlers only set flags; the loop does the rest (stop starting agents, wait
``stop_timeout`` for the running ones, record the rest as interrupted, write the status file,
``STOPPING=1``).

Whatever ends the daemon, its agents go first. An unexpected error (a bug) is caught here, at the
root: the traceback goes to the log and to ``.batchd/logs/daemon-crashes.log``, every agent's
process group is killed, the crash is recorded (``run.daemon_crashed``) and the daemon exits 3. The
same crash at the same place three times in a row is not retried again (see
:func:`daemon.engine.recovery.break_crash_loop`).
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import structlog

from daemon.config import Config, diff_config, load_config
from daemon.engine import dispatching, executor, intake, pruning, recovery, scheduler
from daemon.engine.phases import write_status
from daemon.engine.runner import Daemon
from daemon.engine.statusfile import one_line_status
from daemon.exceptions import BatchdError, CannotProceed, GitError, Halt
from daemon.intake.todofile import is_ignored
from daemon.intake.watcher import TodoWatcher
from daemon.service import preflight
from daemon.service.lock import DaemonLock
from daemon.service.signals import SignalFlags
from daemon.workspace import Workspace
from daemon.world import deps, safefs
from daemon.world.hooks import snapshot as snapshot_hooks
from daemon.world.notify import Notifier
from daemon.world.remote import pin_remote
from statemachine import events as ev
from statemachine.projection import SNAPSHOT_NAME
from statemachine.tables import BatchState, RunState
from store.exceptions import EXIT_CANNOT_PROCEED, EXIT_FAILURES, EXIT_OK, LogCorrupted

log = structlog.get_logger(__name__)

TICK = 0.2  # seconds the loop sleeps when nothing happens (a file event or a signal wakes it sooner)
MAX_STEPS_PER_TICK = 200
MAX_TICK_FAILURES = 5  # git errors in a row before the daemon stops (exit 3) instead of retrying


def version() -> str:
    try:
        return metadata.version("batchd")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def tick(d: Daemon, watcher: TodoWatcher | None, now: float, state: dict[str, float]) -> None:
    d.sync()
    intake.handle_controls(d)
    changed = watcher.drain(now) if watcher is not None else set()
    overflow = watcher.take_overflow() if watcher is not None else False
    if changed or overflow or now - state["last_scan"] >= d.config.batchd.rescan_interval:
        intake.rescan(d)
        state["last_scan"] = now
    d.poll_jobs()
    executor.poll(d, now)
    dispatching.tick(d)
    # Keep deciding while decisions move the log: one tick takes a whole chain of quick steps.
    for _ in range(MAX_STEPS_PER_TICK):
        if d.fatal:
            break
        before = d.proj.last_seq
        intake.handle_controls(d)  # between steps too: a pause made before the run began holds it
        scheduler.advance(d)
        d.poll_jobs()
        if d.proj.last_seq == before or d.fatal:
            break
    if d.status_dirty and now - state["last_status"] >= 0.5:
        write_status(d)
        state["last_status"] = now
        d.notifier.status(one_line_status(d.proj))


def finished(d: Daemon) -> bool:
    return (
        d.proj.run.state == RunState.COMPLETED
        and scheduler.current_phase(d) is None
        and not d.jobs
        and not d.agents
        and not pruning.pending(d)
    )


def exit_code_for(d: Daemon) -> int:
    verdict = d.proj.run.verdict
    return EXIT_OK if verdict is not None and verdict.success else EXIT_FAILURES


def check_log(d: Daemon) -> None:
    """Refuse a tampered log before anything is built on it: the latest snapshot's own hash and the
    chain from it to the head (``batchd audit verify --full`` walks all of it)."""
    report = d.log.verify_tail(SNAPSHOT_NAME)
    if not report.ok:
        raise LogCorrupted(path=d.log.location, seq=report.first_bad_seq, detail=report.problem)


def note_remote_change(d: Daemon) -> None:
    """A run that resumes with another push URL than it started with (someone changed the remote's
    config between the two starts, maybe an agent without a sandbox): said in the log and the status."""
    before = d.proj.run.remote_url
    now = d.pinned.url if d.pinned is not None else ""
    if d.proj.run.run_id and before and now != before:
        note = f"the push URL changed since this run last started: {before} -> {now or '(none)'}"
        d.notes.append(note)
        log.warning("remote_url_changed", before=before, now=now)


def note_schedule(d: Daemon) -> None:
    """``[batchd] schedule`` differs from the policy the run in flight follows: the run keeps its own
    (switching halfway would strand the other policy's batches); said in the log and the status."""
    run = d.proj.run
    wanted = d.config.batchd.schedule
    if run.run_id and run.schedule and run.schedule != wanted and run.state != RunState.COMPLETED:
        note = f'schedule = "{wanted}" applies from the next run; this one goes on as "{run.schedule}"'
        if note not in d.notes:
            d.notes.append(note)
            log.warning("schedule_kept", run=run.schedule, config=wanted)


def serve(config: Config, *, once: bool, flags: SignalFlags | None = None) -> int:
    """Run the daemon in the foreground; returns the process exit code."""
    recovery.check_state_dir(config.root)
    preflight.check(config, service=preflight.supervised())  # before anything is spent: exit 2
    recovery.ensure_excluded(config.root)
    recovery.ensure_identity(config.root)
    lock = DaemonLock(Workspace(config.root).lock_path).acquire()
    d: Daemon | None = None
    flags = flags if flags is not None else SignalFlags().install()
    notifier = Notifier.from_env()
    try:
        hooks = snapshot_hooks(config.root, Workspace(config.root).tmp)
        pinned = pin_remote(config.root, config.batchd.remote, hooks)
        d = Daemon(config, notifier=notifier, pinned=pinned, hooks=hooks)
        return _run(d, flags, once=once)
    except Exception as e:
        if isinstance(e, BatchdError) and (d is None or not d.attached):
            raise  # a start-up refusal (configuration, remote, sandbox, tampered log): the CLI says it
        return crashed(d, e)
    finally:
        notifier.stopping()
        if d is not None:
            d.close()
        lock.release()
        flags.restore()


def _run(d: Daemon, flags: SignalFlags, *, once: bool) -> int:
    config = d.config
    watcher: TodoWatcher | None = None
    try:
        check_log(d)
        d.load()
        note_remote_change(d)
        note_schedule(d)
        recovery.reconcile(d)
        d.emit_one(
            ev.RUN_STREAM,
            ev.DaemonAttached(
                pid=os.getpid(),
                version=version(),
                sandbox=d.sandbox.note,
                remote_url=d.pinned.url if d.pinned is not None else "",
            ),
        )
        d.attached = True
        if not d.sandbox.active:
            log.warning(
                "agents_unconfined", reason=d.sandbox.note, hint="install bubblewrap to confine agents"
            )
            shared = sorted(deps.sources(config.root))
            if shared:  # linked into every workspace: without a sandbox, writable through the links
                log.warning(
                    "dependencies_writable",
                    folders=shared,
                    hint="an agent or a set-up command (pip install, npm install) can change these "
                    "folders of your checkout; install bubblewrap to make them read-only",
                )
        ignore = config.batchd.ignore
        watcher = TodoWatcher(config.todos_path, ignore=lambda name: is_ignored(name, ignore))
        # Watching before the first scan: a file written while it runs is caught by its event
        # instead of waiting a whole rescan_interval.
        watcher.start()
        d.wake = watcher.wake
        intake.rescan(d)
        d.notifier.ready()
        log.info("daemon_ready", root=str(config.root), once=once, last_seq=d.proj.last_seq)
        code = _loop(d, watcher, flags, once=once)
        write_status(d)
        return code
    finally:
        if watcher is not None:
            watcher.stop()


def _loop(d: Daemon, watcher: TodoWatcher, flags: SignalFlags, *, once: bool) -> int:
    state = {"last_scan": time.monotonic(), "last_status": 0.0}
    failures = 0
    while True:
        now = time.monotonic()
        d.notifier.maybe_ping(now)
        if flags.stop_requested is not None:
            return stop(d, flags.stop_requested, once=once)
        if flags.take_reload():
            try:
                d.reconfigure(reload(d.config))
                note_schedule(d)
            except BatchdError as e:
                log.error("config_reload_rejected", error=e.render())  # noqa: TRY400 - the message is the point
        try:
            tick(d, watcher, now, state)
            failures = 0
        except GitError as e:
            # git can fail for a moment (a lock held by a person's git command): try again a
            # few times before calling it a condition that needs a person.
            failures += 1
            log.error("tick_failed", error=e.render(), failures=failures)  # noqa: TRY400 - the message is the point
            if failures >= MAX_TICK_FAILURES:
                d.fatal = CannotProceed(
                    f"git failed {failures} times in a row: {e.message}", cause=Halt.GIT_FAILING, hint=e.hint
                )
            else:
                time.sleep(1.0)
        if once and d.fatal is None:
            d.fatal = unattended_halt(d)
        if d.fatal:
            log.error("cannot_proceed", cause=str(d.fatal.cause), reason=d.fatal.render())
            stop(d, None, once=once, why=d.fatal.render())
            return EXIT_CANNOT_PROCEED
        if once and finished(d):
            return exit_code_for(d)
        watcher.wait(TICK)


def unattended_halt(d: Daemon) -> CannotProceed | None:
    """Under ``--once`` nobody is there to clear a pause: a paused batch (a red baseline) or a run
    the daemon paused ends the run (exit 3) instead of waiting forever."""
    setups = {tuple(c) for c in d.config.verify.setup}
    for batch in d.proj.batches.values():
        if batch.state == BatchState.PAUSED:
            command = " ".join(batch.pause_command)
            if batch.pause_command in setups:  # not the tests: what the set-up needs (a registry, ...)
                return CannotProceed(
                    f"batch {batch.key}: [verify] setup failed on the tested tree and the last green one "
                    f"({command}), so no todo is blamed",
                    cause=Halt.BASELINE_RED,
                    hint="`batchd status` shows its output; fix what it needs, then `batchd resume` "
                    "and run again",
                )
            why = "its verification crashed" if command == "batchd" else f"the baseline is red ({command})"
            return CannotProceed(
                f"batch {batch.key}: {why}",
                cause=Halt.BASELINE_RED,
                hint="make the branch's tests pass, then `batchd resume` and run again",
            )
    run = d.proj.run
    if run.state == RunState.PAUSED and run.paused_by == "daemon":
        return CannotProceed(run.paused_reason, cause=Halt.PAUSED, hint="then `batchd resume`")
    waiting = scheduler.unplanned_ready(d) if run.state == RunState.COMPLETED and run.paused else []
    if waiting:  # held by a pause: ending on the old verdict (exit 0) would say they were done
        shown = ", ".join(d.proj.shown(t) for t in waiting)
        return CannotProceed(
            f"the run is paused ({run.paused_reason}) and todos wait: {shown}",
            cause=Halt.PAUSED,
            hint="`batchd resume`, then run again",
        )
    return None


def crashed(d: Daemon | None, error: Exception) -> int:
    """The daemon hit an error nothing expected: kill its agents, write the traceback down, record it."""
    text = traceback.format_exc()
    todo_id, place = d.current_step if d is not None else ("", "")
    where = place or _innermost(error)
    log.error("daemon_crashed", error=str(error), error_type=type(error).__name__, place=where, exc_info=True)
    if d is None:
        return EXIT_CANNOT_PROCEED
    d.stopping = True
    _best_effort(lambda: executor.kill_all(d))
    try:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        safefs.append_text(d.root, d.ws.crash_log.relative_to(d.root), f"--- {stamp} at {where}\n{text}\n")
    except (OSError, BatchdError) as e:
        log.error("crash_log_unwritable", error=str(e))  # noqa: TRY400 - no traceback: the crash's is logged
    _best_effort(lambda: executor.interrupt_running(d, f"the daemon crashed ({type(error).__name__})"))
    _best_effort(
        lambda: d.emit_one(
            ev.RUN_STREAM,
            ev.DaemonCrashed(
                error=f"{type(error).__name__}: {error}"[:2000],
                place=f"{type(error).__name__} at {where}",
                todo_id=todo_id,
                traceback=text[-4000:],
            ),
        )
    )
    _best_effort(lambda: write_status(d))
    return EXIT_CANNOT_PROCEED


def _best_effort(step: object) -> None:
    """One step of the crash path: its own failure is logged, never raised over the first one."""
    try:
        step()  # type: ignore[operator]
    except Exception:
        log.exception("crash_step_failed")


def _innermost(error: BaseException) -> str:
    """``module:function`` of the deepest frame of batchd's own code in the traceback."""
    found = "unknown"
    for frame in traceback.extract_tb(error.__traceback__):
        path = Path(frame.filename)
        if "daemon" in path.parts or "statemachine" in path.parts or "store" in path.parts:
            found = f"{path.stem}:{frame.name}"
    return found


def stop(d: Daemon, signum: int | None, *, once: bool, why: str = "") -> int:
    """Stop starting agents, give running ones ``stop_timeout`` seconds, record the rest interrupted;
    ``why`` is what cannot proceed (kept whole in ``run.stopping``, for `batchd status`)."""
    d.stopping = True
    reason = f"signal {signal.Signals(signum).name}" if signum else "cannot proceed"
    log.info("daemon_stopping", reason=reason, running=len(d.agents))
    d.notifier.stopping()
    # A paused run stays paused across the stop: the next start must not resume it by itself.
    if d.proj.run.state == RunState.RUNNING:
        d.emit_one(ev.RUN_STREAM, ev.RunStopping(reason=f"{reason}: {why}" if why else reason))
    executor.stop_all(d, f"daemon stopped ({reason})", grace=d.config.batchd.stop_timeout)
    d.wait_jobs(timeout=d.config.batchd.stop_timeout)
    if signum is None:
        return EXIT_CANNOT_PROCEED
    # A clean stop of the daemon is success; `run --once` that did not finish was interrupted.
    return 128 + signum if once else EXIT_OK


def reload(old: Config) -> Config:
    try:
        new = load_config(old.root)
    except BatchdError as e:
        log.error("config_reload_rejected", error=e.render())  # noqa: TRY400 - the message is the point, not a traceback
        return old
    problems = preflight.reload_problems(new)
    if problems:
        log.error(
            "config_reload_rejected",
            error="; ".join(p.render() for p in problems),
            hint="; ".join(p.hint for p in problems),
            kept="the configuration the daemon runs with",
        )
        return old
    changes = diff_config(old, new)
    log.info("config_reloaded", changes=changes or ["nothing changed"])
    return new
