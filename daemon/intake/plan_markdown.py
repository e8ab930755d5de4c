"""Read a plan written the way the seed prompt writes it (``seed/autonomous-batch-runner-prompt.md``).

Recognised, outside fenced code blocks::

    ### Phase 1: Critical Security (Batches 1.1 + 1.2)
    - **Batch 1.1:** Todos 273, 274, 275, 276, 284 (5 parallel)
    - **Batch 1.2:** Todos 266, 267, 279 (3 parallel)

    ## Commit Messages by Phase
    - **Phase 1:** `fix(security): complete phase 1 - critical security fixes`

Tolerated: ``##`` to ``####`` headings, ``Todo``/``Todos``/no word, ``#273``, leading zeros, ids
separated by commas, spaces, ``and``, ``&`` or ``+``, no ``(N parallel)``, bold or plain
``Batch 1.1:``. Any other line (prose, ``**After Phase 1:** Commit and push``) is ignored; a
``Batch`` line outside a phase section is prose too. Errors: a batch line with no ids or with text
that is not an id, a batch key that is not ``<phase>.<n>`` of its phase, a batch key used twice,
``(N parallel)`` that does not match the ids, phases out of order, a commit message for a phase that
the plan does not have: each a :class:`PlanError` naming the file and the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from daemon.exceptions import PlanError

__all__ = ["RawPhase", "parse_markdown_plan"]

_HEADING_RE = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<text>.*?)\s*#*\s*$")
_PHASE_RE = re.compile(r"^Phase\s+(?P<num>[0-9]+)\s*(?:[:.\-–—]\s*(?P<title>.*))?$", re.IGNORECASE)
_TITLE_NOTE_RE = re.compile(r"\s*\((?:batch|batches)\b[^)]*\)\s*$", re.IGNORECASE)
_COMMITS_RE = re.compile(r"^Commit\s+Messages\b", re.IGNORECASE)
_ITEM_HEAD = r"^\s*[-*+]\s+(?:\*\*|__)?"
_ITEM_TAIL = r"\s*:?\s*(?:\*\*|__)?\s*:?\s*(?P<rest>.*)$"
_BATCH_RE = re.compile(_ITEM_HEAD + r"Batch\s+(?P<key>[^\s:*_]+)" + _ITEM_TAIL, re.IGNORECASE)
_COMMIT_RE = re.compile(_ITEM_HEAD + r"Phase\s+(?P<num>[0-9]+)" + _ITEM_TAIL, re.IGNORECASE)
_IDS_RE = re.compile(
    r"^(?:todos?\b\s*:?)?\s*(?P<ids>.*?)\s*(?:\((?P<n>[0-9]+)\s+parallel\)\s*)?\.?$", re.IGNORECASE
)
_SEPARATOR_RE = re.compile(r"\s*(?:,|;|&|\+|\band\b)\s*|\s+", re.IGNORECASE)
_ID_RE = re.compile(r"^#?(?P<id>[0-9]+)$")
_FENCE_RE = re.compile(r"^\s*(```|~~~)")

_FORMAT_HINT = (
    "write batch lines as `- **Batch 1.1:** Todos 273, 274 (2 parallel)` under `### Phase 1: Title`"
)


@dataclass
class RawPhase:
    number: int
    title: str
    line: int
    batches: list[tuple[str, tuple[str, ...], int]] = field(default_factory=list)  # key, ids, line
    commit_message: str | None = None


def _ids(rest: str, key: str, source: str, lineno: int) -> tuple[str, ...]:
    m = _IDS_RE.match(rest.strip())
    assert m is not None  # every part of the pattern is optional
    ids: list[str] = []
    for token in _SEPARATOR_RE.split(m["ids"]):
        if not token:
            continue
        idm = _ID_RE.match(token)
        if idm is None:
            raise PlanError(
                f"batch {key}: {token!r} is not a todo id",
                path=source,
                where=f"line {lineno}",
                hint=_FORMAT_HINT,
            )
        ids.append(idm["id"])
    if not ids:
        raise PlanError(
            f"batch {key} lists no todo ids", path=source, where=f"line {lineno}", hint=_FORMAT_HINT
        )
    if m["n"] is not None and int(m["n"]) != len(ids):
        raise PlanError(
            f"batch {key} says ({m['n']} parallel) but lists {len(ids)} todos",
            path=source,
            where=f"line {lineno}",
            hint="make the count match the ids, or drop the (N parallel) note",
        )
    return tuple(ids)


def _commit_message(rest: str) -> str:
    text = rest.strip()
    if len(text) >= 2 and text.startswith("`") and text.endswith("`"):
        text = text.strip("`").strip()
    return text


def parse_markdown_plan(text: str, source: str) -> list[RawPhase]:
    """The phases of a markdown plan, in file order, with their batches and commit messages."""
    phases: list[RawPhase] = []
    current: RawPhase | None = None
    current_level = 0
    commits_level = 0  # > 0 while inside the "Commit Messages" section
    batch_lines: dict[str, int] = {}
    commit_lines: dict[int, tuple[str, int]] = {}
    in_fence = ""

    for lineno, line in enumerate(text.splitlines(), start=1):
        fence = _FENCE_RE.match(line)
        if fence is not None:
            if not in_fence:
                in_fence = fence[1]
            elif fence[1] == in_fence:
                in_fence = ""
            continue
        if in_fence:
            continue
        heading = _HEADING_RE.match(line)
        if heading is not None:
            level = len(heading["hashes"])
            phase_m = _PHASE_RE.match(heading["text"])
            if phase_m is not None and level >= 2:
                number = int(phase_m["num"])
                if phases and number <= phases[-1].number:
                    raise PlanError(
                        f"phase {number} comes after phase {phases[-1].number} (line {phases[-1].line})",
                        path=source,
                        where=f"line {lineno}",
                        hint="number phases in increasing order, each once",
                    )
                title = _TITLE_NOTE_RE.sub("", (phase_m["title"] or "").strip()).strip()
                current = RawPhase(number=number, title=title, line=lineno)
                current_level = level
                phases.append(current)
                commits_level = 0
                continue
            if current is not None and level <= current_level:
                current = None
            if commits_level and level <= commits_level:
                commits_level = 0
            if _COMMITS_RE.match(heading["text"]):
                commits_level = level
            continue
        if current is not None:
            batch_m = _BATCH_RE.match(line)
            if batch_m is not None:
                _add_batch(
                    current, batch_m["key"], batch_m["rest"], source=source, lineno=lineno, seen=batch_lines
                )
            continue
        if commits_level:
            commit_m = _COMMIT_RE.match(line)
            if commit_m is not None:
                number = int(commit_m["num"])
                if number in commit_lines:
                    raise PlanError(
                        f"phase {number} has a second commit message "
                        f"(first on line {commit_lines[number][1]})",
                        path=source,
                        where=f"line {lineno}",
                        hint="keep one commit message per phase",
                    )
                message = _commit_message(commit_m["rest"])
                if not message:
                    raise PlanError(
                        f"the commit message for phase {number} is empty",
                        path=source,
                        where=f"line {lineno}",
                        hint="write it as - **Phase 1:** `fix(scope): complete phase 1 - summary`",
                    )
                commit_lines[number] = (message, lineno)

    by_number = {p.number: p for p in phases}
    for number, (message, lineno) in commit_lines.items():
        if number not in by_number:
            raise PlanError(
                f"commit message for phase {number}, which the plan does not have",
                path=source,
                where=f"line {lineno}",
                hint="add a '### Phase N: title' heading for it, or remove the line",
            )
        by_number[number].commit_message = message
    return phases


def _add_batch(
    phase: RawPhase, key: str, rest: str, *, source: str, lineno: int, seen: dict[str, int]
) -> None:
    key_m = re.match(r"^([0-9]+)\.([0-9]+)$", key)
    if key_m is None:
        raise PlanError(
            f"batch key {key!r} is not <phase>.<n> (like {phase.number}.1)",
            path=source,
            where=f"line {lineno}",
            hint=_FORMAT_HINT,
        )
    if int(key_m[1]) != phase.number:
        raise PlanError(
            f"batch {key} is under phase {phase.number} (line {phase.line})",
            path=source,
            where=f"line {lineno}",
            hint=f"number the batches of phase {phase.number} as {phase.number}.1, {phase.number}.2, …",
        )
    canonical = f"{int(key_m[1])}.{int(key_m[2])}"
    if canonical in seen:
        raise PlanError(
            f"batch {key} appears twice (first on line {seen[canonical]})",
            path=source,
            where=f"line {lineno}",
            hint="give each batch its own number",
        )
    seen[canonical] = lineno
    phase.batches.append((canonical, _ids(rest, key, source, lineno), lineno))
