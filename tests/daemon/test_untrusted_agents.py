"""Whatever an agent does, the branch only moves to a tested tree, nobody's work is lost, and the records
are true. Each test is a whole ``batchd run --once`` on a real repository with a real bare remote,
with ``tests/agents/hostile.py`` as the agent doing one hostile or careless thing.

Most run with ``[agent] sandbox = "none"``: what must hold without a sandbox (the agent's own
repository, the pinned remote, the one door for changes). The sandbox's own tests are marked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gitrepo import git
from phase_repo import PhaseRepo, build_repo

from daemon.world.sandbox import _probe

NO_SANDBOX = 'sandbox = "none"'
BWRAP = shutil.which("bwrap")
needs_bwrap = pytest.mark.skipif(
    BWRAP is None or bool(_probe(BWRAP)), reason="bubblewrap cannot run here (CI installs it)"
)


def hostile_repo(
    tmp_path: Path, actions: dict[str, list[str]], *, sandbox: str = NO_SANDBOX, **config: object
) -> PhaseRepo:
    config.setdefault("agent_extra", sandbox)
    return build_repo(tmp_path, {}, hostile=actions, **config)


def events(repo: PhaseRepo, type_: str) -> list[dict[str, object]]:
    return [dict(e.payload) for e in repo.events(type_)]


def report(repo: PhaseRepo, todo_id: str, rev: str = "main") -> str:
    """What the agent said of its actions, from the committed reports/<id>.txt."""
    return repo.git("show", f"{rev}:reports/{todo_id}.txt")


def verdict(repo: PhaseRepo) -> dict[str, object]:
    return events(repo, "run.completed")[-1]


# --- config, hooks and the remote ---------------------------------------------------------------


def test_a_pushurl_set_by_an_agent_never_moves_batchds_pushes(tmp_path: Path) -> None:
    """`git config remote.origin.pushurl` in its workspace, and even in the person's repository (no sandbox):
    the phase is pushed to the real remote, confirmed there, and the other repository gets nothing."""
    evil = tmp_path / "evil.git"
    git(tmp_path, "init", "-q", "--bare", str(evil))
    repo = hostile_repo(
        tmp_path,
        {
            "1": [
                f"git config remote.origin.pushurl {evil}",
                f"person-git config remote.origin.pushurl {evil}",
            ]
        },
    )
    assert repo.run() == 0
    pushed = events(repo, "phase.pushed")[-1]["sha"]
    assert repo.remote_git("rev-parse", "main") == pushed == repo.git("rev-parse", "main")
    assert git(evil, "for-each-ref") == ""


def test_hooks_an_agent_writes_never_run_in_batchds_git(tmp_path: Path) -> None:
    """Hooks written during the run (no sandbox) into the person's .git/hooks or batchd's own folders
    run in none of batchd's commits, merges, fetches or pushes."""
    hooks = [
        "hook pre-push",
        "hook post-merge",
        "hook post-commit",
        "hook post-checkout",
        "hook reference-transaction",
        "hook pre-push {root}/.batchd/hooks",
        "hook post-merge {root}/.batchd/tmp",
    ]
    repo = hostile_repo(tmp_path, {"1": hooks})
    assert repo.run() == 0
    assert events(repo, "phase.pushed")
    assert sorted(p.name for p in tmp_path.glob("hook-ran-*")) == []


def test_programs_in_the_agents_own_git_config_never_run_in_batchd(tmp_path: Path) -> None:
    """The agent names programs in its repository's config (a partial-clone remote's sshCommand, an
    uploadpack, an fsmonitor) and points its branch at a commit that exists nowhere: batchd reads its
    repository as data only, so none of them runs, and the attempt fails for want of a real HEAD."""
    marker = tmp_path / "pwned"
    repo = hostile_repo(tmp_path, {"1": [f"poison-config {marker}"]})
    assert repo.run() == 1
    assert not marker.exists()
    assert events(repo, "todo.agent_failed")[-1]["reason"] == "workspace"


