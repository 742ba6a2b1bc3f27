"""The dashboard's pods table with 1,000 pods: what one poll costs to show.

    python -m bench.tui_render [--pods 1000] [--repeat 30]

Runs the dashboard headless on an in-memory node (``tui.feed.FakeKubelet``) and
feeds it snapshots where 10 pods changed, then snapshots where all of them did.
For each (and for a poll where nothing changed, the floor) it prints the median of:

* ``apply``: rows from the snapshot (kubectl's cells for every pod), their diff
  against what the table shows, and the in-place table changes;
* ``frame``: the same arriving as a ``NodeUpdated`` message, through to the app
  being idle again with the screen repainted;
* ``rebuild``: what a clear-and-refill of the table would cost instead, for scale.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import time
from collections.abc import Callable
from typing import Any

from tui.app import DashboardApp
from tui.feed import FakeKubelet, Feed
from tui.messages import NodeUpdated
from tui.model import NodeSnapshot, pod_rows
from tui.screens import PodsScreen
from tui.widgets import PodTable

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
CREATED = "2026-01-01T00:00:00Z"  # a day before NOW: AGE reads "27h" for every poll


def bench_pod(index: int, restarts: int) -> dict[str, Any]:
    name = f"bench-{index:04d}"
    return {
        "metadata": {"name": name, "namespace": "bench", "creationTimestamp": CREATED},
        "spec": {"nodeName": "bench", "containers": [{"name": "app", "image": "busybox"}]},
        "status": {
            "phase": "Running",
            "podIP": f"10.88.{index // 250}.{index % 250 + 2}",
            "podIPs": [{"ip": f"10.88.{index // 250}.{index % 250 + 2}"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "app",
                    "ready": True,
                    "restartCount": restarts,
                    "state": {"running": {"startedAt": CREATED}},
                }
            ],
        },
    }


STATUS = {"nodeName": "bench", "runtime": {"name": "fake", "version": "0"}, "pods": 0}


def snapshot(restarts: list[int]) -> NodeSnapshot:
    return NodeSnapshot([bench_pod(i, r) for i, r in enumerate(restarts)], STATUS, NOW)


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.2f} ms"


async def measure(pods: int, repeat: int) -> None:
    api = FakeKubelet(pods=[], status=STATUS, now=NOW)
    app = DashboardApp(Feed(api, poll_interval=3600.0))  # the bench posts the snapshots
    async with app.run_test(size=(160, 50)) as pilot:
        screen = app.screen
        assert isinstance(screen, PodsScreen)
        table = screen.query_one(PodTable)
        restarts = [0] * pods
        app.post_message(NodeUpdated(snapshot(restarts)))
        while table.row_count < pods:
            await pilot.pause(0.01)

        def change(every: int) -> Callable[[], NodeSnapshot]:
            def next_snapshot() -> NodeSnapshot:
                for i in range(0, pods, every) if every else ():
                    restarts[i] += 1
                return snapshot(restarts)

            return next_snapshot

        print(f"{pods} pods, median of {repeat} updates")
        scenarios = (
            ("nothing changes", change(0)),
            ("10 pods change", change(pods // 10)),
            (f"all {pods} change", change(1)),
        )
        for label, make in scenarios:
            apply: list[float] = []
            frame: list[float] = []
            rebuild: list[float] = []
            for _ in range(repeat):
                snap = make()
                t0 = time.perf_counter()
                table.show_rows(pod_rows(snap))
                apply.append(time.perf_counter() - t0)
                await pilot.pause()

                snap = make()
                t0 = time.perf_counter()
                app.post_message(NodeUpdated(snap))
                await pilot.pause()
                frame.append(time.perf_counter() - t0)

                snap = make()
                t0 = time.perf_counter()
                rows = pod_rows(snap)
                table.clear()
                for key, row in rows.items():
                    table.add_row(*row[:7], key=key)
                rebuild.append(time.perf_counter() - t0)
                table.rows_shown = dict(rows)
                await pilot.pause()
            ratio = statistics.median(rebuild) / statistics.median(apply)
            print(
                f"  {label:<17} apply {ms(apply)}   frame {ms(frame)}   "
                f"rebuild {ms(rebuild)}   rebuild/apply {ratio:5.1f}x"
            )
        rows_only = []
        snap = snapshot(restarts)
        for _ in range(repeat):
            t0 = time.perf_counter()
            pod_rows(snap)
            rows_only.append(time.perf_counter() - t0)
        print(f"  of which kubectl's cells for {pods} pods (pod_row): {ms(rows_only)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(measure(args.pods, args.repeat))


if __name__ == "__main__":
    main()
