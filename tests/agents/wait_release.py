"""Test agent that holds its todo "running" until the test lets it go.

``python wait_release.py TODO_ID``, run by batchd in the todo's workspace. A todo whose id is in
``VIEW_FAIL`` (comma-separated) fails at once (exit 1). Any other waits until the file named by
``VIEW_RELEASE`` exists (so a test can see it running, then release it; 60 s at most, then exit 1),
then writes ``out-<id>.txt`` and exits 0.
"""

import os
import sys
import time
from pathlib import Path

todo_id = sys.argv[1]
if todo_id in os.environ.get("VIEW_FAIL", "").split(","):
    print(f"todo {todo_id} fails on purpose")
    sys.exit(1)
release = Path(os.environ["VIEW_RELEASE"])
deadline = time.monotonic() + 60
while not release.exists():
    if time.monotonic() > deadline:
        print("never released")
        sys.exit(1)
    time.sleep(0.05)
Path(f"out-{todo_id}.txt").write_text(f"done {todo_id}\n", encoding="utf-8")
