"""The CRI's nouns as plain dataclasses, for the server layer of every bundled runtime.

The gRPC adapter (:mod:`runtimes.base.service`, through :mod:`runtimes.base.convert`)
turns protos into these and back; a runtime's server layer sees only these, and
the CRI rules they share live in :mod:`runtimes.base.core` and
:mod:`runtimes.base.names`. Times are nanoseconds since the epoch, as the CRI
carries them.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from minikubelet.errors import InvalidArgument


class SandboxState(enum.IntEnum):
    READY = 0  # SANDBOX_READY
    NOTREADY = 1  # SANDBOX_NOTREADY


class ContainerState(enum.IntEnum):
    CREATED = 0
    RUNNING = 1
    EXITED = 2
    UNKNOWN = 3


class ContainerEventType(enum.IntEnum):
    CREATED = 0
    STARTED = 1
    STOPPED = 2
    DELETED = 3


@dataclass(frozen=True, slots=True)
class SandboxMetadata:
    name: str
    uid: str
    namespace: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class ContainerMetadata:
    name: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class PortMapping:
    protocol: int  # 0 TCP, 1 UDP, 2 SCTP
    container_port: int
    host_port: int
    host_ip: str = ""


@dataclass(frozen=True, slots=True)
class DNSConfig:
    servers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NamespaceOptions:
    """0 = POD, 1 = CONTAINER, 2 = NODE, 3 = TARGET (the CRI's NamespaceMode)."""

    network: int = 0
    pid: int = 1
    ipc: int = 0
    target_id: str = ""


@dataclass(frozen=True, slots=True)
class PodSandboxSpec:
    metadata: SandboxMetadata
    hostname: str = ""
    log_directory: str = ""
    dns: DNSConfig = DNSConfig()
    port_mappings: tuple[PortMapping, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    runtime_handler: str = ""
    cgroup_parent: str = ""
    namespaces: NamespaceOptions = NamespaceOptions()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    privileged: bool = False


@dataclass(slots=True)
class PodSandbox:
    id: str
    spec: PodSandboxSpec
    state: SandboxState
    created_at: int
    ip: str = ""
    additional_ips: tuple[str, ...] = ()
    generation: int = 0  # bumped on every change, so views can be cached

    @property
    def metadata(self) -> SandboxMetadata:
        return self.spec.metadata


@dataclass(frozen=True, slots=True)
class Mount:
    container_path: str
    host_path: str
    readonly: bool = False
    propagation: int = 0  # 0 private, 1 host-to-container, 2 bidirectional
    selinux_relabel: bool = False
    #: An image volume (CRI ``Mount.image``): the image to mount read-only, and the
    #: directory of it to mount (``image_sub_path``); ``host_path`` is then unused.
    image: str = ""
    image_sub_path: str = ""
    #: What the runtime mounted for ``image`` (repo digest, else image ID), in status.
    image_ref: str = ""


@dataclass(frozen=True, slots=True)
class Device:
    container_path: str
    host_path: str
    permissions: str = "rwm"


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_period: int = 0
    cpu_quota: int = 0
    cpu_shares: int = 0
    memory_limit_in_bytes: int = 0
    oom_score_adj: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""


@dataclass(frozen=True, slots=True)
class SecurityOptions:
    privileged: bool = False
    run_as_user: int | None = None
    run_as_username: str = ""
    run_as_group: int | None = None
    supplemental_groups: tuple[int, ...] = ()
    readonly_rootfs: bool = False
    no_new_privs: bool = False
    add_capabilities: tuple[str, ...] = ()
    drop_capabilities: tuple[str, ...] = ()
    seccomp: str = ""  # "", "unconfined", "runtime/default", "localhost/<path>"
    masked_paths: tuple[str, ...] = ()
    readonly_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContainerSpec:
    metadata: ContainerMetadata
    image: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    working_dir: str = ""
    #: Name and value; a value's non-UTF-8 bytes are surrogate-escaped (``os.fsdecode``).
    envs: tuple[tuple[str, str], ...] = ()
    mounts: tuple[Mount, ...] = ()
    devices: tuple[Device, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    log_path: str = ""
    stdin: bool = False
    stdin_once: bool = False
    tty: bool = False
    resources: Resources = Resources()
    security: SecurityOptions = SecurityOptions()
    image_annotations: Mapping[str, str] = field(default_factory=dict)
    user_specified_image: str = ""


@dataclass(slots=True)
class Container:
    id: str
    sandbox_id: str
    spec: ContainerSpec
    image_ref: str  # what the runtime resolved the image to (its ID)
    image_name: str  # the reference that found it (normalised)
    state: ContainerState
    created_at: int
    repo_digest: str = ""  # repository@sha256:..., what ContainerStatus.image_ref reports
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    log_path: str = ""  # absolute: sandbox log_directory joined with spec.log_path
    pid: int = 0
    generation: int = 0

    @property
    def metadata(self) -> ContainerMetadata:
        return self.spec.metadata


@dataclass(frozen=True, slots=True)
class Image:
    id: str  # sha256:<hex>, the image config digest
    repo_tags: tuple[str, ...]
    repo_digests: tuple[str, ...]
    size: int
    uid: int | None = None
    username: str = ""
    pinned: bool = False
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


@dataclass(frozen=True, slots=True)
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


@dataclass(frozen=True, slots=True)
class RuntimeStatus:
    conditions: tuple[Condition, ...]
    handlers: tuple[str, ...] = ("",)
    info: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    runtime_name: str
    runtime_version: str
    runtime_api_version: str = "v1"


@dataclass(frozen=True, slots=True)
class ContainerStats:
    container_id: str
    metadata: ContainerMetadata
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    timestamp: int
    cpu_usage_core_nanoseconds: int = 0
    memory_working_set_bytes: int = 0
    writable_layer_bytes: int = 0
    writable_layer_inodes: int = 0


@dataclass(frozen=True, slots=True)
class FilesystemUsage:
    timestamp: int
    mountpoint: str
    used_bytes: int
    inodes_used: int


@dataclass(frozen=True, slots=True)
class SandboxFilter:
    id: str = ""
    state: SandboxState | None = None
    label_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerFilter:
    id: str = ""
    state: ContainerState | None = None
    pod_sandbox_id: str = ""
    label_selector: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ContainerEvent:
    container_id: str
    type: ContainerEventType
    created_at: int
    sandbox: PodSandbox | None
    containers: tuple[Container, ...]


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """The CRI's label selector: every key/value of the selector is present."""
    return all(labels.get(k) == v for k, v in selector.items())


def sandbox_matches(sandbox: PodSandbox, f: SandboxFilter) -> bool:
    """ListPodSandbox's filter, but for the id (runtimes look that up directly)."""
    return (f.state is None or sandbox.state == f.state) and labels_match(
        sandbox.spec.labels, f.label_selector
    )


def container_matches(container: Container, f: ContainerFilter) -> bool:
    """ListContainers' filter, but for the id (runtimes look that up directly)."""
    return (
        (not f.pod_sandbox_id or container.sandbox_id == f.pod_sandbox_id)
        and (f.state is None or container.state == f.state)
        and labels_match(container.spec.labels, f.label_selector)
    )


_T = TypeVar("_T")

#: Sandbox and container ids are 64 hex digits; a prefix names one from this length on.
ID_LENGTH = 64
MIN_ID_PREFIX = 3


def find_by_id(table: Mapping[str, _T], key: str) -> _T | None:
    """By full id, or by a unique id prefix of 3+ characters, as crictl users expect."""
    found = table.get(key)
    if found is not None or len(key) < MIN_ID_PREFIX:
        return found
    matches = [v for k, v in table.items() if k.startswith(key)]
    return matches[0] if len(matches) == 1 else None


def container_log_path(directory: str, relative: str) -> str:
    """The container's log file; refuses a ``log_path`` that leaves the log directory."""
    if not relative:
        return ""
    if not directory:
        raise InvalidArgument(
            "ContainerConfig.log_path is set but the sandbox has no log_directory"
        )
    if not os.path.isabs(directory):
        raise InvalidArgument(f"sandbox log_directory {directory!r} must be absolute")
    full = os.path.normpath(os.path.join(directory, relative))
    if not full.startswith(os.path.normpath(directory) + os.sep):
        raise InvalidArgument(f"log_path {relative!r} escapes the log directory {directory!r}")
    return full


class RuntimeBackend(Protocol):
    """The server layer of a CRI runtime: CRI semantics over domain objects.

    Errors are raised from :mod:`minikubelet.errors` (NotFound, AlreadyExists,
    InvalidArgument, FailedPrecondition ...); the adapter turns them into status codes.
    """

    async def version(self) -> VersionInfo: ...
    async def status(self) -> RuntimeStatus: ...
    async def cgroup_driver(self) -> int: ...  # 0 systemd, 1 cgroupfs
    async def update_runtime_config(self, pod_cidr: str) -> None: ...

    async def run_pod_sandbox(self, spec: PodSandboxSpec) -> str: ...
    async def stop_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def remove_pod_sandbox(self, sandbox_id: str) -> None: ...
    async def pod_sandbox_status(self, sandbox_id: str) -> PodSandbox: ...
    async def list_pod_sandbox(self, filter: SandboxFilter) -> Sequence[PodSandbox]: ...

    async def create_container(
        self, sandbox_id: str, spec: ContainerSpec, sandbox_spec: PodSandboxSpec | None
    ) -> str: ...
    async def start_container(self, container_id: str) -> None: ...
    async def stop_container(self, container_id: str, timeout: int) -> None: ...
    async def remove_container(self, container_id: str) -> None: ...
    async def container_status(self, container_id: str) -> Container: ...
    async def list_containers(self, filter: ContainerFilter) -> Sequence[Container]: ...
    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: int
    ) -> ExecResult: ...
    async def reopen_container_log(self, container_id: str) -> None: ...
    async def container_stats(self, container_id: str) -> ContainerStats: ...
    async def list_container_stats(
        self, container_id: str, sandbox_id: str, label_selector: Mapping[str, str]
    ) -> Sequence[ContainerStats]: ...
    def container_events(self) -> AsyncIterator[ContainerEvent]: ...


class ImageBackend(Protocol):
    """The image half of a CRI runtime."""

    async def pull_image(self, reference: str, auth: Mapping[str, str]) -> str: ...
    async def image_status(self, reference: str) -> Image | None: ...
    async def list_images(self, reference_filter: str) -> Sequence[Image]: ...
    async def remove_image(self, reference: str) -> None: ...
    async def image_fs_info(self) -> Sequence[FilesystemUsage]: ...


# -- streaming (Exec, Attach, PortForward) -------------------------------------------------

#: Output channel numbers a :class:`StreamIO` reports (as the POSIX descriptors).
STDOUT = 1
STDERR = 2


class StreamIO(Protocol):
    """A running exec or attach, as the streaming server drives it.

    One reader task calls :meth:`read` until it returns None, one writer task
    calls :meth:`write_stdin` / :meth:`close_stdin` / :meth:`resize`; either may
    run while the other waits. :meth:`close` may come at any time (the client
    went away) and must leave no process, thread or descriptor behind.
    """

    async def read(self) -> tuple[int, bytes] | None:
        """The next output chunk as (STDOUT or STDERR, data); None once all output ended.

        With a tty there is only STDOUT (the terminal merges both).
        """
        ...

    async def write_stdin(self, data: bytes) -> None: ...

    async def close_stdin(self) -> None:
        """End of input: the process reads EOF (a no-op without stdin)."""
        ...

    async def resize(self, width: int, height: int) -> None:
        """Set the terminal size (a no-op without a tty)."""
        ...

    async def wait(self) -> int:
        """The exit code, once the process ended (an attach reports 0 when output ends)."""
        ...

    async def close(self) -> None:
        """Release everything; an exec still running is killed. Idempotent."""
        ...


class StreamingBackend(Protocol):
    """What a runtime offers the streaming server.

    The ``check_*`` calls run inside the CRI Exec/Attach/PortForward RPC, so a
    missing or stopped container is a gRPC error there; the others run when the
    client connects to the returned URL.
    """

    async def check_exec(self, container_id: str) -> None:
        """NotFound / FailedPrecondition unless the container exists and runs."""
        ...

    async def check_port_forward(self, sandbox_id: str) -> None:
        """NotFound / FailedPrecondition unless the sandbox exists and is ready."""
        ...

    async def exec_stream(
        self, container_id: str, cmd: Sequence[str], *, tty: bool, stdin: bool
    ) -> StreamIO:
        """Start ``cmd`` in the container with the given stdio."""
        ...

    async def attach_stream(self, container_id: str, *, tty: bool, stdin: bool) -> StreamIO:
        """Join the container's own stdio (output from now on; stdin if it has one)."""
        ...

    async def port_forward_connect(
        self, sandbox_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection to ``localhost:port`` inside the sandbox's network namespace."""
        ...
