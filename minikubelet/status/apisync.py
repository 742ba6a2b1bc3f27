"""The status manager's API side: pod statuses written to the API server, and pods deleted.

As the kubelet's status manager (``pkg/kubelet/status/status_manager.go``) once it has
a client: :class:`StatusSync` follows the :class:`~minikubelet.status.manager.StatusManager`
through a subscription and writes each pod's status to its API object.

* Which object: a pod from the API server (``kubernetes.io/config.source: api``) is
  written under its own UID; a static pod (``file``, ``http``) through its mirror pod,
  when the pod manager holds a mirror of the static pod's hash (not being deleted), under
  the mirror's UID. Other pods are not written.
* When (``needsUpdate``): only when the status manager has a newer version of the status
  than the one last written to that UID. A patch that would change nothing is not sent.
* How (``syncPod``): the pod is read from the API server; a pod of that name with another
  UID (deleted and created again) is never written, nor is one that is gone (404). The
  new status is merged with the API's (:func:`merge_pod_status`: the conditions the
  kubelet owns are replaced, the others kept) and sent as a strategic merge patch of
  ``pods/status`` holding only what changed, with ``metadata.uid`` in it as the
  precondition (:func:`status_patch`, as the kubelet's ``PatchPodStatus``). A conflict
  (409) reads the pod again and retries.
* Bursts: one write in flight per pod; changes that arrive meanwhile are folded into
  one more write of the newest status. A periodic pass catches what a change did not
  (a mirror pod that appeared, a write that failed) as the kubelet's ``syncBatch``.
* Deletion (``canBeDeleted`` -> ``DeletePod``): a pod from the API server that has a
  deletion timestamp and whose run is over (:meth:`StatusSync.pod_terminated`, a
  kubelet terminated hook) gets its final status written, then is deleted for good:
  ``gracePeriodSeconds: 0`` and ``preconditions.uid``. Mirror pods are never deleted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s

from minikubelet.api.pod import Pod
from minikubelet.clock import Clock, RealClock
from minikubelet.config.types import (
    API_SOURCE,
    CONFIG_HASH_ANNOTATION,
    CONFIG_MIRROR_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
    FILE_SOURCE,
    HTTP_SOURCE,
)
from minikubelet.kubeapi.client import KubeClient
from minikubelet.podmanager import PodManager
from minikubelet.status.manager import StatusManager
from minikubelet.types import PodUID

log = logging.getLogger(__name__)

JSON = dict[str, Any]

#: Conditions the kubelet owns (``kubetypes.PodConditionByKubelet``): replaced on a write.
KUBELET_CONDITIONS = frozenset(
    {"PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"}
)
#: Status fields the kubelet writes; the others (nominatedNodeName, resourceClaimStatuses,
#: ...) belong to someone else and are never touched.
SCALAR_FIELDS = ("phase", "message", "reason", "hostIP", "podIP", "startTime", "qosClass")
#: Lists without a merge key: a strategic merge patch replaces them whole.
ATOMIC_LISTS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")
#: Lists merged by ``ip`` (conditions are merged by ``type``).
IP_LISTS = ("hostIPs", "podIPs")
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
STATIC_SOURCES = frozenset({FILE_SOURCE, HTTP_SOURCE})

#: Writes to the API server at once, over every pod.
DEFAULT_CONCURRENCY = 16
#: The periodic pass (seconds); a write that failed waits ERROR_RETRY before the next try.
DEFAULT_PERIOD = 2.0
ERROR_RETRY = 10.0
#: Attempts of one write that meets conflicts (409) before it waits for the next pass.
CONFLICT_ATTEMPTS = 3


# -- what is written ------------------------------------------------------------------------------


def _conditions(status: Mapping[str, Any]) -> list[JSON]:
    value = status.get("conditions")
    return [c for c in value if isinstance(c, dict)] if isinstance(value, list) else []


def merge_pod_status(api: Mapping[str, Any], new: Mapping[str, Any]) -> JSON:
    """The status to write: ``new`` with the API status's conditions the kubelet does not own.

    The kubelet's ``mergePodStatus``: conditions of other owners (``PodScheduled`` from the
    scheduler, a readiness gate's, ...) are kept as the API has them, those of
    :data:`KUBELET_CONDITIONS` come from ``new``; fields the kubelet does not write are
    not part of the result. A terminal phase never shows a pod or its containers ready.
    """
    merged: JSON = {key: value for key, value in new.items() if key != "conditions"}
    conditions = [c for c in _conditions(api) if c.get("type") not in KUBELET_CONDITIONS]
    conditions += [dict(c) for c in _conditions(new) if c.get("type") in KUBELET_CONDITIONS]
    if merged.get("phase") in TERMINAL_PHASES:
        reason = "PodCompleted" if merged["phase"] == "Succeeded" else "PodFailed"
        for condition in conditions:
            if (
                condition.get("type") in ("Ready", "ContainersReady")
                and condition.get("status") == "True"
            ):
                condition["status"] = "False"
                condition["reason"] = reason
    merged["conditions"] = conditions
    return merged


def _entries(value: object) -> list[JSON]:
    return [dict(v) for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _merge_list_patch(body: JSON, key: str, merge_key: str, before: object, after: object) -> None:
    """Into ``body``, the two-way strategic merge patch of a list merged by ``merge_key``:
    the entries that changed, ``$patch: delete`` for those gone, the order in
    ``$setElementOrder/KEY``; null when the list is gone as a whole."""
    old = {entry.get(merge_key): entry for entry in _entries(before)}
    new = _entries(after)
    if [old.get(entry.get(merge_key)) for entry in new] == new and len(old) == len(new):
        return
    if not new:
        body[key] = None
        return
    kept = {entry.get(merge_key) for entry in new}
    body[f"$setElementOrder/{key}"] = [{merge_key: entry.get(merge_key)} for entry in new]
    body[key] = [entry for entry in new if old.get(entry.get(merge_key)) != entry] + [
        {merge_key: name, "$patch": "delete"} for name in old if name not in kept
    ]


def status_patch(uid: str, api: Mapping[str, Any], merged: Mapping[str, Any]) -> JSON | None:
    """The strategic merge patch of ``pods/status`` from ``api`` to ``merged``, or None when
    nothing the kubelet writes differs.

    As the kubelet's ``PatchPodStatus`` (a two-way merge patch of the status): only what
    changed; conditions by ``type`` (a changed one in full, a gone one as ``$patch:
    delete``, their order in ``$setElementOrder/conditions``); container statuses whole;
    ``podIPs``/``hostIPs`` by ``ip`` the same way; a field the kubelet no longer reports set to
    null. ``metadata.uid`` makes the UID a precondition: the API server refuses the patch
    for another pod of the same name.
    """
    body: JSON = {}
    for key in (*SCALAR_FIELDS, *ATOMIC_LISTS):
        before, after = api.get(key), merged.get(key)
        if (before or None) != (after or None):
            body[key] = after if after not in ("", [], None) else None
    for key, merge_key in (("conditions", "type"), *((k, "ip") for k in IP_LISTS)):
        _merge_list_patch(body, key, merge_key, api.get(key), merged.get(key))
    if not body:
        return None
    return {"metadata": {"uid": uid}, "status": body}


#: Status fields the kubelet writes, by the Kubernetes minor version that brought them.
FIELDS_SINCE = {"hostIPs": 28}


def unknown_status_fields(version: Mapping[str, Any]) -> frozenset[str]:
    """The fields of :data:`FIELDS_SINCE` an API server of ``version`` (``/version``) lacks."""
    digits = "".join(itertools.takewhile(str.isdigit, str(version.get("minor", ""))))
    if str(version.get("major", "")) != "1" or not digits:
        return frozenset()
    return frozenset(key for key, since in FIELDS_SINCE.items() if int(digits) < since)


# -- talking to the API server --------------------------------------------------------------------


async def call_json(request: Awaitable[Any]) -> tuple[int, JSON]:
    """Await a ``kubernetes_asyncio`` call made with ``_preload_content=False``: its HTTP
    status and JSON body (empty when it has none)."""
    response = await request
    async with response:
        status = int(response.status)
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
    return status, body if isinstance(body, dict) else {}


class ApiError(Exception):
    """An answer of the API server the sink does not expect."""

    def __init__(self, status: int, body: Mapping[str, Any]) -> None:
        super().__init__(api_error(status, body))
        self.status = status


#: What a request may end with when the API server cannot be reached or answers badly:
#: the write is tried again later, and nothing else stops.
API_ERRORS: tuple[type[Exception], ...] = (
    ApiError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
    ValueError,
)


def uid_refused(status: int, body: Mapping[str, Any]) -> bool:
    """Whether the API server refused a write for its ``metadata.uid`` precondition: the
    object of that name is another one (409 ``Precondition failed: UID in precondition``,
    or 422 ``metadata.uid: field is immutable`` from API servers before 1.25's check)."""
    if status == 409:
        return "UID in precondition" in str(body.get("message", ""))
    if status == 422:
        details = body.get("details") if isinstance(body.get("details"), Mapping) else {}
        causes = details.get("causes") if isinstance(details, Mapping) else None
        return any(
            isinstance(cause, Mapping) and cause.get("field") == "metadata.uid"
            for cause in causes or ()
        )
    return False


def api_error(status: int, body: Mapping[str, Any]) -> str:
    return f"HTTP {status}: {body.get('message') or body.get('reason') or 'no message'}"


def annotations_of(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    metadata = raw.get("metadata")
    value = metadata.get("annotations") if isinstance(metadata, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def static_pod_hash(pod: Pod) -> str:
    """A static pod's hash (``kubernetes.io/config.hash``, else its UID): its mirror's mark."""
    return str(pod.metadata.annotations.get(CONFIG_HASH_ANNOTATION) or pod.uid)


def pod_source(pod: Pod) -> str:
    return str(pod.metadata.annotations.get(CONFIG_SOURCE_ANNOTATION, ""))


def is_mirror_of(mirror: Mapping[str, Any], pod: Pod) -> bool:
    """Whether ``mirror`` is the mirror pod of this version of static pod ``pod``."""
    metadata = mirror.get("metadata") or {}
    return (
        metadata.get("name") == pod.name
        and (metadata.get("namespace") or "default") == pod.namespace
        and str(annotations_of(mirror).get(CONFIG_MIRROR_ANNOTATION, "")) == static_pod_hash(pod)
    )


@dataclass(frozen=True, slots=True)
class Target:
    """The API object a pod's status goes to."""

    namespace: str
    name: str
    uid: PodUID


@dataclass(slots=True)
class _Final:
    """A deleted pod whose run is over: its last status, then its deletion."""

    pod: Pod
    status: JSON | None
    version: int


class StatusSync:
    """Writes the status manager's pod statuses to the API server (a kubelet server)."""

    def __init__(
        self,
        kube: KubeClient,
        statuses: StatusManager,
        pods: PodManager,
        *,
        clock: Clock | None = None,
        period: float = DEFAULT_PERIOD,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        self._kube = kube
        self._statuses = statuses
        self._pods = pods
        self._clock: Clock = clock or RealClock()
        self._period = period
        self._limit = asyncio.Semaphore(concurrency)
        #: ``apiStatusVersions``: the version last written (or found already there), by API UID.
        self._written: dict[PodUID, int] = {}
        #: API UIDs never to be written again: gone (404) or another pod of the name.
        self._gone: set[PodUID] = set()
        #: The API object each pod was last written to (to forget it with the pod).
        self._targets: dict[PodUID, PodUID] = {}
        self._final: dict[PodUID, _Final] = {}
        self._tasks: dict[PodUID, asyncio.Task[None]] = {}
        self._dirty: set[PodUID] = set()
        self._retry_at: dict[PodUID, float] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._unknown: frozenset[str] | None = None
        #: Counters: patches sent, patches found unneeded, pods deleted.
        self.patches = 0
        self.unchanged = 0
        self.deletions = 0

    # -- running ---------------------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the status manager until cancelled."""
        subscription = self._statuses.subscribe()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._periodic(), name="status-sync-periodic")
                for uid in self._statuses.all():
                    self.request(uid)
                async for change in subscription:
                    self.request(change.uid)
        finally:
            self._tg = None
            subscription.close()

    async def _periodic(self) -> None:
        while True:
            await self._clock.sleep(self._period)
            self.resync()

    def resync(self) -> None:
        """``syncBatch``: request a write of every pod whose status is newer than its API's."""
        now = self._clock.now()
        for pod in self._known_pods():
            uid, version = pod.uid, self._statuses.get_version(pod.uid)
            if version is None or self._retry_at.get(uid, 0.0) > now:
                continue
            target = self.target(pod)
            if (
                target is not None
                and target.uid not in self._gone
                and self._written.get(target.uid, 0) < version
            ):
                self.request(uid)
        for uid in list(self._final):
            if self._retry_at.get(uid, 0.0) <= now:
                self.request(uid)

    def request(self, uid: PodUID) -> None:
        """Write the pod's newest status soon: at once, or after the write in flight."""
        if uid in self._tasks:
            self._dirty.add(uid)
            return
        if self._tg is None:
            return
        self._tasks[uid] = self._tg.create_task(self._work(uid), name=f"status-sync-{uid}")

    async def _work(self, uid: PodUID) -> None:
        try:
            while True:
                self._dirty.discard(uid)
                try:
                    await self.sync(uid)
                    self._retry_at.pop(uid, None)
                except API_ERRORS as exc:
                    log.warning("status of pod uid=%s not written: %s", uid, exc)
                    self._retry_at[uid] = self._clock.now() + ERROR_RETRY
                except Exception:  # a bug in one write must not stop the others
                    log.exception("status of pod uid=%s not written", uid)
                    self._retry_at[uid] = self._clock.now() + ERROR_RETRY
                if uid not in self._dirty:
                    return
        finally:
            self._tasks.pop(uid, None)

    # -- a pod's run is over -----------------------------------------------------------------------

    def pod_terminated(self, pod: Pod) -> None:
        """A kubelet terminated hook: a deleted API pod is deleted for good, its final status
        (the one the status manager holds now, containers terminated) written first."""
        if pod_source(pod) != API_SOURCE or not pod.is_deleting:
            return
        if CONFIG_MIRROR_ANNOTATION in pod.metadata.annotations:
            return
        status = self._statuses.get(pod.uid)
        version = self._statuses.get_version(pod.uid) or 0
        self._final[pod.uid] = _Final(pod, status, version)
        self.request(pod.uid)

    # -- one pod ---------------------------------------------------------------------------------

    def target(self, pod: Pod) -> Target | None:
        """Where ``pod``'s status is written: itself, its mirror pod, or nowhere."""
        source = pod_source(pod)
        if source == API_SOURCE:
            if CONFIG_MIRROR_ANNOTATION in pod.metadata.annotations:
                return None
            return Target(pod.namespace, pod.name, pod.uid)
        if source not in STATIC_SOURCES:
            return None
        mirror = self._pods.mirror_pods().get(pod.full_name)
        if mirror is None or not is_mirror_of(mirror, pod):
            return None  # the mirror pod manager creates it; the periodic pass comes back
        metadata = mirror.get("metadata") or {}
        if metadata.get("deletionTimestamp") or not metadata.get("uid"):
            return None
        return Target(pod.namespace, pod.name, PodUID(str(metadata["uid"])))

    def _known_pods(self) -> list[Pod]:
        """The pods whose status is written: those the sources want, those terminating, and
        those admission refused (Failed, as the kubelet's ``rejectPod`` leaves them)."""
        return [*self._pods.all(), *self._pods.refused()]

    def _lookup(self, uid: PodUID) -> Pod | None:
        final = self._final.get(uid)
        if final is not None:
            return final.pod
        return next((pod for pod in self._known_pods() if pod.uid == uid), None)

    async def sync(self, uid: PodUID) -> None:
        """Write the pod's newest status if its API object needs it; delete a finished one."""
        final = self._final.get(uid)
        if final is not None:
            status, version = final.status, final.version
        else:
            status, version = self._statuses.get(uid), self._statuses.get_version(uid) or 0
        pod = self._lookup(uid)
        if pod is None or status is None:
            if final is None:
                self._forget(uid)
            else:
                await self._delete(final.pod)
            return
        target = self.target(pod)
        if target is None:
            return
        self._targets[uid] = target.uid
        if target.uid not in self._gone and self._written.get(target.uid, 0) < version:
            async with self._limit:
                await self._write(target, status)
            self._written[target.uid] = max(version, self._written.get(target.uid, 0))
        if final is not None:
            await self._delete(final.pod)

    def _forget(self, uid: PodUID) -> None:
        target = self._targets.pop(uid, None)
        if target is not None:
            self._written.pop(target, None)
            self._gone.discard(target)
        self._retry_at.pop(uid, None)

    async def _unknown_fields(self) -> frozenset[str]:
        """Status fields this API server predates (read once from ``/version``): a strategic
        merge patch naming one is refused (``hostIPs`` came with Kubernetes 1.28)."""
        if self._unknown is None:
            code, version = await call_json(
                k8s.VersionApi(self._kube.api).get_code(_preload_content=False)
            )
            if code != 200:
                raise ApiError(code, version)
            self._unknown = unknown_status_fields(version)
        return self._unknown

    async def _write(self, target: Target, status: Mapping[str, Any]) -> None:
        core = self._kube.core
        for _ in range(CONFLICT_ATTEMPTS):
            code, api_pod = await call_json(
                core.read_namespaced_pod(target.name, target.namespace, _preload_content=False)
            )
            if code == 404:
                log.info("pod %s/%s is gone from the API server", target.namespace, target.name)
                self._gone.add(target.uid)
                return
            if code != 200:
                raise ApiError(code, api_pod)
            if str((api_pod.get("metadata") or {}).get("uid", "")) != target.uid:
                log.info(
                    "pod %s/%s uid=%s was deleted and created again: its status is not written",
                    target.namespace,
                    target.name,
                    target.uid,
                )
                self._gone.add(target.uid)
                return
            api_status = api_pod.get("status") or {}
            merged = merge_pod_status(api_status, status)
            for key in await self._unknown_fields():
                merged.pop(key, None)
            patch = status_patch(target.uid, api_status, merged)
            if patch is None:
                self.unchanged += 1
                return
            code, answer = await call_json(
                core.patch_namespaced_pod_status(
                    target.name, target.namespace, patch, _preload_content=False
                )
            )
            if code == 200:
                self.patches += 1
                log.debug("pod %s/%s status: %s", target.namespace, target.name, json.dumps(patch))
                return
            if code == 404 or uid_refused(code, answer):
                log.info(
                    "pod %s/%s uid=%s is gone from the API server: its status is not written",
                    target.namespace,
                    target.name,
                    target.uid,
                )
                self._gone.add(target.uid)
                return
            if code != 409:
                raise ApiError(code, answer)
            log.info(
                "pod %s/%s status conflict (%s): reading it again",
                target.namespace,
                target.name,
                answer.get("message", ""),
            )
        raise ApiError(409, {"message": f"still conflicting after {CONFLICT_ATTEMPTS} attempts"})

    async def _delete(self, pod: Pod) -> None:
        """``DeletePod``: for good (grace 0), and only this UID."""
        options = k8s.V1DeleteOptions(
            grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=pod.uid)
        )
        code, answer = await call_json(
            self._kube.core.delete_namespaced_pod(
                pod.name, pod.namespace, body=options, _preload_content=False
            )
        )
        if code in (200, 202):
            self.deletions += 1
            log.info("pod=%s uid=%s deleted from the API server", pod, pod.uid)
        elif code == 409:
            log.info("pod=%s uid=%s: another pod holds the name now; not deleted", pod, pod.uid)
        elif code != 404:
            raise ApiError(code, answer)
        self._final.pop(pod.uid, None)
        self._forget(pod.uid)

    # -- reading -------------------------------------------------------------------------------

    def written_version(self, uid: PodUID) -> int | None:
        """The version last written to the API object with this UID."""
        return self._written.get(uid)

    async def idle(self) -> None:
        """Until no write is in flight (for tests)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks.values())
