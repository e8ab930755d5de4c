"""Repositories whose verify commands flake on purpose, for the daemon-level tests of issue 14
(``test_flake_records.py``, ``test_red_base.py``).

A tree is named by the content of its ``mods/`` (what the todos change), and scripts count their
calls per tree in files outside the repository (``{counters}``), so the same tree run twice is the
same count and copies of the repository share it. The unittest check runs the real ``unittest``
runner over ``tests/``, whose output names the failing tests.
"""

from __future__ import annotations

from pathlib import Path

from phase_repo import CHECK, PhaseRepo, build_repo

from statemachine.flakes import command_key

# The name of a tree as the checks see it: the content of its mods/ (what the todos change).
TREE_ID = """\
import hashlib, pathlib

def tree_id():
    h = hashlib.sha256()
    for p in sorted(pathlib.Path("mods").glob("*.py")):
        h.update(p.name.encode() + b"\\0" + p.read_bytes() + b"\\0")
    return h.hexdigest()[:16]

def call_number(counters, name):
    \"\"\"How many times ``name`` ran on this tree before (0 on the first call).\"\"\"
    path = pathlib.Path(counters) / f"{name}-{tree_id()}"
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    return n
"""

# The real unittest runner over tests/ (ids like test_mods.Mods.test_mods).
UNITTEST_CHECK = """\
import sys, unittest
sys.path.insert(0, ".")
program = unittest.main(module=None, argv=["check", "discover", "-s", "tests"], exit=False)
sys.exit(0 if program.result.wasSuccessful() else 1)
"""

TEST_MODS = """\
import importlib, pathlib, sys, unittest
sys.path.insert(0, "mods")

class Mods(unittest.TestCase):
    def test_mods(self):
        broken = [p.stem for p in sorted(pathlib.Path("mods").glob("*.py"))
                  if importlib.import_module(p.stem).check() is False]
        self.assertEqual(broken, [])
"""

# A test that fails on the base's first call (a flake the baseline sees) and always once mods/m1.py
# exists: todo 1 breaks a test that was already red on the base.
TEST_FRAGILE = """\
import os, unittest
from treeid import call_number

class Fragile(unittest.TestCase):
    def test_fragile(self):
        first = call_number({counters!r}, "fragile") == 0
        self.assertFalse(first or os.path.exists("mods/m1.py"), "fragile")
"""

KEY = command_key(CHECK)  # the verify command as batchd spells it (phase_repo's argv in batchd.toml)
MODS_TEST_ID = "test_mods.Mods.test_mods"
FRAGILE_TEST_ID = "test_fragile.Fragile.test_fragile"


def flaky_repo(
    tmp: Path,
    todos: dict[str, str],
    checks: dict[str, str],
    *,
    verify: str = "retries = 5",
    max_parallel: int = 3,
) -> PhaseRepo:
    """A repository whose check.py (and tests) are ``checks``, with ``{counters}`` filled in, and
    ``verify`` in place of the default ``retries = 0``."""
    counters = tmp / "counters"
    counters.mkdir()
    files = {
        "treeid.py": TREE_ID,
        **{rel: text.format(counters=str(counters)) for rel, text in checks.items()},
    }
    repo = build_repo(
        tmp,
        todos,
        files=files,
        max_parallel=max_parallel,
        max_attempts=1,
        verify_writable=(str(counters),),
        agent_extra='sandbox = "none"',
    )
    config = repo.root / "batchd.toml"
    config.write_text(config.read_text(encoding="utf-8").replace("retries = 0", verify), encoding="utf-8")
    repo.git("commit", "-q", "-am", "verify settings")
    repo.git("push", "-q", "origin", "main")
    return repo


def run_cli(repo: PhaseRepo) -> int:
    done = repo.run_cli(timeout=120)
    assert done.returncode in (0, 1), done.stdout[-3000:] + done.stderr[-3000:]
    return done.returncode
