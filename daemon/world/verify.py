"""Batch verification: which of a batch's todo commits can go on the phase head together.

A pure function of (base commit, finished todo commits): no scheduling here, so the seed's
barrier batches and a later work-conserving scheduler both call :func:`verify_batch`.

The verification worktree's branch is rebuilt from a known-green commit by cherry-picking
subsets, so a rejected todo's files are simply not there. Invariants:

- ``head_sha`` is exactly a commit whose tree passed the checks (the accepted set, tested
  together), or ``base_sha`` when nothing was accepted;
- every rejected todo carries the failing run that condemned it: a red run of
  (a set tested green) + that todo alone, or + a group it was the last unproven member of.

``bisect`` tests everything once; when red it first blames the todos whose files the failing
output names (one extra run for a single named culprit), and otherwise halves the undecided
group (adaptive group testing), so one or two unnamed culprits cost a few runs, not n.
``incremental`` is the seed's one-by-one (n runs for n todos).

In ``[verify] conflicts = "merge"`` mode a cherry-pick whose conflicts only insert lines on both
sides (three todos appending to one module) is resolved keeping both (:mod:`daemon.world.keepboth`)
and tested like any change (``BatchVerdict.resolved`` names its files). A todo that such a merge put
in a tree the search condemns is conflicted (``Conflict.kept_both`` holds the run), so its agent gets
a resolve attempt, unless its own commit fails alone on the batch base (one more run): then it is
rejected with that run, as its change is broken whatever the merge.

A ``[verify] setup`` command that fails is not yet anyone's fault (a registry that is down fails
``npm ci`` whatever the tree): the green head alone is run again, and only when it still passes is
the failure the change's, searched like a failing check; when it fails too, the batch stops with
:class:`SetupFailed` and no todo is blamed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from daemon.config import ConflictMode, Strategy, TestIntegrity
from daemon.exceptions import BatchdError, GitError, printable
from daemon.intake.todofile import id_order
from daemon.world.blame import is_named
from daemon.world.checks import CheckResult
from daemon.world.gitops import (
    GitTarget,
    WorkTree,
    abort_in_progress,
    head_sha,
    reset_hard,
    rev_parse,
    run_git,
    split_z,
)
from daemon.world.keepboth import cherry_pick
from statemachine.flakes import command_key

log = structlog.get_logger(__name__)

Runner = Callable[[Path], CheckResult]


class SetupFailed(BatchdError):
    """A ``[verify] setup`` command fails on a tree that passed before: the machine, not a todo."""

    code = "verify_setup_failed"

    def __init__(self, red: CheckResult, again: CheckResult | None = None) -> None:
        self.command = tuple(red.failed_command or ())
        self.output_tail = red.output_tail
        now = " ".join(again.failed_command or ()) if again is not None and not again.setup_failed else ""
        also = f" (now `{now}`)" if now else ""
        super().__init__(
            f"the [verify] setup command {list(self.command)} failed, and the last green tree fails "
            f"too{also}, so no todo is blamed for it",
            hint="make it pass in .batchd/verify by hand (network? registry?), then `batchd resume`",
        )


# Groups this small are searched one by one: when the output names every member, each is
# probably broken, and one run per member beats halving.
_ONE_BY_ONE_MAX = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    """A finished todo: one commit (usually on the batch's base) and the paths it changed."""

    todo_id: str
    sha: str
    files: tuple[str, ...]
    test_edits: tuple[str, ...] = ()  # existing test files it changed or deleted ([verify] protect_tests)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    command: tuple[str, ...] | None
    output_tail: str
    files: tuple[str, ...]
    returncode: int = 1
    reason: str = ""  # when not simply "broke the command": passing only with its own test edits
    output: str = ""  # the failing command's whole output (``output_tail`` is its end)
    confirmed: tuple[int, int] = (0, 0)  # (red runs, runs) of the failing command: "3 of 3"
    failed_tests: tuple[str, ...] = ()  # the tests that failed in every confirming run, not excused


@dataclass(frozen=True, slots=True, kw_only=True)
class Conflict:
    winner: str
    files: tuple[str, ...]  # the files that conflicted
    # batchd merged them keeping both sides, and that tree failed the checks: the run that showed it
    kept_both: Rejection | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyRun:
    """One pass of the checks over base + ``todo_ids`` (for progress events)."""

    todo_ids: tuple[str, ...]
    result: CheckResult


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchVerdict:
    accepted: tuple[tuple[str, str], ...]  # (todo_id, sha on the verification branch)
    rejected: dict[str, Rejection] = field(default_factory=dict)
    conflicted: dict[str, Conflict] = field(default_factory=dict)
    review: dict[str, str] = field(default_factory=dict)  # accepted, but a person should look (why)
    # accepted after batchd rebased it onto the newer head keeping both sides' added lines: the files
    resolved: dict[str, tuple[str, ...]] = field(default_factory=dict)
    head_sha: str
    runs: int  # trees tested
    command_runs: int = 0  # every command execution over those trees, re-runs included
    # (command key, test id) that failed in every run on ``head_sha`` and were excused as red on the
    # head already: still red there, so the next batch on it does not blame its todos for them.
    known_red: tuple[tuple[str, str], ...] = ()
    # Every failure the run that made ``head_sha`` excused (quarantined, red on the base): a test
    # already known red that failed there is still red on the new head (the engine carries it).
    head_excused: tuple[tuple[str, str], ...] = ()

    @property
    def accepted_ids(self) -> tuple[str, ...]:
        return tuple(todo_id for todo_id, _ in self.accepted)


def excused_pairs(result: CheckResult) -> tuple[tuple[str, str], ...]:
    """(command key, test id) of every failure ``result``'s runs excused, for whatever reason."""
    return tuple((command_key(t.command), test) for t in result.tries for test in t.excused)


def confirmed_red(result: CheckResult) -> tuple[tuple[str, str], ...]:
    """(command key, test id) of the tests ``result`` showed red in every run of their command (and
    passed as known red): not a quarantined test excused once, nor a flake."""
    return tuple((command_key(t.command), test) for t in result.tries if t.known_red for test in t.excused)


def work_path(worktree: GitTarget) -> Path:
    return worktree.path if isinstance(worktree, WorkTree) else worktree


def check_baseline(worktree: GitTarget, base_sha: str, runner: Runner) -> CheckResult:
    """The checks on ``base_sha`` alone; red means nothing in the batch can be blamed."""
    abort_in_progress(worktree)
    reset_hard(worktree, base_sha)
    return runner(work_path(worktree))


def verify_batch(
    worktree: GitTarget,
    base_sha: str,
    candidates: Iterable[Candidate],
    runner: Runner,
    *,
    strategy: Strategy = "bisect",
    conflicts: ConflictMode = "merge",
    integrity: TestIntegrity = "report",
    on_run: Callable[[VerifyRun], None] | None = None,
) -> BatchVerdict:
    """Decide each candidate: accepted, rejected (with the run that condemned it) or conflicted.

    ``worktree`` is batchd's verification worktree (its branch is reset to ``base_sha`` and
    rebuilt); ``base_sha`` must be green. Candidates are taken in ascending todo id.

    Then the test-integrity gate: an accepted todo that changed or deleted existing test files is
    tested again with those files as they were on the base (its new test files kept). Red means it
    passes only with its own test edits: put on the review list (``integrity="report"``) or
    rejected, the accepted set searched again without it (``"reject"``).
    """
    ordered = sorted(candidates, key=lambda c: id_order(c.todo_id))
    session = _Session(worktree, base_sha, runner, on_run, ordered, keep_both=conflicts == "merge")
    live = session.strict_conflicts(ordered) if conflicts == "strict" else ordered
    if strategy == "incremental":
        session.incremental(live)
    else:
        session.bisect(live)
    session.test_integrity(integrity)
    return session.verdict()


def _rejection(c: Candidate, red: CheckResult, reason: str = "") -> Rejection:
    return Rejection(
        command=red.failed_command,
        output_tail=red.output_tail,
        files=c.files,
        returncode=red.returncode,
        reason=reason,
        output=red.output or red.output_tail,
        confirmed=red.confirmed,
        failed_tests=red.failed_tests,
    )


class _Session:
    def __init__(
        self,
        worktree: GitTarget,
        base_sha: str,
        runner: Runner,
        on_run: Callable[[VerifyRun], None] | None,
        ordered: Sequence[Candidate],
        *,
        keep_both: bool,
    ) -> None:
        self.worktree = worktree
        self.base_sha = base_sha
        self.runner = runner
        self.on_run = on_run
        self.order = {c.todo_id: i for i, c in enumerate(ordered)}
        self.good: list[Candidate] = []
        self.good_head = base_sha
        self.good_picks: list[tuple[str, str]] = []
        self.rejected: dict[str, Rejection] = {}
        self.conflicted: dict[str, Conflict] = {}
        self.review: dict[str, str] = {}
        self.keep_both = keep_both
        # Candidates batchd merged keeping both sides in the last tree built with them (winner, files);
        # of those accepted, the files (for the verdict).
        self.merged: dict[str, Conflict] = {}
        self.good_resolved: dict[str, tuple[str, ...]] = {}
        self.runs = 0
        self.command_runs = 0
        self.good_red: tuple[tuple[str, str], ...] = ()  # what the green head's run showed red throughout
        self.good_excused: tuple[tuple[str, str], ...] = ()  # and everything it excused
        self.setup_confirmed = ""  # the green head on which a failing setup was seen to pass again
        abort_in_progress(worktree)

    # --- conflicts -------------------------------------------------------------------------------

    def strict_conflicts(self, ordered: Sequence[Candidate]) -> list[Candidate]:
        """The seed's rule: a file already changed by a lower id makes the higher id conflicted."""
        owner: dict[str, Candidate] = {}
        live = []
        for c in ordered:
            shared = tuple(f for f in c.files if f in owner)
            if shared:
                winner = min((owner[f] for f in shared), key=lambda w: self.order[w.todo_id])
                self._conflict(c, winner.todo_id, shared)
                continue
            owner.update(dict.fromkeys(c.files, c))
            live.append(c)
        return live

    def _conflict(self, c: Candidate, winner: str, files: tuple[str, ...]) -> None:
        self.conflicted[c.todo_id] = Conflict(winner=winner, files=files)
        log.info("todo_conflicted", todo_id=c.todo_id, winner=winner, files=list(files))

    # --- building and testing trees ---------------------------------------------------------------

    def _build(self, extra: Sequence[Candidate]) -> tuple[list[Candidate], list[tuple[str, str]]]:
        """Reset to the green head and cherry-pick ``extra``; a textual conflict drops that todo,
        unless (merge mode) batchd resolves it keeping both sides: see :mod:`daemon.world.keepboth`."""
        reset_hard(self.worktree, self.good_head)
        picks = list(self.good_picks)
        applied: list[Candidate] = []
        for c in extra:
            picked = cherry_pick(
                self.worktree, c.sha, keep_both=self.keep_both, what=f"todo {c.todo_id}'s commit"
            )
            self.merged.pop(c.todo_id, None)
            if picked.conflicts:
                winner = self._winner(c, picked.conflicts, [*self.good, *applied])
                if not picked.applied:
                    self._conflict(c, winner, picked.conflicts)
                    continue
                # Applied, but by batchd's own merge: if the checks condemn it, it is a conflict.
                self.merged[c.todo_id] = Conflict(winner=winner, files=picked.conflicts)
            picks.append((c.todo_id, head_sha(self.worktree)))
            applied.append(c)
        return applied, picks

    def _winner(self, c: Candidate, files: Sequence[str], earlier: Sequence[Candidate]) -> str:
        for pool in (
            [e for e in earlier if set(e.files) & set(files)],
            [e for e in earlier if set(e.files) & set(c.files)],
        ):
            if pool:
                return min(pool, key=lambda e: self.order[e.todo_id]).todo_id
        return earlier[-1].todo_id if earlier else ""

    def _check(self) -> CheckResult:
        """The checks on the worktree as it is now, counted."""
        result = self.runner(work_path(self.worktree))
        self.runs += 1
        self.command_runs += sum(t.runs for t in result.tries)
        return result

    def _test(self, extra: Sequence[Candidate]) -> tuple[CheckResult, list[Candidate]]:
        """Run the checks on green head + ``extra``; green extends the accepted set."""
        applied, picks = self._build(extra)
        result = self._check()
        ids = tuple(todo_id for todo_id, _ in picks)
        log.info("verify_run", run=self.runs, todo_ids=list(ids), passed=result.passed, flaky=result.flaky)
        if self.on_run is not None:
            self.on_run(VerifyRun(todo_ids=ids, result=result))
        if result.passed:
            self.good.extend(applied)
            self.good_resolved.update(
                {c.todo_id: self.merged[c.todo_id].files for c in applied if c.todo_id in self.merged}
            )
            self.good_head = head_sha(self.worktree)
            self.good_red = confirmed_red(result)
            self.good_excused = excused_pairs(result)
            self.good_picks = picks
        elif result.setup_failed:
            if not applied:  # the tree was the green head itself
                raise SetupFailed(result)
            self._confirm_setup(result)
        return result, applied

    def _confirm_setup(self, red: CheckResult) -> None:
        """The setup failed with ``extra`` applied: run the green head alone (once per green head);
        if that is red now as well, nothing about the change is shown and :class:`SetupFailed` stops."""
        if self.setup_confirmed == self.good_head:
            return
        reset_hard(self.worktree, self.good_head)
        again = self._check()
        ids = tuple(todo_id for todo_id, _ in self.good_picks)
        log.info("verify_setup_recheck", run=self.runs, todo_ids=list(ids), passed=again.passed)
        if self.on_run is not None:
            self.on_run(VerifyRun(todo_ids=ids, result=again))
        if not again.passed:
            raise SetupFailed(red, again)
        self.setup_confirmed = self.good_head

    def _condemn(self, c: Candidate, red: CheckResult) -> None:
        """The search found ``c`` to blame for ``red``. If batchd's own keep-both merge put it in that
        tree, the merge is what failed unless ``c`` fails alone too: a conflict for its agent to
        resolve, not a rejection."""
        merged = self.merged.get(c.todo_id)
        if merged is None:
            self._reject(c, red)
            return
        alone = self._alone(c)
        if alone is not None and not alone.passed and not alone.setup_failed:
            self._reject(c, alone)  # broken on its own (green) base: a resolve attempt would not help
            return
        self.conflicted[c.todo_id] = Conflict(
            winner=merged.winner, files=merged.files, kept_both=_rejection(c, red)
        )
        log.info(
            "todo_conflicted",
            todo_id=c.todo_id,
            winner=merged.winner,
            files=list(merged.files),
            kept_both_failed=True,
        )

    def _alone(self, c: Candidate) -> CheckResult | None:
        """The checks on ``c``'s own commit when its parent is the (green) batch base; else None."""
        try:
            if rev_parse(self.worktree, f"{c.sha}^") != self.base_sha:
                return None
        except GitError:
            return None
        reset_hard(self.worktree, c.sha)
        result = self._check()
        log.info("verify_run_alone", run=self.runs, todo_id=c.todo_id, passed=result.passed)
        if self.on_run is not None:
            self.on_run(VerifyRun(todo_ids=(c.todo_id,), result=result))
        reset_hard(self.worktree, self.good_head)
        return result

    def _reject(self, c: Candidate, red: CheckResult, reason: str = "") -> None:
        self.rejected[c.todo_id] = _rejection(c, red, reason)
        log.info("todo_rejected", todo_id=c.todo_id, command=list(red.failed_command or ()), reason=reason)

    def _live(self, pool: Iterable[Candidate]) -> list[Candidate]:
        """The undecided members of ``pool`` (not conflicted, rejected or already accepted)."""
        settled = {c.todo_id for c in self.good} | set(self.conflicted) | set(self.rejected)
        return [c for c in pool if c.todo_id not in settled]

    # --- strategies -----------------------------------------------------------------------------

    def incremental(self, live: Sequence[Candidate]) -> None:
        self._build(live)  # conflicts are decided on the whole batch, as in bisect
        for c in self._live(live):
            result, applied = self._test([c])
            if applied and not result.passed:
                self._condemn(c, result)

    def bisect(self, live: Sequence[Candidate]) -> None:
        self._search(live, None)

    def _search(self, pool: Sequence[Candidate], red: CheckResult | None) -> None:
        """Settle ``pool`` on top of the green head; ``red``: a failing run of exactly head + pool."""
        pool = self._live(pool)
        if not pool:
            return
        if red is None:
            result, applied = self._test(pool)
            if result.passed:
                return
            pool, red = applied, result
        if len(pool) == 1:
            self._condemn(pool[0], red)
            return
        named = [c for c in pool if any(is_named(red.output_tail, f) for f in c.files)]
        if named and len(named) < len(pool):
            self._blame_named(pool, named, red)
        elif named and len(pool) <= _ONE_BY_ONE_MAX:
            self._one_by_one(pool, red)
        else:
            self._halve(pool, red)

    def _blame_named(self, pool: list[Candidate], named: list[Candidate], red: CheckResult) -> None:
        """Test everything the failure does not name; if green, the named ones hold the culprits."""
        rest = [c for c in pool if c not in named]
        # A keep-both merge in the red tree depends on the order of the picks, which changes now.
        reordered = any(c.todo_id in self.merged for c in pool)
        result, applied = self._test(rest)
        if result.passed:
            # head now = old head + rest, so head + named is exactly the set that failed.
            known = red if len(applied) == len(rest) and not reordered else None
            self._narrow(named, known)
        else:
            self._search(applied, result)
            self._narrow(named, None)

    def _narrow(self, pool: list[Candidate], red: CheckResult | None) -> None:
        if len(pool) <= _ONE_BY_ONE_MAX:
            self._one_by_one(pool, red)
        elif red is None:
            self._search(pool, None)
        else:
            self._halve(pool, red)

    def _one_by_one(self, pool: list[Candidate], red: CheckResult | None) -> None:
        """Each on the growing green head; the last needs no run when all others passed."""
        intact = True
        for i, c in enumerate(pool):
            if i == len(pool) - 1 and intact and red is not None:
                self._condemn(c, red)
                return
            result, applied = self._test([c])
            if not applied:
                intact = False
            elif not result.passed:
                intact = False
                self._condemn(c, result)

    def _halve(self, pool: list[Candidate], red: CheckResult) -> None:
        """Binary search for the first culprit (the shortest red prefix), then test the rest at once.

        Invariant: the green head is base + ``pool[:lo]`` and ``red`` is a failing run of exactly
        head + ``pool[lo:hi]``; when ``hi == lo + 1`` that run condemns ``pool[lo]`` alone.
        """
        lo, hi = 0, len(pool)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            result, applied = self._test(pool[lo:mid])
            if len(applied) != mid - lo:  # a subset did not apply: start over on what is left
                self._search(pool[lo:], None)
                return
            if result.passed:
                lo = mid
            else:
                hi, red = mid, result
        self._condemn(pool[lo], red)
        self._search(pool[hi:], None)

    # --- the test-integrity gate -------------------------------------------------------------------

    def test_integrity(self, mode: TestIntegrity) -> None:
        checked: set[str] = set()
        while True:
            todo = next((c for c in self.good if c.test_edits and c.todo_id not in checked), None)
            if todo is None:
                return
            checked.add(todo.todo_id)
            red = self._without_test_edits(todo)
            if red is None:
                continue
            command = " ".join(red.failed_command or ())
            why = (
                f"passes only with its own edits to {', '.join(todo.test_edits)}: "
                f"`{command}` fails with them as they were"
            )
            log.warning("test_integrity_failed", todo_id=todo.todo_id, files=list(todo.test_edits))
            if mode == "report":
                self.review[todo.todo_id] = why
                continue
            self._reject(todo, red, reason=why)
            # Search the rest again without it: the accepted set must be a tree that passed whole.
            rest = [c for c in self.good if c.todo_id != todo.todo_id]
            self.good, self.good_head, self.good_picks = [], self.base_sha, []
            self.good_red = self.good_excused = ()
            self.good_resolved = {}
            self._search(rest, None)

    def _without_test_edits(self, todo: Candidate) -> CheckResult | None:
        """The checks on the accepted head with ``todo``'s edited test files as they were on the base;
        None when green. Files that cannot be put back count as red: the gate is never skipped."""
        reset_hard(self.worktree, self.good_head)
        # The records keep names escaped; git needs them as they are (a name that is not UTF-8).
        shown = set(todo.test_edits)
        changed = split_z(
            run_git(
                self.worktree, "diff", "--name-only", "-z", "--no-renames", self.base_sha, todo.sha
            ).stdout
        )
        paths = [p for p in changed if printable(p) in shown]
        # restore, not checkout: a test file the change added (a new conftest.py) is removed.
        proc = run_git(
            self.worktree, "--literal-pathspecs", "restore", f"--source={self.base_sha}", "--staged",
            "--worktree", "--", *paths, check=False,
        ) if paths else None  # fmt: skip
        if proc is None or proc.returncode != 0:
            log.warning("test_integrity_unrestorable", todo_id=todo.todo_id, files=list(todo.test_edits))
            reset_hard(self.worktree, self.good_head)
            output = printable(proc.stderr) if proc is not None else "no such files in the change"
            return CheckResult(
                passed=False, failed_command=("git", "restore"), returncode=1, output_tail=output
            )
        result = self._check()
        if self.on_run is not None:
            self.on_run(VerifyRun(todo_ids=tuple(t for t, _ in self.good_picks), result=result))
        if result.setup_failed:
            self._confirm_setup(result)
        reset_hard(self.worktree, self.good_head)
        return None if result.passed else result

    # --- result ---------------------------------------------------------------------------------

    def verdict(self) -> BatchVerdict:
        reset_hard(self.worktree, self.good_head)
        return BatchVerdict(
            accepted=tuple(self.good_picks),
            rejected=dict(self.rejected),
            conflicted=dict(self.conflicted),
            review={t: why for t, why in self.review.items() if any(t == g for g, _ in self.good_picks)},
            resolved={
                t: files for t, files in self.good_resolved.items() if any(t == g for g, _ in self.good_picks)
            },
            head_sha=self.good_head,
            runs=self.runs,
            command_runs=self.command_runs,
            known_red=self.good_red,
            head_excused=self.good_excused,
        )
