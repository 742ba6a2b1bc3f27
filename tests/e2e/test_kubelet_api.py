"""``kubectl logs``, ``exec``, ``attach``, ``port-forward``, ``cp`` and node stats through
the real API server to a minikubelet node's HTTPS API (port 10250's role, on a port of
its own), on the native runtime."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import re
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import api_node, apply, free_port, kubectl_json
from tests.e2e.conftest import unmount_under
from tests.e2e.kubectl_bg import Kubectl, Terminal
from tests.e2e.node import Node
from tests.harness.controlplane import ControlPlane
from tests.harness.fixtures import HarnessImages
from tests.harness.native import NativeRuntime
from tests.harness.wait import wait_until

NODE = "kapi-native"
LABEL = "minikubelet.test/node"

POD = """apiVersion: v1
kind: Pod
metadata:
  name: kapi
  namespace: default
spec:
  nodeSelector: {{"{label}": "{node}"}}
  terminationGracePeriodSeconds: 1
  volumes:
    - name: state
      emptyDir: {{}}
  containers:
    - name: logger
      image: busybox:1.36
      command: ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]
    - name: web
      image: busybox:1.36
      command:
        - sh
        - -c
        - >-
          mkdir -p /www && echo hello-web > /www/index.html
          && exec httpd -f -p 8080 -h /www
    - name: reader
      image: busybox:1.36
      stdin: true
      command: ["sh", "-c", "while read l; do echo got $l; done"]
    - name: crasher
      image: busybox:1.36
      volumeMounts: [{{name: state, mountPath: /state}}]
      command:
        - sh
        - -c
        - >-
          n=$(($(cat /state/n 2>/dev/null || echo 0) + 1)); echo $n > /state/n;
          echo run $n; if [ $n -ge 2 ]; then exec sleep 3600; fi; sleep 1; exit 1
---
apiVersion: v1
kind: Pod
metadata:
  name: kapi-once
  namespace: default
spec:
  nodeSelector: {{"{label}": "{node}"}}
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
    - name: once
      image: busybox:1.36
      command: ["sh", "-c", "echo begin; while [ ! -e /tmp/stop ]; do sleep 0.1; done; echo end"]
