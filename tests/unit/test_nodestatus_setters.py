"""The Node's setters and the facts they are made from (minikubelet.nodestatus)."""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import pytest

from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.nodestatus import facts, setters
from minikubelet.nodestatus.facts import HostFacts, Pressure, RuntimeFacts
from minikubelet.nodestatus.manager import RuntimeState

HOST = HostFacts(
    cpu_millis=4000,
    memory_bytes=16 * 1024**3,
    ephemeral_storage_bytes=100 * 1024**3,
    machine_id="m" * 32,
    system_uuid="u-u-i-d",
    boot_id="b-o-o-t",
    kernel_version="6.1.0-13-amd64",
    os_image="Debian GNU/Linux 12 (bookworm)",
    architecture="amd64",
)
READY_RUNTIME = RuntimeFacts("containerd", "1.6.20")
T0 = 1_700_000_000.0


# -- labels and taints -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node_labels", "expected_extra"),
    [
        ({}, {}),
        ({"disk": "ssd", "zone": ""}, {"disk": "ssd", "zone": ""}),
        # the kubelet's own labels win over --node-labels
        ({"kubernetes.io/os": "windows"}, {}),
    ],
)
def test_initial_node_labels(node_labels: dict[str, str], expected_extra: dict[str, str]) -> None:
    node = setters.initial_node("node-1", HOST, node_labels=node_labels)
    assert node["metadata"]["labels"] == {
        "kubernetes.io/hostname": "node-1",
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
        **expected_extra,
    }
    assert node["metadata"]["annotations"] == {
        "volumes.kubernetes.io/controller-managed-attach-detach": "true"
    }
    assert "taints" not in node["spec"]


@pytest.mark.parametrize(
    ("spec", "taint"),
    [
        ("dedicated=gpu:NoSchedule", {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}),
        ("example.com/special:NoExecute", {"key": "example.com/special", "effect": "NoExecute"}),
        ("k=:PreferNoSchedule", {"key": "k", "effect": "PreferNoSchedule"}),
    ],
)
def test_parse_taint(spec: str, taint: dict[str, str]) -> None:
    assert setters.parse_taint(spec) == taint


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ("dedicated=gpu", "invalid taint spec"),
        ("dedicated=gpu:Sometimes", "invalid taint effect: Sometimes"),
        ("bad key!:NoSchedule", "invalid taint key"),
        ("k=bad value:NoSchedule", "invalid taint value"),
    ],
)
def test_parse_taint_refuses(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        setters.parse_taint(spec)


def test_taints_registered_and_duplicates_refused() -> None:
    node = setters.initial_node("n", HOST, taints=["a=1:NoSchedule", "b:NoExecute"])
    assert node["spec"]["taints"] == [
        {"key": "a", "value": "1", "effect": "NoSchedule"},
        {"key": "b", "effect": "NoExecute"},
    ]
    with pytest.raises(ValueError, match="duplicated taints"):
        setters.parse_taints(["a=1:NoSchedule", "a=2:NoSchedule"])


def test_reconcile_default_labels_only_touches_the_kubelets_own() -> None:
    initial = setters.initial_node("n", HOST, node_labels={"mine": "x"})
    existing = {
        "metadata": {
            "labels": {
                "kubernetes.io/hostname": "n",
                "kubernetes.io/arch": "arm64",  # wrong: put right
                "mine": "changed-by-admin",  # not the kubelet's to reconcile
                "other": "kept",
            }
        }
    }
    assert setters.reconcile_default_labels(initial, existing) == {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    }


# -- quantities, capacity, addresses, nodeInfo -----------------------------------------------


@pytest.mark.parametrize(
    ("millis", "text"), [(4000, "4"), (1500, "1500m"), (250, "250m"), (0, "0")]
)
def test_format_cpu(millis: int, text: str) -> None:
    assert setters.format_cpu(millis) == text


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0"),
        (1000, "1000"),
        (2 * 1024**3, "2Gi"),
        (24683772 * 1024, "24683772Ki"),
        (1536 * 1024**2, "1536Mi"),
        (1025, "1025"),
    ],
)
def test_format_bytes(value: int, text: str) -> None:
    assert setters.format_bytes(value) == text


