"""The API server's defaults for a v1 Pod, as the kubelet applies them to its static pods.

A pod created through the API server is defaulted before any kubelet sees it; a static pod
(a manifest file or URL) is defaulted by the kubelet's own decoder in the same way
(``pkg/kubelet/config/common.go`` decodes with the legacy scheme, which runs the defaulters).
:func:`default_pod` is that step on the plain dict a manifest decodes to: it follows
``pkg/apis/core/v1/defaults.go`` and the generated ``SetObjectDefaults_Pod``.

The pod (``SetDefaults_Pod``, ``SetDefaults_PodSpec``):

* ``dnsPolicy: ClusterFirst``, ``restartPolicy: Always``, ``securityContext: {}``,
  ``terminationGracePeriodSeconds: 30``, ``schedulerName: default-scheduler``,
  ``enableServiceLinks: true``;
* each container's and init container's ``resources.requests`` gets every ``limits``
  entry it lacks;
* with ``hostNetwork``, a container or init container port without a ``hostPort`` gets
  its ``containerPort`` as one.

Each container, init container and ephemeral container:

* ``imagePullPolicy``: ``Always`` for an image tagged ``latest`` or with neither tag nor
  digest, ``IfNotPresent`` otherwise; ``terminationMessagePath: /dev/termination-log``;
  ``terminationMessagePolicy: File`` (``SetDefaults_Container``);
* a port's ``protocol: TCP``; an env ``valueFrom.fieldRef``'s ``apiVersion: v1``
  (``SetDefaults_ObjectFieldSelector``);
* each probe ``timeoutSeconds: 1``, ``periodSeconds: 10``, ``successThreshold: 1``,
  ``failureThreshold: 3`` (``SetDefaults_Probe``), its ``httpGet`` ``path: /`` and
  ``scheme: HTTP`` (``SetDefaults_HTTPGetAction``, also for the ``postStart`` and
  ``preStop`` handlers) and its ``grpc`` ``service: ""``;
* ``resources.limits`` and ``requests`` rounded up to a thousandth
  (``SetDefaults_ResourceList``), as are ``spec.overhead``, the pod-level
  ``spec.resources`` and an ephemeral volume's claim template.

Each volume (``SetDefaults_Volume`` and its sources):

* one without a source is an ``emptyDir: {}``; an ``image`` source gets its
  ``pullPolicy`` as a container image does;
* ``hostPath.type: ""``; ``defaultMode: 420`` (0644) for ``secret``, ``configMap``,
  ``downwardAPI`` and ``projected``; a ``fieldRef``'s ``apiVersion: v1`` in downward API
  items, projected ones included; a projected ``serviceAccountToken``'s
  ``expirationSeconds: 3600``;
* the in-tree plugins nobody runs on this node, for completeness: ``iscsi``
  ``iscsiInterface: default``; ``rbd`` ``pool: rbd``, ``user: admin``,
  ``keyring: /etc/ceph/keyring``; ``azureDisk`` ``cachingMode: ReadWrite``,
  ``kind: Shared``, ``fsType: ext4``, ``readOnly: false``; ``scaleIO``
  ``storageMode: ThinProvisioned``, ``fsType: xfs``; an ``ephemeral`` claim template's
  ``volumeMode: Filesystem``.

What the round trip through the API types adds, so the pod reads as ``kubectl get -o yaml``
shows one: every quantity in the canonical form the API server writes (``0.5`` is
``500m``, ``1.5Gi`` is ``1536Mi``, ``cpu: 1`` is ``"1"``); ``resources: {}`` on a
container without any (a struct the API always writes); ``serviceAccount`` and
``serviceAccountName`` as one value (the v1 conversion keeps the deprecated alias in step).

Not here, because they are not defaulting: what admission plugins add to pods created
through the API server (``priority``, ``preemptionPolicy``, ``serviceAccountName: default``
and its token volume, the not-ready and unreachable tolerations); nor the pod-level resource
defaults of the PodLevelResources feature (``spec.resources`` requests and limits summed from
the containers), which this kubelet does not implement.

As in Go, a field counts as unset when it is absent, ``null`` or its type's zero value where
the Go field is not a pointer (``""`` for a string, ``0`` for a probe's timings); a pointer
field (``terminationGracePeriodSeconds``, ``enableServiceLinks``, ``defaultMode`` ...) keeps
an explicit zero or ``false``. A value of the wrong type is left alone for validation to
report. Defaulting is idempotent, and the input is never modified.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import Any, Final

from minikubelet import resources
from minikubelet.api.pod import default_pull_policy
from minikubelet.api.validation import VOLUME_TYPES

DEFAULT_DNS_POLICY: Final = "ClusterFirst"
DEFAULT_RESTART_POLICY: Final = "Always"
DEFAULT_SCHEDULER_NAME: Final = "default-scheduler"
DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: Final = 30
DEFAULT_ENABLE_SERVICE_LINKS: Final = True
DEFAULT_TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
DEFAULT_TERMINATION_MESSAGE_POLICY: Final = "File"
DEFAULT_PROTOCOL: Final = "TCP"
DEFAULT_FIELD_REF_API_VERSION: Final = "v1"
#: ``SecretVolumeSourceDefaultMode`` and its siblings: 0644.
DEFAULT_VOLUME_MODE: Final = 0o644
#: ``SetDefaults_ServiceAccountTokenProjection``: an hour.
DEFAULT_TOKEN_EXPIRATION_SECONDS: Final = 3600
#: ``SetDefaults_Probe``.
PROBE_DEFAULTS: Final = (
    ("timeoutSeconds", 1),
    ("periodSeconds", 10),
    ("successThreshold", 1),
    ("failureThreshold", 3),
)

#: Every ``VolumeSource`` member: a volume with none of them set becomes an emptyDir.
VOLUME_SOURCES: Final = frozenset(VOLUME_TYPES)

#: String fields of in-tree volume sources and their defaults (declarative ``+default``s).
_PLUGIN_STRING_DEFAULTS: Final[dict[str, tuple[tuple[str, str], ...]]] = {
    "iscsi": (("iscsiInterface", "default"),),
    "rbd": (("pool", "rbd"), ("user", "admin"), ("keyring", "/etc/ceph/keyring")),
    "scaleIO": (("storageMode", "ThinProvisioned"), ("fsType", "xfs")),
}
#: ``SetDefaults_AzureDiskVolumeSource``: pointer fields, so only absent ones are set.
_AZURE_DISK_DEFAULTS: Final[tuple[tuple[str, object], ...]] = (
    ("cachingMode", "ReadWrite"),
    ("kind", "Shared"),
    ("fsType", "ext4"),
    ("readOnly", False),
)

_PROBES: Final = ("livenessProbe", "readinessProbe", "startupProbe")
_HOOKS: Final = ("postStart", "preStop")


def default_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``pod`` with the API server's defaults set (see the module documentation)."""
    out: dict[str, Any] = copy.deepcopy(dict(pod))
    spec = out.get("spec")
    if isinstance(spec, dict):
        _set_defaults_pod(spec)
        _set_defaults_pod_spec(spec)
        for volume in _dicts(spec.get("volumes")):
            _set_defaults_volume(volume)
        for key in ("initContainers", "containers", "ephemeralContainers"):
            for container in _dicts(spec.get(key)):
                _set_defaults_container(container)
        _round_resource_list(spec, "overhead")
        pod_resources = spec.get("resources")
        if isinstance(pod_resources, dict):
            _round_resource_list(pod_resources, "limits")
            _round_resource_list(pod_resources, "requests")
        _convert_service_account(spec)
    return out


