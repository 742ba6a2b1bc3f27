"""The pod's /etc/hosts is the kubelet's: written in the pod's directory and mounted into
each container, with the hostAliases, whatever the runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from minikubelet.api.pod import Pod
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kuberuntime.podsetup import PodSetup
from minikubelet.prober.probe import ExecResult

UID = "0d3c1c8e-hosts"
ALIASES = [
    {"ip": "127.0.0.1", "hostnames": ["foo.local", "bar.local"]},
    {"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]},
]
LOCALHOST = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)
ALIAS_SECTION = (
    "\n# Entries added by HostAliases.\n"
    "127.0.0.1\tfoo.local\tbar.local\n"
    "10.1.2.3\tfoo.remote\tbar.remote\n"
)


async def _no_exec(container_id: str, command: list[str], timeout: int) -> ExecResult:
    raise AssertionError("no exec expected")


def _pod(spec: dict[str, Any]) -> Pod:
    base = {"containers": [{"name": "app", "image": "busybox:1.36"}]}
    return Pod.from_dict(
        {
            "metadata": {"name": "hostaliases-pod", "namespace": "shop", "uid": UID},
            "spec": {**base, **spec},
        },
        validate=False,
    )


def _setup(tmp_path: Path) -> PodSetup:
    return PodSetup(
        root_dir=tmp_path / "root",
        log_root=tmp_path / "logs",
        node_name="node1",
        host_ip="192.0.2.10",
        exec_runner=_no_exec,
    )


async def _config(setup: PodSetup, pod: Pod, ips: list[str]) -> pb.ContainerConfig:
    await setup.prepare_pod(pod, ips)
    return await setup.container_config(
        pod, pod.spec.containers[0], restart_count=0, image="busybox:1.36", pod_ips=ips
    )


def _hosts_mounts(config: pb.ContainerConfig) -> list[pb.Mount]:
    return [m for m in config.mounts if m.container_path == "/etc/hosts"]


async def test_hosts_file_with_aliases_is_mounted_from_the_pod_directory(tmp_path: Path) -> None:
    setup = _setup(tmp_path)
    pod = _pod({"hostAliases": ALIASES})
    config = await _config(setup, pod, ["10.89.0.7"])
    [mount] = _hosts_mounts(config)
    assert Path(mount.host_path) == tmp_path / "root" / "pods" / UID / "etc-hosts"
    assert (mount.readonly, mount.selinux_relabel) == (False, True)
    assert Path(mount.host_path).read_text() == (
        "# Kubernetes-managed hosts file.\n"
        + LOCALHOST
        + "10.89.0.7\thostaliases-pod\n"
        + ALIAS_SECTION
    )
    assert Path(mount.host_path).stat().st_mode & 0o777 == 0o644


async def test_subdomain_gives_the_fqdn_and_every_pod_ip_its_line(tmp_path: Path) -> None:
    setup = _setup(tmp_path)
    pod = _pod({"hostname": "db-0", "subdomain": "db"})
    [mount] = _hosts_mounts(await _config(setup, pod, ["10.89.0.7", "fd00::7"]))
    assert Path(mount.host_path).read_text() == (
        "# Kubernetes-managed hosts file.\n"
        + LOCALHOST
        + "10.89.0.7\tdb-0.db.shop.svc.\tdb-0\n"
        + "fd00::7\tdb-0.db.shop.svc.\tdb-0\n"
    )


async def test_host_network_pod_gets_the_node_file_and_the_aliases(tmp_path: Path) -> None:
    setup = _setup(tmp_path)
    pod = _pod({"hostNetwork": True, "hostAliases": ALIASES[:1]})
    [mount] = _hosts_mounts(await _config(setup, pod, []))
    assert Path(mount.host_path).read_text() == (
        "# Kubernetes-managed hosts file (host network).\n"
        + Path("/etc/hosts").read_text()
        + "\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n"
    )


async def test_a_containers_own_etc_hosts_wins_and_no_ip_means_no_file(tmp_path: Path) -> None:
    own = _pod(
        {
            "containers": [
                {
                    "name": "app",
                    "image": "busybox:1.36",
                    "volumeMounts": [{"name": "h", "mountPath": "/etc/hosts", "subPath": "hosts"}],
                }
            ],
            "volumes": [{"name": "h", "emptyDir": {}}],
        }
    )
    volume = tmp_path / "root" / "pods" / UID / "volumes" / "kubernetes.io~empty-dir" / "h"
    volume.mkdir(parents=True)
    (volume / "hosts").write_text("1.2.3.4 mine\n")
    [mount] = _hosts_mounts(await _config(_setup(tmp_path), own, ["10.89.0.7"]))
    assert mount.host_path == str(volume / "hosts")
    assert not (tmp_path / "root" / "pods" / UID / "etc-hosts").exists()
    # before the pod has an IP the kubelet mounts none (the runtime's file stays)
    assert _hosts_mounts(await _config(_setup(tmp_path), _pod({}), [])) == []
    assert not (tmp_path / "root" / "pods" / UID / "etc-hosts").exists()
