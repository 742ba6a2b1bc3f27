"""Prometheus text exposition (format 0.0.4) for ``/metrics/resource`` and ``/metrics``.

- :func:`resource_metrics` turns a Summary (:mod:`minikubelet.stats.summary`) into the
  series metrics-server scrapes from ``/metrics/resource``, each with the sample's
  own timestamp in milliseconds, as the kubelet writes them.
- :class:`Registry` holds the kubelet's own families (:class:`Counter`,
  :class:`Gauge`, :class:`Histogram`); :class:`KubeletMetrics` makes one with the
  kubelet's names, and :class:`TraceMetrics` keeps its runtime-operation and
  API-client families up to date from the CRI trace's records. The core feeds the
  rest through :class:`KubeletMetrics`' ``observe_*`` methods: it is the PLEG's
  ``metrics`` (:class:`minikubelet.pleg.PLEGMetrics`: relist duration and interval,
  running pods and containers) and the kubelet's (pod start duration).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from minikubelet.container.status import ContainerState
from minikubelet.cri.trace import API_SERVICE, CallRecord

if TYPE_CHECKING:
    from minikubelet.kuberuntime.manager import RuntimePod
    from minikubelet.types import PodUID

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Prometheus' default buckets (``prometheus.DefBuckets``).
DEFAULT_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# -- the text format -------------------------------------------------------------------


def escape_label_value(value: str) -> str:
    """A label value inside double quotes: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """``# HELP`` text: backslash and newline escaped."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as Go's Prometheus client writes it (``+Inf``, ``NaN``, integers bare)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def sample_line(
    name: str,
    labels: Mapping[str, str] | Sequence[tuple[str, str]],
    value: float,
    timestamp_ms: int | None = None,
) -> str:
    """One sample: ``name{k="v",...} value [timestamp]``."""
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    body = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs)
    line = f"{name}{{{body}}} {format_value(value)}" if body else f"{name} {format_value(value)}"
    return line if timestamp_ms is None else f"{line} {timestamp_ms}"


def header(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]


# -- families --------------------------------------------------------------------------


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ValueError(f"bad metric name {name!r}")
        for label in labels:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ValueError(f"bad label name {label!r}")
        self.name = name
        self.help = help_text
        self.label_names = tuple(labels)
        self._lock = threading.Lock()

    def _key(self, labels: Mapping[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.label_names):
            raise ValueError(f"{self.name} takes labels {self.label_names}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.label_names)

    def _pairs(self, key: tuple[str, ...]) -> list[tuple[str, str]]:
        return list(zip(self.label_names, key, strict=True))

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    """A value that only goes up."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labels)
        self._values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter cannot go down")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items:
            if self.label_names:
                return []  # a vector with no series yet is left out, as client_golang does
            items = [((), 0.0)]
        lines = header(self.name, self.kind, self.help)
        lines += [sample_line(self.name, self._pairs(k), v) for k, v in items]
        return lines


class Gauge(Counter):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)


class Histogram(_Family):
    """Observations counted into cumulative ``le`` buckets, with ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labels)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if len(set(bounds)) != len(bounds):
            raise ValueError("histogram buckets must differ")
        self.buckets = tuple(bounds)
        # per label set: (count per bucket, not cumulative; count; sum)
        self._series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, totals = self._series.setdefault(key, ([0] * len(self.buckets), [0.0, 0.0]))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
                    break
            totals[0] += 1
            totals[1] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return int(series[1][0]) if series else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), list(t))) for k, (c, t) in self._series.items())
        if not items:
            if self.label_names:
                return []
            items = [((), ([0] * len(self.buckets), [0.0, 0.0]))]
        lines = header(self.name, self.kind, self.help)
        for key, (counts, (count, total)) in items:
            pairs = self._pairs(key)
            running = 0
            for bound, n in zip(self.buckets, counts, strict=True):
                running += n
                lines.append(
                    sample_line(
                        f"{self.name}_bucket", [*pairs, ("le", format_value(bound))], running
                    )
                )
            lines.append(sample_line(f"{self.name}_bucket", [*pairs, ("le", "+Inf")], count))
            lines.append(sample_line(f"{self.name}_sum", pairs, total))
            lines.append(sample_line(f"{self.name}_count", pairs, count))
        return lines


class Registry:
    """Families by name, rendered in name order."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def register(self, family: _Family) -> Any:
        if family.name in self._families:
            raise ValueError(f"{family.name} is registered already")
        self._families[family.name] = family
        return family

    def get(self, name: str) -> _Family:
        return self._families[name]

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self._families):
            lines += self._families[name].render()
        return "\n".join(lines) + "\n" if lines else ""


# -- the kubelet's families (pkg/kubelet/metrics) ---------------------------------------


