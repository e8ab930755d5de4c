"""structlog set-up: readable coloured lines on a terminal, JSON lines otherwise (journald, pipes).

Named ``logs`` rather than ``logging`` so it never shadows the standard library module.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable
from typing import TextIO

import structlog


class _LineLogger(structlog.PrintLogger):
    """structlog's print logger, except that a log line that cannot be written (stderr closed, a pipe
    whose reader went away) is dropped: a lost log line must never stop the daemon and its agents."""

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().msg(message)

    log = debug = info = warn = warning = err = error = critical = exception = failure = fatal = msg


class _SinkLogger:
    """Hands each rendered line to ``sink`` (the live run view draws it above its frame); a line the
    sink cannot write is dropped, as :class:`_LineLogger` drops it."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self._sink = sink

    def msg(self, message: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._sink(message)

    log = debug = info = warn = warning = err = error = critical = exception = failure = fatal = msg


def configure_logging(
    *,
    level: str = "info",
    stream: TextIO | None = None,
    json: bool | None = None,
    sink: Callable[[str], None] | None = None,
) -> None:
    """Configure structlog once per process; ``json=None`` picks JSON unless ``stream`` is a TTY.
    With ``sink``, readable coloured lines go to that function instead of a stream."""
    out = stream if stream is not None else sys.stderr
    use_json = not out.isatty() if json is None and sink is None else bool(json)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sink is not None or out.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=lambda *_args: _LineLogger(file=out) if sink is None else _SinkLogger(sink),
        cache_logger_on_first_use=False,
    )
