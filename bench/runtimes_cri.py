"""The native runtime against containerd + runc, same box, same image, same run.

    python -m bench.runtimes_cri [--pods 20] [--pulls 5]

For each runtime: the median time of RunPodSandbox + CreateContainer +
StartContainer for a pod with one busybox container, of StopPodSandbox +
RemovePodSandbox for it, and of a cold image pull (image removed first) from the
local registry. Prints the figures and the ratio native / containerd (goal: within
1.2x). Needs root, runc, conmon, containerd, docker-registry (scripts/install-deps).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from tests.harness.containerd import Containerd
from tests.harness.images import build_busybox_image, build_pause_image, push_image
from tests.harness.native import cleanup
from tests.harness.registry import LocalRegistry


async def measure(endpoint: str, image: str, pods: int, pulls: int, logs: Path) -> dict[str, float]:
    async with CRIClient(endpoint, timeout=120) as cri:
        pull_times = []
        for _ in range(pulls):
            if await cri.image_status(image) is not None:
                await cri.remove_image(image)
            t0 = time.perf_counter()
            await cri.pull_image(image)
            pull_times.append(time.perf_counter() - t0)
        start_times, stop_times = [], []
        for i in range(pods):
            sb = pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(name=f"bench-{i}", namespace="bench", uid=f"b{i}"),
                log_directory=str(logs / f"p{i}"),
                linux=pb.LinuxPodSandboxConfig(
                    security_context=pb.LinuxSandboxSecurityContext(
                        namespace_options=pb.NamespaceOption(pid=pb.CONTAINER)
                    )
                ),
            )
            cc = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="app"),
                image=pb.ImageSpec(image=image),
                command=["sleep", "3600"],
                log_path="app/0.log",
            )
            t0 = time.perf_counter()
            sid = await cri.run_pod_sandbox(sb)
            cid = await cri.create_container(sid, cc, sb)
            await cri.start_container(cid)
            start_times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            await cri.stop_pod_sandbox(sid)
            await cri.remove_pod_sandbox(sid)
            stop_times.append(time.perf_counter() - t0)
        return {
            "run+create+start": statistics.median(start_times),
            "stop+remove": statistics.median(stop_times),
            "cold pull": statistics.median(pull_times),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--pulls", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mk-bench-rt-"))
    registry = LocalRegistry(workdir=work / "registry")
    registry.start()
    busybox = push_image(build_busybox_image(work / "cache", tag="1.35"), registry.host, "busybox")
    pause = push_image(build_pause_image(work / "cache", tag="3.9"), registry.host, "pause")
    containerd = Containerd(work / "containerd", sandbox_image=pause, registry_host=registry.host)
    run_root = Path(tempfile.mkdtemp(prefix="mk-bench-native-", dir="/run"))
    native_sock = f"unix://{work}/native.sock"
    native_log = open(work / "native.log", "w")  # noqa: SIM115 - closed at the end
    native = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minikubelet",
            "runtime",
            "serve",
            "native",
            "--listen",
            native_sock,
            "--root",
            str(work / "native"),
            "--run-root",
            str(run_root),
        ],
        stdout=subprocess.PIPE,
        stderr=native_log,
        text=True,
    )
    results: dict[str, dict[str, float]] = {}
    try:
        assert native.stdout is not None and "serving" in native.stdout.readline()
        containerd.start()
        # warm both up once (first sandbox pulls the pause image for containerd)
        asyncio.run(measure(containerd.endpoint, busybox, 1, 1, work / "logs-warm-c"))
        asyncio.run(measure(native_sock, busybox, 1, 1, work / "logs-warm-n"))
        results["containerd"] = asyncio.run(
            measure(containerd.endpoint, busybox, args.pods, args.pulls, work / "logs-c")
        )
        results["native"] = asyncio.run(
            measure(native_sock, busybox, args.pods, args.pulls, work / "logs-n")
        )
    finally:
        try:
            if native.poll() is not None:
                print(
                    f"the native runtime exited ({native.returncode}):\n"
                    + (work / "native.log").read_text()[-3000:],
                    file=sys.stderr,
                )
            native_log.close()
            native.terminate()
            native.wait(timeout=30)
            cleanup(work / "native", run_root)
        finally:
            containerd.stop()  # whatever happened above: no daemon outlives the bench
            registry.close()
    print(
        f"{args.pods} pods, {args.pulls} cold pulls of busybox from a local registry "
        "(medians, seconds)"
    )
    print(f"{'':20} {'native':>10} {'containerd':>12} {'ratio':>7}")
    for key in results["native"]:
        n, c = results["native"][key], results["containerd"][key]
        print(f"{key:20} {n:10.4f} {c:12.4f} {n / c:6.2f}x")


if __name__ == "__main__":
    main()
