"""daemon.engine.continuous.decide as a pure function over built projections: no git, no processes.

Each test folds a short history (a plan of phases and batches, todos in given states) into a
Projection and asks what the policy does next.
"""

from __future__ import annotations

from daemon.engine import commands as cmd
from daemon.engine.continuous import Facts, decide
from engine.history import BASE, History, facts, seed_like, started
from statemachine import events as ev

# --- the phase's start and its baseline --------------------------------------------------------


def test_the_first_phase_starts_on_the_branchs_head() -> None:
    assert decide(seed_like().projection(), facts()) == [cmd.StartPhase(number=1, base_sha=BASE)]


def test_no_agent_starts_before_the_base_was_seen_green() -> None:
    """The phase's base was never checked: a group is opened for its baseline, no agent runs yet."""
    out = decide(seed_like().start_phase(1).projection(), facts())
    assert out == [cmd.OpenGroup(key="1.v1", phase=1)]


def test_the_open_groups_baseline_is_run_once() -> None:
    h = (
        seed_like()
        .start_phase(1)
        .add(ev.batch_stream("1.v1"), ev.BatchPlanned(key="1.v1", phase=1, todo_ids=()))
    )
    assert decide(h.projection(), facts()) == [cmd.Baseline(key="1.v1", base_sha=BASE)]
    assert decide(h.projection(), facts(busy=frozenset({"baseline-1.v1"}))) == []


# --- slot refill --------------------------------------------------------------------------------


def test_free_slots_take_todos_across_batches_and_phases_in_plan_order() -> None:
    """Five slots, six independent todos: the first five in plan order (phase, batch, plan order)
    start at once, phase 2's too; batch 1.2 does not wait for batch 1.1."""
    out = decide(seed_like().start_phase(1).green("1.v1", 1).projection(), facts(slots=5))
    assert started(out) == ["1", "2", "3", "4", "5"]
    first = next(c for c in out if isinstance(c, cmd.StartAgent))
    assert first == cmd.StartAgent(todo_id="1", batch="1.1", phase=1, base_sha=BASE, plan=True)


def test_a_slot_freed_is_refilled_at_once() -> None:
    """Two slots: 1 and 2 run; when 1 finishes, 3 starts in the same decision that verifies 1."""
    h = seed_like().start_phase(1).green("1.v1", 1).running("2", "1.1", 1).finished("1", "1.1", 1)
    out = decide(h.projection(), facts(slots=2))
    assert started(out) == ["3"]
    assert cmd.VerifyGroup(key="1.v1", base_sha=BASE, candidates=("1",)) in out


def test_no_slot_no_start() -> None:
    h = seed_like().start_phase(1).green("1.v1", 1).running("1", "1.1", 1).running("2", "1.1", 1)
    assert started(decide(h.projection(), facts(slots=2))) == []


def test_no_new_agent_while_stopping() -> None:
    h = seed_like().start_phase(1).green("1.v1", 1)
    assert started(decide(h.projection(), facts(accepting=False))) == []


# --- dependencies and files --------------------------------------------------------------------


def test_a_todo_waits_until_its_dependency_is_accepted() -> None:
    h = History().todo("1").todo("2", deps=["1"]).plan({1: [["1"], ["2"]]}).start_phase(1).green("1.v1", 1)
    assert started(decide(h.projection(), facts())) == ["1"]
    h.finished("1", "1.1", 1)
    assert started(decide(h.projection(), facts())) == []  # finished is not accepted
    h.accepted("1.v2", 1, ["1"], head="c" * 40)
    out = decide(h.projection(), facts())
    assert out == [cmd.StartAgent(todo_id="2", batch="1.2", phase=1, base_sha="c" * 40, plan=True)]


def test_a_todo_whose_dependency_is_blocked_is_blocked_too() -> None:
    h = History().todo("1").todo("2", deps=["1"]).plan({1: [["1"], ["2"]]}).start_phase(1).green("1.v1", 1)
    h.add(ev.todo_stream("1"), ev.TodoBlocked(todo_id="1", reason="no", action="retry"))
    out = decide(h.projection(), facts())
    assert [c for c in out if isinstance(c, cmd.BlockTodo)] == [
        cmd.BlockTodo(
            todo_id="2", reason="dependency #1 is blocked", action="fix the dependency, then `batchd retry 2`"
        )
    ]


