"""The remote, pinned at start-up: where batchd pushes, with which hooks and helpers, and what it checks.

An agent (or a test it wrote) that changes the repository's git config must not be able to move
batchd's pushes elsewhere or make batchd run a program of its choosing. So :func:`pin_remote` reads,
once at start-up, from the person's config:

- the push URL of ``[batchd] remote`` as git resolves it then (``pushurl`` and ``insteadOf`` rules
  applied); every push goes to that URL, never to the remote's name;
- the person's hooks (:mod:`daemon.world.hooks`: a pre-push hook keeps gating pushes; a hook written
  during the run never runs);
- the SSH command and credential helpers, passed explicitly to every push and fetch.

Before a push the URL rewriting rules (``url.*.insteadOf``) are compared with those of start-up:
when they changed, the push is refused and recorded with what changed. After a push the remote ref
is read back: "pushed" is only ever recorded when the remote holds the commit. batchd never rewrites
the remote's history: when the remote no longer contains what batchd pushed last (a person
force-pushed), nothing is rebased back on top of it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from daemon.config import path_patterns
from daemon.exceptions import GitError, UsageError, printable
from daemon.world.gitops import (
    GitTarget,
    abort_in_progress,
    has_commit,
    head_sha,
    is_ancestor,
    out,
    reset_keep,
    run_git,
    split_z,
)
from daemon.world.hooks import PersonHooks

log = structlog.get_logger(__name__)

OUTPUT_CAP = 20_000  # characters of git's own message kept with a failed push


@dataclass(frozen=True, slots=True, kw_only=True)
class PinnedRemote:
    """``url`` is where pushes go; ``rules`` the URL rewriting rules in force at start-up."""

    name: str
    url: str
    hooks: PersonHooks
    rules: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    config: tuple[str, ...] = ()

    def git(self, where: GitTarget, *args: str, check: bool = True) -> str:
        """A git command that talks to the remote, with the pinned helpers and the pinned hooks."""
        with self.hooks.folder() as hooks:
            proc = run_git(where, *self.config, *args, check=check, env=self.env, hooks=hooks)
        return proc.stdout + proc.stderr


@dataclass(frozen=True, slots=True, kw_only=True)
class PushResult:
    ok: bool
    rejected: bool
    output: str
    attempts: int = 1
    sha: str = ""
    reason: str = ""
    created: bool = False  # the remote had no such branch: this push made it


def pin_remote(root: Path, name: str, hooks: PersonHooks) -> PinnedRemote | None:
    """Resolve the remote ``name`` once (None when ``name`` is empty: batchd never pushes)."""
    if not name:
        return None
    proc = run_git(root, "remote", "get-url", "--push", name, check=False)
    url = proc.stdout.strip()
    if proc.returncode != 0 or not url:
        known = out(root, "remote").split()
        raise UsageError(
            f"[batchd] remote = {name!r}, but this repository has no remote {name!r}"
            + (f" (it has: {', '.join(known)})" if known else " (it has none)"),
            hint=f"`git remote add {name} URL`, or set [batchd] remote to one of them, "
            'or remote = "" to never push',
        )
    url = _absolute(root, url)
    env: dict[str, str] = {}
    # The environment beats the config: an sshCommand written into the config later changes nothing.
    if not os.environ.get("GIT_SSH_COMMAND") and not os.environ.get("GIT_SSH"):
        env["GIT_SSH_COMMAND"] = _config(root, "core.sshCommand") or "ssh"
    helpers = run_git(root, "config", "--get-all", "credential.helper", check=False).stdout.splitlines()
    # An empty helper first empties the list git read from the config files; then the pinned ones.
    config = (
        "-c",
        "credential.helper=",
        *(a for h in helpers if h for a in ("-c", f"credential.helper={h}")),
    )
    pinned = PinnedRemote(name=name, url=url, hooks=hooks, rules=rewrites(root), env=env, config=config)
    log.info("remote_pinned", remote=name, url=printable(url))
    return pinned


def _config(root: Path, key: str) -> str:
    return run_git(root, "config", "--get", key, check=False).stdout.strip()


def _absolute(root: Path, url: str) -> str:
    """A remote given as a relative path is resolved against the repository: batchd pushes from its
    own worktree, where the relative path would point elsewhere."""
    if "://" in url or ":" in url.split("/", maxsplit=1)[0]:
        return url
    path = Path(url)
    return url if path.is_absolute() else str((root / path).resolve())


def rewrites(root: Path) -> tuple[str, ...]:
    """The URL rewriting rules (``url.<base>.insteadOf``/``pushInsteadOf``) git applies to a push now."""
    proc = run_git(root, "config", "--get-regexp", r"^url\.", check=False)
    return tuple(sorted(proc.stdout.splitlines()))


def drift(root: Path, pinned: PinnedRemote) -> str:
    """Why a push to the pinned URL could now go elsewhere ("" when it could not)."""
    now = rewrites(root)
    if now == pinned.rules:
        return ""
    added = sorted(set(now) - set(pinned.rules)) or sorted(set(pinned.rules) - set(now))
    return (
        f"the repository's URL rewriting rules changed during the run ({printable('; '.join(added))}): "
        f"a push to {printable(pinned.url)} could go elsewhere. batchd pushes only where it was started "
        "to push: remove the rule (`git config --get-regexp '^url\\.'`) or restart batchd, then `batchd push`"
    )


def remote_head(where: GitTarget, pinned: PinnedRemote, branch: str) -> str:
    """The remote branch's commit ("" when it does not exist); a GitError when the remote cannot be read."""
    text = pinned.git(where, "ls-remote", "--heads", pinned.url, f"refs/heads/{branch}")
    for line in text.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.strip() == f"refs/heads/{branch}":
            return sha.strip()
    return ""


