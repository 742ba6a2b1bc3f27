"""The kubelet's stats: the Summary API (``/stats/summary``) and Prometheus text
for ``/metrics/resource`` and ``/metrics``.

:class:`~minikubelet.stats.summary.SummaryProvider` builds the
``stats.k8s.io/v1alpha1`` ``Summary`` from CRI stats and the host's ``/proc``;
:mod:`minikubelet.stats.metrics` writes Prometheus text: the resource series
metrics-server scrapes, and a registry of the kubelet's own families fed from the
CRI trace and the core; :class:`~minikubelet.stats.service.NodeStats` answers the
kubelet API's three stats endpoints with them.
"""
