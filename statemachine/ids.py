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
