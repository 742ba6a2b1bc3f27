"""The CRI streaming server's protocol: tokens, upgrades, channels, teardown.

The server runs over host processes (tests/harness/localstream.py) so these
tests are about the wire: WebSocket with the `websockets` library as an
independent client, SPDY with our own client and with raw frames. The real
runtimes behind the same server are exercised in tests/e2e/test_streaming.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import threading
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from minikubelet.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from minikubelet.streaming import channels as ch
from minikubelet.streaming import spdy
from minikubelet.streaming.client import (
    SPDY,
    WEBSOCKET,
    StreamError,
    connect_port_forward,
    connect_remote_command,
)
from runtimes.base.streaming import StreamingServer
from runtimes.base.streaming.connection import cancel_and_wait
from tests.harness.localstream import LocalBackend


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Server = tuple[StreamingServer, LocalBackend, Clock]


def protocols(*names: str) -> list[Subprotocol]:
    return [Subprotocol(name) for name in names]


async def messages(ws: ClientConnection) -> list[bytes]:
    """Every (binary) message until the server closes."""
    return [m if isinstance(m, bytes) else m.encode() async for m in ws]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    backend = LocalBackend()
    clock = Clock()
    srv = StreamingServer(backend, clock=clock, stream_creation_timeout=2)
    await srv.start()
    try:
        yield srv, backend, clock
    finally:
        await srv.close()
        for io in backend.ios:
            await io.close()


async def exec_url(srv: StreamingServer, cmd: list[str], **flags: bool) -> str:
    opts = {"tty": False, "stdin": False, "stdout": True, "stderr": True} | flags
    return await srv.get_exec("running", cmd, **opts)


def ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http")


async def collect(command: object) -> tuple[bytes, bytes]:
    out, err = b"", b""
    async for channel, data in command.read_output():  # type: ignore[attr-defined]
        if channel == ch.STREAM_STDOUT:
            out += data
        else:
            err += data
    return out, err


# -- tokens --------------------------------------------------------------------------------


async def test_urls_name_the_kind_and_a_fresh_token(server: Server) -> None:
    srv, _, _ = server
    a = await exec_url(srv, ["true"])
    b = await exec_url(srv, ["true"])
    assert a.startswith(f"{srv.base_url}/exec/") and b.startswith(f"{srv.base_url}/exec/")
    assert a != b
    attach = await srv.get_attach("running", tty=False, stdin=True, stdout=True, stderr=True)
    forward = await srv.get_port_forward("pod", [80])
    assert "/attach/" in attach and "/portforward/" in forward


async def test_bad_requests_fail_in_the_rpc_not_on_the_stream(server: Server) -> None:
    srv, _, _ = server
    with pytest.raises(InvalidArgument, match="tty and stderr"):
        await exec_url(srv, ["sh"], tty=True)
    with pytest.raises(InvalidArgument, match="one of stdin, stdout, or stderr"):
        await exec_url(srv, ["sh"], stdout=False, stderr=False)
    with pytest.raises(InvalidArgument, match="cmd"):
        await exec_url(srv, [])
    with pytest.raises(FailedPrecondition):
        await srv.get_exec("stopped", ["sh"], tty=False, stdin=False, stdout=True, stderr=False)
    with pytest.raises(NotFound):
        await srv.get_attach("nope", tty=False, stdin=False, stdout=True, stderr=False)
    with pytest.raises(InvalidArgument, match="port 0"):
        await srv.get_port_forward("pod", [0])


async def test_a_token_serves_one_connection_only(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["echo", "once"])
    command = await connect_remote_command(url, stdin=False, transport=WEBSOCKET)
    assert await collect(command) == (b"once\n", b"")
    assert await command.wait() == 0
    await command.close()
    with pytest.raises(StreamError, match="404"):
        await connect_remote_command(url, stdin=False, transport=WEBSOCKET)
    with pytest.raises(StreamError, match="404"):
        await connect_remote_command(url, stdin=False, transport=SPDY)


async def test_a_token_expires_after_a_minute(server: Server) -> None:
    srv, _, clock = server
    url = await exec_url(srv, ["echo", "late"])
    clock.now += 61
    with pytest.raises(StreamError, match="unknown or expired"):
        await connect_remote_command(url, stdin=False, transport=SPDY)


async def test_tokens_in_flight_are_capped(server: Server) -> None:
    _, _, clock = server
    small = StreamingServer(LocalBackend(), max_in_flight=3, clock=clock)
    await small.start()
    try:
        for _ in range(3):
            await exec_url(small, ["true"])
        with pytest.raises(Unavailable, match="too many"):
            await exec_url(small, ["true"])
        clock.now += 61  # expired ones make room again
        await exec_url(small, ["true"])
    finally:
        await small.close()


async def test_plain_http_and_unknown_paths_get_http_errors(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["true"])
    path = url.removeprefix(srv.base_url)
    for request, status in (
        (f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
        ("GET /exec/unknowntoken HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        ("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        ("garbage\r\n\r\n", b"400"),
    ):
        host, port = srv.base_url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request.encode())
        line = await reader.readline()
        writer.close()
        assert line.split()[1] == status, (request, line)


# -- remotecommand over WebSocket, with an independent client -----------------------------


async def test_websocket_v5_exec_channels_and_exit_code(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    frames: list[bytes] = []
    async with ws_connect(
        ws_url(url), subprotocols=protocols("v5.channel.k8s.io", "v4.channel.k8s.io")
    ) as ws:
        assert ws.subprotocol == "v5.channel.k8s.io"
        async for message in ws:
            assert isinstance(message, bytes)
            frames.append(message)
    stdout = b"".join(f[1:] for f in frames if f[0] == 1)
    stderr = b"".join(f[1:] for f in frames if f[0] == 2)
    status = [f[1:] for f in frames if f[0] == 3]
    assert (stdout, stderr) == (b"out\n", b"err\n")
    assert len(status) == 1
    assert json.loads(status[0]) == {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code: exit status 7",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "7"}]},
    }
    assert frames[-1][0] == 3  # the status comes last


async def test_websocket_v5_stdin_and_close_signal(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["cat"], stdin=True)
    async with ws_connect(ws_url(url), subprotocols=protocols("v5.channel.k8s.io")) as ws:
        await ws.send(b"\x00hello ")
        await ws.send(b"\x00world")
        await ws.send(b"\xff\x00")  # CLOSE stdin: cat sees EOF and exits
        got = await messages(ws)
    assert b"".join(m[1:] for m in got if m[0] == 1) == b"hello world"
    assert got[-1] == b'\x03{"metadata":{},"status":"Success"}'


async def test_websocket_v4_is_still_served(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["echo", "four"])
    async with ws_connect(ws_url(url), subprotocols=protocols("v4.channel.k8s.io")) as ws:
        assert ws.subprotocol == "v4.channel.k8s.io"
        got = await messages(ws)
    assert b"\x01four\n" in got


async def test_websocket_without_a_known_subprotocol_is_refused(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["true"])
    with pytest.raises(InvalidStatus) as info:
        async with ws_connect(ws_url(url), subprotocols=protocols("chat")):
            pass
    assert info.value.response.status_code == 403


async def test_websocket_tty_resize_reaches_the_terminal(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["sh"], tty=True, stdin=True, stderr=False)
    command = await connect_remote_command(url, stdin=True, tty=True, transport=WEBSOCKET)
    await command.resize(123, 45)
    await command.write_stdin(b"stty size; exit 4\n")
    out, _ = await asyncio.wait_for(collect(command), 10)
    assert b"45 123" in out
    assert await command.wait() == 4
    await command.close()


# -- remotecommand over SPDY ---------------------------------------------------------------


async def test_spdy_exec_output_stdin_and_exit_code(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["sh", "-c", "cat; echo done >&2; exit 3"], stdin=True)
    command = await connect_remote_command(url, stdin=True, transport=SPDY)
    assert command.protocol == "v4.channel.k8s.io"
    await command.write_stdin(b"x" * 100_000)  # several frames
    await command.close_stdin()
    out, err = await asyncio.wait_for(collect(command), 10)
    assert (len(out), err) == (100_000, b"done\n")
    assert await command.wait() == 3
    await command.close()


async def test_spdy_tty_resize(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["sh"], tty=True, stdin=True, stderr=False)
    command = await connect_remote_command(url, stdin=True, tty=True, transport=SPDY)
    await command.resize(80, 24)
    await command.resize(100, 30)
    await command.write_stdin(b"stty size; exit 0\n")
    out, _ = await asyncio.wait_for(collect(command), 10)
    assert b"30 100" in out
    assert await command.wait() == 0
    await command.close()


async def test_spdy_upgrade_without_a_common_protocol_is_refused(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["true"])
    _, writer, head = await spdy_upgrade(srv, url, "v1.channel.k8s.io")
    writer.close()
    assert head.startswith("HTTP/1.1 403")
    assert "X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io" in head


async def spdy_upgrade(
    srv: StreamingServer, url: str, *protocols: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    """A raw connection upgraded to SPDY at ``url``, and the server's response head."""
    host, port = srv.base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    versions = "".join(f"X-Stream-Protocol-Version: {p}\r\n" for p in protocols)
    writer.write(
        f"POST {url.removeprefix(srv.base_url)} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
        f"Upgrade: SPDY/3.1\r\n{versions}\r\n".encode()
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode()
    return reader, writer, head


async def frames_until(
    reader: asyncio.StreamReader, parser: spdy.FrameReader, done: type[spdy.Frame]
) -> list[spdy.Frame]:
    """Frames from the server up to and including the first ``done`` frame (or EOF)."""
    frames: list[spdy.Frame] = []
    while not any(isinstance(f, done) for f in frames):
        data = await asyncio.wait_for(reader.read(65536), 10)
        if not data:
            break
        frames += parser.feed(data)
    return frames


async def test_spdy_frames_on_the_wire(server: Server) -> None:
    """Raw frames, as client-go sends them, and the server's answers byte by byte."""
    srv, _, _ = server
    url = await exec_url(srv, ["echo", "raw"], stderr=False)
    reader, writer, head = await spdy_upgrade(srv, url, "v4.channel.k8s.io", "v3.channel.k8s.io")
    assert head.startswith("HTTP/1.1 101 Switching Protocols\r\n")
    assert "Upgrade: SPDY/3.1" in head and "X-Stream-Protocol-Version: v4.channel.k8s.io" in head
    out = spdy.FrameWriter()
    # SYN_STREAM stream 1 (error), then 3 (stdout); header names lowercase on the wire.
    syn1 = out.write(spdy.SynStream(1, (("streamType", "error"),)))
    assert syn1[:4] == b"\x80\x03\x00\x01"  # control bit, version 3, type 1
    writer.write(syn1)
    writer.write(out.write(spdy.SynStream(3, (("streamType", "stdout"),))))
    await writer.drain()
    frames = await frames_until(reader, spdy.FrameReader(), spdy.GoAway)
    writer.close()
    replies = [f for f in frames if isinstance(f, spdy.SynReply)]
    assert [r.stream_id for r in replies] == [1, 3]
    stdout = b"".join(f.data for f in frames if isinstance(f, spdy.DataFrame) and f.stream_id == 3)
    error = b"".join(f.data for f in frames if isinstance(f, spdy.DataFrame) and f.stream_id == 1)
    assert stdout == b"raw\n"
    assert error == b'{"metadata":{},"status":"Success"}'
    fins = {f.stream_id for f in frames if isinstance(f, spdy.DataFrame) and f.fin}
    assert fins == {1, 3}
    goaway = [f for f in frames if isinstance(f, spdy.GoAway)]
    assert goaway == [spdy.GoAway(3, spdy.GoAwayStatus.OK)]


async def test_spdy_ping_is_answered(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["sleep", "5"])
    command = await connect_remote_command(url, stdin=False, transport=SPDY)
    session = command._session  # type: ignore[attr-defined]
    await session.ping(timeout=5)
    await command.close()


async def test_spdy_server_stream_ids_from_the_client_are_refused(server: Server) -> None:
    """Client streams have odd ids, each above the last: anything else is RST_STREAM
    PROTOCOL_ERROR (SPDY/3.1, as spdystream answers), and the session goes on."""
    srv, _, _ = server
    url = await exec_url(srv, ["echo", "still here"], stderr=False)
    reader, writer, head = await spdy_upgrade(srv, url, "v4.channel.k8s.io")
    assert head.startswith("HTTP/1.1 101 ")
    out, parser = spdy.FrameWriter(), spdy.FrameReader()

    async def answer_to(frame: spdy.Frame) -> spdy.Frame:
        # A PING after the frame: everything the server says about it comes before the echo.
        writer.write(out.write(frame) + out.write(spdy.Ping(101)))
        await writer.drain()
        frames = await frames_until(reader, parser, spdy.Ping)
        assert frames[-1] == spdy.Ping(101)
        assert len(frames) == 2, frames
        return frames[0]

    refused = spdy.RstStatus.PROTOCOL_ERROR
    assert await answer_to(spdy.SynStream(2, (("streamType", "error"),))) == spdy.RstStream(
        2, refused
    )
    assert await answer_to(spdy.SynStream(3, (("streamType", "error"),))) == spdy.SynReply(3)
    # Not above the last client id: refused too, even though it is odd.
    assert await answer_to(spdy.SynStream(1, (("streamType", "stdout"),))) == spdy.RstStream(
        1, refused
    )
    # The session is still usable: the exec runs once its streams exist.
    writer.write(out.write(spdy.SynStream(5, (("streamType", "stdout"),))))
    await writer.drain()
    frames = await frames_until(reader, parser, spdy.GoAway)
    writer.close()
    assert spdy.SynReply(5) in frames
    stdout = b"".join(f.data for f in frames if isinstance(f, spdy.DataFrame) and f.stream_id == 5)
    error = b"".join(f.data for f in frames if isinstance(f, spdy.DataFrame) and f.stream_id == 3)
    assert stdout == b"still here\n"
    assert error == b'{"metadata":{},"status":"Success"}'
    assert frames[-1] == spdy.GoAway(5, spdy.GoAwayStatus.OK)


# -- port-forward ----------------------------------------------------------------------------


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the pod\n")
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1]
    finally:
        srv.close()


