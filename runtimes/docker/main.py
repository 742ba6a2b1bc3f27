"""``minikubelet runtime serve docker``: CRI on a socket, containers on a dockerd."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from runtimes.base.listener import serving
from runtimes.base.streaming import DEFAULT_STREAMING_ADDRESS, StreamingServer
from runtimes.docker.client import DEFAULT_HOST, DockerClient
from runtimes.docker.images import DockerImages, Mirror
from runtimes.docker.pause import PauseImage
from runtimes.docker.server import DockerRuntime


async def serve(
    listen: str,
    docker_host: str = DEFAULT_HOST,
    *,
    registry_mirrors: Iterable[str] = (),
    ready: asyncio.Event | None = None,
    streaming_address: str = DEFAULT_STREAMING_ADDRESS,
) -> None:
    """Serve until cancelled. dockerd need not be up yet: Status says so until it is."""
    mirrors = [Mirror.parse(text) for text in registry_mirrors]
    client = DockerClient(docker_host)
    pause = PauseImage(client)
    images = DockerImages(client, mirrors=mirrors, pinned=(pause.tag,))
    runtime = DockerRuntime(client, images, pause=pause)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(runtime.run(), name="docker-runtime-logs")
            streaming = StreamingServer(runtime, streaming_address)
            async with serving(listen, runtime, images, streaming=streaming) as endpoint:
                print(
                    f"minikubelet-docker: serving CRI runtime.v1 on {endpoint} "
                    f"(dockerd at {docker_host})",
                    flush=True,
                )
                print(f"minikubelet-docker: streaming on {streaming.base_url}", flush=True)
                if ready is not None:
                    ready.set()
                await asyncio.Future()
    finally:
        await client.close()
