"""Carrying out what :func:`compute_pod_actions` decided, through the CRI (the kubelet's SyncPod).

The manager reads a pod's observed state from the runtime
(:meth:`KubeRuntimeManager.get_pod_status`), asks the pure decider what to
change, and does it in the kubelet's order: kill, create the sandbox, start
init containers one by one, start the regular containers. What it could not do
(an image that will not pull, a container in crash-loop back-off) comes back as
waiting reasons per container for the status manager to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from minikubelet.api.pod import Container, Pod, TerminationMessagePolicy
from minikubelet.backoff import Backoff
from minikubelet.clock import Clock, RealClock
from minikubelet.container.status import ContainerState, ContainerStatus, PodStatus, SandboxState
from minikubelet.cri.services import CRIRuntime, RuntimeHandlers
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError, NotFound
from minikubelet.events import NORMAL, WARNING, EventRecorder
from minikubelet.images import ImageManager, ImagePullError
from minikubelet.kuberuntime import labels as kl
from minikubelet.kuberuntime import status as cri_status
from minikubelet.kuberuntime.actions import KillReason, compute_pod_actions
from minikubelet.kuberuntime.hash import hash_container
from minikubelet.logs import crilog
from minikubelet.types import ContainerID, PodSandboxID, PodUID

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_U = TypeVar("_U")

#: The kubelet never gives a container less than this to stop (minimumGracePeriodInSeconds).
MINIMUM_GRACE_PERIOD = 2
#: The grace period the kubelet kills orphaned pods with (HandlePodCleanups' override).
ORPHAN_GRACE_PERIOD = 1
#: How much of a termination message the kubelet keeps (and of the log when falling back).
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
CREATE_CONTAINER_ERROR = "CreateContainerError"
RUN_CONTAINER_ERROR = "RunContainerError"


class ConfigSource(Protocol):
    """What the manager needs to turn a pod into CRI requests (conversion, env, volumes)."""

    def sandbox_config(self, pod: Pod, attempt: int) -> pb.PodSandboxConfig: ...

    async def prepare_pod(self, pod: Pod, pod_ips: Sequence[str]) -> None:
        """Set up what the pod's containers mount (idempotent); raises ContainerConfigError."""
        ...

    async def container_config(
        self,
        pod: Pod,
        container: Container,
        *,
        restart_count: int,
        image: str,
        pod_ips: Sequence[str],
        image_volumes: Mapping[str, pb.ImageSpec] | None = None,
    ) -> pb.ContainerConfig:
        """Raises ContainerConfigError for what cannot be resolved (env, mounts).
        ``image_volumes``: the pulled images of the pod's image volumes, by volume name."""
        ...

    def termination_message_host_path(self, pod: Pod, container: Container) -> Path | None: ...

    async def cleanup_pod(self, uid: PodUID) -> None: ...


class ProbeResults(Protocol):
    def liveness_failed(self, uid: PodUID) -> set[str]: ...
    def startup_failed(self, uid: PodUID) -> set[str]: ...
    def startup_succeeded(self, uid: PodUID) -> set[str] | None: ...
    def container_started(self, pod: Pod, name: str, container_id: str) -> None: ...
    def container_stopped(self, pod: Pod, name: str) -> None: ...


class HookRunner(Protocol):
    async def run(
        self,
        pod: Pod,
        container: Container,
        container_id: str,
        handler: Mapping[str, Any],
        pod_ips: Sequence[str],
        timeout: float,
    ) -> str | None:
        """Run a lifecycle handler; None on success, else what went wrong."""
        ...


class KillPodError(Exception):
    """Some of a pod's containers or sandboxes could not be stopped; the kill is retried."""


class ContainerConfigError(Exception):
    """A container cannot be configured (env, volume, mount); ``reason`` is the waiting reason."""

    def __init__(self, message: str, reason: str = CREATE_CONTAINER_CONFIG_ERROR) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(slots=True)
class SyncResult:
    """What a sync could not do, per container name: (waiting reason, message)."""

    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: The earliest time (epoch seconds) a back-off ends; the pod worker resyncs then.
    retry_at: float | None = None
    #: The sync changed something in the runtime (the observed status is stale).
    changed: bool = False

    def retry_after(self, when: float) -> None:
        self.retry_at = when if self.retry_at is None else min(self.retry_at, when)


