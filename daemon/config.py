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
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from daemon.config_check import (
    Argv,
    Check,
    Checker,
    describe,
    globs,
    inside_path,
    norm_path,
    path_patterns,
    setup_commands,
    toml_literal,
)
from daemon.exceptions import ConfigError
from daemon.workspace import DEFAULT_DB, repo_id_problem

__all__ = [
    "AGENT_PLACEHOLDERS",
    "AGENT_WRITABLE",
    "CONFIG_FILE",
    "PLACEHOLDER",
    "PRESETS",
    "REQUEST_PLACEHOLDERS",
    "RESUME_PLACEHOLDERS",
    "RESUME_PRESETS",
    "SECTIONS",
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
    "keys",
    "load_config",
    "path_patterns",
]

CONFIG_FILE = "batchd.toml"

CommitMode = Literal["phase", "todo"]
Schedule = Literal["continuous", "barrier"]
Preset = Literal["claude", "codex", "aider"]
Strategy = Literal["bisect", "incremental"]
ConflictMode = Literal["merge", "redo", "strict"]
SandboxMode = Literal["auto", "bwrap", "none"]
TestIntegrity = Literal["report", "reject"]
RedBase = Literal["pause", "continue"]
Land = Literal["push", "branch"]

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

# Placeholders allowed inside [agent] command elements (substituted by daemon.world.agents.build_argv).
AGENT_PLACEHOLDERS = ("prompt", "todo_path", "todo_id", "worktree", "failure_file")
# [agent] resume_command may also name the session it continues.
RESUME_PLACEHOLDERS = (*AGENT_PLACEHOLDERS, "session_id")
# Placeholders allowed inside [batchd] open_request elements (daemon.world.request.build_argv).
REQUEST_PLACEHOLDERS = ("branch", "base", "title", "body_file")

PRESETS: Mapping[str, Argv] = MappingProxyType(
    {
        "claude": ("claude", "-p", "{prompt}", "--dangerously-skip-permissions", "--output-format", "json"),
        # --json: its events as JSON lines, the first naming the session (thread) a repair resumes.
        "codex": ("codex", "exec", "--json", "--full-auto", "{prompt}"),
        "aider": ("aider", "--yes-always", "--message", "{prompt}"),
    }
)
# How a preset continues its own session for a repair ({session_id}: from the agent's JSON result).
# aider keeps no session id, so a repair starts afresh with the failure in its prompt.
RESUME_PRESETS: Mapping[str, Argv] = MappingProxyType(
    {
        "claude": (
            "claude", "-p", "{prompt}", "--resume", "{session_id}",
            "--dangerously-skip-permissions", "--output-format", "json",
        ),
        "codex": ("codex", "exec", "--json", "--full-auto", "resume", "{session_id}", "{prompt}"),
    }
)  # fmt: skip


def _empty_env() -> Mapping[str, str]:
    return MappingProxyType({})


def _key(check: Check, help: str, *, example: str = "", shown: str = "") -> Mapping[str, object]:
    """A key's one declaration besides its field: how its value is checked, what it is for (the
    comment of ``batchd init``'s template and the README's table), an ``example`` line for the
    template, and how the README shows a default too long to print (``shown``)."""
    return MappingProxyType({"check": check, "help": help, "example": example, "shown": shown})


def _choice(kind: Any) -> Check:
    return lambda c, k, v: c.choice(k, v, get_args(kind))


def _path(check: Check) -> Check:
    return lambda c, k, v: norm_path(check(c, k, v))


def _at_least(minimum: int) -> Check:
    return lambda c, k, v: c.integer(k, v, minimum)


def _seconds(*, allow_zero: bool) -> Check:
    return lambda c, k, v: c.seconds(k, v, allow_zero=allow_zero)


def _limit(unit: str) -> Check:
    """A budget: a number >= 0, where 0 means no limit."""
    return lambda c, k, v: c.number(k, v, unit)


# A {name} placeholder in an argv element or a prompt: the one spelling, for config, agents, preflight.
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _repo_id(c: Checker, key: str, value: object) -> str:
    text = c.string(key, value)
    problem = repo_id_problem(text)
    if problem:
        raise c.fail(key, problem, 'e.g. repo_id = "acme/webshop", or "" for the root commit\'s id')
    return text


