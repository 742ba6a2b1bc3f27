"""The Summary API built from a fake runtime and a fake /proc tree."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import Unimplemented
from minikubelet.stats import host
from minikubelet.stats.summary import CpuUsageCache, SummaryProvider, pod_ref, rfc3339

S = 1_000_000_000
T0 = 1_800_000_000 * S  # the first scrape, ns since the epoch


def write_proc(root: Path, *, cpu_ticks: int = 1000) -> Path:
    proc = root / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "sys" / "kernel").mkdir(parents=True)
    (proc / "stat").write_text(
        f"cpu  {cpu_ticks} 0 0 5000 7 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\nbtime 1700000000\n"
    )
    (proc / "meminfo").write_text(
        "MemTotal:        8000000 kB\n"
        "MemFree:         2000000 kB\n"
        "MemAvailable:    5000000 kB\n"
        "Inactive(file):  1000000 kB\n"
        "AnonPages:        300000 kB\n"
    )
    (proc / "vmstat").write_text("pgfault 1234\npgmajfault 56\n")
    (proc / "net" / "dev").write_text(
        "Inter-|   Receive                                                |  Transmit\n"
        " face |bytes    packets errs drop fifo frame compressed multicast|bytes ...\n"
        "    lo: 900 9 0 0 0 0 0 0 900 9 0 0 0 0 0 0\n"
        "  eth0: 1000 10 1 0 0 0 0 0 2000 20 2 0 0 0 0 0\n"
        "vethab: 5 1 0 0 0 0 0 0 5 1 0 0 0 0 0 0\n"
        "  cni0: 300 3 0 0 0 0 0 0 400 4 0 0 0 0 0 0\n"
    )
    (proc / "net" / "route").write_text(
        "Iface\tDestination\tGateway\tFlags\n"
        "cni0\t0058A8C0\t00000000\t0001\n"
        "eth0\t00000000\t0101A8C0\t0003\n"
    )
    (proc / "sys" / "kernel" / "pid_max").write_text("4194304\n")
    (proc / "sys" / "kernel" / "threads-max").write_text("62000\n")
    (proc / "loadavg").write_text("0.10 0.20 0.30 2/345 999\n")
    return proc


def sandbox(sid: str, name: str, *, labels_only: bool = False) -> pb.PodSandbox:
    if labels_only:
        return pb.PodSandbox(
            id=sid,
            state=pb.SANDBOX_READY,
            created_at=T0 - 60 * S,
            labels={
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": "ns",
                "io.kubernetes.pod.uid": f"uid-{name}",
            },
        )
    return pb.PodSandbox(
        id=sid,
        metadata=pb.PodSandboxMetadata(name=name, namespace="ns", uid=f"uid-{name}"),
        state=pb.SANDBOX_READY,
        created_at=T0 - 60 * S,
    )


def container(cid: str, sid: str, name: str, *, created: int, running: bool = True) -> pb.Container:
    return pb.Container(
        id=cid,
        pod_sandbox_id=sid,
        metadata=pb.ContainerMetadata(name=name),
        state=pb.CONTAINER_RUNNING if running else pb.CONTAINER_EXITED,
        created_at=created,
    )


def cstats(cid: str, name: str, ts: int, cpu_ns: int, ws: int) -> pb.ContainerStats:
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(id=cid, metadata=pb.ContainerMetadata(name=name)),
        cpu=pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=pb.UInt64Value(value=cpu_ns)),
        memory=pb.MemoryUsage(timestamp=ts, working_set_bytes=pb.UInt64Value(value=ws)),
        writable_layer=pb.FilesystemUsage(
            timestamp=ts, used_bytes=pb.UInt64Value(value=4096), inodes_used=pb.UInt64Value(value=3)
        ),
    )


class FakeRuntime:
    """ListPodSandbox, ListContainers and ListContainerStats from fixed lists."""

    def __init__(self) -> None:
        self.sandboxes: list[pb.PodSandbox] = []
        self.containers: list[pb.Container] = []
        self.stats: list[pb.ContainerStats] = []
        self.sandbox_filters: list[pb.PodSandboxFilter | None] = []

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> Sequence[pb.PodSandbox]:
        self.sandbox_filters.append(filter)
        return self.sandboxes

    async def list_containers(
        self, filter: pb.ContainerFilter | None = None
    ) -> Sequence[pb.Container]:
        return self.containers

    async def list_container_stats(
        self, filter: pb.ContainerStatsFilter | None = None
    ) -> Sequence[pb.ContainerStats]:
        return self.stats


class SandboxStatsRuntime(FakeRuntime):
    """One that also answers ListPodSandboxStats (or says it is unimplemented)."""

    def __init__(self, unimplemented: bool = False) -> None:
        super().__init__()
        self.unimplemented = unimplemented
        self.pod_stats: list[pb.PodSandboxStats] = []
        self.calls = 0

    async def list_pod_sandbox_stats(
        self, filter: pb.PodSandboxStatsFilter | None = None
    ) -> Sequence[pb.PodSandboxStats]:
        self.calls += 1
        if self.unimplemented:
            raise Unimplemented("no", method="ListPodSandboxStats")
        return self.pod_stats


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def provider(
    runtime: FakeRuntime, tmp_path: Path, clock: Clock, **kw: object
) -> tuple[SummaryProvider, Path]:
    proc = write_proc(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    p = SummaryProvider(
        runtime,
        node_name="node1",
        root_dir=str(root),
        proc=str(proc),
        clock_ns=clock,
        **kw,  # type: ignore[arg-type]
    )
    return p, proc


def two_container_runtime() -> FakeRuntime:
    rt = FakeRuntime()
    rt.sandboxes = [sandbox("sb1", "web")]
    rt.containers = [
        container("old", "sb1", "app", created=T0 - 50 * S, running=False),
        container("c1", "sb1", "app", created=T0 - 30 * S),
        container("c2", "sb1", "sidecar", created=T0 - 20 * S),
    ]
    rt.stats = [
        cstats("old", "app", T0, 9 * S, 1),
        cstats("c1", "app", T0, 2 * S, 10 << 20),
        cstats("c2", "sidecar", T0, 1 * S, 5 << 20),
    ]
    return rt


async def test_summary_shape_node_and_pods(tmp_path: Path) -> None:
    clock = Clock()
    rt = two_container_runtime()
    p, _ = provider(rt, tmp_path, clock)
    s = await p.summary()

    assert set(s) == {"node", "pods"}
    node = s["node"]
    assert node["nodeName"] == "node1"
    assert node["startTime"] == "2023-11-14T22:13:20Z"  # btime 1700000000
    assert node["cpu"] == {
        "time": rfc3339(T0),
        "usageCoreNanoSeconds": 1000 * S // host._CLK_TCK,
    }  # one sample: no rate yet
    kib = 1024
    assert node["memory"] == {
        "time": rfc3339(T0),
        "availableBytes": (8000000 - 5000000) * kib,  # capacity - working set
        "usageBytes": 6000000 * kib,  # total - free
        "workingSetBytes": 5000000 * kib,  # usage - inactive file
        "rssBytes": 300000 * kib,
        "pageFaults": 1234,
        "majorPageFaults": 56,
    }
    net = node["network"]
    assert net["name"] == "eth0" and net["rxBytes"] == 1000 and net["txErrors"] == 2
    assert [i["name"] for i in net["interfaces"]] == ["eth0", "cni0"]  # no lo, no veth
    for fs in (node["fs"], node["runtime"]["imageFs"]):
        assert {"availableBytes", "capacityBytes", "usedBytes", "inodes", "inodesFree"} <= set(fs)
        assert fs["capacityBytes"] >= fs["availableBytes"]
    assert node["rlimit"] == {"time": rfc3339(T0), "maxpid": 62000, "curproc": 345}

    [pod] = s["pods"]
    assert pod["podRef"] == {"name": "web", "namespace": "ns", "uid": "uid-web"}
    assert pod["startTime"] == rfc3339(T0 - 60 * S)
    # the exited attempt of "app" is left out; the running one stands for the name
    assert [c["name"] for c in pod["containers"]] == ["app", "sidecar"]
    app = pod["containers"][0]
    assert app["startTime"] == rfc3339(T0 - 30 * S)
    assert app["cpu"] == {"time": rfc3339(T0), "usageCoreNanoSeconds": 2 * S}
    assert app["memory"] == {"time": rfc3339(T0), "workingSetBytes": 10 << 20}
    assert app["rootfs"]["usedBytes"] == 4096 and app["rootfs"]["inodesUsed"] == 3
    assert set(app["logs"]) >= {"availableBytes", "capacityBytes", "usedBytes"}
    assert pod["cpu"]["usageCoreNanoSeconds"] == 3 * S
    assert pod["memory"]["workingSetBytes"] == 15 << 20
    assert pod["ephemeral-storage"]["usedBytes"] == 2 * 4096
    # only ready sandboxes are asked for
    f = rt.sandbox_filters[0]
    assert f is not None and f.state.state == pb.SANDBOX_READY


async def test_usage_nano_cores_from_two_samples(tmp_path: Path) -> None:
    clock = Clock()
    rt = two_container_runtime()
    p, proc = provider(rt, tmp_path, clock)
    await p.summary()

    # 10 s later: app used 5 more cpu-seconds (0.5 cores), sidecar 1 more (0.1 cores)
    clock.now = T0 + 10 * S
    rt.stats = [
        cstats("c1", "app", T0 + 10 * S, 7 * S, 10 << 20),
        cstats("c2", "sidecar", T0 + 10 * S, 2 * S, 5 << 20),
    ]
    (proc / "stat").write_text(
        f"cpu  {1000 + 15 * host._CLK_TCK} 0 0 5000 7 0 0 0 0 0\nbtime 1700000000\n"
    )
    s = await p.summary()
    app, sidecar = s["pods"][0]["containers"]
    assert app["cpu"]["usageNanoCores"] == 500_000_000
    assert sidecar["cpu"]["usageNanoCores"] == 100_000_000
    assert s["pods"][0]["cpu"]["usageNanoCores"] == 600_000_000
    assert s["node"]["cpu"]["usageNanoCores"] == 1_500_000_000  # 15 cpu-s in 10 s

    # a restarted container (counter back to a small value) has no rate this time
    clock.now = T0 + 20 * S
    rt.stats = [cstats("c1", "app", T0 + 20 * S, 1 * S, 1)]
    s = await p.summary()
    assert "usageNanoCores" not in s["pods"][0]["containers"][0]["cpu"]


async def test_runtime_rate_is_kept_when_given(tmp_path: Path) -> None:
    rt = two_container_runtime()
    rt.stats[1].cpu.usage_nano_cores.value = 42
    p, _ = provider(rt, tmp_path, Clock())
    s = await p.summary()
    assert s["pods"][0]["containers"][0]["cpu"]["usageNanoCores"] == 42


def test_cpu_cache_repeated_sample_and_forgetting() -> None:
    cache = CpuUsageCache()
    assert cache.update("a", 1 * S, 0) is None
    assert cache.update("a", 3 * S, 1 * S) == 500_000_000
    assert cache.update("a", 3 * S, 1 * S) == 500_000_000  # same sample: the last rate
    cache.keep_only(set())
    assert cache.update("a", 4 * S, 2 * S) is None


async def test_pod_named_from_labels_and_sandbox_stats_used(tmp_path: Path) -> None:
    rt = SandboxStatsRuntime()
    rt.sandboxes = [sandbox("sb1", "db", labels_only=True)]
    rt.containers = [container("c1", "sb1", "pg", created=T0 - S)]
    rt.stats = []  # ListContainerStats must not be needed
    rt.pod_stats = [
        pb.PodSandboxStats(
            attributes=pb.PodSandboxAttributes(id="sb1"),
            linux=pb.LinuxPodSandboxStats(
                cpu=pb.CpuUsage(timestamp=T0, usage_core_nano_seconds=pb.UInt64Value(value=7 * S)),
                memory=pb.MemoryUsage(timestamp=T0, working_set_bytes=pb.UInt64Value(value=99)),
                network=pb.NetworkUsage(
                    timestamp=T0,
                    default_interface=pb.NetworkInterfaceUsage(
                        name="eth0", rx_bytes=pb.UInt64Value(value=11)
                    ),
                    interfaces=[
                        pb.NetworkInterfaceUsage(name="eth0", rx_bytes=pb.UInt64Value(value=11))
                    ],
                ),
                process=pb.ProcessUsage(timestamp=T0, process_count=pb.UInt64Value(value=4)),
                containers=[cstats("c1", "pg", T0, 6 * S, 90)],
            ),
        )
    ]
    p, _ = provider(rt, tmp_path, Clock())
    s = await p.summary()
    [pod] = s["pods"]
    assert pod["podRef"] == {"name": "db", "namespace": "ns", "uid": "uid-db"}
    assert pod["cpu"]["usageCoreNanoSeconds"] == 7 * S
    assert pod["memory"] == {"time": rfc3339(T0), "workingSetBytes": 99}
    assert pod["network"]["name"] == "eth0" and pod["network"]["rxBytes"] == 11
    assert pod["network"]["interfaces"] == [{"name": "eth0", "rxBytes": 11}]
    assert pod["process_stats"] == {"process_count": 4}
    assert [c["name"] for c in pod["containers"]] == ["pg"]


async def test_unimplemented_sandbox_stats_falls_back_once(tmp_path: Path) -> None:
    rt = SandboxStatsRuntime(unimplemented=True)
    rt.sandboxes = [sandbox("sb1", "web")]
    rt.containers = [container("c1", "sb1", "app", created=T0)]
    rt.stats = [cstats("c1", "app", T0, S, 1)]
    p, _ = provider(rt, tmp_path, Clock())
    for _ in range(2):
        s = await p.summary()
        assert s["pods"][0]["containers"][0]["cpu"]["usageCoreNanoSeconds"] == S
    assert rt.calls == 1


async def test_log_usage_and_image_fs_info(tmp_path: Path) -> None:
    class Images:
        async def image_fs_info(self) -> pb.ImageFsInfoResponse:
            return pb.ImageFsInfoResponse(
                image_filesystems=[pb.FilesystemUsage(used_bytes=pb.UInt64Value(value=777))]
            )

    logs = tmp_path / "logs"
    app_logs = logs / "ns_web_uid-web" / "app"
    app_logs.mkdir(parents=True)
    (app_logs / "0.log").write_bytes(b"x" * 10000)
    rt = two_container_runtime()
    p, _ = provider(rt, tmp_path, Clock(), log_root=str(logs), images=Images())
    s = await p.summary()
    assert s["node"]["runtime"]["imageFs"]["usedBytes"] == 777
    app, sidecar = s["pods"][0]["containers"]
    assert app["logs"]["usedBytes"] >= 10000 and app["logs"]["inodesUsed"] == 1
    assert sidecar["logs"]["usedBytes"] == 0
    assert s["pods"][0]["ephemeral-storage"]["usedBytes"] == 2 * 4096 + app["logs"]["usedBytes"]


def test_pod_ref_prefers_metadata() -> None:
    sb = sandbox("x", "a")
    sb.labels["io.kubernetes.pod.name"] = "other"
    assert pod_ref(sb).name == "a"


def test_memory_never_negative(tmp_path: Path) -> None:
    proc = write_proc(tmp_path)
    (proc / "meminfo").write_text("MemTotal: 100 kB\nMemFree: 10 kB\nInactive(file): 500 kB\n")
    m = host.memory(str(proc))
    assert m.working_set == 0 and m.available == 100 * 1024


@pytest.mark.parametrize("loadavg", ["", "garbage"])
def test_process_count_without_loadavg(tmp_path: Path, loadavg: str) -> None:
    proc = write_proc(tmp_path)
    (proc / "loadavg").write_text(loadavg)
    for pid in ("1", "42"):
        (proc / pid).mkdir()
    assert host.process_count(str(proc)) == 2


async def test_container_only_in_sandbox_stats_still_counts(tmp_path: Path) -> None:
    rt = SandboxStatsRuntime()
    rt.sandboxes = [sandbox("sb1", "web")]
    rt.containers = []  # ListContainers ran before the container was created
    rt.pod_stats = [
        pb.PodSandboxStats(
            attributes=pb.PodSandboxAttributes(id="sb1"),
            linux=pb.LinuxPodSandboxStats(containers=[cstats("new", "app", T0, S, 1)]),
        )
    ]
    p, _ = provider(rt, tmp_path, Clock())
    [pod] = (await p.summary())["pods"]
    [c] = pod["containers"]
    assert c["name"] == "app" and "startTime" not in c
    assert pod["cpu"]["usageCoreNanoSeconds"] == S  # summed: no pod-level cpu given
