"""daemon.intake.watcher: real files and real inotify in tmp_path; names come out settled and
de-duplicated."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.intake.todofile import is_ignored
from daemon.intake.watcher import TodoWatcher, is_editor_temp

READY = "273-ready-p1-tenant-filter.md"
PENDING = "273-pending-p1-tenant-filter.md"


def _ignore(name: str) -> bool:
    return is_ignored(name)


@pytest.fixture
def todos(tmp_path: Path) -> Path:
    folder = tmp_path / "todos"
    folder.mkdir()
    return folder


@pytest.fixture
def watcher(todos: Path) -> Iterator[TodoWatcher]:
    with TodoWatcher(todos, ignore=_ignore, settle=0.05) as w:
        yield w


def collect(w: TodoWatcher, *, until: Callable[[list[str]], bool], timeout: float = 3.0) -> list[str]:
    """Every name drained (repeats kept) until `until(names)` holds or the timeout passes."""
    names: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(names):
        w.wait(min(0.2, max(deadline - time.monotonic(), 0.0)))
        names.extend(w.drain(time.monotonic()))
    return names


def has(name: str) -> Callable[[list[str]], bool]:
    return lambda names: name in names


def collect_quiet(w: TodoWatcher, quiet: float = 0.4) -> list[str]:
    """Every name drained until nothing more arrives for `quiet` seconds."""
    names: list[str] = []
    while w.wait(quiet):
        names.extend(w.drain(time.monotonic()))
    names.extend(w.drain(time.monotonic()))
    return names


def test_new_ready_file_drained_once_after_settling(watcher: TodoWatcher, todos: Path) -> None:
    """A new -ready- file comes out once, however many events its creation made."""
    (todos / READY).write_text("# Tenant filter\n")
    assert collect_quiet(watcher) == [READY]


def test_name_stays_while_settling(watcher: TodoWatcher, todos: Path) -> None:
    """A drain before `settle` has passed leaves the name for a later drain."""
    (todos / READY).write_text("x")
    assert watcher.wait(2.0)
    ready_at = time.monotonic()
    assert watcher.drain(ready_at - 0.04) == set()  # as if asked 40 ms earlier: still settling
    assert watcher.drain(ready_at) == {READY}


def test_chunks_written_through_one_handle_are_one_name(watcher: TodoWatcher, todos: Path) -> None:
    """Chunks written with pauses longer than settle come out once, after the file is closed."""
    with (todos / READY).open("w") as f:
        for chunk in ("---\n", "status: ready\n", "---\n# Title\n"):
            f.write(chunk)
            f.flush()
            time.sleep(0.12)
            assert watcher.drain(time.monotonic()) == set()  # still open for writing: held back
    assert collect_quiet(watcher) == [READY]


def test_quick_separate_writes_are_one_name(watcher: TodoWatcher, todos: Path) -> None:
    """Several open-append-close writes inside the settle window come out as one name."""
    path = todos / READY
    for i in range(5):
        with path.open("a") as f:
            f.write(f"line {i}\n")
    assert collect_quiet(watcher) == [READY]


def test_rename_reports_both_names(watcher: TodoWatcher, todos: Path) -> None:
    """pending -> ready reports the old name and the new one."""
    (todos / PENDING).write_text("x")
    assert collect_quiet(watcher) == [PENDING]
    (todos / PENDING).rename(todos / READY)
    assert sorted(collect_quiet(watcher)) == sorted([PENDING, READY])


def test_delete_reports_name(watcher: TodoWatcher, todos: Path) -> None:
    """Deleting a todo reports its name (the rescan finds it gone)."""
    (todos / READY).write_text("x")
    assert collect_quiet(watcher) == [READY]
    (todos / READY).unlink()
    assert collect_quiet(watcher) == [READY]


def test_editor_save_dance_reports_only_the_real_name(watcher: TodoWatcher, todos: Path) -> None:
    """Swap file, vim's 4913 probe and a temp file renamed onto the todo: only the todo comes out."""
    real = todos / READY
    real.write_text("old\n")
    assert collect_quiet(watcher) == [READY]
    swap = todos / f".{READY}.swp"
    swap.write_bytes(b"\0" * 64)
    probe = todos / "4913"
    probe.write_text("")
    probe.unlink()
    temp = todos / f"{READY}.tmp"
    temp.write_text("new\n")
    temp.rename(real)
    backup = todos / f"{READY}~"
    backup.write_text("old\n")
    backup.unlink()
    swap.unlink()
    assert collect_quiet(watcher) == [READY]


