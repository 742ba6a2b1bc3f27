"""What the node status is made from, gathered apart from the setters that use it.

:func:`gather_host_facts` reads the host (``/proc``, ``/sys``, ``/etc``, the root
dir's filesystem) as cAdvisor does for the kubelet: it touches files, so the node
status manager runs it in a worker thread, once at start and now and then after.
Every path is under ``host_root`` so that tests can hand it a tree of their own.

:func:`runtime_errors` turns each runtime's CRI ``Status`` into the kubelet's
runtime and network errors, worded as the kubelet's ``updateRuntimeUp`` words them.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A cgroup v1 memory limit at or above this is "no limit" (the kernel's is 2^63 - page).
_UNLIMITED = 1 << 62

#: ``uname -m`` as Go's GOARCH names it (the ``kubernetes.io/arch`` label and nodeInfo).
_ARCH = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def go_arch(machine: str) -> str:
    """``x86_64`` -> ``amd64``, ``aarch64`` -> ``arm64``; anything else as it is."""
    return _ARCH.get(machine.lower(), machine.lower())


@dataclass(frozen=True, slots=True)
class HostFacts:
    """The host as the node reports it (what cAdvisor's MachineInfo gives the kubelet)."""

    cpu_millis: int
    memory_bytes: int
    ephemeral_storage_bytes: int
    machine_id: str
    system_uuid: str
    boot_id: str
    kernel_version: str
    os_image: str
    architecture: str
    operating_system: str = "linux"


@dataclass(frozen=True, slots=True)
class Pressure:
    """Resource pressure as an eviction manager would signal it (none here: all False)."""

    memory: bool = False
    disk: bool = False
    pid: bool = False


@dataclass(frozen=True, slots=True)
class RuntimeFacts:
    """The container runtime as the node status shows it."""

    name: str
    version: str
    #: The kubelet's runtimeErrors and networkErrors (empty: the runtime is ready).
    errors: Sequence[str] = field(default_factory=tuple)

    @property
    def container_runtime_version(self) -> str:
        """``<RuntimeName>://<RuntimeVersion>`` (nodeInfo.containerRuntimeVersion)."""
        return f"{self.name}://{self.version}"


# -- the host --------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _own_cgroups(host_root: Path) -> tuple[dict[str, str], str | None]:
    """This process's cgroup v1 paths by controller, and its v2 path (``0::``)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in (_read(host_root / "proc/self/cgroup") or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            v2 = path
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return v1, v2


def _levels(mount: Path, path: str | None) -> list[Path]:
    """The cgroup directories whose limits bind us: ours and its ancestors that are
    visible (in a container the hierarchy may be mounted at our own cgroup), then the
    mount's root."""
    out: list[Path] = []
    if path:
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), 0, -1):
            candidate = mount.joinpath(*parts[:depth])
            if candidate.is_dir():
                out.append(candidate)
    out.append(mount)
    return out


def _v1_mount(host_root: Path, *names: str) -> Path | None:
    for name in names:
        candidate = host_root / "sys/fs/cgroup" / name
        if candidate.is_dir():
            return candidate
    return None


def cgroup_memory_limit(host_root: Path = Path("/")) -> int | None:
    """The tightest memory limit on this process's cgroup and its ancestors (v1
    ``memory.limit_in_bytes``, v2 ``memory.max``); None when there is none."""
    v1, v2 = _own_cgroups(host_root)
    limits: list[int] = []
    v1_mount = _v1_mount(host_root, "memory")
    if v1_mount is not None:
        for level in _levels(v1_mount, v1.get("memory")):
            value = _read_int(level / "memory.limit_in_bytes")
            if value is not None and 0 < value < _UNLIMITED:
                limits.append(value)
    else:
        v2_mount = host_root / "sys/fs/cgroup"
        if (v2_mount / "cgroup.controllers").exists():
            for level in _levels(v2_mount, v2):
                value = _read_int(level / "memory.max")  # "max" reads as None
                if value is not None and value > 0:
                    limits.append(value)
    return min(limits) if limits else None


