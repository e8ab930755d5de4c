"""What the next attempt starts from after a conflict or a rejection, on whole ``batchd run --once``
runs: a real repository with a bare remote, and an agent script written here that records what its
workspace held (and its prompt) before it acts.

- ``conflicts = "merge"``: the loser's next attempt holds its own change rebased onto the new head,
  with git's conflict markers; it does not spend an attempt, and ``max_conflict_retries`` bounds it;
- ``"redo"``: the next attempt starts clean on the new head, as before;
- a rejected todo's repair holds its own change with ``[agent] resume`` on, nothing with it off;
- an attempt that leaves the markers in fails (``conflict_markers``) and is not verified.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gitrepo import GOOD_MOD, NAMED_BREAK
from phase_repo import PhaseRepo, build_repo
from procs import projection

from daemon.engine import carrying
from daemon.world.conflictmarks import has_conflict_block

SHARED = "mods/shared.py"
BASE_SHARED = GOOD_MOD + "\nVALUE = 0\n"
MARKER_LINES = ("<<<<<<< ", "=======", ">>>>>>> ")

# Each todo's steps by attempt: "write" (path -> text), "keep_both" (paths whose conflict blocks
# become both sides' lines), "session" (printed as the JSON result's session_id), "exit".
AGENT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    from pathlib import Path

    todo_id, prompt = sys.argv[1], sys.argv[2]
    attempt = os.environ["BATCHD_ATTEMPT"]
    plan = json.loads(Path(PLAN).read_text())
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], capture_output=True, text=True, check=True
    ).stdout
    files = {p: Path(p).read_text() if Path(p).exists() else None for p in plan["watch"]}
    seen = {"status": status, "files": files, "prompt": prompt}
    Path(SEEN, f"{todo_id}-a{attempt}.json").write_text(json.dumps(seen))
    step = plan["todos"].get(todo_id, {}).get(attempt, {})
    for path, text in step.get("write", {}).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    for path in step.get("keep_both", []):
        lines = Path(path).read_text().splitlines(keepends=True)
        marker = [ln.startswith(("<<<<<<< ", ">>>>>>> ")) or ln.rstrip() == "=======" for ln in lines]
        kept = [ln for ln, is_marker in zip(lines, marker) if not is_marker]
        Path(path).write_text("".join(kept))
    if "session" in step:
        print(json.dumps({"type": "result", "is_error": False, "session_id": step["session"]}))
    sys.exit(step.get("exit", 0))
    """
)


def repo_with(
    tmp_path: Path,
    steps: Mapping[str, Mapping[int, Mapping[str, Any]]],
    *,
    watch: tuple[str, ...] = (SHARED,),
    verify: str = "",
    agent: str = "",
    batchd: str = "",
    **config: Any,
) -> PhaseRepo:
    """A repository whose todos (the keys of ``steps``) run the recording agent; ``mods/shared.py``
    holds ``VALUE = 0`` on the base."""
    seen = tmp_path / "seen"
    seen.mkdir()
    plan = {"watch": list(watch), "todos": {t: {str(a): s for a, s in by.items()} for t, by in steps.items()}}
    (tmp_path / "plan.json").write_text(json.dumps(plan), encoding="utf-8")
    script = tmp_path / "agent.py"
    header = f"PLAN = {str(tmp_path / 'plan.json')!r}\nSEEN = {str(seen)!r}\n"
    script.write_text(header + AGENT, encoding="utf-8")
    config.setdefault("max_attempts", 2)
    return build_repo(
        tmp_path,
        dict.fromkeys(steps, "exit: 0"),  # the block is for the demo agent: this agent ignores it
        files={SHARED: BASE_SHARED},
        agent=[sys.executable, str(script), "{todo_id}", "{prompt}"],
        agent_extra='sandbox = "none"\n' + agent,
        verify_extra=verify,
        batchd_extra=batchd,
        **config,
    )


def seen(tmp_path: Path, todo_id: str, attempt: int) -> dict[str, Any]:
    """What the agent of that attempt found in its workspace (and its prompt)."""
    data: dict[str, Any] = json.loads((tmp_path / "seen" / f"{todo_id}-a{attempt}.json").read_text())
    return data


