"""Parsing one todo file: name, front matter, refusals with hints, and batchd's own edits."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.exceptions import TodoFileError
from daemon.intake.todofile import (
    MAX_TODO_BYTES,
    Priority,
    TodoStatus,
    id_key,
    is_ignored,
    parse_name,
    parse_todo,
    rename_status,
    set_front_matter_status,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "examples" / "todos"
EXAMPLE_273 = EXAMPLES / "273-ready-p1-tenant-filter-on-availability-query.md"
EXAMPLE_274 = EXAMPLES / "274-pending-p2-cache-availability-per-day.md"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def fm(body: str) -> str:
    return f"---\n{body}---\n\n# Title\n"


def refused(path: Path) -> TodoFileError:
    with pytest.raises(TodoFileError) as info:
        parse_todo(path)
    assert info.value.hint, "every refusal says how to fix it"
    return info.value


def test_example_ready_todo_parses() -> None:
    """The ready example reads as id 273, ready, p1, with its files, tags and title."""
    todo = parse_todo(EXAMPLE_273)
    assert (todo.id, todo.number, todo.status, todo.priority) == ("273", 273, TodoStatus.READY, Priority.P1)
    assert todo.files == ("server/src/services/availability.service.ts",)
    assert todo.tags == ("security", "scheduling", "multi-tenant")
    assert todo.issue_id == "273"
    assert todo.dependencies == ()
    assert todo.title == "Availability query does not filter by tenant"
    assert todo.disagreements == ()
    assert len(todo.digest) == 64


def test_example_pending_todo_depends_on_273() -> None:
    """The pending example depends on "273" and has no files."""
    todo = parse_todo(EXAMPLE_274)
    assert (todo.status, todo.priority) == (TodoStatus.PENDING, Priority.P2)
    assert todo.dependencies == ("273",)
    assert todo.dependency_keys == ("273",)
    assert todo.files == ()


def test_no_front_matter_title_from_description(tmp_path: Path) -> None:
    """Without front matter or a heading the title is the description with spaces."""
    todo = parse_todo(write(tmp_path, "5-ready-p3-fix-the-thing.md", "Just text.\n## Not a title\n"))
    assert todo.title == "fix the thing"
    assert todo.body == "Just text.\n## Not a title\n"


def test_title_is_first_h1(tmp_path: Path) -> None:
    """The title is the first `# ` heading of the body."""
    todo = parse_todo(write(tmp_path, "5-ready-p3-x.md", "## Sub\n# Real title \n# Second\n"))
    assert todo.title == "Real title"


def test_leading_zero_id_kept_and_compared_as_number(tmp_path: Path) -> None:
    """An id written 001 stays "001" and has key "1"."""
    todo = parse_todo(write(tmp_path, "001-pending-p2-x.md", "body"))
    assert (todo.id, todo.key, todo.number) == ("001", "1", 1)
    assert id_key("001") == id_key(1) == "1"


def test_dependencies_as_numbers_and_quoted_strings(tmp_path: Path) -> None:
    """Dependencies may be numbers or quoted ids; leading zeros, even octal-looking ones, are kept."""
    path = write(tmp_path, "9-ready-p1-x.md", fm('dependencies: [273, "001", 010]\n'))
    assert parse_todo(path).dependencies == ("273", "001", "010")


def test_dependency_listed_twice_counts_once(tmp_path: Path) -> None:
    """`["1", "001"]` is one dependency, kept as first written."""
    path = write(tmp_path, "9-ready-p1-x.md", fm('dependencies: ["1", "001"]\n'))
    assert parse_todo(path).dependencies == ("1",)


def test_unknown_keys_kept_in_extra(tmp_path: Path) -> None:
    """Keys outside the convention's core (feature, source, created) are kept, not rejected."""
    text = fm("feature: scheduling\nsource: code-review\ncreated: 2026-11-20\nowner:\n  name: ana\n")
    todo = parse_todo(write(tmp_path, "9-ready-p1-x.md", text))
    assert todo.extra["feature"] == "scheduling"
    assert todo.extra["source"] == "code-review"
    assert todo.extra["created"] == "2026-11-20"  # JSON-safe: it goes into event payloads
    assert todo.extra["owner"] == {"name": "ana"}


def test_name_wins_over_front_matter_and_disagreement_recorded(tmp_path: Path) -> None:
    """Status, priority and issue_id that differ from the name are recorded; the name's values are used."""
    text = fm('status: pending\npriority: p3\nissue_id: "12"\n')
    todo = parse_todo(write(tmp_path, "9-ready-p1-x.md", text))
    assert (todo.status, todo.priority) == (TodoStatus.READY, Priority.P1)
    assert len(todo.disagreements) == 3
    assert "status is 'pending' but the file name says 'ready'" in todo.disagreements[0]
    assert "priority" in todo.disagreements[1]
    assert "issue_id" in todo.disagreements[2]


def test_issue_id_with_other_leading_zeros_agrees(tmp_path: Path) -> None:
    """issue_id "009" agrees with a file named 9-...: ids compare as numbers."""
    todo = parse_todo(write(tmp_path, "9-ready-p1-x.md", fm('issue_id: "009"\nstatus: ready\n')))
    assert todo.disagreements == ()


