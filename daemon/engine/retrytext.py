"""The ``{repair}`` texts of attempts that start from an earlier attempt's change (a resolve after a
conflict, a repair after a rejection), from the templates in ``daemon/prompts/``."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from daemon.exceptions import printable
from daemon.world.agents import substitute

MAX_FILES_SHOWN = 50  # a change conflicting in hundreds of files names the first ones, then a count
MAX_REASON = 300  # characters of a failure's reason in the prompt (the log keeps all of it)


def template(name: str) -> str:
    return resources.files("daemon").joinpath(f"prompts/{name}.md").read_text(encoding="utf-8")


def resolve(winner: str, files: Sequence[str]) -> str:
    """What a resolve attempt is told: which todo won (its id as people read it; "" = not known),
    which files hold conflict markers, and to keep both intents."""
    shown = [f"- {_one_line(f)}" for f in files[:MAX_FILES_SHOWN]]
    if len(files) > MAX_FILES_SHOWN:
        shown.append(f"- ... and {len(files) - MAX_FILES_SHOWN} more")
    who = f"todo #{winner}" if winner else "an earlier change"
    return substitute(template("resolve"), {"winner": who, "files": "\n".join(shown)}).rstrip("\n")


def own_change(repair: str) -> str:
    """A repair that starts from its own rejected change: the failure, and that the change is there."""
    return substitute(template("repair-own"), {"repair": repair.rstrip("\n")}).rstrip("\n")


def failed_again(reason: str, repair: str) -> str:
    """A carried attempt whose agent failed: the next one starts from the same change, told why (the
    header of an earlier failure is replaced, not stacked)."""
    text = template("failed-again")
    header_lines = text[: text.index("{repair}")].count("\n")
    lead = text[: text.index("{reason}")]
    if repair.startswith(lead):
        repair = repair.split("\n", header_lines)[-1] if repair.count("\n") >= header_lines else ""
    values = {"reason": _one_line(reason[:MAX_REASON]), "repair": repair.rstrip("\n")}
    return substitute(text, values).rstrip("\n")


def _one_line(text: str) -> str:
    """A file name or reason inside the prompt: escaped bytes, no line breaks to fake instructions."""
    return printable(text).replace("\r", "\\r").replace("\n", "\\n")
