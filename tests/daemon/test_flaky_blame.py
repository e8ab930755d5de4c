"""Flake-aware blame end to end: verify_batch on a real repository of ten todo commits, checked by a
real verify script with a seeded 20%-flaky test that no todo touches (issue 14's tests).

The policy knows the true rate (0.2). Every seed is fixed, so each case is one deterministic run of
the search; over the seeds here the flaky test is red dozens of times on good sets, and each such red
must be re-run green before it blames. ``false_blame`` is 0.001 here (five red runs confirm, 0.2 ** 5
= 0.0003), not the default 0.01 (three runs, 0.008): at 0.01 some of the ~90 good sets these seeds
test would be blamed by three flakes in a row, as the rule allows, and an exact assertion over many
seeds would then hold only for hand-picked seeds (seed 0 of the two-culprit case was one).
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from gitrepo import GOOD_MOD, UNNAMED_BREAK, head, init_repo, module_candidate

from daemon.world.checks import CheckRunner, FlakePolicy
from daemon.world.gitops import add_worktree
from daemon.world.verify import BatchVerdict, Candidate, verify_batch
from statemachine.flakes import command_key

RATE = 0.2
IDS = tuple(str(i) for i in range(1, 11))
RED_ON_BASE = "check.py::test_red_on_base"

# The repository's verify script, in pytest's words: each module's check() is a test (named by a
# number, so the output does not point at a todo's file and the search must halve), plus
# test_unrelated, red with probability RATE, drawn from STATE's seed and a counter of runs kept
# outside the tree; and, when STATE/red_on_base exists, a test that fails on every tree.
CHECK_PY = textwrap.dedent(
    """
    import fcntl, importlib, pathlib, random, sys, zlib
    state = pathlib.Path(sys.argv[1])
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        counter = state / "n"
        n = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(n))
    seed, rate = (state / "seed").read_text(), float((state / "rate").read_text())
    sys.path.insert(0, "mods")
    failed, passed = [], 0
    for path in sorted(pathlib.Path("mods").glob("*.py")):
        if importlib.import_module(path.stem).check() is False:
            failed.append(f"check.py::test_invariant[{zlib.crc32(path.stem.encode())}]")
        else:
            passed += 1
    if random.Random(f"{seed}:{n}").random() < rate:
        failed.append("check.py::test_unrelated")
    else:
        passed += 1
    if (state / "red_on_base").exists():
        failed.append("check.py::test_red_on_base")
    if failed:
        print("=" * 20 + " short test summary info " + "=" * 20)
        for test in failed:
            print(f"FAILED {test} - AssertionError")
    counts = f"{len(failed)} failed, {passed} passed" if failed else f"{passed} passed"
    print(f"===== {counts} in 0.01s =====")
    sys.exit(1 if failed else 0)
    """
).lstrip()


@dataclass(slots=True)
class Setup:
    repo: Path
    worktree: Path
    state: Path
    command: tuple[str, ...]
    base: str
    commits: dict[tuple[str, bool], Candidate] = field(default_factory=dict)

    def candidates(self, culprits: Sequence[str]) -> list[Candidate]:
        """Todos 1-10 on the base (those in ``culprits`` break an invariant), each commit made once."""
        for i in IDS:
            broken = i in culprits
            if (i, broken) not in self.commits:
                body = UNNAMED_BREAK if broken else GOOD_MOD
                self.commits[i, broken] = module_candidate(self.repo, self.base, i, body)
        return [self.commits[i, i in culprits] for i in IDS]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    repo = init_repo(tmp_path / "repo", {"check.py": CHECK_PY, "mods/base.py": GOOD_MOD})
    worktree = add_worktree(repo, repo / ".batchd" / "worktrees" / "verify", "batchd/verify-1.1", head(repo))
    state = tmp_path / "state"
    state.mkdir()
    (state / "rate").write_text(str(RATE))
    # -S: the script needs only the standard library, and starts in half the time without site.
    command = (sys.executable, "-S", "-B", "check.py", str(state))
    return Setup(repo, worktree, state, command, head(repo))


def _verify(
    s: Setup, seed: int, culprits: Sequence[str], *, excused: frozenset[tuple[str, str]] = frozenset()
) -> BatchVerdict:
    """A batch of ten todos (``culprits`` break an invariant), verified with the flaky test seeded."""
    (s.state / "seed").write_text(str(seed))
    (s.state / "n").unlink(missing_ok=True)
    key = command_key(s.command)
    # The rate as if measured over many runs: one verification's trees hardly move it.
    policy = FlakePolicy(
        rates={key: RATE}, trials={key: MEASURED_RUNS}, false_blame=0.001, max_reruns=5, excused=excused
    )
    runner = CheckRunner([s.command], timeout=30, policy=policy)
    return verify_batch(s.worktree, s.base, s.candidates(culprits), runner)


MEASURED_RUNS = 10_000.0


def _runs(s: Setup) -> int:
    return int((s.state / "n").read_text())


def test_a_good_batch_with_a_flaky_test_is_accepted_whole(setup: Setup) -> None:
    """Ten good todos, a 20%-flaky test: every todo is accepted, over 20 seeds."""
    rejected = {seed: sorted(_verify(setup, seed, ()).rejected) for seed in range(20)}
    assert rejected == {seed: [] for seed in range(20)}


def test_one_culprit_and_a_flaky_test_reject_exactly_the_culprit(setup: Setup) -> None:
    """One todo breaks an invariant the output does not tie to its file: exactly it is rejected, and
    its rejection is confirmed in 5 of 5 runs, over 10 seeds (the culprit moves with the seed)."""
    for seed in range(10):
        culprit = IDS[(seed * 3) % len(IDS)]
        verdict = _verify(setup, seed, (culprit,))
        assert sorted(verdict.rejected) == [culprit], seed
        assert verdict.accepted_ids == tuple(i for i in IDS if i != culprit), seed
        assert verdict.rejected[culprit].confirmed == (5, 5), seed


def test_two_culprits_among_ten_and_a_flaky_test_reject_exactly_those(setup: Setup) -> None:
    """Two culprits among ten, the flaky test beside them: exactly the two are rejected, 4 seeds."""
    for seed in range(4):
        culprits = sorted({IDS[seed % 10], IDS[(seed * 7 + 4) % 10]}, key=int)
        verdict = _verify(setup, seed, culprits)
        assert sorted(verdict.rejected, key=int) == culprits, seed
        assert len(verdict.accepted) == len(IDS) - len(culprits), seed


def test_a_test_red_on_the_base_never_blames(setup: Setup) -> None:
    """A test that fails on every tree (red on the base, so excused) blames no good todo, and a
    real culprit is still found beside it; over 3 seeds."""
    (setup.state / "red_on_base").write_text("")
    excused = frozenset({(command_key(setup.command), RED_ON_BASE)})
    for seed in range(3):
        culprit = IDS[(seed * 3 + 1) % len(IDS)]
        verdict = _verify(setup, seed, (culprit,), excused=excused)
        assert sorted(verdict.rejected) == [culprit], seed
        assert verdict.rejected[culprit].failed_tests[0].startswith("check.py::test_invariant["), seed


def test_a_test_red_on_the_base_is_a_confirmed_red_when_not_excused(setup: Setup) -> None:
    """The control for the test above: without the excuse the base itself is red, confirmed, and the
    failure named is that test; so it is the excuse that keeps the good todos."""
    (setup.state / "red_on_base").write_text("")
    (setup.state / "seed").write_text("0")
    key = command_key(setup.command)
    policy = FlakePolicy(rates={key: RATE}, trials={key: MEASURED_RUNS}, false_blame=0.001)
    result = CheckRunner([setup.command], timeout=30, policy=policy).run(setup.worktree)
    assert result.confirmed == (5, 5)
    assert result.failed_tests == (RED_ON_BASE,)


def test_command_runs_count_every_rerun(setup: Setup) -> None:
    """BatchVerdict.command_runs is every execution of the verify command, re-runs included, while
    runs counts the trees tested."""
    verdict = _verify(setup, 3, ("6",))
    assert verdict.command_runs == _runs(setup)
    assert verdict.command_runs > verdict.runs
