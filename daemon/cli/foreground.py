"""``batchd run`` in the foreground, with the output that suits where it runs.

- On a terminal (stdout and stderr both one, no ``--log-json``/``--log-text``): the live run view,
  with warnings and errors drawn above it and info lines left out (the view shows the same things),
  then, under ``--once``, the run's summary.
- ``--quiet``: no view, only warnings (and errors), then the summary.
- Anywhere else (journald, a pipe, a file): JSON log lines, exactly as without the view.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from daemon.cli.summary import print_summary, summarize
from daemon.cli.view import LiveView, log_opener
from daemon.config import Config
from daemon.service.logs import configure_logging
from daemon.service.signals import SignalFlags
from daemon.workspace import config_scope, open_log
from statemachine.projection import replay

__all__ = ["LEVELS", "foreground", "wants_live_view"]

LEVELS = ("debug", "info", "warning", "error")


def at_least(level: str, floor: str) -> str:
    return LEVELS[max(LEVELS.index(level), LEVELS.index(floor))]


def elsewhere(config: Config) -> Path | None:
    """The repository, when the next commands need ``-C`` to find it (run from outside it)."""
    return None if Path.cwd().resolve().is_relative_to(config.root) else config.root


def wants_live_view(*, quiet: bool, log_json: bool | None) -> bool:
    """The live view is for a person at a terminal who asked for no particular log format."""
    return log_json is None and not quiet and sys.stdout.isatty() and sys.stderr.isatty()


def foreground(config: Config, *, once: bool, log_level: str, log_json: bool | None, quiet: bool) -> int:
    """Run the daemon until it ends; returns its exit code. Logging is already configured for the
    plain case (JSON or readable lines on stderr) by the caller."""
    from daemon.service.loop import serve

    if not wants_live_view(quiet=quiet, log_json=log_json):
        code = serve(config, once=once)
        if quiet and once:
            event_log = open_log(config.root, config.db_url)
            try:
                print_summary(Console(), summarize(replay(event_log)), root=elsewhere(config))
            finally:
                event_log.close()
        return code
    console = Console()
    view = LiveView(
        log_opener(config.db_url, scope=config_scope(config)), console, agent_timeout=config.agent.timeout
    )
    # Handlers first: a SIGTERM or Ctrl-C from the first moment the view is up is a graceful stop
    # (serve reads these flags and restores the handlers when it returns).
    flags = SignalFlags().install()
    # Lines written straight to the terminal would tear the frame: they go above it, info left out.
    configure_logging(level=at_least(log_level, "warning"), sink=view.print_log)
    try:
        with view:
            code = serve(config, once=once, flags=flags)
    finally:
        flags.restore()
        configure_logging(level=log_level, json=log_json)  # what follows (an error) goes to stderr again
    if once:
        console.print()
        print_summary(console, summarize(view.proj), root=elsewhere(config))
    return code
