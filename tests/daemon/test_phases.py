"""After each phase: one commit on ``main`` built in the verification worktree, the checkout
fast-forwarded to it (a person's edits kept), the push with its rebase and retries, and the exit
codes of ``batchd run --once``.

Each run is a real repository with a real bare remote; the daemon runs in-process (the loop of
``run --once``) except where the exit code of the real command is the point (2 and 3).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from gitrepo import GOOD_MOD, NAMED_BREAK, git
from phase_repo import (
    GUARD_MOD,
    STATUS_FILE,
    PhaseRepo,
    build_repo,
    committed_paths,
    module,
    refuse_pushes,
    show,
    todo_name,
    writes,
)
from procs import DaemonProcess

MESSAGE_1 = "fix(security): complete phase 1 - critical security fixes"
MESSAGE_3 = "chore(scheduling): complete phase 3 - production hardening"


def trailer(repo: Path, sha: str, key: str) -> str:
    return git(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", sha)


def body(r: PhaseRepo, sha: str) -> str:
    return r.git("log", "-1", "--format=%B", sha)


def run_id(r: PhaseRepo) -> str:
    return str(r.events("run.started")[0].payload["run_id"])


def phase_event(r: PhaseRepo, type_: str, number: int) -> dict[str, object]:
    found = [e.payload for e in r.events(type_) if e.payload["number"] == number]
    assert found, f"no {type_} event for phase {number}"
    return found[-1]


# --- a run of three phases that all go well ------------------------------------------------------


@dataclass(frozen=True)
class Happy:
    repo: PhaseRepo
    initial: str
    commits: list[str]  # the phase commits on main, oldest first
    rc: int


@pytest.fixture(scope="module")
def happy(tmp_path_factory: pytest.TempPathFactory) -> Happy:
    """Phases 1 (todos 1, 2), 2 (todo 3, never committed) and a batch-less final phase 3; a person
    left an untracked scratch file and an uncommitted edit of README.md the phases do not touch."""
    r = build_repo(
        tmp_path_factory.mktemp("happy"),
        {"1": module("1"), "2": module("2"), "3": module("3")},
        plan={
            1: ("Critical Security", [["1", "2"]], MESSAGE_1),
            2: ("Features", [["3"]], ""),
            3: ("Production Hardening", [], MESSAGE_3),
        },
        files={"README.md": "readme\n"},
        untracked=["3"],
    )
    initial = r.git("rev-parse", "HEAD")
    (r.root / "scratch.txt").write_text("a person's notes\n", encoding="utf-8")
    (r.root / "README.md").write_text("readme, edited\n", encoding="utf-8")
    rc = r.run()
    commits = r.git("rev-list", "--reverse", f"{initial}..main").split()
    return Happy(repo=r, initial=initial, commits=commits, rc=rc)


def test_one_commit_per_phase_on_main(happy: Happy) -> None:
    """Each phase (the final one too) adds exactly one commit to main, with its Batchd-Phase trailer."""
    phases = [trailer(happy.repo.root, sha, "Batchd-Phase") for sha in happy.commits]
    assert phases == ["1", "2", "3"]


def test_phase_commit_message_is_the_plans_with_resolved_todos_and_trailers(happy: Happy) -> None:
    """Subject from the plan, body `Resolved todos: #1, #2`, trailers Batchd-Run and Batchd-Phase."""
    r = happy.repo
    assert body(r, happy.commits[0]) == (
        f"{MESSAGE_1}\n\nResolved todos: #1, #2\n\nBatchd-Run: {run_id(r)}\nBatchd-Phase: 1"
    )


def test_phase_without_a_plan_message_gets_the_default_subject(happy: Happy) -> None:
    """A phase the plan gives no commit message is `chore(batchd): complete phase <n> - <title>`."""
    assert body(happy.repo, happy.commits[1]).splitlines()[0] == "chore(batchd): complete phase 2 - features"


def test_final_phase_commits_the_status_file_with_its_message(happy: Happy) -> None:
    """The batch-less final phase commits only the final status file, under the plan's message."""
    r, sha = happy.repo, happy.commits[2]
    assert body(r, sha).splitlines()[0] == MESSAGE_3
    assert committed_paths(r.root, sha) == [STATUS_FILE]


def test_phase_commit_holds_exactly_the_changes_renames_and_status_file(happy: Happy) -> None:
    """The commit holds the accepted changes, the -ready- -> -complete- renames and the status file only."""
    assert committed_paths(happy.repo.root, happy.commits[0]) == [
        "mods/m1.py",
        "mods/m2.py",
        STATUS_FILE,
        f"todos/{todo_name('1', 'complete')}",
        f"todos/{todo_name('1')}",
        f"todos/{todo_name('2', 'complete')}",
        f"todos/{todo_name('2')}",
    ]


