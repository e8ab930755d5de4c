"""A todo id as a person writes and types it: leading zeros kept wherever it is shown, and every form
(``282``, ``0282``, ``todo-282``) accepted; and ``batchd logs ID --verify``. Real runs of ``batchd run
--once`` on real repositories with the scripted agent."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from procs import DaemonProcess, batchd, git, make_repo, read_events

STATUS_FILE = "plans/EXECUTION-STATUS.md"
FORMS = ("282", "0282", "todo-282", "todo-0282")


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def zero_repo(tmp_path: Path, start_daemon: Callable[..., DaemonProcess]) -> Path:
    """A finished run of one todo filed as 0282."""
    root = make_repo(tmp_path / "repo", {"0282": "write: [{path: surge.txt, content: surge}]"})
    daemon = start_daemon(root, "--once")
    assert daemon.wait(timeout=90) == 0, daemon.log_path.read_text()[-3000:]
    return root


def test_the_leading_zeros_are_kept_in_status_commit_and_status_file(zero_repo: Path) -> None:
    """0282 is shown as 0282 by `batchd status` (and --json), in the phase commit and in the status file."""
    data = json.loads(ok(batchd(zero_repo, "status", "--json")))
    assert [t["id"] for t in data["todos"]] == ["0282"]
    assert "0282" in ok(batchd(zero_repo, "status"))
    message = git(zero_repo, "log", "-1", "--format=%B", "main")
    assert "#0282" in message and "#282" not in message, message
    status_file = (zero_repo / STATUS_FILE).read_text(encoding="utf-8")
    assert "| 0282 |" in status_file and "| 282 |" not in status_file


def test_logs_and_events_accept_every_id_form(zero_repo: Path) -> None:
    """`batchd logs` and `batchd events --stream` give the same answer for 282, 0282 and todo-282."""
    outputs = {form: ok(batchd(zero_repo, "logs", form)) for form in FORMS}
    assert len(set(outputs.values())) == 1 and outputs["282"], outputs
    streams = {form: ok(batchd(zero_repo, "events", "--stream", form)) for form in FORMS}
    assert len(set(streams.values())) == 1 and "todo.completed" in streams["282"], streams


@pytest.mark.parametrize(("command", "form"), [("retry", "0282"), ("cancel", "todo-282")])
def test_retry_and_cancel_accept_every_id_form(zero_repo: Path, command: str, form: str) -> None:
    """`batchd retry 0282` / `cancel todo-282` (no daemon running) record a request for todo 282."""
    assert f"{command} #0282: queued" in ok(batchd(zero_repo, command, form))
    assert read_events(zero_repo)[-1].payload == {"todo_id": "282"}


# Fails, printing 3000 numbered lines first, whenever bad.txt exists: far more than an event keeps.
FAILING_CHECK = """\
import os, sys
if os.path.exists("bad.txt"):
    for n in range(3000):
        print(f"line {n} of the test output")
    print("FAILED: bad.txt must not exist")
    sys.exit(1)
print("ok")
"""


def test_logs_verify_prints_the_whole_output_of_the_check_that_rejected_the_todo(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """A todo rejected by the checks: `batchd logs ID --verify` prints the failing command and all of
    its output, first line to last; a todo never rejected is said to be so (exit 1)."""
    root = make_repo(
        tmp_path / "repo",
        {"5": "write: [{path: bad.txt, content: bad}]", "6": "write: [{path: good.txt, content: good}]"},
        max_attempts=1,
    )
    (root / "check.py").write_text(FAILING_CHECK, encoding="utf-8")
    git(root, "commit", "-q", "-am", "a check that fails on bad.txt")
    daemon = start_daemon(root, "--once")
    assert daemon.wait(timeout=90) == 1, daemon.log_path.read_text()[-3000:]
    out = ok(batchd(root, "logs", "5", "--verify"))
    assert out.splitlines()[0].endswith("check.py")
    assert "line 0 of the test output" in out and "line 2999 of the test output" in out
    assert out.endswith("FAILED: bad.txt must not exist\n[exit 1]\n")
    never = batchd(root, "logs", "6", "--verify")
    assert never.returncode == 1 and "todo #6 was never rejected by the checks" in never.stderr
