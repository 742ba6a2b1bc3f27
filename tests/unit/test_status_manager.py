"""StatusManager: versions only on real change, stable times, bounded subscriptions."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from minikubelet.status.manager import StatusChange, StatusManager
from minikubelet.types import PodUID

UID = PodUID("uid-1")


def status(
    *,
    phase: str = "Running",
    ready: str = "True",
    at: str = "2024-05-01T12:00:00Z",
    start: str = "2024-05-01T12:00:00Z",
) -> dict[str, Any]:
    return {
        "phase": phase,
        "conditions": [
            {
                "type": "Initialized",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": at,
            },
            {"type": "Ready", "status": ready, "lastProbeTime": None, "lastTransitionTime": at},
        ],
        "startTime": start,
    }


def test_first_set_gets_version_one_and_get_returns_a_copy() -> None:
    manager = StatusManager()
    assert manager.get(UID) is None
    assert manager.set_pod_status(UID, status()) == 1
    got = manager.get(UID)
    assert got == status()
    assert got is not None
    got["phase"] = "Failed"
    assert manager.get(UID) == status()


@pytest.mark.parametrize(
    ("second", "bumped"),
    [
        pytest.param(status(), False, id="identical"),
        pytest.param(status(at="2024-05-01T12:05:00Z"), False, id="only-transition-times-differ"),
        pytest.param(status(start="2024-05-01T12:09:00Z"), False, id="only-start-time-differs"),
        pytest.param(status(ready="False", at="2024-05-01T12:05:00Z"), True, id="condition-flips"),
        pytest.param(status(phase="Succeeded"), True, id="phase-changes"),
    ],
)
def test_version_bumps_only_on_real_change(second: dict[str, Any], bumped: bool) -> None:
    manager = StatusManager()
    first = manager.set_pod_status(UID, status())
    version = manager.set_pod_status(UID, second)
    assert (version != first) is bumped
    assert manager.get_version(UID) == version


def test_start_time_and_unchanged_transition_times_are_kept() -> None:
    manager = StatusManager()
    manager.set_pod_status(UID, status())
    manager.set_pod_status(
        UID, status(ready="False", at="2024-05-01T12:05:00Z", start="2024-05-01T12:05:00Z")
    )
    stored = manager.get(UID)
    assert stored is not None
    assert stored["startTime"] == "2024-05-01T12:00:00Z"
    times = {c["type"]: c["lastTransitionTime"] for c in stored["conditions"]}
    assert times == {"Initialized": "2024-05-01T12:00:00Z", "Ready": "2024-05-01T12:05:00Z"}


def test_caller_mutation_does_not_reach_the_store() -> None:
    manager = StatusManager()
    body = status()
    manager.set_pod_status(UID, body)
    body["phase"] = "Failed"
    body["conditions"][0]["status"] = "False"
    assert manager.get(UID) == status()


def test_versions_are_one_sequence_across_pods_and_all_lists_them() -> None:
    manager = StatusManager()
    assert manager.set_pod_status("a", status()) == 1
    assert manager.set_pod_status("b", status()) == 2
    assert manager.set_pod_status("a", status(phase="Succeeded")) == 3
    assert manager.version == 3
    everything = manager.all()
    assert {uid: version for uid, (version, _) in everything.items()} == {"a": 3, "b": 2}
    everything[PodUID("a")][1]["phase"] = "Pending"
    assert manager.all()[PodUID("a")][1]["phase"] == "Succeeded"


def test_remove_is_idempotent_and_readding_gets_a_fresh_version() -> None:
    manager = StatusManager()
    manager.set_pod_status(UID, status())
    manager.remove(UID)
    manager.remove(UID)
    assert manager.get(UID) is None
    assert manager.get_version(UID) is None
    assert manager.all() == {}
    assert manager.set_pod_status(UID, status()) == 3


async def test_subscribers_see_changes_in_order() -> None:
    manager = StatusManager()
    subscription = manager.subscribe()
    manager.set_pod_status("a", status())
    manager.set_pod_status("a", status())  # no change: nothing published
    manager.set_pod_status("b", status())
    manager.remove("a")
    seen = [await anext(subscription) for _ in range(3)]
    assert seen == [StatusChange(PodUID("a"), 1), StatusChange(PodUID("b"), 2), ("a", 3)]
    assert subscription.pending() == 0


async def test_subscription_waits_for_the_next_change() -> None:
    manager = StatusManager()
    subscription = manager.subscribe()
    waiter = asyncio.ensure_future(anext(subscription))
    await asyncio.sleep(0)
    assert not waiter.done()
    manager.set_pod_status(UID, status())
    assert await asyncio.wait_for(waiter, timeout=1) == (UID, 1)


async def test_full_subscription_drops_the_oldest() -> None:
    manager = StatusManager()
    subscription = manager.subscribe(maxsize=2)
    for phase in ("Pending", "Running", "Succeeded"):
        manager.set_pod_status(UID, status(phase=phase))
    assert subscription.dropped == 1
    assert [await anext(subscription), await anext(subscription)] == [(UID, 2), (UID, 3)]


async def test_closed_subscription_ends_after_draining_and_stops_receiving() -> None:
    manager = StatusManager()
    async with manager.subscribe() as subscription:
        manager.set_pod_status(UID, status())
    assert subscription.closed
    manager.set_pod_status(UID, status(phase="Succeeded"))
    assert [change async for change in subscription] == [(UID, 1)]


async def test_close_wakes_a_waiting_reader() -> None:
    manager = StatusManager()
    subscription = manager.subscribe()

    async def drain() -> list[StatusChange]:
        return [change async for change in subscription]

    reader = asyncio.ensure_future(drain())
    await asyncio.sleep(0)
    subscription.close()
    assert await asyncio.wait_for(reader, timeout=1) == []


def test_subscribe_rejects_a_useless_size() -> None:
    with pytest.raises(ValueError, match="maxsize"):
        StatusManager().subscribe(maxsize=0)


def test_each_subscription_gets_every_change() -> None:
    manager = StatusManager()
    one, two = manager.subscribe(), manager.subscribe()
    manager.set_pod_status(UID, copy.deepcopy(status()))
    assert (one.pending(), two.pending()) == (1, 1)
