"""Pod validation as the API server does it on create (``pkg/apis/core/validation``).

The kubelet runs ``ValidatePodCreate`` on every static pod before admitting it; this is
the part of it that a node can check on its own:

* metadata: ``name`` a DNS-1123 subdomain (at most 253 characters), ``namespace`` a
  DNS-1123 label, label keys and values, annotation keys and their total size;
* volumes: names DNS-1123 labels and unique, at most one volume type each (none is an
  ``emptyDir``, as defaulting makes it), a ``hostPath`` with a path and a known type,
  quantities in an ``emptyDir`` size limit or a downward API divisor;
* containers and init containers: names DNS-1123 labels, unique across both lists; an
  image without surrounding whitespace; ports (1-65535, names IANA service names
  unique per container, protocol TCP, UDP or SCTP; host ports unique in the pod and,
  with ``hostNetwork``, equal to the container port); env var names
  (``[-._a-zA-Z][-._a-zA-Z0-9]*``) and ``valueFrom`` with exactly one source;
  volume mounts of existing volumes at unique paths; resource names, quantities
  (read by :mod:`minikubelet.resources`, so no input costs more than a bounded
  parse), >= 0, and requests <= limits; probes and lifecycle hooks with exactly one
  handler and sane thresholds; no probes or hooks on init containers that are not
  sidecars;
* spec: ``restartPolicy``, ``dnsPolicy`` (``None`` needs a ``dnsConfig``),
  ``activeDeadlineSeconds``, ``hostname`` and ``subdomain``, no ephemeral containers.

Errors carry Kubernetes' field paths and wording (``field.Error``), e.g.
``spec.containers[1].name: Duplicate value: "app"``. All of them are collected, and
:class:`PodValidationError` joins them as the API server lists them: one alone, or
``[first, second, ...]``. A quantity is shown as written rather than in canonical form.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction
from typing import Any, Final

from minikubelet import resources
from minikubelet.api.pod import Container, Pod, PodSpec, Probe, RestartPolicy


class ErrorType(StrEnum):
    """``field.ErrorType`` as it prints."""

    NOT_FOUND = "Not found"
    REQUIRED = "Required value"
    DUPLICATE = "Duplicate value"
    INVALID = "Invalid value"
    NOT_SUPPORTED = "Unsupported value"
    FORBIDDEN = "Forbidden"
    TOO_LONG = "Too long"


#: ``Required``, ``Forbidden`` and ``TooLong`` print no value.
_NO_VALUE: Final = frozenset({ErrorType.REQUIRED, ErrorType.FORBIDDEN, ErrorType.TOO_LONG})
_SHOWN_LENGTH: Final = 1024


def _show(value: object) -> str:
    """A bad value as Go's ``%v``/``%q`` prints it (strings quoted, long ones cut short)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > _SHOWN_LENGTH:
        text = text[:_SHOWN_LENGTH] + "..."
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class FieldError:
    """One ``field.Error``: where, what kind, the bad value and a detail."""

    path: str
    type: ErrorType
    value: object = None
    detail: str = ""

    def __str__(self) -> str:
        body = str(self.type)
        if self.type not in _NO_VALUE:
            body += f": {_show(self.value)}"
        if self.detail:
            body += f": {self.detail}"
        return f"{self.path}: {body}"


