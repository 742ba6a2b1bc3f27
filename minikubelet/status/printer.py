"""Pods as kubectl prints them: ``kubectl get pods`` rows and ``kubectl describe pod``.

Everything here is a pure function of a v1 Pod dict (with its ``status``) and the
time the caller says it is. The rules are kubectl's:

* :func:`status_word` and the READY / RESTARTS cells are ``printPod``
  (``pkg/printers/internalversion/printers.go``): the phase, or the pod's reason;
  ``Init:N/M``, ``Init:<reason>``, ``Init:ExitCode:N`` or ``Init:Signal:N`` while an
  init container has not finished (a started sidecar counts as finished, and as a
  container in READY); otherwise the reason of the last regular container (in status
  order) that is waiting or terminated; ``Completed`` turns back into ``Running`` (or
  ``NotReady``) while a container still runs ready; ``Terminating`` once the pod has a
  deletion timestamp and is not terminal, ``Unknown`` when the node was lost. RESTARTS
  adds ``(<age> ago)`` of the newest ``lastState.terminated.finishedAt``.
* :func:`human_duration` is apimachinery's ``duration.HumanDuration``, used for AGE,
  for the restart age and for event ages.
* :func:`format_table` aligns like kubectl's tab writer (Go ``text/tabwriter`` with
  minimum width 6 and padding 3; the last column is not padded).
* :func:`describe_pod` follows ``describePod`` (``k8s.io/kubectl/pkg/describe``):
  the same sections in the same order, aligned by a tab writer with padding 2, the
  events table aligned on its own. Times are shown in UTC.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from minikubelet.api.pod import Pod
from minikubelet.status.qos import qos_class

#: ``kubectl get pods`` columns, and the extra ones of ``-o wide``.
COLUMNS: Final = ("NAME", "READY", "STATUS", "RESTARTS", "AGE")
WIDE_COLUMNS: Final = (*COLUMNS, "IP", "NODE", "NOMINATED NODE", "READINESS GATES")

#: The pod reason the node lifecycle controller sets for a pod on an unreachable node.
NODE_UNREACHABLE_POD_REASON: Final = "NodeLost"
_LAST_APPLIED: Final = "kubectl.kubernetes.io/last-applied-configuration"


# --- reading a pod dict --------------------------------------------------------------------


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _objs(value: object) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_time(value: object) -> dt.datetime | None:
    """An RFC 3339 timestamp (or a datetime) as an aware datetime; None when unset or bad."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# --- durations -----------------------------------------------------------------------------


