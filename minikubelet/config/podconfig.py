"""PodConfig: merge the pods of several sources into incremental changes.

Follows the kubelet's ``pkg/kubelet/config/config.go`` (``podStorage.merge`` in incremental
mode). Pods are identified by UID and each belongs to the source that sent it, recorded in the
``kubernetes.io/config.source`` annotation. For one incoming update of a source:

* a pod whose UID the source did not have -> ``ADD`` (stamped ``kubernetes.io/config.seen``);
* a known UID whose spec, labels, deletion fields or non-local annotations changed ->
  ``UPDATE``, or ``DELETE`` when a deletion timestamp appeared;
* a known UID that differs only in status -> ``RECONCILE``;
* for ``SET``, a UID of the source that is no longer there -> ``REMOVE``.

A static pod's UID is a hash of its manifest, so an edited file is a new UID: the old pod is
removed and the new one added, never updated in place.

Emission order per merge, as the kubelet does: REMOVE, ADD, UPDATE, DELETE, then RECONCILE; and
on a source's first SET that yields no ADD/UPDATE/DELETE, an empty ADD so the listener learns
the source is ready.

Duplicate full names (``name_namespace``): within one update the first pod wins (the kubelet's
``filterInvalidPods``). Across sources the pod already held wins; the kubelet has no such check
in its merge (its pod manager keys pods by full name, so a later one would shadow the earlier),
and minikubelet rejects and reports it instead.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from minikubelet.config.types import (
    ALL_SOURCE,
    CONFIG_FIRST_SEEN_ANNOTATION,
    CONFIG_MIRROR_ANNOTATION,
    CONFIG_SOURCE_ANNOTATION,
    LOCAL_ANNOTATIONS,
    Pod,
    PodOperation,
    SourceUpdate,
)
from minikubelet.types import PodUID

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_rfc3339nano(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano``: fraction without trailing zeros, ``Z`` for UTC.

    A naive datetime is taken as UTC.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset()
    seconds = int(offset.total_seconds()) if offset is not None else 0
    if seconds == 0:
        return text + "Z"
    sign = "+" if seconds > 0 else "-"
    hours, rest = divmod(abs(seconds), 3600)
    return f"{text}{sign}{hours:02d}:{rest // 60:02d}"


def _metadata(pod: Pod) -> dict[str, Any]:
    metadata = pod.get("metadata")
    return metadata if isinstance(metadata, dict) else {}


def _annotations(pod: Pod) -> dict[str, Any]:
    annotations = _metadata(pod).get("annotations")
    return annotations if isinstance(annotations, dict) else {}


def pod_uid(pod: Pod) -> PodUID:
    return PodUID(str(_metadata(pod).get("uid") or ""))


def pod_full_name(pod: Pod) -> str:
    """The kubelet's full name of a pod: ``<name>_<namespace>``."""
    metadata = _metadata(pod)
    return f"{metadata.get('name', '')}_{metadata.get('namespace', '')}"


def pod_source(pod: Pod) -> str | None:
    source = _annotations(pod).get(CONFIG_SOURCE_ANNOTATION)
    return str(source) if source is not None else None


def _is_mirror(pod: Pod) -> bool:
    return CONFIG_MIRROR_ANNOTATION in _annotations(pod)


def _describe(pod: Pod) -> str:
    metadata = _metadata(pod)
    return f"pod={metadata.get('namespace', '')}/{metadata.get('name', '')} uid={pod_uid(pod)}"


def _annotations_equal(existing: Mapping[str, Any], candidate: Mapping[str, Any]) -> bool:
    def significant(annotations: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in annotations.items() if k not in LOCAL_ANNOTATIONS}

    return significant(existing) == significant(candidate)


def pods_differ_semantically(existing: Pod, ref: Pod) -> bool:
    """True when anything but status and the kubelet's own annotations changed."""
    old, new = _metadata(existing), _metadata(ref)
    return (
        existing.get("spec") != ref.get("spec")
        or (old.get("labels") or {}) != (new.get("labels") or {})
        or old.get("deletionTimestamp") != new.get("deletionTimestamp")
        or old.get("deletionGracePeriodSeconds") != new.get("deletionGracePeriodSeconds")
        or not _annotations_equal(_annotations(existing), _annotations(ref))
    )


