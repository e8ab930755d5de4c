"""daemon.world.checks with a FlakePolicy: a red run is re-run until green or confirmed, test evidence
excuses known failures, and re-runs run at once in spare copies of the tree.

The commands are real subprocesses: a script that plays one planned run per call (its counter lives
outside the tree, so copies of the tree share it), and scripts that meet in a file handshake to show
that two runs were going at the same time.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from procs import alive

from daemon.world.checks import CheckResult, CheckRunner, FlakePolicy
from daemon.world.confirm import MAX_TEST_FAILURES
from statemachine.flakes import command_key

PY = sys.executable

# Plays run n (1-based, counted under a lock in STATE/n) from STATE/plan.json: its output, exit code,
# files to write in the tree and links to make there. Past the plan's end the last entry repeats.
PLAN_PY = textwrap.dedent(
    """
    import fcntl, json, os, pathlib, sys
    state = pathlib.Path(sys.argv[1])
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state / "n"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
    plan = json.loads((state / "plan.json").read_text())
    step = plan[min(n, len(plan)) - 1]
    for rel, text in step.get("write", {}).items():
        pathlib.Path(rel).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(rel).write_text(text)
    for rel, target in step.get("link", {}).items():
        pathlib.Path(rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, rel)
    print(f"run {n}")
    print(step.get("out", ""))
    sys.exit(step.get("rc", 0))
    """
).lstrip()

X, Y, Z = "tests/test_x.py::test_x", "tests/test_y.py::test_y", "tests/test_z.py::test_z"
JUNIT = "reports/junit.xml"


def pytest_out(failed: Sequence[str], *, count: int | None = None) -> str:
    """pytest's summary naming ``failed`` (``count`` says how many failed, when it should disagree)."""
    listed = "\n".join(f"FAILED {t} - AssertionError" for t in failed)
    n = len(failed) if count is None else count
    return (
        "=========================== short test summary info ============================\n"
        f"{listed}\n========================= {n} failed, 5 passed in 0.12s ========================="
    )


def unittest_out(method: str, where: str) -> str:
    return (
        "======================================================================\n"
        f"FAIL: {method} ({where}.{method})\n"
        "----------------------------------------------------------------------\n"
        "AssertionError\n\n"
        "----------------------------------------------------------------------\n"
        "Ran 3 tests in 0.001s\n\nFAILED (failures=1)"
    )


def junit_xml(classname: str, name: str) -> str:
    return (
        '<?xml version="1.0"?><testsuites><testsuite name="t" tests="2" failures="1" errors="0">'
        f'<testcase classname="{classname}" name="{name}"><failure message="boom"/></testcase>'
        '<testcase classname="tests.other" name="test_ok"/></testsuite></testsuites>'
    )


class Plan:
    """A planned command: ``steps`` are its runs in order (dicts of out, rc, write, link)."""

    def __init__(self, tmp_path: Path, steps: list[dict[str, object]], name: str = "plan") -> None:
        self.state = tmp_path / f"{name}-state"
        self.state.mkdir()
        (self.state / "plan.json").write_text(json.dumps(steps))
        script = tmp_path / f"{name}.py"
        script.write_text(PLAN_PY)
        self.command = (PY, "-B", str(script), str(self.state))
        self.key = command_key(self.command)

    @property
    def calls(self) -> int:
        counter = self.state / "n"
        return int(counter.read_text()) if counter.exists() else 0


RED = {"rc": 1, "out": "something failed"}
GREEN = {"rc": 0}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    path = tmp_path / "tree"
    path.mkdir()
    return path


def _policy(
    plan: Plan,
    *,
    rate: float = 0.2,
    max_reruns: int = 5,
    excused: frozenset[tuple[str, str]] = frozenset(),
    junit: str = "",
    parallel: int = 1,
) -> FlakePolicy:
    return FlakePolicy(
        rates={plan.key: rate}, max_reruns=max_reruns, excused=excused, junit=junit, parallel=parallel
    )


def _run(tree: Path, plan: Plan, policy: FlakePolicy, log: Path | None = None) -> CheckResult:
    return CheckRunner([plan.command], timeout=30, policy=policy).run(tree, log)


# --- the re-run rule ----------------------------------------------------------------------------------


