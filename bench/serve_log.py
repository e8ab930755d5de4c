"""A synthetic run of batchd for ``bench.serve``: 100,000 todos through every path a real run takes.

The events follow a real demo run's order (``tests/fixtures/logs/demo-run-v1.db``) and the machines
of :mod:`statemachine.tables`: per phase the todos are queued, the phase and its batches planned,
the phase started; per batch a baseline (the phase's first batch), the todos planned, the batch
started, every agent started and spawned, each agent's outcome at its own time, the finished ones
verifying, verify runs (red runs that bisect a culprit; now and then a flake), the verdicts
(accepted, rejected, conflicted, failed, each retried once in the phase's retry batch, where some
are blocked), and at the end the phase commit, the completions and the push (now and then a push
that fails once). Now and then the daemon restarts in the middle of a batch: its running agents
are interrupted and run again. Nothing here is checked by hand: :func:`build` replays the log it
wrote through the real projection, which raises on any move its tables do not declare.

:func:`phase_stages` yields the run as steps, one transaction each (the way the daemon writes them:
``bench.serve``'s writer appends them so); :func:`build` writes them with
:meth:`store.EventLog.append_many` in big transactions (the steps of up to half a simulated minute
together) through a simulated clock, so ``recorded_at`` says when each step would have happened
(agents take minutes, checks a minute or two) and a timeline drawn from the log has the proportions
of a real run. The randomness is seeded: the same arguments write the
same events.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from statemachine import events as ev
from statemachine.projection import replay, save_snapshot
from store import Append, EventLog

__all__ = [
    "BATCHES_PER_PHASE",
    "LOG_VERSION",
    "SLOTS",
    "SimClock",
    "Stage",
    "build",
    "phase_stages",
]

#: Bump when the events written change: cached logs of another version are not used.
LOG_VERSION = 1
SLOTS = 10  # agents per batch (the agent slots of a big machine)
BATCHES_PER_PHASE = 20  # 200 todos a phase: a 100,000-todo run has 500 phases
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
VERIFY = ("pytest", "-q")
AGENT_TIMEOUT = 3600.0
# The steps of up to this much simulated time (or this many appends) go into one transaction: a big
# log builds in a few minutes instead of a quarter of an hour, and no event is recorded more than
# this much later than its step happened.
COALESCE_SECONDS = 30.0
COALESCE_APPENDS = 2000

# How often each thing happens (per todo's first attempt, per batch, per phase).
P_EXIT, P_TIMEOUT, P_REJECT, P_CONFLICT = 0.05, 0.01, 0.05, 0.03
P_SECOND_FAILS = 0.25  # a retried todo fails again, and is blocked
# The rare things come on a schedule, not by chance, so that even a two-phase log has each of them:
RESTART_EVERY = 100  # batches: the daemon restarts in one batch in a hundred (agents interrupted)
FLAKE_EVERY = 25  # batches: one in 25 passes only on a re-run of its checks
PUSH_FAILS_EVERY = 25  # phases: one in 25 pushes fails once

#: (seconds to advance the clock before it, the appends of one transaction).
Stage = tuple[float, list[Append]]


class SimClock:
    """The store's clock while the log is built: moved on by each stage, never backwards."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=max(0.0, seconds))


def _sha(kind: str, n: int) -> str:
    return f"{kind}{n:x}".ljust(40, "0")[:40]


def _todo_fields(n: int) -> dict[str, object]:
    tid = str(n)
    # One title in a thousand is markup: pages must escape it, and escaping is part of their cost.
    title = f"<script>alert({n})</script> in the parser" if n % 1000 == 7 else f"Fix the parser, case {n}"
    priority = ("p1", "p2", "p3")[n % 3]
    return {
        "todo_id": tid,
        "path": f"todos/{tid}-ready-{priority}-fix-the-parser-case-{n}.md",
        "title": title,
        "priority": priority,
        "digest": _sha("d", n),
        "files": (f"src/module_{n % 97}.py",),
    }


