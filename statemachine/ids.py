"""Todo ids: their one canonical key and their one ordering, shared by every package."""

from __future__ import annotations


def id_order(todo_id: str) -> tuple[int, int, str]:
    """Sort key for ids and id keys: numeric ids as numbers (``9`` before ``10``), lower first (the
    seed's priority rule); anything else (an invalid file's ``file:<name>`` key) after them, in text
    order."""
    return (0, int(todo_id), todo_id) if todo_id.isdigit() else (1, 0, todo_id)


def id_key(todo_id: str | int) -> str:
    """The canonical key of an id: ``"001"``, ``"1"`` and ``1`` all give ``"1"``."""
    return str(int(todo_id))


def written_id(todo_id: str, path: str) -> str:
    """The id as the todo's file name writes it (``"0282"`` for ``todos/0282-ready-p2-x.md``): what a
    person sees wherever an id is shown. The key itself when the name does not write it that way."""
    written = path.rsplit("/", 1)[-1].split("-", 1)[0]
    if written.isdigit() and todo_id.isdigit() and id_key(written) == todo_id:
        return written
    return todo_id


def user_id(text: str) -> str | None:
    """The key of an id as a person types it (``282``, ``0282``, ``#282``, ``todo-282``, ``todo-0282``),
    or None when the text is no todo id. The one reading of a user's id form."""
    bare = text.strip().removeprefix("#").removeprefix("todo-")
    return id_key(bare) if bare.isdigit() else None
