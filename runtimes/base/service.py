"""The gRPC adapter every bundled runtime shares: protos in, domain calls, protos out.

Nothing here knows CRI semantics; it validates the shape of requests,
converts them (:mod:`runtimes.base.convert`), calls the backend and turns
:mod:`minikubelet.errors` into gRPC status codes. An unexpected exception
becomes INTERNAL with a log record; it never reaches the client as a traceback
and never stops the server.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError, InvalidArgument, Unimplemented
from runtimes.base import model as m
from runtimes.base.convert import (
    auth_from_pb,
    container_filter_from_pb,
    container_spec_from_pb,
    container_status_to_pb,
    container_to_pb,
    event_to_pb,
    fs_usage_to_pb,
    image_to_pb,
    require,
    sandbox_filter_from_pb,
    sandbox_spec_from_pb,
    sandbox_stats_to_pb,
    sandbox_status_to_pb,
    sandbox_to_pb,
    stats_to_pb,
    status_to_pb,
    version_to_pb,
    with_handler,
)
from runtimes.base.streaming import StreamingServer

log = logging.getLogger(__name__)

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]
Handler = Callable[[Any, Any, Context], Awaitable[T]]


def _rpc(fn: Handler[T]) -> Handler[T]:
    """Map domain errors to status codes; never let an exception escape as a traceback."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Context) -> T:
        try:
            _well_formed(request, fn.__name__)
            return await fn(self, request, context)
        except CRIError as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.message)
            raise  # unreachable: abort raises
        except Exception as exc:  # the server survives any bug in one request
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__}: internal error: {exc!r}")
            raise

    return wrapper


