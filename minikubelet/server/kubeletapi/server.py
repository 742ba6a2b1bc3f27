"""The kubelet's HTTPS API on port 10250: what the API server calls for ``kubectl logs``,
``exec``, ``attach``, ``port-forward`` and ``get --raw .../nodes/NAME/proxy/...``.

Every request is authenticated and authorized first (:mod:`.auth`), then served from
the same :class:`~minikubelet.server.view.NodeView` as the local unix-socket API, plus
the node's stats (:class:`StatsSource`):

- ``/healthz`` (``ok``, or 500 naming the failed check), ``/pods`` (the pods the kubelet
  runs, a PodList), ``/runningpods/`` (the pods the runtime holds, a PodList).
- ``/containerLogs/{ns}/{pod}/{container}`` with ``follow``, ``previous``,
  ``tailLines``, ``sinceSeconds``, ``sinceTime``, ``timestamps`` and ``limitBytes``.
- ``/run/{ns}/{pod}[/{uid}]/{container}?cmd=...`` (POST): the command's output.
- ``/exec/...``, ``/attach/...`` (``command``, ``input``/``stdin``, ``output``/``stdout``,
  ``error``/``stderr``, ``tty``) and ``/portForward/{ns}/{pod}[/{uid}]``: the runtime's
  streaming URL from CRI, proxied (:mod:`.proxy`), never redirected.
- ``/stats/summary``, ``/metrics``, ``/metrics/resource``, ``/configz``, ``/logs/``
  (the host's log directory, read-only).

Names in paths are checked before anything is looked up: a namespace, pod or
container that is not a Kubernetes name (``..``, an encoded ``/``, a NUL) is 400;
one that names nothing on this node is 404. A query parameter of the wrong type is
400 and names the parameter. Errors are plain text, as the kubelet's, with the
status the error's kind gives it; tracebacks go to the log only. Request lines and
headers are bounded, connections idle between requests are closed after
``keepalive_timeout`` and each user may hold at most ``max_streams_per_user`` streams
(followed logs and proxied exec/attach/port-forward) at once (429 beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shlex
import socket
import ssl
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Middleware

from minikubelet import errors
from minikubelet.server.api import query_bool, stream_container_logs
from minikubelet.server.kubeletapi.auth import USER_KEY, build_auth
from minikubelet.server.kubeletapi.proxy import DEFAULT_IDLE_TIMEOUT, BackendError, proxy_stream
from minikubelet.server.kubeletapi.tls import ensure_serving_certificate, server_ssl_context
from minikubelet.server.view import NodeView
from minikubelet.stats.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE

log = logging.getLogger(__name__)

_dumps = partial(json.dumps, default=str)

#: A namespace, pod or container name (DNS-1123 subdomain rules, which cover labels).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
#: A pod UID as it may appear in a path.
_UID = re.compile(r"^[A-Za-z0-9-]{1,64}$")

_STATUS_BY_ERROR: Final[dict[type[errors.CRIError], int]] = {
    errors.NotFound: 404,
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 400,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
}
MAX_LINE_SIZE: Final = 8 * 1024
MAX_FIELD_SIZE: Final = 16 * 1024
KEEPALIVE_TIMEOUT: Final = 60.0
DEFAULT_MAX_STREAMS_PER_USER: Final = 1000
SHUTDOWN_TIMEOUT: Final = 2.0


class StatsSource(Protocol):
    """The node's stats (:class:`minikubelet.stats.service.NodeStats`)."""

    async def summary(self) -> dict[str, Any]: ...

    def metrics_text(self) -> str: ...

    async def resource_metrics_text(self) -> str: ...


class PublicView(NodeView, Protocol):
    """What the HTTPS API needs beyond the local API's view."""

    def running_pods(self) -> list[dict[str, Any]]:
        """The pods the runtime holds as v1 Pods (metadata and container names)."""
        ...

    def health(self) -> list[tuple[str, str | None]]:
        """Each health check by name, with ``None`` when it passes or why it fails."""
        ...


