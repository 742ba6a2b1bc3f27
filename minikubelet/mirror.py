"""Mirror pods: the API server's copies of this node's static pods.

As the kubelet's mirror client (``pkg/kubelet/pod/mirror_client.go``) and the mirror pod
handling of its ``syncPod`` and housekeeping (``deleteOrphanedMirrorPods``):

* every static pod (source ``file`` or ``http``) has a mirror pod in the API server:
  same name and namespace, the static pod's spec bound to this node, its annotations plus
  ``kubernetes.io/config.mirror`` = the static pod's hash, and one controller
  ownerReference to this node's Node (so the API server's garbage collector removes
  it with the Node). NodeRestriction lets a node create exactly that: a mirror pod bound
  to itself, owned by itself, referencing no other object;
* a mirror pod of another hash (the manifest was edited) or being deleted (someone
  deleted it through the API) is deleted for good (``gracePeriodSeconds: 0``, its UID as
  precondition) and created again;
* a mirror pod whose static pod is gone, once that static pod has terminated, is
  deleted (only after every static pod source has been read once, so that a kubelet
  that starts does not delete the mirrors of static pods it has not read yet).

The pod manager keeps the mirror pods the API source watches (:meth:`PodManager.mirror_pods`);
:class:`MirrorPods` compares them with the static pods every ``period`` seconds, and only
talks to the API server about a difference. The Node's UID is read when a mirror pod is
made; until the Node is registered, nothing is created (tried again on the next pass).
The mirror pod's status is the static pod's: the status sink writes it
(:mod:`minikubelet.status.apisync`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes_asyncio import client as k8s

from minikubelet.api.pod import Pod
from minikubelet.clock import Clock, RealClock
from minikubelet.config.types import CONFIG_MIRROR_ANNOTATION
from minikubelet.events import WARNING, EventRecorder
from minikubelet.kubeapi.client import KubeClient
from minikubelet.podmanager import PodManager
from minikubelet.status.apisync import (
    API_ERRORS,
    STATIC_SOURCES,
    ApiError,
    call_json,
    is_mirror_of,
    pod_source,
    static_pod_hash,
)

log = logging.getLogger(__name__)

JSON = dict[str, Any]

DEFAULT_PERIOD = 1.0
#: A mirror pod just created is not created again for this long while the watch brings it.
CREATE_PATIENCE = 5.0
#: After the API server refused a static pod's mirror pod, the wait before asking again.
ERROR_RETRY = 10.0
#: Metadata a mirror pod takes from its static pod; the API server sets the rest.
_KEPT_METADATA = ("name", "namespace", "labels", "annotations")


def mirror_pod(static: Pod, node_name: str, node_uid: str) -> JSON:
    """The mirror pod of ``static`` (``CreateMirrorPod``'s copy), owned by the Node."""
    raw = copy.deepcopy(static.raw)
    found = raw.get("metadata")
    metadata: JSON = found if isinstance(found, dict) else {}
    kept: JSON = {key: metadata[key] for key in _KEPT_METADATA if key in metadata}
    kept["namespace"] = static.namespace
    annotations = dict(kept.get("annotations") or {})
    annotations[CONFIG_MIRROR_ANNOTATION] = static_pod_hash(static)
    kept["annotations"] = annotations
    kept["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "name": node_name,
            "uid": node_uid,
            "controller": True,
        }
    ]
    found = raw.get("spec")
    spec: JSON = found if isinstance(found, dict) else {}
    spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": kept, "spec": spec}


def _metadata(raw: Mapping[str, Any]) -> Mapping[str, Any]:
    value = raw.get("metadata")
    return value if isinstance(value, Mapping) else {}


def mirror_action(static: Pod | None, mirror: Mapping[str, Any] | None) -> str:
    """What a static pod and the mirror pod of its name need: ``create``, ``replace``
    (delete the mirror, then create), ``delete`` or ``keep`` (``""``: nothing to do)."""
    if static is None:
        return "delete" if mirror is not None else ""
    if mirror is None:
        return "create"
    if _metadata(mirror).get("deletionTimestamp") or not is_mirror_of(mirror, static):
        return "replace"
    return ""


