"""The records and figures of :mod:`bench.flaky`: rows of trials, precision, recall, runs, the aims.

A row (:class:`Done`) is one (f, k, method) and its trials, in order. Its figures are pooled over the
trials: precision is per rejected todo (all rejections of all trials), not an average of per-batch
ratios, so a batch that rejects nothing weighs nothing and one that rejects three good todos weighs
three. The aims are judged on the flake-aware method at f = :data:`AIM_F`, its precision pooled over
every k (a k = 0 batch's wrong rejection counts against it). Beside each broken row stand Flake Aware
Culprit Finding's published figures (Henderson et al., ICST 2023), which are per breakage.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.flaky_world import TODOS, Trial

RETRIES_1 = "retries=1"
FLAKE_AWARE = "flake-aware"
NO_NAMES = "flake-aware, no test names"
METHODS = (RETRIES_1, FLAKE_AWARE, NO_NAMES)
FLAKE_RATES = (0.1, 0.2)  # the defaults of --flake-rates and --culprits
CULPRITS = (0, 1, 2)
AIM_F = 0.2
AIM_PRECISION = 0.99
AIM_RECALL = 0.99
AIM_RUNS_K1 = 10.0
# Henderson et al., "Flake Aware Culprit Finding", ICST 2023 (13,600 breakages at Google).
FACF = {
    FLAKE_AWARE: "FACF ~98% accurate, ~9-10 runs/breakage",
    NO_NAMES: "FACF ~98% accurate, ~9-10 runs/breakage",
    RETRIES_1: "bisection 1 run/step ~78% (~50% flaky)",
}
FIGURES_AT = 36  # where a row's figures start, after its label


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    flake_rate: float
    culprits: int
    method: str
    trials: int
    seed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    job: Job
    trials: tuple[Trial, ...]
    seconds: float
    rate: float | None  # the learned rate of the verify command at the end (flake-aware methods)
    quarantined: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Figures:
    trials: int
    culprits: int
    rejected: int
    rejected_culprits: int
    command_runs: int
    steps: int
    wrong_batches: int  # batches that rejected at least one good todo

    @property
    def precision(self) -> float | None:
        return self.rejected_culprits / self.rejected if self.rejected else None

    @property
    def recall(self) -> float | None:
        return self.rejected_culprits / self.culprits if self.culprits else None

    @property
    def wrong_per_batch(self) -> float:
        return (self.rejected - self.rejected_culprits) / self.trials

    @property
    def runs_per_batch(self) -> float:
        return self.command_runs / self.trials

    @property
    def steps_per_batch(self) -> float:
        return self.steps / self.trials


def figures(trials: tuple[Trial, ...] | list[Trial]) -> Figures:
    return Figures(
        trials=len(trials),
        culprits=sum(len(t.culprits) for t in trials),
        rejected=sum(len(t.rejected) for t in trials),
        rejected_culprits=sum(len(set(t.rejected) & set(t.culprits)) for t in trials),
        command_runs=sum(t.command_runs for t in trials),
        steps=sum(t.steps for t in trials),
        wrong_batches=sum(1 for t in trials if set(t.rejected) - set(t.culprits)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Aims:
    """The issue's aims, judged on the flake-aware method at f = AIM_F (None: not measured)."""

    precision: float | None  # over every k, k = 0's wrong rejections included
    recall: float | None
    runs_k1: float | None

    @property
    def met(self) -> bool:
        return (
            (self.precision is None or self.precision >= AIM_PRECISION)
            and (self.recall is None or self.recall >= AIM_RECALL)
            and (self.runs_k1 is None or self.runs_k1 <= AIM_RUNS_K1)
        )


def aims(done: list[Done]) -> Aims:
    ours = [d for d in done if d.job.method == FLAKE_AWARE and d.job.flake_rate == AIM_F]
    pooled = figures([t for d in ours for t in d.trials])
    k1 = [t for d in ours if d.job.culprits == 1 for t in d.trials]
    return Aims(
        precision=pooled.precision,
        recall=pooled.recall,
        runs_k1=figures(k1).runs_per_batch if k1 else None,
    )


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def row_label(flake_rate: float, culprits: int, method: str) -> str:
    """A row's first columns (FIGURES_AT characters): f, k and the method."""
    return f"{flake_rate:>4g} {culprits:>2}  {method:<27}"