# -- the pod -----------------------------------------------------------------------------


def _set_defaults_pod(spec: dict[str, Any]) -> None:
    """``SetDefaults_Pod``: requests from limits, service links, host network ports."""
    for key in ("containers", "initContainers"):
        for container in _dicts(spec.get(key)):
            container_resources = container.get("resources")
            if not isinstance(container_resources, dict):
                continue
            limits = container_resources.get("limits")
            if not isinstance(limits, dict) or not limits:
                continue
            requests = container_resources.get("requests")
            if requests is None:
                requests = container_resources["requests"] = {}
            if isinstance(requests, dict):
                for name, value in limits.items():
                    if name not in requests:
                        requests[name] = copy.deepcopy(value)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = DEFAULT_ENABLE_SERVICE_LINKS
    if spec.get("hostNetwork") is True:
        for key in ("containers", "initContainers"):
            for container in _dicts(spec.get(key)):
                for port in _dicts(container.get("ports")):
                    container_port = port.get("containerPort")
                    if _zero_int(port.get("hostPort")) and type(container_port) is int:
                        port["hostPort"] = container_port


def _set_defaults_pod_spec(spec: dict[str, Any]) -> None:
    """``SetDefaults_PodSpec``."""
    _default_text(spec, "dnsPolicy", DEFAULT_DNS_POLICY)
    _default_text(spec, "restartPolicy", DEFAULT_RESTART_POLICY)
    if spec.get("securityContext") is None:
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS
    _default_text(spec, "schedulerName", DEFAULT_SCHEDULER_NAME)


