"""A container's environment, and ``$(VAR)`` expansion, the way the kubelet makes them.

:func:`expand` follows ``third_party/forked/golang/expansion``:

* ``$(NAME)`` is replaced by NAME's value when NAME is defined, and left as written
  (``$(NAME)``) when it is not;
* ``$$`` is an escaped ``$``: ``$$(NAME)`` gives the literal ``$(NAME)``;
* a ``$`` before anything else, or an unclosed ``$(``, stays as written;
* expansion is single pass: a value that itself contains ``$(X)`` is not expanded again.

:func:`make_environment` follows ``makeEnvironmentVariables`` in
``pkg/kubelet/kubelet_pods.go``: ``envFrom`` first, then ``env`` in order, each
literal value expanded against the variables defined *before* it (so a reference to
a later variable stays as written), and a later definition of a name replacing the
earlier value. ``valueFrom.fieldRef`` and ``valueFrom.resourceFieldRef`` are resolved
from the pod. ``configMapKeyRef``/``secretKeyRef`` and ``envFrom`` read ConfigMaps and
Secrets: :func:`fetch_env_objects` gets those a container names from an
:class:`~minikubelet.kubeapi.objects.ObjectSource` (the API server) and
:func:`make_environment` uses them, with the kubelet's errors (a
:class:`ConfigError`, the container's ``CreateContainerConfigError``): the object's
own (``configmap "x" not found``) or ``couldn't find key k in ConfigMap ns/x``. A
missing object or key marked ``optional: true`` is skipped (the variable is not set).
``envFrom`` takes the ConfigMap's ``data`` (or the Secret's) with its ``prefix``; keys
that are not valid variable names are skipped and reported in one
``InvalidEnvironmentVariableNames`` warning per source, as the kubelet does. With no
object source (static pods only) such references fail, unless optional.
Service link variables are not made.

The kubelet hands the runtime its env as a Go map walk, in no particular order; here
the order is deterministic: first definition position, last definition value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from minikubelet import resources
from minikubelet.api.pod import Container, Pod
from minikubelet.api.validation import is_env_var_name
from minikubelet.errors import MinikubeletError
from minikubelet.kubeapi.objects import ConfigMapData, ObjectError, ObjectSource, SecretData

CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"
INVALID_ENV_NAMES: Final = "InvalidEnvironmentVariableNames"

_OPERATOR: Final = "$"
_OPENER: Final = "("
_CLOSER: Final = ")"


class ConfigError(MinikubeletError):
    """A container's config cannot be made; ``reason`` is the waiting reason the kubelet shows."""

    def __init__(self, message: str, *, reason: str = CREATE_CONTAINER_CONFIG_ERROR) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


# --- expansion -----------------------------------------------------------------------------


def _syntax_wrap(name: str) -> str:
    return f"{_OPERATOR}{_OPENER}{name}{_CLOSER}"


def _try_read_variable_name(rest: str) -> tuple[str, bool, int]:
    """(text or name, is a name, characters consumed after the ``$``)."""
    first = rest[0]
    if first == _OPERATOR:
        return _OPERATOR, False, 1  # "$$": an escaped operator
    if first == _OPENER:
        close = rest.find(_CLOSER, 1)
        if close == -1:
            return _OPERATOR + _OPENER, False, 1  # unclosed: keep "$(" and go on
        return rest[1:close], True, close + 1
    return _OPERATOR + first, False, 1  # "$x": not an expression


