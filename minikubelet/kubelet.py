"""The kubelet: pod sources in, pod workers syncing through the CRI, status out.

Every long-lived loop is a named task of :meth:`Kubelet.run`'s task group:

* the pod sources (a manifest directory, a URL) feed :class:`PodConfig`, whose
  ADD/UPDATE/REMOVE/... changes become pod worker updates;
* the PLEG relists the runtime every second; a container that started, died or
  vanished triggers a sync of its pod;
* the prober's result changes trigger syncs as well;
* housekeeping removes what belongs to no pod (orphans) and garbage-collects
  dead containers beyond the kubelet's per-container limit;
* the local API serves the node's view on a unix socket.

The kubelet knows the runtime only through its CRI client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minikubelet.api.pod import Container, Pod
from minikubelet.backoff import Backoff
from minikubelet.clock import RealClock, rfc3339
from minikubelet.config.file import FileSource
from minikubelet.config.http import URLSource
from minikubelet.config.podconfig import PodConfig
from minikubelet.config.types import PodOperation, PodUpdate
from minikubelet.container.status import ContainerState, PodStatus
from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import TraceRecorder
from minikubelet.errors import CRIError, FailedPrecondition, InvalidArgument, NotFound
from minikubelet.events import WARNING, EventRecorder
from minikubelet.images import ImageManager
from minikubelet.kuberuntime.manager import KubeRuntimeManager
from minikubelet.kuberuntime.podsetup import PodSetup
from minikubelet.logs.rotate import ContainerLogManager
from minikubelet.pleg import GenericPLEG, PodLifecycleEvent
from minikubelet.podworkers import ERROR_RETRY as SYNC_ERROR_RETRY
from minikubelet.podworkers import PodUpdate as WorkerUpdate
from minikubelet.podworkers import PodWorkers, UpdateType, WorkerState
from minikubelet.prober.manager import ProbeManager
from minikubelet.prober.results import ResultsManager
from minikubelet.server.api import LocalAPI
from minikubelet.status.generate import generate_pod_status
from minikubelet.status.manager import StatusManager
from minikubelet.types import PodUID

log = logging.getLogger(__name__)

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(slots=True)
class KubeletConfig:
    node_name: str
    root_dir: Path
    manifests: Path | None = None
    manifest_url: str | None = None
    node_ip: str = "127.0.0.1"
    log_root: Path | None = None  # default: <root_dir>/pods-logs
    relist_period: float = 1.0
    resync: float = 60.0
    housekeeping_period: float = 2.0
    file_check_period: float = 20.0
    crash_loop_initial: float = 10.0
    crash_loop_max: float = 300.0
    crash_loop_reset: float = 600.0
    image_backoff_initial: float = 10.0
    image_backoff_max: float = 300.0
    max_per_pod_container: int = 1
    container_log_max_size: int = 10 * 1024 * 1024
    container_log_max_files: int = 5
    container_log_monitor_interval: float = 10.0
    serve_api: bool = True
    #: > 0: on shutdown, stop every pod within this many seconds (graceful node shutdown)
    shutdown_grace_period: int = 0
    cgroup_parent: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pod_log_root(self) -> Path:
        return self.log_root or self.root_dir / "pod-logs"

    @property
    def api_socket(self) -> Path:
        return self.root_dir / "kubelet.sock"


class Kubelet:
    """The node agent. Constructing it has no side effects; :meth:`run` starts everything."""

    def __init__(self, config: KubeletConfig, cri: CRIClient) -> None:
        self.config = config
        self.cri = cri
        self.node_name = config.node_name
        clock = RealClock()
        self.recorder = EventRecorder(node_name=config.node_name, clock=clock)
        self.crash_backoff = Backoff(
            initial=config.crash_loop_initial,
            maximum=config.crash_loop_max,
            reset_after=config.crash_loop_reset,
            clock=clock,
        )
        self.image_backoff = Backoff(
            initial=config.image_backoff_initial, maximum=config.image_backoff_max, clock=clock
        )
        self.status_manager = StatusManager()
        self.prober = ProbeManager(self._exec_for_probe, on_event=self._probe_event)
        self.setup = PodSetup(
            root_dir=config.root_dir,
            log_root=config.pod_log_root,
            node_name=config.node_name,
            host_ip=config.node_ip,
            cgroup_parent=config.cgroup_parent,
            exec_runner=self._exec_for_probe,
        )
        self.runtime = KubeRuntimeManager(
            cri,
            events=self.recorder,
            images=ImageManager(cri, self.recorder, self.image_backoff),
            backoff=self.crash_backoff,
            configs=self.setup,
            probes=self.setup.probe_results(self.prober),
            hooks=self.setup,
        )
        self.pleg = GenericPLEG(self.runtime.list_pods, period=config.relist_period)
        self.log_manager = ContainerLogManager(
            cri,
            max_size=config.container_log_max_size,
            max_files=config.container_log_max_files,
            interval=config.container_log_monitor_interval,
        )
        self.pod_workers = PodWorkers(self, resync=config.resync)
        self.pod_config = PodConfig()
        self.file_source = (
            FileSource(
                config.manifests,
                node_name=config.node_name,
                period=config.file_check_period,
                validate=Pod.from_dict,  # a pod that cannot be read is the file's fault
            )
            if config.manifests is not None
            else None
        )
        self.url_source = (
            URLSource(config.manifest_url, node_name=config.node_name)
            if config.manifest_url
            else None
        )
        self._pods: dict[PodUID, Pod] = {}  # what the sources want
        self._removed: dict[PodUID, Pod] = {}  # gone from the sources, terminating
        self._readded: dict[PodUID, Pod] = {}  # put back while terminating: runs again after
        self._deleted_at: dict[PodUID, float] = {}
        self._first_seen: dict[PodUID, float] = {}
        self._waiting: dict[PodUID, dict[str, tuple[str, str]]] = {}
        self._rejected: dict[str, dict[str, Any]] = {}
        self.started = asyncio.Event()
        #: The CRI call trace, when the composition root records one (for the local API).
        self.trace_recorder: TraceRecorder | None = None
        self.synced_once = 0

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        self.config.root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config.root_dir.chmod(0o700)
        if self.cri.version_info is None:
            await self.cri.connect()
        inbox: asyncio.Queue[PodUpdate] = asyncio.Queue()
        outbox: asyncio.Queue[PodUpdate] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.pod_workers.run(), name="pod-workers")
            tg.create_task(self.prober.run(), name="prober")
            await asyncio.sleep(0)  # let the owners above open their task groups
            await self.pleg.relist()  # know what the runtime holds before the first sync
            tg.create_task(self.pleg.run(self._on_pleg_event), name="pleg")
            tg.create_task(self.pod_config.run(inbox, outbox), name="pod-config")
            tg.create_task(self._config_loop(outbox), name="config-updates")
            for kind, results in (
                ("readiness", self.prober.readiness_manager),
                ("liveness", self.prober.liveness_manager),
                ("startup", self.prober.startup_manager),
            ):
                tg.create_task(self._probe_loop(results), name=f"probe-results-{kind}")
            if self.file_source is not None:
                tg.create_task(self.file_source.run(inbox), name="source-file")
            if self.url_source is not None:
                tg.create_task(self.url_source.run(inbox), name="source-url")
            tg.create_task(self._housekeeping_loop(), name="housekeeping")
            tg.create_task(self.log_manager.run(), name="container-log-rotation")
            if self.config.serve_api:
                api = LocalAPI(self, self.config.api_socket)
                tg.create_task(api.run(), name="local-api")
            self.started.set()
            log.info(
                "kubelet %s started: runtime %s %s",
                self.node_name,
                self.runtime_name,
                self.runtime_version,
            )

    async def shutdown_pods(self, grace_period: int) -> None:
        """Graceful node shutdown: stop every pod within ``grace_period`` seconds (or its own
        shorter one), then remove its containers, sandboxes and volumes."""
        pods = {**self._pods, **self._removed}

        async def one(pod: Pod) -> None:
            status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
            grace = min(grace_period, pod.spec.termination_grace_period_seconds)
            await self.runtime.kill_pod(pod, status, grace)
            await self.runtime.remove_pod(pod.uid)

        log.info("node shutdown: stopping %d pods (grace %ds)", len(pods), grace_period)
        async with asyncio.TaskGroup() as tg:
            for pod in pods.values():
                tg.create_task(one(pod), name=f"shutdown-{pod.uid}")

    async def release_host(self) -> None:
        """Unmount and remove every pod's volumes: for when the runtime's containers are gone
        with it (a bundled simulated runtime stops with the node)."""
        for uid in {*self._pods, *self._removed}:
            await self.setup.cleanup_pod(uid)

    @property
    def runtime_name(self) -> str:
        return self.runtime.runtime_name

    @property
    def runtime_version(self) -> str:
        info = self.cri.version_info
        return info.runtime_version if info is not None else ""

    # -- config ----------------------------------------------------------------

    async def _config_loop(self, outbox: asyncio.Queue[PodUpdate]) -> None:
        while True:
            self.handle_config(await outbox.get())

    def handle_config(self, update: PodUpdate) -> None:
        """Turn one PodConfig change into pod worker updates."""
        if update.op in (PodOperation.ADD, PodOperation.UPDATE, PodOperation.RECONCILE):
            for raw in update.pods:
                pod = self._admit(raw)
                if pod is None:
                    continue
                if pod.uid in self._removed:
                    # put back unchanged (same UID) before its old run is cleaned up: it
                    # starts again once that is done, as the kubelet's restartRequested
                    self._readded[pod.uid] = pod
                    continue
                self._pods[pod.uid] = pod
                self._first_seen.setdefault(pod.uid, time.time())
                self.prober.add_pod(pod)
                if update.op is PodOperation.ADD:  # a worker that terminated it makes way
                    self.pod_workers.restart_pod(WorkerUpdate(pod))
                else:
                    self.pod_workers.update_pod(WorkerUpdate(pod))
        elif update.op in (PodOperation.REMOVE, PodOperation.DELETE):
            for raw in update.pods:
                uid = PodUID(str(raw.get("metadata", {}).get("uid", "")))
                pod = self._pods.pop(uid, None)
                if pod is None:
                    # a rejected pod gone from its source: its warning goes with it
                    self._rejected.pop(str(raw.get("metadata", {}).get("name", "?")), None)
                    self._readded.pop(uid, None)
                    continue
                self._removed[uid] = pod
                self._deleted_at[uid] = time.time()
                log.info("pod=%s uid=%s removed from its source: terminating", pod, uid)
                self.pod_workers.update_pod(WorkerUpdate(pod, UpdateType.KILL))

    def _admit(self, raw: dict[str, Any]) -> Pod | None:
        source = str(
            raw.get("metadata", {}).get("annotations", {}).get("kubernetes.io/config.source", "")
        )
        name = str(raw.get("metadata", {}).get("name", "?"))
        try:
            pod = Pod.from_dict(raw)
        except ValueError as exc:
            reason = str(exc)
            self._rejected[name] = {"source": source, "line": None, "reason": reason, "name": name}
            self.recorder.event(
                {"kind": "Pod", "name": name, "namespace": "default"},
                WARNING,
                "FailedValidation",
                reason,
            )
            return None
        self._rejected.pop(name, None)
        return pod

    # -- events that trigger syncs ---------------------------------------------

    def _on_pleg_event(self, event: PodLifecycleEvent) -> None:
        pod = self._pods.get(event.uid)
        if pod is not None:
            self.pod_workers.update_pod(WorkerUpdate(pod))

    async def _probe_loop(self, results: ResultsManager) -> None:
        """A probe result changed: sync the pod (restart it, or update its readiness)."""
        async for update in results.updates():
            pod = self._pods.get(update.pod_uid)
            if pod is not None:
                self.pod_workers.update_pod(WorkerUpdate(pod))

    def _probe_event(self, pod: Pod, container: str, type_: str, reason: str, message: str) -> None:
        init = any(c.name == container for c in pod.spec.init_containers)
        self.recorder.pod_event(
            pod,
            WARNING,
            reason,
            message,
            field_path=f"spec.{'initContainers' if init else 'containers'}{{{container}}}",
        )

    async def _exec_for_probe(self, container_id: str, cmd: list[str], timeout: int) -> Any:
        return await self.cri.exec_sync(container_id, cmd, timeout)

    # -- the pod syncer (called by the pod workers) ------------------------------

    def _generate(self, pod: Pod, status: PodStatus) -> dict[str, Any]:
        previous = self.status_manager.get(pod.uid)
        ids = [c.id for c in status.container_statuses]
        return generate_pod_status(
            pod,
            status,
            previous=previous,
            ready={cid: self.prober.is_ready(cid) for cid in ids},
            started={cid: self.prober.is_started(cid) for cid in ids},
            waiting=self._waiting.get(pod.uid, {}),
            host_ip=self.config.node_ip,
            runtime_name=self.runtime_name,
            now=datetime.now(UTC),
        )

    def _observe(self, pod: Pod, status: PodStatus) -> None:
        """Tell the prober which instance of each container is current, and whether it runs."""
        pod_ip = status.ips[0] if status.ips else self.config.node_ip
        for container in (*pod.spec.init_containers, *pod.spec.containers):
            cs = status.find_container_status_by_name(container.name)
            if cs is not None and cs.state is ContainerState.RUNNING:
                self.prober.update_container(
                    pod, container.name, cs.id, cs.started_at / 1e9, pod_ip=pod_ip
                )
            else:
                self.prober.update_container(pod, container.name, None, pod_ip=pod_ip)

    async def sync_pod(self, pod: Pod) -> tuple[bool, float | None]:
        status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
        self._observe(pod, status)
        api_status = self._generate(pod, status)
        if api_status.get("phase") in TERMINAL_PHASES:
            self.status_manager.set_pod_status(pod.uid, api_status)
            return True, None
        result = await self.runtime.sync_pod(pod, status)
        self._waiting[pod.uid] = result.waiting
        if result.changed or result.waiting:
            status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
            self._observe(pod, status)
            api_status = self._generate(pod, status)
        self.status_manager.set_pod_status(pod.uid, api_status)
        self.synced_once += 1
        retry_at = result.retry_at
        if retry_at is None and (result.errors or result.waiting):
            # as the kubelet's pod workers: a sync that failed is tried again after ~10 s
            retry_at = time.time() + SYNC_ERROR_RETRY
        return False, retry_at

    async def sync_terminating_pod(self, pod: Pod, grace_period: int | None) -> None:
        status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
        await self.runtime.kill_pod(pod, status, grace_period)
        self.prober.remove_pod(pod.uid)
        status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
        self.status_manager.set_pod_status(pod.uid, self._generate(pod, status))

    async def sync_terminated_pod(self, pod: Pod) -> None:
        await self.setup.cleanup_pod(pod.uid)
        if pod.uid in self._removed:
            await self.runtime.remove_pod(pod.uid)
            self.status_manager.remove(pod.uid)
            self._waiting.pop(pod.uid, None)
            self._removed.pop(pod.uid, None)
            self._deleted_at.pop(pod.uid, None)
            self._first_seen.pop(pod.uid, None)
            self.pod_workers.forget(pod.uid)
        readded = self._readded.pop(pod.uid, None)
        if readded is not None:
            self._pods[readded.uid] = readded
            self._first_seen[readded.uid] = time.time()
            self.prober.add_pod(readded)
            self.pod_workers.restart_pod(WorkerUpdate(readded))

    def sync_failed(self, pod: Pod, error: Exception) -> None:
        self.recorder.pod_event(pod, WARNING, "FailedSync", f"error syncing pod: {error}")

    # -- housekeeping ----------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_period)
            try:
                await self.housekeeping()
            except CRIError as exc:
                log.warning("housekeeping: %s", exc)

    async def housekeeping(self) -> None:
        """Remove orphans and dead containers beyond the limit; forget finished workers."""
        for uid, runtime_pod in list(self.pleg.pods.items()):
            if uid in self._pods or self.pod_workers.state(uid) is WorkerState.TERMINATING:
                continue
            if self.pod_workers.is_known(uid) and uid not in self._removed:
                continue
            log.info(
                "removing orphaned pod %s/%s uid=%s", runtime_pod.namespace, runtime_pod.name, uid
            )
            await self.runtime.kill_orphan(uid)
            await self.runtime.remove_pod(uid)
        for uid, pod in list(self._removed.items()):
            # finished (Succeeded/Failed) before its source removed it: the worker ignored the kill
            if self.pod_workers.state(uid) in (WorkerState.TERMINATED, None):
                await self.sync_terminated_pod(pod)
        for uid in list(self.pod_workers.uids()):
            if uid not in self._pods and self.pod_workers.state(uid) is WorkerState.TERMINATED:
                self.pod_workers.forget(uid)
        await self._collect_garbage()
        self.crash_backoff.gc()
        self.image_backoff.gc()
        if self.file_source is not None:
            self._rejected = {k: v for k, v in self._rejected.items() if v.get("line") is None}

    async def _collect_garbage(self) -> None:
        """Keep at most ``max_per_pod_container`` dead instances of each container."""
        keep = self.config.max_per_pod_container
        for uid, runtime_pod in self.pleg.pods.items():
            if self.pod_workers.state(uid) is WorkerState.TERMINATING:
                continue
            by_name: dict[str, list[Any]] = {}
            for c in runtime_pod.containers:
                if c.state is ContainerState.EXITED:
                    by_name.setdefault(c.name, []).append(c)
            for dead in by_name.values():
                dead.sort(key=lambda c: c.created_at, reverse=True)
                for c in dead[keep:]:
                    with contextlib.suppress(NotFound):
                        await self.cri.remove_container(c.id)
            ready = [s for s in runtime_pod.sandboxes if s.state is ContainerState.RUNNING]
            dead_sandboxes = sorted(
                (s for s in runtime_pod.sandboxes if s.state is not ContainerState.RUNNING),
                key=lambda s: s.created_at,
                reverse=True,
            )
            # the newest sandbox stays while it is the pod's latest; older dead ones go
            for s in dead_sandboxes[0 if ready else 1 :]:
                with contextlib.suppress(NotFound):
                    await self.cri.remove_pod_sandbox(s.id)

    # -- the node view (local API) --------------------------------------------

    def _with_creation(self, pod: Pod) -> dict[str, Any]:
        """The pod as the API shows it: creationTimestamp is when this node first saw it."""
        item = dict(pod.raw)
        metadata = dict(item.get("metadata", {}))
        if "creationTimestamp" not in metadata:
            seen = self._first_seen.setdefault(pod.uid, time.time())
            metadata["creationTimestamp"] = rfc3339(seen)
        item["metadata"] = metadata
        return item

    def pods(self) -> list[dict[str, Any]]:
        out = []
        for uid, pod in self._pods.items():
            item = self._with_creation(pod)
            status = self.status_manager.get(uid)
            if status is not None:
                item["status"] = status
            out.append(item)
        for uid, pod in self._removed.items():
            # a pod being terminated shows as Terminating, as kubectl prints it
            item = self._with_creation(pod)
            item["metadata"] = {
                **item["metadata"],
                "deletionTimestamp": rfc3339(self._deleted_at.get(uid, time.time())),
                "deletionGracePeriodSeconds": pod.spec.termination_grace_period_seconds,
            }
            status = self.status_manager.get(uid)
            if status is not None:
                item["status"] = status
            out.append(item)
        return out

    def rejected(self) -> list[dict[str, Any]]:
        items = list(self._rejected.values())
        if self.file_source is not None:
            for path, error in self.file_source.errors.items():
                items.append({"source": str(path), "line": error.line, "reason": error.reason})
        return items

    def events(self) -> list[dict[str, Any]]:
        return self.recorder.events()

    def _find(self, namespace: str, name: str) -> Pod:
        for pod in self._pods.values():
            if pod.namespace == namespace and pod.name == name:
                return pod
        raise NotFound(f'pods "{name}" not found in namespace "{namespace}"')

    def _container_status(self, pod: Pod, container: str) -> dict[str, Any]:
        if not any(c.name == container for c in (*pod.spec.init_containers, *pod.spec.containers)):
            names = ", ".join(c.name for c in pod.spec.containers)
            raise NotFound(
                f'container "{container}" is not valid for pod "{pod.name}"'
                f" (choose one of: {names})"
            )
        status = self.status_manager.get(pod.uid) or {}
        for key in ("containerStatuses", "initContainerStatuses"):
            for cs in status.get(key, []):
                if cs.get("name") == container:
                    return dict(cs)
        return {}

    def container_log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path:
        found = self._find(namespace, pod)
        cs = self._container_status(found, container)
        restarts = int(cs.get("restartCount", 0))
        if previous:
            if restarts == 0 and not cs.get("lastState", {}).get("terminated"):
                raise NotFound(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            restarts -= 1
        path = self.setup.container_log_path(found, container, max(restarts, 0))
        if not path.exists():
            raise NotFound(
                f'container "{container}" in pod "{pod}" has no log yet (is it waiting to start?)'
            )
        return path

    async def exec(
        self, namespace: str, pod: str, container: str, cmd: list[str], timeout: int
    ) -> tuple[bytes, bytes, int]:
        found = self._find(namespace, pod)
        cs = self._container_status(found, container)
        if "running" not in cs.get("state", {}):
            raise FailedPrecondition(f'container "{container}" in pod "{pod}" is not running')
        container_id = str(cs.get("containerID", "")).split("://", 1)[-1]
        resp = await self.cri.exec_sync(container_id, cmd, timeout)
        return resp.stdout, resp.stderr, resp.exit_code

    async def stream_url(
        self,
        kind: str,
        namespace: str,
        pod: str,
        container: str,
        cmd: list[str],
        *,
        tty: bool,
        stdin: bool,
        stdout: bool,
        stderr: bool,
    ) -> str:
        found = self._find(namespace, pod)
        cs = self._container_status(found, container)
        if "running" not in cs.get("state", {}):
            raise FailedPrecondition(f'container "{container}" in pod "{pod}" is not running')
        container_id = str(cs.get("containerID", "")).split("://", 1)[-1]
        flags = {"tty": tty, "stdin": stdin, "stdout": stdout, "stderr": stderr}
        if kind == "exec":
            return await self.cri.exec(container_id, cmd, **flags)
        if kind == "attach":
            return await self.cri.attach(container_id, **flags)
        raise InvalidArgument(f"unknown stream kind {kind!r}")

    async def port_forward_url(self, namespace: str, pod: str, ports: list[int]) -> str:
        found = self._find(namespace, pod)
        runtime_pod = self.pleg.pods.get(found.uid)
        ready = [
            s
            for s in (runtime_pod.sandboxes if runtime_pod is not None else ())
            if s.state is ContainerState.RUNNING
        ]
        if not ready:
            raise FailedPrecondition(f'pod "{pod}" has no running sandbox to forward ports into')
        return await self.cri.port_forward(ready[0].id, ports)

    async def delete_pod(self, namespace: str, pod: str, grace_seconds: int | None) -> None:
        found = self._find(namespace, pod)
        source = found.metadata.annotations.get("kubernetes.io/config.source", "")
        if source in ("file", "http"):
            where = f" ({self.config.manifests})" if source == "file" else ""
            raise FailedPrecondition(
                f'pod "{pod}" is a static pod from its {source} source{where}: '
                "remove or edit its manifest to delete it"
            )
        self.pod_workers.update_pod(WorkerUpdate(found, UpdateType.KILL, grace_seconds))

    def trace(self) -> TraceRecorder | None:
        return self.trace_recorder

    def status(self) -> dict[str, Any]:
        phases: dict[str, int] = {}
        for uid in self._pods:
            phase = (self.status_manager.get(uid) or {}).get("phase", "Pending")
            phases[phase] = phases.get(phase, 0) + 1
        return {
            "nodeName": self.node_name,
            "runtime": {
                "name": self.runtime_name,
                "version": self.runtime_version,
                "endpoint": str(self.cri.endpoint),
            },
            "pods": len(self._pods),
            "phases": phases,
            "containers": sum(len(p.containers) for p in self.pleg.pods.values()),
            "pleg": {"healthy": self.pleg.healthy(), "relists": self.pleg.relists},
            "time": time.time(),
        }


def container_named(pod: Pod, name: str) -> Container | None:
    for c in (*pod.spec.init_containers, *pod.spec.containers):
        if c.name == name:
            return c
    return None


def host_ip() -> str:
    """The node's address: the first global IPv4 address of this host, else loopback."""
    import socket

    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            address = str(info[4][0])
            if not address.startswith("127."):
                return address
    return "127.0.0.1"


__all__: Sequence[str] = ("Kubelet", "KubeletConfig", "host_ip")
