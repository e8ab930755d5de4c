"""``plans/EXECUTION-STATUS.md``: a projection of the log, rewritten after every batch.

Never edited by hand state: everything here is derived from the projected state, so the file can
be rebuilt at any time (``batchd replay`` shows the same). The ``## Failed/Blocked Todos`` table
follows the seed's columns exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from daemon.config import Config
from daemon.engine.flaketext import MAX_ROWS, command_rates, percent, quarantined_rows, rate_text
from daemon.engine.state import batch_at_work, run_branch
from daemon.exceptions import headline
from daemon.intake.todofile import id_order
from daemon.workspace import is_shared
from statemachine.economy import (
    RunEconomy,
    attempt_class,
    budget_text,
    cost_text,
    minutes_text,
    ratio_text,
    run_economy,
)
from statemachine.projection import Projection
from statemachine.tables import BatchState, PhaseState, TodoState
from statemachine.views import PhaseView, RunVerdict

PROBLEM_STATES = (
    TodoState.REJECTED,
    TodoState.CONFLICTED,
    TodoState.BLOCKED,
    TodoState.AGENT_FAILED,
    TodoState.INVALID,
)


def cell(text: object) -> str:
    """One Markdown table cell: no pipes or newlines from agent output may break the table."""
    value = str(text).replace("\r", " ").replace("\n", " ").replace("|", "\\|").strip()
    return value[:300] + "…" if len(value) > 300 else value


def short(sha: str) -> str:
    return sha[:10] if sha else "—"


def spent(minutes: float) -> str:
    return minutes_text(minutes) if minutes > 0 else "—"


# How the phase whose commit carries the status file is shown in it, and in the checkout after the
# run while nothing happened since (so that the checkout stays as committed: `git status` is clean).
COMMITTED_HERE = "committed (this status file is part of its commit)"


def carries_final_status(proj: Projection, phase: PhaseView) -> bool:
    """``phase`` made the run's last commit and nothing since changed what that commit's file says:
    the run is completed and the push (if any) went out."""
    if proj.run.verdict is None or not phase.head_sha or phase.push_failed_reason:
        return False
    newest = max((p.number for p in proj.phases.values() if p.head_sha), default=None)
    return phase.number == newest and phase.state in _COMMITTED_STATES


_COMMITTED_STATES = (PhaseState.COMMITTED, PhaseState.PUSHING, PhaseState.PUSHED, PhaseState.DONE)


def verdict_line(verdict: RunVerdict, proj: Projection) -> str:
    """'NOT COMPLETE (why); checks green; 3 complete; blocked: 282; rejected: 290; removed: 291'."""
    parts = [
        ("SUCCESS" if verdict.success else "NOT COMPLETE")
        + (f" ({verdict.detail})" if verdict.detail else "")
    ]
    if verdict.unpushed:
        parts.append(verdict.unpushed)
    parts.append(f"checks {'green' if verdict.checks_green else 'red'}")
    parts.append(f"{len(verdict.complete)} complete")
    parts.extend(f"{what}: {ids(todos, proj)}" for what, todos in by_state(verdict.not_complete).items())
    if verdict.removed:
        parts.append(f"removed (file deleted or renamed away): {ids(verdict.removed, proj)}")
    return "; ".join(parts)


def by_state(pairs: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    """``(todo id, state)`` pairs grouped by state, in the order the states first appear."""
    grouped: dict[str, list[str]] = {}
    for todo_id, state in pairs:
        grouped.setdefault(state, []).append(todo_id)
    return grouped


def phase_result(phase: PhaseView) -> str:
    if phase.skipped_reason:
        return f"done, no commit: {phase.skipped_reason}"
    parts = [str(phase.state)]
    if phase.head_sha:
        parts.append(f"commit `{short(phase.head_sha)}`")
    if phase.pushed_sha:
        parts.append(f"pushed `{short(phase.pushed_sha)}`")
    elif phase.push_failed_reason:
        parts.append(f"push failed: {phase.push_failed_reason}")
    return ", ".join(parts)


def landing_lines(proj: Projection, config: Config, committing: int | None) -> list[str]:
    """Where the work lands with land = "branch": the run branch and its pull request.

    The request is opened after a phase's push, so after the run's last commit there is no commit
    left to carry its line: it is shown from the next phase commit on (``batchd status`` shows it at
    once). Written earlier, the status file would differ from the one committed and leave the
    checkout modified after every run."""
    run = proj.run
    if config.batchd.land != "branch" or not config.batchd.remote or not run.run_id:
        return []
    lines = [f"- **Run branch:** `{run_branch(run.run_id)}` (`{config.batchd.branch}` is not pushed)"]
    later = [p.number for p in proj.phases.values() if p.head_sha] + [committing or 0]
    if max(later) <= run.request_phase:
        return lines
    if run.request_state == "opened":
        lines.append(f"- **Pull request:** {run.request_url or 'opened (the command printed no URL)'}")
    elif run.request_state == "opening":
        lines.append("- **Pull request:** being opened")
    elif run.request_state == "failed":
        lines.append(f"- **Warning:** the pull request was not opened: {cell(run.request_detail)}")
    return lines


def todo_state(proj: Projection, todo_id: str, committing: int | None) -> str:
    todo = proj.todos.get(todo_id)
    if todo is None:
        return "no such todo file"
    if committing is not None and todo.state == TodoState.ACCEPTED and todo.phase == committing:
        return "complete"
    return str(todo.state)


def render_status(
    proj: Projection,
    config: Config,
    *,
    committing: int | None = None,
    warnings: Sequence[str] = (),
    verdict: RunVerdict | None = None,
) -> str:
    """The status file's text; ``warnings`` are what the daemon found a person should know;
    ``verdict`` is the one the commit being made will lead to (recorded once it is out)."""
    run = proj.run
    todos = proj.todos
    lines = ["# Execution Status", ""]
    # This file is committed and pushed: a database server's address (user, host, a password in the
    # URL) is never written into it, only that the log is on one.
    where = "on a database server" if is_shared(config.db_url) else f"({config.batchd.db})"
    lines.append(f"_Written by batchd from its event log {where} after every batch: do not edit by hand._")
    lines.append("")
    counts: dict[str, int] = {}
    for todo in todos.values():
        state = todo_state(proj, todo.todo_id, committing)
        counts[state] = counts.get(state, 0) + 1
    if run.run_id:
        lines.append(
            f"- **Run:** `{run.run_id}` started {run.started_at[:19].replace('T', ' ')} UTC "
            f"on `{run.branch}` from `{short(run.base_sha)}`"
        )
    state = str(run.state)
    verdict = run.verdict or verdict
    if committing is not None and run.verdict is None:
        state = "running" if verdict is None else "completed"
    lines.append(
        f"- **State:** {state}" + (f" — paused: {cell(headline(run.paused_reason))}" if run.paused else "")
    )
    if verdict is not None:
        lines.append(f"- **Verdict:** {cell(verdict_line(verdict, proj))}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines.append(f"- **Todos:** {summary or 'none yet'}")
    runs = sum(b.runs for b in proj.batches.values())
    baselines = sum(b.baseline_runs for b in proj.batches.values())
    lines.append(f"- **Verify runs:** {runs} (plus {baselines} baseline)")
    lines.extend(f"- **Warning:** {cell(w)}" for w in warnings)
    lines.extend(landing_lines(proj, config, committing))
    lines.append("")
    # No clock: a running agent's time so far is left out, so the file is the same whenever rebuilt.
    economy = run_economy(proj)
    lines.extend(agent_time(proj, economy))
    lines.extend(flake_lines(proj, config))
    lines.append("## Phases")
    lines.append("")
    for phase in sorted(proj.phases.values(), key=lambda p: (p.final, p.number)):
        shown = PhaseState.COMMITTING if committing == phase.number else phase.state
        lines.append(f"### Phase {phase.number}: {phase.title or '(untitled)'}")
        lines.append("")
        view = phase_result(phase) if committing != phase.number else str(shown)
        if committing == phase.number or (committing is None and carries_final_status(proj, phase)):
            view = COMMITTED_HERE
        lines.append(f"- **State:** {view}")
        if phase.commit_message:
            lines.append(f"- **Commit message:** `{phase.commit_message.splitlines()[0]}`")
        if phase.final and not phase.batches:
            lines.append(
                "- Final integration check: every verify command on the final tree, then the verdict."
            )
        lines.append("")
        if not phase.batches:
            continue
        lines.append(
            "| Batch | State | Todos | Accepted | Rejected | Conflicted | Agent failed | Verify runs |"
        )
        lines.append(
            "|-------|-------|-------|----------|----------|------------|--------------|-------------|"
        )
        for key in phase.batches:
            batch = proj.batches.get(key)
            if batch is None:
                continue
            batch_state = "done" if batch.state == BatchState.DONE else str(batch.state)
            lines.append(
                f"| {key} | {batch_state} | {ids(batch.todo_ids, proj)} | {ids(batch.accepted, proj)} "
                f"| {ids(batch.rejected, proj)} "
                f"| {ids(batch.conflicted, proj)} | {ids(batch.failed, proj)} | {batch.runs} |"
            )
        lines.append("")
        members: list[str] = []
        for key in phase.batches:
            batch = proj.batches.get(key)
            for todo_id in batch.todo_ids if batch else ():
                if todo_id not in members:
                    members.append(todo_id)
        lines.append("| Todo | Title | State | Attempts | Agent time | Wasted | Cost |")
        lines.append("|------|-------|-------|----------|------------|--------|------|")
        for todo_id in members:
            member = todos.get(todo_id)
            title = member.title if member else ""
            attempts = len(member.history) if member else 0
            paid = economy.todos.get(todo_id)
            minutes = paid.minutes if paid else 0.0
            wasted = paid.wasted_minutes if paid else 0.0
            cost = cost_text(paid.cost_usd, paid.simulated, short=True) if paid else "—"
            lines.append(
                f"| {proj.shown(todo_id)} | {cell(title)} | {todo_state(proj, todo_id, committing)} "
                f"| {attempts} | {spent(minutes)} | {spent(wasted)} | {cost} |"
            )
        lines.append("")
    lines.extend(failed_table(proj))
    lines.extend(review_table(proj))
    lines.extend(earlier_attempts(proj))
    return "\n".join(lines).rstrip() + "\n"


def agent_time(proj: Projection, economy: RunEconomy) -> list[str]:
    """The run's agent-minutes by class, its cost and waste ratio, and the budget that stopped it."""
    budget = budget_text(proj.run.budget, proj.run.budget_detail)
    if economy.minutes <= 0 and economy.cost_usd is None and not budget:
        return []
    n = economy.attempts

    def part(kind: str, minutes: float) -> str:
        return f"{kind} {minutes_text(minutes)} ({n[kind]} attempt{'' if n[kind] == 1 else 's'})"

    parts = [
        part("useful", economy.useful_minutes),
        part("failed", economy.failed_minutes),
        part("wasted", economy.wasted_minutes),
    ]
    if economy.pending_minutes > 0:
        parts.append(f"not judged yet {minutes_text(economy.pending_minutes)}")
    lines = ["## Agent time", "", f"- **Agent time:** {minutes_text(economy.minutes)}: {', '.join(parts)}"]
    lines.append(f"- **Waste ratio:** {ratio_text(economy.waste_ratio)} (wasted / useful agent-minutes)")
    if economy.cost_usd is not None:
        lines.append(f"- **Agent cost:** {cost_text(economy.cost_usd, economy.simulated)}")
    if budget:
        lines.append(f"- **Stopped by a budget:** {cell(budget)}")
    lines.append("")
    return lines


