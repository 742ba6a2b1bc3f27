"""The volumes a pod needs on the host, and the mounts its containers get.

:class:`~.manager.VolumeManager` sets up a pod's ``emptyDir``, ``hostPath`` and
``downwardAPI`` volumes, and with an API server's objects (an
:class:`~minikubelet.kubeapi.objects.ObjectSource`) its ``configMap``, ``secret`` and
``projected`` ones (:mod:`.projection`), under ``<root>/pods/<uid>/volumes`` (the
kubelet's layout). Their files are written by the kubelet's atomic writer
(:mod:`.atomic`) and kept current by the manager's resync. It tears volumes down and
makes the termination message file; :func:`~.manager.mounts_for` turns a container's
``volumeMounts`` into CRI mounts, resolving ``subPath`` safely.
"""

from minikubelet.volumes.manager import (
    ContainerMounts,
    VolumeError,
    VolumeManager,
    mounts_for,
    resolve_sub_path,
)

__all__ = [
    "ContainerMounts",
    "VolumeError",
    "VolumeManager",
    "mounts_for",
    "resolve_sub_path",
]
