"""Agent time paid for nothing: today's way (redo, fresh repairs) against the new one, on the seed's plan.

A real repository per run, as :mod:`bench.makespan` builds it: the seed's plan (5 phases, 7 batches,
the demo's PLAN.md), one todo file per todo, ``max_parallel = 5``, no remote, and a real verify
command (``check.py``: every module imports and every ``t<id>()`` returns its id). The agent is a
real process, ``bench/economy_agent.py``: each todo takes a lognormal number of agent-minutes
(median 12, sigma 0.5, from a fixed seed: the same in both ways), slept at 1 agent-minute = 0.02 s,
and appends a function to its file. Six todos (three in batch 3.1, three in 4.1) each append to the
same two files, ``scheduling/availability.py`` and ``scheduling/pricing.py``, so they collide; two
(269 and 282, as in the seed's scenario) break the tests on their first attempt and fix them on the
next. An attempt that finds its change carried into its workspace (a repair, or a resolve with the
conflict markers) only fixes it or keeps both sides, in 20% of its minutes; a redo pays them all.

Each seed runs both ways side by side (two repositories, two daemons):

- **redo** (today): ``[verify] conflicts = "redo"``, ``[agent] resume = false``;
- **new**: ``[verify] conflicts = "merge"``, ``[agent] resume = true`` (the stand-in continues its
  session through ``resume_command``).

Each attempt is classed from the projection: useful (accepted, or its change carried into the next
attempt), failed (agent error; rejected, and the next attempt starts afresh) or wasted (lost a
conflict and redone, interrupted, discarded unjudged). Its agent-minutes are what the agent reports
(its JSON result's ``duration_ms``, the minutes it simulated): batchd's own measure (the process
from start to exit) holds the interpreter's start-up, a few hundredths of a second that at this
scale are minutes of their own and grow with the machine's load; the waste ratio from batchd's
durations is printed beside (``measured``), and is used for an attempt whose agent printed no result.

Printed per way and seed: agent-minutes useful / failed / wasted, the waste ratio (wasted / useful),
the agent runs and the todos accepted; then the ratio of wasted time (redo / new) and whether the
aims hold: waste ratio <= 5% with the new way, and at least 3x less wasted agent time than redo.

    python -m bench.economy             # 3 seeds (about 2 minutes on 2 cores)
    python -m bench.economy --quick     # 1 seed, batches 2.1, 3.1 and 4.1 only (15 todos)
    python -m bench.economy --json      # the same numbers as one JSON object
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.economy_agent import RESUMED_SHARE
from bench.makespan import IDENTITY, SLOTS, git, seed_times
from bench.makespan import run as run_batchd
from daemon.demo.project import render_plan
from daemon.demo.scenario import PHASES
from daemon.workspace import open_log
from statemachine.economy import run_economy
from statemachine.projection import Projection, replay

SECONDS_PER_MINUTE = 0.02  # real seconds an agent sleeps per agent-minute
SHARED_FILES = ("scheduling/availability.py", "scheduling/pricing.py")
SHARED = ("277", "278", "234", "281", "236", "256")  # batches 3.1 and 4.1: three of each batch collide
BREAKS = ("269", "282")  # the seed scenario's rejected todos: first attempt breaks, the repair fixes
MEDIAN = 12.0  # agent-minutes of a todo
QUICK_BATCHES = ("2.1", "3.1", "4.1")  # --quick: the batches that hold the colliding and breaking todos
AIM_WASTE_RATIO = 0.05
AIM_LESS_WASTED = 3.0
AGENT = Path(__file__).with_name("economy_agent.py")
CHECK_PY = '''"""Every module imports, and every t<id>() returns its id."""
import importlib.util
import pathlib
import re
import sys

bad = []
paths = sorted(pathlib.Path("scheduling").glob("*.py")) + sorted(pathlib.Path("work").glob("*.py"))
for n, path in enumerate(paths):
    spec = importlib.util.spec_from_file_location(f"m{n}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        bad.append(f"{path}: {e!r}")
        continue
    for name, value in sorted(vars(module).items()):
        match = re.fullmatch(r"t(\\d+)", name)
        if match is None:
            continue
        try:
            got = value()
        except Exception as e:
            got = repr(e)
        if got != match.group(1):
            bad.append(f"{path}: {name}() gave {got!r}")
print("\\n".join(bad) or "ok")
sys.exit(1 if bad else 0)
'''


@dataclass(frozen=True, slots=True)
class Way:
    name: str
    conflicts: str
    resume: bool

    @property
    def label(self) -> str:
        return f'conflicts = "{self.conflicts}", resume = {str(self.resume).lower()}'


WAYS = (Way("redo", "redo", False), Way("new", "merge", True))


KINDS = ("useful", "failed", "wasted")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One way's run on one seed. ``minutes``: agent-minutes by class, as the agents report them;
    ``measured``: the same from batchd's durations (start-up included)."""

    way: str
    seed: int
    minutes: dict[str, float]
    measured: dict[str, float]
    attempts: dict[str, int]  # class -> attempts of it
    reported: float  # agent-minutes all agents of the run reported, classed or not
    agent_runs: int
    accepted: int
    not_accepted: tuple[str, ...]

    @property
    def useful(self) -> float:
        return self.minutes["useful"]

    @property
    def wasted(self) -> float:
        return self.minutes["wasted"]

    @property
    def waste_ratio(self) -> float | None:
        return ratio(self.minutes)

    def as_json(self) -> dict[str, object]:
        return {
            "seed": self.seed,
            **{f"{kind}_minutes": round(self.minutes[kind], 2) for kind in KINDS},
            "waste_ratio": rounded(self.waste_ratio),
            "reported_minutes": round(self.reported, 2),
            "attempts": dict(self.attempts),
            "measured": {
                **{f"{kind}_minutes": round(self.measured[kind], 2) for kind in KINDS},
                "waste_ratio": rounded(ratio(self.measured)),
            },
            "agent_runs": self.agent_runs,
            "accepted": self.accepted,
            "not_accepted": list(self.not_accepted),
        }