"""

#: A line of ``kubectl logs --timestamps``: RFC3339Nano, a space, the line.
STAMPED = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,9})?(Z|[+-]\d\d:\d\d) (.*)$")


def _stamped(line: str) -> tuple[datetime.datetime, str]:
    """The time and the text of a ``--timestamps`` line (failing on any other line)."""
    m = STAMPED.match(line)
    assert m is not None, f"not an RFC3339Nano timestamp and a line: {line!r}"
    seconds, fraction, zone, text = m.groups()
    zone = "+00:00" if zone == "Z" else zone
    return datetime.datetime.fromisoformat(seconds + (fraction or "")[:7] + zone), text


def _statuses(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod.get("status", {}).get("containerStatuses", [])}


@pytest.fixture(scope="module")
async def node(
    control_plane: ControlPlane,
    native_runtime: NativeRuntime,
    test_images: HarnessImages,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Node]:
    workdir = tmp_path_factory.mktemp("kapi-native")
    node = api_node(
        workdir, control_plane, native_runtime.endpoint, NODE, "--node-labels", f"{LABEL}={NODE}"
    )
    node.start()
    try:
        await node.wait_ready()
        apply(control_plane, POD.format(label=LABEL, node=NODE))

        def running() -> bool:
            kapi = _statuses(kubectl_json(control_plane, "get", "pod", "kapi"))
            once = _statuses(kubectl_json(control_plane, "get", "pod", "kapi-once"))
            return all(
                kapi.get(name, {}).get("ready") for name in ("logger", "web", "reader")
            ) and "running" in once.get("once", {}).get("state", {})

        await wait_until(running, timeout=90, message="pods kapi and kapi-once running")
        yield node
    finally:
        control_plane.kubectl("delete", "pod", "kapi", "kapi-once", "--wait=false")
        assert node.stop() == 0
        control_plane.kubectl("delete", "node", NODE, "--wait=false")
        unmount_under(workdir)
        assert "Traceback" not in node.log(), node.log()[-6000:]


def _lines(cp: ControlPlane, *args: str) -> list[str]:
    done = cp.kubectl("logs", "kapi", *args, timeout=20)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# -- logs ---------------------------------------------------------------------------------


async def test_logs_tail(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl("logs", "kapi", "-c", "logger", "--tail=2")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("line ") for line in lines), lines


async def test_logs_follow(control_plane: ControlPlane, node: Node) -> None:
    follow = await Kubectl.start(control_plane, "logs", "-f", "kapi", "-c", "logger", "--tail=1")
    try:
        first = int((await follow.wait_for(r"^line (\d+)$")).group(1))
        # new lines keep coming on the same stream, in order, none lost
        await follow.wait_for(rf"^line {first + 3}$")
        numbers = [int(n) for n in re.findall(r"^line (\d+)$", follow.text, re.MULTILINE)]
        assert numbers[:4] == list(range(first, first + 4)), follow.text
        assert follow.proc.returncode is None
    finally:
        await follow.stop()


async def test_logs_follow_ends_with_the_container(control_plane: ControlPlane, node: Node) -> None:
    follow = await Kubectl.start(control_plane, "logs", "-f", "kapi-once")
    try:
        await follow.wait_for(r"^begin$")
        done = control_plane.kubectl("exec", "kapi-once", "--", "touch", "/tmp/stop", timeout=20)
        assert done.returncode == 0, done.stderr
        assert await follow.finish(timeout=20) == 0, follow.err
        assert follow.text == "begin\nend\n"
    finally:
        await follow.stop()


async def test_logs_previous(control_plane: ControlPlane, node: Node) -> None:
    def restarted_and_running() -> bool:
        crasher = _statuses(kubectl_json(control_plane, "get", "pod", "kapi")).get("crasher", {})
        return crasher.get("restartCount", 0) >= 1 and "running" in crasher.get("state", {})

    await wait_until(restarted_and_running, timeout=60, message="crasher running again")
    # each run counts itself on the pod's emptyDir; the first fails after a second, the
    # second stays: the previous log is the first run's
    assert _lines(control_plane, "-c", "crasher") == ["run 2"]
    assert _lines(control_plane, "-c", "crasher", "--previous") == ["run 1"]
    # a container that never restarted has no previous log, and kubectl says so
    done = control_plane.kubectl("logs", "kapi", "-c", "logger", "--previous", timeout=20)
    assert done.returncode != 0 and done.stdout == ""
    assert "previous terminated container" in done.stderr and "not found" in done.stderr, (
        done.stderr
    )


async def test_logs_timestamps_and_since(control_plane: ControlPlane, node: Node) -> None:
    # enough log for --since to leave some of it out
    await wait_until(
        lambda: len(_lines(control_plane, "-c", "logger")) > 20,
        timeout=20,
        message="more than 20 lines logged",
    )
    stamped = [
        _stamped(line) for line in _lines(control_plane, "-c", "logger", "--timestamps", "--tail=5")
    ]
    assert len(stamped) == 5
    assert all(text.startswith("line ") for _, text in stamped), stamped
    assert [when for when, _ in stamped] == sorted(when for when, _ in stamped)

    everything = _lines(control_plane, "-c", "logger")
    asked = datetime.datetime.now(datetime.UTC)
    recent = [
        _stamped(line)
        for line in _lines(control_plane, "-c", "logger", "--timestamps", "--since=2s")
    ]
    assert 0 < len(recent) < len(everything), (len(recent), len(everything))
    # every line was logged at most 2 s before the request (with a little clock slack)
    assert all(when >= asked - datetime.timedelta(seconds=2.5) for when, _ in recent), (
        asked,
        recent,
    )


# -- exec -------------------------------------------------------------------------------------


async def test_exec_exit_code(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl(
        "exec", "kapi", "-c", "web", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert done.returncode == 3, (done.stdout, done.stderr)
    assert done.stdout == "out\n"
    assert "err" in done.stderr


async def test_exec_stdin(control_plane: ControlPlane, node: Node) -> None:
    done = control_plane.kubectl(
        "exec", "-i", "kapi", "-c", "web", "--", "cat", input="piped\nstdin\n", timeout=20
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "piped\nstdin\n"
    # more than a frame's worth arrives whole, and the end of stdin ends the command
    data = "".join(f"{i:06d} {'x' * 57}\n" for i in range(8000))
    done = control_plane.kubectl(
        "exec", "-i", "kapi", "-c", "web", "--", "md5sum", input=data, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == hashlib.md5(data.encode()).hexdigest()


async def test_exec_tty(control_plane: ControlPlane, node: Node) -> None:
    term = await Terminal.start(
        control_plane, ["exec", "-it", "kapi", "-c", "web", "--", "sh"], rows=33, cols=97
    )
    try:
        term.type("stty size\r")
        await term.wait_for(r"^33 97\r?$")

        term.resize(41, 123)

        def resized() -> bool:
            # the new size reaches the shell's terminal a moment after the signal
            term.type("stty size\r")
            return re.search(r"^41 123\r?$", term.read(), re.MULTILINE) is not None

        await wait_until(resized, timeout=20, interval=0.5, message="stty size to say 41 123")
        term.type("exit 7\r")
        assert await asyncio.wait_for(term.proc.wait(), 20) == 7, term.screen[-2000:]
    finally:
        await term.close()


# -- attach -----------------------------------------------------------------------------------


async def test_attach_stdin(control_plane: ControlPlane, node: Node) -> None:
    attach = await Kubectl.start(control_plane, "attach", "-i", "kapi", "-c", "reader", stdin=True)
    try:
        # typed before the stream is up, it waits in the pipe until kubectl sends it
        attach.write(b"hello attach\n")
        await attach.wait_for(r"^got hello attach$")
        attach.write(b"second\n")
        await attach.wait_for(r"^got second$")
    finally:
        await attach.stop()


async def test_attach_output(control_plane: ControlPlane, node: Node) -> None:
    attach = await Kubectl.start(control_plane, "attach", "kapi", "-c", "logger")
    try:
        first = int((await attach.wait_for(r"^line (\d+)$")).group(1))
        await attach.wait_for(rf"^line {first + 2}$")
    finally:
        await attach.stop()


# -- port-forward and cp ------------------------------------------------------------------


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


async def test_port_forward(control_plane: ControlPlane, node: Node) -> None:
    port = free_port()
    forward = await Kubectl.start(control_plane, "port-forward", "pod/kapi", f"{port}:8080")
    try:
        await forward.wait_for(rf"^Forwarding from 127\.0\.0\.1:{port} -> 8080$")
        for _ in range(2):  # one stream per connection, each its own
            assert await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/") == "hello-web\n"
        assert forward.proc.returncode is None, forward.err
    finally:
        await forward.stop()


async def test_cp_round_trip(control_plane: ControlPlane, node: Node, tmp_path: Path) -> None:
    source = tmp_path / "source.bin"
    payload = bytes(range(256)) * 400 + b"the end\n"
    source.write_bytes(payload)
    done = control_plane.kubectl("cp", str(source), "default/kapi:/tmp/copied.bin", "-c", "web")
    assert done.returncode == 0, done.stderr
    done = control_plane.kubectl("exec", "kapi", "-c", "web", "--", "md5sum", "/tmp/copied.bin")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == hashlib.md5(payload).hexdigest()

    back = tmp_path / "back.bin"
    done = control_plane.kubectl("cp", "default/kapi:/tmp/copied.bin", str(back), "-c", "web")
    assert done.returncode == 0, done.stderr
    assert back.read_bytes() == payload


# -- stats --------------------------------------------------------------------------------


def _raw(cp: ControlPlane, path: str) -> str:
    done = cp.kubectl("get", "--raw", f"/api/v1/nodes/{NODE}/proxy{path}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _web_cpu(summary: dict[str, Any]) -> int:
    for pod in summary["pods"]:
        if pod["podRef"]["name"] == "kapi":
            for container in pod["containers"]:
                if container["name"] == "web":
                    return int(container["cpu"]["usageCoreNanoSeconds"])
    raise AssertionError(f"no web container of kapi in the summary: {summary['pods']}")


def _resource_series(text: str, name: str, **labels: str) -> float:
    """The value of one series of /metrics/resource (Prometheus text)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            if not labels:
                return float(line.split()[1])
            continue
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.split("}", 1)[1].split()[0])
    raise AssertionError(f"no {name}{labels} in:\n{text}")


