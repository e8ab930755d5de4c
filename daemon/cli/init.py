"""``batchd init``: a commented ``batchd.toml`` that fits the repository it is written in.

It writes what it finds instead of the defaults: the branch checked out, the remote that exists
(``origin``, else the only one, else ``remote = ""`` with a comment: nothing is pushed), the test
command the build files suggest, and the first agent preset whose CLI is installed; and it says
what it chose and what is still missing, so the first ``batchd run`` passes its checks.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import click

from daemon.cli.main import repo_option, resolve_root
from daemon.config import CONFIG_FILE, PRESETS, detect_verify_commands, load_config
from daemon.config_render import render_default_config
from daemon.exceptions import ConfigError, UsageError
from daemon.service import preflight
from daemon.world.gitops import out, run_git

DEFAULT_BRANCH = "main"


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """What ``init`` found in the repository; ``notes`` are comments written above a key."""

    branch: str
    remote: str
    preset: str
    commands: list[list[str]]
    notes: dict[str, list[str]] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)  # printed after "wrote batchd.toml"


def inspect(root: Path) -> Found:
    notes: dict[str, list[str]] = {}
    said: list[str] = []
    head = run_git(root, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    branch = head.stdout.strip() if head.returncode == 0 else ""
    if branch:
        said.append(f"branch: {branch} (checked out)")
    else:
        branch = DEFAULT_BRANCH
        notes["batchd.branch"] = ["HEAD was detached when batchd init ran: check this is the branch."]
        said.append(f"branch: {branch} (HEAD is detached: check [batchd] branch)")
    remote = _remote(root, notes, said)
    preset = preflight.choose_preset()
    tool, install = preflight.PRESET_TOOLS[preset]
    where = preflight.preset_executable(preset)
    command = shlex.quote(PRESETS[preset][0])
    if where:
        said.append(f"agent: {preset} ({tool} `{command}` on PATH: found at {where})")
    else:
        said.append(
            f"agent: {preset} ({tool} `{command}` on PATH: not found; install it ({install}) "
            "or set [agent] preset/command in batchd.toml)"
        )
    return Found(
        branch=branch,
        remote=remote,
        preset=preset,
        commands=detect_verify_commands(root),
        notes=notes,
        said=said,
    )


def _remote(root: Path, notes: dict[str, list[str]], said: list[str]) -> str:
    remotes = out(root, "remote").split()
    if "origin" in remotes or len(remotes) == 1:
        name = "origin" if "origin" in remotes else remotes[0]
        url = out(root, "remote", "get-url", "--push", name)
        said.append(f"remote: {name} ({url}): each commit is pushed there")
        return name
    if remotes:
        notes["batchd.remote"] = [
            f"Several remotes ({', '.join(remotes)}) and no origin: nothing will be pushed until you",
            "set remote to the one batchd should push to.",
        ]
        said.append(f"remote: none chosen among {', '.join(remotes)}: nothing will be pushed")
    else:
        notes["batchd.remote"] = [
            "This repository has no remote: nothing will be pushed. To push each commit:",
            '`git remote add origin URL`, then remote = "origin".',
        ]
        said.append('remote: none (remote = ""): nothing will be pushed; `git remote add origin URL` to push')
    return ""


def render(found: Found) -> str:
    values = {"batchd.branch": found.branch, "batchd.remote": found.remote, "agent.preset": found.preset}
    return render_default_config(found.commands, values=values, notes=found.notes)


@click.command()
@repo_option
@click.option("--force", is_flag=True, help="Overwrite an existing batchd.toml.")
def init(repo: Path | None, force: bool) -> None:
    """Write a commented batchd.toml for this repository (its branch, its remote, its test command,
    an installed agent), create todos/ and plans/, and exclude .batchd/ from git."""
    from daemon.engine.recovery import ensure_excluded

    root = resolve_root(repo)
    if not (root / ".git").exists():
        raise UsageError(
            f"{root} is not a git repository", hint="run `git init` first, or pass -C with your clone"
        )
    target = root / CONFIG_FILE
    if target.exists() and not force:
        raise UsageError(f"{target} already exists", hint="edit it, or pass --force to overwrite it")
    found = inspect(root)
    target.write_text(render(found), encoding="utf-8")
    for folder in ("todos", "plans"):
        (root / folder).mkdir(exist_ok=True)
    ensure_excluded(root)
    click.echo(f"wrote {target}")
    for line in found.said:
        click.echo(line)
    if found.commands:
        click.echo("verify commands detected: " + "; ".join(shlex.join(c) for c in found.commands))
        _say_missing(root)
    else:
        click.echo("no test command detected: set [verify] commands in batchd.toml before `batchd run`")
    click.echo("next: drop todos/{id}-ready-{p1|p2|p3}-{slug}.md files, then `batchd run`")


def _say_missing(root: Path) -> None:
    """The verify commands ``batchd run`` would refuse (the agent was said above)."""
    try:
        config = load_config(root)
    except ConfigError:  # pragma: no cover - init wrote it with commands: it loads
        return
    for problem in preflight.verify_problems(config):
        click.echo(f"before `batchd run`: {problem.render()} ({problem.hint})")


def register(cli: click.Group) -> None:
    cli.add_command(init)
