"""Mirror pods: how one is made from a static pod, and what a pass creates, replaces, deletes."""

from __future__ import annotations

from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.clock import ManualClock
from minikubelet.mirror import MirrorPods, mirror_action, mirror_pod
from tests.unit.test_status_apisync import Response


def static_pod(hash_: str = "h1", name: str = "web-n1", source: str = "file") -> Pod:
    return Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": "default",
                "uid": hash_,
                "labels": {"app": "web"},
                "annotations": {
                    "kubernetes.io/config.hash": hash_,
                    "kubernetes.io/config.source": source,
                    "kubernetes.io/config.seen": "2026-01-01T00:00:00Z",
                    "team": "a",
                },
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "busybox"}]},
        },
        validate=False,
    )


def mirror_of(
    pod: Pod, uid: str, *, hash_: str | None = None, deleting: bool = False
) -> dict[str, Any]:
    raw = mirror_pod(pod, "n1", "node-uid")
    raw["metadata"]["uid"] = uid
    if hash_ is not None:
        raw["metadata"]["annotations"]["kubernetes.io/config.mirror"] = hash_
    if deleting:
        raw["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:09Z"
    return raw


def test_a_mirror_pod_is_the_static_pod_marked_and_owned_by_the_node() -> None:
    pod = static_pod("h1")
    mirror = mirror_pod(pod, "n1", "node-uid-1")
    meta = mirror["metadata"]
    assert set(meta) == {"name", "namespace", "labels", "annotations", "ownerReferences"}
    assert (meta["name"], meta["namespace"], meta["labels"]) == (
        "web-n1",
        "default",
        {"app": "web"},
    )
    assert meta["annotations"]["kubernetes.io/config.mirror"] == "h1"
    assert meta["annotations"]["kubernetes.io/config.hash"] == "h1"
    assert meta["annotations"]["kubernetes.io/config.source"] == "file"
    assert meta["annotations"]["team"] == "a"
    # NodeRestriction: one controller reference to this very Node, no blockOwnerDeletion
    assert meta["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid-1", "controller": True}
    ]
    assert mirror["spec"]["nodeName"] == "n1"
    assert mirror["spec"]["containers"] == [{"name": "app", "image": "busybox"}]
    assert "status" not in mirror and "uid" not in meta
    assert "kubernetes.io/config.mirror" not in pod.metadata.annotations  # a copy


def test_what_a_static_pod_and_its_mirror_need() -> None:
    pod = static_pod("h1")
    assert mirror_action(pod, None) == "create"
    assert mirror_action(pod, mirror_of(pod, "m1")) == ""
    assert mirror_action(pod, mirror_of(pod, "m1", hash_="h0")) == "replace"  # edited manifest
    assert mirror_action(pod, mirror_of(pod, "m1", deleting=True)) == "replace"
    assert mirror_action(None, mirror_of(pod, "m1")) == "delete"
    assert mirror_action(None, None) == ""


class Core:
    def __init__(self) -> None:
        self.node: dict[str, Any] | None = None
        self.calls: list[tuple[str, str, Any]] = []
        self.forbidden: set[str] = set()  # mirror pods NodeRestriction refuses

    async def read_node(self, name: str, **_: Any) -> Response:
        self.calls.append(("GET node", name, None))
        return Response(200, self.node) if self.node else Response(404, {"reason": "NotFound"})

    async def create_namespaced_pod(self, namespace: str, body: Any, **_: Any) -> Response:
        self.calls.append(("CREATE", body["metadata"]["name"], body))
        if body["metadata"]["name"] in self.forbidden:
            return Response(403, {"message": "node can not create pods that reference secrets"})
        return Response(201, {"metadata": {**body["metadata"], "uid": "new-mirror"}})

    async def delete_namespaced_pod(
        self, name: str, namespace: str, *, body: Any, **_: Any
    ) -> Response:
        self.calls.append(("DELETE", name, body))
        return Response(200, {})

    def verbs(self) -> list[str]:
        return [verb for verb, _, _ in self.calls if verb != "GET node"]


class Kube:
    def __init__(self) -> None:
        self.core = Core()


class Pods:
    def __init__(self) -> None:
        self.active_pods: list[Pod] = []
        self.removed_pods: list[Pod] = []
        self.mirrors: dict[str, dict[str, Any]] = {}

    def active(self) -> list[Pod]:
        return list(self.active_pods)

    def removed(self) -> list[Pod]:
        return list(self.removed_pods)

    def mirror_pods(self) -> dict[str, dict[str, Any]]:
        return dict(self.mirrors)


@pytest.fixture
def world() -> tuple[MirrorPods, Core, Pods, list[bool]]:
    kube, pods, ready = Kube(), Pods(), [True]
    mirrors = MirrorPods(kube, pods, "n1", sources_ready=lambda: ready[0])  # type: ignore[arg-type]
    return mirrors, kube.core, pods, ready


