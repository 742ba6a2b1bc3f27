"""The pod status the kubelet reports, as a pure function of spec, runtime state and probes.

:func:`generate_pod_status` is the kubelet's ``generateAPIPodStatus``
(``pkg/kubelet/kubelet_pods.go``) and returns a v1 ``PodStatus`` as the JSON the
API serves (camelCase keys, RFC 3339 times to the second, ``null`` for an unset
time, empty optional fields left out, keys in the order of the Go struct). The
steps follow upstream:

1. Container statuses (``convertToAPIContainerStatuses``), for init and regular
   containers apart. Every container in the spec gets a status: by default
   *waiting* with reason ``ContainerCreating``, or ``PodInitializing`` when the pod
   has init containers. A container whose previous status was terminated keeps it
   until the runtime says otherwise; otherwise the restart count and last state of
   the previous status are kept. The newest runtime instance gives ``state``
   (RUNNING -> running, CREATED -> waiting without reason, EXITED -> terminated,
   UNKNOWN after running -> terminated ``ContainerStatusUnknown`` with exit code 137),
   the one before it gives ``lastState``. A container the runtime lost after it was
   running gets a ``ContainerStatusUnknown`` last state and, unless the pod is
   being deleted, one more restart. An init container the runtime no longer has,
   in a pod whose regular containers were created, is shown as terminated
   ``Completed``. Then, for each container that the next sync would (re)start
   (``ShouldContainerBeRestarted``), the waiting reason the sync loop recorded
   (the kubelet's reason cache: ``CrashLoopBackOff``, ``ImagePullBackOff``,
   ``ErrImagePull``, ``CreateContainerConfigError`` ...) becomes the state, and a
   terminated state moves to ``lastState``. Regular container statuses are sorted by
   name, init container statuses keep the spec order.
2. Terminated ``reason`` is the runtime's. When the runtime gives none, the reason
   containerd's CRI server would have given (``toCRIContainerStatus``):
   ``Completed`` for exit code 0, ``Error`` otherwise (``OOMKilled``, ``StartError``
   or docker's ``ContainerCannotRun`` only come from the runtime).
3. ``started`` and ``ready`` (the prober manager's ``UpdatePodStatus``): a container
   is started when it is running and its startup probe succeeded (no startup probe:
   running is enough; a running container that was started before stays started).
   A started, running container is ready when its readiness probe succeeded, or when
   it has no readiness probe. A regular init container is ready once it exited 0.
4. Phase (``getPhase``), then the three-way merge: a terminal phase already in the
   previous status or in the pod's API status is kept; reason and message are kept
   while the phase stays the same.
5. Conditions: those the kubelet does not own are kept from the pod's API status,
   then ``PodReadyToStartContainers``, ``Initialized``, ``Ready``,
   ``ContainersReady`` and ``PodScheduled`` (``pkg/kubelet/status/generate.go``), with
   ``lastTransitionTime`` kept from the previous status while a condition's status
   does not change (the status manager's ``updateLastTransitionTime``).
6. ``hostIP``/``hostIPs``, ``podIP``/``podIPs`` (the runtime's IPs, the node's IP
   family first; a ``hostNetwork`` pod gets the node's IP), ``startTime`` (kept from
   the previous status, else now) and ``qosClass`` (``GetPodQOS``, in
   :mod:`minikubelet.status.qos`).

One deliberate difference: upstream computes the phase before the prober manager
fills in ``started``, so a sidecar whose startup probe has just passed makes the pod
Running one sync later. Here the probe results are applied first.

The feature-gated behaviours still in alpha (ContainerRestartRules,
RestartAllContainersOnContainerExits, in-place resize) are not modelled.
"""

from __future__ import annotations

import copy
import datetime as dt
import ipaddress
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

from minikubelet.api.pod import Container, Pod, RestartPolicy
from minikubelet.container.status import ContainerState, ContainerStatus, PodStatus
from minikubelet.kuberuntime.actions import (
    has_any_regular_container_created,
    pod_sandbox_changed,
    should_container_be_restarted,
)
from minikubelet.status.qos import qos_class

JSON = dict[str, Any]


class PodPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"


class ConditionType(StrEnum):
    POD_SCHEDULED = "PodScheduled"
    READY_TO_START_CONTAINERS = "PodReadyToStartContainers"
    INITIALIZED = "Initialized"
    READY = "Ready"
    CONTAINERS_READY = "ContainersReady"
    DISRUPTION_TARGET = "DisruptionTarget"


