"""Volume ownership for the pod's ``fsGroup`` (``pkg/volume/volume_linux.go``).

:func:`set_volume_ownership` is ``SetVolumeOwnership``: every file and directory of
the volume, the root last, gets ``fsGroup`` as its group (``lchown``, so a symlink's
target is never touched), group read and write (``0660``; read only, ``0440``, for a
volume mounted read-only) and, for a directory, group search and the setgid bit, so
that what a container creates there belongs to ``fsGroup`` too. Symlinks are never
chmodded (that would reach the file they point to).

``fsGroupChangePolicy``: ``OnRootMismatch`` skips the walk when the root already has
the group, the setgid bit and at least those permissions (``requiresPermissionChange``);
``Always`` (or none) walks every time. As in the kubelet, the ephemeral volume types
(emptyDir, configMap, secret, downwardAPI, projected) pass no policy: they are walked
when they are made and each time their files are written, and the pod's policy
applies to volumes with lasting data only (persistent volumes, which this node does
not mount).

A projected service account token is written 0600 when the pod has an fsGroup or all
its containers run as one user (:func:`pod_fs_user`), and owned by that user: the
walk then makes it 0640 for the group, as the kubelet's projected volume does.

Failures to change one file are logged and the walk goes on, as the kubelet does.
Blocking: call it in a thread.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from minikubelet.api.pod import Pod

log = logging.getLogger(__name__)

RW_MASK: Final = 0o660
RO_MASK: Final = 0o440
EXEC_MASK: Final = 0o110
ON_ROOT_MISMATCH: Final = "OnRootMismatch"
ALWAYS: Final = "Always"
FS_GROUP_CHANGE_POLICIES: Final = (ON_ROOT_MISMATCH, ALWAYS)


def pod_fs_group(security_context: Mapping[str, Any]) -> int | None:
    """The pod's ``securityContext.fsGroup``, or None."""
    value = security_context.get("fsGroup")
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def pod_fs_user(pod: Pod) -> int | None:
    """``FsUserFrom``: the one runAsUser every (init) container runs as, from its own
    security context or the pod's; None when one has none or two differ. A projected
    service account token is owned by it."""
    found: int | None = None
    for container in (*pod.spec.init_containers, *pod.spec.containers):
        uid = (container.security_context or {}).get("runAsUser")
        if uid is None:
            uid = pod.spec.security_context.get("runAsUser")
        if isinstance(uid, bool) or not isinstance(uid, int):
            return None
        if found is not None and uid != found:
            return None
        found = uid
    return found


def requires_permission_change(root: Path | str, fs_group: int, *, readonly: bool) -> bool:
    """``requiresPermissionChange``: the root lacks the group, the setgid bit or the
    group permissions (or is not a directory, or cannot be read)."""
    try:
        st = os.stat(root)
    except OSError as err:
        log.warning("%s: cannot read the volume root (%s); changing ownership", root, err)
        return True
    if st.st_gid != fs_group or not stat.S_ISDIR(st.st_mode):
        return True
    wanted = (RO_MASK if readonly else RW_MASK) | EXEC_MASK
    return (stat.S_IMODE(st.st_mode) & wanted) != wanted or not st.st_mode & stat.S_ISGID


def _change(path: str, fs_group: int, readonly: bool) -> None:
    """``changeFilePermission`` for one entry."""
    try:
        st = os.lstat(path)
    except OSError as err:
        log.warning("%s: lstat failed: %s", path, err)
        return
    try:
        os.lchown(path, -1, fs_group)
    except OSError as err:
        log.warning("%s: lchown failed: %s", path, err)
    if stat.S_ISLNK(st.st_mode):
        return
    mask = RO_MASK if readonly else RW_MASK
    if stat.S_ISDIR(st.st_mode):
        mask |= stat.S_ISGID | EXEC_MASK
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) | mask)
    except OSError as err:
        log.warning("%s: chmod failed: %s", path, err)


def set_volume_ownership(
    root: Path | str,
    fs_group: int | None,
    *,
    readonly: bool = False,
    policy: str | None = None,
) -> bool:
    """``SetVolumeOwnership``; returns whether the volume was walked."""
    if fs_group is None:
        return False
    if policy == ON_ROOT_MISMATCH and not requires_permission_change(
        root, fs_group, readonly=readonly
    ):
        log.debug("%s: ownership already right, not walked", root)
        return False
    root = str(root)
    # children before their directory, the root last: an interrupted walk leaves the
    # root unchanged, so OnRootMismatch walks again next time
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in (*files, *dirs):
            _change(os.path.join(dirpath, name), fs_group, readonly)
    _change(root, fs_group, readonly)
    return True
