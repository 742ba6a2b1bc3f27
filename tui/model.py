"""What the dashboard shows, as pure functions of what the kubelet said.

Nothing here does I/O or knows about widgets: a :class:`NodeSnapshot` (pods, node
status, the time it was taken) becomes table rows, a diff of rows, header facts,
container and condition lines, trace lines. The widgets only copy these out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from minikubelet.cri.trace import CallRecord
from minikubelet.status.printer import human_duration, parse_time, pod_row

#: The pods table: kubectl's ``get pods -o wide`` columns up to NODE, then the
#: runtime handler (``spec.runtimeClassName``), shown once a pod has one.
POD_COLUMNS: Final = ("NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "RUNTIME")
RUNTIME_COLUMN: Final = len(POD_COLUMNS) - 1
DEFAULT_NAMESPACE: Final = "default"

PodKey = str
"""``namespace/name``: how the dashboard names a pod (a row key, a selection)."""
Row = tuple[str, ...]


@dataclass(frozen=True, eq=False, slots=True)
class NodeSnapshot:
    """One look at the node: its pods (v1 Pod dicts), ``/status`` and when it was taken."""

    pods: Sequence[Mapping[str, Any]]
    status: Mapping[str, Any]
    now: dt.datetime
    by_key: dict[PodKey, Mapping[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_key", {pod_key(p): p for p in self.pods})

    def pod(self, key: PodKey | None) -> Mapping[str, Any] | None:
        return None if key is None else self.by_key.get(key)


@dataclass(frozen=True, slots=True)
class Connection:
    """Whether the kubelet answers; when it does not, why and when the next try is."""

    address: str
    reachable: bool | None = None  # None: not tried yet
    reason: str = ""
    retry_in: float = 0.0


# --- reading a pod -------------------------------------------------------------------------


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _objs(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def pod_namespace(pod: Mapping[str, Any]) -> str:
    return _text(_obj(pod.get("metadata")).get("namespace")) or DEFAULT_NAMESPACE


def pod_name(pod: Mapping[str, Any]) -> str:
    return _text(_obj(pod.get("metadata")).get("name"))


def pod_key(pod: Mapping[str, Any]) -> PodKey:
    return f"{pod_namespace(pod)}/{pod_name(pod)}"


def split_key(key: PodKey) -> tuple[str, str]:
    namespace, _, name = key.partition("/")
    return namespace, name


def runtime_handler(pod: Mapping[str, Any]) -> str:
    return _text(_obj(pod.get("spec")).get("runtimeClassName"))


def pod_cells(pod: Mapping[str, Any], now: dt.datetime) -> Row:
    """One row of the pods table, in :data:`POD_COLUMNS` order."""
    row = pod_row(pod, now)
    return (
        row["NAME"],
        row["READY"],
        row["STATUS"],
        row["RESTARTS"],
        row["AGE"],
        row["IP"],
        row["NODE"],
        runtime_handler(pod),
    )


def matches(key: PodKey, needle: str) -> bool:
    """The pods filter: a case-insensitive substring of ``namespace/name``."""
    return not needle or needle.lower() in key.lower()


def pod_rows(snapshot: NodeSnapshot, needle: str = "") -> dict[PodKey, Row]:
    """The rows the pods table should show, keyed by pod."""
    return {
        key: pod_cells(pod, snapshot.now)
        for key, pod in snapshot.by_key.items()
        if matches(key, needle)
    }


@dataclass(frozen=True, slots=True)
class RowDiff:
    """What turns one set of rows into another, cell by cell."""

    removed: list[PodKey]
    added: list[tuple[PodKey, Row]]
    changed: list[tuple[PodKey, int, str]]  # (row, column index, new value)

    def __bool__(self) -> bool:
        return bool(self.removed or self.added or self.changed)


def diff_rows(old: Mapping[PodKey, Row], new: Mapping[PodKey, Row]) -> RowDiff:
    removed = [key for key in old if key not in new]
    added: list[tuple[PodKey, Row]] = []
    changed: list[tuple[PodKey, int, str]] = []
    for key, cells in new.items():
        before = old.get(key)
        if before is None:
            added.append((key, cells))
        elif before != cells:
            changed.extend(
                (key, index, value)
                for index, (value, was) in enumerate(zip(cells, before, strict=True))
                if value != was
            )
    return RowDiff(removed, added, changed)


def status_style(word: str) -> str:
    """How k9s colours a STATUS word: healthy, done, on its way, in trouble."""
    if word in ("Running",):
        return "green"
    if word in ("Completed", "Succeeded"):
        return "dim"
    if word == "Terminating":
        return "magenta"
    if word in ("Pending", "ContainerCreating", "PodInitializing") or word.startswith("Init:"):
        if word.startswith("Init:") and not word[5:].replace("/", "").isdigit():
            return "bold red"
        return "yellow"
    return "bold red"


# --- the node header -----------------------------------------------------------------------


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def node_facts(snapshot: NodeSnapshot) -> list[tuple[str, str]]:
    """(label, value) pairs for the header, from what ``/status`` reports."""
    status = snapshot.status
    runtime = _obj(status.get("runtime"))
    facts = [("node", _text(status.get("nodeName")) or "?")]
    name, version = _text(runtime.get("name")), _text(runtime.get("version"))
    facts.append(("runtime", f"{name} {version}".strip() or "?"))
    pods = _count(status.get("pods"))
    facts.append(("pods", str(pods if pods is not None else len(snapshot.pods))))
    containers = _count(status.get("containers"))
    if containers is not None:
        facts.append(("containers", str(containers)))
    phases = _obj(status.get("phases"))
    if phases:
        facts.append(("phases", " ".join(f"{k} {v}" for k, v in sorted(phases.items()))))
    pleg = _obj(status.get("pleg"))
    if "healthy" in pleg:
        facts.append(("pleg", "healthy" if pleg.get("healthy") else "UNHEALTHY"))
    api = _obj(status.get("apiServer"))
    if api:
        facts.append(("api", _text(api.get("server")) or "?"))
        ready = _text(api.get("nodeReady")) or "Unknown"
        facts.append(("ready", "Ready" if ready == "True" else f"NOT READY ({ready})"))
        renewed, now = api.get("leaseRenewed"), status.get("time")
        if isinstance(renewed, int | float) and isinstance(now, int | float):
            facts.append(("lease", f"renewed {human_duration(max(0.0, now - renewed))} ago"))
        else:
            facts.append(("lease", "not renewed yet"))
    for label in ("cpu", "memory"):
        for source in ("allocatable", "capacity"):
            value = _obj(status.get(source)).get(label)
            if value is not None:
                facts.append((label, str(value)))
                break
    return facts


def seconds(delay: float) -> str:
    """A retry delay for people: ``0.5s``, ``2s``."""
    return f"{delay:.1f}s" if delay < 1 else f"{delay:.0f}s"


def connection_line(connection: Connection) -> str:
    if connection.reachable is None:
        return f"connecting to {connection.address} …"
    if connection.reachable:
        return f"connected to {connection.address}"
    retry = (
        f" — retrying in {seconds(connection.retry_in)}" if connection.retry_in else " — retrying"
    )
    reason = f" ({connection.reason})" if connection.reason else ""
    return f"kubelet not reachable at {connection.address}{retry}{reason}"


# --- one pod in detail ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainerLine:
    name: str
    kind: str  # init, sidecar, app, ephemeral
    image: str
    state: str  # Waiting, Running, Terminated, or "" when unknown yet
    reason: str
    exit_code: str
    ready: str
    restarts: str
    since: str


def container_names(pod: Mapping[str, Any]) -> list[str]:
    """Every container a log can be read from, in the order a person expects."""
    spec = _obj(pod.get("spec"))
    names = []
    for key in ("containers", "initContainers", "ephemeralContainers"):
        names += [_text(c.get("name")) for c in _objs(spec.get(key)) if _text(c.get("name"))]
    return names


def _state(status: Mapping[str, Any], now: dt.datetime) -> tuple[str, str, str, str]:
    """(state, reason, exit code, since) of a container status."""
    state = _obj(status.get("state"))
    if "running" in state:
        started = parse_time(_obj(state["running"]).get("startedAt"))
        return "Running", "", "", human_duration(now - started) if started else ""
    if "terminated" in state:
        term = _obj(state["terminated"])
        finished = parse_time(term.get("finishedAt"))
        since = human_duration(now - finished) if finished else ""
        return "Terminated", _text(term.get("reason")), str(term.get("exitCode", "")), since
    if "waiting" in state:
        return "Waiting", _text(_obj(state["waiting"]).get("reason")), "", ""
    return "", "", "", ""


def container_lines(pod: Mapping[str, Any], now: dt.datetime) -> list[ContainerLine]:
    spec = _obj(pod.get("spec"))
    status = _obj(pod.get("status"))
    lines: list[ContainerLine] = []
    for spec_key, status_key in (
        ("initContainers", "initContainerStatuses"),
        ("containers", "containerStatuses"),
        ("ephemeralContainers", "ephemeralContainerStatuses"),
    ):
        statuses = {_text(s.get("name")): s for s in _objs(status.get(status_key))}
        for container in _objs(spec.get(spec_key)):
            name = _text(container.get("name"))
            if spec_key == "initContainers":
                kind = "sidecar" if container.get("restartPolicy") == "Always" else "init"
            else:
                kind = "app" if spec_key == "containers" else "ephemeral"
            found = statuses.get(name, {})
            state, reason, exit_code, since = _state(found, now)
            lines.append(
                ContainerLine(
                    name=name,
                    kind=kind,
                    image=_text(container.get("image")),
                    state=state or "Waiting",
                    reason=reason,
                    exit_code=exit_code,
                    ready="true" if found.get("ready") is True else "false",
                    restarts=str(found.get("restartCount", 0)),
                    since=since,
                )
            )
    return lines


def condition_lines(pod: Mapping[str, Any], now: dt.datetime) -> list[tuple[str, str, str, str]]:
    """(type, status, reason, age of the last transition) of each pod condition."""
    lines = []
    for condition in _objs(_obj(pod.get("status")).get("conditions")):
        when = parse_time(condition.get("lastTransitionTime"))
        lines.append(
            (
                _text(condition.get("type")),
                _text(condition.get("status")),
                _text(condition.get("reason")),
                human_duration(now - when) if when else "",
            )
        )
    return lines


def pod_facts(pod: Mapping[str, Any]) -> list[tuple[str, str]]:
    meta = _obj(pod.get("metadata"))
    spec = _obj(pod.get("spec"))
    status = _obj(pod.get("status"))
    facts = [
        ("Namespace", pod_namespace(pod)),
        ("Node", _text(spec.get("nodeName")) or "<none>"),
        ("Phase", _text(status.get("phase")) or "<unknown>"),
        ("IP", _text(status.get("podIP")) or "<none>"),
        ("Start Time", _text(status.get("startTime")) or "<none>"),
        ("QoS Class", _text(status.get("qosClass")) or "<none>"),
        ("Source", _text(_obj(meta.get("annotations")).get("kubernetes.io/config.source"))),
    ]
    if runtime_handler(pod):
        facts.append(("Runtime Class", runtime_handler(pod)))
    if _text(status.get("reason")):
        facts.append(("Reason", _text(status.get("reason"))))
    if _text(status.get("message")):
        facts.append(("Message", _text(status.get("message"))))
    return [(label, value) for label, value in facts if value]


def events_about(pod: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> list[Any]:
    """The node's events that are about this pod (by UID, else by namespace and name)."""
    uid = _text(_obj(pod.get("metadata")).get("uid"))
    name, namespace = pod_name(pod), pod_namespace(pod)
    found = []
    for event in events:
        involved = _obj(event.get("involvedObject"))
        if uid and _text(involved.get("uid")):
            if involved.get("uid") == uid:
                found.append(event)
        elif (
            involved.get("name") == name
            and (_text(involved.get("namespace")) or DEFAULT_NAMESPACE) == namespace
        ):
            found.append(event)
    return found


