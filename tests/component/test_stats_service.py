"""The node's stats as the kubelet API will serve them (``NodeStats``), over the simulated
runtime through the real CRI client: the Summary from ListPodSandboxStats, ``/metrics``
fed from the CRI trace and from the core (PLEG, pod start), ``/metrics/resource``; and
on the native runtime, a busy container's cpu time as its cgroup counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from minikubelet.cli.run import build_kubelet
from minikubelet.cri.client import CRIClient
from minikubelet.cri.services import RuntimeHandlers
from minikubelet.cri.trace import TraceRecorder
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import Unavailable
from minikubelet.kubelet import KubeletConfig
from minikubelet.stats.metrics import KubeletMetrics
from minikubelet.stats.service import NodeStats, build_node_stats
from runtimes.base.listener import serving
from runtimes.fake.images import FakeImages
from runtimes.fake.server import FakeRuntime
from tests.component.test_native_runtime import Server
from tests.contract.pods import container_config, sandbox_config
from tests.harness.fixtures import HarnessImages
from tests.harness.native import cleanup
from tests.harness.registry import LocalRegistry
from tests.harness.wait import wait_until

IMAGE = "registry.test/app:1"


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


async def _pod(cri: CRIClient, log_dir: Path, name: str, containers: Sequence[str]) -> str:
    sb = sandbox_config(log_dir, name=name)
    sandbox_id = await cri.run_pod_sandbox(sb)
    for c in containers:
        config = container_config(IMAGE, c, ["sleep", "60"])
        cid = await cri.create_container(sandbox_id, config, sb)
        await cri.start_container(cid)
    return sandbox_id


def _node_stats(cri: CRIClient, root: Path, metrics: KubeletMetrics | None = None) -> NodeStats:
    return build_node_stats(
        runtime=cri,
        node_name="node1",
        root_dir=root,
        log_root=root / "pod-logs",
        trace=cri.recorder,
        metrics=metrics,
    )


def _sample(text: str, series: str) -> float:
    """The value of one series (name and labels exactly as written) in Prometheus text."""
    found = re.search(rf"^{re.escape(series)} (\S+)$", text, re.MULTILINE)
    assert found, f"{series} not in:\n{text}"
    return float(found.group(1))


async def test_the_client_lists_pod_sandbox_stats(cri: CRIClient, tmp_path: Path) -> None:
    one = await _pod(cri, tmp_path, "one", ["a", "b"])
    two = await _pod(cri, tmp_path, "two", ["c"])

    stats = {s.attributes.id: s for s in await cri.list_pod_sandbox_stats()}
    assert stats.keys() == {one, two}
    assert stats[one].attributes.metadata.name == "one"
    assert sorted(c.attributes.metadata.name for c in stats[one].linux.containers) == ["a", "b"]
    assert stats[one].linux.memory.working_set_bytes.value > 0

    [only] = await cri.list_pod_sandbox_stats(pb.PodSandboxStatsFilter(id=two))
    assert only.attributes.id == two
    assert (await cri.pod_sandbox_stats(two)).attributes.metadata.name == "two"

    assert cri.recorder is not None
    methods = [r.method for r in cri.recorder.records()]
    assert methods.count("ListPodSandboxStats") == 2 and "PodSandboxStats" in methods


async def test_summary_metrics_and_resource_metrics(cri: CRIClient, tmp_path: Path) -> None:
    stats = _node_stats(cri, tmp_path)
    await _pod(cri, tmp_path, "burner", ["app", "helper"])
    await _pod(cri, tmp_path, "single", ["c"])

    first = await stats.summary()
    await asyncio.sleep(0.2)
    summary = json.loads(json.dumps(await stats.summary()))  # plain JSON all through

    assert summary["node"]["nodeName"] == "node1"
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    assert pods.keys() == {"burner", "single"}
    burner = pods["burner"]
    assert burner["podRef"]["namespace"] == "contract" and burner["podRef"]["uid"]
    assert [c["name"] for c in burner["containers"]] == ["app", "helper"]
    for c in burner["containers"]:
        assert c["memory"]["workingSetBytes"] > 0
        assert c["cpu"]["usageCoreNanoSeconds"] >= 0
        assert c["cpu"]["usageNanoCores"] >= 0  # the second sample gives a rate
    # the pod's own numbers come from its sandbox's stats (ListPodSandboxStats)
    assert burner["memory"]["workingSetBytes"] == sum(
        c["memory"]["workingSetBytes"] for c in burner["containers"]
    )
    assert "usageNanoCores" in burner["cpu"]
    [before] = [p for p in first["pods"] if p["podRef"]["name"] == "burner"]
    assert burner["cpu"]["usageCoreNanoSeconds"] >= before["cpu"]["usageCoreNanoSeconds"]

    text = stats.metrics_text()
    assert _sample(text, 'kubelet_runtime_operations_total{operation_type="list_podsandbox"}') == 2
    assert (
        _sample(text, 'kubelet_runtime_operations_total{operation_type="list_podsandbox_stats"}')
        == 2
    )
    assert _sample(text, 'kubelet_runtime_operations_total{operation_type="start_container"}') == 3
    assert "list_container_stats" not in text  # the pod-level path needs no ListContainerStats
    assert (
        _sample(
            text,
            'kubelet_runtime_operations_duration_seconds_count{operation_type="list_podsandbox"}',
        )
        == 2
    )
    assert "\nkubelet_running_pods 0\n" in text  # nothing feeds it but the PLEG

    resource = await stats.resource_metrics_text()
    for pod, container in (("burner", "app"), ("burner", "helper"), ("single", "c")):
        labels = f'container="{container}",namespace="contract",pod="{pod}"'
        assert f"container_cpu_usage_seconds_total{{{labels}}} " in resource
        assert f"container_memory_working_set_bytes{{{labels}}} " in resource
    assert 'pod_memory_working_set_bytes{namespace="contract",pod="burner"} ' in resource
    assert "\nnode_cpu_usage_seconds_total " in resource
    assert "\nscrape_error 0\n" in resource and "\nresource_scrape_error 0\n" in resource


class _Away:
    """A runtime that is not there."""

    async def list_pod_sandbox(
        self, filter: pb.PodSandboxFilter | None = None
    ) -> Sequence[pb.PodSandbox]:
        raise Unavailable("connection refused")

    async def list_containers(
        self, filter: pb.ContainerFilter | None = None
    ) -> Sequence[pb.Container]:
        raise Unavailable("connection refused")

    async def list_container_stats(
        self, filter: pb.ContainerStatsFilter | None = None
    ) -> Sequence[pb.ContainerStats]:
        raise Unavailable("connection refused")

    async def image_fs_info(self) -> pb.ImageFsInfoResponse:
        raise Unavailable("connection refused")


async def test_a_failed_scrape_is_the_error_gauges(tmp_path: Path) -> None:
    stats = build_node_stats(
        runtime=_Away(), node_name="n", root_dir=tmp_path, log_root=None, trace=None
    )
    with pytest.raises(Unavailable):
        await stats.summary()
    text = await stats.resource_metrics_text()
    assert "\nscrape_error 1\n" in text and "\nresource_scrape_error 1\n" in text
    assert "container_cpu_usage_seconds_total" not in text
    assert stats.metrics_text().startswith("# HELP ")


async def test_close_stops_counting_the_trace(cri: CRIClient, tmp_path: Path) -> None:
    stats = _node_stats(cri, tmp_path)
    await cri.list_pod_sandbox()
    stats.close()
    stats.close()
    await cri.list_pod_sandbox()
    text = stats.metrics_text()
    assert _sample(text, 'kubelet_runtime_operations_total{operation_type="list_podsandbox"}') == 1


def test_a_runtime_without_the_stats_calls_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="CRI stats"):
        build_node_stats(
            runtime=object(),  # type: ignore[arg-type]
            node_name="n",
            root_dir=tmp_path,
            log_root=None,
            trace=None,
        )


MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: multi
spec:
  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "sleep 3600"]
    - name: helper
      image: busybox:1.36
      command: ["sh", "-c", "sleep 3600"]
"""


