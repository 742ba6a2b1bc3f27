"""The http source against a real HTTP server on 127.0.0.1 (in a thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from minikubelet.config.http import URLSource, URLSourceError
from minikubelet.config.manifest import ManifestError
from minikubelet.config.types import HTTP_SOURCE, PodOperation, SourceUpdate

POD = b"""\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers: [{name: main, image: nginx}]
"""

POD_LIST = b"""\
apiVersion: v1
kind: PodList
items:
- metadata: {name: a}
  spec: {containers: [{name: main, image: nginx}]}
- metadata: {name: b, namespace: tools}
  spec: {containers: [{name: main, image: busybox}]}
"""


@dataclass
class Served:
    status: int = 200
    body: bytes = POD
    headers_seen: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def server() -> Iterator[tuple[str, Served]]:
    served = Served()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.headers_seen.append(dict(self.headers.items()))
            self.send_response(served.status)
            self.send_header("Content-Length", str(len(served.body)))
            self.end_headers()
            self.wfile.write(served.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="test-http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/pods", served
    finally:
        httpd.shutdown()
        thread.join(5)
        httpd.server_close()


def take(queue: asyncio.Queue[SourceUpdate]) -> SourceUpdate:
    update = queue.get_nowait()
    assert (update.op, update.source) == (PodOperation.SET, HTTP_SOURCE)
    return update


async def test_single_pod_then_unchanged_then_list(server: tuple[str, Served]) -> None:
    url, served = server
    source = URLSource(url, node_name="Node-1", headers={"X-Token": "t"})
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()

    await source.poll_once(queue)
    (pod,) = take(queue).pods
    assert pod["metadata"]["name"] == "web-node-1"
    assert pod["spec"]["nodeName"] == "Node-1"
    assert "tolerations" not in pod["spec"]
    assert served.headers_seen[-1]["X-Token"] == "t"

    await source.poll_once(queue)
    assert queue.empty(), "an unchanged body sends nothing"

    served.body = POD_LIST
    await source.poll_once(queue)
    pods = take(queue).pods
    assert [(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods] == [
        ("default", "a-node-1"),
        ("tools", "b-node-1"),
    ]
    assert source.last_error is None


async def test_errors_send_nothing_but_empty_body_sends_empty_set(
    server: tuple[str, Served],
) -> None:
    url, served = server
    source = URLSource(url, node_name="n")
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()

    served.status = 404
    await source.poll_once(queue)
    assert queue.empty()
    assert isinstance(source.last_error, URLSourceError)
    assert "404" in str(source.last_error)

    served.status, served.body = 200, b"kind: Service\napiVersion: v1\n"
    await source.poll_once(queue)
    assert queue.empty()
    assert isinstance(source.last_error, ManifestError)
    assert source.last_error.reason == "kind is Service, expected Pod or PodList"

    served.body = b""
    await source.poll_once(queue)
    assert take(queue).pods == []
    assert isinstance(source.last_error, URLSourceError)


async def test_run_polls_periodically(server: tuple[str, Served]) -> None:
    url, served = server
    source = URLSource(url, node_name="n", period=0.05)
    queue: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    task = asyncio.create_task(source.run(queue), name="url-source-under-test")
    try:
        first = await asyncio.wait_for(queue.get(), 5)
        served.body = POD_LIST
        second = await asyncio.wait_for(queue.get(), 5)
        assert [len(first.pods), len(second.pods)] == [1, 2]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
