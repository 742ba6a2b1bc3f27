"""The dashboard's screens: pods, one pod, its description, its logs, the CRI trace.

Every screen sits under the node header and follows the app's ``snapshot`` and
``connection`` (attributes down). A screen that shows a stream (events, a log, the
trace) owns the worker that follows it, so the stream stops when the screen closes;
the worker runs a :class:`~tui.feed.Feed` loop that posts messages back to it.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, ScrollableContainer, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Footer, Input, Log, RichLog, Static
from textual.worker import Worker, WorkerState

from minikubelet.cri.trace import CallRecord
from minikubelet.status.printer import describe_pod
from tui.feed import Feed, describe_error
from tui.messages import (
    DeleteRequested,
    EventsUpdated,
    LogEnded,
    LogStarted,
    LogText,
    StreamInterrupted,
    TraceBatch,
    TraceStarted,
)
from tui.model import (
    TRACE_COLUMNS,
    Connection,
    ContainerLine,
    NodeSnapshot,
    PodKey,
    condition_lines,
    container_lines,
    container_names,
    event_lines,
    events_about,
    pod_cells,
    pod_facts,
    pod_rows,
    seconds,
    split_key,
    trace_cells,
    trace_matches,
)
from tui.widgets import FilterInput, NodeHeader, PodTable

#: How many CRI calls the trace view keeps (the kubelet keeps 10,000).
TRACE_KEEP: Final = 10_000
LOG_KEEP: Final = 10_000


class NodeScreen(Screen[None]):
    """A screen under the node header, following the app's snapshot and connection."""

    DEFAULT_CSS = """
    NodeScreen .title {
        height: 1;
        padding: 0 1;
        background: $primary-background;
        color: $text;
        text-style: bold;
    }
    NodeScreen .status {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    """

    def __init__(self, feed: Feed, *, tz: dt.tzinfo | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.tz = tz
        self.snapshot: NodeSnapshot | None = None
        self.connection = Connection(feed.address)

    def compose(self) -> ComposeResult:
        yield NodeHeader(id="header")
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.watch(self.app, "connection", self._connection_changed)
        self.watch(self.app, "snapshot", self._snapshot_changed)
        self.start()

    def start(self) -> None:
        """Called once mounted and up to date: start what the screen follows.

        (Textual calls ``on_mount`` of every class in the hierarchy by itself; screens
        extend this method instead, calling ``super().start()``.)"""

    def _connection_changed(self, connection: Connection) -> None:
        self.connection = connection
        self.query_one(NodeHeader).show(self.snapshot, connection)
        self.show_connection(connection)

    def _snapshot_changed(self, snapshot: NodeSnapshot | None) -> None:
        self.snapshot = snapshot
        self.query_one(NodeHeader).show(snapshot, self.connection)
        if snapshot is not None:
            self.show_snapshot(snapshot)

    def show_snapshot(self, snapshot: NodeSnapshot) -> None:
        """Bring the body up to date with a new snapshot."""

    def show_connection(self, connection: Connection) -> None:
        """React to the kubelet going away or coming back."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(describe_error(event.worker.error), title="error", severity="error")

    def set_title(self, text: str) -> None:
        self.query_one("#title", Static).update(text)


# --- pods ----------------------------------------------------------------------------------


class PodsScreen(NodeScreen):
    """Every pod on the node, as ``kubectl get pods -o wide`` lists them."""

    DEFAULT_CSS = """
    PodsScreen PodTable {
        height: 1fr;
        border: round $primary;
        border-title-color: $text;
        border-title-style: bold;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "describe", "Describe"),
        Binding("l", "logs", "Logs"),
        Binding("t", "trace", "Trace"),
        Binding("T", "trace_all", "Trace all", show=False),
        Binding("slash", "filter", "Filter"),
        Binding("x", "delete", "Delete"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    def __init__(self, feed: Feed, *, tz: dt.tzinfo | None = None) -> None:
        super().__init__(feed, tz=tz)
        self.filter_text = ""

    def compose_body(self) -> ComposeResult:
        yield PodTable(id="pods")
        yield FilterInput(
            placeholder="filter pods by name (enter keeps, escape clears)", id="filter"
        )

    @property
    def table(self) -> PodTable:
        return self.query_one(PodTable)

    def show_snapshot(self, snapshot: NodeSnapshot) -> None:
        self._show_rows()

    def show_connection(self, connection: Connection) -> None:
        self._set_table_title()

    def _show_rows(self) -> None:
        if self.snapshot is not None:
            self.table.show_rows(pod_rows(self.snapshot, self.filter_text))
        self._set_table_title()

    def _set_table_title(self) -> None:
        table = self.table
        total = len(self.snapshot.pods) if self.snapshot is not None else 0
        if self.filter_text:
            title = f"pods /{self.filter_text} [{table.row_count}/{total}]"
        else:
            title = f"pods(all) [{total}]"
        if self.connection.reachable is False and self.snapshot is not None:
            title += " · last known"
        table.border_title = title

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.filter_text = event.value.strip()
            self._show_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.query_one(FilterInput).close()
            self.table.focus()

    def on_filter_input_closed(self, event: FilterInput.Closed) -> None:
        self.table.focus()

    def on_data_table_row_selected(self, event: PodTable.RowSelected) -> None:
        key = event.row_key.value
        if key is not None:
            self.app.push_screen(PodScreen(self.feed, key, tz=self.tz))

    def action_filter(self) -> None:
        self.query_one(FilterInput).open()

    def action_clear_filter(self) -> None:
        self.query_one(FilterInput).action_cancel()

    def _selected(self) -> PodKey | None:
        key = self.table.selected_key
        if key is None:
            self.notify("no pod selected", severity="warning", timeout=2)
        return key

    def action_describe(self) -> None:
        if (key := self._selected()) is not None:
            self.app.push_screen(DescribeScreen(self.feed, key, tz=self.tz))

    def action_logs(self) -> None:
        if (key := self._selected()) is not None:
            self.app.push_screen(LogsScreen(self.feed, key, tz=self.tz))

    def action_trace(self) -> None:
        key = self.table.selected_key
        self.app.push_screen(TraceScreen(self.feed, key or "", tz=self.tz))

    def action_trace_all(self) -> None:
        self.app.push_screen(TraceScreen(self.feed, "", tz=self.tz))

    def action_delete(self) -> None:
        if (key := self._selected()) is not None:
            self.post_message(DeleteRequested(key))


# --- one pod -------------------------------------------------------------------------------


def _table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str | Text]]
) -> RenderableType:
    table = Table(
        title=title,
        title_justify="left",
        title_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        header_style="bold dim",
    )
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    if not rows:
        return Group(Text(title, style="bold"), Text("  <none>", style="dim"), Text())
    return table


