"""Which claims a worker takes and which of its own it has lost: pure questions of the fold."""

from __future__ import annotations

from statemachine import dispatch as dp


def claimable(dispatch: dp.Dispatch) -> list[dp.ClaimView]:
    """Queued claims, oldest first. Several workers race for each: the loser's append is refused and
    it goes on to the next, until its slots are full."""
    queued = [c for c in dispatch.claims.values() if c.state == dp.QUEUED]
    return sorted(queued, key=lambda c: (c.queued_at, c.token))


def lost(claim: dp.ClaimView | None, worker: str) -> bool:
    """The claim is not ``worker``'s to act on any more (expired, released, or never was)."""
    return claim is None or claim.worker != worker or claim.state not in (dp.CLAIMED, dp.REPORTED)