@dataclass(frozen=True)
class ServingOptions:
    """The kubelet's serving flags (``--address``, ``--port``, ``--tls-*``,
    ``--client-ca-file``, ``--anonymous-auth``, ``--authentication-token-webhook``,
    ``--authorization-mode``, ``--streaming-connection-idle-timeout``)."""

    address: str = "0.0.0.0"
    port: int = 10250
    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    client_ca_file: Path | None = None
    anonymous_auth: bool = False
    #: ``None``: on when the node has an API server
    authentication_token_webhook: bool | None = None
    #: ``None``: Webhook when the node has an API server, else AlwaysAllow
    authorization_mode: str | None = None
    streaming_idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    max_streams_per_user: int = DEFAULT_MAX_STREAMS_PER_USER
    host_log_dir: Path = Path("/var/log")

    def token_webhook(self, has_api: bool) -> bool:
        if self.authentication_token_webhook is None:
            return has_api
        return self.authentication_token_webhook

    def authorizer(self, has_api: bool) -> str:
        return self.authorization_mode or ("Webhook" if has_api else "AlwaysAllow")

    def serves(self, has_api: bool) -> str | None:
        """Why the port is not served (``None`` when it is): off, or nobody could be
        let in (no API server, no client CA and no anonymous access)."""
        if self.port == 0:
            return "--port 0"
        if not (has_api or self.client_ca_file or self.anonymous_auth):
            return (
                "no caller could be authenticated: give --kubeconfig, --client-ca-file "
                "or --anonymous-auth=true"
            )
        return None


def _text(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message, content_type="text/plain")


class _ConnectionLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """aiohttp's per-connection logger: a request it cannot parse (a line or header
    over the limits, too many headers, garbage) is the caller's mistake, answered 400
    and logged in one line, not a traceback, nor the bytes it quotes (a header's value
    may be a credential); anything else keeps its traceback."""

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kw: Any) -> None:
        if isinstance(exc_info, HttpProcessingError):
            text = str(msg) % args if args else str(msg)
            self.info("%s: %d %s", text, exc_info.code, type(exc_info).__name__)
            return
        super().exception(msg, *args, exc_info=exc_info, **kw)


