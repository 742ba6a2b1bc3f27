"""Decoding, validating and defaulting pod manifests: pure functions, no I/O.

Follows the kubelet's ``pkg/kubelet/config/common.go``:

* a manifest is YAML or JSON; the file source takes exactly one ``Pod`` per file, the http
  source takes a ``Pod`` or a ``PodList``;
* each pod is defaulted as the API server defaults a v1 Pod (:mod:`minikubelet.api.defaults`:
  ``restartPolicy``, ``dnsPolicy``, image pull policies, probe timings, volume modes ...), as
  the kubelet's decoder does, so the pod shown, hashed and mirrored is the defaulted one;
* each pod must pass the API server's pod validation (:mod:`minikubelet.api.validation`),
  every reason reported at once, e.g. ``spec.containers[1].name: Duplicate value: "app"``;
* a pod without ``metadata.uid`` gets one derived from the decoded, defaulted object plus
  where it came from (see :func:`static_pod_uid`), so the same manifest on the same node and
  path always gets the same UID, a manifest that spells a default out gets the UID of one
  that leaves it implicit, and any other change of content gives a new one;
* the name becomes ``<name>-<lowercased node name>``, the namespace defaults to ``default``,
  ``spec.nodeName`` is this node, ``kubernetes.io/config.hash`` carries the UID, file pods
  tolerate every ``NoExecute`` taint and the phase starts as ``Pending``.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from minikubelet.api.defaults import default_pod
from minikubelet.api.pod import Pod as PodModel
from minikubelet.config.types import (
    CONFIG_HASH_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
    FILE_SOURCE,
    Pod,
)

MAX_CONFIG_LENGTH = 10 * 1024 * 1024
"""The kubelet refuses manifests larger than 10 MiB."""

DEFAULT_NAMESPACE = "default"

_FNV128_OFFSET = 0x6C62272E07BB014262B821756295C58D
_FNV128_PRIME = 0x0000000001000000000000000000013B
_MASK128 = (1 << 128) - 1


class ManifestError(Exception):
    """A manifest that cannot become a pod: where (path, 1-based line if known) and why."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.reason}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ManifestError):
            return NotImplemented
        return (self.path, self.line, self.reason) == (other.path, other.line, other.reason)

    def __hash__(self) -> int:
        return hash((self.path, self.line, self.reason))


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader that keeps timestamps as strings, so a pod stays JSON-compatible."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _load(data: bytes, path: str) -> object:
    if len(data) > MAX_CONFIG_LENGTH:
        raise ManifestError(path, None, f"larger than {MAX_CONFIG_LENGTH} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(path, None, f"not YAML: not UTF-8 text ({exc.reason})") from exc
    if text.lstrip().startswith("{"):
        # JSON is handed to the decoder as it is, the way the kubelet's ToJSON does.
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(path, exc.lineno, f"not JSON: {exc.msg}") from exc
        except (ValueError, RecursionError) as exc:  # an integer of 4300+ digits, deep nesting
            raise ManifestError(path, None, f"not JSON: {_too_much(exc)}") from exc
    try:
        return yaml.load(text, Loader=_ManifestLoader)  # a SafeLoader subclass
    except (ValueError, RecursionError) as exc:
        raise ManifestError(path, None, f"not YAML: {_too_much(exc)}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "parse error"
        raise ManifestError(path, line, f"not YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ManifestError(path, None, f"not YAML: {exc}") from exc


def _too_much(exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc).split(";")[0]  # "Exceeds the limit (4300 digits) for integer string ..."


def _type_name(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def decode_manifest(data: bytes, path: str, *, allow_list: bool = False) -> list[Pod]:
    """Decode and validate one manifest into its pods.

    ``path`` names the manifest in errors (a file path or a URL). With ``allow_list`` (the http
    source) a ``PodList`` is accepted too; otherwise exactly one ``Pod``. Raises
    :class:`ManifestError`. The pods are returned decoded and defaulted as the API server
    defaults a v1 Pod (:func:`~minikubelet.api.defaults.default_pod`), without the static-pod
    defaults of :func:`apply_static_defaults`.
    """
    obj = _load(data, path)
    if obj is None:
        raise ManifestError(path, None, "empty manifest")
    if not isinstance(obj, dict):
        raise ManifestError(
            path, None, f"not a Kubernetes object: the document is a {_type_name(obj)}"
        )
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    expected = "Pod or PodList" if allow_list else "Pod"
    if not kind:
        raise ManifestError(path, None, f"kind is missing, expected {expected}")
    if kind == "PodList" and allow_list:
        _check_api_version(api_version, path)
        items: Any = obj.get("items") or []
        if not isinstance(items, list):
            raise ManifestError(path, None, f"items is a {_type_name(items)}, expected a list")
        pods: list[Pod] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise ManifestError(
                    path, None, f"items[{index}] is a {_type_name(item)}, expected a Pod"
                )
            if item.get("kind", "Pod") != "Pod":
                raise ManifestError(
                    path, None, f"items[{index}]: kind is {item.get('kind')}, expected Pod"
                )
            pod = default_pod(item)
            _validate_pod(pod, path, f"items[{index}]: ")
            pods.append(pod)
        return pods
    if kind != "Pod":
        raise ManifestError(path, None, f"kind is {kind}, expected {expected}")
    _check_api_version(api_version, path)
    pod = default_pod(obj)
    _validate_pod(pod, path)
    return [pod]


def _check_api_version(api_version: object, path: str) -> None:
    if api_version != "v1":
        shown = "missing" if not api_version else f"{api_version}"
        raise ManifestError(path, None, f"apiVersion is {shown}, expected v1")


def _validate_pod(pod: Pod, path: str, where: str = "") -> None:
    """Pod validation (:mod:`minikubelet.api.validation`), every reason in one message.

    It runs again once the static-pod defaults are applied (the kubelet validates the
    defaulted pod); checking here already keeps a pod without a usable name from them.
    """
    try:
        PodModel.from_dict(pod)
    except ValueError as exc:
        raise ManifestError(path, None, f"{where}{exc}") from None


def fnv1a_128(data: bytes) -> bytes:
    """FNV-1a, 128 bits, big-endian digest (Go's ``hash/fnv`` ``New128a().Sum(nil)``)."""
    value = _FNV128_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV128_PRIME) & _MASK128
    return value.to_bytes(16, "big")


def canonical_pod_bytes(pod: Pod) -> bytes:
    """A deterministic serialisation of a decoded pod: keys sorted, no insignificant spaces.

    Plays the part of the kubelet's ``DeepHashObject`` (a printout of the decoded object), so
    the UID depends on the pod's content and not on formatting, comments or key order.
    """
    return json.dumps(
        pod, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    ).encode("utf-8")


def static_pod_uid(pod: Pod, *, node_name: str, source: str, source_path: str) -> str:
    """The UID the kubelet gives a pod that has none.

    Hash of the decoded pod, then ``host:<node name>`` and ``file:<path>`` for the file source
    or ``url:<url>`` otherwise; FNV-1a 128, hex-encoded (32 characters).
    """
    origin = (
        f"host:{node_name}file:{source_path}" if source == FILE_SOURCE else f"url:{source_path}"
    )
    return fnv1a_128(canonical_pod_bytes(pod) + origin.encode("utf-8")).hex()


def generate_pod_name(name: str, node_name: str) -> str:
    """``<name>-<node name in lower case>``: unique among nodes."""
    return f"{name}-{node_name.lower()}"


_STATIC_POD_TOLERATION: dict[str, str] = {"operator": "Exists", "effect": "NoExecute"}


def _same_toleration(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k, "") == b.get(k, "") for k in ("key", "operator", "value", "effect"))


def apply_static_defaults(pod: Pod, *, node_name: str, source: str, source_path: str) -> Pod:
    """Return a new pod with the kubelet's defaults for pods that come from a file or URL.

    ``source`` is ``"file"`` or ``"http"``; ``source_path`` is the manifest's file path or URL.
    ``pod`` is not modified.
    """
    out = copy.deepcopy(pod)
    metadata: dict[str, Any] = out.get("metadata") or {}
    out["metadata"] = metadata
    uid = metadata.get("uid")
    if not uid:
        uid = static_pod_uid(pod, node_name=node_name, source=source, source_path=source_path)
        metadata["uid"] = uid
    metadata["name"] = generate_pod_name(str(metadata["name"]), node_name)
    if not metadata.get("namespace"):
        metadata["namespace"] = DEFAULT_NAMESPACE
    spec: dict[str, Any] = out.get("spec") or {}
    out["spec"] = spec
    spec["nodeName"] = node_name
    annotations: dict[str, Any] = dict(metadata.get("annotations") or {})
    annotations[CONFIG_HASH_ANNOTATION] = str(uid)
    annotations[CONFIG_SOURCE_ANNOTATION] = source
    metadata["annotations"] = annotations
    if source == FILE_SOURCE:
        tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
        for index, toleration in enumerate(tolerations):
            if _same_toleration(toleration, _STATIC_POD_TOLERATION):
                tolerations[index] = dict(_STATIC_POD_TOLERATION)
                break
        else:
            tolerations.append(dict(_STATIC_POD_TOLERATION))
        spec["tolerations"] = tolerations
    status: dict[str, Any] = dict(out.get("status") or {})
    status["phase"] = "Pending"
    out["status"] = status
    return out
