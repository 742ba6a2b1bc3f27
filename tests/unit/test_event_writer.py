"""Events to the API: client-go's correlation (repeats, aggregation, spam filter) and the
writer's queue, retries and refusals, against a recording sink in virtual time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.clock import ManualClock
from minikubelet.events import NORMAL, WARNING, EventRecorder
from minikubelet.kubeapi.events import (
    EventCorrelator,
    EventWriter,
    SinkRejected,
    node_reference,
    to_api_event,
)

NODE = "node1"


def pod(name: str = "web", uid: str = "uid-web") -> Pod:
    return Pod.from_dict(
        {
            "metadata": {"name": name, "namespace": "team", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        },
        validate=False,
    )


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, dict[str, Any]]] = []
        self.events: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail: list[BaseException] = []  # raised by the next calls, in order

    async def create(self, namespace: str, event: dict[str, Any]) -> None:
        self.calls.append(("create", namespace, event["metadata"]["name"], event))
        if self.fail:
            raise self.fail.pop(0)
        self.events[(namespace, event["metadata"]["name"])] = event

    async def patch(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        self.calls.append(("patch", namespace, name, patch))
        if self.fail:
            raise self.fail.pop(0)
        if (namespace, name) not in self.events:
            raise SinkRejected(404, f'events "{name}" not found')
        self.events[(namespace, name)].update(patch)


def recorded(reason: str = "BackOff", message: str = "Back-off restarting", **ref: str) -> Any:
    recorder = EventRecorder(node_name=NODE, clock=ManualClock())
    seen: list[dict[str, Any]] = []
    recorder.subscribe(seen.append)
    recorder.pod_event(pod(**ref), WARNING, reason, message, field_path="spec.containers{c}")
    return seen[0]


# -- the Event body --------------------------------------------------------------------------


def test_a_pod_event_becomes_a_core_v1_event_about_the_pod() -> None:
    write = EventCorrelator(clock=ManualClock()).correlate(to_api_event(recorded(), NODE))
    assert write is not None and write.patch is None
    event = write.event
    assert write.namespace == "team"
    assert event["metadata"]["namespace"] == "team"
    name, _, suffix = event["metadata"]["name"].rpartition(".")
    assert name == "web" and int(suffix, 16) > 0
    assert event["involvedObject"] == {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": "team",
        "name": "web",
        "uid": "uid-web",
        "fieldPath": "spec.containers{c}",
    }
    assert event["source"] == {"component": "kubelet", "host": NODE}
    assert event["reportingComponent"] == "kubelet"
    assert event["reportingInstance"] == NODE
    assert event["count"] == 1
    assert event["type"] == "Warning" and event["reason"] == "BackOff"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2023-11-14T22:13:20Z"


def test_a_node_event_goes_to_the_default_namespace() -> None:
    recorder = EventRecorder(node_name=NODE, clock=ManualClock())
    seen: list[dict[str, Any]] = []
    recorder.subscribe(seen.append)
    recorder.event(node_reference(NODE), NORMAL, "Starting", "Starting kubelet.")
    write = EventCorrelator(clock=ManualClock()).correlate(to_api_event(seen[0], NODE))
    assert write is not None
    assert write.namespace == "default"
    assert write.event["involvedObject"] == {"kind": "Node", "name": NODE, "uid": NODE}


# -- correlation -----------------------------------------------------------------------------


def test_a_repeat_patches_count_and_last_timestamp_of_the_first() -> None:
    correlator = EventCorrelator(clock=ManualClock())
    first = correlator.correlate(to_api_event(recorded(), NODE))
    again = to_api_event(recorded(), NODE)
    again["lastTimestamp"] = "2023-11-14T22:15:00Z"
    second = correlator.correlate(again)
    assert first is not None and second is not None
    assert second.name == first.name
    assert second.patch == {
        "count": 2,
        "lastTimestamp": "2023-11-14T22:15:00Z",
        "message": "Back-off restarting",
    }
    assert second.event["firstTimestamp"] == "2023-11-14T22:13:20Z"
    third = correlator.correlate(again)
    assert third is not None and third.patch is not None and third.patch["count"] == 3


@pytest.mark.parametrize(
    "change",
    [
        {"message": "other"},
        {"reason": "Other"},
        {"uid": "uid-2"},
        {"fieldPath": "spec.containers{d}"},
    ],
)
def test_a_different_event_is_created_anew(change: dict[str, str]) -> None:
    correlator = EventCorrelator(clock=ManualClock())
    first = correlator.correlate(to_api_event(recorded(), NODE))
    other = to_api_event(recorded(), NODE)
    for key, value in change.items():
        if key in ("uid", "fieldPath"):
            other["involvedObject"][key] = value
        else:
            other[key] = value
    second = correlator.correlate(other)
    assert first is not None and second is not None
    assert second.patch is None and second.name != first.name


def test_many_similar_messages_are_combined_into_one_patched_event() -> None:
    correlator = EventCorrelator(clock=ManualClock())
    writes = [
        correlator.correlate(to_api_event(recorded(message=f"attempt {i}"), NODE))
        for i in range(12)
    ]
    assert all(w is not None for w in writes)
    creates = [w for w in writes if w is not None and w.patch is None]
    assert len(creates) == 10  # 9 distinct messages, then the combined event
    combined = creates[-1]
    assert combined.event["message"] == "(combined from similar events): attempt 9"
    later = [w for w in writes[10:] if w is not None]
    assert [w.name for w in later] == [combined.name, combined.name]
    assert later[-1].patch == {
        "count": 3,
        "lastTimestamp": "2023-11-14T22:13:20Z",
        "message": "(combined from similar events): attempt 11",
    }


async def test_the_spam_filter_lets_25_through_then_one_per_five_minutes() -> None:
    clock = ManualClock()
    correlator = EventCorrelator(clock=clock)
    passed = [
        correlator.correlate(to_api_event(recorded(reason=f"R{i % 3}"), NODE)) for i in range(30)
    ]
    assert sum(w is not None for w in passed) == 25
    assert correlator.correlate(to_api_event(recorded(reason="R0"), NODE)) is None
    await clock.advance(300)
    assert correlator.correlate(to_api_event(recorded(reason="R0"), NODE)) is not None
    assert correlator.correlate(to_api_event(recorded(reason="R0"), NODE)) is None
    # another object has its own bucket
    other = to_api_event(recorded(name="db", uid="uid-db"), NODE)
    assert correlator.correlate(other) is not None


# -- the writer ------------------------------------------------------------------------------


async def run_until_idle(writer: EventWriter, clock: ManualClock, seconds: float = 0) -> None:
    task = asyncio.create_task(writer.run())
    try:
        await clock.advance(seconds)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_writer_creates_then_patches_and_says_the_kubelet_started() -> None:
    clock = ManualClock()
    sink = Sink()
    recorder = EventRecorder(node_name=NODE, clock=clock)
    writer = EventWriter(sink, node_name=NODE, clock=clock)
    writer.attach(recorder)
    recorder.pod_event(pod(), WARNING, "BackOff", "Back-off restarting")
    recorder.pod_event(pod(), WARNING, "BackOff", "Back-off restarting")
    await run_until_idle(writer, clock)
    assert [(c[0], c[1]) for c in sink.calls] == [
        ("create", "team"),
        ("patch", "team"),
        ("create", "default"),
    ]
    stored = next(e for e in sink.events.values() if e["reason"] == "BackOff")
    assert stored["count"] == 2
    starting = next(e for e in sink.events.values() if e["reason"] == "Starting")
    assert starting["message"] == "Starting kubelet."


async def test_a_patch_of_an_event_gone_from_the_api_creates_it_again() -> None:
    clock = ManualClock()
    sink = Sink()
    writer = EventWriter(sink, node_name=NODE, clock=clock)
    writer.offer(recorded())
    await run_until_idle(writer, clock)
    sink.events.clear()  # expired in the API server
    writer.offer(recorded())
    await run_until_idle(writer, clock)
    assert [c[0] for c in sink.calls] == ["create", "patch", "create"]
    (event,) = sink.events.values()
    assert event["count"] == 2


async def test_a_refused_write_is_dropped_and_the_next_goes_on() -> None:
    clock = ManualClock()
    sink = Sink()
    sink.fail = [SinkRejected(403, "forbidden")]
    writer = EventWriter(sink, node_name=NODE, clock=clock)
    writer.offer(recorded(reason="A"))
    writer.offer(recorded(reason="B"))
    await run_until_idle(writer, clock)
    assert [e["reason"] for e in sink.events.values()] == ["B"]
    assert writer.rejected == 1


async def test_an_unreachable_api_is_retried_every_ten_seconds() -> None:
    clock = ManualClock()
    sink = Sink()
    sink.fail = [ConnectionRefusedError("refused"), TimeoutError()]
    writer = EventWriter(sink, node_name=NODE, clock=clock)
    writer.offer(recorded())
    task = asyncio.create_task(writer.run())
    await clock.advance(15)
    assert not sink.events and len(sink.calls) == 2
    await clock.advance(10)
    assert len(sink.events) == 1 and writer.written == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_full_queue_drops_the_oldest_and_recording_never_waits() -> None:
    clock = ManualClock()
    sink = Sink()
    writer = EventWriter(sink, node_name=NODE, clock=clock, queue_size=3)
    for i in range(5):
        writer.offer(recorded(reason=f"R{i}"))
    assert writer.pending() == 3 and writer.dropped == 2
    await run_until_idle(writer, clock)
    assert [e["reason"] for e in sink.events.values()] == ["R2", "R3", "R4"]