def exponential_buckets(start: float, factor: float, count: int) -> tuple[float, ...]:
    return tuple(start * factor**i for i in range(count))


POD_START_BUCKETS: tuple[float, ...] = (
    0.5,
    1,
    2,
    3,
    4,
    5,
    6,
    8,
    10,
    20,
    30,
    45,
    60,
    120,
    180,
    240,
    300,
    360,
    480,
    600,
    900,
    1200,
    1800,
    2700,
    3600,
)
RUNTIME_OPERATION_BUCKETS = exponential_buckets(0.005, 2.5, 14)


class KubeletMetrics:
    """The kubelet's own families in one :class:`Registry`; ``render()`` is ``/metrics``."""

    def __init__(self) -> None:
        r = self.registry = Registry()
        self.running_pods: Gauge = r.register(
            Gauge("kubelet_running_pods", "[ALPHA] Number of pods that have a running pod sandbox")
        )
        self.running_containers: Gauge = r.register(
            Gauge(
                "kubelet_running_containers",
                "[ALPHA] Number of containers currently running",
                ["container_state"],
            )
        )
        self.pod_start_duration: Histogram = r.register(
            Histogram(
                "kubelet_pod_start_duration_seconds",
                "[ALPHA] Duration in seconds from kubelet seeing a pod for the first time"
                " to the pod starting to run",
                buckets=POD_START_BUCKETS,
            )
        )
        self.pleg_relist_duration: Histogram = r.register(
            Histogram(
                "kubelet_pleg_relist_duration_seconds",
                "[ALPHA] Duration in seconds for relisting pods in PLEG.",
            )
        )
        self.pleg_relist_interval: Histogram = r.register(
            Histogram(
                "kubelet_pleg_relist_interval_seconds",
                "[ALPHA] Interval in seconds between relisting in PLEG.",
            )
        )
        self.runtime_operations: Counter = r.register(
            Counter(
                "kubelet_runtime_operations_total",
                "[ALPHA] Cumulative number of runtime operations by operation type.",
                ["operation_type"],
            )
        )
        self.runtime_operations_duration: Histogram = r.register(
            Histogram(
                "kubelet_runtime_operations_duration_seconds",
                "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type.",
                ["operation_type"],
                buckets=RUNTIME_OPERATION_BUCKETS,
            )
        )
        self.runtime_operations_errors: Counter = r.register(
            Counter(
                "kubelet_runtime_operations_errors_total",
                "[ALPHA] Cumulative number of runtime operation errors by operation type.",
                ["operation_type"],
            )
        )
        self.evictions: Counter = r.register(
            Counter(
                "kubelet_evictions",
                "[ALPHA] Cumulative number of pod evictions by eviction signal",
                ["eviction_signal"],
            )
        )
        self.rest_client_requests: Counter = r.register(
            Counter(
                "rest_client_requests_total",
                "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.",
                ["code", "host", "method"],
            )
        )

    def render(self) -> str:
        return self.registry.render()

    # -- what the core observes (PLEGMetrics, the kubelet's PodStartMetrics) -------------

    def observe_pleg_relist_interval(self, seconds: float) -> None:
        self.pleg_relist_interval.observe(seconds)

    def observe_pleg_relist_duration(self, seconds: float) -> None:
        self.pleg_relist_duration.observe(seconds)

    def observe_runtime_pods(self, pods: Mapping[PodUID, RuntimePod]) -> None:
        """The running-pod and running-container gauges from one relist, as the kubelet's
        PLEG sets them: a pod runs when one of its sandboxes is ready; containers (not
        sandboxes) count by state. A state no container is in any more reads 0."""
        counts = {state: 0 for state in ContainerState}
        running_pods = 0
        for pod in pods.values():
            for container in pod.containers:
                counts[container.state] += 1
            if any(s.state is ContainerState.RUNNING for s in pod.sandboxes):
                running_pods += 1
        for state, count in counts.items():
            self.running_containers.set(count, container_state=state.value.lower())
        self.running_pods.set(running_pods)

    def observe_pod_start(self, seconds: float) -> None:
        self.pod_start_duration.observe(seconds)


def operation_type(method: str) -> str:
    """The kubelet's ``operation_type`` for a CRI method: ``RunPodSandbox`` ->
    ``run_podsandbox``, ``ListContainerStats`` -> ``list_container_stats``."""
    name = method.replace("PodSandbox", "Podsandbox")
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


#: The trace's verbs of API requests -> the HTTP method ``rest_client`` counts.
_HTTP_METHOD = {
    "GET": "GET",
    "LIST": "GET",
    "WATCH": "GET",
    "POST": "POST",
    "PUT": "PUT",
    "PATCH": "PATCH",
    "DELETE": "DELETE",
    "HEAD": "HEAD",
}


