"""An agent's change, collected from its workspace's files into the person's repository as one commit.

This is the one door through which an agent's work enters batchd. Nothing of the agent's repository
is trusted but the names of files (see :mod:`daemon.world.agentspace`): the tree is built from the
workspace's files with the *person's* git directory, a throwaway index and batchd's own rules, so
the agent's config, hooks, attributes drivers and refs play no part. Then the policy applies:

- what an agent may not change is put back as it was on the base and reported: ``batchd.toml``,
  the plan and the prompt file, the todos folder (its own todo file included: a work-log section it
  appended is carried over by the phase commit), the status file, ``.batchd/``, symbolic links that
  point out of the repository, and embedded repositories that would be gitlinks without files (an
  embedded repository's files are committed as files instead);
- a change whose history no longer descends from its base (``reset --hard``, a rebase, another
  checkout) fails, as does one larger than ``max_change_bytes`` or one that deletes files under
  ``[agent] protect``;
- deleting or reverting what earlier todos of the run added is flagged for review, and edits to
  existing test files are listed for the test-integrity check of :mod:`daemon.world.verify`.

File names are kept as git gives them (undecodable bytes as surrogate escapes) until they leave this
module, where :func:`daemon.exceptions.printable` escapes them.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog

from daemon.config import path_patterns
from daemon.exceptions import BatchdError, printable
from daemon.intake.todofile import MAX_TODO_BYTES, parse_name
from daemon.world import agentspace, deps, safefs
from daemon.world.conflictmarks import marker_file_state
from daemon.world.gitops import WorkTree, git_common_dir, out, run_git, split_z, with_trailers

log = structlog.get_logger(__name__)

NOTE_CAP = 16_384  # characters of an agent's work-log note carried into its todo file
_GITLINK, _LINK = "160000", "120000"
_NESTED_LIMIT = 100
# What a file given with conflict markers may have become that fails the attempt (conflictmarks).
_UNCHECKABLE = {
    "link": "a symbolic link (or put it inside one)",
    "unreadable": "unreadable",
}


class CollectFailed(BatchdError):
    """The agent's change cannot be accepted at all; ``reason`` is the attempt's failure code."""

    code = "collect_failed"

    def __init__(self, reason: str, message: str, *, hint: str = "") -> None:
        self.reason = reason
        super().__init__(message, hint=hint)


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """What an agent may change. Paths are repository-relative with ``/``; folders end in ``/``."""

    protected: Mapping[str, str]  # path or folder/ -> why it is batchd's (shown in the report)
    own_todo: str  # the todo file batchd wrote into the workspace
    own_todo_text: bytes  # what batchd wrote there
    todos_dir: str
    protect: Sequence[str] = ()  # [agent] protect: deleting a file under these fails the attempt
    test_globs: Sequence[str] = ()  # [verify] protect_tests: changing or deleting one is a test edit
    test_infra: Sequence[str] = ()  # how tests run (the verify commands' own files): adding one too
    max_change_bytes: int = 50 * 1024 * 1024
    earlier: Mapping[str, str] = field(default_factory=dict)  # path -> the earlier todo that changed it
    run_base: str = ""
    # Dependency folders batchd links into workspaces (daemon.world.deps): never part of a change,
    # unless the repository tracks them (then the workspace had them from git, nothing was linked).
    reused: Sequence[str] = deps.NAMES
    # Files the attempt was given with git's conflict markers (its change rebased onto a newer head):
    # a change that still has a conflict block in one of them fails, it is not verified.
    markers: Sequence[str] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """A todo's work as one commit on its base. Paths here are printable (escaped) for the records."""

    sha: str
    files: tuple[str, ...]
    dropped: tuple[str, ...] = ()  # "path (why)" put back as on the base
    warnings: tuple[str, ...] = ()  # for review: deletions and reverts of earlier work
    test_edits: tuple[str, ...] = ()  # existing test files it changed or deleted
    note: str = ""  # the work-log text it appended to its own todo file
    agent_head: str = ""
    agent_commits: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Collected:
    """``change`` is None when nothing is left once the policy applied (``dropped`` says what went)."""

    change: Change | None
    dropped: tuple[str, ...] = ()


