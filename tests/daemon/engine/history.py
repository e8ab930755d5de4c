"""Histories for the policies' tests: a run built event by event and folded into a Projection."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from daemon.engine import commands as cmd
from daemon.engine.continuous import Facts
from statemachine import events as ev
from statemachine.projection import Projection
from tests.statemachine.builders import stored

BASE = "b" * 40


@dataclass
class History:
    """A run being built event by event; ``projection()`` folds it."""

    events: list[tuple[str, object]] = field(default_factory=list)

    def add(self, stream: str, *evts: object) -> History:
        self.events += [(stream, e) for e in evts]
        return self

    def projection(self) -> Projection:
        proj = Projection()
        for seq, (stream, evt) in enumerate(self.events, start=1):
            proj.apply(stored(seq, stream, evt))
        return proj

    # -- building blocks --

    def todo(self, todo_id: str, *, deps: Sequence[str] = (), files: Sequence[str] = ()) -> History:
        return self.add(
            ev.todo_stream(todo_id),
            ev.TodoQueued(
                todo_id=todo_id,
                path=f"todos/{todo_id}-ready-p2-t.md",
                title=f"todo {todo_id}",
                priority="p2",
                digest=todo_id,
                dependencies=tuple(deps),
                files=tuple(files),
            ),
        )

    def plan(self, phases: dict[int, list[list[str]]]) -> History:
        self.add(ev.RUN_STREAM, ev.RunStarted(run_id="r", branch="main", base_sha=BASE, plan_source="p"))
        for number, batches in phases.items():
            keys = tuple(f"{number}.{i + 1}" for i in range(len(batches)))
            self.add(
                ev.phase_stream(number),
                ev.PhasePlanned(number=number, title=f"P{number}", commit_message="", batches=keys),
            )
            for key, ids in zip(keys, batches, strict=True):
                self.add(ev.batch_stream(key), ev.BatchPlanned(key=key, phase=number, todo_ids=tuple(ids)))
        return self

    def start_phase(self, number: int, base: str = BASE) -> History:
        return self.add(ev.phase_stream(number), ev.PhaseStarted(number=number, base_sha=base))

    def green(self, key: str, phase: int, sha: str = BASE) -> History:
        """Group ``key`` opened and its baseline passed on ``sha``."""
        return self.add(
            ev.batch_stream(key),
            ev.BatchPlanned(key=key, phase=phase, todo_ids=()),
            ev.BatchVerifyRun(
                key=key, run=0, todo_ids=(), passed=True, command=(), duration=0.1, baseline=True, sha=sha
            ),
        )

    def running(
        self, todo_id: str, batch: str, phase: int, base: str = BASE, *, plan: bool = True
    ) -> History:
        """The todo's agent started (planned first unless it already is: ``plan=False``)."""
        if plan:
            self.add(ev.todo_stream(todo_id), ev.TodoPlanned(todo_id=todo_id, batch=batch, phase=phase))
        return self.add(
            ev.todo_stream(todo_id),
            ev.AgentStarted(
                todo_id=todo_id,
                attempt=1,
                batch=batch,
                worktree=f".batchd/workspaces/todo-{todo_id}",
                branch=f"batchd/todo-{todo_id}-a1",
                base_sha=base,
                log_path=f".batchd/logs/todo-{todo_id}-attempt-1.log",
                argv=("agent",),
                token="t" + todo_id,
            ),
        )

    def finished(
        self, todo_id: str, batch: str, phase: int, base: str = BASE, *, plan: bool = True
    ) -> History:
        self.running(todo_id, batch, phase, base, plan=plan)
        return self.add(
            ev.todo_stream(todo_id),
            ev.AgentFinished(
                todo_id=todo_id,
                attempt=1,
                returncode=0,
                duration=1.0,
                commit=todo_id * 40,
                files=(f"f{todo_id}.py",),
            ),
        )

    def accepted(self, key: str, phase: int, ids: Sequence[str], head: str, base: str = BASE) -> History:
        """Group ``key`` verified ``ids`` (already finished) and accepted them all, giving ``head``."""
        self.add(ev.batch_stream(key), ev.BatchPlanned(key=key, phase=phase, todo_ids=()))
        for t in ids:
            self.add(ev.todo_stream(t), ev.TodoVerifying(todo_id=t, batch=key))
        self.add(
            ev.batch_stream(key),
            ev.BatchStarted(key=key, base_sha=base, todo_ids=tuple(ids)),
            ev.BatchVerifying(key=key, base_sha=base, candidates=tuple(ids)),
        )
        for t in ids:
            self.add(ev.todo_stream(t), ev.TodoAccepted(todo_id=t, batch=key, commit=t * 40))
        return self.add(
            ev.batch_stream(key),
            ev.BatchVerified(
                key=key, head_sha=head, accepted=tuple(ids), rejected=(), conflicted=(), failed=(), runs=1
            ),
            ev.BatchDone(key=key),
        )


def facts(slots: int = 5, **kw: object) -> Facts:
    kw.setdefault("branch_head", BASE)
    return Facts(max_parallel=slots, **kw)  # type: ignore[arg-type]


def started(commands: Sequence[cmd.Command]) -> list[str]:
    return [c.todo_id for c in commands if isinstance(c, cmd.StartAgent)]


def seed_like() -> History:
    """Two phases; phase 1 has two batches, the second depending on nothing of the first."""
    h = History()
    for t in ("1", "2", "3", "4", "5", "6"):
        h.todo(t)
    return h.plan({1: [["1", "2"], ["3"]], 2: [["4", "5", "6"]]})
