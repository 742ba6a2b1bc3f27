"""Probe runners and lifecycle hooks against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web

from minikubelet.api.pod import ContainerPort, Pod, Probe
from minikubelet.errors import DeadlineExceeded, Unavailable
from minikubelet.lifecycle.hooks import run_handler
from minikubelet.prober.probe import (
    ExecOutput,
    ExecResult,
    ProbeResult,
    decode_health_check_response,
    encode_health_check_request,
    run_probe,
)
from minikubelet.types import PodUID

LOCALHOST = "127.0.0.1"


class FakeExec:
    def __init__(self, result: ExecOutput | Exception) -> None:
        self.result = result
        self.calls: list[tuple[str, list[str], int]] = []

    async def __call__(self, container_id: str, cmd: list[str], timeout: int) -> ExecResult:
        self.calls.append((container_id, cmd, timeout))
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


NO_EXEC = FakeExec(AssertionError("no exec expected"))


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
    return port


# -- HTTP ------------------------------------------------------------------------------


class HTTPServer:
    def __init__(self) -> None:
        self.seen_headers: list[dict[str, str]] = []
        self.never = asyncio.Event()
        self.port = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/ok", self.ok)
        app.router.add_get("/fail", self.fail)
        app.router.add_get("/moved", self.moved)
        app.router.add_get("/away", self.away)
        app.router.add_get("/loop", self.loop)
        app.router.add_get("/hang", self.hang)
        return app

    async def ok(self, request: web.Request) -> web.Response:
        self.seen_headers.append(dict(request.headers))
        return web.Response(text="healthy")

    async def fail(self, request: web.Request) -> web.Response:
        return web.Response(status=500, text="secret body")

    async def moved(self, request: web.Request) -> web.Response:
        raise web.HTTPMovedPermanently(location="/ok")

    async def away(self, request: web.Request) -> web.Response:
        # Another host: the prober must stop here, never connect there.
        raise web.HTTPFound(location="http://elsewhere.invalid/ok")

    async def loop(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(location="/loop")

    async def hang(self, request: web.Request) -> web.Response:
        await self.never.wait()
        return web.Response(text="late")


@pytest.fixture
async def http_server() -> AsyncIterator[HTTPServer]:
    server = HTTPServer()
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, LOCALHOST, 0)
    await site.start()
    server.port = runner.addresses[0][1]
    try:
        yield server
    finally:
        server.never.set()  # let a hanging handler finish, so cleanup need not wait for it
        await runner.cleanup()


def http_probe(port: int | str, path: str, **extra: Any) -> Probe:
    action: dict[str, Any] = {"port": port, "path": path}
    action.update(extra)
    return Probe.from_dict({"httpGet": action, "timeoutSeconds": 1})


async def probe_http(
    probe: Probe, ports: tuple[ContainerPort, ...] = ()
) -> tuple[ProbeResult, str]:
    return await run_probe(
        probe, container_id="c1", pod_ip=LOCALHOST, container_ports=ports, exec_runner=NO_EXEC
    )


async def test_http_200_succeeds_with_kube_probe_user_agent(http_server: HTTPServer) -> None:
    probe = http_probe(http_server.port, "/ok", httpHeaders=[{"name": "X-Probe", "value": "yes"}])
    assert await probe_http(probe) == (ProbeResult.SUCCESS, "healthy")
    headers = http_server.seen_headers[-1]
    assert headers["User-Agent"] == "kube-probe/1.33"
    assert headers["Accept"] == "*/*"
    assert headers["X-Probe"] == "yes"


async def test_http_port_by_name(http_server: HTTPServer) -> None:
    ports = (ContainerPort(container_port=http_server.port, name="web"),)
    assert (await probe_http(http_probe("web", "/ok"), ports))[0] is ProbeResult.SUCCESS


async def test_http_unknown_port_name_is_an_error() -> None:
    assert await probe_http(http_probe("nope", "/ok")) == (
        ProbeResult.UNKNOWN,
        'strconv.Atoi: parsing "nope": invalid syntax',
    )


async def test_http_500_fails_without_the_body(http_server: HTTPServer) -> None:
    assert await probe_http(http_probe(http_server.port, "/fail")) == (
        ProbeResult.FAILURE,
        "HTTP probe failed with statuscode: 500",
    )


async def test_http_local_redirect_is_followed(http_server: HTTPServer) -> None:
    assert await probe_http(http_probe(http_server.port, "/moved")) == (
        ProbeResult.SUCCESS,
        "healthy",
    )


async def test_http_redirect_to_another_host_is_a_warning(http_server: HTTPServer) -> None:
    result, output = await probe_http(http_probe(http_server.port, "/away"))
    assert result is ProbeResult.WARNING
    assert output.startswith("Probe terminated redirects, Response body: ")


async def test_http_redirect_loop_fails_after_ten(http_server: HTTPServer) -> None:
    result, output = await probe_http(http_probe(http_server.port, "/loop"))
    assert result is ProbeResult.FAILURE
    assert output.endswith(": stopped after 10 redirects")


async def test_http_connection_refused_fails() -> None:
    port = closed_port()
    result, output = await probe_http(http_probe(port, "/ok"))
    assert result is ProbeResult.FAILURE
    assert output == (
        f'Get "http://{LOCALHOST}:{port}/ok": dial tcp {LOCALHOST}:{port}: '
        "connect: connection refused"
    )


async def test_http_timeout_fails(http_server: HTTPServer) -> None:
    result, output = await probe_http(http_probe(http_server.port, "/hang"))
    assert result is ProbeResult.FAILURE
    assert "context deadline exceeded" in output


# -- TCP -------------------------------------------------------------------------------


async def test_tcp_open_port_succeeds_and_closed_port_fails() -> None:
    accepted = asyncio.Event()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        writer.close()

    server = await asyncio.start_server(on_connect, LOCALHOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        probe = Probe.from_dict({"tcpSocket": {"port": port}})
        result = await run_probe(
            probe, container_id="c1", pod_ip=LOCALHOST, container_ports=(), exec_runner=NO_EXEC
        )
        assert result == (ProbeResult.SUCCESS, "")
        await asyncio.wait_for(accepted.wait(), 5)
    finally:
        server.close()
        await server.wait_closed()

    gone = closed_port()
    probe = Probe.from_dict({"tcpSocket": {"port": gone}})
    result = await run_probe(
        probe, container_id="c1", pod_ip=LOCALHOST, container_ports=(), exec_runner=NO_EXEC
    )
    assert result == (
        ProbeResult.FAILURE,
        f"dial tcp {LOCALHOST}:{gone}: connect: connection refused",
    )


# -- gRPC ------------------------------------------------------------------------------


def health_check(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    service = request[2:].decode() if request else ""
    status = {"": 1, "down": 2}.get(service, 3)
    return b"\x08" + bytes([status])


@pytest.fixture
async def grpc_port() -> AsyncIterator[int]:
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(health_check)},
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{LOCALHOST}:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def probe_grpc(port: int, service: str | None = None) -> tuple[ProbeResult, str]:
    action: dict[str, Any] = {"port": port}
    if service is not None:
        action["service"] = service
    probe = Probe.from_dict({"grpc": action, "timeoutSeconds": 1})
    return await run_probe(
        probe, container_id="c1", pod_ip=LOCALHOST, container_ports=(), exec_runner=NO_EXEC
    )


def test_health_check_wire_format() -> None:
    assert encode_health_check_request("") == b""
    assert encode_health_check_request("db") == b"\x0a\x02db"
    assert decode_health_check_response(b"") == 0
    assert decode_health_check_response(b"\x08\x01") == 1


async def test_grpc_serving_succeeds(grpc_port: int) -> None:
    assert await probe_grpc(grpc_port) == (ProbeResult.SUCCESS, "service healthy")


async def test_grpc_not_serving_fails(grpc_port: int) -> None:
    assert await probe_grpc(grpc_port, "down") == (
        ProbeResult.FAILURE,
        'service unhealthy (responded with "NOT_SERVING")',
    )


async def test_grpc_without_health_service_fails() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port(f"{LOCALHOST}:0")
    await server.start()
    try:
        result, output = await probe_grpc(port)
    finally:
        await server.stop(None)
    assert result is ProbeResult.FAILURE
    assert output.startswith(
        "error: this server does not implement the grpc health protocol (grpc.health.v1.Health)"
    )


async def test_grpc_nothing_listening_fails_at_the_timeout() -> None:
    port = closed_port()
    result, output = await probe_grpc(port)
    assert result is ProbeResult.FAILURE
    assert output.startswith(f'timeout: failed to connect service "{LOCALHOST}:{port}" within 1s')


# -- exec ------------------------------------------------------------------------------


async def run_exec(runner: FakeExec) -> tuple[ProbeResult, str]:
    probe = Probe.from_dict({"exec": {"command": ["cat", "/tmp/ok"]}, "timeoutSeconds": 2})
    return await run_probe(
        probe, container_id="c1", pod_ip="", container_ports=(), exec_runner=runner
    )


async def test_exec_exit_codes() -> None:
    ok = FakeExec(ExecOutput(exit_code=0, stdout=b"fine\n"))
    assert await run_exec(ok) == (ProbeResult.SUCCESS, "fine\n")
    assert ok.calls == [("c1", ["cat", "/tmp/ok"], 2)]
    bad = FakeExec(ExecOutput(exit_code=1, stdout=b"out ", stderr=b"no such file"))
    assert await run_exec(bad) == (ProbeResult.FAILURE, "out no such file")


async def test_exec_timeout_fails_and_runtime_error_is_unknown() -> None:
    slow = FakeExec(DeadlineExceeded("deadline", method="ExecSync"))
    assert await run_exec(slow) == (ProbeResult.FAILURE, 'command "cat /tmp/ok" timed out')
    down = FakeExec(Unavailable("gone", method="ExecSync"))
    assert await run_exec(down) == (ProbeResult.UNKNOWN, "ExecSync: gone (UNAVAILABLE)")


# -- lifecycle hooks ---------------------------------------------------------------------

POD = Pod.from_dict(
    {
        "metadata": {"name": "web", "namespace": "prod", "uid": PodUID("u-1")},
        "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]},
    }
)


async def hook(handler: dict[str, Any], runner: FakeExec = NO_EXEC, **kw: Any) -> str | None:
    options: dict[str, Any] = {"timeout": 5.0, "pod_ip": LOCALHOST}
    options.update(kw)
    return await run_handler(
        handler,
        container_id="c1",
        container_ports=(),
        exec_runner=runner,
        pod=POD,
        container_name="app",
        **options,
    )


async def test_exec_hook_success_and_failure_message() -> None:
    ok = FakeExec(ExecOutput(exit_code=0))
    assert await hook({"exec": {"command": ["touch", "/ready"]}}, ok) is None
    assert ok.calls == [("c1", ["touch", "/ready"], 0)]
    bad = FakeExec(ExecOutput(exit_code=2, stdout=b"hi ", stderr=b"boom"))
    assert await hook({"exec": {"command": ["sh", "-c", "exit 2"]}}, bad) == (
        'Exec lifecycle hook ([sh -c exit 2]) for Container "app" in Pod "web_prod(u-1)" '
        "failed - error: command 'sh -c exit 2' exited with 2: boom, message: \"hi boom\""
    )


async def test_http_hook_ignores_the_status_code(http_server: HTTPServer) -> None:
    assert await hook({"httpGet": {"port": http_server.port, "path": "/ok"}}) is None
    assert http_server.seen_headers[-1]["User-Agent"] == "kube-lifecycle/1.33"
    assert await hook({"httpGet": {"port": http_server.port, "path": "/fail"}}) is None


async def test_http_hook_that_cannot_connect_fails() -> None:
    port = closed_port()
    message = await hook({"httpGet": {"port": port, "path": "/stop"}})
    assert message == (
        'HTTP lifecycle hook (/stop) for Container "app" in Pod "web_prod(u-1)" failed - '
        f'error: Get "http://{LOCALHOST}:{port}/stop": dial tcp {LOCALHOST}:{port}: '
        "connect: connection refused"
    )


async def test_http_hook_that_hangs_is_cut_at_the_timeout(http_server: HTTPServer) -> None:
    message = await hook({"httpGet": {"port": http_server.port, "path": "/hang"}}, timeout=0.2)
    assert message is not None
    assert message.startswith('HTTP lifecycle hook (/hang) for Container "app"')


async def test_sleep_hook_uses_the_given_sleeper() -> None:
    slept: list[float] = []

    async def sleeper(seconds: float) -> None:
        slept.append(seconds)

    assert await hook({"sleep": {"seconds": 3}}, sleep=sleeper) is None
    assert await hook({"sleep": {"seconds": 30}}, sleep=sleeper, timeout=10.0) == (
        'Sleep lifecycle hook (30) for Container "app" in Pod "web_prod(u-1)" failed - '
        "error: container terminated before sleep hook finished"
    )
    assert slept == [3.0, 10.0]


async def test_unknown_handler_cannot_run() -> None:
    message = await hook({"tcpSocket": {"port": 80}})
    assert message is not None
    assert message.startswith("Cannot run handler: invalid handler")