def test_status_fields() -> None:
    node: dict[str, object] = {}
    setters.set_node_status(
        node,
        host=HOST,
        runtime=READY_RUNTIME,
        node_ip="10.1.2.3",
        hostname="node-1",
        max_pods=42,
        kubelet_port=10250,
        now=T0,
    )
    status = node["status"]
    assert isinstance(status, dict)
    assert status["addresses"] == [
        {"type": "InternalIP", "address": "10.1.2.3"},
        {"type": "Hostname", "address": "node-1"},
    ]
    capacity = {"cpu": "4", "memory": "16Gi", "pods": "42", "ephemeral-storage": "100Gi"}
    assert status["capacity"] == capacity
    assert status["allocatable"] == capacity
    assert status["nodeInfo"] == {
        "machineID": "m" * 32,
        "systemUUID": "u-u-i-d",
        "bootID": "b-o-o-t",
        "kernelVersion": "6.1.0-13-amd64",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "containerRuntimeVersion": "containerd://1.6.20",
        "kubeletVersion": setters.KUBELET_VERSION,
        "kubeProxyVersion": setters.KUBELET_VERSION,
        "operatingSystem": "linux",
        "architecture": "amd64",
    }
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert [c["type"] for c in status["conditions"]] == [
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "Ready",
    ]


# -- conditions ------------------------------------------------------------------------------


def _status(*conditions: tuple[str, bool, str, str]) -> pb.StatusResponse:
    return pb.StatusResponse(
        status=pb.RuntimeStatus(
            conditions=[
                pb.RuntimeCondition(type=t, status=s, reason=r, message=m)
                for t, s, r, m in conditions
            ]
        )
    )


RUNTIME_OK = ("RuntimeReady", True, "", "")
NETWORK_OK = ("NetworkReady", True, "", "")
NETWORK_DOWN = (
    "NetworkReady",
    False,
    "NetworkPluginNotReady",
    "Network plugin returns error: cni plugin not initialized",
)
RUNTIME_DOWN = ("RuntimeReady", False, "ShimDown", "the shim is gone")


@pytest.mark.parametrize(
    ("responses", "ready", "message"),
    [
        ([_status(RUNTIME_OK, NETWORK_OK)], "True", "kubelet is posting ready status"),
        (
            [_status(RUNTIME_OK, NETWORK_DOWN)],
            "False",
            "container runtime network not ready: NetworkReady=false "
            "reason:NetworkPluginNotReady message:Network plugin returns error: "
            "cni plugin not initialized",
        ),
        (
            [_status(RUNTIME_DOWN, NETWORK_DOWN)],
            "False",
            "[container runtime status check may not have completed yet, "
            "container runtime not ready: RuntimeReady=false reason:ShimDown "
            "message:the shim is gone, container runtime network not ready: "
            "NetworkReady=false reason:NetworkPluginNotReady message:Network plugin "
            "returns error: cni plugin not initialized]",
        ),
        (
            [_status(RUNTIME_OK)],
            "False",
            "container runtime network not ready: <nil>",
        ),
        (
            [_status(RUNTIME_OK, NETWORK_OK), _status(RUNTIME_OK, NETWORK_DOWN)],
            "False",
            "container runtime network not ready: NetworkReady=false "
            "reason:NetworkPluginNotReady message:Network plugin returns error: "
            "cni plugin not initialized",
        ),
    ],
)
def test_ready_condition_from_cri_status(
    responses: list[pb.StatusResponse], ready: str, message: str
) -> None:
    state = RuntimeState()
    state.update([(f"unix:///r{i}", r) for i, r in enumerate(responses)], T0)
    runtime = RuntimeFacts("fake", "0.1", errors=tuple(state.errors(T0)))
    node: dict[str, object] = {"status": {"capacity": {"cpu": "1", "memory": "1", "pods": "1"}}}
    setters.set_ready_condition(node, runtime, T0)
    cond = setters.condition(node, "Ready")
    assert cond is not None
    assert (cond["status"], cond["message"]) == (ready, message)
    assert cond["reason"] == ("KubeletReady" if ready == "True" else "KubeletNotReady")


