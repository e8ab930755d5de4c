"""The shim's deadline: an agent no daemon watches any more still ends at its timeout + margin.

Each agent here is a real process started through ``start_agent`` with a deadline a second or two
ahead and nothing else enforcing it (no ``enforce_timeout``): only the shim can end it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.world import agentshim
from daemon.world.agentproc import AgentProcess, process_alive, read_exit_record, start_agent
from daemon.world.agentresult import finish

PY = sys.executable
DEADLINE = 2.0  # seconds from the start: long enough for the agent to be set up before it passes


def wait_record(path: Path, timeout: float = 30.0) -> dict[str, Any]:
    """The exit record, once the shim has written it (bounded poll)."""
    end = time.monotonic() + timeout
    while (record := read_exit_record(path)) is None:
        assert time.monotonic() < end, f"no exit record at {path}"
        time.sleep(0.02)
    return record


def wait_file(path: Path, timeout: float = 10.0) -> str:
    end = time.monotonic() + timeout
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.02)
    return path.read_text()


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while process_alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def started() -> Iterator[list[AgentProcess]]:
    """Agents a test started: their groups are killed and the shims reaped at teardown."""
    procs: list[AgentProcess] = []
    yield procs
    for proc in procs:
        proc.kill_group(signal.SIGKILL)
        proc.wait(timeout=10)


def start(tmp_path: Path, code: str, *, timeout: float = 0.0, grace: float = 0.5) -> AgentProcess:
    """``code`` as the agent, its shim's deadline ``timeout`` + DEADLINE seconds ahead."""
    return start_agent(
        [PY, "-c", code],
        cwd=tmp_path,
        log_path=tmp_path / "agent.log",
        env=dict(os.environ),
        exit_path=tmp_path / "exit.json",
        timeout=timeout,
        deadline_margin=DEADLINE,
        deadline_grace=grace,
    )


def test_an_agent_past_its_deadline_is_ended_with_what_it_spawned_and_recorded_timed_out(
    tmp_path: Path, started: list[AgentProcess]
) -> None:
    """An agent sleeping forever, and the grandchild it started in its group, are both gone after
    the deadline, with no daemon enforcing anything; the record says timed out."""
    pids = tmp_path / "pids"
    code = (
        "import os, subprocess, time\n"
        "child = subprocess.Popen(['sleep', '1000'])\n"
        f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
        "time.sleep(1000)\n"
    )
    proc = start(tmp_path, code)
    started.append(proc)
    agent, grandchild = map(int, wait_file(pids).split())
    record = wait_record(tmp_path / "exit.json")
    assert record["timed_out"] is True
    assert record["rc"] == -signal.SIGTERM
    assert wait_gone(agent) and wait_gone(grandchild)


def test_a_live_daemon_that_was_late_sees_the_shims_timeout(
    tmp_path: Path, started: list[AgentProcess]
) -> None:
    """The daemon polling the shim it started (blocked past the margin, say) reads the record's flag:
    the outcome is a timeout, not an agent that failed on its own."""
    proc = start(tmp_path, "import time; time.sleep(1000)")
    started.append(proc)
    wait_record(tmp_path / "exit.json")
    proc.wait(timeout=10)
    outcome = finish(proc)
    assert outcome.timed_out and not outcome.ok


def test_an_agent_that_ends_before_its_deadline_keeps_its_exit_code(
    tmp_path: Path, started: list[AgentProcess]
) -> None:
    """A well-behaved agent is untouched: its rc is recorded, without timed_out."""
    proc = start(tmp_path, "raise SystemExit(3)", timeout=600.0)
    started.append(proc)
    assert proc.wait(timeout=30) == 3
    raw = json.loads((tmp_path / "exit.json").read_text())
    assert raw["rc"] == 3 and "timed_out" not in raw
    assert not finish(proc).timed_out


def test_an_agent_ignoring_sigterm_is_sigkilled_after_the_grace(
    tmp_path: Path, started: list[AgentProcess]
) -> None:
    """SIGTERM at the deadline does not end it; SIGKILL after the (short) grace does."""
    ready = tmp_path / "ready"
    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"open({str(ready)!r}, 'w').write('x')\n"
        "time.sleep(1000)\n"
    )
    proc = start(tmp_path, code, grace=0.3)
    started.append(proc)
    wait_file(ready)
    record = wait_record(tmp_path / "exit.json")
    assert (record["rc"], record["timed_out"]) == (-signal.SIGKILL, True)


def test_what_the_agent_spawned_gets_the_grace_to_end_after_the_agent_did(
    tmp_path: Path, started: list[AgentProcess]
) -> None:
    """The agent ends at SIGTERM at once; a process it started that takes a moment to clean up on
    SIGTERM gets that moment (the grace), not a SIGKILL the instant the agent is gone."""
    ready, cleaned = tmp_path / "ready", tmp_path / "cleaned"
    helper = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    time.sleep(0.3)\n"
        f"    open({str(cleaned)!r}, 'w').write('x')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"open({str(ready)!r}, 'w').write('x')\n"
        "time.sleep(1000)\n"
    )
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {helper!r}])\n"
        "time.sleep(1000)\n"
    )
    proc = start(tmp_path, code, grace=20.0)
    started.append(proc)
    wait_file(ready)
    record = wait_record(tmp_path / "exit.json")
    assert record["rc"] == -signal.SIGTERM  # the agent itself ended at the SIGTERM
    assert cleaned.exists()  # the record comes after the group is empty


@pytest.mark.parametrize("first", ["--deadline=soon", "--deadline=nan", "--deadline=1,-1", "--deadline="])
def test_a_bad_deadline_is_refused_with_the_usage(first: str, tmp_path: Path) -> None:
    """A deadline that is not a time is a usage error: nothing runs, no record is written."""
    marker = tmp_path / "ran"
    done = subprocess.run(
        [PY, "-I", "-S", agentshim.__file__, first, str(tmp_path / "exit.json"), "touch", str(marker)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "--deadline=EPOCH" in done.stderr
    assert not marker.exists() and not (tmp_path / "exit.json").exists()


def test_only_the_first_argument_is_taken_for_a_deadline(tmp_path: Path) -> None:
    """An agent's own ``--deadline=...`` argument is passed to it, not read by the shim."""
    out = tmp_path / "argv"
    code = f"import sys; open({str(out)!r}, 'w').write(repr(sys.argv[1:]))"
    done = subprocess.run(
        [PY, "-I", "-S", agentshim.__file__, str(tmp_path / "exit.json"), PY, "-c", code, "--deadline=1"],
        check=False,
    )
    assert done.returncode == 0
    assert out.read_text() == "['--deadline=1']"
    record = read_exit_record(tmp_path / "exit.json")
    assert record is not None and (record["rc"], record["timed_out"]) == (0, False)
