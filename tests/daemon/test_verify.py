"""daemon.world.verify: batch verification on real repositories with a real check script."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from gitrepo import (
    CHECK_CMD,
    CHECK_PY,
    GOOD_MOD,
    NAMED_BREAK,
    UNNAMED_BREAK,
    candidate,
    check_repo,
    head,
    init_repo,
    module_candidate,
)

from daemon.config import ConflictMode, Strategy
from daemon.world.blame import is_named
from daemon.world.checks import CheckRunner
from daemon.world.gitops import add_worktree
from daemon.world.verify import BatchVerdict, Candidate, VerifyRun, check_baseline, verify_batch


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return check_repo(tmp_path / "repo")


@pytest.fixture
def worktree(repo: Path) -> Path:
    return add_worktree(repo, repo / ".batchd" / "worktrees" / "verify", "batchd/verify-1.1", head(repo))


def _runner() -> CheckRunner:
    return CheckRunner([CHECK_CMD], timeout=30, retries=0)


def _verify(
    worktree: Path,
    base: str,
    cands: Sequence[Candidate],
    *,
    strategy: Strategy = "bisect",
    conflicts: ConflictMode = "merge",
    runs: list[VerifyRun] | None = None,
) -> BatchVerdict:
    return verify_batch(
        worktree,
        base,
        cands,
        _runner(),
        strategy=strategy,
        conflicts=conflicts,
        on_run=runs.append if runs is not None else None,
    )


def _batch(
    repo: Path, broken: dict[str, str], ids: Sequence[str] = ("273", "274", "275", "276", "284")
) -> list[Candidate]:
    base = head(repo)
    return [module_candidate(repo, base, i, broken.get(i, "def check():\n    return True\n")) for i in ids]


def _assert_head_is_green(worktree: Path, verdict: BatchVerdict) -> None:
    assert head(worktree) == verdict.head_sha
    assert _runner()(worktree).passed


def test_all_green_batch_costs_one_run(repo: Path, worktree: Path) -> None:
    """Five good todos: all accepted after exactly one verify run."""
    cands = _batch(repo, {})
    verdict = _verify(worktree, head(repo), cands)
    assert verdict.runs == 1
    assert verdict.accepted_ids == ("273", "274", "275", "276", "284")
    assert not verdict.rejected and not verdict.conflicted
    _assert_head_is_green(worktree, verdict)
    assert [sha for _, sha in verdict.accepted][-1] == verdict.head_sha


def test_named_culprit_costs_two_runs(repo: Path, worktree: Path) -> None:
    """A culprit whose traceback names its file is found with exactly two runs."""
    verdict = _verify(worktree, head(repo), _batch(repo, {"275": NAMED_BREAK}))
    assert verdict.runs == 2
    assert set(verdict.rejected) == {"275"}
    assert verdict.accepted_ids == ("273", "274", "276", "284")
    _assert_head_is_green(worktree, verdict)


def test_rejection_carries_command_output_and_files(repo: Path, worktree: Path) -> None:
    """The rejected todo records the failing command, its output tail and the files reverted."""
    verdict = _verify(worktree, head(repo), _batch(repo, {"275": NAMED_BREAK}))
    rejection = verdict.rejected["275"]
    assert rejection.command == CHECK_CMD
    assert "mod_275.py" in rejection.output_tail
    assert rejection.files == ("mods/mod_275.py",)
    assert not (worktree / "mods" / "mod_275.py").exists()


def test_one_unnamed_culprit_is_found_by_halving(repo: Path, worktree: Path) -> None:
    """A culprit the output does not name is isolated exactly, in fewer runs than one by one."""
    ids = ("1", "2", "3", "4", "5", "6", "7", "8")
    verdict = _verify(worktree, head(repo), _batch(repo, {"6": UNNAMED_BREAK}, ids))
    assert set(verdict.rejected) == {"6"}
    assert verdict.accepted_ids == ("1", "2", "3", "4", "5", "7", "8")
    assert verdict.runs < len(ids)
    _assert_head_is_green(worktree, verdict)


def test_two_unnamed_culprits_are_found_exactly(repo: Path, worktree: Path) -> None:
    """Two culprits the output does not name are both rejected and nothing else is."""
    ids = ("1", "2", "3", "4", "5", "6", "7", "8")
    verdict = _verify(worktree, head(repo), _batch(repo, {"2": UNNAMED_BREAK, "7": UNNAMED_BREAK}, ids))
    assert set(verdict.rejected) == {"2", "7"}
    assert verdict.accepted_ids == ("1", "3", "4", "5", "6", "8")
    _assert_head_is_green(worktree, verdict)


def test_named_and_unnamed_culprits_together(repo: Path, worktree: Path) -> None:
    """A named culprit and an unnamed one in the same batch are both found."""
    verdict = _verify(worktree, head(repo), _batch(repo, {"274": NAMED_BREAK, "284": UNNAMED_BREAK}))
    assert set(verdict.rejected) == {"274", "284"}
    assert verdict.accepted_ids == ("273", "275", "276")
    _assert_head_is_green(worktree, verdict)


NEEDS_FLAG_OFF = "import pathlib\ndef check():\n    return not pathlib.Path('mods/flag.txt').exists()\n"


def test_interaction_failure_rejects_the_higher_id(repo: Path, worktree: Path) -> None:
    """Two todos fine alone but broken together: the lower id stays, the higher is rejected."""
    base = head(repo)
    a = candidate(repo, base, "10", {"mods/flag.txt": "on\n"})
    b = candidate(
        repo,
        base,
        "11",
        {"mods/needs_off.py": NEEDS_FLAG_OFF},
    )
    verdict = _verify(worktree, base, [b, a])
    assert verdict.accepted_ids == ("10",)
    assert set(verdict.rejected) == {"11"}
    _assert_head_is_green(worktree, verdict)


def test_every_run_is_reported(repo: Path, worktree: Path) -> None:
    """on_run sees each run with the todo ids in the tested tree and its result."""
    runs: list[VerifyRun] = []
    verdict = _verify(worktree, head(repo), _batch(repo, {"275": NAMED_BREAK}), runs=runs)
    assert len(runs) == verdict.runs == 2
    assert runs[0].todo_ids == ("273", "274", "275", "276", "284") and not runs[0].result.passed
    assert runs[1].todo_ids == ("273", "274", "276", "284") and runs[1].result.passed


def test_incremental_accepts_the_same_set_with_n_runs(repo: Path, worktree: Path) -> None:
    """The seed's one-by-one strategy reaches the same verdict as bisect, one run per todo."""
    broken = {"274": NAMED_BREAK, "276": UNNAMED_BREAK}
    cands = _batch(repo, broken)
    bisect = _verify(worktree, head(repo), cands)
    incremental = _verify(worktree, head(repo), cands, strategy="incremental")
    assert incremental.runs == 5
    assert incremental.accepted_ids == bisect.accepted_ids == ("273", "275", "284")
    assert set(incremental.rejected) == set(bisect.rejected) == {"274", "276"}
    _assert_head_is_green(worktree, incremental)


