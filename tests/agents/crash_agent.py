"""Test agent that counts its runs and holds its todo running until the test lets it go.

``python crash_agent.py TODO_ID``, run by batchd in the todo's workspace. Each run appends a line to
``$CRASH_DIR/runs-<id>`` (outside the workspace: it survives a re-run) and creates
``$CRASH_DIR/started-<id>-<n>`` (n = this run's number), then waits until ``$CRASH_DIR/release-<id>``
exists (60 s at most, then exit 1), writes ``out-<id>.txt`` and exits with ``$CRASH_RC`` (default 0).
"""

import os
import sys
import time
from pathlib import Path

todo_id = sys.argv[1]
folder = Path(os.environ["CRASH_DIR"])
runs = folder / f"runs-{todo_id}"
with runs.open("a", encoding="utf-8") as out:
    out.write("run\n")
number = len(runs.read_text(encoding="utf-8").splitlines())
(folder / f"started-{todo_id}-{number}").write_text(str(os.getpid()), encoding="utf-8")
release = folder / f"release-{todo_id}"
deadline = time.monotonic() + 60
while not release.exists():
    if time.monotonic() > deadline:
        print("never released")
        sys.exit(1)
    time.sleep(0.05)
Path(f"out-{todo_id}.txt").write_text(f"done {todo_id}\n", encoding="utf-8")
print(f"todo {todo_id} done (run {number})")
sys.exit(int(os.environ.get("CRASH_RC", "0")))
