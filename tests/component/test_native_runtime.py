"""The native runtime survives being killed, and leaves nothing behind.

Each test runs its own ``minikubelet runtime serve native`` process, so it can
SIGKILL it: conmon keeps the containers running, the state on disk brings every
sandbox and container back, and a container that exited meanwhile reports its
true exit code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError, InvalidArgument, NotFound
from minikubelet.util.mountinfo import read as read_mountinfo
from tests.contract.pods import container_config, sandbox_config, wait_exited
from tests.harness.fixtures import HarnessImages
from tests.harness.native import BRIDGE, cleanup
from tests.harness.registry import LocalRegistry
from tests.harness.wait import wait_until


@dataclass
class Server:
    endpoint: str
    root: Path
    run_root: Path
    registry: str
    log_path: Path
    proc: subprocess.Popen[str] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "minikubelet",
                    "runtime",
                    "serve",
                    "native",
                    "--listen",
                    self.endpoint,
                    "--root",
                    str(self.root),
                    "--run-root",
                    str(self.run_root),
                ],
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.proc.stdout is not None
        assert "serving" in self.proc.stdout.readline()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
            self.proc = None


@pytest.fixture
def server(local_registry: LocalRegistry, tmp_path: Path) -> Iterator[Server]:
    run_root = Path(tempfile.mkdtemp(prefix="mk-nrt-", dir="/run"))
    sock = Path(tempfile.mkdtemp(prefix="mk-nrs-", dir="/tmp")) / "native.sock"
    s = Server(
        f"unix://{sock}", tmp_path / "state", run_root, local_registry.host, tmp_path / "native.log"
    )
    s.start()
    try:
        yield s
    finally:
        alive = s.proc is not None and s.proc.poll() is None
        s.stop()
        cleanup(s.root, s.run_root)
        assert "Traceback" not in s.log(), s.log()[-5000:]
        assert alive or s.proc is None, f"the runtime died:\n{s.log()[-5000:]}"


@pytest.fixture
async def cri(server: Server, test_images: HarnessImages) -> AsyncIterator[CRIClient]:
    async with CRIClient(server.endpoint, timeout=60) as client:
        await client.pull_image(test_images.busybox)
        yield client


def _host_view(run_root: Path, root: Path) -> dict[str, object]:
    """What the runtime may leave on the host: mounts, network links, files."""
    mounts = sorted(
        m.mount_point
        for m in read_mountinfo()
        if any(
            str(where) in " ".join((m.root, m.mount_point, m.source, *m.super_options))
            for where in (run_root, root / "containers", root / "sandboxes")
        )
    )
    links = sorted(
        name
        for name in os.listdir("/sys/class/net")
        if os.path.basename(os.path.realpath(f"/sys/class/net/{name}/master")) == BRIDGE
    )
    files = sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and ("containers" in p.parts or "sandboxes" in p.parts or "state" in p.parts[:1])
    )
    return {"mounts": mounts, "links": [n for n in links if n.startswith("veth")], "files": files}


async def test_sigkill_and_restart_lose_nothing(
    server: Server, cri: CRIClient, test_images: HarnessImages, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    sb = sandbox_config(logs)
    sandbox_id = await cri.run_pod_sandbox(sb)
    ip = (await cri.pod_sandbox_status(sandbox_id)).status.network.ip
    long_id = await cri.create_container(
        sandbox_id, container_config(test_images.busybox, "long", ["sleep", "3600"]), sb
    )
    short_id = await cri.create_container(
        sandbox_id,
        container_config(test_images.busybox, "short", ["sh", "-c", "sleep 2; exit 42"]),
        sb,
    )
    await cri.start_container(long_id)
    await cri.start_container(short_id)
    created_id = await cri.create_container(
        sandbox_id, container_config(test_images.busybox, "later", ["true"]), sb
    )

    server.kill()  # no chance to save anything more
    exit_file = server.run_root / "runc" / "exits" / short_id  # conmon writes it at the exit
    await wait_until(
        exit_file.exists, timeout=10, message="the short container to exit while no server runs"
    )
    server.start()
    await cri.close()
    async with CRIClient(server.endpoint, timeout=60) as again:
        status = (await again.pod_sandbox_status(sandbox_id)).status
        assert (status.state, status.network.ip) == (pb.SANDBOX_READY, ip)
        assert (await again.container_status(long_id)).status.state == pb.CONTAINER_RUNNING
        assert (await again.exec_sync(long_id, ["echo", "still here"], 10)).stdout == (
            b"still here\n"
        )
        short = await wait_exited(again, short_id)
        assert (short.exit_code, short.reason) == (42, "Error")
        assert (await again.container_status(created_id)).status.state == pb.CONTAINER_CREATED
        await again.start_container(created_id)
        assert (await wait_exited(again, created_id)).exit_code == 0
        image = await again.image_status(test_images.busybox)
        assert image is not None
        await again.stop_pod_sandbox(sandbox_id)
        await again.remove_pod_sandbox(sandbox_id)
        assert not await again.list_pod_sandbox()


async def test_fifty_cycles_leave_nothing_behind(
    server: Server, cri: CRIClient, test_images: HarnessImages, tmp_path: Path
) -> None:
    before = _host_view(server.run_root, server.root)
    for i in range(50):
        sb = sandbox_config(tmp_path / "logs", name=f"cycle-{i}")
        sandbox_id = await cri.run_pod_sandbox(sb)
        cid = await cri.create_container(
            sandbox_id, container_config(test_images.busybox, "c", ["sleep", "3600"]), sb
        )
        await cri.start_container(cid)
        await cri.stop_pod_sandbox(sandbox_id)
        await cri.remove_pod_sandbox(sandbox_id)

    async def settled() -> bool | None:
        return True if _host_view(server.run_root, server.root) == before else None

    try:
        await wait_until(settled, timeout=20, message="the host to look as before")
    except AssertionError:
        assert _host_view(server.run_root, server.root) == before


async def test_failed_requests_leave_nothing_half_created(
    server: Server, cri: CRIClient, test_images: HarnessImages, tmp_path: Path
) -> None:
    before = _host_view(server.run_root, server.root)
    sb = sandbox_config(tmp_path / "logs")
    handler = pb.RunPodSandboxRequest(config=sb, runtime_handler="no-such-handler")
    with pytest.raises(CRIError, match="no-such-handler"):
        await cri.run_pod_sandbox(handler.config, handler.runtime_handler)
    sandbox_id = await cri.run_pod_sandbox(sb)
    during = _host_view(server.run_root, server.root)
    bad_mount = container_config(test_images.busybox, "badmount", ["true"])
    bad_mount.mounts.add(container_path="/data", host_path="/no/such/dir")
    with pytest.raises(InvalidArgument, match="does not exist"):
        await cri.create_container(sandbox_id, bad_mount, sb)
    with pytest.raises(NotFound, match="not found"):
        await cri.create_container(
            sandbox_id,
            container_config(f"{server.registry}/no-such-image:1", "noimage", ["true"]),
            sb,
        )
    escape = container_config(test_images.busybox, "escape", ["true"])
    escape.log_path = "../../outside.log"
    with pytest.raises(InvalidArgument, match="escapes"):
        await cri.create_container(sandbox_id, escape, sb)
    assert not await cri.list_containers(pb.ContainerFilter(pod_sandbox_id=sandbox_id))
    assert _host_view(server.run_root, server.root) == during  # no rootfs, bundle or mount
    await cri.stop_pod_sandbox(sandbox_id)
    await cri.remove_pod_sandbox(sandbox_id)
    assert _host_view(server.run_root, server.root) == before
