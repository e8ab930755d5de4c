"""The todo page and the logs it links to, on a real demo run and copies of it changed on purpose.

The demo's todo 282 is rejected twice by the checks and blocked: its page must show the verify
output that rejected it, the diff of each attempt's change, its file and every event of its stream.
Copies of the run get an agent log that is not UTF-8, one replaced by a symbolic link, a huge one,
and a repository whose config names diff programs: the page must show the first two as text or not
at all, the third by its end, and never run the programs.
"""

from __future__ import annotations

import html
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from daemon.web import files
from daemon.workspace import Workspace, open_log
from store import StoredEvent

REJECTED = "282"  # the demo todo the checks reject on both attempts


def stream_events(root: Path, todo_id: str) -> list[StoredEvent]:
    log = open_log(root)
    try:
        return list(log.read(stream=f"todo-{todo_id}"))
    finally:
        log.close()


def attempt_section(page: str, number: int) -> str:
    found = re.search(rf'<article [^>]*data-attempt="{number}">(.*?)</article>', page, flags=re.S)
    assert found is not None, f"no attempt {number} on the page"
    return found.group(1)


def test_todo_page_lists_every_event_of_its_stream(client: TestClient, demo_root: Path) -> None:
    """The todo page lists every event of the todo's stream, in log order."""
    page = client.get(f"/todo/{REJECTED}")
    assert page.status_code == 200
    todo_part = page.text.split('<section class="todo-events">', 1)[1]
    seqs = [int(s) for s in re.findall(r'<tr class="event" data-seq="(\d+)"', todo_part)]
    assert seqs == [e.seq for e in stream_events(demo_root, REJECTED)]


def test_todo_page_shows_the_verify_output_that_rejected_it(client: TestClient, demo_root: Path) -> None:
    """Each rejected attempt shows the output of the check that rejected it (the saved whole log's
    end) and links to the whole."""
    page = client.get(f"/todo/{REJECTED}").text
    for event in stream_events(demo_root, REJECTED):
        if event.type != "todo.rejected":
            continue
        number = event.payload["attempt"]
        section = html.unescape(attempt_section(page, number))
        saved = Workspace(demo_root).verify_log(REJECTED, number).read_text(encoding="utf-8")
        last_line = saved.strip().splitlines()[-1]
        assert last_line in section
        assert f"/todo/{REJECTED}/verify/{number}" in section


def test_todo_page_falls_back_to_the_events_output_tail(
    demo_copy: Path, client_for: Callable[..., TestClient]
) -> None:
    """A rejection from before batchd saved the whole output shows the end its event kept."""
    rejected = next(e for e in stream_events(demo_copy, REJECTED) if e.type == "todo.rejected")
    Workspace(demo_copy).verify_log(REJECTED, rejected.payload["attempt"]).unlink()
    page = client_for(demo_copy).get(f"/todo/{REJECTED}").text
    section = html.unescape(attempt_section(page, rejected.payload["attempt"]))
    assert rejected.payload["output_tail"].strip().splitlines()[-1] in section
    assert "Only the end of the output was kept" in section


def test_todo_page_shows_the_diff_of_each_attempts_change(client: TestClient, demo_root: Path) -> None:
    """Each attempt shows `git show` of its change: the agent's commit, with its files' diff."""
    page = client.get(f"/todo/{REJECTED}").text
    for event in stream_events(demo_root, REJECTED):
        if event.type != "todo.agent_finished":
            continue
        section = html.unescape(attempt_section(page, event.payload["attempt"]))
        assert f"commit {event.payload['commit']}" in section
        for name in event.payload["files"]:
            assert f"diff --git a/{name} b/{name}" in section


def test_accepted_attempt_shows_the_commit_that_got_in(client: TestClient, demo_root: Path) -> None:
    """An accepted attempt's change is the commit accepted onto the verification branch."""
    todo_id, accepted = next(
        (k, e)
        for k in ("273", "274", "275")
        for e in stream_events(demo_root, k)
        if e.type == "todo.accepted"
    )
    page = client.get(f"/todo/{todo_id}").text
    assert f"commit {accepted.payload['commit']}" in html.unescape(page)
    assert re.search(r'<article class="attempt attempt-(accepted|complete)" [^>]*data-attempt="1">', page)


def test_todo_page_shows_its_file(client: TestClient, demo_root: Path) -> None:
    """The todo's file, as it is in the repository now (under its new name once complete)."""
    status = client.get("/api/status").json()
    todo = next(t for t in status["todos"] if t["id"] == REJECTED)
    text = (demo_root / todo["path"]).read_text(encoding="utf-8")
    page = html.unescape(client.get(f"/todo/{REJECTED}").text)
    assert text.strip() in page


