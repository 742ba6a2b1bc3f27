"""The ``io.kubernetes.*`` labels and annotations, and the CRI -> status conversion that reads them.

The kubelet keeps no database of what it created: everything it must remember
about a sandbox or a container travels with it through the runtime, as labels
(identity, usable in a ListContainers filter) and annotations (the rest). After a
restart the kubelet reads them back from the runtime's statuses. The keys and the
value formats here are the kubelet's own, so tools like crictl show the same thing
for minikubelet's containers as for a real node's:

* sandbox labels: the pod's labels plus pod name, namespace and UID; sandbox
  annotations: the pod's annotations;
* container labels: pod name, namespace, UID and container name;
* container annotations: the spec hash (hex), the restart count (decimal), the
  termination message path and policy, the pod's termination grace period and, once
  it is being deleted, its deletion grace period, the preStop handler and the ports
  (both as JSON).

This is also the one module that turns CRI status messages into
:mod:`minikubelet.container.status` objects (:func:`from_cri`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from minikubelet.api.pod import Container, Pod
from minikubelet.container.status import (
    ContainerState,
    ContainerStatus,
    NamespaceMode,
    PodStatus,
    SandboxState,
    SandboxStatus,
)
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kuberuntime.hash import hash_container, normalize_hash
from minikubelet.types import ContainerID, PodSandboxID, PodUID

# Labels (k8s.io/kubelet/pkg/types).
POD_NAME_LABEL: Final = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL: Final = "io.kubernetes.pod.namespace"
POD_UID_LABEL: Final = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL: Final = "io.kubernetes.container.name"
#: The container name tools show for a sandbox's infra ("pause") container.
POD_INFRA_CONTAINER_NAME: Final = "POD"

# Annotations on containers.
POD_DELETION_GRACE_PERIOD_ANNOTATION: Final = "io.kubernetes.pod.deletionGracePeriod"
POD_TERMINATION_GRACE_PERIOD_ANNOTATION: Final = "io.kubernetes.pod.terminationGracePeriod"
CONTAINER_HASH_ANNOTATION: Final = "io.kubernetes.container.hash"
CONTAINER_RESTART_COUNT_ANNOTATION: Final = "io.kubernetes.container.restartCount"
CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION: Final = (
    "io.kubernetes.container.terminationMessagePath"
)
CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION: Final = (
    "io.kubernetes.container.terminationMessagePolicy"
)
CONTAINER_PRESTOP_HANDLER_ANNOTATION: Final = "io.kubernetes.container.preStopHandler"
CONTAINER_PORTS_ANNOTATION: Final = "io.kubernetes.container.ports"

_POD_IDENTITY_LABELS: Final = frozenset({POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL})
_DECIMAL: Final = re.compile(r"[+-]?[0-9]+")


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


# --- writing -------------------------------------------------------------------------------


def new_pod_labels(pod: Pod) -> dict[str, str]:
    """Labels for the pod's sandbox: the pod's own labels plus its identity."""
    labels = dict(pod.metadata.labels)
    labels[POD_NAME_LABEL] = pod.name
    labels[POD_NAMESPACE_LABEL] = pod.namespace
    labels[POD_UID_LABEL] = str(pod.uid)
    return labels


def new_pod_annotations(pod: Pod) -> dict[str, str]:
    """Annotations for the pod's sandbox: the pod's own annotations."""
    return dict(pod.metadata.annotations)


def new_container_labels(container: Container, pod: Pod) -> dict[str, str]:
    """Labels for a container: which pod it belongs to and which spec entry it runs."""
    return {
        POD_NAME_LABEL: pod.name,
        POD_NAMESPACE_LABEL: pod.namespace,
        POD_UID_LABEL: str(pod.uid),
        CONTAINER_NAME_LABEL: container.name,
    }


def new_container_annotations(
    container: Container,
    pod: Pod,
    restart_count: int,
    *,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Annotations for a container; the kubelet's keys win over clashing ``extra`` ones."""
    annotations = dict(extra or {})
    annotations[CONTAINER_HASH_ANNOTATION] = hash_container(container)
    annotations[CONTAINER_RESTART_COUNT_ANNOTATION] = str(restart_count)
    annotations[CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION] = container.termination_message_path
    annotations[CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION] = (
        container.termination_message_policy.value
    )
    if pod.metadata.deletion_grace_period_seconds is not None:
        annotations[POD_DELETION_GRACE_PERIOD_ANNOTATION] = str(
            pod.metadata.deletion_grace_period_seconds
        )
    annotations[POD_TERMINATION_GRACE_PERIOD_ANNOTATION] = str(
        pod.spec.termination_grace_period_seconds
    )
    pre_stop = container.pre_stop
    if pre_stop is not None:
        annotations[CONTAINER_PRESTOP_HANDLER_ANNOTATION] = _json(pre_stop)
    if container.ports:
        annotations[CONTAINER_PORTS_ANNOTATION] = _json([p.to_dict() for p in container.ports])
    return annotations


