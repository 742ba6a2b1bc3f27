"""remotecommand, whatever the transport: exec and attach as channels, exit status, resize.

Each transport maps the channels (stdin, stdout, stderr, error, resize) onto
its own frames (:class:`Channels`); :func:`run_remote_command` starts the
backend's process and pumps between the two. The exit code travels as the v4
``metav1.Status`` on the error channel. When the client goes away the process
is closed, which kills an exec that still runs.

Stdin and resizes reach the process in the order the client sent them: the two
pumps are woken in arrival order and hand their work to the backend one at a
time, so a shell that reads ``stty size`` right after the client's first resize
sees that size (the backend's resize may itself wait, on a signal or a FIFO).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from minikubelet.errors import CRIError
from minikubelet.streaming import channels as ch
from runtimes.base import model as m
from runtimes.base.streaming.connection import cancel_and_wait
from runtimes.base.streaming.tokens import StreamRequest

log = logging.getLogger(__name__)


class Channels:
    """remotecommand channels; each transport maps them onto its own frames."""

    gone: asyncio.Event  # the client went away

    async def stdin(self) -> bytes:
        """The next stdin chunk; b"" at its end."""
        raise NotImplementedError

    async def resize(self) -> ch.TerminalSize | None:
        """The next terminal size; None once no more will come."""
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


async def run_remote_command(
    backend: m.StreamingBackend, channels: Channels, request: StreamRequest
) -> None:
    """Run the exec or attach of ``request`` over ``channels`` until it or the client ends."""
    try:
        if request.kind == "exec":
            io = await backend.exec_stream(
                request.target, request.cmd, tty=request.tty, stdin=request.stdin
            )
        else:
            io = await backend.attach_stream(request.target, tty=request.tty, stdin=request.stdin)
    except CRIError as exc:
        with contextlib.suppress(ConnectionError):
            await channels.status(ch.error_status(exc.message))
        return
    pumps: list[asyncio.Task[None]] = []
    gone = asyncio.ensure_future(channels.gone.wait())
    try:
        output = asyncio.create_task(_pump_output(io, channels, request))
        pumps.append(output)
        order = asyncio.Lock()  # FIFO: stdin and resizes in the order they arrived
        # the resize pump first: a size the client sent before its input (kubectl sends its
        # terminal's at once) is set before any input, even when both are already there
        if request.tty:
            pumps.append(asyncio.create_task(_pump_resize(io, channels, order)))
        if request.stdin:
            pumps.append(asyncio.create_task(_pump_stdin(io, channels, order)))
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
        try:
            await cancel_and_wait(*pumps)
        finally:
            await io.close()  # even when cancelled again while the pumps end


async def _pump_output(io: m.StreamIO, channels: Channels, request: StreamRequest) -> None:
    while (item := await io.read()) is not None:
        channel, data = item
        if request.tty or channel == m.STDOUT:
            if request.stdout or request.tty:
                await channels.write(ch.STREAM_STDOUT, data)
        elif request.stderr:
            await channels.write(ch.STREAM_STDERR, data)


async def _pump_stdin(io: m.StreamIO, channels: Channels, order: asyncio.Lock) -> None:
    while data := await channels.stdin():
        async with order:
            await io.write_stdin(data)
    async with order:
        await io.close_stdin()


async def _pump_resize(io: m.StreamIO, channels: Channels, order: asyncio.Lock) -> None:
    while (size := await channels.resize()) is not None:
        async with order:
            await io.resize(size.width, size.height)
