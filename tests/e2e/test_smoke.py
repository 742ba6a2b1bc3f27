"""A manifest dropped into the directory runs; removing it stops the pod."""

from __future__ import annotations

from tests.e2e.node import Node, container_status, phase, running
from tests.e2e.support import wait_gone


async def test_hello_completes_and_logs(node: Node) -> None:
    node.add_manifest("hello.yaml")
    pod = await node.wait_pod("hello", lambda p: phase(p) == "Succeeded", what="hello to complete")
    terminated = container_status(pod, "hello")["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    async with node.client() as c:
        text = b"".join(
            [chunk async for chunk in c.logs("default", node.pod_name("hello"), "hello")]
        )
    assert text.decode().splitlines() == ["hello from minikubelet", "goodbye"]


async def test_removed_manifest_terminates_the_pod(node: Node) -> None:
    node.add_manifest("multi-container.yaml")
    await node.wait_pod("multi", lambda p: running(p, "app", "helper"), what="multi running")
    node.remove_manifest("multi-container.yaml")

    await wait_gone(node, "multi", timeout=30)
    reasons = [
        e["reason"]
        for e in await node.events()
        if e["involvedObject"]["name"] == node.pod_name("multi")
    ]
    assert reasons.count("Killing") == 2
