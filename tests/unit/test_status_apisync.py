"""The status manager's API side: what is patched, when, to which UID; deletion for good."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import aiohttp
import pytest

from minikubelet.api.pod import Pod
from minikubelet.status.apisync import (
    StatusSync,
    merge_pod_status,
    status_patch,
    uid_refused,
    unknown_status_fields,
)
from minikubelet.status.manager import StatusManager
from minikubelet.types import PodUID
from tests.harness.wait import wait_until

T0 = "2026-01-01T00:00:00Z"
T1 = "2026-01-01T00:00:05Z"


def cond(kind: str, status: str = "True", at: str = T0, **extra: Any) -> dict[str, Any]:
    return {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": at,
        **extra,
    }


def running_status(ready: str = "True", ip: str = "10.88.0.5") -> dict[str, Any]:
    return {
        "phase": "Running",
        "conditions": [
            cond("PodReadyToStartContainers"),
            cond("Initialized"),
            cond("Ready", ready),
            cond("ContainersReady", ready),
            cond("PodScheduled"),
        ],
        "hostIP": "192.168.1.2",
        "hostIPs": [{"ip": "192.168.1.2"}],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": T0,
        "containerStatuses": [
            {
                "name": "app",
                "state": {"running": {"startedAt": T0}},
                "ready": ready == "True",
                "restartCount": 0,
                "image": "busybox:1.36",
                "imageID": "",
                "containerID": "fake://abc",
                "started": True,
            }
        ],
        "qosClass": "BestEffort",
    }


# -- the merge (mergePodStatus) -----------------------------------------------------------------


def test_merge_replaces_the_kubelets_conditions_and_keeps_the_others() -> None:
    api = {
        "phase": "Pending",
        "conditions": [
            cond("PodScheduled", at="2025-12-31T23:59:00Z"),
            cond("Ready", "False"),
            cond("example.com/gate", "True"),
        ],
        "nominatedNodeName": "n9",
    }
    merged = merge_pod_status(api, running_status())
    by_type = {c["type"]: c for c in merged["conditions"]}
    # the scheduler's PodScheduled and a readiness gate's condition stay as the API has them
    assert by_type["PodScheduled"]["lastTransitionTime"] == "2025-12-31T23:59:00Z"
    assert by_type["example.com/gate"]["status"] == "True"
    assert by_type["Ready"]["status"] == "True"
    assert [c["type"] for c in merged["conditions"]] == [
        "PodScheduled",
        "example.com/gate",
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
    ]
    assert "nominatedNodeName" not in merged  # not the kubelet's: never written


def test_merge_of_a_terminal_phase_is_never_ready() -> None:
    new = running_status()
    new["phase"] = "Succeeded"
    merged = merge_pod_status({}, new)
    by_type = {c["type"]: c for c in merged["conditions"]}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "PodCompleted")
    assert by_type["ContainersReady"]["status"] == "False"


# -- the patch (PatchPodStatus) -----------------------------------------------------------------


MERGE_KEYS = {"conditions": "type", "podIPs": "ip", "hostIPs": "ip"}


def apply_patch(status: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge patch of a PodStatus, as far as the kubelet's patches go."""
    out = copy.deepcopy(status)
    body = patch["status"]
    for key, value in body.items():
        if key.startswith("$setElementOrder/"):
            continue
        if value is None:
            out.pop(key, None)
        elif key in MERGE_KEYS:
            merge_key = MERGE_KEYS[key]
            by_key = {c[merge_key]: c for c in out.get(key, [])}
            for c in value:
                if c.get("$patch") == "delete":
                    by_key.pop(c[merge_key], None)
                else:
                    by_key[c[merge_key]] = c
            order = body.get(f"$setElementOrder/{key}")
            keys = [o[merge_key] for o in order] if order else list(by_key)
            out[key] = [by_key[k] for k in keys if k in by_key]
        else:
            out[key] = value
    return out


def test_the_patch_holds_only_what_changed_and_the_uid() -> None:
    api = merge_pod_status({}, running_status(ready="False"))
    new = merge_pod_status(api, running_status(ready="True"))
    new["conditions"][2]["lastTransitionTime"] = T1
    new["conditions"][3]["lastTransitionTime"] = T1
    patch = status_patch("uid-1", api, new)
    assert patch is not None
    assert patch["metadata"] == {"uid": "uid-1"}  # the precondition
    body = patch["status"]
    assert set(body) == {"conditions", "$setElementOrder/conditions", "containerStatuses"}
    assert [c["type"] for c in body["conditions"]] == ["Ready", "ContainersReady"]
    assert apply_patch(api, patch) == new


