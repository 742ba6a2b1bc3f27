"""The harness's control plane: a real etcd, kube-apiserver, controller-manager and scheduler.

What the node's cluster tests rely on: kubectl as the admin, controllers and the
scheduler at work, a node identity held to its own Node by NodeRestriction, and an
apiserver that can be stopped and started again with its data.
"""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.harness.controlplane import (
    PROGRAMS,
    SHARED_BIN,
    Binaries,
    ControlPlane,
    find_binaries,
)
from tests.harness.wait import wait_until_sync


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _ok(plane: ControlPlane, *args: str, input: str | None = None) -> str:
    proc = plane.kubectl(*args, input=input)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def _get_json(plane: ControlPlane, *args: str) -> Any:
    return json.loads(_ok(plane, "get", *args, "-o", "json"))


def _node_yaml(name: str) -> str:
    # Unschedulable: no pod of another test lands on a Node nothing runs.
    return f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\nspec:\n  unschedulable: true\n"


def test_binaries_are_found_in_order(tmp_path: Path) -> None:
    """An explicit variable wins; a bad one is named in the one-line reason."""
    fake = tmp_path / "my-etcd"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    env = {"PATH": "/nonexistent", "ETCD": str(fake)}
    found = find_binaries(env)
    if isinstance(found, Binaries):
        assert found.etcd == fake
        assert found.kube_apiserver == SHARED_BIN / "kube-apiserver"
    missing = find_binaries({"PATH": "/nonexistent", "KUBE_SCHEDULER": "/nonexistent/sched"})
    assert isinstance(missing, str)
    assert "\n" not in missing
    assert "KUBE_SCHEDULER=/nonexistent/sched is not an executable file" in missing
    assert "etcd not found (install the Debian package etcd-server" in missing
    assert {p.env for p in PROGRAMS} == {
        "ETCD",
        "KUBE_APISERVER",
        "KUBE_CONTROLLER_MANAGER",
        "KUBE_SCHEDULER",
        "KUBECTL",
    }


def test_admin_creates_and_reads_a_namespace_and_a_configmap(control_plane: ControlPlane) -> None:
    ns = _name("smoke")
    _ok(control_plane, "create", "namespace", ns)
    _ok(control_plane, "create", "configmap", "greeting", "-n", ns, "--from-literal=hello=world")
    value = _ok(
        control_plane, "get", "configmap", "greeting", "-n", ns, "-o", "jsonpath={.data.hello}"
    )
    assert value == "world"
    assert ns in _ok(control_plane, "get", "namespaces")


def test_cluster_defaults_and_ca_bundle(control_plane: ControlPlane) -> None:
    """The controller-manager published the CA; the apiserver answers /readyz with its cert."""
    cm = _get_json(control_plane, "configmap", "kube-root-ca.crt", "-n", "default")
    assert cm["data"]["ca.crt"].strip() == control_plane.ca_pem.decode().strip()
    status, body = control_plane.api_get("/readyz")
    assert (status, body) == (200, b"ok")
    assert control_plane.url == f"https://127.0.0.1:{control_plane.port}"


def test_deployment_gets_a_replicaset_and_an_unscheduled_pod(
    control_plane: ControlPlane,
) -> None:
    """Controllers make the ReplicaSet and Pod; the scheduler finds no node for it."""
    ns = _name("deploy")
    _ok(control_plane, "create", "namespace", ns)
    # The selector matches no node, so the pod stays Pending whatever nodes other tests add.
    deployment = f"""
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      nodeSelector: {{minikubelet.test/no-such-node: "true"}}
      containers:
      - name: web
        image: busybox:1.36
        command: [sleep, "3600"]
"""
    _ok(control_plane, "apply", "-f", "-", input=deployment)

    def replicaset() -> Any:
        items = _get_json(control_plane, "replicasets", "-n", ns)["items"]
        return items[0] if items else None

    rs = wait_until_sync(replicaset, timeout=30, interval=0.2, message="the ReplicaSet")
    assert rs["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    assert rs["metadata"]["ownerReferences"][0]["name"] == "web"

    def unschedulable_pod() -> Any:
        items = _get_json(control_plane, "pods", "-n", ns)["items"]
        for pod in items:
            for cond in pod["status"].get("conditions", []):
                if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return pod
        return None

    pod = wait_until_sync(
        unschedulable_pod, timeout=30, interval=0.2, message="the scheduler to report its pod"
    )
    assert pod["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
    assert "nodeName" not in pod["spec"]
    assert pod["status"]["phase"] == "Pending"


def test_node_creates_its_own_node_and_no_other(control_plane: ControlPlane) -> None:
    mine, other = _name("node"), _name("node")
    kubeconfig = control_plane.node_kubeconfig(mine)
    try:
        created = control_plane.kubectl(
            "create", "-f", "-", kubeconfig=kubeconfig, input=_node_yaml(mine)
        )
        assert created.returncode == 0, created.stderr
        node = _get_json(control_plane, "node", mine)
        assert node["metadata"]["name"] == mine

        refused = control_plane.kubectl(
            "create", "-f", "-", kubeconfig=kubeconfig, input=_node_yaml(other)
        )
        assert refused.returncode != 0
        assert "forbidden" in refused.stderr
        assert f'node "{mine}" is not allowed to modify node "{other}"' in refused.stderr
        absent = control_plane.kubectl("get", "node", other)
        assert absent.returncode != 0 and "NotFound" in absent.stderr
    finally:
        control_plane.kubectl("delete", "node", mine, other, "--ignore-not-found")


def test_apiserver_stops_and_starts_with_its_data(control_plane: ControlPlane) -> None:
    ns = _name("survivor")
    _ok(control_plane, "create", "namespace", ns)
    port, url = control_plane.port, control_plane.url

    control_plane.apiserver.stop()
    assert not control_plane.apiserver.running()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    down = control_plane.kubectl("get", "namespace", ns, "--request-timeout=5s", timeout=20)
    assert down.returncode != 0

    control_plane.apiserver.start()
    assert (control_plane.port, control_plane.url) == (port, url)
    assert ns in _ok(control_plane, "get", "namespace", ns, "-o", "name")
    # The controller-manager is still at work against the restarted apiserver.
    after = _name("after")
    _ok(control_plane, "create", "namespace", after)
    wait_until_sync(
        lambda: (
            control_plane.kubectl("get", "serviceaccount", "default", "-n", after).returncode == 0
        ),
        timeout=30,
        interval=0.2,
        message="the default service account in a namespace made after the restart",
    )
    control_plane.check_alive()
