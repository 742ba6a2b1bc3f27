"""The simulated runtime under load, measured over the real CRI client and socket.

    python -m bench.cri_fake [--sizes 1000,10000] [--round-trips 300]

Prints ListContainers / ListPodSandbox latency (median and p99 of repeated
calls) with 1,000 and 10,000 containers present, and how many
create/start/stop/remove round trips per second one client achieves.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb

IMAGE = "registry.example/bench/app:1"
PER_POD = 100


def _sandbox(n: int) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"bench-{n}", namespace="bench", uid=f"u{n}"),
        log_directory="",
        labels={"app": "bench", "shard": str(n % 10)},
    )


def _container(name: str) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=IMAGE),
        command=["sleep", "infinity"],
        labels={"io.kubernetes.container.name": name, "app": "bench"},
    )


async def _timed(fn: Callable[[], Awaitable[object]], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def _fmt(samples: list[float]) -> str:
    p99 = sorted(samples)[max(0, int(len(samples) * 0.99) - 1)]
    return f"median {statistics.median(samples):7.2f} ms   p99 {p99:7.2f} ms"


async def _populate(cri: CRIClient, total: int, pods: list[tuple[str, pb.PodSandboxConfig]]) -> int:
    """Grow to ``total`` containers, 100 per pod, half of them running."""
    have = len(pods) * PER_POD
    while have < total:
        config = _sandbox(len(pods))
        sandbox_id = await cri.run_pod_sandbox(config)
        pods.append((sandbox_id, config))

        async def one(i: int, sid: str = sandbox_id, cfg: pb.PodSandboxConfig = config) -> None:
            cid = await cri.create_container(sid, _container(f"c{i}"), cfg)
            if i % 2 == 0:
                await cri.start_container(cid)

        await asyncio.gather(*(one(i) for i in range(PER_POD)))
        have += PER_POD
    return have


async def run(sizes: list[int], round_trips: int, endpoint: str) -> None:
    async with CRIClient(endpoint) as cri:
        await cri.pull_image(IMAGE)
        pods: list[tuple[str, pb.PodSandboxConfig]] = []
        print(f"{'containers':>10}  {'call':<36} latency")
        for size in sizes:
            t0 = time.perf_counter()
            await _populate(cri, size, pods)
            fill = time.perf_counter() - t0
            running = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
            some_pod = pb.ContainerFilter(pod_sandbox_id=pods[0][0])
            labelled = pb.PodSandboxFilter(label_selector={"shard": "3"})
            cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
                ("ListContainers (all)", functools.partial(cri.list_containers)),
                ("ListContainers (state=RUNNING)", functools.partial(cri.list_containers, running)),
                ("ListContainers (one sandbox)", functools.partial(cri.list_containers, some_pod)),
                ("ListPodSandbox (all)", functools.partial(cri.list_pod_sandbox)),
                (
                    "ListPodSandbox (label shard=3)",
                    functools.partial(cri.list_pod_sandbox, labelled),
                ),
            ]
            for name, fn in cases:
                await fn()  # warm
                print(f"{size:>10}  {name:<36} {_fmt(await _timed(fn, 30))}")
            print(
                f"{size:>10}  {'(fill: create+start over CRI)':<36} {size / fill:7.0f} containers/s"
            )

        sandbox_id, config = pods[0]
        t0 = time.perf_counter()
        for i in range(round_trips):
            cid = await cri.create_container(sandbox_id, _container(f"rt{i}"), config)
            await cri.start_container(cid)
            await cri.stop_container(cid, 0)
            await cri.remove_container(cid)
        elapsed = time.perf_counter() - t0
        print(
            f"\ncreate+start+stop+remove round trips: {round_trips / elapsed:.0f}/s "
            f"({elapsed / round_trips * 1000:.2f} ms each, one client, sequential)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="mk-bench-") as tmp:
        endpoint = f"unix://{tmp}/fake.sock"
        server = subprocess.Popen(
            [sys.executable, "-m", "minikubelet", "runtime", "serve", "fake", "--listen", endpoint],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            server.stdout.readline()
            asyncio.run(run(sizes, args.round_trips, endpoint))
        finally:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
