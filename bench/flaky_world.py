"""The world of :mod:`bench.flaky`: a real repository, a real flaky verify command, one batch a trial.

One repository per configuration, reused by all its trials: a base commit holding the verify script,
and for each of the 10 todo slots two commits on the base, a good one and a broken one, each adding
its own file ``todos/tNN.txt`` (``ok`` or ``broken``). A trial picks its culprits (seeded), hands the
10 commits to the real :func:`daemon.world.verify.verify_batch`, and :func:`verify_batch` resets the
verification worktree to the base itself, so a trial costs no git work of its own.

The verify command is ``sh check.sh``, a few shell builtins and nothing else (no process it starts,
so a run costs little more than the fork): one test per todo file, failing on ``broken``, and
``tests/test_clock.py::test_clock_skew``, unrelated to every todo, which fails when the next draw of
the trial's random stream says so. The stream is a file outside the tree, one ``0``/``1`` per run,
written from a seeded RNG before each trial and consumed by the script a character per run: the
flakes are reproducible, and the characters consumed count every execution of the command
(re-runs included), independently of what batchd reports. With ``FLAKY_STYLE=pytest`` the output is
pytest's (session header, failures, short test summary, final counts), so
:mod:`daemon.world.testevidence` names the failing tests; with ``FLAKY_STYLE=quiet`` it names none.

The failures do not name the todos' files (``test_todo[3]``, not ``todos/t03.txt``), so the search
cannot take the shortcut of blaming a named file: it is the plain group testing FACF measured.
"""

from __future__ import annotations

import os
import random
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from daemon.world.checks import CheckRunner, FlakePolicy
from daemon.world.gitops import add_worktree
from daemon.world.verify import Candidate, VerifyRun, verify_batch

TODOS = 10
COMMAND = ("sh", "check.sh")
FLAKY_TEST = "tests/test_clock.py::test_clock_skew"
STREAM_LENGTH = 1000  # draws per trial: far more runs than any search makes (checked after each)

CHECK_SH = r"""# One test per todo file, and test_clock_skew, failing when the next draw is 1.
read draws < "$FLAKY_STREAM"
if [ -z "$draws" ]; then echo "flaky stream exhausted"; exit 3; fi
case $draws in 1*) draw=1;; *) draw=0;; esac
printf '%s\n' "${draws#?}" > "$FLAKY_STREAM"
failed=""
passed=0
nfailed=0
for f in todos/*.txt; do
  read line < "$f"
  n=${f#todos/t}; n=${n%.txt}
  case $line in
    *broken*) failed="$failed tests/test_todos.py::test_todo[$n]"; nfailed=$((nfailed+1));;
    *) passed=$((passed+1));;
  esac
done
if [ "$draw" = 1 ]; then
  failed="$failed tests/test_clock.py::test_clock_skew"; nfailed=$((nfailed+1))
else
  passed=$((passed+1))
fi
if [ "$FLAKY_STYLE" = quiet ]; then
  echo "checked $((passed+nfailed)) things"
  [ "$nfailed" = 0 ] && exit 0
  echo "something is wrong"
  exit 1
fi
echo "============================= test session starts =============================="
echo "collected $((passed+nfailed)) items"
echo
if [ "$nfailed" = 0 ]; then
  echo "============================== $passed passed in 0.01s =============================="
  exit 0
fi
echo "=================================== FAILURES ==================================="
for t in $failed; do
  echo "_________________________________ ${t#*::} _________________________________"
  echo "E   AssertionError: assert False"
done
echo "=========================== short test summary info ============================"
for t in $failed; do echo "FAILED $t - AssertionError: assert False"; done
echo "==================== $nfailed failed, $passed passed in 0.01s ===================="
exit 1
"""


