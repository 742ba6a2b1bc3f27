"""The runtime-agnostic model of what is running: pod, sandbox and container statuses."""

from __future__ import annotations

from minikubelet.container.status import (
    ContainerState,
    ContainerStatus,
    NamespaceMode,
    PodStatus,
    SandboxState,
    SandboxStatus,
)

__all__ = [
    "ContainerState",
    "ContainerStatus",
    "NamespaceMode",
    "PodStatus",
    "SandboxState",
    "SandboxStatus",
]