def ratio(minutes: dict[str, float]) -> float | None:
    """wasted / useful (None: nothing useful)."""
    return minutes["wasted"] / minutes["useful"] if minutes["useful"] > 0 else None


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def total(way: str, outcomes: list[Outcome]) -> Outcome:
    """The outcomes of one way added up over the seeds (seed 0)."""
    return Outcome(
        way,
        0,
        {kind: sum(o.minutes[kind] for o in outcomes) for kind in KINDS},
        {kind: sum(o.measured[kind] for o in outcomes) for kind in KINDS},
        {kind: sum(o.attempts[kind] for o in outcomes) for kind in KINDS},
        sum(o.reported for o in outcomes),
        sum(o.agent_runs for o in outcomes),
        sum(o.accepted for o in outcomes),
        tuple(t for o in outcomes for t in o.not_accepted),
    )


# --- the accounting --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Classed:
    """One attempt as the accounting classes it: useful, failed or wasted, with batchd's seconds."""

    todo_id: str
    attempt: int
    kind: str
    seconds: float


def _classed(proj: Projection) -> list[Classed]:
    """Every attempt of every todo, classed by :func:`statemachine.economy.run_economy` (the one
    definition that status, the status file and this benchmark share)."""
    return [
        Classed(e.todo_id, a.attempt, a.kind, a.minutes * 60)
        for e in run_economy(proj).todos.values()
        for a in e.attempts
    ]


# --- a run -----------------------------------------------------------------------------------------


def todo_text(todo_id: str, minutes: float) -> str:
    files = list(SHARED_FILES) if todo_id in SHARED else [f"work/{todo_id}.py"]
    script = json.dumps(
        {"id": todo_id, "minutes": round(minutes, 2), "files": files, "breaks": todo_id in BREAKS}
    )
    return f"# Todo {todo_id}\n\nDo the work of {todo_id}.\n\n```bench-economy\n{script}\n```\n"


def config_text(way: Way, plan_name: str) -> str:
    agent = [sys.executable, str(AGENT), "{todo_path}"]
    resume = [sys.executable, str(AGENT), "--session", "{session_id}", "{todo_path}"]
    check = [sys.executable, "-B", "check.py"]
    return (
        f'[batchd]\nplan = "plans/{plan_name}"\nremote = ""\nmax_parallel = {SLOTS}\nmax_attempts = 2\n'
        "rescan_interval = 600\n\n"
        f"[agent]\ncommand = {json.dumps(agent)}\nresume = {str(way.resume).lower()}\n"
        f"resume_command = {json.dumps(resume)}\ntimeout = 120\n"
        f'env = {{ BENCH_SECONDS_PER_MINUTE = "{SECONDS_PER_MINUTE}" }}\n\n'
        f'[verify]\ncommands = [{json.dumps(check)}]\nretries = 0\nconflicts = "{way.conflicts}"\n'
    )