def test_all_rejected_leaves_head_at_base(repo: Path, worktree: Path) -> None:
    """When every todo fails, nothing is accepted and the head is the base."""
    base = head(repo)
    verdict = _verify(worktree, base, _batch(repo, {"1": NAMED_BREAK, "2": UNNAMED_BREAK}, ("1", "2")))
    assert verdict.accepted == ()
    assert set(verdict.rejected) == {"1", "2"}
    assert verdict.head_sha == base


def test_red_baseline_is_reported(repo: Path, worktree: Path) -> None:
    """check_baseline runs the checks on the base alone and reports a red one with its command."""
    broken_base = candidate(repo, head(repo), "0", {"mods/base.py": NAMED_BREAK}).sha
    result = check_baseline(worktree, broken_base, _runner())
    assert not result.passed
    assert result.failed_command == CHECK_CMD
    assert head(worktree) == broken_base


def test_green_baseline(repo: Path, worktree: Path) -> None:
    """A green base passes check_baseline."""
    assert check_baseline(worktree, head(repo), _runner()).passed


# --- conflicts --------------------------------------------------------------------------------

SHARED = "".join(f"line {i}\n" for i in range(20))


@pytest.fixture
def shared_repo(tmp_path: Path) -> Path:
    return init_repo(
        tmp_path / "repo", {"check.py": CHECK_PY, "mods/base.py": GOOD_MOD, "shared.txt": SHARED}
    )


