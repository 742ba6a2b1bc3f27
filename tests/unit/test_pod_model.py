"""Pod.from_dict (defaults, type errors), the spec hash, and the labels <-> CRI round trip."""

from __future__ import annotations

import copy
import datetime as dt
import json
from typing import Any

import pytest
import yaml

from minikubelet.api.pod import (
    Container,
    Pod,
    PullPolicy,
    RestartPolicy,
    TerminationMessagePolicy,
)
from minikubelet.container.status import ContainerState, NamespaceMode, SandboxState
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kuberuntime import labels as lbl
from minikubelet.kuberuntime import status as crist
from minikubelet.kuberuntime.hash import canonical_container, hash_container, normalize_hash

DIGEST = "sha256:" + "ab" * 32

MANIFEST = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  uid: 0b5c3d6e-1111-2222-3333-444455556666
  labels: {app: web}
  annotations: {note: hi}
spec:
  initContainers:
  - name: proxy
    image: envoyproxy/envoy:v1.30.0
    restartPolicy: Always
  containers:
  - name: app
    image: nginx
    command: [nginx, -g, daemon off;]
    ports:
    - containerPort: 80
    livenessProbe:
      httpGet: {path: /, port: 80}
      periodSeconds: 5
    lifecycle:
      preStop:
        exec: {command: [sleep, "1"]}
    resources:
      limits: {memory: 64Mi}
    futureField: {kept: true}
