"""`batchd run` checks what it needs before it spends anything: the agent, the verify commands, the
branch and the remote. Real repositories with real bare remotes, `batchd run --once` as a process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest
from procs import AGENT, CHECK, PY, alive, base_env, batchd, git, make_repo, wait_for
from structlog.testing import capture_logs

from daemon.config import load_config
from daemon.exceptions import ConfigError, PreflightFailed
from daemon.service import loop, preflight

ONE_TODO = {"1": "write: [{path: one.txt, content: one}]"}


def configure(
    root: Path,
    *,
    branch: str = "main",
    remote: str = "",
    agent: Sequence[str] | None = AGENT,
    verify: Sequence[Sequence[str]] = (CHECK,),
) -> None:
    """A batchd.toml with these values (``agent=None``: no command, so the default preset)."""
    command = f"command = {json.dumps(list(agent))}\n" if agent is not None else ""
    (root / "batchd.toml").write_text(
        f'[batchd]\nbranch = "{branch}"\nremote = "{remote}"\nstop_timeout = 1\n\n'
        f'[agent]\n{command}env = {{ BATCHD_DEMO_SPEED = "0" }}\n\n'
        f"[verify]\ncommands = {json.dumps([list(c) for c in verify])}\nretries = 0\n",
        encoding="utf-8",
    )


def with_remote(root: Path) -> Path:
    """A bare ``origin`` beside ``root`` holding its main branch."""
    remote = root.parent / "remote.git"
    git(root.parent, "init", "-q", "--bare", "-b", "main", str(remote))
    git(root, "remote", "add", "origin", str(remote))
    git(root, "push", "-q", "origin", "main")
    return remote


def executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def run_once(root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return batchd(None, "run", "--once", "-C", str(root), env=base_env(**env))


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The refusal's text, after checking it is the configuration error (exit 2) before anything ran."""
    assert done.returncode == 2, done.stderr
    assert "batchd cannot start" in done.stderr, done.stderr
    return done.stderr


