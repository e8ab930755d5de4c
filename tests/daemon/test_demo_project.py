"""The demo's sample project: its files, its plan, and its scenario played with the real scripted agent.

The scenario tests walk the plan the way batchd does (each todo in its own worktree from the batch's
base, commits combined by cherry-pick in ascending id, the rejected ones dropped, failed ones re-run
on the new head until ``max_attempts``), with real git, the real ``daemon.demo.agent`` and the
sample project's own unittest suite, so a todo that stops doing what the scenario says fails here
before it fails the end-to-end run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from daemon.config import load_config
from daemon.demo.project import DemoProject, build_demo, render_config, render_plan, verify_command
from daemon.demo.scenario import (
    ALL_TODO_IDS,
    EXPECTED_ATTEMPTS,
    EXPECTED_BLOCKED,
    EXPECTED_COMPLETE,
    EXPECTED_CONFLICTED_ONCE,
    EXPECTED_REJECTED_ONCE,
    EXPECTED_TIMED_OUT_ONCE,
    PHASE_MESSAGES,
    PHASES,
    describe,
)
from daemon.exceptions import UsageError
from daemon.intake.plan import check_plan, load_plan
from daemon.intake.todofile import id_key, parse_todo

MAX_ATTEMPTS = 2
HANG_TIMEOUT = 1.5  # seconds an agent may run in these tests before it counts as hung
TODO_NAME = re.compile(r"^(\d+)-ready-(p[123])-[a-z0-9-]+\.md$")
REQUIRED_KEYS = {"status", "priority", "issue_id", "tags", "dependencies", "files"}
SECTIONS = ("## Problem Statement", "## Proposed Solutions", "## Acceptance Criteria", "## Work Log")


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "BATCHD_DEMO_SPEED": "0", **extra}


def _git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}: {done.stderr}")
    return done


def _run_tests(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        verify_command(), cwd=cwd, capture_output=True, text=True, env=_env(), timeout=60, check=False
    )


def _front_matter(path: Path) -> dict[str, object]:
    text = path.read_text(encoding="utf-8")
    _, block, _ = text.split("---\n", 2)
    data = yaml.safe_load(block)
    assert isinstance(data, dict)
    return data


def _dependencies(path: Path) -> list[str]:
    deps = _front_matter(path)["dependencies"]
    assert isinstance(deps, list) and all(isinstance(d, str) for d in deps), path.name
    return deps


def _todo_files(project: DemoProject) -> dict[str, Path]:
    return {p.name.split("-", 1)[0]: p for p in sorted(project.todos_dir.glob("*.md"))}


def _batch_of() -> dict[str, int]:
    order = [batch for phase in PHASES for batch in phase.batches]
    return {todo: n for n, batch in enumerate(order) for todo in batch.todos}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoProject:
    return build_demo(tmp_path_factory.mktemp("demo") / "demo", speed=0)


# --- building the project ---------------------------------------------------------------


def test_main_is_committed_and_pushed_to_the_bare_remote(demo: DemoProject) -> None:
    """The checkout is clean on main and the bare remote's main is the same commit."""
    local = _git(demo.root, "rev-parse", "HEAD").stdout.strip()
    remote = _git(demo.remote, "rev-parse", "refs/heads/main").stdout.strip()
    assert (local, _git(demo.root, "branch", "--show-current").stdout.strip()) == (remote, "main")
    assert _git(demo.root, "status", "--porcelain").stdout == ""


def test_origin_points_at_the_bare_remote(demo: DemoProject) -> None:
    """`origin` is the bare repository build_demo created inside the demo folder."""
    url = _git(demo.root, "remote", "get-url", "origin").stdout.strip()
    assert Path(url) == demo.remote
    assert _git(demo.remote, "rev-parse", "--is-bare-repository").stdout.strip() == "true"


def test_batchd_files_do_not_show_as_changes(demo: DemoProject) -> None:
    """`.batchd/` is excluded through .git/info/exclude, so the daemon's files never dirty the tree."""
    assert "/.batchd/" in (demo.root / ".git" / "info" / "exclude").read_text().splitlines()
    (demo.root / ".batchd").mkdir(exist_ok=True)
    (demo.root / ".batchd" / "events.db").write_bytes(b"")
    assert _git(demo.root, "status", "--porcelain").stdout == ""


