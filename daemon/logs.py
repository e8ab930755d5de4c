"""structlog set-up: readable coloured lines on a terminal, JSON lines otherwise (journald, pipes).

Named ``logs`` rather than ``logging`` so it never shadows the standard library module.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


def configure_logging(*, level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    """Configure structlog once per process; ``json=None`` picks JSON unless ``stream`` is a TTY."""
    out = stream if stream is not None else sys.stderr
    use_json = not out.isatty() if json is None else json
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
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
