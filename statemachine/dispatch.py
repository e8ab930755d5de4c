"""Agents on other hosts: the workers, and each remote attempt's claim, folded from the log.

A coordinator (``batchd run``) that hands an attempt to a worker (``batchd worker``) writes
``agent.queued`` on a stream of its own, ``claim-<token>`` (the token of the attempt's
``todo.agent_started``: a new one on every start). Every later step of that attempt is an append
to the same stream *with an expected version*, so the log's optimistic concurrency is the fence:

    agent.queued (v1, coordinator) -> agent.claimed (v2, expected 1: of two racing workers
    exactly one wins) -> agent.lease_renewed ... (each expected at the version the worker last
    wrote) -> agent.reported (the worker's outcome, expected likewise) -> agent.released
    (coordinator: collected, or no longer wanted)

    the coordinator, seeing no append on a claimed stream for a lease -> agent.lease_expired
    (expected at the version it saw): from then on the worker's renewal or report is refused
    (a ConcurrencyError), so it kills its agent and discards the result.

A claim is then *open* (queued or claimed: a worker may still act on it) or ended. Workers announce
themselves on ``worker-<name>`` (registered, heartbeats, stopped), which is what ``batchd workers``
shows and what the coordinator counts as slots.

This fold is pure and tolerant: an event that does not fit the claim's state (which the expected
versions make impossible for batchd's own writers) changes nothing and is counted in ``ignored``,
so no process with write access to the database can make the log unreadable through these streams.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from store import StoredEvent
from store.registry import registry

CLAIM_PREFIX = "claim-"
WORKER_PREFIX = "worker-"
WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def claim_stream(token: str) -> str:
    return CLAIM_PREFIX + token


def worker_stream(name: str) -> str:
    return WORKER_PREFIX + name


def worker_name_problem(name: str) -> str:
    """Why ``name`` cannot name a worker ("" when it can)."""
    if WORKER_NAME.fullmatch(name):
        return ""
    return "a worker's name is 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


# --- the refs that carry work through the git remote --------------------------------------------


BASE_REFS = "refs/batchd/base/"
TODO_REFS = "refs/batchd/todo/"
LOG_REFS = "refs/batchd/log/"


def base_ref(run_id: str, n: int) -> str:
    """The base the coordinator pushed for remote attempts: its ``n``-th distinct base of the run."""
    return f"{BASE_REFS}{run_id}/{n}"


def todo_ref(todo_id: str, attempt: int, token: str) -> str:
    """A worker's collected change of one claim of an attempt (one commit on the base, batchd's
    trailers). Named by the claim's token too: an attempt run again after a lease expired keeps its
    number, and a fenced worker's late push must not land on the ref of the run that replaced it."""
    return f"{TODO_REFS}{todo_id}/a{attempt}-{token[:16]}"


def log_ref(todo_id: str, attempt: int, token: str) -> str:
    """A commit whose tree holds the claim's agent log as ``agent.log`` (pushed by the worker)."""
    return f"{LOG_REFS}{todo_id}/a{attempt}-{token[:16]}"


LOG_NAME = "agent.log"


# --- events -------------------------------------------------------------------------------------