def _under(path: str, protected: Mapping[str, str]) -> str | None:
    """Why ``path`` is batchd's (None when it is not): it is, or is inside, a protected path, or it is
    a file where a protected path's folder is (a file ``plans`` would leave no room for the status file)."""
    for key, why in protected.items():
        if (key.endswith("/") and (path + "/").startswith(key)) or path == key:
            return why
        if key.rstrip("/").startswith(path + "/"):
            return f"a file where the folder of {why} must be"
        if path.startswith(key.rstrip("/") + "/"):
            return f"inside the name of {why}"
    return None


def collect(
    root: Path,
    workspace: Path,
    base_sha: str,
    *,
    message: str,
    trailers: Mapping[str, str],
    branch: str,
    policy: Policy,
) -> Collected:
    """Squash what the agent left in ``workspace`` into ONE commit on ``base_sha`` in ``root``'s
    repository, on ``branch``; raises :class:`CollectFailed` when the attempt cannot count."""
    try:
        head = agentspace.agent_head(root, workspace)
    except agentspace.WorkspaceError as e:
        raise CollectFailed("workspace", e.message, hint=e.hint) from None
    if head != base_sha and not agentspace.descends(root, workspace, base_sha, head):
        raise CollectFailed(
            "history",
            f"the workspace no longer descends from its base {base_sha[:10]} (its HEAD is {head[:10]}): "
            "the agent ran `git reset --hard`, rebased, or checked out something else",
            hint="agents must build on the commit they were given; the attempt is not counted as work",
        )
    states = {rel: marker_file_state(workspace, rel) for rel in policy.markers}
    for state, what in _UNCHECKABLE.items():
        if found := [rel for rel, st in states.items() if st == state]:
            raise CollectFailed(
                "conflict_markers",
                f"{_listed(found)} had git's conflict markers and the attempt made it {what}, so "
                "batchd cannot check that its conflicts are resolved",
                hint="leave each such file a plain, readable file with its conflicts resolved (or "
                "delete it), in plain folders",
            )
    left = [rel for rel, state in states.items() if state == "markers"]
    if left:
        raise CollectFailed(
            "conflict_markers",
            f"the attempt left git's conflict markers in {_listed(left)}",
            hint="resolve each conflict keeping both sides' intents, and remove the "
            "`<<<<<<<`, `=======` and `>>>>>>>` lines",
        )
    made = agentspace.agent_commits(root, workspace, base_sha, head) if head != base_sha else ()
    tree = WorkTree(path=workspace, git_dir=git_common_dir(root))
    with tempfile.TemporaryDirectory(prefix="batchd-index-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        builder = _Builder(tree, base_sha, env, policy)
        builder.add_everything(agentspace.tracked_paths(root, workspace, base_sha, head))
        dropped = builder.apply_policy()
        tree_sha = out(tree, "write-tree", env=env)
        if tree_sha == out(tree, "rev-parse", f"{base_sha}^{{tree}}"):
            return Collected(change=None, dropped=tuple(dropped))
        builder.check_size()
        text = with_trailers(tree, message, trailers)
        sha = out(tree, "commit-tree", tree_sha, "-p", base_sha, "-F", "-", stdin=text)
    run_git(root, "update-ref", f"refs/heads/{branch}", sha)
    files = split_z(run_git(root, "diff", "--name-only", "-z", "--no-renames", base_sha, sha, "--").stdout)
    change = Change(
        sha=sha,
        files=tuple(sorted(printable(f) for f in files)),
        dropped=tuple(dropped),
        warnings=tuple(builder.warnings),
        test_edits=tuple(sorted(printable(p) for p in builder.test_edits)),
        note=_work_log(workspace, policy),
        agent_head=head,
        agent_commits=made,
    )
    if dropped:
        log.warning("agent_changes_dropped", workspace=str(workspace), paths=list(dropped))
    return Collected(change=change, dropped=tuple(dropped))


@dataclass(slots=True)
class _Entry:
    """One line of ``git diff-index --raw``: the base side, the new side, the status letter."""

    old_mode: str
    new_mode: str
    new_sha: str
    status: str
    path: str


class _Builder:
    def __init__(self, tree: WorkTree, base: str, env: Mapping[str, str], policy: Policy) -> None:
        self.tree = tree
        self.base = base
        self.env = dict(env)
        self.policy = policy
        self.warnings: list[str] = []
        self.test_edits: list[str] = []
        self.reused: tuple[str, ...] = ()

    def git(self, *args: str, stdin: str | None = None) -> str:
        return run_git(self.tree, "--literal-pathspecs", *args, env=self.env, stdin=stdin).stdout

    # --- building the index from the files ----------------------------------------------------

    def add_everything(self, agent_tracked: Sequence[str]) -> None:
        self.git("read-tree", self.base)
        tracked = split_z(self.git("ls-tree", "-z", "--name-only", self.base, "--", *self.policy.reused))
        self.reused = tuple(n for n in self.policy.reused if n not in tracked)
        agent_tracked = [p for p in agent_tracked if not self.is_reused(p)]
        self._refuse_huge_new_files(agent_tracked)
        with self._embedded_as_files():
            self.git("add", "--all")
        # A file the agent added or committed despite .gitignore: `add --all` skips it, -f does not.
        indexed = set(split_z(self.git("ls-files", "-z", "--cached")))
        forced = [p for p in agent_tracked if p not in indexed and _regular_or_link(self.tree.path / p)]
        for chunk in _chunks(forced, 200):
            self.git("add", "--force", "--", *chunk)
        # The linked dependencies (a `.venv` link is not matched by a `.venv/` ignore line) stay out.
        if self.reused:
            self.git("rm", "--cached", "-r", "-q", "--ignore-unmatch", "--", *self.reused)

    def is_reused(self, path: str) -> bool:
        return any(path == name or path.startswith(f"{name}/") for name in self.reused)

    def _refuse_huge_new_files(self, agent_tracked: Sequence[str]) -> None:
        """Before anything is hashed into the person's repository: new files (also those the agent
        added despite .gitignore), and tracked files that changed size, larger than allowed in all
        (a file grown to gigabytes is refused unread)."""
        total = 0
        others = split_z(self.git("ls-files", "-z", "--others", "--exclude-standard"))
        for rel in dict.fromkeys([*others, *agent_tracked]):
            if self.is_reused(rel):
                continue
            with contextlib.suppress(OSError):
                st = os.lstat(self.tree.path / rel)
                total += st.st_size if not rel.endswith("/") else 0
        for record in split_z(self.git("ls-tree", "-r", "-l", "-z", "--full-tree", self.base)):
            meta, _, rel = record.partition("\t")
            size = meta.split()[-1]
            with contextlib.suppress(OSError):
                st = os.lstat(self.tree.path / rel)
                if size.isdigit() and st.st_size != int(size):
                    total += st.st_size
        if total > self.policy.max_change_bytes:
            raise self._too_large(total)

    def _too_large(self, size: int) -> CollectFailed:
        limit = self.policy.max_change_bytes
        return CollectFailed(
            "too_large",
            f"the change is {_mib(size)}, more than [agent] max_change_bytes ({_mib(limit)})",
            hint="generated or binary files do not belong in a todo's change; raise the limit if they do",
        )

    @contextlib.contextmanager
    def _embedded_as_files(self) -> Iterator[None]:
        """A folder with its own ``.git`` would be added as a gitlink, a pointer to a commit that
        exists nowhere, and its files lost: its ``.git`` is set aside while the files are added."""
        moved: list[tuple[Path, Path]] = []
        aside = Path(tempfile.mkdtemp(prefix="batchd-nested-", dir=self.tree.path.parent))
        base_links = self._base_gitlinks()
        try:
            for _ in range(_NESTED_LIMIT):
                nested = [
                    rel.rstrip("/")
                    for rel in split_z(self.git("ls-files", "-z", "--others", "--exclude-standard"))
                    if rel.endswith("/") and rel.rstrip("/") not in base_links
                ]
                if not nested:
                    break
                for rel in nested:
                    dot_git = self.tree.path / rel / ".git"
                    target = aside / str(len(moved))
                    dot_git.rename(target)
                    moved.append((dot_git, target))
                    self.warnings.append(
                        f"{printable(rel)}/ is a repository of its own: its files were added as files"
                    )
            yield
        finally:
            for original, target in reversed(moved):
                with contextlib.suppress(OSError):
                    target.rename(original)
            with contextlib.suppress(OSError):
                aside.rmdir()

    def _base_gitlinks(self) -> set[str]:
        listing = run_git(self.tree, "ls-tree", "-r", "-z", self.base).stdout
        return {rec.split("\t", 1)[1] for rec in split_z(listing) if rec.startswith(_GITLINK)}

    # --- the policy ---------------------------------------------------------------------------

    def entries(self) -> list[_Entry]:
        raw = split_z(self.git("diff-index", "--cached", "--raw", "-z", "--no-renames", self.base))
        found = []
        for meta, path in zip(raw[0::2], raw[1::2], strict=True):
            old_mode, new_mode, _old_sha, new_sha, status = meta.lstrip(":").split()
            found.append(_Entry(old_mode, new_mode, new_sha, status[0], path))
        return found

    def apply_policy(self) -> list[str]:
        """Put back what the agent may not change; return those paths with why (printable)."""
        dropped: list[str] = []
        restore: list[str] = []
        own_touched = False
        protect = path_patterns(self.policy.protect)
        tests = path_patterns(self.policy.test_globs)
        infra = path_patterns(self.policy.test_infra)
        refused: list[str] = []
        for e in self.entries():
            why = _under(e.path, self.policy.protected)
            if why is None and e.new_mode == _GITLINK:
                raise CollectFailed(
                    "embedded",
                    f"{printable(e.path)} is an embedded repository (a gitlink) whose files could not be "
                    "added as files; committing it would lose them",
                    hint="the workspace keeps them; have the agent write plain files, not a repository",
                )
            if why is None and e.new_mode == _LINK and e.status != "D":
                target = self.git("cat-file", "blob", e.new_sha)
                if _escapes(e.path, target):
                    why = f"a symbolic link to {printable(target)}, outside the repository"
            if why is not None:
                restore.append(e.path)
                if self._batchds_own(e.path):
                    own_touched = True
                else:
                    dropped.append(f"{printable(e.path)} ({why})")
                continue
            existed = e.old_mode != "000000"
            if e.status == "D" and protect.match_file(e.path):
                refused.append(e.path)
            if (existed and e.status in "DMT" and tests.match_file(e.path)) or infra.match_file(e.path):
                self.test_edits.append(e.path)
            self._review(e)
        if refused:
            shown = ", ".join(printable(p) for p in refused[:5])
            raise CollectFailed(
                "protected",
                f"the change deletes {shown}, which [agent] protect keeps",
                hint="an agent may not delete these files; change [agent] protect if it should",
            )
        for chunk in _chunks(restore, 200):
            self.git("reset", "--quiet", self.base, "--", *chunk)
        if own_touched and not _work_log(self.tree.path, self.policy) and self._own_edited():
            dropped.append(
                f"{printable(self.policy.own_todo)} (its own todo file: batchd renames it; only a work log "
                "appended at its end is kept)"
            )
        return dropped

    def _own_edited(self) -> bool:
        files = _own_todo_files(self.tree.path, self.policy)
        return not files or any(_bounded(self.tree.path, f) != self.policy.own_todo_text for f in files)

    def _batchds_own(self, path: str) -> bool:
        """Its own todo file (where batchd put it, or renamed as the seed says): batchd renames it, and
        a work log the agent appended is carried over; whatever else happened to it is said once."""
        own = PurePosixPath(self.policy.own_todo)
        mine, name = parse_name(own.name), parse_name(PurePosixPath(path).name)
        return PurePosixPath(path).parent == own.parent and (
            path == self.policy.own_todo or (mine is not None and name is not None and name.key == mine.key)
        )

    def _review(self, e: _Entry) -> None:
        owner = self.policy.earlier.get(e.path)
        if owner is None:
            return
        if e.status == "D":
            self.warnings.append(f"deletes {printable(e.path)}, which #{owner} changed earlier in this run")
        elif self.policy.run_base and e.status == "M":
            before = run_git(
                self.tree, "rev-parse", "--verify", "--quiet", f"{self.policy.run_base}:{e.path}", check=False
            )
            if before.returncode == 0 and before.stdout.strip() == e.new_sha:
                self.warnings.append(
                    f"reverts {printable(e.path)} to what it was before the run (#{owner} changed it)"
                )

    def check_size(self) -> None:
        shas = sorted({e.new_sha for e in self.entries() if e.status != "D" and e.new_mode != _GITLINK})
        if not shas:
            return
        sizes = self.git("cat-file", "--batch-check=%(objectsize)", stdin="\n".join(shas) + "\n")
        total = sum(int(n) for n in sizes.split() if n.isdigit())
        if total > self.policy.max_change_bytes:
            raise self._too_large(total)


def _listed(paths: Sequence[str]) -> str:
    return ", ".join(printable(p) for p in paths[:5]) + (f" and {len(paths) - 5} more" * (len(paths) > 5))


def _escapes(path: str, target: str) -> bool:
    """Whether a link at ``path`` pointing at ``target`` leads out of the repository (or into ``.git``)."""
    if not target or target.startswith("/"):
        return True
    joined = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    parts = joined.split("/")
    return joined == ".." or parts[0] == ".." or ".git" in parts


def _regular_or_link(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


def _work_log(workspace: Path, policy: Policy) -> str:
    """What the agent appended to its own todo file (where it is, or renamed ``-complete-`` as the
    seed's prompt says): carried into the committed todo file. An edit that is not an addition at
    the end is not carried (it is dropped with the rest of the todos folder)."""
    placed = policy.own_todo_text
    for candidate in _own_todo_files(workspace, policy):
        data = _bounded(workspace, candidate)
        if data is None or data == placed:
            continue
        try:
            text, before = data.decode("utf-8"), placed.decode("utf-8", "replace")
        except UnicodeDecodeError:
            continue  # not text: nothing of it goes into the todo file
        body, body_before = _body(text), _body(before)
        if body.startswith(body_before) and len(body) > len(body_before):
            note = body[len(body_before) :].strip("\n")[:NOTE_CAP]
            if not any(ord(c) < 32 and c not in "\n\t\r" for c in note):
                return note
    return ""


def _bounded(workspace: Path, path: Path) -> bytes | None:
    """A todo file's bytes, None when it is gone, reached through a link anywhere on its way (an
    agent may swap a folder for a link out of its workspace), not a plain file, or larger than a
    todo file may be (never read whole)."""
    try:
        fd = safefs.open_read(workspace, path.relative_to(workspace))
    except (OSError, ValueError, safefs.LinkRefused):
        return None
    if fd is None:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MAX_TODO_BYTES + 1)
    finally:
        os.close(fd)
    return None if len(data) > MAX_TODO_BYTES else data


def _own_todo_files(workspace: Path, policy: Policy) -> list[Path]:
    own = workspace / policy.own_todo
    found = [own] if own.is_file() and not own.is_symlink() else []
    mine = parse_name(own.name)
    folder = workspace / policy.todos_dir
    if mine is not None and folder.is_dir() and not folder.is_symlink():
        for entry in sorted(folder.iterdir()):
            name = parse_name(entry.name)
            if (
                entry != own
                and name is not None
                and name.key == mine.key
                and entry.is_file()
                and not entry.is_symlink()
            ):
                found.append(entry)
    return found


def _body(text: str) -> str:
    """The text after the front matter (agents often flip ``status:`` there as well)."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return text[end + 5 :]
    return text
