"""The call trace: what it remembers, for whom, and for how long."""

from __future__ import annotations

import asyncio
from pathlib import Path

from minikubelet.cri.trace import JsonlTraceWriter, TraceRecorder, format_text, read_jsonl
from minikubelet.cri.v1 import api_pb2 as pb

SANDBOX = "a" * 64
CONTAINER = "b" * 64


def _record_pod_start(rec: TraceRecorder) -> None:
    sandbox_config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", namespace="shop", uid="u1")
    )
    rec.record(
        service="RuntimeService",
        method="RunPodSandbox",
        request=pb.RunPodSandboxRequest(config=sandbox_config),
        response=pb.RunPodSandboxResponse(pod_sandbox_id=SANDBOX),
        code="OK",
        started=1.0,
        duration_s=0.002,
    )
    rec.record(
        service="RuntimeService",
        method="CreateContainer",
        request=pb.CreateContainerRequest(
            pod_sandbox_id=SANDBOX,
            config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="nginx"), image=pb.ImageSpec(image="nginx:1")
            ),
            sandbox_config=sandbox_config,
        ),
        response=pb.CreateContainerResponse(container_id=CONTAINER),
        code="OK",
        started=1.1,
        duration_s=0.003,
    )


def test_ids_are_named_after_their_pod_and_container() -> None:
    rec = TraceRecorder()
    _record_pod_start(rec)
    start = rec.record(
        service="RuntimeService",
        method="StartContainer",
        request=pb.StartContainerRequest(container_id=CONTAINER),
        response=pb.StartContainerResponse(),
        code="OK",
        started=1.2,
        duration_s=0.001,
    )
    assert (start.pod, start.container) == ("shop/web", "nginx")
    create = rec.records()[1]
    assert (create.image, create.pod_sandbox_id, create.container_id) == (
        "nginx:1",
        SANDBOX,
        CONTAINER,
    )
    assert [r.method for r in rec.records(pod="web")] == [
        "RunPodSandbox",
        "CreateContainer",
        "StartContainer",
    ]
    assert rec.records(pod="shop/other") == []
    assert "shop/web/nginx" in format_text(start)


def test_failures_keep_code_and_message() -> None:
    rec = TraceRecorder()
    failed = rec.record(
        service="ImageService",
        method="PullImage",
        request=pb.PullImageRequest(image=pb.ImageSpec(image="nope.invalid/x:1")),
        response=None,
        code="NOT_FOUND",
        started=2.0,
        duration_s=0.5,
        error="manifest unknown",
    )
    assert (failed.code, failed.error, failed.image, failed.duration_ms) == (
        "NOT_FOUND",
        "manifest unknown",
        "nope.invalid/x:1",
        500.0,
    )


def test_the_ring_is_bounded() -> None:
    rec = TraceRecorder(capacity=3)
    for i in range(5):
        rec.record(
            service="RuntimeService",
            method="Version",
            request=pb.VersionRequest(),
            response=None,
            code="OK",
            started=float(i),
            duration_s=0.0,
        )
    assert [r.seq for r in rec.records()] == [3, 4, 5]


async def test_follow_and_jsonl_writer(tmp_path: Path) -> None:
    rec = TraceRecorder()
    path = tmp_path / "trace.jsonl"
    writer = asyncio.create_task(JsonlTraceWriter(rec, path, flush_interval=0.01).run())
    followed: list[str] = []

    async def follow() -> None:
        async for r in rec.follow(pod="web"):
            followed.append(r.method)
            if len(followed) == 2:
                return

    follower = asyncio.create_task(follow())
    await asyncio.sleep(0)  # let the follower subscribe
    _record_pod_start(rec)
    await asyncio.wait_for(follower, 5)
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)
    assert followed == ["RunPodSandbox", "CreateContainer"]
    assert [r.method for r in read_jsonl(path)] == ["RunPodSandbox", "CreateContainer"]


def test_streaming_calls_keep_where_the_stream_goes_but_not_the_token() -> None:
    rec = TraceRecorder()
    _record_pod_start(rec)
    exec_ = rec.record(
        service="RuntimeService",
        method="Exec",
        request=pb.ExecRequest(
            container_id=CONTAINER, cmd=["sh"], tty=True, stdin=True, stdout=True
        ),
        response=pb.ExecResponse(url="http://127.0.0.1:4100/exec/s3cr3tT0k"),
        code="OK",
        started=2.0,
        duration_s=0.001,
    )
    assert (exec_.pod, exec_.container) == ("shop/web", "nginx")
    assert exec_.details == {
        "cmd": ["sh"],
        "tty": True,
        "stdin": True,
        "url": "http://127.0.0.1:4100/exec/<token>",
    }
    forward = rec.record(
        service="RuntimeService",
        method="PortForward",
        request=pb.PortForwardRequest(pod_sandbox_id=SANDBOX, port=[80, 8080]),
        response=pb.PortForwardResponse(url="http://127.0.0.1:4100/portforward/abc"),
        code="OK",
        started=2.1,
        duration_s=0.001,
    )
    assert forward.pod == "shop/web"
    assert forward.details == {
        "ports": [80, 8080],
        "url": "http://127.0.0.1:4100/portforward/<token>",
    }
    assert "s3cr3t" not in format_text(exec_)
