"""The kubelet API server on its own: a view with one pod, a stand-in runtime streaming
server on loopback, TLS with a generated certificate, anonymous callers allowed.

What goes through the API server and a real runtime is proven in
tests/e2e/test_kubelet_api*.py; here are the server's own rules: names checked before
lookups, typed query parameters, the upgrade proxy (a 101 spliced both ways, any other
answer relayed), the per-user stream limit, and the host log directory's walls.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from minikubelet import errors
from minikubelet.server.kubeletapi.auth import build_auth
from minikubelet.server.kubeletapi.server import KubeletServer, ServingOptions
from minikubelet.server.kubeletapi.tls import ensure_serving_certificate, server_ssl_context


class Backend:
    """A runtime streaming server stand-in: ``/ok`` switches protocols and echoes,
    upper-cased; ``/refuse`` answers 403 with the versions it would accept."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        if head.startswith(b"GET /refuse"):
            body = b"no common protocol"
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nX-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io"
                b"\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
            writer.close()
            return
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        )
        await writer.drain()
        try:
            while data := await reader.read(1024):
                writer.write(data.upper())
                await writer.drain()
        finally:
            self.closed.set()
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"


class View:
    node_name = "unit"

    def __init__(self, backend: Backend, logs: Path) -> None:
        self.backend = backend
        self.log_file = logs / "c.log"
        self.log_file.write_text("2026-12-07T00:00:00.000000000Z stdout F hello\n")
        self.stream_calls: list[dict[str, Any]] = []

    def pods(self) -> list[dict[str, Any]]:
        return [
            {
                "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
                "status": {
                    "containerStatuses": [
                        {"name": "c", "containerID": "x://1", "state": {"terminated": {}}}
                    ]
                },
            }
        ]

    def running_pods(self) -> list[dict[str, Any]]:
        return self.pods()

    def health(self) -> list[tuple[str, str | None]]:
        return [("ping", None)]

    def container_log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path:
        if (namespace, pod, container) != ("default", "p", "c"):
            raise errors.NotFound(f'pods "{pod}" not found')
        return self.log_file

    async def exec(self, *args: Any) -> tuple[bytes, bytes, int]:
        return b"out\n", b"", 0

    async def stream_url(
        self, kind: str, namespace: str, pod: str, container: str, cmd: list[str], **flags: bool
    ) -> str:
        if pod != "p":
            raise errors.NotFound(f'pods "{pod}" not found')
        self.stream_calls.append({"kind": kind, "cmd": cmd, **flags})
        return f"{self.backend.url}/{'refuse' if cmd == ['refuse'] else 'ok'}/TOKEN"

    async def port_forward_url(self, namespace: str, pod: str, ports: list[int]) -> str:
        return f"{self.backend.url}/ok/PF"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[str, View, KubeletServer, Path]]:
    backend = Backend()
    backend.server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    logs = tmp_path / "podlogs"
    logs.mkdir()
    hostlogs = tmp_path / "var-log"
    (hostlogs / "sub").mkdir(parents=True)
    (hostlogs / "syslog").write_text("host log line\n")
    (tmp_path / "secret").write_text("do not serve\n")
    (hostlogs / "escape").symlink_to(tmp_path / "secret")
    view = View(backend, logs)
    cert = ensure_serving_certificate(tmp_path, node_name="unit", hostname="localhost")
    options = ServingOptions(
        address="127.0.0.1",
        port=0,
        anonymous_auth=True,
        max_streams_per_user=2,
        host_log_dir=hostlogs,
    )
    server = KubeletServer(
        view,  # type: ignore[arg-type]
        ssl_context=lambda: server_ssl_context(cert.cert_file, cert.key_file),
        auth=build_auth(
            "unit", api=None, token_webhook=False, anonymous=True, authorization_mode="AlwaysAllow"
        ),
        options=options,
    )
    task = asyncio.create_task(server.run())
    await asyncio.wait_for(server.ready.wait(), 10)
    try:
        yield f"https://127.0.0.1:{server.port}", view, server, cert.cert_file
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        backend.server.close()


def _client() -> aiohttp.ClientSession:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context))