@registry.register("worker.registered", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerRegistered:
    """A worker process started (or started again) and offers ``slots`` agents at once."""

    name: str
    host: str
    slots: int
    pid: int
    version: str = ""  # batchd's version on the worker
    clone: str = ""  # its clone's folder on its host (for a person looking for its files)
    every: float = 0.0  # seconds between its heartbeats (0: not said)


@registry.register("worker.heartbeat", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerHeartbeat:
    """The worker is alive; ``running`` agents right now. ``trouble``: why it takes no claims for
    now (it could not reach the remote; it tries again later), empty when all is well."""

    name: str
    running: int = 0
    trouble: str = ""


@registry.register("worker.stopped", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStopped:
    name: str
    reason: str = ""


@registry.register("agent.queued", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentQueued:
    """Coordinator: attempt ``attempt`` of ``todo_id`` is for a worker, on ``base_sha`` (pushed as
    ``base_ref``). Everything the worker needs that is not in its clone comes with it: the todo file
    as the person has it now (base64: it may be uncommitted), and what the last attempt was told."""

    token: str
    todo_id: str
    attempt: int
    shown: str  # the id as its file name writes it (leading zeros kept)
    title: str
    todo_path: str  # repository-relative
    todo_b64: str
    base_sha: str
    base_ref: str
    branch: str
    lease: float  # seconds without an append on the claim after which the coordinator expires it
    repair: str = ""  # the repair instruction for this attempt ("" on a first attempt)
    failure_text: str = ""  # the failure file's text (why the last attempt was not accepted)
    session_id: str = ""  # a session the agent may resume ("" = start afresh)


@registry.register("agent.claimed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentClaimed:
    token: str
    worker: str
    host: str = ""


@registry.register("agent.lease_renewed", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseRenewed:
    """The worker still holds the claim; its agent's process once spawned (what a restarted worker
    of the same name kills: pid reuse is ruled out by ``start_ticks``)."""

    token: str
    worker: str
    pid: int = 0
    pgid: int = 0
    start_ticks: int | None = None


@registry.register("agent.lease_expired", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseExpired:
    """The claim's lease ran out (or its worker said it gave it up): its attempt is queued again."""

    token: str
    worker: str
    reason: str
    by: str = "coordinator"  # or the worker's name, when it gave the claim up itself


@registry.register("agent.reported", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentReported:
    """The worker's outcome of the attempt, appended under its lease.

    ``ok``: the agent succeeded and its change is ``commit``, pushed as ``ref``; otherwise ``reason``
    and ``detail`` say why it failed (as ``todo.agent_failed`` will). The log was pushed as
    ``log_ref`` (empty when the push failed)."""

    token: str
    worker: str
    ok: bool
    returncode: int | None = None
    duration: float = 0.0
    cost_usd: float | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    session_id: str = ""
    commit: str = ""
    ref: str = ""
    log_ref: str = ""
    reason: str = ""
    detail: str = ""
    log_tail: str = ""


@registry.register("agent.released", 1)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentReleased:
    """Coordinator: the claim is done with (its outcome recorded on the todo, or the todo no longer
    wants it: cancelled, interrupted, the run stopped). A worker still running it stops its agent."""

    token: str
    reason: str


DISPATCH_EVENTS = (
    WorkerRegistered,
    WorkerHeartbeat,
    WorkerStopped,
    AgentQueued,
    AgentClaimed,
    LeaseRenewed,
    LeaseExpired,
    AgentReported,
    AgentReleased,
)
DISPATCH_TYPES = frozenset(
    {
        "worker.registered",
        "worker.heartbeat",
        "worker.stopped",
        "agent.queued",
        "agent.claimed",
        "agent.lease_renewed",
        "agent.lease_expired",
        "agent.reported",
        "agent.released",
    }
)

QUEUED, CLAIMED, REPORTED, EXPIRED, RELEASED = "queued", "claimed", "reported", "expired", "released"
OPEN = frozenset({QUEUED, CLAIMED})


# --- views --------------------------------------------------------------------------------------


@dataclass(slots=True)
class ClaimView:
    """One remote attempt. ``version`` is its stream's version after the last event folded."""

    token: str
    todo_id: str
    attempt: int
    state: str = QUEUED
    version: int = 0
    base_sha: str = ""
    base_ref: str = ""
    lease: float = 0.0
    worker: str = ""
    queued_at: str = ""
    claimed_at: str = ""
    ended_at: str = ""
    pid: int = 0
    pgid: int = 0
    start_ticks: int | None = None
    report: dict[str, Any] = field(default_factory=dict)  # the agent.reported payload
    end_reason: str = ""  # why it expired or was released


@dataclass(slots=True)
class WorkerView:
    name: str
    host: str = ""
    slots: int = 0
    pid: int = 0
    state: str = "up"  # or "stopped"
    version: str = ""
    clone: str = ""
    every: float = 0.0
    registered_at: str = ""
    last_seen_at: str = ""  # its last append of any kind (heartbeat, claim, renewal, report)
    stream_version: int = 0
    claims: int = 0  # claims it won, ever
    reported: int = 0
    expired: int = 0
    trouble: str = ""  # from its last heartbeat: why it takes no claims for now


class Dispatch:
    """Workers and claims after the events folded so far (part of the projection)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.workers: dict[str, WorkerView] = {}
        self.claims: dict[str, ClaimView] = {}
        self.bases: dict[str, str] = {}  # base sha -> the ref it was pushed as, in this log
        self.ignored = 0  # events that did not fit (never written by batchd itself)

    # -- queries ------------------------------------------------------------------------------

    def open_claims(self) -> list[ClaimView]:
        return [c for c in self.claims.values() if c.state in OPEN]

    def claim_of(self, todo_id: str, attempt: int, token: str) -> ClaimView | None:
        claim = self.claims.get(token)
        if claim is None or claim.todo_id != todo_id or claim.attempt != attempt:
            return None
        return claim

    def held_by(self, worker: str) -> list[ClaimView]:
        return [c for c in self.claims.values() if c.state == CLAIMED and c.worker == worker]

    # -- the fold -----------------------------------------------------------------------------

    def apply(self, e: StoredEvent) -> None:
        p = e.payload
        try:
            if e.stream.startswith(WORKER_PREFIX):
                self._worker_event(e, p)
            elif e.stream.startswith(CLAIM_PREFIX):
                self._claim_event(e, p)
            else:
                self.ignored += 1
        except (AttributeError, KeyError, TypeError, ValueError):
            # A payload batchd never writes (keys missing, values of the wrong type): each event is
            # read whole before it changes a view, so it changes nothing.
            self.ignored += 1

    def _worker_event(self, e: StoredEvent, p: dict[str, Any]) -> None:
        name = str(p.get("name", ""))
        if e.stream != worker_stream(name):
            self.ignored += 1
            return
        worker = self.workers.get(name)
        if e.type == "worker.registered":
            host, slots, pid = str(p["host"]), int(p["slots"]), int(p["pid"])
            version, clone = str(p.get("version", "")), str(p.get("clone", ""))
            every = float(p.get("every", 0.0))
            if worker is None:
                worker = self.workers[name] = WorkerView(name)
            worker.host, worker.slots, worker.pid = host, slots, pid
            worker.version, worker.clone, worker.every = version, clone, every
            worker.state, worker.registered_at, worker.trouble = "up", e.recorded_at, ""
        elif worker is None:
            self.ignored += 1
            return
        elif e.type == "worker.heartbeat":
            worker.trouble = str(p.get("trouble", ""))
        elif e.type == "worker.stopped":
            worker.state, worker.trouble = "stopped", ""
        worker.last_seen_at = e.recorded_at
        worker.stream_version = e.version

    def _claim_event(self, e: StoredEvent, p: dict[str, Any]) -> None:
        token = str(p.get("token", ""))
        if e.stream != claim_stream(token):
            self.ignored += 1
            return
        claim = self.claims.get(token)
        kind = e.type
        if kind == "agent.queued":
            if claim is not None:
                self.ignored += 1
                return
            claim = ClaimView(token, str(p["todo_id"]), int(p["attempt"]))
            base_sha, base_ref, lease = str(p["base_sha"]), str(p["base_ref"]), float(p["lease"])
            claim.base_sha, claim.base_ref, claim.lease = base_sha, base_ref, lease
            claim.queued_at = e.recorded_at
            if base_ref.startswith(BASE_REFS):
                # Only a ref of batchd's base namespace is one the coordinator may push again (a
                # claim naming refs/heads/... was not written by batchd: its worker refuses it).
                self.bases.setdefault(claim.base_sha, claim.base_ref)
            self.claims[token] = claim
        elif claim is None or not self._moves(claim, kind, p, e):
            self.ignored += 1
            return
        claim.version = e.version

    def _moves(self, claim: ClaimView, kind: str, p: dict[str, Any], e: StoredEvent) -> bool:
        """Fold one later event of a claim; False (nothing changed) when it does not fit."""
        worker = str(p.get("worker", ""))
        if kind == "agent.claimed" and claim.state == QUEUED:
            claim.state, claim.worker, claim.claimed_at = CLAIMED, worker, e.recorded_at
            self._seen(worker, e, claims=1)
        elif kind == "agent.lease_renewed" and claim.state == CLAIMED and worker == claim.worker:
            ticks = p.get("start_ticks")
            pid, pgid = int(p.get("pid", 0)), int(p.get("pgid", 0))
            claim.pid, claim.pgid, claim.start_ticks = pid, pgid, None if ticks is None else int(ticks)
            self._seen(worker, e)
        elif kind == "agent.reported" and claim.state == CLAIMED and worker == claim.worker:
            claim.state, claim.report, claim.ended_at = REPORTED, dict(p), e.recorded_at
            self._seen(worker, e, reported=1)
        elif kind == "agent.lease_expired" and claim.state == CLAIMED:
            claim.state, claim.end_reason, claim.ended_at = EXPIRED, str(p.get("reason", "")), e.recorded_at
            if (known := self.workers.get(claim.worker)) is not None:
                known.expired += 1
        elif kind == "agent.released" and claim.state != RELEASED:
            claim.state, claim.end_reason = RELEASED, str(p.get("reason", ""))
            claim.ended_at = claim.ended_at or e.recorded_at
        else:
            return False
        return True

    def _seen(self, name: str, e: StoredEvent, *, claims: int = 0, reported: int = 0) -> None:
        worker = self.workers.get(name)
        if worker is not None:
            worker.last_seen_at = e.recorded_at
            worker.claims += claims
            worker.reported += reported

    # -- snapshots ----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "workers": [asdict(w) for w in self.workers.values()],
            "claims": [asdict(c) for c in self.claims.values()],
            "bases": dict(self.bases),
            "ignored": self.ignored,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Dispatch:
        d = cls()
        for row in data.get("workers", ()):
            d.workers[row["name"]] = WorkerView(**row)
        for row in data.get("claims", ()):
            d.claims[row["token"]] = ClaimView(**row)
        d.bases = dict(data.get("bases", {}))
        d.ignored = int(data.get("ignored", 0))
        return d

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Dispatch) and self.to_json() == other.to_json()
