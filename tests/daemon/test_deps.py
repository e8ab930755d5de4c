"""Workspaces get the person's installed dependencies (daemon.world.deps): a repository whose checkout
has a git-ignored ``node_modules`` and ``.venv`` runs its agents and checks with them and no config,
nothing written through a workspace reaches them (in the sandbox), and they never enter a change.
Each whole-run test is a real ``batchd run --once`` on a real repository with a bare remote."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from gitrepo import CHECK_PY, git, init_repo
from phase_repo import PY, PhaseRepo, build_repo

from daemon.world import agentspace, deps, sandbox
from daemon.world.checks import CheckRunner
from daemon.world.collect import Policy, collect
from daemon.world.sandbox import _probe

BWRAP = shutil.which("bwrap")
needs_bwrap = pytest.mark.skipif(
    BWRAP is None or bool(_probe(BWRAP)), reason="bubblewrap cannot run here (CI installs it)"
)
NONE = 'sandbox = "none"'
IGNORE = "node_modules/\n.venv/\n"  # folder-only patterns: they do not match a link named .venv
PACKAGE = "module.exports = 42;\n"

# The repository's check needs both: a package file and the virtual environment's own python.
DEPS_CHECK = (
    textwrap.dedent(
        """
        import pathlib, subprocess, sys
        assert pathlib.Path("node_modules/x/index.js").read_text() == "module.exports = 42;\\n", "no x"
        in_venv = "import sys; assert sys.prefix != sys.base_prefix"
        subprocess.run([".venv/bin/python", "-c", in_venv], check=True)
        """
    ).lstrip()
    + CHECK_PY
)
# An agent that needs them too: it reads the package and runs the venv's python, then does its work.
NEEDY_AGENT = [
    PY,
    "-c",
    textwrap.dedent(
        """
        import os, pathlib, subprocess
        value = pathlib.Path("node_modules/x/index.js").read_text()
        subprocess.run([".venv/bin/python", "-c", "pass"], check=True)
        pathlib.Path("mods", "m" + os.environ["BATCHD_TODO_ID"] + ".py").write_text(
            "def check():\\n    return " + repr(value) + " == 'module.exports = 42;\\\\n'\\n"
        )
        """
    ),
]


def install_deps(root: Path) -> None:
    """What `npm install` and `python -m venv` leave in a checkout: a tiny package and a venv."""
    package = root / "node_modules" / "x"
    package.mkdir(parents=True)
    (package / "index.js").write_text(PACKAGE)
    (root / "node_modules" / ".bin").mkdir()
    (root / "node_modules" / ".bin" / "x").symlink_to("../x/index.js")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")], check=True)


def fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    """Every entry under the person's node_modules and .venv: mode and content (or link target)."""
    found: dict[str, tuple[int, str]] = {}
    for top in ("node_modules", ".venv"):
        for folder, dirs, files in os.walk(root / top):
            for name in (*dirs, *files):
                path = Path(folder) / name
                st = path.lstat()
                if path.is_symlink():
                    what = os.readlink(path)
                elif path.is_file():
                    what = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    what = "dir"
                found[str(path.relative_to(root))] = (st.st_mode, what)
    return found


def deps_repo(tmp_path: Path, *, sandbox: str = "", **config: object) -> PhaseRepo:
    files = {"check.py": DEPS_CHECK, ".gitignore": IGNORE}
    files.update(config.pop("files", {}))  # type: ignore[call-overload]
    config.setdefault("agent_extra", sandbox)
    config.setdefault("verify_extra", sandbox)
    todos = config.pop("todos", None)
    if todos is None and "hostile" not in config:
        config.setdefault("agent", NEEDY_AGENT)
        todos = {"1": "", "2": ""}
    repo = build_repo(tmp_path, todos or {}, files=files, **config)  # type: ignore[arg-type]
    install_deps(repo.root)
    return repo


def payloads(repo: PhaseRepo, type_: str) -> list[dict[str, object]]:
    return [dict(e.payload) for e in repo.events(type_)]


