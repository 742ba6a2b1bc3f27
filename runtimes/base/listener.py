"""Serve a runtime's CRI services on a unix socket (0600) or a TCP address."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from minikubelet.cri.endpoint import MAX_MESSAGE_BYTES, Endpoint, parse_endpoint
from runtimes.base import model as m
from runtimes.base.service import ImageServicer, RuntimeServicer, rpc_handler
from runtimes.base.streaming import StreamingServer

log = logging.getLogger(__name__)


class ListenError(RuntimeError):
    """The endpoint cannot be served: in use, bad path, no permission."""


def _prepare_unix(path: Path) -> None:
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenError(f"{path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # a stale socket left by a process that died
        else:
            raise ListenError(f"{path} is in use by another server")
        finally:
            probe.close()


@contextlib.asynccontextmanager
async def serving(
    endpoint: str | Endpoint,
    runtime: m.RuntimeBackend,
    images: m.ImageBackend,
    *,
    grace: float = 5.0,
    streaming: StreamingServer | None = None,
) -> AsyncIterator[Endpoint]:
    """Serve both CRI services until the context exits, then stop with ``grace`` seconds.

    With a ``streaming`` server (started here and closed after the gRPC server),
    Exec, Attach and PortForward return its URLs; without one they are UNIMPLEMENTED.
    """
    ep = parse_endpoint(endpoint) if isinstance(endpoint, str) else endpoint
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    server.add_generic_rpc_handlers(
        (
            rpc_handler(RuntimeServicer(runtime, streaming), "RuntimeService"),
            rpc_handler(ImageServicer(images), "ImageService"),
        )
    )
    if ep.scheme == "unix":
        path = Path(ep.address)
        _prepare_unix(path)
        old_umask = os.umask(0o177)
        try:
            server.add_insecure_port(ep.grpc_target)
        finally:
            os.umask(old_umask)
        os.chmod(path, 0o600)
    else:
        port = server.add_insecure_port(ep.address)
        if port == 0:
            raise ListenError(f"cannot listen on {ep}")
        host = ep.address.rpartition(":")[0]
        ep = Endpoint("tcp", f"{host}:{port}")
    if streaming is not None:
        await streaming.start()
    await server.start()
    log.info("serving CRI runtime.v1 on %s", ep)
    try:
        yield ep
    finally:
        await asyncio.shield(server.stop(grace))
        if streaming is not None:
            await asyncio.shield(streaming.close())
        if ep.scheme == "unix":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(ep.address)