def flake_lines(proj: Projection, config: Config) -> list[str]:
    """Each verify command's measured flake rate (how many re-runs a red run gets), and the tests
    quarantined for flaking: their failures blame nobody until they stop flaking, so a person should
    fix them."""
    prior = config.verify.flake_rate
    rates = command_rates(proj.flakes, config.verify.commands, prior)
    lines = ["## Flaky checks", ""]
    lines += [f"- {cell(rate_text(*r))}" for r in rates]
    lines.append("")
    quarantined = quarantined_rows(proj.flakes)
    if quarantined:
        lines += ["### Quarantined tests", "", "| Test | Command | Measured rate |", "|---|---|---|"]
        rows = [f"| {cell(test)} | `{cell(key)}` | {percent(rate)} |" for key, test, rate in quarantined]
        lines += _capped(rows)
    if proj.known_red:
        lines += [
            "### Red on the base",
            "",
            "Failing on the newest verified head already (red on its base, or excused there), so blamed "
            "on nobody unless a re-run passes them or a change fixes them:",
            "",
            "| Test | Command |",
            "|---|---|",
        ]
        lines += _capped([f"| {cell(test)} | `{cell(key)}` |" for key, test in proj.known_red])
    return lines


def _capped(rows: list[str]) -> list[str]:
    """A table's rows, at most MAX_ROWS of them, then how many more there are (and a blank line)."""
    more = len(rows) - MAX_ROWS
    return [*rows[:MAX_ROWS], *([f"\n… and {more} more (`batchd status --json`)"] if more > 0 else []), ""]


