"""The simulated runtime's behaviour beyond the shared contract: timing, signals, files, events.

Each test talks to an in-process server over a real unix socket through the
real client, so the adapter, the listener and the client are in the path.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import TraceRecorder
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import DeadlineExceeded, InvalidArgument, NotFound
from minikubelet.logs import crilog
from runtimes.base.listener import ListenError, serving
from runtimes.fake.images import FakeImages
from runtimes.fake.server import FakeRuntime
from tests.contract.pods import container_config, sandbox_config, wait_exited
from tests.harness.wait import wait_until

IMAGE = "registry.test/app:1"


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[tuple[CRIClient, FakeRuntime, Path]]:
    images = FakeImages()
    runtime = FakeRuntime(images)
    sock = tmp_path / "run" / "fake.sock"
    runner = asyncio.create_task(runtime.run())
    try:
        async with (
            serving(f"unix://{sock}", runtime, images, grace=0.5),
            CRIClient(f"unix://{sock}", recorder=TraceRecorder()) as cri,
        ):
            await cri.pull_image(IMAGE)
            yield cri, runtime, sock
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def _started(cri: CRIClient, log_dir: Path, command: list[str]) -> tuple[str, str]:
    sb = sandbox_config(log_dir)
    sandbox_id = await cri.run_pod_sandbox(sb)
    cid = await cri.create_container(sandbox_id, container_config(IMAGE, "c", command), sb)
    await cri.start_container(cid)
    return sandbox_id, cid


async def test_socket_is_private(fake: tuple[CRIClient, FakeRuntime, Path]) -> None:
    _, _, sock = fake
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700


async def test_a_second_server_on_the_same_socket_is_refused(
    fake: tuple[CRIClient, FakeRuntime, Path],
) -> None:
    _, runtime, sock = fake
    with pytest.raises(ListenError, match="in use"):
        async with serving(f"unix://{sock}", runtime, runtime.images):
            pass


async def test_exit_comes_when_the_script_ends(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, _ = fake
    t0 = time.monotonic()
    _, cid = await _started(cri, tmp_path, ["sh", "-c", "echo start; sleep 0.3; exit 4"])
    status = await wait_exited(cri, cid)
    elapsed = (status.finished_at - status.started_at) / 1e9
    assert 0.3 <= elapsed < 5, elapsed
    assert time.monotonic() - t0 >= 0.3
    assert status.exit_code == 4


async def test_sigterm_ends_a_plain_process_but_not_one_that_traps_it(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, _ = fake
    _, plain = await _started(cri, tmp_path, ["sleep", "3600"])
    await cri.stop_container(plain, 10)
    assert (await cri.container_status(plain)).status.exit_code == 143

    _, stubborn = await _started(cri, tmp_path, ["sh", "-c", "trap '' TERM; sleep 3600"])
    t0 = time.monotonic()
    await cri.stop_container(stubborn, 1)
    assert time.monotonic() - t0 >= 1.0  # the whole grace period, then SIGKILL
    assert (await cri.container_status(stubborn)).status.exit_code == 137

    _, graceful = await _started(cri, tmp_path, ["sh", "-c", "trap 'exit 0' TERM; sleep 3600"])
    await cri.stop_container(graceful, 10)
    status = (await cri.container_status(graceful)).status
    assert (status.exit_code, status.reason) == (0, "Completed")


async def test_exec_sees_files_the_container_wrote(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, _ = fake
    _, cid = await _started(cri, tmp_path, ["sh", "-c", "echo ready > /tmp/healthy; sleep 3600"])
    ok = await cri.exec_sync(cid, ["cat", "/tmp/healthy"], timeout=5)
    assert (ok.exit_code, ok.stdout) == (0, b"ready\n")
    await cri.exec_sync(cid, ["rm", "-f", "/tmp/healthy"], timeout=5)
    gone = await cri.exec_sync(cid, ["test", "-f", "/tmp/healthy"], timeout=5)
    assert gone.exit_code == 1
    with pytest.raises(DeadlineExceeded, match="timed out"):
        await cri.exec_sync(cid, ["sleep", "30"], timeout=1)


async def test_output_without_newline_is_flushed_at_exit(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, _ = fake
    _, cid = await _started(cri, tmp_path, ["sh", "-c", "echo -n 'no newline'"])
    status = await wait_exited(cri, cid)
    lines = [crilog.parse_line(x) for x in Path(status.log_path).read_text().splitlines()]
    assert [ln.message for ln in lines] == ["no newline"]


async def test_reopen_container_log_starts_a_new_file(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, _ = fake
    _, cid = await _started(cri, tmp_path, ["sleep", "3600"])
    path = Path((await cri.container_status(cid)).status.log_path)
    os.rename(path, path.with_suffix(".1"))  # what log rotation does
    await cri.reopen_container_log(cid)
    assert path.exists()


async def test_pull_failures_and_prefix_ids(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, _ = fake
    with pytest.raises(NotFound, match="manifest unknown"):
        await cri.pull_image("example.invalid/nope:1")
    sandbox_id, cid = await _started(cri, tmp_path, ["sleep", "3600"])
    assert (await cri.container_status(cid[:12])).status.id == cid  # as crictl users type it
    assert (await cri.pod_sandbox_status(sandbox_id[:12])).status.id == sandbox_id


async def test_log_path_may_not_leave_the_log_directory(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, _ = fake
    sb = sandbox_config(tmp_path)
    sandbox_id = await cri.run_pod_sandbox(sb)
    config = container_config(IMAGE, "sneaky", ["true"])
    config.log_path = "../../etc/evil.log"
    with pytest.raises(InvalidArgument, match="escapes the log directory"):
        await cri.create_container(sandbox_id, config, sb)


async def test_container_events_stream(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, runtime, _ = fake
    events: list[tuple[str, int]] = []

    async def collect() -> None:
        async for ev in cri.container_events():
            events.append((ev.container_id, ev.container_event_type))
            if ev.container_event_type == pb.CONTAINER_STOPPED_EVENT:
                return

    collector = asyncio.create_task(collect())
    await wait_until(  # the stream is open before anything happens
        lambda: runtime._events._queues, timeout=5, message="the event stream to open"
    )
    _, cid = await _started(cri, tmp_path, ["true"])
    await asyncio.wait_for(collector, 10)
    assert events == [
        (cid, pb.CONTAINER_CREATED_EVENT),
        (cid, pb.CONTAINER_STARTED_EVENT),
        (cid, pb.CONTAINER_STOPPED_EVENT),
    ]


async def test_streaming_lists_match_the_plain_ones(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    cri, _, sock = fake
    for _ in range(3):
        await _started(cri, tmp_path, ["sleep", "3600"])
    async with grpc.aio.insecure_channel(f"unix://{sock}") as channel:
        from minikubelet.cri.v1 import api_pb2_grpc as pb_grpc

        stub = pb_grpc.RuntimeServiceStub(channel)
        streamed = [
            c.id
            async for resp in stub.StreamContainers(pb.StreamContainersRequest())
            for c in resp.containers
        ]
        unimplemented = stub.Exec(pb.ExecRequest(container_id="x", cmd=["sh"]))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await unimplemented
        assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "Exec: this runtime has no streaming server" in (err.value.details() or "")
    assert sorted(streamed) == sorted(c.id for c in await cri.list_containers())


async def test_malformed_requests_never_hurt_the_server(
    fake: tuple[CRIClient, FakeRuntime, Path],
) -> None:
    cri, _, sock = fake
    async with grpc.aio.insecure_channel(f"unix://{sock}") as channel:
        for method in ("RunPodSandbox", "CreateContainer", "ExecSync", "ListContainers"):
            raw: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                f"/runtime.v1.RuntimeService/{method}"
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await raw(b"\xff\xff\xff not a protobuf", timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "malformed runtime.v1." in (err.value.details() or "")
        bad_exec: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/runtime.v1.RuntimeService/ExecSync"
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await bad_exec(pb.ExecSyncRequest(container_id="x").SerializeToString(), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "cmd is required" in (err.value.details() or "")
    assert (await cri.version()).runtime_api_version == "v1"  # still serving


async def test_image_volume_needs_its_image_and_is_reported(
    fake: tuple[CRIClient, FakeRuntime, Path], tmp_path: Path
) -> None:
    """As containerd 2.1 and CRI-O: an image volume's image must be pulled, and the status
    mounts name it with the image mounted (``image_ref``), read-only."""
    cri, _, _ = fake
    sb = sandbox_config(tmp_path / "logs")
    sandbox_id = await cri.run_pod_sandbox(sb)
    config = container_config(IMAGE, "c", ["true"])
    config.mounts.append(
        pb.Mount(
            container_path="/tools",
            image=pb.ImageSpec(image="registry.test/tools:1"),
            image_sub_path="bin",
        )
    )
    with pytest.raises(NotFound, match=r"registry\.test/tools:1.*/tools"):
        await cri.create_container(sandbox_id, config, sb)
    await cri.pull_image("registry.test/tools:1")
    image = await cri.image_status("registry.test/tools:1")
    assert image is not None
    cid = await cri.create_container(sandbox_id, config, sb)
    (mount,) = (await cri.container_status(cid)).status.mounts
    assert (mount.container_path, mount.image.image, mount.image_sub_path, mount.readonly) == (
        "/tools",
        "registry.test/tools:1",
        "bin",
        True,
    )
    assert mount.image.image_ref in (image.id, *image.repo_digests)
    assert mount.image.image_ref
