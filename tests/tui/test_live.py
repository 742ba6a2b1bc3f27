"""The dashboard driven by keys against a real kubelet on the simulated runtime."""

from __future__ import annotations

import asyncio
import re

import pytest
from textual.widget import Widget

from tests.e2e.node import Node
from tests.tui.conftest import live_feed
from tests.tui.support import (
    cell,
    header,
    log_lines,
    names,
    pods_screen,
    select,
    table,
    trace_lines,
    until,
)
from tui.app import DashboardApp
from tui.screens import (
    ConfirmDelete,
    DescribeScreen,
    HelpScreen,
    LogsScreen,
    PodScreen,
    PodsScreen,
    TraceScreen,
)
from tui.widgets import FilterInput

pytestmark = pytest.mark.asyncio(loop_scope="session")
SIZE = (130, 40)


def focused(app: DashboardApp) -> Widget | None:
    return app.focused


def two_pods(app: DashboardApp) -> bool:
    return names(app) == ["hello-tui", "multi-tui"]


async def test_pods_table_and_header(live_node: Node) -> None:
    app = DashboardApp(live_feed(live_node))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: two_pods(app), what="both pods in the table")
        assert [str(c.label) for c in table(app).columns.values()] == [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
        ]
        assert cell(app, "multi-tui", "READY") == "2/2"
        assert cell(app, "multi-tui", "STATUS") == "Running"
        assert cell(app, "multi-tui", "NODE") == "tui"
        assert cell(app, "multi-tui", "IP").startswith("10.")
        assert cell(app, "hello-tui", "STATUS") == "Completed"
        assert cell(app, "hello-tui", "READY") == "0/1"
        text = header(app)
        assert "node tui" in text
        assert "runtime minikubelet-fake" in text
        assert "pods 2" in text and "containers 3" in text
        assert f"connected to {live_node.root_dir / 'kubelet.sock'}" in text
        assert table(app).border_title == "pods(all) [2]"


async def test_navigation_keys(live_node: Node) -> None:
    app = DashboardApp(live_feed(live_node))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: two_pods(app), what="both pods in the table")
        t = table(app)
        assert t.selected_key == "default/hello-tui"
        await pilot.press("j")
        assert t.selected_key == "default/multi-tui"
        await pilot.press("k")
        assert t.selected_key == "default/hello-tui"
        await pilot.press("down", "enter")
        assert isinstance(app.screen, PodScreen) and app.screen.key == "default/multi-tui"
        await pilot.press("escape")
        assert isinstance(app.screen, PodsScreen)
        assert t.selected_key == "default/multi-tui"  # the cursor stayed on its pod
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, PodsScreen)
        # polls come in meanwhile: the selection stays where the person put it
        polls = app.snapshot
        await until(pilot, lambda: app.snapshot is not polls, what="another poll")
        assert t.selected_key == "default/multi-tui"
        await pilot.press("q")
    assert app.return_code == 0


async def test_filter_by_name(live_node: Node) -> None:
    app = DashboardApp(live_feed(live_node))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: two_pods(app), what="both pods in the table")
        await pilot.press("slash")
        assert focused(app) is pods_screen(app).query_one(FilterInput)
        await pilot.press("m", "u", "l")
        assert names(app) == ["multi-tui"]
        assert table(app).border_title == "pods /mul [1/2]"
        await pilot.press("enter")  # keeps the filter, back to the table
        assert focused(app) is table(app)
        polls = app.snapshot
        await until(pilot, lambda: app.snapshot is not polls, what="another poll")
        assert names(app) == ["multi-tui"]  # the filter holds across polls
        await pilot.press("escape")  # clears it
        assert names(app) == ["hello-tui", "multi-tui"]
        await pilot.press("slash", "n", "o", "p", "e")
        assert names(app) == []
        assert table(app).border_title == "pods /nope [0/2]"
        await pilot.press("escape")
        assert two_pods(app)
        assert focused(app) is table(app)


async def test_detail_and_describe(live_node: Node) -> None:
    app = DashboardApp(live_feed(live_node))
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "multi-tui")
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, PodScreen)

        def shown() -> list[str]:
            model = screen.model
            return [c.name + ":" + c.state for c in model.containers] if model else []

        def events() -> list[tuple[str, str, str, str]]:
            return list(screen.model.events) if screen.model else []

        await until(
            pilot, lambda: shown() == ["app:Running", "helper:Running"], what="the containers"
        )
        await until(
            pilot,
            lambda: {"Started", "Created"} <= {e[1] for e in events()},
            what="the pod's events",
        )
        assert all(e[3] for e in events())
        assert screen.model is not None
        assert ("Ready", "True") in {(c[0], c[1]) for c in screen.model.conditions}
        await pilot.press("d")
        describe = app.screen
        assert isinstance(describe, DescribeScreen)
        await until(pilot, lambda: "Started container helper" in describe.text, what="events")
        assert re.search(r"^Name:\s+multi-tui$", describe.text, re.MULTILINE)
        assert "Containers:\n  app:" in describe.text
        await pilot.press("escape")
        assert isinstance(app.screen, PodsScreen)


