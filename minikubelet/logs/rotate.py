"""Container log rotation, as the kubelet's container log manager does it.

Every ``interval`` seconds each running container's log file is checked; one
larger than ``max_size`` is renamed to ``<log>.<YYYYmmdd-HHMMSS>`` and the
runtime is told to reopen its log (CRI ReopenContainerLog), so it writes a fresh
file at the same path. Older rotated files are gzip-compressed (all but the
newest) and only ``max_files`` files are kept in all, counting the live one.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import shutil
import time
from pathlib import Path

from minikubelet.cri.services import RuntimeHandlers, RuntimeService
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 10 * 1024 * 1024  # --container-log-max-size=10Mi
DEFAULT_MAX_FILES = 5  # --container-log-max-files
DEFAULT_INTERVAL = 10.0  # --container-log-monitor-interval
TIMESTAMP_FORMAT = "%Y%m%d-%H%M%S"
COMPRESS_SUFFIX = ".gz"
TMP_SUFFIX = ".tmp"


class ContainerLogManager:
    def __init__(
        self,
        runtimes: RuntimeHandlers,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        max_files: int = DEFAULT_MAX_FILES,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        if max_files < 2:
            raise ValueError("container log max files must be at least 2")
        self._runtimes = runtimes
        self.max_size = max_size
        self.max_files = max_files
        self.interval = interval
        self.rotations = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.rotate_all()
            except CRIError as exc:
                log.warning("log rotation: listing containers failed: %s", exc)

    async def rotate_all(self) -> None:
        """Check every running container of every runtime of the node."""
        for runtime in self._runtimes.clients():
            await self._rotate_runtime(runtime)

    async def _rotate_runtime(self, runtime: RuntimeService) -> None:
        running = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
        for container in await runtime.list_containers(running):
            try:
                status = (await runtime.container_status(container.id)).status
            except CRIError:
                continue  # gone meanwhile
            if not status.log_path:
                continue
            path = Path(status.log_path)
            try:
                size = (await asyncio.to_thread(path.stat)).st_size
            except FileNotFoundError:
                # the runtime lost its file: ask it to make a new one
                await self._reopen(runtime, container.id)
                continue
            if size > self.max_size:
                await self.rotate(runtime, container.id, path)

    async def rotate(self, runtime: RuntimeService, container_id: str, path: Path) -> None:
        await asyncio.to_thread(self._prepare, path)
        rotated = path.with_name(f"{path.name}.{time.strftime(TIMESTAMP_FORMAT)}")
        await asyncio.to_thread(os.rename, path, rotated)
        if not await self._reopen(runtime, container_id):
            await asyncio.to_thread(os.rename, rotated, path)  # keep logging where it was
            return
        self.rotations += 1
        log.info("rotated %s (container %s)", path, container_id[:13])

    async def _reopen(self, runtime: RuntimeService, container_id: str) -> bool:
        try:
            await runtime.reopen_container_log(container_id)
        except CRIError as exc:
            log.warning("ReopenContainerLog %s failed: %s", container_id[:13], exc)
            return False
        return True

    def _prepare(self, path: Path) -> None:
        """Drop leftovers and excess rotated files; compress all rotated but the newest."""
        rotated = sorted(
            p for p in path.parent.glob(f"{path.name}.*") if not p.name.endswith(TMP_SUFFIX)
        )
        for tmp in path.parent.glob(f"{path.name}.*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)
        # the live file and the one about to be rotated need two of the max_files places
        excess = len(rotated) - (self.max_files - 2)
        for old in rotated[: max(excess, 0)]:
            old.unlink(missing_ok=True)
        remaining = rotated[max(excess, 0) :]
        for old in remaining:
            if not old.name.endswith(COMPRESS_SUFFIX):
                _compress(old)


def _compress(path: Path) -> None:
    tmp = path.with_name(path.name + COMPRESS_SUFFIX + TMP_SUFFIX)
    with open(path, "rb") as src, gzip.open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.rename(tmp, path.with_name(path.name + COMPRESS_SUFFIX))
    path.unlink()
