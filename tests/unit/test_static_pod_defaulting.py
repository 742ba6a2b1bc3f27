"""Static pods are defaulted as the API server defaults a v1 Pod, before anything reads them.

What a user sees of it: the pod the file and URL sources hand on carries the defaults; its
UID (``kubernetes.io/config.hash``, the mirror pod's mark), its containers' spec hashes and
its QoS class are those of the defaulted pod, so a manifest that spells a default out and
one that leaves it implicit are the same pod; the mirror pod carries the defaulted spec.
"""

from __future__ import annotations

from typing import Any

from minikubelet.api.pod import Pod
from minikubelet.config.manifest import apply_static_defaults, decode_manifest
from minikubelet.config.types import CONFIG_HASH_ANNOTATION, FILE_SOURCE, HTTP_SOURCE
from minikubelet.kuberuntime.hash import hash_container
from minikubelet.mirror import mirror_pod
from minikubelet.status.qos import compute_qos_class

MINIMAL = b"""\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: app
    image: busybox
    ports: [{containerPort: 80}]
    livenessProbe:
      httpGet: {port: 80}
"""

SPELLED_OUT = b"""\
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  restartPolicy: Always
  dnsPolicy: ClusterFirst
  schedulerName: default-scheduler
  enableServiceLinks: true
  terminationGracePeriodSeconds: 30
  securityContext: {}
  containers:
  - name: app
    image: busybox
    imagePullPolicy: Always
    terminationMessagePath: /dev/termination-log
    terminationMessagePolicy: File
    resources: {}
    ports: [{containerPort: 80, protocol: TCP}]
    livenessProbe:
      httpGet: {port: 80, path: /, scheme: HTTP}
      timeoutSeconds: 1
      periodSeconds: 10
      successThreshold: 1
      failureThreshold: 3
"""


def static(data: bytes, path: str = "/etc/kubernetes/manifests/web.yaml") -> dict[str, Any]:
    (decoded,) = decode_manifest(data, path)
    return apply_static_defaults(decoded, node_name="node1", source=FILE_SOURCE, source_path=path)


def test_a_file_pod_carries_the_api_defaults() -> None:
    spec = static(MINIMAL)["spec"]
    assert {key: spec[key] for key in ("restartPolicy", "dnsPolicy", "schedulerName")} == {
        "restartPolicy": "Always",
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
    }
    assert (spec["enableServiceLinks"], spec["terminationGracePeriodSeconds"]) == (True, 30)
    assert spec["securityContext"] == {}
    (app,) = spec["containers"]
    assert app["imagePullPolicy"] == "Always"
    assert app["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert app["livenessProbe"] == {
        "httpGet": {"port": 80, "path": "/", "scheme": "HTTP"},
        "timeoutSeconds": 1,
        "periodSeconds": 10,
        "successThreshold": 1,
        "failureThreshold": 3,
    }


def test_url_pods_are_defaulted_too() -> None:
    data = b"""\
apiVersion: v1
kind: PodList
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: a}
  spec:
    containers: [{name: c, image: "busybox:1.36"}]
    volumes: [{name: scratch}, {name: conf, configMap: {name: conf}}]
"""
    (decoded,) = decode_manifest(data, "http://config.example/pods", allow_list=True)
    out = apply_static_defaults(
        decoded, node_name="n", source=HTTP_SOURCE, source_path="http://config.example/pods"
    )
    assert out["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert out["spec"]["volumes"] == [
        {"name": "scratch", "emptyDir": {}},
        {"name": "conf", "configMap": {"name": "conf", "defaultMode": 420}},
    ]


def test_spelling_a_default_out_is_the_same_static_pod() -> None:
    """The UID (and so ``config.hash``) hashes the defaulted pod, as the kubelet's does."""
    implicit, explicit = static(MINIMAL), static(SPELLED_OUT)
    assert implicit["metadata"]["uid"] == explicit["metadata"]["uid"]
    assert (
        implicit["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
        == explicit["metadata"]["annotations"][CONFIG_HASH_ANNOTATION]
    )
    assert implicit == explicit
    changed = static(MINIMAL.replace(b"image: busybox", b"image: busybox:1.36"))
    assert changed["metadata"]["uid"] != implicit["metadata"]["uid"]


def test_container_hash_is_the_defaulted_containers() -> None:
    """Writing out a probe's default timings does not restart the container."""
    (implicit,) = Pod.from_dict(static(MINIMAL)).spec.containers
    (explicit,) = Pod.from_dict(static(SPELLED_OUT)).spec.containers
    assert hash_container(implicit) == hash_container(explicit)


def test_qos_class_is_the_defaulted_pods() -> None:
    """Requests are rounded up to a thousandth before the class is computed: 99.5m is 100m."""
    data = b"""\
apiVersion: v1
kind: Pod
metadata: {name: exact}
spec:
  containers:
  - name: app
    image: busybox:1.36
    resources:
      limits: {cpu: 100m, memory: 64Mi}
      requests: {cpu: "0.0995"}
"""
    pod = Pod.from_dict(static(data))
    assert pod.spec.containers[0].resources == {
        "limits": {"cpu": "100m", "memory": "64Mi"},
        "requests": {"cpu": "100m", "memory": "64Mi"},
    }
    assert compute_qos_class(pod).value == "Guaranteed"


def test_the_mirror_pod_carries_the_defaulted_spec() -> None:
    pod = Pod.from_dict(static(MINIMAL))
    mirror = mirror_pod(pod, "node1", "node-uid")
    assert mirror["spec"]["restartPolicy"] == "Always"
    assert mirror["spec"]["containers"][0]["terminationMessagePolicy"] == "File"
    assert mirror["metadata"]["annotations"]["kubernetes.io/config.mirror"] == str(pod.uid)
    assert pod.uid == static(SPELLED_OUT)["metadata"]["uid"]
