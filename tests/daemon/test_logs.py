"""Logging never stops the daemon: a line that cannot be written is dropped."""

from __future__ import annotations

import subprocess
from pathlib import Path

from procs import PY, base_env, make_repo, todo_states


def test_a_daemon_whose_stderr_reader_went_away_still_finishes_its_run(tmp_path: Path) -> None:
    """`batchd run --once 2>&1 | head -0`: every log line fails with a broken pipe; the run completes."""
    root = make_repo(tmp_path / "repo", {"1": "write: [{path: one.txt, content: one}]"})
    proc = subprocess.Popen(
        [PY, "-m", "daemon", "run", "--once", "--log-json", "-C", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=base_env(),
    )
    assert proc.stderr is not None
    proc.stderr.close()  # the reader is gone: writes to the daemon's stderr fail with EPIPE
    assert proc.wait(timeout=60) == 0
    assert todo_states(root) == {"1": "complete"}
