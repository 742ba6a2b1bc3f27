"""The kubelet's local API over a real unix socket, its client, and the CLI commands on top."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import re
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from minikubelet import errors
from minikubelet.cli import client as commands
from minikubelet.cri.trace import TraceRecorder
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.logs.crilog import format_line
from minikubelet.server.api import LocalAPI, SocketInUse
from minikubelet.server.client import KubeletUnreachable, LocalClient
from minikubelet.server.view import NodeView
from tests.harness.wait import wait_until

T0 = 1_764_312_748_000_000_000  # 2025-11-28T06:52:28Z


def _container_status(name: str, container_id: str, *, running: bool) -> dict[str, Any]:
    state: dict[str, Any] = (
        {"running": {"startedAt": "2025-11-28T06:52:28Z"}}
        if running
        else {"terminated": {"exitCode": 0, "reason": "Completed"}}
    )
    return {
        "name": name,
        "containerID": container_id,
        "ready": running,
        "restartCount": 0,
        "image": "busybox:1.36",
        "imageID": "",
        "state": state,
    }


def _pod(namespace: str, name: str, containers: list[str], **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": "2025-11-28T06:52:28Z",
            "annotations": annotations,
        },
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": c, "image": "busybox:1.36"} for c in containers],
        },
        "status": {
            "phase": "Running",
            "podIP": "10.88.0.5",
            "podIPs": [{"ip": "10.88.0.5"}],
            "containerStatuses": [
                _container_status(c, f"containerd://{name}-{c}", running=True) for c in containers
            ],
        },
    }


class FakeNodeView:
    """A node with three pods, log files under ``root``, and scriptable answers."""

    node_name = "node-1"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.recorder = TraceRecorder()
        self.items = [
            _pod("default", "web", ["app", "sidecar"]),
            _pod("default", "solo", ["main"]),
            _pod("kube-system", "dns", ["coredns"]),
        ]
        self.deleted: list[tuple[str, str, int | None]] = []
        self.execs: list[tuple[str, str, str, list[str], int]] = []
        self.streams: list[tuple[str, str, list[str], bool, bool, bool, bool]] = []
        self.forwards: list[list[int]] = []

    def pods(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self.items)

    def trace(self) -> TraceRecorder | None:
        return self.recorder

    def rejected(self) -> list[dict[str, Any]]:
        return [
            {"source": "/etc/manifests/bad.yaml", "line": 3, "reason": "spec.containers: required"}
        ]

    def events(self) -> list[dict[str, Any]]:
        return [
            {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {"name": "web.1", "namespace": "default"},
                "involvedObject": {
                    "kind": "Pod",
                    "namespace": "default",
                    "name": "web",
                    "uid": "uid-web",
                    "fieldPath": "spec.containers{app}",
                },
                "type": "Normal",
                "reason": "Started",
                "message": "Started container app",
                "source": {"component": "kubelet", "host": "node-1"},
                "firstTimestamp": "2025-11-28T06:52:28Z",
                "lastTimestamp": "2025-11-28T06:52:28Z",
                "count": 2,
            },
            {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {"name": "dns.1", "namespace": "kube-system"},
                "involvedObject": {
                    "kind": "Pod",
                    "namespace": "kube-system",
                    "name": "dns",
                    "uid": "uid-dns",
                },
                "type": "Warning",
                "reason": "BackOff",
                "message": "Back-off restarting failed container",
                "source": {"component": "kubelet", "host": "node-1"},
                "firstTimestamp": "2025-11-28T06:52:29Z",
                "lastTimestamp": "2025-11-28T06:52:29Z",
                "count": 1,
            },
        ]

    def _find(self, namespace: str, pod: str) -> dict[str, Any]:
        for item in self.items:
            if (item["metadata"]["namespace"], item["metadata"]["name"]) == (namespace, pod):
                return item
        raise errors.NotFound(f'pod "{namespace}/{pod}" not found')

    def container_log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path:
        item = self._find(namespace, pod)
        if container not in [c["name"] for c in item["spec"]["containers"]]:
            raise errors.NotFound(f'container "{container}" not found in pod "{namespace}/{pod}"')
        return self.root / f"{namespace}_{pod}" / container / ("0.log" if previous else "1.log")

    def stop(self, namespace: str, pod: str, container: str) -> None:
        for entry in self._find(namespace, pod)["status"]["containerStatuses"]:
            if entry["name"] == container:
                entry["state"] = {"terminated": {"exitCode": 0, "reason": "Completed"}}

    async def exec(
        self, namespace: str, pod: str, container: str, cmd: list[str], timeout: int
    ) -> tuple[bytes, bytes, int]:
        self._find(namespace, pod)
        self.execs.append((namespace, pod, container, cmd, timeout))
        if cmd[0] == "stopped":
            raise errors.FailedPrecondition(f'container "{container}" is not running')
        if cmd[0] == "crash":
            raise RuntimeError("the fake broke")
        if cmd[0] == "busy":
            raise errors.Unavailable("dockerd at unix:///x did not answer")
        if cmd[0] == "slow":
            raise errors.DeadlineExceeded("timed out after 1s")
        return b"out \xff\n", b"err\n", 3 if cmd[0] == "false" else 0

    async def stream_url(
        self,
        kind: str,
        namespace: str,
        pod: str,
        container: str,
        cmd: list[str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> str:
        self._find(namespace, pod)
        self.streams.append((kind, container, cmd, tty, stdin, stdout, stderr))
        if not (stdin or stdout or stderr):
            raise errors.InvalidArgument("one of stdin, stdout, or stderr must be set")
        return f"http://127.0.0.1:1/{kind}/token{len(self.streams)}"

    async def port_forward_url(self, namespace: str, pod: str, ports: list[int]) -> str:
        self._find(namespace, pod)
        self.forwards.append(ports)
        return "http://127.0.0.1:1/portforward/tok"

    async def delete_pod(self, namespace: str, pod: str, grace_seconds: int | None) -> None:
        self._find(namespace, pod)
        self.deleted.append((namespace, pod, grace_seconds))

    def status(self) -> dict[str, Any]:
        return {
            "nodeName": self.node_name,
            "runtime": {"name": "fake", "version": "0.1"},
            "pods": 3,
        }


def write_log(view: FakeNodeView, namespace: str, pod: str, container: str, text: str) -> Path:
    path = view.container_log_path(namespace, pod, container, previous=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(text)
    return path


def line(i: int, message: str, stream: str = "stdout") -> str:
    return format_line(T0 + i, "stdout" if stream == "stdout" else "stderr", message)


@contextlib.asynccontextmanager
async def serving(view: NodeView, path: Path) -> AsyncIterator[LocalAPI]:
    api = LocalAPI(view, path)
    task = asyncio.create_task(api.run(), name="local api")
    ready = asyncio.create_task(api.ready.wait())
    await asyncio.wait([task, ready], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        await task  # raises what went wrong
    assert api.ready.is_set()
    try:
        yield api
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "kubelet.sock"


@pytest.fixture
def view(tmp_path: Path) -> FakeNodeView:
    return FakeNodeView(tmp_path / "logs")


@pytest.fixture
async def client(view: FakeNodeView, socket_path: Path) -> AsyncIterator[LocalClient]:
    async with serving(view, socket_path), LocalClient(socket_path) as c:
        yield c


@pytest.fixture
async def raw(client: LocalClient, socket_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP session on the socket, to see status codes and bodies as they are."""
    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=str(socket_path)),
        base_url="http://localhost",
        timeout=aiohttp.ClientTimeout(total=10),
    ) as session:
        yield session


