"""The kubelet on the Docker-backed runtime: the same manifests, real containers on dockerd.

What the kubelet sees through the CRI is the same as on the native runtime; behind
the socket each pod is an infra container plus its app containers in dockerd.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from minikubelet.cri.client import CRIClient
from tests.e2e.node import FAST, Node, condition, container_status, phase, running, wait_for
from tests.harness.dockerd import RuntimeServer
from tests.harness.fixtures import HarnessImages

NODE_NAME = "dockr"


@pytest.fixture(scope="module")
async def docker_node(
    docker_runtime: RuntimeServer,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    node = Node(
        tmp_path_factory.mktemp("docker-node"),
        runtime=docker_runtime.endpoint,
        node_name=NODE_NAME,
        extra_args=FAST,
    )
    node.start()
    try:
        await node.wait_ready()
        yield node
        for manifest in node.manifests.glob("*.yaml"):
            manifest.unlink()

        async def empty() -> bool | None:
            return True if not await node.pods() else None

        await wait_for(empty, timeout=90, what="the node to have no pods left")
        async with CRIClient(docker_runtime.endpoint) as cri:
            assert [s.metadata.name for s in await cri.list_pod_sandbox()] == []
    finally:
        assert node.stop() == 0
        assert "Traceback" not in node.log(), node.log()[-4000:]


async def test_manifests_run_on_docker(docker_node: Node) -> None:
    for name in ("hello.yaml", "init-containers.yaml", "probes.yaml", "crash-loop.yaml"):
        docker_node.add_manifest(name)
    hello = await docker_node.wait_pod("hello", lambda p: phase(p) == "Succeeded", timeout=90)
    assert container_status(hello, "hello")["containerID"].startswith("docker://")
    async with docker_node.client() as c:
        chunks = [x async for x in c.logs("default", docker_node.pod_name("hello"), "hello")]
    assert b"".join(chunks).decode().splitlines() == ["hello from minikubelet", "goodbye"]
    await docker_node.wait_pod("init-demo", lambda p: running(p, "app"), timeout=90)
    await docker_node.wait_pod(
        "probes", lambda p: condition(p, "Ready") == "True", timeout=60, what="probes Ready"
    )
    crash = await docker_node.wait_pod(
        "crash-loop",
        lambda p: container_status(p, "crasher").get("restartCount", 0) >= 2,
        timeout=90,
    )
    last = container_status(crash, "crasher")["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    async with docker_node.client() as c:
        result = await c.exec(
            "default",
            docker_node.pod_name("init-demo"),
            "app",
            ["sh", "-c", "echo from docker; exit 4"],
        )
    assert (result.exit_code, result.stdout) == (4, b"from docker\n")