def _argv_with(known: tuple[str, ...]) -> Check:
    """An argv list (may be empty) whose ``{name}`` placeholders are all in ``known``."""

    def check(c: Checker, key: str, value: object) -> Argv:
        argv = c.argv(key, value, allow_empty=True)
        for element in argv:
            for name in PLACEHOLDER.findall(element):
                if name not in known:
                    near = difflib.get_close_matches(name, known, n=1)
                    raise c.fail(
                        key,
                        f"unknown placeholder {{{name}}} in {element!r}",
                        (f"did you mean {{{near[0]}}}? " if near else "")
                        + "known: "
                        + ", ".join(f"{{{p}}}" for p in known),
                    )
        return argv

    return check


_agent_command = _argv_with(AGENT_PLACEHOLDERS)
_resume_command = _argv_with(RESUME_PLACEHOLDERS)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchdConfig:
    """``[batchd]``: where things are and how the run is paced."""

    todos_dir: str = field(
        default="todos",
        metadata=_key(
            _path(Checker.nonempty), "Folder of todo files named {id}-{status}-{priority}-{description}.md."
        ),
    )
    plan: str = field(
        default="",
        metadata=_key(
            _path(Checker.string),
            "Plan of phases and batches: the seed's markdown form (.md) or TOML (.toml). "
            '"" = plan automatically (priority first, dependencies respected). E.g. "plans/PLAN.md".',
        ),
    )
    status_file: str = field(
        default="plans/EXECUTION-STATUS.md",
        metadata=_key(
            _path(Checker.nonempty),
            "Status report rewritten after every batch (a projection of the event log).",
        ),
    )
    branch: str = field(
        default="main",
        metadata=_key(
            Checker.nonempty,
            "The branch batchd moves forward, only ever to a commit whose verify commands passed.",
        ),
    )
    remote: str = field(
        default="origin", metadata=_key(Checker.string, 'Remote pushed after every commit; "" = never push.')
    )
    max_parallel: int = field(default=5, metadata=_key(_at_least(1), "Agents running at once."))
    local_slots: int = field(
        default=-1,
        metadata=_key(
            _at_least(-1),
            "Agents this host runs itself when workers (`batchd worker`) run others: each live "
            "worker's slots come on top. 0 = every agent runs on a worker; -1 = max_parallel.",
            shown="-1 (max_parallel)",
        ),
    )
    lease_seconds: float = field(
        default=30.0,
        metadata=_key(
            _seconds(allow_zero=False),
            "A worker's claim on an agent lapses after this long without word from it (it renews "
            "every third of it): the agent is queued again and the worker's late result refused.",
        ),
    )
    max_attempts: int = field(
        default=2,
        metadata=_key(
            _at_least(1),
            "Attempts per todo (failed or rejected; conflicts and interrupted ones do not count), "
            "then blocked.",
        ),
    )
    max_conflict_retries: int = field(
        default=3,
        metadata=_key(
            _at_least(0),
            "Times a todo may lose a conflict with another todo and be tried again on the new head "
            "(conflicts are nobody's fault, so they do not count as attempts), then blocked.",
        ),
    )
    max_cost_usd: float = field(
        default=0.0,
        metadata=_key(
            _limit("US dollars"),
            "Agent cost (as the agents report it) for the whole run; when reached, no new agent starts, "
            "running ones finish and the run ends (exit 1). 0 = no limit.",
        ),
    )
    max_agent_minutes: float = field(
        default=0.0,
        metadata=_key(
            _limit("minutes"),
            "Agent time (minutes, all agents added up) for the whole run; when reached, no new agent "
            "starts, running ones finish and the run ends (exit 1). 0 = no limit.",
        ),
    )
    schedule: Schedule = field(
        default="continuous",
        metadata=_key(
            _choice(Schedule),
            '"continuous": a free agent slot takes the next ready todo at once, across batches and phases '
            "(dependencies and overlapping files respected; phase commits still in plan order); "
            '"barrier": the seed\'s way, each batch waits for the one before it.',
        ),
    )
    commit_mode: CommitMode = field(
        default="phase",
        metadata=_key(
            _choice(CommitMode),
            '"phase": one commit per phase (the seed\'s way); "todo": one commit per accepted todo.',
        ),
    )
    stop_timeout: float = field(
        default=60.0,
        metadata=_key(
            _seconds(allow_zero=True),
            "Seconds to let running agents finish on SIGTERM before their process groups are killed.",
        ),
    )
    rescan_interval: float = field(
        default=30.0,
        metadata=_key(
            _seconds(allow_zero=False), "Seconds between full scans of todos_dir (file events can be missed)."
        ),
    )
    ignore: tuple[str, ...] = field(
        default=("README.md", ".gitkeep", "TEMPLATE*.md"),
        metadata=_key(Checker.strings, "File names (glob patterns) in todos_dir that are not todos."),
    )
    land: Land = field(
        default="push",
        metadata=_key(
            _choice(Land),
            '"push": phase commits are pushed to branch on the remote; "branch" (a protected branch): '
            "they are pushed to batchd/run-ID (ID: the run's id) instead and branch is never pushed. "
            "The local branch still moves forward as with push, so later work (a run reopened by new "
            "todos, another `run --once`) starts from branch + what the run branch holds and goes on "
            "that same run branch: the open request grows. A run branch deleted on the remote (its "
            "request merged) is pushed again; `git pull` the merged branch before the next run, so "
            "that its new request shows only what is new.",
        ),
    )
    open_request: Argv = field(
        default=(),
        metadata=_key(
            _argv_with(REQUEST_PLACEHOLDERS),
            'With land = "branch": a command (argv list, no shell) run once after the run branch is '
            "first pushed, to open the pull request; the last URL it prints is recorded and shown. "
            "Placeholders inside any element: {branch} {base} {title} {body_file} (a file listing the "
            "todos done). Its failure is a warning, never a failed run.",
            example='["gh", "pr", "create", "--fill", "--head", "{branch}", "--base", "{base}"]',
        ),
    )
    db: str = field(
        default=DEFAULT_DB,
        metadata=_key(
            Checker.nonempty, "Event log: a path (SQLite, relative to the repository) or any SQLAlchemy URL."
        ),
    )
    repo_id: str = field(
        default="",
        metadata=_key(
            _repo_id,
            "This repository's id in the event log: several repositories may share one PostgreSQL "
            'database, each seeing only its own events. "" = on SQLite the log is the repository\'s '
            "own; on PostgreSQL the first 12 hex digits of the repository's root commit, the same in "
            'every clone on every host. "-" = the unscoped log a PostgreSQL log from before scopes '
            "was migrated to. `events`, `replay` and `audit verify` take --repo-id to read another's.",
        ),
    )

    @property
    def own_slots(self) -> int:
        """Agents the coordinator runs itself (``local_slots``, -1 meaning ``max_parallel``)."""
        return self.max_parallel if self.local_slots < 0 else self.local_slots


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    """``[agent]``: which coding agent runs each todo, and how."""

    preset: Preset = field(
        default="claude",
        metadata=_key(
            _choice(Preset),
            'Built-in agent command: "claude", "codex" or "aider". Ignored when command is given.',
        ),
    )
    command: Argv = field(
        default=(),
        metadata=_key(
            _agent_command,
            "Your own agent as an argv list; wins over preset. Placeholders inside any element: "
            "{prompt} {todo_path} {todo_id} {worktree} {failure_file} (why the last attempt was "
            "rejected; an empty file on a first attempt). Agents also get the environment variables "
            "BATCHD_TODO_ID, BATCHD_TODO_PATH, BATCHD_ATTEMPT, BATCHD_WORKTREE and BATCHD_FAILURE_FILE.",
            example='["my-agent", "--todo", "{todo_path}"]',
        ),
    )
    resume: bool = field(
        default=True,
        metadata=_key(
            Checker.boolean,
            "A repair after a rejection (or a resolve after a conflict) continues the agent's own "
            "session (resume_command) with its change in the workspace, instead of starting afresh.",
        ),
    )
    resume_command: Argv = field(
        default=(),
        metadata=_key(
            _resume_command,
            "The argv that continues a session; [] = the preset's (claude: --resume {session_id}; "
            "codex: exec resume {session_id}). Placeholders: those of command, and {session_id} (from "
            "the agent's JSON result). Without a session id the repair starts afresh.",
            example='["my-agent", "--continue", "{session_id}", "--todo", "{todo_path}"]',
        ),
    )
    max_cost_usd_per_todo: float = field(
        default=0.0,
        metadata=_key(
            _limit("US dollars"),
            "Agent cost one todo may use over all its attempts; when reached it is blocked, not retried. "
            "0 = no limit.",
        ),
    )
    timeout: float = field(
        default=1800.0,
        metadata=_key(
            _seconds(allow_zero=False), "Seconds before an agent (and everything it started) is killed."
        ),
    )
    prompt_file: str = field(
        default="",
        metadata=_key(
            _path(Checker.string),
            'Prompt template (relative to the repository); "" = the built-in one. Placeholders: '
            "{todo_id} {todo_path} {title} {verify_commands} {worktree} {repair}.",
        ),
    )
    setup: tuple[Argv, ...] = field(
        default=(),
        metadata=_key(
            setup_commands,
            'Command run in each new workspace before its agent, e.g. ["npm", "ci"]; several as '
            '[["npm", "ci"], ["npm", "run", "build"]]. The installed node_modules and .venv of your '
            "checkout are linked in (read-only) without it.",
        ),
    )
    env: Mapping[str, str] = field(
        default_factory=_empty_env,
        metadata=_key(Checker.env, 'Extra environment variables for agents, e.g. {NODE_ENV = "test"}.'),
    )
    sandbox: SandboxMode = field(
        default="auto",
        metadata=_key(
            _choice(SandboxMode),
            '"auto": run each agent under bubblewrap when it works here (only its workspace, a private /tmp '
            'and the writable paths below can be written; the network stays); "bwrap": require it; "none".',
        ),
    )
    writable: tuple[str, ...] = field(
        default=AGENT_WRITABLE,
        metadata=_key(
            Checker.strings,
            "Paths an agent may write besides its workspace (its own credentials and caches); "
            "missing ones are skipped.",
        ),
    )
    protect: tuple[str, ...] = field(
        default=(),
        metadata=_key(
            globs,
            "gitignore-style patterns: an attempt that deletes an existing file under them fails. "
            'E.g. ["tests/**", "migrations/**"].',
        ),
    )
    max_change_bytes: int = field(
        default=50 * 1024 * 1024,
        metadata=_key(
            _at_least(1),
            "An attempt whose change is larger than this (bytes of new and changed files) fails.",
        ),
    )
    max_log_bytes: int = field(
        default=20 * 1024 * 1024,
        metadata=_key(
            _at_least(4096), "An agent's log is cut to its last half when it grows past this many bytes."
        ),
    )

    @property
    def argv_template(self) -> Argv:
        """The agent argv with placeholders: ``command`` when given, else the preset's."""
        return self.command or PRESETS[self.preset]

    @property
    def resume_template(self) -> Argv:
        """The argv that continues a session: ``resume_command``, else the preset's when ``command``
        is not set (a custom agent's sessions are its own business); () when there is none."""
        if self.resume_command:
            return self.resume_command
        return () if self.command else RESUME_PRESETS.get(self.preset, ())


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyConfig:
    """``[verify]``: the repository's own checks, and how a red batch is searched."""

    commands: tuple[Argv, ...] = field(
        default=(),
        metadata=_key(
            Checker.argv_list,
            "The checks that decide whether a batch is green, each an argv list, run in order. Required.",
            example='[["npm", "run", "typecheck"], ["npm", "test"]]',
        ),
    )
    strategy: Strategy = field(
        default="bisect",
        metadata=_key(
            _choice(Strategy),
            'Finding the todos that broke a red batch: "bisect" (guided by the failure, then halving) '
            'or "incremental" (one todo at a time, the seed\'s way).',
        ),
    )
    setup: tuple[Argv, ...] = field(
        default=(),
        metadata=_key(
            setup_commands,
            "Commands run before the checks on each tree verified (a fresh checkout that has the "
            'installed node_modules and .venv linked), e.g. [["npm", "run", "build"]]; one that fails '
            "blames a todo only if it still passes on the last green tree.",
        ),
    )
    retries: int = field(
        default=5,
        metadata=_key(
            _at_least(0),
            "At most this many re-runs of a failing check on the same tree before anyone is blamed; how many "
            "it takes is from the check's measured flake rate and false_blame (0: the first red counts).",
        ),
    )
    flake_rate: float = field(
        default=0.05,
        metadata=_key(
            Checker.probability,
            "How often a check fails on a good tree, assumed until batchd has measured it from its own log "
            "(a red run that is green when re-run on the same tree is a flake).",
        ),
    )
    false_blame: float = field(
        default=0.01,
        metadata=_key(
            Checker.probability,
            "The accepted chance that a red check is only a flake: a red run is re-run on the same tree "
            "until the chance that every run was a flake is below this (3 runs at a flake rate of 0.2).",
        ),
    )
    parallel: int = field(
        default=1,
        metadata=_key(
            _at_least(1),
            "Re-runs of a red check that may run at once, each in its own copy of the tree: mind the cores, "
            "and only for suites that can run side by side (no fixed ports, no shared files in /tmp).",
        ),
    )
    red_base: RedBase = field(
        default="pause",
        metadata=_key(
            _choice(RedBase),
            'A base that fails its checks in every run: "pause" (the batch waits for a fix; the seed\'s '
            'way) or "continue" when the output names the failing tests: they are red on the base, '
            "blamed on nobody until a change fixes them (not with a fail-fast runner: -x, --bail, "
            "-failfast stop at the known failure and hide the rest).",
        ),
    )
    junit: str = field(
        default="",
        metadata=_key(
            inside_path,
            'A JUnit XML report a check writes, relative to the tree (e.g. "reports/junit.xml"): batchd '
            "reads the failing tests from it instead of from the output.",
        ),
    )
    repair: bool = field(
        default=True,
        metadata=_key(
            Checker.boolean,
            "A rejected todo runs again with the failing command and its output in its prompt.",
        ),
    )
    timeout: float = field(
        default=1800.0,
        metadata=_key(
            _seconds(allow_zero=False), "Seconds before a verify command is killed (counts as a failure)."
        ),
    )
    conflicts: ConflictMode = field(
        default="merge",
        metadata=_key(
            _choice(ConflictMode),
            '"merge": git\'s 3-way merge decides, and a change that no longer applies is rebased onto the '
            "new head (where both sides only added lines, both are kept), verified, and otherwise "
            'given to its agent to resolve; "redo": a change that no longer applies is done again from '
            'scratch; "strict": any file shared with a lower todo id conflicts (the seed\'s rule).',
        ),
    )
    sandbox: SandboxMode = field(
        default="auto",
        metadata=_key(
            _choice(SandboxMode),
            'The checks run code the agents wrote: "auto" runs them under bubblewrap like the agents.',
        ),
    )
    writable: tuple[str, ...] = field(
        default=(),
        metadata=_key(Checker.strings, "Paths the checks may write besides their workspace (a cache, say)."),
    )
    protect_tests: tuple[str, ...] = field(
        default=TEST_GLOBS,
        metadata=_key(
            globs,
            "Test files an agent must not make pass by editing: when an attempt changes or deletes existing "
            "files under these patterns, its change is also checked with them as they were.",
            shown="the usual test paths of Python, Go, JS/TS",
        ),
    )
    test_integrity: TestIntegrity = field(
        default="report",
        metadata=_key(
            _choice(TestIntegrity),
            'Passing only with its own test edits: "report" (accepted, listed for review in the status file) '
            'or "reject" (left out, like a change that breaks the tests).',
        ),
    )


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


