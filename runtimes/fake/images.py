"""The simulated registry and image store.

Any well-formed reference pulls, with a digest, ID and size derived from the
reference itself (so they are stable across runs); references matching one of
the configured failure patterns fail the way a missing image does.
"""

from __future__ import annotations

import fnmatch
import hashlib
import time
from collections.abc import Iterable, Mapping, Sequence

from minikubelet import reference
from minikubelet.errors import InvalidArgument, NotFound
from runtimes.base import model as m

#: References in the reserved ``.invalid`` domain never pull: handy for ImagePullBackOff demos.
DEFAULT_FAIL_PATTERNS = ("*.invalid/*",)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class FakeImages:
    """ImageService semantics over an in-memory store."""

    def __init__(self, *, fail_patterns: Iterable[str] = DEFAULT_FAIL_PATTERNS) -> None:
        self.fail_patterns = tuple(fail_patterns)
        self._images: dict[str, m.Image] = {}  # by ID
        self.pulls = 0  # how many pulls reached the simulated registry

    def _parse(self, text: str) -> reference.Reference:
        try:
            return reference.parse(text)
        except reference.InvalidReference as exc:
            raise InvalidArgument(str(exc)) from None

    def _lookup(self, text: str) -> m.Image | None:
        """Find by ID (full, or a unique hex prefix of 12+), tag, or digest reference."""
        if reference.is_digest(text):
            return self._images.get(text)
        if len(text) >= 12 and all(c in "0123456789abcdef" for c in text):
            found = [img for img in self._images.values() if img.id[7:].startswith(text)]
            return found[0] if len(found) == 1 else None
        ref = self._parse(text)
        key = str(ref)
        for img in self._images.values():
            if key in img.repo_tags or key in img.repo_digests:
                return img
        return None

    def resolve(self, text: str) -> tuple[m.Image, str] | None:
        """The image a container refers to, and the normalised name that found it."""
        image = self._lookup(text)
        if image is None:
            return None
        name = text if reference.is_digest(text) else str(self._parse(text))
        return image, name

    async def pull_image(self, ref_text: str, auth: Mapping[str, str]) -> str:
        ref = self._parse(ref_text)
        repository = ref.repository
        if any(
            fnmatch.fnmatchcase(str(ref), p) or fnmatch.fnmatchcase(ref_text, p)
            for p in self.fail_patterns
        ):
            raise NotFound(
                f"failed to pull image {ref_text!r}: {repository}: manifest unknown "
                "(the simulated registry is set to fail this reference)"
            )
        self.pulls += 1
        tagged = ref.with_tag(ref.tag) if ref.tag else None
        manifest_digest = ref.digest or "sha256:" + _sha(f"manifest:{ref.with_tag(ref.tag)}")
        image_id = "sha256:" + _sha(f"config:{repository}@{manifest_digest}")
        size = 1_000_000 + int(_sha(image_id)[:6], 16) * 8
        existing = self._images.get(image_id)
        tags = set(existing.repo_tags) if existing else set()
        digests = set(existing.repo_digests) if existing else set()
        if tagged is not None:
            # a tag belongs to one image at a time: move it here
            for other in list(self._images.values()):
                if other.id != image_id and str(tagged) in other.repo_tags:
                    self._images[other.id] = _replace_tags(
                        other, tuple(t for t in other.repo_tags if t != str(tagged))
                    )
            tags.add(str(tagged))
        digests.add(f"{repository}@{manifest_digest}")
        self._images[image_id] = m.Image(
            id=image_id,
            repo_tags=tuple(sorted(tags)),
            repo_digests=tuple(sorted(digests)),
            size=size,
            uid=0,
        )
        return image_id

    async def image_status(self, ref_text: str) -> m.Image | None:
        return self._lookup(ref_text)

    async def list_images(self, reference_filter: str) -> Sequence[m.Image]:
        if reference_filter:
            found = self._lookup(reference_filter)
            return [found] if found else []
        return sorted(self._images.values(), key=lambda i: i.id)

    async def remove_image(self, ref_text: str) -> None:
        image = self._lookup(ref_text)
        if image is not None:
            del self._images[image.id]

    async def image_fs_info(self) -> Sequence[m.FilesystemUsage]:
        used = sum(i.size for i in self._images.values())
        return [
            m.FilesystemUsage(
                time.time_ns(), "/var/lib/minikubelet/fake/images", used, len(self._images)
            )
        ]


def _replace_tags(image: m.Image, tags: tuple[str, ...]) -> m.Image:
    from dataclasses import replace

    return replace(image, repo_tags=tags)