def test_the_sample_projects_tests_pass_on_main(demo: DemoProject) -> None:
    """The verify command of the demo (unittest, no pytest) passes on the initial commit."""
    done = _run_tests(demo.root)
    assert done.returncode == 0, done.stderr
    assert re.search(r"Ran 1\d tests", done.stderr)


def test_the_config_loads_with_the_demo_values(demo: DemoProject) -> None:
    """batchd.toml passes batchd's own config checks and names the scripted agent with this Python."""
    config = load_config(demo.root)
    assert (config.batchd.plan, config.batchd.max_parallel, config.batchd.max_attempts) == (
        "plans/PLAN.md",
        5,
        MAX_ATTEMPTS,
    )
    assert config.agent.command == (sys.executable, "-m", "daemon.demo.agent", "{todo_path}")
    assert config.verify.commands == (tuple(verify_command()),)
    assert (config.verify.strategy, config.verify.retries, config.verify.repair) == ("bisect", 0, True)


def test_the_config_carries_speed_and_agent_timeout() -> None:
    """The speed goes to the agent's environment, the timeout to [agent] timeout."""
    data = tomllib.loads(render_config(speed=0.25, agent_timeout=2, python="/opt/py 3/bin/py\\thon"))
    assert data["agent"]["env"] == {"BATCHD_DEMO_SPEED": "0.25"}
    assert data["agent"]["timeout"] == 2.0
    assert data["agent"]["command"][0] == "/opt/py 3/bin/py\\thon"


def test_a_non_empty_folder_is_refused(tmp_path: Path) -> None:
    """build_demo never writes into a folder that already holds files."""
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        build_demo(tmp_path)


# --- the todo files and the plan ----------------------------------------------------------


def test_there_is_one_todo_file_per_planned_id(demo: DemoProject) -> None:
    """28 files named {id}-ready-{priority}-{slug}.md, one for each id of the plan."""
    names = [p.name for p in demo.todos_dir.iterdir()]
    assert all(TODO_NAME.match(name) for name in names), names
    assert set(_todo_files(demo)) == ALL_TODO_IDS
    assert len(names) == 28


def test_front_matter_has_the_compound_engineering_keys(demo: DemoProject) -> None:
    """Each front matter has status, priority, issue_id (quoted), tags, dependencies and files."""
    for todo, path in _todo_files(demo).items():
        data = _front_matter(path)
        name = TODO_NAME.match(path.name)
        assert name is not None and set(data) >= REQUIRED_KEYS, path.name
        assert (data["status"], data["issue_id"], data["priority"]) == ("ready", todo, name.group(2))
        assert data["files"] and isinstance(data["files"], list)


def test_batchd_parses_every_todo_file(demo: DemoProject) -> None:
    """The daemon's own todo parser accepts every file and agrees with its name."""
    for todo, path in _todo_files(demo).items():
        parsed = parse_todo(path)
        assert (parsed.id, parsed.disagreements) == (todo, ()), path.name


def test_every_todo_has_the_sections_and_one_agent_block(demo: DemoProject) -> None:
    """Problem Statement, Proposed Solutions (Option A recommended), Acceptance Criteria, Work Log."""
    for path in _todo_files(demo).values():
        text = path.read_text(encoding="utf-8")
        assert all(section in text for section in SECTIONS), path.name
        assert "### Option A:" in text and "(recommended)" in text
        assert text.count("```batchd-agent\n") == 1


def test_priorities_follow_the_phases(demo: DemoProject) -> None:
    """Phase 1 todos are p1, phase 2 todos p2, the later ones p2 or p3."""
    files = _todo_files(demo)
    for phase in PHASES:
        allowed = {1: {"p1"}, 2: {"p2"}}.get(phase.number, {"p2", "p3"})
        for batch in phase.batches:
            for todo in batch.todos:
                assert _front_matter(files[todo])["priority"] in allowed, todo


def test_dependencies_are_planned_in_earlier_batches(demo: DemoProject) -> None:
    """Every dependency is a todo of an earlier batch, and some cross phases."""
    batch_of = _batch_of()
    edges = [(todo, dep) for todo, path in _todo_files(demo).items() for dep in _dependencies(path)]
    assert all(batch_of[dep] < batch_of[todo] for todo, dep in edges), edges
    assert ("272", "235") in edges and ("268", "273") in edges


