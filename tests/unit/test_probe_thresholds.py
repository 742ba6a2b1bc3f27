"""The probe worker's counting and gating, in virtual time (no real sleeps)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from minikubelet.api.pod import Pod
from minikubelet.clock import ManualClock
from minikubelet.errors import Unavailable
from minikubelet.prober.manager import ProbeManager
from minikubelet.prober.probe import ExecOutput, ExecResult
from minikubelet.prober.results import ProbeType, Result, ResultsManager, ResultUpdate
from minikubelet.types import ContainerID, PodUID

UID = PodUID("uid-1")
T0 = 1_000.0


async def settle() -> None:
    """Let every runnable task run until it waits on something."""
    await ManualClock().settle()


class FakeClock(ManualClock):
    def __init__(self, start: float = T0) -> None:
        super().__init__(start)


class ScriptedExec:
    """An exec runner: per command, a script of exit codes (the last one repeats)."""

    def __init__(self, scripts: Mapping[str, Iterable[int | Exception]]) -> None:
        self.scripts = {cmd: list(codes) for cmd, codes in scripts.items()}
        self.calls: list[tuple[str, str, float]] = []
        self.clock: FakeClock | None = None

    def count(self, cmd: str) -> int:
        return sum(1 for _, c, _ in self.calls if c == cmd)

    async def __call__(self, container_id: str, cmd: list[str], timeout: int) -> ExecResult:
        name = " ".join(cmd)
        self.calls.append((container_id, name, self.clock.now() if self.clock else 0.0))
        script = self.scripts[name]
        step = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(step, Exception):
            raise step
        return ExecOutput(exit_code=step, stdout=f"{name} said {step}".encode())


def probe(cmd: str, **fields: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"exec": {"command": cmd.split()}, "periodSeconds": 10}
    spec.update(fields)
    return spec


def make_pod(
    *,
    liveness: dict[str, Any] | None = None,
    readiness: dict[str, Any] | None = None,
    startup: dict[str, Any] | None = None,
    restart_policy: str = "Always",
    deleting: bool = False,
) -> Pod:
    container: dict[str, Any] = {"name": "app", "image": "busybox:1.36"}
    if liveness:
        container["livenessProbe"] = liveness
    if readiness:
        container["readinessProbe"] = readiness
    if startup:
        container["startupProbe"] = startup
    metadata: dict[str, Any] = {"name": "web", "namespace": "default", "uid": UID}
    if deleting:
        metadata["deletionTimestamp"] = "2025-01-01T00:00:00Z"
    return Pod.from_dict(
        {
            "metadata": metadata,
            "spec": {"containers": [container], "restartPolicy": restart_policy},
        }
    )


Event = tuple[str, str, str, str]


class Harness:
    def __init__(self, runner: ScriptedExec, *, jitter: float = 0.0) -> None:
        self.clock = FakeClock()
        runner.clock = self.clock
        self.runner = runner
        self.events: list[Event] = []
        self.manager = ProbeManager(
            runner, clock=self.clock, on_event=self._record, rng=lambda: jitter
        )

    def _record(self, pod: Pod, container: str, kind: str, reason: str, message: str) -> None:
        self.events.append((container, kind, reason, message))

    def result(self, probe_type: ProbeType, cid: str = "c1") -> Result | None:
        return self.manager.results_for(probe_type).get(ContainerID(cid))

    def start(self, pod: Pod, cid: str | None = "c1") -> None:
        self.manager.add_pod(pod)
        self.manager.update_container(pod, "app", cid, started_at=self.clock.now())


@asynccontextmanager
async def running(harness: Harness) -> AsyncIterator[Harness]:
    task = asyncio.create_task(harness.manager.run(), name="probe manager under test")
    await settle()
    try:
        yield harness
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_initial_results_before_any_probe() -> None:
    runner = ScriptedExec({"true": [0]})
    h = Harness(runner)
    delay = {"initialDelaySeconds": 100}
    pod = make_pod(
        liveness=probe("true", **delay),
        readiness=probe("true", **delay),
        startup=probe("true", **delay),
    )
    async with running(h):
        h.start(pod)
        await h.clock.advance(0)
        assert h.result(ProbeType.READINESS) is Result.FAILURE
        assert h.result(ProbeType.LIVENESS) is Result.SUCCESS
        assert h.result(ProbeType.STARTUP) is Result.UNKNOWN
        assert runner.calls == []
        assert not h.manager.is_started("c1")
        assert not h.manager.is_ready("c1")
        assert h.manager.liveness_failed(UID) == set()


async def test_initial_delay_holds_the_first_probe() -> None:
    runner = ScriptedExec({"check": [0]})
    h = Harness(runner)
    async with running(h):
        h.start(make_pod(liveness=probe("check", initialDelaySeconds=15)))
        await h.clock.advance(19)
        assert runner.calls == []
        await h.clock.advance(1)  # the tick at +20 is the first one past the delay
        assert [at for _, _, at in runner.calls] == [T0 + 20]


async def test_liveness_fails_at_the_failure_threshold_then_holds() -> None:
    runner = ScriptedExec({"alive": [1]})
    h = Harness(runner)
    pod = make_pod(liveness=probe("alive", failureThreshold=3))
    async with running(h):
        h.start(pod)
        await h.clock.advance(0)
        assert runner.count("alive") == 1
        assert h.result(ProbeType.LIVENESS) is Result.SUCCESS
        await h.clock.advance(10)
        assert h.result(ProbeType.LIVENESS) is Result.SUCCESS
        await h.clock.advance(10)
        assert runner.count("alive") == 3
        assert h.result(ProbeType.LIVENESS) is Result.FAILURE
        assert h.manager.liveness_failed(UID) == {"app"}
        assert h.events[-1] == (
            "app",
            "Warning",
            "Unhealthy",
            "Liveness probe failed: alive said 1",
        )
        assert len(h.events) == 3

        # On hold until a new container shows up: no more probes of the old one.
        await h.clock.advance(30)
        assert runner.count("alive") == 3

        # The kubelet restarts it: the old result goes, the new one starts at success.
        h.manager.update_container(pod, "app", None)
        await h.clock.advance(0)
        assert h.manager.liveness_failed(UID) == set()
        h.manager.update_container(pod, "app", "c2", started_at=h.clock.now())
        await h.clock.advance(0)
        # the new instance waits for the next tick, as the kubelet's liveness worker does
        assert runner.count("alive") == 3
        await h.clock.advance(10)
        assert h.result(ProbeType.LIVENESS, "c1") is None
        assert h.result(ProbeType.LIVENESS, "c2") is Result.SUCCESS
        assert runner.count("alive") == 4
        await h.clock.advance(20)
        assert h.manager.liveness_failed(UID) == {"app"}


async def test_success_threshold_counts_successes_in_a_row() -> None:
    runner = ScriptedExec({"ready": [0, 1, 0, 0]})
    h = Harness(runner)
    async with running(h):
        h.start(make_pod(readiness=probe("ready", successThreshold=2, failureThreshold=1)))
        await h.clock.advance(0)  # success, 1 in a row
        assert h.result(ProbeType.READINESS) is Result.FAILURE
        await h.clock.advance(10)  # failure resets the run
        assert h.result(ProbeType.READINESS) is Result.FAILURE
        await h.clock.advance(10)  # success, 1 in a row
        assert h.result(ProbeType.READINESS) is Result.FAILURE
        assert not h.manager.is_ready("c1")
        await h.clock.advance(10)  # success, 2 in a row
        assert h.result(ProbeType.READINESS) is Result.SUCCESS
        assert h.manager.is_ready("c1")


async def test_readiness_failure_does_not_hold_the_worker() -> None:
    runner = ScriptedExec({"ready": [0, 1, 1, 0]})
    h = Harness(runner)
    async with running(h):
        h.start(make_pod(readiness=probe("ready", failureThreshold=2)))
        await h.clock.advance(0)
        assert h.manager.is_ready("c1")
        await h.clock.advance(10)
        assert h.manager.is_ready("c1")  # 1 failure < threshold 2
        await h.clock.advance(10)
        assert not h.manager.is_ready("c1")
        await h.clock.advance(10)
        assert h.manager.is_ready("c1")
        assert runner.count("ready") == 4


async def test_startup_gates_liveness_and_readiness() -> None:
    runner = ScriptedExec({"boot": [1, 1, 0], "alive": [0], "ready": [0]})
    h = Harness(runner)
    pod = make_pod(
        startup=probe("boot", failureThreshold=5),
        liveness=probe("alive"),
        readiness=probe("ready"),
    )
    async with running(h):
        h.start(pod)
        await h.clock.advance(19)
        assert runner.count("boot") == 2
        assert runner.count("alive") == runner.count("ready") == 0
        assert not h.manager.is_started("c1")
        assert h.manager.startup_succeeded(UID) == set()
        await h.clock.advance(1)
        assert h.result(ProbeType.STARTUP) is Result.SUCCESS
        assert h.manager.is_started("c1")
        assert h.manager.startup_succeeded(UID) == {"app"}
        # Startup passing triggers readiness at once.
        assert runner.count("ready") == 1
        assert h.manager.is_ready("c1")
        await h.clock.advance(10)
        assert runner.count("alive") >= 1
        assert runner.count("boot") == 3  # the startup probe stops once started


async def test_startup_failure_is_reported_and_liveness_never_runs() -> None:
    runner = ScriptedExec({"boot": [1], "alive": [0]})
    h = Harness(runner)
    async with running(h):
        h.start(make_pod(startup=probe("boot", failureThreshold=3), liveness=probe("alive")))
        await h.clock.advance(20)
        assert h.manager.startup_failed(UID) == {"app"}
        assert h.manager.liveness_failed(UID) == set()
        assert runner.count("alive") == 0
        assert h.events[-1][3] == "Startup probe failed: boot said 1"


async def test_a_probe_that_errors_is_retried_then_thrown_away() -> None:
    runner = ScriptedExec({"alive": [Unavailable("runtime down", method="ExecSync")]})
    h = Harness(runner)
    async with running(h):
        h.start(make_pod(liveness=probe("alive", failureThreshold=1)))
        await h.clock.advance(0)
        assert runner.count("alive") == 3
        assert h.result(ProbeType.LIVENESS) is Result.SUCCESS
        assert h.events == [
            (
                "app",
                "Warning",
                "Unhealthy",
                "Liveness probe errored and resulted in unknown state: "
                "ExecSync: runtime down (UNAVAILABLE)",
            )
        ]


async def test_pod_deletion_quiets_liveness_and_ends_its_worker() -> None:
    runner = ScriptedExec({"alive": [1], "ready": [0]})
    h = Harness(runner)
    pod = make_pod(liveness=probe("alive", failureThreshold=5), readiness=probe("ready"))
    async with running(h):
        h.start(pod)
        await h.clock.advance(10)
        deleting = make_pod(
            liveness=probe("alive", failureThreshold=5), readiness=probe("ready"), deleting=True
        )
        h.manager.add_pod(deleting)
        await h.clock.advance(10)
        assert not h.manager.has_worker(UID, "app", ProbeType.LIVENESS)
        assert h.manager.has_worker(UID, "app", ProbeType.READINESS)
        assert h.result(ProbeType.LIVENESS) is None  # cleaned up with the worker
        assert runner.count("alive") == 2


async def test_worker_ends_when_the_container_will_not_restart() -> None:
    runner = ScriptedExec({"ready": [0]})
    h = Harness(runner)
    pod = make_pod(readiness=probe("ready"), restart_policy="Never")
    async with running(h):
        h.start(pod)
        await h.clock.advance(0)
        assert h.manager.is_ready("c1")
        h.manager.update_container(pod, "app", None)
        await h.clock.advance(0)
        assert not h.manager.has_worker(UID, "app", ProbeType.READINESS)
        assert h.result(ProbeType.READINESS) is None


async def test_stopped_container_reads_not_ready_and_keeps_its_worker() -> None:
    runner = ScriptedExec({"ready": [0]})
    h = Harness(runner)
    pod = make_pod(readiness=probe("ready"))
    async with running(h):
        h.start(pod)
        await h.clock.advance(0)
        h.manager.update_container(pod, "app", None)
        await h.clock.advance(0)
        assert h.result(ProbeType.READINESS) is Result.FAILURE
        assert h.manager.has_worker(UID, "app", ProbeType.READINESS)


async def test_remove_pod_stops_workers_and_forgets_results() -> None:
    runner = ScriptedExec({"alive": [0], "ready": [0]})
    h = Harness(runner)
    async with running(h):
        h.start(make_pod(liveness=probe("alive"), readiness=probe("ready")))
        await h.clock.advance(0)
        assert h.manager.worker_count == 2
        h.manager.remove_pod(UID)
        assert h.manager.worker_count == 0
        assert h.result(ProbeType.READINESS) is None
        assert h.result(ProbeType.LIVENESS) is None
        calls = len(runner.calls)
        await h.clock.advance(30)
        assert len(runner.calls) == calls


async def test_workers_added_before_run_start_with_it() -> None:
    runner = ScriptedExec({"ready": [0]})
    h = Harness(runner)
    h.start(make_pod(readiness=probe("ready")))
    assert runner.calls == []
    async with running(h):
        await h.clock.advance(0)
        assert runner.count("ready") == 1


async def test_recent_start_spreads_the_first_probe_over_the_period() -> None:
    runner = ScriptedExec({"ready": [0]})
    h = Harness(runner, jitter=0.5)
    async with running(h):
        h.start(make_pod(readiness=probe("ready")))
        await h.clock.advance(4)
        assert runner.calls == []
        await h.clock.advance(1)
        assert [at for _, _, at in runner.calls] == [T0 + 5]


async def test_results_manager_publishes_changes_only() -> None:
    results = ResultsManager()
    stream = results.updates()
    first = asyncio.ensure_future(anext(stream))
    await settle()
    cid, uid = ContainerID("c1"), PodUID("u")
    await results.set(cid, Result.FAILURE, uid)
    assert await first == ResultUpdate(cid, Result.FAILURE, uid)
    await results.set(cid, Result.FAILURE, uid)  # unchanged: nothing published
    results.remove(cid)  # removal: nothing published
    assert results.get(cid) is None
    await results.set(cid, Result.SUCCESS, uid)
    assert await anext(stream) == ResultUpdate(cid, Result.SUCCESS, uid)
    await stream.aclose()


async def test_results_manager_without_a_reader_never_blocks() -> None:
    results = ResultsManager(updates_size=1)
    for i in range(5):
        await results.set(ContainerID(f"c{i}"), Result.SUCCESS, PodUID("u"))
    assert len(results) == 5


async def test_changes_name_the_pod_whose_results_changed() -> None:
    runner = ScriptedExec({"alive": [1]})
    h = Harness(runner)
    stream = h.manager.changes()
    seen: list[PodUID] = []

    async def read() -> None:
        async for uid in stream:
            seen.append(uid)

    async with running(h), asyncio.TaskGroup() as group:
        reader = group.create_task(read(), name="changes reader")
        h.start(make_pod(liveness=probe("alive", failureThreshold=1)))
        await h.clock.advance(0)
        # The initial success for c1, then the failure.
        assert seen == [UID, UID]
        assert h.manager.liveness_failed(UID) == {"app"}
        reader.cancel()
