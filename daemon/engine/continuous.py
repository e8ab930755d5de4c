"""The continuous (work-conserving) policy: ``decide(state, facts) -> commands``, a pure function.

``[batchd] schedule = "continuous"``. A free agent slot takes the next ready todo at once, across the
plan's batches and phases: plan order first (phase, then batch, then the order in the plan), a todo
whose dependencies are not yet accepted waits, and two todos whose front-matter ``files`` overlap
never run at once. New work starts from the newest verified head.

Verification is a queue: whenever the verifier is free, everything of the current phase that
finished since the last run is verified together (a *group*, batch key ``<phase>.v<n>``), with the
same culprit search, conflicts and repairs as a batch. Work of a later phase that finished early
waits in the queue until its phase is the current one, so every phase commit is exactly a tree that
was verified, and phase commits are made strictly in plan order with the seed's messages: phase N
is committed once every one of its todos is accepted or settled for good and phase N-1 is done.

Nothing here reads git or starts a process: what the policy needs of the world (the branch's head,
the jobs in flight) comes in as :class:`Facts`, observed by the shell just before it asks.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.engine import budget
from daemon.engine import commands as cmd
from daemon.engine.state import (
    GROUP_MARK,
    OPEN_STATES,
    accepted_in,
    after_running,
    current_phase,
    dependency_verdict,
    green_shas,
    is_group,
    newest_head,
    ordered_phases,
    phase_head,
    phase_members,
    plan_order,
    skip_reason,
)
from daemon.intake.plan import files_overlap, norm_path
from statemachine.ids import id_order
from statemachine.projection import Projection
from statemachine.tables import BatchState, PhaseState, RunState, TodoState
from statemachine.views import BatchView, PhaseView


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """What the policy knows besides the projection, observed just before deciding."""

    max_parallel: int
    branch_head: str = ""
    # The branch's head descends from the current phase's base and is another commit (a person's).
    moved_on: bool = False
    busy: frozenset[str] = frozenset()  # keys of jobs in flight ("verify-1.v2", "baseline-1.v1")
    settling: frozenset[str] = frozenset()  # todos whose last agent is still being wound up
    accepting: bool = True  # new agents may start (not stopping)
    limits: budget.Limits = budget.NO_LIMITS  # the budgets in force (the configuration now)
    running_seconds: float = 0.0  # how long the agents running now have run, added up


def budget_hit(proj: Projection, facts: Facts) -> budget.Reached | None:
    """The run budget that keeps new agents from starting, if one is reached."""
    return budget.reached(proj, facts.limits, facts.running_seconds)


def decide(proj: Projection, facts: Facts) -> list[cmd.Command]:
    """The commands for the current non-final phase and the free agent slots (nothing otherwise: the
    run's start, the final phases and the end are the same in every policy)."""
    if proj.run.state != RunState.RUNNING:
        return []
    phase = current_phase(proj)
    if phase is None or phase.final:
        return []
    out: list[cmd.Command] = budget.held_back(proj, budget_hit(proj, facts), facts.settling)
    out += [
        cmd.SettleFailure(todo_id=t.todo_id)
        for t in sorted(proj.todos.values(), key=lambda t: id_order(t.todo_id))
        if t.state == TodoState.AGENT_FAILED and t.todo_id not in facts.settling
    ]
    if phase.state == PhaseState.PENDING:
        return [*out, cmd.StartPhase(number=phase.number, base_sha=facts.branch_head)]
    if phase.state == PhaseState.RUNNING:
        step = phase_step(proj, phase, facts)
        out += step
        if any(isinstance(c, cmd.RebasePhase) for c in step):
            return out  # new work waits for the new base
    else:
        out.append(cmd.shared_step(phase.number, after_running(phase)))
    return out + fill_slots(proj, phase, facts)


# --- the current phase: its verification queue and its commit --------------------------------------


def phase_step(proj: Projection, phase: PhaseView, facts: Facts) -> list[cmd.Command]:
    groups = [proj.batches[k] for k in phase.batches if is_group(k)]
    group = next((g for g in groups if g.state != BatchState.DONE), None)
    if rebase_due(proj, phase, group, facts):
        resume = group.key if group is not None and group.state == BatchState.PAUSED else ""
        return [
            cmd.RebasePhase(
                number=phase.number, base_sha=facts.branch_head, previous=phase.base_sha, resume=resume
            )
        ]
    head = phase_head(proj, phase)
    green = head in green_shas(proj)
    candidates = finished(proj, phase, group)
    members = [proj.todos[t] for t in phase_members(proj, phase) if t in proj.todos]
    # A run budget reached: a ready todo will not start, so it holds the phase up no longer (the
    # phase is committed with what was accepted, and the run goes on to its verdict). A planned one
    # is put back to ready first (budget.held_back).
    held = budget_hit(proj, facts) is not None
    open_work = any(t.state in OPEN_STATES and not (held and t.state == TodoState.READY) for t in members)
    idle = group is not None and group.state == BatchState.PLANNED and green and not candidates
    if group is not None and (open_work or not idle):
        return group_step(group, head, green=green, candidates=candidates, busy=facts.busy)
    if group is None and (candidates or (open_work and not green)):
        return [cmd.OpenGroup(key=f"{phase.number}{GROUP_MARK}{len(groups) + 1}", phase=phase.number)]
    if open_work:
        return []
    if accepted_in(proj, phase):
        return [cmd.CommitPhase(number=phase.number)]
    return [cmd.SkipPhase(number=phase.number, reason=skip_reason(members))]


def rebase_due(proj: Projection, phase: PhaseView, group: BatchView | None, facts: Facts) -> bool:
    """A person's commit on the branch before the phase accepted anything: the phase moves onto it
    (a red baseline heals this way), unless a verification of the old base is in flight."""
    if not facts.moved_on or accepted_in(proj, phase):
        return False
    if group is None or group.state == BatchState.PAUSED:
        return True
    return group.state == BatchState.PLANNED and f"baseline-{group.key}" not in facts.busy


def group_step(
    group: BatchView, head: str, *, green: bool, candidates: tuple[str, ...], busy: frozenset[str]
) -> list[cmd.Command]:
    key = group.key
    if group.state == BatchState.PLANNED:
        if f"baseline-{key}" in busy:
            return []
        if not green:
            return [cmd.Baseline(key=key, base_sha=head)]
        return [cmd.VerifyGroup(key=key, base_sha=head, candidates=candidates)] if candidates else []
    if group.state in (BatchState.RUNNING, BatchState.VERIFYING):
        return [] if f"verify-{key}" in busy else [cmd.ResumeVerify(key=key)]
    return []  # paused: a person's fix on the branch or `batchd resume` goes on


def finished(proj: Projection, phase: PhaseView, group: BatchView | None) -> tuple[str, ...]:
    """The phase's todos whose change awaits verification, in id order: agents finished since the
    last run, and those an open group was verifying when it paused (a crashed verification, then
    `batchd resume`): their work would be stranded otherwise."""
    ids = [t for t in phase_members(proj, phase) if t in proj.todos]

    def waiting(t: str) -> bool:
        todo = proj.todos[t]
        if todo.state == TodoState.AGENT_DONE:
            return True
        return group is not None and todo.state == TodoState.VERIFYING and todo.batch == group.key

    return tuple(sorted((t for t in ids if waiting(t)), key=id_order))


# --- free slots ---------------------------------------------------------------------------------


def fill_slots(proj: Projection, current: PhaseView, facts: Facts) -> list[cmd.Command]:
    """Start the next ready todos in plan order, as many as there are free slots, all from the
    newest verified head (none while that head was never seen green: its baseline comes first).
    None while a run budget is reached; a ready todo over its own cost cap is blocked instead."""
    base = newest_head(proj)
    if not facts.accepting or base not in green_shas(proj):
        return []
    held = budget_hit(proj, facts) is not None
    running = [t for t in proj.todos.values() if t.state == TodoState.RUNNING]
    free = facts.max_parallel - len(running)
    busy_files = {norm_path(f) for t in running for f in t.files}
    # The current phase while it runs, and phases not started yet. A todo of a phase already being
    # committed (retried by a person meanwhile) waits for it to be done: then it is planned anew.
    phases = [
        p
        for p in ordered_phases(proj)
        if not p.final and (p.state == PhaseState.PENDING or (p is current and p.state == PhaseState.RUNNING))
    ]
    order = [(phase, t, key) for phase in phases for t, key in plan_order(proj, phase)]
    out: list[cmd.Command] = []
    planned: set[str] = set()  # planned so far, in plan order: a dependency planned later never waits
    for phase, todo_id, batch_key in order:
        planned.add(todo_id)
        todo = proj.todos.get(todo_id)
        if todo is None or todo.state not in (TodoState.READY, TodoState.PLANNED):
            continue
        if todo_id in facts.settling:
            continue
        over = budget.block_over_cap(proj, todo, facts.limits)
        if over is not None:
            out.append(over)
            continue
        verdict = dependency_verdict(proj, todo, planned, open_only=True)
        if verdict not in ("ok", "wait"):
            out.append(
                cmd.BlockTodo(
                    todo_id=todo_id,
                    reason=verdict,
                    action=f"fix the dependency, then `batchd retry {proj.shown(todo_id)}`",
                )
            )
            continue
        files = [norm_path(f) for f in todo.files]
        if held or verdict == "wait" or free <= 0 or files_overlap(files, busy_files):
            continue
        out.append(
            cmd.StartAgent(
                todo_id=todo_id,
                batch=batch_key,
                phase=phase.number,
                base_sha=base,
                plan=todo.state == TodoState.READY,
            )
        )
        busy_files.update(files)
        free -= 1
    return out
