"""Dead containers and sandboxes: the kubelet's container deletor and ``kuberuntime_gc``.

Two parts, as in the kubelet:

* :class:`PodContainerDeletor` (``pod_container_deletor.go``) acts when a container
  dies (a PLEG ContainerDied event): of the pod's exited instances of that container
  it keeps the newest ``containers_to_keep`` (at least one, the kubelet's
  ``minDeadContainerInPod``) and removes the others. So the runtime holds, per
  container name, the running instance and the last one that exited, from which the
  kubelet reads ``lastState`` and the next restart count; ``logs --previous`` reads it
  too. A pod that was removed and has finished loses all of its dead containers.
* :class:`ContainerGC` is the periodic sweep behind it: per pod, at most
  ``max_per_pod_container`` dead instances of each container are kept (the newest).
  Of the pod's sandboxes the newest stays, and an older one goes once it is neither
  ready nor holds any container (``evictSandboxes``: a sandbox recreated under a
  running pod keeps the old one while the dead instances in it are the newest). Pods
  that are being terminated are left to their worker.

Every removal goes through the runtime manager, so it reaches the runtime that holds
the pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from minikubelet.container.status import ContainerState
from minikubelet.errors import CRIError
from minikubelet.kuberuntime.manager import RuntimeContainer, RuntimePod
from minikubelet.types import ContainerID, PodUID

log = logging.getLogger(__name__)

#: The kubelet keeps at least this many dead instances per container (minDeadContainerInPod).
MIN_DEAD_CONTAINERS_IN_POD: Final = 1
#: Removal requests the deletor holds at most; beyond, a request is dropped (the periodic
#: GC catches up), as the kubelet's containerDeletorBufferLimit.
DELETOR_BUFFER_LIMIT: Final = 50


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
            removed: set[str] = set()
            for dead in by_name.values():
                dead.sort(key=lambda c: c.created_at, reverse=True)
                for c in dead[keep:]:
                    await self._runtime.remove_dead_container(uid, c.id)
                    removed.add(c.id)
            # a sandbox is active while ready or while it still holds containers (removing it
            # would take with it the dead instance lastState and the restart count come from)
            holding = {
                c.sandbox_id for c in runtime_pod.containers if c.id not in removed and c.sandbox_id
            }
            sandboxes = sorted(runtime_pod.sandboxes, key=lambda s: s.created_at, reverse=True)
            # the newest sandbox stays; of the older ones, the inactive go
            for s in sandboxes[1:]:
                if s.state is not ContainerState.RUNNING and s.id not in holding:
                    await self._runtime.remove_dead_sandbox(uid, s.id)


def containers_to_delete(
    pod: RuntimePod | None, container_id: str, containers_to_keep: int
) -> list[RuntimeContainer]:
    """The exited instances of the pod to remove when ``container_id`` died (pure).

    The kubelet's ``getContainersToDeleteInPod``: the exited instances with the dead
    container's name, newest first (the higher attempt, then the later creation), beyond
    the first ``containers_to_keep``. With an empty ``container_id`` every exited
    container of the pod is a candidate; an id the pod does not hold (a sandbox, or a
    container already gone) selects nothing.
    """
    containers_to_keep = max(containers_to_keep, 0)
    if pod is None:
        return []
    matched: RuntimeContainer | None = None
    if container_id:
        matched = next((c for c in pod.containers if c.id == container_id), None)
        if matched is None:
            return []
    candidates = [
        c
        for c in pod.containers
        if c.state is ContainerState.EXITED and (matched is None or c.name == matched.name)
    ]
    if len(candidates) <= containers_to_keep:
        return []
    candidates.sort(key=lambda c: (c.attempt, c.created_at), reverse=True)
    return candidates[containers_to_keep:]


@dataclass(frozen=True, slots=True)
class _Removal:
    uid: PodUID
    container_ids: tuple[ContainerID, ...]
    then: Callable[[], None] | None


class PodContainerDeletor:
    """Removes a pod's older dead instances of a container when one of them dies.

    :meth:`delete_containers_in_pod` is called from the PLEG's event handler and never
    blocks: the removals are queued (at most :data:`DELETOR_BUFFER_LIMIT`) and carried
    out by :meth:`run`, one after the other. ``then`` runs once the removals of that
    request are done (or at once when there is nothing to remove or the request is
    dropped): the kubelet syncs the pod from there, so the status that follows a death
    is computed from what the runtime still holds.
    """

    def __init__(self, runtime: Remover, *, max_per_pod_container: int = 1) -> None:
        self._runtime = runtime
        self.containers_to_keep = max(max_per_pod_container, MIN_DEAD_CONTAINERS_IN_POD)
        self._queue: asyncio.Queue[_Removal] = asyncio.Queue(maxsize=DELETOR_BUFFER_LIMIT)

    def delete_containers_in_pod(
        self,
        uid: PodUID,
        container_id: str,
        pod: RuntimePod | None,
        *,
        remove_all: bool = False,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Queue the removal of what :func:`containers_to_delete` selects; ``remove_all``
        (a removed pod that has finished) removes every exited container of the pod."""
        keep = 0 if remove_all else self.containers_to_keep
        selected = containers_to_delete(pod, "" if remove_all else container_id, keep)
        if not selected:
            if then is not None:
                then()
            return
        try:
            self._queue.put_nowait(_Removal(uid, tuple(c.id for c in selected), then))
        except asyncio.QueueFull:
            log.warning(
                "container deletor: too many requests, not removing %s of pod %s",
                ", ".join(c.id for c in selected),
                uid,
            )
            if then is not None:
                then()

    async def run(self) -> None:
        """Carry out the queued removals until cancelled."""
        while True:
            removal = await self._queue.get()
            await self._remove(removal.uid, removal.container_ids)
            if removal.then is not None:
                removal.then()

    async def _remove(self, uid: PodUID, container_ids: Sequence[ContainerID]) -> None:
        for container_id in container_ids:
            try:
                await self._runtime.remove_dead_container(uid, container_id)
            except CRIError as exc:
                log.warning("container deletor: removing %s of pod %s: %s", container_id, uid, exc)