def test_crlf_and_bom_front_matter(tmp_path: Path) -> None:
    """A UTF-8 BOM and CRLF line ends do not hide the front matter."""
    path = tmp_path / "9-ready-p1-x.md"
    path.write_bytes(b'\xef\xbb\xbf---\r\ndependencies: ["3"]\r\nstatus: ready\r\n---\r\n# T\r\n')
    todo = parse_todo(path)
    assert todo.dependencies == ("3",)
    assert todo.title == "T"


def test_empty_front_matter(tmp_path: Path) -> None:
    """An empty front matter block is an empty mapping."""
    assert parse_todo(write(tmp_path, "9-ready-p1-x.md", "---\n---\nbody\n")).extra == {}


def test_symlink_refused(tmp_path: Path) -> None:
    """A symbolic link is refused: it could point outside the todos folder."""
    target = write(tmp_path, "outside.txt", "secret")
    link = tmp_path / "9-ready-p1-x.md"
    link.symlink_to(target)
    assert "symbolic link" in refused(link).message


def test_directory_refused(tmp_path: Path) -> None:
    """A directory named like a todo is refused."""
    folder = tmp_path / "9-ready-p1-x.md"
    folder.mkdir()
    assert "directory" in refused(folder).message


def test_fifo_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO named like a todo is refused without opening it (which would block)."""
    fifo = tmp_path / "9-ready-p1-x.md"
    os.mkfifo(fifo)
    assert "not a regular file" in refused(fifo).message


def test_binary_refused(tmp_path: Path) -> None:
    """A file with NUL bytes is binary, not markdown."""
    path = tmp_path / "9-ready-p1-x.md"
    path.write_bytes(b"# t\x00\x01\x02")
    assert "binary" in refused(path).message


def test_non_utf8_content_refused(tmp_path: Path) -> None:
    """Latin-1 text is refused with the offset of the bad byte."""
    path = tmp_path / "9-ready-p1-x.md"
    path.write_bytes("# café".encode("latin-1"))
    assert "not UTF-8 text (bad byte at offset 5)" in refused(path).message


def test_over_one_mib_refused(tmp_path: Path) -> None:
    """A file over 1 MiB is refused; exactly 1 MiB is fine."""
    ok = tmp_path / "1-ready-p1-x.md"
    ok.write_bytes(b"a" * MAX_TODO_BYTES)
    assert parse_todo(ok).id == "1"
    big = tmp_path / "2-ready-p1-x.md"
    big.write_bytes(b"a" * (MAX_TODO_BYTES + 1))
    assert "1 MiB" in refused(big).message


def test_non_utf8_name_refused(tmp_path: Path) -> None:
    """A file name that is not UTF-8 is refused with a printable path."""
    raw = os.fsencode(tmp_path) + b"/9-ready-p1-caf\xe9.md"
    with open(raw, "wb") as fh:
        fh.write(b"# t\n")
    err = refused(Path(os.fsdecode(raw)))
    assert "not valid UTF-8" in err.message
    err.path.encode("utf-8")  # the path in the error can be logged and stored


def test_missing_file_refused(tmp_path: Path) -> None:
    """A file that vanished between listing and reading gives a TodoFileError, not OSError."""
    assert "cannot read" in refused(tmp_path / "9-ready-p1-x.md").message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("9-done-p1-x.md", "status 'done' is not one of pending, ready, complete"),
        ("9-ready-p4-x.md", "priority 'p4' is not one of p1, p2, p3"),
        ("abc-ready-p1-x.md", "id 'abc' is not a number"),
        ("9-ready-p1.md", "does not have the four parts"),
        ("9-ready-p1-has space.md", "not kebab-case"),
        ("9-Ready-p1-x.md", "status 'Ready'"),
    ],
)
def test_bad_name_diagnosed(tmp_path: Path, name: str, reason: str) -> None:
    """A name off the convention says which part is wrong."""
    err = refused(write(tmp_path, name, "# t\n"))
    assert reason in err.message
    assert "ID-STATUS-PRIORITY-DESCRIPTION.md" in err.hint


def test_bad_yaml_refused_with_line(tmp_path: Path) -> None:
    """Invalid YAML is refused with the line number in the file."""
    err = refused(write(tmp_path, "9-ready-p1-x.md", "---\nstatus: ready\ntags: [a, b\n---\n"))
    assert "not valid YAML at line" in err.message
    assert err.todo_id == "9"


def test_front_matter_not_a_mapping_refused(tmp_path: Path) -> None:
    """Front matter that is a list is refused."""
    assert "not a mapping" in refused(write(tmp_path, "9-ready-p1-x.md", fm("- a\n- b\n"))).message


def test_unclosed_front_matter_refused(tmp_path: Path) -> None:
    """A front matter block that never closes is refused."""
    err = refused(write(tmp_path, "9-ready-p1-x.md", "---\nstatus: ready\n# title\n"))
    assert "no closing '---'" in err.message


@pytest.mark.parametrize(
    ("front", "reason"),
    [
        ("dependencies: 273\n", "'dependencies' must be a list"),
        ("dependencies: [abc]\n", "lists 'abc', which is not a todo id"),
        ("dependencies: [[1]]\n", "must list plain values"),
        ("files: src/a.py\n", "'files' must be a list"),
        ("tags: {a: 1}\n", "'tags' must be a list"),
        ("status: [ready]\n", "'status' must be a single value"),
    ],
)
def test_wrong_types_refused(tmp_path: Path, front: str, reason: str) -> None:
    """Known keys with the wrong type are refused, naming the key."""
    assert reason in refused(write(tmp_path, "9-ready-p1-x.md", fm(front))).message


def test_parse_name() -> None:
    """parse_name splits a good name and returns None for a bad one."""
    parts = parse_name("012-complete-p2-a-b_c.md")
    assert parts is not None
    assert (parts.id, parts.status, parts.priority, parts.description, parts.key) == (
        "012",
        TodoStatus.COMPLETE,
        Priority.P2,
        "a-b_c",
        "12",
    )
    assert parse_name("12-ready-p1-.md") is None


def test_rename_status() -> None:
    """rename_status swaps only the status part."""
    assert rename_status("007-ready-p1-fix-it.md", "complete") == "007-complete-p1-fix-it.md"
    assert rename_status("7-complete-p3-x.md", TodoStatus.READY) == "7-ready-p3-x.md"


def test_rename_status_bad_name() -> None:
    """rename_status refuses a name off the convention."""
    with pytest.raises(TodoFileError, match="not a number"):
        rename_status("x-ready-p1-y.md", "complete")


def test_set_front_matter_status_keeps_everything_else(tmp_path: Path) -> None:
    """Only the status value changes; the rest of the example file is byte-for-byte the same."""
    text = EXAMPLE_273.read_text(encoding="utf-8")
    out = set_front_matter_status(text, "complete")
    assert out == text.replace("status: ready\n", "status: complete\n", 1)
    copy = tmp_path / "273-complete-p1-x.md"
    copy.write_text(out, encoding="utf-8")
    assert parse_todo(copy).disagreements == ()


def test_set_front_matter_status_keeps_quotes_comment_and_crlf() -> None:
    """Quotes, a trailing comment and CRLF line ends survive the edit."""
    text = '---\r\npriority: p1\r\nstatus: "ready"  # set by triage\r\n---\r\nbody\r\n'
    out = set_front_matter_status(text, TodoStatus.COMPLETE)
    assert out == text.replace('"ready"', '"complete"')


def test_set_front_matter_status_nested_status_untouched() -> None:
    """An indented `status:` inside another key is not the todo's status; one is added at the top."""
    text = "---\nreview:\n  status: ready\n---\nbody\n"
    assert (
        set_front_matter_status(text, "complete")
        == "---\nstatus: complete\nreview:\n  status: ready\n---\nbody\n"
    )


