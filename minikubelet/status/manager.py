"""The status manager: the kubelet's versioned source of truth for pod status.

The sync loop hands every status it generates to :meth:`StatusManager.set_pod_status`.
The manager keeps the latest one per pod UID, and only a real change gets a new
version, so sinks (the API server client, the observer feed, the kubelet's own API)
can skip what they already have. As in the kubelet's ``updateStatusInternal``, the
stored status keeps the ``startTime`` it was first given and every condition keeps
its ``lastTransitionTime`` while its status does not change, whatever the caller
passed, so regenerating a status with a new clock does not look like a change.

Versions come from one counter for the whole manager rather than one per pod (as
upstream has): a version then names one change across all pods, a pod that is
removed and added again never reuses a version, and a sink can remember "the last
version I wrote" per pod without the manager keeping anything for removed pods.

Changes are published as :class:`StatusChange` (uid, version) to every subscription
(:meth:`StatusManager.subscribe`). A subscription is a bounded buffer that drops its
oldest entry when full (and counts the drops): a change only says "look at this
pod", so a sink that fell behind loses nothing by reading :meth:`StatusManager.get`
afterwards. A removal is published as a change whose status :meth:`get` reports
as None.

No I/O, no clock, no tasks: the manager is driven from the event loop that owns it.
"""

from __future__ import annotations

import asyncio
import copy
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

from minikubelet.types import PodUID

JSON = dict[str, Any]

#: How many changes a subscription buffers before it drops the oldest.
DEFAULT_SUBSCRIPTION_SIZE = 1024


class StatusChange(NamedTuple):
    uid: PodUID
    version: int


class Subscription:
    """An async iterator of :class:`StatusChange`; bounded, drops the oldest when full."""

    def __init__(self, manager: StatusManager, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._manager = manager
        self._buffer: deque[StatusChange] = deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        #: Changes dropped because the buffer was full.
        self.dropped = 0

    def _push(self, change: StatusChange) -> None:
        if self._closed:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(change)
        self._ready.set()

    def pending(self) -> int:
        """How many changes are buffered."""
        return len(self._buffer)

    def close(self) -> None:
        """Stop receiving; the iterator ends once the buffered changes are read."""
        if not self._closed:
            self._closed = True
            self._manager._unsubscribe(self)
            self._ready.set()

    @property
    def closed(self) -> bool:
        return self._closed

    def __aiter__(self) -> AsyncIterator[StatusChange]:
        return self

    async def __anext__(self) -> StatusChange:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


def _conditions(status: Mapping[str, Any]) -> list[Any]:
    value = status.get("conditions")
    return value if isinstance(value, list) else []


def _stabilize(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> JSON:
    """``new`` with the start time and unchanged conditions' transition times of ``old``."""
    out = copy.deepcopy(dict(new))
    if old is None:
        return out
    if old.get("startTime"):
        out["startTime"] = old["startTime"]
    previous = {
        c.get("type"): c for c in _conditions(old) if isinstance(c, Mapping) and c.get("type")
    }
    for condition in _conditions(out):
        if not isinstance(condition, dict):
            continue
        before = previous.get(condition.get("type"))
        if before is None or before.get("status") != condition.get("status"):
            continue
        if "lastTransitionTime" in before:
            condition["lastTransitionTime"] = before["lastTransitionTime"]
    return out


class StatusManager:
    """The latest status of every pod, each with the version of its last real change."""

    def __init__(self) -> None:
        self._statuses: dict[PodUID, tuple[int, JSON]] = {}
        self._version = 0
        self._subscriptions: list[Subscription] = []

    @property
    def version(self) -> int:
        """The version of the latest change to any pod (0 before the first)."""
        return self._version

    def set_pod_status(self, uid: PodUID | str, status: Mapping[str, Any]) -> int:
        """Store ``status`` for the pod; returns its version, new only if something changed."""
        key = PodUID(str(uid))
        current = self._statuses.get(key)
        stable = _stabilize(status, current[1] if current else None)
        if current is not None and current[1] == stable:
            return current[0]
        self._version += 1
        self._statuses[key] = (self._version, stable)
        self._publish(StatusChange(key, self._version))
        return self._version

    def get(self, uid: PodUID | str) -> JSON | None:
        """A copy of the pod's latest status, or None when the manager has none."""
        entry = self._statuses.get(PodUID(str(uid)))
        return None if entry is None else copy.deepcopy(entry[1])

    def get_version(self, uid: PodUID | str) -> int | None:
        entry = self._statuses.get(PodUID(str(uid)))
        return None if entry is None else entry[0]

    def remove(self, uid: PodUID | str) -> None:
        """Forget the pod (idempotent); subscribers see one last change for it."""
        key = PodUID(str(uid))
        if self._statuses.pop(key, None) is None:
            return
        self._version += 1
        self._publish(StatusChange(key, self._version))

    def all(self) -> dict[PodUID, tuple[int, JSON]]:
        """Every pod's (version, status), copied."""
        return {
            uid: (version, copy.deepcopy(status))
            for uid, (version, status) in self._statuses.items()
        }

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        """A new subscription to the changes from now on (close it when done)."""
        subscription = Subscription(self, maxsize)
        self._subscriptions.append(subscription)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    def _publish(self, change: StatusChange) -> None:
        for subscription in tuple(self._subscriptions):
            subscription._push(change)
