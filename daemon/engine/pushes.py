"""The push after a phase commit: to the remote pinned at start-up, confirmed by reading it back.

``phase.pushing`` (intent) -> :func:`daemon.world.remote.push_tested` in the pool -> ``phase.pushed`` only
when the remote holds the commit, else ``phase.push_failed`` with the reason and git's whole
message. ``batchd push`` asks for the last phase's push again (after the remote came back, or a
person repaired a rewritten branch).
"""

from __future__ import annotations

import contextlib

import structlog

from daemon.engine import requests
from daemon.engine.batches import check_runner
from daemon.engine.runner import Daemon
from daemon.exceptions import GitError
from daemon.world import remote, testinfra
from statemachine import events as ev
from statemachine.views import PhaseView

log = structlog.get_logger(__name__)

PUSH_ATTEMPTS = 3


def last_pushed(d: Daemon, branch: str) -> str:
    """The newest commit batchd pushed to ``branch`` in this log (a later phase's push carries earlier
    ones)."""
    pushed = requests.pushed_to(d.proj, branch)
    return pushed[-1].pushed_sha if pushed else ""


def agent_commits(d: Daemon) -> frozenset[str]:
    """Every commit an agent made itself: none of them may be on the remote's branch."""
    return frozenset(c for t in d.proj.todos.values() for c in t.agent_commits)


def guarded_inputs(d: Daemon) -> tuple[str, ...]:
    """What decides what batchd checks, as patterns anchored at the repository: its configuration,
    the plan, the prompt file, and the test infrastructure (see :func:`daemon.world.testinfra.patterns`)."""
    found = []
    for path in (d.config.path, d.config.plan_path, d.root / d.config.agent.prompt_file):
        if path is not None and path != d.root:
            with contextlib.suppress(ValueError):
                found.append("/" + path.absolute().relative_to(d.root.absolute()).as_posix())
    return (*found, *testinfra.patterns(d.root, d.config.verify.commands))


def push(d: Daemon, phase: PhaseView) -> None:
    from daemon.engine.phases import ensure_verify_worktree, move_checkout

    key = f"push-{phase.number}"
    if d.has_job(key):
        return
    pinned = d.pinned
    branch = requests.landing_branch(d.config.batchd, d.proj.run.run_id)
    sha = phase.head_sha
    runner = check_runner(d)
    plan = remote.PushPlan(
        last_pushed=last_pushed(d, branch),
        agent_commits=agent_commits(d),
        attempts=PUSH_ATTEMPTS,
        guarded=guarded_inputs(d),
        recreate=d.config.batchd.land == "branch",
    )

    def work() -> remote.PushResult:
        if pinned is None:
            return remote.PushResult(
                ok=False, rejected=False, output="", attempts=0, sha=sha, reason="no remote"
            )
        # The tested phase commit (it carries earlier phases' commits), never whatever else the
        # branch may have gained since: nothing untested is pushed.
        vt = ensure_verify_worktree(d, sha)
        return remote.push_tested(
            d.root, vt, pinned, branch, plan=plan, reverify=lambda s: runner(vt.path).passed
        )

    def done(result: remote.PushResult) -> None:
        if result.ok and result.sha and result.sha != sha:
            # The push went out rebased onto the remote's new commits (tested again): follow it.
            try:
                move_checkout(d, result.sha, replaces=sha)
            except GitError as e:
                log.warning("checkout_behind_rebased_push", sha=result.sha, error=e.message)
        if result.ok:
            d.emit_one(
                ev.phase_stream(phase.number),
                ev.PhasePushed(
                    number=phase.number,
                    sha=result.sha,
                    attempts=max(result.attempts, 1),
                    branch=branch,
                    created=result.created,
                ),
            )
        else:
            d.emit_one(
                ev.phase_stream(phase.number),
                ev.PhasePushFailed(
                    number=phase.number,
                    sha=sha,
                    attempts=result.attempts,
                    reason=result.reason or result.output[-500:],
                    output=result.output,
                ),
            )
            log.warning("push_failed", phase=phase.number, reason=result.reason)
        d.status_dirty = True

    def failed(error: BaseException) -> None:
        d.status_dirty = True
        output = error.output if isinstance(error, GitError) else ""
        d.emit_one(
            ev.phase_stream(phase.number),
            ev.PhasePushFailed(
                number=phase.number,
                sha=sha,
                attempts=0,
                reason=f"{type(error).__name__}: {error}",
                output=output,
            ),
        )

    d.submit(key, work, done, failed)


def retry_target(d: Daemon) -> PhaseView | str:
    """The phase ``batchd push`` pushes again, or why there is none."""
    if d.pinned is None:
        return 'this repository has remote = "": batchd never pushes'
    committed = [p for p in d.proj.phases.values() if p.head_sha]
    if not committed:
        return "no phase has been committed yet"
    latest = max(committed, key=lambda p: p.number)
    if latest.pushed_sha and not latest.push_failed_reason:
        return f"phase {latest.number} is already pushed ({latest.pushed_sha[:10]})"
    if latest.state not in ("done", "push_failed"):
        return f"phase {latest.number} is {latest.state}: its push is still to come"
    return latest
