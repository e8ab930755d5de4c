"""Pure queries over the projection that the policies and the steps share (no git, no processes)."""

from __future__ import annotations

from collections.abc import Collection

from daemon.intake.todofile import id_key
from statemachine.ids import id_order
from statemachine.projection import Projection
from statemachine.tables import BatchState, PhaseState, TodoState
from statemachine.views import PhaseView, TodoView

DONE_STATES = frozenset({TodoState.ACCEPTED, TodoState.COMPLETE})
DEAD_STATES = frozenset({TodoState.BLOCKED, TodoState.CANCELLED, TodoState.INVALID})
# A member of a phase in one of these still has work ahead of it: the phase cannot be committed.
OPEN_STATES = frozenset(
    {
        TodoState.READY,
        TodoState.PLANNED,
        TodoState.RUNNING,
        TodoState.AGENT_DONE,
        TodoState.VERIFYING,
        TodoState.AGENT_FAILED,
        TodoState.REJECTED,
        TodoState.CONFLICTED,
    }
)
PRIORITY_ORDER = {"p1": 0, "p2": 1, "p3": 2}
GROUP_MARK = ".v"  # verification groups of the continuous policy: "<phase>.v<n>"


def is_group(key: str) -> bool:
    """A batch that is "what was verified together" (continuous policy), not one of the plan's."""
    return GROUP_MARK in key


def ordered_phases(proj: Projection) -> list[PhaseView]:
    return sorted(proj.phases.values(), key=lambda p: (p.final, p.number))


def phase_members(proj: Projection, phase: PhaseView) -> list[str]:
    """The todos planned into the phase, in plan order (batch by batch)."""
    seen: dict[str, None] = {}
    for key in phase.batches:
        for todo_id in proj.batches[key].todo_ids:
            seen[todo_id] = None
    return list(seen)


def plan_order(proj: Projection, phase: PhaseView) -> list[tuple[str, str]]:
    """(todo id, plan batch key) of the phase in plan order: its batches in order, each as planned."""
    seen: dict[str, str] = {}
    for key in phase.batches:
        if is_group(key):
            continue
        batch = proj.batches[key]
        for todo_id in (*batch.planned_ids, *batch.todo_ids):
            seen.setdefault(todo_id, key)
    return list(seen.items())


def green_shas(proj: Projection) -> set[str]:
    """Commits whose tree passed the checks (batch heads, baselines, phase commits built from them)."""
    green: set[str] = set()
    for batch in proj.batches.values():
        if batch.head_sha:
            green.add(batch.head_sha)
        green.update(batch.green_bases)
    for phase in proj.phases.values():
        green.update(phase.commits)
        if phase.head_sha:
            green.add(phase.head_sha)
        if phase.pushed_sha:
            green.add(phase.pushed_sha)
    return green


def phase_head(proj: Projection, phase: PhaseView) -> str:
    """The phase's current head: the verified result of the last finished batch that accepted a
    change, or the phase's base (which moves with the branch until something is accepted)."""
    head = phase.base_sha
    for key in phase.batches:
        batch = proj.batches[key]
        if batch.state == BatchState.DONE and batch.head_sha and batch.accepted:
            head = batch.head_sha
    return str(head)


def accepted_in(proj: Projection, phase: PhaseView) -> list[str]:
    """The phase's accepted todos in the order their commits sit on the verification branch."""
    out: list[str] = []
    for key in phase.batches:
        out.extend(t for t in proj.batches[key].accepted if t not in out)
    return out


def newest_head(proj: Projection) -> str:
    """Where new work starts: the newest verified head of the latest phase that started (its commit
    once made, else its head); "" before any phase started. A phase pushed again later (`batchd
    push`) does not take new work back to its older tree."""
    started = [p for p in ordered_phases(proj) if not p.final and p.state != PhaseState.PENDING]
    if not started:
        return ""
    phase = started[-1]
    if phase.state != PhaseState.RUNNING and phase.head_sha:
        return phase.head_sha
    return phase_head(proj, phase)


