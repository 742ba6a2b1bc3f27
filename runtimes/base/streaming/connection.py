"""What every streaming connection shares: HTTP error replies, the idle timeout, task teardown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from minikubelet.streaming import http1

log = logging.getLogger(__name__)

_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed"}


async def reply(
    writer: asyncio.StreamWriter,
    status: int,
    message: str,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    """A plain-text HTTP error answer; the connection closes after it."""
    head = [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
    writer.write(
        http1.render(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}",
            head + (headers or []),
            (message + "\n").encode(),
        )
    )
    with contextlib.suppress(ConnectionError):
        await writer.drain()


class Activity:
    """When a frame last went either way on a connection (loop time)."""

    def __init__(self) -> None:
        self.last = asyncio.get_running_loop().time()

    def touch(self) -> None:
        self.last = asyncio.get_running_loop().time()


@contextlib.asynccontextmanager
async def idle_timeout(activity: Activity, timeout: float) -> AsyncIterator[None]:
    """Raise TimeoutError out of the block once ``timeout`` passed without activity.

    The block is ended as ``asyncio.timeout`` ends one, so a cancellation from
    outside still propagates as a cancellation.
    """
    async with asyncio.timeout(None) as deadline:
        watch = _IdleWatch(activity, timeout, deadline)
        try:
            yield
        finally:
            watch.cancel()


class _IdleWatch:
    """One timer, re-armed from the last activity only when it runs out (nothing per frame);
    expires ``deadline`` once a whole ``timeout`` passed without activity."""

    def __init__(self, activity: Activity, timeout: float, deadline: asyncio.Timeout) -> None:
        self._activity = activity
        self._timeout = timeout
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_later(timeout, self._check)

    def _check(self) -> None:
        left = self._activity.last + self._timeout - self._loop.time()
        if left > 0:
            self._handle = self._loop.call_later(left, self._check)
            return
        log.info("streaming session idle for %.0fs: closing it", self._timeout)
        self._deadline.reschedule(self._loop.time())

    def cancel(self) -> None:
        self._handle.cancel()


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and wait until they ended, whatever their outcome.

    Unlike awaiting each under ``suppress(CancelledError)``, a cancellation of the
    caller while it waits is not mistaken for the tasks' own and propagates.
    """
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
