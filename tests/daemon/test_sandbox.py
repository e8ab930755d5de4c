"""daemon.world.sandbox with the real bubblewrap: what a confined program can and cannot write, and that a
kill leaves nothing behind. Skipped only where bwrap cannot build a sandbox (CI installs it)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from daemon.exceptions import UsageError
from daemon.world.sandbox import Sandbox, _needed, _probe, resolve

BWRAP = shutil.which("bwrap")
needs_bwrap = pytest.mark.skipif(
    BWRAP is None or bool(_probe(BWRAP)),
    reason=f"bubblewrap cannot run here: {_probe(BWRAP) if BWRAP else 'not installed'}",
)

TRY_WRITES = """
import os, sys
from pathlib import Path
for target in sys.argv[1:]:
    try:
        Path(target).write_text("written\\n")
        print("ok", target)
    except OSError as e:
        print("refused", target, e.errno)
"""


def run_in(
    sandbox: Sandbox, workspace: Path, *targets: Path, readable: tuple[Path, ...] = ()
) -> dict[str, str]:
    argv = sandbox.wrap(
        [sys.executable, "-c", TRY_WRITES, *map(str, targets)], workspace=workspace, readable=readable
    )
    done = subprocess.run(argv, cwd=workspace, capture_output=True, text=True, timeout=60, check=True)
    return {line.split()[1]: line.split()[0] for line in done.stdout.splitlines()}


@needs_bwrap
def test_only_the_workspace_and_the_writable_paths_can_be_written(tmp_path: Path) -> None:
    """Inside: the workspace and a listed path are writable; the repository around it and its .git
    refuse (EROFS); the home folder refuses; and nothing of it appears outside."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".git" / "config").write_text("[core]\n")
    ws = repo / ".batchd" / "workspaces" / "todo-1"
    ws.mkdir(parents=True)
    home = tmp_path / "agent-home"
    home.mkdir()
    probe = Path.home() / f".batchd-sandbox-probe-{os.getpid()}"
    sandbox = resolve("bwrap", [str(home)], key="[agent] sandbox")
    try:
        results = run_in(
            sandbox,
            ws,
            ws / "mine.txt",
            home / "session.json",
            repo / "checkout.txt",
            repo / ".git" / "config",
            probe,
            readable=(repo,),
        )
        assert not probe.exists()
    finally:
        probe.unlink(missing_ok=True)
    assert results[str(ws / "mine.txt")] == "ok" and (ws / "mine.txt").exists()
    assert results[str(home / "session.json")] == "ok" and (home / "session.json").exists()
    for refused in (repo / "checkout.txt", repo / ".git" / "config", probe):
        assert results[str(refused)] == "refused"
    assert not (repo / "checkout.txt").exists()
    assert (repo / ".git" / "config").read_text() == "[core]\n"


@needs_bwrap
def test_tmp_is_private(tmp_path: Path) -> None:
    """What a confined program writes to /tmp is not in the host's /tmp."""
    ws = tmp_path / "ws"
    ws.mkdir()
    name = f"/tmp/batchd-sandbox-test-{os.getpid()}"
    sandbox = resolve("bwrap", [], key="[agent] sandbox")
    results = run_in(sandbox, ws, Path(name))
    assert results[name] == "ok"
    assert not Path(name).exists()


@needs_bwrap
def test_killing_the_group_kills_a_process_that_escaped_it(tmp_path: Path) -> None:
    """A child that setsid()s leaves the process group; in the sandbox's pid namespace it dies anyway."""
    ws = tmp_path / "ws"
    ws.mkdir()
    pid_file = ws / "escapee.pid"
    # The escapee is found by its command line (its pid differs inside the sandbox's pid namespace):
    # a duration of its own, so another test's `sleep 300` running at the same time is not taken for it.
    seconds = f"300.{secrets.randbelow(10**6):06d}"
    code = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen(['sleep', {seconds!r}], start_new_session=True)\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(300)\n"
    )
    sandbox = resolve("bwrap", [], key="[agent] sandbox")
    proc = subprocess.Popen(
        sandbox.wrap([sys.executable, "-c", code], workspace=ws), cwd=ws, start_new_session=True
    )
    deadline = time.monotonic() + 20
    while not pid_file.exists():
        assert time.monotonic() < deadline, "the sandboxed program never started"
        time.sleep(0.05)
    found = _pids_of(f"sleep {seconds}")
    assert found, "the escaped child is not visible from the host"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _pids_of(f"sleep {seconds}") & found:
        assert time.monotonic() < deadline, "a process that left the group outlived the sandbox"
        time.sleep(0.05)


def _pids_of(cmdline: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                text = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if text == cmdline:
                found.add(int(entry.name))
    return found


def test_none_runs_the_program_as_it_is(tmp_path: Path) -> None:
    """sandbox = "none": the argv is unchanged, and the note says programs run unconfined."""
    sandbox = resolve("none", [], key="[agent] sandbox")
    assert sandbox.wrap(["agent", "x"], workspace=tmp_path) == ["agent", "x"]
    assert "unconfined" in sandbox.note


def test_bwrap_required_but_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """sandbox = "bwrap" on a machine without it refuses to start, saying how to install it."""
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError) as caught:
        resolve("bwrap", [], key="[agent] sandbox")
    assert "apt install bubblewrap" in caught.value.render()


