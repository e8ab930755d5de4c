"""``batchd.toml``: load, validate, compare and render the daemon's configuration.

Every key is checked at start-up (and on SIGHUP) so that a typo or a wrong type is one clear
:class:`~daemon.exceptions.ConfigError` naming the file and the key, never a surprise an hour
into a run. The dataclasses are frozen and hold tuples, so a loaded config can be shared freely.

``[agent] preset`` and ``[agent] command``: a non-empty ``command`` wins and ``preset`` is then
ignored (``batchd init`` writes ``preset = "claude"``, and a user who later adds a ``command``
should not have to delete it). :attr:`AgentConfig.argv_template` is the one place that decides.
"""

from __future__ import annotations

import difflib
import json
import re
import shlex
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import pathspec

from daemon.exceptions import ConfigError

__all__ = [
    "AGENT_PLACEHOLDERS",
    "AGENT_WRITABLE",
    "CONFIG_FILE",
    "PRESETS",
    "TEST_GLOBS",
    "TEST_INFRA",
    "AgentConfig",
    "Argv",
    "BatchdConfig",
    "Config",
    "VerifyConfig",
    "default_config",
    "detect_verify_commands",
    "diff_config",
    "load_config",
    "path_patterns",
    "render_default_config",
]

CONFIG_FILE = "batchd.toml"

Argv = tuple[str, ...]
CommitMode = Literal["phase", "todo"]
Schedule = Literal["continuous", "barrier"]
Preset = Literal["claude", "codex", "aider"]
Strategy = Literal["bisect", "incremental"]
ConflictMode = Literal["merge", "strict"]
SandboxMode = Literal["auto", "bwrap", "none"]
TestIntegrity = Literal["report", "reject"]

# Where agents keep their own state (credentials, sessions, caches): writable inside the sandbox.
AGENT_WRITABLE = ("~/.claude", "~/.claude.json", "~/.codex", "~/.aider")
# The usual test locations of the languages batchd detects (gitignore-style patterns).
TEST_GLOBS = (
    "tests/**",
    "test/**",
    "spec/**",
    "**/__tests__/**",
    "**/test_*.py",
    "**/*_test.py",
    "**/conftest.py",
    "**/*_test.go",
    "**/*.test.[jt]s",
    "**/*.test.[jt]sx",
    "**/*.spec.[jt]s",
    "**/*.spec.[jt]sx",
)
# Files that decide how tests run (which are collected, skipped or expected to fail): a change that
# adds one counts as a test edit too (a new conftest.py can skip every test).
TEST_INFRA = (
    "**/conftest.py",
    "**/pytest.ini",
    "**/tox.ini",
    "**/.coveragerc",
    "**/jest.config.*",
    "**/vitest.config.*",
    "**/.mocharc*",
    "**/karma.conf.*",
    "**/phpunit.xml*",
)

# Placeholders allowed inside [agent] command elements (substituted by daemon.agents.build_argv).
AGENT_PLACEHOLDERS = ("prompt", "todo_path", "todo_id", "worktree")

PRESETS: Mapping[str, Argv] = MappingProxyType(
    {
        "claude": ("claude", "-p", "{prompt}", "--dangerously-skip-permissions", "--output-format", "json"),
        "codex": ("codex", "exec", "--full-auto", "{prompt}"),
        "aider": ("aider", "--yes-always", "--message", "{prompt}"),
    }
)


