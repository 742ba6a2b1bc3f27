"""How the main screens look, from a fixed in-memory node (``tests/tui/fakes.py``).

Regenerate after a deliberate change with ``pytest tests/tui --snapshot-update`` and
look at the SVGs under ``__snapshots__/`` before committing them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Any, cast

from textual.pilot import Pilot

from tests.tui.fakes import fake_feed, fake_kubelet
from tests.tui.support import log_lines, select, table, trace_lines, until
from tui.app import DashboardApp
from tui.feed import Backoff, Feed
from tui.screens import ConfirmDelete, DescribeScreen, HelpScreen, PodScreen

SIZE = (120, 34)
Compare = Callable[..., bool]


def app(feed: Feed | None = None) -> DashboardApp:
    return DashboardApp(feed or fake_feed(), tz=dt.UTC)


def after(
    *steps: Callable[[Pilot[Any], DashboardApp], Awaitable[None]],
) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """A run_before that waits for the pods, then takes ``steps``."""

    async def run(pilot: Pilot[Any]) -> None:
        dashboard = cast(DashboardApp, pilot.app)
        await until(pilot, lambda: table(dashboard).row_count == 5, what="the pods")
        for step in steps:
            await step(pilot, dashboard)

    return run


def keys(*pressed: str) -> Callable[[Pilot[Any], DashboardApp], Awaitable[None]]:
    async def step(pilot: Pilot[Any], dashboard: DashboardApp) -> None:
        await pilot.press(*pressed)

    return step


def on(name: str) -> Callable[[Pilot[Any], DashboardApp], Awaitable[None]]:
    async def step(pilot: Pilot[Any], dashboard: DashboardApp) -> None:
        await select(pilot, dashboard, name)

    return step


def wait(check: Callable[[DashboardApp], object]) -> Callable[[Pilot[Any], DashboardApp], Any]:
    async def step(pilot: Pilot[Any], dashboard: DashboardApp) -> None:
        await until(pilot, lambda: check(dashboard))

    return step


def test_pods(snap_compare: Compare) -> None:
    """Header with node, runtime, counts and phases; the pods table with kubectl's
    columns, STATUS words coloured, and the RUNTIME column of the pod that has one."""
    assert snap_compare(app(), terminal_size=SIZE, run_before=after())


def test_pods_filtered(snap_compare: Compare) -> None:
    assert snap_compare(app(), terminal_size=SIZE, run_before=after(keys("slash", *"lo")))


def test_pod_detail(snap_compare: Compare) -> None:
    def shown(dashboard: DashboardApp) -> bool:
        screen = dashboard.screen
        return (
            isinstance(screen, PodScreen)
            and screen.model is not None
            and len(screen.model.events) == 5
        )

    assert snap_compare(
        app(), terminal_size=SIZE, run_before=after(on("multi-tui"), keys("enter"), wait(shown))
    )


def test_pod_detail_crash_loop(snap_compare: Compare) -> None:
    def shown(dashboard: DashboardApp) -> bool:
        screen = dashboard.screen
        return isinstance(screen, PodScreen) and bool(screen.model and screen.model.events)

    assert snap_compare(
        app(),
        terminal_size=SIZE,
        run_before=after(on("crash-loop-tui"), keys("enter"), wait(shown)),
    )


def test_describe(snap_compare: Compare) -> None:
    def shown(dashboard: DashboardApp) -> bool:
        screen = dashboard.screen
        return isinstance(screen, DescribeScreen) and "Started container helper" in screen.text

    assert snap_compare(
        app(), terminal_size=SIZE, run_before=after(on("multi-tui"), keys("d"), wait(shown))
    )


def test_logs(snap_compare: Compare) -> None:
    assert snap_compare(
        app(),
        terminal_size=SIZE,
        run_before=after(
            on("multi-tui"), keys("l"), wait(lambda d: "serving on :8080" in log_lines(d))
        ),
    )


def test_trace_of_one_pod(snap_compare: Compare) -> None:
    assert snap_compare(
        app(),
        terminal_size=SIZE,
        run_before=after(on("multi-tui"), keys("t"), wait(lambda d: len(trace_lines(d)) == 6)),
    )


def test_trace_of_all_pods(snap_compare: Compare) -> None:
    assert snap_compare(
        app(),
        terminal_size=SIZE,
        run_before=after(keys("T"), wait(lambda d: len(trace_lines(d)) == 11)),
    )


def test_confirm_delete(snap_compare: Compare) -> None:
    assert snap_compare(
        app(),
        terminal_size=SIZE,
        run_before=after(
            on("multi-tui"), keys("x"), wait(lambda d: isinstance(d.screen, ConfirmDelete))
        ),
    )


def test_help(snap_compare: Compare) -> None:
    assert snap_compare(
        app(),
        terminal_size=SIZE,
        run_before=after(keys("question_mark"), wait(lambda d: isinstance(d.screen, HelpScreen))),
    )


def test_kubelet_not_reachable(snap_compare: Compare) -> None:
    """Before the first answer: the header says where it looked and that it retries."""
    feed = Feed(fake_kubelet(reachable=False), poll_interval=0.05, backoff=Backoff(0.5, 1.0, 0.5))
    dashboard = app(feed)

    async def run(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: dashboard.connection.reachable is False, what="a failure")

    assert snap_compare(dashboard, terminal_size=SIZE, run_before=run)
