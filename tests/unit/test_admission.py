"""Kubelet admission: the predicate handler's verdicts, worded as the kubelet words them."""

from __future__ import annotations

from typing import Any

import pytest

from minikubelet.admission import (
    FixedNodeResources,
    PredicateAdmitHandler,
    cpu_memory,
    pod_requests,
    reject_into,
)
from minikubelet.api.pod import Pod
from minikubelet.clock import ManualClock
from minikubelet.podmanager import AdmitResult
from minikubelet.status.manager import StatusManager

NODE = "node1"
GI = 1024**3


def pod(
    name: str,
    *,
    cpu: str | None = None,
    memory: str | None = None,
    init: list[dict[str, Any]] | None = None,
    overhead: dict[str, str] | None = None,
    spec: dict[str, Any] | None = None,
    containers: list[dict[str, Any]] | None = None,
) -> Pod:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
    body: dict[str, Any] = {
        "containers": containers
        or [{"name": "c", "image": "busybox", "resources": {"requests": requests}}],
        **(spec or {}),
    }
    if init:
        body["initContainers"] = init
    if overhead:
        body["overhead"] = overhead
    return Pod.from_dict(
        {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}, "spec": body},
        validate=False,
    )


def handler(
    cpu: int = 2000, memory: int = 4 * GI, pods: int = 110, labels: dict[str, str] | None = None
) -> PredicateAdmitHandler:
    node = FixedNodeResources(cpu, memory, pods, labels or {"kubernetes.io/hostname": NODE})
    return PredicateAdmitHandler(node, node_name=NODE)


# -- requests --------------------------------------------------------------------------------


def test_requests_sum_containers_and_take_the_init_containers_peak() -> None:
    p = pod(
        "p",
        containers=[
            {"name": "a", "image": "x", "resources": {"requests": {"cpu": "100m"}}},
            {"name": "b", "image": "x", "resources": {"limits": {"cpu": "200m", "memory": "1Gi"}}},
        ],
        init=[
            {"name": "i1", "image": "x", "resources": {"requests": {"cpu": "500m"}}},
            {"name": "i2", "image": "x", "resources": {"requests": {"memory": "512Mi"}}},
        ],
        overhead={"cpu": "10m", "memory": "1Mi"},
    )
    # cpu: max(100+200, 500) + 10; memory: max(1Gi (limit as request), 512Mi) + 1Mi
    assert cpu_memory(pod_requests(p)) == (510, GI + 1024**2)


def test_a_sidecar_counts_with_the_containers_and_under_later_init_containers() -> None:
    p = pod(
        "p",
        cpu="100m",
        init=[
            {
                "name": "side",
                "image": "x",
                "restartPolicy": "Always",
                "resources": {"requests": {"cpu": "300m"}},
            },
            {"name": "after", "image": "x", "resources": {"requests": {"cpu": "600m"}}},
        ],
    )
    # containers + sidecar = 400m; the init after the sidecar runs beside it: 900m
    assert cpu_memory(pod_requests(p)) == (900, 0)


# -- resources -------------------------------------------------------------------------------


def test_a_pod_that_fits_is_admitted() -> None:
    assert handler().admit(pod("new", cpu="1", memory="1Gi"), [pod("old", cpu="1")]) is None


def test_out_of_cpu_names_requested_used_and_capacity_in_millicores() -> None:
    result = handler(cpu=2000).admit(pod("new", cpu="4"), [pod("old", cpu="100m")])
    assert result == AdmitResult(
        "OutOfcpu",
        "Node didn't have enough resource: cpu, requested: 4000, used: 100, capacity: 2000",
    )


def test_out_of_memory_in_bytes() -> None:
    result = handler(memory=GI).admit(pod("new", memory="600Mi"), [pod("old", memory="512Mi")])
    assert result == AdmitResult(
        "OutOfmemory",
        f"Node didn't have enough resource: memory, requested: {600 * 1024**2}, "
        f"used: {512 * 1024**2}, capacity: {GI}",
    )


def test_an_init_container_alone_can_exceed_allocatable() -> None:
    p = pod(
        "new", cpu="100m", init=[{"name": "i", "image": "x", "resources": {"limits": {"cpu": "3"}}}]
    )
    result = handler(cpu=2000).admit(p, [])
    assert result is not None and result.reason == "OutOfcpu"
    assert "requested: 3000, used: 0" in result.message


def test_exactly_full_still_fits() -> None:
    assert handler(cpu=2000).admit(pod("new", cpu="1500m"), [pod("old", cpu="500m")]) is None


def test_out_of_pods_comes_first_and_counts_pods_without_requests() -> None:
    result = handler(pods=2).admit(pod("new", cpu="9"), [pod("a"), pod("b")])
    assert result == AdmitResult(
        "OutOfpods", "Node didn't have enough resource: pods, requested: 1, used: 2, capacity: 2"
    )


def test_inactive_pods_do_not_count() -> None:
    node = FixedNodeResources(2000, GI, 1)
    done = pod("done", cpu="2")
    h = PredicateAdmitHandler(node, node_name=NODE, active=lambda p: p.name != "done")
    assert h.admit(pod("new", cpu="2"), [done]) is None


def test_a_pod_with_no_requests_fits_a_full_node() -> None:
    assert handler(cpu=1000).admit(pod("new"), [pod("old", cpu="1")]) is None


# -- node selector and affinity --------------------------------------------------------------

LABELS = {
    "kubernetes.io/hostname": NODE,
    "disk": "ssd",
    "zone": "a",
    "cores": "8",
    "odd": "x8",
}