"""


def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST)
    assert isinstance(data, dict)
    return data


# --- from_dict -----------------------------------------------------------------------------


def test_defaults_are_applied() -> None:
    pod = Pod.from_dict(manifest())
    assert pod.name == "web" and pod.namespace == "default"
    assert pod.uid == "0b5c3d6e-1111-2222-3333-444455556666"
    assert pod.full_name == "web_default" and str(pod) == "default/web"
    spec = pod.spec
    assert spec.restart_policy is RestartPolicy.ALWAYS
    assert spec.termination_grace_period_seconds == 30
    assert spec.dns_policy == "ClusterFirst"
    assert not spec.host_network and spec.enable_service_links
    app = spec.containers[0]
    assert app.image_pull_policy is PullPolicy.ALWAYS  # no tag means latest
    assert app.termination_message_path == "/dev/termination-log"
    assert app.termination_message_policy is TerminationMessagePolicy.FILE
    assert app.ports[0].protocol == "TCP" and app.ports[0].container_port == 80
    probe = app.liveness_probe
    assert probe is not None and probe.handler == "httpGet"
    assert (probe.period_seconds, probe.timeout_seconds, probe.failure_threshold) == (5, 1, 3)
    assert app.pre_stop == {"exec": {"command": ["sleep", "1"]}}
    assert not app.is_restartable
    proxy = spec.init_containers[0]
    assert proxy.is_restartable and proxy.image_pull_policy is PullPolicy.IF_NOT_PRESENT


def test_raw_keeps_everything() -> None:
    data = manifest()
    pod = Pod.from_dict(data)
    assert pod.raw == data
    assert pod.spec.containers[0].raw["futureField"] == {"kept": True}
    assert pod.spec.containers[0].resources == {"limits": {"memory": "64Mi"}}


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("busybox", PullPolicy.ALWAYS),
        ("busybox:latest", PullPolicy.ALWAYS),
        ("busybox:1.36", PullPolicy.IF_NOT_PRESENT),
        (f"busybox@{DIGEST}", PullPolicy.IF_NOT_PRESENT),
        (f"busybox:latest@{DIGEST}", PullPolicy.ALWAYS),
        ("127.0.0.1:5000/app:v2", PullPolicy.IF_NOT_PRESENT),
        ("NOT A REFERENCE", PullPolicy.IF_NOT_PRESENT),
    ],
)
def test_image_pull_policy_default(image: str, policy: PullPolicy) -> None:
    assert Container.from_dict({"name": "c", "image": image}).image_pull_policy is policy


def test_explicit_pull_policy_wins() -> None:
    c = Container.from_dict({"name": "c", "image": "busybox", "imagePullPolicy": "Never"})
    assert c.image_pull_policy is PullPolicy.NEVER


def test_yaml_null_means_unset_and_namespace_is_kept() -> None:
    pod = Pod.from_dict(
        {
            "metadata": {"name": "p", "namespace": "kube-system", "labels": None},
            "spec": {"restartPolicy": None, "containers": [{"name": "c", "image": "x:1"}]},
        }
    )
    assert pod.namespace == "kube-system" and pod.metadata.labels == {}
    assert pod.spec.restart_policy is RestartPolicy.ALWAYS


def test_deletion_timestamp_decoded_by_yaml() -> None:
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    pod = Pod.from_dict(
        {
            "metadata": {"name": "p", "deletionTimestamp": when},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]},
        }
    )
    assert pod.metadata.deletion_timestamp == "2024-05-01T12:00:00Z"
    assert pod.is_deleting


def test_model_is_frozen_and_hashable() -> None:
    pod = Pod.from_dict(manifest())
    with pytest.raises(AttributeError):
        pod.spec.restart_policy = RestartPolicy.NEVER  # type: ignore[misc]
    assert hash(pod) == hash(Pod.from_dict(manifest()))
    assert pod == Pod.from_dict(manifest())


def _with(path: str, value: object) -> dict[str, Any]:
    data = manifest()
    node: Any = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("metadata", ["x"], "metadata: expected a mapping, got list"),
        ("metadata.name", 7, "metadata.name: expected a string, got int"),
        ("metadata.labels", {"v": 1}, "metadata.labels.v: expected a string, got int"),
        ("spec.containers", {"name": "x"}, "spec.containers: expected a list, got mapping"),
        ("spec.containers.0", "nginx", "spec.containers[0]: expected a mapping, got str"),
        ("spec.containers.0.image", 3, "spec.containers[0].image: expected a string, got int"),
        ("spec.containers.0.command", "nginx", "spec.containers[0].command: expected a list"),
        ("spec.containers.0.args", ["a", 1], "spec.containers[0].args[1]: expected a string"),
        ("spec.containers.0.ports", [{"containerPort": "80"}], "ports[0].containerPort"),
        ("spec.containers.0.livenessProbe", "yes", "spec.containers[0].livenessProbe:"),
        ("spec.containers.0.stdin", "true", "spec.containers[0].stdin: expected a boolean"),
        ("spec.containers.0.imagePullPolicy", "Sometimes", "imagePullPolicy: 'Sometimes'"),
        ("spec.initContainers.0.restartPolicy", 1, "spec.initContainers[0].restartPolicy"),
        ("spec.restartPolicy", "Sometimes", "spec.restartPolicy: 'Sometimes' is not one of"),
        ("spec.hostNetwork", "yes", "spec.hostNetwork: expected a boolean, got str"),
        ("spec.terminationGracePeriodSeconds", "30", "terminationGracePeriodSeconds: expected"),
        ("spec.terminationGracePeriodSeconds", True, "expected an integer, got bool"),
        ("spec.volumes", [1], "spec.volumes[0]: expected a mapping, got int"),
    ],
)
def test_wrong_types_name_the_field(path: str, value: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        Pod.from_dict(_with(path, value))
    assert message in str(err.value)
    assert str(err.value).split(":")[0].replace("[", ".").replace("]", "").startswith(path)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ValueError, match="expected a mapping, got list"):
        Pod.from_dict([])


# --- the spec hash -------------------------------------------------------------------------


def _container(**overrides: Any) -> Container:
    body: dict[str, Any] = {"name": "app", "image": "nginx:1.25", "command": ["nginx"]}
    body.update(overrides)
    return Container.from_dict(body)


def test_hash_is_stable_hex() -> None:
    first = hash_container(_container())
    assert first == hash_container(_container())
    assert first == normalize_hash(first)
    assert int(first, 16) < 1 << 64


def test_hash_ignores_spelled_out_defaults_and_empty_values() -> None:
    implicit = _container()
    explicit = _container(
        imagePullPolicy="IfNotPresent",
        terminationMessagePath="/dev/termination-log",
        terminationMessagePolicy="File",
        stdin=False,
        env=[],
        workingDir="",
        securityContext=None,
    )
    assert hash_container(implicit) == hash_container(explicit)


def test_hash_ignores_resources_only() -> None:
    base = hash_container(_container())
    assert hash_container(_container(resources={"limits": {"cpu": "1"}})) == base
    assert hash_container(_container(command=["nginx", "-g"])) != base
    assert hash_container(_container(image="nginx:1.26")) != base
    assert hash_container(_container(env=[{"name": "A", "value": "1"}])) != base
    assert hash_container(_container(args=[""])) != base  # an empty argument still counts


def test_canonical_form_is_json() -> None:
    body = canonical_container(_container(ports=[{"containerPort": 80}]))
    assert body["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert "resources" not in body
    json.dumps(body)


@pytest.mark.parametrize(
    ("text", "want"),
    [("00ff", "ff"), ("FF", "ff"), ("", ""), ("xyz", ""), ("0x1f", ""), ("1" * 17, "")],
)
def test_normalize_hash(text: str, want: str) -> None:
    assert normalize_hash(text) == want


# --- labels and the CRI round trip ---------------------------------------------------------


def _pod() -> Pod:
    data = manifest()
    data["metadata"]["deletionGracePeriodSeconds"] = 10
    return Pod.from_dict(data)


def test_sandbox_labels_and_annotations() -> None:
    pod = _pod()
    labels = lbl.new_pod_labels(pod)
    assert labels == {
        "app": "web",
        "io.kubernetes.pod.name": "web",
        "io.kubernetes.pod.namespace": "default",
        "io.kubernetes.pod.uid": str(pod.uid),
    }
    assert lbl.new_pod_annotations(pod) == {"note": "hi"}
    info = lbl.pod_sandbox_info_from_labels(labels)
    assert (info.pod_name, info.pod_namespace, info.pod_uid) == ("web", "default", pod.uid)
    assert info.labels == {"app": "web"}


def test_container_annotations_as_the_kubelet_writes_them() -> None:
    pod = _pod()
    app = pod.spec.containers[0]
    annotations = lbl.new_container_annotations(
        app, pod, 4, extra={lbl.CONTAINER_HASH_ANNOTATION: "x"}
    )
    assert annotations[lbl.CONTAINER_HASH_ANNOTATION] == hash_container(app)
    assert annotations["io.kubernetes.container.restartCount"] == "4"
    assert annotations["io.kubernetes.container.terminationMessagePath"] == "/dev/termination-log"
    assert annotations["io.kubernetes.container.terminationMessagePolicy"] == "File"
    assert annotations["io.kubernetes.pod.terminationGracePeriod"] == "30"
    assert annotations["io.kubernetes.pod.deletionGracePeriod"] == "10"
    assert json.loads(annotations["io.kubernetes.container.preStopHandler"]) == {
        "exec": {"command": ["sleep", "1"]}
    }
    assert json.loads(annotations["io.kubernetes.container.ports"]) == [
        {"containerPort": 80, "protocol": "TCP"}
    ]
    info = lbl.container_info_from_annotations(annotations)
    assert info.pod_deletion_grace_period == 10 and info.pod_termination_grace_period == 30
    assert info.ports == ({"containerPort": 80, "protocol": "TCP"},)


def _cri_container(pod: Pod, name: str, restart_count: int, **fields: Any) -> pb.ContainerStatus:
    spec = next(c for c in (*pod.spec.init_containers, *pod.spec.containers) if c.name == name)
    return pb.ContainerStatus(
        id=f"cid-{name}-{restart_count}",
        metadata=pb.ContainerMetadata(name=name, attempt=restart_count),
        image=pb.ImageSpec(image=spec.image),
        image_ref="docker.io/library/nginx@" + DIGEST,
        labels=lbl.new_container_labels(spec, pod),
        annotations=lbl.new_container_annotations(spec, pod, restart_count),
        **fields,
    )


def test_labels_round_trip_through_cri() -> None:
    pod = _pod()
    raw = _cri_container(
        pod,
        "app",
        3,
        state=pb.CONTAINER_EXITED,
        created_at=10,
        started_at=20,
        finished_at=30,
        exit_code=137,
        reason="OOMKilled",
        message="out of memory",
    )
    status = crist.container_status_from_cri(raw)
    assert status.name == "app" and status.id == "cid-app-3"
    assert status.hash == hash_container(pod.spec.containers[0])
    assert status.restart_count == 3
    assert status.state is ContainerState.EXITED
    assert (status.created_at, status.started_at, status.finished_at) == (10, 20, 30)
    assert (status.exit_code, status.reason, status.message) == (137, "OOMKilled", "out of memory")
    assert status.image == "nginx" and status.image_ref.endswith(DIGEST)
    labels = lbl.container_info_from_labels(raw.labels)
    assert (labels.container_name, labels.pod_name, labels.pod_uid) == ("app", "web", pod.uid)


def test_running_container_keeps_no_exit_fields() -> None:
    pod = _pod()
    raw = _cri_container(
        pod, "app", 0, state=pb.CONTAINER_RUNNING, started_at=5, exit_code=1, reason="x"
    )
    status = crist.container_status_from_cri(raw)
    assert status.state is ContainerState.RUNNING and status.started_at == 5
    assert (status.exit_code, status.reason, status.finished_at) == (0, "", 0)
    created = crist.container_status_from_cri(
        _cri_container(pod, "app", 0, state=pb.CONTAINER_CREATED, started_at=5)
    )
    assert created.started_at == 0


def test_unreadable_annotations_read_as_unset() -> None:
    raw = pb.ContainerStatus(
        id="c1",
        metadata=pb.ContainerMetadata(name="other"),
        state=pb.CONTAINER_RUNNING,
        annotations={
            lbl.CONTAINER_HASH_ANNOTATION: "not-hex",
            lbl.CONTAINER_RESTART_COUNT_ANNOTATION: "three",
            lbl.CONTAINER_PORTS_ANNOTATION: "{broken",
        },
    )
    status = crist.container_status_from_cri(raw)
    assert status.name == "other"  # no label: the CRI metadata name
    assert status.hash == "" and status.restart_count == 0
    assert lbl.container_info_from_annotations(dict(raw.annotations)).ports == ()


def test_pod_status_from_cri() -> None:
    pod = _pod()
    old = pb.PodSandboxStatus(
        id="sb-old",
        metadata=pb.PodSandboxMetadata(name="web", uid=str(pod.uid), namespace="default"),
        state=pb.SANDBOX_NOTREADY,
        created_at=1,
    )
    new = pb.PodSandboxStatus(
        id="sb-new",
        metadata=pb.PodSandboxMetadata(
            name="web", uid=str(pod.uid), namespace="default", attempt=1
        ),
        state=pb.SANDBOX_READY,
        created_at=2,
        network=pb.PodSandboxNetworkStatus(ip="10.1.0.5", additional_ips=[pb.PodIP(ip="fd00::5")]),
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(options=pb.NamespaceOption(network=pb.NODE))
        ),
        labels=lbl.new_pod_labels(pod),
    )
    status = crist.from_cri(
        uid=pod.uid,
        name=pod.name,
        namespace=pod.namespace,
        sandboxes=[old, new],
        containers=[
            _cri_container(pod, "app", 0, state=pb.CONTAINER_EXITED, created_at=5),
            _cri_container(pod, "app", 1, state=pb.CONTAINER_RUNNING, created_at=9),
        ],
    )
    assert [s.id for s in status.sandbox_statuses] == ["sb-new", "sb-old"]
    latest = status.latest_sandbox()
    assert latest is not None and latest.state is SandboxState.READY and latest.attempt == 1
    assert latest.network_namespace is NamespaceMode.NODE
    assert status.ips == ("10.1.0.5", "fd00::5")
    assert status.sandbox_statuses[1].ip is None  # no network status reported
    app = status.find_container_status_by_name("app")
    assert app is not None and app.restart_count == 1 and app.state is ContainerState.RUNNING


def test_pod_ips_only_from_a_ready_newest_sandbox() -> None:
    dead = pb.PodSandboxStatus(
        id="sb", state=pb.SANDBOX_NOTREADY, network=pb.PodSandboxNetworkStatus(ip="10.1.0.5")
    )
    status = crist.from_cri(uid="u", sandboxes=[dead])
    assert status.ips == ()
    assert status.sandbox_statuses[0].ip == "10.1.0.5"
    assert status.sandbox_statuses[0].network_namespace is NamespaceMode.POD


def test_round_trip_feeds_the_decision_core() -> None:
    """A container created from the spec is not seen as changed; an edited spec is."""
    from minikubelet.kuberuntime.actions import container_changed

    pod = _pod()
    status = crist.container_status_from_cri(
        _cri_container(pod, "app", 0, state=pb.CONTAINER_RUNNING)
    )
    assert not container_changed(pod.spec.containers[0], status)
    edited = copy.deepcopy(manifest())
    edited["spec"]["containers"][0]["command"] = ["nginx"]
    assert container_changed(Pod.from_dict(edited).spec.containers[0], status)
