"""ImageService over dockerd's image store.

Pulls go through the daemon (``POST /images/create``, with ``X-Registry-Auth``
from the CRI AuthConfig). A ``--registry-mirror HOST=URL`` makes pulls of
``HOST/...`` come from the mirror instead, tagged with the name the client asked
for; the registry named ``HOST`` is never contacted. The mirror's own name stays in
dockerd (it holds the repo digest: dockerd keeps a digest only beside a tag of the
same repository) but is never shown: an image is listed and reported under the
names the client asked for, its digests under the asked repository. Docker spells
Docker Hub names the short way (``busybox:1.36``); they are reported fully
qualified (``docker.io/library/busybox:1.36``), as the CRI and containerd do.

RemoveImage removes the image with every tag it has, as containerd's does, and
concurrent removals of one image all succeed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from minikubelet import reference
from minikubelet.errors import (
    AlreadyExists,
    CRIError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from runtimes.base import model as m
from runtimes.docker.client import DockerClient, ImageInspect, StreamError
from runtimes.docker.pause import PAUSE_IMAGE

log = logging.getLogger(__name__)

_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")
_MISSING = ("not found", "manifest unknown", "does not exist", "name unknown", "access denied")
_UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "network is unreachable")
_NONE: Final = "<none>"


@dataclass(frozen=True, slots=True)
class Mirror:
    """``HOST=URL``: pulls of ``HOST/path`` come from ``URL``'s host (and path prefix)."""

    host: str
    location: str  # host[:port][/prefix], what Docker references start with

    @classmethod
    def parse(cls, text: str) -> Mirror:
        host, sep, url = text.partition("=")
        location = re.sub(r"^[a-z]+://", "", url).rstrip("/")
        if not sep or not host or not location:
            raise ValueError(f"registry mirror {text!r}: expected HOST=URL")
        return cls(host, location)

    def source(self, ref: reference.Reference) -> reference.Reference:
        """The reference on the mirror for ``ref``."""
        domain, _, prefix = self.location.partition("/")
        path = f"{prefix}/{ref.path}" if prefix else ref.path
        return reference.Reference(domain, path, ref.tag, ref.digest)

    def asked(self, repository: str) -> str | None:
        """The repository under ``host`` that ``repository`` on the mirror serves, if any."""
        head = self.location + "/"
        if not repository.startswith(head) or len(repository) == len(head):
            return None
        return f"{self.host}/{repository[len(head) :]}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """An image a container refers to."""

    id: str
    name: str  # the normalised reference (or ID) that found it
    repo_digest: str  # repository@sha256:..., "" if the image came from no registry


def _normalise(names: Sequence[str] | None) -> list[str]:
    out = []
    for name in names or ():
        if name.startswith(_NONE):
            continue
        try:
            out.append(str(reference.parse(name)))
        except reference.InvalidReference:
            out.append(name)
    return out


def _user(config_user: str) -> tuple[int | None, str]:
    """The image's ``User`` as the CRI's (uid, username): ``1000:1000`` -> 1000."""
    user = config_user.partition(":")[0]
    if not user:
        return None, ""
    if user.isdigit():
        return int(user), ""
    return None, user


def _classify_pull_error(text: str, message: str) -> CRIError:
    lower = message.lower()
    detail = f"failed to pull image {text!r}: {message}"
    if any(s in lower for s in _MISSING):
        return NotFound(detail)
    if any(s in lower for s in _UNREACHABLE):
        return Unavailable(detail)
    return CRIError(detail)


class DockerImages:
    """The CRI ImageService on dockerd."""

    def __init__(
        self,
        client: DockerClient,
        *,
        mirrors: Sequence[Mirror] = (),
        pinned: Sequence[str] = (PAUSE_IMAGE,),
    ) -> None:
        self._client = client
        self.mirrors = {mirror.host: mirror for mirror in mirrors}
        self._pinned = {str(reference.parse(p)) for p in pinned}
        self._removing = asyncio.Lock()

    def _parse(self, text: str) -> reference.Reference:
        try:
            return reference.parse(text)
        except reference.InvalidReference as exc:
            raise InvalidArgument(str(exc)) from None

    def _visible_names(self, raw: ImageInspect) -> tuple[list[str], list[str]]:
        """The tags and digests the client knows the image by: the mirrors' names are hidden.

        A tag on a mirror is hidden when the image has the asked tag it stands for; a
        digest on a mirror is shown under the asked repository, and under its own name
        only beside a tag of its repository that is shown (pulled from there by name).
        """
        tags = _normalise(raw.get("RepoTags"))
        hidden = set()
        for tag in tags:
            with contextlib.suppress(reference.InvalidReference):
                ref = reference.parse(tag)
                mirror = self.mirrors.get(ref.domain)
                if mirror is not None:
                    hidden.add(str(mirror.source(ref)))
        shown = [t for t in tags if t not in hidden]
        shown_repositories = {t.rpartition(":")[0] for t in shown}
        digests: list[str] = []
        for digest in _normalise(raw.get("RepoDigests")):
            repository, _, dig = digest.partition("@")
            asked = [
                name
                for name in (mirror.asked(repository) for mirror in self.mirrors.values())
                if name is not None
            ]
            if not asked or repository in shown_repositories:
                digests.append(digest)
            digests.extend(f"{name}@{dig}" for name in asked)
        return sorted(set(shown)), sorted(set(digests))

    def _to_image(self, raw: ImageInspect) -> m.Image:
        tags, digests = self._visible_names(raw)
        uid, username = _user((raw.get("Config") or {}).get("User") or "")
        return m.Image(
            id=str(raw.get("Id", "")),
            repo_tags=tuple(tags),
            repo_digests=tuple(digests),
            size=int(raw.get("Size") or 0),
            uid=uid,
            username=username,
            pinned=any(t in self._pinned for t in tags),
        )

    async def _inspect(self, name: str) -> ImageInspect | None:
        try:
            return await self._client.inspect_image(name)
        except NotFound:
            return None

    async def _lookup(self, text: str) -> tuple[ImageInspect, str] | None:
        """By ID (full, ``sha256:``, or a 12+ hex prefix), tag or digest reference."""
        if _IMAGE_ID.match(text):
            found = await self._inspect(text)
            return (found, str(found.get("Id", text))) if found else None
        ref = self._parse(text)
        candidates = [ref]
        mirror = self.mirrors.get(ref.domain)
        if mirror is not None and ref.digest:
            candidates.append(mirror.source(ref))
        for candidate in candidates:
            found = await self._inspect(str(candidate))
            if found is not None:
                return found, str(ref)
        return None

    async def resolve(self, text: str) -> Resolved | None:
        """The image a container config names, if dockerd has it."""
        found = await self._lookup(text)
        if found is None:
            return None
        raw, name = found
        image = self._to_image(raw)
        repository = ""
        with contextlib.suppress(reference.InvalidReference):
            repository = reference.parse(name).repository
        digest = next(
            (d for d in image.repo_digests if d.partition("@")[0] == repository),
            image.repo_digests[0] if image.repo_digests else "",
        )
        return Resolved(image.id, name, digest)

    async def pull_image(self, reference_text: str, auth: Mapping[str, str]) -> str:
        ref = self._parse(reference_text)
        mirror = self.mirrors.get(ref.domain)
        source = mirror.source(ref) if mirror is not None else ref
        try:
            await self._client.pull_image(str(source), auth)
        except StreamError as exc:
            raise _classify_pull_error(reference_text, exc.message) from None
        except (NotFound, InvalidArgument) as exc:
            raise _classify_pull_error(reference_text, exc.message) from None
        except Unavailable:
            raise
        except CRIError as exc:
            raise _classify_pull_error(reference_text, exc.message) from None
        if source != ref and ref.tag:
            # The mirror's name stays: dockerd keeps a repo digest only beside a tag of the
            # same repository, and the digest is what makes by-digest lookups work.
            await self._client.tag_image(str(source), ref.repository, ref.tag)
            log.info("pulled %s from mirror %s", ref, source)
        found = await self._lookup(str(ref))
        if found is None:
            raise NotFound(f"image {reference_text!r} was pulled but dockerd does not have it")
        return str(found[0].get("Id", ""))

    async def image_status(self, reference_text: str) -> m.Image | None:
        found = await self._lookup(reference_text)
        return self._to_image(found[0]) if found else None

    async def list_images(self, reference_filter: str) -> Sequence[m.Image]:
        if reference_filter:
            found = await self.image_status(reference_filter)
            return [found] if found else []
        summaries = await self._client.list_images()
        inspected = await asyncio.gather(*(self._inspect(str(s.get("Id"))) for s in summaries))
        return sorted(
            (self._to_image(raw) for raw in inspected if raw is not None), key=lambda i: i.id
        )

    async def remove_image(self, reference_text: str) -> None:
        """Remove the image and all its tags; removing one already gone succeeds.

        Removals are made one at a time: one that follows another of the same image
        finds it gone. dockerd may still fail one that another client made meanwhile
        (``unrecognized image ID``, ``layer does not exist``); the image is then asked
        for again, and a removal whose image is gone has succeeded.
        """
        async with self._removing:
            try:
                found = await self._lookup(reference_text)
            except (Unavailable, InvalidArgument):
                raise
            except CRIError:
                if await self._gone(reference_text):
                    return
                raise
            if found is None:
                return  # already gone
            image_id = str(found[0].get("Id", ""))
            try:
                await self._client.remove_image(image_id, force=True)
            except NotFound:
                return
            except AlreadyExists as exc:  # 409: a running container uses it
                raise FailedPrecondition(f"image {reference_text!r}: {exc.message}") from None
            except Unavailable:
                raise
            except CRIError:
                if await self._gone(image_id):
                    return
                raise

    async def _gone(self, name: str) -> bool:
        """dockerd no longer has the image: asked a few times while a removal ends."""
        delay = 0.05
        for _ in range(5):
            try:
                return await self._lookup(name) is None
            except (Unavailable, InvalidArgument):
                return False
            except CRIError:
                await asyncio.sleep(delay)  # half removed: dockerd is still at it
                delay *= 2
        return False

    async def image_fs_info(self) -> Sequence[m.FilesystemUsage]:
        info, df = await asyncio.gather(self._client.info(), self._client.system_df())
        root = str(info.get("DockerRootDir", ""))
        used = int(df.get("LayersSize") or 0)
        inodes = 0
        with contextlib.suppress(OSError):
            # inodes of the filesystem that holds the data root: what cAdvisor reported
            # for the image filesystem in dockershim's days
            st = await asyncio.to_thread(os.statvfs, root)
            inodes = st.f_files - st.f_ffree
        return [m.FilesystemUsage(time.time_ns(), root, used, inodes)]
