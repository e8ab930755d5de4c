"""The domain, pure: machines declared as data, a fold of the log into plain state, live machines for what is
in flight. No subprocess, git, file system or clock in here."""

from statemachine.exceptions import InvalidTransition, ReplayDiverged, SnapshotIncompatible
from statemachine.machines import LiveMachines, LiveModel
from statemachine.projection import (
    SNAPSHOT_NAME,
    ControlRequest,
    Projection,
    parse_stream,
    replay,
    save_snapshot,
)
from statemachine.tables import BatchState, Kind, PhaseState, RunState, TodoState
from statemachine.views import AttemptRecord, BatchView, PhaseView, RunVerdict, RunView, TodoView

__all__ = [
    "SNAPSHOT_NAME",
    "AttemptRecord",
    "BatchState",
    "BatchView",
    "ControlRequest",
    "InvalidTransition",
    "Kind",
    "LiveMachines",
    "LiveModel",
    "PhaseState",
    "PhaseView",
    "Projection",
    "ReplayDiverged",
    "RunState",
    "RunVerdict",
    "RunView",
    "SnapshotIncompatible",
    "TodoState",
    "TodoView",
    "parse_stream",
    "replay",
    "save_snapshot",
]
