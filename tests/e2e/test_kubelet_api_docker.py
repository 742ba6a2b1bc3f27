"""``kubectl logs``, ``exec`` and ``port-forward`` through the real API server to a
minikubelet node on the Docker-backed runtime: the kubelet API proxies to that
runtime's streaming server as it does to the native one's."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator

import pytest

from tests.e2e.cluster import api_node, apply, free_port, kubectl_json
from tests.e2e.conftest import unmount_under
from tests.e2e.kubectl_bg import Kubectl
from tests.e2e.node import Node
from tests.harness.controlplane import ControlPlane
from tests.harness.dockerd import RuntimeServer
from tests.harness.fixtures import HarnessImages
from tests.harness.wait import wait_until

NODE = "kapi-docker"
LABEL = "minikubelet.test/node"

POD = """apiVersion: v1
kind: Pod
metadata:
  name: kapi-docker
  namespace: default
spec:
  nodeSelector: {{"{label}": "{node}"}}
  terminationGracePeriodSeconds: 1
  containers:
    - name: logger
      image: busybox:1.36
      command: ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]
    - name: web
      image: busybox:1.36
      command:
        - sh
        - -c
        - >-
          mkdir -p /www && echo hello-docker > /www/index.html
          && exec httpd -f -p 8080 -h /www
"""


@pytest.fixture(scope="module")
async def node(
    control_plane: ControlPlane,
    docker_runtime: RuntimeServer,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    workdir = tmp_path_factory.mktemp("kapi-docker")
    node = api_node(
        workdir, control_plane, docker_runtime.endpoint, NODE, "--node-labels", f"{LABEL}={NODE}"
    )
    node.start()
    try:
        await node.wait_ready()
        apply(control_plane, POD.format(label=LABEL, node=NODE))

        def running() -> bool:
            pod = kubectl_json(control_plane, "get", "pod", "kapi-docker")
            return pod.get("status", {}).get("phase") == "Running" and all(
                c.get("ready") for c in pod["status"].get("containerStatuses", [])
            )

        await wait_until(running, timeout=90, message="pod kapi-docker Running")
        yield node
    finally:
        control_plane.kubectl("delete", "pod", "kapi-docker", "--wait=false")
        assert node.stop() == 0
        control_plane.kubectl("delete", "node", NODE, "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]


async def test_logs(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl("logs", "kapi-docker", "-c", "logger", "--tail=2", timeout=20)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("line ") for line in lines), lines

    follow = await Kubectl.start(
        control_plane, "logs", "-f", "kapi-docker", "-c", "logger", "--tail=1"
    )
    try:
        first = int((await follow.wait_for(r"^line (\d+)$")).group(1))
        await follow.wait_for(rf"^line {first + 2}$")
    finally:
        await follow.stop()


async def test_exec(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl(
        "exec",
        "kapi-docker",
        "-c",
        "web",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
        timeout=20,
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == "out\n"
    assert "err" in done.stderr
    done = control_plane.kubectl(
        "exec", "-i", "kapi-docker", "-c", "web", "--", "cat", input="piped\n", timeout=20
    )
    assert (done.returncode, done.stdout) == (0, "piped\n"), done.stderr


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


async def test_port_forward(control_plane: ControlPlane, node: Node) -> None:
    port = free_port()
    forward = await Kubectl.start(control_plane, "port-forward", "pod/kapi-docker", f"{port}:8080")
    try:
        await forward.wait_for(rf"^Forwarding from 127\.0\.0\.1:{port} -> 8080$")
        assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/") == "hello-docker\n"
    finally:
        await forward.stop()
