"""Live ``transitions`` machines for the entities still in flight, built from the rows in :mod:`tables`.

History is folded as plain look-ups in :data:`tables.NEXT_STATE` (see :mod:`statemachine.projection`);
a live machine answers "what may happen next" (``may_<trigger>()``, ``get_triggers(state)``) for an
unfinished todo, batch, phase or the run. Models start at their projected state (never by replaying
triggers), carry no callbacks, and are dropped when the entity finishes, so a long-running daemon
holds machines only for what is in flight.

Measured here (2 cores, shared with other work; transitions 0.9.3, the todo machine: 15 states,
18 transitions, 72 source rows), 20,000 models:

- one ``Machine(model=...)`` per model from a pre-parsed config: 26.5 s (754 models/s; 12.8 s with
  the GC off): each Machine re-creates every Transition object of the table (~1.2 ms each).
- one shared Machine, ``add_model`` one by one: 28.7 s (697/s; 14.8 s with the GC off); at 2,000
  models it ran 2,000-2,900 models/s against 600-840/s per-model Machines: ``add_model`` only binds
  triggers, and its linear membership check (quadratic overall) only dominates near 20,000 models.

So: one shared Machine per kind per projection, models added lazily (only when the daemon asks about an
entity) and removed when the entity finishes. The live set is bounded by what is in flight (running
agents, the current batch and phase, the run), tens of models, where the shared machine is ~3x
cheaper per model and the quadratic term is negligible. A ``may_<trigger>()`` call costs ~15 µs.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Protocol

from transitions import Machine

from statemachine.exceptions import InvalidTransition
from statemachine.tables import INITIAL, STATES, TRANSITIONS, Kind

__all__ = ["Guards", "LiveMachines", "LiveModel", "machine_config"]


class Guards(Protocol):
    """The data the transitions' conditions ask about (the projection answers)."""

    def dependencies_accepted(self, stream: str) -> bool: ...

    def earlier_phases_done(self, stream: str) -> bool: ...


class LiveModel:
    """The model of one entity. ``transitions`` binds ``<trigger>()``, ``may_<trigger>()`` and
    ``is_<state>()`` on it; :meth:`may`, :meth:`fire` and :meth:`triggers` are the typed way in."""

    def __init__(self, stream: str, kind: Kind, guards: Guards | None = None) -> None:
        self.stream = stream
        self.kind = kind
        self.state: str = INITIAL[kind]
        self.machine: Any = None  # set by LiveMachines: the shared Machine of this kind
        # None: a model on its own, with no data to check against (the table alone decides).
        self.guards = guards

    # -- conditions of the transitions (named in statemachine.tables) --

    def dependencies_accepted(self) -> bool:
        """A todo is planned only once every dependency it names is accepted or complete."""
        return self.guards is None or self.guards.dependencies_accepted(self.stream)

    def earlier_phases_done(self) -> bool:
        """A phase starts, and is committed, only after every phase before it is done."""
        return self.guards is None or self.guards.earlier_phases_done(self.stream)

    def may(self, trigger: str) -> bool:
        """True when ``trigger`` is allowed in the current state (False for a trigger of another kind)."""
        check = getattr(self, f"may_{trigger}", None)
        return bool(check()) if check is not None else False

    def triggers(self) -> list[str]:
        """Every trigger the current state allows, sorted."""
        return sorted(self.machine.get_triggers(self.state))

    def fire(self, trigger: str, *, event: str = "") -> str:
        """Fire ``trigger`` on this model only (for checks and what-if); returns the new state.

        The projection stays the source of truth: the daemon appends the event and applies it, and the
        projection moves this model to the folded state. A trigger the state does not allow raises
        :class:`InvalidTransition` naming stream, state and event.
        """
        if not self.may(trigger):
            raise InvalidTransition(stream=self.stream, state=self.state, event=event or trigger)
        getattr(self, trigger)()
        return self.state


@cache
def machine_config(kind: Kind) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    """The states and transition rows of one kind, parsed once from :data:`tables.TRANSITIONS`."""
    states = tuple(str(s) for s in STATES[kind])
    rows = tuple(
        {
            "trigger": t.trigger,
            "source": [str(s) for s in t.sources],
            "dest": None if t.dest is None else str(t.dest),  # None: internal, state unchanged
            **({"conditions": list(t.conditions)} if t.conditions else {}),
        }
        for t in TRANSITIONS[kind]
    )
    return states, rows


def new_machine(kind: Kind) -> Any:
    states, rows = machine_config(kind)
    return Machine(
        model=None,
        states=list(states),
        transitions=[dict(r) for r in rows],
        initial=INITIAL[kind],
        auto_transitions=False,
        ignore_invalid_triggers=False,
        name=f"{kind}-",
    )


class LiveMachines:
    """The live models of one projection: one shared Machine per kind, models keyed by stream."""

    def __init__(self, guards: Guards | None = None) -> None:
        self._machines: dict[Kind, Any] = {}
        self._models: dict[str, LiveModel] = {}
        self._guards = guards

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, stream: object) -> bool:
        return stream in self._models

    def streams(self) -> list[str]:
        return list(self._models)

    def get(self, stream: str, kind: Kind, state: str, *, keep: bool = True) -> LiveModel:
        """The model of ``stream`` at ``state``; with ``keep=False`` (finished entity) it is not retained."""
        model = self._models.get(stream)
        if model is not None:
            if model.state != state:  # a what-if fire() moved it: the fold is the truth
                model.machine.set_state(state, model=model)
            return model
        machine = self._machines.get(kind)
        if machine is None:
            machine = self._machines[kind] = new_machine(kind)
        model = LiveModel(stream, kind, self._guards)
        model.machine = machine
        machine.add_model(model, initial=state)
        if keep:
            self._models[stream] = model
        else:
            # The bound may_/trigger methods keep working; the machine just stops referencing the model.
            machine.remove_model(model)
        return model

    def sync(self, stream: str, state: str, *, finished: bool) -> None:
        """Follow the fold: move a held model to ``state``, or drop it when its entity finished."""
        model = self._models.get(stream)
        if model is None:
            return
        if finished:
            self.drop(stream)
        else:
            model.machine.set_state(state, model=model)

    def drop(self, stream: str) -> None:
        model = self._models.pop(stream, None)
        if model is not None:
            model.machine.remove_model(model)
