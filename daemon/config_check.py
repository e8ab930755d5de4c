"""Checking one ``batchd.toml`` value: each check converts a raw TOML value or raises a
:class:`~daemon.exceptions.ConfigError` naming the file, the key and how to fix it."""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pathspec

from daemon.exceptions import ConfigError

Argv = tuple[str, ...]


class Checker:
    """Converts one section's raw TOML values, raising ConfigError that names file and key."""

    def __init__(self, path: Path, section: str) -> None:
        self.path = path
        self.section = section

    def fail(self, key: str, message: str, hint: str = "") -> ConfigError:
        return ConfigError(message, path=str(self.path), key=f"{self.section}.{key}", hint=hint)

    def wrong_type(self, key: str, expected: str, value: object) -> ConfigError:
        return self.fail(key, f"expected {expected}, got {describe(value)}")

    def string(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.wrong_type(key, "a string", value)
        return value

    def nonempty(self, key: str, value: object) -> str:
        text = self.string(key, value)
        if not text:
            raise self.fail(key, "cannot be empty")
        return text

    def integer(self, key: str, value: object, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong_type(key, "an integer", value)
        if value < minimum:
            raise self.fail(key, f"must be at least {minimum}, got {value}")
        return value

    def seconds(self, key: str, value: object, *, allow_zero: bool) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong_type(key, "a number of seconds", value)
        if value < 0 or (value == 0 and not allow_zero):
            raise self.fail(key, f"must be {'>= 0' if allow_zero else '> 0'} seconds, got {value}")
        return float(value)

    def number(self, key: str, value: object, unit: str) -> float:
        """A limit: a number >= 0 in ``unit`` (0 is no limit)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong_type(key, f"a number of {unit}", value)
        if not value >= 0 or value == float("inf"):
            raise self.fail(key, f"must be a number of {unit} >= 0 (0 = no limit), got {value}")
        return float(value)

    def probability(self, key: str, value: object) -> float:
        """A probability strictly between 0 and 1 (a flake rate, an accepted error)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong_type(key, "a number between 0 and 1", value)
        if not 0 < value < 1:
            raise self.fail(key, f"must be between 0 and 1 (exclusive), got {value}", hint="e.g. 0.05 for 5%")
        return float(value)

    def boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.wrong_type(key, "true or false", value)
        return value

    def choice(self, key: str, value: object, allowed: tuple[str, ...]) -> str:
        text = self.string(key, value)
        if text not in allowed:
            near = difflib.get_close_matches(text, allowed, n=1)
            hint = f'did you mean "{near[0]}"?' if near else ""
            raise self.fail(key, f"must be one of {', '.join(allowed)}; got {text!r}", hint)
        return text

    def strings(self, key: str, value: object) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.wrong_type(key, "a list of strings", value)
        return tuple(value)

    def argv(self, key: str, value: object, *, allow_empty: bool = False) -> Argv:
        if isinstance(value, str):
            raise self.fail(
                key,
                f"a command must be an argv list, not the string {value!r}",
                f"write it as an argv list: {toml_literal(shlex.split(value) or ['npm', 'test'])}",
            )
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.wrong_type(key, 'an argv list of strings such as ["npm", "test"]', value)
        if not value and not allow_empty:
            raise self.fail(key, "a command cannot be empty", 'write it as an argv list: ["npm", "test"]')
        return tuple(value)

    def argv_list(self, key: str, value: object) -> tuple[Argv, ...]:
        if isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        ):
            if isinstance(value, str):
                suggestion = [shlex.split(value)]
            elif any(" " in v for v in value):  # ["npm test", "make lint"]: one command per string
                suggestion = [shlex.split(v) for v in value]
            else:  # ["npm", "test"]: one argv missing its outer list
                suggestion = [list(value)]
            raise self.fail(
                key,
                f"expected a list of argv lists, got {describe(value)}",
                f"write each command as an argv list: {toml_literal(suggestion)}",
            )
        if not isinstance(value, list):
            raise self.wrong_type(key, "a list of argv lists", value)
        return tuple(self.argv(f"{key}[{i}]", v) for i, v in enumerate(value))

    def env(self, key: str, value: object) -> Mapping[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.wrong_type(key, 'a table of strings such as {NODE_ENV = "test"}', value)
        return MappingProxyType(dict(value))


def describe(value: object) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    return f"{kind} ({toml_literal(value)})"


def setup_commands(c: Checker, key: str, value: object) -> tuple[Argv, ...]:
    # One argv (["npm", "ci"]) or several ([["npm", "ci"], ["npm", "run", "build"]]).
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return tuple(c.argv(f"{key}[{i}]", v) for i, v in enumerate(value))
    argv = c.argv(key, value, allow_empty=True)
    return (argv,) if argv else ()


def inside_path(c: Checker, key: str, value: object) -> str:
    """A path relative to a tree that stays inside it (no absolute path, no ``..``); "" for none."""
    text = norm_path(c.string(key, value))
    if text and (Path(text).is_absolute() or ".." in Path(text).parts):
        raise c.fail(key, f"must be a path inside the tree, got {text!r}", hint='e.g. "reports/junit.xml"')
    return text


def norm_path(value: str) -> str:
    """A path as batchd compares it with what git lists: ``./plans/X`` is ``plans/X``."""
    return Path(value).as_posix() if value else value


def path_patterns(patterns: Sequence[str]) -> pathspec.GitIgnoreSpec:
    """A matcher for gitignore-style patterns (``tests/**``, ``**/test_*.py``) on repository paths."""
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def globs(c: Checker, key: str, value: object) -> tuple[str, ...]:
    """gitignore-style patterns, checked to compile."""
    patterns = c.strings(key, value)
    for pattern in patterns:
        try:
            path_patterns([pattern])
        except (ValueError, TypeError) as e:
            raise c.fail(key, f"{pattern!r} is not a valid pattern: {e}", 'write e.g. "tests/**"') from None
    return patterns


def toml_literal(value: object) -> str:
    """A TOML literal for the values a config holds (JSON strings are valid TOML basic strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        inner = ", ".join(f"{json.dumps(k)} = {toml_literal(v)}" for k, v in value.items())
        return "{" + inner + "}" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return json.dumps(str(value))


Check = Callable[[Checker, str, object], Any]