def test_dot_files_are_not_reported(watcher: TodoWatcher, todos: Path) -> None:
    """Dot files (and emacs' lock and auto-save files) never come out."""
    for name in (".gitkeep", ".hidden-ready-p1-x.md", ".#273-ready-p1-x.md", "#273-ready-p1-x.md#"):
        (todos / name).write_text("x")
    (todos / READY).write_text("x")  # a real one, so the test knows the watcher was listening
    assert collect_quiet(watcher) == [READY]


def test_ignored_names_are_not_reported(watcher: TodoWatcher, todos: Path) -> None:
    """Names the ignore callable refuses (README.md, TEMPLATE*.md) never come out."""
    (todos / "README.md").write_text("# Todos\n")
    (todos / "TEMPLATE-todo.md").write_text("# Template\n")
    (todos / READY).write_text("x")
    assert collect_quiet(watcher) == [READY]


def test_reading_a_file_reports_nothing(watcher: TodoWatcher, todos: Path) -> None:
    """The daemon reading a todo must not hear itself: opens and read-only closes make no names."""
    (todos / READY).write_text("x")
    assert collect_quiet(watcher) == [READY]
    for _ in range(3):
        (todos / READY).read_text()
    assert collect_quiet(watcher, quiet=0.3) == []


def test_file_moved_in_from_outside_is_reported_without_waiting_for_a_close(
    tmp_path: Path, todos: Path
) -> None:
    """`mv draft.md todos/` makes no close event; the name still comes out after settle, not the grace."""
    draft = tmp_path / "draft.md"
    draft.write_text("x")
    with TodoWatcher(todos, ignore=_ignore, settle=0.02, open_grace=5.0) as w:
        start = time.monotonic()
        draft.rename(todos / READY)
        assert collect(w, until=lambda names: READY in names, timeout=3.0) == [READY]
        assert time.monotonic() - start < 2.0


def test_file_kept_open_is_reported_after_the_grace(todos: Path) -> None:
    """Close events are preferred, not required: a writer that never closes is reported after open_grace."""
    with TodoWatcher(todos, ignore=_ignore, settle=0.02, open_grace=0.3) as w, (todos / READY).open("w") as f:
        f.write("x")
        f.flush()
        start = time.monotonic()
        assert collect(w, until=lambda names: READY in names, timeout=3.0) == [READY]
        assert time.monotonic() - start >= 0.25


def test_subdirectory_name_is_reported(watcher: TodoWatcher, todos: Path) -> None:
    """A directory named like a todo is reported, so the scan can flag it as invalid."""
    (todos / READY).mkdir()
    assert collect_quiet(watcher) == [READY]


def test_wait_wakes_within_100ms_of_a_drop(todos: Path) -> None:
    """wait() returns True soon after a file lands (settle 20 ms), long before its timeout."""
    with TodoWatcher(todos, ignore=_ignore, settle=0.02) as w:
        start = time.monotonic()
        (todos / READY).write_text("x")
        assert w.wait(5.0)
        assert time.monotonic() - start < 0.1


def test_wait_returns_false_on_timeout(watcher: TodoWatcher) -> None:
    """With nothing happening, wait() sleeps out its timeout and returns False."""
    start = time.monotonic()
    assert not watcher.wait(0.2)
    assert time.monotonic() - start >= 0.19


