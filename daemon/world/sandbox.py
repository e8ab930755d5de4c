"""Running a program with only its workspace writable: bubblewrap where it works, else nothing.

``[agent] sandbox`` (and ``[verify] sandbox`` for the checks, which run code the agents wrote):

- ``"bwrap"``: the program runs under bubblewrap (``bwrap``, the sandbox Claude Code itself uses on
  Linux): the whole file system read-only, its workspace read-write, a private ``/tmp``, the paths
  in ``writable`` (an agent's own home: ``~/.claude``, caches) read-write, the network as it is, and
  its own pid namespace, so nothing it starts outlives a kill (not even a process that ``setsid``\\ s);
- ``"none"``: no sandbox; batchd says so in the log and the status file;
- ``"auto"`` (default): ``bwrap`` when it is installed and works here, else ``none``.

The person's checkout, its ``.git`` (config, hooks, refs) and ``.batchd/`` stay read-only, so a
hostile agent's writes outside its workspace fail (EROFS) instead of landing; so do the person's
``node_modules`` and ``.venv`` that workspaces link to (``readonly``, bound last).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import structlog

from daemon.exceptions import UsageError
from daemon.world.homeguard import steering_paths

log = structlog.get_logger(__name__)

SandboxMode = Literal["auto", "bwrap", "none"]
_PROBE_TIMEOUT = 10.0
# The sandbox's own /tmp (a fresh tmpfs): the host's is not shared with what runs inside.
_TMP = "/tmp"  # noqa: S108 - a path inside the sandbox, not a temporary file of ours


@dataclass(frozen=True, slots=True, kw_only=True)
class Sandbox:
    """How programs are wrapped: ``kind`` is what is in force, ``note`` why (for the log and status)."""

    kind: Literal["bwrap", "none"]
    bwrap: str = ""
    writable: tuple[Path, ...] = ()
    readonly: tuple[Path, ...] = ()  # read-only whatever else is writable (the person's dependencies)
    note: str = ""

    @property
    def active(self) -> bool:
        return self.kind == "bwrap"

    def wrap(self, argv: Sequence[str], *, workspace: Path, readable: Iterable[Path] = ()) -> list[str]:
        """``argv`` to run ``argv`` in this sandbox with ``workspace`` read-write (as is when none).

        ``/tmp`` is private: paths under it that the program needs to read (the repository, the
        Python running batchd, absolute paths on its command line and PATH) are shown read-only.
        """
        if not self.active:
            return list(argv)
        wrapped = [
            self.bwrap,
            "--ro-bind", "/", "/",
            "--dev", "/dev",
            "--proc", "/proc",
            "--tmpfs", _TMP,
            "--unshare-pid",
        ]  # fmt: skip
        # The person's session bus, agents and keyrings under /run/user: out of reach.
        if Path("/run/user").is_dir():
            wrapped += ["--tmpfs", "/run/user"]
        for path in _under_tmp([*readable, *_needed(argv)]):
            wrapped += ["--ro-bind-try", str(path), str(path)]
        # The person's credentials for other services (an agent needs none of them to change code;
        # with them it could push where it likes) and the container engines' sockets (root on the
        # host): hidden, the credentials unless listed as writable.
        for path in _credentials(self.writable):
            wrapped += ["--tmpfs", str(path)] if path.is_dir() else ["--ro-bind", str(_empty()), str(path)]
        for sock in _ENGINE_SOCKETS:
            if Path(sock).exists():
                wrapped += ["--ro-bind", str(_empty()), sock]
        wrapped += ["--bind", str(workspace), str(workspace)]
        for path in self.writable:
            wrapped += ["--bind-try", str(path), str(path)]
        # Inside a writable home, what steers later sessions (settings with hooks, commands, agent
        # instructions) stays read-only: planted there, it would run in the person's own sessions.
        for path in _readonly_in(self.writable):
            wrapped += ["--ro-bind-try", str(path), str(path)]
        # The person's node_modules and .venv, which workspaces link to (daemon.world.deps): last, so
        # no writable path above can open them.
        for path in self.readonly:
            wrapped += ["--ro-bind-try", str(path), str(path)]
        for name, value in _ENV.items():
            wrapped += ["--setenv", name, value]
        wrapped += ["--unsetenv", "SSH_AUTH_SOCK", "--unsetenv", "DBUS_SESSION_BUS_ADDRESS"]
        wrapped += ["--chdir", str(workspace), "--", *argv]
        return wrapped


# Caches go to the private /tmp: nothing a confined program writes there can poison what the
# person's own tools later read back (a pip wheel, an npm tarball).
_ENV = {"TMPDIR": _TMP, "XDG_CACHE_HOME": f"{_TMP}/.cache", "npm_config_cache": f"{_TMP}/.npm"}
_ENGINE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/crio/crio.sock",
)


CREDENTIALS = (
    ".ssh",
    ".git-credentials",
    ".netrc",
    ".config/git/credentials",
    ".config/gh",
    ".config/hub",
    ".gnupg",
    ".aws",
    ".azure",
    ".config/gcloud",
    ".docker/config.json",
    ".kube",
    ".pypirc",
)


@cache
def _empty() -> Path:
    """An empty file to put in place of a hidden one (a device node such as /dev/null cannot be
    opened where the host's /dev is mounted nodev)."""
    folder = Path(tempfile.mkdtemp(prefix="batchd-sandbox-"))
    atexit.register(shutil.rmtree, folder, True)
    empty = folder / "empty"
    empty.write_bytes(b"")
    empty.chmod(0o444)
    return empty


def _credentials(writable: Iterable[Path]) -> list[Path]:
    home = Path.home()
    listed = set(writable)
    return [home / rel for rel in CREDENTIALS if (home / rel).exists() and home / rel not in listed]


def _readonly_in(writable: Iterable[Path]) -> tuple[Path, ...]:
    return steering_paths(Path.home(), writable)


def _needed(argv: Sequence[str]) -> list[Path]:
    found = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parent]
    # batchd's own code (the demo agent is `python -m daemon.demo.agent`), also from a source tree
    # that an editable install finds by its own import hook rather than by sys.path.
    found += [Path(p) for p in sys.path if p.startswith("/")]
    found.append(Path(__file__).resolve().parents[2])
    found += [Path(a) for a in argv if a.startswith("/")]
    found += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p.startswith("/")]
    return found


