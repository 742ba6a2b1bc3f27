"""The kubelet's own admission: does a pod fit this node? (``lifecycle/predicate.go``)

Before a pod runs, the kubelet checks it against the node the way the scheduler
did, because the scheduler may have raced, the pod may name the node directly
(``spec.nodeName`` set by hand), or it may be a static pod that no scheduler saw.
:class:`PredicateAdmitHandler` is the pod manager's
:class:`~minikubelet.podmanager.AdmitHandler` for the scheduler's general
predicates, in their order, and the first failure is the verdict:

* **resources** (``noderesources.Fits``): one more pod than allocatable ``pods`` is
  ``OutOfpods``; the pod's CPU or memory request beyond what allocatable leaves after
  the admitted pods' requests is ``OutOfcpu`` / ``OutOfmemory``, with the message
  ``Node didn't have enough resource: cpu, requested: 4000, used: 100, capacity:
  2000`` (CPU in millicores, memory in bytes). A pod's request is
  ``max(sum(containers), max(init containers)) + overhead``, sidecars (restartable init
  containers) counted with the containers and under every later init container, as
  ``PodRequests`` computes it;
* **node affinity**: ``spec.nodeSelector`` and
  ``requiredDuringSchedulingIgnoredDuringExecution`` against the Node's labels (terms
  ORed, expressions ANDed; ``In``, ``NotIn``, ``Exists``, ``DoesNotExist``, ``Gt``,
  ``Lt``; ``matchFields`` on ``metadata.name``); reason ``NodeAffinity``, message
  ``Predicate NodeAffinity failed``;
* ``spec.nodeName`` naming another node (``NodeName``), a host port already taken
  by an admitted pod (``NodePorts``).

What the node offers comes through :class:`NodeResources` (allocatable and labels,
kept by the node status manager). A refused pod is never run: :func:`rejected_status`
is the status the kubelet's ``rejectPod`` gives it (phase ``Failed``, the reason, and
``Pod was rejected: <message>``). Static pods go through the same handlers, as in the
kubelet; the critical-pod preemption the kubelet does on a refusal is not done here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from minikubelet.api.pod import Container, Pod
from minikubelet.clock import Clock, rfc3339
from minikubelet.podmanager import AdmitResult
from minikubelet.resources import CPU, MEMORY, Quantity, bytes_, milli_cpu, resource_list
from minikubelet.resources import requests_and_limits as _requests_and_limits
from minikubelet.status.qos import qos_class
from minikubelet.types import PodUID

log = logging.getLogger(__name__)

PODS: Final = "pods"
NODE_AFFINITY: Final = "NodeAffinity"
NODE_NAME: Final = "NodeName"
NODE_PORTS: Final = "NodePorts"
_INT64 = re.compile(r"[+-]?[0-9]{1,19}")
_INT64_MAX: Final = 2**63 - 1


class NodeResources(Protocol):
    """What admission needs to know of the node (the node status manager has it)."""

    def allocatable(self) -> tuple[int, int, int]:
        """``(milli_cpu, memory_bytes, pods)`` the pods may request."""
        ...

    def labels(self) -> Mapping[str, str]:
        """The Node's labels, as the API server has them."""
        ...


@dataclass
class FixedNodeResources:
    """A node whose allocatable and labels are given (tests, or until the Node is known)."""

    milli_cpu: int
    memory: int
    pods: int
    node_labels: dict[str, str] = field(default_factory=dict)

    def allocatable(self) -> tuple[int, int, int]:
        return self.milli_cpu, self.memory, self.pods

    def labels(self) -> Mapping[str, str]:
        return self.node_labels


# -- a pod's requests ------------------------------------------------------------------------


def _container_requests(container: Container) -> dict[str, Quantity]:
    try:
        requests, _ = _requests_and_limits(container.resources)
    except ValueError:
        return {}  # an API pod was validated there; a bad value counts as no request
    return requests


def _add(into: dict[str, Quantity], other: Mapping[str, Quantity]) -> None:
    for name, value in other.items():
        into[name] = into.get(name, Quantity(0)) + value


def _max(into: dict[str, Quantity], other: Mapping[str, Quantity]) -> None:
    for name, value in other.items():
        if value > into.get(name, Quantity(0)):
            into[name] = value