@web.middleware
async def _request_log(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """One debug line per request when it ends: method, path (never the query, which
    may hold a command line, nor any header), status, user and duration; a proxied
    stream's line comes when the stream ends."""
    started = time.monotonic()
    status = 0
    try:
        response = await handler(request)
        status = response.status
        return response
    finally:
        if log.isEnabledFor(logging.DEBUG):
            user = request.get(USER_KEY)
            log.debug(
                "%s %s %s user=%s %.1f ms",
                request.method,
                request.path,
                status or "-",
                user.name if user is not None else "-",
                (time.monotonic() - started) * 1000.0,
            )


@web.middleware
async def _errors_as_text(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _text(404, "404 page not found")
        if exc.status == 405:
            return _text(405, f"method {request.method} is not allowed on {request.path}")
        return _text(exc.status, exc.text or exc.reason)
    except errors.CRIError as exc:
        status = _STATUS_BY_ERROR.get(type(exc), 500)
        if status == 500:
            log.error("%s %s failed: %s", request.method, request.path, exc)
        return _text(status, exc.message)
    except BackendError as exc:
        log.warning("%s %s: %s", request.method, request.path, exc)
        return _text(502, str(exc))
    except ConnectionResetError:
        raise
    except Exception as exc:
        log.exception("%s %s failed", request.method, request.path)
        return _text(500, f"internal error: {type(exc).__name__}")


def _name(request: web.Request, key: str, what: str) -> str:
    value = request.match_info[key]
    if not _NAME.match(value):
        raise errors.InvalidArgument(f"invalid {what} name {value!r}")
    return value


def _names(request: web.Request, *, container: bool = True) -> tuple[str, str, str]:
    namespace = _name(request, "namespace", "namespace")
    pod = _name(request, "pod", "pod")
    uid = request.match_info.get("uid")
    if uid is not None and not _UID.match(uid):
        raise errors.InvalidArgument(f"invalid pod UID {uid!r}")
    name = _name(request, "container", "container") if container else ""
    return namespace, pod, name


def _flag(request: web.Request, *names: str) -> bool:
    """A stream flag, by any of its names (the API server sends ``input=1``,
    ``output=1``, ``error=1``, ``tty=1``; ``stdin=true`` is taken too)."""
    for name in names:
        if name in request.query:
            return query_bool(request, name)
    return False


class _StreamLimit:
    """How many streams each user holds; beyond the limit a new one is 429."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: dict[str, int] = {}

    @contextlib.contextmanager
    def hold(self, request: web.Request) -> Any:
        user = request.get(USER_KEY)
        who = user.name if user is not None else ""
        if self.open.get(who, 0) >= self.limit:
            raise web.HTTPTooManyRequests(
                text=f"too many streams for {who or 'this client'} (limit {self.limit})"
            )
        self.open[who] = self.open.get(who, 0) + 1
        try:
            yield
        finally:
            self.open[who] -= 1
            if not self.open[who]:
                del self.open[who]


class KubeletServer:
    """Serves the kubelet API over TLS from :meth:`run` until cancelled."""

    def __init__(
        self,
        view: PublicView,
        *,
        ssl_context: Callable[[], ssl.SSLContext],
        auth: Middleware,
        stats: StatsSource | None = None,
        configz: Callable[[], Mapping[str, Any]] | None = None,
        options: ServingOptions | None = None,
    ) -> None:
        self.view = view
        self.ssl_context = ssl_context
        self.auth = auth
        self.stats = stats
        self.configz = configz
        self.options = options or ServingOptions()
        self.ready = asyncio.Event()
        """Set once the port accepts connections."""
        self.port = self.options.port
        """The port it listens on (the one bound, when asked for 0)."""
        self.streams = _StreamLimit(self.options.max_streams_per_user)
        self._closing = asyncio.Event()

    def application(self) -> web.Application:
        app = web.Application(middlewares=[_request_log, _errors_as_text, self.auth])
        r = app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/pods", self._pods)
        r.add_get("/runningpods/", self._running_pods)
        r.add_get("/containerLogs/{namespace}/{pod}/{container}", self._container_logs)
        for prefix in ("/run/{namespace}/{pod}", "/run/{namespace}/{pod}/{uid}"):
            r.add_post(prefix + "/{container}", self._run)
        for kind in ("exec", "attach"):
            handler = partial(self._stream, kind=kind)
            for rest in ("/{container}", "/{uid}/{container}"):
                r.add_route("GET", f"/{kind}/{{namespace}}/{{pod}}{rest}", handler)
                r.add_route("POST", f"/{kind}/{{namespace}}/{{pod}}{rest}", handler)
        for path in ("/portForward/{namespace}/{pod}", "/portForward/{namespace}/{pod}/{uid}"):
            r.add_route("GET", path, self._port_forward)
            r.add_route("POST", path, self._port_forward)
        r.add_get("/stats/summary", self._summary)
        r.add_post("/stats/summary", self._summary)
        r.add_get("/metrics", self._metrics)
        r.add_get("/metrics/resource", self._resource_metrics)
        r.add_get("/configz", self._configz)
        r.add_get("/logs/", self._host_logs)
        r.add_get("/logs/{path:.+}", self._host_logs)
        return app

    async def run(self) -> None:
        opts = self.options
        runner = web.AppRunner(
            self.application(),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
            access_log=None,  # no headers logged: _request_log writes one line per request
            logger=_ConnectionLog(logging.getLogger("aiohttp.server"), {}),
            keepalive_timeout=opts.keepalive_timeout,
            max_line_size=MAX_LINE_SIZE,
            max_field_size=MAX_FIELD_SIZE,
        )
        try:
            # the serving certificate may be made now (a key, files): off the loop
            context = await asyncio.to_thread(self.ssl_context)
            await runner.setup()
            site = web.TCPSite(runner, opts.address, opts.port, ssl_context=context)
            await site.start()
            addresses = runner.addresses
            if addresses:
                self.port = int(addresses[0][1])
            log.info("kubelet API listening on https://%s:%d", opts.address, self.port)
            self.ready.set()
            await asyncio.Future()  # until cancelled
        finally:
            self.ready.clear()
            self._closing.set()
            await runner.cleanup()

    # --- routes --------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        failed = [(name, why) for name, why in self.view.health() if why is not None]
        if not failed:
            return _text(200, "ok")
        lines = [f"[-]{name} failed: {why}" for name, why in failed]
        return _text(500, "\n".join([*lines, "healthz check failed"]))

    async def _pods(self, request: web.Request) -> web.Response:
        body = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": self.view.pods()}
        return web.json_response(body, dumps=_dumps)

    async def _running_pods(self, request: web.Request) -> web.Response:
        body = {
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {},
            "items": self.view.running_pods(),
        }
        return web.json_response(body, dumps=_dumps)

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace, pod, container = _names(request)
        try:
            if query_bool(request, "follow"):
                with self.streams.hold(request):
                    return await stream_container_logs(request, self.view, self._closing.is_set)
            return await stream_container_logs(request, self.view, self._closing.is_set)
        except errors.NotFound as exc:
            if not self._has_container(namespace, pod, container):
                raise
            # As the kubelet: a container that is there but has no such log (no previous
            # instance, not started yet) is 400, whose text the API server passes on to
            # kubectl; of a 404 it only says "the server could not find the resource".
            raise errors.InvalidArgument(exc.message) from None

    def _has_container(self, namespace: str, pod: str, container: str) -> bool:
        for found in self.view.pods():
            meta = found.get("metadata") or {}
            if meta.get("namespace") == namespace and meta.get("name") == pod:
                spec = found.get("spec") or {}
                kinds = ("containers", "initContainers", "ephemeralContainers")
                return any(c.get("name") == container for k in kinds for c in spec.get(k) or ())
        return False

    async def _run(self, request: web.Request) -> web.Response:
        namespace, pod, container = _names(request)
        cmd = request.query.get("cmd", "")
        try:
            command = shlex.split(cmd)
        except ValueError as exc:
            raise errors.InvalidArgument(f"cmd: {exc}") from None
        if not command:
            raise errors.InvalidArgument("cmd is required: /run/NS/POD/CONTAINER?cmd=...")
        stdout, stderr, _ = await self.view.exec(namespace, pod, container, command, 0)
        return web.Response(body=stdout + stderr, content_type="text/plain")

    async def _stream(self, request: web.Request, *, kind: str) -> web.StreamResponse:
        namespace, pod, container = _names(request)
        command = list(request.query.getall("command", []))
        if kind == "exec" and not command:
            raise errors.InvalidArgument("command is required: ?command=ARG&command=ARG...")
        tty = _flag(request, "tty")
        stdin = _flag(request, "input", "stdin")
        stdout = _flag(request, "output", "stdout")
        stderr = _flag(request, "error", "stderr")
        if tty and stderr:
            stderr = False  # a terminal has one output stream, as the kubelet decides
        if not (stdin or stdout or stderr):
            raise errors.InvalidArgument("you must specify at least 1 of stdin, stdout, stderr")
        with self.streams.hold(request):
            url = await self.view.stream_url(
                kind,
                namespace,
                pod,
                container,
                command,
                tty=tty,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
            )
            return await proxy_stream(
                request, url, idle_timeout=self.options.streaming_idle_timeout
            )

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        namespace, pod, _ = _names(request, container=False)
        ports: list[int] = []
        for raw in request.query.getall("ports", []) + request.query.getall("port", []):
            for text in filter(None, raw.split(",")):
                if not text.isdigit() or not 0 < int(text) < 65536:
                    raise errors.InvalidArgument(f"ports: {text!r} is not a port in 1..65535")
                ports.append(int(text))
        with self.streams.hold(request):
            url = await self.view.port_forward_url(namespace, pod, ports)
            return await proxy_stream(
                request, url, idle_timeout=self.options.streaming_idle_timeout
            )

    def _stats(self) -> StatsSource:
        if self.stats is None:
            raise errors.Unavailable("this node serves no stats")
        return self.stats

    async def _summary(self, request: web.Request) -> web.Response:
        only = query_bool(request, "only_cpu_and_memory")
        summary = await self._stats().summary()
        if only:
            summary = _cpu_and_memory_only(summary)
        return web.json_response(summary, dumps=_dumps)

    async def _metrics(self, request: web.Request) -> web.Response:
        return _prometheus(self._stats().metrics_text())

    async def _resource_metrics(self, request: web.Request) -> web.Response:
        return _prometheus(await self._stats().resource_metrics_text())

    async def _configz(self, request: web.Request) -> web.Response:
        if self.configz is None:
            raise errors.NotFound("this node has no configuration to show")
        return web.json_response({"kubeletconfig": dict(self.configz())}, dumps=_dumps)

    async def _host_logs(self, request: web.Request) -> web.StreamResponse:
        """The host's log directory, read-only: a listing for a directory, the bytes of
        a file. Nothing outside the directory is reached (``..`` and symlinks that
        leave it are 404)."""
        relative = request.match_info.get("path", "")
        root = self.options.host_log_dir
        target = await asyncio.to_thread(_inside, root, relative)
        if target is None:
            raise errors.NotFound(f"no such log: /logs/{relative}")
        info = await asyncio.to_thread(os.stat, target)
        if stat.S_ISDIR(info.st_mode):
            entries = await asyncio.to_thread(_listing, target)
            return web.Response(text="\n".join(entries) + "\n", content_type="text/plain")
        if not stat.S_ISREG(info.st_mode):
            raise errors.NotFound(f"no such log: /logs/{relative}")
        return web.FileResponse(target, headers={"Content-Type": "text/plain"})


def _prometheus(text: str) -> web.Response:
    return web.Response(
        body=text.encode(),
        headers={"Content-Type": METRICS_CONTENT_TYPE, "X-Content-Type-Options": "nosniff"},
    )


def _inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` resolved, if it exists and stays under ``root``."""
    if "\x00" in relative:
        return None
    base = root.resolve()
    try:
        target = (base / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if target != base and base not in target.parents:
        return None
    return target


def _listing(directory: Path) -> list[str]:
    names = []
    for entry in sorted(directory.iterdir()):
        with contextlib.suppress(OSError):
            names.append(entry.name + ("/" if entry.is_dir() else ""))
    return names


def _cpu_and_memory_only(summary: dict[str, Any]) -> dict[str, Any]:
    """The Summary with only cpu and memory, as ``only_cpu_and_memory=true`` asks."""

    def keep(entry: Mapping[str, Any], *extra: str) -> dict[str, Any]:
        wanted = ("cpu", "memory", "startTime", *extra)
        return {k: v for k, v in entry.items() if k in wanted}

    node = keep(summary.get("node") or {}, "nodeName", "systemContainers")
    pods = []
    for pod in summary.get("pods") or ():
        kept = keep(pod, "podRef")
        kept["containers"] = [keep(c, "name") for c in pod.get("containers") or ()]
        pods.append(kept)
    return {"node": node, "pods": pods}


def make_server(
    view: PublicView,
    options: ServingOptions,
    *,
    root_dir: Path,
    node_ips: list[str],
    api: Any | None,
    stats: StatsSource | None = None,
    configz: Callable[[], Mapping[str, Any]] | None = None,
) -> KubeletServer:
    """The kubelet API as the flags describe it: its certificate (the operator's, or
    one made under ``root_dir``), who is let in, and what they may do. ``api`` is the
    node's API client (``kubernetes_asyncio`` ``ApiClient``) for the token and access
    reviews."""
    has_api = api is not None
    auth = build_auth(
        view.node_name,
        api=api,
        x509=options.client_ca_file is not None,
        token_webhook=options.token_webhook(has_api),
        anonymous=options.anonymous_auth,
        authorization_mode=options.authorizer(has_api),
    )

    def context() -> ssl.SSLContext:
        cert = ensure_serving_certificate(
            root_dir,
            node_name=view.node_name,
            hostname=socket.gethostname(),
            node_ips=node_ips,
            tls_cert_file=options.tls_cert_file,
            tls_private_key_file=options.tls_private_key_file,
        )
        return server_ssl_context(
            cert.cert_file, cert.key_file, client_ca_file=options.client_ca_file
        )

    return KubeletServer(
        view, ssl_context=context, auth=auth, stats=stats, configz=configz, options=options
    )


__all__ = ("KubeletServer", "PublicView", "ServingOptions", "StatsSource", "make_server")