def human_duration(seconds: float | dt.timedelta) -> str:
    """apimachinery's ``HumanDuration``: about two significant figures of a duration.

    Under 2 minutes in seconds (``45s``, ``119s``); under 10 minutes as minutes and
    seconds (``2m``, ``5m30s``); under 3 hours in minutes (``95m``); under 8 hours as
    hours and minutes (``3h``, ``7h15m``); under 2 days in hours (``36h``); under 8 days
    as days and hours (``2d``, ``5d6h``); under 2 years in days (``400d``); under 8 years
    as years and days (``2y``, ``3y45d``); then years. A clock skew up to a second reads
    as ``0s``; earlier than that is ``<invalid>``.
    """
    if isinstance(seconds, dt.timedelta):
        nanos = (
            seconds.days * 86_400_000_000_000
            + seconds.seconds * 1_000_000_000
            + seconds.microseconds * 1000
        )
    else:
        nanos = int(seconds * 1_000_000_000)
    whole = int(nanos / 1_000_000_000)  # Go's int(d.Seconds()) truncates toward zero
    if whole < -1:
        return "<invalid>"
    if whole < 0:
        return "0s"
    if whole < 60 * 2:
        return f"{whole}s"
    minutes = nanos // 60_000_000_000
    if minutes < 10:
        rest = (nanos // 1_000_000_000) % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = nanos // 3_600_000_000_000
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if rest == 0 else f"{years}y{rest}d"
    return f"{hours // 24 // 365}y"


def _since(value: object, now: dt.datetime) -> str:
    """``translateTimestampSince``: the age of a timestamp, ``<unknown>`` when unset."""
    when = parse_time(value)
    if when is None:
        return "<unknown>"
    return human_duration(now - when)


# --- kubectl get pods ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodSummary:
    """What ``printPod`` derives from a pod before it formats the cells."""

    ready: int
    total: int
    status: str
    restarts: int
    last_restart: dt.datetime | None


def _is_sidecar(spec: Mapping[str, Any] | None) -> bool:
    return spec is not None and spec.get("restartPolicy") == "Always"


def _condition_true(status: Mapping[str, Any], kind: str) -> bool:
    return any(
        c.get("type") == kind and c.get("status") == "True" for c in _objs(status.get("conditions"))
    )


def _later(current: dt.datetime | None, candidate: object) -> dt.datetime | None:
    when = parse_time(candidate)
    if when is None:
        return current
    return when if current is None or when > current else current


def _terminated_word(terminated: Mapping[str, Any], prefix: str) -> str:
    reason = _text(terminated.get("reason"))
    if reason:
        return prefix + reason
    signal = _int(terminated.get("signal"))
    if signal != 0:
        return f"{prefix}Signal:{signal}"
    return f"{prefix}ExitCode:{_int(terminated.get('exitCode'))}"


def summarize_pod(pod: Mapping[str, Any]) -> PodSummary:
    """READY, STATUS and RESTARTS of ``kubectl get pods``, uncooked."""
    meta = _obj(pod.get("metadata"))
    spec = _obj(pod.get("spec"))
    status = _obj(pod.get("status"))
    init_specs = {_text(c.get("name")): c for c in _objs(spec.get("initContainers"))}
    total = len(_objs(spec.get("containers"))) + sum(
        1 for c in init_specs.values() if _is_sidecar(c)
    )
    ready = 0
    restarts = 0
    sidecar_restarts = 0
    last_restart: dt.datetime | None = None
    last_sidecar_restart: dt.datetime | None = None

    phase = _text(status.get("phase"))
    word = _text(status.get("reason")) or phase
    for condition in _objs(status.get("conditions")):
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            word = "SchedulingGated"

    initializing = False
    for index, container in enumerate(_objs(status.get("initContainerStatuses"))):
        count = _int(container.get("restartCount"))
        restarts += count
        finished = _obj(_obj(container.get("lastState")).get("terminated")).get("finishedAt")
        last_restart = _later(last_restart, finished)
        sidecar = _is_sidecar(init_specs.get(_text(container.get("name"))))
        if sidecar:
            sidecar_restarts += count
            last_sidecar_restart = _later(last_sidecar_restart, finished)
        state = _obj(container.get("state"))
        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if isinstance(terminated, Mapping) and _int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and container.get("started") is True:
            if container.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, Mapping):
            word = _terminated_word(terminated, "Init:")
        elif (
            isinstance(waiting, Mapping)
            and _text(waiting.get("reason"))
            and waiting.get("reason") != "PodInitializing"
        ):
            word = "Init:" + _text(waiting.get("reason"))
        else:
            word = f"Init:{index}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(status, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for container in reversed(_objs(status.get("containerStatuses"))):
            restarts += _int(container.get("restartCount"))
            finished = _obj(_obj(container.get("lastState")).get("terminated")).get("finishedAt")
            last_restart = _later(last_restart, finished)
            state = _obj(container.get("state"))
            waiting = state.get("waiting")
            terminated = state.get("terminated")
            if isinstance(waiting, Mapping) and _text(waiting.get("reason")):
                word = _text(waiting.get("reason"))
            elif isinstance(terminated, Mapping):
                word = _terminated_word(terminated, "")
            elif container.get("ready") is True and isinstance(state.get("running"), Mapping):
                has_running = True
                ready += 1
        if word == "Completed" and has_running:
            word = "Running" if _condition_true(status, "Ready") else "NotReady"

    if meta.get("deletionTimestamp"):
        if _text(status.get("reason")) == NODE_UNREACHABLE_POD_REASON:
            word = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            word = "Terminating"
    return PodSummary(ready, total, word, restarts, last_restart)


def status_word(pod: Mapping[str, Any]) -> str:
    """The STATUS column of ``kubectl get pods`` for this pod."""
    return summarize_pod(pod).status