def test_no_patch_when_nothing_the_kubelet_writes_differs() -> None:
    api = {**merge_pod_status({}, running_status()), "nominatedNodeName": "n9"}
    assert status_patch("uid-1", api, merge_pod_status(api, running_status())) is None


def test_the_patch_removes_what_the_kubelet_no_longer_reports() -> None:
    api = merge_pod_status({}, running_status())
    new = copy.deepcopy(api)
    del new["podIP"], new["podIPs"]
    new["conditions"] = [c for c in new["conditions"] if c["type"] != "PodReadyToStartContainers"]
    new["podIPs"] = []
    patch = status_patch("u", api, new)
    assert patch is not None
    assert patch["status"]["podIP"] is None and patch["status"]["podIPs"] is None
    assert {"type": "PodReadyToStartContainers", "$patch": "delete"} in patch["status"][
        "conditions"
    ]
    expected = {k: v for k, v in new.items() if k != "podIPs"}
    assert apply_patch(api, patch) == expected


def test_a_new_pod_ip_replaces_the_list() -> None:
    api = merge_pod_status({}, running_status(ip="10.88.0.5"))
    new = merge_pod_status(api, running_status(ip="10.88.0.9"))
    patch = status_patch("u", api, new)
    assert patch is not None
    assert patch["status"]["podIPs"] == [
        {"ip": "10.88.0.9"},
        {"ip": "10.88.0.5", "$patch": "delete"},
    ]
    assert patch["status"]["$setElementOrder/podIPs"] == [{"ip": "10.88.0.9"}]
    assert apply_patch(api, patch) == new


def test_fields_an_older_api_server_lacks_are_not_written() -> None:
    assert unknown_status_fields({"major": "1", "minor": "24"}) == {"hostIPs"}
    assert unknown_status_fields({"major": "1", "minor": "27+"}) == {"hostIPs"}
    assert unknown_status_fields({"major": "1", "minor": "28"}) == frozenset()
    assert unknown_status_fields({}) == frozenset()


# -- the sink against a fake API server -----------------------------------------------------------


class Response:
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.body = body

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self, content_type: str | None = None) -> dict[str, Any]:
        return self.body


