"""Run one probe attempt, the way the kubelet's prober does (``pkg/probe/*``, ``prober.go``).

:func:`run_probe` returns ``(ProbeResult, output)`` and never raises for a probe that
failed or could not run:

* ``exec``: the command runs through ``exec_runner`` (``ExecSync`` with the probe's
  ``timeoutSeconds``); exit code 0 is success, anything else failure, and the output is
  stdout then stderr, cut at 10 KiB. ``DeadlineExceeded`` from the runtime is a failure
  whose output is ``command "..." timed out`` (the ExecProbeTimeout behaviour); any other
  runtime error is ``UNKNOWN`` (the kubelet's "probe errored").
* ``httpGet``: ``GET scheme://host:port/path`` with ``host`` defaulting to the pod IP,
  ``port`` a number or the name of one of the container's ports, the probe's headers, and
  ``User-Agent: kube-probe/<major>.<minor>`` and ``Accept: */*`` unless the probe sets them.
  TLS certificates are not verified. Redirects are followed only while they stay on the
  same host name, at most 9 times (the 10th redirect is an error); a redirect elsewhere
  ends the probe with that 3xx response. ``200 <= code < 400`` succeeds, and a 3xx answer
  is a success with a *warning* ("Probe terminated redirects, ..."). Other codes fail with
  ``HTTP probe failed with statuscode: N``; connection errors and timeouts fail with Go's
  message shape (``Get "url": ...``). The body is read up to 10 KiB.
* ``tcpSocket``: a TCP connection to ``host`` (default the pod IP) and the port is opened
  and closed; a refused or timed-out connection fails.
* ``grpc``: ``grpc.health.v1.Health/Check`` on the pod IP and the probe's port, with the
  probe's ``service``; ``SERVING`` succeeds, every other answer or error fails, with the
  messages of ``pkg/probe/grpc``.

A port that does not resolve, or a probe with no handler, is ``UNKNOWN`` with the
kubelet's error text (``strconv.Atoi: parsing "http": invalid syntax``).

Left out: ``$(VAR)`` expansion of exec commands from the container's env, and the
``exec`` probe's 10 KiB cut happens after the runtime returned the whole output.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Protocol

import aiohttp
import grpc
import grpc.aio
from yarl import URL

from minikubelet.api.pod import ContainerPort, Probe
from minikubelet.errors import CRIError, DeadlineExceeded

logger = logging.getLogger(__name__)

#: The Kubernetes minor this node claims in ``User-Agent: kube-probe/1.33``.
KUBE_VERSION: Final = "1.33"
#: The kubelet stops reading probe output and HTTP bodies here.
MAX_OUTPUT: Final = 10 * 1024
MAX_REDIRECTS: Final = 10
_REDIRECT_CODES: Final = frozenset({301, 302, 303, 307, 308})
HEALTH_CHECK_METHOD: Final = "/grpc.health.v1.Health/Check"
#: ``grpc.health.v1.HealthCheckResponse.ServingStatus``.
SERVING_STATUS: Final = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
#: What ``strconv.Atoi`` accepts.
_GO_INT: Final = re.compile(r"[+-]?[0-9]+")


class ProbeResult(StrEnum):
    """One attempt's outcome (the kubelet's ``probe.Result``).

    ``WARNING`` counts as success (an HTTP probe that stopped at a redirect); ``UNKNOWN``
    means the probe could not run, and the worker throws such a result away.
    """

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"
    UNKNOWN = "unknown"


class ExecResult(Protocol):
    """What ``ExecSync`` answers; ``pb.ExecSyncResponse`` fits, and so does :class:`ExecOutput`."""

    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...
    @property
    def exit_code(self) -> int: ...


@dataclass(frozen=True, slots=True)
class ExecOutput:
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


#: ``(container_id, cmd, timeout_seconds) -> ExecResult``; ``CRIClient.exec_sync`` fits.
ExecRunner = Callable[[str, list[str], int], Awaitable[ExecResult]]


class PortError(ValueError):
    """A probe or hook port that does not resolve; the message is the kubelet's."""


def go_quote(text: str) -> str:
    """Go's ``%q`` for the strings that show up in messages (close enough for text)."""
    return json.dumps(text, ensure_ascii=False)