async def test_logs_follow_and_switch_container(live_node: Node) -> None:
    app = DashboardApp(live_feed(live_node))
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "multi-tui")
        await pilot.press("l")
        screen = app.screen
        assert isinstance(screen, LogsScreen)
        assert screen.container == "app"
        await until(pilot, lambda: "app started" in log_lines(app), what="app's log")
        assert screen.state == "following"
        await pilot.press("c")
        assert screen.container == "helper"
        await until(pilot, lambda: log_lines(app) == ["helper started"], what="helper's log")
        await pilot.press("c")
        assert screen.container == "app"
        await until(pilot, lambda: "app started" in log_lines(app), what="app's log again")
        await pilot.press("escape")
        # a finished container's log ends, and says so
        await select(pilot, app, "hello-tui")
        await pilot.press("l")
        await until(
            pilot,
            lambda: log_lines(app) == ["hello from minikubelet", "goodbye"],
            what="hello's log",
        )
        ended = app.screen
        assert isinstance(ended, LogsScreen)
        await until(pilot, lambda: "terminated" in ended.state, what="the end of the log")


async def test_trace_of_the_selected_pod(live_node: Node) -> None:
    app = DashboardApp(live_feed(live_node))
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "multi-tui")
        await pilot.press("t")
        screen = app.screen
        assert isinstance(screen, TraceScreen)
        assert screen.pod_filter == "default/multi-tui"
        await until(pilot, lambda: screen.shown > 0, what="multi's calls")
        lines = trace_lines(app)
        assert any("RunPodSandbox" in line for line in lines)
        assert any("StartContainer" in line and "multi-tui/helper" in line for line in lines)
        assert all("multi-tui" in line for line in lines)
        assert all(line.split()[-1] == "OK" for line in lines if "RunPodSandbox" in line)
        # all pods: the relisting kubelet keeps calling; new calls show up as they happen
        await pilot.press("a")
        assert screen.pod_filter == ""
        assert screen.shown == len(screen.records) > len(lines)
        seen = len(screen.records)
        await until(pilot, lambda: len(screen.records) > seen, what="new calls as they happen")
        assert any("ListPodSandbox" in line for line in trace_lines(app))
        # the `/` filter narrows to one pod again
        await pilot.press("slash", *"hello")
        await until(pilot, lambda: screen.pod_filter == "hello", what="the filter")
        assert trace_lines(app) and all("hello-tui" in line for line in trace_lines(app))
        await pilot.press("enter", "escape")
        assert isinstance(app.screen, PodsScreen)


async def test_delete_asks_then_shows_the_kubelets_refusal(live_node: Node) -> None:
    app = DashboardApp(live_feed(live_node))
    async with app.run_test(size=SIZE) as pilot:
        await select(pilot, app, "multi-tui")
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDelete)
        await pilot.press("n")
        assert isinstance(app.screen, PodsScreen)
        assert not app.notices
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDelete)
        await pilot.press("y")
        await until(pilot, lambda: app.notices, what="the kubelet's answer")
        notice = app.notices[-1]
        assert notice.severity == "error"
        assert notice.title == "delete default/multi-tui: refused"
        assert 'pod "multi-tui" is a static pod from its file source' in notice.text
        assert "Traceback" not in notice.text
        assert isinstance(app.screen, PodsScreen)
        polls = app.snapshot
        await until(pilot, lambda: app.snapshot is not polls, what="another poll")
        assert two_pods(app)


async def test_kubelet_goes_away_and_comes_back(own_node: Node) -> None:
    app = DashboardApp(live_feed(own_node))
    sock = own_node.root_dir / "kubelet.sock"
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: two_pods(app), what="both pods in the table")
        assert f"connected to {sock}" in header(app)
        await asyncio.to_thread(own_node.stop)
        await until(
            pilot,
            lambda: f"kubelet not reachable at {sock} — retrying" in header(app),
            what="the header to say the kubelet is gone",
        )
        assert table(app).border_title == "pods(all) [2] · last known"
        assert two_pods(app)  # the last known pods stay on screen
        own_node.start()
        await until(
            pilot,
            lambda: f"connected to {sock}" in header(app),
            timeout=30,
            what="the dashboard to reconnect by itself",
        )
        await until(pilot, lambda: two_pods(app), what="the pods after the restart")
        assert table(app).border_title == "pods(all) [2]"
        assert all(n.severity != "error" for n in app.notices)
        assert pods_screen(app) is app.screen