@needs_bwrap
def test_in_the_sandbox_the_persons_config_and_hooks_cannot_be_written(tmp_path: Path) -> None:
    """Under bubblewrap the agent's writes to the person's .git fail; its own work still lands."""
    evil = tmp_path / "evil.git"
    repo = hostile_repo(
        tmp_path,
        {
            "1": [
                f"person-git config remote.origin.pushurl {evil}",
                "hook pre-push",
                "write {root}/planted.txt x",
            ]
        },
        sandbox='sandbox = "bwrap"',
    )
    config_before = (repo.root / ".git" / "config").read_text()
    assert repo.run() == 0
    said = report(repo, "1")
    assert "person-git config remote.origin.pushurl" in said and ": failed" in said.splitlines()[0]
    assert (repo.root / ".git" / "config").read_text() == config_before
    assert not (repo.root / ".git" / "hooks" / "pre-push").exists()
    assert not (repo.root / "planted.txt").exists()
    assert "mods/m1.py" in repo.git("ls-tree", "-r", "--name-only", "main").split()


@needs_bwrap
def test_in_the_sandbox_writes_outside_the_repository_fail(tmp_path: Path) -> None:
    """The agent cannot write into the person's checkout, and what it writes next to the repository
    (here under /tmp, which is private to the sandbox) never appears there."""
    repo = hostile_repo(
        tmp_path,
        {"1": ["write {outside}/escaped.txt gotcha", "write {root}/mods/base.py broken = ("]},
        sandbox='sandbox = "bwrap"',
    )
    base = (repo.root / "mods" / "base.py").read_text()
    assert repo.run() == 0
    assert not (tmp_path / "escaped.txt").exists()
    assert (repo.root / "mods" / "base.py").read_text() == base
    assert "write {root}/mods/base.py broken = (: failed" in report(repo, "1")


# --- what an agent may not change ------------------------------------------------------------------


def test_the_gate_cannot_be_switched_off_from_a_change(tmp_path: Path) -> None:
    """An agent that rewrites batchd.toml's verify commands to `true`: the edit is dropped and reported,
    and the committed batchd.toml is the person's."""
    repo = hostile_repo(
        tmp_path, {"1": ["write batchd.toml [verify]", "append batchd.toml commands = [['true']]"]}
    )
    before = repo.git("show", "HEAD:batchd.toml")
    assert repo.run() == 0
    assert repo.git("show", "main:batchd.toml") == before
    finished = events(repo, "todo.agent_finished")[-1]
    assert any(str(d).startswith("batchd.toml") for d in finished["dropped"])  # type: ignore[union-attr]
    assert "dropped from its change: batchd.toml" in repo.status()


def test_an_agent_deleting_other_todos_loses_nobody_s_work(tmp_path: Path) -> None:
    """Todo 1 deletes todo 2's file: the deletion is dropped, todo 2 runs and completes, never 'cancelled by
    person'."""
    repo = hostile_repo(
        tmp_path,
        {"1": ["delete todos/2-ready-p2-thing-2.md"], "2": []},
        plan={1: ("One", [["1"], ["2"]], "")},
    )
    assert repo.run() == 0
    states = {e["todo_id"] for e in events(repo, "todo.completed")}
    assert states == {"1", "2"}
    assert not events(repo, "todo.cancelled")
    assert (repo.root / "todos" / "2-complete-p2-thing-2.md").exists()


def test_the_status_file_committed_as_a_link_never_writes_through_it(tmp_path: Path) -> None:
    """An agent commits plans/EXECUTION-STATUS.md as a link to a file outside: dropped, and the file
    outside is untouched by every status write."""
    outside = tmp_path / "victim.txt"
    outside.write_text("precious\n")
    repo = hostile_repo(tmp_path, {"1": [f"symlink {outside} plans/EXECUTION-STATUS.md", "commit link"]})
    assert repo.run() == 0
    assert outside.read_text() == "precious\n"
    assert git(repo.root, "ls-tree", "main", "plans/EXECUTION-STATUS.md").split()[0] == "100644"
    assert "# Execution Status" in repo.status()


