"""Pod validation: invalid pods and the messages Kubernetes gives; valid pods stay valid."""

from __future__ import annotations

import copy
import functools
import operator
import time
from pathlib import Path
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.api.validation import PodValidationError
from minikubelet.config.manifest import apply_static_defaults, decode_manifest

ROOT = Path(__file__).resolve().parents[2]
LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def valid() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "prod", "labels": {"app": "web"}},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "64Mi"}}],
            "initContainers": [
                {"name": "setup", "image": "busybox:1.36", "command": ["true"]},
                {
                    "name": "proxy",
                    "image": "busybox:1.36",
                    "restartPolicy": "Always",
                    "readinessProbe": {"tcpSocket": {"port": 15000}},
                },
            ],
            "containers": [
                {
                    "name": "app",
                    "image": "busybox:1.36",
                    "ports": [
                        {"name": "http", "containerPort": 80},
                        {"containerPort": 53, "protocol": "UDP", "hostPort": 5353},
                    ],
                    "env": [
                        {"name": "MY_ENV.NAME-1", "value": "x"},
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    ],
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "32Mi"},
                        "limits": {"cpu": 1, "memory": "64Mi", "example.com/gpu": "1"},
                    },
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "lifecycle": {"preStop": {"sleep": {"seconds": 1}}},
                },
            ],
        },
    }


def edited(path: str, value: object) -> dict[str, Any]:
    """``valid()`` with the value at a dotted path (numbers index lists) replaced."""
    data = valid()
    keys: list[Any] = [int(key) if key.isdigit() else key for key in path.split(".")]
    node: Any = functools.reduce(operator.getitem, keys[:-1], data)
    node[keys[-1]] = value
    return data


def rejection(data: dict[str, Any]) -> str:
    with pytest.raises(PodValidationError) as caught:
        Pod.from_dict(data)
    return str(caught.value)


def test_the_valid_pod_is_valid() -> None:
    pod = Pod.from_dict(valid())
    assert pod.name == "web"


