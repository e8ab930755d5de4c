"""Plans: the seed's markdown form, the TOML form, plan checks and automatic planning."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

import daemon.intake.plan
from daemon.exceptions import PlanError
from daemon.intake.plan import (
    Batch,
    Phase,
    Plan,
    PlanProblem,
    check_plan,
    extend_plan,
    load_plan,
    next_batch,
    plan_batches,
)
from daemon.intake.todofile import Priority, TodoFile, TodoStatus

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "autonomous-batch-runner-prompt.md"


def todo(
    todo_id: str,
    priority: str = "p2",
    deps: Sequence[str] = (),
    files: Sequence[str] = (),
    status: str = "ready",
) -> TodoFile:
    return TodoFile(
        id=todo_id,
        status=TodoStatus(status),
        priority=Priority(priority),
        description="t",
        title="t",
        path=Path(f"{todo_id}-{status}-{priority}-t.md"),
        dependencies=tuple(deps),
        files=tuple(files),
    )


def by_key(*todos: TodoFile) -> dict[str, TodoFile]:
    return {t.key: t for t in todos}


def write_plan(tmp_path: Path, text: str, name: str = "plan.md") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def plan_error(path: Path) -> PlanError:
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.hint
    return info.value


def simple_plan(*batches: Sequence[str]) -> Plan:
    return Plan(
        phases=(Phase(1, "P", None, tuple(Batch(f"1.{i}", tuple(b)) for i, b in enumerate(batches, 1))),),
        source="test",
    )


# --- markdown --------------------------------------------------------------------------------------


def test_seed_imports_as_five_phases_seven_batches() -> None:
    """The seed prompt imports as 5 phases and batches 1.1 1.2 2.1 3.1 3.2 4.1 4.2."""
    plan = load_plan(SEED)
    assert [p.number for p in plan.phases] == [1, 2, 3, 4, 5]
    assert [b.key for _p, b in plan.batches()] == ["1.1", "1.2", "2.1", "3.1", "3.2", "4.1", "4.2"]
    assert plan.source == str(SEED)


def test_seed_has_28_todos_in_order() -> None:
    """The seed plans 28 distinct todos, batch 1.1 being 273, 274, 275, 276, 284."""
    plan = load_plan(SEED)
    ids = [i for _p, b in plan.batches() for i in b.todo_ids]
    assert len(ids) == len(set(ids)) == 28
    assert plan.phases[0].batches[0].todo_ids == ("273", "274", "275", "276", "284")
    assert plan.phases[3].batches[1].todo_ids == ("283", "286")


def test_seed_titles_and_commit_messages() -> None:
    """Titles drop the (Batches ...) note; every phase has its commit message; phase 5 has no batches."""
    plan = load_plan(SEED)
    assert [p.title for p in plan.phases] == [
        "Critical Security",
        "Performance",
        "Acuity Core",
        "Acuity Advanced",
        "Hardening",
    ]
    assert [p.commit_message for p in plan.phases] == [
        "fix(security): complete phase 1 - critical security fixes",
        "perf(scheduling): complete phase 2 - performance optimizations",
        "feat(scheduling): complete phase 3 - acuity core features",
        "feat(scheduling): complete phase 4 - acuity advanced features",
        "chore(scheduling): complete phase 5 - production hardening",
    ]
    assert plan.phases[4].batches == ()


def test_markdown_variations_tolerated(tmp_path: Path) -> None:
    """## headings, "Todo", #ids, leading zeros, `and`, plain Batch lines and no (N parallel) all read."""
    path = write_plan(
        tmp_path,
        """\
        ## Phase 1 - Setup
        - **Batch 1.1**: Todo #001, #002 and 3
        * Batch 1.2: 010 + 11 (2 parallel)
        - **After Phase 1:** Commit and push

        ## Phase 2: Rest (Batch 2.1)
        - __Batch 2.1:__ Todos 4 5
        ```
        - **Batch 2.2:** Todos 99
        ```

        ## Commit messages
        - **Phase 2**: feat: rest
        """,
    )
    plan = load_plan(path)
    assert [(p.number, p.title, p.commit_message) for p in plan.phases] == [
        (1, "Setup", None),
        (2, "Rest", "feat: rest"),
    ]
    assert [b for _p, b in plan.batches()] == [
        Batch("1.1", ("001", "002", "3")),
        Batch("1.2", ("010", "11")),
        Batch("2.1", ("4", "5")),
    ]