def nothing_spent(root: Path) -> None:
    assert not (root / ".batchd" / "events.db").exists()
    assert not (root / ".batchd" / "workspaces").exists()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository on main with one ready todo, the scripted agent and a passing check."""
    return make_repo(tmp_path / "repo", ONE_TODO)


# --- the agent ------------------------------------------------------------------------------------


def test_a_preset_whose_cli_is_not_installed_refuses_before_any_attempt(repo: Path, tmp_path: Path) -> None:
    """The default preset (claude) with no `claude` on PATH: exit 2 naming the preset, the CLI and how
    to install it; no attempt is made, no log written and nothing pushed (it used to fail every
    attempt of every todo with "No such file" and push an empty commit)."""
    remote = with_remote(repo)
    configure(repo, remote="origin", agent=None)
    before = git(remote, "rev-parse", "main")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    text = refused(run_once(repo, PATH=str(bin_dir)))
    assert '[agent] preset: "claude" runs the Claude Code CLI, but `claude` is not on PATH' in text
    assert f"({bin_dir})" in text  # the PATH looked at: under systemd it is not the login shell's
    assert "npm install -g @anthropic-ai/claude-code" in text
    nothing_spent(repo)
    assert git(remote, "rev-parse", "main") == before


def test_an_agent_command_not_on_path_is_refused(repo: Path) -> None:
    configure(repo, agent=["no-such-agent-cli", "{todo_path}"])
    text = refused(run_once(repo))
    assert "[agent] command: `no-such-agent-cli` is not on PATH" in text
    nothing_spent(repo)


def test_a_relative_agent_command_must_be_committed_on_the_branch(repo: Path) -> None:
    """A relative path runs in each agent's workspace, a fresh checkout of the branch: a script that
    is only in the person's checkout is refused, naming that; once committed the run goes through
    and the script is what ran (the change it made is on main)."""
    script = f'#!/bin/sh\nexec {PY} -m daemon.demo.agent "$1"\n'
    executable(repo / "scripts" / "agent.sh", script)
    configure(repo, agent=["scripts/agent.sh", "{todo_path}"])
    text = refused(run_once(repo))
    assert "[agent] command: scripts/agent.sh is in your checkout but not committed on 'main'" in text
    nothing_spent(repo)
    git(repo, "add", "scripts/agent.sh", "batchd.toml")
    git(repo, "commit", "-q", "-m", "agent script")
    done = run_once(repo)
    assert done.returncode == 0, done.stderr
    assert git(repo, "show", "main:one.txt") == "one"


def test_a_relative_agent_command_that_exists_nowhere_is_refused(repo: Path) -> None:
    configure(repo, agent=["./bin/agent", "{todo_path}"])
    text = refused(run_once(repo))
    assert "[agent] command: ./bin/agent does not exist (looked in the repository's top folder" in text


def test_a_script_committed_without_its_executable_bit_is_refused_with_the_git_command(repo: Path) -> None:
    (repo / "agent.sh").write_text("#!/bin/sh\n", encoding="utf-8")
    git(repo, "add", "agent.sh")
    git(repo, "commit", "-q", "-m", "agent")
    configure(repo, agent=["./agent.sh"])
    [problem] = preflight.find_problems(load_config(repo))
    assert problem.key == "agent.command"
    assert "git update-index --chmod=+x agent.sh" in problem.message


def test_a_setup_command_not_on_path_is_refused_but_a_path_it_makes_is_not(repo: Path) -> None:
    """`[agent] setup` runs in each new workspace: a program missing from PATH is refused; a
    relative path is left alone, as an earlier set-up command may make it (npm ci -> node_modules)."""
    configure(repo)
    text = (repo / "batchd.toml").read_text(encoding="utf-8")
    setup = 'setup = [["no-such-installer", "ci"], ["node_modules/.bin/build"]]\n'
    (repo / "batchd.toml").write_text(text.replace("[agent]\n", "[agent]\n" + setup), encoding="utf-8")
    [problem] = preflight.find_problems(load_config(repo))
    assert problem.render().startswith(
        "[agent] setup: `no-such-installer ci`: `no-such-installer` is not on PATH"
    )


# --- the verify commands --------------------------------------------------------------------------


def test_a_verify_command_that_cannot_be_found_is_refused(repo: Path) -> None:
    configure(repo, verify=[CHECK, ["no-such-test-runner", "--all"]])
    text = refused(run_once(repo))
    assert "[verify] commands: `no-such-test-runner --all`: `no-such-test-runner` is not on PATH" in text
    nothing_spent(repo)


def test_a_verify_command_in_an_ignored_dependency_folder_passes(repo: Path) -> None:
    """`node_modules/.bin/jest` is not committed but ignored, as installed dependencies are: the
    checks' workspaces get those, so it is accepted; an untracked file that is not ignored is not."""
    (repo / ".gitignore").write_text("node_modules/\n", encoding="utf-8")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore")
    executable(repo / "node_modules" / ".bin" / "jest", "#!/bin/sh\n")
    executable(repo / "check.sh", "#!/bin/sh\n")
    configure(repo, verify=[["node_modules/.bin/jest"], ["./check.sh"]])
    [problem] = preflight.find_problems(load_config(repo))
    assert problem.message.startswith("./check.sh is in your checkout but not committed")


def test_an_agent_in_the_checkouts_venv_passes_but_another_ignored_folder_does_not(repo: Path) -> None:
    """`.venv/bin/aider` runs in every agent workspace (each gets the checkout's `.venv`); a tool in
    some other ignored folder (`build/`) is in none of them, so it is refused before anything runs."""
    (repo / ".gitignore").write_text(".venv/\nbuild/\n", encoding="utf-8")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore")
    executable(repo / ".venv" / "bin" / "aider", "#!/bin/sh\n")
    executable(repo / "build" / "agent", "#!/bin/sh\n")
    configure(repo, agent=[".venv/bin/aider", "{todo_path}"])
    assert preflight.find_problems(load_config(repo)) == []
    configure(repo, agent=["build/agent", "{todo_path}"])
    [problem] = preflight.find_problems(load_config(repo))
    assert problem.key == "agent.command"
    assert problem.message.startswith("build/agent is in your checkout but not committed")


