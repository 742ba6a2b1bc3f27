"""compute_pod_actions, table-driven: one row per rule of the kubelet's computePodActions."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from minikubelet.api.pod import Pod
from minikubelet.container.status import (
    ContainerState,
    ContainerStatus,
    NamespaceMode,
    PodStatus,
    SandboxState,
    SandboxStatus,
)
from minikubelet.kuberuntime.actions import KillReason, PodActions, compute_pod_actions
from minikubelet.kuberuntime.hash import hash_container
from minikubelet.types import ContainerID, PodSandboxID, PodUID

RUNNING = ContainerState.RUNNING
EXITED = ContainerState.EXITED
CREATED = ContainerState.CREATED
UNKNOWN = ContainerState.UNKNOWN

T0 = 1_700_000_000_000_000_000  # ns


# --- builders ------------------------------------------------------------------------------


def make_pod(
    *containers: str,
    init: tuple[str, ...] = (),
    sidecars: frozenset[str] = frozenset(),
    restart: str | None = None,
    host_network: bool = False,
    deleting: bool = False,
    liveness: frozenset[str] = frozenset(),
    startup: frozenset[str] = frozenset(),
) -> Pod:
    """A pod; names in ``sidecars`` become restartable init containers."""

    def container(name: str, *, is_init: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "image": f"registry.local/{name}:1.0"}
        if is_init and name in sidecars:
            body["restartPolicy"] = "Always"
        if name in liveness:
            body["livenessProbe"] = {"exec": {"command": ["true"]}}
        if name in startup:
            body["startupProbe"] = {"exec": {"command": ["true"]}}
        return body

    spec: dict[str, Any] = {
        "containers": [container(n, is_init=False) for n in containers],
        "initContainers": [container(n, is_init=True) for n in init],
        "hostNetwork": host_network,
    }
    if restart is not None:
        spec["restartPolicy"] = restart
    metadata: dict[str, Any] = {"name": "web", "namespace": "default", "uid": "uid-1"}
    if deleting:
        metadata["deletionTimestamp"] = "2024-01-01T00:00:00Z"
        metadata["deletionGracePeriodSeconds"] = 30
    return Pod.from_dict({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})


def ready(attempt: int = 0, *, sid: str = "sb1", ip: str | None = "10.0.0.2", at: int = 0,
          ns: NamespaceMode = NamespaceMode.POD) -> SandboxStatus:  # fmt: skip
    return SandboxStatus(
        id=PodSandboxID(sid),
        state=SandboxState.READY,
        created_at=T0 + at,
        attempt=attempt,
        ip=ip,
        network_namespace=ns,
    )


def notready(attempt: int = 0, *, sid: str = "sb1", at: int = 0) -> SandboxStatus:
    return SandboxStatus(
        id=PodSandboxID(sid),
        state=SandboxState.NOTREADY,
        created_at=T0 + at,
        attempt=attempt,
        ip="10.0.0.2",
    )


@dataclass(frozen=True)
class C:
    """A container instance to put in the status; the spec hash is filled in from the pod."""

    name: str
    state: ContainerState
    exit_code: int = 0
    at: int = 1
    stale: bool = False  # created from an older spec
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.name}#{self.at}"

    def build(self, pod: Pod) -> ContainerStatus:
        spec = next(
            c for c in (*pod.spec.init_containers, *pod.spec.containers) if c.name == self.name
        )
        return ContainerStatus(
            id=ContainerID(self.id),
            name=self.name,
            state=self.state,
            created_at=T0 + self.at,
            started_at=T0 + self.at if self.state is not CREATED else 0,
            exit_code=self.exit_code,
            hash="0123abcd" if self.stale else hash_container(spec),
            reason=self.reason,
        )


@dataclass(frozen=True)
class Want:
    kill_pod: bool = False
    create_sandbox: bool = False
    sandbox_id: str | None = "sb1"
    attempt: int = 0
    init_start: tuple[int, ...] = ()
    start: tuple[int, ...] = ()
    kill: Mapping[str, KillReason] = field(default_factory=dict)
    init_backoff: tuple[int, ...] = ()
    backoff: tuple[int, ...] = ()


@dataclass(frozen=True)
class Case:
    id: str
    pod: Pod
    want: Want
    sandboxes: tuple[SandboxStatus, ...] = ()
    containers: tuple[C, ...] = ()
    backoff: Callable[[str], bool] | None = None
    liveness_failed: frozenset[str] = frozenset()
    startup_failed: frozenset[str] = frozenset()
    startup_succeeded: frozenset[str] | None = None


def in_backoff(*names: str) -> Callable[[str], bool]:
    return lambda name: name in names


# --- the table -----------------------------------------------------------------------------

P2 = make_pod("app", "log")
CASES = [
    # sandbox
    Case(
        "fresh-pod-creates-sandbox-and-starts-all",
        P2,
        Want(kill_pod=True, create_sandbox=True, sandbox_id=None, attempt=0, start=(0, 1)),
    ),
    Case(
        "fresh-pod-with-init-starts-only-first-init",
        make_pod("app", init=("setup", "migrate")),
        Want(kill_pod=True, create_sandbox=True, sandbox_id=None, init_start=(0,)),
    ),
    Case(
        "sandbox-dead-always-recreated-next-attempt",
        P2,
        Want(kill_pod=True, create_sandbox=True, attempt=3, start=(0, 1)),
        sandboxes=(notready(2),),
        containers=(C("app", EXITED, 137), C("log", EXITED, 0)),
    ),
    Case(
        "sandbox-dead-never-containers-ran-no-new-sandbox",
        make_pod("app", restart="Never"),
        Want(kill_pod=True, create_sandbox=False, attempt=1),
        sandboxes=(notready(0),),
        containers=(C("app", EXITED, 0),),
    ),
    Case(
        "sandbox-dead-never-nothing-ran-retries-sandbox",
        make_pod("app", restart="Never"),
        Want(kill_pod=True, create_sandbox=True, attempt=1, start=(0,)),
        sandboxes=(notready(0),),
    ),
    Case(
        "sandbox-dead-onfailure-all-succeeded-no-new-sandbox",
        make_pod("app", "log", restart="OnFailure"),
        Want(kill_pod=True, create_sandbox=False, attempt=1),
        sandboxes=(notready(0),),
        containers=(C("app", EXITED, 0), C("log", EXITED, 0)),
    ),
    Case(
        "sandbox-dead-onfailure-restarts-only-failed",
        make_pod("app", "log", restart="OnFailure"),
        Want(kill_pod=True, create_sandbox=True, attempt=1, start=(1,)),
        sandboxes=(notready(0),),
        containers=(C("app", EXITED, 0), C("log", EXITED, 2)),
    ),
    Case(
        "sandbox-dead-with-init-restarts-initialization",
        make_pod("app", init=("setup",)),
        Want(kill_pod=True, create_sandbox=True, attempt=1, init_start=(0,)),
        sandboxes=(notready(0),),
        containers=(C("setup", EXITED, 0), C("app", EXITED, 1, at=2)),
    ),
    Case(
        "sandbox-network-mode-changed-recreated-without-id",
        make_pod("app", host_network=True),
        Want(kill_pod=True, create_sandbox=True, sandbox_id=None, attempt=1, start=(0,)),
        sandboxes=(ready(0, ns=NamespaceMode.POD),),
        containers=(C("app", RUNNING),),
    ),
    Case(
        "host-network-sandbox-without-ip-is-fine",
        make_pod("app", host_network=True),
        Want(),
        sandboxes=(ready(0, ip="", ns=NamespaceMode.NODE),),
        containers=(C("app", RUNNING),),
    ),
    Case(
        "sandbox-without-ip-recreated",
        P2,
        Want(kill_pod=True, create_sandbox=True, attempt=1, start=(0, 1)),
        sandboxes=(ready(0, ip=""),),
        containers=(C("app", RUNNING), C("log", RUNNING)),
    ),
    Case(
        "two-ready-sandboxes-reconciled",
        P2,
        Want(kill_pod=True, create_sandbox=True, sandbox_id="sb2", attempt=2, start=(0, 1)),
        sandboxes=(ready(0, sid="sb1"), ready(1, sid="sb2", at=5)),
        containers=(C("app", RUNNING), C("log", RUNNING)),
    ),
    # steady state and restart policies
    Case(
        "all-running-nothing-to-do",
        P2,
        Want(),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING), C("log", RUNNING)),
    ),
    Case(
        "newest-instance-decides",
        P2,
        Want(),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 1, at=1), C("app", RUNNING, at=9), C("log", RUNNING)),
    ),
    Case(
        "always-exit-0-restarted",
        P2,
        Want(start=(0,)),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 0), C("log", RUNNING)),
    ),
    Case(
        "always-exit-1-restarted",
        P2,
        Want(start=(0,)),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 1), C("log", RUNNING)),
    ),
    Case(
        "onfailure-exit-0-left-alone",
        make_pod("app", "log", restart="OnFailure"),
        Want(),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 0), C("log", RUNNING)),
    ),
    Case(
        "onfailure-exit-1-restarted",
        make_pod("app", "log", restart="OnFailure"),
        Want(start=(0,)),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 1), C("log", RUNNING)),
    ),
    Case(
        "never-exit-0-left-alone",
        make_pod("app", "log", restart="Never"),
        Want(),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 0), C("log", RUNNING)),
    ),
    Case(
        "never-exit-1-left-alone",
        make_pod("app", "log", restart="Never"),
        Want(),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 1), C("log", RUNNING)),
    ),
    Case(
        "never-all-exited-pod-killed-no-new-sandbox",
        make_pod("app", "log", restart="Never"),
        Want(kill_pod=True),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 0), C("log", EXITED, 1)),
    ),
    Case(
        "onfailure-all-succeeded-pod-killed",
        make_pod("app", "log", restart="OnFailure"),
        Want(kill_pod=True),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 0), C("log", EXITED, 0)),
    ),
    Case(
        "created-but-never-started-started-again",
        P2,
        Want(start=(0,)),
        sandboxes=(ready(),),
        containers=(C("app", CREATED), C("log", RUNNING)),
    ),
    Case(
        "unknown-state-killed-then-started",
        P2,
        Want(start=(0,), kill={"app#1": KillReason.UNKNOWN}),
        sandboxes=(ready(),),
        containers=(C("app", UNKNOWN), C("log", RUNNING)),
    ),
    Case(
        "deleting-pod-restarts-nothing",
        make_pod("app", "log", deleting=True),
        Want(),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 1), C("log", RUNNING)),
    ),
    # spec changes and probes
    Case(
        "hash-changed-killed-and-restarted",
        P2,
        Want(start=(0,), kill={"app#1": KillReason.NONE}),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING, stale=True), C("log", RUNNING)),
    ),
    Case(
        "hash-changed-restarted-even-under-never",
        make_pod("app", restart="Never"),
        Want(start=(0,), kill={"app#1": KillReason.NONE}),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING, stale=True),),
    ),
    Case(
        "liveness-failure-killed-and-restarted",
        make_pod("app", "log", liveness=frozenset({"app"})),
        Want(start=(0,), kill={"app#1": KillReason.LIVENESS_PROBE}),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING), C("log", RUNNING)),
        liveness_failed=frozenset({"app"}),
    ),
    Case(
        "liveness-failure-under-never-killed-not-restarted",
        make_pod("app", "log", restart="Never", liveness=frozenset({"app"})),
        Want(kill={"app#1": KillReason.LIVENESS_PROBE}),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING), C("log", RUNNING)),
        liveness_failed=frozenset({"app"}),
    ),
    Case(
        "startup-failure-killed-and-restarted",
        make_pod("app", startup=frozenset({"app"})),
        Want(start=(0,), kill={"app#1": KillReason.STARTUP_PROBE}),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING),),
        startup_failed=frozenset({"app"}),
    ),
    # init containers
    Case(
        "init-first-started-in-ready-sandbox",
        make_pod("app", init=("setup", "migrate")),
        Want(init_start=(0,)),
        sandboxes=(ready(),),
    ),
    Case(
        "init-running-wait",
        make_pod("app", init=("setup", "migrate")),
        Want(),
        sandboxes=(ready(),),
        containers=(C("setup", RUNNING),),
    ),
    Case(
        "init-middle-next-one-started",
        make_pod("app", init=("setup", "migrate", "warm")),
        Want(init_start=(1,)),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 0),),
    ),
    Case(
        "init-failed-under-never-kills-pod",
        make_pod("app", init=("setup", "migrate"), restart="Never"),
        Want(kill_pod=True),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 0, at=1), C("migrate", EXITED, 3, at=2)),
    ),
    Case(
        "init-oomkilled-counts-as-failed",
        make_pod("app", init=("setup",), restart="Never"),
        Want(kill_pod=True),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 0, reason="OOMKilled"),),
    ),
    Case(
        "init-failed-under-onfailure-rerun",
        make_pod("app", init=("setup", "migrate"), restart="OnFailure"),
        Want(init_start=(1,)),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 0, at=1), C("migrate", EXITED, 3, at=2)),
    ),
    Case(
        "init-failed-under-always-rerun",
        make_pod("app", init=("setup",)),
        Want(init_start=(0,)),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 1),),
    ),
    Case(
        "init-unknown-killed-and-rerun",
        make_pod("app", init=("setup",)),
        Want(init_start=(0,), kill={"setup#1": KillReason.UNKNOWN}),
        sandboxes=(ready(),),
        containers=(C("setup", UNKNOWN),),
    ),
    Case(
        "init-all-done-regular-containers-started",
        make_pod("app", "log", init=("setup", "migrate")),
        Want(start=(0, 1)),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 0, at=1), C("migrate", EXITED, 0, at=2)),
    ),
    Case(
        "init-statuses-gone-but-app-running-not-rerun",
        make_pod("app", init=("setup",)),
        Want(),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING),),
    ),
    # sidecars
    Case(
        "sidecar-started-first",
        make_pod("app", init=("proxy", "setup"), sidecars=frozenset({"proxy"})),
        Want(init_start=(0,)),
        sandboxes=(ready(),),
    ),
    Case(
        "sidecar-running-next-init-started",
        make_pod("app", init=("proxy", "setup"), sidecars=frozenset({"proxy"})),
        Want(init_start=(1,)),
        sandboxes=(ready(),),
        containers=(C("proxy", RUNNING),),
    ),
    Case(
        "sidecar-startup-probe-pending-waits",
        make_pod(
            "app",
            init=("proxy", "setup"),
            sidecars=frozenset({"proxy"}),
            startup=frozenset({"proxy"}),
        ),
        Want(),
        sandboxes=(ready(),),
        containers=(C("proxy", RUNNING),),
        startup_succeeded=frozenset(),
    ),
    Case(
        "sidecar-startup-probe-passed-next-init-started",
        make_pod(
            "app",
            init=("proxy", "setup"),
            sidecars=frozenset({"proxy"}),
            startup=frozenset({"proxy"}),
        ),
        Want(init_start=(1,)),
        sandboxes=(ready(),),
        containers=(C("proxy", RUNNING),),
        startup_succeeded=frozenset({"proxy"}),
    ),
    Case(
        "sidecars-started-regular-containers-start",
        make_pod("app", "log", init=("proxy", "setup"), sidecars=frozenset({"proxy"})),
        Want(start=(0, 1)),
        sandboxes=(ready(),),
        containers=(C("proxy", RUNNING, at=1), C("setup", EXITED, 0, at=2)),
    ),
    Case(
        "last-init-is-running-sidecar-regular-containers-start",
        make_pod("app", init=("setup", "proxy"), sidecars=frozenset({"proxy"})),
        Want(start=(0,)),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 0, at=1), C("proxy", RUNNING, at=2)),
    ),
    Case(
        "sidecar-exited-restarted-while-app-runs",
        make_pod("app", init=("proxy",), sidecars=frozenset({"proxy"})),
        Want(init_start=(0,)),
        sandboxes=(ready(),),
        containers=(C("proxy", EXITED, 1, at=1), C("app", RUNNING, at=2)),
    ),
    Case(
        "sidecar-restarted-even-under-never",
        make_pod("app", init=("proxy",), sidecars=frozenset({"proxy"}), restart="Never"),
        Want(init_start=(0,)),
        sandboxes=(ready(),),
        containers=(C("proxy", EXITED, 0, at=1), C("app", RUNNING, at=2)),
    ),
    Case(
        "sidecar-hash-changed-killed-and-restarted",
        make_pod("app", init=("proxy",), sidecars=frozenset({"proxy"})),
        Want(init_start=(0,), kill={"proxy#1": KillReason.NONE}),
        sandboxes=(ready(),),
        containers=(C("proxy", RUNNING, at=1, stale=True), C("app", RUNNING, at=2)),
    ),
    Case(
        "sidecar-liveness-failure-killed-and-restarted",
        make_pod(
            "app", init=("proxy",), sidecars=frozenset({"proxy"}), liveness=frozenset({"proxy"})
        ),
        Want(init_start=(0,), kill={"proxy#1": KillReason.LIVENESS_PROBE}),
        sandboxes=(ready(),),
        containers=(C("proxy", RUNNING, at=1), C("app", RUNNING, at=2)),
        liveness_failed=frozenset({"proxy"}),
    ),
    Case(
        "sidecar-gc-ed-restarted-after-initialization",
        make_pod("app", init=("proxy", "setup"), sidecars=frozenset({"proxy"})),
        Want(init_start=(0,)),
        sandboxes=(ready(),),
        containers=(C("app", RUNNING),),
    ),
    Case(
        "sidecars-do-not-keep-a-finished-pod-alive",
        make_pod("app", init=("proxy",), sidecars=frozenset({"proxy"}), restart="OnFailure"),
        Want(kill_pod=True),
        sandboxes=(ready(),),
        containers=(C("proxy", RUNNING, at=1), C("app", EXITED, 0, at=2)),
    ),
    # crash-loop back-off
    Case(
        "backoff-suppresses-restart-without-killing-pod",
        make_pod("app"),
        Want(backoff=(0,)),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 1),),
        backoff=in_backoff("app"),
    ),
    Case(
        "backoff-ignored-for-first-start",
        make_pod("app"),
        Want(start=(0,)),
        sandboxes=(ready(),),
        backoff=in_backoff("app"),
    ),
    Case(
        "backoff-suppresses-init-rerun",
        make_pod("app", init=("setup",)),
        Want(init_backoff=(0,)),
        sandboxes=(ready(),),
        containers=(C("setup", EXITED, 1),),
        backoff=in_backoff("setup"),
    ),
    Case(
        "backoff-only-for-the-named-container",
        P2,
        Want(start=(1,), backoff=(0,)),
        sandboxes=(ready(),),
        containers=(C("app", EXITED, 1), C("log", EXITED, 1)),
        backoff=in_backoff("app"),
    ),
]


def _compute(case: Case) -> PodActions:
    status = PodStatus(
        uid=PodUID("uid-1"),
        name="web",
        namespace="default",
        sandbox_statuses=case.sandboxes,
        container_statuses=tuple(c.build(case.pod) for c in case.containers),
    )
    return compute_pod_actions(
        case.pod,
        status,
        backoff=case.backoff,
        liveness_failed=case.liveness_failed,
        startup_failed=case.startup_failed,
        startup_succeeded=case.startup_succeeded,
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compute_pod_actions(case: Case) -> None:
    actions = _compute(case)
    got = Want(
        kill_pod=actions.kill_pod,
        create_sandbox=actions.create_sandbox,
        sandbox_id=actions.sandbox_id,
        attempt=actions.attempt,
        init_start=actions.init_containers_to_start,
        start=actions.containers_to_start,
        kill={str(cid): info.reason for cid, info in actions.containers_to_kill.items()},
        init_backoff=actions.init_containers_in_backoff,
        backoff=actions.containers_in_backoff,
    )
    assert got == case.want, "\n".join(actions.reasons)
    assert actions.reasons or actions.is_noop, "every action comes with a reason"


def test_case_ids_are_unique_and_the_table_is_large() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 25


def test_kill_messages_are_the_kubelets() -> None:
    """The message is what the Killing event says, worded as the kubelet words it."""
    changed = next(c for c in CASES if c.id == "hash-changed-killed-and-restarted")
    actions = _compute(changed)
    info = actions.containers_to_kill[ContainerID("app#1")]
    assert info.message == "Container app definition changed, will be restarted"
    assert info.container is not None and info.container.name == "app"
    assert any("spec changed" in r and "started again" in r for r in actions.reasons)

    never = next(c for c in CASES if c.id == "liveness-failure-under-never-killed-not-restarted")
    actions = _compute(never)
    info = actions.containers_to_kill[ContainerID("app#1")]
    assert info.message == "Container app failed liveness probe"
    assert any("liveness" in r and "Never" in r for r in actions.reasons)


def test_sidecar_kill_is_marked_as_init() -> None:
    case = next(c for c in CASES if c.id == "sidecar-hash-changed-killed-and-restarted")
    info = _compute(case).containers_to_kill[ContainerID("proxy#1")]
    assert info.init and info.reason is KillReason.NONE
    assert info.message == "Init container proxy definition changed"


def test_reasons_follow_spec_order_for_init_containers() -> None:
    case = next(c for c in CASES if c.id == "sidecar-restarted-even-under-never")
    reasons = _compute(case).reasons
    assert any("sidecar proxy exited" in r for r in reasons)


def test_steady_state_is_a_noop() -> None:
    case = next(c for c in CASES if c.id == "all-running-nothing-to-do")
    actions = _compute(case)
    assert actions.is_noop
    assert "KillPod=False" in str(actions)
