"""After the last batch of a phase: one commit, the checkout fast-forwarded to it, the push.

Intent -> effect -> outcome, each step checkable after a crash: the commit is found again by its
``Batchd-Run``/``Batchd-Phase`` trailers before it is made twice, the checkout is compared with the
commit before merging, and the remote branch with ours before pushing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import structlog

from daemon import gitops
from daemon.checks import CheckRunner
from daemon.exceptions import GitError
from daemon.runner import Daemon
from daemon.statusfile import render_status
from daemon.todofile import TodoStatus, rename_status, set_front_matter_status
from statemachine import events as ev
from statemachine.tables import BatchState, RunState, TodoState
from statemachine.views import PhaseView

log = structlog.get_logger(__name__)

VERIFY_BRANCH = "batchd/verify"
TRAILER_RUN = "Batchd-Run"
TRAILER_PHASE = "Batchd-Phase"
PUSH_ATTEMPTS = 3


def verify_worktree(d: Daemon) -> Path:
    return d.ws.worktrees / "verify"


def ensure_verify_worktree(d: Daemon, sha: str) -> Path:
    """batchd's own worktree for verification and phase commits, at ``sha`` and clean."""
    vt = verify_worktree(d)
    if not (vt / ".git").exists():
        with d.git_lock:
            gitops.add_worktree(d.root, vt, VERIFY_BRANCH, sha)
    else:
        gitops.abort_in_progress(vt)
        gitops.reset_hard(vt, sha)
    return vt


def accepted_in(d: Daemon, phase: PhaseView) -> list[str]:
    """The phase's accepted todos in the order their commits sit on the verification branch."""
    out: list[str] = []
    for key in phase.batches:
        batch = d.proj.batches[key]
        out.extend(t for t in batch.accepted if t not in out)
    return out


AUTO_TITLE = "Auto-planned todos"


def message_for(d: Daemon, phase: PhaseView, todo_ids: list[str]) -> str:
    if phase.commit_message:
        subject = phase.commit_message.splitlines()[0]
    elif phase.title == AUTO_TITLE and todo_ids:
        subject = "chore(batchd): resolve todos " + ", ".join(f"#{t}" for t in todo_ids)
    else:
        subject = f"chore(batchd): complete phase {phase.number} - {phase.title.lower()}"
    body = "Resolved todos: " + ", ".join(f"#{t}" for t in todo_ids) if todo_ids else "No todos resolved."
    return f"{subject}\n\n{body}\n"


def start_commit(d: Daemon, phase: PhaseView) -> None:
    todo_ids = accepted_in(d, phase)
    d.emit_one(
        ev.phase_stream(phase.number),
        ev.PhaseCommitting(
            number=phase.number, todo_ids=tuple(todo_ids), message=message_for(d, phase, todo_ids)
        ),
    )
    commit(d, d.proj.phases[phase.number])