SECTIONS: dict[str, type[Any]] = {"batchd": BatchdConfig, "agent": AgentConfig, "verify": VerifyConfig}


def keys(section: str) -> dict[str, Field[Any]]:
    """The declared keys of ``section``, in file order: each a field whose metadata says how it is
    checked and what it is for (see :func:`_key`)."""
    return {f.name: f for f in fields(SECTIONS[section])}


def _unknown_key(path: Path, section: str, key: str) -> ConfigError:
    known = list(keys(section)) if section else list(SECTIONS)
    near = difflib.get_close_matches(key, known, n=1)
    elsewhere = [s for s in SECTIONS if key in keys(s) and s != section]
    if elsewhere:
        hint = f"{key!r} belongs in " + " or ".join(f"[{s}]" for s in elsewhere)
    elif near:
        hint = f"did you mean {near[0]!r}?"
    else:
        hint = "known keys: " + ", ".join(known)
    what = f"unknown key {key!r}" if section else f"unknown section [{key}]"
    return ConfigError(what, path=str(path), key=f"{section}.{key}" if section else key, hint=hint)


def _section(path: Path, name: str, raw: object) -> Any:
    declared = keys(name)
    checker = Checker(path, name)
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table [{name}], got {describe(raw)}", path=str(path), key=name)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in declared:
            raise _unknown_key(path, name, key)
        values[key] = declared[key].metadata["check"](checker, key, value)
    return SECTIONS[name](**values)


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
        if section not in SECTIONS:
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
    if config.batchd.open_request and config.batchd.land != "branch":
        raise ConfigError(
            'open_request opens a pull request from the run branch, but land = "push" pushes '
            "straight to branch: there is no run branch to open it from",
            path=str(path),
            key="batchd.open_request",
            hint='set land = "branch", or remove open_request',
        )
    if config.batchd.land == "branch" and not config.batchd.remote:
        raise ConfigError(
            'land = "branch" pushes the phase commits to a run branch on the remote, but remote = "" '
            "pushes nothing",
            path=str(path),
            key="batchd.land",
            hint='name the remote (remote = "origin"), or set land = "push" to work offline',
        )
    if config.agent.prompt_file and not (root / config.agent.prompt_file).is_file():
        raise ConfigError(
            f"prompt file {config.agent.prompt_file!r} does not exist under {root}",
            path=str(path),
            key="agent.prompt_file",
            hint='create it, or set prompt_file = "" for the built-in prompt',
        )
    return config


