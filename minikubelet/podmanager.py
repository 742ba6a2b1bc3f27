"""The pod manager: which pods this node should run, as its sources say, and admission.

The pod config's merged changes (:class:`~minikubelet.config.types.SourceUpdate`)
come in through :meth:`PodManager.handle`; each pod is read and validated
(admission: a pod that cannot be read is rejected with a ``FailedValidation``
event and listed by :meth:`PodManager.rejected`), stored, and handed to its
pod worker. A pod gone from its source stays known as *removed* until its
worker has terminated it; one put back under the same UID meanwhile (a static
pod's file removed and restored) runs again once the old run is cleaned up, as
the kubelet's ``restartRequested``.

Admission goes on with the node's admission handlers (resources, node
selectors, ...): a pod one of them refuses is not run; ``on_rejected`` is told why
(the kubelet marks it Failed with the handler's reason and message). Mirror pods
(the API server's copies of this node's static pods, annotated
``kubernetes.io/config.mirror``) are never run either: they are kept apart, by full
name, for whoever keeps them in step with their static pods.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from minikubelet.api.pod import Pod
from minikubelet.clock import Clock
from minikubelet.config.types import PodOperation, SourceUpdate
from minikubelet.errors import NotFound
from minikubelet.events import WARNING, EventRecorder
from minikubelet.podworkers import PodWorkers, UpdateType, WorkerUpdate
from minikubelet.types import PodUID

log = logging.getLogger(__name__)


#: The annotation that makes a pod a mirror pod (its value: the static pod's hash).
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


class ProbeRegistry(Protocol):
    def add_pod(self, pod: Pod) -> None: ...


@dataclass(frozen=True, slots=True)
class AdmitResult:
    """A refusal: the kubelet's reason (``OutOfcpu``, ``NodeAffinity``, ...) and message."""

    reason: str
    message: str


class AdmitHandler(Protocol):
    def admit(self, pod: Pod, admitted: Sequence[Pod]) -> AdmitResult | None:
        """``None`` to admit ``pod`` beside the pods ``admitted`` so far, else why not."""
        ...


def is_mirror_pod(raw: dict[str, Any]) -> bool:
    annotations = raw.get("metadata", {}).get("annotations") or {}
    return MIRROR_ANNOTATION in annotations


