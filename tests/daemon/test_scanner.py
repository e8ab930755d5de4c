"""Scanning a todos folder (folder-level validation) and diffing scans against what the daemon knows."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from daemon.exceptions import TodoFileError
from daemon.intake import scanner
from daemon.intake.scanner import (
    Added,
    Edited,
    Fixed,
    Invalid,
    KnownTodo,
    Removed,
    ScanResult,
    StatusChanged,
    diff_scan,
    scan_folder,
)
from daemon.intake.todofile import TodoStatus

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples" / "todos"


def write(folder: Path, name: str, deps: tuple[str, ...] = (), body: str = "# T\n") -> Path:
    listed = ", ".join(f'"{d}"' for d in deps)
    path = folder / name
    path.write_text(f"---\ndependencies: [{listed}]\n---\n{body}", encoding="utf-8")
    return path


def reasons(result: ScanResult) -> dict[str, str]:
    return {bad.path.name: bad.reason for bad in result.invalid}


def known(result: ScanResult) -> dict[str, KnownTodo]:
    """What a daemon would record from a scan."""
    out = {k: KnownTodo(path=t.path, status=t.status, digest=t.digest) for k, t in result.todos.items()}
    for bad in result.invalid:
        out[bad.key] = KnownTodo(path=bad.path, status=None, digest=None, invalid_reason=bad.reason)
    return out


def test_examples_folder_scans_clean() -> None:
    """The two example todos are valid: 274's dependency on 273 is known."""
    result = scan_folder(EXAMPLES)
    assert sorted(result.todos) == ["273", "274"]
    assert result.invalid == ()


def test_non_todos_are_skipped_silently(tmp_path: Path) -> None:
    """README, editor files, dot files, other files and folders are neither todos nor invalid."""
    write(tmp_path, "1-ready-p1-a.md")
    for name in ["README.md", ".1-ready-p1-a.md.swp", "1-ready-p1-a.md~", "4913", "notes.txt", ".gitkeep"]:
        (tmp_path / name).write_text("x", encoding="utf-8")
    (tmp_path / "archive").mkdir()
    result = scan_folder(tmp_path)
    assert list(result.todos) == ["1"]
    assert result.invalid == ()


def test_bad_name_is_invalid_with_file_key(tmp_path: Path) -> None:
    """A .md file off the naming convention is reported under a file: key."""
    write(tmp_path, "fix-login.md")
    (bad,) = scan_folder(tmp_path).invalid
    assert bad.key == "file:fix-login.md"
    assert bad.todo_id is None
    assert "four parts" in bad.reason
    assert bad.hint


def test_duplicate_id_001_and_1(tmp_path: Path) -> None:
    """001 and 1 are one id: the later-sorted file is invalid and names the other."""
    write(tmp_path, "001-ready-p1-a.md")
    write(tmp_path, "1-ready-p2-b.md")
    result = scan_folder(tmp_path)
    assert result.todos["1"].id == "001"
    (bad,) = result.invalid
    assert bad.path.name == "1-ready-p2-b.md"
    assert bad.key == "file:1-ready-p2-b.md"
    assert bad.reason == "id 1 is already used by 001-ready-p1-a.md (ids compare as numbers)"


def test_duplicate_id_held_by_a_broken_file(tmp_path: Path) -> None:
    """A broken first file still holds its id, so the verdict does not flip when it is fixed."""
    (tmp_path / "5-ready-p1-a.md").write_text("---\ntags: [\n---\n", encoding="utf-8")
    write(tmp_path, "5-ready-p1-b.md")
    result = scan_folder(tmp_path)
    assert result.todos == {}
    assert "not valid YAML" in reasons(result)["5-ready-p1-a.md"]
    assert "already used by 5-ready-p1-a.md" in reasons(result)["5-ready-p1-b.md"]


def test_unknown_dependency_is_invalid(tmp_path: Path) -> None:
    """A dependency on an id no file has makes the todo invalid, naming the id."""
    write(tmp_path, "2-ready-p1-a.md", deps=("1", "099"))
    write(tmp_path, "1-ready-p1-b.md")
    result = scan_folder(tmp_path)
    assert list(result.todos) == ["1"]
    (bad,) = result.invalid
    assert bad.key == "2"
    assert bad.reason.startswith("depends on 099, which no todo file in")


