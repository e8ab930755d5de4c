"""The `batchd` command line as a real process: init, status, logs, replay, events, bad input, --help."""

from __future__ import annotations

import json
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


def test_status_json_shape(done_repo: Path) -> None:
    """`batchd status --json` gives the run with its verdict, phases with their commits, batches and todos."""
    done = batchd(done_repo, "status", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data) == {"run", "phases", "batches", "todos", "review", "last_seq"}
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