def all_paths(repo: PhaseRepo, rev: str = "main") -> list[str]:
    return repo.git("ls-tree", "-r", "--name-only", rev).splitlines()


# --- placing them ---------------------------------------------------------------------------------


def test_a_workspace_gets_a_folder_of_links_and_a_venv_link(tmp_path: Path) -> None:
    """node_modules becomes the workspace's own folder with one link per entry; .venv one link."""
    root, ws = tmp_path / "repo", tmp_path / "ws"
    root.mkdir()
    ws.mkdir()
    install_deps(root)
    assert deps.place(root, ws) == ("node_modules", ".venv")
    modules = ws / "node_modules"
    assert modules.is_dir() and not modules.is_symlink()
    assert sorted(p.name for p in modules.iterdir()) == [".bin", "x"]
    assert (modules / "x").readlink() == root / "node_modules" / "x"
    assert (modules / ".bin" / "x").read_text() == PACKAGE  # relative links inside still resolve
    assert (ws / ".venv").readlink() == root / ".venv"


def test_nothing_is_placed_over_what_the_workspace_has_or_when_the_checkout_has_none(tmp_path: Path) -> None:
    """A name the tree tracks (or a set-up command made) stays; a checkout without them gives nothing."""
    root, ws = tmp_path / "repo", tmp_path / "ws"
    root.mkdir()
    (ws / "node_modules").mkdir(parents=True)
    assert deps.place(root, ws) == ()
    install_deps(root)
    assert deps.place(root, ws) == (".venv",)
    assert list((ws / "node_modules").iterdir()) == []
    assert deps.place(root, ws) == ()  # a second time: nothing new


# --- whole runs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sandbox", [pytest.param("", marks=needs_bwrap, id="bwrap"), pytest.param(NONE, id="none")]
)
def test_agents_and_checks_use_the_installed_dependencies_with_no_config(
    tmp_path: Path, sandbox: str
) -> None:
    """Agents that read node_modules and run the .venv's python, and checks that need both, pass; the
    phase commit and the branch hold no node_modules or .venv."""
    repo = deps_repo(tmp_path, sandbox=sandbox)
    before = fingerprint(repo.root)
    assert repo.run() == 0
    assert [p["todo_id"] for p in payloads(repo, "todo.accepted")] == ["1", "2"]
    assert payloads(repo, "todo.agent_failed") == []
    paths = all_paths(repo)
    assert {"mods/m1.py", "mods/m2.py"} <= set(paths)
    assert not [p for p in paths if p.split("/")[0] in ("node_modules", ".venv")]
    assert fingerprint(repo.root) == before


def test_an_agent_that_commits_everything_commits_no_dependency_link(tmp_path: Path) -> None:
    """`git add -A && git commit` in the workspace (the .venv link is not matched by `.venv/`): the
    agent's own commit holds the link, yet the collected change and the phase commit do not."""
    repo = deps_repo(tmp_path, sandbox=NONE, hostile={"1": ["commit everything"]})
    assert repo.run() == 0
    finished = payloads(repo, "todo.agent_finished")[0]
    assert sorted(finished["files"]) == ["mods/m1.py", "reports/1.txt"]  # type: ignore[call-overload]
    assert finished["dropped"] == []
    assert not [p for p in all_paths(repo) if p.split("/")[0] in ("node_modules", ".venv")]


