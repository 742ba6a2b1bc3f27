"""Small builders and waits the contract tests share."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from tests.harness.wait import wait_until

_counter = itertools.count()


def sandbox_config(
    log_dir: Path,
    *,
    name: str = "",
    labels: dict[str, str] | None = None,
    host_network: bool = False,
) -> pb.PodSandboxConfig:
    n = next(_counter)
    name = name or f"pod-{n}"
    uid = f"uid-{os.getpid()}-{n}-{time.monotonic_ns()}"
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="contract", uid=uid, attempt=0),
        hostname="" if host_network else name,  # a host-network pod shares the node's name
        log_directory=str(log_dir),
        labels={"suite": "contract", "io.kubernetes.pod.name": name, **(labels or {})},
        annotations={"example.com/note": f"sandbox {n}"},
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=""),
    )
    if host_network:
        config.linux.security_context.namespace_options.network = pb.NODE
    return config


def container_config(
    image: str,
    name: str,
    command: list[str],
    *,
    labels: dict[str, str] | None = None,
    attempt: int = 0,
) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=attempt),
        image=pb.ImageSpec(image=image),
        command=command,
        log_path=f"{name}/{attempt}.log",
        labels={"suite": "contract", "io.kubernetes.container.name": name, **(labels or {})},
        annotations={"example.com/container-note": name},
        envs=[pb.KeyValue(key="GREETING", value=b"hello")],
    )


async def wait_exited(
    cri: CRIClient, container_id: str, timeout: float = 30.0
) -> pb.ContainerStatus:
    async def check() -> pb.ContainerStatus | None:
        status = (await cri.container_status(container_id)).status
        return status if status.state == pb.CONTAINER_EXITED else None

    return await wait_until(
        check, timeout=timeout, message=f"container {container_id[:12]} to exit"
    )


@asynccontextmanager
async def pod(cri: CRIClient, config: pb.PodSandboxConfig) -> AsyncIterator[str]:
    """A running sandbox that is stopped and removed afterwards, whatever happens."""
    sandbox_id = await cri.run_pod_sandbox(config)
    try:
        yield sandbox_id
    finally:
        await cri.stop_pod_sandbox(sandbox_id)
        await cri.remove_pod_sandbox(sandbox_id)
