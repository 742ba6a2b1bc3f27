"""The kubelet's runtime manager: decide what a pod needs (pure), then do it through the CRI.

* :mod:`.actions` — :func:`~.actions.compute_pod_actions`, the diff of a pod's spec
  against its observed status;
* :mod:`.hash` — the container spec hash stamped on every container;
* :mod:`.labels` — the ``io.kubernetes.*`` labels and annotations, and the one
  conversion from CRI statuses to :mod:`minikubelet.container.status`.
"""
