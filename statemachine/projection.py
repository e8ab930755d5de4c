"""The fold: every todo, batch, phase and the run, rebuilt from the log and nothing else.

``Projection.apply(stored_event)`` looks the event's type up once (its machine kind, trigger, handler),
checks the stream names the entity the payload names, moves the entity with one look-up in
:data:`tables.NEXT_STATE` (split per trigger) and lets the event's handler copy payload fields into the
view. A move the table does not declare raises :class:`InvalidTransition` naming stream, state, event
and seq: nothing is skipped. The fold is pure (no clock, no I/O, no callbacks), so rebuilding fires no
side effects. ``Projection.flakes`` (:class:`statemachine.flakes.FlakeModel`) is folded from the
``batch.verify_run`` events and their recorded times, so it too is the same after any rebuild. The fold
works on payload dicts, not decoded dataclasses: decoding every event through the registry alone costs
3-4x the whole fold (``bench.replay``: fold ~260-300k events/s, registry decode ~70-90k/s on a loaded
2-core machine); an event stored with an older ``type_version`` still goes through the registry's
upcasters first. :func:`replay` pauses the cyclic GC while it loads (see
:func:`_gc_paused`).

:func:`replay` rebuilds from the latest snapshot plus the tail (or from zero), up to a sequence number
or a moment; :func:`save_snapshot` stores one.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import structlog

from statemachine.dispatch import DISPATCH_TYPES, Dispatch
from statemachine.exceptions import InvalidTransition, SnapshotIncompatible
from statemachine.flakes import FlakeModel
from statemachine.handlers import HANDLERS, Handler, Payload
from statemachine.ids import id_key, id_order, written_id
from statemachine.machines import LiveMachines, LiveModel
from statemachine.tables import CONTROL_EVENTS, EVENT_TRIGGERS, NEXT_STATE, Kind
from statemachine.views import (
    BATCH,
    PHASE,
    BatchView,
    PhaseView,
    RunView,
    TodoView,
    check_layout,
    dump_run,
    dump_todo,
    layout,
    load_run,
    load_todo,
)
from store import EventLog, StoredEvent, registry
from store.audit import AuditReport
from store.eventlog import format_time

__all__ = [
    "SNAPSHOT_FORMAT",
    "SNAPSHOT_NAME",
    "ControlRequest",
    "Projection",
    "parse_stream",
    "replay",
    "save_snapshot",
]

log = structlog.get_logger(__name__)

SNAPSHOT_NAME = "projection"
# 2: the flake model (issue 14); 3: workers and claims (issue 15). A snapshot of another format is
# ignored and the log replayed from zero.
SNAPSHOT_FORMAT = 3


class ControlRequest(NamedTuple):
    """A ``control.*`` request not yet answered by a ``control.handled`` naming its seq."""

    seq: int
    type: str
    payload: dict[str, Any]


_TODO, _BATCH, _PHASE, _RUN = range(4)  # small ints: comparing them is cheaper than enum members
_CODES = {Kind.TODO: _TODO, Kind.BATCH: _BATCH, Kind.PHASE: _PHASE, Kind.RUN: _RUN}
_FINISHED_STATES = {
    Kind.TODO: frozenset({"complete", "cancelled"}),
    Kind.BATCH: frozenset({"done"}),
    Kind.PHASE: frozenset({"done"}),
    Kind.RUN: frozenset[str](),
}

# event type name -> (kind code, kind, handler, current version, {state: next state}, finished states)
_Spec = tuple[int, Kind, Handler, int, dict[str, str], frozenset[str]]


def _build_specs() -> dict[str, _Spec]:
    specs: dict[str, _Spec] = {}
    for cls, (kind, trigger) in EVENT_TRIGGERS.items():
        name: str = cls.event_name  # type: ignore[attr-defined]
        version: int = cls.event_version  # type: ignore[attr-defined]
        moves = {state: nxt for (k, state, trig), nxt in NEXT_STATE.items() if k == kind and trig == trigger}
        specs[name] = (_CODES[kind], kind, HANDLERS[name], version, moves, _FINISHED_STATES[kind])
    return specs


_SPECS = _build_specs()
_CONTROL = frozenset(c.event_name for c in CONTROL_EVENTS)  # type: ignore[attr-defined]


def parse_stream(stream: str) -> tuple[Kind, str]:
    """``todo-273`` -> (todo, "273"); ``run`` -> (run, ""). A stream of no machine is a ValueError."""
    if stream == "run":
        return Kind.RUN, ""
    prefix, sep, key = stream.partition("-")
    if sep and key and prefix in ("todo", "batch", "phase") and (prefix != "phase" or key.isdigit()):
        return Kind(prefix), key
    raise ValueError(f"{stream!r} is not the stream of a todo, batch, phase or the run")


def _upcast(e: StoredEvent) -> Payload:
    """An older payload through the registry's upcasters, back to the current version's dict."""
    return registry.encode(e.decode())[2]


class Projection:
    """The state of every todo, batch, phase and the run after the events applied so far."""

    __hash__ = None  # type: ignore[assignment]  # mutable; equality is by to_json()

    def __init__(self) -> None:
        self.todos: dict[str, TodoView] = {}
        self.batches: dict[str, BatchView] = {}
        self.phases: dict[int, PhaseView] = {}
        self.run = RunView()
        self.controls_pending: list[ControlRequest] = []
        self.last_seq = 0
        self.last_recorded_at = ""
        self.last_hash = ""
        self.verify_runs = 0
        self.agents_started = 0
        self.flakes = FlakeModel()  # every verify command's flake rate and flaky tests, from verify runs
        # (command key, test id) red on the newest verified head (its baseline, or the run that
        # accepted it excused them): they blame nobody built on it. See handlers._batch_verified.
        self.known_red: tuple[tuple[str, str], ...] = ()
        self.dispatch = Dispatch()  # workers on other hosts and the claims of remote attempts
        self._live: LiveMachines | None = None

    # -- the fold ----------------------------------------------------------------------------

    def apply(self, e: StoredEvent) -> None:
        """Fold one stored event in; raise :class:`InvalidTransition` if its machine cannot take it."""
        if e.seq <= self.last_seq:
            raise InvalidTransition(
                stream=e.stream,
                state=self.state_of(e.stream),
                event=e.type,
                seq=e.seq,
                detail=f"events up to seq {self.last_seq} are already applied",
            )
        spec = _SPECS.get(e.type)
        if spec is None:
            if e.type in DISPATCH_TYPES:
                self.dispatch.apply(e)
            else:
                self._apply_control(e)
        else:
            code, kind, handler, version, moves, finished = spec
            p = e.payload if e.type_version == version else _upcast(e)
            new = False
            view: Any
            if code == _TODO:
                key = p["todo_id"]
                expected = "todo-" + key
                view = self.todos.get(key)
                if view is None:
                    view, new = TodoView(key), True
            elif code == _BATCH:
                key = p["key"]
                expected = "batch-" + key
                view = self.batches.get(key)
                if view is None:
                    view, new = BatchView(key), True
            elif code == _PHASE:
                number = p["number"]
                expected = f"phase-{number}"
                view = self.phases.get(number)
                if view is None:
                    view, new = PhaseView(number), True
            else:
                expected = "run"
                view = self.run
            stream = e.stream
            if stream != expected:
                raise InvalidTransition(
                    stream=stream,
                    state=self.state_of(stream),
                    event=e.type,
                    seq=e.seq,
                    detail=f"this {kind} event names stream {expected}",
                )
            nxt = moves.get(view.state)
            if nxt is None:
                raise InvalidTransition(stream=stream, state=view.state, event=e.type, seq=e.seq)
            handler(self, view, p, e)
            view.state = nxt
            if new:
                self._insert(kind, view)
            live = self._live
            if live is not None and stream in live:
                live.sync(stream, nxt, finished=nxt in finished)
        self.last_seq = e.seq
        self.last_recorded_at = e.recorded_at
        self.last_hash = e.hash

    def apply_all(self, events: Iterable[StoredEvent]) -> int:
        """Fold events in log order; returns how many were applied."""
        n = 0
        apply = self.apply
        for e in events:
            apply(e)
            n += 1
        return n

    def _insert(self, kind: Kind, view: Any) -> None:
        if kind is Kind.TODO:
            self.todos[view.todo_id] = view
        elif kind is Kind.BATCH:
            self.batches[view.key] = view
        else:
            self.phases[view.number] = view

    def _apply_control(self, e: StoredEvent) -> None:
        if e.type not in _CONTROL:
            registry.cls_for(e.type)  # UnknownEventType if this batchd has never heard of it
            raise InvalidTransition(
                stream=e.stream,
                state=self.state_of(e.stream),
                event=e.type,
                seq=e.seq,
                detail="no machine of batchd takes this event type",
            )
        if e.stream != "control":
            raise InvalidTransition(
                stream=e.stream,
                state=self.state_of(e.stream),
                event=e.type,
                seq=e.seq,
                detail="control requests belong on stream control",
            )
        p = e.payload if e.type_version == 1 else _upcast(e)
        if e.type == "control.handled":
            answered = p["request_seq"]
            # Answering twice (or a request this log lacks) changes nothing: the answer is idempotent.
            self.controls_pending = [c for c in self.controls_pending if c.seq != answered]
        else:
            self.controls_pending.append(ControlRequest(e.seq, e.type, dict(p)))

    def phase_view(self, number: int) -> PhaseView:
        """The phase ``number``, created in state ``new`` if a batch names it before it is planned."""
        view = self.phases.get(number)
        if view is None:
            view = self.phases[number] = PhaseView(number)
        return view

    # -- looking up --------------------------------------------------------------------------

    def view(self, stream: str) -> TodoView | BatchView | PhaseView | RunView | None:
        """The view of the entity a stream names, or None if no event has named it yet."""
        kind, key = parse_stream(stream)
        if kind is Kind.TODO:
            return self.todos.get(key)
        if kind is Kind.BATCH:
            return self.batches.get(key)
        if kind is Kind.PHASE:
            return self.phases.get(int(key))
        return self.run

    def state_of(self, stream: str) -> str:
        """The state of a stream's entity (``new`` before its first event; ``none`` for other streams)."""
        try:
            found = self.view(stream)
        except ValueError:
            return "none"
        return "new" if found is None else found.state

    def is_finished(self, stream: str) -> bool:
        kind, _ = parse_stream(stream)
        return self.state_of(stream) in _FINISHED_STATES[kind]

    def shown(self, todo_id: str) -> str:
        """A todo's id as a person wrote it in its file name (leading zeros kept): for display only;
        every mapping and stream keeps the key."""
        todo = self.todos.get(todo_id)
        return written_id(todo_id, todo.path) if todo is not None else todo_id

    def todos_in(self, *states: str) -> list[TodoView]:
        """Todos in any of ``states``, in id order."""
        wanted = set(states)
        return sorted(
            (t for t in self.todos.values() if t.state in wanted), key=lambda t: id_order(t.todo_id)
        )

    def batch_todos(self, key: str) -> list[TodoView]:
        """The todos of batch ``key``, in the batch's order (ids the log never recorded are left out)."""
        batch = self.batches.get(key)
        if batch is None:
            return []
        return [self.todos[i] for i in batch.todo_ids if i in self.todos]

    def current_phase(self) -> PhaseView | None:
        """The lowest-numbered phase not done yet."""
        open_ = [n for n, ph in self.phases.items() if ph.state != "done"]
        return self.phases[min(open_)] if open_ else None

    def current_batch(self) -> BatchView | None:
        """The first batch, in plan order of the current phase, that is not done yet."""
        phase = self.current_phase()
        keys: Iterable[str] = phase.batches if phase is not None else self.batches
        for key in keys:
            batch = self.batches.get(key)
            if batch is not None and batch.state != "done":
                return batch
        return None

    def running_agents(self) -> list[TodoView]:
        """Todos whose agent has started and not ended (state running), in id order."""
        return self.todos_in("running")

    def unfinished(self) -> list[TodoView]:
        """Todos not complete and not cancelled (blocked, invalid and failed ones included), in id order."""
        done = _FINISHED_STATES[Kind.TODO]
        return sorted(
            (t for t in self.todos.values() if t.state not in done), key=lambda t: id_order(t.todo_id)
        )

    # -- live machines -----------------------------------------------------------------------

    @property
    def live(self) -> LiveMachines:
        if self._live is None:
            self._live = LiveMachines(guards=self)
        return self._live

    # The data the machines' conditions ask about (statemachine.machines.Guards).

    def dependencies_accepted(self, stream: str) -> bool:
        todo = self.todos.get(parse_stream(stream)[1])
        if todo is None:
            return False
        for dep in todo.dependencies:
            view = self.todos.get(id_key(dep)) if dep.isdigit() else None
            if view is None or view.state not in ("accepted", "complete"):
                return False
        return True

    def earlier_phases_done(self, stream: str) -> bool:
        phase = self.phases.get(int(parse_stream(stream)[1]))
        if phase is None:
            return False
        place = (phase.final, phase.number)
        return all(p.state == "done" for p in self.phases.values() if (p.final, p.number) < place)

    def machine(self, stream: str) -> LiveModel:
        """The live ``transitions`` model of a stream's entity at its projected state.

        Kept (and moved along by :meth:`apply`) while the entity is unfinished; for a finished one (a
        complete or cancelled todo, a done batch or phase) a fresh model is returned and not kept.
        """
        kind, _ = parse_stream(stream)
        state = self.state_of(stream)
        return self.live.get(stream, kind, state, keep=state not in _FINISHED_STATES[kind])

    def may(self, stream: str, trigger: str) -> bool:
        """Whether the stream's entity may take ``trigger`` now (``may_<trigger>()`` of its live model)."""
        return self.machine(stream).may(trigger)

    def triggers(self, stream: str) -> list[str]:
        return self.machine(stream).triggers()

    # -- snapshots ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (lists, no tuples): ``from_json(to_json())`` is an exact copy."""
        return {
            "format": SNAPSHOT_FORMAT,
            "layout": layout(),
            "todos": [dump_todo(t) for t in self.todos.values()],
            "batches": [BATCH.dump(b) for b in self.batches.values()],
            "phases": [PHASE.dump(p) for p in self.phases.values()],
            "run": dump_run(self.run),
            "controls_pending": [[c.seq, c.type, dict(c.payload)] for c in self.controls_pending],
            "last_seq": self.last_seq,
            "last_recorded_at": self.last_recorded_at,
            "last_hash": self.last_hash,
            "verify_runs": self.verify_runs,
            "agents_started": self.agents_started,
            "flakes": self.flakes.to_json(),
            "known_red": [list(pair) for pair in self.known_red],
            "dispatch": self.dispatch.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, name: str = SNAPSHOT_NAME) -> Projection:
        if data.get("format") != SNAPSHOT_FORMAT:
            raise SnapshotIncompatible(
                name=name, detail=f"format {data.get('format')!r}, expected {SNAPSHOT_FORMAT}"
            )
        check_layout(name, data.get("layout"))
        pr = cls()
        for row in data["todos"]:
            t = load_todo(row)
            pr.todos[t.todo_id] = t
        for row in data["batches"]:
            b: BatchView = BATCH.load(row)
            pr.batches[b.key] = b
        for row in data["phases"]:
            ph: PhaseView = PHASE.load(row)
            pr.phases[ph.number] = ph
        pr.run = load_run(data["run"])
        pr.controls_pending = [ControlRequest(s, t, p) for s, t, p in data["controls_pending"]]
        pr.last_seq = data["last_seq"]
        pr.last_recorded_at = data["last_recorded_at"]
        pr.last_hash = data["last_hash"]
        pr.verify_runs = data["verify_runs"]
        pr.agents_started = data["agents_started"]
        pr.flakes = FlakeModel.from_json(data["flakes"])
        pr.known_red = tuple((str(k), str(t)) for k, t in data.get("known_red", ()))
        pr.dispatch = Dispatch.from_json(data.get("dispatch", {}))
        return pr

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Projection):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return (
            f"<Projection seq={self.last_seq} todos={len(self.todos)} batches={len(self.batches)} "
            f"phases={len(self.phases)} run={self.run.state}>"
        )


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC during a bulk load: it makes millions of acyclic objects (JSON lists, views),
    and each full collection re-scans all of them (measured: GC took half of a 10k-todo restart)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def save_snapshot(event_log: EventLog, projection: Projection, *, name: str = SNAPSHOT_NAME) -> None:
    """Store the projection as the latest snapshot ``name`` (at its ``last_seq``)."""
    event_log.save_snapshot(name, projection.last_seq, projection.to_json())


