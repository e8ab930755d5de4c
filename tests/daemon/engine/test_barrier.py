"""daemon.engine.barrier.decide as a pure function over built projections: the seed's batches,
each waiting for the one before it."""

from __future__ import annotations

from daemon.engine import commands as cmd
from daemon.engine.barrier import decide
from engine.history import BASE, History, facts, seed_like, started
from statemachine import events as ev


def start(h: History, key: str, phase: int, ids: tuple[str, ...], base: str = BASE) -> History:
    """Batch ``key`` started with ``ids`` (planned into it)."""
    for t in ids:
        h.add(ev.todo_stream(t), ev.TodoPlanned(todo_id=t, batch=key, phase=phase))
    return h.add(ev.batch_stream(key), ev.BatchStarted(key=key, base_sha=base, todo_ids=ids))


def green(h: History, key: str, sha: str = BASE) -> History:
    return h.add(
        ev.batch_stream(key),
        ev.BatchVerifyRun(key=key, run=0, todo_ids=(), passed=True, baseline=True, sha=sha),
    )


def verified(key: str, *, accepted: tuple[str, ...], rejected: tuple[str, ...]) -> ev.BatchVerified:
    return ev.BatchVerified(
        key=key, head_sha="c" * 40, accepted=accepted, rejected=rejected, conflicted=(), failed=(), runs=1
    )


def test_the_first_batch_checks_its_base_first() -> None:
    h = seed_like().start_phase(1)
    assert decide(h.projection(), facts()) == [cmd.Baseline(key="1.1", base_sha=BASE)]
    assert decide(h.projection(), facts(busy=frozenset({"baseline-1.1"}))) == []


def test_a_green_batch_starts_with_its_ready_todos() -> None:
    h = green(seed_like().start_phase(1), "1.1")
    assert decide(h.projection(), facts()) == [
        cmd.StartBatch(key="1.1", phase=1, base_sha=BASE, todo_ids=("1", "2"))
    ]


def test_agents_start_up_to_the_free_slots_and_later_batches_wait() -> None:
    """One slot: 1 starts, 2 waits for it; batch 1.2 and phase 2 start nothing (the barrier)."""
    h = start(green(seed_like().start_phase(1), "1.1"), "1.1", 1, ("1", "2"))
    out = decide(h.projection(), facts(slots=1))
    assert out == [cmd.StartAgent(todo_id="1", batch="1.1", phase=1, base_sha=BASE, plan=False)]
    h.running("1", "1.1", 1, plan=False)
    assert started(decide(h.projection(), facts(slots=1))) == []


def test_the_batch_verifies_once_every_agent_is_done() -> None:
    h = start(green(seed_like().start_phase(1), "1.1"), "1.1", 1, ("1", "2"))
    h.finished("1", "1.1", 1, plan=False).running("2", "1.1", 1, plan=False)
    assert decide(h.projection(), facts()) == []
    h.add(
        ev.todo_stream("2"),
        ev.AgentFinished(
            todo_id="2", attempt=1, returncode=0, duration=1.0, commit="2" * 40, files=("f2.py",)
        ),
    )
    assert decide(h.projection(), facts()) == [
        cmd.VerifyBatch(key="1.1", base_sha=BASE, candidates=("1", "2"))
    ]


def test_a_batch_whose_agents_all_failed_is_finished_without_verification() -> None:
    h = start(green(seed_like().start_phase(1), "1.1"), "1.1", 1, ("1",))
    h.running("1", "1.1", 1, plan=False)
    h.add(ev.todo_stream("1"), ev.AgentFailed(todo_id="1", attempt=1, reason="exit", detail="exited 1"))
    assert decide(h.projection(), facts()) == [cmd.FinishBatch(key="1.1")]


def test_a_todo_ready_again_gets_a_retry_batch_of_its_phase() -> None:
    """Batch 1.1 accepted 1 and rejected 2 (retry scheduled): a batch 1.r1 is planned for 2."""
    h = History().todo("1").todo("2").plan({1: [["1", "2"]]}).start_phase(1)
    h = start(green(h, "1.1"), "1.1", 1, ("1", "2"))
    h.finished("1", "1.1", 1, plan=False).finished("2", "1.1", 1, plan=False)
    for t in ("1", "2"):
        h.add(ev.todo_stream(t), ev.TodoVerifying(todo_id=t, batch="1.1"))
    h.add(ev.batch_stream("1.1"), ev.BatchVerifying(key="1.1", base_sha=BASE, candidates=("1", "2")))
    h.add(ev.todo_stream("1"), ev.TodoAccepted(todo_id="1", batch="1.1", commit="1" * 40))
    rejected = ev.TodoRejected(
        todo_id="2",
        batch="1.1",
        attempt=1,
        command=("make",),
        output_tail="",
        files_reverted=(),
        action="retry",
    )
    h.add(ev.todo_stream("2"), rejected)
    h.add(ev.todo_stream("2"), ev.TodoRetryScheduled(todo_id="2", next_attempt=2, reason="r", repair=""))
    h.add(ev.batch_stream("1.1"), verified("1.1", accepted=("1",), rejected=("2",)), ev.BatchDone(key="1.1"))
    out = decide(h.projection(), facts())
    assert out == [cmd.PlanRetryBatch(phase=1, key="1.r1", todo_ids=("2",), retry_of="1.1")]


def test_a_phase_with_everything_accepted_commits_and_phase_two_waits() -> None:
    h = History().todo("1").todo("2").plan({1: [["1"]], 2: [["2"]]}).start_phase(1)
    h = start(green(h, "1.1"), "1.1", 1, ("1",)).finished("1", "1.1", 1, plan=False)
    h.add(ev.todo_stream("1"), ev.TodoVerifying(todo_id="1", batch="1.1"))
    h.add(ev.batch_stream("1.1"), ev.BatchVerifying(key="1.1", base_sha=BASE, candidates=("1",)))
    h.add(ev.todo_stream("1"), ev.TodoAccepted(todo_id="1", batch="1.1", commit="1" * 40))
    h.add(
        ev.batch_stream("1.1"),
        ev.BatchVerified(
            key="1.1", head_sha="c" * 40, accepted=("1",), rejected=(), conflicted=(), failed=(), runs=1
        ),
        ev.BatchDone(key="1.1"),
    )
    assert decide(h.projection(), facts()) == [cmd.CommitPhase(number=1)]


def test_a_paused_batch_resumes_on_a_persons_commit() -> None:
    h = seed_like().start_phase(1)
    h.add(
        ev.batch_stream("1.1"), ev.BatchPaused(key="1.1", base_sha=BASE, command=("make",), output_tail="red")
    )
    assert decide(h.projection(), facts()) == []
    fix = "f" * 40
    out = decide(h.projection(), facts(branch_head=fix, moved_on=True))
    assert out == [cmd.RebasePhase(number=1, base_sha=fix, previous=BASE, resume="1.1")]


def test_no_rebase_while_the_old_bases_baseline_is_running() -> None:
    """A person's commit lands while the batch's baseline of the old base runs: the rebase waits for
    that result (acted on, it would pause a phase whose base moved on)."""
    h = seed_like().start_phase(1)
    fix = "f" * 40
    busy = facts(branch_head=fix, moved_on=True, busy=frozenset({"baseline-1.1"}))
    assert decide(h.projection(), busy) == []
    assert decide(h.projection(), facts(branch_head=fix, moved_on=True)) == [
        cmd.RebasePhase(number=1, base_sha=fix, previous=BASE)
    ]
