"""Exec, Attach and PortForward: a URL from the RPC, then the stream, on every runtime.

Against containerd the streaming server is containerd's own (the Kubernetes
streaming library, in Go): our SPDY and WebSocket clients speak to a server
nobody here wrote. The simulated runtime has no streaming server and says so.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError, InvalidArgument, NotFound, Unimplemented
from minikubelet.streaming import channels as ch
from minikubelet.streaming.client import (
    SPDY,
    WEBSOCKET,
    RemoteCommand,
    connect_port_forward,
    connect_remote_command,
)
from tests.contract.conftest import RuntimeUnderTest
from tests.contract.pods import container_config, pod, sandbox_config
from tests.harness.wait import wait_until

# Reads one line, so it ends without an end of stdin (v4 WebSocket cannot send one).
ONE_LINE = "echo out; read line; echo $line | tr a-z A-Z >&2; exit 4"
TICKS = "while true; do echo tick; sleep 0.2; done"
SERVE = "mkdir -p /www && echo contract > /www/index.html && exec httpd -f -p 8080 -h /www"


async def collect(command: RemoteCommand) -> tuple[bytes, bytes]:
    out, err = b"", b""
    async with asyncio.timeout(30):
        async for channel, data in command.read_output():
            if channel == ch.STREAM_STDOUT:
                out += data
            else:
                err += data
    return out, err


async def test_exec_attach_and_port_forward_through_the_returned_urls(
    cri: CRIClient, rt: RuntimeUnderTest, log_dir: Path
) -> None:
    config = sandbox_config(log_dir)
    async with pod(cri, config) as sandbox_id:
        cid = await cri.create_container(
            sandbox_id, container_config(rt.busybox, "web", ["sh", "-c", SERVE]), config
        )
        await cri.start_container(cid)
        if rt.name == "fake":
            with pytest.raises(Unimplemented, match="no streaming server"):
                await cri.exec(cid, ["true"])
            return

        with pytest.raises(InvalidArgument):
            await cri.exec(cid, ["sh"], tty=True, stdout=True, stderr=True)
        with pytest.raises(NotFound if rt.ours else CRIError):
            await cri.exec("0" * 64, ["true"])

        for transport in (SPDY, WEBSOCKET):
            url = await cri.exec(cid, ["sh", "-c", ONE_LINE], stdin=True)
            assert url.startswith("http://")
            command = await connect_remote_command(url, stdin=True, transport=transport)
            try:
                await command.write_stdin(b"from stdin\n")
                await command.close_stdin()
                assert await collect(command) == (b"out\n", b"FROM STDIN\n"), transport
                assert await command.wait() == 4, transport
            finally:
                await command.close()

        url = await cri.exec(cid, ["sh"], tty=True, stdin=True, stderr=False)
        command = await connect_remote_command(
            url, stdin=True, tty=True, stderr=False, transport=SPDY
        )
        try:
            await command.resize(91, 17)
            await command.write_stdin(b"stty size; exit 0\n")
            out, _ = await collect(command)
            assert b"17 91" in out
            assert await command.wait() == 0
        finally:
            await command.close()

        ticker = await cri.create_container(
            sandbox_id,
            container_config(rt.busybox, "ticker", ["sh", "-c", TICKS]),
            config,
        )
        await cri.start_container(ticker)
        url = await cri.attach(ticker, stdout=True, stderr=True)
        command = await connect_remote_command(url, stdin=False, transport=SPDY)
        try:
            ticks = b""
            async with asyncio.timeout(30):
                async for _, output in command.read_output():
                    ticks += output
                    if ticks.count(b"\n") >= 2:
                        break
            assert set(ticks.splitlines()[:2]) == {b"tick"}, ticks
        finally:
            await command.close()
        assert (await cri.container_status(ticker)).status.state == pb.CONTAINER_RUNNING

        url = await cri.port_forward(sandbox_id, [8080])
        forwarder = await connect_port_forward(url)

        async def fetch() -> bytes:
            data, error = await forwarder.open(8080)
            await data.write(b"GET / HTTP/1.0\r\n\r\n")
            response = b""
            async with asyncio.timeout(30):
                while chunk := await data.read():
                    response += chunk
                if not response:
                    await error.read()  # httpd may still be starting
            return response

        try:
            response = await wait_until(fetch, timeout=30, interval=0.2, message="httpd's answer")
            assert response.startswith(b"HTTP/1.") and response.endswith(b"contract\n")
        finally:
            await forwarder.close()
