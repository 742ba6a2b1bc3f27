"""What the dashboard shows, as pure functions: rows, their diff, header facts, pod lines."""

from __future__ import annotations

import datetime as dt

import pytest

from minikubelet.cri.trace import CallRecord
from tests.tui.fakes import NOW, STATUS, events, pods
from tui.model import (
    Connection,
    NodeSnapshot,
    RowDiff,
    condition_lines,
    connection_line,
    container_lines,
    container_names,
    diff_rows,
    event_lines,
    events_about,
    matches,
    node_facts,
    pod_rows,
    status_style,
    trace_cells,
    trace_matches,
)


def snapshot() -> NodeSnapshot:
    return NodeSnapshot(pods(), STATUS, NOW)


def test_rows_are_kubectls_cells_plus_the_runtime_handler() -> None:
    rows = pod_rows(snapshot())
    assert rows["default/multi-tui"] == (
        "multi-tui",
        "2/2",
        "Running",
        "0",
        "10m",
        "10.88.0.3",
        "tui",
        "",
    )
    assert rows["default/crash-loop-tui"][2:4] == ("CrashLoopBackOff", "3 (20s ago)")
    assert rows["default/hello-tui"][1:3] == ("0/1", "Completed")
    assert rows["default/init-demo-tui"][2] == "Init:0/1"
    assert rows["default/gvisor-tui"][-1] == "runsc"


def test_filter_is_a_case_insensitive_substring_of_namespace_and_name() -> None:
    assert list(pod_rows(snapshot(), "MULTI")) == ["default/multi-tui"]
    assert len(pod_rows(snapshot(), "default/")) == 5
    assert pod_rows(snapshot(), "nope") == {}
    assert matches("kube-system/dns", "") and not matches("a/b", "c")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({}, {}, RowDiff([], [], [])),
        ({"a": ("1", "x")}, {"a": ("1", "x")}, RowDiff([], [], [])),
        ({"a": ("1", "x")}, {"a": ("1", "y")}, RowDiff([], [], [("a", 1, "y")])),
        ({"a": ("1", "x")}, {"b": ("2", "x")}, RowDiff(["a"], [("b", ("2", "x"))], [])),
        (
            {"a": ("1", "x"), "b": ("2", "y")},
            {"b": ("3", "z"), "c": ("4", "w")},
            RowDiff(["a"], [("c", ("4", "w"))], [("b", 0, "3"), ("b", 1, "z")]),
        ),
    ],
)
def test_diff_rows(
    old: dict[str, tuple[str, ...]], new: dict[str, tuple[str, ...]], expected: RowDiff
) -> None:
    diff = diff_rows(old, new)
    assert diff == expected
    assert bool(diff) == bool(expected.removed or expected.added or expected.changed)


def test_diff_of_a_thousand_rows_where_ten_change() -> None:
    old = {f"ns/p{i}": (f"p{i}", "1/1", "Running") for i in range(1000)}
    new = dict(old)
    for i in range(0, 1000, 100):
        new[f"ns/p{i}"] = (f"p{i}", "0/1", "Running")
    diff = diff_rows(old, new)
    assert (diff.removed, diff.added) == ([], [])
    assert [(key, index) for key, index, _ in diff.changed] == [
        (f"ns/p{i}", 1) for i in range(0, 1000, 100)
    ]


@pytest.mark.parametrize(
    ("word", "style"),
    [
        ("Running", "green"),
        ("Completed", "dim"),
        ("Pending", "yellow"),
        ("ContainerCreating", "yellow"),
        ("Init:0/2", "yellow"),
        ("Init:CrashLoopBackOff", "bold red"),
        ("CrashLoopBackOff", "bold red"),
        ("ErrImagePull", "bold red"),
        ("Terminating", "magenta"),
    ],
)
def test_status_style(word: str, style: str) -> None:
    assert status_style(word) == style


