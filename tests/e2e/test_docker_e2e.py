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


HOST_ALIASES = """\
apiVersion: v1
kind: Pod
metadata:
  name: hostaliases-pod
spec:
  restartPolicy: Never
  hostAliases:
    - ip: "10.1.2.3"
      hostnames: ["foo.remote", "bar.remote"]
  containers:
    - name: cat-hosts
      image: busybox:1.36
      command: ["cat", "/etc/hosts"]
"""


async def test_etc_hosts_is_the_kubelets_with_host_aliases(docker_node: Node) -> None:
    docker_node.add_manifest("hostaliases.yaml", HOST_ALIASES)
    pod = await docker_node.wait_pod(
        "hostaliases-pod", lambda p: phase(p) == "Succeeded", timeout=60
    )
    async with docker_node.client() as c:
        chunks = [
            x async for x in c.logs("default", docker_node.pod_name("hostaliases-pod"), "cat-hosts")
        ]
    lines = b"".join(chunks).decode().splitlines()
    # the kubelet's file over Docker's own
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert f"{pod['status']['podIP']}\thostaliases-pod-{NODE_NAME}" in lines
    assert lines[-3:] == ["", "# Entries added by HostAliases.", "10.1.2.3\tfoo.remote\tbar.remote"]