# --- the socket ------------------------------------------------------------------------


async def test_socket_is_private_and_removed_on_stop(view: FakeNodeView, socket_path: Path) -> None:
    async with serving(view, socket_path):
        mode = socket_path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o600
        assert stat.S_IMODE(socket_path.parent.stat().st_mode) == 0o700
    assert not socket_path.exists()


async def test_a_stale_socket_is_replaced(view: FakeNodeView, socket_path: Path) -> None:
    socket_path.parent.mkdir(mode=0o700)
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(socket_path))  # bound, never listening: what a killed kubelet leaves
    assert socket_path.exists()
    async with serving(view, socket_path), LocalClient(socket_path) as client:
        assert await client.healthz() == "ok"


async def test_a_live_socket_is_refused(view: FakeNodeView, socket_path: Path) -> None:
    async with serving(view, socket_path):
        with pytest.raises(SocketInUse, match="already listening"):
            await LocalAPI(view, socket_path).run()
        async with LocalClient(socket_path) as client:
            assert await client.healthz() == "ok"  # the first one still serves


async def test_a_file_that_is_not_a_socket_is_left_alone(
    view: FakeNodeView, socket_path: Path
) -> None:
    socket_path.parent.mkdir()
    socket_path.write_text("precious")
    with pytest.raises(FileExistsError, match="not a socket"):
        await LocalAPI(view, socket_path).run()
    assert socket_path.read_text() == "precious"


