"""``exec -it``, ``attach`` and ``port-forward``: streams through CRI and the returned URL.

Each asks the kubelet's local API for a streaming URL (the kubelet calls CRI
Exec, Attach or PortForward and redirects to what the runtime returned), then
connects to that URL itself, as kubectl does through the kubelet: the kubelet
never carries the bytes, and nothing reaches into the runtime by another door.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TextIO

from minikubelet import errors
from minikubelet.cli import terminal
from minikubelet.cli.client import (
    _BytesWriter,
    _find_pod,
    _namespace,
    _reports_errors,
    find_container,
)
from minikubelet.server.client import LocalClient
from minikubelet.streaming import channels as ch
from minikubelet.streaming.client import (
    WEBSOCKET,
    PortForwarder,
    RemoteCommand,
    connect_port_forward,
    connect_remote_command,
)
from minikubelet.streaming.session import SpdyStream


@dataclass
class Terminal:
    """The local terminal an interactive stream runs on (None fields: not a terminal)."""

    fd: int | None = None  # put in raw mode while the stream runs
    size: Callable[[], tuple[int, int] | None] = lambda: None


async def _pump_stdin(command: RemoteCommand, stdin: AsyncIterator[bytes]) -> None:
    async for chunk in stdin:
        await command.write_stdin(chunk)
    await command.close_stdin()


async def _run_remote(
    command: RemoteCommand,
    stdin: AsyncIterator[bytes] | None,
    out: TextIO,
    err: TextIO,
    term: Terminal,
) -> int:
    stdout, stderr = _BytesWriter(out), _BytesWriter(err)
    tasks: list[asyncio.Task[None]] = []

    def resized() -> None:
        current = term.size()
        if current is not None:
            tasks.append(asyncio.ensure_future(command.resize(*current)))

    with contextlib.ExitStack() as stack:
        if command.tty and term.fd is not None:
            stack.enter_context(terminal.raw_mode(term.fd))
            stack.enter_context(terminal.on_resize(resized))
            resized()  # the first size, before any output
        if stdin is not None:
            tasks.append(asyncio.create_task(_pump_stdin(command, stdin)))
        try:
            async for channel, data in command.read_output():
                (stdout if channel == ch.STREAM_STDOUT else stderr).write(data)
            code = await command.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await command.close()
    stdout.close()
    stderr.close()
    return code


async def _connect(
    client: LocalClient,
    kind: str,
    pod: str,
    container: str | None,
    cmd: Sequence[str],
    err: TextIO,
    stdin: AsyncIterator[bytes] | None,
    tty: bool,
    transport: str,
) -> RemoteCommand:
    """The kubelet's URL for an ``exec`` or ``attach`` of the pod's container, connected.

    A terminal carries stderr in stdout, so with ``tty`` there is no stderr channel.
    """
    namespace, pod_name, chosen = await find_container(client, pod, container, err)
    url = await client.stream_url(
        kind,
        namespace,
        pod_name,
        chosen,
        list(cmd),
        tty=tty,
        stdin=stdin is not None,
        stdout=True,
        stderr=not tty,
    )
    return await connect_remote_command(
        url, stdin=stdin is not None, tty=tty, stderr=not tty, transport=transport
    )


@_reports_errors
async def exec_stream(
    client: LocalClient,
    pod: str,
    container: str | None,
    cmd: Sequence[str],
    out: TextIO,
    err: TextIO,
    *,
    stdin: AsyncIterator[bytes] | None,
    tty: bool,
    term: Terminal | None = None,
    transport: str = WEBSOCKET,
) -> int:
    """``exec -i/-t POD [-c CTR] -- CMD``: the remote exit code becomes ours."""
    if not cmd:
        raise errors.InvalidArgument("you must specify at least one command for the container")
    command = await _connect(client, "exec", pod, container, cmd, err, stdin, tty, transport)
    code = await _run_remote(command, stdin, out, err, term or Terminal())
    if code != 0:
        print(f"command terminated with exit code {code}", file=err)
    return code


@_reports_errors
async def attach(
    client: LocalClient,
    pod: str,
    container: str | None,
    out: TextIO,
    err: TextIO,
    *,
    stdin: AsyncIterator[bytes] | None,
    tty: bool,
    term: Terminal | None = None,
    transport: str = WEBSOCKET,
) -> int:
    """``attach POD [-c CTR] [-i] [-t]``: the container's output from now on, stdin to it."""
    command = await _connect(client, "attach", pod, container, [], err, stdin, tty, transport)
    if stdin is not None and tty:
        print("If you don't see a command prompt, try pressing enter.", file=err)
    return await _run_remote(command, stdin, out, err, term or Terminal())


