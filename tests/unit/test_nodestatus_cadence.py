"""The node status manager's and the lease controller's cadence, in virtual time.

A fake API server keeps Nodes and Leases in dicts; a :class:`ManualClock` moves time,
so "patched at once on a change, not again for 5 minutes without one, the Lease
every 10 s" is checked without waiting.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from minikubelet.clock import ManualClock
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kubeapi.client import ApiException, KubeClient
from minikubelet.nodelease import LeaseController, micro_time
from minikubelet.nodestatus import setters
from minikubelet.nodestatus.facts import HostFacts
from minikubelet.nodestatus.manager import NodeStatusManager

HOST = HostFacts(
    cpu_millis=2000,
    memory_bytes=4 * 1024**3,
    ephemeral_storage_bytes=50 * 1024**3,
    machine_id="mid",
    system_uuid="uuid",
    boot_id="boot",
    kernel_version="6.1",
    os_image="Debian GNU/Linux 12 (bookworm)",
    architecture="amd64",
)


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        elif isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


def _error(status: int) -> ApiException:
    return ApiException(status=status, reason={404: "Not Found", 409: "Conflict"}.get(status))


class FakeAPI:
    """Nodes and Leases, with the calls made and errors to give once."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.leases: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.fail: dict[str, list[int]] = {}
        self._uid = 0
        self._rv = 0

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        pending = self.fail.get(call)
        if pending:
            raise _error(pending.pop(0))

    def _meta(self, obj: dict[str, Any]) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    # CoreV1Api
    async def create_node(self, body: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail("create_node")
        name = body["metadata"]["name"]
        if name in self.nodes:
            raise _error(409)
        self._uid += 1
        node = copy.deepcopy(body)
        node["metadata"]["uid"] = f"uid-{self._uid}"
        self._meta(node)
        self.nodes[name] = node
        return node

    async def read_node(self, name: str) -> dict[str, Any]:
        self._maybe_fail("read_node")
        if name not in self.nodes:
            raise _error(404)
        return self.nodes[name]

    async def patch_node_status(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        self._maybe_fail("patch_node_status")
        if name not in self.nodes:
            raise _error(404)
        _merge(self.nodes[name], body)
        self._meta(self.nodes[name])
        return self.nodes[name]

    # CoordinationV1Api
    async def read_namespaced_lease(self, name: str, namespace: str) -> dict[str, Any]:
        self._maybe_fail("read_lease")
        if name not in self.leases:
            raise _error(404)
        return self.leases[name]

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> Any:
        self._maybe_fail("create_lease")
        lease = copy.deepcopy(body)
        self._meta(lease)
        self.leases[lease["metadata"]["name"]] = lease
        return lease

    async def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        self._maybe_fail("replace_lease")
        current = self.leases.get(name)
        if current is None:
            raise _error(404)
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise _error(409)
        lease = copy.deepcopy(body)
        self._meta(lease)
        self.leases[name] = lease
        return lease


class FakeKube:
    def __init__(self, api: FakeAPI) -> None:
        self.core = api
        self.coordination = api

    def to_dict(self, obj: Any) -> dict[str, Any]:
        return copy.deepcopy(cast(dict[str, Any], obj))


def _status(network_ready: bool = True) -> pb.StatusResponse:
    return pb.StatusResponse(
        status=pb.RuntimeStatus(
            conditions=[
                pb.RuntimeCondition(type="RuntimeReady", status=True),
                pb.RuntimeCondition(
                    type="NetworkReady",
                    status=network_ready,
                    reason="" if network_ready else "NetworkPluginNotReady",
                    message="" if network_ready else "cni config uninitialized",
                ),
            ]
        )
    )


class FakeRuntime:
    runtime_name = "fake"
    runtime_version = "0.1.0"

    def __init__(self) -> None:
        self.response: Any = _status()

    async def runtime_status(self) -> list[tuple[str, Any]]:
        return [("unix:///fake.sock", self.response)]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def api() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def manager(clock: ManualClock, api: FakeAPI, runtime: FakeRuntime) -> NodeStatusManager:
    return NodeStatusManager(
        cast(KubeClient, FakeKube(api)),
        node_name="node-1",
        runtime=runtime,
        root_dir=cast(Any, None),
        node_ip="10.0.0.5",
        node_labels={"disk": "ssd"},
        register_with_taints=["dedicated=test:NoSchedule"],
        max_pods=20,
        clock=clock,
        gather=lambda: HOST,
    )


@pytest.fixture
async def running(manager: NodeStatusManager, clock: ManualClock) -> AsyncIterator[None]:
    task = asyncio.create_task(manager.run())
    await asyncio.wait_for(manager.registered.wait(), 10)  # the host is read in a thread
    await clock.settle()
    yield
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _patches(api: FakeAPI) -> int:
    return api.calls.count("patch_node_status")


@pytest.mark.usefixtures("running")
async def test_registers_with_full_status(manager: NodeStatusManager, api: FakeAPI) -> None:
    node = api.nodes["node-1"]
    assert node["metadata"]["labels"]["disk"] == "ssd"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "node-1"
    assert node["spec"]["taints"] == [{"key": "dedicated", "value": "test", "effect": "NoSchedule"}]
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == "fake://0.1.0"
    assert node["status"]["capacity"]["pods"] == "20"
    assert manager.ready and manager.node_uid() == "uid-1"
    assert manager.allocatable() == (2000, 4 * 1024**3, 20)
    assert manager.labels()["disk"] == "ssd"
    # the status went with the create: the first tick reads the Node and has nothing to patch
    assert api.calls == ["create_node", "read_node"]


@pytest.mark.usefixtures("running")
async def test_status_reported_every_5_minutes_without_change(
    manager: NodeStatusManager, api: FakeAPI, clock: ManualClock
) -> None:
    registered_at = manager.last_status_update
    await clock.advance(290)
    assert _patches(api) == 0
    assert manager.last_status_update == registered_at
    await clock.advance(10)
    assert _patches(api) == 1
    assert manager.last_status_update == registered_at + 300  # type: ignore[operator]
    ready = setters.condition(api.nodes["node-1"], "Ready")
    assert ready is not None
    assert ready["lastHeartbeatTime"] == "2023-11-14T22:18:20Z"
    assert ready["lastTransitionTime"] == "2023-11-14T22:13:20Z"  # unchanged status
    await clock.advance(290)
    assert _patches(api) == 1
    await clock.advance(10)
    assert _patches(api) == 2


@pytest.mark.usefixtures("running")
async def test_a_change_is_patched_at_once(
    manager: NodeStatusManager, api: FakeAPI, clock: ManualClock, runtime: FakeRuntime
) -> None:
    await clock.advance(30)
    runtime.response = _status(network_ready=False)
    await clock.advance(10)  # the next tick
    assert _patches(api) == 1
    ready = setters.condition(api.nodes["node-1"], "Ready")
    assert ready is not None
    assert (ready["status"], ready["reason"]) == ("False", "KubeletNotReady")
    assert ready["message"] == (
        "container runtime network not ready: NetworkReady=false "
        "reason:NetworkPluginNotReady message:cni config uninitialized"
    )
    assert ready["lastTransitionTime"] == "2023-11-14T22:14:00Z"
    assert not manager.ready
    await clock.advance(60)  # still not ready, nothing new: no patch
    assert _patches(api) == 1
    runtime.response = _status()
    await clock.advance(10)
    assert _patches(api) == 2 and manager.ready


@pytest.mark.usefixtures("running")
async def test_a_condition_someone_else_wrote_is_put_right_at_once(
    manager: NodeStatusManager, api: FakeAPI, clock: ManualClock
) -> None:
    """The node lifecycle controller marks Ready Unknown when the Lease went stale (say, the
    API server was away): the kubelet compares with the Node it reads, not with what it
    sent last, so it writes Ready again at the next tick instead of 5 minutes later."""
    await clock.advance(30)
    before = _patches(api)
    [stored] = [c for c in api.nodes["node-1"]["status"]["conditions"] if c["type"] == "Ready"]
    assert stored["status"] == "True"
    stored.update(status="Unknown", reason="NodeStatusUnknown")  # as the controller writes it
    await clock.advance(10)
    assert _patches(api) == before + 1
    ready = setters.condition(api.nodes["node-1"], "Ready")
    assert ready is not None and (ready["status"], ready["reason"]) == ("True", "KubeletReady")


@pytest.mark.usefixtures("running")
async def test_a_deleted_node_is_registered_again(
    manager: NodeStatusManager, api: FakeAPI, clock: ManualClock
) -> None:
    del api.nodes["node-1"]
    await clock.advance(10)  # the next tick finds it gone
    assert "node-1" in api.nodes
    assert manager.registrations == 2
    assert manager.node_uid() == "uid-2"


async def test_an_existing_node_is_taken_over(
    manager: NodeStatusManager, api: FakeAPI, clock: ManualClock
) -> None:
    api.nodes["node-1"] = {
        "metadata": {
            "name": "node-1",
            "uid": "old",
            "labels": {"kubernetes.io/hostname": "node-1", "kubernetes.io/arch": "s390x"},
        },
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "lastHeartbeatTime": "2023-11-14T20:00:00+00:00",
                    "lastTransitionTime": "2023-11-14T19:00:00+00:00",
                }
            ]
        },
    }
    assert await manager.try_register()
    node = api.nodes["node-1"]
    assert node["metadata"]["labels"]["kubernetes.io/arch"] == "amd64"
    assert "disk" not in node["metadata"]["labels"]  # --node-labels only go with a create
    ready = setters.condition(node, "Ready")
    assert ready is not None
    assert ready["lastTransitionTime"] == "2023-11-14T19:00:00Z"
    assert ready["lastHeartbeatTime"] == "2023-11-14T22:13:20Z"
    assert api.calls == ["create_node", "read_node", "patch_node_status"]


