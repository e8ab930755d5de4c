"""Applying a todo's commit onto the green head, keeping both sides where both only added lines.

Three todos that each append a function to the same module all insert at one place, the end of
the file: git's 3-way merge calls the second and third a conflict although neither change touches
a line of the other. For ``[verify] conflicts = "merge"`` such a conflict is resolved here, the
way a person would: the green head's lines first, then the todo's. Only that case is resolved:

- every unmerged file is a plain text file (no links, submodules or NUL bytes; ``merge`` not
  turned off in ``.gitattributes``), present on both sides at the same path (a rename or a
  modify/delete is left alone), with no conflict on its mode;
- every conflict hunk of ``git merge-file --diff3`` has an empty base side: both sides inserted
  lines at the same place and neither changed a line that was there. A new file added on both
  sides (add/add, no base) keeps the lines both start and end with once, and both middles.

Anything else is aborted, HEAD left as it was (the caller records the todo as conflicted). A
resolved pick is a candidate like any other: it is accepted only if the checks pass on it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from daemon.exceptions import GitError, printable
from daemon.world.gitops import FILE_MODES, GitTarget, abort_in_progress, read_blob, run_git, split_z

log = structlog.get_logger(__name__)

# Long markers with labels: a line of the inputs that could be read as one makes the file
# unresolvable (see _has_marker_lines) rather than misread.
_MARKER_SIZE = 40
_OURS = b"<" * _MARKER_SIZE + b" ours"
_BASE = b"|" * _MARKER_SIZE + b" base"
_SPLIT = b"=" * _MARKER_SIZE
_THEIRS = b">" * _MARKER_SIZE + b" theirs"
_MARKER_STARTS = (b"<" * _MARKER_SIZE, b"|" * _MARKER_SIZE, b"=" * _MARKER_SIZE, b">" * _MARKER_SIZE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Picked:
    """How a commit went onto the head: ``applied`` (a new commit is HEAD), the files that conflicted
    (printable, as git lists them), and whether batchd resolved them keeping both sides."""

    applied: bool
    conflicts: tuple[str, ...] = ()
    resolved: bool = False


def cherry_pick(worktree: GitTarget, sha: str, *, keep_both: bool, what: str = "") -> Picked:
    """Cherry-pick ``sha`` onto HEAD; on a textual conflict resolve it keeping both sides (when
    ``keep_both`` and every hunk is insert/insert) or abort, leaving HEAD as it was.

    Raises :class:`GitError` when the pick fails with nothing unmerged (a missing commit);
    ``what`` names the commit in its message.
    """
    proc = run_git(
        worktree,
        "-c", "rerere.enabled=false",
        "cherry-pick", "--keep-redundant-commits", sha,
        check=False,
    )  # fmt: skip
    if proc.returncode == 0:
        return Picked(applied=True)
    listing = run_git(worktree, "diff", "--name-only", "-z", "--diff-filter=U").stdout
    unmerged = split_z(listing)
    if not unmerged:
        abort_in_progress(worktree)
        raise GitError(
            f"cannot cherry-pick {what or 'commit ' + sha[:12]}",
            command=["git", "cherry-pick", sha],
            output=proc.stdout + proc.stderr,
            hint="check that the commit exists in this repository",
        )
    shown = tuple(printable(f) for f in unmerged)
    if keep_both and _resolve(worktree, sha, unmerged):
        log.info("conflict_resolved_keeping_both", commit=sha, files=list(shown))
        return Picked(applied=True, conflicts=shown, resolved=True)
    abort_in_progress(worktree)
    return Picked(applied=False, conflicts=shown)


def _resolve(worktree: GitTarget, sha: str, paths: list[str]) -> bool:
    """Resolve every unmerged path keeping both sides and commit with ``sha``'s message and author;
    False (nothing committed) when one of them is not an insert/insert conflict."""
    try:
        merged = _merge_all(worktree, sha, paths)
        if merged is None:
            return False
        with tempfile.TemporaryDirectory(prefix="batchd-keepboth-") as tmp:
            for i, (path, (mode, data)) in enumerate(merged.items()):
                blob_file = Path(tmp) / f"{i}.blob"
                blob_file.write_bytes(data)
                blob = run_git(worktree, "hash-object", "-w", "--no-filters", "--", str(blob_file))
                # The three-argument form: a path holding a comma stays one path.
                run_git(worktree, "update-index", "--cacheinfo", mode, blob.stdout.strip(), path)
        run_git(worktree, "checkout-index", "-f", "-z", "--stdin", stdin="".join(f"{p}\0" for p in merged))
        run_git(
            worktree,
            "commit", "--quiet", "--no-verify", "--allow-empty", "--cleanup=verbatim", "-C", sha,
        )  # fmt: skip
    except (GitError, OSError, ValueError) as exc:  # one that cannot be made is just a conflict
        log.warning("keep_both_failed", commit=sha, error=str(exc))
        return False
    return True


def _merge_all(worktree: GitTarget, sha: str, paths: list[str]) -> dict[str, tuple[str, bytes]] | None:
    """Each path's resolved (mode, bytes), or None when any path cannot be resolved keeping both."""
    stages = unmerged_stages(worktree)
    if set(stages) != set(paths):
        return None
    trees = {1: _entries(worktree, f"{sha}^", paths), 2: _entries(worktree, "HEAD", paths)}
    trees[3] = _entries(worktree, sha, paths)
    attrs = _merge_attributes(worktree, paths)
    merged: dict[str, tuple[str, bytes]] = {}
    for path in paths:
        entry = stages[path]
        # Each stage must be the file at this very path in its commit: otherwise git matched a
        # rename, which keep-both does not resolve.
        if 2 not in entry or 3 not in entry or any(entry.get(n) != trees[n].get(path) for n in (1, 2, 3)):
            return None
        if attrs.get(path, "unspecified") not in ("unspecified", "set"):
            return None
        mode = _mode(*(entry[n][0] if n in entry else None for n in (1, 2, 3)))
        if mode is None:
            return None
        base = read_blob(worktree, entry[1][1]) if 1 in entry else None
        ours, theirs = read_blob(worktree, entry[2][1]), read_blob(worktree, entry[3][1])
        data = keep_both_bytes(worktree, base, ours, theirs)
        if data is None:
            return None
        merged[path] = (mode, data)
    return merged


