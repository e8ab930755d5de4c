"""Flaky tests and culprit finding: today's ``retries = 1`` against the flake-aware search (issue 14).

Batches of 10 todos, k = 0, 1 or 2 of them real culprits (each breaks its own test), and a verify
command whose unrelated test fails a good tree with probability f (0.1, 0.2). Each configuration runs
N seeded trials, one batch each, through the real search (:func:`daemon.world.verify.verify_batch`
on a real repository, a real :class:`~daemon.world.checks.CheckRunner`, a real verify command: see
:mod:`bench.flaky_world`), once per method:

- **retries=1** (today): ``FlakePolicy(fixed=1)``, one re-run of a red command, no test evidence;
- **flake-aware**: the new policy, its rates learned across the configuration's trials, in order, by a
  :class:`statemachine.flakes.FlakeModel` fed exactly what the daemon records of each verify run (each
  ``CommandRuns``' runs and reds as ``tries``, its ``flaky_tests`` and ``excused``), from the prior of
  ``[verify] flake_rate``; test-level evidence on (pytest output), the model's quarantined tests
  excused. The model starts empty in each configuration: its first trials pay for learning;
- **flake-aware, no test names**: the same, but the output names no test, so only the command-level
  rate decides how many re-runs confirm a red.

A trial's seed fixes its culprits and the flaky test's stream of draws (consumed a run at a time), the
same for every method, so the methods are compared on the same batches. The base is known green (as
the daemon caches it): no baseline run. Recorded per trial: culprits, rejected todos, trees tested and
verify command executions (counted by the command itself, and checked to equal the runs that the
``CommandRuns`` and ``BatchVerdict.command_runs`` report).

Printed per (f, k, method): precision per rejected todo (rejected that were culprits / all rejected;
n/a when none was rejected), recall (culprits rejected / culprits), good todos wrongly rejected per
batch, verify command runs per batch (every execution, re-runs included) and trees tested per batch,
with Flake Aware Culprit Finding's published figures beside (Henderson et al., ICST 2023). The aim:
precision and recall >= 99% at f = 0.2 with at most ~10 runs per broken batch at k = 1. The figures
and the report are :mod:`bench.flaky_report`'s.

Nearly all the time is the search's git work (a reset and a cherry-pick per todo per tree tested):
the rows run in ``--processes`` processes, each on its own repository on tmpfs.

    python -m bench.flaky                  # 200 trials each, 2 processes (8 minutes on 2 busy cores)
    python -m bench.flaky --trials 20      # a quick look
    python -m bench.flaky --json           # the same numbers, and every trial, as one JSON object
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

from bench.flaky_report import (
    CULPRITS,
    FLAKE_RATES,
    METHODS,
    NO_NAMES,
    RETRIES_1,
    Done,
    Job,
    json_report,
    text_report,
)
from bench.flaky_world import COMMAND, TODOS, World, make_runner, make_world, run_trial
from daemon.config import VerifyConfig
from daemon.service.logs import configure_logging
from daemon.world.checks import FlakePolicy
from daemon.world.verify import VerifyRun
from statemachine.flakes import FlakeModel, command_key

START = 1_800_000_000.0  # the records' clock: a batch every BATCH_EVERY seconds from here
BATCH_EVERY = 600.0
SHM = "/dev/shm"


def trial_plan(job: Job, index: int) -> tuple[frozenset[int], int]:
    """Trial ``index``'s culprit slots and stream seed: the same for every method."""
    tag = f"{job.seed}/{job.flake_rate}/{job.culprits}/{index}"
    culprits = frozenset(random.Random(f"culprits {tag}").sample(range(TODOS), job.culprits))
    return culprits, random.Random(f"stream {tag}").getrandbits(63)


def policy_for(job: Job, model: FlakeModel) -> FlakePolicy:
    if job.method == RETRIES_1:
        return FlakePolicy(fixed=1)
    config = VerifyConfig()  # the defaults: prior 0.05, false_blame 0.01, at most 5 re-runs
    return FlakePolicy(
        rates=model.rates(config.flake_rate),
        prior=config.flake_rate,
        false_blame=config.false_blame,
        max_reruns=config.retries,
        excused=frozenset(model.quarantined()),
    )