def commit(d: Daemon, phase: PhaseView) -> None:
    key = f"commit-{phase.number}"
    if d.has_job(key):
        return
    run_id = d.proj.run.run_id
    trailers = {TRAILER_RUN: run_id, TRAILER_PHASE: str(phase.number)}
    todo_ids = list(phase.todo_ids)
    message = message_for(d, phase, todo_ids)
    head = phase_head(d, phase)
    base = phase.base_sha
    mode = d.config.batchd.commit_mode
    renames = {t: plan_rename(d, t) for t in todo_ids}
    commits_by_todo = {t: d.proj.todos[t].accepted_commit for t in todo_ids}
    titles = {t: d.proj.todos[t].title for t in todo_ids}
    status_rel = d.config.batchd.status_file
    status_text = render_status(d.proj, d.config, committing=phase.number)

    def work() -> list[str]:
        vt = verify_worktree(d)
        found = gitops.find_commits_by_trailer(d.root, "--all", TRAILER_PHASE, str(phase.number))
        mine = [s for s in found if run_id in gitops.run_git(d.root, "log", "-1", "--format=%B", s).stdout]
        if mine:
            chain = gitops.run_git(d.root, "rev-list", "--reverse", f"{base}..{mine[0]}").stdout.split()
            # Per-todo mode makes several commits: a crash part-way leaves only some. Only the
            # whole set counts as the phase's commit; a partial one is made again from the base.
            wanted = max(len(todo_ids), 1) if mode == "todo" else 1
            if len(chain) == wanted:
                log.info("phase_commit_found", phase=phase.number, sha=mine[0])
                return chain
            log.info("phase_commit_partial", phase=phase.number, found=len(chain), wanted=wanted)
        if mode == "todo":
            return commit_per_todo(
                d,
                base=base,
                todo_ids=todo_ids,
                commits=commits_by_todo,
                titles=titles,
                renames=renames,
                trailers=trailers,
                status_rel=status_rel,
                status_text=status_text,
            )
        ensure_verify_worktree(d, head)
        gitops.run_git(vt, "reset", "--quiet", "--soft", base)
        paths = apply_renames(d, vt, renames.values())
        write(vt / status_rel, status_text)
        paths.append(status_rel)
        gitops.run_git(vt, "add", "--all", "--", *paths)
        text = gitops.with_trailers(vt, message, trailers)
        gitops.run_git(vt, "commit", "--quiet", "--no-verify", "--allow-empty", "-F", "-", stdin=text)
        return [gitops.head_sha(vt)]

    def done(commits: list[str]) -> None:
        d.emit_one(
            ev.phase_stream(phase.number),
            ev.PhaseCommitted(number=phase.number, commits=tuple(commits), head_sha=commits[-1]),
        )
        log.info("phase_committed", phase=phase.number, sha=commits[-1], commits=len(commits))

    def failed(error: BaseException) -> None:
        d.fatal = f"phase {phase.number}: the commit could not be made: {error}"

    d.submit(key, work, done, failed)


def phase_head(d: Daemon, phase: PhaseView) -> str:
    """The phase's current head: the last finished batch's verified result, or the phase's base."""
    head = phase.base_sha
    for key in phase.batches:
        batch = d.proj.batches[key]
        if batch.state == BatchState.DONE and batch.head_sha:
            head = batch.head_sha
    return str(head)


def plan_rename(d: Daemon, todo_id: str) -> tuple[str, str]:
    """(current relative path, its ``-complete-`` relative path)."""
    rel = d.proj.todos[todo_id].path
    path = Path(rel)
    return rel, str(path.with_name(rename_status(path.name, TodoStatus.COMPLETE)))


def apply_renames(d: Daemon, vt: Path, renames: Iterable[tuple[str, str]]) -> list[str]:
    """Rename ``-ready-`` files to ``-complete-`` in the worktree (status in front matter too)."""
    paths: list[str] = []
    for src, dst in renames:
        # The person's checkout holds the todo as they last wrote it (maybe never committed).
        source = d.root / src if (d.root / src).exists() else vt / src
        if not source.exists():
            source = d.root / dst
        text = source.read_text(encoding="utf-8") if source.exists() else ""
        if (vt / src).exists() and src != dst:
            # Staged as a deletion here; `git add` of a path no longer on disk would fail.
            gitops.run_git(vt, "rm", "--quiet", "--", src)
        write(vt / dst, set_front_matter_status(text, TodoStatus.COMPLETE))
        paths.append(dst)
    return paths


def commit_per_todo(
    d: Daemon,
    *,
    base: str,
    todo_ids: list[str],
    commits: dict[str, str],
    titles: dict[str, str],
    renames: dict[str, tuple[str, str]],
    trailers: dict[str, str],
    status_rel: str,
    status_text: str,
) -> list[str]:
    vt = ensure_verify_worktree(d, base)
    made: list[str] = []
    for i, todo_id in enumerate(todo_ids):
        gitops.run_git(vt, "cherry-pick", "--no-commit", "--allow-empty", commits[todo_id])
        paths = apply_renames(d, vt, [renames[todo_id]])
        if i == len(todo_ids) - 1:
            write(vt / status_rel, status_text)
            paths.append(status_rel)
        gitops.run_git(vt, "add", "--all", "--", *paths)
        message = f"{titles[todo_id]}\n\nResolves todo #{todo_id}.\n"
        text = gitops.with_trailers(vt, message, {**trailers, gitops.TRAILER_TODO: todo_id})
        gitops.run_git(vt, "commit", "--quiet", "--no-verify", "--allow-empty", "-F", "-", stdin=text)
        made.append(gitops.head_sha(vt))
    if not made:
        write(vt / status_rel, status_text)
        gitops.run_git(vt, "add", "--all", "--", status_rel)
        text = gitops.with_trailers(vt, "chore(batchd): phase status\n", trailers)
        gitops.run_git(vt, "commit", "--quiet", "--no-verify", "--allow-empty", "-F", "-", stdin=text)
        made.append(gitops.head_sha(vt))
    return made


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- the checkout ---------------------------------------------------------------------------------