def check_and_update_pod(existing: Pod, ref: Pod) -> tuple[Pod, PodOperation | None]:
    """Compare a known pod with its new version from the same source.

    Returns the pod to keep and the operation it needs (``UPDATE``, ``DELETE``, ``RECONCILE``)
    or ``None`` when nothing meaningful changed. The kept pod keeps its identity and the
    kubelet's local annotations (first-seen time among them); neither argument is modified.
    """
    if not pods_differ_semantically(existing, ref):
        if existing.get("status") != ref.get("status"):
            kept = copy.deepcopy(existing)
            kept["status"] = copy.deepcopy(ref.get("status"))
            return kept, PodOperation.RECONCILE
        return existing, None

    kept = copy.deepcopy(existing)
    metadata: dict[str, Any] = kept.setdefault("metadata", {})
    new_meta = _metadata(ref)
    kept["spec"] = copy.deepcopy(ref.get("spec"))
    kept["status"] = copy.deepcopy(ref.get("status"))
    for key in ("labels", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if key in new_meta:
            metadata[key] = copy.deepcopy(new_meta[key])
        else:
            metadata.pop(key, None)
    annotations = dict(_annotations(ref))
    old_annotations = _annotations(existing)
    for key in LOCAL_ANNOTATIONS:
        if key in old_annotations:
            annotations[key] = old_annotations[key]
        else:
            annotations.pop(key, None)
    metadata["annotations"] = annotations
    op = PodOperation.DELETE if new_meta.get("deletionTimestamp") else PodOperation.UPDATE
    return kept, op


def filter_duplicates(
    pods: Iterable[Pod], source: str, held_elsewhere: Mapping[PodUID, Pod]
) -> tuple[list[Pod], list[Pod]]:
    """Split a source's pods into (kept, rejected) by full name and UID.

    The first pod of a full name in ``pods`` wins; a pod whose full name or UID is already held
    by another source (``held_elsewhere``) is rejected.
    """
    # a mirror pod (the API server's copy of a static pod) shares its static pod's full
    # name by design: neither side is a duplicate of the other
    other_names = {pod_full_name(p): p for p in held_elsewhere.values() if not _is_mirror(p)}
    names: set[str] = set()
    kept: list[Pod] = []
    rejected: list[Pod] = []
    for index, pod in enumerate(pods):
        name = pod_full_name(pod)
        if name in names:
            log.warning(
                "ignoring %s from source %s at index %d: duplicate pod name %s",
                _describe(pod),
                source,
                index,
                name,
            )
            rejected.append(pod)
            continue
        names.add(name)
        holder = (None if _is_mirror(pod) else other_names.get(name)) or held_elsewhere.get(
            pod_uid(pod)
        )
        if holder is not None:
            log.warning(
                "ignoring %s from source %s: %s already comes from source %s",
                _describe(pod),
                source,
                name,
                pod_source(holder),
            )
            rejected.append(pod)
            continue
        kept.append(pod)
    return kept, rejected


class MergeResult(NamedTuple):
    state: dict[PodUID, Pod]
    updates: list[SourceUpdate]
    rejected: list[Pod]


def merge_update(
    current: Mapping[PodUID, Pod], update: SourceUpdate, *, now: str, first_set: bool = False
) -> MergeResult:
    """Apply one update of a source to the merged state (pure: ``current`` is not modified).

    ``now`` stamps ``kubernetes.io/config.seen`` on new pods; ``first_set`` says this is the
    first ``SET`` ever received from the source.
    """
    source = update.source
    state: dict[PodUID, Pod] = dict(current)
    mine = {uid: pod for uid, pod in current.items() if pod_source(pod) == source}
    others = {uid: pod for uid, pod in current.items() if pod_source(pod) != source}
    buckets: dict[PodOperation, list[Pod]] = {op: [] for op in PodOperation}
    rejected: list[Pod] = []

    if update.op is PodOperation.REMOVE:
        for pod in update.pods:
            uid = pod_uid(pod)
            if uid in mine:
                del state[uid]
                buckets[PodOperation.REMOVE].append(mine[uid])
    elif update.op in (
        PodOperation.SET,
        PodOperation.ADD,
        PodOperation.UPDATE,
        PodOperation.DELETE,
    ):
        kept, rejected = filter_duplicates(update.pods, source, others)
        stored: set[PodUID] = set()
        for pod in kept:
            ref = copy.deepcopy(pod)
            metadata: dict[str, Any] = ref.setdefault("metadata", {})
            annotations: dict[str, Any] = dict(metadata.get("annotations") or {})
            annotations[CONFIG_SOURCE_ANNOTATION] = source
            metadata["annotations"] = annotations
            uid = pod_uid(ref)
            if not uid:
                log.warning("ignoring %s from source %s: it has no UID", _describe(ref), source)
                rejected.append(pod)
                continue
            stored.add(uid)
            existing = mine.get(uid)
            if existing is None:
                annotations[CONFIG_FIRST_SEEN_ANNOTATION] = now
                state[uid] = ref
                buckets[PodOperation.ADD].append(ref)
                continue
            kept_pod, op = check_and_update_pod(existing, ref)
            state[uid] = kept_pod
            if op is not None:
                buckets[op].append(kept_pod)
        if update.op is PodOperation.SET:
            for uid, pod in mine.items():
                if uid not in stored:
                    del state[uid]
                    buckets[PodOperation.REMOVE].append(pod)
    else:
        log.warning("ignoring update of type %s from source %s", update.op, source)

    for op in (PodOperation.REMOVE, PodOperation.ADD, PodOperation.UPDATE, PodOperation.DELETE):
        for pod in buckets[op]:
            log.info("config %s %s source=%s", op, _describe(pod), source)

    updates: list[SourceUpdate] = []
    order = (PodOperation.REMOVE, PodOperation.ADD, PodOperation.UPDATE, PodOperation.DELETE)
    for op in order:
        if buckets[op]:
            updates.append(SourceUpdate(op, copy.deepcopy(buckets[op]), source))
    changed = buckets[PodOperation.ADD] or buckets[PodOperation.UPDATE]
    if first_set and not changed and not buckets[PodOperation.DELETE]:
        updates.append(SourceUpdate(PodOperation.ADD, [], source))
    if buckets[PodOperation.RECONCILE]:
        updates.append(
            SourceUpdate(
                PodOperation.RECONCILE, copy.deepcopy(buckets[PodOperation.RECONCILE]), source
            )
        )
    return MergeResult(state, updates, rejected)


def merge(
    current: Mapping[PodUID, Pod],
    snapshot: Sequence[Pod],
    source: str,
    *,
    now: str,
    first_set: bool = False,
) -> tuple[dict[PodUID, Pod], list[SourceUpdate]]:
    """Merge a full snapshot (``SET``) of one source; see :func:`merge_update`."""
    result = merge_update(
        current,
        SourceUpdate(PodOperation.SET, list(snapshot), source),
        now=now,
        first_set=first_set,
    )
    return result.state, result.updates


class PodConfig:
    """Holds the merged pods of all sources and turns source updates into changes.

    ``clock`` gives the time stamped as ``kubernetes.io/config.seen`` on new pods.
    """

    def __init__(self, *, clock: Clock = utc_now) -> None:
        self._clock = clock
        self._state: dict[PodUID, Pod] = {}
        self._seen_sources: set[str] = set()
        self.duplicates: dict[str, list[str]] = {}
        """Per source, the full names rejected from its latest update as duplicates."""

    @property
    def pods(self) -> list[Pod]:
        """Copies of all pods currently configured, from every source."""
        return [copy.deepcopy(pod) for pod in self._state.values()]

    def seen_all_sources(self, sources: Iterable[str]) -> bool:
        """Whether every one of ``sources`` has delivered at least one ``SET``."""
        return self._seen_sources.issuperset(sources)

    def apply(self, update: SourceUpdate) -> list[SourceUpdate]:
        """Merge one update from a source; return the changes to deliver, in order."""
        first_set = update.op is PodOperation.SET and update.source not in self._seen_sources
        if update.op is PodOperation.SET:
            self._seen_sources.add(update.source)
        result = merge_update(
            self._state, update, now=format_rfc3339nano(self._clock()), first_set=first_set
        )
        self._state = result.state
        self.duplicates[update.source] = [pod_full_name(p) for p in result.rejected]
        return result.updates

    def sync(self) -> SourceUpdate:
        """A ``SET`` of everything configured, from the pseudo-source ``*``."""
        return SourceUpdate(PodOperation.SET, self.pods, ALL_SOURCE)

    async def run(
        self, inbox: asyncio.Queue[SourceUpdate], outbox: asyncio.Queue[SourceUpdate]
    ) -> None:
        """Merge updates from ``inbox`` forever, putting the resulting changes on ``outbox``."""
        while True:
            update = await inbox.get()
            try:
                for change in self.apply(update):
                    await outbox.put(change)
            finally:
                inbox.task_done()