def test_two_todos_whose_files_overlap_never_run_at_once() -> None:
    """2 names a folder 1 names a file in: it waits while 1 runs; 3 overlaps nothing and starts."""
    h = History().todo("1", files=["src/app/main.py"]).todo("2", files=["src/app"]).todo("3", files=["docs"])
    h.plan({1: [["1", "2", "3"]]}).start_phase(1).green("1.v1", 1)
    assert started(decide(h.projection(), facts())) == ["1", "3"]
    h.running("1", "1.1", 1)
    assert started(decide(h.projection(), facts())) == ["3"]


# --- the verification queue --------------------------------------------------------------------


def test_everything_finished_since_the_last_run_is_verified_together() -> None:
    h = seed_like().start_phase(1).green("1.v1", 1)
    h.finished("3", "1.2", 1).finished("1", "1.1", 1).running("2", "1.1", 1)
    out = decide(h.projection(), facts())
    assert [c for c in out if isinstance(c, cmd.VerifyGroup)] == [
        cmd.VerifyGroup(key="1.v1", base_sha=BASE, candidates=("1", "3"))
    ]


def test_one_verification_at_a_time() -> None:
    h = seed_like().start_phase(1).green("1.v1", 1).finished("1", "1.1", 1)
    h.add(ev.todo_stream("1"), ev.TodoVerifying(todo_id="1", batch="1.v1"))
    h.add(
        ev.batch_stream("1.v1"),
        ev.BatchStarted(key="1.v1", base_sha=BASE, todo_ids=("1",)),
        ev.BatchVerifying(key="1.v1", base_sha=BASE, candidates=("1",)),
    )
    h.finished("2", "1.1", 1)
    out = decide(h.projection(), facts(busy=frozenset({"verify-1.v1"})))
    assert not [c for c in out if isinstance(c, cmd.VerifyGroup | cmd.OpenGroup | cmd.ResumeVerify)]
    # After a restart nothing runs it: verified again.
    assert cmd.ResumeVerify(key="1.v1") in decide(h.projection(), facts())


def test_a_later_phases_finished_work_waits_for_its_phase() -> None:
    """4 (phase 2) finished early: it is not verified while phase 1 is current, so phase 1's commit
    holds exactly phase 1's changes."""
    h = seed_like().start_phase(1).green("1.v1", 1).finished("4", "2.1", 2)
    out = decide(h.projection(), facts())
    assert not [c for c in out if isinstance(c, cmd.VerifyGroup | cmd.OpenGroup)]


# --- phase commits in order ------------------------------------------------------------------------


def test_a_phase_commits_once_every_member_is_settled() -> None:
    h = seed_like().start_phase(1).green("1.v1", 1).finished("4", "2.1", 2)
    h.finished("1", "1.1", 1).finished("2", "1.1", 1).finished("3", "1.2", 1)
    h.accepted("1.v2", 1, ["1", "2"], head="c" * 40)
    assert cmd.CommitPhase(number=1) not in decide(h.projection(), facts())  # 3 still waits
    h.accepted("1.v3", 1, ["3"], head="d" * 40, base="c" * 40)
    out = decide(h.projection(), facts())
    assert cmd.CommitPhase(number=1) in out


def test_phase_two_is_not_committed_before_phase_one_even_when_its_work_is_all_done() -> None:
    """Phase 2's todos all finished while phase 1 still has a running agent: nothing of phase 2 is
    verified or committed; phase 1 is the current phase until it is done."""
    h = seed_like().start_phase(1).green("1.v1", 1)
    for t in ("4", "5", "6"):
        h.finished(t, "2.1", 2)
    h.running("1", "1.1", 1)
    out = decide(h.projection(), facts())
    assert not [c for c in out if isinstance(c, cmd.CommitPhase | cmd.VerifyGroup)]
    assert not [c for c in out if getattr(c, "number", 1) == 2]


def test_a_phase_that_accepted_nothing_is_skipped() -> None:
    h = History().todo("1").plan({1: [["1"]], 2: [[]]}).start_phase(1).green("1.v1", 1)
    h.add(ev.todo_stream("1"), ev.TodoBlocked(todo_id="1", reason="no", action="retry"))
    assert decide(h.projection(), facts()) == [
        cmd.SkipPhase(number=1, reason="nothing was accepted (blocked: #1)")
    ]


def test_new_work_starts_from_the_newest_verified_head() -> None:
    h = seed_like().start_phase(1).green("1.v1", 1).finished("1", "1.1", 1)
    h.accepted("1.v2", 1, ["1"], head="c" * 40)
    assert {c.base_sha for c in decide(h.projection(), facts()) if isinstance(c, cmd.StartAgent)} == {
        "c" * 40
    }


