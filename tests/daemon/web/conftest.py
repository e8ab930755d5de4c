"""Fixtures of the dashboard tests: one real demo run, shared read-only, and apps serving it.

The demo run is the real thing (``batchd run --once`` as a subprocess on ``batchd demo``'s project,
its scripted agents, real git, a real bare remote): about half a minute, once per test session. Tests
that append (control buttons) or change files take :func:`demo_copy`, a copy of their own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from daemon.demo.project import build_demo
from daemon.web.app import create_app
from daemon.web.model import LiveModel

RUN_TIMEOUT = 240.0
# A loopback Host: the app refuses any other on a loopback bind (DNS rebinding), TestClient's default too.
BASE_URL = "http://127.0.0.1"


def run_demo_daemon(root: Path) -> None:
    """``batchd run --once`` on ``root`` to its end; fails the test session with its log if it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "daemon", "run", "--once", "-C", str(root)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    # 1 = the run ended with failed or blocked todos, which the demo's scenario has on purpose.
    assert done.returncode in (0, 1), f"demo run exited {done.returncode}:\n{done.stderr[-4000:]}"


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished demo run (read-only for the tests: take ``demo_copy`` to change anything)."""
    project = build_demo(tmp_path_factory.mktemp("web-demo") / "project", speed=0, agent_timeout=2.0)
    run_demo_daemon(project.root)
    return project.root


@pytest.fixture
def demo_copy(demo_root: Path, tmp_path: Path) -> Path:
    """A copy of the finished demo run (repository, remote and log) that a test may change."""
    dest = tmp_path / "project"
    shutil.copytree(demo_root, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def demo_model(demo_root: Path) -> Iterator[LiveModel]:
    """The demo run's log folded once and followed, shared by the read-only page tests."""
    model = LiveModel(demo_root)
    model.start()
    yield model
    model.stop()


@pytest.fixture
def client(demo_model: LiveModel) -> Iterator[TestClient]:
    """An HTTP client of the dashboard of the demo run (no token)."""
    with TestClient(create_app(demo_model, start_model=False), base_url=BASE_URL) as test_client:
        yield test_client


@pytest.fixture
def client_for() -> Iterator[Callable[..., TestClient]]:
    """``client_for(root, token=None)``: an HTTP client of a dashboard with a model of its own."""
    opened: list[TestClient] = []

    def make(root: Path, *, token: str | None = None) -> TestClient:
        test_client = TestClient(create_app(LiveModel(root), token=token), base_url=BASE_URL)
        test_client.__enter__()
        opened.append(test_client)
        return test_client

    yield make
    for test_client in opened:
        test_client.__exit__(None, None, None)
