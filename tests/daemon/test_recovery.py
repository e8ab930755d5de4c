"""Recovery's look at the world before a run resumes."""

from __future__ import annotations

import subprocess
from pathlib import Path


def test_a_checkout_on_another_branch_is_refused_with_how_to_fix(tmp_path: Path) -> None:
    """`batchd run` on a checkout that is not on [batchd] branch stops at once (exit 2) naming both."""
    import pytest

    from daemon.exceptions import UsageError
    from daemon.recovery import check_checkout

    subprocess.run(["git", "init", "-q", "-b", "main", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "checkout", "-q", "-b", "feature"], check=True)
    with pytest.raises(UsageError) as caught:
        check_checkout(tmp_path, "main")
    assert "'feature'" in caught.value.message and "'main'" in caught.value.message
    assert caught.value.exit_code == 2
    assert "git checkout main" in caught.value.hint
