"""Claims: of two processes racing for one on PostgreSQL exactly one wins, and the worker's pure
choices (which queued claims to take, which of its own it has lost)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from statemachine import dispatch as dp
from store import EventLog, StoredEvent

ROOT = Path(__file__).resolve().parents[3]

RACER = """
import pathlib, sys, time
from statemachine import dispatch as dp
from store import EventLog
from store.exceptions import ConcurrencyError
url, token, name, go = sys.argv[1:5]
log = EventLog(url, scope="race")
print("ready", flush=True)
while not pathlib.Path(go).exists():
    time.sleep(0.001)
try:
    log.append(dp.claim_stream(token), [dp.AgentClaimed(token=token, worker=name)], expected_version=1)
    print("won", flush=True)
except ConcurrencyError:
    print("lost", flush=True)
log.close()
"""


def _queued(token: str, todo_id: str = "1") -> dp.AgentQueued:
    return dp.AgentQueued(
        token=token,
        todo_id=todo_id,
        attempt=1,
        shown=todo_id,
        title="t",
        todo_path=f"todos/{todo_id}.md",
        todo_b64="",
        base_sha="0" * 40,
        base_ref=dp.base_ref("r", 1),
        branch="b",
        lease=30.0,
    )


def test_of_two_processes_racing_for_a_claim_exactly_one_wins(pg_url: str, tmp_path: Path) -> None:
    log = EventLog(pg_url, scope="race")
    try:
        for round_ in range(5):
            token = uuid.uuid4().hex
            log.append(dp.claim_stream(token), [_queued(token)], expected_version=0)
            go = tmp_path / f"go-{round_}"
            racers = [
                subprocess.Popen(
                    [sys.executable, "-c", RACER, pg_url, token, f"w{i}", str(go)],
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for i in range(2)
            ]
            for p in racers:
                assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            go.touch()
            said = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
            assert said == ["lost", "won"]
            stream = log.read_stream(dp.claim_stream(token))
            assert [e.type for e in stream] == ["agent.queued", "agent.claimed"]
    finally:
        log.close()


def _fold(*events: tuple[str, object]) -> dp.Dispatch:
    d = dp.Dispatch()
    versions: dict[str, int] = {}
    for seq, (stream, event) in enumerate(events, start=1):
        versions[stream] = versions.get(stream, 0) + 1
        name = type(event).event_name  # type: ignore[attr-defined]
        payload = {k: getattr(event, k) for k in event.__dataclass_fields__}  # type: ignore[attr-defined]
        d.apply(
            StoredEvent(
                seq=seq,
                stream=stream,
                version=versions[stream],
                type=name,
                type_version=1,
                payload=payload,
                recorded_at=f"2026-12-03T10:00:{seq:02d}.000000Z",
                hash="",
            )
        )
    return d


def test_a_worker_tries_the_queued_claims_oldest_first() -> None:
    from daemon.worker.claims import claimable

    d = _fold(*[(dp.claim_stream(t), _queued(t, str(i))) for i, t in enumerate(["c", "a", "b"], start=1)])
    assert [c.token for c in claimable(d)] == ["c", "a", "b"]


def test_a_claim_someone_else_won_is_not_offered() -> None:
    from daemon.worker.claims import claimable

    d = _fold(
        (dp.claim_stream("a"), _queued("a")),
        (dp.claim_stream("a"), dp.AgentClaimed(token="a", worker="w1")),
        (dp.claim_stream("b"), _queued("b", "2")),
    )
    assert [c.token for c in claimable(d)] == ["b"]


def test_an_expired_claim_is_lost_to_its_worker() -> None:
    from daemon.worker.claims import lost

    d = _fold(
        (dp.claim_stream("a"), _queued("a")),
        (dp.claim_stream("a"), dp.AgentClaimed(token="a", worker="w1")),
    )
    assert not lost(d.claims["a"], "w1")
    assert lost(d.claims["a"], "w2")
    d2 = _fold(
        (dp.claim_stream("a"), _queued("a")),
        (dp.claim_stream("a"), dp.AgentClaimed(token="a", worker="w1")),
        (dp.claim_stream("a"), dp.LeaseExpired(token="a", worker="w1", reason="silent")),
    )
    assert lost(d2.claims["a"], "w1")
    assert lost(None, "w1")
