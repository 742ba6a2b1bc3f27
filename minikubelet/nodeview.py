"""The node as its local API and dashboard see it (:class:`~minikubelet.server.view.NodeView`).

Read-mostly: pods with the status the kubelet last generated, rejected
manifests, events, log files, and the doors into a container (``exec``,
streaming URLs, port-forward), each of which goes through the runtime manager to
the runtime that holds the pod. It owns no task and no state of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from minikubelet.api.pod import Pod
from minikubelet.clock import Clock, rfc3339
from minikubelet.container.status import ContainerState
from minikubelet.cri.trace import TraceRecorder
from minikubelet.errors import FailedPrecondition, InvalidArgument, NotFound
from minikubelet.events import EventRecorder
from minikubelet.kuberuntime.manager import KubeRuntimeManager
from minikubelet.pleg import GenericPLEG
from minikubelet.podmanager import PodManager
from minikubelet.podworkers import PodWorkers, UpdateType, WorkerUpdate
from minikubelet.status.manager import StatusManager


class LogPaths(Protocol):
    def container_log_path(self, pod: Pod, container: str, restart_count: int) -> Path: ...


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_name: str
    manifests: Path | None = None


class KubeletNodeView:
    def __init__(
        self,
        info: NodeInfo,
        *,
        pods: PodManager,
        statuses: StatusManager,
        recorder: EventRecorder,
        runtime: KubeRuntimeManager,
        pleg: GenericPLEG,
        logs: LogPaths,
        workers: PodWorkers,
        clock: Clock,
        source_errors: Callable[[], list[dict[str, Any]]] = list,
        trace: TraceRecorder | None = None,
        api_server: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.node_name = info.node_name
        self._info = info
        self._pods = pods
        self._statuses = statuses
        self._recorder = recorder
        self._runtime = runtime
        self._pleg = pleg
        self._logs = logs
        self._workers = workers
        self._clock = clock
        self._source_errors = source_errors
        self._trace = trace
        #: In API server mode: ``{"server", "nodeReady", "leaseRenewed"}`` for ``/status``.
        self._api_server = api_server

    def _with_creation(self, pod: Pod) -> dict[str, Any]:
        """The pod as the API shows it: creationTimestamp is when this node first saw it."""
        item = dict(pod.raw)
        metadata = dict(item.get("metadata", {}))
        if "creationTimestamp" not in metadata:
            metadata["creationTimestamp"] = rfc3339(self._pods.first_seen(pod.uid))
        item["metadata"] = metadata
        return item

    def pods(self) -> list[dict[str, Any]]:
        out = []
        for pod in self._pods.active():
            item = self._with_creation(pod)
            status = self._statuses.get(pod.uid)
            if status is not None:
                item["status"] = status
            out.append(item)
        for pod in self._pods.refused():
            item = self._with_creation(pod)
            status = self._statuses.get(pod.uid)
            if status is not None:
                item["status"] = status
            out.append(item)
        for pod in self._pods.removed():
            # a pod being terminated shows as Terminating, as kubectl prints it
            item = self._with_creation(pod)
            deleted = self._pods.deleted_at(pod.uid)
            item["metadata"] = {
                **item["metadata"],
                "deletionTimestamp": rfc3339(self._clock.now() if deleted is None else deleted),
                "deletionGracePeriodSeconds": pod.spec.termination_grace_period_seconds,
            }
            status = self._statuses.get(pod.uid)
            if status is not None:
                item["status"] = status
            out.append(item)
        return out

    def running_pods(self) -> list[dict[str, Any]]:
        """The pods the runtime holds, as the last relist saw them: v1 Pods with their
        identity and their containers' names (the kubelet's ``/runningpods/``)."""
        out = []
        for uid, pod in self._pleg.pods.items():
            live = [c for c in pod.containers if c.state is ContainerState.RUNNING]
            if not live and not any(s.state is ContainerState.RUNNING for s in pod.sandboxes):
                continue
            out.append(
                {
                    "metadata": {
                        "name": pod.name,
                        "namespace": pod.namespace,
                        "uid": str(uid),
                        "creationTimestamp": None,
                    },
                    "spec": {"containers": [{"name": c.name, "resources": {}} for c in live]},
                    "status": {},
                }
            )
        return out

    def health(self) -> list[tuple[str, str | None]]:
        """``/healthz``'s checks: the PLEG relists in time."""
        pleg = None if self._pleg.healthy() else "PLEG is not healthy: the last relist is too old"
        return [("ping", None), ("pleg", pleg)]

    def rejected(self) -> list[dict[str, Any]]:
        return [*self._pods.rejected(), *self._source_errors()]

    def events(self) -> list[dict[str, Any]]:
        return self._recorder.events()

    def _container_status(self, pod: Pod, container: str) -> dict[str, Any]:
        if not any(c.name == container for c in (*pod.spec.init_containers, *pod.spec.containers)):
            names = ", ".join(c.name for c in pod.spec.containers)
            raise NotFound(
                f'container "{container}" is not valid for pod "{pod.name}"'
                f" (choose one of: {names})"
            )
        status = self._statuses.get(pod.uid) or {}
        for key in ("containerStatuses", "initContainerStatuses"):
            for cs in status.get(key, []):
                if cs.get("name") == container:
                    return dict(cs)
        return {}

    def _running_container(self, namespace: str, pod: str, container: str) -> tuple[Pod, str]:
        found = self._pods.find(namespace, pod)
        cs = self._container_status(found, container)
        if "running" not in cs.get("state", {}):
            raise FailedPrecondition(f'container "{container}" in pod "{pod}" is not running')
        return found, str(cs.get("containerID", "")).split("://", 1)[-1]

    def container_log_path(self, namespace: str, pod: str, container: str, previous: bool) -> Path:
        found = self._pods.find(namespace, pod)
        cs = self._container_status(found, container)
        restarts = int(cs.get("restartCount", 0))
        if previous:
            if restarts == 0 and not cs.get("lastState", {}).get("terminated"):
                raise NotFound(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            restarts -= 1
        path = self._logs.container_log_path(found, container, max(restarts, 0))
        if not path.exists():
            raise NotFound(
                f'container "{container}" in pod "{pod}" has no log yet (is it waiting to start?)'
            )
        return path

    async def exec(
        self, namespace: str, pod: str, container: str, cmd: list[str], timeout: int
    ) -> tuple[bytes, bytes, int]:
        found, container_id = self._running_container(namespace, pod, container)
        resp = await self._runtime.exec_sync(container_id, cmd, timeout, pod=found)
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
        if kind not in ("exec", "attach"):
            raise InvalidArgument(f"unknown stream kind {kind!r}")
        found, container_id = self._running_container(namespace, pod, container)
        flags = {"tty": tty, "stdin": stdin, "stdout": stdout, "stderr": stderr}
        if kind == "exec":
            return await self._runtime.exec_url(found, container_id, cmd, **flags)
        return await self._runtime.attach_url(found, container_id, **flags)

    async def port_forward_url(self, namespace: str, pod: str, ports: list[int]) -> str:
        found = self._pods.find(namespace, pod)
        runtime_pod = self._pleg.pods.get(found.uid)
        ready = [
            s
            for s in (runtime_pod.sandboxes if runtime_pod is not None else ())
            if s.state is ContainerState.RUNNING
        ]
        if not ready:
            raise FailedPrecondition(f'pod "{pod}" has no running sandbox to forward ports into')
        return await self._runtime.port_forward_url(found, ready[0].id, ports)

    async def delete_pod(self, namespace: str, pod: str, grace_seconds: int | None) -> None:
        found = self._pods.find(namespace, pod)
        source = found.metadata.annotations.get("kubernetes.io/config.source", "")
        if source in ("file", "http"):
            where = f" ({self._info.manifests})" if source == "file" else ""
            raise FailedPrecondition(
                f'pod "{pod}" is a static pod from its {source} source{where}: '
                "remove or edit its manifest to delete it"
            )
        self._workers.update_pod(WorkerUpdate(found, UpdateType.KILL, grace_seconds))

    def trace(self) -> TraceRecorder | None:
        return self._trace

    def status(self) -> dict[str, Any]:
        phases: dict[str, int] = {}
        active = self._pods.active()
        for pod in active:
            phase = (self._statuses.get(pod.uid) or {}).get("phase", "Pending")
            phases[phase] = phases.get(phase, 0) + 1
        return {
            "nodeName": self.node_name,
            "runtime": {
                "name": self._runtime.runtime_name,
                "version": self._runtime.runtime_version,
                "endpoint": self._runtime.endpoint,
            },
            "pods": len(active),
            "phases": phases,
            "containers": sum(len(p.containers) for p in self._pleg.pods.values()),
            "pleg": {"healthy": self._pleg.healthy(), "relists": self._pleg.relists},
            "time": self._clock.now(),
            **({"apiServer": self._api_server()} if self._api_server is not None else {}),
        }