class FakeCore:
    """Pods by (namespace, name); records every call."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.patch_codes: list[int] = []  # answers to the next patches instead of 200
        self.gate: asyncio.Event | None = None  # a patch waits for it

    def add(self, name: str, uid: str, status: dict[str, Any] | None = None) -> None:
        self.pods[("default", name)] = {
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "status": status or {"phase": "Pending", "conditions": [cond("PodScheduled")]},
        }

    async def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> Response:
        self.calls.append(("GET", name, None))
        pod = self.pods.get((namespace, name))
        return Response(200, copy.deepcopy(pod)) if pod else Response(404, {"reason": "NotFound"})

    async def patch_namespaced_pod_status(
        self, name: str, namespace: str, body: dict[str, Any], **_: Any
    ) -> Response:
        self.calls.append(("PATCH", name, body))
        if self.gate is not None:
            await self.gate.wait()
        if self.patch_codes:
            code = self.patch_codes.pop(0)
            if code == 422:  # the UID refused, as a 1.24 API server words it
                causes = [{"field": "metadata.uid", "reason": "FieldValueInvalid"}]
                return Response(422, {"details": {"causes": causes}})
            return Response(code, {"message": "injected"})
        pod = self.pods.get((namespace, name))
        if pod is None:
            return Response(404, {"reason": "NotFound"})
        if body["metadata"]["uid"] != pod["metadata"]["uid"]:
            return Response(409, {"message": "Precondition failed: UID in precondition"})
        pod["status"] = apply_patch(pod["status"], body)
        return Response(200, pod)

    async def delete_namespaced_pod(
        self, name: str, namespace: str, *, body: Any, **_: Any
    ) -> Response:
        self.calls.append(("DELETE", name, body))
        pod = self.pods.get((namespace, name))
        if pod is None:
            return Response(404, {"reason": "NotFound"})
        if body.preconditions.uid != pod["metadata"]["uid"]:
            return Response(409, {"message": "Precondition failed"})
        del self.pods[(namespace, name)]
        return Response(200, {})

    def verbs(self) -> list[str]:
        return [verb for verb, _, _ in self.calls]


class FakeKube:
    def __init__(self) -> None:
        self.core = FakeCore()


class Pods:
    """What the sink asks of the pod manager."""

    def __init__(self) -> None:
        self.pods: dict[str, Pod] = {}
        self.mirrors: dict[str, dict[str, Any]] = {}

    def add(self, pod: Pod) -> None:
        self.pods[pod.uid] = pod

    def all(self) -> list[Pod]:
        return list(self.pods.values())

    def refused(self) -> list[Pod]:
        return []

    def mirror_pods(self) -> dict[str, dict[str, Any]]:
        return dict(self.mirrors)


def api_pod(name: str, uid: str, *, deleting: bool = False, source: str = "api") -> Pod:
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": "default",
        "uid": uid,
        "annotations": {"kubernetes.io/config.source": source},
    }
    if source != "api":
        metadata["annotations"]["kubernetes.io/config.hash"] = uid
    if deleting:
        metadata["deletionTimestamp"] = T1
        metadata["deletionGracePeriodSeconds"] = 5
    return Pod.from_dict(
        {
            "metadata": metadata,
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
        },
        validate=False,
    )


@pytest.fixture
def world() -> tuple[StatusSync, FakeCore, Pods, StatusManager]:
    kube, pods, statuses = FakeKube(), Pods(), StatusManager()
    sync = StatusSync(kube, statuses, pods, period=3600)  # type: ignore[arg-type]
    sync._unknown = frozenset()  # what /version would have said: a current API server
    return sync, kube.core, pods, statuses


async def test_a_status_is_written_once_per_version(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    core.add("web", "u1")
    statuses.set_pod_status("u1", running_status())
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET", "PATCH"]
    assert core.pods[("default", "web")]["status"]["phase"] == "Running"
    # the scheduler's condition is kept, the kubelet's are there
    types = [c["type"] for c in core.pods[("default", "web")]["status"]["conditions"]]
    assert types[0] == "PodScheduled" and "Ready" in types
    await sync.sync(PodUID("u1"))  # needsUpdate: nothing newer than what was written
    assert core.verbs() == ["GET", "PATCH"]
    statuses.set_pod_status("u1", running_status(ready="False"))
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET", "PATCH", "GET", "PATCH"]
    assert sync.written_version(PodUID("u1")) == statuses.get_version("u1")


async def test_an_api_status_that_already_holds_it_is_not_patched(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    core.add("web", "u1", merge_pod_status({}, running_status()))
    statuses.set_pod_status("u1", running_status())
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET"] and sync.unchanged == 1


async def test_a_pod_gone_from_the_api_is_not_written_again(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    statuses.set_pod_status("u1", running_status())
    await sync.sync(PodUID("u1"))  # 404
    statuses.set_pod_status("u1", running_status(ready="False"))
    core.add("web", "u1")
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET"]


async def test_a_new_pod_of_the_same_name_is_never_written(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    core.add("web", "u2")  # deleted and created again
    statuses.set_pod_status("u1", running_status())
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET"]
    assert core.pods[("default", "web")]["status"]["phase"] == "Pending"


async def test_a_conflict_reads_the_pod_again_and_retries(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    core.add("web", "u1")
    core.patch_codes = [409]
    statuses.set_pod_status("u1", running_status())
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET", "PATCH", "GET", "PATCH"]
    assert core.pods[("default", "web")]["status"]["phase"] == "Running"


async def test_a_static_pods_status_goes_to_its_mirror_pod(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    static = api_pod("kube-web-n1", "hash1", source="file")
    pods.add(static)
    statuses.set_pod_status("hash1", running_status())
    await sync.sync(PodUID("hash1"))
    assert core.verbs() == []  # no mirror pod yet
    mirror_meta = {"name": "kube-web-n1", "namespace": "default", "uid": "mirror-uid"}
    mirror_meta["annotations"] = {"kubernetes.io/config.mirror": "old-hash"}  # type: ignore[assignment]
    pods.mirrors["kube-web-n1_default"] = {"metadata": mirror_meta}
    await sync.sync(PodUID("hash1"))
    assert core.verbs() == []  # a mirror of another version of the manifest
    mirror_meta["annotations"] = {"kubernetes.io/config.mirror": "hash1"}  # type: ignore[assignment]
    core.add("kube-web-n1", "mirror-uid")
    await sync.sync(PodUID("hash1"))
    assert core.verbs() == ["GET", "PATCH"]
    assert core.calls[-1][2]["metadata"] == {"uid": "mirror-uid"}
    assert sync.written_version(PodUID("mirror-uid")) == statuses.get_version("hash1")


async def test_a_deleted_pod_gets_its_final_status_then_is_deleted_for_good(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pod = api_pod("web", "u1", deleting=True)
    pods.add(pod)
    core.add("web", "u1")
    final = running_status()
    final["containerStatuses"][0]["state"] = {
        "terminated": {"exitCode": 143, "reason": "Error", "startedAt": T0, "finishedAt": T1}
    }
    statuses.set_pod_status("u1", final)
    sync.pod_terminated(pod)  # the hook, before the kubelet forgets the pod
    statuses.remove("u1")
    del pods.pods["u1"]
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET", "PATCH", "DELETE"]
    patch = core.calls[1][2]
    assert "terminated" in patch["status"]["containerStatuses"][0]["state"]
    options = core.calls[2][2]
    assert options.grace_period_seconds == 0 and options.preconditions.uid == "u1"
    assert ("default", "web") not in core.pods and sync.deletions == 1


async def test_pods_not_being_deleted_and_mirror_pods_are_never_deleted(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, _, _ = world
    sync.pod_terminated(api_pod("done", "u1"))  # finished, not deleted: stays in the API
    sync.pod_terminated(api_pod("static", "u2", deleting=True, source="file"))
    await sync.sync(PodUID("u1"))
    await sync.sync(PodUID("u2"))
    assert core.verbs() == []


async def test_a_burst_is_one_write_in_flight_and_the_newest_status_wins(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    core.add("web", "u1")
    core.gate = asyncio.Event()
    task = asyncio.create_task(sync.run())
    try:
        statuses.set_pod_status("u1", running_status(ip="10.0.0.1"))
        await wait_until(lambda: "PATCH" in core.verbs(), timeout=5, message="a patch")
        for n in range(2, 30):  # 28 changes while the first patch is in flight
            statuses.set_pod_status("u1", running_status(ip=f"10.0.0.{n}"))
        await asyncio.sleep(0)
        core.gate.set()
        await wait_until(
            lambda: statuses.get_version("u1") == sync.written_version(PodUID("u1")),
            timeout=5,
            message="the newest status written",
        )
        await sync.idle()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert core.verbs().count("PATCH") == 2
    assert core.pods[("default", "web")]["status"]["podIP"] == "10.0.0.29"


async def test_a_pod_replaced_between_read_and_patch_is_not_written_again(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    core.add("web", "u1")
    # what a 1.24 API server answers when the patch's metadata.uid is not the pod's
    refusal = {"details": {"causes": [{"field": "metadata.uid", "reason": "FieldValueInvalid"}]}}
    assert uid_refused(422, refusal) and uid_refused(409, {"message": "UID in precondition"})
    assert not uid_refused(409, {"message": "the object has been modified"})
    core.patch_codes = [422]
    statuses.set_pod_status("u1", running_status())
    await sync.sync(PodUID("u1"))
    statuses.set_pod_status("u1", running_status(ready="False"))
    await sync.sync(PodUID("u1"))
    assert core.verbs() == ["GET", "PATCH"]


async def test_the_periodic_pass_writes_to_a_mirror_pod_that_appeared_later() -> None:
    kube, pods, statuses = FakeKube(), Pods(), StatusManager()
    sync = StatusSync(kube, statuses, pods, period=0.01)  # type: ignore[arg-type]
    sync._unknown = frozenset()
    pods.add(api_pod("kube-web-n1", "hash1", source="file"))
    statuses.set_pod_status("hash1", running_status())
    task = asyncio.create_task(sync.run())
    try:
        await wait_until(lambda: sync._tg is not None, timeout=5, message="the sink running")
        sync.resync()  # a pass while there is no mirror pod: nothing to write
        await sync.idle()
        assert kube.core.verbs() == []
        meta = {"name": "kube-web-n1", "namespace": "default", "uid": "mirror-uid"}
        pods.mirrors["kube-web-n1_default"] = {
            "metadata": {**meta, "annotations": {"kubernetes.io/config.mirror": "hash1"}}
        }
        kube.core.add("kube-web-n1", "mirror-uid")
        await wait_until(
            lambda: sync.written_version(PodUID("mirror-uid")) == statuses.get_version("hash1"),
            timeout=5,
            message="the static pod's status on its mirror pod",
        )
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert kube.core.pods[("default", "kube-web-n1")]["status"]["phase"] == "Running"


async def test_an_api_server_that_drops_the_connection_is_tried_again_later(
    world: tuple[StatusSync, FakeCore, Pods, StatusManager],
) -> None:
    sync, core, pods, statuses = world
    pods.add(api_pod("web", "u1"))
    statuses.set_pod_status("u1", running_status())

    async def dropped(*_: Any, **__: Any) -> Response:
        raise aiohttp.ServerDisconnectedError()

    core.read_namespaced_pod = dropped  # type: ignore[method-assign]
    await sync._work(PodUID("u1"))  # logged, not raised: the other pods' writes go on
    assert sync.written_version(PodUID("u1")) is None
    assert sync._retry_at[PodUID("u1")] > 0