C0 = "spec.containers.0"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("metadata.name", "", "metadata.name: Required value: name or generateName is required"),
        (
            "metadata.name",
            "Web_1",
            'metadata.name: Invalid value: "Web_1": a lowercase RFC 1123 subdomain must consist'
            " of lower case alphanumeric characters, '-' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'example.com', regex used for validation is "
            r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
        (
            "metadata.name",
            "a" * 254,
            f'metadata.name: Invalid value: "{"a" * 254}": must be no more than 253 characters',
        ),
        (
            "metadata.namespace",
            "kube.system",
            f'metadata.namespace: Invalid value: "kube.system": {LABEL_MSG}',
        ),
        (
            "metadata.labels",
            {"app": "-bad"},
            'metadata.labels: Invalid value: "-bad": a valid label must be an empty string',
        ),
        (
            "metadata.labels",
            {"a/b/c": "x"},
            'metadata.labels: Invalid value: "a/b/c": a qualified name must consist',
        ),
        (f"{C0}.name", "", "spec.containers[0].name: Required value"),
        (f"{C0}.name", "App", f'spec.containers[0].name: Invalid value: "App": {LABEL_MSG}'),
        (
            f"{C0}.name",
            "a" * 64,
            f'spec.containers[0].name: Invalid value: "{"a" * 64}": must be no more than 63 '
            "characters",
        ),
        (f"{C0}.name", "setup", 'spec.initContainers[0].name: Duplicate value: "setup"'),
        (f"{C0}.image", "", "spec.containers[0].image: Required value"),
        (
            f"{C0}.image",
            " busybox",
            'spec.containers[0].image: Invalid value: " busybox": must not have leading or '
            "trailing whitespace",
        ),
        ("spec.containers", [], "spec.containers: Required value"),
        (
            f"{C0}.ports.0.containerPort",
            70000,
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 "
            "and 65535, inclusive",
        ),
        (
            f"{C0}.ports.0.containerPort",
            0,
            "spec.containers[0].ports[0].containerPort: Required value",
        ),
        (
            f"{C0}.ports.1.hostPort",
            -1,
            "spec.containers[0].ports[1].hostPort: Invalid value: -1: must be between 1 and 65535",
        ),
        (
            f"{C0}.ports.0.name",
            "a-very-long-port-name",
            'spec.containers[0].ports[0].name: Invalid value: "a-very-long-port-name": must be no '
            "more than 15 characters",
        ),
        (
            f"{C0}.ports.0.name",
            "8080",
            'spec.containers[0].ports[0].name: Invalid value: "8080": must contain at least one '
            "letter (a-z)",
        ),
        (
            f"{C0}.ports.0.name",
            "Http",
            'spec.containers[0].ports[0].name: Invalid value: "Http": must contain only '
            "alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ),
        (
            f"{C0}.ports.0.name",
            "my--port",
            'spec.containers[0].ports[0].name: Invalid value: "my--port": must not contain '
            "consecutive hyphens",
        ),
        (
            f"{C0}.ports.1",
            {"name": "http", "containerPort": 81},
            'spec.containers[0].ports[1].name: Duplicate value: "http"',
        ),
        (
            f"{C0}.ports.1.protocol",
            "ICMP",
            'spec.containers[0].ports[1].protocol: Unsupported value: "ICMP": supported values: '
            '"SCTP", "TCP", "UDP"',
        ),
        (
            f"{C0}.env.0.name",
            "1ST",
            'spec.containers[0].env[0].name: Invalid value: "1ST": a valid environment variable '
            "name must consist of alphabetic characters, digits, '_', '-', or '.', and must not "
            "start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex "
            "used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')",
        ),
        (
            f"{C0}.env.0.name",
            "A B",
            'spec.containers[0].env[0].name: Invalid value: "A B": a valid environment variable',
        ),
        (
            f"{C0}.env.0.name",
            "..",
            "spec.containers[0].env[0].name: Invalid value: \"..\": must not be '..'",
        ),
        (f"{C0}.env.0.name", None, "spec.containers[0].env[0].name: Required value"),
        (
            f"{C0}.env.1.value",
            "also",
            'spec.containers[0].env[1].valueFrom: Invalid value: "": may not be specified when '
            "`value` is not empty",
        ),
        (
            f"{C0}.env.1.valueFrom",
            {"fieldRef": {"fieldPath": "metadata.name"}, "secretKeyRef": {"key": "k"}},
            'spec.containers[0].env[1].valueFrom: Invalid value: "": may not have more than one '
            "field specified at a time",
        ),
        (
            f"{C0}.volumeMounts.0.name",
            "cache",
            'spec.containers[0].volumeMounts[0].name: Not found: "cache"',
        ),
        (
            f"{C0}.volumeMounts",
            [{"name": "data", "mountPath": "/d"}, {"name": "data", "mountPath": "/d"}],
            'spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/d": must be unique',
        ),
        (
            f"{C0}.volumeMounts.0.subPath",
            "../etc",
            'spec.containers[0].volumeMounts[0].subPath: Invalid value: "../etc": must not '
            "contain '..'",
        ),
        (
            "spec.volumes",
            [{"name": "data", "emptyDir": {}}, {"name": "data", "emptyDir": {}}],
            'spec.volumes[1].name: Duplicate value: "data"',
        ),
        (
            "spec.volumes",
            [{"name": "Data", "emptyDir": {}}],
            f'spec.volumes[0].name: Invalid value: "Data": {LABEL_MSG}',
        ),
        (
            "spec.volumes.0",
            {"name": "data", "emptyDir": {}, "hostPath": {"path": "/x"}},
            "spec.volumes[0].emptyDir: Forbidden: may not specify more than 1 volume type",
        ),
        (
            "spec.volumes.0.emptyDir.sizeLimit",
            "lots",
            'spec.volumes[0].emptyDir.sizeLimit: Invalid value: "lots": quantities must match',
        ),
        (
            f"{C0}.resources.requests.cpu",
            "1e999999999",
            'spec.containers[0].resources.requests[cpu]: Invalid value: "1e999999999": exponent '
            "out of range (at most 1000 in magnitude)",
        ),
        (
            f"{C0}.resources.limits.memory",
            "1Kb",
            'spec.containers[0].resources.limits[memory]: Invalid value: "1Kb": quantities must '
            "match the regular expression",
        ),
        (
            f"{C0}.resources.requests.cpu",
            "2",
            'spec.containers[0].resources.requests: Invalid value: "2": must be less than or '
            "equal to cpu limit of 1",
        ),
        (
            f"{C0}.resources.requests.memory",
            "-1Mi",
            'spec.containers[0].resources.requests[memory]: Invalid value: "-1Mi": must be greater '
            "than or equal to 0",
        ),
        (
            f"{C0}.resources.requests.cpus",
            "1",
            'spec.containers[0].resources.requests[cpus]: Invalid value: "cpus": must be a '
            "standard resource for containers",
        ),
        (
            f"{C0}.livenessProbe",
            {"periodSeconds": 5},
            "spec.containers[0].livenessProbe: Required value: must specify a handler type",
        ),
        (
            f"{C0}.livenessProbe",
            {"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}},
            "spec.containers[0].livenessProbe.tcpSocket: Forbidden: may not specify more than 1 "
            "handler type",
        ),
        (
            f"{C0}.livenessProbe",
            {"exec": {"command": ["true"]}, "successThreshold": 2},
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        ),
        (
            f"{C0}.livenessProbe",
            {"exec": {"command": ["true"]}, "periodSeconds": -1},
            "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater "
            "than or equal to 0",
        ),
        (
            f"{C0}.livenessProbe",
            {"exec": {}},
            "spec.containers[0].livenessProbe.exec.command: Required value",
        ),
        (
            f"{C0}.livenessProbe",
            {"httpGet": {"port": 0}},
            "spec.containers[0].livenessProbe.httpGet.port: Invalid value: 0: must be between 1 "
            "and 65535, inclusive",
        ),
        (
            f"{C0}.livenessProbe",
            {"tcpSocket": {"port": "8080"}},
            'spec.containers[0].livenessProbe.tcpSocket.port: Invalid value: "8080": must contain '
            "at least one letter (a-z)",
        ),
        (
            f"{C0}.lifecycle",
            {"postStart": {}},
            "spec.containers[0].lifecycle.postStart: Required value: must specify a handler type",
        ),
        (
            f"{C0}.lifecycle.preStop.sleep.seconds",
            31,
            "spec.containers[0].lifecycle.preStop.sleep: Invalid value: 31: must be non-negative "
            "and less than terminationGracePeriodSeconds (30)",
        ),
        (
            f"{C0}.restartPolicy",
            "Always",
            "spec.containers[0].restartPolicy: Forbidden: may not be set for non-init containers",
        ),
        (
            "spec.initContainers.0.livenessProbe",
            {"exec": {"command": ["true"]}},
            "spec.initContainers[0].livenessProbe: Forbidden: may not be set for init containers "
            "without restartPolicy=Always",
        ),
        (
            "spec.initContainers.0.restartPolicy",
            "Never",
            'spec.initContainers[0].restartPolicy: Unsupported value: "Never": supported values: '
            '"Always"',
        ),
        (
            "spec.dnsPolicy",
            "Cluster",
            'spec.dnsPolicy: Unsupported value: "Cluster": supported values: '
            '"ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"',
        ),
        (
            "spec.dnsPolicy",
            "None",
            "spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None",
        ),
        (
            "spec.activeDeadlineSeconds",
            0,
            "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, "
            "inclusive",
        ),
        (
            "spec.volumes.0",
            {"name": "data", "hostPath": {"path": "/x", "type": "Bogus"}},
            'spec.volumes[0].hostPath.type: Unsupported value: "Bogus": supported values: "", '
            '"BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", '
            '"FileOrCreate", "Socket"',
        ),
        (
            "spec.volumes.0",
            {"name": "data", "hostPath": {}},
            "spec.volumes[0].hostPath.path: Required value",
        ),
        ("spec.hostname", "My_Host", f'spec.hostname: Invalid value: "My_Host": {LABEL_MSG}'),
        (
            "spec.hostNetwork",
            True,
            "spec.containers[0].ports[1].hostPort: Invalid value: 5353: must match "
            "`containerPort` when `hostNetwork` is true",
        ),
        (
            "spec.ephemeralContainers",
            [{"name": "debug", "image": "busybox"}],
            "spec.ephemeralContainers: Forbidden: cannot be set on create",
        ),
        (
            "spec.securityContext",
            {"fsGroup": 2000, "fsGroupChangePolicy": "Sometimes"},
            'spec.securityContext.fsGroupChangePolicy: Unsupported value: "Sometimes": '
            'supported values: "Always", "OnRootMismatch"',
        ),
        (
            "spec.securityContext",
            {"fsGroup": -1},
            "spec.securityContext.fsGroup: Invalid value: -1: must be between 0 and "
            "2147483647, inclusive",
        ),
        (
            "spec.securityContext",
            {"supplementalGroups": [4000, 2**31]},
            "spec.securityContext.supplementalGroups[1]: Invalid value: 2147483648: must be "
            "between 0 and 2147483647, inclusive",
        ),
    ],
)
def test_invalid_pods_and_their_messages(path: str, value: object, message: str) -> None:
    reason = rejection(edited(path, value))
    assert reason.removeprefix("[").startswith(message) or f", {message}" in reason, reason


def test_a_volume_without_a_type_is_an_empty_dir() -> None:
    Pod.from_dict(edited("spec.volumes.0", {"name": "data"}))  # defaulting makes it one


def test_a_repeated_host_port_is_a_duplicate() -> None:
    data = valid()
    data["spec"]["initContainers"][1]["ports"] = [
        {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"}
    ]
    assert (
        rejection(data) == 'spec.initContainers[1].ports[0].hostPort: Duplicate value: "5353/UDP"'
    )


def test_every_error_is_listed_as_the_api_server_lists_them() -> None:
    data = valid()
    data["spec"]["containers"].append({"name": "app", "image": "busybox:1.36"})
    data["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "1e999999999"
    assert rejection(data) == (
        '[spec.containers[0].resources.requests[cpu]: Invalid value: "1e999999999": exponent '
        "out of range (at most 1000 in magnitude), "
        'spec.containers[1].name: Duplicate value: "app"]'
    )


def test_errors_are_kept_for_callers() -> None:
    data = edited(f"{C0}.name", "")
    with pytest.raises(PodValidationError) as caught:
        Pod.from_dict(data)
    assert [(e.path, e.type.value) for e in caught.value.errors] == [
        ("spec.containers[0].name", "Required value")
    ]
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("cpu", ["1e999999999", "1e-999999999", "9" * 10**6, "1" + "0" * 5000])
def test_an_absurd_quantity_is_refused_at_once(cpu: str) -> None:
    """Such a request once froze the kubelet's event loop computing 10**999999999."""
    data = edited(f"{C0}.resources.requests.cpu", cpu)
    started = time.monotonic()
    reason = rejection(data)
    assert time.monotonic() - started < 0.5
    assert reason.startswith("spec.containers[0].resources.requests[cpu]: Invalid value: ")


def test_validation_does_not_change_the_pod() -> None:
    data = valid()
    before = copy.deepcopy(data)
    Pod.from_dict(data)
    assert data == before


def test_pods_from_the_api_server_are_not_validated_again() -> None:
    """The API server validated them; a debug container is added after create."""
    data = edited("spec.ephemeralContainers", [{"name": "debug", "image": "busybox"}])
    data["metadata"]["annotations"] = {"kubernetes.io/config.source": "api"}
    assert Pod.from_dict(data).spec.ephemeral_containers
    data["metadata"]["annotations"] = {"kubernetes.io/config.source": "file"}
    assert "spec.ephemeralContainers: Forbidden" in rejection(data)


def test_the_source_names_agree_with_the_pod_config() -> None:
    from minikubelet.api import pod
    from minikubelet.config import types

    assert pod.CONFIG_SOURCE_ANNOTATION == types.CONFIG_SOURCE_ANNOTATION
    assert pod.API_SOURCE == types.API_SOURCE


def test_reading_without_validation_is_possible() -> None:
    pod = Pod.from_dict(edited(f"{C0}.name", "App"), validate=False)
    assert pod.spec.containers[0].name == "App"


@pytest.mark.parametrize("path", sorted((ROOT / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_manifests_are_valid(path: Path) -> None:
    (raw,) = decode_manifest(path.read_bytes(), str(path))
    pod = apply_static_defaults(raw, node_name="Node-1", source="file", source_path=str(path))
    assert Pod.from_dict(pod).name.endswith("-node-1")


def test_a_huge_bad_value_is_shown_cut_short() -> None:
    reason = rejection(edited(f"{C0}.image", " " + "x" * 5000))
    assert reason.startswith('spec.containers[0].image: Invalid value: " xxx')
    assert '...": must not have leading or trailing whitespace' in reason
    assert len(reason) < 1200
