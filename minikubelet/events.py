"""Events about pods, kept in memory as v1 Event objects (what ``kubectl get events`` shows).

The same object, reason and message seen again bumps ``count`` and
``lastTimestamp`` instead of adding a line, as the API server's event
aggregation does.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Final

from minikubelet.clock import Clock, RealClock, rfc3339

log = logging.getLogger(__name__)

NORMAL: Final = "Normal"
WARNING: Final = "Warning"
COMPONENT: Final = "kubelet"


class EventRecorder:
    def __init__(self, *, node_name: str, capacity: int = 5000, clock: Clock | None = None):
        self.node_name = node_name
        self.capacity = capacity
        self.clock: Clock = clock or RealClock()
        self._events: OrderedDict[tuple[str, str, str, str, str], dict[str, Any]] = OrderedDict()
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> Callable[[], None]:
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def pod_event(
        self,
        pod: Any,
        type_: str,
        reason: str,
        message: str,
        *,
        field_path: str = "",
    ) -> None:
        """Record an event about ``pod`` (a :class:`~minikubelet.api.pod.Pod`)."""
        involved = {
            "kind": "Pod",
            "apiVersion": "v1",
            "namespace": pod.namespace,
            "name": pod.name,
            "uid": str(pod.uid),
        }
        if field_path:
            involved["fieldPath"] = field_path
        self.event(involved, type_, reason, message)

    def container_event(
        self, pod: Any, container: str, type_: str, reason: str, message: str
    ) -> None:
        """Record an event about one of ``pod``'s containers (a probe's, say): its field path
        names the container, as ``spec.containers{NAME}`` or ``spec.initContainers{NAME}``."""
        init = any(c.name == container for c in pod.spec.init_containers)
        kind = "initContainers" if init else "containers"
        self.pod_event(pod, type_, reason, message, field_path=f"spec.{kind}{{{container}}}")

    def event(self, involved: dict[str, str], type_: str, reason: str, message: str) -> None:
        key = (
            involved.get("uid", "") or involved.get("name", ""),
            involved.get("fieldPath", ""),
            type_,
            reason,
            message,
        )
        now = rfc3339(self.clock.now())
        existing = self._events.pop(key, None)
        if existing is not None:
            existing["count"] += 1
            existing["lastTimestamp"] = now
            event = existing
        else:
            event = {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {
                    "name": f"{involved.get('name', 'node')}.{uuid.uuid4().hex[:16]}",
                    "namespace": involved.get("namespace", "default"),
                },
                "involvedObject": involved,
                "type": type_,
                "reason": reason,
                "message": message,
                "source": {"component": COMPONENT, "host": self.node_name},
                "reportingComponent": COMPONENT,
                "reportingInstance": self.node_name,
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            }
        self._events[key] = event
        while len(self._events) > self.capacity:
            self._events.popitem(last=False)
        where = f"{involved.get('namespace', '')}/{involved.get('name', '')}".strip("/")
        log.log(
            logging.WARNING if type_ == WARNING else logging.INFO,
            "event %s %s pod=%s: %s",
            type_,
            reason,
            where,
            message,
        )
        for callback in tuple(self._subscribers):
            callback(event)

    def events(self) -> list[dict[str, Any]]:
        """Oldest first by last occurrence."""
        return sorted(self._events.values(), key=lambda e: str(e["lastTimestamp"]))

    def for_pod(self, uid: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e["involvedObject"].get("uid") == uid]
