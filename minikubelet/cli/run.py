"""``minikubelet run``: a runtime (bundled or given), a CRI client with its trace, a kubelet."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

from minikubelet.cli.launch import BUNDLED_RUNTIMES, EPHEMERAL_RUNTIMES, bundled_runtime
from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import JsonlTraceWriter, TraceRecorder
from minikubelet.kubelet import Kubelet, KubeletConfig, host_ip

log = logging.getLogger(__name__)

CHECKOUT_MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"


def default_root_dir() -> Path:
    """/var/lib/minikubelet for root, the user's state directory otherwise."""
    if os.geteuid() == 0:
        return Path("/var/lib/minikubelet")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "minikubelet"


def default_manifests() -> Path | None:
    """The project's manifests/ when run from a checkout."""
    return CHECKOUT_MANIFESTS if CHECKOUT_MANIFESTS.is_dir() else None


def default_node_name() -> str:
    return socket.gethostname().split(".")[0].lower() or "minikubelet"


async def run_node(
    *,
    runtime: str,
    manifests: Path | None,
    manifest_url: str | None,
    node_name: str | None,
    root_dir: Path | None,
    node_ip: str | None,
    trace_file: Path | None,
    tuning: dict[str, float],
    runtime_args: Sequence[str] = (),
) -> int:
    root = root_dir or default_root_dir()
    await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True, mode=0o700)
    config = KubeletConfig(
        node_name=node_name or default_node_name(),
        root_dir=root,
        manifests=manifests,
        manifest_url=manifest_url,
        node_ip=node_ip or host_ip(),
    )
    for key, value in tuning.items():
        setattr(config, key, value)
    recorder = TraceRecorder()
    async with contextlib.AsyncExitStack() as stack:
        endpoint = runtime
        if runtime in BUNDLED_RUNTIMES:
            args = list(runtime_args)
            if runtime == "native":  # its state beside the node's; its run root in /run
                tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
                args = [
                    "--root",
                    str(root / "native"),
                    "--run-root",
                    f"/run/minikubelet/native-{tag}",
                    *args,
                ]
            endpoint = await stack.enter_async_context(
                bundled_runtime(runtime, root / "runtimes", extra_args=args)
            )
        cri = CRIClient(endpoint, recorder=recorder)
        await cri.connect()
        stack.push_async_callback(cri.close)
        kubelet = Kubelet(config, cri)
        kubelet.trace_recorder = recorder
        runtime_name = cri.version_info.runtime_name if cri.version_info else "?"
        print(
            f"minikubelet: node {config.node_name} on {runtime_name} ({endpoint}); "
            f"manifests {manifests or '-'}; API unix://{config.api_socket}",
            flush=True,
        )
        try:
            async with asyncio.TaskGroup() as tg:
                if trace_file is not None:
                    tg.create_task(
                        JsonlTraceWriter(recorder, trace_file).run(), name="trace-writer"
                    )
                tg.create_task(kubelet.run(), name="kubelet")
        finally:
            if config.shutdown_grace_period > 0 and runtime not in EPHEMERAL_RUNTIMES:
                await asyncio.shield(kubelet.shutdown_pods(config.shutdown_grace_period))
            if runtime in EPHEMERAL_RUNTIMES:
                # the simulated runtime's containers end with it: so do the pods' volumes
                await asyncio.shield(kubelet.release_host())
    return 0
