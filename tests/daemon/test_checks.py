"""daemon.world.checks: verify commands as real subprocesses, retries, timeouts and process groups."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from daemon.world.checks import TAIL_CHARS, CheckRunner

PY = sys.executable
# Starts a sleeping grandchild, writes its pid, then hangs ignoring SIGTERM ("hang") or exits ("exit").
SPAWN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen(['sleep', '300'])\n"
    "open(sys.argv[1], 'w').write(str(child.pid))\n"
    "while sys.argv[2] == 'hang':\n"
    "    time.sleep(60)\n"
)


def _py(code: str) -> tuple[str, ...]:
    return (PY, "-c", code)


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (PID 1 in a container may never reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_all_commands_pass(tmp_path: Path) -> None:
    """Every command exits 0: passed, no failed command."""
    result = CheckRunner([_py("print('one')"), _py("print('two')")], timeout=10).run(tmp_path)
    assert result.passed
    assert result.failed_command is None
    assert not result.flaky


def test_stops_at_first_failure(tmp_path: Path) -> None:
    """The first failing command is reported with its exit code; later commands do not run."""
    first = _py("print('typecheck failed in src/app.ts'); raise SystemExit(3)")
    second = _py("open('ran', 'w').close()")
    result = CheckRunner([first, second], timeout=10).run(tmp_path)
    assert not result.passed
    assert result.failed_command == first
    assert result.returncode == 3
    assert "src/app.ts" in result.output_tail
    assert not (tmp_path / "ran").exists()


def test_output_tail_is_bounded(tmp_path: Path) -> None:
    """Only the last ~4000 characters of a long output are kept, ending with its last line."""
    result = CheckRunner([_py("print('x' * 20000); print('LAST'); raise SystemExit(1)")], timeout=10).run(
        tmp_path
    )
    assert len(result.output_tail) <= TAIL_CHARS
    assert result.output_tail.rstrip().endswith("LAST")


def test_flaky_check_is_retried_and_passes(tmp_path: Path) -> None:
    """A check failing only on its first run passes on the re-run and is marked flaky."""
    flaky = _py(
        "import os, sys\nif not os.path.exists('marker'):\n    open('marker', 'w').close(); sys.exit(1)\n"
    )
    result = CheckRunner([flaky], timeout=10, retries=1).run(tmp_path)
    assert result.passed
    assert result.flaky


def test_no_retries_means_first_failure_counts(tmp_path: Path) -> None:
    """With retries=0 the same flaky check fails."""
    flaky = _py(
        "import os, sys\nif not os.path.exists('marker'):\n    open('marker', 'w').close(); sys.exit(1)\n"
    )
    result = CheckRunner([flaky], timeout=10, retries=0).run(tmp_path)
    assert not result.passed


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """A hanging check is killed with its grandchild: no orphan is left running."""
    pid_file = tmp_path / "child.pid"
    cmd = (PY, "-c", SPAWN, str(pid_file), "hang")
    started = time.monotonic()
    result = CheckRunner([cmd], timeout=0.5, kill_grace=0.3).run(tmp_path)
    assert not result.passed
    assert result.timed_out
    assert "timed out" in result.output_tail
    assert time.monotonic() - started < 10
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_leftover_children_are_killed_after_exit(tmp_path: Path) -> None:
    """A check that exits leaving a background child in its group does not leave it running."""
    pid_file = tmp_path / "child.pid"
    cmd = (PY, "-c", SPAWN, str(pid_file), "exit")
    assert CheckRunner([cmd], timeout=10).run(tmp_path).passed
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_missing_command_is_a_red_check(tmp_path: Path) -> None:
    """A command that cannot start fails with 127 and says why."""
    result = CheckRunner([("no-such-command-batchd",)], timeout=10).run(tmp_path)
    assert not result.passed
    assert result.returncode == 127
    assert "no-such-command-batchd" in result.output_tail


def test_log_path_receives_every_command(tmp_path: Path) -> None:
    """Each command's output and exit code is appended to the log file."""
    log = tmp_path / "logs" / "verify.log"
    CheckRunner([_py("print('hello')"), _py("raise SystemExit(2)")], timeout=10).run(tmp_path, log)
    text = log.read_text()
    assert "hello" in text
    assert "[exit 0]" in text
    assert "[exit 2]" in text


def test_env_is_passed_to_commands(tmp_path: Path) -> None:
    """Extra environment variables reach the command."""
    cmd = _py("import os, sys; sys.exit(0 if os.environ['BATCHD_X'] == 'y' else 1)")
    assert CheckRunner([cmd], timeout=10, env={"BATCHD_X": "y"}).run(tmp_path).passed


def test_runner_is_callable(tmp_path: Path) -> None:
    """A CheckRunner can be used as the verifier's runner(worktree)."""
    assert CheckRunner([_py("pass")], timeout=10)(tmp_path).passed


def test_the_fixed_rule_records_each_commands_runs(tmp_path: Path) -> None:
    """retries=1 and a check red once: tries holds (runs, reds) = (2, 1) for it, after the first's (1, 0)."""
    flaky = _py(
        "import os, sys\nif not os.path.exists('marker'):\n    open('marker', 'w').close(); sys.exit(1)\n"
    )
    result = CheckRunner([_py("pass"), flaky], timeout=10, retries=1).run(tmp_path)
    assert [(t.command, t.runs, t.reds) for t in result.tries] == [(_py("pass"), 1, 0), (flaky, 2, 1)]
