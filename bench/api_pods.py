"""Pods through a real API server onto a minikubelet node: created, until seen Running.

    python -m bench.api_pods [--runtime fake|native|both] [--batch 100] [--singles 10]

Starts a control plane on loopback (etcd, kube-apiserver, controller-manager,
scheduler: tests/harness/controlplane.py) and a node (``minikubelet run --kubeconfig``
as ``system:node:NAME``). Each pod is created through the API with ``nodeName`` set
(so the figure is the node's, not the scheduler's) and timed from its create call
until a watch of the API server sees it ``Running``, as a person watching
``kubectl get pods -w`` would. Prints p50/p99 for single pods one after another and
for a batch created at once, on the simulated and the native runtime, and the Lease
renewal period the node achieved meanwhile. Goal: p99 within 2 s for 100 pods at once
on the simulated runtime (the Kubernetes pod-startup SLO is 5 s p99 without pulls).
Needs root for the native runtime (runc, conmon), etcd-server and the control plane's
binaries (scripts/install-deps, ../shared/bin).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from tests.harness.controlplane import ControlPlane, find_binaries
from tests.harness.images import build_busybox_image, push_image
from tests.harness.registry import LocalRegistry

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def pod(name: str, node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"bench": "api-pods"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}],
        },
    }


class Watcher:
    """One watch of the bench's pods: when each was first seen Running."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self._core = k8s.CoreV1Api(api)
        self.running: dict[str, float] = {}
        self._changed = asyncio.Event()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        listing: Any = await self._core.list_namespaced_pod(
            "default", label_selector="bench=api-pods", _preload_content=False
        )
        async with listing:
            version = (await listing.json())["metadata"]["resourceVersion"]
        while True:
            response: Any = await self._core.list_namespaced_pod(
                "default",
                label_selector="bench=api-pods",
                watch=True,
                resource_version=version,
                timeout_seconds=600,
                _preload_content=False,
            )
            async with response:
                self.ready.set()
                async for line in response.content:
                    event = json.loads(line)
                    obj = event.get("object", {})
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    name = obj.get("metadata", {}).get("name", "")
                    if obj.get("status", {}).get("phase") == "Running":
                        self.running.setdefault(name, time.perf_counter())
                        self._changed.set()

    async def wait(self, names: list[str], timeout: float = 300) -> None:
        async with asyncio.timeout(timeout):
            while not all(n in self.running for n in names):
                self._changed.clear()
                await self._changed.wait()


async def delete_all(core: k8s.CoreV1Api) -> None:
    await core.delete_collection_namespaced_pod(
        "default", label_selector="bench=api-pods", grace_period_seconds=0
    )
    while (await core.list_namespaced_pod("default", label_selector="bench=api-pods")).items:  # noqa: ASYNC110 - polling the API server, nothing local to wait on
        await asyncio.sleep(0.2)


async def measure(
    cp: ControlPlane, node: str, singles: int, batch: int, tag: str
) -> dict[str, Any]:
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(cp.admin_kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as api:
        core = k8s.CoreV1Api(api)
        watcher = Watcher(api)
        task = asyncio.create_task(watcher.run())
        try:
            await watcher.ready.wait()
            single: list[float] = []
            for i in range(singles):
                name = f"{tag}-one-{i}"
                t0 = time.perf_counter()
                await core.create_namespaced_pod("default", pod(name, node))  # type: ignore[arg-type]
                await watcher.wait([name])
                single.append(watcher.running[name] - t0)
            await delete_all(core)
            names = [f"{tag}-batch-{i}" for i in range(batch)]
            started: dict[str, float] = {}

            async def create(name: str) -> None:
                started[name] = time.perf_counter()
                await core.create_namespaced_pod("default", pod(name, node))  # type: ignore[arg-type]

            t0 = time.perf_counter()
            await asyncio.gather(*(create(n) for n in names))
            await watcher.wait(names)
            total = max(watcher.running[n] for n in names) - t0
            each = [watcher.running[n] - started[n] for n in names]
            await delete_all(core)
            lease = await k8s.CoordinationV1Api(api).read_namespaced_lease(node, "kube-node-lease")
            renewed: datetime = lease.spec.renew_time
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return {"single": single, "batch": each, "batch_total": total, "renewed": renewed}


async def lease_period(cp: ControlPlane, node: str, samples: int = 4) -> float:
    """The mean time between two renewals of the node's Lease, watched for a while."""
    configuration = k8s.Configuration()
    await k8s_config.load_kube_config(
        config_file=str(cp.admin_kubeconfig), client_configuration=configuration
    )
    async with k8s.ApiClient(configuration) as api:
        leases = k8s.CoordinationV1Api(api)
        seen: list[datetime] = []
        while len(seen) < samples:
            lease = await leases.read_namespaced_lease(node, "kube-node-lease")
            renew: datetime = lease.spec.renew_time
            if not seen or renew != seen[-1]:
                seen.append(renew)
            await asyncio.sleep(0.5)
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(seen)]
    return statistics.mean(gaps)


