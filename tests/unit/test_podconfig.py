"""PodConfig's merge: source snapshots in, the kubelet's incremental operations out."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from minikubelet.config.manifest import apply_static_defaults, decode_manifest
from minikubelet.config.podconfig import (
    PodConfig,
    format_rfc3339nano,
    merge,
    merge_update,
    pod_uid,
)
from minikubelet.config.types import (
    API_SOURCE,
    CONFIG_FIRST_SEEN_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
    FILE_SOURCE,
    HTTP_SOURCE,
    Pod,
    PodOperation,
    SourceUpdate,
)
from minikubelet.types import PodUID

T0 = "2024-05-01T10:00:00Z"
T1 = "2024-05-01T10:00:01Z"


def pod(
    uid: str,
    name: str | None = None,
    *,
    image: str = "nginx",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    deletion: str | None = None,
) -> Pod:
    metadata: dict[str, Any] = {"uid": uid, "name": name or uid, "namespace": "default"}
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    if deletion is not None:
        metadata["deletionTimestamp"] = deletion
    result: Pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    if status is not None:
        result["status"] = status
    return result


def stored(p: Pod, source: str, seen: str = T0) -> Pod:
    """``p`` as the merge keeps it: stamped with its source and first-seen time."""
    out = copy.deepcopy(p)
    annotations = out["metadata"].setdefault("annotations", {})
    annotations[CONFIG_SOURCE_ANNOTATION] = source
    annotations[CONFIG_FIRST_SEEN_ANNOTATION] = seen
    return out


def state_of(*pods: Pod) -> dict[PodUID, Pod]:
    return {pod_uid(p): p for p in pods}


def ops(updates: list[SourceUpdate]) -> list[tuple[PodOperation, str, list[str]]]:
    return [(u.op, u.source, [str(pod_uid(p)) for p in u.pods]) for u in updates]


@dataclass
class Case:
    name: str
    current: dict[PodUID, Pod]
    snapshot: list[Pod]
    source: str
    expected: list[tuple[PodOperation, str, list[str]]]
    state_uids: set[str] = field(default_factory=set)
    first_set: bool = False


A = pod("uid-a", "a")
B = pod("uid-b", "b")

CASES = [
    Case(
        "add",
        {},
        [A],
        FILE_SOURCE,
        [(PodOperation.ADD, FILE_SOURCE, ["uid-a"])],
        {"uid-a"},
    ),
    Case("unchanged", state_of(stored(A, FILE_SOURCE)), [A], FILE_SOURCE, [], {"uid-a"}),
    Case(
        "first set of an empty source says it is ready",
        {},
        [],
        FILE_SOURCE,
        [(PodOperation.ADD, FILE_SOURCE, [])],
        set(),
        first_set=True,
    ),
    Case(
        "first set with nothing new says it is ready",
        state_of(stored(A, FILE_SOURCE)),
        [A],
        FILE_SOURCE,
        [(PodOperation.ADD, FILE_SOURCE, [])],
        {"uid-a"},
        first_set=True,
    ),
    Case(
        "update labels",
        state_of(stored(A, API_SOURCE)),
        [pod("uid-a", "a", labels={"tier": "front"})],
        API_SOURCE,
        [(PodOperation.UPDATE, API_SOURCE, ["uid-a"])],
        {"uid-a"},
    ),
    Case(
        "update annotation",
        state_of(stored(A, API_SOURCE)),
        [pod("uid-a", "a", annotations={"team": "x"})],
        API_SOURCE,
        [(PodOperation.UPDATE, API_SOURCE, ["uid-a"])],
        {"uid-a"},
    ),
    Case(
        "a kubelet-owned annotation alone is no update",
        state_of(stored(A, API_SOURCE)),
        [pod("uid-a", "a", annotations={"kubernetes.io/config.mirror": "m"})],
        API_SOURCE,
        [],
        {"uid-a"},
    ),
    Case(
        "spec change under the same uid",
        state_of(stored(A, API_SOURCE)),
        [pod("uid-a", "a", image="nginx:2")],
        API_SOURCE,
        [(PodOperation.UPDATE, API_SOURCE, ["uid-a"])],
        {"uid-a"},
    ),
    Case(
        "deletion timestamp is a graceful delete",
        state_of(stored(A, API_SOURCE)),
        [pod("uid-a", "a", deletion="2024-05-01T10:00:00Z")],
        API_SOURCE,
        [(PodOperation.DELETE, API_SOURCE, ["uid-a"])],
        {"uid-a"},
    ),
    Case(
        "status only is a reconcile",
        state_of(stored(A, API_SOURCE)),
        [pod("uid-a", "a", status={"phase": "Running"})],
        API_SOURCE,
        [(PodOperation.RECONCILE, API_SOURCE, ["uid-a"])],
        {"uid-a"},
    ),
    Case(
        "edited static pod file: new uid, remove then add",
        state_of(stored(A, FILE_SOURCE)),
        [pod("uid-a2", "a", image="nginx:2")],
        FILE_SOURCE,
        [
            (PodOperation.REMOVE, FILE_SOURCE, ["uid-a"]),
            (PodOperation.ADD, FILE_SOURCE, ["uid-a2"]),
        ],
        {"uid-a2"},
    ),
    Case(
        "removed",
        state_of(stored(A, FILE_SOURCE), stored(B, FILE_SOURCE)),
        [B],
        FILE_SOURCE,
        [(PodOperation.REMOVE, FILE_SOURCE, ["uid-a"])],
        {"uid-b"},
    ),
    Case(
        "two sources: a snapshot only touches its own source",
        state_of(stored(A, FILE_SOURCE)),
        [B],
        HTTP_SOURCE,
        [(PodOperation.ADD, HTTP_SOURCE, ["uid-b"])],
        {"uid-a", "uid-b"},
    ),
    Case(
        "two sources: an empty snapshot removes only its own pods",
        state_of(stored(A, FILE_SOURCE), stored(B, HTTP_SOURCE)),
        [],
        HTTP_SOURCE,
        [(PodOperation.REMOVE, HTTP_SOURCE, ["uid-b"])],
        {"uid-a"},
    ),
    Case(
        "duplicate name within a source: the first wins",
        {},
        [A, pod("uid-a-copy", "a")],
        FILE_SOURCE,
        [(PodOperation.ADD, FILE_SOURCE, ["uid-a"])],
        {"uid-a"},
    ),
    Case(
        "duplicate name across sources: the pod already held wins",
        state_of(stored(A, FILE_SOURCE)),
        [pod("uid-other", "a"), B],
        HTTP_SOURCE,
        [(PodOperation.ADD, HTTP_SOURCE, ["uid-b"])],
        {"uid-a", "uid-b"},
    ),
    Case(
        "remove, add, update and reconcile in the kubelet's order",
        state_of(
            stored(A, API_SOURCE),
            stored(B, API_SOURCE),
            stored(pod("uid-c", "c"), API_SOURCE),
        ),
        [
            pod("uid-d", "d"),
            pod("uid-b", "b", labels={"x": "y"}),
            pod("uid-c", "c", status={"phase": "Running"}),
        ],
        API_SOURCE,
        [
            (PodOperation.REMOVE, API_SOURCE, ["uid-a"]),
            (PodOperation.ADD, API_SOURCE, ["uid-d"]),
            (PodOperation.UPDATE, API_SOURCE, ["uid-b"]),
            (PodOperation.RECONCILE, API_SOURCE, ["uid-c"]),
        ],
        {"uid-b", "uid-c", "uid-d"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_merge(case: Case) -> None:
    before = copy.deepcopy(case.current)
    state, updates = merge(
        case.current, case.snapshot, case.source, now=T1, first_set=case.first_set
    )
    assert ops(updates) == case.expected
    assert set(state) == case.state_uids
    assert case.current == before, "merge must not modify its input"


def test_new_pods_are_stamped_with_source_and_seen_time() -> None:
    state, updates = merge({}, [A], FILE_SOURCE, now=T1)
    annotations = updates[0].pods[0]["metadata"]["annotations"]
    assert annotations[CONFIG_SOURCE_ANNOTATION] == FILE_SOURCE
    assert annotations[CONFIG_FIRST_SEEN_ANNOTATION] == T1
    assert state[PodUID("uid-a")]["metadata"]["annotations"] == annotations


def test_update_keeps_first_seen_time() -> None:
    current = state_of(stored(A, API_SOURCE, seen=T0))
    state, updates = merge(current, [pod("uid-a", "a", labels={"x": "y"})], API_SOURCE, now=T1)
    (update,) = updates
    updated = update.pods[0]
    assert updated["metadata"]["annotations"][CONFIG_FIRST_SEEN_ANNOTATION] == T0
    assert updated["metadata"]["labels"] == {"x": "y"}
    assert state[PodUID("uid-a")] == updated


def test_reconcile_takes_the_new_status() -> None:
    current = state_of(stored(A, API_SOURCE))
    state, _ = merge(current, [pod("uid-a", "a", status={"phase": "Running"})], API_SOURCE, now=T1)
    assert state[PodUID("uid-a")]["status"] == {"phase": "Running"}


def test_duplicates_are_reported() -> None:
    result = merge_update(
        {}, SourceUpdate(PodOperation.SET, [A, pod("uid-a-copy", "a")], FILE_SOURCE), now=T1
    )
    assert [pod_uid(p) for p in result.rejected] == ["uid-a-copy"]


def test_incremental_add_and_remove_operations() -> None:
    state, _ = merge({}, [A, B], API_SOURCE, now=T0)
    result = merge_update(state, SourceUpdate(PodOperation.REMOVE, [A], API_SOURCE), now=T1)
    assert ops(result.updates) == [(PodOperation.REMOVE, API_SOURCE, ["uid-a"])]
    result = merge_update(
        result.state, SourceUpdate(PodOperation.ADD, [pod("uid-c", "c")], API_SOURCE), now=T1
    )
    assert ops(result.updates) == [(PodOperation.ADD, API_SOURCE, ["uid-c"])]
    assert set(result.state) == {"uid-b", "uid-c"}, "ADD does not remove what it omits"


MANIFEST = b"""\
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  containers:
    - name: nginx
      image: nginx:1.27
