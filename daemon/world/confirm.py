"""Confirming a red verify run (issue 14): re-run it on the same tree until green or confirmed.

Flaky tests only fail falsely, so a green run is trusted at once and a red one is re-run: the
command passed as soon as one run is green (its earlier reds were flakes), and it is red once
``policy.runs_needed(command)`` runs were red. After each red run the failing tests are read
(:func:`read_evidence`: the JUnit report when ``policy.junit`` is set and this run wrote it, else the
output); a run whose evidence is complete and names only excused tests (quarantined, or red on the
batch's base) is "excused": it counts as green for the command. Anything short of complete evidence
is a plain red: an unknown runner or a cut-off summary names at least those tests, never all of them.
So is a run whose failing tests do not explain it: more than :data:`MAX_TEST_FAILURES` at once (the
machine or the suite is broken), or an exit that is not "tests failed" (a hang, a signal, a runner's
own error after its summary: :data:`TEST_FAILURE_CODES`). Test ids are compared only between runs
read from one source (a JUnit report and the text spell them differently).

Two kinds of known failure excuse a command only once it is confirmed red (every run red, each
explained by its named tests), so a flake on them is still seen and learned: on a batch's base
(``policy.base``, the baseline) any tests it names are red on the base, and elsewhere the tests red
on the newest verified head (``policy.red_on_head``). The command then passes with those tests
excused, and its record keeps the runs red (runs = reds) so the flake model learns nothing from it.

With ``policy.parallel > 1`` and spare trees, the re-runs still needed after the first red run run at
once: one on the tree itself and the rest in copies of it (:class:`SpareTrees`), each of which first
runs the commands before this one (``[verify] setup`` and the earlier checks) so it is in the state
the tree was. A copy whose preparation fails shows nothing about this command and is not counted.
On the first green the copies still running are killed; the run on the tree itself is left to
finish, because the later commands run in that tree and must not find a half-run command's leftovers.

This module does no process handling of its own: :class:`daemon.world.checks.CheckRunner` passes
its executor in (:class:`Execute`), so the confirmation rule can be read apart from process groups.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import structlog

from daemon.exceptions import BatchdError
from daemon.world.flakepolicy import CommandRuns, FlakePolicy, SpareTrees
from daemon.world.reportread import REFUSED, read_evidence, report_id
from daemon.world.testevidence import UNKNOWN, Evidence

__all__ = [
    "MAX_TEST_FAILURES",
    "TEST_FAILURE_CODES",
    "Attempt",
    "CommandRuns",
    "Confirmed",
    "Execute",
    "FlakePolicy",
    "Job",
    "SpareTrees",
    "Stop",
    "Tree",
    "confirm",
    "read_evidence",
]

log = structlog.get_logger(__name__)

# More failing tests than this in one run is the machine or the suite broken (a database down, an
# import error everywhere), not flaky tests: such a run is never excused, and teaches nothing per test.
MAX_TEST_FAILURES = 10
# The exit codes of "some tests failed": pytest, unittest, jest, vitest, go test and npm 1, make 2
# (a failing recipe; pytest's 2 is a collection error, which names its module), cargo test 101. A
# run that ends otherwise (a timeout, a signal, pytest's internal error 3) is red whatever it printed.
TEST_FAILURE_CODES = frozenset({1, 2, 101})

# A round's copies are killed at the first green; their threads only have to reap and log.
_REAP_S = 10.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Tree:
    """A folder commands run in, with the environment made for it (its own ``PYTHONPATH``)."""

    path: Path
    env: Mapping[str, str]
    copy: bool = False  # a spare copy, not the tree under verification


@dataclass(frozen=True, slots=True, kw_only=True)
class Attempt:
    """One finished run of one command."""

    returncode: int
    output: str
    timed_out: bool
    stopped: bool = False  # killed by a :class:`Stop` because another run was green: not a result


class Stop:
    """The process groups of one round's copies, killed together once a run of the round is green."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._killed: set[int] = set()
        self._stopped = False

    @property
    def stopped(self) -> bool:
        return self._stopped

    def enter(self, pgid: int) -> None:
        """A run started in group ``pgid``; killed at once if the round is already over."""
        with self._lock:
            self._live.add(pgid)
            if self._stopped:
                self._kill(pgid)

    def leave(self, pgid: int) -> bool:
        """The run in ``pgid`` ended; True when this Stop killed it (its result means nothing)."""
        with self._lock:
            self._live.discard(pgid)
            return pgid in self._killed

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            for pgid in tuple(self._live):
                self._kill(pgid)

    def _kill(self, pgid: int) -> None:
        self._killed.add(pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


class Execute(Protocol):
    """Runs one command in a tree to the end (or its timeout, or ``stop``), logging it."""

    def __call__(self, command: tuple[str, ...], tree: Tree, stop: Stop | None) -> Attempt: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One command to settle on one tree."""

    command: tuple[str, ...]
    tree: Tree
    policy: FlakePolicy
    execute: Execute
    evidence: bool = True  # read failing tests (not for [verify] setup commands, never excused)
    # What a copy runs first to be in the tree's state: each command, and whether it must be green
    # there (a set-up command, or a check that was green in the tree; not one that passed excused).
    before: tuple[tuple[tuple[str, ...], bool], ...] = ()
    copies: Callable[[int], list[Tree]] | None = None  # n copies of the tree; None: re-run in place


@dataclass(frozen=True, slots=True, kw_only=True)
class Confirmed:
    """A settled command: its record, and the runs whose output the check result keeps."""

    runs: CommandRuns
    last: Attempt  # the last run that counted
    last_red: Attempt | None  # the last counted red run (the output a rejection shows)


Kind = Literal["green", "excused", "red"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Run:
    attempt: Attempt
    evidence: Evidence | None  # None: green, or not read


def confirm(job: Job) -> Confirmed:
    """Run ``job.command`` until it is green (or excused) or ``runs_needed`` runs were red."""
    tally = _Tally(job)
    needed = job.policy.runs_needed(job.command)
    tally.add(_run(job, job.tree, None))
    while not tally.passed and tally.reds < needed:
        at_once = min(job.policy.parallel, needed - tally.reds)
        if at_once > 1 and job.copies is not None:
            _round(job, tally, at_once)
        else:
            tally.add(_run(job, job.tree, None))
    if job.evidence and not tally.passed:
        tally.settle()
    return tally.confirmed()


def _round(job: Job, tally: _Tally, at_once: int) -> None:
    """``at_once`` runs together: the tree's own and ``at_once - 1`` copies'; over at the first green
    (the copies still running are killed), else when all are done."""
    assert job.copies is not None
    try:
        copies = job.copies(at_once - 1)
    except (BatchdError, OSError) as e:  # no copies (a full disk, a git error): re-run in place
        log.warning("spare_trees_unavailable", error=str(e))
        copies = []
    stop = Stop()
    done: queue.Queue[_Run | Exception | None] = queue.Queue()

    def work(tree: Tree) -> None:
        try:
            done.put(_prepared_run(job, tree, stop if tree.copy else None))
        except Exception as e:  # raised again below, in the caller's thread  # noqa: BLE001
            stop.stop()
            done.put(e)

    threads = [threading.Thread(target=work, args=(t,), daemon=True) for t in (job.tree, *copies)]
    for thread in threads:
        thread.start()
    log.info("check_rerun_parallel", command=list(job.command), runs=len(threads))
    failure: Exception | None = None
    for _ in threads:
        run = done.get()
        if isinstance(run, Exception):
            failure = failure or run
        elif run is not None and not run.attempt.stopped and tally.add(run) != "red":
            stop.stop()  # the copies' runs show nothing more; the tree's own run is waited for
    for thread in threads:
        thread.join(timeout=_REAP_S)
    if failure is not None:
        raise failure


def _prepared_run(job: Job, tree: Tree, stop: Stop | None) -> _Run | None:
    """The command's run in ``tree``; a copy first runs ``job.before``. None: a copy whose
    preparation failed or that was stopped (it shows nothing about this command)."""
    if tree.copy:
        for command, must_pass in job.before:
            if stop is not None and stop.stopped:
                return None
            ready = job.execute(command, tree, stop)
            if ready.stopped or (must_pass and ready.returncode != 0):
                log.info("spare_tree_unprepared", command=list(command), rc=ready.returncode)
                return None
    if stop is not None and stop.stopped:
        return None
    return _run(job, tree, stop)


def _run(job: Job, tree: Tree, stop: Stop | None) -> _Run:
    junit = job.policy.junit if job.evidence and job.policy.fixed is None else ""
    before = report_id(tree.path, junit) if junit else None
    attempt = job.execute(job.command, tree, stop)
    if attempt.returncode == 0 or attempt.stopped or not job.evidence or job.policy.fixed is not None:
        return _Run(attempt=attempt, evidence=None)
    # A report is this run's only if the run (re)wrote it: the same file as before the run (one a
    # previous command or run left, or one the repository tracks) says nothing of this run, and the
    # output is read instead. One that cannot be opened safely (a link) is no evidence at all.
    after = report_id(tree.path, junit) if junit else None
    if after == REFUSED:
        return _Run(attempt=attempt, evidence=Evidence())
    fresh = after is not None and after != before
    evidence = read_evidence(tree.path, attempt.output, junit if fresh else "")
    return _Run(attempt=attempt, evidence=evidence)


def _failed_in(run: _Run) -> frozenset[str]:
    return run.evidence.failed if run.evidence is not None else frozenset()


def _named_failure(run: _Run) -> bool:
    """A red run that its failing tests explain: complete evidence naming a few tests, and an exit
    that means "tests failed". Not one where no test explains it (a coverage threshold, "no tests
    ran"), or only some do, or so many fail at once that the machine or the suite is broken, nor a
    hang, a crash or a runner's own error after its summary."""
    ev, attempt = run.evidence, run.attempt
    if ev is None or not ev.complete or not ev.failed or len(ev.failed) > MAX_TEST_FAILURES:
        return False
    return not attempt.timed_out and attempt.returncode in TEST_FAILURE_CODES


class _Tally:
    """The counted runs of one command on one tree, and what they say about its tests."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.excusable = job.policy.excused_tests(job.command) if job.evidence else frozenset()
        self.runs: list[tuple[Kind, _Run]] = []
        self.passed = False
        self.reds = 0
        self.source: str | None = None  # the runner that first named tests (see _same_source)
        # Excusable only once confirmed red (see FlakePolicy.red_on_head).
        self.later = job.policy.red_on_head_tests(job.command) if job.evidence else frozenset()
        self.known = False  # confirmed red by tests known red (see settle)
        self.red_tests: frozenset[str] = frozenset()  # those tests

    def add(self, run: _Run) -> Kind:
        run = self._same_source(run)
        kind = self._kind(run)
        self.runs.append((kind, run))
        self.reds += kind == "red"
        self.passed = self.passed or kind != "red"
        command = list(self.job.command)
        ev = run.evidence
        if kind == "excused" and ev is not None:
            log.info("check_excused", command=command, tests=sorted(ev.failed))
        elif kind == "red":
            log.info(
                "setup_failed" if not self.job.evidence else "check_failed",
                command=command,
                rc=run.attempt.returncode,
                attempt=len(self.runs),
                timed_out=run.attempt.timed_out,
                evidence=ev.runner if ev is not None else "",
            )
        return kind

    def _same_source(self, run: _Run) -> _Run:
        """Test ids are compared only between runs read the same way: a JUnit report and the text
        spell them differently, so once one source named tests, a run read from another (its report
        missing this time, say) counts as naming none."""
        ev = run.evidence
        if ev is None or ev.runner == UNKNOWN:
            return run
        if self.source is None:
            self.source = ev.runner
        if ev.runner == self.source:
            return run
        return _Run(attempt=run.attempt, evidence=Evidence())

    def _kind(self, run: _Run) -> Kind:
        attempt = run.attempt
        if attempt.returncode == 0:
            return "green"
        ev = run.evidence
        if ev is None or not _named_failure(run):
            return "red"  # a hang, a crash or a runner's own error after its summary: not the tests
        return "excused" if ev.failed <= self.excusable else "red"

    def settle(self) -> None:
        """A command confirmed red by tests known red: the tests that failed in every red run (each
        run explained by its named tests) are all known red (on a base, ``policy.base``: any; elsewhere
        red on the head, ``red_on_head``, or excusable). Then it passed, those tests are its excused
        ones, and a test that failed in only some runs is a flaky test. The runs stay red in the record
        (tries: runs = reds), so the flake model learns nothing from them: a test that is simply broken
        is no measure of flakiness. No test in every run (X, then Y, then Z): no test is shown red."""
        reds = [run for kind, run in self.runs if kind == "red"]
        if not reds or not all(_named_failure(run) for run in reds):
            return
        always = frozenset.intersection(*(_failed_in(run) for run in reds))
        if not always or not (self.job.policy.base or always <= self.excusable | self.later):
            return
        self.passed = self.known = True
        self.red_tests = always
        event = "check_red_on_base" if self.job.policy.base else "check_red_on_head"
        log.info(event, command=list(self.job.command), tests=sorted(self._excused()))

    def confirmed(self) -> Confirmed:
        reds = [run for kind, run in self.runs if kind == "red"]
        read = [run.evidence for _, run in self.runs if run.evidence is not None]
        runs = CommandRuns(
            command=self.job.command,
            runs=len(self.runs),
            reds=len(reds),
            failed_tests=() if self.passed else self._failed(reds),
            flaky_tests=self._flaky(),
            excused=tuple(sorted(self._excused())),
            evidence=read[-1].runner if read else "",
            known_red=self.known,
        )
        return Confirmed(
            runs=runs, last=self.runs[-1][1].attempt, last_red=reds[-1].attempt if reds else None
        )

    def _excused(self) -> set[str]:
        """Failures not counted: excusable tests wherever they failed, and every test an excused
        run named (on a base, all of them)."""
        if self.known:
            return set(self.red_tests)  # red in every run; the rest of what failed is flaky
        # A test red on the head that passed on a re-run here is not excused: it is a flaky test.
        excusable = self.excusable if self.passed else self.excusable | self.later
        found: set[str] = set()
        for kind, run in self.runs:
            named = _failed_in(run)
            found |= named if kind == "excused" else named & excusable
        return found

    def _failed(self, reds: list[_Run]) -> tuple[str, ...]:
        """The tests that failed in every confirming run that names all its failures."""
        sets = [r.evidence.failed for r in reds if r.evidence is not None and r.evidence.complete]
        if not sets:
            return ()
        return tuple(sorted(frozenset.intersection(*sets) - self.excusable - self.later))

    def _flaky(self) -> tuple[str, ...]:
        """Tests that failed in one run and not in another of this tree: a green run, or one whose
        evidence is complete (runs on one tree differ only by flakes)."""
        # A run failing en masse (a database down) says nothing about single tests: not learned.
        failed = [
            run.evidence.failed
            for _, run in self.runs
            if run.evidence is not None and len(run.evidence.failed) <= MAX_TEST_FAILURES
        ]
        passing: list[frozenset[str]] = []  # per run that shows every test's outcome: what failed
        for kind, run in self.runs:
            if kind == "green":
                passing.append(frozenset())
            elif run.evidence is not None and run.evidence.complete:
                passing.append(run.evidence.failed)
        seen = frozenset().union(*failed) - self.excusable if failed else frozenset()
        return tuple(sorted(t for t in seen if any(t not in shown for shown in passing)))
