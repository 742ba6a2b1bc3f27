"""The Summary and /metrics/resource over the simulated runtime, through the real CRI client.

The fake runtime reports cumulative cpu time and a working set for running
containers (ListContainerStats). The provider here sees the client without its
ListPodSandboxStats, so this is the ListContainerStats path the kubelet takes with a
runtime that has no pod-level CRI stats (the other path: tests/component/test_stats_service.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import TraceRecorder
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.stats.metrics import KubeletMetrics, TraceMetrics, resource_metrics
from minikubelet.stats.summary import SummaryProvider
from runtimes.base.listener import serving
from runtimes.fake.images import FakeImages
from runtimes.fake.server import FakeRuntime
from tests.contract.pods import container_config, sandbox_config

IMAGE = "registry.test/app:1"


class WithoutSandboxStats:
    """The client's listings, without ListPodSandboxStats."""

    def __init__(self, cri: CRIClient) -> None:
        self.cri = cri

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> Sequence[pb.PodSandbox]:
        return await self.cri.list_pod_sandbox(filter)

    async def list_containers(
        self, filter: pb.ContainerFilter | None = None
    ) -> Sequence[pb.Container]:
        return await self.cri.list_containers(filter)

    async def list_container_stats(
        self, filter: pb.ContainerStatsFilter | None = None
    ) -> Sequence[pb.ContainerStats]:
        return await self.cri.list_container_stats(filter)


@pytest.fixture
async def cri(tmp_path: Path) -> AsyncIterator[CRIClient]:
    images = FakeImages()
    runtime = FakeRuntime(images)
    sock = tmp_path / "run" / "fake.sock"
    runner = asyncio.create_task(runtime.run())
    try:
        async with (
            serving(f"unix://{sock}", runtime, images, grace=0.5),
            CRIClient(f"unix://{sock}", recorder=TraceRecorder()) as client,
        ):
            await client.pull_image(IMAGE)
            yield client
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_summary_and_resource_metrics_over_the_fake_runtime(
    cri: CRIClient, tmp_path: Path
) -> None:
    metrics = KubeletMetrics()
    assert cri.recorder is not None
    cri.recorder.subscribe(TraceMetrics(metrics).record)

    sb = sandbox_config(tmp_path, name="burner")
    sandbox_id = await cri.run_pod_sandbox(sb)
    cid = await cri.create_container(sandbox_id, container_config(IMAGE, "c", ["sleep", "60"]), sb)
    await cri.start_container(cid)

    provider = SummaryProvider(
        WithoutSandboxStats(cri),
        node_name="node1",
        root_dir=str(tmp_path),
        log_root=str(tmp_path),
        images=cri,
    )
    first = await provider.summary()
    await asyncio.sleep(0.2)
    second = json.loads(json.dumps(await provider.summary()))  # plain JSON all through

    [pod] = [p for p in second["pods"] if p["podRef"]["name"] == "burner"]
    assert pod["podRef"]["namespace"] == "contract" and pod["podRef"]["uid"]
    [c] = pod["containers"]
    assert c["name"] == "c" and "startTime" in c
    assert c["memory"]["workingSetBytes"] > 0
    assert (
        c["cpu"]["usageCoreNanoSeconds"]
        >= first["pods"][0]["containers"][0]["cpu"]["usageCoreNanoSeconds"]
    )
    assert c["cpu"]["usageNanoCores"] >= 0  # the second sample gives a rate
    assert c["rootfs"]["usedBytes"] == 4096
    assert second["node"]["cpu"]["usageCoreNanoSeconds"] > 0
    assert second["node"]["memory"]["workingSetBytes"] > 0
    assert second["node"]["rlimit"]["curproc"] > 0

    text = resource_metrics(second)
    assert 'container_cpu_usage_seconds_total{container="c",namespace="contract",pod="burner"}' in (
        text
    )
    assert "\nscrape_error 0\n" in text

    ops = metrics.render()
    assert 'kubelet_runtime_operations_total{operation_type="list_container_stats"} 2' in ops
    assert 'kubelet_runtime_operations_total{operation_type="start_container"} 1' in ops


async def test_summary_with_nothing_running(cri: CRIClient, tmp_path: Path) -> None:
    provider = SummaryProvider(cri, node_name="node1", root_dir=str(tmp_path))
    s = await provider.summary()
    assert s["pods"] == []
    assert s["node"]["nodeName"] == "node1"