def test_a_red_then_green_command_passes_and_is_recorded_as_a_flake(tmp_path: Path, tree: Path) -> None:
    """Red on the first run, green on the second: the check passes, flaky, 2 runs with 1 red."""
    plan = Plan(tmp_path, [RED, GREEN])
    result = _run(tree, plan, _policy(plan))
    assert (result.passed, result.flaky) == (True, True)
    assert [(t.runs, t.reds, t.passed) for t in result.tries] == [(2, 1, True)]
    assert result.confirmed == (0, 0)


def test_a_command_red_in_every_run_is_confirmed_after_runs_needed(tmp_path: Path, tree: Path) -> None:
    """At a rate of 0.2 and false_blame 0.01 three red runs confirm it: red, "3 of 3", and no 4th run."""
    plan = Plan(tmp_path, [RED])
    result = _run(tree, plan, _policy(plan))
    assert not result.passed
    assert result.confirmed == (3, 3)
    assert plan.calls == 3


def test_a_command_red_twice_then_green_is_not_red_before_runs_needed(tmp_path: Path, tree: Path) -> None:
    """Two reds at rate 0.2 are not yet proof: the third run is green, so the check passes."""
    plan = Plan(tmp_path, [RED, RED, GREEN])
    result = _run(tree, plan, _policy(plan))
    assert result.passed
    assert [(t.runs, t.reds) for t in result.tries] == [(3, 2)]


def test_a_green_first_run_is_trusted_at_once(tmp_path: Path, tree: Path) -> None:
    """A green run is never re-run, whatever the rate."""
    plan = Plan(tmp_path, [GREEN])
    result = _run(tree, plan, _policy(plan, rate=0.9))
    assert (result.passed, result.flaky, plan.calls) == (True, False, 1)


def test_max_reruns_caps_the_runs_of_a_very_flaky_command(tmp_path: Path, tree: Path) -> None:
    """At a rate of 0.9 false_blame would need ~44 runs; max_reruns=2 stops at 3 (confirmed 3 of 3)."""
    plan = Plan(tmp_path, [RED])
    result = _run(tree, plan, _policy(plan, rate=0.9, max_reruns=2))
    assert result.confirmed == (3, 3)
    assert plan.calls == 3


def test_a_flake_seen_on_one_tree_raises_the_reruns_on_the_next(tmp_path: Path, tree: Path) -> None:
    """At the 5% prior a red is confirmed in 2 runs; once the same runner saw the command flake on a
    tree (red, green), the next tree's reds need 3: what the log will learn is used at once."""
    plan = Plan(tmp_path, [RED, GREEN, RED])  # tree 1: red then green; tree 2: red every run after
    runner = CheckRunner([plan.command], timeout=30, policy=FlakePolicy())
    assert runner.run(tree).passed
    second = runner.run(tree)
    assert second.confirmed == (3, 3)
    assert plan.calls == 5


def test_a_clean_tree_lowers_the_rate_a_verification_uses(tmp_path: Path, tree: Path) -> None:
    """A measured 20% over few runs: a green first run on one tree lowers the rate (fewer re-runs
    needed later in the same verification), as the log will weigh it."""
    plan = Plan(tmp_path, [GREEN])
    policy = FlakePolicy(rates={plan.key: 0.2}, trials={plan.key: 0.0})
    runner = CheckRunner([plan.command], timeout=30, policy=policy)
    runner.run(tree)
    assert runner.policy.rates[plan.key] == pytest.approx(0.2 * 10 / 11)
    assert runner.policy.trials[plan.key] == 1


def test_an_unmeasured_command_gets_the_prior(tmp_path: Path, tree: Path) -> None:
    """No rate for the command: the prior 0.05 decides (2 runs for 0.01)."""
    plan = Plan(tmp_path, [RED])
    result = _run(tree, plan, FlakePolicy(prior=0.05))
    assert result.confirmed == (2, 2)


def test_without_a_policy_retries_is_the_fixed_rule(tmp_path: Path, tree: Path) -> None:
    """retries=2 and no policy: red after exactly 3 runs, and an excusable-looking output is not read."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}])
    result = CheckRunner([plan.command], timeout=30, retries=2).run(tree)
    assert result.confirmed == (3, 3)
    assert result.tries[0].evidence == ""


def test_the_whole_output_of_the_last_red_run_is_kept(tmp_path: Path, tree: Path) -> None:
    """A confirmed red keeps the last run's whole output (not a tail), and its exit code."""
    plan = Plan(tmp_path, [{"rc": 3, "out": "x" * 9000 + "\nEND"}])
    result = _run(tree, plan, _policy(plan))
    assert result.output.startswith("run 3\n") and result.output.rstrip().endswith("END")
    assert len(result.output) > 9000
    assert result.returncode == 3


