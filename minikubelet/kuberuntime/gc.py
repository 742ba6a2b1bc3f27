"""Garbage collection of dead containers and sandboxes (the kubelet's ``kuberuntime_gc``).

Per pod, at most ``max_per_pod_container`` dead instances of each container are
kept (the newest; older ones are what ``logs --previous`` no longer needs), and
of the dead sandboxes only the newest while the pod has no ready one. Pods that
are being terminated are left to their worker. Every removal goes through the
runtime manager, so it reaches the runtime that holds the pod.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from minikubelet.container.status import ContainerState
from minikubelet.kuberuntime.manager import RuntimeContainer, RuntimePod
from minikubelet.types import PodUID


class Remover(Protocol):
    async def remove_dead_container(self, uid: PodUID, container_id: str) -> None: ...

    async def remove_dead_sandbox(self, uid: PodUID, sandbox_id: str) -> None: ...


class ContainerGC:
    def __init__(self, runtime: Remover, *, max_per_pod_container: int = 1) -> None:
        self._runtime = runtime
        self.max_per_pod_container = max_per_pod_container

    async def collect(
        self, pods: Mapping[PodUID, RuntimePod], *, busy: Callable[[PodUID], bool]
    ) -> None:
        """Collect over what the last relist saw; ``busy(uid)`` pods are skipped."""
        keep = self.max_per_pod_container
        for uid, runtime_pod in list(pods.items()):
            if busy(uid):
                continue
            by_name: dict[str, list[RuntimeContainer]] = {}
            for c in runtime_pod.containers:
                if c.state is ContainerState.EXITED:
                    by_name.setdefault(c.name, []).append(c)
            for dead in by_name.values():
                dead.sort(key=lambda c: c.created_at, reverse=True)
                for c in dead[keep:]:
                    await self._runtime.remove_dead_container(uid, c.id)
            ready = [s for s in runtime_pod.sandboxes if s.state is ContainerState.RUNNING]
            dead_sandboxes = sorted(
                (s for s in runtime_pod.sandboxes if s.state is not ContainerState.RUNNING),
                key=lambda s: s.created_at,
                reverse=True,
            )
            # the newest sandbox stays while it is the pod's latest; older dead ones go
            for s in dead_sandboxes[0 if ready else 1 :]:
                await self._runtime.remove_dead_sandbox(uid, s.id)
