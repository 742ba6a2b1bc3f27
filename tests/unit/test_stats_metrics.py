"""Prometheus text for /metrics/resource and /metrics, read back by a small parser."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from minikubelet.cri.trace import TraceRecorder
from minikubelet.stats.metrics import (
    Counter,
    Gauge,
    Histogram,
    KubeletMetrics,
    Registry,
    TraceMetrics,
    escape_label_value,
    format_value,
    operation_type,
    resource_metrics,
)

# -- a small parser of the text format ------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(v: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m[1], m[1]), v)


@dataclass
class Sample:
    name: str
    labels: dict[str, str]
    value: float
    timestamp: int | None


@dataclass
class Parsed:
    help: dict[str, str] = field(default_factory=dict)
    type: dict[str, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)

    def get(self, name: str, **labels: str) -> Sample:
        found = [s for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, (name, labels, found)
        return found[0]


def parse(text: str) -> Parsed:
    assert text.endswith("\n")
    out = Parsed()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, rest = line[7:].partition(" ")
            out.help[name] = _unescape(rest)
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert name not in out.type, f"TYPE of {name} twice"
            out.type[name] = kind
        else:
            m = _SAMPLE.match(line)
            assert m, f"not a sample: {line!r}"
            labels: dict[str, str] = {}
            body = m[2] or ""
            pos = 0
            while pos < len(body):
                lm = _LABEL.match(body, pos)
                assert lm, f"bad labels: {body!r}"
                labels[lm[1]] = _unescape(lm[2])
                pos = lm.end()
            value = {"+Inf": math.inf, "-Inf": -math.inf}.get(m[3]) or float(m[3])
            family = re.sub(r"_(bucket|sum|count)$", "", m[1])
            assert m[1] in out.type or family in out.type, f"{m[1]} before its TYPE"
            ts = int(m[4]) if m[4] else None
            out.samples.append(Sample(m[1], labels, value, ts))
    return out


# -- the format ------------------------------------------------------------------------


def test_label_values_and_help_are_escaped() -> None:
    g = Gauge("x_total", 'help with \\ and\nnewline "quotes" kept', ["pod"])
    nasty = 'a"b\\c\nd'
    g.set(1, pod=nasty)
    r = Registry()
    r.register(g)
    text = r.render()
    assert 'pod="a\\"b\\\\c\\nd"' in text
    assert "# HELP x_total help with \\\\ and\\nnewline" in text
    parsed = parse(text)
    assert parsed.get("x_total", pod=nasty).value == 1
    assert parsed.help["x_total"] == 'help with \\ and\nnewline "quotes" kept'


def test_values() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(math.nan) == "NaN"
    assert escape_label_value("plain") == "plain"


def test_bad_names_and_labels_are_refused() -> None:
    with pytest.raises(ValueError):
        Counter("bad-name", "h")
    with pytest.raises(ValueError):
        Counter("ok", "h", ["le"])
    c = Counter("ok", "h", ["a"])
    with pytest.raises(ValueError):
        c.inc(b="x")
    with pytest.raises(ValueError):
        c.inc(-1, a="x")


def test_histogram_buckets_are_cumulative() -> None:
    h = Histogram("d_seconds", "durations", ["op"], buckets=[0.1, 1, 10])
    for v in (0.05, 0.1, 0.5, 2, 20):
        h.observe(v, op="run")
    h.observe(3, op="stop")
    r = Registry()
    r.register(h)
    p = parse(r.render())
    assert p.type["d_seconds"] == "histogram"
    run = [s for s in p.samples if s.name == "d_seconds_bucket" and s.labels["op"] == "run"]
    assert [(s.labels["le"], s.value) for s in run] == [
        ("0.1", 2),
        ("1", 3),
        ("10", 4),
        ("+Inf", 5),
    ]
    assert p.get("d_seconds_count", op="run").value == 5
    assert p.get("d_seconds_sum", op="run").value == pytest.approx(22.65)
    assert p.get("d_seconds_bucket", op="stop", le="1").value == 0
    assert p.get("d_seconds_bucket", op="stop", le="10").value == 1


def test_unlabelled_families_show_zero_and_empty_vectors_are_left_out() -> None:
    m = KubeletMetrics()
    p = parse(m.render())
    assert p.get("kubelet_running_pods").value == 0
    assert p.get("kubelet_pod_start_duration_seconds_count").value == 0
    assert p.get("kubelet_pod_start_duration_seconds_bucket", le="+Inf").value == 0
    assert "kubelet_runtime_operations_total" not in p.type


# -- /metrics ---------------------------------------------------------------------------


def test_kubelet_families() -> None:
    m = KubeletMetrics()
    m.running_pods.set(3)
    m.running_containers.set(2, container_state="running")
    m.running_containers.set(1, container_state="exited")
    m.pod_start_duration.observe(1.5)
    m.pleg_relist_duration.observe(0.02)
    m.pleg_relist_interval.observe(1.01)
    m.evictions.inc(eviction_signal="memory.available")
    p = parse(m.render())
    assert p.type == {
        "kubelet_evictions": "counter",
        "kubelet_pleg_relist_duration_seconds": "histogram",
        "kubelet_pleg_relist_interval_seconds": "histogram",
        "kubelet_pod_start_duration_seconds": "histogram",
        "kubelet_running_containers": "gauge",
        "kubelet_running_pods": "gauge",
    }
    assert p.get("kubelet_running_pods").value == 3
    assert p.get("kubelet_running_containers", container_state="exited").value == 1
    assert p.get("kubelet_pod_start_duration_seconds_bucket", le="1").value == 0
    assert p.get("kubelet_pod_start_duration_seconds_bucket", le="2").value == 1
    assert p.get("kubelet_pleg_relist_duration_seconds_bucket", le="0.025").value == 1
    assert p.get("kubelet_evictions", eviction_signal="memory.available").value == 1


@pytest.mark.parametrize(
    ("method", "op"),
    [
        ("RunPodSandbox", "run_podsandbox"),
        ("ListPodSandbox", "list_podsandbox"),
        ("PodSandboxStatus", "podsandbox_status"),
        ("ListContainerStats", "list_container_stats"),
        ("ImageFsInfo", "image_fs_info"),
        ("Version", "version"),
        ("ExecSync", "exec_sync"),
    ],
)
def test_operation_types(method: str, op: str) -> None:
    assert operation_type(method) == op


def test_trace_feeds_runtime_operations_and_api_requests() -> None:
    m = KubeletMetrics()
    trace = TraceRecorder()
    unsubscribe = trace.subscribe(TraceMetrics(m, api_host="10.0.0.1:6443").record)

    def cri(service: str, method: str, code: str, seconds: float) -> None:
        trace.record(
            service=service,
            method=method,
            request=None,
            response=None,
            code=code,
            started=0.0,
            duration_s=seconds,
        )

    cri("RuntimeService", "StartContainer", "OK", 0.03)
    cri("RuntimeService", "StartContainer", "NOT_FOUND", 2.0)
    cri("ImageService", "PullImage", "OK", 0.5)
    trace.record_api(method="PATCH pods/status", code="200", started=0.0, duration_s=0.01)
    trace.record_api(method="LIST pods", code="200", started=0.0, duration_s=0.01)
    trace.record_api(method="POST events", code="0", started=0.0, duration_s=0.01)
    trace.record_api(method="ADDED pods", code="", started=0.0, duration_s=0.0)
    unsubscribe()
    cri("RuntimeService", "StartContainer", "OK", 0.03)

    p = parse(m.render())
    assert p.get("kubelet_runtime_operations_total", operation_type="start_container").value == 2
    assert p.get("kubelet_runtime_operations_total", operation_type="pull_image").value == 1
    assert (
        p.get("kubelet_runtime_operations_errors_total", operation_type="start_container").value
        == 1
    )
    b = "kubelet_runtime_operations_duration_seconds_bucket"
    assert p.get(b, operation_type="start_container", le="0.03125").value == 1
    assert p.get(b, operation_type="start_container", le="+Inf").value == 2
    rc = "rest_client_requests_total"
    host = "10.0.0.1:6443"
    assert p.get(rc, code="200", method="PATCH", host=host).value == 1
    assert p.get(rc, code="200", method="GET", host=host).value == 1
    assert p.get(rc, code="<error>", method="POST", host=host).value == 1
    assert sum(s.value for s in p.samples if s.name == rc) == 3  # the watch event is no request


# -- /metrics/resource -------------------------------------------------------------------


def summary() -> dict[str, Any]:
    return {
        "node": {
            "cpu": {"time": "2027-01-15T08:00:00Z", "usageCoreNanoSeconds": 12_500_000_000},
            "memory": {"time": "2027-01-15T08:00:01Z", "workingSetBytes": 1 << 30},
        },
        "pods": [
            {
                "podRef": {"name": "web", "namespace": "default", "uid": "u"},
                "containers": [
                    {
                        "name": "app",
                        "startTime": "2027-01-15T07:00:00Z",
                        "cpu": {"time": "2027-01-15T08:00:02Z", "usageCoreNanoSeconds": 3 * 10**9},
                        "memory": {"time": "2027-01-15T08:00:02Z", "workingSetBytes": 4096},
                    }
                ],
                "cpu": {"time": "2027-01-15T08:00:02Z", "usageCoreNanoSeconds": 3 * 10**9},
                "memory": {"time": "2027-01-15T08:00:02Z", "workingSetBytes": 8192},
            }
        ],
    }


def test_resource_metrics_as_metrics_server_reads_them() -> None:
    p = parse(resource_metrics(summary()))
    t = 1_800_000_000_000  # 2027-01-15T08:00:00Z in ms
    node_cpu = p.get("node_cpu_usage_seconds_total")
    assert (node_cpu.value, node_cpu.timestamp) == (12.5, t)
    assert p.get("node_memory_working_set_bytes").timestamp == t + 1000
    labels = {"container": "app", "namespace": "default", "pod": "web"}
    c = p.get("container_cpu_usage_seconds_total", **labels)
    assert (c.value, c.timestamp) == (3, t + 2000)
    assert p.get("container_memory_working_set_bytes", **labels).value == 4096
    assert p.get("container_start_time_seconds", **labels).value == (t - 3_600_000) / 1000
    assert p.get("pod_cpu_usage_seconds_total", namespace="default", pod="web").value == 3
    assert p.get("pod_memory_working_set_bytes", namespace="default", pod="web").value == 8192
    assert p.get("scrape_error").value == 0 and p.get("resource_scrape_error").value == 0
    assert p.type["container_cpu_usage_seconds_total"] == "counter"
    assert p.type["pod_memory_working_set_bytes"] == "gauge"
    assert p.help["node_cpu_usage_seconds_total"].startswith("[STABLE] Cumulative cpu time")


def test_resource_metrics_on_failure() -> None:
    p = parse(resource_metrics(None))
    assert p.get("scrape_error").value == 1
    assert p.get("resource_scrape_error").value == 1
    assert {s.name for s in p.samples} == {"scrape_error", "resource_scrape_error"}
