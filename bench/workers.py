"""Workers: the makespan of one coordinator with no slots of its own and 1, 2 and 4 ``batchd worker``s.

40 todos, each a real agent process (a bare ``python -S``, so each costs milliseconds of CPU) that
sleeps 2 s and writes a file of its own (no conflicts), so the host's cores are not what limits a
fleet; a check of a few milliseconds as the verify command. The coordinator (``batchd run --once``,
``local_slots = 0``, ``max_parallel = 8``: the fleet is the limit, never the coordinator's cap)
hands every agent to the workers, each ``--slots 2``, each with its own clone of the bare remote the
coordinator pushes to. The log is shared: a throwaway PostgreSQL server when this machine has its
binaries (a fresh database per fleet), else an SQLite file in the coordinator's repository (said in
the header). Every fleet gets a fresh repository, remote and clones, in this process, one after the
other; its workers are started and registered before the coordinator, so start-up is not counted.

Measured from the log, per fleet:

- makespan: ``run.started`` -> ``run.completed`` (recorded_at), as ``bench.makespan`` does: the
  whole run, the coordinator's last verify, phase commit and push included; the ratio is the
  1-worker fleet's makespan over this one's;
- claims per second: ``agent.claimed`` events / makespan;
- longest wait: over claims, ``agent.claimed`` - ``agent.queued`` of the same claim token (the
  coordinator queues an agent only when a live worker has a slot free, so this is the hand-off's
  latency, not a backlog);
- hand-back: the mean ``agent.reported`` -> ``agent.released`` (the coordinator fetches, checks and
  collects the change; the slot counts as taken until then), and busy: the share of the fleet's
  slot-seconds spent between ``agent.claimed`` and ``agent.reported``;
- CPU s: coordinator + workers, each with everything it ran and waited for (git, agents, verify;
  from ``wait4``; the database server's is not counted), and cores: that over the makespan. Near
  the machine's core count (or with other load on it: see the load printed), the cores, not the
  fleet, were the limit.

Aims (the issue's): >= 1.8x shorter with 2 workers than with 1, >= 3.2x with 4.

    python -m bench.workers             # 40 todos x 2 s, 1, 2 and 4 workers (about 3 minutes)
    python -m bench.workers --quick     # 12 todos x 0.5 s, 1 and 2 workers
    python -m bench.workers --json      # one JSON object on stdout instead of the table
    python -m bench.workers --sqlite    # the shared SQLite file even where PostgreSQL is at hand
    python -m bench.workers --workers 4 --keep   # one fleet; its folder (logs, events.jsonl) kept
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daemon.workspace import open_log
from store import EventLog, StoredEvent
from store.records import parse_time

if TYPE_CHECKING:
    from tests.pgserver import PgServer

SLOTS = 2  # per worker
LEASE = 10.0  # seconds; a worker renews every third of it
MAX_PARALLEL = 8  # above the biggest fleet's 8 slots, so the coordinator never limits
AIMS = {2: 1.8, 4: 3.2}  # workers -> the least ratio to 1 worker
FULL = (40, 2.0, (1, 2, 4))  # todos, agent sleep (s), fleets
QUICK = (12, 0.5, (1, 2))
RUN_TIMEOUT = 900.0  # seconds a fleet's run may take before the bench gives up on it
IDENTITY = (("user.name", "Bench"), ("user.email", "bench@example.com"), ("commit.gpgsign", "false"))
# The agent: a bare interpreter (no site, no batchd imports: a few milliseconds of CPU) that sleeps
# as its todo says and writes the todo's own file. An agent's wall time, not its CPU, is the point:
# the cores are left to batchd's own work (git, the log), which is what the bench measures.
AGENT_PROGRAM = """\
import os, re, sys, time
text = open(sys.argv[1], encoding="utf-8").read()
todo_id = re.search(r"# Todo (\\d+)", text).group(1)
time.sleep(float(re.search(r"sleep: ([0-9.]+)", text).group(1)))
os.makedirs("work", exist_ok=True)
with open(os.path.join("work", todo_id + ".txt"), "w", encoding="utf-8") as f:
    f.write("todo " + todo_id)
