"""CRI statuses as the kubelet's own: :mod:`minikubelet.container.status` from ``api_pb2``.

The one place that reads a runtime's sandbox and container statuses (with the
``io.kubernetes.*`` labels and annotations of :mod:`minikubelet.kuberuntime.labels`)
into the :class:`~minikubelet.container.status.PodStatus` the sync loop decides on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from minikubelet.container.status import (
    ContainerState,
    ContainerStatus,
    NamespaceMode,
    PodStatus,
    SandboxState,
    SandboxStatus,
)
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kuberuntime.labels import (
    container_info_from_annotations,
    container_info_from_labels,
)
from minikubelet.types import ContainerID, PodSandboxID, PodUID

_SANDBOX_STATES: Final = {
    pb.SANDBOX_READY: SandboxState.READY,
    pb.SANDBOX_NOTREADY: SandboxState.NOTREADY,
}
_CONTAINER_STATES: Final = {
    pb.CONTAINER_CREATED: ContainerState.CREATED,
    pb.CONTAINER_RUNNING: ContainerState.RUNNING,
    pb.CONTAINER_EXITED: ContainerState.EXITED,
    pb.CONTAINER_UNKNOWN: ContainerState.UNKNOWN,
}
_NAMESPACE_MODES: Final = {
    pb.POD: NamespaceMode.POD,
    pb.CONTAINER: NamespaceMode.CONTAINER,
    pb.NODE: NamespaceMode.NODE,
    pb.TARGET: NamespaceMode.TARGET,
}


def sandbox_status_from_cri(status: pb.PodSandboxStatus) -> SandboxStatus:
    """One CRI sandbox status as a :class:`SandboxStatus`.

    A state the CRI does not define reads as NOTREADY (so the sandbox gets replaced);
    a sandbox that reports no Linux namespaces reads as having its own network
    namespace, as the CRI's zero value says.
    """
    has_network = status.HasField("network")
    network_mode = status.linux.namespaces.options.network
    return SandboxStatus(
        id=PodSandboxID(status.id),
        state=_SANDBOX_STATES.get(status.state, SandboxState.NOTREADY),
        created_at=status.created_at,
        attempt=status.metadata.attempt,
        ip=status.network.ip if has_network else None,
        additional_ips=tuple(ip.ip for ip in status.network.additional_ips if ip.ip),
        network_namespace=_NAMESPACE_MODES.get(network_mode, NamespaceMode.POD),
        pod_name=status.metadata.name,
        pod_namespace=status.metadata.namespace,
        pod_uid=PodUID(status.metadata.uid),
        runtime_handler=status.runtime_handler,
    )


def container_status_from_cri(status: pb.ContainerStatus) -> ContainerStatus:
    """One CRI container status as a :class:`ContainerStatus`.

    The name comes from the ``io.kubernetes.container.name`` label (falling back to
    the CRI metadata name for containers some other client created); the spec hash
    and restart count from the annotations (falling back to labels of the same key,
    which very old kubelets used). As in the kubelet, ``started_at`` is kept once the
    container left CREATED, and exit code, finish time, reason and message only once
    it EXITED.
    """
    labels = container_info_from_labels(status.labels)
    annotations = container_info_from_annotations({**status.labels, **status.annotations})
    state = _CONTAINER_STATES.get(status.state, ContainerState.UNKNOWN)
    exited = state is ContainerState.EXITED
    return ContainerStatus(
        id=ContainerID(status.id),
        name=labels.container_name or status.metadata.name,
        state=state,
        created_at=status.created_at,
        started_at=status.started_at if state is not ContainerState.CREATED else 0,
        finished_at=status.finished_at if exited else 0,
        exit_code=status.exit_code if exited else 0,
        image=status.image.image,
        image_ref=status.image_ref,
        image_id=status.image_id,
        hash=annotations.hash,
        restart_count=annotations.restart_count,
        reason=status.reason if exited else "",
        message=status.message if exited else "",
    )


def from_cri(
    *,
    uid: PodUID | str,
    name: str = "",
    namespace: str = "",
    sandboxes: Iterable[pb.PodSandboxStatus] = (),
    containers: Iterable[pb.ContainerStatus] = (),
) -> PodStatus:
    """The :class:`PodStatus` of one pod from the CRI statuses of its sandboxes and containers.

    The caller passes only the pod's own sandboxes and containers (the kubelet lists
    them by the pod UID label). Both lists come back newest first. The pod's IPs are
    those of the newest sandbox, and only while it is ready, as in the kubelet.
    """
    sandbox_statuses = tuple(
        sorted(
            (sandbox_status_from_cri(s) for s in sandboxes),
            key=lambda s: s.created_at,
            reverse=True,
        )
    )
    container_statuses = tuple(
        sorted(
            (container_status_from_cri(c) for c in containers),
            key=lambda c: c.created_at,
            reverse=True,
        )
    )
    ips: tuple[str, ...] = ()
    if sandbox_statuses and sandbox_statuses[0].state is SandboxState.READY:
        ips = sandbox_statuses[0].ips
    return PodStatus(
        uid=PodUID(str(uid)),
        name=name,
        namespace=namespace,
        ips=ips,
        sandbox_statuses=sandbox_statuses,
        container_statuses=container_statuses,
    )