def test_the_log_gets_every_run(tmp_path: Path, tree: Path) -> None:
    """Every run, red or green, is a section of the verify log."""
    plan = Plan(tmp_path, [RED, RED, GREEN])
    log = tmp_path / "verify.log"
    _run(tree, plan, _policy(plan), log)
    text = log.read_text()
    assert [f"run {n}" in text for n in (1, 2, 3)] == [True, True, True]
    assert text.count("[exit 1]") == 2 and text.count("[exit 0]") == 1


def test_a_flaky_setup_command_is_rerun_too(tmp_path: Path, tree: Path) -> None:
    """A [verify] setup command red once then green does not fail the check; it is one of the tries."""
    setup = Plan(tmp_path, [RED, GREEN], name="setup")
    check = Plan(tmp_path, [GREEN], name="check")
    policy = FlakePolicy(rates={setup.key: 0.2})
    result = CheckRunner([check.command], timeout=30, setup=[setup.command], policy=policy).run(tree)
    assert result.passed and result.flaky
    assert [(t.command, t.runs, t.reds) for t in result.tries] == [
        (setup.command, 2, 1),
        (check.command, 1, 0),
    ]


def test_a_setup_command_is_never_excused(tmp_path: Path, tree: Path) -> None:
    """A setup command whose output names only an excused test is still a red setup, confirmed."""
    setup = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}], name="setup")
    policy = FlakePolicy(rates={setup.key: 0.2}, excused=frozenset({(setup.key, X)}))
    result = CheckRunner([(PY, "-c", "pass")], timeout=30, setup=[setup.command], policy=policy).run(tree)
    assert (result.passed, result.setup_failed, result.confirmed) == (False, True, (3, 3))
    assert result.tries[0].excused == ()


# --- test evidence ------------------------------------------------------------------------------------


def test_a_failure_of_only_excused_tests_counts_as_green(tmp_path: Path, tree: Path) -> None:
    """pytest names only a test excused for this command: the check passes at once, the test recorded."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}])
    result = _run(tree, plan, _policy(plan, excused=frozenset({(plan.key, X)})))
    assert result.passed
    assert plan.calls == 1
    (runs,) = result.tries
    assert (runs.runs, runs.reds, runs.excused, runs.evidence) == (1, 0, (X,), "pytest")


def test_unittest_output_naming_an_excused_test_counts_as_green(tmp_path: Path, tree: Path) -> None:
    """The same with unittest's report: its ``module.Class.method`` id is the excused one."""
    plan = Plan(tmp_path, [{"rc": 1, "out": unittest_out("test_y", "tests.test_x.TestX")}])
    result = _run(tree, plan, _policy(plan, excused=frozenset({(plan.key, "tests.test_x.TestX.test_y")})))
    assert result.passed
    assert result.tries[0].evidence == "unittest"


def test_a_test_excused_for_another_command_does_not_excuse(tmp_path: Path, tree: Path) -> None:
    """Excuses are per command key: the same test id excused under another command still counts."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}])
    result = _run(tree, plan, _policy(plan, excused=frozenset({("npm test", X)})))
    assert result.confirmed == (3, 3)


def test_an_excused_test_next_to_a_real_failure_is_red(tmp_path: Path, tree: Path) -> None:
    """One excused test and one that is not: red, and only the unexcused test is blamed."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X, Y])}])
    result = _run(tree, plan, _policy(plan, excused=frozenset({(plan.key, X)})))
    assert result.confirmed == (3, 3)
    assert result.failed_tests == (Y,)
    assert result.tries[0].excused == (X,)


