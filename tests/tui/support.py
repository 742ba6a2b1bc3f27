"""Waiting for what the dashboard shows, with a deadline instead of a guess."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot

from tests.harness.wait import wait_until
from tui.app import DashboardApp
from tui.screens import LogsScreen, NodeScreen, PodsScreen, TraceScreen
from tui.widgets import NodeHeader, PodTable


async def until(
    pilot: Pilot[None], check: Callable[[], object], *, timeout: float = 10.0, what: str = ""
) -> None:
    """Let the app run (``pilot.pause``) until ``check()`` is true; fail after ``timeout`` s."""
    await wait_until(
        check, timeout=timeout, interval=0.02, message=what or str(check), pause=pilot.pause
    )


def pods_screen(app: DashboardApp) -> PodsScreen:
    screen = app.screen_stack[0]
    assert isinstance(screen, PodsScreen)
    return screen


def table(app: DashboardApp) -> PodTable:
    return pods_screen(app).query_one(PodTable)


def names(app: DashboardApp) -> list[str]:
    """The NAME column, top to bottom."""
    t = table(app)
    return [str(t.get_row_at(i)[0]) for i in range(t.row_count)]


def cell(app: DashboardApp, name: str, column: str) -> str:
    t = table(app)
    for key, row in t.rows_shown.items():
        if row[0] == name:
            return str(t.get_cell(key, column))
    raise AssertionError(f"no row {name}: {names(app)}")


def header(app: DashboardApp) -> str:
    screen = app.screen
    assert isinstance(screen, NodeScreen), screen
    return screen.query_one(NodeHeader).plain


def log_lines(app: DashboardApp) -> list[str]:
    screen = app.screen
    assert isinstance(screen, LogsScreen), screen
    view = screen.log_view
    return list(view.lines[: view.line_count])


def trace_lines(app: DashboardApp) -> list[str]:
    screen = app.screen
    assert isinstance(screen, TraceScreen), screen
    return [strip.text for strip in screen.trace_view.lines]


async def select(pilot: Pilot[None], app: DashboardApp, name: str) -> None:
    """Move the cursor to the pod called ``name`` with j/k, as a person would."""
    await until(pilot, lambda: name in names(app), what=f"{name} in the table")
    t = table(app)
    target = names(app).index(name)
    while t.cursor_row != target:
        await pilot.press("j" if t.cursor_row < target else "k")
    assert t.selected_key is not None and t.selected_key.endswith("/" + name)