def ids(values: Iterable[str], proj: Projection) -> str:
    text = ", ".join(proj.shown(t) for t in values)  # as the file names write them (leading zeros kept)
    return text or "—"


class FailedRow(NamedTuple):
    """One row of the Failed/Blocked table (the seed's columns), as plain text."""

    todo_id: str  # as its file name writes it
    description: str
    reason: str
    files_reverted: str
    action: str


def failed_rows(proj: Projection) -> list[FailedRow]:
    """The Failed/Blocked table's rows, in id order: the status file's and the dashboard's."""
    rows = []
    for todo in sorted(
        (t for t in proj.todos.values() if t.state in PROBLEM_STATES), key=lambda t: id_order(t.todo_id)
    ):
        shown = proj.shown(todo.todo_id)
        rows.append(
            FailedRow(
                todo_id=shown,
                description=todo.title or todo.path,
                reason=f"{todo.state}: {todo.reason}" if todo.reason else str(todo.state),
                files_reverted=", ".join(todo.files_reverted) or "—",
                action=todo.action or default_action(str(todo.state), shown),
            )
        )
    return rows


def failed_table(proj: Projection) -> list[str]:
    lines = ["## Failed/Blocked Todos", ""]
    rows = failed_rows(proj)
    if not rows:
        lines.extend(["None.", ""])
        return lines
    lines.append("| Todo ID | Description | Reason | Files Reverted | Action Needed |")
    lines.append("|---------|-------------|--------|----------------|---------------|")
    lines.extend("| " + " | ".join(cell(value) for value in row) + " |" for row in rows)
    lines.append("")
    return lines


