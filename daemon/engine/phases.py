"""After the last batch of a phase: one commit, and the person's checkout fast-forwarded to it.

Intent -> effect -> outcome, each step checkable after a crash: the commit is found again by its
``Batchd-Run``/``Batchd-Phase`` trailers before it is made twice, and the checkout is compared with
the commit before merging. The push is :mod:`daemon.engine.pushes`.

batchd's worktree for verification and commits is used with its git directory named explicitly
(:func:`daemon.world.gitops.open_worktree`), and every file batchd writes (renamed todos, the status
file) is written without following a link (:mod:`daemon.world.safefs`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path

import structlog

from daemon.engine.runner import Daemon
from daemon.engine.state import accepted_in, phase_head
from daemon.engine.statusfile import render_status
from daemon.engine.verdict import amend_verdict, as_view, budget_hit, compute_verdict
from daemon.exceptions import CannotProceed, GitError, Halt, printable
from daemon.intake.plan import AUTO_PHASE_TITLE
from daemon.intake.todofile import (
    MAX_TODO_BYTES,
    TodoStatus,
    id_order,
    rename_status,
    set_front_matter_status,
)
from daemon.world import gitops, safefs
from daemon.world.gitops import WorkTree
from daemon.world.sparetrees import SpareTrees
from statemachine import events as ev
from statemachine.tables import PhaseState, RunState, TodoState
from statemachine.views import PhaseView

log = structlog.get_logger(__name__)

VERIFY_BRANCH = "batchd/verify"
TRAILER_RUN = "Batchd-Run"
TRAILER_PHASE = "Batchd-Phase"
AUTO_TITLE = AUTO_PHASE_TITLE


def verify_worktree(d: Daemon) -> WorkTree:
    """batchd's own worktree (made on first use), its git directory as the repository records it."""
    path = d.ws.verify_worktree
    found = gitops.open_worktree(d.root, path)
    if found is None:
        with d.git_lock:
            gitops.add_worktree(d.root, path, VERIFY_BRANCH, gitops.head_sha(d.root))
        found = gitops.open_worktree(d.root, path)
    if found is None:
        raise GitError(
            f"batchd's worktree {path} is not registered in the repository",
            command=["git", "worktree", "list"],
            hint="run `git worktree prune` and start batchd again",
        )
    return found


def ensure_verify_worktree(d: Daemon, sha: str) -> WorkTree:
    """batchd's own worktree for verification and phase commits, at ``sha`` and clean."""
    vt = verify_worktree(d)
    gitops.drop_stale_index_lock(vt)  # a verification that a kill -9 cut short, mid-git
    gitops.abort_in_progress(vt)
    gitops.reset_hard(vt, sha)
    return vt


def spare_trees(d: Daemon) -> SpareTrees:
    """Copies of the tree under test for re-runs at once (``[verify] parallel``), kept beside batchd's
    verify worktree in its state folder, with the person's installed dependencies placed as the
    verify worktree gets them. The repository is named (never learned from a tree tests ran in).
    One per check runner: the decisions start one verification at a time (they share the one verify
    worktree too); a new object only writes its first spares whole instead of by difference."""
    spares = d.ws.verify_worktree.with_name("verify-spares")
    return SpareTrees(spares, dependencies_from=d.root, repo=d.root)


def message_for(d: Daemon, phase: PhaseView, todo_ids: list[str]) -> str:
    # Listed by id, whatever order they were accepted in (which depends on which agent finished first).
    todo_ids = [d.proj.shown(t) for t in sorted(todo_ids, key=id_order)]  # as the file names write them
    if phase.commit_message:
        subject = phase.commit_message.splitlines()[0]
    elif phase.title == AUTO_TITLE and todo_ids:
        subject = "chore(batchd): resolve todos " + ", ".join(f"#{t}" for t in todo_ids)
    else:
        subject = f"chore(batchd): complete phase {phase.number} - {phase.title.lower()}"
    body = "Resolved todos: " + ", ".join(f"#{t}" for t in todo_ids) if todo_ids else "No todos resolved."
    return f"{subject}\n\n{body}\n"