async def test_a_kubelet_feeds_the_core_families(cri: CRIClient, tmp_path: Path) -> None:
    """A whole kubelet over the simulated runtime: its PLEG and its syncs fill ``/metrics``
    (relists, pod start, running pods and containers) beside the CRI counters."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "multi.yaml").write_text(MANIFEST)
    config = KubeletConfig(
        node_name="node1",
        root_dir=tmp_path / "root",
        manifests=manifests,
        relist_period=0.1,
        file_check_period=0.2,
        serve_api=False,
    )
    assert cri.recorder is not None
    kubelet = build_kubelet(config, RuntimeHandlers(cri), trace=cri.recorder)
    metrics = KubeletMetrics()
    # what build_kubelet passes as the PLEG's and the Kubelet's metrics=
    kubelet.pleg.metrics = metrics
    kubelet.metrics = metrics
    stats = _node_stats(cri, config.root_dir, metrics)

    def running() -> bool:
        status = kubelet.status_manager.get(next(iter(kubelet.pods.all())).uid) or {}
        return status.get("phase") == "Running"

    task = asyncio.create_task(kubelet.run())
    try:
        await wait_until(running, timeout=20, ignoring=(StopIteration,), message="multi running")
        await wait_until(
            lambda: metrics.running_containers.value(container_state="running") == 2,
            timeout=10,
            message="the PLEG to see both containers",
        )
        text = stats.metrics_text()
        summary = await stats.summary()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kubelet.shutdown_pods(0)
        await kubelet.release_host()

    assert metrics.pod_start_duration.count() == 1
    assert 0 < _sample(text, "kubelet_pod_start_duration_seconds_sum") < 20
    assert _sample(text, "kubelet_pleg_relist_duration_seconds_count") >= 2
    assert _sample(text, "kubelet_pleg_relist_interval_seconds_count") >= 1
    assert _sample(text, "kubelet_running_pods") == 1
    assert _sample(text, 'kubelet_running_containers{container_state="running"}') == 2
    assert _sample(text, 'kubelet_running_containers{container_state="exited"}') == 0
    assert _sample(text, 'kubelet_runtime_operations_total{operation_type="run_podsandbox"}') == 1
    assert _sample(text, 'kubelet_runtime_operations_total{operation_type="list_podsandbox"}') >= 2

    [pod] = summary["pods"]
    assert pod["podRef"]["name"] == "multi-node1"  # a static pod is named after its node
    assert sorted(c["name"] for c in pod["containers"]) == ["app", "helper"]


# -- the native runtime: real processes in real cgroups ------------------------------------


@pytest.fixture
def native(local_registry: LocalRegistry, tmp_path: Path) -> Iterator[Server]:
    run_root = Path(tempfile.mkdtemp(prefix="mk-nst-", dir="/run"))
    sock = Path(tempfile.mkdtemp(prefix="mk-nss-", dir="/tmp")) / "native.sock"
    server = Server(
        f"unix://{sock}", tmp_path / "state", run_root, local_registry.host, tmp_path / "native.log"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        cleanup(server.root, server.run_root)
        assert "Traceback" not in server.log(), server.log()[-5000:]


async def test_a_busy_containers_cpu_grows_on_the_native_runtime(
    native: Server, test_images: HarnessImages, tmp_path: Path
) -> None:
    async with CRIClient(native.endpoint, timeout=60, recorder=TraceRecorder()) as cri:
        await cri.pull_image(test_images.busybox)
        stats = _node_stats(cri, tmp_path)
        sb = sandbox_config(tmp_path / "logs", name="burner")
        sandbox_id = await cri.run_pod_sandbox(sb)
        try:
            for name, command in (("busy", "while :; do :; done"), ("idle", "sleep 3600")):
                config = container_config(test_images.busybox, name, ["sh", "-c", command])
                await cri.start_container(await cri.create_container(sandbox_id, config, sb))

            first = await stats.summary()
            await asyncio.sleep(1.0)
            second = await stats.summary()
        finally:
            await cri.stop_pod_sandbox(sandbox_id)
            await cri.remove_pod_sandbox(sandbox_id)

    before, after = _containers(first, "burner"), _containers(second, "burner")
    busy = (
        after["busy"]["cpu"]["usageCoreNanoSeconds"] - before["busy"]["cpu"]["usageCoreNanoSeconds"]
    )
    idle = (
        after["idle"]["cpu"]["usageCoreNanoSeconds"] - before["idle"]["cpu"]["usageCoreNanoSeconds"]
    )
    assert busy > 100_000_000, (before, after)  # a spinning shell for a second
    assert idle < busy / 10, (before, after)
    assert after["busy"]["cpu"]["usageNanoCores"] > 100_000_000  # the rate of the two samples
    assert after["busy"]["memory"]["workingSetBytes"] > 0
    [pod] = [p for p in second["pods"] if p["podRef"]["name"] == "burner"]
    assert pod["cpu"]["usageCoreNanoSeconds"] >= after["busy"]["cpu"]["usageCoreNanoSeconds"]


def _containers(summary: dict[str, Any], pod_name: str) -> dict[str, Any]:
    """A pod's containers in a Summary, by name."""
    [pod] = [p for p in summary["pods"] if p["podRef"]["name"] == pod_name]
    return {c["name"]: c for c in pod["containers"]}
