"""The CRI call trace: every kubelet -> runtime call, as it happens.

A gRPC client interceptor sees each call once, on its way out and back, and
turns it into a :class:`CallRecord`: method, the identifying fields of request
and response (pod, container, ids, image), status code and duration. Records go
into a bounded ring (what the dashboard and ``minikubelet trace`` read) and to
any subscriber, such as the JSON-lines writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message

DEFAULT_RING_SIZE = 10_000
#: The ``service`` of the records of the kubelet's API server requests.
API_SERVICE = "KubeAPI"
_NAMES_CAP = 100_000


@dataclass(slots=True)
class CallRecord:
    """One CRI call. ``pod`` is ``namespace/name``; empty strings mean unknown."""

    seq: int
    time: float  # wall clock at the start of the call, seconds since the epoch
    service: str  # RuntimeService or ImageService
    method: str
    code: str  # gRPC status code name, "OK" on success
    duration_ms: float
    pod: str = ""
    container: str = ""
    pod_sandbox_id: str = ""
    container_id: str = ""
    image: str = ""
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> CallRecord:
        return cls(**json.loads(line))


class TraceRecorder:
    """A bounded ring of call records plus fan-out to subscribers.

    It also remembers which pod and container an id belongs to, learnt from
    RunPodSandbox, CreateContainer and status replies, so a StartContainer that
    carries only an id still shows up under its pod.
    """

    def __init__(self, *, capacity: int = DEFAULT_RING_SIZE) -> None:
        self._ring: deque[CallRecord] = deque(maxlen=capacity)
        self._subscribers: list[Callable[[CallRecord], None]] = []
        self._names: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._seq = 0

    def records(self, *, pod: str | None = None) -> list[CallRecord]:
        """The retained records, oldest first, optionally only those of one pod."""
        if pod is None:
            return list(self._ring)
        return [r for r in self._ring if _pod_matches(r.pod, pod)]

    def subscribe(self, callback: Callable[[CallRecord], None]) -> Callable[[], None]:
        """Call ``callback`` with every new record; returns a function that unsubscribes."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    async def follow(
        self, *, pod: str | None = None, maxsize: int = 10_000
    ) -> AsyncGenerator[CallRecord, None]:
        """New records as they arrive; a slow reader loses the oldest, never blocks callers."""
        queue: asyncio.Queue[CallRecord] = asyncio.Queue(maxsize=maxsize)

        def push(rec: CallRecord) -> None:
            if pod is not None and not _pod_matches(rec.pod, pod):
                return
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(rec)

        unsubscribe = self.subscribe(push)
        try:
            while True:
                yield await queue.get()
        finally:
            unsubscribe()

    def record(
        self,
        *,
        service: str,
        method: str,
        request: Message | None,
        response: Message | None,
        code: str,
        started: float,
        duration_s: float,
        error: str = "",
    ) -> CallRecord:
        self._seq += 1
        rec = CallRecord(
            seq=self._seq,
            time=started,
            service=service,
            method=method,
            code=code,
            duration_ms=round(duration_s * 1000.0, 3),
            error=error,
        )
        if request is not None:
            _describe_request(rec, request)
        if response is not None:
            _describe_response(rec, response)
        self._learn(rec, method, code)
        self._ring.append(rec)
        for callback in tuple(self._subscribers):
            callback(rec)
        return rec

    def record_api(
        self,
        *,
        method: str,
        code: str,
        started: float,
        duration_s: float,
        pod: str = "",
        error: str = "",
        details: dict[str, Any] | None = None,
    ) -> CallRecord:
        """Record one of the kubelet's API server requests (or a watch event it received):
        ``method`` is ``VERB resource[/subresource]``, ``code`` the HTTP status."""
        self._seq += 1
        rec = CallRecord(
            seq=self._seq,
            time=started,
            service=API_SERVICE,
            method=method,
            code=code,
            duration_ms=round(duration_s * 1000.0, 3),
            pod=pod,
            error=error,
            details=details or {},
        )
        self._ring.append(rec)
        for callback in tuple(self._subscribers):
            callback(rec)
        return rec

    def _learn(self, rec: CallRecord, method: str, code: str) -> None:
        for object_id in (rec.container_id, rec.pod_sandbox_id):
            if not object_id:
                continue
            pod, container = self._names.get(object_id, ("", ""))
            if object_id == rec.container_id:
                rec.container = rec.container or container
            rec.pod = rec.pod or pod
        if code != "OK":
            return
        if method in ("RemoveContainer", "RemovePodSandbox"):
            self._names.pop(rec.container_id or rec.pod_sandbox_id, None)
            return
        if rec.pod_sandbox_id and rec.pod:
            self._remember(rec.pod_sandbox_id, (rec.pod, ""))
        if rec.container_id and (rec.pod or rec.container):
            self._remember(rec.container_id, (rec.pod, rec.container))

    def _remember(self, object_id: str, names: tuple[str, str]) -> None:
        self._names[object_id] = names
        self._names.move_to_end(object_id)
        if len(self._names) > _NAMES_CAP:
            self._names.popitem(last=False)


