"""Whether an attempt left git's conflict markers in a file it was given with them.

An attempt whose change lost a conflict starts with that change rebased onto the new head
(:mod:`daemon.world.rebase`), conflict markers where it conflicts; :mod:`daemon.world.collect` fails
the attempt when one of those files still holds a conflict block. The files are the agent's, so
nothing about them is trusted: a folder on the way may have become a link to a file elsewhere (a
FIFO, a secret, a huge file), the file may be one long line, and its markers may be longer than
git's default seven characters (``conflict-marker-size``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Literal

from daemon.world import safefs

_MARKER_SCAN_BYTES = 256 * 1024 * 1024  # past this a file is too large to be a change anyway
_MARKER_LINE_BYTES = 64 * 1024
_MARKER_MIN = 7  # git's shortest conflict marker (its default size; conflict-marker-size may raise it)

MarkerState = Literal["markers", "link", "unreadable", "clean"]


def marker_file_state(workspace: Path, rel: str) -> MarkerState:
    """What became of a file the attempt was given with conflict markers: ``"markers"`` (it still
    holds a conflict block), ``"link"`` (it, or a folder on the way to it, is now a symbolic link),
    ``"unreadable"`` (it cannot be opened), or ``"clean"``: no block is left, or the file is gone,
    a plain file took its folder's place, or it is no plain file any more (the conflict was resolved
    by deleting it).

    The file is opened from ``workspace`` down without following any link (:mod:`safefs`): an agent
    that swaps ``src/`` for a link must not make batchd read, or block on, a file elsewhere.
    """
    try:
        fd = safefs.open_read(workspace, rel)
    except safefs.LinkRefused as e:
        return "clean" if e.not_a_folder else "link"  # a file where its folder was: the file is gone
    except (OSError, ValueError):
        return "unreadable"  # permissions taken away: what cannot be checked is not resolved
    if fd is None:
        return "clean"
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "clean"
        return "markers" if _holds_conflict_block(f) else "clean"


def has_conflict_block(path: Path) -> bool:
    """Whether the plain file at ``path`` (a link at its last name is not followed) holds a conflict
    block; :func:`marker_file_state` is the check that guards every folder on the way too."""
    return marker_file_state(path.parent, path.name) == "markers"


def _holds_conflict_block(f: BinaryIO) -> bool:
    """Whether ``f`` holds a conflict block as git writes it, whatever the marker size: a line of N
    ``<`` followed by a space or the line's end, later a line of exactly N ``=``, later a line of N
    ``>`` followed by a space or the end, the same N >= 7 (``conflict-marker-size`` in a
    ``.gitattributes`` changes N; parsing every size needs no git call, and an agent editing
    ``.gitattributes`` cannot hide its markers). A heading's ``=======`` underline alone, or a quote
    ``>>>>>>> ``, is not one. Read a line at a time and at most ``_MARKER_SCAN_BYTES``, never whole."""
    stage: dict[int, int] = {}  # marker size -> 1: an opening line seen; 2: then its separator
    read = 0
    at_start = True  # a piece that continues a line longer than _MARKER_LINE_BYTES is no marker
    while read < _MARKER_SCAN_BYTES:
        piece = f.readline(_MARKER_LINE_BYTES)
        if not piece:
            break
        read += len(piece)
        line = piece.rstrip(b"\r\n") if at_start else b""
        at_start = piece.endswith(b"\n")
        if len(line) < _MARKER_MIN:
            continue
        kind = line[:1]
        if kind not in b"<=>":
            continue
        size = len(line) - len(line.lstrip(kind))
        if size < _MARKER_MIN or (size < len(line) and (kind == b"=" or line[size : size + 1] != b" ")):
            continue
        if kind == b"<":
            stage[size] = 1
        elif kind == b"=" and stage.get(size) == 1:
            stage[size] = 2
        elif kind == b">" and stage.get(size) == 2:
            return True
    return False
