"""Name reservation: one sandbox per pod name and attempt, one container per name in a sandbox.

As in containerd and CRI-O, a name is reserved for the id that holds it from
the moment its creation begins until the object is removed; asking for it again
is ``AlreadyExists`` with the holder in the message ("... is reserved for <id>"),
which the kubelet reads as "that one exists already".

A sandbox's name is its metadata's (name, namespace, uid, attempt); a container's
is (sandbox id, name, attempt). :class:`NameReservations` keeps them for the
runtimes that hold their objects in memory; a runtime whose backend enforces
unique names itself (dockerd) raises the same errors through
:func:`sandbox_name_reserved` and :func:`container_name_reserved`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from minikubelet.errors import AlreadyExists
from runtimes.base import model as m

SandboxKey = tuple[str, str, str, int]
ContainerKey = tuple[str, str, int]


def sandbox_key(md: m.SandboxMetadata) -> SandboxKey:
    return (md.name, md.namespace, md.uid, md.attempt)


def container_key(sandbox_id: str, md: m.ContainerMetadata) -> ContainerKey:
    return (sandbox_id, md.name, md.attempt)


def sandbox_name_reserved(md: m.SandboxMetadata, holder: str) -> AlreadyExists:
    """RunPodSandbox again for a pod and attempt that ``holder`` already is."""
    return AlreadyExists(
        f"pod sandbox name {md.namespace}/{md.name} (uid {md.uid}, attempt {md.attempt})"
        f" is reserved for {holder}"
    )


def container_name_reserved(md: m.ContainerMetadata, sandbox_id: str, holder: str) -> AlreadyExists:
    """CreateContainer again for a name and attempt that ``holder`` already is."""
    return AlreadyExists(
        f"container name {md.name!r} (attempt {md.attempt}) in pod"
        f" sandbox {sandbox_id} is reserved for {holder}"
    )


class NameReservations:
    """The sandbox and container names in use, each with the id that holds it."""

    def __init__(self) -> None:
        self._sandboxes: dict[SandboxKey, str] = {}
        self._containers: dict[ContainerKey, str] = {}

    def reserve_sandbox(self, md: m.SandboxMetadata, sandbox_id: str) -> None:
        """Hold the pod's name for ``sandbox_id``; AlreadyExists if another holds it."""
        holder = self._sandboxes.setdefault(sandbox_key(md), sandbox_id)
        if holder != sandbox_id:
            raise sandbox_name_reserved(md, holder)

    def release_sandbox(self, md: m.SandboxMetadata, sandbox_id: str) -> None:
        """Free the name, if ``sandbox_id`` holds it (a no-op otherwise)."""
        key = sandbox_key(md)
        if self._sandboxes.get(key) == sandbox_id:
            del self._sandboxes[key]

    def reserve_container(
        self, sandbox_id: str, md: m.ContainerMetadata, container_id: str
    ) -> None:
        """Hold the container's name in its sandbox for ``container_id``."""
        holder = self._containers.setdefault(container_key(sandbox_id, md), container_id)
        if holder != container_id:
            raise container_name_reserved(md, sandbox_id, holder)

    def release_container(
        self, sandbox_id: str, md: m.ContainerMetadata, container_id: str
    ) -> None:
        """Free the name, if ``container_id`` holds it (a no-op otherwise)."""
        key = container_key(sandbox_id, md)
        if self._containers.get(key) == container_id:
            del self._containers[key]

    @contextlib.contextmanager
    def sandbox(self, md: m.SandboxMetadata, sandbox_id: str) -> Iterator[None]:
        """Reserve for the creation in the block; released again if the block fails."""
        self.reserve_sandbox(md, sandbox_id)
        try:
            yield
        except BaseException:
            self.release_sandbox(md, sandbox_id)
            raise

    @contextlib.contextmanager
    def container(
        self, sandbox_id: str, md: m.ContainerMetadata, container_id: str
    ) -> Iterator[None]:
        """Reserve for the creation in the block; released again if the block fails."""
        self.reserve_container(sandbox_id, md, container_id)
        try:
            yield
        except BaseException:
            self.release_container(sandbox_id, md, container_id)
            raise
