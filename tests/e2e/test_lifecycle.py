"""A static pod's life after it started: edits, removal, graceful termination, preStop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node import Node, container_status, phase, running
from tests.e2e.support import (
    acli,
    exec_in,
    logs,
    pod_events,
    pod_manifest,
    reasons,
    trace,
    trace_through,
    traced,
    uid,
    wait_gone,
    waiting_reason,
)
from tests.harness.wait import wait_until


@pytest.fixture
async def traced_node(workdir: Path) -> AsyncIterator[Node]:
    """A node that also writes every CRI call to ``workdir/trace.jsonl``."""
    n = Node(workdir, extra_args=traced(workdir))
    n.start()
    try:
        await n.wait_ready()
        yield n
    finally:
        n.stop()
        assert "Traceback" not in n.log(), n.log()[-6000:]


def _sleeper(command: str, *, grace: int | None = None, extra: str = "") -> str:
    lines = f"  terminationGracePeriodSeconds: {grace}\n" if grace is not None else ""
    return pod_manifest(
        "web",
        lines
        + f"""  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "{command}"]
{extra}""",
    )


async def test_editing_a_manifest_replaces_the_pod(traced_node: Node) -> None:
    node = traced_node
    node.add_manifest("web.yaml", _sleeper("trap '' TERM; echo v1; sleep 3600", grace=3))
    old = await node.wait_pod("web", lambda p: running(p, "app"), what="v1 running")
    old_id = container_status(old, "app")["containerID"]

    node.add_manifest("web.yaml", _sleeper("trap '' TERM; echo v2; sleep 3600", grace=3))
    new = await node.wait_pod(
        "web", lambda p: uid(p) != uid(old) and running(p, "app"), what="v2 running"
    )
    assert container_status(new, "app")["containerID"] != old_id
    assert container_status(new, "app")["restartCount"] == 0

    async def only_the_new_one() -> bool | None:
        async with node.client() as c:
            same_name = [p for p in await c.pods() if p["metadata"]["name"] == "web-e2e"]
        return True if [uid(p) for p in same_name] == [uid(new)] else None

    await wait_until(only_the_new_one, message="the old pod to be gone")
    old_events = await pod_events(node, "web", uid(old))
    killing = next(e for e in old_events if e["reason"] == "Killing")
    assert killing["message"] == "Stopping container app"
    assert "Killing" not in reasons(await pod_events(node, "web", uid(new)))
    assert await exec_in(node, "web", "app", "true") == ("", "", 0)
    assert await logs(node, "web", "app") == "v2\n"

    # as the kubelet does with a static pod, the new version starts once the old one is gone
    async def both_started() -> list[dict[str, Any]] | None:
        calls = trace(node.workdir, "web-e2e")
        return calls if [c["method"] for c in calls].count("StartContainer") == 2 else None

    calls = await wait_until(both_started, message="the second StartContainer in the trace")
    stop = next(c for c in calls if c["method"] == "StopContainer")
    sandboxes = [c for c in calls if c["method"] == "RunPodSandbox"]
    assert len(sandboxes) == 2
    assert sandboxes[1]["time"] >= stop["time"] + stop["duration_ms"] / 1000
    assert stop["duration_ms"] >= 2500  # the old one took its grace period to stop


async def test_a_removed_pod_shows_terminating_then_goes(node: Node) -> None:
    node.add_manifest("web.yaml", _sleeper("trap '' TERM; sleep 3600", grace=3))
    pod = await node.wait_pod("web", lambda p: running(p, "app"), what="web running")
    node.remove_manifest("web.yaml")
    terminating = await node.wait_pod(
        "web", lambda p: "deletionTimestamp" in p["metadata"], what="Terminating"
    )
    assert terminating["metadata"]["deletionGracePeriodSeconds"] == 3
    assert uid(terminating) == uid(pod)
    async with node.client() as c:
        table = await c.pods()
    assert any(p["metadata"]["name"] == "web-e2e" for p in table)
    await wait_gone(node, "web")
    assert reasons(await pod_events(node, "web")).count("Killing") == 1


async def test_graceful_termination_waits_for_the_grace_period(traced_node: Node) -> None:
    node = traced_node
    node.add_manifest("web.yaml", _sleeper("trap '' TERM; sleep 3600", grace=3))
    await node.wait_pod("web", lambda p: running(p, "app"), what="web running")
    removed = time.monotonic()
    node.remove_manifest("web.yaml")
    await wait_gone(node, "web")
    took = time.monotonic() - removed
    assert took >= 2.5, took

    calls = await trace_through(node.workdir, "web-e2e", "RemovePodSandbox")
    stop = next(c for c in calls if c["method"] == "StopContainer")
    assert stop["details"]["timeout"] == 3
    assert 2500 <= stop["duration_ms"] <= 4500, stop
    after = [
        c
        for c in calls
        if c["method"] == "ContainerStatus" and c["seq"] > stop["seq"] and c["container"] == "app"
    ]
    assert after and after[0]["details"]["exit_code"] == 137, after
    methods = [c["method"] for c in calls if c["seq"] > stop["seq"]]
    assert "StopPodSandbox" in methods and "RemovePodSandbox" in methods


async def test_a_container_that_honours_sigterm_stops_at_once(traced_node: Node) -> None:
    node = traced_node
    node.add_manifest("web.yaml", _sleeper("trap 'exit 0' TERM; sleep 3600", grace=30))
    await node.wait_pod("web", lambda p: running(p, "app"), what="web running")
    node.remove_manifest("web.yaml")
    await wait_gone(node, "web", timeout=10)
    calls = await trace_through(node.workdir, "web-e2e", "RemovePodSandbox")
    stop = next(c for c in calls if c["method"] == "StopContainer")
    assert stop["details"]["timeout"] == 30
    assert stop["duration_ms"] < 1000
    status = next(
        c
        for c in calls
        if c["method"] == "ContainerStatus" and c["seq"] > stop["seq"] and c["container"] == "app"
    )
    assert status["details"].get("exit_code", 0) == 0


PRE_STOP = """      lifecycle:
        preStop:
          exec: {command: ["sh", "-c", "sleep 2"]}