def pod_row(pod: Mapping[str, Any], now: dt.datetime) -> dict[str, str]:
    """One ``kubectl get pods -o wide`` row, keyed by column header."""
    meta = _obj(pod.get("metadata"))
    spec = _obj(pod.get("spec"))
    status = _obj(pod.get("status"))
    summary = summarize_pod(pod)
    restarts = str(summary.restarts)
    if summary.restarts != 0 and summary.last_restart is not None:
        restarts = f"{summary.restarts} ({human_duration(now - summary.last_restart)} ago)"
    ips = _objs(status.get("podIPs"))
    gates = [_text(g.get("conditionType")) for g in _objs(spec.get("readinessGates"))]
    gates_cell = "<none>"
    if gates:
        passed = sum(1 for gate in gates if _condition_true(status, gate))
        gates_cell = f"{passed}/{len(gates)}"
    return {
        "NAME": _text(meta.get("name")),
        "READY": f"{summary.ready}/{summary.total}",
        "STATUS": summary.status,
        "RESTARTS": restarts,
        "AGE": _since(meta.get("creationTimestamp"), now),
        "IP": (_text(ips[0].get("ip")) if ips else "") or "<none>",
        "NODE": _text(spec.get("nodeName")) or "<none>",
        "NOMINATED NODE": _text(status.get("nominatedNodeName")) or "<none>",
        "READINESS GATES": gates_cell,
    }


def tabwrite(text: str, *, minwidth: int, padding: int) -> str:
    """Go's ``text/tabwriter`` (left-aligned, spaces): align tab-separated cells in columns.

    A column block is a run of consecutive lines that have a cell in that column; the
    text after a line's last tab is not part of any column. A cell is padded to the
    widest cell of its block plus ``padding``, and to at least ``minwidth``.
    """
    raw = text.split("\n")
    newline_at_end = text.endswith("\n")
    if newline_at_end:
        raw.pop()
    lines = [line.split("\t") for line in raw]
    widths: list[int] = []
    out: list[str] = []

    def write(first: int, last: int) -> None:
        for cells in lines[first:last]:
            parts = [
                cell.ljust(widths[j]) if j < len(cells) - 1 and j < len(widths) else cell
                for j, cell in enumerate(cells)
            ]
            out.append("".join(parts))

    def block(first: int, last: int) -> None:
        column = len(widths)
        this = first
        while this < last:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(first, this)
            first = this
            width = minwidth
            while this < last and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            block(first, this)
            widths.pop()
            first = this
        write(first, last)

    block(0, len(lines))
    return "\n".join(out) + ("\n" if newline_at_end else "")


def format_table(rows: Iterable[Mapping[str, str]], wide: bool = False) -> str:
    """Rows as ``kubectl get pods`` prints them (``-o wide`` when ``wide``); "" for none."""
    columns = WIDE_COLUMNS if wide else COLUMNS
    rows = list(rows)
    if not rows:
        return ""
    lines = ["\t".join(columns)]
    lines.extend("\t".join(str(row.get(column, "")) for column in columns) for row in rows)
    return tabwrite("\n".join(lines) + "\n", minwidth=6, padding=3)


# --- kubectl describe pod ------------------------------------------------------------------


def _rfc1123z(value: object) -> str:
    when = parse_time(value)
    if when is None:
        return "Mon, 01 Jan 0001 00:00:00 +0000"  # Go's zero time, as kubectl prints it
    return when.astimezone(dt.UTC).strftime("%a, %d %b %Y %H:%M:%S %z")


class _Writer:
    """kubectl's PrefixWriter: two spaces per level, into a tab-writer buffer."""

    def __init__(self) -> None:
        self.flushed: list[str] = []
        self.buffer: list[str] = []

    def write(self, level: int, text: str) -> None:
        self.buffer.append("  " * level + text)

    def flush(self) -> None:
        self.flushed.append(tabwrite("".join(self.buffer), minwidth=0, padding=2))
        self.buffer = []

    def text(self) -> str:
        self.flush()
        return "".join(self.flushed)


def _multiline(
    w: _Writer, title: str, items: Mapping[str, str], line: Callable[[str, str], str]
) -> None:
    w.write(0, f"{title}:\t")
    if not items:
        w.write(0, "<none>\n")
        return
    for index, key in enumerate(sorted(items)):
        if index:
            w.write(0, "\t")
        w.write(0, line(key, items[key]) + "\n")