def build(folder: Path, way: Way, minutes: dict[str, float], plan: str) -> Path:
    root = folder / f"repo-{way.name}"
    for sub in ("todos", "plans", "work", "scheduling"):
        (root / sub).mkdir(parents=True)
    (root / "work" / ".gitkeep").write_text("")
    for name in SHARED_FILES:
        (root / name).write_text(f'"""{Path(name).stem}: each todo appends its function."""\n')
    (root / "check.py").write_text(CHECK_PY)
    plan_name = "PLAN.md" if plan.startswith("#") else "plan.toml"  # the suffix says which form
    (root / "plans" / plan_name).write_text(plan)
    for todo_id, todo_minutes in minutes.items():
        (root / "todos" / f"{todo_id}-ready-p2-todo-{todo_id}.md").write_text(
            todo_text(todo_id, todo_minutes)
        )
    (root / "batchd.toml").write_text(config_text(way, plan_name))
    git(root, "init", "-q", "-b", "main")
    for key, value in IDENTITY:
        git(root, "config", key, value)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "bench: initial")
    return root


def measure(folder: Path, way: Way, seed: int, minutes: dict[str, float], plan: str) -> Outcome:
    root = build(folder, way, minutes, plan)
    result = run_batchd(root, way.name)
    log = open_log(root)
    try:
        proj = replay(log, use_snapshot=False)
        events = list(log.read(since=0))
    finally:
        log.close()
    # What each agent said it took (its JSON result's duration_ms, simulated minutes): batchd's own
    # duration has the interpreter's start-up in it, which at this scale is minutes of its own.
    said: dict[tuple[str, int], float] = {}
    for e in events:
        summary = e.payload.get("summary") if e.type == "todo.agent_finished" else None
        if isinstance(summary, dict) and isinstance(summary.get("duration_ms"), int | float):
            said[(str(e.payload["todo_id"]), int(e.payload["attempt"]))] = summary["duration_ms"] / 60_000
    reported = dict.fromkeys(KINDS, 0.0)
    measured = dict.fromkeys(KINDS, 0.0)
    attempts = dict.fromkeys(KINDS, 0)
    for c in _classed(proj):
        agent_minutes = c.seconds / SECONDS_PER_MINUTE
        # A class other than the three (pending: not judged) is kept apart, so the sums show it.
        measured[c.kind] = measured.get(c.kind, 0.0) + agent_minutes
        reported[c.kind] = reported.get(c.kind, 0.0) + said.get((c.todo_id, c.attempt), agent_minutes)
        attempts[c.kind] = attempts.get(c.kind, 0) + 1
    runs = sum(1 for e in events if e.type == "todo.agent_started")
    missing = tuple(sorted(set(minutes) - result.accepted))
    return Outcome(
        way.name, seed, reported, measured, attempts, sum(said.values()), runs, len(result.accepted), missing
    )


def plan_toml(batches: tuple[str, ...]) -> str:
    """The seed's plan cut down to ``batches`` (and the phases that hold them), in the TOML form."""
    lines: list[str] = []
    for phase in PHASES:
        kept = [b for b in phase.batches if b.id in batches]
        if kept or not phase.batches:
            lines += [
                "[[phase]]",
                f"title = {json.dumps(phase.title)}",
                f"commit_message = {json.dumps(phase.message)}",
            ]
            lines += [f"batches = {json.dumps([list(b.todos) for b in kept])}", ""] if kept else [""]
    return "\n".join(lines)


def compare(seed: int, *, median: float, batches: tuple[str, ...] | None, keep: Path | None) -> list[Outcome]:
    """Both ways on one seed's todo minutes (``batches``: only these of the plan's; None: all)."""
    minutes = seed_times(seed, planned(batches), median=median, sigma=0.5)
    plan = render_plan() if batches is None else plan_toml(batches)
    with tempfile.TemporaryDirectory(prefix="batchd-economy-") as tmp:
        folder = Path(tmp) if keep is None else keep / f"seed-{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        # Side by side: what is measured is agent-minutes the agents report, not the wall clock, and
        # two daemons at once halve the bench's time.
        with ThreadPoolExecutor(max_workers=len(WAYS)) as pool:
            return list(pool.map(lambda way: measure(folder, way, seed, minutes, plan), WAYS))


# --- the report ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    less_wasted: float | None  # redo's wasted minutes / the new way's; None: the new way wasted none
    aim_waste_ratio: bool
    aim_less_wasted: bool


def verdict(redo: Outcome, new: Outcome) -> Verdict:
    new_ratio = new.waste_ratio
    return Verdict(
        less_wasted=redo.wasted / new.wasted if new.wasted > 0 else None,
        aim_waste_ratio=new_ratio is not None and new_ratio <= AIM_WASTE_RATIO,
        aim_less_wasted=redo.wasted > 0 and redo.wasted >= AIM_LESS_WASTED * new.wasted,
    )