def test_markdown_batch_lines_outside_phases_are_prose(tmp_path: Path) -> None:
    """A Batch line in another section is not part of the plan."""
    path = write_plan(tmp_path, "## Notes\n- **Batch 9.9:** Todos 1\n### Phase 1: A\n- **Batch 1.1:** 2\n")
    assert [b.key for _p, b in load_plan(path).batches()] == ["1.1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("### Phase 1: A\n- **Batch 1.1:** Todos\n", "plan.md (line 2): batch 1.1 lists no todo ids"),
        ("### Phase 1: A\n- **Batch 1.1:** Todos 1, two\n", "(line 2): batch 1.1: 'two' is not a todo id"),
        ("### Phase 1: A\n- **Batch 2.1:** Todos 1\n", "(line 2): batch 2.1 is under phase 1 (line 1)"),
        ("### Phase 1: A\n- **Batch one:** Todos 1\n", "batch key 'one' is not <phase>.<n>"),
        (
            "### Phase 1: A\n- **Batch 1.1:** 1\n- **Batch 1.1:** 2\n",
            "(line 3): batch 1.1 appears twice (first on line 2)",
        ),
        ("### Phase 1: A\n- **Batch 1.1:** 1, 2 (3 parallel)\n", "says (3 parallel) but lists 2 todos"),
        ("### Phase 2: A\n### Phase 1: B\n", "(line 2): phase 1 comes after phase 2 (line 1)"),
        ("### Phase 1: A\n## Commit Messages\n- **Phase 3:** `x`\n", "commit message for phase 3, which"),
        (
            "### Phase 1: A\n## Commit Messages\n- **Phase 1:** ``\n",
            "the commit message for phase 1 is empty",
        ),
        ("# Just a document\n", "has no '### Phase N: title' headings"),
    ],
)
def test_markdown_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    """Real errors in a markdown plan are PlanErrors naming the file and line."""
    err = plan_error(write_plan(tmp_path, text))
    assert message in err.message
    assert err.message.startswith(str(tmp_path / "plan.md"))


def test_unknown_suffix_refused(tmp_path: Path) -> None:
    """A plan that is neither .md nor .toml is refused."""
    assert "not '.yaml'" in plan_error(write_plan(tmp_path, "x", name="plan.yaml")).message


def test_missing_plan_refused(tmp_path: Path) -> None:
    """A missing plan file is a PlanError, not OSError."""
    assert "cannot read the plan" in plan_error(tmp_path / "nope.md").message


# --- TOML ------------------------------------------------------------------------------------------


def docstring_toml() -> str:
    doc = daemon.intake.plan.__doc__ or ""
    block = doc.split("or this TOML form::\n", 1)[1].split("\nKeys of a phase", 1)[0]
    return textwrap.dedent(block)


def test_toml_example_in_docstring_loads(tmp_path: Path) -> None:
    """The TOML example in the module docstring (copied to the README) is a valid plan."""
    plan = load_plan(write_plan(tmp_path, docstring_toml(), name="plan.toml"))
    assert [(p.number, p.title) for p in plan.phases] == [
        (1, "Critical Security"),
        (2, "Performance"),
        (3, "Hardening"),
    ]
    assert [b for _p, b in plan.batches()] == [
        Batch("1.1", ("273", "274", "275", "276", "284")),
        Batch("1.2", ("266", "267", "279")),
        Batch("2.1", ("280", "268", "269", "270", "287")),
    ]
    assert plan.phases[0].commit_message == "fix(security): complete phase 1 - critical security fixes"
    assert plan.phases[2].batches == ()


