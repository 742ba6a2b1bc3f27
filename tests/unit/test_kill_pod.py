"""KillPod reports what it could not stop, so the pod worker retries (and the pod is not gone)."""

from __future__ import annotations

import pytest

from minikubelet.api.pod import Pod
from minikubelet.backoff import Backoff
from minikubelet.clock import ManualClock
from minikubelet.container.status import (
    ContainerState,
    ContainerStatus,
    PodStatus,
    SandboxState,
    SandboxStatus,
)
from minikubelet.cri.services import RuntimeHandlers
from minikubelet.errors import NotFound, Unavailable
from minikubelet.events import EventRecorder
from minikubelet.images import ImageManager
from minikubelet.kuberuntime.manager import KillPodError, KubeRuntimeManager
from minikubelet.types import ContainerID, PodSandboxID, PodUID

POD = Pod.from_dict(
    {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "uid": "u1"},
        "spec": {
            "terminationGracePeriodSeconds": 3,
            "containers": [{"name": "a", "image": "busybox:1"}, {"name": "b", "image": "x:1"}],
        },
    }
)
STATUS = PodStatus(
    uid=PodUID("u1"),
    sandbox_statuses=(SandboxStatus(PodSandboxID("s1"), SandboxState.READY),),
    container_statuses=(
        ContainerStatus(ContainerID("ca"), "a", ContainerState.RUNNING),
        ContainerStatus(ContainerID("cb"), "b", ContainerState.RUNNING),
    ),
)


class StubRuntime:
    """Only what KillPod calls; ``fail`` names the ids whose stop fails."""

    version_info = None

    def __init__(self, fail: set[str]) -> None:
        self.fail = fail
        self.stopped: list[str] = []

    async def stop_container(self, container_id: str, timeout: int) -> None:
        if container_id in self.fail:
            raise Unavailable("runtime unavailable")
        if container_id == "gone":
            raise NotFound("no such container")
        self.stopped.append(container_id)

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        if sandbox_id in self.fail:
            raise Unavailable("runtime unavailable")
        self.stopped.append(sandbox_id)


class NoProbes:
    def container_stopped(self, pod: Pod, name: str) -> None:
        pass


def manager(runtime: StubRuntime) -> tuple[KubeRuntimeManager, EventRecorder]:
    clock = ManualClock()
    recorder = EventRecorder(node_name="n", clock=clock)
    backoff = Backoff(initial=10, maximum=300, clock=clock)
    m = KubeRuntimeManager(
        RuntimeHandlers(runtime),  # type: ignore[arg-type]
        events=recorder,
        images=ImageManager(recorder, backoff),
        backoff=backoff,
        configs=None,  # type: ignore[arg-type]
        probes=NoProbes(),  # type: ignore[arg-type]
        hooks=None,  # type: ignore[arg-type]
        clock=clock,
    )
    return m, recorder


async def test_everything_stopped_is_no_error() -> None:
    runtime = StubRuntime(fail=set())
    m, _ = manager(runtime)
    await m.kill_pod(POD, STATUS, None)
    assert sorted(runtime.stopped) == ["ca", "cb", "s1"]


async def test_a_container_that_would_not_stop_fails_the_kill_after_trying_the_rest() -> None:
    runtime = StubRuntime(fail={"ca"})
    m, recorder = manager(runtime)
    with pytest.raises(KillPodError, match="container a: runtime unavailable"):
        await m.kill_pod(POD, STATUS, None)
    assert sorted(runtime.stopped) == ["cb", "s1"], "the others are still stopped"
    reasons = [(e["reason"], e["message"]) for e in recorder.events()]
    assert (
        "FailedKillPod",
        "error killing pod: failed to stop container a: runtime unavailable",
    ) in reasons


async def test_a_sandbox_that_would_not_stop_fails_the_kill() -> None:
    runtime = StubRuntime(fail={"s1"})
    m, _ = manager(runtime)
    with pytest.raises(KillPodError, match="sandbox s1"):
        await m.kill_pod(POD, STATUS, None)


async def test_a_container_already_gone_counts_as_stopped() -> None:
    gone = PodStatus(
        uid=PodUID("u1"),
        container_statuses=(ContainerStatus(ContainerID("gone"), "a", ContainerState.RUNNING),),
    )
    m, _ = manager(StubRuntime(fail=set()))
    await m.kill_pod(POD, gone, None)