def test_the_plan_has_the_seeds_batches_and_messages(demo: DemoProject) -> None:
    """PLAN.md in the seed's form: 7 batch lines with 28 ids, phase 5 without batches, 5 messages."""
    text = demo.plan_path.read_text(encoding="utf-8")
    assert text == render_plan()
    batches = re.findall(r"^- \*\*Batch (\d\.\d):\*\* Todos ([\d, ]+) \((\d) parallel\)$", text, re.M)
    expected = [(b.id, ", ".join(b.todos), str(len(b.todos))) for p in PHASES for b in p.batches]
    assert batches == expected
    assert len({t for _, ids, _ in batches for t in ids.split(", ")}) == 28
    assert "### Phase 1: Critical Security (Batches 1.1 + 1.2)" in text
    assert "### Phase 5: Hardening\n- Final integration testing\n" in text
    messages = re.findall(r"^- \*\*Phase (\d):\*\* `(.+)`$", text, re.M)
    assert {int(n): m for n, m in messages} == PHASE_MESSAGES


def test_batchd_loads_the_plan_and_finds_no_problem(demo: DemoProject) -> None:
    """The daemon's plan importer reads PLAN.md as the scenario's phases, and `plan check` is clean."""
    plan = load_plan(demo.plan_path)
    assert [(p.number, p.commit_message) for p in plan.phases] == list(PHASE_MESSAGES.items())
    assert [(b.key, b.todo_ids) for _, b in plan.batches()] == [
        (b.id, b.todos) for p in PHASES for b in p.batches
    ]
    todos = {id_key(todo): parse_todo(path) for todo, path in _todo_files(demo).items()}
    assert check_plan(plan, todos) == []


def test_the_seed_plan_matches_the_seed_file() -> None:
    """The plan's ids and messages are the seed prompt's, in the seed's order."""
    seed = Path(__file__).resolve().parents[1] / "fixtures" / "seed" / "autonomous-batch-runner-prompt.md"
    if not seed.is_file():
        pytest.skip("the seed prompt is not on this machine")
    text = seed.read_text(encoding="utf-8")
    for phase in PHASES:
        assert f"`{phase.message}`" in text
        for batch in phase.batches:
            assert f"- **Batch {batch.id}:** Todos {', '.join(batch.todos)} (" in text


def test_describe_names_every_path_of_the_scenario() -> None:
    """The CLI's paragraph mentions each todo that takes a special path."""
    text = describe()
    assert all(todo in text for todo in ("267", "269", "277", "278", "282", "283"))


# --- the scenario, played with the real scripted agent ------------------------------------


@dataclass
class Attempt:
    todo: str
    number: int
    base: str
    agent_rc: int | None  # None: still running at HANG_TIMEOUT, killed
    agent_output: str
    changed: tuple[str, ...] = ()
    commit: str | None = None
    tests_rc: int | None = None  # the change alone on its base
    tests_output: str = ""
    outcome: str = ""  # accepted | rejected | conflicted | failed | timed_out


@dataclass
class Walk:
    repo: Path
    base: str  # main as build_demo left it
    attempts: dict[tuple[str, int], Attempt] = field(default_factory=dict)
    accepted: list[Attempt] = field(default_factory=list)  # in the order they reached the head
    head: str = ""
    red_rounds: list[str] = field(default_factory=list)  # rounds whose combination needed culprits

    def outcomes(self, todo: str) -> list[str]:
        return [a.outcome for (t, _), a in sorted(self.attempts.items()) if t == todo]