def pod_requests(pod: Pod) -> dict[str, Quantity]:
    """The pod's effective requests: ``max(sum(containers), max(init containers)) + overhead``.

    A sidecar (an init container with ``restartPolicy: Always``) keeps running, so its
    request adds to the containers' and to that of every init container after it.
    """
    total: dict[str, Quantity] = {}
    for container in pod.spec.containers:
        _add(total, _container_requests(container))
    sidecars: dict[str, Quantity] = {}
    init_peak: dict[str, Quantity] = {}
    for container in pod.spec.init_containers:
        requests = _container_requests(container)
        if container.is_restartable:
            _add(total, requests)
            _add(sidecars, requests)
            effective = dict(sidecars)
        else:
            effective = dict(requests)
            _add(effective, sidecars)
        _max(init_peak, effective)
    _max(total, init_peak)
    spec = pod.raw.get("spec") or {}
    try:
        overhead = resource_list(spec.get("overhead"), "spec.overhead")
    except ValueError:
        overhead = {}
    _add(total, overhead)
    return total


def cpu_memory(requests: Mapping[str, Quantity]) -> tuple[int, int]:
    """``(milli_cpu, memory_bytes)`` of a request list, rounded up as the kubelet rounds."""
    return milli_cpu(requests.get(CPU, Quantity(0))), bytes_(requests.get(MEMORY, Quantity(0)))


# -- node selectors --------------------------------------------------------------------------


class _InvalidRequirement(ValueError):
    pass


def _int64(text: str) -> int:
    if not _INT64.fullmatch(text):
        raise _InvalidRequirement(text)
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise _InvalidRequirement(text)
    return value


def _requirement_matches(expression: Mapping[str, Any], values_by_key: Mapping[str, str]) -> bool:
    """One ``matchExpressions`` entry against labels; _InvalidRequirement if it is malformed."""
    key = expression.get("key")
    operator = expression.get("operator")
    values = expression.get("values") or []
    if not isinstance(key, str) or not isinstance(values, list):
        raise _InvalidRequirement(str(expression))
    values = [str(v) for v in values]
    present = key in values_by_key
    actual = values_by_key.get(key, "")
    if operator in ("In", "NotIn"):
        if not values:
            raise _InvalidRequirement(f"{operator} needs values")
        if operator == "In":
            return present and actual in values
        return not present or actual not in values
    if operator in ("Exists", "DoesNotExist"):
        if values:
            raise _InvalidRequirement(f"{operator} takes no values")
        return present if operator == "Exists" else not present
    if operator in ("Gt", "Lt"):
        if len(values) != 1:
            raise _InvalidRequirement(f"{operator} takes one value")
        bound = _int64(values[0])
        if not present:
            return False
        try:
            have = _int64(actual)
        except _InvalidRequirement:
            return False  # a label that is not an integer matches neither
        return have > bound if operator == "Gt" else have < bound
    raise _InvalidRequirement(f"unknown operator {operator!r}")


def _field_matches(expression: Mapping[str, Any], fields: Mapping[str, str]) -> bool:
    operator = expression.get("operator")
    values = expression.get("values") or []
    if operator not in ("In", "NotIn") or not isinstance(values, list) or len(values) != 1:
        raise _InvalidRequirement(str(expression))  # a field selector takes one value
    key = str(expression.get("key", ""))
    have = fields.get(key, "")
    equal: bool = have == str(values[0])
    return equal if operator == "In" else not equal


def _term_matches(term: Mapping[str, Any], labels: Mapping[str, str], node_name: str) -> bool:
    expressions = term.get("matchExpressions") or []
    field_expressions = term.get("matchFields") or []
    if not expressions and not field_expressions:
        return False  # an empty term selects nothing
    try:
        return all(_requirement_matches(e, labels) for e in expressions) and all(
            _field_matches(e, {"metadata.name": node_name}) for e in field_expressions
        )
    except (_InvalidRequirement, AttributeError, TypeError):
        return False  # a term that does not parse matches nothing, as the kubelet's lazy error


def matches_node_selector_terms(
    terms: Iterable[Mapping[str, Any]], labels: Mapping[str, str], node_name: str
) -> bool:
    """``nodeSelectorTerms``: any term (each: all its expressions) matches the node."""
    return any(
        _term_matches(term, labels, node_name) for term in terms if isinstance(term, Mapping)
    )