def _edit(line: int, text: str) -> str:
    lines = SHARED.splitlines(keepends=True)
    lines[line] = text + "\n"
    return "".join(lines)


@pytest.mark.parametrize("mode", ["merge", "strict"])
def test_textual_conflict_keeps_the_lower_id(shared_repo: Path, mode: ConflictMode) -> None:
    """Two todos edit the same line: the lower id is accepted, the higher is conflicted with the file."""
    wt = add_worktree(
        shared_repo, shared_repo / ".batchd" / "worktrees" / "verify", "batchd/verify-1.1", head(shared_repo)
    )
    base = head(shared_repo)
    low = candidate(shared_repo, base, "266", {"shared.txt": _edit(3, "from 266")})
    high = candidate(shared_repo, base, "267", {"shared.txt": _edit(3, "from 267")})
    verdict = _verify(wt, base, [high, low], conflicts=mode)
    assert verdict.accepted_ids == ("266",)
    assert verdict.conflicted["267"].winner == "266"
    assert verdict.conflicted["267"].files == ("shared.txt",)
    assert (wt / "shared.txt").read_text() == _edit(3, "from 266")
    assert verdict.runs == 1
    assert verdict.resolved == {}


def test_clean_same_file_merge_is_accepted_in_merge_mode(shared_repo: Path) -> None:
    """Edits to distant lines of one file merge cleanly in merge mode and both are accepted."""
    wt = add_worktree(
        shared_repo, shared_repo / ".batchd" / "worktrees" / "verify", "batchd/verify-1.1", head(shared_repo)
    )
    base = head(shared_repo)
    a = candidate(shared_repo, base, "266", {"shared.txt": _edit(1, "from 266")})
    b = candidate(shared_repo, base, "267", {"shared.txt": _edit(18, "from 267")})
    verdict = _verify(wt, base, [a, b], conflicts="merge")
    assert verdict.accepted_ids == ("266", "267")
    text = (wt / "shared.txt").read_text()
    assert "from 266" in text and "from 267" in text
    assert verdict.runs == 1


def test_clean_same_file_merge_is_a_conflict_in_strict_mode(shared_repo: Path) -> None:
    """strict mode: any file touched by a lower id makes the higher id conflicted, even if it merges."""
    wt = add_worktree(
        shared_repo, shared_repo / ".batchd" / "worktrees" / "verify", "batchd/verify-1.1", head(shared_repo)
    )
    base = head(shared_repo)
    a = candidate(shared_repo, base, "266", {"shared.txt": _edit(1, "from 266")})
    b = candidate(shared_repo, base, "267", {"shared.txt": _edit(18, "from 267"), "other.txt": "o\n"})
    verdict = _verify(wt, base, [a, b], conflicts="strict")
    assert verdict.accepted_ids == ("266",)
    assert verdict.conflicted["267"].winner == "266"
    assert verdict.conflicted["267"].files == ("shared.txt",)
    assert not (wt / "other.txt").exists()


def test_conflicted_todo_is_not_tested_by_incremental(shared_repo: Path) -> None:
    """Incremental decides conflicts on the whole batch first, like bisect, and tests the rest."""
    wt = add_worktree(
        shared_repo, shared_repo / ".batchd" / "worktrees" / "verify", "batchd/verify-1.1", head(shared_repo)
    )
    base = head(shared_repo)
    low = candidate(shared_repo, base, "266", {"shared.txt": _edit(3, "from 266")})
    high = candidate(shared_repo, base, "267", {"shared.txt": _edit(3, "from 267")})
    verdict = _verify(wt, base, [low, high], strategy="incremental")
    assert verdict.accepted_ids == ("266",)
    assert set(verdict.conflicted) == {"267"}
    assert verdict.runs == 1


# --- flakiness and naming -----------------------------------------------------------------------