@contextlib.asynccontextmanager
async def node_process(
    cp: ControlPlane, work: Path, runtime: str, name: str, runtime_args: list[str]
) -> AsyncIterator[subprocess.Popen[bytes]]:
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115, ASYNC230 - owned by the process
    proc = subprocess.Popen(  # noqa: ASYNC220 - a long-lived node, started once
        [
            sys.executable,
            "-m",
            "minikubelet",
            "run",
            "--runtime",
            runtime,
            *(f"--runtime-arg={a}" for a in runtime_args),
            "--root-dir",
            str(work / name),
            "--node-name",
            name,
            "--kubeconfig",
            str(cp.node_kubeconfig(name)),
            "--port",
            "0",
            "--manifests",
            str(work / "no-manifests"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            done = cp.kubectl("get", "node", name, "-o", "jsonpath={.status.conditions[-1].status}")
            if done.returncode == 0 and "True" in done.stdout:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {runtime} node did not get Ready; see {log.name}")
            await asyncio.sleep(0.5)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
        cp.kubectl("delete", "node", name, "--wait=false")


def report(label: str, figures: dict[str, Any], lease: float) -> None:
    single, batch = figures["single"], figures["batch"]
    print(
        f"{label:<8} 1 pod:    p50 {statistics.median(single):6.3f} s   "
        f"p99 {percentile(single, 0.99):6.3f} s   ({len(single)} pods one after another)"
    )
    print(
        f"{label:<8} {len(batch)} pods: p50 {statistics.median(batch):6.3f} s   "
        f"p99 {percentile(batch, 0.99):6.3f} s   all Running after {figures['batch_total']:.2f} s"
    )
    print(f"{label:<8} Lease renewed every {lease:.1f} s (goal 10 s)")


async def main_async(args: argparse.Namespace) -> None:
    binaries = find_binaries()
    if isinstance(binaries, str):
        raise SystemExit(binaries)
    work = Path(tempfile.mkdtemp(prefix="bench-api-pods-"))
    (work / "no-manifests").mkdir()
    runtimes = ["fake", "native"] if args.runtime == "both" else [args.runtime]
    with ControlPlane(binaries, work / "cp") as cp:
        registry: LocalRegistry | None = None
        try:
            for runtime in runtimes:
                extra: list[str] = []
                if runtime == "native":
                    registry = LocalRegistry(workdir=work / "registry")
                    registry.start()
                    image = build_busybox_image(work / "cache", tag="1.36")
                    push_image(image, registry.host, "library/busybox", "1.36")
                    extra = [f"--registry-mirror=docker.io=http://{registry.host}"]
                name = f"bench-{runtime}"
                async with node_process(cp, work, runtime, name, extra):
                    figures = await measure(cp, name, args.singles, args.batch, runtime)
                    lease = await lease_period(cp, name)
                report(runtime, figures, lease)
        finally:
            if registry is not None:
                registry.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", choices=["fake", "native", "both"], default="both")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--singles", type=int, default=10)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
