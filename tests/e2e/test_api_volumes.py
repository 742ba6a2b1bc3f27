"""Volumes and env from the API server, on a node of a real cluster.

A control plane runs on loopback (tests/harness/controlplane.py); a node joins it with
``minikubelet run --kubeconfig`` as ``system:node:NAME``. Pods are bound to it by
``spec.nodeName`` and read ConfigMaps, Secrets and service account tokens through the
Node authorizer, as a kubelet does:

* configMap and secret volumes, ``envFrom`` and ``secretKeyRef`` env, a projected
  service account token with an audience, and the ``kube-api-access-*`` volume the
  ServiceAccount admission adds: the files hold the data (read on the host in the
  pod's volume directory, or with ``cat`` in the container on the native runtime), the
  env holds the values (``printenv`` through the kubelet's exec), and both tokens pass
  a TokenReview as the pod's service account;
* an updated ConfigMap reaches the mounted file (the node's resync, about a minute);
* a missing ConfigMap keeps one pod waiting with FailedMount and another with
  CreateContainerConfigError, with the kubelet's messages, while a third runs; creating
  the ConfigMap lets them start.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import api_node, apply, kubectl_json
from tests.e2e.node import Node, container_status, running
from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime
from tests.harness.wait import wait_until

AUDIENCE = "minikubelet-e2e"

OBJECTS = """
apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}-config, namespace: default}}
data: {{greeting: hello, MODE: fast, "1st": skipped}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-secret, namespace: default}}
stringData: {{password: hunter2, user: admin}}
"""

POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "echo started; exec sleep 3600"]
      envFrom:
        - configMapRef: {{name: {name}-config}}
        - secretRef: {{name: {name}-secret}}
          prefix: DB_
      env:
        - name: PASSWORD
          valueFrom: {{secretKeyRef: {{name: {name}-secret, key: password}}}}
        - name: GREETING
          valueFrom: {{configMapKeyRef: {{name: {name}-config, key: greeting}}}}
        - name: OPTIONAL
          valueFrom: {{configMapKeyRef: {{name: nowhere, key: x, optional: true}}}}
      volumeMounts:
        - {{name: cfg, mountPath: /etc/app}}
        - {{name: creds, mountPath: /etc/creds}}
        - {{name: vault-token, mountPath: /var/run/vault}}
  volumes:
    - name: cfg
      configMap:
        name: {name}-config
        items: [{{key: greeting, path: conf/greeting.txt}}]
    - name: creds
      secret: {{secretName: {name}-secret, defaultMode: 0400}}
    - name: vault-token
      projected:
        sources:
          - serviceAccountToken: {{audience: {audience}, expirationSeconds: 3600, path: token}}
"""


async def started(node: Node) -> AsyncIterator[Node]:
    node.start()
    try:
        await node.wait_ready()
        yield node
    finally:
        assert node.stop() == 0
        assert "Traceback" not in node.log(), node.log()[-6000:]


@pytest.fixture(scope="module")
async def fake_node(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Node]:
    node = api_node(tmp_path_factory.mktemp("vol-fake"), control_plane, "fake", "vol-fake")
    async for up in started(node):
        yield up
    control_plane.kubectl("delete", "node", "vol-fake", "--wait=false")


@pytest.fixture(scope="module")
async def native_node(
    control_plane: ControlPlane,
    native_runtime: NativeRuntime,
    test_images: HarnessImages,  # busybox:1.36 in the registry the runtime pulls from
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    node = api_node(
        tmp_path_factory.mktemp("vol-native"), control_plane, native_runtime.endpoint, "vol-native"
    )
    async for up in started(node):
        yield up
    control_plane.kubectl("delete", "node", "vol-native", "--wait=false")
    assert "Traceback" not in native_runtime.log(), native_runtime.log()[-4000:]


async def running_on_node(node: Node, name: str) -> dict[str, Any]:
    """The pod, once the node runs it (read through the node's local API)."""

    async def probe() -> dict[str, Any] | None:
        pod = (await node.pods()).get(name)
        return pod if pod is not None and running(pod, "app") else None

    try:
        return await wait_until(probe, timeout=90, message=f"pod {name} running on the node")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- kubelet log:\n{node.log()[-6000:]}") from None


def volume_dir(node: Node, uid: str, plugin: str, name: str) -> Path:
    return node.root_dir / "pods" / uid / "volumes" / plugin / name


async def delete_pods(cp: ControlPlane, node: Node, *names: str) -> None:
    """Delete the pods and wait until the node has torn them down (their volumes, tmpfs
    mounts included, gone with their directories), so nothing outlives the test."""
    uids = []
    for name in names:
        done = cp.kubectl("get", "pod", name, "-o", "jsonpath={.metadata.uid}")
        if done.returncode == 0 and done.stdout.strip():
            uids.append(done.stdout.strip())
    cp.kubectl("delete", "pod", *names, "--wait=false")

    async def torn_down() -> bool:
        pods = await node.pods()
        dirs = [node.root_dir / "pods" / uid for uid in uids]
        return not any(n in pods for n in names) and not any(d.exists() for d in dirs)

    await wait_until(torn_down, timeout=60, message=f"pods {', '.join(names)} torn down")


def token_review(cp: ControlPlane, token: str, audiences: list[str] | None = None) -> Any:
    review: dict[str, Any] = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": token},
    }
    if audiences:
        review["spec"]["audiences"] = audiences
    done = cp.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["status"]


