"""The Summary API (``GET /stats/summary``): ``stats.k8s.io/v1alpha1`` ``Summary`` as JSON.

:class:`SummaryProvider` answers it the way the kubelet's CRI stats provider does:
pods and containers from CRI stats (``ListPodSandboxStats`` when the runtime
offers it, else ``ListContainerStats`` with the sandbox and container lists), the
node from the host's ``/proc`` and statvfs, read off the event loop. A runtime that
reports only cumulative cpu time gets ``usageNanoCores`` computed from the previous
sample of the same container, as the kubelet keeps it.

The result is a plain ``dict`` in the kubelet's JSON field names; absent numbers are
left out (the kubelet's ``omitempty`` pointers), never sent as ``null``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from google.protobuf.message import Message

from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import Unimplemented
from minikubelet.stats import host

#: The sandbox labels the kubelet puts on every pod sandbox (``kubetypes``).
POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"

JSON = dict[str, Any]


class StatsRuntime(Protocol):
    """The CRI RuntimeService calls the Summary needs (``CRIClient`` has them all)."""

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> Sequence[pb.PodSandbox]: ...

    async def list_containers(
        self, filter: pb.ContainerFilter | None = None
    ) -> Sequence[pb.Container]: ...

    async def list_container_stats(
        self, filter: pb.ContainerStatsFilter | None = None
    ) -> Sequence[pb.ContainerStats]: ...


class PodSandboxStatsLister(Protocol):
    """A runtime client that also has CRI ``ListPodSandboxStats``; used when present."""

    async def list_pod_sandbox_stats(
        self, filter: pb.PodSandboxStatsFilter | None = None
    ) -> Sequence[pb.PodSandboxStats]: ...


class ImageFsInfoSource(Protocol):
    """CRI ``ImageFsInfo`` (the image service), for the bytes images take."""

    async def image_fs_info(self) -> pb.ImageFsInfoResponse: ...


@dataclass(frozen=True)
class PodRef:
    name: str
    namespace: str
    uid: str

    def to_json(self) -> JSON:
        return {"name": self.name, "namespace": self.namespace, "uid": self.uid}


def pod_ref(sandbox: pb.PodSandbox | pb.PodSandboxAttributes) -> PodRef:
    """The pod a sandbox belongs to: its metadata, else its ``io.kubernetes.pod.*`` labels."""
    md, labels = sandbox.metadata, sandbox.labels
    return PodRef(
        name=md.name or labels.get(POD_NAME_LABEL, ""),
        namespace=md.namespace or labels.get(POD_NAMESPACE_LABEL, ""),
        uid=md.uid or labels.get(POD_UID_LABEL, ""),
    )


def rfc3339(ns: int) -> str:
    """A ``metav1.Time`` as JSON: RFC 3339, whole seconds, UTC."""
    return datetime.fromtimestamp(ns // 1_000_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(msg: Message, field: str) -> int | None:
    """A ``UInt64Value`` field, or None when the runtime left it unset."""
    if not msg.HasField(field):
        return None
    v = getattr(msg, field).value
    assert isinstance(v, int)
    return v


def _drop_none(d: JSON) -> JSON:
    return {k: v for k, v in d.items() if v is not None}


class CpuUsageCache:
    """The kubelet's ``cpuUsageCache``: the last cpu sample per id, so that a runtime
    which reports only cumulative ``usage_core_nano_seconds`` still gets a rate.

    ``usageNanoCores = Δusage_core_nano_seconds / Δtimestamp * 1e9``. The first sample
    of an id, or one whose counter went backwards (a restarted container), has no
    rate. A repeated sample (same timestamp) answers the last rate without moving
    the cache."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int, int | None]] = {}

    def update(self, key: str, timestamp_ns: int, usage_ns: int) -> int | None:
        cached = self._last.get(key)
        if cached is None or usage_ns < cached[1]:
            self._last[key] = (timestamp_ns, usage_ns, None)
            return None
        interval = timestamp_ns - cached[0]
        if interval <= 0:
            return cached[2]
        rate = int((usage_ns - cached[1]) / interval * 1_000_000_000)
        self._last[key] = (timestamp_ns, usage_ns, rate)
        return rate

    def keep_only(self, keys: set[str]) -> None:
        """Forget ids no longer listed (containers removed since the last summary)."""
        for key in self._last.keys() - keys:
            del self._last[key]


#: The cache key of the node's own cpu (container ids are hex, so no clash).
_NODE_KEY = "/"