def start_commit(d: Daemon, phase: PhaseView) -> None:
    todo_ids = accepted_in(d.proj, phase)
    d.emit_one(
        ev.phase_stream(phase.number),
        ev.PhaseCommitting(
            number=phase.number, todo_ids=tuple(todo_ids), message=message_for(d, phase, todo_ids)
        ),
    )
    # The commit itself is the next command (MakeCommit): the policy asks for it in this state.


def commit(d: Daemon, phase: PhaseView) -> None:
    key = f"commit-{phase.number}"
    if d.has_job(key):
        return
    run_id = d.proj.run.run_id
    trailers = {TRAILER_RUN: run_id, TRAILER_PHASE: str(phase.number)}
    todo_ids = list(phase.todo_ids)
    message = message_for(d, phase, todo_ids)
    head = phase_head(d.proj, phase)
    base = phase.base_sha
    mode = d.config.batchd.commit_mode
    renames = {t: plan_rename(d, t) for t in todo_ids}
    commits_by_todo = {t: d.proj.todos[t].accepted_commit for t in todo_ids}
    titles = {t: d.proj.todos[t].title for t in todo_ids}
    notes = {t: d.proj.todos[t].note for t in todo_ids}
    status_rel = d.config.batchd.status_file
    status_text = status_of(d, committing=phase.number)

    def work() -> list[str]:
        # Made before a crash, its outcome not recorded: found again on batchd's own branch only, and
        # only if it is what batchd would make (see found_commit), never a look-alike someone forged.
        found = found_commit(
            d.root,
            run_id=run_id,
            number=phase.number,
            base=base,
            wanted=max(len(todo_ids), 1) if mode == "todo" else 1,
            head=head,
            own={status_rel, *(p for pair in renames.values() for p in pair)},
        )
        if found:
            return found
        if mode == "todo":
            return commit_per_todo(
                d,
                base=base,
                todo_ids=todo_ids,
                commits=commits_by_todo,
                titles=titles,
                renames=renames,
                notes=notes,
                trailers=trailers,
                status_rel=status_rel,
                status_text=status_text,
            )
        vt = ensure_verify_worktree(d, head)
        gitops.run_git(vt, "reset", "--quiet", "--soft", base)
        paths = apply_renames(d, vt, [(*renames[t], notes[t]) for t in todo_ids])
        safefs.write_text(vt.path, status_rel, status_text, replace_link=True)
        paths.append(status_rel)
        gitops.stage(vt, paths)
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
        d.fatal = CannotProceed(
            f"phase {phase.number}: the commit could not be made: {error}",
            cause=Halt.COMMIT_FAILED,
            hint="fix what git said, then start batchd again: the phase is committed from where it was",
        )

    d.submit(key, work, done, failed)


def found_commit(
    root: Path, *, run_id: str, number: int, base: str, wanted: int, head: str, own: set[str]
) -> list[str]:
    """Phase ``number``'s commit(s) if a dead daemon already made them, else [].

    Searched on ``batchd/verify`` only (``--all`` would take any ref, a branch an agent pushed into
    the repository with copied trailers included). A candidate counts only when it is whole: it
    starts on the phase's base, has one commit per todo in ``todo`` mode, and differs from the
    tested head only in batchd's own files (the renamed todos and the status file), so its code is
    exactly the tree that passed.
    """
    branch = f"refs/heads/{VERIFY_BRANCH}"
    if gitops.run_git(root, "rev-parse", "--verify", "--quiet", branch, check=False).returncode != 0:
        return []
    for sha in gitops.find_commits_by_trailer(root, branch, TRAILER_PHASE, str(number)):
        if run_id not in gitops.run_git(root, "log", "-1", "--format=%B", sha).stdout:
            continue
        chain = gitops.run_git(
            root, "rev-list", "--reverse", "--first-parent", f"{base}..{sha}"
        ).stdout.split()
        # Per-todo mode makes several commits: a crash part-way leaves only some. Only the whole
        # set counts as the phase's commit; a partial one is made again from the base.
        if len(chain) != wanted or gitops.rev_parse(root, f"{chain[0]}^") != base:
            log.info("phase_commit_partial", phase=number, found=len(chain), wanted=wanted)
            return []
        differs = gitops.split_z(gitops.run_git(root, "diff", "--name-only", "-z", head, sha, "--").stdout)
        if not set(differs) <= own:
            log.warning("phase_commit_lookalike", phase=number, sha=sha, paths=differs[:5])
            return []
        log.info("phase_commit_found", phase=number, sha=sha)
        return chain
    return []


