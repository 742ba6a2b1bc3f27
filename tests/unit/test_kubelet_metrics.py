"""The kubelet's own /metrics families the core feeds: the PLEG's relist duration and
interval and the running pod and container gauges, in virtual time."""

from __future__ import annotations

import asyncio

import pytest

from minikubelet.clock import ManualClock
from minikubelet.container.status import ContainerState as S
from minikubelet.errors import Unavailable
from minikubelet.kuberuntime.manager import RuntimeContainer, RuntimePod
from minikubelet.pleg import GenericPLEG
from minikubelet.stats.metrics import KubeletMetrics
from minikubelet.types import ContainerID, PodUID


def runtime_pod(uid: str, sandbox: S | None, *containers: S) -> RuntimePod:
    pod = RuntimePod(PodUID(uid), uid, "ns")
    if sandbox is not None:
        pod.sandboxes = [RuntimeContainer(ContainerID(f"{uid}-s"), "POD", sandbox, 0)]
    pod.containers = [
        RuntimeContainer(ContainerID(f"{uid}-{i}"), f"c{i}", state, 0)
        for i, state in enumerate(containers)
    ]
    return pod


class Runtime:
    """A runtime whose listing takes ``took`` virtual seconds, or fails."""

    def __init__(self, clock: ManualClock, took: float) -> None:
        self.clock = clock
        self.took = took
        self.pods: dict[PodUID, RuntimePod] = {}
        self.failing = False

    async def list_pods(self) -> dict[PodUID, RuntimePod]:
        await self.clock.sleep(self.took)
        if self.failing:
            raise Unavailable("the runtime is away")
        return dict(self.pods)


async def relist(pleg: GenericPLEG, clock: ManualClock, took: float) -> None:
    task = asyncio.create_task(pleg.relist())
    await clock.advance(took)
    await task


async def test_relist_duration_and_interval() -> None:
    clock = ManualClock()
    runtime = Runtime(clock, took=0.25)
    metrics = KubeletMetrics()
    pleg = GenericPLEG(runtime.list_pods, clock=clock, metrics=metrics)

    await relist(pleg, clock, 0.25)
    assert metrics.pleg_relist_duration.count() == 1
    assert metrics.pleg_relist_interval.count() == 0  # no previous relist to measure from
    await clock.advance(0.75)
    await relist(pleg, clock, 0.25)
    await clock.advance(1.75)
    await relist(pleg, clock, 0.25)

    text = metrics.render()
    assert "\nkubelet_pleg_relist_duration_seconds_count 3\n" in text
    assert "\nkubelet_pleg_relist_duration_seconds_sum 0.75\n" in text
    assert 'kubelet_pleg_relist_duration_seconds_bucket{le="0.25"} 3\n' in text
    # from the start of one relist to the start of the next
    assert "\nkubelet_pleg_relist_interval_seconds_count 2\n" in text
    assert "\nkubelet_pleg_relist_interval_seconds_sum 3\n" in text
    assert 'kubelet_pleg_relist_interval_seconds_bucket{le="1"} 1\n' in text


async def test_a_failed_relist_is_timed_but_measures_no_interval() -> None:
    clock = ManualClock()
    runtime = Runtime(clock, took=0.5)
    runtime.pods = {PodUID("a"): runtime_pod("a", S.RUNNING, S.RUNNING)}
    metrics = KubeletMetrics()
    pleg = GenericPLEG(runtime.list_pods, clock=clock, metrics=metrics)
    await relist(pleg, clock, 0.5)

    runtime.failing = True
    await clock.advance(1.5)
    with pytest.raises(Unavailable):
        await relist(pleg, clock, 0.5)
    assert metrics.pleg_relist_duration.count() == 2
    assert metrics.running_pods.value() == 1  # the gauges keep the last relist's

    runtime.failing = False
    await clock.advance(1.5)
    await relist(pleg, clock, 0.5)
    # the intervals run from the start of the last relist that succeeded
    assert metrics.pleg_relist_interval.count() == 2
    assert "\nkubelet_pleg_relist_interval_seconds_sum 6\n" in metrics.render()


async def test_running_pods_and_containers_from_the_relist() -> None:
    clock = ManualClock()
    runtime = Runtime(clock, took=0)
    runtime.pods = {
        PodUID("a"): runtime_pod("a", S.RUNNING, S.RUNNING, S.RUNNING, S.EXITED),
        PodUID("b"): runtime_pod("b", S.RUNNING, S.CREATED),
        PodUID("c"): runtime_pod("c", S.EXITED, S.EXITED),  # its sandbox is not ready
        PodUID("d"): runtime_pod("d", None, S.UNKNOWN),  # containers without a sandbox
    }
    metrics = KubeletMetrics()
    pleg = GenericPLEG(runtime.list_pods, clock=clock, metrics=metrics)
    await pleg.relist()

    text = metrics.render()
    assert "\nkubelet_running_pods 2\n" in text
    assert 'kubelet_running_containers{container_state="running"} 2\n' in text
    assert 'kubelet_running_containers{container_state="exited"} 2\n' in text
    assert 'kubelet_running_containers{container_state="created"} 1\n' in text
    assert 'kubelet_running_containers{container_state="unknown"} 1\n' in text

    runtime.pods = {PodUID("b"): runtime_pod("b", S.RUNNING, S.RUNNING)}
    await pleg.relist()
    text = metrics.render()
    assert "\nkubelet_running_pods 1\n" in text
    assert 'kubelet_running_containers{container_state="running"} 1\n' in text
    # a state no container is in any more reads 0 rather than its old count
    assert 'kubelet_running_containers{container_state="exited"} 0\n' in text
    assert 'kubelet_running_containers{container_state="unknown"} 0\n' in text


async def test_without_metrics_the_pleg_relists_as_before() -> None:
    clock = ManualClock()
    runtime = Runtime(clock, took=0)
    runtime.pods = {PodUID("a"): runtime_pod("a", S.RUNNING, S.RUNNING)}
    pleg = GenericPLEG(runtime.list_pods, clock=clock)
    assert pleg.metrics is None
    events = await pleg.relist()
    assert len(events) == 2 and pleg.relists == 1


def test_pod_start_duration_buckets() -> None:
    metrics = KubeletMetrics()
    metrics.observe_pod_start(1.5)
    metrics.observe_pod_start(45)
    text = metrics.render()
    assert 'kubelet_pod_start_duration_seconds_bucket{le="2"} 1\n' in text
    assert 'kubelet_pod_start_duration_seconds_bucket{le="45"} 2\n' in text
    assert "\nkubelet_pod_start_duration_seconds_count 2\n" in text
