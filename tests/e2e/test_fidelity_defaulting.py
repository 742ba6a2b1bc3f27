"""A static pod with few fields, on the native runtime, reads as an API server would store it.

``minikubelet get pods -o json`` shows the defaulted spec (policies, pull policy, probe
timings, port protocol, requests from limits, an emptyDir for a volume without source, the
downward API's file mode); the QoS class is computed from the defaulted pod (a request
rounded up to the limit makes it Guaranteed); the container sees what the spec says; and
the same manifest with its defaults spelled out is the same pod, so rewriting it restarts
nothing (the config hash and the containers' spec hashes are those of the defaulted pod).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import yaml

from tests.e2e.node import Node, container_status, running, runtime_node
from tests.e2e.support import acli, exec_in
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime

NODE_NAME = "defaulting"

MINIMAL = """\
apiVersion: v1
kind: Pod
metadata:
  name: defaulted
spec:
  containers:
  - name: app
    image: busybox:1.36
    command: [sh, -c, "echo written > /scratch/mark && exec sleep 3600"]
    ports: [{containerPort: 8080}]
    readinessProbe:
      exec: {command: [cat, /scratch/mark]}
    resources:
      limits: {cpu: 100m, memory: 64Mi}
      requests: {cpu: "0.0995"}
    env:
    - name: MEMORY_REQUEST
      valueFrom: {resourceFieldRef: {resource: requests.memory}}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts:
    - {name: scratch, mountPath: /scratch}
    - {name: podinfo, mountPath: /etc/podinfo}
  volumes:
  - name: scratch
  - name: podinfo
    downwardAPI:
      items: [{path: name, fieldRef: {fieldPath: metadata.name}}]
"""

MARKER = """\
apiVersion: v1
kind: Pod
metadata:
  name: marker
spec:
  restartPolicy: Never
  containers: [{name: done, image: busybox:1.36, command: ["true"]}]
"""


def spelled_out() -> str:
    """MINIMAL with the defaults the API server would set written into it."""
    pod: dict[str, Any] = yaml.safe_load(MINIMAL)
    spec = pod["spec"]
    spec.update(
        restartPolicy="Always",
        dnsPolicy="ClusterFirst",
        schedulerName="default-scheduler",
        terminationGracePeriodSeconds=30,
        securityContext={},
    )
    (app,) = spec["containers"]
    app.update(imagePullPolicy="IfNotPresent", terminationMessagePolicy="File")
    app["ports"][0]["protocol"] = "TCP"
    app["readinessProbe"].update(timeoutSeconds=1, periodSeconds=10, failureThreshold=3)
    app["resources"]["requests"] = {"cpu": "100m", "memory": "64Mi"}
    app["env"][1]["valueFrom"]["fieldRef"]["apiVersion"] = "v1"
    spec["volumes"][0]["emptyDir"] = {}
    spec["volumes"][1]["downwardAPI"]["defaultMode"] = 0o644
    return yaml.safe_dump(pod)


@pytest.fixture(scope="module")
async def defaulting_node(
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    async with runtime_node(
        tmp_path_factory.mktemp("defaulting-node"), native_runtime.endpoint, NODE_NAME
    ) as node:
        yield node
    assert "Traceback" not in native_runtime.log(), native_runtime.log()[-4000:]


async def get_pods_json(node: Node) -> dict[str, dict[str, Any]]:
    result = await acli(node, "get", "pods", "-o", "json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["kind"] == "PodList"
    return {item["metadata"]["name"]: item for item in listed["items"]}


async def test_a_minimal_static_pod_is_defaulted(defaulting_node: Node) -> None:
    node = defaulting_node
    node.add_manifest("defaulted.yaml", MINIMAL)
    await node.wait_pod("defaulted", lambda p: running(p, "app"), timeout=90)
    pod = (await get_pods_json(node))[node.pod_name("defaulted")]
    spec = pod["spec"]
    assert {
        key: spec.get(key)
        for key in (
            "restartPolicy",
            "dnsPolicy",
            "schedulerName",
            "enableServiceLinks",
            "terminationGracePeriodSeconds",
            "securityContext",
        )
    } == {
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "enableServiceLinks": True,
        "terminationGracePeriodSeconds": 30,
        "securityContext": {},
    }
    (app,) = spec["containers"]
    assert (
        app["imagePullPolicy"],
        app["terminationMessagePath"],
        app["terminationMessagePolicy"],
    ) == ("IfNotPresent", "/dev/termination-log", "File")
    assert app["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    assert app["readinessProbe"] == {
        "exec": {"command": ["cat", "/scratch/mark"]},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }
    assert app["resources"] == {
        "limits": {"cpu": "100m", "memory": "64Mi"},
        "requests": {"cpu": "100m", "memory": "64Mi"},
    }
    assert app["env"][1]["valueFrom"]["fieldRef"] == {
        "apiVersion": "v1",
        "fieldPath": "metadata.name",
    }
    assert spec["volumes"] == [
        {"name": "scratch", "emptyDir": {}},
        {
            "name": "podinfo",
            "downwardAPI": {
                "items": [
                    {"path": "name", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
                ],
                "defaultMode": 420,
            },
        },
    ]
    # the QoS class of the defaulted pod: the request rounded up to a thousandth is the limit
    assert pod["status"]["qosClass"] == "Guaranteed"

    # what the container sees is what the spec says
    out, _, code = await exec_in(
        node,
        "defaulted",
        "app",
        "sh",
        "-c",
        "echo $MEMORY_REQUEST; stat -L -c %a /etc/podinfo/name; cat /scratch/mark",
    )
    assert (code, out.split()) == (0, [str(64 * 1024 * 1024), "644", "written"])

    # the same pod with its defaults written out is the same pod: nothing restarts
    before = container_status(pod, "app")
    node.add_manifest("defaulted.yaml", spelled_out())
    node.add_manifest("marker.yaml", MARKER)  # seen only once the rewrite above was listed
    await node.wait_pod("marker", lambda p: True, timeout=30)
    after = (await get_pods_json(node))[node.pod_name("defaulted")]
    assert "deletionTimestamp" not in after["metadata"], "the pod was replaced"
    assert after["metadata"]["uid"] == pod["metadata"]["uid"]
    assert (
        after["metadata"]["annotations"]["kubernetes.io/config.hash"]
        == pod["metadata"]["annotations"]["kubernetes.io/config.hash"]
    )
    now = container_status(after, "app")
    assert (now["containerID"], now["restartCount"]) == (before["containerID"], 0)
