"""An async client for the OCI distribution API (the Registry HTTP API v2): manifests and blobs.

One :class:`RegistryClient` holds one aiohttp session for the process; a pull
opens a :class:`Repository` on it, which owns that pull's endpoints (mirrors
first, then the origin) and its authorization state (anonymous, Bearer tokens
from the registry's token service, Basic, or the CRI's credentials).

Every request has a timeout; every failure becomes a :mod:`minikubelet.errors`
error whose message names the image and the registry:

======================================  ===================
manifest or repository unknown, 404     NotFound
401/403 once authentication was tried   PermissionDenied
refused, reset, timed out, 429, 5xx     Unavailable
malformed reference or document         InvalidArgument
bytes that do not match their digest    ContentMismatch (an Internal error)
======================================  ===================
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import aiohttp

from minikubelet import reference as references
from minikubelet.errors import (
    CRIError,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from runtimes.native.images.hosts import Endpoint, RegistryConfig
from runtimes.native.images.manifest import (
    ACCEPT,
    MAX_DOCUMENT_BYTES,
    Descriptor,
    sha256_digest,
)
from runtimes.native.images.store import in_thread

log = logging.getLogger(__name__)

USER_AGENT = "minikubelet/0.1 (native runtime)"
_CHUNK = 256 << 10
_WRITE_BATCH = 1 << 20  # bytes gathered on the loop before one write+hash in a thread
_PROGRESS_EVERY = 2.0  # seconds between progress lines of one blob
_MAX_TOKEN_BYTES = 1 << 20

T = TypeVar("T")


class ContentMismatch(Internal):
    """The registry sent bytes that are not what the descriptor promised (digest or size)."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What PullImage's AuthConfig carries (``server_address`` is not needed here)."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)

    @classmethod
    def from_cri(cls, auth: Mapping[str, str]) -> Credentials | None:
        """From the CRI's AuthConfig fields; ``auth`` is base64 of ``user:password``."""
        username = auth.get("username", "")
        password = auth.get("password", "")
        encoded = auth.get("auth", "")
        if encoded and not username:
            try:
                decoded = base64.b64decode(encoded, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                raise InvalidArgument("auth: not base64 of user:password") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise InvalidArgument(
                    "auth: the decoded value has no ':' between user and password"
                )
        creds = cls(
            username=username,
            password=password,
            identity_token=auth.get("identity_token", ""),
            registry_token=auth.get("registry_token", ""),
        )
        return None if creds == cls() else creds

    def basic(self) -> str:
        """The ``Authorization`` value for Basic auth, or "" without a username."""
        if not self.username:
            return ""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


_CHALLENGE_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://auth",service="reg",scope="repository:x:pull"`` -> scheme, params."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for m in _CHALLENGE_PARAM.finditer(rest):
        quoted, bare = m.group(2), m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
    return scheme.lower(), params


def _network_error(what: str, where: str, exc: BaseException, timeout: float) -> Unavailable:
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return Unavailable(f"{what}: {where} did not answer within {timeout:g}s")
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno:
        detail = os.strerror(exc.os_error.errno)  # "Connection refused", not a repr
    return Unavailable(f"{what}: cannot reach {where}: {detail}")


class RegistryClient:
    """The process's registry client: one HTTP session, the registry configuration.

    The constructor does no I/O; the session is opened on first use and closed by
    :meth:`close`. ``trace_configs`` are aiohttp's request hooks (tests count requests).
    """

    def __init__(
        self,
        config: RegistryConfig | None = None,
        *,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.config = config or RegistryConfig()
        self._trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                trace_configs=self._trace_configs or None,
                auto_decompress=False,  # a blob's digest covers the bytes as stored
                trust_env=False,  # no proxies from the environment
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def repository(
        self, ref: references.Reference, credentials: Credentials | None = None
    ) -> Repository:
        return Repository(self, ref, credentials)

    def manifest_timeout(self) -> aiohttp.ClientTimeout:
        c = self.config
        return aiohttp.ClientTimeout(total=c.request_timeout, sock_connect=c.connect_timeout)

    def blob_timeout(self) -> aiohttp.ClientTimeout:
        c = self.config
        return aiohttp.ClientTimeout(
            total=None, connect=c.connect_timeout, sock_connect=c.connect_timeout,
            sock_read=c.read_timeout,
        )  # fmt: skip


class _Authorizer:
    """The Authorization header for one endpoint of one pull, answered to 401 challenges."""

    def __init__(
        self, client: RegistryClient, endpoint: Endpoint, repo: str, creds: Credentials | None
    ) -> None:
        self.header = ""
        self._client = client
        self._endpoint = endpoint
        self._repo = repo
        self._creds = creds
        self._lock = asyncio.Lock()

    async def answer(self, challenge: str, used: str, what: str) -> None:
        """Update :attr:`header` for a 401 that came back to a request sent with ``used``."""
        async with self._lock:
            if self.header != used:
                return  # a concurrent request already got a fresh token
            host = self._endpoint.host
            scheme, params = parse_challenge(challenge)
            creds = self._creds
            if scheme == "bearer":
                if creds is not None and creds.registry_token:
                    self.header = f"Bearer {creds.registry_token}"
                    if used == self.header:
                        raise PermissionDenied(
                            f"{what}: registry {host} refused the registry token"
                        )
                    return
                self.header = "Bearer " + await self._token(params, what)
            elif scheme == "basic":
                basic = creds.basic() if creds is not None else ""
                if not basic:
                    raise PermissionDenied(f"{what}: registry {host} requires credentials")
                if used == basic:
                    raise PermissionDenied(f"{what}: registry {host} refused the credentials")
                self.header = basic
            else:
                said = f"an unsupported {scheme!r} challenge" if scheme else "no challenge"
                raise PermissionDenied(f"{what}: registry {host} answered 401 with {said}")

    async def _token(self, params: Mapping[str, str], what: str) -> str:
        realm = params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise PermissionDenied(
                f"{what}: registry {self._endpoint.host} sent a Bearer challenge without a realm"
            )
        scope = params.get("scope") or f"repository:{self._repo}:pull"
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        realm_host = realm.split("://", 1)[1].split("/", 1)[0]
        verify = self._endpoint.verify_tls or realm_host != self._endpoint.host
        creds = self._creds
        headers: dict[str, str] = {}
        session = self._client.session()
        timeout = self._client.manifest_timeout()
        where = f"token service {realm}"
        try:
            if creds is not None and creds.identity_token:
                # an identity token is an OAuth2 refresh token (Docker's credential helpers)
                form = {
                    **query,
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "minikubelet",
                }
                request = session.post(realm, data=form, timeout=timeout, ssl=verify)
            else:
                if creds is not None and creds.basic():
                    headers["Authorization"] = creds.basic()
                request = session.get(
                    realm, params=query, headers=headers, timeout=timeout,
                    ssl=verify,
                )  # fmt: skip
            async with request as resp:
                if resp.status in (401, 403):
                    raise PermissionDenied(
                        f"{what}: {where} refused "
                        + ("the credentials" if creds is not None else "an anonymous token")
                        + f" ({resp.status})"
                    )
                if resp.status != 200:
                    raise Unavailable(f"{what}: {where} answered {resp.status}")
                body = await resp.content.read(_MAX_TOKEN_BYTES)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise _network_error(what, where, exc, timeout.total or 0) from None
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise PermissionDenied(f"{what}: {where} answered without a token")
        return token


class Repository:
    """One pull's view of one repository: its endpoints, their auth, the one that answered."""

    def __init__(
        self, client: RegistryClient, ref: references.Reference, creds: Credentials | None
    ) -> None:
        self.ref = ref
        self._client = client
        self._creds = creds
        self.endpoints = client.config.endpoints(ref.domain)
        self._preferred = 0
        self._auth: dict[str, _Authorizer] = {}

    # -- plumbing ---------------------------------------------------------------

    async def _each_endpoint(self, op: Callable[[Endpoint], Awaitable[T]], what: str) -> T:
        """``op`` on the endpoint that answered last, then on the others in order."""
        first = self.endpoints[self._preferred]
        order = [first, *(e for e in self.endpoints if e is not first)]
        failures: list[tuple[Endpoint, CRIError]] = []
        for endpoint in order:
            try:
                result = await op(endpoint)
            except CRIError as exc:
                failures.append((endpoint, exc))
                if endpoint is not order[-1]:
                    log.info("%s: %s failed, trying the next endpoint: %s", what, endpoint, exc)
                continue
            self._preferred = self.endpoints.index(endpoint)
            return result
        last = failures[-1][1]
        if len(failures) == 1:
            raise last
        earlier = "; ".join(
            f"{ep}: {exc.message.removeprefix(what + ': ')}" for ep, exc in failures[:-1]
        )
        raise type(last)(f"{last.message} (also tried {earlier})")

    async def _get(
        self,
        endpoint: Endpoint,
        path: str,
        *,
        accept: str,
        timeout: aiohttp.ClientTimeout,
        what: str,
    ) -> aiohttp.ClientResponse:
        """GET ``<endpoint>/v2/<repo>/<path>``, answering one 401 challenge. Caller releases."""
        url = f"{endpoint.url}/v2/{self.ref.path}/{path}"
        auth = self._auth.get(endpoint.url)
        if auth is None:
            # the pull's credentials are for the registry itself, not for its mirrors
            creds = None if endpoint.mirror else self._creds
            auth = self._auth[endpoint.url] = _Authorizer(
                self._client, endpoint, self.ref.path, creds
            )
        where = f"registry {endpoint.host}"
        session = self._client.session()
        for attempt in (1, 2):
            headers = {"Accept": accept}
            used = auth.header
            if used:
                headers["Authorization"] = used
            try:
                resp = await session.get(
                    url, headers=headers, timeout=timeout,
                    ssl=endpoint.verify_tls,
                )  # fmt: skip
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise _network_error(
                    what, where, exc, timeout.total or timeout.connect or 0
                ) from None
            if resp.status == 401 and attempt == 1:
                challenge = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                await auth.answer(challenge, used, what)
                continue
            return resp
        raise AssertionError("unreachable")

    async def _error(self, resp: aiohttp.ClientResponse, endpoint: Endpoint, what: str) -> CRIError:
        """The taxonomy error for a non-200 answer, with the registry's own error codes."""
        detail = resp.reason or ""
        try:
            body = await resp.content.read(16 << 10)
            errors = json.loads(body).get("errors") or []
            parts = [f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors]
            if parts:
                detail = "; ".join(parts)
        except (TimeoutError, ValueError, AttributeError, TypeError, aiohttp.ClientError):
            pass
        message = f"{what}: registry {endpoint.host} answered {resp.status} {detail}".rstrip()
        status = resp.status
        if status in (401, 403):
            return PermissionDenied(message + " (not authorized)")
        if status == 404:
            return NotFound(message)
        if status == 429 or status >= 500:
            return Unavailable(message)
        return InvalidArgument(message)

    # -- the API ------------------------------------------------------------------

    async def get_manifest(self, reference: str, what: str) -> tuple[bytes, str, str]:
        """GET a manifest or index by tag or digest: (bytes, Content-Type, verified digest)."""
        accept = ", ".join(ACCEPT)
        timeout = self._client.manifest_timeout()
        by_digest = references.is_digest(reference)

        async def fetch(endpoint: Endpoint) -> tuple[bytes, str, str]:
            resp = await self._get(
                endpoint, f"manifests/{reference}", accept=accept, timeout=timeout, what=what
            )
            try:
                if resp.status != 200:
                    raise await self._error(resp, endpoint, what)
                if (resp.content_length or 0) > MAX_DOCUMENT_BYTES:
                    raise InvalidArgument(
                        f"{what}: manifest of {resp.content_length} bytes is too large"
                    )
                raw = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
                if len(raw) > MAX_DOCUMENT_BYTES:
                    raise InvalidArgument(
                        f"{what}: manifest is larger than {MAX_DOCUMENT_BYTES} bytes"
                    )
                content_type = resp.headers.get("Content-Type", "")
                announced = resp.headers.get("Docker-Content-Digest", "")
            except (TimeoutError, aiohttp.ClientError) as exc:
                where = f"registry {endpoint.host}"
                raise _network_error(what, where, exc, timeout.total or 0) from None
            finally:
                resp.release()
            digest = sha256_digest(raw)
            expected = reference if by_digest else announced
            if expected.startswith("sha256:") and expected != digest:
                raise ContentMismatch(
                    f"{what}: registry {endpoint.host} sent a manifest whose digest is {digest}, "
                    f"not {expected}"
                )
            return raw, content_type, digest

        return await self._each_endpoint(fetch, what)

    async def fetch_blob(self, desc: Descriptor, dest: Path, what: str) -> None:
        """Stream a blob into ``dest``, checking its size and digest on the way.

        On any failure ``dest`` is removed and nothing else is left behind.
        """
        timeout = self._client.blob_timeout()

        async def fetch(endpoint: Endpoint) -> None:
            where = f"registry {endpoint.host}"
            resp = await self._get(
                endpoint, f"blobs/{desc.digest}", accept="*/*", timeout=timeout, what=what
            )
            try:
                if resp.status != 200:
                    raise await self._error(resp, endpoint, what)
                if resp.content_length is not None and resp.content_length != desc.size:
                    raise ContentMismatch(
                        f"{what}: {where} announced {resp.content_length} bytes for "
                        f"{desc.digest}, the manifest says {desc.size}"
                    )
                await _stream_to_file(resp, dest, desc, f"{what} from {where}")
            except (TimeoutError, aiohttp.ClientError) as exc:
                _discard(dest)
                raise _network_error(what, where, exc, timeout.sock_read or 0) from None
            except BaseException:
                _discard(dest)
                raise
            finally:
                resp.release()

        await self._each_endpoint(fetch, what)


def _discard(path: Path) -> None:
    # one unlink in an error path (it may run while the task is being cancelled)
    with contextlib.suppress(OSError):
        os.unlink(path)


class _Sink:
    """A file being written and hashed; its methods run in worker threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.hash = hashlib.sha256()
        self._file: IO[bytes] | None = None

    def open(self) -> None:
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, data: bytes) -> None:
        assert self._file is not None
        self._file.write(data)
        self.hash.update(data)

    def close(self, *, sync: bool) -> None:
        if self._file is None:
            return
        f, self._file = self._file, None
        try:
            if sync:
                f.flush()
                os.fsync(f.fileno())
        finally:
            f.close()


async def _stream_to_file(
    resp: aiohttp.ClientResponse, dest: Path, desc: Descriptor, what: str
) -> None:
    sink = _Sink(dest)
    await in_thread(sink.open)
    ok = False
    received = 0
    started = last_report = time.monotonic()
    pending = bytearray()
    try:
        async for chunk in resp.content.iter_chunked(_CHUNK):
            received += len(chunk)
            if received > desc.size:
                raise ContentMismatch(
                    f"{what}: blob {desc.digest} is longer than the {desc.size} bytes announced"
                )
            pending += chunk
            if len(pending) >= _WRITE_BATCH:
                data, pending = bytes(pending), bytearray()
                await in_thread(sink.write, data)
            now = time.monotonic()
            if now - last_report >= _PROGRESS_EVERY:
                last_report = now
                log.info("%s: %s/%s", what, _size(received), _size(desc.size))
        if pending:
            await in_thread(sink.write, bytes(pending))
        if received != desc.size:
            raise ContentMismatch(
                f"{what}: blob {desc.digest} ended after {received} of {desc.size} bytes"
            )
        actual = "sha256:" + sink.hash.hexdigest()
        if actual != desc.digest:
            raise ContentMismatch(
                f"{what}: blob digest mismatch: got {actual}, expected {desc.digest}"
            )
        await in_thread(sink.close, sync=True)
        ok = True
        elapsed = time.monotonic() - started
        log.info("%s: %s/%s in %.2fs", what, _size(received), _size(desc.size), elapsed)
    finally:
        if not ok:
            sink.close(sync=False)  # error path: a close, then the caller unlinks
            _discard(dest)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{n}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}GiB"
