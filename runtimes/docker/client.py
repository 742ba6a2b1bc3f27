"""A small async client of the Docker Engine API over its unix socket.

The only module that speaks HTTP to dockerd. Paths are versioned
(``/v1.41/...``); dockerd's errors become :mod:`minikubelet.errors` carrying
dockerd's own message: 400 InvalidArgument, 404 NotFound, 409 AlreadyExists (or
FailedPrecondition when the conflict is a container's state), 503 and an
unreachable socket Unavailable, anything else a plain CRIError (UNKNOWN).

Every request opens its own connection (``force_close``): a unix socket connect
costs microseconds, and a pooled connection can never be stale after dockerd
restarts.

Exec and attach streams are "hijacked" connections: the request asks for
``Upgrade: tcp``, dockerd answers ``101 UPGRADED`` and the connection becomes a raw
bidirectional stream (stdcopy frames without a TTY, terminal bytes with one). aiohttp
cannot hand such a connection over, so :meth:`DockerClient.hijack` speaks that one
HTTP/1.1 exchange itself on a socket of its own.
"""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import struct
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, TypedDict
from urllib.parse import quote, urlencode

import aiohttp

from minikubelet.errors import (
    AlreadyExists,
    CRIError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

API_VERSION: Final = "1.41"  # dockerd 20.10
DEFAULT_HOST: Final = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT: Final = 60.0
STDOUT: Final = 1
STDERR: Final = 2
SYSTEMERR: Final = 3  # stdcopy's stream of dockerd's own errors (newer API versions)
HIJACK_HEAD_LIMIT: Final = 64 * 1024  # a response head larger than this is not dockerd's
HIJACK_ERROR_LIMIT: Final = 1024 * 1024  # how much of an error body is read
_RAW_STREAM_TYPES: Final = (
    "application/vnd.docker.raw-stream",
    "application/vnd.docker.multiplexed-stream",
)
_HEADER = struct.Struct(">BxxxL")  # stream, 3 pad bytes, big-endian payload size
_STATE_CONFLICTS = ("is not running", "is paused", "is restarting", "is already in progress")


# -- raw API bodies -------------------------------------------------------------------------


class ContainerState(TypedDict, total=False):
    Status: str  # created running paused restarting removing exited dead
    Running: bool
    OOMKilled: bool
    Pid: int
    ExitCode: int
    Error: str
    StartedAt: str
    FinishedAt: str


class ContainerConfig(TypedDict, total=False):
    Image: str
    Labels: dict[str, str] | None
    Tty: bool
    OpenStdin: bool
    StdinOnce: bool
    User: str
    Hostname: str


class ContainerInspect(TypedDict, total=False):
    Id: str
    Name: str
    Created: str
    Image: str
    State: ContainerState
    Config: ContainerConfig
    HostConfig: dict[str, Any]
    NetworkSettings: dict[str, Any]
    SizeRw: int


class ContainerSummary(TypedDict, total=False):
    Id: str
    Names: list[str]
    Image: str
    ImageID: str
    Labels: dict[str, str] | None
    State: str
    Created: int
    NetworkSettings: dict[str, Any]


class ImageConfig(TypedDict, total=False):
    User: str
    Labels: dict[str, str] | None


class ImageInspect(TypedDict, total=False):
    Id: str
    RepoTags: list[str] | None
    RepoDigests: list[str] | None
    Size: int
    Config: ImageConfig


class ExecInspect(TypedDict, total=False):
    Running: bool
    ExitCode: int | None
    Pid: int


class ProcessList(TypedDict, total=False):
    Titles: list[str]
    Processes: list[list[str]] | None


class Event(TypedDict, total=False):
    Type: str
    Action: str
    Actor: dict[str, Any]
    id: str
    timeNano: int


# -- small pure helpers ---------------------------------------------------------------------


def docker_time_ns(text: str | None) -> int:
    """Nanoseconds since the epoch of dockerd's RFC 3339 times; 0 for Go's zero time."""
    if not text or text.startswith("0001-01-01"):
        return 0
    base, _, rest = text.partition(".")
    frac = ""
    tz = "Z"
    if rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        frac, tz = rest[:digits], rest[digits:]
    else:
        for i in range(len(base) - 1, 9, -1):
            if base[i] in "Z+-":
                base, tz = base[:i], base[i:]
                break
    offset = "+00:00" if tz in ("Z", "z", "") else tz
    seconds = int(datetime.fromisoformat(base + offset).timestamp())
    return seconds * 1_000_000_000 + int((frac + "000000000")[:9])


def registry_auth(auth: Mapping[str, str]) -> str:
    """The ``X-Registry-Auth`` header for CRI AuthConfig fields (base64url JSON)."""
    body: dict[str, str] = {}
    username, password = auth.get("username", ""), auth.get("password", "")
    if not username and auth.get("auth"):
        decoded = base64.b64decode(auth["auth"] + "==").decode(errors="replace")
        username, _, password = decoded.partition(":")
    for key, value in (
        ("username", username),
        ("password", password),
        ("serveraddress", auth.get("server_address", "")),
        ("identitytoken", auth.get("identity_token", "")),
        ("registrytoken", auth.get("registry_token", "")),
    ):
        if value:
            body[key] = value
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


@dataclass
class FrameDecoder:
    """Demultiplex dockerd's attach/logs stream: 8-byte headers, then the payload."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buffer) >= _HEADER.size:
            stream, size = _HEADER.unpack_from(self._buffer)
            end = _HEADER.size + size
            if len(self._buffer) < end:
                break
            frames.append((stream, bytes(self._buffer[_HEADER.size : end])))
            del self._buffer[:end]
        return frames

    @property
    def pending(self) -> int:
        return len(self._buffer)


def _error_for(status: int, message: str) -> CRIError:
    if status == 400:
        return InvalidArgument(message)
    if status == 404:
        return NotFound(message)
    if status == 409:
        if any(s in message for s in _STATE_CONFLICTS):
            return FailedPrecondition(message)
        return AlreadyExists(message)
    if status == 503:
        return Unavailable(message)
    return CRIError(message)


def _filters(filters: Mapping[str, Sequence[str]]) -> str:
    return json.dumps({k: list(v) for k, v in filters.items() if v})


# -- the client -----------------------------------------------------------------------------


class DockerClient:
    """Engine API calls as coroutines. No I/O until the first call; :meth:`close` at the end."""

    def __init__(
        self, host: str = DEFAULT_HOST, *, api_version: str = API_VERSION, timeout: float = 60.0
    ) -> None:
        if not host.startswith("unix://") or not host[len("unix://") :].startswith("/"):
            raise ValueError(f"docker host {host!r}: expected unix:///PATH")
        self.host = host
        self.socket_path = host[len("unix://") :]
        self.api_version = api_version
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No pool limit: every request has its own connection (force_close), and
            # followed logs and events hold theirs for as long as they last; a limit
            # would make short calls wait behind them and time out.
            connector = aiohttp.UnixConnector(path=self.socket_path, force_close=True, limit=0)
            self._session = aiohttp.ClientSession(
                connector=connector, base_url="http://docker", auto_decompress=False
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _url(self, path: str) -> str:
        return f"/v{self.api_version}{path}"

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = -1.0,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response whose status is below 400 (304 included); errors raised as CRIErrors."""
        total = self.timeout if timeout == -1.0 else timeout
        client_timeout = aiohttp.ClientTimeout(total=total, connect=10)
        kwargs: dict[str, Any] = {"params": params, "timeout": client_timeout}
        if body is not None:
            kwargs["json"] = body
        elif data is not None:
            kwargs["data"] = data
        if headers:
            kwargs["headers"] = dict(headers)
        try:
            async with self._http().request(method, self._url(path), **kwargs) as resp:
                if resp.status >= 400:
                    raw = await resp.read()
                    try:
                        message = str(json.loads(raw).get("message", "")) or raw.decode()
                    except (ValueError, AttributeError):
                        message = raw.decode(errors="replace")
                    raise _error_for(resp.status, message.strip() or f"HTTP {resp.status}")
                yield resp
        except TimeoutError:  # before OSError, of which it is a subclass
            raise Unavailable(f"dockerd at {self.host} did not answer {method} {path}") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError) as exc:
            raise Unavailable(f"cannot reach dockerd at {self.host}: {exc}") from None

    async def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        timeout: float | None = -1.0,
    ) -> Any:
        """One request; the decoded JSON body, or None for an empty one (204, 304)."""
        async with self._request(method, path, params=params, body=body, timeout=timeout) as resp:
            raw = await resp.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return raw.decode(errors="replace")

    # -- system ---------------------------------------------------------------------------

    async def ping(self) -> None:
        async with self._request("GET", "/_ping", timeout=5) as resp:
            await resp.read()

    async def version(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/version")
        return result

    async def info(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/info")
        return result

    async def system_df(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("GET", "/system/df", timeout=120)
        return result

    async def daemon_pid(self) -> int | None:
        """dockerd's process ID, from the peer credentials of its socket (None if unknown)."""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path), timeout=5
            )
        except (OSError, TimeoutError):
            return None
        try:
            sock: socket.socket = writer.get_extra_info("socket")
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            pid, _, _ = struct.unpack("3i", creds)
            return pid or None
        finally:
            writer.close()

    # -- containers -----------------------------------------------------------------------

    async def create_container(self, name: str, body: Mapping[str, Any]) -> str:
        result = await self.call("POST", "/containers/create", params={"name": name}, body=body)
        return str(result["Id"])

    async def start_container(self, container_id: str) -> None:
        await self.call("POST", f"/containers/{quote(container_id)}/start")

    async def stop_container(self, container_id: str, timeout: int) -> None:
        await self.call(
            "POST",
            f"/containers/{quote(container_id)}/stop",
            params={"t": str(timeout)},
            timeout=timeout + DEFAULT_TIMEOUT,
        )

    async def kill_container(self, container_id: str, signal: str = "SIGKILL") -> None:
        await self.call(
            "POST", f"/containers/{quote(container_id)}/kill", params={"signal": signal}
        )

    async def wait_container(self, container_id: str, timeout: float) -> int:
        result = await self.call(
            "POST",
            f"/containers/{quote(container_id)}/wait",
            params={"condition": "not-running"},
            timeout=timeout,
        )
        return int(result.get("StatusCode", 0)) if isinstance(result, dict) else 0

    async def remove_container(self, container_id: str) -> None:
        await self.call(
            "DELETE", f"/containers/{quote(container_id)}", params={"force": "1", "v": "1"}
        )

    async def inspect_container(self, container_id: str, *, size: bool = False) -> ContainerInspect:
        params = {"size": "1"} if size else None
        result: ContainerInspect = await self.call(
            "GET", f"/containers/{quote(container_id)}/json", params=params
        )
        return result

    async def list_containers(self, filters: Mapping[str, Sequence[str]]) -> list[ContainerSummary]:
        result: list[ContainerSummary] = await self.call(
            "GET", "/containers/json", params={"all": "1", "filters": _filters(filters)}
        )
        return result

    async def container_stats(self, container_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.call(
            "GET",
            f"/containers/{quote(container_id)}/stats",
            params={"stream": "false", "one-shot": "true"},
        )
        return result

    async def logs(
        self, container_id: str, *, tty: bool, since: str = "0", follow: bool = True
    ) -> AsyncIterator[list[tuple[int, bytes]]]:
        """Batches of (stream, payload), until the container stops (or at once, unfollowed).

        Without a TTY every frame is one message of the log driver, timestamp first;
        with one, the payload is raw terminal output (stream STDOUT).
        """
        params = {
            "stdout": "1",
            "stderr": "1",
            "timestamps": "1",
            "follow": "1" if follow else "0",
            "since": since,
        }
        async with self._request(
            "GET", f"/containers/{quote(container_id)}/logs", params=params, timeout=None
        ) as resp:
            decoder = FrameDecoder()
            try:
                async for chunk in resp.content.iter_any():
                    frames = [(STDOUT, chunk)] if tty else decoder.feed(chunk)
                    if frames:
                        yield frames
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                raise Unavailable(f"log stream from dockerd at {self.host} broke: {exc}") from None

    async def events(self, filters: Mapping[str, Sequence[str]]) -> AsyncIterator[Event]:
        async with self._request(
            "GET", "/events", params={"filters": _filters(filters)}, timeout=None
        ) as resp:
            try:
                async for line in resp.content:
                    if line.strip():
                        yield json.loads(line)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                raise Unavailable(
                    f"event stream from dockerd at {self.host} broke: {exc}"
                ) from None

    # -- exec -----------------------------------------------------------------------------

    async def create_exec(
        self, container_id: str, cmd: Sequence[str], *, tty: bool = False, stdin: bool = False
    ) -> str:
        result = await self.call(
            "POST",
            f"/containers/{quote(container_id)}/exec",
            body={
                "Cmd": list(cmd),
                "AttachStdin": stdin,
                "AttachStdout": True,
                "AttachStderr": True,
                "Tty": tty,
            },
        )
        return str(result["Id"])

    async def start_exec(self, exec_id: str) -> tuple[bytes, bytes]:
        """Run an exec attached; its (stdout, stderr) once it ends."""
        out, err = bytearray(), bytearray()
        async with self._request(
            "POST",
            f"/exec/{quote(exec_id)}/start",
            body={"Detach": False, "Tty": False},
            timeout=None,
        ) as resp:
            decoder = FrameDecoder()
            try:
                async for chunk in resp.content.iter_any():
                    for stream, payload in decoder.feed(chunk):
                        (err if stream == STDERR else out).extend(payload)
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
                raise Unavailable(f"exec stream from dockerd at {self.host} broke: {exc}") from None
        return bytes(out), bytes(err)

    async def inspect_exec(self, exec_id: str) -> ExecInspect:
        result: ExecInspect = await self.call("GET", f"/exec/{quote(exec_id)}/json")
        return result

    async def start_exec_stream(
        self, exec_id: str, *, tty: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Start an exec attached: its stdio as a hijacked connection (see :meth:`hijack`)."""
        return await self.hijack(
            "POST", f"/exec/{quote(exec_id)}/start", body={"Detach": False, "Tty": tty}
        )

    async def resize_exec(self, exec_id: str, width: int, height: int) -> None:
        """The terminal size of a started TTY exec (dockerd waits up to 10 s for the start)."""
        await self.call(
            "POST", f"/exec/{quote(exec_id)}/resize", params={"h": str(height), "w": str(width)}
        )

    # -- attach ---------------------------------------------------------------------------

    async def attach_container(
        self, container_id: str, *, stdin: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The container's stdio from now on (no replay: no ``logs=1``), hijacked."""
        params = {"stream": "1", "stdout": "1", "stderr": "1", "stdin": "1" if stdin else "0"}
        return await self.hijack("POST", f"/containers/{quote(container_id)}/attach", params=params)

    async def resize_container(self, container_id: str, width: int, height: int) -> None:
        await self.call(
            "POST",
            f"/containers/{quote(container_id)}/resize",
            params={"h": str(height), "w": str(width)},
        )

    async def top(self, container_id: str) -> ProcessList:
        """``ps`` of the container's processes (``ps -ef`` columns; PIDs as the host sees them)."""
        result: ProcessList = await self.call("GET", f"/containers/{quote(container_id)}/top")
        return result

    # -- hijacked connections -------------------------------------------------------------

    async def hijack(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """One request upgraded to a raw stream; the connection's reader and writer.

        The caller owns the connection (``writer.close()`` ends it; ``write_eof()``
        half-closes it, which dockerd takes as the end of stdin). An error status is
        raised as usual, and the connection closed.
        """
        target = self._url(path)
        if params:
            target += "?" + urlencode(params)
        payload = json.dumps(body).encode() if body is not None else b""
        head = (
            f"{method} {target} HTTP/1.1\r\n"
            "Host: docker\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: Upgrade\r\n"
            "Upgrade: tcp\r\n"
            "\r\n"
        )
        try:
            async with asyncio.timeout(10):
                reader, writer = await asyncio.open_unix_connection(
                    self.socket_path, limit=HIJACK_HEAD_LIMIT
                )
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot reach dockerd at {self.host}: {exc}") from None
        try:
            writer.write(head.encode("latin-1") + payload)
            async with asyncio.timeout(self.timeout):
                await writer.drain()
                raw_head = await reader.readuntil(b"\r\n\r\n")
                status, headers = _parse_head(raw_head)
                if status == 101 or (
                    status == 200 and headers.get("content-type") in _RAW_STREAM_TYPES
                ):
                    return reader, writer
                raw = await _read_error_body(reader, headers)
        except TimeoutError:  # before OSError, of which it is a subclass
            writer.close()
            raise Unavailable(f"dockerd at {self.host} did not answer {method} {path}") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError, ValueError) as exc:
            writer.close()
            raise Unavailable(
                f"dockerd at {self.host} broke off {method} {path}: {exc or type(exc).__name__}"
            ) from None
        except BaseException:
            writer.close()
            raise
        writer.close()
        try:
            message = str(json.loads(raw).get("message", "")) or raw.decode()
        except (ValueError, AttributeError):
            message = raw.decode(errors="replace")
        if status < 400:
            message = f"unexpected answer {status} to {method} {path}: {message}"
        raise _error_for(status, message.strip() or f"HTTP {status}")

    # -- images ---------------------------------------------------------------------------

    async def inspect_image(self, name: str) -> ImageInspect:
        result: ImageInspect = await self.call("GET", f"/images/{quote(name, safe='/:@')}/json")
        return result

    async def list_images(self) -> list[ImageInspect]:
        result: list[ImageInspect] = await self.call("GET", "/images/json")
        return result

    async def pull_image(self, reference: str, auth: Mapping[str, str]) -> None:
        """Pull ``reference`` (which names a tag or a digest); errors in the stream raise."""
        headers = {"X-Registry-Auth": registry_auth(auth)}
        async with self._request(
            "POST",
            "/images/create",
            params={"fromImage": reference},
            headers=headers,
            timeout=None,
        ) as resp:
            await _raise_stream_error(resp)

    async def tag_image(self, image: str, repository: str, tag: str) -> None:
        await self.call(
            "POST",
            f"/images/{quote(image, safe='/:@')}/tag",
            params={"repo": repository, "tag": tag},
        )

    async def remove_image(self, name: str, *, force: bool, noprune: bool = False) -> None:
        params = {"force": "1" if force else "0", "noprune": "1" if noprune else "0"}
        await self.call("DELETE", f"/images/{quote(name, safe='/:@')}", params=params)

    async def load_image(self, archive: bytes) -> None:
        """``POST /images/load`` of a docker-archive tar."""
        async with self._request(
            "POST",
            "/images/load",
            params={"quiet": "1"},
            data=archive,
            headers={"Content-Type": "application/x-tar"},
            timeout=120,
        ) as resp:
            await _raise_stream_error(resp)


def _parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    """The status and (lower-cased) headers of an HTTP/1.1 response head."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest.partition(" ")[0]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise ValueError(f"not an HTTP/1.1 response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(code), headers


async def _read_error_body(reader: asyncio.StreamReader, headers: Mapping[str, str]) -> bytes:
    """The body of a plain (not upgraded) answer, as far as it is an error message."""
    length = headers.get("content-length", "")
    if length.isdigit():
        return await reader.readexactly(min(int(length), HIJACK_ERROR_LIMIT))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while len(body) < HIJACK_ERROR_LIMIT:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return bytes(body)
    return await reader.read(HIJACK_ERROR_LIMIT)


async def _raise_stream_error(resp: aiohttp.ClientResponse) -> None:
    """Read a JSON-lines progress stream; an ``error`` entry becomes a CRIError."""
    async for line in resp.content:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("error"):
            raise StreamError(str(entry["error"]))


class StreamError(CRIError):
    """dockerd reported an error inside a progress stream (pull, load): status 200, then this."""