def test_a_verify_setup_program_that_is_not_installed_is_refused(repo: Path) -> None:
    configure(repo)
    with (repo / "batchd.toml").open("a", encoding="utf-8") as f:
        f.write('setup = [["no-such-installer", "ci"]]\n')
    [problem] = preflight.find_problems(load_config(repo))
    assert problem.key == "verify.setup"
    assert "`no-such-installer ci`: `no-such-installer` is not on PATH" in problem.message


def test_an_open_request_program_that_is_not_installed_is_refused(repo: Path) -> None:
    """`gh` missing would fail the pull request only after the first push: said before the run."""
    with_remote(repo)
    configure(repo, remote="origin")
    text = (repo / "batchd.toml").read_text(encoding="utf-8")
    extra = 'land = "branch"\nopen_request = ["no-such-gh", "pr", "create", "--head", "{branch}"]\n'
    (repo / "batchd.toml").write_text(text.replace("[batchd]\n", "[batchd]\n" + extra, 1), encoding="utf-8")
    [problem] = preflight.find_problems(load_config(repo))
    assert problem.key == "batchd.open_request"
    assert "`no-such-gh` is not on PATH" in problem.message


# --- the branch and the remote --------------------------------------------------------------------


def test_a_branch_that_does_not_exist_is_refused(repo: Path) -> None:
    configure(repo, branch="trunk")
    text = refused(run_once(repo))
    assert "[batchd] branch: " in text and "has no branch 'trunk'" in text
    assert "set [batchd] branch = 'main'" in text
    nothing_spent(repo)


def test_a_remote_that_is_not_configured_is_refused_naming_the_ones_there_are(repo: Path) -> None:
    with_remote(repo)
    configure(repo, remote="upstream")
    text = refused(run_once(repo))
    assert "[batchd] remote: this repository has no remote 'upstream' (it has: origin)" in text
    assert 'remote = "" to work without pushing' in text


def test_an_unreachable_remote_is_refused_with_what_git_said(repo: Path, tmp_path: Path) -> None:
    git(repo, "remote", "add", "origin", str(tmp_path / "gone.git"))
    configure(repo, remote="origin")
    text = refused(run_once(repo))
    assert f"[batchd] remote: remote 'origin' ({tmp_path / 'gone.git'}) cannot be reached" in text
    assert "does not appear to be a git repository" in text
    nothing_spent(repo)


def test_under_systemd_an_unreachable_remote_is_a_warning_not_a_refusal(repo: Path, tmp_path: Path) -> None:
    """The units never restart after exit 2: a remote that does not answer (the network at boot)
    lets the service start, said in the log; a remote that is not configured is still refused."""
    git(repo, "remote", "add", "origin", str(tmp_path / "gone.git"))
    configure(repo, remote="origin")
    with capture_logs() as logs:
        preflight.check(load_config(repo), service=True)
    [line] = [x for x in logs if x["event"] == "remote_unreachable"]
    assert line["log_level"] == "warning" and "cannot be reached" in line["error"]
    configure(repo, remote="upstream")
    with pytest.raises(PreflightFailed, match="no remote 'upstream'"):
        preflight.check(load_config(repo), service=True)