def _empty_env() -> Mapping[str, str]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchdConfig:
    """``[batchd]``: where things are and how the run is paced."""

    todos_dir: str = "todos"
    plan: str = ""
    status_file: str = "plans/EXECUTION-STATUS.md"
    branch: str = "main"
    remote: str = "origin"
    max_parallel: int = 5
    max_attempts: int = 2
    schedule: Schedule = "continuous"
    commit_mode: CommitMode = "phase"
    stop_timeout: float = 60.0
    rescan_interval: float = 30.0
    ignore: tuple[str, ...] = ("README.md", ".gitkeep", "TEMPLATE*.md")
    db: str = ".batchd/events.db"


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """``[agent]``: which coding agent runs each todo, and how."""

    preset: Preset = "claude"
    command: Argv = ()
    timeout: float = 1800.0
    prompt_file: str = ""
    setup: tuple[Argv, ...] = ()
    env: Mapping[str, str] = field(default_factory=_empty_env)
    sandbox: SandboxMode = "auto"
    writable: tuple[str, ...] = AGENT_WRITABLE
    protect: tuple[str, ...] = ()
    max_change_bytes: int = 50 * 1024 * 1024
    max_log_bytes: int = 20 * 1024 * 1024

    @property
    def argv_template(self) -> Argv:
        """The agent argv with placeholders: ``command`` when given, else the preset's."""
        return self.command or PRESETS[self.preset]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyConfig:
    """``[verify]``: the repository's own checks, and how a red batch is searched."""

    commands: tuple[Argv, ...] = ()
    strategy: Strategy = "bisect"
    retries: int = 1
    repair: bool = True
    timeout: float = 1800.0
    conflicts: ConflictMode = "merge"
    sandbox: SandboxMode = "auto"
    writable: tuple[str, ...] = ()
    protect_tests: tuple[str, ...] = TEST_GLOBS
    test_integrity: TestIntegrity = "report"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """A loaded ``batchd.toml``; ``root`` is the repository, ``path`` the file it came from."""

    root: Path
    path: Path
    batchd: BatchdConfig = BatchdConfig()
    agent: AgentConfig = AgentConfig()
    verify: VerifyConfig = VerifyConfig()

    @property
    def todos_path(self) -> Path:
        return self.root / self.batchd.todos_dir

    @property
    def status_path(self) -> Path:
        return self.root / self.batchd.status_file

    @property
    def plan_path(self) -> Path | None:
        return self.root / self.batchd.plan if self.batchd.plan else None

    @property
    def db_url(self) -> str:
        """``db`` as a SQLAlchemy URL: a URL is kept, a path becomes SQLite under ``root``."""
        if "://" in self.batchd.db:
            return self.batchd.db
        return f"sqlite:///{(self.root / self.batchd.db).resolve()}"


def default_config(root: Path, verify_commands: Sequence[Sequence[str]]) -> Config:
    """The config every key left out of ``batchd.toml`` falls back to."""
    return Config(
        root=root,
        path=root / CONFIG_FILE,
        verify=VerifyConfig(commands=tuple(tuple(c) for c in verify_commands)),
    )


# --------------------------------------------------------------------------------------------
# Loading and validation


class _Checker:
    """Converts one section's raw TOML values, raising ConfigError that names file and key."""

    def __init__(self, path: Path, section: str) -> None:
        self.path = path
        self.section = section

    def fail(self, key: str, message: str, hint: str = "") -> ConfigError:
        return ConfigError(message, path=str(self.path), key=f"{self.section}.{key}", hint=hint)

    def wrong_type(self, key: str, expected: str, value: object) -> ConfigError:
        return self.fail(key, f"expected {expected}, got {_describe(value)}")

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
                f"write it as an argv list: {_toml(shlex.split(value) or ['npm', 'test'])}",
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
                f"expected a list of argv lists, got {_describe(value)}",
                f"write each command as an argv list: {_toml(suggestion)}",
            )
        if not isinstance(value, list):
            raise self.wrong_type(key, "a list of argv lists", value)
        return tuple(self.argv(f"{key}[{i}]", v) for i, v in enumerate(value))

    def env(self, key: str, value: object) -> Mapping[str, str]:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise self.wrong_type(key, 'a table of strings such as {NODE_ENV = "test"}', value)
        return MappingProxyType(dict(value))


def _describe(value: object) -> str:
    kind = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)
    return f"{kind} ({_toml(value)})"


def _setup(c: _Checker, key: str, value: object) -> tuple[Argv, ...]:
    # One argv (["npm", "ci"]) or several ([["npm", "ci"], ["npm", "run", "build"]]).
    if isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        return tuple(c.argv(f"{key}[{i}]", v) for i, v in enumerate(value))
    argv = c.argv(key, value, allow_empty=True)
    return (argv,) if argv else ()


_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _check_placeholders(c: _Checker, key: str, argv: Argv) -> Argv:
    for element in argv:
        for name in _PLACEHOLDER.findall(element):
            if name not in AGENT_PLACEHOLDERS:
                near = difflib.get_close_matches(name, AGENT_PLACEHOLDERS, n=1)
                raise c.fail(
                    key,
                    f"unknown placeholder {{{name}}} in {element!r}",
                    (f"did you mean {{{near[0]}}}? " if near else "")
                    + "known: "
                    + ", ".join(f"{{{p}}}" for p in AGENT_PLACEHOLDERS),
                )
    return argv


def _path(value: str) -> str:
    """A path as batchd compares it with what git lists: ``./plans/X`` is ``plans/X``."""
    return Path(value).as_posix() if value else value