def events(repo: PhaseRepo, type_: str, todo_id: str) -> list[dict[str, Any]]:
    return [dict(e.payload) for e in repo.events(type_) if e.payload.get("todo_id") == todo_id]


def shared(value: int) -> dict[str, str]:
    return {SHARED: GOOD_MOD + f"\nVALUE = {value}\n"}


# Todos 1 and 2 both change the same line: 1 (the lower id) wins, 2 loses the conflict.
SAME_LINE: dict[str, dict[int, dict[str, Any]]] = {
    "1": {1: {"write": shared(1)}},
    "2": {1: {"write": shared(2), "session": "session-of-2"}, 2: {"keep_both": [SHARED]}},
}


def test_a_conflicted_todos_next_attempt_starts_with_the_markers_in_its_workspace(tmp_path: Path) -> None:
    """conflicts = "merge": the loser's attempt 2 holds its change rebased onto the winner's, with
    git's conflict markers in the shared file (uncommitted), and both sides' lines between them."""
    repo = repo_with(tmp_path, SAME_LINE)
    repo.run()
    found = seen(tmp_path, "2", 2)
    text = found["files"][SHARED]
    assert all(any(ln.startswith(m) for ln in text.splitlines()) for m in MARKER_LINES), text
    assert "VALUE = 1" in text and "VALUE = 2" in text
    assert f" M {SHARED}" in found["status"].splitlines()


def test_the_resolve_attempt_is_accepted_without_spending_an_attempt(tmp_path: Path) -> None:
    """The loser resolves the markers keeping both lines: accepted, attempts_used 0, one conflict
    counted, and the branch holds both todos' lines."""
    repo = repo_with(tmp_path, SAME_LINE, max_attempts=1)
    assert repo.run() == 0
    todo = projection(repo.root).todos["2"]
    assert (str(todo.state), todo.attempts_used, todo.conflicts_used) in {
        ("accepted", 0, 1),
        ("complete", 0, 1),
    }
    assert repo.git("show", f"main:{SHARED}").endswith("VALUE = 1\nVALUE = 2")


def test_a_conflict_schedules_a_resolve_with_the_losers_commit_and_session(tmp_path: Path) -> None:
    """The retry after the conflict: mode "resolve", carrying the loser's commit and continuing its
    agent's session; the conflict says it is resolved."""
    repo = repo_with(tmp_path, SAME_LINE)
    repo.run()
    conflicted = events(repo, "todo.conflicted", "2")[0]
    retry = events(repo, "todo.retry_scheduled", "2")[0]
    first_commit = events(repo, "todo.agent_finished", "2")[0]["commit"]
    assert conflicted["resolution"] == "resolve"
    assert (retry["mode"], retry["carry"], retry["session_id"]) == ("resolve", first_commit, "session-of-2")


def test_the_resolve_prompt_names_the_winner_and_the_conflicting_files(tmp_path: Path) -> None:
    """Its prompt says which todo won, which files hold the markers, and to keep both intents."""
    repo = repo_with(tmp_path, SAME_LINE)
    repo.run()
    prompt = seen(tmp_path, "2", 2)["prompt"]
    assert "todo #1 was accepted first" in prompt
    assert f"- {SHARED}" in prompt
    assert "keep both intents" in prompt


def test_the_agent_log_says_what_was_carried_and_where_the_markers_are(tmp_path: Path) -> None:
    """The attempt's log names the carried commit and the files with conflict markers."""
    repo = repo_with(tmp_path, SAME_LINE)
    repo.run()
    first_commit = events(repo, "todo.agent_finished", "2")[0]["commit"]
    log = (repo.root / events(repo, "todo.agent_started", "2")[1]["log_path"]).read_text()
    assert f"carried the change of {first_commit[:12]}" in log
    assert f"conflict markers in: {SHARED}" in log


