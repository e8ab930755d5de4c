"""``batchd run`` as a person sees it: the live run view under a real pseudo-terminal, ``--quiet``,
and JSON lines when nobody watches (issue 18, "A live run view in the terminal").

The agent (``tests/agents/wait_release.py``) holds its todo running until the test has seen it on
the screen and creates the release file, so "each agent is shown running" never depends on timing.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import termios
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from procs import PY, agents_spawned, alive, base_env, batchd, git, kill_agents, make_repo, read_events
from rich.console import Console

from daemon.cli.summary import print_summary, summarize
from daemon.cli.view import LiveView, log_opener, render
from daemon.service.lock import DaemonLock
from daemon.workspace import Workspace
from statemachine.projection import Projection
from statemachine.views import AttemptRecord, RunVerdict, TodoView
from store.eventlog import format_time

AGENT = Path(__file__).resolve().parents[1] / "agents" / "wait_release.py"
FIXTURE_LOG = Path(__file__).resolve().parents[1] / "fixtures" / "logs" / "demo-run-v1.db"  # a demo run
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")
HIDE_CURSOR, SHOW_CURSOR = b"\x1b[?25l", b"\x1b[?25h"
MARKUP_TITLE = "Fix the [agent] preset and [bold]this[/bold]"


def plain(raw: bytes) -> str:
    """The pty output without colours and cursor moves: every frame's text, in order."""
    return ANSI.sub("", raw.decode("utf-8", errors="replace")).replace("\r", "")


def make_view_repo(root: Path, titles: dict[str, str], *, fail: tuple[str, ...] = ()) -> Path:
    """A committed repository whose todos (id -> title) run ``wait_release.py`` (no sandbox: the
    agent must see the test's release file), with a check that passes and no remote."""
    make_repo(root, {})  # git, a passing check.py, an empty todos folder
    for todo_id, title in titles.items():
        name = f"{todo_id}-ready-p2-thing-{todo_id}.md"
        (root / "todos" / name).write_text(f"# {title}\n\nDo thing {todo_id}.\n", encoding="utf-8")
    env = {"VIEW_RELEASE": str(root.parent / "release"), "VIEW_FAIL": ",".join(fail)}
    (root / "batchd.toml").write_text(
        textwrap.dedent(
            f"""\
            [batchd]
            remote = ""
            max_parallel = 3
            max_attempts = 1
            stop_timeout = 2.0
            rescan_interval = 30

            [agent]
            command = {json.dumps([PY, str(AGENT), "{todo_id}"])}
            timeout = 60.0
            sandbox = "none"
            env = {{ VIEW_RELEASE = {json.dumps(env["VIEW_RELEASE"])}, VIEW_FAIL = "{env["VIEW_FAIL"]}" }}

            [verify]
            commands = [{json.dumps([PY, "-B", "check.py"])}]
            retries = 0
            """
        ),
        encoding="utf-8",
    )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "todos for the view")
    return root


def release(root: Path) -> None:
    (root.parent / "release").write_text("go\n", encoding="utf-8")


