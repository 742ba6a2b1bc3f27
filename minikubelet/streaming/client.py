"""Clients of a CRI streaming URL: remotecommand (exec, attach) and port-forward.

What crictl and the kubelet do with the URL that Exec, Attach or PortForward
returned: upgrade an HTTP connection and speak the channel protocol on it.

* :func:`connect_remote_command` over ``spdy`` (SPDY/3.1, ``v4.channel.k8s.io``:
  one stream per channel, opened in the order client-go opens them: error,
  then stdin, stdout, stderr, resize) or ``websocket`` (``v5.channel.k8s.io``,
  falling back to v4; the ``websockets`` library does the framing).
* :func:`connect_port_forward`: SPDY ``portforward.k8s.io``; each forwarded
  connection is an error stream and a data stream sharing a ``requestID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

from minikubelet.streaming import channels as ch
from minikubelet.streaming import http1, spdy
from minikubelet.streaming.session import SpdySession, SpdyStream

SPDY = "spdy"
WEBSOCKET = "websocket"
TRANSPORTS = (SPDY, WEBSOCKET)
#: What this client offers over WebSocket, preferred first.
WEBSOCKET_PROTOCOLS = (ch.STREAM_PROTOCOL_V5, ch.STREAM_PROTOCOL_V4)
CONNECT_TIMEOUT = 10.0


class StreamError(ConnectionError):
    """The streaming server refused the upgrade, or the streams could not be set up."""


class RemoteCommandFailed(RuntimeError):
    """The error channel reported a failure that is not an exit code."""


async def _open(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str, str]:
    """A connection to the URL's server; also the request target and Host header."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "ws") or not parts.hostname:
        raise StreamError(f"unsupported streaming URL {url!r} (want http://HOST:PORT/...)")
    port = parts.port or 80
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, port), CONNECT_TIMEOUT
    )
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return reader, writer, target, parts.netloc


async def spdy_upgrade(
    url: str,
    protocols: tuple[str, ...],
    observer: Callable[[str, spdy.Frame], None] | None = None,
) -> tuple[SpdySession, asyncio.Task[None], str]:
    """POST ``url`` with ``Upgrade: SPDY/3.1``; the running session and the chosen protocol."""
    reader, writer, target, host = await _open(url)
    try:
        writer.write(
            http1.render(
                f"POST {target} HTTP/1.1",
                [
                    ("Host", host),
                    ("Connection", "Upgrade"),
                    ("Upgrade", "SPDY/3.1"),
                    *(("X-Stream-Protocol-Version", p) for p in protocols),
                    ("Content-Length", "0"),
                ],
            )
        )
        await writer.drain()
        head = await asyncio.wait_for(http1.read_head(reader), CONNECT_TIMEOUT)
        if head.status != 101:
            body = await _body(reader, head)
            raise StreamError(f"upgrade refused: {head.start.split(' ', 1)[1]}: {body}")
        chosen = head.get("X-Stream-Protocol-Version")
        if chosen not in protocols:
            raise StreamError(f"server chose protocol {chosen!r}, not one of {protocols}")
    except BaseException:
        writer.close()
        raise
    session = SpdySession(reader, writer, server=False, observer=observer)
    return session, asyncio.create_task(session.run(), name="spdy-client-reader"), chosen


async def _body(reader: asyncio.StreamReader, head: http1.Head) -> str:
    length = head.get("Content-Length")
    if not length.isdigit():
        return ""
    with contextlib.suppress(asyncio.IncompleteReadError, TimeoutError):
        data = await asyncio.wait_for(reader.readexactly(min(int(length), 4096)), 5)
        return data.decode(errors="replace").strip()
    return ""