def test_todo_page_of_a_deleted_file_says_so(demo_copy: Path, client_for: Callable[..., TestClient]) -> None:
    """When the todo's file is gone from the repository, the page says so (and still shows the rest)."""
    client = client_for(demo_copy)
    path = client.get("/api/status").json()["todos"][0]["path"]
    (demo_copy / path).unlink()
    page = client.get(f"/todo/{client.get('/api/status').json()['todos'][0]['id']}")
    assert page.status_code == 200
    assert "it is no longer in the repository" in page.text


def test_todo_by_id_with_leading_zeros(client: TestClient) -> None:
    """`/todo/0282` and `/todo/todo-282` are the todo the file calls 282: ids as people type them."""
    for form in ("0282", "todo-282", "282"):
        page = client.get(f"/todo/{form}")
        assert page.status_code == 200, form
        assert "<h1>#282 " in page.text


def test_unknown_todo_is_a_404_page(client: TestClient) -> None:
    """An id the log does not know is a 404 page saying so, as the CLI words it."""
    page = client.get("/todo/99999")
    assert page.status_code == 404
    assert "no todo #99999 in the log" in page.text


def test_todo_page_has_retry_and_cancel_buttons(client: TestClient) -> None:
    """The retry and cancel buttons name the todo as its file writes its id."""
    page = client.get(f"/todo/{REJECTED}").text
    assert f'data-control="retry" data-todo="{REJECTED}"' in page
    assert f'data-control="cancel" data-todo="{REJECTED}"' in page


# -- the agent log ---------------------------------------------------------------------------------


def test_agent_log_tail_on_the_page_and_whole_behind_the_link(client: TestClient, demo_root: Path) -> None:
    """The page shows the agent's output; the link serves the whole file as plain text, unsniffable."""
    whole = Workspace(demo_root).agent_log(REJECTED, 1).read_bytes()
    page = client.get(f"/todo/{REJECTED}").text
    assert whole.decode().strip().splitlines()[-1] in html.unescape(attempt_section(page, 1))
    answer = client.get(f"/todo/{REJECTED}/log/1")
    assert answer.status_code == 200
    assert answer.content == whole
    assert answer.headers["content-type"] == "text/plain; charset=utf-8"
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_a_huge_agent_log_shows_its_end(demo_copy: Path, client_for: Callable[..., TestClient]) -> None:
    """A log of megabytes shows its last 64 KiB on the page; the link still serves all of it."""
    path = Workspace(demo_copy).agent_log(REJECTED, 1)
    body = b"START-OF-LOG\n" + b"x" * 2_000_000 + b"\nEND-OF-LOG\n"
    path.write_bytes(body)
    client = client_for(demo_copy)
    section = attempt_section(client.get(f"/todo/{REJECTED}").text, 1)
    assert "END-OF-LOG" in section and "START-OF-LOG" not in section
    assert len(section) < files.TAIL_BYTES + 300_000
    assert client.get(f"/todo/{REJECTED}/log/1").content == body


def test_a_non_utf8_agent_log_shows_replacement_characters(
    demo_copy: Path, client_for: Callable[..., TestClient]
) -> None:
    """An agent's output that is not UTF-8 still shows, with U+FFFD where its bytes are not text."""
    Workspace(demo_copy).agent_log(REJECTED, 1).write_bytes(b"before \xff\xfe\xc3 after\n")
    section = attempt_section(client_for(demo_copy).get(f"/todo/{REJECTED}").text, 1)
    assert "before \ufffd\ufffd\ufffd after" in section