def text_report(done: list[Done], wall: float, processes: int) -> list[str]:
    trials = {len(d.trials) for d in done}
    lines = [
        f"{TODOS} todos a batch, k culprits, an unrelated test failing a good tree with probability f; "
        f"{'/'.join(map(str, sorted(trials)))} seeded trials per row, the same batches for every method",
        f"{'f':>4} {'k':>2}  {'method':<27}{'precision':>10}{'recall':>8}{'wrong/b':>9}"
        f"{'runs/b':>8}{'trees/b':>8}  published (Henderson et al., ICST 2023)",
    ]
    for d in done:
        j, fig = d.job, figures(d.trials)
        facf = FACF[j.method] if j.culprits else "-"
        lines.append(
            f"{row_label(j.flake_rate, j.culprits, j.method)}{percent(fig.precision):>10}"
            f"{percent(fig.recall):>8}{fig.wrong_per_batch:>9.3f}{fig.runs_per_batch:>8.2f}"
            f"{fig.steps_per_batch:>8.2f}  {facf}"
        )
    learned = [d for d in done if d.rate is not None]
    if learned:
        lines.append("learned at the end (rate of `sh check.sh`; quarantined tests):")
        lines += [
            f"  f={d.job.flake_rate:g} k={d.job.culprits} {d.job.method}: {d.rate:.3f}; "
            f"{', '.join(d.quarantined) or 'none'}"
            for d in learned
        ]
    judged = aims(done)
    if judged.precision is not None or judged.runs_k1 is not None:
        runs = "n/a" if judged.runs_k1 is None else f"{judged.runs_k1:.2f}"
        lines.append(
            f"aims at f={AIM_F:g}, {FLAKE_AWARE}: precision >= {AIM_PRECISION:.0%} "
            f"({percent(judged.precision)} over all k), recall >= {AIM_RECALL:.0%} "
            f"({percent(judged.recall)}), runs per batch at k=1 <= {AIM_RUNS_K1:g} ({runs}): "
            f"{'met' if judged.met else 'NOT met'}"
        )
    lines.append(f"wall time {wall:.1f} s on {processes} process(es)")
    return lines


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def json_report(done: list[Done], wall: float, processes: int, seed: int) -> dict[str, object]:
    judged = aims(done)
    rows = []
    for d in done:
        fig = figures(d.trials)
        rows.append(
            {
                "flake_rate": d.job.flake_rate,
                "k": d.job.culprits,
                "method": d.job.method,
                "trials": fig.trials,
                "culprits": fig.culprits,
                "rejected": fig.rejected,
                "rejected_culprits": fig.rejected_culprits,
                "wrong_batches": fig.wrong_batches,
                "command_runs": fig.command_runs,
                "steps": fig.steps,
                "precision": rounded(fig.precision),
                "recall": rounded(fig.recall),
                "wrong_per_batch": rounded(fig.wrong_per_batch),
                "runs_per_batch": rounded(fig.runs_per_batch),
                "steps_per_batch": rounded(fig.steps_per_batch),
                "learned_rate": rounded(d.rate),
                "quarantined": list(d.quarantined),
                "seconds": round(d.seconds, 3),
                "published": FACF[d.job.method] if d.job.culprits else None,
                "per_trial": [t.as_json() for t in d.trials],
            }
        )
    return {
        "todos": TODOS,
        "seed": seed,
        "processes": processes,
        "wall_seconds": round(wall, 3),
        "rows": rows,
        "aims": {
            "flake_rate": AIM_F,
            "method": FLAKE_AWARE,
            "precision": rounded(judged.precision),
            "recall": rounded(judged.recall),
            "runs_per_batch_k1": rounded(judged.runs_k1),
            "met": judged.met,
        },
    }
