"""daemon.world.collect: an agent's workspace becomes one commit, and what it may not change stays out.

Each test builds a real repository, a real workspace (``agentspace.create``), does to the workspace
what an agent would (with the git CLI and plain file writes), and collects.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from gitrepo import git, head, init_repo, write

from daemon.world import agentspace
from daemon.world.collect import Collected, CollectFailed, Policy, collect

TODO = "todos/7-ready-p2-thing.md"
TODO_TEXT = b"---\nstatus: ready\n---\n\n# Thing 7\n\nDo it.\n"
PROTECTED = {
    "batchd.toml": "batchd's configuration",
    "todos/": "the todos folder",
    "plans/EXECUTION-STATUS.md": "the status file",
    ".batchd/": "batchd's own folder",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(
        tmp_path / "repo",
        {
            "batchd.toml": "[verify]\ncommands = [['make']]\n",
            "src/app.py": "x = 1\n",
            "tests/test_app.py": "def test(): pass\n",
            "todos/2-ready-p2-other.md": "# Other\n",
            ".gitignore": "*.log\nbuild/\n",
        },
    )


@pytest.fixture
def ws(repo: Path) -> Path:
    return agentspace.create(
        repo, repo / ".batchd" / "workspaces" / "todo-7", branch="batchd/todo-7-a1", base_sha=head(repo),
        files={TODO: TODO_TEXT},
    )  # fmt: skip


def policy(**overrides: object) -> Policy:
    values: dict[str, object] = {
        "protected": PROTECTED,
        "own_todo": TODO,
        "own_todo_text": TODO_TEXT,
        "todos_dir": "todos",
        "test_globs": ("tests/**",),
    }
    values.update(overrides)
    return Policy(**values)  # type: ignore[arg-type]


def run(repo: Path, ws: Path, **overrides: object) -> Collected:
    return collect(
        repo,
        ws,
        head(repo),
        message="batchd: todo 7",
        trailers={"Batchd-Todo": "7"},
        branch="batchd/todo-7-a1",
        policy=policy(**overrides),
    )


def tree(repo: Path, sha: str) -> dict[str, str]:
    """path -> mode of every entry in the commit."""
    out = git(repo, "ls-tree", "-r", "--full-tree", sha)
    return {line.split("\t", 1)[1]: line.split()[0] for line in out.splitlines()}


def test_committed_staged_and_untracked_work_becomes_one_commit_on_the_base(repo: Path, ws: Path) -> None:
    """What the agent committed, left modified and left new all land in ONE commit on the base."""
    write(ws, {"src/new.py": "y = 2\n"})
    git(ws, "add", "src/new.py")
    git(ws, "commit", "-qm", "agent's own commit")
    write(ws, {"src/app.py": "x = 2\n", "docs/notes.md": "n\n"})
    change = run(repo, ws).change
    assert change is not None
    assert change.files == ("docs/notes.md", "src/app.py", "src/new.py")
    assert git(repo, "rev-parse", f"{change.sha}^") == head(repo)
    assert "Batchd-Todo: 7" in git(repo, "log", "-1", "--format=%B", change.sha)
    assert git(repo, "rev-parse", "batchd/todo-7-a1") == change.sha
    assert len(change.agent_commits) == 1


def test_a_file_the_agent_added_despite_gitignore_is_kept(repo: Path, ws: Path) -> None:
    """`git add -f` of an ignored file is the agent saying it belongs in the change."""
    write(ws, {"build/keep.txt": "k\n", "build/junk.txt": "j\n"})
    git(ws, "add", "-f", "build/keep.txt")
    change = run(repo, ws).change
    assert change is not None
    assert change.files == ("build/keep.txt",)


def test_batchd_files_are_put_back_and_reported(repo: Path, ws: Path) -> None:
    """batchd.toml, another todo, the status file and .batchd/ come out of the change, each with why."""
    write(
        ws,
        {
            "batchd.toml": "[verify]\ncommands = [['true']]\n",
            "plans/EXECUTION-STATUS.md": "fake\n",
            ".batchd/x": "x\n",
            "src/app.py": "x = 3\n",
        },
    )
    (ws / "todos" / "2-ready-p2-other.md").unlink()
    collected = run(repo, ws)
    assert collected.change is not None
    assert collected.change.files == ("src/app.py",)
    dropped = " | ".join(collected.dropped)
    assert "batchd.toml (batchd's configuration)" in dropped
    assert "todos/2-ready-p2-other.md (the todos folder)" in dropped
    assert "plans/EXECUTION-STATUS.md (the status file)" in dropped
    assert "[['make']]" in git(repo, "show", f"{collected.change.sha}:batchd.toml")


def test_its_own_todo_copy_is_not_reported_but_an_appended_work_log_is_carried(repo: Path, ws: Path) -> None:
    """The todo file batchd wrote into the workspace is not the agent's change; a work log it appended is
    kept as the note the phase commit adds to the committed todo file."""
    with (ws / TODO).open("a", encoding="utf-8") as f:
        f.write("\n## Work Log\n- 2026-12-01: did it\n")
    write(ws, {"src/app.py": "x = 4\n"})
    collected = run(repo, ws)
    assert collected.change is not None
    assert collected.dropped == ()
    assert collected.change.note == "## Work Log\n- 2026-12-01: did it"


def test_a_seed_style_rename_to_complete_keeps_the_work_log(repo: Path, ws: Path) -> None:
    """The seed tells agents to rename their todo -complete-: batchd renames it, the work log is kept."""
    done = ws / "todos" / "7-complete-p2-thing.md"
    (ws / TODO).rename(done)
    done.write_text(done.read_text().replace("status: ready", "status: complete") + "\n## Work Log\n- done\n")
    write(ws, {"src/app.py": "x = 5\n"})
    collected = run(repo, ws)
    assert collected.change is not None
    assert collected.change.files == ("src/app.py",)
    assert collected.change.note == "## Work Log\n- done"


def test_a_change_of_only_batchd_files_is_no_change(repo: Path, ws: Path) -> None:
    """Nothing left once batchd's files are put back: no commit, and what was dropped is said."""
    write(ws, {"batchd.toml": "x = 1\n"})
    collected = run(repo, ws)
    assert collected.change is None
    assert any(d.startswith("batchd.toml") for d in collected.dropped)


