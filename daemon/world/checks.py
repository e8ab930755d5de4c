"""Running the repository's verify commands on a tree: in order, stop at the first failure.

Each command runs in its own process group so a timeout kills everything it spawned (test
runners fork workers); a failing command is re-run ``retries`` times before it counts, so a flaky
test does not get a todo rejected.

Before the commands, the tree gets the person's installed dependencies (:mod:`daemon.world.deps`,
with ``dependencies_from``) and the ``[verify] setup`` commands run, in the same sandbox and
environment as the checks: every tree is checked out afresh (``git clean -ffdx``), so both happen
before each run. A failing set-up command is a red result with ``setup_failed`` set, so that
:mod:`daemon.world.verify` can tell it from a failing check before blaming anyone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import structlog

from daemon.world import deps
from daemon.world.sandbox import Sandbox
from statemachine.flakes import command_key, runs_needed

log = structlog.get_logger(__name__)
NO_SANDBOX = Sandbox(kind="none")

TAIL_CHARS = 4000


@dataclass(frozen=True, slots=True, kw_only=True)
class FlakePolicy:
    """How a red run is confirmed (issue 14): built by the engine from the flake model and config.

    A command's first red run is re-run on the same tree until a run is green (a flake: the command
    passed) or ``runs_needed`` runs are red (``flakes.runs_needed`` of its rate, ``false_blame`` and
    ``max_reruns``). With ``fixed`` set, every red is re-run exactly that many times, nothing is read
    from the output, and no test is excused: today's ``retries`` rule, kept for comparison.
    """

    rates: Mapping[str, float] = field(default_factory=dict)  # command key -> measured flake rate
    prior: float = 0.05  # the rate of a command with no measurement
    false_blame: float = 0.01
    max_reruns: int = 5  # [verify] retries
    # (command key, test id) whose failures never blame: quarantined, or red on the batch's base.
    excused: frozenset[tuple[str, str]] = frozenset()
    junit: str = ""  # [verify] junit: a report path inside the tree, read after each command
    parallel: int = 1  # re-runs at once, each in a copy of the tree
    fixed: int | None = None

    def runs_needed(self, command: Sequence[str]) -> int:
        if self.fixed is not None:
            return 1 + self.fixed
        rate = self.rates.get(command_key(command), self.prior)
        return runs_needed(rate, self.false_blame, self.max_reruns)


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandRuns:
    """How one command fared on one tree: what ``batch.verify_run``'s ``tries`` and tests record."""

    command: tuple[str, ...]
    runs: int
    reds: int  # red runs that counted (a run whose only failures were excused is not red)
    failed_tests: tuple[str, ...] = ()  # red to the end: the tests that failed, not excused
    flaky_tests: tuple[str, ...] = ()  # failed in one run and passed in a later one on this tree
    excused: tuple[str, ...] = ()  # failed, but quarantined or red on the base: not counted
    evidence: str = ""  # testevidence's runner for the output read, "" when no red run was read

    @property
    def passed(self) -> bool:
        return self.runs > self.reds


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    passed: bool
    failed_command: tuple[str, ...] | None = None
    returncode: int = 0
    output_tail: str = ""
    # A failed check: the failing command's whole output (its last try), kept for `batchd logs --verify`.
    output: str = ""
    duration: float = 0.0
    flaky: bool = False
    timed_out: bool = False
    setup_failed: bool = False  # red because a [verify] setup command failed, not a check
    tries: tuple[CommandRuns, ...] = ()  # every command that ran, in order (setup commands too)

    @property
    def confirmed(self) -> tuple[int, int]:
        """The failing command's (red runs, runs): "confirmed in 3 of 3 runs"; (0, 0) when green."""
        last = self.tries[-1] if self.tries and not self.passed else None
        return (last.reds, last.runs) if last is not None else (0, 0)

    @property
    def failed_tests(self) -> tuple[str, ...]:
        return self.tries[-1].failed_tests if self.tries and not self.passed else ()


@dataclass(frozen=True, slots=True, kw_only=True)
class _Attempt:
    returncode: int
    output: str
    timed_out: bool


