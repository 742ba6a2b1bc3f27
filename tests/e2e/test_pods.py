"""Every example manifest, restart policies, image pulls and probes, end to end.

Each test drops manifests into a fresh node's directory and watches what a user
sees: the pod's status as the kubelet reports it, its events, logs and exec.
"""

from __future__ import annotations

import itertools
from typing import Any

from tests.e2e.node import Node, condition, container_status, phase, running
from tests.e2e.support import (
    RuntimeWatch,
    acli,
    bundled_runtime,
    exec_in,
    logs,
    pod_events,
    pod_manifest,
    ready,
    reasons,
    restarts,
    state,
    uid,
    waiting_reason,
    when,
)
from tests.harness.wait import wait_until

# -- the example manifests --------------------------------------------------------------


async def test_hello_succeeds_and_shows_completed(node: Node) -> None:
    node.add_manifest("hello.yaml")
    pod = await node.wait_pod("hello", lambda p: phase(p) == "Succeeded", what="hello done")
    cs = container_status(pod, "hello")
    terminated = cs["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert (cs["ready"], cs["started"], cs["restartCount"]) == (False, False, 0)
    assert when(terminated["finishedAt"]) >= when(terminated["startedAt"])
    assert condition(pod, "Ready") == "False"
    assert condition(pod, "Initialized") == "True"
    table = await acli(node, "get", "pods")
    row = next(line.split() for line in table.stdout.splitlines() if "hello-e2e" in line)
    assert row[1:4] == ["0/1", "Completed", "0"]
    assert await logs(node, "hello", "hello") == "hello from minikubelet\ngoodbye\n"
    assert reasons(await pod_events(node, "hello")).count("Started") == 1


async def test_multi_container_both_running_and_ready(node: Node) -> None:
    node.add_manifest("multi-container.yaml")
    pod = await node.wait_pod(
        "multi", lambda p: running(p, "app", "helper") and ready(p), what="multi ready"
    )
    assert phase(pod) == "Running"
    assert condition(pod, "ContainersReady") == "True"
    for name in ("app", "helper"):
        cs = container_status(pod, name)
        assert (cs["ready"], cs["started"], cs["restartCount"]) == (True, True, 0)
    assert pod["status"]["podIP"].startswith("10.88.")
    table = await acli(node, "get", "pods")
    row = next(line.split() for line in table.stdout.splitlines() if "multi-e2e" in line)
    assert row[1:4] == ["2/2", "Running", "0"]
    assert await logs(node, "multi", "app") == "app started\n"
    assert await logs(node, "multi", "helper") == "helper started\n"


async def test_init_containers_run_in_order_before_the_app(node: Node) -> None:
    node.add_manifest("init-containers.yaml")
    during = await node.wait_pod(
        "init-demo", lambda p: running(p, "migrate"), what="the second init container"
    )
    assert phase(during) == "Pending"
    assert condition(during, "Initialized") == "False"
    assert state(during, "fetch")["terminated"]["reason"] == "Completed"
    assert waiting_reason(during, "app") == "PodInitializing"

    pod = await node.wait_pod("init-demo", lambda p: running(p, "app"), what="the app")
    fetch = state(pod, "fetch")["terminated"]
    migrate = state(pod, "migrate")["terminated"]
    app = state(pod, "app")["running"]
    assert (fetch["exitCode"], fetch["reason"]) == (0, "Completed")
    assert (migrate["exitCode"], migrate["reason"]) == (0, "Completed")
    assert when(fetch["finishedAt"]) <= when(migrate["startedAt"])
    assert when(migrate["finishedAt"]) <= when(app["startedAt"])
    assert condition(pod, "Initialized") == "True"
    assert phase(pod) == "Running"
    assert [c["name"] for c in pod["status"]["initContainerStatuses"]] == ["fetch", "migrate"]
    started = [
        e["involvedObject"]["fieldPath"]
        for e in await pod_events(node, "init-demo")
        if e["reason"] == "Started"
    ]
    assert started == [
        "spec.initContainers{fetch}",
        "spec.initContainers{migrate}",
        "spec.containers{app}",
    ]
    assert await logs(node, "init-demo", "fetch") == "fetching config\nfetched\n"


async def test_sidecar_starts_first_and_runs_beside_the_app(node: Node) -> None:
    node.add_manifest("sidecar.yaml")
    pod = await node.wait_pod(
        "sidecar-demo", lambda p: running(p, "log-shipper", "app") and ready(p), what="both up"
    )
    started = [
        e["involvedObject"]["fieldPath"]
        for e in await pod_events(node, "sidecar-demo")
        if e["reason"] == "Started"
    ]
    assert started == ["spec.initContainers{log-shipper}", "spec.containers{app}"]
    shipper = container_status(pod, "log-shipper")
    assert when(shipper["state"]["running"]["startedAt"]) <= when(
        state(pod, "app")["running"]["startedAt"]
    )
    assert (shipper["started"], shipper["ready"]) == (True, True)
    assert condition(pod, "Initialized") == "True"
    assert phase(pod) == "Running"
    table = await acli(node, "get", "pods")
    row = next(line.split() for line in table.stdout.splitlines() if "sidecar-demo-e2e" in line)
    assert row[1:3] == ["2/2", "Running"]


SIDECAR_THAT_EXITS = pod_manifest(
    "flaky-sidecar",
    """  restartPolicy: Never
  initContainers:
    - name: shipper
      image: busybox:1.36
      restartPolicy: Always
      command: ["sh", "-c", "echo shipping; sleep 1; exit 1"]
  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "sleep 3600"]
""",
)


async def test_a_sidecar_that_exits_is_restarted_whatever_the_pod_policy(node: Node) -> None:
    node.add_manifest("flaky-sidecar.yaml", SIDECAR_THAT_EXITS)
    pod = await node.wait_pod(
        "flaky-sidecar",
        lambda p: restarts(p, "shipper") >= 2 and running(p, "app"),
        what="the sidecar restarted twice",
    )
    last = container_status(pod, "shipper")["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (1, "Error")
    assert restarts(pod, "app") == 0
    assert phase(pod) == "Running"


async def test_probes_gate_readiness_until_the_file_appears(node: Node) -> None:
    node.add_manifest("probes.yaml")
    first = await node.wait_pod("probes", lambda p: running(p, "app"), what="probes running")
    assert condition(first, "Ready") == "False"
    assert condition(first, "ContainersReady") == "False"
    assert container_status(first, "app")["ready"] is False

    pod = await node.wait_pod("probes", ready, what="probes Ready")
    cs = container_status(pod, "app")
    assert (cs["ready"], cs["started"], cs["restartCount"]) == (True, True, 0)
    # Ready came after the container said so (sleep 2, then touch /tmp/ready).
    became_ready = next(
        c["lastTransitionTime"] for c in pod["status"]["conditions"] if c["type"] == "Ready"
    )
    assert (when(became_ready) - when(cs["state"]["running"]["startedAt"])).total_seconds() >= 1
    assert await exec_in(node, "probes", "app", "cat", "/tmp/ready") == ("", "", 0)
    unhealthy = [e for e in await pod_events(node, "probes") if e["reason"] == "Unhealthy"]
    assert unhealthy, "the readiness probe failed before /tmp/ready appeared"
    assert all(e["type"] == "Warning" for e in unhealthy)
    assert all(e["message"].startswith("Readiness probe failed:") for e in unhealthy)
    assert await logs(node, "probes", "app") == "warming up\nready\n"


async def test_crash_loop_backs_off_1_2_4_seconds(node: Node) -> None:
    node.add_manifest("crash-loop.yaml")
    waits: list[dict[str, Any]] = []

    async with RuntimeWatch(bundled_runtime(node)) as rt:

        async def instances_started(count: int) -> bool | None:
            await rt.poll()
            pod = await node.pod("crash-loop")
            if pod is not None and waiting_reason(pod, "crasher") == "CrashLoopBackOff":
                waits.append(pod)
            started = [i for i in rt.instances("crasher") if i.started_at > 0]
            return True if len(started) >= count else None

        await wait_until(lambda: instances_started(5), timeout=40, message="five instances")

    runs = rt.instances("crasher")[:5]
    assert [i.attempt for i in runs] == [0, 1, 2, 3, 4]
    delays = [b.started_at - a.finished_at for a, b in itertools.pairwise(runs)]
    # the first restart is immediate, then 1 s, 2 s, 4 s (the cap): each at least the last
    # (upper bounds are loose: a busy machine starts late, but never a whole step late)
    assert delays[0] < 1.5, delays
    for delay, expected in zip(delays[1:], (1.0, 2.0, 4.0), strict=True):
        assert expected - 0.1 <= delay <= expected + 3.0, delays
    assert delays == sorted(delays), delays
    gaps = [b.started_at - a.started_at for a, b in itertools.pairwise(runs)]
    assert gaps == sorted(gaps), gaps

    assert waits, "CrashLoopBackOff was never shown between restarts"
    shown = waits[-1]
    cs = container_status(shown, "crasher")
    assert cs["state"]["waiting"]["message"].startswith("back-off ")
    assert (
        "restarting failed container=crasher pod=crash-loop-e2e_default("
        in (cs["state"]["waiting"]["message"])
    )
    last = cs["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (3, "Error")
    assert cs["ready"] is False
    assert phase(shown) == "Running"
    counts = [restarts(w, "crasher") for w in waits]
    assert counts == sorted(counts) and counts[-1] >= 3, counts
    table = await acli(node, "get", "pods")
    row = next(line.split() for line in table.stdout.splitlines() if "crash-loop-e2e" in line)
    assert row[2] in ("CrashLoopBackOff", "Running", "Error"), row
    assert int(row[3]) >= 4 and row[4].startswith("(") and row[5] == "ago)", row  # 4 (2s ago)

    events = await pod_events(node, "crash-loop")
    backoff = [e for e in events if e["reason"] == "BackOff"]
    assert backoff and backoff[0]["type"] == "Warning"
    assert backoff[0]["message"].startswith("Back-off restarting failed container crasher in pod")
    assert next(e for e in events if e["reason"] == "Started")["count"] >= 5


async def test_lifecycle_hooks_post_start_ran(node: Node) -> None:
    node.add_manifest("lifecycle-hooks.yaml")
    await node.wait_pod("hooks", lambda p: running(p, "app"), what="hooks running")
    assert await exec_in(node, "hooks", "app", "cat", "/tmp/poststart") == ("started\n", "", 0)
    assert "FailedPostStartHook" not in reasons(await pod_events(node, "hooks"))
    assert await logs(node, "hooks", "app") == "running\n"


def _mounts() -> dict[str, str]:
    with open("/proc/self/mounts") as f:
        return {line.split()[1]: line.split()[2] for line in f}


async def test_empty_dir_volumes_live_as_long_as_the_pod(node: Node) -> None:
    node.add_manifest("emptydir.yaml")
    pod = await node.wait_pod(
        "shared-scratch", lambda p: running(p, "writer", "reader"), what="both running"
    )
    volumes = node.root_dir / "pods" / uid(pod) / "volumes" / "kubernetes.io~empty-dir"
    scratch, cache = volumes / "scratch", volumes / "cache"
    assert scratch.is_dir() and cache.is_dir()
    assert _mounts().get(str(cache)) == "tmpfs"
    assert str(scratch) not in _mounts()
    # The simulated runtime keeps each container's files to itself: the writer sees its note.
    assert await exec_in(node, "shared-scratch", "writer", "cat", "/scratch/note") == (
        "hello\n",
        "",
        0,
    )

    node.remove_manifest("emptydir.yaml")

    async def cleaned() -> bool | None:
        gone = await node.pod("shared-scratch") is None and not volumes.exists()
        return True if gone and str(cache) not in _mounts() else None

    await wait_until(cleaned, timeout=30, message="the volumes to be torn down")
    assert not (node.root_dir / "pods" / uid(pod)).exists()


async def test_downward_api_env_and_files(node: Node) -> None:
    node.add_manifest("downward-api.yaml")
    pod = await node.wait_pod("downward", lambda p: running(p, "app"), what="downward running")
    ip = pod["status"]["podIP"]

    async def logged() -> str | None:
        text = await logs(node, "downward", "app")
        return text or None

    text = await wait_until(logged, message="the log line")
    assert text == f"I am downward-e2e in default on e2e at {ip}\n"
    out = await exec_in(node, "downward", "app", "printenv", "MEMORY_LIMIT")
    assert out == ("64\n", "", 0)
    podinfo = node.root_dir / "pods" / uid(pod) / "volumes" / "kubernetes.io~downward-api"
    podinfo = podinfo / "podinfo"
    assert (podinfo / "labels").read_text() == 'team="nodes"\ntier="demo"'
    assert (podinfo / "name").read_text() == "downward-e2e"
    assert pod["status"]["qosClass"] == "Guaranteed"


# -- restart policies ---------------------------------------------------------------------


def _exits(name: str, policy: str, code: int) -> str:
    return pod_manifest(
        name,
        f"""  restartPolicy: {policy}
  containers:
    - name: c
      image: busybox:1.36
      command: ["sh", "-c", "sleep 0.3; exit {code}"]
""",
    )


async def test_restart_policies(node: Node) -> None:
    cases = {
        ("Always", 0): "Running",
        ("Always", 2): "Running",
        ("OnFailure", 0): "Succeeded",
        ("OnFailure", 2): "Running",
        ("Never", 0): "Succeeded",
        ("Never", 2): "Failed",
    }
    for policy, code in cases:
        name = f"{policy.lower()}-{code}"
        node.add_manifest(f"{name}.yaml", _exits(name, policy, code))

    for (policy, code), expected in cases.items():
        name = f"{policy.lower()}-{code}"
        if expected == "Running":
            pod = await node.wait_pod(
                name, lambda p: restarts(p, "c") >= 2, what=f"{name} restarts"
            )
            last = container_status(pod, "c")["lastState"]["terminated"]
            assert last["exitCode"] == code
            assert last["reason"] == ("Completed" if code == 0 else "Error")
        else:
            pod = await node.wait_pod(name, lambda p: phase(p) in ("Succeeded", "Failed"))
            terminated = state(pod, "c")["terminated"]
            assert terminated["exitCode"] == code
            assert restarts(pod, "c") == 0
            assert condition(pod, "Ready") == "False"
        assert phase(pod) == expected, name

    # a finished pod stays finished: nothing restarts it
    for name in ("onfailure-0", "never-0", "never-2"):
        finished = await node.pod(name)
        assert finished is not None and restarts(finished, "c") == 0
        assert "BackOff" not in reasons(await pod_events(node, name))
    table = await acli(node, "get", "pods")
    statuses = {line.split()[0]: line.split()[2] for line in table.stdout.splitlines()[1:]}
    assert statuses["never-2-e2e"] == "Error"
    assert statuses["never-0-e2e"] == "Completed"


# -- images -------------------------------------------------------------------------------

UNPULLABLE = pod_manifest(
    "unpullable",
    """  containers:
    - name: app
      image: example.invalid/nope:1
      command: ["sleep", "3600"]
""",
)
NEVER_PULLED = pod_manifest(
    "never-pulled",
    """  containers:
    - name: app
      image: registry.example/absent:1
      imagePullPolicy: Never
      command: ["sleep", "3600"]
""",
)


async def test_image_pull_errors_back_off(node: Node) -> None:
    node.add_manifest("unpullable.yaml", UNPULLABLE)
    node.add_manifest("never-pulled.yaml", NEVER_PULLED)
    seen: list[str] = []

    async def backing_off() -> dict[str, Any] | None:
        pod = await node.pod("unpullable")
        reason = waiting_reason(pod, "app") if pod is not None else ""
        if reason and (not seen or seen[-1] != reason):
            seen.append(reason)
        return pod if reason == "ImagePullBackOff" else None

    pod = await wait_until(backing_off, message="ImagePullBackOff", interval=0.03)
    assert phase(pod) == "Pending"
    assert state(pod, "app")["waiting"]["message"] == (
        'Back-off pulling image "example.invalid/nope:1"'
    )
    events = await pod_events(node, "unpullable")
    failed = [e["message"] for e in events if e["reason"] == "Failed"]
    assert any(m.startswith('Failed to pull image "example.invalid/nope:1": ') for m in failed)
    assert "Error: ErrImagePull" in failed
    assert "Error: ImagePullBackOff" in failed
    backoff = next(e for e in events if e["reason"] == "BackOff")
    assert (backoff["type"], backoff["message"]) == (
        "Normal",
        'Back-off pulling image "example.invalid/nope:1"',
    )
    table = await acli(node, "get", "pods")
    row = next(line.split() for line in table.stdout.splitlines() if "unpullable-e2e" in line)
    assert row[1:3] in (["0/1", "ImagePullBackOff"], ["0/1", "ErrImagePull"])

    never = await node.wait_pod(
        "never-pulled", lambda p: waiting_reason(p, "app") == "ErrImageNeverPull"
    )
    assert state(never, "app")["waiting"]["message"] == (
        'Container image "registry.example/absent:1" is not present with pull policy of Never'
    )
    assert phase(never) == "Pending"
    never_events = await pod_events(node, "never-pulled")
    assert "ErrImageNeverPull" in reasons(never_events)
    assert "Pulling" not in reasons(never_events)
    assert "Error: ErrImageNeverPull" in [e["message"] for e in never_events]

    # once the back-off (10 s at first) has passed, the kubelet pulls again, and fails again
    async def pulled_again() -> dict[str, Any] | None:
        await backing_off()
        for e in await pod_events(node, "unpullable"):
            if e["reason"] == "Pulling" and e["count"] >= 2:
                return e
        return None

    pulling = await wait_until(pulled_again, timeout=25, message="a second pull", interval=0.03)
    waited = when(pulling["lastTimestamp"]) - when(pulling["firstTimestamp"])
    assert 9 <= waited.total_seconds() <= 17, pulling

    async def failed_again() -> bool | None:
        await backing_off()
        return True if seen[-1] == "ErrImagePull" else None

    await wait_until(failed_again, timeout=5, message="ErrImagePull again", interval=0.03)
    # ErrImagePull after each pull (the first one shows only until the next sync, a moment
    # later), ImagePullBackOff while the back-off lasts
    assert seen[-2:] == ["ImagePullBackOff", "ErrImagePull"], seen
    assert seen in (["ErrImagePull", *seen[-2:]], seen[-2:]), seen


# -- liveness -----------------------------------------------------------------------------

LIVENESS = pod_manifest(
    "liveness",
    """  containers:
    - name: app
      image: busybox:1.36
      command: ["sh", "-c", "touch /tmp/alive; sleep 2; rm /tmp/alive; sleep 3600"]
      livenessProbe:
        exec: {command: ["cat", "/tmp/alive"]}
        periodSeconds: 1
        failureThreshold: 1
""",
)


async def test_liveness_failure_restarts_the_container(node: Node) -> None:
    node.add_manifest("liveness.yaml", LIVENESS)
    pod = await node.wait_pod(
        "liveness", lambda p: restarts(p, "app") >= 1 and running(p, "app"), what="a restart"
    )
    last = container_status(pod, "app")["lastState"]["terminated"]
    assert last["reason"] == "Error"
    # the simulated sh ends on SIGTERM (a real sh as PID 1 would ignore it)
    assert last["exitCode"] == 143
    events = await pod_events(node, "liveness")
    unhealthy = next(e for e in events if e["reason"] == "Unhealthy")
    assert unhealthy["type"] == "Warning"
    assert unhealthy["message"].startswith("Liveness probe failed: cat: can't open '/tmp/alive'")
    killing = next(e for e in events if e["reason"] == "Killing")
    assert killing["message"] == "Container app failed liveness probe, will be restarted"
    assert killing["involvedObject"]["fieldPath"] == "spec.containers{app}"
    order = reasons(events)
    assert order.index("Unhealthy") < order.index("Killing")


NEVER_ALIVE = pod_manifest(
    "never-alive",
    """  containers:
    - name: app
      image: busybox:1.36
      command: ["sleep", "3600"]
      livenessProbe:
        exec: {command: ["cat", "/tmp/alive"]}
        periodSeconds: 1
        failureThreshold: 1
""",
)


async def test_repeated_liveness_failures_back_off_like_a_crash_loop(node: Node) -> None:
    """Each restart after a liveness kill goes through the crash-loop back-off, so a
    container that never passes ends in CrashLoopBackOff, as with the kubelet."""
    node.add_manifest("never-alive.yaml", NEVER_ALIVE)
    pod = await node.wait_pod(
        "never-alive",
        lambda p: waiting_reason(p, "app") == "CrashLoopBackOff",
        timeout=30,
        what="CrashLoopBackOff after liveness kills",
    )
    cs = container_status(pod, "app")
    assert cs["restartCount"] >= 2
    assert cs["lastState"]["terminated"]["reason"] == "Error"
    events = await pod_events(node, "never-alive")
    assert {"Unhealthy", "Killing", "BackOff"} <= set(reasons(events))