def go_duration(seconds: float) -> str:
    """Go's ``time.Duration`` text for whole and fractional seconds: ``1s``, ``1m30s``."""
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:g}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def join_host_port(host: str, port: int) -> str:
    """``net.JoinHostPort``: brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def resolve_container_port(port: object, ports: Sequence[ContainerPort]) -> int:
    """``probe.ResolveContainerPort``: a number, a port name, or a number written as a string."""
    value: int
    if isinstance(port, bool):
        raise PortError(f"intOrString had no kind: {port!r}")
    if isinstance(port, int):
        value = port
    elif isinstance(port, str):
        named = next((p.container_port for p in ports if p.name == port), None)
        if named is not None:
            value = named
        elif _GO_INT.fullmatch(port):
            value = int(port, 10)
        else:
            raise PortError(f"strconv.Atoi: parsing {go_quote(port)}: invalid syntax")
    else:
        raise PortError(f"intOrString had no kind: {port!r}")
    if 0 < value < 65536:
        return value
    raise PortError(f"invalid port number: {value}")


@dataclass(frozen=True, slots=True)
class HTTPGetRequest:
    url: str
    host: str
    headers: tuple[tuple[str, str], ...]


def http_get_request(
    action: Mapping[str, Any],
    *,
    pod_ip: str,
    container_ports: Sequence[ContainerPort],
    purpose: str = "probe",
) -> HTTPGetRequest:
    """``NewRequestForHTTPGetAction``: URL and headers for an ``httpGet`` probe or hook.

    Raises :class:`PortError` when the port does not resolve.
    """
    scheme = str(action.get("scheme") or "HTTP").lower()
    host = str(action.get("host") or pod_ip)
    port = resolve_container_port(action.get("port"), container_ports)
    path = str(action.get("path") or "")
    if path and not path.startswith("/"):
        path = "/" + path
    url = f"{scheme}://{join_host_port(host, port)}{path or '/'}"
    headers: list[tuple[str, str]] = []
    for item in action.get("httpHeaders") or ():
        if isinstance(item, Mapping):
            headers.append((str(item.get("name", "")), str(item.get("value", ""))))
    names = {name.lower() for name, _ in headers}
    if "user-agent" not in names:
        headers.append(("User-Agent", f"kube-{purpose}/{KUBE_VERSION}"))
    if "accept" not in names:
        headers.append(("Accept", "*/*"))
    else:
        # An Accept header set to "" means "send none".
        headers = [(n, v) for n, v in headers if n.lower() != "accept" or v]
    return HTTPGetRequest(url=url, host=host, headers=tuple(headers))


def _hostname(url: URL) -> str:
    host = url.host or ""
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


async def _read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await response.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _http_error(url: str, exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError):
        return (
            f"Get {go_quote(url)}: context deadline exceeded "
            "(Client.Timeout exceeded while awaiting headers)"
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        target = join_host_port(exc.host, exc.port or 0)
        if isinstance(exc.os_error, ConnectionRefusedError):
            return f"Get {go_quote(url)}: dial tcp {target}: connect: connection refused"
        reason = exc.os_error.strerror or str(exc.os_error)
        return f"Get {go_quote(url)}: dial tcp {target}: {reason.lower()}"
    return f"Get {go_quote(url)}: {exc}"


class HTTPGetError(Exception):
    """The request did not produce a response; the message is Go's ``*url.Error`` text."""


async def http_get(
    request: HTTPGetRequest,
    *,
    timeout: float | None,
    follow_non_local_redirects: bool,
    verify_tls: bool,
    read_limit: int = MAX_OUTPUT,
) -> tuple[int, bytes]:
    """GET with the kubelet's redirect rules; ``(status, body)`` or :class:`HTTPGetError`.

    With ``follow_non_local_redirects`` false (probes), a redirect to another host name
    ends the request with the 3xx response itself; either way the 10th redirect is an error.
    """
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    connector = aiohttp.TCPConnector(ssl=verify_tls, force_close=True)
    current = URL(request.url)
    first_host = _hostname(current)
    try:
        async with aiohttp.ClientSession(
            timeout=client_timeout, connector=connector, trust_env=False
        ) as session:
            redirects = 0
            while True:
                async with session.get(
                    current, headers=list(request.headers), allow_redirects=False
                ) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECT_CODES and location:
                        target = current.join(URL(location))
                        local = _hostname(target) == first_host
                        if local or follow_non_local_redirects:
                            redirects += 1
                            if redirects >= MAX_REDIRECTS:
                                raise HTTPGetError(
                                    f"Get {go_quote(str(target))}: "
                                    f"stopped after {MAX_REDIRECTS} redirects"
                                )
                            current = target
                            continue
                    body = await _read_at_most(response, read_limit)
                    return response.status, body
    except HTTPGetError:
        raise
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
        raise HTTPGetError(_http_error(str(current), exc, timeout or 0)) from exc


async def _probe_http(
    action: Mapping[str, Any],
    *,
    pod_ip: str,
    container_ports: Sequence[ContainerPort],
    timeout: float,
) -> tuple[ProbeResult, str]:
    try:
        request = http_get_request(action, pod_ip=pod_ip, container_ports=container_ports)
    except PortError as exc:
        return ProbeResult.UNKNOWN, str(exc)
    try:
        status, raw = await http_get(
            request, timeout=timeout, follow_non_local_redirects=False, verify_tls=False
        )
    except HTTPGetError as exc:
        return ProbeResult.FAILURE, str(exc)
    body = raw.decode("utf-8", "replace")
    if 200 <= status < 400:
        if status >= 300:
            return ProbeResult.WARNING, f"Probe terminated redirects, Response body: {body}"
        return ProbeResult.SUCCESS, body
    # The kubelet keeps the body out of the message (kubernetes/kubernetes#99425).
    return ProbeResult.FAILURE, f"HTTP probe failed with statuscode: {status}"


