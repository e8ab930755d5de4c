"""The worker's loop: follow the claims, win some, keep their leases, report, and let go when told.

Every append to a claim stream is made at the version this worker last saw of it, so the log is the
fence (see :mod:`statemachine.dispatch`): a renewal or a report refused with a ConcurrencyError means
the claim is no longer this worker's (its lease expired, the coordinator released it), and the agent
is killed and its result discarded. Blocking steps (fetching, set-up, collecting, pushing) run in
the worker's pool; only this loop appends.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol

import structlog

from daemon.engine import outcomes
from daemon.exceptions import BatchdError, UsageError, printable
from daemon.worker import attempt as at
from daemon.worker.claims import claimable, lost
from daemon.world import agentproc, agentresult, exchange
from statemachine import dispatch as dp
from store import EventLog
from store.exceptions import ConcurrencyError, StoreError

log = structlog.get_logger(__name__)

TICK = 0.1  # seconds between looks at the log when nothing woke the loop
# A worker that cannot reach the remote gives its claim back and takes none for this long, doubled
# while the trouble lasts: the attempts go to others meanwhile, and none is counted against its todo.
BACKOFF_FIRST, BACKOFF_MAX = 5.0, 300.0


class StopFlags(Protocol):
    """What the loop needs of the process's signal flags (the CLI passes the service's SignalFlags)."""

    @property
    def stop_requested(self) -> int | None: ...

    def wait(self, timeout: float) -> bool: ...


class Worker:
    """One ``batchd worker`` process: ``run()`` until a stop signal, ``step()`` is one look."""

    def __init__(
        self,
        host: at.Host,
        log_: EventLog,
        *,
        slots: int,
        hostname: str,
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host = host
        self.log = log_
        self.slots = slots
        self.hostname = hostname
        self.version = version
        self.clock = clock
        self.name = host.name
        self.dispatch = dp.Dispatch()
        self.seq = 0
        self.attempts: dict[str, at.Attempt] = {}
        self.jobs: dict[str, Future[Any]] = {}
        self.pool = ThreadPoolExecutor(max_workers=slots + 1, thread_name_prefix="batchd-worker")
        self.stream_version = 0
        self.beat_at = 0.0
        self.every = host.config.batchd.lease_seconds / 3
        self.trouble = ""  # why this worker takes no claims until calm_at (monotonic)
        self.calm_at = 0.0
        self.backoff = 0.0

    # -- the log ---------------------------------------------------------------------------------

    def sync(self) -> None:
        for event in self.log.read(since=self.seq):
            if event.type in dp.DISPATCH_TYPES:
                self.dispatch.apply(event)
            self.seq = event.seq

    def _append(self, stream: str, event: object, expected: int) -> int:
        """Append at ``expected``; the stream's new version (a ConcurrencyError when it moved)."""
        stored = self.log.append(stream, [event], expected_version=expected)
        return stored[-1].version

    # -- start and stop --------------------------------------------------------------------------

    def register(self) -> None:
        """Announce this worker; an earlier run of it under the same name gives its claims up first
        (what it ran is killed when it ran on this host, by recorded pid and start time)."""
        self.sync()
        before = self.dispatch.workers.get(self.name)
        if (
            before is not None
            and before.state == "up"
            # On another host its pid says nothing here: only its beats tell that it is alive.
            and (
                before.host != self.hostname
                or (before.pid != os.getpid() and agentproc.process_alive(before.pid))
            )
            and self._beats(before)
        ):
            raise UsageError(
                f"a worker named {self.name!r} is already running on {before.host} (pid {before.pid})",
                hint="stop it first, or give this one another --name",
            )
        here = before is not None and before.host == self.hostname
        for claim in self.dispatch.claims.values():
            # What an earlier run of this worker left running here, claims since expired included
            # (a worker killed outright leaves its agents behind): killed, only if still the same
            # process (its start time is checked), never a pid reused since.
            if here and claim.worker == self.name and claim.pgid and claim.state in (dp.CLAIMED, dp.EXPIRED):
                agentproc.kill_leftover_group(claim.pgid, start_ticks=claim.start_ticks)
        at.remove_leftovers(self.host)
        for claim in self.dispatch.held_by(self.name):
            gave_up = dp.LeaseExpired(
                token=claim.token, worker=self.name, reason="its worker restarted", by=self.name
            )
            with contextlib.suppress(ConcurrencyError):  # the coordinator ended it meanwhile
                self._append(dp.claim_stream(claim.token), gave_up, claim.version)
        stream = dp.worker_stream(self.name)
        self.stream_version = self.log.stream_version(stream)
        registered = dp.WorkerRegistered(
            name=self.name,
            host=self.hostname,
            slots=self.slots,
            pid=os.getpid(),
            version=self.version,
            clone=str(self.host.root),
            every=round(self.every, 3),
        )
        self.stream_version = self._append(stream, registered, self.stream_version)
        self.beat_at = self.clock()
        log.info("worker_registered", name=self.name, slots=self.slots, clone=str(self.host.root))

    def _beats(self, worker: dp.WorkerView) -> bool:
        """Whether that worker's stream moved while we looked (it is alive, not a pid reused)."""
        version = self.log.stream_version(dp.worker_stream(worker.name))
        time.sleep(min(self.every * 1.5, 5.0))
        return self.log.stream_version(dp.worker_stream(worker.name)) != version

    def shutdown(self, reason: str) -> None:
        """Give every claim up (its agent killed), then say this worker stopped."""
        for a in list(self.attempts.values()):
            self._let_go(a)
            gave_up = dp.LeaseExpired(
                token=a.token, worker=self.name, reason=f"worker {self.name} stopped ({reason})", by=self.name
            )
            try:
                self._append(dp.claim_stream(a.token), gave_up, a.version)
            except (ConcurrencyError, StoreError) as e:
                log.warning("claim_not_given_up", token=a.token, error=str(e))
        self.attempts.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        try:
            stopped = dp.WorkerStopped(name=self.name, reason=reason)
            self._append(dp.worker_stream(self.name), stopped, self.stream_version)
        except (ConcurrencyError, StoreError) as e:
            log.warning("worker_stop_not_recorded", error=str(e))
        log.info("worker_stopped", name=self.name, reason=reason)

    def run(self, flags: StopFlags) -> int:
        self.register()
        try:
            while flags.stop_requested is None:
                try:
                    self.step()
                except StoreError as e:  # the database away for a moment: try again, lose nothing
                    log.error("worker_step_failed", error=e.render())  # noqa: TRY400 - the message is the point
                    flags.wait(1.0)
                flags.wait(TICK)
        finally:
            self.shutdown("signal" if flags.stop_requested is not None else "error")
        return 0

    # -- one look --------------------------------------------------------------------------------

    def step(self) -> None:
        now = self.clock()
        self.sync()
        if now - self.beat_at >= self.every:
            beat = dp.WorkerHeartbeat(name=self.name, running=len(self.attempts), trouble=self.trouble)
            try:
                self.stream_version = self._append(dp.worker_stream(self.name), beat, self.stream_version)
            except ConcurrencyError as e:
                raise UsageError(
                    f"another process writes as worker {self.name!r}",
                    hint="give each worker its own --name",
                ) from e
            self.beat_at = now
        for a in list(self.attempts.values()):
            self._look_after(a, now)
        self._claim(now)

    def _claim(self, now: float) -> None:
        if now < self.calm_at:
            return  # backing off: see _troubled
        for claim in claimable(self.dispatch):
            if len(self.attempts) >= self.slots:
                return
            events = self.log.read_stream(dp.claim_stream(claim.token))
            try:
                # decode(): fields a newer coordinator added are dropped, not a reason to skip it.
                queued = events[0].decode()
            except (TypeError, IndexError, BatchdError):
                continue  # not a claim batchd wrote (or one of a newer version): left alone
            if not isinstance(queued, dp.AgentQueued):
                continue
            won = dp.AgentClaimed(token=claim.token, worker=self.name, host=self.hostname)
            try:
                version = self._append(dp.claim_stream(claim.token), won, claim.version)
            except ConcurrencyError:
                continue  # another worker won it
            a = at.new_attempt(self.host, queued, version, now)
            self.attempts[a.token] = a
            self.jobs[a.token] = self.pool.submit(self._prepare, a)
            log.info("agent_claimed", todo_id=queued.todo_id, attempt=queued.attempt, token=a.token)

    def _prepare(self, a: at.Attempt) -> agentproc.AgentProcess | dp.AgentReported:
        try:
            return at.prepare(self.host, a)
        except exchange.RemoteUnreachable:
            raise  # the base could not be fetched: this host's trouble, see _give_back
        # Whatever a claim holds (its todo not text, fields of the wrong type), it fails that
        # attempt, reported; the worker goes on with the others.
        except Exception as e:  # noqa: BLE001
            result = outcomes.Result(outcome=_no_outcome(), reason="setup", detail=outcomes.message(e))
            return at.report_for(self.host, a, result)

    def _finish(self, a: at.Attempt) -> dp.AgentReported:
        try:
            return at.finish(self.host, a)
        except exchange.RemoteUnreachable:
            raise  # the change could not be pushed: as in _prepare
        except Exception as e:  # noqa: BLE001 - as in _prepare: one attempt's failure, reported
            result = outcomes.Result(outcome=_no_outcome(), reason="collect", detail=outcomes.message(e))
            return at.report_for(self.host, a, result)

    def _look_after(self, a: at.Attempt, now: float) -> None:
        claim = self.dispatch.claims.get(a.token)
        if lost(claim, self.name):
            why = claim.end_reason if claim is not None else "its claim is gone"
            self._drop(a, f"the claim is no longer this worker's: {why}")
            return
        assert claim is not None
        job = self.jobs.get(a.token)
        if job is not None and job.done():
            del self.jobs[a.token]
            try:
                result = job.result()
            except exchange.RemoteUnreachable as e:
                self._give_back(a, now, e)
                return
            except Exception as e:  # noqa: BLE001 - even its failure report failed: say so, unpushed
                detail = f"the worker could not run or report it: {outcomes.message(e)}"
                result = dp.AgentReported(
                    token=a.token, worker=self.name, ok=False, reason="setup", detail=detail
                )
            if isinstance(result, dp.AgentReported):
                a.report, a.phase = result, "reporting"
            else:
                a.proc, a.phase = result, "running"
                self._renew(a, now)  # the pid is on record at once, for a restart to find
                self._untroubled()  # its base came through
        if a.phase == "running" and a.proc is not None:
            if a.proc.poll() is None:
                agentproc.enforce_timeout(a.proc, self.host.config.agent.timeout, now)
                agentproc.cap_log(a.log_path, self.host.config.agent.max_log_bytes)
            else:
                a.phase = "finishing"
                self.jobs[a.token] = self.pool.submit(self._finish, a)
        if a.phase == "reporting" and a.report is not None:
            try:
                a.version = self._append(dp.claim_stream(a.token), a.report, a.version)
            except ConcurrencyError:
                self._drop(a, "its result came after the claim was lost: discarded")
                return
            del self.attempts[a.token]
            at.discard(a)
            log.info("agent_reported", todo_id=a.todo_id, ok=a.report.ok, reason=a.report.reason)
            if a.report.ok:
                self._untroubled()  # its change went through
            return
        if now - a.renewed_at >= claim.lease / 3:
            self._renew(a, now)

    def _renew(self, a: at.Attempt, now: float) -> None:
        proc = a.proc
        renewed = dp.LeaseRenewed(
            token=a.token,
            worker=self.name,
            pid=proc.pid if proc is not None else 0,
            pgid=proc.pgid if proc is not None else 0,
            start_ticks=proc.start_ticks if proc is not None else None,
        )
        try:
            a.version = self._append(dp.claim_stream(a.token), renewed, a.version)
            a.renewed_at = now
        except ConcurrencyError:
            self.sync()
            self._drop(a, "its lease was lost (renewal refused)")

    def _give_back(self, a: at.Attempt, now: float, error: exchange.RemoteUnreachable) -> None:
        """The remote could not be reached for this attempt (its base, or its change after the
        tries): what the agent did is lost, but not counted against its todo. The claim is given
        back, so the coordinator runs the attempt again elsewhere at once, and this worker backs off."""
        why = f"worker {self.name} could not reach the remote: {error.message}"
        self._let_go(a)
        self.attempts.pop(a.token, None)
        gave_up = dp.LeaseExpired(token=a.token, worker=self.name, reason=printable(why), by=self.name)
        with contextlib.suppress(ConcurrencyError):  # the claim was ended meanwhile: nothing to give
            self._append(dp.claim_stream(a.token), gave_up, a.version)
        log.error("claim_given_back", todo_id=a.todo_id, attempt=a.queued.attempt, why=why)
        self._troubled(now, why)

    def _troubled(self, now: float, why: str) -> None:
        self.backoff = min(BACKOFF_MAX, max(BACKOFF_FIRST, self.backoff * 2))
        self.calm_at, self.trouble = now + self.backoff, printable(why)
        self.beat_at = -self.every  # the next look says so in a heartbeat, for `batchd workers`
        log.error("worker_backing_off", why=why, seconds=self.backoff)

    def _untroubled(self) -> None:
        if self.trouble:
            log.info("worker_trouble_over", was=self.trouble)
            self.trouble, self.backoff, self.beat_at = "", 0.0, -self.every

    def _drop(self, a: at.Attempt, why: str) -> None:
        self._let_go(a)
        self.attempts.pop(a.token, None)
        log.warning("claim_lost", todo_id=a.todo_id, attempt=a.queued.attempt, why=why)

    def _let_go(self, a: at.Attempt) -> None:
        """Kill the attempt's agent and remove its workspace; a prepare still under way (it starts
        its agent after this) gets the same once it is done."""
        at.discard(a)
        job = self.jobs.pop(a.token, None)
        if job is not None:
            job.add_done_callback(functools.partial(_discard_late, a))


def _discard_late(a: at.Attempt, future: Future[Any]) -> None:
    """A prepare still running when the claim was lost may have started an agent (kill it) and made
    the workspace after it was removed, or half of it, then failed (remove it either way)."""
    result = None if future.cancelled() or future.exception() else future.result()
    if isinstance(result, agentproc.AgentProcess):
        a.proc = result
    at.discard(a)


def _no_outcome() -> agentresult.AgentOutcome:
    return agentresult.AgentOutcome(
        rc=-1, duration=0.0, timed_out=False, summary=None, is_error=False, cost_usd=None,
        num_turns=None, session_id=None, log_tail="",
    )  # fmt: skip
