"""Pod status: what the kubelet reports for a pod, and how kubectl shows it.

* :mod:`~minikubelet.status.generate` turns the runtime's view of a pod
  (:class:`~minikubelet.container.status.PodStatus`) plus probe results and the sync
  loop's waiting reasons into a v1 ``PodStatus`` as the API serves it: the kubelet's
  ``generateAPIPodStatus`` with ``getPhase``, ``convertToAPIContainerStatuses`` and the
  condition generators of ``pkg/kubelet/status``. Pure: no I/O, no clock.
* :mod:`~minikubelet.status.manager` keeps the versioned latest status per pod (the
  kubelet's status manager) and tells subscribers what changed.
* :mod:`~minikubelet.status.printer` prints pods the way ``kubectl get pods`` and
  ``kubectl describe pod`` do. Pure as well: the caller passes the time.
"""
