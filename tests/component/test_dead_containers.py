"""A crash loop on the simulated runtime, through a whole kubelet and the real CRI client:
the runtime keeps one exited instance per container name, as the kubelet's container
deletor leaves it, and ``restartCount`` and ``lastState`` are read from what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minikubelet.cli.run import build_kubelet
from minikubelet.cri.client import CRIClient
from minikubelet.cri.services import RuntimeHandlers
from minikubelet.cri.trace import TraceRecorder
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.kubelet import Kubelet, KubeletConfig
from minikubelet.kuberuntime.labels import CONTAINER_NAME_LABEL
from runtimes.base.listener import serving
from runtimes.fake.images import FakeImages
from runtimes.fake.server import FakeRuntime
from tests.harness.wait import wait_until

CRASHES = 3

MANIFEST = """\
apiVersion: v1
kind: Pod
metadata:
  name: crasher
spec:
  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "echo run; sleep 0.6; exit 3"]
"""


@pytest.fixture
async def cri(tmp_path: Path) -> AsyncIterator[CRIClient]:
    images = FakeImages()
    runtime = FakeRuntime(images)
    sock = tmp_path / "run" / "fake.sock"
    runner = asyncio.create_task(runtime.run())
    try:
        async with (
            serving(f"unix://{sock}", runtime, images, grace=0.5),
            CRIClient(f"unix://{sock}", recorder=TraceRecorder()) as client,
        ):
            yield client
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


@pytest.fixture
async def kubelet(
    cri: CRIClient, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Kubelet]:
    """A kubelet on one pod: the crasher, or the manifest an indirect parameter gives."""
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "pod.yaml").write_text(getattr(request, "param", MANIFEST))
    config = KubeletConfig(
        node_name="node1",
        root_dir=tmp_path / "root",
        manifests=manifests,
        relist_period=0.05,
        file_check_period=0.2,
        crash_loop_initial=0.4,
        crash_loop_max=0.4,
        # the periodic sweep stays out of the way (the kubelet runs its container GC once a
        # minute): what removes the older dead instances here is the deletor, at each death;
        # a test that wants the sweep calls housekeeping() itself
        housekeeping_period=3600,
        serve_api=False,
    )
    node = build_kubelet(config, RuntimeHandlers(cri), trace=cri.recorder)
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await node.shutdown_pods(0)
        await node.release_host()


def _app(node: Kubelet) -> dict[str, Any]:
    pods = list(node.pods.all())
    if not pods:
        return {}
    status = node.status_manager.get(pods[0].uid) or {}
    found = [c for c in status.get("containerStatuses", []) if c["name"] == "app"]
    return found[0] if found else {}


async def _held(cri: CRIClient) -> list[pb.ContainerStatus]:
    """The instances of ``app`` the runtime holds (ListContainers), oldest attempt first."""
    listed = [c for c in await cri.list_containers() if c.labels[CONTAINER_NAME_LABEL] == "app"]
    statuses = [(await cri.container_status(c.id)).status for c in listed]
    return sorted(statuses, key=lambda s: s.metadata.attempt)


def _time(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def test_a_crash_loop_keeps_one_dead_instance(kubelet: Kubelet, cri: CRIClient) -> None:
    # after CRASHES crashes the next run is up: restartCount is the number of crashes
    app = await wait_until(
        lambda: (
            (c := _app(kubelet)).get("restartCount") == CRASHES and "running" in c["state"] and c
        ),
        timeout=30,
        message=f"the app running again after {CRASHES} crashes",
    )
    held = await _held(cri)
    assert [(s.metadata.attempt, s.state) for s in held] == [
        (CRASHES - 1, pb.CONTAINER_EXITED),
        (CRASHES, pb.CONTAINER_RUNNING),
    ]
    previous, current = held
    assert app["containerID"].endswith(current.id)
    last = app["lastState"]["terminated"]
    assert last["containerID"].endswith(previous.id)
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    assert last["finishedAt"] == _time(previous.finished_at)

    # it crashes again: the instance before it goes, the one that just died stays
    app = await wait_until(
        lambda: (
            (c := _app(kubelet))
            .get("lastState", {})
            .get("terminated", {})
            .get("containerID", "")
            .endswith(current.id)
            and c
        ),
        timeout=10,
        message="the status after one more crash",
    )
    held = await _held(cri)
    exited = [s for s in held if s.state == pb.CONTAINER_EXITED]
    assert [s.id for s in exited] == [current.id]
    assert app["restartCount"] in (CRASHES, CRASHES + 1)  # back-off, or already running again
    assert app["lastState"]["terminated"]["exitCode"] == 3


SLEEPER = """\
apiVersion: v1
kind: Pod
metadata:
  name: sleeper
spec:
  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "sleep 3600"]
"""


@pytest.mark.parametrize("kubelet", [SLEEPER], indirect=True, ids=["sleeper"])
async def test_a_recreated_sandbox_keeps_the_last_dead_instance(
    kubelet: Kubelet, cri: CRIClient
) -> None:
    """The sandbox dies; the kubelet makes a new one and starts the container again. The
    garbage collector keeps the old sandbox while it holds the dead instance, so the
    container's lastState stays what it was."""

    def running(restarts: int) -> dict[str, Any] | None:
        c = _app(kubelet)
        ok = c.get("restartCount", 0) == restarts and "running" in c.get("state", {})
        return c if ok else None

    first = await wait_until(lambda: running(0), timeout=10, message="the app running")
    [old_sandbox] = await cri.list_pod_sandbox()
    await cri.stop_pod_sandbox(old_sandbox.id)
    again = await wait_until(
        lambda: running(1), timeout=10, message="the app running in a new sandbox"
    )
    assert again["lastState"]["terminated"]["containerID"] == first["containerID"]

    await kubelet.housekeeping()
    held = await _held(cri)
    assert [(s.metadata.attempt, s.state) for s in held] == [
        (0, pb.CONTAINER_EXITED),
        (1, pb.CONTAINER_RUNNING),
    ]
    assert old_sandbox.id in {s.id for s in await cri.list_pod_sandbox()}
    # the next sync still reads the last state from the runtime
    [pod] = kubelet.pods.all()
    await kubelet.sync_pod(pod)
    app = _app(kubelet)
    assert (app["restartCount"], app["containerID"]) == (1, again["containerID"])
    assert app["lastState"]["terminated"]["containerID"] == first["containerID"]
