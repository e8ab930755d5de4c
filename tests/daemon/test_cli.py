"""The `batchd` command line as a real process: init, status, logs, replay, events, bad input, --help."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import PY, DaemonProcess, base_env, batchd, git, make_repo, read_events

from daemon.config import load_config

AGENT_SAYS = "agent one was here"


@pytest.fixture(scope="module")
def done_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A repository whose two todos were run to completion by `batchd run --once`."""
    root = make_repo(
        tmp_path_factory.mktemp("cli") / "repo",
        {
            "1": f"write: [{{path: one.txt, content: one}}]\nstdout: {AGENT_SAYS}",
            "2": "write: [{path: two.txt, content: two}]",
        },
    )
    daemon = DaemonProcess(root, "--once")
    try:
        assert daemon.wait(timeout=60) == 0, daemon.log_path.read_text()
        yield root
    finally:
        daemon.kill()


@pytest.fixture(scope="module")
def inited(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """A fresh git repository (with a Makefile test target) after one `batchd init`."""
    root = tmp_path_factory.mktemp("init") / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "Makefile").write_text("test:\n\ttrue\n", encoding="utf-8")
    return root, batchd(root, "init")


def test_init_writes_a_config_load_config_accepts(
    inited: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """`batchd init` writes a batchd.toml that loads, creates todos/ and plans/, and excludes .batchd/."""
    root, done = inited
    assert done.returncode == 0, done.stderr
    config = load_config(root)
    assert config.verify.commands == (("make", "test"),)
    assert (root / "todos").is_dir() and (root / "plans").is_dir()
    assert "/.batchd/" in (root / ".git" / "info" / "exclude").read_text(encoding="utf-8").splitlines()


def test_init_refuses_to_overwrite_without_force(
    inited: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    """A second `batchd init` exits 2 naming --force and leaves the file alone; --force rewrites it."""
    root, _ = inited
    config = root / "batchd.toml"
    config.write_text(config.read_text(encoding="utf-8") + "# my edit\n", encoding="utf-8")
    again = batchd(root, "init")
    assert again.returncode == 2
    assert "--force" in again.stderr and "batchd.toml" in again.stderr
    assert config.read_text(encoding="utf-8").endswith("# my edit\n")
    forced = batchd(root, "init", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "# my edit" not in config.read_text(encoding="utf-8")


def committed_repo(
    root: Path,
    *,
    branch: str = "main",
    remotes: tuple[str, ...] = (),
    files: dict[str, str] | None = None,
) -> Path:
    """A repository with ``files`` (default: a pytest.ini, so a test command is found) committed on
    ``branch``, and ``remotes`` (bare repositories beside it)."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", branch)
    for name, text in (files if files is not None else {"pytest.ini": "[pytest]\n"}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    git(root, "add", "-A")
    git(root, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-q", "-m", "first")
    for name in remotes:
        git(root.parent, "init", "-q", "--bare", str(root.parent / f"{name}.git"))
        git(root, "remote", "add", name, str(root.parent / f"{name}.git"))
    return root


def path_with(tmp_path: Path, *names: str) -> str:
    """A PATH holding git and stand-in executables ``names`` (nothing else: no real agent CLI)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    for name in names:
        (folder / name).write_text("#!/bin/sh\n", encoding="utf-8")
        (folder / name).chmod(0o755)
    return str(folder)


def test_init_writes_the_branch_checked_out_and_origin(tmp_path: Path) -> None:
    """On a branch other than main, with origin among other remotes: both are what init writes."""
    root = committed_repo(tmp_path / "repo", branch="trunk", remotes=("backup", "origin"))
    done = batchd(root, "init")
    assert done.returncode == 0, done.stderr
    config = load_config(root)
    assert (config.batchd.branch, config.batchd.remote) == ("trunk", "origin")
    assert "branch: trunk (checked out)" in done.stdout
    assert f"remote: origin ({tmp_path / 'origin.git'})" in done.stdout


def test_init_takes_the_only_remote_when_there_is_no_origin(tmp_path: Path) -> None:
    root = committed_repo(tmp_path / "repo", remotes=("upstream",))
    assert batchd(root, "init").returncode == 0
    assert load_config(root).batchd.remote == "upstream"


@pytest.mark.parametrize("remotes", [(), ("one", "two")], ids=["no remote", "two remotes, no origin"])
def test_init_without_a_remote_to_push_to_writes_none_and_says_nothing_is_pushed(
    tmp_path: Path, remotes: tuple[str, ...]
) -> None:
    root = committed_repo(tmp_path / "repo", remotes=remotes)
    done = batchd(root, "init")
    assert done.returncode == 0, done.stderr
    assert load_config(root).batchd.remote == ""
    assert "nothing will be pushed" in done.stdout
    lines = (root / "batchd.toml").read_text(encoding="utf-8").splitlines()
    above = lines[lines.index('remote = ""') - 2 : lines.index('remote = ""')]
    assert any("nothing will be pushed" in line for line in above), above  # said right above the key


def test_init_from_a_subdirectory_writes_at_the_repository_root(tmp_path: Path) -> None:
    """Like every other command, init run inside the repository finds its top folder."""
    root = committed_repo(tmp_path / "repo")
    sub = root / "src" / "deep"
    sub.mkdir(parents=True)
    done = subprocess.run(
        [PY, "-m", "daemon", "init"], cwd=sub, capture_output=True, text=True, env=base_env(), check=False
    )
    assert done.returncode == 0, done.stderr
    assert (root / "batchd.toml").is_file() and (root / "todos").is_dir()
    assert not (sub / "batchd.toml").exists() and not (sub / "todos").exists()


def test_init_detects_a_python_tests_folder(tmp_path: Path) -> None:
    root = committed_repo(tmp_path / "repo", files={"tests/test_app.py": "def test_ok():\n    pass\n"})
    done = batchd(root, "init")
    assert "verify commands detected: python3 -m pytest" in done.stdout
    assert load_config(root).verify.commands == (("python3", "-m", "pytest"),)


def test_init_says_the_agent_cli_it_needs_is_not_installed(tmp_path: Path) -> None:
    root = committed_repo(tmp_path / "repo")
    done = batchd(root, "init", env=base_env(PATH=path_with(tmp_path)))
    assert done.returncode == 0, done.stderr
    assert (
        "agent: claude (Claude Code CLI `claude` on PATH: not found; install it "
        "(`npm install -g @anthropic-ai/claude-code`) or set [agent] preset/command in batchd.toml)"
    ) in done.stdout
    assert load_config(root).agent.preset == "claude"


def test_init_chooses_the_preset_whose_cli_is_installed(tmp_path: Path) -> None:
    root = committed_repo(tmp_path / "repo")
    bin_dir = path_with(tmp_path, "codex")
    done = batchd(root, "init", env=base_env(PATH=bin_dir))
    assert f"agent: codex (OpenAI Codex CLI `codex` on PATH: found at {bin_dir}/codex)" in done.stdout
    assert load_config(root).agent.preset == "codex"


def test_status_json_shape(done_repo: Path) -> None:
    """`batchd status --json` gives the run with its verdict, phases with their commits, batches and todos."""
    done = batchd(done_repo, "status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {
        "run",
        "phases",
        "batches",
        "todos",
        "review",
        "flakes",
        "workers",
        "queued",
        "last_seq",
    }
    assert data["last_seq"] == read_events(done_repo)[-1].seq
    run = data["run"]
    assert run["state"] == "completed" and run["branch"] == "main"
    assert run["verdict"]["success"] is True and run["verdict"]["complete"] == ["1", "2"]
    commits = {p["commit"] for p in data["phases"] if p["commit"]}
    history = git(done_repo, "log", "--format=%H", "main").split()
    assert commits and commits <= set(history)
    assert all({"key", "state", "todos", "accepted"} <= set(b) for b in data["batches"])
    todos = {t["id"]: t for t in data["todos"]}
    assert set(todos) == {"1", "2"}
    assert todos["1"]["state"] == "complete" and todos["1"]["attempt"] == 1
    assert todos["1"]["path"] == "todos/1-complete-p2-thing-1.md"


def test_logs_prints_the_agents_output(done_repo: Path) -> None:
    """`batchd logs ID` prints what the todo's agent wrote."""
    done = batchd(done_repo, "logs", "1")
    assert done.returncode == 0, done.stderr
    assert AGENT_SAYS in done.stdout


def test_replay_until_shows_an_earlier_state(done_repo: Path) -> None:
    """`batchd replay --until SEQ --json` shows the state right after event SEQ, not today's."""
    queued = next(e for e in read_events(done_repo) if e.type == "todo.queued" and e.stream == "todo-1")
    done = batchd(done_repo, "replay", "--until", str(queued.seq), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["last_seq"] == queued.seq
    assert {t["id"]: t["state"] for t in data["todos"]}["1"] == "ready"
    assert data["run"]["state"] != "completed"


def test_replay_verify_passes(done_repo: Path) -> None:
    """`batchd replay --verify` finds replay from zero equal to the snapshot plus the tail."""
    done = batchd(done_repo, "replay", "--verify", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"ok": True, "last_seq": read_events(done_repo)[-1].seq}


def test_events_json_of_one_stream(done_repo: Path) -> None:
    """`batchd events --json --stream todo-1` prints that stream's events, one JSON line each, in order."""
    done = batchd(done_repo, "events", "--json", "--stream", "todo-1")
    assert done.returncode == 0, done.stderr
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    expected = [e for e in read_events(done_repo) if e.stream == "todo-1"]
    assert [p["seq"] for p in printed] == [e.seq for e in expected]
    assert [p["type"] for p in printed] == [e.type for e in expected]
    assert {p["stream"] for p in printed} == {"todo-1"}
    assert printed[-1]["type"] == "todo.completed"


def test_events_without_a_log_exits_2_with_a_hint(tmp_path: Path) -> None:
    """`batchd events` where no daemon ever ran exits 2, saying where it looked and what to run."""
    git(tmp_path, "init", "-q")
    done = batchd(tmp_path, "events")
    assert done.returncode == 2
    assert "no event log" in done.stderr and str(tmp_path / ".batchd" / "events.db") in done.stderr
    assert "batchd run" in done.stderr


def test_a_corrupt_database_exits_3_naming_the_file(tmp_path: Path) -> None:
    """An events.db that is a text file makes `batchd events` exit 3, naming the file and leaving it alone."""
    git(tmp_path, "init", "-q")
    db = tmp_path / ".batchd" / "events.db"
    db.parent.mkdir()
    db.write_text("these are not the events you are looking for\n", encoding="utf-8")
    done = batchd(tmp_path, "events")
    assert done.returncode == 3
    assert str(db) in done.stderr
    assert db.read_text(encoding="utf-8").startswith("these are not")


HELP_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import click
    from daemon.cli.main import _register_subcommands, cli, main

    _register_subcommands()

    def walk(group, path):
        yield path
        if isinstance(group, click.Group):
            for name, command in group.commands.items():
                yield from walk(command, [*path, name])

    results = {}
    for path in walk(cli, []):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = main([*path, "--help"])
        results[" ".join(path) or "(batchd)"] = [code, "Usage:" in out.getvalue()]
    json.dump(results, sys.stderr)
    """
)


def test_help_works_on_every_command() -> None:
    """`--help` exits 0 and prints usage on every command and subcommand (checked in one real process)."""
    done = subprocess.run(
        [PY, "-c", HELP_SCRIPT], capture_output=True, text=True, env=base_env(), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stderr)
    expected = {
        "(batchd)",
        "run",
        "init",
        "demo",
        "status",
        "logs",
        "retry",
        "cancel",
        "pause",
        "resume",
        "replay",
        "events",
        "audit",
        "audit verify",
    }
    assert expected <= set(results), sorted(results)
    assert all(result == [0, True] for result in results.values()), results
