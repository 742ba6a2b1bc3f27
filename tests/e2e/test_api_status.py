"""What a minikubelet node writes back to a real API server: pod statuses, the end of a
gracefully deleted pod, and the mirror pods of its static pods.

A real control plane runs for the session (tests/harness/controlplane.py, Node,RBAC
authorization and NodeRestriction admission); each test starts ``minikubelet run
--runtime fake --kubeconfig NODE.kubeconfig --manifests DIR`` as ``system:node:NAME`` and
checks with the admin's kubectl, as a person would, plus the node's trace file for the
order of what the kubelet did (CRI calls and API requests in one sequence).
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minikubelet.kubeapi.client import KubeClient
from minikubelet.status.apisync import call_json, status_patch, uid_refused
from tests.e2e.cluster import kubectl_json
from tests.e2e.node import Node
from tests.e2e.support import trace, traced
from tests.harness.controlplane import ControlPlane
from tests.harness.wait import wait_until

_names = itertools.count()

NODE = """apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{kubernetes.io/hostname: {name}, kubernetes.io/os: linux}}
"""

API_POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: {grace}
  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "trap '' TERM; sleep 3600"]
{extra}"""

PRE_STOP = """      lifecycle:
        preStop:
          exec: {command: ["sh", "-c", "sleep 1"]}
"""

STATIC_POD = """apiVersion: v1
kind: Pod
metadata:
  name: static-web
  labels: {{app: static-web, version: "{version}"}}
spec:
  containers:
    - name: web
      image: busybox:1.36
      command: ["sh", "-c", "sleep 3600"]
"""


def get_pod(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    """The pod as the API server has it, or None when it is not there."""
    done = cp.kubectl("get", "pod", name, "-n", "default", "-o", "json")
    if done.returncode != 0:
        assert "NotFound" in done.stderr, done.stderr
        return None
    pod: dict[str, Any] = json.loads(done.stdout)
    return pod


def condition(pod: dict[str, Any], kind: str) -> str:
    for c in pod.get("status", {}).get("conditions") or []:
        if c.get("type") == kind:
            return str(c.get("status"))
    return ""


def running_and_ready(pod: dict[str, Any] | None) -> bool:
    if pod is None:
        return False
    status = pod.get("status", {})
    statuses = status.get("containerStatuses") or []
    return bool(
        status.get("phase") == "Running"
        and condition(pod, "Ready") == "True"
        and statuses
        and all("running" in cs.get("state", {}) for cs in statuses)
    )


def api_calls(workdir: Path, pod: str) -> list[dict[str, Any]]:
    """The node's trace about ``default/pod``: its CRI calls and API requests, in order."""
    return trace(workdir, pod)


class ApiNode:
    """A node of the test control plane, and what the test made of it."""

    def __init__(self, cp: ControlPlane, node: Node) -> None:
        self.cp = cp
        self.node = node
        self.name = node.node_name

    async def wait_api_pod(self, name: str, check: Any, what: str, timeout: float = 60) -> Any:
        last: list[Any] = [None]

        def probe() -> tuple[Any] | None:
            last[0] = get_pod(self.cp, name)
            return (last[0],) if check(last[0]) else None  # the pod, or None once it is gone

        try:
            return (await wait_until(probe, timeout=timeout, message=what))[0]
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n--- last seen: {json.dumps(last[0], indent=1)[-3000:]}"
                f"\n--- kubelet log:\n{self.node.log()[-6000:]}"
            ) from None


@pytest.fixture
async def api_node(control_plane: ControlPlane, workdir: Path) -> AsyncIterator[ApiNode]:
    """A minikubelet node (simulated runtime, trace file) joined as ``system:node:NAME``.

    The Node object is created first with the admin's kubectl: the pods here are bound by
    ``spec.nodeName``, and a mirror pod's owner reference needs the Node's UID; a node
    that registers itself finds it there, as after a restart.
    """
    name = f"status-{os.getpid()}-{next(_names)}"
    created = control_plane.kubectl("create", "-f", "-", input=NODE.format(name=name))
    assert created.returncode == 0 or "AlreadyExists" in created.stderr, created.stderr
    node = Node(
        workdir,
        node_name=name,
        extra_args=(*traced(workdir), "--kubeconfig", str(control_plane.node_kubeconfig(name))),
    )
    node.start()
    try:
        await node.wait_ready()
        yield ApiNode(control_plane, node)
    finally:
        assert node.stop() == 0
        control_plane.kubectl(
            "delete",
            "pods",
            "-n",
            "default",
            f"--field-selector=spec.nodeName={name}",
            "--force",
            "--grace-period=0",
        )
        control_plane.kubectl("delete", "node", name, "--wait=false")
        assert "Traceback" not in node.log(), node.log()[-6000:]