class MirrorPods:
    """Keeps one mirror pod in the API server per static pod (a kubelet server)."""

    def __init__(
        self,
        kube: KubeClient,
        pods: PodManager,
        node_name: str,
        *,
        clock: Clock | None = None,
        period: float = DEFAULT_PERIOD,
        sources_ready: Callable[[], bool] = lambda: True,
        recorder: EventRecorder | None = None,
    ) -> None:
        self._kube = kube
        self._recorder = recorder
        self._pods = pods
        self.node_name = node_name
        self._clock: Clock = clock or RealClock()
        self._period = period
        self._sources_ready = sources_ready
        #: Mirror pods deleted here (by UID), still shown until the watch says so.
        self._deleted: set[str] = set()
        #: Mirror pods created here and not seen yet: full name -> (hash, when).
        self._created: dict[str, tuple[str, float]] = {}
        self._waiting_for_node = False
        #: A mirror pod the API server refused is not asked for again before this time.
        self._retry_at: dict[str, float] = {}
        self.creations = 0
        self.deletions = 0

    async def run(self) -> None:
        """Keep the mirror pods in step until cancelled."""
        while True:
            try:
                await self.sync()
            except API_ERRORS as exc:
                log.warning("mirror pods: %s", exc)
            await self._clock.sleep(self._period)

    async def sync(self) -> None:
        """One pass: create, replace and delete what differs."""
        statics = {
            pod.full_name: pod for pod in self._pods.active() if pod_source(pod) in STATIC_SOURCES
        }
        terminating = {
            pod.full_name for pod in self._pods.removed() if pod_source(pod) in STATIC_SOURCES
        }
        mirrors = {
            name: mirror
            for name, mirror in self._pods.mirror_pods().items()
            if str(_metadata(mirror).get("uid", "")) not in self._deleted
        }
        self._deleted &= {
            str(_metadata(m).get("uid", "")) for m in self._pods.mirror_pods().values()
        }
        now = self._clock.monotonic()
        for name, (_, when) in list(self._created.items()):
            if name in mirrors or now - when > CREATE_PATIENCE:
                del self._created[name]
        ready = self._sources_ready()
        for name in sorted({*statics, *mirrors}):
            static, mirror = statics.get(name), mirrors.get(name)
            action = mirror_action(static, mirror)
            if action == "delete" and (name in terminating or not ready):
                continue  # the static pod still stops, or its source is not read yet
            if not action or self._retry_at.get(name, 0.0) > now:
                continue
            try:
                if action in ("delete", "replace") and mirror is not None:
                    await self._delete(mirror)
                    if action == "delete":
                        continue
                    action = "create"
                if action == "create" and static is not None:
                    created = self._created.get(name)
                    if created is not None and created[0] == static_pod_hash(static):
                        continue  # on its way through the watch
                    await self._create(static)
            except ApiError as exc:
                # refused for this pod alone (NodeRestriction: a mirror pod may not reference
                # secrets, ...): the others' mirror pods go on, as the kubelet's do
                log.warning("mirror pod of %s: %s (tried again in %.0fs)", name, exc, ERROR_RETRY)
                self._retry_at[name] = now + ERROR_RETRY
                if static is not None and self._recorder is not None:
                    self._recorder.pod_event(
                        static, WARNING, "FailedMirrorPod", f"the API server refused: {exc}"
                    )
            else:
                self._retry_at.pop(name, None)
        for name in set(self._retry_at) - {*statics, *mirrors}:
            del self._retry_at[name]

    async def _node_uid(self) -> str | None:
        code, node = await call_json(
            self._kube.core.read_node(self.node_name, _preload_content=False)
        )
        if code == 404:
            if not self._waiting_for_node:
                log.info("mirror pods wait for the Node %s to be registered", self.node_name)
            self._waiting_for_node = True
            return None
        if code != 200:
            raise ApiError(code, node)
        self._waiting_for_node = False
        metadata = _metadata(node)
        if metadata.get("deletionTimestamp"):
            return None  # the node is being removed from the cluster: no mirror pods
        return str(metadata.get("uid", "")) or None

    async def _create(self, static: Pod) -> None:
        node_uid = await self._node_uid()
        if node_uid is None:
            return
        body: Any = mirror_pod(static, self.node_name, node_uid)  # a dict is sent as it is
        code, answer = await call_json(
            self._kube.core.create_namespaced_pod(static.namespace, body, _preload_content=False)
        )
        if code == 201 or code == 200:
            self.creations += 1
            self._created[static.full_name] = (static_pod_hash(static), self._clock.monotonic())
            log.info(
                "mirror pod %s/%s created uid=%s (static pod uid=%s)",
                static.namespace,
                static.name,
                _metadata(answer).get("uid", ""),
                static.uid,
            )
            return
        if code == 409:
            # one of that name exists: ours if it has the hash, else it goes on the next pass
            # once the watch shows it
            log.info("mirror pod %s/%s: one exists already", static.namespace, static.name)
            return
        raise ApiError(code, answer)

    async def _delete(self, mirror: Mapping[str, Any]) -> None:
        """``DeleteMirrorPod``: for good, this UID only (raises when it may still be there)."""
        metadata = _metadata(mirror)
        name, namespace = str(metadata.get("name", "")), str(metadata.get("namespace", ""))
        uid = str(metadata.get("uid", ""))
        options = k8s.V1DeleteOptions(
            grace_period_seconds=0, preconditions=k8s.V1Preconditions(uid=uid)
        )
        code, answer = await call_json(
            self._kube.core.delete_namespaced_pod(
                name, namespace, body=options, _preload_content=False
            )
        )
        if code in (200, 202):
            self.deletions += 1
            log.info("mirror pod %s/%s uid=%s deleted", namespace, name, uid)
        elif code not in (404, 409):  # 409: the UID is no longer the name's: gone as well
            raise ApiError(code, answer)
        self._deleted.add(uid)