def matches_node(pod: Pod, labels: Mapping[str, str], node_name: str) -> bool:
    """``GetRequiredNodeAffinity(pod).Match(node)``: nodeSelector and required affinity."""
    spec = pod.raw.get("spec") or {}
    selector = spec.get("nodeSelector") or {}
    if isinstance(selector, Mapping):
        for key, value in selector.items():
            if labels.get(str(key)) != str(value):
                return False
    affinity = (spec.get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        return True
    if not isinstance(required, Mapping):
        return False
    terms = required.get("nodeSelectorTerms") or []
    return matches_node_selector_terms(terms, labels, node_name)


# -- host ports ------------------------------------------------------------------------------


def _host_ports(pod: Pod) -> set[tuple[str, str, int]]:
    out = set()
    for container in (*pod.spec.init_containers, *pod.spec.containers):
        for port in container.ports:
            if port.host_port > 0:
                out.add((port.protocol or "TCP", port.host_ip or "0.0.0.0", port.host_port))
    return out


def _ports_conflict(wanted: set[tuple[str, str, int]], used: set[tuple[str, str, int]]) -> bool:
    for protocol, ip, port in wanted:
        for other_protocol, other_ip, other_port in used:
            if protocol != other_protocol or port != other_port:
                continue
            if ip == other_ip or "0.0.0.0" in (ip, other_ip):
                return True
    return False


# -- the handler -----------------------------------------------------------------------------


def insufficient(resource: str, requested: int, used: int, capacity: int) -> AdmitResult:
    """``InsufficientResourceError`` as the kubelet reports it."""
    return AdmitResult(
        f"OutOf{resource}",
        f"Node didn't have enough resource: {resource}, requested: {requested}, "
        f"used: {used}, capacity: {capacity}",
    )


def predicate_failed(name: str) -> AdmitResult:
    """``PredicateFailureError`` as the kubelet reports it."""
    return AdmitResult(name, f"Predicate {name} failed")


class PredicateAdmitHandler:
    """The kubelet's predicate admit handler over :class:`NodeResources` (``node``, which
    may be given after the handler is made: the node status manager is made later).

    ``active`` says whether an admitted pod still counts (the kubelet leaves pods in a
    terminal phase out: ``filterOutInactivePods``); by default every one does.
    """

    def __init__(
        self,
        node: NodeResources | None,
        *,
        node_name: str,
        active: Callable[[Pod], bool] | None = None,
    ) -> None:
        #: What the node offers; None until it is known (then every pod is refused with
        #: the kubelet's ``InvalidNodeInfo``).
        self.node = node
        self._node_name = node_name
        self._active = active

    def admit(self, pod: Pod, admitted: Sequence[Pod]) -> AdmitResult | None:
        others = [
            p for p in admitted if p.uid != pod.uid and (self._active is None or self._active(p))
        ]
        if self.node is None:
            return AdmitResult("InvalidNodeInfo", "Kubelet cannot get node info.")
        alloc_cpu, alloc_memory, alloc_pods = self.node.allocatable()
        if len(others) + 1 > alloc_pods:
            return insufficient(PODS, 1, len(others), alloc_pods)
        want_cpu, want_memory = cpu_memory(pod_requests(pod))
        if want_cpu or want_memory:
            used_cpu = used_memory = 0
            for other in others:
                cpu, memory = cpu_memory(pod_requests(other))
                used_cpu += cpu
                used_memory += memory
            if want_cpu > alloc_cpu - used_cpu:
                return insufficient(CPU, want_cpu, used_cpu, alloc_cpu)
            if want_memory > alloc_memory - used_memory:
                return insufficient(MEMORY, want_memory, used_memory, alloc_memory)
        if not matches_node(pod, self.node.labels(), self._node_name):
            return predicate_failed(NODE_AFFINITY)
        if pod.spec.node_name and pod.spec.node_name != self._node_name:
            return predicate_failed(NODE_NAME)
        wanted = _host_ports(pod)
        if wanted:
            used: set[tuple[str, str, int]] = set()
            for other in others:
                used |= _host_ports(other)
            if _ports_conflict(wanted, used):
                return predicate_failed(NODE_PORTS)
        return None


def rejected_status(
    result: AdmitResult, *, qos_class: str = "", start_time: str = ""
) -> dict[str, Any]:
    """The status the kubelet's ``rejectPod`` sets: Failed, the reason, and why (the
    status manager adds the start time and the QoS class is kept, as in the kubelet)."""
    status: dict[str, Any] = {
        "phase": "Failed",
        "reason": result.reason,
        "message": f"Pod was rejected: {result.message}",
    }
    if qos_class:
        status["qosClass"] = qos_class
    if start_time:
        status["startTime"] = start_time
    return status


class PodStatusSetter(Protocol):
    def set_pod_status(self, uid: PodUID | str, status: Mapping[str, Any]) -> int: ...


def reject_into(statuses: PodStatusSetter, clock: Clock) -> Callable[[Pod, AdmitResult], None]:
    """The pod manager's ``on_rejected``: the refused pod's status becomes Failed with the
    reason and message (the Warning event is the pod manager's)."""

    def on_rejected(pod: Pod, result: AdmitResult) -> None:
        statuses.set_pod_status(
            pod.uid,
            rejected_status(result, qos_class=qos_class(pod), start_time=rfc3339(clock.now())),
        )

    return on_rejected


__all__ = (
    "FixedNodeResources",
    "NodeResources",
    "PredicateAdmitHandler",
    "cpu_memory",
    "matches_node",
    "matches_node_selector_terms",
    "pod_requests",
    "reject_into",
    "rejected_status",
)
