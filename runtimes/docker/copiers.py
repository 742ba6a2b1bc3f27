"""The log copiers of a Docker-backed runtime: one task per container, keyed by its id.

Each :class:`~runtimes.docker.logs.LogCopier` follows a container's output in
dockerd and appends it to the CRI log file; it ends by itself once the container
exited and all of its output is written. The registry starts at most one per
container, lets a status call wait for an exited container's last lines, and
stops a copier when its container is removed.

A server that starts again resumes the copiers its predecessor left; until it has,
a status waits for that too, so an exited container is never reported before its
copier is known (both waits bounded by :data:`LOG_SETTLE_TIMEOUT`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Final

from runtimes.base import core
from runtimes.docker.client import DockerClient
from runtimes.docker.logs import LogCopier

#: How long a status waits for an exited container's last output.
LOG_SETTLE_TIMEOUT: Final = 5.0


class LogCopiers:
    """The running copiers; they run as tasks of the group given to :meth:`running_in`."""

    def __init__(self, client: DockerClient) -> None:
        self._client = client
        self._copiers: dict[str, tuple[LogCopier, asyncio.Task[None]]] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._resumed = asyncio.Event()

    @contextlib.contextmanager
    def running_in(self, tasks: asyncio.TaskGroup) -> Iterator[None]:
        """Copiers may start while the block runs; when it ends they are cancelled."""
        self._tasks = tasks
        try:
            yield
        finally:
            self._tasks = None
            for _, task in self._copiers.values():
                task.cancel()

    @property
    def serving(self) -> bool:
        return self._tasks is not None

    def __len__(self) -> int:
        return len(self._copiers)

    def __contains__(self, container_id: object) -> bool:
        return container_id in self._copiers

    def start(self, container_id: str, path: str, *, tty: bool) -> None:
        """Copy the container's output to ``path`` (a no-op while a copier of it runs)."""
        current = self._copiers.get(container_id)
        if current is not None and not current[1].done():
            return
        core.require_serving(self._tasks is not None, "docker")
        assert self._tasks is not None
        copier = LogCopier(self._client, container_id, path, tty=tty)
        task = self._tasks.create_task(copier.run(), name=f"docker-log-{container_id[:13]}")
        self._copiers[container_id] = (copier, task)
        task.add_done_callback(lambda t: self._forget(container_id, t))

    def resumed(self) -> None:
        """The copiers of containers a previous server left are started."""
        self._resumed.set()

    def _forget(self, container_id: str, task: asyncio.Task[None]) -> None:
        current = self._copiers.get(container_id)
        if current is not None and current[1] is task:
            del self._copiers[container_id]

    async def settle(self, container_id: str) -> None:
        """Wait (briefly) until an exited container's output is all in its log file."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOG_SETTLE_TIMEOUT):
                if self._tasks is not None and not self._resumed.is_set():
                    await self._resumed.wait()  # its copier may be one still to resume
                current = self._copiers.get(container_id)
                if current is not None:
                    await current[0].done.wait()

    async def stop(self, container_id: str) -> None:
        """Stop copying (the container is being removed); returns once the copier ended."""
        current = self._copiers.pop(container_id, None)
        if current is not None:
            current[1].cancel()
            await asyncio.wait([current[1]])  # returns once it ended; raises nothing of its own

    async def reopen(self, container_id: str) -> bool:
        """Reopen the log file (after a rotation); False when nothing copies this container."""
        current = self._copiers.get(container_id)
        if current is None:
            return False
        await current[0].reopen()
        return True