def event_lines(
    events: Iterable[Mapping[str, Any]], now: dt.datetime
) -> list[tuple[str, str, str, str]]:
    """(type, reason, age, message) of each event, oldest first as kubectl describe lists them."""
    lines = []
    for event in events:
        last = parse_time(event.get("lastTimestamp")) or parse_time(event.get("eventTime"))
        age = human_duration(now - last) if last else "<unknown>"
        count = event.get("count")
        if isinstance(count, int) and count > 1:
            first = parse_time(event.get("firstTimestamp"))
            if first is not None:
                age = f"{age} (x{count} over {human_duration(now - first)})"
        lines.append(
            (_text(event.get("type")), _text(event.get("reason")), age, _text(event.get("message")))
        )
    return lines


# --- the CRI trace -------------------------------------------------------------------------


def trace_matches(record: CallRecord, needle: str) -> bool:
    """The trace filter: a case-insensitive substring of the call's ``namespace/name``."""
    return not needle or needle.lower() in record.pod.lower()


def trace_subject(record: CallRecord) -> str:
    """pod/container of a call, or a short id when the names are unknown."""
    who = record.pod or (record.pod_sandbox_id[:13] if record.pod_sandbox_id else "")
    if record.container:
        who = f"{who}/{record.container}" if who else record.container
    elif record.container_id and not record.pod:
        who = record.container_id[:13]
    return who


def trace_clock(record: CallRecord, tz: dt.tzinfo | None) -> str:
    when = dt.datetime.fromtimestamp(record.time, tz)
    return when.strftime("%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


#: (header, width) of the trace columns; a cell gets ``width - 1`` characters and a gap.
#: The code comes last, unpadded, with the error (if any) after it.
TRACE_COLUMNS: Final = (
    ("TIME", 13),
    ("SERVICE", 15),
    ("METHOD", 25),
    ("POD/CONTAINER", 36),
    ("LATENCY", 10),
    ("CODE", 0),
)


def trace_cells(record: CallRecord, tz: dt.tzinfo | None) -> tuple[str, ...]:
    """One call's cells, in :data:`TRACE_COLUMNS` order."""
    return (
        trace_clock(record, tz),
        record.service,
        record.method,
        trace_subject(record),
        f"{record.duration_ms:.2f}ms",
        record.code,
    )