async def test_a_pod_bound_to_the_node_shows_running_in_the_api(api_node: ApiNode) -> None:
    cp, name = api_node.cp, f"web-{api_node.name}"
    done = cp.kubectl(
        "apply", "-f", "-", input=API_POD.format(name=name, node=api_node.name, grace=2, extra="")
    )
    assert done.returncode == 0, done.stderr
    pod = await api_node.wait_api_pod(name, running_and_ready, f"{name} Running and Ready")
    status = pod["status"]
    assert status["podIP"] and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["hostIP"]
    assert status["startTime"]
    assert status["qosClass"] == "BestEffort"
    types = {c["type"]: c["status"] for c in status["conditions"]}
    assert types["Initialized"] == types["ContainersReady"] == types["Ready"] == "True"
    [cs] = status["containerStatuses"]
    assert (cs["name"], cs["ready"], cs["restartCount"]) == ("app", True, 0)
    local = (await api_node.node.pods())[name]  # the node's own view of the same pod
    [local_cs] = local["status"]["containerStatuses"]
    assert (cs["containerID"], cs["image"]) == (local_cs["containerID"], local_cs["image"])
    assert status["podIP"] == local["status"]["podIP"]

    # written only when it changed: a few patches, not one per sync
    def patches_in_trace() -> list[dict[str, Any]]:
        calls = api_calls(api_node.node.workdir, name)  # the file is a little behind
        return [c for c in calls if c["method"] == "PATCH pods/status"]

    patches = await wait_until(patches_in_trace, timeout=10, message="PATCH pods/status traced")
    assert all(c["code"] == "200" for c in patches)
    assert len(patches) <= 4, patches

    # the UID is a precondition: a patch the node computed for another pod of this name
    # (deleted and created again meanwhile) is refused by the API server
    stale = status_patch("0f0f0f0f-0000-4000-8000-000000000000", {}, {"phase": "Failed"})
    assert stale is not None
    async with await KubeClient.from_kubeconfig(cp.node_kubeconfig(api_node.name)) as kube:
        code, answer = await call_json(
            kube.core.patch_namespaced_pod_status(name, "default", stale, _preload_content=False)
        )
    assert uid_refused(code, answer), (code, answer)
    assert (get_pod(cp, name) or {})["status"]["phase"] == "Running"


