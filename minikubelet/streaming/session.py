"""A SPDY/3.1 session over an asyncio stream pair: streams, replies, pings, shutdown.

The behaviour follows what Kubernetes' SPDY peers (the ``spdystream`` package
under kubelet, crictl and kubectl) do, so either side can talk to them:

* client streams have odd ids, server streams even; every id is larger than the
  last one its side opened, or the stream is refused with RST_STREAM;
* the server answers each SYN_STREAM with a SYN_REPLY before it reads the stream;
* a PING from the peer is echoed; GOAWAY ends the session;
* header names travel lowercased (Go canonicalises them again on receipt);
* no flow control: spdystream neither sends WINDOW_UPDATE nor waits for one,
  so neither does this session. Backpressure comes from TCP: a stream whose
  reader falls :data:`STREAM_BUFFER` chunks behind stops the session's reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from minikubelet.streaming import spdy

log = logging.getLogger(__name__)

#: Largest data frame this side sends.
MAX_CHUNK = 32 * 1024
#: Data chunks one stream may hold unread before the session stops reading.
STREAM_BUFFER = 64


class StreamReset(ConnectionError):
    """The peer reset the stream, or the session ended under it."""


class SpdyStream:
    """One bidirectional SPDY stream; reads and writes are async."""

    def __init__(self, session: SpdySession, stream_id: int, headers: spdy.Headers) -> None:
        self.session = session
        self.id = stream_id
        self.headers: dict[str, str] = {name.lower(): value for name, value in headers}
        self._inbox: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_BUFFER)
        self.replied = asyncio.Event()
        self.remote_closed = False  # the peer sent FIN (or reset)
        self.local_closed = False  # this side sent FIN
        self.reset = False

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    async def read(self) -> bytes:
        """The next chunk from the peer; b"" once it half-closed or the stream ended."""
        if self.remote_closed and self._inbox.empty():
            return b""
        chunk = await self._inbox.get()
        if chunk is None:
            self._inbox.put_nowait(None)  # every later read sees the end too
            return b""
        return chunk

    async def write(self, data: bytes) -> None:
        if self.reset:
            raise StreamReset(f"stream {self.id} was reset")
        if self.local_closed:
            raise StreamReset(f"stream {self.id} is closed for writing")
        view = memoryview(data)
        for start in range(0, len(view), MAX_CHUNK):
            chunk = bytes(view[start : start + MAX_CHUNK])
            await self.session.send(spdy.DataFrame(self.id, chunk))

    async def close(self) -> None:
        """Half-close: an empty DATA frame with FIN. Idempotent."""
        if self.local_closed or self.reset:
            return
        self.local_closed = True
        with contextlib.suppress(ConnectionError):
            await self.session.send(spdy.DataFrame(self.id, b"", spdy.FLAG_FIN))
        self.session._maybe_forget(self)

    async def reset_stream(self, status: int = spdy.RstStatus.CANCEL) -> None:
        if self.reset:
            return
        self._on_reset()
        with contextlib.suppress(ConnectionError):
            await self.session.send(spdy.RstStream(self.id, status))

    # -- from the session's reader -------------------------------------------------------

    def _deliver(self, data: bytes, fin: bool) -> asyncio.Future[None] | None:
        """Queue ``data`` (and the end, with ``fin``); a future while the queue is full."""
        if self.remote_closed:
            return None
        if data:
            try:
                self._inbox.put_nowait(data)
            except asyncio.QueueFull:
                return asyncio.ensure_future(self._deliver_later(data, fin))
        if fin:
            self._finish_remote()
        return None

    async def _deliver_later(self, data: bytes, fin: bool) -> None:
        await self._inbox.put(data)
        if fin:
            self._finish_remote()
            self.session._maybe_forget(self)

    def _finish_remote(self) -> None:
        if not self.remote_closed:
            self.remote_closed = True
            # With a full queue the reader is behind: it sees remote_closed once drained.
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(None)

    def _on_reset(self) -> None:
        self.reset = True
        self.local_closed = True
        self.replied.set()
        self._finish_remote()


class SpdySession:
    """Both ends of SPDY: ``run()`` reads frames until the connection ends.

    A server takes the streams the client opens with :meth:`accept` (each after its
    SYN_REPLY went out). A client opens its own with :meth:`open_stream`.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        server: bool,
        initial: bytes = b"",
        observer: Callable[[str, spdy.Frame], None] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._server = server
        self._accepted: asyncio.Queue[SpdyStream | None] = asyncio.Queue()  # None: ended
        self._initial = initial
        self._observer = observer  # sees ("out" | "in", frame) for every frame: for traces
        self._frames_in = spdy.FrameReader()
        self._frames_out = spdy.FrameWriter()
        self._write_lock = asyncio.Lock()
        self.streams: dict[int, SpdyStream] = {}
        self._next_id = 2 if server else 1
        self._last_peer_id = 0
        self._next_ping = 2 if server else 1
        self._pings: dict[int, asyncio.Future[None]] = {}
        self.closed = asyncio.Event()
        self.went_away = False
        self._stalled: asyncio.Future[None] | None = None  # a delivery waiting for room

    # -- sending ---------------------------------------------------------------------

    async def send(self, frame: spdy.Frame) -> None:
        if self.closed.is_set():
            raise ConnectionResetError("SPDY session closed")
        async with self._write_lock:
            # Encoding happens under the lock: the header compressor's state is ordered.
            self._writer.write(self._frames_out.write(frame))
            if self._observer is not None:
                self._observer("out", frame)
            await self._writer.drain()

    async def open_stream(self, headers: spdy.Headers, *, fin: bool = False) -> SpdyStream:
        """A new stream (client or server initiated); wait on ``stream.replied`` for the reply."""
        stream_id = self._next_id
        self._next_id += 2
        if stream_id > spdy.MAX_STREAM_ID:
            raise ConnectionError("SPDY stream ids exhausted")
        stream = SpdyStream(self, stream_id, headers)
        self.streams[stream_id] = stream
        await self.send(spdy.SynStream(stream_id, headers, flags=spdy.FLAG_FIN if fin else 0))
        if fin:
            stream.local_closed = True
        return stream

    async def accept(self) -> SpdyStream | None:
        """The next stream the peer opened (server side); None once the session ended."""
        stream = await self._accepted.get()
        if stream is None:
            self._accepted.put_nowait(None)  # every later call sees the end too
        return stream

    async def ping(self, timeout: float = 10.0) -> None:
        ping_id = self._next_ping
        self._next_ping += 2
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = done
        try:
            await self.send(spdy.Ping(ping_id))
            await asyncio.wait_for(done, timeout)
        finally:
            self._pings.pop(ping_id, None)

    async def close(self) -> None:
        """GOAWAY, then close the connection; every stream ends. Idempotent."""
        if self.closed.is_set():
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await asyncio.wait_for(self.send(spdy.GoAway(self._last_peer_id)), 5)
        self._teardown()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 5)

    def _teardown(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self._writer.close()
        if self._stalled is not None:
            self._stalled.cancel()
        for stream in list(self.streams.values()):
            stream._on_reset()
        self.streams.clear()
        for fut in self._pings.values():
            if not fut.done():
                fut.set_exception(ConnectionResetError("SPDY session closed"))
        self._accepted.put_nowait(None)

    def _maybe_forget(self, stream: SpdyStream) -> None:
        if stream.local_closed and stream.remote_closed:
            self.streams.pop(stream.id, None)

    # -- receiving -------------------------------------------------------------------

    async def run(self) -> None:
        """Read and dispatch frames until EOF, GOAWAY or a protocol error."""
        try:
            data = self._initial
            while True:
                if data:
                    for frame in self._frames_in.feed(data):
                        if self._observer is not None:
                            self._observer("in", frame)
                        self._stalled = await self._dispatch(frame)
                        if self._stalled is not None:
                            # A slow reader: stop reading the socket until it catches up.
                            try:
                                await self._stalled
                            except asyncio.CancelledError:
                                if self.closed.is_set():
                                    return
                                raise
                            self._stalled = None
                        if self.went_away:
                            return
                data = await self._reader.read(64 * 1024)
                if not data:
                    return
        except spdy.ProtocolError as exc:
            log.info("SPDY protocol error: %s", exc)
            with contextlib.suppress(ConnectionError):
                await self.send(spdy.GoAway(self._last_peer_id, spdy.GoAwayStatus.PROTOCOL_ERROR))
        except (ConnectionError, OSError):
            pass
        finally:
            self._teardown()

    async def _dispatch(self, frame: spdy.Frame) -> asyncio.Future[None] | None:
        match frame:
            case spdy.DataFrame():
                stream = self.streams.get(frame.stream_id)
                if stream is None:
                    return None  # already gone: spdystream drops these too
                waiter = stream._deliver(frame.data, frame.fin)
                if waiter is None and frame.fin:
                    self._maybe_forget(stream)
                return waiter
            case spdy.SynStream():
                await self._on_syn_stream(frame)
            case spdy.SynReply():
                stream = self.streams.get(frame.stream_id)
                if stream is not None:
                    stream.replied.set()
                    if frame.fin:
                        stream._finish_remote()
                        self._maybe_forget(stream)
            case spdy.HeadersFrame():
                stream = self.streams.get(frame.stream_id)
                if stream is not None and frame.fin:
                    stream._finish_remote()
                    self._maybe_forget(stream)
            case spdy.RstStream():
                stream = self.streams.pop(frame.stream_id, None)
                if stream is not None:
                    stream._on_reset()
            case spdy.Ping():
                if (frame.id % 2 == 0) == self._server:
                    done = self._pings.get(frame.id)  # the answer to one of ours
                    if done is not None and not done.done():
                        done.set_result(None)
                else:
                    await self.send(frame)
            case spdy.GoAway():
                self.went_away = True
            case _:
                pass  # SETTINGS, WINDOW_UPDATE, unknown control frames: nothing to do
        return None

    async def _on_syn_stream(self, frame: spdy.SynStream) -> None:
        peer_odd = self._server  # a server's peer opens odd ids
        valid = (
            frame.stream_id % 2 == (1 if peer_odd else 0)
            and frame.stream_id > self._last_peer_id
            and self._server
        )
        if not valid:
            await self.send(spdy.RstStream(frame.stream_id, spdy.RstStatus.PROTOCOL_ERROR))
            return
        self._last_peer_id = frame.stream_id
        stream = SpdyStream(self, frame.stream_id, frame.headers)
        self.streams[frame.stream_id] = stream
        if frame.unidirectional:
            stream.local_closed = True
        await self.send(spdy.SynReply(frame.stream_id))
        stream.replied.set()
        if frame.fin:
            stream._finish_remote()
        self._accepted.put_nowait(stream)