class PodValidationError(ValueError):
    """A pod the API server would refuse; ``errors`` lists every reason."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = tuple(errors)
        super().__init__(aggregate(self.errors))


def aggregate(errors: Sequence[FieldError]) -> str:
    """``ErrorList.ToAggregate().Error()``: one message, or all in brackets."""
    if len(errors) == 1:
        return str(errors[0])
    return "[" + ", ".join(str(e) for e in errors) + "]"


def _required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, ErrorType.REQUIRED, detail=detail)


def _invalid(path: str, value: object, detail: str) -> FieldError:
    return FieldError(path, ErrorType.INVALID, value, detail)


def _forbidden(path: str, detail: str) -> FieldError:
    return FieldError(path, ErrorType.FORBIDDEN, detail=detail)


def _not_supported(path: str, value: object, supported: Iterable[str]) -> FieldError:
    allowed = ", ".join(json.dumps(s) for s in supported)
    return FieldError(path, ErrorType.NOT_SUPPORTED, value, f"supported values: {allowed}")


# --- apimachinery's validation/validation.go ------------------------------------------------

_DNS1123_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_FMT: Final = rf"{_DNS1123_LABEL_FMT}(\.{_DNS1123_LABEL_FMT})*"
_QUALIFIED_NAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME: Final = re.compile(_QUALIFIED_NAME_FMT)
_LABEL_VALUE_FMT: Final = f"({_QUALIFIED_NAME_FMT})?"
_ENV_VAR_NAME_FMT: Final = "[-._a-zA-Z][-._a-zA-Z0-9]*"
_PORT_NAME_CHARSET: Final = re.compile("[-a-z0-9]+")
_PORT_NAME_LETTER: Final = re.compile("[a-z]")

DNS1123_LABEL_MAX_LENGTH: Final = 63
DNS1123_SUBDOMAIN_MAX_LENGTH: Final = 253
PORT_NAME_MAX_LENGTH: Final = 15
LABEL_VALUE_MAX_LENGTH: Final = 63
QUALIFIED_NAME_MAX_LENGTH: Final = 63
TOTAL_ANNOTATION_SIZE_LIMIT: Final = 256 * 1024
MAX_INT32: Final = 2**31 - 1


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """``RegexError``, double space and all."""
    shown = " or ".join(f"'{e}', " for e in examples)
    prefix = f" (e.g. {shown}" if examples else " ("
    return f"{message}{prefix}regex used for validation is '{fmt}')"


def _max_len(length: int) -> str:
    return f"must be no more than {length} characters"


@dataclass(frozen=True, slots=True)
class _Format:
    """A format apimachinery checks with an optional length limit and a regex."""

    fmt: str
    message: str
    examples: tuple[str, ...]
    max_length: int | None = None

    def errors(self, value: str) -> list[str]:
        errs = []
        if self.max_length is not None and len(value) > self.max_length:
            errs.append(_max_len(self.max_length))
        if not re.fullmatch(self.fmt, value):
            errs.append(_regex_error(self.message, self.fmt, *self.examples))
        return errs


_DNS1123_LABEL: Final = _Format(
    _DNS1123_LABEL_FMT,
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character",
    ("my-name", "123-abc"),
    DNS1123_LABEL_MAX_LENGTH,
)
_DNS1123_SUBDOMAIN: Final = _Format(
    _DNS1123_SUBDOMAIN_FMT,
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character",
    ("example.com",),
    DNS1123_SUBDOMAIN_MAX_LENGTH,
)
_LABEL_VALUE: Final = _Format(
    _LABEL_VALUE_FMT,
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' "
    "or '.', and must start and end with an alphanumeric character",
    ("MyValue", "my_value", "12345"),
    LABEL_VALUE_MAX_LENGTH,
)
_ENV_VAR_NAME: Final = _Format(
    _ENV_VAR_NAME_FMT,
    "a valid environment variable name must consist of alphabetic characters, digits, '_', "
    "'-', or '.', and must not start with a digit",
    ("my.env-name", "MY_ENV.NAME", "MyEnvName1"),
)


def is_dns1123_label(value: str) -> list[str]:
    return _DNS1123_LABEL.errors(value)


def is_dns1123_subdomain(value: str) -> list[str]:
    return _DNS1123_SUBDOMAIN.errors(value)


def is_qualified_name(value: str) -> list[str]:
    """``IsQualifiedName``: ``[prefix/]name``, the prefix a DNS subdomain."""
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
        errs: list[str] = []
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs = ["prefix part must be non-empty"]
        else:
            errs = [f"prefix part {msg}" for msg in is_dns1123_subdomain(prefix)]
    else:
        return [
            _regex_error(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', "
                "and must start and end with an alphanumeric character",
                _QUALIFIED_NAME_FMT,
                "MyName",
                "my.name",
                "123-abc",
            )
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX_LENGTH:
        errs.append(f"name part {_max_len(QUALIFIED_NAME_MAX_LENGTH)}")
    if not _QUALIFIED_NAME.fullmatch(name):
        errs.append(
            _regex_error(
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must "
                "start and end with an alphanumeric character",
                _QUALIFIED_NAME_FMT,
                "MyName",
                "my.name",
                "123-abc",
            )
        )
    return errs


def is_label_value(value: str) -> list[str]:
    return _LABEL_VALUE.errors(value)


def is_env_var_name(value: str) -> list[str]:
    errs = _ENV_VAR_NAME.errors(value)
    if value == ".":
        errs.append("must not be '.'")
    elif value == "..":
        errs.append("must not be '..'")
    elif value.startswith(".."):
        errs.append("must not start with '..'")
    return errs


def is_valid_port_name(value: str) -> list[str]:
    """``IsValidPortName``: an IANA_SVC_NAME."""
    errs = []
    if len(value) > PORT_NAME_MAX_LENGTH:
        errs.append(_max_len(PORT_NAME_MAX_LENGTH))
    if not _PORT_NAME_CHARSET.fullmatch(value):
        errs.append("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)")
    if not _PORT_NAME_LETTER.search(value):
        errs.append("must contain at least one letter (a-z)")
    if "--" in value:
        errs.append("must not contain consecutive hyphens")
    if value and (value[0] == "-" or value[-1] == "-"):
        errs.append("must not begin or end with a hyphen")
    return errs


def is_valid_port_num(port: int) -> list[str]:
    return [] if 1 <= port <= 65535 else ["must be between 1 and 65535, inclusive"]


def _each(path: str, value: object, messages: list[str]) -> list[FieldError]:
    return [_invalid(path, value, msg) for msg in messages]


# --- helpers over the raw sub-objects the model keeps as dicts ------------------------------


def _text(obj: Mapping[str, Any], key: str, path: str, errs: list[FieldError]) -> str:
    """``obj[key]`` as a string ("" if unset); a value of another type is an error."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        errs.append(_invalid(f"{path}.{key}", value, "must be a string"))
        return ""
    return value


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list | tuple):
        return []
    return [item if isinstance(item, Mapping) else {} for item in value]


