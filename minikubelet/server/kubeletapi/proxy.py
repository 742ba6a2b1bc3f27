"""The kubelet's stream proxy: an upgraded request spliced onto the runtime's streaming URL.

Since Kubernetes 1.20 a kubelet does not redirect ``exec``, ``attach`` and
``portForward`` to the runtime's streaming server: it asks the runtime for the URL
(CRI ``Exec``, ``Attach``, ``PortForward``), sends the caller's upgrade request
there itself, relays the answer, and once both sides have switched protocols copies
bytes both ways until either side closes. The kubelet never reads the SPDY or
WebSocket frames in between, so every protocol version the runtime speaks works.

Only the headers a stream negotiates with travel on (``Upgrade``, ``Connection``,
``X-Stream-Protocol-Version``, ``Sec-WebSocket-Key``, ``-Version`` and
``-Protocol``): the caller's credentials stop at the kubelet. A backend that does
not switch protocols has its answer (status and body) relayed as it is, which is how
a client learns which protocol versions it offers. When either side goes, the other is
closed: the runtime's streaming server then ends the exec'd process. A stream quiet
for ``idle_timeout`` seconds in both directions is closed as well (the kubelet's
``--streaming-connection-idle-timeout``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from aiohttp import web
from multidict import CIMultiDict

log = logging.getLogger(__name__)

#: Request headers a stream's negotiation needs; nothing else reaches the runtime.
FORWARDED_HEADERS: Final = (
    "Connection",
    "Upgrade",
    "X-Stream-Protocol-Version",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
    "Sec-WebSocket-Protocol",
)
#: Response headers of the runtime's 101 that go back to the caller.
RELAYED_HEADERS: Final = (
    "Connection",
    "Upgrade",
    "X-Stream-Protocol-Version",
    "X-Accepted-Stream-Protocol-Versions",
    "Sec-WebSocket-Accept",
    "Sec-WebSocket-Protocol",
)
#: The kubelet's default ``--streaming-connection-idle-timeout`` (4 h).
DEFAULT_IDLE_TIMEOUT: Final = 4 * 3600.0
CONNECT_TIMEOUT: Final = 10.0
HEAD_LIMIT: Final = 64 * 1024
BODY_LIMIT: Final = 64 * 1024
CHUNK: Final = 64 * 1024
#: Pause reading the caller when this much waits to go to the runtime.
HIGH_WATER: Final = 256 * 1024


class BackendError(Exception):
    """The runtime's streaming server could not be reached or answered nonsense."""