_STATE_STYLE: Final = {"Running": "green", "Terminated": "dim", "Waiting": "yellow"}
RECENT_EVENTS: Final = 20


@dataclass(frozen=True, slots=True)
class PodModel:
    """Everything the pod screen shows, compared as a whole to skip redundant redraws."""

    row: tuple[str, ...]
    facts: tuple[tuple[str, str], ...]
    containers: tuple[ContainerLine, ...]
    conditions: tuple[tuple[str, str, str, str], ...]
    events: tuple[tuple[str, str, str, str], ...]


class _PodView(NodeScreen):
    """A screen about one pod: it follows the node's events while it is open."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
    ]

    def __init__(self, feed: Feed, key: PodKey, *, tz: dt.tzinfo | None = None) -> None:
        super().__init__(feed, tz=tz)
        self.key = key
        self.events: list[Mapping[str, Any]] = []
        self._all_events: Sequence[Mapping[str, Any]] = ()

    def start(self) -> None:
        super().start()
        self.run_worker(
            self.feed.watch_events(self.post_message),
            name="events",
            group="events",
            exclusive=True,
            exit_on_error=False,
        )

    def on_events_updated(self, message: EventsUpdated) -> None:
        self._all_events = message.events
        self._render_pod()

    def show_snapshot(self, snapshot: NodeSnapshot) -> None:
        self._render_pod()

    def _render_pod(self) -> None:
        pod = self.snapshot.pod(self.key) if self.snapshot is not None else None
        if pod is not None:
            self.events = events_about(pod, self._all_events)
        self.show_pod(pod)

    def show_pod(self, pod: Mapping[str, Any] | None) -> None:
        """Show ``pod`` (None: not on the node, or not seen yet)."""

    def action_logs(self) -> None:
        self.app.push_screen(LogsScreen(self.feed, self.key, tz=self.tz))

    def action_trace(self) -> None:
        self.app.push_screen(TraceScreen(self.feed, self.key, tz=self.tz))

    def action_delete(self) -> None:
        self.post_message(DeleteRequested(self.key))


class PodScreen(_PodView):
    """One pod: facts, containers with state and reason, conditions, recent events."""

    DEFAULT_CSS = """
    PodScreen #detail {
        height: 1fr;
        padding: 0 1;
    }
    PodScreen #detail Static {
        margin-bottom: 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("d", "describe", "Describe"),
        Binding("l", "logs", "Logs"),
        Binding("t", "trace", "Trace"),
        Binding("x", "delete", "Delete"),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
    ]

    def compose_body(self) -> ComposeResult:
        yield Static(f"pod {self.key}", id="title", classes="title")
        with VerticalScroll(id="detail"):
            yield Static(id="facts")
            yield Static(id="containers")
            yield Static(id="conditions")
            yield Static(id="events")

    def __init__(self, feed: Feed, key: PodKey, *, tz: dt.tzinfo | None = None) -> None:
        super().__init__(feed, key, tz=tz)
        self.model: PodModel | None = None
        """What the screen shows; None while the pod is not on the node."""

    def start(self) -> None:
        super().start()
        self.query_one("#detail").focus()

    def action_scroll(self, direction: str) -> None:
        detail = self.query_one("#detail", VerticalScroll)
        if direction == "down":
            detail.scroll_down(animate=False)
        else:
            detail.scroll_up(animate=False)

    def action_describe(self) -> None:
        self.app.switch_screen(DescribeScreen(self.feed, self.key, tz=self.tz))

    def show_pod(self, pod: Mapping[str, Any] | None) -> None:
        if pod is None or self.snapshot is None:
            if self.model is not None or self.snapshot is not None:
                self.model = None
                self.set_title(f"pod {self.key} is not on the node")
            return
        now = self.snapshot.now
        model = PodModel(
            row=pod_cells(pod, now),
            facts=tuple(pod_facts(pod)),
            containers=tuple(container_lines(pod, now)),
            conditions=tuple(condition_lines(pod, now)),
            events=tuple(event_lines(self.events, now)),
        )
        if model == self.model:
            return
        self.model = model
        row = model.row
        self.set_title(f"pod {self.key} · {row[2]} · ready {row[1]} · restarts {row[3]}")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold dim")
        grid.add_column()
        for label, value in model.facts:
            grid.add_row(label, value)
        self.query_one("#facts", Static).update(grid)
        self.query_one("#containers", Static).update(
            _table(
                "Containers",
                ("NAME", "KIND", "IMAGE", "STATE", "REASON", "EXIT", "READY", "RESTARTS", "SINCE"),
                [
                    (
                        c.name,
                        c.kind,
                        c.image,
                        Text(c.state, style=_STATE_STYLE.get(c.state, "")),
                        c.reason,
                        c.exit_code,
                        c.ready,
                        c.restarts,
                        c.since,
                    )
                    for c in model.containers
                ],
            )
        )
        self.query_one("#conditions", Static).update(
            _table("Conditions", ("TYPE", "STATUS", "REASON", "SINCE"), model.conditions)
        )
        events = model.events
        recent = events[-RECENT_EVENTS:]
        title = "Events"
        if len(events) > len(recent):
            title += f" (last {len(recent)} of {len(events)})"
        self.query_one("#events", Static).update(
            _table(title, ("TYPE", "REASON", "AGE", "MESSAGE"), recent)
        )


