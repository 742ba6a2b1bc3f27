"""Dead containers as the kubelet's container deletor keeps them, and the status read from them.

When a container dies, the kubelet removes the pod's older exited instances of it
(``pod_container_deletor.go``, keeping one: ``minDeadContainerInPod``), and
``convertToAPIContainerStatuses`` reads ``restartCount`` and ``lastState`` from what
the runtime still holds. The scenarios below run pods through a fake runtime: each
death goes through the deletor as a PLEG event would take it there, each step's
status is generated from the previous one, and the end is compared with what a
kubelet shows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping, Sequence
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
from minikubelet.kuberuntime.gc import (
    DELETOR_BUFFER_LIMIT,
    ContainerGC,
    PodContainerDeletor,
    containers_to_delete,
)
from minikubelet.kuberuntime.manager import RuntimeContainer, RuntimePod
from minikubelet.status.generate import generate_pod_status
from minikubelet.types import ContainerID, PodSandboxID, PodUID

UID = PodUID("uid-1")
T0 = 1_714_564_800_000_000_000
SEC = 1_000_000_000
NOW = dt.datetime(2024, 5, 1, 12, 5, 0, tzinfo=dt.UTC)
BACK_OFF = ("CrashLoopBackOff", "back-off 10s restarting failed container")


# -- containers_to_delete: which instances go when one dies ----------------------------------


def rc(cid: str, name: str, state: ContainerState, at: int, attempt: int = 0) -> RuntimeContainer:
    return RuntimeContainer(ContainerID(cid), name, state, T0 + at * SEC, attempt)


def runtime_pod(*containers: RuntimeContainer) -> RuntimePod:
    return RuntimePod(UID, "web", "default", containers=list(containers))


EX, RUN = ContainerState.EXITED, ContainerState.RUNNING


@pytest.mark.parametrize(
    ("pod", "died", "keep", "expected"),
    [
        pytest.param(
            runtime_pod(rc("a0", "app", EX, 1, 0), rc("a1", "app", EX, 2, 1)),
            "a1",
            1,
            ["a0"],
            id="the-older-goes",
        ),
        pytest.param(runtime_pod(rc("a0", "app", EX, 1, 0)), "a0", 1, [], id="the-only-one-stays"),
        pytest.param(
            runtime_pod(
                rc("a0", "app", EX, 1, 0),
                rc("a1", "app", EX, 2, 1),
                rc("a2", "app", EX, 3, 2),
                rc("a3", "app", RUN, 4, 3),
            ),
            "a2",
            1,
            ["a1", "a0"],
            id="a-running-instance-is-not-a-candidate",
        ),
        pytest.param(
            runtime_pod(
                rc("a0", "app", EX, 1, 0),
                rc("a1", "app", EX, 2, 1),
                rc("h0", "helper", EX, 1, 0),
                rc("h1", "helper", EX, 2, 1),
            ),
            "a1",
            1,
            ["a0"],
            id="other-names-are-left-alone",
        ),
        pytest.param(
            runtime_pod(
                rc("a0", "app", EX, 1, 0), rc("a1", "app", EX, 2, 1), rc("a2", "app", EX, 3, 2)
            ),
            "a2",
            2,
            ["a0"],
            id="keeps-max-per-pod-container",
        ),
        pytest.param(
            # same creation time: the higher attempt is the newer
            runtime_pod(rc("a1", "app", EX, 5, 1), rc("a0", "app", EX, 5, 0)),
            "a1",
            1,
            ["a0"],
            id="attempt-orders-first",
        ),
        pytest.param(
            # attempts equal (a container another client made): the later creation wins
            runtime_pod(rc("b", "app", EX, 2, 0), rc("a", "app", EX, 1, 0)),
            "a",
            1,
            ["a"],
            id="then-creation-time",
        ),
        pytest.param(
            runtime_pod(rc("a0", "app", EX, 1, 0), rc("a1", "app", EX, 2, 1)),
            "sandbox-1",
            1,
            [],
            id="a-dead-sandbox-selects-nothing",
        ),
        pytest.param(None, "a1", 1, [], id="a-pod-the-relist-did-not-see"),
        pytest.param(
            runtime_pod(rc("a0", "app", EX, 1, 0), rc("h0", "helper", EX, 1, 0)),
            "",
            0,
            ["a0", "h0"],
            id="remove-all",
        ),
    ],
)
def test_containers_to_delete(
    pod: RuntimePod | None, died: str, keep: int, expected: list[str]
) -> None:
    assert sorted(c.id for c in containers_to_delete(pod, died, keep)) == sorted(expected)
    if expected:
        # newest first, as the kubelet sorts them
        ordered = [c.id for c in containers_to_delete(pod, died, keep)]
        assert ordered == expected


# -- scenarios: a fake runtime, the deletor at each death, the status after each step -------


@dataclass
class Instance:
    name: str
    attempt: int
    at: int
    state: ContainerState = ContainerState.RUNNING
    exit_code: int = 0
    finished: int = 0

    @property
    def id(self) -> str:
        return f"{self.name}-{self.attempt}"


@dataclass
class FakeNode:
    """A pod's instances as a runtime holds them, and the statuses a kubelet generated."""

    pod: Pod
    instances: list[Instance] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    clock: int = 10
    status: dict[str, Any] | None = None

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def start(self, name: str) -> None:
        """The kubelet's startContainer: the next attempt after the newest instance's."""
        mine = [i for i in self.instances if i.name == name]
        attempt = max((i.attempt for i in mine), default=-1) + 1
        self.instances.append(Instance(name, attempt, self._tick()))

    def die(self, name: str, code: int) -> None:
        """The running instance exits; the PLEG's ContainerDied reaches the deletor."""
        [instance] = [
            i for i in self.instances if i.name == name and i.state is ContainerState.RUNNING
        ]
        instance.state, instance.exit_code, instance.finished = (
            ContainerState.EXITED,
            code,
            self._tick(),
        )
        relisted = runtime_pod(
            *(rc(i.id, i.name, i.state, i.at, i.attempt) for i in self.instances)
        )
        for gone in containers_to_delete(relisted, instance.id, 1):
            self.removed.append(gone.id)
            self.instances = [i for i in self.instances if i.id != gone.id]

    def pod_status(self) -> PodStatus:
        return PodStatus(
            uid=UID,
            name="web",
            namespace="default",
            ips=("10.1.0.7",),
            sandbox_statuses=(
                SandboxStatus(
                    id=PodSandboxID("s1"), state=SandboxState.READY, created_at=T0, ip="10.1.0.7"
                ),
            ),
            container_statuses=tuple(
                ContainerStatus(
                    id=ContainerID(i.id),
                    name=i.name,
                    state=i.state,
                    created_at=T0 + i.at * SEC,
                    started_at=T0 + i.at * SEC,
                    finished_at=T0 + i.finished * SEC if i.finished else 0,
                    exit_code=i.exit_code,
                    image=f"registry.local/{i.name}:1.0",
                    image_ref=f"sha256:{i.name}",
                    restart_count=i.attempt,
                )
                for i in self.instances
            ),
        )

    def sync(self, waiting: Mapping[str, tuple[str, str]] | None = None) -> dict[str, Any]:
        """The status a sync generates now, from the one before it."""
        self.status = generate_pod_status(
            self.pod,
            self.pod_status(),
            previous=self.status,
            ready={},
            started={},
            waiting=waiting or {},
            host_ip="10.0.0.1",
            runtime_name="containerd",
            now=NOW,
        )
        return self.status


