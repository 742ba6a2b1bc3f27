"""Port-forward over either transport: client streams spliced to TCP connections in the pod.

Over SPDY (``portforward.k8s.io``) the client opens an error and a data stream
per forwarded connection, paired by ``requestID``; one session carries them
all. Over WebSocket (``v4.channel.k8s.io``) each ``?port=`` of the URL gets a
data channel ``2i`` and an error channel ``2i+1``, each opened by the port
number as two little-endian bytes. A port that refuses is reported on its
error stream or channel and leaves the other connections alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from minikubelet.errors import CRIError, InvalidArgument
from minikubelet.streaming import channels as ch
from minikubelet.streaming import spdy
from minikubelet.streaming.session import SpdySession, SpdyStream
from runtimes.base import model as m
from runtimes.base.streaming.connection import cancel_and_wait
from runtimes.base.streaming.tokens import StreamRequest

if TYPE_CHECKING:
    from runtimes.base.streaming.websocket import WebSocket


async def spdy_port_forward(
    backend: m.StreamingBackend, session: SpdySession, request: StreamRequest
) -> None:
    """Forward every stream pair the client opens until the session ends."""
    pairs: dict[str, dict[str, SpdyStream]] = {}
    forwards: set[asyncio.Task[None]] = set()
    try:
        while (stream := await session.accept()) is not None:
            kind = stream.header(ch.STREAM_TYPE_HEADER)
            request_id = stream.header(ch.PORT_FORWARD_REQUEST_ID_HEADER)
            port_text = stream.header(ch.PORT_HEADER)
            if kind not in (ch.STREAM_TYPE_ERROR, ch.STREAM_TYPE_DATA) or not port_text:
                await stream.reset_stream(spdy.RstStatus.REFUSED_STREAM)
                continue
            pair = pairs.setdefault(request_id, {})
            if kind in pair:
                await stream.reset_stream(spdy.RstStatus.STREAM_IN_USE)
                continue
            pair[kind] = stream
            if len(pair) == 2:
                del pairs[request_id]
                task = asyncio.create_task(
                    _forward_spdy(
                        backend,
                        request,
                        port_text,
                        pair[ch.STREAM_TYPE_DATA],
                        pair[ch.STREAM_TYPE_ERROR],
                    ),
                    name=f"port-forward-{port_text}",
                )
                forwards.add(task)
                task.add_done_callback(forwards.discard)
    finally:
        await cancel_and_wait(*forwards)


async def _forward_spdy(
    backend: m.StreamingBackend,
    request: StreamRequest,
    port_text: str,
    data: SpdyStream,
    error: SpdyStream,
) -> None:
    try:
        port = parse_port(port_text)
        reader, writer = await backend.port_forward_connect(request.target, port)
    except CRIError as exc:
        message = f"error forwarding port {port_text} to pod {request.target}: {exc.message}"
        with contextlib.suppress(ConnectionError):
            await error.write(message.encode())
            await error.close()
            await data.close()
        return
    try:
        await _splice(data.read, data.write, data.close, reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await error.close()
            await data.close()


async def websocket_port_forward(
    backend: m.StreamingBackend,
    ws: WebSocket,
    request: StreamRequest,
    query: dict[str, list[str]],
) -> None:
    """Forward the URL's ports (or the RPC's) over channel pairs until the WebSocket closes."""
    try:
        ports = [parse_port(p) for p in query.get("port", [])] or list(request.ports)
    except CRIError as exc:
        await ws.send(ch.encode(1, exc.message.encode()))
        return
    if not ports:
        await ws.send(ch.encode(1, b'query parameter "port" is required'))
        return
    inboxes: list[asyncio.Queue[bytes | None]] = []
    for i, port in enumerate(ports):
        inboxes.append(asyncio.Queue(64))
        prefix = struct.pack("<H", port)  # each channel opens with its port number
        await ws.send(ch.encode(2 * i, prefix))
        await ws.send(ch.encode(2 * i + 1, prefix))

    async def one(i: int, port: int) -> None:
        try:
            reader, writer = await backend.port_forward_connect(request.target, port)
        except CRIError as exc:
            message = f"error forwarding port {port} to pod {request.target}: {exc.message}"
            await ws.send(ch.encode(2 * i + 1, message.encode()))
            return

        async def read() -> bytes:
            chunk = await inboxes[i].get()
            return chunk or b""

        async def write(chunk: bytes) -> None:
            await ws.send(ch.encode(2 * i, chunk))

        async def done() -> None:
            return None

        try:
            await _splice(read, write, done, reader, writer)
        finally:
            writer.close()

    forwards = [asyncio.create_task(one(i, p)) for i, p in enumerate(ports)]
    try:
        while (message := await ws.recv()) is not None:
            if not message:
                continue
            channel = message[0]
            if channel % 2 == 0 and channel // 2 < len(inboxes):
                await inboxes[channel // 2].put(message[1:])
        for inbox in inboxes:
            with contextlib.suppress(asyncio.QueueFull):
                inbox.put_nowait(None)
    finally:
        await cancel_and_wait(*forwards)


async def _splice(
    read: Callable[[], Awaitable[bytes]],
    write: Callable[[bytes], Awaitable[None]],
    close: Callable[[], Awaitable[None]],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Copy client->TCP and TCP->client until both directions ended."""

    async def upstream() -> None:
        while chunk := await read():
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    async def downstream() -> None:
        while chunk := await reader.read(32 * 1024):
            await write(chunk)
        await close()

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        await asyncio.gather(up, down)
    except (ConnectionError, OSError):
        pass
    finally:
        await cancel_and_wait(up, down)


def parse_port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"invalid port {text!r}")
    return int(text)