async def test_a_completed_pod_deleted_through_the_api_leaves_it(api_node: ApiNode) -> None:
    cp, name = api_node.cp, f"job-{api_node.name}"
    manifest = (
        API_POD.format(name=name, node=api_node.name, grace=30, extra="").replace(
            "trap '' TERM; sleep 3600", "echo done"
        )
        + "  restartPolicy: Never\n"
    )
    done = cp.kubectl("apply", "-f", "-", input=manifest)
    assert done.returncode == 0, done.stderr

    def succeeded(pod: dict[str, Any] | None) -> bool:
        return pod is not None and pod["status"].get("phase") == "Succeeded"

    pod = await api_node.wait_api_pod(name, succeeded, f"{name} Succeeded")
    [cs] = pod["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["exitCode"] == 0
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"
    done = cp.kubectl("delete", "pod", name, "--wait=false")
    assert done.returncode == 0, done.stderr
    await api_node.wait_api_pod(name, lambda pod: pod is None, f"{name} gone from the API")


async def test_a_deleted_pod_runs_its_pre_stop_hook_then_leaves_the_api(api_node: ApiNode) -> None:
    cp, node, name = api_node.cp, api_node.node, f"hooked-{api_node.name}"
    manifest = API_POD.format(name=name, node=api_node.name, grace=30, extra=PRE_STOP)
    done = cp.kubectl("apply", "-f", "-", input=manifest)
    assert done.returncode == 0, done.stderr
    await api_node.wait_api_pod(name, running_and_ready, f"{name} Running")

    # a grace period of 4 s, shorter than the pod's 30: deletionGracePeriodSeconds rules
    done = cp.kubectl("delete", "pod", name, "--grace-period=4", "--wait=false")
    assert done.returncode == 0, done.stderr
    await api_node.wait_api_pod(name, lambda pod: pod is None, f"{name} gone from the API")

    def deleted_in_trace() -> list[dict[str, Any]] | None:
        calls = api_calls(node.workdir, name)
        return calls if any(c["method"] == "DELETE pods" for c in calls) else None

    calls = await wait_until(deleted_in_trace, timeout=10, message="DELETE pods in the trace")
    methods = [c["method"] for c in calls]
    hook = next(c for c in calls if c["method"] == "ExecSync")
    assert hook["details"]["cmd"] == ["sh", "-c", "sleep 1"]
    stop = next(c for c in calls if c["method"] == "StopContainer")
    assert hook["seq"] < stop["seq"]
    # the hook took 1 of the 4 seconds: the container gets what is left, not the pod's 30
    assert stop["details"]["timeout"] <= 3, stop
    delete = next(c for c in calls if c["method"] == "DELETE pods")
    assert delete["code"] == "200"
    assert stop["seq"] < delete["seq"]
    # the final status (containers terminated) went out before the deletion
    last_patch = max(
        (c for c in calls if c["method"] == "PATCH pods/status"), key=lambda c: c["seq"]
    )
    assert stop["seq"] < last_patch["seq"] < delete["seq"], methods
    assert methods.count("DELETE pods") == 1


def mirror_of(cp: ControlPlane, name: str, *, not_uid: str = "") -> Any:
    """A check: the mirror pod ``name`` as the API has it, not being deleted, Running."""

    def check(pod: dict[str, Any] | None) -> bool:
        if pod is None or pod["metadata"].get("deletionTimestamp"):
            return False
        return pod["metadata"]["uid"] != not_uid and running_and_ready(pod)

    return check


async def test_a_static_pods_mirror_pod_follows_its_manifest(api_node: ApiNode) -> None:
    cp, node = api_node.cp, api_node.node
    name = node.pod_name("static-web")
    node.add_manifest("static-web.yaml", STATIC_POD.format(version="1"))
    mirror = await api_node.wait_api_pod(name, mirror_of(cp, name), "the mirror pod Running")
    annotations = mirror["metadata"]["annotations"]
    first_hash = annotations["kubernetes.io/config.hash"]
    assert annotations["kubernetes.io/config.mirror"] == first_hash
    assert annotations["kubernetes.io/config.source"] == "file"
    node_uid = kubectl_json(cp, "get", "node", api_node.name)["metadata"]["uid"]
    assert mirror["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "name": api_node.name,
            "uid": node_uid,
            "controller": True,
        }
    ]
    assert mirror["spec"]["nodeName"] == api_node.name
    # its status is the static pod's, as the node itself shows it
    local = await node.pod("static-web")
    assert local is not None
    [cs] = mirror["status"]["containerStatuses"]
    assert cs["containerID"] == local["status"]["containerStatuses"][0]["containerID"]
    listed = cp.kubectl("get", "pods", "-n", "default").stdout
    assert name in listed

    # an edited manifest: a new hash, a new mirror pod
    node.add_manifest("static-web.yaml", STATIC_POD.format(version="2"))

    def edited(pod: dict[str, Any] | None) -> bool:
        return (
            mirror_of(cp, name)(pod)
            and pod is not None
            and pod["metadata"]["annotations"]["kubernetes.io/config.mirror"] != first_hash
            and pod["metadata"]["labels"]["version"] == "2"
        )

    mirror = await api_node.wait_api_pod(name, edited, "the mirror pod of the edited manifest")
    assert (
        mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"]
        == mirror["metadata"]["annotations"]["kubernetes.io/config.hash"]
    )

    # deleted through the API: it comes back (a new UID), the static pod untouched
    container = (await node.pod("static-web") or {})["status"]["containerStatuses"][0]
    done = cp.kubectl("delete", "pod", name, "--wait=false")
    assert done.returncode == 0, done.stderr
    uid = mirror["metadata"]["uid"]
    await api_node.wait_api_pod(name, mirror_of(cp, name, not_uid=uid), "the mirror pod again")
    again = await node.pod("static-web")
    assert again is not None
    assert again["status"]["containerStatuses"][0]["containerID"] == container["containerID"]

    # the file goes: so does the mirror pod
    node.remove_manifest("static-web.yaml")
    await api_node.wait_api_pod(name, lambda pod: pod is None, "the mirror pod gone")


async def test_a_refused_pod_deleted_through_the_api_leaves_it(api_node: ApiNode) -> None:
    cp, name = api_node.cp, f"huge-{api_node.name}"
    manifest = API_POD.format(name=name, node=api_node.name, grace=30, extra="") + (
        "      resources: {requests: {cpu: '100000'}}\n"
    )
    done = cp.kubectl("apply", "-f", "-", input=manifest)
    assert done.returncode == 0, done.stderr

    def failed(pod: dict[str, Any] | None) -> bool:
        return pod is not None and pod["status"].get("phase") == "Failed"

    pod = await api_node.wait_api_pod(name, failed, f"{name} refused")
    assert pod["status"]["reason"] == "OutOfcpu", pod["status"]
    done = cp.kubectl("delete", "pod", name, "--wait=false")
    assert done.returncode == 0, done.stderr
    await api_node.wait_api_pod(name, lambda pod: pod is None, f"{name} gone from the API")
