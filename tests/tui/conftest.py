"""A real kubelet on the simulated runtime for the dashboard's live tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.e2e.node import Node, phase, running
from tui.feed import Backoff, Feed, LiveKubelet

MANIFESTS = ("hello.yaml", "multi-container.yaml")


async def start_node(workdir: Path) -> Node:
    node = Node(workdir, node_name="tui")
    for name in MANIFESTS:
        node.add_manifest(name)
    node.start()
    await node.wait_ready()
    await node.wait_pod("hello", lambda p: phase(p) == "Succeeded", what="hello to complete")
    await node.wait_pod("multi", lambda p: running(p, "app", "helper"), what="multi running")
    return node


#: The kubelet's log API writes the end of a followed log to a reader that left long ago
#: when it shuts down (``write_eof`` outside its ConnectionResetError guard); the
#: dashboard leaves such streams whenever it switches container. Not the dashboard's bug.
KNOWN = "Cannot write to closing transport"


def unexpected_tracebacks(log: str) -> list[str]:
    """The tracebacks in a kubelet log, but for the known one above."""
    found = []
    for chunk in log.split("Traceback (most recent call last):")[1:]:
        lines = [line for line in chunk.splitlines() if line and not line.startswith(" ")]
        if not (lines and KNOWN in lines[0]):
            found.append(lines[0] if lines else chunk[:200])
    return found


def live_feed(node: Node) -> Feed:
    """The dashboard's feed on ``node``, polling and retrying faster than a person needs."""
    return Feed(
        LiveKubelet(node.root_dir / "kubelet.sock"),
        poll_interval=0.2,
        backoff=Backoff(initial=0.1, factor=2, cap=0.5),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def live_node(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Node]:
    """One node for a module's tests: hello (completed) and multi (two containers running)."""
    node = await start_node(tmp_path_factory.mktemp("tui-node"))
    try:
        yield node
    finally:
        node.stop()
        assert not unexpected_tracebacks(node.log()), node.log()[-6000:]


@pytest_asyncio.fixture(loop_scope="session")
async def own_node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node for one test that stops and restarts it."""
    node = await start_node(tmp_path)
    try:
        yield node
    finally:
        node.stop()
        assert not unexpected_tracebacks(node.log()), node.log()[-6000:]