async def test_a_mirror_pod_waits_for_the_node_then_is_created_once(
    world: tuple[MirrorPods, Core, Pods, list[bool]],
) -> None:
    mirrors, core, pods, _ = world
    pods.active_pods = [static_pod("h1")]
    await mirrors.sync()
    assert core.verbs() == []  # no Node yet
    core.node = {"metadata": {"name": "n1", "uid": "node-uid-7"}}
    await mirrors.sync()
    assert core.verbs() == ["CREATE"]
    body = core.calls[-1][2]
    assert body["metadata"]["ownerReferences"][0]["uid"] == "node-uid-7"
    await mirrors.sync()  # the watch has not brought it yet: not created twice
    assert core.verbs() == ["CREATE"]
    pods.mirrors["web-n1_default"] = mirror_of(pods.active_pods[0], "m1")
    await mirrors.sync()
    assert core.verbs() == ["CREATE"]


async def test_an_edited_manifest_replaces_the_mirror_pod(
    world: tuple[MirrorPods, Core, Pods, list[bool]],
) -> None:
    mirrors, core, pods, _ = world
    core.node = {"metadata": {"name": "n1", "uid": "node-uid"}}
    old, new = static_pod("h1"), static_pod("h2")
    pods.active_pods = [new]
    pods.mirrors["web-n1_default"] = mirror_of(old, "m1")
    await mirrors.sync()
    assert core.verbs() == ["DELETE", "CREATE"]
    delete = next(body for verb, _, body in core.calls if verb == "DELETE")
    assert delete.grace_period_seconds == 0 and delete.preconditions.uid == "m1"
    assert core.calls[-1][2]["metadata"]["annotations"]["kubernetes.io/config.mirror"] == "h2"
    await mirrors.sync()  # the old one is still listed until the watch says it went
    assert core.verbs() == ["DELETE", "CREATE"]


async def test_a_mirror_pod_deleted_through_the_api_is_made_again(
    world: tuple[MirrorPods, Core, Pods, list[bool]],
) -> None:
    mirrors, core, pods, _ = world
    core.node = {"metadata": {"name": "n1", "uid": "node-uid"}}
    pod = static_pod("h1")
    pods.active_pods = [pod]
    pods.mirrors["web-n1_default"] = mirror_of(pod, "m1", deleting=True)  # kubectl delete
    await mirrors.sync()
    assert core.verbs() == ["DELETE", "CREATE"]


async def test_an_orphaned_mirror_pod_goes_once_its_static_pod_has_stopped(
    world: tuple[MirrorPods, Core, Pods, list[bool]],
) -> None:
    mirrors, core, pods, ready = world
    pod = static_pod("h1")
    pods.mirrors["web-n1_default"] = mirror_of(pod, "m1")
    ready[0] = False
    await mirrors.sync()
    assert core.verbs() == []  # the static pod sources are not read yet
    ready[0] = True
    pods.removed_pods = [pod]
    await mirrors.sync()
    assert core.verbs() == []  # its static pod still terminates
    pods.removed_pods = []
    await mirrors.sync()
    assert core.verbs() == ["DELETE"]
    assert core.calls[-1][2].preconditions.uid == "m1"


async def test_api_pods_get_no_mirror_pod(world: tuple[MirrorPods, Core, Pods, list[bool]]) -> None:
    mirrors, core, pods, _ = world
    core.node = {"metadata": {"name": "n1", "uid": "node-uid"}}
    pods.active_pods = [static_pod("h1", source="api")]
    await mirrors.sync()
    assert core.verbs() == []


async def test_a_refused_mirror_pod_is_asked_for_again_later_and_spares_the_others() -> None:
    kube, pods, clock = Kube(), Pods(), ManualClock()
    mirrors = MirrorPods(kube, pods, "n1", clock=clock)  # type: ignore[arg-type]
    core = kube.core
    core.node = {"metadata": {"name": "n1", "uid": "node-uid"}}
    core.forbidden = {"bad-n1"}
    pods.active_pods = [static_pod("h1", name="bad-n1"), static_pod("h2", name="good-n1")]
    await mirrors.sync()
    assert [(verb, name) for verb, name, _ in core.calls if verb == "CREATE"] == [
        ("CREATE", "bad-n1"),
        ("CREATE", "good-n1"),
    ]
    pods.mirrors["good-n1_default"] = mirror_of(pods.active_pods[1], "m2")  # the watch
    await mirrors.sync()
    await clock.advance(5)
    await mirrors.sync()
    assert core.verbs() == ["CREATE", "CREATE"]  # the refused one is not asked for yet
    await clock.advance(6)
    await mirrors.sync()
    assert core.verbs() == ["CREATE", "CREATE", "CREATE"]
    assert core.calls[-1][:2] == ("CREATE", "bad-n1")