def make_pod(*containers: str, init: Sequence[str] = (), restart: str = "Always") -> Pod:
    def body(name: str) -> dict[str, Any]:
        return {"name": name, "image": f"registry.local/{name}:1.0"}

    return Pod.from_dict(
        {
            "metadata": {"name": "web", "namespace": "default", "uid": str(UID)},
            "spec": {
                "restartPolicy": restart,
                "containers": [body(n) for n in containers],
                "initContainers": [body(n) for n in init],
            },
        }
    )


def crash(node: FakeNode, name: str, code: int, times: int) -> None:
    for _ in range(times):
        node.start(name)
        node.sync()
        node.die(name, code)
        node.sync({name: BACK_OFF})


@dataclass(frozen=True)
class Scenario:
    id: str
    pod: Pod
    #: the steps: ("start", name) or ("die", name, exit code) or ("crash", name, code, times)
    steps: tuple[tuple[Any, ...], ...]
    #: the waiting reasons the last sync recorded
    waiting: Mapping[str, tuple[str, str]]
    phase: str
    #: container name -> (state key, reason or None, restartCount, lastState's instance id
    #: and exit code, or None for an empty lastState)
    expected: Mapping[str, tuple[str, str | None, int, tuple[str, int] | None]]
    #: the instances the runtime holds at the end
    held: tuple[str, ...]


