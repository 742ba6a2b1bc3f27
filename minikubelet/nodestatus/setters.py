"""The Node's fields, filled by pure setters as the kubelet's ``pkg/kubelet/nodestatus``.

Each setter takes the Node (a dict in the API's JSON shape) and the facts it needs,
and sets its part in place: no I/O, no clock of its own (``now`` is given), so each
is table-tested. :func:`initial_node` is what the kubelet registers
(``initialNode``); :func:`set_node_status` runs every status setter in the kubelet's
order (``defaultNodeStatusFuncs``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from minikubelet.api.validation import is_label_value, is_qualified_name
from minikubelet.clock import rfc3339
from minikubelet.nodestatus.facts import HostFacts, Pressure, RuntimeFacts, aggregate

#: What the node says it is (kubectl get nodes: VERSION); the control plane it joins is 1.24.
KUBELET_VERSION = "v1.24.1"

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_OS_BETA = "beta.kubernetes.io/os"
LABEL_ARCH_BETA = "beta.kubernetes.io/arch"
#: The labels the kubelet owns and keeps right on an existing Node (``updateDefaultLabels``).
DEFAULT_LABELS = (LABEL_HOSTNAME, LABEL_OS, LABEL_ARCH, LABEL_OS_BETA, LABEL_ARCH_BETA)

#: The kubelet tells the attach/detach controller it may manage this node's volumes.
ANNOTATION_CONTROLLER_MANAGED_ATTACH = "volumes.kubernetes.io/controller-managed-attach-detach"

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

# Condition types, reasons and messages as the kubelet's setters word them.
READY = "Ready"
MEMORY_PRESSURE = "MemoryPressure"
DISK_PRESSURE = "DiskPressure"
PID_PRESSURE = "PIDPressure"
READY_MESSAGE = "kubelet is posting ready status"
_PRESSURE: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    # type: ((reason, message) when False, (reason, message) when True)
    MEMORY_PRESSURE: (
        ("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("KubeletHasInsufficientMemory", "kubelet has insufficient memory available"),
    ),
    DISK_PRESSURE: (
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("KubeletHasDiskPressure", "kubelet has disk pressure"),
    ),
    PID_PRESSURE: (
        ("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("KubeletHasInsufficientPID", "kubelet has insufficient PID available"),
    ),
}

Node = dict[str, Any]


# -- quantities ------------------------------------------------------------------------------


def format_cpu(millis: int) -> str:
    """Millicores as the API's canonical quantity: ``4``, ``1500m``."""
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def format_bytes(value: int) -> str:
    """Bytes as a binary-SI quantity in canonical form: ``16318384Ki``, ``2Gi``, ``1000``."""
    if -1024 < value < 1024:
        return str(value)
    suffixes = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
    index = 0
    while index + 1 < len(suffixes) and value % 1024 == 0:
        value //= 1024
        index += 1
    return f"{value}{suffixes[index]}"


# -- parsing the flags -----------------------------------------------------------------------


def parse_taint(spec: str) -> dict[str, str]:
    """``key[=value]:Effect`` as a v1 Taint (``--register-with-taints``), checked as
    Kubernetes' ``ParseTaint`` checks it."""
    head, sep, effect = spec.rpartition(":")
    if not sep:
        raise ValueError(f"invalid taint spec: {spec}")
    if effect not in TAINT_EFFECTS:
        raise ValueError(f"invalid taint effect: {effect}, unsupported taint effect")
    key, has_value, value = head.partition("=")
    errors = is_qualified_name(key)
    if errors:
        raise ValueError(f"invalid taint key: {key!r}: {'; '.join(errors)}")
    if has_value:
        errors = is_label_value(value)
        if errors:
            raise ValueError(f"invalid taint value: {value!r}: {'; '.join(errors)}")
    taint = {"key": key, "effect": effect}
    if value:
        taint["value"] = value
    return taint


def parse_taints(specs: Sequence[str]) -> list[dict[str, str]]:
    """Each of ``specs`` as a taint; a key repeated with the same effect is refused."""
    taints: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for spec in specs:
        taint = parse_taint(spec)
        ident = (taint["key"], taint["effect"])
        if ident in seen:
            raise ValueError(f"duplicated taints with the same key and effect: {taint}")
        seen.add(ident)
        taints.append(taint)
    return taints


# -- registration ----------------------------------------------------------------------------


def default_labels(hostname: str, host: HostFacts) -> dict[str, str]:
    """The labels the kubelet sets on its Node (1.24 still sets the beta OS/arch ones)."""
    return {
        LABEL_HOSTNAME: hostname,
        LABEL_OS: host.operating_system,
        LABEL_ARCH: host.architecture,
        LABEL_OS_BETA: host.operating_system,
        LABEL_ARCH_BETA: host.architecture,
    }


def initial_node(
    node_name: str,
    host: HostFacts,
    *,
    node_labels: Mapping[str, str] | None = None,
    taints: Sequence[str] = (),
) -> Node:
    """The Node the kubelet registers, before its status: name, labels, taints."""
    labels = dict(node_labels or {})
    labels.update(default_labels(node_name, host))  # the kubelet's own win
    node: Node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name,
            "labels": labels,
            "annotations": {ANNOTATION_CONTROLLER_MANAGED_ATTACH: "true"},
        },
        "spec": {},
        "status": {},
    }
    parsed = parse_taints(taints)
    if parsed:
        node["spec"]["taints"] = parsed
    return node