def totals(outcomes: list[Outcome]) -> dict[str, Outcome]:
    return {way.name: total(way.name, [o for o in outcomes if o.way == way.name]) for way in WAYS}


def planned(batches: tuple[str, ...] | None) -> list[str]:
    """The plan's todo ids, in its order (``batches``: only these; None: all)."""
    return [
        t for phase in PHASES for b in phase.batches if batches is None or b.id in batches for t in b.todos
    ]


def json_report(outcomes: list[Outcome], batches: tuple[str, ...] | None) -> dict[str, object]:
    summed = totals(outcomes)
    judged = verdict(summed["redo"], summed["new"])
    return {
        "todos": len(planned(batches)),
        "batches": "all" if batches is None else list(batches),
        "seconds_per_agent_minute": SECONDS_PER_MINUTE,
        "median_minutes": MEDIAN,
        "resumed_share": RESUMED_SHARE,
        "seeds": sorted({o.seed for o in outcomes}),
        "ways": {
            way.name: {
                "conflicts": way.conflicts,
                "resume": way.resume,
                "runs": [o.as_json() for o in outcomes if o.way == way.name],
                "total": {k: v for k, v in summed[way.name].as_json().items() if k != "seed"},
            }
            for way in WAYS
        },
        "wasted_redo_over_new": rounded(judged.less_wasted),
        "aim_waste_ratio": judged.aim_waste_ratio,
        "aim_less_wasted": judged.aim_less_wasted,
    }


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def row(o: Outcome, label: str) -> str:
    m = o.minutes
    text = f"{label:<10} {m['useful']:8.1f} {m['failed']:7.1f} {m['wasted']:7.1f} {percent(o.waste_ratio):>7}"
    text += f" {o.agent_runs:>5} {o.accepted:>5}  {percent(ratio(o.measured)):>8}"
    return text + (f"  not accepted: {', '.join(o.not_accepted)}" if o.not_accepted else "")


def text_report(outcomes: list[Outcome], batches: tuple[str, ...] | None) -> list[str]:
    summed = totals(outcomes)
    judged = verdict(summed["redo"], summed["new"])
    where = "the seed's plan" if batches is None else f"the seed's batches {', '.join(batches)}"
    lines = [
        f"{where}, {len(planned(batches))} todos, {SLOTS} slots, agents lognormal(median {MEDIAN:g} "
        f"agent-minutes, sigma 0.5), 1 agent-minute = {SECONDS_PER_MINUTE} s",
        f"{len(SHARED)} todos append to the same 2 files, {len(BREAKS)} break the tests once; "
        f"a repair or resolve that finds its change costs {RESUMED_SHARE:.0%} of a redo",
        *(f"  {way.name}: {way.label}" for way in WAYS),
        "agent-minutes as the agents report them; measured: the waste ratio by batchd's durations",
        f"{'seed/way':<10} {'useful':>8} {'failed':>7} {'wasted':>7} {'waste':>7} {'runs':>5} {'acc.':>5}"
        "  measured",
        *(row(o, f"{o.seed} {o.way}") for o in outcomes),
    ]
    if len({o.seed for o in outcomes}) > 1:
        lines += [row(summed[way.name], f"all {way.name}") for way in WAYS]
    less = "the new way wasted none" if judged.less_wasted is None else f"{judged.less_wasted:.2f}x"
    lines.append(f"wasted agent-minutes, redo / new: {less}")
    lines.append(
        f"aims: new way's waste ratio <= {AIM_WASTE_RATIO:.0%}: "
        f"{'met' if judged.aim_waste_ratio else 'NOT met'}"
        f" ({percent(summed['new'].waste_ratio)}); at least {AIM_LESS_WASTED:g}x less wasted than redo: "
        f"{'met' if judged.aim_less_wasted else 'NOT met'}"
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.economy", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds (default 3)")
    quick = f"one seed, batches {', '.join(QUICK_BATCHES)} only"
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the repositories and logs in DIR")
    args = parser.parse_args(argv)
    seeds = range(1, (1 if args.quick else args.seeds) + 1)
    batches = QUICK_BATCHES if args.quick else None
    outcomes = [o for seed in seeds for o in compare(seed, median=MEDIAN, batches=batches, keep=args.keep)]
    if args.json:
        print(json.dumps(json_report(outcomes, batches), indent=2))
    else:
        print("\n".join(text_report(outcomes, batches)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