SCENARIOS = [
    Scenario(
        "crash-loop-in-back-off",
        make_pod("app"),
        (("crash", "app", 3, 3),),
        {"app": BACK_OFF},
        "Running",
        {"app": ("waiting", "CrashLoopBackOff", 2, ("app-2", 3))},
        ("app-2",),
    ),
    Scenario(
        "crash-loop-running-again",
        make_pod("app"),
        (("crash", "app", 3, 3), ("start", "app")),
        {},
        "Running",
        {"app": ("running", None, 3, ("app-2", 3))},
        ("app-2", "app-3"),
    ),
    Scenario(
        "on-failure-restarted-after-a-failure",
        make_pod("app", restart="OnFailure"),
        (("crash", "app", 1, 1), ("start", "app")),
        {},
        "Running",
        {"app": ("running", None, 1, ("app-0", 1))},
        ("app-0", "app-1"),
    ),
    Scenario(
        # the failed runs are gone with the deletor: the succeeded one is all that is left,
        # so the restart count stays and lastState is empty, as a kubelet shows it
        "on-failure-ends-succeeded",
        make_pod("app", restart="OnFailure"),
        (("crash", "app", 1, 2), ("start", "app"), ("die", "app", 0)),
        {},
        "Succeeded",
        {"app": ("terminated", "Completed", 2, None)},
        ("app-2",),
    ),
    Scenario(
        "on-failure-succeeds-first-time",
        make_pod("app", restart="OnFailure"),
        (("start", "app"), ("die", "app", 0)),
        {},
        "Succeeded",
        {"app": ("terminated", "Completed", 0, None)},
        ("app-0",),
    ),
    Scenario(
        "never-fails-once",
        make_pod("app", restart="Never"),
        (("start", "app"), ("die", "app", 4)),
        {},
        "Failed",
        {"app": ("terminated", "Error", 0, None)},
        ("app-0",),
    ),
    Scenario(
        "init-container-crash-loop",
        make_pod("app", init=("setup",)),
        (("crash", "setup", 2, 3),),
        {"setup": BACK_OFF},
        "Pending",
        {
            "setup": ("waiting", "CrashLoopBackOff", 2, ("setup-2", 2)),
            "app": ("waiting", "PodInitializing", 0, None),
        },
        ("setup-2",),
    ),
    Scenario(
        "init-container-retried-then-done",
        make_pod("app", init=("setup",)),
        (("crash", "setup", 2, 2), ("start", "setup"), ("die", "setup", 0), ("start", "app")),
        {},
        "Running",
        {
            "setup": ("terminated", "Completed", 2, None),
            "app": ("running", None, 0, None),
        },
        ("setup-2", "app-0"),
    ),
    Scenario(
        "two-containers-kept-apart",
        make_pod("app", "helper"),
        (
            ("start", "helper"),
            ("crash", "app", 1, 2),
            ("die", "helper", 7),
            ("start", "helper"),
            ("start", "app"),
        ),
        {},
        "Running",
        {
            "app": ("running", None, 2, ("app-1", 1)),
            "helper": ("running", None, 1, ("helper-0", 7)),
        },
        ("helper-0", "app-1", "helper-1", "app-2"),
    ),
]


