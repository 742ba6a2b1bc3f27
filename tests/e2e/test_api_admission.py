"""A minikubelet node of a real control plane: kubelet admission, pull secrets, events,
and a write NodeRestriction refuses.

The control plane (etcd, kube-apiserver with ``Node,RBAC`` and NodeRestriction,
controller-manager, scheduler) runs on loopback for the session
(tests/harness/controlplane.py); the node is ``minikubelet run --runtime fake
--kubeconfig`` as ``system:node:NAME``. Pods are bound to it by ``spec.nodeName`` and
everything is checked with the admin's kubectl, the node's local API and its CRI
trace file.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minikubelet.cri.trace import read_jsonl
from tests.e2e.cluster import apply, kubectl_json
from tests.e2e.node import FAST, Node, phase
from tests.harness.controlplane import ControlPlane
from tests.harness.wait import wait_until


def pod_yaml(
    name: str,
    node: str,
    *,
    extra_spec: str = "",
    image: str = "busybox:1.36",
    requests: str = "{}",
) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: {image}
      command: ["sh", "-c", "exec sleep 3600"]
      resources: {{requests: {requests}}}
{extra_spec}"""


async def api_pod(cp: ControlPlane, name: str) -> dict[str, Any] | None:
    done = cp.kubectl("get", "pod", name, "-n", "default", "-o", "json")
    if done.returncode != 0:
        if "NotFound" not in done.stderr:
            raise AssertionError(f"kubectl get pod {name}: {done.stderr}")
        return None
    pod: dict[str, Any] = json.loads(done.stdout)
    return pod


async def wait_api_pod(cp: ControlPlane, node: Node, name: str, check: Any, what: str) -> Any:
    last: dict[str, Any] | None = None

    async def seen() -> dict[str, Any] | None:
        nonlocal last
        last = await api_pod(cp, name)
        return last if last is not None and check(last) else None

    try:
        return await wait_until(seen, timeout=60, interval=0.3, message=what)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}; last seen: {json.dumps(last)[:2000]}\n--- kubelet log tail:\n"
            f"{node.log()[-4000:]}"
        ) from None


async def api_events(cp: ControlPlane, name: str) -> list[dict[str, Any]]:
    listed = kubectl_json(
        cp, "get", "events", "-n", "default", "--field-selector", f"involvedObject.name={name}"
    )
    return list(listed.get("items", []))


@pytest.fixture
async def api_node(tmp_path: Path, control_plane: ControlPlane) -> AsyncIterator[Node]:
    name = f"adm-{tmp_path.name[-12:].lower().replace('_', '-').strip('-')}"
    node = Node(
        tmp_path,
        runtime="fake",
        node_name=name,
        extra_args=(
            *FAST,
            "--kubeconfig",
            str(control_plane.node_kubeconfig(name)),
            "--trace-file",
            str(tmp_path / "trace.jsonl"),
        ),
    )
    node.start()
    try:
        await node.wait_ready()
        yield node
    finally:
        control_plane.kubectl(
            "delete",
            "pods",
            "--all",
            "-n",
            "default",
            "--field-selector",
            f"spec.nodeName={name}",
            "--grace-period=0",
            "--force",
            "--wait=false",
        )
        node.stop()
        assert "Traceback" not in node.log(), node.log()[-4000:]


async def test_a_pod_that_does_not_fit_is_failed_with_out_of_cpu_and_an_event(
    control_plane: ControlPlane, api_node: Node
) -> None:
    cp, node = control_plane, api_node
    apply(cp, pod_yaml("fits", node.node_name))
    apply(cp, pod_yaml("too-big", node.node_name, requests='{cpu: "1000"}'))
    apply(
        cp,
        pod_yaml("elsewhere", node.node_name, extra_spec="  nodeSelector: {disk: ssd}\n"),
    )
    refused = await wait_api_pod(
        cp,
        node,
        "too-big",
        lambda p: phase(p) == "Failed",
        "too-big Failed in the API server",
    )
    status = refused["status"]
    assert status["reason"] == "OutOfcpu"
    assert status["message"].startswith(
        "Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: 0, "
        "capacity: "
    ), status
    await wait_api_pod(cp, node, "fits", lambda p: phase(p) == "Running", "the other pod Running")
    mismatched = await wait_api_pod(
        cp, node, "elsewhere", lambda p: phase(p) == "Failed", "elsewhere Failed"
    )
    assert mismatched["status"]["reason"] == "NodeAffinity"
    assert mismatched["status"]["message"] == "Pod was rejected: Predicate NodeAffinity failed"

    async def refusal_event() -> dict[str, Any] | None:
        return next((e for e in await api_events(cp, "too-big") if e["reason"] == "OutOfcpu"), None)

    event = await wait_until(refusal_event, timeout=30, interval=0.3, message="OutOfcpu event")
    assert event["type"] == "Warning"
    assert event["source"] == {"component": "kubelet", "host": node.node_name}
    assert event["involvedObject"]["uid"] == refused["metadata"]["uid"]
    assert event["message"].startswith("Node didn't have enough resource: cpu")
    # the node's own events are there too, about the Node (its uid is its name)
    starting = kubectl_json(
        cp,
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        f"involvedObject.kind=Node,involvedObject.name={node.node_name},reason=Starting",
    )["items"]
    assert starting and starting[0]["involvedObject"]["uid"] == node.node_name
    # no container of the refused pod was ever made
    assert not any(
        r.method == "CreateContainer" and r.pod == "default/too-big"
        for r in read_jsonl(node.workdir / "trace.jsonl")
    )


