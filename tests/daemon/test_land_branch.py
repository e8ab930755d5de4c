"""``[batchd] land = "branch"``: phase commits go to ``batchd/run-<run id>`` on the remote, ``main`` there
is never pushed, and ``open_request`` opens the pull request once, its URL in the log and the status.

Real repositories with a real bare remote; the request command is a stand-in ``gh`` on PATH (a real
executable that records its argv and prints a URL, as the agent presets are tested). The daemon runs
in-process, except where it must die (the stand-in kills it): there it is ``batchd run --once``.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from gitrepo import git
from phase_repo import PhaseRepo, build_repo, module, todo_text
from procs import base_env, batchd, status_json

PLAN = {
    1: ("Security", [["1"]], "fix(security): complete phase 1 - security"),
    2: ("Tidy", [["2"]], "chore(tidy): complete phase 2 - tidy"),
}
OPEN_REQUEST = [
    "gh", "pr", "create", "--head", "{branch}", "--base", "{base}",
    "--title", "{title}", "--body-file", "{body_file}",
]  # fmt: skip
URL = "https://github.example/team/repo/pull/7"

# The stand-in `gh`: records its argv (one JSON line per call), then per its mode prints the URL
# ("ok"), fails like gh does ("fail"), or prints the URL and kills the daemon that ran it ("crash").
STAND_IN = """#!{python}
import json, os, signal, sys
with open({calls!r}, "a", encoding="utf-8") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if {mode!r} == "fail":
    print("GraphQL: Protected branch rules forbid this (createPullRequest)", file=sys.stderr)
    sys.exit(1)
print("Creating pull request for batchd/run-x into main")
print()
print({url!r})
if {mode!r} == "crash":
    os.kill(os.getppid(), signal.SIGKILL)
"""


@dataclass(frozen=True)
class Setup:
    repo: PhaseRepo
    calls: Path
    initial: str  # the remote's main before the run

    def argvs(self) -> list[list[str]]:
        if not self.calls.exists():
            return []
        return [json.loads(line) for line in self.calls.read_text(encoding="utf-8").splitlines()]

    def run_id(self) -> str:
        return str(self.repo.events("run.started")[0].payload["run_id"])


def install_gh(folder: Path, calls: Path, mode: str) -> None:
    folder.mkdir(exist_ok=True)
    path = folder / "gh"
    path.write_text(STAND_IN.format(python=sys.executable, calls=str(calls), mode=mode, url=URL))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, mode: str = "ok", land: str = "branch") -> Setup:
    calls = tmp_path / "gh-calls.jsonl"
    install_gh(tmp_path / "bin", calls, mode)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    extra = f'land = "{land}"' + (f"\nopen_request = {json.dumps(OPEN_REQUEST)}" if land == "branch" else "")
    repo = build_repo(tmp_path, {"1": module("1"), "2": module("2")}, plan=PLAN, batchd_extra=extra)
    return Setup(repo=repo, calls=calls, initial=repo.remote_git("rev-parse", "main"))


def trailer(repo: Path, sha: str, key: str) -> str:
    return git(repo, "log", "-1", f"--format=%(trailers:key={key},valueonly)", sha).strip()


@pytest.fixture
def landed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    s = make(tmp_path, monkeypatch)
    assert s.repo.run() == 0
    return s


def test_phase_commits_go_to_the_run_branch_in_order_with_trailers(landed: Setup) -> None:
    """The remote's batchd/run-<id> holds both phase commits, phase 1 first, each with its trailers."""
    r, run_id = landed.repo, landed.run_id()
    pushed = r.remote_git("rev-list", "--first-parent", f"batchd/run-{run_id}", f"^{landed.initial}").split()
    shas = list(reversed(pushed))
    assert [trailer(r.remote, sha, "Batchd-Phase") for sha in shas] == ["1", "2"]
    assert {trailer(r.remote, sha, "Batchd-Run") for sha in shas} == {run_id}
    assert r.remote_git("log", "-1", "--format=%s", shas[0]) == PLAN[1][2]


def test_the_remotes_main_is_never_pushed(landed: Setup) -> None:
    """main on the remote is where it was; the local main holds the run's work (the run branch's tip)."""
    r = landed.repo
    assert r.remote_git("rev-parse", "main") == landed.initial
    assert r.git("rev-parse", "main").strip() == r.remote_git("rev-parse", f"batchd/run-{landed.run_id()}")


def test_open_request_runs_once_over_two_phases_with_its_placeholders(landed: Setup) -> None:
    """One call after two pushes, each placeholder one whole argument; the body file lists the todos."""
    (argv,) = landed.argvs()
    branch = f"batchd/run-{landed.run_id()}"
    assert argv[:7] == ["pr", "create", "--head", branch, "--base", "main", "--title"]
    assert argv[7] == PLAN[1][2]  # the phase commit's subject: only phase 1 was pushed then
    body = Path(argv[argv.index("--body-file") + 1]).read_text(encoding="utf-8")
    assert "#1 Thing 1" in body and branch in body