def test_collect_leaves_out_the_links_an_agent_committed(tmp_path: Path) -> None:
    """The one door: whatever the agent's index and commits say, node_modules and .venv are not in the
    change, with no ignore rule for them at all; a file of its own beside them is."""
    root = init_repo(tmp_path / "repo", {"README.md": "hi\n"})
    install_deps(root)
    base = git(root, "rev-parse", "HEAD")
    ws = agentspace.create(
        root, root / ".batchd" / "workspaces" / "todo-1", branch="b", base_sha=base, files={}
    )
    deps.place(root, ws)
    (ws / "node_modules" / ".cache").mkdir()  # a tool's cache: the workspace's own folder
    (ws / "node_modules" / ".cache" / "c").write_text("cached\n")
    (ws / "feature.py").write_text("X = 1\n")
    git(ws, "add", "-A", "--force")
    git(ws, "commit", "-q", "-m", "everything")
    assert ".venv" in git(ws, "ls-tree", "--name-only", "HEAD").splitlines()  # the trap is set
    policy = Policy(
        protected={".batchd/": "batchd's own folder"}, own_todo="t.md", own_todo_text=b"", todos_dir="todos"
    )
    collected = collect(root, ws, base, message="m", trailers={}, branch="batchd/t", policy=policy)
    assert collected.change is not None
    assert collected.change.files == ("feature.py",)
    assert collected.dropped == ()


@needs_bwrap
def test_a_hostile_agent_cannot_change_the_persons_dependencies(tmp_path: Path) -> None:
    """In the sandbox, writing, appending, adding and deleting through the workspace's links (and at the
    real paths) all fail; the person's node_modules and .venv are byte for byte as they were."""
    attacks = [
        "write node_modules/x/index.js evil",
        "append node_modules/x/index.js evil",
        "write node_modules/x/planted.js evil",
        "delete node_modules/x/index.js",
        "write .venv/pyvenv.cfg evil",
        "write .venv/bin/planted evil",
        "write {root}/node_modules/x/index.js evil",
        "write {root}/.venv/pyvenv.cfg evil",
    ]
    repo = deps_repo(tmp_path, hostile={"1": attacks})
    before = fingerprint(repo.root)
    assert repo.run() == 0
    report = repo.git("show", "main:reports/1.txt").splitlines()
    assert len(report) == len(attacks)
    assert all(": failed:" in line for line in report), report
    assert fingerprint(repo.root) == before
    assert not [p for p in all_paths(repo) if p.split("/")[0] in ("node_modules", ".venv")]


@needs_bwrap
def test_checks_running_an_agents_code_cannot_change_the_persons_dependencies(tmp_path: Path) -> None:
    """A module whose check() rewrites node_modules and the venv runs in verification: the writes fail
    there, the person's files stay as they were."""
    evil = (
        "import pathlib\n\ndef check():\n"
        "    for p in ('node_modules/x/index.js', '.venv/pyvenv.cfg'):\n"
        "        try:\n            pathlib.Path(p).write_text('evil')\n"
        "        except OSError:\n            pass\n    return True\n"
    )
    repo = deps_repo(tmp_path, todos={"1": f"write: [{{path: mods/m1.py, content: {json.dumps(evil)}}}]"})
    before = fingerprint(repo.root)
    assert repo.run() == 0
    assert [p["todo_id"] for p in payloads(repo, "todo.accepted")] == ["1"]
    assert fingerprint(repo.root) == before