def _run_agent(worktree: Path, todo_path: Path, attempt: int) -> tuple[int | None, str]:
    argv = [sys.executable, "-m", "daemon.demo.agent", str(todo_path)]
    with subprocess.Popen(
        argv,
        cwd=worktree,
        env=_env(BATCHD_ATTEMPT=str(attempt)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            out, _ = proc.communicate(timeout=HANG_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out
    return proc.returncode, out


def _play(tree: Path, todo: str, number: int, base: str) -> Attempt:
    todo_path = next((tree / "todos").glob(f"{todo}-*.md"))
    rc, output = _run_agent(tree, todo_path, number)
    attempt = Attempt(todo=todo, number=number, base=base, agent_rc=rc, agent_output=output)
    if rc != 0:
        attempt.outcome = "timed_out" if rc is None else "failed"
        return attempt
    _git(tree, "add", "-A")
    attempt.changed = tuple(_git(tree, "diff", "--cached", "--name-only").stdout.split())
    _git(tree, "commit", "-q", "-m", f"todo {todo} attempt {number}")
    attempt.commit = _git(tree, "rev-parse", "HEAD").stdout.strip()
    done = _run_tests(tree)
    attempt.tests_rc, attempt.tests_output = done.returncode, done.stdout + done.stderr
    return attempt


def _combine(tree: Path, base: str, candidates: list[Attempt]) -> list[Attempt]:
    """Cherry-pick in ascending id onto base; the ones that conflict are marked and left out."""
    _git(tree, "checkout", "-q", "--detach", base)
    picked = []
    for attempt in sorted(candidates, key=lambda a: int(a.todo)):
        assert attempt.commit is not None
        if _git(tree, "cherry-pick", attempt.commit, check=False).returncode != 0:
            _git(tree, "cherry-pick", "--abort")
            attempt.outcome = "conflicted"
        else:
            picked.append(attempt)
    return picked


def _walk_plan(demo: DemoProject, work: Path) -> Walk:
    repo = demo.root
    walk = Walk(repo=repo, base=_git(repo, "rev-parse", "HEAD").stdout.strip())
    walk.head = walk.base
    verify = work / "verify"
    _git(repo, "worktree", "add", "-q", "--detach", str(verify), walk.head)
    for phase in PHASES:
        for batch in phase.batches:
            queue = [(todo, 1) for todo in batch.todos]
            label = batch.id
            while queue:
                base = walk.head
                trees = [work / f"todo-{todo}-a{number}" for todo, number in queue]
                for tree in trees:  # one at a time: concurrent `worktree add`s race on git's admin files
                    _git(repo, "worktree", "add", "-q", "--detach", str(tree), base)
                with ThreadPoolExecutor(max_workers=5) as pool:
                    jobs = [
                        pool.submit(_play, tree, *job, base) for tree, job in zip(trees, queue, strict=True)
                    ]
                    done = [job.result() for job in jobs]
                walk.attempts.update({(a.todo, a.number): a for a in done})
                picked = _combine(verify, base, [a for a in done if a.commit])
                if _run_tests(verify).returncode != 0:
                    # The failure output is the daemon's business; here a culprit is a change
                    # whose tests fail on its own base.
                    walk.red_rounds.append(label)
                    for attempt in picked:
                        if attempt.tests_rc != 0:
                            attempt.outcome = "rejected"
                    picked = _combine(verify, base, [a for a in picked if not a.outcome])
                    assert _run_tests(verify).returncode == 0, f"batch {batch.id} stays red"
                for attempt in picked:
                    attempt.outcome = "accepted"
                walk.accepted += picked
                walk.head = _git(verify, "rev-parse", "HEAD").stdout.strip()
                queue = [
                    (a.todo, a.number + 1)
                    for a in done
                    if a.outcome != "accepted" and a.number < MAX_ATTEMPTS
                ]
                label = f"{batch.id}r{queue[0][1] - 1}" if queue else label
    return walk


@pytest.fixture(scope="module")
def walk(tmp_path_factory: pytest.TempPathFactory) -> Walk:
    demo = build_demo(tmp_path_factory.mktemp("walk") / "demo", speed=0)
    return _walk_plan(demo, tmp_path_factory.mktemp("worktrees"))


def test_first_attempts_of_plain_todos_pass_alone_on_their_base(walk: Walk) -> None:
    """Each todo meant to succeed at once exits 0, changes files, and the tests pass with it."""
    plain = [t for t in ALL_TODO_IDS if EXPECTED_ATTEMPTS[t] == 1]
    for todo in plain:
        attempt = walk.attempts[todo, 1]
        assert (attempt.agent_rc, attempt.tests_rc) == (0, 0), (
            todo,
            attempt.agent_output,
            attempt.tests_output,
        )
        assert attempt.changed and attempt.outcome == "accepted"


def test_each_successful_todo_adds_a_test_file(walk: Walk) -> None:
    """Every accepted change brings a new test module, so the suite grows."""
    for attempt in walk.accepted:
        assert any(p.startswith("tests/test_") for p in attempt.changed), attempt.todo


def test_269_first_attempt_breaks_a_test_and_the_output_names_its_file(walk: Walk) -> None:
    """269's first change fails an existing test with a traceback through scheduling/bookings.py."""
    attempt = walk.attempts["269", 1]
    assert attempt.tests_rc != 0 and attempt.outcome == "rejected"
    assert "scheduling/bookings.py" in attempt.changed
    assert "scheduling/bookings.py" in attempt.tests_output
    assert "test_cancelled_booking_is_not_listed" in attempt.tests_output


def test_269_second_attempt_is_the_repair(walk: Walk) -> None:
    """On its second attempt 269 applies on the new head and the tests pass."""
    attempt = walk.attempts["269", 2]
    assert (attempt.agent_rc, attempt.tests_rc, attempt.outcome) == (0, 0, "accepted")


def test_282_breaks_the_tests_on_every_attempt(walk: Walk) -> None:
    """282 is rejected on both attempts and never reaches the head."""
    for number in (1, 2):
        attempt = walk.attempts["282", number]
        assert attempt.agent_rc == 0 and attempt.tests_rc != 0, number
    assert walk.outcomes("282") == ["rejected", "rejected"]


def test_277_and_278_first_attempts_conflict(walk: Walk) -> None:
    """Both change scheduling/availability.py's same lines; 277 (lower id) wins, 278 conflicts."""
    first, second = walk.attempts["277", 1], walk.attempts["278", 1]
    assert (first.tests_rc, second.tests_rc) == (0, 0)
    assert (first.outcome, second.outcome) == ("accepted", "conflicted")
    assert "scheduling/availability.py" in set(first.changed) & set(second.changed)


def test_278_second_attempt_applies_on_top_of_277(walk: Walk) -> None:
    """278's second attempt starts from a head holding 277's change and passes the tests."""
    attempt = walk.attempts["278", 2]
    assert attempt.base != walk.attempts["278", 1].base
    assert (attempt.agent_rc, attempt.tests_rc, attempt.outcome) == (0, 0, "accepted")


def test_283_hangs_on_its_first_attempt_only(walk: Walk) -> None:
    """283's first agent is still running at the timeout and is killed; the second succeeds."""
    assert walk.attempts["283", 1].agent_rc is None
    assert walk.outcomes("283") == ["timed_out", "accepted"]


def test_267_agent_exits_non_zero_on_every_attempt(walk: Walk) -> None:
    """267's agent exits 1 on both attempts and changes nothing."""
    assert [walk.attempts["267", n].agent_rc for n in (1, 2)] == [1, 1]
    assert walk.outcomes("267") == ["failed", "failed"]


def test_the_walk_ends_as_the_scenario_says(walk: Walk) -> None:
    """Complete, blocked, rejected, conflicted, timed-out sets and attempt counts match scenario.py."""
    complete = {a.todo for a in walk.accepted}
    assert complete == EXPECTED_COMPLETE and not complete & EXPECTED_BLOCKED.keys()
    assert {t for (t, _), a in walk.attempts.items() if a.outcome == "rejected"} == EXPECTED_REJECTED_ONCE
    assert {t for (t, _), a in walk.attempts.items() if a.outcome == "conflicted"} == EXPECTED_CONFLICTED_ONCE
    assert {t for (t, _), a in walk.attempts.items() if a.outcome == "timed_out"} == EXPECTED_TIMED_OUT_ONCE
    used = {t: max(n for (u, n) in walk.attempts if u == t) for t in ALL_TODO_IDS}
    assert used == EXPECTED_ATTEMPTS
    assert walk.red_rounds == ["2.1", "4.1", "4.1r1"]


def test_the_successful_changes_in_plan_order_merge_and_pass(walk: Walk, tmp_path: Path) -> None:
    """The 26 accepted commits, cherry-picked in plan order onto main, apply cleanly and pass together."""
    tree = tmp_path / "final"
    _git(walk.repo, "worktree", "add", "-q", "--detach", str(tree), walk.base)
    for attempt in walk.accepted:
        assert attempt.commit is not None
        picked = _git(tree, "cherry-pick", attempt.commit, check=False)
        assert picked.returncode == 0, (attempt.todo, picked.stdout, picked.stderr)
    done = _run_tests(tree)
    assert done.returncode == 0, done.stderr
    assert int(re.findall(r"Ran (\d+) tests", done.stderr)[0]) > 80
    head_tree = _git(walk.repo, "rev-parse", f"{walk.head}^{{tree}}").stdout
    assert _git(tree, "rev-parse", "HEAD^{tree}").stdout == head_tree