def assert_token_is_the_pods(cp: ControlPlane, token: str, pod: dict[str, Any], aud: str) -> None:
    status = token_review(cp, token, [aud] if aud else None)
    assert status.get("authenticated") is True, status
    assert status["user"]["username"] == "system:serviceaccount:default:default"
    extra = status["user"].get("extra", {})
    assert extra.get("authentication.kubernetes.io/pod-name") == [pod["metadata"]["name"]]
    assert extra.get("authentication.kubernetes.io/pod-uid") == [pod["metadata"]["uid"]]


async def env_of(node: Node, name: str) -> dict[str, str]:
    async with node.client() as client:
        result = await client.exec("default", name, "app", ["env"], timeout=10)
    assert result.exit_code == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.decode().splitlines() if "=" in line)


async def read_in_container(node: Node, name: str, path: str) -> str:
    async with node.client() as client:
        result = await client.exec("default", name, "app", ["cat", path], timeout=10)
    assert result.exit_code == 0, result.stderr
    return result.stdout.decode()


async def check_pod_reads_the_api(cp: ControlPlane, node: Node, name: str) -> None:
    apply(cp, OBJECTS.format(name=name))
    apply(cp, POD.format(name=name, node=node.node_name, audience=AUDIENCE))
    try:
        await running_on_node(node, name)
        api_pod = kubectl_json(cp, "get", "pod", name)
        uid = api_pod["metadata"]["uid"]
        [access] = [v for v in api_pod["spec"]["volumes"] if v["name"].startswith("kube-api")]

        env = await env_of(node, name)
        assert env["PASSWORD"] == "hunter2"
        assert env["GREETING"] == "hello"
        assert env["greeting"] == "hello" and env["MODE"] == "fast"
        assert env["DB_user"] == "admin" and env["DB_password"] == "hunter2"
        assert "OPTIONAL" not in env and "1st" not in env
        skipped = [
            e
            for e in await node.events()
            if e["reason"] == "InvalidEnvironmentVariableNames"
            and e.get("involvedObject", {}).get("name") == name
        ]
        assert skipped and skipped[0]["message"] == (
            f"Keys [1st] from the EnvFrom configMap default/{name}-config were skipped since "
            "they are considered invalid environment variable names."
        )

        cfg = volume_dir(node, uid, "kubernetes.io~configmap", "cfg")
        creds = volume_dir(node, uid, "kubernetes.io~secret", "creds")
        vault = volume_dir(node, uid, "kubernetes.io~projected", "vault-token")
        sa = volume_dir(node, uid, "kubernetes.io~projected", access["name"])
        assert (cfg / "conf" / "greeting.txt").read_text() == "hello"
        assert os.readlink(cfg / "conf") == "..data/conf"  # the atomic writer's layout
        assert (creds / "password").read_text() == "hunter2"
        assert stat.S_IMODE(os.stat(creds / "password").st_mode) == 0o400
        assert (sa / "namespace").read_text() == "default"
        assert (sa / "ca.crt").read_bytes() == cp.ca_pem
        if node.runtime != "fake":  # the same files, seen from inside the container
            assert await read_in_container(node, name, "/etc/app/conf/greeting.txt") == "hello"
            assert await read_in_container(node, name, "/etc/creds/user") == "admin"
            in_container = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
            assert await read_in_container(node, name, in_container) == "default"

        assert_token_is_the_pods(cp, (sa / "token").read_text(), api_pod, "")
        assert_token_is_the_pods(cp, (vault / "token").read_text(), api_pod, AUDIENCE)
        # a token for one audience is refused for another
        assert not token_review(cp, (vault / "token").read_text()).get("authenticated")
    finally:
        await delete_pods(cp, node, name)


