"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fenced_commands(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command() -> None:
    """`.ci/run` contains the README's second set-up command verbatim."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = fenced_commands(readme)[1]
    assert "pytest" in test_command
    assert test_command in ci.splitlines()


def test_readme_demo_command_runs_batchd_demo() -> None:
    """The README's first set-up command installs batchd and runs `batchd demo`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = fenced_commands(readme)[0]
    assert "pip install" in first and first.endswith("batchd demo")
