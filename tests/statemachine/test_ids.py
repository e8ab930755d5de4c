"""statemachine.ids: the key of a todo id, the form a person types, and the form its file writes."""

from __future__ import annotations

import pytest

from statemachine.ids import user_id, written_id


@pytest.mark.parametrize("typed", ["282", "0282", "#282", "todo-282", "todo-0282", " 0282 "])
def test_every_id_form_a_person_types_names_the_same_todo(typed: str) -> None:
    """`282`, `0282` and `todo-282` (and `#282`) all read as the todo whose key is 282."""
    assert user_id(typed) == "282"


@pytest.mark.parametrize("typed", ["", "todo-", "batch-1.1", "28x", "phase-1"])
def test_text_that_is_no_todo_id_reads_as_none(typed: str) -> None:
    """Stream names of other kinds and words are not todo ids."""
    assert user_id(typed) is None


def test_the_shown_id_keeps_the_leading_zeros_of_its_file_name() -> None:
    """A todo filed as 0282-… is shown as 0282 (its key stays 282); completed, the same."""
    assert written_id("282", "todos/0282-ready-p2-surge.md") == "0282"
    assert written_id("282", "todos/0282-complete-p2-surge.md") == "0282"


def test_the_shown_id_is_the_key_when_the_name_says_nothing_else() -> None:
    """Without a file (or with a name of another id) the key is shown as it is."""
    assert written_id("282", "") == "282"
    assert written_id("282", "todos/283-ready-p2-x.md") == "282"
    assert written_id("file:broken.md", "todos/broken.md") == "file:broken.md"
