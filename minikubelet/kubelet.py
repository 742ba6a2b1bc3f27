"""The kubelet: the sync loop that ties pod sources, pod workers, the runtime and status.

Every long-lived loop is a named task of :meth:`Kubelet.run`'s task group:

* the pod sources (a manifest directory, a URL) feed :class:`PodConfig`, whose
  ADD/UPDATE/REMOVE/... changes go to the pod manager
  (:mod:`minikubelet.podmanager`), which admits them and hands them to the pod
  workers;
* the PLEG relists the runtimes every second; a container that started or died
  triggers a sync of its pod (a removal does not, as in the kubelet); when one died,
  the container deletor first removes the pod's older dead instances of it
  (:class:`~minikubelet.kuberuntime.gc.PodContainerDeletor`), so the status that
  follows is computed from the newest one;
* the prober's result changes trigger syncs as well;
* housekeeping removes what belongs to no pod (orphans) and has dead containers
  beyond the kubelet's limit collected (:mod:`minikubelet.kuberuntime.gc`);
* container log rotation, and the local API over the node view
  (:mod:`minikubelet.nodeview`).

The kubelet is the pod workers' syncer (:meth:`sync_pod`, :meth:`sync_terminating_pod`,
:meth:`sync_terminated_pod`). It builds nothing: the composition root
(:func:`minikubelet.cli.run.build_kubelet`) makes every part and hands them in. It
knows the runtimes only through the runtime manager, and the time only through its
clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from minikubelet.api.pod import Pod
from minikubelet.backoff import Backoff
from minikubelet.clock import Clock
from minikubelet.config.podconfig import PodConfig
from minikubelet.config.types import SourceUpdate
from minikubelet.container.status import ContainerState, PodStatus
from minikubelet.errors import CRIError
from minikubelet.events import WARNING, EventRecorder
from minikubelet.kuberuntime.gc import ContainerGC, PodContainerDeletor
from minikubelet.kuberuntime.manager import KillPodError, KubeRuntimeManager
from minikubelet.kuberuntime.podsetup import PodSetup
from minikubelet.logs.rotate import ContainerLogManager
from minikubelet.pleg import EventType, GenericPLEG, PodLifecycleEvent
from minikubelet.podmanager import PodManager
from minikubelet.podworkers import ERROR_RETRY as SYNC_ERROR_RETRY
from minikubelet.podworkers import PodWorkers, WorkerState
from minikubelet.prober.manager import ProbeManager
from minikubelet.prober.results import ResultsManager
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
    #: API server mode: the node's kubeconfig (None: static pods only).
    kubeconfig: Path | None = None
    node_labels: dict[str, str] = field(default_factory=dict)
    #: ``key[=value]:Effect`` taints the Node is registered with.
    register_with_taints: list[str] = field(default_factory=list)
    max_pods: int = 110
    #: Where the kubelet's HTTPS API listens (the Node's daemonEndpoints).
    kubelet_port: int = 10250
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pod_log_root(self) -> Path:
        return self.log_root or self.root_dir / "pod-logs"

    @property
    def api_socket(self) -> Path:
        return self.root_dir / "kubelet.sock"


class PodSource(Protocol):
    """A source of pods (a manifest directory, a URL): it sends its updates to ``inbox``."""

    async def run(self, inbox: asyncio.Queue[SourceUpdate]) -> None: ...


class Server(Protocol):
    async def run(self) -> None: ...


class PodStartMetrics(Protocol):
    def observe_pod_start(self, seconds: float) -> None:
        """A pod is Running, ``seconds`` after the kubelet first saw it."""
        ...


class Kubelet:
    """The node agent. Constructing it has no side effects; :meth:`run` starts everything."""

    def __init__(
        self,
        config: KubeletConfig,
        *,
        clock: Clock,
        recorder: EventRecorder,
        pods: PodManager,
        workers: PodWorkers,
        runtime: KubeRuntimeManager,
        pleg: GenericPLEG,
        prober: ProbeManager,
        setup: PodSetup,
        statuses: StatusManager,
        gc: ContainerGC,
        log_manager: ContainerLogManager,
        backoffs: Sequence[Backoff] = (),
        pod_config: PodConfig | None = None,
        sources: Sequence[tuple[str, PodSource]] = (),
        servers: Sequence[tuple[str, Server]] = (),
        metrics: PodStartMetrics | None = None,
        deletor: PodContainerDeletor | None = None,
    ) -> None:
        self.config = config
        self.node_name = config.node_name
        self.clock = clock
        self.recorder = recorder
        self.pods = pods
        self.pod_workers = workers
        self.runtime = runtime
        self.pleg = pleg
        self.prober = prober
        self.setup = setup
        self.status_manager = statuses
        self.gc = gc
        self.deletor = deletor
        self.log_manager = log_manager
        self.backoffs = tuple(backoffs)
        self.pod_config = pod_config or PodConfig()
        self.sources = tuple(sources)
        self.servers = tuple(servers)
        self.metrics = metrics
        self._waiting: dict[PodUID, dict[str, tuple[str, str]]] = {}
        #: Called with each pod whose run is over and cleaned up (its containers are gone).
        self.terminated_hooks: list[Callable[[Pod], None]] = []
        self.started = asyncio.Event()
        workers.bind(self)

    # -- running ---------------------------------------------------------------

    async def run(self) -> None:
        """Run until cancelled."""
        self.config.root_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config.root_dir.chmod(0o700)
        await self.runtime.connect()
        inbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
        outbox: asyncio.Queue[SourceUpdate] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.pod_workers.run(), name="pod-workers")
            if self.deletor is not None:
                tg.create_task(self.deletor.run(), name="container-deletor")
            tg.create_task(self.prober.run(), name="prober")
            await self.pod_workers.wait_running()
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
            for name, source in self.sources:
                tg.create_task(source.run(inbox), name=f"source-{name}")
            tg.create_task(self._housekeeping_loop(), name="housekeeping")
            tg.create_task(self.log_manager.run(), name="container-log-rotation")
            for name, server in self.servers:
                tg.create_task(server.run(), name=name)
            self.started.set()
            log.info(
                "kubelet %s started: runtime %s %s",
                self.node_name,
                self.runtime.runtime_name,
                self.runtime.runtime_version,
            )

    async def shutdown_pods(self, grace_period: int) -> None:
        """Graceful node shutdown: stop every pod within ``grace_period`` seconds (or its own
        shorter one), then remove its containers, sandboxes and volumes."""
        pods = list(self.pods.all())

        async def one(pod: Pod) -> None:
            status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
            grace = min(grace_period, pod.spec.termination_grace_period_seconds)
            try:
                await self.runtime.kill_pod(pod, status, grace)
            except KillPodError as exc:
                log.warning("node shutdown: pod=%s uid=%s: %s", pod, pod.uid, exc)
            await self.runtime.remove_pod(pod.uid)

        log.info("node shutdown: stopping %d pods (grace %ds)", len(pods), grace_period)
        async with asyncio.TaskGroup() as tg:
            for pod in pods:
                tg.create_task(one(pod), name=f"shutdown-{pod.uid}")

    async def release_host(self) -> None:
        """Unmount and remove every pod's volumes: for when the runtime's containers are gone
        with it (a bundled simulated runtime stops with the node)."""
        for pod in self.pods.all():
            await self.setup.cleanup_pod(pod.uid)

    # -- events that trigger syncs ---------------------------------------------

    async def _config_loop(self, outbox: asyncio.Queue[SourceUpdate]) -> None:
        while True:
            self.pods.handle(await outbox.get())

    def _on_pleg_event(self, event: PodLifecycleEvent) -> None:
        """Sync the pod of a started, died or changed container (``isSyncPodWorthy``); when
        one died, after the deletor removed its older dead instances (the kubelet's
        ``cleanUpContainersInPod``, from the pod as the relist that saw it die found it)."""
        uid = event.uid
        if event.type is EventType.CONTAINER_REMOVED:
            return
        if event.type is EventType.CONTAINER_DIED and self.deletor is not None:
            workers = self.pod_workers
            self.deletor.delete_containers_in_pod(
                uid,
                event.container_id,
                self.pleg.pods.get(uid),
                # a pod that was removed and has finished keeps nothing
                remove_all=workers.state(uid) is WorkerState.TERMINATED
                and (self.pods.is_removed(uid) or uid not in self.pods),
                then=lambda: self._sync_if_wanted(uid),
            )
            return
        self._sync_if_wanted(uid)

    def _sync_if_wanted(self, uid: PodUID) -> None:
        pod = self.pods.get(uid)
        if pod is not None:
            self.pod_workers.sync(pod)

    async def _probe_loop(self, results: ResultsManager) -> None:
        """A probe result changed: sync the pod (restart it, or update its readiness)."""
        async for update in results.updates():
            pod = self.pods.get(update.pod_uid)
            if pod is not None:
                self.pod_workers.sync(pod)

    # -- the pod syncer (called by the pod workers) ------------------------------

    def _generate(self, pod: Pod, status: PodStatus, *, terminal: bool = False) -> dict[str, Any]:
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
            runtime_name=self.runtime.runtime_name,
            now=datetime.fromtimestamp(self.clock.now(), UTC),
            terminal=terminal,
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
        if self.metrics is not None:
            self._observe_start(self.metrics, pod, api_status)
        self.status_manager.set_pod_status(pod.uid, api_status)
        log.debug("pod status set pod=%s uid=%s phase=%s", pod, pod.uid, api_status.get("phase"))
        retry_at = result.retry_at
        if retry_at is None and (result.errors or result.waiting):
            # as the kubelet's pod workers: a sync that failed is tried again after ~10 s
            retry_at = self.clock.now() + SYNC_ERROR_RETRY
        return False, retry_at

    def _observe_start(
        self, metrics: PodStartMetrics, pod: Pod, api_status: dict[str, Any]
    ) -> None:
        """Pending (or no status yet) -> Running: the pod's start duration, as the kubelet's
        SyncPod observes it (from the time the pod was first seen)."""
        if api_status.get("phase") != "Running":
            return
        previous = self.status_manager.get(pod.uid)
        if previous is None or previous.get("phase") in (None, "", "Pending"):
            metrics.observe_pod_start(self.clock.now() - self.pods.first_seen(pod.uid))

    async def sync_terminating_pod(self, pod: Pod, grace_period: int | None) -> None:
        """Stop the pod's containers and sandboxes; raises when something could not be
        stopped, so its worker tries again (the pod is never taken for gone while it runs)."""
        status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
        await self.runtime.kill_pod(pod, status, grace_period)
        self.prober.remove_pod(pod.uid)
        status = await self.runtime.get_pod_status(pod.uid, pod.name, pod.namespace, pod=pod)
        # its containers are stopped for good: the phase is final (Succeeded or Failed), as
        # the kubelet reports a pod whose worker finished it
        self.status_manager.set_pod_status(pod.uid, self._generate(pod, status, terminal=True))

    async def sync_terminated_pod(self, pod: Pod) -> None:
        await self.setup.cleanup_pod(pod.uid)
        removed = self.pods.is_removed(pod.uid)
        if removed:
            await self.runtime.remove_pod(pod.uid)
            self._waiting.pop(pod.uid, None)
        for hook in self.terminated_hooks:
            hook(pod)
        if removed:
            self.status_manager.remove(pod.uid)
        self.pods.forget(pod.uid)

    def sync_failed(self, pod: Pod, error: Exception) -> None:
        self.recorder.pod_event(pod, WARNING, "FailedSync", f"error syncing pod: {error}")

    # -- housekeeping ----------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            await self.clock.sleep(self.config.housekeeping_period)
            try:
                await self.housekeeping()
            except CRIError as exc:
                log.warning("housekeeping: %s", exc)

    async def housekeeping(self) -> None:
        """Remove orphans and dead containers beyond the limit; forget finished workers."""
        workers = self.pod_workers
        for uid, runtime_pod in list(self.pleg.pods.items()):
            if uid in self.pods or workers.state(uid) is WorkerState.TERMINATING:
                continue
            if workers.is_known(uid) and not self.pods.is_removed(uid):
                continue
            log.info(
                "removing orphaned pod %s/%s uid=%s", runtime_pod.namespace, runtime_pod.name, uid
            )
            await self.runtime.kill_orphan(uid)
            await self.runtime.remove_pod(uid)
        for pod in self.pods.removed():
            # finished (Succeeded/Failed) before its source removed it: the worker ignored the kill
            if workers.state(pod.uid) in (WorkerState.TERMINATED, None):
                await self.sync_terminated_pod(pod)
        for uid in list(workers.uids()):
            if uid not in self.pods and workers.state(uid) is WorkerState.TERMINATED:
                workers.forget(uid)
        await self.gc.collect(
            self.pleg.pods, busy=lambda uid: workers.state(uid) is WorkerState.TERMINATING
        )
        for backoff in self.backoffs:
            backoff.gc()


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
