"""The remote keeps only the work not yet taken: batchd's exchange refs are deleted once done with.

- a worker's change and log (``refs/batchd/todo|log/...``) once its outcome is recorded here (or
  could not be taken): gathered, then deleted in one push per tick, in a job;
- the run's bases (``refs/batchd/base/...``) once the run is complete and no attempt is out (``run
  --once`` waits for that), with this repository's copies of the workers' refs fetched.

Best effort: a ref left behind (a failed push, a crash before it) costs a little room on the remote,
never a wrong result; the next attempt on a base pruned too early pushes it again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog

from daemon.engine import outcomes
from daemon.engine.runner import Daemon
from daemon.world import exchange
from daemon.world.remote import PinnedRemote
from statemachine import dispatch as dp
from statemachine.tables import RunState

log = structlog.get_logger(__name__)

OUT = frozenset({dp.QUEUED, dp.CLAIMED, dp.REPORTED})  # a worker may still fetch its base


def tick(d: Daemon) -> None:
    """Delete the refs taken since the last prune (one push), and the bases when it is their time."""
    pinned, root = d.pinned, d.root
    if pinned is not None and d.taken_refs and not d.has_job("prune-taken"):
        taken, d.taken_refs = sorted(set(d.taken_refs)), []
        d.submit(
            "prune-taken",
            lambda: exchange.delete_refs(root, pinned, taken, listed=False),
            lambda _: None,
            _not_pruned(taken),
        )
    if refs := bases_to_prune(d):
        d.pruned_bases.update(refs)
        d.pushed_bases.clear()  # pushed again by the next attempt on them, should the run reopen
        assert pinned is not None  # bases_to_prune() said so
        d.submit(
            "prune-bases", lambda: _bases_and_copies(root, pinned, refs), lambda _: None, _not_pruned(refs)
        )


def bases_to_prune(d: Daemon) -> list[str]:
    """The bases pushed for workers that go now, and the refs of every claim: the run is complete
    and no attempt is out."""
    if d.pinned is None or d.proj.run.state != RunState.COMPLETED or d.queueing:
        return []
    claims = d.proj.dispatch.claims.values()
    if any(c.state in OUT for c in claims):
        return []
    # With them whatever a worker may have pushed for a claim and not reported (killed or fenced
    # after its push): its refs are named by the claim, so nothing else deletes them.
    left = {r for c in claims for r in claim_refs(c)}
    return sorted({*d.proj.dispatch.bases.values(), *d.base_refs.values(), *left} - d.pruned_bases)


def claim_refs(claim: dp.ClaimView) -> tuple[str, str]:
    """The refs a worker pushes for ``claim``: its change and its agent's log."""
    return (
        dp.todo_ref(claim.todo_id, claim.attempt, claim.token),
        dp.log_ref(claim.todo_id, claim.attempt, claim.token),
    )


def pending(d: Daemon) -> bool:
    """Refs wait to be pruned (``run --once`` does not exit before they are)."""
    return bool(d.taken_refs) or bool(bases_to_prune(d))


def _bases_and_copies(root: Path, pinned: PinnedRemote, refs: list[str]) -> None:
    exchange.delete_refs(root, pinned, refs)  # listed first: after a restart some may be gone already
    # The workers' changes fetched here are committed or turned down by now.
    exchange.forget_refs(root, dp.TODO_REFS)
    exchange.forget_refs(root, dp.LOG_REFS)


def _not_pruned(refs: list[str]) -> Callable[[BaseException], None]:
    def failed(error: BaseException) -> None:
        log.warning("refs_not_pruned", refs=refs, error=outcomes.message(error))

    return failed