async def test_stats_summary(control_plane: ControlPlane, node: Node) -> None:
    summary = json.loads(_raw(control_plane, "/stats/summary"))
    assert summary["node"]["nodeName"] == NODE
    assert summary["node"]["cpu"]["usageCoreNanoSeconds"] > 0
    assert summary["node"]["memory"]["workingSetBytes"] > 0
    pods = {p["podRef"]["name"]: p for p in summary["pods"]}
    assert "kapi" in pods and pods["kapi"]["podRef"]["namespace"] == "default"
    assert {"logger", "web"} <= {c["name"] for c in pods["kapi"]["containers"]}

    before_summary = _web_cpu(summary)
    resource = _raw(control_plane, "/metrics/resource")
    labels = {"container": "web", "pod": "kapi", "namespace": "default"}
    before_series = _resource_series(resource, "container_cpu_usage_seconds_total", **labels)
    # a fixed amount of work (about half a core-second here, however busy the machine
    # is) inside the web container, through kubectl exec
    burn = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"
    done = control_plane.kubectl("exec", "kapi", "-c", "web", "--", "sh", "-c", burn)
    assert done.returncode == 0, done.stderr
    after_summary = _web_cpu(json.loads(_raw(control_plane, "/stats/summary")))
    resource = _raw(control_plane, "/metrics/resource")
    after_series = _resource_series(resource, "container_cpu_usage_seconds_total", **labels)
    # a fifth of a core-second more at least, seen by both
    assert after_summary - before_summary > 200_000_000, (before_summary, after_summary)
    assert after_series - before_series > 0.2, (before_series, after_series)
    assert _resource_series(resource, "node_memory_working_set_bytes") > 0


async def test_metrics(control_plane: ControlPlane, node: Node) -> None:
    text = _raw(control_plane, "/metrics")
    assert "kubelet_running_pods" in text
    assert re.search(r"^kubelet_pleg_relist_duration_seconds_count \d+", text, re.M), text[:2000]
    assert 'kubelet_runtime_operations_total{operation_type="exec"}' in text or (
        'operation_type="list_podsandbox"' in text
    )
    assert "kubelet_pod_start_duration_seconds_count" in text