#: Conditions the kubelet owns (``kubetypes.PodConditionByKubelet``); others are kept as found.
KUBELET_CONDITIONS: Final = frozenset(
    {
        ConditionType.POD_SCHEDULED,
        ConditionType.READY_TO_START_CONTAINERS,
        ConditionType.INITIALIZED,
        ConditionType.READY,
        ConditionType.CONTAINERS_READY,
        "PodResizePending",
        "PodResizeInProgress",
    }
)

# Waiting reasons the kubelet itself sets (kubelet_pods.go, images/types.go, kuberuntime).
CONTAINER_CREATING: Final = "ContainerCreating"
POD_INITIALIZING: Final = "PodInitializing"
CRASH_LOOP_BACK_OFF: Final = "CrashLoopBackOff"
IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
ERR_IMAGE_PULL: Final = "ErrImagePull"
CREATE_CONTAINER_CONFIG_ERROR: Final = "CreateContainerConfigError"
# Terminated reasons.
COMPLETED: Final = "Completed"
ERROR: Final = "Error"
OOM_KILLED: Final = "OOMKilled"
CONTAINER_CANNOT_RUN: Final = "ContainerCannotRun"
CONTAINER_STATUS_UNKNOWN: Final = "ContainerStatusUnknown"
# Condition reasons (pkg/kubelet/status/generate.go).
UNKNOWN_CONTAINER_STATUSES: Final = "UnknownContainerStatuses"
POD_COMPLETED: Final = "PodCompleted"
POD_FAILED: Final = "PodFailed"
CONTAINERS_NOT_READY: Final = "ContainersNotReady"
CONTAINERS_NOT_INITIALIZED: Final = "ContainersNotInitialized"
READINESS_GATES_NOT_READY: Final = "ReadinessGatesNotReady"

_TERMINAL: Final = frozenset({PodPhase.SUCCEEDED.value, PodPhase.FAILED.value})


# --- small helpers -------------------------------------------------------------------------


def format_time(value: dt.datetime | None) -> str | None:
    """A ``metav1.Time`` as JSON: RFC 3339 in UTC to the second, ``None`` (null) when unset."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ns_time(ns: int) -> str | None:
    if ns <= 0:
        return None
    return format_time(dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC))


def _go_list(names: Sequence[str]) -> str:
    """How Go's ``%s`` prints a ``[]string``: ``[a b]``."""
    return "[" + " ".join(names) + "]"


