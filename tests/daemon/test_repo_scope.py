"""Several repositories in one PostgreSQL database: each run's events are scoped by its repository id
(``[batchd] repo_id``, by default the root commit's first 12 hex digits), so `batchd events`, `status`,
`replay` and `audit verify` of one repository see its own log only, and ``--repo-id`` reads another's.

Real parts throughout: two git repositories, `batchd run --once` as a process in each against one
database of the session's PostgreSQL server, and the CLI as a process.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from procs import DaemonProcess, batchd, git, make_repo

from daemon.config import load_config
from daemon.exceptions import UsageError
from daemon.workspace import log_scope, open_log, root_commit_id
from statemachine import events as ev
from store import EventLog
from tests.pgserver import PgServer
from tests.store.events import REG, Noted


@dataclass(frozen=True)
class Shared:
    url: str
    one: Path  # todos 1 and 2
    two: Path  # todo 7, and repo_id = "acme/two" in its batchd.toml


def set_db(root: Path, url: str, *, repo_id: str = "") -> None:
    """Point the repository's batchd.toml at ``url`` (and a repo_id), committed like a person would."""
    config = root / "batchd.toml"
    extra = f"db = {json.dumps(url)}\n" + (f"repo_id = {json.dumps(repo_id)}\n" if repo_id else "")
    config.write_text(config.read_text(encoding="utf-8").replace("[batchd]\n", "[batchd]\n" + extra))
    git(root, "commit", "-qam", "shared database")


def run_once(root: Path) -> None:
    daemon = DaemonProcess(root, "--once")
    try:
        assert daemon.wait(timeout=90) == 0, daemon.log_path.read_text()
    finally:
        daemon.kill()


