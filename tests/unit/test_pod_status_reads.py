"""GetPodStatus reads a pod's sandboxes and containers together, and still reads them all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from minikubelet.backoff import Backoff
from minikubelet.clock import ManualClock
from minikubelet.container.status import ContainerState
from minikubelet.cri.services import RuntimeHandlers
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import NotFound, Unavailable
from minikubelet.events import EventRecorder
from minikubelet.images import ImageManager
from minikubelet.kuberuntime.manager import KubeRuntimeManager
from minikubelet.types import PodUID


class StubRuntime:
    """Lists and statuses only; counts the calls in flight at once."""

    version_info = None

    def __init__(self, sandboxes: list[str], containers: list[str]) -> None:
        self.sandboxes = sandboxes
        self.containers = containers
        self.gone: set[str] = set()
        self.broken: set[str] = set()
        self.in_flight = 0
        self.most_in_flight = 0
        self.finished: list[str] = []

    async def _call(self, name: str) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        for _ in range(3):  # a round trip: others may go out meanwhile
            await asyncio.sleep(0)
        self.in_flight -= 1
        self.finished.append(name)
        if name in self.gone:
            raise NotFound(f"{name} is gone")
        if name in self.broken:
            raise Unavailable("runtime unavailable")

    async def list_pod_sandbox(self, _filter: Any = None) -> list[pb.PodSandbox]:
        await self._call("ListPodSandbox")
        return [pb.PodSandbox(id=s) for s in self.sandboxes]

    async def list_containers(self, _filter: Any = None) -> list[pb.Container]:
        await self._call("ListContainers")
        return [pb.Container(id=c) for c in self.containers]

    async def pod_sandbox_status(self, sandbox_id: str) -> pb.PodSandboxStatusResponse:
        await self._call(sandbox_id)
        return pb.PodSandboxStatusResponse(
            status=pb.PodSandboxStatus(
                id=sandbox_id,
                state=pb.SANDBOX_READY,
                created_at=int(sandbox_id[1:]),
                network=pb.PodSandboxNetworkStatus(ip=f"10.0.0.{sandbox_id[1:]}"),
            )
        )

    async def container_status(self, container_id: str) -> pb.ContainerStatusResponse:
        await self._call(container_id)
        return pb.ContainerStatusResponse(
            status=pb.ContainerStatus(
                id=container_id,
                metadata=pb.ContainerMetadata(name=f"n-{container_id}"),
                state=pb.CONTAINER_RUNNING,
                created_at=int(container_id[1:]),
            )
        )


def manager(runtime: StubRuntime) -> KubeRuntimeManager:
    clock = ManualClock()
    recorder = EventRecorder(node_name="n", clock=clock)
    backoff = Backoff(initial=10, maximum=300, clock=clock)
    return KubeRuntimeManager(
        RuntimeHandlers(runtime),  # type: ignore[arg-type]
        events=recorder,
        images=ImageManager(recorder, backoff),
        backoff=backoff,
        configs=None,  # type: ignore[arg-type]
        probes=None,  # type: ignore[arg-type]
        hooks=None,  # type: ignore[arg-type]
        clock=clock,
    )


async def test_the_statuses_are_read_together_and_all_reported() -> None:
    runtime = StubRuntime(["s1", "s2"], ["c1", "c2", "c3"])
    status = await manager(runtime).get_pod_status(PodUID("u1"))
    assert [s.id for s in status.sandbox_statuses] == ["s2", "s1"]  # newest first
    assert [c.id for c in status.container_statuses] == ["c3", "c2", "c1"]
    assert all(c.state is ContainerState.RUNNING for c in status.container_statuses)
    assert status.ips == ("10.0.0.2",)
    # both lists went out together, then the five statuses
    assert runtime.finished[:2] == ["ListPodSandbox", "ListContainers"]
    assert runtime.most_in_flight == 5


async def test_a_sandbox_or_container_removed_meanwhile_is_left_out() -> None:
    runtime = StubRuntime(["s1", "s2"], ["c1", "c2"])
    runtime.gone = {"s1", "c2"}
    status = await manager(runtime).get_pod_status(PodUID("u1"))
    assert [s.id for s in status.sandbox_statuses] == ["s2"]
    assert [c.id for c in status.container_statuses] == ["c1"]


async def test_an_error_is_raised_once_every_read_has_finished() -> None:
    runtime = StubRuntime(["s1"], ["c1", "c2"])
    runtime.broken = {"c1"}
    with pytest.raises(Unavailable):
        await manager(runtime).get_pod_status(PodUID("u1"))
    assert runtime.in_flight == 0
    assert sorted(runtime.finished[2:]) == ["c1", "c2", "s1"]