def test_toml_keeps_leading_zeros(tmp_path: Path) -> None:
    """Quoted ids keep their leading zeros; a missing commit_message is None."""
    plan = load_plan(write_plan(tmp_path, '[[phase]]\ntitle = "A"\nbatches = [["001", 2]]\n', "p.toml"))
    assert plan.phases[0] == Phase(1, "A", None, (Batch("1.1", ("001", "2")),))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[phase]]\ntitle = "A"\ncommit_mesage = "x"\n', "(phase 1): unknown keys ['commit_mesage']"),
        ("[[phase]]\nbatches = [[1]]\n", "(phase 1): needs a title"),
        ('[[phase]]\ntitle = "A"\nbatches = [[]]\n', "(batch 1.1): a batch must be a non-empty list"),
        ('[[phase]]\ntitle = "A"\nbatches = [["x1"]]\n', "(batch 1.1): 'x1' is not a todo id"),
        ('[[phase]]\ntitle = "A"\nbatches = [[-1]]\n', "-1 is not a todo id"),
        ('[[phase]]\ntitle = "A"\nbatches = ["1"]\n', "a batch must be a non-empty list"),
        ('[[phase]]\ntitle = "A"\ncommit_message = 3\n', "commit_message must be a non-empty string"),
        ('title = "A"\n', "unknown top-level keys ['title']"),
        ("", "has no [[phase]] tables"),
        ("[[phase]\n", "is not valid TOML"),
    ],
)
def test_toml_errors(tmp_path: Path, text: str, message: str) -> None:
    """Mistakes in a TOML plan are PlanErrors saying where."""
    assert message in plan_error(write_plan(tmp_path, text, name="plan.toml")).message


# --- check_plan ------------------------------------------------------------------------------------


def test_check_plan_clean() -> None:
    """A plan whose dependencies come in earlier batches has no problems."""
    plan = simple_plan(["1", "2"], ["3"])
    assert check_plan(plan, by_key(todo("1"), todo("2"), todo("3", deps=["001"]))) == []


def test_check_plan_unknown_id() -> None:
    """An id without a valid todo file is reported where it is planned."""
    assert check_plan(simple_plan(["1"], ["9"]), by_key(todo("1"))) == [
        PlanProblem("phase 1, batch 1.2", "todo 9 has no valid todo file", "9")
    ]


def test_check_plan_id_in_two_batches() -> None:
    """An id planned twice (001 and 1 are one id) is reported at the second place."""
    problems = check_plan(simple_plan(["001"], ["1"]), by_key(todo("1")))
    assert problems == [PlanProblem("phase 1, batch 1.2", "todo 1 is planned already in batch 1.1", "1")]


def test_check_plan_id_twice_in_one_batch() -> None:
    """An id listed twice in one batch is reported."""
    problems = check_plan(simple_plan(["1", "1"]), by_key(todo("1")))
    assert problems == [PlanProblem("phase 1, batch 1.1", "todo 1 is planned twice in this batch", "1")]


def test_check_plan_dependency_in_same_batch() -> None:
    """A dependency in the same batch cannot be accepted first."""
    problems = check_plan(simple_plan(["1", "2"]), by_key(todo("1"), todo("2", deps=["1"])))
    assert [p.message for p in problems] == ["todo 2 depends on 1, which is planned in the same batch"]


def test_check_plan_dependency_in_later_batch() -> None:
    """A dependency planned after its dependent is reported with the later batch."""
    problems = check_plan(simple_plan(["2"], ["1"]), by_key(todo("1"), todo("2", deps=["1"])))
    assert [p.message for p in problems] == ["todo 2 depends on 1, which is planned in a later batch (1.2)"]


def test_check_plan_dependency_not_planned() -> None:
    """A dependency neither complete nor planned is reported; a complete one is fine."""
    todos = by_key(todo("1"), todo("2", status="complete"), todo("3", deps=["1", "2"]))
    problems = check_plan(simple_plan(["3"]), todos)
    assert [p.message for p in problems] == ["todo 3 depends on 1, which is neither complete nor in the plan"]


def test_check_plan_cycle() -> None:
    """A dependency cycle among planned todos is reported once, naming the cycle."""
    todos = by_key(todo("273", deps=["274"]), todo("274", deps=["273"]))
    problems = check_plan(simple_plan(["273"], ["274"]), todos)
    assert problems == [PlanProblem("phase 1, batch 1.1", "dependency cycle: 273 -> 274 -> 273", "273")]


def test_check_seed_plan_against_missing_todos() -> None:
    """The seed plan against an empty folder reports all 28 ids as unknown."""
    assert len(check_plan(load_plan(SEED), {})) == 28


# --- automatic planning ----------------------------------------------------------------------------