def test_runtime_down_after_threshold_of_failed_status() -> None:
    state = RuntimeState(threshold=30)
    state.update([("r", _status(RUNTIME_OK, NETWORK_OK))], T0)
    failure = RuntimeError("deadline exceeded")
    state.update([("r", failure)], T0 + 10)
    assert state.errors(T0 + 10) == []  # a failed Status alone is not yet an outage
    state.update([("r", failure)], T0 + 30)
    assert state.errors(T0 + 30) == ["container runtime is down"]


def test_missing_capacity_makes_not_ready() -> None:
    node: dict[str, object] = {"status": {"capacity": {"cpu": "1"}}}
    setters.set_ready_condition(node, READY_RUNTIME, T0)
    cond = setters.condition(node, "Ready")
    assert cond is not None
    assert cond["message"] == "missing node capacity for resources: memory, pods"


@pytest.mark.parametrize(
    ("pressure", "expected"),
    [
        (
            Pressure(),
            [
                (
                    "MemoryPressure",
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                (
                    "DiskPressure",
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                (
                    "PIDPressure",
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
            ],
        ),
        (
            Pressure(memory=True, disk=True, pid=True),
            [
                (
                    "MemoryPressure",
                    "True",
                    "KubeletHasInsufficientMemory",
                    "kubelet has insufficient memory available",
                ),
                ("DiskPressure", "True", "KubeletHasDiskPressure", "kubelet has disk pressure"),
                (
                    "PIDPressure",
                    "True",
                    "KubeletHasInsufficientPID",
                    "kubelet has insufficient PID available",
                ),
            ],
        ),
    ],
)
def test_pressure_conditions(pressure: Pressure, expected: list[tuple[str, str, str, str]]) -> None:
    node: dict[str, object] = {}
    setters.set_pressure_conditions(node, pressure, T0)
    status = node["status"]
    assert isinstance(status, dict)
    assert [
        (c["type"], c["status"], c["reason"], c["message"]) for c in status["conditions"]
    ] == expected


def test_transition_time_kept_while_status_holds() -> None:
    node: dict[str, object] = {"status": {"capacity": {"cpu": "1", "memory": "1", "pods": "1"}}}
    not_ready = RuntimeFacts("fake", "0.1", errors=("container runtime is down",))
    setters.set_ready_condition(node, not_ready, T0)
    setters.set_ready_condition(node, not_ready, T0 + 10)
    cond = setters.condition(node, "Ready")
    assert cond is not None
    assert cond["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    assert cond["lastHeartbeatTime"] == "2023-11-14T22:13:30Z"
    # Another reason, same status: still no transition.
    other = RuntimeFacts("fake", "0.1", errors=("something else",))
    setters.set_ready_condition(node, other, T0 + 20)
    cond = setters.condition(node, "Ready")
    assert cond is not None
    assert cond["lastTransitionTime"] == "2023-11-14T22:13:20Z"
    assert cond["message"] == "something else"
    setters.set_ready_condition(node, READY_RUNTIME, T0 + 30)
    cond = setters.condition(node, "Ready")
    assert cond is not None
    assert (cond["status"], cond["lastTransitionTime"]) == ("True", "2023-11-14T22:13:50Z")


def test_without_heartbeats() -> None:
    a: dict[str, object] = {}
    b: dict[str, object] = {}
    setters.set_pressure_conditions(a, Pressure(), T0)
    setters.set_pressure_conditions(b, Pressure(), T0)
    setters.set_pressure_conditions(b, Pressure(), T0 + 60)
    assert a != b
    assert setters.without_heartbeats(a["status"]) == setters.without_heartbeats(b["status"])  # type: ignore[arg-type]


# -- the host, from a tree of files ----------------------------------------------------------

Uname = namedtuple("Uname", "system release machine")


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


BASE = {
    "proc/meminfo": "MemTotal:       24683772 kB\nMemFree:  1 kB\n",
    "etc/machine-id": "3d1219c7c4c5404aaa1f6d2a48adfda4\n",
    "proc/sys/kernel/random/boot_id": "a401aeed-a00e-46d6-8698-e04d3ccc2dd9\n",
    "etc/os-release": 'NAME="Debian"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
}
V1_UNLIMITED = {
    "proc/self/cgroup": "4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/\n",
    "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
    "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": "9223372036854771712\n",
    "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "-1\n",
    "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n",
}


@pytest.mark.parametrize(
    ("files", "cpu_millis", "memory"),
    [
        (V1_UNLIMITED, 8000, 24683772 * 1024),
        (
            {
                **V1_UNLIMITED,
                # a limit on an ancestor binds too; the tightest wins
                "sys/fs/cgroup/memory/process_api/memory.limit_in_bytes": str(2 * 1024**3),
                "sys/fs/cgroup/memory/process_api/abc/memory.limit_in_bytes": str(3 * 1024**3),
                "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "150000\n",
            },
            1500,
            2 * 1024**3,
        ),
        (
            {
                "proc/self/cgroup": "0::/kubepods/pod1\n",
                "sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
                "sys/fs/cgroup/kubepods/pod1/memory.max": str(512 * 1024**2),
                "sys/fs/cgroup/kubepods/pod1/cpu.max": "200000 100000\n",
                "sys/fs/cgroup/kubepods/memory.max": "max\n",
            },
            2000,
            512 * 1024**2,
        ),
        ({}, 8000, 24683772 * 1024),  # no cgroups mounted at all
    ],
)
def test_host_facts_from_a_tree(
    tmp_path: Path, files: dict[str, str], cpu_millis: int, memory: int
) -> None:
    root = _tree(tmp_path / "host", {**BASE, **files})
    got = facts.gather_host_facts(
        tmp_path,
        host_root=root,
        cpu_count=lambda: 8,
        uname=lambda: Uname("Linux", "6.1.0-13-amd64", "x86_64"),
    )
    st = os.statvfs(tmp_path)
    assert got == HostFacts(
        cpu_millis=cpu_millis,
        memory_bytes=memory,
        ephemeral_storage_bytes=st.f_blocks * st.f_frsize,
        machine_id="3d1219c7c4c5404aaa1f6d2a48adfda4",
        system_uuid="3d1219c7c4c5404aaa1f6d2a48adfda4",  # no DMI: the machine id
        boot_id="a401aeed-a00e-46d6-8698-e04d3ccc2dd9",
        kernel_version="6.1.0-13-amd64",
        os_image="Debian GNU/Linux 12 (bookworm)",
        architecture="amd64",
        operating_system="linux",
    )


def test_system_uuid_from_dmi_and_os_image_default(tmp_path: Path) -> None:
    root = _tree(
        tmp_path / "host",
        {
            "sys/class/dmi/id/product_uuid": "EC2A1B2C-0000-1111-2222-333344445555\n",
            "etc/machine-id": "abc\n",
        },
    )
    got = facts.gather_host_facts(
        tmp_path,
        host_root=root,
        cpu_count=lambda: 1,
        uname=lambda: Uname("Linux", "5.10", "aarch64"),
    )
    assert got.system_uuid == "EC2A1B2C-0000-1111-2222-333344445555"
    assert got.os_image == "Linux"
    assert got.architecture == "arm64"


def test_this_host_can_be_read(tmp_path: Path) -> None:
    got = facts.gather_host_facts(tmp_path)
    assert got.cpu_millis > 0 and got.memory_bytes > 0 and got.ephemeral_storage_bytes > 0
    assert got.architecture in ("amd64", "arm64")
