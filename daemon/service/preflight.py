"""Checks before anything is spent: what ``batchd run`` needs must be there before the first agent.

Without them a missing agent CLI fails every attempt of every todo ("No such file"), a missing verify
command rejects every change, and a wrong branch or remote is found only at the first push. So at
start-up (the CLI and systemd both go through :func:`daemon.service.loop.serve`) and on SIGHUP:

- the agent: ``[agent] command`` (or the preset's CLI) and each ``[agent] setup`` command;
- each ``[verify] commands`` executable;
- ``[batchd] branch`` exists and is checked out;
- ``[batchd] remote`` is a configured remote that answers ``git ls-remote`` within a few seconds.

An executable is looked for as the agent and the checks will look for it: a bare name on PATH (the
agent's PATH includes ``[agent] env``), an absolute path as it is, and a relative path in the
checkout of the branch each workspace is made from, so a script must be committed there, with its
executable bit. Every problem is collected and raised at once (:class:`PreflightFailed`, exit 2),
except, under systemd, a remote that does not answer: that may be the network at boot, and the
units never restart after exit 2, so it is a warning there (see :func:`check`).
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.config import PLACEHOLDER, PRESETS, Config
from daemon.engine.recovery import check_checkout
from daemon.exceptions import PreflightFailed, UsageError, printable
from daemon.workspace import unscoped_left_behind
from daemon.world import deps
from daemon.world.gitops import GIT_MIN_VERSION, git_version, out, run_git

__all__ = [
    "PRESET_TOOLS",
    "REMOTE_TIMEOUT",
    "Problem",
    "check",
    "choose_preset",
    "find_problems",
    "reload_problems",
    "supervised",
]

log = structlog.get_logger(__name__)

REMOTE_TIMEOUT = 10.0  # seconds `git ls-remote` may take; a remote that needs longer is unreachable

# What each preset runs, and how a person gets it (the presets' argv are in daemon.config.PRESETS).
PRESET_TOOLS: Mapping[str, tuple[str, str]] = {
    "claude": ("Claude Code CLI", "`npm install -g @anthropic-ai/claude-code`"),
    "codex": ("OpenAI Codex CLI", "`npm install -g @openai/codex`"),
    "aider": ("aider", "`python3 -m pip install aider-install && aider-install`"),
}
_NO_PUSH = 'remote = "" to work without pushing'


@dataclass(frozen=True, slots=True)
class Problem:
    """One reason not to start: the key at fault, what is wrong, how to fix it."""

    key: str
    message: str
    hint: str
    transient: bool = False  # may clear by itself (a remote that does not answer now)

    def render(self) -> str:
        section, _, name = self.key.partition(".")
        return f"[{section}] {name}: {self.message}"


def supervised() -> bool:
    """Started by systemd (the units are ``Type=notify``): a refusal there (exit 2) is not restarted."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def check(config: Config, *, service: bool = False, remote_timeout: float = REMOTE_TIMEOUT) -> None:
    """Raise :class:`PreflightFailed` listing every problem; say so when nothing will be pushed.

    ``service`` (under systemd): a remote that does not answer is a warning, not a refusal. The
    units do not restart after exit 2 (a configuration error), and a network that is down at boot
    must not keep the service down; the daemon starts and its pushes fail until the remote answers.
    """
    problems = find_problems(config, remote_timeout=remote_timeout)
    for problem in [p for p in problems if p.transient and service]:
        log.warning("remote_unreachable", error=problem.render(), hint=problem.hint, started="anyway")
        problems.remove(problem)
    if problems:
        raise PreflightFailed(path=str(config.path), problems=[(p.key, p.message, p.hint) for p in problems])
    if not config.batchd.remote:
        log.warning(
            "push_disabled",
            reason='[batchd] remote = ""',
            detail="commits stay in this repository: nothing will be pushed",
            hint="set [batchd] remote to a configured remote to push each commit",
        )


def find_problems(config: Config, *, remote_timeout: float = REMOTE_TIMEOUT) -> list[Problem]:
    root, branch = config.root, config.batchd.branch
    return [
        *git_problems(),
        *branch_problems(root, branch, checkout=True),
        *remote_problems(root, config.batchd.remote, branch, timeout=remote_timeout),
        *agent_problems(config),
        *verify_problems(config),
        *request_problems(config),
        *scope_problems(config),
    ]


def scope_problems(config: Config) -> list[Problem]:
    found = unscoped_left_behind(config)
    return [Problem("batchd.repo_id", *found)] if found is not None else []


def reload_problems(config: Config) -> list[Problem]:
    """What a reloaded config (SIGHUP) must pass: its commands and branch. The remote is pinned at
    start-up and not changed by a reload, so it is neither looked up nor asked again (no network
    round trip in the loop)."""
    return [
        *branch_problems(config.root, config.batchd.branch, checkout=False),
        *agent_problems(config),
        *verify_problems(config),
    ]


# --------------------------------------------------------------------------------------------
# The branch and the remote