def test_incomplete_evidence_is_a_plain_red(tmp_path: Path, tree: Path) -> None:
    """pytest says 2 failed but names only the excused one: not all failures are known, so red."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X], count=2)}])
    result = _run(tree, plan, _policy(plan, excused=frozenset({(plan.key, X)})))
    assert result.confirmed == (3, 3)
    assert result.failed_tests == ()


def test_a_red_run_naming_no_test_is_never_excused(tmp_path: Path, tree: Path) -> None:
    """Complete evidence of zero failed tests (a coverage gate failed the run) is red, not excused."""
    plan = Plan(tmp_path, [{"rc": 1, "out": "==== 5 passed in 0.10s ===="}])
    result = _run(tree, plan, _policy(plan, excused=frozenset({(plan.key, X)})))
    assert result.confirmed == (3, 3)


def test_failed_tests_are_those_failing_in_every_confirming_run(tmp_path: Path, tree: Path) -> None:
    """X fails in all three runs, Y only in the first: X is the failure; Y failed once and not
    again on the same tree, so it is a flaky test."""
    steps: list[dict[str, object]] = [
        {"rc": 1, "out": pytest_out([X, Y])},
        {"rc": 1, "out": pytest_out([X])},
        {"rc": 1, "out": pytest_out([X, Z])},
    ]
    plan = Plan(tmp_path, steps)
    result = _run(tree, plan, _policy(plan))
    assert result.failed_tests == (X,)
    assert set(result.tries[0].flaky_tests) == {Y, Z}


def test_tests_failing_before_a_green_run_are_flaky_tests(tmp_path: Path, tree: Path) -> None:
    """Y fails, then the command passes: the check is green and Y is recorded as a flaky test."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([Y])}, GREEN])
    result = _run(tree, plan, _policy(plan))
    assert result.passed
    assert result.tries[0].flaky_tests == (Y,)
    assert result.tries[0].failed_tests == ()


def test_a_junit_report_written_by_the_run_is_the_evidence(tmp_path: Path, tree: Path) -> None:
    """The output names nothing, the report the run wrote names only an excused test: green."""
    plan = Plan(tmp_path, [{"rc": 1, "out": "boom", "write": {JUNIT: junit_xml("tests.test_x", "test_x")}}])
    policy = _policy(plan, junit=JUNIT, excused=frozenset({(plan.key, "tests.test_x.test_x")}))
    result = _run(tree, plan, policy)
    assert result.passed
    assert result.tries[0].evidence == "junit"


def test_a_junit_report_left_by_an_earlier_run_is_ignored(tmp_path: Path, tree: Path) -> None:
    """A report already in the tree that this run did not write is not read: red, confirmed."""
    (tree / "reports").mkdir()
    (tree / JUNIT).write_text(junit_xml("tests.test_x", "test_x"))
    plan = Plan(tmp_path, [{"rc": 1, "out": "boom"}])
    policy = _policy(plan, junit=JUNIT, excused=frozenset({(plan.key, "tests.test_x.test_x")}))
    result = _run(tree, plan, policy)
    assert result.confirmed == (3, 3)
    assert result.tries[0].evidence == "unknown"


def test_a_junit_report_linked_out_of_the_tree_is_not_read(tmp_path: Path, tree: Path) -> None:
    """The run puts a link at the report path to a report outside the tree: not followed, red."""
    outside = tmp_path / "forged.xml"
    outside.write_text(junit_xml("tests.test_x", "test_x"))
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X]), "link": {JUNIT: str(outside)}}])
    policy = _policy(plan, junit=JUNIT, excused=frozenset({(plan.key, "tests.test_x.test_x"), (plan.key, X)}))
    result = _run(tree, plan, policy)
    assert result.confirmed == (3, 3)
    assert result.tries[0].excused == ()


