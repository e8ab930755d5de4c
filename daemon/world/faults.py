"""Fault injection for the crash tests: the daemon kills itself with SIGKILL at a chosen point.

Tests only. ``BATCHD_CRASH_AFTER=todo.agent_started`` kills the daemon right after it appended
the first event of that type (``todo.agent_started:3`` after the third); ``BATCHD_CRASH_AT_SEQ=40``
right after the event with sequence number 40 is durable. Nothing is flushed or cleaned up: it is
a ``kill -9`` from the inside, so the restart sees exactly what a real crash leaves.

``BATCHD_FAULT_RAISE=agent_exit`` makes :func:`raise_at` raise an unexpected error at that named
place (a bug, as far as the daemon can tell): how the crash handling and the crash-loop breaker
are tested.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping

from store.eventlog import StoredEvent


class FaultInjector:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        spec = env.get("BATCHD_CRASH_AFTER", "")
        kind, _, nth = spec.partition(":")
        self._type = kind or None
        self._nth = int(nth) if nth.isdigit() else 1
        seq = env.get("BATCHD_CRASH_AT_SEQ", "")
        self._seq = int(seq) if seq.isdigit() else None
        self._seen = 0

    @property
    def armed(self) -> bool:
        return self._type is not None or self._seq is not None

    def after_append(self, events: list[StoredEvent]) -> None:
        for event in events:
            if self._type is not None and event.type == self._type:
                self._seen += 1
                if self._seen >= self._nth:
                    self._die()
            if self._seq is not None and event.seq >= self._seq:
                self._die()

    @staticmethod
    def _die() -> None:
        os.kill(os.getpid(), signal.SIGKILL)


class InjectedFault(RuntimeError):
    """The unexpected error :func:`raise_at` raises (tests only)."""


def raise_at(place: str) -> None:
    """Raise :class:`InjectedFault` when ``BATCHD_FAULT_RAISE`` names ``place`` (tests only)."""
    if os.environ.get("BATCHD_FAULT_RAISE") == place:
        raise InjectedFault(f"fault injected at {place}")
