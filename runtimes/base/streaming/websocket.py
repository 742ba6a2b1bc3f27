"""The WebSocket transport: the upgrade, a server WebSocket, and remotecommand's channels on it.

``Sec-WebSocket-Protocol`` picks ``v5.channel.k8s.io`` or ``v4.channel.k8s.io``
(``v4`` only for port-forward). Every message starts with its channel byte; v5
adds a CLOSE signal, ``[255, channel]``, so a client can end stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from websockets.datastructures import Headers as WsHeaders
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from minikubelet.streaming import channels as ch
from minikubelet.streaming import http1
from runtimes.base import model as m
from runtimes.base.streaming.connection import Activity, cancel_and_wait, idle_timeout, reply
from runtimes.base.streaming.portforward import websocket_port_forward
from runtimes.base.streaming.remotecommand import Channels, run_remote_command
from runtimes.base.streaming.tokens import StreamRequest

log = logging.getLogger(__name__)

WEBSOCKET_STREAM_PROTOCOLS = (ch.STREAM_PROTOCOL_V5, ch.STREAM_PROTOCOL_V4)
WEBSOCKET_PORT_FORWARD_PROTOCOLS = (ch.STREAM_PROTOCOL_V4,)


async def serve_websocket(
    backend: m.StreamingBackend,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    head: http1.Head,
    request: StreamRequest,
    query: dict[str, list[str]],
    *,
    stream_idle_timeout: float,
) -> None:
    """Upgrade the connection and serve ``request`` on it until either side ends it."""
    supported = (
        WEBSOCKET_PORT_FORWARD_PROTOCOLS
        if request.kind == "portforward"
        else WEBSOCKET_STREAM_PROTOCOLS
    )
    ws = WebSocket(reader, writer, supported)
    if not await ws.handshake(head):
        return
    try:
        async with idle_timeout(ws.activity, stream_idle_timeout):
            if request.kind == "portforward":
                await websocket_port_forward(backend, ws, request, query)
            else:
                channels = WebSocketChannels(ws)
                try:
                    await run_remote_command(backend, channels, request)
                finally:
                    await channels.stop_reading()
    finally:
        await ws.close()


class WebSocket:
    """A server WebSocket over an upgraded connection, on the websockets sans-I/O protocol."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        supported: Sequence[str],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._supported = supported

        def select(_: ServerProtocol, offered: Sequence[Subprotocol]) -> Subprotocol | None:
            # The client's order, as Kubernetes negotiates. (websockets binds a plain
            # function to the protocol, so this is not a method.)
            return next((p for p in offered if p in supported), None)

        self._protocol = ServerProtocol(select_subprotocol=select, max_size=16 * 1024 * 1024)
        self._write_lock = asyncio.Lock()
        self._fragments: list[bytes] = []
        self._messages: list[bytes] = []
        self.subprotocol = ""
        self.closed = asyncio.Event()
        self.activity = Activity()

    async def _flush(self) -> None:
        async with self._write_lock:
            for data in self._protocol.data_to_send():
                if data:
                    self._writer.write(data)
                elif self._writer.can_write_eof():
                    self._writer.write_eof()  # sans-I/O's "half-close now"
            await self._writer.drain()

    async def handshake(self, head: http1.Head) -> bool:
        self._protocol.receive_data(head.raw)
        events = self._protocol.events_received()
        request = events[0] if events else None
        if not isinstance(request, WsRequest):
            await reply(self._writer, 400, "bad WebSocket request")
            return False
        response = self._protocol.accept(request)
        if response.status_code == 101 and response.headers.get("Sec-WebSocket-Protocol") is None:
            offered = WsHeaders(request.headers).get_all("Sec-WebSocket-Protocol")
            response = self._protocol.reject(
                403,
                f"none of the subprotocols {offered} is supported; "
                f"use one of {list(self._supported)}\n",
            )
        self._protocol.send_response(response)
        await self._flush()
        if response.status_code != 101:
            return False
        self.subprotocol = response.headers["Sec-WebSocket-Protocol"]
        return True

    async def recv(self) -> bytes | None:
        """The next whole message (text or binary), None once the connection closed."""
        while not self._messages:
            if self._protocol.state is WsState.CLOSED or self.closed.is_set():
                self.closed.set()
                return None
            try:
                data = await self._reader.read(64 * 1024)
            except (ConnectionError, OSError):
                data = b""
            if data:
                self.activity.touch()
                self._protocol.receive_data(data)
            else:
                self._protocol.receive_eof()
            for event in self._protocol.events_received():
                if isinstance(event, Frame):
                    self._on_frame(event)
            with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                await self._flush()  # pongs and the close handshake
            if not data or self._protocol.close_expected():
                self.closed.set()
                return self._messages.pop(0) if self._messages else None
        return self._messages.pop(0)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                self._messages.append(b"".join(self._fragments))
                self._fragments.clear()

    async def send(self, data: bytes) -> None:
        if self._protocol.state is not WsState.OPEN:
            raise ConnectionResetError("WebSocket is closed")
        self._protocol.send_binary(data)
        self.activity.touch()
        await self._flush()

    async def close(self) -> None:
        if self._protocol.state is WsState.OPEN:
            self._protocol.send_close(1000)
            with contextlib.suppress(ConnectionError, RuntimeError, OSError):
                await self._flush()
                # Give the peer a moment to answer the close, as the protocol expects.
                async with asyncio.timeout(2):
                    while await self.recv() is not None:
                        pass
        self.closed.set()


class WebSocketChannels(Channels):
    """remotecommand channels as channel-prefixed WebSocket messages."""

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        self.gone = ws.closed
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue(64)
        self._resize: asyncio.Queue[ch.TerminalSize | None] = asyncio.Queue(64)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while (message := await self._ws.recv()) is not None:
                try:
                    decoded = ch.decode(message, protocol=self._ws.subprotocol)
                except ch.ChannelError as exc:
                    log.info("ignoring WebSocket message: %s", exc)
                    continue
                if decoded.close:
                    if decoded.channel == ch.STREAM_STDIN:
                        await self._stdin.put(b"")
                elif decoded.channel == ch.STREAM_STDIN and decoded.data:
                    await self._stdin.put(decoded.data)
                elif decoded.channel == ch.STREAM_RESIZE:
                    try:
                        await self._resize.put(ch.TerminalSize.decode(decoded.data))
                    except ch.ChannelError as exc:
                        log.info("ignoring resize: %s", exc)
        finally:
            self.gone.set()
            with contextlib.suppress(asyncio.QueueFull):
                self._stdin.put_nowait(b"")
            with contextlib.suppress(asyncio.QueueFull):
                self._resize.put_nowait(None)

    async def stdin(self) -> bytes:
        return await self._stdin.get()

    async def resize(self) -> ch.TerminalSize | None:
        return await self._resize.get()

    async def write(self, channel: int, data: bytes) -> None:
        await self._ws.send(ch.encode(channel, data))

    async def status(self, payload: bytes) -> None:
        await self._ws.send(ch.encode(ch.STREAM_ERROR, payload))

    async def end(self) -> None:
        # The status is the last message; closing the WebSocket ends every channel.
        await self.stop_reading()

    async def stop_reading(self) -> None:
        await cancel_and_wait(self._reader)
