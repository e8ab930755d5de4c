"""The one reading of a todo id a person typed, against the todos the log knows."""

from __future__ import annotations

import difflib

from daemon.exceptions import Refused, UsageError
from statemachine.ids import id_order, user_id
from statemachine.projection import Projection


def known_todo(proj: Projection, text: str) -> str:
    """The key of the todo a person named (``282``, ``0282``, ``todo-282``); refused at once (exit 1,
    nothing recorded) when the log knows no such todo, naming the closest ids it knows."""
    key = user_id(text)
    if key is not None and key in proj.todos:
        return key
    if key is None:
        raise UsageError(f"{text!r} is not a todo id", hint="give its number, e.g. `batchd retry 273`")
    shown = sorted((proj.shown(t) for t in proj.todos), key=id_order)
    close = difflib.get_close_matches(text.removeprefix("todo-"), shown, n=3, cutoff=0.5)
    raise Refused(
        f"no todo #{text} in the log",
        hint=(f"did you mean {', '.join('#' + c for c in close)}? " if close else "")
        + "`batchd status` lists the todos",
    )
