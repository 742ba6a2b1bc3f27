"""Pods from the Kubernetes task pages on the native runtime, as a real kubelet runs them:
``/etc/hosts`` with hostAliases (the kubelet's file, not the runtime's) and fsGroup with
fsGroupChangePolicy, seen through ``minikubelet get pods -o json`` and in the container.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node import ROOT, Node, phase, running, runtime_node
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime

NODE_NAME = "fidelity"

# from "Adding entries to Pod /etc/hosts with HostAliases"
HOST_ALIASES = """apiVersion: v1
kind: Pod
metadata:
  name: hostaliases-pod
spec:
  restartPolicy: Never
  hostAliases:
  - ip: "127.0.0.1"
    hostnames:
    - "foo.local"
    - "bar.local"
  - ip: "10.1.2.3"
    hostnames:
    - "foo.remote"
    - "bar.remote"
  containers:
  - name: cat-hosts
    image: busybox:1.36
    command: [sleep, "3600"]
"""

HOST_NETWORK_ALIASES = """apiVersion: v1
kind: Pod
metadata:
  name: hostnet-aliases
spec:
  hostNetwork: true
  restartPolicy: Never
  hostAliases:
  - ip: "10.1.2.3"
    hostnames: ["foo.remote"]
  containers:
  - name: cat-hosts
    image: busybox:1.36
    command: [cat, /etc/hosts]
"""

# from "Configure a Security Context for a Pod or Container", with the change policy
FS_GROUP = """apiVersion: v1
kind: Pod
metadata:
  name: security-context-demo
spec:
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    fsGroupChangePolicy: OnRootMismatch
  volumes:
  - name: sec-ctx-vol
    emptyDir: {}
  containers:
  - name: sec-ctx-demo
    image: busybox:1.36
    command: [sh, -c, "echo hello > /data/demo/testfile && exec sleep 3600"]
    volumeMounts:
    - name: sec-ctx-vol
      mountPath: /data/demo
"""


@pytest.fixture(scope="module")
async def node(
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    async with runtime_node(
        tmp_path_factory.mktemp("fidelity-node"), native_runtime.endpoint, NODE_NAME
    ) as node:
        yield node
    assert "Traceback" not in native_runtime.log(), native_runtime.log()[-4000:]


async def get_pod_json(node: Node, name: str) -> dict[str, Any]:
    """The pod as ``minikubelet get pods -o json`` prints it."""
    done = await asyncio.to_thread(
        subprocess.run,
        [
            *(sys.executable, "-m", "minikubelet", "get", "pods", "-o", "json"),
            *("--root-dir", str(node.root_dir)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    pods = {p["metadata"]["name"]: p for p in json.loads(done.stdout)["items"]}
    pod: dict[str, Any] = pods[node.pod_name(name)]
    return pod


async def exec_out(node: Node, pod: str, container: str, *cmd: str) -> str:
    async with node.client() as c:
        result = await c.exec("default", node.pod_name(pod), container, list(cmd), timeout=10)
    assert result.exit_code == 0, result
    return str(result.stdout.decode())


async def test_host_aliases_reach_etc_hosts(node: Node) -> None:
    node.add_manifest("hostaliases.yaml", HOST_ALIASES)
    await node.wait_pod("hostaliases-pod", lambda p: running(p, "cat-hosts"), timeout=60)
    pod = await get_pod_json(node, "hostaliases-pod")
    assert pod["spec"]["hostAliases"][1] == {
        "ip": "10.1.2.3",
        "hostnames": ["foo.remote", "bar.remote"],
    }
    ip = pod["status"]["podIP"]
    hosts = await exec_out(node, "hostaliases-pod", "cat-hosts", "cat", "/etc/hosts")
    assert hosts == (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        f"{ip}\thostaliases-pod-{NODE_NAME}\n"
        "\n"
        "# Entries added by HostAliases.\n"
        "127.0.0.1\tfoo.local\tbar.local\n"
        "10.1.2.3\tfoo.remote\tbar.remote\n"
    )
    assert (node.root_dir / "pods" / pod["metadata"]["uid"] / "etc-hosts").read_text() == hosts


async def test_a_host_network_pod_gets_the_nodes_file_and_the_aliases(node: Node) -> None:
    node.add_manifest("hostnet.yaml", HOST_NETWORK_ALIASES)
    await node.wait_pod("hostnet-aliases", lambda p: phase(p) == "Succeeded", timeout=60)
    async with node.client() as c:
        name = node.pod_name("hostnet-aliases")
        text = b"".join([x async for x in c.logs("default", name, "cat-hosts")]).decode()
    assert text == (
        "# Kubernetes-managed hosts file (host network).\n"
        + Path("/etc/hosts").read_text()
        + "\n# Entries added by HostAliases.\n10.1.2.3\tfoo.remote\n"
    )
    node.remove_manifest("hostnet.yaml")


async def test_fs_group_owns_the_volume_and_what_the_container_writes(node: Node) -> None:
    node.add_manifest("fsgroup.yaml", FS_GROUP)
    await node.wait_pod("security-context-demo", lambda p: running(p, "sec-ctx-demo"), timeout=60)
    pod = await get_pod_json(node, "security-context-demo")
    assert phase(pod) == "Running"
    assert pod["spec"]["securityContext"] == {
        "runAsUser": 1000,
        "runAsGroup": 3000,
        "fsGroup": 2000,
        "supplementalGroups": [4000],
        "fsGroupChangePolicy": "OnRootMismatch",
    }
    ctr = ("security-context-demo", "sec-ctx-demo")
    ids = await exec_out(node, *ctr, "id")
    assert ids.split() == ["uid=1000", "gid=3000", "groups=2000,3000,4000"]
    # the volume: group 2000, setgid, group-writable; the file written by uid 1000 has
    # the volume's group, not the process's 3000
    volume = await exec_out(node, *ctr, "stat", "-c", "%g %A", "/data/demo")
    assert volume.split() == ["2000", "drwxrwsrwx"]
    listing = await exec_out(node, *ctr, "ls", "-ln", "/data/demo")
    assert listing.splitlines()[-1].split()[:4] == ["-rw-r--r--", "1", "1000", "2000"]
    made = await exec_out(
        node, *ctr, "sh", "-c", "mkdir /data/demo/sub && stat -c '%g %A' /data/demo/sub"
    )
    assert made.split() == ["2000", "drwxr-sr-x"]
