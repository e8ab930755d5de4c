"""batchd's records are true whatever happens around the run: a stopped daemon, a person editing or
deleting a todo file while its agent works, a person rewriting the remote, a tampered log, a failed
push put right later, a branch a person moved and then rebased. Real daemons, real remotes."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gitrepo import git
from phase_repo import PhaseRepo, build_repo, refuse_pushes
from procs import DaemonProcess, batchd, wait_for

NO_SANDBOX = 'sandbox = "none"'


def hostile_repo(tmp_path: Path, actions: dict[str, list[str]], **config: object) -> PhaseRepo:
    config.setdefault("agent_extra", NO_SANDBOX)
    return build_repo(tmp_path, {}, hostile=actions, **config)


def payloads(repo: PhaseRepo, type_: str) -> list[dict[str, object]]:
    return [dict(e.payload) for e in repo.events(type_)]


def test_an_agent_that_ended_in_time_is_not_timed_out_when_the_daemon_was_stopped(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """The daemon is SIGSTOPped past the agent's deadline while the agent finishes in time: on SIGCONT the
    attempt is recorded as finished, with the agent's own duration, not as a timeout."""
    repo = hostile_repo(tmp_path, {"1": ["sleep 1.5"]}, agent_timeout=4)
    daemon = start_daemon(repo.root, "--once")
    daemon.wait_events("todo.agent_spawned")
    daemon.send(signal.SIGSTOP)
    time.sleep(6)
    daemon.send(signal.SIGCONT)
    assert daemon.wait(60) == 0
    assert not payloads(repo, "todo.agent_failed")
    finished = payloads(repo, "todo.agent_finished")[-1]
    assert 1.4 <= float(finished["duration"]) < 4  # type: ignore[arg-type]