def unmerged_stages(worktree: GitTarget) -> dict[str, dict[int, tuple[str, str]]]:
    """path -> stage (1 base, 2 ours, 3 theirs) -> (mode, blob sha), from the index."""
    found: dict[str, dict[int, tuple[str, str]]] = {}
    for record in split_z(run_git(worktree, "ls-files", "-u", "-z").stdout):
        meta, _, path = record.partition("\t")
        mode, blob, stage = meta.split()
        found.setdefault(path, {})[int(stage)] = (mode, blob)
    return found


def _entries(worktree: GitTarget, rev: str, paths: list[str]) -> dict[str, tuple[str, str]]:
    """path -> (mode, sha) in ``rev`` for those of ``paths`` it has (exact paths, no patterns)."""
    listing = run_git(worktree, "--literal-pathspecs", "ls-tree", "-r", "-z", rev, "--", *paths).stdout
    wanted = set(paths)
    found: dict[str, tuple[str, str]] = {}
    for record in split_z(listing):
        meta, _, path = record.partition("\t")
        mode, _kind, sha = meta.split()
        if path in wanted:
            found[path] = (mode, sha)
    return found


def _merge_attributes(worktree: GitTarget, paths: list[str]) -> dict[str, str]:
    """The ``merge`` attribute of each path: "unset" (``binary``, ``-merge``) or a custom driver's
    name means the project does not want a line merge of it."""
    proc = run_git(worktree, "check-attr", "-z", "merge", "--", *paths, check=False)
    fields = proc.stdout.split("\0")
    return {fields[i]: fields[i + 2] for i in range(0, len(fields) - 2, 3)}


def _mode(base: str | None, ours: str | None, theirs: str | None) -> str | None:
    """The merged file mode by the 3-way rule, or None (not a plain file, or both changed it)."""
    if ours not in FILE_MODES or theirs not in FILE_MODES:
        return None
    if theirs in (ours, base):
        return ours
    return theirs if ours == base else None


