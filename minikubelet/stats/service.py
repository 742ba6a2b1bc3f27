"""The node's stats as the kubelet's HTTPS API serves them: one :class:`NodeStats`.

* ``GET /stats/summary`` -> ``await node_stats.summary()``: the Summary as a JSON-ready
  ``dict`` (:class:`~minikubelet.stats.summary.SummaryProvider`);
* ``GET /metrics`` -> ``node_stats.metrics_text()``: the kubelet's own families
  (:class:`~minikubelet.stats.metrics.KubeletMetrics`);
* ``GET /metrics/resource`` -> ``await node_stats.resource_metrics_text()``: the
  resource series of a fresh Summary; when getting it fails, only the scrape error
  gauges, at 1 (the scrape still answers 200, as the kubelet's collector does).

Both texts are served as :data:`~minikubelet.stats.metrics.CONTENT_TYPE`.

Make one with :func:`build_node_stats`::

    metrics = KubeletMetrics()  # also the PLEG's and the Kubelet's ``metrics=``
    node_stats = build_node_stats(
        runtime=cri,  # the node's default CRI client
        node_name=config.node_name,
        root_dir=config.root_dir,
        log_root=config.pod_log_root,
        trace=trace,  # the CRI client's TraceRecorder, or None
        metrics=metrics,
    )

With a ``trace`` it subscribes a :class:`~minikubelet.stats.metrics.TraceMetrics` to it,
so every CRI call (and API server request) is counted in ``/metrics``;
:meth:`NodeStats.close` unsubscribes. Nothing here runs a task or opens a socket.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from minikubelet.cri.services import CRIRuntime
from minikubelet.cri.trace import TraceRecorder
from minikubelet.stats.metrics import KubeletMetrics, TraceMetrics, resource_metrics
from minikubelet.stats.summary import ImageFsInfoSource, StatsRuntime, SummaryProvider

log = logging.getLogger(__name__)


@runtime_checkable
class NodeStatsRuntime(StatsRuntime, ImageFsInfoSource, Protocol):
    """The CRI calls the stats need: the Summary's listings and ``ImageFsInfo``
    (``CRIClient`` has them, and ``ListPodSandboxStats``, which is used when present)."""


class NodeStats:
    """What the kubelet's HTTPS API asks for the node's stats and metrics."""

    def __init__(
        self,
        provider: SummaryProvider,
        metrics: KubeletMetrics,
        *,
        unsubscribe: Callable[[], None] | None = None,
    ) -> None:
        self.provider = provider
        self.metrics = metrics
        self._unsubscribe = unsubscribe

    async def summary(self) -> dict[str, Any]:
        """``/stats/summary``: ``{"node": {...}, "pods": [...]}``; CRI errors propagate."""
        return await self.provider.summary()

    def metrics_text(self) -> str:
        """``/metrics``: the kubelet's own families, Prometheus text."""
        return self.metrics.render()

    async def resource_metrics_text(self) -> str:
        """``/metrics/resource``: node, pod and container cpu and memory, Prometheus text;
        a Summary that could not be had gives ``scrape_error 1`` instead of an error."""
        try:
            summary = await self.provider.summary()
        except Exception as exc:  # a runtime away or a host file unreadable: report it
            log.warning("/metrics/resource: the summary failed: %s", exc)
            return resource_metrics(None)
        return resource_metrics(summary)

    def close(self) -> None:
        """Stop counting the trace's calls (idempotent)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None


def build_node_stats(
    *,
    runtime: NodeStatsRuntime | CRIRuntime,
    node_name: str,
    root_dir: str | os.PathLike[str],
    log_root: str | os.PathLike[str] | None,
    trace: TraceRecorder | None,
    metrics: KubeletMetrics | None = None,
    image_fs_dir: str | os.PathLike[str] | None = None,
    api_host: str = "",
) -> NodeStats:
    """A :class:`NodeStats` over ``runtime``: the node's default CRI client, which must
    have the :class:`NodeStatsRuntime` calls (``CRIClient`` has; a bare ``CRIRuntime``
    without them is a ``TypeError``).

    ``root_dir`` is the kubelet's root dir (the node's ``fs``), ``log_root`` where pod
    logs live (containers' ``logs`` usage), ``image_fs_dir`` where the runtime keeps its
    images (``root_dir``'s filesystem if None). ``metrics`` is the registry ``/metrics``
    renders (a new one if None); with a ``trace`` its runtime-operation and
    ``rest_client_requests_total`` families (``host`` = ``api_host``) count the trace's
    calls from now on.
    """
    if not isinstance(runtime, NodeStatsRuntime):
        raise TypeError(f"{type(runtime).__name__} has not the CRI stats calls")
    metrics = metrics if metrics is not None else KubeletMetrics()
    provider = SummaryProvider(
        runtime,
        node_name=node_name,
        root_dir=os.fspath(root_dir),
        image_fs_dir=os.fspath(image_fs_dir) if image_fs_dir is not None else None,
        log_root=os.fspath(log_root) if log_root is not None else None,
        images=runtime,
    )
    unsubscribe = None
    if trace is not None:
        unsubscribe = trace.subscribe(TraceMetrics(metrics, api_host).record)
    return NodeStats(provider, metrics, unsubscribe=unsubscribe)