def _nonnegative(path: str, value: int | None) -> list[FieldError]:
    if value is not None and value < 0:
        return [_invalid(path, value, "must be greater than or equal to 0")]
    return []


def _quantity(path: str, value: object, errs: list[FieldError]) -> Fraction | None:
    """A quantity through the one parser; an unreadable one is an error at ``path``."""
    try:
        return resources.parse_quantity(value)
    except resources.QuantityError as err:
        errs.append(_invalid(path, value, err.reason))
    except ValueError as err:
        errs.append(_invalid(path, value, str(err)))
    return None


# --- metadata -------------------------------------------------------------------------------


def validate_metadata(pod: Pod) -> list[FieldError]:
    errs: list[FieldError] = []
    meta = pod.metadata
    if not meta.name:
        errs.append(_required("metadata.name", "name or generateName is required"))
    else:
        errs += _each("metadata.name", meta.name, is_dns1123_subdomain(meta.name))
    errs += _each("metadata.namespace", meta.namespace, is_dns1123_label(meta.namespace))
    for key, value in meta.labels.items():
        errs += _each("metadata.labels", key, is_qualified_name(key))
        errs += _each("metadata.labels", value, is_label_value(value))
    total = 0
    for key, value in meta.annotations.items():
        errs += _each("metadata.annotations", key, is_qualified_name(key.lower()))
        total += len(key) + len(value)
    if total > TOTAL_ANNOTATION_SIZE_LIMIT:
        errs.append(
            FieldError(
                "metadata.annotations",
                ErrorType.TOO_LONG,
                detail=f"may not be more than {TOTAL_ANNOTATION_SIZE_LIMIT} bytes",
            )
        )
    return errs


# --- volumes --------------------------------------------------------------------------------

#: Every ``VolumeSource`` member, in the API's order.
VOLUME_TYPES: Final = (
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
)
#: ``hostPath.type`` values (``HostPathType``); "" checks nothing.
HOST_PATH_TYPES: Final = frozenset(
    {
        "",
        "DirectoryOrCreate",
        "Directory",
        "FileOrCreate",
        "File",
        "Socket",
        "CharDevice",
        "BlockDevice",
    }
)


#: ``PullPolicy`` values.
PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")


