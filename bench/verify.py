"""Verify runs of ``bisect`` against the seed's one-by-one ``incremental``, on the seed's 28-todo plan.

A real repository is generated: check.py imports every module under mods/ and reports every
failure (with a traceback naming the broken file), like a test runner. Each todo is one commit
adding its own module; k of them are broken. Both strategies verify the 7 batches in order, each
batch based on the previous batch's verified head, with retries=0, and must accept the same set.
Verify runs are counted without baselines (shared by both; reported apart, cached per commit).

    python -m bench.verify            # k = 0, 1, 3, and 3 culprits in one batch
    python -m bench.verify --quick    # k = 0, 1 only
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from daemon.config import Strategy
from daemon.service.logs import configure_logging
from daemon.world.checks import CheckRunner
from daemon.world.gitops import add_worktree, head_sha
from daemon.world.verify import Candidate, check_baseline, verify_batch

PLAN: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("1.1", ("273", "274", "275", "276", "284")),
    ("1.2", ("266", "267", "279")),
    ("2.1", ("280", "268", "269", "270", "287")),
    ("3.1", ("277", "278", "234", "235", "260")),
    ("3.2", ("251", "271", "272")),
    ("4.1", ("281", "282", "236", "256", "285")),
    ("4.2", ("283", "286")),
)
ALL_IDS = tuple(i for _, ids in PLAN for i in ids)
AIMS = {0: 3.5, 1: 3.0, 3: 2.0}  # fewer runs than incremental, by k

CHECK_PY = textwrap.dedent(
    """
    import importlib, pathlib, sys, traceback
    sys.path.insert(0, "mods")
    failed = 0
    for path in sorted(pathlib.Path("mods").glob("*.py")):
        try:
            importlib.import_module(path.stem).check()
        except Exception:
            traceback.print_exc()
            failed += 1
    print("failures:", failed)
    sys.exit(1 if failed else 0)
    """
).lstrip()
GOOD = "def check():\n    return {n} * 2 == {double}\n"
BROKEN = "def check():\n    assert {n} * 2 == {double} + 1, 'todo {n} broke its module'\n"


def git(cwd: Path, *args: str, stdin: str | None = None, index: Path | None = None) -> str:
    env = {"GIT_INDEX_FILE": str(index)} if index else {}
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return proc.stdout.strip()


def make_repo(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "bench")
    git(path, "config", "user.email", "bench@example.com")
    (path / ".git" / "info" / "exclude").write_text(".batchd/\n")
    (path / "mods").mkdir()
    (path / "check.py").write_text(CHECK_PY)
    (path / "mods" / "base.py").write_text(GOOD.format(n=1, double=2))
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return head_sha(path)


def make_todo_commit(repo: Path, base: str, todo_id: str, broken: bool) -> Candidate:
    """What an agent leaves: one commit on the batch's base adding mods/mod_<id>.py."""
    rel = f"mods/mod_{todo_id}.py"
    body = (BROKEN if broken else GOOD).format(n=int(todo_id), double=int(todo_id) * 2)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "index"
        git(repo, "read-tree", base, index=index)
        blob = git(repo, "hash-object", "-w", "--stdin", stdin=body)
        git(repo, "update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}", index=index)
        tree = git(repo, "write-tree", index=index)
    sha = git(repo, "commit-tree", tree, "-p", base, "-m", f"todo {todo_id}\n\nBatchd-Todo: {todo_id}")
    return Candidate(todo_id=todo_id, sha=sha, files=(rel,))


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    k: int
    strategy: Strategy
    runs: int
    baselines: int
    wall: float
    accepted: tuple[str, ...]
    rejected: tuple[str, ...]


def run_plan(root: Path, k: int, broken: frozenset[str], strategy: Strategy) -> Row:
    repo = Path(tempfile.mkdtemp(prefix=f"k{k}-{strategy}-", dir=root))
    head = make_repo(repo)
    worktree = add_worktree(repo, repo / ".batchd" / "worktrees" / "verify", "batchd/verify", head)
    runner = CheckRunner([(sys.executable, "-B", "check.py")], timeout=120, retries=0)
    green: set[str] = set()
    runs = baselines = 0
    wall = 0.0
    accepted: list[str] = []
    rejected: list[str] = []
    for _name, ids in PLAN:
        candidates = [make_todo_commit(repo, head, i, i in broken) for i in ids]
        start = time.perf_counter()
        if head not in green:  # a batch head that just passed is the next baseline: no run
            baselines += 1
            if not check_baseline(worktree, head, runner).passed:
                raise SystemExit(f"baseline red at {head}")
            green.add(head)
        verdict = verify_batch(worktree, head, candidates, runner, strategy=strategy)
        wall += time.perf_counter() - start
        runs += verdict.runs
        accepted += verdict.accepted_ids
        rejected += verdict.rejected
        head = verdict.head_sha
        green.add(head)
    return Row(
        k=k,
        strategy=strategy,
        runs=runs,
        baselines=baselines,
        wall=wall,
        accepted=tuple(sorted(accepted)),
        rejected=tuple(sorted(rejected)),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.verify", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="k = 0 and 1 only, random culprits")
    parser.add_argument("--seed", type=int, default=7, help="which todos are broken")
    args = parser.parse_args(argv)
    configure_logging(level="warning", stream=sys.stderr)
    rng = random.Random(args.seed)
    # (k, broken todos, label): random culprits, plus the worst case of three in one batch.
    cases = [(k, frozenset(rng.sample(ALL_IDS, k)), "") for k in ((0, 1) if args.quick else (0, 1, 3))]
    if not args.quick:
        cases.append((3, frozenset({"273", "275", "284"}), " (all 3 in batch 1.1)"))
    print(
        f"{'k':>2}  {'strategy':<12}{'verify runs':>12}{'baselines':>10}{'wall s':>8}{'accepted':>9}  ratio"
    )
    missed = []
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        for k, broken, label in cases:
            rows = [run_plan(Path(tmp), k, broken, s) for s in ("incremental", "bisect")]
            inc, bis = rows
            assert inc.accepted == bis.accepted, (inc.accepted, bis.accepted)
            assert set(inc.rejected) == set(bis.rejected) == broken, (inc.rejected, bis.rejected, broken)
            ratio = inc.runs / bis.runs
            for row in rows:
                note = "" if row is inc else f"{ratio:.2f}x (aim >= {AIMS[k]}x)"
                print(
                    f"{row.k:>2}  {row.strategy:<12}{row.runs:>12}{row.baselines:>10}"
                    f"{row.wall:>8.2f}{len(row.accepted):>9}  {note}"
                )
            if broken:
                print(f"    broken{label}: {', '.join(sorted(broken))}")
            if ratio < AIMS[k]:
                missed.append(k)
    if missed:
        print(f"aim missed for k = {missed}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