def test_stop_joins_cleanly_and_leaves_no_thread(todos: Path) -> None:
    """stop() joins watchdog's threads: none is left running, and a second stop() is harmless."""
    before = set(threading.enumerate())
    w = TodoWatcher(todos, ignore=_ignore)
    w.start()
    (todos / READY).write_text("x")
    assert w.wait(2.0)
    assert set(threading.enumerate()) - before, "watchdog threads should be running"
    w.stop()
    w.stop()
    assert set(threading.enumerate()) - before == set()
    assert not w.watching


def test_burst_of_200_files_loses_none(watcher: TodoWatcher, todos: Path) -> None:
    """200 files dropped as fast as possible all come out, each once."""
    expected = {f"{i}-ready-p2-burst-{i}.md" for i in range(1, 201)}
    for name in expected:
        (todos / name).write_text(f"# {name}\n")
    names = collect(watcher, until=lambda got: set(got) >= expected, timeout=10.0)
    names += collect_quiet(watcher, quiet=0.2)
    assert sorted(names) == sorted(expected)
    assert not watcher.overflowed


def test_files_written_one_after_another_are_each_drained_once(todos: Path) -> None:
    """100 files, each written after the previous one was drained (settle 20 ms): each comes out,
    and none again later. How fast is measured by ``python -m bench.watch``, not here."""
    with TodoWatcher(todos, ignore=_ignore, settle=0.02) as w:
        drained: list[str] = []
        for i in range(1, 101):
            name = f"{i}-ready-p1-latency.md"
            (todos / name).write_text("x")
            drained += collect(w, until=has(name), timeout=5.0)
            assert name in drained
        drained += collect_quiet(w, quiet=0.2)
    assert sorted(drained) == sorted(f"{i}-ready-p1-latency.md" for i in range(1, 101))


def test_missing_folder_is_watched_once_it_appears(tmp_path: Path) -> None:
    """A todos folder that does not exist yet is watched when created, with a rescan requested."""
    folder = tmp_path / ".context" / "compound-engineering" / "todos"
    with TodoWatcher(folder, ignore=_ignore, settle=0.02) as w:
        assert not w.watching
        assert not w.wait(0.1)
        folder.mkdir(parents=True)
        assert w.wait(3.0)
        assert w.watching
        assert w.take_overflow()  # files that landed before the watch made no events
        (folder / READY).write_text("x")
        assert collect(w, until=lambda names: READY in names) == [READY]


def test_deleted_folder_requests_rescan_and_is_watched_again(watcher: TodoWatcher, todos: Path) -> None:
    """Deleting the folder raises the overflow flag; recreating it re-attaches the watch."""
    (todos / READY).write_text("x")
    assert collect_quiet(watcher) == [READY]
    (todos / READY).unlink()
    todos.rmdir()
    assert collect(watcher, until=lambda names: watcher.overflowed and READY in names) == [READY]
    assert watcher.take_overflow()
    todos.mkdir()
    assert watcher.wait(3.0)
    assert watcher.take_overflow()
    assert watcher.watching
    (todos / PENDING).write_text("x")
    assert collect(watcher, until=lambda names: PENDING in names) == [PENDING]


def test_take_overflow_clears_the_flag(tmp_path: Path) -> None:
    """take_overflow() answers True once per loss, then False until the next one."""
    folder = tmp_path / "todos"
    with TodoWatcher(folder, ignore=_ignore) as w:
        folder.mkdir()
        assert w.wait(3.0)
        assert w.take_overflow()
        assert not w.take_overflow()
        assert w.overflow_count == 1


def test_symlinked_folder_is_watched(tmp_path: Path, todos: Path) -> None:
    """A todos_dir that is a symlink to a folder reports the files of the folder it points to."""
    link = tmp_path / "todos-link"
    link.symlink_to(todos, target_is_directory=True)
    with TodoWatcher(link, ignore=_ignore, settle=0.02) as w:
        (link / READY).write_text("x")
        assert collect(w, until=lambda names: READY in names) == [READY]