def _fs_json(
    fs: host.FsInfo, now_ns: int, used: int | None = None, inodes_used: int | None = None
) -> JSON:
    return {
        "time": rfc3339(now_ns),
        "availableBytes": fs.available,
        "capacityBytes": fs.capacity,
        "usedBytes": fs.used if used is None else used,
        "inodesFree": fs.inodes_free,
        "inodes": fs.inodes,
        "inodesUsed": fs.inodes_used if inodes_used is None else inodes_used,
    }


def _iface_json(i: pb.NetworkInterfaceUsage) -> JSON:
    return _drop_none(
        {
            "name": i.name,
            "rxBytes": _value(i, "rx_bytes"),
            "rxErrors": _value(i, "rx_errors"),
            "txBytes": _value(i, "tx_bytes"),
            "txErrors": _value(i, "tx_errors"),
        }
    )


def _network_json(net: pb.NetworkUsage, fallback_ns: int) -> JSON:
    out: JSON = {"time": rfc3339(net.timestamp or fallback_ns)}
    if net.HasField("default_interface"):
        out.update(_iface_json(net.default_interface))
    out["interfaces"] = [_iface_json(i) for i in net.interfaces]
    return out


@dataclass
class _HostFacts:
    cpu_ns: int
    boot_s: int
    memory: host.Memory
    interfaces: list[host.Interface]
    default_interface: str
    root_fs: host.FsInfo
    image_fs: host.FsInfo
    pid_max: int | None
    processes: int
    log_usage: dict[str, tuple[int, int]]