class RemoteCommand:
    """A connected exec or attach: send stdin and resizes, read output, get the exit code."""

    def __init__(self, *, tty: bool, stdin: bool) -> None:
        self.tty = tty
        self.has_stdin = stdin
        self.protocol = ""
        self.output: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        # The error channel's payload; None when the connection ended without one.
        self._status: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[Any]] = []

    async def write_stdin(self, data: bytes) -> None:
        raise NotImplementedError

    async def close_stdin(self) -> None:
        raise NotImplementedError

    async def resize(self, width: int, height: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """End the connection (the server then ends what it started); idempotent."""
        await self._disconnect()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._lost()

    async def _disconnect(self) -> None:
        raise NotImplementedError

    async def read_output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(channel, data) until the server ended all output."""
        while (item := await self.output.get()) is not None:
            yield item

    async def wait(self) -> int:
        """The exit code the error channel reported (0 on success)."""
        payload = await self._status
        if payload is None:
            raise StreamError("connection closed before the exit status")
        if not payload:
            return 0
        try:
            return ch.parse_exit_status(payload)
        except ch.ChannelError:
            raise RemoteCommandFailed(_status_message(payload)) from None

    def _set_status(self, payload: bytes) -> None:
        if not self._status.done():
            self._status.set_result(payload)

    def _lost(self) -> None:
        if not self._status.done():
            self._status.set_result(None)


def _status_message(payload: bytes) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(json.loads(payload).get("message") or payload.decode(errors="replace"))
    return payload.decode(errors="replace")


class _SpdyRemoteCommand(RemoteCommand):
    def __init__(
        self,
        session: SpdySession,
        reader_task: asyncio.Task[None],
        streams: dict[str, SpdyStream],
        *,
        tty: bool,
        stdin: bool,
    ) -> None:
        super().__init__(tty=tty, stdin=stdin)
        self._session = session
        self._streams = streams
        self._tasks.append(reader_task)
        outputs = [
            streams[k] for k in (ch.STREAM_TYPE_STDOUT, ch.STREAM_TYPE_STDERR) if k in streams
        ]
        self._tasks.append(asyncio.create_task(self._collect(outputs)))
        self._tasks.append(asyncio.create_task(self._error(streams[ch.STREAM_TYPE_ERROR])))

    async def _collect(self, outputs: list[SpdyStream]) -> None:
        async def one(stream: SpdyStream) -> None:
            channel = ch.CHANNEL_BY_STREAM_TYPE[stream.header(ch.STREAM_TYPE_HEADER)]
            while data := await stream.read():
                await self.output.put((channel, data))

        await asyncio.gather(*(one(s) for s in outputs))
        await self.output.put(None)

    async def _error(self, stream: SpdyStream) -> None:
        chunks = []
        while data := await stream.read():
            chunks.append(data)
        if chunks:
            # Kubernetes' own server resets the stream right after the status: it stands.
            self._set_status(b"".join(chunks))
        elif stream.reset or self._session.closed.is_set():
            self._lost()
        else:
            self._set_status(b"")

    async def write_stdin(self, data: bytes) -> None:
        await self._streams[ch.STREAM_TYPE_STDIN].write(data)

    async def close_stdin(self) -> None:
        if ch.STREAM_TYPE_STDIN in self._streams:
            await self._streams[ch.STREAM_TYPE_STDIN].close()

    async def resize(self, width: int, height: int) -> None:
        if ch.STREAM_TYPE_RESIZE in self._streams:
            await self._streams[ch.STREAM_TYPE_RESIZE].write(
                ch.TerminalSize(width, height).encode()
            )

    async def _disconnect(self) -> None:
        await self._session.close()


class _WebSocketRemoteCommand(RemoteCommand):
    def __init__(self, ws: Any, *, tty: bool, stdin: bool) -> None:
        super().__init__(tty=tty, stdin=stdin)
        self._ws = ws
        self.protocol = str(ws.subprotocol)
        self._tasks.append(asyncio.create_task(self._read()))

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        status: bytes | None = None
        try:
            async for message in self._ws:
                if isinstance(message, str):
                    message = message.encode()
                if not message:
                    continue
                decoded = ch.decode(message, protocol=self.protocol)
                if decoded.close:
                    continue
                if decoded.channel in (ch.STREAM_STDOUT, ch.STREAM_STDERR):
                    if decoded.data:
                        await self.output.put((decoded.channel, decoded.data))
                elif decoded.channel == ch.STREAM_ERROR:
                    status = (status or b"") + decoded.data
        except ConnectionClosed:
            pass
        finally:
            await self.output.put(None)
            if status is not None:
                self._set_status(status)
            else:
                self._lost()

    async def write_stdin(self, data: bytes) -> None:
        await self._ws.send(ch.encode(ch.STREAM_STDIN, data))

    async def close_stdin(self) -> None:
        if self.protocol == ch.STREAM_PROTOCOL_V5:
            await self._ws.send(ch.encode_close(ch.STREAM_STDIN))

    async def resize(self, width: int, height: int) -> None:
        await self._ws.send(ch.encode(ch.STREAM_RESIZE, ch.TerminalSize(width, height).encode()))

    async def _disconnect(self) -> None:
        await self._ws.close()


async def connect_remote_command(
    url: str,
    *,
    stdin: bool,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    transport: str = WEBSOCKET,
    observer: Callable[[str, spdy.Frame], None] | None = None,
) -> RemoteCommand:
    """Connect to an exec or attach URL; the flags must match the CRI request's.

    ``observer`` sees every SPDY frame ("out" or "in", frame), for traces.
    """
    if transport == SPDY:
        session, reader_task, _ = await spdy_upgrade(url, (ch.STREAM_PROTOCOL_V4,), observer)
        try:
            streams: dict[str, SpdyStream] = {}
            kinds = [ch.STREAM_TYPE_ERROR]
            if stdin:
                kinds.append(ch.STREAM_TYPE_STDIN)
            if stdout:
                kinds.append(ch.STREAM_TYPE_STDOUT)
            if stderr and not tty:
                kinds.append(ch.STREAM_TYPE_STDERR)
            if tty:
                kinds.append(ch.STREAM_TYPE_RESIZE)
            for kind in kinds:
                stream = await session.open_stream(((ch.STREAM_TYPE_HEADER, kind),))
                await asyncio.wait_for(stream.replied.wait(), CONNECT_TIMEOUT)
                if stream.reset:
                    raise StreamError(f"the server refused the {kind} stream")
                streams[kind] = stream
            # client-go half-closes the error stream at once: only the server writes it.
            await streams[ch.STREAM_TYPE_ERROR].close()
        except BaseException:
            await session.close()
            reader_task.cancel()
            raise
        command: RemoteCommand = _SpdyRemoteCommand(
            session, reader_task, streams, tty=tty, stdin=stdin
        )
        command.protocol = ch.STREAM_PROTOCOL_V4
        return command
    if transport == WEBSOCKET:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus
        from websockets.typing import Subprotocol

        ws_url = "ws" + url.removeprefix("http")
        try:
            ws = await connect(
                ws_url,
                subprotocols=[
                    Subprotocol(ch.STREAM_PROTOCOL_V5),
                    Subprotocol(ch.STREAM_PROTOCOL_V4),
                ],
                open_timeout=CONNECT_TIMEOUT,
                max_size=None,
                ping_interval=None,
            )
        except InvalidStatus as exc:
            body = exc.response.body.decode(errors="replace").strip() if exc.response.body else ""
            raise StreamError(f"upgrade refused: {exc.response.status_code}: {body}") from None
        return _WebSocketRemoteCommand(ws, tty=tty, stdin=stdin)
    raise ValueError(f"transport {transport!r} is not one of {TRANSPORTS}")


class PortForwarder:
    """A SPDY ``portforward.k8s.io`` session: one stream pair per forwarded connection."""

    def __init__(self, session: SpdySession, reader_task: asyncio.Task[None]) -> None:
        self.session = session
        self._reader_task = reader_task
        self._ids = itertools.count()

    async def open(self, port: int) -> tuple[SpdyStream, SpdyStream]:
        """(data, error) streams to ``port`` in the pod; the error stream says why it failed."""
        request_id = str(next(self._ids))
        common = ((ch.PORT_HEADER, str(port)), (ch.PORT_FORWARD_REQUEST_ID_HEADER, request_id))
        error = await self.session.open_stream(
            ((ch.STREAM_TYPE_HEADER, ch.STREAM_TYPE_ERROR), *common)
        )
        await error.close()  # as kubectl: the client never writes the error stream
        data = await self.session.open_stream(
            ((ch.STREAM_TYPE_HEADER, ch.STREAM_TYPE_DATA), *common)
        )
        for stream in (error, data):
            await asyncio.wait_for(stream.replied.wait(), CONNECT_TIMEOUT)
            if stream.reset:
                raise StreamError(f"the server refused the port-forward stream for port {port}")
        return data, error

    async def close(self) -> None:
        await self.session.close()
        self._reader_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader_task


async def connect_port_forward(url: str) -> PortForwarder:
    session, reader_task, _ = await spdy_upgrade(url, (ch.PORT_FORWARD_PROTOCOL_V1,))
    return PortForwarder(session, reader_task)