def affinity(*terms: dict[str, Any]) -> dict[str, Any]:
    return {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
            }
        }
    }


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    out: dict[str, Any] = {"key": key, "operator": op}
    if values:
        out["values"] = list(values)
    return out


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        ({}, True),
        ({"nodeSelector": {"disk": "ssd"}}, True),
        ({"nodeSelector": {"disk": "ssd", "zone": "b"}}, False),
        ({"nodeSelector": {"gpu": "yes"}}, False),
        (affinity({"matchExpressions": [expr("disk", "In", "hdd", "ssd")]}), True),
        (affinity({"matchExpressions": [expr("disk", "In", "hdd")]}), False),
        (affinity({"matchExpressions": [expr("disk", "NotIn", "hdd")]}), True),
        (affinity({"matchExpressions": [expr("disk", "NotIn", "ssd")]}), False),
        (affinity({"matchExpressions": [expr("gpu", "NotIn", "yes")]}), True),  # absent
        (affinity({"matchExpressions": [expr("zone", "Exists")]}), True),
        (affinity({"matchExpressions": [expr("gpu", "Exists")]}), False),
        (affinity({"matchExpressions": [expr("gpu", "DoesNotExist")]}), True),
        (affinity({"matchExpressions": [expr("zone", "DoesNotExist")]}), False),
        (affinity({"matchExpressions": [expr("cores", "Gt", "4")]}), True),
        (affinity({"matchExpressions": [expr("cores", "Gt", "8")]}), False),
        (affinity({"matchExpressions": [expr("cores", "Lt", "16")]}), True),
        (affinity({"matchExpressions": [expr("cores", "Lt", "8")]}), False),
        (affinity({"matchExpressions": [expr("odd", "Gt", "1")]}), False),  # not an integer
        (affinity({"matchExpressions": [expr("gpu", "Lt", "1")]}), False),  # absent
        (affinity({"matchExpressions": [expr("cores", "Gt", "x")]}), False),  # bad bound
        (affinity({"matchExpressions": [expr("disk", "In")]}), False),  # In without values
        (affinity({"matchExpressions": [expr("disk", "Exists", "ssd")]}), False),
        (affinity({"matchExpressions": [expr("disk", "Like", "ssd")]}), False),
        # expressions of a term are ANDed, terms are ORed, an empty term selects nothing
        (
            affinity({"matchExpressions": [expr("disk", "In", "ssd"), expr("zone", "In", "b")]}),
            False,
        ),
        (
            affinity(
                {"matchExpressions": [expr("zone", "In", "b")]},
                {"matchExpressions": [expr("zone", "In", "a")]},
            ),
            True,
        ),
        (affinity({}), False),
        (affinity({}, {"matchExpressions": [expr("disk", "Exists")]}), True),
        (affinity({"matchFields": [expr("metadata.name", "In", NODE)]}), True),
        (affinity({"matchFields": [expr("metadata.name", "In", "other")]}), False),
        (affinity({"matchFields": [expr("metadata.name", "NotIn", "other")]}), True),
        # the selector and the affinity must both match
        (
            {
                "nodeSelector": {"disk": "hdd"},
                **affinity({"matchExpressions": [expr("disk", "Exists")]}),
            },
            False,
        ),
    ],
)
def test_node_affinity(spec: dict[str, Any], fits: bool) -> None:
    result = handler(labels=LABELS).admit(pod("p", spec=spec), [])
    if fits:
        assert result is None
    else:
        assert result == AdmitResult("NodeAffinity", "Predicate NodeAffinity failed")


def test_resources_are_checked_before_affinity() -> None:
    p = pod("p", cpu="9", spec={"nodeSelector": {"gpu": "yes"}})
    result = handler(labels=LABELS).admit(p, [])
    assert result is not None and result.reason == "OutOfcpu"


def test_a_pod_bound_to_another_node() -> None:
    assert handler().admit(pod("p", spec={"nodeName": "elsewhere"}), []) == AdmitResult(
        "NodeName", "Predicate NodeName failed"
    )


def test_a_host_port_taken_by_an_admitted_pod() -> None:
    def with_port(name: str, port: int, ip: str = "") -> Pod:
        ports = [{"containerPort": 80, "hostPort": port, **({"hostIP": ip} if ip else {})}]
        return pod(name, containers=[{"name": "c", "image": "x", "ports": ports}])

    h = handler()
    assert h.admit(with_port("new", 8080), [with_port("old", 8080)]) == AdmitResult(
        "NodePorts", "Predicate NodePorts failed"
    )
    assert h.admit(with_port("new", 8081), [with_port("old", 8080)]) is None
    assert (
        h.admit(with_port("new", 8080, "127.0.0.1"), [with_port("old", 8080, "127.0.0.2")]) is None
    )


# -- a refusal's status ----------------------------------------------------------------------


def test_a_refused_pod_is_failed_with_the_reason_and_message() -> None:
    statuses = StatusManager()
    p = pod("p", cpu="4")
    reject_into(statuses, ManualClock(1_700_000_000.0))(
        p, AdmitResult("OutOfcpu", "Node didn't have enough resource: cpu, ...")
    )
    status = statuses.get(p.uid)
    assert status == {
        "phase": "Failed",
        "reason": "OutOfcpu",
        "message": "Pod was rejected: Node didn't have enough resource: cpu, ...",
        "qosClass": "Burstable",
        "startTime": "2023-11-14T22:13:20Z",
    }


def test_a_node_not_known_yet_refuses_with_invalid_node_info() -> None:
    h = PredicateAdmitHandler(None, node_name=NODE)
    assert h.admit(pod("p"), []) == AdmitResult("InvalidNodeInfo", "Kubelet cannot get node info.")
    h.node = FixedNodeResources(1000, GI, 10)
    assert h.admit(pod("p"), []) is None