def test_auto_without_bwrap_falls_back_to_none_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """sandbox = "auto" where bwrap is missing runs unconfined, with the reason kept for the status file."""
    monkeypatch.setenv("PATH", "/nonexistent")
    sandbox = resolve("auto", [], key="[agent] sandbox")
    assert not sandbox.active and "not installed" in sandbox.note


@needs_bwrap
def test_a_container_engines_socket_cannot_be_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A socket like /var/run/docker.sock (root on the host) is replaced by /dev/null inside."""
    import socket

    from daemon.world import sandbox as sandbox_module

    path = tmp_path / "engine.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    monkeypatch.setattr(sandbox_module, "_ENGINE_SOCKETS", (str(path),))
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect({str(path)!r})\nexcept OSError as e:\n    print('refused', e.errno)\n"
        "else:\n    print('connected')\n"
    )
    ws = tmp_path / "ws"
    ws.mkdir()
    argv = resolve("bwrap", [], key="x").wrap(
        [sys.executable, "-c", code], workspace=ws, readable=(tmp_path,)
    )
    done = subprocess.run(argv, cwd=ws, capture_output=True, text=True, timeout=60, check=True)
    server.close()
    assert done.stdout.startswith("refused"), done.stdout + done.stderr


@needs_bwrap
def test_caches_go_to_the_private_tmp(tmp_path: Path) -> None:
    """XDG_CACHE_HOME and npm's cache point into the sandbox's own /tmp."""
    ws = tmp_path / "ws"
    ws.mkdir()
    code = "import os; print(os.environ['XDG_CACHE_HOME'], os.environ['npm_config_cache'])"
    argv = resolve("bwrap", [], key="x").wrap([sys.executable, "-c", code], workspace=ws)
    done = subprocess.run(argv, cwd=ws, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["/tmp/.cache", "/tmp/.npm"]


@needs_bwrap
def test_agent_settings_inside_a_writable_home_stay_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~/.claude is writable (sessions, credentials) but ~/.claude/settings.json (hooks) is not."""
    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".claude" / "settings.json").write_text("{}\n")
    monkeypatch.setenv("HOME", str(home))
    ws = tmp_path / "ws"
    ws.mkdir()
    sandbox = resolve("bwrap", [str(home / ".claude")], key="x")
    results = run_in(sandbox, ws, home / ".claude" / "session.jsonl", home / ".claude" / "settings.json")
    assert results[str(home / ".claude" / "session.jsonl")] == "ok"
    assert results[str(home / ".claude" / "settings.json")] == "refused"
    assert (home / ".claude" / "settings.json").read_text() == "{}\n"


@needs_bwrap
def test_the_persons_credentials_are_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~/.ssh and ~/.git-credentials cannot be read inside: an agent has no way to push like the person."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY\n")
    (home / ".git-credentials").write_text("https://user:token@example.com\n")
    monkeypatch.setenv("HOME", str(home))
    ws = tmp_path / "ws"
    ws.mkdir()
    ssh, creds = str(home / ".ssh"), str(home / ".git-credentials")
    code = f"import os\nprint(sorted(os.listdir({ssh!r})), repr(open({creds!r}).read()))\n"
    argv = resolve("bwrap", [], key="x").wrap([sys.executable, "-c", code], workspace=ws, readable=(home,))
    done = subprocess.run(argv, cwd=ws, capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[] ''"


@needs_bwrap
def test_a_repository_and_its_virtualenv_under_tmp_run_in_the_sandbox(tmp_path: Path) -> None:
    """A clone under /tmp whose verify command is its own venv's `bin/python` (a link to the real
    one): the private /tmp shows the venv, and the link inside it, without bwrap refusing to mount."""
    assert Path("/tmp") in tmp_path.parents
    repo = tmp_path / "repo"
    ws = repo / ".batchd" / "verify"
    ws.mkdir(parents=True)
    (repo / ".venv" / "bin").mkdir(parents=True)
    python = repo / ".venv" / "bin" / "python"
    python.symlink_to(Path(sys.executable).resolve())
    sandbox = resolve("bwrap", [], key="[verify] sandbox")
    argv = sandbox.wrap([str(python), "-c", "print('ran')"], workspace=ws, readable=[repo, repo / ".venv"])
    done = subprocess.run(argv, cwd=ws, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "ran"), done.stderr


def test_batchds_own_source_tree_is_shown_wherever_it_lives() -> None:
    """An editable install finds batchd by an import hook, not sys.path: its source tree is among
    the paths shown in the sandbox, so `python -m daemon.demo.agent` runs from a clone under /tmp."""
    import daemon.world.sandbox

    assert Path(daemon.world.sandbox.__file__).resolve().parents[2] in _needed([])