def _pod_matches(pod: str, wanted: str) -> bool:
    return pod == wanted or pod.rpartition("/")[2] == wanted


def _has(msg: Message, name: str) -> bool:
    return name in msg.DESCRIPTOR.fields_by_name


def _pod_of(metadata: Any) -> str:
    return f"{metadata.namespace}/{metadata.name}" if metadata.name else ""


def _describe_request(rec: CallRecord, req: Any) -> None:
    if _has(req, "pod_sandbox_id"):
        rec.pod_sandbox_id = req.pod_sandbox_id
    if _has(req, "container_id"):
        rec.container_id = req.container_id
    if _has(req, "image") and req.HasField("image"):
        rec.image = req.image.image
    if _has(req, "config") and req.HasField("config"):
        config = req.config
        if _has(config, "metadata") and config.HasField("metadata"):
            if _has(config.metadata, "namespace"):  # PodSandboxMetadata
                rec.pod = _pod_of(config.metadata)
            else:  # ContainerMetadata
                rec.container = config.metadata.name
        if _has(config, "image") and config.HasField("image"):
            rec.image = config.image.image
    if _has(req, "filter") and req.HasField("filter") and _has(req.filter, "label_selector"):
        labels = dict(req.filter.label_selector)  # List* of one pod: its uid
        if labels:
            rec.details["labels"] = labels
    if _has(req, "sandbox_config") and req.HasField("sandbox_config"):
        rec.pod = _pod_of(req.sandbox_config.metadata)
    if _has(req, "auth") and req.HasField("auth"):  # PullImage with credentials
        # who the pull authenticates as, never a password or token
        auth = req.auth
        offered = {
            key: value
            for key, value in (("username", auth.username), ("server", auth.server_address))
            if value
        }
        tokens = [
            name
            for name, value in (
                ("password", auth.password),
                ("auth", auth.auth),
                ("identity_token", auth.identity_token),
                ("registry_token", auth.registry_token),
            )
            if value
        ]
        if tokens:
            offered["with"] = ",".join(tokens)
        rec.details["auth"] = offered
    if _has(req, "cmd"):
        rec.details["cmd"] = list(req.cmd)
    if _has(req, "port") and req.port:  # PortForward
        rec.details["ports"] = list(req.port)
    if _has(req, "tty") and req.tty:  # Exec, Attach
        rec.details["tty"] = True
    if _has(req, "stdin") and req.stdin:
        rec.details["stdin"] = True
    if _has(req, "runtime_handler") and req.runtime_handler:
        rec.details["runtime_handler"] = req.runtime_handler
    if _has(req, "timeout") and req.timeout:
        rec.details["timeout"] = req.timeout