def plan_rename(d: Daemon, todo_id: str) -> tuple[str, str]:
    """(current relative path, its ``-complete-`` relative path)."""
    rel = d.proj.todos[todo_id].path
    path = Path(rel)
    return rel, str(path.with_name(rename_status(path.name, TodoStatus.COMPLETE)))


def apply_renames(d: Daemon, vt: WorkTree, renames: Iterable[tuple[str, str, str]]) -> list[str]:
    """Rename ``-ready-`` files to ``-complete-`` in the worktree (status in front matter too), with
    the work-log note each todo's agent appended to its copy (``(src, dst, note)``)."""
    paths: list[str] = []
    for src, dst, note in renames:
        # The person's checkout holds the todo as they last wrote it (maybe never committed).
        data = None
        for base, rel in ((d.root, src), (vt.path, src), (d.root, dst)):
            try:
                data = safefs.read_bytes(base, rel, limit=MAX_TODO_BYTES + 1)
            except safefs.LinkRefused:
                data = None
            if data is not None:
                break
        text = completed_text((data or b"").decode("utf-8", "replace"), note)
        if src != dst and gitops.run_git(vt, "ls-files", "-z", "--", src).stdout:
            # Staged as a deletion here; `git add` of a path no longer on disk would fail.
            gitops.run_git(vt, "--literal-pathspecs", "rm", "--quiet", "--", src)
        safefs.write_text(vt.path, dst, text, replace_link=True)
        paths.append(dst)
    return paths


def completed_text(text: str, note: str) -> str:
    """A todo file's text as the phase commit writes it: ``status: complete``, the agent's work log."""
    if note and note not in text:
        text = text.rstrip("\n") + "\n\n" + note.rstrip("\n") + "\n"
    return set_front_matter_status(text, TodoStatus.COMPLETE)


def commit_per_todo(
    d: Daemon,
    *,
    base: str,
    todo_ids: list[str],
    commits: dict[str, str],
    titles: dict[str, str],
    renames: dict[str, tuple[str, str]],
    notes: dict[str, str],
    trailers: dict[str, str],
    status_rel: str,
    status_text: str,
) -> list[str]:
    vt = ensure_verify_worktree(d, base)
    made: list[str] = []
    for i, todo_id in enumerate(todo_ids):
        gitops.run_git(vt, "cherry-pick", "--no-commit", "--allow-empty", commits[todo_id])
        paths = apply_renames(d, vt, [(*renames[todo_id], notes[todo_id])])
        if i == len(todo_ids) - 1:
            safefs.write_text(vt.path, status_rel, status_text, replace_link=True)
            paths.append(status_rel)
        gitops.stage(vt, paths)
        shown = d.proj.shown(todo_id)
        message = f"{titles[todo_id]}\n\nResolves todo #{shown}.\n"
        text = gitops.with_trailers(vt, message, {**trailers, gitops.TRAILER_TODO: shown})
        gitops.run_git(vt, "commit", "--quiet", "--no-verify", "--allow-empty", "-F", "-", stdin=text)
        made.append(gitops.head_sha(vt))
    if not made:
        safefs.write_text(vt.path, status_rel, status_text, replace_link=True)
        gitops.stage(vt, [status_rel])
        text = gitops.with_trailers(vt, "chore(batchd): phase status\n", trailers)
        gitops.run_git(vt, "commit", "--quiet", "--no-verify", "--allow-empty", "-F", "-", stdin=text)
        made.append(gitops.head_sha(vt))
    return made


# --- the checkout ---------------------------------------------------------------------------------