"""


def static(data: bytes) -> Pod:
    (decoded,) = decode_manifest(data, "/m/web.yaml")
    return apply_static_defaults(
        decoded, node_name="node-1", source=FILE_SOURCE, source_path="/m/web.yaml"
    )


def test_edited_manifest_is_remove_plus_add_end_to_end() -> None:
    before, after = static(MANIFEST), static(MANIFEST.replace(b"1.27", b"1.28"))
    assert pod_uid(before) != pod_uid(after)
    state, _ = merge({}, [before], FILE_SOURCE, now=T0)
    state, updates = merge(state, [after], FILE_SOURCE, now=T1)
    assert ops(updates) == [
        (PodOperation.REMOVE, FILE_SOURCE, [pod_uid(before)]),
        (PodOperation.ADD, FILE_SOURCE, [pod_uid(after)]),
    ]
    assert list(state) == [pod_uid(after)]
    # Only a reformatting: same decoded object, same UID, nothing to do.
    reformatted = b"# hello\n" + MANIFEST.replace(b"nginx:1.27", b"'nginx:1.28'")
    assert pod_uid(static(reformatted)) == pod_uid(after)
    _, updates = merge(state, [static(reformatted)], FILE_SOURCE, now=T1)
    assert updates == []


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        (datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC), "2024-05-01T10:00:00Z"),
        (datetime(2024, 5, 1, 10, 0, 0, 120000, tzinfo=UTC), "2024-05-01T10:00:00.12Z"),
        (datetime(2024, 5, 1, 10, 0, 0, 1), "2024-05-01T10:00:00.000001Z"),
        (
            datetime(2024, 5, 1, 10, 0, 0, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
            "2024-05-01T10:00:00-05:30",
        ),
    ],
)
def test_rfc3339nano(moment: datetime, text: str) -> None:
    assert format_rfc3339nano(moment) == text


def test_pod_config_tracks_sources_duplicates_and_clock() -> None:
    now = datetime(2024, 5, 1, 10, 0, 0, 500000, tzinfo=UTC)
    config = PodConfig(clock=lambda: now)
    first = config.apply(SourceUpdate(PodOperation.SET, [A], FILE_SOURCE))
    assert ops(first) == [(PodOperation.ADD, FILE_SOURCE, ["uid-a"])]
    seen = first[0].pods[0]["metadata"]["annotations"][CONFIG_FIRST_SEEN_ANNOTATION]
    assert seen == "2024-05-01T10:00:00.5Z"
    assert not config.seen_all_sources([FILE_SOURCE, HTTP_SOURCE])
    second = config.apply(SourceUpdate(PodOperation.SET, [pod("uid-x", "a")], HTTP_SOURCE))
    assert ops(second) == [(PodOperation.ADD, HTTP_SOURCE, [])]
    assert config.duplicates[HTTP_SOURCE] == ["a_default"]
    assert config.seen_all_sources([FILE_SOURCE, HTTP_SOURCE])
    assert [pod_uid(p) for p in config.pods] == ["uid-a"]
    assert config.sync().op is PodOperation.SET


async def test_pod_config_run_loop() -> None:
    config = PodConfig(clock=lambda: datetime(2024, 5, 1, tzinfo=UTC))
    inbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    outbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    task = asyncio.create_task(config.run(inbox, outbox), name="podconfig-under-test")
    try:
        await inbox.put(SourceUpdate(PodOperation.SET, [A], FILE_SOURCE))
        await inbox.put(SourceUpdate(PodOperation.SET, [], FILE_SOURCE))
        added = await asyncio.wait_for(outbox.get(), 5)
        removed = await asyncio.wait_for(outbox.get(), 5)
        assert ops([added, removed]) == [
            (PodOperation.ADD, FILE_SOURCE, ["uid-a"]),
            (PodOperation.REMOVE, FILE_SOURCE, ["uid-a"]),
        ]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