def _from_snapshot(
    event_log: EventLog, name: str, until: int | None, at: datetime | None
) -> Projection | None:
    snap = event_log.load_snapshot(name)
    if snap is None or snap.seq == 0 or (until is not None and snap.seq > until):
        return None  # (a snapshot at seq 0 holds nothing replay from zero would not rebuild)
    if snap.check != "ok":
        log.warning("snapshot_ignored", name=name, seq=snap.seq, reason=f"its hash check says {snap.check}")
        return None
    try:
        pr = Projection.from_json(snap.state, name=name)
    except SnapshotIncompatible as e:
        log.warning("snapshot_ignored", name=name, seq=snap.seq, reason=e.detail)
        return None
    # recorded_at follows seq (one clock, one writer), so the snapshot is a prefix of the log up to ``at``.
    if at is not None and pr.last_recorded_at > format_time(at):
        return None
    # The snapshot must end on the very event the log holds at its seq (not a log replaced since).
    rows = list(event_log.read(since=snap.seq - 1, until=snap.seq))
    if not rows or rows[0].hash != pr.last_hash or pr.last_seq != snap.seq:
        log.warning(
            "snapshot_ignored", name=name, seq=snap.seq, reason="it does not match the log at its seq"
        )
        return None
    return pr


def snapshot_matches_replay(event_log: EventLog, report: AuditReport) -> AuditReport:
    """``report``, or a failing one when the latest snapshot is not what replaying the log up to its
    seq gives (the snapshot's own hash only shows it was not edited since it was saved)."""
    snap = event_log.load_snapshot(SNAPSHOT_NAME)
    if snap is None or snap.seq == 0:
        return report
    rebuilt = replay(event_log, until=snap.seq, use_snapshot=False)
    try:
        same = Projection.from_json(snap.state).to_json() == rebuilt.to_json()
    except SnapshotIncompatible:
        return report  # written by a batchd with other fields: not comparable, and not used by replay
    except (KeyError, TypeError, ValueError, IndexError):
        same = False
    if same:
        return report
    problem = f"the snapshot at {snap.seq} is not what replaying the log to {snap.seq} gives (edited)"
    return AuditReport(
        checked=report.checked, last_seq=report.last_seq, first_bad_seq=snap.seq, problem=problem
    )


def replay(
    event_log: EventLog,
    *,
    until: int | None = None,
    at: datetime | None = None,
    use_snapshot: bool = True,
    snapshot_name: str = SNAPSHOT_NAME,
) -> Projection:
    """Rebuild the projection from the log: the latest usable snapshot plus the events after it.

    ``until`` (a seq) and ``at`` (a moment) give the state as it was then; a snapshot newer than
    either is not used (replay starts from zero). Nothing but the projection is changed.
    """
    with _gc_paused():
        pr = _from_snapshot(event_log, snapshot_name, until, at) if use_snapshot else None
        if pr is None:
            pr = Projection()
        pr.apply_all(event_log.read(since=pr.last_seq, until=until, at=at))
    return pr