async def test_spdy_port_forward_carries_both_directions(server: Server, echo_port: int) -> None:
    srv, _, _ = server
    forwarder = await connect_port_forward(await srv.get_port_forward("pod", [echo_port]))
    try:
        for _ in range(2):  # two connections over one session, paired by requestID
            data, error = await forwarder.open(echo_port)
            assert await data.read() == b"hello from the pod\n"
            await data.write(b"shout")
            assert await data.read() == b"SHOUT"
            await data.close()
            assert await data.read() == b""  # the pod side closed too
            assert await error.read() == b""
    finally:
        await forwarder.close()


async def test_spdy_port_forward_to_a_closed_port_says_why(server: Server) -> None:
    srv, _, _ = server
    forwarder = await connect_port_forward(await srv.get_port_forward("pod", []))
    try:
        data, error = await forwarder.open(1)
        message = await error.read()
        assert message.startswith(b"error forwarding port 1 to pod pod: ")
        assert b"refused" in message
        assert await data.read() == b""
    finally:
        await forwarder.close()


async def test_websocket_port_forward_channels(server: Server, echo_port: int) -> None:
    srv, _, _ = server
    url = await srv.get_port_forward("pod", [echo_port])
    async with ws_connect(
        ws_url(url) + f"?port={echo_port}",
        subprotocols=protocols("v4.channel.k8s.io"),
    ) as ws:
        prefix = struct.pack("<H", echo_port)
        assert await ws.recv() == b"\x00" + prefix  # data channel, opened by its port
        assert await ws.recv() == b"\x01" + prefix  # error channel
        assert await ws.recv() == b"\x00hello from the pod\n"
        await ws.send(b"\x00abc")
        assert await ws.recv() == b"\x00ABC"


