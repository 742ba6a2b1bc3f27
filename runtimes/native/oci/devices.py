"""Device nodes on the host, as the OCI spec describes them (``linux.devices``).

:class:`HostDevice` is plain data; :func:`host_device` and
:func:`list_host_devices` stat the host (blocking: call them through
``asyncio.to_thread``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Any, Final

from minikubelet.errors import InvalidArgument, NotFound

#: Directories of /dev a privileged container does not get (containerd's list).
_SKIPPED_DIRS: Final = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


@dataclass(frozen=True, slots=True)
class HostDevice:
    path: str  # on the host
    type: str  # "c", "b" or "p"
    major: int
    minor: int
    file_mode: int  # permission bits
    uid: int = 0
    gid: int = 0

    def oci(self, container_path: str) -> dict[str, Any]:
        """The ``linux.devices`` entry that creates this node at ``container_path``."""
        return {
            "path": container_path,
            "type": self.type,
            "major": self.major,
            "minor": self.minor,
            "fileMode": self.file_mode,
            "uid": self.uid,
            "gid": self.gid,
        }


def device_from_stat(path: str, st: os.stat_result) -> HostDevice | None:
    """The device ``st`` describes, or None when it is not a device node."""
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        return None
    return HostDevice(
        path=path,
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
    )


def host_device(path: str) -> HostDevice:
    """Stat one device node (symlinks followed); NotFound or InvalidArgument otherwise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"device {path} not found on the host") from None
    device = device_from_stat(path, st)
    if device is None:
        raise InvalidArgument(f"{path} is not a device node")
    return device


def list_host_devices(root: str = "/dev") -> tuple[HostDevice, ...]:
    """Every device node under ``root``, as a privileged container gets them."""
    found: list[HostDevice] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if path == "/dev/console":
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            device = device_from_stat(path, st)
            if device is not None and device.type != "p":
                found.append(device)
    return tuple(found)
