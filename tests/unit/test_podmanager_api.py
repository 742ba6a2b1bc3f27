"""API pods in the pod config and the pod manager: graceful deletion and mirror pods."""

from __future__ import annotations

from typing import Any

from minikubelet.clock import ManualClock
from minikubelet.config.podconfig import PodConfig
from minikubelet.config.types import PodOperation, SourceUpdate
from minikubelet.events import EventRecorder
from minikubelet.podmanager import AdmitResult, PodManager
from minikubelet.podworkers import UpdateType, WorkerUpdate


class Workers:
    def __init__(self) -> None:
        self.updates: list[WorkerUpdate] = []

    def update_pod(self, update: WorkerUpdate) -> None:
        self.updates.append(update)

    def restart_pod(self, update: WorkerUpdate) -> None:
        self.updates.append(update)

    def forget(self, uid: str) -> None:
        pass


class Probes:
    def add_pod(self, pod: Any) -> None:
        pass


def raw_pod(name: str, uid: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": uid, **metadata},
        "spec": {
            "nodeName": "n1",
            "terminationGracePeriodSeconds": 30,
            "containers": [{"name": "app", "image": "busybox"}],
        },
    }


def manager() -> tuple[PodManager, Workers, PodConfig]:
    clock = ManualClock()
    workers = Workers()
    pods = PodManager(
        workers=workers,  # type: ignore[arg-type]
        probes=Probes(),
        recorder=EventRecorder(node_name="n1", clock=clock),
        clock=clock,
    )
    return pods, workers, PodConfig()


def feed(pods: PodManager, config: PodConfig, update: SourceUpdate) -> None:
    for change in config.apply(update):
        pods.handle(change)


def test_a_graceful_deletion_kills_the_pod_as_deleted_within_its_grace_period() -> None:
    pods, workers, config = manager()
    feed(pods, config, SourceUpdate(PodOperation.SET, [raw_pod("web", "u1")], "api"))
    deleting = raw_pod(
        "web", "u1", deletionTimestamp="2026-01-01T00:00:30Z", deletionGracePeriodSeconds=7
    )
    feed(pods, config, SourceUpdate(PodOperation.ADD, [deleting], "api"))
    kill = workers.updates[-1]
    assert kill.type is UpdateType.KILL and kill.grace_period == 7
    assert kill.pod.is_deleting and kill.pod.metadata.deletion_grace_period_seconds == 7
    assert pods.is_removed(kill.pod.uid) and pods.removed()[0].is_deleting
    count = len(workers.updates)
    # the kubelet's own status writes come back through the watch: nothing runs again,
    # neither while it terminates nor once it is forgotten
    for n, phase in enumerate(("Running", "Failed")):
        if n:
            pods.forget(kill.pod.uid)
        feed(
            pods,
            config,
            SourceUpdate(PodOperation.ADD, [{**deleting, "status": {"phase": phase}}], "api"),
        )
    assert len(workers.updates) == count and pods.active() == []


def test_a_pod_first_seen_while_being_deleted_is_only_terminated() -> None:
    pods, workers, config = manager()
    deleting = raw_pod(
        "web", "u1", deletionTimestamp="2026-01-01T00:00:30Z", deletionGracePeriodSeconds=3
    )
    feed(pods, config, SourceUpdate(PodOperation.SET, [deleting], "api"))
    assert [u.type for u in workers.updates][-1] is UpdateType.KILL
    assert workers.updates[-1].grace_period == 3
    assert pods.active() == [] and pods.is_removed(workers.updates[-1].pod.uid)


def test_mirror_pods_share_their_static_pods_name_and_are_kept_apart() -> None:
    pods, workers, config = manager()
    static = raw_pod("web-n1", "h1", annotations={"kubernetes.io/config.hash": "h1"})
    mirror = raw_pod("web-n1", "m1", annotations={"kubernetes.io/config.mirror": "h1"})
    # either may come first (a kubelet that restarts lists the API before reading files)
    feed(pods, config, SourceUpdate(PodOperation.SET, [mirror], "api"))
    feed(pods, config, SourceUpdate(PodOperation.SET, [static], "file"))
    assert config.duplicates == {"api": [], "file": []}
    assert [p.uid for p in pods.active()] == ["h1"]
    assert pods.mirror_pods()["web-n1_default"]["metadata"]["uid"] == "m1"
    # deleted through the API: still held (with its deletion timestamp) until it is gone
    deleting = raw_pod(
        "web-n1",
        "m1",
        annotations={"kubernetes.io/config.mirror": "h1"},
        deletionTimestamp="2026-01-01T00:00:30Z",
    )
    feed(pods, config, SourceUpdate(PodOperation.ADD, [deleting], "api"))
    assert pods.mirror_pods()["web-n1_default"]["metadata"]["deletionTimestamp"]
    assert all(u.pod.uid == "h1" for u in workers.updates)  # a mirror pod is never run
    feed(pods, config, SourceUpdate(PodOperation.REMOVE, [deleting], "api"))
    assert pods.mirror_pods() == {}


class RefuseAll:
    def admit(self, pod: Any, admitted: Any) -> AdmitResult:
        return AdmitResult("OutOfpods", "Node didn't have enough resource: pods")


def test_a_refused_pod_deleted_through_the_api_ends_at_once() -> None:
    clock = ManualClock()
    workers = Workers()
    pods = PodManager(
        workers=workers,  # type: ignore[arg-type]
        probes=Probes(),
        recorder=EventRecorder(node_name="n1", clock=clock),
        clock=clock,
        admit_handlers=[RefuseAll()],
    )
    config = PodConfig()
    feed(pods, config, SourceUpdate(PodOperation.SET, [raw_pod("big", "u1")], "api"))
    assert [p.uid for p in pods.refused()] == ["u1"] and workers.updates == []
    deleting = raw_pod("big", "u1", deletionTimestamp="2026-01-01T00:00:30Z")
    feed(pods, config, SourceUpdate(PodOperation.ADD, [deleting], "api"))
    # nothing ran: housekeeping finds it removed without a worker and ends it (the
    # terminated hooks then delete it from the API server)
    assert pods.refused() == [] and [p.uid for p in pods.removed()] == ["u1"]
    assert pods.removed()[0].is_deleting


def test_a_refused_static_pod_whose_file_goes_is_ended_too() -> None:
    """Its Failed status is not kept for ever: housekeeping ends it like any removed pod."""
    clock = ManualClock()
    pods = PodManager(
        workers=Workers(),  # type: ignore[arg-type]
        probes=Probes(),
        recorder=EventRecorder(node_name="n1", clock=clock),
        clock=clock,
        admit_handlers=[RefuseAll()],
    )
    config = PodConfig()
    feed(pods, config, SourceUpdate(PodOperation.SET, [raw_pod("big", "u1")], "file"))
    assert [p.uid for p in pods.refused()] == ["u1"]
    feed(pods, config, SourceUpdate(PodOperation.SET, [], "file"))
    assert pods.refused() == [] and [p.uid for p in pods.removed()] == ["u1"]