def _state(status: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    state = status.get("state")
    if not isinstance(state, Mapping):
        return None
    value = state.get(key)
    return value if isinstance(value, Mapping) else None


def _last_terminated(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    last = status.get("lastState")
    if not isinstance(last, Mapping):
        return None
    value = last.get("terminated")
    return value if isinstance(value, Mapping) else None


def _exit_code(terminated: Mapping[str, Any]) -> int:
    code = terminated.get("exitCode", 0)
    return code if isinstance(code, int) else 0


def _by_name(statuses: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """``podutil.GetContainerStatus`` for every name (the first status of a name wins)."""
    out: dict[str, Mapping[str, Any]] = {}
    for status in statuses:
        name = status.get("name")
        if isinstance(name, str) and name not in out:
            out[name] = status
    return out


def _status_list(value: object) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _conditions(status: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not status:
        return []
    return _status_list(status.get("conditions"))


def _condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    for condition in _conditions(status):
        if condition.get("type") == kind:
            return condition
    return None


def _effective_policy(container: Container, pod: Pod) -> RestartPolicy:
    """A sidecar restarts whatever the pod's policy; everything else follows the pod."""
    return RestartPolicy.ALWAYS if container.is_restartable else pod.spec.restart_policy


def _would_restart(container: Container, pod: Pod, status: PodStatus) -> bool:
    """``ShouldContainerBeRestarted``, with a sidecar's own ``Always`` policy honoured."""
    if container.is_restartable and not pod.is_deleting:
        latest = status.find_container_status_by_name(container.name)
        return latest is None or latest.state is not ContainerState.RUNNING
    return should_container_be_restarted(container, pod, status)


# --- phase ---------------------------------------------------------------------------------


def get_phase(
    pod: Pod,
    statuses: Iterable[Mapping[str, Any]],
    *,
    terminal: bool = False,
    initialized: bool = False,
) -> PodPhase:
    """The kubelet's ``getPhase`` from API container statuses (init and regular together).

    ``terminal`` says the pod worker has finished the pod (its containers will not be
    restarted, whatever the policy); ``initialized`` says a regular container of the
    current sandbox has been created, so restarting sidecars do not put the pod back
    into Pending.
    """
    info = _by_name(statuses)
    spec = pod.spec
    pending_sidecars = 0
    pending_init = 0
    failed_init = 0

    for container in spec.init_containers:
        if container.is_restartable:
            continue
        status = info.get(container.name)
        if status is None or _state(status, "running") is not None:
            pending_init += 1
        elif (terminated := _state(status, "terminated")) is not None:
            if _exit_code(terminated) != 0:
                failed_init += 1
        elif _state(status, "waiting") is not None:
            last = _last_terminated(status)
            if last is None:
                pending_init += 1
            elif _exit_code(last) != 0:
                failed_init += 1
        else:
            pending_init += 1

    unknown = running = waiting = stopped = succeeded = 0
    for container in spec.init_containers:
        if not container.is_restartable:
            continue
        status = info.get(container.name)
        if status is None:
            unknown += 1
        elif _state(status, "running") is not None:
            if status.get("started") is not True:
                pending_sidecars += 1
            running += 1
        elif _state(status, "terminated") is not None:
            pass  # a stopped sidecar does not count towards the phase
        elif _state(status, "waiting") is not None:
            if _last_terminated(status) is None:
                pending_sidecars += 1
                waiting += 1
        else:
            pending_sidecars += 1
            unknown += 1

    for container in spec.containers:
        status = info.get(container.name)
        if status is None:
            unknown += 1
        elif _state(status, "running") is not None:
            running += 1
        elif (terminated := _state(status, "terminated")) is not None:
            stopped += 1
            if _exit_code(terminated) == 0:
                succeeded += 1
        elif _state(status, "waiting") is not None:
            if _last_terminated(status) is not None:
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1

    if failed_init > 0 and spec.restart_policy is RestartPolicy.NEVER:
        return PodPhase.FAILED
    if pending_init > 0 or (pending_sidecars > 0 and not initialized) or waiting > 0:
        return PodPhase.PENDING
    if running > 0 and unknown == 0:
        return PodPhase.RUNNING
    if running == 0 and stopped > 0 and unknown == 0:
        if terminal:
            return PodPhase.SUCCEEDED if stopped == succeeded else PodPhase.FAILED
        if spec.restart_policy is RestartPolicy.ALWAYS:
            return PodPhase.RUNNING
        if stopped == succeeded:
            return PodPhase.SUCCEEDED
        if spec.restart_policy is RestartPolicy.NEVER:
            return PodPhase.FAILED
        return PodPhase.RUNNING
    return PodPhase.PENDING


# --- conditions ----------------------------------------------------------------------------


def _cond(kind: str, status: bool, reason: str = "", message: str = "") -> JSON:
    out: JSON = {"type": kind, "status": "True" if status else "False"}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def _has_any_regular_container_started(pod: Pod, statuses: Iterable[Mapping[str, Any]]) -> bool:
    """``HasAnyRegularContainerStarted``: a regular container is running or has terminated."""
    names = {c.name for c in pod.spec.containers}
    return any(
        s.get("name") in names
        and (_state(s, "running") is not None or _state(s, "terminated") is not None)
        for s in statuses
    )


def containers_ready_condition(pod: Pod, statuses: Sequence[Mapping[str, Any]], phase: str) -> JSON:
    """``GenerateContainersReadyCondition``: sidecars and regular containers all ready."""
    info = _by_name(statuses)
    unknown: list[str] = []
    unready: list[str] = []
    considered = [c for c in pod.spec.init_containers if c.is_restartable]
    for container in (*considered, *pod.spec.containers):
        status = info.get(container.name)
        if status is None:
            unknown.append(container.name)
        elif status.get("ready") is not True:
            unready.append(container.name)
    if phase == PodPhase.SUCCEEDED and not unknown:
        return _cond(ConditionType.CONTAINERS_READY, False, POD_COMPLETED)
    if phase == PodPhase.FAILED:
        return _cond(ConditionType.CONTAINERS_READY, False, POD_FAILED)
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_go_list(unknown)}")
    if unready:
        messages.append(f"containers with unready status: {_go_list(unready)}")
    if messages:
        return _cond(
            ConditionType.CONTAINERS_READY, False, CONTAINERS_NOT_READY, ", ".join(messages)
        )
    return _cond(ConditionType.CONTAINERS_READY, True)


def _readiness_gates(pod: Pod) -> list[str]:
    spec = pod.raw.get("spec")
    gates = spec.get("readinessGates") if isinstance(spec, Mapping) else None
    out = []
    for gate in _status_list(gates):
        kind = gate.get("conditionType")
        if isinstance(kind, str):
            out.append(kind)
    return out


def ready_condition(
    pod: Pod,
    conditions: Sequence[Mapping[str, Any]],
    statuses: Sequence[Mapping[str, Any]],
    phase: str,
) -> JSON:
    """``GeneratePodReadyCondition``: ContainersReady, then the pod's readiness gates."""
    containers = containers_ready_condition(pod, statuses, phase)
    if containers["status"] != "True":
        return {**containers, "type": ConditionType.READY.value}
    messages = []
    for gate in _readiness_gates(pod):
        found = next((c for c in conditions if c.get("type") == gate), None)
        if found is None:
            messages.append(
                f'corresponding condition of pod readiness gate "{gate}" does not exist.'
            )
        elif found.get("status") != "True":
            messages.append(
                f'the status of pod readiness gate "{gate}" is not "True", '
                f"but {found.get('status')}"
            )
    if messages:
        return _cond(ConditionType.READY, False, READINESS_GATES_NOT_READY, ", ".join(messages))
    return _cond(ConditionType.READY, True)


def initialized_condition(pod: Pod, statuses: Sequence[Mapping[str, Any]], phase: str) -> JSON:
    """``GeneratePodInitializedCondition``: init containers done, sidecars started."""
    info = _by_name(statuses)
    unknown: list[str] = []
    incomplete: list[str] = []
    for container in pod.spec.init_containers:
        status = info.get(container.name)
        if status is None:
            unknown.append(container.name)
            continue
        done = status.get("started") is True if container.is_restartable else status.get("ready")
        if done is not True:
            incomplete.append(container.name)
    if phase == PodPhase.SUCCEEDED and not unknown:
        return _cond(ConditionType.INITIALIZED, True, POD_COMPLETED)
    if _has_any_regular_container_started(pod, statuses):
        return _cond(ConditionType.INITIALIZED, True)
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_go_list(unknown)}")
    if incomplete:
        messages.append(f"containers with incomplete status: {_go_list(incomplete)}")
    if messages:
        return _cond(
            ConditionType.INITIALIZED, False, CONTAINERS_NOT_INITIALIZED, ", ".join(messages)
        )
    return _cond(ConditionType.INITIALIZED, True)


def ready_to_start_containers_condition(pod: Pod, status: PodStatus) -> JSON:
    """``GeneratePodReadyToStartContainersCondition``: the sandbox needs no replacing."""
    changed = pod_sandbox_changed(pod, status).changed
    return _cond(ConditionType.READY_TO_START_CONTAINERS, not changed)


def stamp_transition_times(
    conditions: Iterable[Mapping[str, Any]],
    previous: Mapping[str, Any] | None,
    now: str | None,
) -> list[JSON]:
    """The conditions as the API shows them, kubelet-owned ones with their times set.

    A kubelet-owned condition gets ``lastProbeTime`` null and a ``lastTransitionTime``
    borrowed from the previous condition of its type while the status is unchanged,
    else ``now`` (the status manager's ``updateLastTransitionTime``). Conditions owned
    by others are copied as they are.
    """
    out: list[JSON] = []
    for condition in conditions:
        kind = str(condition.get("type", ""))
        if kind not in KUBELET_CONDITIONS:
            out.append(copy.deepcopy(dict(condition)))
            continue
        old = _condition(previous, kind)
        when: Any = now
        if old is not None and old.get("status") == condition.get("status"):
            when = old.get("lastTransitionTime") or now
        stamped: JSON = {"type": kind, "status": condition.get("status")}
        stamped["lastProbeTime"] = None
        stamped["lastTransitionTime"] = when
        for key in ("reason", "message"):
            if condition.get(key):
                stamped[key] = condition[key]
        out.append(stamped)
    return out


# --- container statuses --------------------------------------------------------------------


def terminated_reason(status: ContainerStatus) -> str:
    """The runtime's reason, else containerd's fallback: Completed for 0, Error otherwise."""
    if status.reason:
        return status.reason
    return COMPLETED if status.exit_code == 0 else ERROR


def _container_id(runtime_name: str, container_id: str) -> str:
    return f"{runtime_name}://{container_id}"


def _convert_one(cs: ContainerStatus, old: Mapping[str, Any] | None, runtime_name: str) -> JSON:
    """``convertContainerStatus``: one runtime instance as an API container status."""
    cid = _container_id(runtime_name, cs.id)
    status: JSON = {
        "name": cs.name,
        "state": {},
        "lastState": {},
        "ready": False,
        "restartCount": cs.restart_count,
        "image": cs.image,
        "imageID": cs.image_ref or cs.image_id,
        "containerID": cid,
    }
    if cs.state is ContainerState.RUNNING:
        status["state"] = {"running": {"startedAt": _ns_time(cs.started_at)}}
    elif cs.state is ContainerState.CREATED:
        status["state"] = {"waiting": {}}
    elif cs.state is ContainerState.EXITED:
        terminated: JSON = {"exitCode": cs.exit_code, "reason": terminated_reason(cs)}
        if cs.message:
            terminated["message"] = cs.message
        terminated["startedAt"] = _ns_time(cs.started_at)
        terminated["finishedAt"] = _ns_time(cs.finished_at)
        terminated["containerID"] = cid
        status["state"] = {"terminated": terminated}
    elif (
        cs.state is ContainerState.UNKNOWN
        and old is not None
        and _state(old, "running") is not None
    ):
        status["state"] = {
            "terminated": {
                "exitCode": 137,
                "reason": CONTAINER_STATUS_UNKNOWN,
                "message": "The container could not be located when the pod was terminated",
                "startedAt": None,
                "finishedAt": None,
            }
        }
        status["restartCount"] = int(old.get("restartCount", 0)) + 1
    else:
        status["state"] = {"waiting": {}}
    return status


def convert_container_statuses(
    pod: Pod,
    status: PodStatus,
    previous: Sequence[Mapping[str, Any]],
    containers: Sequence[Container],
    *,
    has_init_containers: bool,
    is_init: bool,
    waiting: Mapping[str, tuple[str, str]],
    runtime_name: str,
) -> list[JSON]:
    """``convertToAPIContainerStatuses`` for one list of containers (init or regular)."""
    old_statuses = {str(s.get("name")): s for s in previous}
    default_reason = POD_INITIALIZING if has_init_containers else CONTAINER_CREATING
    statuses: dict[str, JSON] = {}
    for container in containers:
        entry: JSON = {
            "name": container.name,
            "state": {"waiting": {"reason": default_reason}},
            "lastState": {},
            "ready": False,
            "restartCount": 0,
            "image": container.image,
            "imageID": "",
        }
        old = old_statuses.get(container.name)
        if old is not None:
            if _state(old, "terminated") is not None:
                entry = copy.deepcopy(dict(old))
            else:
                entry["restartCount"] = int(old.get("restartCount", 0))
                entry["lastState"] = copy.deepcopy(dict(old.get("lastState") or {}))
        statuses[container.name] = entry

    # A container the runtime lost after it was running: terminated, reason unknown.
    in_runtime = {cs.name for cs in status.container_statuses}
    for container in containers:
        old = old_statuses.get(container.name)
        if container.name in in_runtime or old is None:
            continue
        if _state(old, "terminated") is not None or _state(old, "running") is None:
            continue
        entry = statuses[container.name]
        current = _state(entry, "waiting")
        if current is None or current.get("reason") != default_reason:
            continue
        if _last_terminated(entry) is not None:
            continue
        entry["lastState"] = {
            "terminated": {
                "exitCode": 137,
                "reason": CONTAINER_STATUS_UNKNOWN,
                "message": "The container could not be located when the pod was deleted.  "
                "The container used to be Running",
                "startedAt": None,
                "finishedAt": None,
            }
        }
        if not pod.is_deleting:
            entry["restartCount"] = int(entry.get("restartCount", 0)) + 1

    # The newest instance gives the state, the one before it the last state.
    seen: Counter[str] = Counter()
    for cs in status.container_statuses_newest_first():
        if cs.name not in statuses or seen[cs.name] >= 2:
            continue
        old = old_statuses.get(cs.name)
        converted = _convert_one(cs, old, runtime_name)
        if (
            cs.state is ContainerState.RUNNING
            and old is not None
            and "started" in old
            and old.get("containerID") == converted["containerID"]
        ):
            # Upstream keeps ``started`` by name; its startup cache always holds a result
            # (Unknown at first) for a new instance, ours may not, hence the id check.
            converted["started"] = old["started"]
        if seen[cs.name] == 0:
            statuses[cs.name] = converted
        else:
            statuses[cs.name]["lastState"] = converted["state"]
        seen[cs.name] += 1

    # Containers the next sync would (re)start show the reason the sync loop recorded.
    regular_created = has_any_regular_container_created(pod, status)
    for container in containers:
        entry = statuses[container.name]
        if is_init:
            latest = status.find_container_status_by_name(container.name)
            if (
                latest is not None
                and latest.state is ContainerState.EXITED
                and latest.exit_code == 0
            ):
                continue
            if (
                latest is None
                and regular_created
                and not container.is_restartable
                and _state(entry, "waiting") is not None
            ):
                entry["state"] = {
                    "terminated": {
                        "exitCode": 0,
                        "reason": COMPLETED,
                        "message": "Unable to get init container status from container runtime "
                        "and pod has been initialized, treat it as exited normally",
                        "startedAt": None,
                        "finishedAt": None,
                    }
                }
                continue
        if not _would_restart(container, pod, status):
            continue
        recorded = waiting.get(container.name)
        if recorded is None:
            continue
        if _state(entry, "terminated") is not None:
            entry["lastState"] = entry["state"]
        reason, message = recorded
        state: JSON = {"reason": reason}
        if message:
            state["message"] = message
        entry["state"] = {"waiting": state}

    ordered = [statuses[c.name] for c in containers]
    if not is_init:
        ordered.sort(key=lambda s: str(s["name"]))
    return [_ordered_container_status(s) for s in ordered]


_CONTAINER_STATUS_KEYS: Final = (
    "name",
    "state",
    "lastState",
    "ready",
    "restartCount",
    "image",
    "imageID",
    "containerID",
    "started",
)


def _ordered_container_status(status: Mapping[str, Any]) -> JSON:
    out = {key: status[key] for key in _CONTAINER_STATUS_KEYS if key in status}
    out.update({k: v for k, v in status.items() if k not in out})
    return out


def _probe_result(results: Mapping[str, bool], container_id: str) -> bool | None:
    """The result for a container, keyed by bare id or by ``<runtime>://<id>``."""
    if not container_id:
        return None
    if container_id in results:
        return results[container_id]
    bare = container_id.split("://", 1)[-1]
    return results.get(bare)


def apply_probe_results(
    containers: Sequence[Container],
    statuses: Sequence[JSON],
    *,
    ready: Mapping[str, bool],
    started: Mapping[str, bool],
    init: bool,
) -> None:
    """The prober manager's ``UpdatePodStatus``: set ``started`` and ``ready`` in place."""
    specs = {c.name: c for c in containers}
    for status in statuses:
        spec = specs.get(str(status.get("name")))
        cid = str(status.get("containerID", ""))
        running = _state(status, "running") is not None
        if not running:
            is_started = False
        elif (result := _probe_result(started, cid)) is not None:
            is_started = result
        elif status.get("started") is True:
            is_started = True
        else:
            is_started = spec is None or spec.startup_probe is None
        status["started"] = is_started
        if init and spec is not None and not spec.is_restartable:
            terminated = _state(status, "terminated")
            if terminated is not None and _exit_code(terminated) == 0:
                status["ready"] = True
            continue
        if not is_started:
            continue
        if not running:
            status["ready"] = False
        elif _probe_result(ready, cid) is True:
            status["ready"] = True
        else:
            status["ready"] = spec is None or spec.readiness_probe is None


# --- the pod status ------------------------------------------------------------------------


def _has_active_regular_container(pod: Pod, status: PodStatus) -> bool:
    """``HasAnyActiveRegularContainerStarted``: a regular container exists in the current sandbox.

    The runtime model does not say which sandbox a container belongs to; containers
    created before the newest sandbox are taken to belong to an earlier one.
    """
    names = {c.name for c in pod.spec.containers}
    sandbox = status.latest_sandbox()
    since = sandbox.created_at if sandbox is not None else 0
    return any(cs.name in names and cs.created_at >= since for cs in status.container_statuses)


def _sorted_pod_ips(ips: Sequence[str], host_ip: str) -> list[str]:
    """``sortPodIPs``: the first IP of the node's family, then the first of the other."""
    primary = 4
    try:
        if host_ip:
            primary = ipaddress.ip_address(host_ip).version
    except ValueError:
        primary = 4
    parsed = []
    for text in ips:
        try:
            parsed.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    out = []
    for family in (primary, 10 - primary):
        found = next((ip for ip in parsed if ip.version == family), None)
        if found is not None:
            out.append(str(found))
    return out


def generate_pod_status(
    pod: Pod,
    status: PodStatus,
    *,
    previous: Mapping[str, Any] | None,
    ready: Mapping[str, bool],
    started: Mapping[str, bool],
    waiting: Mapping[str, tuple[str, str]],
    host_ip: str,
    runtime_name: str,
    now: dt.datetime,
    terminal: bool = False,
) -> JSON:
    """The v1 ``PodStatus`` the kubelet would report (``generateAPIPodStatus``).

    ``previous`` is the status last generated for this pod (the status manager's); when
    None, the status in the pod's manifest (``pod.raw["status"]``) stands in, as upstream.
    ``ready`` and ``started`` map container ids to readiness / startup probe results;
    ``waiting`` maps container names to the (reason, message) the last sync recorded for
    a container it could not start. ``terminal`` is the pod worker's "this pod is done".
    """
    api_status = pod.raw.get("status")
    api: Mapping[str, Any] = api_status if isinstance(api_status, Mapping) else {}
    old: Mapping[str, Any] = previous if previous is not None else api
    stamp = format_time(now)

    has_init = bool(pod.spec.init_containers)
    regular = convert_container_statuses(
        pod,
        status,
        _status_list(old.get("containerStatuses")),
        pod.spec.containers,
        has_init_containers=has_init,
        is_init=False,
        waiting=waiting,
        runtime_name=runtime_name,
    )
    init = convert_container_statuses(
        pod,
        status,
        _status_list(old.get("initContainerStatuses")),
        pod.spec.init_containers,
        has_init_containers=has_init,
        is_init=True,
        waiting=waiting,
        runtime_name=runtime_name,
    )
    apply_probe_results(pod.spec.containers, regular, ready=ready, started=started, init=False)
    apply_probe_results(pod.spec.init_containers, init, ready=ready, started=started, init=True)

    phase: str = get_phase(
        pod,
        [*regular, *init],
        terminal=terminal,
        initialized=_has_active_regular_container(pod, status),
    ).value
    if phase not in _TERMINAL:
        if old.get("phase") in _TERMINAL:
            phase = str(old["phase"])
        elif api.get("phase") in _TERMINAL:
            phase = str(api["phase"])
    reason = message = ""
    if phase == old.get("phase"):
        reason = str(old.get("reason") or api.get("reason") or "")
        message = str(old.get("message") or api.get("message") or "")
    if api.get("phase") in _TERMINAL:
        phase = str(api["phase"])

    all_statuses = [*init, *regular]
    conditions: list[Mapping[str, Any]] = [
        c for c in _conditions(api) if c.get("type") not in KUBELET_CONDITIONS
    ]
    disruption = _condition(old, ConditionType.DISRUPTION_TARGET)
    if disruption is not None:
        conditions = [c for c in conditions if c.get("type") != ConditionType.DISRUPTION_TARGET]
        conditions.append(disruption)
    conditions.append(ready_to_start_containers_condition(pod, status))
    conditions.append(initialized_condition(pod, all_statuses, phase))
    conditions.append(ready_condition(pod, conditions, all_statuses, phase))
    conditions.append(containers_ready_condition(pod, all_statuses, phase))
    conditions.append(_cond(ConditionType.POD_SCHEDULED, True))

    out: JSON = {"phase": phase}
    out["conditions"] = stamp_transition_times(conditions, old, stamp)
    if message:
        out["message"] = message
    if reason:
        out["reason"] = reason
    if host_ip:
        out["hostIP"] = host_ip
        out["hostIPs"] = [{"ip": host_ip}]
    pod_ips = _sorted_pod_ips(status.ips, host_ip)
    if not pod_ips and pod.spec.host_network and host_ip:
        pod_ips = [host_ip]
    if pod_ips:
        out["podIP"] = pod_ips[0]
        out["podIPs"] = [{"ip": ip} for ip in pod_ips]
    out["startTime"] = old.get("startTime") or stamp
    if init:
        out["initContainerStatuses"] = init
    if regular:
        out["containerStatuses"] = regular
    out["qosClass"] = qos_class(pod)
    return out
