"""The four machines declared as data: states, transitions, and which event fires which trigger.

This table is the single definition of what may happen. The projection folds history through it
as plain dictionary look-ups (fast, no callbacks), and :mod:`statemachine.machines` builds live
``transitions`` machines from the same rows for the entities still in flight.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from statemachine import events as ev


class TodoState(StrEnum):
    NEW = "new"
    PENDING = "pending"
    READY = "ready"
    PLANNED = "planned"
    RUNNING = "running"
    AGENT_DONE = "agent_done"
    VERIFYING = "verifying"
    ACCEPTED = "accepted"
    COMPLETE = "complete"
    AGENT_FAILED = "agent_failed"
    REJECTED = "rejected"
    CONFLICTED = "conflicted"
    BLOCKED = "blocked"
    CANCELLED = "cancelled"
    INVALID = "invalid"


class BatchState(StrEnum):
    NEW = "new"
    PLANNED = "planned"
    RUNNING = "running"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    PAUSED = "paused"
    DONE = "done"


class PhaseState(StrEnum):
    NEW = "new"
    PENDING = "pending"
    RUNNING = "running"
    COMMITTING = "committing"
    COMMITTED = "committed"
    PUSHING = "pushing"
    PUSHED = "pushed"
    PUSH_FAILED = "push_failed"
    DONE = "done"


class RunState(StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    COMPLETED = "completed"


class Kind(StrEnum):
    TODO = "todo"
    BATCH = "batch"
    PHASE = "phase"
    RUN = "run"


@dataclass(frozen=True, slots=True)
class Transition:
    trigger: str
    sources: tuple[str, ...]
    dest: str | None  # None: an internal transition (the state stays, the data changes)
    # Guards on data, asked of a live machine before an event is written (the fold of history
    # does not re-check them): names of the model's boolean methods, see statemachine.machines.
    conditions: tuple[str, ...] = ()


T = TodoState
_WAITING = (T.PENDING, T.READY, T.PLANNED)
_UNHAPPY = (T.AGENT_FAILED, T.REJECTED, T.CONFLICTED, T.BLOCKED)

# A person's edit, rename or delete of a todo file is honoured while its agent runs (the attempt is
# interrupted first, back to planned) and after it finished, until verification takes the change.
_EDITABLE = (*_WAITING, T.AGENT_DONE)

TODO_TRANSITIONS: tuple[Transition, ...] = (
    Transition(
        "record", (T.NEW, T.INVALID, T.READY, T.PLANNED, T.AGENT_DONE, T.CANCELLED, *_UNHAPPY), T.PENDING
    ),
    Transition("queue", (T.NEW, T.PENDING, T.INVALID, T.COMPLETE, T.CANCELLED), T.READY),
    Transition("update", (*_EDITABLE, T.CANCELLED, *_UNHAPPY), None),
    Transition("invalidate", (T.NEW, *_EDITABLE, T.INVALID, T.CANCELLED, *_UNHAPPY), T.INVALID),
    Transition("plan", (T.READY,), T.PLANNED, ("dependencies_accepted",)),
    Transition("start_agent", (T.PLANNED,), T.RUNNING),
    Transition("spawned", (T.RUNNING,), None),
    Transition("agent_done", (T.RUNNING,), T.AGENT_DONE),
    Transition("agent_fail", (T.RUNNING,), T.AGENT_FAILED),
    Transition("interrupt", (T.RUNNING,), T.PLANNED),
    Transition("verify", (T.AGENT_DONE,), T.VERIFYING),
    Transition("accept", (T.VERIFYING,), T.ACCEPTED),
    Transition("reject", (T.VERIFYING,), T.REJECTED),
    Transition("conflict", (T.VERIFYING, T.AGENT_DONE), T.CONFLICTED),
    # AGENT_DONE: its file was edited after its agent finished: run again with the new text.
    Transition("retry", (*_UNHAPPY, T.CANCELLED, T.INVALID, T.AGENT_DONE), T.READY),
    Transition("block", (T.PENDING, T.READY, T.PLANNED, T.AGENT_FAILED, T.REJECTED, T.CONFLICTED), T.BLOCKED),
    Transition("cancel", (*_EDITABLE, T.INVALID, *_UNHAPPY), T.CANCELLED),
    # NEW: a file already -complete- when first seen (history, or a dependency done elsewhere).
    Transition("complete", (T.NEW, T.ACCEPTED, *_EDITABLE, T.INVALID, T.CANCELLED, *_UNHAPPY), T.COMPLETE),
)

B = BatchState
BATCH_TRANSITIONS: tuple[Transition, ...] = (
    Transition("plan", (B.NEW,), B.PLANNED),
    Transition("start", (B.PLANNED,), B.RUNNING),
    Transition("verify", (B.RUNNING,), B.VERIFYING),
    Transition("verify_run", (B.PLANNED, B.RUNNING, B.VERIFYING), None),
    Transition("verified", (B.RUNNING, B.VERIFYING), B.VERIFIED),
    Transition("pause", (B.PLANNED, B.RUNNING, B.VERIFYING), B.PAUSED),
    Transition("resume", (B.PAUSED,), B.PLANNED),
    Transition("done", (B.VERIFIED,), B.DONE),
)

P = PhaseState
PHASE_TRANSITIONS: tuple[Transition, ...] = (
    Transition("plan", (P.NEW,), P.PENDING),
    Transition("start", (P.PENDING,), P.RUNNING, ("earlier_phases_done",)),
    Transition("rebase", (P.RUNNING,), None),
    Transition("commit", (P.RUNNING,), P.COMMITTING, ("earlier_phases_done",)),
    Transition("committed", (P.COMMITTING,), P.COMMITTED),
    # DONE: `batchd push` retries a phase whose push failed, once the remote is back.
    Transition("push", (P.COMMITTED, P.PUSHING, P.PUSH_FAILED, P.DONE), P.PUSHING),
    Transition("pushed", (P.PUSHING,), P.PUSHED),
    Transition("push_fail", (P.PUSHING,), P.PUSH_FAILED),
    Transition("done", (P.COMMITTED, P.PUSHED, P.PUSH_FAILED), P.DONE),
    Transition("skip", (P.RUNNING,), P.DONE),
)

R = RunState
RUN_TRANSITIONS: tuple[Transition, ...] = (
    Transition("start", (R.IDLE,), R.RUNNING),
    Transition("attach", (R.IDLE, R.RUNNING, R.PAUSED, R.COMPLETED), None),
    Transition("attach", (R.STOPPING,), R.RUNNING),
    Transition("pause", (R.RUNNING,), R.PAUSED),
    Transition("resume", (R.PAUSED,), R.RUNNING),
    # A completed run idling for new todos (continuous, `batchd run`) can be paused too: it stays
    # completed, its verdict stands, and nothing dropped meanwhile reopens it until it is resumed.
    Transition("pause", (R.COMPLETED,), None),
    Transition("resume", (R.COMPLETED,), None),
    Transition("stop", (R.RUNNING, R.PAUSED), R.STOPPING),
    Transition("complete", (R.RUNNING,), R.COMPLETED),
    Transition("reopen", (R.COMPLETED,), R.RUNNING),
    # The pull request of a run branch (land = "branch"): recorded whatever the run is doing.
    Transition("request", (R.RUNNING, R.PAUSED, R.STOPPING, R.COMPLETED), None),
    Transition("crash", tuple(R), None),
    Transition("budget", (R.RUNNING, R.PAUSED, R.STOPPING), None),
)

TRANSITIONS: dict[Kind, tuple[Transition, ...]] = {
    Kind.TODO: TODO_TRANSITIONS,
    Kind.BATCH: BATCH_TRANSITIONS,
    Kind.PHASE: PHASE_TRANSITIONS,
    Kind.RUN: RUN_TRANSITIONS,
}

STATES: dict[Kind, type[StrEnum]] = {
    Kind.TODO: TodoState,
    Kind.BATCH: BatchState,
    Kind.PHASE: PhaseState,
    Kind.RUN: RunState,
}

INITIAL: dict[Kind, str] = {
    Kind.TODO: TodoState.NEW,
    Kind.BATCH: BatchState.NEW,
    Kind.PHASE: PhaseState.NEW,
    Kind.RUN: RunState.IDLE,
}

#: Every event type fires exactly one trigger on one kind of machine.
EVENT_TRIGGERS: dict[type[object], tuple[Kind, str]] = {
    ev.TodoRecorded: (Kind.TODO, "record"),
    ev.TodoQueued: (Kind.TODO, "queue"),
    ev.TodoUpdated: (Kind.TODO, "update"),
    ev.TodoInvalid: (Kind.TODO, "invalidate"),
    ev.TodoPlanned: (Kind.TODO, "plan"),
    ev.AgentStarted: (Kind.TODO, "start_agent"),
    ev.AgentSpawned: (Kind.TODO, "spawned"),
    ev.AgentFinished: (Kind.TODO, "agent_done"),
    ev.AgentFailed: (Kind.TODO, "agent_fail"),
    ev.AgentInterrupted: (Kind.TODO, "interrupt"),
    ev.TodoVerifying: (Kind.TODO, "verify"),
    ev.TodoAccepted: (Kind.TODO, "accept"),
    ev.TodoRejected: (Kind.TODO, "reject"),
    ev.TodoConflicted: (Kind.TODO, "conflict"),
    ev.TodoRetryScheduled: (Kind.TODO, "retry"),
    ev.TodoBlocked: (Kind.TODO, "block"),
    ev.TodoCancelled: (Kind.TODO, "cancel"),
    ev.TodoCompleted: (Kind.TODO, "complete"),
    ev.BatchPlanned: (Kind.BATCH, "plan"),
    ev.BatchStarted: (Kind.BATCH, "start"),
    ev.BatchVerifying: (Kind.BATCH, "verify"),
    ev.BatchVerifyRun: (Kind.BATCH, "verify_run"),
    ev.BatchVerified: (Kind.BATCH, "verified"),
    ev.BatchPaused: (Kind.BATCH, "pause"),
    ev.BatchResumed: (Kind.BATCH, "resume"),
    ev.BatchDone: (Kind.BATCH, "done"),
    ev.PhasePlanned: (Kind.PHASE, "plan"),
    ev.PhaseStarted: (Kind.PHASE, "start"),
    ev.PhaseRebased: (Kind.PHASE, "rebase"),
    ev.PhaseCommitting: (Kind.PHASE, "commit"),
    ev.PhaseCommitted: (Kind.PHASE, "committed"),
    ev.PhasePushing: (Kind.PHASE, "push"),
    ev.PhasePushed: (Kind.PHASE, "pushed"),
    ev.PhasePushFailed: (Kind.PHASE, "push_fail"),
    ev.PhaseDone: (Kind.PHASE, "done"),
    ev.PhaseSkipped: (Kind.PHASE, "skip"),
    ev.RunStarted: (Kind.RUN, "start"),
    ev.DaemonAttached: (Kind.RUN, "attach"),
    ev.DaemonCrashed: (Kind.RUN, "crash"),
    ev.RunPaused: (Kind.RUN, "pause"),
    ev.RunResumed: (Kind.RUN, "resume"),
    ev.RunStopping: (Kind.RUN, "stop"),
    ev.RunCompleted: (Kind.RUN, "complete"),
    ev.RunReopened: (Kind.RUN, "reopen"),
    ev.RequestOpening: (Kind.RUN, "request"),
    ev.RequestOpened: (Kind.RUN, "request"),
    ev.RequestFailed: (Kind.RUN, "request"),
    ev.RunBudgetReached: (Kind.RUN, "budget"),
}

#: Requests from the CLI: recorded, answered by the daemon, but they move no machine themselves.
CONTROL_EVENTS: tuple[type[object], ...] = (
    ev.RetryRequested,
    ev.CancelRequested,
    ev.PauseRequested,
    ev.ResumeRequested,
    ev.PushRequested,
    ev.ControlHandled,
)


def _compile() -> dict[tuple[Kind, str, str], str]:
    table: dict[tuple[Kind, str, str], str] = {}
    for kind, rows in TRANSITIONS.items():
        for row in rows:
            for src in row.sources:
                key = (kind, str(src), row.trigger)
                if key in table:
                    raise AssertionError(f"two transitions for {key}")  # a table bug, caught at import
                table[key] = str(src) if row.dest is None else str(row.dest)
    return table


#: (kind, state, trigger) -> next state: the whole rulebook as one dictionary look-up.
NEXT_STATE: dict[tuple[Kind, str, str], str] = _compile()

TERMINAL_TODO_STATES = frozenset({T.COMPLETE, T.CANCELLED})
