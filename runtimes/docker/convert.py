"""Docker's JSON about a container (inspected or listed) as the CRI's sandboxes and containers.

Everything the CRI reports was written into Docker labels at creation
(:mod:`runtimes.docker.labels`); the rest (state, exit, IP, PID) is read from
what dockerd says now. A listed container (``GET /containers/json``) has
``Labels`` and a one-word ``State``; an inspected one has ``Config.Labels`` and a
``State`` object: both are read here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final, TypeVar

from runtimes.base import core
from runtimes.base import model as m
from runtimes.docker import dockerconfig
from runtimes.docker import labels as lb
from runtimes.docker.client import ContainerInspect, ContainerSummary, docker_time_ns

log = logging.getLogger(__name__)

#: Docker states in which a container's process exists.
RUNNING_STATES: Final = ("running", "paused", "restarting")
#: Decoded specs kept at most (the memo starts over beyond it).
SPEC_MEMO_LIMIT: Final = 10_000


def generation(*fields: object) -> int:
    """A number that changes when what the CRI lists about an object changes."""
    return hash(fields) & 0x7FFFFFFF


def labels_of(raw: Mapping[str, Any]) -> dict[str, str]:
    """Labels of a container as inspected (under Config) or as listed."""
    config = raw.get("Config")
    found = config.get("Labels") if isinstance(config, dict) else raw.get("Labels")
    return dict(found or {})


def is_running(raw: Mapping[str, Any]) -> bool:
    """An inspected container's process runs."""
    return bool((raw.get("State") or {}).get("Running"))


def container_state(docker_state: str) -> m.ContainerState:
    """The CRI state of a Docker state word (``created``, ``running``, ``exited`` ...)."""
    if docker_state == "created":
        return m.ContainerState.CREATED
    if docker_state in RUNNING_STATES:
        return m.ContainerState.RUNNING
    if docker_state in ("exited", "dead", "removing"):
        return m.ContainerState.EXITED
    return m.ContainerState.UNKNOWN


class Decoder:
    """Reads sandboxes and containers back from dockerd's JSON.

    The spec labels of each object are decoded once and remembered by id (they
    never change); :meth:`forget` drops one when the object is removed.
    """

    def __init__(self) -> None:
        self._sandbox_specs: dict[str, m.PodSandboxSpec] = {}
        self._container_specs: dict[str, m.ContainerSpec] = {}

    def forget(self, object_id: str) -> None:
        self._sandbox_specs.pop(object_id, None)
        self._container_specs.pop(object_id, None)

    def ours(self, object_id: str, labels: Mapping[str, str], kind: str) -> bool:
        """A container this runtime made (of ``kind``), with labels it can read back."""
        if labels.get(lb.TYPE) != kind or labels.get(lb.SCHEMA) != lb.SCHEMA_VERSION:
            return False
        try:
            if kind == lb.SANDBOX:
                self.sandbox_spec(object_id, labels)
            else:
                self.container_spec(object_id, labels)
        except (ValueError, KeyError):
            log.warning("ignoring %s %s: its labels do not decode", kind, object_id[:13])
            return False
        return True

    def sandbox_spec(self, object_id: str, labels: Mapping[str, str]) -> m.PodSandboxSpec:
        return _memo(self._sandbox_specs, object_id, m.PodSandboxSpec, labels)

    def container_spec(self, object_id: str, labels: Mapping[str, str]) -> m.ContainerSpec:
        return _memo(self._container_specs, object_id, m.ContainerSpec, labels)

    def sandbox(self, raw: Mapping[str, Any]) -> m.PodSandbox:
        """From an inspected (State is an object) or a listed (State is a word) infra container."""
        object_id = str(raw.get("Id", ""))
        labels = labels_of(raw)
        spec = self.sandbox_spec(object_id, labels)
        state_field = raw.get("State")
        if isinstance(state_field, dict):
            running = bool(state_field.get("Running"))
        else:
            running = state_field == "running"
        state = m.SandboxState.READY if running else m.SandboxState.NOTREADY
        networks = ((raw.get("NetworkSettings") or {}).get("Networks")) or {}
        ip = ""
        if running and spec.namespaces.network != dockerconfig.NODE:
            ip = next(
                (str(n.get("IPAddress")) for n in networks.values() if n.get("IPAddress")), ""
            )
        return m.PodSandbox(
            id=object_id,
            spec=spec,
            state=state,
            created_at=int(labels.get(lb.CREATED, "0") or 0),
            ip=ip,
            generation=generation(state),
        )

    def container_from_summary(self, raw: ContainerSummary) -> m.Container:
        """A listed container: its state word, no exit details."""
        object_id = str(raw.get("Id", ""))
        labels = labels_of(raw)
        spec = self.container_spec(object_id, labels)
        state = container_state(str(raw.get("State", "")))
        return m.Container(
            id=object_id,
            sandbox_id=labels.get(lb.SANDBOX_ID, ""),
            spec=spec,
            image_ref=str(raw.get("ImageID", "")),
            image_name=labels.get(lb.IMAGE_NAME, spec.image),
            state=state,
            created_at=int(labels.get(lb.CREATED, "0") or 0),
            log_path=labels.get(lb.LOG_PATH, ""),
            generation=generation(state),
        )

    def container_from_inspect(self, raw: ContainerInspect) -> m.Container:
        """An inspected container, with its start, exit, reason and PID."""
        object_id = str(raw.get("Id", ""))
        labels = labels_of(raw)
        spec = self.container_spec(object_id, labels)
        st = raw.get("State") or {}
        docker_state = str(st.get("Status", ""))
        state = container_state(docker_state)
        exit_code = int(st.get("ExitCode") or 0)
        error = str(st.get("Error") or "")
        started = docker_time_ns(st.get("StartedAt"))
        finished = docker_time_ns(st.get("FinishedAt"))
        reason = ""
        if docker_state == "created" and error:
            # dockerd could not start it: it will never run, so it has exited (as containerd says)
            state, reason = m.ContainerState.EXITED, core.START_ERROR
            exit_code = exit_code or core.EXIT_START_ERROR
            finished = finished or started or int(labels.get(lb.CREATED, "0") or 0)
        elif state == m.ContainerState.EXITED:
            reason = core.exit_reason(exit_code, oom_killed=bool(st.get("OOMKilled")))
        return m.Container(
            id=object_id,
            sandbox_id=labels.get(lb.SANDBOX_ID, ""),
            spec=spec,
            image_ref=str(raw.get("Image", "")),
            image_name=labels.get(lb.IMAGE_NAME, spec.image),
            repo_digest=labels.get(lb.REPO_DIGEST, ""),
            state=state,
            created_at=int(labels.get(lb.CREATED, "0") or 0),
            started_at=started,
            finished_at=finished if state == m.ContainerState.EXITED else 0,
            exit_code=exit_code if state == m.ContainerState.EXITED else 0,
            reason=reason,
            message=error,
            log_path=labels.get(lb.LOG_PATH, ""),
            pid=int(st.get("Pid") or 0),
            generation=generation(state),
        )


_Spec = TypeVar("_Spec")


def _memo(
    memo: dict[str, _Spec], object_id: str, cls: type[_Spec], labels: Mapping[str, str]
) -> _Spec:
    """The spec in the object's labels, decoded once (ValueError or KeyError if it does not)."""
    spec = memo.get(object_id)
    if spec is None:
        spec = lb.decode(cls, labels[lb.SPEC])
        if len(memo) >= SPEC_MEMO_LIMIT:
            memo.clear()
        memo[object_id] = spec
    return spec
