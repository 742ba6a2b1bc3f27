"""The kubelet's local API: HTTP on a unix socket, for the CLI on the same machine.

The routes follow the kubelet's own server where it has one (``/healthz``,
``/pods``, ``/containerLogs/{namespace}/{pod}/{container}``). A POST to ``/exec``
is a one-shot ExecSync; a GET to ``/exec``, ``/attach`` or ``/portForward``
asks the runtime (CRI Exec, Attach, PortForward) for a streaming URL and
redirects there, as the kubelet did with ``--redirect-container-streaming``:
the client then speaks SPDY or WebSocket to the runtime's streaming server. Everything
the handlers know comes from a :class:`~minikubelet.server.view.NodeView`.

The socket is bound and made 0600 *before* it listens (a pre-bound socket handed
to aiohttp's ``SockSite``, where ``UnixSite`` would chmod after the server is
already accepting), in a directory created 0700 when it does not exist. A
socket file left by a kubelet that died is replaced; one a live kubelet still
answers on is refused with :class:`SocketInUse`.

Errors answer as JSON ``{"error": message}``: NotFound 404, InvalidArgument 400,
FailedPrecondition 409, Unavailable (the runtime) 503, DeadlineExceeded 504,
anything else 500. Tracebacks go to the log, never into a response.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from minikubelet import errors
from minikubelet.logs.crilog import Stream
from minikubelet.logs.reader import ALL_STREAMS, LogOptions, parse_time, read_logs
from minikubelet.server.view import NodeView

log = logging.getLogger(__name__)

#: How long shutdown waits for requests under way (a followed log never ends by itself).
SHUTDOWN_TIMEOUT: Final = 2.0

_STATUS_BY_ERROR: Final[dict[type[errors.CRIError], int]] = {
    errors.NotFound: 404,
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 409,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}
_STREAMS: Final[dict[str, frozenset[Stream]]] = {
    "All": ALL_STREAMS,
    "Stdout": frozenset({"stdout"}),
    "Stderr": frozenset({"stderr"}),
}

_dumps = partial(json.dumps, default=str)


class SocketInUse(OSError):
    """Another process answers on the socket path: a kubelet is already running."""


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status, dumps=_dumps)


@web.middleware
async def _errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _error(404, f"no such route: {request.method} {request.path}")
        if exc.status == 405:
            return _error(405, f"method {request.method} is not allowed on {request.path}")
        return _error(exc.status, exc.text or exc.reason)
    except errors.CRIError as exc:
        status = _STATUS_BY_ERROR.get(type(exc), 500)
        if status == 500:
            log.error("%s %s failed: %s", request.method, request.path, exc)
        return _error(status, exc.message)
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")


def _redirect(url: str) -> web.Response:
    """Where the client streams: the runtime's own server, as the kubelet redirects to it."""
    return web.json_response({"url": url}, status=302, headers={"Location": url}, dumps=_dumps)