def test_a_todo_that_keeps_conflicting_is_blocked_by_max_conflict_retries(tmp_path: Path) -> None:
    """max_conflict_retries = 1 and three todos on one line: 3 loses to 1, resolves, then loses to
    2's resolve: blocked with the limit named, and none of its max_attempts spent."""
    steps: dict[str, dict[int, dict[str, Any]]] = {
        "1": {1: {"write": shared(1)}},
        "2": {1: {"write": shared(2)}, 2: {"write": shared(12)}},
        "3": {1: {"write": shared(3)}, 2: {"write": shared(13)}},
    }
    repo = repo_with(tmp_path, steps, batchd="max_conflict_retries = 1", max_attempts=5)
    repo.run()
    todo = projection(repo.root).todos["3"]
    assert (str(todo.state), todo.attempts_used, todo.conflicts_used) == ("blocked", 0, 2)
    assert "max_conflict_retries = 1" in todo.reason
    assert len(events(repo, "todo.agent_started", "3")) == 2


def test_redo_starts_the_next_attempt_clean_on_the_new_head(tmp_path: Path) -> None:
    """conflicts = "redo": nothing is carried; attempt 2's workspace is the new head as it is."""
    steps = {"1": SAME_LINE["1"], "2": {1: {"write": shared(2)}, 2: {"write": shared(22)}}}
    repo = repo_with(tmp_path, steps, verify='conflicts = "redo"')
    repo.run()
    found = seen(tmp_path, "2", 2)
    assert (found["files"][SHARED], found["status"]) == (shared(1)[SHARED], "")
    retry = events(repo, "todo.retry_scheduled", "2")[0]
    assert (retry["mode"], retry["carry"], events(repo, "todo.conflicted", "2")[0]["resolution"]) == (
        "redo",
        "",
        "redo",
    )


MINE = "mods/m1.py"
# Todo 1 breaks the check on its first attempt (the traceback names its file), then fixes it.
BREAKS_THEN_FIXES: dict[str, dict[int, dict[str, Any]]] = {
    "1": {1: {"write": {MINE: NAMED_BREAK, "mods/extra1.py": GOOD_MOD}}, 2: {"write": {MINE: GOOD_MOD}}},
}


def test_a_rejected_todos_repair_starts_with_its_own_change_when_resume_is_on(tmp_path: Path) -> None:
    """[agent] resume = true: the repair's workspace holds its rejected change (both files), and its
    prompt says so; the repair is accepted."""
    repo = repo_with(tmp_path, BREAKS_THEN_FIXES, watch=(MINE, "mods/extra1.py"), repair=True)
    assert repo.run() == 0
    found = seen(tmp_path, "1", 2)
    assert found["files"] == {MINE: NAMED_BREAK, "mods/extra1.py": GOOD_MOD}
    assert "Your previous change is already in this workspace" in found["prompt"]
    assert events(repo, "todo.retry_scheduled", "1")[0]["mode"] == "repair"


def test_a_rejected_todos_repair_starts_clean_when_resume_is_off(tmp_path: Path) -> None:
    """[agent] resume = false: the repair starts from the base, with the failure in its prompt only."""
    repo = repo_with(
        tmp_path, BREAKS_THEN_FIXES, watch=(MINE, "mods/extra1.py"), repair=True, agent="resume = false"
    )
    repo.run()
    found = seen(tmp_path, "1", 2)
    assert (found["files"], found["status"]) == ({MINE: None, "mods/extra1.py": None}, "")
    retry = events(repo, "todo.retry_scheduled", "1")[0]
    assert (retry["mode"], retry["carry"]) == ("repair", "")


def test_an_attempt_that_leaves_the_markers_in_fails_and_is_not_verified(tmp_path: Path) -> None:
    """The resolve attempt exits 0 without touching the markers: AgentFailed "conflict_markers"
    naming the file, and no verification of that attempt."""
    steps = {"1": SAME_LINE["1"], "2": {1: {"write": shared(2)}}}  # attempt 2 does nothing
    repo = repo_with(tmp_path, steps, max_attempts=1)
    repo.run()
    failed = events(repo, "todo.agent_failed", "2")
    assert [(f["attempt"], f["reason"]) for f in failed] == [(2, "conflict_markers")]
    assert SHARED in failed[0]["detail"]
    assert len(events(repo, "todo.verifying", "2")) == 1  # attempt 1's only


