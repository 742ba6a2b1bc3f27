"""A kubelet restart leaves the runtime's containers alone and carries on where it stopped.

The simulated runtime runs as its own process here (as containerd does on a real
node), so the kubelet can stop and start again while the containers go on.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minikubelet.cri.v1 import api_pb2 as pb
from tests.e2e.node import ROOT, Node, container_status, running
from tests.e2e.support import (
    RuntimeWatch,
    pod_events,
    reasons,
    restarts,
    trace,
    traced,
    uid,
)
from tests.harness.wait import wait_until


def _serve(endpoint: str, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "minikubelet", "runtime", "serve", "fake", "--listen", endpoint],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


@pytest.fixture
async def runtime(workdir: Path) -> AsyncIterator[str]:
    """``minikubelet runtime serve fake`` on a socket of its own; yields the endpoint."""
    endpoint = f"unix://{workdir / 'fake.sock'}"
    out = workdir / "runtime.log"
    proc = _serve(endpoint, out)
    try:

        async def serving() -> bool | None:
            if proc.poll() is not None:
                raise AssertionError(f"the runtime exited: {out.read_text()}")
            return True if "serving" in out.read_text() else None

        await wait_until(serving, message="the fake runtime")
        yield endpoint
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _started(workdir: Path, endpoint: str) -> Node:
    node = Node(workdir, runtime=endpoint, extra_args=traced(workdir))
    node.start()
    await node.wait_ready()
    return node


async def test_restarted_kubelet_adopts_running_containers(workdir: Path, runtime: str) -> None:
    first = await _started(workdir, runtime)
    try:
        first.add_manifest("multi-container.yaml")
        first.add_manifest("crash-loop.yaml")
        multi = await first.wait_pod("multi", lambda p: running(p, "app", "helper"))
        crash = await first.wait_pod(
            "crash-loop", lambda p: restarts(p, "crasher") >= 2, what="two restarts"
        )
        before = restarts(crash, "crasher")
    finally:
        assert first.stop() == 0
    assert "Traceback" not in first.log()
    ids = {n: container_status(multi, n)["containerID"].split("://")[1] for n in ("app", "helper")}

    async with RuntimeWatch(runtime) as rt:
        # nothing was stopped with the kubelet
        alive = {i.id for i in await rt.running(uid(multi))}
        assert alive == set(ids.values())
        sandboxes = await rt.cri.list_pod_sandbox()
        assert sum(s.state == pb.SANDBOX_READY for s in sandboxes) == 2

        second = await _started(workdir, runtime)
        try:
            again = await second.wait_pod("multi", lambda p: running(p, "app", "helper"))
            assert uid(again) == uid(multi)
            for name, cid in ids.items():
                cs = container_status(again, name)
                assert cs["containerID"].split("://")[1] == cid
                assert cs["restartCount"] == 0
            crash_again = await second.wait_pod(
                "crash-loop",
                lambda p: restarts(p, "crasher") > before,
                what="the crash loop to go on",
            )
            last = container_status(crash_again, "crasher")["lastState"]["terminated"]
            assert last["exitCode"] == 3

            # one instance of each container runs, in one sandbox per pod: nothing duplicated
            running_now = await rt.running(uid(multi))
            assert sorted(i.name for i in running_now) == ["app", "helper"]
            assert {i.id for i in running_now} == set(ids.values())
            sandboxes = await rt.cri.list_pod_sandbox()
            assert sum(s.state == pb.SANDBOX_READY for s in sandboxes) == 2
            attempts = sorted(i.attempt for i in rt.instances("crasher"))
            assert attempts == sorted(set(attempts)), "a restart count was reused"

            multi_events = reasons(await pod_events(second, "multi"))
            assert not {"Killing", "Created", "Started"} & set(multi_events), multi_events
            async with second.client() as c:
                summary = await c.status()
            assert summary["pods"] == 2
        finally:
            assert second.stop() == 0
        assert "Traceback" not in second.log()


async def test_a_pod_removed_while_the_kubelet_was_down_is_stopped(
    workdir: Path, runtime: str
) -> None:
    first = await _started(workdir, runtime)
    try:
        first.add_manifest("multi-container.yaml")
        first.add_manifest("lifecycle-hooks.yaml")
        first.add_manifest("hello.yaml")
        multi = await first.wait_pod("multi", lambda p: running(p, "app", "helper"))
        hooks = await first.wait_pod("hooks", lambda p: running(p, "app"))
    finally:
        assert first.stop() == 0
    first.remove_manifest("multi-container.yaml")
    first.remove_manifest("lifecycle-hooks.yaml")
    ids = {container_status(multi, n)["containerID"].split("://")[1] for n in ("app", "helper")}
    hook_id = container_status(hooks, "app")["containerID"].split("://")[1]

    second = await _started(workdir, runtime)
    try:
        await second.wait_pod("hello", lambda p: True)
        assert await second.pod("multi") is None

        async def removed() -> list[dict[str, Any]] | None:
            calls = [c for c in trace(workdir) if c["container_id"] in {*ids, hook_id}]
            done = {c["container_id"] for c in calls if c["method"] == "RemoveContainer"}
            return calls if done == {*ids, hook_id} else None

        calls = await wait_until(removed, timeout=20, message="the orphans' RemoveContainer")
    finally:
        assert second.stop() == 0
    assert "Traceback" not in second.log()

    # stopped as the kubelet kills orphans (SIGTERM, the 2 s minimum), then removed
    stops = [c for c in calls if c["method"] == "StopContainer"]
    assert {c["container_id"] for c in stops} == {*ids, hook_id}
    assert {c["details"]["timeout"] for c in stops} == {2}
    for stop in stops:
        remove = next(
            c
            for c in calls
            if c["method"] == "RemoveContainer" and c["container_id"] == stop["container_id"]
        )
        assert remove["time"] >= stop["time"] + stop["duration_ms"] / 1000 - 0.01
    # the preStop hook the container carries runs first, though its manifest is gone
    hook_calls = [c for c in calls if c["container_id"] == hook_id]
    methods = [c["method"] for c in hook_calls if c["method"] != "ContainerStatus"]
    pre_stop = [c for c in hook_calls if c["method"] == "ExecSync"][-1]
    assert pre_stop["details"]["cmd"] == ["sh", "-c", "echo stopping"]
    assert methods[-3:] == ["ExecSync", "StopContainer", "RemoveContainer"]
    async with RuntimeWatch(runtime) as rt:
        assert not [i for i in await rt.poll() if i.pod_uid in (uid(multi), uid(hooks))]
