"""Pod workers: one per UID, the latest pending update wins, kill ends the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from minikubelet.api.pod import Pod
from minikubelet.clock import ManualClock
from minikubelet.podworkers import ERROR_RETRY, PodWorkers, UpdateType, WorkerState, WorkerUpdate


def make_pod(uid: str, image: str = "busybox:1") -> Pod:
    return Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"p-{uid}", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }
    )


class Syncer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.terminal: set[str] = set()
        self.fail_once: set[str] = set()
        self.entered = asyncio.Event()
        self.progress = asyncio.Event()

    def _record(self, call: tuple[str, str, str]) -> None:
        self.calls.append(call)
        self.progress.set()

    async def sync_pod(self, pod: Pod) -> tuple[bool, float | None]:
        self.entered.set()
        await self.gate.wait()
        self._record(("sync", pod.uid, pod.spec.containers[0].image))
        if pod.uid in self.fail_once:
            self.fail_once.discard(pod.uid)
            raise RuntimeError("boom")
        return pod.uid in self.terminal, None

    async def sync_terminating_pod(self, pod: Pod, grace_period: int | None) -> None:
        self._record(("terminating", pod.uid, str(grace_period)))

    async def sync_terminated_pod(self, pod: Pod) -> None:
        self._record(("terminated", pod.uid, ""))

    def sync_failed(self, pod: Pod, error: Exception) -> None:
        self._record(("failed", pod.uid, str(error)))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def workers(clock: ManualClock) -> AsyncIterator[tuple[PodWorkers, Syncer]]:
    syncer = Syncer()
    w = PodWorkers(syncer, clock=clock)
    task = asyncio.create_task(w.run())
    await w.wait_running()
    yield w, syncer
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def until(syncer: Syncer, predicate: Callable[[], bool]) -> None:
    """Wait for the syncer's calls to satisfy ``predicate`` (woken by each call)."""
    async with asyncio.timeout(5):
        while not predicate():
            syncer.progress.clear()
            await syncer.progress.wait()


async def settle() -> None:
    """Let every ready task run until it waits (virtual time: no I/O is involved)."""
    await ManualClock().settle()


async def test_latest_pending_update_wins(workers: tuple[PodWorkers, Syncer]) -> None:
    w, syncer = workers
    syncer.gate.clear()  # hold the first sync
    w.update_pod(WorkerUpdate(make_pod("a", "img:1")))
    await syncer.entered.wait()
    for n in (2, 3, 4):
        w.update_pod(WorkerUpdate(make_pod("a", f"img:{n}")))
    syncer.gate.set()
    await until(syncer, lambda: len(syncer.calls) >= 2)
    await settle()
    assert [c[2] for c in syncer.calls] == ["img:1", "img:4"]


async def test_kill_terminates_once_and_wins_over_syncs(
    workers: tuple[PodWorkers, Syncer],
) -> None:
    w, syncer = workers
    pod = make_pod("b")
    w.update_pod(WorkerUpdate(pod))
    w.update_pod(WorkerUpdate(pod, UpdateType.KILL, grace_period=7))
    w.update_pod(WorkerUpdate(pod))  # a sync after a kill is ignored
    await w.wait_terminated(pod.uid)
    assert ("terminating", "b", "7") in syncer.calls
    assert syncer.calls[-1] == ("terminated", "b", "")
    assert w.state(pod.uid) is WorkerState.TERMINATED
    w.update_pod(WorkerUpdate(pod))
    await settle()
    assert syncer.calls.count(("terminated", "b", "")) == 1


async def test_terminal_pod_terminates_itself_and_errors_are_reported(
    workers: tuple[PodWorkers, Syncer],
) -> None:
    w, syncer = workers
    syncer.terminal.add("c")
    w.update_pod(WorkerUpdate(make_pod("c")))
    await w.wait_terminated("c")  # type: ignore[arg-type]
    assert [k for k, *_ in syncer.calls] == ["sync", "terminating", "terminated"]
    syncer.fail_once.add("d")
    w.update_pod(WorkerUpdate(make_pod("d")))
    await until(syncer, lambda: ("failed", "d", "boom") in syncer.calls)
    w.update_pod(WorkerUpdate(make_pod("d")))  # the worker is still alive
    await until(syncer, lambda: syncer.calls.count(("sync", "d", "busybox:1")) == 2)


async def test_a_pod_put_back_under_its_uid_runs_again_after_terminating(
    workers: tuple[PodWorkers, Syncer],
) -> None:
    w, syncer = workers
    pod = make_pod("e", "img:1")
    w.update_pod(WorkerUpdate(pod))
    await until(syncer, lambda: ("sync", "e", "img:1") in syncer.calls)
    syncer.gate.clear()  # the terminating sync is not gated; later syncs wait
    syncer.entered.clear()
    w.update_pod(WorkerUpdate(pod, UpdateType.KILL))
    w.restart_pod(WorkerUpdate(make_pod("e", "img:2")))  # while terminating: it waits its turn
    await until(syncer, lambda: ("terminated", "e", "") in syncer.calls)
    await syncer.entered.wait()
    assert w.state(pod.uid) is WorkerState.SYNCING
    syncer.gate.set()
    await until(syncer, lambda: ("sync", "e", "img:2") in syncer.calls)
    kinds = [k for k, uid, _ in syncer.calls if uid == "e"]
    assert kinds == ["sync", "terminating", "terminated", "sync"]