def test_a_failed_resolve_attempt_is_retried_from_the_same_change(tmp_path: Path) -> None:
    """A resolve attempt whose agent fails: attempt 3 starts again with the carried change and its
    markers (its earlier work is not lost with the failed attempt), and then resolves."""
    steps = {"1": SAME_LINE["1"], "2": {1: {"write": shared(2)}, 2: {"exit": 1}, 3: {"keep_both": [SHARED]}}}
    repo = repo_with(tmp_path, steps, max_attempts=2)
    repo.run()
    assert has_markers(seen(tmp_path, "2", 3)["files"][SHARED])
    assert str(projection(repo.root).todos["2"].state) in ("accepted", "complete")


def has_markers(text: str | None) -> bool:
    return text is not None and all(any(ln.startswith(m) for ln in text.splitlines()) for m in MARKER_LINES)


# --- the marker check itself ----------------------------------------------------------------------


def test_a_conflict_block_is_found(tmp_path: Path) -> None:
    """<<<<<<< / ======= / >>>>>>> lines in order are a conflict block."""
    path = tmp_path / "f.py"
    path.write_bytes(b"a\n<<<<<<< ours\nx\n=======\ny\n>>>>>>> theirs\nb\n")
    assert has_conflict_block(path)


def test_a_heading_underline_is_not_a_conflict_block(tmp_path: Path) -> None:
    """A lone ``=======`` line (reStructuredText, Markdown) or a quote ``>>>>>>> `` is no conflict."""
    path = tmp_path / "README.rst"
    path.write_bytes(b"Title\n=======\n\n>>>>>>> quoted\n")
    assert not has_conflict_block(path)


def test_a_link_to_a_file_with_markers_is_not_read(tmp_path: Path) -> None:
    """The check never follows a link the agent left (the policy judges links)."""
    target = tmp_path / "elsewhere.txt"
    target.write_bytes(b"<<<<<<< a\n=======\n>>>>>>> b\n")
    (tmp_path / "f.py").symlink_to(target)
    assert not has_conflict_block(tmp_path / "f.py")


def test_a_carried_commit_that_is_missing_starts_the_attempt_afresh(tmp_path: Path) -> None:
    """A carry naming a commit this repository lacks (a log from another clone): nothing is carried,
    and the agent's log says the attempt starts afresh."""
    repo = repo_with(tmp_path, {"1": {}})
    log_path = repo.root / ".batchd" / "logs" / "todo-1-attempt-2.log"
    log_path.parent.mkdir(parents=True)
    head = repo.git("rev-parse", "HEAD")
    assert carrying.carried_change(repo.root, "1", "f" * 40, head, log_path) is None
    assert "starting afresh" in log_path.read_text()


def appended(todo_id: str) -> dict[str, str]:
    """The shared module as the base has it, plus todo ``todo_id``'s own function at its end."""
    return {SHARED: BASE_SHARED + f"\n\ndef f_{todo_id}() -> int:\n    return {todo_id}\n"}


def test_three_todos_appending_to_one_module_are_all_accepted_with_no_agent_run_again(
    tmp_path: Path,
) -> None:
    """The first-hour case: three todos each append a function to the same module. git's 3-way merge
    conflicts for two of them (both inserted at one place); batchd keeps both sides, verifies, and
    accepts all three: one agent run each, no resolve attempt, and the branch holds every function."""
    steps = {t: {1: {"write": appended(t)}} for t in ("1", "2", "3")}
    repo = repo_with(tmp_path, steps, max_attempts=1)
    assert repo.run() == 0
    proj = projection(repo.root)
    assert {t: str(proj.todos[t].state) for t in steps} == dict.fromkeys(steps, "complete")
    assert [len(events(repo, "todo.agent_started", t)) for t in steps] == [1, 1, 1]
    assert not [e for t in steps for e in events(repo, "todo.conflicted", t)]
    final = repo.git("show", f"main:{SHARED}")
    assert all(f"def f_{t}()" in final for t in steps) and "<<<<<<<" not in final