# --- a red baseline heals -----------------------------------------------------------------------


def test_a_paused_group_resumes_on_a_persons_commit_before_anything_was_accepted() -> None:
    h = seed_like().start_phase(1)
    h.add(
        ev.batch_stream("1.v1"),
        ev.BatchPlanned(key="1.v1", phase=1, todo_ids=()),
        ev.BatchPaused(key="1.v1", base_sha=BASE, command=("npm", "test"), output_tail="red"),
    )
    assert decide(h.projection(), facts()) == []  # waits for a person
    fix = "f" * 40
    out = decide(h.projection(), Facts(max_parallel=5, branch_head=fix, moved_on=True))
    assert out == [cmd.RebasePhase(number=1, base_sha=fix, previous=BASE, resume="1.v1")]


def test_agent_failures_are_settled_at_once() -> None:
    h = seed_like().start_phase(1).green("1.v1", 1).running("1", "1.1", 1)
    h.add(ev.todo_stream("1"), ev.AgentFailed(todo_id="1", attempt=1, reason="exit", detail="exited 1"))
    out = decide(h.projection(), facts())
    assert out[0] == cmd.SettleFailure(todo_id="1")
    assert "1" not in started(out)


def test_a_group_resumed_after_its_verification_crashed_verifies_the_same_todos_again() -> None:
    """The verifier crashed (the group paused with command `batchd`), then `batchd resume`: the todos
    it was verifying are taken again, with what finished since; nothing is stranded."""
    h = seed_like().start_phase(1).green("1.v1", 1).finished("1", "1.1", 1)
    h.add(ev.todo_stream("1"), ev.TodoVerifying(todo_id="1", batch="1.v1"))
    h.add(
        ev.batch_stream("1.v1"),
        ev.BatchStarted(key="1.v1", base_sha=BASE, todo_ids=("1",)),
        ev.BatchVerifying(key="1.v1", base_sha=BASE, candidates=("1",)),
        ev.BatchPaused(key="1.v1", base_sha=BASE, command=("batchd",), output_tail="OSError: disk full"),
    )
    h.finished("2", "1.1", 1)
    assert not [c for c in decide(h.projection(), facts()) if isinstance(c, cmd.VerifyGroup)]  # paused
    h.add(ev.batch_stream("1.v1"), ev.BatchResumed(key="1.v1"))
    out = decide(h.projection(), facts())
    assert cmd.VerifyGroup(key="1.v1", base_sha=BASE, candidates=("1", "2")) in out


def test_a_dependency_that_is_pending_blocks_instead_of_waiting_forever() -> None:
    """2 depends on 1, which is planned earlier but pending (not ready): nothing would ever move it,
    and phase 1 could never be committed; 2 is blocked at once, saying why."""
    h = History().todo("2", deps=["1"]).plan({1: [["1"], ["2"]]})
    h.add(
        ev.todo_stream("1"),
        ev.TodoRecorded(todo_id="1", path="todos/1-pending-p2-t.md", title="t", priority="p2", digest="1"),
    )
    h.start_phase(1).green("1.v1", 1)
    blocks = [c for c in decide(h.projection(), facts()) if isinstance(c, cmd.BlockTodo)]
    assert [(b.todo_id, b.reason) for b in blocks] == [("2", "dependency #1 is pending")]


def test_a_todo_retried_while_its_phase_is_being_committed_waits_for_the_phase() -> None:
    """Phase 1 is committing when a person retries its blocked todo 2: 2 does not start into a phase
    whose commit is being made (it would be stranded); it is planned anew once the phase is done."""
    h = History().todo("1").todo("2").plan({1: [["1", "2"]], 2: [["3"]]}).todo("3")
    h.start_phase(1).green("1.v1", 1).finished("1", "1.1", 1)
    h.accepted("1.v2", 1, ["1"], head="c" * 40)
    h.add(ev.todo_stream("2"), ev.TodoBlocked(todo_id="2", reason="no", action="retry"))
    h.add(ev.phase_stream(1), ev.PhaseCommitting(number=1, todo_ids=("1",), message="m"))
    h.add(ev.todo_stream("2"), ev.TodoRetryScheduled(todo_id="2", next_attempt=2, reason="person", repair=""))
    out = decide(h.projection(), facts())
    assert "2" not in started(out)
    assert started(out) == ["3"]  # phase 2's work goes on
    assert cmd.MakeCommit(number=1) in out