def test_never_committed_todo_is_added_under_its_complete_name_only(happy: Happy) -> None:
    """An untracked -ready- todo appears in the commit only as the -complete- file."""
    assert committed_paths(happy.repo.root, happy.commits[1]) == [
        "mods/m3.py",
        STATUS_FILE,
        f"todos/{todo_name('3', 'complete')}",
    ]


def test_renamed_todo_has_status_complete_in_its_front_matter(happy: Happy) -> None:
    """The committed -complete- file says `status: complete` in its front matter, the rest kept."""
    text = show(happy.repo.root, happy.commits[0], f"todos/{todo_name('1', 'complete')}")
    assert text.startswith("---\nstatus: complete\npriority: p2\n")
    assert "Do thing 1." in text


def test_a_persons_other_files_are_never_committed(happy: Happy) -> None:
    """Untracked scratch files and unrelated uncommitted edits stay in the checkout, out of every commit."""
    r = happy.repo
    touched = {p for sha in happy.commits for p in committed_paths(r.root, sha)}
    assert not touched & {"scratch.txt", "README.md"}
    assert (r.root / "scratch.txt").read_text(encoding="utf-8") == "a person's notes\n"
    assert (r.root / "README.md").read_text(encoding="utf-8") == "readme, edited\n"


def test_main_moves_by_fast_forward(happy: Happy) -> None:
    """Each phase commit's only parent is the previous head, and main's reflog shows fast-forwards."""
    r = happy.repo
    parents = [r.git("log", "-1", "--format=%P", sha) for sha in happy.commits]
    assert parents == [happy.initial, *happy.commits[:-1]]
    moves = r.git("reflog", "--format=%gs", "main").splitlines()[:3]
    assert all("Fast-forward" in move for move in moves), moves


def test_checkout_is_on_the_new_head_after_the_run(happy: Happy) -> None:
    """The checkout's HEAD is main's last phase commit, which is also the remote's main."""
    r = happy.repo
    assert r.git("symbolic-ref", "--short", "HEAD") == "main"
    assert r.git("rev-parse", "HEAD") == happy.commits[-1] == r.remote_git("rev-parse", "main")


def test_accepted_todos_exist_only_under_their_complete_names(happy: Happy) -> None:
    """The todos folder holds the -complete- files only; the untracked -ready- file was dropped too."""
    names = sorted(p.name for p in (happy.repo.root / "todos").iterdir())
    assert names == [".gitkeep", *(todo_name(t, "complete") for t in ("1", "2", "3"))]