def fetch(where: GitTarget, pinned: PinnedRemote, branch: str) -> str:
    """Bring the remote branch's commits here; returns its commit ("" when it does not exist)."""
    tip = remote_head(where, pinned, branch)
    if tip and not has_commit(where, tip):
        pinned.git(where, "fetch", "--quiet", "--no-tags", pinned.url, f"refs/heads/{branch}")
    return tip


def push_ref(where: GitTarget, pinned: PinnedRemote, sha: str, branch: str) -> PushResult:
    """``git push URL sha:refs/heads/branch``; ``rejected`` = the remote refused the update."""
    with pinned.hooks.folder() as hooks:
        proc = run_git(
            where,
            *pinned.config,
            "push", "--porcelain", pinned.url, f"{sha}:refs/heads/{branch}",
            check=False,
            env=pinned.env,
            hooks=hooks,
        )  # fmt: skip
    output = printable(proc.stdout + proc.stderr).strip()
    ok = proc.returncode == 0
    rejected = not ok and ("[rejected]" in output or "[remote rejected]" in output)
    return PushResult(ok=ok, rejected=rejected, output=output, sha=sha)


def rebase_onto(worktree: GitTarget, upstream: str) -> str:
    """Rebase HEAD's commits onto ``upstream``, our side winning every conflict; returns the new HEAD.

    During a rebase git's "ours" is the branch being rebased onto (the remote) and "theirs" the
    commits being replayed (ours), so ``-X theirs`` keeps our tested changes. A conflict that no
    strategy option resolves (modify/delete) aborts the rebase and raises GitError.
    """
    proc = run_git(worktree, "rebase", "--quiet", "-X", "theirs", upstream, check=False)
    if proc.returncode != 0:
        abort_in_progress(worktree)
        raise GitError(
            "cannot rebase onto the remote's branch",
            command=["git", "rebase", "-X", "theirs", upstream],
            output=printable(proc.stdout + proc.stderr),
            hint="rebase by hand onto the remote's branch and push",
        )
    return head_sha(worktree)


def _refusal(output: str) -> str:
    """The lines that say why: the ref's status and what the remote's hooks printed."""
    lines = [ln.strip() for ln in output.splitlines()]
    why = [ln.split("\t")[-1] for ln in lines if "rejected]" in ln or ln.startswith("remote:")]
    why = why or [ln for ln in lines if ln and ln != "Done"][-1:]
    return "; ".join(why)


@dataclass(frozen=True, slots=True, kw_only=True)
class PushPlan:
    """What a phase push needs to know of the run: the last sha batchd pushed (the remote must still
    hold it) and every commit an agent made itself (none may be on the remote's branch)."""

    last_pushed: str = ""
    agent_commits: Collection[str] = frozenset()
    attempts: int = 3
    # What decides what batchd checks (batchd.toml, the plan, the prompt, the test infrastructure),
    # as gitignore-style patterns: new commits on the remote that change it are not rebased onto and
    # pushed on (a change of the gate must come in through a person, not through the remote).
    guarded: Collection[str] = ()
    # A run branch (land = "branch") that was deleted on the remote, its request merged, is made
    # again rather than refused as a target branch someone deleted would be.
    recreate: bool = False


