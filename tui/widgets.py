"""The dashboard's widgets. They show what they are given and do no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable, Input, Static
from textual.widgets.data_table import ColumnKey, RowDoesNotExist

from tui.model import (
    POD_COLUMNS,
    RUNTIME_COLUMN,
    Connection,
    NodeSnapshot,
    PodKey,
    Row,
    connection_line,
    diff_rows,
    node_facts,
    status_style,
)

_STATUS_COLUMN = POD_COLUMNS.index("STATUS")
#: Past this many rows going at once (and half the table), refill instead of removing.
REFILL_AT = 50


def header_text(snapshot: NodeSnapshot | None, connection: Connection) -> Text:
    """The node header: what the node is and runs, then whether the kubelet answers."""
    text = Text()
    if snapshot is None:
        text.append("minikubelet", style="bold")
        text.append("  waiting for the kubelet's first answer\n\n", style="dim")
    else:
        facts = node_facts(snapshot)
        first = [f for f in facts if f[0] in ("node", "runtime", "pleg")]
        cluster = [f for f in facts if f[0] in ("api", "ready", "lease")]
        second = [
            f for f in facts if f[0] not in ("node", "runtime", "pleg", "api", "ready", "lease")
        ]
        for group in (first, cluster, second):
            if not group:
                continue
            for index, (label, value) in enumerate(group):
                if index:
                    text.append("   ")
                text.append(f"{label} ", style="dim")
                bad = value == "UNHEALTHY" or value.startswith("NOT READY")
                style = "bold red" if bad else "bold"
                text.append(value, style=style)
            text.append("\n")
    if connection.reachable is False:
        down = connection_line(Connection(connection.address, False, retry_in=connection.retry_in))
        text.append("✖ " + down, style="bold red")
        if connection.reason:
            text.append(f"\n  {connection.reason}", style="red")
    elif connection.reachable:
        text.append("● " + connection_line(connection), style="green")
    else:
        text.append("… " + connection_line(connection), style="yellow")
    return text


class NodeHeader(Static):
    """Node name, runtime, counts, and whether the kubelet is reachable."""

    DEFAULT_CSS = """
    NodeHeader {
        height: auto;
        padding: 0 1;
        background: $boost;
        border-bottom: solid $primary-darken-2;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self._shown: tuple[int, int] | None = None
        self._plain = ""

    @property
    def plain(self) -> str:
        """What the header says, without styles (for tests and people reading logs)."""
        return self._plain

    def show(self, snapshot: NodeSnapshot | None, connection: Connection) -> None:
        key = (id(snapshot), hash(connection))
        if key == self._shown:
            return
        self._shown = key
        text = header_text(snapshot, connection)
        if text.plain != self._plain:
            self._plain = text.plain
            self.update(text)


class PodTable(DataTable[Any]):
    """The pods table, changed in place: rows added, removed, and only changed cells updated."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "scroll_top", "Top", show=False),
        Binding("G", "scroll_bottom", "Bottom", show=False),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.rows_shown: dict[PodKey, Row] = {}
        self._runtime_column = False

    def on_mount(self) -> None:
        for name in POD_COLUMNS[:RUNTIME_COLUMN]:
            self.add_column(name, key=name)

    @property
    def selected_key(self) -> PodKey | None:
        if not self.rows_shown or self.cursor_row < 0 or self.cursor_row >= self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except RowDoesNotExist:  # pragma: no cover - cursor outside the rows
            return None
        return key

    def _cell(self, index: int, value: str) -> str | Text:
        if index == _STATUS_COLUMN:
            return Text(value, style=status_style(value))
        return value

    def _cells(self, row: Row) -> list[str | Text]:
        width = len(POD_COLUMNS) if self._runtime_column else RUNTIME_COLUMN
        return [self._cell(i, v) for i, v in enumerate(row[:width])]

    def show_rows(self, rows: Mapping[PodKey, Row]) -> None:
        """Make the table show ``rows``, touching only what differs from what it shows.

        Rows are added, removed and updated cell by cell by their key; the cursor stays
        on its pod. Two costs of the DataTable are kept in check: a column is re-measured
        only when a cell grows it (a narrower value would make Textual measure the whole
        column, for every such cell), and when most rows go at once (a filter) the table
        is refilled, since each removal re-indexes every row.
        """
        diff = diff_rows(self.rows_shown, rows)
        if not diff:
            return
        selected = self.selected_key
        if not self._runtime_column and any(row[RUNTIME_COLUMN] for row in rows.values()):
            self._runtime_column = True
            self.add_column(
                POD_COLUMNS[RUNTIME_COLUMN], key=POD_COLUMNS[RUNTIME_COLUMN], default=""
            )
            for key, row in self.rows_shown.items():
                if row[RUNTIME_COLUMN]:
                    self._update(key, RUNTIME_COLUMN, row[RUNTIME_COLUMN])
        if len(diff.removed) > REFILL_AT and 2 * len(diff.removed) > len(self.rows_shown):
            self._refill(rows)
        else:
            for key in diff.removed:
                self.remove_row(key)
                del self.rows_shown[key]
            for key, index, value in diff.changed:
                if index != RUNTIME_COLUMN or self._runtime_column:
                    self._update(key, index, value)
            if diff.added:
                for key, row in diff.added:
                    self.add_row(*self._cells(row), key=key)
                self.sort("NAME", key=str)
            self.rows_shown.update(rows)
        if selected is not None and selected in self.rows_shown:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False)

    def _update(self, key: PodKey, index: int, value: str) -> None:
        name = POD_COLUMNS[index]
        grows = cell_len(value) >= self.columns[ColumnKey(name)].content_width
        self.update_cell(key, name, self._cell(index, value), update_width=grows)

    def _refill(self, rows: Mapping[PodKey, Row]) -> None:
        self.clear()
        ordered = sorted(rows.items(), key=lambda item: (item[1][0], item[0]))
        for key, row in ordered:
            self.add_row(*self._cells(row), key=key)
        self.rows_shown = dict(ordered)


class FilterInput(Input):
    """The ``/`` prompt: typing filters at once; enter keeps it, escape clears it."""

    DEFAULT_CSS = """
    FilterInput {
        dock: bottom;
        display: none;
        border: tall $accent;
    }
    FilterInput.-shown {
        display: block;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Clear filter", show=False),
    ]

    class Closed(Message):
        """The prompt closed (escape): the screen gives the focus back."""

    def open(self) -> None:
        self.add_class("-shown")
        self.focus()

    def close(self) -> None:
        self.remove_class("-shown")

    def action_cancel(self) -> None:
        self.value = ""
        self.close()
        self.post_message(self.Closed())
