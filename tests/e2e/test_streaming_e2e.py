"""exec, attach and port-forward end to end, on the native and the Docker-backed runtimes.

The path is the product's: the CLI's code asks the kubelet's local API, the
kubelet calls CRI Exec / Attach / PortForward, the runtime returns a URL of its
streaming server, and the client speaks SPDY or WebSocket to it. WebSocket is
also driven with the `websockets` library directly, as an independent client.
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.typing import Subprotocol

from minikubelet import errors
from minikubelet.cli import stream as streamcmds
from minikubelet.server.client import LocalClient
from minikubelet.streaming.client import SPDY, WEBSOCKET, connect_remote_command
from tests.e2e.node import Node, running, runtime_node
from tests.harness.wait import wait_until

POD = """apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 2
  containers:
    - name: web
      image: busybox:1.36
      command:
        - sh
        - -c
        - >-
          mkdir -p /www && echo served through port-forward > /www/index.html &&
          exec httpd -f -p 8080 -h /www
    - name: echo
      image: busybox:1.36
      command: [cat]
      stdin: true
    - name: ticker
      image: busybox:1.36
      command: [sh, -c, 'i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done']
"""


async def chunks(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


@pytest.fixture(scope="module", params=["native", "docker"])
async def node(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[Node, Any]]:
    request.getfixturevalue("test_images")  # busybox:1.36 in the local registry
    runtime = request.getfixturevalue(f"{request.param}_runtime")
    async with runtime_node(
        tmp_path_factory.mktemp(f"stream-{request.param}"), runtime.endpoint, "stream"
    ) as n:
        n.add_manifest("shell.yaml", POD)
        await n.wait_pod(
            "shell", lambda p: running(p, "web", "echo", "ticker"), timeout=90, what="shell"
        )
        yield n, runtime


async def run_exec(
    client: LocalClient, cmd: list[str], stdin: AsyncIterator[bytes] | None, transport: str
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await streamcmds.exec_stream(
        client, "shell-stream", "web", cmd, out, err, stdin=stdin, tty=False, transport=transport
    )
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("transport", [SPDY, WEBSOCKET])
async def test_exec_output_stdin_and_exit_code(node: tuple[Node, Any], transport: str) -> None:
    n, _ = node
    async with n.client() as client:
        code, out, err = await run_exec(
            client,
            ["sh", "-c", "echo to-out; echo to-err >&2; tr a-z A-Z; exit 3"],
            chunks(b"hello ", b"stdin\n"),
            transport,
        )
    assert code == 3
    assert out == "to-out\nHELLO STDIN\n"
    assert err.splitlines() == ["to-err", "command terminated with exit code 3"]


async def test_exec_with_an_independent_websocket_client(node: tuple[Node, Any]) -> None:
    n, _ = node
    async with n.client() as client:
        url = await client.stream_url(
            "exec", "default", "shell-stream", "web", ["sh", "-c", "cat; exit 0"],
            tty=False, stdin=True, stdout=True, stderr=True,
        )  # fmt: skip
    async with ws_connect(
        "ws" + url.removeprefix("http"), subprotocols=[Subprotocol("v5.channel.k8s.io")]
    ) as ws:
        assert ws.subprotocol == "v5.channel.k8s.io"
        await ws.send(b"\x00round trip")
        await ws.send(b"\xff\x00")  # v5 CLOSE of stdin
        messages = [m if isinstance(m, bytes) else m.encode() async for m in ws]
    assert b"".join(m[1:] for m in messages if m[0] == 1) == b"round trip"
    assert messages[-1] == b'\x03{"metadata":{},"status":"Success"}'


@pytest.mark.parametrize("transport", [SPDY, WEBSOCKET])
async def test_tty_exec_sees_resizes(node: tuple[Node, Any], transport: str) -> None:
    n, _ = node
    async with n.client() as client:
        url = await client.stream_url(
            "exec", "default", "shell-stream", "web", ["sh"],
            tty=True, stdin=True, stdout=True, stderr=False,
        )  # fmt: skip
    command = await connect_remote_command(
        url, stdin=True, tty=True, stderr=False, transport=transport
    )
    try:
        await command.resize(132, 43)
        await command.write_stdin(b"stty size; exit 5\n")
        output = b""
        async with asyncio.timeout(20):
            async for _, data in command.read_output():
                output += data
            assert await command.wait() == 5
    finally:
        await command.close()
    assert b"43 132" in output


async def test_attach_to_stdin_and_output(node: tuple[Node, Any]) -> None:
    n, _ = node
    async with n.client() as client:
        url = await client.stream_url(
            "attach", "default", "shell-stream", "echo", [],
            tty=False, stdin=True, stdout=True, stderr=True,
        )  # fmt: skip
        command = await connect_remote_command(url, stdin=True, transport=SPDY)
        try:
            await command.write_stdin(b"through attach\n")
            got = b""
            async with asyncio.timeout(20):
                async for _, data in command.read_output():
                    got += data
                    if b"through attach\n" in got:
                        break
        finally:
            await command.close()
        # Detaching leaves the container running.
        pod = await n.pod("shell")
        assert pod is not None and running(pod, "echo")

        url = await client.stream_url(
            "attach", "default", "shell-stream", "ticker", [],
            tty=False, stdin=False, stdout=True, stderr=True,
        )  # fmt: skip
    command = await connect_remote_command(url, stdin=False, transport=WEBSOCKET)
    try:
        ticks = b""
        async with asyncio.timeout(20):
            async for _, data in command.read_output():
                ticks += data
                if ticks.count(b"\n") >= 3:
                    break
    finally:
        await command.close()
    assert all(line.startswith(b"tick ") for line in ticks.splitlines())


async def test_port_forward_to_httpd_in_the_pod(node: tuple[Node, Any]) -> None:
    n, _ = node
    bound: asyncio.Future[list[tuple[int, int]]] = asyncio.get_running_loop().create_future()
    out, err = io.StringIO(), io.StringIO()
    async with n.client() as client:
        forwarding = asyncio.create_task(
            streamcmds.port_forward(
                client, "shell-stream", [":8080", ":9"], out, err, ready=bound.set_result
            )
        )
        try:
            (web, _), (closed, _) = await asyncio.wait_for(bound, 20)
            async with aiohttp.ClientSession() as session:
                for _ in range(3):  # several connections over the one session
                    async with session.get(
                        f"http://127.0.0.1:{web}/", timeout=aiohttp.ClientTimeout(total=10)
                    ) as resp:
                        assert resp.status == 200
                        assert await resp.text() == "served through port-forward\n"
            # Nothing listens on port 9 in the pod: the error stream says so.
            reader, writer = await asyncio.open_connection("127.0.0.1", closed)
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        finally:
            forwarding.cancel()
            await asyncio.gather(forwarding, return_exceptions=True)
    assert f"Forwarding from 127.0.0.1:{web} -> 8080" in out.getvalue()
    assert "error forwarding port 9" in err.getvalue()


async def test_port_forward_over_websocket(node: tuple[Node, Any]) -> None:
    n, _ = node
    async with n.client() as client:
        url = await client.port_forward_url("default", "shell-stream", [8080])
    async with ws_connect(
        "ws" + url.removeprefix("http") + "?port=8080",
        subprotocols=[Subprotocol("v4.channel.k8s.io")],
    ) as ws:
        prefix = struct.pack("<H", 8080)
        assert [await ws.recv(), await ws.recv()] == [b"\x00" + prefix, b"\x01" + prefix]
        await ws.send(b"\x00GET / HTTP/1.0\r\n\r\n")
        response = b""
        async with asyncio.timeout(10):
            while b"served through port-forward" not in response:
                message = await ws.recv()
                assert isinstance(message, bytes)
                response += message[1:]
    assert response.startswith(b"HTTP/1.")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def sleepers(client: LocalClient) -> int:
    result = await client.exec(
        "default", "shell-stream", "web", ["sh", "-c", "ps -o comm | grep -c '^sleep' || true"]
    )
    return int(result.stdout.strip() or 0)


async def test_a_hundred_abandoned_streams_leave_nothing_behind(node: tuple[Node, Any]) -> None:
    n, runtime = node
    async with n.client() as client:
        baseline_fds, baseline_threads = fd_count(runtime.pid), thread_count(runtime.pid)
        commands = []
        for i in range(100):
            stdin = i % 2 == 0
            url = await client.stream_url(
                "exec", "default", "shell-stream", "web", ["sleep", "600"],
                tty=False, stdin=stdin, stdout=True, stderr=True,
            )  # fmt: skip
            transport = SPDY if i % 4 < 2 else WEBSOCKET
            commands.append(await connect_remote_command(url, stdin=stdin, transport=transport))
        for command in commands:
            await command.close()  # walk away: the runtime must kill what it started

        # the runtime's default executor starts its threads lazily and keeps them (at most
        # min(32, cores + 4)): the kills may be what first fills it; a leak per stream would
        # be a hundred
        pool = min(32, (os.cpu_count() or 1) + 4)
        last: list[object] = ["nothing yet"]

        async def settled() -> bool:
            try:
                left = await sleepers(client)
            except errors.Unavailable as exc:
                last[0] = f"the runtime is still busy: {exc}"
                return False  # the runtime is still busy with the kills: ask again
            fds, threads = fd_count(runtime.pid), thread_count(runtime.pid)
            last[0] = (
                f"{left} sleep processes, {fds} fds (baseline {baseline_fds}), "
                f"{threads} threads (baseline {baseline_threads})"
            )
            return left == 0 and fds <= baseline_fds and threads <= baseline_threads + pool

        try:
            await wait_until(settled, timeout=60, interval=0.5, message="nothing left")
        except AssertionError:
            raise AssertionError(f"streams left something behind: {last[0]}") from None