async def _probe_tcp(host: str, port: int, timeout: float) -> tuple[ProbeResult, str]:
    target = join_host_port(host, port)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult.FAILURE, f"dial tcp {target}: i/o timeout"
    except ConnectionRefusedError:
        return ProbeResult.FAILURE, f"dial tcp {target}: connect: connection refused"
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return ProbeResult.FAILURE, f"dial tcp {target}: {reason.lower()}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError as exc:
        logger.debug("closing TCP probe socket to %s: %s", target, exc)
    return ProbeResult.SUCCESS, ""


def encode_health_check_request(service: str) -> bytes:
    """``HealthCheckRequest{string service = 1}`` in protobuf wire format."""
    data = service.encode()
    if not data:
        return b""
    return b"\x0a" + _varint(len(data)) + data


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def decode_health_check_response(data: bytes) -> int:
    """``HealthCheckResponse.status`` (field 1, an enum); 0 when absent."""
    status = 0
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            if field == 1:
                status = value
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            pos += length
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    if pos > len(data):
        raise ValueError("truncated message")
    return status


def _identity(data: bytes) -> bytes:
    return data


async def _probe_grpc(
    host: str, port: int, service: str, timeout: float
) -> tuple[ProbeResult, str]:
    addr = join_host_port(host, port)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    options = [("grpc.primary_user_agent", f"kube-probe/{KUBE_VERSION}")]
    async with grpc.aio.insecure_channel(addr, options=options) as channel:
        try:
            async with asyncio.timeout(timeout):
                await channel.channel_ready()
        except TimeoutError:
            return ProbeResult.FAILURE, (
                f"timeout: failed to connect service {go_quote(addr)} within "
                f"{go_duration(timeout)}: context deadline exceeded"
            )
        check = channel.unary_unary(
            HEALTH_CHECK_METHOD,
            request_serializer=_identity,
            response_deserializer=_identity,
        )
        remaining = max(deadline - loop.time(), 0.001)
        try:
            reply = await check(encode_health_check_request(service), timeout=remaining)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return ProbeResult.FAILURE, (
                    "error: this server does not implement the grpc health protocol "
                    f"(grpc.health.v1.Health): {exc.details() or ''}"
                )
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return ProbeResult.FAILURE, (
                    f"timeout: health rpc did not complete within {go_duration(timeout)}"
                )
            name = "".join(part.capitalize() for part in code.name.split("_"))
            return ProbeResult.FAILURE, (
                f"error: health rpc probe failed: rpc error: code = {name} "
                f"desc = {exc.details() or ''}"
            )
    try:
        status = decode_health_check_response(bytes(reply))
    except ValueError as exc:
        return ProbeResult.FAILURE, f"error: health rpc probe failed: {exc}"
    if status != 1:
        name = SERVING_STATUS.get(status, str(status))
        return ProbeResult.FAILURE, f"service unhealthy (responded with {go_quote(name)})"
    return ProbeResult.SUCCESS, "service healthy"


def command_output(result: ExecResult, limit: int = MAX_OUTPUT) -> str:
    """stdout then stderr, as the kubelet's ``RunInContainer`` joins them, cut at ``limit``."""
    return (bytes(result.stdout) + bytes(result.stderr))[:limit].decode("utf-8", "replace")


async def _probe_exec(
    command: list[str], *, container_id: str, timeout: int, exec_runner: ExecRunner
) -> tuple[ProbeResult, str]:
    try:
        result = await exec_runner(container_id, command, timeout)
    except DeadlineExceeded:
        return ProbeResult.FAILURE, f"command {go_quote(' '.join(command))} timed out"
    except CRIError as exc:
        return ProbeResult.UNKNOWN, str(exc)
    output = command_output(result)
    return (ProbeResult.SUCCESS if result.exit_code == 0 else ProbeResult.FAILURE), output


async def run_probe(
    probe: Probe,
    *,
    container_id: str,
    pod_ip: str,
    container_ports: Sequence[ContainerPort],
    exec_runner: ExecRunner,
) -> tuple[ProbeResult, str]:
    """Run ``probe`` once against one container instance; never raises for a failed probe."""
    timeout = max(probe.timeout_seconds, 1)
    body = probe.raw.get(probe.handler) if probe.handler else None
    action: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    if probe.handler == "exec":
        command = [str(arg) for arg in action.get("command") or ()]
        return await _probe_exec(
            command, container_id=container_id, timeout=timeout, exec_runner=exec_runner
        )
    if probe.handler == "httpGet":
        return await _probe_http(
            action, pod_ip=pod_ip, container_ports=container_ports, timeout=timeout
        )
    if probe.handler == "tcpSocket":
        try:
            port = resolve_container_port(action.get("port"), container_ports)
        except PortError as exc:
            return ProbeResult.UNKNOWN, str(exc)
        return await _probe_tcp(str(action.get("host") or pod_ip), port, timeout)
    if probe.handler == "grpc":
        port_value = action.get("port")
        if not isinstance(port_value, int) or isinstance(port_value, bool):
            return ProbeResult.UNKNOWN, f"invalid port number: {port_value}"
        service = action.get("service")
        return await _probe_grpc(
            pod_ip, port_value, service if isinstance(service, str) else "", timeout
        )
    return ProbeResult.UNKNOWN, "missing probe handler"
