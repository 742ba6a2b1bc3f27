"""``minikubelet runtime serve fake``: the simulated runtime behind a CRI socket."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from runtimes.base.listener import serving
from runtimes.fake.images import DEFAULT_FAIL_PATTERNS, FakeImages
from runtimes.fake.server import FakeRuntime


async def serve(
    listen: str,
    *,
    fail_patterns: Iterable[str] = DEFAULT_FAIL_PATTERNS,
    ready: asyncio.Event | None = None,
) -> None:
    """Serve until cancelled."""
    images = FakeImages(fail_patterns=fail_patterns)
    runtime = FakeRuntime(images)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(runtime.run(), name="fake-runtime-processes")
        async with serving(listen, runtime, images) as endpoint:
            print(f"minikubelet-fake: serving CRI runtime.v1 on {endpoint}", flush=True)
            if ready is not None:
                ready.set()
            await asyncio.Future()
