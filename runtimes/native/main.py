"""``minikubelet runtime serve native``: our own CRI server on runc, as CRI-O is built."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from runtimes.base.listener import serving
from runtimes.base.streaming import DEFAULT_STREAMING_ADDRESS, StreamingServer
from runtimes.native.images.hosts import RegistryConfig
from runtimes.native.images.service import NativeImages
from runtimes.native.namespaces import NamespaceManager
from runtimes.native.network.cni import CNIManager, CNIOptions
from runtimes.native.oci.runtime import OCIRuntime
from runtimes.native.server import NativeRuntime

DEFAULT_ROOT = Path("/var/lib/minikubelet/native")
DEFAULT_RUN_ROOT = Path("/run/minikubelet/native")


class NotSupportedHere(RuntimeError):
    """What the native runtime needs and this machine lacks, said so a person can act on it."""


def preflight() -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("it must run as root (it creates namespaces, mounts and cgroups)")
    for binary, package in (("runc", "runc"), ("conmon", "conmon"), ("unshare", "util-linux")):
        if shutil.which(binary) is None:
            problems.append(f"{binary} is missing: apt-get install {package}")
    if not any(Path(d, "bridge").exists() for d in ("/usr/lib/cni", "/opt/cni/bin")):
        problems.append("the CNI plugins are missing: apt-get install containernetworking-plugins")
    if problems:
        raise NotSupportedHere("the native runtime cannot run here: " + "; ".join(problems))


def build(
    root: Path,
    run_root: Path,
    *,
    insecure_registries: Iterable[str] = (),
    registry_mirrors: Iterable[str] = (),
    config_file: Path | None = None,
    subnet: str | None = None,
    bridge: str | None = None,
) -> tuple[NativeRuntime, NativeImages]:
    """The runtime and image services, wired; no side effects until they start."""
    registry = RegistryConfig.from_flags(
        insecure_registries=insecure_registries,
        registry_mirrors=registry_mirrors,
        config_file=config_file,
    )
    runtime: NativeRuntime | None = None

    def layers_in_use() -> list[Path]:
        return [] if runtime is None else runtime.layers_in_use()

    images = NativeImages(root / "images", registry, layers_in_use=layers_in_use)
    options = CNIOptions(conf_dir=root / "cni" / "net.d", state_dir=root / "cni" / "state")
    if subnet:
        options = CNIOptions(
            conf_dir=options.conf_dir,
            state_dir=options.state_dir,
            subnet=subnet,
            bridge=bridge or options.bridge,
        )
    runtime = NativeRuntime(
        root,
        run_root,
        images=images,
        oci=OCIRuntime(root=run_root / "runc"),
        cni=CNIManager(options),
        namespaces=NamespaceManager(run_root),
    )
    return runtime, images


async def serve(
    listen: str,
    *,
    root: Path = DEFAULT_ROOT,
    run_root: Path = DEFAULT_RUN_ROOT,
    insecure_registries: Iterable[str] = (),
    registry_mirrors: Iterable[str] = (),
    config_file: Path | None = None,
    ready: asyncio.Event | None = None,
    streaming_address: str = DEFAULT_STREAMING_ADDRESS,
) -> None:
    """Serve until cancelled."""
    preflight()
    runtime, images = build(
        root,
        run_root,
        insecure_registries=insecure_registries,
        registry_mirrors=registry_mirrors,
        config_file=config_file,
    )
    async with images:
        await runtime.start()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(runtime.run(), name="native-runtime-monitor")
            streaming = StreamingServer(runtime, streaming_address)
            async with serving(listen, runtime, images, streaming=streaming) as endpoint:
                print(f"minikubelet-native: serving CRI runtime.v1 on {endpoint}", flush=True)
                print(f"minikubelet-native: streaming on {streaming.base_url}", flush=True)
                if ready is not None:
                    ready.set()
                await asyncio.Future()