def test_a_todo_deleted_while_its_agent_runs_is_cancelled_and_nothing_of_it_lands(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """A person deletes the todo file while its agent works: the agent is stopped, the todo cancelled by
    the person, and its change never committed."""
    repo = hostile_repo(tmp_path, {"1": ["sleep 30"]})
    daemon = start_daemon(repo.root, "--once")
    spawned = daemon.wait_events("todo.agent_spawned")[0]
    repo.todo("1").unlink()
    assert daemon.wait(60) in (0, 1)
    cancelled = payloads(repo, "todo.cancelled")
    assert cancelled and cancelled[-1]["by"] == "person" and cancelled[-1]["removed"] is True
    assert payloads(repo, "todo.agent_interrupted")
    assert "mods/m1.py" not in repo.git("ls-tree", "-r", "--name-only", "main").split()
    wait_for(lambda: not Path(f"/proc/{spawned.payload['pid']}").exists(), what="the agent to be gone")


def test_a_todo_edited_while_its_agent_runs_is_run_again_with_the_new_text(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """A person edits the todo while its agent works: that run is interrupted (not counted) and the agent
    runs again on the new text, which is what gets committed."""
    repo = hostile_repo(tmp_path, {"1": ["sleep 30"]})
    daemon = start_daemon(repo.root, "--once")
    daemon.wait_events("todo.agent_spawned")
    path = repo.todo("1")
    path.write_text(path.read_text().replace("sleep 30", "sleep 0") + "\nA person's added detail.\n")
    assert daemon.wait(60) == 0
    starts = payloads(repo, "todo.agent_started")
    assert [s["attempt"] for s in starts] == [1, 1]
    assert "A person's added detail." in repo.git("show", "main:todos/1-complete-p2-thing-1.md")


def test_a_todo_renamed_pending_while_its_agent_runs_goes_back_to_pending(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """A person renames the todo -pending- while its agent works: the agent stops, the todo is pending,
    and nothing of it is committed."""
    repo = hostile_repo(tmp_path, {"1": ["sleep 30"]})
    daemon = start_daemon(repo.root, "--once")
    daemon.wait_events("todo.agent_spawned")
    repo.todo("1").rename(repo.root / "todos" / "1-pending-p2-thing-1.md")
    daemon.wait_events("todo.recorded")
    assert daemon.wait(60) in (0, 1)
    assert "mods/m1.py" not in repo.git("ls-tree", "-r", "--name-only", "main").split()
    assert payloads(repo, "todo.agent_interrupted")
    assert not payloads(repo, "todo.completed")


def test_a_todo_deleted_after_its_agent_finished_is_not_committed(
    tmp_path: Path, start_daemon: Callable[..., DaemonProcess]
) -> None:
    """Todo 1's agent is done and waits for todo 2's in the same batch; a person deletes todo 1's file:
    it is cancelled before verification takes its change, and only todo 2's change lands."""
    repo = hostile_repo(tmp_path, {"1": [], "2": ["sleep 4"]}, max_parallel=2)
    daemon = start_daemon(repo.root, "--once")
    daemon.wait_events("todo.agent_finished")
    repo.todo("1").unlink()
    assert daemon.wait(60) in (0, 1)
    assert payloads(repo, "todo.cancelled")[-1]["todo_id"] == "1"
    names = repo.git("ls-tree", "-r", "--name-only", "main").split()
    assert "mods/m2.py" in names and "mods/m1.py" not in names


def test_a_persons_force_push_rewrite_is_never_undone(tmp_path: Path) -> None:
    """After phase 1 was pushed, a person force-pushes a rewrite that drops it: phase 2's push stops with
    that reason, the remote keeps the person's history, and the verdict fails."""
    repo = hostile_repo(
        tmp_path,
        {
            "1": ["write purged.txt a file the person purges later"],
            "2": [
                "clone-remote {outside}/person",
                "in {outside}/person git reset -q --hard HEAD~1",
                "in {outside}/person git commit -q --allow-empty -m rewritten",
                "in {outside}/person git push -q --force origin main",
            ],
        },
        plan={1: ("One", [["1"]], ""), 2: ("Two", [["2"]], "")},
    )
    assert repo.run() == 1
    failed = payloads(repo, "phase.push_failed")[-1]
    assert "no longer contains" in str(failed["reason"]) and "force-push" in str(failed["reason"])
    rewritten = git(tmp_path / "person", "rev-parse", "HEAD")
    assert repo.remote_git("rev-parse", "main") == rewritten
    assert "purged.txt" not in repo.remote_git("ls-tree", "-r", "--name-only", "main").split()
    assert payloads(repo, "run.completed")[-1]["success"] is False


def _tamper(db: Path, sql: str, *args: object) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(sql, args)


def test_an_event_edited_after_the_snapshot_is_refused_at_start_up(tmp_path: Path) -> None:
    """An event after the last snapshot edited in the SQLite file: `batchd run` exits 3 naming its seq."""
    repo = hostile_repo(tmp_path, {"1": []})
    assert repo.run() == 0
    assert batchd(repo.root, "pause", "--reason", "for the weekend").returncode == 0
    seq = repo.events("control.pause")[-1].seq
    db = repo.root / ".batchd" / "events.db"
    _tamper(db, "UPDATE batchd_events SET payload = replace(payload, 'weekend', 'week') WHERE seq = ?", seq)
    done = repo.run_cli()
    assert done.returncode == 3, done.stderr
    assert f"at sequence {seq}" in done.stderr


def test_an_edited_snapshot_is_refused_at_start_up(tmp_path: Path) -> None:
    """The snapshot is what a restart builds on: one whose content no longer matches its hash stops it."""
    repo = hostile_repo(tmp_path, {"1": []})
    assert repo.run() == 0
    db = repo.root / ".batchd" / "events.db"
    _tamper(db, "UPDATE batchd_snapshots SET state = replace(state, '\"complete\"', '\"ready\"')")
    done = repo.run_cli()
    assert done.returncode == 3, done.stderr
    assert "snapshot" in done.stderr and "edited" in done.stderr


def test_an_old_event_edited_is_found_by_the_audit(tmp_path: Path) -> None:
    """An event before the snapshot does not change what a restart builds on, but `batchd audit verify`
    (and --full) names it."""
    repo = hostile_repo(tmp_path, {"1": []})
    assert repo.run() == 0
    seq = repo.events("todo.completed")[-1].seq
    db = repo.root / ".batchd" / "events.db"
    _tamper(
        db,
        "UPDATE batchd_events SET payload = replace(payload, '\"daemon\"', '\"person\"') WHERE seq = ?",
        seq,
    )
    for args in (("audit", "verify"), ("audit", "verify", "--full")):
        found = batchd(repo.root, *args)
        assert found.returncode == 1 and f"sequence {seq}" in found.stderr


def test_batchd_push_retries_a_failed_push_once_the_remote_is_back(tmp_path: Path) -> None:
    """The remote refused all three pushes (verdict fails); once it accepts again, `batchd push` and a new
    `run --once` push the phase and the verdict is decided again: success."""
    repo = hostile_repo(tmp_path, {"1": []})
    refuse_pushes(repo.remote, "maintenance window", times=3)
    assert repo.run() == 1
    assert "maintenance window" in str(payloads(repo, "phase.push_failed")[-1]["output"])
    asked = batchd(repo.root, "push")
    assert asked.returncode == 0, asked.stderr
    assert repo.run() == 0
    assert repo.remote_git("rev-parse", "main") == repo.git("rev-parse", "main")
    assert payloads(repo, "run.completed")[-1]["success"] is True


def test_the_branch_moved_pause_resumes_once_the_person_rebased_onto_the_phase_commit(tmp_path: Path) -> None:
    """A person's commit lands during the run: batchd pauses (exit 3) naming it; after the person rebases
    it onto the phase commit as the message says, `batchd resume` and a new run finish the phase."""
    repo = hostile_repo(tmp_path, {"1": ["person-commit mine.txt"]})
    assert repo.run() == 3
    paused = payloads(repo, "run.paused")[-1]
    assert "a person's commit" in str(paused["reason"])
    phase_sha = str(payloads(repo, "phase.committed")[-1]["head_sha"])
    repo.git("rebase", "-q", phase_sha)
    assert batchd(repo.root, "resume").returncode == 0
    assert repo.run() == 0
    assert repo.remote_git("rev-parse", "main") == phase_sha
    assert (repo.root / "mine.txt").read_text() == "mine\n"