class _Inbound:
    """What the caller sends once upgraded, as aiohttp's protocol hands it to a parser
    (``feed_data``/``feed_eof``): queued for the pump, with reading paused while the
    runtime lags behind."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._queued = 0
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self._chunks.put_nowait(bytes(data))
            self._queued += len(data)
            if self._queued > HIGH_WATER and not self._paused:
                self._paused = True
                with contextlib.suppress(Exception):
                    self._transport.pause_reading()
        return False, b""

    def feed_eof(self) -> None:
        self._chunks.put_nowait(None)

    async def get(self) -> bytes | None:
        chunk = await self._chunks.get()
        if chunk is not None:
            self._queued -= len(chunk)
            if self._paused and self._queued <= HIGH_WATER // 2:
                self._paused = False
                with contextlib.suppress(Exception):
                    self._transport.resume_reading()
        return chunk


def _backend_address(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise BackendError(f"the runtime's streaming URL {url!r} is not an http:// URL")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 80, path


def _request_head(request: web.BaseRequest, host: str, port: int, path: str) -> bytes:
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    for name in FORWARDED_HEADERS:
        for value in request.headers.getall(name, ()):
            if "\r" in value or "\n" in value:
                continue
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(raw: bytes) -> tuple[int, str, CIMultiDict[str]]:
    text = raw.decode("latin-1")
    status_line, _, rest = text.partition("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BackendError(f"the runtime's streaming server answered {status_line[:80]!r}")
    headers: CIMultiDict[str] = CIMultiDict()
    for line in rest.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.add(name.strip(), value.strip())
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


async def _read_body(reader: asyncio.StreamReader, headers: CIMultiDict[str]) -> bytes:
    length = headers.get("Content-Length")
    if length is not None and length.isdigit():
        return await reader.readexactly(min(int(length), BODY_LIMIT))
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = b""
        while len(body) < BODY_LIMIT:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return body[:BODY_LIMIT]
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        return await reader.read(BODY_LIMIT)
    return b""


def _pick(headers: CIMultiDict[str], names: Iterable[str]) -> CIMultiDict[str]:
    picked: CIMultiDict[str] = CIMultiDict()
    for name in names:
        for value in headers.getall(name, ()):
            picked.add(name, value)
    return picked


async def proxy_stream(
    request: web.Request, url: str, *, idle_timeout: float = DEFAULT_IDLE_TIMEOUT
) -> web.StreamResponse:
    """Send ``request`` on to ``url`` (the runtime's streaming URL) and splice the two
    connections once the runtime switches protocols; otherwise relay its answer."""
    host, port, path = _backend_address(url)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=HEAD_LIMIT), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        raise BackendError(f"the runtime's streaming server at {host}:{port}: {exc}") from None
    try:
        writer.write(_request_head(request, host, port, path))
        await writer.drain()
        try:
            raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
            raise BackendError(
                f"the runtime's streaming server gave no answer: {type(exc).__name__}"
            ) from None
        status, reason, headers = _parse_head(raw[:-4])
        if status != 101:
            body = await _read_body(reader, headers)
            answer = web.Response(status=status, reason=reason or None, body=body)
            if "Content-Type" in headers:
                answer.headers["Content-Type"] = headers["Content-Type"]
            answer.headers.extend(
                _pick(headers, ("X-Accepted-Stream-Protocol-Versions", "Sec-WebSocket-Protocol"))
            )
            return answer
        log.debug(
            "%s %s: the runtime at %s:%d switched protocols (%s); splicing",
            request.method,
            request.path,
            host,
            port,
            headers.get("Upgrade", "?"),
        )
        return await _splice(request, _pick(headers, RELAYED_HEADERS), reader, writer, idle_timeout)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _splice(
    request: web.Request,
    headers: CIMultiDict[str],
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    idle_timeout: float,
) -> web.StreamResponse:
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ConnectionResetError("the caller went away")
    response = web.StreamResponse(status=101, headers=headers)
    response.force_close()
    await response.prepare(request)
    inbound = _Inbound(transport)
    request.protocol.set_parser(inbound)  # type: ignore[arg-type]
    last = asyncio.get_running_loop().time()
    sent = received = 0

    async def upstream() -> None:  # the caller -> the runtime
        nonlocal last, sent
        while (chunk := await inbound.get()) is not None:
            last = asyncio.get_running_loop().time()
            sent += len(chunk)
            writer.write(chunk)
            await writer.drain()

    async def downstream() -> None:  # the runtime -> the caller
        nonlocal last, received
        protocol = request.protocol
        while chunk := await reader.read(CHUNK):
            last = asyncio.get_running_loop().time()
            received += len(chunk)
            if transport.is_closing():
                return
            transport.write(chunk)
            if transport.get_write_buffer_size() > HIGH_WATER:
                await protocol._drain_helper()

    async def watchdog() -> None:
        loop = asyncio.get_running_loop()
        while True:
            quiet = loop.time() - last
            if quiet >= idle_timeout:
                log.info("closing a stream idle for %.0f s", quiet)
                return
            await asyncio.sleep(min(idle_timeout - quiet, 60.0))

    tasks = [
        asyncio.create_task(upstream(), name="stream-upstream"),
        asyncio.create_task(downstream(), name="stream-downstream"),
        asyncio.create_task(watchdog(), name="stream-idle"),
    ]
    try:
        # The stream ends when the runtime closes (its status was sent), the caller
        # goes (over TLS the end of its input is the end of its connection), or it
        # idles: whichever comes first.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            transport.close()
        log.debug(
            "%s %s: stream closed (%d bytes to the runtime, %d back)",
            request.method,
            request.path,
            sent,
            received,
        )
    return response


__all__ = ("DEFAULT_IDLE_TIMEOUT", "BackendError", "proxy_stream")
