"""The event store: an append-only, hash-chained log of events in SQLite or PostgreSQL, one per scope.

It knows nothing of todos: the domain registers its event types in :data:`store.registry.registry`.
"""

from store.backends import safe_location
from store.eventlog import Append, AuditReport, EventLog, Snapshot, StoredEvent
from store.exceptions import (
    BadScope,
    BatchdError,
    ConcurrencyError,
    DriverMissing,
    LogCorrupted,
    NotADatabase,
    SchemaTooNew,
    ServerUnreachable,
    StoreError,
    StoreUnavailable,
    UnknownEventType,
)
from store.registry import EventRegistry, registry

__all__ = [
    "Append",
    "AuditReport",
    "BadScope",
    "BatchdError",
    "ConcurrencyError",
    "DriverMissing",
    "EventLog",
    "EventRegistry",
    "LogCorrupted",
    "NotADatabase",
    "SchemaTooNew",
    "ServerUnreachable",
    "Snapshot",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "UnknownEventType",
    "registry",
    "safe_location",
]
