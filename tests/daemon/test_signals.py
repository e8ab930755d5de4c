"""daemon.service.signals: handlers only set flags. Each test signals a fresh subprocess, not pytest."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

_PRELUDE = textwrap.dedent(
    """
    import json, os, signal, threading, time
    from daemon.service.signals import SignalFlags
    flags = SignalFlags()
    def report(**extra):
        print(json.dumps({"stop": flags.stop_requested, "count": flags.stop_count,
                          "reload": flags.reload_requested, **extra}))
    """
)


def _run(body: str) -> dict[str, Any]:
    """Run the prelude plus ``body`` in a new interpreter and return its JSON report."""
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def test_sigterm_sets_stop_requested() -> None:
    """SIGTERM records its number in stop_requested and the process keeps running."""
    report = _run(
        """
        flags.install()
        os.kill(os.getpid(), signal.SIGTERM)
        report()
        """
    )
    assert report == {"stop": 15, "count": 1, "reload": False}


def test_sigint_sets_stop_requested_instead_of_keyboardinterrupt() -> None:
    """SIGINT (Ctrl-C) becomes a flag, not a KeyboardInterrupt in the middle of a tick."""
    report = _run(
        """
        flags.install()
        os.kill(os.getpid(), signal.SIGINT)
        report()
        """
    )
    assert report["stop"] == 2


def test_first_stop_signal_wins_and_later_ones_are_counted() -> None:
    """SIGINT after SIGTERM keeps SIGTERM as the reason and raises stop_count to 2."""
    report = _run(
        """
        flags.install()
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        report()
        """
    )
    assert (report["stop"], report["count"]) == (15, 2)


def test_sighup_sets_reload_requested_only() -> None:
    """SIGHUP asks for a reload and does not ask for a stop."""
    report = _run(
        """
        flags.install()
        os.kill(os.getpid(), signal.SIGHUP)
        report()
        """
    )
    assert report == {"stop": None, "count": 0, "reload": True}


def test_take_reload_clears_the_flag() -> None:
    """take_reload() returns True once per SIGHUP, then False."""
    report = _run(
        """
        flags.install()
        os.kill(os.getpid(), signal.SIGHUP)
        first, second = flags.take_reload(), flags.take_reload()
        report(taken=[first, second])
        """
    )
    assert report["taken"] == [True, False]
    assert report["reload"] is False


def test_restore_puts_back_previous_handlers() -> None:
    """After restore() the handlers and wake-up fd are the ones from before install()."""
    report = _run(
        """
        def mine(signum, frame):
            pass
        signal.signal(signal.SIGHUP, mine)
        before = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]
        flags.install()
        flags.restore()
        after = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]
        wakeup = signal.set_wakeup_fd(-1)
        report(same=before == after, wakeup=wakeup)
        """
    )
    assert report["same"] is True
    assert report["wakeup"] == -1


def test_restored_sigterm_kills_again() -> None:
    """After restore(), SIGTERM has its default effect (the process dies)."""
    proc = subprocess.run(
        [sys.executable, "-c", _PRELUDE + "flags.install(); flags.restore(); os.kill(os.getpid(), 15)"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert proc.returncode == -15


def test_wait_returns_early_on_signal() -> None:
    """wait(10) returns True well before 10 s when SIGTERM arrives from another thread."""
    report = _run(
        """
        flags.install()
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
        start = time.monotonic()
        woke = flags.wait(10)
        report(woke=woke, took=time.monotonic() - start)
        """
    )
    assert report["woke"] is True
    assert report["took"] < 3


def test_wait_times_out_without_signal() -> None:
    """wait() with no signal sleeps its timeout and returns False."""
    report = _run(
        """
        flags.install()
        start = time.monotonic()
        woke = flags.wait(0.2)
        report(woke=woke, took=time.monotonic() - start)
        """
    )
    assert report["woke"] is False
    assert report["took"] >= 0.19


def test_wait_returns_at_once_when_already_pending() -> None:
    """A signal that arrived before wait() is not slept through."""
    report = _run(
        """
        flags.install()
        os.kill(os.getpid(), signal.SIGHUP)
        start = time.monotonic()
        woke = flags.wait(10)
        report(woke=woke, took=time.monotonic() - start)
        """
    )
    assert report["woke"] is True
    assert report["took"] < 1
