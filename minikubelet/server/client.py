"""The client of the kubelet's local API (:mod:`minikubelet.server.api`), for the CLI.

One :class:`aiohttp.ClientSession` over a unix socket per client, made on first
use; close it with :meth:`LocalClient.close` or ``async with``. Every call has a
deadline except a followed log and an exec without a timeout, which last as long
as they last. Error answers come back as the :mod:`minikubelet.errors` taxonomy
(404 NotFound, 400 InvalidArgument, 409 FailedPrecondition, 503 Unavailable,
504 DeadlineExceeded, other Internal); no kubelet on the socket is a
:class:`KubeletUnreachable`.
"""

from __future__ import annotations

import base64
import contextlib
import json as jsonlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple

import aiohttp

from minikubelet import errors
from minikubelet.cri.trace import CallRecord

#: The deadline of a call, in seconds.
DEFAULT_TIMEOUT: Final = 30.0
#: What an exec may take beyond its own timeout (the runtime's round trips).
EXEC_MARGIN: Final = 10.0

_ERRORS_BY_STATUS: Final[dict[int, type[errors.CRIError]]] = {
    400: errors.InvalidArgument,
    404: errors.NotFound,
    409: errors.FailedPrecondition,
    503: errors.Unavailable,
    504: errors.DeadlineExceeded,
}


class KubeletUnreachable(ConnectionError):
    """Nothing answers on the socket: the kubelet is not running (or died)."""


class ExecResult(NamedTuple):
    stdout: bytes
    stderr: bytes
    exit_code: int


def _params(**values: object) -> dict[str, str]:
    """Query parameters, leaving out the unset ones; booleans as the API spells them."""
    params: dict[str, str] = {}
    for name, value in values.items():
        if value is None or value is False:
            continue
        params[name] = "true" if value is True else str(value)
    return params


class LocalClient:
    def __init__(self, socket_path: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LocalClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _unreachable(self) -> KubeletUnreachable:
        return KubeletUnreachable(
            f"no kubelet is listening on {self.socket_path}: start it with `minikubelet run`"
        )

    @contextlib.asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | list[tuple[str, str]] | None = None,
        json: Any = None,
        timeout: aiohttp.ClientTimeout | None = None,
        allow_redirects: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=str(self.socket_path)),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        try:
            response = await self._session.request(
                method,
                f"http://localhost{path}",
                params=params,
                json=json,
                timeout=timeout or aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=allow_redirects,
            )
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PermissionError):
                raise KubeletUnreachable(
                    f"permission denied on {self.socket_path}: "
                    "the kubelet runs as another user (try sudo)"
                ) from None
            raise self._unreachable() from None
        except aiohttp.ServerDisconnectedError:
            raise KubeletUnreachable(
                f"the kubelet on {self.socket_path} closed the connection"
            ) from None
        async with response:
            if response.status >= 400:
                raise await _error(response)
            yield response

    async def _get_json(self, path: str) -> Any:
        async with self._request("GET", path) as response:
            return await response.json()

    async def healthz(self) -> str:
        async with self._request("GET", "/healthz") as response:
            return await response.text()

    async def pod_list(self) -> dict[str, Any]:
        """The v1 PodList as the kubelet sends it."""
        body: dict[str, Any] = await self._get_json("/pods")
        return body

    async def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self.pod_list())["items"]
        return items

    async def rejected(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._get_json("/rejected"))["items"]
        return items

    async def events(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (await self._get_json("/events"))["items"]
        return items

    async def status(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._get_json("/status")
        return body

    async def logs(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        follow: bool = False,
        previous: bool = False,
        tail_lines: int | None = None,
        timestamps: bool = False,
        since_seconds: int | None = None,
        limit_bytes: int | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The container's log in chunks as they arrive; with ``follow``, until it exits."""
        params = _params(
            follow=follow,
            previous=previous,
            tailLines=tail_lines,
            timestamps=timestamps,
            sinceSeconds=since_seconds,
            limitBytes=limit_bytes,
        )
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.timeout,
            sock_read=None if follow else self.timeout,
        )
        path = f"/containerLogs/{namespace}/{pod}/{container}"
        async with self._request("GET", path, params=params, timeout=timeout) as response:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            except aiohttp.ClientPayloadError:
                raise KubeletUnreachable(
                    f"the kubelet on {self.socket_path} ended the log stream early"
                ) from None

    async def trace(
        self, *, pod: str | None = None, follow: bool = False
    ) -> AsyncGenerator[CallRecord, None]:
        """The kubelet's recorded CRI calls (of one pod), then new ones with ``follow``."""
        params = _params(pod=pod, follow=follow)
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=None if follow else self.timeout
        )
        async with self._request("GET", "/trace", params=params, timeout=timeout) as response:
            try:
                async for line in response.content:
                    if line.strip():
                        yield CallRecord.from_json(line.decode())
            except aiohttp.ClientPayloadError:
                raise KubeletUnreachable(
                    f"the kubelet on {self.socket_path} ended the trace stream early"
                ) from None

    async def exec(
        self, namespace: str, pod: str, container: str, command: list[str], *, timeout: int = 0
    ) -> ExecResult:
        """Run ``command`` in the container (ExecSync); ``timeout`` 0 means none."""
        deadline = aiohttp.ClientTimeout(total=timeout + EXEC_MARGIN if timeout else None)
        path = f"/exec/{namespace}/{pod}/{container}"
        body = {"command": command, "timeout": timeout}
        async with self._request("POST", path, json=body, timeout=deadline) as response:
            answer = await response.json()
        return ExecResult(
            base64.b64decode(answer["stdout"]),
            base64.b64decode(answer["stderr"]),
            int(answer["exitCode"]),
        )

    async def _stream_location(self, path: str, params: list[tuple[str, str]]) -> str:
        async with self._request("GET", path, params=params, allow_redirects=False) as response:
            location = response.headers.get("Location", "")
        if response.status != 302 or not location:
            raise errors.Internal(f"the kubelet gave no streaming URL for {path}")
        return location

    async def stream_url(
        self,
        kind: str,
        namespace: str,
        pod: str,
        container: str,
        command: list[str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> str:
        """The runtime's streaming URL for an ``exec`` or ``attach`` (CRI Exec / Attach)."""
        params = [("command", arg) for arg in command]
        flags = {"tty": tty, "stdin": stdin, "stdout": stdout, "stderr": stderr}
        params += [(name, "true" if value else "false") for name, value in flags.items()]
        return await self._stream_location(f"/{kind}/{namespace}/{pod}/{container}", params)

    async def port_forward_url(self, namespace: str, pod: str, ports: list[int]) -> str:
        params = [("port", str(port)) for port in ports]
        return await self._stream_location(f"/portForward/{namespace}/{pod}", params)

    async def delete_pod(
        self, namespace: str, pod: str, *, grace_period_seconds: int | None = None
    ) -> None:
        params = _params(gracePeriodSeconds=grace_period_seconds)
        async with self._request("DELETE", f"/pods/{namespace}/{pod}", params=params):
            pass


async def _error(response: aiohttp.ClientResponse) -> errors.CRIError:
    """The taxonomy error for an error answer."""
    text = await response.text()
    try:
        message = str(jsonlib.loads(text)["error"])
    except (ValueError, KeyError, TypeError):
        message = text.strip() or f"HTTP {response.status} {response.reason}"
    return _ERRORS_BY_STATUS.get(response.status, errors.Internal)(message)
