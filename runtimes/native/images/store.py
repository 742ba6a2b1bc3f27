"""The image store on disk: content-addressed blobs, unpacked layers, image metadata.

::

    <root>/blobs/sha256/<hex>   manifests, indexes, configs (and layer blobs until unpacked)
    <root>/layers/<hex>/        one unpacked layer per diff_id, shared by every image using it
    <root>/images.json          image ID -> tags, digests, size, config; diff_id -> disk usage
    <root>/tmp/                 downloads and unpacks under way; emptied at start

Every write lands in ``tmp/`` first and is renamed into place, so whatever is in
``blobs/`` or ``layers/`` is complete and verified, and ``images.json`` is either
the old or the new version. The methods that touch the disk block: the service
calls them in worker threads. The in-memory maps are changed only by the service,
on the event loop.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from minikubelet.errors import FailedPrecondition, InvalidArgument
from runtimes.native.images.manifest import ImageConfig, check_digest, sha256_digest

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

FORMAT_VERSION = 1
METADATA = "images.json"


@dataclass(frozen=True, slots=True)
class LayerRecord:
    diff_id: str
    bytes: int
    inodes: int

    def to_json(self) -> dict[str, object]:
        return {"bytes": self.bytes, "inodes": self.inodes}

    @classmethod
    def from_json(cls, diff_id: str, obj: dict[str, Any]) -> LayerRecord:
        return cls(diff_id, int(obj.get("bytes", 0)), int(obj.get("inodes", 0)))


@dataclass(frozen=True, slots=True)
class ImageRecord:
    id: str  # the config digest
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    manifests: tuple[str, ...]  # the index and manifest blobs the image was pulled through
    size: int  # config and (compressed) layers, as the registry serves them
    config: ImageConfig
    pulled_at: int  # ns since the epoch

    @property
    def diff_ids(self) -> tuple[str, ...]:
        return self.config.diff_ids

    def to_json(self) -> dict[str, object]:
        return {
            "repo_tags": list(self.repo_tags),
            "repo_digests": list(self.repo_digests),
            "manifests": list(self.manifests),
            "size": self.size,
            "config": self.config.to_json(),
            "pulled_at": self.pulled_at,
        }

    @classmethod
    def from_json(cls, image_id: str, obj: dict[str, Any]) -> ImageRecord:
        return cls(
            id=image_id,
            repo_tags=tuple(obj.get("repo_tags", ())),
            repo_digests=tuple(obj.get("repo_digests", ())),
            manifests=tuple(obj.get("manifests", ())),
            size=int(obj.get("size", 0)),
            config=ImageConfig.from_json(obj.get("config", {})),
            pulled_at=int(obj.get("pulled_at", 0)),
        )


def _hex(digest: str) -> str:
    return check_digest(digest, "store").removeprefix("sha256:")


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs" / "sha256"
        self.layers = root / "layers"
        self.tmp = root / "tmp"
        self.metadata = root / METADATA
        self.images: dict[str, ImageRecord] = {}
        self.layer_records: dict[str, LayerRecord] = {}
        self._lock_fd: int | None = None

    # -- paths ----------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs / _hex(digest)

    def layer_path(self, diff_id: str) -> Path:
        return self.layers / _hex(diff_id)

    def scratch(self, prefix: str) -> Path:
        """A fresh name in ``tmp/`` (nothing is created)."""
        return self.tmp / f"{prefix}{secrets.token_hex(8)}"

    # -- blocking -------------------------------------------------------------------

    def open(self) -> None:
        """Lock the root, create the layout, drop what a crash left in ``tmp/``, load the metadata.

        The lock (``flock`` on ``<root>/lock``) keeps a second store, in this process
        or another, from using the same root; :meth:`close` releases it.
        """
        for d in (self.blobs, self.layers, self.tmp):
            d.mkdir(parents=True, exist_ok=True)
        self._lock_root()
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def _lock_root(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FailedPrecondition(
                f"image store {self.root} is in use by another runtime (lock held)"
            ) from None
        self._lock_fd = fd

    def _load(self) -> None:
        leftovers = list(self.tmp.iterdir())
        for entry in leftovers:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        if leftovers:
            log.info("image store %s: removed %d unfinished file(s)", self.root, len(leftovers))
        try:
            doc = json.loads(self.metadata.read_bytes())
        except FileNotFoundError:
            return
        except ValueError as exc:
            raise FailedPrecondition(f"image store {self.metadata} is corrupt: {exc}") from None
        if doc.get("version") != FORMAT_VERSION:
            raise FailedPrecondition(
                f"image store {self.metadata} has format {doc.get('version')!r}, "
                f"this build reads {FORMAT_VERSION}"
            )
        self.images = {k: ImageRecord.from_json(k, v) for k, v in doc.get("images", {}).items()}
        self.layer_records = {
            k: LayerRecord.from_json(k, v) for k, v in doc.get("layers", {}).items()
        }

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    def put_blob(self, digest: str, data: bytes) -> None:
        """Store ``data`` under ``digest`` (checked) unless it is there already."""
        if sha256_digest(data) != digest:
            raise InvalidArgument(f"blob {digest}: content does not match its digest")
        path = self.blob_path(digest)
        if path.is_file():
            return
        tmp = self.scratch("blob-")
        _write_synced(tmp, data)
        os.rename(tmp, path)

    def commit_blob(self, tmp: Path, digest: str) -> None:
        """Move a downloaded, verified blob into place."""
        os.rename(tmp, self.blob_path(digest))

    def remove_blob(self, digest: str) -> None:
        self.blob_path(digest).unlink(missing_ok=True)

    def has_layer(self, diff_id: str) -> bool:
        return self.layer_path(diff_id).is_dir()

    def inventory(self) -> tuple[set[str], set[str]]:
        """The blob digests and layer diff_ids on disk."""
        blobs = {"sha256:" + p.name for p in self.blobs.iterdir()}
        layers = {"sha256:" + p.name for p in self.layers.iterdir()}
        return blobs, layers

    def blob_usage(self) -> tuple[int, int]:
        """Allocated bytes and inodes of the blobs and the metadata file."""
        total, count = 0, 0
        for path in (*self.blobs.iterdir(), self.metadata):
            try:
                total += path.stat().st_blocks * 512
                count += 1
            except FileNotFoundError:
                pass
        return total, count

    def snapshot(self) -> bytes:
        """The metadata as it is now (on the loop; written by :meth:`write_metadata`)."""
        doc = {
            "version": FORMAT_VERSION,
            "images": {k: v.to_json() for k, v in sorted(self.images.items())},
            "layers": {k: v.to_json() for k, v in sorted(self.layer_records.items())},
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    def write_metadata(self, data: bytes) -> None:
        tmp = self.scratch("images-")
        _write_synced(tmp, data)
        os.rename(tmp, self.metadata)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the rename itself survives a crash
        finally:
            os.close(fd)


async def in_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` in a worker thread; if the caller is cancelled, the thread is waited for first.

    A cancelled pull thus returns only once nothing it started still writes to the
    store. The cancellation is re-raised, never swallowed.
    """
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            log.debug("work finished after cancellation with %r", task.exception())
        raise


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
