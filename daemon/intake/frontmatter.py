"""YAML front matter of todo files: find it, read it (fast for the usual flat form), edit ``status:``.

Reading is safe YAML with one change: only plain decimal numbers become ``int``, so an id written
``010`` stays the string ``"010"`` instead of YAML 1.1's octal 8. The front matter of the
convention is flat (``key: value`` and ``key: [a, b]``); such lines are read by a small parser that
gives exactly what the YAML loader would, and anything else goes to the loader. That halves the
time of a 10,000-file scan (YAML construction in Python dominates it).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml is ten times slower, not wrong
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

__all__ = ["FrontMatterError", "load_front_matter", "replace_status", "split_front_matter"]


class FrontMatterError(ValueError):
    """The front matter cannot be read; ``line`` is 1-based in the whole file, when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.line = line
        super().__init__(message)


class _Loader(_BaseLoader):
    """Safe YAML where ``010`` and ``0x10`` stay strings (see the module docstring)."""


_INT_TAG = "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _INT_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_INT_TAG, re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789"))


def split_front_matter(text: str) -> tuple[str | None, str]:
    """(front matter text or None, body). Front matter runs from a first line ``---`` to ``---``/``...``."""
    first, sep, rest = text.partition("\n")
    if first.rstrip("\r") != "---" or not sep:
        return None, text
    pos = 0
    while True:
        end = rest.find("\n", pos)
        line = rest[pos:] if end < 0 else rest[pos:end]
        if line.rstrip("\r") in ("---", "..."):
            return rest[:pos], ("" if end < 0 else rest[end + 1 :])
        if end < 0:
            raise FrontMatterError("front matter starts with '---' but has no closing '---' line", 1)
        pos = end + 1


# --- the fast path: flat `key: value` / `key: [a, b]` lines with values YAML reads as plain text ---

# Words YAML 1.1 reads as booleans or null; a plain scalar or key equal to one goes to the loader.
_RESERVED = frozenset(
    f(w)
    for w in ("yes", "no", "true", "false", "on", "off", "null")
    for f in (str.lower, str.title, str.upper)
)
_KEY = r"[A-Za-z_][A-Za-z0-9_-]*"
# A plain scalar that starts with a letter and holds no YAML indicator: always a string.
_WORD = r"[A-Za-z][A-Za-z0-9_./-]*(?: [A-Za-z0-9_./-]+)*"
_ITEM = rf"(?:{_WORD}|\"[^\"\\\n]*\"|'[^'\n]*'|0|[1-9][0-9]*)"
_LINE_RE = re.compile(rf"^(?P<key>{_KEY}):(?: +(?P<value>{_ITEM}|\[ *(?:{_ITEM}(?: *, *{_ITEM})*)? *\]))?$")
_ITEM_RE = re.compile(_ITEM)


def _scalar(token: str) -> str | int | None:
    if token[0] in "\"'":
        return token[1:-1]
    if token[0].isdigit():
        return int(token) if len(token) <= _MAX_DIGITS else None
    return None if token in _RESERVED else token


_MAX_DIGITS = 18  # longer numbers go to the YAML loader (and are refused there if they cannot be)


def _fast_load(raw: str) -> dict[str, Any] | None:
    """The mapping YAML would give, or None when any line is outside the simple form."""
    out: dict[str, Any] = {}
    for line in raw.split("\n"):
        line = line.rstrip(" \r")  # noqa: PLW2901 - the stripped line is the one parsed
        if not line or line.startswith("#"):
            continue
        m = _LINE_RE.match(line)
        if m is None or m["key"] in _RESERVED:
            return None
        value = m["value"]
        if value is None:
            out[m["key"]] = None
        elif value.startswith("["):
            items = [_scalar(t) for t in _ITEM_RE.findall(value[1:-1])]
            if None in items:
                return None
            out[m["key"]] = items
        else:
            scalar = _scalar(value)
            if scalar is None:
                return None
            out[m["key"]] = scalar
    return out


def _refuse_aliases(raw: str) -> None:
    """YAML aliases (``*name``) can make a few hundred bytes expand to billions of values (the
    "billion laughs"): no todo needs them, so a front matter that uses one is refused, unread."""
    if "*" not in raw:
        return
    for event in yaml.parse(raw, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            line = mark.line + 2 if mark is not None else None
            raise FrontMatterError(
                f"front matter uses a YAML alias (*{event.anchor}) at line {line}, which batchd does "
                "not read: write the value out",
                line,
            )


def load_front_matter(raw: str) -> dict[str, Any]:
    """The front matter as a mapping with string keys; FrontMatterError for bad YAML or a non-mapping."""
    data: Any = _fast_load(raw)
    if data is None:
        try:
            _refuse_aliases(raw)
            data = yaml.load(raw, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = mark.line + 2 if mark is not None else None  # +1 for 1-based, +1 for the opening ---
            where = f" at line {line}" if line is not None else ""
            problem = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise FrontMatterError(f"front matter is not valid YAML{where}: {problem}", line) from None
        except RecursionError:
            raise FrontMatterError("front matter nests too deeply") from None
        except (ValueError, OverflowError) as e:  # a value YAML cannot make (2026-02-30, a huge int)
            raise FrontMatterError(f"front matter has a value that cannot be read: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FrontMatterError(f"front matter is a {type(data).__name__}, not a mapping of keys to values")
    return {str(k): v for k, v in data.items()}


_STATUS_LINE_RE = re.compile(
    r"^(?P<lead>status[ \t]*:[ \t]*)(?P<q>[\"']?)[^\"'#\r\n]*?(?P=q)(?P<tail>[ \t]*(?:#.*)?\r?)$"
)


def replace_status(text: str, status: str) -> str:
    """``text`` with the front matter's top-level ``status:`` set to ``status``, all else unchanged.

    The line is rewritten in place, keeping its quotes and any comment. Front matter without a
    status key gets one as its first line. Text without (readable) front matter is returned as it
    is: the file name carries the status, and adding front matter would be an unasked edit.
    """
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    text = text.removeprefix(bom)
    try:
        raw, _body = split_front_matter(text)
    except FrontMatterError:
        raw = None
    if raw is None:
        return bom + text
    opening = text.partition("\n")[0]
    start = offset = len(opening) + 1
    for line in raw.split("\n"):
        m = _STATUS_LINE_RE.match(line)
        if m is not None:
            new_line = f"{m['lead']}{m['q']}{status}{m['q']}{m['tail']}"
            return bom + text[:offset] + new_line + text[offset + len(line) :]
        offset += len(line) + 1
    newline = "\r\n" if opening.endswith("\r") else "\n"
    return bom + text[:start] + f"status: {status}{newline}" + text[start:]