def test_a_link_out_of_the_repository_is_dropped(tmp_path: Path) -> None:
    """A committed link to /etc/passwd is dropped with its target named in the review list."""
    repo = hostile_repo(tmp_path, {"1": ["symlink /etc/passwd mods/passwd"]})
    assert repo.run() == 0
    assert "mods/passwd" not in repo.git("ls-tree", "-r", "--name-only", "main").split()
    assert "a symbolic link to /etc/passwd" in repo.status()


def test_a_nested_repository_is_committed_as_files(tmp_path: Path) -> None:
    """`git init` inside the change: its files are in the commit, and there is no gitlink."""
    repo = hostile_repo(tmp_path, {"1": ["nested vendor/lib"]})
    assert repo.run() == 0
    listing = repo.git("ls-tree", "-r", "main")
    assert "vendor/lib/lib.py" in listing and "160000" not in listing


def test_a_change_over_the_size_limit_fails_the_attempt(tmp_path: Path) -> None:
    """A 60 MiB file (over the 50 MiB default) fails the attempt with both sizes; nothing is committed."""
    repo = hostile_repo(tmp_path, {"1": ["bigfile big.bin 60"]})
    assert repo.run() == 1
    failed = events(repo, "todo.agent_failed")[-1]
    assert failed["reason"] == "too_large" and "60.0 MiB" in str(failed["detail"])
    assert "big.bin" not in repo.git("ls-tree", "-r", "--name-only", "main").split()


def test_deleting_a_protected_file_fails_the_attempt(tmp_path: Path) -> None:
    """With [agent] protect = ["mods/base.py"], a deletion of it fails the attempt."""
    repo = hostile_repo(
        tmp_path, {"1": ["delete mods/base.py"]}, agent_extra=f'{NO_SANDBOX}\nprotect = ["mods/base.py"]'
    )
    assert repo.run() == 1
    assert events(repo, "todo.agent_failed")[-1]["reason"] == "protected"
    assert "mods/base.py" in repo.git("ls-tree", "-r", "--name-only", "main").split()


# --- history --------------------------------------------------------------------------------------


def test_reset_hard_back_fails_and_the_earlier_phase_stays(tmp_path: Path) -> None:
    """Phase 2's agent runs `git reset --hard HEAD~1` (undoing phase 1): the attempt fails, phase 1's work
    stays on the branch and its todo stays complete."""
    repo = hostile_repo(
        tmp_path,
        {"1": [], "2": ["reset-hard-back"]},
        plan={1: ("One", [["1"]], ""), 2: ("Two", [["2"]], "")},
    )
    assert repo.run() == 1
    failed = events(repo, "todo.agent_failed")[-1]
    assert failed["todo_id"] == "2" and failed["reason"] == "history"
    names = repo.git("ls-tree", "-r", "--name-only", "main").split()
    assert "mods/m1.py" in names and "todos/1-complete-p2-thing-1.md" in names
    assert repo.remote_git("rev-parse", "main") == repo.git("rev-parse", "main")


def test_an_agent_that_pushes_its_own_commit_is_caught(tmp_path: Path) -> None:
    """An agent pushes its unverified commit to the remote itself (no sandbox): batchd does not build on
    it, records push_failed naming it, and the verdict fails."""
    repo = hostile_repo(tmp_path, {"1": ["push-remote"]})
    assert repo.run() == 1
    failed = events(repo, "phase.push_failed")[-1]
    assert "an agent made and pushed itself" in str(failed["reason"])
    assert not events(repo, "phase.pushed")
    assert verdict(repo)["success"] is False


@needs_bwrap
def test_in_the_sandbox_an_agent_cannot_push_to_the_remote(tmp_path: Path) -> None:
    """Under bubblewrap the agent's own push to the (local) remote fails; batchd's goes out."""
    repo = hostile_repo(tmp_path, {"1": ["push-remote"]}, sandbox='sandbox = "bwrap"')
    assert repo.run() == 0
    assert events(repo, "phase.pushed")
    assert "push-remote: failed" in report(repo, "1")


