"""daemon.world.notify: sd_notify messages arrive on a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from daemon.world.notify import Notifier


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a file in tmp_path, standing in for systemd."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    address = str(tmp_path / "notify.sock")
    sock.bind(address)
    sock.settimeout(2.0)
    yield sock, address
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket in the Linux abstract namespace, named as systemd names it (`@...`)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"batchd-test-{uuid.uuid4().hex}"
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    yield sock, "@" + name
    sock.close()


def _recv(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


def _drain(sock: socket.socket) -> list[str]:
    """Every datagram already queued, without waiting."""
    got: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            got.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(2.0)
    return got


def test_ready_arrives_on_path_socket(path_socket: tuple[socket.socket, str]) -> None:
    """ready() sends READY=1 to a filesystem NOTIFY_SOCKET."""
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    assert notifier.ready() is True
    assert _recv(sock) == "READY=1"


def test_ready_arrives_on_abstract_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    """An `@name` NOTIFY_SOCKET is the abstract socket `\\0name`."""
    sock, address = abstract_socket
    Notifier.from_env({"NOTIFY_SOCKET": address}).ready()
    assert _recv(sock) == "READY=1"


def test_status_lines_arrive_in_order(path_socket: tuple[socket.socket, str]) -> None:
    """Each status() call is one STATUS= datagram, in call order."""
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address})
    notifier.status("replaying 1200 events")
    notifier.status("batch 1.1: 3 agents running")
    assert [_recv(sock), _recv(sock)] == [
        "STATUS=replaying 1200 events",
        "STATUS=batch 1.1: 3 agents running",
    ]


def test_status_is_kept_on_one_line(path_socket: tuple[socket.socket, str]) -> None:
    """A newline in the status text cannot inject a second assignment."""
    sock, address = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": address}).status("failed\nREADY=1")
    assert _recv(sock) == "STATUS=failed READY=1"


def test_stopping_arrives(path_socket: tuple[socket.socket, str]) -> None:
    """stopping() sends STOPPING=1."""
    sock, address = path_socket
    Notifier.from_env({"NOTIFY_SOCKET": address}).stopping()
    assert _recv(sock) == "STOPPING=1"


def test_unset_socket_is_a_noop() -> None:
    """Without NOTIFY_SOCKET every call returns False and nothing is logged."""
    notifier = Notifier.from_env({})
    with capture_logs() as logs:
        sent = [notifier.ready(), notifier.status("x"), notifier.watchdog(), notifier.stopping()]
        sent.append(notifier.maybe_ping(0.0))
    assert not notifier.enabled
    assert sent == [False] * 5
    assert logs == []


def test_send_failure_warns_once_and_never_raises(tmp_path: Path) -> None:
    """A socket path with no listener logs one warning however many sends fail."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with capture_logs() as logs:
        results = [notifier.ready(), notifier.status("a"), notifier.watchdog()]
    assert results == [False, False, False]
    assert [entry["event"] for entry in logs] == ["sd_notify_failed"]
    assert logs[0]["log_level"] == "warning"


def test_watchdog_interval_is_half_of_watchdog_usec() -> None:
    """WATCHDOG_USEC=60s gives a 30 s ping interval."""
    notifier = Notifier.from_env({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "60000000"})
    assert notifier.watchdog_interval() == 30.0


def test_watchdog_interval_for_our_pid() -> None:
    """WATCHDOG_PID equal to our pid keeps the watchdog."""
    env = {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_env(env).watchdog_interval() == 0.5


def test_watchdog_meant_for_another_pid_is_ignored(path_socket: tuple[socket.socket, str]) -> None:
    """WATCHDOG_PID naming another process disables pings (an inherited environment)."""
    sock, address = path_socket
    env = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    notifier = Notifier.from_env(env)
    assert notifier.watchdog_interval() is None
    assert notifier.maybe_ping(0.0) is False
    assert _drain(sock) == []


def test_no_watchdog_usec_means_no_interval() -> None:
    """Without WATCHDOG_USEC (WatchdogSec unset) there is no interval."""
    assert Notifier.from_env({"NOTIFY_SOCKET": "@x"}).watchdog_interval() is None


def test_maybe_ping_follows_the_injected_clock(path_socket: tuple[socket.socket, str]) -> None:
    """Ticks every 1/64 s with a 1/16 s interval ping on every fourth tick, starting at once."""
    sock, address = path_socket
    # Binary fractions keep the clock arithmetic exact: 125 ms watchdog -> 62.5 ms = 1/16 s.
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "125000"})
    pinged, received = [], []
    for i in range(65):
        if notifier.maybe_ping(i / 64):
            pinged.append(i)
        received += _drain(sock)  # read as systemd does: the datagram queue is short
    assert pinged == list(range(0, 65, 4))
    assert received == ["WATCHDOG=1"] * 17


def test_pings_arrive_at_the_interval_rate(path_socket: tuple[socket.socket, str]) -> None:
    """A live loop calling maybe_ping every 5 ms delivers one ping per 50 ms interval."""
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    received: list[str] = []
    start = time.monotonic()
    while (now := time.monotonic()) - start < 0.5:
        notifier.maybe_ping(now)
        received += _drain(sock)
        time.sleep(0.005)
    assert set(received) == {"WATCHDOG=1"}
    # 0.5 s / 0.05 s = 10 intervals, plus the ping at the start; never more than that.
    assert 7 <= len(received) <= 11


def test_blocked_loop_sends_no_pings(path_socket: tuple[socket.socket, str]) -> None:
    """While the loop is stuck (no maybe_ping calls) nothing arrives; the next tick pings again."""
    sock, address = path_socket
    notifier = Notifier.from_env({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    assert notifier.maybe_ping(time.monotonic())
    assert _recv(sock) == "WATCHDOG=1"
    time.sleep(0.3)  # six intervals with the loop "hung"
    assert _drain(sock) == []
    assert notifier.maybe_ping(time.monotonic())
    assert _drain(sock) == ["WATCHDOG=1"]


def test_full_receiver_queue_does_not_hang_the_loop(path_socket: tuple[socket.socket, str]) -> None:
    """When nobody reads the socket, a send gives up after send_timeout instead of blocking."""
    _, address = path_socket
    queue_length = int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    notifier = Notifier(address, send_timeout=0.1)
    with capture_logs() as logs:
        results = [notifier.status(str(i)) for i in range(queue_length + 3)]
    assert results[0] is True
    assert results[-1] is False
    assert [entry["event"] for entry in logs] == ["sd_notify_failed"]