def test_a_one_phase_run_leaves_the_checkout_clean_and_its_url_in_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request opens after the only phase's push: no commit is left to carry its line, so the
    status file stays as committed (`git status` clean) and `batchd status` has the URL."""
    calls = tmp_path / "gh-calls.jsonl"
    install_gh(tmp_path / "bin", calls, "ok")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    extra = f'land = "branch"\nopen_request = {json.dumps(OPEN_REQUEST)}'
    r = build_repo(tmp_path, {"1": module("1")}, batchd_extra=extra)
    assert r.run() == 0
    assert r.events("run.request_opened")
    assert git(r.root, "status", "--porcelain") == ""
    assert status_json(r.root)["run"]["request"]["url"] == URL


def test_the_url_is_in_the_event_the_status_file_and_status(landed: Setup) -> None:
    """The last URL line the command printed is recorded, written in the status file and shown."""
    r = landed.repo
    (opened,) = r.events("run.request_opened")
    assert opened.payload["url"] == URL
    assert f"- **Pull request:** {URL}" in r.status()
    done = status_json(r.root)
    assert done["run"]["request"] == {
        "state": "opened",
        "branch": f"batchd/run-{landed.run_id()}",
        "url": URL,
        "detail": "",
    }
    human = batchd(r.root, "status", env=base_env(COLUMNS="200"))
    assert f"pull request: {URL} (batchd/run-{landed.run_id()})" in human.stdout


def test_a_failing_request_is_a_warning_and_the_run_is_green(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gh exiting 1: run.request_failed, a warning in the status file, exit 0, and the commits are on
    the run branch all the same; it is not tried again on the next push. (A gh that is not installed
    is refused before the run: test_preflight; one gone by the time it runs: test_request.)"""
    s = make(tmp_path, monkeypatch, mode="fail")
    assert s.repo.run() == 0
    (failed,) = s.repo.events("run.request_failed")
    assert "Protected branch rules" in failed.payload["reason"]
    assert "- **Warning:** the pull request was not opened:" in s.repo.status()
    assert len(s.argvs()) == 1
    assert s.repo.remote_git("rev-parse", f"batchd/run-{s.run_id()}") == s.repo.git("rev-parse", "main")


def test_a_crash_while_the_request_ran_does_not_run_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stand-in opens the request and kills the daemon before the outcome is recorded: the restart
    records it as unknown (a warning) and never runs it a second time."""
    s = make(tmp_path, monkeypatch, mode="crash")
    first = s.repo.run_cli(timeout=120)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    assert s.repo.events("run.request_opening") and not s.repo.events("run.request_failed")
    second = s.repo.run_cli(timeout=120)
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(s.argvs()) == 1
    (failed,) = s.repo.events("run.request_failed")
    assert "may have opened the request" in failed.payload["reason"]


def test_a_crash_after_the_push_was_recorded_runs_the_request_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed right after phase 1's push is recorded (before the request was asked for): the restart
    opens the request, once."""
    s = make(tmp_path, monkeypatch)
    monkeypatch.setenv("BATCHD_CRASH_AFTER", "phase.pushed")
    first = s.repo.run_cli(timeout=120)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    monkeypatch.delenv("BATCHD_CRASH_AFTER")
    assert s.repo.run_cli(timeout=120).returncode == 0
    assert len(s.argvs()) == 1
    assert [e.payload["url"] for e in s.repo.events("run.request_opened")] == [URL]


def test_land_push_pushes_main_and_makes_no_run_branch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default: main on the remote is the run's head, no batchd/run-* branch, no request."""
    s = make(tmp_path, monkeypatch, land="push")
    assert s.repo.run() == 0
    assert s.repo.remote_git("rev-parse", "main") == s.repo.git("rev-parse", "main")
    assert s.repo.remote_git("branch", "--list", "batchd/*") == ""
    assert s.argvs() == [] and not s.repo.events("run.request_opening")


def test_a_run_branch_deleted_after_its_request_was_merged_is_pushed_again_with_a_new_request(
    landed: Setup,
) -> None:
    """The request merged and its branch deleted on the remote: the next work (a todo dropped later,
    the run reopened) pushes the run branch again and opens a second request."""
    r, branch = landed.repo, f"batchd/run-{landed.run_id()}"
    r.remote_git("branch", "-D", branch)
    r.todo("3").write_text(todo_text("3", module("3")), encoding="utf-8")
    assert r.run() == 0
    assert r.remote_git("rev-parse", branch) == r.git("rev-parse", "main")
    assert r.remote_git("rev-parse", "main") == landed.initial
    assert [a[3] for a in landed.argvs()] == [branch, branch]
