"""``plans/EXECUTION-STATUS.md`` after a real run: the seed's ``## Failed/Blocked Todos`` table with
one row per failed todo and a reason a person can act on, for every kind of failure.

One run (in-process, ``max_attempts = 1`` so each failure is final): todo 1 breaks the checks
(rejected), todos 2 and 3 write the same new file (3 loses the conflict), todo 4's agent exits 1,
todo 5's front matter is not YAML (invalid), todo 6 is fine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from gitrepo import NAMED_BREAK
from phase_repo import STATUS_FILE, PhaseRepo, build_repo, module, show, writes

from daemon.config import load_config
from daemon.engine.statusfile import render_status
from daemon.workspace import open_log
from statemachine.projection import replay

BAD_YAML = "---\nstatus: ready\npriority: [p2\n---\n\n# Broken front matter\n"
HEADER = "| Todo ID | Description | Reason | Files Reverted | Action Needed |"


@dataclass(frozen=True)
class Failures:
    repo: PhaseRepo
    rc: int
    rows: dict[str, list[str]]  # todo id -> the cells of its Failed/Blocked row


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the Failed/Blocked table by todo id (cells stripped)."""
    section = text.split("## Failed/Blocked Todos", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        if line.startswith("| ") and not line.startswith(("| Todo ID", "|---")):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> Failures:
    r = build_repo(
        tmp_path_factory.mktemp("failures"),
        {
            "1": module("1", NAMED_BREAK),
            "2": writes("shared.txt", content="two\n"),
            "3": writes("shared.txt", content="three\n"),
            "4": "stderr: 'cannot reach the model'\nexit: 1",
            "6": module("6"),
        },
        # 2 and 3 change the same line of shared.txt (a real conflict: keep-both merges only
        # insertions), and 3's lost conflict blocks it (no resolve attempt).
        files={"shared.txt": "zero\n"},
        max_parallel=5,
        max_attempts=1,
        batchd_extra="max_conflict_retries = 0",
    )
    r.todo("5").write_text(BAD_YAML, encoding="utf-8")
    rc = r.run()
    return Failures(repo=r, rc=rc, rows=table_rows(r.status()))


def test_table_has_the_seeds_columns(failures: Failures) -> None:
    """The section and its header are exactly the seed's."""
    assert f"## Failed/Blocked Todos\n\n{HEADER}\n" in failures.repo.status()


def test_table_has_one_row_per_failed_todo_only(failures: Failures) -> None:
    """Rows for the rejected, conflicted, failed and invalid todos; none for the complete ones."""
    assert sorted(failures.rows) == ["1", "3", "4", "5"]


def test_rejected_row_names_the_broken_command_and_the_reverted_files(failures: Failures) -> None:
    """A rejected change: the reason names the check it broke, Files Reverted lists its files."""
    _, _, reason, reverted, _ = failures.rows["1"]
    assert "broke `" in reason and "check.py`" in reason
    assert reverted == "mods/m1.py"


def test_conflicted_row_names_the_winner_and_the_file(failures: Failures) -> None:
    """A lost conflict: the reason names the todo that won and the file they both changed."""
    assert "lost a conflict with #2 on shared.txt" in failures.rows["3"][2]


def test_agent_failed_row_gives_the_exit_code(failures: Failures) -> None:
    """An agent that exited 1: the reason says so."""
    assert "exited with code 1" in failures.rows["4"][2]


def test_blocked_rows_say_attempts_are_exhausted_and_how_to_retry(failures: Failures) -> None:
    """With no attempt left each failure is blocked: the reason says so, the action gives `batchd retry`."""
    for todo_id, spent in (("1", "1/1"), ("3", "conflicts 1, max_conflict_retries = 0"), ("4", "1/1")):
        _, _, reason, _, action = failures.rows[todo_id]
        assert reason.startswith(f"blocked: attempts exhausted ({spent}): "), reason
        assert f"`batchd retry {todo_id}`" in action


def test_invalid_row_names_the_yaml_error_and_the_fix(failures: Failures) -> None:
    """A malformed todo file: the row names the file, the YAML error, and how to fix it."""
    _, description, reason, _, action = failures.rows["5"]
    assert description == "todos/5-ready-p2-thing-5.md"
    assert reason.startswith("invalid: ") and "not valid YAML" in reason
    assert "fix the YAML" in action


def test_failed_attempts_keep_each_kind_of_failure(failures: Failures) -> None:
    """The audit section lists each failed attempt with its outcome: rejected, conflicted, agent_failed."""
    audit = failures.repo.status().split("## Failed Attempts", 1)[1]
    for row in ("| 1 | 1 | rejected |", "| 3 | 1 | conflicted |", "| 4 | 1 | agent_failed |"):
        assert row in audit


def test_committed_status_file_has_the_same_table(failures: Failures) -> None:
    """The phase commit carries the status file with the same Failed/Blocked rows."""
    r = failures.repo
    committed = table_rows(show(r.root, r.git("rev-parse", "main"), STATUS_FILE))
    assert committed == failures.rows


def test_run_once_exits_1_with_blocked_todos(failures: Failures) -> None:
    """Blocked and invalid todos make the verdict a failure naming what became of each (how the
    attempts of a blocked one ended), and `run --once` exit 1."""
    verdict = failures.repo.events("run.completed")[-1].payload
    assert (failures.rc, verdict["success"]) == (1, False)
    assert dict(verdict["not_complete"]) == {
        "1": "rejected",
        "3": "conflicted",
        "4": "agent failed",
        "5": "invalid",
    }


def test_the_verdict_line_names_each_kind(failures: Failures) -> None:
    """The status file's verdict says rejected, conflicted, agent failed and invalid, never "missing"."""
    line = next(ln for ln in failures.repo.status().splitlines() if ln.startswith("- **Verdict:**"))
    assert "rejected: 1; conflicted: 3; agent failed: 4; invalid: 5" in line
    assert "missing" not in line


def test_a_database_servers_address_is_never_written_into_the_status_file(failures: Failures) -> None:
    """The status file is committed and pushed: with the log on PostgreSQL its header says so, and
    names neither the user, the host nor a password of the URL."""
    config = load_config(failures.repo.root)
    url = "postgresql+psycopg://batchd:s3cret-pw@db.internal:5432/runs?password=other-secret"
    on_server = replace(config, batchd=replace(config.batchd, db=url))
    log = open_log(failures.repo.root)
    try:
        proj = replay(log)
    finally:
        log.close()
    text = render_status(proj, on_server)
    assert "on a database server" in text
    for secret in ("s3cret-pw", "other-secret", "db.internal", "batchd:"):
        assert secret not in text