def test_node_facts_show_what_the_status_has() -> None:
    facts = dict(node_facts(snapshot()))
    assert facts == {
        "node": "tui",
        "runtime": "minikubelet-fake 0.1.0",
        "pods": "5",
        "containers": "6",
        "phases": "Pending 1 Running 3 Succeeded 1",
        "pleg": "healthy",
    }
    richer = {**STATUS, "allocatable": {"cpu": "2", "memory": "24Gi"}, "pleg": {"healthy": False}}
    facts = dict(node_facts(NodeSnapshot([], richer, NOW)))
    assert (facts["cpu"], facts["memory"], facts["pleg"]) == ("2", "24Gi", "UNHEALTHY")
    assert dict(node_facts(NodeSnapshot([{}], {}, NOW))) == {
        "node": "?",
        "runtime": "?",
        "pods": "1",
    }


def test_connection_line() -> None:
    assert connection_line(Connection("/r/kubelet.sock")) == "connecting to /r/kubelet.sock …"
    assert connection_line(Connection("/s", True)) == "connected to /s"
    assert (
        connection_line(Connection("/s", False, retry_in=2.0))
        == "kubelet not reachable at /s — retrying in 2s"
    )
    assert (
        connection_line(Connection("/s", False, "boom", 0.5))
        == "kubelet not reachable at /s — retrying in 0.5s (boom)"
    )


def test_container_and_condition_lines() -> None:
    by_name = {p["metadata"]["name"]: p for p in pods()}
    crash = container_lines(by_name["crash-loop-tui"], NOW)
    assert [(c.name, c.kind, c.state, c.reason, c.restarts) for c in crash] == [
        ("crash", "app", "Waiting", "CrashLoopBackOff", "3")
    ]
    init = container_lines(by_name["init-demo-tui"], NOW)
    assert [(c.name, c.kind, c.state, c.ready, c.since) for c in init] == [
        ("setup", "init", "Running", "true", "3s"),
        ("app", "app", "Waiting", "false", ""),
    ]
    hello = container_lines(by_name["hello-tui"], NOW)
    assert [(c.state, c.reason, c.exit_code, c.since) for c in hello] == [
        ("Terminated", "Completed", "0", "4m50s")
    ]
    assert container_names(by_name["init-demo-tui"]) == ["app", "setup"]
    assert condition_lines(by_name["multi-tui"], NOW)[1] == ("Ready", "True", "", "9m59s")


def test_events_about_one_pod() -> None:
    multi = next(p for p in pods() if p["metadata"]["name"] == "multi-tui")
    mine = events_about(multi, events())
    assert len(mine) == 5
    lines = event_lines(mine, NOW)
    assert lines[0] == (
        "Normal",
        "Pulled",
        "9m59s",
        'Container image "busybox:1.36" already present',
    )
    repeated = {**mine[0], "count": 3, "firstTimestamp": "2026-01-02T02:04:05Z"}
    assert event_lines([repeated], NOW)[0][2] == "9m59s (x3 over 60m)"


def test_trace_cells_and_filter() -> None:
    rec = CallRecord(
        seq=1,
        time=NOW.timestamp() + 0.25,
        service="RuntimeService",
        method="StartContainer",
        code="OK",
        duration_ms=1.234,
        pod="default/multi-tui",
        container="app",
    )
    assert trace_cells(rec, dt.UTC) == (
        "03:04:05.250",
        "RuntimeService",
        "StartContainer",
        "default/multi-tui/app",
        "1.23ms",
        "OK",
    )
    assert trace_matches(rec, "multi") and trace_matches(rec, "")
    assert not trace_matches(rec, "hello")
    anonymous = CallRecord(1, 0.0, "RuntimeService", "ListPodSandbox", "OK", 0.1)
    assert trace_matches(anonymous, "") and not trace_matches(anonymous, "multi")
    by_id = CallRecord(1, 0.0, "RuntimeService", "StopContainer", "OK", 0.1, container_id="c" * 64)
    assert trace_cells(by_id, dt.UTC)[3] == "c" * 13