def push_tested(
    root: Path,
    worktree: GitTarget,
    pinned: PinnedRemote,
    branch: str,
    *,
    plan: PushPlan,
    reverify: Callable[[str], bool],
) -> PushResult:
    """Push the tested commit at ``worktree``'s HEAD to the remote branch, confirmed by reading it back.

    A refusal is followed by a rebase onto the remote (our side winning) and another try; a rebase
    that brought the remote's new commits makes an untested tree, so ``reverify(sha)`` must pass
    before it is pushed, else the worktree goes back to the tested commit and nothing is pushed.
    ``sha`` of the result is what the remote holds of ours (the rebased commit after a rebase).
    """
    tested = head_sha(worktree)
    moved = drift(root, pinned)
    if moved:
        return PushResult(ok=False, rejected=False, output="", attempts=0, sha=tested, reason=moved)
    last = PushResult(ok=False, rejected=False, output="", attempts=0, sha=tested)
    for attempt in range(1, plan.attempts + 1):
        try:
            tip = fetch(worktree, pinned, branch)
        except GitError as e:
            return _with(last, attempt - 1, f"cannot read the remote: {_refusal(e.output)}", e.output)
        refusal = _history_check(worktree, branch, tip, tested, plan)
        if refusal == "already":
            return PushResult(ok=True, rejected=False, output="already on the remote", attempts=0, sha=tested)
        if refusal:
            return _with(last, attempt - 1, refusal)
        if attempt > 1 and tip:
            # The remote refused the last try: rebase onto what it has now, test again if it is new.
            try:
                rebased = rebase_onto(worktree, tip)
            except GitError as e:
                return _with(last, attempt - 1, f"rebase onto the remote failed: {_refusal(e.output)}")
            if rebased != tested and not reverify(rebased):
                reset_keep(worktree, tested)
                log.warning("push_reverify_failed", remote=pinned.name, branch=branch, sha=rebased)
                return _with(last, attempt - 1, "remote's new commits break the tests with ours")
            tested = rebased
        last = dataclasses.replace(push_ref(worktree, pinned, tested, branch), created=not tip)
        if not last.ok:
            log.warning(
                "push_refused", remote=pinned.name, branch=branch, attempt=attempt, output=last.output
            )
            if last.rejected:
                continue
            return _with(last, attempt, f"push failed: {_refusal(last.output)}")
        unconfirmed = _confirm(worktree, pinned, branch, tested)
        if unconfirmed:
            return _with(last, attempt, unconfirmed)
        log.info("push_ok", remote=pinned.name, branch=branch, sha=tested, attempt=attempt)
        return _with(last, attempt, "")
    return _with(last, plan.attempts, f"remote rejected: {_refusal(last.output)}")


def _history_check(worktree: GitTarget, branch: str, tip: str, tested: str, plan: PushPlan) -> str:
    """Nothing ("") to go on, "already" when the remote holds ``tested``, else why nothing may be pushed."""
    if not tip:
        if plan.last_pushed and not plan.recreate:
            return (
                f"the remote has no branch {branch} any more, though batchd pushed {plan.last_pushed[:10]} "
                "to it: someone deleted it (or the push URL leads elsewhere now). Check the remote, "
                "then `batchd push`"
            )
        return ""
    if is_ancestor(worktree, tested, tip):
        return "already"
    if plan.last_pushed and not is_ancestor(worktree, plan.last_pushed, tip):
        return (
            f"the remote's {branch} no longer contains {plan.last_pushed[:10]}, which batchd pushed "
            f"(it is at {tip[:10]}: someone rewrote its history, e.g. with a force-push). batchd will "
            f"not push its old history back on top. Bring {branch} where you want it (merge or "
            "cherry-pick what should stay), then `batchd push`"
        )
    new = run_git(worktree, "rev-list", tip, f"^{tested}", "--").stdout.split()
    theirs = [sha for sha in new if sha in plan.agent_commits]
    if theirs:
        return (
            f"the remote's {branch} holds {theirs[0][:10]}, a commit an agent made and pushed itself "
            "(never verified by batchd). batchd will not build on it: reset the remote's "
            f"{branch} to {(plan.last_pushed or tested)[:10]} or review that commit, then `batchd push`"
        )
    # What the remote's new commits change, merges included: the difference from where both meet.
    meet = run_git(worktree, "merge-base", tested, tip, check=False).stdout.strip() or tested
    touched = split_z(run_git(worktree, "diff", "--name-only", "-z", "--no-renames", meet, tip, "--").stdout)
    guarded = path_patterns(list(plan.guarded))
    gate = sorted(p for p in touched if guarded.match_file(p))
    if gate:
        return (
            f"new commits on the remote's {branch} change {', '.join(printable(p) for p in gate)}, which "
            "decide what batchd checks: batchd does not take such a change from the remote. Look at it "
            "(`git log -p ..FETCH_HEAD`), pull it yourself if it is right, restart batchd, then `batchd push`"
        )
    return ""


def _confirm(worktree: GitTarget, pinned: PinnedRemote, branch: str, sha: str) -> str:
    """ "" when the remote branch holds ``sha`` after our push, else what it holds instead."""
    try:
        tip = remote_head(worktree, pinned, branch)
    except GitError as e:
        return f"the push seemed to succeed, but the remote could not be read back: {_refusal(e.output)}"
    if tip == sha:
        return ""
    if tip and has_commit(worktree, tip) and is_ancestor(worktree, sha, tip):
        return ""  # someone pushed on top already: ours is in it
    return (
        f"git reported the push as done, but the remote's {branch} is at {tip[:10] or 'nothing'}, "
        f"not {sha[:10]} (a hook or a redirect took it elsewhere); nothing is recorded as pushed"
    )


def _with(result: PushResult, attempts: int, reason: str, output: str = "") -> PushResult:
    return PushResult(
        ok=result.ok and not reason,
        rejected=result.rejected,
        output=(output or result.output)[-OUTPUT_CAP:],
        attempts=attempts,
        sha=result.sha,
        reason=reason,
        created=result.created,
    )