class CheckRunner:
    """Runs the verify commands on a worktree; also usable as ``runner(worktree) -> CheckResult``."""

    def __init__(
        self,
        commands: Sequence[Sequence[str]],
        *,
        timeout: float,
        retries: int = 0,
        env: Mapping[str, str] | None = None,
        kill_grace: float = 2.0,
        sandbox: Sandbox = NO_SANDBOX,
        readable: Sequence[Path] = (),
        setup: Sequence[Sequence[str]] = (),
        dependencies_from: Path | None = None,
    ) -> None:
        self.commands = tuple(tuple(c) for c in commands)
        self.setup = tuple(tuple(c) for c in setup)
        self.dependencies_from = dependencies_from  # the person's checkout, whose node_modules/.venv it links
        # The checks run code the agents wrote: in the sandbox, only the worktree is theirs to write.
        self.sandbox = sandbox
        self.readable = tuple(readable)
        self.timeout = timeout
        self.retries = retries
        self.env = dict(env) if env is not None else None
        self.kill_grace = kill_grace  # seconds between SIGTERM and SIGKILL to a timed-out group

    def __call__(self, worktree: Path) -> CheckResult:
        return self.run(worktree)

    def run(self, worktree: Path, log_path: Path | None = None) -> CheckResult:
        start = time.monotonic()
        env = {**os.environ, **(self.env or {})}
        if self.dependencies_from is not None:
            deps.place(self.dependencies_from, worktree)
            # The worktree's code, not the person's editable install (once per tree, not per command).
            env = deps.with_python_paths(env, self.dependencies_from, worktree)
        flaky = False
        tail = ""
        commands = [*((c, True) for c in self.setup), *((c, False) for c in self.commands)]
        for command, is_setup in commands:
            for attempt in range(self.retries + 1):
                done = self._run_one(command, worktree, log_path, env)
                tail = done.output[-TAIL_CHARS:]
                if done.returncode == 0:
                    flaky = flaky or attempt > 0
                    break
                log.info(
                    "setup_failed" if is_setup else "check_failed",
                    command=list(command),
                    rc=done.returncode,
                    attempt=attempt + 1,
                    timed_out=done.timed_out,
                )
            else:
                if is_setup:
                    tail = f"[batchd] [verify] setup command {list(command)} failed:\n{tail}"[-TAIL_CHARS:]
                return CheckResult(
                    passed=False,
                    failed_command=command,
                    returncode=done.returncode,
                    output_tail=tail,
                    output=done.output,
                    duration=time.monotonic() - start,
                    flaky=False,
                    timed_out=done.timed_out,
                    setup_failed=is_setup,
                )
        if flaky:
            log.warning("check_flaky", worktree=str(worktree))
        return CheckResult(passed=True, output_tail=tail, duration=time.monotonic() - start, flaky=flaky)

    def _run_one(
        self, command: tuple[str, ...], worktree: Path, log_path: Path | None, env: Mapping[str, str]
    ) -> _Attempt:
        with tempfile.TemporaryFile(mode="w+b") as out:
            try:
                proc = subprocess.Popen(
                    self.sandbox.wrap(command, workspace=worktree, readable=self.readable),
                    cwd=worktree,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own group: a timeout kills what it spawned too
                )
            except OSError as e:  # not found, not executable: a red check the log explains
                return _Attempt(returncode=127, output=f"cannot run {list(command)}: {e}\n", timed_out=False)
            timed_out = False
            try:
                rc = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                rc = _kill_group(proc, self.kill_grace)
            else:
                # Whatever the command left running in its group (servers, watchers) goes too.
                _signal_group(proc.pid, signal.SIGKILL)
            out.seek(0)
            text = out.read().decode("utf-8", errors="replace")
        if timed_out:
            text += f"\n[batchd] timed out after {self.timeout:g}s; process group killed\n"
            rc = rc if rc != 0 else -signal.SIGKILL
        if log_path is not None:
            _append_log(log_path, command, rc, text)
        return _Attempt(returncode=rc, output=text, timed_out=timed_out)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> int:
    """SIGTERM the whole group, SIGKILL it after a grace period; returns the leader's status."""
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        rc = proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    else:
        _signal_group(proc.pid, signal.SIGKILL)  # children that ignored SIGTERM
    return rc


def _append_log(log_path: Path, command: tuple[str, ...], rc: int, text: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as f:
        _write_section(f, command, rc, text)


def _write_section(f: IO[str], command: tuple[str, ...], rc: int, text: str) -> None:
    f.write(f"$ {' '.join(command)}\n{text}")
    if not text.endswith("\n"):
        f.write("\n")
    f.write(f"[exit {rc}]\n")