def test_a_junit_folder_linked_out_of_the_tree_is_not_read(tmp_path: Path, tree: Path) -> None:
    """The report's folder is a link out of the tree (the report itself a real file there): refused."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "junit.xml").write_text(junit_xml("tests.test_x", "test_x"))
    (tree / "reports").symlink_to(outside, target_is_directory=True)
    plan = Plan(tmp_path, [{"rc": 1, "out": "boom"}])
    policy = _policy(plan, junit=JUNIT, excused=frozenset({(plan.key, "tests.test_x.test_x")}))
    result = _run(tree, plan, policy)
    assert result.confirmed == (3, 3)
    assert (outside / "junit.xml").exists()  # and nothing outside was deleted on the way


# --- parallel re-runs in spare trees --------------------------------------------------------------------


class CopySpares:
    """A stand-in for daemon.world.sparetrees.SpareTrees: fresh copies of the tree, leaving out
    ``untracked`` names (what a checkout of the git index would not have)."""

    def __init__(self, root: Path, untracked: Sequence[str] = ()) -> None:
        self.root = root
        self.untracked = tuple(untracked)
        self.calls: list[int] = []

    def get(self, tree: Path, n: int) -> list[Path]:
        self.calls.append(n)
        copies = []
        for i in range(n):
            dest = self.root / f"spare-{i}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(tree, dest, symlinks=True, ignore=shutil.ignore_patterns(*self.untracked))
            copies.append(dest)
        return copies


# Run 1 is red. Later runs write their folder to STATE/arrived-<n> and wait until two have arrived
# (a run that is alone gives up after a minute, red): two runs can only both be green at once.
MEET_PY = textwrap.dedent(
    """
    import fcntl, os, pathlib, sys, time
    state = pathlib.Path(sys.argv[1])
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state / "n"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
    if n == 1:
        sys.exit("first run: red")
    (state / f"arrived-{n}").write_text(os.getcwd())
    deadline = time.monotonic() + 60
    while len(list(state.glob("arrived-*"))) < 2:
        if time.monotonic() > deadline:
            sys.exit("alone: the other run never came")
        time.sleep(0.02)
    """
).lstrip()

# Run 1 is red. In a copy of the tree, a run writes its pid and hangs; in the tree itself it waits
# for that pid (so the copy's run is surely going) and is green.
HANG_PY = textwrap.dedent(
    """
    import fcntl, os, pathlib, sys, time
    state, tree = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state / "n"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
    if n == 1:
        sys.exit("first run: red")
    if pathlib.Path.cwd() != tree:
        (state / "copy.pid").write_text(str(os.getpid()))
        time.sleep(300)
        sys.exit("the copy's run was not stopped")
    deadline = time.monotonic() + 60
    while not (state / "copy.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    """
).lstrip()

# Needs the file a setup command builds; red in the tree itself, green in a copy that has it.
NEEDS_BUILT_PY = textwrap.dedent(
    """
    import pathlib, sys
    tree = pathlib.Path(sys.argv[1])
    if not pathlib.Path("built").exists():
        sys.exit("not built")
    sys.exit(1 if pathlib.Path.cwd() == tree else 0)
    """
).lstrip()


