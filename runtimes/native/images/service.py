"""The native runtime's ImageService: pull from OCI registries, store, unpack, remove.

:class:`NativeImages` implements :class:`runtimes.base.model.ImageBackend` and
gives the container half what it needs to build a rootfs: :meth:`~NativeImages.image_config`
and :meth:`~NativeImages.layer_dirs` (overlay lowerdirs, lowest first).

Concurrency: the metadata changes under one lock and is persisted before a call
returns. Each blob digest and diff_id has its own lock, so two pulls sharing a
layer fetch and unpack it once. A pull *leases* every digest it is about to use
before it looks at the disk; garbage collection never removes a leased or
referenced blob or layer, and it decides and renames on the event loop, so the
decision and the removal are atomic with respect to pulls.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from minikubelet import reference as references
from minikubelet.errors import CRIError, InvalidArgument, NotFound
from runtimes.base import model as m
from runtimes.native.images.hosts import RegistryConfig
from runtimes.native.images.layers import LayerError, disk_usage, unpack_layer
from runtimes.native.images.manifest import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    host_platform,
    image_user,
    parse_manifest,
    select_platform,
    sha256_digest,
)
from runtimes.native.images.registry import (
    ContentMismatch,
    Credentials,
    RegistryClient,
    Repository,
)
from runtimes.native.images.store import ImageRecord, ImageStore, LayerRecord, in_thread

log = logging.getLogger(__name__)

#: An index may point at an index; deeper nesting is refused.
_MAX_INDEX_DEPTH = 2


class NativeImages:
    """ImageService semantics over an on-disk store and real registries.

    The constructor does no I/O: the store is opened by :meth:`load` (called by
    every method on first use). ``layers_in_use`` tells garbage collection which
    layer directories containers still have mounted, so an image can be removed
    while a container made from it runs (as containerd allows).
    """

    def __init__(
        self,
        root: Path,
        config: RegistryConfig | None = None,
        *,
        client: RegistryClient | None = None,
        platform: Platform | None = None,
        layers_in_use: Callable[[], Iterable[Path]] | None = None,
    ) -> None:
        self.root = root
        self.config = config or (client.config if client is not None else RegistryConfig())
        self._client = client or RegistryClient(self.config)
        self._owns_client = client is None
        self.platform = platform or host_platform()
        self._layers_in_use = layers_in_use or (lambda: ())
        self._store = ImageStore(root)
        self._loaded = False
        self._load_lock = asyncio.Lock()
        self._state = asyncio.Lock()  # image metadata and its persistence
        self._keys: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._leases: collections.Counter[str] = collections.Counter()
        self._downloads = asyncio.Semaphore(self.config.max_concurrent_downloads)

    # -- lifecycle ------------------------------------------------------------------

    async def load(self) -> None:
        """Open the store: create it, drop what a crash left half-done, read the metadata."""
        if self._loaded:
            return
        async with self._load_lock:
            if not self._loaded:
                await in_thread(self._store.open)
                self._loaded = True
                log.info(
                    "image store %s: %d image(s), %d layer(s)",
                    self.root,
                    len(self._store.images),
                    len(self._store.layer_records),
                )

    async def close(self) -> None:
        """Release the store (its lock) and, if this object made it, the registry client."""
        if self._loaded:
            await in_thread(self._store.close)
            self._loaded = False
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> NativeImages:
        await self.load()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- ImageBackend -----------------------------------------------------------------

    async def pull_image(self, reference: str, auth: Mapping[str, str]) -> str:
        await self.load()
        ref = _parse(reference)
        credentials = Credentials.from_cri(auth)
        what = f"pulling {ref}"
        started = time.monotonic()
        repo = self._client.repository(ref, credentials)
        with self._leased() as lease:
            top = await self._manifest(repo, ref.digest or ref.tag, lease, what)
            chain = [top.digest]
            manifest = top
            for _ in range(_MAX_INDEX_DEPTH):
                if not isinstance(manifest, Index):
                    break
                desc = select_platform(manifest, self.platform, what)
                manifest = await self._manifest(repo, desc.digest, lease, what)
                chain.append(manifest.digest)
            if not isinstance(manifest, Manifest):
                raise InvalidArgument(f"{what}: image indexes nested too deep")
            config_raw = await self._config(repo, manifest.config, lease, what)
            config = ImageConfig.parse(config_raw, f"{what}: config {manifest.config.digest}")
            if len(config.diff_ids) != len(manifest.layers):
                raise InvalidArgument(
                    f"{what}: manifest has {len(manifest.layers)} layers, "
                    f"config {len(config.diff_ids)} diff_ids"
                )
            if config.architecture and config.architecture != self.platform.architecture:
                log.warning(
                    "%s: image is for %s/%s, this host is %s",
                    what, config.os, config.architecture, self.platform,
                )  # fmt: skip
            lease(*config.diff_ids, *(d.digest for d in manifest.layers))
            fetched = await self._layers(repo, manifest, config, what)
            image_id = manifest.config.digest
            size = manifest.config.size + sum(d.size for d in manifest.layers)
            await self._commit(ref, image_id, chain, size, config)
        log.info(
            "pulled %s as %s in %.2fs (%d of %d layers fetched)",
            ref, image_id[:19], time.monotonic() - started, fetched, len(manifest.layers),
        )  # fmt: skip
        return image_id

    async def image_status(self, reference: str) -> m.Image | None:
        await self.load()
        record = self._lookup(reference)
        return _to_image(record) if record is not None else None

    async def list_images(self, reference_filter: str) -> Sequence[m.Image]:
        await self.load()
        if reference_filter:
            found = self._lookup(reference_filter)
            return [_to_image(found)] if found is not None else []
        return [_to_image(r) for _, r in sorted(self._store.images.items())]

    async def remove_image(self, reference: str) -> None:
        """Remove the image (all its tags and digests), then collect what nothing uses."""
        await self.load()
        async with self._state:
            record = self._lookup(reference)
            if record is None:
                return  # already gone: RemoveImage is idempotent
            del self._store.images[record.id]
            await self._save()
            log.info("removed image %s (%s)", record.id[:19], ", ".join(record.repo_tags) or "-")
        await self.gc()

    async def image_fs_info(self) -> Sequence[m.FilesystemUsage]:
        await self.load()
        blob_bytes, blob_inodes = await in_thread(self._store.blob_usage)
        records = self._store.layer_records.values()
        return [
            m.FilesystemUsage(
                timestamp=time.time_ns(),
                mountpoint=str(self.root),
                used_bytes=blob_bytes + sum(r.bytes for r in records),
                inodes_used=blob_inodes + sum(r.inodes for r in records),
            )
        ]

    # -- for the container half ----------------------------------------------------

    async def resolve(self, reference: str) -> tuple[m.Image, str] | None:
        """The image a container refers to (ID, tag or digest) and the normalised name."""
        await self.load()
        record = self._lookup(reference)
        if record is None:
            return None
        name = reference if _looks_like_id(reference) else str(_parse(reference))
        return _to_image(record), name

    async def image_config(self, image: str) -> ImageConfig:
        """USER, ENV, ENTRYPOINT, CMD, WORKDIR, labels ... of an image (ID or reference)."""
        return (await self._require(image)).config

    async def layer_dirs(self, image: str) -> list[Path]:
        """The image's unpacked layers, lowest first: overlay lowerdirs (reverse them)."""
        record = await self._require(image)
        return [self._store.layer_path(d) for d in record.diff_ids]

    async def gc(self) -> tuple[int, int]:
        """Remove blobs and layers no image references, no pull leases and no container uses.

        Returns how many blobs and layers were removed.
        """
        await self.load()
        async with self._state:
            images = self._store.images.values()
            keep_blobs = {d for r in images for d in (r.id, *r.manifests)}
            keep_layers = {d for r in images for d in r.diff_ids}
            blobs, layers = await in_thread(self._store.inventory)
            # decided and renamed away on the loop, so no pull can lease in between
            mounted = {p.name for p in self._layers_in_use()}
            doomed_blobs = [d for d in sorted(blobs - keep_blobs) if not self._leases[d]]
            doomed_layers = [
                d
                for d in sorted(layers - keep_layers)
                if not self._leases[d] and d[7:] not in mounted
            ]
            if not doomed_blobs and not doomed_layers:
                return 0, 0
            trash = self._store.scratch("gc-")
            os.mkdir(trash)
            for digest in doomed_blobs:
                os.rename(self._store.blob_path(digest), trash / f"blob-{digest[7:]}")
            for diff_id in doomed_layers:
                os.rename(self._store.layer_path(diff_id), trash / f"layer-{diff_id[7:]}")
                self._store.layer_records.pop(diff_id, None)
            if doomed_layers:
                await self._save()
        await in_thread(shutil.rmtree, trash, True)
        log.info("gc: removed %d blob(s) and %d layer(s)", len(doomed_blobs), len(doomed_layers))
        return len(doomed_blobs), len(doomed_layers)

    # -- pulling ----------------------------------------------------------------------

    @contextmanager
    def _leased(self) -> Iterator[Callable[..., None]]:
        """A lease: digests added to it are safe from GC until the block ends."""
        held: list[str] = []

        def add(*digests: str) -> None:
            for d in digests:
                self._leases[d] += 1
                held.append(d)

        try:
            yield add
        finally:
            for d in held:
                self._leases[d] -= 1
                if not self._leases[d]:
                    del self._leases[d]

    def _key_lock(self, key: str) -> asyncio.Lock:
        lock = self._keys.get(key)
        if lock is None:
            lock = self._keys[key] = asyncio.Lock()
        return lock

    async def _manifest(
        self, repo: Repository, reference: str, lease: Callable[..., None], what: str
    ) -> Manifest | Index:
        """A manifest or index: from the store when named by a digest we hold, else fetched."""
        store = self._store
        if references.is_digest(reference):
            lease(reference)
            if await in_thread(store.has_blob, reference):
                raw = await in_thread(store.read_blob, reference)
                if sha256_digest(raw) == reference:
                    return parse_manifest(raw, "", reference, what)
        raw, content_type, digest = await repo.get_manifest(reference, what)
        parsed = parse_manifest(raw, content_type, digest, what)
        lease(digest)
        await in_thread(store.put_blob, digest, raw)
        return parsed

    async def _config(
        self, repo: Repository, desc: Descriptor, lease: Callable[..., None], what: str
    ) -> bytes:
        lease(desc.digest)
        store = self._store
        async with self._key_lock(desc.digest):
            if not await in_thread(store.has_blob, desc.digest):
                tmp = store.scratch("config-")
                await repo.fetch_blob(desc, tmp, f"{what}: config {desc.digest}")
                await in_thread(store.commit_blob, tmp, desc.digest)
            return await in_thread(store.read_blob, desc.digest)

    async def _layers(
        self, repo: Repository, manifest: Manifest, config: ImageConfig, what: str
    ) -> int:
        """Make sure every layer is unpacked; returns how many had to be fetched."""
        tasks: list[asyncio.Task[bool]] = []
        try:
            async with asyncio.TaskGroup() as tg:
                for desc, diff_id in zip(manifest.layers, config.diff_ids, strict=True):
                    tasks.append(
                        tg.create_task(
                            self._layer(repo, desc, diff_id, what),
                            name=f"layer {desc.digest[:19]} of {repo.ref}",
                        )
                    )
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        return sum(t.result() for t in tasks)

    async def _layer(self, repo: Repository, desc: Descriptor, diff_id: str, what: str) -> bool:
        store = self._store
        label = f"{what}: layer {desc.digest}"
        async with self._key_lock(diff_id):
            path = store.layer_path(diff_id)
            if await in_thread(path.is_dir):
                if diff_id not in store.layer_records:  # unpacked before a crash
                    usage = await in_thread(disk_usage, path)
                    store.layer_records[diff_id] = LayerRecord(diff_id, usage.bytes, usage.inodes)
                return False
            if not await in_thread(store.has_blob, desc.digest):
                async with self._downloads:
                    tmp = store.scratch("layer-")
                    await repo.fetch_blob(desc, tmp, label)
                    await in_thread(store.commit_blob, tmp, desc.digest)
            try:
                usage = await in_thread(
                    unpack_layer,
                    store.blob_path(desc.digest),
                    path,
                    diff_id=diff_id,
                    scratch=store.tmp,
                    what=label,
                )
            except LayerError:
                await in_thread(store.remove_blob, desc.digest)  # never worth keeping
                raise
            store.layer_records[diff_id] = LayerRecord(diff_id, usage.bytes, usage.inodes)
            # the unpacked directory is the layer's one copy, as in containers/storage
            await in_thread(store.remove_blob, desc.digest)
            return True

    async def _commit(
        self,
        ref: references.Reference,
        image_id: str,
        chain: list[str],
        size: int,
        config: ImageConfig,
    ) -> None:
        async with self._state:
            images = self._store.images
            existing = images.get(image_id)
            tags = dict.fromkeys(existing.repo_tags if existing else ())
            if ref.tag and not ref.digest:
                tag = str(ref.with_tag(ref.tag))
                tags[tag] = None
                for other in list(images.values()):  # a tag names one image at a time
                    if other.id != image_id and tag in other.repo_tags:
                        images[other.id] = replace(
                            other, repo_tags=tuple(t for t in other.repo_tags if t != tag)
                        )
            digests = dict.fromkeys(existing.repo_digests if existing else ())
            digests[f"{ref.repository}@{chain[0]}"] = None
            manifests = dict.fromkeys((*(existing.manifests if existing else ()), *chain))
            images[image_id] = ImageRecord(
                id=image_id,
                repo_tags=tuple(sorted(tags)),
                repo_digests=tuple(sorted(digests)),
                manifests=tuple(manifests),
                size=size,
                config=config,
                pulled_at=time.time_ns(),
            )
            await self._save()

    async def _save(self) -> None:
        """Persist the metadata (the caller holds the state lock)."""
        await in_thread(self._store.write_metadata, self._store.snapshot())

    # -- lookup -----------------------------------------------------------------------

    def _lookup(self, text: str) -> ImageRecord | None:
        """By ID (``sha256:<hex>``, ``<hex>`` or a unique prefix of 12+), tag, or digest."""
        images = self._store.images
        if references.is_digest(text):
            return images.get(text)
        if _looks_like_id(text):
            found = [r for r in images.values() if r.id[7:].startswith(text)]
            return found[0] if len(found) == 1 else None
        ref = _parse(text)
        if ref.digest:
            key = f"{ref.repository}@{ref.digest}"
            return next((r for r in images.values() if key in r.repo_digests), None)
        key = str(ref)
        return next((r for r in images.values() if key in r.repo_tags), None)

    async def _require(self, image: str) -> ImageRecord:
        await self.load()
        record = self._lookup(image)
        if record is None:
            raise NotFound(f"image {image!r} not found")
        return record


def _looks_like_id(text: str) -> bool:
    return references.is_digest(text) or (
        12 <= len(text) <= 64 and all(c in "0123456789abcdef" for c in text)
    )


def _parse(text: str) -> references.Reference:
    try:
        return references.parse(text)
    except references.InvalidReference as exc:
        raise InvalidArgument(str(exc)) from None


def _to_image(record: ImageRecord) -> m.Image:
    uid, username = image_user(record.config.user)
    return m.Image(
        id=record.id,
        repo_tags=record.repo_tags,
        repo_digests=record.repo_digests,
        size=record.size,
        uid=uid,
        username=username,
    )


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report for a failed group of layer tasks: the first CRI error in it."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop(0)
        if isinstance(exc, BaseExceptionGroup):
            stack[:0] = list(exc.exceptions)
        else:
            flat.append(exc)
    for exc in flat:
        if isinstance(exc, ContentMismatch | LayerError):
            return exc  # the most telling
    for exc in flat:
        if isinstance(exc, CRIError):
            return exc
    return group
