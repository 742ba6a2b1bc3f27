"""The kubelet end to end on real containers: the example manifests, verbatim, on containerd.

One node (``minikubelet run --runtime unix://<harness containerd>``) serves the
whole module; each test adds its manifests and removes them when it is done, so
pods that take their grace period to stop (``sh`` as PID 1 ignores SIGTERM: 30 s)
do so while later tests run. The kubelet restart comes before those, so that no
pod is terminating when the kubelet stops. The node's CRI trace (``--trace-file``)
shows what the kubelet asked of containerd.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from minikubelet.cri.client import CRIClient
from minikubelet.cri.trace import CallRecord
from minikubelet.cri.v1 import api_pb2 as pb
from minikubelet.errors import CRIError
from tests.e2e.containerd_fixtures import ContainerdNode, cri_client, ctrd_node
from tests.e2e.node import condition, container_status, phase, running
from tests.e2e.support import wait_gone
from tests.harness.containerd import Containerd
from tests.harness.egress import EgressTrap
from tests.harness.fixtures import HUB_BUSYBOX_REPO, HUB_BUSYBOX_TAG, HarnessImages
from tests.harness.registry import LocalRegistry
from tests.harness.wait import wait_until

pytestmark = pytest.mark.containerd

__all__ = ("cri_client", "ctrd_node")  # fixtures used by the tests below

STUBBORN = """\
# PID 1 of its PID namespace with no handler: SIGTERM does nothing, SIGKILL ends it.
apiVersion: v1
kind: Pod
metadata:
  name: stubborn
spec:
  terminationGracePeriodSeconds: 3
  containers:
    - name: sleeper
      image: busybox:1.36
      command: ["sleep", "3600"]
"""

SURVIVOR = """\
# An init container, a sidecar and an app, all quick to stop (3 s grace, then SIGKILL).
apiVersion: v1
kind: Pod
metadata:
  name: survivor
spec:
  terminationGracePeriodSeconds: 3
  initContainers:
    - name: setup
      image: busybox:1.36
      command: ["sh", "-c", "echo set up"]
    - name: shipper
      image: busybox:1.36
      restartPolicy: Always
      command: ["sleep", "3600"]
  containers:
    - name: app
      image: busybox:1.36
      command: ["sleep", "3600"]
"""

ON_FAILURE_OK = """\
apiVersion: v1
kind: Pod
metadata:
  name: onfailure-ok
spec:
  restartPolicy: OnFailure
  containers:
    - name: job
      image: busybox:1.36
      command: ["sh", "-c", "echo done; exit 0"]
"""

NEVER_FAILS = """\
apiVersion: v1
kind: Pod
metadata:
  name: never-fails
spec:
  restartPolicy: Never
  containers:
    - name: job
      image: busybox:1.36
      command: ["sh", "-c", "echo failing >&2; exit 1"]
"""


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _starts(calls: list[CallRecord], pod: str) -> list[str]:
    """Container names in the order the kubelet started them in ``pod`` (``ns/name``)."""
    return [c.container for c in calls if c.method == "StartContainer" and c.pod == pod]


def _seq(calls: list[CallRecord], method: str, pod: str, container: str) -> int:
    return next(c.seq for c in calls if (c.method, c.pod, c.container) == (method, pod, container))


async def _exec(node: ContainerdNode, pod: str, container: str, *cmd: str) -> tuple[str, int]:
    async with node.client() as c:
        result = await c.exec("default", node.pod_name(pod), container, list(cmd), timeout=10)
    return result.stdout.decode(), result.exit_code


# -- the image: docker.io comes from the local registry -----------------------------------------


async def test_docker_hub_busybox_comes_from_the_local_registry(
    containerd: Containerd,
    cri_client: CRIClient,
    local_registry: LocalRegistry,
    test_images: HarnessImages,
    egress_trap: EgressTrap,
) -> None:
    """``busybox:1.36`` as the manifests name it pulls from 127.0.0.1 and nowhere else."""
    before = len(local_registry.requests())
    image_ref = await cri_client.pull_image("busybox:1.36")
    status = await cri_client.image_status(test_images.hub_busybox)
    assert status is not None and status.id == image_ref
    assert f"docker.io/{HUB_BUSYBOX_REPO}:{HUB_BUSYBOX_TAG}" in status.repo_tags
    assert f"docker.io/{HUB_BUSYBOX_REPO}@{test_images.busybox_digest}" in status.repo_digests
    served = local_registry.requests()[before:]
    # containerd names the namespace it resolves through a mirror host: ?ns=docker.io.
    manifest_path = f"/v2/{HUB_BUSYBOX_REPO}/manifests/{HUB_BUSYBOX_TAG}?ns=docker.io"
    assert any(
        r.path == manifest_path and r.status == 200 and r.user_agent.startswith("containerd")
        for r in served
    ), served
    assert egress_trap.unexpected() == []
    assert "registry-1.docker.io" not in containerd.log_path.read_text(errors="replace")


async def test_a_registry_off_the_machine_is_refused_by_the_egress_trap(
    cri_client: CRIClient, egress_trap: EgressTrap
) -> None:
    """What makes the check above mean something: containerd's way out is the trap."""
    with pytest.raises(CRIError, match="Forbidden"):
        await cri_client.pull_image("registry.minikubelet.invalid/busybox:1")
    assert "CONNECT registry.minikubelet.invalid:443 HTTP/1.1" in egress_trap.attempts


