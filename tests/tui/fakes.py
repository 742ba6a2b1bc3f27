"""A fixed node for the dashboard's deterministic tests: pods, events, calls and logs at
fixed times, seen at a fixed ``NOW``."""

from __future__ import annotations

import datetime as dt
from typing import Any

from minikubelet.cri.trace import CallRecord
from tui.feed import Backoff, FakeKubelet, Feed

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
NODE = "tui"


def stamp(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_status(
    name: str, state: str, *, ago: float = 300, reason: str = "", exit_code: int = 0, **extra: Any
) -> dict[str, Any]:
    states: dict[str, dict[str, Any]] = {
        "running": {"running": {"startedAt": stamp(ago)}},
        "terminated": {
            "terminated": {
                "exitCode": exit_code,
                "reason": reason or ("Completed" if exit_code == 0 else "Error"),
                "startedAt": stamp(ago + 1),
                "finishedAt": stamp(ago),
            }
        },
        "waiting": {"waiting": {"reason": reason or "ContainerCreating"}},
    }
    status: dict[str, Any] = {
        "name": name,
        "state": states[state],
        "lastState": {},
        "ready": state == "running",
        "restartCount": 0,
        "image": "busybox:1.36",
        "started": state == "running",
    }
    status.update(extra)
    return status


def pod(
    name: str,
    *,
    containers: list[dict[str, Any]],
    phase: str = "Running",
    ip: str = "",
    age: float = 600,
    namespace: str = "default",
    init: list[dict[str, Any]] | None = None,
    init_status: list[dict[str, Any]] | None = None,
    runtime_class: str = "",
    source: str = "file",
    conditions: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": c["name"], "image": "busybox:1.36", "command": ["sh", "-c", "sleep 3600"]}
            for c in containers
        ],
        "nodeName": NODE,
        "restartPolicy": "Always",
    }
    if init:
        spec["initContainers"] = init
    if runtime_class:
        spec["runtimeClassName"] = runtime_class
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [
            {"type": kind, "status": value, "lastTransitionTime": stamp(age - 1)}
            for kind, value in (
                conditions
                or {
                    "Initialized": "True",
                    "Ready": "True" if phase == "Running" else "False",
                    "PodScheduled": "True",
                }
            ).items()
        ],
        "hostIP": "127.0.0.1",
        "startTime": stamp(age),
        "containerStatuses": containers,
        "qosClass": "BestEffort",
    }
    if init_status:
        status["initContainerStatuses"] = init_status
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-{NODE}",
            "namespace": namespace,
            "uid": f"uid-{name}",
            "creationTimestamp": stamp(age),
            "annotations": {"kubernetes.io/config.source": source},
        },
        "spec": spec,
        "status": status,
    }


def pods() -> list[dict[str, Any]]:
    return [
        pod(
            "hello",
            containers=[container_status("hello", "terminated", ago=290)],
            phase="Succeeded",
            age=300,
        ),
        pod(
            "multi",
            containers=[
                container_status("app", "running", ago=598),
                container_status("helper", "running", ago=598),
            ],
            ip="10.88.0.3",
        ),
        pod(
            "crash-loop",
            containers=[
                container_status(
                    "crash",
                    "waiting",
                    reason="CrashLoopBackOff",
                    restartCount=3,
                    lastState={
                        "terminated": {
                            "exitCode": 1,
                            "reason": "Error",
                            "startedAt": stamp(21),
                            "finishedAt": stamp(20),
                        }
                    },
                )
            ],
            ip="10.88.0.4",
            age=125,
        ),
        pod(
            "init-demo",
            init=[{"name": "setup", "image": "busybox:1.36"}],
            init_status=[container_status("setup", "running", ago=3)],
            containers=[container_status("app", "waiting", reason="PodInitializing")],
            phase="Pending",
            ip="10.88.0.5",
            age=4,
            conditions={"Initialized": "False", "Ready": "False", "PodScheduled": "True"},
        ),
        pod(
            "gvisor",
            containers=[container_status("app", "running", ago=3599)],
            ip="10.88.0.6",
            age=3600,
            runtime_class="runsc",
            source="api",
        ),
    ]


