"""Numbers in a page's query string (``?phase=3``, ``?before=120``), read strictly.

``str.isdigit`` is true for "²" and other digits ``int`` refuses, and ``int`` refuses strings past
4,300 digits: both were a 500. Only ASCII digits of a sane length are a number here.
"""

from __future__ import annotations

__all__ = ["query_int"]

MAX_DIGITS = 18  # below 2**63: a seq, a phase or a count, never more


def query_int(text: str | None) -> int | None:
    """``text`` as a non-negative int, or None when it is absent or not plain ASCII digits."""
    if text is None:
        return None
    text = text.strip()
    if not text or len(text) > MAX_DIGITS or not text.isascii() or not text.isdigit():
        return None
    return int(text)