class DescribeScreen(_PodView):
    """``kubectl describe pod`` of one pod, kept up to date, in a scrollable view."""

    DEFAULT_CSS = """
    DescribeScreen #describe {
        height: 1fr;
        padding: 0 1;
    }
    DescribeScreen #describe-text {
        width: auto;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("l", "logs", "Logs"),
        Binding("t", "trace", "Trace"),
        Binding("x", "delete", "Delete"),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
    ]

    def __init__(self, feed: Feed, key: PodKey, *, tz: dt.tzinfo | None = None) -> None:
        super().__init__(feed, key, tz=tz)
        self.text = ""

    def compose_body(self) -> ComposeResult:
        yield Static(f"describe pod {self.key}", id="title", classes="title")
        with ScrollableContainer(id="describe"):
            yield Static(id="describe-text", markup=False)

    def start(self) -> None:
        super().start()
        self.query_one("#describe").focus()

    def action_scroll(self, direction: str) -> None:
        view = self.query_one("#describe", ScrollableContainer)
        if direction == "down":
            view.scroll_down(animate=False)
        else:
            view.scroll_up(animate=False)

    def show_pod(self, pod: Mapping[str, Any] | None) -> None:
        if pod is None or self.snapshot is None:
            if self.snapshot is not None:
                self.set_title(f"describe pod {self.key}: not on the node")
            return
        text = describe_pod(pod, self.events, now=self.snapshot.now)
        if text != self.text:
            self.text = text
            self.query_one("#describe-text", Static).update(Text(text.rstrip("\n")))


# --- logs ----------------------------------------------------------------------------------


class LogsScreen(NodeScreen):
    """A container's log, followed; ``c`` moves to the pod's next container."""

    DEFAULT_CSS = """
    LogsScreen Log {
        height: 1fr;
        overflow: auto;
        border: round $primary;
        padding: 0 1;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("c", "next_container", "Container"),
        Binding("j", "scroll('down')", "Down", show=False),
        Binding("k", "scroll('up')", "Up", show=False),
    ]

    def __init__(
        self,
        feed: Feed,
        key: PodKey,
        container: str | None = None,
        *,
        tz: dt.tzinfo | None = None,
    ) -> None:
        super().__init__(feed, tz=tz)
        self.key = key
        self.container = container or ""
        self.state = "opening"

    def compose_body(self) -> ComposeResult:
        yield Static(id="title", classes="title")
        yield Log(id="log", max_lines=LOG_KEEP, highlight=False, auto_scroll=True)
        yield Static(id="log-status", classes="status")

    @property
    def log_view(self) -> Log:
        return self.query_one("#log", Log)

    def start(self) -> None:
        super().start()
        if not self.container:
            pod = self.snapshot.pod(self.key) if self.snapshot is not None else None
            names = container_names(pod) if pod is not None else []
            self.container = names[0] if names else ""
        self.log_view.focus()
        self._follow()

    def action_scroll(self, direction: str) -> None:
        if direction == "down":
            self.log_view.scroll_down(animate=False)
        else:
            self.log_view.scroll_up(animate=False)

    def _follow(self) -> None:
        self.log_view.clear()
        self.set_title(f"logs {self.key} · container {self.container or '?'}")
        if not self.container:
            self._status("the pod is not on the node (yet): no container to follow")
            return
        self._status("opening the log …")
        namespace, name = split_key(self.key)
        self.run_worker(
            self.feed.follow_logs(namespace, name, self.container, self.post_message),
            name=f"log {self.key}/{self.container}",
            group="log",
            exclusive=True,
            exit_on_error=False,
        )

    def _status(self, text: str) -> None:
        self.state = text
        self.query_one("#log-status", Static).update(text)

    def action_next_container(self) -> None:
        pod = self.snapshot.pod(self.key) if self.snapshot is not None else None
        names = container_names(pod) if pod is not None else []
        if not names:
            self.notify("the pod is not on the node", severity="warning", timeout=2)
            return
        if len(names) == 1 and names[0] == self.container:
            self.notify(f"{self.container} is the pod's only container", timeout=2)
            return
        index = names.index(self.container) + 1 if self.container in names else 0
        self.container = names[index % len(names)]
        self._follow()

    def on_log_started(self, message: LogStarted) -> None:
        if message.container == self.container:
            self.log_view.clear()
            self._status("following")

    def on_log_text(self, message: LogText) -> None:
        if message.container == self.container:
            self.log_view.write(message.text)

    def on_log_ended(self, message: LogEnded) -> None:
        if message.container == self.container:
            self._status(message.reason)

    def on_stream_interrupted(self, message: StreamInterrupted) -> None:
        if message.stream == "log":
            self._status(f"{message.reason} — retrying in {seconds(message.retry_in)}")


