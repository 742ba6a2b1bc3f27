"""The API pod source outlives an API server that goes away in the middle of a watch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from minikubelet.config.api import APISource
from minikubelet.config.types import SourceUpdate
from tests.harness.wait import wait_until


class CutStream:
    """A watch whose server vanishes: the chunked body ends before it is complete."""

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        raise aiohttp.ClientPayloadError("Response payload is not completed")


class Response:
    def __init__(self, body: dict[str, Any] | None = None) -> None:
        self.body = body or {}
        self.content = CutStream()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def json(self) -> dict[str, Any]:
        return self.body


class Core:
    def __init__(self) -> None:
        self.watches = 0

    async def list_pod_for_all_namespaces(self, **kwargs: Any) -> Response:
        if kwargs.get("watch"):
            self.watches += 1
            return Response()
        return Response({"metadata": {"resourceVersion": "7"}, "items": []})


class Client:
    def __init__(self) -> None:
        self.core = Core()

    def record_event(self, *args: Any, **kwargs: Any) -> None:
        pass


async def test_a_watch_cut_short_is_resumed_not_fatal() -> None:
    client = Client()
    source = APISource(client, "n1", jitter=lambda: 0.0)  # type: ignore[arg-type]
    inbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
    task = asyncio.create_task(source.run(inbox))
    try:
        await wait_until(lambda: client.core.watches >= 2, timeout=10, message="a second watch")
        assert not task.done()
        assert source.resource_version == "7" and source.relists == 1  # resumed, not relisted
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
