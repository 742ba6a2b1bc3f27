"""The CRI streaming server the bundled runtimes share: exec, attach and port-forward.

CRI ``Exec``, ``Attach`` and ``PortForward`` do not carry the streams: they
return a URL of this server, ``http://ADDR/{exec,attach,portforward}/TOKEN``.
The token is random, single use and short lived (a minute, as upstream's
request cache); it stands for the request the RPC validated. The client (crictl,
the kubelet for kubectl, ``minikubelet exec``) then upgrades an HTTP connection
at that URL to one of two transports:

* **SPDY/3.1** (``Upgrade: SPDY/3.1``, ``X-Stream-Protocol-Version``): the client
  opens one stream per channel, named by its ``streamType`` header — error,
  stdin, stdout, stderr, resize — or, for port-forward
  (``portforward.k8s.io``), an error and a data stream per forwarded
  connection, paired by ``requestID``;
* **WebSocket** (``Sec-WebSocket-Protocol``): ``v5.channel.k8s.io`` or
  ``v4.channel.k8s.io``; every message starts with its channel byte, v5 adds a
  CLOSE signal. Port-forward over WebSocket (``v4.channel.k8s.io``) gives each
  ``?port=`` of the URL a data channel ``2i`` and an error channel ``2i+1``,
  each opened by the port number as two little-endian bytes.

The remotecommand exit code travels as the v4 ``metav1.Status`` on the error
channel. The process behind the streams is the backend's (:class:`StreamIO`):
when the client goes away it is closed, which kills an exec that still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers as WsHeaders
from websockets.frames import Frame, Opcode
from websockets.http11 import Request as WsRequest
from websockets.protocol import State as WsState
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from minikubelet.errors import CRIError, InvalidArgument, Unavailable
from minikubelet.streaming import channels as ch
from minikubelet.streaming import http1, spdy
from minikubelet.streaming.session import SpdySession, SpdyStream
from runtimes.base import model as m

log = logging.getLogger(__name__)

#: Loopback, any free port: as CRI-O's and containerd's defaults (stream_address, stream_port).
DEFAULT_STREAMING_ADDRESS = "127.0.0.1:0"
TOKEN_TTL = 60.0  # seconds a URL stays usable (upstream's CacheTTL)
MAX_IN_FLIGHT = 1000  # unused tokens held at once (upstream's maxInFlight)
STREAM_CREATION_TIMEOUT = 30.0  # the client's streams must all exist by then
STREAM_IDLE_TIMEOUT = 4 * 3600.0  # a session with no frame either way for this long ends
HEAD_TIMEOUT = 10.0  # the upgrade request must arrive by then

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
ACCEPTED_PROTOCOLS_HEADER = "X-Accepted-Stream-Protocol-Versions"
#: remotecommand over SPDY: v4 is the version with the status JSON (v5 is WebSocket only).
SPDY_STREAM_PROTOCOLS = (ch.STREAM_PROTOCOL_V4,)
WEBSOCKET_STREAM_PROTOCOLS = (ch.STREAM_PROTOCOL_V5, ch.STREAM_PROTOCOL_V4)
SPDY_PORT_FORWARD_PROTOCOLS = (ch.PORT_FORWARD_PROTOCOL_V1,)
WEBSOCKET_PORT_FORWARD_PROTOCOLS = (ch.STREAM_PROTOCOL_V4,)

_PATH = re.compile(r"/(exec|attach|portforward)/([A-Za-z0-9_-]{1,64})")


@dataclass
class _Request:
    """What an RPC validated, waiting for its client behind a token."""

    kind: str  # exec, attach, portforward
    target: str  # container id, or sandbox id for portforward
    cmd: tuple[str, ...] = ()
    tty: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    ports: tuple[int, ...] = ()
    expires: float = 0.0


@dataclass
class _Connection:
    writer: asyncio.StreamWriter
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class StreamingServer:
    """One listener on a TCP address; tokens in, streams out."""

    def __init__(
        self,
        backend: m.StreamingBackend,
        address: str = DEFAULT_STREAMING_ADDRESS,
        *,
        token_ttl: float = TOKEN_TTL,
        max_in_flight: int = MAX_IN_FLIGHT,
        stream_creation_timeout: float = STREAM_CREATION_TIMEOUT,
        stream_idle_timeout: float = STREAM_IDLE_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"streaming address {address!r} is not HOST:PORT")
        self._host = host.strip("[]") or "127.0.0.1"
        self._port = int(port)
        self._backend = backend
        self._ttl = token_ttl
        self._max = max_in_flight
        self._creation_timeout = stream_creation_timeout
        self._idle_timeout = stream_idle_timeout
        self._clock = clock
        self._pending: dict[str, _Request] = {}
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self.base_url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self._host, self._port)
        sock = self._server.sockets[0]
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        self.base_url = f"http://{shown}:{port}"
        log.info("streaming server on %s", self.base_url)

    async def close(self) -> None:
        """Stop listening and end every stream (their processes with them)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    @property
    def active(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    async def wait_idle(self) -> None:
        """Until no connection is being served (its process closed and reaped)."""
        await self._idle.wait()

    # -- the RPC side: tokens ------------------------------------------------------------

    def _issue(self, request: _Request) -> str:
        if not self.base_url:
            raise Unavailable("the streaming server is not running")
        now = self._clock()
        for token in [t for t, r in self._pending.items() if r.expires <= now]:
            del self._pending[token]
        if len(self._pending) >= self._max:
            raise Unavailable(f"too many streaming requests in flight ({self._max})")
        token = secrets.token_urlsafe(8)
        request.expires = now + self._ttl
        self._pending[token] = request
        return f"{self.base_url}/{request.kind}/{token}"

    def _consume(self, kind: str, token: str) -> _Request | None:
        request = self._pending.pop(token, None)
        if request is None or request.kind != kind or request.expires <= self._clock():
            return None
        return request

    async def get_exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> str:
        _check_stdio(tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        if not cmd:
            raise InvalidArgument("cmd is required")
        await self._backend.check_exec(container_id)
        return self._issue(_Request("exec", container_id, tuple(cmd), tty, stdin, stdout, stderr))

    async def get_attach(
        self, container_id: str, *, tty: bool, stdin: bool, stdout: bool, stderr: bool
    ) -> str:
        _check_stdio(tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        await self._backend.check_exec(container_id)
        return self._issue(_Request("attach", container_id, (), tty, stdin, stdout, stderr))

    async def get_port_forward(self, sandbox_id: str, ports: Sequence[int]) -> str:
        for port in ports:
            if not 0 < port < 65536:
                raise InvalidArgument(f"port {port} is not in 1..65535")
        await self._backend.check_port_forward(sandbox_id)
        return self._issue(_Request("portforward", sandbox_id, ports=tuple(ports)))

    # -- the HTTP side -------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        self._idle.clear()
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass  # the server is closing
        except Exception:
            log.exception("streaming connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)
            self._connections.discard(task)
            if not self._connections:
                self._idle.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(http1.read_head(reader), HEAD_TIMEOUT)
            method, target = head.request
        except http1.HeadError as exc:
            return await _reply(writer, 400, str(exc))
        url = urlsplit(target)
        match = _PATH.fullmatch(url.path)
        if match is None:
            return await _reply(writer, 404, f"{url.path} is not a streaming endpoint")
        if method not in ("GET", "POST"):
            return await _reply(writer, 405, f"{method} is not allowed")
        kind, token = match.groups()
        request = self._consume(kind, token)
        if request is None:
            return await _reply(writer, 404, "unknown or expired streaming token")
        upgrade = head.get("Upgrade").lower()
        if upgrade == "websocket":
            return await self._websocket(reader, writer, head, request, parse_qs(url.query))
        if upgrade == SPDY_UPGRADE.lower():
            return await self._spdy(reader, writer, head, request)
        await _reply(writer, 400, "upgrade to SPDY/3.1 or websocket required")

    def _watch_idle(self, activity: _Activity) -> _IdleWatch:
        """End this connection (cancel its task) after the idle timeout without a frame."""
        connection = asyncio.current_task()
        assert connection is not None
        return _IdleWatch(activity, self._idle_timeout, connection)

    # -- SPDY ------------------------------------------------------------------------------

    async def _spdy(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: http1.Head,
        request: _Request,
    ) -> None:
        offered = head.get_all(PROTOCOL_HEADER)
        supported = (
            SPDY_PORT_FORWARD_PROTOCOLS if request.kind == "portforward" else SPDY_STREAM_PROTOCOLS
        )
        chosen = next((p for p in offered if p in supported), None)
        if chosen is None:
            return await _reply(
                writer,
                403,
                f"none of the stream protocols {offered} is supported; "
                f"use one of {list(supported)}",
                [(ACCEPTED_PROTOCOLS_HEADER, ", ".join(supported))],
            )
        writer.write(
            http1.render(
                "HTTP/1.1 101 Switching Protocols",
                [("Connection", "Upgrade"), ("Upgrade", SPDY_UPGRADE), (PROTOCOL_HEADER, chosen)],
            )
        )
        await writer.drain()
        activity = _Activity()
        session = SpdySession(
            reader,
            writer,
            server=True,
            observer=lambda _direction, _frame: activity.touch(),
        )
        reading = asyncio.create_task(session.run(), name="spdy-reader")
        watchdog = self._watch_idle(activity)
        try:
            if request.kind == "portforward":
                await self._spdy_port_forward(session, request)
            else:
                channels = await self._spdy_channels(session, request)
                if channels is not None:
                    await self._remote_command(channels, request)
        finally:
            watchdog.cancel()
            await session.close()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _spdy_channels(self, session: SpdySession, request: _Request) -> _SpdyChannels | None:
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
            async with asyncio.timeout(self._creation_timeout):
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
        return _SpdyChannels(session, streams)

    async def _spdy_port_forward(self, session: SpdySession, request: _Request) -> None:
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
                        self._forward_spdy(
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
            for task in list(forwards):
                task.cancel()
            if forwards:
                await asyncio.gather(*forwards, return_exceptions=True)

    async def _forward_spdy(
        self, request: _Request, port_text: str, data: SpdyStream, error: SpdyStream
    ) -> None:
        try:
            port = _port(port_text)
            reader, writer = await self._backend.port_forward_connect(request.target, port)
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

    # -- WebSocket -------------------------------------------------------------------------

    async def _websocket(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: http1.Head,
        request: _Request,
        query: dict[str, list[str]],
    ) -> None:
        supported = (
            WEBSOCKET_PORT_FORWARD_PROTOCOLS
            if request.kind == "portforward"
            else WEBSOCKET_STREAM_PROTOCOLS
        )
        ws = _WebSocket(reader, writer, supported)
        if not await ws.handshake(head):
            return
        watchdog = self._watch_idle(ws.activity)
        try:
            if request.kind == "portforward":
                await self._websocket_port_forward(ws, request, query)
            else:
                channels = _WebSocketChannels(ws, request)
                try:
                    await self._remote_command(channels, request)
                finally:
                    await channels.stop_reading()
        finally:
            watchdog.cancel()
            await ws.close()

    async def _websocket_port_forward(
        self, ws: _WebSocket, request: _Request, query: dict[str, list[str]]
    ) -> None:
        try:
            ports = [_port(p) for p in query.get("port", [])] or list(request.ports)
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
                reader, writer = await self._backend.port_forward_connect(request.target, port)
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
            for task in forwards:
                task.cancel()
            await asyncio.gather(*forwards, return_exceptions=True)

    # -- remotecommand, whatever the transport -------------------------------------------

    async def _remote_command(self, channels: _Channels, request: _Request) -> None:
        try:
            if request.kind == "exec":
                io = await self._backend.exec_stream(
                    request.target, request.cmd, tty=request.tty, stdin=request.stdin
                )
            else:
                io = await self._backend.attach_stream(
                    request.target, tty=request.tty, stdin=request.stdin
                )
        except CRIError as exc:
            with contextlib.suppress(ConnectionError):
                await channels.status(ch.error_status(exc.message))
            return
        pumps: list[asyncio.Task[None]] = []
        gone = asyncio.ensure_future(channels.gone.wait())
        try:
            output = asyncio.create_task(self._pump_output(io, channels, request))
            pumps.append(output)
            if request.stdin:
                pumps.append(asyncio.create_task(_pump_stdin(io, channels)))
            if request.tty:
                pumps.append(asyncio.create_task(_pump_resize(io, channels)))
            await asyncio.wait({output, gone}, return_when="FIRST_COMPLETED")
            if output.done() and not channels.gone.is_set():
                output.result()
                await channels.end_output()
                # Output ended; the process may outlive it. The client may leave meanwhile.
                exited = asyncio.ensure_future(io.wait())
                await asyncio.wait({exited, gone}, return_when="FIRST_COMPLETED")
                if not exited.done():
                    exited.cancel()
                    return
                await channels.status(ch.exit_status(exited.result()))
                await channels.end()
        except (ConnectionError, CRIError) as exc:
            log.info("%s stream of %s ended: %s", request.kind, request.target[:13], exc)
        finally:
            gone.cancel()
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            await io.close()

    async def _pump_output(self, io: m.StreamIO, channels: _Channels, request: _Request) -> None:
        while (item := await io.read()) is not None:
            channel, data = item
            if request.tty or channel == m.STDOUT:
                if request.stdout or request.tty:
                    await channels.write(ch.STREAM_STDOUT, data)
            elif request.stderr:
                await channels.write(ch.STREAM_STDERR, data)


async def _pump_stdin(io: m.StreamIO, channels: _Channels) -> None:
    while data := await channels.stdin():
        await io.write_stdin(data)
    await io.close_stdin()


async def _pump_resize(io: m.StreamIO, channels: _Channels) -> None:
    while (size := await channels.resize()) is not None:
        await io.resize(size.width, size.height)


async def _splice(
    read: Callable[[], Any],
    write: Callable[[bytes], Any],
    close: Callable[[], Any],
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
        up.cancel()
        down.cancel()
        await asyncio.gather(up, down, return_exceptions=True)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InvalidArgument(f"invalid port {text!r}")
    return int(text)


def _check_stdio(*, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")


async def _reply(
    writer: asyncio.StreamWriter,
    status: int,
    message: str,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}
    head = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
    writer.write(
        http1.render(
            f"HTTP/1.1 {status} {reasons.get(status, 'Error')}",
            head + (headers or []),
            (message + "\n").encode(),
        )
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


# -- the channel views of both transports ------------------------------------------------


class _Activity:
    """When a frame last went either way on a connection (loop time)."""

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()


class _IdleWatch:
    """A timer re-armed from the last activity; cancels ``target`` once it runs out."""

    def __init__(self, activity: _Activity, timeout: float, target: asyncio.Task[Any]) -> None:
        self._activity = activity
        self._timeout = timeout
        self._target = target
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(timeout, self._check)

    def _check(self) -> None:
        left = self._activity.last + self._timeout - self._loop.time()
        if left > 0:
            self._handle = self._loop.call_later(left, self._check)
            return
        log.info("streaming session idle for %.0fs: closing it", self._timeout)
        self._target.cancel()

    def cancel(self) -> None:
        self._handle.cancel()


class _Channels:
    """remotecommand channels; each transport maps them onto its own frames."""

    gone: asyncio.Event

    async def stdin(self) -> bytes:
        raise NotImplementedError

    async def resize(self) -> ch.TerminalSize | None:
        raise NotImplementedError

    async def write(self, channel: int, data: bytes) -> None:
        raise NotImplementedError

    async def status(self, payload: bytes) -> None:
        raise NotImplementedError

    async def end_output(self) -> None:
        """No more output will come (the status may still)."""

    async def end(self) -> None:
        """All output and the status are written: close the channels."""
        raise NotImplementedError


class _SpdyChannels(_Channels):
    def __init__(self, session: SpdySession, streams: dict[str, SpdyStream]) -> None:
        self._session = session
        self._streams = streams
        self.gone = session.closed
        self._resize_buffer = b""

    async def stdin(self) -> bytes:
        return await self._streams[ch.STREAM_TYPE_STDIN].read()

    async def resize(self) -> ch.TerminalSize | None:
        # A JSON object per message, as Go's json.Decoder reads a stream of them.
        stream = self._streams[ch.STREAM_TYPE_RESIZE]
        decoder = _JsonStream()
        while True:
            for obj in decoder.take():
                try:
                    return ch.TerminalSize.decode(obj)
                except ch.ChannelError as exc:
                    log.info("ignoring resize: %s", exc)
            chunk = await stream.read()
            if not chunk:
                return None
            decoder.feed(chunk)

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


class _WebSocket:
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
        self.activity = _Activity()

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
            await _reply(self._writer, 400, "bad WebSocket request")
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


class _WebSocketChannels(_Channels):
    def __init__(self, ws: _WebSocket, request: _Request) -> None:
        self._ws = ws
        self.gone = ws.closed
        self._stdin: asyncio.Queue[bytes] = asyncio.Queue(64)
        self._resize: asyncio.Queue[ch.TerminalSize | None] = asyncio.Queue(64)
        self._reader = asyncio.create_task(self._read())
        self._request = request

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
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
