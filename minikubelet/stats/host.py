"""The host's own numbers for the Summary API's node, read from ``/proc`` and statvfs.

Every function here is blocking file I/O: call them through ``asyncio.to_thread``.
The ``proc`` argument is the procfs mount, so tests can point it at a fake tree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

#: ``USER_HZ``: /proc/stat counts in clock ticks.
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

#: Interfaces cAdvisor leaves out of a machine's network stats.
_IGNORED_PREFIXES = ("lo", "veth", "docker", "nerdctl")


@dataclass(frozen=True)
class FsInfo:
    """One filesystem as statvfs sees it, in bytes and inodes."""

    capacity: int
    available: int
    used: int
    inodes: int
    inodes_free: int

    @property
    def inodes_used(self) -> int:
        return self.inodes - self.inodes_free


@dataclass(frozen=True)
class Interface:
    name: str
    rx_bytes: int
    rx_errors: int
    tx_bytes: int
    tx_errors: int


@dataclass(frozen=True)
class Memory:
    """The node's memory as the kubelet reports it (bytes; faults are counts)."""

    total: int
    available: int  # capacity - working set (what eviction calls memory.available)
    usage: int
    working_set: int
    rss: int
    page_faults: int
    major_page_faults: int


def cpu_usage_ns(proc: str = "/proc", clk_tck: int = _CLK_TCK) -> int:
    """Cumulative busy cpu time of all cpus, in nanoseconds (``/proc/stat`` line ``cpu``):
    user + nice + system + irq + softirq + steal; idle and iowait are not use."""
    with open(os.path.join(proc, "stat"), encoding="ascii") as f:
        for line in f:
            if line.startswith("cpu "):
                fields = [int(x) for x in line.split()[1:]]
                fields += [0] * (8 - len(fields))
                user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
                ticks = user + nice + system + irq + softirq + steal
                return ticks * 1_000_000_000 // clk_tck
    raise ValueError(f"{proc}/stat has no cpu line")


def boot_time_s(proc: str = "/proc") -> int:
    """When the machine booted, seconds since the epoch (``btime`` of ``/proc/stat``)."""
    with open(os.path.join(proc, "stat"), encoding="ascii") as f:
        for line in f:
            if line.startswith("btime "):
                return int(line.split()[1])
    raise ValueError(f"{proc}/stat has no btime line")


def _kv_file(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(path, encoding="ascii") as f:
        for line in f:
            parts = line.replace(":", " ").split()
            if len(parts) >= 2:
                try:
                    value = int(parts[1])
                except ValueError:
                    continue
                out[parts[0]] = value * 1024 if parts[2:3] == ["kB"] else value
    return out


def memory(proc: str = "/proc") -> Memory:
    """The node's memory from ``/proc/meminfo`` and ``/proc/vmstat``.

    As the kubelet counts the node: usage is what is not free, the working set
    is usage less inactive file pages (page cache the kernel can drop first), and
    available is capacity less the working set."""
    info = _kv_file(os.path.join(proc, "meminfo"))
    total = info.get("MemTotal", 0)
    usage = max(total - info.get("MemFree", 0), 0)
    working_set = max(usage - info.get("Inactive(file)", 0), 0)
    try:
        vm = _kv_file(os.path.join(proc, "vmstat"))
    except OSError:
        vm = {}
    return Memory(
        total=total,
        available=max(total - working_set, 0),
        usage=usage,
        working_set=working_set,
        rss=info.get("AnonPages", 0),
        page_faults=vm.get("pgfault", 0),
        major_page_faults=vm.get("pgmajfault", 0),
    )


def interfaces(proc: str = "/proc") -> list[Interface]:
    """The machine's network interfaces from ``/proc/net/dev``, loopback and veths left out."""
    out: list[Interface] = []
    with open(os.path.join(proc, "net", "dev"), encoding="ascii") as f:
        for line in f:
            if ":" not in line:
                continue
            name, _, rest = line.partition(":")
            name = name.strip()
            fields = rest.split()
            if len(fields) < 16 or name.startswith(_IGNORED_PREFIXES):
                continue
            n = [int(x) for x in fields[:16]]
            out.append(
                Interface(name, rx_bytes=n[0], rx_errors=n[2], tx_bytes=n[8], tx_errors=n[10])
            )
    return out


def default_interface(proc: str = "/proc") -> str:
    """The interface of the default route (``/proc/net/route``), or ``""``."""
    try:
        with open(os.path.join(proc, "net", "route"), encoding="ascii") as f:
            next(f, None)
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[1] == "00000000":
                    return fields[0]
    except OSError:
        pass
    return ""


def pid_max(proc: str = "/proc") -> int | None:
    """The node's task limit: the smaller of ``kernel.pid_max`` and ``kernel.threads-max``."""
    limits: list[int] = []
    for name in ("pid_max", "threads-max"):
        try:
            limits.append(int(Path(proc, "sys", "kernel", name).read_text().strip()))
        except (OSError, ValueError):
            continue
    return min(limits) if limits else None


def process_count(proc: str = "/proc") -> int:
    """Tasks on the node: the total of ``/proc/loadavg``'s ``running/total`` field, as the
    kubelet reads it; the numeric entries of ``/proc`` if that cannot be read."""
    try:
        fields = Path(proc, "loadavg").read_text().split()
        return int(fields[3].split("/")[1])
    except (OSError, ValueError, IndexError):
        return sum(1 for e in os.scandir(proc) if e.name.isdigit())


def fs_info(path: str) -> FsInfo:
    """statvfs of the filesystem holding ``path``."""
    st = os.statvfs(path)
    return FsInfo(
        capacity=st.f_blocks * st.f_frsize,
        available=st.f_bavail * st.f_frsize,
        used=(st.f_blocks - st.f_bfree) * st.f_frsize,
        inodes=st.f_files,
        inodes_free=st.f_ffree,
    )


def dir_usage(path: str) -> tuple[int, int]:
    """Bytes (allocated blocks) and inodes under ``path``; ``(0, 0)`` if it does not exist."""
    used = inodes = 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            inodes += 1
            used += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return used, inodes