def parse_port_mapping(text: str) -> tuple[int, int]:
    """``LOCAL:REMOTE``, ``PORT`` (the same on both ends) or ``:REMOTE`` (any free local port)."""
    local, sep, remote = text.partition(":")
    if not sep:
        local = remote = text
    try:
        local_port = int(local) if local else 0
        remote_port = int(remote)
    except ValueError:
        raise errors.InvalidArgument(f"invalid port mapping {text!r}") from None
    if not 0 <= local_port < 65536 or not 0 < remote_port < 65536:
        raise errors.InvalidArgument(f"invalid port mapping {text!r}")
    return local_port, remote_port


async def _forward_one(
    forwarder: PortForwarder,
    remote: int,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    err: TextIO,
) -> None:
    try:
        data, error = await forwarder.open(remote)
    except (ConnectionError, TimeoutError) as exc:
        print(f"error: cannot open a stream for port {remote}: {exc}", file=err, flush=True)
        writer.close()
        return

    async def report_errors(stream: SpdyStream) -> None:
        message = b""
        while chunk := await stream.read():
            message += chunk
        if message:
            print(f"error: {message.decode(errors='replace')}", file=err, flush=True)

    async def upstream() -> None:
        while chunk := await reader.read(32 * 1024):
            await data.write(chunk)
        await data.close()

    async def downstream() -> None:
        while chunk := await data.read():
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    tasks = [asyncio.create_task(t) for t in (upstream(), downstream(), report_errors(error))]
    try:
        await asyncio.gather(*tasks[1:])  # the pod side ended (or refused)
    except (ConnectionError, OSError):
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        await data.reset_stream()


@_reports_errors
async def port_forward(
    client: LocalClient,
    pod: str,
    mappings: Sequence[str],
    out: TextIO,
    err: TextIO,
    *,
    address: str = "127.0.0.1",
    ready: Callable[[list[tuple[int, int]]], None] | None = None,
) -> int:
    """``port-forward POD [LOCAL:]REMOTE...``: listen locally, forward into the pod until ^C.

    One SPDY session carries every connection, each as a stream pair. Ends with
    1 when the runtime ends the session.
    """
    if not mappings:
        raise errors.InvalidArgument("at least one port mapping is required")
    pairs = [parse_port_mapping(m) for m in mappings]
    found = await _find_pod(client, pod)
    url = await client.port_forward_url(
        _namespace(found), found["metadata"]["name"], [remote for _, remote in pairs]
    )
    forwarder = await connect_port_forward(url)
    servers: list[asyncio.Server] = []
    connections: set[asyncio.Task[None]] = set()
    bound: list[tuple[int, int]] = []
    try:
        for local, remote in pairs:

            def handler(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter, remote: int = remote
            ) -> None:
                port = writer.get_extra_info("sockname")[1]
                print(f"Handling connection for {port}", file=out, flush=True)
                task = asyncio.create_task(_forward_one(forwarder, remote, reader, writer, err))
                connections.add(task)
                task.add_done_callback(connections.discard)

            server = await asyncio.start_server(handler, address, local)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
            bound.append((port, remote))
            print(f"Forwarding from {address}:{port} -> {remote}", file=out, flush=True)
        if ready is not None:
            ready(bound)
        await forwarder.session.closed.wait()
        print("error: lost connection to the pod's streaming server", file=err)
        return 1
    finally:
        for server in servers:
            server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await forwarder.close()


def stdin_chunks(enabled: bool) -> AsyncIterator[bytes] | None:
    """Our standard input as a stream of chunks (None without ``-i``)."""
    return terminal.read_chunks(sys.stdin.fileno()) if enabled else None