async def test_configmap_secret_env_and_tokens_on_the_simulated_runtime(
    control_plane: ControlPlane, fake_node: Node
) -> None:
    await check_pod_reads_the_api(control_plane, fake_node, "reads-api")


async def test_configmap_secret_env_and_tokens_on_the_native_runtime(
    control_plane: ControlPlane, native_node: Node
) -> None:
    await check_pod_reads_the_api(control_plane, native_node, "reads-api-native")


async def test_an_updated_configmap_reaches_the_mounted_file(
    control_plane: ControlPlane, fake_node: Node
) -> None:
    cp, name = control_plane, "follows-config"
    apply(cp, OBJECTS.format(name=name))
    apply(cp, POD.format(name=name, node=fake_node.node_name, audience=AUDIENCE))
    try:
        await running_on_node(fake_node, name)
        uid = kubectl_json(cp, "get", "pod", name)["metadata"]["uid"]
        mounted = volume_dir(fake_node, uid, "kubernetes.io~configmap", "cfg")
        assert (mounted / "conf" / "greeting.txt").read_text() == "hello"
        before = os.readlink(mounted / "..data")
        patch = json.dumps({"data": {"greeting": "bonjour"}})
        done = cp.kubectl("patch", "configmap", f"{name}-config", "--type=merge", "-p", patch)
        assert done.returncode == 0, done.stderr

        def updated() -> bool:
            return (mounted / "conf" / "greeting.txt").read_text() == "bonjour"

        # the kubelet's resync is a minute with 10 % jitter; the copy it reads is fresh. A
        # read that resolved ..data just before the swap may find the old generation gone
        # (as with the kubelet's AtomicWriter): that is "not yet", not a failure
        await wait_until(
            updated,
            timeout=100,
            message="the new value in the mounted file",
            ignoring=(FileNotFoundError,),
        )
        assert os.readlink(mounted / "..data") != before  # swapped, not edited in place
    finally:
        await delete_pods(cp, fake_node, name)


async def test_a_missing_configmap_keeps_its_pods_waiting_and_others_run(
    control_plane: ControlPlane, fake_node: Node
) -> None:
    cp, node = control_plane, fake_node.node_name
    missing = "not-there-yet"
    volume_pod = f"""
apiVersion: v1
kind: Pod
metadata: {{name: mounts-missing, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - {{name: app, image: busybox:1.36, command: [sleep, "3600"],
        volumeMounts: [{{name: cfg, mountPath: /etc/cfg}}]}}
  volumes:
    - {{name: cfg, configMap: {{name: {missing}}}}}
"""
    env_pod = f"""
apiVersion: v1
kind: Pod
metadata: {{name: env-missing, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: busybox:1.36
      command: [sleep, "3600"]
      env: [{{name: X, valueFrom: {{configMapKeyRef: {{name: {missing}, key: k}}}}}}]
"""
    fine_pod = f"""
apiVersion: v1
kind: Pod
metadata: {{name: unaffected, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers: [{{name: app, image: busybox:1.36, command: [sleep, "3600"]}}]
"""
    for text in (volume_pod, env_pod, fine_pod):
        apply(cp, text)
    try:
        await running_on_node(fake_node, "unaffected")

        expected = f'MountVolume.SetUp failed for volume "cfg" : configmap "{missing}" not found'

        async def failed_mount() -> bool:
            # the first attempts may be refused (403) until the Node authorizer's graph
            # links the new pod to its node; then the 404 is what the kubelet reports
            return any(
                event.get("involvedObject", {}).get("name") == "mounts-missing"
                and event["reason"] == "FailedMount"
                and event["message"] == expected
                for event in await fake_node.events()
            )

        await wait_until(failed_mount, timeout=60, message=f"a FailedMount event: {expected}")

        async def config_error() -> dict[str, Any] | None:
            pod = (await fake_node.pods()).get("env-missing")
            if pod is None:
                return None
            waiting = container_status(pod, "app").get("state", {}).get("waiting", {})
            wanted = {
                "reason": "CreateContainerConfigError",
                "message": f'configmap "{missing}" not found',
            }
            return waiting if waiting == wanted else None

        await wait_until(config_error, timeout=60, message="CreateContainerConfigError")
        assert running((await fake_node.pods())["unaffected"], "app")

        apply(
            cp, f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {missing}}}\ndata: {{k: v}}\n"
        )
        await running_on_node(fake_node, "mounts-missing")
        await running_on_node(fake_node, "env-missing")
    finally:
        await delete_pods(cp, fake_node, "mounts-missing", "env-missing", "unaffected")
        cp.kubectl("delete", "configmap", missing, "--wait=false")