async def test_a_finished_worker_makes_way_for_a_restart(
    workers: tuple[PodWorkers, Syncer],
) -> None:
    w, syncer = workers
    syncer.terminal.add("f")
    w.update_pod(WorkerUpdate(make_pod("f")))
    await w.wait_terminated("f")  # type: ignore[arg-type]
    w.update_pod(WorkerUpdate(make_pod("f")))  # a plain sync leaves a finished pod alone
    await settle()
    assert [k for k, *_ in syncer.calls] == ["sync", "terminating", "terminated"]
    syncer.terminal.discard("f")
    w.restart_pod(WorkerUpdate(make_pod("f", "img:3")))
    await until(syncer, lambda: ("sync", "f", "img:3") in syncer.calls)
    assert w.state("f") is WorkerState.SYNCING  # type: ignore[arg-type]


def make_named(uid: str, name: str, image: str = "busybox:1") -> Pod:
    return Pod.from_dict(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "uid": uid},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }
    )


async def test_a_new_pod_waits_for_its_namesake_to_terminate(
    workers: tuple[PodWorkers, Syncer],
) -> None:
    w, syncer = workers
    old, new = make_named("old", "web", "img:1"), make_named("new", "web", "img:2")
    w.update_pod(WorkerUpdate(old))
    await until(syncer, lambda: ("sync", "old", "img:1") in syncer.calls)
    release = asyncio.Event()

    async def slow_terminating(pod: Pod, grace_period: int | None) -> None:
        syncer._record(("terminating", pod.uid, str(grace_period)))
        await release.wait()

    syncer.sync_terminating_pod = slow_terminating  # type: ignore[method-assign]
    w.update_pod(WorkerUpdate(old, UpdateType.KILL))
    w.update_pod(WorkerUpdate(new))  # an edited manifest: same name, new UID
    await until(syncer, lambda: ("terminating", "old", "None") in syncer.calls)
    await settle()
    assert ("sync", "new", "img:2") not in syncer.calls  # not while the old one stops
    release.set()
    await until(syncer, lambda: ("sync", "new", "img:2") in syncer.calls)
    order = [(k, uid) for k, uid, _ in syncer.calls]
    assert order.index(("terminated", "old")) < order.index(("sync", "new"))
    other = make_named("other", "db")
    w.update_pod(WorkerUpdate(other))  # another name never waits
    await until(syncer, lambda: ("sync", "other", "busybox:1") in syncer.calls)


async def test_updates_are_taken_as_soon_as_the_workers_run(clock: ManualClock) -> None:
    syncer = Syncer()
    w = PodWorkers(syncer, clock=clock)
    with pytest.raises(RuntimeError, match="not running"):
        w.update_pod(WorkerUpdate(make_pod("early")))
    task = asyncio.create_task(w.run())
    try:
        await w.wait_running()  # no loop turns counted: run() says when it owns its group
        w.update_pod(WorkerUpdate(make_pod("g")))
        await until(syncer, lambda: ("sync", "g", "busybox:1") in syncer.calls)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_healthy_pod_is_resynced_after_the_resync_period(
    workers: tuple[PodWorkers, Syncer], clock: ManualClock
) -> None:
    w, syncer = workers
    w.update_pod(WorkerUpdate(make_pod("h")))
    await until(syncer, lambda: ("sync", "h", "busybox:1") in syncer.calls)
    await clock.advance(59)
    assert syncer.calls.count(("sync", "h", "busybox:1")) == 1, "nothing before 60 s"
    await clock.advance(1)
    await until(syncer, lambda: syncer.calls.count(("sync", "h", "busybox:1")) == 2)


async def test_a_kill_that_failed_is_retried_until_it_succeeds(
    workers: tuple[PodWorkers, Syncer], clock: ManualClock
) -> None:
    """As the kubelet: a pod whose containers could not be stopped stays terminating and
    its worker tries again; it is not taken for terminated."""
    w, syncer = workers
    failures = 2

    async def failing_terminating(pod: Pod, grace_period: int | None) -> None:
        nonlocal failures
        syncer._record(("terminating", pod.uid, str(grace_period)))
        if failures:
            failures -= 1
            raise RuntimeError("failed to stop container c: runtime unavailable")

    syncer.sync_terminating_pod = failing_terminating  # type: ignore[method-assign]
    pod = make_pod("k")
    w.update_pod(WorkerUpdate(pod))
    w.update_pod(WorkerUpdate(pod, UpdateType.KILL, grace_period=30))
    await until(
        syncer,
        lambda: ("failed", "k", "failed to stop container c: runtime unavailable") in syncer.calls,
    )
    assert w.state(pod.uid) is WorkerState.TERMINATING
    await clock.advance(ERROR_RETRY - 1)
    assert syncer.calls.count(("terminating", "k", "30")) == 1, "not retried before the period"
    w.update_pod(WorkerUpdate(pod, UpdateType.KILL, grace_period=5))  # a shorter grace: at once
    await until(syncer, lambda: ("terminating", "k", "5") in syncer.calls)
    assert w.state(pod.uid) is WorkerState.TERMINATING
    await clock.advance(ERROR_RETRY)
    await w.wait_terminated(pod.uid)
    kinds = [(k, g) for k, uid, g in syncer.calls if uid == "k" and k != "sync"]
    assert kinds == [
        ("terminating", "30"),
        ("failed", "failed to stop container c: runtime unavailable"),
        ("terminating", "5"),
        ("failed", "failed to stop container c: runtime unavailable"),
        ("terminating", "5"),
        ("terminated", ""),
    ]
