"""Container root filesystems: an overlay of the image's unpacked layers plus a writable layer;
and the read-only trees of image volumes.

Every subprocess of the storage layer (mount, umount) lives here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from minikubelet.errors import Internal
from minikubelet.util import mountinfo, proc

log = logging.getLogger(__name__)


class StorageError(Internal):
    pass


async def _run(*argv: str) -> None:
    try:
        await proc.run(argv)
    except proc.CommandError as failure:
        raise StorageError(f"{' '.join(argv[:2])} failed: {failure.output or failure}") from None


def is_mounted(path: Path) -> bool:
    return str(path) in mountinfo.read_mount_points()


class RootfsManager:
    """``<root>/containers/<id>/{upper,work,rootfs}``; rootfs is an overlay mount."""

    def __init__(self, root: Path) -> None:
        self.root = root / "containers"

    def container_dir(self, container_id: str) -> Path:
        return self.root / container_id

    def rootfs(self, container_id: str) -> Path:
        return self.container_dir(container_id) / "rootfs"

    async def mount(self, container_id: str, layers: Sequence[Path]) -> Path:
        """Mount the image's layers (lowest first) under a fresh writable layer."""
        base = self.container_dir(container_id)
        upper, work, rootfs = base / "upper", base / "work", base / "rootfs"
        for d in (upper, work, rootfs):
            await asyncio.to_thread(d.mkdir, parents=True, exist_ok=True, mode=0o755)
        if await asyncio.to_thread(is_mounted, rootfs):
            return rootfs
        if not layers:
            raise StorageError(f"container {container_id}: the image has no layers")
        lower = ":".join(str(p) for p in reversed(layers))  # overlayfs wants the top one first
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if len(options) > 4000:
            raise StorageError(f"container {container_id}: too many image layers for one mount")
        await _run("mount", "-t", "overlay", "overlay", "-o", options, str(rootfs))
        return rootfs

    async def mount_image_volume(
        self, container_id: str, index: int, layers: Sequence[Path]
    ) -> Path:
        """An image's layers as one read-only tree for an image volume of the container.

        One layer is its own directory (the container's bind of it is read-only);
        more are a read-only overlay (lowerdirs only) at ``image-volumes/<index>``.
        """
        if not layers:
            raise StorageError(f"container {container_id}: the volume's image has no layers")
        if len(layers) == 1:
            return layers[0]
        target = self.container_dir(container_id) / "image-volumes" / str(index)
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True, mode=0o755)
        if await asyncio.to_thread(is_mounted, target):
            return target
        lower = ":".join(str(p) for p in reversed(layers))
        options = f"ro,lowerdir={lower}"
        if len(options) > 4000:
            raise StorageError(f"container {container_id}: too many image layers for one mount")
        await _run("mount", "-t", "overlay", "overlay", "-o", options, str(target))
        return target

    async def remove(self, container_id: str) -> None:
        """Unmount (if mounted) and delete everything of the container. Idempotent."""
        base = self.container_dir(container_id)
        rootfs = base / "rootfs"
        volumes = base / "image-volumes"
        points = await asyncio.to_thread(mountinfo.read_mount_points)
        for point in sorted(
            (p for p in points if p.startswith(f"{volumes}/")), key=len, reverse=True
        ):
            try:
                await _run("umount", point)
            except StorageError:
                await _run("umount", "-l", point)
        if await asyncio.to_thread(is_mounted, rootfs):
            try:
                await _run("umount", str(rootfs))
            except StorageError:
                await _run("umount", "-l", str(rootfs))
        if await asyncio.to_thread(os.path.lexists, base):
            await asyncio.to_thread(shutil.rmtree, base)

    async def writable_usage(self, container_id: str) -> tuple[int, int]:
        """Bytes and inodes used by the container's writable layer."""
        return await asyncio.to_thread(_usage, self.container_dir(container_id) / "upper")


def _usage(path: Path) -> tuple[int, int]:
    size = inodes = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            inodes += 1
            size += st.st_blocks * 512
    return size, inodes
