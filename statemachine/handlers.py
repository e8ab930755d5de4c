"""One small pure handler per event type: ``handler(projection, view, payload, event)``.

A handler only copies payload fields into the view (and, for a few events, the projection's counters
or a related view; ``batch.verify_run`` also feeds the flake model, :mod:`statemachine.flakes`). The
move itself is checked by the fold in :data:`tables.NEXT_STATE` before the handler runs and made after
it, so ``view.state`` in a handler is still the state the event left.
Handlers read payload dicts (as decoded from the log's JSON, or as the registry encodes an event)
rather than event dataclasses: this is the fold's hot path.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from statemachine.economy import budget_amount
from statemachine.flakes import command_key
from statemachine.views import AttemptRecord, BatchView, PhaseView, RunView, TodoView, verdict_of

if TYPE_CHECKING:
    from statemachine.projection import Projection
    from store import StoredEvent

Payload = dict[str, Any]
Handler = Callable[["Projection", Any, Payload, "StoredEvent"], None]

HANDLERS: dict[str, Handler] = {}


def on(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


_MAX_AGENT_COMMITS = 1000  # per todo, all attempts
_MAX_SUM = 1e12


def _float(value: Any) -> float:
    """A number from a payload; what cannot be a sum (infinite, not a number) counts as 0."""
    number = 0.0 if value is None else float(value)
    return number if math.isfinite(number) else 0.0


# --- todo ---------------------------------------------------------------------------------------


def _file_fields(t: TodoView, p: Payload) -> None:
    t.path = p["path"]
    t.title = p["title"]
    t.priority = p["priority"]
    t.digest = p["digest"]
    t.dependencies = tuple(p.get("dependencies", ()))
    t.files = tuple(p.get("files", ()))


def _clear_problem(t: TodoView) -> None:
    t.problem = t.reason = t.action = t.output_tail = ""
    t.files_reverted = ()


@on("todo.recorded")
def _recorded(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    _file_fields(t, p)
    _clear_problem(t)


@on("todo.queued")
def _queued(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    _file_fields(t, p)
    _clear_problem(t)


@on("todo.updated")
def _updated(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    _file_fields(t, p)


@on("todo.invalid")
def _invalid(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.path = p["path"]
    t.problem = "invalid"
    t.reason = p["reason"]
    t.action = p["hint"]


@on("todo.planned")
def _planned(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.batch = p["batch"]
    t.phase = p["phase"]


@on("todo.agent_started")
def _agent_started(pr: Projection, t: TodoView, p: Payload, e: StoredEvent) -> None:
    if pr.run.budget:
        # An agent starts, so no budget stops agents now (its limit was raised by a reload): the
        # status stops saying so. Reached again, it is recorded again.
        pr.run.budget = pr.run.budget_detail = ""
        pr.run.budget_limit = 0.0
    t.attempt = p["attempt"]
    t.batch = p["batch"]
    t.worktree = p["worktree"]
    t.branch = p["branch"]
    t.base_sha = p["base_sha"]
    t.log_path = p["log_path"]
    t.token = p.get("token", "")
    t.agent_started_at = e.recorded_at
    # The earlier attempt's work goes on in this one: only when its workspace really got that change,
    # and only the attempt whose own change it is (a failed resolve hands on the change it was given).
    carried = p.get("carried", "")
    last = t.history[-1] if t.history else None
    if carried and last is not None and last.outcome in ("conflicted", "rejected") and not last.kept:
        t.history[-1] = last._replace(kept=True)
    t.pid = t.pgid = t.start_ticks = None
    t.exit_path = ""
    t.agent_commit = ""
    t.agent_files = ()
    t.dropped = t.warnings = t.test_edits = ()
    t.note = t.review = ""
    pr.agents_started += 1


@on("todo.agent_spawned")
def _agent_spawned(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.pid = p["pid"]
    t.pgid = p["pgid"]
    t.start_ticks = p.get("start_ticks")
    t.exit_path = p.get("exit_path", "")


def _agent_ended(t: TodoView, p: Payload) -> None:
    t.pid = t.pgid = None
    t.last_duration = _float(p.get("duration"))
    t.agent_seconds += t.last_duration
    cost = p.get("cost_usd")
    t.last_cost_usd = None if cost is None else _float(cost)
    # A sum that overflows (two absurd costs) would make the snapshot unwritable: it stays finite.
    t.cost_usd = min(t.cost_usd + _float(cost), _MAX_SUM)


@on("todo.agent_finished")
def _agent_finished(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    _agent_ended(t, p)
    t.agent_commit = p["commit"]
    t.agent_files = tuple(p["files"])
    t.dropped = tuple(p.get("dropped", ()))
    t.warnings = tuple(p.get("warnings", ()))
    t.test_edits = tuple(p.get("test_edits", ()))
    t.note = p.get("note", "")
    summary = p.get("summary") or {}
    old = summary.get("session_id") if isinstance(summary, dict) else None  # logs before the field
    t.last_session_id = p.get("session_id") or (old if isinstance(old, str) else "")
    t.recovered = bool(p.get("recovered", False))
    t.cost_simulated = t.cost_simulated or (isinstance(summary, dict) and summary.get("simulated") is True)
    made = [c for c in p.get("agent_commits", ()) if c not in t.agent_commits]
    t.agent_commits = (*t.agent_commits, *made)[-_MAX_AGENT_COMMITS:]


@on("todo.agent_failed")
def _agent_failed(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    _agent_ended(t, p)
    t.last_session_id = p.get("session_id", "")
    t.attempts_used += 1
    t.problem = "agent_failed"
    t.reason = f"{p['reason']}: {p['detail']}" if p["detail"] else p["reason"]
    t.output_tail = p.get("log_tail", "")
    t.history.append(AttemptRecord(p["attempt"], "agent_failed", t.reason, t.last_duration, t.last_cost_usd))


@on("todo.agent_interrupted")
def _agent_interrupted(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    # The attempt number stays: the re-run is the same attempt, and it is not counted as used. Its
    # agent time (when known) is spent all the same: it is in the totals, and wasted.
    _agent_ended(t, p)
    record = AttemptRecord(p["attempt"], "interrupted", p["reason"], t.last_duration, t.last_cost_usd)
    t.history.append(record)


@on("todo.verifying")
def _verifying(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.batch = p["batch"]


@on("todo.accepted")
def _accepted(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.accepted_commit = p["commit"]
    t.review = p.get("review", "")
    t.resolved = tuple(p.get("resolved", ()))
    t.history.append(AttemptRecord(t.attempt, "accepted", "", t.last_duration, t.last_cost_usd))


@on("todo.rejected")
def _rejected(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.attempts_used += 1
    t.problem = "rejected"
    t.reason = p.get("reason") or f"`{' '.join(p['command'])}` failed"
    t.output_tail = p["output_tail"]
    t.files_reverted = tuple(p["files_reverted"])
    t.action = p["action"]
    t.history.append(AttemptRecord(p["attempt"], "rejected", t.reason, t.last_duration, t.last_cost_usd))


@on("todo.conflicted")
def _conflicted(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    if p.get("resolution", ""):
        t.conflicts_used += 1  # nobody's fault: not an attempt used (max_conflict_retries bounds them)
    else:
        t.attempts_used += 1  # a log from before resolutions: its decisions counted conflicts so
    t.problem = "conflicted"
    t.reason = f"conflicts with {p['winner'] or 'an earlier change'} on {', '.join(p['files'])}"
    t.history.append(AttemptRecord(p["attempt"], "conflicted", t.reason, t.last_duration, t.last_cost_usd))


@on("todo.retry_scheduled")
def _retry(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.attempt = p["next_attempt"]
    t.repair = p.get("repair", "")
    t.carry = p.get("carry", "")
    t.session_id = p.get("session_id", "")
    t.retry_mode = p.get("mode", "")
    if p.get("by", "daemon") == "person":
        t.attempts_used = t.conflicts_used = 0  # a person's retry grants a fresh budget of attempts
    _clear_problem(t)


@on("todo.blocked")
def _blocked(pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.problem = "blocked"
    t.reason = p["reason"]
    t.action = p["action"]
    if pr.run.crash_todo == t.todo_id:
        _clear_crashes(pr.run)  # the crash loop is broken: this todo no longer runs


@on("todo.cancelled")
def _cancelled(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    # A deleted (or renamed away) file: the todo is gone, not a cancellation that counts against the run.
    t.problem = "removed" if p.get("removed") else "cancelled"
    t.reason = p["reason"]
    t.action = ""


@on("todo.completed")
def _completed(_pr: Projection, t: TodoView, p: Payload, _e: StoredEvent) -> None:
    t.path = p["path"]
    t.completed_commit = p["commit"]
    if p.get("phase") is not None:
        t.phase = p["phase"]
    t.pid = t.pgid = None
    _clear_problem(t)


# --- batch --------------------------------------------------------------------------------------


@on("batch.planned")
def _batch_planned(pr: Projection, b: BatchView, p: Payload, _e: StoredEvent) -> None:
    b.phase = p["phase"]
    b.todo_ids = b.planned_ids = tuple(p["todo_ids"])
    b.retry_of = p.get("retry_of", "")
    phase = pr.phase_view(b.phase)
    if b.key not in phase.batches:
        phase.batches = (*phase.batches, b.key)


@on("batch.started")
def _batch_started(_pr: Projection, b: BatchView, p: Payload, _e: StoredEvent) -> None:
    b.base_sha = p["base_sha"]
    b.todo_ids = tuple(p["todo_ids"])


@on("batch.verifying")
def _batch_verifying(_pr: Projection, b: BatchView, p: Payload, _e: StoredEvent) -> None:
    b.base_sha = p["base_sha"]
    b.candidates = tuple(p["candidates"])


def epoch_seconds(recorded_at: str) -> float:
    """A StoredEvent's ``recorded_at`` (``2026-01-01T00:00:00.000000Z``, as ``store.eventlog.format_time``
    writes it) as epoch seconds; a time without a zone is UTC. ``fromisoformat`` is C and takes about
    1 us, against 5-10 us for ``strptime``. A time that cannot be read (a hand-made row) is 0.0, which
    the flake model takes as "no time": nothing decays on it."""
    try:
        moment = datetime.fromisoformat(recorded_at)
    except (TypeError, ValueError):
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


# Tests remembered as red on a base: far more than MAX_TEST_FAILURES ever excuses at once.
MAX_KNOWN_RED = 1000


def _base_failures(b: BatchView, p: Payload) -> None:
    """A baseline run's failing tests join the batch's ``base_failures`` (those of its newest base)."""
    sha = p.get("sha", "")
    if sha != b.base_failures_sha:
        b.base_failures, b.base_failures_sha = (), sha  # a new base: the old one's failures say nothing of it
    # Flaky there, or excused there (quarantined): either way they fail on the base too.
    found = [(str(k), str(t)) for k, t in (*p.get("flaky_tests", ()), *p.get("excused", ()))]
    command = p.get("command", ())
    if not p["passed"] and command:
        key = command_key(command)
        found += [(key, str(t)) for t in p.get("failed_tests", ())]
    known = set(b.base_failures)
    new = [pair for pair in dict.fromkeys(found) if pair not in known]
    if new:
        b.base_failures = (*b.base_failures, *new)[:MAX_KNOWN_RED]


@on("batch.verify_run")
def _batch_verify_run(pr: Projection, b: BatchView, p: Payload, e: StoredEvent) -> None:
    if p.get("baseline", False):
        b.baseline_runs += 1
        if p["passed"] and p.get("sha"):
            b.green_bases = (*b.green_bases, p["sha"])
        _base_failures(b, p)
        if p["passed"]:
            # A base seen passing: what it shows red in every run is what is red on it now (a
            # person's fix on a new base clears the old head's list; a flake on it is not red).
            pr.known_red = _confirmed_red(p)
    else:
        b.runs += 1
    if not p["passed"]:
        b.last_failing_command = tuple(p.get("command", ()))
    pr.verify_runs += 1
    tries = p.get("tries", ())
    flaky = p.get("flaky_tests", ())
    excused = p.get("excused", ())
    if tries or flaky or excused:  # a record from before issue 14 teaches nothing (nor parses a time)
        pr.flakes.observe(tries, flaky, excused, epoch_seconds(e.recorded_at))


def _confirmed_red(p: Payload) -> tuple[tuple[str, str], ...]:
    """A passing run's tests red in every run of their command: a command of ``tries`` red in all
    its runs passed only as known red (see daemon.world.confirm), and its excused tests are those."""
    known = {str(key) for key, runs, reds in p.get("tries", ()) if runs > 0 and runs == reds}
    pairs = [(str(k), str(t)) for k, t in p.get("excused", ()) if str(k) in known]
    return tuple(dict.fromkeys(pairs))[:MAX_KNOWN_RED]


@on("batch.verified")
def _batch_verified(pr: Projection, b: BatchView, p: Payload, _e: StoredEvent) -> None:
    if p["accepted"]:
        # The new head's own failures, as its accepting run excused them: a test fixed on it drops out,
        # one still red there stays excused for the next batch, whose base it is.
        pr.known_red = tuple((str(k), str(t)) for k, t in p.get("known_red", ()))[:MAX_KNOWN_RED]
    b.head_sha = p["head_sha"]
    b.accepted = tuple(p["accepted"])
    b.rejected = tuple(p["rejected"])
    b.conflicted = tuple(p["conflicted"])
    b.failed = tuple(p["failed"])


@on("batch.paused")
def _batch_paused(_pr: Projection, b: BatchView, p: Payload, _e: StoredEvent) -> None:
    b.base_sha = p["base_sha"]
    b.pause_command = tuple(p["command"])
    b.pause_output = p["output_tail"]


@on("batch.resumed")
def _batch_resumed(_pr: Projection, b: BatchView, _p: Payload, _e: StoredEvent) -> None:
    b.pause_command = ()
    b.pause_output = ""


@on("batch.done")
def _batch_done(_pr: Projection, _b: BatchView, _p: Payload, _e: StoredEvent) -> None:
    return


# --- phase --------------------------------------------------------------------------------------


@on("phase.planned")
def _phase_planned(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.title = p["title"]
    ph.commit_message = p["commit_message"]
    planned = tuple(p["batches"])
    # Batches planned before their phase (batch.planned names the phase) keep their place after these.
    ph.batches = planned + tuple(k for k in ph.batches if k not in planned)
    ph.final = p.get("final", False)


@on("phase.started")
def _phase_started(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.base_sha = p["base_sha"]


@on("phase.rebased")
def _phase_rebased(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.base_sha = p["base_sha"]


@on("phase.committing")
def _phase_committing(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.todo_ids = tuple(p["todo_ids"])
    ph.commit_message = p["message"]


@on("phase.committed")
def _phase_committed(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.commits = tuple(p["commits"])
    ph.head_sha = p["head_sha"]


@on("phase.pushing")
def _phase_pushing(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.push_sha = p["sha"]
    ph.push_attempts = p["attempt"]


@on("phase.pushed")
def _phase_pushed(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.pushed_sha = p["sha"]
    ph.push_attempts = p["attempts"]
    ph.push_failed_reason = ph.push_output = ""
    ph.pushed_branch = p.get("branch", "")
    ph.push_created = p.get("created", False)


@on("phase.push_failed")
def _phase_push_failed(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.push_sha = p["sha"]
    ph.push_attempts = p["attempts"]
    ph.push_failed_reason = p["reason"]
    ph.push_output = p.get("output", "")


@on("phase.done")
def _phase_done(_pr: Projection, _ph: PhaseView, _p: Payload, _e: StoredEvent) -> None:
    return


@on("phase.skipped")
def _phase_skipped(_pr: Projection, ph: PhaseView, p: Payload, _e: StoredEvent) -> None:
    ph.skipped_reason = p["reason"]


# --- run ----------------------------------------------------------------------------------------


@on("run.started")
def _run_started(_pr: Projection, r: RunView, p: Payload, e: StoredEvent) -> None:
    r.run_id = p["run_id"]
    r.branch = p["branch"]
    r.base_sha = p["base_sha"]
    r.plan_source = p.get("plan_source", "")
    r.final_titles = tuple(p.get("final_titles", ()))
    r.final_messages = tuple(p.get("final_messages", ()))
    r.schedule = p.get("schedule", "") or "barrier"
    r.started_at = e.recorded_at


@on("run.daemon_attached")
def _run_attached(_pr: Projection, r: RunView, p: Payload, e: StoredEvent) -> None:
    r.pid = p["pid"]
    r.daemon_version = p["version"]
    r.attached_at = e.recorded_at
    r.sandbox = p.get("sandbox", "")
    # The URL the run started pushing to: a later start with another one is said, not forgotten.
    r.remote_url = r.remote_url or p.get("remote_url", "")
    r.stop_reason = ""
    if r.state == "stopping":
        # Attaching after a stop resumes the run (see tables): an old pause no longer holds.
        r.paused_reason = r.paused_by = ""


@on("run.daemon_crashed")
def _run_crashed(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    place, todo = p["place"], p.get("todo_id", "")
    same = r.crash_place == place and r.crash_todo == todo
    r.crash_count = r.crash_count + 1 if same else 1
    r.crash_place, r.crash_todo, r.crash_error = place, todo, p["error"]


def _clear_crashes(r: RunView) -> None:
    r.crash_place = r.crash_todo = r.crash_error = ""
    r.crash_count = 0


@on("run.paused")
def _run_paused(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.paused_reason = p["reason"]
    r.paused_by = p.get("by", "person")
    if p.get("by") == "daemon" and r.crash_count:
        _clear_crashes(r)  # a crash loop the daemon paused the run for: a person decides what next


@on("run.resumed")
def _run_resumed(_pr: Projection, r: RunView, _p: Payload, _e: StoredEvent) -> None:
    r.paused_reason = r.paused_by = ""


@on("run.stopping")
def _run_stopping(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.stop_reason = p["reason"]
    _clear_crashes(r)  # a clean stop ends a run of crashes


@on("run.budget_reached")
def _run_budget(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.budget = p["budget"]
    r.budget_limit = _float(p["limit"])
    r.budget_detail = budget_amount(r.budget, _float(p["used"]), r.budget_limit)


@on("run.completed")
def _run_completed(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.verdict = verdict_of(
        [
            p["success"],
            p["checks_green"],
            p["complete"],
            p.get("not_complete", ()),
            p.get("removed", ()),
            p.get("detail", ""),
            p.get("unpushed", ""),
        ]
    )


@on("run.reopened")
def _run_reopened(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.reopened_reason = p["reason"]
    r.schedule = p.get("schedule", "") or r.schedule
    r.verdict = None


@on("run.request_opening")
def _request_opening(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.request_state = "opening"
    r.request_branch = p["branch"]
    r.request_phase = p["phase"]
    r.request_url = r.request_detail = ""


@on("run.request_opened")
def _request_opened(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.request_state = "opened"
    r.request_url = p["url"]


@on("run.request_failed")
def _request_failed(_pr: Projection, r: RunView, p: Payload, _e: StoredEvent) -> None:
    r.request_state = "failed"
    r.request_detail = p["reason"]