def test_kernel_queue_overflow_requests_rescan(todos: Path) -> None:
    """A flood that overflows the inotify queue (which watchdog only logs) raises the overflow flag."""
    flood = (
        "import os, sys\n"
        "a = os.open(os.path.join(sys.argv[1], 'a.md'), os.O_CREAT | os.O_WRONLY)\n"
        "b = os.open(os.path.join(sys.argv[1], 'b.md'), os.O_CREAT | os.O_WRONLY)\n"
        "for _ in range(200_000):\n"
        "    os.write(a, b'x'); os.write(b, b'y')\n"  # alternating, so the kernel cannot coalesce them
    )
    with TodoWatcher(todos, ignore=lambda _: False, settle=0.02) as w:
        writer = subprocess.Popen([sys.executable, "-c", flood, str(todos)])
        # Starve watchdog's reader thread for a while (this thread keeps the GIL: a long switch
        # interval and a loop that makes no system call), so the kernel queue fills whatever the
        # machine's load: a fast reader on an idle machine could otherwise keep up with the flood.
        interval = sys.getswitchinterval()
        sys.setswitchinterval(30.0)
        try:
            until = time.monotonic() + 3.0
            while time.monotonic() < until:
                pass
        finally:
            sys.setswitchinterval(interval)
        try:
            deadline = time.monotonic() + 20.0
            while not w.overflowed and time.monotonic() < deadline:
                w.wait(0.2)
                w.drain(time.monotonic())
            assert w.overflowed
        finally:
            writer.kill()
            writer.wait()


def test_last_event_at_follows_events(watcher: TodoWatcher, todos: Path) -> None:
    """last_event_at is None before any event and a clock time after one."""
    assert watcher.last_event_at is None
    before = time.monotonic()
    (todos / READY).write_text("x")
    assert watcher.wait(2.0)
    assert watcher.last_event_at is not None
    assert watcher.last_event_at >= before


@pytest.mark.parametrize(
    "name",
    [".x.md.swp", "x.md.swx", "x.md.swo", "x.md~", "x.md.tmp", "4913", "5036", ".gitkeep", "#x.md#"],
)
def test_editor_temp_names_are_recognised(name: str) -> None:
    """Names editors write beside the file they save are temporary."""
    assert is_editor_temp(name)


@pytest.mark.parametrize("name", [READY, "001-pending-p3-a.md", "README.md", "notes.txt"])
def test_ordinary_names_are_not_editor_temp(name: str) -> None:
    """Todo names and other ordinary names are not mistaken for editor temp files."""
    assert not is_editor_temp(name)


def test_handler_error_requests_rescan_instead_of_killing_the_watch(todos: Path) -> None:
    """An ignore callable that raises costs a rescan, not the watch: later files still come out."""

    def flaky(name: str) -> bool:
        if name.startswith("boom"):
            raise ValueError(name)
        return False

    with capture_logs() as logs, TodoWatcher(todos, ignore=flaky, settle=0.02) as w:
        (todos / "boom.md").write_text("x")
        assert collect(w, until=lambda _: w.overflowed) == []
        (todos / READY).write_text("x")
        assert collect(w, until=lambda names: READY in names) == [READY]
    assert "watch_handler_failed" in [entry["event"] for entry in logs]


def test_wake_from_another_thread_ends_the_wait_at_once(watcher: TodoWatcher) -> None:
    """A job finishing in the pool wakes the loop: wait(10) returns within a fraction of a second,
    and a wake that came before the wait is not lost."""
    timer = threading.Timer(0.1, watcher.wake)
    began = time.monotonic()
    timer.start()
    assert watcher.wait(10) is False
    assert time.monotonic() - began < 2
    watcher.wake()
    began = time.monotonic()
    assert watcher.wait(10) is False
    assert time.monotonic() - began < 1