async def test_a_repeated_event_is_one_event_whose_count_grows(
    control_plane: ControlPlane, api_node: Node
) -> None:
    cp, node = control_plane, api_node
    apply(
        cp,
        pod_yaml("crasher", node.node_name).replace('"exec sleep 3600"', '"exit 1"'),
    )

    async def counted() -> dict[str, Any] | None:
        backoffs = [e for e in await api_events(cp, "crasher") if e["reason"] == "BackOff"]
        return backoffs[0] if len(backoffs) == 1 and backoffs[0]["count"] >= 3 else None

    event = await wait_until(counted, timeout=60, interval=0.5, message="BackOff counted")
    assert event["type"] == "Warning"
    assert event["firstTimestamp"] <= event["lastTimestamp"]
    assert event["involvedObject"]["fieldPath"] == "spec.containers{main}"


async def test_pull_secrets_reach_the_runtime_as_auth_config(
    control_plane: ControlPlane, api_node: Node
) -> None:
    cp, node = control_plane, api_node
    registry = "127.0.0.1:5999"
    done = cp.kubectl(
        "create",
        "secret",
        "docker-registry",
        f"regcred-{node.node_name}",
        f"--docker-server={registry}",
        "--docker-username=alice",
        "--docker-password=s3cr3t",
    )
    assert done.returncode == 0, done.stderr
    pulls = f"""  imagePullSecrets: [{{name: regcred-{node.node_name}}}]
"""
    apply(cp, pod_yaml("private", node.node_name, image=f"{registry}/team/app:1", extra_spec=pulls))
    missing = """  imagePullSecrets: [{name: not-there}]
"""
    apply(cp, pod_yaml("no-secret", node.node_name, image="busybox:1.36", extra_spec=missing))
    await wait_api_pod(cp, node, "private", lambda p: phase(p) == "Running", "private Running")
    await wait_api_pod(cp, node, "no-secret", lambda p: phase(p) == "Running", "no-secret Running")

    def pulled_with_auth() -> list[Any]:
        return [
            r
            for r in read_jsonl(node.workdir / "trace.jsonl")
            if r.method == "PullImage" and r.image == f"{registry}/team/app:1"
        ]

    (pull,) = await wait_until(pulled_with_auth, timeout=10, message="the PullImage record")
    assert pull.details["auth"] == {"username": "alice", "with": "password"}
    assert "s3cr3t" not in (node.workdir / "trace.jsonl").read_text()

    async def secret_warning() -> dict[str, Any] | None:
        return next(
            (
                e
                for e in await api_events(cp, "no-secret")
                if e["reason"] == "FailedToRetrieveImagePullSecret"
            ),
            None,
        )

    warning = await wait_until(secret_warning, timeout=30, interval=0.3, message="the warning")
    assert warning["message"] == (
        "Unable to retrieve some image pull secrets (default/not-there); "
        "attempting to pull the image may not succeed."
    )
    cp.kubectl("delete", "secret", f"regcred-{node.node_name}")


async def test_a_mirror_pod_that_node_restriction_refuses_disturbs_nothing(
    control_plane: ControlPlane, api_node: Node
) -> None:
    """A static pod naming a pull secret: NodeRestriction refuses its mirror pod (a node
    may not create pods that reference secrets). The refusal is logged with the API
    server's words; the static pod runs, its neighbours' mirror pods appear."""
    cp, node = control_plane, api_node
    if cp.kubectl("get", "node", node.node_name).returncode != 0:
        # mirror pods wait for the Node: register it as an admin would, if the node has not
        apply(
            cp,
            f"apiVersion: v1\nkind: Node\nmetadata:\n  name: {node.node_name}\n",
        )
    node.add_manifest(
        "a-secretive.yaml",
        """apiVersion: v1
kind: Pod
metadata: {name: a-secretive}
spec:
  imagePullSecrets: [{name: some-secret}]
  containers:
    - {name: main, image: busybox:1.36, command: ["sh", "-c", "exec sleep 3600"]}
""",
    )
    node.add_manifest(
        "plain.yaml",
        """apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers:
    - {name: main, image: busybox:1.36, command: ["sh", "-c", "exec sleep 3600"]}
""",
    )
    apply(cp, pod_yaml("neighbour", node.node_name))
    await node.wait_pod("a-secretive", lambda p: phase(p) == "Running", what="secretive Running")
    await wait_api_pod(
        cp, node, node.pod_name("plain"), lambda p: True, "the plain static pod's mirror pod"
    )
    await wait_api_pod(cp, node, "neighbour", lambda p: phase(p) == "Running", "neighbour")

    def refused_in_log() -> bool:
        return "is forbidden: a mirror pod may not reference secrets" in node.log()

    await wait_until(refused_in_log, timeout=30, message="the NodeRestriction refusal logged")
    assert await api_pod(cp, node.pod_name("a-secretive")) is None
    refusals = [
        e
        for e in await node.events()
        if e["reason"] == "FailedMirrorPod"
        and e["involvedObject"]["name"] == node.pod_name("a-secretive")
    ]
    assert refusals and "may not reference secrets" in refusals[0]["message"], refusals
    node.remove_manifest("a-secretive.yaml")
    node.remove_manifest("plain.yaml")
