"""``kubectl logs``, ``exec``, ``attach``, ``port-forward``, ``cp`` and node stats through
the real API server to a minikubelet node's HTTPS API (port 10250's role, on a port of
its own), on the native runtime."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from tests.e2e.cluster import api_node, apply, kubectl_json
from tests.e2e.conftest import unmount_under
from tests.e2e.node import Node
from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime
from tests.harness.wait import wait_until

NODE = "kapi-native"
LABEL = "minikubelet.test/node"

POD = """apiVersion: v1
kind: Pod
metadata:
  name: kapi
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
      command: ["sh", "-c", "mkdir -p /www && echo hello-web > /www/index.html && exec httpd -f -p 8080 -h /www"]
"""


@pytest.fixture(scope="module")
async def node(
    control_plane: ControlPlane,
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    workdir = tmp_path_factory.mktemp("kapi-native")
    node = api_node(
        workdir, control_plane, native_runtime.endpoint, NODE, "--node-labels", f"{LABEL}={NODE}"
    )
    node.start()
    try:
        await node.wait_ready()
        apply(control_plane, POD.format(label=LABEL, node=NODE))

        def running() -> bool:
            pod = kubectl_json(control_plane, "get", "pod", "kapi")
            return pod.get("status", {}).get("phase") == "Running" and all(
                c.get("ready") for c in pod["status"].get("containerStatuses", [])
            )

        await wait_until(running, timeout=90, message="pod kapi Running")
        yield node
    finally:
        control_plane.kubectl("delete", "pod", "kapi", "--wait=false")
        assert node.stop() == 0
        control_plane.kubectl("delete", "node", NODE, "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]


async def test_logs_tail(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl("logs", "kapi", "-c", "logger", "--tail=2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("line ") for line in lines), lines


async def test_exec_exit_code(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl(
        "exec", "kapi", "-c", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == "out\n"
    assert "err" in done.stderr


async def test_stats_summary(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy/stats/summary")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["node"]["nodeName"] == NODE