def test_next_batch_priority_then_numeric_id() -> None:
    """p1 before p2 before p3, then lower id as a number (9 before 10)."""
    ready = [todo("10", "p2"), todo("3", "p3"), todo("9", "p2"), todo("12", "p1")]
    assert next_batch(ready, done=set(), max_parallel=5) == ("12", "9", "10", "3")


def test_next_batch_respects_max_parallel() -> None:
    """At most max_parallel todos, the most urgent first."""
    ready = [todo(str(i)) for i in range(1, 8)]
    assert next_batch(ready, done=set(), max_parallel=3) == ("1", "2", "3")


def test_next_batch_waits_for_dependencies() -> None:
    """A todo is eligible only when all its dependencies are done (compared as numbers)."""
    ready = [todo("2", deps=["1"]), todo("3", deps=["001", "4"]), todo("5")]
    assert next_batch(ready, done={"1"}, max_parallel=5) == ("2", "5")
    assert next_batch(ready, done={"1", "4"}, max_parallel=5) == ("2", "3", "5")


def test_next_batch_skips_done_todos() -> None:
    """A candidate already accepted is not planned again."""
    assert next_batch([todo("1"), todo("2")], done={"001"}, max_parallel=5) == ("2",)


def test_next_batch_file_overlap_waits() -> None:
    """Two todos touching one file (or a folder and a file in it) never share a batch."""
    ready = [
        todo("1", files=["src/a.py"]),
        todo("2", files=["./src/a.py"]),
        todo("3", files=["src/b.py"]),
        todo("4", files=["src/"]),
        todo("5", files=["src/bb.py"]),
    ]
    assert next_batch(ready, done=set(), max_parallel=5) == ("1", "3", "5")


def test_next_batch_busy_files() -> None:
    """Files of todos still running keep overlapping todos out."""
    ready = [todo("1", files=["a.py"]), todo("2", files=["b.py"])]
    assert next_batch(ready, done=set(), max_parallel=5, busy_files=["a.py"]) == ("2",)


def test_next_batch_rejects_zero_parallel() -> None:
    """max_parallel below 1 is a programming error."""
    with pytest.raises(ValueError, match="at least 1"):
        next_batch([todo("1")], done=set(), max_parallel=0)


def test_plan_batches_successive() -> None:
    """Batches follow dependencies and file overlaps; unreachable todos are left out."""
    ready = [
        todo("1", "p2", files=["x"]),
        todo("2", "p1", files=["x"]),
        todo("3", "p3", deps=["1"]),
        todo("4", deps=["99"]),
    ]
    assert plan_batches(ready, done=set(), max_parallel=5) == [("2",), ("1",), ("3",)]


def test_extend_without_plan_one_phase_per_batch() -> None:
    """Without a plan, each automatic batch is its own phase with a chore(batchd) message."""
    plan = extend_plan(None, [todo("101"), todo("102"), todo("103", deps=["101"])], max_parallel=5)
    assert plan.source == "auto"
    assert [(p.number, p.commit_message) for p in plan.phases] == [
        (1, "chore(batchd): resolve todos #101, #102"),
        (2, "chore(batchd): resolve todos #103"),
    ]
    assert [b for _p, b in plan.batches()] == [Batch("1.1", ("101", "102")), Batch("2.1", ("103",))]


def test_extend_seed_plan_before_final_phase() -> None:
    """Unplanned ready todos go after phase 4 and before the batch-less Hardening phase, renumbered 6."""
    seed = load_plan(SEED)
    ready = [todo("273"), todo("900", deps=["286"]), todo("901", "p1")]
    plan = extend_plan(seed, ready, max_parallel=5)
    assert [(p.number, p.title) for p in plan.phases][3:] == [
        (4, "Acuity Advanced"),
        (5, "Auto-planned todos"),
        (6, "Hardening"),
    ]
    assert plan.phases[4].batches == (Batch("5.1", ("901", "900")),)
    assert plan.phases[5].commit_message == "chore(scheduling): complete phase 5 - production hardening"


def test_extend_with_nothing_new_returns_plan() -> None:
    """When every ready todo is planned, the plan comes back unchanged."""
    seed = load_plan(SEED)
    assert extend_plan(seed, [todo("273")], max_parallel=5) is seed