@pytest.fixture(scope="module")
def shared(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """Two repositories whose runs went to completion, one after the other, in one database."""
    base = tmp_path_factory.mktemp("scope")
    with pg_server.fresh_database() as url:
        one = make_repo(
            base / "one",
            {"1": "write: [{path: a.txt, content: a}]", "2": "write: [{path: c.txt, content: c}]"},
        )
        two = make_repo(base / "two", {"7": "write: [{path: b.txt, content: b}]"})
        set_db(one, url)
        set_db(two, url, repo_id="acme/two")
        run_once(one)
        run_once(two)
        yield Shared(url, one, two)


def cli_json(root: Path, *args: str) -> object:
    done = batchd(root, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def events(root: Path, url: str, *args: str) -> list[dict[str, object]]:
    done = batchd(root, "events", "--db", url, "--json", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def todo_streams(evs: list[dict[str, object]]) -> set[str]:
    return {str(e["stream"]) for e in evs if str(e["stream"]).startswith("todo")}


def test_each_repository_sees_only_its_own_events(shared: Shared) -> None:
    """`batchd events` in each repository lists its own todos' streams only, numbered from 1."""
    one, two = events(shared.one, shared.url), events(shared.two, shared.url)
    assert todo_streams(one) == {"todo-1", "todo-2"}
    assert todo_streams(two) == {"todo-7"}
    assert [e["seq"] for e in one] == list(range(1, len(one) + 1))
    assert [e["seq"] for e in two] == list(range(1, len(two) + 1))


def test_status_shows_only_the_repositorys_own_todos(shared: Shared) -> None:
    """`batchd status` of each repository lists its own todos, all complete."""
    for root, ids in ((shared.one, ["1", "2"]), (shared.two, ["7"])):
        data = cli_json(root, "status", "--db", shared.url)
        assert isinstance(data, dict)
        assert [(t["id"], t["state"]) for t in data["todos"]] == [(i, "complete") for i in ids]


def test_audit_verify_of_each_repository_passes(shared: Shared) -> None:
    """`batchd audit verify` of each repository checks its own chain, which is intact."""
    for root in (shared.one, shared.two):
        own = len(events(root, shared.url))
        report = cli_json(root, "audit", "verify", "--db", shared.url)
        assert report == {"ok": True, "checked": own, "last_seq": own, "first_bad_seq": None, "problem": ""}


def test_repo_id_option_reads_another_repositorys_log(shared: Shared) -> None:
    """--repo-id on `events`, `replay` and `audit verify` reads the named repository's log instead."""
    other = root_commit_id(shared.one.resolve())
    assert todo_streams(events(shared.two, shared.url, "--repo-id", other)) == {"todo-1", "todo-2"}
    state = cli_json(shared.two, "replay", "--db", shared.url, "--repo-id", other)
    assert isinstance(state, dict)
    assert [t["id"] for t in state["todos"]] == ["1", "2"]
    report = cli_json(shared.two, "audit", "verify", "--db", shared.url, "--repo-id", other)
    assert isinstance(report, dict) and report["ok"]


def test_configured_repo_id_names_the_scope(shared: Shared) -> None:
    """A repository with [batchd] repo_id keeps its events under that id: from any folder,
    --repo-id acme/two reads them, and its root commit's id holds nothing."""
    assert todo_streams(events(shared.one, shared.url, "--repo-id", "acme/two")) == {"todo-7"}
    assert events(shared.one, shared.url, "--repo-id", root_commit_id(shared.two.resolve())) == []


def test_an_unknown_repo_id_reads_an_empty_log(shared: Shared) -> None:
    """A repository id nobody wrote under is an empty log, not another repository's events."""
    assert events(shared.one, shared.url, "--repo-id", "nobody/here") == []


def test_empty_repo_id_option_reads_the_unscoped_events(shared: Shared) -> None:
    """--repo-id "" reads the events written without a repository id (as before scopes existed),
    while the default still reads the repository's own."""
    with EventLog(shared.url, scope="", reg=REG) as log:
        log.append("unscoped", [Noted(text="written before repo ids")])
    assert [e["stream"] for e in events(shared.one, shared.url, "--repo-id", "")] == ["unscoped"]
    assert "unscoped" not in {e["stream"] for e in events(shared.one, shared.url)}


def test_default_repo_id_is_the_root_commit_in_every_clone(tmp_path: Path) -> None:
    """On PostgreSQL the default repository id is the root commit's first 12 hex digits, the same in
    a clone made elsewhere with more commits on top."""
    root = make_repo(tmp_path / "repo", {"1": "exit: 0"})
    first = git(root, "rev-list", "--max-parents=0", "HEAD")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True)
    (clone / "more.txt").write_text("more\n")
    git(clone, "add", "more.txt")
    git(clone, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "-qm", "more")
    url = "postgresql+psycopg://batchd@/db?host=/nowhere"
    assert log_scope(root, url) == first[:12]
    assert log_scope(clone, url) == first[:12]


def test_a_merged_unrelated_history_does_not_change_the_repository_id(tmp_path: Path) -> None:
    """Merging a history with a root of its own adds a second root commit: the id stays the root of
    the first-parent chain, whichever of the two roots sorts first, so the log is still found."""
    url = "postgresql+psycopg://batchd@/db?host=/nowhere"
    root = make_repo(tmp_path / "repo", {"1": "exit: 0"})
    before = log_scope(root, url)
    ours = git(root, "rev-list", "--max-parents=0", "HEAD")
    tree = git(root, "rev-parse", "HEAD^{tree}")
    # An unrelated root whose sha sorts before ours, found by trying messages: each try succeeds with
    # the chance ours/2**160 (about 1 in 2), so 200 tries fail only if our root's sha is tiny.
    for n in range(200):
        other = git(root, "commit-tree", tree, "-m", f"an unrelated history {n}")
        if other < ours:
            break
    else:
        pytest.skip(f"no unrelated root sorts before {ours} in 200 tries (ours is that small)")
    git(root, "merge", "-q", "--allow-unrelated-histories", "-m", "merge it", other)
    roots = sorted(git(root, "rev-list", "--max-parents=0", "HEAD").split())
    assert roots == sorted([ours, other]) and roots[0] == other
    root_commit_id.cache_clear()
    assert log_scope(root, url) == before


def test_a_shallow_clone_is_refused_with_how_to_name_it(tmp_path: Path) -> None:
    """A shallow clone's oldest commit is not the root: rather than a scope of its own (its events
    silently apart from every other clone's), a usage error saying to unshallow or set repo_id."""
    root = make_repo(tmp_path / "repo", {"1": "exit: 0"})
    (root / "more.txt").write_text("more\n")
    git(root, "add", "more.txt")
    git(root, "commit", "-qm", "more")
    shallow = tmp_path / "shallow"
    clone = ["git", "clone", "-q", "--depth", "1", f"file://{root}", str(shallow)]
    subprocess.run(clone, check=True, capture_output=True)
    with pytest.raises(UsageError) as info:
        log_scope(shallow, "postgresql+psycopg://batchd@/db?host=/nowhere")
    assert "shallow" in str(info.value) and "repo_id" in info.value.render()


def test_sqlite_log_is_the_repositorys_own(tmp_path: Path) -> None:
    """On SQLite the log keeps scope "" (its events are where they always were), unless repo_id says."""
    root = make_repo(tmp_path / "repo", {"1": "exit: 0"})
    with open_log(root, must_exist=False) as log:
        assert log.scope == ""
    with open_log(root, must_exist=False, repo_id="acme/x") as log:
        assert log.scope == "acme/x"


def test_repository_without_commits_on_postgres_says_to_set_repo_id(tmp_path: Path) -> None:
    """A repository with no commit has no root to name it on a shared database: a usage error saying
    to set repo_id."""
    (tmp_path / "empty").mkdir()
    git(tmp_path / "empty", "init", "-q")
    with pytest.raises(UsageError) as info:
        log_scope(tmp_path / "empty", "postgresql+psycopg://batchd@/db?host=/nowhere")
    assert "repo_id" in str(info.value)


@pytest.mark.parametrize("bad", ["has space", "-starts-with-dash", "semi;colon", "x" * 101, "tab\there"])
def test_bad_repo_id_option_exits_2(tmp_path: Path, bad: str) -> None:
    """--repo-id that is not a plain id is a usage error (exit 2) saying what an id may hold."""
    root = make_repo(tmp_path / "repo", {"1": "exit: 0"})
    EventLog(root / ".batchd" / "events.db").close()
    done = batchd(root, "events", "--repo-id", bad)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "repository id" in done.stderr


def test_bad_repo_id_in_config_is_refused_naming_the_key(tmp_path: Path) -> None:
    """repo_id = "a b" in batchd.toml is a configuration error naming batchd.repo_id."""
    root = make_repo(tmp_path / "repo", {"1": "exit: 0"})
    config = root / "batchd.toml"
    config.write_text(config.read_text().replace("[batchd]\n", '[batchd]\nrepo_id = "a b"\n'))
    with pytest.raises(Exception, match=r"batchd\.repo_id"):
        load_config(root)
    done = batchd(root, "events")
    assert done.returncode == 2
    assert "repo_id" in done.stderr


def test_a_log_from_before_scopes_holds_the_daemon_until_repo_id_says_which(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """A database whose only log is unscoped (a v1 log, migrated to scope "") is not silently
    started beside: `batchd run` exits 2 naming [batchd] repo_id and both answers; with
    repo_id = "-" the run goes on in that log, and the commands read it too."""
    with pg_server.fresh_database() as url:
        root = make_repo(tmp_path / "repo", {"1": "write: [{path: a.txt, content: a}]"})
        with EventLog(url, scope="") as log:  # a harmless event of a real log: an answer to nothing
            log.append(ev.CONTROL_STREAM, [ev.ControlHandled(request_seq=999, outcome="done")])
        set_db(root, url)
        done = batchd(root, "run", "--once", timeout=90)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "repo_id" in done.stderr and '"-"' in done.stderr and root_commit_id(root) in done.stderr
        config = root / "batchd.toml"
        config.write_text(config.read_text().replace("[batchd]\n", '[batchd]\nrepo_id = "-"\n'))
        git(root, "commit", "-qam", "go on with the old log")
        run_once(root)
        streams = [e["stream"] for e in events(root, url)]
        assert streams[0] == ev.CONTROL_STREAM and "todo-1" in streams
        assert events(root, url, "--repo-id", "-") == events(root, url, "--repo-id", "")


def test_an_explicit_repo_id_starts_beside_a_log_from_before_scopes(
    pg_server: PgServer, tmp_path: Path
) -> None:
    """Naming the repository (repo_id = its root id) is the other answer: the run starts in its own
    scope and the unscoped log stays as it was."""
    with pg_server.fresh_database() as url:
        root = make_repo(tmp_path / "repo", {"1": "write: [{path: a.txt, content: a}]"})
        with EventLog(url, scope="", reg=REG) as log:
            log.append("unscoped", [Noted(text="written before repo ids")])
        set_db(root, url, repo_id=root_commit_id(root))
        run_once(root)
        assert "unscoped" not in {e["stream"] for e in events(root, url)}
        assert [e["stream"] for e in events(root, url, "--repo-id", "-")] == ["unscoped"]


def test_commands_read_the_database_batchd_toml_names(shared: Shared) -> None:
    """`events`, `status` and `audit verify` without --db read the log at [batchd] db (the
    PostgreSQL database), not a .batchd/events.db that is not there."""
    assert not (shared.one / ".batchd" / "events.db").exists()
    done = batchd(shared.one, "events", "--json")
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == events(shared.one, shared.url)
    status = cli_json(shared.one, "status")
    assert isinstance(status, dict) and status["todos"]
    assert batchd(shared.one, "audit", "verify").returncode == 0
