"""How an agent run ended: its exit, its timing, and the JSON result it printed (claude's
``{"type": "result", ...}``, codex's ``thread.started``), read from the end of its log.

What an agent prints is untrusted: only the last JSON objects are parsed, a cost that is not a
plain number in range is not a cost, and a session id is checked before anything uses it.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from daemon.world import safefs
from daemon.world.agentproc import (
    NO_SANDBOX,
    STRICT_JSON,
    TAIL_CHARS,
    AgentProcess,
    enforce_timeout,
    start_agent,
    tail,
    tail_bytes,
)
from daemon.world.sandbox import Sandbox

log = structlog.get_logger(__name__)

__all__ = [
    "MAX_COST_USD",
    "AgentOutcome",
    "SetupResult",
    "finish",
    "read_result",
    "read_thread_id",
    "run_agent",
    "run_setup",
]


_RESULT_SCAN_BYTES = 1 << 20  # the claude result object is at the end; a long log need not be read whole
_RESULT_CANDIDATES = 50  # lines starting with "{" tried, from the end


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentOutcome:
    """What an agent run came to; ``summary`` is the last JSON object it printed, if any."""

    rc: int
    duration: float
    timed_out: bool
    summary: dict[str, Any] | None
    is_error: bool
    cost_usd: float | None
    num_turns: int | None
    session_id: str | None
    log_tail: str

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and not self.is_error

    @property
    def reason(self) -> str:
        """Why the attempt failed, in a few words ("" when it did not)."""
        if self.timed_out:
            return f"timed out after {self.duration:.0f}s (process group killed)"
        if self.rc < 0:
            return f"killed by {signal.Signals(-self.rc).name}"
        if self.rc != 0:
            return f"exited with code {self.rc}"
        if self.is_error:
            summary = self.summary or {}
            detail = str(summary.get("result") or summary.get("subtype") or "")[:300]
            return f"agent reported an error: {detail}" if detail else "agent reported an error"
        return ""


def read_result(log_path: Path) -> dict[str, Any] | None:
    """The last JSON object in the log: one line (claude ``--output-format json``/stream-json)
    or pretty-printed from a line starting with ``{``."""
    text = tail_bytes(log_path, _RESULT_SCAN_BYTES)
    # Lines that start an object, newest first, only the last few (a log of a million lines of "{" is
    # not a result): one at the start of a line may run over several lines (pretty-printed) and is
    # parsed in place; an indented one is a nested value unless it is whole on its own line.
    starts = list(re.finditer(r"(?m)^([ \t]*)\{", text))[-_RESULT_CANDIDATES:]
    # Objects at the start of a line first: an indented whole-line object is more often a nested one.
    starts.sort(key=lambda m: (not m.group(1), m.start()))
    for match in reversed(starts):
        begin = match.end() - 1
        try:
            if match.group(1):
                line_end = text.find("\n", begin)
                obj, _ = STRICT_JSON.raw_decode(text[begin : line_end if line_end >= 0 else len(text)])
            else:
                obj, _ = STRICT_JSON.raw_decode(text, begin)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            return obj
    return None


# codex exec --json: one JSON event a line, the first of each run `{"type":"thread.started","thread_id":..}`.
_THREAD_STARTED = re.compile(rb'(?m)^\{"type":\s*"thread\.started"')
_SCAN_CHUNK = 1 << 20


def read_thread_id(log_path: Path) -> str | None:
    """The ``thread_id`` of the last ``thread.started`` event in the log (codex ``exec --json``: the
    session that ``codex exec resume`` continues), or None. Read in chunks: it is printed first,
    so in a long log it is far from the end (a capped log has lost it: the repair starts afresh)."""
    try:
        fd = os.open(log_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    found: bytes | None = None
    carry = b""
    try:
        while chunk := os.read(fd, _SCAN_CHUNK):
            data = carry + chunk
            cut = data.rfind(b"\n") + 1  # whole lines only; the rest waits for the next chunk
            lines, carry = (data[:cut], data[cut:]) if cut else (b"", data)
            if len(carry) > _SCAN_CHUNK:  # one endless line is no event
                carry = b""
            for match in _THREAD_STARTED.finditer(lines):
                found = lines[match.start() : lines.find(b"\n", match.start())]
        if carry and _THREAD_STARTED.match(carry):
            found = carry
    finally:
        os.close(fd)
    if found is None:
        return None
    try:
        event = STRICT_JSON.decode(found.decode("utf-8", "replace"))
    except (ValueError, RecursionError):
        return None
    thread = event.get("thread_id") if isinstance(event, dict) else None
    return thread if isinstance(thread, str) else None


MAX_COST_USD = 1e6  # a cost an agent reports above this is not a cost: it is not recorded


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int of hundreds of digits
        return None
    return number if math.isfinite(number) and 0 <= number <= MAX_COST_USD else None


def finish(proc: AgentProcess, *, tail_chars: int = TAIL_CHARS) -> AgentOutcome:
    """Wait for ``proc`` (call it once poll() returned a code), kill what it left in its group,
    and read its result from the log and its exit record."""
    rc = proc.wait()
    # The agent is done: anything still in its group (a dev server, a watcher) is left over.
    if proc.kill_group(signal.SIGKILL):
        log.info("agent_leftovers_killed", pid=proc.pid, pgid=proc.pgid)
    duration = proc.elapsed
    record = proc.exit_record()
    # The record says when the agent ended; it counts only when it agrees with how the shim itself
    # ended (an agent outside a sandbox could write a record of its own) and falls within the run.
    trusted = (
        record is not None
        and not proc.timed_out
        and (record["rc"] == rc or (record["rc"] >= 0 and record["rc"] & 0xFF == rc))
        and proc.started_wall <= record["ended_at"] <= time.time() + 1
    )
    if trusted and record is not None:
        rc = record["rc"]
        duration = record["ended_at"] - proc.started_wall
    summary = read_result(proc.log_path)
    is_error = False
    cost = turns = session = None
    if summary is not None:
        subtype = summary.get("subtype")
        is_error = summary.get("is_error") is True or (
            summary.get("type") == "result" and isinstance(subtype, str) and subtype.startswith("error")
        )
        cost = _number(summary.get("total_cost_usd", summary.get("cost_usd")))
        raw_turns = summary.get("num_turns")
        turns = raw_turns if type(raw_turns) is int and 0 <= raw_turns < 2**31 else None
        session = summary.get("session_id") if isinstance(summary.get("session_id"), str) else None
    if session is None:
        session = read_thread_id(proc.log_path)
    outcome = AgentOutcome(
        rc=rc,
        duration=duration,
        timed_out=proc.timed_out,
        summary=summary,
        is_error=is_error,
        cost_usd=cost,
        num_turns=turns,
        session_id=session,
        log_tail=tail(proc.log_path, tail_chars),
    )
    log.info(
        "agent_exited",
        pid=proc.pid,
        rc=rc,
        duration=round(outcome.duration, 3),
        timed_out=outcome.timed_out,
        is_error=is_error,
    )
    return outcome


def run_agent(
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    env: Mapping[str, str],
    timeout: float,
    grace: float = 5.0,
    poll_interval: float = 0.05,
    sandbox: Sandbox = NO_SANDBOX,
    readable: Sequence[Path] = (),
) -> AgentOutcome:
    """Start, wait (enforcing ``timeout``) and finish: the blocking form of the calls above."""
    proc = start_agent(argv, cwd=cwd, log_path=log_path, env=env, sandbox=sandbox, readable=readable)
    while proc.poll() is None:
        enforce_timeout(proc, timeout, time.monotonic(), grace=grace)
        time.sleep(poll_interval)
    return finish(proc)


@dataclass(frozen=True, slots=True, kw_only=True)
class SetupResult:
    ok: bool
    failed_command: tuple[str, ...] | None
    rc: int | None
    timed_out: bool
    duration: float
    log_tail: str


def run_setup(
    setup: Sequence[Sequence[str]],
    *,
    cwd: Path,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    sandbox: Sandbox = NO_SANDBOX,
    readable: Sequence[Path] = (),
) -> SetupResult:
    """Run ``[agent] setup`` commands in order in a new workspace (blocking); stop at the first failure.

    ``timeout`` applies to each command. Output is appended to ``log_path``. They run as the agent
    will: in its sandbox, with its environment and ``readable`` paths.
    """
    env = os.environ if env is None else env
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    for argv in setup:
        safefs.append_text(log_path.parent, log_path.name, f"$ {shlex.join(argv)}\n")
        outcome = run_agent(
            argv, cwd=cwd, log_path=log_path, env=env, timeout=timeout, sandbox=sandbox, readable=readable
        )
        if outcome.rc != 0 or outcome.timed_out:
            log.warning("setup_failed", argv=list(argv), rc=outcome.rc, timed_out=outcome.timed_out)
            return SetupResult(
                ok=False,
                failed_command=tuple(argv),
                rc=outcome.rc,
                timed_out=outcome.timed_out,
                duration=time.monotonic() - started,
                log_tail=outcome.log_tail,
            )
    return SetupResult(
        ok=True,
        failed_command=None,
        rc=0,
        timed_out=False,
        duration=time.monotonic() - started,
        log_tail=tail(log_path),
    )
