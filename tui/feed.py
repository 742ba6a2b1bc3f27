"""The dashboard's only door to the kubelet: loops that read it and post typed messages.

Two layers:

* a :class:`KubeletAPI` says what can be read and done: a snapshot (pods and
  ``/status``), the events, the CRI trace and a container's log as streams, and
  deleting a pod. :class:`LiveKubelet` is the kubelet's local API through
  :class:`~minikubelet.server.client.LocalClient`; :class:`FakeKubelet` is an in-memory
  node for snapshot tests, benchmarks and demos.
* a :class:`Feed` runs the loops over one: ``watch_node`` polls at about 1 Hz,
  ``follow_trace`` and ``follow_logs`` follow streams, ``delete_pod`` carries out a
  command. Each takes a ``post`` callable (a screen's or the app's ``post_message``)
  and is run by a Textual worker owned by whoever shows the result, so a screen that
  closes stops its loops.

Every loop is a boundary: whatever goes wrong below it (the kubelet gone, a refused
command, a broken stream, a bug) becomes a message that says so, never a traceback,
and the loop tries again with back-off until it is cancelled. High-rate streams are
batched per frame (:class:`FrameBatch`): one message per ~1/30 s however many calls
or log lines arrived within it.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

from textual.message import Message

from minikubelet import errors
from minikubelet.cri.trace import CallRecord
from minikubelet.server.client import KubeletUnreachable, LocalClient
from tui.messages import (
    ActionFinished,
    ConnectionChanged,
    EventsUpdated,
    LogEnded,
    LogStarted,
    LogText,
    NodeUpdated,
    StreamInterrupted,
    TraceBatch,
    TraceStarted,
)
from tui.model import Connection, NodeSnapshot, pod_key

log = logging.getLogger(__name__)

Post = Callable[[Message], object]
T = TypeVar("T")

#: One frame: how long high-rate items gather before they are posted together.
FRAME: Final = 1 / 30
POLL_INTERVAL: Final = 1.0


class KubeletAPI(Protocol):
    """What the dashboard reads from a kubelet, and the one thing it asks of it."""

    @property
    def address(self) -> str:
        """Where the kubelet is, as a person would name it (a socket path)."""
        ...

    async def snapshot(self) -> NodeSnapshot: ...

    async def events(self) -> Sequence[Mapping[str, Any]]: ...

    def trace(self) -> AsyncIterator[CallRecord]:
        """The calls the kubelet kept, then new ones as they happen, until the stream ends."""
        ...

    def logs(self, namespace: str, pod: str, container: str) -> AsyncIterator[bytes]:
        """A container's log so far, then followed until the container stops."""
        ...

    async def delete_pod(self, namespace: str, pod: str) -> None: ...

    async def close(self) -> None: ...


# --- the kubelet's local API ---------------------------------------------------------------


class LiveKubelet:
    """A running kubelet, through its local API on ``socket_path``."""

    def __init__(
        self,
        socket_path: Path,
        *,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        timeout: float = 10.0,
    ) -> None:
        self.client = LocalClient(socket_path, timeout=timeout)
        self.clock = clock

    @property
    def address(self) -> str:
        return str(self.client.socket_path)

    async def snapshot(self) -> NodeSnapshot:
        pods = await self.client.pods()
        status = await self.client.status()
        return NodeSnapshot(pods, status, self.clock())

    async def events(self) -> Sequence[Mapping[str, Any]]:
        return await self.client.events()

    def trace(self) -> AsyncIterator[CallRecord]:
        return self.client.trace(follow=True)

    def logs(self, namespace: str, pod: str, container: str) -> AsyncIterator[bytes]:
        return self.client.logs(namespace, pod, container, follow=True)

    async def delete_pod(self, namespace: str, pod: str) -> None:
        await self.client.delete_pod(namespace, pod)

    async def close(self) -> None:
        await self.client.close()


# --- an in-memory node ---------------------------------------------------------------------