def test_known_ids_satisfy_dependencies(tmp_path: Path) -> None:
    """Ids the daemon knows (archived complete todos) count as existing."""
    write(tmp_path, "2-ready-p1-a.md", deps=("1",))
    assert list(scan_folder(tmp_path, known_ids={"001"}).todos) == ["2"]


def test_dependency_on_invalid_todo_stays_valid(tmp_path: Path) -> None:
    """A todo whose dependency is invalid is itself valid (the daemon blocks it later)."""
    (tmp_path / "1-ready-p1-a.md").write_bytes(b"\x00binary")
    write(tmp_path, "2-ready-p1-b.md", deps=("1",))
    result = scan_folder(tmp_path)
    assert list(result.todos) == ["2"]
    assert [bad.key for bad in result.invalid] == ["1"]


def test_cycle_makes_every_member_invalid(tmp_path: Path) -> None:
    """Each todo on a cycle is invalid and the message names the cycle from that todo."""
    write(tmp_path, "273-ready-p1-a.md", deps=("274",))
    write(tmp_path, "274-ready-p1-b.md", deps=("273",))
    write(tmp_path, "275-ready-p1-c.md", deps=("273",))
    result = scan_folder(tmp_path)
    assert list(result.todos) == ["275"]
    assert reasons(result) == {
        "273-ready-p1-a.md": "is on a dependency cycle: 273 -> 274 -> 273",
        "274-ready-p1-b.md": "is on a dependency cycle: 274 -> 273 -> 274",
    }


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    """A todo that depends on itself is a one-todo cycle, shown with ids as written."""
    write(tmp_path, "007-ready-p1-a.md", deps=("7",))
    assert reasons(scan_folder(tmp_path)) == {"007-ready-p1-a.md": "is on a dependency cycle: 007 -> 007"}


def test_symlink_in_folder_is_invalid(tmp_path: Path) -> None:
    """A symbolic link named like a todo is reported, not followed."""
    todos = tmp_path / "todos"
    todos.mkdir()
    (todos / "1-ready-p1-a.md").symlink_to(write(tmp_path, "elsewhere.md"))
    (bad,) = scan_folder(todos).invalid
    assert "symbolic link" in bad.reason


def test_non_utf8_name_does_not_crash(tmp_path: Path) -> None:
    """A non-UTF-8 file name is reported with a printable key."""
    with open(os.fsencode(tmp_path) + b"/1-ready-p1-caf\xe9.md", "wb") as fh:
        fh.write(b"# t\n")
    (bad,) = scan_folder(tmp_path).invalid
    assert "not valid UTF-8" in bad.reason
    assert bad.key == "file:1-ready-p1-caf\\xe9.md"


def test_file_fixed_later_parses_on_next_scan(tmp_path: Path) -> None:
    """A broken file that is fixed is valid on the next scan."""
    path = tmp_path / "1-ready-p1-a.md"
    path.write_text("---\ntags: [\n---\n", encoding="utf-8")
    assert scan_folder(tmp_path).todos == {}
    write(tmp_path, "1-ready-p1-a.md")
    assert list(scan_folder(tmp_path).todos) == ["1"]


def test_missing_folder_is_empty(tmp_path: Path) -> None:
    """A todos folder that does not exist yet holds no todos."""
    assert scan_folder(tmp_path / "todos") == ScanResult(todos={}, invalid=())


def test_folder_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    """todos_dir pointing at a file is a TodoFileError with a hint."""
    with pytest.raises(TodoFileError, match="is a file, not a folder"):
        scan_folder(write(tmp_path, "x.md"))