def _under_tmp(paths: Iterable[Path]) -> list[Path]:
    """The paths under the host's /tmp to show in the sandbox's own: each that exists (and where a
    link leads), outermost first, none inside another (bwrap cannot mount a file over a path that
    a read-only mount already shows: a venv's ``bin/python`` link inside the venv, say)."""
    tmp = Path(_TMP)
    found: set[Path] = set()
    for path in paths:
        for candidate in (path, path.resolve()):
            if tmp in candidate.parents and candidate.exists():
                found.add(candidate)
    return [p for p in sorted(found) if not any(parent in found for parent in p.parents)]


@cache
def _probe(bwrap: str) -> str:
    """ "" when bubblewrap can build a sandbox here, else what it said (no user namespaces, say)."""
    argv = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", _TMP]
    argv += ["--unshare-pid", "--", "true"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=_PROBE_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return "" if proc.returncode == 0 else (proc.stderr.strip() or f"exit code {proc.returncode}")


def resolve(mode: SandboxMode, writable: Iterable[str], *, key: str) -> Sandbox:
    """The sandbox for ``mode`` on this machine; ``bwrap`` that cannot run is a :class:`UsageError`."""
    homes = tuple(Path(p).expanduser().absolute() for p in writable)
    if mode == "none":
        return Sandbox(kind="none", note=f'{key} = "none": programs run unconfined')
    found = shutil.which("bwrap")
    problem = _probe(found) if found else "bwrap is not installed (Debian/Ubuntu: apt install bubblewrap)"
    if not problem and found:
        return Sandbox(kind="bwrap", bwrap=found, writable=homes, note="bubblewrap")
    if mode == "bwrap":
        raise UsageError(
            f'{key} = "bwrap", but bubblewrap cannot run here: {problem}',
            hint='install bubblewrap (`apt install bubblewrap`), or set it to "auto" or "none"',
        )
    return Sandbox(kind="none", note=f"no sandbox: {problem}")