async def test_names_and_parameters_are_checked(
    served: tuple[str, View, KubeletServer, Path],
) -> None:
    url, *_ = served
    async with _client() as http:
        for path, status in [
            ("/containerLogs/default/p/c", 200),
            ("/containerLogs/default/P_Q/c", 400),
            ("/containerLogs/default/%2e%2e/c", 400),
            ("/containerLogs/%2e%2e/%2e%2e/c", (400, 404)),
            ("/containerLogs/default/a%2Fb/c", 400),
            ("/containerLogs/default/nope/c", 404),
            ("/containerLogs/default/p/c?tailLines=abc", 400),
            ("/containerLogs/default/p/c?follow=maybe", 400),
            ("/nowhere", 404),
        ]:
            async with http.get(URL(url + path, encoded=True)) as resp:
                body = await resp.text()
                wanted = status if isinstance(status, tuple) else (status,)
                assert resp.status in wanted, (path, resp.status, body)
                assert "Traceback" not in body
                if "tailLines" in path:
                    assert "tailLines" in body
        async with http.get(url + "/containerLogs/default/p/c") as resp:
            assert await resp.text() == "hello\n"
        async with http.post(url + "/run/default/p/c?cmd=echo+out") as resp:
            assert (resp.status, await resp.text()) == (200, "out\n")


async def test_exec_is_spliced_onto_the_runtime(
    served: tuple[str, View, KubeletServer, Path],
) -> None:
    url, view, _, _ = served
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
    writer.write(
        b"POST /exec/default/p/c?command=sh&input=1&output=1&tty=1&error=1 HTTP/1.1\r\n"
        b"Host: x\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nAuthorization: Bearer SECRET\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
    writer.write(b"ping")
    assert await asyncio.wait_for(reader.readexactly(4), 10) == b"PING"
    # the flags as the API server sends them; a terminal has no separate stderr
    assert view.stream_calls == [
        {"kind": "exec", "cmd": ["sh"], "tty": True, "stdin": True, "stdout": True, "stderr": False}
    ]
    # only the negotiation headers reach the runtime: never the caller's credentials
    assert b"SECRET" not in view.backend.requests[0]
    assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in view.backend.requests[0]
    writer.close()
    # the caller went: the runtime's side is closed too (it ends the process)
    await asyncio.wait_for(view.backend.closed.wait(), 10)


async def test_a_refused_upgrade_is_relayed(served: tuple[str, View, KubeletServer, Path]) -> None:
    url, *_ = served
    async with _client() as http:
        async with http.get(
            url + "/exec/default/p/c?command=refuse&output=1",
            headers={"Connection": "Upgrade", "Upgrade": "SPDY/3.1"},
        ) as resp:
            assert resp.status == 403
            assert resp.headers["X-Accepted-Stream-Protocol-Versions"] == "v4.channel.k8s.io"
            assert await resp.text() == "no common protocol"
        async with http.get(url + "/exec/default/p/c?command=sh") as resp:
            assert resp.status == 400
            assert "stdin, stdout, stderr" in await resp.text()


async def test_streams_per_user_are_limited(served: tuple[str, View, KubeletServer, Path]) -> None:
    url, _, server, _ = served
    host, port = url.removeprefix("https://").split(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    held = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection(host, int(port), ssl=context)
        writer.write(
            b"GET /attach/default/p/c?output=1 HTTP/1.1\r\nHost: x\r\n"
            b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"
        )
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        held.append(writer)
    async with _client() as http, http.get(url + "/attach/default/p/c?output=1") as resp:
        assert resp.status == 429
    for writer in held:
        writer.close()

    async def released() -> bool:
        return not server.streams.open

    from tests.harness.wait import wait_until

    await wait_until(released, timeout=10, message="streams released")


async def test_host_logs_stay_inside_their_directory(
    served: tuple[str, View, KubeletServer, Path],
) -> None:
    url, *_ = served
    async with _client() as http:
        async with http.get(url + "/logs/") as resp:
            listing = await resp.text()
            assert resp.status == 200 and "syslog" in listing and "sub/" in listing
        async with http.get(url + "/logs/syslog") as resp:
            assert (resp.status, await resp.text()) == (200, "host log line\n")
        for path in ("/logs/escape", "/logs/%2e%2e/secret", "/logs/sub/%2e%2e/%2e%2e/secret"):
            async with http.get(URL(url + path, encoded=True)) as resp:
                body = await resp.text()
                assert resp.status in (400, 404), (path, resp.status)
                assert "do not serve" not in body