def configured_log(root: Path) -> tuple[str, str]:
    """``[batchd] db`` and ``repo_id`` of ``root/batchd.toml`` (the defaults without the file), for
    commands that read the log: only these keys are checked, so ``status`` or ``events`` still work
    on a repository whose other settings `batchd run` would refuse."""
    path = root / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return DEFAULT_DB, ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the file: {e}", path=str(path)) from e
    try:
        section = tomllib.loads(text).get("batchd", {})
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", path=str(path), hint="fix the syntax there") from e
    if not isinstance(section, dict):
        return DEFAULT_DB, ""
    checker = Checker(path, "batchd")
    db = Checker.nonempty(checker, "db", section["db"]) if "db" in section else DEFAULT_DB
    repo_id = _repo_id(checker, "repo_id", section["repo_id"]) if "repo_id" in section else ""
    return db, repo_id


# --------------------------------------------------------------------------------------------
# Comparing (SIGHUP) and rendering (`batchd init`)


def _flatten(config: Config) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in SECTIONS:
        section = getattr(config, name)
        for f in fields(section):
            out[f"{name}.{f.name}"] = getattr(section, f.name)
    return out


def diff_config(old: Config, new: Config) -> list[str]:
    """``"section.key: old -> new"`` for every value that differs, in file order."""
    before, after = _flatten(old), _flatten(new)
    return [
        f"{k}: {toml_literal(before[k])} -> {toml_literal(after[k])}" for k in before if before[k] != after[k]
    ]


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
    # python3, not python: many systems (Debian, Ubuntu, macOS) have no `python` on PATH.
    if any((root / name).is_file() for name in ("pyproject.toml", "setup.cfg", "pytest.ini")) or (
        (root / "tests").is_dir() and next((root / "tests").rglob("*.py"), None) is not None
    ):
        found.append(["python3", "-m", "pytest"])
    if (root / "Makefile").is_file() and _has_make_test(root / "Makefile"):
        found.append(["make", "test"])
    if (root / "Cargo.toml").is_file():
        found.append(["cargo", "test"])
    if (root / "go.mod").is_file():
        found.append(["go", "test", "./..."])
    return found