class PtyRun:
    """``batchd run`` with stdin, stdout and stderr on a real pseudo-terminal (120x40)."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = base_env(TERM="xterm-256color")
        for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
            env.pop(name, None)
        self.proc = subprocess.Popen(
            [PY, "-m", "daemon", "run", "-C", str(root), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = b""
        self.eof = False

    @property
    def text(self) -> str:
        return plain(self.raw)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: every writer of the terminal has closed it
            data = b""
        if data:
            self.raw += data
        else:
            self.eof = True

    def read_until(self, check: Callable[[str], bool], *, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not check(self.text):
            if self.eof or time.monotonic() > deadline:
                raise AssertionError(f"no {what} on the terminal; it shows:\n{self.text[-3000:]}")
            self._read(min(0.5, max(0.0, deadline - time.monotonic())))

    def finish(self, timeout: float = 30.0) -> int:
        """Read to the end of the output; the exit code."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            if time.monotonic() > deadline:
                raise AssertionError(f"batchd run did not end in {timeout}s:\n{self.text[-3000:]}")
            self._read(0.5)
        return self.proc.wait(timeout=max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        with contextlib.suppress(OSError):
            os.close(self.master)
        kill_agents(self.root)


def rows_running(text: str, *todo_ids: str) -> bool:
    """True when one frame's table lists each of ``todo_ids`` as running."""
    return all(re.search(rf"^{re.escape(t)} +.*\brunning +1 ", text, re.MULTILINE) for t in todo_ids)


@pytest.fixture
def pty_run() -> Iterator[Callable[..., PtyRun]]:
    started: list[PtyRun] = []

    def start(root: Path, *args: str) -> PtyRun:
        run = PtyRun(root, *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.close()


# ------------------------------------------------------------------------- the live view, end to end


@dataclass
class LiveRun:
    rc: int
    raw: bytes
    text: str
    summary: str  # what follows the last frame


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    """One ``batchd run --once`` on a terminal: 7 and 12 run until seen, 5's agent fails (blocked)."""
    root = make_view_repo(
        tmp_path_factory.mktemp("live") / "repo",
        {"5": "Broken thing", "7": "Thing 7", "12": MARKUP_TITLE},
        fail=("5",),
    )
    run = PtyRun(root, "--once")
    try:
        run.read_until(lambda text: rows_running(text, "7", "12"), what="rows of 7 and 12 running")
        release(root)
        rc = run.finish()
        text = run.text
        yield LiveRun(rc, run.raw, text, text.rpartition("todos complete:")[2])
    finally:
        run.close()


def test_the_live_view_shows_the_run_and_its_phase(live_run: LiveRun) -> None:
    """The frame names the run and the phase at work (``Phase 1/1: ...``)."""
    assert re.search(r"^run [0-9a-f]+ · running", live_run.text, re.MULTILINE), live_run.text[-2000:]
    assert re.search(r"^Phase 1/1: .* · running", live_run.text, re.MULTILINE), live_run.text[-2000:]


def test_the_live_view_shows_each_agent_with_a_timeout_countdown(live_run: LiveRun) -> None:
    """Each running agent's row carries its todo id, its state, elapsed time and time to its timeout."""
    for todo_id in ("7", "12"):
        row = re.search(rf"^{todo_id} +.*running +1 +(\S+) +(\S+)", live_run.text, re.MULTILINE)
        assert row is not None, live_run.text[-2000:]
        assert row.group(1).endswith("s")
        assert row.group(2).endswith("s")  # under a minute into a 60 s timeout: "59.0s" or "1m 00s"


def test_the_live_view_shows_a_title_with_brackets_as_written(live_run: LiveRun) -> None:
    """Rich markup in a todo title is shown, not obeyed: ``[agent]`` and ``[bold]`` stay visible."""
    assert MARKUP_TITLE in live_run.text


def test_run_once_ends_with_the_summary(live_run: LiveRun) -> None:
    """After the last frame: counts of complete / blocked todos, verify runs, pushes, agent time."""
    assert live_run.rc == 1  # 5 is blocked
    assert "todos complete: 2/3" in live_run.text
    assert "blocked: 1 (5)" in live_run.summary
    assert "verify runs: " in live_run.summary
    assert "phase commits pushed: 0 (no remote)" in live_run.summary
    assert "agent time: " in live_run.summary
    assert "cost" not in live_run.summary  # no agent reported one


def test_the_summary_says_what_to_type_for_a_blocked_todo(live_run: LiveRun) -> None:
    """For each blocked todo: `batchd logs ID` and `batchd retry ID` (with -C, run from elsewhere)."""
    lines = [line.strip() for line in live_run.summary.splitlines()]
    root = next(line.split(" -C ", 1)[1] for line in lines if line.startswith("batchd logs 5 -C "))
    assert f"batchd retry 5 -C {root}" in lines


def test_warnings_are_readable_lines_and_info_lines_are_left_out(live_run: LiveRun) -> None:
    """The unconfined-agents warning is shown as a readable line; no JSON and no info line tears the frame."""
    assert "agents_unconfined" in live_run.text
    assert '{"' not in live_run.text
    assert "daemon_ready" not in live_run.text


def test_the_cursor_is_shown_again_at_the_end(live_run: LiveRun) -> None:
    """The live view hides the cursor while it draws and gives it back when the run ends."""
    assert HIDE_CURSOR in live_run.raw
    assert SHOW_CURSOR in live_run.raw[live_run.raw.rindex(HIDE_CURSOR) :]


# ----------------------------------------------------------------------- signals, --quiet, no terminal


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_stops_the_daemon_gracefully_and_restores_the_terminal(
    tmp_path: Path, pty_run: Callable[..., PtyRun], signum: signal.Signals
) -> None:
    """SIGTERM or Ctrl-C with the live view up: the daemon stops its agent and exits 0; cursor back."""
    root = make_view_repo(tmp_path / "repo", {"3": "Thing 3"})
    run = pty_run(root)
    run.read_until(lambda text: rows_running(text, "3"), what="a row of 3 running")
    run.proc.send_signal(signum)
    assert run.finish() == 0
    stopped = [e for e in read_events(root) if e.type == "todo.agent_interrupted"]
    assert [e.payload["todo_id"] for e in stopped] == ["3"]
    assert not any(alive(int(e.payload["pgid"])) for e in agents_spawned(read_events(root)))
    assert SHOW_CURSOR in run.raw[run.raw.rindex(HIDE_CURSOR) :]
    assert "Traceback" not in run.text


def test_a_refusal_at_start_up_gives_the_terminal_back(
    tmp_path: Path, pty_run: Callable[..., PtyRun]
) -> None:
    """Another daemon holds the repository: exit 3 with the reason, the frame erased, the cursor shown."""
    root = make_view_repo(tmp_path / "repo", {"3": "Thing 3"})
    lock = DaemonLock(Workspace(root).lock_path).acquire()
    try:
        run = pty_run(root, "--once")
        assert run.finish() == 3, run.text
    finally:
        lock.release()
    assert "batchd: error:" in run.text
    assert SHOW_CURSOR in run.raw[run.raw.rindex(HIDE_CURSOR) :]


def test_quiet_shows_warnings_and_the_summary_only(tmp_path: Path, pty_run: Callable[..., PtyRun]) -> None:
    """`--quiet` on a terminal: no live frame, no info line, the warning, then the summary."""
    root = make_view_repo(tmp_path / "repo", {"4": "Thing 4"})
    release(root)
    run = pty_run(root, "--once", "--quiet")
    assert run.finish() == 0, run.text
    assert HIDE_CURSOR not in run.raw
    assert "Phase 1/1" not in run.text
    assert "daemon_ready" not in run.text
    assert "agents_unconfined" in run.text
    assert "todos complete: 1/1" in run.text


def test_without_a_terminal_the_log_stays_json_lines(tmp_path: Path) -> None:
    """stdout and stderr not a terminal: every line is a JSON object (journald); no frame, no summary."""
    root = make_view_repo(tmp_path / "repo", {"4": "Thing 4"})
    release(root)
    done = batchd(root, "run", "--once")  # stdout and stderr are pipes
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert "daemon_ready" in {line["event"] for line in lines}


def test_quiet_without_a_terminal_gives_warnings_as_json_then_the_summary(tmp_path: Path) -> None:
    """`--quiet` for a pipe: warning lines only (JSON), and the summary on stdout at the end."""
    root = make_view_repo(tmp_path / "repo", {"4": "Thing 4"})
    release(root)
    done = batchd(root, "run", "--once", "--quiet")  # stdout and stderr are pipes
    assert done.returncode == 0, done.stderr
    levels = {json.loads(line)["level"] for line in done.stderr.splitlines()}
    assert levels == {"warning"}  # agents_unconfined: sandbox = "none"
    assert "todos complete: 1/1" in done.stdout


# ------------------------------------------------------------------------------- the frame, in-process


def _console() -> Console:
    return Console(record=True, width=120, force_terminal=False, color_system=None)


def test_render_shows_markup_in_titles_and_notes_literally() -> None:
    """Titles in the table and lines of the last events keep their square brackets; the id is shown
    as its file name writes it."""
    proj = Projection()
    proj.todos["282"] = TodoView(
        "282",
        state="running",
        title=MARKUP_TITLE,
        path="todos/0282-ready-p2-x.md",
        agent_started_at=format_time(datetime.now(UTC)),
    )
    console = _console()
    console.print(render(proj, ["#0282 [red]x[/red]: blocked"], agent_timeout=1800))
    out = console.export_text()
    assert MARKUP_TITLE[:48] in out
    assert "#0282 [red]x[/red]: blocked" in out
    assert re.search(r"^0282 .* running +1 +\S+s +29m 5\ds", out, re.MULTILINE), out


def test_the_summary_gives_the_cost_when_agents_reported_it() -> None:
    """Agent time and cost add up over every attempt; the blocked todo's id is shown as its file
    name writes it (leading zeros kept), though the log keys it without them."""
    proj = Projection()
    proj.todos["282"] = TodoView(
        "282",
        path="todos/0282-ready-p2-x.md",
        state="blocked",
        reason="breaks [tests]",
        agent_seconds=90.0,
        cost_usd=0.5,
        history=[AttemptRecord(1, "rejected", "breaks [tests]", 90.0, 0.5)],
    )
    proj.todos["7"] = TodoView("7", state="complete", agent_seconds=30.0, cost_usd=0.25)
    console = _console()
    print_summary(console, summarize(proj))
    out = console.export_text()
    assert "todos complete: 1/2; rejected at least once: 1 (0282); blocked: 1 (0282)" in out
    assert "agent time: 2m 00s, cost $0.75" in out
    assert "0282: breaks [tests]" in out
    assert "batchd logs 0282\n" in out
    assert "batchd retry 0282\n" in out


def _spent() -> Projection:
    """Todo 1 accepted at its second attempt after losing a conflict (redone from scratch), todo 2
    rejected for good; the demo's scripted agent reported the costs (simulated)."""
    proj = Projection()
    proj.todos["1"] = TodoView(
        "1",
        state="complete",
        agent_seconds=180.0,
        cost_usd=0.75,
        cost_simulated=True,
        history=[
            AttemptRecord(1, "conflicted", "conflicts with 0", 60.0, 0.25),
            AttemptRecord(2, "accepted", "", 120.0, 0.5),
        ],
    )
    proj.todos["2"] = TodoView(
        "2",
        state="blocked",
        agent_seconds=30.0,
        cost_usd=0.28,
        history=[AttemptRecord(1, "rejected", "breaks", 30.0, 0.28)],
    )
    return proj


def test_the_summary_says_a_scripted_agents_cost_is_simulated() -> None:
    console = _console()
    print_summary(console, summarize(_spent()))
    assert "agent time: 3m 30s, cost $1.03 (simulated: the demo's scripted agent)" in console.export_text()


def test_the_summary_splits_agent_time_into_useful_failed_and_wasted() -> None:
    console = _console()
    print_summary(console, summarize(_spent()))
    assert "useful 2m 00s, failed 30.0s, wasted 1m 00s (waste ratio 50.0%)" in console.export_text()


def test_the_summary_names_the_budget_that_stopped_the_run() -> None:
    proj = _spent()
    proj.run.budget, proj.run.budget_detail = "max_cost_usd", "$1.03 of $1.00"
    console = _console()
    print_summary(console, summarize(proj))
    assert "stopped by a budget: [batchd] max_cost_usd reached ($1.03 of $1.00)" in console.export_text()


def test_the_live_view_shows_agent_time_waste_and_a_simulated_cost() -> None:
    console = _console()
    console.print(render(_spent(), []))
    out = console.export_text()
    assert "agent time 3m 30s · wasted 1m 00s · waste ratio 50.0% · cost $1.03 (simulated)" in out


def test_the_summary_counts_what_the_verdict_counts_and_shows_it() -> None:
    """A pending todo is no part of the run: the summary's counts and verdict line are the verdict's,
    with why it is not complete (a failed last push here)."""
    proj = Projection()
    proj.todos["1"] = TodoView("1", state="complete", path="todos/001-complete-p2-a.md")
    proj.todos["2"] = TodoView("2", state="pending", path="todos/002-pending-p2-b.md")
    proj.run.verdict = RunVerdict(
        success=False,
        checks_green=True,
        complete=("1",),
        not_complete=(),
        removed=(),
        detail="",
        unpushed="phase 1 was not pushed: remote rejected",
    )
    console = _console()
    print_summary(console, summarize(proj))
    out = console.export_text()
    assert "verdict: NOT COMPLETE; phase 1 was not pushed: remote rejected; checks green; 1 complete" in out
    assert "todos complete: 1/1;" in out


def test_off_a_terminal_the_view_prints_each_notable_event_once(tmp_path: Path) -> None:
    """The demo piped: no frame; each notable event of a log that appears once the view runs is one
    line, and the whole log is folded (the summary counts the demo's run)."""
    db = tmp_path / "events.db"
    out = io.StringIO()
    console = Console(file=out, width=200)
    assert not console.is_terminal
    with LiveView(log_opener(f"sqlite:///{db}"), console) as view:
        shutil.copy(FIXTURE_LOG, tmp_path / "copy.db")
        (tmp_path / "copy.db").replace(db)  # whole at once: the view never opens half a file
    text = out.getvalue()
    assert text.count("run completed\n") == 1
    assert text.count("phase 5 pushed") == 1
    assert "#278 No buffer time between appointments: lost a conflict" in text
    assert [todo_id for todo_id, _ in summarize(view.proj).blocked] == ["267", "282"]