def test_flaky_check_does_not_reject(repo: Path, worktree: Path) -> None:
    """With retries=1 a check failing once (marker file outside the tree) accepts everything."""
    marker = repo.parent / "flaky-marker"
    flaky = (
        "import pathlib, sys\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.touch(); sys.exit(1)\n"
    )
    runner = CheckRunner([(sys.executable, "-c", flaky), CHECK_CMD], timeout=30, retries=1)
    runs: list[VerifyRun] = []
    verdict = verify_batch(worktree, head(repo), _batch(repo, {}), runner, on_run=runs.append)
    assert verdict.runs == 1
    assert len(verdict.accepted) == 5
    assert runs[0].result.flaky


def test_is_named_matches_path_basename_and_module() -> None:
    """Failing output names a file by path, file name, dotted module or distinctive stem."""
    assert is_named('File "/tmp/x/src/billing/invoice.py", line 3', "src/billing/invoice.py")
    assert is_named("FAILED invoice.py::test_total", "src/billing/invoice.py")
    assert is_named(
        "ImportError: cannot import name 'x' from 'src.billing.invoice'", "src/billing/invoice.py"
    )
    assert is_named("error in bookingService while saving", "server/bookingService.ts")
    assert not is_named("FAILED test_invoice.py::test_total", "src/billing/invoice.py")
    assert not is_named("error in index", "src/index.ts")


# --- the test-integrity gate -----------------------------------------------------------------------

GUARD = "import os\n\ndef check():\n    return not os.path.exists('mods/feature.py')\n"
GUARD_GAMED = "def check():\n    return True\n"


@pytest.fixture
def guarded(tmp_path: Path) -> Path:
    """A repository whose 'test' mods/guard.py fails once mods/feature.py exists."""
    return init_repo(tmp_path / "guarded", {"check.py": CHECK_PY, "mods/guard.py": GUARD})


def _gamed(repo: Path, todo_id: str = "1") -> Candidate:
    """A todo that adds the feature that breaks the guard, and edits the guard to pass anyway."""
    c = candidate(repo, head(repo), todo_id, {"mods/feature.py": GOOD_MOD, "mods/guard.py": GUARD_GAMED})
    return Candidate(todo_id=c.todo_id, sha=c.sha, files=c.files, test_edits=("mods/guard.py",))


def _integrity(repo: Path, cands: Sequence[Candidate], mode: str) -> BatchVerdict:
    wt = add_worktree(repo, repo / ".batchd" / "verify", "batchd/verify", head(repo))
    return verify_batch(wt, head(repo), cands, _runner(), integrity=mode)  # type: ignore[arg-type]


def test_passing_only_with_its_own_test_edits_is_reported(guarded: Path) -> None:
    """report: the todo is accepted, and the verdict says it passes only with its own edits to the test."""
    verdict = _integrity(guarded, [_gamed(guarded)], "report")
    assert verdict.accepted_ids == ("1",)
    assert "passes only with its own edits to mods/guard.py" in verdict.review["1"]
    assert verdict.runs == 2


def test_passing_only_with_its_own_test_edits_is_rejected_in_reject_mode(guarded: Path) -> None:
    """reject: the gamed todo is left out with that reason; an honest todo beside it is still accepted,
    on a head that passed as a whole."""
    honest = module_candidate(guarded, head(guarded), "2")
    verdict = _integrity(guarded, [_gamed(guarded), honest], "reject")
    assert verdict.accepted_ids == ("2",)
    assert "passes only with its own edits" in verdict.rejected["1"].reason
    assert _runner()(guarded / ".batchd" / "verify").passed


def test_a_test_edit_the_change_does_not_need_is_not_flagged(guarded: Path) -> None:
    """A todo that tidies an existing test but passes with the original too is not on the review list."""
    c = candidate(guarded, head(guarded), "3", {"mods/guard.py": GUARD + "\n# tidied\n"})
    tidy = Candidate(todo_id="3", sha=c.sha, files=c.files, test_edits=("mods/guard.py",))
    verdict = _integrity(guarded, [tidy], "report")
    assert verdict.accepted_ids == ("3",) and verdict.review == {}