def git(cwd: Path, *args: str, stdin: str | None = None, index: Path | None = None) -> str:
    env = {**os.environ, "GIT_INDEX_FILE": str(index)} if index else None
    proc = subprocess.run(
        ["git", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=True, env=env
    )
    return proc.stdout.strip()


def todo_id(slot: int) -> str:
    return str(slot + 1)


def todo_file(slot: int) -> str:
    return f"todos/t{slot + 1:02d}.txt"


@dataclass(frozen=True, slots=True, kw_only=True)
class World:
    """A configuration's repository: its verify worktree and, per slot, (good, broken) candidates."""

    root: Path
    worktree: Path
    base: str
    commits: tuple[tuple[Candidate, Candidate], ...]
    stream: Path

    def batch(self, culprits: frozenset[int]) -> list[Candidate]:
        return [pair[slot in culprits] for slot, pair in enumerate(self.commits)]


def make_world(root: Path) -> World:
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "bench")
    git(repo, "config", "user.email", "bench@example.com")
    (repo / ".git" / "info" / "exclude").write_text(".batchd/\n")
    (repo / "check.sh").write_text(CHECK_SH)
    (repo / "todos").mkdir()
    (repo / "todos" / "t00.txt").write_text("ok\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "base")
    base = git(repo, "rev-parse", "HEAD")
    commits = tuple(
        (_todo_commit(repo, base, slot, broken=False), _todo_commit(repo, base, slot, broken=True))
        for slot in range(TODOS)
    )
    worktree = add_worktree(repo, repo / ".batchd" / "worktrees" / "verify", "batchd/verify", base)
    return World(root=root, worktree=worktree, base=base, commits=commits, stream=root / "stream")


def _todo_commit(repo: Path, base: str, slot: int, *, broken: bool) -> Candidate:
    """What an agent leaves: one commit on the base adding the slot's own file."""
    rel = todo_file(slot)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        git(repo, "read-tree", base, index=index)
        blob = git(repo, "hash-object", "-w", "--stdin", stdin="broken\n" if broken else "ok\n")
        git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", index=index)
        tree = git(repo, "write-tree", index=index)
    message = f"todo {todo_id(slot)}\n\nBatchd-Todo: {todo_id(slot)}"
    sha = git(repo, "commit-tree", tree, "-p", base, "-m", message)
    return Candidate(todo_id=todo_id(slot), sha=sha, files=(rel,))


def make_runner(policy: FlakePolicy, *, stream: Path, style: str) -> CheckRunner:
    env = {"FLAKY_STREAM": str(stream), "FLAKY_STYLE": style}
    return CheckRunner([COMMAND], timeout=30, env=env, policy=policy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    """One batch: which todos were culprits, what the search decided, and what it cost."""

    seed: int
    culprits: tuple[str, ...]
    rejected: tuple[str, ...]
    accepted: int
    steps: int  # verify_batch's runs: trees tested (each may run the command more than once)
    command_runs: int  # executions of the verify command, re-runs included (counted by the script)

    def as_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            "culprits": list(self.culprits),
            "rejected": list(self.rejected),
            "accepted": self.accepted,
            "steps": self.steps,
            "command_runs": self.command_runs,
        }


def run_trial(
    world: World,
    runner: CheckRunner,
    *,
    seed: int,
    stream_seed: int,
    culprits: frozenset[int],
    flake_rate: float,
    on_run: Callable[[VerifyRun], None],
) -> Trial:
    """Trial ``seed``: one batch of 10 through the real search, the flaky test drawing from the
    stream of ``stream_seed``."""
    draws = random.Random(stream_seed)
    stream = "".join("1" if draws.random() < flake_rate else "0" for _ in range(STREAM_LENGTH))
    world.stream.write_text(stream + "\n")
    reported = 0

    def counted(run: VerifyRun) -> None:
        nonlocal reported
        reported += sum(t.runs for t in run.result.tries)
        on_run(run)

    verdict = verify_batch(world.worktree, world.base, world.batch(culprits), runner, on_run=counted)
    left = len(world.stream.read_text().strip())
    executed = STREAM_LENGTH - left
    if left == 0:
        raise RuntimeError(f"trial {seed}: the flaky stream ran out; raise STREAM_LENGTH")
    # The runner reports every execution, per verify run (CommandRuns) and per batch: the same count.
    if not reported == verdict.command_runs == executed:
        raise RuntimeError(
            f"trial {seed}: the script ran {executed} times, CommandRuns add up to {reported}, "
            f"BatchVerdict.command_runs says {verdict.command_runs}"
        )
    return Trial(
        seed=seed,
        culprits=tuple(sorted((todo_id(s) for s in culprits), key=int)),
        rejected=tuple(sorted(verdict.rejected, key=int)),
        accepted=len(verdict.accepted),
        steps=verdict.runs,
        command_runs=executed,
    )
