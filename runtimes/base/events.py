"""Container lifecycle events fanned out to every GetContainerEvents stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping

from runtimes.base import model as m

#: Events a slow stream may fall behind by before it loses the oldest.
BACKLOG = 10_000


class ContainerEvents:
    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[m.ContainerEvent]] = []

    def emit(
        self,
        container: m.Container,
        kind: m.ContainerEventType,
        now_ns: int,
        sandboxes: Mapping[str, m.PodSandbox],
    ) -> None:
        """Tell every stream; a full one drops its oldest event rather than block the runtime."""
        if not self._queues:
            return
        event = m.ContainerEvent(
            container_id=container.id,
            type=kind,
            created_at=now_ns,
            sandbox=sandboxes.get(container.sandbox_id),
            containers=(container,),
        )
        for queue in self._queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)

    async def stream(self) -> AsyncGenerator[m.ContainerEvent, None]:
        queue: asyncio.Queue[m.ContainerEvent] = asyncio.Queue(maxsize=BACKLOG)
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)