"""
AGENT = [sys.executable, "-S", "-c", AGENT_PROGRAM, "{todo_path}"]
CHECK = [sys.executable, "-B", "check.py"]


@dataclass(frozen=True, slots=True)
class Result:
    workers: int
    todos: int
    makespan: float  # seconds, run.started -> run.completed
    claims: int  # agent.claimed events
    reported: int  # agent.reported events
    longest_wait: float  # seconds, max agent.queued -> agent.claimed of one claim
    hand_back: float  # seconds, mean agent.reported -> agent.released (the coordinator takes the change)
    busy: float  # worker slot-seconds holding a claim (agent.claimed -> agent.reported)
    unclaimed: int  # claims queued and never claimed (released for want of a worker)
    expired: int  # leases that ran out or were given up
    interrupted: int  # todo.agent_interrupted (an attempt run again)
    completed: int  # distinct todos completed (on main in a phase commit)
    on_main: int  # work/*.txt files on main after the run
    success: bool  # the run's verdict
    exit_code: int  # of batchd run --once
    coordinator_cpu: float  # CPU seconds of the coordinator and what it ran (git, verify)
    workers_cpu: float  # of the workers and what they ran (agents, git); the server's is not counted

    @property
    def slots(self) -> int:
        return self.workers * SLOTS

    @property
    def claims_per_second(self) -> float:
        return self.claims / self.makespan if self.makespan else 0.0

    @property
    def utilisation(self) -> float:
        """Of the fleet's slot-seconds over the makespan, the share spent holding a claim."""
        return self.busy / (self.slots * self.makespan) if self.makespan else 0.0

    @property
    def cores(self) -> float:
        """Cores the fleet kept busy on average (near the machine's count: the cores were the limit)."""
        cpu = self.coordinator_cpu + self.workers_cpu
        return cpu / self.makespan if self.makespan else 0.0

    @property
    def complete(self) -> bool:
        """Every todo completed and on main, by a run that said so and exited 0."""
        return self.success and self.exit_code == 0 and self.todos == self.completed == self.on_main


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return done.stdout


def stamp(text: str) -> float:
    return parse_time(text).timestamp()


# --- the shared log ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SharedLog:
    """Where each fleet's log goes: ``kind`` for the header, ``new_db(root)`` for a fresh one."""

    kind: str
    server: PgServer | None = None  # on PostgreSQL

    def new_db(self, root: Path) -> str:
        """A fresh log for the fleet of ``root``: a new database's URL, or an SQLite file's path."""
        if self.server is None:
            return str(root / ".batchd" / "events.db")
        return self.server.url(self.server.create_database())


@contextlib.contextmanager
def shared_log(*, sqlite: bool) -> Iterator[SharedLog]:
    """A throwaway PostgreSQL server for the whole bench when this machine has one (stopped and
    removed at the end whatever happens), else SQLite files."""
    why = "--sqlite" if sqlite else ""
    bindir = None
    if not why:
        try:
            import psycopg  # noqa: F401 - the store's driver, needed by every process

            from tests.pgserver import find_bindir
        except ImportError as e:
            why = f"no PostgreSQL driver or test helpers ({e.name})"
        else:
            bindir = find_bindir()
            why = "" if bindir is not None else "no PostgreSQL server binaries"
    if bindir is None:
        yield SharedLog(kind=f"a shared SQLite file ({why})")
        return
    from sqlalchemy.engine import URL

    from tests.pgserver import SUPERUSER, PgServer, PrivateServer

    private = PrivateServer(bindir)
    try:
        private.init()
        private.start()
        url = URL.create(
            "postgresql+psycopg",
            username=SUPERUSER,
            database="postgres",
            query={"host": str(private.sock), "port": str(private.port)},
        ).render_as_string(hide_password=False)
        server = PgServer(base_url=url, tcp_port=private.port, private=True, folder=private.base)
        version = str(server.execute("SHOW server_version")[0][0]).split()[0]
        yield SharedLog(kind=f"PostgreSQL {version} (a throwaway server)", server=server)
    finally:
        private.stop()


# --- one fleet's repository --------------------------------------------------------------------


def todo_text(todo_id: str, seconds: float) -> str:
    script = f"sleep: {seconds:g}\nwrite: [{{path: work/{todo_id}.txt, content: 'todo {todo_id}'}}]"
    return f"# Todo {todo_id}\n\nDo the work of {todo_id}.\n\n```batchd-agent\n{script}\n```\n"