def _script(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(code)
    return path


def test_reruns_run_at_once_in_a_copy_of_the_tree(tmp_path: Path, tree: Path) -> None:
    """After the first red run the two re-runs still needed meet in a handshake: they ran at the
    same time, one in the tree and one in a copy; both green, so the check passes."""
    state = tmp_path / "meet"
    state.mkdir()
    command = (PY, "-B", str(_script(tmp_path, "meet.py", MEET_PY)), str(state))
    spares = CopySpares(tmp_path / "spares")
    policy = FlakePolicy(rates={command_key(command): 0.2}, parallel=3)
    result = CheckRunner([command], timeout=120, policy=policy, spares=spares).run(tree)
    assert result.passed and result.flaky
    places = {Path(p.read_text()) for p in state.glob("arrived-*")}
    assert places == {tree, tmp_path / "spares" / "spare-0"}
    assert spares.calls == [1]  # min(parallel, runs still needed) = 2 at once: the tree and one copy


def test_the_copies_still_running_are_killed_at_the_first_green(tmp_path: Path, tree: Path) -> None:
    """The tree's re-run is green while the copy's hangs: the copy's process group is killed and the
    check passes (its killed run is not counted)."""
    state = tmp_path / "hang"
    state.mkdir()
    command = (PY, "-B", str(_script(tmp_path, "hang.py", HANG_PY)), str(state), str(tree))
    policy = FlakePolicy(rates={command_key(command): 0.2}, parallel=2)
    runner = CheckRunner([command], timeout=120, policy=policy, spares=CopySpares(tmp_path / "spares"))
    result = runner.run(tree)
    assert result.passed
    assert [(t.runs, t.reds) for t in result.tries] == [(2, 1)]
    pid = int((state / "copy.pid").read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid)


def test_a_copy_runs_the_setup_before_its_rerun(tmp_path: Path, tree: Path) -> None:
    """The check needs what the setup built, which a copy of the index does not have: the copy runs
    the setup first, so its re-run is green although the tree's own re-run is red."""
    setup = (PY, "-c", "open('built', 'w').write('yes')")
    command = (PY, "-B", str(_script(tmp_path, "needs.py", NEEDS_BUILT_PY)), str(tree))
    policy = FlakePolicy(rates={command_key(command): 0.2}, parallel=2)
    spares = CopySpares(tmp_path / "spares", untracked=["built"])
    result = CheckRunner([command], timeout=30, setup=[setup], policy=policy, spares=spares).run(tree)
    assert result.passed
    assert [(t.runs, t.reds) for t in result.tries] == [(1, 0), (3, 2)]


def test_parallel_reruns_still_confirm_a_real_red(tmp_path: Path, tree: Path) -> None:
    """Red everywhere: confirmed in 3 of 3 runs (one first, then two at once), never more."""
    plan = Plan(tmp_path, [RED])
    spares = CopySpares(tmp_path / "spares")
    policy = _policy(plan, parallel=4)
    result = CheckRunner([plan.command], timeout=30, policy=policy, spares=spares).run(tree)
    assert result.confirmed == (3, 3)
    assert plan.calls == 3
    assert spares.calls == [1]


def test_a_copy_is_prepared_past_an_earlier_check_that_passed_excused(tmp_path: Path, tree: Path) -> None:
    """The first check is red in every tree but only with an excused test; the second check's
    re-runs still meet in the handshake, so the copy's preparation went past the first check."""
    first = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}], name="first")
    state = tmp_path / "meet"
    state.mkdir()
    second = (PY, "-B", str(_script(tmp_path, "meet.py", MEET_PY)), str(state))
    policy = FlakePolicy(rates={command_key(second): 0.2}, excused=frozenset({(first.key, X)}), parallel=3)
    spares = CopySpares(tmp_path / "spares")
    result = CheckRunner([first.command, second], timeout=120, policy=policy, spares=spares).run(tree)
    assert result.passed
    assert first.calls == 2  # in the tree, then in the copy
    assert len(list(state.glob("arrived-*"))) == 2


class NoSpares:
    """Spare trees that cannot be made (a full disk)."""

    def get(self, tree: Path, n: int) -> list[Path]:
        raise OSError(28, "No space left on device")


def test_without_spare_trees_the_reruns_run_in_place(tmp_path: Path, tree: Path) -> None:
    """When no copy can be made, the re-runs run one by one in the tree: red, then green, passed."""
    plan = Plan(tmp_path, [RED, GREEN])
    runner = CheckRunner([plan.command], timeout=30, policy=_policy(plan, parallel=3), spares=NoSpares())
    result = runner.run(tree)
    assert result.passed
    assert [(t.runs, t.reds) for t in result.tries] == [(2, 1)]


# --- runs that are never excused, and what a run teaches ---------------------------------------------

# Prints pytest's summary (argv[2]) and then ends as argv[1] says: "hang" (until the timeout; SIGTERM
# then exits 1, so only the timeout tells it from a test failure), "signal" (killed by SIGKILL), or
# an exit code.
ENDS_PY = textwrap.dedent(
    """
    import os, signal, sys, time
    mode, summary = sys.argv[1], sys.argv[2]
    print(summary, flush=True)
    if mode == "hang":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        time.sleep(60)
    elif mode == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(int(mode) if mode.isdigit() else 1)
    """
).lstrip()


@pytest.mark.parametrize("mode", ["hang", "signal", "3"])
def test_a_run_that_did_not_end_as_a_test_failure_is_never_excused(
    tmp_path: Path, tree: Path, mode: str
) -> None:
    """The complete summary names only an excused test, but the run timed out, died by a signal or
    exited 3 (pytest's internal error): red, confirmed in 3 of 3 runs, though the summary was read."""
    command = (PY, "-B", str(_script(tmp_path, "ends.py", ENDS_PY)), mode, pytest_out([X]))
    key = command_key(command)
    policy = FlakePolicy(rates={key: 0.2}, excused=frozenset({(key, X)}))
    result = CheckRunner([command], timeout=1, kill_grace=5, policy=policy).run(tree)
    assert (result.passed, result.confirmed) == (False, (3, 3))
    assert result.tries[0].evidence == "pytest"


