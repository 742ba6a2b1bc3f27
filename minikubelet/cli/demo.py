"""``minikubelet demo``: one pod's life through a CRI runtime, with every call shown.

This is the kubelet's conversation with a runtime reduced to its spine: the
version handshake, image pull, sandbox, containers, the wait, and the
teardown. The full sync loop lives in the kubelet proper; this command exists
so a person can watch the CRI calls of a single pod end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from minikubelet.cli.common import Subcommands, run_command
from minikubelet.cli.launch import BUNDLED_RUNTIMES, bundled_runtime
from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import (
    CallRecord,
    JsonlTraceWriter,
    TraceRecorder,
    format_text,
    format_text_header,
)
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError
from minikubelet.logs import crilog

RUN_TIMEOUT = 30.0


def _pod(manifest: Path) -> Mapping[str, Any]:
    pod = yaml.safe_load(manifest.read_text())
    if not isinstance(pod, dict) or pod.get("kind") != "Pod":
        raise ValueError(f"{manifest}: not a Pod manifest")
    return pod


async def _wait_exited(cri: CRIClient, ids: list[str], deadline: float) -> None:
    """Poll ContainerStatus, as the kubelet's PLEG would, until every container exited."""
    while time.monotonic() < deadline:
        states = [(await cri.container_status(cid)).status.state for cid in ids]
        if all(s == pb.CONTAINER_EXITED for s in states):
            return
        await asyncio.sleep(0.5)


async def play(cri: CRIClient, pod: Mapping[str, Any], logdir: Path) -> list[str]:
    """Drive one pod through the CRI; returns its containers' log lines."""
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    name = meta.get("name", "demo")
    namespace = meta.get("namespace", "default")
    uid = meta.get("uid") or f"demo-{os.getpid()}"
    await cri.status()
    sandbox_config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace=namespace, uid=uid, attempt=0),
        hostname=name,
        log_directory=str(logdir),
        labels={
            "io.kubernetes.pod.name": name,
            "io.kubernetes.pod.namespace": namespace,
            "io.kubernetes.pod.uid": uid,
        },
    )
    containers = spec.get("containers", [])
    for c in containers:
        if await cri.image_status(c["image"]) is None:
            await cri.pull_image(c["image"], sandbox_config=sandbox_config)
    sandbox_id = await cri.run_pod_sandbox(sandbox_config)
    await cri.pod_sandbox_status(sandbox_id)
    ids = []
    for c in containers:
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=c["name"], attempt=0),
            image=pb.ImageSpec(image=c["image"]),
            command=c.get("command", []),
            args=c.get("args", []),
            envs=[
                pb.KeyValue(key=e["name"], value=str(e.get("value", "")).encode())
                for e in c.get("env", [])
            ],
            log_path=f"{c['name']}/0.log",
            labels={**sandbox_config.labels, "io.kubernetes.container.name": c["name"]},
        )
        cid = await cri.create_container(sandbox_id, config, sandbox_config)
        await cri.start_container(cid)
        ids.append(cid)
    await _wait_exited(cri, ids, time.monotonic() + RUN_TIMEOUT)
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    for cid in ids:
        await cri.stop_container(cid, grace)
    await cri.stop_pod_sandbox(sandbox_id)
    lines = []
    for c in containers:
        path = logdir / c["name"] / "0.log"
        if path.exists():
            for raw in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    lines.append(f"{c['name']}: {crilog.parse_line(raw).message}")
    for cid in ids:
        await cri.remove_container(cid)
    await cri.remove_pod_sandbox(sandbox_id)
    return lines


async def pod_life(
    manifest: str, *, runtime: str = "fake", trace_file: str | None = None, output: str = "text"
) -> int:
    pod = _pod(Path(manifest))
    recorder = TraceRecorder()

    def show(rec: CallRecord) -> None:
        print(rec.to_json() if output == "jsonl" else format_text(rec), flush=True)

    if output == "text":
        print(format_text_header())
    recorder.subscribe(show)
    with tempfile.TemporaryDirectory(prefix="minikubelet-demo-") as tmp:
        workdir = Path(tmp)
        os.chmod(workdir, 0o700)
        async with contextlib.AsyncExitStack() as stack:
            endpoint = runtime
            if runtime in BUNDLED_RUNTIMES:
                endpoint = await stack.enter_async_context(bundled_runtime(runtime, workdir))
            async with asyncio.TaskGroup() as tg:
                writer = None
                if trace_file:
                    writer = tg.create_task(
                        JsonlTraceWriter(recorder, Path(trace_file)).run(), name="trace-writer"
                    )
                try:
                    async with CRIClient(endpoint, recorder=recorder) as cri:
                        lines = await play(cri, pod, workdir / "logs")
                except CRIError as exc:
                    print(f"minikubelet demo: {exc}", file=sys.stderr)
                    return 1
                finally:
                    if writer is not None:
                        writer.cancel()
    if output == "text":
        print("\ncontainer output:")
        for line in lines:
            print(f"  {line}")
    return 0


def command(args: argparse.Namespace) -> int:
    return run_command(
        pod_life(
            args.manifest, runtime=args.runtime, trace_file=args.trace_file, output=args.output
        )
    )


def add_parser(sub: Subcommands) -> None:
    """Add the demo command to the ``minikubelet`` subcommands."""
    demo = sub.add_parser(
        "demo",
        help="play one pod's life through a CRI runtime and print every CRI call",
    )
    demo.add_argument("manifest", help="a Pod YAML file (e.g. manifests/hello.yaml)")
    demo.add_argument(
        "--runtime",
        default="fake",
        help="'fake' (started for the demo) or a CRI endpoint unix:///PATH",
    )
    demo.add_argument("--trace-file", help="also write the trace as JSON lines to this file")
    demo.add_argument("-o", "--output", choices=["text", "jsonl"], default="text")
    demo.set_defaults(func=command)
