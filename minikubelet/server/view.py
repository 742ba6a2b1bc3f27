"""What the local API needs from the kubelet core: a read-mostly view of the node.

The core implements :class:`NodeView`; the API server (:mod:`minikubelet.server.api`)
only translates HTTP to these calls and back. Errors are the taxonomy in
:mod:`minikubelet.errors`: :class:`~minikubelet.errors.NotFound` becomes 404,
:class:`~minikubelet.errors.InvalidArgument` 400,
:class:`~minikubelet.errors.FailedPrecondition` 409.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from minikubelet.cri.trace import TraceRecorder


class NodeView(Protocol):
    node_name: str

    def pods(self) -> list[dict[str, Any]]:
        """The node's pods as v1 Pod dicts (metadata, spec, status); rejected manifests
        are not pods: see :meth:`rejected`."""
        ...

    def rejected(self) -> list[dict[str, Any]]:
        """Manifests that failed: ``{"source": path, "line": int | None, "reason": str}``."""
        ...

    def events(self) -> list[dict[str, Any]]:
        """v1 Event dicts, oldest first."""
        ...

    def container_log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path:
        """The CRI log file of the container (of its previous instance if ``previous``);
        raises :class:`~minikubelet.errors.NotFound` with a clear message."""
        ...

    async def exec(
        self, namespace: str, pod: str, container: str, cmd: list[str], timeout: int
    ) -> tuple[bytes, bytes, int]:
        """Run ``cmd`` in the container: ``(stdout, stderr, exit code)``; raises
        :class:`~minikubelet.errors.NotFound` or
        :class:`~minikubelet.errors.FailedPrecondition` (container not running)."""
        ...

    async def stream_url(
        self,
        kind: str,
        namespace: str,
        pod: str,
        container: str,
        cmd: list[str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> str:
        """The runtime's streaming URL for an ``exec`` of ``cmd`` or an ``attach``
        (CRI Exec / Attach); NotFound or FailedPrecondition as :meth:`exec`."""
        ...

    async def port_forward_url(self, namespace: str, pod: str, ports: list[int]) -> str:
        """The runtime's streaming URL for port-forwarding into the pod (CRI PortForward)."""
        ...

    async def delete_pod(self, namespace: str, pod: str, grace_seconds: int | None) -> None:
        """Stop and forget the pod (``None``: the pod's own grace period)."""
        ...

    def status(self) -> dict[str, Any]:
        """Node summary: runtime name/version, pod counts."""
        ...

    def trace(self) -> TraceRecorder | None:
        """The kubelet's CRI call trace, if it records one."""
        ...