def cgroup_cpu_limit_millis(host_root: Path = Path("/")) -> int | None:
    """The tightest CPU quota on this process's cgroup and its ancestors, in millicores
    (v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, v2 ``cpu.max``); None when unlimited."""
    v1, v2 = _own_cgroups(host_root)
    limits: list[int] = []
    v1_mount = _v1_mount(host_root, "cpu", "cpu,cpuacct", "cpuacct,cpu")
    if v1_mount is not None:
        for level in _levels(v1_mount, v1.get("cpu")):
            quota = _read_int(level / "cpu.cfs_quota_us")
            period = _read_int(level / "cpu.cfs_period_us")
            if quota is not None and quota > 0 and period:
                limits.append(max(1, quota * 1000 // period))
    else:
        v2_mount = host_root / "sys/fs/cgroup"
        if (v2_mount / "cgroup.controllers").exists():
            for level in _levels(v2_mount, v2):
                fields = (_read(level / "cpu.max") or "").split()
                if len(fields) == 2 and fields[0] != "max":
                    try:
                        quota, period = int(fields[0]), int(fields[1])
                    except ValueError:
                        continue
                    if quota > 0 and period > 0:
                        limits.append(max(1, quota * 1000 // period))
    return min(limits) if limits else None


def meminfo_total(host_root: Path = Path("/")) -> int | None:
    """``MemTotal`` of ``/proc/meminfo`` in bytes."""
    for line in (_read(host_root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            try:
                return int(fields[1]) * (1024 if fields[-1].lower() == "kb" else 1)
            except (IndexError, ValueError):
                return None
    return None


def os_image(host_root: Path = Path("/")) -> str:
    """``PRETTY_NAME`` of ``/etc/os-release`` (``Linux`` when there is none, as cAdvisor)."""
    for name in ("etc/os-release", "usr/lib/os-release"):
        for line in (_read(host_root / name) or "").splitlines():
            key, sep, value = line.partition("=")
            if sep and key.strip() == "PRETTY_NAME":
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
                    value = value[1:-1]
                return value or "Linux"
    return "Linux"


def filesystem_bytes(path: Path) -> int:
    """The size of the filesystem holding ``path`` (statvfs blocks x fragment size)."""
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def host_cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gather_host_facts(
    root_dir: Path,
    *,
    host_root: Path = Path("/"),
    cpu_count: Callable[[], int] = host_cpu_count,
    uname: Callable[[], Any] = platform.uname,
) -> HostFacts:
    """Read the host (blocking: run it in a worker thread)."""
    cpu_millis = cpu_count() * 1000
    quota = cgroup_cpu_limit_millis(host_root)
    if quota is not None:
        cpu_millis = min(cpu_millis, quota)
    memory = meminfo_total(host_root) or 0
    limit = cgroup_memory_limit(host_root)
    if limit is not None:
        memory = min(memory, limit) if memory else limit
    machine_id = (
        _read(host_root / "etc/machine-id") or _read(host_root / "var/lib/dbus/machine-id") or ""
    )
    system_uuid = _read(host_root / "sys/class/dmi/id/product_uuid") or machine_id
    boot_id = _read(host_root / "proc/sys/kernel/random/boot_id") or ""
    info = uname()
    try:
        storage = filesystem_bytes(root_dir)
    except OSError:
        storage = 0
    return HostFacts(
        cpu_millis=cpu_millis,
        memory_bytes=memory,
        ephemeral_storage_bytes=storage,
        machine_id=machine_id,
        system_uuid=system_uuid,
        boot_id=boot_id,
        kernel_version=str(info.release),
        os_image=os_image(host_root),
        architecture=go_arch(str(info.machine)),
        operating_system=str(info.system).lower() or "linux",
    )


# -- the runtime -----------------------------------------------------------------------------


def _condition_text(condition: Any | None) -> str:
    """A CRI RuntimeCondition as the kubelet's ``%v`` of it prints."""
    if condition is None:
        return "<nil>"
    status = "true" if condition.status else "false"
    return f"{condition.type}={status} reason:{condition.reason} message:{condition.message}"


def status_errors(status: Any) -> tuple[list[str], list[str], bool]:
    """A CRI ``StatusResponse``'s runtime errors, network errors, and whether the runtime
    counts as synced (RuntimeReady true), as the kubelet's updateRuntimeUp reads it."""
    conditions = {c.type: c for c in status.status.conditions}
    runtime: list[str] = []
    network: list[str] = []
    net = conditions.get("NetworkReady")
    if net is None or not net.status:
        network.append(f"container runtime network not ready: {_condition_text(net)}")
    ready = conditions.get("RuntimeReady")
    if ready is None or not ready.status:
        runtime.append(f"container runtime not ready: {_condition_text(ready)}")
        return runtime, network, False
    return runtime, network, True


def aggregate(messages: Sequence[str]) -> str | None:
    """Messages as Kubernetes' ``errors.NewAggregate(...).Error()`` joins them: None for
    none, the message itself for one, ``[a, b]`` for more (repeats dropped)."""
    unique = list(dict.fromkeys(messages))
    if not unique:
        return None
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"
