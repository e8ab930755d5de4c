"""daemon.world.keepboth: cherry-picks whose conflicts are insert/insert, on real repositories."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
from gitrepo import commit_files, git, head, init_repo

from daemon.world.keepboth import Picked, cherry_pick

BASE = "def base():\n    return 0\n"


def _fn(name: str, value: int) -> str:
    return f"\n\ndef {name}():\n    return {value}\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo", {"lib.py": BASE, "notes.txt": "one\ntwo\nthree\n"})


def _pick(repo: Path, sha: str, *, keep_both: bool = True) -> Picked:
    return cherry_pick(repo, sha, keep_both=keep_both)


def _clean(repo: Path) -> bool:
    """Nothing in progress and nothing uncommitted."""
    return not (repo / ".git" / "CHERRY_PICK_HEAD").exists() and git(repo, "status", "--porcelain") == ""


def _blob_commit(repo: Path, base: str, files: Mapping[str, bytes | None], message: str) -> str:
    """A commit on ``base`` setting raw bytes (None deletes), names possibly not UTF-8."""
    index = repo.parent / "blob-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}

    def run(*args: str, data: bytes | None = None) -> str:
        proc = subprocess.run(["git", *args], cwd=repo, input=data, capture_output=True, env=env, check=True)
        return os.fsdecode(proc.stdout).strip()

    run("read-tree", base)
    for rel, data in files.items():
        if data is None:
            run("update-index", "--force-remove", "--", rel)
        else:
            blob = run("hash-object", "-w", "--stdin", data=data)
            run("update-index", "--add", "--cacheinfo", "100644", blob, rel)
    tree = run("write-tree")
    index.unlink()
    return run("commit-tree", tree, "-p", base, "-m", message)


def test_appends_at_one_place_are_kept_both_ours_first(repo: Path) -> None:
    """Three commits appending to one file: the 2nd and 3rd are resolved, green head's lines first."""
    base = head(repo)
    shas = [
        commit_files(repo, base, {"lib.py": BASE + _fn(f"f_{i}", i)}, message=f"todo {i}") for i in (1, 2, 3)
    ]
    picks = [_pick(repo, sha) for sha in shas]
    assert picks[0] == Picked(applied=True)
    assert picks[1] == picks[2] == Picked(applied=True, conflicts=("lib.py",), resolved=True)
    assert (repo / "lib.py").read_text() == BASE + _fn("f_1", 1) + _fn("f_2", 2) + _fn("f_3", 3)
    assert _clean(repo)


def test_resolved_commit_keeps_the_message_and_author(repo: Path) -> None:
    """The resolved commit is the todo's: same message (its trailers) and author, one parent."""
    base = head(repo)
    first = commit_files(repo, base, {"lib.py": BASE + _fn("a", 1)})
    message = "todo 2\n\nBatchd-Todo: 2\nBatchd-Attempt: 1"
    env = {"GIT_AUTHOR_NAME": "Agent Two", "GIT_AUTHOR_EMAIL": "two@example.com"}
    tree = git(repo, "rev-parse", f"{commit_files(repo, base, {'lib.py': BASE + _fn('b', 2)})}^{{tree}}")
    second = git(repo, "commit-tree", tree, "-p", base, "-m", message, env=env)
    _pick(repo, first)
    before = head(repo)
    assert _pick(repo, second).resolved
    assert git(repo, "log", "-1", "--format=%B") == message
    assert git(repo, "log", "-1", "--format=%an <%ae>") == "Agent Two <two@example.com>"
    assert git(repo, "rev-parse", "HEAD^") == before


def test_clean_changes_elsewhere_in_the_file_are_kept(repo: Path) -> None:
    """A commit that edits an early line cleanly and appends where another appended: both kept."""
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nthree\nours\n"}))
    assert _pick(repo, commit_files(repo, base, {"notes.txt": "ONE\ntwo\nthree\ntheirs\n"})).resolved
    assert (repo / "notes.txt").read_text() == "ONE\ntwo\nthree\nours\ntheirs\n"


def test_edit_edit_on_one_line_is_not_resolved(repo: Path) -> None:
    """Both change line two: a real conflict, the pick aborted and HEAD left as it was."""
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"notes.txt": "one\nTWO\nthree\n"}))
    before = head(repo)
    picked = _pick(repo, commit_files(repo, base, {"notes.txt": "one\n2\nthree\n"}))
    assert picked == Picked(applied=False, conflicts=("notes.txt",))
    assert head(repo) == before
    assert (repo / "notes.txt").read_text() == "one\nTWO\nthree\n"
    assert _clean(repo)


def test_insert_plus_a_changed_line_in_one_hunk_is_not_resolved(repo: Path) -> None:
    """One side rewrites the last line while the other appends after it: the hunk has a base line."""
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nTHREE\nfour\n"}))
    assert not _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nthree\n4\n"})).applied


def test_without_keep_both_an_insert_conflict_stays_a_conflict(repo: Path) -> None:
    """keep_both=False (redo and strict modes): today's behaviour, the pick aborted."""
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"lib.py": BASE + _fn("a", 1)}))
    picked = _pick(repo, commit_files(repo, base, {"lib.py": BASE + _fn("b", 2)}), keep_both=False)
    assert picked == Picked(applied=False, conflicts=("lib.py",))
    assert _clean(repo)


