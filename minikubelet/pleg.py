"""The pod lifecycle event generator: relist the runtime, turn state changes into events.

As the kubelet's generic PLEG, every ``period`` seconds it lists all sandboxes
and containers (one ListPodSandbox, one ListContainers), compares each
container's state with the previous relist and emits ContainerStarted,
ContainerDied, ContainerRemoved or ContainerChanged for the pod it belongs to.
Sandboxes count as containers, as they do in the kubelet.

An optional :class:`PLEGMetrics` (``GenericPLEG(..., metrics=...)``) is told each
relist's duration and the interval since the previous one, and the pods the relist
found (for the running pod and container gauges), as the kubelet's PLEG feeds its
``kubelet_pleg_relist_*`` and ``kubelet_running_*`` metrics. Without one nothing is
measured.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from minikubelet.clock import Clock, RealClock
from minikubelet.container.status import ContainerState
from minikubelet.errors import CRIError
from minikubelet.kuberuntime.manager import RuntimePod
from minikubelet.types import PodUID

log = logging.getLogger(__name__)

DEFAULT_RELIST_PERIOD = 1.0
#: The kubelet reports itself unhealthy when a relist has not finished for this long.
RELIST_THRESHOLD = 180.0


class EventType(StrEnum):
    CONTAINER_STARTED = "ContainerStarted"
    CONTAINER_DIED = "ContainerDied"
    CONTAINER_REMOVED = "ContainerRemoved"
    CONTAINER_CHANGED = "ContainerChanged"


@dataclass(frozen=True, slots=True)
class PodLifecycleEvent:
    uid: PodUID
    type: EventType
    container_id: str


def _state(pod: RuntimePod | None, container_id: str) -> ContainerState | None:
    if pod is None:
        return None
    for c in (*pod.sandboxes, *pod.containers):
        if c.id == container_id:
            return c.state
    return None


def _events_for(
    uid: PodUID, cid: str, old: ContainerState | None, new: ContainerState | None
) -> list[PodLifecycleEvent]:
    if old == new:
        return []
    if new is ContainerState.RUNNING:
        return [PodLifecycleEvent(uid, EventType.CONTAINER_STARTED, cid)]
    if new is ContainerState.EXITED:
        return [PodLifecycleEvent(uid, EventType.CONTAINER_DIED, cid)]
    if new is None:
        if old is ContainerState.EXITED:
            return [PodLifecycleEvent(uid, EventType.CONTAINER_REMOVED, cid)]
        return [
            PodLifecycleEvent(uid, EventType.CONTAINER_DIED, cid),
            PodLifecycleEvent(uid, EventType.CONTAINER_REMOVED, cid),
        ]
    # created or unknown: the kubelet folds both into "changed"
    return [PodLifecycleEvent(uid, EventType.CONTAINER_CHANGED, cid)]


def diff(old: dict[PodUID, RuntimePod], new: dict[PodUID, RuntimePod]) -> list[PodLifecycleEvent]:
    """The events that take a relist from ``old`` to ``new`` (pure)."""
    events: list[PodLifecycleEvent] = []
    for uid in old.keys() | new.keys():
        before, after = old.get(uid), new.get(uid)
        ids: dict[str, None] = {}
        for pod in (before, after):
            if pod is not None:
                ids.update((c.id, None) for c in (*pod.sandboxes, *pod.containers))
        for cid in ids:
            events.extend(_events_for(uid, cid, _state(before, cid), _state(after, cid)))
    return events


class PLEGMetrics(Protocol):
    """What the PLEG reports of each relist (seconds by the PLEG's monotonic clock)."""

    def observe_pleg_relist_interval(self, seconds: float) -> None:
        """Since the start of the previous successful relist, at the start of a relist."""
        ...

    def observe_pleg_relist_duration(self, seconds: float) -> None:
        """How long a relist took, failed ones included."""
        ...

    def observe_runtime_pods(self, pods: Mapping[PodUID, RuntimePod]) -> None:
        """The pods a successful relist found."""
        ...


class GenericPLEG:
    def __init__(
        self,
        list_pods: Callable[[], Awaitable[dict[PodUID, RuntimePod]]],
        *,
        period: float = DEFAULT_RELIST_PERIOD,
        clock: Clock | None = None,
        metrics: PLEGMetrics | None = None,
    ) -> None:
        self._list_pods = list_pods
        self._clock: Clock = clock or RealClock()
        self.metrics = metrics
        self._relist_started: float | None = None  # of the last successful relist
        self.period = period
        self.pods: dict[PodUID, RuntimePod] = {}
        self.last_relist: float | None = None
        self.relists = 0

    def healthy(self) -> bool:
        if self.last_relist is None:
            return True
        return self._clock.monotonic() - self.last_relist < RELIST_THRESHOLD

    async def relist(self) -> list[PodLifecycleEvent]:
        metrics = self.metrics
        if metrics is None:
            current = await self._list_pods()
        else:
            current = await self._measured_list(metrics)
        events = diff(self.pods, current)
        self.pods = current
        self.last_relist = self._clock.monotonic()
        self.relists += 1
        return events

    async def _measured_list(self, metrics: PLEGMetrics) -> dict[PodUID, RuntimePod]:
        started = self._clock.monotonic()
        if self._relist_started is not None:
            metrics.observe_pleg_relist_interval(started - self._relist_started)
        try:
            current = await self._list_pods()
        finally:
            metrics.observe_pleg_relist_duration(self._clock.monotonic() - started)
        self._relist_started = started
        metrics.observe_runtime_pods(current)
        return current

    async def run(self, emit: Callable[[PodLifecycleEvent], None]) -> None:
        """Relist every ``period`` seconds until cancelled, handing each event to ``emit``."""
        while True:
            try:
                for event in await self.relist():
                    emit(event)
            except CRIError as exc:
                log.warning("PLEG relist failed: %s", exc)
            await self._clock.sleep(self.period)