def land(d: Daemon, phase: PhaseView) -> None:
    """Bring the person's checkout to the phase commit (fast-forward only), mark todos complete."""
    sha = phase.head_sha
    try:
        move_checkout(d, sha)
    except GitError as e:
        reason = (
            f"phase {phase.number}: cannot bring the checkout to {sha[:10]}: {e.message}. "
            "Commit or move aside the file named, then `batchd resume`."
        )
        if d.proj.run.state == RunState.RUNNING:
            d.emit_one(ev.RUN_STREAM, ev.RunPaused(reason=reason, by="daemon"))
        if d.once or d.proj.run.state != RunState.PAUSED:
            d.fatal = reason  # unattended (or nothing to pause): waiting would never end
        return
    completed = []
    for todo_id in phase.todo_ids:
        todo = d.proj.todos[todo_id]
        if todo.state == TodoState.ACCEPTED:
            _, dst = plan_rename(d, todo_id)
            completed.append(
                (
                    ev.todo_stream(todo_id),
                    [ev.TodoCompleted(todo_id=todo_id, path=dst, commit=sha, phase=phase.number)],
                )
            )
    d.emit(*completed)
    d.status_dirty = True
    if d.config.batchd.remote:
        d.emit_one(ev.phase_stream(phase.number), ev.PhasePushing(number=phase.number, attempt=1, sha=sha))
        push(d, d.proj.phases[phase.number])
    else:
        finish(d, phase)


def finish(d: Daemon, phase: PhaseView) -> None:
    """The phase is done: record it, and tidy the worktrees of its completed todos away."""
    d.emit_one(ev.phase_stream(phase.number), ev.PhaseDone(number=phase.number))
    done = [t for t in phase.todo_ids if d.proj.todos[t].state == TodoState.COMPLETE]
    if done:
        d.submit(f"tidy-{phase.number}", lambda: tidy(d, done), lambda _: None, lambda _: None)


def tidy(d: Daemon, todo_ids: list[str]) -> None:
    """Remove the worktrees and ``batchd/todo-<id>-a<n>`` branches of completed todos: their work is in
    the phase commit. Blocked and failed todos keep theirs, for a person to look at. Idempotent."""
    with d.git_lock:
        for todo_id in todo_ids:
            gitops.remove_worktree(d.root, d.ws.worktrees / f"todo-{todo_id}")
            refs = gitops.run_git(
                d.root, "for-each-ref", "--format=%(refname:short)", f"refs/heads/batchd/todo-{todo_id}-a*"
            ).stdout.split()
            if refs:
                gitops.run_git(d.root, "branch", "--quiet", "-D", "--", *refs, check=False)
    log.info("worktrees_removed", todos=todo_ids)


def move_checkout(d: Daemon, sha: str, *, replaces: str = "") -> None:
    """Fast-forward the checkout to ``sha``, setting aside batchd's own edits.

    Only a fast-forward keeps everyone's commits. The one other move allowed is ``reset --keep``
    from ``replaces`` (batchd's own phase commit, which a push rebased onto the remote): any other
    commit on the branch is a person's, and dropping it is refused (GitError) rather than done.
    """
    root = d.root
    head = gitops.head_sha(root)
    if head == sha:
        cleanup_renamed(d, sha)
        return
    forward = gitops.is_ancestor(root, head, sha)
    if not forward and head != replaces:
        raise GitError(
            f"the branch moved under batchd: {head[:10]} is not in the phase commit {sha[:10]}",
            command=["git", "merge", "--ff-only", sha],
            hint="someone committed on the branch while batchd ran; rebase those commits onto "
            f"{sha[:10]} (or reset the branch to it) and `batchd resume`",
        )
    status_rel = d.config.batchd.status_file
    tracked = gitops.run_git(root, "ls-files", "--", status_rel).stdout.strip()
    if tracked:
        gitops.run_git(root, "checkout", "--quiet", "HEAD", "--", status_rel)
    elif (root / status_rel).exists():
        (root / status_rel).unlink()
    if forward:
        gitops.ff_merge(root, sha)
    else:
        gitops.reset_keep(root, sha)
    cleanup_renamed(d, sha)
    write_status(d)


