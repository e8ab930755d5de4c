"""Errors of the domain: an event a machine cannot take, a replay that no longer matches the code."""

from __future__ import annotations

from store.exceptions import EXIT_CANNOT_PROCEED, BatchdError

__all__ = ["InvalidTransition", "ReplayDiverged", "SnapshotIncompatible"]


class InvalidTransition(BatchdError):
    """An event (or a trigger on a live machine) that the machine does not allow in its current state.

    Raised by the fold for a recorded event (``seq`` set: the log itself is wrong for this code) and by
    a live machine for a trigger the daemon was about to fire (``seq`` None: the daemon has a bug).
    """

    code = "invalid_transition"
    exit_code = EXIT_CANNOT_PROCEED

    def __init__(
        self, *, stream: str, state: str, event: str, seq: int | None = None, detail: str = ""
    ) -> None:
        self.stream = stream
        self.state = state
        self.event = event
        self.seq = seq
        self.detail = detail
        at = f" (seq {seq})" if seq is not None else ""
        why = f": {detail}" if detail else ""
        if seq is not None:
            hint = (
                "run `batchd audit verify` to check the log; if it checks out, the log was written by a "
                f"batchd whose rules differ from this one: report it with the events of stream {stream}"
            )
        else:
            hint = f"this is a batchd bug (it tried {event} on {stream} in state {state}): please report it"
        super().__init__(
            f"event {event}{at} cannot apply to stream {stream} in state {state}{why}", hint=hint
        )


class ReplayDiverged(BatchdError):
    """A recorded step differs from what the code would do now at the same point of the same stream."""

    code = "replay_diverged"
    exit_code = EXIT_CANNOT_PROCEED

    def __init__(self, *, stream: str, recorded: str, expected: str, seq: int | None = None) -> None:
        self.stream = stream
        self.recorded = recorded
        self.expected = expected
        self.seq = seq
        at = f" at seq {seq}" if seq is not None else ""
        super().__init__(
            f"replay of stream {stream} diverged{at}: "
            f"the log recorded {recorded}, this batchd would do {expected}",
            hint="finish the run with the batchd version that started it, or start a new run "
            "so that this version decides from scratch",
        )


class SnapshotIncompatible(BatchdError):
    """A stored snapshot was written by code with another projection layout; replay from zero instead."""

    code = "snapshot_incompatible"
    exit_code = EXIT_CANNOT_PROCEED

    def __init__(self, *, name: str, detail: str) -> None:
        self.name = name
        self.detail = detail
        super().__init__(
            f"snapshot {name!r} cannot be loaded: {detail}",
            hint="replay from zero (`use_snapshot=False`); the next saved snapshot replaces it",
        )
