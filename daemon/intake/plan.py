"""Plans: phases of batches of todo ids, loaded from markdown or TOML, checked, and auto-extended.

A plan is pure data. ``load_plan`` reads the seed's markdown form (see :mod:`daemon.intake.plan_markdown`)
or this TOML form::

    # plans/batchd-plan.toml: phases run in order; the batches of a phase run one after another,
    # the todos of a batch in parallel. Phase numbers (1, 2, ...) and batch keys (1.1, 1.2, ...)
    # follow the order in the file.
    [[phase]]
    title = "Critical Security"
    commit_message = "fix(security): complete phase 1 - critical security fixes"
    batches = [
        ["273", "274", "275", "276", "284"],   # batch 1.1
        ["266", "267", "279"],                 # batch 1.2
    ]

    [[phase]]
    title = "Performance"
    commit_message = "perf(scheduling): complete phase 2 - performance optimizations"
    batches = [[280, 268, 269, 270, 287]]      # bare numbers work; quote ids with leading zeros

    [[phase]]
    title = "Hardening"                        # no batches: a final commit point
    commit_message = "chore(scheduling): complete phase 5 - production hardening"

Keys of a phase: ``title`` (required), ``commit_message`` (optional; batchd writes one when it is
missing), ``batches`` (optional list of lists of ids). Any other key is an error, so a typo such as
``commit_mesage`` is caught instead of silently ignored.

``check_plan`` compares a plan with the todo files; ``next_batch``/``plan_batches`` plan ready todos
automatically (priority first, then lower id; dependencies respected; no two todos that expect to
touch the same file in one batch); ``extend_plan`` adds phases for ready todos a plan does not name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from daemon.exceptions import PlanError
from daemon.intake.depgraph import find_cycles, format_cycle
from daemon.intake.plan_markdown import parse_markdown_plan
from daemon.intake.todofile import TodoFile, TodoStatus, id_key

__all__ = [
    "Batch",
    "Phase",
    "Plan",
    "PlanProblem",
    "auto_commit_message",
    "auto_phases",
    "check_plan",
    "extend_plan",
    "load_plan",
    "next_batch",
    "parse_toml_plan",
    "plan_batches",
]

AUTO_SOURCE = "auto"
AUTO_PHASE_TITLE = "Auto-planned todos"


@dataclass(frozen=True, slots=True)
class Batch:
    key: str  # "1.1"
    todo_ids: tuple[str, ...]  # as written in the plan


@dataclass(frozen=True, slots=True)
class Phase:
    number: int
    title: str
    commit_message: str | None
    batches: tuple[Batch, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    phases: tuple[Phase, ...]
    source: str  # the plan file, or "auto"

    def batches(self) -> Iterator[tuple[Phase, Batch]]:
        """Every batch in run order, with its phase."""
        for phase in self.phases:
            for batch in phase.batches:
                yield phase, batch

    def planned(self) -> dict[str, str]:
        """Id key -> the key of the first batch that names it."""
        out: dict[str, str] = {}
        for _phase, batch in self.batches():
            for todo_id in batch.todo_ids:
                out.setdefault(id_key(todo_id), batch.key)
        return out


@dataclass(frozen=True, slots=True)
class PlanProblem:
    where: str  # "phase 1, batch 1.1"
    message: str
    todo_id: str | None = None


# --- loading ---------------------------------------------------------------------------------------


def load_plan(path: Path) -> Plan:
    """Read a plan file: ``.md`` (the seed's form) or ``.toml``; PlanError names the file and line."""
    source = str(path)
    if path.suffix not in (".md", ".toml"):
        raise PlanError(
            f"plan files end in .md or .toml, not {path.suffix or '(no suffix)'!r}",
            path=source,
            hint="rename the plan, or convert it to the TOML form (see the README)",
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PlanError("is not UTF-8 text", path=source, hint="re-save the plan as UTF-8") from None
    except OSError as e:
        raise PlanError(
            f"cannot read the plan: {e.strerror}", path=source, hint="check the path in batchd.toml"
        ) from e
    if path.suffix == ".toml":
        return parse_toml_plan(text, source)
    raw = parse_markdown_plan(text.removeprefix("\ufeff"), source)
    if not raw:
        raise PlanError(
            "has no '### Phase N: title' headings",
            path=source,
            hint="write phases as `### Phase 1: Title` with `- **Batch 1.1:** Todos 273, 274` lines",
        )
    phases = tuple(
        Phase(
            number=p.number,
            title=p.title,
            commit_message=p.commit_message,
            batches=tuple(Batch(key, ids) for key, ids, _line in p.batches),
        )
        for p in raw
    )
    return Plan(phases=phases, source=source)


_PHASE_KEYS = frozenset({"title", "commit_message", "batches"})


def _toml_id(value: Any, where: str, source: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.strip().lstrip("#").isdigit() and value.strip().lstrip("#").isascii():
        return value.strip().lstrip("#")
    raise PlanError(f"{value!r} is not a todo id", path=source, where=where, hint='write ids as "273" or 273')


def parse_toml_plan(text: str, source: str) -> Plan:
    """The TOML form of a plan (see the module docstring)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"is not valid TOML: {e}", path=source, hint="fix the TOML syntax") from None
    extra = set(doc) - {"phase"}
    if extra:
        raise PlanError(
            f"unknown top-level keys {sorted(extra)}",
            path=source,
            hint="a plan has only [[phase]] tables",
        )
    tables = doc.get("phase")
    if not isinstance(tables, list) or not tables:
        raise PlanError("has no [[phase]] tables", path=source, hint="add [[phase]] tables (see the README)")
    phases: list[Phase] = []
    for number, table in enumerate(tables, start=1):
        where = f"phase {number}"
        unknown = set(table) - _PHASE_KEYS
        if unknown:
            raise PlanError(
                f"unknown keys {sorted(unknown)}",
                path=source,
                where=where,
                hint=f"a [[phase]] has only {', '.join(sorted(_PHASE_KEYS))}",
            )
        title = table.get("title")
        if not isinstance(title, str) or not title.strip():
            raise PlanError(
                "needs a title", path=source, where=where, hint='add title = "What this phase does"'
            )
        message = table.get("commit_message")
        if message is not None and (not isinstance(message, str) or not message.strip()):
            raise PlanError(
                "commit_message must be a non-empty string",
                path=source,
                where=where,
                hint='write commit_message = "fix(scope): complete phase 1 - summary"',
            )
        raw_batches = table.get("batches", [])
        if not isinstance(raw_batches, list):
            raise PlanError(
                "batches must be a list of lists of ids",
                path=source,
                where=where,
                hint='write batches = [["273", "274"], ["266"]]',
            )
        batches: list[Batch] = []
        for index, raw in enumerate(raw_batches, start=1):
            key = f"{number}.{index}"
            if not isinstance(raw, list) or not raw:
                raise PlanError(
                    "a batch must be a non-empty list of ids",
                    path=source,
                    where=f"batch {key}",
                    hint='write batches = [["273", "274"], ["266"]]',
                )
            batches.append(Batch(key, tuple(_toml_id(v, f"batch {key}", source) for v in raw)))
        phases.append(Phase(number, title.strip(), message.strip() if message else None, tuple(batches)))
    return Plan(phases=tuple(phases), source=source)


# --- checking --------------------------------------------------------------------------------------


def check_plan(plan: Plan, todos: Mapping[str, TodoFile]) -> list[PlanProblem]:
    """What is wrong with ``plan`` given the valid todos (by id key); empty when it can run."""
    problems: list[PlanProblem] = []
    position: dict[str, tuple[int, str]] = {}  # id key -> (batch index, batch key)
    where_of: dict[str, str] = {}
    for index, (phase, batch) in enumerate(plan.batches()):
        where = f"phase {phase.number}, batch {batch.key}"
        for todo_id in batch.todo_ids:
            key = id_key(todo_id)
            if key in position:
                first = position[key][1]
                again = "twice in this batch" if first == batch.key else f"already in batch {first}"
                problems.append(PlanProblem(where, f"todo {todo_id} is planned {again}", todo_id))
                continue
            position[key] = (index, batch.key)
            where_of[key] = where
            if key not in todos:
                problems.append(PlanProblem(where, f"todo {todo_id} has no valid todo file", todo_id))

    graph = {key: todo.dependency_keys for key, todo in todos.items()}
    cycles = find_cycles(graph)
    reported: set[frozenset[str]] = set()
    for key, cycle in cycles.items():
        members = frozenset(cycle)
        if key in position and members not in reported:
            reported.add(members)
            shown = format_cycle(cycle, start=key, label=lambda k: todos[k].id)
            problems.append(PlanProblem(where_of[key], f"dependency cycle: {shown}", todos[key].id))

    for key, (index, _batch_key) in position.items():
        todo = todos.get(key)
        if todo is None:
            continue
        for dep_id, dep in zip(todo.dependencies, todo.dependency_keys, strict=True):
            if key in cycles and dep in cycles:
                continue  # already reported as a cycle
            dep_todo = todos.get(dep)
            if dep in position:
                dep_index, dep_batch = position[dep]
                if dep_index >= index:
                    when = "the same batch" if dep_index == index else f"a later batch ({dep_batch})"
                    problems.append(
                        PlanProblem(
                            where_of[key],
                            f"todo {todo.id} depends on {dep_id}, which is planned in {when}",
                            todo.id,
                        )
                    )
            elif dep_todo is None or dep_todo.status is not TodoStatus.COMPLETE:
                problems.append(
                    PlanProblem(
                        where_of[key],
                        f"todo {todo.id} depends on {dep_id}, which is neither complete nor in the plan",
                        todo.id,
                    )
                )
    return problems


# --- automatic planning ----------------------------------------------------------------------------


def norm_path(path: str) -> str:
    return PurePosixPath(path.strip().removeprefix("./")).as_posix().rstrip("/")


def files_overlap(paths: Iterable[str], taken: Collection[str]) -> bool:
    """True when a path is one of ``taken`` or a folder of one, or the other way round."""
    for path in paths:
        for other in taken:
            if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
                return True
    return False


def next_batch(
    candidates: Sequence[TodoFile],
    *,
    done: Collection[str],
    max_parallel: int,
    busy_files: Collection[str] = (),
) -> tuple[str, ...]:
    """The ids of the next batch: p1 before p2 before p3, lower id first, at most ``max_parallel``.

    A candidate is eligible when every dependency is in ``done`` (accepted or complete). Two todos
    whose ``files`` overlap never share a batch (the later one waits), nor does one whose files
    overlap ``busy_files`` (files of todos still running). Candidates in ``done`` are skipped.
    """
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be at least 1, not {max_parallel}")
    done_keys = {id_key(d) for d in done}
    taken = {norm_path(f) for f in busy_files}
    chosen: list[str] = []
    for todo in sorted(candidates, key=lambda t: (t.priority.value, t.number)):
        if todo.key in done_keys or not all(d in done_keys for d in todo.dependency_keys):
            continue
        files = [norm_path(f) for f in todo.files]
        if files_overlap(files, taken):
            continue
        chosen.append(todo.id)
        taken.update(files)
        if len(chosen) == max_parallel:
            break
    return tuple(chosen)


def plan_batches(
    candidates: Sequence[TodoFile], *, done: Collection[str], max_parallel: int
) -> list[tuple[str, ...]]:
    """Successive batches, assuming each batch's todos are accepted before the next starts.

    Candidates whose dependencies are neither done nor among the candidates are left out.
    """
    remaining = list(candidates)
    done_keys = {id_key(d) for d in done}
    batches: list[tuple[str, ...]] = []
    while True:
        batch = next_batch(remaining, done=done_keys, max_parallel=max_parallel)
        if not batch:
            return batches
        batches.append(batch)
        picked = {id_key(i) for i in batch}
        done_keys |= picked
        remaining = [t for t in remaining if t.key not in picked]


def auto_commit_message(todo_ids: Sequence[str]) -> str:
    return "chore(batchd): resolve todos " + ", ".join(f"#{i}" for i in todo_ids)


def extend_plan(
    plan: Plan | None,
    ready_unplanned: Sequence[TodoFile],
    *,
    done: Collection[str] = (),
    max_parallel: int,
) -> Plan:
    """``plan`` with the ready todos it does not name planned into phases of their own.

    Each automatic batch is its own phase, committed as ``chore(batchd): resolve todos #101, #102``.
    They go after the plan's last phase that has batches and before the batch-less phases that
    follow it (those are renumbered); the plan's todos count as done before them. Without a plan the
    automatic phases are the whole plan.
    """
    base = plan if plan is not None else Plan(phases=(), source=AUTO_SOURCE)
    planned = base.planned()
    candidates = [t for t in ready_unplanned if t.key not in planned]
    batches = plan_batches(candidates, done={*done, *planned}, max_parallel=max_parallel)
    if not batches:
        return base
    cut = max((i + 1 for i, p in enumerate(base.phases) if p.batches), default=0)
    head, tail = base.phases[:cut], base.phases[cut:]
    auto = auto_phases(batches, after=head[-1].number if head else 0)
    number = auto[-1].number
    moved = [replace(p, number=number + i) for i, p in enumerate(tail, start=1)]
    return Plan(phases=(*head, *auto, *moved), source=base.source)


def auto_phases(batches: Sequence[Sequence[str]], *, after: int) -> list[Phase]:
    """The phases of automatically planned batches, numbered after phase ``after``: one phase (one
    commit) per batch, with or without a plan. `batchd plan show` and the daemon both plan this way
    (the daemon records the first phase now and plans the rest again once it is done)."""
    return [
        Phase(number, AUTO_PHASE_TITLE, auto_commit_message(ids), (Batch(f"{number}.1", tuple(ids)),))
        for number, ids in enumerate(batches, start=after + 1)
    ]
