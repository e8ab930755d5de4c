"""``python -m bench.workspace``: what an agent attempt's own repository, collection and sandbox cost.

Per agent attempt, on a generated repository of realistic size (by default 2,000 files in 100
folders, four commits, packed as a clone is), against a baseline measured in the same run:

1. a workspace: ``git worktree add -B`` + removal (the old way, :func:`daemon.world.gitops.add_worktree`
   and ``remove_worktree``) against :func:`daemon.world.agentspace.create` + ``remove`` (a repository of
   its own whose objects are borrowed through ``objects/info/alternates``);
2. collecting a small change (3 files edited, 2 added, left uncommitted): the old way in a worktree
   (``read-tree`` of the base into a throwaway ``GIT_INDEX_FILE``, ``add --all``, ``write-tree``,
   ``commit-tree``) against :func:`daemon.world.collect.collect` on a workspace; both make the same tree;
3. starting a trivial agent (``/bin/true``): a bare ``subprocess.run`` (the baseline), ``run_agent``
   without a sandbox, and ``start_agent`` with the exit-record shim + poll + ``finish``, without and
   with bubblewrap (the bubblewrap rows are skipped where it cannot run);
4. a verify command (``python -c pass``) through ``CheckRunner`` without and with the sandbox;
5. with ``--deps``: a workspace's installed dependencies (``node_modules`` of 20,000 files, a
   ``.venv``), copied against linked, in time and disk per workspace (see :mod:`bench.deps`).

A repetition is one attempt made both ways: a worktree and a workspace are created, the same change
is made in each and collected, both are removed; then the processes of 3 and 4 are started. The
variants of each step run back to back, in an order that rotates from one repetition to the next,
so they share the machine's noise. Each row prints the median seconds
over the repetitions and ``x base``: the median of its per-repetition ratios to the section's
baseline. There are no absolute aims (machines are shared and noisy).

    python -m bench.workspace            # 2,000 files in 100 folders, 15 repetitions
    python -m bench.workspace --quick    # 400 files in 20 folders, 5 repetitions
    python -m bench.workspace --deps     # and section 5 (--node-files, --venv-files for its size)
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.deps import ROWS as DEPS_ROWS
from bench.deps import DepsBench
from daemon.service.logs import configure_logging
from daemon.world import agentproc, agentresult, agentspace, sandbox
from daemon.world.checks import CheckRunner
from daemon.world.collect import Policy, collect
from daemon.world.gitops import add_worktree, head_sha, remove_worktree

TODO = "todos/7-ready-p2-bench.md"
TODO_TEXT = b"---\nstatus: ready\npriority: p2\n---\n\n# Bench 7\n\nEdit three files, add two.\n"
PROTECTED = {
    "batchd.toml": "batchd's configuration",
    "todos/": "the todos folder",
    "plans/EXECUTION-STATUS.md": "the status file",
    ".batchd/": "batchd's own folder",
}
POLL = 0.001  # seconds between polls of a started agent: fine enough that the process cost shows
TRUE = "/bin/true"

# --- the repository --------------------------------------------------------------------------------


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    )
    return proc.stdout.strip()


def module_text(rng: random.Random, n: int) -> str:
    """A plausible source file of 20 to 120 lines (about 0.5 to 4 KB)."""
    lines = [f'"""Module {n}: generated for the workspace benchmark."""', "", "import math", ""]
    for i in range(rng.randint(4, 24)):
        lines += [
            f"def f_{n}_{i}(x: float, y: float = {rng.randint(1, 99)}) -> float:",
            f"    total = math.sqrt(abs(x * {rng.randint(2, 999)} - y)) + {rng.random():.6f}",
            f"    return total / {rng.randint(1, 50)}",
            "",
        ]
    return "\n".join(lines) + "\n"


def make_repo(path: Path, files: int, folders: int, commits: int, seed: int) -> tuple[str, list[str]]:
    """A repository of ``files`` source files in ``folders`` leaf folders, ``commits`` commits, packed."""
    rng = random.Random(seed)
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "bench")
    git(path, "config", "user.email", "bench@example.com")
    (path / ".git" / "info" / "exclude").write_text(".batchd/\n")
    names = [f"src/g{n % folders // 10:02d}/f{n % folders:03d}/mod_{n:05d}.py" for n in range(files)]
    for n, rel in enumerate(names):
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(module_text(rng, n))
    (path / "todos").mkdir()
    (path / TODO).write_bytes(TODO_TEXT)
    (path / "batchd.toml").write_text('[verify]\ncommands = [["python", "-c", "pass"]]\n')
    (path / ".gitignore").write_text("*.log\n__pycache__/\nbuild/\n")
    (path / "README.md").write_text("# bench\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    for c in range(1, commits):
        for rel in rng.sample(names, max(1, files // 20)):  # 5% of the files change per commit
            with (path / rel).open("a") as f:
                f.write(f"\nCHANGED_IN_{c} = {rng.randint(0, 10**6)}\n")
        git(path, "commit", "-q", "-a", "-m", f"change {c}")
    git(path, "gc", "--quiet")
    return head_sha(path), names


def agent_change(where: Path, names: list[str], rep: int) -> set[str]:
    """What a small agent attempt leaves: 3 files edited and 2 added (one in a new folder)."""
    edited = [names[7 % len(names)], names[len(names) // 2], names[-5]]
    for rel in edited:
        with (where / rel).open("a") as f:
            f.write(f"\nEDITED_BY_AGENT = {rep}\n")
    added = [str(Path(names[11 % len(names)]).parent / f"added_{rep}.py"), f"src/new_{rep}/feature.py"]
    for rel in added:
        (where / rel).parent.mkdir(parents=True, exist_ok=True)
        (where / rel).write_text(f"def feature() -> int:\n    return {rep}\n")
    return {*edited, *added}


def old_collect(worktree: Path, base: str, message: str) -> str:
    """The old collection, in a worktree: everything into a throwaway index, one commit; its tree."""
    with tempfile.TemporaryDirectory(prefix="bench-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        git(worktree, "read-tree", base, env=env)
        git(worktree, "add", "--all", env=env)
        tree = git(worktree, "write-tree", env=env)
        git(worktree, "commit-tree", tree, "-p", base, "-m", message, env=env)
    return tree


# --- measuring -------------------------------------------------------------------------------------

Variant = Callable[[], dict[str, float]]  # runs once; seconds per key (one variant may time two parts)


@dataclass(slots=True)
class Times:
    by_key: dict[str, list[float]] = field(default_factory=dict)

    def median(self, key: str) -> float:
        return statistics.median(self.by_key[key])

    def ratio(self, key: str, base: str) -> float:
        return statistics.median(a / b for a, b in zip(self.by_key[key], self.by_key[base], strict=True))

    def record(self, seconds: dict[str, float]) -> None:
        for key, value in seconds.items():
            self.by_key.setdefault(key, []).append(value)


def interleaved(variants: list[Variant], rep: int) -> dict[str, float]:
    """All ``variants`` once, back to back, starting at a rotating offset so none is always first."""
    k = rep % len(variants)
    seconds: dict[str, float] = {}
    for variant in variants[k:] + variants[:k]:
        seconds.update(variant())
    return seconds


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass(slots=True)
class Bench:
    repo: Path
    base: str
    names: list[str]
    bwrap: sandbox.Sandbox | None
    times: Times = field(default_factory=Times)

    @property
    def state(self) -> Path:
        return self.repo / ".batchd"

    # 1-2. an attempt's workspace: made, its change collected, removed (each step interleaved)

    def attempt(self, rep: int) -> dict[str, float]:
        wt = self.state / "worktrees" / "todo-7"
        ws = self.state / "workspaces" / "todo-7"
        branch = f"batchd/todo-7-a{rep}"
        seconds = interleaved(
            [
                lambda: {"wt.add": timed(lambda: add_worktree(self.repo, wt, "batchd/todo-7-wt", self.base))},
                lambda: {
                    "ws.add": timed(
                        lambda: agentspace.create(self.repo, ws, branch=branch, base_sha=self.base, files={})
                    )
                },
            ],
            rep,
        )
        expected = agent_change(wt, self.names, rep)
        assert agent_change(ws, self.names, rep) == expected
        trees: dict[str, str] = {}
        policy = Policy(protected=PROTECTED, own_todo=TODO, own_todo_text=TODO_TEXT, todos_dir="todos")

        def old() -> None:
            trees["old"] = old_collect(wt, self.base, "batchd: todo 7")

        def new() -> None:
            change = collect(
                self.repo, ws, self.base, message="batchd: todo 7", trailers={"Batchd-Todo": "7"},
                branch=branch, policy=policy,
            ).change  # fmt: skip
            assert change is not None and set(change.files) == expected, change
            trees["new"] = change.sha

        seconds |= interleaved(
            [lambda: {"collect.old": timed(old)}, lambda: {"collect.new": timed(new)}], rep
        )
        # The same change makes the same tree, either way.
        assert trees["old"] == git(self.repo, "rev-parse", f"{trees['new']}^{{tree}}"), trees
        seconds |= interleaved(
            [
                lambda: {"wt.rm": timed(lambda: remove_worktree(self.repo, wt))},
                lambda: {"ws.rm": timed(lambda: agentspace.remove(ws))},
            ],
            rep,
        )
        seconds["wt"] = seconds["wt.add"] + seconds["wt.rm"]
        seconds["ws"] = seconds["ws.add"] + seconds["ws.rm"]
        return seconds

    # 3. starting a trivial agent, 4. a verify command

    def process_variants(self, ws: Path) -> list[Variant]:
        logs, exits = self.state / "logs", self.state / "exits"
        exits.mkdir(parents=True, exist_ok=True)  # as the executor does: the shim does not make it
        env = dict(os.environ)
        unconfined = sandbox.Sandbox(kind="none")

        def bare() -> dict[str, float]:
            return {"agent.bare": timed(lambda: subprocess.run([TRUE], check=True))}

        def run_agent(key: str) -> Variant:
            def variant() -> dict[str, float]:
                def run() -> None:
                    outcome = agentresult.run_agent(
                        [TRUE], cwd=ws, log_path=logs / f"{key}.log", env=env, timeout=60, poll_interval=POLL
                    )
                    assert outcome.ok, outcome

                return {key: timed(run)}

            return variant

        def shim(key: str, box: sandbox.Sandbox) -> Variant:
            def variant() -> dict[str, float]:
                def run() -> None:
                    proc = agentproc.start_agent(
                        [TRUE], cwd=ws, log_path=logs / f"{key}.log", env=env, sandbox=box,
                        exit_path=exits / f"{key}.json", readable=[self.repo],
                    )  # fmt: skip
                    while proc.poll() is None:
                        time.sleep(POLL)
                    outcome = agentresult.finish(proc)
                    assert outcome.ok and proc.exit_record() is not None, outcome

                return {key: timed(run)}

            return variant

        def check(key: str, box: sandbox.Sandbox) -> Variant:
            runner = CheckRunner(
                [(sys.executable, "-c", "pass")], timeout=60, sandbox=box, readable=[self.repo]
            )

            def variant() -> dict[str, float]:
                def run() -> None:
                    result = runner.run(ws)
                    assert result.passed, result

                return {key: timed(run)}

            return variant

        def python_bare() -> dict[str, float]:
            return {"check.bare": timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True))}

        variants = [
            bare,
            run_agent("agent.run"),
            shim("agent.shim", unconfined),
            python_bare,
            check("check.none", unconfined),
        ]
        if self.bwrap is not None:
            box = self.bwrap

            def bare_bwrap() -> dict[str, float]:
                argv = box.wrap([TRUE], workspace=ws, readable=[self.repo])
                return {"agent.bwrap": timed(lambda: subprocess.run(argv, cwd=ws, check=True))}

            variants += [bare_bwrap, shim("agent.shim_bwrap", box), check("check.bwrap", box)]
        return variants

    def repetition(self, rep: int, ws: Path, *, record: bool, deps: DepsBench | None = None) -> None:
        seconds = self.attempt(rep) | interleaved(self.process_variants(ws), rep)
        if deps is not None:
            seconds |= interleaved(deps.variants(), rep)
        if record:
            self.times.record(seconds)


# --- reporting -------------------------------------------------------------------------------------

# (title, rows of (label, key, the baseline's key, whether the row needs bubblewrap))
SECTIONS: tuple[tuple[str, tuple[tuple[str, str, str, bool], ...]], ...] = (
    (
        "1. a workspace per attempt",
        (
            ("git worktree add -B + remove (baseline)", "wt", "wt", False),
            ("    add", "wt.add", "wt.add", False),
            ("    remove", "wt.rm", "wt.rm", False),
            ("agentspace.create + remove", "ws", "wt", False),
            ("    create", "ws.add", "wt.add", False),
            ("    remove", "ws.rm", "wt.rm", False),
        ),
    ),
    (
        "2. collecting 3 edited + 2 added files",
        (
            ("worktree: add --all to an index + commit-tree (baseline)", "collect.old", "collect.old", False),
            ("collect.collect from the workspace", "collect.new", "collect.old", False),
        ),
    ),
    (
        f"3. starting a trivial agent ({TRUE})",
        (
            ("subprocess.run (baseline)", "agent.bare", "agent.bare", False),
            ("run_agent, no sandbox, 1 ms poll", "agent.run", "agent.bare", False),
            ("start_agent + exit-record shim, no sandbox", "agent.shim", "agent.bare", False),
            ("subprocess.run in bwrap (reference)", "agent.bwrap", "agent.bare", True),
            ("start_agent + shim + bwrap, poll, finish", "agent.shim_bwrap", "agent.bare", True),
        ),
    ),
    (
        "4. a verify command (python -c pass)",
        (
            ("subprocess.run (reference)", "check.bare", "check.none", False),
            ("CheckRunner, no sandbox (baseline)", "check.none", "check.none", False),
            ("CheckRunner in bwrap", "check.bwrap", "check.none", True),
        ),
    ),
)


def report(times: Times, bwrap_note: str) -> None:
    width = 60
    print(f"{'':<{width}}{'median s':>10}{'x base':>9}")
    for title, rows in SECTIONS:
        print(title)
        skipped = False
        for label, key, base, needs_bwrap in rows:
            if key not in times.by_key:
                skipped = skipped or needs_bwrap
                continue
            print(f"  {label:<{width - 2}}{times.median(key):>10.4f}{times.ratio(key, base):>8.2f}x")
        if skipped:
            print(f"  (bubblewrap rows skipped: {bwrap_note})")
    summary = [
        ("agentspace / worktree", "ws", "wt"),
        ("collect / old collection", "collect.new", "collect.old"),
        ("shim + bwrap agent / run_agent (1 ms poll)", "agent.shim_bwrap", "agent.run"),
        ("CheckRunner in bwrap / without", "check.bwrap", "check.none"),
    ]
    parts = [f"{name} {times.ratio(a, b):.2f}x" for name, a, b in summary if a in times.by_key]
    print("new / baseline: " + "; ".join(parts))


def report_deps(times: Times, disk: dict[str, int], sizes: str) -> None:
    """Section 5: seconds to make + remove per workspace (or per verify run), and the disk it takes."""
    width = 60
    print(f"{'':<{width}}{'median s':>10}{'x base':>9}{'disk KiB':>10}")
    print(f"5. a workspace's installed dependencies ({sizes})")
    for label, key, base in DEPS_ROWS:
        shown = f"{disk[key] / 1024:>10.0f}" if key in disk else ""
        print(f"  {label:<{width - 2}}{times.median(key):>10.4f}{times.ratio(key, base):>8.2f}x{shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workspace",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="400 files in 20 folders, 5 repetitions")
    parser.add_argument("--files", type=int, help="source files in the repository (default 2,000; 400 quick)")
    parser.add_argument("--folders", type=int, help="folders they are spread over (default 100; 20 quick)")
    parser.add_argument("--reps", type=int, help="measured repetitions (default 15; 5 quick)")
    parser.add_argument("--seed", type=int, default=7, help="what the generated files hold")
    parser.add_argument("--deps", action="store_true", help="also section 5: node_modules and .venv reuse")
    parser.add_argument("--node-files", type=int, default=20_000, help="files in node_modules (--deps)")
    parser.add_argument("--venv-files", type=int, default=5_000, help="files in .venv's site-packages")
    args = parser.parse_args(argv)
    configure_logging(level="warning", stream=sys.stderr)
    files = args.files or (400 if args.quick else 2000)
    folders = args.folders or (20 if args.quick else 100)
    reps = args.reps or (5 if args.quick else 15)
    probe = sandbox.resolve("auto", [], key="x")
    bwrap = sandbox.resolve("bwrap", [], key="x") if probe.active else None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="batchd-bench-workspace-") as tmp:
        repo = Path(tmp) / "repo"
        base, names = make_repo(repo, files, folders, commits=4, seed=args.seed)
        made = time.perf_counter() - started
        bench = Bench(repo=repo, base=base, names=names, bwrap=bwrap)
        ws = agentspace.create(repo, bench.state / "workspaces" / "agent", branch="batchd/agent",
                               base_sha=base, files={})  # fmt: skip
        deps = None
        if args.deps:
            deps = DepsBench.make(
                repo, base, node_files=args.node_files, venv_files=args.venv_files, seed=args.seed
            )
        for rep in range(reps + 1):  # the first repetition warms caches and is not recorded
            bench.repetition(rep, ws, record=rep > 0, deps=deps)
        count = len(git(repo, "ls-files").splitlines())
    print(
        f"repository: {count:,} files in {folders} folders, 4 commits, packed (made in {made:.1f} s); "
        f"{reps} repetitions after 1 warm-up; {git(Path.cwd(), 'version')}; "
        f"sandbox: {probe.note}"
    )
    report(bench.times, probe.note)
    if deps is not None:
        report_deps(bench.times, deps.disk, f"{args.node_files:,} + {args.venv_files:,} files")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