def _entry(status: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    for key in ("initContainerStatuses", "containerStatuses"):
        for entry in status.get(key, []):
            if entry["name"] == name:
                return dict(entry)
    raise AssertionError(f"no status for {name}")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
def test_status_after_the_deletor(scenario: Scenario) -> None:
    node = FakeNode(scenario.pod)
    for step in scenario.steps:
        match step:
            case ("start", name):
                node.start(name)
                node.sync()
            case ("die", name, code):
                node.die(name, code)
                node.sync()
            case ("crash", name, code, times):
                crash(node, name, code, times)
    status = node.sync(scenario.waiting)

    assert [i.id for i in node.instances] == list(scenario.held)
    exited = [i.name for i in node.instances if i.state is ContainerState.EXITED]
    assert len(exited) == len(set(exited)), "one exited instance per container name"
    assert status["phase"] == scenario.phase
    for name, (key, reason, restarts, last) in scenario.expected.items():
        entry = _entry(status, name)
        [(state_key, state)] = entry["state"].items()
        assert (state_key, state.get("reason")) == (key, reason), entry
        assert entry["restartCount"] == restarts, entry
        if last is None:
            assert entry["lastState"] == {}, entry
        else:
            terminated = entry["lastState"]["terminated"]
            assert terminated["containerID"] == f"containerd://{last[0]}", entry
            assert terminated["exitCode"] == last[1], entry
            held = next(i for i in node.instances if i.id == last[0])
            assert terminated["finishedAt"] == dt.datetime.fromtimestamp(
                (T0 + held.finished * SEC) / 1e9, dt.UTC
            ).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the deletor's queue ----------------------------------------------------------------------


class Remover:
    def __init__(self) -> None:
        self.removed: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def remove_dead_container(self, uid: PodUID, container_id: str) -> None:
        await self.gate.wait()
        self.removed.append((uid, container_id))

    async def remove_dead_sandbox(self, uid: PodUID, sandbox_id: str) -> None:
        raise AssertionError("the deletor removes containers only")


async def test_the_pod_is_synced_after_the_removals() -> None:
    remover = Remover()
    deletor = PodContainerDeletor(remover)
    synced: list[list[tuple[str, str]]] = []
    pod = runtime_pod(
        rc("a0", "app", EX, 1, 0), rc("a1", "app", EX, 2, 1), rc("a2", "app", EX, 3, 2)
    )
    remover.gate.clear()
    deletor.delete_containers_in_pod(UID, "a2", pod, then=lambda: synced.append([]))
    runner = asyncio.create_task(deletor.run())
    try:
        await asyncio.sleep(0)
        assert synced == []  # not before the runtime removed them
        remover.gate.set()
        done = asyncio.Event()
        deletor.delete_containers_in_pod(UID, "a0", pod, then=done.set)
        await asyncio.wait_for(done.wait(), 5)
    finally:
        runner.cancel()
    assert remover.removed[:2] == [(UID, "a1"), (UID, "a0")]
    assert len(synced) == 1


def test_nothing_to_remove_syncs_at_once() -> None:
    deletor = PodContainerDeletor(Remover())
    synced: list[bool] = []
    deletor.delete_containers_in_pod(
        UID, "a0", runtime_pod(rc("a0", "app", EX, 1)), then=lambda: synced.append(True)
    )
    assert synced == [True]


def test_a_removed_pod_that_finished_keeps_nothing() -> None:
    deletor = PodContainerDeletor(Remover(), max_per_pod_container=3)
    pod = runtime_pod(rc("a0", "app", EX, 1), rc("h0", "helper", EX, 1))
    deletor.delete_containers_in_pod(UID, "a0", pod, remove_all=True)
    assert deletor._queue.get_nowait().container_ids == ("a0", "h0")
    # at least one dead instance is kept, whatever max_per_pod_container says
    assert PodContainerDeletor(Remover(), max_per_pod_container=0).containers_to_keep == 1


def test_a_full_queue_drops_the_request_but_still_syncs() -> None:
    deletor = PodContainerDeletor(Remover())
    pod = runtime_pod(rc("a0", "app", EX, 1, 0), rc("a1", "app", EX, 2, 1))
    for _ in range(DELETOR_BUFFER_LIMIT):
        deletor.delete_containers_in_pod(UID, "a1", pod)
    synced: list[bool] = []
    deletor.delete_containers_in_pod(UID, "a1", pod, then=lambda: synced.append(True))
    assert synced == [True]
    assert deletor._queue.qsize() == DELETOR_BUFFER_LIMIT


# -- the periodic GC and the sandboxes the dead instances live in ---------------------------


class RecordingRemover:
    def __init__(self) -> None:
        self.containers: list[str] = []
        self.sandboxes: list[str] = []

    async def remove_dead_container(self, uid: PodUID, container_id: str) -> None:
        self.containers.append(container_id)

    async def remove_dead_sandbox(self, uid: PodUID, sandbox_id: str) -> None:
        self.sandboxes.append(sandbox_id)


def sb(sid: str, state: ContainerState, at: int) -> RuntimeContainer:
    return RuntimeContainer(ContainerID(sid), "POD", state, T0 + at * SEC)


def ctr(cid: str, state: ContainerState, at: int, attempt: int, sandbox: str) -> RuntimeContainer:
    return RuntimeContainer(ContainerID(cid), "app", state, T0 + at * SEC, attempt, sandbox)


@pytest.mark.parametrize(
    ("sandboxes", "containers", "removed_containers", "removed_sandboxes"),
    [
        pytest.param(
            [sb("s1", EX, 1), sb("s2", RUN, 5)],
            [ctr("app-0", EX, 2, 0, "s1"), ctr("app-1", RUN, 6, 1, "s2")],
            [],
            [],
            id="a-recreated-sandbox-keeps-the-old-one-with-the-last-dead-instance",
        ),
        pytest.param(
            [sb("s1", EX, 1), sb("s2", RUN, 5)],
            [
                ctr("app-0", EX, 2, 0, "s1"),
                ctr("app-1", EX, 6, 1, "s2"),
                ctr("app-2", RUN, 8, 2, "s2"),
            ],
            ["app-0"],
            ["s1"],
            id="once-its-instance-is-collected-the-old-sandbox-goes",
        ),
        pytest.param(
            [sb("s1", EX, 1), sb("s2", RUN, 5)],
            [ctr("app-1", RUN, 6, 1, "s2")],
            [],
            ["s1"],
            id="an-empty-dead-sandbox-goes",
        ),
        pytest.param(
            [sb("s1", EX, 1), sb("s2", EX, 5)],
            [],
            [],
            ["s1"],
            id="the-newest-sandbox-stays-even-dead",
        ),
    ],
)
async def test_gc_keeps_the_sandboxes_of_kept_instances(
    sandboxes: list[RuntimeContainer],
    containers: list[RuntimeContainer],
    removed_containers: list[str],
    removed_sandboxes: list[str],
) -> None:
    remover = RecordingRemover()
    pod = RuntimePod(UID, "web", "default", sandboxes=sandboxes, containers=containers)
    await ContainerGC(remover, max_per_pod_container=1).collect({UID: pod}, busy=lambda _: False)
    assert (remover.containers, remover.sandboxes) == (removed_containers, removed_sandboxes)
