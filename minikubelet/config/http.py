"""The http source: pods from a URL polled with GET (the kubelet's ``--manifest-url``).

Follows the kubelet's ``pkg/kubelet/config/http.go``: every ``period`` seconds a GET with the
configured headers and a 10 s timeout; anything but ``200 OK`` is an error; an empty body
sends an empty ``SET`` (so the source counts as seen) and is an error; a body identical to the
previous one sends nothing; otherwise the body is decoded as a ``Pod`` or a ``PodList`` and
sent as a ``SET`` of source ``http``. A body that does not decode sends nothing, so the pods
already configured stay.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Mapping

from minikubelet.config.manifest import (
    MAX_CONFIG_LENGTH,
    ManifestError,
    apply_static_defaults,
    decode_manifest,
)
from minikubelet.config.types import HTTP_SOURCE, PodOperation, SourceUpdate

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10.0
"""Seconds before a GET gives up; the next period retries."""

_LOUD_FAILURES = 3


class URLSourceError(Exception):
    """The URL could not be read (transport error, status other than 200, empty body)."""


class URLSource:
    """Polls ``url`` and sends ``SET`` snapshots of the pods it serves.

    Constructing one has no side effects; :meth:`run` does the work. ``last_error`` holds the
    latest failure (``None`` after a success), for callers to show.
    """

    def __init__(
        self,
        url: str,
        *,
        node_name: str,
        period: float = 20.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url
        self.node_name = node_name
        self.period = period
        self.headers = dict(headers or {})
        self.last_error: ManifestError | URLSourceError | None = None
        self._data: bytes | None = None
        self._failures = 0

    async def run(self, updates: asyncio.Queue[SourceUpdate]) -> None:
        """Poll now and every ``period`` seconds, until cancelled."""
        while True:
            await self.poll_once(updates)
            await asyncio.sleep(self.period)

    async def poll_once(self, updates: asyncio.Queue[SourceUpdate]) -> None:
        """One GET; sends a snapshot when the body is new and decodes."""
        try:
            await self._extract(updates)
        except (ManifestError, URLSourceError) as error:
            self.last_error = error
            if self._failures < _LOUD_FAILURES:
                log.warning("failed to read pods from url=%s: %s", self.url, error)
            else:
                log.debug("failed to read pods from url=%s: %s", self.url, error)
            self._failures += 1
            return
        if self._failures:
            log.info("read pods from url=%s again", self.url)
        self._failures = 0
        self.last_error = None

    async def _extract(self, updates: asyncio.Queue[SourceUpdate]) -> None:
        data = await asyncio.to_thread(self._get)
        if not data:
            await updates.put(SourceUpdate(PodOperation.SET, [], HTTP_SOURCE))
            raise URLSourceError(f"zero-length data received from {self.url}")
        if data == self._data:
            return
        self._data = data
        decoded = decode_manifest(data, self.url, allow_list=True)
        pods = [
            apply_static_defaults(
                pod, node_name=self.node_name, source=HTTP_SOURCE, source_path=self.url
            )
            for pod in decoded
        ]
        await updates.put(SourceUpdate(PodOperation.SET, pods, HTTP_SOURCE))

    def _get(self) -> bytes:
        request = urllib.request.Request(self.url, headers=self.headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                status = int(response.status)
                reason = str(response.reason)
                body = bytes(response.read(MAX_CONFIG_LENGTH + 1))
        except urllib.error.HTTPError as exc:
            raise URLSourceError(f"{self.url}: {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise URLSourceError(f"{self.url}: {exc}") from exc
        if status != 200:
            raise URLSourceError(f"{self.url}: {status} {reason}")
        return body
