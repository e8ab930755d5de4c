"""The two processes of ``bench.serve`` besides itself: the dashboard, and a daemon-like writer.

``python -m bench.serve_worker serve ROOT DB`` folds the log (timed), binds a free loopback port and
serves the real app with uvicorn; it prints one JSON line ``{"port", "fold_seconds", "events"}`` on
stdout when it is about to serve, and stops on SIGTERM.

``python -m bench.serve_worker write DB --phase P --todo N --seconds S`` appends the steps of a run
going on (:func:`bench.serve_log.phase_stages`, new phases from ``P``, new todos from ``N``) one
transaction each, as fast as it can, the way the daemon appends (durable ``EventLog.append_many``,
the store's real clock) for ``S`` seconds, then prints ``{"appends", "events", "seconds", "phase",
"todo"}`` (where the next writer goes on) and the p50/p99 of one append's duration; ``--pace R``
aims at R appends a second instead (a daemon's rate is a few a second; a paced writer shows what a
reader costs each append, where one as fast as it can shows what it costs the machine). Each is a
process of its own so that the writer competes with the dashboard for the database and the cores
as the daemon would, not for one GIL.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import time
from pathlib import Path

from bench.serve_log import BATCHES_PER_PHASE, SLOTS, phase_stages
from store import EventLog


def serve(root: Path, db: str) -> int:
    import uvicorn  # only this mode needs the web stack

    from daemon.web.app import create_app
    from daemon.web.model import LiveModel

    started = time.perf_counter()
    model = LiveModel(root, db)
    model.start()
    fold = time.perf_counter() - started
    sock = socket.create_server(("127.0.0.1", 0))
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP, and create_server's is 0:
    # without it, a keep-alive response written in two parts (headers, body) waits for the client's
    # delayed ACK, 40 ms a request. Set on the listener, accepted sockets inherit it (Linux).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(model, start_model=False),
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    print(json.dumps({"port": port, "fold_seconds": fold, "events": model.last_seq}), flush=True)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        model.stop()
        sock.close()
    return 0


def write(db: str, *, phase: int, todo: int, seconds: float, seed: int, pace: float = 0.0) -> int:
    """``pace``: appends a second to aim at (0: as fast as it can); each append's duration is kept."""
    rng = random.Random(seed)
    per_phase = SLOTS * BATCHES_PER_PHASE
    appends = events = 0
    took: list[float] = []
    log = EventLog(db)
    try:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            # A stop between two stages leaves that phase unfinished: the next writer starts a new one
            # (restarts=False: a stop between the daemon's stopping and attaching would not replay).
            for _advance, stage in phase_stages(phase, todo, per_phase, rng, restarts=False):
                if pace:
                    time.sleep(max(0.0, started + appends / pace - time.perf_counter()))
                began = time.perf_counter()
                log.append_many(stage)
                took.append(time.perf_counter() - began)
                appends += 1
                events += sum(len(a.events) for a in stage)
                if time.perf_counter() >= deadline:
                    break
            phase += 1
            todo += per_phase
        elapsed = time.perf_counter() - started
    finally:
        log.close()
    took.sort()
    p99 = took[max(0, -(-len(took) * 99 // 100) - 1)] if took else 0.0
    result = {
        "appends": appends,
        "events": events,
        "seconds": elapsed,
        "phase": phase,
        "todo": todo,
        "append_p50_ms": took[len(took) // 2] * 1000 if took else 0.0,
        "append_p99_ms": p99 * 1000,
    }
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_worker", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("root", type=Path)
    s.add_argument("db")
    w = sub.add_parser("write")
    w.add_argument("db")
    w.add_argument("--phase", type=int, required=True)
    w.add_argument("--todo", type=int, required=True)
    w.add_argument("--seconds", type=float, required=True)
    w.add_argument("--seed", type=int, default=16)
    w.add_argument("--pace", type=float, default=0.0, help="appends a second (0: as fast as it can)")
    args = parser.parse_args(argv)
    if args.mode == "serve":
        return serve(args.root, args.db)
    return write(
        args.db, phase=args.phase, todo=args.todo, seconds=args.seconds, seed=args.seed, pace=args.pace
    )


if __name__ == "__main__":
    sys.exit(main())