# --- reading -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodSandboxLabelInfo:
    """What a sandbox's labels say: the pod's identity and the pod's own labels."""

    pod_name: str
    pod_namespace: str
    pod_uid: PodUID
    labels: dict[str, str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True, slots=True)
class ContainerLabelInfo:
    container_name: str
    pod_name: str
    pod_namespace: str
    pod_uid: PodUID


@dataclass(frozen=True, slots=True)
class ContainerAnnotationInfo:
    """What a container's annotations say. Missing or unreadable values read as unset."""

    hash: str = ""
    restart_count: int = 0
    termination_message_path: str = ""
    termination_message_policy: str = ""
    pod_deletion_grace_period: int | None = None
    pod_termination_grace_period: int | None = None
    pre_stop_handler: dict[str, Any] | None = field(default=None, hash=False)
    ports: tuple[dict[str, Any], ...] = field(default=(), hash=False)


def pod_sandbox_info_from_labels(labels: Mapping[str, str]) -> PodSandboxLabelInfo:
    return PodSandboxLabelInfo(
        pod_name=labels.get(POD_NAME_LABEL, ""),
        pod_namespace=labels.get(POD_NAMESPACE_LABEL, ""),
        pod_uid=PodUID(labels.get(POD_UID_LABEL, "")),
        labels={k: v for k, v in labels.items() if k not in _POD_IDENTITY_LABELS},
    )


def container_info_from_labels(labels: Mapping[str, str]) -> ContainerLabelInfo:
    return ContainerLabelInfo(
        container_name=labels.get(CONTAINER_NAME_LABEL, ""),
        pod_name=labels.get(POD_NAME_LABEL, ""),
        pod_namespace=labels.get(POD_NAMESPACE_LABEL, ""),
        pod_uid=PodUID(labels.get(POD_UID_LABEL, "")),
    )


def _int_or_none(text: str | None) -> int | None:
    if text is None or not _DECIMAL.fullmatch(text):
        return None
    return int(text)


def _json_or_none(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


def container_info_from_annotations(annotations: Mapping[str, str]) -> ContainerAnnotationInfo:
    pre_stop = _json_or_none(annotations.get(CONTAINER_PRESTOP_HANDLER_ANNOTATION))
    ports = _json_or_none(annotations.get(CONTAINER_PORTS_ANNOTATION))
    return ContainerAnnotationInfo(
        hash=normalize_hash(annotations.get(CONTAINER_HASH_ANNOTATION, "")),
        restart_count=_int_or_none(annotations.get(CONTAINER_RESTART_COUNT_ANNOTATION)) or 0,
        termination_message_path=annotations.get(CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION, ""),
        termination_message_policy=annotations.get(
            CONTAINER_TERMINATION_MESSAGE_POLICY_ANNOTATION, ""
        ),
        pod_deletion_grace_period=_int_or_none(
            annotations.get(POD_DELETION_GRACE_PERIOD_ANNOTATION)
        ),
        pod_termination_grace_period=_int_or_none(
            annotations.get(POD_TERMINATION_GRACE_PERIOD_ANNOTATION)
        ),
        pre_stop_handler=dict(pre_stop) if isinstance(pre_stop, dict) else None,
        ports=(
            tuple(dict(p) for p in ports if isinstance(p, dict)) if isinstance(ports, list) else ()
        ),
    )


# --- CRI -> status -------------------------------------------------------------------------

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
