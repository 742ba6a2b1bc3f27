"""``minikubelet run``, and the composition root: every part of a node is made here.

:func:`build_kubelet` makes the kubelet's parts from its configuration and the
node's runtimes (a :class:`~minikubelet.cri.services.RuntimeHandlers`) and wires
them; :func:`run_node` starts the runtime (bundled or given), its CRI client with
the trace, and the kubelet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from minikubelet.api.pod import Pod
from minikubelet.backoff import Backoff
from minikubelet.cli.launch import node_runtime
from minikubelet.clock import Clock, RealClock
from minikubelet.config.file import FileSource
from minikubelet.config.http import URLSource
from minikubelet.cri.client import CRIClient
from minikubelet.cri.services import RuntimeHandlers
from minikubelet.cri.trace import JsonlTraceWriter, TraceRecorder
from minikubelet.events import EventRecorder
from minikubelet.images import ImageManager
from minikubelet.kubelet import Kubelet, KubeletConfig, PodSource, Server, host_ip
from minikubelet.kuberuntime.gc import ContainerGC
from minikubelet.kuberuntime.manager import KubeRuntimeManager
from minikubelet.kuberuntime.podsetup import PodSetup
from minikubelet.logs.rotate import ContainerLogManager
from minikubelet.nodeview import KubeletNodeView, NodeInfo
from minikubelet.pleg import GenericPLEG
from minikubelet.podmanager import PodManager
from minikubelet.podworkers import PodWorkers
from minikubelet.prober.manager import ProbeManager
from minikubelet.server.api import LocalAPI
from minikubelet.status.manager import StatusManager

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


def build_kubelet(
    config: KubeletConfig,
    runtimes: RuntimeHandlers,
    *,
    clock: Clock | None = None,
    trace: TraceRecorder | None = None,
) -> Kubelet:
    """Make and wire every part of the kubelet; nothing runs until :meth:`Kubelet.run`."""
    clock = clock or RealClock()
    recorder = EventRecorder(node_name=config.node_name, clock=clock)
    crash_backoff = Backoff(
        initial=config.crash_loop_initial,
        maximum=config.crash_loop_max,
        reset_after=config.crash_loop_reset,
        clock=clock,
    )
    image_backoff = Backoff(
        initial=config.image_backoff_initial, maximum=config.image_backoff_max, clock=clock
    )
    statuses = StatusManager()

    runtime: KubeRuntimeManager  # probes and hooks exec through it; it is made below

    async def exec_in_container(container_id: str, cmd: list[str], timeout: int) -> Any:
        return await runtime.exec_sync(container_id, cmd, timeout)

    prober = ProbeManager(exec_in_container, clock=clock, on_event=recorder.container_event)
    setup = PodSetup(
        root_dir=config.root_dir,
        log_root=config.pod_log_root,
        node_name=config.node_name,
        host_ip=config.node_ip,
        cgroup_parent=config.cgroup_parent,
        exec_runner=exec_in_container,
    )
    runtime = KubeRuntimeManager(
        runtimes,
        events=recorder,
        images=ImageManager(recorder, image_backoff),
        backoff=crash_backoff,
        configs=setup,
        probes=setup.probe_results(prober),
        hooks=setup,
        clock=clock,
    )
    pleg = GenericPLEG(runtime.list_pods, period=config.relist_period, clock=clock)
    workers = PodWorkers(resync=config.resync, clock=clock)
    pods = PodManager(workers=workers, probes=prober, recorder=recorder, clock=clock)

    sources: list[tuple[str, PodSource]] = []
    file_source: FileSource | None = None
    if config.manifests is not None:
        file_source = FileSource(
            config.manifests,
            node_name=config.node_name,
            period=config.file_check_period,
            validate=Pod.from_dict,  # a pod that cannot be read is the file's fault
        )
        sources.append(("file", file_source))
    if config.manifest_url:
        sources.append(("url", URLSource(config.manifest_url, node_name=config.node_name)))

    def source_errors() -> list[dict[str, Any]]:
        if file_source is None:
            return []
        return [
            {"source": str(path), "line": error.line, "reason": error.reason}
            for path, error in file_source.errors.items()
        ]

    servers: list[tuple[str, Server]] = []
    if config.serve_api:
        view = KubeletNodeView(
            NodeInfo(config.node_name, config.manifests),
            pods=pods,
            statuses=statuses,
            recorder=recorder,
            runtime=runtime,
            pleg=pleg,
            logs=setup,
            workers=workers,
            clock=clock,
            source_errors=source_errors,
            trace=trace,
        )
        servers.append(("local-api", LocalAPI(view, config.api_socket)))
    return Kubelet(
        config,
        clock=clock,
        recorder=recorder,
        pods=pods,
        workers=workers,
        runtime=runtime,
        pleg=pleg,
        prober=prober,
        setup=setup,
        statuses=statuses,
        gc=ContainerGC(runtime, max_per_pod_container=config.max_per_pod_container),
        log_manager=ContainerLogManager(
            runtimes,
            max_size=config.container_log_max_size,
            max_files=config.container_log_max_files,
            interval=config.container_log_monitor_interval,
        ),
        backoffs=(crash_backoff, image_backoff),
        sources=sources,
        servers=servers,
    )


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
        started = await stack.enter_async_context(
            node_runtime(runtime, root, extra_args=runtime_args)
        )
        cri = CRIClient(started.endpoint, recorder=recorder)
        await cri.connect()
        stack.push_async_callback(cri.close)
        kubelet = build_kubelet(config, RuntimeHandlers(cri), trace=recorder)
        runtime_name = cri.version_info.runtime_name if cri.version_info else "?"
        print(
            f"minikubelet: node {config.node_name} on {runtime_name} ({started.endpoint}); "
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
            if config.shutdown_grace_period > 0 and not started.ephemeral:
                await asyncio.shield(kubelet.shutdown_pods(config.shutdown_grace_period))
            if started.ephemeral:
                # the simulated runtime's containers end with it: so do the pods' volumes
                await asyncio.shield(kubelet.release_host())
    return 0
