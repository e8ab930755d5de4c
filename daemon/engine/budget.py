"""Budgets: what the run's agents have spent, and whether a limit stops new work. Pure functions.

``[batchd] max_cost_usd`` and ``[batchd] max_agent_minutes`` bound the run: once one is reached no
new agent starts (running ones finish, their work is verified and committed as usual), the work
left waits, and the run ends with a verdict that names the budget (success false). ``[agent]
max_cost_usd_per_todo`` bounds one todo: over it, the daemon blocks the todo instead of retrying it,
and the run goes on. 0 is no limit.

Spend comes from the projection alone: cost is the sum of what the agents reported (absurd values
are capped by ``agentproc``), agent time the sum of every ended attempt's duration (interrupted ones
too) plus the time of the agents still running, which the shell observes and passes in.

The check is made again at every decision, against the configuration in force: ``run.budget_reached``
stays in the log as what happened, but a limit raised by a reload (SIGHUP) lets work go on, in the
run as it is or by reopening a completed one. The spend is the run's whole, across reopenings: a
budget is for the run, not for one stretch of it.

A person's ``batchd retry`` grants a todo over its own cap one more attempt (the cap stops the
daemon's retries, not a person's); it is blocked again if that attempt fails too.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from daemon.engine import commands as cmd
from statemachine.economy import budget_amount
from statemachine.ids import id_order
from statemachine.projection import Projection
from statemachine.tables import RunState, TodoState
from statemachine.views import TodoView

COST = "max_cost_usd"
MINUTES = "max_agent_minutes"
CAP_KEY = "max_cost_usd_per_todo"
# The todos a budget keeps waiting: they need an agent to go on.
WAITING = frozenset({TodoState.READY, TodoState.PLANNED})
NOT_STARTED = "not started: budget"  # how the verdict lists a todo the budget kept waiting


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """The budgets in force (the current configuration), 0 = no limit."""

    max_cost_usd: float = 0.0
    max_agent_minutes: float = 0.0
    max_cost_usd_per_todo: float = 0.0


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True, kw_only=True)
class Spend:
    cost_usd: float
    agent_minutes: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Reached:
    """A run budget used up: which key, its limit and what was used (dollars or minutes)."""

    budget: str
    limit: float
    used: float

    def text(self) -> str:
        """``stopped by [batchd] max_cost_usd: $5.20 of $5.00`` (the verdict's words)."""
        return f"stopped by [batchd] {self.budget}: {budget_amount(self.budget, self.used, self.limit)}"


def spend(proj: Projection, running_seconds: float = 0.0) -> Spend:
    """The run's spend so far: every todo's agents (ended attempts), plus the agents running now."""
    cost = sum(t.cost_usd for t in proj.todos.values())
    seconds = sum(t.agent_seconds for t in proj.todos.values()) + max(running_seconds, 0.0)
    return Spend(cost_usd=cost, agent_minutes=seconds / 60.0)


def reached(proj: Projection, limits: Limits, running_seconds: float = 0.0) -> Reached | None:
    """The first run budget used up (cost before time), or None while both have room."""
    if limits.max_cost_usd <= 0 and limits.max_agent_minutes <= 0:
        return None
    used = spend(proj, running_seconds)
    if 0 < limits.max_cost_usd <= used.cost_usd:
        return Reached(budget=COST, limit=limits.max_cost_usd, used=used.cost_usd)
    if 0 < limits.max_agent_minutes <= used.agent_minutes:
        return Reached(budget=MINUTES, limit=limits.max_agent_minutes, used=used.agent_minutes)
    return None


def waiting(proj: Projection) -> list[str]:
    """Todos that need an agent to go on (ready or planned, none running)."""
    return [t.todo_id for t in proj.todos.values() if t.state in WAITING]


def record(proj: Projection, hit: Reached | None) -> bool:
    """``run.budget_reached`` is due: a budget is reached, it keeps work waiting, and the log does not
    say so yet for this budget and limit (a limit raised by a reload and reached again is said again)."""
    if hit is None or proj.run.state not in (RunState.RUNNING, RunState.PAUSED, RunState.STOPPING):
        return False
    if not waiting(proj):
        return False  # nothing was kept from starting: the budget stopped nothing
    return not (proj.run.budget == hit.budget and proj.run.budget_limit == hit.limit)


def over_cap(todo: TodoView, limits: Limits) -> str:
    """Why a ready todo is blocked instead of retried ("" when it may run): the daemon is retrying it
    (it has used attempts or lost conflicts) and its agents' cost reached ``max_cost_usd_per_todo``.
    A person's retry resets those counts, so it gets one more attempt."""
    cap = limits.max_cost_usd_per_todo
    if cap <= 0 or todo.state != TodoState.READY or todo.cost_usd < cap:
        return ""
    if todo.attempts_used == 0 and todo.conflicts_used == 0:
        return ""
    return f"its agents cost ${todo.cost_usd:.2f}, [agent] {CAP_KEY} is ${cap:.2f}"


def cap_action(shown: str) -> str:
    return f"fix by hand, or `batchd retry {shown}` for one more attempt (or raise [agent] {CAP_KEY})"


def held_back(proj: Projection, hit: Reached | None, settling: Collection[str] = ()) -> list[cmd.Command]:
    """What a policy does first while a run budget is reached: say so once, and put planned todos
    back to ready (none of them will start; a todo still being wound up is left to settle)."""
    if hit is None:
        return []
    out: list[cmd.Command] = []
    if record(proj, hit):
        out.append(cmd.RecordBudget(budget=hit.budget, limit=hit.limit, used=hit.used))
    planned = [t for t in proj.todos.values() if t.state == TodoState.PLANNED and t.todo_id not in settling]
    out += [
        cmd.PutBack(todo_id=t.todo_id, reason=f"{NOT_STARTED} ({hit.text()})")
        for t in sorted(planned, key=lambda t: id_order(t.todo_id))
    ]
    return out


def block_over_cap(proj: Projection, todo: TodoView, limits: Limits) -> cmd.BlockTodo | None:
    """The block of a ready todo over ``max_cost_usd_per_todo`` (see :func:`over_cap`), or None."""
    reason = over_cap(todo, limits)
    if not reason:
        return None
    return cmd.BlockTodo(todo_id=todo.todo_id, reason=reason, action=cap_action(proj.shown(todo.todo_id)))
