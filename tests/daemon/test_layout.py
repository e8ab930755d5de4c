"""daemon/'s stage packages import one way: cli -> service -> worker -> engine -> world -> intake."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMON = Path(__file__).resolve().parents[2] / "daemon"
ORDER = ("cli", "service", "worker", "engine", "world", "intake")  # each may import only those after it


def imported_stages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "daemon" and len(parts) > 1 and parts[1] in ORDER:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("stage", ORDER)
def test_a_stage_imports_only_the_stages_below_it(stage: str) -> None:
    allowed = set(ORDER[ORDER.index(stage) :])
    wrong = {
        str(path.relative_to(DAEMON)): sorted(imported_stages(path) - allowed)
        for path in sorted((DAEMON / stage).rglob("*.py"))
        if imported_stages(path) - allowed
    }
    assert wrong == {}


@pytest.mark.parametrize(
    "name", ["config.py", "config_check.py", "config_render.py", "exceptions.py", "workspace.py"]
)
def test_the_shared_modules_import_no_stage(name: str) -> None:
    """The configuration, the errors and the .batchd/ layout sit below every stage."""
    assert imported_stages(DAEMON / name) == set()