def _labels(w: _Writer, title: str, labels: Mapping[str, str]) -> None:
    _multiline(w, title, labels, lambda k, v: f"{k}={v}")


def _annotations(w: _Writer, annotations: Mapping[str, str]) -> None:
    shown = {k: v for k, v in annotations.items() if k != _LAST_APPLIED}
    _multiline(w, "Annotations", shown, lambda k, v: f"{k}: {v}")


def _describe_probe(probe: Mapping[str, Any]) -> str:
    """kubectl's ``DescribeProbe``."""
    attrs = (
        f"delay={_int(probe.get('initialDelaySeconds'))}s "
        f"timeout={_int(probe.get('timeoutSeconds')) or 1}s "
        f"period={_int(probe.get('periodSeconds')) or 10}s "
        f"#success={_int(probe.get('successThreshold')) or 1} "
        f"#failure={_int(probe.get('failureThreshold')) or 3}"
    )
    if isinstance(probe.get("exec"), Mapping):
        command = [str(c) for c in _obj(probe["exec"]).get("command") or []]
        return f"exec [{' '.join(command)}] {attrs}"
    if isinstance(probe.get("httpGet"), Mapping):
        get = _obj(probe["httpGet"])
        scheme = _text(get.get("scheme")).lower() or "http"
        host = _text(get.get("host"))
        port = get.get("port", "")
        hostport = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return f"http-get {scheme}://{hostport}{_text(get.get('path'))} {attrs}"
    if isinstance(probe.get("tcpSocket"), Mapping):
        sock = _obj(probe["tcpSocket"])
        return f"tcp-socket {_text(sock.get('host'))}:{sock.get('port', '')} {attrs}"
    if isinstance(probe.get("grpc"), Mapping):
        grpc = _obj(probe["grpc"])
        return f"grpc <pod>:{grpc.get('port', '')} {_text(grpc.get('service'))} {attrs}"
    return f"unknown {attrs}"


def _describe_state(w: _Writer, name: str, state: Mapping[str, Any]) -> None:
    running, waiting = state.get("running"), state.get("waiting")
    terminated = state.get("terminated")
    if isinstance(running, Mapping):
        w.write(2, f"{name}:\tRunning\n")
        w.write(3, f"Started:\t{_rfc1123z(running.get('startedAt'))}\n")
    elif isinstance(waiting, Mapping):
        w.write(2, f"{name}:\tWaiting\n")
        if _text(waiting.get("reason")):
            w.write(3, f"Reason:\t{waiting['reason']}\n")
    elif isinstance(terminated, Mapping):
        w.write(2, f"{name}:\tTerminated\n")
        if _text(terminated.get("reason")):
            w.write(3, f"Reason:\t{terminated['reason']}\n")
        if _text(terminated.get("message")):
            w.write(3, f"Message:\t{terminated['message']}\n")
        w.write(3, f"Exit Code:\t{_int(terminated.get('exitCode'))}\n")
        if _int(terminated.get("signal")) > 0:
            w.write(3, f"Signal:\t{_int(terminated.get('signal'))}\n")
        w.write(3, f"Started:\t{_rfc1123z(terminated.get('startedAt'))}\n")
        w.write(3, f"Finished:\t{_rfc1123z(terminated.get('finishedAt'))}\n")
    else:
        w.write(2, f"{name}:\tWaiting\n")


def _describe_resources(w: _Writer, resources: Mapping[str, Any]) -> None:
    for title, key in (("Limits", "limits"), ("Requests", "requests")):
        values = _obj(resources.get(key))
        if values:
            w.write(2, f"{title}:\n")
        for name in sorted(values):
            w.write(3, f"{name}:\t{values[name]}\n")


