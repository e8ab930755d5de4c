"""daemon.world.testinfra: which files decide how the tests run, from the verify commands."""

from __future__ import annotations

from pathlib import Path

from daemon.config import path_patterns
from daemon.world.testinfra import patterns


def matches(root: Path, commands: list[list[str]], path: str) -> bool:
    return path_patterns(list(patterns(root, commands))).match_file(path)


def test_the_script_an_interpreter_runs_is_test_infrastructure(tmp_path: Path) -> None:
    """`python -B check.py`, `bash scripts/test.sh`, `./run-tests`: editing those is editing the tests."""
    for rel in ("check.py", "scripts/test.sh", "run-tests"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    assert matches(tmp_path, [["python", "-B", "check.py"]], "check.py")
    assert matches(tmp_path, [["bash", "scripts/test.sh"]], "scripts/test.sh")
    assert matches(tmp_path, [["./run-tests"]], "run-tests")


def test_files_a_runner_takes_as_tests_to_run_are_not(tmp_path: Path) -> None:
    """`pytest --doctest-modules lib.py`: lib.py is code under test, its edits are the work."""
    (tmp_path / "lib.py").write_text("x\n")
    assert not matches(tmp_path, [["pytest", "--doctest-modules", "lib.py", "tests"]], "lib.py")
    assert matches(tmp_path, [["pytest", "--doctest-modules", "lib.py"]], "setup.cfg")


def test_a_runner_s_own_configuration_is(tmp_path: Path) -> None:
    """npm test reads package.json's scripts, make test the Makefile, python -m pytest pyproject.toml."""
    assert matches(tmp_path, [["npm", "test"]], "package.json")
    assert matches(tmp_path, [["make", "test"]], "Makefile")
    assert matches(tmp_path, [["python", "-m", "pytest"]], "pyproject.toml")
    assert not matches(tmp_path, [["npm", "test"]], "src/package.json")


def test_the_usual_test_configuration_anywhere(tmp_path: Path) -> None:
    """A conftest.py or pytest.ini in any folder counts, whatever the command."""
    assert matches(tmp_path, [["true"]], "src/deep/conftest.py")
    assert matches(tmp_path, [["true"]], "pytest.ini")