# -- pods ----------------------------------------------------------------------------------------


async def test_hello_succeeds_with_logs_from_the_cri_log_file(ctrd_node: ContainerdNode) -> None:
    node = ctrd_node
    node.add_manifest("hello.yaml")
    pod = await node.wait_pod("hello", lambda p: phase(p) == "Succeeded", what="hello to succeed")
    cs = container_status(pod, "hello")
    assert (cs["state"]["terminated"]["exitCode"], cs["state"]["terminated"]["reason"]) == (
        0,
        "Completed",
    )
    assert cs["containerID"].startswith("containerd://")
    async with node.client() as c:
        text = b"".join(
            [chunk async for chunk in c.logs("default", node.pod_name("hello"), "hello")]
        )
    assert text.decode().splitlines() == ["hello from minikubelet", "goodbye"]
    # containerd itself wrote the file, in the CRI format: TIME STREAM TAG MESSAGE.
    (log_file,) = (node.root_dir / "pod-logs").glob(
        f"default_{node.pod_name('hello')}_*/hello/0.log"
    )
    assert [line.split(" ", 1)[1] for line in log_file.read_text().splitlines()] == [
        "stdout F hello from minikubelet",
        "stdout F goodbye",
    ]
    node.remove_manifest("hello.yaml")
    await wait_gone(node, "hello")


HOST_ALIASES = """\
# From "Adding entries to Pod /etc/hosts with HostAliases".
apiVersion: v1
kind: Pod
metadata:
  name: hostaliases-pod
spec:
  restartPolicy: Never
  hostAliases:
    - ip: "127.0.0.1"
      hostnames: ["foo.local", "bar.local"]
    - ip: "10.1.2.3"
      hostnames: ["foo.remote", "bar.remote"]
  containers:
    - name: cat-hosts
      image: busybox:1.36
      command: ["cat", "/etc/hosts"]
"""


async def test_etc_hosts_is_the_kubelets_with_host_aliases(ctrd_node: ContainerdNode) -> None:
    node = ctrd_node
    node.add_manifest("hostaliases.yaml", HOST_ALIASES)
    pod = await node.wait_pod(
        "hostaliases-pod", lambda p: phase(p) == "Succeeded", what="hostaliases-pod to succeed"
    )
    async with node.client() as c:
        text = b"".join(
            [
                chunk
                async for chunk in c.logs("default", node.pod_name("hostaliases-pod"), "cat-hosts")
            ]
        ).decode()
    # the file the kubelet wrote in the pod's directory, not containerd's own
    etc_hosts = node.root_dir / "pods" / pod["metadata"]["uid"] / "etc-hosts"
    assert text == etc_hosts.read_text()
    lines = text.splitlines()
    assert lines[0] == "# Kubernetes-managed hosts file."
    assert lines[1:3] == ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    assert f"{pod['status']['podIP']}\thostaliases-pod-{node.node_name}" in lines
    assert lines[-4:] == [
        "",
        "# Entries added by HostAliases.",
        "127.0.0.1\tfoo.local\tbar.local",
        "10.1.2.3\tfoo.remote\tbar.remote",
    ]
    node.remove_manifest("hostaliases.yaml")
    await wait_gone(node, "hostaliases-pod")


