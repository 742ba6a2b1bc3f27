"""The Node and its Lease against a real kube-apiserver (Node,RBAC + NodeRestriction).

The node status manager and the lease controller run with the node's own credentials
(``system:node:NAME``); what they wrote is read back as the admin with the real
kubectl. The runtime is a stub: only its CRI Version and Status matter here. Each
test node is tainted NoSchedule so that no other test's pods are scheduled onto it,
and is deleted at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kubeapi.client import ApiException, KubeClient
from minikubelet.nodelease import LeaseController
from minikubelet.nodestatus import KUBELET_VERSION, NodeStatusManager
from tests.harness.controlplane import ControlPlane
from tests.harness.wait import wait_until

TAINT = "minikubelet.test/node-status=true:NoSchedule"


class StubRuntime:
    """The runtime as the node status sees it: CRI Version and Status."""

    runtime_name = "fake"
    runtime_version = "0.1.0"

    def __init__(self) -> None:
        self.network_ready = True

    async def runtime_status(self) -> list[tuple[str, Any]]:
        net = pb.RuntimeCondition(type="NetworkReady", status=self.network_ready)
        if not self.network_ready:
            net.reason, net.message = "NetworkPluginNotReady", "cni config uninitialized"
        status = pb.RuntimeStatus(
            conditions=[pb.RuntimeCondition(type="RuntimeReady", status=True), net]
        )
        return [("unix:///stub.sock", pb.StatusResponse(status=status))]


@dataclass
class RunningNode:
    name: str
    kube: KubeClient
    runtime: StubRuntime
    status: NodeStatusManager
    lease: LeaseController


async def kubectl_json(plane: ControlPlane, *args: str) -> Any:
    """``kubectl get ARGS -o json`` as the admin (None when it fails: not found, say)."""
    proc = await asyncio.to_thread(plane.kubectl, "get", *args, "-o", "json")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def condition(node: dict[str, Any], type_: str) -> dict[str, Any]:
    for cond in node["status"].get("conditions") or ():
        if cond["type"] == type_:
            return dict(cond)
    return {}


@contextlib.asynccontextmanager
async def node_running(
    plane: ControlPlane, tmp_path: Path, *, name: str | None = None, as_node: str | None = None
) -> AsyncIterator[RunningNode]:
    """A node status manager and lease controller for ``name``, with the credentials of
    ``as_node`` (by default its own), running until the block ends."""
    name = name or f"status-{uuid.uuid4().hex[:8]}"
    kube = await KubeClient.from_kubeconfig(plane.node_kubeconfig(as_node or name))
    runtime = StubRuntime()
    status = NodeStatusManager(
        kube,
        node_name=name,
        runtime=runtime,
        root_dir=tmp_path,
        node_ip="127.0.0.1",
        node_labels={"example.com/pool": "blue"},
        register_with_taints=[TAINT],
        max_pods=42,
        kubelet_port=10250,
        update_frequency=0.5,
    )
    lease = LeaseController(kube, name, node_uid=status.node_uid, renew_interval=0.5)
    tasks = [
        asyncio.create_task(status.run(), name=f"node-status-{name}"),
        asyncio.create_task(lease.run(), name=f"node-lease-{name}"),
    ]
    try:
        yield RunningNode(name, kube, runtime, status, lease)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await kube.close()
        await asyncio.to_thread(plane.kubectl, "delete", "node", name, "--ignore-not-found")


async def test_node_registers_ready_with_its_facts(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    async with node_running(control_plane, tmp_path) as node:

        async def ready() -> dict[str, Any] | None:
            got = await kubectl_json(control_plane, "node", node.name)
            return got if got and condition(got, "Ready").get("status") == "True" else None

        got = await wait_until(ready, timeout=30, interval=0.2, message="the Node Ready")
        meta, status = got["metadata"], got["status"]
        labels = meta["labels"]
        assert labels["kubernetes.io/hostname"] == node.name
        assert labels["kubernetes.io/os"] == "linux" == labels["beta.kubernetes.io/os"]
        assert labels["kubernetes.io/arch"] in ("amd64", "arm64")
        assert labels["example.com/pool"] == "blue"
        # (the node lifecycle controller may still have its not-ready taint beside ours)
        assert {
            "key": "minikubelet.test/node-status",
            "value": "true",
            "effect": "NoSchedule",
        } in got["spec"]["taints"]
        assert status["addresses"] == [
            {"type": "InternalIP", "address": "127.0.0.1"},
            {"type": "Hostname", "address": node.name},
        ]
        info = status["nodeInfo"]
        assert info["containerRuntimeVersion"] == "fake://0.1.0"
        assert info["kubeletVersion"] == KUBELET_VERSION
        assert info["operatingSystem"] == "linux" and info["bootID"] and info["machineID"]
        assert info["osImage"] and info["kernelVersion"]
        capacity = status["capacity"]
        assert capacity["pods"] == "42"
        assert set(capacity) == {"cpu", "memory", "pods", "ephemeral-storage"}
        assert status["allocatable"] == capacity
        assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
        ready_cond = condition(got, "Ready")
        assert (ready_cond["reason"], ready_cond["message"]) == (
            "KubeletReady",
            "kubelet is posting ready status",
        )
        for type_, reason in (
            ("MemoryPressure", "KubeletHasSufficientMemory"),
            ("DiskPressure", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "KubeletHasSufficientPID"),
        ):
            assert (condition(got, type_)["status"], condition(got, type_)["reason"]) == (
                "False",
                reason,
            )

        # kubectl's own table: STATUS, VERSION, INTERNAL-IP, OS-IMAGE, KERNEL, RUNTIME
        proc = await asyncio.to_thread(
            control_plane.kubectl, "get", "node", node.name, "-o", "wide", "--no-headers"
        )
        assert proc.returncode == 0, proc.stderr
        line = proc.stdout
        assert line.split()[:2] == [node.name, "Ready"]
        for shown in (
            KUBELET_VERSION,
            "127.0.0.1",
            info["osImage"],
            info["kernelVersion"],
            "fake://0.1.0",
        ):
            assert shown in line, (shown, line)

        # The runtime's network goes: the node is NotReady at once, with the CRI's words.
        node.runtime.network_ready = False

        async def not_ready() -> dict[str, Any] | None:
            got = await kubectl_json(control_plane, "node", node.name)
            cond = condition(got, "Ready") if got else {}
            return cond if cond.get("status") == "False" else None

        cond = await wait_until(not_ready, timeout=30, interval=0.2, message="NotReady")
        assert cond["reason"] == "KubeletNotReady"
        assert cond["message"] == (
            "container runtime network not ready: NetworkReady=false "
            "reason:NetworkPluginNotReady message:cni config uninitialized"
        )
        assert not node.status.ready
        node.runtime.network_ready = True
        await wait_until(ready, timeout=30, interval=0.2, message="the Node Ready again")


async def test_lease_renewed_and_owned_by_the_node(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    async with node_running(control_plane, tmp_path) as node:
        await wait_until(node.status.node_uid, timeout=30, message="the Node registered")
        uid = node.status.node_uid()

        async def lease_owned() -> dict[str, Any] | None:
            got = await kubectl_json(control_plane, "lease", "-n", "kube-node-lease", node.name)
            owners = (got or {}).get("metadata", {}).get("ownerReferences") or []
            return got if [o.get("uid") for o in owners] == [uid] else None

        first = await wait_until(lease_owned, timeout=30, interval=0.2, message="the Lease")
        spec = first["spec"]
        assert spec["holderIdentity"] == node.name
        assert spec["leaseDurationSeconds"] == 40
        owner = first["metadata"]["ownerReferences"][0]
        assert (owner["apiVersion"], owner["kind"], owner["name"]) == ("v1", "Node", node.name)

        async def renewed() -> str | None:
            got = await kubectl_json(control_plane, "lease", "-n", "kube-node-lease", node.name)
            renew = (got or {}).get("spec", {}).get("renewTime")
            return renew if renew and renew > spec["renewTime"] else None

        later = await wait_until(renewed, timeout=30, interval=0.2, message="a renewal")
        assert later.endswith("Z") and "." in later  # MicroTime
        assert node.lease.last_renewal is not None and node.lease.last_error is None


async def test_deleted_node_comes_back(control_plane: ControlPlane, tmp_path: Path) -> None:
    async with node_running(control_plane, tmp_path) as node:
        await wait_until(node.status.node_uid, timeout=30, message="the Node registered")
        first_uid = node.status.node_uid()
        proc = await asyncio.to_thread(control_plane.kubectl, "delete", "node", node.name)
        assert proc.returncode == 0, proc.stderr

        async def back() -> dict[str, Any] | None:
            got = await kubectl_json(control_plane, "node", node.name)
            return got if got and got["metadata"]["uid"] != first_uid else None

        got = await wait_until(back, timeout=30, interval=0.2, message="the Node back")
        assert got["metadata"]["labels"]["example.com/pool"] == "blue"
        assert node.status.registrations == 2
        assert node.status.node_uid() == got["metadata"]["uid"]

        # The old Lease went with the old Node (garbage collection); the new one is owned
        # by the new Node.
        async def lease_owned_by_new_node() -> bool:
            lease = await kubectl_json(control_plane, "lease", "-n", "kube-node-lease", node.name)
            owners = (lease or {}).get("metadata", {}).get("ownerReferences") or []
            return [o.get("uid") for o in owners] == [got["metadata"]["uid"]]

        await wait_until(
            lease_owned_by_new_node, timeout=60, interval=0.5, message="the Lease re-owned"
        )


async def test_node_restriction_refuses_another_nodes_name(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    mine = f"status-{uuid.uuid4().hex[:8]}"
    other = f"status-{uuid.uuid4().hex[:8]}"
    async with node_running(control_plane, tmp_path, name=mine) as node:
        await wait_until(node.status.node_uid, timeout=30, message="my Node registered")
        # The same credentials, another node's name: neither its Node nor its Lease.
        impostor = NodeStatusManager(
            node.kube,
            node_name=other,
            runtime=node.runtime,
            root_dir=tmp_path,
            node_ip="127.0.0.1",
        )
        assert not await impostor.try_register()
        assert impostor.last_error is not None and "403" in impostor.last_error
        lease = LeaseController(node.kube, other)
        with pytest.raises(ApiException) as refused:
            await lease._ensure()
        assert refused.value.status == 403
        assert await kubectl_json(control_plane, "node", other) is None
        assert await kubectl_json(control_plane, "lease", "-n", "kube-node-lease", other) is None
        # ... while its own Node keeps being written.
        assert node.status.registered.is_set()


async def test_existing_node_is_taken_over(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A Node already there (a kubelet restarted, or made by an admin) is not created
    again: the kubelet's own labels are put right through nodes/status, the rest kept."""
    name = f"status-{uuid.uuid4().hex[:8]}"
    manifest = (
        f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels:\n"
        f"    kubernetes.io/arch: s390x\n    example.com/by-admin: kept\n"
        f"spec:\n  taints:\n  - key: {TAINT.split('=')[0]}\n    value: 'true'\n"
        f"    effect: NoSchedule\n"
    )
    created = await asyncio.to_thread(control_plane.kubectl, "create", "-f", "-", input=manifest)
    assert created.returncode == 0, created.stderr
    before = await kubectl_json(control_plane, "node", name)
    async with node_running(control_plane, tmp_path, name=name) as node:

        async def ready() -> dict[str, Any] | None:
            got = await kubectl_json(control_plane, "node", name)
            return got if got and condition(got, "Ready").get("status") == "True" else None

        got = await wait_until(ready, timeout=30, interval=0.2, message="the Node Ready")
        assert got["metadata"]["uid"] == before["metadata"]["uid"]  # the same Node
        labels = got["metadata"]["labels"]
        assert labels["kubernetes.io/arch"] == labels["beta.kubernetes.io/arch"] != "s390x"
        assert labels["kubernetes.io/hostname"] == name
        assert labels["example.com/by-admin"] == "kept"
        assert "example.com/pool" not in labels  # --node-labels only go with a create
        assert node.status.registrations == 1 and node.status.last_error is None
