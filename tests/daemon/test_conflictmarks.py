"""daemon.world.conflictmarks: whether an attempt left git's conflict markers in a file it was given
with them, whatever their size, without following a link the agent put on the way."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from daemon.world.conflictmarks import has_conflict_block, marker_file_state
from daemon.world.rebase import carry
from tests.daemon.gitrepo import commit_files, head, init_repo

BLOCK_10 = b"a\n<<<<<<<<<< ours\nx\n==========\ny\n>>>>>>>>>> theirs\nb\n"


def file_with(tmp_path: Path, data: bytes, name: str = "f.py") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_ten_character_markers_are_a_conflict_block(tmp_path: Path) -> None:
    """``conflict-marker-size=10`` markers are found though no ``.gitattributes`` says so."""
    assert has_conflict_block(file_with(tmp_path, BLOCK_10))


def test_ten_character_markers_are_found_whatever_gitattributes_says(tmp_path: Path) -> None:
    """An agent that sets the size back to 7 in its workspace's .gitattributes hides nothing."""
    (tmp_path / ".gitattributes").write_text("*.py conflict-marker-size=7\n")
    assert marker_file_state(tmp_path, "f.py") == "clean"  # no file yet: nothing left
    file_with(tmp_path, BLOCK_10)
    assert marker_file_state(tmp_path, "f.py") == "markers"


def test_crlf_markers_are_a_conflict_block(tmp_path: Path) -> None:
    assert has_conflict_block(file_with(tmp_path, b"<<<<<<< ours\r\nx\r\n=======\r\ny\r\n>>>>>>> theirs\r\n"))


def test_rst_underlines_and_a_lone_opening_line_are_not_a_conflict_block(tmp_path: Path) -> None:
    """Headings underlined with ``=======`` (of several lengths) and one ``<<<<<<<``-looking line,
    with no closing line after a separator, are prose."""
    text = (
        b"Title\n=======\n\n<<<<<<< not a merge, an arrow\n\nSection\n==========\n\n"
        b"Another\n=======\n\n>>>>>>>>>> a quote of another size\n"
    )
    assert not has_conflict_block(file_with(tmp_path, text, "README.rst"))


@pytest.mark.parametrize(
    "block",
    [
        b"<<<<<<<<<< ours\n=======\n>>>>>>>>>> theirs\n",  # separator shorter than the markers
        b"<<<<<<< ours\n==========\n>>>>>>> theirs\n",  # separator longer
        b"<<<<<<< ours\n=======\n>>>>>>>>>> theirs\n",  # closing line of another size
        b"<<<<<<<<<<< ours\n===========\n>>>>>>>>>> theirs\n",  # 11, 11, 10
    ],
)
def test_markers_of_mismatched_sizes_are_not_a_conflict_block(tmp_path: Path, block: bytes) -> None:
    assert not has_conflict_block(file_with(tmp_path, block))


def test_markers_shorter_than_seven_are_not_a_conflict_block(tmp_path: Path) -> None:
    assert not has_conflict_block(file_with(tmp_path, b"<<<<<< a\n======\n>>>>>> b\n"))


def test_a_marker_inside_a_very_long_line_is_not_one(tmp_path: Path) -> None:
    """A line longer than one read piece: its continuation starting ``<<<<<<< `` is no marker line."""
    long_line = b"x" * (64 * 1024) + b"<<<<<<< ours\n"
    assert not has_conflict_block(file_with(tmp_path, long_line + b"=======\n>>>>>>> theirs\n"))


def test_a_folder_replaced_by_a_link_to_markers_elsewhere_is_refused_unread(tmp_path: Path) -> None:
    """``src/`` swapped for a link to an outside folder whose ``f.py`` has markers: the check says
    "link" (the attempt fails), it does not report what the outside file holds."""
    outside, ws = tmp_path / "outside", tmp_path / "ws"
    outside.mkdir()
    ws.mkdir()
    (outside / "f.py").write_bytes(BLOCK_10)
    (ws / "src").symlink_to(outside)
    assert marker_file_state(ws, "src/f.py") == "link"


def test_a_folder_replaced_by_a_link_to_a_fifo_elsewhere_never_blocks(tmp_path: Path) -> None:
    """The outside name is a FIFO nobody writes to: opening it without O_NONBLOCK, or reading it,
    would hang; the check stops at the link."""
    outside, ws = tmp_path / "outside", tmp_path / "ws"
    (ws / "pkg").mkdir(parents=True)
    outside.mkdir()
    os.mkfifo(outside / "f.py")
    (ws / "pkg" / "src").symlink_to(outside)
    assert marker_file_state(ws, "pkg/src/f.py") == "link"


def test_the_file_itself_replaced_by_a_link_is_refused(tmp_path: Path) -> None:
    (tmp_path / "clean.py").write_text("resolved = True\n")
    (tmp_path / "f.py").symlink_to(tmp_path / "clean.py")
    assert marker_file_state(tmp_path, "f.py") == "link"


def test_a_removed_marker_file_is_resolved(tmp_path: Path) -> None:
    """Deleting the file (or its folder, or putting a file where its folder was) resolves it."""
    (tmp_path / "src").write_text("a file where the folder was\n")
    assert marker_file_state(tmp_path, "gone.py") == "clean"
    assert marker_file_state(tmp_path, "lib/gone.py") == "clean"
    assert marker_file_state(tmp_path, "src/f.py") == "clean"


def test_an_unreadable_marker_file_is_not_taken_as_resolved(tmp_path: Path) -> None:
    path = file_with(tmp_path, BLOCK_10)
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: permissions do not stop reading")
    assert marker_file_state(tmp_path, "f.py") == "unreadable"


def test_a_carried_file_with_conflict_marker_size_10_has_markers_the_check_finds(tmp_path: Path) -> None:
    """A real rebase (rebase.carry) of a file whose .gitattributes sets conflict-marker-size=10:
    git writes 10-character markers, and the check finds them."""
    attrs = "*.txt conflict-marker-size=10\n"
    repo = init_repo(tmp_path / "repo", {".gitattributes": attrs, "notes.txt": "Title\n=======\n\nvalue 0\n"})
    base = head(repo)
    loser = commit_files(repo, base, {"notes.txt": "Title\n=======\n\nvalue 1\n"})
    winner = commit_files(repo, base, {"notes.txt": "Title\n=======\n\nvalue 2\n"})
    carried = carry(repo, loser, winner)
    assert carried.conflicts == ("notes.txt",)
    data = carried.files["notes.txt"] or b""
    assert b"\n==========\n" in data and b"<<<<<<<<<< " in data  # git honoured the attribute
    assert has_conflict_block(file_with(tmp_path, data, "notes.txt"))
