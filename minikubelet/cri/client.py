"""The kubelet's side of the CRI: one gRPC channel per runtime endpoint.

Every call carries a deadline; a gRPC status becomes an error from
:mod:`minikubelet.errors`; every call is recorded by the trace interceptors
when a :class:`~minikubelet.cri.trace.TraceRecorder` is given. The kubelet core
builds requests from the ``api_pb2`` messages and never touches grpc itself.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, TypeVar

import grpc
from google.protobuf.message import Message

from minikubelet.cri.endpoint import MAX_MESSAGE_BYTES, parse_endpoint
from minikubelet.cri.trace import TraceRecorder, interceptors
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.cri.v1 import api_pb2_grpc as pb_grpc
from minikubelet.errors import RuntimeVersionMismatch, error_for_code

log = logging.getLogger(__name__)

#: The version string the kubelet sends in its Version handshake.
KUBELET_CRI_VERSION: Final = "0.1.0"
#: The only runtime API version this kubelet speaks.
RUNTIME_API_VERSION: Final = "v1"

DEFAULT_TIMEOUT: Final = 120.0  # the kubelet's --runtime-request-timeout
DEFAULT_PULL_TIMEOUT: Final = 600.0

R = TypeVar("R", bound=Message)


class CRIClient:
    """Runtime and image service clients sharing one channel to ``endpoint``.

    Constructing it does nothing; :meth:`connect` opens the channel and runs the
    version handshake. Use ``async with CRIClient(...) as cri:``.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        pull_timeout: float = DEFAULT_PULL_TIMEOUT,
        recorder: TraceRecorder | None = None,
    ) -> None:
        self.endpoint = parse_endpoint(endpoint)
        self.timeout = timeout
        self.pull_timeout = pull_timeout
        self.recorder = recorder
        self.version_info: pb.VersionResponse | None = None
        self._channel: grpc.aio.Channel | None = None
        self._runtime: pb_grpc.RuntimeServiceAsyncStub | None = None
        self._image: pb_grpc.ImageServiceAsyncStub | None = None

    async def __aenter__(self) -> CRIClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def open(self) -> None:
        """Open the channel without the handshake (for callers that must skip it)."""
        if self._channel is not None:
            return
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if self.endpoint.scheme == "unix":
            options.append(("grpc.default_authority", "localhost"))
        self._channel = grpc.aio.insecure_channel(
            self.endpoint.grpc_target,
            options=options,
            interceptors=interceptors(self.recorder) if self.recorder else None,
        )
        self._runtime = pb_grpc.RuntimeServiceStub(self._channel)
        self._image = pb_grpc.ImageServiceStub(self._channel)

    async def connect(self) -> pb.VersionResponse:
        """Open the channel and check the runtime speaks ``runtime.v1``."""
        self.open()
        info = await self.version()
        if info.runtime_api_version != RUNTIME_API_VERSION:
            await self.close()
            raise RuntimeVersionMismatch(
                f"{self.endpoint} answered runtime API version "
                f"{info.runtime_api_version!r}; this kubelet speaks {RUNTIME_API_VERSION!r}"
            )
        self.version_info = info
        log.info(
            "connected to runtime %s %s (CRI %s) at %s",
            info.runtime_name,
            info.runtime_version,
            info.runtime_api_version,
            self.endpoint,
        )
        return info

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        self._channel = self._runtime = self._image = None

    # -- the one call path -------------------------------------------------

    async def _call(
        self,
        stub: Any,
        method: str,
        request: Message,
        response_type: type[R],
        timeout: float | None = None,
    ) -> R:
        if stub is None:
            raise RuntimeError("CRIClient is not connected; use connect() or 'async with'")
        rpc = getattr(stub, method)
        try:
            response = await rpc(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise error_for_code(exc.code().name, exc.details() or "", method=method) from None
        assert isinstance(response, response_type)
        return response

    async def _runtime_call(
        self, method: str, request: Message, response_type: type[R], timeout: float | None = None
    ) -> R:
        return await self._call(self._runtime, method, request, response_type, timeout)

    async def _image_call(
        self, method: str, request: Message, response_type: type[R], timeout: float | None = None
    ) -> R:
        return await self._call(self._image, method, request, response_type, timeout)

    # -- RuntimeService ----------------------------------------------------

    async def version(self) -> pb.VersionResponse:
        req = pb.VersionRequest(version=KUBELET_CRI_VERSION)
        return await self._runtime_call("Version", req, pb.VersionResponse)

    async def status(self, verbose: bool = False) -> pb.StatusResponse:
        req = pb.StatusRequest(verbose=verbose)
        return await self._runtime_call("Status", req, pb.StatusResponse)

    async def runtime_config(self) -> pb.RuntimeConfigResponse:
        req = pb.RuntimeConfigRequest()
        return await self._runtime_call("RuntimeConfig", req, pb.RuntimeConfigResponse)

    async def run_pod_sandbox(self, config: pb.PodSandboxConfig, runtime_handler: str = "") -> str:
        req = pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler)
        resp = await self._runtime_call("RunPodSandbox", req, pb.RunPodSandboxResponse)
        return resp.pod_sandbox_id

    async def stop_pod_sandbox(self, pod_sandbox_id: str) -> None:
        req = pb.StopPodSandboxRequest(pod_sandbox_id=pod_sandbox_id)
        await self._runtime_call("StopPodSandbox", req, pb.StopPodSandboxResponse)

    async def remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        req = pb.RemovePodSandboxRequest(pod_sandbox_id=pod_sandbox_id)
        await self._runtime_call("RemovePodSandbox", req, pb.RemovePodSandboxResponse)

    async def pod_sandbox_status(
        self, pod_sandbox_id: str, verbose: bool = False
    ) -> pb.PodSandboxStatusResponse:
        req = pb.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id, verbose=verbose)
        return await self._runtime_call("PodSandboxStatus", req, pb.PodSandboxStatusResponse)

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> Sequence[pb.PodSandbox]:
        req = pb.ListPodSandboxRequest(filter=filter)
        resp = await self._runtime_call("ListPodSandbox", req, pb.ListPodSandboxResponse)
        return resp.items

    async def create_container(
        self,
        pod_sandbox_id: str,
        config: pb.ContainerConfig,
        sandbox_config: pb.PodSandboxConfig,
    ) -> str:
        req = pb.CreateContainerRequest(
            pod_sandbox_id=pod_sandbox_id, config=config, sandbox_config=sandbox_config
        )
        resp = await self._runtime_call("CreateContainer", req, pb.CreateContainerResponse)
        return resp.container_id

    async def start_container(self, container_id: str) -> None:
        req = pb.StartContainerRequest(container_id=container_id)
        await self._runtime_call("StartContainer", req, pb.StartContainerResponse)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        """Stop with a grace period of ``timeout`` seconds (the RPC deadline allows for it)."""
        req = pb.StopContainerRequest(container_id=container_id, timeout=timeout)
        await self._runtime_call(
            "StopContainer", req, pb.StopContainerResponse, self.timeout + max(timeout, 0)
        )

    async def remove_container(self, container_id: str) -> None:
        req = pb.RemoveContainerRequest(container_id=container_id)
        await self._runtime_call("RemoveContainer", req, pb.RemoveContainerResponse)

    async def list_containers(
        self, filter: pb.ContainerFilter | None = None
    ) -> Sequence[pb.Container]:
        req = pb.ListContainersRequest(filter=filter)
        resp = await self._runtime_call("ListContainers", req, pb.ListContainersResponse)
        return resp.containers

    async def container_status(
        self, container_id: str, verbose: bool = False
    ) -> pb.ContainerStatusResponse:
        req = pb.ContainerStatusRequest(container_id=container_id, verbose=verbose)
        return await self._runtime_call("ContainerStatus", req, pb.ContainerStatusResponse)

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: int = 0
    ) -> pb.ExecSyncResponse:
        """Run ``cmd`` in the container; ``timeout`` seconds, 0 for none (as the CRI says)."""
        req = pb.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=timeout)
        deadline = self.timeout + timeout if timeout else None
        return await self._runtime_call("ExecSync", req, pb.ExecSyncResponse, deadline)

    async def exec(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str:
        """The runtime's streaming URL for ``cmd`` in the container (CRI Exec)."""
        req = pb.ExecRequest(
            container_id=container_id,
            cmd=list(cmd),
            tty=tty,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
        )
        return (await self._runtime_call("Exec", req, pb.ExecResponse)).url

    async def attach(
        self,
        container_id: str,
        *,
        tty: bool = False,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
    ) -> str:
        """The runtime's streaming URL for the container's own stdio (CRI Attach)."""
        req = pb.AttachRequest(
            container_id=container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
        )
        return (await self._runtime_call("Attach", req, pb.AttachResponse)).url

    async def port_forward(self, pod_sandbox_id: str, ports: Sequence[int]) -> str:
        """The runtime's streaming URL for connections into the pod (CRI PortForward)."""
        req = pb.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=list(ports))
        return (await self._runtime_call("PortForward", req, pb.PortForwardResponse)).url

    async def reopen_container_log(self, container_id: str) -> None:
        req = pb.ReopenContainerLogRequest(container_id=container_id)
        await self._runtime_call("ReopenContainerLog", req, pb.ReopenContainerLogResponse)

    async def container_stats(self, container_id: str) -> pb.ContainerStatsResponse:
        req = pb.ContainerStatsRequest(container_id=container_id)
        return await self._runtime_call("ContainerStats", req, pb.ContainerStatsResponse)

    async def list_container_stats(
        self, filter: pb.ContainerStatsFilter | None = None
    ) -> Sequence[pb.ContainerStats]:
        req = pb.ListContainerStatsRequest(filter=filter)
        resp = await self._runtime_call("ListContainerStats", req, pb.ListContainerStatsResponse)
        return resp.stats

    async def pod_sandbox_stats(self, pod_sandbox_id: str) -> pb.PodSandboxStats:
        req = pb.PodSandboxStatsRequest(pod_sandbox_id=pod_sandbox_id)
        resp = await self._runtime_call("PodSandboxStats", req, pb.PodSandboxStatsResponse)
        return resp.stats

    async def list_pod_sandbox_stats(
        self, filter: pb.PodSandboxStatsFilter | None = None
    ) -> Sequence[pb.PodSandboxStats]:
        """Stats of the ready sandboxes (``filter`` by id or labels), each with its
        containers' stats (CRI ListPodSandboxStats)."""
        req = pb.ListPodSandboxStatsRequest(filter=filter)
        resp = await self._runtime_call("ListPodSandboxStats", req, pb.ListPodSandboxStatsResponse)
        return resp.stats

    async def update_runtime_config(self, pod_cidr: str) -> None:
        req = pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr=pod_cidr))
        )
        await self._runtime_call("UpdateRuntimeConfig", req, pb.UpdateRuntimeConfigResponse)

    async def container_events(self) -> AsyncIterator[pb.ContainerEventResponse]:
        """The runtime's container event stream (for an evented PLEG); no deadline."""
        if self._runtime is None:
            raise RuntimeError("CRIClient is not connected")
        call = self._runtime.GetContainerEvents(pb.GetEventsRequest())
        try:
            async for event in call:
                yield event
        except grpc.aio.AioRpcError as exc:
            raise error_for_code(
                exc.code().name, exc.details() or "", method="GetContainerEvents"
            ) from None
        finally:
            call.cancel()

    # -- ImageService ------------------------------------------------------

    async def pull_image(
        self,
        image: str,
        auth: pb.AuthConfig | None = None,
        sandbox_config: pb.PodSandboxConfig | None = None,
    ) -> str:
        """Pull ``image``; returns the runtime's image reference (usually its ID)."""
        req = pb.PullImageRequest(
            image=pb.ImageSpec(image=image), auth=auth, sandbox_config=sandbox_config
        )
        resp = await self._image_call("PullImage", req, pb.PullImageResponse, self.pull_timeout)
        return resp.image_ref

    async def image_status(self, image: str, verbose: bool = False) -> pb.Image | None:
        """The image, or None when the runtime does not have it."""
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=image), verbose=verbose)
        resp = await self._image_call("ImageStatus", req, pb.ImageStatusResponse)
        return resp.image if resp.HasField("image") else None

    async def list_images(self, filter: pb.ImageFilter | None = None) -> Sequence[pb.Image]:
        req = pb.ListImagesRequest(filter=filter)
        resp = await self._image_call("ListImages", req, pb.ListImagesResponse)
        return resp.images

    async def remove_image(self, image: str) -> None:
        req = pb.RemoveImageRequest(image=pb.ImageSpec(image=image))
        await self._image_call("RemoveImage", req, pb.RemoveImageResponse)

    async def image_fs_info(self) -> pb.ImageFsInfoResponse:
        req = pb.ImageFsInfoRequest()
        return await self._image_call("ImageFsInfo", req, pb.ImageFsInfoResponse)