def land(d: Daemon, phase: PhaseView) -> None:
    """Bring the person's checkout to the phase commit (fast-forward only), mark todos complete."""

    sha = phase.head_sha
    try:
        move_checkout(d, sha)
    except GitError as e:
        # The action first: git's whole message follows (the status shows its `error:` line).
        reason = (
            f"phase {phase.number}: cannot bring the checkout to {sha[:10]}; commit or move aside "
            f"what git names, then `batchd resume`: {e.message}"
        )
        if d.proj.run.state == RunState.RUNNING:
            d.emit_one(ev.RUN_STREAM, ev.RunPaused(reason=reason, by="daemon"))
        elif d.proj.run.state == RunState.COMPLETED:
            # The run's last commit (made after the verdict): the run is not done until it lands.
            reopened = ev.RunReopened(reason=f"phase {phase.number} cannot reach the checkout")
            d.emit_one(ev.RUN_STREAM, reopened, ev.RunPaused(reason=reason, by="daemon"))
        set_aside_status(d)  # so that the person's rebase or merge is not blocked by batchd's file
        if d.proj.run.state != RunState.PAUSED:  # nothing to pause: waiting would never end
            d.fatal = CannotProceed(reason, cause=Halt.CHECKOUT_BLOCKED)
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
    if d.pinned is not None:
        # The push is the next command (Push), asked for in this state.
        d.emit_one(ev.phase_stream(phase.number), ev.PhasePushing(number=phase.number, attempt=1, sha=sha))
    else:
        finish(d, phase)


def finish(d: Daemon, phase: PhaseView) -> None:
    """The phase is done: record it, and tidy the workspaces of its completed todos away."""
    d.emit_one(ev.phase_stream(phase.number), ev.PhaseDone(number=phase.number))
    amend_verdict(d)  # after the last phase: its push decides the verdict's push part
    done = [t for t in phase.todo_ids if d.proj.todos[t].state == TodoState.COMPLETE]
    if done:
        d.submit(f"tidy-{phase.number}", lambda: tidy(d, done), lambda _: None, lambda _: None)


def tidy(d: Daemon, todo_ids: list[str]) -> None:
    """Remove the workspaces and ``batchd/todo-<id>-a<n>`` branches of completed todos: their work is
    in the phase commit. Blocked and failed todos keep theirs, for a person to look at. Idempotent."""
    with d.git_lock:
        for todo_id in todo_ids:
            gitops.remove_tree(d.ws.workspace(todo_id))
            refs = gitops.run_git(
                d.root, "for-each-ref", "--format=%(refname:short)", f"refs/heads/batchd/todo-{todo_id}-a*"
            ).stdout.split()
            if refs:
                gitops.run_git(d.root, "branch", "--quiet", "-D", "--", *refs, check=False)
    log.info("workspaces_removed", todos=todo_ids)


def move_checkout(d: Daemon, sha: str, *, replaces: str = "") -> None:
    """Fast-forward the checkout to ``sha``, setting aside batchd's own edits.

    Only a fast-forward keeps everyone's commits. Two other cases are allowed: the checkout already
    contains ``sha`` (a person rebased their commits onto the phase commit, as the pause message
    asks: nothing to move), and ``reset --keep`` from ``replaces`` (batchd's own phase commit, which a
    push rebased onto the remote). Any other commit on the branch is a person's, and dropping it is
    refused (GitError naming it) rather than done.
    """
    root = d.root
    head = gitops.head_sha(root)
    if head == sha or gitops.is_ancestor(root, sha, head):
        cleanup_renamed(d, sha)
        return
    forward = gitops.is_ancestor(root, head, sha)
    if not forward and head != replaces:
        subject = gitops.run_git(root, "log", "-1", "--format=%an: %s", head).stdout.strip()
        raise GitError(
            f"the branch moved under batchd: it is at {head[:10]} ({printable(subject)}), "
            f"which is not in the phase commit {sha[:10]}",
            command=["git", "merge", "--ff-only", sha],
            hint="someone committed on the branch while batchd ran; rebase those commits onto "
            f"{sha[:10]} (`git rebase {sha[:10]}`) or reset the branch to it, then `batchd resume`",
        )
    set_aside_status(d)
    set_aside_carried_todos(d, sha)
    with d.person_hooks() as hooks:  # the person's post-merge/post-checkout, as at start-up
        if forward:
            gitops.ff_merge(root, sha, hooks=hooks)
        else:
            gitops.reset_keep(root, sha, hooks=hooks)
    cleanup_renamed(d, sha)
    d.status_dirty = True  # the loop writes it again (set aside for the merge above)