# --- the CRI trace -------------------------------------------------------------------------

_CODE_OK: Final = "green"
_CODE_BAD: Final = "bold red"


_TRACE_STYLES: Final = {"TIME": "dim", "METHOD": "bold"}


def _trace_cell(name: str, width: int, value: str) -> str:
    if not width:
        return value
    shown = value if len(value) <= width - 1 else value[: width - 2] + "…"
    return shown.rjust(width - 1) + " " if name == "LATENCY" else shown.ljust(width)


def trace_line(record: CallRecord, tz: dt.tzinfo | None) -> Text:
    """One call as a line of the trace view, its code coloured by outcome."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for (name, width), value in zip(TRACE_COLUMNS, trace_cells(record, tz), strict=True):
        style = _TRACE_STYLES.get(name, "")
        if name == "CODE":
            style = _CODE_OK if record.code == "OK" else _CODE_BAD
        text.append(_trace_cell(name, width, value), style=style)
    if record.error:
        text.append(f"  {record.error}", style="red")
    return text


def trace_header() -> Text:
    text = Text(no_wrap=True)
    for name, width in TRACE_COLUMNS:
        text.append(_trace_cell(name, width, name), style="bold dim")
    return text


class TraceScreen(NodeScreen):
    """Every kubelet -> CRI call as it happens, optionally only those of some pod(s)."""

    DEFAULT_CSS = """
    TraceScreen #trace-head {
        height: 1;
        padding: 0 1;
    }
    TraceScreen RichLog {
        height: 1fr;
        overflow: auto;
        padding: 0 1;
        border: none;
        background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("slash", "filter", "Filter"),
        Binding("a", "all", "All pods"),
    ]

    def __init__(self, feed: Feed, pod_filter: str = "", *, tz: dt.tzinfo | None = None) -> None:
        super().__init__(feed, tz=tz)
        self.pod_filter = pod_filter
        self.records: deque[CallRecord] = deque(maxlen=TRACE_KEEP)
        self.shown = 0
        self.state = "opening the trace …"

    def compose_body(self) -> ComposeResult:
        yield Static(id="title", classes="title")
        yield Static(trace_header(), id="trace-head")
        yield RichLog(id="trace", max_lines=TRACE_KEEP, wrap=False, auto_scroll=True)
        yield Static(id="trace-status", classes="status")
        yield FilterInput(
            placeholder="filter calls by pod (enter keeps, escape clears)", id="filter"
        )

    @property
    def trace_view(self) -> RichLog:
        return self.query_one("#trace", RichLog)

    def start(self) -> None:
        super().start()
        self.query_one(FilterInput).value = self.pod_filter
        self.trace_view.focus()
        self._set_title()
        self._status(self.state)
        self.run_worker(
            self.feed.follow_trace(self.post_message),
            name="trace",
            group="trace",
            exclusive=True,
            exit_on_error=False,
        )

    def _set_title(self) -> None:
        which = f"pod ~ {self.pod_filter}" if self.pod_filter else "all pods"
        self.set_title(f"CRI trace · {which} · {self.shown} of {len(self.records)} calls")

    def _status(self, text: str) -> None:
        self.state = text
        self.query_one("#trace-status", Static).update(text)

    def _write(self, records: Sequence[CallRecord]) -> None:
        lines = [trace_line(r, self.tz) for r in records if trace_matches(r, self.pod_filter)]
        if lines:
            self.shown += len(lines)
            self.trace_view.write(Text("\n").join(lines))

    def on_trace_started(self, message: TraceStarted) -> None:
        self.records.clear()
        self.trace_view.clear()
        self.shown = 0
        self._status("following")

    def on_trace_batch(self, message: TraceBatch) -> None:
        self.records.extend(message.records)
        self._write(message.records)
        self._set_title()

    def on_stream_interrupted(self, message: StreamInterrupted) -> None:
        if message.stream == "trace":
            self._status(f"{message.reason} — retrying in {seconds(message.retry_in)}")

    def refilter(self, pod_filter: str) -> None:
        self.pod_filter = pod_filter
        self.trace_view.clear()
        self.shown = 0
        self._write(list(self.records))
        self._set_title()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter" and event.value.strip() != self.pod_filter:
            self.refilter(event.value.strip())

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.query_one(FilterInput).close()
        self.trace_view.focus()

    def on_filter_input_closed(self, event: FilterInput.Closed) -> None:
        self.trace_view.focus()

    def action_filter(self) -> None:
        self.query_one(FilterInput).open()

    def action_all(self) -> None:
        self.query_one(FilterInput).value = ""
        self.refilter("")

    def action_back(self) -> None:
        self.app.pop_screen()


