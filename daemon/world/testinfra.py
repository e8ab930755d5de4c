"""What decides how a repository's tests run, as gitignore-style patterns.

An agent that cannot make the tests pass can make them not run: a ``conftest.py`` that skips
everything, ``addopts = --deselect ...`` in ``setup.cfg``, a ``test`` target that is ``true``. So a
change to any of these counts as a test edit for the test-integrity gate (:mod:`daemon.world.verify`),
and commits on the remote that change them are not pushed on (:mod:`daemon.world.remote`).

Besides the usual test configuration files, the verify commands say which files matter: the script
an interpreter runs (``python check.py``, ``bash scripts/test.sh``, ``./run-tests``), and the file a
runner reads its commands from (``npm test`` reads ``package.json``, ``make test`` the
``Makefile``). Files a runner takes as *tests to run* (``pytest lib.py``) are not counted: editing
them is the work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from daemon.config import TEST_INFRA

__all__ = ["patterns"]

_INTERPRETERS = ("python", "python3", "node", "bash", "sh", "zsh", "ruby", "perl", "deno", "bun", "php")
# Runner -> the files it reads its commands and options from (anchored at the repository root).
_RUNNER_FILES: dict[str, tuple[str, ...]] = {
    "npm": ("/package.json",),
    "yarn": ("/package.json",),
    "pnpm": ("/package.json",),
    "npx": ("/package.json",),
    "make": ("/Makefile", "/GNUmakefile", "/makefile"),
    "just": ("/justfile", "/Justfile", "/.justfile"),
    "tox": ("/tox.ini", "/pyproject.toml", "/setup.cfg"),
    "nox": ("/noxfile.py",),
    "pytest": ("/pytest.ini", "/pyproject.toml", "/setup.cfg", "/tox.ini"),
}


def _runner(argv: Sequence[str]) -> str:
    """The runner a command starts: its program, or the module after ``python -m``."""
    name = PurePosixPath(argv[0]).name
    if name.startswith("python") and "-m" in argv[1:]:
        i = argv.index("-m", 1)
        return argv[i + 1] if i + 1 < len(argv) else name
    return name


def _script(root: Path, argv: Sequence[str]) -> str | None:
    """The repository file a command runs as a program, when it runs one."""
    candidates = [argv[0]]
    if (
        PurePosixPath(argv[0]).name.startswith(_INTERPRETERS)
        and "-m" not in argv[1:]
        and "-c" not in argv[1:]
    ):
        candidates += [a for a in argv[1:] if not a.startswith("-")][:1]
    for arg in candidates:
        path = Path(arg)
        if not path.is_absolute() and ".." not in path.parts and (root / path).is_file():
            return "/" + path.as_posix().removeprefix("./")
    return None


def patterns(root: Path, commands: Sequence[Sequence[str]]) -> tuple[str, ...]:
    """The test infrastructure of ``root`` for these verify commands (gitignore-style patterns)."""
    found: list[str] = list(TEST_INFRA)
    for argv in commands:
        if not argv:
            continue
        script = _script(root, argv)
        if script is not None:
            found.append(script)
        found.extend(_RUNNER_FILES.get(_runner(argv), ()))
    return tuple(dict.fromkeys(found))