async def test_crash_loop_backs_off_longer_each_time(ctrd_node: ContainerdNode) -> None:
    """restartPolicy Always, exit 3: restarted with the (shortened) back-off 1s, 2s, 4s."""
    node = ctrd_node
    node.add_manifest("crash-loop.yaml")
    restarted_at: dict[int, float] = {}
    waiting: set[tuple[str, str]] = set()

    def observe(pod: dict[str, Any]) -> bool:
        cs = container_status(pod, "crasher")
        count = int(cs.get("restartCount", 0))
        restarted_at.setdefault(count, time.monotonic())
        state = cs.get("state", {}).get("waiting")
        if state:
            waiting.add((state.get("reason", ""), state.get("message", "")))
        return count >= 4

    pod = await node.wait_pod("crash-loop", observe, timeout=40, what="crash-loop restart 4")
    cs = container_status(pod, "crasher")
    terminated = cs["lastState"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (3, "Error"), cs
    reasons = {reason for reason, _ in waiting}
    assert "CrashLoopBackOff" in reasons, waiting
    messages = " ".join(message for _, message in waiting)
    for delay in ("1s", "2s", "4s"):
        assert f"back-off {delay} restarting failed container=crasher" in messages, waiting
    # Each run takes ~1 s (sleep 1); the pause before the next one doubles.
    gaps = [restarted_at[n + 1] - restarted_at[n] for n in (1, 2, 3)]
    assert gaps[0] < gaps[1] < gaps[2] and gaps[2] - gaps[0] > 2.0, gaps  # ~2 s, 3 s, 5 s
    assert gaps[2] < 4 + 1 + 3, gaps  # bounded by max back-off + run time + slack
    async with node.client() as c:
        previous = b"".join(
            [
                x
                async for x in c.logs(
                    "default", node.pod_name("crash-loop"), "crasher", previous=True
                )
            ]
        )
    assert previous.decode().splitlines() == ["starting", "giving up"]


async def test_kubelet_restart_keeps_containers_and_restart_counts(
    ctrd_node: ContainerdNode, cri_client: CRIClient
) -> None:
    """A new kubelet on the same root dir adopts the running containers and counts on."""
    node = ctrd_node
    node.add_manifest("survivor.yaml", SURVIVOR)
    node.add_manifest("crash-loop.yaml")  # the same file again: no change if already there
    steady = await node.wait_pod(
        "survivor", lambda p: running(p, "shipper", "app"), what="survivor running"
    )
    crashing = await node.wait_pod(
        "crash-loop",
        lambda p: int(container_status(p, "crasher").get("restartCount", 0)) >= 1,
        what="crash-loop to have restarted",
    )
    before = {n: container_status(steady, n) for n in ("setup", "shipper", "app")}
    ids = {n: cs["containerID"].split("://", 1)[1] for n, cs in before.items()}
    restarts = int(container_status(crashing, "crasher")["restartCount"])

    async def none_terminating() -> bool | None:
        pods = (await node.pods()).values()
        return not any("deletionTimestamp" in p["metadata"] for p in pods) or None

    # (A pod still terminating would become an orphan of the new kubelet: not tested here.)
    await wait_until(none_terminating, timeout=40, message="no pod to be terminating")
    code = node.stop()
    assert code == 0, node.log()[-4000:]
    for name in ("shipper", "app"):  # nobody stopped them meanwhile
        status = (await cri_client.container_status(ids[name])).status
        assert status.state == pb.CONTAINER_RUNNING, name
    restarted = time.time()
    node.start()
    await node.wait_ready()

    counts: list[int] = []

    def restarted_again(pod: dict[str, Any]) -> bool:
        cs = container_status(pod, "crasher")
        if "restartCount" in cs:  # once the new kubelet has synced the pod
            counts.append(int(cs["restartCount"]))
        return bool(counts) and counts[-1] > restarts

    await node.wait_pod("crash-loop", restarted_again, what="crash-loop to go on")
    assert min(counts) >= restarts, counts  # counted on from the runtime, not from zero
    after = await node.wait_pod(
        "survivor", lambda p: running(p, "shipper", "app"), what="survivor running"
    )
    for name, cs in before.items():
        now = container_status(after, name)
        assert now["containerID"] == cs["containerID"], name
        assert now["state"] == cs["state"], name
        assert now["restartCount"] == 0, name
    assert phase(after) == "Running" and condition(after, "Initialized") == "True"
    pod_ref = f"default/{node.pod_name('survivor')}"
    touched = [
        c
        for c in node.calls()
        if c.time >= restarted  # the new kubelet's calls
        and c.method in ("RunPodSandbox", "CreateContainer", "StartContainer", "StopContainer")
        and (c.pod == pod_ref or c.container_id in ids.values())
    ]
    assert touched == []
    node.remove_manifest("crash-loop.yaml")

    # Termination: the app first, with the pod's 3 s; the sidecar then, with what is left
    # of it, but never less than 2 s.
    node.remove_manifest("survivor.yaml")
    await wait_gone(node, "survivor")

    def both_stopped() -> dict[str, object] | None:
        found = {
            c.container: c.details.get("timeout")
            for c in node.calls("StopContainer")
            if c.container_id in ids.values()
        }
        return found if len(found) == 2 else None  # the sidecar's stop comes after the app's

    stops = await wait_until(both_stopped, message="survivor's two StopContainer calls")
    assert stops == {"app": 3, "shipper": 2}, stops


async def test_init_containers_run_in_order_to_completion(ctrd_node: ContainerdNode) -> None:
    node = ctrd_node
    node.add_manifest("init-containers.yaml")
    pod = await node.wait_pod("init-demo", lambda p: running(p, "app"), what="init-demo's app")
    fetch, migrate = container_status(pod, "fetch"), container_status(pod, "migrate")
    for cs in (fetch, migrate):
        terminated = cs["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed"), cs
    app_started = container_status(pod, "app")["state"]["running"]["startedAt"]
    assert _time(fetch["state"]["terminated"]["finishedAt"]) <= _time(
        migrate["state"]["terminated"]["startedAt"]
    )
    assert _time(migrate["state"]["terminated"]["finishedAt"]) <= _time(app_started)
    assert condition(pod, "Initialized") == "True"
    pod_ref = f"default/{node.pod_name('init-demo')}"
    await wait_until(lambda: len(_starts(node.calls(), pod_ref)) == 3, message="init-demo's trace")
    assert _starts(node.calls(), pod_ref) == ["fetch", "migrate", "app"]
    async with node.client() as c:
        text = b"".join([x async for x in c.logs("default", node.pod_name("init-demo"), "migrate")])
    assert text.decode().splitlines() == ["migrating", "migrated"]
    node.remove_manifest("init-containers.yaml")  # sh as PID 1: stops after its 30 s


async def test_sidecar_starts_before_the_app(ctrd_node: ContainerdNode) -> None:
    node = ctrd_node
    node.add_manifest("sidecar.yaml")
    pod = await node.wait_pod(
        "sidecar-demo", lambda p: running(p, "log-shipper", "app"), what="sidecar-demo running"
    )
    shipper, app = container_status(pod, "log-shipper"), container_status(pod, "app")
    assert shipper in pod["status"]["initContainerStatuses"]
    assert _time(shipper["state"]["running"]["startedAt"]) <= _time(
        app["state"]["running"]["startedAt"]
    )
    pod_ref = f"default/{node.pod_name('sidecar-demo')}"
    await wait_until(lambda: len(_starts(node.calls(), pod_ref)) == 2, message="sidecar's trace")
    calls = node.calls()
    assert _starts(calls, pod_ref) == ["log-shipper", "app"]
    # the app is created only once the sidecar has started
    assert _seq(calls, "StartContainer", pod_ref, "log-shipper") < _seq(
        calls, "CreateContainer", pod_ref, "app"
    )
    node.remove_manifest("sidecar.yaml")


async def test_readiness_follows_a_real_exec_probe(ctrd_node: ContainerdNode) -> None:
    """Ready only while ``cat /tmp/ready`` (run in the container via ExecSync) succeeds."""
    node = ctrd_node
    node.add_manifest("probes.yaml")
    unready_while_running = False

    def ready(pod: dict[str, Any]) -> bool:
        nonlocal unready_while_running
        if running(pod, "app") and condition(pod, "Ready") == "False":
            unready_while_running = True
        return condition(pod, "Ready") == "True"

    await node.wait_pod("probes", ready, what="probes to be Ready")
    assert unready_while_running  # during the 2 s warm-up
    messages = [
        e["message"]
        for e in await node.events()
        if e["reason"] == "Unhealthy" and e["involvedObject"]["name"] == node.pod_name("probes")
    ]
    # busybox's own words, from inside the container
    assert "Readiness probe failed: cat: can't open '/tmp/ready': No such file or directory" in (
        m.strip() for m in messages
    ), messages
    assert await _exec(node, "probes", "app", "cat", "/tmp/ready") == ("", 0)

    assert (await _exec(node, "probes", "app", "rm", "/tmp/ready"))[1] == 0
    await node.wait_pod(
        "probes", lambda p: condition(p, "Ready") == "False", what="probes to turn unready"
    )
    assert (await _exec(node, "probes", "app", "touch", "/tmp/ready"))[1] == 0
    pod = await node.wait_pod(
        "probes", lambda p: condition(p, "Ready") == "True", what="probes to be Ready again"
    )
    assert container_status(pod, "app")["restartCount"] == 0  # readiness never restarts
    node.remove_manifest("probes.yaml")


async def test_post_start_hook_runs_in_the_container(ctrd_node: ContainerdNode) -> None:
    node = ctrd_node
    node.add_manifest("lifecycle-hooks.yaml")
    await node.wait_pod("hooks", lambda p: running(p, "app"), what="hooks running")
    assert await _exec(node, "hooks", "app", "cat", "/tmp/poststart") == ("started\n", 0)
    pod_ref = f"default/{node.pod_name('hooks')}"

    node.remove_manifest("lifecycle-hooks.yaml")

    def pre_stop_ran() -> bool | None:
        calls = node.calls("ExecSync")
        return (
            any(
                c.pod == pod_ref and c.details.get("cmd", [])[-1:] == ["echo stopping"]
                for c in calls
            )
            or None
        )

    await wait_until(pre_stop_ran, message="the preStop hook to run")


async def test_grace_period_then_sigkill(ctrd_node: ContainerdNode) -> None:
    """A PID 1 that ignores SIGTERM is killed when its 3 s grace period is over: exit 137."""
    node = ctrd_node
    node.add_manifest("stubborn.yaml", STUBBORN)
    pod = await node.wait_pod("stubborn", lambda p: running(p, "sleeper"), what="stubborn running")
    cid = container_status(pod, "sleeper")["containerID"].split("://", 1)[1]

    started = time.monotonic()
    node.remove_manifest("stubborn.yaml")
    await wait_gone(node, "stubborn")
    took = time.monotonic() - started
    assert 2.5 <= took <= 12, took

    def stopped() -> list[CallRecord] | None:
        calls = [c for c in node.calls() if c.container_id == cid]
        exited = any(c.details.get("state") == "CONTAINER_EXITED" for c in calls)
        return calls if exited and any(c.method == "StopContainer" for c in calls) else None

    calls = await wait_until(stopped, message="StopContainer in the trace")
    (stop,) = [c for c in calls if c.method == "StopContainer"]
    assert stop.details.get("timeout") == 3
    assert 2500 <= stop.duration_ms <= 8000, stop
    exits = {
        c.details.get("exit_code") for c in calls if c.details.get("state") == "CONTAINER_EXITED"
    }
    assert exits == {137}, calls


async def test_restart_policies_on_failure_and_never(ctrd_node: ContainerdNode) -> None:
    node = ctrd_node
    node.add_manifest("onfailure-ok.yaml", ON_FAILURE_OK)
    node.add_manifest("never-fails.yaml", NEVER_FAILS)
    ok = await node.wait_pod("onfailure-ok", lambda p: phase(p) == "Succeeded", what="Succeeded")
    failed = await node.wait_pod("never-fails", lambda p: phase(p) == "Failed", what="Failed")
    for pod, code, reason in ((ok, 0, "Completed"), (failed, 1, "Error")):
        cs = container_status(pod, "job")
        terminated = cs["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"], cs["restartCount"]) == (
            code,
            reason,
            0,
        )
    node.remove_manifest("onfailure-ok.yaml")
    node.remove_manifest("never-fails.yaml")
    await wait_gone(node, "onfailure-ok")
    await wait_gone(node, "never-fails")