"""


async def test_pre_stop_runs_inside_the_grace_period(traced_node: Node) -> None:
    node = traced_node
    node.add_manifest("web.yaml", _sleeper("trap '' TERM; sleep 3600", grace=4, extra=PRE_STOP))
    await node.wait_pod("web", lambda p: running(p, "app"), what="web running")
    removed = time.monotonic()
    node.remove_manifest("web.yaml")
    await wait_gone(node, "web")
    took = time.monotonic() - removed

    calls = await trace_through(node.workdir, "web-e2e", "RemovePodSandbox")
    hook = next(c for c in calls if c["method"] == "ExecSync")
    assert hook["details"]["cmd"] == ["sh", "-c", "sleep 2"]
    stop = next(c for c in calls if c["method"] == "StopContainer")
    assert hook["seq"] < stop["seq"]
    # the hook took 2 of the 4 seconds; the container gets what is left, not 4 more
    assert stop["details"]["timeout"] == 2
    ended = stop["time"] + stop["duration_ms"] / 1000
    assert 3.5 <= ended - hook["time"] <= 5.0, ended - hook["time"]
    assert 3.5 <= took <= 9.0, took
    assert "FailedPreStopHook" not in reasons(await pod_events(node, "web"))


async def test_lifecycle_hooks_pre_stop_on_removal(traced_node: Node) -> None:
    node = traced_node
    node.add_manifest("lifecycle-hooks.yaml")
    pod = await node.wait_pod("hooks", lambda p: running(p, "app"), what="hooks running")
    container_id = container_status(pod, "app")["containerID"].split("://")[1]
    node.remove_manifest("lifecycle-hooks.yaml")
    await wait_gone(node, "hooks")

    events = reasons(await pod_events(node, "hooks"))
    assert events.index("Started") < events.index("Killing")
    assert "FailedPreStopHook" not in events
    assert "FailedPostStartHook" not in events
    calls = await trace_through(node.workdir, "hooks-e2e", "RemovePodSandbox")
    calls = [c for c in calls if c["container_id"] == container_id]
    methods = [c["method"] for c in calls if c["method"] != "ContainerStatus"]
    assert methods == ["CreateContainer", "StartContainer", *methods[2:]]
    post_start, pre_stop = [c for c in calls if c["method"] == "ExecSync"]
    assert post_start["details"]["cmd"] == ["sh", "-c", "echo started > /tmp/poststart"]
    assert pre_stop["details"]["cmd"] == ["sh", "-c", "echo stopping"]
    assert (pre_stop["code"], pre_stop["details"]["exit_code"]) == ("OK", 0)
    assert methods[-2:] == ["StopContainer", "RemoveContainer"]
    assert methods.index("ExecSync", 3) < methods.index("StopContainer")


async def test_a_failing_pre_stop_hook_is_reported(node: Node) -> None:
    hook = """      lifecycle:
        preStop:
          exec: {command: ["sh", "-c", "echo no >&2; exit 7"]}
