"""kubectl-style printing: STATUS, READY, RESTARTS, AGE, the table and describe, table-driven."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from minikubelet.status.printer import (
    describe_pod,
    format_table,
    human_duration,
    pod_row,
    status_word,
    tabwrite,
)

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)


def running(name: str, *, ready: bool = True, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "state": {"running": {"startedAt": "2024-05-01T11:00:00Z"}},
        "lastState": extra.pop("lastState", {}),
        "ready": ready,
        "restartCount": restarts,
        "started": True,
        **extra,
    }


def waiting(name: str, reason: str = "", *, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"reason": reason} if reason else {}
    return {
        "name": name,
        "state": {"waiting": state},
        "lastState": extra.pop("lastState", {}),
        "ready": False,
        "restartCount": restarts,
        "started": False,
        **extra,
    }


def terminated(name: str, code: int = 0, reason: str = "", **extra: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"exitCode": code}
    if reason:
        state["reason"] = reason
    return {
        "name": name,
        "state": {"terminated": state},
        "lastState": {},
        "ready": False,
        "restartCount": extra.pop("restarts", 0),
        "started": False,
        **extra,
    }


def make_pod(
    containers: list[dict[str, Any]] | None = None,
    *,
    phase: str = "Running",
    init: list[dict[str, Any]] | None = None,
    init_spec: list[dict[str, Any]] | None = None,
    conditions: dict[str, str] | None = None,
    reason: str = "",
    deleting: bool = False,
    spec_containers: int | None = None,
) -> dict[str, Any]:
    containers = containers if containers is not None else []
    count = spec_containers if spec_containers is not None else max(len(containers), 1)
    spec: dict[str, Any] = {
        "nodeName": "node-1",
        "containers": [{"name": f"c{i}", "image": "busybox:1.36"} for i in range(count)],
    }
    if init is not None or init_spec is not None:
        spec["initContainers"] = init_spec or [
            {"name": s["name"], "image": "busybox:1.36"} for s in init or []
        ]
    status: dict[str, Any] = {"phase": phase, "containerStatuses": containers}
    if init is not None:
        status["initContainerStatuses"] = init
    if conditions:
        status["conditions"] = [{"type": k, "status": v} for k, v in conditions.items()]
    if reason:
        status["reason"] = reason
    status["podIPs"] = [{"ip": "10.1.0.7"}]
    meta: dict[str, Any] = {
        "name": "web",
        "namespace": "default",
        "creationTimestamp": "2024-05-01T11:00:00Z",
    }
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T11:59:30Z"
        meta["deletionGracePeriodSeconds"] = 30
    return {"metadata": meta, "spec": spec, "status": status}


SIDECAR_SPEC = [
    {"name": "setup", "image": "busybox:1.36"},
    {"name": "proxy", "image": "envoy:1", "restartPolicy": "Always"},
]

STATUS_CASES = [
    pytest.param(make_pod([running("c0")]), "Running", id="running"),
    pytest.param(
        make_pod([terminated("c0", 0, "Completed")], phase="Succeeded"), "Completed", id="completed"
    ),
    pytest.param(
        make_pod([waiting("c0", "CrashLoopBackOff", restarts=4)]),
        "CrashLoopBackOff",
        id="crash-loop",
    ),
    pytest.param(
        make_pod([waiting("c0", "ImagePullBackOff")], phase="Pending"),
        "ImagePullBackOff",
        id="image-pull-backoff",
    ),
    pytest.param(
        make_pod([waiting("c0", "ErrImagePull")], phase="Pending"), "ErrImagePull", id="err-pull"
    ),
    pytest.param(
        make_pod([waiting("c0", "ContainerCreating")], phase="Pending"),
        "ContainerCreating",
        id="container-creating",
    ),
    pytest.param(make_pod([], phase="Pending"), "Pending", id="pending-no-statuses"),
    pytest.param(make_pod([terminated("c0", 1, "Error")], phase="Failed"), "Error", id="error"),
    pytest.param(
        make_pod([terminated("c0", 137, "OOMKilled")], phase="Failed"), "OOMKilled", id="oom"
    ),
    pytest.param(
        make_pod([terminated("c0", 3)], phase="Failed"), "ExitCode:3", id="exit-code-no-reason"
    ),
    pytest.param(
        make_pod([terminated("c0", 0, signal=9)], phase="Failed"),
        "ExitCode:0",
        id="exit-code-zero-no-reason",
    ),
    pytest.param(
        make_pod(
            [{**terminated("c0", 137), "state": {"terminated": {"exitCode": 137, "signal": 9}}}]
        ),
        "Signal:9",
        id="signal-no-reason",
    ),
    pytest.param(
        make_pod(
            [waiting("c0", "PodInitializing")],
            phase="Pending",
            init=[running("setup", ready=False)],
        ),
        "Init:0/1",
        id="init-0-of-1",
    ),
    pytest.param(
        make_pod(
            [waiting("c0", "PodInitializing")],
            phase="Pending",
            init=[terminated("a", 0, "Completed"), waiting("b", "PodInitializing")],
        ),
        "Init:1/2",
        id="init-1-of-2",
    ),
    pytest.param(
        make_pod(
            [waiting("c0", "PodInitializing")],
            phase="Pending",
            init=[waiting("setup", "CrashLoopBackOff", restarts=2)],
        ),
        "Init:CrashLoopBackOff",
        id="init-crash-loop",
    ),
    pytest.param(
        make_pod(
            [waiting("c0", "PodInitializing")],
            phase="Failed",
            init=[terminated("setup", 1, "Error")],
        ),
        "Init:Error",
        id="init-error",
    ),
    pytest.param(
        make_pod(
            [waiting("c0", "PodInitializing")],
            phase="Pending",
            init=[terminated("setup", 2)],
        ),
        "Init:ExitCode:2",
        id="init-exit-code",
    ),
    pytest.param(
        make_pod(
            [waiting("c0", "PodInitializing")],
            phase="Pending",
            init=[terminated("setup", 0, "Completed")],
        ),
        "PodInitializing",
        id="pod-initializing",
    ),
    pytest.param(make_pod([running("c0")], deleting=True), "Terminating", id="terminating"),
    pytest.param(
        make_pod([terminated("c0", 0, "Completed")], phase="Succeeded", deleting=True),
        "Completed",
        id="terminal-not-terminating",
    ),
    pytest.param(
        make_pod([running("c0")], deleting=True, reason="NodeLost"), "Unknown", id="node-lost"
    ),
    pytest.param(
        make_pod([running("c0")], reason="Evicted", phase="Failed"),
        "Evicted",
        id="running-container-keeps-pod-reason",
    ),
    pytest.param(make_pod([], reason="Evicted", phase="Failed"), "Evicted", id="pod-reason"),
    pytest.param(
        make_pod(
            [running("c1"), terminated("c0", 0, "Completed")],
            conditions={"Ready": "True"},
            spec_containers=2,
        ),
        "Running",
        id="completed-back-to-running",
    ),
    pytest.param(
        make_pod(
            [running("c1"), terminated("c0", 0, "Completed")],
            conditions={"Ready": "False"},
            spec_containers=2,
        ),
        "NotReady",
        id="completed-but-not-ready",
    ),
    pytest.param(
        make_pod(
            [running("c0")],
            init=[terminated("setup", 0, "Completed"), running("proxy")],
            init_spec=SIDECAR_SPEC,
            conditions={"Initialized": "True"},
        ),
        "Running",
        id="sidecar-started",
    ),
    pytest.param(
        make_pod(
            [running("c0")],
            init=[terminated("setup", 0, "Completed"), waiting("proxy", "CrashLoopBackOff")],
            init_spec=SIDECAR_SPEC,
            conditions={"Initialized": "True"},
        ),
        "Init:CrashLoopBackOff",
        id="sidecar-crash-loop-after-init",
    ),
]


@pytest.mark.parametrize(("pod", "word"), STATUS_CASES)
def test_status_word(pod: dict[str, Any], word: str) -> None:
    assert status_word(pod) == word


@pytest.mark.parametrize(
    ("pod", "ready"),
    [
        pytest.param(make_pod([running("c0")]), "1/1", id="one-ready"),
        pytest.param(make_pod([running("c0", ready=False)]), "0/1", id="running-not-ready"),
        pytest.param(
            make_pod([running("c0"), waiting("c1", "CrashLoopBackOff")], spec_containers=2),
            "1/2",
            id="one-of-two",
        ),
        pytest.param(make_pod([], phase="Pending", spec_containers=3), "0/3", id="no-statuses"),
        pytest.param(
            make_pod(
                [running("c0")],
                init=[terminated("setup", 0, "Completed"), running("proxy")],
                init_spec=SIDECAR_SPEC,
                conditions={"Initialized": "True"},
            ),
            "2/2",
            id="sidecar-counts",
        ),
        pytest.param(
            make_pod(
                [running("c0")],
                init=[terminated("setup", 0, "Completed"), running("proxy", ready=False)],
                init_spec=SIDECAR_SPEC,
                conditions={"Initialized": "True"},
            ),
            "1/2",
            id="sidecar-not-ready",
        ),
    ],
)
def test_ready_column(pod: dict[str, Any], ready: str) -> None:
    assert pod_row(pod, NOW)["READY"] == ready


def _last(finished: str) -> dict[str, Any]:
    return {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": finished}}


@pytest.mark.parametrize(
    ("pod", "restarts"),
    [
        pytest.param(make_pod([running("c0")]), "0", id="none"),
        pytest.param(
            make_pod([running("c0", restarts=3, lastState=_last("2024-05-01T11:55:00Z"))]),
            "3 (5m ago)",
            id="five-minutes-ago",
        ),
        pytest.param(make_pod([running("c0", restarts=2)]), "2", id="no-last-state-no-age"),
        pytest.param(
            make_pod(
                [
                    running("c0", restarts=1, lastState=_last("2024-05-01T11:00:00Z")),
                    running("c1", restarts=4, lastState=_last("2024-05-01T11:59:20Z")),
                ],
                spec_containers=2,
            ),
            "5 (40s ago)",
            id="sum-and-newest",
        ),
        pytest.param(
            make_pod(
                [waiting("c0", "PodInitializing")],
                phase="Pending",
                init=[
                    waiting(
                        "setup",
                        "CrashLoopBackOff",
                        restarts=2,
                        lastState=_last("2024-05-01T11:58:00Z"),
                    )
                ],
            ),
            "2 (2m ago)",
            id="init-restarts-while-initializing",
        ),
        pytest.param(
            make_pod(
                [running("c0", restarts=4, lastState=_last("2024-05-01T11:59:40Z"))],
                init=[terminated("setup", 0, "Completed", restarts=2)],
                conditions={"Initialized": "True"},
            ),
            "4 (20s ago)",
            id="init-restarts-forgotten-once-initialized",
        ),
    ],
)
def test_restarts_column(pod: dict[str, Any], restarts: str) -> None:
    assert pod_row(pod, NOW)["RESTARTS"] == restarts


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1.5, "0s"),
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (120, "2m"),
        (125, "2m5s"),
        (599, "9m59s"),
        (600, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60 * 15, "3h15m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (48 * 3600, "2d"),
        (50 * 3600, "2d2h"),
        (8 * 86400, "8d"),
        (729 * 86400, "729d"),
        (730 * 86400, "2y"),
        (800 * 86400, "2y70d"),
        (8 * 365 * 86400, "8y"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_human_duration_accepts_timedelta() -> None:
    assert human_duration(dt.timedelta(minutes=5, seconds=30)) == "5m30s"


@pytest.mark.parametrize(
    ("created", "age"),
    [
        ("2024-05-01T11:59:30Z", "30s"),
        ("2024-05-01T11:55:00Z", "5m"),
        ("2024-04-30T12:00:00Z", "24h"),
        ("2024-04-20T12:00:00Z", "11d"),
        (None, "<unknown>"),
    ],
)
def test_age_column(created: str | None, age: str) -> None:
    pod = make_pod([running("c0")])
    pod["metadata"]["creationTimestamp"] = created
    assert pod_row(pod, NOW)["AGE"] == age


def test_row_wide_cells() -> None:
    pod = make_pod([running("c0")])
    row = pod_row(pod, NOW)
    assert row["IP"] == "10.1.0.7"
    assert row["NODE"] == "node-1"
    assert row["NOMINATED NODE"] == "<none>"
    assert row["READINESS GATES"] == "<none>"
    pod["status"]["podIPs"] = []
    pod["spec"]["nodeName"] = ""
    row = pod_row(pod, NOW)
    assert (row["IP"], row["NODE"]) == ("<none>", "<none>")


def test_table_snapshot() -> None:
    pods = [
        make_pod([running("c0")]),
        make_pod(
            [
                waiting(
                    "c0", "CrashLoopBackOff", restarts=12, lastState=_last("2024-05-01T11:57:00Z")
                )
            ]
        ),
        make_pod(
            [waiting("c0", "PodInitializing")],
            phase="Pending",
            init=[running("setup", ready=False)],
        ),
    ]
    pods[1]["metadata"]["name"] = "api-7d9c6b5f4-x2x9z"
    pods[2]["metadata"]["name"] = "db"
    pods[2]["metadata"]["creationTimestamp"] = "2024-05-01T11:59:15Z"
    rows = [pod_row(p, NOW) for p in pods]
    assert format_table(rows, wide=False) == (
        "NAME                  READY   STATUS             RESTARTS      AGE\n"
        "web                   1/1     Running            0             60m\n"
        "api-7d9c6b5f4-x2x9z   0/1     CrashLoopBackOff   12 (3m ago)   60m\n"
        "db                    0/1     Init:0/1           0             45s\n"
    )
    wide = format_table(rows, wide=True).splitlines()
    assert wide[0] == (
        "NAME                  READY   STATUS             RESTARTS      AGE   IP         "
        "NODE     NOMINATED NODE   READINESS GATES"
    )
    assert wide[2].endswith("10.1.0.7   node-1   <none>           <none>")


def test_table_empty() -> None:
    assert format_table([], wide=False) == ""


def test_tabwrite_blocks_are_aligned_apart() -> None:
    text = "a:\tb\nlonger:\tc\nbreak\nx:\ty\n"
    assert tabwrite(text, minwidth=0, padding=2) == "a:       b\nlonger:  c\nbreak\nx:  y\n"


def _describe_fixture() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    pod = make_pod(
        [
            running(
                "c0",
                restarts=1,
                containerID="containerd://abc",
                imageID="sha256:feed",
                lastState=_last("2024-05-01T11:50:00Z"),
            )
        ]
    )
    pod["metadata"]["labels"] = {"app": "web", "tier": "frontend"}
    pod["spec"]["containers"][0].update(
        {"command": ["sh", "-c", "sleep 1000"], "ports": [{"containerPort": 80, "protocol": "TCP"}]}
    )
    pod["spec"]["volumes"] = [{"name": "cache", "emptyDir": {}}]
    pod["status"].update(
        {
            "hostIP": "192.168.1.10",
            "podIP": "10.1.0.7",
            "startTime": "2024-05-01T11:00:00Z",
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "Initialized", "status": "True"},
                {"type": "Ready", "status": "True"},
            ],
        }
    )
    events = [
        {
            "type": "Warning",
            "reason": "BackOff",
            "message": "Back-off restarting failed container c0\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T11:40:00Z",
            "lastTimestamp": "2024-05-01T11:50:00Z",
            "count": 3,
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        },
        {
            "type": "Normal",
            "reason": "Scheduled",
            "message": "Successfully assigned default/web to node-1",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": "2024-05-01T11:00:00Z",
            "lastTimestamp": "2024-05-01T11:00:00Z",
            "count": 1,
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        },
    ]
    return pod, events


def test_describe_has_the_sections_in_order() -> None:
    pod, events = _describe_fixture()
    text = describe_pod(pod, events, now=NOW)
    order = [
        "Name:",
        "Namespace:",
        "Node:",
        "Start Time:",
        "Labels:",
        "Annotations:",
        "Status:",
        "IP:",
        "IPs:",
        "Containers:",
        "Conditions:",
        "Volumes:",
        "QoS Class:",
        "Node-Selectors:",
        "Tolerations:",
        "Events:",
    ]
    positions = [text.index(marker) for marker in order]
    assert positions == sorted(positions)
    lines = text.splitlines()
    assert "Name:         web" in lines
    assert "Node:         node-1/192.168.1.10" in lines
    assert "Start Time:   Wed, 01 May 2024 11:00:00 +0000" in lines
    assert "Labels:       app=web" in lines
    assert "              tier=frontend" in lines
    assert "Annotations:  <none>" in lines
    assert "Status:       Running" in lines
    assert "    Container ID:  containerd://abc" in lines
    assert "    Port:          80/TCP" in lines
    assert "      sleep 1000" in lines
    assert "    Last State:     Terminated" in lines
    assert "      Reason:       Error" in lines
    assert "      Exit Code:    1" in lines
    assert "    Ready:          True" in lines
    assert "    Restart Count:  1" in lines
    assert "    Environment:    <none>" in lines
    assert "  Type          Status" in lines
    assert "  Initialized   True " in lines
    assert "    Type:        EmptyDir (a temporary directory that shares a pod's lifetime)" in lines
    assert "QoS Class:       BestEffort" in lines


def test_describe_events_table() -> None:
    pod, events = _describe_fixture()
    text = describe_pod(pod, events, now=NOW)
    table = text[text.index("Events:") :].splitlines()
    assert table == [
        "Events:",
        "  Type     Reason     Age                From               Message",
        "  ----     ------     ----               ----               -------",
        "  Normal   Scheduled  60m                default-scheduler  "
        "Successfully assigned default/web to node-1",
        "  Warning  BackOff    10m (x3 over 20m)  kubelet            "
        "Back-off restarting failed container c0",
    ]


def test_describe_without_events_and_terminating() -> None:
    pod = make_pod([running("c0")], deleting=True)
    text = describe_pod(pod, [], now=NOW)
    lines = text.splitlines()
    assert lines[-1].startswith("Events:") and lines[-1].endswith("  <none>")
    assert "Status:                    Terminating (lasts 30s)" in lines
    assert "Termination Grace Period:  30s" in lines


def test_describe_init_containers_and_waiting_state() -> None:
    pod = make_pod(
        [waiting("c0", "PodInitializing")],
        phase="Pending",
        init=[waiting("setup", "CrashLoopBackOff", restarts=2)],
    )
    text = describe_pod(pod, [], now=NOW)
    assert "Init Containers:" in text
    assert text.index("Init Containers:") < text.index("Containers:\n")
    assert "      Reason:       CrashLoopBackOff" in text.splitlines()
