"""The request command (``[batchd] open_request``) as a real process: its argv filled in element by
element with no shell, its URL read from its output, and every way it fails a result, not an error."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from daemon.world.request import build_argv, last_url, run_request

ECHO_ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def test_placeholders_are_replaced_inside_arguments_and_each_stays_one_argument(tmp_path: Path) -> None:
    """A title with shell syntax and a placeholder-looking text arrives as one literal argument."""
    title = "fix $(rm -rf ~); {branch}"
    values = {"branch": "batchd/run-1", "base": "main", "title": title, "body_file": "b"}
    argv = build_argv([*ECHO_ARGV, "--head={branch}", "{title}", "{body_file}"], values)
    result = run_request(argv, cwd=tmp_path)
    assert result.ok
    assert json.loads(result.output) == ["--head=batchd/run-1", "fix $(rm -rf ~); {branch}", "b"]


def test_the_url_is_the_last_line_that_is_a_url() -> None:
    """Lines around it, and a URL inside a sentence, are not the URL."""
    text = "https://old.example/1\nsee https://x.example/2 for more\nhttps://h.example/o/r/pull/3\n\nDone\n"
    assert last_url(text) == "https://h.example/o/r/pull/3"
    assert last_url("no url here\n") == ""


def test_a_command_that_is_not_installed_is_a_failed_result(tmp_path: Path) -> None:
    """Not found: not ok, the reason names the program."""
    result = run_request(["batchd-no-such-gh", "pr", "create"], cwd=tmp_path)
    assert not result.ok and "'batchd-no-such-gh' was not found" in result.reason


def test_a_command_that_does_not_finish_is_stopped_at_its_time_limit(tmp_path: Path) -> None:
    """Past the time limit: not ok, the reason says so."""
    result = run_request([sys.executable, "-c", "import time; time.sleep(30)"], cwd=tmp_path, timeout=0.5)
    assert not result.ok and "did not finish in" in result.reason


def test_a_nonzero_exit_gives_its_code_and_last_line(tmp_path: Path) -> None:
    """Exit 1: the reason carries the code and what it printed last."""
    code = "import sys; print('first'); print('no permission', file=sys.stderr); sys.exit(1)"
    result = run_request([sys.executable, "-c", code], cwd=tmp_path)
    assert not result.ok and result.reason == "exit code 1: no permission"
