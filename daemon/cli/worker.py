"""``batchd worker``: run agents for a coordinator from a clone of the repository on this host."""

from __future__ import annotations

import socket
from pathlib import Path

import click

from daemon.cli.main import log_level_option, repo_id_option, resolve_root
from daemon.exceptions import LockHeld, UsageError
from statemachine.dispatch import worker_name_problem


@click.command()
@click.option(
    "-C",
    "--repo",
    "repo",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="This worker's own clone of the repository (default: the one containing the current folder).",
)
@click.option(
    "--db",
    default=None,
    metavar="URL",
    help="The coordinator's event log, e.g. postgresql+psycopg://host/batchd (default: [batchd] db "
    "of the clone's batchd.toml).",
)
@repo_id_option
@click.option(
    "--slots",
    type=click.IntRange(min=1),
    default=None,
    help="Agents at once (default: [batchd] max_parallel).",
)
@click.option("--name", default=None, help="This worker's name in the log (default: the host name).")
@log_level_option
def worker(
    repo: Path | None,
    db: str | None,
    repo_id: str | None,
    slots: int | None,
    name: str | None,
    log_level: str,
) -> None:
    """Run agents for the coordinator (`batchd run` on the shared log) in this clone.

    The worker claims queued agents (one of two racing workers wins each), fetches the base the
    coordinator pushed (refs/batchd/base/...), runs the agent with this clone's [agent] settings in
    a workspace of its own, and pushes the change and the agent's log back through the remote
    (refs/batchd/todo/..., refs/batchd/log/...). It renews its lease while the agent runs; a claim
    whose lease expired is given up (the agent killed, its result discarded).

    SIGTERM/SIGINT stop it: its agents are killed and their claims given up, so the coordinator
    queues them again at once.
    """
    from daemon.config import load_config
    from daemon.service.lock import DaemonLock
    from daemon.service.logs import configure_logging
    from daemon.service.loop import version
    from daemon.service.signals import SignalFlags
    from daemon.worker.attempt import Host
    from daemon.worker.loop import Worker
    from daemon.workspace import Workspace, open_log
    from daemon.world.hooks import snapshot as snapshot_hooks
    from daemon.world.remote import pin_remote
    from daemon.world.sandbox import resolve

    configure_logging(level=log_level, json=None)
    root = resolve_root(repo)
    config = load_config(root)
    worker_name = name if name is not None else socket.gethostname().split(".")[0]
    if problem := worker_name_problem(worker_name):
        raise UsageError(f"--name {worker_name!r}: {problem}", hint="pass --name with such a name")
    if not config.batchd.remote:
        raise UsageError(
            "a worker exchanges changes through the git remote, and [batchd] remote is empty",
            hint="set [batchd] remote in the clone's batchd.toml to the remote the coordinator pushes to",
        )
    hooks = snapshot_hooks(root, Workspace(root).tmp)
    pinned = pin_remote(root, config.batchd.remote, hooks)
    assert pinned is not None
    sandbox = resolve(config.agent.sandbox, config.agent.writable, key="[agent] sandbox")
    host = Host(config=config, remote=pinned, sandbox=sandbox, name=worker_name)
    # One worker per clone: a second one would remove the first's workspaces as a dead run's
    # leftovers, and write the same agent logs.
    lock = DaemonLock(Workspace(root).state_dir / "worker.lock")
    try:
        lock.acquire()
    except LockHeld as e:
        who = f"pid {e.pid}" if e.pid else "another process"
        raise UsageError(
            f"another batchd worker ({who}) already runs in this clone ({root})",
            hint="stop it first, or give each worker a clone of its own",
        ) from None
    log = open_log(root, db, must_exist=False, repo_id=repo_id)
    flags = SignalFlags().install()
    try:
        w = Worker(
            host,
            log,
            slots=slots if slots is not None else config.batchd.max_parallel,
            hostname=socket.gethostname(),
            version=version(),
        )
        code = w.run(flags)
    finally:
        flags.restore()
        log.close()
        lock.release()
    raise SystemExit(code)


def register(cli: click.Group) -> None:
    cli.add_command(worker)
