"""The probe results cache and its stream of changes (the kubelet's ``prober/results``).

One :class:`ResultsManager` per probe type holds the latest *threshold-crossing* result of
each container instance, keyed by container ID. :meth:`ResultsManager.set` publishes a
:class:`ResultUpdate` only when the cached value changes (a new container or a new result),
never on :meth:`ResultsManager.remove`, as ``results_manager.go`` does.

Updates go through a bounded :class:`asyncio.Queue` (20 deep, the kubelet's channel size):
a producer waits while the queue is full, so a slow consumer slows the probe workers down
instead of losing changes. Nothing is queued until someone has asked for
:meth:`ResultsManager.updates`, so a manager whose stream nobody reads never blocks its
workers; the kubelet reads all three streams from its sync loop from the start.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from enum import StrEnum
from typing import Final, NamedTuple

from minikubelet.types import ContainerID, PodUID

#: The kubelet's ``make(chan Update, 20)``.
DEFAULT_UPDATES_SIZE: Final = 20


class ProbeType(StrEnum):
    LIVENESS = "liveness"
    READINESS = "readiness"
    STARTUP = "startup"

    @property
    def display(self) -> str:
        """How the kubelet spells the type in events: ``Liveness``, ``Readiness``, ``Startup``."""
        return self.value.capitalize()


class Result(StrEnum):
    """A cached probe result. ``UNKNOWN`` is the startup probe's value before it ran."""

    SUCCESS = "success"
    FAILURE = "failure"
    UNKNOWN = "unknown"


class ResultUpdate(NamedTuple):
    container_id: ContainerID
    result: Result
    pod_uid: PodUID


class ResultsManager:
    """Cache of container ID -> :class:`Result`, plus a stream of changes."""

    def __init__(self, *, updates_size: int = DEFAULT_UPDATES_SIZE) -> None:
        self._cache: dict[ContainerID, Result] = {}
        self._updates: asyncio.Queue[ResultUpdate] = asyncio.Queue(maxsize=updates_size)
        self._subscribed = False

    def get(self, container_id: ContainerID) -> Result | None:
        return self._cache.get(container_id)

    async def set(self, container_id: ContainerID, result: Result, pod_uid: PodUID) -> bool:
        """Cache ``result``; if it changed, publish an update (waiting while the queue is full).

        Returns whether it changed.
        """
        if self._cache.get(container_id) == result:
            return False
        self._cache[container_id] = result
        if self._subscribed:
            await self._updates.put(ResultUpdate(container_id, result, pod_uid))
        return True

    def remove(self, container_id: ContainerID) -> None:
        """Forget the container; no update is published."""
        self._cache.pop(container_id, None)

    def __len__(self) -> int:
        return len(self._cache)

    async def updates(self) -> AsyncGenerator[ResultUpdate, None]:
        """Every change from now on, in order. Meant for one consumer, as in the kubelet."""
        self._subscribed = True
        while True:
            yield await self._updates.get()
