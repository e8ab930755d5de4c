"""The stand-in agent of ``bench.economy``: does a todo's scripted work in scaled agent-minutes.

    python bench/economy_agent.py [--session ID] TODO_PATH

The todo file carries its script in a fenced ``bench-economy`` block of JSON:
``{"id": "277", "minutes": 12.5, "files": ["scheduling/availability.py"], "breaks": false}``.
Each file in ``files`` gets one function, ``t<id>()`` returning the id, appended at its end; a todo
that ``breaks`` writes one that raises on its first attempt (``BATCHD_ATTEMPT`` 1), which the
verify check condemns.

What it finds in its workspace decides what it costs, as it would for a real agent:

- conflict markers in its files (a resolve attempt, its rebased change carried in): it keeps both
  sides and fixes its breakage, in ``RESUMED_SHARE`` of its minutes;
- its own functions already there (a repair or a resolve that rebased cleanly, its change carried
  in): it only fixes the breakage, in ``RESUMED_SHARE`` of its minutes;
- neither (a first attempt, or a redo from scratch): all of it, in its full minutes.

It sleeps the minutes at ``BENCH_SECONDS_PER_MINUTE`` (from ``[agent] env``) and prints a claude-like
JSON result with a session id (``--session`` continues the given one), the simulated minutes as
``duration_ms`` and a simulated cost. Only the standard library: it runs inside an agent's workspace.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

RESUMED_SHARE = 0.2  # what a repair or a resolve costs, against doing the todo from nothing
USD_PER_MINUTE = 0.05  # simulated cost
BLOCK = re.compile(r"```bench-economy\n(.*?)\n```", re.DOTALL)
MARKERS = ("<<<<<<<", "|||||||", "=======", ">>>>>>>")


def function(todo_id: str, *, broken: bool) -> str:
    body = f"raise ValueError('todo {todo_id} broke this')" if broken else f"return {todo_id!r}"
    return f"\n\ndef t{todo_id}() -> str:\n    {body}\n"


def keep_both(text: str) -> str:
    """The text with each conflict's two sides kept, ours then theirs (a diff3 base is dropped)."""
    kept: list[str] = []
    side = "both"
    for line in text.splitlines(keepends=True):
        if line.startswith("<<<<<<<"):
            side = "ours"
        elif line.startswith("|||||||") and side == "ours":
            side = "base"
        elif line.startswith("=======") and side in ("ours", "base"):
            side = "theirs"
        elif line.startswith(">>>>>>>") and side == "theirs":
            side = "both"
        elif side != "base":
            kept.append(line)
    return "".join(kept)


def main(argv: list[str]) -> int:
    session = ""
    if argv[:1] == ["--session"]:
        session, argv = argv[1], argv[2:]
    todo_path = Path(argv[0])
    match = BLOCK.search(todo_path.read_text(encoding="utf-8"))
    if match is None:
        print(f"no bench-economy block in {todo_path}", file=sys.stderr)
        return 2
    script = json.loads(match.group(1))
    todo_id: str = script["id"]
    attempt = int(os.environ.get("BATCHD_ATTEMPT", "1"))
    paths = [Path(name) for name in script["files"]]
    texts = {p: p.read_text(encoding="utf-8") if p.exists() else "" for p in paths}
    marked = any(line.startswith(MARKERS) for text in texts.values() for line in text.splitlines())
    present = all(f"def t{todo_id}()" in text for text in texts.values())
    if marked or present:
        mode, minutes = ("resolve" if marked else "repair"), script["minutes"] * RESUMED_SHARE
        broken, fixed = function(todo_id, broken=True), function(todo_id, broken=False)
        for path, text in texts.items():
            path.write_text(keep_both(text).replace(broken, fixed), encoding="utf-8")
    else:
        mode, minutes = "full", script["minutes"]
        for path, text in texts.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                text + function(todo_id, broken=script["breaks"] and attempt == 1), encoding="utf-8"
            )
    time.sleep(minutes * float(os.environ.get("BENCH_SECONDS_PER_MINUTE", "0.02")))
    result = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "result": f"{mode} in {minutes:.1f} simulated minutes",
        "session_id": session or f"economy-{todo_id}-{attempt}",
        "duration_ms": round(minutes * 60_000),
        "total_cost_usd": round(minutes * USD_PER_MINUTE, 4),
        "simulated": True,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
