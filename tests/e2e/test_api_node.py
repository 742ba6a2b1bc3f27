"""A minikubelet node of a real cluster: the real scheduler places a Deployment on it.

A control plane (etcd, kube-apiserver, controller-manager, scheduler) runs on loopback
for the session (tests/harness/controlplane.py). A node joins it with
``minikubelet run --kubeconfig`` as ``system:node:NAME``, on the simulated runtime and
on the native one (runc); everything is checked as a person would: with kubectl, and
through CRI for what is left in the runtime.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from minikubelet.cri.client import CRIClient
from tests.e2e.cluster import api_node, apply, kubectl_json
from tests.e2e.conftest import unmount_under
from tests.e2e.node import Node
from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime
from tests.harness.wait import wait_until

LABEL = "minikubelet.test/node"

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      nodeSelector: {{"{label}": "{node}"}}
      terminationGracePeriodSeconds: 2
      containers:
        - name: web
          image: busybox:1.36
          command: ["sh", "-c", "echo up; exec sleep 3600"]
"""


async def node_ready(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    done = cp.kubectl("get", "node", name, "-o", "json")
    if done.returncode != 0:
        return None
    node: dict[str, Any] = json.loads(done.stdout)
    ready = [c for c in node["status"].get("conditions", []) if c["type"] == "Ready"]
    return node if ready and ready[0]["status"] == "True" else None


@pytest.fixture(scope="module")
async def fake_api_node(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Node]:
    workdir = tmp_path_factory.mktemp("api-fake")
    node = api_node(
        workdir, control_plane, "fake", "api-fake", "--node-labels", f"{LABEL}=api-fake"
    )
    node.start()
    try:
        await node.wait_ready()
        await wait_until(
            lambda: node_ready(control_plane, "api-fake"), timeout=60, message="node Ready"
        )
        yield node
    finally:
        assert node.stop() == 0
        control_plane.kubectl("delete", "node", "api-fake", "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]


@pytest.fixture(scope="module")
async def native_api_node(
    control_plane: ControlPlane,
    native_runtime: NativeRuntime,
    test_images: HarnessImages,  # busybox:1.36 in the registry the runtime mirrors docker.io to
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    workdir = tmp_path_factory.mktemp("api-native")
    node = api_node(
        workdir,
        control_plane,
        native_runtime.endpoint,
        "api-native",
        "--node-labels",
        f"{LABEL}=api-native",
    )
    node.start()
    try:
        await node.wait_ready()
        await wait_until(
            lambda: node_ready(control_plane, "api-native"), timeout=60, message="node Ready"
        )
        yield node
    finally:
        assert node.stop() == 0
        control_plane.kubectl("delete", "node", "api-native", "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]
        assert "Traceback" not in native_runtime.log(), native_runtime.log()[-4000:]


def runtime_endpoint(node: Node) -> str:
    if node.runtime == "fake":
        return f"unix://{node.root_dir / 'runtimes' / 'fake.sock'}"
    return node.runtime


async def containers_of(node: Node, app: str) -> list[str]:
    """The running containers of the app's pods, as the runtime holds them (CRI)."""
    async with CRIClient(runtime_endpoint(node)) as cri:
        return [
            c.id
            for c in await cri.list_containers()
            if c.labels.get("io.kubernetes.pod.name", "").startswith(f"{app}-")
            and c.labels.get("io.kubernetes.pod.namespace") == "default"
        ]


async def deployment_lifecycle(cp: ControlPlane, node: Node, app: str) -> None:
    apply(cp, DEPLOYMENT.format(name=app, label=LABEL, node=node.node_name))

    def available() -> bool:
        deployment = kubectl_json(cp, "get", "deployment", app)
        status = deployment.get("status", {})
        return bool(status.get("availableReplicas") == 3 and status.get("readyReplicas") == 3)

    try:
        await wait_until(available, timeout=120, message=f"deployment {app} Available")
    except AssertionError:
        pods = cp.kubectl("get", "pods", "-o", "wide").stdout
        raise AssertionError(f"{pods}\n--- kubelet log:\n{node.log()[-6000:]}") from None
    pods = kubectl_json(cp, "get", "pods", "-l", f"app={app}")["items"]
    assert {p["spec"]["nodeName"] for p in pods} == {node.node_name}, "placed by the scheduler"
    for pod in pods:
        status = pod["status"]
        assert status["phase"] == "Running"
        assert status["podIP"] and status["hostIP"]
        assert status["qosClass"] == "BestEffort"
        [cs] = status["containerStatuses"]
        assert cs["ready"] is True and "running" in cs["state"]
    assert len(await containers_of(node, app)) == 3

    done = cp.kubectl("scale", "deployment", app, "--replicas=0")
    assert done.returncode == 0, done.stderr

    async def no_containers() -> bool:
        return not await containers_of(node, app)

    await wait_until(no_containers, timeout=90, message="every container of the app removed")

    def no_pods_in_api() -> bool:
        return not kubectl_json(cp, "get", "pods", "-l", f"app={app}")["items"]

    await wait_until(no_pods_in_api, timeout=60, message="the pods deleted from the API")
    done = cp.kubectl("delete", "deployment", app)
    assert done.returncode == 0, done.stderr

    def nothing_left() -> bool:
        left = cp.kubectl("get", "deployment,replicaset,pods", "-l", f"app={app}", "-o", "name")
        gone = cp.kubectl("get", "deployment", app)
        return left.returncode == 0 and not left.stdout.strip() and gone.returncode != 0

    await wait_until(nothing_left, timeout=60, message="nothing of the app left in the API")

    async def node_forgot() -> bool:
        return not [n for n in await node.pods() if n.startswith(f"{app}-")]

    await wait_until(node_forgot, timeout=30, message="nothing of the app left on the node")


async def test_a_deployment_on_the_simulated_runtime(
    control_plane: ControlPlane, fake_api_node: Node
) -> None:
    await deployment_lifecycle(control_plane, fake_api_node, "web-fake")


async def test_a_deployment_on_the_native_runtime(
    control_plane: ControlPlane, native_api_node: Node
) -> None:
    await deployment_lifecycle(control_plane, native_api_node, "web-native")


async def test_kubectl_shows_the_node_ready_and_its_lease_renewed(
    control_plane: ControlPlane, fake_api_node: Node
) -> None:
    wide = control_plane.kubectl("get", "nodes", "api-fake", "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()[:2]
    columns = dict(zip(header.split(), row.split(), strict=False))
    assert columns["STATUS"] == "Ready"
    assert columns["INTERNAL-IP"] != "<none>"
    node = kubectl_json(control_plane, "get", "node", "api-fake")
    info = node["status"]["nodeInfo"]
    assert info["containerRuntimeVersion"].startswith("minikubelet-fake://")
    assert info["osImage"] in wide.stdout and info["kernelVersion"] in wide.stdout
    assert node["metadata"]["labels"][LABEL] == "api-fake"

    lease = kubectl_json(control_plane, "get", "lease", "-n", "kube-node-lease", "api-fake")
    first = lease["spec"]["renewTime"]
    assert lease["spec"]["leaseDurationSeconds"] == 40

    def renewed() -> bool:
        again = kubectl_json(control_plane, "get", "lease", "-n", "kube-node-lease", "api-fake")
        return bool(again["spec"]["renewTime"] != first)

    await wait_until(renewed, timeout=30, message="the Lease renewed")

    done = control_plane.kubectl("delete", "node", "api-fake")
    assert done.returncode == 0, done.stderr
    await wait_until(
        lambda: node_ready(control_plane, "api-fake"),
        timeout=60,
        message="the deleted Node registered again",
    )


POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: busybox:1.36
      command: ["sleep", "3600"]
"""


def api_phase(cp: ControlPlane, name: str) -> str:
    done = cp.kubectl("get", "pod", name, "-o", "jsonpath={.status.phase}")
    return done.stdout if done.returncode == 0 else ""


async def container_ids(node: Node, pod: str) -> list[str]:
    async with CRIClient(runtime_endpoint(node)) as cri:
        return sorted(
            c.id
            for c in await cri.list_containers()
            if c.labels.get("io.kubernetes.pod.name") == pod
        )


async def test_the_node_rides_out_an_api_server_outage(
    control_plane: ControlPlane, fake_api_node: Node
) -> None:
    """The API server is stopped for 30 s: the pods keep running, the node reconnects,
    runs a pod created once the API is back, duplicates nothing, and statuses converge."""
    cp, node = control_plane, fake_api_node
    apply(cp, POD.format(name="steady", node=node.node_name))
    await wait_until(lambda: api_phase(cp, "steady") == "Running", timeout=60, message="steady")
    before = await container_ids(node, "steady")
    assert len(before) == 1

    cp.apiserver.stop()
    try:
        outage_ends = asyncio.get_running_loop().time() + 30
        while (left := outage_ends - asyncio.get_running_loop().time()) > 0:
            pods = await node.pods()  # the node keeps serving and running its pods
            assert pods["steady"]["status"]["phase"] == "Running"
            await asyncio.sleep(min(left, 2))  # the outage itself is what is under test
    finally:
        cp.apiserver.start()

    apply(cp, POD.format(name="after-outage", node=node.node_name))
    await wait_until(
        lambda: api_phase(cp, "after-outage") == "Running",
        timeout=90,
        message="a pod created after the outage Running",
    )
    assert await container_ids(node, "steady") == before, "no container duplicated"
    assert api_phase(cp, "steady") == "Running"
    await wait_until(
        lambda: node_ready(cp, node.node_name), timeout=60, message="the node Ready again"
    )
    for name in ("steady", "after-outage"):
        done = cp.kubectl("delete", "pod", name, "--wait=false")
        assert done.returncode == 0, done.stderr

    def gone() -> bool:
        return not any(api_phase(cp, n) for n in ("steady", "after-outage"))

    await wait_until(gone, timeout=60, message="both pods deleted")
