"""Child processes for the cross-process tests: ``python -m tests.store.child MODE DB ...``.

Each acknowledged append is printed (and flushed) as ``ok <seq>`` only after append() returned.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from store import ConcurrencyError, EventLog
from tests.store.events import REG, Noted


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.001)


def main(argv: list[str]) -> int:
    mode, db = argv[0], argv[1]
    with EventLog(db, reg=REG) as log:
        if mode == "race":  # race GO_FILE STREAM EXPECTED: one append once GO_FILE appears
            go, stream, expected = Path(argv[2]), argv[3], int(argv[4])
            print("ready", flush=True)
            wait_for(go)
            try:
                (ev,) = log.append(stream, [Noted(text=f"from {stream}")], expected_version=expected)
            except ConcurrencyError as e:
                print(f"conflict {e.actual}", flush=True)
            else:
                print(f"ok {ev.seq}", flush=True)
        elif mode == "loop":  # loop STREAM COUNT: appends one by one, unchecked
            stream, count = argv[2], int(argv[3])
            for n in range(count):
                (ev,) = log.append(stream, [Noted(text=f"{stream} {n}", n=n)])
                print(f"ok {ev.seq}", flush=True)
        elif mode == "forever":  # forever STREAM: appends until killed, checked versions
            stream = argv[2]
            version = log.stream_version(stream)
            while True:
                (ev,) = log.append(stream, [Noted(text="x" * 200, n=version)], expected_version=version)
                version += 1
                print(f"ok {ev.seq}", flush=True)
        elif mode == "read":  # read: prints the last seq and the number of events
            events = list(log.read())
            print(f"read {log.last_seq()} {len(events)}", flush=True)
        else:
            print(f"unknown mode {mode}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