def test_a_log_replaced_by_a_symlink_is_refused(
    demo_copy: Path, client_for: Callable[..., TestClient], tmp_path: Path
) -> None:
    """A link put in place of an agent log is not followed: the link answers 403 and the page shows
    nothing of its target."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n", encoding="utf-8")
    path = Workspace(demo_copy).agent_log(REJECTED, 1)
    path.unlink()
    path.symlink_to(secret)
    client = client_for(demo_copy)
    answer = client.get(f"/todo/{REJECTED}/log/1")
    assert answer.status_code == 403
    assert "TOP-SECRET" not in answer.text and "symbolic link" in answer.text
    page = client.get(f"/todo/{REJECTED}")
    assert page.status_code == 200 and "TOP-SECRET" not in page.text


def test_a_log_replaced_by_a_fifo_is_refused(demo_copy: Path, client_for: Callable[..., TestClient]) -> None:
    """A FIFO put in place of a verify log is refused at once (reading it would hang the page)."""
    path = Workspace(demo_copy).verify_log(REJECTED, 1)
    path.unlink()
    os.mkfifo(path)
    client = client_for(demo_copy)
    assert client.get(f"/todo/{REJECTED}/verify/1").status_code == 403
    assert client.get(f"/todo/{REJECTED}").status_code == 200


def test_a_missing_log_is_a_404_with_a_message(client: TestClient) -> None:
    """An attempt with no log (it never ran) answers 404 saying what is missing."""
    answer = client.get(f"/todo/{REJECTED}/log/9")
    assert answer.status_code == 404
    assert answer.text.startswith(f"no agent output for todo {REJECTED} attempt 9")
    assert client.get("/todo/99999/log/1").status_code == 404


def test_verify_log_is_served_whole(client: TestClient, demo_root: Path) -> None:
    """The saved output of the check that rejected an attempt is served whole, as plain text."""
    answer = client.get(f"/todo/{REJECTED}/verify/1")
    assert answer.status_code == 200
    assert answer.content == Workspace(demo_root).verify_log(REJECTED, 1).read_bytes()
    assert answer.headers["x-content-type-options"] == "nosniff"


# -- git show ----------------------------------------------------------------------------------------


def agent_commit(root: Path) -> str:
    return next(e.payload["commit"] for e in stream_events(root, REJECTED) if e.type == "todo.agent_finished")


def test_git_show_is_cut_at_its_cap(demo_root: Path) -> None:
    """A diff longer than the cap is cut there (and says so): a huge change costs a page little."""
    diff = files.git_show(demo_root, agent_commit(demo_root), limit=300)
    assert diff.truncated and not diff.error
    assert 0 < len(diff.text.encode()) <= 300


def test_git_show_of_an_unknown_commit_says_why(demo_root: Path) -> None:
    """A commit the repository does not have (garbage collected) gives git's reason, not an error page."""
    diff = files.git_show(demo_root, "0" * 40)
    assert diff.error and not diff.text


def test_git_show_runs_no_program_the_repository_names(demo_copy: Path, tmp_path: Path) -> None:
    """Diff drivers, textconv filters and hooks in the repository's config never run for a page."""
    marker = tmp_path / "ran"
    program = f"sh -c 'touch {marker}; cat \"$1\"' -"
    for key, value in (
        ("diff.external", program),
        ("diff.evil.textconv", program),
        ("diff.evil.command", program),
        ("core.pager", program),
    ):
        subprocess.run(["git", "-C", str(demo_copy), "config", key, value], check=True)
    (demo_copy / ".git" / "info").mkdir(exist_ok=True)
    (demo_copy / ".git" / "info" / "attributes").write_text("* diff=evil\n", encoding="utf-8")
    diff = files.git_show(demo_copy, agent_commit(demo_copy))
    assert not diff.error and "diff --git" in diff.text
    assert not marker.exists()


def git_counter(tmp_path: Path) -> Path:
    """A `git` first on PATH that writes its arguments to a file, then runs the real one."""
    real = shutil.which("git")
    assert real is not None
    folder = tmp_path / "bin"
    folder.mkdir()
    calls = tmp_path / "git-calls"
    wrapper = folder / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\nexec {shlex.quote(real)} "$@"\n')
    wrapper.chmod(0o755)
    return calls


def show_calls(calls: Path) -> int:
    lines = calls.read_text(encoding="utf-8").splitlines() if calls.exists() else []
    return sum(" show " in f" {line} " for line in lines)


def test_a_page_shown_again_runs_git_show_no_more(
    demo_copy: Path, tmp_path: Path, client_for: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live todo page fetched again (after each of its events) does not run `git show` again: a
    commit never changes, its diff is kept."""
    calls = git_counter(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    client = client_for(demo_copy)
    first = client.get(f"/todo/{REJECTED}")
    assert first.status_code == 200 and "diff --git" in first.text
    ran = show_calls(calls)
    assert ran >= 1  # the wrapper is the git that runs
    again = client.get(f"/todo/{REJECTED}", headers={"X-Batchd-Fragment": "1"})
    assert again.status_code == 200 and "diff --git" in again.text
    assert show_calls(calls) == ran


def test_git_show_that_failed_is_tried_again(
    demo_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit git could not show (not fetched yet, a timeout) is not remembered as missing."""
    calls = git_counter(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    for _ in range(2):
        assert files.git_show(demo_copy, "0" * 40).error
    assert show_calls(calls) == 2


def test_the_todo_page_names_its_stream_for_live_updates(client: TestClient) -> None:
    """The page says which stream it shows (inside main, so a swapped-in page says it too): live.js
    refreshes it only on that todo's events."""
    fragment = client.get(f"/todo/{REJECTED}", headers={"X-Batchd-Fragment": "1"})
    assert f'data-stream="todo-{REJECTED}"' in fragment.text
