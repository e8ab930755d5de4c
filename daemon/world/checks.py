"""Running the repository's verify commands on a tree: in order, stop at the first failure.

Each command runs in its own process group so a timeout kills everything it spawned (test
runners fork workers). A red run is confirmed before it counts (:mod:`daemon.world.confirm`): it is
re-run on the same tree until green or until ``policy.runs_needed`` runs were red, reading the failing
tests after each red run so that a failure of an excused test (quarantined, red on the base) does not
count; with ``policy.parallel`` and spare trees the re-runs run at once in copies of the tree. Without
a policy, ``retries`` is the old fixed rule: that many re-runs, no test evidence.

Before the commands, the tree gets the person's installed dependencies (:mod:`daemon.world.deps`,
with ``dependencies_from``) and the ``[verify] setup`` commands run, in the same sandbox and
environment as the checks: every tree is checked out afresh (``git clean -ffdx``), so both happen
before each run. Set-up commands are re-run by the same rule, in place (the checks need the tree they
set up), without test evidence and never excused. A failing set-up command is a red result with
``setup_failed`` set, so that :mod:`daemon.world.verify` can tell it from a failing check before
blaming anyone.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import structlog

from daemon.world import deps
from daemon.world.confirm import (
    Attempt,
    CommandRuns,
    FlakePolicy,
    Job,
    SpareTrees,
    Stop,
    Tree,
    confirm,
)
from daemon.world.sandbox import Sandbox

__all__ = [
    "NO_SANDBOX",
    "TAIL_CHARS",
    "CheckResult",
    "CheckRunner",
    "CommandRuns",
    "FlakePolicy",
    "SpareTrees",
]

log = structlog.get_logger(__name__)
NO_SANDBOX = Sandbox(kind="none")

TAIL_CHARS = 4000


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckResult:
    passed: bool
    failed_command: tuple[str, ...] | None = None
    returncode: int = 0
    output_tail: str = ""
    # A failed check: the failing command's whole output (its last counted red run), kept for
    # `batchd logs --verify`.
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
        policy: FlakePolicy | None = None,
        spares: SpareTrees | None = None,
    ) -> None:
        self.commands = tuple(tuple(c) for c in commands)
        self.setup = tuple(tuple(c) for c in setup)
        self.dependencies_from = dependencies_from  # the person's checkout, whose node_modules/.venv it links
        # The checks run code the agents wrote: in the sandbox, only the worktree is theirs to write.
        self.sandbox = sandbox
        self.readable = tuple(readable)
        self.timeout = timeout
        self.retries = retries
        # No policy: the old rule, `retries` re-runs of a red command and nothing read from its output.
        self.policy = policy if policy is not None else FlakePolicy(fixed=retries)
        self.spares = spares
        self.env = dict(env) if env is not None else None
        self.kill_grace = kill_grace  # seconds between SIGTERM and SIGKILL to a timed-out group
        self._log_lock = threading.Lock()  # parallel re-runs append to one log

    def __call__(self, worktree: Path) -> CheckResult:
        return self.run(worktree)

    def run(self, worktree: Path, log_path: Path | None = None) -> CheckResult:
        start = time.monotonic()
        tree = self._tree(worktree)
        execute = functools.partial(self._run_one, log_path=log_path)
        tries: list[CommandRuns] = []
        before: list[tuple[tuple[str, ...], bool]] = []  # what a copy of the tree runs first
        tail = ""
        commands = [*((c, True) for c in self.setup), *((c, False) for c in self.commands)]
        for command, is_setup in commands:
            parallel = not is_setup and self.spares is not None and self.policy.parallel > 1
            job = Job(
                command=command,
                tree=tree,
                policy=self.policy,
                execute=execute,
                evidence=not is_setup,
                before=tuple(before),
                copies=functools.partial(self._copies, worktree) if parallel else None,
            )
            done = confirm(job)
            self.policy = self.policy.observed(done.runs)  # the next tree's reds are weighed with it
            tries.append(done.runs)
            before.append((command, is_setup or done.last.returncode == 0))
            tail = done.last.output[-TAIL_CHARS:]
            red = done.last_red
            if done.runs.passed or red is None:
                continue
            if is_setup:
                tail = f"[batchd] [verify] setup command {list(command)} failed:\n{tail}"[-TAIL_CHARS:]
            log.info("check_confirmed_red", command=list(command), reds=done.runs.reds, runs=done.runs.runs)
            return CheckResult(
                passed=False,
                failed_command=command,
                returncode=red.returncode,
                output_tail=tail,
                output=red.output,
                duration=time.monotonic() - start,
                flaky=_flaked(tries),  # an earlier command may have flaked here
                timed_out=red.timed_out,
                setup_failed=is_setup,
                tries=tuple(tries),
            )
        flaky = _flaked(tries)
        if flaky:
            log.warning("check_flaky", worktree=str(worktree))
        return CheckResult(
            passed=True,
            output_tail=tail,
            duration=time.monotonic() - start,
            flaky=flaky,
            tries=tuple(tries),
        )

    def _tree(self, path: Path, *, copy: bool = False) -> Tree:
        """``path`` with the person's dependencies placed, and the environment its commands get."""
        env = {**os.environ, **(self.env or {})}
        if self.dependencies_from is not None:
            deps.place(self.dependencies_from, path)
            # The tree's code, not the person's editable install (once per tree, not per command).
            env = deps.with_python_paths(env, self.dependencies_from, path)
        return Tree(path=path, env=env, copy=copy)

    def _copies(self, worktree: Path, n: int) -> list[Tree]:
        assert self.spares is not None
        return [self._tree(path, copy=True) for path in self.spares.get(worktree, n)]

    def _run_one(
        self, command: tuple[str, ...], tree: Tree, stop: Stop | None, *, log_path: Path | None
    ) -> Attempt:
        worktree = tree.path
        with tempfile.TemporaryFile(mode="w+b") as out:
            try:
                proc = subprocess.Popen(
                    self.sandbox.wrap(command, workspace=worktree, readable=self.readable),
                    cwd=worktree,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=tree.env,
                    start_new_session=True,  # its own group: a timeout kills what it spawned too
                )
            except OSError as e:  # not found, not executable: a red check the log explains
                return Attempt(returncode=127, output=f"cannot run {list(command)}: {e}\n", timed_out=False)
            if stop is not None:
                stop.enter(proc.pid)
            timed_out = False
            try:
                rc = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                rc = _kill_group(proc, self.kill_grace)
            else:
                # Whatever the command left running in its group (servers, watchers) goes too.
                _signal_group(proc.pid, signal.SIGKILL)
            stopped = stop.leave(proc.pid) if stop is not None else False
            out.seek(0)
            text = out.read().decode("utf-8", errors="replace")
        if timed_out:
            text += f"\n[batchd] timed out after {self.timeout:g}s; process group killed\n"
            rc = rc if rc != 0 else -signal.SIGKILL
        if stopped:
            text += "\n[batchd] stopped: another run of this command on a copy of the tree was green\n"
        if log_path is not None:
            with self._log_lock:
                _append_log(log_path, command, rc, text, where=worktree if tree.copy else None)
        return Attempt(returncode=rc, output=text, timed_out=timed_out, stopped=stopped)


def _flaked(tries: Sequence[CommandRuns]) -> bool:
    """Some command was red, then green, on this tree (a command that passed as known red is not)."""
    return any(0 < t.reds < t.runs for t in tries)


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


def _append_log(
    log_path: Path, command: tuple[str, ...], rc: int, text: str, *, where: Path | None = None
) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("a", encoding="utf-8") as f:
        if where is not None:  # a re-run in a spare copy of the tree
            f.write(f"[batchd] in a copy of the tree, {where}:\n")
        _write_section(f, command, rc, text)


def _write_section(f: IO[str], command: tuple[str, ...], rc: int, text: str) -> None:
    f.write(f"$ {' '.join(command)}\n{text}")
    if not text.endswith("\n"):
        f.write("\n")
    f.write(f"[exit {rc}]\n")