async def test_the_client_says_when_no_kubelet_listens(socket_path: Path) -> None:
    async with LocalClient(socket_path) as client:
        with pytest.raises(ConnectionError, match=r"no kubelet is listening on .*minikubelet run"):
            await client.pods()
    socket_path.parent.mkdir()
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(str(socket_path))
        async with LocalClient(socket_path) as client:
            with pytest.raises(KubeletUnreachable, match=re.escape(str(socket_path))):
                await client.status()


# --- reading -----------------------------------------------------------------------------


async def test_healthz_pods_rejected_events_status(
    client: LocalClient, raw: aiohttp.ClientSession, view: FakeNodeView
) -> None:
    async with raw.get("/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok"
    pod_list = await client.pod_list()
    assert {k: pod_list[k] for k in ("kind", "apiVersion", "metadata")} == {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {},
    }
    assert [p["metadata"]["name"] for p in await client.pods()] == ["web", "solo", "dns"]
    assert await client.rejected() == view.rejected()
    async with raw.get("/events") as response:
        event_list = await response.json()
    assert event_list["kind"] == "EventList"
    assert event_list["items"] == await client.events() == view.events()
    assert await client.status() == view.status()


async def test_unknown_routes_answer_json(raw: aiohttp.ClientSession) -> None:
    async with raw.get("/nope") as response:
        assert response.status == 404
        assert await response.json() == {"error": "no such route: GET /nope"}
    async with raw.put("/pods") as response:
        assert response.status == 405
        assert "not allowed" in (await response.json())["error"]


# --- logs --------------------------------------------------------------------------------


async def test_logs_with_options(client: LocalClient, view: FakeNodeView) -> None:
    write_log(view, "default", "web", "app", line(0, "one") + line(1, "two") + line(2, "three"))

    async def read(**options: Any) -> bytes:
        return b"".join([c async for c in client.logs("default", "web", "app", **options)])

    assert await read() == b"one\ntwo\nthree\n"
    assert await read(tail_lines=1) == b"three\n"
    assert await read(limit_bytes=5) == b"one\nt"
    assert await read(tail_lines=1, timestamps=True) == b"2025-11-28T06:52:28.000000002Z three\n"


async def test_logs_of_the_previous_instance(client: LocalClient, view: FakeNodeView) -> None:
    with pytest.raises(errors.NotFound, match='previous log of container "app"'):
        [c async for c in client.logs("default", "web", "app", previous=True)]
    path = view.container_log_path("default", "web", "app", previous=True)
    path.parent.mkdir(parents=True)
    path.write_text(line(0, "before the restart"))
    chunks = [c async for c in client.logs("default", "web", "app", previous=True, follow=True)]
    assert b"".join(chunks) == b"before the restart\n"


async def test_logs_errors(client: LocalClient, raw: aiohttp.ClientSession) -> None:
    with pytest.raises(errors.NotFound, match='container "nope" not found in pod "default/web"'):
        [c async for c in client.logs("default", "web", "nope")]
    async with raw.get("/containerLogs/default/ghost/app") as response:
        assert response.status == 404
        assert await response.json() == {"error": 'pod "default/ghost" not found'}
    for query, message in [
        ("tailLines=ten", "tailLines must be an integer"),
        ("tailLines=-2", "tailLines must be 0 or more"),
        ("follow=maybe", "follow must be true or false"),
        ("stream=stdin", "stream must be All, Stdout or Stderr"),
        ("sinceTime=yesterday", "sinceTime"),
    ]:
        async with raw.get(f"/containerLogs/default/web/app?{query}") as response:
            assert response.status == 400, query
            assert message in (await response.json())["error"]


async def test_logs_follow_streams_until_the_container_stops(
    client: LocalClient, view: FakeNodeView
) -> None:
    path = write_log(view, "default", "web", "app", line(0, "hello"))
    chunks = client.logs("default", "web", "app", follow=True)
    assert await asyncio.wait_for(anext(chunks), 5) == b"hello\n"
    with path.open("a") as f:
        f.write(line(1, "streamed"))
    assert await asyncio.wait_for(anext(chunks), 5) == b"streamed\n"
    with path.open("a") as f:
        f.write(line(2, "goodbye"))
    view.stop("default", "web", "app")
    rest = await asyncio.wait_for(_drain(chunks), 5)
    assert rest.endswith(b"goodbye\n")


async def _drain(chunks: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in chunks])


