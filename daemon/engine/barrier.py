"""The barrier policy, the seed's way: ``decide(state, facts) -> commands``, a pure function.

``[batchd] schedule = "barrier"``. Phases in order, and in each its batches in order, each waiting
for the one before: planned -> (a baseline check when its base was never seen green) -> running
(agents, at most ``max_parallel`` at once) -> verifying (when every agent of the batch is done) ->
done, with retries or blocks recorded. Todos of the phase that are ready again (a retry, a
deferred todo) get one more batch; then the phase commit, or no commit when nothing was accepted.
"""

from __future__ import annotations

from daemon.engine import budget
from daemon.engine import commands as cmd
from daemon.engine.continuous import Facts, budget_hit
from daemon.engine.state import (
    DONE_STATES,
    accepted_in,
    after_running,
    current_phase,
    dependency_verdict,
    green_shas,
    phase_head,
    phase_members,
    skip_reason,
)
from daemon.intake.todofile import id_key
from statemachine.ids import id_order
from statemachine.projection import Projection
from statemachine.tables import BatchState, PhaseState, RunState, TodoState
from statemachine.views import BatchView, PhaseView


def decide(proj: Projection, facts: Facts) -> list[cmd.Command]:
    """The commands for the current non-final phase (nothing otherwise, as in every policy)."""
    if proj.run.state != RunState.RUNNING:
        return []
    phase = current_phase(proj)
    if phase is None or phase.final:
        return []
    held = budget.held_back(proj, budget_hit(proj, facts), facts.settling)
    return held + phase_step(proj, phase, facts)


def phase_step(proj: Projection, phase: PhaseView, facts: Facts) -> list[cmd.Command]:
    if phase.state == PhaseState.PENDING:
        return [cmd.StartPhase(number=phase.number, base_sha=facts.branch_head)]
    if phase.state != PhaseState.RUNNING:
        return [cmd.shared_step(phase.number, after_running(phase))]
    batch = next((proj.batches[k] for k in phase.batches if proj.batches[k].state != BatchState.DONE), None)
    if batch is not None:
        return batch_step(proj, phase, batch, facts)
    retry = retry_batch(proj, phase, facts)
    if retry:
        return retry
    if accepted_in(proj, phase):
        return [cmd.CommitPhase(number=phase.number)]
    members = [proj.todos[t] for t in phase_members(proj, phase) if t in proj.todos]
    return [cmd.SkipPhase(number=phase.number, reason=skip_reason(members))]


def batch_step(proj: Projection, phase: PhaseView, batch: BatchView, facts: Facts) -> list[cmd.Command]:
    key = batch.key
    moved = facts.moved_on and not accepted_in(proj, phase)
    if batch.state == BatchState.PLANNED:
        if moved and f"baseline-{key}" not in facts.busy:
            return [cmd.RebasePhase(number=phase.number, base_sha=facts.branch_head, previous=phase.base_sha)]
        return start_batch(proj, phase, batch, facts)
    if batch.state == BatchState.RUNNING:
        return run_batch(proj, phase, batch, facts)
    if batch.state == BatchState.VERIFYING:
        return [] if f"verify-{key}" in facts.busy else [cmd.ResumeVerify(key=key)]
    if batch.state == BatchState.VERIFIED:
        return [cmd.CloseBatch(key=key)]
    if batch.state == BatchState.PAUSED and moved:  # a person committed (a fix?): go on from there
        return [
            cmd.RebasePhase(
                number=phase.number, base_sha=facts.branch_head, previous=phase.base_sha, resume=key
            )
        ]
    return []