def observe(model: FlakeModel | None, run: VerifyRun, *, when: float) -> None:
    """What the daemon folds from one ``batch.verify_run``: its tries, flaky and excused tests
    (``model`` None: a method that learns nothing)."""
    if model is None:
        return
    tries, flaky, excused = [], [], []
    for c in run.result.tries:
        key = command_key(c.command)
        tries.append((key, c.runs, c.reds))
        flaky += [(key, t) for t in c.flaky_tests]
        excused += [(key, t) for t in c.excused]
    model.observe(tries, flaky, excused, when)


def run_job(job: Job) -> Done:
    """One (f, k, method): its trials in order on one repository, one flake model learning across them."""
    configure_logging(level="error", stream=sys.stderr)  # a flake is a warning: thousands of them here
    start = time.perf_counter()
    model = FlakeModel()
    learn = job.method != RETRIES_1
    style = "quiet" if job.method == NO_NAMES else "pytest"
    trials = []
    with tempfile.TemporaryDirectory(prefix="bench-flaky-", dir=scratch()) as tmp:
        world: World = make_world(Path(tmp))
        for i in range(job.trials):
            when = START + i * BATCH_EVERY
            runner = make_runner(policy_for(job, model), stream=world.stream, style=style)
            culprits, stream_seed = trial_plan(job, i)
            trial = run_trial(
                world,
                runner,
                seed=i,
                stream_seed=stream_seed,
                culprits=culprits,
                flake_rate=job.flake_rate,
                on_run=functools.partial(observe, model if learn else None, when=when),
            )
            trials.append(trial)
    key = command_key(COMMAND)
    return Done(
        job=job,
        trials=tuple(trials),
        seconds=time.perf_counter() - start,
        rate=model.rate(key, VerifyConfig().flake_rate) if learn else None,
        quarantined=tuple(sorted(test for k, test in model.quarantined() if k == key)),
    )


def scratch() -> str | None:
    """Where the repositories go: tmpfs when there is one (git's fsyncs on a disk would be most of
    the time, and measure nothing of the search), else the usual temporary folder."""
    return SHM if os.path.isdir(SHM) and os.access(SHM, os.W_OK) else None


def run_all(jobs: list[Job], processes: int) -> list[Done]:
    """Every job, in ``processes`` processes (1: in this one), with progress on stderr."""
    done: list[Done] = []

    def progress(d: Done) -> None:
        done.append(d)
        j = d.job
        print(
            f"[{len(done)}/{len(jobs)}] f={j.flake_rate:g} k={j.culprits} {j.method}: "
            f"{len(d.trials)} trials in {d.seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    if processes <= 1:
        for job in jobs:
            progress(run_job(job))
    else:
        # spawn: a fork of a process that runs threads (a test runner's) may inherit a held lock.
        with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
            # The longest first (more culprits, more runs), so the processes finish together.
            futures = [pool.submit(run_job, j) for j in sorted(jobs, key=lambda j: -j.culprits)]
            for future in as_completed(futures):
                progress(future.result())
    order = {(j.flake_rate, j.culprits, j.method): n for n, j in enumerate(jobs)}
    return sorted(done, key=lambda d: order[(d.job.flake_rate, d.job.culprits, d.job.method)])


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def methods(text: str) -> tuple[str, ...]:
    chosen = tuple(m.strip() for m in text.split(";"))
    unknown = [m for m in chosen if m not in METHODS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown method {unknown[0]!r}: one of {'; '.join(METHODS)}")
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flaky", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="seeded trials per row (default 200)")
    parser.add_argument("--seed", type=int, default=1, help="the seed of every trial's culprits and flakes")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object instead (with every trial)"
    )
    parser.add_argument(
        "--flake-rates", type=floats, default=FLAKE_RATES, metavar="F,F", help="default 0.1,0.2"
    )
    parser.add_argument("--culprits", type=ints, default=CULPRITS, metavar="K,K", help="default 0,1,2")
    parser.add_argument(
        "--methods", type=methods, default=METHODS, metavar="M;M", help=f"default {'; '.join(METHODS)}"
    )
    parser.add_argument(
        "--processes", type=int, default=min(2, os.cpu_count() or 1), help="rows run at once (default 2)"
    )
    args = parser.parse_args(argv)
    jobs = [
        Job(flake_rate=f, culprits=k, method=m, trials=args.trials, seed=args.seed)
        for f in args.flake_rates
        for k in args.culprits
        for m in args.methods
    ]
    start = time.perf_counter()
    done = run_all(jobs, args.processes)
    wall = time.perf_counter() - start
    if args.json:
        print(json.dumps(json_report(done, wall, args.processes, args.seed), indent=2))
    else:
        print("\n".join(text_report(done, wall, args.processes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