def config_text(db: str) -> str:
    return (
        "[batchd]\n"
        f'remote = "origin"\nlocal_slots = 0\nlease_seconds = {LEASE:g}\ndb = {json.dumps(db)}\n'
        f'max_parallel = {MAX_PARALLEL}\nmax_attempts = 2\nschedule = "continuous"\n'
        "rescan_interval = 600\n\n[agent]\n"
        f"command = {json.dumps(AGENT)}\ntimeout = 120\n"
        "\n[verify]\n"
        f"commands = [{json.dumps(CHECK)}]\nretries = 0\n"
    )


def build(folder: Path, *, todos: int, sleep: float, db: str) -> tuple[Path, Path]:
    """The coordinator's repository (its todos, batchd.toml, committed) and a bare remote beside it."""
    root = folder / "repo"
    (root / "todos").mkdir(parents=True)
    (root / "work").mkdir()
    (root / "work" / ".gitkeep").write_text("")
    (root / "check.py").write_text("print('ok')\n")
    for n in range(todos):
        todo_id = str(101 + n)
        (root / "todos" / f"{todo_id}-ready-p2-todo-{todo_id}.md").write_text(todo_text(todo_id, sleep))
    (root / "batchd.toml").write_text(config_text(db))
    git(root, "init", "-q", "-b", "main")
    for key, value in IDENTITY:
        git(root, "config", key, value)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", f"bench: {todos} todos in {folder.name}")
    remote = folder / "remote.git"
    git(folder, "clone", "-q", "--bare", str(root), str(remote))
    git(root, "remote", "add", "origin", str(remote))
    git(root, "fetch", "-q", "origin")
    return root, remote


def clone(remote: Path, dest: Path) -> Path:
    """A worker host's own clone of the remote, with its own identity."""
    git(dest.parent, "clone", "-q", str(remote), str(dest))
    for key, value in IDENTITY:
        git(dest, "config", key, value)
    return dest


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


# --- processes ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Child:
    """A process the bench started; reaped here with ``wait4``, which also gives its CPU time and
    that of everything it waited for (a worker waits for its agents and git commands)."""

    role: str  # "coordinator" or "worker"
    proc: subprocess.Popen[bytes]
    cpu: float = 0.0

    def poll(self) -> int | None:
        if self.proc.returncode is None:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                self.cpu = usage.ru_utime + usage.ru_stime
        return self.proc.returncode

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.proc.returncode


