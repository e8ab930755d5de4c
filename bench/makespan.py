"""Makespan of ``schedule = "barrier"`` against ``"continuous"``, on the seed's 28-todo plan.

A real repository per run: the seed's plan (5 phases, 7 batches, the demo's PLAN.md), one todo file
per todo whose scripted agent (``python -m daemon.demo.agent``, a real process) sleeps for a
lognormal time (median 1 s, sigma 0.8, from a fixed seed: the same times in both modes) and writes
its own file; a real verify command of about 0.3 s; ``max_parallel = 5``; no remote. Both modes run
in the same process, one after the other, per seed.

Printed per seed: the makespan of each (run started -> run completed, from the log), their ratio,
the verify runs, agent-slot utilisation (busy slot-seconds / (slots x makespan)), and whether both
ended with the same accepted set and the same phase commits in the same order.

``--throughput N`` measures orchestration instead: N todos with instant agents and no plan, the
seconds of makespan per todo in each mode.

    python -m bench.makespan                  # 5 seeds (about 4 minutes)
    python -m bench.makespan --quick          # 1 seed, agents 10x faster
    python -m bench.makespan --throughput 150
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from daemon.demo.project import render_plan
from daemon.demo.scenario import PHASES
from daemon.workspace import open_log

SLOTS = 5
AIM_RATIO = 1.8
AIM_UTILISATION = 0.80
AIM_PER_TODO = 0.15  # seconds of orchestration per todo (throughput mode)
CHECK_PY = "import time\ntime.sleep({pause})\nprint('ok')\n"
IDENTITY = (("user.name", "Bench"), ("user.email", "bench@example.com"), ("commit.gpgsign", "false"))


@dataclass(frozen=True, slots=True)
class Result:
    mode: str
    makespan: float
    verify_runs: int
    busy: float  # agent slot-seconds
    accepted: frozenset[str]
    commits: tuple[str, ...]

    @property
    def utilisation(self) -> float:
        return self.busy / (SLOTS * self.makespan) if self.makespan else 0.0


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def todo_text(todo_id: str, seconds: float) -> str:
    script = f"sleep: {seconds:.3f}\nwrite: [{{path: work/{todo_id}.txt, content: 'todo {todo_id}'}}]"
    return f"# Todo {todo_id}\n\nDo the work of {todo_id}.\n\n```batchd-agent\n{script}\n```\n"


def build(
    folder: Path, *, mode: str, times: dict[str, float], plan: bool, pause: float, slots: int = SLOTS
) -> Path:
    root = folder / f"repo-{mode}"
    (root / "todos").mkdir(parents=True)
    (root / "plans").mkdir()
    (root / "work").mkdir()
    (root / "work" / ".gitkeep").write_text("")
    (root / "check.py").write_text(CHECK_PY.format(pause=pause))
    if plan:
        (root / "plans" / "PLAN.md").write_text(render_plan())
    for todo_id, seconds in times.items():
        (root / "todos" / f"{todo_id}-ready-p2-todo-{todo_id}.md").write_text(todo_text(todo_id, seconds))
    agent = [sys.executable, "-m", "daemon.demo.agent", "{todo_path}"]
    (root / "batchd.toml").write_text(
        "[batchd]\n"
        + ('plan = "plans/PLAN.md"\n' if plan else "")
        + f'remote = ""\nmax_parallel = {slots}\nmax_attempts = 2\nschedule = "{mode}"\n'
        + "rescan_interval = 600\n\n[agent]\n"
        + f"command = {json.dumps(agent)}\ntimeout = 120\n"
        + 'env = { BATCHD_DEMO_SPEED = "1" }\n\n[verify]\n'
        + f"commands = [{json.dumps([sys.executable, '-B', 'check.py'])}]\nretries = 0\n"
    )
    git(root, "init", "-q", "-b", "main")
    for key, value in IDENTITY:
        git(root, "config", key, value)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bench: initial")
    return root


def stamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def run(root: Path, mode: str) -> Result:
    base = git(root, "rev-parse", "HEAD").strip()
    argv = [sys.executable, "-m", "daemon", "run", "--once", "--log-json", "-C", str(root)]
    with (root.parent / f"{root.name}.log").open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=1800)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{mode}: batchd run --once exited {done.returncode}; see {out.name}")
    log = open_log(root)
    try:
        events = list(log.read(since=0))
    finally:
        log.close()
    first = next(stamp(e.recorded_at) for e in events if e.type == "run.started")
    last = next(stamp(e.recorded_at) for e in reversed(events) if e.type == "run.completed")
    started: dict[str, float] = {}
    busy = 0.0
    for e in events:
        if e.type == "todo.agent_started":
            started[e.stream] = stamp(e.recorded_at)
        elif e.type in ("todo.agent_finished", "todo.agent_failed", "todo.agent_interrupted"):
            busy += stamp(e.recorded_at) - started.pop(e.stream, stamp(e.recorded_at))
    runs = sum(1 for e in events if e.type == "batch.verify_run" and not e.payload.get("baseline"))
    accepted = frozenset(str(e.payload["todo_id"]) for e in events if e.type == "todo.accepted")
    commits = tuple(git(root, "log", "--reverse", "--format=%s", f"{base}..main").splitlines())
    return Result(mode, last - first, runs, busy, accepted, commits)


def seed_times(seed: int, ids: list[str], *, median: float, sigma: float) -> dict[str, float]:
    rng = random.Random(seed)
    return {todo_id: rng.lognormvariate(0.0, sigma) * median for todo_id in ids}


def compare(seed: int, median: float, pause: float) -> tuple[Result, Result]:
    ids = [t for phase in PHASES for batch in phase.batches for t in batch.todos]
    times = seed_times(seed, ids, median=median, sigma=0.8)
    with tempfile.TemporaryDirectory(prefix="batchd-makespan-") as tmp:
        results = [
            run(build(Path(tmp), mode=mode, times=times, plan=True, pause=pause), mode)
            for mode in ("barrier", "continuous")
        ]
    return results[0], results[1]


def throughput(count: int) -> int:
    print(f"{count} todos, instant agents, no plan, {SLOTS} slots:")
    ids = [str(1000 + i) for i in range(count)]
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="batchd-throughput-") as tmp:
        for mode in ("barrier", "continuous"):
            folder = Path(tmp) / mode
            folder.mkdir()
            root = build(folder, mode=mode, times=dict.fromkeys(ids, 0.0), plan=False, pause=0.0)
            began = time.monotonic()
            result = run(root, mode)
            wall = time.monotonic() - began
            per_todo = result.makespan / count
            worst = max(worst, per_todo)
            print(
                f"  {mode:<10} makespan {result.makespan:6.1f} s ({wall:.1f} s with start-up), "
                f"{per_todo:.3f} s per todo, {result.verify_runs} verify runs, "
                f"{len(result.accepted)}/{count} accepted"
            )
    print(f"  aim: <= {AIM_PER_TODO} s per todo: {'met' if worst <= AIM_PER_TODO else 'NOT met'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.makespan", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="how many seeds (default 5)")
    parser.add_argument("--quick", action="store_true", help="one seed, agents and verify 10x faster")
    parser.add_argument("--throughput", type=int, metavar="N", help="orchestration per todo over N todos")
    args = parser.parse_args(argv)
    if args.throughput:
        return throughput(args.throughput)
    seeds = 1 if args.quick else args.seeds
    median, pause = (0.1, 0.03) if args.quick else (1.0, 0.3)
    print(f"seed's plan, 28 todos, {SLOTS} slots, agents lognormal(median {median} s, sigma 0.8)", end="")
    print(f", verify {pause} s")
    print(f"{'seed':>4} {'barrier':>9} {'continuous':>11} {'ratio':>6}", end="")
    print("  verify runs  utilisation  same result")
    ratios: list[float] = []
    utilisations: list[float] = []
    same_everywhere = True
    for seed in range(1, seeds + 1):
        barrier, continuous = compare(seed, median, pause)
        ratio = barrier.makespan / continuous.makespan
        same = barrier.accepted == continuous.accepted and barrier.commits == continuous.commits
        same_everywhere &= same
        ratios.append(ratio)
        utilisations.append(continuous.utilisation)
        print(
            f"{seed:>4} {barrier.makespan:8.1f}s {continuous.makespan:10.1f}s {ratio:5.2f}x"
            f"  {barrier.verify_runs:>4} / {continuous.verify_runs:<4}"
            f"  {barrier.utilisation:4.0%} / {continuous.utilisation:4.0%}"
            f"  {'yes' if same else 'NO'}"
            f" ({len(continuous.accepted)} accepted, {len(continuous.commits)} commits)"
        )
    ratio, util = statistics.median(ratios), statistics.median(utilisations)
    print(f"median ratio {ratio:.2f}x (aim >= {AIM_RATIO}x), continuous utilisation {util:.0%} (aim >= 80%)")
    return 0 if same_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