STATUS: dict[str, Any] = {
    "nodeName": NODE,
    "runtime": {"name": "minikubelet-fake", "version": "0.1.0", "endpoint": "unix:///fake.sock"},
    "pods": 5,
    "phases": {"Pending": 1, "Running": 3, "Succeeded": 1},
    "containers": 6,
    "pleg": {"healthy": True, "relists": 42},
    "time": NOW.timestamp(),
}


def events() -> list[dict[str, Any]]:
    def event(pod_name: str, reason: str, message: str, ago: float, kind: str = "Normal") -> Any:
        return {
            "kind": "Event",
            "involvedObject": {
                "kind": "Pod",
                "namespace": "default",
                "name": f"{pod_name}-{NODE}",
                "uid": f"uid-{pod_name}",
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": "kubelet", "host": NODE},
            "firstTimestamp": stamp(ago),
            "lastTimestamp": stamp(ago),
            "count": 1,
        }

    return [
        event("multi", "Pulled", 'Container image "busybox:1.36" already present', 599),
        event("multi", "Created", "Created container app", 599),
        event("multi", "Started", "Started container app", 598),
        event("multi", "Created", "Created container helper", 599),
        event("multi", "Started", "Started container helper", 598),
        event("crash-loop", "BackOff", "Back-off restarting failed container", 20, "Warning"),
    ]


def records() -> list[CallRecord]:
    base = NOW.timestamp() - 60
    calls = [
        ("RuntimeService", "Version", "", "", "OK", 0.41),
        ("ImageService", "ImageStatus", "default/multi-tui", "", "OK", 0.22),
        ("RuntimeService", "RunPodSandbox", "default/multi-tui", "", "OK", 3.05),
        ("RuntimeService", "CreateContainer", "default/multi-tui", "app", "OK", 1.48),
        ("RuntimeService", "StartContainer", "default/multi-tui", "app", "OK", 0.93),
        ("RuntimeService", "CreateContainer", "default/multi-tui", "helper", "OK", 1.37),
        ("RuntimeService", "StartContainer", "default/multi-tui", "helper", "OK", 0.88),
        ("ImageService", "PullImage", "default/crash-loop-tui", "", "OK", 12.5),
        ("RuntimeService", "StartContainer", "default/crash-loop-tui", "crash", "OK", 0.77),
        ("RuntimeService", "ContainerStatus", "default/hello-tui", "hello", "NOT_FOUND", 0.12),
        ("RuntimeService", "ListPodSandbox", "", "", "OK", 0.35),
    ]
    return [
        CallRecord(
            seq=index + 1,
            time=base + index * 1.25,
            service=service,
            method=method,
            code=code,
            duration_ms=latency,
            pod=pod_name,
            container=container,
            error="container gone" if code != "OK" else "",
        )
        for index, (service, method, pod_name, container, code, latency) in enumerate(calls)
    ]


LOGS = {
    ("default", "multi-tui", "app"): b"app started\nserving on :8080\n",
    ("default", "multi-tui", "helper"): b"helper started\n",
}


def fake_kubelet(**overrides: Any) -> FakeKubelet:
    fields: dict[str, Any] = {
        "pods": pods(),
        "status": STATUS,
        "now": NOW,
        "event_list": events(),
        "records": records(),
        "log_text": dict(LOGS),
    }
    fields.update(overrides)
    return FakeKubelet(**fields)


def fake_feed(api: FakeKubelet | None = None, *, poll_interval: float = 0.05) -> Feed:
    return Feed(
        api or fake_kubelet(),
        poll_interval=poll_interval,
        backoff=Backoff(initial=0.05, factor=2, cap=0.2),
    )