class SummaryProvider:
    """Builds the Summary. One per node; it keeps the cpu samples between calls.

    ``root_dir`` is the kubelet's root dir (the node's ``fs``), ``image_fs_dir`` where
    the runtime keeps images (``runtime.imageFs``; the root dir's filesystem if
    omitted), ``log_root`` where container logs live (``/var/log/pods``; container
    ``logs`` then carry the bytes of ``<log_root>/<ns>_<pod>_<uid>/<container>``).
    """

    def __init__(
        self,
        runtime: StatsRuntime,
        *,
        node_name: str,
        root_dir: str,
        image_fs_dir: str | None = None,
        log_root: str | None = None,
        images: ImageFsInfoSource | None = None,
        proc: str = "/proc",
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.runtime = runtime
        self.node_name = node_name
        self.root_dir = root_dir
        self.image_fs_dir = image_fs_dir or root_dir
        self.log_root = log_root
        self.images = images
        self.proc = proc
        self.clock_ns = clock_ns
        self.cpu_cache = CpuUsageCache()
        self._sandbox_stats_unimplemented = False

    # -- the whole answer ------------------------------------------------------------

    async def summary(self) -> JSON:
        """The ``Summary``: ``{"node": {...}, "pods": [...]}``."""
        sandboxes = await self.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))
        )
        containers = await self.runtime.list_containers()
        sandbox_stats = await self._list_sandbox_stats()
        if sandbox_stats is None:
            container_stats: Sequence[pb.ContainerStats] = await self.runtime.list_container_stats()
        else:
            container_stats = [c for s in sandbox_stats for c in s.linux.containers]

        log_dirs = self._log_dirs(sandboxes, containers)
        facts = await asyncio.to_thread(self._host_facts, list(log_dirs.values()))
        now = self.clock_ns()
        image_used = await self._image_fs_used()

        seen: set[str] = {_NODE_KEY}
        node = self._node(facts, now, image_used)
        pods = self._pods(
            sandboxes, containers, sandbox_stats, container_stats, log_dirs, facts, now, seen
        )
        self.cpu_cache.keep_only(seen)
        return {"node": node, "pods": pods}

    async def _list_sandbox_stats(self) -> Sequence[pb.PodSandboxStats] | None:
        lister = getattr(self.runtime, "list_pod_sandbox_stats", None)
        if lister is None or self._sandbox_stats_unimplemented:
            return None
        try:
            stats: Sequence[pb.PodSandboxStats] = await lister()
        except Unimplemented:
            self._sandbox_stats_unimplemented = True
            return None
        return stats

    async def _image_fs_used(self) -> int | None:
        if self.images is None:
            return None
        try:
            info = await self.images.image_fs_info()
        except Exception:  # an image service without ImageFsInfo: statvfs alone
            return None
        used = [u.used_bytes.value for u in info.image_filesystems if u.HasField("used_bytes")]
        return sum(used) if used else None

    def _log_dirs(
        self, sandboxes: Sequence[pb.PodSandbox], containers: Sequence[pb.Container]
    ) -> dict[str, str]:
        """Container id -> its log directory (when ``log_root`` is known)."""
        if self.log_root is None:
            return {}
        refs = {s.id: pod_ref(s) for s in sandboxes}
        out: dict[str, str] = {}
        for c in containers:
            ref = refs.get(c.pod_sandbox_id)
            if ref is not None:
                pod_dir = f"{ref.namespace}_{ref.name}_{ref.uid}"
                out[c.id] = os.path.join(self.log_root, pod_dir, c.metadata.name)
        return out

    def _host_facts(self, log_dirs: list[str]) -> _HostFacts:
        """Everything read from the host, in one worker-thread hop."""
        return _HostFacts(
            cpu_ns=host.cpu_usage_ns(self.proc),
            boot_s=host.boot_time_s(self.proc),
            memory=host.memory(self.proc),
            interfaces=_or_empty(host.interfaces, self.proc),
            default_interface=host.default_interface(self.proc),
            root_fs=host.fs_info(self.root_dir),
            image_fs=host.fs_info(self.image_fs_dir),
            pid_max=host.pid_max(self.proc),
            processes=host.process_count(self.proc),
            log_usage={d: host.dir_usage(d) for d in log_dirs},
        )

    # -- the node --------------------------------------------------------------------

    def _node(self, facts: _HostFacts, now: int, image_used: int | None) -> JSON:
        ts = rfc3339(now)
        mem = facts.memory
        ifaces = [
            {
                "name": i.name,
                "rxBytes": i.rx_bytes,
                "rxErrors": i.rx_errors,
                "txBytes": i.tx_bytes,
                "txErrors": i.tx_errors,
            }
            for i in facts.interfaces
        ]
        network: JSON = {"time": ts}
        default = facts.default_interface or "eth0"
        for i in ifaces:
            if i["name"] == default:
                network.update(i)
        network["interfaces"] = ifaces
        return {
            "nodeName": self.node_name,
            "startTime": rfc3339(facts.boot_s * 1_000_000_000),
            "cpu": _drop_none(
                {
                    "time": ts,
                    "usageNanoCores": self.cpu_cache.update(_NODE_KEY, now, facts.cpu_ns),
                    "usageCoreNanoSeconds": facts.cpu_ns,
                }
            ),
            "memory": {
                "time": ts,
                "availableBytes": mem.available,
                "usageBytes": mem.usage,
                "workingSetBytes": mem.working_set,
                "rssBytes": mem.rss,
                "pageFaults": mem.page_faults,
                "majorPageFaults": mem.major_page_faults,
            },
            "network": network,
            "fs": _fs_json(facts.root_fs, now),
            "runtime": {"imageFs": _fs_json(facts.image_fs, now, used=image_used)},
            "rlimit": _drop_none({"time": ts, "maxpid": facts.pid_max, "curproc": facts.processes}),
        }

    # -- pods and containers ---------------------------------------------------------

    def _pods(
        self,
        sandboxes: Sequence[pb.PodSandbox],
        containers: Sequence[pb.Container],
        sandbox_stats: Sequence[pb.PodSandboxStats] | None,
        container_stats: Sequence[pb.ContainerStats],
        log_dirs: Mapping[str, str],
        facts: _HostFacts,
        now: int,
        seen: set[str],
    ) -> list[JSON]:
        by_id = {c.id: c for c in containers}
        # A container the runtime reported in a sandbox's stats belongs to that sandbox
        # even when ListContainers (a moment earlier) did not have it yet.
        sandbox_of = {
            cs.attributes.id: s.attributes.id
            for s in sandbox_stats or ()
            for cs in s.linux.containers
        }
        # The newest running container of each name in each sandbox; the kubelet drops
        # terminated ones (removeTerminatedContainers) so usage is not counted twice.
        newest: dict[tuple[str, str], pb.ContainerStats] = {}
        for cs in container_stats:
            c = by_id.get(cs.attributes.id)
            if c is not None and c.state != pb.CONTAINER_RUNNING:
                continue
            sandbox_id = c.pod_sandbox_id if c is not None else sandbox_of.get(cs.attributes.id, "")
            key = (sandbox_id, cs.attributes.metadata.name)
            prev = newest.get(key)
            created = c.created_at if c is not None else 0
            if prev is None or created >= by_id.get(prev.attributes.id, pb.Container()).created_at:
                newest[key] = cs
        per_sandbox: dict[str, list[pb.ContainerStats]] = {}
        for (sandbox_id, _), cs in newest.items():
            per_sandbox.setdefault(sandbox_id, []).append(cs)
        linux = {s.attributes.id: s.linux for s in sandbox_stats or ()}

        pods: list[JSON] = []
        for sandbox in sandboxes:
            ref = pod_ref(sandbox)
            entries = []
            for cs in sorted(
                per_sandbox.get(sandbox.id, []), key=lambda s: s.attributes.metadata.name
            ):
                seen.add(cs.attributes.id)
                c = by_id.get(cs.attributes.id)
                entries.append(self._container(cs, c, log_dirs.get(cs.attributes.id), facts, now))
            pods.append(self._pod(sandbox, ref, entries, linux.get(sandbox.id), facts, now, seen))
        return pods

    def _cpu(self, key: str, cpu: pb.CpuUsage, now: int) -> JSON:
        ts = cpu.timestamp or now
        usage = _value(cpu, "usage_core_nano_seconds")
        nano_cores = _value(cpu, "usage_nano_cores")
        if nano_cores is None and usage is not None:
            nano_cores = self.cpu_cache.update(key, ts, usage)
        return _drop_none(
            {"time": rfc3339(ts), "usageNanoCores": nano_cores, "usageCoreNanoSeconds": usage}
        )

    @staticmethod
    def _memory(mem: pb.MemoryUsage, now: int) -> JSON:
        return _drop_none(
            {
                "time": rfc3339(mem.timestamp or now),
                "availableBytes": _value(mem, "available_bytes"),
                "usageBytes": _value(mem, "usage_bytes"),
                "workingSetBytes": _value(mem, "working_set_bytes"),
                "rssBytes": _value(mem, "rss_bytes"),
                "pageFaults": _value(mem, "page_faults"),
                "majorPageFaults": _value(mem, "major_page_faults"),
            }
        )

    def _container(
        self,
        cs: pb.ContainerStats,
        c: pb.Container | None,
        log_dir: str | None,
        facts: _HostFacts,
        now: int,
    ) -> JSON:
        layer = cs.writable_layer
        log_used, log_inodes = facts.log_usage.get(log_dir, (0, 0)) if log_dir else (0, 0)
        out: JSON = {"name": cs.attributes.metadata.name}
        if c is not None and c.created_at:
            out["startTime"] = rfc3339(c.created_at)
        out["cpu"] = self._cpu(cs.attributes.id, cs.cpu, now)
        out["memory"] = self._memory(cs.memory, now)
        out["rootfs"] = _fs_json(
            facts.image_fs,
            layer.timestamp or now,
            used=_value(layer, "used_bytes") or 0,
            inodes_used=_value(layer, "inodes_used") or 0,
        )
        out["logs"] = _fs_json(facts.root_fs, now, used=log_used, inodes_used=log_inodes)
        return out

    def _pod(
        self,
        sandbox: pb.PodSandbox,
        ref: PodRef,
        containers: list[JSON],
        linux: pb.LinuxPodSandboxStats | None,
        facts: _HostFacts,
        now: int,
        seen: set[str],
    ) -> JSON:
        out: JSON = {"podRef": ref.to_json(), "startTime": rfc3339(sandbox.created_at or now)}
        out["containers"] = containers
        if linux is not None and linux.HasField("cpu"):
            seen.add(sandbox.id)
            out["cpu"] = self._cpu(sandbox.id, linux.cpu, now)
        else:
            out["cpu"] = _sum(containers, "cpu", ("usageNanoCores", "usageCoreNanoSeconds"), now)
        if linux is not None and linux.HasField("memory"):
            out["memory"] = self._memory(linux.memory, now)
        else:
            out["memory"] = _sum(
                containers,
                "memory",
                ("usageBytes", "workingSetBytes", "rssBytes", "pageFaults", "majorPageFaults"),
                now,
            )
        if linux is not None and linux.HasField("network"):
            out["network"] = _network_json(linux.network, now)
        used = sum(c["rootfs"]["usedBytes"] + c["logs"]["usedBytes"] for c in containers)
        inodes = sum(c["rootfs"]["inodesUsed"] + c["logs"]["inodesUsed"] for c in containers)
        out["ephemeral-storage"] = _fs_json(facts.root_fs, now, used=used, inodes_used=inodes)
        if linux is not None and linux.HasField("process"):
            count = _value(linux.process, "process_count")
            if count is not None:
                out["process_stats"] = {"process_count": count}
        return out


def _or_empty(read: Callable[[str], list[host.Interface]], proc: str) -> list[host.Interface]:
    """The node's interfaces, or none when ``/proc/net/dev`` cannot be read (no netns)."""
    try:
        return read(proc)
    except OSError:
        return []


def _sum(containers: list[JSON], section: str, fields: Sequence[str], now: int) -> JSON:
    """A pod's cpu or memory as the sum of its containers' (no pod-level stats)."""
    out: JSON = {}
    times = [c[section]["time"] for c in containers if section in c]
    out["time"] = max(times) if times else rfc3339(now)
    for name in fields:
        values = [c[section][name] for c in containers if name in c.get(section, {})]
        if values:
            out[name] = sum(values)
    return out
