"""Work between hosts travels through the git remote: bases out, changes and agent logs back.

The coordinator pushes the base it wants a worker to start from (``refs/batchd/base/...``); the
worker pushes its collected change and a commit holding the agent's log (``refs/batchd/todo/...``,
``refs/batchd/log/...``, see :mod:`statemachine.dispatch`). These are batchd's own refs, outside
``refs/heads``: a person's pre-push hook (which gates the branch) does not run for them, and no
branch a person uses ever moves.

Nothing fetched is trusted: the caller compares what a ref holds with what the log says was pushed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from daemon.exceptions import BatchdError, GitError, printable
from daemon.world.gitops import GitTarget, out, read_blob_tail, run_git
from daemon.world.remote import PinnedRemote
from statemachine.dispatch import LOG_NAME

NETWORK_TIMEOUT = 300.0  # seconds one push or fetch may take before it counts as failed


class ExchangeError(BatchdError):
    """A ref could not be pushed to or fetched from the remote, or holds something else than the log says."""

    code = "exchange_error"


class RemoteUnreachable(ExchangeError):
    """git could not push to or fetch from the remote at all (this host's trouble, not the work's)."""

    code = "remote_unreachable"


def _remote_git(where: GitTarget, remote: PinnedRemote, *args: str) -> str:
    try:
        with remote.hooks.folder() as hooks:
            proc = run_git(where, *remote.config, *args, env=remote.env, hooks=hooks, timeout=NETWORK_TIMEOUT)
    except GitError as e:
        raise RemoteUnreachable(
            f"git could not reach {printable(remote.url)}: {_why(e.output) or e.message}",
            hint="check that the remote is reachable from this host (`git ls-remote URL`)",
        ) from e
    except OSError as e:  # includes a timeout's kill
        raise RemoteUnreachable(f"git could not run against {printable(remote.url)}: {e}") from e
    return proc.stdout


_WHY = ("remote:", "fatal:", "error:", "!")  # git's lines that say why; the rest is paths and advice
WHY_LIMIT = 1000


def _why(output: str) -> str:
    """What git said of why it failed, in one line: its reason lines in order (a hook's own words
    first, as the remote printed them), never cut off by a long path or list of refs before them."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith(_WHY)] or lines[-3:]
    text = "; ".join(dict.fromkeys(said))
    return text if len(text) <= WHY_LIMIT else text[: WHY_LIMIT - 3] + "..."


def push_refs(where: GitTarget, remote: PinnedRemote, refs: Mapping[str, str]) -> None:
    """Set each of batchd's ``refs`` (ref -> sha) on the remote in one push (forced: an attempt run
    again replaces what an earlier run of it left)."""
    if not refs:
        return
    _ours(list(refs))  # forced: never a branch or a tag, whatever the log says
    specs = [f"+{sha}:{ref}" for ref, sha in refs.items()]
    _remote_git(where, remote, "push", "--quiet", "--no-verify", remote.url, *specs)


def fetch_refs(where: GitTarget, remote: PinnedRemote, refs: Sequence[str]) -> dict[str, str]:
    """Fetch ``refs`` from the remote into the same names here; returns ref -> the sha it holds now.

    Only batchd's own namespace is fetched into (never a branch a person uses)."""
    _ours(refs)
    _remote_git(where, remote, "fetch", "--quiet", "--no-tags", remote.url, *[f"+{r}:{r}" for r in refs])
    return {ref: out(where, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}") for ref in refs}


def _ours(refs: Sequence[str]) -> None:
    for ref in refs:
        if not ref.startswith("refs/batchd/"):
            raise ExchangeError(f"{printable(ref)} is not one of batchd's refs: it is not touched")


def delete_refs(
    where: GitTarget, remote: PinnedRemote, refs: Sequence[str], *, listed: bool = True
) -> list[str]:
    """Delete ``refs`` on the remote in one push; returns those deleted. ``listed``: only those it
    still holds (one listing first; without it, a ref it lacks fails the push, the others deleted).
    Copies fetched here stay (they keep a change's objects alive until it is committed):
    :func:`forget_refs` drops them."""
    _ours(refs)
    present = sorted(set(refs))
    if listed:
        text = _remote_git(where, remote, "ls-remote", "--refs", remote.url, *refs)
        present = sorted({line.split("\t", 1)[1] for line in text.splitlines() if "\t" in line} & set(refs))
    if present:
        _remote_git(where, remote, "push", "--quiet", "--no-verify", remote.url, *[f":{r}" for r in present])
    return present


def forget_refs(where: GitTarget, prefix: str) -> list[str]:
    """Drop this repository's copies of batchd's refs under ``prefix``; returns those dropped."""
    _ours([prefix])
    refs = out(where, "for-each-ref", "--format=%(refname)", prefix).splitlines()
    for ref in refs:
        out(where, "update-ref", "-d", ref)
    return refs


def log_commit(where: GitTarget, log_path: Path, *, limit: int, message: str) -> str:
    """A commit (no parent) whose tree holds the end of ``log_path`` (at most ``limit`` bytes) as
    ``agent.log``: how the log of an agent that ran elsewhere reaches ``batchd logs``."""
    data = b""
    try:
        with log_path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except FileNotFoundError:
        pass
    with tempfile.NamedTemporaryFile(prefix="batchd-log-") as tmp:
        tmp.write(data)
        tmp.flush()
        blob = out(where, "hash-object", "-w", "--", tmp.name)
    tree = out(where, "mktree", stdin=f"100644 blob {blob}\t{LOG_NAME}\n")
    return out(where, "commit-tree", tree, "-m", message)


def read_log(where: GitTarget, commit: str, *, limit: int) -> bytes:
    """The agent log a log commit holds (its last ``limit`` bytes); b"" when it holds none."""
    # Read as it comes: a hostile worker's log of gigabytes never sits whole in memory here.
    return read_blob_tail(where, f"{commit}:{LOG_NAME}", limit)