class Processes:
    """Every process a fleet started, torn down at the end: SIGTERM, a grace, then SIGKILL; then
    each agent group a worker recorded (a worker killed outright leaves its agent)."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self.outputs: list[Any] = []

    def start(self, role: str, argv: list[str], log_path: Path) -> Child:
        out = log_path.open("wb")
        self.outputs.append(out)
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=environment()
        )
        child = Child(role, proc)
        self.children.append(child)
        return child

    def cpu(self, role: str) -> float:
        return sum(c.cpu for c in self.children if c.role == role)

    def stop(self, events: list[StoredEvent], grace: float = 20.0) -> None:
        for child in self.children:
            if child.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in self.children:
            if child.wait(max(0.1, deadline - time.monotonic())) is None:
                child.proc.kill()
                child.wait(10)
        for e in events:
            pgid = int(e.payload.get("pgid") or 0) if e.type == "agent.lease_renewed" else 0
            if pgid > 1:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pgid, signal.SIGKILL)
        for out in self.outputs:
            out.close()


def worker_argv(clone_dir: Path, db: str, name: str) -> list[str]:
    return [
        sys.executable, "-m", "daemon", "worker", "-C", str(clone_dir), "--db", db,
        "--name", name, "--slots", str(SLOTS),
    ]  # fmt: skip


def read_new(log: EventLog, events: list[StoredEvent]) -> list[StoredEvent]:
    """``events`` with what the log gained since its last one."""
    since = events[-1].seq if events else 0
    events.extend(log.read(since=since))
    return events


def wait_registered(log: EventLog, events: list[StoredEvent], count: int, procs: Processes) -> None:
    deadline = time.monotonic() + 60
    while sum(1 for e in read_new(log, events) if e.type == "worker.registered") < count:
        if any(c.poll() is not None for c in procs.children):
            raise SystemExit("a worker exited before it registered (--keep keeps its log)")
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} workers did not register within 60 s")
        time.sleep(0.1)


def run_fleet(
    folder: Path, logs: SharedLog, *, workers: int, todos: int, sleep: float, keep: bool = False
) -> Result:
    """One fleet: build, start the workers, run the coordinator to the end, tear down, read the log."""
    label = f"{workers} worker{'s' if workers > 1 else ''}"
    folder.mkdir()
    db = logs.new_db(folder / "repo")
    root, remote = build(folder, todos=todos, sleep=sleep, db=db)
    clones = {f"w{n}": clone(remote, folder / f"w{n}") for n in range(1, workers + 1)}
    procs = Processes()
    events: list[StoredEvent] = []
    log = open_log(root, must_exist=False)  # made here: N workers racing to create a schema is not measured
    try:
        for name, where in clones.items():
            procs.start("worker", worker_argv(where, db, name), folder / f"{name}.log")
        wait_registered(log, events, workers, procs)
        progress(f"{label}: {workers} registered, coordinator starting")
        argv = [sys.executable, "-m", "daemon", "run", "--once", "--log-json", "-C", str(root)]
        coordinator = procs.start("coordinator", argv, folder / "coordinator.log")
        began, shown = time.monotonic(), -1
        while coordinator.poll() is None:
            if time.monotonic() - began > RUN_TIMEOUT:
                raise SystemExit(f"{label}: the run took over {RUN_TIMEOUT:.0f} s (--keep keeps its logs)")
            done = len({e.payload["todo_id"] for e in read_new(log, events) if e.type == "todo.accepted"})
            if done != shown:
                progress(f"{label}: {done}/{todos} accepted ({time.monotonic() - began:.1f} s)")
                shown = done
            time.sleep(0.5)
        progress(
            f"{label}: run ended (exit {coordinator.proc.returncode}) in {time.monotonic() - began:.1f} s"
        )
    finally:
        with contextlib.suppress(Exception):
            read_new(log, events)
        log.close()
        procs.stop(events)
        if keep:  # the log outlives a throwaway server this way
            with (folder / "events.jsonl").open("w") as out:
                out.writelines(json.dumps(e._asdict()) + "\n" for e in events)
    files = git(root, "ls-tree", "--name-only", "main", "work/").split()
    return measure(
        events,
        workers=workers,
        todos=todos,
        exit_code=coordinator.proc.returncode,
        files=files,
        cpu=(procs.cpu("coordinator"), procs.cpu("worker")),
    )


def measure(
    events: list[StoredEvent],
    *,
    workers: int,
    todos: int,
    exit_code: int,
    files: list[str],
    cpu: tuple[float, float],
) -> Result:
    def at(type_: str) -> dict[str, float]:
        """Claim stream -> when its (first) event of ``type_`` was recorded."""
        found: dict[str, float] = {}
        for e in events:
            if e.type == type_:
                found.setdefault(e.stream, stamp(e.recorded_at))
        return found

    first = next(stamp(e.recorded_at) for e in events if e.type == "run.started")
    completed = [e for e in events if e.type == "run.completed"]
    last = stamp(completed[-1].recorded_at) if completed else first
    queued, claimed = at("agent.queued"), at("agent.claimed")
    reported, released = at("agent.reported"), at("agent.released")
    waits = [t - queued[s] for s, t in claimed.items() if s in queued]
    backs = [released[s] - t for s, t in reported.items() if s in released]
    return Result(
        workers=workers,
        todos=todos,
        makespan=last - first,
        claims=len(claimed),
        reported=len(reported),
        longest_wait=max(waits, default=0.0),
        hand_back=sum(backs) / len(backs) if backs else 0.0,
        busy=sum(reported.get(s, last) - t for s, t in claimed.items()),
        unclaimed=len(queued.keys() - claimed.keys()),
        expired=sum(1 for e in events if e.type == "agent.lease_expired"),
        interrupted=sum(1 for e in events if e.type == "todo.agent_interrupted"),
        completed=len({e.payload["todo_id"] for e in events if e.type == "todo.completed"}),
        on_main=sum(1 for f in files if f.endswith(".txt")),
        success=bool(completed and completed[-1].payload.get("success")),
        exit_code=exit_code,
        coordinator_cpu=cpu[0],
        workers_cpu=cpu[1],
    )


# --- the report --------------------------------------------------------------------------------


def ratios(results: list[Result]) -> dict[int, float | None]:
    """Workers -> makespan of 1 worker / makespan of that many (None without a 1-worker fleet)."""
    one = next((r.makespan for r in results if r.workers == 1), None)
    return {r.workers: (one / r.makespan if one and r.makespan else None) for r in results}


def aims(results: list[Result]) -> dict[int, bool]:
    """Workers -> whether its ratio aim is met (the fleets that have an aim and a ratio)."""
    by = ratios(results)
    return {n: ratio >= aim for n, aim in AIMS.items() if (ratio := by.get(n)) is not None}


def notes(r: Result) -> str:
    """Whether the fleet did everything, and what went other than planned."""
    counts = {
        "not reported": r.claims - r.reported,
        "expired": r.expired,
        "interrupted": r.interrupted,
        "never claimed": r.unclaimed,
    }
    said = [f"{r.completed}/{r.todos} todos", f"{r.claims} claims"]
    said += [f"{n} {what}" for what, n in counts.items() if n]
    said += [f"exit {r.exit_code}"] if r.exit_code else []
    return f"{'yes' if r.complete else 'NO'} ({', '.join(said)})"


def print_table(results: list[Result], header: str) -> None:
    by = ratios(results)
    print(header)
    print(
        f"{'workers':>7} {'slots':>5} {'makespan':>9} {'ratio':>6} {'claims/s':>9} {'longest wait':>13}"
        f" {'hand-back':>10} {'busy':>5} {'CPU s':>10} {'cores':>5}  complete"
    )
    for r in results:
        ratio = by[r.workers]
        print(
            f"{r.workers:>7} {r.slots:>5} {r.makespan:8.1f}s {'-' if ratio is None else f'{ratio:.2f}x':>6}"
            f" {r.claims_per_second:9.2f} {r.longest_wait:12.2f}s {r.hand_back:9.2f}s {r.utilisation:5.0%}"
            f" {f'{r.coordinator_cpu:.0f}+{r.workers_cpu:.0f}':>10} {r.cores:5.1f}"
            f"  {notes(r)}"
        )
    for n, met in aims(results).items():
        print(f"aim: >= {AIMS[n]}x with {n} workers: {by[n]:.2f}x, {'met' if met else 'NOT met'}")
    print(f"load {os.getloadavg()[0]:.1f} at the end")


def _rounded(value: Any) -> Any:
    """Seconds and rates to the millisecond (the log's timestamps have no more)."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 todos of 0.5 s, 1 and 2 workers")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    parser.add_argument(
        "--sqlite", action="store_true", help="a shared SQLite file even if PostgreSQL is here"
    )
    parser.add_argument("--workers", type=int, nargs="+", metavar="N", help="the fleets (default 1 2 4)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the repositories, process logs and each log's events.jsonl"
    )
    args = parser.parse_args(argv)
    todos, sleep, fleets = QUICK if args.quick else FULL
    fleets = tuple(args.workers) if args.workers else fleets
    results: list[Result] = []
    load = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="batchd-workers-"))
    try:
        with shared_log(sqlite=args.sqlite) as logs:
            header = (
                f"{todos} todos, agents sleep {sleep:g} s, coordinator local_slots = 0, workers of "
                f"{SLOTS} slots; log: {logs.kind}; {os.cpu_count()} cores, load {load:.1f} at the start"
            )
            progress(header)
            for workers in fleets:
                where = folder / f"fleet-{workers}"
                results.append(
                    run_fleet(where, logs, workers=workers, todos=todos, sleep=sleep, keep=args.keep)
                )
    finally:
        if args.keep:
            progress(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    complete = all(r.complete for r in results)
    if args.json:
        by = ratios(results)
        report = {
            "todos": todos,
            "sleep": sleep,
            "slots_per_worker": SLOTS,
            "log": logs.kind,
            "cpu_count": os.cpu_count(),
            "load_at_start": round(load, 2),
            "load_at_end": round(os.getloadavg()[0], 2),
            "fleets": [
                {
                    **asdict(r),
                    "ratio": by[r.workers],
                    "claims_per_second": r.claims_per_second,
                    "utilisation": r.utilisation,
                    "cores_busy": r.cores,
                    "complete": r.complete,
                }
                for r in results
            ],
            "aims": {str(n): {"ratio": AIMS[n], "met": met} for n, met in aims(results).items()},
            "complete": complete,
        }
        print(json.dumps(_rounded(report), indent=2))
    else:
        print_table(results, header)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