class PodManager:
    def __init__(
        self,
        *,
        workers: PodWorkers,
        probes: ProbeRegistry,
        recorder: EventRecorder,
        clock: Clock,
        admit_handlers: Sequence[AdmitHandler] = (),
        on_rejected: Callable[[Pod, AdmitResult], None] | None = None,
    ) -> None:
        self._workers = workers
        self._admit_handlers = tuple(admit_handlers)
        self._on_rejected = on_rejected
        self._probes = probes
        self._recorder = recorder
        self._clock = clock
        self._pods: dict[PodUID, Pod] = {}  # what the sources want
        self._removed: dict[PodUID, Pod] = {}  # gone from the sources, terminating
        self._readded: dict[PodUID, Pod] = {}  # put back while terminating: runs again after
        self._deleted_at: dict[PodUID, float] = {}
        self._first_seen: dict[PodUID, float] = {}
        self._rejected: dict[str, dict[str, Any]] = {}
        #: Pods that admission refused, by UID: not run, shown Failed.
        self._refused: dict[PodUID, Pod] = {}
        #: Mirror pods by full name (``name_namespace``).
        self._mirrors: dict[str, dict[str, Any]] = {}

    # -- what the sources say ----------------------------------------------------

    def handle(self, update: SourceUpdate) -> None:
        """Turn one pod config change into pod worker updates."""
        if update.op in (PodOperation.ADD, PodOperation.UPDATE, PodOperation.RECONCILE):
            for raw in update.pods:
                if is_mirror_pod(raw):
                    self._mirrors[_full_name(raw)] = raw
                    continue
                uid = PodUID(str(raw.get("metadata", {}).get("uid", "")))
                if uid in self._refused:
                    continue  # refused once: stays Failed, as the kubelet leaves it
                if (
                    raw.get("metadata", {}).get("deletionTimestamp")
                    and uid not in self._pods
                    and (update.op is not PodOperation.ADD or uid in self._removed)
                ):
                    # being deleted and already terminating or terminated: a change of its
                    # status (the kubelet's own write) brings nothing to run again
                    continue
                pod = self._admit(raw)
                if pod is None:
                    continue
                if pod.uid in self._removed:
                    # put back unchanged (same UID) before its old run is cleaned up: it
                    # starts again once that is done, as the kubelet's restartRequested
                    self._readded[pod.uid] = pod
                    continue
                self._start(pod, restart=update.op is PodOperation.ADD)
                if pod.is_deleting:
                    # first seen while being deleted (a kubelet restarted meanwhile): its
                    # worker goes straight to terminating, as the kubelet's does
                    self._pods.pop(pod.uid, None)
                    self._kill(pod, pod.metadata.deletion_grace_period_seconds)
        elif update.op in (PodOperation.REMOVE, PodOperation.DELETE):
            for raw in update.pods:
                uid = PodUID(str(raw.get("metadata", {}).get("uid", "")))
                if is_mirror_pod(raw):
                    if update.op is PodOperation.DELETE:
                        # being deleted, still in the API server until it is gone for good:
                        # its keeper sees the deletion timestamp
                        self._mirrors[_full_name(raw)] = raw
                        continue
                    mirror = self._mirrors.get(_full_name(raw))
                    if mirror is not None and mirror.get("metadata", {}).get("uid") == uid:
                        del self._mirrors[_full_name(raw)]
                    continue
                refused = self._refused.pop(uid, None)
                if refused is not None:
                    # never run, so its end is now: housekeeping cleans it up (its Failed
                    # status goes) and the terminated hooks see it (a deleted API pod's
                    # copy is deleted for good)
                    deleted = update.op is PodOperation.DELETE
                    self._kill(_as_deleted(raw, refused) if deleted else refused, 0)
                    continue
                pod = self._pods.pop(uid, None)
                if pod is None:
                    # a rejected pod gone from its source: its warning goes with it
                    self._rejected.pop(str(raw.get("metadata", {}).get("name", "?")), None)
                    self._readded.pop(uid, None)
                    continue
                grace: int | None = None
                if update.op is PodOperation.DELETE:
                    # gracefully deleted: the pod as it is now (deletion timestamp and grace
                    # period) is the one terminated, within deletionGracePeriodSeconds
                    pod = _as_deleted(raw, pod)
                    grace = pod.metadata.deletion_grace_period_seconds
                self._kill(pod, grace)

    def _kill(self, pod: Pod, grace_period: int | None) -> None:
        self._removed[pod.uid] = pod
        self._deleted_at[pod.uid] = self._clock.now()
        log.info(
            "pod=%s uid=%s %s: terminating",
            pod,
            pod.uid,
            "deleted" if pod.is_deleting else "removed from its source",
        )
        self._workers.update_pod(WorkerUpdate(pod, UpdateType.KILL, grace_period=grace_period))

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
        if pod.uid in self._pods:
            return pod  # an update of an admitted pod is not admitted again
        admitted = list(self._pods.values())
        for handler in self._admit_handlers:
            refusal = handler.admit(pod, admitted)
            if refusal is not None:
                log.info(
                    "pod=%s uid=%s refused: %s: %s", pod, pod.uid, refusal.reason, refusal.message
                )
                self._refused[pod.uid] = pod
                self._recorder.pod_event(pod, WARNING, refusal.reason, refusal.message)
                if self._on_rejected is not None:
                    self._on_rejected(pod, refusal)
                return None
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

    def refused(self) -> list[Pod]:
        """Pods admission refused (shown with the Failed status the kubelet gave them)."""
        return list(self._refused.values())

    def mirror_pods(self) -> dict[str, dict[str, Any]]:
        """The API server's mirror pods of this node, by full name."""
        return dict(self._mirrors)

    def rejected(self) -> list[dict[str, Any]]:
        """Pods that failed admission: ``{"source", "line", "reason", "name"}``."""
        return list(self._rejected.values())


def _as_deleted(raw: dict[str, Any], known: Pod) -> Pod:
    """The pod a DELETE brings (with its deletion timestamp), else the one known."""
    try:
        return Pod.from_dict(raw, validate=False)
    except ValueError:
        return known


def _full_name(raw: dict[str, Any]) -> str:
    metadata = raw.get("metadata", {})
    return f"{metadata.get('name', '')}_{metadata.get('namespace') or 'default'}"
