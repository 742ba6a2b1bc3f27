"""The volumes a pod needs on the host, and the mounts its containers get.

:class:`~.manager.VolumeManager` sets up a pod's ``emptyDir``, ``hostPath`` and
``downwardAPI`` volumes under ``<root>/pods/<uid>/volumes`` (the kubelet's layout),
tears them down, and makes the termination message file; :func:`~.manager.mounts_for`
turns a container's ``volumeMounts`` into CRI mounts, resolving ``subPath`` safely.
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