def start_batch(proj: Projection, phase: PhaseView, batch: BatchView, facts: Facts) -> list[cmd.Command]:
    """The batch starts with its todos that can run. While a run budget is reached it starts with
    none (and no baseline first: nothing would be tested on it), so the phase goes on to its end."""
    base = phase_head(proj, phase)
    held = budget_hit(proj, facts) is not None
    if not held and base not in green_shas(proj):
        return [] if f"baseline-{batch.key}" in facts.busy else [cmd.Baseline(key=batch.key, base_sha=base)]
    out: list[cmd.Command] = []
    to_run: list[str] = []
    members = set(phase_members(proj, phase))
    for todo_id in batch.todo_ids:
        todo = proj.todos.get(todo_id)
        if todo is None or todo.state != TodoState.READY:
            continue  # not ready (pending, invalid, missing, done): shown in the status file
        over = budget.block_over_cap(proj, todo, facts.limits)
        if over is not None:
            out.append(over)
            continue
        if held:
            continue  # waits, ready, for the budget (the verdict says so)
        verdict = dependency_verdict(proj, todo, members)
        if verdict == "ok":
            to_run.append(todo_id)
        elif verdict != "wait":
            out.append(
                cmd.BlockTodo(
                    todo_id=todo_id,
                    reason=verdict,
                    action=f"fix the dependency, then `batchd retry {proj.shown(todo_id)}`",
                )
            )
    out.append(cmd.StartBatch(key=batch.key, phase=phase.number, base_sha=base, todo_ids=tuple(to_run)))
    return out


def run_batch(proj: Projection, phase: PhaseView, batch: BatchView, facts: Facts) -> list[cmd.Command]:
    members = [t for t in proj.todos.values() if t.batch == batch.key]
    out: list[cmd.Command] = []
    if facts.accepting and budget_hit(proj, facts) is None:
        running = sum(1 for t in proj.todos.values() if t.state == TodoState.RUNNING)
        waiting = sorted((t.todo_id for t in members if t.state == TodoState.PLANNED), key=id_order)
        for todo_id in waiting:
            if running >= facts.max_parallel:
                break
            if todo_id in facts.settling:
                continue
            out.append(
                cmd.StartAgent(
                    todo_id=todo_id, batch=batch.key, phase=phase.number, base_sha=batch.base_sha, plan=False
                )
            )
            running += 1
    if out or any(t.state in (TodoState.PLANNED, TodoState.RUNNING) for t in members):
        return out
    # Todos already verifying belong in again: a batch paused by a failed verification and then
    # resumed starts over with the same candidates, or their work would be stranded.
    ready = (TodoState.AGENT_DONE, TodoState.VERIFYING)
    candidates = tuple(sorted((t.todo_id for t in members if t.state in ready), key=id_order))
    if not candidates:
        return [cmd.FinishBatch(key=batch.key)]
    return [cmd.VerifyBatch(key=batch.key, base_sha=batch.base_sha, candidates=candidates)]


def retry_batch(proj: Projection, phase: PhaseView, facts: Facts) -> list[cmd.Command]:
    """Todos of this phase that are ready again (retry scheduled, or deferred) get one more batch;
    those whose dependencies can no longer be accepted in this phase are blocked, and those whose
    agents cost their cap (``max_cost_usd_per_todo``). None while a run budget is reached: the
    phase ends without them."""
    members = phase_members(proj, phase)
    waiting = [t for t in members if t in proj.todos and proj.todos[t].state == TodoState.READY]
    capped = [c for c in (budget.block_over_cap(proj, proj.todos[t], facts.limits) for t in waiting) if c]
    if capped:
        return list(capped)
    if not waiting or budget_hit(proj, facts) is not None:
        return []
    done = {t.todo_id for t in proj.todos.values() if t.state in DONE_STATES}
    runnable = [
        t
        for t in waiting
        if all(id_key(d) in done or id_key(d) in waiting for d in proj.todos[t].dependencies)
    ]
    out: list[cmd.Command] = [
        cmd.BlockTodo(
            todo_id=t,
            reason="a dependency was not accepted in this phase",
            action=f"resolve its dependencies, then `batchd retry {proj.shown(t)}`",
        )
        for t in waiting
        if t not in runnable
    ]
    if runnable:
        n = sum(1 for k in phase.batches if ".r" in k) + 1
        out.append(
            cmd.PlanRetryBatch(
                phase=phase.number,
                key=f"{phase.number}.r{n}",
                todo_ids=tuple(sorted(runnable, key=id_order)),
                retry_of=phase.batches[-1],
            )
        )
    return out