class TraceMetrics:
    """A trace subscriber (``TraceRecorder.subscribe(tm.record)``) that counts each CRI
    call into the runtime-operation families and each API request into
    ``rest_client_requests_total`` (``host`` is the API server's host:port)."""

    def __init__(self, metrics: KubeletMetrics, api_host: str = "") -> None:
        self.metrics = metrics
        self.api_host = api_host

    def record(self, rec: CallRecord) -> None:
        if rec.service == API_SERVICE:
            self._api(rec)
            return
        op = operation_type(rec.method)
        m = self.metrics
        m.runtime_operations.inc(operation_type=op)
        m.runtime_operations_duration.observe(rec.duration_ms / 1000.0, operation_type=op)
        if rec.code != "OK":
            m.runtime_operations_errors.inc(operation_type=op)

    def _api(self, rec: CallRecord) -> None:
        verb = rec.method.split(" ", 1)[0].upper()
        method = _HTTP_METHOD.get(verb)
        if method is None:  # a watch event received, not a request
            return
        code = rec.code if rec.code.isdigit() and rec.code != "0" else "<error>"
        self.metrics.rest_client_requests.inc(code=code, host=self.api_host, method=method)


# -- /metrics/resource ------------------------------------------------------------------

_RESOURCE_HELP = {
    "container_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": (
        "gauge",
        "[STABLE] Current working set of the container in bytes",
    ),
    "container_start_time_seconds": (
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
    ),
    "node_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    ),
    "node_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the node in bytes"),
    "pod_cpu_usage_seconds_total": (
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    ),
    "pod_memory_working_set_bytes": ("gauge", "[STABLE] Current working set of the pod in bytes"),
    "resource_scrape_error": (
        "gauge",
        "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    ),
    "scrape_error": (
        "gauge",
        "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting"
        " container metrics, 0 otherwise",
    ),
}


def _ms(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def resource_metrics(summary: Mapping[str, Any] | None, scrape_error: bool = False) -> str:
    """``/metrics/resource`` for a Summary (None, or ``scrape_error``, when getting it
    failed: then only the error gauges, at 1)."""
    series: dict[str, list[str]] = {name: [] for name in _RESOURCE_HELP}

    def add(name: str, labels: Iterable[tuple[str, str]], value: float, when: str) -> None:
        series[name].append(sample_line(name, list(labels), value, _ms(when)))

    if summary is not None:
        node = summary.get("node", {})
        cpu, mem = node.get("cpu", {}), node.get("memory", {})
        if "usageCoreNanoSeconds" in cpu:
            add("node_cpu_usage_seconds_total", (), cpu["usageCoreNanoSeconds"] / 1e9, cpu["time"])
        if "workingSetBytes" in mem:
            add("node_memory_working_set_bytes", (), mem["workingSetBytes"], mem["time"])
        for pod in summary.get("pods", []):
            ref = pod["podRef"]
            pod_labels = (("namespace", ref["namespace"]), ("pod", ref["name"]))
            for c in pod.get("containers", []):
                labels = (("container", c["name"]), *pod_labels)
                ccpu, cmem = c.get("cpu", {}), c.get("memory", {})
                if "usageCoreNanoSeconds" in ccpu:
                    add(
                        "container_cpu_usage_seconds_total",
                        labels,
                        ccpu["usageCoreNanoSeconds"] / 1e9,
                        ccpu["time"],
                    )
                if "workingSetBytes" in cmem:
                    add(
                        "container_memory_working_set_bytes",
                        labels,
                        cmem["workingSetBytes"],
                        cmem["time"],
                    )
                if "startTime" in c:
                    add(
                        "container_start_time_seconds",
                        labels,
                        _ms(c["startTime"]) / 1000,
                        c["startTime"],
                    )
            pcpu, pmem = pod.get("cpu", {}), pod.get("memory", {})
            if "usageCoreNanoSeconds" in pcpu:
                add(
                    "pod_cpu_usage_seconds_total",
                    pod_labels,
                    pcpu["usageCoreNanoSeconds"] / 1e9,
                    pcpu["time"],
                )
            if "workingSetBytes" in pmem:
                add(
                    "pod_memory_working_set_bytes",
                    pod_labels,
                    pmem["workingSetBytes"],
                    pmem["time"],
                )
    failed = 1 if summary is None or scrape_error else 0
    series["resource_scrape_error"].append(sample_line("resource_scrape_error", (), failed))
    series["scrape_error"].append(sample_line("scrape_error", (), failed))

    lines: list[str] = []
    for name, (kind, help_text) in _RESOURCE_HELP.items():
        if series[name]:
            lines += header(name, kind, help_text)
            lines += series[name]
    return "\n".join(lines) + "\n"
