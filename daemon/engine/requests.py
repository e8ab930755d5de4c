"""Where the work lands (``[batchd] land``), and the pull request of a run branch.

``land = "push"``: phase commits are pushed to ``[batchd] branch``. ``land = "branch"`` (a protected
branch): they are pushed to ``batchd/run-<run id>`` and ``branch`` is never pushed; the local branch
moves forward as with ``push`` (the person's checkout and later work see what was done), so a run
reopened later starts from ``branch`` + what the run branch holds and pushes on to the same run
branch, and the request open for it grows.

``[batchd] open_request`` opens the request: :func:`decide` (pure) asks for it once the run branch
was first pushed (and again only when a later push had to make the branch anew: its request was
merged and the branch deleted); :func:`open_request` carries it out as intent
(``run.request_opening``) -> the command in the pool -> outcome (``run.request_opened`` with the URL,
or ``run.request_failed``, a warning). An intent without an outcome after a restart is never run
again (it may have opened the request): :func:`reconcile` records it as unknown.
"""

from __future__ import annotations

from collections.abc import Collection

import structlog

from daemon.config import BatchdConfig
from daemon.engine import commands as cmd
from daemon.engine.runner import Daemon
from daemon.engine.state import run_branch
from daemon.intake.todofile import id_order
from daemon.world import request, safefs
from statemachine import events as ev
from statemachine.projection import Projection
from statemachine.views import PhaseView

log = structlog.get_logger(__name__)

JOB = "open-request"


def landing_branch(config: BatchdConfig, run_id: str) -> str:
    """The remote branch phase commits are pushed to."""
    return run_branch(run_id) if config.land == "branch" else config.branch


def pushed_to(proj: Projection, branch: str) -> list[PhaseView]:
    """The phases whose push went to ``branch``, in order (older logs name no branch: the run's)."""
    return sorted(
        (p for p in proj.phases.values() if p.pushed_sha and (p.pushed_branch or proj.run.branch) == branch),
        key=lambda p: p.number,
    )


def decide(
    proj: Projection, config: BatchdConfig, *, busy: Collection[str], accepting: bool
) -> list[cmd.Command]:
    """``OpenRequest`` when the run branch was pushed and has no request yet (pure)."""
    run = proj.run
    if config.land != "branch" or not config.open_request or not accepting or not run.run_id:
        return []
    if JOB in busy or run.request_state == "opening":
        return []
    branch = run_branch(run.run_id)
    pushed = pushed_to(proj, branch)
    if not pushed:
        return []
    asked = run.request_branch == branch and bool(run.request_state)
    # Asked for already: again only when a later push made the branch anew (its request merged).
    if asked and not any(p.push_created and p.number > run.request_phase for p in pushed):
        return []
    return [cmd.OpenRequest(branch=branch, base=config.branch, phase=pushed[-1].number)]


def title_for(proj: Projection, phases: list[PhaseView]) -> str:
    if len(phases) == 1 and phases[0].commit_message:
        return phases[0].commit_message.splitlines()[0]
    return f"batchd run {proj.run.run_id}: phases " + ", ".join(str(p.number) for p in phases)


def body_for(proj: Projection, phases: list[PhaseView], *, branch: str, base: str) -> str:
    """The request's description: the run, and each pushed phase with the todos it completed."""
    lines = [f"batchd run `{proj.run.run_id}`: `{branch}` onto `{base}`.", ""]
    for phase in phases:
        lines.append(f"## Phase {phase.number}: {phase.title or '(untitled)'} (`{phase.pushed_sha[:10]}`)")
        lines.append("")
        ids = sorted(phase.todo_ids, key=id_order)
        for todo_id in ids:
            todo = proj.todos.get(todo_id)
            lines.append(f"- #{proj.shown(todo_id)} {todo.title if todo is not None else ''}".rstrip())
        if not ids:
            lines.append("- (no todos: the phase's status commit)")
        lines.append("")
    return "\n".join(lines)


def open_request(d: Daemon, c: cmd.OpenRequest) -> None:
    """Record the intent, then run the request command in the pool; its outcome is recorded on the
    main thread."""
    proj = d.proj
    phases = [p for p in pushed_to(proj, c.branch) if p.number <= c.phase]
    rel = f"{d.ws.state_dir.name}/requests/{c.branch.replace('/', '-')}.md"
    body = body_for(proj, phases, branch=c.branch, base=c.base)
    values = {
        "branch": c.branch,
        "base": c.base,
        "title": title_for(proj, phases),
        "body_file": str(d.root / rel),
    }
    argv = request.build_argv(d.config.batchd.open_request, values)
    d.emit_one(ev.RUN_STREAM, ev.RequestOpening(branch=c.branch, phase=c.phase, argv=argv))
    root = d.root

    def work() -> request.RequestResult:
        safefs.write_text(root, rel, body)
        return request.run_request(argv, cwd=root)

    def done(result: request.RequestResult) -> None:
        if result.ok:
            d.emit_one(ev.RUN_STREAM, ev.RequestOpened(branch=c.branch, url=result.url, output=result.output))
            log.info("request_opened", branch=c.branch, url=result.url)
        else:
            record_failure(d, c.branch, result.reason, result.output)
        d.status_dirty = True

    def failed(error: BaseException) -> None:
        record_failure(d, c.branch, f"{type(error).__name__}: {error}", "")
        d.status_dirty = True

    d.submit(JOB, work, done, failed)


def record_failure(d: Daemon, branch: str, reason: str, output: str) -> None:
    d.emit_one(ev.RUN_STREAM, ev.RequestFailed(branch=branch, reason=reason, output=output))
    log.warning("request_failed", branch=branch, reason=reason)


def reconcile(d: Daemon) -> None:
    """At start-up: a request command that was started by a daemon that died is not run again (it may
    have opened the request); it is recorded as unknown, for a person to look at."""
    run = d.proj.run
    if run.request_state == "opening":
        record_failure(
            d,
            run.request_branch,
            "batchd stopped while the request command ran: it may have opened the request. "
            f"Look for a request from {run.request_branch} on the remote; batchd does not run it again",
            "",
        )
