"""What comes in from outside: the todos folder (scans) and control requests (from the CLI).

The folder is reconciled by a full scan, diffed against what the log knows: at start-up, on every
file-system event (settled), and every ``rescan_interval`` seconds because inotify can drop events.
batchd's own renames (``-ready-`` -> ``-complete-`` after a phase commit) are recognised because the
log already says the todo is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import structlog

from daemon.engine.runner import Daemon
from daemon.exceptions import printable
from daemon.intake.scanner import (
    Added,
    Edited,
    Fixed,
    Invalid,
    KnownTodo,
    Removed,
    StatusChanged,
    diff_scan,
    scan_folder,
)
from daemon.intake.todofile import TodoFile, TodoStatus
from statemachine import events as ev
from statemachine.tables import EVENT_TRIGGERS, NEXT_STATE, BatchState, RunState, TodoState
from store import Append

log = structlog.get_logger(__name__)

# What a scan status means for each projected state (None: no file status: invalid).
_STATUS_OF: dict[str, TodoStatus | None] = {
    TodoState.PENDING: TodoStatus.PENDING,
    TodoState.COMPLETE: TodoStatus.COMPLETE,
    TodoState.INVALID: None,
}


def known_todos(d: Daemon) -> dict[str, KnownTodo]:
    known: dict[str, KnownTodo] = {}
    for todo in d.proj.todos.values():
        if todo.state == TodoState.NEW:
            continue
        status = _STATUS_OF.get(todo.state, TodoStatus.READY)
        if todo.state == TodoState.CANCELLED and not (d.root / todo.path).exists():
            continue  # its file is gone: a new file with this id is a new todo
        known[todo.todo_id] = KnownTodo(
            path=d.root / todo.path,
            status=status,
            digest=todo.digest or None,
            invalid_reason=todo.reason if todo.state == TodoState.INVALID else None,
        )
    return known


def allowed(d: Daemon, todo_id: str, event: object) -> bool:
    kind, trigger = EVENT_TRIGGERS[type(event)]
    todo = d.proj.todos.get(todo_id)
    state = todo.state if todo is not None else TodoState.NEW
    return (kind, str(state), trigger) in NEXT_STATE


# A person's change to a todo whose agent is at work (or done, not yet verified) wins over the agent.
_HONOURED = (TodoState.RUNNING, TodoState.AGENT_DONE)


def rescan(d: Daemon) -> int:
    """Full scan of the todos folder; returns how many events it produced."""
    folder = d.config.todos_path
    # Files whose inode, size and times are unchanged are not parsed again (the previous result).
    result = scan_folder(folder, d.config.batchd.ignore, previous=d.last_scan)
    d.last_scan = result
    appends: list[tuple[str, Sequence[object]]] = []
    for change in diff_scan(known_todos(d), result):
        event = event_for(d, change)
        if event is None:
            continue
        todo_id = change.key
        view = d.proj.todos.get(todo_id)
        if view is not None and view.state in _HONOURED and honoured(d, todo_id, change, event):
            appends.append((ev.todo_stream(todo_id), honour(d, todo_id, change, event)))
            continue
        if not allowed(d, todo_id, event):
            log.info(
                "todo_change_deferred",
                todo_id=todo_id,
                change=type(change).__name__,
                state=str(d.proj.todos[todo_id].state) if todo_id in d.proj.todos else "new",
            )
            continue
        appends.append((ev.todo_stream(todo_id), [event]))
    for todo in result.todos.values():
        for note in todo.disagreements:
            log.warning("todo_name_front_matter_disagree", todo_id=todo.key, path=str(todo.path), detail=note)
    d.emit(*appends)
    return len(appends)


def honoured(d: Daemon, todo_id: str, change: object, event: object) -> bool:
    """Whether a person's change wins over the todo's attempt: a new text, a new status, or no file;
    a rename that keeps the text (a new priority, say) waits for the attempt as before."""
    todo = d.proj.todos[todo_id]
    if isinstance(change, Edited) and change.todo.digest == todo.digest:
        return False
    state = TodoState.PLANNED if todo.state == TodoState.RUNNING else todo.state
    kind, trigger = EVENT_TRIGGERS[type(event)]
    return (kind, str(state), trigger) in NEXT_STATE


def honour(d: Daemon, todo_id: str, change: object, event: object) -> list[object]:
    """A person edited, renamed or deleted the file of a todo whose agent runs or just finished: the
    attempt gives way. Its agent is stopped and the attempt recorded as interrupted (not counted);
    then the person's change applies: deleted -> cancelled, renamed pending -> pending, renamed
    complete -> complete, broken -> invalid, edited -> run again with the new text."""
    todo = d.proj.todos[todo_id]
    events: list[object] = []
    what = type(change).__name__.lower()
    if todo.state == TodoState.RUNNING:
        from daemon.engine.executor import agent_seconds, stop_agent

        spent = round(agent_seconds(todo), 3)  # its agent time counts, though the work is dropped
        stop_agent(d, todo_id)
        events.append(
            ev.AgentInterrupted(
                todo_id=todo_id,
                attempt=todo.attempt,
                reason=f"a person changed its todo file ({what})",
                duration=spent,
            )
        )
    events.append(event)
    if isinstance(event, ev.TodoUpdated) and todo.state == TodoState.AGENT_DONE:
        # Its change was made for the old text: it runs again (a new attempt, not counted as used).
        events.append(
            ev.TodoRetryScheduled(
                todo_id=todo_id,
                next_attempt=todo.attempt + 1,
                reason="its todo file was edited after its agent finished",
                mode="redo",  # its change was made for the old text: nothing of it is carried
            )
        )
    log.info("todo_change_honoured", todo_id=todo_id, change=type(change).__name__, state=str(todo.state))
    return events


def _rel(d: Daemon, path: Path) -> str:
    """A path as the log keeps it: relative to the repository, undecodable bytes shown escaped."""
    try:
        text = str(path.relative_to(d.root))
    except ValueError:
        text = str(path)
    return printable(text)


def _fields(d: Daemon, todo: TodoFile) -> dict[str, object]:
    return {
        "todo_id": todo.key,
        "path": _rel(d, todo.path),
        "title": todo.title,
        "priority": str(todo.priority),
        "digest": todo.digest,
        "dependencies": tuple(todo.dependencies),
        "files": tuple(todo.files),
    }


def event_for(d: Daemon, change: object) -> object | None:
    if isinstance(change, Invalid):
        bad = change.invalid
        return ev.TodoInvalid(todo_id=bad.key, path=_rel(d, bad.path), reason=bad.reason, hint=bad.hint)
    if isinstance(change, Removed):
        todo = d.proj.todos.get(change.key)
        if todo is None or todo.state in (TodoState.COMPLETE, TodoState.CANCELLED):
            return None
        return ev.TodoCancelled(
            todo_id=change.key,
            reason=f"its file {_rel(d, change.path)} was deleted",
            by="person",
            removed=True,
        )
    if isinstance(change, Edited):
        return ev.TodoUpdated(**_fields(d, change.todo))  # type: ignore[arg-type]
    if isinstance(change, Added | Fixed | StatusChanged):
        found = change.todo
        if found.status == TodoStatus.PENDING:
            return ev.TodoRecorded(**_fields(d, found))  # type: ignore[arg-type]
        if found.status == TodoStatus.READY:
            by = "person" if isinstance(change, StatusChanged) else "scan"
            return ev.TodoQueued(**_fields(d, found), by=by)  # type: ignore[arg-type]
        current = d.proj.todos.get(found.key)
        if current is not None and current.state in (TodoState.COMPLETE, TodoState.ACCEPTED):
            # Our own rename: the phase commit reached the checkout (an accepted todo is completed
            # by the daemon itself, with the commit, once that is recorded).
            return None
        return ev.TodoCompleted(todo_id=found.key, path=_rel(d, found.path), commit="", by="person")
    return None


# --- control requests ---------------------------------------------------------------------------


def handle_controls(d: Daemon) -> None:
    """Answer each control request once, with its effect in the same transaction."""
    if d.proj.run.state == RunState.IDLE:
        return  # requests made before the run started are answered once it has (a pause holds it)
    for seq, type_, payload in list(d.proj.controls_pending):
        appends, outcome, detail = answer(d, type_, payload)
        appends.append(
            Append(
                ev.CONTROL_STREAM, [ev.ControlHandled(request_seq=seq, outcome=outcome, detail=detail)], None
            )
        )
        d.emit(*appends)
        log.info("control_handled", request=type_, seq=seq, outcome=outcome, detail=detail)


def answer(
    d: Daemon, type_: str, payload: dict[str, object]
) -> tuple[list[Append | tuple[str, Sequence[object]]], str, str]:
    todo_id = str(payload.get("todo_id", ""))
    todo = d.proj.todos.get(todo_id)
    if type_ == "control.retry":
        if todo is None:
            return [], "refused", f"no todo #{todo_id}"
        event = ev.TodoRetryScheduled(
            todo_id=todo_id,
            next_attempt=todo.attempt + 1,
            reason="retry requested",
            by="person",
            mode="retry",  # from scratch: a person's retry carries nothing of the attempts before
        )
        if not allowed(d, todo_id, event):
            return (
                [],
                "refused",
                f"todo #{d.proj.shown(todo_id)} is {todo.state}: "
                "only a failed, blocked, cancelled or invalid todo can be retried",
            )
        return [(ev.todo_stream(todo_id), [event])], "done", f"queued for attempt {todo.attempt + 1}"
    if type_ == "control.cancel":
        if todo is None:
            return [], "refused", f"no todo #{todo_id}"
        if todo.state == TodoState.RUNNING:
            from daemon.engine.executor import agent_seconds, stop_agent

            spent = round(agent_seconds(todo), 3)
            stop_agent(d, todo_id)
            executor_events = [
                ev.AgentInterrupted(todo_id=todo_id, attempt=todo.attempt, reason="cancelled", duration=spent)
            ]
            return (
                [
                    (
                        ev.todo_stream(todo_id),
                        [
                            *executor_events,
                            ev.TodoCancelled(todo_id=todo_id, reason="cancelled with batchd cancel"),
                        ],
                    )
                ],
                "done",
                "its agent was stopped",
            )
        cancel = ev.TodoCancelled(todo_id=todo_id, reason="cancelled with batchd cancel")
        if not allowed(d, todo_id, cancel):
            return [], "refused", f"todo #{d.proj.shown(todo_id)} is {todo.state} and cannot be cancelled now"
        return [(ev.todo_stream(todo_id), [cancel])], "done", "cancelled"
    if type_ == "control.pause":
        run = d.proj.run
        if run.paused:
            return [], "refused", f"the run is paused already ({run.paused_reason or 'paused'})"
        if run.state not in (RunState.RUNNING, RunState.COMPLETED):
            return [], "refused", f"the run is {run.state}"
        running = sum(1 for t in d.proj.todos.values() if t.state == TodoState.RUNNING)
        detail = "no new agent starts until `batchd resume`" + (
            f"; {running} running agent(s) finish" if running else ""
        )
        return (
            [(ev.RUN_STREAM, [ev.RunPaused(reason=str(payload.get("reason", "")) or "paused")])],
            "done",
            detail,
        )
    if type_ == "control.push":
        from daemon.engine.pushes import retry_target

        target = retry_target(d)
        if isinstance(target, str):
            return [], "refused", target
        appends_push: list[Append | tuple[str, Sequence[object]]] = [
            (
                ev.phase_stream(target.number),
                [
                    ev.PhasePushing(
                        number=target.number, attempt=target.push_attempts + 1, sha=target.head_sha
                    )
                ],
            )
        ]
        if d.proj.run.state == RunState.COMPLETED:
            # The verdict counted the failed push: it is decided again once this one is done.
            # A pause made while the run idled holds the reopened run too.
            run_events: list[object] = [ev.RunReopened(reason="batchd push")]
            if d.proj.run.paused_reason:
                run_events.append(ev.RunPaused(reason=d.proj.run.paused_reason, by=d.proj.run.paused_by))
            appends_push.insert(0, (ev.RUN_STREAM, run_events))
        if d.proj.run.paused:
            return appends_push, "done", f"phase {target.number} is pushed again after `batchd resume`"
        return appends_push, "done", f"pushing phase {target.number} again"
    if type_ == "control.resume":
        appends: list[Append | tuple[str, Sequence[object]]] = [
            (ev.batch_stream(b.key), [ev.BatchResumed(key=b.key)])
            for b in d.proj.batches.values()
            if b.state == BatchState.PAUSED
        ]
        if d.proj.run.paused:
            appends.append((ev.RUN_STREAM, [ev.RunResumed()]))
        if not appends:
            return [], "refused", "nothing is paused"
        return appends, "done", "the run goes on" if d.proj.run.paused_reason else "batches re-checked"
    return [], "refused", f"unknown request {type_}"
