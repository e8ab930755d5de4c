"""``batchd init``'s commented ``batchd.toml`` and the README's table of keys, both written from the
one declaration of each key in :mod:`daemon.config` (its field: type and default; its metadata:
how it is checked and what it is for)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field
from typing import Any

from daemon.config import SECTIONS, keys
from daemon.config_check import toml_literal

README_START = "<!-- config-table: start (written by `python -m daemon.config_render`) -->"
README_END = "<!-- config-table: end -->"
_WIDTH = 96


def default_of(f: Field[Any]) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise AssertionError(f"config key {f.name} has no default")  # a declaration bug, caught by the tests


def _comment(text: str) -> list[str]:
    return [f"# {line}" for line in textwrap.wrap(text, _WIDTH - 2)]


def render_default_config(
    detected_verify_commands: Sequence[Sequence[str]],
    *,
    values: Mapping[str, object] | None = None,
    notes: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """A fully commented ``batchd.toml`` with every key at its default, for ``batchd init``;
    ``values`` (``"section.key"`` -> value) are what init found in the repository instead of the
    default (the branch checked out, its remote), each with its ``notes`` as extra comment lines."""
    values = values or {}
    notes = notes or {}
    lines = [
        "# batchd.toml: configuration of the batchd daemon for this repository.",
        "# Every key is shown at its default; delete what you do not change. Commands are argv lists",
        '# (["npm", "test"]), never shell strings: batchd runs no shell.',
    ]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        for name, f in keys(section).items():
            meta = f.metadata
            lines += _comment(str(meta["help"]))
            if section == "verify" and name == "commands":
                lines += _verify_commands(detected_verify_commands)
                continue
            if meta["example"]:
                lines.append(f"# {name} = {meta['example']}")
            lines += [f"# {note}" for note in notes.get(f"{section}.{name}", ())]
            lines.append(f"{name} = {toml_literal(values.get(f'{section}.{name}', default_of(f)))}")
    return "\n".join(lines) + "\n"


def _verify_commands(detected: Sequence[Sequence[str]]) -> list[str]:
    commands = [list(c) for c in detected]
    if commands:
        return [
            "# Detected from the files in this repository; check it is what CI runs.",
            f"commands = {toml_literal(commands)}",
        ]
    return [
        "# Nothing detected: batchd refuses to start until you list at least one, e.g.",
        '# commands = [["npm", "run", "typecheck"], ["npm", "test"]]',
        "commands = []",
    ]


def readme_table() -> str:
    """The README's table of every key: name, default, what it is for."""
    rows = ["| key | default | what it is for |", "|---|---|---|"]
    for section in SECTIONS:
        for name, f in keys(section).items():
            meta = f.metadata
            shown = str(meta["shown"]) or f"`{toml_literal(default_of(f))}`"
            text = str(meta["help"]).replace("|", "\\|")
            rows.append(f"| `[{section}] {name}` | {shown} | {text} |")
    return "\n".join(rows)


def readme_section() -> str:
    return f"{README_START}\n{readme_table()}\n{README_END}"


def main() -> int:
    """Rewrite the README's table from the declarations (run from the repository's top folder)."""
    from pathlib import Path

    readme = Path("README.md")
    text = readme.read_text(encoding="utf-8")
    start, end = text.index(README_START), text.index(README_END) + len(README_END)
    readme.write_text(text[:start] + readme_section() + text[end:], encoding="utf-8")
    print("README.md: configuration table rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
