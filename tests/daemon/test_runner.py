"""daemon.runner.Daemon: what it holds across ticks."""

from __future__ import annotations

from pathlib import Path

import pytest
from procs import make_repo

from daemon.config import load_config
from daemon.exceptions import UsageError
from daemon.runner import Daemon


def test_a_reload_asking_for_a_sandbox_that_cannot_run_keeps_the_old_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP with `sandbox = "bwrap"` where bubblewrap is missing: refused, old config and sandbox kept."""
    root = make_repo(tmp_path / "repo", {})
    d = Daemon(load_config(root))
    try:
        before = (d.config, d.sandbox)
        text = (root / "batchd.toml").read_text().replace("[agent]\n", '[agent]\nsandbox = "bwrap"\n')
        (root / "batchd.toml").write_text(text)
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(UsageError, match="bubblewrap"):
            d.reconfigure(load_config(root))
        assert (d.config, d.sandbox) == before
    finally:
        d.close()
