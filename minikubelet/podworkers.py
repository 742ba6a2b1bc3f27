"""One worker per pod UID, as the kubelet's pod workers.

Updates for a pod are queued to its worker; a newer pending update replaces an
older one that has not started. A worker syncs its pod until the pod is
terminal or is to be removed, then runs the terminating sync (stop everything
within the grace period) and the terminated sync (clean up), and ends. Each
worker is a task of :meth:`PodWorkers.run`'s task group; none is left behind.
A pod does not start while another of the same full name (``name_namespace``)
is still terminating, as the kubelet holds back a static pod's new version.
A terminating or terminated sync that fails is tried again after
:data:`ERROR_RETRY` (or at once for a newer kill), as the kubelet retries
terminating pods: a pod whose containers could not be stopped is never taken for
gone. Time is read through the injected :class:`~minikubelet.clock.Clock`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from minikubelet.api.pod import Pod
from minikubelet.clock import Clock, RealClock
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
class WorkerUpdate:
    """Work for one pod's worker: sync it, or kill it (with a grace period override)."""

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
    pending: WorkerUpdate | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    state: WorkerState = WorkerState.SYNCING
    task: asyncio.Task[None] | None = None
    grace_period: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    #: The pod came back under the same UID while this worker terminated it: run it again after.
    restart: WorkerUpdate | None = None


class PodWorkers:
    def __init__(
        self,
        syncer: PodSyncer | None = None,
        *,
        resync: float = DEFAULT_RESYNC,
        clock: Clock | None = None,
    ) -> None:
        self._syncer_or_none = syncer
        self._resync = resync
        self._clock: Clock = clock or RealClock()
        self._workers: dict[PodUID, _Worker] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._running = asyncio.Event()
        self.on_terminated: Callable[[Pod], None] | None = None

    def bind(self, syncer: PodSyncer) -> None:
        """Name the syncer the workers call (for a syncer built after the workers)."""
        self._syncer_or_none = syncer

    @property
    def _syncer(self) -> PodSyncer:
        if self._syncer_or_none is None:
            raise RuntimeError("pod workers have no syncer")
        return self._syncer_or_none

    async def run(self) -> None:
        """Own the workers until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._running.set()
            try:
                await asyncio.Future()
            finally:
                self._tg = None
                self._running.clear()

    async def wait_running(self) -> None:
        """Return once :meth:`run` owns its task group: updates are taken from then on."""
        await self._running.wait()

    def update_pod(self, update: WorkerUpdate) -> None:
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

    def sync(self, pod: Pod) -> None:
        """Sync ``pod`` soon (an event about it came in)."""
        self.update_pod(WorkerUpdate(pod))

    def restart_pod(self, update: WorkerUpdate) -> None:
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

    async def _wait(self, worker: _Worker, timeout: float | None) -> None:
        """Until an update arrives for ``worker`` or ``timeout`` seconds pass on the clock."""
        if worker.wake.is_set():
            return
        if timeout is None:
            await worker.wake.wait()
            return
        if timeout <= 0:
            return
        wake = asyncio.ensure_future(worker.wake.wait())
        sleep = asyncio.ensure_future(self._clock.sleep(timeout))
        try:
            await asyncio.wait({wake, sleep}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            sleep.cancel()

    async def _work(self, worker: _Worker) -> None:
        await self._wait_for_namesake(worker)
        next_sync: float | None = None
        while True:
            timeout = None if next_sync is None else next_sync - self._clock.now()
            await self._wait(worker, timeout)
            if not worker.wake.is_set():
                worker.pending = worker.pending or WorkerUpdate(worker.pod)
            worker.wake.clear()
            update, worker.pending = worker.pending, None
            if update is None:
                continue
            worker.pod = update.pod
            if update.type is UpdateType.KILL:
                await self._terminate(worker, update.grace_period)
                return
            log.debug("pod worker sync pod=%s uid=%s", update.pod, update.pod.uid)
            try:
                terminal, retry_at = await self._syncer.sync_pod(update.pod)
            except Exception as exc:  # one pod's failure must not stop its worker
                log.exception("sync failed pod=%s uid=%s", update.pod, update.pod.uid)
                self._syncer.sync_failed(update.pod, exc)
                next_sync = self._clock.now() + ERROR_RETRY
                continue
            if terminal:
                await self._terminate(worker, None)
                return
            resync = self._clock.now() + self._resync
            next_sync = resync if retry_at is None else min(resync, retry_at)

    async def _retry_wait(self, worker: _Worker, grace_period: int | None) -> int | None:
        """After a failed terminating step: wait for the retry period or a newer kill, whose
        shorter grace period applies from then on (never a longer one)."""
        await self._wait(worker, ERROR_RETRY)
        worker.wake.clear()
        update, worker.pending = worker.pending, None
        if update is not None:
            worker.pod = update.pod
            shorter = update.grace_period
            if (
                update.type is UpdateType.KILL
                and shorter is not None
                and (grace_period is None or shorter < grace_period)
            ):
                return shorter
        return grace_period

    async def _terminate(self, worker: _Worker, grace_period: int | None) -> None:
        worker.state = WorkerState.TERMINATING
        while True:
            try:
                await self._syncer.sync_terminating_pod(worker.pod, grace_period)
                break
            except Exception as exc:
                log.exception("terminating failed pod=%s uid=%s", worker.pod, worker.pod.uid)
                self._syncer.sync_failed(worker.pod, exc)
            grace_period = await self._retry_wait(worker, grace_period)
        while True:
            try:
                await self._syncer.sync_terminated_pod(worker.pod)
                break
            except Exception as exc:
                log.exception("cleaning up failed pod=%s uid=%s", worker.pod, worker.pod.uid)
                self._syncer.sync_failed(worker.pod, exc)
            await self._retry_wait(worker, grace_period)
        pod = worker.pod
        worker.state = WorkerState.TERMINATED
        worker.done.set()
        if self.on_terminated is not None:
            self.on_terminated(pod)
        restart, worker.restart = worker.restart, None
        if restart is not None and self._workers.get(pod.uid) is worker:
            del self._workers[pod.uid]
            self.update_pod(restart)
