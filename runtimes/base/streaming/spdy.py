"""The SPDY/3.1 transport: the upgrade, the session, and remotecommand's channels as streams.

``Upgrade: SPDY/3.1`` with ``X-Stream-Protocol-Version``: the client opens one
stream per channel, named by its ``streamType`` header (error, stdin, stdout,
stderr, resize), or for port-forward (``portforward.k8s.io``) an error and a
data stream per forwarded connection.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from minikubelet.streaming import channels as ch
from minikubelet.streaming import http1, spdy
from minikubelet.streaming.session import SpdySession, SpdyStream
from runtimes.base import model as m
from runtimes.base.streaming.connection import Activity, cancel_and_wait, idle_timeout, reply
from runtimes.base.streaming.portforward import spdy_port_forward
from runtimes.base.streaming.remotecommand import Channels, run_remote_command
from runtimes.base.streaming.tokens import StreamRequest

log = logging.getLogger(__name__)

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions"
#: remotecommand over SPDY: v4 is the version with the status JSON (v5 is WebSocket only).
SPDY_STREAM_PROTOCOLS = (ch.STREAM_PROTOCOL_V4,)
SPDY_PORT_FORWARD_PROTOCOLS = (ch.PORT_FORWARD_PROTOCOL_V1,)


async def serve_spdy(
    backend: m.StreamingBackend,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    head: http1.Head,
    request: StreamRequest,
    *,
    stream_creation_timeout: float,
    stream_idle_timeout: float,
) -> None:
    """Upgrade the connection and serve ``request`` on it until either side ends it."""
    offered = head.get_all(PROTOCOL_HEADER)
    supported = (
        SPDY_PORT_FORWARD_PROTOCOLS if request.kind == "portforward" else SPDY_STREAM_PROTOCOLS
    )
    chosen = next((p for p in offered if p in supported), None)
    if chosen is None:
        return await reply(
            writer,
            403,
            f"none of the stream protocols {offered} is supported; use one of {list(supported)}",
            [(ACCEPTED_PROTOCOLS_HEADER, ", ".join(supported))],
        )
    writer.write(
        http1.render(
            "HTTP/1.1 101 Switching Protocols",
            [("Connection", "Upgrade"), ("Upgrade", SPDY_UPGRADE), (PROTOCOL_HEADER, chosen)],
        )
    )
    await writer.drain()
    activity = Activity()
    session = SpdySession(
        reader,
        writer,
        server=True,
        observer=lambda _direction, _frame: activity.touch(),
    )
    reading = asyncio.create_task(session.run(), name="spdy-reader")
    try:
        async with idle_timeout(activity, stream_idle_timeout):
            if request.kind == "portforward":
                await spdy_port_forward(backend, session, request)
            else:
                channels = await _accept_channels(session, request, stream_creation_timeout)
                if channels is not None:
                    await run_remote_command(backend, channels, request)
    finally:
        await session.close()
        await cancel_and_wait(reading)


async def _accept_channels(
    session: SpdySession, request: StreamRequest, timeout: float
) -> SpdyChannels | None:
    """The streams ``request`` needs, once the client opened them all; None if it never did."""
    wanted = {ch.STREAM_TYPE_ERROR}
    if request.stdin:
        wanted.add(ch.STREAM_TYPE_STDIN)
    if request.stdout:
        wanted.add(ch.STREAM_TYPE_STDOUT)
    if request.stderr:
        wanted.add(ch.STREAM_TYPE_STDERR)
    if request.tty:
        wanted.add(ch.STREAM_TYPE_RESIZE)
    streams: dict[str, SpdyStream] = {}
    try:
        async with asyncio.timeout(timeout):
            while not wanted <= streams.keys():
                stream = await session.accept()
                if stream is None:
                    return None  # the client went away
                kind = stream.header(ch.STREAM_TYPE_HEADER)
                if kind not in wanted or kind in streams:
                    await stream.reset_stream(spdy.RstStatus.REFUSED_STREAM)
                    continue
                streams[kind] = stream
    except TimeoutError:
        log.info("streams %s never came", sorted(wanted - streams.keys()))
        return None
    return SpdyChannels(session, streams)


class SpdyChannels(Channels):
    """remotecommand channels as the client's SPDY streams, one per channel."""

    def __init__(self, session: SpdySession, streams: dict[str, SpdyStream]) -> None:
        self._session = session
        self._streams = streams
        self.gone = session.closed
        self._resizes = _JsonStream()
        self._pending_sizes: deque[bytes] = deque()

    async def stdin(self) -> bytes:
        return await self._streams[ch.STREAM_TYPE_STDIN].read()

    async def resize(self) -> ch.TerminalSize | None:
        # A JSON object per message, as Go's json.Decoder reads a stream of them; a chunk
        # may carry several, and each one counts.
        stream = self._streams[ch.STREAM_TYPE_RESIZE]
        while True:
            while self._pending_sizes:
                try:
                    return ch.TerminalSize.decode(self._pending_sizes.popleft())
                except ch.ChannelError as exc:
                    log.info("ignoring resize: %s", exc)
            chunk = await stream.read()
            if not chunk:
                return None
            self._resizes.feed(chunk)
            self._pending_sizes.extend(self._resizes.take())

    async def write(self, channel: int, data: bytes) -> None:
        name = ch.STREAM_TYPE_STDOUT if channel == ch.STREAM_STDOUT else ch.STREAM_TYPE_STDERR
        await self._streams[name].write(data)

    async def status(self, payload: bytes) -> None:
        await self._streams[ch.STREAM_TYPE_ERROR].write(payload)

    async def end_output(self) -> None:
        for kind in (ch.STREAM_TYPE_STDOUT, ch.STREAM_TYPE_STDERR):
            if kind in self._streams:
                await self._streams[kind].close()

    async def end(self) -> None:
        for stream in self._streams.values():
            await stream.close()


class _JsonStream:
    """Splits concatenated JSON objects (no nesting beyond what resize sends)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def take(self) -> list[bytes]:
        out: list[bytes] = []
        depth, start = 0, None
        consumed = 0
        for i, byte in enumerate(self._buffer):
            if byte == ord("{"):
                if depth == 0:
                    start = i
                depth += 1
            elif byte == ord("}") and depth:
                depth -= 1
                if depth == 0 and start is not None:
                    out.append(self._buffer[start : i + 1])
                    consumed = i + 1
        self._buffer = self._buffer[consumed:]
        if len(self._buffer) > 4096:  # not JSON objects: drop it
            self._buffer = b""
        return out