def _describe_env(w: _Writer, env: Sequence[Mapping[str, Any]]) -> None:
    w.write(2, "Environment:" + ("" if env else "\t<none>") + "\n")
    for var in env:
        name = _text(var.get("name"))
        source = _obj(var.get("valueFrom"))
        if not source:
            for index, piece in enumerate(_text(var.get("value")).split("\n")):
                w.write(3, f"{name}:\t{piece}\n" if index == 0 else f"\t{piece}\n")
        elif isinstance(source.get("fieldRef"), Mapping):
            ref = _obj(source["fieldRef"])
            api = _text(ref.get("apiVersion")) or "v1"
            w.write(3, f"{name}:\t ({api}:{_text(ref.get('fieldPath'))})\n")
        elif isinstance(source.get("resourceFieldRef"), Mapping):
            w.write(3, f"{name}:\t ({_text(_obj(source['resourceFieldRef']).get('resource'))})\n")
        elif isinstance(source.get("secretKeyRef"), Mapping):
            ref = _obj(source["secretKeyRef"])
            optional = "true" if ref.get("optional") is True else "false"
            w.write(
                3,
                f"{name}:\t<set to the key '{_text(ref.get('key'))}' in secret "
                f"'{_text(ref.get('name'))}'>\tOptional: {optional}\n",
            )
        elif isinstance(source.get("configMapKeyRef"), Mapping):
            ref = _obj(source["configMapKeyRef"])
            optional = "true" if ref.get("optional") is True else "false"
            w.write(
                3,
                f"{name}:\t<set to the key '{_text(ref.get('key'))}' of config map "
                f"'{_text(ref.get('name'))}'>\tOptional: {optional}\n",
            )


def _describe_mounts(w: _Writer, mounts: Sequence[Mapping[str, Any]]) -> None:
    w.write(2, "Mounts:" + ("" if mounts else "\t<none>") + "\n")
    for mount in sorted(mounts, key=lambda m: _text(m.get("mountPath"))):
        flags = ["ro" if mount.get("readOnly") is True else "rw"]
        if _text(mount.get("subPath")):
            flags.append(f"path={json.dumps(mount['subPath'])}")
        path, name = _text(mount.get("mountPath")), _text(mount.get("name"))
        w.write(3, f"{path} from {name} ({','.join(flags)})\n")


def _ports(ports: Sequence[Mapping[str, Any]], key: str) -> str:
    return ", ".join(f"{_int(p.get(key))}/{_text(p.get('protocol')) or 'TCP'}" for p in ports)


def _describe_containers(
    w: _Writer,
    label: str,
    containers: Sequence[Mapping[str, Any]],
    statuses: Sequence[Mapping[str, Any]],
) -> None:
    by_name = {_text(s.get("name")): s for s in statuses}
    w.write(0, f"{label}:" + ("" if containers else " <none>") + "\n")
    for container in containers:
        name = _text(container.get("name"))
        status = by_name.get(name)
        w.write(1, f"{name}:\n")
        if status is not None:
            w.write(2, f"Container ID:\t{_text(status.get('containerID'))}\n")
        w.write(2, f"Image:\t{_text(container.get('image'))}\n")
        if status is not None:
            w.write(2, f"Image ID:\t{_text(status.get('imageID'))}\n")
        ports = _objs(container.get("ports"))
        for title, key in (("Port", "containerPort"), ("Host Port", "hostPort")):
            text = _ports(ports, key)
            if "," in text:
                w.write(2, f"{title}s:\t{text}\n")
            else:
                w.write(2, f"{title}:\t{text or '<none>'}\n")
        for title, key in (("Command", "command"), ("Args", "args")):
            words = container.get(key)
            if isinstance(words, list) and words:
                w.write(2, f"{title}:\n")
                for word in words:
                    for piece in str(word).split("\n"):
                        w.write(3, f"{piece}\n")
        if status is not None:
            _describe_state(w, "State", _obj(status.get("state")))
            last = _obj(status.get("lastState"))
            if isinstance(last.get("terminated"), Mapping):
                _describe_state(w, "Last State", last)
            w.write(2, f"Ready:\t{'True' if status.get('ready') is True else 'False'}\n")
            w.write(2, f"Restart Count:\t{_int(status.get('restartCount'))}\n")
        _describe_resources(w, _obj(container.get("resources")))
        for title, key in (
            ("Liveness", "livenessProbe"),
            ("Readiness", "readinessProbe"),
            ("Startup", "startupProbe"),
        ):
            probe = container.get(key)
            if isinstance(probe, Mapping):
                w.write(2, f"{title}:\t{_describe_probe(probe)}\n")
        _describe_env(w, _objs(container.get("env")))
        _describe_mounts(w, _objs(container.get("volumeMounts")))


