"""The dashboard and its feed against an in-memory node: the paths a real one rarely takes."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from textual.message import Message

from minikubelet.cri.trace import CallRecord
from tests.harness.wait import wait_until
from tests.tui.fakes import NOW, fake_feed, fake_kubelet, pod
from tests.tui.support import cell, header, names, select, table, until
from tui.app import DashboardApp
from tui.feed import Backoff, Feed, FrameBatch
from tui.messages import (
    LogEnded,
    LogStarted,
    LogText,
    StreamInterrupted,
    TraceBatch,
    TraceStarted,
)
from tui.screens import ConfirmDelete, PodScreen, PodsScreen
from tui.widgets import PodTable

pytestmark = pytest.mark.asyncio(loop_scope="session")
SIZE = (120, 34)


async def test_delete_confirmed_is_carried_out() -> None:
    api = fake_kubelet()
    app = DashboardApp(fake_feed(api), tz=dt.UTC)
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "gvisor-tui")
        await pilot.press("enter", "x")  # from the pod's own screen too
        assert isinstance(app.screen, ConfirmDelete)
        await pilot.click("#yes")
        await until(pilot, lambda: app.notices, what="the answer")
        assert app.notices[-1].severity == "information"
        assert app.notices[-1].text == "pod default/gvisor-tui is being deleted"
        assert api.deleted == ["default/gvisor-tui"]
        screen = app.screen
        assert isinstance(screen, PodScreen)
        await until(pilot, lambda: screen.model is None, what="the pod to go")
        await pilot.press("escape")
        await until(pilot, lambda: "gvisor-tui" not in names(app), what="the row to go")
        assert table(app).selected_key is not None  # the cursor landed on another pod


async def test_header_while_unreachable_then_reconnects() -> None:
    api = fake_kubelet(reachable=False)
    app = DashboardApp(fake_feed(api), tz=dt.UTC)
    async with app.run_test(size=SIZE) as pilot:
        await until(
            pilot,
            lambda: "kubelet not reachable at /fake/kubelet.sock — retrying in" in header(app),
            what="the header to say so",
        )
        assert names(app) == []
        api.reachable = True
        await until(pilot, lambda: len(names(app)) == 5, what="the pods")
        assert "connected to /fake/kubelet.sock" in header(app)
        assert "node tui" in header(app)


async def test_a_bug_below_the_feed_is_a_message_not_a_traceback() -> None:
    api = fake_kubelet()

    async def broken() -> Any:
        raise RuntimeError("kaboom")

    api.snapshot = broken  # type: ignore[method-assign]
    app = DashboardApp(fake_feed(api), tz=dt.UTC)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: "RuntimeError: kaboom" in header(app), what="the error")
        assert isinstance(app.screen, PodsScreen)


async def test_rows_change_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll that changes one pod touches that pod's changed cells, nothing else; the
    cursor stays on its pod while rows come and go above it."""
    api = fake_kubelet()
    app = DashboardApp(fake_feed(api), tz=dt.UTC)
    calls: dict[str, int] = {"add_row": 0, "remove_row": 0, "update_cell": 0, "clear": 0}

    def counting(name: str) -> Callable[..., Any]:
        original = getattr(PodTable, name)

        def wrapper(self: PodTable, *args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return original(self, *args, **kwargs)

        return wrapper

    for name in calls:
        monkeypatch.setattr(PodTable, name, counting(name))
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "multi-tui")
        assert calls["add_row"] == 5
        calls.update(dict.fromkeys(calls, 0))
        polls = app.snapshot
        await until(pilot, lambda: app.snapshot is not polls, what="a poll")
        assert calls == {"add_row": 0, "remove_row": 0, "update_cell": 0, "clear": 0}

        pods = [dict(p) for p in api.pods]
        multi = next(p for p in pods if p["metadata"]["name"] == "multi-tui")
        status = dict(multi["status"])
        status["containerStatuses"] = [dict(c) for c in status["containerStatuses"]]
        status["containerStatuses"][0]["restartCount"] = 1
        multi["status"] = status
        api.pods = pods
        await until(pilot, lambda: cell(app, "multi-tui", "RESTARTS") == "1", what="the change")
        assert calls == {"add_row": 0, "remove_row": 0, "update_cell": 1, "clear": 0}

        api.pods = [*api.pods, pod("aaa", containers=[])]
        await until(pilot, lambda: names(app)[0] == "aaa-tui", what="a new pod on top")
        assert table(app).selected_key == "default/multi-tui"
        api.pods = [p for p in api.pods if p["metadata"]["name"] not in ("aaa-tui", "hello-tui")]
        await until(pilot, lambda: "hello-tui" not in names(app), what="pods to go")
        assert table(app).selected_key == "default/multi-tui"
        assert calls["remove_row"] == 2 and calls["clear"] == 0