def query_bool(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "false").lower()
    if value in ("", "true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise errors.InvalidArgument(f"{name} must be true or false, not {value!r}")


def query_int(request: web.Request, name: str) -> int | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.InvalidArgument(f"{name} must be an integer, not {value!r}") from None


def log_options(request: web.Request) -> LogOptions:
    since_time: datetime | None = None
    if raw := request.query.get("sinceTime"):
        try:
            ns = parse_time(raw)
        except ValueError as exc:
            raise errors.InvalidArgument(f"sinceTime: {exc}") from None
        seconds, frac = divmod(ns, 1_000_000_000)
        since_time = datetime.fromtimestamp(seconds, UTC).replace(microsecond=frac // 1000)
    stream = request.query.get("stream", "All")
    if stream not in _STREAMS:
        raise errors.InvalidArgument(f"stream must be All, Stdout or Stderr, not {stream!r}")
    return LogOptions(
        follow=query_bool(request, "follow"),
        tail_lines=query_int(request, "tailLines"),
        timestamps=query_bool(request, "timestamps"),
        since_seconds=query_int(request, "sinceSeconds"),
        since_time=since_time,
        limit_bytes=query_int(request, "limitBytes"),
        streams=_STREAMS[stream],
    )


def _container_status(pod: dict[str, Any], container: str) -> dict[str, Any] | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(key) or ():
            if isinstance(entry, dict) and entry.get("name") == container:
                return entry
    return None


class LocalAPI:
    """Serves ``view`` on ``socket_path`` from :meth:`run` until cancelled."""

    def __init__(self, view: NodeView, socket_path: Path) -> None:
        self.view = view
        self.socket_path = socket_path
        self.ready = asyncio.Event()
        """Set once the socket accepts connections."""
        self._closing = asyncio.Event()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[_errors_as_json])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/pods", self._pods)
        app.router.add_get("/rejected", self._rejected)
        app.router.add_get("/events", self._events)
        app.router.add_get("/status", self._status)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        app.router.add_post("/exec/{namespace}/{pod}/{container}", self._exec)
        app.router.add_get("/exec/{namespace}/{pod}/{container}", self._stream_exec)
        app.router.add_get("/attach/{namespace}/{pod}/{container}", self._stream_attach)
        app.router.add_get("/portForward/{namespace}/{pod}", self._port_forward)
        app.router.add_delete("/pods/{namespace}/{pod}", self._delete_pod)
        app.router.add_get("/trace", self._trace)
        return app

    async def run(self) -> None:
        sock, bound = await self._bind()
        runner = web.AppRunner(self.application(), shutdown_timeout=SHUTDOWN_TIMEOUT)
        try:
            await runner.setup()
            site = web.SockSite(runner, sock)
            await site.start()
            log.info("local API listening on %s", self.socket_path)
            self.ready.set()
            await asyncio.Future()  # until cancelled
        finally:
            self.ready.clear()
            self._closing.set()  # followed logs end at their next look instead of being cut
            await runner.cleanup()
            self._unlink(bound)
            sock.close()

    # --- the socket --------------------------------------------------------------------

    async def _bind(self) -> tuple[socket.socket, os.stat_result]:
        path = self.socket_path
        if not path.parent.exists():
            path.parent.mkdir(mode=0o700, parents=True)
            path.parent.chmod(0o700)
        if path.is_symlink() or path.exists():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise FileExistsError(f"{path} exists and is not a socket: refusing to replace it")
            if await _answers(path):
                raise SocketInUse(f"a kubelet is already listening on {path}")
            log.info("replacing the stale socket %s", path)
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(path))
            path.chmod(0o600)  # before listen(): nobody can connect in between
            sock.setblocking(False)
            bound = path.lstat()
        except BaseException:
            sock.close()
            raise
        return sock, bound

    def _unlink(self, bound: os.stat_result) -> None:
        """Remove the socket file if it is still the one we bound."""
        try:
            now = self.socket_path.lstat()
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
            self.socket_path.unlink(missing_ok=True)

    # --- routes --------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _pods(self, request: web.Request) -> web.Response:
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self.view.pods()}
        return web.json_response(body, dumps=_dumps)

    async def _rejected(self, request: web.Request) -> web.Response:
        return web.json_response({"items": self.view.rejected()}, dumps=_dumps)

    async def _events(self, request: web.Request) -> web.Response:
        body = {
            "kind": "EventList",
            "apiVersion": "v1",
            "metadata": {},
            "items": self.view.events(),
        }
        return web.json_response(body, dumps=_dumps)

    async def _trace(self, request: web.Request) -> web.StreamResponse:
        """The CRI calls as JSON lines: those kept so far, then (``follow``) new ones."""
        recorder = self.view.trace()
        if recorder is None:
            raise errors.NotFound("this kubelet records no CRI trace")
        pod = request.query.get("pod") or None
        follow = query_bool(request, "follow")
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        # subscribe before reading the ring, so no call falls between the two
        updates = recorder.follow(pod=pod) if follow else None
        try:
            lines = [r.to_json() + "\n" for r in recorder.records(pod=pod)]
            await response.write("".join(lines).encode())
            if updates is not None:
                async with contextlib.aclosing(updates):
                    async for rec in updates:
                        if self._closing.is_set():
                            break
                        await response.write((rec.to_json() + "\n").encode())
        except ConnectionResetError:
            log.debug("trace reader went away")
            return response
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.view.status(), dumps=_dumps)

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        return await stream_container_logs(request, self.view, self._closing.is_set)

    async def _exec(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        pod = request.match_info["pod"]
        container = request.match_info["container"]
        try:
            body = await request.json()
        except ValueError:
            raise errors.InvalidArgument("the body must be JSON: {command, timeout}") from None
        command = body.get("command") if isinstance(body, dict) else None
        if not (isinstance(command, list) and command and all(isinstance(a, str) for a in command)):
            raise errors.InvalidArgument("command must be a non-empty list of strings")
        timeout = body.get("timeout", 0)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
            raise errors.InvalidArgument("timeout must be a whole number of seconds, 0 or more")
        stdout, stderr, code = await self.view.exec(namespace, pod, container, command, timeout)
        return web.json_response(
            {
                "stdout": base64.b64encode(stdout).decode(),
                "stderr": base64.b64encode(stderr).decode(),
                "exitCode": code,
            }
        )

    async def _stream(self, request: web.Request, kind: str) -> web.Response:
        command = request.query.getall("command", [])
        if kind == "exec" and not command:
            raise errors.InvalidArgument("command is required: ?command=ARG&command=ARG...")
        url = await self.view.stream_url(
            kind,
            request.match_info["namespace"],
            request.match_info["pod"],
            request.match_info["container"],
            list(command),
            tty=query_bool(request, "tty"),
            stdin=query_bool(request, "stdin"),
            stdout=query_bool(request, "stdout"),
            stderr=query_bool(request, "stderr"),
        )
        return _redirect(url)

    async def _stream_exec(self, request: web.Request) -> web.Response:
        """GET with ?command=: the runtime's streaming URL, as a redirect (CRI Exec)."""
        return await self._stream(request, "exec")

    async def _stream_attach(self, request: web.Request) -> web.Response:
        return await self._stream(request, "attach")

    async def _port_forward(self, request: web.Request) -> web.Response:
        ports: list[int] = []
        for text in request.query.getall("port", []):
            if not text.isdigit() or not 0 < int(text) < 65536:
                raise errors.InvalidArgument(f"port must be in 1..65535, not {text!r}")
            ports.append(int(text))
        url = await self.view.port_forward_url(
            request.match_info["namespace"], request.match_info["pod"], ports
        )
        return _redirect(url)

    async def _delete_pod(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        pod = request.match_info["pod"]
        grace = query_int(request, "gracePeriodSeconds")
        if grace is not None and grace < 0:
            raise errors.InvalidArgument(f"gracePeriodSeconds must be 0 or more, not {grace}")
        await self.view.delete_pod(namespace, pod, grace)
        return web.json_response(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": pod, "namespace": namespace, "kind": "pods"},
            }
        )


async def _never_running() -> bool:
    return False


async def _answers(path: Path) -> bool:
    """Whether something accepts connections on the unix socket at ``path``."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), 2.0)
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except TimeoutError:
        return True  # a full backlog: someone is there
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def stream_container_logs(
    request: web.Request, view: NodeView, closing: Callable[[], bool]
) -> web.StreamResponse:
    """``/containerLogs/{namespace}/{pod}/{container}``: the container's log with the
    kubelet's query parameters; a followed log ends when the container does, when the
    server closes (``closing``) or when the reader goes away."""
    namespace = request.match_info["namespace"]
    pod = request.match_info["pod"]
    container = request.match_info["container"]
    options = log_options(request)
    previous = query_bool(request, "previous")
    path = view.container_log_path(namespace, pod, container, previous)
    if not await asyncio.to_thread(path.is_file):
        which = "previous " if previous else ""
        raise errors.NotFound(
            f'the {which}log of container "{container}" in pod "{namespace}/{pod}" '
            f"does not exist (yet)"
        )
    transport = request.transport

    def stop() -> bool:
        return closing() or transport is None or transport.is_closing()

    still_running = (
        _never_running if previous else _running_check(view, namespace, pod, container, stop)
    )
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    chunks = read_logs(path, options, still_running)
    try:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                await response.write(chunk)
    except ConnectionResetError:
        log.debug("log reader of %s/%s/%s went away", namespace, pod, container)
        return response
    except (OSError, errors.MinikubeletError) as exc:
        # The status line is sent already: end the stream and say why in the log.
        log.warning("reading the log of %s/%s/%s failed: %s", namespace, pod, container, exc)
    except Exception:
        log.exception("reading the log of %s/%s/%s failed", namespace, pod, container)
    with contextlib.suppress(ConnectionResetError):  # the reader may be gone meanwhile
        await response.write_eof()
    return response


def _running_check(
    view: NodeView, namespace: str, pod: str, container: str, stop: Callable[[], bool]
) -> Callable[[], Awaitable[bool]]:
    """Whether the container instance running now (if any) still runs, and we serve."""
    first = _find_status(view, namespace, pod, container)
    container_id = (first or {}).get("containerID")

    async def still_running() -> bool:
        if stop():
            return False
        status = _find_status(view, namespace, pod, container)
        if status is None or status.get("containerID") != container_id:
            return False
        return "running" in (status.get("state") or {})

    return still_running


def _find_status(view: NodeView, namespace: str, pod: str, container: str) -> dict[str, Any] | None:
    for item in view.pods():
        meta = item.get("metadata") or {}
        if meta.get("namespace", "default") == namespace and meta.get("name") == pod:
            return _container_status(item, container)
    return None
