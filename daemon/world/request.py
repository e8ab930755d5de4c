"""``[batchd] open_request``: the command that opens a pull request for a run branch (``gh pr create``).

It is an argv list with placeholders (``{branch}`` ``{base}`` ``{title}`` ``{body_file}``, checked when
the config is loaded), filled in element by element, never through a shell: the title comes from a
todo's text. It runs in the repository with no input and a time limit; whatever goes wrong (exit
code, not found, timeout) is a :class:`RequestResult` with the reason, never an exception: a request
that could not be opened is a warning, the run and its commits are not affected.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from daemon.config import REQUEST_PLACEHOLDERS
from daemon.exceptions import printable
from daemon.world.agents import DAEMON_ONLY_ENV, substitute

TIMEOUT = 120.0  # seconds: `gh pr create` talks to a server, it does not build anything
OUTPUT_CAP = 4000  # characters of the command's output kept in the log
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$", re.IGNORECASE)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestResult:
    ok: bool
    url: str = ""
    reason: str = ""
    output: str = ""


def build_argv(template: Sequence[str], values: Mapping[str, str]) -> tuple[str, ...]:
    """The command with each placeholder replaced inside its element; each element stays one argument."""
    assert set(values) == set(REQUEST_PLACEHOLDERS)
    return tuple(substitute(element, values) for element in template)


def last_url(text: str) -> str:
    """The last line of ``text`` that is a URL and nothing else ("" when there is none)."""
    for line in reversed(text.splitlines()):
        if _URL.match(line.strip()):
            return line.strip()
    return ""


def run_request(argv: Sequence[str], *, cwd: Path, timeout: float = TIMEOUT) -> RequestResult:
    """Run the request command; its URL is the last URL line of its standard output."""
    try:
        proc = subprocess.run(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
            # The daemon's own (systemd's socket, the crash switches) are not the command's.
            env={k: v for k, v in os.environ.items() if k not in DAEMON_ONLY_ENV},
        )
    except FileNotFoundError:
        return RequestResult(ok=False, reason=f"{argv[0]!r} was not found (is it installed and on PATH?)")
    except PermissionError:
        return RequestResult(ok=False, reason=f"{argv[0]!r} cannot be run (not executable)")
    except subprocess.TimeoutExpired as e:
        partial = e.stdout if isinstance(e.stdout, str) else ""
        return RequestResult(
            ok=False, reason=f"it did not finish in {timeout:.0f}s", output=printable(partial)[-OUTPUT_CAP:]
        )
    output = printable(proc.stdout + proc.stderr).strip()[-OUTPUT_CAP:]
    if proc.returncode != 0:
        last = output.splitlines()[-1] if output else ""
        reason = f"exit code {proc.returncode}" + (f": {last}" if last else "")
        return RequestResult(ok=False, reason=reason, output=output)
    return RequestResult(ok=True, url=last_url(printable(proc.stdout)), output=output)