async def test_registration_retries_with_back_off(
    manager: NodeStatusManager, api: FakeAPI, clock: ManualClock
) -> None:
    api.fail["create_node"] = [403, 500, 500]
    task = asyncio.create_task(manager.register())
    await clock.advance(0.1 + 0.2 + 0.39)
    assert api.calls.count("create_node") == 3 and not task.done()
    assert manager.last_error is not None and "500" in manager.last_error
    await clock.advance(0.02)
    await asyncio.wait_for(task, 5)
    assert manager.registered.is_set() and manager.last_error is None


# -- the Lease -------------------------------------------------------------------------------


@pytest.fixture
def lease(clock: ManualClock, api: FakeAPI) -> LeaseController:
    return LeaseController(
        cast(KubeClient, FakeKube(api)), "node-1", clock=clock, node_uid=lambda: "uid-7"
    )


async def test_lease_renewed_every_10_seconds(
    lease: LeaseController, api: FakeAPI, clock: ManualClock
) -> None:
    task = asyncio.create_task(lease.run())
    await clock.settle()
    created = api.leases["node-1"]
    assert created["spec"] == {
        "holderIdentity": "node-1",
        "leaseDurationSeconds": 40,
        "renewTime": micro_time(clock.now()),
    }
    assert created["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "uid-7"}
    ]
    assert lease.last_renewal == clock.now()
    start = clock.now()
    for n in range(1, 7):
        await clock.advance(9.9)
        assert api.leases["node-1"]["spec"]["renewTime"] == micro_time(start + (n - 1) * 10)
        await clock.advance(0.1)
        assert api.leases["node-1"]["spec"]["renewTime"] == micro_time(start + n * 10)
    assert api.leases["node-1"]["spec"]["renewTime"].endswith(".000000Z")
    assert api.calls.count("replace_lease") == 6
    assert lease.renewals == 7 and lease.last_renewal == start + 60
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_lease_conflict_rereads_and_retries(
    lease: LeaseController, api: FakeAPI, clock: ManualClock
) -> None:
    await lease.sync()
    # Someone else wrote it: our resourceVersion is stale.
    api.leases["node-1"]["metadata"]["resourceVersion"] = "999"
    await lease.sync()
    assert api.calls == [
        "read_lease",
        "create_lease",
        "replace_lease",
        "read_lease",
        "replace_lease",
    ]
    assert lease.renewals == 2


async def test_lease_deleted_is_created_again_and_errors_back_off(
    lease: LeaseController, api: FakeAPI, clock: ManualClock
) -> None:
    await lease.sync()
    del api.leases["node-1"]
    await lease.sync()
    assert "node-1" in api.leases and lease.renewals == 2
    api.fail["replace_lease"] = [500] * 5
    api.fail["read_lease"] = [500, 500]
    task = asyncio.create_task(lease.sync())
    await clock.advance(0.2 + 0.39)
    assert not task.done() and lease.last_error is not None
    await clock.advance(0.02)
    await asyncio.wait_for(task, 5)
    assert lease.last_error is None and lease.renewals == 3


async def test_lease_follows_a_node_registered_again(api: FakeAPI, clock: ManualClock) -> None:
    uid = ["uid-1"]
    lease = LeaseController(
        cast(KubeClient, FakeKube(api)), "node-1", clock=clock, node_uid=lambda: uid[0]
    )
    await lease.sync()
    uid[0] = "uid-2"  # the Node was deleted and registered again
    await lease.sync()
    owners = api.leases["node-1"]["metadata"]["ownerReferences"]
    assert owners == [{"apiVersion": "v1", "kind": "Node", "name": "node-1", "uid": "uid-2"}]
