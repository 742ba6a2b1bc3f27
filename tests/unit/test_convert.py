"""Pod -> CRI sandbox and container configs (pure, table-driven)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kuberuntime import labels as lbl
from minikubelet.kuberuntime.convert import (
    DEFAULT_MASKED_PATHS,
    DEFAULT_READONLY_PATHS,
    DNSSettings,
    calculate_linux_resources,
    container_config,
    container_log_dir,
    milli_cpu_to_quota,
    milli_cpu_to_shares,
    parse_resolv_conf,
    pod_dns_config,
    pod_log_dir,
    sandbox_config,
)
from minikubelet.kuberuntime.envvars import ConfigError
from minikubelet.kuberuntime.hash import hash_container
from minikubelet.resources import parse_quantity

UID = "0b5c3d6e-1111-2222-3333-444455556666"
HOST_DNS = DNSSettings(
    host_servers=("192.168.1.1",), host_searches=("lan",), host_options=("edns0",)
)
CLUSTER_DNS = DNSSettings(
    cluster_dns=("10.96.0.10",),
    cluster_domain="cluster.local",
    host_servers=("192.168.1.1",),
    host_searches=("lan",),
)


def base() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": UID,
            "labels": {"app": "web"},
            "annotations": {"note": "hi"},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "ports": [
                        {"containerPort": 80, "hostPort": 8080},
                        {
                            "containerPort": 53,
                            "protocol": "UDP",
                            "hostPort": 5353,
                            "hostIP": "127.0.0.1",
                        },
                        {"containerPort": 9090, "name": "metrics"},
                        {"containerPort": 9091, "name": "metrics"},  # same name: dropped
                    ],
                },
                {
                    "name": "side",
                    "image": "busybox",
                    "ports": [{"containerPort": 81, "protocol": "SCTP"}],
                },
            ]
        },
    }


def read(body: dict[str, Any]) -> Pod:
    """Read without validating: conversion copes with any pod, and some fixtures here are
    invalid on purpose (a repeated port name, bad hostnames, an unreadable quantity)."""
    return Pod.from_dict(body, validate=False)


def make(**spec: Any) -> Pod:
    body = base()
    body["spec"].update(spec)
    return read(body)


# --- sandbox -------------------------------------------------------------------------------


def test_sandbox_normal_pod() -> None:
    pod = make()
    config = sandbox_config(pod, 2, dns=HOST_DNS, cgroup_parent="/kubepods/pod" + UID)
    assert config.metadata == pb.PodSandboxMetadata(
        name="web", uid=UID, namespace="shop", attempt=2
    )
    assert config.hostname == "web"
    assert config.log_directory == f"/var/log/pods/shop_web_{UID}"
    assert dict(config.labels) == lbl.new_pod_labels(pod)
    assert dict(config.annotations) == {"note": "hi"}
    assert config.linux.cgroup_parent == "/kubepods/pod" + UID
    ns = config.linux.security_context.namespace_options
    assert (ns.network, ns.pid, ns.ipc) == (pb.POD, pb.CONTAINER, pb.POD)
    assert config.linux.security_context.seccomp.profile_type == pb.SecurityProfile.RuntimeDefault
    assert not config.linux.security_context.privileged
    # ClusterFirst (the default) without a cluster DNS server falls back to the host's.
    assert list(config.dns_config.servers) == ["192.168.1.1"]
    assert list(config.dns_config.searches) == ["lan"]
    assert list(config.dns_config.options) == ["edns0"]


def test_sandbox_port_mappings() -> None:
    config = sandbox_config(make(), 0)
    assert [
        (m.protocol, m.container_port, m.host_port, m.host_ip) for m in config.port_mappings
    ] == [
        (pb.TCP, 80, 8080, ""),
        (pb.UDP, 53, 5353, "127.0.0.1"),
        (pb.TCP, 9090, 0, ""),
        (pb.SCTP, 81, 0, ""),
    ]


def test_sandbox_host_network_pod() -> None:
    pod = make(hostNetwork=True, hostPID=True, hostIPC=True)
    config = sandbox_config(pod, 0, dns=CLUSTER_DNS)
    assert config.hostname == ""  # the runtime keeps the node's
    ns = config.linux.security_context.namespace_options
    assert (ns.network, ns.pid, ns.ipc) == (pb.NODE, pb.NODE, pb.NODE)
    # ClusterFirst on the host network means the host's resolver
    assert list(config.dns_config.servers) == ["192.168.1.1"]


def test_sandbox_share_process_namespace_and_security() -> None:
    pod = make(
        shareProcessNamespace=True,
        securityContext={
            "runAsUser": 1000,
            "runAsGroup": 2000,
            "fsGroup": 3000,
            "supplementalGroups": [4000, 5000],
            "supplementalGroupsPolicy": "Strict",
            "sysctls": [{"name": "net.core.somaxconn", "value": "1024"}],
            "seLinuxOptions": {"level": "s0:c1"},
        },
    )
    sc = sandbox_config(pod, 0).linux.security_context
    assert sc.namespace_options.pid == pb.POD
    assert sc.run_as_user.value == 1000 and sc.HasField("run_as_user")
    assert sc.run_as_group.value == 2000
    assert list(sc.supplemental_groups) == [3000, 4000, 5000]
    assert sc.supplemental_groups_policy == pb.Strict
    assert sc.selinux_options.level == "s0:c1"
    assert dict(sandbox_config(pod, 0).linux.sysctls) == {"net.core.somaxconn": "1024"}


def test_sandbox_unset_run_as_user_is_not_sent() -> None:
    sc = sandbox_config(make(), 0).linux.security_context
    assert not sc.HasField("run_as_user") and not sc.HasField("run_as_group")


def test_sandbox_privileged_if_any_container_is() -> None:
    body = base()
    body["spec"]["initContainers"] = [
        {"name": "init", "image": "busybox", "securityContext": {"privileged": True}}
    ]
    assert sandbox_config(read(body), 0).linux.security_context.privileged


@pytest.mark.parametrize(
    ("spec", "hostname"),
    [
        ({}, "web"),
        ({"hostname": "db-0"}, "db-0"),
        ({"hostname": "db-0", "subdomain": "db"}, "db-0"),
        (
            {"hostname": "db-0", "subdomain": "db", "setHostnameAsFQDN": True},
            "db-0.db.shop.svc.cluster.local",
        ),
        ({"setHostnameAsFQDN": True}, "web"),  # no subdomain: no FQDN
    ],
)
def test_sandbox_hostname(spec: dict[str, Any], hostname: str) -> None:
    assert sandbox_config(make(**spec), 0, dns=CLUSTER_DNS).hostname == hostname


def test_long_pod_name_is_truncated() -> None:
    body = base()
    body["metadata"]["name"] = "a" * 62 + "-.bcd"
    assert sandbox_config(read(body), 0).hostname == "a" * 62


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"hostname": "Not_A_Label"}, "not a valid DNS label"),
        ({"subdomain": "bad.sub"}, "not a valid DNS label"),
        ({"hostname": "h" * 40, "subdomain": "s" * 10, "setHostnameAsFQDN": True}, "too long"),
    ],
)
def test_sandbox_hostname_errors(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        sandbox_config(make(**spec), 0, dns=CLUSTER_DNS)
    assert info.value.reason == "CreatePodSandboxError"


def test_sandbox_log_root() -> None:
    pod = make()
    assert sandbox_config(pod, 0, log_root="/tmp/logs").log_directory == f"/tmp/logs/shop_web_{UID}"
    assert pod_log_dir(pod) == f"/var/log/pods/shop_web_{UID}"
    assert container_log_dir(pod, pod.spec.containers[0]) == f"/var/log/pods/shop_web_{UID}/app"


def test_sandbox_resources_and_overhead() -> None:
    body = base()
    body["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "500m", "memory": "128Mi"}}
    body["spec"]["containers"][1]["resources"] = {"requests": {"cpu": "250m"}}
    body["spec"]["overhead"] = {"cpu": "100m", "memory": "10Mi"}
    linux = sandbox_config(read(body), 0).linux
    assert linux.resources.cpu_shares == 768  # (500m + 250m) * 1024 / 1000
    assert linux.resources.cpu_quota == 50000
    assert linux.resources.memory_limit_in_bytes == 128 * 1024 * 1024
    assert linux.overhead.cpu_shares == 102 and linux.overhead.cpu_quota == 10000
    assert linux.overhead.memory_limit_in_bytes == 10 * 1024 * 1024


# --- DNS -----------------------------------------------------------------------------------


def test_parse_resolv_conf() -> None:
    text = (
        "# c\nnameserver 1.1.1.1\nsearch a.example. b\n"
        "nameserver 8.8.8.8\nsearch c\noptions ndots:2 rotate\n"
    )
    assert parse_resolv_conf(text) == (["1.1.1.1", "8.8.8.8"], ["c"], ["ndots:2", "rotate"])


@pytest.mark.parametrize(
    ("spec", "dns", "servers", "searches", "options"),
    [
        (
            {},
            CLUSTER_DNS,
            ["10.96.0.10"],
            ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "lan"],
            ["ndots:5"],
        ),
        ({"dnsPolicy": "Default"}, CLUSTER_DNS, ["192.168.1.1"], ["lan"], []),
        (
            {"dnsPolicy": "ClusterFirstWithHostNet", "hostNetwork": True},
            CLUSTER_DNS,
            ["10.96.0.10"],
            ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "lan"],
            ["ndots:5"],
        ),
        ({}, HOST_DNS, ["192.168.1.1"], ["lan"], ["edns0"]),
        ({}, DNSSettings(resolv_conf=False), ["127.0.0.1"], ["."], []),
        (
            {},
            DNSSettings(resolv_conf=False, node_ips=("10.0.0.1", "fd00::1")),
            ["127.0.0.1", "::1"],
            ["."],
            [],
        ),
        (
            {
                "dnsPolicy": "None",
                "dnsConfig": {
                    "nameservers": ["9.9.9.9"],
                    "searches": ["x"],
                    "options": [{"name": "ndots", "value": "1"}],
                },
            },
            CLUSTER_DNS,
            ["9.9.9.9"],
            ["x"],
            ["ndots:1"],
        ),
        (
            {
                "dnsConfig": {
                    "nameservers": ["10.96.0.10", "9.9.9.9"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
                }
            },
            CLUSTER_DNS,
            ["10.96.0.10", "9.9.9.9"],
            ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "lan"],
            ["ndots:2", "edns0"],
        ),
        (
            {"dnsConfig": {"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3"]}},
            HOST_DNS,
            ["192.168.1.1", "1.1.1.1", "2.2.2.2"],
            ["lan"],
            ["edns0"],
        ),
    ],
)
def test_pod_dns_config(
    spec: dict[str, Any],
    dns: DNSSettings,
    servers: list[str],
    searches: list[str],
    options: list[str],
) -> None:
    config = pod_dns_config(make(**spec), dns)
    assert (list(config.servers), list(config.searches), list(config.options)) == (
        servers,
        searches,
        options,
    )


def test_dns_search_limits() -> None:
    # at most 32 paths, then those over 253 characters are dropped (as the kubelet orders it)
    many = ("x" * 254, *(f"d{i}.example" for i in range(40)))
    config = pod_dns_config(make(dnsPolicy="Default"), DNSSettings(host_searches=many))
    assert list(config.searches) == [f"d{i}.example" for i in range(31)]
    wide = tuple(f"{i:02d}" + "y" * 98 for i in range(25))  # 25 x 100 chars > 2048
    config = pod_dns_config(make(dnsPolicy="Default"), DNSSettings(host_searches=wide))
    assert list(config.searches) == list(wide[:20])


# --- container -----------------------------------------------------------------------------


def container_pod(container: dict[str, Any], **spec: Any) -> Pod:
    return read(
        {
            "metadata": {"name": "web", "namespace": "shop", "uid": UID},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27", **container}], **spec},
        }
    )


def test_container_config_basics() -> None:
    pod = container_pod(
        {
            "command": ["/bin/sh", "-c"],
            "args": ["echo $(GREETING) $(UNKNOWN)"],
            "workingDir": "/srv",
            "stdin": True,
            "stdinOnce": True,
            "tty": True,
        }
    )
    container = pod.spec.containers[0]
    mount = pb.Mount(container_path="/data", host_path="/var/lib/x")
    config = container_config(
        pod,
        container,
        restart_count=3,
        image="sha256:abc",
        env=[("GREETING", "hi"), ("B", "2")],
        mounts=[mount],
    )
    assert config.metadata == pb.ContainerMetadata(name="app", attempt=3)
    assert config.image == pb.ImageSpec(image="sha256:abc", user_specified_image="nginx:1.27")
    assert list(config.command) == ["/bin/sh", "-c"]
    assert list(config.args) == ["echo hi $(UNKNOWN)"]
    assert config.working_dir == "/srv"
    assert [(kv.key, kv.value) for kv in config.envs] == [("GREETING", b"hi"), ("B", b"2")]
    assert list(config.mounts) == [mount]
    assert config.log_path == "app/3.log"
    assert (config.stdin, config.stdin_once, config.tty) == (True, True, True)
    assert dict(config.labels) == lbl.new_container_labels(container, pod)
    assert config.annotations[lbl.CONTAINER_HASH_ANNOTATION] == hash_container(container)
    assert config.annotations[lbl.CONTAINER_RESTART_COUNT_ANNOTATION] == "3"
    assert (
        config.annotations[lbl.CONTAINER_TERMINATION_MESSAGE_PATH_ANNOTATION]
        == "/dev/termination-log"
    )


@pytest.mark.parametrize(
    ("res", "shares", "quota", "memory"),
    [
        ({}, 2, 0, 0),
        ({"requests": {"cpu": "250m"}}, 256, 0, 0),
        ({"limits": {"cpu": "500m", "memory": "128Mi"}}, 512, 50000, 128 * 1024 * 1024),
        ({"requests": {"cpu": "100m"}, "limits": {"cpu": "2"}}, 102, 200000, 0),
        ({"requests": {"cpu": "1m"}, "limits": {"cpu": "5m"}}, 2, 1000, 0),  # min shares, min quota
        ({"requests": {"cpu": "1000"}}, 262144, 0, 0),  # max shares
        ({"limits": {"memory": "1G"}}, 2, 0, 10**9),
    ],
)
def test_container_resources(res: dict[str, Any], shares: int, quota: int, memory: int) -> None:
    pod = container_pod({"resources": res})
    linux = container_config(pod, pod.spec.containers[0], restart_count=0, image="i").linux
    assert linux.resources.cpu_shares == shares
    assert linux.resources.cpu_quota == quota
    assert linux.resources.cpu_period == 100000
    assert linux.resources.memory_limit_in_bytes == memory


def test_share_and_quota_arithmetic() -> None:
    assert milli_cpu_to_shares(0) == 2
    assert milli_cpu_to_shares(1) == 2
    assert milli_cpu_to_shares(1000) == 1024
    assert milli_cpu_to_quota(0) == 0
    assert milli_cpu_to_quota(250) == 25000
    # the limit stands in for a missing request
    r = calculate_linux_resources(None, parse_quantity("300m"), None)
    assert r.cpu_shares == 307


def test_container_security_context_mapping() -> None:
    pod = container_pod(
        {
            "securityContext": {
                "privileged": True,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
                "runAsUser": 1001,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
            }
        },
        securityContext={"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
        hostNetwork=True,
    )
    sc = container_config(
        pod, pod.spec.containers[0], restart_count=0, image="i"
    ).linux.security_context
    assert sc.privileged
    assert list(sc.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(sc.capabilities.drop_capabilities) == ["ALL"]
    assert sc.run_as_user.value == 1001  # the container's wins
    assert sc.run_as_group.value == 3000  # inherited from the pod
    assert sc.readonly_rootfs and sc.no_new_privs
    assert list(sc.supplemental_groups) == [2000]
    assert sc.namespace_options.network == pb.NODE
    assert tuple(sc.masked_paths) == DEFAULT_MASKED_PATHS
    assert tuple(sc.readonly_paths) == DEFAULT_READONLY_PATHS


def test_container_security_context_defaults() -> None:
    pod = container_pod({})
    sc = container_config(
        pod, pod.spec.containers[0], restart_count=0, image="i"
    ).linux.security_context
    assert not sc.privileged and not sc.no_new_privs and not sc.readonly_rootfs
    assert not sc.HasField("run_as_user") and not sc.HasField("capabilities")
    assert sc.seccomp.profile_type == pb.SecurityProfile.Unconfined
    assert sc.namespace_options.pid == pb.CONTAINER
    assert not sc.HasField("apparmor")


def test_unmasked_proc_mount_and_allow_escalation() -> None:
    pod = container_pod(
        {"securityContext": {"procMount": "Unmasked", "allowPrivilegeEscalation": True}}
    )
    sc = container_config(
        pod, pod.spec.containers[0], restart_count=0, image="i"
    ).linux.security_context
    assert list(sc.masked_paths) == [] and list(sc.readonly_paths) == []
    assert not sc.no_new_privs


@pytest.mark.parametrize(
    ("pod_sc", "container_sc", "seccomp_default", "expected"),
    [
        ({}, {}, False, (pb.SecurityProfile.Unconfined, "")),
        ({}, {}, True, (pb.SecurityProfile.RuntimeDefault, "")),
        (
            {"seccompProfile": {"type": "RuntimeDefault"}},
            {},
            False,
            (pb.SecurityProfile.RuntimeDefault, ""),
        ),
        (
            {"seccompProfile": {"type": "RuntimeDefault"}},
            {"seccompProfile": {"type": "Unconfined"}},
            True,
            (pb.SecurityProfile.Unconfined, ""),
        ),
        (
            {},
            {"seccompProfile": {"type": "Localhost", "localhostProfile": "prof.json"}},
            False,
            (pb.SecurityProfile.Localhost, "/var/lib/kubelet/seccomp/prof.json"),
        ),
        (
            {"seccompProfile": {"type": "Localhost", "localhostProfile": "p/x.json"}},
            {},
            False,
            (pb.SecurityProfile.Localhost, "/var/lib/kubelet/seccomp/p/x.json"),
        ),
    ],
)
def test_seccomp(
    pod_sc: dict[str, Any],
    container_sc: dict[str, Any],
    seccomp_default: bool,
    expected: tuple[int, str],
) -> None:
    pod = container_pod({"securityContext": container_sc}, securityContext=pod_sc)
    seccomp = container_config(
        pod, pod.spec.containers[0], restart_count=0, image="i", seccomp_default=seccomp_default
    ).linux.security_context.seccomp
    assert (seccomp.profile_type, seccomp.localhost_ref) == expected


def test_seccomp_localhost_needs_a_profile() -> None:
    pod = container_pod({"securityContext": {"seccompProfile": {"type": "Localhost"}}})
    with pytest.raises(ConfigError, match="localhostProfile must be set") as info:
        container_config(pod, pod.spec.containers[0], restart_count=0, image="i")
    assert info.value.reason == "CreateContainerConfigError"


def test_apparmor() -> None:
    pod = container_pod(
        {
            "securityContext": {
                "appArmorProfile": {"type": "Localhost", "localhostProfile": "k8s-nginx"}
            }
        }
    )
    aa = container_config(
        pod, pod.spec.containers[0], restart_count=0, image="i"
    ).linux.security_context.apparmor
    assert (aa.profile_type, aa.localhost_ref) == (pb.SecurityProfile.Localhost, "k8s-nginx")
    body: dict[str, Any] = {
        "metadata": {
            "name": "w",
            "uid": "u",
            "annotations": {
                "container.apparmor.security.beta.kubernetes.io/app": "runtime/default"
            },
        },
        "spec": {"containers": [{"name": "app", "image": "i"}]},
    }
    pod = read(body)
    aa = container_config(
        pod, pod.spec.containers[0], restart_count=0, image="i"
    ).linux.security_context.apparmor
    assert aa.profile_type == pb.SecurityProfile.RuntimeDefault


def test_run_as_non_root_with_root_user_fails() -> None:
    pod = container_pod(
        {"securityContext": {"runAsUser": 0}}, securityContext={"runAsNonRoot": True}
    )
    with pytest.raises(ConfigError, match="breaks non-root policy"):
        container_config(pod, pod.spec.containers[0], restart_count=0, image="i")


def test_bad_quantity_is_a_config_error() -> None:
    pod = container_pod({"resources": {"limits": {"cpu": "lots"}}})
    with pytest.raises(ConfigError, match="quantity 'lots'"):
        container_config(pod, pod.spec.containers[0], restart_count=0, image="i")


def test_inputs_are_not_mutated() -> None:
    body = base()
    body["spec"]["securityContext"] = {"runAsUser": 1}
    before = copy.deepcopy(body)
    pod = read(body)
    sandbox_config(pod, 0, dns=CLUSTER_DNS)
    container_config(pod, pod.spec.containers[0], restart_count=1, image="i")
    assert body == before and pod.raw == before