@dataclass
class FakeKubelet:
    """A node in memory: fixed pods, status, events, trace and logs, and a fixed ``now``.

    Streams give what they hold and then stay open, as a running container's log does;
    :meth:`emit` adds calls to open trace streams. ``reachable = False`` makes every
    call fail as an absent kubelet does. Deleting a pod whose source is a manifest
    (``kubernetes.io/config.source`` file or http) is refused as the kubelet refuses it.
    """

    pods: Sequence[Mapping[str, Any]]
    status: Mapping[str, Any]
    now: dt.datetime
    event_list: list[Mapping[str, Any]] = field(default_factory=list)
    records: list[CallRecord] = field(default_factory=list)
    log_text: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    reachable: bool = True
    address: str = "/fake/kubelet.sock"
    deleted: list[str] = field(default_factory=list)
    _trace_queues: list[asyncio.Queue[CallRecord]] = field(default_factory=list)

    def _check(self) -> None:
        if not self.reachable:
            raise KubeletUnreachable(f"no kubelet is listening on {self.address}")

    async def snapshot(self) -> NodeSnapshot:
        self._check()
        return NodeSnapshot(list(self.pods), self.status, self.now)

    async def events(self) -> Sequence[Mapping[str, Any]]:
        self._check()
        return list(self.event_list)

    def emit(self, records: Iterable[CallRecord]) -> None:
        """New calls, as if the kubelet made them now."""
        for record in records:
            self.records.append(record)
            for queue in self._trace_queues:
                queue.put_nowait(record)

    async def trace(self) -> AsyncIterator[CallRecord]:
        self._check()
        queue: asyncio.Queue[CallRecord] = asyncio.Queue()
        self._trace_queues.append(queue)
        try:
            for record in list(self.records):
                yield record
            while True:
                yield await queue.get()
        finally:
            self._trace_queues.remove(queue)

    async def logs(self, namespace: str, pod: str, container: str) -> AsyncIterator[bytes]:
        self._check()
        text = self.log_text.get((namespace, pod, container))
        if text is None:
            raise errors.NotFound(
                f'the log of container "{container}" in pod "{namespace}/{pod}" does not exist'
            )
        yield text
        await asyncio.Event().wait()  # a running container: the log stays open

    async def delete_pod(self, namespace: str, pod: str) -> None:
        self._check()
        key = f"{namespace}/{pod}"
        for found in self.pods:
            if pod_key(found) != key:
                continue
            annotations = (found.get("metadata") or {}).get("annotations") or {}
            source = annotations.get("kubernetes.io/config.source", "")
            if source in ("file", "http"):
                raise errors.FailedPrecondition(
                    f'pod "{pod}" is a static pod from its {source} source: '
                    "remove or edit its manifest to delete it"
                )
            self.pods = [p for p in self.pods if pod_key(p) != key]
            self.deleted.append(key)
            return
        raise errors.NotFound(f'pods "{pod}" not found')

    async def close(self) -> None:
        return None


# --- the loops -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry delays: ``initial``, times ``factor`` after each failure, at most ``cap``."""

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 5.0

    def delays(self) -> Iterable[float]:
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * self.factor, self.cap)