def test_a_symlink_out_of_the_repository_is_dropped_one_inside_is_kept(repo: Path, ws: Path) -> None:
    """A link to /etc/passwd or ../.. is dropped with its target named; a link to a file inside stays."""
    (ws / "passwd").symlink_to("/etc/passwd")
    (ws / "src" / "up").symlink_to("../../outside.txt")
    (ws / "src" / "gitconfig").symlink_to("../.git/config")
    (ws / "src" / "same").symlink_to("app.py")
    collected = run(repo, ws)
    assert collected.change is not None
    assert collected.change.files == ("src/same",)
    assert tree(repo, collected.change.sha)["src/same"] == "120000"
    shown = " | ".join(collected.dropped)
    assert "passwd (a symbolic link to /etc/passwd, outside the repository)" in shown
    assert "src/up" in shown and "src/gitconfig" in shown


def test_an_embedded_repository_is_committed_as_files(repo: Path, ws: Path) -> None:
    """A folder with its own .git (a nested `git init`) would be a gitlink to nothing: its files go in."""
    nested = ws / "vendor" / "lib"
    nested.mkdir(parents=True)
    git(nested, "init", "-q")
    write(nested, {"lib.py": "V = 1\n", "sub/more.py": "W = 2\n"})
    git(nested, "add", "-A")
    git(nested, "commit", "-qm", "vendored")
    collected = run(repo, ws)
    assert collected.change is not None
    entries = tree(repo, collected.change.sha)
    assert entries["vendor/lib/lib.py"] == "100644"
    assert entries["vendor/lib/sub/more.py"] == "100644"
    assert "160000" not in entries.values()
    assert (nested / ".git").is_dir()  # the workspace is left as the agent made it
    assert any("is a repository of its own" in w for w in collected.change.warnings)


def test_reset_hard_away_from_the_base_fails_the_attempt(repo: Path) -> None:
    """An agent that moved its branch back (reset --hard HEAD~1) would revert the last phase: refused."""
    write(repo, {"src/phase1.py": "done = True\n"})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "phase 1")
    ws = agentspace.create(
        repo, repo / ".batchd" / "workspaces" / "todo-7", branch="batchd/todo-7-a1", base_sha=head(repo),
        files={TODO: TODO_TEXT},
    )  # fmt: skip
    git(ws, "reset", "-q", "--hard", "HEAD~1")
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws)
    assert failed.value.reason == "history"
    assert "no longer descends from its base" in failed.value.message


