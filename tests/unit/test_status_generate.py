"""generate_pod_status, get_phase and qos_class, table-driven against the kubelet's rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.container.status import (
    ContainerState,
    ContainerStatus,
    PodStatus,
    SandboxState,
    SandboxStatus,
)
from minikubelet.status.generate import generate_pod_status, get_phase
from minikubelet.status.qos import compute_qos_class, qos_class
from minikubelet.types import ContainerID, PodSandboxID, PodUID

RUNNING = ContainerState.RUNNING
EXITED = ContainerState.EXITED
CREATED = ContainerState.CREATED

NOW = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
NOW_TEXT = "2024-05-01T12:00:00Z"
T0 = 1_714_564_800_000_000_000  # 2024-05-01T12:00:00Z in ns
SEC = 1_000_000_000


def make_pod(
    *containers: str,
    init: tuple[str, ...] = (),
    sidecars: frozenset[str] = frozenset(),
    restart: str | None = None,
    readiness: frozenset[str] = frozenset(),
    startup: frozenset[str] = frozenset(),
    resources: Mapping[str, Mapping[str, Any]] | None = None,
    deleting: bool = False,
) -> Pod:
    def container(name: str, *, is_init: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "image": f"registry.local/{name}:1.0"}
        if is_init and name in sidecars:
            body["restartPolicy"] = "Always"
        if name in readiness:
            body["readinessProbe"] = {"exec": {"command": ["true"]}}
        if name in startup:
            body["startupProbe"] = {"exec": {"command": ["true"]}}
        if resources and name in resources:
            body["resources"] = dict(resources[name])
        return body

    spec: dict[str, Any] = {
        "containers": [container(n, is_init=False) for n in containers],
        "initContainers": [container(n, is_init=True) for n in init],
    }
    if restart:
        spec["restartPolicy"] = restart
    meta: dict[str, Any] = {"name": "web", "namespace": "default", "uid": "uid-1"}
    if deleting:
        meta["deletionTimestamp"] = "2024-05-01T11:59:00Z"
    return Pod.from_dict({"metadata": meta, "spec": spec})


def running(
    name: str, *, cid: str | None = None, restarts: int = 0, at: int = 10
) -> ContainerStatus:
    return ContainerStatus(
        id=ContainerID(cid or f"c-{name}"),
        name=name,
        state=RUNNING,
        created_at=T0 + at * SEC,
        started_at=T0 + at * SEC,
        image=f"registry.local/{name}:1.0",
        image_ref=f"sha256:{name}",
        restart_count=restarts,
    )


def exited(
    name: str,
    code: int = 0,
    *,
    cid: str | None = None,
    reason: str = "",
    restarts: int = 0,
    at: int = 5,
) -> ContainerStatus:
    return ContainerStatus(
        id=ContainerID(cid or f"x-{name}-{at}"),
        name=name,
        state=EXITED,
        created_at=T0 + at * SEC,
        started_at=T0 + at * SEC,
        finished_at=T0 + (at + 1) * SEC,
        exit_code=code,
        image=f"registry.local/{name}:1.0",
        image_ref=f"sha256:{name}",
        restart_count=restarts,
        reason=reason,
    )


def make_status(*containers: ContainerStatus, sandbox: bool = True) -> PodStatus:
    sandboxes: tuple[SandboxStatus, ...] = ()
    if sandbox:
        sandboxes = (
            SandboxStatus(
                id=PodSandboxID("s1"), state=SandboxState.READY, created_at=T0, ip="10.1.0.7"
            ),
        )
    return PodStatus(
        uid=PodUID("uid-1"),
        name="web",
        namespace="default",
        ips=("10.1.0.7",) if sandbox else (),
        sandbox_statuses=sandboxes,
        container_statuses=containers,
    )


@dataclass(frozen=True)
class Case:
    id: str
    pod: Pod
    status: PodStatus
    phase: str
    #: (condition type, status, reason) for each condition named here.
    conditions: tuple[tuple[str, str, str], ...] = ()
    #: container name -> expected subset of its status (state key -> subset).
    containers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    ready: Mapping[str, bool] = field(default_factory=dict)
    started: Mapping[str, bool] = field(default_factory=dict)
    waiting: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    terminal: bool = False


def _find(status: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for key in ("containerStatuses", "initContainerStatuses"):
        for entry in status.get(key, []):
            if entry["name"] == name:
                return dict(entry)
    raise AssertionError(f"no status for {name}")


def _contains(actual: Any, expected: Any) -> bool:
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and _contains(actual[k], v) for k, v in expected.items()
        )
    return bool(actual == expected)


CASES = [
    Case(
        "pending-container-creating",
        make_pod("app"),
        make_status(sandbox=False),
        "Pending",
        conditions=(
            ("PodReadyToStartContainers", "False", ""),
            ("Initialized", "True", ""),
            ("Ready", "False", "ContainersNotReady"),
            ("ContainersReady", "False", "ContainersNotReady"),
            ("PodScheduled", "True", ""),
        ),
        containers={
            "app": {
                "state": {"waiting": {"reason": "ContainerCreating"}},
                "ready": False,
                "started": False,
                "restartCount": 0,
                "imageID": "",
            }
        },
    ),
    Case(
        "running-and-ready",
        make_pod("app"),
        make_status(running("app")),
        "Running",
        conditions=(
            ("PodReadyToStartContainers", "True", ""),
            ("Ready", "True", ""),
            ("ContainersReady", "True", ""),
        ),
        containers={
            "app": {
                "state": {"running": {"startedAt": "2024-05-01T12:00:10Z"}},
                "ready": True,
                "started": True,
                "containerID": "containerd://c-app",
                "imageID": "sha256:app",
            }
        },
    ),
    Case(
        "running-readiness-false",
        make_pod("app", readiness=frozenset({"app"})),
        make_status(running("app")),
        "Running",
        conditions=(("Ready", "False", "ContainersNotReady"),),
        containers={"app": {"ready": False, "started": True}},
        ready={"c-app": False},
    ),
    Case(
        "readiness-probe-not-run-yet",
        make_pod("app", readiness=frozenset({"app"})),
        make_status(running("app")),
        "Running",
        containers={"app": {"ready": False}},
    ),
    Case(
        "readiness-true-by-full-id",
        make_pod("app", readiness=frozenset({"app"})),
        make_status(running("app")),
        "Running",
        conditions=(("Ready", "True", ""),),
        containers={"app": {"ready": True}},
        ready={"containerd://c-app": True},
    ),
    Case(
        "startup-probe-pending-not-started",
        make_pod("app", startup=frozenset({"app"})),
        make_status(running("app")),
        "Running",
        containers={"app": {"ready": False, "started": False}},
    ),
    Case(
        "startup-probe-passed",
        make_pod("app", startup=frozenset({"app"})),
        make_status(running("app")),
        "Running",
        containers={"app": {"ready": True, "started": True}},
        started={"c-app": True},
    ),
    Case(
        "init-0-of-1-pod-initializing",
        make_pod("app", init=("setup",)),
        make_status(running("setup")),
        "Pending",
        conditions=(
            ("Initialized", "False", "ContainersNotInitialized"),
            ("Ready", "False", "ContainersNotReady"),
        ),
        containers={
            "setup": {"state": {"running": {}}, "ready": False},
            "app": {"state": {"waiting": {"reason": "PodInitializing"}}},
        },
    ),
    Case(
        "init-done-app-running",
        make_pod("app", init=("setup",)),
        make_status(exited("setup", 0), running("app")),
        "Running",
        conditions=(("Initialized", "True", ""), ("Ready", "True", "")),
        containers={
            "setup": {
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                "ready": True,
            },
        },
    ),
    Case(
        "init-failed-never-fails-pod",
        make_pod("app", init=("setup",), restart="Never"),
        make_status(exited("setup", 1)),
        "Failed",
        conditions=(
            ("Initialized", "False", "ContainersNotInitialized"),
            ("Ready", "False", "PodFailed"),
            ("ContainersReady", "False", "PodFailed"),
        ),
        containers={
            "setup": {"state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
            "app": {"state": {"waiting": {"reason": "PodInitializing"}}},
        },
    ),
    Case(
        "init-failed-always-stays-pending",
        make_pod("app", init=("setup",)),
        make_status(exited("setup", 1)),
        "Pending",
        containers={"setup": {"state": {"terminated": {"exitCode": 1}}}},
    ),
    Case(
        "init-crash-loop-waiting",
        make_pod("app", init=("setup",)),
        make_status(exited("setup", 1)),
        "Pending",
        waiting={"setup": ("CrashLoopBackOff", "back-off 10s restarting failed container=setup")},
        containers={
            "setup": {
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
            }
        },
    ),
    Case(
        "all-succeeded-on-failure",
        make_pod("a", "b", restart="OnFailure"),
        make_status(exited("a", 0), exited("b", 0)),
        "Succeeded",
        conditions=(
            ("Initialized", "True", "PodCompleted"),
            ("Ready", "False", "PodCompleted"),
            ("ContainersReady", "False", "PodCompleted"),
        ),
        containers={"a": {"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}},
    ),
    Case(
        "one-failed-never",
        make_pod("a", "b", restart="Never"),
        make_status(exited("a", 0), exited("b", 2)),
        "Failed",
        conditions=(("Ready", "False", "PodFailed"),),
        containers={"b": {"state": {"terminated": {"reason": "Error", "exitCode": 2}}}},
    ),
    Case(
        "failed-on-failure-restarting",
        make_pod("a", restart="OnFailure"),
        make_status(exited("a", 2)),
        "Running",
    ),
    Case(
        "always-never-succeeded",
        make_pod("a"),
        make_status(exited("a", 0)),
        "Running",
        conditions=(("Ready", "False", "ContainersNotReady"),),
    ),
    Case(
        "always-terminal-succeeds",
        make_pod("a"),
        make_status(exited("a", 0)),
        "Succeeded",
        terminal=True,
    ),
    Case(
        "crash-loop-waiting-with-last-state",
        make_pod("app"),
        make_status(
            exited("app", 1, restarts=3, at=8),
            exited("app", 1, restarts=2, at=2),
        ),
        "Running",
        waiting={"app": ("CrashLoopBackOff", "back-off 40s restarting failed container=app")},
        containers={
            "app": {
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container=app",
                    }
                },
                "lastState": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "finishedAt": "2024-05-01T12:00:09Z",
                        "containerID": "containerd://x-app-8",
                    }
                },
                "restartCount": 3,
                "ready": False,
                "started": False,
            }
        },
    ),
    Case(
        "image-pull-backoff",
        make_pod("app"),
        make_status(),
        "Pending",
        waiting={"app": ("ImagePullBackOff", 'Back-off pulling image "registry.local/app:1.0"')},
        containers={"app": {"state": {"waiting": {"reason": "ImagePullBackOff"}}, "lastState": {}}},
    ),
    Case(
        "err-image-pull",
        make_pod("app"),
        make_status(),
        "Pending",
        waiting={"app": ("ErrImagePull", "not found")},
        containers={
            "app": {"state": {"waiting": {"reason": "ErrImagePull", "message": "not found"}}}
        },
    ),
    Case(
        "create-container-config-error",
        make_pod("app"),
        make_status(),
        "Pending",
        waiting={"app": ("CreateContainerConfigError", 'secret "x" not found')},
        containers={"app": {"state": {"waiting": {"reason": "CreateContainerConfigError"}}}},
    ),
    Case(
        "waiting-reason-ignored-when-no-restart-due",
        make_pod("app", restart="Never"),
        make_status(exited("app", 1)),
        "Failed",
        waiting={"app": ("CrashLoopBackOff", "stale")},
        containers={"app": {"state": {"terminated": {"exitCode": 1}}}},
    ),
    Case(
        "created-container-waits-without-reason",
        make_pod("app"),
        make_status(
            ContainerStatus(id=ContainerID("c1"), name="app", state=CREATED, created_at=T0 + SEC)
        ),
        "Pending",
        containers={"app": {"state": {"waiting": {}}, "containerID": "containerd://c1"}},
    ),
    Case(
        "oom-killed-reason-from-runtime",
        make_pod("app", restart="Never"),
        make_status(exited("app", 137, reason="OOMKilled")),
        "Failed",
        containers={"app": {"state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}}}},
    ),
    Case(
        "container-cannot-run-reason-from-runtime",
        make_pod("app", restart="Never"),
        make_status(exited("app", 128, reason="ContainerCannotRun")),
        "Failed",
        containers={"app": {"state": {"terminated": {"reason": "ContainerCannotRun"}}}},
    ),
    Case(
        "sidecar-not-counted-for-phase",
        # The kubelet killed the sidecar once the job was done: its 137 is no failure.
        make_pod("job", init=("proxy",), sidecars=frozenset({"proxy"}), restart="Never"),
        make_status(exited("proxy", 137, at=7), exited("job", 0, at=5)),
        "Succeeded",
        containers={"proxy": {"state": {"terminated": {"exitCode": 137}}, "started": False}},
    ),
    Case(
        "running-sidecar-keeps-finished-job-running",
        make_pod("job", init=("proxy",), sidecars=frozenset({"proxy"}), restart="Never"),
        make_status(running("proxy", at=2), exited("job", 0, at=5)),
        "Running",
        containers={"proxy": {"state": {"running": {}}, "started": True, "ready": True}},
    ),
    Case(
        "sidecar-running-app-running",
        make_pod("app", init=("proxy",), sidecars=frozenset({"proxy"})),
        make_status(running("proxy", at=2), running("app", at=5)),
        "Running",
        conditions=(("Initialized", "True", ""), ("ContainersReady", "True", "")),
    ),
    Case(
        "sidecar-not-started-keeps-pending",
        make_pod(
            "app", init=("proxy",), sidecars=frozenset({"proxy"}), startup=frozenset({"proxy"})
        ),
        make_status(running("proxy", at=2)),
        "Pending",
        conditions=(("Initialized", "False", "ContainersNotInitialized"),),
        containers={"proxy": {"started": False}},
    ),
    Case(
        "sidecar-crash-loop-under-never",
        make_pod("app", init=("proxy",), sidecars=frozenset({"proxy"}), restart="Never"),
        make_status(exited("proxy", 1, at=3), running("app", at=5)),
        "Running",
        waiting={"proxy": ("CrashLoopBackOff", "back-off 10s")},
        containers={"proxy": {"state": {"waiting": {"reason": "CrashLoopBackOff"}}}},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_generate_pod_status(case: Case) -> None:
    out = generate_pod_status(
        case.pod,
        case.status,
        previous=None,
        ready=case.ready,
        started=case.started,
        waiting=case.waiting,
        host_ip="192.168.1.10",
        runtime_name="containerd",
        now=NOW,
        terminal=case.terminal,
    )
    assert out["phase"] == case.phase
    conditions = {c["type"]: c for c in out["conditions"]}
    for kind, status, reason in case.conditions:
        assert conditions[kind]["status"] == status, kind
        assert conditions[kind].get("reason", "") == reason, kind
    for name, expected in case.containers.items():
        actual = _find(out, name)
        assert _contains(actual, expected), f"{name}: {actual}"


def _generate(
    pod: Pod, status: PodStatus, previous: Mapping[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    args: dict[str, Any] = {
        "previous": previous,
        "ready": {},
        "started": {},
        "waiting": {},
        "host_ip": "192.168.1.10",
        "runtime_name": "containerd",
        "now": NOW,
    }
    args.update(kw)
    return generate_pod_status(pod, status, **args)


def test_shape_and_key_order() -> None:
    out = _generate(make_pod("app"), make_status(running("app")))
    assert list(out) == [
        "phase",
        "conditions",
        "hostIP",
        "hostIPs",
        "podIP",
        "podIPs",
        "startTime",
        "containerStatuses",
        "qosClass",
    ]
    assert out["hostIPs"] == [{"ip": "192.168.1.10"}]
    assert out["podIPs"] == [{"ip": "10.1.0.7"}]
    assert out["startTime"] == NOW_TEXT
    assert [c["type"] for c in out["conditions"]] == [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    first = out["conditions"][0]
    assert first == {
        "type": "PodReadyToStartContainers",
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": NOW_TEXT,
    }
    assert list(out["containerStatuses"][0]) == [
        "name",
        "state",
        "lastState",
        "ready",
        "restartCount",
        "image",
        "imageID",
        "containerID",
        "started",
    ]


def test_not_ready_message_lists_containers_as_go_prints_them() -> None:
    pod = make_pod("a", "b", readiness=frozenset({"a", "b"}))
    out = _generate(pod, make_status(running("a"), running("b")))
    ready = next(c for c in out["conditions"] if c["type"] == "Ready")
    assert ready["message"] == "containers with unready status: [a b]"


def test_condition_transition_time_stable_while_status_unchanged() -> None:
    pod = make_pod("app", readiness=frozenset({"app"}))
    status = make_status(running("app"))
    first = _generate(pod, status, ready={"c-app": True})
    later = NOW + dt.timedelta(minutes=5)
    second = _generate(pod, status, previous=first, ready={"c-app": True}, now=later)
    assert second["conditions"] == first["conditions"]
    assert second["startTime"] == NOW_TEXT
    third = _generate(pod, status, previous=second, ready={"c-app": False}, now=later)
    by_type = {c["type"]: c for c in third["conditions"]}
    assert by_type["Ready"]["lastTransitionTime"] == "2024-05-01T12:05:00Z"
    assert by_type["ContainersReady"]["lastTransitionTime"] == "2024-05-01T12:05:00Z"
    assert by_type["Initialized"]["lastTransitionTime"] == NOW_TEXT


def test_terminal_phase_is_never_left() -> None:
    pod = make_pod("a", restart="Never")
    done = _generate(pod, make_status(exited("a", 0)))
    assert done["phase"] == "Succeeded"
    # The runtime forgot the container; the previous terminal phase stands.
    again = _generate(pod, make_status(), previous=done)
    assert again["phase"] == "Succeeded"
    assert _find(again, "a")["state"]["terminated"]["exitCode"] == 0


def test_lost_running_container_gets_unknown_last_state_and_a_restart() -> None:
    pod = make_pod("app")
    before = _generate(pod, make_status(running("app", restarts=1)))
    after = _generate(pod, make_status(), previous=before)
    app = _find(after, "app")
    assert app["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
    assert app["lastState"]["terminated"]["exitCode"] == 137
    assert app["restartCount"] == 2
    assert after["phase"] == "Running"


def test_garbage_collected_init_container_counts_as_completed() -> None:
    pod = make_pod("app", init=("setup",))
    out = _generate(pod, make_status(running("app")))
    setup = _find(out, "setup")
    assert setup["state"]["terminated"]["reason"] == "Completed"
    assert setup["ready"] is True
    assert out["phase"] == "Running"


def test_started_kept_from_previous_status_for_the_same_running_container() -> None:
    pod = make_pod("app", startup=frozenset({"app"}))
    status = make_status(running("app"))
    first = _generate(pod, status, started={"c-app": True})
    assert _find(first, "app")["started"] is True
    second = _generate(pod, status, previous=first)  # the prober forgot after a restart
    assert _find(second, "app")["started"] is True


def test_started_not_carried_to_a_new_instance() -> None:
    pod = make_pod("app", startup=frozenset({"app"}))
    first = _generate(pod, make_status(running("app")), started={"c-app": True})
    restarted = make_status(running("app", cid="c-app-2", restarts=1, at=20))
    second = _generate(pod, restarted, previous=first)
    assert _find(second, "app")["started"] is False
    assert _find(second, "app")["ready"] is False


def test_host_network_pod_gets_the_node_ip() -> None:
    raw = {
        "metadata": {"name": "h", "uid": "u"},
        "spec": {"hostNetwork": True, "containers": [{"name": "a", "image": "x:1"}]},
    }
    pod = Pod.from_dict(raw)
    out = _generate(pod, make_status(running("a"), sandbox=False))
    assert out["podIP"] == "192.168.1.10"
    assert out["podIPs"] == [{"ip": "192.168.1.10"}]


def test_pod_ips_primary_family_first() -> None:
    status = PodStatus(uid=PodUID("u"), ips=("fd00::7", "10.1.0.7"))
    out = _generate(make_pod("a"), status)
    assert out["podIPs"] == [{"ip": "10.1.0.7"}, {"ip": "fd00::7"}]
    out6 = _generate(make_pod("a"), status, host_ip="fd00::1")
    assert out6["podIP"] == "fd00::7"


def test_regular_container_statuses_sorted_by_name_init_in_spec_order() -> None:
    pod = make_pod("zeta", "alpha", init=("second", "first"))
    out = _generate(pod, make_status())
    assert [s["name"] for s in out["containerStatuses"]] == ["alpha", "zeta"]
    assert [s["name"] for s in out["initContainerStatuses"]] == ["second", "first"]


def test_readiness_gate_not_satisfied() -> None:
    raw = {
        "metadata": {"name": "g", "uid": "u"},
        "spec": {
            "containers": [{"name": "a", "image": "x:1"}],
            "readinessGates": [{"conditionType": "example.com/lb"}],
        },
        "status": {"conditions": [{"type": "example.com/lb", "status": "False"}]},
    }
    out = _generate(Pod.from_dict(raw), make_status(running("a")))
    by_type = {c["type"]: c for c in out["conditions"]}
    assert by_type["example.com/lb"]["status"] == "False"
    assert by_type["Ready"]["reason"] == "ReadinessGatesNotReady"
    assert by_type["ContainersReady"]["status"] == "True"


@pytest.mark.parametrize(
    ("statuses", "restart", "terminal", "initialized", "phase"),
    [
        pytest.param([], "Always", False, False, "Pending", id="nothing-known"),
        pytest.param(
            [{"name": "a", "state": {"waiting": {}}, "lastState": {"terminated": {"exitCode": 1}}}],
            "Always",
            False,
            False,
            "Running",
            id="waiting-after-exit-is-stopped",
        ),
        pytest.param(
            [{"name": "a", "state": {"waiting": {}}, "lastState": {"terminated": {"exitCode": 1}}}],
            "Never",
            False,
            False,
            "Failed",
            id="never-waiting-after-failure",
        ),
        pytest.param(
            [{"name": "a", "state": {"terminated": {"exitCode": 1}}}],
            "Always",
            True,
            False,
            "Failed",
            id="terminal-with-failure",
        ),
    ],
)
def test_get_phase(
    statuses: list[dict[str, Any]], restart: str, terminal: bool, initialized: bool, phase: str
) -> None:
    pod = make_pod("a", restart=restart)
    assert get_phase(pod, statuses, terminal=terminal, initialized=initialized) == phase


def test_get_phase_restarting_sidecar_after_initialization_stays_running() -> None:
    pod = make_pod("app", init=("proxy",), sidecars=frozenset({"proxy"}))
    statuses: list[dict[str, Any]] = [
        {"name": "proxy", "state": {"waiting": {}}},
        {"name": "app", "state": {"running": {}}},
    ]
    assert get_phase(pod, statuses, initialized=False) == "Pending"
    assert get_phase(pod, statuses, initialized=True) == "Pending"  # waiting counts
    statuses[0] = {"name": "proxy", "state": {"running": {}}, "started": False}
    assert get_phase(pod, statuses, initialized=False) == "Pending"
    assert get_phase(pod, statuses, initialized=True) == "Running"


@pytest.mark.parametrize(
    ("resources", "qos"),
    [
        pytest.param({}, "BestEffort", id="best-effort"),
        pytest.param(
            {"a": {"limits": {"cpu": "500m", "memory": "128Mi"}}},
            "Guaranteed",
            id="guaranteed-limits-only",
        ),
        pytest.param(
            {
                "a": {
                    "requests": {"cpu": "0.5", "memory": "134217728"},
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                }
            },
            "Guaranteed",
            id="guaranteed-equal-in-other-units",
        ),
        pytest.param(
            {"a": {"requests": {"cpu": "100m"}}},
            "Burstable",
            id="burstable-request-only",
        ),
        pytest.param(
            {"a": {"limits": {"cpu": "1", "memory": "1Gi"}}, "b": {}},
            "Burstable",
            id="burstable-one-container-without-limits",
        ),
        pytest.param(
            {"a": {"requests": {"cpu": "1"}, "limits": {"cpu": "2", "memory": "1Gi"}}},
            "Burstable",
            id="burstable-request-below-limit",
        ),
        pytest.param(
            {"a": {"requests": {"ephemeral-storage": "1Gi"}}},
            "BestEffort",
            id="other-resources-ignored",
        ),
        pytest.param(
            {"a": {"requests": {"cpu": "0"}}},
            "BestEffort",
            id="zero-request-ignored",
        ),
    ],
)
def test_qos_class(resources: dict[str, dict[str, Any]], qos: str) -> None:
    pod = make_pod(*(resources or {"a": {}}), resources=resources)
    assert compute_qos_class(pod) == qos
    assert qos_class(pod) == qos
    out = _generate(pod, make_status())
    assert out["qosClass"] == qos


def test_qos_class_prefers_status() -> None:
    raw = {
        "metadata": {"name": "q"},
        "spec": {"containers": [{"name": "a", "image": "x:1"}]},
        "status": {"qosClass": "Burstable"},
    }
    assert qos_class(Pod.from_dict(raw)) == "Burstable"