# -- teardown -------------------------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_abandoned_streams_leave_nothing_behind(server: Server) -> None:
    srv, backend, _ = server
    before_fds, before_threads = fd_count(), threading.active_count()
    commands = []
    for i in range(100):
        url = await exec_url(srv, ["sleep", "600"], stdin=i % 2 == 0)
        transport = SPDY if i % 2 else WEBSOCKET
        commands.append(await connect_remote_command(url, stdin=i % 2 == 0, transport=transport))
    for command in commands:
        await command.close()  # walk away without waiting for an exit
    async with asyncio.timeout(30):
        await srv.wait_idle()
    assert all(io.closed for io in backend.ios)
    assert len(backend.ios) == 100
    assert all(io.proc.returncode is not None for io in backend.ios)  # killed, reaped
    assert fd_count() <= before_fds
    assert threading.active_count() <= before_threads


async def test_a_process_that_closed_its_output_is_killed_when_the_client_leaves(
    server: Server,
) -> None:
    srv, backend, _ = server
    url = await exec_url(srv, ["sh", "-c", "exec >&- 2>&-; sleep 600"])
    command = await connect_remote_command(url, stdin=False, transport=SPDY)
    assert await collect(command) == (b"", b"")  # all output ended, the process did not
    await command.close()
    async with asyncio.timeout(10):
        await srv.wait_idle()
    assert backend.ios[-1].closed and backend.ios[-1].proc.returncode == -9