@dataclass(frozen=True, slots=True)
class RuntimeContainer:
    id: ContainerID
    name: str
    state: ContainerState
    created_at: int
    #: The CRI metadata's attempt: the restart count the kubelet created the instance with.
    attempt: int = 0
    #: The sandbox the container belongs to ("" for a sandbox itself).
    sandbox_id: str = ""


@dataclass(slots=True)
class RuntimePod:
    """A pod as one relist sees it: ids and states only (the kubelet's GetPods)."""

    uid: PodUID
    name: str
    namespace: str
    sandboxes: list[RuntimeContainer] = field(default_factory=list)
    containers: list[RuntimeContainer] = field(default_factory=list)


_STATES = {
    pb.CONTAINER_CREATED: ContainerState.CREATED,
    pb.CONTAINER_RUNNING: ContainerState.RUNNING,
    pb.CONTAINER_EXITED: ContainerState.EXITED,
    pb.CONTAINER_UNKNOWN: ContainerState.UNKNOWN,
}


async def _all(*calls: Awaitable[_T]) -> list[_T]:
    """Every call's result in order, all run together; when any failed, each is still
    awaited to its end (nothing is left running or unretrieved) and the first error raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return cast(list[_T], results)


async def _both(first: Awaitable[_T], second: Awaitable[_U]) -> tuple[_T, _U]:
    """Two calls run together, as :func:`_all`."""
    a, b = await _all(first, second)
    return cast(_T, a), cast(_U, b)


def backoff_key(pod: Pod, container: Container) -> str:
    """The kubelet's stable back-off key: pod identity, container name and spec hash."""
    return f"{pod.name}_{pod.namespace}_{pod.uid}_{container.name}_{hash_container(container)}"


def _pod_ref(pod: Pod) -> str:
    return f"{pod.name}_{pod.namespace}({pod.uid})"


