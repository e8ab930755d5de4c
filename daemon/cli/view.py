"""The live run view that ``batchd run`` (on a terminal) and ``batchd demo`` share.

The view reads only the event log, through a read connection of its own (it never appends), and
folds what it reads into a projection of its own, in a thread of its own: a long step of the daemon
(a verify run, a push) never freezes the screen, and the daemon never waits for the screen. Every
text that comes from a todo, a hint, an event or a log line is drawn as a Rich ``Text`` object, never
as markup: a title such as ``fix the [agent] preset`` is shown as written.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import structlog
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from daemon.engine.state import batch_at_work
from statemachine.economy import clock, cost_text, ratio_text, run_economy
from statemachine.ids import id_order
from statemachine.projection import Projection, replay
from statemachine.tables import PhaseState, TodoState
from store import EventLog
from store.exceptions import BatchdError, StoreError
from store.records import seconds_since

__all__ = ["LiveView", "clock", "describe_event", "log_opener", "render"]

log = structlog.get_logger(__name__)

LogOpener = Callable[[], EventLog | None]

STATE_STYLE = {
    "complete": "green",
    "accepted": "green",
    "running": "cyan",
    "agent_done": "cyan",
    "verifying": "yellow",
    "rejected": "red",
    "blocked": "bold red",
    "agent_failed": "red",
    "conflicted": "yellow",
    "invalid": "magenta",
    "planned": "white",
    "ready": "dim",
    "pending": "dim",
}
NOTABLE = {
    "todo.rejected": "rejected (its change broke the tests; reverted)",
    "todo.conflicted": "lost a conflict to a lower id; its change goes on from the new head",
    "todo.agent_failed": "agent failed",
    "todo.blocked": "blocked",
    "batch.verified": "verified",
    "phase.committed": "committed",
    "phase.pushed": "pushed",
    "phase.push_failed": "push failed",
    "run.completed": "run completed",
}
# The todos the table lists: those still to run or at work (done ones are counted in the tally).
AT_WORK = (TodoState.PLANNED, TodoState.RUNNING, TodoState.AGENT_DONE, TodoState.VERIFYING)
LAST_EVENTS = 6  # lines of the "last events" area
CLOCK_TICK = 1.0  # seconds between frames when nothing happened but the clocks (elapsed, countdowns)


def elapsed(recorded_at: str) -> str:
    return clock(seconds_since(recorded_at)) if recorded_at else ""


def describe_event(proj: Projection, event_type: str, payload: dict[str, object]) -> str | None:
    """One line for the "last events" area, or None for an event not worth a line."""
    what = NOTABLE.get(event_type)
    if what is None:
        return None
    if event_type.startswith("todo."):
        todo_id = str(payload.get("todo_id"))
        title = proj.todos[todo_id].title if todo_id in proj.todos else ""
        detail = payload.get("reason") or payload.get("detail") or ""
        return f"#{proj.shown(todo_id)} {title}: {what}" + (f" — {detail}" if detail else "")
    if event_type == "batch.verified":

        def names(key: str) -> str:
            value = payload.get(key)
            if not isinstance(value, list | tuple) or not value:
                return "none"
            return ", ".join(proj.shown(str(t)) for t in value)

        accepted = payload.get("accepted")
        count = len(accepted) if isinstance(accepted, list | tuple) else 0
        lists = ("accepted", "rejected", "conflicted", "failed")
        if not payload.get("runs") and not any(payload.get(k) for k in lists):
            return None  # a plan batch closed under the continuous policy: its groups said it all
        return (
            f"batch {payload['key']} {what}: accepted {count}, rejected {names('rejected')}, "
            f"conflicted {names('conflicted')}, agent failed {names('failed')}, "
            f"{payload['runs']} verify run(s)"
        )
    if event_type.startswith("phase."):
        sha = str(payload.get("head_sha") or payload.get("sha") or "")[:10]
        return f"phase {payload['number']} {what} {sha}".rstrip()
    return what


def _run_line(proj: Projection) -> Text:
    run = proj.run
    line = Text("run ", style="bold")
    line.append(run.run_id[:12] if run.run_id else "(starting)")
    line.append(f" · {run.state}")
    if run.started_at:
        line.append(f" · {elapsed(run.started_at)}")
    if run.paused:
        line.append(f" · {run.paused_reason}", style="yellow")
    return line


def _phase_line(proj: Projection) -> Text:
    phases = sorted(proj.phases.values(), key=lambda p: (p.final, p.number))
    current = next((p for p in phases if p.state != PhaseState.DONE), None)
    header = Text()
    if current is None:
        header.append("all phases done" if phases else "no phase planned yet", style="bold green")
        return header
    header.append(f"Phase {phases.index(current) + 1}/{len(phases)}: {current.title}", style="bold")
    header.append(f" · {current.state}")
    batch_key = batch_at_work(proj, current)
    if batch_key:
        header.append(f" · batch {batch_key} ({proj.batches[batch_key].state})")
    return header


def ids_in(proj: Projection, state: TodoState) -> list[str]:
    found = sorted((t.todo_id for t in proj.todos.values() if t.state == state), key=id_order)
    return [proj.shown(t) for t in found]


def _queue_line(proj: Projection) -> Text:
    """The verification queue: the todos whose change is being tested, and those waiting for it."""
    verifying = ids_in(proj, TodoState.VERIFYING)
    waiting = ids_in(proj, TodoState.AGENT_DONE)
    line = Text("verification: ", style="bold")
    if not verifying and not waiting:
        line.append("idle", style="dim")
        return line
    if verifying:
        line.append("testing " + ", ".join(verifying), style="yellow")
    if waiting:
        line.append(("; " if verifying else "") + "waiting " + ", ".join(waiting), style="cyan")
    return line


def _agents_table(proj: Projection, agent_timeout: float | None) -> Table:
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    for column in ("todo", "title", "state", "try", "elapsed", "timeout in"):
        table.add_column(column)
    shown = [t for t in proj.todos.values() if t.state in AT_WORK]
    for todo in sorted(shown, key=lambda t: id_order(t.todo_id)):
        state = str(todo.state)
        running = todo.state == TodoState.RUNNING
        spent = seconds_since(todo.agent_started_at) if running and todo.agent_started_at else None
        left = ""
        if spent is not None and agent_timeout is not None:
            left = clock(max(0.0, agent_timeout - spent))
        table.add_row(
            Text(proj.shown(todo.todo_id)),
            Text(todo.title[:48]),
            Text(state, style=STATE_STYLE.get(state, "")),
            Text(str(todo.attempt)),
            Text(clock(spent) if spent is not None else ""),
            Text(left, style="dim"),
        )
    return table


def _agent_time_line(proj: Projection) -> Text | None:
    """``agent time 12m 05s · wasted 1m 02s · waste ratio 8.5% · cost $1.03 (simulated)``; None
    before any agent ran."""
    e = run_economy(proj, now=datetime.now(UTC))
    if e.minutes <= 0:
        return None
    line = f"agent time {clock(e.minutes * 60)} · wasted {clock(e.wasted_minutes * 60)}"
    line += f" · waste ratio {ratio_text(e.waste_ratio)}"
    if e.cost_usd is not None:
        line += f" · cost {cost_text(e.cost_usd, e.simulated, short=True)}"
    return Text(line, style="dim")


def render(proj: Projection, notes: list[str], *, agent_timeout: float | None = None) -> Group:
    """The whole frame: the run, the phase, the agents, the verification queue, a tally, last events."""
    counts: dict[str, int] = {}
    for todo in proj.todos.values():
        counts[str(todo.state)] = counts.get(str(todo.state), 0) + 1
    tally = Text("  ".join(f"{state} {n}" for state, n in sorted(counts.items())), style="dim")
    recent = Text("\n".join(notes[-LAST_EVENTS:]), style="dim")
    table = _agents_table(proj, agent_timeout)
    spent = _agent_time_line(proj)
    return Group(
        _run_line(proj),
        _phase_line(proj),
        table,
        _queue_line(proj),
        tally,
        *([spent] if spent else []),
        recent,
    )


def log_opener(url: str, *, scope: str = "") -> LogOpener:
    """Opens the event log at ``url`` (its events of ``scope``) once it exists (a fresh repository
    has none until the daemon starts): opening a missing SQLite file would create it, racing the
    daemon's own creation."""
    path = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None

    def open_when_there() -> EventLog | None:
        if path is not None and not path.exists():
            return None
        return EventLog(url, scope=scope)

    return open_when_there