def test_the_same_summary_exiting_1_is_excused(tmp_path: Path, tree: Path) -> None:
    """The control for the test above: the same script ending with exit code 1 is excused at once."""
    command = (PY, "-B", str(_script(tmp_path, "ends.py", ENDS_PY)), "1", pytest_out([X]))
    key = command_key(command)
    policy = FlakePolicy(rates={key: 0.2}, excused=frozenset({(key, X)}))
    result = CheckRunner([command], timeout=30, policy=policy).run(tree)
    assert result.passed
    assert result.tries[0].excused == (X,)


def _many(n: int) -> list[str]:
    return [f"tests/test_many.py::test_{i:02d}" for i in range(n)]


@pytest.mark.parametrize(("n", "passed"), [(MAX_TEST_FAILURES, True), (MAX_TEST_FAILURES + 1, False)])
def test_a_mass_failure_is_never_excused(tmp_path: Path, tree: Path, n: int, passed: bool) -> None:
    """Up to MAX_TEST_FAILURES (10) failing tests, all excused, are excused; 11, all excused, are a
    broken machine or suite, not flaky tests: red, confirmed."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out(_many(n))}])
    policy = _policy(plan, excused=frozenset((plan.key, t) for t in _many(n)))
    result = _run(tree, plan, policy)
    assert result.passed is passed
    assert result.confirmed == ((0, 0) if passed else (3, 3))


@pytest.mark.parametrize(("n", "learned"), [(2, True), (MAX_TEST_FAILURES + 1, False)])
def test_a_mass_failure_teaches_no_flaky_tests(tmp_path: Path, tree: Path, n: int, learned: bool) -> None:
    """n tests fail once, then the command passes: 2 are recorded as flaky tests, 11 (a mass failure)
    record none, though the check passes either way."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out(_many(n))}, GREEN])
    result = _run(tree, plan, _policy(plan))
    assert result.passed
    assert result.tries[0].flaky_tests == (tuple(_many(n)) if learned else ())


def test_test_ids_from_a_report_and_from_the_output_are_not_compared(tmp_path: Path, tree: Path) -> None:
    """Run 1 writes a JUnit report naming X (as ``tests.test_x.test_x``); runs 2 and 3 write none and
    print pytest's summary naming X (as ``tests/test_x.py::test_x``). One test, two spellings: all
    three runs are red, the failure is the report's id, and no test is taken for flaky."""
    steps: list[dict[str, object]] = [
        {"rc": 1, "out": "boom", "write": {JUNIT: junit_xml("tests.test_x", "test_x")}},
        {"rc": 1, "out": pytest_out([X])},
    ]
    plan = Plan(tmp_path, steps)
    result = _run(tree, plan, _policy(plan, junit=JUNIT))
    assert result.confirmed == (3, 3)
    assert result.failed_tests == ("tests.test_x.test_x",)
    assert result.tries[0].flaky_tests == ()


def test_a_tracked_junit_report_is_neither_read_nor_deleted(tmp_path: Path, tree: Path) -> None:
    """A report the repository tracks (there before the run, untouched by it) names Y, not excused;
    the output names only X, excused: the output is read (the check passes) and the file stays."""
    report = junit_xml("tests.test_y", "test_y")
    (tree / "reports").mkdir()
    (tree / JUNIT).write_text(report)
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}])
    result = _run(tree, plan, _policy(plan, junit=JUNIT, excused=frozenset({(plan.key, X)})))
    assert result.passed
    assert (result.tries[0].evidence, result.tries[0].excused) == ("pytest", (X,))
    assert (tree / JUNIT).read_text() == report


# --- a baseline: FlakePolicy(base=True) ------------------------------------------------------------


def test_a_baseline_naming_its_failing_tests_passes_with_them_excused(tmp_path: Path, tree: Path) -> None:
    """On a base, tests a complete summary names (exit code 1) in every run are red on the base: once
    confirmed (3 runs at 0.2), the check passes with them in ``excused``, though none was excused
    beforehand."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X, Y])}])
    result = _run(tree, plan, FlakePolicy(rates={plan.key: 0.2}, base=True))
    assert result.passed
    assert plan.calls == 3
    assert result.tries[0].excused == (X, Y)


def test_a_baseline_test_that_passes_on_a_re_run_is_a_flaky_test(tmp_path: Path, tree: Path) -> None:
    """On a base, a test that fails and then passes on a re-run is a flaky test (learned), not red on
    the base: the check passes after 2 runs with it in ``flaky_tests`` and nothing excused."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}, GREEN])
    result = _run(tree, plan, FlakePolicy(rates={plan.key: 0.2}, base=True))
    assert result.passed
    assert [(t.runs, t.reds, t.flaky_tests, t.excused) for t in result.tries] == [(2, 1, (X,), ())]