def cleanup_renamed(d: Daemon, sha: str) -> None:
    """An untracked ``-ready-`` file whose ``-complete-`` twin is now committed is batchd's rename."""
    for todo in d.proj.todos.values():
        if todo.state not in (TodoState.ACCEPTED, TodoState.COMPLETE):
            continue
        src = d.root / todo.path
        if "-ready-" not in src.name or not src.exists():
            continue
        dst = src.with_name(rename_status(src.name, TodoStatus.COMPLETE))
        tracked = gitops.run_git(d.root, "ls-files", "--", todo.path).stdout.strip()
        if dst.exists() and not tracked:
            src.unlink()


def write_status(d: Daemon) -> None:
    path = d.config.status_path
    text = render_status(d.proj, d.config)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        write(path, text)
    d.status_dirty = False


# --- push -----------------------------------------------------------------------------------------


def push(d: Daemon, phase: PhaseView) -> None:
    key = f"push-{phase.number}"
    if d.has_job(key):
        return
    branch = d.config.batchd.branch
    sha = phase.head_sha
    runner = CheckRunner(
        d.config.verify.commands, timeout=d.config.verify.timeout, retries=d.config.verify.retries
    )

    def work() -> gitops.PushResult:
        # The tested phase commit (it carries earlier phases' commits), never whatever else the
        # branch may have gained since: nothing untested is pushed.
        vt = ensure_verify_worktree(d, sha)
        remote = remote_url(d.root, d.config.batchd.remote)
        remote_sha = remote_head(d.root, remote, branch)
        if (
            remote_sha
            and gitops.run_git(d.root, "cat-file", "-e", remote_sha, check=False).returncode == 0
            and gitops.is_ancestor(d.root, sha, remote_sha)
        ):
            return gitops.PushResult(
                ok=True, rejected=False, output="already on the remote", attempts=0, sha=remote_sha
            )
        return gitops.push_with_retry(
            vt, remote, branch, reverify=lambda s: runner(vt).passed, attempts=PUSH_ATTEMPTS
        )

    def done(result: gitops.PushResult) -> None:
        if result.ok and result.sha and result.sha != sha:
            # The push went out rebased onto the remote's new commits (tested again): follow it.
            try:
                move_checkout(d, result.sha, replaces=sha)
            except GitError as e:
                log.warning("checkout_behind_rebased_push", sha=result.sha, error=e.message)
        if result.ok:
            d.emit_one(
                ev.phase_stream(phase.number),
                ev.PhasePushed(number=phase.number, sha=result.sha, attempts=max(result.attempts, 1)),
            )
        else:
            d.emit_one(
                ev.phase_stream(phase.number),
                ev.PhasePushFailed(
                    number=phase.number,
                    sha=sha,
                    attempts=result.attempts,
                    reason=result.reason or result.output[-500:],
                ),
            )
        d.status_dirty = True

    def failed(error: BaseException) -> None:
        d.status_dirty = True
        d.emit_one(
            ev.phase_stream(phase.number),
            ev.PhasePushFailed(
                number=phase.number, sha=sha, attempts=0, reason=f"{type(error).__name__}: {error}"
            ),
        )

    d.submit(key, work, done, failed)


def remote_url(root: Path, remote: str) -> str:
    """A remote whose URL is a relative path is resolved against the repository: batchd pushes from
    its own worktree, where the relative path would point elsewhere."""
    proc = gitops.run_git(root, "remote", "get-url", remote, check=False)
    url = proc.stdout.strip()
    if proc.returncode != 0 or not url or "://" in url or ":" in url.split("/")[0]:
        return remote
    path = Path(url)
    return str((root / path).resolve()) if not path.is_absolute() else remote


def remote_head(root: Path, remote: str, branch: str) -> str:
    proc = gitops.run_git(root, "ls-remote", "--heads", remote, f"refs/heads/{branch}", check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return ""
    return proc.stdout.split()[0]
