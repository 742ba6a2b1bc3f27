"""The ``io.kubernetes.*`` labels and annotations the kubelet puts on what it creates.

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

:mod:`minikubelet.kuberuntime.status` reads them back when it turns CRI statuses
into the kubelet's own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from minikubelet.api.pod import Container, Pod
from minikubelet.kuberuntime.hash import hash_container, normalize_hash
from minikubelet.types import PodUID

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