class FrameBatch(Generic[T]):
    """Items gathered for one frame, then handed to ``flush`` together."""

    def __init__(self, flush: Callable[[list[T]], None], frame: float = FRAME) -> None:
        self._flush = flush
        self._frame = frame
        self._items: list[T] = []
        self._timer: asyncio.TimerHandle | None = None

    def add(self, item: T) -> None:
        self._items.append(item)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._frame, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        if items:
            self._flush(items)

    def discard(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._items = []


def describe_error(exc: BaseException) -> str:
    """What went wrong, in one line for a person: the error's own words where it has them."""
    if isinstance(exc, errors.CRIError):
        return exc.message
    if isinstance(exc, KubeletUnreachable | errors.MinikubeletError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "the kubelet did not answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Feed:
    """The loops that read one kubelet and post what they see."""

    def __init__(
        self,
        api: KubeletAPI,
        *,
        poll_interval: float = POLL_INTERVAL,
        backoff: Backoff | None = None,
        frame: float = FRAME,
    ) -> None:
        self.api = api
        self.poll_interval = poll_interval
        self.backoff = backoff or Backoff()
        self.frame = frame

    @property
    def address(self) -> str:
        return self.api.address

    async def watch_node(self, post: Post) -> None:
        """Poll pods and status; say when the kubelet goes away and when it is back."""
        delays = iter(self.backoff.delays())
        reachable: bool | None = None
        while True:
            try:
                snapshot = await self.api.snapshot()
            except Exception as exc:  # the boundary: every failure becomes a message
                if not isinstance(exc, KubeletUnreachable | errors.MinikubeletError):
                    log.warning("reading the node failed", exc_info=True)
                reachable = False
                delay = next(delays)
                reason = "" if isinstance(exc, KubeletUnreachable) else describe_error(exc)
                post(ConnectionChanged(Connection(self.address, False, reason, delay)))
                await asyncio.sleep(delay)
                continue
            delays = iter(self.backoff.delays())
            if reachable is not True:
                reachable = True
                post(ConnectionChanged(Connection(self.address, True)))
            post(NodeUpdated(snapshot))
            await asyncio.sleep(self.poll_interval)

    async def watch_events(self, post: Post) -> None:
        """Poll the node's events (while a screen shows a pod's); quiet while it is away."""
        delays = iter(self.backoff.delays())
        while True:
            try:
                events = await self.api.events()
            except Exception as exc:
                log.debug("reading events failed: %s", describe_error(exc))
                await asyncio.sleep(next(delays))
                continue
            delays = iter(self.backoff.delays())
            post(EventsUpdated(events))
            await asyncio.sleep(self.poll_interval)

    async def follow_trace(self, post: Post) -> None:
        """Follow the CRI trace, reopening it whenever it breaks or ends."""
        delays = iter(self.backoff.delays())
        while True:
            started = False

            def send(records: list[CallRecord]) -> None:
                nonlocal started
                if not started:
                    started = True
                    post(TraceStarted())
                post(TraceBatch(records))

            batch: FrameBatch[CallRecord] = FrameBatch(send, self.frame)
            try:
                async with contextlib.aclosing(self.api.trace()) as records:  # type: ignore[type-var]
                    async for record in records:
                        batch.add(record)
                batch.flush()
                reason = "the kubelet ended the trace stream"
            except Exception as exc:
                batch.flush()
                reason = describe_error(exc)
            except BaseException:
                batch.discard()
                raise
            if started:
                delays = iter(self.backoff.delays())
            delay = next(delays)
            post(StreamInterrupted("trace", reason, delay))
            await asyncio.sleep(delay)

    async def follow_logs(self, namespace: str, pod: str, container: str, post: Post) -> None:
        """Follow a container's log until the container stops; reopen it if the stream
        breaks while the container still runs (or the kubelet is away)."""
        delays = iter(self.backoff.delays())
        while True:
            started = False

            def send(parts: list[str]) -> None:
                nonlocal started
                if not started:
                    started = True
                    post(LogStarted(container))
                post(LogText(container, "".join(parts)))

            batch: FrameBatch[str] = FrameBatch(send, self.frame)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            try:
                async with contextlib.aclosing(self.api.logs(namespace, pod, container)) as chunks:  # type: ignore[type-var]
                    async for chunk in chunks:
                        text = decoder.decode(chunk)
                        if text:
                            batch.add(text)
                tail = decoder.decode(b"", final=True)
                if tail:
                    batch.add(tail)
                batch.flush()
                state = await self._container_state(namespace, pod, container)
                if state != "running":
                    post(LogEnded(container, f"container {container} is {state}: the log ends"))
                    return
                reason = "the log stream ended while the container still runs"
            except Exception as exc:
                batch.flush()
                reason = describe_error(exc)
            except BaseException:
                batch.discard()
                raise
            if started:
                delays = iter(self.backoff.delays())
            delay = next(delays)
            post(StreamInterrupted("log", reason, delay))
            await asyncio.sleep(delay)

    async def _container_state(self, namespace: str, pod: str, container: str) -> str:
        """``running``, ``terminated``, ``waiting`` or ``gone``; raises when the kubelet is away."""
        found = (await self.api.snapshot()).pod(f"{namespace}/{pod}")
        if found is None:
            return "gone"
        status = found.get("status") or {}
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            for entry in status.get(key) or ():
                if entry.get("name") == container:
                    state = entry.get("state") or {}
                    return next(iter(state), "waiting")
        return "waiting"

    async def delete_pod(self, namespace: str, pod: str, post: Post) -> None:
        """Ask the kubelet to delete a pod; the answer (or refusal) comes back as a message."""
        title = f"delete {namespace}/{pod}"
        try:
            await self.api.delete_pod(namespace, pod)
        except Exception as exc:
            if not isinstance(exc, KubeletUnreachable | errors.MinikubeletError):
                log.warning("deleting %s/%s failed", namespace, pod, exc_info=True)
            post(ActionFinished(f"{title}: refused", describe_error(exc), ok=False))
            return
        post(ActionFinished(title, f"pod {namespace}/{pod} is being deleted", ok=True))
