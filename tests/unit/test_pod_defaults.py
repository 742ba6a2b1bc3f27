"""The API server's defaults for a v1 Pod, field by field against upstream's defaulters.

Every row of :data:`DEFAULTED` names the upstream function (``pkg/apis/core/v1/defaults.go``
or the generated ``SetObjectDefaults_Pod``) that sets the field, a pod fragment that leaves
it unset, where the field is and the value upstream gives it. :data:`KEPT` are the values
upstream leaves as written. The expected values are written out here from upstream's code,
not taken from the module under test.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from minikubelet.api.defaults import canonical_quantity, default_pod

DIGEST = "sha256:" + "ab" * 32
Path = tuple[str | int, ...]


def pod(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}


def containers(**container: Any) -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": "busybox:1.36", **container}]}


MISSING = object()


def at(obj: Any, path: Path) -> Any:
    """The value at ``path``, or :data:`MISSING` when the last key is absent."""
    for step in path[:-1]:
        obj = obj[step]
    if not path:
        return obj
    last = path[-1]
    return obj.get(last, MISSING) if isinstance(obj, dict) else obj[last]


def c0(*rest: str | int) -> Path:
    return ("spec", "containers", 0, *rest)


def v0(*rest: str | int) -> Path:
    return ("spec", "volumes", 0, *rest)


def volume(**source: Any) -> dict[str, Any]:
    return {**containers(), "volumes": [{"name": "v", **source}]}


HTTP_PROBE = {"httpGet": {"port": 80}}
FIELD_REF = {"fieldRef": {"fieldPath": "metadata.name"}}

#: (upstream function, pod spec, path, value upstream defaults it to)
DEFAULTED: list[tuple[str, dict[str, Any], Path, Any]] = [
    # SetDefaults_PodSpec
    ("PodSpec.DNSPolicy", containers(), ("spec", "dnsPolicy"), "ClusterFirst"),
    ("PodSpec.RestartPolicy", containers(), ("spec", "restartPolicy"), "Always"),
    ("PodSpec.SecurityContext", containers(), ("spec", "securityContext"), {}),
    (
        "PodSpec.TerminationGracePeriodSeconds",
        containers(),
        ("spec", "terminationGracePeriodSeconds"),
        30,
    ),
    ("PodSpec.SchedulerName", containers(), ("spec", "schedulerName"), "default-scheduler"),
    (
        "PodSpec.DNSPolicy empty string",
        {**containers(), "dnsPolicy": ""},
        ("spec", "dnsPolicy"),
        "ClusterFirst",
    ),
    # SetDefaults_Pod
    ("Pod.EnableServiceLinks", containers(), ("spec", "enableServiceLinks"), True),
    (
        "Pod requests from limits",
        containers(
            resources={"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}
        ),
        c0("resources", "requests"),
        {"cpu": "100m", "memory": "64Mi"},
    ),
    (
        "Pod requests from limits, none given",
        containers(resources={"limits": {"memory": "64Mi"}}),
        c0("resources", "requests"),
        {"memory": "64Mi"},
    ),
    (
        "Pod requests from limits, init container",
        {
            **containers(),
            "initContainers": [
                {"name": "i", "image": "busybox:1.36", "resources": {"limits": {"cpu": "1"}}}
            ],
        },
        ("spec", "initContainers", 0, "resources", "requests"),
        {"cpu": "1"},
    ),
    (
        "Pod hostNetwork ports",
        {**containers(ports=[{"containerPort": 8080}]), "hostNetwork": True},
        c0("ports", 0, "hostPort"),
        8080,
    ),
    (
        "Pod hostNetwork ports, init container",
        {
            **containers(),
            "hostNetwork": True,
            "initContainers": [
                {"name": "i", "image": "busybox:1.36", "ports": [{"containerPort": 53}]}
            ],
        },
        ("spec", "initContainers", 0, "ports", 0, "hostPort"),
        53,
    ),
    # SetDefaults_Container
    ("Container.ImagePullPolicy tag", containers(), c0("imagePullPolicy"), "IfNotPresent"),
    (
        "Container.ImagePullPolicy no tag",
        containers(image="busybox"),
        c0("imagePullPolicy"),
        "Always",
    ),
    (
        "Container.ImagePullPolicy latest",
        containers(image="registry.example:5000/team/app:latest"),
        c0("imagePullPolicy"),
        "Always",
    ),
    (
        "Container.ImagePullPolicy digest",
        containers(image=f"busybox@{DIGEST}"),
        c0("imagePullPolicy"),
        "IfNotPresent",
    ),
    (
        "Container.ImagePullPolicy latest and digest",
        containers(image=f"busybox:latest@{DIGEST}"),
        c0("imagePullPolicy"),
        "Always",
    ),
    (
        "Container.ImagePullPolicy unparsable",
        containers(image="Not/A/Reference"),
        c0("imagePullPolicy"),
        "IfNotPresent",
    ),
    (
        "Container.TerminationMessagePath",
        containers(),
        c0("terminationMessagePath"),
        "/dev/termination-log",
    ),
    ("Container.TerminationMessagePolicy", containers(), c0("terminationMessagePolicy"), "File"),
    (
        "Container defaults, init container",
        {**containers(), "initContainers": [{"name": "i", "image": "busybox"}]},
        ("spec", "initContainers", 0, "imagePullPolicy"),
        "Always",
    ),
    (
        "Container defaults, ephemeral container",
        {**containers(), "ephemeralContainers": [{"name": "e", "image": "busybox:1.36"}]},
        ("spec", "ephemeralContainers", 0, "terminationMessagePolicy"),
        "File",
    ),
    # SetObjectDefaults_Pod on a container
    (
        "ContainerPort.Protocol",
        containers(ports=[{"containerPort": 80}]),
        c0("ports", 0, "protocol"),
        "TCP",
    ),
    ("ResourceRequirements written", containers(), c0("resources"), {}),
    (
        "ObjectFieldSelector.APIVersion in env",
        containers(env=[{"name": "N", "valueFrom": FIELD_REF}]),
        c0("env", 0, "valueFrom", "fieldRef", "apiVersion"),
        "v1",
    ),
    *(
        (f"Probe.{field} ({probe})", containers(**{probe: HTTP_PROBE}), c0(probe, field), value)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe")
        for field, value in (
            ("timeoutSeconds", 1),
            ("periodSeconds", 10),
            ("successThreshold", 1),
            ("failureThreshold", 3),
        )
    ),
    (
        "Probe.TimeoutSeconds zero",
        containers(readinessProbe={**HTTP_PROBE, "timeoutSeconds": 0}),
        c0("readinessProbe", "timeoutSeconds"),
        1,
    ),
    (
        "HTTPGetAction.Path (probe)",
        containers(livenessProbe=HTTP_PROBE),
        c0("livenessProbe", "httpGet", "path"),
        "/",
    ),
    (
        "HTTPGetAction.Scheme (probe)",
        containers(startupProbe=HTTP_PROBE),
        c0("startupProbe", "httpGet", "scheme"),
        "HTTP",
    ),
    (
        "GRPCAction.Service",
        containers(livenessProbe={"grpc": {"port": 9000}}),
        c0("livenessProbe", "grpc", "service"),
        "",
    ),
    (
        "HTTPGetAction (postStart)",
        containers(lifecycle={"postStart": {"httpGet": {"port": 80}}}),
        c0("lifecycle", "postStart", "httpGet"),
        {"port": 80, "path": "/", "scheme": "HTTP"},
    ),
    (
        "HTTPGetAction (preStop)",
        containers(lifecycle={"preStop": {"httpGet": {"port": 80, "path": "/quit"}}}),
        c0("lifecycle", "preStop", "httpGet"),
        {"port": 80, "path": "/quit", "scheme": "HTTP"},
    ),
    # SetDefaults_ResourceList: rounded up to milli, written canonically
    (
        "ResourceList limits",
        containers(resources={"limits": {"cpu": "0.5", "memory": "1.5Gi"}}),
        c0("resources", "limits"),
        {"cpu": "500m", "memory": "1536Mi"},
    ),
    (
        "ResourceList requests",
        containers(resources={"requests": {"cpu": 1, "memory": "0.0001"}}),
        c0("resources", "requests"),
        {"cpu": "1", "memory": "1m"},
    ),
    (
        "ResourceList overhead",
        {**containers(), "overhead": {"cpu": "0.25"}},
        ("spec", "overhead"),
        {"cpu": "250m"},
    ),
    # SetDefaults_Volume and the volume sources
    ("Volume without source", volume(), v0(), {"name": "v", "emptyDir": {}}),
    (
        "Volume.Image.PullPolicy tag",
        volume(image={"reference": "registry.example/data:v1"}),
        v0("image", "pullPolicy"),
        "IfNotPresent",
    ),
    (
        "Volume.Image.PullPolicy latest",
        volume(image={"reference": "registry.example/data"}),
        v0("image", "pullPolicy"),
        "Always",
    ),
    ("HostPathVolumeSource.Type", volume(hostPath={"path": "/srv"}), v0("hostPath", "type"), ""),
    (
        "SecretVolumeSource.DefaultMode",
        volume(secret={"secretName": "s"}),
        v0("secret", "defaultMode"),
        420,
    ),
    (
        "ConfigMapVolumeSource.DefaultMode",
        volume(configMap={"name": "cm"}),
        v0("configMap", "defaultMode"),
        420,
    ),
    (
        "DownwardAPIVolumeSource.DefaultMode",
        volume(downwardAPI={"items": [{"path": "name", **FIELD_REF}]}),
        v0("downwardAPI", "defaultMode"),
        420,
    ),
    (
        "ObjectFieldSelector.APIVersion (downwardAPI)",
        volume(downwardAPI={"items": [{"path": "name", **FIELD_REF}]}),
        v0("downwardAPI", "items", 0, "fieldRef", "apiVersion"),
        "v1",
    ),
    (
        "ProjectedVolumeSource.DefaultMode",
        volume(projected={"sources": []}),
        v0("projected", "defaultMode"),
        420,
    ),
    (
        "ObjectFieldSelector.APIVersion (projected)",
        volume(projected={"sources": [{"downwardAPI": {"items": [{"path": "n", **FIELD_REF}]}}]}),
        v0("projected", "sources", 0, "downwardAPI", "items", 0, "fieldRef", "apiVersion"),
        "v1",
    ),
    (
        "ServiceAccountTokenProjection.ExpirationSeconds",
        volume(projected={"sources": [{"serviceAccountToken": {"path": "token"}}]}),
        v0("projected", "sources", 0, "serviceAccountToken", "expirationSeconds"),
        3600,
    ),
    (
        "ISCSIVolumeSource.ISCSIInterface",
        volume(iscsi={"targetPortal": "10.0.0.1", "iqn": "iqn.x", "lun": 0}),
        v0("iscsi", "iscsiInterface"),
        "default",
    ),
    (
        "RBDVolumeSource",
        volume(rbd={"monitors": ["10.0.0.1"], "image": "img"}),
        v0("rbd"),
        {
            "monitors": ["10.0.0.1"],
            "image": "img",
            "pool": "rbd",
            "user": "admin",
            "keyring": "/etc/ceph/keyring",
        },
    ),
    (
        "AzureDiskVolumeSource",
        volume(azureDisk={"diskName": "d", "diskURI": "u"}),
        v0("azureDisk"),
        {
            "diskName": "d",
            "diskURI": "u",
            "cachingMode": "ReadWrite",
            "kind": "Shared",
            "fsType": "ext4",
            "readOnly": False,
        },
    ),
    (
        "ScaleIOVolumeSource",
        volume(scaleIO={"gateway": "g", "system": "s", "secretRef": {"name": "x"}}),
        v0("scaleIO"),
        {
            "gateway": "g",
            "system": "s",
            "secretRef": {"name": "x"},
            "storageMode": "ThinProvisioned",
            "fsType": "xfs",
        },
    ),
    (
        "PersistentVolumeClaimSpec.VolumeMode (ephemeral)",
        volume(
            ephemeral={
                "volumeClaimTemplate": {
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1.5Gi"}},
                    }
                }
            }
        ),
        v0("ephemeral", "volumeClaimTemplate", "spec"),
        {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1536Mi"}},
            "volumeMode": "Filesystem",
        },
    ),
    # the v1 conversion keeps the deprecated alias in step
    (
        "serviceAccount alias written",
        {**containers(), "serviceAccountName": "builder"},
        ("spec", "serviceAccount"),
        "builder",
    ),
    (
        "serviceAccount alias read",
        {**containers(), "serviceAccount": "builder"},
        ("spec", "serviceAccountName"),
        "builder",
    ),
]


@pytest.mark.parametrize(
    ("spec", "path", "expected"),
    [pytest.param(spec, path, value, id=name) for name, spec, path, value in DEFAULTED],
)
def test_defaults_as_upstream(spec: dict[str, Any], path: Path, expected: Any) -> None:
    assert at(default_pod(pod(spec)), path) == expected


#: (what, pod spec, path): values upstream leaves as they are written.
KEPT: list[tuple[str, dict[str, Any], Path]] = [
    ("restartPolicy", {**containers(), "restartPolicy": "Never"}, ("spec", "restartPolicy")),
    ("dnsPolicy", {**containers(), "dnsPolicy": "Default"}, ("spec", "dnsPolicy")),
    (
        "terminationGracePeriodSeconds zero (a pointer)",
        {**containers(), "terminationGracePeriodSeconds": 0},
        ("spec", "terminationGracePeriodSeconds"),
    ),
    (
        "enableServiceLinks false",
        {**containers(), "enableServiceLinks": False},
        ("spec", "enableServiceLinks"),
    ),
    (
        "securityContext",
        {**containers(), "securityContext": {"runAsUser": 1000}},
        ("spec", "securityContext"),
    ),
    ("schedulerName", {**containers(), "schedulerName": "mine"}, ("spec", "schedulerName")),
    (
        "imagePullPolicy",
        containers(image="busybox", imagePullPolicy="Never"),
        c0("imagePullPolicy"),
    ),
    (
        "terminationMessagePolicy",
        containers(terminationMessagePolicy="FallbackToLogsOnError"),
        c0("terminationMessagePolicy"),
    ),
    (
        "requests that differ from limits",
        containers(resources={"limits": {"cpu": "2"}, "requests": {"cpu": "1"}}),
        c0("resources"),
    ),
    ("port protocol", containers(ports=[{"containerPort": 53, "protocol": "UDP"}]), c0("ports")),
    (
        "a host port on the host network",
        {**containers(ports=[{"containerPort": 80, "hostPort": 8080}]), "hostNetwork": True},
        c0("ports", 0, "hostPort"),
    ),
    (
        "no host port off the host network",
        containers(ports=[{"containerPort": 80}]),
        c0("ports", 0, "hostPort"),
    ),
    (
        "probe timings",
        containers(
            livenessProbe={
                "exec": {"command": ["true"]},
                "timeoutSeconds": 5,
                "periodSeconds": 2,
                "successThreshold": 1,
                "failureThreshold": 9,
            }
        ),
        c0("livenessProbe"),
    ),
    (
        "httpGet scheme and path",
        containers(readinessProbe={"httpGet": {"port": 443, "path": "/h", "scheme": "HTTPS"}}),
        c0("readinessProbe", "httpGet"),
    ),
    ("defaultMode zero (a pointer)", volume(secret={"secretName": "s", "defaultMode": 0}), v0()),
    ("hostPath type", volume(hostPath={"path": "/srv", "type": "Directory"}), v0()),
    ("emptyDir medium", volume(emptyDir={"medium": "Memory"}), v0()),
    (
        "token expiration",
        volume(
            projected={
                "defaultMode": 256,
                "sources": [{"serviceAccountToken": {"path": "t", "expirationSeconds": 600}}],
            }
        ),
        v0(),
    ),
    (
        "canonical quantities",
        containers(resources={"limits": {"cpu": "250m", "memory": "1Gi"}}),
        c0("resources", "limits"),
    ),
]


@pytest.mark.parametrize(
    ("spec", "path"), [pytest.param(spec, path, id=name) for name, spec, path in KEPT]
)
def test_values_written_are_kept(spec: dict[str, Any], path: Path) -> None:
    assert at(default_pod(pod(spec)), path) == at(pod(spec), path)


def test_a_minimal_pod_reads_as_kubectl_shows_it() -> None:
    """The spec a v1 API server stores for the smallest pod (admission plugins aside)."""
    out = default_pod(pod(containers()))
    assert out == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "busybox:1.36",
                    "imagePullPolicy": "IfNotPresent",
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
            ],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30,
        },
    }


#: ``Quantity`` after ``RoundUp(-3)``, as ``MarshalJSON`` writes it.
@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("0.5", "500m"),
        (0.5, "500m"),
        (1, "1"),
        ("1000m", "1"),
        ("1500", "1500"),
        ("2000", "2k"),
        ("0.0001", "1m"),
        ("1n", "1m"),
        ("100m", "100m"),
        ("1G", "1G"),
        ("1.5Gi", "1536Mi"),
        ("2048Mi", "2Gi"),
        ("1.5Ki", "1536"),
        ("0.5Gi", "512Mi"),
        ("512", "512"),
        ("1023Ki", "1023Ki"),
        ("128974848", "128974848"),
        ("129e6", "129e6"),
        ("1E3", "1e3"),
        ("1.5e3", "1500"),
        ("0", "0"),
        ("0Gi", "0"),
        (" 64Mi ", "64Mi"),
    ],
)
def test_canonical_quantity(written: object, canonical: str) -> None:
    assert canonical_quantity(written) == canonical


def test_defaulting_is_idempotent_and_leaves_its_input() -> None:
    spec = {
        **containers(
            image="busybox",
            ports=[{"containerPort": 80}],
            env=[{"name": "N", "valueFrom": FIELD_REF}],
            resources={"limits": {"cpu": "0.5", "memory": "1.5Gi"}},
            livenessProbe=HTTP_PROBE,
        ),
        "hostNetwork": True,
        "volumes": [
            {"name": "a"},
            {"name": "b", "projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}},
        ],
    }
    original = pod(spec)
    before = json.dumps(original, sort_keys=True)
    once = default_pod(original)
    assert json.dumps(original, sort_keys=True) == before
    assert default_pod(copy.deepcopy(once)) == once


@pytest.mark.parametrize(
    ("spec", "path", "expected"),
    [
        ({"containers": "nope"}, ("spec", "containers"), "nope"),
        (
            {"containers": [7, {"name": "c", "image": 5, "ports": "x", "resources": []}]},
            ("spec", "containers"),
            [
                7,
                {
                    "name": "c",
                    "image": 5,
                    "ports": "x",
                    "resources": [],
                    "imagePullPolicy": "IfNotPresent",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                },
            ],
        ),
        (
            {**containers(), "volumes": [None, {"name": "v", "secret": "x"}]},
            ("spec", "volumes"),
            [None, {"name": "v", "secret": "x"}],
        ),
        (
            containers(resources={"limits": {"cpu": "lots"}}),
            c0("resources"),
            {"limits": {"cpu": "lots"}, "requests": {"cpu": "lots"}},
        ),
        (
            containers(livenessProbe={"timeoutSeconds": False, "httpGet": "x"}),
            c0("livenessProbe"),
            {
                "timeoutSeconds": False,
                "httpGet": "x",
                "periodSeconds": 10,
                "successThreshold": 1,
                "failureThreshold": 3,
            },
        ),
    ],
)
def test_values_of_the_wrong_type_are_left_for_validation(
    spec: dict[str, Any], path: Path, expected: Any
) -> None:
    out = default_pod(pod(spec))
    assert out["spec"]["restartPolicy"] == "Always"
    assert at(out, path) == expected


def test_a_pod_without_spec_is_left_for_validation() -> None:
    assert default_pod({"kind": "Pod", "metadata": {"name": "p"}}) == {
        "kind": "Pod",
        "metadata": {"name": "p"},
    }
