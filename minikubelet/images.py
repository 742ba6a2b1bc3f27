"""Pulling images for containers with the kubelet's pull policies, events and back-off.

With :class:`PullCredentials` (the pod's ``imagePullSecrets`` in API server mode), a pull
offers the credentials that match the image's registry, one set after the other until
one works, as the kubelet's ``PullImage`` does; none match: the pull goes anonymous.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from minikubelet import reference
from minikubelet.api.pod import Container, Pod, PullPolicy, default_pull_policy
from minikubelet.backoff import Backoff
from minikubelet.cri.services import ImageService
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError
from minikubelet.events import NORMAL, WARNING, EventRecorder

ERR_IMAGE_PULL: Final = "ErrImagePull"
IMAGE_PULL_BACKOFF: Final = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL: Final = "ErrImageNeverPull"
INVALID_IMAGE_NAME: Final = "InvalidImageName"


class ImagePullError(Exception):
    """The container cannot start for want of its image; ``reason`` is the waiting reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def with_default_tag(image: str) -> str:
    """The kubelet's ``applyDefaultImageTag``: no tag and no digest means ``:latest``."""
    ref = reference.parse(image)
    last = image.rsplit("/", 1)[-1]
    if ":" in last or "@" in image:
        return image
    return f"{image}:{ref.tag}"


class PullCredentials(Protocol):
    async def for_image(self, pod: Pod, image: str) -> Sequence[pb.AuthConfig]:
        """The credentials to try for ``image``, in order (empty: pull anonymously);
        ValueError when the pod's pull secrets cannot be read as credentials."""
        ...


def aggregate_message(messages: Sequence[str]) -> str:
    """apimachinery's aggregate error text: one message as is, several ``[a, b]``."""
    distinct = list(dict.fromkeys(messages))
    if len(messages) == 1 or len(distinct) == 1:
        return distinct[0]
    return "[" + ", ".join(distinct) + "]"


class ImageManager:
    """Pull policy, pull events and back-off; the pulls themselves go to the image service
    of the runtime that holds the pod, which the caller names."""

    def __init__(
        self,
        events: EventRecorder,
        backoff: Backoff,
        *,
        credentials: PullCredentials | None = None,
    ) -> None:
        self._events = events
        self._backoff = backoff
        self._credentials = credentials

    async def _pull(
        self, images: ImageService, pod: Pod, image: str, sandbox_config: pb.PodSandboxConfig
    ) -> str:
        """Pull with each matching credential in turn; CRIError/ValueError when none works."""
        auths: Sequence[pb.AuthConfig] = ()
        if self._credentials is not None:
            auths = await self._credentials.for_image(pod, image)
        if not auths:
            return await images.pull_image(image, sandbox_config=sandbox_config)
        failures: list[CRIError] = []
        for auth in auths:
            try:
                return await images.pull_image(image, auth=auth, sandbox_config=sandbox_config)
            except CRIError as exc:
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        raise CRIError(aggregate_message([f.message for f in failures]))

    async def ensure_image(
        self,
        images: ImageService,
        pod: Pod,
        container: Container,
        sandbox_config: pb.PodSandboxConfig,
    ) -> str:
        """The image reference to create ``container`` from, pulling as its policy says."""
        kind = "initContainers" if container in pod.spec.init_containers else "containers"
        field_path = f"spec.{kind}{{{container.name}}}"
        return await self._ensure(
            images, pod, container.image, container.image_pull_policy, sandbox_config, field_path
        )

    async def ensure_volume_image(
        self,
        images: ImageService,
        pod: Pod,
        source: Mapping[str, Any],
        sandbox_config: pb.PodSandboxConfig,
    ) -> str:
        """The image an ``image`` volume mounts, pulled with its ``pullPolicy`` (by default
        Always for ``:latest`` or no tag, else IfNotPresent) and the pod's credentials,
        with the events and back-off of a container's image (the kubelet's
        ``EnsureImageExists`` for image volumes)."""
        ref = str(source.get("reference") or "")
        try:
            policy = PullPolicy(source["pullPolicy"]) if source.get("pullPolicy") else None
        except ValueError:
            policy = None
        if policy is None:
            try:
                policy = default_pull_policy(ref)
            except reference.InvalidReference:
                policy = PullPolicy.IF_NOT_PRESENT  # the tag check below reports the name
        return await self._ensure(images, pod, ref, policy, sandbox_config, "")

    async def _ensure(
        self,
        images: ImageService,
        pod: Pod,
        requested: str,
        policy: PullPolicy,
        sandbox_config: pb.PodSandboxConfig,
        field_path: str,
    ) -> str:
        try:
            image = with_default_tag(requested)
        except reference.InvalidReference as exc:
            message = f'Failed to apply default image tag "{requested}": {exc}'
            self._events.pod_event(pod, WARNING, INVALID_IMAGE_NAME, message, field_path=field_path)
            raise ImagePullError(INVALID_IMAGE_NAME, message) from None
        present = await images.image_status(image)
        if present is not None and policy is not PullPolicy.ALWAYS:
            self._events.pod_event(
                pod,
                NORMAL,
                "Pulled",
                f'Container image "{image}" already present on machine',
                field_path=field_path,
            )
            return present.id
        if policy is PullPolicy.NEVER:
            message = f'Container image "{image}" is not present with pull policy of Never'
            self._events.pod_event(
                pod, WARNING, ERR_IMAGE_NEVER_PULL, message, field_path=field_path
            )
            raise ImagePullError(ERR_IMAGE_NEVER_PULL, message)
        key = f"{pod.uid}_{image}"
        if self._backoff.in_backoff_since_update(key):
            message = f'Back-off pulling image "{image}"'
            self._events.pod_event(pod, NORMAL, "BackOff", message, field_path=field_path)
            raise ImagePullError(IMAGE_PULL_BACKOFF, message)
        self._events.pod_event(
            pod, NORMAL, "Pulling", f'Pulling image "{image}"', field_path=field_path
        )
        started = self._backoff.clock.monotonic()
        try:
            image_ref = await self._pull(images, pod, image, sandbox_config)
        except (CRIError, ValueError) as exc:
            self._backoff.next(key, self._backoff.clock.now())
            why = exc.message if isinstance(exc, CRIError) else str(exc)
            message = f'Failed to pull image "{image}": {why}'
            self._events.pod_event(pod, WARNING, "Failed", message, field_path=field_path)
            raise ImagePullError(ERR_IMAGE_PULL, message) from None
        self._backoff.reset(key)
        took = self._backoff.clock.monotonic() - started
        size = ""
        status = await images.image_status(image_ref or image)
        if status is not None:
            size = f" Image size: {status.size} bytes."
        self._events.pod_event(
            pod,
            NORMAL,
            "Pulled",
            f'Successfully pulled image "{image}" in {took:.3f}s '
            f"({took:.3f}s including waiting).{size}",
            field_path=field_path,
        )
        return image_ref