def test_other_history_checked_out_fails_the_attempt(repo: Path, ws: Path) -> None:
    """An orphan branch with unrelated history is not built on the base either."""
    git(ws, "checkout", "-q", "--orphan", "elsewhere")
    git(ws, "commit", "-q", "--allow-empty", "-m", "unrelated history")
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws)
    assert failed.value.reason == "history"


def test_a_replaced_git_directory_fails_the_attempt(repo: Path, ws: Path) -> None:
    """A workspace whose .git was swapped for a file pointing at the person's repository is refused."""
    import shutil

    shutil.rmtree(ws / ".git")
    (ws / ".git").write_text(f"gitdir: {repo / '.git'}\n")
    write(ws, {"src/app.py": "x = 9\n"})
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws)
    assert failed.value.reason == "workspace"
    assert head(repo) == git(repo, "rev-parse", "main")


def test_a_change_larger_than_allowed_fails_before_it_is_stored(repo: Path, ws: Path) -> None:
    """A new file over max_change_bytes fails the attempt, naming both sizes."""
    with (ws / "big.bin").open("wb") as f:
        f.truncate(3 * 1024 * 1024)
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws, max_change_bytes=1024 * 1024)
    assert failed.value.reason == "too_large"
    assert "3.0 MiB" in failed.value.message and "1.0 MiB" in failed.value.message


def test_deleting_a_protected_file_fails_the_attempt(repo: Path, ws: Path) -> None:
    """With [agent] protect = ["tests/**"], deleting a test file fails the attempt."""
    (ws / "tests" / "test_app.py").unlink()
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws, protect=("tests/**",))
    assert failed.value.reason == "protected"
    assert "tests/test_app.py" in failed.value.message


def test_edits_to_existing_test_files_are_listed(repo: Path, ws: Path) -> None:
    """A changed existing test file is listed for the test-integrity check; a new test file is not."""
    write(ws, {"tests/test_app.py": "def test(): assert True\n", "tests/test_new.py": "def test(): pass\n"})
    change = run(repo, ws).change
    assert change is not None
    assert change.test_edits == ("tests/test_app.py",)


def test_deleting_what_an_earlier_todo_added_is_flagged(repo: Path, ws: Path) -> None:
    """A deletion of a file an accepted todo changed earlier in the run is a warning for review."""
    (ws / "src" / "app.py").unlink()
    change = run(repo, ws, earlier={"src/app.py": "3"}).change
    assert change is not None
    assert change.warnings == ("deletes src/app.py, which #3 changed earlier in this run",)


def test_a_file_name_that_is_not_utf8_is_collected_and_shown_escaped(repo: Path, ws: Path) -> None:
    """A non-UTF-8 name lands in the commit byte for byte; the record shows it escaped."""
    (ws / os.fsdecode(b"caf\xe9.txt")).write_bytes(b"x\n")
    change = run(repo, ws).change
    assert change is not None
    assert change.files == ("caf\\xe9.txt",)
    listed = subprocess.run(
        ["git", "ls-tree", "-z", "--name-only", change.sha], cwd=repo, capture_output=True, check=True
    ).stdout
    assert b"caf\xe9.txt\0" in listed


def test_a_file_where_the_status_files_folder_must_be_is_dropped(repo: Path, ws: Path) -> None:
    """A file named `plans` would leave no room for plans/EXECUTION-STATUS.md: it is put back (here:
    removed), so the phase commit can still write the status file."""
    write(ws, {"plans": "not a folder\n", "src/app.py": "x = 6\n"})
    collected = run(repo, ws)
    assert collected.change is not None
    assert "plans" not in tree(repo, collected.change.sha)
    assert any(d.startswith("plans (a file where the folder of the status file") for d in collected.dropped)


def test_its_own_todo_grown_huge_is_not_read_or_carried(repo: Path, ws: Path) -> None:
    """An agent that grows its todo file to many megabytes: nothing of it is read whole or carried."""
    with (ws / TODO).open("ab") as f:
        f.truncate(8 * 1024 * 1024)
    write(ws, {"src/app.py": "x = 7\n"})
    collected = run(repo, ws)
    assert collected.change is not None and collected.change.note == ""
    assert any("its own todo file" in d for d in collected.dropped)