class KubeRuntimeManager:
    """The kubelet's runtime manager: every CRI call of the core goes through it (or through
    the image manager and the PLEG, which it serves), to the runtime that holds the pod."""

    def __init__(
        self,
        handlers: RuntimeHandlers,
        *,
        events: EventRecorder,
        images: ImageManager,
        backoff: Backoff,
        configs: ConfigSource,
        probes: ProbeResults,
        hooks: HookRunner,
        clock: Clock | None = None,
    ) -> None:
        self.handlers = handlers
        self.clock: Clock = clock or RealClock()
        self.events = events
        self.images = images
        self.backoff = backoff
        self.configs = configs
        self.probes = probes
        self.hooks = hooks

    @property
    def cri(self) -> CRIRuntime:
        """The node's default runtime."""
        return self.handlers.default

    def _cri_for(self, uid: PodUID) -> CRIRuntime:
        """The runtime that holds the pod (one per node for now: the default)."""
        return self.handlers.default

    @property
    def runtime_name(self) -> str:
        info = self.cri.version_info
        return info.runtime_name if info is not None else "cri"

    @property
    def runtime_version(self) -> str:
        info = self.cri.version_info
        return info.runtime_version if info is not None else ""

    @property
    def endpoint(self) -> str:
        return str(self.cri.endpoint)

    async def runtime_status(self) -> list[tuple[str, pb.StatusResponse | CRIError]]:
        """Each runtime's CRI Status (RuntimeReady, NetworkReady), or why it could not be had,
        by endpoint."""
        out: list[tuple[str, pb.StatusResponse | CRIError]] = []
        for client in self.handlers.clients():
            try:
                out.append((str(client.endpoint), await client.status()))
            except CRIError as exc:
                out.append((str(client.endpoint), exc))
        return out

    async def connect(self) -> None:
        """The Version handshake with every runtime not yet connected."""
        for client in self.handlers.clients():
            if client.version_info is None:
                await client.connect()

    # -- reading the runtime ---------------------------------------------------

    async def list_pods(self) -> dict[PodUID, RuntimePod]:
        """Every pod the runtimes hold, from one ListPodSandbox and one ListContainers each."""
        sandboxes: list[pb.PodSandbox] = []
        containers: list[pb.Container] = []
        for client in self.handlers.clients():
            sandboxes.extend(await client.list_pod_sandbox())
            containers.extend(await client.list_containers())
        pods: dict[PodUID, RuntimePod] = {}

        def pod_for(labels: Mapping[str, str], md_name: str, md_ns: str, md_uid: str) -> RuntimePod:
            uid = PodUID(labels.get(kl.POD_UID_LABEL) or md_uid)
            found = pods.get(uid)
            if found is None:
                found = pods[uid] = RuntimePod(
                    uid,
                    labels.get(kl.POD_NAME_LABEL, md_name),
                    labels.get(kl.POD_NAMESPACE_LABEL, md_ns),
                )
            return found

        for s in sandboxes:
            pod = pod_for(s.labels, s.metadata.name, s.metadata.namespace, s.metadata.uid)
            state = ContainerState.RUNNING if s.state == pb.SANDBOX_READY else ContainerState.EXITED
            pod.sandboxes.append(
                RuntimeContainer(
                    ContainerID(s.id), kl.POD_INFRA_CONTAINER_NAME, state, s.created_at
                )
            )
        for ctr in containers:
            if kl.POD_UID_LABEL not in ctr.labels:
                continue  # not created by a kubelet
            pod = pod_for(ctr.labels, "", "", "")
            pod.containers.append(
                RuntimeContainer(
                    ContainerID(ctr.id),
                    ctr.labels.get(kl.CONTAINER_NAME_LABEL, ctr.metadata.name),
                    _STATES.get(ctr.state, ContainerState.UNKNOWN),
                    ctr.created_at,
                    ctr.metadata.attempt,
                    ctr.pod_sandbox_id,
                )
            )
        return pods

    async def get_pod_status(
        self, uid: PodUID, name: str = "", namespace: str = "", pod: Pod | None = None
    ) -> PodStatus:
        """The runtime's full view of one pod (the kubelet's GetPodStatus).

        The two lists go out together, then every sandbox's and container's status at once:
        none of these reads depends on another, so the pod's status costs two round trips
        rather than two plus one per sandbox and container. Results keep the lists' order.
        """
        selector = {kl.POD_UID_LABEL: str(uid)}
        cri = self._cri_for(uid)
        sandbox_items, container_items = await _both(
            cri.list_pod_sandbox(pb.PodSandboxFilter(label_selector=selector)),
            cri.list_containers(pb.ContainerFilter(label_selector=selector)),
        )

        async def sandbox_status(sandbox_id: str) -> pb.PodSandboxStatus | None:
            with contextlib.suppress(NotFound):  # removed meanwhile
                return (await cri.pod_sandbox_status(sandbox_id)).status
            return None

        async def container_status(container_id: str) -> pb.ContainerStatus | None:
            with contextlib.suppress(NotFound):  # removed meanwhile
                return (await cri.container_status(container_id)).status
            return None

        found = await _all(
            *(sandbox_status(item.id) for item in sandbox_items),
            *(container_status(ctr.id) for ctr in container_items),
        )
        sandboxes = [s for s in found[: len(sandbox_items)] if isinstance(s, pb.PodSandboxStatus)]
        containers = [c for c in found[len(sandbox_items) :] if isinstance(c, pb.ContainerStatus)]
        status = cri_status.from_cri(
            uid=uid, name=name, namespace=namespace, sandboxes=sandboxes, containers=containers
        )
        if pod is None:
            return status
        return await self._with_termination_messages(pod, status, containers)

    async def _with_termination_messages(
        self, pod: Pod, status: PodStatus, raw: Iterable[pb.ContainerStatus]
    ) -> PodStatus:
        by_id = {c.id: c for c in raw}
        specs = {c.name: c for c in (*pod.spec.init_containers, *pod.spec.containers)}
        updated: list[ContainerStatus] = []
        changed = False
        for cs in status.container_statuses:
            spec = specs.get(cs.name)
            if cs.state is not ContainerState.EXITED or spec is None or cs.message:
                updated.append(cs)
                continue
            message = await asyncio.to_thread(
                self._termination_message, pod, spec, cs, by_id.get(cs.id)
            )
            if message:
                changed = True
                cs = replace(cs, message=message)
            updated.append(cs)
        return replace(status, container_statuses=tuple(updated)) if changed else status

    def _termination_message(
        self, pod: Pod, spec: Container, cs: ContainerStatus, raw: pb.ContainerStatus | None
    ) -> str:
        """What the container left at its terminationMessagePath, or its log's tail."""
        path: Path | None = None
        if raw is not None:
            for mount in raw.mounts:
                if mount.container_path == spec.termination_message_path and mount.host_path:
                    path = Path(mount.host_path)
        if path is None:
            path = self.configs.termination_message_host_path(pod, spec)
        message = ""
        if path is not None and path.is_file():
            with open(path, "rb") as f:
                message = f.read(MAX_TERMINATION_MESSAGE).decode(errors="replace")
        fallback = (
            spec.termination_message_policy is TerminationMessagePolicy.FALLBACK_TO_LOGS_ON_ERROR
        )
        if not message and fallback and cs.exit_code != 0 and raw is not None and raw.log_path:
            message = _log_tail(Path(raw.log_path))
        return message

    # -- SyncPod ---------------------------------------------------------------

    def _in_backoff(self, pod: Pod, status: PodStatus) -> Any:
        specs = {c.name: c for c in (*pod.spec.init_containers, *pod.spec.containers)}

        def check(name: str) -> bool:
            cs = _latest_exited(status, name)
            spec = specs.get(name)
            if cs is None or spec is None:
                return False
            return self.backoff.in_backoff_since(backoff_key(pod, spec), cs.finished_at / 1e9)

        return check

    async def sync_pod(self, pod: Pod, status: PodStatus) -> SyncResult:
        """One round of reconciling ``pod`` with the runtime; never raises for runtime errors."""
        result = SyncResult()
        actions = compute_pod_actions(
            pod,
            status,
            backoff=self._in_backoff(pod, status),
            liveness_failed=self.probes.liveness_failed(pod.uid),
            startup_failed=self.probes.startup_failed(pod.uid),
            startup_succeeded=self.probes.startup_succeeded(pod.uid),
        )
        if not actions.is_noop:
            result.changed = True
            log.info("sync pod=%s uid=%s: %s", pod, pod.uid, actions)
            for reason in actions.reasons:
                log.debug("pod=%s uid=%s: %s", pod, pod.uid, reason)

        if actions.kill_pod:
            if actions.create_sandbox and actions.attempt > 0:
                self.events.pod_event(
                    pod,
                    NORMAL,
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.",
                )
            try:
                await self.kill_pod(pod, status, grace_override=None)
            except KillPodError as exc:
                # as the kubelet's SyncPod: nothing new starts beside what still runs
                result.errors.append(str(exc))
                return result
        else:
            for cid, info in actions.containers_to_kill.items():
                spec = info.container
                grace = self._grace_period(pod, spec, info.reason)
                self.events.pod_event(
                    pod,
                    NORMAL,
                    "Killing",
                    info.message or f"Stopping container {info.name}",
                    field_path=self._field_path(pod, info.name),
                )
                await self.kill_container(pod, cid, info.name, spec, grace)

        sandbox_id = actions.sandbox_id
        pod_ips: Sequence[str] = status.ips
        if (
            actions.create_sandbox
            or actions.init_containers_to_start
            or actions.containers_to_start
        ):
            try:
                await self.configs.prepare_pod(pod, pod_ips)
            except ContainerConfigError as exc:
                # the pod waits for its volumes: its containers show ContainerCreating (or
                # PodInitializing), the reason is in the FailedMount event, as with the kubelet
                self.events.pod_event(pod, WARNING, "FailedMount", exc.message)
                result.errors.append(exc.message)
                return result
        if actions.create_sandbox:
            created = await self._create_sandbox(pod, actions.attempt, result)
            if created is None:
                return result
            sandbox_id, pod_ips = created
        if sandbox_id is None:
            return result
        sandbox_config = self.configs.sandbox_config(pod, actions.attempt)
        image_volumes: dict[str, pb.ImageSpec | ImagePullError] = {}
        if actions.init_containers_to_start or actions.containers_to_start:
            image_volumes = await self._pull_image_volumes(pod, sandbox_config)

        for index in actions.init_containers_to_start:
            container = pod.spec.init_containers[index]
            ok = await self._start_container(
                pod, container, sandbox_id, sandbox_config, pod_ips, status, result, image_volumes
            )
            if not ok and not container.is_restartable:
                return result  # the next init container waits for this one
        for index in actions.containers_to_start:
            await self._start_container(
                pod,
                pod.spec.containers[index],
                sandbox_id,
                sandbox_config,
                pod_ips,
                status,
                result,
                image_volumes,
            )
        for container in (
            *(pod.spec.init_containers[i] for i in actions.init_containers_in_backoff),
            *(pod.spec.containers[i] for i in actions.containers_in_backoff),
        ):
            self._record_backoff(pod, container, status, result)
        return result

    def _record_backoff(
        self, pod: Pod, container: Container, status: PodStatus, result: SyncResult
    ) -> None:
        key = backoff_key(pod, container)
        cs = _latest_exited(status, container.name)
        finished = cs.finished_at / 1e9 if cs is not None else self.backoff.clock.now()
        delay = self.backoff.delay(key)
        message = (
            f"back-off {_human(delay)} restarting failed container={container.name} "
            f"pod={_pod_ref(pod)}"
        )
        result.waiting[container.name] = (CRASH_LOOP_BACK_OFF, message)
        result.retry_after(finished + delay)
        self.events.pod_event(
            pod,
            WARNING,
            "BackOff",
            f"Back-off restarting failed container {container.name} in pod {_pod_ref(pod)}",
            field_path=self._field_path(pod, container.name),
        )

    async def _create_sandbox(
        self, pod: Pod, attempt: int, result: SyncResult
    ) -> tuple[PodSandboxID, Sequence[str]] | None:
        try:
            config = self.configs.sandbox_config(pod, attempt)
            cri = self._cri_for(pod.uid)
            sandbox_id = PodSandboxID(await cri.run_pod_sandbox(config))
            sandbox = (await cri.pod_sandbox_status(sandbox_id)).status
        except (CRIError, ContainerConfigError) as exc:
            message = f"Failed to create pod sandbox: {exc.message}"
            self.events.pod_event(pod, WARNING, "FailedCreatePodSandBox", message)
            result.errors.append(message)
            for c in (*pod.spec.init_containers, *pod.spec.containers):
                result.waiting[c.name] = ("ContainerCreating", "")
            return None
        ips = [
            ip for ip in (sandbox.network.ip, *(a.ip for a in sandbox.network.additional_ips)) if ip
        ]
        log.info(
            "pod=%s uid=%s: sandbox %s ready, ip %s",
            pod,
            pod.uid,
            sandbox_id[:13],
            ips[0] if ips else "(host network)",
        )
        return sandbox_id, ips

    async def _pull_image_volumes(
        self, pod: Pod, sandbox_config: pb.PodSandboxConfig
    ) -> dict[str, pb.ImageSpec | ImagePullError]:
        """The images of the pod's ``image`` volumes, pulled (the kubelet's
        ``getImageVolumes``): the image to mount by volume name, or why it is missing."""
        out: dict[str, pb.ImageSpec | ImagePullError] = {}
        for volume in pod.spec.volumes:
            source = volume.get("image")
            if not isinstance(source, Mapping):
                continue
            try:
                image_ref = await self.images.ensure_volume_image(
                    self._cri_for(pod.uid), pod, source, sandbox_config
                )
            except ImagePullError as exc:
                out[str(volume.get("name", ""))] = exc
                continue
            out[str(volume.get("name", ""))] = pb.ImageSpec(
                image=image_ref, user_specified_image=str(source.get("reference", ""))
            )
        return out

    def _field_path(self, pod: Pod, name: str) -> str:
        init = any(c.name == name for c in pod.spec.init_containers)
        return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"

    async def _start_container(
        self,
        pod: Pod,
        container: Container,
        sandbox_id: PodSandboxID,
        sandbox_config: pb.PodSandboxConfig,
        pod_ips: Sequence[str],
        status: PodStatus,
        result: SyncResult,
        image_volumes: Mapping[str, pb.ImageSpec | ImagePullError] | None = None,
    ) -> bool:
        field_path = self._field_path(pod, container.name)
        volumes = image_volumes or {}
        for mount in container.volume_mounts:
            failed = volumes.get(str(mount.get("name", "")))
            if isinstance(failed, ImagePullError):  # the container waits for its image volume
                result.waiting[container.name] = (failed.reason, failed.message)
                result.errors.append(failed.message)
                return False
        previous = status.find_container_status_by_name(container.name)
        restart_count = previous.restart_count + 1 if previous is not None else 0
        try:
            image_ref = await self.images.ensure_image(
                self._cri_for(pod.uid), pod, container, sandbox_config
            )
        except ImagePullError as exc:
            result.waiting[container.name] = (exc.reason, exc.message)
            result.errors.append(exc.message)
            # as the kubelet's startContainer: "Error: ErrImagePull", "Error: ImagePullBackOff"
            self.events.pod_event(
                pod, WARNING, "Failed", f"Error: {exc.reason}", field_path=field_path
            )
            return False
        try:
            config = await self.configs.container_config(
                pod,
                container,
                restart_count=restart_count,
                image=image_ref,
                pod_ips=pod_ips,
                image_volumes={
                    name: spec for name, spec in volumes.items() if isinstance(spec, pb.ImageSpec)
                },
            )
        except ContainerConfigError as exc:
            result.waiting[container.name] = (exc.reason, exc.message)
            self.events.pod_event(
                pod, WARNING, "Failed", f"Error: {exc.message}", field_path=field_path
            )
            return False
        exited = _latest_exited(status, container.name)
        if exited is not None:
            self.backoff.next(backoff_key(pod, container), exited.finished_at / 1e9)
        try:
            container_id = ContainerID(
                await self._cri_for(pod.uid).create_container(sandbox_id, config, sandbox_config)
            )
        except CRIError as exc:
            result.waiting[container.name] = (CREATE_CONTAINER_ERROR, exc.message)
            self.events.pod_event(
                pod, WARNING, "Failed", f"Error: {exc.message}", field_path=field_path
            )
            return False
        self.events.pod_event(
            pod, NORMAL, "Created", f"Created container {container.name}", field_path=field_path
        )
        try:
            await self._cri_for(pod.uid).start_container(container_id)
        except CRIError as exc:
            result.waiting[container.name] = (RUN_CONTAINER_ERROR, exc.message)
            self.events.pod_event(
                pod, WARNING, "Failed", f"Error: {exc.message}", field_path=field_path
            )
            return False
        self.events.pod_event(
            pod, NORMAL, "Started", f"Started container {container.name}", field_path=field_path
        )
        self.probes.container_started(pod, container.name, container_id)
        post_start = (container.lifecycle or {}).get("postStart")
        if isinstance(post_start, Mapping):
            error = await self.hooks.run(
                pod,
                container,
                container_id,
                post_start,
                pod_ips,
                float(pod.spec.termination_grace_period_seconds),
            )
            if error is not None:
                self.events.pod_event(
                    pod, WARNING, "FailedPostStartHook", error, field_path=field_path
                )
                await self.kill_container(
                    pod,
                    container_id,
                    container.name,
                    container,
                    self._grace_period(pod, container, KillReason.FAILED_POST_START_HOOK),
                )
                result.waiting[container.name] = ("PostStartHookError", error)
                return False
        return True

    # -- killing ---------------------------------------------------------------

    def _grace_period(self, pod: Pod, container: Container | None, reason: KillReason) -> int:
        grace = pod.spec.termination_grace_period_seconds
        if pod.metadata.deletion_grace_period_seconds is not None:
            grace = pod.metadata.deletion_grace_period_seconds
        if container is not None and reason in (
            KillReason.LIVENESS_PROBE,
            KillReason.STARTUP_PROBE,
        ):
            probe = (
                container.liveness_probe
                if reason is KillReason.LIVENESS_PROBE
                else container.startup_probe
            )
            probe_grace = getattr(probe, "termination_grace_period_seconds", None)
            if isinstance(probe_grace, int):
                grace = probe_grace
        return grace

    async def kill_container(
        self,
        pod: Pod,
        container_id: ContainerID,
        name: str,
        spec: Container | None,
        grace: int,
    ) -> CRIError | None:
        """preStop within the grace period, then StopContainer with what is left (>= 2 s);
        what went wrong when the container could not be stopped, else None."""
        started = self.clock.monotonic()
        pre_stop = spec.pre_stop if spec is not None else None
        if pre_stop is not None and grace > 0:
            error = await self.hooks.run(pod, spec, container_id, pre_stop, (), float(grace))  # type: ignore[arg-type]
            if error is not None:
                # the kubelet keeps the hook's output out of the event (it may hold secrets)
                log.warning(
                    "pod=%s uid=%s: preStop hook of %s failed: %s", pod, pod.uid, name, error
                )
                self.events.pod_event(
                    pod,
                    WARNING,
                    "FailedPreStopHook",
                    "PreStopHook failed",
                    field_path=self._field_path(pod, name),
                )
        remaining = grace - int(self.clock.monotonic() - started)
        timeout = max(remaining, MINIMUM_GRACE_PERIOD) if grace > 0 else 0
        try:
            await self._cri_for(pod.uid).stop_container(container_id, timeout)
        except NotFound:
            pass  # already gone
        except CRIError as exc:
            log.warning(
                "pod=%s uid=%s: stopping container %s (%s) failed: %s",
                pod,
                pod.uid,
                name,
                container_id[:13],
                exc,
            )
            self.events.pod_event(
                pod,
                WARNING,
                "FailedKillPod",
                f"error killing pod: failed to stop container {name}: {exc.message}",
            )
            return exc
        self.probes.container_stopped(pod, name)
        return None

    async def kill_pod(self, pod: Pod, status: PodStatus, grace_override: int | None) -> None:
        """Stop every running container (regular ones first, then sidecars), then the sandboxes.

        Raises :class:`KillPodError` when something could not be stopped (after trying
        everything), so the pod worker tries again, as the kubelet's KillPod does.
        """
        specs = {c.name: c for c in (*pod.spec.init_containers, *pod.spec.containers)}
        init_names = {c.name for c in pod.spec.init_containers}
        running = status.running_container_statuses()
        started = self.clock.monotonic()
        failures: list[str] = []
        for group in (
            [c for c in running if c.name not in init_names],
            [c for c in running if c.name in init_names],
        ):
            if not group:
                continue
            # sidecars get what the regular containers left of the grace period (>= 2 s)
            waited = int(self.clock.monotonic() - started)
            kills: list[tuple[str, asyncio.Task[CRIError | None]]] = []
            async with asyncio.TaskGroup() as tg:
                for cs in group:
                    spec = specs.get(cs.name)
                    grace = (
                        grace_override
                        if grace_override is not None
                        else self._grace_period(pod, spec, KillReason.NONE)
                    )
                    if grace > 0 and waited:
                        grace = max(grace - waited, MINIMUM_GRACE_PERIOD)
                    self.events.pod_event(
                        pod,
                        NORMAL,
                        "Killing",
                        f"Stopping container {cs.name}",
                        field_path=self._field_path(pod, cs.name),
                    )
                    task = tg.create_task(
                        self.kill_container(pod, cs.id, cs.name, spec, grace),
                        name=f"kill-{pod.uid}-{cs.name}",
                    )
                    kills.append((cs.name, task))
            for name, task in kills:
                error = task.result()
                if error is not None:
                    failures.append(f"container {name}: {error.message}")
        for sandbox in status.sandbox_statuses:
            if sandbox.state is SandboxState.READY:
                try:
                    await self._cri_for(pod.uid).stop_pod_sandbox(sandbox.id)
                except NotFound:
                    pass
                except CRIError as exc:
                    log.warning(
                        "pod=%s uid=%s: stopping sandbox %s failed: %s",
                        pod,
                        pod.uid,
                        sandbox.id[:13],
                        exc,
                    )
                    failures.append(f"sandbox {sandbox.id[:13]}: {exc.message}")
        if failures:
            raise KillPodError(f"failed to stop {'; '.join(failures)}")

    async def kill_orphan(self, uid: PodUID) -> None:
        """Stop the running containers of a pod no source wants any more, though the kubelet
        has no spec for it (it was restarted meanwhile): an exec preStop comes from the
        container's annotations, as the kubelet restores it, and the grace period is the
        kubelet's override for orphans (HandlePodCleanups): 1 s, so the preStop gets 1 s and
        the container the 2 s minimum."""
        selector = {kl.POD_UID_LABEL: str(uid)}
        running = pb.ContainerFilter(
            label_selector=selector, state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING)
        )

        cri = self._cri_for(uid)

        async def stop(container_id: str) -> None:
            try:
                status = (await cri.container_status(container_id)).status
            except NotFound:
                return
            info = kl.container_info_from_annotations({**status.labels, **status.annotations})
            grace = ORPHAN_GRACE_PERIOD
            started = self.clock.monotonic()
            command = ((info.pre_stop_handler or {}).get("exec") or {}).get("command")
            if grace > 0 and isinstance(command, list) and command:
                with contextlib.suppress(CRIError):
                    await cri.exec_sync(container_id, [str(c) for c in command], grace)
            remaining = grace - int(self.clock.monotonic() - started)
            with contextlib.suppress(NotFound):
                await cri.stop_container(
                    container_id, max(remaining, MINIMUM_GRACE_PERIOD) if grace > 0 else 0
                )

        containers = await cri.list_containers(running)
        async with asyncio.TaskGroup() as tg:
            for c in containers:
                tg.create_task(stop(c.id), name=f"stop-orphan-{c.id[:13]}")

    async def remove_pod(self, uid: PodUID) -> None:
        """Remove every container and sandbox of a terminated pod, and its volumes."""
        selector = {kl.POD_UID_LABEL: str(uid)}
        cri = self._cri_for(uid)
        for c in await cri.list_containers(pb.ContainerFilter(label_selector=selector)):
            with contextlib.suppress(NotFound):
                await cri.remove_container(c.id)
        for s in await cri.list_pod_sandbox(pb.PodSandboxFilter(label_selector=selector)):
            with contextlib.suppress(NotFound):
                await cri.stop_pod_sandbox(s.id)
                await cri.remove_pod_sandbox(s.id)
        await self.configs.cleanup_pod(uid)

    # -- garbage collection (kuberuntime/gc.py decides) --------------------------

    async def remove_dead_container(self, uid: PodUID, container_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self._cri_for(uid).remove_container(container_id)

    async def remove_dead_sandbox(self, uid: PodUID, sandbox_id: str) -> None:
        with contextlib.suppress(NotFound):
            await self._cri_for(uid).remove_pod_sandbox(sandbox_id)

    # -- into a container: probes, hooks, exec and the streaming doors ------------

    async def exec_sync(
        self, container_id: str, cmd: Sequence[str], timeout: int, *, pod: Pod | None = None
    ) -> pb.ExecSyncResponse:
        cri = self._cri_for(pod.uid) if pod is not None else self.cri
        return await cri.exec_sync(container_id, cmd, timeout)

    async def exec_url(
        self,
        pod: Pod,
        container_id: str,
        cmd: Sequence[str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> str:
        return await self._cri_for(pod.uid).exec(
            container_id, cmd, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
        )

    async def attach_url(
        self, pod: Pod, container_id: str, *, tty: bool, stdin: bool, stdout: bool, stderr: bool
    ) -> str:
        return await self._cri_for(pod.uid).attach(
            container_id, tty=tty, stdin=stdin, stdout=stdout, stderr=stderr
        )

    async def port_forward_url(self, pod: Pod, sandbox_id: str, ports: Sequence[int]) -> str:
        return await self._cri_for(pod.uid).port_forward(sandbox_id, ports)


def _latest_exited(status: PodStatus, name: str) -> ContainerStatus | None:
    """The newest instance of ``name`` that exited: the kubelet's back-off counts from its
    finish, also when a newer instance is still running (killed for a failed liveness probe
    and started again in the same sync, it would otherwise never back off)."""
    for cs in status.container_statuses_newest_first():
        if cs.name == name and cs.state is ContainerState.EXITED:
            return cs
    return None


def _human(seconds: float) -> str:
    """Go's time.Duration string for whole and fractional seconds: 10s, 2m40s, 1.5s."""
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs}s" if secs else f"{minutes}m0s"


def _log_tail(path: Path) -> str:
    """The last lines of a CRI log file, bounded as the kubelet's fallback is."""
    if not path.is_file():
        return ""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 64 * 1024))
        raw = f.read().decode(errors="replace").splitlines()
    messages = []
    for line in raw[-FALLBACK_LOG_LINES * 4 :]:
        with contextlib.suppress(ValueError):
            parsed = crilog.parse_line(line)
            messages.append(parsed.message + ("" if parsed.partial else "\n"))
    text = "".join(messages)
    lines = text.splitlines(keepends=True)[-FALLBACK_LOG_LINES:]
    return "".join(lines)[-FALLBACK_LOG_BYTES:]