async def test_a_stopping_server_ends_a_followed_log(view: FakeNodeView, socket_path: Path) -> None:
    write_log(view, "default", "web", "app", line(0, "hello"))
    async with LocalClient(socket_path) as client:
        async with serving(view, socket_path):
            chunks = client.logs("default", "web", "app", follow=True)
            assert await asyncio.wait_for(anext(chunks), 5) == b"hello\n"
        # the server said goodbye: the stream ended cleanly, quickly
        assert await asyncio.wait_for(_drain(chunks), 1) == b""


# --- acting -----------------------------------------------------------------------------


async def test_exec(client: LocalClient, raw: aiohttp.ClientSession, view: FakeNodeView) -> None:
    result = await client.exec("default", "web", "app", ["false", "-x"], timeout=5)
    assert result == (b"out \xff\n", b"err\n", 3)
    assert view.execs == [("default", "web", "app", ["false", "-x"], 5)]
    with pytest.raises(errors.FailedPrecondition, match='container "app" is not running'):
        await client.exec("default", "web", "app", ["stopped"])
    with pytest.raises(errors.NotFound, match="ghost"):
        await client.exec("default", "ghost", "app", ["true"])
    async with raw.post("/exec/default/web/app", json={"command": ["stopped"]}) as response:
        assert response.status == 409
    bodies: list[object] = [
        {"command": []},
        {"command": "ls"},
        {"command": ["ls"], "timeout": -1},
        [1],
    ]
    for body in bodies:
        async with raw.post("/exec/default/web/app", json=body) as response:
            assert response.status == 400, body
    async with raw.post("/exec/default/web/app", data=b"{not json") as response:
        assert response.status == 400