def review_items(proj: Projection) -> list[tuple[str, int, str]]:
    """(todo id, attempt, what) for each thing a person should look at in the latest attempts."""
    items: list[tuple[str, int, str]] = []
    # Only the todos with something to review are sorted: a run of 100,000 todos has a handful.
    noted = (t for t in proj.todos.values() if t.review or t.dropped or t.warnings)
    for todo in sorted(noted, key=lambda t: id_order(t.todo_id)):
        if todo.review:
            items.append((todo.todo_id, todo.attempt, todo.review))
        items.extend((todo.todo_id, todo.attempt, f"dropped from its change: {d}") for d in todo.dropped)
        items.extend((todo.todo_id, todo.attempt, w) for w in todo.warnings)
    return items


def review_table(proj: Projection) -> list[str]:
    """What batchd kept out of a change or let in with a note: for a person to look at."""
    items = review_items(proj)
    if not items:
        return []
    lines = ["## Review", "", "| Todo ID | Attempt | What |", "|---------|---------|------|"]
    lines += [f"| {cell(proj.shown(t))} | {n} | {cell(what)} |" for t, n, what in items]
    lines.append("")
    return lines


def default_action(state: str, todo_id: str) -> str:
    actions: dict[str, str] = {
        TodoState.INVALID: "fix the file as the reason says; it is picked up again",
        TodoState.AGENT_FAILED: "read `batchd logs " + todo_id + "`; it is retried while attempts remain",
        TodoState.REJECTED: "it is retried with the failure in its prompt while attempts remain",
        TodoState.CONFLICTED: "it goes on from the new head while max_conflict_retries allows",
    }
    return actions.get(state, f"`batchd retry {todo_id}` once the cause is fixed")


def earlier_attempts(proj: Projection) -> list[str]:
    """Attempts that failed before the todo got through: the audit trail of reverted changes."""
    rows = []
    for todo in sorted(proj.todos.values(), key=lambda t: id_order(t.todo_id)):
        for record in todo.history:
            if record.outcome in ("rejected", "conflicted", "agent_failed"):
                kind = attempt_class(record)
                counted = f"{kind} (the next attempt went on from it)" if record.kept else kind
                rows.append(
                    f"| {cell(proj.shown(todo.todo_id))} | {record.attempt} | {record.outcome} "
                    f"| {cell(record.reason)} | {spent(record.duration / 60)} | {counted} |"
                )
    if not rows:
        return []
    return [
        "## Failed Attempts",
        "",
        "| Todo ID | Attempt | Outcome | Reason | Agent time | Counted as |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def one_line_status(proj: Projection) -> str:
    """For systemd's STATUS=: 'phase 2/5 batch 2.1: 3 agents running, 1 rejected'."""
    phases = sorted(proj.phases.values(), key=lambda p: (p.final, p.number))
    current = next((p for p in phases if p.state != PhaseState.DONE), None)
    running = sum(1 for t in proj.todos.values() if t.state == TodoState.RUNNING)
    rejected = sum(1 for t in proj.todos.values() if t.state == TodoState.REJECTED)
    if current is None:
        done = sum(1 for t in proj.todos.values() if t.state == TodoState.COMPLETE)
        return f"{proj.run.state}: {done} complete"
    batch = batch_at_work(proj, current)
    where = f"phase {phases.index(current) + 1}/{len(phases)}" + (f" batch {batch}" if batch else "")
    return f"{where}: {running} agents running, {rejected} rejected"