# --- dialogs -------------------------------------------------------------------------------


class ConfirmDelete(ModalScreen[bool]):
    """Delete this pod? ``y`` or the Delete button confirms; ``n``, escape or Cancel do not."""

    DEFAULT_CSS = """
    ConfirmDelete {
        align: center middle;
    }
    ConfirmDelete #dialog {
        width: 64;
        height: auto;
        padding: 1 2;
        border: thick $error;
        background: $surface;
    }
    ConfirmDelete #question {
        text-style: bold;
        margin-bottom: 1;
    }
    ConfirmDelete Horizontal {
        height: auto;
        align: center middle;
        margin-top: 1;
    }
    ConfirmDelete Button {
        margin: 0 2;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Delete"),
        Binding("n", "answer(False)", "Cancel"),
        Binding("escape", "answer(False)", "Cancel"),
    ]

    def __init__(self, key: PodKey) -> None:
        super().__init__()
        self.key = key

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"Delete pod {self.key}?", id="question")
            yield Static(
                "The kubelet stops its containers with their grace period. "
                "A static pod (from a manifest) is deleted by removing its manifest.",
            )
            with Horizontal():
                yield Button("Delete (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


HELP: Final = (
    ("Pods", "↑ ↓ / j k", "move"),
    ("", "g G", "first / last pod"),
    ("", "enter", "the pod in detail"),
    ("", "d", "describe the pod (kubectl describe)"),
    ("", "l", "follow the pod's log"),
    ("", "t / T", "CRI trace of the pod / of all pods"),
    ("", "/", "filter pods by name (escape clears)"),
    ("", "x", "delete the pod (asks first)"),
    ("Logs", "c", "next container"),
    ("Trace", "/", "filter calls by pod"),
    ("", "a", "all pods"),
    ("Anywhere", "escape", "back"),
    ("", "?", "this help"),
    ("", "q", "quit"),
)


class HelpScreen(ModalScreen[None]):
    """The keys."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen #help {
        width: 64;
        height: auto;
        padding: 1 2;
        border: thick $primary;
        background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_help", "Close"),
        Binding("question_mark", "dismiss_help", "Close"),
        Binding("q", "dismiss_help", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, pad_edge=False, title="Keys", title_style="bold")
        table.add_column(style="bold dim")
        table.add_column(style="bold")
        table.add_column()
        for view, keys, what in HELP:
            table.add_row(view, keys, what)
        yield Static(table, id="help")

    def action_dismiss_help(self) -> None:
        self.dismiss(None)
