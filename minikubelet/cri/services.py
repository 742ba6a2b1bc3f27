"""The CRI seam: what the kubelet core asks of a runtime, and which runtime serves which pod.

:class:`RuntimeService` and :class:`ImageService` are the two CRI services as the
core calls them (the kubelet's ``internalapi.RuntimeService`` and
``ImageManagerService``); :class:`~minikubelet.cri.client.CRIClient` is one
implementation of both, over gRPC. :class:`RuntimeHandlers` maps a runtime handler
name (the RuntimeClass ``handler``; ``""`` is the node's default) to the client that
serves it. The core takes these types and nothing more concrete, so it never knows
which runtime is behind a socket, nor how many sockets there are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from minikubelet.cri.endpoint import Endpoint
from minikubelet.cri.v1 import api_pb2 as pb

#: The handler name of the node's default runtime (a pod without a runtime class).
DEFAULT_HANDLER = ""


class RuntimeService(Protocol):
    """The CRI RuntimeService calls the kubelet core makes."""

    @property
    def endpoint(self) -> Endpoint: ...

    @property
    def version_info(self) -> pb.VersionResponse | None:
        """The Version handshake's answer, once connected."""
        ...

    async def connect(self) -> pb.VersionResponse: ...

    async def status(self, verbose: bool = False) -> pb.StatusResponse: ...

    async def run_pod_sandbox(
        self, config: pb.PodSandboxConfig, runtime_handler: str = ""
    ) -> str: ...

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None: ...

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None: ...

    async def pod_sandbox_status(
        self, pod_sandbox_id: str, verbose: bool = False
    ) -> pb.PodSandboxStatusResponse: ...

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> Sequence[pb.PodSandbox]: ...

    async def create_container(
        self,
        pod_sandbox_id: str,
        config: pb.ContainerConfig,
        sandbox_config: pb.PodSandboxConfig,
    ) -> str: ...

    async def start_container(self, container_id: str) -> None: ...

    async def stop_container(self, container_id: str, timeout: int) -> None: ...

    async def remove_container(self, container_id: str) -> None: ...

    async def list_containers(
        self, filter: pb.ContainerFilter | None = None
    ) -> Sequence[pb.Container]: ...

    async def container_status(
        self, container_id: str, verbose: bool = False
    ) -> pb.ContainerStatusResponse: ...

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: int = 0
    ) -> pb.ExecSyncResponse: ...

    async def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str: ...

    async def attach(
        self,
        container_id: str,
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str: ...

    async def port_forward(self, pod_sandbox_id: str, ports: Sequence[int]) -> str: ...

    async def reopen_container_log(self, container_id: str) -> None: ...


class ImageService(Protocol):
    """The CRI ImageService calls the kubelet core makes."""

    async def pull_image(
        self,
        image: str,
        auth: pb.AuthConfig | None = None,
        sandbox_config: pb.PodSandboxConfig | None = None,
    ) -> str: ...

    async def image_status(self, image: str, verbose: bool = False) -> pb.Image | None: ...


class CRIRuntime(RuntimeService, ImageService, Protocol):
    """One endpoint serving both services, as every CRI runtime does."""


@dataclass(frozen=True, slots=True)
class Handler:
    """A runtime handler: the client of the endpoint that serves it, and the
    ``runtime_handler`` string passed in RunPodSandbox (``""``: the runtime's default)."""

    name: str
    client: CRIRuntime
    runtime_handler: str = ""


class RuntimeHandlers:
    """The node's runtimes by handler name; ``""`` (:data:`DEFAULT_HANDLER`) is the default.

    Several handlers may share one client (one endpoint serving several OCI runtimes).
    """

    def __init__(self, default: CRIRuntime) -> None:
        self._handlers: dict[str, Handler] = {DEFAULT_HANDLER: Handler(DEFAULT_HANDLER, default)}

    def add(self, name: str, client: CRIRuntime, runtime_handler: str = "") -> None:
        if not name:
            raise ValueError("a runtime handler needs a name")
        self._handlers[name] = Handler(name, client, runtime_handler)

    def __getitem__(self, name: str) -> Handler:
        found = self._handlers.get(name)
        if found is None:
            raise KeyError(f"no runtime handler {name!r} on this node")
        return found

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    @property
    def default(self) -> CRIRuntime:
        return self._handlers[DEFAULT_HANDLER].client

    def clients(self) -> list[CRIRuntime]:
        """Each distinct endpoint's client once, the default first."""
        seen: dict[int, CRIRuntime] = {}
        for handler in self._handlers.values():
            seen.setdefault(id(handler.client), handler.client)
        return list(seen.values())
