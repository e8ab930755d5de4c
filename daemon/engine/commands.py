"""What a policy decides: plain, frozen values, carried out by :mod:`daemon.engine.execute` alone.

A command names its target and the facts the decision rested on (the base commit, the candidates);
the executor records the intent, does the work and records the outcome. Deciding again from the
same projection gives the same commands, so a crash between two commands loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class StartPhase:
    """The phase becomes the current one, based on the branch's head."""

    number: int
    base_sha: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RebasePhase:
    """The branch moved on (a person's commit) before the phase accepted anything: go on from it."""

    number: int
    base_sha: str
    previous: str
    resume: str = ""  # a group paused on a red baseline, resumed with it


@dataclass(frozen=True, slots=True, kw_only=True)
class StartAgent:
    """Run the todo's agent in a fresh workspace at ``base_sha`` (planning it first when ready)."""

    todo_id: str
    batch: str
    phase: int
    base_sha: str
    plan: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SettleFailure:
    """The todo's agent failed: another attempt, or blocked once its attempts are used."""

    todo_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockTodo:
    todo_id: str
    reason: str
    action: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordBudget:
    """A run budget is used up and keeps work from starting: ``run.budget_reached`` (once per limit)."""

    budget: str
    limit: float
    used: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PutBack:
    """A planned todo a run budget keeps from starting goes back to ready, so that its phase can end
    (the run ends with a verdict) and it is planned again once the budget allows (a raised limit)."""

    todo_id: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenGroup:
    """A new verification group of the phase (it checks its base first when that was never green)."""

    key: str
    phase: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Baseline:
    """Run the verify commands on ``base_sha`` alone, recorded on group ``key``."""

    key: str
    base_sha: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyGroup:
    """Verify ``candidates`` together on ``base_sha`` (cherry-picked in id order), finding culprits."""

    key: str
    base_sha: str
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumeVerify:
    """A group verifying with no job behind it (a restart): run its verification again."""

    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitPhase:
    """Every member of the phase is settled and something was accepted: make the phase commit."""

    number: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SkipPhase:
    """Every member of the phase is settled and nothing was accepted: no commit, no push."""

    number: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MakeCommit:
    """The phase's commit (intent recorded): make it in batchd's worktree, in the pool."""

    number: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Land:
    """The phase commit is made: bring the person's checkout to it, mark its todos complete."""

    number: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Push:
    """Push the phase commit (with the seed's rebase and retries), in the pool."""

    number: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishPhase:
    """Pushed (or the push failed for good): the phase is done, its workspaces tidied away."""

    number: int


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenRequest:
    """Run ``[batchd] open_request`` for the run branch ``branch`` onto ``base`` (after ``phase``'s push)."""

    branch: str
    base: str
    phase: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StartBatch:
    """A planned batch starts on ``base_sha`` with the todos that can run (``todo_ids``)."""

    key: str
    phase: int
    base_sha: str
    todo_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyBatch:
    """Every agent of the running batch is done: verify ``candidates`` on the batch's base."""

    key: str
    base_sha: str
    candidates: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishBatch:
    """Nothing of the batch is left to verify: record each todo's fate and the batch as done."""

    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseBatch:
    key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanRetryBatch:
    """Todos of the phase that are ready again get one more batch of the phase (``key``)."""

    phase: int
    key: str
    todo_ids: tuple[str, ...]
    retry_of: str


BarrierCommand = StartBatch | VerifyBatch | FinishBatch | CloseBatch | PlanRetryBatch


Command = (
    StartPhase
    | RebasePhase
    | StartAgent
    | SettleFailure
    | BlockTodo
    | RecordBudget
    | PutBack
    | OpenGroup
    | Baseline
    | VerifyGroup
    | ResumeVerify
    | CommitPhase
    | SkipPhase
    | MakeCommit
    | Land
    | Push
    | FinishPhase
    | OpenRequest
    | BarrierCommand
)


def shared_step(number: int, step: str) -> Command:
    """The command of a phase's shared step (see :func:`daemon.engine.state.after_running`)."""
    kinds: dict[str, type[MakeCommit | Land | Push | FinishPhase]] = {
        "commit": MakeCommit,
        "land": Land,
        "push": Push,
        "finish": FinishPhase,
    }
    return kinds[step](number=number)
