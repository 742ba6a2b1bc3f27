"""The pod manager: which pods this node should run, as its sources say, and admission.

The pod config's merged changes (:class:`~minikubelet.config.types.SourceUpdate`)
come in through :meth:`PodManager.handle`; each pod is read and validated
(admission: a pod that cannot be read is rejected with a ``FailedValidation``
event and listed by :meth:`PodManager.rejected`), stored, and handed to its
pod worker. A pod gone from its source stays known as *removed* until its
worker has terminated it; one put back under the same UID meanwhile (a static
pod's file removed and restored) runs again once the old run is cleaned up, as
the kubelet's ``restartRequested``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Protocol

from minikubelet.api.pod import Pod
from minikubelet.clock import Clock
from minikubelet.config.types import PodOperation, SourceUpdate
from minikubelet.errors import NotFound
from minikubelet.events import WARNING, EventRecorder
from minikubelet.podworkers import PodWorkers, UpdateType, WorkerUpdate
from minikubelet.types import PodUID

log = logging.getLogger(__name__)


class ProbeRegistry(Protocol):
    def add_pod(self, pod: Pod) -> None: ...


class PodManager:
    def __init__(
        self,
        *,
        workers: PodWorkers,
        probes: ProbeRegistry,
        recorder: EventRecorder,
        clock: Clock,
    ) -> None:
        self._workers = workers
        self._probes = probes
        self._recorder = recorder
        self._clock = clock
        self._pods: dict[PodUID, Pod] = {}  # what the sources want
        self._removed: dict[PodUID, Pod] = {}  # gone from the sources, terminating
        self._readded: dict[PodUID, Pod] = {}  # put back while terminating: runs again after
        self._deleted_at: dict[PodUID, float] = {}
        self._first_seen: dict[PodUID, float] = {}
        self._rejected: dict[str, dict[str, Any]] = {}

    # -- what the sources say ----------------------------------------------------

    def handle(self, update: SourceUpdate) -> None:
        """Turn one pod config change into pod worker updates."""
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
                self._start(pod, restart=update.op is PodOperation.ADD)
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
                self._deleted_at[uid] = self._clock.now()
                log.info("pod=%s uid=%s removed from its source: terminating", pod, uid)
                self._workers.update_pod(WorkerUpdate(pod, UpdateType.KILL))

    def _start(self, pod: Pod, *, restart: bool) -> None:
        self._pods[pod.uid] = pod
        self._first_seen.setdefault(pod.uid, self._clock.now())
        self._probes.add_pod(pod)
        if restart:  # a worker that terminated it makes way
            self._workers.restart_pod(WorkerUpdate(pod))
        else:
            self._workers.update_pod(WorkerUpdate(pod))

    def _admit(self, raw: dict[str, Any]) -> Pod | None:
        metadata = raw.get("metadata", {})
        source = str(metadata.get("annotations", {}).get("kubernetes.io/config.source", ""))
        name = str(metadata.get("name", "?"))
        try:
            pod = Pod.from_dict(raw)
        except ValueError as exc:
            reason = str(exc)
            self._rejected[name] = {"source": source, "line": None, "reason": reason, "name": name}
            self._recorder.event(
                {"kind": "Pod", "name": name, "namespace": "default"},
                WARNING,
                "FailedValidation",
                reason,
            )
            return None
        self._rejected.pop(name, None)
        return pod

    # -- a pod's run has ended ---------------------------------------------------

    def is_removed(self, uid: PodUID) -> bool:
        return uid in self._removed

    def forget(self, uid: PodUID) -> None:
        """A removed pod is cleaned up: forget it, and run it again if it was put back."""
        if self._removed.pop(uid, None) is not None:
            self._deleted_at.pop(uid, None)
            self._first_seen.pop(uid, None)
            self._workers.forget(uid)
        readded = self._readded.pop(uid, None)
        if readded is not None:
            self._first_seen.pop(uid, None)
            self._start(readded, restart=True)

    # -- reading -------------------------------------------------------------------

    def get(self, uid: PodUID) -> Pod | None:
        """The pod a source wants under ``uid`` (not a removed one)."""
        return self._pods.get(uid)

    def __contains__(self, uid: object) -> bool:
        return uid in self._pods

    def active(self) -> list[Pod]:
        """The pods the sources want."""
        return list(self._pods.values())

    def removed(self) -> list[Pod]:
        """Pods gone from their sources whose run is not cleaned up yet."""
        return list(self._removed.values())

    def all(self) -> Iterable[Pod]:
        return [*self._pods.values(), *self._removed.values()]

    def first_seen(self, uid: PodUID) -> float:
        return self._first_seen.setdefault(uid, self._clock.now())

    def deleted_at(self, uid: PodUID) -> float | None:
        return self._deleted_at.get(uid)

    def find(self, namespace: str, name: str) -> Pod:
        for pod in self._pods.values():
            if pod.namespace == namespace and pod.name == name:
                return pod
        raise NotFound(f'pods "{name}" not found in namespace "{namespace}"')

    def rejected(self) -> list[dict[str, Any]]:
        """Pods that failed admission: ``{"source", "line", "reason", "name"}``."""
        return list(self._rejected.values())