def _convert_service_account(spec: dict[str, Any]) -> None:
    """The v1 conversion: ``serviceAccount`` is a deprecated alias of ``serviceAccountName``.

    Reading, the alias fills an empty ``serviceAccountName``; writing, the alias is set to it.
    """
    name = spec.get("serviceAccountName")
    alias = spec.get("serviceAccount")
    if name in (None, "") and isinstance(alias, str) and alias:
        spec["serviceAccountName"] = name = alias
    if isinstance(name, str) and name:
        spec["serviceAccount"] = name


# -- containers ----------------------------------------------------------------------------


def _set_defaults_container(container: dict[str, Any]) -> None:
    """``SetDefaults_Container`` and what ``SetObjectDefaults_Pod`` runs on a container."""
    if _zero_text(container.get("imagePullPolicy")):
        image = container.get("image")
        policy = default_pull_policy(image if isinstance(image, str) else "")
        container["imagePullPolicy"] = policy.value
    _default_text(container, "terminationMessagePath", DEFAULT_TERMINATION_MESSAGE_PATH)
    _default_text(container, "terminationMessagePolicy", DEFAULT_TERMINATION_MESSAGE_POLICY)
    for port in _dicts(container.get("ports")):
        _default_text(port, "protocol", DEFAULT_PROTOCOL)
    for env in _dicts(container.get("env")):
        value_from = env.get("valueFrom")
        if isinstance(value_from, dict):
            _set_defaults_field_ref(value_from.get("fieldRef"))
    if container.get("resources") is None:
        container["resources"] = {}
    container_resources = container.get("resources")
    if isinstance(container_resources, dict):
        _round_resource_list(container_resources, "limits")
        _round_resource_list(container_resources, "requests")
    for key in _PROBES:
        probe = container.get(key)
        if isinstance(probe, dict):
            _set_defaults_probe(probe)
    lifecycle = container.get("lifecycle")
    if isinstance(lifecycle, dict):
        for key in _HOOKS:
            handler = lifecycle.get(key)
            if isinstance(handler, dict):
                _set_defaults_http_get(handler.get("httpGet"))


def _set_defaults_probe(probe: dict[str, Any]) -> None:
    """``SetDefaults_Probe``, then its handler's defaults."""
    for key, value in PROBE_DEFAULTS:
        if _zero_int(probe.get(key)):
            probe[key] = value
    _set_defaults_http_get(probe.get("httpGet"))
    grpc = probe.get("grpc")
    if isinstance(grpc, dict) and grpc.get("service") is None:
        grpc["service"] = ""


def _set_defaults_http_get(action: object) -> None:
    """``SetDefaults_HTTPGetAction``."""
    if isinstance(action, dict):
        _default_text(action, "path", "/")
        _default_text(action, "scheme", "HTTP")


def _set_defaults_field_ref(field_ref: object) -> None:
    """``SetDefaults_ObjectFieldSelector``."""
    if isinstance(field_ref, dict):
        _default_text(field_ref, "apiVersion", DEFAULT_FIELD_REF_API_VERSION)


# -- volumes -------------------------------------------------------------------------------


def _set_defaults_volume(volume: dict[str, Any]) -> None:
    """``SetDefaults_Volume`` and the defaults of the source it has."""
    if not any(volume.get(key) is not None for key in VOLUME_SOURCES):
        volume["emptyDir"] = {}
    image = volume.get("image")
    if isinstance(image, dict) and _zero_text(image.get("pullPolicy")):
        reference = image.get("reference")
        policy = default_pull_policy(reference if isinstance(reference, str) else "")
        image["pullPolicy"] = policy.value
    host_path = volume.get("hostPath")
    if isinstance(host_path, dict) and host_path.get("type") is None:
        host_path["type"] = ""
    for key in ("secret", "configMap", "downwardAPI", "projected"):
        source = volume.get(key)
        if isinstance(source, dict) and source.get("defaultMode") is None:
            source["defaultMode"] = DEFAULT_VOLUME_MODE
    downward = volume.get("downwardAPI")
    if isinstance(downward, dict):
        for item in _dicts(downward.get("items")):
            _set_defaults_field_ref(item.get("fieldRef"))
    projected = volume.get("projected")
    if isinstance(projected, dict):
        for projection in _dicts(projected.get("sources")):
            projected_downward = projection.get("downwardAPI")
            if isinstance(projected_downward, dict):
                for item in _dicts(projected_downward.get("items")):
                    _set_defaults_field_ref(item.get("fieldRef"))
            token = projection.get("serviceAccountToken")
            if isinstance(token, dict) and token.get("expirationSeconds") is None:
                token["expirationSeconds"] = DEFAULT_TOKEN_EXPIRATION_SECONDS
    for key, defaults in _PLUGIN_STRING_DEFAULTS.items():
        source = volume.get(key)
        if isinstance(source, dict):
            for field, value in defaults:
                _default_text(source, field, value)
    azure = volume.get("azureDisk")
    if isinstance(azure, dict):
        for name, setting in _AZURE_DISK_DEFAULTS:
            if azure.get(name) is None:
                azure[name] = setting
    ephemeral = volume.get("ephemeral")
    template = ephemeral.get("volumeClaimTemplate") if isinstance(ephemeral, dict) else None
    claim = template.get("spec") if isinstance(template, dict) else None
    if isinstance(claim, dict):
        if claim.get("volumeMode") is None:
            claim["volumeMode"] = "Filesystem"
        claim_resources = claim.get("resources")
        if isinstance(claim_resources, dict):
            _round_resource_list(claim_resources, "limits")
            _round_resource_list(claim_resources, "requests")


