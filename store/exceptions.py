"""The one exception tree of batchd, rooted in :class:`BatchdError`.

Every error a user can meet carries a stable ``code`` (for ``--json``), an
``exit_code`` for the CLI, and a message that says what happened, where, and
how to fix it. Subclasses take keyword-only fields and keep them as attributes
so callers and tests can inspect them instead of parsing text.
"""

from __future__ import annotations

from pathlib import Path

# Exit codes shared by the whole CLI (see README "Exit codes").
EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_CANNOT_PROCEED = 3


class BatchdError(Exception):
    """Root of every error batchd raises on purpose."""

    code: str = "batchd_error"
    exit_code: int = EXIT_FAILURES

    def __init__(self, message: str, *, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        return f"{self.message}\n  how to fix: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict[str, object]:
        fields = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(self).items()
            if k not in {"message", "hint", "args"} and not k.startswith("_")
        }
        return {"error": self.code, "message": self.message, "hint": self.hint, **fields}


class StoreError(BatchdError):
    """The event store cannot be used as asked."""

    code = "store_error"
    exit_code = EXIT_CANNOT_PROCEED


class ConcurrencyError(StoreError):
    """Another writer appended to the stream first: nothing was written."""

    code = "concurrency_conflict"
    exit_code = EXIT_FAILURES

    def __init__(self, *, stream: str, expected: int, actual: int) -> None:
        self.stream = stream
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"stream {stream!r} is at version {actual}, not the expected {expected}: "
            "another writer appended first, nothing was written",
            hint="re-read the stream and decide again",
        )


class NotADatabase(StoreError):
    code = "not_a_database"

    def __init__(self, *, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"{path} is not a batchd event database ({detail})",
            hint=f"move {path} aside (it is not deleted for you) and start again, "
            "or point --db at the right file",
        )


class SchemaTooNew(StoreError):
    code = "schema_too_new"

    def __init__(self, *, path: str, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"{path} has event-log schema version {found}; this batchd reads up to {supported}",
            hint="upgrade batchd (pip install -U batchd) to read this log",
        )


class LogCorrupted(StoreError):
    """The hash chain, a row or the file itself does not check out (``seq`` is None for the file)."""

    code = "log_corrupted"

    def __init__(self, *, path: str, seq: int | None, detail: str) -> None:
        self.path = path
        self.seq = seq
        self.detail = detail
        where = f" at sequence {seq}" if seq is not None else ""
        super().__init__(
            f"event log {path} is corrupt{where}: {detail}",
            hint="run `batchd audit verify` for the full report; restore the file from a backup",
        )


class StoreUnavailable(StoreError):
    code = "store_unavailable"

    def __init__(self, *, path: str, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(
            f"event log {path} is unavailable: {detail}",
            hint="another process holds a long write lock, or the disk is full or read-only; "
            "check `batchd status` and free space",
        )


class UnknownEventType(StoreError):
    code = "unknown_event_type"

    def __init__(self, *, name: str, version: int, seq: int | None = None) -> None:
        self.name = name
        self.version = version
        self.seq = seq
        where = f" at sequence {seq}" if seq is not None else ""
        super().__init__(
            f"event type {name!r} v{version}{where} is not known to this batchd",
            hint="upgrade batchd to a version that knows this event",
        )


class DriverMissing(StoreError):
    """The URL names a database whose Python driver is not installed."""

    code = "driver_missing"

    def __init__(self, *, url: str, module: str, extra: str) -> None:
        self.url = url
        self.module = module
        self.extra = extra
        super().__init__(
            f"{url} needs the Python module {module!r}, which is not installed",
            hint=f"pip install 'batchd[{extra}]'" if extra else f"pip install {module}",
        )


class ServerUnreachable(StoreUnavailable):
    """A database server refused the connection (wrong password, no such database: ``lost`` False) or
    cannot be reached or went away (down, restarting, our session ended: ``lost`` True)."""

    code = "server_unreachable"

    def __init__(
        self, *, path: str, host: str, port: int, database: str, reason: str, lost: bool = False
    ) -> None:
        self.host = host
        self.port = port
        self.database = database
        self.reason = reason
        self.lost = lost
        # StoreUnavailable's fields, so callers that catch it see the same attributes.
        self.path = path
        self.detail = reason
        where = f"database {database!r} on {host} port {port}"
        if lost:
            message = f"the event log's server ({where}) cannot be reached: {reason}"
            hint = (
                "check that the server runs and accepts connections there (it may be restarting); "
                "the next operation connects again"
            )
        else:
            message = f"cannot open the event log in {where}: {reason}"
            hint = (
                "check that the database exists "
                f"(createdb {database}), and the user and password in the db URL"
            )
        StoreError.__init__(self, message, hint=hint)


class BadScope(StoreError):
    """A repository scope the log cannot hold."""

    code = "bad_scope"

    def __init__(self, *, scope: str, detail: str) -> None:
        self.scope = scope
        self.detail = detail
        super().__init__(
            f"repository id {scope!r} cannot scope an event log: {detail}",
            hint="set [batchd] repo_id (or --repo-id) to at most 100 printable characters",
        )