def test_a_rewritten_git_file_cannot_move_the_persons_branch(tmp_path: Path) -> None:
    """The agent points its workspace's .git at the person's repository: the attempt fails, the person's
    main only ever moves forward by batchd's own phase commit (never to the agent's), and what they
    staged is still staged."""
    repo = hostile_repo(tmp_path, {"1": ["replace-gitdir"]})
    (repo.root / "mine.txt").write_text("a person's work in progress\n")
    repo.git("add", "mine.txt")
    main = repo.git("rev-parse", "main")
    assert repo.run() == 1
    assert events(repo, "todo.agent_failed")[-1]["reason"] == "workspace"
    assert repo.git("rev-list", "--count", f"{main}..main") in ("0", "1")
    assert repo.git("log", "-1", "--format=%(trailers:key=Batchd-Phase,valueonly)", "main") in ("", "1")
    assert "mods/m1.py" not in repo.git("ls-tree", "-r", "--name-only", "main").split()
    assert repo.git("diff", "--cached", "--name-only") == "mine.txt"


# --- names, the seed's own prompt ------------------------------------------------------------------


def test_a_file_name_that_is_not_utf8_never_stops_the_daemon(tmp_path: Path) -> None:
    """The change has a non-UTF-8 file name: it is committed byte for byte, recorded escaped, exit 0."""
    repo = hostile_repo(tmp_path, {"1": ["badname"]})
    assert repo.run() == 0
    listed = subprocess.run(
        ["git", "ls-tree", "-z", "--name-only", "main"], cwd=repo.root, capture_output=True, check=True
    ).stdout
    assert b"caf\xe9.txt" in listed.split(b"\0")
    finished = events(repo, "todo.agent_finished")[-1]
    assert "caf\\xe9.txt" in finished["files"]  # type: ignore[operator]


def test_a_todo_file_named_in_bytes_that_are_not_utf8_is_invalid_not_fatal(tmp_path: Path) -> None:
    """A todo file whose name is not UTF-8 is recorded invalid (escaped); the other todo completes."""
    repo = hostile_repo(tmp_path, {"1": []})
    (repo.root / "todos" / os.fsdecode(b"2-ready-p2-caf\xe9.md")).write_text("# x\n")
    assert repo.run() == 1
    invalid = events(repo, "todo.invalid")
    assert invalid and "\\xe9" in str(invalid[0]["path"])
    assert {e["todo_id"] for e in events(repo, "todo.completed")} == {"1"}


def test_the_seeds_rename_to_complete_and_its_work_log_just_work(tmp_path: Path) -> None:
    """As the seed's template says, the agent renames its todo -complete- and appends a work log: exit 0,
    no untracked leftovers, and the committed todo has the log."""
    repo = hostile_repo(
        tmp_path,
        {
            "1": [
                "rename todos/1-ready-p2-thing-1.md todos/1-complete-p2-thing-1.md",
                "append todos/1-complete-p2-thing-1.md \\n## Work Log\\n- 2026-12-01: implemented it",
            ]
        },
    )
    assert repo.run() == 0
    committed = repo.git("show", "main:todos/1-complete-p2-thing-1.md")
    assert "- 2026-12-01: implemented it" in committed
    assert "status: complete" in committed
    untracked = [
        ln
        for ln in repo.git("status", "--porcelain", "--untracked-files=all").splitlines()
        if ln.startswith("??")
    ]
    assert untracked == []


# --- records that are true -------------------------------------------------------------------------


def test_the_verdict_counts_planned_todos_that_are_pending_or_have_no_file(tmp_path: Path) -> None:
    """A plan names 1 (ready), 2 (pending) and 3 (no file): the run is not a success, exit 1, naming both."""
    repo = hostile_repo(tmp_path, {"1": []}, plan={1: ("One", [["1", "2", "3"]], "")})
    (repo.root / "todos" / "2-pending-p2-thing-2.md").write_text("# Two\n")
    assert repo.run() == 1
    found = verdict(repo)
    assert found["success"] is False
    assert dict(found["not_complete"]) == {"2": "pending", "3": "no todo file"}  # type: ignore[call-overload]


def test_the_status_file_says_when_agents_run_unconfined(tmp_path: Path) -> None:
    """sandbox = "none" is said in the status file and in the daemon_attached record."""
    repo = hostile_repo(tmp_path, {"1": []})
    assert repo.run() == 0
    assert "agents run without a sandbox" in repo.status()
    assert "none" in str(events(repo, "run.daemon_attached")[-1]["sandbox"])


