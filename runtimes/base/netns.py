"""TCP connections opened inside another network namespace (for PortForward).

A network namespace belongs to a thread, not a process: ``setns`` moves only the
calling thread. So each connection is opened by a fresh thread that enters the
namespace, connects, and ends; the socket it made stays in that namespace and
is handed to the event loop. No pooled thread ever changes namespace, and no
thread outlives the connect.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Callable

from minikubelet.errors import Internal, InvalidArgument, Unavailable

CLONE_NEWNET = 0x40000000
CONNECT_TIMEOUT = 10.0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _connect_local(port: int, timeout: float) -> socket.socket:
    """localhost:port as the kubelet's port forwarders dial it: IPv4 first, then IPv6."""
    last: OSError | None = None
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect((address, port))
            sock.settimeout(None)
            sock.setblocking(False)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    assert last is not None
    raise last


def _in_thread(fn: Callable[[], socket.socket]) -> asyncio.Future[socket.socket]:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[socket.socket] = loop.create_future()

    def deliver(result: socket.socket | None, error: BaseException | None) -> None:
        if future.cancelled():
            if result is not None:
                result.close()
        elif error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def run() -> None:
        try:
            sock = fn()
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(deliver, None, exc)
        else:
            loop.call_soon_threadsafe(deliver, sock, None)

    threading.Thread(target=run, name="netns-connect", daemon=True).start()
    return future


async def connect(
    netns_path: str | None, port: int, *, timeout: float = CONNECT_TIMEOUT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream to localhost:``port`` in the namespace at ``netns_path`` (None: this one).

    A refused or unreachable port raises :class:`Unavailable` naming it.
    """
    if not 0 < port < 65536:
        raise InvalidArgument(f"port {port} is not in 1..65535")

    def open_socket() -> socket.socket:
        if netns_path is None:
            return _connect_local(port, timeout)
        target = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target, CLONE_NEWNET)  # this thread only, and it ends after the connect
        finally:
            os.close(target)
        return _connect_local(port, timeout)

    try:
        sock = await _in_thread(open_socket)
    except FileNotFoundError:
        raise Unavailable(f"network namespace {netns_path} is gone") from None
    except OSError as exc:
        if exc.errno not in (
            errno.ECONNREFUSED,
            errno.ETIMEDOUT,
            errno.EHOSTUNREACH,
            errno.ENETUNREACH,
            errno.EADDRNOTAVAIL,
            None,
        ):
            raise Internal(f"connecting to port {port}: {exc}") from None
        raise Unavailable(f"connecting to port {port}: {exc.strerror or exc}") from None
    return await asyncio.open_connection(sock=sock)
