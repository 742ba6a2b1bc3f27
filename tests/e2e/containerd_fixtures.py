"""A minikubelet node on the harness containerd (real runc containers), one per test module.

The node's manifests use ``image: busybox:1.36`` verbatim: the harness containerd
resolves ``docker.io`` to the local registry alone. At the end every pod the node
ran must be gone from containerd, and nothing may stay mounted under the node's
directories; what the kubelet left behind is cleaned up, then reported as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import CallRecord, read_jsonl
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import NotFound
from tests.e2e.node import FAST, Node
from tests.harness.containerd import Containerd, mounts_under
from tests.harness.wait import wait_until

NODE_NAME = "ctrd"
POD_NAME_LABEL = "io.kubernetes.pod.name"
#: How long the node may take to empty itself of pods at the end (grace periods included).
DRAIN_TIMEOUT = 60.0


class ContainerdNode(Node):
    """A :class:`Node` on containerd that also writes its CRI call trace to a file."""

    def __init__(self, workdir: Path, *, containerd: Containerd) -> None:
        self.trace_path = workdir / "cri-trace.jsonl"
        super().__init__(
            workdir,
            runtime=containerd.endpoint,
            node_name=NODE_NAME,
            extra_args=(*FAST, "--trace-file", str(self.trace_path)),
        )
        self.containerd = containerd

    def calls(self, method: str | None = None) -> list[CallRecord]:
        """The CRI calls this node's kubelets made so far (the trace is flushed every 0.2 s)."""
        if not self.trace_path.exists():
            return []
        records = read_jsonl(self.trace_path)
        return [r for r in records if method is None or r.method == method]

    async def restart(self) -> None:
        """Stop the kubelet (SIGTERM) and start a new one on the same root dir."""
        code = self.stop()
        assert code == 0, f"the kubelet exited with {code}:\n{self.log()[-4000:]}"
        self.start()
        await self.wait_ready()

    async def drain(self, timeout: float = DRAIN_TIMEOUT) -> None:
        """Remove every manifest and wait until the node shows no pods."""
        for manifest in self.manifests.glob("*.yaml"):
            manifest.unlink()

        async def empty() -> bool | None:
            return True if not await self.pods() else None

        await wait_until(empty, timeout=timeout, message="the node to have no pods left")


def is_ours(labels: Any) -> bool:
    """Whether a sandbox or container belongs to a pod of the test node (``NAME-ctrd``)."""
    return str(labels.get(POD_NAME_LABEL, "")).endswith(f"-{NODE_NAME}")


async def leftovers(cri: CRIClient) -> tuple[list[Any], list[Any]]:
    """The sandboxes and containers of the test node's pods that containerd still holds."""
    sandboxes = [s for s in await cri.list_pod_sandbox() if is_ours(s.labels)]
    containers = [c for c in await cri.list_containers() if is_ours(c.labels)]
    return sandboxes, containers


async def remove_leftovers(cri: CRIClient) -> list[str]:
    """Stop and remove what :func:`leftovers` finds; return a description of each."""
    sandboxes, containers = await leftovers(cri)
    found = [
        *(
            f"container {c.metadata.name} {c.id[:13]} ({pb.ContainerState.Name(c.state)})"
            for c in containers
        ),
        *(
            f"sandbox {s.metadata.name} {s.id[:13]} ({pb.PodSandboxState.Name(s.state)})"
            for s in sandboxes
        ),
    ]
    for c in containers:
        with contextlib.suppress(NotFound):
            await cri.stop_container(c.id, 0)
            await cri.remove_container(c.id)
    for s in sandboxes:
        with contextlib.suppress(NotFound):
            await cri.stop_pod_sandbox(s.id)
            await cri.remove_pod_sandbox(s.id)
    return found


@pytest.fixture(scope="module")
async def cri_client(containerd: Containerd) -> AsyncIterator[CRIClient]:
    """A CRI client of the harness containerd, for looking behind the kubelet's back."""
    client = CRIClient(containerd.endpoint, timeout=30)
    await client.connect()
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
async def ctrd_node(
    containerd: Containerd,
    cri_client: CRIClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ContainerdNode]:
    """``minikubelet run --runtime <containerd>``, drained and checked for leftovers at the end."""
    workdir = tmp_path_factory.mktemp("ctrd-node")
    node = ContainerdNode(workdir, containerd=containerd)
    node.start()
    problems: list[str] = []
    try:
        await node.wait_ready()
        yield node
        try:
            await node.drain()
        except AssertionError as exc:
            problems.append(f"{exc}\n--- kubelet log tail:\n{node.log()[-4000:]}")
    finally:
        code = node.stop()
        if code != 0:
            problems.append(f"the kubelet exited with {code}")
        if "Traceback" in node.log():
            problems.append(f"the kubelet logged a traceback:\n{node.log()[-6000:]}")
        left = await remove_leftovers(cri_client)
        if left:
            problems.append(f"left in containerd after the pods were gone: {left}")
        mounted = mounts_under([workdir])
        for point in mounted:
            await asyncio.to_thread(subprocess.run, ["umount", "-l", point], check=False)
        if mounted:
            problems.append(f"left mounted under {workdir}: {mounted}")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
