"""``batchd status`` for a person: the run, its agent time and cost, phases, todos, what to review.

The data is :func:`daemon.cli.control.status_data`'s (what ``--json`` prints); text from todos and git
is escaped, never read as Rich markup.
"""

from __future__ import annotations

from typing import Any

from daemon.cli.workers import print_workers, waiting_text
from daemon.engine.flaketext import percent, rate_text
from daemon.engine.statusfile import verdict_line
from daemon.exceptions import headline
from statemachine.economy import SIMULATED, RunEconomy, budget_text, cost_text, minutes_text, summary_text
from statemachine.projection import Projection

__all__ = ["agent_cell", "flake_lines", "print_status", "simulated_note"]

MAX_QUARANTINED_SHOWN = 10


def agent_cell(agent: dict[str, Any], *, say_simulated: bool) -> str:
    """A todo's agent time and cost for the table: ``6m 00s, $1.00`` (``say_simulated``: the cost
    says it is simulated when it is; else the table's caption says it for all)."""
    minutes = float(agent["minutes"])
    cost = agent["cost_usd"]
    parts = [minutes_text(minutes)] if minutes > 0 else []
    if cost is not None:
        parts.append(cost_text(cost, say_simulated and bool(agent["cost_simulated"]), short=True))
    return ", ".join(parts)


def simulated_note(todos: list[dict[str, Any]]) -> tuple[str | None, bool]:
    """The table's caption, and whether each cost must say it is simulated: when every cost shown
    is, the caption says it once (the table stays narrow enough for the titles)."""
    costed = [t["agent"] for t in todos if t["agent"]["cost_usd"] is not None]
    if costed and all(a["cost_simulated"] for a in costed):
        return f"agent costs {SIMULATED}", False
    return None, True


def flake_lines(flakes: dict[str, Any]) -> list[str]:
    """The verify commands' flake rates on one line, and the quarantined tests (count, then the
    first :data:`MAX_QUARANTINED_SHOWN`; the status file lists them all), as Rich markup."""
    from rich.markup import escape

    rates = [rate_text(c["command"], c["rate"], c["trials"], c["flakes"]) for c in flakes["commands"]]
    lines = [f"flake rates: {escape('; '.join(rates))}"] if rates else []
    quarantined = flakes["quarantined"]
    if quarantined:
        shown = [f"{q['test']} (`{q['command']}`, {percent(q['rate'])})" for q in quarantined]
        more = len(shown) - MAX_QUARANTINED_SHOWN
        text = ", ".join(shown[:MAX_QUARANTINED_SHOWN]) + (f" +{more} more" if more > 0 else "")
        lines.append(f"[yellow]quarantined tests[/] ({len(quarantined)}): {escape(text)}")
    red = flakes.get("red_on_base", [])
    if red:
        shown = [f"{r['test']} (`{r['command']}`)" for r in red]
        more = len(shown) - MAX_QUARANTINED_SHOWN
        text = ", ".join(shown[:MAX_QUARANTINED_SHOWN]) + (f" +{more} more" if more > 0 else "")
        lines.append(f"[yellow]red on the base, blamed on nobody[/] ({len(red)}): {escape(text)}")
    return lines


def print_status(proj: Projection, data: dict[str, Any], economy: RunEconomy) -> None:
    """``status`` for a person: ``data`` is :func:`status_data`'s, ``economy`` the same accounting."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    run = data["run"]
    console.print(
        f"[bold]run[/] {run['id'] or '(not started)'} · {run['state']} · "
        f"branch {escape(run['branch'] or '?')}"
    )
    request = run["request"]
    if request["state"] == "opened":
        url = request["url"] or "(no URL printed)"
        console.print(f"pull request: {url} ({request['branch']})", markup=False)
    elif request["state"] == "failed":
        console.print(f"[yellow]warning[/]: the pull request was not opened: {escape(request['detail'])}")
    if run["detail"]:
        console.print(f"{run['state']}: {escape(headline(run['detail']))}", soft_wrap=True)
    if proj.run.verdict is not None:
        colour = "green" if proj.run.verdict.success else "red"
        console.print(f"verdict: [{colour}]{escape(verdict_line(proj.run.verdict, proj))}[/]", soft_wrap=True)
    if proj.run.budget:
        console.print(f"[red]budget[/]: {escape(budget_text(proj.run.budget, proj.run.budget_detail))}")
    if economy.minutes > 0 or economy.cost_usd is not None:
        console.print(
            f"agent time: {escape(summary_text(economy))}; "
            f"cost {escape(cost_text(economy.cost_usd, economy.simulated))}",
            soft_wrap=True,
        )
    for line in flake_lines(data["flakes"]):
        console.print(line, soft_wrap=True)
    phases = Table(title="phases", show_lines=False)
    for column in ("phase", "title", "state", "batches", "commit", "push"):
        phases.add_column(column)
    for p in data["phases"]:
        failed = f"failed: {headline(p['push_failed'])}" if p["push_failed"] else ""
        push = p["pushed"][:10] if p["pushed"] else failed
        phases.add_row(
            str(p["number"]),
            escape(p["title"]),
            p["state"],
            ", ".join(p["batches"]),
            (p["commit"] or "")[:10],
            escape(push),
        )
    console.print(phases)
    note, say_simulated = simulated_note(data["todos"])
    todos = Table(title="todos", caption=note)
    for column in ("id", "state", "try", "batch", "title", "agent", "why / elapsed"):
        todos.add_column(column)
    colours = {
        "complete": "green",
        "accepted": "green",
        "running": "cyan",
        "rejected": "red",
        "blocked": "red",
        "agent_failed": "red",
        "conflicted": "yellow",
        "invalid": "magenta",
    }
    for t in data["todos"]:
        why = f"{t['elapsed']:.0f}s (pid {t['pid']})" if "elapsed" in t else headline(t.get("reason", ""))
        colour = colours.get(t["state"], "white")
        todos.add_row(
            escape(t["id"]),
            f"[{colour}]{t['state']}[/]",
            str(t["attempt"]),
            escape(t["batch"] or ""),
            escape(t["title"]),
            escape(agent_cell(t["agent"], say_simulated=say_simulated)),
            escape(why),
        )
    console.print(todos)
    if data["workers"]:
        print_workers(data)
    elif line := waiting_text(data):
        console.print(f"[yellow]warning[/]: {escape(line)}")
    for item in data["review"]:
        console.print(
            f"[yellow]review[/] #{escape(item['id'])} (attempt {item['attempt']}): {escape(item['what'])}"
        )
    if run["sandbox"] and not run["sandbox"].startswith("bubblewrap"):
        console.print(f"[yellow]warning[/]: agents run without a sandbox ({escape(run['sandbox'])})")
