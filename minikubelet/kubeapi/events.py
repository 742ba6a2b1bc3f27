"""The node's events written to the API server as core/v1 Events (``kubectl get events``).

:class:`EventWriter` subscribes to the kubelet's
:class:`~minikubelet.events.EventRecorder` and writes what it records, as client-go's
event broadcaster does for the kubelet:

* an Event in the namespace of the object it is about (``default`` for the Node), named
  ``<object>.<hex of the time in ns>``, with the ``involvedObject`` reference (kind,
  namespace, name, uid, apiVersion, fieldPath; the Node's uid is its name, as the
  kubelet's node reference has it), ``source: {component: kubelet, host: NODE}`` and
  ``reportingComponent``/``reportingInstance``. Events about static pods carry the
  static pod's own UID, as the kubelet records them (the API server takes an event
  about any object);
* the :class:`EventCorrelator` of client-go: the same event again (same source,
  object, type, reason and message) PATCHes ``count``, ``lastTimestamp`` and
  ``message`` of the first one instead of creating another (a PATCH that finds it
  gone creates it again); more than 10 events within 10 minutes that differ only in
  their message become one ``(combined from similar events): ...``; each object may
  send 25 events at once, then one per 5 minutes (the spam filter), so a crash loop
  does not flood the API server;
* one background task, fed through a bounded queue that drops its oldest entry when
  full: recording never waits for the API server. A write the server refuses (403,
  422, ...) is logged once and dropped, as client-go drops it; an unreachable server
  is retried every 10 s, up to 12 tries per event, meanwhile newer events queue (and
  the oldest go).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from minikubelet.clock import Clock, RealClock, rfc3339
from minikubelet.events import COMPONENT, NORMAL, EventRecorder

log = logging.getLogger(__name__)

JSON = dict[str, Any]

#: client-go's defaults (``tools/record``).
MAX_LRU_ENTRIES: Final = 4096
SPAM_BURST: Final = 25
SPAM_QPS: Final = 1.0 / 300.0
AGGREGATE_MAX_EVENTS: Final = 10
AGGREGATE_INTERVAL: Final = 600.0
MAX_TRIES: Final = 12
RETRY_SLEEP: Final = 10.0
QUEUE_SIZE: Final = 1000
COMBINED_PREFIX: Final = "(combined from similar events): "


class EventSink(Protocol):
    """Where events go (the API server's core/v1 events)."""

    async def create(self, namespace: str, event: JSON) -> None: ...

    async def patch(self, namespace: str, name: str, patch: JSON) -> None: ...


class SinkRejected(Exception):
    """The API server answered and refused the write (its status code); not retried."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class APIEventSink:
    """Events through the API client (``KubeClient``): POST, and strategic-merge PATCH."""

    def __init__(self, kube: Any, *, timeout: float = 10.0) -> None:
        self._kube = kube
        self._timeout = timeout

    async def _call(self, call: Callable[[], Any]) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            async with asyncio.timeout(self._timeout):
                await call()
        except ApiException as exc:
            if exc.status:  # the server answered
                raise SinkRejected(int(exc.status), _api_reason(exc)) from None
            raise

    async def create(self, namespace: str, event: JSON) -> None:
        await self._call(lambda: self._kube.core.create_namespaced_event(namespace, event))

    async def patch(self, namespace: str, name: str, patch: JSON) -> None:
        await self._call(lambda: self._kube.core.patch_namespaced_event(name, namespace, patch))


def _api_reason(exc: Any) -> str:
    """The Status message the API server gave, else the HTTP reason."""
    import json

    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return str(exc.reason or "")


# -- correlation ---------------------------------------------------------------------------


def _reference_key(event: Mapping[str, Any]) -> tuple[str, ...]:
    source = event.get("source") or {}
    ref = event.get("involvedObject") or {}
    return (
        str(source.get("component", "")),
        str(source.get("host", "")),
        str(ref.get("kind", "")),
        str(ref.get("namespace", "")),
        str(ref.get("name", "")),
        str(ref.get("uid", "")),
        str(ref.get("apiVersion", "")),
    )


def event_key(event: Mapping[str, Any]) -> tuple[str, ...]:
    """client-go's ``getEventKey``: everything that makes two events the same one."""
    ref = event.get("involvedObject") or {}
    return (
        *_reference_key(event),
        str(ref.get("fieldPath", "")),
        str(event.get("type", "")),
        str(event.get("reason", "")),
        str(event.get("message", "")),
    )


class _LRU(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_fresh(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Aggregate:
    messages: set[str]
    at: float


@dataclass
class _Observed:
    name: str
    count: int
    first_timestamp: str


@dataclass(frozen=True)
class Write:
    """What to do with one event: create it, or patch an earlier one."""

    namespace: str
    name: str
    event: JSON
    patch: JSON | None = None


class EventCorrelator:
    """client-go's ``EventCorrelator``: spam filter, aggregator, then the repeat logger."""

    def __init__(
        self,
        *,
        clock: Clock,
        burst: int = SPAM_BURST,
        qps: float = SPAM_QPS,
        max_events: int = AGGREGATE_MAX_EVENTS,
        interval: float = AGGREGATE_INTERVAL,
        lru_size: int = MAX_LRU_ENTRIES,
    ) -> None:
        self._clock = clock
        self._burst = burst
        self._qps = qps
        self._max_events = max_events
        self._interval = interval
        self._buckets = _LRU(lru_size)
        self._aggregates = _LRU(lru_size)
        self._observed = _LRU(lru_size)
        self._last_ns = 0

    def _allowed(self, event: Mapping[str, Any]) -> bool:
        key = _reference_key(event)
        now = self._clock.monotonic()
        bucket: _Bucket | None = self._buckets.get_fresh(key)
        if bucket is None:
            bucket = _Bucket(float(self._burst), now)
        bucket.tokens = min(float(self._burst), bucket.tokens + (now - bucket.at) * self._qps)
        bucket.at = now
        self._buckets.put(key, bucket)
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _aggregate(self, event: JSON) -> tuple[JSON, tuple[str, ...]]:
        """``EventAggregate``: the event and its key, or, once too many similar events
        (same object, type and reason, other messages) came within the interval, the
        combined event keyed without its message, so that the next ones patch it."""
        similar = (*_reference_key(event), str(event.get("type", "")), str(event.get("reason", "")))
        now = self._clock.monotonic()
        record: _Aggregate | None = self._aggregates.get_fresh(similar)
        if record is None or now - record.at > self._interval:
            record = _Aggregate(set(), now)
        record.messages.add(str(event.get("message", "")))
        record.at = now
        self._aggregates.put(similar, record)
        if len(record.messages) < self._max_events:
            return event, event_key(event)
        record.messages.pop()  # keep the set bounded, as client-go does
        combined = dict(event)
        combined["message"] = COMBINED_PREFIX + str(event.get("message", ""))
        return combined, ("combined", *similar)

    def _name(self, ref_name: str) -> str:
        """client-go's ``<object>.<hex of the time in ns>``, never the same twice here."""
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        return f"{ref_name or 'event'}.{self._last_ns:x}"

    def correlate(self, recorded: Mapping[str, Any]) -> Write | None:
        """What to write for a recorded event (None: the spam filter holds it back)."""
        if not self._allowed(recorded):
            return None
        event, key = self._aggregate(copy.deepcopy(dict(recorded)))
        ref = event.get("involvedObject") or {}
        namespace = str(ref.get("namespace") or "default")
        last = str(event.get("lastTimestamp") or rfc3339(self._clock.now()))
        observed: _Observed | None = self._observed.get_fresh(key)
        if observed is not None:
            observed.count += 1
            body = {
                **event,
                "metadata": {"name": observed.name, "namespace": namespace},
                "count": observed.count,
                "firstTimestamp": observed.first_timestamp,
                "lastTimestamp": last,
            }
            patch = {"count": observed.count, "lastTimestamp": last, "message": event["message"]}
            return Write(namespace, observed.name, body, patch)
        name = self._name(str(ref.get("name", "")))
        first = str(event.get("firstTimestamp") or last)
        self._observed.put(key, _Observed(name, 1, first))
        body = {
            **event,
            "metadata": {"name": name, "namespace": namespace},
            "count": 1,
            "firstTimestamp": first,
            "lastTimestamp": last,
        }
        return Write(namespace, name, body)


def to_api_event(recorded: Mapping[str, Any], node_name: str) -> JSON:
    """The recorder's event as a core/v1 Event body (metadata is the correlator's)."""
    ref = {
        k: str(v)
        for k, v in (recorded.get("involvedObject") or {}).items()
        if k in ("kind", "namespace", "name", "uid", "apiVersion", "fieldPath", "resourceVersion")
        and v
    }
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "involvedObject": ref,
        "type": recorded.get("type", NORMAL),
        "reason": recorded.get("reason", ""),
        "message": recorded.get("message", ""),
        "source": {"component": COMPONENT, "host": node_name},
        "reportingComponent": COMPONENT,
        "reportingInstance": node_name,
        "firstTimestamp": recorded.get("firstTimestamp"),
        "lastTimestamp": recorded.get("lastTimestamp"),
    }


def node_reference(node_name: str) -> dict[str, str]:
    """The kubelet's reference to its Node (uid: the node's name)."""
    return {"kind": "Node", "name": node_name, "uid": node_name, "namespace": ""}


class EventWriter:
    """Writes the recorder's events to a sink from one task; never blocks the recorder."""

    def __init__(
        self,
        sink: EventSink,
        *,
        node_name: str,
        clock: Clock | None = None,
        queue_size: int = QUEUE_SIZE,
        max_tries: int = MAX_TRIES,
        retry_sleep: float = RETRY_SLEEP,
        correlator: EventCorrelator | None = None,
    ) -> None:
        self._sink = sink
        self.node_name = node_name
        self._clock: Clock = clock or RealClock()
        self._queue: deque[JSON] = deque(maxlen=queue_size)
        self._ready = asyncio.Event()
        self._max_tries = max_tries
        self._retry_sleep = retry_sleep
        self.correlator = correlator or EventCorrelator(clock=self._clock)
        self._recorder: EventRecorder | None = None
        #: Events dropped because the queue was full, refused by the server, or given up on.
        self.dropped = 0
        self.rejected = 0
        self.written = 0

    def attach(self, recorder: EventRecorder) -> Callable[[], None]:
        """Write every event ``recorder`` records from now on; returns the unsubscriber."""
        self._recorder = recorder
        return recorder.subscribe(self.offer)

    def offer(self, recorded: Mapping[str, Any]) -> None:
        """Queue one recorded event (drops the oldest when the queue is full)."""
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(to_api_event(recorded, self.node_name))
        self._ready.set()

    def pending(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        """Write queued events until cancelled (records ``Starting`` for the Node first)."""
        if self._recorder is not None:
            self._recorder.event(
                node_reference(self.node_name), NORMAL, "Starting", "Starting kubelet."
            )
        while True:
            while not self._queue:
                self._ready.clear()
                await self._ready.wait()
            write = self.correlator.correlate(self._queue.popleft())
            if write is not None:
                await self._write(write)

    async def _write(self, write: Write) -> None:
        for attempt in range(1, self._max_tries + 1):
            try:
                await self._send(write)
                self.written += 1
                return
            except SinkRejected as exc:
                self.rejected += 1
                log.error(
                    "event %s %s about %s/%s refused by the API server (not retried): %s",
                    write.event.get("type"),
                    write.event.get("reason"),
                    write.namespace,
                    (write.event.get("involvedObject") or {}).get("name", ""),
                    exc,
                )
                return
            except Exception as exc:  # no answer (connection, timeout): try again later
                if attempt == self._max_tries:
                    break
                log.warning(
                    "unable to write event %s (try %d of %d, again in %.0fs): %s",
                    write.name,
                    attempt,
                    self._max_tries,
                    self._retry_sleep,
                    exc,
                )
                await self._clock.sleep(self._retry_sleep)
        self.dropped += 1
        log.error("event %s dropped after %d tries", write.name, self._max_tries)

    async def _send(self, write: Write) -> None:
        if write.patch is not None:
            try:
                await self._sink.patch(write.namespace, write.name, write.patch)
                return
            except SinkRejected as exc:
                if exc.status != 404:
                    raise
            # the first one is gone (expired, or never made it): create it anew
        body = copy.deepcopy(write.event)
        body["metadata"].pop("resourceVersion", None)
        await self._sink.create(write.namespace, body)


__all__ = (
    "APIEventSink",
    "EventCorrelator",
    "EventSink",
    "EventWriter",
    "SinkRejected",
    "event_key",
    "node_reference",
    "to_api_event",
)