def unplanned_ready(proj: Projection, *, held: bool = False) -> list[str]:
    """Ready todos no unfinished phase names, by priority then id (the auto-planner's input). None
    while a run budget is reached (``held``): they wait, and the run goes on to its verdict."""
    if held:
        return []
    # A batch of a finished phase runs nothing more: a todo it named that is ready again (blocked,
    # then `batchd retry`) must be planned anew, or it would wait forever.
    done_phases = {p.number for p in proj.phases.values() if p.state == PhaseState.DONE}
    named = {t for b in proj.batches.values() if b.phase not in done_phases for t in b.todo_ids}
    return sorted(
        (t.todo_id for t in proj.todos.values() if t.state == TodoState.READY and t.todo_id not in named),
        key=lambda i: (PRIORITY_ORDER.get(proj.todos[i].priority, 9), id_order(i)),
    )


def current_phase(proj: Projection, *, held: bool = False) -> PhaseView | None:
    """The first phase not done, in order; None when auto-planned work must come first (none does
    while a run budget is reached: ``held``)."""
    for phase in ordered_phases(proj):
        if phase.state != PhaseState.DONE:
            waiting = phase.final and phase.state in (PhaseState.PENDING, PhaseState.RUNNING)
            if waiting and unplanned_ready(proj, held=held):
                return None  # auto-planned phases go before the final one (and its check again)
            return phase
    return None


def dependency_verdict(
    proj: Projection, todo: TodoView, planned: Collection[str], *, open_only: bool = False
) -> str:
    """ok | wait (a dependency in ``planned`` may still be accepted) | why the todo can never run.

    ``open_only``: wait only for a dependency with work ahead of it (ready, running, verifying...);
    one that is pending (or otherwise not moving) blocks the todo at once, for a policy that has
    no later retry batch to find out.
    """
    verdict = "ok"
    for dep in todo.dependencies:
        key = id_key(dep)
        view = proj.todos.get(key)
        if view is None:
            return f"dependency #{dep} has no todo file"
        if view.state in DONE_STATES:
            continue
        if view.state in DEAD_STATES:
            return f"dependency #{dep} is {view.state}"
        if key not in planned:
            where = "move it to an earlier batch"
            return f"dependency #{dep} is {view.state} and not planned before it ({where})"
        if open_only and view.state not in OPEN_STATES:
            return f"dependency #{dep} is {view.state}"
        verdict = "wait"
    return verdict


def skip_reason(members: list[TodoView]) -> str:
    """Why a phase makes no commit: what became of each of its todos."""
    by_state: dict[str, list[str]] = {}
    for todo in members:
        by_state.setdefault(str(todo.state), []).append(f"#{todo.todo_id}")
    detail = "; ".join(f"{state}: {', '.join(ids)}" for state, ids in sorted(by_state.items()))
    return "nothing was accepted" + (f" ({detail})" if detail else "")


def batch_at_work(proj: Projection, phase: PhaseView) -> str:
    """The phase's batch at work (under the continuous policy, a verification group), else the next
    one not done, else ""."""
    open_keys = [k for k in phase.batches if proj.batches[k].state != BatchState.DONE]
    busy = (BatchState.RUNNING, BatchState.VERIFYING, BatchState.PAUSED)
    return next((k for k in open_keys if proj.batches[k].state in busy), open_keys[0] if open_keys else "")


def after_running(phase: PhaseView) -> str:
    """The step of a phase past its work, shared by every policy: ``commit`` | ``land`` | ``push`` |
    ``finish`` | "" (none: the phase is not that far, or done)."""
    return {
        PhaseState.COMMITTING: "commit",
        PhaseState.COMMITTED: "land",
        PhaseState.PUSHING: "push",
        PhaseState.PUSHED: "finish",
        PhaseState.PUSH_FAILED: "finish",
    }.get(PhaseState(phase.state), "")


def run_branch(run_id: str) -> str:
    """Where a run's phase commits are pushed with ``land = "branch"`` (the one spelling of it)."""
    return f"batchd/run-{run_id}"
