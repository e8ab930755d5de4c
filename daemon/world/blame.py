"""Whether a failing check's output points at a file: how bisection guesses which todo broke it."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

__all__ = ["is_named"]

# Stems too common in test output to mean "this file failed".
_GENERIC_STEMS = frozenset(
    {
        "__init__",
        "__main__",
        "index",
        "main",
        "test",
        "tests",
        "util",
        "utils",
        "setup",
        "conftest",
        "types",
        "config",
        "common",
        "helpers",
        "init",
        "base",
        "core",
        "models",
        "views",
        "errors",
    }
)


def is_named(text: str, path: str) -> bool:
    """Whether failing output points at ``path``: the path, its file name, or its module name."""
    p = PurePosixPath(path)
    if path in text:
        return True
    if re.search(rf"(?<![\w.-]){re.escape(p.name)}(?!\w)", text):
        return True
    if p.suffix == ".py" and len(p.parts) > 1 and ".".join(p.with_suffix("").parts) in text:
        return True
    stem = p.stem
    return (
        len(stem) >= 4
        and stem.lower() not in _GENERIC_STEMS
        and re.search(rf"(?<![\w.-]){re.escape(stem)}(?![\w-])", text) is not None
    )
