"""The kubelet on the Docker-backed runtime: the same manifests, real containers on dockerd.

What the kubelet sees through the CRI is the same as on the native runtime; behind
the socket each pod is an infra container plus its app containers in dockerd.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.node import Node, condition, container_status, phase, running, runtime_node
from tests.harness.dockerd import RuntimeServer
from tests.harness.fixtures import HarnessImages

NODE_NAME = "dockr"


@pytest.fixture(scope="module")
async def docker_node(
    docker_runtime: RuntimeServer,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    async with runtime_node(
        tmp_path_factory.mktemp("docker-node"), docker_runtime.endpoint, NODE_NAME
    ) as node:
        yield node


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
