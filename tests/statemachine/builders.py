"""Events for tests, built from the tables: fixed values, random values, paths through a machine."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from hypothesis import strategies as st

from statemachine import events as ev
from statemachine.tables import EVENT_TRIGGERS, INITIAL, NEXT_STATE, STATES, TRANSITIONS, Kind
from store import Append, EventLog, StoredEvent, registry

AT = "2026-01-01T00:00:00.000000Z"

#: (kind, trigger) -> the one event class that fires it
EVENT_FOR: dict[tuple[Kind, str], type[Any]] = {v: k for k, v in EVENT_TRIGGERS.items()}

#: A sample entity of each kind: (stream, the payload fields that name it)
ENTITY: dict[Kind, tuple[str, dict[str, Any]]] = {
    Kind.TODO: ("todo-7", {"todo_id": "7"}),
    Kind.BATCH: ("batch-2.1", {"key": "2.1"}),
    Kind.PHASE: ("phase-3", {"number": 3}),
    Kind.RUN: ("run", {}),
}

_ID_FIELDS = {"todo_id", "key", "number"}


def triggers(kind: Kind) -> list[str]:
    return sorted({t.trigger for t in TRANSITIONS[kind]})


def states(kind: Kind) -> list[str]:
    return [str(s) for s in STATES[kind]]


def declared_rows() -> list[tuple[Kind, str, str, str]]:
    """Every (kind, source state, trigger, next state) the tables declare."""
    return sorted((k, s, t, n) for (k, s, t), n in NEXT_STATE.items())


def undeclared_pairs() -> list[tuple[Kind, str, str]]:
    """Every (kind, state, trigger) of a kind's own triggers that the tables do not declare."""
    return [(k, s, t) for k in Kind for s in states(k) for t in triggers(k) if (k, s, t) not in NEXT_STATE]


def path_to(kind: Kind, target: str) -> list[str] | None:
    """The shortest list of triggers from the initial state to ``target`` (None: unreachable)."""
    start = str(INITIAL[kind])
    seen = {start: list[str]()}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        if state == target:
            return seen[state]
        for (k, s, t), nxt in sorted(NEXT_STATE.items()):
            if k == kind and s == state and nxt not in seen:
                seen[nxt] = [*seen[state], t]
                queue.append(nxt)
    return None


def _fixed(tp: Any) -> Any:
    if tp is str:
        return "x"
    if tp is bool:
        return False
    if tp is int:
        return 1
    if tp is float:
        return 1.5
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if Ellipsis not in args:  # a fixed-length tuple such as (reds, runs)
            return tuple(_fixed(a) for a in args)
        inner = args[0]
        if typing.get_origin(inner) is not tuple:
            return ("a",)  # strings
        parts = typing.get_args(inner)
        if all(a is str for a in parts) and len(parts) == 2:
            return (("a", "b"),)  # pairs of strings, such as (todo id, state)
        return (tuple(_fixed(a) for a in parts),)  # records such as (command, runs, reds)
    if origin is dict:
        return {}
    return None  # an optional field


