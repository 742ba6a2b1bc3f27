"""One worker per pod UID, as the kubelet's pod workers.

Updates for a pod are queued to its worker; a newer pending update replaces an
older one that has not started. A worker syncs its pod until the pod is
terminal or is to be removed, then runs the terminating sync (stop everything
within the grace period) and the terminated sync (clean up), and ends. Each
worker is a task of :meth:`PodWorkers.run`'s task group; none is left behind.
A pod does not start while another of the same full name (``name_namespace``)
is still terminating, as the kubelet holds back a static pod's new version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from minikubelet.api.pod import Pod
from minikubelet.types import PodUID

log = logging.getLogger(__name__)

#: How often a healthy pod is synced again without any event (the kubelet's syncFrequency).
DEFAULT_RESYNC = 60.0
#: After a sync that failed with an unexpected error, retry this soon.
ERROR_RETRY = 10.0


class UpdateType(StrEnum):
    SYNC = "sync"
    KILL = "kill"


class WorkerState(StrEnum):
    SYNCING = "syncing"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class PodUpdate:
    pod: Pod
    type: UpdateType = UpdateType.SYNC
    grace_period: int | None = None  # only for KILL


class PodSyncer(Protocol):
    async def sync_pod(self, pod: Pod) -> tuple[bool, float | None]:
        """Sync once; returns (terminal, when to sync again at the latest, epoch seconds)."""
        ...

    async def sync_terminating_pod(self, pod: Pod, grace_period: int | None) -> None: ...

    async def sync_terminated_pod(self, pod: Pod) -> None: ...

    def sync_failed(self, pod: Pod, error: Exception) -> None: ...


@dataclass(slots=True)
class _Worker:
    pod: Pod
    pending: PodUpdate | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    state: WorkerState = WorkerState.SYNCING
    task: asyncio.Task[None] | None = None
    grace_period: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: The pod came back under the same UID while this worker terminated it: run it again after.
    restart: PodUpdate | None = None


class PodWorkers:
    def __init__(self, syncer: PodSyncer, *, resync: float = DEFAULT_RESYNC) -> None:
        self._syncer = syncer
        self._resync = resync
        self._workers: dict[PodUID, _Worker] = {}
        self._tg: asyncio.TaskGroup | None = None
        self.on_terminated: Callable[[Pod], None] | None = None

    async def run(self) -> None:
        """Own the workers until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            try:
                await asyncio.Future()
            finally:
                self._tg = None

    def update_pod(self, update: PodUpdate) -> None:
        """Queue ``update`` for its pod's worker, starting the worker if needed."""
        uid = update.pod.uid
        worker = self._workers.get(uid)
        if worker is None:
            if update.type is UpdateType.KILL:
                return  # nothing running for it
            if self._tg is None:
                raise RuntimeError("pod workers are not running")
            worker = self._workers[uid] = _Worker(update.pod)
            worker.task = self._tg.create_task(self._work(worker), name=f"pod-worker-{uid}")
        if worker.state is WorkerState.TERMINATED:
            return
        pending = worker.pending
        if (
            pending is not None
            and pending.type is UpdateType.KILL
            and update.type is UpdateType.SYNC
        ):
            return  # a kill is never overtaken by a sync
        if update.type is UpdateType.KILL and worker.state is WorkerState.SYNCING:
            worker.grace_period = update.grace_period
        worker.pending = update
        worker.wake.set()

    def restart_pod(self, update: PodUpdate) -> None:
        """Run ``update.pod`` again although its UID's worker was told to stop (a static pod
        removed and put back unchanged keeps its UID, as the kubelet's ``restartRequested``).

        A finished worker is dropped and a new one starts; a worker terminating (or about
        to) finishes first, then the new one starts.
        """
        uid = update.pod.uid
        worker = self._workers.get(uid)
        if worker is not None and (
            worker.state is WorkerState.TERMINATING
            or (worker.pending is not None and worker.pending.type is UpdateType.KILL)
        ):
            worker.restart = update
            return
        if worker is not None and worker.state is WorkerState.TERMINATED:
            del self._workers[uid]
        self.update_pod(update)

    def state(self, uid: PodUID) -> WorkerState | None:
        worker = self._workers.get(uid)
        return worker.state if worker is not None else None

    def is_known(self, uid: PodUID) -> bool:
        return uid in self._workers

    def uids(self) -> set[PodUID]:
        return set(self._workers)

    def forget(self, uid: PodUID) -> None:
        """Drop a terminated worker's record (once its pod is gone from the config)."""
        worker = self._workers.get(uid)
        if worker is not None and worker.state is WorkerState.TERMINATED:
            del self._workers[uid]

    async def wait_terminated(self, uid: PodUID) -> None:
        worker = self._workers.get(uid)
        if worker is not None:
            await worker.done.wait()

    async def _wait_for_namesake(self, worker: _Worker) -> None:
        """Hold a pod back while another pod of its full name still terminates (the kubelet's
        ``allowStaticPodStart``): an edited manifest's new pod starts once the old is gone,
        so the two never run side by side."""
        name = worker.pod.full_name
        while True:
            other = next(
                (
                    w
                    for w in self._workers.values()
                    if w is not worker
                    and w.pod.full_name == name
                    and w.state is not WorkerState.TERMINATED
                ),
                None,
            )
            if other is None:
                return
            log.info(
                "pod=%s uid=%s waits for uid=%s of the same name to terminate",
                worker.pod,
                worker.pod.uid,
                other.pod.uid,
            )
            await other.done.wait()

    async def _work(self, worker: _Worker) -> None:
        await self._wait_for_namesake(worker)
        next_sync: float | None = None
        while True:
            timeout = None if next_sync is None else max(0.0, next_sync - time.time())
            try:
                await asyncio.wait_for(worker.wake.wait(), timeout)
            except TimeoutError:
                worker.pending = worker.pending or PodUpdate(worker.pod)
            worker.wake.clear()
            update, worker.pending = worker.pending, None
            if update is None:
                continue
            worker.pod = update.pod
            if update.type is UpdateType.KILL:
                await self._terminate(worker, update.grace_period)
                return
            try:
                terminal, retry_at = await self._syncer.sync_pod(update.pod)
            except Exception as exc:  # one pod's failure must not stop its worker
                log.exception("sync failed pod=%s uid=%s", update.pod, update.pod.uid)
                self._syncer.sync_failed(update.pod, exc)
                next_sync = time.time() + ERROR_RETRY
                continue
            if terminal:
                await self._terminate(worker, None)
                return
            resync = time.time() + self._resync
            next_sync = resync if retry_at is None else min(resync, retry_at)

    async def _terminate(self, worker: _Worker, grace_period: int | None) -> None:
        pod = worker.pod
        worker.state = WorkerState.TERMINATING
        try:
            await self._syncer.sync_terminating_pod(pod, grace_period)
            await self._syncer.sync_terminated_pod(pod)
        except Exception as exc:
            log.exception("terminating failed pod=%s uid=%s", pod, pod.uid)
            self._syncer.sync_failed(pod, exc)
        worker.state = WorkerState.TERMINATED
        worker.done.set()
        if self.on_terminated is not None:
            self.on_terminated(pod)
        restart, worker.restart = worker.restart, None
        if restart is not None and self._workers.get(pod.uid) is worker:
            del self._workers[pod.uid]
            self.update_pod(restart)