def test_status_file_matches_the_commit_but_for_later_state(happy: Happy) -> None:
    """The checkout's status file differs from the committed one only in phase `State` lines."""
    r = happy.repo
    diff = r.git("diff", "--unified=0", "HEAD", "--", STATUS_FILE).splitlines()
    changed = [ln[1:] for ln in diff if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    assert all(ln.startswith("- **State:** ") for ln in changed), changed


def test_committed_status_file_shows_the_phase_todos_complete(happy: Happy) -> None:
    """The status file in phase 1's commit already lists todos 1 and 2 as complete."""
    text = show(happy.repo.root, happy.commits[0], STATUS_FILE)
    assert "| 1 | Thing 1 | complete |" in text
    assert "| 2 | Thing 2 | complete |" in text


def test_run_once_exits_0_with_a_success_verdict(happy: Happy) -> None:
    """Every todo complete and checks green: verdict success and exit code 0."""
    verdict = happy.repo.events("run.completed")[-1].payload
    assert (happy.rc, verdict["success"], verdict["not_complete"]) == (0, True, [])


# --- a person's edit in the way -----------------------------------------------------------------


def test_completed_todos_worktrees_and_branches_are_removed(happy: Happy) -> None:
    """After its phase, a completed todo's worktree and batchd/todo-* branches are gone (work is on main)."""
    repo = happy.repo
    worktrees = repo.git("worktree", "list", "--porcelain")
    assert "todo-1" not in worktrees and "todo-2" not in worktrees
    assert repo.git("branch", "--list", "batchd/todo-*") == ""


def test_persons_edit_to_a_committed_file_pauses_the_run_naming_it(tmp_path: Path) -> None:
    """An uncommitted edit of a file the phase commit changes pauses the run naming it; the edit is kept.

    Under --once nobody is there to resume, so the daemon stops with exit 3 (cannot proceed)."""
    r = build_repo(tmp_path, {"1": writes("notes.txt", content="agent\n")}, files={"notes.txt": "original\n"})
    before = r.git("rev-parse", "HEAD")
    (r.root / "notes.txt").write_text("a person's edit\n", encoding="utf-8")
    assert r.run() == 3
    paused = r.events("run.paused")[0].payload
    assert "notes.txt" in paused["reason"]
    assert "batchd resume" in paused["reason"]
    assert (r.root / "notes.txt").read_text(encoding="utf-8") == "a person's edit\n"
    assert r.git("rev-parse", "HEAD") == before


# --- the push -----------------------------------------------------------------------------------


def witness(log: Path) -> str:
    """A module whose check records when it ran and which modules the tree has."""
    return (
        "import os, time\n\ndef check():\n"
        f"    with open({str(log)!r}, 'a') as f:\n"
        "        f.write(f\"{time.time()} {' '.join(sorted(os.listdir('mods')))}\\n\")\n"
        "    return True\n"
    )


@dataclass(frozen=True)
class Moved:
    repo: PhaseRepo
    other: str  # the other clone's commit, on the remote before the daemon's push
    checks: Path


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> Moved:
    """Another clone pushed a commit touching a different file; the daemon's main is behind."""
    tmp = tmp_path_factory.mktemp("moved")
    (tmp / "witness").mkdir()
    checks = tmp / "witness" / "checks.log"
    # The checks run sandboxed: the witness's folder is made writable for them.
    r = build_repo(
        tmp,
        {"1": module("1")},
        files={"mods/witness.py": witness(checks)},
        verify_writable=(str(checks.parent),),
    )
    other = r.push_from_other({"mods/other.py": GOOD_MOD})
    assert r.run() == 0
    return Moved(repo=r, other=other, checks=checks)


def test_rejected_push_is_rebased_and_pushed(moved: Moved) -> None:
    """The remote ends with the other clone's commit and ours rebased onto it, in two attempts."""
    r = moved.repo
    pushed = phase_event(r, "phase.pushed", 1)
    assert pushed["attempts"] == 2
    assert r.remote_git("rev-parse", "main") == pushed["sha"]
    assert r.remote_git("log", "-1", "--format=%P", str(pushed["sha"])) == moved.other
    assert "mods/m1.py" in r.remote_git("ls-tree", "-r", "--name-only", "main").splitlines()


def test_rebased_commit_is_verified_again_before_it_is_pushed(moved: Moved) -> None:
    """The checks ran on a tree holding both our module and the remote's before the push was recorded."""
    pushed_at = moved.repo.events("phase.pushed")[0].time.timestamp()
    runs = [ln.split(" ", 1) for ln in moved.checks.read_text(encoding="utf-8").splitlines()]
    both = [float(t) for t, mods in runs if {"m1.py", "other.py"} <= set(mods.split())]
    assert both and min(both) < pushed_at


def test_checkout_follows_the_rebased_commit(moved: Moved) -> None:
    """After the rebased push, the checkout's main and HEAD are the pushed commit."""
    r = moved.repo
    sha = phase_event(r, "phase.pushed", 1)["sha"]
    assert r.git("rev-parse", "main") == r.git("rev-parse", "HEAD") == sha


@dataclass(frozen=True)
class Refused:
    repo: PhaseRepo
    rc: int


@pytest.fixture(scope="module")
def refused(tmp_path_factory: pytest.TempPathFactory) -> Refused:
    """The remote's pre-receive hook refuses the first three pushes (all of phase 1's attempts)."""
    r = build_repo(
        tmp_path_factory.mktemp("refused"),
        {"1": module("1"), "2": module("2")},
        plan={1: ("One", [["1"]], ""), 2: ("Two", [["2"]], ""), 3: ("Final", [], "")},
    )
    refuse_pushes(r.remote, "pushes are closed for the release", times=3)
    return Refused(repo=r, rc=r.run())


def test_refused_push_fails_after_three_attempts_with_the_hooks_reason(refused: Refused) -> None:
    """phase.push_failed after 3 attempts; its reason carries what the remote's hook printed."""
    failed = phase_event(refused.repo, "phase.push_failed", 1)
    assert failed["attempts"] == 3
    assert "pushes are closed for the release" in str(failed["reason"])


def test_run_goes_on_after_a_failed_push(refused: Refused) -> None:
    """The phases after the failed push are committed and the run completes with its verdict."""
    r = refused.repo
    assert phase_event(r, "phase.committed", 2)
    assert r.events("run.completed")[-1].payload["success"] is True
    assert refused.rc == 0


def test_next_push_carries_the_commit_of_the_failed_one(refused: Refused) -> None:
    """Phase 2's push puts phase 1's commit on the remote too."""
    r = refused.repo
    first = phase_event(r, "phase.committed", 1)["head_sha"]
    assert str(first) in r.remote_git("rev-list", "main").split()


def test_status_file_records_the_failed_push(refused: Refused) -> None:
    """The status file shows phase 1's push failed, with the reason."""
    assert "push failed: remote rejected" in refused.repo.status()


def test_remote_commits_that_break_ours_are_never_pushed(tmp_path: Path) -> None:
    """Red checks after the rebase: nothing pushed, push_failed says why, main keeps our tested commit."""
    r = build_repo(tmp_path, {"1": writes("mods/feature.py")})
    theirs = r.push_from_other({"mods/guard.py": GUARD_MOD})
    r.run()
    failed = phase_event(r, "phase.push_failed", 1)
    assert "remote's new commits break the tests with ours" in str(failed["reason"])
    assert r.remote_git("rev-parse", "main") == theirs
    tested = phase_event(r, "phase.committed", 1)["head_sha"]
    assert r.git("rev-parse", "main") == tested
    assert "mods/guard.py" not in r.git("ls-tree", "-r", "--name-only", "main").splitlines()


# --- commit_mode = "todo" and no remote ---------------------------------------------------------


@pytest.fixture(scope="module")
def per_todo(tmp_path_factory: pytest.TempPathFactory) -> PhaseRepo:
    """Two todos in one phase with ``commit_mode = "todo"`` and ``remote = ""`` (origin still exists)."""
    r = build_repo(
        tmp_path_factory.mktemp("per_todo"),
        {"1": module("1"), "2": module("2")},
        commit_mode="todo",
        remote="",
    )
    assert r.run() == 0
    return r


def test_commit_mode_todo_makes_one_commit_per_todo_with_todo_trailers(per_todo: PhaseRepo) -> None:
    """One commit per accepted todo, each with Batchd-Todo, Batchd-Run and Batchd-Phase trailers."""
    r = per_todo
    shas = r.git("rev-list", "--reverse", "main~2..main").split()
    got = [(trailer(r.root, s, "Batchd-Todo"), trailer(r.root, s, "Batchd-Phase")) for s in shas]
    assert got == [("1", "1"), ("2", "1")]
    assert {trailer(r.root, s, "Batchd-Run") for s in shas} == {run_id(r)}


def test_commit_mode_todo_keeps_the_leading_zeros_of_the_id_in_message_and_trailer(tmp_path: Path) -> None:
    """A todo filed as 007: its own commit says `Resolves todo #007.` and `Batchd-Todo: 007`."""
    r = build_repo(tmp_path, {"007": module("7")}, commit_mode="todo", remote="")
    assert r.run() == 0
    assert trailer(r.root, "main", "Batchd-Todo") == "007"
    assert "Resolves todo #007." in body(r, "main")


def test_commit_mode_todo_commit_holds_its_todos_change_and_rename(per_todo: PhaseRepo) -> None:
    """Todo 1's commit holds its module and its rename; the status file rides on the last one."""
    r = per_todo
    first, last = r.git("rev-list", "--reverse", "main~2..main").split()
    assert committed_paths(r.root, first) == [
        "mods/m1.py",
        f"todos/{todo_name('1', 'complete')}",
        f"todos/{todo_name('1')}",
    ]
    assert STATUS_FILE in committed_paths(r.root, last)


def test_empty_remote_never_pushes(per_todo: PhaseRepo) -> None:
    """With `remote = ""` no push is attempted and the remote keeps the initial commit."""
    r = per_todo
    assert not r.events("phase.pushing")
    assert r.remote_git("rev-parse", "main") == r.git("rev-list", "--max-parents=0", "main")


# --- exit codes ---------------------------------------------------------------------------------


def test_run_once_exits_1_with_an_invalid_todo_file(tmp_path: Path) -> None:
    """A todo file with malformed front matter makes the verdict a failure: exit 1."""
    r = build_repo(tmp_path, {"1": module("1")}, remote="")
    (r.todo("2")).write_text("---\nstatus: ready\npriority: [p2\n---\n\n# Broken\n", encoding="utf-8")
    rc = r.run()
    assert (rc, r.events("run.completed")[-1].payload["not_complete"]) == (1, [["2", "invalid"]])


def test_run_once_exits_3_when_the_baseline_is_red(tmp_path: Path) -> None:
    """The project's checks fail before any agent runs: `run --once` exits 3 and no agent is spawned."""
    r = build_repo(tmp_path, {"1": module("1")}, files={"mods/broken.py": NAMED_BREAK}, remote="")
    done = r.run_cli()
    assert done.returncode == 3, done.stderr[-2000:]
    assert not r.events("todo.agent_spawned")


def test_run_once_exits_2_on_a_broken_config(tmp_path: Path) -> None:
    """A batchd.toml with a bad value: exit 2, naming the key, before anything runs."""
    r = build_repo(tmp_path, {"1": module("1")}, remote="")
    (r.root / "batchd.toml").write_text('[batchd]\nmax_parallel = "many"\n', encoding="utf-8")
    done = r.run_cli()
    assert done.returncode == 2, done.stderr[-2000:]
    assert "max_parallel" in done.stdout + done.stderr
    assert not (r.root / ".batchd" / "events.db").exists()


def test_a_phase_that_accepted_nothing_makes_no_commit_and_says_why(tmp_path: Path) -> None:
    """Phase 1's only todo fails for good: no empty commit, no push of one; the status file says
    the phase is done with no commit and why; phase 2 is committed on top of the base as usual."""
    r = build_repo(
        tmp_path,
        {"1": "exit: 1", "2": module("2")},
        plan={1: ("One", [["1"]], ""), 2: ("Two", [["2"]], "")},
    )
    base = r.git("rev-parse", "HEAD")
    assert r.run() == 1  # 1 is blocked: not success
    assert not [e for e in r.events("phase.committing") if e.payload["number"] == 1]
    skipped = phase_event(r, "phase.skipped", 1)
    assert skipped["reason"] == "nothing was accepted (blocked: #1)"
    subjects = r.git("log", "--format=%s", f"{base}..main").splitlines()
    assert subjects == ["chore(batchd): complete phase 2 - two"]
    assert r.remote_git("rev-parse", "main") == r.git("rev-parse", "main")
    assert "done, no commit: nothing was accepted (blocked: #1)" in r.status()


# --- a red baseline heals ----------------------------------------------------------------------


def _paused_on_red_baseline(tmp_path: Path) -> tuple[PhaseRepo, DaemonProcess, str]:
    r = build_repo(
        tmp_path, {"1": module("1")}, files={"mods/broken.py": NAMED_BREAK}, plan={1: ("One", [["1"]], "")}
    )
    daemon = DaemonProcess(r.root)
    daemon.wait_events("batch.paused")
    red = r.git("rev-parse", "HEAD")
    return r, daemon, red


def _fix_the_branch(r: PhaseRepo) -> str:
    r.git("rm", "-q", "mods/broken.py")
    r.git("commit", "-q", "-m", "fix: the broken module")
    return r.git("rev-parse", "HEAD")


def test_a_red_baseline_fixed_by_a_commit_on_the_branch_goes_on_by_itself(tmp_path: Path) -> None:
    """The person commits a fix on the branch while the batch is paused on a red baseline: the phase
    re-bases on that commit, checks it again (green) and runs; its commit sits on top of the fix."""
    r, daemon, red = _paused_on_red_baseline(tmp_path)
    try:
        fix = _fix_the_branch(r)
        daemon.wait_events("run.completed", timeout=60)
        rebased = phase_event(r, "phase.rebased", 1)
        assert (rebased["previous"], rebased["base_sha"]) == (red, fix)
        assert r.git("rev-parse", "main~1") == fix
        assert r.events("run.completed")[-1].payload["success"] is True
    finally:
        daemon.stop()
        daemon.kill()


def test_resume_rechecks_the_branchs_current_head_not_the_one_pinned_at_the_start(tmp_path: Path) -> None:
    """`batchd resume` after the fix: the baseline is checked on the branch's head now (green), not
    again on the red commit the phase started from, and the phase goes on."""
    r, daemon, _red = _paused_on_red_baseline(tmp_path)
    daemon.stop()
    daemon.kill()
    fix = _fix_the_branch(r)
    resumed = subprocess.run(
        [sys.executable, "-m", "daemon", "resume", "-C", str(r.root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    done = r.run_cli()
    assert done.returncode == 0, done.stderr[-2000:]
    baselines = [e.payload for e in r.events("batch.verify_run") if e.payload.get("baseline")]
    assert [(b["sha"], b["passed"]) for b in baselines][-1] == (fix, True)
    assert r.git("rev-parse", "main~1") == fix
