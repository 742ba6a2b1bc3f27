"""The typed messages the feed posts up to the screens that show them.

A snapshot or an event list supersedes the one before it (``can_replace``): when
the interface falls behind, it skips to the newest instead of replaying history.
Trace records and log text cannot be skipped, so the feed batches them per frame.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from textual.message import Message

from minikubelet.cri.trace import CallRecord
from tui.model import Connection, NodeSnapshot


class NodeUpdated(Message):
    """A fresh look at the node: pods and status."""

    def __init__(self, snapshot: NodeSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, NodeUpdated)


class ConnectionChanged(Message):
    """The kubelet started or stopped answering (or still does not, with a new retry time)."""

    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self.connection = connection

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ConnectionChanged)


class EventsUpdated(Message):
    """The node's events, for the screens that show a pod's."""

    def __init__(self, events: Sequence[Mapping[str, Any]]) -> None:
        super().__init__()
        self.events = events

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EventsUpdated)


class TraceStarted(Message):
    """A (new) trace stream is open: what follows is the kubelet's retained calls, then new ones."""


class TraceBatch(Message):
    """The CRI calls that arrived within one frame, oldest first."""

    def __init__(self, records: Sequence[CallRecord]) -> None:
        super().__init__()
        self.records = records


class StreamInterrupted(Message):
    """A followed stream (trace or log) broke; the feed tries again in ``retry_in`` seconds."""

    def __init__(self, stream: str, reason: str, retry_in: float) -> None:
        super().__init__()
        self.stream = stream
        self.reason = reason
        self.retry_in = retry_in


class LogStarted(Message):
    """The log of ``container`` is (re)opened: the view starts afresh."""

    def __init__(self, container: str) -> None:
        super().__init__()
        self.container = container


class LogText(Message):
    """Log text of ``container`` that arrived within one frame."""

    def __init__(self, container: str, text: str) -> None:
        super().__init__()
        self.container = container
        self.text = text


class LogEnded(Message):
    """The followed log ended: the container is no longer running."""

    def __init__(self, container: str, reason: str) -> None:
        super().__init__()
        self.container = container
        self.reason = reason


class ActionFinished(Message):
    """A command (delete) came back: what to tell the person, and how loudly."""

    def __init__(self, title: str, text: str, *, ok: bool) -> None:
        super().__init__()
        self.title = title
        self.text = text
        self.ok = ok


class DeleteRequested(Message):
    """A person asked to delete a pod; the app confirms, then asks the kubelet."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
