"""Manifest written -> all containers running, on the simulated runtime.

    python -m bench.kubelet_pods [--sizes 1,100,1000] [--single-repeats 20]

For each size, writes that many pod manifests (one container each) into the
node's manifest directory at once and watches the local API until every pod's
container is running. Prints p50/p99 of the per-pod latency (file written ->
first seen running; the local API is polled every 20 ms for a single pod and
every 250 ms for big rounds), the time until all were running, and the kubelet's RSS.
Goals: p50 <= 0.5 s for a single pod; 1,000 pods running within 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minikubelet.server.client import KubeletUnreachable, LocalClient

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
    - name: app
      image: busybox:1.36
      command: ["sleep", "3600"]
"""


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _running(pod: dict[str, object]) -> bool:
    status = pod.get("status") or {}
    assert isinstance(status, dict)
    statuses = status.get("containerStatuses") or []
    return bool(statuses) and all("running" in (cs.get("state") or {}) for cs in statuses)


async def _wait_api(client: LocalClient) -> None:
    for _ in range(300):
        try:
            await client.healthz()
            return
        except KubeletUnreachable:
            await asyncio.sleep(0.1)
    raise SystemExit("the kubelet did not come up")


async def _round(
    client: LocalClient, manifests: Path, names: list[str]
) -> tuple[list[float], float]:
    written: dict[str, float] = {}
    for name in names:
        tmp = manifests / f".{name}.yaml"
        tmp.write_text(POD.format(name=name))
        os.replace(tmp, manifests / f"{name}.yaml")
        written[name] = time.monotonic()
    start = min(written.values())
    seen: dict[str, float] = {}
    wanted = {f"{n}-bench": n for n in names}
    deadline = start + 120
    while len(seen) < len(names) and time.monotonic() < deadline:
        for pod in await client.pods():
            full = pod["metadata"]["name"]
            if full in wanted and wanted[full] not in seen and _running(pod):
                seen[wanted[full]] = time.monotonic()
        # polling 1,000 pods costs both sides CPU: poll less often for big rounds
        await asyncio.sleep(0.02 if len(names) < 10 else 0.25)
    if len(seen) < len(names):
        raise SystemExit(f"only {len(seen)}/{len(names)} pods running after 120 s")
    latencies = [seen[n] - written[n] for n in names]
    return latencies, max(seen.values()) - start


async def _cleanup(client: LocalClient, manifests: Path) -> None:
    for f in await asyncio.to_thread(lambda: list(manifests.glob("*.yaml"))):
        await asyncio.to_thread(f.unlink)
    while await client.pods():  # noqa: ASYNC110 - the kubelet is another process: poll it
        await asyncio.sleep(0.1)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def start_node(workdir: Path) -> subprocess.Popen[bytes]:
    manifests = workdir / "manifests"
    manifests.mkdir()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minikubelet",
            "run",
            "--runtime",
            "fake",
            "--node-name",
            "bench",
            "--root-dir",
            str(workdir / "root"),
            "--manifests",
            str(manifests),
            "--file-check-period",
            "20",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def run(sizes: list[int], repeats: int, workdir: Path, pid: int) -> None:
    manifests = workdir / "manifests"
    async with LocalClient(workdir / "root" / "kubelet.sock", timeout=120) as client:
        await _wait_api(client)
        print(f"{'pods':>6}  {'p50':>8}  {'p99':>8}  {'all running':>12}  {'kubelet RSS':>12}")
        for size in sizes:
            rounds = repeats if size == 1 else 1
            latencies: list[float] = []
            total = 0.0
            rss = 0.0
            for r in range(rounds):
                names = [f"p{size}-{r}-{i}" for i in range(size)]
                lat, took = await _round(client, manifests, names)
                latencies += lat
                total = max(total, took)
                rss = _rss_mib(pid)
                await _cleanup(client, manifests)
            print(
                f"{size:>6}  {statistics.median(latencies):7.3f}s  "
                f"{_pct(latencies, 0.99):7.3f}s  {total:11.3f}s  {rss:9.1f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1,100,1000")
    parser.add_argument("--single-repeats", type=int, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="mk-bench-kubelet-"))
    proc = start_node(workdir)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        asyncio.run(run(sizes, args.single_repeats, workdir, proc.pid))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