"""
    node.add_manifest("web.yaml", _sleeper("sleep 3600", grace=5, extra=hook))
    await node.wait_pod("web", lambda p: running(p, "app"), what="web running")
    node.remove_manifest("web.yaml")
    await wait_gone(node, "web")
    events = await pod_events(node, "web")
    failed = next(e for e in events if e["reason"] == "FailedPreStopHook")
    assert (failed["type"], failed["message"]) == ("Warning", "PreStopHook failed")
    assert "exited with 7" in node.log()  # the details go to the kubelet's log only
    assert failed["involvedObject"]["fieldPath"] == "spec.containers{app}"
    order = reasons(events)
    assert order.index("Killing") < order.index("FailedPreStopHook")


async def test_a_completed_pod_is_not_restarted_when_resynced(node: Node) -> None:
    node.add_manifest("hello.yaml")
    done = await node.wait_pod("hello", lambda p: phase(p) == "Succeeded", what="hello done")
    node.add_manifest("multi-container.yaml")  # a change in the directory: a full relisting
    await node.wait_pod("multi", lambda p: running(p, "app", "helper"), what="multi running")
    again = await node.pod("hello")
    assert again is not None and phase(again) == "Succeeded"
    assert (
        container_status(again, "hello")["containerID"]
        == (container_status(done, "hello")["containerID"])
    )
    assert reasons(await pod_events(node, "hello")).count("Started") == 1


async def test_removing_a_completed_pods_manifest_removes_the_pod(node: Node) -> None:
    node.add_manifest("hello.yaml")
    await node.wait_pod("hello", lambda p: phase(p) == "Succeeded", what="hello done")
    node.remove_manifest("hello.yaml")
    await wait_gone(node, "hello", timeout=15)


async def test_a_manifest_put_back_while_terminating_runs_again(node: Node) -> None:
    text = _sleeper("trap '' TERM; sleep 3600", grace=2)
    node.add_manifest("web.yaml", text)
    first = await node.wait_pod("web", lambda p: running(p, "app"), what="web running")
    first_id = container_status(first, "app")["containerID"]
    node.remove_manifest("web.yaml")
    await node.wait_pod("web", lambda p: "deletionTimestamp" in p["metadata"], what="Terminating")
    node.add_manifest("web.yaml", text)  # same content: the same UID
    again = await node.wait_pod(
        "web",
        lambda p: (
            running(p, "app")
            and container_status(p, "app")["containerID"] != first_id
            and "deletionTimestamp" not in p["metadata"]
        ),
        what="web running again",
    )
    assert uid(again) == uid(first)
    assert container_status(again, "app")["restartCount"] == 0


async def test_a_manifest_put_back_after_termination_runs_again(node: Node) -> None:
    text = _sleeper("sleep 3600", grace=2)
    node.add_manifest("web.yaml", text)
    first = await node.wait_pod("web", lambda p: running(p, "app"), what="web running")
    first_id = container_status(first, "app")["containerID"]
    node.remove_manifest("web.yaml")
    await wait_gone(node, "web")
    node.add_manifest("web.yaml", text)
    again = await node.wait_pod(
        "web",
        lambda p: running(p, "app") and container_status(p, "app")["containerID"] != first_id,
        what="web running again",
    )
    assert uid(again) == uid(first)
    assert container_status(again, "app")["restartCount"] == 0


async def test_a_pod_waiting_for_a_host_file_starts_soon_after_it_appears(
    node: Node, tmp_path: Path
) -> None:
    """A pod whose volume cannot be set up waits in ContainerCreating with FailedMount
    events, and is tried again after the kubelet's 10 s back-off period, not only at the
    next full resync a minute later."""
    wanted = tmp_path / "host-config"
    volume = f"""      volumeMounts:
        - {{name: config, mountPath: /config}}
  volumes:
    - name: config
      hostPath: {{path: {wanted}, type: File}}
"""
    node.add_manifest("web.yaml", _sleeper("sleep 3600", grace=2, extra=volume))
    pending = await node.wait_pod(
        "web", lambda p: waiting_reason(p, "app") == "ContainerCreating", what="ContainerCreating"
    )
    assert phase(pending) == "Pending"

    async def failed_mount() -> dict[str, Any] | None:
        found = [e for e in await pod_events(node, "web") if e["reason"] == "FailedMount"]
        return found[0] if found else None

    failed = await wait_until(failed_mount, message="a FailedMount event")
    assert failed["type"] == "Warning" and str(wanted) in failed["message"]
    table = await acli(node, "get", "pods")
    row = next(line.split() for line in table.stdout.splitlines() if "web-e2e" in line)
    assert row[1:3] == ["0/1", "ContainerCreating"]

    wanted.write_text("ok\n")
    written = time.monotonic()
    await node.wait_pod("web", lambda p: running(p, "app"), timeout=30, what="web running")
    assert time.monotonic() - written <= 16