@pytest.mark.parametrize("transport", [SPDY, WEBSOCKET])
async def test_an_idle_session_is_closed_and_its_process_killed(transport: str) -> None:
    backend = LocalBackend()
    srv = StreamingServer(backend, stream_idle_timeout=0.5)
    await srv.start()
    try:
        ticking = "for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done"
        busy = await exec_url(srv, ["sh", "-c", ticking])
        command = await connect_remote_command(busy, stdin=False, transport=transport)
        out, _ = await asyncio.wait_for(collect(command), 10)
        assert out == b"1\n2\n3\n4\n5\n6\n"  # 1.2 s in all, never 0.5 s without a frame
        assert await command.wait() == 0
        await command.close()

        idle = await exec_url(srv, ["sleep", "600"])
        command = await connect_remote_command(idle, stdin=False, transport=transport)
        await asyncio.wait_for(collect(command), 10)  # the server ended the session
        with pytest.raises(StreamError, match="before the exit status"):
            await command.wait()
        await command.close()
        async with asyncio.timeout(10):
            await srv.wait_idle()
        assert backend.ios[-1].closed and backend.ios[-1].proc.returncode == -9
    finally:
        await srv.close()
        for io in backend.ios:
            await io.close()


@pytest.mark.parametrize("transport", [SPDY, WEBSOCKET])
async def test_a_cancelled_connection_cleans_up_and_ends_cancelled(
    server: Server, transport: str
) -> None:
    srv, backend, _ = server
    url = await exec_url(srv, ["sh", "-c", "echo started; exec sleep 600"])
    command = await connect_remote_command(url, stdin=False, transport=transport)
    output = command.read_output()
    assert await anext(output) == (ch.STREAM_STDOUT, b"started\n")  # the exec runs
    (connection,) = srv._connections
    connection.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connection
    assert connection.cancelled()
    assert backend.ios[-1].closed and backend.ios[-1].proc.returncode == -9
    assert srv.active == 0
    assert [chunk async for chunk in output] == []  # the client sees the session end
    await command.close()