def _stream_rpc(
    fn: Callable[[Any, Any, Context], AsyncIterator[T]],
) -> Callable[[Any, Any, Context], AsyncIterator[T]]:
    """The streaming twin of :func:`_rpc`."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: Context) -> AsyncIterator[T]:
        try:
            _well_formed(request, fn.__name__)
            async for item in fn(self, request, context):
                yield item
        except CRIError as exc:
            await context.abort(grpc.StatusCode[exc.code], exc.message)
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                raise
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"{fn.__name__}: internal error: {exc!r}")

    return wrapper


class Malformed:
    """What the deserializer hands over when the request bytes are not the message."""

    def __init__(self, type_name: str, error: str) -> None:
        self.type_name = type_name
        self.error = error


def _well_formed(request: Any, method: str) -> None:
    if isinstance(request, Malformed):
        raise InvalidArgument(f"{method}: malformed {request.type_name}: {request.error}")


def _id(value: str, what: str) -> str:
    require(bool(value), f"{what} is required")
    return value


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _repeated_field_number(message: type[Message], name: str) -> int:
    number: int = message.DESCRIPTOR.fields_by_name[name].number
    return number


# Every list response carries its items as field 1; the encoded views rely on it.
_ITEMS_FIELD = 1
assert {
    _repeated_field_number(pb.ListContainersResponse, "containers"),
    _repeated_field_number(pb.ListPodSandboxResponse, "items"),
    _repeated_field_number(pb.StreamContainersResponse, "containers"),
    _repeated_field_number(pb.StreamPodSandboxesResponse, "pod_sandboxes"),
} == {_ITEMS_FIELD}
_ITEMS_TAG = _varint((_ITEMS_FIELD << 3) | 2)  # field 1, length-delimited


class _EncodedViews:
    """Records encoded as list-response items, re-encoded only when a record changes.

    A ListContainers over 10,000 containers then costs one join of cached
    bytes instead of building and serializing 10,000 messages.
    """

    def __init__(self, build: Callable[[Any], Message]) -> None:
        self._build = build
        self._views: dict[str, tuple[int, bytes]] = {}

    def get(self, record: Any) -> bytes:
        hit = self._views.get(record.id)
        if hit is not None and hit[0] == record.generation:
            return hit[1]
        body = self._build(record).SerializeToString()
        view = _ITEMS_TAG + _varint(len(body)) + body
        self._views[record.id] = (record.generation, view)
        return view

    def encode(self, records: Sequence[Any]) -> bytes:
        return b"".join([self.get(r) for r in records])

    def prune(self, live: set[str]) -> None:
        if len(self._views) > 2 * max(len(live), 64):
            self._views = {k: v for k, v in self._views.items() if k in live}


# -- the servicers ------------------------------------------------------------


def _unimplemented(name: str) -> Any:
    async def handler(self: Any, request: Any, context: Context) -> Any:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by this runtime"
        )

    handler.__name__ = name
    return handler


def _unimplemented_stream(name: str) -> Any:
    async def handler(self: Any, request: Any, context: Context) -> AsyncIterator[Any]:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"{name} is not implemented by this runtime"
        )
        yield  # pragma: no cover - makes this an async generator

    handler.__name__ = name
    return handler


class RuntimeServicer:
    """runtime.v1.RuntimeService over a :class:`~runtimes.base.model.RuntimeBackend`."""

    def __init__(self, backend: m.RuntimeBackend, streaming: StreamingServer | None = None) -> None:
        self._backend = backend
        self._streaming = streaming
        self._sandbox_views = _EncodedViews(sandbox_to_pb)
        self._container_views = _EncodedViews(container_to_pb)

    @_rpc
    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return version_to_pb(await self._backend.version())

    @_rpc
    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        return status_to_pb(await self._backend.status(), verbose=request.verbose)

    @_rpc
    async def RuntimeConfig(
        self, request: pb.RuntimeConfigRequest, context: Any
    ) -> pb.RuntimeConfigResponse:
        driver = await self._backend.cgroup_driver()
        return pb.RuntimeConfigResponse(
            linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver)  # type: ignore[arg-type]
        )

    @_rpc
    async def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: Any
    ) -> pb.UpdateRuntimeConfigResponse:
        await self._backend.update_runtime_config(request.runtime_config.network_config.pod_cidr)
        return pb.UpdateRuntimeConfigResponse()

    @_rpc
    async def RunPodSandbox(
        self, request: pb.RunPodSandboxRequest, context: Any
    ) -> pb.RunPodSandboxResponse:
        require(request.HasField("config"), "RunPodSandboxRequest.config is required")
        spec = sandbox_spec_from_pb(request.config)
        if request.runtime_handler:
            spec = with_handler(spec, request.runtime_handler)
        sandbox_id = await self._backend.run_pod_sandbox(spec)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    @_rpc
    async def StopPodSandbox(
        self, request: pb.StopPodSandboxRequest, context: Any
    ) -> pb.StopPodSandboxResponse:
        await self._backend.stop_pod_sandbox(_id(request.pod_sandbox_id, "pod_sandbox_id"))
        return pb.StopPodSandboxResponse()

    @_rpc
    async def RemovePodSandbox(
        self, request: pb.RemovePodSandboxRequest, context: Any
    ) -> pb.RemovePodSandboxResponse:
        await self._backend.remove_pod_sandbox(_id(request.pod_sandbox_id, "pod_sandbox_id"))
        return pb.RemovePodSandboxResponse()

    @_rpc
    async def PodSandboxStatus(
        self, request: pb.PodSandboxStatusRequest, context: Any
    ) -> pb.PodSandboxStatusResponse:
        sandbox = await self._backend.pod_sandbox_status(
            _id(request.pod_sandbox_id, "pod_sandbox_id")
        )
        return pb.PodSandboxStatusResponse(status=sandbox_status_to_pb(sandbox))

    @_rpc
    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: Any) -> bytes:
        """An encoded ListPodSandboxResponse."""
        items = await self._backend.list_pod_sandbox(sandbox_filter_from_pb(request.filter))
        if not request.HasField("filter"):
            self._sandbox_views.prune({s.id for s in items})
        return self._sandbox_views.encode(items)

    @_rpc
    async def CreateContainer(
        self, request: pb.CreateContainerRequest, context: Any
    ) -> pb.CreateContainerResponse:
        sandbox_id = _id(request.pod_sandbox_id, "pod_sandbox_id")
        require(request.HasField("config"), "CreateContainerRequest.config is required")
        spec = container_spec_from_pb(request.config)
        sandbox_spec = (
            sandbox_spec_from_pb(request.sandbox_config)
            if request.HasField("sandbox_config") and request.sandbox_config.HasField("metadata")
            else None
        )
        container_id = await self._backend.create_container(sandbox_id, spec, sandbox_spec)
        return pb.CreateContainerResponse(container_id=container_id)

    @_rpc
    async def StartContainer(
        self, request: pb.StartContainerRequest, context: Any
    ) -> pb.StartContainerResponse:
        await self._backend.start_container(_id(request.container_id, "container_id"))
        return pb.StartContainerResponse()

    @_rpc
    async def StopContainer(
        self, request: pb.StopContainerRequest, context: Any
    ) -> pb.StopContainerResponse:
        await self._backend.stop_container(
            _id(request.container_id, "container_id"), request.timeout
        )
        return pb.StopContainerResponse()

    @_rpc
    async def RemoveContainer(
        self, request: pb.RemoveContainerRequest, context: Any
    ) -> pb.RemoveContainerResponse:
        await self._backend.remove_container(_id(request.container_id, "container_id"))
        return pb.RemoveContainerResponse()

    @_rpc
    async def ContainerStatus(
        self, request: pb.ContainerStatusRequest, context: Any
    ) -> pb.ContainerStatusResponse:
        container = await self._backend.container_status(_id(request.container_id, "container_id"))
        return pb.ContainerStatusResponse(status=container_status_to_pb(container))

    @_rpc
    async def ListContainers(self, request: pb.ListContainersRequest, context: Any) -> bytes:
        """An encoded ListContainersResponse."""
        items = await self._backend.list_containers(container_filter_from_pb(request.filter))
        if not request.HasField("filter"):
            self._container_views.prune({c.id for c in items})
        return self._container_views.encode(items)

    @_rpc
    async def ExecSync(self, request: pb.ExecSyncRequest, context: Any) -> pb.ExecSyncResponse:
        require(len(request.cmd) > 0, "ExecSyncRequest.cmd is required")
        require(request.timeout >= 0, "ExecSyncRequest.timeout must not be negative")
        result = await self._backend.exec_sync(
            _id(request.container_id, "container_id"), list(request.cmd), request.timeout
        )
        return pb.ExecSyncResponse(
            stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code
        )

    def _streamer(self, method: str) -> StreamingServer:
        if self._streaming is None:
            raise Unimplemented(f"{method}: this runtime has no streaming server")
        return self._streaming

    @_rpc
    async def Exec(self, request: pb.ExecRequest, context: Any) -> pb.ExecResponse:
        url = await self._streamer("Exec").get_exec(
            _id(request.container_id, "container_id"),
            list(request.cmd),
            tty=request.tty,
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
        )
        return pb.ExecResponse(url=url)

    @_rpc
    async def Attach(self, request: pb.AttachRequest, context: Any) -> pb.AttachResponse:
        url = await self._streamer("Attach").get_attach(
            _id(request.container_id, "container_id"),
            tty=request.tty,
            stdin=request.stdin,
            stdout=request.stdout,
            stderr=request.stderr,
        )
        return pb.AttachResponse(url=url)

    @_rpc
    async def PortForward(
        self, request: pb.PortForwardRequest, context: Any
    ) -> pb.PortForwardResponse:
        url = await self._streamer("PortForward").get_port_forward(
            _id(request.pod_sandbox_id, "pod_sandbox_id"), list(request.port)
        )
        return pb.PortForwardResponse(url=url)

    @_rpc
    async def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: Any
    ) -> pb.ReopenContainerLogResponse:
        await self._backend.reopen_container_log(_id(request.container_id, "container_id"))
        return pb.ReopenContainerLogResponse()

    @_rpc
    async def ContainerStats(
        self, request: pb.ContainerStatsRequest, context: Any
    ) -> pb.ContainerStatsResponse:
        stats = await self._backend.container_stats(_id(request.container_id, "container_id"))
        return pb.ContainerStatsResponse(stats=stats_to_pb(stats))

    @_rpc
    async def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: Any
    ) -> pb.ListContainerStatsResponse:
        f = request.filter
        stats = await self._backend.list_container_stats(
            f.id, f.pod_sandbox_id, dict(f.label_selector)
        )
        return pb.ListContainerStatsResponse(stats=[stats_to_pb(s) for s in stats])

    @_stream_rpc
    async def StreamPodSandboxes(
        self, request: pb.StreamPodSandboxesRequest, context: Any
    ) -> AsyncIterator[bytes]:
        """Encoded StreamPodSandboxesResponse messages."""
        items = await self._backend.list_pod_sandbox(sandbox_filter_from_pb(request.filter))
        for chunk in _chunks(list(items)):
            yield self._sandbox_views.encode(chunk)

    @_stream_rpc
    async def StreamContainers(
        self, request: pb.StreamContainersRequest, context: Any
    ) -> AsyncIterator[bytes]:
        """Encoded StreamContainersResponse messages."""
        items = await self._backend.list_containers(container_filter_from_pb(request.filter))
        for chunk in _chunks(list(items)):
            yield self._container_views.encode(chunk)

    async def _sandbox_stats(self, sandbox: m.PodSandbox) -> pb.PodSandboxStats:
        containers = await self._backend.list_container_stats("", sandbox.id, {})
        now = max((c.timestamp for c in containers), default=time.time_ns())
        return sandbox_stats_to_pb(sandbox, containers, now)

    @_rpc
    async def PodSandboxStats(
        self, request: pb.PodSandboxStatsRequest, context: Any
    ) -> pb.PodSandboxStatsResponse:
        sandbox = await self._backend.pod_sandbox_status(
            _id(request.pod_sandbox_id, "pod_sandbox_id")
        )
        return pb.PodSandboxStatsResponse(stats=await self._sandbox_stats(sandbox))

    @_rpc
    async def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: Any
    ) -> pb.ListPodSandboxStatsResponse:
        f = request.filter
        sandboxes = await self._backend.list_pod_sandbox(
            m.SandboxFilter(f.id, m.SandboxState.READY, dict(f.label_selector))
        )
        return pb.ListPodSandboxStatsResponse(
            stats=[await self._sandbox_stats(s) for s in sandboxes]
        )

    @_stream_rpc
    async def StreamContainerStats(
        self, request: pb.StreamContainerStatsRequest, context: Any
    ) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        f = request.filter
        stats = await self._backend.list_container_stats(
            f.id, f.pod_sandbox_id, dict(f.label_selector)
        )
        for chunk in _chunks([stats_to_pb(s) for s in stats]):
            yield pb.StreamContainerStatsResponse(container_stats=chunk)

    # Not offered by the bundled runtimes yet: each answers UNIMPLEMENTED with its name.
    UpdateContainerResources = _unimplemented("UpdateContainerResources")
    UpdatePodSandboxResources = _unimplemented("UpdatePodSandboxResources")
    CheckpointContainer = _unimplemented("CheckpointContainer")
    ListMetricDescriptors = _unimplemented("ListMetricDescriptors")
    ListPodSandboxMetrics = _unimplemented("ListPodSandboxMetrics")
    StreamPodSandboxStats = _unimplemented_stream("StreamPodSandboxStats")
    StreamPodSandboxMetrics = _unimplemented_stream("StreamPodSandboxMetrics")

    @_stream_rpc
    async def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: Any
    ) -> AsyncIterator[pb.ContainerEventResponse]:
        async for event in self._backend.container_events():
            yield event_to_pb(event)


STREAM_CHUNK = 1000


def _chunks(items: list[T]) -> list[list[T]]:
    """Split a listing into messages of at most STREAM_CHUNK items (at least one message)."""
    return [items[i : i + STREAM_CHUNK] for i in range(0, len(items), STREAM_CHUNK)] or [[]]


class ImageServicer:
    """runtime.v1.ImageService over an :class:`~runtimes.base.model.ImageBackend`."""

    def __init__(self, backend: m.ImageBackend) -> None:
        self._backend = backend

    @_rpc
    async def PullImage(self, request: pb.PullImageRequest, context: Any) -> pb.PullImageResponse:
        reference = _id(request.image.image, "PullImageRequest.image.image")
        auth = auth_from_pb(request.auth)
        image_ref = await self._backend.pull_image(reference, auth)
        return pb.PullImageResponse(image_ref=image_ref)

    @_stream_rpc
    async def StreamImages(
        self, request: pb.StreamImagesRequest, context: Any
    ) -> AsyncIterator[pb.StreamImagesResponse]:
        images = await self._backend.list_images(request.filter.image.image)
        for chunk in _chunks([image_to_pb(i) for i in images]):
            yield pb.StreamImagesResponse(images=chunk)

    @_rpc
    async def ImageStatus(
        self, request: pb.ImageStatusRequest, context: Any
    ) -> pb.ImageStatusResponse:
        image = await self._backend.image_status(
            _id(request.image.image, "ImageStatusRequest.image.image")
        )
        if image is None:
            return pb.ImageStatusResponse()
        return pb.ImageStatusResponse(image=image_to_pb(image))

    @_rpc
    async def ListImages(
        self, request: pb.ListImagesRequest, context: Any
    ) -> pb.ListImagesResponse:
        images = await self._backend.list_images(request.filter.image.image)
        return pb.ListImagesResponse(images=[image_to_pb(i) for i in images])

    @_rpc
    async def RemoveImage(
        self, request: pb.RemoveImageRequest, context: Any
    ) -> pb.RemoveImageResponse:
        await self._backend.remove_image(_id(request.image.image, "RemoveImageRequest.image.image"))
        return pb.RemoveImageResponse()

    @_rpc
    async def ImageFsInfo(
        self, request: pb.ImageFsInfoRequest, context: Any
    ) -> pb.ImageFsInfoResponse:
        usage = await self._backend.image_fs_info()
        return pb.ImageFsInfoResponse(image_filesystems=[fs_usage_to_pb(u) for u in usage])


# -- registration -------------------------------------------------------------


def _deserializer(message: type[Message]) -> Callable[[bytes], Any]:
    """Parse a request; bytes that are not the message become a :class:`Malformed`.

    grpc would otherwise log a traceback for a request it cannot parse; this way
    the method answers INVALID_ARGUMENT like for any other bad input.
    """

    def parse(data: bytes) -> Any:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(message.DESCRIPTOR.full_name, str(exc))

    return parse


def _serialize(response: Message | bytes) -> bytes:
    """Responses are messages, or already encoded (the cached list views)."""
    if isinstance(response, bytes):
        return response
    return response.SerializeToString()


def rpc_handler(servicer: object, service_name: str) -> grpc.GenericRpcHandler:
    """The handler of one CRI service; every RPC of the proto must be on the servicer."""
    service = pb.DESCRIPTOR.services_by_name[service_name]
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        fn = getattr(servicer, method.name, None)
        if fn is None:
            raise TypeError(f"{type(servicer).__name__} lacks {service_name}.{method.name}")
        request_type = getattr(pb, method.input_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            fn, request_deserializer=_deserializer(request_type), response_serializer=_serialize
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)