# -- quantities ----------------------------------------------------------------------------

_BINARY_SUFFIXES: Final = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")
_DECIMAL_SUFFIXES: Final = {
    -9: "n",
    -6: "u",
    -3: "m",
    0: "",
    3: "k",
    6: "M",
    9: "G",
    12: "T",
    15: "P",
    18: "E",
}
_SUFFIX: Final = re.compile(r"[+-]?[0-9.]*(.*)")
_NANO: Final = 10**9


def _quantity_format(text: object) -> str:
    """apimachinery's ``Format`` of a quantity, from its suffix: how it is written back."""
    if not isinstance(text, str):
        return "DecimalSI"  # a JSON number reads as its digits, with no suffix
    match = _SUFFIX.fullmatch(text.strip())
    suffix = match.group(1) if match else ""
    if suffix in _BINARY_SUFFIXES[1:]:
        return "BinarySI"
    if len(suffix) > 1 and suffix[0] in "eE":
        return "DecimalExponent"
    return "DecimalSI"


def canonical_quantity(value: object) -> str:
    """``value`` rounded up to a thousandth and written as the API server writes it.

    ``SetDefaults_ResourceList``'s ``RoundUp(-3)`` (away from zero), then
    ``Quantity.CanonicalizeBytes``: binary SI (``Ki``...) for a whole number of at least 1024
    written in binary SI, the largest power of 1024 that divides it; otherwise decimal, with
    the largest exponent that is a multiple of three and keeps the mantissa whole, as an SI
    suffix (``m``, ``k``, ``M``...) or, for a quantity written with an exponent, ``e<n>``.
    Raises ValueError if ``value`` is not a quantity.
    """
    parsed = resources.parse_quantity(value)
    magnitude = abs(parsed)
    if magnitude.denominator != 1:
        magnitude = Fraction(math.ceil(magnitude * 1000), 1000)
    number = -magnitude if parsed < 0 else magnitude
    if number == 0:
        return "0"
    fmt = _quantity_format(value)
    if fmt == "BinarySI" and (abs(number) < 1024 or number.denominator != 1):
        fmt = "DecimalSI"  # small or fractional: shown in decimal, so nothing is rounded
    if fmt == "BinarySI":
        mantissa, power = int(number), 0
        while mantissa % 1024 == 0 and power < len(_BINARY_SUFFIXES) - 1:
            mantissa //= 1024
            power += 1
        return f"{mantissa}{_BINARY_SUFFIXES[power]}"
    mantissa, exponent = int(number * _NANO), -9
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    if fmt == "DecimalExponent":
        return f"{mantissa}e{exponent}" if exponent else str(mantissa)
    suffix = _DECIMAL_SUFFIXES.get(exponent)
    return f"{mantissa}{suffix}" if suffix is not None else f"{mantissa}e{exponent}"


def _round_resource_list(parent: dict[str, Any], key: str) -> None:
    """``SetDefaults_ResourceList`` on ``parent[key]``; a value that is no quantity stays."""
    quantities = parent.get(key)
    if not isinstance(quantities, dict):
        return
    for name, value in list(quantities.items()):
        try:
            quantities[name] = canonical_quantity(value)
        except ValueError:
            continue


# -- helpers -------------------------------------------------------------------------------


def _dicts(value: object) -> Iterator[dict[str, Any]]:
    """The mappings in a list (others are validation's business)."""
    if isinstance(value, list):
        for item in value:
            if isinstance(item, dict):
                yield item


def _zero_text(value: object) -> bool:
    return value is None or value == ""


def _zero_int(value: object) -> bool:
    return value is None or (type(value) in (int, float) and value == 0)


def _default_text(obj: dict[str, Any], key: str, value: str) -> None:
    if _zero_text(obj.get(key)):
        obj[key] = value
