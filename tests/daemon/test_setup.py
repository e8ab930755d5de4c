"""``[agent] setup`` and ``[verify] setup``: run in order in each new workspace / before each tree's
checks, with the installed dependencies already there; a failing one fails the attempt with its
output, and in verification it blames a todo only when the last green tree still passes it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from gitrepo import CHECK_CMD, CHECK_PY, check_repo, head, module_candidate
from phase_repo import PY, build_repo, module
from procs import DaemonProcess
from test_deps import install_deps

from daemon.config import load_config
from daemon.exceptions import ConfigError
from daemon.world.checks import CheckRunner
from daemon.world.gitops import add_worktree
from daemon.world.verify import SetupFailed, check_baseline, verify_batch

NONE = 'sandbox = "none"'


def appender(log: Path, word: str) -> list[str]:
    """A set-up command that appends to ``log``: its folder, ``word``, whether node_modules is there."""
    code = (
        f"import pathlib; f = open({str(log)!r}, 'a'); here = pathlib.Path.cwd().name; "
        "there = pathlib.Path('node_modules/x/index.js').is_file(); "
        f"f.write(here + ' ' + {word!r} + ' ' + str(there) + '\\n')"
    )
    return [PY, "-c", code]


def counter(path: Path, passes: int) -> list[str]:
    """A set-up command that passes its first ``passes`` runs, then fails (a registry gone down)."""
    code = (
        f"import pathlib, sys; p = pathlib.Path({str(path)!r}); n = int(p.read_text()) if p.exists() else 0; "
        f"p.write_text(str(n + 1)); print('registry unreachable') if n >= {passes} else None; "
        f"sys.exit(1 if n >= {passes} else 0)"
    )
    return [PY, "-c", code]


def toml_list(*argvs: list[str]) -> str:
    return json.dumps([list(a) for a in argvs])


# --- [agent] setup ---------------------------------------------------------------------------------


def test_agent_setup_runs_in_order_once_per_workspace_with_the_dependencies_there(tmp_path: Path) -> None:
    """Two todos, two set-up commands: each workspace runs a then b, before its agent, and finds
    node_modules already linked."""
    log = tmp_path / "setup.log"
    setup = toml_list(appender(log, "a"), appender(log, "b"))
    repo = build_repo(tmp_path, {"1": module("1"), "2": module("2")}, agent_extra=f"{NONE}\nsetup = {setup}")
    install_deps(repo.root)
    assert repo.run() == 0
    lines = log.read_text().splitlines()
    for ws in ("todo-1", "todo-2"):  # the two workspaces are made at the same time
        assert [line.removeprefix(f"{ws} ") for line in lines if line.startswith(f"{ws} ")] == [
            "a True",
            "b True",
        ]
    assert len(lines) == 4
    assert len(repo.events("todo.accepted")) == 2


def test_a_failing_agent_setup_fails_the_attempt_with_its_output(tmp_path: Path) -> None:
    """The attempt fails as `setup`, naming the command, with what it printed; the agent never ran."""
    failing = [PY, "-c", "print('npm ERR! lockfile out of date'); raise SystemExit(3)"]
    repo = build_repo(tmp_path, {"1": module("1")}, agent_extra=f"{NONE}\nsetup = {toml_list(failing)}")
    assert repo.run() == 1
    failed = repo.events("todo.agent_failed")[-1].payload
    assert failed["reason"] == "setup"
    assert failed["returncode"] == 3
    assert "set-up command" in failed["detail"] and "lockfile" in failed["detail"] + failed["log_tail"]
    assert "npm ERR! lockfile out of date" in failed["log_tail"]
    assert repo.events("todo.agent_spawned") == []


# --- [verify] setup --------------------------------------------------------------------------------


def test_verify_setup_runs_before_the_checks_of_every_tree(tmp_path: Path) -> None:
    """Each tree is checked out afresh: the setup (a, then b, which builds what the check needs) runs
    before every run of the checks, the baseline's and the final one's too."""
    log = tmp_path / "setup.log"
    build = [PY, "-c", "open('built.txt', 'w').write('ok')"]
    check = (
        "import pathlib, sys\nif not pathlib.Path('built.txt').is_file(): sys.exit('not built')\n" + CHECK_PY
    )
    setup = toml_list(appender(log, "a"), appender(log, "b"), build)
    repo = build_repo(
        tmp_path,
        {"1": module("1"), "2": module("2")},
        files={"check.py": check, ".gitignore": "built.txt\n"},
        verify_extra=f"{NONE}\nsetup = {setup}",
    )
    install_deps(repo.root)
    assert repo.run() == 0
    runs = len(repo.events("batch.verify_run"))
    lines = log.read_text().splitlines()
    assert runs >= 2 and len(lines) >= 2 * runs
    assert lines == ["verify a True", "verify b True"] * (len(lines) // 2)
    assert "built.txt" not in repo.git("ls-tree", "-r", "--name-only", "main").splitlines()


def test_verify_setup_that_a_change_breaks_rejects_that_todo_only(tmp_path: Path) -> None:
    """The setup fails only with todo 2's file in the tree (a lockfile it broke): 2 is rejected for
    the setup command, with its output; 1 is accepted."""
    repo = check_repo(tmp_path / "repo")
    base = head(repo)
    wt = add_worktree(repo, repo / ".batchd" / "verify", "batchd/verify", base)
    setup = [
        PY,
        "-c",
        "import os, sys; sys.exit('lockfile broken') if os.path.exists('mods/mod_2.py') else None",
    ]
    runner = CheckRunner([CHECK_CMD], timeout=30, setup=[setup])
    verdict = verify_batch(wt, base, [module_candidate(repo, base, t) for t in ("1", "2")], runner)
    assert verdict.accepted_ids == ("1",)
    rejected = verdict.rejected["2"]
    assert rejected.command == tuple(setup)
    assert "[verify] setup command" in rejected.output_tail and "lockfile broken" in rejected.output_tail


def test_verify_setup_failing_for_everyone_blames_no_todo(tmp_path: Path) -> None:
    """The setup passes on the baseline, then fails whatever the tree (the registry went down): the
    last green tree is run again, fails too, and verification stops with SetupFailed, nobody blamed."""
    repo = check_repo(tmp_path / "repo")
    base = head(repo)
    wt = add_worktree(repo, repo / ".batchd" / "verify", "batchd/verify", base)
    runner = CheckRunner([CHECK_CMD], timeout=30, setup=[counter(tmp_path / "n", passes=1)])
    assert check_baseline(wt, base, runner).passed
    with pytest.raises(SetupFailed) as raised:
        verify_batch(wt, base, [module_candidate(repo, base, t) for t in ("1", "2", "3")], runner)
    assert "registry unreachable" in raised.value.output_tail
    assert "no todo is blamed" in raised.value.message
    assert (tmp_path / "n").read_text() == "3"  # baseline, the batch, the green tree again


def test_a_baseline_whose_setup_fails_says_so(tmp_path: Path) -> None:
    """Red on the baseline because of the setup: the result names the setup command and is marked."""
    repo = check_repo(tmp_path / "repo")
    base = head(repo)
    wt = add_worktree(repo, repo / ".batchd" / "verify", "batchd/verify", base)
    failing = (PY, "-c", "raise SystemExit('no network')")
    result = check_baseline(wt, base, CheckRunner([CHECK_CMD], timeout=30, setup=[failing]))
    assert (result.passed, result.setup_failed, result.failed_command) == (False, True, failing)
    assert "no network" in result.output_tail


def test_a_run_whose_verify_setup_breaks_midway_pauses_the_batch_and_rejects_nobody(tmp_path: Path) -> None:
    """In the event log: the batch is paused with the setup command and its output, no todo rejected."""
    setup = toml_list(counter(tmp_path / "n", passes=1))
    repo = build_repo(tmp_path, {"1": module("1"), "2": module("2")}, verify_extra=f"{NONE}\nsetup = {setup}")
    daemon = DaemonProcess(repo.root)
    try:
        paused = daemon.wait_events("batch.paused", timeout=60)[-1].payload
    finally:
        daemon.stop()
        daemon.kill()
    assert paused["command"] == counter(tmp_path / "n", passes=1)
    assert "registry unreachable" in paused["output_tail"] and "no todo is blamed" in paused["output_tail"]
    assert repo.events("todo.rejected") == []


def test_run_once_whose_verify_setup_breaks_says_it_was_the_setup_not_the_tests(tmp_path: Path) -> None:
    """Under --once the paused batch ends the run (exit 3) saying the set-up failed, not that the
    branch's tests are red (the fix is a registry or a network, not the tests)."""
    setup = toml_list(counter(tmp_path / "n", passes=1))
    repo = build_repo(tmp_path, {"1": module("1"), "2": module("2")}, verify_extra=f"{NONE}\nsetup = {setup}")
    daemon = DaemonProcess(repo.root, "--once")
    assert daemon.wait(timeout=120) == 3
    text = daemon.log_path.read_text(encoding="utf-8")
    assert "[verify] setup failed on the tested tree and the last green one" in text
    assert "the baseline is red" not in text


# --- the key -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [('"npm ci"', "argv list"), ("[1, 2]", "argv list of strings"), ('[["npm", 1]]', "verify.setup[0]")],
)
def test_verify_setup_must_be_argv_lists(tmp_path: Path, value: str, needle: str) -> None:
    """A string, numbers, a non-string element: one ConfigError naming [verify] setup and the fix."""
    (tmp_path / "batchd.toml").write_text(
        textwrap.dedent(
            f"""\
            [verify]
            commands = [["true"]]
            setup = {value}
            """
        )
    )
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path)
    text = f"{raised.value.message} {raised.value.hint} {raised.value}"
    assert "verify.setup" in text and needle in text


def test_verify_setup_accepts_one_command_or_several(tmp_path: Path) -> None:
    """One argv, or a list of them, as [agent] setup takes."""
    for value, expected in (
        ('["npm", "ci"]', (("npm", "ci"),)),
        ('[["npm", "ci"], ["npm", "run", "build"]]', (("npm", "ci"), ("npm", "run", "build"))),
    ):
        (tmp_path / "batchd.toml").write_text(f'[verify]\ncommands = [["true"]]\nsetup = {value}\n')
        assert load_config(tmp_path).verify.setup == expected
