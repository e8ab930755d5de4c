"""What the demo's plan is, and how its run is meant to end: the data the demo and its tests share.

The todo files under ``template/todos/`` carry out this scenario through their ``batchd-agent``
blocks; ``tests/daemon/test_demo_project.py`` checks that they do, and the end-to-end tests compare
a real run against the ``EXPECTED_*`` values below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALL_TODO_IDS",
    "EXPECTED_ATTEMPTS",
    "EXPECTED_BLOCKED",
    "EXPECTED_COMPLETE",
    "EXPECTED_CONFLICTED_ONCE",
    "EXPECTED_REJECTED_ONCE",
    "EXPECTED_TIMED_OUT_ONCE",
    "PHASES",
    "PHASE_MESSAGES",
    "SCENARIO",
    "PlanBatch",
    "PlanPhase",
    "describe",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanBatch:
    id: str  # "1.1"
    todos: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanPhase:
    number: int
    title: str
    message: str  # the phase commit's subject line
    batches: tuple[PlanBatch, ...]


def _batch(batch_id: str, *todos: str) -> PlanBatch:
    return PlanBatch(id=batch_id, todos=todos)


# The seed's plan (seed/autonomous-batch-runner-prompt.md, "Execution Phases"), ids in its order.
PHASES: Final[tuple[PlanPhase, ...]] = (
    PlanPhase(
        number=1,
        title="Critical Security",
        message="fix(security): complete phase 1 - critical security fixes",
        batches=(_batch("1.1", "273", "274", "275", "276", "284"), _batch("1.2", "266", "267", "279")),
    ),
    PlanPhase(
        number=2,
        title="Performance",
        message="perf(scheduling): complete phase 2 - performance optimizations",
        batches=(_batch("2.1", "280", "268", "269", "270", "287"),),
    ),
    PlanPhase(
        number=3,
        title="Acuity Core",
        message="feat(scheduling): complete phase 3 - acuity core features",
        batches=(_batch("3.1", "277", "278", "234", "235", "260"), _batch("3.2", "251", "271", "272")),
    ),
    PlanPhase(
        number=4,
        title="Acuity Advanced",
        message="feat(scheduling): complete phase 4 - acuity advanced features",
        batches=(_batch("4.1", "281", "282", "236", "256", "285"), _batch("4.2", "283", "286")),
    ),
    PlanPhase(
        number=5,
        title="Hardening",
        message="chore(scheduling): complete phase 5 - production hardening",
        batches=(),
    ),
)

PHASE_MESSAGES: Final[dict[int, str]] = {phase.number: phase.message for phase in PHASES}

ALL_TODO_IDS: Final[frozenset[str]] = frozenset(
    todo for phase in PHASES for batch in phase.batches for todo in batch.todos
)

# Per todo that does not simply succeed at its first attempt: what each attempt does.
SCENARIO: Final[dict[str, tuple[str, ...]]] = {
    "267": ("agent exits 1", "agent exits 1 again: blocked, attempts exhausted"),
    "269": (
        "breaks tests/test_bookings.py (ValueError raised in scheduling/bookings.py): rejected",
        "repairs its own change, with the failure in its prompt: accepted",
    ),
    "278": (
        "edits the same lines of scheduling/availability.py as 277: loses the conflict",
        "resolves its own change rebased on 277 (the conflict markers), keeping both: accepted",
    ),
    "282": (
        "surges every quote, breaking the pricing tests: rejected",
        "switches prices to a decimal comma, breaking them again: rejected, blocked",
    ),
    "283": ("hangs until the agent timeout kills it", "succeeds: accepted"),
}

EXPECTED_BLOCKED: Final[dict[str, str]] = {"267": "agent exits 1", "282": "breaks tests"}
EXPECTED_COMPLETE: Final[frozenset[str]] = ALL_TODO_IDS - EXPECTED_BLOCKED.keys()
# Rejected by verification at least once (282 on both of its attempts).
EXPECTED_REJECTED_ONCE: Final[frozenset[str]] = frozenset({"269", "282"})
EXPECTED_CONFLICTED_ONCE: Final[frozenset[str]] = frozenset({"278"})
EXPECTED_TIMED_OUT_ONCE: Final[frozenset[str]] = frozenset({"283"})
# Agent attempts each todo uses: 1 unless SCENARIO lists it.
EXPECTED_ATTEMPTS: Final[dict[str, int]] = {
    todo: len(SCENARIO.get(todo, ("ok",))) for todo in sorted(ALL_TODO_IDS)
}


def describe() -> str:
    """The one paragraph the CLI prints about what the demo shows."""
    return (
        "This demo runs the seed's plan: 28 todos of a small multi-tenant scheduling backend in 4 phases "
        "of batches (7 batches, up to 5 agents at once) plus a final hardening phase, with a scripted "
        "agent in place of an LLM. Each todo runs in its own git worktree; each batch is verified "
        "against the project's own tests; each phase becomes one commit, pushed to a local bare remote. "
        "Most todos succeed at once. 269 breaks an existing test, is found from the failure output, "
        "reverted, and its own change repaired on its second attempt; 282 breaks the tests on both "
        "attempts and ends blocked. 277 and 278 edit the same lines: 277 (lower id) wins, 278 resolves "
        "its change rebased on 277's, keeping both. 267's agent exits 1 on every attempt and ends "
        "blocked; 283's agent hangs until its timeout kills it, then succeeds. Expected result: 26 todos "
        "complete, 2 blocked (267, 282), "
        "5 phase commits pushed."
    )