def test_new_file_added_on_both_sides_keeps_shared_start_once(repo: Path) -> None:
    """add/add: the shared import paragraph once, then both tests, each after its blank line."""
    base = head(repo)
    ours = "import lib\n\n\ndef test_a():\n    assert lib.base() == 0\n"
    theirs = "import lib\n\n\ndef test_b():\n    assert lib.base() == 0\n"
    _pick(repo, commit_files(repo, base, {"test_new.py": ours}))
    assert _pick(repo, commit_files(repo, base, {"test_new.py": theirs})).resolved
    assert (repo / "test_new.py").read_text() == (
        "import lib\n\n\ndef test_a():\n    assert lib.base() == 0\n"
        "\n\ndef test_b():\n    assert lib.base() == 0\n"
    )


def test_new_file_with_a_shared_first_line_keeps_two_definitions(repo: Path) -> None:
    """add/add diverging inside a paragraph: nothing is shared, so no body is merged into another."""
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"new.py": "def f():\n    return 1\n"}))
    assert _pick(repo, commit_files(repo, base, {"new.py": "def f():\n    return 2\n"})).resolved
    assert (repo / "new.py").read_text() == "def f():\n    return 1\ndef f():\n    return 2\n"


def test_modify_delete_is_not_resolved(repo: Path) -> None:
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"lib.py": None}))
    picked = _pick(repo, commit_files(repo, base, {"lib.py": BASE + _fn("a", 1)}))
    assert picked == Picked(applied=False, conflicts=("lib.py",))
    assert _clean(repo)


def test_rename_on_one_side_is_not_resolved(repo: Path) -> None:
    """Ours moved the file and appended, theirs appended at the old path: git matches the rename,
    which keep-both leaves to a person (or agent)."""
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"lib.py": None, "core.py": BASE + _fn("a", 1)}))
    picked = _pick(repo, commit_files(repo, base, {"lib.py": BASE + _fn("b", 2)}))
    assert not picked.applied
    assert picked.conflicts == ("core.py",)
    assert _clean(repo)


def test_binary_file_is_not_resolved(repo: Path) -> None:
    base = _blob_commit(repo, head(repo), {"data.bin": b"\0\1\2\n"}, "binary")
    git(repo, "reset", "-q", "--hard", base)
    _pick(repo, _blob_commit(repo, base, {"data.bin": b"\0\1\2\nours\n"}, "ours"))
    assert not _pick(repo, _blob_commit(repo, base, {"data.bin": b"\0\1\2\ntheirs\n"}, "theirs")).applied
    assert _clean(repo)


def test_merge_turned_off_in_gitattributes_is_not_resolved(repo: Path) -> None:
    """``-merge`` (or ``binary``) says the project wants no line merge of the file."""
    base = commit_files(repo, head(repo), {".gitattributes": "*.txt -merge\n"})
    git(repo, "reset", "-q", "--hard", base)
    _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nthree\nours\n"}))
    assert not _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nthree\ntheirs\n"})).applied


def test_conflict_marker_lines_in_the_content_are_not_resolved(repo: Path) -> None:
    """A side that holds lines like the merge's own markers is not parsed: left as a conflict."""
    base = head(repo)
    marker = "=" * 40 + "\n"
    _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nthree\nours\n"}))
    theirs = commit_files(repo, base, {"notes.txt": f"one\ntwo\nthree\n{marker}theirs\n"})
    assert not _pick(repo, theirs).applied


def test_missing_final_newline_is_not_resolved(repo: Path) -> None:
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nthree\nours\n"}))
    assert not _pick(repo, commit_files(repo, base, {"notes.txt": "one\ntwo\nthree\ntheirs"})).applied


def test_non_utf8_file_name_is_resolved(repo: Path) -> None:
    """A name that is not UTF-8 round-trips: the right file gets both appends, shown escaped."""
    name = b"caf\xe9.txt"
    base = _blob_commit(repo, head(repo), {os.fsdecode(name): b"start\n"}, "add")
    git(repo, "reset", "-q", "--hard", base)
    _pick(repo, _blob_commit(repo, base, {os.fsdecode(name): b"start\nours\n"}, "ours"))
    picked = _pick(repo, _blob_commit(repo, base, {os.fsdecode(name): b"start\ntheirs\n"}, "theirs"))
    assert picked == Picked(applied=True, conflicts=("caf\\xe9.txt",), resolved=True)
    assert (repo / os.fsdecode(name)).read_bytes() == b"start\nours\ntheirs\n"
    assert _clean(repo)


def test_one_unresolvable_file_leaves_the_whole_pick_conflicted(repo: Path) -> None:
    """An insert/insert file beside an edit/edit one: all or nothing, nothing half-committed."""
    base = head(repo)
    _pick(repo, commit_files(repo, base, {"lib.py": BASE + _fn("a", 1), "notes.txt": "one\nTWO\nthree\n"}))
    before = head(repo)
    picked = _pick(
        repo, commit_files(repo, base, {"lib.py": BASE + _fn("b", 2), "notes.txt": "one\n2\nthree\n"})
    )
    assert picked == Picked(applied=False, conflicts=("lib.py", "notes.txt"))
    assert head(repo) == before
    assert _clean(repo)


def test_crlf_file_is_kept_both(repo: Path) -> None:
    """Windows line ends: the markers git writes then end in CRLF too, and are still read."""
    base = commit_files(repo, head(repo), {"win.txt": "a\r\nb\r\n"})
    git(repo, "reset", "-q", "--hard", base)
    _pick(repo, commit_files(repo, base, {"win.txt": "a\r\nb\r\nours\r\n"}))
    assert _pick(repo, commit_files(repo, base, {"win.txt": "a\r\nb\r\ntheirs\r\n"})).resolved
    assert (repo / "win.txt").read_bytes() == b"a\r\nb\r\nours\r\ntheirs\r\n"
