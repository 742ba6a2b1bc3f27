"""``minikubelet tui``: a k9s-like dashboard that observes a running kubelet.

The app is the composition of a :class:`~tui.feed.Feed` and the screens. It runs
the node watcher (pods and status at about 1 Hz), keeps the latest ``snapshot``
and ``connection`` as reactive attributes that every screen follows, and carries
out the one command, deleting a pod, after a confirmation.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from pathlib import Path
from typing import ClassVar, NamedTuple

from textual.app import App
from textual.binding import Binding, BindingType
from textual.notifications import SeverityLevel
from textual.reactive import var
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from tui.feed import Backoff, Feed, KubeletAPI, LiveKubelet, describe_error
from tui.messages import ActionFinished, ConnectionChanged, DeleteRequested, NodeUpdated
from tui.model import Connection, NodeSnapshot, split_key
from tui.screens import ConfirmDelete, HelpScreen, PodsScreen


class Notice(NamedTuple):
    title: str
    text: str
    severity: SeverityLevel


class DashboardApp(App[None]):
    """Pods, one pod, logs and the CRI trace of the node behind ``feed``."""

    TITLE = "minikubelet"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    snapshot: var[NodeSnapshot | None] = var(None, always_update=True)
    """The latest look at the node; None until the kubelet first answers."""
    connection: var[Connection] = var(Connection(""))
    """Whether the kubelet answers."""

    def __init__(self, feed: Feed, *, tz: dt.tzinfo | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.tz = tz
        self.notices: deque[Notice] = deque(maxlen=100)
        """What the app told the person, newest last."""
        self.set_reactive(DashboardApp.connection, Connection(feed.address))

    def get_default_screen(self) -> Screen[None]:
        return PodsScreen(self.feed, tz=self.tz)

    def on_mount(self) -> None:
        self.run_worker(
            self.feed.watch_node(self.post_message),
            name="node",
            group="node",
            exclusive=True,
            exit_on_error=False,
        )

    async def on_unmount(self) -> None:
        await self.feed.api.close()

    def on_node_updated(self, message: NodeUpdated) -> None:
        self.snapshot = message.snapshot

    def on_connection_changed(self, message: ConnectionChanged) -> None:
        self.connection = message.connection

    def on_delete_requested(self, message: DeleteRequested) -> None:
        key = message.key

        def answered(yes: bool | None) -> None:
            if not yes:
                return
            namespace, name = split_key(key)
            self.run_worker(
                self.feed.delete_pod(namespace, name, self.post_message),
                name=f"delete {key}",
                group="delete",
                exit_on_error=False,
            )

        self.push_screen(ConfirmDelete(key), answered)

    def on_action_finished(self, message: ActionFinished) -> None:
        self.notify(
            message.text,
            title=message.title,
            severity="information" if message.ok else "error",
            timeout=4 if message.ok else 8,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.notify(describe_error(event.worker.error), title="error", severity="error")

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """Show a notification (as plain text: messages quote the kubelet) and remember it."""
        self.notices.append(Notice(title, message, severity))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())


def run_app(
    root_dir: Path,
    *,
    poll_interval: float = 1.0,
    backoff: Backoff | None = None,
) -> int:
    """Run the dashboard on the kubelet whose root dir is ``root_dir``, until ``q``."""
    api: KubeletAPI = LiveKubelet(root_dir / "kubelet.sock")
    app = DashboardApp(Feed(api, poll_interval=poll_interval, backoff=backoff))
    app.run()
    return 0
