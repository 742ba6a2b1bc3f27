"""The API server as a pod source: the pods bound to this node, by list and watch.

As the kubelet's ``config/apiserver.go`` reflector: a LIST of the pods with
``fieldSelector=spec.nodeName=NAME`` becomes one ``SET`` snapshot (source ``api``), then
a WATCH from the list's resourceVersion turns each event into an incremental update
(ADDED/MODIFIED -> ``ADD``, which the pod config merges into ADD, UPDATE, DELETE or
RECONCILE; DELETED -> ``REMOVE``). A watch that ends is resumed from the last
resourceVersion seen (bookmarks included); ``410 Gone`` (the version is too old) means a
new LIST; an API server that cannot be reached is retried with a growing back-off, and
the pods keep running meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from minikubelet.config.types import API_SOURCE, PodOperation, SourceUpdate
from minikubelet.kubeapi.client import KubeClient

log = logging.getLogger(__name__)

#: Server-side watch timeout, as client-go's reflector picks (5-10 minutes).
WATCH_TIMEOUT_MIN = 300
#: Back-off between attempts when the API server is unreachable (seconds).
BACKOFF_INITIAL = 0.8
BACKOFF_MAX = 30.0


class Gone(Exception):
    """The resourceVersion to resume from is too old (410): list again."""


class APISource:
    def __init__(
        self,
        client: KubeClient,
        node_name: str,
        *,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self.node_name = node_name
        self._jitter = jitter
        self._selector = f"spec.nodeName={node_name}"
        #: The resourceVersion of the last list or event.
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.relists = 0

    async def run(self, inbox: asyncio.Queue[SourceUpdate]) -> None:
        """List and watch until cancelled."""
        backoff = BACKOFF_INITIAL
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list(inbox)
                    need_list = False
                await self._watch(inbox)
                backoff = BACKOFF_INITIAL  # a watch that ran and ended: resume at once
            except Gone:
                log.info(
                    "api source: resourceVersion %s is gone, listing again", self.resource_version
                )
                need_list = True
            # aiohttp.ClientError: a watch cut short by an API server that went away
            # (ClientPayloadError, ServerDisconnectedError are not OSErrors)
            except (TimeoutError, ApiException, OSError, ValueError, aiohttp.ClientError) as exc:
                status = getattr(exc, "status", None)
                log.warning(
                    "api source: %s (retrying in %.1fs)",
                    f"HTTP {status}" if status else exc,
                    backoff,
                )
                await asyncio.sleep(backoff * (1 + self._jitter() * 0.5))
                backoff = min(backoff * 2, BACKOFF_MAX)
                need_list = need_list or status == 410

    async def _list(self, inbox: asyncio.Queue[SourceUpdate]) -> None:
        response: Any = await self._client.core.list_pod_for_all_namespaces(
            field_selector=self._selector, _preload_content=False
        )
        async with response:
            body = await response.json()
        self.resource_version = str(body.get("metadata", {}).get("resourceVersion", ""))
        pods = [_with_kind(item) for item in body.get("items") or []]
        self.relists += 1
        await inbox.put(SourceUpdate(PodOperation.SET, pods, API_SOURCE))
        self.synced.set()

    async def _watch(self, inbox: asyncio.Queue[SourceUpdate]) -> None:
        timeout = int(WATCH_TIMEOUT_MIN * (1 + self._jitter()))
        response: Any = await self._client.core.list_pod_for_all_namespaces(
            field_selector=self._selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=timeout,
            _preload_content=False,
        )
        async with response:
            async for line in response.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                await self._event(event, inbox)

    async def _event(self, event: dict[str, Any], inbox: asyncio.Queue[SourceUpdate]) -> None:
        kind = str(event.get("type", ""))
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ValueError(f"watch error: {obj.get('message', obj)}")
        version = obj.get("metadata", {}).get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind == "BOOKMARK":
            return
        metadata = obj.get("metadata", {})
        who = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        self._client.record_event(f"WATCH pods {kind}", who)
        pod = _with_kind(obj)
        if kind in ("ADDED", "MODIFIED"):
            await inbox.put(SourceUpdate(PodOperation.ADD, [pod], API_SOURCE))
        elif kind == "DELETED":
            await inbox.put(SourceUpdate(PodOperation.REMOVE, [pod], API_SOURCE))


def _with_kind(item: dict[str, Any]) -> dict[str, Any]:
    """A list's items carry no kind or apiVersion; the pod model wants them."""
    item.setdefault("apiVersion", "v1")
    item.setdefault("kind", "Pod")
    return item
