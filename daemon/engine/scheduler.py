"""The run's steps, and the one place a tick asks a policy what to do.

Run -> phases in order (the plan's, then auto-planned ones, then the final batch-less phase). For
the current phase the configured policy decides (:mod:`daemon.engine.continuous` or
:mod:`daemon.engine.barrier`, both pure) and :mod:`daemon.engine.execute` carries the commands out;
the steps every policy shares (the run's start, the final check and verdict, a phase's commit,
landing, push and finish) are here. Decisions are level-triggered: a restart resumes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog

from daemon.engine import barrier, continuous, phases, pushes, requests, state
from daemon.engine import commands as cmd
from daemon.engine.batches import check_runner
from daemon.engine.execute import close_batches, execute, observe
from daemon.engine.flaketext import red_text
from daemon.engine.runner import Daemon
from daemon.engine.state import DEAD_STATES, DONE_STATES, PRIORITY_ORDER, phase_head
from daemon.engine.verdict import amend_verdict, budget_hit, record_verdict
from daemon.intake.plan import auto_phases, plan_batches
from daemon.intake.todofile import Priority, TodoFile, TodoStatus, id_key
from daemon.world import gitops
from daemon.world.checks import CheckResult
from daemon.world.verify import check_baseline
from statemachine import events as ev
from statemachine.tables import PhaseState, RunState, TodoState
from statemachine.views import PhaseView, TodoView
from store import Append

log = structlog.get_logger(__name__)


# --- the run ------------------------------------------------------------------------------------


def advance(d: Daemon) -> None:
    run = d.proj.run
    if run.state == RunState.IDLE:
        start_run(d)
        return
    if run.state not in (RunState.RUNNING, RunState.COMPLETED):
        return
    # The run branch's pull request, whatever the policy is doing (land = "branch").
    execute(d, requests.decide(d.proj, d.config.batchd, busy=d.jobs, accepting=not d.stopping))
    phase = current_phase(d)
    if run.state == RunState.RUNNING and phase is not None and not phase.final:
        # The run's own policy: a reloaded config changes it only when the run next reopens.
        policy = continuous if run.schedule == "continuous" else barrier
        commands = policy.decide(d.proj, observe(d))
        is_checked = d.final_checked is not None and d.final_checked[0] == phase.number
        commit = any(isinstance(c, cmd.CommitPhase) for c in commands)
        if commit and not is_checked and ends_the_run(d, phase):
            # The run's last commit: the final check comes first, so that the commit's status file
            # carries the verdict and the checkout is clean after the run (see final_check).
            d.emit(*close_batches(d, phase))
            final_check(d, phase)
            commands = [c for c in commands if not isinstance(c, cmd.CommitPhase)]
        execute(d, commands)
        return
    if phase is not None:
        advance_phase(d, phase)
        return
    if run.state == RunState.COMPLETED:
        amend_verdict(d)  # a todo file removed since the verdict no longer counts
        if run.paused:
            return  # paused while idle: todos dropped meanwhile wait for `batchd resume`
        # The plan's further final phases (commit points after the check) come first. Then todos
        # dropped (or retried) after the run completed reopen it; under --once too, so a later
        # `run --once` does that work instead of exiting on the old verdict.
        if not plan_final(d):
            plan_more(d)
        return
    if plan_more(d) or plan_final(d):
        return
    checked, d.final_checked = d.final_checked, None
    newest = max(d.proj.phases, default=None)
    if checked is not None and checked[0] == newest:
        # The last phase was checked before its commit (that commit's status file has this verdict).
        record_verdict(d, checks_green=checked[1], detail=checked[2])
        return
    final_check(d, None)


def start_run(d: Daemon) -> None:
    """Record the run, and import the plan as phases and batches.

    The plan's trailing batch-less phases (the final integration check) are kept in the run's
    start event and planned last, once nothing else is left (see :func:`plan_final`).
    """
    head = gitops.rev_parse(d.root, d.config.batchd.branch)
    plan_path = d.config.plan_path
    appends: list[Append | tuple[str, Sequence[object]]] = []
    final: list[tuple[str, str]] = []
    if plan_path is not None:
        from daemon.intake.plan import load_plan

        plan = load_plan(plan_path)
        last_with_batches = max((i for i, p in enumerate(plan.phases) if p.batches), default=-1)
        for index, phase in enumerate(plan.phases):
            if index > last_with_batches:
                final.append((phase.title, phase.commit_message or ""))
                continue
            appends.append(
                (
                    ev.phase_stream(phase.number),
                    [
                        ev.PhasePlanned(
                            number=phase.number,
                            title=phase.title,
                            commit_message=phase.commit_message or "",
                            batches=tuple(b.key for b in phase.batches),
                        )
                    ],
                )
            )
            for batch in phase.batches:
                appends.append(
                    (
                        ev.batch_stream(batch.key),
                        [
                            ev.BatchPlanned(
                                key=batch.key,
                                phase=phase.number,
                                todo_ids=tuple(id_key(t) for t in batch.todo_ids),
                            )
                        ],
                    )
                )
    started = ev.RunStarted(
        run_id=uuid.uuid4().hex[:12],
        branch=d.config.batchd.branch,
        base_sha=head,
        plan_source=str(plan_path or ""),
        final_titles=tuple(title for title, _ in final),
        final_messages=tuple(message for _, message in final),
        schedule=d.config.batchd.schedule,
    )
    d.emit((ev.RUN_STREAM, [started]), *appends)
    log.info("run_started", run_id=d.proj.run.run_id, plan=str(plan_path or ""))


def plan_final(d: Daemon) -> bool:
    """Plan the next of the plan's final batch-less phases, numbered after every phase so far."""
    run = d.proj.run
    planned = sum(1 for p in d.proj.phases.values() if p.final)
    if planned >= len(run.final_titles):
        return False
    number = max((p.number for p in d.proj.phases.values()), default=0) + 1
    d.emit_one(
        ev.phase_stream(number),
        ev.PhasePlanned(
            number=number,
            title=run.final_titles[planned],
            commit_message=run.final_messages[planned],
            batches=(),
            final=True,
        ),
    )
    return True