def _describe_volumes(w: _Writer, volumes: Sequence[Mapping[str, Any]]) -> None:
    if not volumes:
        w.write(0, "Volumes:\t<none>\n")
        return
    w.write(0, "Volumes:\n")
    for volume in volumes:
        w.write(1, f"{_text(volume.get('name'))}:\n")
        if isinstance(volume.get("hostPath"), Mapping):
            source = _obj(volume["hostPath"])
            w.write(2, "Type:\tHostPath (bare host directory volume)\n")
            w.write(2, f"Path:\t{_text(source.get('path'))}\n")
            w.write(2, f"HostPathType:\t{_text(source.get('type'))}\n")
        elif isinstance(volume.get("emptyDir"), Mapping):
            source = _obj(volume["emptyDir"])
            w.write(2, "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n")
            w.write(2, f"Medium:\t{_text(source.get('medium'))}\n")
            w.write(2, f"SizeLimit:\t{source.get('sizeLimit') or '<unset>'}\n")
        elif isinstance(volume.get("configMap"), Mapping):
            source = _obj(volume["configMap"])
            w.write(2, "Type:\tConfigMap (a volume populated by a ConfigMap)\n")
            w.write(2, f"Name:\t{_text(source.get('name'))}\n")
            w.write(2, f"Optional:\t{'true' if source.get('optional') is True else 'false'}\n")
        elif isinstance(volume.get("secret"), Mapping):
            source = _obj(volume["secret"])
            w.write(2, "Type:\tSecret (a volume populated by a Secret)\n")
            w.write(2, f"SecretName:\t{_text(source.get('secretName'))}\n")
            w.write(2, f"Optional:\t{'true' if source.get('optional') is True else 'false'}\n")
        elif isinstance(volume.get("persistentVolumeClaim"), Mapping):
            source = _obj(volume["persistentVolumeClaim"])
            w.write(
                2,
                "Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim "
                "in the same namespace)\n",
            )
            w.write(2, f"ClaimName:\t{_text(source.get('claimName'))}\n")
            w.write(2, f"ReadOnly:\t{'true' if source.get('readOnly') is True else 'false'}\n")
        else:
            w.write(2, "<unknown>\n")