# --- keep-both merges (conflicts = "merge") ------------------------------------------------------------

LIB = "def base():\n    return 0\n"
# The appenders' repository check: no function defined twice, and each f_<n>() returns n.
LIB_CHECK = """
import ast, pathlib, sys
names = [n.name for n in ast.parse(pathlib.Path("lib.py").read_text()).body if isinstance(n, ast.FunctionDef)]
twice = sorted({n for n in names if names.count(n) > 1})
if twice:
    sys.exit(f"defined twice: {twice}")
sys.path.insert(0, ".")
import lib
wrong = [n for n in names if n.startswith("f_") and getattr(lib, n)() != int(n[2:])]
if wrong:
    sys.exit(f"wrong values: {wrong}")
print("ok:", names)
""".lstrip()
LIB_CMD = (sys.executable, "-B", "check_lib.py")


@pytest.fixture
def lib_repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", {"check_lib.py": LIB_CHECK, "lib.py": LIB})


def _lib_verify(repo: Path, cands: Sequence[Candidate], **kwargs: object) -> tuple[Path, BatchVerdict]:
    wt = add_worktree(repo, repo / ".batchd" / "worktrees" / "verify", "batchd/verify-1.1", head(repo))
    runner = CheckRunner([LIB_CMD], timeout=30, retries=0)
    return wt, verify_batch(wt, head(repo), cands, runner, **kwargs)  # type: ignore[arg-type]


def _appender(repo: Path, todo_id: str, name: str, value: int) -> Candidate:
    return candidate(repo, head(repo), todo_id, {"lib.py": LIB + f"\n\ndef {name}():\n    return {value}\n"})


def _appenders(repo: Path) -> list[Candidate]:
    return [_appender(repo, str(i), f"f_{i}", i) for i in (1, 2, 3)]