def test_previous_scan_skips_unchanged_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With previous, an unchanged settled file is reused and a changed one is read again."""
    monkeypatch.setattr(scanner, "_RACY_NS", -10_000_000_000)  # treat fresh files as settled
    write(tmp_path, "1-ready-p1-a.md")
    write(tmp_path, "2-ready-p1-b.md")
    first = scan_folder(tmp_path)
    write(tmp_path, "2-ready-p1-b.md", body="# Changed title\n")
    second = scan_folder(tmp_path, previous=first)
    assert second.todos["1"] is first.todos["1"]
    assert second.todos["2"].title == "Changed title"


def test_fresh_files_are_not_remembered(tmp_path: Path) -> None:
    """A file changed within the last two seconds is read again on the next scan (coarse clocks)."""
    write(tmp_path, "1-ready-p1-a.md")
    first = scan_folder(tmp_path)
    assert first.parsed == {}
    assert scan_folder(tmp_path, previous=first).todos["1"] is not first.todos["1"]


def test_scan_1000_files_is_fast(tmp_path: Path) -> None:
    """1,000 example-sized todos scan in under 3 s, best of 3 (about 0.1-0.25 s here, loaded or not)."""
    text = (EXAMPLES / "273-ready-p1-tenant-filter-on-availability-query.md").read_text(encoding="utf-8")
    for i in range(1, 1001):
        (tmp_path / f"{i:04d}-ready-p{i % 3 + 1}-todo.md").write_text(text, encoding="utf-8")
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = scan_folder(tmp_path)
        times.append(time.perf_counter() - started)
    assert len(result.todos) == 1000
    assert min(times) < 3.0


# --- diff_scan ----------------------------------------------------------------------------------


def test_diff_added_and_unchanged(tmp_path: Path) -> None:
    """New todos are Added; a second diff against the recorded state is empty."""
    shutil.copytree(EXAMPLES, tmp_path / "todos")
    result = scan_folder(tmp_path / "todos")
    assert [type(c) for c in diff_scan({}, result)] == [Added, Added]
    assert diff_scan(known(result), result) == []


def test_diff_status_changed_by_rename(tmp_path: Path) -> None:
    """pending -> ready by a rename is StatusChanged with old and new."""
    path = write(tmp_path, "1-pending-p1-a.md")
    before = known(scan_folder(tmp_path))
    path.rename(tmp_path / "1-ready-p1-a.md")
    (change,) = diff_scan(before, scan_folder(tmp_path))
    assert isinstance(change, StatusChanged)
    assert (change.old, change.new, change.key) == (TodoStatus.PENDING, TodoStatus.READY, "1")


def test_diff_edited_content_and_priority_rename(tmp_path: Path) -> None:
    """Changed content, or a rename that keeps the status, is Edited."""
    write(tmp_path, "1-ready-p1-a.md")
    write(tmp_path, "2-ready-p1-b.md")
    before = known(scan_folder(tmp_path))
    write(tmp_path, "1-ready-p1-a.md", body="# New\n")
    (tmp_path / "2-ready-p1-b.md").rename(tmp_path / "2-ready-p3-b.md")
    changes = diff_scan(before, scan_folder(tmp_path))
    assert [(type(c), c.key) for c in changes] == [(Edited, "1"), (Edited, "2")]


def test_diff_removed(tmp_path: Path) -> None:
    """A todo whose file is gone is Removed with its last path."""
    path = write(tmp_path, "1-ready-p1-a.md")
    before = known(scan_folder(tmp_path))
    path.unlink()
    assert diff_scan(before, scan_folder(tmp_path)) == [Removed("1", path)]


def test_diff_invalid_once_then_fixed(tmp_path: Path) -> None:
    """A todo that breaks is Invalid once (not on every rescan) and Fixed when repaired."""
    path = write(tmp_path, "1-ready-p1-a.md")
    recorded = known(scan_folder(tmp_path))
    path.write_text("---\ntags: [\n---\n", encoding="utf-8")
    broken = scan_folder(tmp_path)
    (change,) = diff_scan(recorded, broken)
    assert isinstance(change, Invalid)
    assert "not valid YAML" in change.invalid.reason
    recorded = known(broken)
    assert diff_scan(recorded, scan_folder(tmp_path)) == []
    write(tmp_path, "1-ready-p1-a.md")
    (fixed,) = diff_scan(recorded, scan_folder(tmp_path))
    assert isinstance(fixed, Fixed)


def test_diff_invalid_for_a_new_reason_is_reported_again(tmp_path: Path) -> None:
    """An invalid todo that becomes invalid for another reason is reported again."""
    path = tmp_path / "1-ready-p1-a.md"
    path.write_text("---\ntags: [\n---\n", encoding="utf-8")
    recorded = known(scan_folder(tmp_path))
    path.write_bytes(b"\x00")
    (change,) = diff_scan(recorded, scan_folder(tmp_path))
    assert isinstance(change, Invalid)
    assert "binary" in change.invalid.reason


def test_diff_orders_by_numeric_id(tmp_path: Path) -> None:
    """Changes come in numeric id order, file: keys last."""
    for name in ["10-ready-p1-a.md", "9-ready-p1-b.md", "bad.md"]:
        write(tmp_path, name)
    keys = [c.key for c in diff_scan({}, scan_folder(tmp_path))]
    assert keys == ["9", "10", "file:bad.md"]