async def test_streams_redirect_to_the_runtime_url(
    client: LocalClient, raw: aiohttp.ClientSession, view: FakeNodeView
) -> None:
    url = await client.stream_url(
        "exec", "default", "web", "app", ["sh", "-c", "echo hi"],
        tty=True, stdin=True, stdout=True, stderr=False,
    )  # fmt: skip
    assert url == "http://127.0.0.1:1/exec/token1"
    assert view.streams[-1] == ("exec", "app", ["sh", "-c", "echo hi"], True, True, True, False)
    url = await client.stream_url(
        "attach", "default", "web", "app", [], tty=False, stdin=False, stdout=True, stderr=True
    )
    assert url == "http://127.0.0.1:1/attach/token2"
    assert await client.port_forward_url("default", "web", [80, 8080]) == (
        "http://127.0.0.1:1/portforward/tok"
    )
    assert view.forwards == [[80, 8080]]
    query = "?command=ls&stdout=true"
    async with raw.get(f"/exec/default/web/app{query}", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "http://127.0.0.1:1/exec/token3"
        assert (await response.json()) == {"url": "http://127.0.0.1:1/exec/token3"}
    async with raw.get("/exec/default/web/app?stdout=true", allow_redirects=False) as response:
        assert response.status == 400  # exec needs a command
    async with raw.get("/exec/default/web/app?command=ls", allow_redirects=False) as response:
        assert response.status == 400  # and some stdio
    async with raw.get("/portForward/default/web?port=http", allow_redirects=False) as response:
        assert response.status == 400
    with pytest.raises(errors.NotFound):
        await client.port_forward_url("default", "ghost", [80])


async def test_a_runtime_that_is_unavailable_or_too_slow_is_503_or_504(
    client: LocalClient, raw: aiohttp.ClientSession
) -> None:
    async with raw.post("/exec/default/web/app", json={"command": ["busy"]}) as response:
        assert response.status == 503
    with pytest.raises(errors.Unavailable, match="did not answer"):
        await client.exec("default", "web", "app", ["busy"])
    with pytest.raises(errors.DeadlineExceeded, match="timed out"):
        await client.exec("default", "web", "app", ["slow"])


async def test_an_unexpected_error_is_a_500_without_traceback(
    raw: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    async with raw.post("/exec/default/web/app", json={"command": ["crash"]}) as response:
        assert response.status == 500
        body = await response.json()
    assert body == {"error": "internal error: RuntimeError: the fake broke"}
    assert "Traceback" in caplog.text  # in the log, for whoever runs the node


async def test_delete_pod(
    client: LocalClient, raw: aiohttp.ClientSession, view: FakeNodeView
) -> None:
    await client.delete_pod("default", "web", grace_period_seconds=0)
    await client.delete_pod("kube-system", "dns")
    assert view.deleted == [("default", "web", 0), ("kube-system", "dns", None)]
    with pytest.raises(errors.NotFound):
        await client.delete_pod("default", "ghost")
    async with raw.delete("/pods/default/web?gracePeriodSeconds=-1") as response:
        assert response.status == 400
    async with raw.delete("/pods/default/web") as response:
        assert (await response.json())["status"] == "Success"


# --- the commands ------------------------------------------------------------------------


async def test_get_pods_table_wide_json_yaml(client: LocalClient, view: FakeNodeView) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await commands.get_pods(client, "table", out, err=err) == 0
    header, *rows = out.getvalue().splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [r.split()[:3] for r in rows] == [
        ["web", "2/2", "Running"],
        ["solo", "1/1", "Running"],
        ["dns", "1/1", "Running"],
    ]
    assert "manifest /etc/manifests/bad.yaml:3 was rejected: spec.containers" in err.getvalue()

    out = io.StringIO()
    assert await commands.get_pods(client, "wide", out, err=io.StringIO()) == 0
    assert "10.88.0.5" in out.getvalue() and "NODE" in out.getvalue()

    out = io.StringIO()
    assert await commands.get_pods(client, "json", out) == 0
    assert json.loads(out.getvalue())["items"] == view.items

    out = io.StringIO()
    assert await commands.get_pods(client, "yaml", out) == 0
    assert yaml.safe_load(out.getvalue())["kind"] == "PodList"


async def test_get_pods_when_there_are_none(client: LocalClient, view: FakeNodeView) -> None:
    view.items = []
    out, err = io.StringIO(), io.StringIO()
    assert await commands.get_pods(client, "table", out, err=err) == 0
    assert out.getvalue() == ""
    assert err.getvalue().startswith("No resources found\n")


async def test_describe_pod(client: LocalClient) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await commands.describe_pod(client, "default/web", out, err=err) == 0
    text = out.getvalue()
    assert "web" in text and "Started container app" in text
    assert "Back-off" not in text  # another pod's event

    assert await commands.describe_pod(client, "kube-system/web", out, err=err) == 1
    assert err.getvalue() == (
        'Error from server (NotFound): pods "web" not found in namespace "kube-system"\n'
    )


async def test_logs_command_defaults_the_container(client: LocalClient, view: FakeNodeView) -> None:
    write_log(view, "default", "web", "app", line(0, "caf\u00e9 ok"))
    write_log(view, "default", "web", "sidecar", line(0, "from the sidecar"))
    out, err = io.StringIO(), io.StringIO()
    assert await commands.logs(client, "web", None, False, False, None, False, out, err=err) == 0
    assert out.getvalue() == "caf\u00e9 ok\n"
    assert err.getvalue() == 'Defaulted container "app" out of: app, sidecar\n'

    out, err = io.StringIO(), io.StringIO()
    assert await commands.logs(client, "web", "sidecar", False, False, 1, True, out, err=err) == 0
    assert out.getvalue() == "2025-11-28T06:52:28.000000000Z from the sidecar\n"
    assert err.getvalue() == ""

    out, err = io.StringIO(), io.StringIO()
    assert await commands.logs(client, "web", "nope", False, False, None, False, out, err=err) == 1
    assert err.getvalue() == "error: container nope is not valid for pod web\n"


async def test_logs_command_honours_the_default_container_annotation(
    client: LocalClient, view: FakeNodeView
) -> None:
    view.items[0]["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"] = "sidecar"
    write_log(view, "default", "web", "sidecar", line(0, "picked"))
    out, err = io.StringIO(), io.StringIO()
    assert await commands.logs(client, "web", None, False, False, None, False, out, err=err) == 0
    assert (out.getvalue(), err.getvalue()) == ("picked\n", "")


async def test_logs_command_follows(client: LocalClient, view: FakeNodeView) -> None:
    path = write_log(view, "default", "solo", "main", line(0, "first"))
    out, err = io.StringIO(), io.StringIO()
    follow = asyncio.create_task(
        commands.logs(client, "solo", None, True, False, None, False, out, err=err)
    )

    def shown(text: str) -> bool:
        assert not follow.done(), err.getvalue()
        return text in out.getvalue()

    await wait_until(lambda: shown("first\n"), timeout=5, interval=0.01, message="the first line")
    assert err.getvalue() == ""  # one container: nothing to say
    with path.open("a") as f:
        f.write(line(1, "second"))
    view.stop("default", "solo", "main")
    assert await asyncio.wait_for(follow, 5) == 0
    assert out.getvalue() == "first\nsecond\n"


async def test_exec_command(client: LocalClient, view: FakeNodeView) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await commands.exec_(client, "kube-system/dns", None, ["false"], out, err) == 3
    assert out.getvalue() == "out \ufffd\n"
    assert err.getvalue() == "err\ncommand terminated with exit code 3\n"
    assert view.execs[-1][:3] == ("kube-system", "dns", "coredns")

    # a real stdout gets the bytes as they are
    raw_out, raw_err = io.BytesIO(), io.BytesIO()
    out_text, err_text = io.TextIOWrapper(raw_out), io.TextIOWrapper(raw_err)
    assert await commands.exec_(client, "solo", None, ["true"], out_text, err_text) == 0
    assert (raw_out.getvalue(), raw_err.getvalue()) == (b"out \xff\n", b"err\n")

    out, err = io.StringIO(), io.StringIO()
    assert await commands.exec_(client, "web", "app", ["stopped"], out, err) == 1
    assert err.getvalue() == (
        'Error from server (FailedPrecondition): container "app" is not running\n'
    )


async def test_events_command(client: LocalClient) -> None:
    out = io.StringIO()
    assert await commands.events(client, out) == 0
    header, first, second = out.getvalue().splitlines()
    assert header.split("   ")[0] == "NAMESPACE"
    assert "LAST SEEN" in header
    assert "(x2)" in first and "pod/web (spec.containers{app})" in first
    assert first.startswith("default") and "Started container app" in first
    assert second.startswith("kube-system") and "Warning" in second


async def test_commands_say_when_no_kubelet_listens(socket_path: Path) -> None:
    async with LocalClient(socket_path) as client:
        err = io.StringIO()
        assert await commands.get_pods(client, "table", io.StringIO(), err=err) == 1
        assert err.getvalue() == (
            f"error: no kubelet is listening on {socket_path}: start it with `minikubelet run`\n"
        )
        err = io.StringIO()
        assert await commands.exec_(client, "web", None, ["ls"], io.StringIO(), err) == 1
        assert "no kubelet is listening" in err.getvalue()


def test_split_name() -> None:
    assert commands.split_name("web") == ("default", "web")
    assert commands.split_name("kube-system/dns") == ("kube-system", "dns")
    for bad in ("/web", "ns/", "a/b/c"):
        with pytest.raises(errors.InvalidArgument):
            commands.split_name(bad)


async def test_trace_lists_then_follows_calls(tmp_path: Path) -> None:
    view = FakeNodeView(tmp_path)

    def call(method: str, name: str) -> None:
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="default", uid=name)
        )
        view.recorder.record(
            service="RuntimeService",
            method=method,
            request=pb.RunPodSandboxRequest(config=config),
            response=None,
            code="OK",
            started=1.0,
            duration_s=0.001,
        )

    call("RunPodSandbox", "web")
    call("RunPodSandbox", "db")
    async with (
        serving(view, tmp_path / "kubelet.sock"),
        LocalClient(tmp_path / "kubelet.sock") as client,
    ):
        kept = [r async for r in client.trace(pod="web")]
        assert [(r.method, r.pod) for r in kept] == [("RunPodSandbox", "default/web")]

        async def follow() -> list[str]:
            seen = []
            async for rec in client.trace(pod="web", follow=True):
                seen.append(rec.method)
                if len(seen) == 2:
                    return seen
            return seen

        follower = asyncio.create_task(follow())
        await wait_until(
            lambda: view.recorder._subscribers,
            timeout=5,
            interval=0.01,
            message="the follower to subscribe",
        )
        call("StopPodSandbox", "web")
        assert await asyncio.wait_for(follower, 5) == ["RunPodSandbox", "StopPodSandbox"]
