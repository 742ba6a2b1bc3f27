"""Manifests that cannot become pods are reported, never run, and never disturb the others."""

from __future__ import annotations

from typing import Any

from tests.e2e.node import Node, container_status, running
from tests.e2e.support import acli, pod_manifest, wait_gone
from tests.harness.wait import wait_until

NOT_YAML = """apiVersion: v1
kind: Pod
metadata:
  name: broken
  labels: {app: broken
spec:
  containers: []
"""

SERVICE = """apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports: [{port: 80}]
"""

NO_CONTAINERS = pod_manifest("empty", "  containers: []\n")

DUPLICATE_NAMES = pod_manifest(
    "twins",
    """  containers:
    - {name: app, image: busybox:1.36}
    - {name: app, image: busybox:1.36}
""",
)

NO_IMAGE = pod_manifest("imageless", "  containers:\n    - {name: app}\n")

WRONG_TYPE = pod_manifest("stringly", '  containers: "x"\n')

BAD_PROBE = pod_manifest(
    "badprobe",
    """  containers:
    - name: app
      image: busybox:1.36
      command: ["sleep", "3600"]
      livenessProbe:
        exec: {command: ["true"]}
        periodSeconds: often
""",
)

#: A request whose value is 10**999999999: once computed exactly, it froze the kubelet.
HUGE_CPU = pod_manifest(
    "hungry",
    """  containers:
    - name: app
      image: busybox:1.36
      command: ["sleep", "3600"]
      resources:
        requests: {cpu: "1e999999999"}
""",
)

#: file name -> (manifest, what the reason says, the line of a syntax error)
BAD: dict[str, tuple[str, str, int | None]] = {
    "broken.yaml": (NOT_YAML, "not YAML", 6),
    "service.yaml": (SERVICE, "kind is Service, expected Pod", None),
    "empty.yaml": (NO_CONTAINERS, "spec.containers: Required value", None),
    "twins.yaml": (DUPLICATE_NAMES, 'spec.containers[1].name: Duplicate value: "app"', None),
    "imageless.yaml": (NO_IMAGE, "spec.containers[0].image: Required value", None),
    "stringly.yaml": (WRONG_TYPE, "spec.containers: expected a list, got str", None),
    "hungry.yaml": (
        HUGE_CPU,
        'spec.containers[0].resources.requests[cpu]: Invalid value: "1e999999999": '
        "exponent out of range",
        None,
    ),
    "badprobe.yaml": (
        BAD_PROBE,
        "spec.containers[0].livenessProbe.periodSeconds: expected an integer, got str",
        None,
    ),
}


async def _rejected(node: Node) -> dict[str, dict[str, Any]]:
    async with node.client() as c:
        return {str(r["source"]): r for r in await c.rejected()}


async def test_bad_manifests_are_reported_and_the_good_pod_keeps_running(node: Node) -> None:
    node.add_manifest("multi-container.yaml")
    pod = await node.wait_pod("multi", lambda p: running(p, "app", "helper"), what="multi up")
    ids = {n: container_status(pod, n)["containerID"] for n in ("app", "helper")}
    for name, (text, _, _) in BAD.items():
        node.add_manifest(name, text)

    paths = {str(node.manifests / name): name for name in BAD}

    async def all_reported() -> dict[str, dict[str, Any]] | None:
        found = await _rejected(node)
        return found if set(paths) <= set(found) else None

    rejected = await wait_until(all_reported, message="every bad manifest to be reported")
    for path, name in paths.items():
        _, reason, line = BAD[name]
        assert reason in rejected[path]["reason"], (name, rejected[path])
        assert rejected[path]["line"] == line, (name, rejected[path])
    assert len(rejected) == len(BAD), rejected

    pods = await node.pods()
    assert list(pods) == ["multi-e2e"]
    now = pods["multi-e2e"]
    assert {n: container_status(now, n)["containerID"] for n in ("app", "helper")} == ids
    assert all(container_status(now, n)["restartCount"] == 0 for n in ("app", "helper"))
    events = await node.events()
    assert {e["involvedObject"]["name"] for e in events} == {"multi-e2e"}

    table = await acli(node, "get", "pods")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [
        ["multi-e2e", "2/2", "Running"]
    ]
    warnings = table.stderr.splitlines()
    broken = str(node.manifests / "broken.yaml")
    assert f"Warning: manifest {broken}:6 was rejected: not YAML: " in "\n".join(warnings)
    for path in paths:
        assert any(w.startswith(f"Warning: manifest {path}") for w in warnings), (path, warnings)


async def test_a_fixed_manifest_runs_and_its_warning_goes(node: Node) -> None:
    node.add_manifest("web.yaml", BAD_PROBE.replace("often", "1"))
    good = await node.wait_pod("badprobe", lambda p: running(p, "app"), what="the fixed pod")
    node.add_manifest("web.yaml", BAD_PROBE)
    path = str(node.manifests / "web.yaml")

    async def reported() -> bool | None:
        return True if path in await _rejected(node) else None

    await wait_until(reported, message="the broken edit to be reported")

    # the kubelet does as it does for a removed file: the pod of the earlier version goes
    await wait_gone(node, "badprobe")
    node.add_manifest("web.yaml", BAD_PROBE.replace("often", "1"))
    again = await node.wait_pod("badprobe", lambda p: running(p, "app"), what="fixed again")
    assert again["metadata"]["uid"] == good["metadata"]["uid"]

    async def cleared() -> bool | None:
        return True if path not in await _rejected(node) else None

    await wait_until(cleared, message="the warning to go")
    node.remove_manifest("web.yaml")
    node.add_manifest("gone.yaml", NO_IMAGE)
    gone_path = str(node.manifests / "gone.yaml")

    async def only_gone() -> bool | None:
        return True if set(await _rejected(node)) == {gone_path} else None

    await wait_until(only_gone, message="only the new bad manifest to be reported")
    node.remove_manifest("gone.yaml")

    async def none_left() -> bool | None:
        return True if not await _rejected(node) else None

    await wait_until(none_left, message="no rejected manifest once the file is removed")


async def test_an_absurd_quantity_is_rejected_and_the_node_stays_responsive(node: Node) -> None:
    node.add_manifest("hungry.yaml", HUGE_CPU)
    path = str(node.manifests / "hungry.yaml")

    async def reported() -> dict[str, Any] | None:
        return (await _rejected(node)).get(path)

    rejected = await wait_until(reported, message="the absurd quantity to be reported")
    assert rejected["reason"] == (
        'spec.containers[0].resources.requests[cpu]: Invalid value: "1e999999999": '
        "exponent out of range (at most 1000 in magnitude)"
    )
    # the event loop is free: a pod added afterwards starts, and get pods answers
    node.add_manifest("multi-container.yaml")
    await node.wait_pod("multi", lambda p: running(p, "app", "helper"), what="multi up")
    table = await acli(node, "get", "pods")
    assert table.returncode == 0, table.stderr
    assert [line.split()[:3] for line in table.stdout.splitlines()[1:]] == [
        ["multi-e2e", "2/2", "Running"]
    ]
    assert f"Warning: manifest {path} was rejected: spec.containers[0].resources" in table.stderr
