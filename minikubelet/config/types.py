"""Vocabulary of pod configuration: operations, updates, annotation keys and source names.

Mirrors the kubelet's ``pkg/kubelet/types/pod_update.go``. Pods are plain dicts (the parsed
manifest), so this layer does not depend on a typed Pod model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

Pod: TypeAlias = dict[str, Any]
"""A pod as a plain, JSON-compatible dict (``apiVersion``, ``kind``, ``metadata``, ``spec``...)."""

CONFIG_SOURCE_ANNOTATION = "kubernetes.io/config.source"
CONFIG_MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
CONFIG_FIRST_SEEN_ANNOTATION = "kubernetes.io/config.seen"
CONFIG_HASH_ANNOTATION = "kubernetes.io/config.hash"

LOCAL_ANNOTATIONS: frozenset[str] = frozenset(
    {CONFIG_SOURCE_ANNOTATION, CONFIG_MIRROR_ANNOTATION, CONFIG_FIRST_SEEN_ANNOTATION}
)
"""Annotations the kubelet owns itself; a change in them alone is not a pod update."""

FILE_SOURCE = "file"
HTTP_SOURCE = "http"
API_SOURCE = "api"
ALL_SOURCE = "*"


class PodOperation(StrEnum):
    """What a :class:`SourceUpdate` asks of its receiver."""

    SET = "SET"
    """The complete set of pods of one source; receivers diff it against what they hold."""
    ADD = "ADD"
    """Pods new to their source."""
    UPDATE = "UPDATE"
    """Pods whose spec, labels or (non-local) annotations changed."""
    DELETE = "DELETE"
    """Pods gracefully deleted by their source (a deletion timestamp appeared)."""
    REMOVE = "REMOVE"
    """Pods gone from their source."""
    RECONCILE = "RECONCILE"
    """Pods unchanged except for their status; the kubelet reconciles status with the source."""


@dataclass(frozen=True, slots=True)
class SourceUpdate:
    """One message on a config channel: an operation over some pods of one source (what
    the pod config merges; the pod workers get :class:`~minikubelet.podworkers.WorkerUpdate`)."""

    op: PodOperation
    pods: list[Pod] = field(default_factory=list)
    source: str = ""