def _describe_response(rec: CallRecord, resp: Any) -> None:
    if _has(resp, "pod_sandbox_id") and resp.pod_sandbox_id:
        rec.pod_sandbox_id = resp.pod_sandbox_id
    if _has(resp, "container_id") and resp.container_id:
        rec.container_id = resp.container_id
    if _has(resp, "image_ref") and resp.image_ref:
        rec.details["image_ref"] = resp.image_ref
    if _has(resp, "exit_code"):
        rec.details["exit_code"] = resp.exit_code
    if _has(resp, "url") and resp.url:  # Exec, Attach, PortForward: where the stream goes
        # The token is a credential for a minute: the trace keeps where, not the key.
        base, _, _token = resp.url.rpartition("/")
        rec.details["url"] = f"{base}/<token>" if base else resp.url
    for list_field in ("items", "containers", "images", "stats"):
        if _has(resp, list_field):
            value = getattr(resp, list_field)
            if hasattr(value, "__len__"):  # a repeated field, not a single message
                rec.details["count"] = len(value)
    if _has(resp, "runtime_api_version"):
        rec.details["runtime"] = f"{resp.runtime_name} {resp.runtime_version}"
        rec.details["runtime_api_version"] = resp.runtime_api_version
    if not (_has(resp, "status") and resp.HasField("status")):
        return
    status = resp.status
    if _has(status, "metadata") and status.HasField("metadata"):
        if _has(status.metadata, "namespace"):
            rec.pod = rec.pod or _pod_of(status.metadata)
        else:
            rec.container = rec.container or status.metadata.name
            labels = status.labels
            ns, name = (
                labels.get("io.kubernetes.pod.namespace"),
                labels.get("io.kubernetes.pod.name"),
            )
            if ns and name and not rec.pod:
                rec.pod = f"{ns}/{name}"
    if _has(status, "state"):
        rec.details["state"] = _enum_name(status, "state")
    if _has(status, "exit_code") and _enum_name(status, "state") == "CONTAINER_EXITED":
        rec.details["exit_code"] = status.exit_code
        if status.reason:
            rec.details["reason"] = status.reason
    if _has(status, "network") and status.HasField("network") and status.network.ip:
        rec.details["ip"] = status.network.ip


def _enum_name(msg: Any, name: str) -> str:
    field_desc = msg.DESCRIPTOR.fields_by_name[name]
    value = getattr(msg, name)
    if field_desc.enum_type is None:
        return str(value)
    enum_value = field_desc.enum_type.values_by_number.get(value)
    return enum_value.name if enum_value is not None else str(value)


def _split_method(full: str | bytes) -> tuple[str, str]:
    text = full.decode() if isinstance(full, bytes) else full
    service, _, method = text.strip("/").rpartition("/")
    return service.rpartition(".")[2], method


class _TracingBase:
    def __init__(self, recorder: TraceRecorder) -> None:
        self._recorder = recorder

    def _finish(
        self,
        details: grpc.aio.ClientCallDetails,
        request: Message,
        response: Message | None,
        code: str,
        started: float,
        t0: float,
        error: str = "",
    ) -> None:
        service, method = _split_method(details.method)
        self._recorder.record(
            service=service,
            method=method,
            request=request,
            response=response,
            code=code,
            started=started,
            duration_s=time.perf_counter() - t0,
            error=error,
        )