def _describe_events(w: _Writer, events: Sequence[Mapping[str, Any]], now: dt.datetime) -> None:
    if not events:
        w.write(0, "Events:\t<none>\n")
        return
    w.flush()
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    ordered = sorted(events, key=lambda e: parse_time(e.get("lastTimestamp")) or epoch)
    w.write(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n")
    w.write(1, "----\t------\t----\t----\t-------\n")
    for event in ordered:
        first = event.get("eventTime") or event.get("firstTimestamp")
        age = _since(first, now)
        series = _obj(event.get("series"))
        count = _int(event.get("count"))
        if series:
            last = _since(series.get("lastObservedTime"), now)
            age = f"{last} (x{_int(series.get('count'))} over {age})"
        elif count > 1:
            age = f"{_since(event.get('lastTimestamp'), now)} (x{count} over {age})"
        source = _text(_obj(event.get("source")).get("component")) or _text(
            event.get("reportingComponent") or event.get("reportingController")
        )
        message = _text(event.get("message")).strip()
        kind, reason = _text(event.get("type")), _text(event.get("reason"))
        w.write(1, f"{kind}\t{reason}\t{age}\t{source}\t{message}\n")


def describe_pod(
    pod: Mapping[str, Any],
    events: Sequence[Mapping[str, Any]] = (),
    *,
    now: dt.datetime | None = None,
) -> str:
    """``kubectl describe pod`` for a pod dict and its v1 events.

    ``now`` dates the ages (Terminating, events); it defaults to the current time, the
    one impurity here, so tests and snapshots pass it.
    """
    now = now or dt.datetime.now(dt.UTC)
    meta = _obj(pod.get("metadata"))
    spec = _obj(pod.get("spec"))
    status = _obj(pod.get("status"))
    w = _Writer()
    w.write(0, f"Name:\t{_text(meta.get('name'))}\n")
    w.write(0, f"Namespace:\t{_text(meta.get('namespace')) or 'default'}\n")
    if isinstance(spec.get("priority"), int):
        w.write(0, f"Priority:\t{spec['priority']}\n")
    if _text(spec.get("priorityClassName")):
        w.write(0, f"Priority Class Name:\t{spec['priorityClassName']}\n")
    if _text(spec.get("runtimeClassName")):
        w.write(0, f"Runtime Class Name:\t{spec['runtimeClassName']}\n")
    if _text(spec.get("serviceAccountName")):
        w.write(0, f"Service Account:\t{spec['serviceAccountName']}\n")
    node = _text(spec.get("nodeName"))
    w.write(0, f"Node:\t{node}/{_text(status.get('hostIP'))}\n" if node else "Node:\t<none>\n")
    if status.get("startTime"):
        w.write(0, f"Start Time:\t{_rfc1123z(status.get('startTime'))}\n")
    _labels(w, "Labels", {str(k): str(v) for k, v in _obj(meta.get("labels")).items()})
    _annotations(w, {str(k): str(v) for k, v in _obj(meta.get("annotations")).items()})
    phase = _text(status.get("phase"))
    if meta.get("deletionTimestamp") and phase not in ("Failed", "Succeeded"):
        lasts = _since(meta.get("deletionTimestamp"), now)
        w.write(0, f"Status:\tTerminating (lasts {lasts})\n")
        grace = _int(meta.get("deletionGracePeriodSeconds"))
        w.write(0, f"Termination Grace Period:\t{grace}s\n")
    else:
        w.write(0, f"Status:\t{phase}\n")
    if _text(status.get("reason")):
        w.write(0, f"Reason:\t{status['reason']}\n")
    if _text(status.get("message")):
        w.write(0, f"Message:\t{status['message']}\n")
    w.write(0, f"IP:\t{_text(status.get('podIP'))}\n")
    pod_ips = _objs(status.get("podIPs"))
    if pod_ips:
        w.write(0, "IPs:\n")
        for entry in pod_ips:
            w.write(1, f"IP:\t{_text(entry.get('ip'))}\n")
    else:
        w.write(0, "IPs:\t<none>\n")
    if _objs(spec.get("initContainers")):
        _describe_containers(
            w,
            "Init Containers",
            _objs(spec.get("initContainers")),
            _objs(status.get("initContainerStatuses")),
        )
    _describe_containers(
        w, "Containers", _objs(spec.get("containers")), _objs(status.get("containerStatuses"))
    )
    conditions = _objs(status.get("conditions"))
    if conditions:
        w.write(0, "Conditions:\n  Type\tStatus\n")
        for condition in conditions:
            w.write(1, f"{_text(condition.get('type'))} \t{_text(condition.get('status'))} \n")
    _describe_volumes(w, _objs(spec.get("volumes")))
    qos = _text(status.get("qosClass"))
    if not qos:
        try:
            qos = qos_class(Pod.from_dict(pod))
        except ValueError:
            qos = ""
    w.write(0, f"QoS Class:\t{qos}\n")
    selectors = {str(k): str(v) for k, v in _obj(spec.get("nodeSelector")).items()}
    _labels(w, "Node-Selectors", selectors)
    _describe_tolerations(w, _objs(spec.get("tolerations")))
    _describe_events(w, events, now)
    return w.text()


def _describe_tolerations(w: _Writer, tolerations: Sequence[Mapping[str, Any]]) -> None:
    w.write(0, "Tolerations:\t")
    if not tolerations:
        w.write(0, "<none>\n")
        return
    for index, toleration in enumerate(tolerations):
        if index:
            w.write(0, "\t")
        key, value = _text(toleration.get("key")), _text(toleration.get("value"))
        effect = _text(toleration.get("effect"))
        text = key + (f"={value}" if value else "") + (f":{effect}" if effect else "")
        if toleration.get("operator") == "Exists" and not value:
            text += " op=Exists" if key or effect else "op=Exists"
        seconds = toleration.get("tolerationSeconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool):
            text += f" for {seconds}s"
        w.write(0, text + "\n")