def test_a_remote_that_never_answers_is_refused_at_the_timeout_and_its_processes_killed(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ssh remote whose connection hangs (a stand-in ssh that never answers) is refused after the
    timeout, and the stand-in (a grandchild of batchd) is killed with git, not left behind."""
    pid_file = tmp_path / "ssh.pid"
    ssh = executable(tmp_path / "hanging-ssh", f"#!/bin/sh\necho $$ > {pid_file}\nexec sleep 600\n")
    monkeypatch.setenv("GIT_SSH_COMMAND", str(ssh))
    git(repo, "remote", "add", "origin", "ssh://git.example.invalid/repo.git")
    configure(repo, remote="origin")
    problems = preflight.remote_problems(repo, "origin", "main", timeout=1.0)
    assert [p.key for p in problems] == ["batchd.remote"]
    assert "cannot be reached: no answer within 1 s" in problems[0].message
    if pid_file.exists():  # started before the timeout (it nearly always is): gone with the group
        pid = int(pid_file.read_text(encoding="utf-8"))
        wait_for(lambda: not alive(pid), timeout=10, what="the hanging ssh to be killed")


def test_every_problem_is_listed_at_once(repo: Path) -> None:
    """One refusal lists each problem with its own fix, numbered, so one edit clears them all."""
    configure(repo, branch="trunk", remote="upstream", agent=["no-such-agent"], verify=[["no-such-check"]])
    text = refused(run_once(repo))
    assert "4 problems to fix first" in text
    for n, key in enumerate(
        ["[batchd] branch", "[batchd] remote", "[agent] command", "[verify] commands"], 1
    ):
        assert f"  {n}. {key}: " in text
    assert text.count("how to fix:") == 5  # one per problem, and the closing one


# --- what passes ----------------------------------------------------------------------------------


def test_a_complete_setup_passes_and_pushes(repo: Path) -> None:
    """Agent found, checks found, branch checked out, remote reachable: the run goes through."""
    remote = with_remote(repo)
    configure(repo, remote="origin")
    git(repo, "commit", "-q", "-am", "push to origin")
    done = run_once(repo)
    assert done.returncode == 0, done.stderr
    assert git(remote, "show", "main:one.txt") == "one"


def test_offline_work_is_allowed_and_said_to_push_nothing(repo: Path) -> None:
    """`remote = ""`: no remote is looked up or asked; the log warns that nothing will be pushed."""
    done = run_once(repo)
    assert done.returncode == 0, done.stderr
    warnings = [json.loads(line) for line in done.stderr.splitlines() if '"push_disabled"' in line]
    assert warnings and warnings[0]["level"] == "warning"
    assert "nothing will be pushed" in warnings[0]["detail"]


def test_the_demo_project_passes(tmp_path: Path) -> None:
    """`batchd demo`'s project (its scripted agent, its unittest check, its bare remote) starts."""
    from daemon.demo.project import build_demo

    project = build_demo(tmp_path / "demo", speed=0)
    assert preflight.find_problems(load_config(project.root)) == []


# --- SIGHUP ---------------------------------------------------------------------------------------


def test_a_reload_that_breaks_the_checks_keeps_the_old_config(repo: Path) -> None:
    """The daemon's reload refuses a config whose verify command is missing and logs why."""
    old = load_config(repo)
    configure(repo, verify=[["no-such-check"]])
    with capture_logs() as logs:
        assert loop.reload(old) is old
    [line] = [x for x in logs if x["event"] == "config_reload_rejected"]
    assert "[verify] commands: `no-such-check` is not on PATH" in line["error"]


def test_the_check_is_the_configuration_error_of_the_cli(repo: Path) -> None:
    """Raised as a ConfigError (exit 2), carrying each problem for --json readers."""
    configure(repo, agent=["no-such-agent"])
    with pytest.raises(PreflightFailed) as info:
        preflight.check(load_config(repo))
    assert isinstance(info.value, ConfigError) and info.value.exit_code == 2
    assert info.value.to_dict()["problems"] == [
        {
            "key": "agent.command",
            "message": f"`no-such-agent` is not on PATH ({os.environ['PATH']})",
            "hint": info.value.problems[0]["hint"],
        }
    ]


def _fake_git(tmp_path: Path, version: str) -> Path:
    script = tmp_path / "git"
    script.write_text(f"#!/bin/sh\necho 'git version {version}'\n")
    script.chmod(0o755)
    return script


def test_a_git_older_than_2_38_is_refused_with_the_version_it_needs(tmp_path: Path) -> None:
    """A git without `merge-tree --write-tree` is named at start, with the version batchd needs."""
    (problem,) = preflight.git_problems(str(_fake_git(tmp_path, "2.34.1")))
    assert problem.key == "batchd.git"
    assert "git 2.34 is older than 2.38" in problem.message
    assert "2.38 or newer" in problem.hint


@pytest.mark.parametrize("version", ["2.38.0", "2.39.5", "2.43.0.windows.1", "3.0.0"])
def test_a_git_of_2_38_or_newer_passes(tmp_path: Path, version: str) -> None:
    """2.38 and anything newer (vendor suffixes too) pass."""
    assert preflight.git_problems(str(_fake_git(tmp_path, version))) == []


def test_the_git_on_this_machine_passes() -> None:
    """The git batchd runs here is new enough (CI's Debian 12 has 2.39)."""
    assert preflight.git_problems() == []
