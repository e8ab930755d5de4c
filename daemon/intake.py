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

from daemon.runner import Daemon
from daemon.scanner import (
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
from daemon.todofile import TodoFile, TodoStatus
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


def _rel(d: Daemon, path: Path) -> str:
    try:
        return str(path.relative_to(d.root))
    except ValueError:
        return str(path)


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
            todo_id=todo_id, next_attempt=todo.attempt + 1, reason="retry requested", by="person"
        )
        if not allowed(d, todo_id, event):
            return (
                [],
                "refused",
                f"todo #{todo_id} is {todo.state}: "
                "only a failed, blocked, cancelled or invalid todo can be retried",
            )
        return [(ev.todo_stream(todo_id), [event])], "done", ""
    if type_ == "control.cancel":
        if todo is None:
            return [], "refused", f"no todo #{todo_id}"
        if todo.state == TodoState.RUNNING:
            proc = d.agents.pop(todo_id, None)
            if proc is not None:
                proc.kill_group()
            executor_events = [ev.AgentInterrupted(todo_id=todo_id, attempt=todo.attempt, reason="cancelled")]
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
            return [], "refused", f"todo #{todo_id} is {todo.state} and cannot be cancelled now"
        return [(ev.todo_stream(todo_id), [cancel])], "done", ""
    if type_ == "control.pause":
        if d.proj.run.state != RunState.RUNNING:
            return [], "refused", f"the run is {d.proj.run.state}"
        return (
            [(ev.RUN_STREAM, [ev.RunPaused(reason=str(payload.get("reason", "")) or "paused")])],
            "done",
            "",
        )
    if type_ == "control.resume":
        appends: list[Append | tuple[str, Sequence[object]]] = [
            (ev.batch_stream(b.key), [ev.BatchResumed(key=b.key)])
            for b in d.proj.batches.values()
            if b.state == BatchState.PAUSED
        ]
        if d.proj.run.state == RunState.PAUSED:
            appends.append((ev.RUN_STREAM, [ev.RunResumed()]))
        if not appends:
            return [], "refused", "nothing is paused"
        return appends, "done", ""
    return [], "refused", f"unknown request {type_}"
