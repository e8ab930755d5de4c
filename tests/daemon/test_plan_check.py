"""`batchd plan check` with no plan lints the todos folder: each bad file named with what is wrong and
how to fix it, exit 1; a clean folder exits 0. Real repositories, `batchd` as a real process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from procs import add_plan, batchd, make_repo

GOOD = b"---\nstatus: ready\npriority: p2\n---\n\n# Good\n"

# (file name as bytes, content, what the problem line says)
BAD_FILES = {
    "bad name": (b"fix-the-login.md", b"# Login\n", "does not have the four parts"),
    "bad status in the name": (b"7-doing-p2-login.md", b"# Login\n", "status 'doing' is not one of"),
    "bad front matter": (b"7-ready-p2-login.md", b"---\nstatus: [ready\n---\n# Login\n", "not valid YAML"),
    "unknown dependency": (
        b"7-ready-p2-login.md",
        b"---\ndependencies: [99]\n---\n# Login\n",
        "depends on 99",
    ),
    "non-UTF-8 name": (b"7-ready-p2-caf\xe9.md", b"# Cafe\n", "is not valid UTF-8"),
    "non-UTF-8 content": (b"7-ready-p2-login.md", b"# Caf\xe9\n", "is not UTF-8 text"),
    "front matter disagrees": (
        b"7-ready-p2-login.md",
        b"---\nstatus: pending\n---\n# L\n",
        "but the file name says",
    ),
    "not a .md file": (b"7-ready-p2-login.txt", b"# Login\n", "does not end in .md"),
}


def repo_with(tmp_path: Path, files: dict[bytes, bytes]) -> Path:
    root = make_repo(tmp_path / "repo", {})
    (root / "todos" / "1-ready-p2-good.md").write_bytes(GOOD)
    for name, content in files.items():
        (root / "todos" / os.fsdecode(name)).write_bytes(content)
    return root


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_each_kind_of_bad_file_is_named_with_its_fix(tmp_path: Path, kind: str) -> None:
    """One bad file beside a good one: exit 1, a line naming the file and the problem, then its fix."""
    name, content, says = BAD_FILES[kind]
    root = repo_with(tmp_path, {name: content})
    done = batchd(root, "plan", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    shown = "todos/" + name.decode("utf-8", "backslashreplace")
    lines = done.stderr.splitlines()
    index = next(i for i, ln in enumerate(lines) if ln.startswith(f"{shown}: "))
    assert says in lines[index], done.stderr
    assert lines[index + 1].startswith("  fix: ")
    assert lines[-1] == "1 problem(s)"


def test_a_dependency_cycle_names_both_files(tmp_path: Path) -> None:
    """Two todos that depend on each other: both are named, with the cycle."""
    root = repo_with(
        tmp_path,
        {
            b"7-ready-p2-a.md": b"---\ndependencies: [8]\n---\n# A\n",
            b"8-ready-p2-b.md": b"---\ndependencies: [7]\n---\n# B\n",
        },
    )
    done = batchd(root, "plan", "check")
    assert done.returncode == 1
    assert "todos/7-ready-p2-a.md: is on a dependency cycle: 7 -> 8 -> 7" in done.stderr
    assert "todos/8-ready-p2-b.md: is on a dependency cycle: 8 -> 7 -> 8" in done.stderr


def test_json_lists_every_problem(tmp_path: Path) -> None:
    """--json: ok false and one entry per bad file with where, message, fix and todo id."""
    root = repo_with(tmp_path, {name: content for name, content, _ in list(BAD_FILES.values())[:2]})
    done = batchd(root, "plan", "check", "--json")
    assert done.returncode == 1
    data = json.loads(done.stdout)
    assert data["ok"] is False
    assert sorted(p["where"] for p in data["problems"]) == [
        "todos/7-doing-p2-login.md",
        "todos/fix-the-login.md",
    ]
    assert all(p["fix"] for p in data["problems"])


def test_a_clean_folder_exits_0(tmp_path: Path) -> None:
    """Only good todos (and the files batchd ignores, such as README.md): exit 0, "ok"."""
    root = repo_with(tmp_path, {b"README.md": b"# Todos\n", b"2-complete-p1-done.md": b"# Done\n"})
    done = batchd(root, "plan", "check")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: todos/: 2 todo files, no problems")


def test_with_a_plan_the_folder_is_linted_too(tmp_path: Path) -> None:
    """A clean plan does not hide a bad file the plan does not name."""
    root = repo_with(tmp_path, {b"fix-the-login.md": b"# Login\n"})
    add_plan(root, "### Phase 1: One\n- **Batch 1.1:** Todos 1\n")
    done = batchd(root, "plan", "check")
    assert done.returncode == 1
    assert "todos/fix-the-login.md: file name does not have the four parts" in done.stderr


def test_help_says_it_fits_a_pre_commit_hook() -> None:
    """`plan check --help` says what it checks and how to use it in pre-commit."""
    done = batchd(None, "plan", "check", "--help")
    assert "pre-commit" in done.stdout and "cycles" in done.stdout
