"""The domain events of batchd, registered in the store under stable names and versions.

Streams: ``todo-<id>``, ``batch-<key>`` (``batch-1.1``), ``phase-<n>``, ``run`` and ``control``
(requests from the CLI that the daemon acts on). Every event is a frozen, keyword-only dataclass;
its payload is plain JSON. Each event type maps to exactly one trigger of one machine
(see :mod:`statemachine.tables`); ``control.*`` events are requests and move no machine.

Intent events end in ``_started``/``committing``/``pushing``; the matching outcome names the same
``attempt``/``step`` so recovery can tell an intent that never got its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from store.registry import registry

Json = dict[str, Any]


def todo_stream(todo_id: str) -> str:
    return f"todo-{todo_id}"


def batch_stream(key: str) -> str:
    return f"batch-{key}"


def phase_stream(number: int) -> str:
    return f"phase-{number}"


RUN_STREAM = "run"
CONTROL_STREAM = "control"


# --- todo ---------------------------------------------------------------------------------------


@registry.register("todo.recorded", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoRecorded:
    """A ``-pending-`` file was seen: known, not queued."""

    todo_id: str
    path: str
    title: str
    priority: str
    digest: str
    dependencies: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@registry.register("todo.queued", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoQueued:
    """A ``-ready-`` file: work to do (new, renamed from pending, re-queued by a person, or fixed)."""

    todo_id: str
    path: str
    title: str
    priority: str
    digest: str
    dependencies: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    by: str = "scan"  # scan | watcher | person


@registry.register("todo.updated", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoUpdated:
    """The file changed before its work started (content or path)."""

    todo_id: str
    path: str
    title: str
    priority: str
    digest: str
    dependencies: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@registry.register("todo.invalid", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoInvalid:
    """The file is malformed; the reason and how to fix it go to the status file."""

    todo_id: str
    path: str
    reason: str
    hint: str


@registry.register("todo.planned", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoPlanned:
    todo_id: str
    batch: str
    phase: int


@registry.register("todo.agent_started", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStarted:
    """Intent: the agent for ``attempt`` is about to start in ``worktree`` from ``base_sha``."""

    todo_id: str
    attempt: int
    batch: str
    worktree: str
    branch: str
    base_sha: str
    log_path: str
    argv: tuple[str, ...] = ()
    # In the agent's environment (BATCHD_AGENT_TOKEN): how recovery finds its processes, and only them.
    token: str = ""
    # The earlier attempt's commit whose change its workspace starts with (rebased onto base_sha);
    # "" = from scratch, also when a carry was asked for and could not be made.
    carried: str = ""


@registry.register("todo.agent_spawned", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpawned:
    """The agent process exists: its process group is what recovery kills after a crash."""

    todo_id: str
    attempt: int
    pid: int
    pgid: int
    start_ticks: int | None = None  # the leader's start time (/proc): a reused pid is never killed
    exit_path: str = ""  # where the shim writes the agent's exit code and end time


@registry.register("todo.agent_finished", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFinished:
    """Outcome: the agent exited 0 and left a change, squashed into ``commit``."""

    todo_id: str
    attempt: int
    returncode: int
    duration: float
    commit: str
    files: tuple[str, ...]
    cost_usd: float | None = None
    summary: Json = field(default_factory=dict)
    dropped: tuple[str, ...] = ()  # "path (why)": changes an agent may not make, put back as on the base
    warnings: tuple[str, ...] = ()  # for review: deletions or reverts of earlier work, embedded repositories
    test_edits: tuple[str, ...] = ()  # existing test files it changed or deleted
    note: str = ""  # work-log text it appended to its own todo file (carried into the committed file)
    session_id: str = ""  # the agent's own session (its JSON result), which a repair may continue
    # Its agent outlived a crash of the daemon and was not run again: taken over while it still ran,
    # or collected after it ended (exit record, or a commit with its attempt's trailers).
    recovered: bool = False
    agent_head: str = ""  # the commit its own repository was at
    agent_commits: tuple[str, ...] = ()  # commits it made itself (recognised if they reach the remote)


@registry.register("todo.agent_failed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFailed:
    """Outcome: non-zero exit, crash, timeout, an ``is_error`` result, or no change at all."""

    todo_id: str
    attempt: int
    # exit | timeout | no_change | is_error | setup | start | history | workspace | too_large |
    # protected | embedded | collect | crash_loop | conflict_markers (a resolve left git's markers in)
    reason: str
    detail: str
    returncode: int | None = None
    duration: float = 0.0
    cost_usd: float | None = None
    log_tail: str = ""
    session_id: str = ""


@registry.register("todo.agent_interrupted", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInterrupted:
    """The daemon stopped or crashed while the agent ran; the attempt does not count."""

    todo_id: str
    attempt: int
    reason: str
    duration: float = 0.0  # agent time spent before it was lost (wasted: the attempt runs again)
    cost_usd: float | None = None


@registry.register("todo.verifying", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoVerifying:
    todo_id: str
    batch: str


@registry.register("todo.accepted", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoAccepted:
    todo_id: str
    batch: str
    commit: str  # on the verification branch
    review: str = ""  # why a person should look at it (it passed only with its own test edits)
    # Files where its change and an earlier todo's both only added lines at one place: batchd kept both
    # (its change rebased onto the newer head, then verified), so no agent ran again.
    resolved: tuple[str, ...] = ()


@registry.register("todo.rejected", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoRejected:
    """Its change broke the checks; it was left out (its files reverted)."""

    todo_id: str
    batch: str
    attempt: int
    command: tuple[str, ...]
    output_tail: str
    files_reverted: tuple[str, ...]
    action: str
    # Why, as people read it: "broke `npm test` (confirmed in 3 of 3 runs): a test", or passing only
    # with its own test edits. Records from before issue 14 have "" for a plain rejection.
    reason: str = ""
    confirmed: tuple[int, int] = (0, 0)  # (red runs, runs) of the command on the tree that condemned it
    failed_tests: tuple[str, ...] = ()  # the tests that failed there and never on the base, when named


@registry.register("todo.conflicted", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoConflicted:
    """It touched the same lines (or, strict mode, files) as a lower id, which won."""

    todo_id: str
    batch: str
    attempt: int
    winner: str
    files: tuple[str, ...]
    # What happens next: "resolve" (its agent gets its change rebased, with the conflict markers),
    # "redo" (from scratch on the new head), "strict" (the seed's rule: from scratch); "" in old logs.
    resolution: str = ""


@registry.register("todo.retry_scheduled", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoRetryScheduled:
    """Back to ready for another attempt; ``repair`` is the failure to show the agent."""

    todo_id: str
    next_attempt: int
    reason: str
    repair: str = ""
    by: str = "daemon"  # daemon | person
    # The commit whose change the next attempt starts with, rebased onto its new base (a repair or a
    # resolve: the agent fixes its own work instead of redoing it); "" = from scratch.
    carry: str = ""
    session_id: str = ""  # the agent session the next attempt continues ([agent] resume); "" = a new one
    mode: str = ""  # repair | resolve | redo | retry (a person's) | "" (old logs)


@registry.register("todo.blocked", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoBlocked:
    todo_id: str
    reason: str
    action: str


@registry.register("todo.cancelled", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoCancelled:
    todo_id: str
    reason: str
    by: str = "person"
    removed: bool = False  # its file was deleted (a new file with this id is a new todo)


@registry.register("todo.completed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class TodoCompleted:
    """Its phase commit (which renames the file to ``-complete-``) is on the target branch;
    or a person renamed it complete (``by="person"``, ``commit=""``)."""

    todo_id: str
    path: str
    commit: str
    phase: int | None = None
    by: str = "daemon"


# --- batch --------------------------------------------------------------------------------------


@registry.register("batch.planned", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPlanned:
    key: str
    phase: int
    todo_ids: tuple[str, ...]
    retry_of: str = ""


@registry.register("batch.started", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStarted:
    key: str
    base_sha: str
    todo_ids: tuple[str, ...]


@registry.register("batch.verifying", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchVerifying:
    """Intent: verify these candidates on top of ``base_sha``."""

    key: str
    base_sha: str
    candidates: tuple[str, ...]  # todo ids, priority order


@registry.register("batch.verify_run", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchVerifyRun:
    """One pass over the verify commands (for progress and counting)."""

    key: str
    run: int
    todo_ids: tuple[str, ...]
    passed: bool
    command: tuple[str, ...] = ()
    duration: float = 0.0
    baseline: bool = False
    sha: str = ""  # the tree tested (for a baseline: the base commit)
    # How each command that ran on this tree fared: (command key, runs, red runs). A command passed
    # when runs > reds; its red runs before the green one were flakes. Red runs whose only failures
    # were excused (below) are not counted as red. In a run that passed, a command with runs = reds
    # passed as known red: red in every run only by tests red on the base or the head (its excused
    # tests). Keys are ``flakes.command_key``.
    tries: tuple[tuple[str, int, int], ...] = ()
    flaked: bool = False  # some command was red and then green on this same tree: counted as a flake
    # The failing command's (red runs, runs) when the tree is red: "confirmed in 3 of 3 runs".
    confirmed: tuple[int, int] = (0, 0)
    failed_tests: tuple[str, ...] = ()  # red: the failing command's tests that failed, not excused
    # (command key, test id): a test that failed in one run on this tree and passed in a later one.
    flaky_tests: tuple[tuple[str, str], ...] = ()
    # (command key, test id): failures not counted, as the test is quarantined or was red on the base.
    excused: tuple[tuple[str, str], ...] = ()
    evidence: str = ""  # how the failing output named its tests (testevidence's runner), "" if not read


@registry.register("batch.verified", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchVerified:
    key: str
    head_sha: str
    accepted: tuple[str, ...]
    rejected: tuple[str, ...]
    conflicted: tuple[str, ...]
    failed: tuple[str, ...]
    runs: int
    # (command key, test id) that failed on head_sha and were excused there (quarantined, or red on
    # the base): red on the new head too, so they blame nobody built on it.
    known_red: tuple[tuple[str, str], ...] = ()


@registry.register("batch.paused", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchPaused:
    """The baseline (the batch's base without any change) is red: nothing can be blamed on agents."""

    key: str
    base_sha: str
    command: tuple[str, ...]
    output_tail: str


@registry.register("batch.resumed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchResumed:
    key: str
    by: str = "person"


@registry.register("batch.done", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class BatchDone:
    key: str


# --- phase --------------------------------------------------------------------------------------


@registry.register("phase.planned", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhasePlanned:
    number: int
    title: str
    commit_message: str
    batches: tuple[str, ...]
    final: bool = False  # the batch-less integration phase


@registry.register("phase.started", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseStarted:
    number: int
    base_sha: str


@registry.register("phase.rebased", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseRebased:
    """The branch moved (a person's commit, say the fix of a red baseline) before the phase accepted
    anything: the phase goes on from the branch's new head instead of the one it started from."""

    number: int
    base_sha: str
    previous: str


@registry.register("phase.committing", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseCommitting:
    """Intent: one commit of the phase's accepted changes, the renames and the status file."""

    number: int
    todo_ids: tuple[str, ...]
    message: str


@registry.register("phase.committed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseCommitted:
    number: int
    commits: tuple[str, ...]  # one (phase mode) or one per todo (todo mode), oldest first
    head_sha: str


@registry.register("phase.pushing", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhasePushing:
    number: int
    attempt: int
    sha: str


@registry.register("phase.pushed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhasePushed:
    number: int
    sha: str
    attempts: int
    branch: str = ""  # the remote branch it went to ("" in older logs: the run's branch)
    created: bool = False  # the remote had no such branch before: this push made it


@registry.register("phase.push_failed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhasePushFailed:
    number: int
    sha: str
    attempts: int
    reason: str
    output: str = ""  # git's whole message


@registry.register("phase.done", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseDone:
    number: int


@registry.register("phase.skipped", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSkipped:
    """Nothing of the phase was accepted: no commit and no push (an empty commit says nothing)."""

    number: int
    reason: str


# --- run ----------------------------------------------------------------------------------------


@registry.register("run.started", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    run_id: str
    branch: str
    base_sha: str
    plan_source: str = ""
    # The plan's trailing batch-less phases (the seed's "Phase 5: Hardening"): planned only when all
    # other work is done, so auto-planned phases can come before them and numbers stay in run order.
    final_titles: tuple[str, ...] = ()
    final_messages: tuple[str, ...] = ()
    # The scheduling policy of this run ("continuous" | "barrier"); "" in logs written before
    # policies existed, which were all barrier runs. Kept until the run reopens.
    schedule: str = ""


@registry.register("run.daemon_attached", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonAttached:
    """A daemon process took over the run (first start, or after a stop or crash)."""

    pid: int
    version: str
    sandbox: str = ""  # what confines agents (bubblewrap, or why nothing does)
    remote_url: str = ""  # where pushes go, pinned at start-up


@registry.register("run.daemon_crashed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonCrashed:
    """The daemon stopped on an unexpected error (a bug); ``place`` is where, ``todo_id`` the todo whose
    step it was in, if any. Three in a row at one place block that todo (a crash loop costs agents)."""

    error: str
    place: str
    todo_id: str = ""
    traceback: str = ""


@registry.register("run.paused", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunPaused:
    reason: str
    by: str = "person"


@registry.register("run.resumed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunResumed:
    by: str = "person"


@registry.register("run.stopping", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunStopping:
    reason: str


@registry.register("run.completed", 2)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunCompleted:
    """The verdict: success only when every planned todo is complete, checks are green, every batch
    done and the last push went out. ``not_complete`` says what each other todo is, as
    ``(id, state)`` pairs (``blocked``, ``rejected``, ``invalid``, ``cancelled``, ``pending``, ...;
    ``no todo file`` for a planned id no file has); ``removed`` lists todos whose file a person
    deleted or renamed away (they no longer count); ``unpushed`` says why the last push did not go out."""

    success: bool
    checks_green: bool
    complete: tuple[str, ...]
    not_complete: tuple[tuple[str, str], ...] = ()
    removed: tuple[str, ...] = ()
    detail: str = ""
    unpushed: str = ""


@registry.upcaster("run.completed", 1)
def _run_completed_v1(p: Json) -> Json:
    """v1 listed unfinished todos as ``missing`` without saying why: their state was not recorded."""
    data = {k: v for k, v in p.items() if k != "missing"}
    data["not_complete"] = [[t, "unknown"] for t in p.get("missing", ())]
    return data


@registry.register("run.budget_reached", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunBudgetReached:
    """A run budget is used up: no new agent starts, running ones finish, the run ends (exit 1)."""

    budget: str  # the config key: "max_cost_usd" | "max_agent_minutes"
    limit: float
    used: float


@registry.register("run.reopened", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RunReopened:
    """New work arrived after the run completed (continuous mode)."""

    reason: str
    schedule: str = ""  # the policy from here on ("": unchanged)


@registry.register("run.request_opening", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOpening:
    """Intent: ``[batchd] open_request`` (``argv``, placeholders filled) runs once for ``branch``,
    pushed by phase ``phase``. Without an outcome after a restart it is never run again: it may have
    opened the request already."""

    branch: str
    phase: int
    argv: tuple[str, ...]


@registry.register("run.request_opened", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestOpened:
    """The request command exited 0; ``url`` is the last URL it printed ("" when it printed none)."""

    branch: str
    url: str
    output: str = ""


@registry.register("run.request_failed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RequestFailed:
    """The request command failed (exit code, not found, timeout, or batchd stopped while it ran): a
    warning, the run and its commits are not affected."""

    branch: str
    reason: str
    output: str = ""


# --- control (requests from the CLI; the daemon answers with domain events) -------------------


@registry.register("control.retry", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class RetryRequested:
    todo_id: str


@registry.register("control.cancel", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested:
    todo_id: str


@registry.register("control.pause", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PauseRequested:
    reason: str = "requested with batchd pause"


@registry.register("control.resume", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeRequested:
    pass


@registry.register("control.push", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class PushRequested:
    """``batchd push``: push the last phase commit again (after a failed push)."""


@registry.register("control.handled", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class ControlHandled:
    """The daemon acted on (or refused) the request at ``request_seq``; written with its effect."""

    request_seq: int
    outcome: str  # done | refused
    detail: str = ""
