"""Time, injectable: the kubelet core reads the clock only through a :class:`Clock`.

:class:`RealClock` is the host's. :class:`ManualClock` is virtual time for tests:
it stands still until :meth:`ManualClock.advance` moves it, and a sleeper wakes
exactly when its deadline is passed, so a test can say "nothing happens for 59 s,
then the resync" without waiting and without counting event-loop turns.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """Virtual time: :meth:`sleep` returns once :meth:`advance` has moved past its deadline.

    ``now()`` and ``monotonic()`` are one timeline, starting at ``start``.
    """

    def __init__(self, start: float = 1_700_000_000.0, *, settle_rounds: int = 50) -> None:
        self._now = start
        self.settle_rounds = settle_rounds
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time on by ``seconds``, waking every sleeper whose deadline is passed, in
        deadline order. Before and after each wake-up the ready tasks run until they wait
        again (``settle_rounds`` turns of the loop: no I/O is involved in virtual time)."""
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():
                continue
            self._now = max(self._now, deadline)
            future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    async def advance_to(self, when: float) -> None:
        await self.advance(when - self._now)

    async def settle(self) -> None:
        """Let every ready task run until it waits on something."""
        for _ in range(self.settle_rounds):
            await asyncio.sleep(0)


def rfc3339(seconds: float) -> str:
    """The API's timestamp format (second precision, as metav1.Time serialises)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
