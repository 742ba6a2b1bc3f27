"""The PLEG's relist diff, as the kubelet's generic PLEG computes it."""

from __future__ import annotations

import pytest

from minikubelet.container.status import ContainerState as S
from minikubelet.kuberuntime.manager import RuntimeContainer, RuntimePod
from minikubelet.pleg import EventType as E
from minikubelet.pleg import diff
from minikubelet.types import ContainerID, PodUID

UID = PodUID("u1")


def pod(*containers: tuple[str, S]) -> dict[PodUID, RuntimePod]:
    p = RuntimePod(UID, "p", "ns")
    p.containers = [RuntimeContainer(ContainerID(c), "n", state, 0) for c, state in containers]
    return {UID: p}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        pytest.param({}, pod(("c", S.RUNNING)), [E.CONTAINER_STARTED], id="new-running"),
        pytest.param({}, pod(("c", S.CREATED)), [E.CONTAINER_CHANGED], id="new-created"),
        pytest.param(pod(("c", S.RUNNING)), pod(("c", S.RUNNING)), [], id="unchanged"),
        pytest.param(pod(("c", S.RUNNING)), pod(("c", S.EXITED)), [E.CONTAINER_DIED], id="died"),
        pytest.param(pod(("c", S.EXITED)), {}, [E.CONTAINER_REMOVED], id="removed-after-exit"),
        pytest.param(
            pod(("c", S.RUNNING)),
            {},
            [E.CONTAINER_DIED, E.CONTAINER_REMOVED],
            id="vanished-while-running",
        ),
        pytest.param(
            pod(("c", S.RUNNING)), pod(("c", S.UNKNOWN)), [E.CONTAINER_CHANGED], id="unknown"
        ),
        pytest.param({}, pod(("c", S.EXITED)), [E.CONTAINER_DIED], id="new-already-exited"),
    ],
)
def test_diff(
    before: dict[PodUID, RuntimePod], after: dict[PodUID, RuntimePod], expected: list[E]
) -> None:
    events = diff(before, after)
    assert [e.type for e in events] == expected
    assert all(e.uid == UID and e.container_id == "c" for e in events)


def test_sandboxes_count_as_containers() -> None:
    after = pod()
    after[UID].sandboxes = [RuntimeContainer(ContainerID("s"), "POD", S.RUNNING, 0)]
    assert [(e.type, e.container_id) for e in diff({}, after)] == [(E.CONTAINER_STARTED, "s")]