def event(kind: Kind, trigger: str, ids: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """The event firing ``trigger`` on the sample entity of ``kind`` (or ``ids``), fixed values elsewhere."""
    cls = EVENT_FOR[(kind, trigger)]
    hints = typing.get_type_hints(cls)
    values = {f.name: _fixed(hints[f.name]) for f in dataclasses.fields(cls)}
    if "dependencies" in values:
        values["dependencies"] = ()  # a todo depending on nothing (a dependency is a todo id)
    values.update(ENTITY[kind][1] if ids is None else ids)
    values.update(overrides)
    return cls(**values)


def _random(tp: Any) -> st.SearchStrategy[Any]:
    if tp is str:
        return st.text(max_size=6)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(0, 10**6)
    if tp is float:
        return st.floats(0, 1e5, allow_nan=False, allow_infinity=False)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if Ellipsis not in args:  # a fixed-length tuple such as (reds, runs)
            return st.tuples(*(_small(a) for a in args))
        inner = args[0]
        if typing.get_origin(inner) is tuple:  # pairs such as (todo id, state), records (command, runs, reds)
            record = st.tuples(*(_small(a) for a in typing.get_args(inner)))
            return st.lists(record, max_size=3).map(tuple)
        return st.lists(st.text(max_size=4), max_size=3).map(tuple)
    if origin is dict:
        return st.just({})
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return st.none() | _random(args[0])


def _small(tp: Any) -> st.SearchStrategy[Any]:
    """A part of a record: a short string, or a small count (of runs, of reds)."""
    return st.integers(0, 6) if tp is int else st.text(max_size=4)


def random_event(cls: type[Any], ids: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Events of ``cls`` naming ``ids``, other fields random."""
    key = (cls, tuple(sorted(ids.items())))
    found = _STRATEGIES.get(key)
    if found is None:
        found = _STRATEGIES[key] = _random_event(cls, ids)
    return found


_STRATEGIES: dict[tuple[type[Any], tuple[tuple[str, Any], ...]], st.SearchStrategy[Any]] = {}


def _random_event(cls: type[Any], fixed: dict[str, Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: _random(hints[f.name]) for f in dataclasses.fields(cls) if f.name not in fixed}
    return st.builds(cls, **fields, **{k: st.just(v) for k, v in fixed.items()})


def stored(seq: int, stream: str, evt: object, *, at: str = AT) -> StoredEvent:
    """The row the log would hold for ``evt`` at ``seq`` (payload as encoded, tuples and all)."""
    name, version, payload = registry.encode(evt)
    return StoredEvent(seq, stream, seq, name, version, payload, at, f"hash-{seq}")


def number(pairs: Iterable[tuple[str, object]]) -> list[StoredEvent]:
    return [stored(i, s, e) for i, (s, e) in enumerate(pairs, start=1)]


def write(log: EventLog, pairs: list[tuple[str, object]]) -> None:
    """Append in order, a few transactions: a chunk never names a stream twice (versions stay right)."""
    chunk: list[Append] = []
    for stream, evt in pairs:
        if any(a.stream == stream for a in chunk):
            log.append_many(chunk)
            chunk = []
        chunk.append(Append(stream, [evt]))
    log.append_many(chunk)


# --- random valid histories ---------------------------------------------------------------------

TODO_IDS = ("1", "2", "3")
BATCH_KEYS = ("1.1", "1.2")
PHASES = (1, 2)
CONTROLS = (ev.RetryRequested, ev.CancelRequested, ev.PauseRequested, ev.ResumeRequested)


def _entities() -> list[tuple[Kind, str, dict[str, Any]]]:
    out: list[tuple[Kind, str, dict[str, Any]]] = [(Kind.TODO, f"todo-{t}", {"todo_id": t}) for t in TODO_IDS]
    out += [(Kind.BATCH, f"batch-{k}", {"key": k}) for k in BATCH_KEYS]
    out += [(Kind.PHASE, f"phase-{n}", {"number": n}) for n in PHASES]
    out.append((Kind.RUN, "run", {}))
    return out


ENTITIES = _entities()
# Todos have the longest machine: pick them three times as often, so walks reach their late states.
_WALKED = [e for e in ENTITIES for _ in range(3 if e[0] is Kind.TODO else 1)]


_TODO_HAPPY = {
    "new": ("queue",),
    "pending": ("queue",),
    "ready": ("plan",),
    "planned": ("start_agent",),
    "running": ("spawned", "agent_done", "agent_fail"),
    "agent_done": ("verify",),
    "verifying": ("accept", "reject", "conflict"),
    "accepted": ("complete",),
    "agent_failed": ("retry",),
    "rejected": ("retry",),
    "conflicted": ("retry",),
}
_FORWARD = {(Kind.TODO, s): t for s, t in _TODO_HAPPY.items()}


@functools.cache
def _depth(kind: Kind, state: str) -> int:
    path = path_to(kind, state)
    return -1 if path is None else len(path)


def _deeper(kind: Kind, state: str, trigger: str) -> bool:
    return _depth(kind, NEXT_STATE[(kind, state, trigger)]) > _depth(kind, state)


@st.composite
def histories(draw: Callable[[st.SearchStrategy[Any]], Any], max_len: int = 50) -> list[tuple[str, object]]:
    """A random valid history: walk the machines, each step a trigger the entity's state allows."""
    state = {stream: str(INITIAL[kind]) for kind, stream, _ in ENTITIES}
    pending: list[int] = []
    out: list[tuple[str, object]] = []
    for _ in range(draw(st.integers(0, max_len))):
        if draw(st.integers(0, 9)) == 0:  # a control request or answer, now and then
            if pending and draw(st.booleans()):
                seq = pending.pop(draw(st.integers(0, len(pending) - 1)))
                out.append(("control", ev.ControlHandled(request_seq=seq, outcome="done")))
            else:
                cls = draw(st.sampled_from(CONTROLS))
                ids = (
                    {"todo_id": draw(st.sampled_from(TODO_IDS))}
                    if "todo_id" in cls.__dataclass_fields__
                    else {}
                )
                out.append(("control", draw(random_event(cls, ids))))
                pending.append(len(out))
            continue
        kind, stream, ids = draw(st.sampled_from(_WALKED))
        allowed = [t for t in triggers(kind) if (kind, state[stream], t) in NEXT_STATE]
        # Mostly move forward, or a plain random walk rarely gets past the first states.
        forward = [t for t in allowed if t in _FORWARD.get((kind, state[stream]), ())]
        forward = forward or [t for t in allowed if _deeper(kind, state[stream], t)]
        if forward and draw(st.integers(0, 9)) < 7:
            allowed = forward
        if not allowed:
            continue
        trig = draw(st.sampled_from(allowed))
        cls = EVENT_FOR[(kind, trig)]
        extra = {"phase": draw(st.sampled_from(PHASES))} if cls is ev.BatchPlanned else {}
        out.append((stream, draw(random_event(cls, {**ids, **extra}))))
        state[stream] = NEXT_STATE[(kind, state[stream], trig)]
    return out