def test_a_tracked_file_grown_past_the_limit_fails_before_it_is_hashed(repo: Path, ws: Path) -> None:
    """Growing an existing file counts against max_change_bytes like a new one."""
    with (ws / "src" / "app.py").open("ab") as f:
        f.truncate(3 * 1024 * 1024)
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws, max_change_bytes=1024 * 1024)
    assert failed.value.reason == "too_large"


def test_a_work_log_with_control_bytes_is_not_carried(repo: Path, ws: Path) -> None:
    """A 'note' holding NUL or other control bytes is not text for a todo file."""
    with (ws / TODO).open("ab") as f:
        f.write(b"\n## Work Log\n\x00\x01 binary\n")
    write(ws, {"src/app.py": "x = 8\n"})
    change = run(repo, ws).change
    assert change is not None and change.note == ""


def test_the_verify_commands_own_script_and_a_new_conftest_are_test_edits(repo: Path, ws: Path) -> None:
    """Editing the script the checks run, or adding a conftest.py, is editing how the tests judge."""
    write(repo, {"check.sh": "exit 1\n"})
    git(repo, "add", "check.sh")
    git(repo, "commit", "-qm", "check")
    ws2 = agentspace.create(
        repo, repo / ".batchd" / "workspaces" / "todo-8", branch="b8", base_sha=head(repo), files={}
    )
    write(ws2, {"check.sh": "exit 0\n", "src/conftest.py": "collect_ignore = ['.']\n"})
    change = collect(
        repo, ws2, head(repo), message="m", trailers={}, branch="b8",
        policy=policy(test_infra=("**/conftest.py", "/check.sh")),
    ).change  # fmt: skip
    assert change is not None
    assert change.test_edits == ("check.sh", "src/conftest.py")


def test_a_folder_in_place_of_the_status_file_is_dropped(repo: Path, ws: Path) -> None:
    """plans/EXECUTION-STATUS.md/x would make the status file a folder: put back."""
    write(ws, {"plans/EXECUTION-STATUS.md/x": "x\n", "src/app.py": "x = 9\n"})
    collected = run(repo, ws)
    assert collected.change is not None
    assert not any(p.startswith("plans/") for p in tree(repo, collected.change.sha))
    assert any("inside the name of the status file" in d for d in collected.dropped)


def test_a_marker_file_whose_folder_became_a_link_fails_the_attempt(
    repo: Path, ws: Path, tmp_path: Path
) -> None:
    """``src/app.py`` was given with markers; the agent swapped ``src/`` for a link to a folder
    outside whose app.py is clean: the attempt fails, saying why, not "resolved"."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.py").write_text("x = 2\n")
    shutil.rmtree(ws / "src")
    (ws / "src").symlink_to(outside)
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws, markers=("src/app.py",))
    assert failed.value.reason == "conflict_markers"
    assert "src/app.py" in failed.value.message and "symbolic link" in failed.value.message


def test_ten_character_markers_left_in_fail_the_attempt(repo: Path, ws: Path) -> None:
    (ws / "src" / "app.py").write_text("<<<<<<<<<< HEAD\nx = 2\n==========\nx = 3\n>>>>>>>>>> todo\n")
    with pytest.raises(CollectFailed) as failed:
        run(repo, ws, markers=("src/app.py",))
    assert failed.value.reason == "conflict_markers"
    assert "left git's conflict markers in src/app.py" in failed.value.message


def test_a_marker_file_deleted_is_a_resolved_conflict(repo: Path, ws: Path) -> None:
    (ws / "src" / "app.py").unlink()
    collected = run(repo, ws, markers=("src/app.py",))
    assert collected.change is not None and "src/app.py" not in tree(repo, collected.change.sha)


def test_a_work_log_is_never_read_through_a_folder_swapped_for_a_link(
    repo: Path, ws: Path, tmp_path: Path
) -> None:
    """The agent replaces the todo's folder with a link to a folder outside its workspace holding a
    file of the same name (the placed text plus a "work log"): nothing of it becomes the note."""
    outside = tmp_path / "elsewhere" / "todos"
    outside.mkdir(parents=True)
    (outside / Path(TODO).name).write_text(TODO_TEXT.decode() + "\n## Work Log\n- secret\n", encoding="utf-8")
    nested = f"work/{TODO}"
    (ws / "work").symlink_to(outside.parent)
    write(ws, {"src/app.py": "x = 6\n"})
    collected = run(repo, ws, own_todo=nested, todos_dir="work/todos")
    assert collected.change is not None
    assert "secret" not in collected.change.note
