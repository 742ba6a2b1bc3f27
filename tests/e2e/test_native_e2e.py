"""The kubelet on the native runtime: real containers run by runc under conmon.

The manifests from manifests/ run verbatim (``busybox:1.36`` comes from the
local registry, which the runtime uses as its docker.io mirror); a pod serves
HTTP with busybox httpd, and the kubelet's httpGet readiness probe reaches it
at the pod's own IP on the runtime's CNI bridge.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.node import Node, condition, container_status, phase, running, runtime_node
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime

NODE_NAME = "native"

WEB = """apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: httpd
      image: busybox:1.36
      command:
        - sh
        - -c
        - mkdir -p /www && echo served by runc > /www/index.html && exec httpd -f -p 8080 -h /www
      ports: [{containerPort: 8080, name: http}]
      readinessProbe:
        httpGet: {path: /, port: http}
        periodSeconds: 1
"""


@pytest.fixture(scope="module")
async def native_node(
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    async with runtime_node(
        tmp_path_factory.mktemp("native-node"), native_runtime.endpoint, NODE_NAME
    ) as node:
        yield node
    assert "Traceback" not in native_runtime.log(), native_runtime.log()[-4000:]


async def test_hello_runs_in_a_real_container(native_node: Node) -> None:
    native_node.add_manifest("hello.yaml")
    pod = await native_node.wait_pod("hello", lambda p: phase(p) == "Succeeded", timeout=60)
    terminated = container_status(pod, "hello")["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert container_status(pod, "hello")["containerID"].startswith("minikubelet-native://")
    async with native_node.client() as c:
        text = b"".join(
            [x async for x in c.logs("default", native_node.pod_name("hello"), "hello")]
        )
    assert text.decode().splitlines() == ["hello from minikubelet", "goodbye"]


async def test_http_readiness_probe_and_pod_ip(native_node: Node) -> None:
    native_node.add_manifest("web.yaml", WEB)
    pod = await native_node.wait_pod(
        "web", lambda p: condition(p, "Ready") == "True", timeout=60, what="web to be Ready"
    )
    ip = pod["status"]["podIP"]
    assert ip.startswith("10.89.")  # the native runtime's own CNI bridge
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://{ip}:8080/", timeout=aiohttp.ClientTimeout(total=5)) as resp,
    ):
        assert resp.status == 200
        assert (await resp.text()) == "served by runc\n"
    async with native_node.client() as c:
        result = await c.exec("default", native_node.pod_name("web"), "httpd", ["hostname"])
    assert (result.exit_code, result.stdout.decode().strip()) == (0, native_node.pod_name("web"))
    # not ready any more once the server stops answering
    async with native_node.client() as c:
        await c.exec(
            "default", native_node.pod_name("web"), "httpd", ["sh", "-c", "rm /www/index.html"]
        )
    await native_node.wait_pod(
        "web", lambda p: condition(p, "Ready") == "False", timeout=30, what="web to turn unready"
    )


async def test_init_containers_and_crash_loop(native_node: Node) -> None:
    native_node.add_manifest("init-containers.yaml")
    native_node.add_manifest("crash-loop.yaml")
    await native_node.wait_pod("init-demo", lambda p: running(p, "app"), timeout=60)
    pod = await native_node.wait_pod(
        "crash-loop",
        lambda p: container_status(p, "crasher").get("restartCount", 0) >= 2,
        timeout=60,
    )
    last = container_status(pod, "crasher")["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")


async def test_exec_exit_codes_through_the_kubelet(native_node: Node) -> None:
    native_node.add_manifest("multi-container.yaml")
    await native_node.wait_pod("multi", lambda p: running(p, "app", "helper"), timeout=60)
    async with native_node.client() as c:
        ok = await c.exec("default", native_node.pod_name("multi"), "app", ["sh", "-c", "exit 5"])
        assert ok.exit_code == 5
        env = await c.exec("default", native_node.pod_name("multi"), "helper", ["id", "-u"])
        assert env.stdout.decode().strip() == "0"