class LiveView:
    """Follow the event log and draw it: live on a terminal, as one line per notable event otherwise.

    Use as a context manager around whatever writes the log (``serve``, or waiting for the demo's
    daemon process). On leaving, the rest of the log is read, the last frame is drawn and the
    terminal is given back (cursor shown), whatever ended the block.
    """

    def __init__(
        self,
        opener: LogOpener,
        console: Console,
        *,
        agent_timeout: float | None = None,
        refresh: float = 0.25,
    ) -> None:
        self.console = console
        self.proj = Projection()
        self.notes: list[str] = []
        self.agent_timeout = agent_timeout
        self._opener = opener
        self._refresh = refresh
        self._log: EventLog | None = None
        self._live: Live | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one fold at a time: the thread's and the last one on leaving
        self._thread: threading.Thread | None = None
        self._failed = False
        self._followed = 0  # events folded while following (the replayed past is not counted)
        self._drawn = 0.0  # when the last frame was drawn (monotonic)

    # -- the frame -----------------------------------------------------------------------------

    def frame(self) -> Group:
        return render(self.proj, self.notes, agent_timeout=self.agent_timeout)

    def print_log(self, line: str) -> None:
        """A log line (ANSI colours allowed, markup never read), drawn above the live frame."""
        self.console.print(Text.from_ansi(line.rstrip("\n")))

    # -- following -----------------------------------------------------------------------------

    def _fold(self) -> int:
        """Fold what the log gained; how many events that was."""
        if self._log is None:
            self._log = self._opener()  # the daemon has just created it: all of it is new
        event_log = self._log
        if event_log is None:
            return 0
        before = self._followed
        for event in event_log.read(since=self.proj.last_seq):
            self.proj.apply(event)
            self._followed += 1
            line = describe_event(self.proj, event.type, event.payload)
            if line:
                self.notes.append(line)
                del self.notes[: -LAST_EVENTS * 4]
                if self._live is None:
                    self.console.print(Text(line))
        return self._followed - before

    def step(self, *, draw: bool = False) -> None:
        """Read what the log gained; redraw when it gained something, when the clocks are due
        (a frame costs the daemon's process some milliseconds of CPU), or when ``draw``."""
        with self._lock:
            if self._failed:
                return
            gained = 0
            try:
                gained = self._fold()
            except StoreError as e:  # a busy or vanished log: try again next time
                log.debug("live_view_read_failed", error=str(e))
            except Exception as e:  # noqa: BLE001 - a bug in the view must never stop the daemon
                self._failed = True
                log.warning("live_view_failed", error=f"{type(e).__name__}: {e}")
                return
            now = time.monotonic()
            if self._live is not None and (draw or gained or now - self._drawn >= CLOCK_TICK):
                self._live.update(self.frame(), refresh=True)
                self._drawn = now

    def _follow(self) -> None:
        while not self._stop.wait(self._refresh):
            self.step()

    def start(self) -> LiveView:
        """Start drawing; call it before the daemon starts writing, so the view knows what is new."""
        try:
            self._log = self._opener()
            if self._log is not None:
                # An earlier run's log: start from its state now (snapshot + tail); only what
                # happens from here on becomes a line of "last events".
                self.proj = replay(self._log)
        except BatchdError as e:
            # A log the daemon will refuse too (corrupt, newer): it says why; the view stays blank.
            self._failed = True
            log.debug("live_view_unreadable", error=e.render())
        if self.console.is_terminal:
            # No auto-refresh thread of Rich's own: ours redraws after each read, and also keeps the
            # elapsed times and countdowns ticking.
            self._live = Live(self.frame(), console=self.console, auto_refresh=False, transient=False)
            self._live.start(refresh=True)
        self._thread = threading.Thread(target=self._follow, name="batchd-live-view", daemon=True)
        self._thread.start()
        return self

    def stop(self, *, clear: bool = False) -> None:
        """Stop following; read and draw the rest; give the terminal back (``clear``: erase the frame)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            if self._thread is None or not self._thread.is_alive():
                self.step(draw=True)
        finally:
            if self._live is not None:
                self._live.transient = clear
                with contextlib.suppress(OSError):  # a terminal that went away: nothing to give back
                    self._live.stop()
                self._live = None
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> LiveView:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A start-up refusal drew nothing worth keeping: erase the empty frame, the error follows.
        self.stop(clear=exc is not None and self._followed == 0)