@pytest.mark.parametrize("out", ["something failed", "==== 5 passed in 0.10s ===="])
def test_a_baseline_red_for_no_named_test_is_red(tmp_path: Path, tree: Path, out: str) -> None:
    """On a base, a red run whose output names no failing test (no runner's report, or a complete one
    of zero failures) is red, confirmed: no test explains it."""
    plan = Plan(tmp_path, [{"rc": 1, "out": out}])
    result = _run(tree, plan, FlakePolicy(rates={plan.key: 0.2}, base=True))
    assert (result.passed, result.confirmed) == (False, (3, 3))
    assert result.tries[0].excused == ()


# --- red on the head: FlakePolicy(red_on_head=...) excuses once confirmed ------------------------------


def _on_head(plan: Plan, *tests: str) -> FlakePolicy:
    return FlakePolicy(rates={plan.key: 0.2}, red_on_head=frozenset((plan.key, t) for t in tests))


def test_a_test_red_on_the_head_in_every_run_is_excused_once_confirmed(tmp_path: Path, tree: Path) -> None:
    """X was red on the verified head and fails in every run here: after the runs a red needs (3 at
    0.2) the check passes, X excused."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}])
    result = _run(tree, plan, _on_head(plan, X))
    assert result.passed
    assert plan.calls == 3
    # The runs stay red in the record (nothing for the flake model to learn), passed as known red.
    assert [(t.runs, t.reds, t.excused, t.known_red) for t in result.tries] == [(3, 3, (X,), True)]


def test_a_test_red_on_the_head_that_passes_on_a_re_run_is_a_flaky_test(tmp_path: Path, tree: Path) -> None:
    """X was red on the head but passes on the re-run: a flaky test (learned), not excused, so it is
    no longer taken for red on this tree."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X])}, GREEN])
    result = _run(tree, plan, _on_head(plan, X))
    assert result.passed
    assert [(t.runs, t.reds, t.flaky_tests, t.excused) for t in result.tries] == [(2, 1, (X,), ())]


def test_a_real_failure_beside_a_test_red_on_the_head_is_red_for_it_alone(tmp_path: Path, tree: Path) -> None:
    """X (red on the head) and Y fail in every run: red, confirmed, blaming Y only."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X, Y])}])
    result = _run(tree, plan, _on_head(plan, X))
    assert result.confirmed == (3, 3)
    assert result.failed_tests == (Y,)


def test_a_test_red_on_the_head_beside_a_flake_is_excused_and_the_flake_learned(
    tmp_path: Path, tree: Path
) -> None:
    """X is red on the head and fails in every run; Y fails only in the first: the check passes with
    X excused (red in every run) and Y recorded as a flaky test, not a reason to blame."""
    plan = Plan(tmp_path, [{"rc": 1, "out": pytest_out([X, Y])}, {"rc": 1, "out": pytest_out([X])}])
    result = _run(tree, plan, _on_head(plan, X))
    assert result.passed
    (tries,) = result.tries
    assert (tries.excused, tries.flaky_tests, tries.known_red) == ((X,), (Y,), True)


def test_a_base_failing_a_different_test_in_each_run_is_not_red_on_its_tests(
    tmp_path: Path, tree: Path
) -> None:
    """A baseline failing X, then Y, then Z: no test failed in every run, so none is red on the base;
    the base is red (three flakes at once say nothing about one test)."""
    plan = Plan(
        tmp_path,
        [
            {"rc": 1, "out": pytest_out([X])},
            {"rc": 1, "out": pytest_out([Y])},
            {"rc": 1, "out": pytest_out([Z])},
        ],
    )
    result = _run(tree, plan, FlakePolicy(rates={plan.key: 0.2}, base=True))
    assert not result.passed
    assert result.confirmed == (3, 3)
