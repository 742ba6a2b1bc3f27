"""The streaming server: the RPC side hands out URLs, the HTTP side routes their connections.

CRI ``Exec``, ``Attach`` and ``PortForward`` call :meth:`StreamingServer.get_exec`
and friends, which check the request and return
``http://ADDR/{exec,attach,portforward}/TOKEN``. A connection to that URL is
routed by its path and token, then upgraded to SPDY or WebSocket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlsplit

from minikubelet.errors import InvalidArgument, Unavailable
from minikubelet.streaming import http1
from runtimes.base import model as m
from runtimes.base.streaming.connection import reply
from runtimes.base.streaming.spdy import SPDY_UPGRADE, serve_spdy
from runtimes.base.streaming.tokens import MAX_IN_FLIGHT, TOKEN_TTL, StreamRequest, TokenCache
from runtimes.base.streaming.websocket import serve_websocket

log = logging.getLogger(__name__)

#: Loopback, any free port: as CRI-O's and containerd's defaults (stream_address, stream_port).
DEFAULT_STREAMING_ADDRESS = "127.0.0.1:0"
STREAM_CREATION_TIMEOUT = 30.0  # the client's streams must all exist by then
STREAM_IDLE_TIMEOUT = 4 * 3600.0  # a session with no frame either way for this long ends
HEAD_TIMEOUT = 10.0  # the upgrade request must arrive by then

_PATH = re.compile(r"/(exec|attach|portforward)/([A-Za-z0-9_-]{1,64})")


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
        self._tokens = TokenCache(ttl=token_ttl, max_in_flight=max_in_flight, clock=clock)
        self._creation_timeout = stream_creation_timeout
        self._idle_timeout = stream_idle_timeout
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

    def _issue(self, request: StreamRequest) -> str:
        if not self.base_url:
            raise Unavailable("the streaming server is not running")
        return f"{self.base_url}/{request.kind}/{self._tokens.issue(request)}"

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
        return self._issue(
            StreamRequest("exec", container_id, tuple(cmd), tty, stdin, stdout, stderr)
        )

    async def get_attach(
        self, container_id: str, *, tty: bool, stdin: bool, stdout: bool, stderr: bool
    ) -> str:
        _check_stdio(tty=tty, stdin=stdin, stdout=stdout, stderr=stderr)
        await self._backend.check_exec(container_id)
        return self._issue(StreamRequest("attach", container_id, (), tty, stdin, stdout, stderr))

    async def get_port_forward(self, sandbox_id: str, ports: Sequence[int]) -> str:
        for port in ports:
            if not 0 < port < 65536:
                raise InvalidArgument(f"port {port} is not in 1..65535")
        await self._backend.check_port_forward(sandbox_id)
        return self._issue(StreamRequest("portforward", sandbox_id, ports=tuple(ports)))

    # -- the HTTP side -------------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A task of our own rather than the one asyncio would make of a coroutine
        # callback: that one reports a task that ends cancelled as an error (3.11).
        task = asyncio.create_task(self._connection(reader, writer), name="streaming-connection")
        self._connections.add(task)
        self._idle.clear()
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._connections.discard(task)
        if not self._connections:
            self._idle.set()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, from its request to its last frame.

        Its task is cancelled when the server closes: the connection is cleaned up
        (its process closed), then the cancellation propagates, so the task ends
        cancelled rather than as if it had finished.
        """
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("streaming connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(http1.read_head(reader), HEAD_TIMEOUT)
            method, target = head.request
        except http1.HeadError as exc:
            return await reply(writer, 400, str(exc))
        url = urlsplit(target)
        match = _PATH.fullmatch(url.path)
        if match is None:
            return await reply(writer, 404, f"{url.path} is not a streaming endpoint")
        if method not in ("GET", "POST"):
            return await reply(writer, 405, f"{method} is not allowed")
        kind, token = match.groups()
        request = self._tokens.consume(kind, token)
        if request is None:
            return await reply(writer, 404, "unknown or expired streaming token")
        upgrade = head.get("Upgrade").lower()
        if upgrade == "websocket":
            return await serve_websocket(
                self._backend,
                reader,
                writer,
                head,
                request,
                parse_qs(url.query),
                stream_idle_timeout=self._idle_timeout,
            )
        if upgrade == SPDY_UPGRADE.lower():
            return await serve_spdy(
                self._backend,
                reader,
                writer,
                head,
                request,
                stream_creation_timeout=self._creation_timeout,
                stream_idle_timeout=self._idle_timeout,
            )
        await reply(writer, 400, "upgrade to SPDY/3.1 or websocket required")


def _check_stdio(*, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> None:
    if tty and stderr:
        raise InvalidArgument("tty and stderr cannot both be true")
    if not (stdin or stdout or stderr):
        raise InvalidArgument("one of stdin, stdout, or stderr must be set")