@dataclass
class _Todo:
    tid: str
    n: int
    fate: str  # first attempt: ok | exit | timeout | rejected | conflicted
    attempt: int = 1
    duration: float = 0.0
    verdict: str = ""  # what the batch decided: accepted | rejected | conflicted | failed


@dataclass
class _Phase:
    number: int
    accepted: list[str] = field(default_factory=list)
    retry: list[_Todo] = field(default_factory=list)


def _agent_seconds(rng: random.Random) -> float:
    # Log-normal around five minutes, as coding agents on small todos take; capped below the timeout.
    return min(AGENT_TIMEOUT - 60, max(20.0, rng.lognormvariate(math.log(300), 0.6)))


def _fate(rng: random.Random) -> str:
    x = rng.random()
    for fate, p in (
        ("exit", P_EXIT),
        ("timeout", P_TIMEOUT),
        ("rejected", P_REJECT),
        ("conflicted", P_CONFLICT),
    ):
        if x < p:
            return fate
        x -= p
    return "ok"


def _one(stream: str, *events: object) -> Append:
    return Append(stream, list(events))


def phase_stages(
    phase: int, first: int, count: int, rng: random.Random, *, restarts: bool = True
) -> Iterator[Stage]:
    """The stages of one phase of ``count`` new todos numbered from ``first``.

    ``restarts``: let the daemon restart in some batches (a run.stopping and a run.daemon_attached);
    False for a writer that may be stopped anywhere (a stop between the two would leave the run
    stopping, and a second run.stopping is not a move the run's machine has)."""
    todos = [_Todo(str(n), n, _fate(rng)) for n in range(first, first + count)]
    keys = [f"{phase}.{b + 1}" for b in range((count + SLOTS - 1) // SLOTS)]
    ps = ev.phase_stream(phase)
    yield 1.0, [_one(ev.todo_stream(t.tid), ev.TodoQueued(**_todo_fields(t.n))) for t in todos]  # type: ignore[arg-type]
    title = f"Phase {phase}: the parser, part {phase}"
    planned = [
        _one(ps, ev.PhasePlanned(number=phase, title=title, commit_message=title, batches=tuple(keys)))
    ]
    for b, key in enumerate(keys):
        ids = tuple(t.tid for t in todos[b * SLOTS : (b + 1) * SLOTS])
        planned.append(_one(ev.batch_stream(key), ev.BatchPlanned(key=key, phase=phase, todo_ids=ids)))
    yield 0.2, planned
    yield 0.1, [_one(ps, ev.PhaseStarted(number=phase, base_sha=_sha("p", phase)))]
    state = _Phase(phase)
    for b, key in enumerate(keys):
        members = todos[b * SLOTS : (b + 1) * SLOTS]
        nth = (phase - 1) * BATCHES_PER_PHASE + b  # the batch's place in the run
        yield from _batch(
            state,
            key,
            members,
            rng,
            baseline=b == 0,
            restart=restarts and nth % RESTART_EVERY == 3,
            flaky=nth % FLAKE_EVERY == 1,
        )
    if state.retry:
        key = f"{phase}.r1"
        ids = tuple(t.tid for t in state.retry)
        yield 0.2, [_one(ev.batch_stream(key), ev.BatchPlanned(key=key, phase=phase, todo_ids=ids))]
        for t in state.retry:
            t.attempt = 2
            t.fate = "exit" if rng.random() < P_SECOND_FAILS else "ok"
        yield from _batch(state, key, state.retry, rng, baseline=False, restart=False, flaky=False)
    yield from _phase_end(state, rng)


def _batch(
    state: _Phase,
    key: str,
    members: list[_Todo],
    rng: random.Random,
    *,
    baseline: bool,
    restart: bool,
    flaky: bool,
) -> Iterator[Stage]:
    bs = ev.batch_stream(key)
    ids = tuple(t.tid for t in members)
    base = _sha("p", state.number)
    runs = 0
    for t in members:
        t.verdict = ""
    if baseline:
        yield (
            0.5,
            [
                _one(
                    bs,
                    ev.BatchVerifyRun(
                        key=key,
                        run=0,
                        todo_ids=(),
                        passed=True,
                        command=VERIFY,
                        duration=75.0,
                        baseline=True,
                        sha=base,
                        tries=(("pytest -q", 1, 0),),
                    ),
                )
            ],
        )
    yield (
        10.0 if baseline else 0.5,
        [
            *(
                _one(ev.todo_stream(t.tid), ev.TodoPlanned(todo_id=t.tid, batch=key, phase=state.number))
                for t in members
            ),
            _one(bs, ev.BatchStarted(key=key, base_sha=base, todo_ids=ids)),
        ],
    )
    yield from _agents_start(key, members, base)
    if restart:
        # The daemon is stopped (an upgrade) a minute in: every running agent is interrupted, and
        # they all run again once a new daemon attached.
        yield (
            60.0,
            [
                _one(ev.RUN_STREAM, ev.RunStopping(reason="SIGTERM")),
                *(
                    _one(
                        ev.todo_stream(t.tid),
                        ev.AgentInterrupted(
                            todo_id=t.tid, attempt=t.attempt, reason="daemon stopped", duration=60.0
                        ),
                    )
                    for t in members
                ),
            ],
        )
        yield 5.0, [_one(ev.RUN_STREAM, ev.DaemonAttached(pid=40_000 + state.number, version="bench"))]
        yield from _agents_start(key, members, base)
    for t in members:
        t.duration = AGENT_TIMEOUT if t.fate == "timeout" else _agent_seconds(rng)
    elapsed = 0.0
    for t in sorted(members, key=lambda t: t.duration):
        yield t.duration - elapsed, [_one(ev.todo_stream(t.tid), _agent_outcome(t, key, rng))]
        elapsed = t.duration
    finished = [t for t in members if t.fate not in ("exit", "timeout")]
    for t in members:
        if t.fate in ("exit", "timeout"):
            t.verdict = "failed"
    if finished:
        candidates = tuple(t.tid for t in finished)
        yield (
            1.0,
            [
                *(_one(ev.todo_stream(t.tid), ev.TodoVerifying(todo_id=t.tid, batch=key)) for t in finished),
                _one(bs, ev.BatchVerifying(key=key, base_sha=base, candidates=candidates)),
            ],
        )
        conflicted = [t for t in finished if t.fate == "conflicted"]
        culprits = [t for t in finished if t.fate == "rejected"]
        good = [t for t in finished if t.fate == "ok"]
        tested = [t for t in finished if t not in conflicted]
        for t in conflicted:
            t.verdict = "conflicted"
        if culprits:  # red on all of them, then bisected down to each culprit
            runs += 1
            yield from _verify_run(key, runs, tested, passed=False, rng=rng)
            for t in culprits:
                runs += 1
                yield from _verify_run(key, runs, [t], passed=False, rng=rng)
                t.verdict = "rejected"
        if good:
            runs += 1
            yield from _verify_run(key, runs, good, passed=True, rng=rng, flaked=flaky)
            for t in good:
                t.verdict = "accepted"
    yield from _verdicts(state, key, members, runs)


def _agents_start(key: str, members: list[_Todo], base: str) -> Iterator[Stage]:
    yield (
        0.3,
        [
            _one(
                ev.todo_stream(t.tid),
                ev.AgentStarted(
                    todo_id=t.tid,
                    attempt=t.attempt,
                    batch=key,
                    worktree=f".batchd/workspaces/{t.tid}-{t.attempt}",
                    branch=f"batchd/{t.tid}-{t.attempt}",
                    base_sha=base,
                    log_path=f".batchd/logs/{t.tid}-{t.attempt}.log",
                    argv=("claude", "-p", "@prompt.md", "--output-format", "json"),
                ),
            )
            for t in members
        ],
    )
    yield (
        0.4,
        [
            _one(
                ev.todo_stream(t.tid),
                ev.AgentSpawned(
                    todo_id=t.tid, attempt=t.attempt, pid=20_000 + t.n % 30_000, pgid=20_000 + t.n % 30_000
                ),
            )
            for t in members
        ],
    )


def _agent_outcome(t: _Todo, key: str, rng: random.Random) -> object:
    cost = round(t.duration / 60 * rng.uniform(0.02, 0.08), 4)
    if t.fate == "timeout":
        return ev.AgentFailed(
            todo_id=t.tid,
            attempt=t.attempt,
            reason="timeout",
            detail="timed out after 3600s",
            duration=t.duration,
            cost_usd=cost,
        )
    if t.fate == "exit":
        return ev.AgentFailed(
            todo_id=t.tid,
            attempt=t.attempt,
            reason="exit",
            detail="exited with code 1",
            returncode=1,
            duration=t.duration,
            cost_usd=cost,
            log_tail="Traceback (most recent call last):\n  ...\nKeyError: 'x'\n",
        )
    return ev.AgentFinished(
        todo_id=t.tid,
        attempt=t.attempt,
        returncode=0,
        duration=t.duration,
        commit=_sha("c", t.n * 4 + t.attempt),
        files=(f"src/module_{t.n % 97}.py",),
        cost_usd=cost,
    )


def _verify_run(
    key: str, run: int, todos: list[_Todo], *, passed: bool, rng: random.Random, flaked: bool = False
) -> Iterator[Stage]:
    duration = round(rng.uniform(60, 180), 3)
    tries = (("pytest -q", 2, 1),) if flaked else (("pytest -q", 1, 0 if passed else 1),)
    yield (
        duration,
        [
            _one(
                ev.batch_stream(key),
                ev.BatchVerifyRun(
                    key=key,
                    run=run,
                    todo_ids=tuple(t.tid for t in todos),
                    passed=passed,
                    command=VERIFY,
                    duration=duration,
                    sha=_sha("v", run),
                    tries=tries,
                    flaked=flaked,
                    confirmed=(0, 0) if passed else (1, 1),
                    failed_tests=() if passed else ("tests/test_parser.py::test_case",),
                ),
            )
        ],
    )


def _verdicts(state: _Phase, key: str, members: list[_Todo], runs: int) -> Iterator[Stage]:
    appends: list[Append] = []
    for t in members:
        stream = ev.todo_stream(t.tid)
        last = t.attempt >= 2
        if t.verdict == "accepted":
            appends.append(_one(stream, ev.TodoAccepted(todo_id=t.tid, batch=key, commit=_sha("a", t.n))))
            state.accepted.append(t.tid)
            continue
        if t.verdict == "rejected":
            first: object = ev.TodoRejected(
                todo_id=t.tid,
                batch=key,
                attempt=t.attempt,
                command=VERIFY,
                output_tail="FAILED tests/test_parser.py::test_case - AssertionError",
                files_reverted=(),
                action="its change was left out",
                reason="broke `pytest -q` (confirmed in 1 of 1 runs)",
                confirmed=(1, 1),
                failed_tests=("tests/test_parser.py::test_case",),
            )
        elif t.verdict == "conflicted":
            winner = next((w.tid for w in members if w.verdict == "accepted"), members[0].tid)
            first = ev.TodoConflicted(
                todo_id=t.tid,
                batch=key,
                attempt=t.attempt,
                winner=winner,
                files=(f"src/module_{t.n % 97}.py",),
                resolution="redo",
            )
        else:
            first = None  # its agent failed: the failure is its record
        then: object
        if last:
            then = ev.TodoBlocked(
                todo_id=t.tid,
                reason=f"attempts exhausted (2/2): {t.verdict}",
                action=f"fix by hand, or `batchd retry {t.tid}` for another attempt",
            )
        else:
            then = ev.TodoRetryScheduled(
                todo_id=t.tid,
                next_attempt=2,
                reason=t.verdict,
                repair=t.verdict,
                mode="redo" if t.verdict == "conflicted" else "repair",
            )
            state.retry.append(t)
        appends.append(Append(stream, [e for e in (first, then) if e is not None]))

    def tids(verdict: str) -> tuple[str, ...]:
        return tuple(t.tid for t in members if t.verdict == verdict)

    verified = ev.BatchVerified(
        key=key,
        head_sha=_sha("h", runs),
        accepted=tids("accepted"),
        rejected=tids("rejected"),
        conflicted=tids("conflicted"),
        failed=tids("failed"),
        runs=runs,
    )
    appends.append(Append(ev.batch_stream(key), [verified, ev.BatchDone(key=key)]))
    yield 1.0, appends


def _phase_end(state: _Phase, rng: random.Random) -> Iterator[Stage]:
    ps = ev.phase_stream(state.number)
    if not state.accepted:
        yield 0.5, [_one(ps, ev.PhaseSkipped(number=state.number, reason="nothing was accepted"))]
        return
    head = _sha("h", state.number)
    message = f"Phase {state.number}"
    yield (
        0.5,
        [_one(ps, ev.PhaseCommitting(number=state.number, todo_ids=tuple(state.accepted), message=message))],
    )
    yield (
        2.0,
        [
            _one(ps, ev.PhaseCommitted(number=state.number, commits=(head,), head_sha=head)),
            *(
                _one(
                    ev.todo_stream(t),
                    ev.TodoCompleted(
                        todo_id=t, path=f"todos/{t}-complete.md", commit=head, phase=state.number
                    ),
                )
                for t in state.accepted
            ),
        ],
    )
    yield 0.5, [_one(ps, ev.PhasePushing(number=state.number, attempt=1, sha=head))]
    if state.number % PUSH_FAILS_EVERY == 2:
        yield (
            30.0,
            [
                _one(
                    ps,
                    ev.PhasePushFailed(
                        number=state.number,
                        sha=head,
                        attempts=1,
                        reason="the remote hung up",
                        output="fatal: the remote end hung up",
                    ),
                )
            ],
        )
        yield 60.0, [_one(ps, ev.PhasePushing(number=state.number, attempt=2, sha=head))]
        yield 3.0, [_one(ps, ev.PhasePushed(number=state.number, sha=head, attempts=2))]
    else:
        yield 3.0, [_one(ps, ev.PhasePushed(number=state.number, sha=head, attempts=1))]
    yield 0.1, [_one(ps, ev.PhaseDone(number=state.number))]


@dataclass(frozen=True, slots=True)
class Built:
    """What :func:`build` wrote, and where a writer that goes on with the run starts."""

    todos: int
    events: int
    phases: int
    next_todo: int
    next_phase: int


def build(
    log: EventLog,
    clock: SimClock,
    *,
    todos: int,
    seed: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> Built:
    """Write a run of ``todos`` todos into the empty ``log`` (opened with ``clock``), check it by
    replaying it through the projection and save a snapshot (as the daemon does). ``progress(done,
    todos)`` is called after each phase."""
    rng = random.Random(seed)
    per_phase = SLOTS * BATCHES_PER_PHASE
    log.append_many(
        [
            Append(
                ev.RUN_STREAM,
                [
                    ev.DaemonAttached(pid=40_000, version="bench"),
                    ev.RunStarted(
                        run_id="bench-serve", branch="main", base_sha=_sha("r", 0), schedule="barrier"
                    ),
                ],
            )
        ]
    )
    done = phase = 0
    pending: list[Append] = []
    span = 0.0
    size = 0
    while done < todos:
        phase += 1
        count = min(per_phase, todos - done)
        for advance, appends in phase_stages(phase, done + 1, count, rng):
            clock.advance(advance)
            pending.extend(appends)
            span += advance
            size += len(appends)
            if span >= COALESCE_SECONDS or size >= COALESCE_APPENDS:
                log.append_many(pending)
                pending, span, size = [], 0.0, 0
        done += count
        if progress is not None:
            progress(done, todos)
    log.append_many(pending)
    projection = replay(log, use_snapshot=False)  # raises InvalidTransition on a move the tables lack
    save_snapshot(log, projection)
    return Built(
        todos=todos, events=projection.last_seq, phases=phase, next_todo=done + 1, next_phase=phase + 1
    )
