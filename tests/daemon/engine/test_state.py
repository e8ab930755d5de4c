"""daemon.engine.state: the pure queries both policies share."""

from __future__ import annotations

from daemon.engine.state import current_phase
from engine.history import History
from statemachine import events as ev


def test_a_running_final_check_gives_way_to_work_that_arrived_meanwhile() -> None:
    """The final phase is checking when a todo becomes ready (a retry of a blocked todo of a done
    phase): there is no current phase, so the auto-planner plans it before the final check again."""
    h = History().todo("1").plan({1: [["1"]]})
    h.add(ev.phase_stream(1), ev.PhaseStarted(number=1, base_sha="b" * 40))
    for e in (
        ev.PhaseCommitting(number=1, todo_ids=(), message="m"),
        ev.PhaseCommitted(number=1, commits=("c" * 40,), head_sha="c" * 40),
        ev.PhaseDone(number=1),
    ):
        h.add(ev.phase_stream(1), e)
    h.add(
        ev.phase_stream(2),
        ev.PhasePlanned(number=2, title="Final", commit_message="", batches=(), final=True),
    )
    h.add(ev.phase_stream(2), ev.PhaseStarted(number=2, base_sha="c" * 40))
    done = ev.TodoCompleted(todo_id="1", path="todos/1-complete-p2-t.md", commit="c" * 40, phase=1)
    h.add(ev.todo_stream("1"), done)
    current = current_phase(h.projection())
    assert current is not None and current.number == 2  # nothing else to do: the check goes on
    h.todo("7")  # ready, and planned nowhere
    assert current_phase(h.projection()) is None