@needs_bwrap
def test_the_dependencies_stay_read_only_even_inside_a_writable_path(tmp_path: Path) -> None:
    """[verify] writable naming a folder that holds the checkout opens the checkout, not its
    node_modules and .venv: they are bound read-only last."""
    root, ws = tmp_path / "repo", tmp_path / "repo" / ".batchd" / "verify"
    ws.mkdir(parents=True)
    install_deps(root)
    box = dataclasses.replace(
        sandbox.resolve("bwrap", [str(tmp_path)], key="[verify] sandbox"), readonly=deps.protected(root)
    )
    code = textwrap.dedent(
        f"""
        import pathlib
        pathlib.Path({str(root / "elsewhere.txt")!r}).write_text("writable")
        for p in ({str(root / "node_modules" / "x" / "index.js")!r}, {str(root / ".venv" / "pyvenv.cfg")!r}):
            try:
                pathlib.Path(p).write_text("evil")
            except OSError as e:
                print("refused", e.errno)
        """
    )
    done = subprocess.run(
        box.wrap([PY, "-c", code], workspace=ws, readable=[root]), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["refused 30", "refused 30"]  # EROFS
    assert (root / "elsewhere.txt").read_text() == "writable"
    assert (root / "node_modules" / "x" / "index.js").read_text() == PACKAGE


# --- the person's own code among the dependencies: the workspace's copy is what gets tested ------


def editable_venv(root: Path, *, finder: bool) -> Path:
    """A venv with ``pip install -e .`` of ``root/src/calc`` in one of its two forms: a ``.pth`` line
    (hatchling, old setuptools) or setuptools' ``__editable__`` finder with its MAPPING."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / ".venv")], check=True)
    (site,) = (root / ".venv" / "lib").glob("python*/site-packages")
    if finder:
        (site / "__editable___calc_0_1_finder.py").write_text(
            f"import sys\nMAPPING: dict[str, str] = {{'calc': {str(root / 'src' / 'calc')!r}}}\n"
            "NAMESPACES = {}\n"
        )
    else:
        (site / "_calc.pth").write_text(f"{root / 'src'}\n")
    return site


@pytest.mark.parametrize("finder", [False, True], ids=["pth", "finder"])
def test_an_editable_install_of_the_checkout_is_shadowed_by_the_workspace_copy(
    tmp_path: Path, finder: bool
) -> None:
    """Its path into the checkout is redirected to the workspace's copy, first on PYTHONPATH; paths
    outside the checkout (another project) are left to the venv."""
    root = tmp_path / "repo"
    root.mkdir()
    site = editable_venv(root, finder=finder)
    (site / "other.pth").write_text(f"{tmp_path / 'elsewhere'}\n# a comment\nimport os\n")
    workspace = tmp_path / "ws"
    assert deps.python_paths(root, workspace) == (str(workspace / "src"),)
    env = deps.with_python_paths({"PYTHONPATH": "/x"}, root, workspace)
    assert env["PYTHONPATH"] == os.pathsep.join([str(workspace / "src"), "/x"])


def test_a_check_imports_the_workspaces_code_not_the_persons_editable_install(tmp_path: Path) -> None:
    """`pip install -e .` in the person's venv points at their `src/`; a check of a workspace whose
    change makes VALUE 2 must see 2 (seeing the person's 1 would be a false verdict)."""
    root = tmp_path / "repo"
    (root / "src" / "calc").mkdir(parents=True)
    (root / "src" / "calc" / "__init__.py").write_text("VALUE = 1\n")
    editable_venv(root, finder=False)
    worktree = tmp_path / "wt"
    (worktree / "src" / "calc").mkdir(parents=True)
    (worktree / "src" / "calc" / "__init__.py").write_text("VALUE = 2\n")
    check = [".venv/bin/python", "-c", "import calc, sys; sys.exit(0 if calc.VALUE == 2 else 1)"]
    result = CheckRunner([check], timeout=30, dependencies_from=root).run(worktree)
    assert result.passed, result.output


def test_a_monorepo_workspace_package_leads_to_the_workspaces_own_folder(tmp_path: Path) -> None:
    """`node_modules/@team/lib -> ../../packages/lib` (npm/yarn/pnpm workspaces) is the person's own
    code: in a workspace it leads to the workspace's `packages/lib`; a real package beside it in the
    same scope still leads to the person's installed one."""
    root = tmp_path / "repo"
    (root / "packages" / "lib").mkdir(parents=True)
    scope = root / "node_modules" / "@team"
    scope.mkdir(parents=True)
    (scope / "lib").symlink_to("../../packages/lib")
    (scope / "ui").mkdir()
    workspace = tmp_path / "ws"
    (workspace / "packages" / "lib").mkdir(parents=True)
    assert deps.place(root, workspace) == ("node_modules",)
    placed = workspace / "node_modules" / "@team"
    assert (placed / "lib").resolve() == (workspace / "packages" / "lib").resolve()
    assert (placed / "ui").resolve() == (scope / "ui").resolve()