def keep_both_bytes(where: GitTarget, base: bytes | None, ours: bytes, theirs: bytes) -> bytes | None:
    """``ours`` and ``theirs`` merged with every conflict hunk kept as ours' lines then theirs', when
    every hunk is insert/insert; None otherwise (or for binary or marker-like content)."""
    texts = (ours, theirs) if base is None else (base, ours, theirs)
    if any(b"\0" in t or (t and not t.endswith(b"\n")) or _has_marker_lines(t) for t in texts):
        return None
    if base is None:
        return _keep_both_added(ours, theirs)
    with tempfile.TemporaryDirectory(prefix="batchd-keepboth-") as tmp:
        files = [Path(tmp) / name for name in ("ours", "base", "theirs")]
        for file, data in zip(files, (ours, base, theirs), strict=True):
            file.write_bytes(data)
        proc = run_git(
            where,
            "merge-file", "--diff3", f"--marker-size={_MARKER_SIZE}",
            "-L", "ours", "-L", "base", "-L", "theirs", *map(str, files),
            check=False,
        )  # fmt: skip
        if not 0 <= proc.returncode < 128:  # negative (shown as 255): an error, not a count
            return None
        output = files[0].read_bytes()
    return _union_of_inserts(output)


def _has_marker_lines(data: bytes) -> bool:
    return any(line.startswith(_MARKER_STARTS) for line in data.split(b"\n"))


def _union_of_inserts(diff3: bytes) -> bytes | None:
    """The merge with each conflict hunk replaced by both sides' lines (:func:`_keep_both_lines`);
    None when a hunk's base side is not empty (a line both changed) or the markers do not parse."""
    out: list[bytes] = []
    ours: list[bytes] = []
    theirs: list[bytes] = []
    state = "outside"
    for line in _lines(diff3):
        bare = line.rstrip(b"\r\n")
        if state == "outside":
            if bare == _OURS:
                state, ours, theirs = "ours", [], []
            else:
                out.append(line)
        elif state == "ours":
            if bare == _BASE:
                state = "base"
            else:
                ours.append(line)
        elif state == "base":
            if bare != _SPLIT:
                return None  # the base side has lines: a change to existing lines, not two inserts
            state = "theirs"
        elif bare == _THEIRS:
            out.extend(_keep_both_lines(ours, theirs))
            state = "outside"
        else:
            theirs.append(line)
    return b"".join(out) if state == "outside" else None


def _lines(data: bytes) -> list[bytes]:
    """Lines split on LF only, each keeping it (``bytes.splitlines`` also splits on CR)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    return [*lines, parts[-1]] if parts[-1] else lines


def _keep_both_added(ours: bytes, theirs: bytes) -> bytes:
    """Two new files at one path, kept both as if inserted into an empty file."""
    return b"".join(_keep_both_lines(_lines(ours), _lines(theirs)))


def _keep_both_lines(a: list[bytes], b: list[bytes]) -> list[bytes]:
    """Two blocks inserted at one place: when one holds the other at its start or end, the longer;
    else the paragraphs both start and end with once and both middles between, ``a``'s first.

    Shared lines are taken only as whole paragraphs (up to a blank line), so two bodies under one
    shared first line (``def f():``) stay two definitions rather than one with both bodies; the
    blank lines that separated a shared start from what followed go with each middle.
    """
    n = min(len(a), len(b))
    if a[:n] == b[:n] or a[len(a) - n :] == b[len(b) - n :]:
        return a if len(a) >= len(b) else b
    start = 0
    while a[start] == b[start]:
        start += 1
    while start and not _blank(a[start - 1]):
        start -= 1
    while start and _blank(a[start - 1]):
        start -= 1
    end = 0
    while end < n - start and a[-1 - end] == b[-1 - end]:
        end += 1
    while end and not _blank(a[-end]):  # the shared end must start with a blank line
        end -= 1
    return [*a[:start], *a[start : len(a) - end], *b[start : len(b) - end], *a[len(a) - end :]]


def _blank(line: bytes) -> bool:
    return not line.strip()
