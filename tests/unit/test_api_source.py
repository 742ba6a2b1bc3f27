"""The API pod source's handling of watch events, and how API requests read in the trace."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from minikubelet.config.api import APISource, Gone
from minikubelet.config.types import API_SOURCE, PodOperation, SourceUpdate
from minikubelet.kubeapi.client import describe_path


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def record_event(self, method: str, pod: str = "", **_: Any) -> None:
        self.events.append((method, pod))


def pod(name: str, version: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "resourceVersion": version,
        },
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
    }


@pytest.fixture
def source() -> tuple[APISource, Recorder]:
    recorder = Recorder()
    return APISource(recorder, "n1"), recorder  # type: ignore[arg-type]


async def test_events_become_incremental_updates(source: tuple[APISource, Recorder]) -> None:
    src, recorder = source
    inbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    await src._event({"type": "ADDED", "object": pod("a", "10")}, inbox)
    await src._event({"type": "MODIFIED", "object": pod("a", "11")}, inbox)
    await src._event({"type": "DELETED", "object": pod("a", "12")}, inbox)
    ops = [inbox.get_nowait() for _ in range(3)]
    assert [(u.op, u.source) for u in ops] == [
        (PodOperation.ADD, API_SOURCE),
        (PodOperation.ADD, API_SOURCE),
        (PodOperation.REMOVE, API_SOURCE),
    ]
    assert ops[0].pods[0]["kind"] == "Pod" and ops[0].pods[0]["apiVersion"] == "v1"
    assert src.resource_version == "12"
    assert recorder.events == [
        ("WATCH pods ADDED", "default/a"),
        ("WATCH pods MODIFIED", "default/a"),
        ("WATCH pods DELETED", "default/a"),
    ]


async def test_a_bookmark_moves_the_version_and_sends_nothing(
    source: tuple[APISource, Recorder],
) -> None:
    src, recorder = source
    inbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    await src._event({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "99"}}}, inbox)
    assert inbox.empty() and recorder.events == []
    assert src.resource_version == "99"


async def test_an_expired_version_means_a_new_list(source: tuple[APISource, Recorder]) -> None:
    src, _ = source
    inbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    with pytest.raises(Gone):
        await src._event({"type": "ERROR", "object": {"code": 410, "message": "too old"}}, inbox)
    with pytest.raises(ValueError, match="forbidden"):
        await src._event({"type": "ERROR", "object": {"code": 403, "message": "forbidden"}}, inbox)


@pytest.mark.parametrize(
    ("method", "url", "query", "expected"),
    [
        (
            "patch",
            "https://h:6443/api/v1/namespaces/ns/pods/web/status",
            None,
            ("PATCH pods/status", "ns/web"),
        ),
        (
            "get",
            "https://h:6443/api/v1/pods",
            [("fieldSelector", "x"), ("watch", True)],
            ("WATCH pods", ""),
        ),
        ("get", "https://h:6443/api/v1/pods", [("fieldSelector", "x")], ("LIST pods", "")),
        (
            "put",
            "https://h/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1",
            None,
            ("PUT leases", "kube-node-lease/n1"),
        ),
        ("post", "https://h/api/v1/nodes", None, ("POST nodes", "")),
        ("patch", "https://h/api/v1/nodes/n1/status", None, ("PATCH nodes/status", "n1")),
        ("get", "https://h/version", None, ("GET /version", "")),
    ],
)
def test_requests_read_as_verb_and_resource(
    method: str, url: str, query: Any, expected: tuple[str, str]
) -> None:
    assert describe_path(method, url, query) == expected
