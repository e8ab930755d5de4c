"""The plain state the projection folds the log into: one slotted view per todo, batch, phase and the run.

Views hold only JSON-able values (str, int, float, bool, None, tuples of str, small named tuples), so a
snapshot is a positional list per view. Each snapshot carries the field names it was written with:
a snapshot from code with other fields is refused (:class:`SnapshotIncompatible`) rather than misread.
States are plain strings equal to the ``tables`` enum values (``view.state == TodoState.RUNNING``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from statemachine.exceptions import SnapshotIncompatible

Row = list[Any]


class AttemptRecord(NamedTuple):
    """How one attempt ended (``outcome``: accepted, agent_failed, rejected, conflicted, interrupted).
    ``kept``: its change was carried into the next attempt (a resolve or a repair), so its agent time
    was not thrown away."""

    attempt: int
    outcome: str
    reason: str
    duration: float
    cost_usd: float | None
    kept: bool = False


class RunVerdict(NamedTuple):
    """``run.completed``: see :class:`statemachine.events.RunCompleted` for the fields."""

    success: bool
    checks_green: bool
    complete: tuple[str, ...]
    not_complete: tuple[tuple[str, str], ...]
    removed: tuple[str, ...]
    detail: str
    unpushed: str

    @property
    def missing(self) -> tuple[str, ...]:
        """The ids of the planned todos that are not complete, whatever the reason."""
        return tuple(t for t, _ in self.not_complete)


@dataclass(slots=True, eq=False)
class TodoView:
    """One todo. ``attempt`` is the current (or next) attempt number, starting at 1: ``todo.retry_scheduled``
    sets it, ``todo.agent_started`` records it, an interrupted attempt keeps it for the re-run.
    ``attempts_used`` counts only attempts that failed or were rejected (the number ``max_attempts``
    applies to); ``conflicts_used`` those that lost a conflict (``max_conflict_retries``); a retry by a
    person starts a fresh budget (both reset to 0). ``carry``/``session_id``/``retry_mode``: how the
    next attempt starts (see ``todo.retry_scheduled``); ``last_session_id`` is the session of the last
    attempt that ended.
    ``problem``/``reason``/``action``/``files_reverted``/``output_tail`` describe the current unhappy
    state and are cleared when the todo leaves it; ``repair`` is what the next prompt should show;
    ``history`` keeps every ended attempt."""

    todo_id: str
    state: str = "new"
    path: str = ""
    title: str = ""
    priority: str = ""
    digest: str = ""
    dependencies: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    attempt: int = 1
    attempts_used: int = 0
    conflicts_used: int = 0
    batch: str = ""
    phase: int | None = None
    worktree: str = ""
    branch: str = ""
    base_sha: str = ""
    log_path: str = ""
    pid: int | None = None
    pgid: int | None = None
    token: str = ""
    start_ticks: int | None = None
    exit_path: str = ""
    agent_started_at: str = ""
    last_duration: float = 0.0
    last_cost_usd: float | None = None
    agent_seconds: float = 0.0
    cost_usd: float = 0.0
    agent_commit: str = ""
    agent_files: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    test_edits: tuple[str, ...] = ()
    note: str = ""
    review: str = ""
    agent_commits: tuple[str, ...] = ()  # every commit its agents made themselves, all attempts
    accepted_commit: str = ""
    completed_commit: str = ""
    problem: str = ""  # agent_failed | rejected | conflicted | blocked | invalid | cancelled | removed
    reason: str = ""
    files_reverted: tuple[str, ...] = ()
    action: str = ""
    output_tail: str = ""
    repair: str = ""
    carry: str = ""
    session_id: str = ""
    retry_mode: str = ""
    last_session_id: str = ""
    recovered: bool = False  # its last agent's change was collected after a crash
    cost_simulated: bool = False  # its agent said its cost is made up (the demo's scripted agent)
    resolved: tuple[str, ...] = ()
    history: list[AttemptRecord] = field(default_factory=list)

    @property
    def stream(self) -> str:
        return f"todo-{self.todo_id}"


@dataclass(slots=True, eq=False)
class BatchView:
    """One batch. ``runs`` counts verify runs over candidates, ``baseline_runs`` those of the bare base."""

    key: str
    state: str = "new"
    phase: int | None = None
    todo_ids: tuple[str, ...] = ()
    planned_ids: tuple[str, ...] = ()  # as planned (``todo_ids`` becomes those that ran)
    retry_of: str = ""
    base_sha: str = ""
    candidates: tuple[str, ...] = ()
    head_sha: str = ""
    accepted: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()
    conflicted: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()
    runs: int = 0
    baseline_runs: int = 0
    green_bases: tuple[str, ...] = ()  # base commits whose baseline run passed
    last_failing_command: tuple[str, ...] = ()
    pause_command: tuple[str, ...] = ()
    pause_output: str = ""
    # (command key, test id) that failed in the baseline runs of ``base_failures_sha`` (the newest base
    # given a baseline): flaky or excused there, or red in a red baseline. They never blame a candidate
    # verified on that base (the engine checks the sha: a batch moved to a base never baselined keeps them).
    base_failures: tuple[tuple[str, str], ...] = ()
    base_failures_sha: str = ""

    @property
    def stream(self) -> str:
        return f"batch-{self.key}"


@dataclass(slots=True, eq=False)
class PhaseView:
    """One phase. ``commit_message`` is the planned one until ``phase.committing`` records the real one."""

    number: int
    state: str = "new"
    title: str = ""
    commit_message: str = ""
    batches: tuple[str, ...] = ()
    final: bool = False
    base_sha: str = ""
    todo_ids: tuple[str, ...] = ()
    commits: tuple[str, ...] = ()
    head_sha: str = ""
    push_sha: str = ""
    push_attempts: int = 0
    pushed_sha: str = ""
    push_failed_reason: str = ""
    push_output: str = ""
    skipped_reason: str = ""  # set when nothing was accepted: no commit, no push
    pushed_branch: str = ""  # the remote branch pushed ("" = the run's branch)
    push_created: bool = False  # that push made the branch on the remote

    @property
    def stream(self) -> str:
        return f"phase-{self.number}"


@dataclass(slots=True, eq=False)
class RunView:
    """The run. ``pid`` is the daemon that attached last; ``verdict`` is set while the run is completed."""

    state: str = "idle"
    run_id: str = ""
    branch: str = ""
    base_sha: str = ""
    plan_source: str = ""
    final_titles: tuple[str, ...] = ()
    final_messages: tuple[str, ...] = ()
    schedule: str = ""  # the policy the run follows (set when it starts or reopens)
    started_at: str = ""
    pid: int | None = None
    daemon_version: str = ""
    attached_at: str = ""
    paused_reason: str = ""
    paused_by: str = ""  # "person" or "daemon"
    stop_reason: str = ""
    reopened_reason: str = ""
    sandbox: str = ""
    remote_url: str = ""
    crash_place: str = ""  # the last unexpected error's place, and how many times in a row
    crash_todo: str = ""
    crash_count: int = 0
    crash_error: str = ""
    # The pull request of the run branch (land = "branch"): "" | opening | opened | failed.
    request_state: str = ""
    request_branch: str = ""
    request_phase: int = 0  # the phase whose push it followed
    request_url: str = ""
    request_detail: str = ""  # why it failed
    budget: str = ""  # the run budget that stopped new agents ("max_cost_usd" | "max_agent_minutes")
    budget_detail: str = ""  # e.g. "$5.20 of $5.00"
    budget_limit: float = 0.0  # the limit in force when it was reached (raised since: work goes on)
    verdict: RunVerdict | None = None

    @property
    def stream(self) -> str:
        return "run"

    @property
    def paused(self) -> bool:
        """Paused, running or idle: a completed run can be paused too (``batchd pause`` on an idle
        daemon), and then holds the todos dropped meanwhile. The one test of it."""
        return self.state == "paused" or (self.state == "completed" and bool(self.paused_reason))


class _Codec:
    """Positional rows for one view class; tuple fields become lists in JSON and tuples again on load."""

    def __init__(self, cls: type[Any]) -> None:
        self.cls = cls
        self.names = tuple(f.name for f in fields(cls))
        types = [str(f.type) for f in fields(cls)]
        # Tuples of pairs (``tuple[tuple[str, str], ...]``) are lists of lists in JSON, tuples of tuples here.
        self.pairs_idx = tuple(i for i, t in enumerate(types) if t.startswith("tuple[tuple["))
        self.tuple_idx = tuple(
            i for i, t in enumerate(types) if t.startswith("tuple[") and i not in self.pairs_idx
        )

    def dump(self, view: Any) -> Row:
        row = [getattr(view, n) for n in self.names]
        for i in self.tuple_idx:
            row[i] = list(row[i])
        for i in self.pairs_idx:
            row[i] = [list(pair) for pair in row[i]]
        return row

    def load(self, row: Row) -> Any:
        values = list(row)
        for i in self.tuple_idx:
            values[i] = tuple(values[i])
        for i in self.pairs_idx:
            values[i] = tuple(tuple(pair) for pair in values[i])
        return self.cls(*values)


TODO = _Codec(TodoView)
BATCH = _Codec(BatchView)
PHASE = _Codec(PhaseView)
RUN = _Codec(RunView)

_HISTORY = TODO.names.index("history")
_VERDICT = RUN.names.index("verdict")


def layout() -> dict[str, list[str]]:
    """The field names of every view, stored with a snapshot so a different layout is detected."""
    return {
        "todo": list(TODO.names),
        "batch": list(BATCH.names),
        "phase": list(PHASE.names),
        "run": list(RUN.names),
        "verdict": list(RunVerdict._fields),
        "attempt": list(AttemptRecord._fields),
    }


def check_layout(name: str, found: object) -> None:
    if found != layout():
        raise SnapshotIncompatible(
            name=name, detail="it was written by a batchd with other projection fields"
        )


def dump_todo(view: TodoView) -> Row:
    row = TODO.dump(view)
    row[_HISTORY] = [list(h) for h in view.history]
    return row


def load_todo(row: Row) -> TodoView:
    view: TodoView = TODO.load(row)
    view.history = [AttemptRecord(*h) for h in row[_HISTORY]]
    return view


def dump_run(view: RunView) -> Row:
    row = RUN.dump(view)
    v = view.verdict
    row[_VERDICT] = (
        None
        if v is None
        else [
            v.success,
            v.checks_green,
            list(v.complete),
            [list(pair) for pair in v.not_complete],
            list(v.removed),
            v.detail,
            v.unpushed,
        ]
    )
    return row


def load_run(row: Row) -> RunView:
    view: RunView = RUN.load(row)
    v = row[_VERDICT]
    view.verdict = None if v is None else verdict_of(v)
    return view


def verdict_of(v: Sequence[Any]) -> RunVerdict:
    """A verdict from its JSON row (lists back to tuples)."""
    pairs = tuple((str(t), str(what)) for t, what in v[3])
    return RunVerdict(v[0], v[1], tuple(v[2]), pairs, tuple(v[4]), v[5], v[6])