def current_phase(d: Daemon) -> PhaseView | None:
    return state.current_phase(d.proj, held=budget_hit(d) is not None)


def unplanned_ready(d: Daemon) -> list[str]:
    """Ready todos to plan; none while a run budget is reached (nothing would start them: they wait
    and the run ends with a verdict that lists them, see :mod:`daemon.engine.budget`)."""
    return state.unplanned_ready(d.proj, held=budget_hit(d) is not None)


def plan_more(d: Daemon) -> bool:
    """Auto-plan ready todos nobody planned into a new phase; False when there is nothing to plan."""
    ready = unplanned_ready(d)
    if not ready:
        return False
    done = {t.todo_id for t in d.proj.todos.values() if t.state in DONE_STATES}
    batches, blocked = auto_batches(d, ready, done)
    appends: list[Append | tuple[str, Sequence[object]]] = []
    for todo_id, reason in blocked.items():
        appends.append(
            (
                ev.todo_stream(todo_id),
                [
                    ev.TodoBlocked(
                        todo_id=todo_id,
                        reason=reason,
                        action="fix or queue the dependency, then `batchd retry "
                        + d.proj.shown(todo_id)
                        + "`",
                    )
                ],
            )
        )
    if not batches:
        d.emit(*appends)
        return bool(appends)
    # As `batchd plan show` shows it: one phase per batch. The barrier records only the first now
    # and plans the rest again once it is done, from what happened to it (and what arrived). The
    # continuous policy gets them all at once, as from a plan: a free slot takes the next phase's
    # todos while this one is verified and committed (commits still in order).
    reopening = d.proj.run.state == RunState.COMPLETED
    schedule = d.config.batchd.schedule if reopening else d.proj.run.schedule
    planned = auto_phases(batches, after=max((p.number for p in d.proj.phases.values()), default=0))
    for phase in planned if schedule == "continuous" else planned[:1]:
        appends.append(
            (
                ev.phase_stream(phase.number),
                [
                    # No commit message: the commit names the todos accepted (phases.message_for).
                    ev.PhasePlanned(
                        number=phase.number,
                        title=phase.title,
                        commit_message="",
                        batches=tuple(b.key for b in phase.batches),
                    )
                ],
            )
        )
        for batch in phase.batches:
            appends.append(
                (
                    ev.batch_stream(batch.key),
                    [ev.BatchPlanned(key=batch.key, phase=phase.number, todo_ids=batch.todo_ids)],
                )
            )
    if reopening:
        reopened = ev.RunReopened(reason="new todos: " + ", ".join(ready), schedule=d.config.batchd.schedule)
        appends.insert(0, (ev.RUN_STREAM, [reopened]))
    d.emit(*appends)
    return True


def auto_batches(d: Daemon, ready: Sequence[str], done: set[str]) -> tuple[list[list[str]], dict[str, str]]:
    """Priority, then id; a todo only after its dependencies; no two todos with overlapping files in
    one batch; at most ``max_parallel`` per batch (``plan.plan_batches``). Returns the batches and
    the todos that can never run, with why."""
    todos = d.proj.todos
    blocked: dict[str, str] = {}
    for todo_id in ready:
        for dep in todos[todo_id].dependencies:
            dep_view = todos.get(id_key(dep))
            if dep_view is None or dep_view.state in DEAD_STATES or dep_view.state == TodoState.PENDING:
                state = "unknown" if dep_view is None else dep_view.state
                blocked[todo_id] = f"dependency #{dep} is {state}"
    candidates = [as_todo_file(d, todos[t]) for t in ready if t not in blocked]
    batches = plan_batches(candidates, done=done, max_parallel=d.config.batchd.max_parallel)
    planned = {t for batch in batches for t in batch}
    for todo in candidates:
        if todo.id not in planned:
            blocked[todo.id] = "its dependencies can never be accepted in this run"
    return [list(batch) for batch in batches], blocked


