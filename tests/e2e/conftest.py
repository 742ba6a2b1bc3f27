"""Fixtures for end-to-end tests: a node per test on the simulated runtime."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from minikubelet.util.mountinfo import read_mount_points
from tests.e2e.node import Node


def unmount_under(path: Path) -> None:
    """Whatever a failed test left mounted below ``path`` (tmpfs emptyDirs, secret volumes)."""
    mounts = read_mount_points()
    for point in sorted((m for m in mounts if m.startswith(str(path))), reverse=True):
        subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    unmount_under(tmp_path)


@pytest.fixture
async def node(workdir: Path) -> AsyncIterator[Node]:
    """``minikubelet run`` on the simulated runtime, with an empty manifest directory."""
    n = Node(workdir)
    n.start()
    try:
        await n.wait_ready()
        yield n
    finally:
        n.stop()
        assert "Traceback" not in n.log(), n.log()[-6000:]
