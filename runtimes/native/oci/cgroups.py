"""The host's cgroup layout, where a container's cgroup lives, and what it has used.

Parsing is pure (texts in, values out); the ``read_*`` functions read
``/proc`` and ``/sys/fs/cgroup`` and block: call them through
``asyncio.to_thread``.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from minikubelet.util.mountinfo import SELF as MOUNTINFO
from minikubelet.util.mountinfo import parse as parse_mountinfo

CGROUP_ROOT: Final = "/sys/fs/cgroup"
#: Super options of a v1 cgroup mount that are not controllers.
_NOT_CONTROLLERS: Final = frozenset(
    {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "favordynmods"}
)


class CgroupMode(enum.StrEnum):
    LEGACY = "v1"  # every controller on a v1 hierarchy
    HYBRID = "hybrid"  # v1 hierarchies plus a cgroup2 mount at <root>/unified
    UNIFIED = "v2"  # /sys/fs/cgroup is cgroup2


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    mode: CgroupMode
    #: v1 controller (and ``name=systemd``) -> its mount point
    v1: Mapping[str, str] = field(default_factory=dict)
    unified: str = ""  # the cgroup2 mount point, if any


def parse_layout(mountinfo: str, root: str = CGROUP_ROOT) -> CgroupLayout:
    """The cgroup layout from ``/proc/self/mountinfo``."""
    v1: dict[str, str] = {}
    unified = ""
    for mount in parse_mountinfo(mountinfo):
        if mount.fs_type == "cgroup2":
            unified = mount.mount_point
        elif mount.fs_type == "cgroup":
            for opt in mount.super_options:
                if opt.startswith("name=") or (opt.isidentifier() and opt not in _NOT_CONTROLLERS):
                    v1[opt] = mount.mount_point
    if unified == root:
        return CgroupLayout(CgroupMode.UNIFIED, {}, unified)
    if unified:
        return CgroupLayout(CgroupMode.HYBRID, v1, unified)
    return CgroupLayout(CgroupMode.LEGACY, v1, "")


def crun_refusal(layout: CgroupLayout, unified_controllers: str) -> str:
    """Why crun will not create a container here ("" when it will).

    crun (``libcrun_cgroup_enter``) supports a hybrid layout only when the
    cgroup2 hierarchy has no controllers; otherwise every create fails with
    "cgroups in hybrid mode not supported, drop all controllers from cgroupv2".
    """
    if layout.mode is not CgroupMode.HYBRID or not unified_controllers.strip():
        return ""
    return (
        f"crun refuses this host's hybrid cgroup layout: cgroup v1 hierarchies plus cgroup2 "
        f"at {layout.unified} with controllers ({unified_controllers.strip()}); crun says "
        f'"cgroups in hybrid mode not supported, drop all controllers from cgroupv2"'
    )


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` -> {controller: path}; the v2 entry is under ``""``."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def cgroup_dirs(layout: CgroupLayout, cgroups_path: str, own: Mapping[str, str]) -> dict[str, Path]:
    """Where runc (cgroupfs driver) puts a container whose ``linux.cgroupsPath`` is given.

    An absolute path is taken from each hierarchy's root; a relative one from
    the runtime's own cgroup in that hierarchy (``own``, from
    :func:`parse_proc_cgroup` of the process that runs runc). Keys are v1
    controller names, or ``""`` for the unified hierarchy.
    """

    def under(mountpoint: str, base: str) -> Path:
        rel = cgroups_path if cgroups_path.startswith("/") else f"{base.rstrip('/')}/{cgroups_path}"
        return Path(mountpoint) / rel.lstrip("/")

    if layout.mode is CgroupMode.UNIFIED:
        return {"": under(layout.unified, own.get("", "/"))}
    return {
        c: under(mp, own.get(c, "/")) for c, mp in layout.v1.items() if not c.startswith("name=")
    }


def parse_flat_keyed(text: str) -> dict[str, int]:
    """``memory.stat``-style ``key value`` lines."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def working_set(usage: int, stat: Mapping[str, int]) -> int:
    """cAdvisor's working set: usage minus inactive file pages, never negative."""
    inactive = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    return max(0, usage - inactive)


@dataclass(frozen=True, slots=True)
class CgroupStats:
    timestamp: int  # ns since the epoch
    cpu_usage_ns: int
    memory_usage_bytes: int
    memory_working_set_bytes: int
    oom_kills: int  # memory.oom_control's oom_kill (v1), memory.events' oom_kill (v2)


def _read(path: Path) -> str:
    return path.read_text()


def read_stats(dirs: Mapping[str, Path], now_ns: int) -> CgroupStats | None:
    """Read a container's usage (blocking); None when its cgroup is gone."""
    try:
        if "" in dirs:
            d = dirs[""]
            cpu = parse_flat_keyed(_read(d / "cpu.stat")).get("usage_usec", 0) * 1000
            usage = int(_read(d / "memory.current"))
            stat = parse_flat_keyed(_read(d / "memory.stat"))
            ooms = parse_flat_keyed(_read(d / "memory.events")).get("oom_kill", 0)
        else:
            cpu = int(_read(dirs["cpuacct"] / "cpuacct.usage"))
            mem = dirs["memory"]
            usage = int(_read(mem / "memory.usage_in_bytes"))
            stat = parse_flat_keyed(_read(mem / "memory.stat"))
            ooms = parse_flat_keyed(_read(mem / "memory.oom_control")).get("oom_kill", 0)
    except (FileNotFoundError, KeyError):
        return None
    return CgroupStats(now_ns, cpu, usage, working_set(usage, stat), ooms)


def read_layout() -> CgroupLayout:
    return parse_layout(_read(Path(MOUNTINFO)))


def read_own_cgroup() -> dict[str, str]:
    return parse_proc_cgroup(_read(Path(f"/proc/{os.getpid()}/cgroup")))


def read_unified_controllers(layout: CgroupLayout) -> str:
    if not layout.unified:
        return ""
    try:
        return _read(Path(layout.unified) / "cgroup.controllers")
    except OSError:
        return ""