async def test_waiting_for_cancelled_tasks_keeps_the_waiters_own_cancellation() -> None:
    started, cancelled, release = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def slow_to_end() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
            await release.wait()  # a cleanup that takes its time

    child = asyncio.create_task(slow_to_end())
    await started.wait()
    waiter = asyncio.create_task(cancel_and_wait(child))
    await cancelled.wait()  # the waiter cancelled the child and now waits for it to end
    waiter.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert waiter.cancelled() and child.cancelled()


async def test_malformed_resize_messages_are_ignored_and_later_ones_apply(server: Server) -> None:
    srv, _, _ = server
    url = await exec_url(srv, ["sh"], tty=True, stdin=True, stderr=False)
    async with ws_connect(ws_url(url), subprotocols=protocols("v5.channel.k8s.io")) as ws:
        await ws.send(b"\x04not json")
        await ws.send(b'\x04{"Width":-3,"Height":2}')
        await ws.send(b'\x04{"Width":70,"Height":20}')
        await ws.send(b"\x00stty size; exit 0\n")
        got = await asyncio.wait_for(messages(ws), 10)
    assert b"20 70" in b"".join(m[1:] for m in got if m[0] == 1)
    assert got[-1] == b'\x03{"metadata":{},"status":"Success"}'

    url = await exec_url(srv, ["sh"], tty=True, stdin=True, stderr=False)
    command = await connect_remote_command(url, stdin=True, tty=True, transport=SPDY)
    resize = command._streams[ch.STREAM_TYPE_RESIZE]  # type: ignore[attr-defined]
    await resize.write(b"{garbage}")
    await command.resize(66, 22)
    await command.write_stdin(b"stty size; exit 0\n")
    out, _ = await asyncio.wait_for(collect(command), 10)
    assert b"22 66" in out
    assert await command.wait() == 0
    await command.close()
