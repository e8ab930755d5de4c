"""The front matter reader: its fast path must give exactly what the YAML loader gives."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.intake.frontmatter import (
    FrontMatterError,
    _fast_load,
    _Loader,
    load_front_matter,
    split_front_matter,
)


def yaml_load(raw: str) -> Any:
    data = yaml.load(raw, Loader=_Loader)
    return {} if data is None else {str(k): v for k, v in data.items()}


@pytest.mark.parametrize(
    "raw",
    [
        "status: ready\n",
        'issue_id: "002"\n',
        "issue_id: 002\n",
        "deps: [010, 9]\n",
        "deps: [273, '001', \"002\"]\n",
        "a: yes\nb: No\nc: null\nd: ~\ne:\n",
        "on: x\n",
        "a: .inf\n",
        "a: 2026-11-20\n",
        "a: x # comment\n",
        "a: [a b, c-d, e/f.ts]\n",
        "a: []\n",
        "a: [ ]\n",
        "a: 'it''s'\n",
        "a: b:c\n",
        "a: 0x10\n",
        "a: 1_000\n",
        "a: 0\n",
        "# comment\n\na: b\n",
        "a: b\na: c\n",
        "a: -x\n",
        "a: [x, 'y, z']\n",
    ],
)
def test_fast_path_matches_yaml(raw: str) -> None:
    """Tricky values read the same as with the YAML loader (fast path or fallback)."""
    assert load_front_matter(raw) == yaml_load(raw)


def test_fast_path_takes_the_convention_form() -> None:
    """The usual compound-engineering front matter is read without the YAML loader."""
    raw = 'status: ready\npriority: p1\nissue_id: "273"\ntags: [security, multi-tenant]\ndependencies: []\n'
    assert _fast_load(raw) == yaml_load(raw)


# Pieces that are plain text, YAML indicators, reserved words and numbers, glued into values.
_PIECES = [
    "a",
    "Z",
    "x-y",
    "a.b",
    "p/q",
    " ",
    "'",
    '"',
    "#",
    ":",
    ",",
    "[",
    "]",
    "-",
    "0",
    "1",
    "010",
    "yes",
    "Off",
    "null",
    "~",
    ".inf",
    "2026-11-20",
    "[a, 1]",
    "['x']",
    '"q"',
    "[]",
]
_values = st.lists(st.sampled_from(_PIECES), max_size=4).map("".join)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b_c", "on", "key-x"]), _values), max_size=4))
def test_fast_path_never_differs_from_yaml(pairs: list[tuple[str, str]]) -> None:
    """Whenever the fast path answers, the YAML loader gives the same mapping."""
    raw = "".join(f"{k}: {v}\n" for k, v in pairs)
    fast = _fast_load(raw)
    if fast is None:
        return
    assert fast == yaml_load(raw)


def test_split_front_matter_without_opening_line() -> None:
    """Text that does not start with `---` has no front matter."""
    assert split_front_matter("# t\n---\n") == (None, "# t\n---\n")


def test_split_front_matter_dots_close() -> None:
    """`...` also closes front matter (YAML's document end)."""
    assert split_front_matter("---\na: b\n...\nbody") == ("a: b\n", "body")


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    """Absurdly nested YAML is a FrontMatterError, not RecursionError."""
    with pytest.raises(FrontMatterError):
        load_front_matter("a: " + "[" * 5000 + "]" * 5000 + "\n")


def test_yaml_aliases_are_refused_unread() -> None:
    """A 'billion laughs' front matter is refused, naming the alias, instead of expanding it (which would
    hold the scan for hours)."""
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{b}: &{b} [{', '.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(FrontMatterError, match=r"YAML alias \(\*a\)"):
        load_front_matter(bomb)


def test_frontmatter_values_yaml_cannot_make_are_refused() -> None:
    """A date that does not exist or an integer of thousands of digits is a clear error, not a crash."""
    for raw in ("created: 2026-02-30\n", "n: " + "9" * 5000 + "\n"):
        with pytest.raises(FrontMatterError, match="cannot be read"):
            load_front_matter(raw)
