"""A pod's quality-of-service class, as the kubelet computes it (``pkg/apis/core/v1/helper/qos``).

:func:`compute_qos_class` is ``ComputePodQOS`` over regular and init containers, CPU and
memory only:

* **BestEffort**: no container requests or limits CPU or memory;
* **Guaranteed**: every container has CPU and memory limits, and the pod's summed
  requests equal its summed limits for each resource;
* **Burstable**: anything else.

A request missing where a limit is set defaults to the limit, as the API server's
defaulting does before the kubelet sees the pod. Zero quantities count as unset.
Pod-level resources (``spec.resources``, feature-gated upstream) are not considered.
Quantities are read by :mod:`minikubelet.resources`; one that does not parse raises
:class:`ValueError` (validation refuses such a pod before it gets here).

:func:`qos_class` is ``GetPodQOS``: the class already in the pod's status, else computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from fractions import Fraction
from typing import Final

from minikubelet import resources
from minikubelet.api.pod import Pod


class QOSClass(StrEnum):
    GUARANTEED = "Guaranteed"
    BURSTABLE = "Burstable"
    BEST_EFFORT = "BestEffort"


#: ``isSupportedQoSComputeResource``.
QOS_RESOURCES: Final = (resources.CPU, resources.MEMORY)


def compute_qos_class(pod: Pod) -> QOSClass:
    """``ComputePodQOS``: the class from the containers' CPU and memory requests and limits."""
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for container in (*pod.spec.containers, *pod.spec.init_containers):
        container_requests, container_limits = resources.requests_and_limits(container.resources)
        for name in QOS_RESOURCES:
            quantity = container_requests.get(name)
            if quantity is not None and quantity > 0:
                requests[name] = requests.get(name, Fraction(0)) + quantity
        found = set()
        for name in QOS_RESOURCES:
            quantity = container_limits.get(name)
            if quantity is not None and quantity > 0:
                found.add(name)
                limits[name] = limits.get(name, Fraction(0)) + quantity
        if not set(QOS_RESOURCES) <= found:
            guaranteed = False
    if not requests and not limits:
        return QOSClass.BEST_EFFORT
    if guaranteed:
        guaranteed = all(limits.get(name) == value for name, value in requests.items())
    if guaranteed and len(requests) == len(limits):
        return QOSClass.GUARANTEED
    return QOSClass.BURSTABLE


def qos_class(pod: Pod) -> str:
    """``GetPodQOS``: the class already in the pod's status, else computed from the spec."""
    status = pod.raw.get("status")
    if isinstance(status, Mapping):
        known = status.get("qosClass")
        if isinstance(known, str) and known:
            return known
    return compute_qos_class(pod).value