def as_todo_file(d: Daemon, view: TodoView) -> TodoFile:
    """The planner works on todo files; the log knows everything it reads of one."""
    return TodoFile(
        id=view.todo_id,
        status=TodoStatus.READY,
        priority=Priority(view.priority) if view.priority in PRIORITY_ORDER else Priority.P3,
        description="",
        title=view.title,
        path=d.root / view.path,
        dependencies=tuple(view.dependencies),
        files=tuple(view.files),
    )


# --- phases -------------------------------------------------------------------------------------


def advance_phase(d: Daemon, phase: PhaseView) -> None:
    """The steps of a phase every policy shares: the final phases' start and check, then commit,
    landing, push and finish."""
    state = phase.state
    if state == PhaseState.PENDING:
        if d.proj.run.state != RunState.RUNNING and not phase.final:
            return
        head = gitops.rev_parse(d.root, d.config.batchd.branch)
        d.emit_one(ev.phase_stream(phase.number), ev.PhaseStarted(number=phase.number, base_sha=head))
    elif state == PhaseState.RUNNING and phase.final:
        final_check(d, phase)
    elif state == PhaseState.COMMITTING:
        phases.commit(d, phase)
    elif state == PhaseState.COMMITTED:
        phases.land(d, phase)
    elif state == PhaseState.PUSHING:
        pushes.push(d, phase)
    elif state in (PhaseState.PUSHED, PhaseState.PUSH_FAILED):
        phases.finish(d, phase)


# --- the end ------------------------------------------------------------------------------------


def ends_the_run(d: Daemon, phase: PhaseView) -> bool:
    """``phase`` is the run's last commit: no other phase to come, no final phase, no todo to plan."""
    if d.proj.run.final_titles:
        return False  # the plan's final phases carry the verdict
    others = any(p.state != PhaseState.DONE for p in d.proj.phases.values() if p.number != phase.number)
    return not others and not unplanned_ready(d)


def final_check(d: Daemon, phase: PhaseView | None) -> None:
    """Every verify command on the final tree, then the verdict (``run.completed``).

    ``phase`` is the phase whose commit follows: a final phase (the verdict is recorded now, and its
    commit carries it), or the last phase of a run without one (checked on its tested tree before
    it is committed: the result waits in ``d.final_checked``, its commit's status file shows the
    verdict it gives, and the verdict is recorded once that phase is done, see :func:`advance`);
    None when every commit is made already. Either way the last commit's status file has the verdict.
    """
    if d.proj.run.state != RunState.RUNNING:
        if phase is not None and d.proj.run.state == RunState.COMPLETED:
            phases.start_commit(d, phase)
        return
    key = "final-check"
    if d.has_job(key):
        return
    runner = check_runner(d)  # no batch: quarantined tests excused, those red on the head once confirmed
    branch_head = gitops.rev_parse(d.root, d.config.batchd.branch)
    head = phase_head(d.proj, phase) if phase is not None and not phase.final else branch_head

    def work() -> CheckResult:
        return check_baseline(phases.ensure_verify_worktree(d, head), head, runner)

    def still_the_end() -> bool:
        """Work that arrived while the check ran (a dropped or retried todo, a new phase, a moved
        branch) makes its result stale: the next tick decides again instead of completing the run."""
        others = any(
            not p.final and p.state != PhaseState.DONE and (phase is None or p.number != phase.number)
            for p in d.proj.phases.values()
        )
        moved = gitops.rev_parse(d.root, d.config.batchd.branch) != branch_head
        return not (others or moved or unplanned_ready(d))

    def decided(passed: bool, detail: str) -> None:
        if not still_the_end():
            return
        if phase is not None and not phase.final:
            d.final_checked = (phase.number, passed, detail)
        else:
            record_verdict(d, checks_green=passed, detail=detail, commit_to_come=phase is not None)

    def done(result: CheckResult) -> None:
        failed = red_text(result.failed_command or (), result.confirmed, result.failed_tests)
        decided(result.passed, "" if result.passed else f"final check failed: {failed}")

    def crashed(error: BaseException) -> None:
        decided(False, f"final check crashed: {error}")

    d.submit(key, work, done, crashed)