def _validate_volume_source(volume: Mapping[str, Any], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    present = [key for key in VOLUME_TYPES if volume.get(key) is not None]
    if not present:
        return []  # the API server's defaulting makes it an emptyDir (SetDefaults_Volume)
    for extra in present[1:]:
        errs.append(_forbidden(f"{path}.{extra}", "may not specify more than 1 volume type"))
    kind = present[0]
    source = _mapping(volume.get(kind))
    here = f"{path}.{kind}"
    if kind == "hostPath":
        if not _text(source, "path", here, errs):
            errs.append(_required(f"{here}.path"))
        host_type = _text(source, "type", here, errs)
        if host_type not in HOST_PATH_TYPES:
            errs.append(_not_supported(f"{here}.type", host_type, sorted(HOST_PATH_TYPES)))
    elif kind == "emptyDir":
        limit = source.get("sizeLimit")
        if limit is not None:
            size = _quantity(f"{here}.sizeLimit", limit, errs)
            if size is not None and size < 0:
                errs.append(
                    _forbidden(
                        f"{here}.sizeLimit", "SizeLimit field must be a valid resource quantity"
                    )
                )
    elif kind == "image":  # validateImageVolumeSource
        if not _text(source, "reference", here, errs):
            errs.append(_required(f"{here}.reference"))
        policy = _text(source, "pullPolicy", here, errs)
        if policy and policy not in PULL_POLICIES:
            errs.append(_not_supported(f"{here}.pullPolicy", policy, PULL_POLICIES))
    elif kind == "downwardAPI":
        for i, item in enumerate(_items(source.get("items"))):
            ref = item.get("resourceFieldRef")
            if isinstance(ref, Mapping) and ref.get("divisor") is not None:
                where = f"{here}.items[{i}].resourceFieldRef.divisor"
                _quantity(where, ref.get("divisor"), errs)
    return errs


def validate_volumes(spec: PodSpec) -> tuple[set[str], list[FieldError]]:
    """``ValidateVolumes``: the names of the good volumes, and the errors."""
    names: set[str] = set()
    errs: list[FieldError] = []
    for i, volume in enumerate(spec.volumes):
        path = f"spec.volumes[{i}]"
        own = _validate_volume_source(volume, path)
        name = _text(volume, "name", path, own)
        if not name:
            own.append(_required(f"{path}.name"))
        else:
            own += _each(f"{path}.name", name, is_dns1123_label(name))
        if name in names:
            own.append(FieldError(f"{path}.name", ErrorType.DUPLICATE, name))
        if own:
            errs += own
        else:
            names.add(name)
    return names, errs


# --- containers -----------------------------------------------------------------------------

PROTOCOLS: Final = ("SCTP", "TCP", "UDP")
#: Resources a container may name without a domain prefix.
STANDARD_CONTAINER_RESOURCES: Final = frozenset(
    {resources.CPU, resources.MEMORY, resources.EPHEMERAL_STORAGE}
)
_PROBE_HANDLERS: Final = ("exec", "httpGet", "tcpSocket", "grpc")
_LIFECYCLE_HANDLERS: Final = ("exec", "httpGet", "tcpSocket", "sleep")


def _validate_port_num_or_name(port: object, path: str) -> list[FieldError]:
    if isinstance(port, bool):
        return [_invalid(path, port, "must be a port number or name")]
    if isinstance(port, int):
        return _each(path, port, is_valid_port_num(port))
    if isinstance(port, str):  # a string is a name, even "8080", as for an IntOrString
        return _each(path, port, is_valid_port_name(port))
    if port is None:
        return [_required(path)]
    return [_invalid(path, port, "must be a port number or name")]


def _validate_handler(
    handler: Mapping[str, Any], path: str, kinds: Sequence[str], grace: int | None = None
) -> list[FieldError]:
    """``validateHandler``: exactly one handler type, each with what it needs.

    ``grace`` is the pod's termination grace period, the longest a ``sleep`` may last.
    """
    errs: list[FieldError] = []
    found = 0
    for kind in kinds:
        body = handler.get(kind)
        if body is None:
            continue
        here = f"{path}.{kind}"
        if found:
            errs.append(_forbidden(here, "may not specify more than 1 handler type"))
            continue
        found += 1
        body = _mapping(body)
        if kind == "exec":
            if not body.get("command"):
                errs.append(_required(f"{here}.command"))
        elif kind in ("httpGet", "tcpSocket"):
            errs += _validate_port_num_or_name(body.get("port"), f"{here}.port")
            if kind == "httpGet":
                scheme = _text(body, "scheme", here, errs) or "HTTP"
                if scheme not in ("HTTP", "HTTPS"):
                    errs.append(_not_supported(f"{here}.scheme", scheme, ("HTTP", "HTTPS")))
        elif kind == "grpc":
            port = body.get("port")
            if not isinstance(port, int) or isinstance(port, bool):
                errs.append(_invalid(f"{here}.port", port, "must be a port number"))
            else:
                errs += _each(f"{here}.port", port, is_valid_port_num(port))
        elif kind == "sleep":
            seconds = body.get("seconds")
            in_range = (
                isinstance(seconds, int)
                and not isinstance(seconds, bool)
                and (grace is None or 0 <= seconds <= grace)
            )
            if grace is not None and not in_range:
                errs.append(
                    _invalid(
                        here,
                        seconds,
                        "must be non-negative and less than terminationGracePeriodSeconds "
                        f"({grace})",
                    )
                )
    if not found:
        errs.append(_required(path, "must specify a handler type"))
    return errs


def _validate_probe(probe: Probe | None, path: str) -> list[FieldError]:
    if probe is None:
        return []
    errs = _validate_handler(probe.raw, path, _PROBE_HANDLERS)
    errs += _nonnegative(f"{path}.initialDelaySeconds", probe.initial_delay_seconds)
    errs += _nonnegative(f"{path}.timeoutSeconds", probe.timeout_seconds)
    errs += _nonnegative(f"{path}.periodSeconds", probe.period_seconds)
    errs += _nonnegative(f"{path}.successThreshold", probe.success_threshold)
    errs += _nonnegative(f"{path}.failureThreshold", probe.failure_threshold)
    grace = probe.termination_grace_period_seconds
    if grace is not None and grace <= 0:
        errs.append(
            _invalid(f"{path}.terminationGracePeriodSeconds", grace, "must be greater than 0")
        )
    return errs


def _validate_resource_name(name: str, path: str) -> list[FieldError]:
    """``validateContainerResourceName``: standard, hugepages, or a qualified extended name."""
    if name in STANDARD_CONTAINER_RESOURCES or name.startswith("hugepages-"):
        return []
    if "/" not in name:
        return [_invalid(path, name, "must be a standard resource for containers")]
    return _each(path, name, is_qualified_name(name))


def validate_resources(resources_raw: Mapping[str, Any], path: str) -> list[FieldError]:
    """``ValidateResourceRequirements``: names, quantities >= 0, requests <= limits."""
    errs: list[FieldError] = []
    parsed: dict[str, dict[str, tuple[object, Fraction]]] = {}
    for part in ("limits", "requests"):
        raw = resources_raw.get(part)
        parsed[part] = {}
        if raw is None:
            continue
        if not isinstance(raw, Mapping):
            errs.append(_invalid(f"{path}.{part}", raw, "must be a mapping of quantities"))
            continue
        for name, value in raw.items():
            where = f"{path}.{part}[{name}]"
            errs += _validate_resource_name(str(name), where)
            quantity = _quantity(where, value, errs)
            if quantity is None:
                continue
            if quantity < 0:
                errs.append(_invalid(where, value, "must be greater than or equal to 0"))
            parsed[part][str(name)] = (value, quantity)
    for name, (value, quantity) in parsed["requests"].items():
        limit = parsed["limits"].get(name)
        if limit is not None and quantity > limit[1]:
            errs.append(
                _invalid(
                    f"{path}.requests",
                    value,
                    f"must be less than or equal to {name} limit of {limit[0]}",
                )
            )
    return errs


def _validate_env(container: Container, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    for i, var in enumerate(container.env):
        here = f"{path}.env[{i}]"
        name = _text(var, "name", here, errs)
        if not name:
            errs.append(_required(f"{here}.name"))
        else:
            errs += _each(f"{here}.name", name, is_env_var_name(name))
        source = var.get("valueFrom")
        if source is None:
            continue
        source = _mapping(source)
        sources = [
            key
            for key in ("fieldRef", "resourceFieldRef", "configMapKeyRef", "secretKeyRef")
            if source.get(key) is not None
        ]
        where = f"{here}.valueFrom"
        if not sources:
            errs.append(
                _invalid(
                    where,
                    "",
                    "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` "
                    "or `secretKeyRef`",
                )
            )
        elif len(sources) > 1:
            errs.append(_invalid(where, "", "may not have more than one field specified at a time"))
        if sources and var.get("value"):
            errs.append(_invalid(where, "", "may not be specified when `value` is not empty"))
        field_ref = source.get("fieldRef")
        if isinstance(field_ref, Mapping) and not field_ref.get("fieldPath"):
            errs.append(_required(f"{where}.fieldRef.fieldPath"))
        resource_ref = source.get("resourceFieldRef")
        if isinstance(resource_ref, Mapping):
            if not resource_ref.get("resource"):
                errs.append(_required(f"{where}.resourceFieldRef.resource"))
            if resource_ref.get("divisor") is not None:
                _quantity(f"{where}.resourceFieldRef.divisor", resource_ref["divisor"], errs)
    return errs


def _validate_volume_mounts(container: Container, volumes: set[str], path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    mount_points: set[str] = set()
    for i, mount in enumerate(container.volume_mounts):
        here = f"{path}.volumeMounts[{i}]"
        name = _text(mount, "name", here, errs)
        if not name:
            errs.append(_required(f"{here}.name"))
        if name not in volumes:
            errs.append(FieldError(f"{here}.name", ErrorType.NOT_FOUND, name))
        mount_path = _text(mount, "mountPath", here, errs)
        if not mount_path:
            errs.append(_required(f"{here}.mountPath"))
        if mount_path in mount_points:
            errs.append(_invalid(f"{here}.mountPath", mount_path, "must be unique"))
        mount_points.add(mount_path)
        sub_path = _text(mount, "subPath", here, errs)
        if sub_path:
            if sub_path.startswith("/"):
                errs.append(_invalid(f"{here}.subPath", sub_path, "must be a relative path"))
            if ".." in sub_path.split("/"):
                errs.append(_invalid(f"{here}.subPath", sub_path, "must not contain '..'"))
    return errs


def _validate_ports(container: Container, path: str) -> list[FieldError]:
    errs: list[FieldError] = []
    names: set[str] = set()
    for i, port in enumerate(container.ports):
        here = f"{path}.ports[{i}]"
        if port.name:
            messages = is_valid_port_name(port.name)
            if messages:
                errs += _each(f"{here}.name", port.name, messages)
            elif port.name in names:
                errs.append(FieldError(f"{here}.name", ErrorType.DUPLICATE, port.name))
            else:
                names.add(port.name)
        if port.container_port == 0:
            errs.append(_required(f"{here}.containerPort"))
        else:
            messages = is_valid_port_num(port.container_port)
            errs += _each(f"{here}.containerPort", port.container_port, messages)
        if port.host_port != 0:
            errs += _each(f"{here}.hostPort", port.host_port, is_valid_port_num(port.host_port))
        # An empty protocol is defaulted to TCP, as the API server does.
        if port.protocol and port.protocol not in PROTOCOLS:
            errs.append(_not_supported(f"{here}.protocol", port.protocol, PROTOCOLS))
    return errs


def _validate_container(
    container: Container, path: str, spec: PodSpec, volumes: set[str], names: set[str]
) -> list[FieldError]:
    """``validateContainerCommon`` plus the name's uniqueness across the pod."""
    errs: list[FieldError] = []
    if not container.name:
        errs.append(_required(f"{path}.name"))
    else:
        errs += _each(f"{path}.name", container.name, is_dns1123_label(container.name))
    if container.name in names:
        errs.append(FieldError(f"{path}.name", ErrorType.DUPLICATE, container.name))
    else:
        names.add(container.name)
    if not container.image:
        errs.append(_required(f"{path}.image"))
    elif container.image.strip() != container.image:
        errs.append(
            _invalid(
                f"{path}.image", container.image, "must not have leading or trailing whitespace"
            )
        )
    if container.lifecycle is not None:
        for hook in ("postStart", "preStop"):
            handler = container.lifecycle.get(hook)
            if handler is not None:
                errs += _validate_handler(
                    _mapping(handler),
                    f"{path}.lifecycle.{hook}",
                    _LIFECYCLE_HANDLERS,
                    spec.termination_grace_period_seconds,
                )
    errs += _validate_probe(container.liveness_probe, f"{path}.livenessProbe")
    errs += _validate_probe(container.readiness_probe, f"{path}.readinessProbe")
    errs += _validate_probe(container.startup_probe, f"{path}.startupProbe")
    for key, probe in (
        ("livenessProbe", container.liveness_probe),
        ("startupProbe", container.startup_probe),
    ):
        if probe is not None and probe.success_threshold != 1:
            errs.append(
                _invalid(f"{path}.{key}.successThreshold", probe.success_threshold, "must be 1")
            )
    errs += _validate_ports(container, path)
    errs += _validate_env(container, path)
    errs += _validate_volume_mounts(container, volumes, path)
    errs += validate_resources(container.resources, f"{path}.resources")
    return errs


def _validate_init_container_only(container: Container, path: str) -> list[FieldError]:
    """What a regular init container (not a sidecar) may not have."""
    if container.is_restartable:
        return []
    errs = []
    for key, value in (
        ("lifecycle", container.lifecycle),
        ("livenessProbe", container.liveness_probe),
        ("readinessProbe", container.readiness_probe),
        ("startupProbe", container.startup_probe),
    ):
        if value is not None:
            errs.append(
                _forbidden(
                    f"{path}.{key}",
                    "may not be set for init containers without restartPolicy=Always",
                )
            )
    return errs


def _validate_host_ports(spec: PodSpec) -> list[FieldError]:
    """``AccumulateUniqueHostPorts``, and ``validateHostNetwork``'s hostPort == containerPort."""
    errs: list[FieldError] = []
    seen: set[str] = set()
    for key, containers in (
        ("containers", spec.containers),
        ("initContainers", spec.init_containers),
    ):
        for i, container in enumerate(containers):
            for j, port in enumerate(container.ports):
                where = f"spec.{key}[{i}].ports[{j}].hostPort"
                if spec.host_network and port.host_port not in (0, port.container_port):
                    errs.append(
                        _invalid(
                            where,
                            port.host_port,
                            "must match `containerPort` when `hostNetwork` is true",
                        )
                    )
                if port.host_port == 0:
                    continue
                ident = f"{port.host_port}/{port.protocol or 'TCP'}"
                if ident in seen:
                    errs.append(FieldError(where, ErrorType.DUPLICATE, ident))
                seen.add(ident)
    return errs


# --- the pod --------------------------------------------------------------------------------

DNS_POLICIES: Final = ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None")


def validate_spec(spec: PodSpec) -> list[FieldError]:
    """``ValidatePodSpec``, the parts a node can check."""
    volumes, errs = validate_volumes(spec)
    names: set[str] = set()
    if not spec.containers:
        errs.append(_required("spec.containers"))
    for i, container in enumerate(spec.containers):
        path = f"spec.containers[{i}]"
        errs += _validate_container(container, path, spec, volumes, names)
        if container.restart_policy is not None:
            errs.append(
                _forbidden(f"{path}.restartPolicy", "may not be set for non-init containers")
            )
    for i, container in enumerate(spec.init_containers):
        path = f"spec.initContainers[{i}]"
        errs += _validate_container(container, path, spec, volumes, names)
        errs += _validate_init_container_only(container, path)
        if container.restart_policy not in (None, RestartPolicy.ALWAYS):
            errs.append(
                _not_supported(f"{path}.restartPolicy", container.restart_policy.value, ("Always",))
            )
    if spec.ephemeral_containers:
        errs.append(_forbidden("spec.ephemeralContainers", "cannot be set on create"))
    errs += _validate_host_ports(spec)
    if spec.dns_policy not in DNS_POLICIES:
        errs.append(_not_supported("spec.dnsPolicy", spec.dns_policy, DNS_POLICIES))
    if spec.dns_policy == "None" and spec.dns_config is None:
        errs.append(
            _required("spec.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None")
        )
    deadline = spec.active_deadline_seconds
    if deadline is not None and not 1 <= deadline <= MAX_INT32:
        errs.append(
            _invalid(
                "spec.activeDeadlineSeconds",
                deadline,
                f"must be between 1 and {MAX_INT32}, inclusive",
            )
        )
    if spec.hostname:
        errs += _each("spec.hostname", spec.hostname, is_dns1123_label(spec.hostname))
    if spec.subdomain:
        errs += _each("spec.subdomain", spec.subdomain, is_dns1123_label(spec.subdomain))
    errs += _validate_pod_groups(spec.security_context)
    errs += _validate_seccomp_profiles(spec)
    return errs


SECCOMP_PROFILE_TYPES: Final = ("Localhost", "RuntimeDefault", "Unconfined")


def _validate_seccomp_profile(profile: object, path: str) -> list[FieldError]:
    """``validateSeccompProfileField``: a known type; a Localhost profile names a file
    below the kubelet's seccomp root (``validateLocalDescendingPath``), no other type does."""
    if not isinstance(profile, Mapping):
        return []
    errs: list[FieldError] = []
    kind = profile.get("type")
    if not kind:
        errs.append(_required(f"{path}.type"))
    elif kind not in SECCOMP_PROFILE_TYPES:
        errs.append(_not_supported(f"{path}.type", kind, SECCOMP_PROFILE_TYPES))
    local = profile.get("localhostProfile")
    here = f"{path}.localhostProfile"
    if kind == "Localhost":
        if local is None:
            errs.append(_required(here, "must be set when seccomp type is Localhost"))
        elif not isinstance(local, str) or local.startswith("/"):
            errs.append(_invalid(here, local, "must be a relative path"))
        elif ".." in local.split("/"):
            errs.append(_invalid(here, local, "must not contain '..'"))
    elif local is not None:
        errs.append(_invalid(here, local, "can only be set when seccomp type is Localhost"))
    return errs


def _validate_seccomp_profiles(spec: PodSpec) -> list[FieldError]:
    errs = _validate_seccomp_profile(
        spec.security_context.get("seccompProfile"), "spec.securityContext.seccompProfile"
    )
    for kind, containers in (
        ("initContainers", spec.init_containers),
        ("containers", spec.containers),
    ):
        for i, container in enumerate(containers):
            sc = container.security_context or {}
            path = f"spec.{kind}[{i}].securityContext.seccompProfile"
            errs += _validate_seccomp_profile(sc.get("seccompProfile"), path)
    return errs


FS_GROUP_CHANGE_POLICIES: Final = ("Always", "OnRootMismatch")
_GROUP_ID_RANGE: Final = f"must be between 0 and {MAX_INT32}, inclusive"


def _validate_pod_groups(sc: Mapping[str, Any]) -> list[FieldError]:
    """``validatePodSpecSecurityContext``'s groups: ``fsGroup`` and ``supplementalGroups``
    are group IDs, ``fsGroupChangePolicy`` one of the two policies."""
    errs: list[FieldError] = []
    here = "spec.securityContext"
    groups = [("fsGroup", sc.get("fsGroup"))]
    groups += [
        (f"supplementalGroups[{i}]", g) for i, g in enumerate(sc.get("supplementalGroups") or ())
    ]
    for name, gid in groups:
        if isinstance(gid, int) and not isinstance(gid, bool) and not 0 <= gid <= MAX_INT32:
            errs.append(_invalid(f"{here}.{name}", gid, _GROUP_ID_RANGE))
    policy = sc.get("fsGroupChangePolicy")
    if policy is not None and policy not in FS_GROUP_CHANGE_POLICIES:
        errs.append(_not_supported(f"{here}.fsGroupChangePolicy", policy, FS_GROUP_CHANGE_POLICIES))
    return errs


def validate_pod(pod: Pod) -> list[FieldError]:
    """Every reason the API server would refuse to create ``pod`` (empty if none)."""
    return validate_metadata(pod) + validate_spec(pod.spec)


def check_pod(pod: Pod) -> Pod:
    """``pod`` itself, or :class:`PodValidationError` listing every reason it is invalid."""
    errors = validate_pod(pod)
    if errors:
        raise PodValidationError(errors)
    return pod