def git_problems(git: str = "git") -> list[Problem]:
    """A git older than batchd needs: refused at start, not found out at the first conflict."""
    try:
        proc = subprocess.run([git, "--version"], capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [Problem("batchd.git", f"cannot run `{git} --version`: {e}", "install git")]
    found = git_version(proc.stdout)
    if found is None or found >= GIT_MIN_VERSION:
        return []  # a version batchd cannot read is given the benefit of the doubt
    need = ".".join(map(str, GIT_MIN_VERSION))
    return [
        Problem(
            "batchd.git",
            f"git {'.'.join(map(str, found))} is older than {need}, which batchd needs "
            "(`git merge-tree --write-tree` carries a change onto a newer head)",
            f"install git {need} or newer (Debian 12 has 2.39; `git --version` shows what is on PATH)",
        )
    ]


def _has_commit(root: Path, branch: str) -> bool:
    ref = f"refs/heads/{branch}^{{commit}}"
    return run_git(root, "rev-parse", "--verify", "--quiet", ref, check=False).returncode == 0


def branch_problems(root: Path, branch: str, *, checkout: bool) -> list[Problem]:
    if checkout:
        try:
            check_checkout(root, branch)
        except UsageError as e:
            return [Problem("batchd.branch", e.message, e.hint)]
    if _has_commit(root, branch):
        return []
    if checkout:  # checked out but unborn: `git init` without a first commit
        return [
            Problem(
                "batchd.branch",
                f"branch {branch!r} has no commit yet",
                "commit something first (`git commit`): batchd builds on the branch's last commit",
            )
        ]
    return [Problem("batchd.branch", f"{root} has no branch {branch!r}", "set [batchd] branch to a branch")]


def remote_problems(root: Path, name: str, branch: str, *, timeout: float) -> list[Problem]:
    if not name:
        return []
    proc = run_git(root, "remote", "get-url", "--push", name, check=False)
    url = proc.stdout.strip()
    if proc.returncode != 0 or not url:
        known = out(root, "remote").split()
        has = f"it has: {', '.join(known)}" if known else "it has none"
        return [
            Problem(
                "batchd.remote",
                f"this repository has no remote {name!r} ({has})",
                f"`git remote add {name} URL`, or set [batchd] remote to one of them, or {_NO_PUSH}",
            )
        ]
    failure = ls_remote(root, url, branch, timeout=timeout)
    if failure is None:
        return []
    return [
        Problem(
            "batchd.remote",
            f"remote {name!r} ({printable(url)}) cannot be reached: {failure}",
            f"`git ls-remote {name}` must work without asking for a password: check the URL "
            f"(`git remote -v`), the network and your credentials; or {_NO_PUSH}",
            transient=True,
        )
    ]


def ls_remote(root: Path, url: str, branch: str, *, timeout: float) -> str | None:
    """Why ``url`` does not answer (None when it does). Nothing may prompt: no terminal prompt, and
    its own session (so no controlling terminal for ssh); at the timeout the whole group is killed
    (ssh included, which would otherwise keep the pipes open)."""
    argv = ["git", "ls-remote", "--heads", "--", url, f"refs/heads/{branch}"]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0"}
    with subprocess.Popen(
        argv,
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as proc:
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return f"no answer within {timeout:g} s"
    if proc.returncode == 0:
        return None
    lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    said = "; ".join(lines[:2])
    return printable(said[:300]) if said else f"git ls-remote exited {proc.returncode}"


# --------------------------------------------------------------------------------------------
# Executables: the agent, its set-up commands, the checks


def agent_problems(config: Config) -> list[Problem]:
    agent = config.agent
    env = {**os.environ, **agent.env}  # the agent's own PATH (daemon.world.agents.agent_env)
    found: list[Problem] = []
    argv0 = agent.argv_template[0]
    wrong = _unresolved(argv0, root=config.root, branch=config.batchd.branch, env=env)
    if wrong and not agent.command:
        tool, install = PRESET_TOOLS[agent.preset]
        found.append(
            Problem(
                "agent.preset",
                f'"{agent.preset}" runs the {tool}, but {wrong}',
                f"install it ({install}), or set [agent] preset to an agent that is installed "
                "(claude, codex, aider), or [agent] command to your own",
            )
        )
    elif wrong:
        found.append(
            Problem(
                "agent.command",
                wrong,
                "install it or fix the path (a relative path is taken from the repository's top "
                "folder: each agent runs in a fresh checkout of the branch)",
            )
        )
    resume = agent.resume_template if agent.resume else ()
    if resume and resume[0] != argv0:  # the preset's is the same CLI: said above
        wrong = _unresolved(resume[0], root=config.root, branch=config.batchd.branch, env=env)
        if wrong:
            found.append(
                Problem(
                    "agent.resume_command",
                    _naming(resume, wrong),
                    "install it or fix the path, or set [agent] resume = false (repairs then start afresh)",
                )
            )
    for argv in _distinct(agent.setup):
        if "/" in argv[0]:
            continue  # a relative path may be made by the set-up command before it (npm ci)
        wrong = _unresolved(argv[0], root=config.root, branch=config.batchd.branch, env=env)
        if wrong:
            found.append(Problem("agent.setup", _naming(argv, wrong), "install it, or change it"))
    return found


def verify_problems(config: Config) -> list[Problem]:
    # The checks get batchd's own environment (daemon.world.checks), in a checkout of the branch.
    found: list[Problem] = []
    for argv in _distinct(config.verify.commands):
        wrong = _unresolved(argv[0], root=config.root, branch=config.batchd.branch, env=os.environ)
        if wrong:
            found.append(
                Problem(
                    "verify.commands",
                    _naming(argv, wrong),
                    "install it, or change [verify] commands to the command your CI runs",
                )
            )
    for argv in _distinct(config.verify.setup):
        if "/" in argv[0]:
            continue  # as for [agent] setup: an earlier set-up command may make it
        wrong = _unresolved(argv[0], root=config.root, branch=config.batchd.branch, env=os.environ)
        if wrong:
            found.append(Problem("verify.setup", _naming(argv, wrong), "install it, or change it"))
    return found


def request_problems(config: Config) -> list[Problem]:
    """`[batchd] open_request`'s program (gh): missing, the pull request would fail after the push."""
    argv = config.batchd.open_request
    if not argv:
        return []
    wrong = _unresolved(argv[0], root=config.root, branch=config.batchd.branch, env=os.environ)
    if not wrong:
        return []
    return [
        Problem(
            "batchd.open_request",
            _naming(argv, wrong),
            "install it (GitHub's `gh`: https://cli.github.com, then `gh auth login`), or remove "
            "open_request and open the pull request by hand",
        )
    ]


def _naming(argv: Sequence[str], wrong: str) -> str:
    return f"`{shlex.join(argv)}`: {wrong}" if len(argv) > 1 else wrong


def _distinct(commands: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """One command per executable: three `npm` commands make one problem, not three."""
    seen: dict[str, Sequence[str]] = {}
    for argv in commands:
        seen.setdefault(argv[0], argv)
    return list(seen.values())


def _unresolved(argv0: str, *, root: Path, branch: str, env: Mapping[str, str]) -> str:
    """Why ``argv0`` will not start ("" when it will). A relative path may also be in one of the
    checkout's dependency folders (``node_modules/.bin/jest``, ``.venv/bin/aider``), as every
    workspace gets those (:mod:`daemon.world.deps`)."""
    if argv0.startswith("{worktree}/"):  # the workspace is a checkout of the branch: same path
        argv0 = argv0.removeprefix("{worktree}/")
    if PLACEHOLDER.search(argv0):
        return ""  # known only per todo
    if "/" not in argv0:
        path = env.get("PATH", os.defpath)
        if shutil.which(argv0, path=path):
            return ""
        return f"`{argv0}` is not on PATH ({path})"
    if Path(argv0).is_absolute():
        if _runnable(Path(argv0)):
            return ""
        return f"{argv0} is not executable" if Path(argv0).is_file() else f"{argv0} does not exist"
    return _unresolved_in_branch(argv0, root=root, branch=branch)


def _unresolved_in_branch(argv0: str, *, root: Path, branch: str) -> str:
    """A relative path runs from a fresh checkout of ``branch`` (the agent's workspace, the checks'
    worktree): it must be committed there, executable; an uncommitted file of the person's
    checkout is not in those (the mistake that failed every attempt)."""
    rel = os.path.normpath(argv0)
    if rel == ".." or rel.startswith("../"):
        return f"{argv0} points outside the repository (give an absolute path)"
    if not _has_commit(root, branch):  # said as a branch problem; look in the checkout
        return "" if _runnable(root / rel) else f"{argv0} does not exist in {root}"
    entry = run_git(root, "ls-tree", "-z", f"refs/heads/{branch}", "--", rel, check=False).stdout
    mode = entry.split(" ", 1)[0] if entry else ""
    if mode == "100755":
        return ""
    if mode == "120000":  # a committed symlink: what it points to, as the checkout has it
        return "" if _runnable(root / rel) else f"{argv0} is a symlink to nothing executable"
    if mode == "100644":
        return (
            f"{argv0} is committed without its executable bit "
            f"(`git update-index --chmod=+x {rel}`, then commit)"
        )
    if mode:
        return f"{argv0} is a folder"
    there = root / rel
    if _runnable(there) and _in_dependencies(root, rel):
        return ""
    if there.exists():
        return (
            f"{argv0} is in your checkout but not committed on {branch!r} "
            "(commit it, or use its absolute path)"
        )
    return f"{argv0} does not exist (looked in the repository's top folder, {root})"


def _runnable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _in_dependencies(root: Path, rel: str) -> bool:
    return Path(rel).parts[0] in deps.sources(root)


# --------------------------------------------------------------------------------------------
# `batchd init`: which preset to write


def preset_executable(preset: str, env: Mapping[str, str] | None = None) -> str | None:
    """Where the preset's CLI is on PATH (None when it is not installed)."""
    path = (os.environ if env is None else env).get("PATH", os.defpath)
    return shutil.which(PRESETS[preset][0], path=path)


def choose_preset(env: Mapping[str, str] | None = None) -> str:
    """The first preset whose CLI is installed, in the order of ``PRESETS`` (claude when none is)."""
    return next((p for p in PRESETS if preset_executable(p, env)), next(iter(PRESETS)))