def expand_with(text: str, lookup: Callable[[str], str]) -> str:
    """Expand ``$(NAME)`` references in ``text``, asking ``lookup`` for each NAME."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            read, is_var, advance = _try_read_variable_name(text[cursor + 1 :])
            out.append(lookup(read) if is_var else read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def mapping_lookup(*contexts: Mapping[str, str]) -> Callable[[str], str]:
    """``MappingFuncFor``: the first context defining a name wins; unknown ones stay ``$(NAME)``."""

    def lookup(name: str) -> str:
        for context in contexts:
            if name in context:
                return context[name]
        return _syntax_wrap(name)

    return lookup


def expand(text: str, env: Mapping[str, str]) -> str:
    """Expand ``$(NAME)`` in ``text`` from ``env`` (see the module documentation)."""
    return expand_with(text, mapping_lookup(env))


def env_map(env: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """``EnvVarsToMap``: a later definition of a name wins."""
    if isinstance(env, Mapping):
        return dict(env)
    return dict(env)


def command_and_args(
    container: Container, env: Mapping[str, str] | Iterable[tuple[str, str]]
) -> tuple[list[str], list[str]]:
    """``ExpandContainerCommandAndArgs``: command and args with ``$(VAR)`` expanded from ``env``."""
    lookup = mapping_lookup(env_map(env))
    return (
        [expand_with(part, lookup) for part in container.command],
        [expand_with(part, lookup) for part in container.args],
    )


def expand_sub_path_expr(expr: str, env: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """``ExpandContainerVolumeMounts``: a volumeMount's ``subPathExpr`` expanded.

    Unlike command expansion, a reference to an undefined or empty variable is an error.
    """
    values = env_map(env)
    missing: set[str] = set()

    def lookup(name: str) -> str:
        value = values.get(name, "")
        if not value:
            missing.add(name)
        return value

    expanded = expand_with(expr, lookup)
    if missing:
        raise ConfigError(f"missing value for {', '.join(sorted(missing))}")
    return expanded


# --- field references ----------------------------------------------------------------------


def split_subscripted_path(field_path: str) -> tuple[str, str] | None:
    """``metadata.labels['app']`` -> (``metadata.labels``, ``app``); None without a subscript."""
    if not field_path.endswith("']"):
        return None
    head, sep, key = field_path[: -len("']")].partition("['")
    if not sep or not head:
        return None
    return head, key


def _go_quote(value: str) -> str:
    """Go's ``%q`` for the common cases (printable text, the usual escapes)."""
    escapes = {
        "\a": r"\a",
        "\b": r"\b",
        "\f": r"\f",
        "\n": r"\n",
        "\r": r"\r",
        "\t": r"\t",
        "\v": r"\v",
        "\\": r"\\",
        '"': r"\"",
    }
    out = []
    for ch in value:
        if ch in escapes:
            out.append(escapes[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def format_map(values: Mapping[str, str]) -> str:
    """``fieldpath.FormatMap``: ``key="value"`` lines sorted by key, no trailing newline."""
    return "\n".join(f"{key}={_go_quote(values[key])}" for key in sorted(values))


def metadata_field_value(pod: Pod, field_path: str, *, pod_name: str | None = None) -> str:
    """``fieldpath.ExtractFieldPathAsString``: the ``metadata.*`` fields a downward API reads.

    ValueError for a path it does not support.
    """
    sub = split_subscripted_path(field_path)
    if sub is not None:
        head, key = sub
        if head == "metadata.annotations":
            return pod.metadata.annotations.get(key, "")
        if head == "metadata.labels":
            return pod.metadata.labels.get(key, "")
        raise ValueError(f"fieldPath {field_path!r} does not support subscript")
    if field_path == "metadata.annotations":
        return format_map(pod.metadata.annotations)
    if field_path == "metadata.labels":
        return format_map(pod.metadata.labels)
    if field_path == "metadata.name":
        return pod.name if pod_name is None else pod_name
    if field_path == "metadata.namespace":
        return pod.namespace
    if field_path == "metadata.uid":
        return str(pod.uid)
    raise ValueError(f"unsupported fieldPath: {field_path}")


def pod_field_value(
    pod: Pod,
    field_ref: Mapping[str, object],
    *,
    pod_ips: Sequence[str],
    host_ips: Sequence[str],
    node_name: str,
    pod_name: str | None = None,
) -> str:
    """``podFieldSelectorRuntimeValue``: the value an env ``fieldRef`` selects.

    ``status.podIP`` is the first of ``pod_ips`` and ``status.hostIP`` the first of
    ``host_ips`` (the kubelet fails when it knows no node IP; so does this).
    ``spec.nodeName`` is the pod's, or ``node_name`` when the pod does not name one
    (a static pod runs on the node reading it).
    """
    api_version = field_ref.get("apiVersion") or "v1"
    path = field_ref.get("fieldPath")
    if not isinstance(path, str) or not path:
        raise ConfigError("fieldRef: fieldPath is required")
    if api_version != "v1":
        raise ConfigError(f"fieldRef {path!r}: unsupported pod version: {api_version}")
    if path == "spec.host":  # v1 clients of old, as ConvertDownwardAPIFieldLabel maps it
        path = "spec.nodeName"
    if path == "spec.nodeName":
        return pod.spec.node_name or node_name
    if path == "spec.serviceAccountName":
        return pod.spec.service_account_name
    if path == "status.hostIP":
        if not host_ips:
            raise ConfigError("fieldRef status.hostIP: the node's IP is not known")
        return host_ips[0]
    if path == "status.hostIPs":
        if not host_ips:
            raise ConfigError("fieldRef status.hostIPs: the node's IP is not known")
        return ",".join(host_ips)
    if path == "status.podIP":
        return pod_ips[0] if pod_ips else ""
    if path == "status.podIPs":
        return ",".join(pod_ips)
    if path == "spec.terminationGracePeriodSeconds":
        return str(pod.spec.termination_grace_period_seconds)
    try:
        return metadata_field_value(pod, path, pod_name=pod_name)
    except ValueError as err:
        raise ConfigError(f"fieldRef: {err}") from None


def _find_container(pod: Pod, name: str) -> Container | None:
    for c in (*pod.spec.containers, *pod.spec.init_containers):
        if c.name == name:
            return c
    return None


def container_resource_value(
    pod: Pod,
    container: Container,
    field_ref: Mapping[str, object],
    *,
    node_allocatable: Mapping[str, resources.QuantityText] | None = None,
) -> str:
    """``containerResourceRuntimeValue``: a ``resourceFieldRef``, as ceil(value / divisor).

    ``containerName`` picks another container of the pod. A cpu, memory or
    ephemeral-storage limit that is not set reads as the node's allocatable amount
    when ``node_allocatable`` is given (``defaultPodLimitsForDownwardAPI``), else as 0.
    """
    resource = field_ref.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ConfigError("resourceFieldRef: resource is required")
    target_name = field_ref.get("containerName")
    target = container
    if isinstance(target_name, str) and target_name:
        found = _find_container(pod, target_name)
        if found is None:
            raise ConfigError(f"resourceFieldRef: container {target_name} not found")
        target = found
    try:
        divisor_raw = field_ref.get("divisor")
        divisor = None if divisor_raw is None else resources.parse_quantity(divisor_raw)
        requests, limits = resources.requests_and_limits(target.resources)
        allocatable = resources.resource_list(dict(node_allocatable or {}), "nodeAllocatable")
    except ValueError as err:
        raise ConfigError(f"resourceFieldRef {resource!r}: {err}") from None
    if divisor is None or divisor == 0:
        divisor = resources.Quantity(1)
    for name in (resources.CPU, resources.MEMORY, resources.EPHEMERAL_STORAGE):
        if not limits.get(name) and name in allocatable:
            limits[name] = allocatable[name]
    kind, _, name = resource.partition(".")
    source = {"limits": limits, "requests": requests}.get(kind)
    supported = name in (resources.CPU, resources.MEMORY, resources.EPHEMERAL_STORAGE)
    if source is None or not (supported or name.startswith("hugepages-")):
        raise ConfigError(f"unsupported container resource : {resource}")
    return str(min(resources.ceil_div(source.get(name, 0), divisor), 2**63 - 1))


# --- the environment -----------------------------------------------------------------------


def _optional(ref: Mapping[str, object]) -> bool:
    return ref.get("optional") is True


def _as_mapping(value: object) -> Mapping[str, object] | None:
    return value if isinstance(value, Mapping) else None


@dataclass(slots=True)
class EnvObjects:
    """The ConfigMaps and Secrets a container's env names, each the object or why not."""

    config_maps: dict[str, ConfigMapData | ObjectError] = field(default_factory=dict)
    secrets: dict[str, SecretData | ObjectError] = field(default_factory=dict)


def _referenced(container: Container) -> tuple[list[str], list[str]]:
    """The names of the ConfigMaps and Secrets the container's env reads, in order."""
    config_maps: dict[str, None] = {}
    secrets: dict[str, None] = {}
    for env_from in container.env_from:
        for kind, names in (("configMapRef", config_maps), ("secretRef", secrets)):
            ref = _as_mapping(env_from.get(kind))
            if ref is not None and isinstance(ref.get("name"), str):
                names[str(ref["name"])] = None
    for item in container.env:
        value_from = _as_mapping(item.get("valueFrom"))
        if value_from is None or item.get("value"):
            continue
        for kind, names in (("configMapKeyRef", config_maps), ("secretKeyRef", secrets)):
            ref = _as_mapping(value_from.get(kind))
            if ref is not None and isinstance(ref.get("name"), str):
                names[str(ref["name"])] = None
    return list(config_maps), list(secrets)


async def fetch_env_objects(
    pod: Pod, container: Container, objects: ObjectSource, *, max_age: float | None = None
) -> EnvObjects:
    """Get every ConfigMap and Secret ``container``'s env names (errors kept, not raised:
    whether one matters is decided by :func:`make_environment`, reference by reference)."""
    config_maps, secrets = _referenced(container)
    found = EnvObjects()
    for name in config_maps:
        try:
            found.config_maps[name] = await objects.config_map(pod.namespace, name, max_age=max_age)
        except ObjectError as err:
            found.config_maps[name] = err
    for name in secrets:
        try:
            found.secrets[name] = await objects.secret(pod.namespace, name, max_age=max_age)
        except ObjectError as err:
            found.secrets[name] = err
    return found


def _no_objects(kind: str, pod: Pod, name: str) -> ConfigError:
    return ConfigError(
        f"couldn't get {kind} {pod.namespace}/{name}, no API server (static pods only)"
    )


_Found = Mapping[str, ConfigMapData | ObjectError] | Mapping[str, SecretData | ObjectError]


def _object(
    found: _Found | None, kind: str, pod: Pod, name: str, optional: bool
) -> ConfigMapData | SecretData | None:
    """The object, None when it is missing and optional (skip), else :class:`ConfigError`."""
    if found is None:
        if optional:
            return None
        raise _no_objects(kind, pod, name)
    value = found.get(name)
    if value is None:
        raise _no_objects(kind, pod, name)
    if isinstance(value, ObjectError):
        if value.not_found and optional:
            return None
        raise ConfigError(value.message)
    return value


def make_environment(
    pod: Pod,
    container: Container,
    *,
    pod_ips: Sequence[str] = (),
    host_ips: Sequence[str] = (),
    node_name: str = "",
    pod_name: str | None = None,
    node_allocatable: Mapping[str, resources.QuantityText] | None = None,
    objects: EnvObjects | None = None,
    warn: Callable[[str, str], None] | None = None,
) -> list[tuple[str, str]]:
    """The container's environment as (name, value) pairs, in order; see the module docs.

    ``pod_name`` overrides ``metadata.name`` for ``fieldRef`` (default: the pod's name).
    ``objects`` holds the ConfigMaps and Secrets (:func:`fetch_env_objects`; None: no
    API server); ``warn(reason, message)`` is told of skipped invalid names.
    Raises :class:`ConfigError` for a source that cannot be resolved.
    """
    config_maps = objects.config_maps if objects is not None else None
    secrets = objects.secrets if objects is not None else None
    env: dict[str, str] = {}
    for env_from in container.env_from:
        prefix = env_from.get("prefix")
        prefix = prefix if isinstance(prefix, str) else ""
        cm_ref = _as_mapping(env_from.get("configMapRef"))
        secret_ref = _as_mapping(env_from.get("secretRef"))
        values: Mapping[str, str]
        if cm_ref is not None:
            what, source = "configMap", str(cm_ref.get("name", ""))
            cm = _object(config_maps, what, pod, source, _optional(cm_ref))
            if not isinstance(cm, ConfigMapData):
                continue  # an optional source that is missing is skipped
            values = cm.data
        elif secret_ref is not None:
            what, source = "secret", str(secret_ref.get("name", ""))
            secret = _object(secrets, what, pod, source, _optional(secret_ref))
            if not isinstance(secret, SecretData):
                continue
            values = {k: v.decode("utf-8", "surrogateescape") for k, v in secret.data.items()}
        else:
            continue
        invalid: list[str] = []
        for key, text in values.items():
            full = prefix + key
            if is_env_var_name(full):
                invalid.append(full)
                continue
            env[full] = text
        if invalid and warn is not None:
            warn(
                INVALID_ENV_NAMES,
                f"Keys [{', '.join(sorted(invalid))}] from the EnvFrom {what} "
                f"{pod.namespace}/{source} were skipped since they are considered invalid "
                "environment variable names.",
            )

    lookup = mapping_lookup(env)  # reads `env` as it grows: earlier variables only
    for item in container.env:
        name = item.get("name")
        if not isinstance(name, str):
            raise ConfigError(f"container {container.name}: env entry without a name")
        value = item.get("value")
        value_from = _as_mapping(item.get("valueFrom"))
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"container {container.name}: env {name}: value must be a string")
        if value:
            env[name] = expand_with(value, lookup)
            continue
        if value_from is None:
            env[name] = ""
            continue
        field_ref = _as_mapping(value_from.get("fieldRef"))
        resource_ref = _as_mapping(value_from.get("resourceFieldRef"))
        if field_ref is not None:
            env[name] = pod_field_value(
                pod,
                field_ref,
                pod_ips=pod_ips,
                host_ips=host_ips,
                node_name=node_name,
                pod_name=pod_name,
            )
            continue
        if resource_ref is not None:
            env[name] = container_resource_value(
                pod, container, resource_ref, node_allocatable=node_allocatable
            )
            continue
        cm_key_ref = _as_mapping(value_from.get("configMapKeyRef"))
        secret_key_ref = _as_mapping(value_from.get("secretKeyRef"))
        if cm_key_ref is not None:
            ref_name, key = str(cm_key_ref.get("name", "")), str(cm_key_ref.get("key", ""))
            optional = _optional(cm_key_ref)
            cm = _object(config_maps, "configMap", pod, ref_name, optional)
            if not isinstance(cm, ConfigMapData):
                continue  # skipped: the variable is not set at all
            if key not in cm.data:
                if optional:
                    continue
                raise ConfigError(
                    f"couldn't find key {key} in ConfigMap {pod.namespace}/{ref_name}"
                )
            env[name] = cm.data[key]
        elif secret_key_ref is not None:
            ref_name, key = str(secret_key_ref.get("name", "")), str(secret_key_ref.get("key", ""))
            optional = _optional(secret_key_ref)
            secret = _object(secrets, "secret", pod, ref_name, optional)
            if not isinstance(secret, SecretData):
                continue
            if key not in secret.data:
                if optional:
                    continue
                raise ConfigError(f"couldn't find key {key} in Secret {pod.namespace}/{ref_name}")
            env[name] = secret.data[key].decode("utf-8", "surrogateescape")
        else:
            env[name] = ""
    return list(env.items())