def test_three_appenders_are_all_accepted_keeping_both(lib_repo: Path) -> None:
    """Three todos appending a function to one module: one run, all accepted, the 2nd and 3rd resolved."""
    wt, verdict = _lib_verify(lib_repo, _appenders(lib_repo))
    assert verdict.accepted_ids == ("1", "2", "3")
    assert verdict.resolved == {"2": ("lib.py",), "3": ("lib.py",)}
    assert not verdict.conflicted and not verdict.rejected
    assert verdict.runs == 1
    assert head(wt) == verdict.head_sha
    calls = "import lib; print(lib.f_1(), lib.f_2(), lib.f_3())"
    out = subprocess.run(
        [sys.executable, "-B", "-c", calls], cwd=wt, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["1", "2", "3"]
    assert CheckRunner([LIB_CMD], timeout=30, retries=0)(wt).passed


def test_three_appenders_are_accepted_by_incremental_too(lib_repo: Path) -> None:
    """incremental decides conflicts on the whole batch first: the resolved ones are tested, one by one."""
    _wt, verdict = _lib_verify(lib_repo, _appenders(lib_repo), strategy="incremental")
    assert verdict.accepted_ids == ("1", "2", "3")
    assert set(verdict.resolved) == {"2", "3"}
    assert verdict.runs == 3


def test_keep_both_that_breaks_the_checks_is_a_conflict_not_a_rejection(lib_repo: Path) -> None:
    """Two todos each adding a helper() pass alone; kept both, the check finds it defined twice. The
    second is conflicted (its change was fine on its own base) and carries the run that showed it."""
    first, second = _appender(lib_repo, "1", "helper", 1), _appender(lib_repo, "2", "helper", 2)
    wt, verdict = _lib_verify(lib_repo, [first, second])
    assert verdict.accepted_ids == ("1",)
    assert not verdict.rejected and verdict.resolved == {}
    conflict = verdict.conflicted["2"]
    assert (conflict.winner, conflict.files) == ("1", ("lib.py",))
    assert conflict.kept_both is not None
    assert conflict.kept_both.command == LIB_CMD
    assert "defined twice: ['helper']" in conflict.kept_both.output_tail
    assert head(wt) == verdict.head_sha
    assert CheckRunner([LIB_CMD], timeout=30, retries=0)(wt).passed


def test_a_resolved_todo_whose_winner_is_rejected_is_accepted_as_it_is(lib_repo: Path) -> None:
    """The 2nd is resolved against a broken 1st: once the 1st is rejected, the 2nd applies cleanly
    on the base and is accepted with no keep-both merge recorded."""
    broken, good = _appender(lib_repo, "1", "f_1", 7), _appender(lib_repo, "2", "f_2", 2)
    _wt, verdict = _lib_verify(lib_repo, [broken, good])
    assert set(verdict.rejected) == {"1"}
    assert "wrong values: ['f_1']" in verdict.rejected["1"].output_tail
    assert verdict.accepted_ids == ("2",)
    assert verdict.resolved == {} and not verdict.conflicted


def test_redo_mode_leaves_the_appenders_conflicted(lib_repo: Path) -> None:
    """conflicts = "redo" keeps today's behaviour: the 2nd and 3rd lose to the 1st and nothing is merged."""
    _wt, verdict = _lib_verify(lib_repo, _appenders(lib_repo), conflicts="redo")
    assert verdict.accepted_ids == ("1",)
    assert {t: (c.winner, c.files, c.kept_both) for t, c in verdict.conflicted.items()} == {
        "2": ("1", ("lib.py",), None),
        "3": ("1", ("lib.py",), None),
    }
    assert verdict.resolved == {}


@pytest.mark.parametrize("mode", ["merge", "redo"])
def test_conflict_in_a_non_utf8_file_name(lib_repo: Path, mode: ConflictMode) -> None:
    """A name that is not UTF-8 is resolved (merge) or conflicted (redo), shown escaped, no crash."""
    name = os.fsdecode(b"caf\xe9.txt")
    base = head(lib_repo)
    cands = [candidate(lib_repo, base, t, {name: f"start\n{t}\n"}) for t in ("1", "2")]
    _wt, verdict = _lib_verify(lib_repo, cands, conflicts=mode)
    if mode == "merge":
        assert verdict.accepted_ids == ("1", "2")
        assert verdict.resolved == {"2": ("caf\\xe9.txt",)}
    else:
        assert verdict.accepted_ids == ("1",)
        assert verdict.conflicted["2"].files == ("caf\\xe9.txt",)


def test_appenders_beside_a_failing_keep_both_are_still_accepted(lib_repo: Path) -> None:
    """The 2nd duplicates the 1st's helper(), the 3rd appends f_3: the search settles the 2nd as a
    conflict and accepts the 3rd, merged keeping both on the 1st alone."""
    cands = [
        _appender(lib_repo, "1", "helper", 1),
        _appender(lib_repo, "2", "helper", 2),
        _appender(lib_repo, "3", "f_3", 3),
    ]
    wt, verdict = _lib_verify(lib_repo, cands)
    assert verdict.accepted_ids == ("1", "3")
    assert set(verdict.conflicted) == {"2"} and not verdict.rejected
    assert verdict.resolved == {"3": ("lib.py",)}
    assert "def f_3" in (wt / "lib.py").read_text() and (wt / "lib.py").read_text().count("def helper") == 1
    assert CheckRunner([LIB_CMD], timeout=30, retries=0)(wt).passed


def test_a_resolved_todo_broken_on_its_own_is_rejected_with_its_own_run(lib_repo: Path) -> None:
    """The 2nd's f_2 returns the wrong value: kept both it fails, and alone on the base it fails too,
    so it is rejected (its repair sees that run), not handed a resolve attempt."""
    cands = [_appender(lib_repo, "1", "f_1", 1), _appender(lib_repo, "2", "f_2", 5)]
    runs: list[VerifyRun] = []
    wt, verdict = _lib_verify(lib_repo, cands, on_run=runs.append)
    assert verdict.accepted_ids == ("1",)
    assert set(verdict.rejected) == {"2"} and not verdict.conflicted
    assert "wrong values: ['f_2']" in verdict.rejected["2"].output_tail
    assert runs[-1].todo_ids == ("2",) and not runs[-1].result.passed
    assert head(wt) == verdict.head_sha
