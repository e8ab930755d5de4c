"""The event store: an append-only, hash-chained log of events in SQLite (or any SQLAlchemy database).

It knows nothing of todos: the domain registers its event types in :data:`store.registry.registry`.
"""

from store.eventlog import Append, AuditReport, EventLog, Snapshot, StoredEvent
from store.exceptions import (
    BatchdError,
    ConcurrencyError,
    LogCorrupted,
    NotADatabase,
    SchemaTooNew,
    StoreError,
    StoreUnavailable,
    UnknownEventType,
)
from store.registry import EventRegistry, registry

__all__ = [
    "Append",
    "AuditReport",
    "BatchdError",
    "ConcurrencyError",
    "EventLog",
    "EventRegistry",
    "LogCorrupted",
    "NotADatabase",
    "SchemaTooNew",
    "Snapshot",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "UnknownEventType",
    "registry",
]