async def test_runtime_handler_column() -> None:
    app = DashboardApp(fake_feed(), tz=dt.UTC)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(names(app)) == 5, what="the pods")
        assert "RUNTIME" in [str(c.label) for c in table(app).columns.values()]
        assert cell(app, "gvisor-tui", "RUNTIME") == "runsc"
        assert cell(app, "multi-tui", "RUNTIME") == ""
        assert cell(app, "crash-loop-tui", "STATUS") == "CrashLoopBackOff"
        assert cell(app, "crash-loop-tui", "RESTARTS") == "3 (20s ago)"
        assert cell(app, "init-demo-tui", "STATUS") == "Init:0/1"


# --- the feed on its own -------------------------------------------------------------------


class Collect:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    def __call__(self, message: Message) -> None:
        self.messages.append(message)

    def of(self, kind: type[Message]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]


def call(seq: int, pod_name: str = "default/multi-tui") -> CallRecord:
    return CallRecord(
        seq=seq,
        time=NOW.timestamp(),
        service="RuntimeService",
        method="ContainerStatus",
        code="OK",
        duration_ms=0.1,
        pod=pod_name,
    )


async def test_trace_is_batched_per_frame() -> None:
    """A burst of 2,000 calls arrives as a handful of messages, in order, none lost."""
    api = fake_kubelet()
    post = Collect()
    task = asyncio.create_task(Feed(api, frame=0.05).follow_trace(post))
    try:
        await wait_until(lambda: post.of(TraceBatch), timeout=5, message="the first batch")
        assert len(post.of(TraceStarted)) == 1
        api.emit(call(100 + i) for i in range(2000))
        await wait_until(
            lambda: sum(len(b.records) for b in post.of(TraceBatch)) == 2011,
            timeout=5,
            message="all 2,011 records",
        )
    finally:
        task.cancel()
    batches = post.of(TraceBatch)
    assert len(batches) <= 4
    seqs = [r.seq for b in batches for r in b.records]
    assert seqs == sorted(seqs)


async def test_trace_stream_that_breaks_is_reopened() -> None:
    api = fake_kubelet(reachable=False)
    post = Collect()
    feed = Feed(api, backoff=Backoff(0.01, 2, 0.05))
    task = asyncio.create_task(feed.follow_trace(post))
    try:
        await wait_until(
            lambda: len(post.of(StreamInterrupted)) >= 2, timeout=5, message="two interruptions"
        )
        assert "no kubelet is listening on /fake/kubelet.sock" in post.messages[0].reason  # type: ignore[attr-defined]
        api.reachable = True
        await wait_until(lambda: post.of(TraceBatch), timeout=5, message="a batch once reachable")
    finally:
        task.cancel()


async def test_log_waits_for_its_container_then_follows() -> None:
    api = fake_kubelet()
    post = Collect()
    feed = Feed(api, backoff=Backoff(0.01, 2, 0.05))
    task = asyncio.create_task(feed.follow_logs("default", "multi-tui", "late", post))
    try:
        await wait_until(lambda: post.of(StreamInterrupted), timeout=5, message="an interruption")
        assert 'the log of container "late"' in post.of(StreamInterrupted)[0].reason
        api.log_text[("default", "multi-tui", "late")] = "h\u00e9llo\n".encode()
        await wait_until(lambda: post.of(LogText), timeout=5, message="the log text")
    finally:
        task.cancel()
    assert [type(m) for m in post.messages[-2:]] == [LogStarted, LogText]
    assert post.of(LogText)[0].text == "h\u00e9llo\n"


async def test_log_of_a_finished_container_ends() -> None:
    api = fake_kubelet()

    async def finished(namespace: str, pod_name: str, container: str) -> Any:
        yield b"bye\n"

    api.logs = finished  # type: ignore[method-assign,assignment]
    post = Collect()
    await Feed(api).follow_logs("default", "hello-tui", "hello", post)
    assert [type(m) for m in post.messages] == [LogStarted, LogText, LogEnded]
    assert post.of(LogEnded)[0].reason == "container hello is terminated: the log ends"


async def test_frame_batch_flushes_once_per_frame() -> None:
    flushed: list[list[int]] = []
    batch: FrameBatch[int] = FrameBatch(flushed.append, frame=0.02)
    for i in range(100):
        batch.add(i)
    assert flushed == []
    await wait_until(lambda: flushed, timeout=5, message="the first flush")
    assert flushed == [list(range(100))]
    batch.add(-1)
    batch.discard()  # gone, and its timer too
    batch.add(2)
    await wait_until(lambda: len(flushed) == 2, timeout=5, message="the second flush")
    assert flushed == [list(range(100)), [2]]