def test_agent_logs_are_capped_keeping_the_tail(tmp_path: Path) -> None:
    """An agent that prints far more than max_log_bytes: its log is cut, the end kept."""
    repo = hostile_repo(
        tmp_path,
        {"1": ["spew 300000", "sleep 0.5"]},
        agent_extra=f"{NO_SANDBOX}\nmax_log_bytes = 65536",
    )
    assert repo.run() == 0
    log = (repo.root / ".batchd" / "logs" / "todo-1-attempt-1.log").read_bytes()
    assert len(log) <= 65536 + 4096
    assert b"bytes of earlier output dropped" in log
    assert json.dumps(events(repo, "todo.agent_finished")[-1]["files"])


# --- a gate the agent cannot game ------------------------------------------------------------------

GUARD = "import os\n\ndef check():\n    return not os.path.exists('mods/feature.py')\n"
GAMING = [
    "write mods/feature.py def check(): return True",
    "write mods/test_guard.py def check(): return True",
]


def test_passing_only_by_editing_the_tests_is_put_on_the_review_list(tmp_path: Path) -> None:
    """The agent's feature breaks an existing test, and it edits that test to pass: accepted (report is the
    default), and the status file's review list says it passes only with its own test edits."""
    repo = hostile_repo(tmp_path, {"1": GAMING}, files={"mods/test_guard.py": GUARD})
    assert repo.run() == 0
    accepted = events(repo, "todo.accepted")[-1]
    assert "passes only with its own edits to mods/test_guard.py" in str(accepted["review"])
    assert "## Review" in repo.status() and "passes only with its own edits" in repo.status()


def test_test_integrity_reject_keeps_such_a_change_out(tmp_path: Path) -> None:
    """With test_integrity = "reject" the same change is rejected with that reason and never lands."""
    repo = hostile_repo(
        tmp_path, {"1": GAMING}, files={"mods/test_guard.py": GUARD}, verify_extra='test_integrity = "reject"'
    )
    assert repo.run() == 1
    rejected = events(repo, "todo.rejected")[-1]
    assert "passes only with its own edits" in str(rejected["reason"])
    assert "mods/feature.py" not in repo.git("ls-tree", "-r", "--name-only", "main").split()
    assert repo.git("show", "main:mods/test_guard.py") == GUARD.rstrip("\n")


def test_a_forged_phase_commit_is_never_adopted(tmp_path: Path) -> None:
    """Without a sandbox, an agent plants a commit that looks like batchd's phase commit (the run's
    trailers, on batchd's own branch) but holds a broken module: batchd makes its own commit, and the
    branch never gets the forged tree."""
    repo = hostile_repo(tmp_path, {"1": ["forge-phase-commit"]})
    assert repo.run() == 0
    run_id = str(events(repo, "run.started")[0]["run_id"])
    assert f"Batchd-Run: {run_id}" in repo.git("log", "-1", "--format=%B", "forged")  # the forgery was made
    assert repo.git("show", "main:mods/base.py") == repo.git("show", "HEAD~1:mods/base.py")
    assert "def check():" in repo.git("show", "main:mods/base.py")
    assert "forged" not in repo.git("log", "--format=%s", "main")


def test_a_gitignore_hiding_completed_todos_does_not_stop_the_phase_commit(tmp_path: Path) -> None:
    """The change adds `*-complete-*.md` to .gitignore: batchd's own renamed todo is committed anyway."""
    repo = hostile_repo(tmp_path, {"1": ["write .gitignore *-complete-*.md"]})
    assert repo.run() == 0
    assert "todos/1-complete-p2-thing-1.md" in repo.git("ls-tree", "-r", "--name-only", "main").split()


def test_a_result_with_nan_fails_nothing(tmp_path: Path) -> None:
    """An agent whose JSON result carries NaN and Infinity finishes like any other; no crash."""
    repo = hostile_repo(
        tmp_path, {"1": ['print {"type": "result", "total_cost_usd": NaN, "num_turns": Infinity}']}
    )
    assert repo.run() == 0
    assert events(repo, "todo.agent_finished")