def reconcile_default_labels(initial: Node, existing: Node) -> dict[str, str | None]:
    """The label changes that bring an existing Node's default labels to ``initial``'s
    (``updateDefaultLabels``): a merge-patch map, ``None`` deleting an empty label."""
    want = initial["metadata"].get("labels") or {}
    have = existing.get("metadata", {}).get("labels") or {}
    changes: dict[str, str | None] = {}
    for key in DEFAULT_LABELS:
        if key not in want:
            continue
        if have.get(key) != want[key]:
            changes[key] = want[key]
        if not want[key] and key in have:
            changes[key] = None
    return changes


# -- status setters --------------------------------------------------------------------------


def _status(node: Node) -> dict[str, Any]:
    status: dict[str, Any] = node.setdefault("status", {})
    return status


def set_addresses(node: Node, node_ip: str, hostname: str) -> None:
    """``InternalIP`` then ``Hostname`` (``NodeAddress`` with --node-ip set)."""
    addresses = []
    if node_ip:
        addresses.append({"type": "InternalIP", "address": node_ip})
    addresses.append({"type": "Hostname", "address": hostname})
    _status(node)["addresses"] = addresses


def set_machine_info(node: Node, host: HostFacts, max_pods: int) -> None:
    """``capacity`` and ``allocatable`` (``MachineInfo``): cpu and memory from the host,
    pods from --max-pods, ephemeral-storage from the root dir's filesystem. Nothing is
    reserved for the system, so allocatable is capacity."""
    capacity = {
        "cpu": format_cpu(host.cpu_millis),
        "memory": format_bytes(host.memory_bytes),
        "pods": str(max_pods),
    }
    if host.ephemeral_storage_bytes > 0:
        capacity["ephemeral-storage"] = format_bytes(host.ephemeral_storage_bytes)
    status = _status(node)
    status["capacity"] = dict(capacity)
    status["allocatable"] = dict(capacity)


def set_version_info(node: Node, host: HostFacts, runtime: RuntimeFacts) -> None:
    """``nodeInfo`` (``VersionInfo``, ``MachineInfo``'s ids, ``GoRuntime``'s os/arch)."""
    _status(node)["nodeInfo"] = {
        "machineID": host.machine_id,
        "systemUUID": host.system_uuid,
        "bootID": host.boot_id,
        "kernelVersion": host.kernel_version,
        "osImage": host.os_image,
        "containerRuntimeVersion": runtime.container_runtime_version,
        "kubeletVersion": KUBELET_VERSION,
        "kubeProxyVersion": KUBELET_VERSION,
        "operatingSystem": host.operating_system,
        "architecture": host.architecture,
    }


def set_daemon_endpoints(node: Node, kubelet_port: int) -> None:
    """``daemonEndpoints.kubeletEndpoint`` (the API's field is ``Port``, capitalised)."""
    _status(node)["daemonEndpoints"] = {"kubeletEndpoint": {"Port": kubelet_port}}


def _set_condition(
    node: Node, type_: str, status: str, reason: str, message: str, now: float
) -> None:
    """Put a condition in the node's list (appended when new): the heartbeat is ``now``;
    the transition time is ``now`` when the status changed, else kept."""
    conditions: list[dict[str, Any]] = _status(node).setdefault("conditions", [])
    stamp = rfc3339(now)
    for condition in conditions:
        if condition.get("type") == type_:
            if condition.get("status") != status or not condition.get("lastTransitionTime"):
                condition["lastTransitionTime"] = stamp
            condition.update(status=status, reason=reason, message=message, lastHeartbeatTime=stamp)
            return
    conditions.append(
        {
            "type": type_,
            "status": status,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }
    )


def set_pressure_conditions(node: Node, pressure: Pressure, now: float) -> None:
    """``MemoryPressure``, ``DiskPressure`` and ``PIDPressure``, in the kubelet's order."""
    for type_, under in (
        (MEMORY_PRESSURE, pressure.memory),
        (DISK_PRESSURE, pressure.disk),
        (PID_PRESSURE, pressure.pid),
    ):
        reason, message = _PRESSURE[type_][1 if under else 0]
        _set_condition(node, type_, "True" if under else "False", reason, message, now)


def set_ready_condition(node: Node, runtime: RuntimeFacts, now: float) -> None:
    """``Ready`` (``ReadyCondition``): ``KubeletReady`` unless the runtime or its network
    is not ready or a required capacity is missing; then ``KubeletNotReady`` with why."""
    errors = list(runtime.errors)
    capacity = _status(node).get("capacity") or {}
    missing = [name for name in ("cpu", "memory", "pods") if name not in capacity]
    if missing:
        errors.append(f"missing node capacity for resources: {', '.join(missing)}")
    message = aggregate(errors)
    if message is None:
        _set_condition(node, READY, "True", "KubeletReady", READY_MESSAGE, now)
    else:
        _set_condition(node, READY, "False", "KubeletNotReady", message, now)


def set_node_status(
    node: Node,
    *,
    host: HostFacts,
    runtime: RuntimeFacts,
    node_ip: str,
    hostname: str,
    max_pods: int,
    kubelet_port: int,
    now: float,
    pressure: Pressure | None = None,
) -> Node:
    """Every status setter, in the kubelet's order; returns ``node``."""
    set_addresses(node, node_ip, hostname)
    set_machine_info(node, host, max_pods)
    set_version_info(node, host, runtime)
    set_daemon_endpoints(node, kubelet_port)
    set_pressure_conditions(node, pressure or Pressure(), now)
    set_ready_condition(node, runtime, now)
    return node


def condition(node: Mapping[str, Any], type_: str) -> dict[str, Any] | None:
    """The node's condition of ``type_``, if it has one."""
    for cond in (node.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def without_heartbeats(status: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` with the conditions' heartbeat times left out (what "changed" compares,
    as the kubelet's ``nodeStatusHasChanged``)."""
    out = dict(status)
    if "conditions" in out:
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastHeartbeatTime"} for c in out["conditions"]
        ]
    return out