def path_patterns(patterns: Sequence[str]) -> pathspec.GitIgnoreSpec:
    """A matcher for gitignore-style patterns (``tests/**``, ``**/test_*.py``) on repository paths."""
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def _globs(c: _Checker, key: str, value: object) -> tuple[str, ...]:
    """gitignore-style patterns, checked to compile."""
    patterns = c.strings(key, value)
    for pattern in patterns:
        try:
            path_patterns([pattern])
        except (ValueError, TypeError) as e:
            raise c.fail(key, f"{pattern!r} is not a valid pattern: {e}", 'write e.g. "tests/**"') from None
    return patterns


_Converter = Callable[[_Checker, str, object], Any]

_BATCHD_KEYS: dict[str, _Converter] = {
    "todos_dir": lambda c, k, v: _path(c.nonempty(k, v)),
    "plan": lambda c, k, v: _path(c.string(k, v)),
    "status_file": lambda c, k, v: _path(c.nonempty(k, v)),
    "branch": _Checker.nonempty,
    "remote": _Checker.string,
    "max_parallel": lambda c, k, v: c.integer(k, v, 1),
    "max_attempts": lambda c, k, v: c.integer(k, v, 1),
    "schedule": lambda c, k, v: c.choice(k, v, get_args(Schedule)),
    "commit_mode": lambda c, k, v: c.choice(k, v, get_args(CommitMode)),
    "stop_timeout": lambda c, k, v: c.seconds(k, v, allow_zero=True),
    "rescan_interval": lambda c, k, v: c.seconds(k, v, allow_zero=False),
    "ignore": _Checker.strings,
    "db": _Checker.nonempty,
}

_AGENT_KEYS: dict[str, _Converter] = {
    "preset": lambda c, k, v: c.choice(k, v, get_args(Preset)),
    "command": lambda c, k, v: _check_placeholders(c, k, c.argv(k, v, allow_empty=True)),
    "timeout": lambda c, k, v: c.seconds(k, v, allow_zero=False),
    "prompt_file": lambda c, k, v: _path(c.string(k, v)),
    "setup": _setup,
    "env": _Checker.env,
    "sandbox": lambda c, k, v: c.choice(k, v, get_args(SandboxMode)),
    "writable": _Checker.strings,
    "protect": _globs,
    "max_change_bytes": lambda c, k, v: c.integer(k, v, 1),
    "max_log_bytes": lambda c, k, v: c.integer(k, v, 4096),
}

_VERIFY_KEYS: dict[str, _Converter] = {
    "commands": _Checker.argv_list,
    "strategy": lambda c, k, v: c.choice(k, v, get_args(Strategy)),
    "retries": lambda c, k, v: c.integer(k, v, 0),
    "repair": _Checker.boolean,
    "timeout": lambda c, k, v: c.seconds(k, v, allow_zero=False),
    "conflicts": lambda c, k, v: c.choice(k, v, get_args(ConflictMode)),
    "sandbox": lambda c, k, v: c.choice(k, v, get_args(SandboxMode)),
    "writable": _Checker.strings,
    "protect_tests": _globs,
    "test_integrity": lambda c, k, v: c.choice(k, v, get_args(TestIntegrity)),
}

_SECTIONS: dict[str, tuple[type[Any], dict[str, _Converter]]] = {
    "batchd": (BatchdConfig, _BATCHD_KEYS),
    "agent": (AgentConfig, _AGENT_KEYS),
    "verify": (VerifyConfig, _VERIFY_KEYS),
}


def _unknown_key(path: Path, section: str, key: str) -> ConfigError:
    known = list(_SECTIONS[section][1]) if section else list(_SECTIONS)
    near = difflib.get_close_matches(key, known, n=1)
    elsewhere = [s for s, (_, keys) in _SECTIONS.items() if key in keys and s != section]
    if elsewhere:
        hint = f"{key!r} belongs in " + " or ".join(f"[{s}]" for s in elsewhere)
    elif near:
        hint = f"did you mean {near[0]!r}?"
    else:
        hint = "known keys: " + ", ".join(known)
    what = f"unknown key {key!r}" if section else f"unknown section [{key}]"
    return ConfigError(what, path=str(path), key=f"{section}.{key}" if section else key, hint=hint)


def _section(path: Path, name: str, raw: object) -> Any:
    cls, converters = _SECTIONS[name]
    checker = _Checker(path, name)
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table [{name}], got {_describe(raw)}", path=str(path), key=name)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in converters:
            raise _unknown_key(path, name, key)
        values[key] = converters[key](checker, key, value)
    return cls(**values)