def set_aside_status(d: Daemon) -> None:
    """Put the checkout's status file back as committed (or remove it when untracked): it is batchd's
    own edit, written again from the log, and it must not block a merge or a person's rebase."""
    root, rel = d.root, d.config.batchd.status_file
    if gitops.run_git(root, "ls-files", "-z", "--", rel).stdout:
        gitops.run_git(root, "--literal-pathspecs", "checkout", "--quiet", "HEAD", "--", rel)
    else:
        with contextlib.suppress(safefs.LinkRefused, IsADirectoryError):
            safefs.unlink(root, rel)


def waiting_for_checkout(d: Daemon) -> bool:
    """Paused because a phase commit cannot reach the checkout (a person's commit or edit is in the
    way): while the person sorts that out, batchd writes nothing into their checkout."""
    committed = any(p.state == PhaseState.COMMITTED for p in d.proj.phases.values())
    return committed and d.proj.run.state == RunState.PAUSED


def set_aside_carried_todos(d: Daemon, sha: str) -> None:
    """A person's uncommitted edit of a todo file that the phase commit already carries (its text is the
    committed ``-complete-`` file's) is set aside for the merge: nothing of it is lost. Any other edit
    is left alone and blocks the merge, which pauses the run naming the file."""
    for todo in d.proj.todos.values():
        if todo.state != TodoState.ACCEPTED or "-ready-" not in Path(todo.path).name:
            continue
        changed = gitops.run_git(d.root, "diff", "--name-only", "-z", "HEAD", "--", todo.path).stdout
        if not changed:
            continue
        _, dst = plan_rename(d, todo.todo_id)
        try:
            current = safefs.read_bytes(d.root, todo.path, limit=MAX_TODO_BYTES + 1)
        except safefs.LinkRefused:
            continue
        committed = gitops.run_git(d.root, "show", f"{sha}:{dst}", check=False)
        if current is None or committed.returncode != 0:
            continue
        if completed_text(current.decode("utf-8", "replace"), todo.note) == committed.stdout:
            gitops.run_git(d.root, "--literal-pathspecs", "checkout", "--quiet", "HEAD", "--", todo.path)
            log.info("carried_todo_edit_set_aside", todo_id=todo.todo_id, path=todo.path)


def cleanup_renamed(d: Daemon, sha: str) -> None:
    """An untracked ``-ready-`` file whose ``-complete-`` twin is now committed is batchd's rename."""
    for todo in d.proj.todos.values():
        if todo.state not in (TodoState.ACCEPTED, TodoState.COMPLETE):
            continue
        src = d.root / todo.path
        if "-ready-" not in src.name or not src.exists():
            continue
        dst = src.with_name(rename_status(src.name, TodoStatus.COMPLETE))
        tracked = gitops.run_git(d.root, "ls-files", "-z", "--", todo.path).stdout
        if dst.exists() and not tracked:
            with contextlib.suppress(safefs.LinkRefused, IsADirectoryError):
                safefs.unlink(d.root, todo.path)


_refused_status_links: set[str] = set()


def status_of(d: Daemon, *, committing: int | None = None) -> str:
    """The status file's text now (``committing``: as the phase commit about to be made shows it,
    with the verdict of its final check when it is the run's last: see scheduler.final_check)."""
    checked = d.final_checked
    pending = None
    if (
        committing is not None
        and checked is not None
        and checked[0] == committing
        and d.proj.run.verdict is None
    ):
        _, passed, detail = checked
        pending = as_view(
            compute_verdict(
                d.proj, checks_green=passed, detail=detail, commit_to_come=True, hit=budget_hit(d)
            )
        )
    return render_status(d.proj, d.config, committing=committing, warnings=d.warnings(), verdict=pending)


def write_status(d: Daemon) -> None:
    """The status file in the person's checkout, rewritten when it changed; never through a link."""
    rel = d.config.batchd.status_file
    d.status_dirty = False
    if waiting_for_checkout(d):
        return
    text = status_of(d)
    try:
        current = safefs.read_bytes(d.root, rel, limit=len(text.encode("utf-8")) + 1)
        if current is None or current.decode("utf-8", "replace") != text:
            safefs.write_text(d.root, rel, text)
    except safefs.LinkRefused as e:
        if rel not in _refused_status_links:  # said once: it would repeat after every batch
            _refused_status_links.add(rel)
            log.warning("status_file_refused", path=rel, error=e.render())
