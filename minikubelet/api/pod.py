"""A typed reading of the v1 Pod fields the kubelet core needs.

:meth:`Pod.from_dict` takes the plain dict a YAML or JSON manifest decodes to. It
applies the defaults the API server would have applied (``restartPolicy: Always``,
``terminationGracePeriodSeconds: 30``, the image pull policy derived from the
image's tag, the termination message path and policy, probe timings), and keeps
the original dict in ``raw`` so fields this model does not name are still there.

Parsing refuses only values of the wrong type (a list where a string belongs, an
unknown ``restartPolicy``), with a :class:`ValueError` whose message starts with
the field's path, e.g. ``spec.containers[1].image: expected a string, got int``.
Whether the values make sense (names are DNS labels, ports are in range, ...) is
checked by :mod:`minikubelet.api.validation`, which :meth:`Pod.from_dict` runs on the
pod it read, as the kubelet validates every static pod. A YAML ``null`` means "not set".

Sub-objects the core passes through without looking inside (env, volumes,
resources, lifecycle, security contexts) stay plain dicts; treat them as read-only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, TypeVar

from minikubelet import reference
from minikubelet.types import PodUID

#: The namespace a manifest without one lands in, as for the kubelet's file source.
DEFAULT_NAMESPACE: Final = "default"
DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: Final = 30
DEFAULT_TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
DEFAULT_DNS_POLICY: Final = "ClusterFirst"
#: Where the pod config says a pod came from (``minikubelet.config.types``; not imported,
#: as the config package imports this module).
CONFIG_SOURCE_ANNOTATION: Final = "kubernetes.io/config.source"
API_SOURCE: Final = "api"

RawObject = dict[str, Any]
"""A JSON object from the manifest, kept as it came."""


class RestartPolicy(StrEnum):
    """``spec.restartPolicy``, and ``restartPolicy`` of a sidecar (init) container."""

    ALWAYS = "Always"
    ON_FAILURE = "OnFailure"
    NEVER = "Never"


class PullPolicy(StrEnum):
    ALWAYS = "Always"
    IF_NOT_PRESENT = "IfNotPresent"
    NEVER = "Never"


class TerminationMessagePolicy(StrEnum):
    FILE = "File"
    FALLBACK_TO_LOGS_ON_ERROR = "FallbackToLogsOnError"


E = TypeVar("E", bound=StrEnum)


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


class _Fields:
    """Typed access to one JSON object, naming the field in every error."""

    __slots__ = ("data", "path")

    def __init__(self, data: object, path: str) -> None:
        if not isinstance(data, Mapping):
            raise ValueError(f"{path or '<pod>'}: expected a mapping, got {_kind(data)}")
        self.data: Mapping[str, Any] = data
        self.path = path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str) -> object:
        return self.data.get(key)

    def _wrong(self, key: str, expected: str, value: object) -> ValueError:
        return ValueError(f"{self.at(key)}: expected {expected}, got {_kind(value)}")

    def opt_text(self, key: str) -> str | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self._wrong(key, "a string", value)
        return value

    def text(self, key: str, default: str = "") -> str:
        value = self.opt_text(key)
        return default if value is None else value

    def opt_integer(self, key: str) -> int | None:
        value = self._get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise self._wrong(key, "an integer", value)
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise self._wrong(key, "an integer", value)

    def integer(self, key: str, default: int) -> int:
        value = self.opt_integer(key)
        return default if value is None else value

    def opt_flag(self, key: str) -> bool | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean", value)
        return value

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.opt_flag(key)
        return default if value is None else value

    def opt_time(self, key: str) -> str | None:
        """An RFC 3339 timestamp; YAML may already have decoded it to a datetime."""
        value = self._get(key)
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=dt.UTC)
            return value.isoformat().replace("+00:00", "Z")
        return self.opt_text(key)

    def opt_enum(self, key: str, enum: type[E]) -> E | None:
        value = self.opt_text(key)
        if value is None:
            return None
        try:
            return enum(value)
        except ValueError:
            allowed = ", ".join(member.value for member in enum)
            raise ValueError(f"{self.at(key)}: {value!r} is not one of {allowed}") from None

    def str_map(self, key: str) -> dict[str, str]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self._wrong(key, "a mapping of strings", value)
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                bad = k if not isinstance(k, str) else v
                raise ValueError(f"{self.at(key)}.{k}: expected a string, got {_kind(bad)}")
            out[k] = v
        return out

    def str_list(self, key: str) -> tuple[str, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise self._wrong(key, "a list of strings", value)
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise ValueError(f"{self.at(key)}[{i}]: expected a string, got {_kind(item)}")
        return tuple(value)

    def opt_obj(self, key: str) -> RawObject | None:
        value = self._get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise self._wrong(key, "a mapping", value)
        return dict(value)

    def obj(self, key: str) -> RawObject:
        value = self.opt_obj(key)
        return {} if value is None else value

    def child(self, key: str) -> _Fields:
        return _Fields(self.obj(key), self.at(key))

    def object_list(self, key: str) -> tuple[RawObject, ...]:
        value = self._get(key)
        if value is None:
            return ()
        if not isinstance(value, list | tuple):
            raise self._wrong(key, "a list", value)
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ValueError(f"{self.at(key)}[{i}]: expected a mapping, got {_kind(item)}")
            out.append(dict(item))
        return tuple(out)


def default_pull_policy(image: str) -> PullPolicy:
    """The API server's default: ``Always`` for ``:latest`` or an untagged, undigested image.

    A reference that does not parse gets ``IfNotPresent``; rejecting it is validation's job.
    """
    try:
        ref = reference.parse(image)
    except reference.InvalidReference:
        return PullPolicy.IF_NOT_PRESENT
    return PullPolicy.ALWAYS if ref.tag == reference.DEFAULT_TAG else PullPolicy.IF_NOT_PRESENT


_PROBE_HANDLERS: Final = ("exec", "httpGet", "tcpSocket", "grpc")


@dataclass(frozen=True, slots=True)
class Probe:
    """A liveness, readiness or startup probe with the API defaults applied."""

    handler: str = ""  # which of exec / httpGet / tcpSocket / grpc is set ("" if none)
    initial_delay_seconds: int = 0
    timeout_seconds: int = 1
    period_seconds: int = 10
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace_period_seconds: int | None = None
    raw: RawObject = field(default_factory=dict, hash=False, repr=False)

    @classmethod
    def from_dict(cls, data: object, path: str = "probe") -> Probe:
        f = _Fields(data, path)
        for name in _PROBE_HANDLERS:
            f.opt_obj(name)  # type check each handler that is present
        handler = next((name for name in _PROBE_HANDLERS if f.data.get(name) is not None), "")
        return cls(
            handler=handler,
            initial_delay_seconds=f.integer("initialDelaySeconds", 0),
            timeout_seconds=f.integer("timeoutSeconds", 1),
            period_seconds=f.integer("periodSeconds", 10),
            success_threshold=f.integer("successThreshold", 1),
            failure_threshold=f.integer("failureThreshold", 3),
            termination_grace_period_seconds=f.opt_integer("terminationGracePeriodSeconds"),
            raw=dict(f.data),
        )


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    name: str = ""
    host_port: int = 0
    host_ip: str = ""
    protocol: str = "TCP"

    @classmethod
    def from_dict(cls, data: object, path: str) -> ContainerPort:
        f = _Fields(data, path)
        return cls(
            container_port=f.integer("containerPort", 0),
            name=f.text("name"),
            host_port=f.integer("hostPort", 0),
            host_ip=f.text("hostIP"),
            protocol=f.text("protocol", "TCP"),
        )

    def to_dict(self) -> RawObject:
        """The port as the API serialises it (empty fields left out)."""
        out: RawObject = {}
        if self.name:
            out["name"] = self.name
        if self.host_port:
            out["hostPort"] = self.host_port
        out["containerPort"] = self.container_port
        out["protocol"] = self.protocol
        if self.host_ip:
            out["hostIP"] = self.host_ip
        return out


@dataclass(frozen=True, slots=True)
class Container:
    """One entry of ``spec.containers`` or ``spec.initContainers``, defaults applied."""

    name: str
    image: str = ""
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    env: tuple[RawObject, ...] = field(default=(), hash=False)
    env_from: tuple[RawObject, ...] = field(default=(), hash=False)
    ports: tuple[ContainerPort, ...] = ()
    resources: RawObject = field(default_factory=dict, hash=False)
    volume_mounts: tuple[RawObject, ...] = field(default=(), hash=False)
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    lifecycle: RawObject | None = field(default=None, hash=False)
    #: Only meaningful for init containers: ``Always`` makes one a sidecar.
    restart_policy: RestartPolicy | None = None
    image_pull_policy: PullPolicy = PullPolicy.IF_NOT_PRESENT
    termination_message_path: str = DEFAULT_TERMINATION_MESSAGE_PATH
    termination_message_policy: TerminationMessagePolicy = TerminationMessagePolicy.FILE
    security_context: RawObject | None = field(default=None, hash=False)
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    raw: RawObject = field(default_factory=dict, hash=False, repr=False)

    @property
    def is_restartable(self) -> bool:
        """True for a sidecar: an init container whose own restartPolicy is ``Always``."""
        return self.restart_policy is RestartPolicy.ALWAYS

    @property
    def pre_stop(self) -> RawObject | None:
        """The ``lifecycle.preStop`` handler, if any."""
        if not self.lifecycle:
            return None
        handler = self.lifecycle.get("preStop")
        return dict(handler) if isinstance(handler, Mapping) else None

    @classmethod
    def from_dict(cls, data: object, path: str = "container") -> Container:
        f = _Fields(data, path)
        image = f.text("image")
        ports = tuple(
            ContainerPort.from_dict(port, f"{f.at('ports')}[{i}]")
            for i, port in enumerate(f.object_list("ports"))
        )

        def probe(key: str) -> Probe | None:
            body = f.opt_obj(key)
            return None if body is None else Probe.from_dict(body, f.at(key))

        lifecycle = f.opt_obj("lifecycle")
        if lifecycle is not None:
            life = _Fields(lifecycle, f.at("lifecycle"))
            life.opt_obj("postStart")
            life.opt_obj("preStop")
        return cls(
            name=f.text("name"),
            image=image,
            command=f.str_list("command"),
            args=f.str_list("args"),
            working_dir=f.text("workingDir"),
            env=f.object_list("env"),
            env_from=f.object_list("envFrom"),
            ports=ports,
            resources=f.obj("resources"),
            volume_mounts=f.object_list("volumeMounts"),
            liveness_probe=probe("livenessProbe"),
            readiness_probe=probe("readinessProbe"),
            startup_probe=probe("startupProbe"),
            lifecycle=lifecycle,
            restart_policy=f.opt_enum("restartPolicy", RestartPolicy),
            image_pull_policy=(
                f.opt_enum("imagePullPolicy", PullPolicy) or default_pull_policy(image)
            ),
            termination_message_path=(
                f.opt_text("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
            ),
            termination_message_policy=(
                f.opt_enum("terminationMessagePolicy", TerminationMessagePolicy)
                or TerminationMessagePolicy.FILE
            ),
            security_context=f.opt_obj("securityContext"),
            stdin=f.flag("stdin"),
            stdin_once=f.flag("stdinOnce"),
            tty=f.flag("tty"),
            raw=dict(f.data),
        )


@dataclass(frozen=True, slots=True)
class ObjectMeta:
    name: str = ""
    namespace: str = DEFAULT_NAMESPACE
    uid: PodUID = field(default=PodUID(""))
    labels: dict[str, str] = field(default_factory=dict, hash=False)
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    creation_timestamp: str | None = None
    #: Set once the pod is being deleted; the kubelet then restarts nothing.
    deletion_timestamp: str | None = None
    deletion_grace_period_seconds: int | None = None

    @classmethod
    def from_dict(cls, data: object, path: str = "metadata") -> ObjectMeta:
        f = _Fields(data, path)
        return cls(
            name=f.text("name"),
            namespace=f.opt_text("namespace") or DEFAULT_NAMESPACE,
            uid=PodUID(f.text("uid")),
            labels=f.str_map("labels"),
            annotations=f.str_map("annotations"),
            creation_timestamp=f.opt_time("creationTimestamp"),
            deletion_timestamp=f.opt_time("deletionTimestamp"),
            deletion_grace_period_seconds=f.opt_integer("deletionGracePeriodSeconds"),
        )


@dataclass(frozen=True, slots=True)
class PodSpec:
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    #: Debug containers; the decision core leaves them alone.
    ephemeral_containers: tuple[RawObject, ...] = field(default=(), hash=False)
    restart_policy: RestartPolicy = RestartPolicy.ALWAYS
    termination_grace_period_seconds: int = DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS
    active_deadline_seconds: int | None = None
    host_network: bool = False
    host_pid: bool = False
    host_ipc: bool = False
    share_process_namespace: bool | None = None
    hostname: str = ""
    subdomain: str = ""
    set_hostname_as_fqdn: bool | None = None
    dns_policy: str = DEFAULT_DNS_POLICY
    dns_config: RawObject | None = field(default=None, hash=False)
    host_aliases: tuple[RawObject, ...] = field(default=(), hash=False)
    node_name: str = ""
    service_account_name: str = ""
    volumes: tuple[RawObject, ...] = field(default=(), hash=False)
    runtime_class_name: str | None = None
    security_context: RawObject = field(default_factory=dict, hash=False)
    image_pull_secrets: tuple[RawObject, ...] = field(default=(), hash=False)
    priority: int | None = None
    priority_class_name: str = ""
    enable_service_links: bool = True

    @classmethod
    def from_dict(cls, data: object, path: str = "spec") -> PodSpec:
        f = _Fields(data, path)

        def containers(key: str) -> tuple[Container, ...]:
            return tuple(
                Container.from_dict(c, f"{f.at(key)}[{i}]")
                for i, c in enumerate(f.object_list(key))
            )

        return cls(
            containers=containers("containers"),
            init_containers=containers("initContainers"),
            ephemeral_containers=f.object_list("ephemeralContainers"),
            restart_policy=f.opt_enum("restartPolicy", RestartPolicy) or RestartPolicy.ALWAYS,
            termination_grace_period_seconds=f.integer(
                "terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS
            ),
            active_deadline_seconds=f.opt_integer("activeDeadlineSeconds"),
            host_network=f.flag("hostNetwork"),
            host_pid=f.flag("hostPID"),
            host_ipc=f.flag("hostIPC"),
            share_process_namespace=f.opt_flag("shareProcessNamespace"),
            hostname=f.text("hostname"),
            subdomain=f.text("subdomain"),
            set_hostname_as_fqdn=f.opt_flag("setHostnameAsFQDN"),
            dns_policy=f.opt_text("dnsPolicy") or DEFAULT_DNS_POLICY,
            dns_config=f.opt_obj("dnsConfig"),
            host_aliases=f.object_list("hostAliases"),
            node_name=f.text("nodeName"),
            service_account_name=f.text("serviceAccountName"),
            volumes=f.object_list("volumes"),
            runtime_class_name=f.opt_text("runtimeClassName"),
            security_context=f.obj("securityContext"),
            image_pull_secrets=f.object_list("imagePullSecrets"),
            priority=f.opt_integer("priority"),
            priority_class_name=f.text("priorityClassName"),
            enable_service_links=f.flag("enableServiceLinks", True),
        )


@dataclass(frozen=True, slots=True)
class Pod:
    metadata: ObjectMeta
    spec: PodSpec
    raw: RawObject = field(default_factory=dict, hash=False, repr=False)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def uid(self) -> PodUID:
        return self.metadata.uid

    @property
    def full_name(self) -> str:
        """``name_namespace``, the kubelet's key for a pod across UIDs."""
        return f"{self.metadata.name}_{self.metadata.namespace}"

    @property
    def is_deleting(self) -> bool:
        return self.metadata.deletion_timestamp is not None

    def __str__(self) -> str:
        return f"{self.metadata.namespace}/{self.metadata.name}"

    @classmethod
    def from_dict(cls, data: object, *, validate: bool = True) -> Pod:
        """Read and validate a v1 Pod manifest.

        ValueError names the first field of the wrong type; a pod that reads but that the
        API server would refuse raises :class:`~minikubelet.api.validation.PodValidationError`
        (a ValueError) listing every reason, in Kubernetes' words. As in the kubelet, only
        static pods are validated: a pod from the API server (``kubernetes.io/config.source:
        api``) was validated there, with the cluster's feature gates, and may carry what a
        create may not (ephemeral containers). ``validate=False`` only reads, for code that
        must cope with a pod however it came (tests of that code).
        """
        from minikubelet.api import validation  # it reads this module's types

        f = _Fields(data, "")
        pod = cls(
            metadata=ObjectMeta.from_dict(f.obj("metadata"), "metadata"),
            spec=PodSpec.from_dict(f.obj("spec"), "spec"),
            raw=dict(f.data),
        )
        from_api = pod.metadata.annotations.get(CONFIG_SOURCE_ANNOTATION) == API_SOURCE
        return validation.check_pod(pod) if validate and not from_api else pod