_HOW_TO_VERIFY = (
    "run `batchd init` to write a commented batchd.toml, or add\n"
    '    [verify]\n    commands = [["npm", "test"]]\n'
    "  with the command(s) that tell whether the repository is green"
)


def load_config(root: Path, *, path: Path | None = None) -> Config:
    """Read and validate ``batchd.toml`` (``path``, default ``root/batchd.toml``)."""
    path = path or root / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            "no configuration file: batchd needs at least [verify] commands",
            path=str(path),
            hint=_HOW_TO_VERIFY,
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the file: {e}", path=str(path)) from e
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib's message already carries "(at line L, column C)".
        raise ConfigError(f"invalid TOML: {e}", path=str(path), hint="fix the syntax there") from e
    for section in raw:
        if section not in _SECTIONS:
            raise _unknown_key(path, "", section)
    config = Config(
        root=root,
        path=path,
        batchd=_section(path, "batchd", raw.get("batchd", {})),
        agent=_section(path, "agent", raw.get("agent", {})),
        verify=_section(path, "verify", raw.get("verify", {})),
    )
    if not config.verify.commands:
        raise ConfigError(
            "no verify commands: batchd keeps only changes that pass them",
            path=str(path),
            key="verify.commands",
            hint=_HOW_TO_VERIFY,
        )
    if config.agent.prompt_file and not (root / config.agent.prompt_file).is_file():
        raise ConfigError(
            f"prompt file {config.agent.prompt_file!r} does not exist under {root}",
            path=str(path),
            key="agent.prompt_file",
            hint='create it, or set prompt_file = "" for the built-in prompt',
        )
    return config


# --------------------------------------------------------------------------------------------
# Comparing (SIGHUP) and rendering (`batchd init`)


def _flatten(config: Config) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in _SECTIONS:
        section = getattr(config, name)
        for f in fields(section):
            out[f"{name}.{f.name}"] = getattr(section, f.name)
    return out


def diff_config(old: Config, new: Config) -> list[str]:
    """``"section.key: old -> new"`` for every value that differs, in file order."""
    before, after = _flatten(old), _flatten(new)
    return [f"{k}: {_toml(before[k])} -> {_toml(after[k])}" for k in before if before[k] != after[k]]


def _toml(value: object) -> str:
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
        inner = ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items())
        return "{" + inner + "}" if inner else "{}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))