class TracingUnaryUnary(_TracingBase, grpc.aio.UnaryUnaryClientInterceptor):
    """Records every unary CRI call."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        started, t0 = time.time(), time.perf_counter()
        call = await continuation(client_call_details, request)
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            self._finish(
                client_call_details,
                request,
                None,
                exc.code().name,
                started,
                t0,
                exc.details() or "",
            )
            raise
        except asyncio.CancelledError:
            self._finish(client_call_details, request, None, "CANCELLED", started, t0)
            raise
        self._finish(client_call_details, request, response, "OK", started, t0)
        return call


class TracingUnaryStream(_TracingBase, grpc.aio.UnaryStreamClientInterceptor):
    """Records the opening of a server-streaming call (GetContainerEvents)."""

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: grpc.aio.ClientCallDetails, request: Any
    ) -> Any:
        started, t0 = time.time(), time.perf_counter()
        call = await continuation(client_call_details, request)
        self._finish(client_call_details, request, None, "OK", started, t0)
        return call


def interceptors(recorder: TraceRecorder) -> list[grpc.aio.ClientInterceptor]:
    """The interceptors that feed ``recorder``; pass them to the channel once."""
    return [TracingUnaryUnary(recorder), TracingUnaryStream(recorder)]


class JsonlTraceWriter:
    """Appends every record to a JSON-lines file from its own task, off the event loop."""

    def __init__(self, recorder: TraceRecorder, path: Path, *, flush_interval: float = 0.2) -> None:
        self._recorder = recorder
        self._path = path
        self._flush_interval = flush_interval
        self._pending: list[str] = []
        self._wakeup = asyncio.Event()

    def _push(self, rec: CallRecord) -> None:
        self._pending.append(rec.to_json())
        self._wakeup.set()

    async def run(self) -> None:
        """Write until cancelled; a write under way and whatever is pending finish first."""
        unsubscribe = self._recorder.subscribe(self._push)
        inflight: asyncio.Future[None] | None = None
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                inflight = asyncio.ensure_future(self._flush())
                await asyncio.shield(inflight)
                await asyncio.sleep(self._flush_interval)
        finally:
            unsubscribe()
            if inflight is not None and not inflight.done():
                await asyncio.shield(inflight)
            await asyncio.shield(self._flush())

    async def _flush(self) -> None:
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        await asyncio.to_thread(_append_lines, self._path, lines)


def _append_lines(path: Path, lines: Iterable[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8", opener=_open_private) as f:
        f.write("\n".join(lines) + "\n")


def _open_private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def read_jsonl(path: Path) -> list[CallRecord]:
    """Load a trace written by :class:`JsonlTraceWriter`."""
    with open(path, encoding="utf-8") as f:
        return [CallRecord.from_json(line) for line in f if line.strip()]


def format_text_header() -> str:
    return (
        f"{'TIME':<12} {'SERVICE':<14} {'METHOD':<22} {'POD/CONTAINER':<34} {'CODE':<10} "
        f"{'LATENCY':>9}  DETAILS"
    )


def format_text(rec: CallRecord) -> str:
    """One line per call, for terminals."""
    clock = time.strftime("%H:%M:%S", time.localtime(rec.time)) + f".{int(rec.time % 1 * 1000):03d}"
    who = rec.pod or (rec.pod_sandbox_id[:13] if rec.pod_sandbox_id else "")
    if rec.container:
        who = f"{who}/{rec.container}" if who else rec.container
    elif rec.container_id and not rec.pod:
        who = rec.container_id[:13]
    extra = dict(rec.details)
    if rec.image:
        extra = {"image": rec.image, **extra}
    if rec.error:
        extra["error"] = rec.error
    details = " ".join(f"{k}={_short(v)}" for k, v in extra.items())
    return (
        f"{clock:<12} {rec.service:<14} {rec.method:<22} {who:<34} {rec.code:<10} "
        f"{rec.duration_ms:>7.2f}ms  {details}"
    )


def _short(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    if text.startswith("sha256:"):
        return text[:19]
    return text if len(text) <= 60 else text[:57] + "..."


_MERMAID_PARTICIPANTS = (
    ("kubelet", "kubelet"),
    ("RuntimeService", "RuntimeService"),
    ("ImageService", "ImageService"),
    ("kube-apiserver", API_SERVICE),
)


def to_mermaid(records: Iterable[CallRecord], *, title: str = "") -> str:
    """A Mermaid sequence diagram of the calls: kubelet -> RuntimeService / ImageService, and
    the kubelet's conversation with the API server beside them (a watch event comes from it)."""
    lines = ["sequenceDiagram"]
    if title:
        lines.append(f"    title {title}")
    records = list(records)
    talks_to_api = any(rec.service == API_SERVICE for rec in records)
    for name, alias in _MERMAID_PARTICIPANTS:
        if alias != API_SERVICE or talks_to_api:
            lines.append(f"    participant {alias} as {name}")
    for rec in records:
        if rec.service == API_SERVICE:
            lines.extend(_mermaid_api(rec))
            continue
        what = rec.container or ""
        if rec.method in ("ExecSync", "Exec") and "cmd" in rec.details:
            what = f"{what} {' '.join(rec.details['cmd'])}".strip()
        elif rec.image and rec.service == "ImageService":
            what = rec.image
        label = f"{rec.method}({_mermaid_text(what)})" if what else rec.method
        lines.append(f"    kubelet->>{rec.service}: {label}")
        answer = rec.code
        for key in ("state", "exit_code", "ip"):
            if key in rec.details:
                answer += f" {key}={rec.details[key]}"
        if rec.method in ("RunPodSandbox", "CreateContainer") and rec.code == "OK":
            answer += f" {(rec.container_id or rec.pod_sandbox_id)[:12]}"
        lines.append(f"    {rec.service}-->>kubelet: {_mermaid_text(answer)}")
    return "\n".join(lines) + "\n"


def _mermaid_api(rec: CallRecord) -> list[str]:
    name = _mermaid_text(rec.pod or str(rec.details.get("name", "")))
    label = f"{rec.method}({name})" if name else rec.method
    if rec.method.startswith("WATCH "):  # an event the API server sent
        return [f"    {API_SERVICE}-)kubelet: {_mermaid_text(label)}"]
    return [
        f"    kubelet->>{API_SERVICE}: {_mermaid_text(label)}",
        f"    {API_SERVICE}-->>kubelet: {_mermaid_text(rec.code)}",
    ]


def _mermaid_text(text: str) -> str:
    return text.replace(";", ",").replace("#", "").replace("\n", " ")[:80]
