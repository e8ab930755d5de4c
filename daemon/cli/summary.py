"""The summary a run ends with (``batchd run --once`` on a terminal or with ``--quiet``, and the demo):
what came of the todos, what it took, and for each blocked todo the commands to type next.

Printed through ``Text`` objects only: a todo's title or reason is shown as written, never read as
Rich markup.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.text import Text

from daemon.cli.view import clock
from daemon.engine.statusfile import verdict_line
from statemachine.economy import RunEconomy, budget_text, cost_text, ratio_text, run_economy
from statemachine.ids import id_order
from statemachine.projection import Projection
from statemachine.tables import TodoState

__all__ = ["RunSummary", "counted", "next_commands", "print_summary", "summarize"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunSummary:
    verdict: str  # the run's verdict line, as the status file has it ("" before there is one)
    total: int  # the todos the verdict counts (all known todos before there is one)
    complete: tuple[str, ...]
    rejected_ever: tuple[str, ...]  # rejected by verification at least once, whatever came after
    blocked: tuple[tuple[str, str], ...]  # (todo id as written, why)
    verify_runs: int
    baseline_runs: int
    tested_changes: int  # agents' changes that verification judged: one run each when tested alone
    pushed: int
    remote: str
    agent_seconds: float
    cost_usd: float | None  # None when no agent reported a cost
    economy: RunEconomy  # the agent time by class (useful, failed, wasted) and the cost
    budget: str = ""  # the run budget that stopped new agents, said for a person ("" = none)


def summarize(proj: Projection) -> RunSummary:
    todos = sorted(proj.todos.values(), key=lambda t: id_order(t.todo_id))
    economy = run_economy(proj)  # the run has ended: no agent is still running
    verdict = proj.run.verdict
    return RunSummary(
        verdict=verdict_line(verdict, proj) if verdict is not None else "",
        total=len(verdict.complete) + len(verdict.not_complete) if verdict is not None else len(todos),
        complete=tuple(
            proj.shown(t)
            for t in (
                verdict.complete
                if verdict is not None
                else [t.todo_id for t in todos if t.state == TodoState.COMPLETE]
            )
        ),
        rejected_ever=tuple(
            proj.shown(t.todo_id) for t in todos if any(h.outcome == "rejected" for h in t.history)
        ),
        blocked=tuple((proj.shown(t.todo_id), t.reason) for t in todos if t.state == TodoState.BLOCKED),
        verify_runs=sum(b.runs for b in proj.batches.values()),
        baseline_runs=sum(b.baseline_runs for b in proj.batches.values()),
        tested_changes=sum(1 for t in todos for h in t.history if h.outcome in ("accepted", "rejected")),
        pushed=sum(1 for p in proj.phases.values() if p.pushed_sha),
        remote=proj.run.remote_url,
        agent_seconds=economy.minutes * 60,
        cost_usd=economy.cost_usd,
        economy=economy,
        budget=budget_text(proj.run.budget, proj.run.budget_detail),
    )


def next_commands(todo_id: str, root: Path | None) -> list[str]:
    """What to type for a blocked todo: read its logs, then retry it (``-C`` when not run from there)."""
    where = f" -C {shlex.quote(str(root))}" if root is not None else ""
    return [f"batchd logs {todo_id}{where}", f"batchd retry {todo_id}{where}"]


def counted(ids: tuple[str, ...]) -> str:
    """``2 (267, 282)``, or ``none``."""
    return f"{len(ids)} ({', '.join(ids)})" if ids else "none"


def print_summary(console: Console, s: RunSummary, *, root: Path | None = None) -> None:
    """The lines the demo and ``batchd run`` share (``root``: added as ``-C`` to the next commands)."""

    def line(text: str) -> None:
        console.print(Text(text))

    if s.verdict:
        line(f"  verdict: {s.verdict}")
    line(
        f"  todos complete: {len(s.complete)}/{s.total}; rejected at least once: {counted(s.rejected_ever)}; "
        f"blocked: {counted(tuple(t for t, _ in s.blocked))}"
    )
    saved = s.tested_changes > s.verify_runs
    line(
        f"  verify runs: {s.verify_runs} (+{s.baseline_runs} baseline)"
        + (f", where testing each change alone needs {s.tested_changes}" if saved else "")
    )
    line(f"  phase commits pushed: {s.pushed}" + (f" to {s.remote}" if s.remote else " (no remote)"))
    e = s.economy
    cost = f", cost {cost_text(s.cost_usd, e.simulated)}" if s.cost_usd is not None else ""
    line(f"  agent time: {clock(s.agent_seconds)}{cost}")
    if s.agent_seconds > 0:
        line(
            f"    useful {clock(e.useful_minutes * 60)}, failed {clock(e.failed_minutes * 60)}, "
            f"wasted {clock(e.wasted_minutes * 60)} (waste ratio {ratio_text(e.waste_ratio)})"
        )
    if s.budget:
        line(f"  stopped by a budget: {s.budget}")
    if s.blocked:
        line("\nBlocked, and what to type next:")
        for todo_id, why in s.blocked:
            line(f"  {todo_id}: {why or 'attempts exhausted'}")
            for command in next_commands(todo_id, root):
                line(f"    {command}")