def render_default_config(detected_verify_commands: Sequence[Sequence[str]]) -> str:
    """A fully commented ``batchd.toml`` with every key at its default, for ``batchd init``."""
    b, a, v = BatchdConfig(), AgentConfig(), VerifyConfig()
    commands = [list(c) for c in detected_verify_commands]
    if commands:
        verify_line = f"commands = {_toml(commands)}"
        verify_note = "# Detected from the files in this repository; check it is what CI runs."
    else:
        verify_line = "commands = []"
        verify_note = (
            "# Nothing detected: batchd refuses to start until you list at least one, e.g.\n"
            '# commands = [["npm", "run", "typecheck"], ["npm", "test"]]'
        )
    return f"""\
# batchd.toml: configuration of the batchd daemon for this repository.
# Every key is shown at its default; delete what you do not change. Commands are argv lists
# (["npm", "test"]), never shell strings: batchd runs no shell.

[batchd]
# Folder of todo files named {{id}}-{{status}}-{{priority}}-{{description}}.md.
todos_dir = {_toml(b.todos_dir)}
# Plan of phases and batches: the seed's markdown form (.md) or TOML (.toml).
# "" = plan automatically (priority first, dependencies respected). E.g. "plans/PLAN.md".
plan = {_toml(b.plan)}
# Status report rewritten after every batch (a projection of the event log).
status_file = {_toml(b.status_file)}
# The branch batchd moves forward, only ever to a commit whose verify commands passed.
branch = {_toml(b.branch)}
# Remote pushed after every commit; "" = never push.
remote = {_toml(b.remote)}
# Agents running at once.
max_parallel = {b.max_parallel}
# Attempts per todo (failed, conflicted or rejected; interrupted ones do not count), then blocked.
max_attempts = {b.max_attempts}
# "continuous": a free agent slot takes the next ready todo at once, across batches and phases
# (dependencies and overlapping files respected; phase commits still in plan order);
# "barrier": the seed's way, each batch waits for the one before it.
schedule = {_toml(b.schedule)}
# "phase": one commit per phase (the seed's way); "todo": one commit per accepted todo.
commit_mode = {_toml(b.commit_mode)}
# Seconds to let running agents finish on SIGTERM before their process groups are killed.
stop_timeout = {_toml(b.stop_timeout)}
# Seconds between full scans of todos_dir (file events can be missed).
rescan_interval = {_toml(b.rescan_interval)}
# File names (glob patterns) in todos_dir that are not todos.
ignore = {_toml(b.ignore)}
# Event log: a path (SQLite, relative to the repository) or any SQLAlchemy URL.
db = {_toml(b.db)}

[agent]
# Built-in agent command: "claude", "codex" or "aider". Ignored when command is given.
preset = {_toml(a.preset)}
# Your own agent as an argv list; wins over preset. Placeholders inside any element:
# {{prompt}} {{todo_path}} {{todo_id}} {{worktree}}. Agents also get the environment variables
# BATCHD_TODO_ID, BATCHD_TODO_PATH, BATCHD_ATTEMPT and BATCHD_WORKTREE.
# command = ["my-agent", "--todo", "{{todo_path}}"]
command = {_toml(a.command)}
# Seconds before an agent (and everything it started) is killed.
timeout = {_toml(a.timeout)}
# Prompt template (relative to the repository); "" = the built-in one. Placeholders:
# {{todo_id}} {{todo_path}} {{title}} {{verify_commands}} {{worktree}} {{repair}}.
prompt_file = {_toml(a.prompt_file)}
# Command run in each new worktree before its agent, e.g. ["npm", "ci"]; several as
# [["npm", "ci"], ["npm", "run", "build"]].
setup = {_toml(list(a.setup))}
# Extra environment variables for agents, e.g. {{NODE_ENV = "test"}}.
env = {_toml(a.env)}
# "auto": run each agent under bubblewrap when it works here (only its workspace, a private /tmp
# and the writable paths below can be written; the network stays); "bwrap": require it; "none".
sandbox = {_toml(a.sandbox)}
# Paths an agent may write besides its workspace (its own credentials and caches); missing ones
# are skipped.
writable = {_toml(a.writable)}
# gitignore-style patterns: an attempt that deletes an existing file under them fails.
# E.g. ["tests/**", "migrations/**"].
protect = {_toml(a.protect)}
# An attempt whose change is larger than this (bytes of new and changed files) fails.
max_change_bytes = {a.max_change_bytes}
# An agent's log is cut to its last half when it grows past this many bytes.
max_log_bytes = {a.max_log_bytes}

[verify]
# The checks that decide whether a batch is green, each an argv list, run in order.
{verify_note}
{verify_line}
# Finding the todos that broke a red batch: "bisect" (guided by the failure, then halving)
# or "incremental" (one todo at a time, the seed's way).
strategy = {_toml(v.strategy)}
# Re-runs of a failing check before anyone is blamed (flaky tests).
retries = {v.retries}
# A rejected todo runs again with the failing command and its output in its prompt.
repair = {_toml(v.repair)}
# Seconds before a verify command is killed (counts as a failure).
timeout = {_toml(v.timeout)}
# "merge": git's 3-way merge decides; "strict": any file shared with a lower todo id conflicts.
conflicts = {_toml(v.conflicts)}
# The checks run code the agents wrote: "auto" runs them under bubblewrap like the agents.
sandbox = {_toml(v.sandbox)}
writable = {_toml(v.writable)}
# Test files an agent must not make pass by editing: when an attempt changes or deletes existing
# files under these patterns, its change is also checked with them as they were.
protect_tests = {_toml(v.protect_tests)}
# Passing only with its own test edits: "report" (accepted, listed for review in the status
# file) or "reject" (left out, like a change that breaks the tests).
test_integrity = {_toml(v.test_integrity)}
"""


def _has_make_test(makefile: Path) -> bool:
    try:
        text = makefile.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"^test\s*:(?!=)", text, re.MULTILINE) is not None


def detect_verify_commands(root: Path) -> list[list[str]]:
    """Guess the repository's test commands from the build files present at ``root``."""
    found: list[list[str]] = []
    if (root / "package.json").is_file():
        found.append(["npm", "test"])
    if (root / "pyproject.toml").is_file() or (root / "setup.cfg").is_file():
        found.append(["python", "-m", "pytest"])
    if (root / "Makefile").is_file() and _has_make_test(root / "Makefile"):
        found.append(["make", "test"])
    if (root / "Cargo.toml").is_file():
        found.append(["cargo", "test"])
    if (root / "go.mod").is_file():
        found.append(["go", "test", "./..."])
    return found