def test_set_front_matter_status_without_front_matter_unchanged() -> None:
    """A file without front matter is returned as it is."""
    assert set_front_matter_status("# t\nstatus: ready\n", "complete") == "# t\nstatus: ready\n"


@pytest.mark.parametrize(
    "name",
    [
        ".273-ready-p1-x.md.swp",
        "273-ready-p1-x.md~",
        "273-ready-p1-x.md.tmp",
        "4913",
        ".hidden.md",
        "README.md",
        ".gitkeep",
        "TEMPLATE-todo.md",
        "notes.txt",
        "archive",
    ],
)
def test_ignored_names(name: str) -> None:
    """Editor temp files, dot files, non-.md files and the default globs are not todos."""
    assert is_ignored(name)


def test_configured_glob_ignored_and_md_not() -> None:
    """A configured glob is ignored; an ordinary .md file is a todo candidate."""
    assert is_ignored("DRAFT-1.md", ["DRAFT-*.md"])
    assert not is_ignored("notes.md")
    assert not is_ignored("README.md", [])


def test_examples_copy_parses_in_any_folder(tmp_path: Path) -> None:
    """A todo in a nested folder like .context/compound-engineering/todos parses the same."""
    folder = tmp_path / ".context" / "compound-engineering" / "todos"
    folder.mkdir(parents=True)
    copy = Path(shutil.copy(EXAMPLE_274, folder))
    assert parse_todo(copy).dependencies == ("273",)


def test_self_referencing_yaml_alias_refused(tmp_path: Path) -> None:
    """A YAML alias inside its own anchor is refused (as every alias is) instead of recursing forever."""
    error = refused(write(tmp_path, "9-ready-p1-x.md", fm("a: &x [*x]\n")))
    assert "YAML alias (*x)" in error.message and "write the value out" in error.message


@settings(max_examples=60, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(alphabet="ab:-[]{}&*!|>'\"#%@,?\n ~019.\t\\", max_size=200).map(str.encode),
    )
)
def test_any_bytes_parse_or_raise_todo_file_error(data: bytes) -> None:
    """Whatever the content, parse_todo returns a TodoFile or raises TodoFileError, nothing else."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "9-ready-p1-x.md"
        path.write_bytes(b"---\n" + data)
        with contextlib.suppress(TodoFileError):
            parse_todo(path)
