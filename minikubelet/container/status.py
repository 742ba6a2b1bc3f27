"""What the runtime reports about a pod, free of CRI types (the kubelet's kubecontainer.PodStatus).

The CRI's messages are converted to these in one place
(:mod:`minikubelet.kuberuntime.labels`); the decision core reads only these.
Times are nanoseconds since the epoch, as the CRI carries them; 0 means "not set".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from minikubelet.types import ContainerID, PodSandboxID, PodUID


class SandboxState(StrEnum):
    READY = "READY"
    NOTREADY = "NOTREADY"


class ContainerState(StrEnum):
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    EXITED = "EXITED"
    UNKNOWN = "UNKNOWN"


class NamespaceMode(StrEnum):
    """Whose namespace a sandbox uses: its own (POD), the node's (NODE), ..."""

    POD = "POD"
    CONTAINER = "CONTAINER"
    NODE = "NODE"
    TARGET = "TARGET"


@dataclass(frozen=True, slots=True)
class SandboxStatus:
    """One pod sandbox as the runtime reports it."""

    id: PodSandboxID
    state: SandboxState
    created_at: int = 0
    attempt: int = 0
    #: The primary pod IP. ``None`` when the runtime reported no network status at all,
    #: ``""`` when it reported one without an address (the kubelet treats the two apart).
    ip: str | None = None
    additional_ips: tuple[str, ...] = ()
    network_namespace: NamespaceMode = NamespaceMode.POD
    pod_name: str = ""
    pod_namespace: str = ""
    pod_uid: PodUID = field(default=PodUID(""))
    runtime_handler: str = ""

    @property
    def ips(self) -> tuple[str, ...]:
        """Primary IP first, then the others (dual stack)."""
        first = (self.ip,) if self.ip else ()
        return first + tuple(ip for ip in self.additional_ips if ip and ip != self.ip)


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    """One container instance (regular, init or sidecar) as the runtime reports it."""

    id: ContainerID
    name: str
    state: ContainerState
    created_at: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    image: str = ""
    image_ref: str = ""
    image_id: str = ""
    #: The spec hash the kubelet stamped on the container when it created it ("" if none).
    hash: str = ""
    restart_count: int = 0
    reason: str = ""
    message: str = ""


_T = TypeVar("_T", SandboxStatus, ContainerStatus)


@dataclass(frozen=True, slots=True)
class PodStatus:
    """Everything the runtime knows about one pod: sandboxes and container instances.

    Several instances may share a container name (restarts, earlier sandboxes); the
    lookups return the newest, as the kubelet's lists are ordered newest first.
    """

    uid: PodUID
    name: str = ""
    namespace: str = ""
    ips: tuple[str, ...] = ()
    sandbox_statuses: tuple[SandboxStatus, ...] = ()
    container_statuses: tuple[ContainerStatus, ...] = ()

    def sandboxes_newest_first(self) -> tuple[SandboxStatus, ...]:
        return _newest_first(self.sandbox_statuses)

    def latest_sandbox(self) -> SandboxStatus | None:
        ordered = self.sandboxes_newest_first()
        return ordered[0] if ordered else None

    def container_statuses_newest_first(self) -> tuple[ContainerStatus, ...]:
        return _newest_first(self.container_statuses)

    def find_container_status_by_name(self, name: str) -> ContainerStatus | None:
        """The newest instance of the container called ``name``, if the runtime has any."""
        for status in self.container_statuses_newest_first():
            if status.name == name:
                return status
        return None

    def running_container_statuses(self) -> tuple[ContainerStatus, ...]:
        return tuple(s for s in self.container_statuses if s.state is ContainerState.RUNNING)


def _newest_first(items: Sequence[_T]) -> tuple[_T, ...]:
    # sorted() is stable: instances created at the same instant keep the given order.
    return tuple(sorted(items, key=lambda item: item.created_at, reverse=True))
