"""What a pod needs next: the kubelet's ``computePodActions``, as a pure function.

:func:`compute_pod_actions` compares a pod's spec with what the runtime reports
(:class:`~minikubelet.container.status.PodStatus`) and returns a
:class:`PodActions`: kill the whole pod or not, create a sandbox or not, which
containers to kill (and why), which init containers and which regular containers
to start. It does no I/O and reads no clock; the executor (``SyncPod``) carries the
actions out in the kubelet's order: kill pod or kill containers, create the
sandbox, start init containers, start regular containers.

The rules follow the kubelet (``pkg/kubelet/kuberuntime``), with the
SidecarContainers behaviour (on by default since Kubernetes 1.29, GA in 1.33):

* Sandbox: a new one is needed when there is none, when the newest one is not
  ready, when more than one is ready, when its network namespace mode no longer
  matches ``hostNetwork``, or when it has a pod network but no IP. Creating a new
  sandbox kills everything in the old one and restarts initialization from the first
  init container. Two exceptions, where the pod is killed and no sandbox is created:
  under ``restartPolicy: Never`` once the pod's containers ran in an earlier
  sandbox, and under ``OnFailure`` once every regular container has succeeded.
* Init containers run one at a time in spec order; the newest one that has a
  status decides the next step (completed init containers may have been garbage
  collected). A failed init container is run again, unless the pod's restartPolicy
  is ``Never``, in which case the pod has failed and is killed. Once a regular
  container has been created or is running, initialization counts as done.
* Sidecars (init containers with ``restartPolicy: Always``) are started in order
  with the other init containers; the next init container starts once the sidecar
  before it is running (and, if it has a startup probe, has passed it). They are
  restarted whenever they exit, whatever the pod's restartPolicy, and killed and
  restarted on a spec change, a liveness or startup probe failure or an unknown state.
* Regular containers start once initialization is done. One that is not running is
  started again when it never ran, is in CREATED or UNKNOWN state (an UNKNOWN one is
  killed first), or exited and the restartPolicy says so (``Always``; ``OnFailure``
  and a non-zero exit code), and never once the pod is being deleted. A running one
  is killed and started again when its spec hash changed (whatever the restartPolicy)
  and killed, then started again unless the policy is ``Never``, when it failed its
  liveness or startup probe.
* When no regular container is running and none is due to start, the pod is done:
  it is killed, and its sidecars are not restarted.
* Crash-loop back-off: the kubelet checks it only when starting a container. Here a
  ``backoff`` predicate moves a container whose previous instance exited and which is
  still backing off from ``*_to_start`` to ``*_in_backoff``; it never turns a pod
  that is waiting into a pod that is done.

Ephemeral containers and in-place resource resizes are not handled here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass, field
from enum import StrEnum

from minikubelet.api.pod import Container, Pod, RestartPolicy
from minikubelet.container.status import (
    ContainerState,
    ContainerStatus,
    NamespaceMode,
    PodStatus,
    SandboxState,
)
from minikubelet.kuberuntime.hash import hash_container
from minikubelet.types import ContainerID, PodSandboxID

#: Answers "is this container (by name) still in crash-loop back-off?".
Backoff = Callable[[str], bool]


class KillReason(StrEnum):
    """Why a container is killed, as the kubelet records it (it picks the grace period)."""

    NONE = ""
    STARTUP_PROBE = "StartupProbe"
    LIVENESS_PROBE = "LivenessProbe"
    FAILED_POST_START_HOOK = "FailedPostStartHook"
    UNKNOWN = "Unknown"


@dataclass(frozen=True, slots=True)
class ContainerToKill:
    """One running container instance to stop, with the spec it was created from."""

    name: str
    message: str
    reason: KillReason = KillReason.NONE
    container: Container | None = field(default=None, compare=False)
    init: bool = False


@dataclass(frozen=True, slots=True)
class PodActions:
    """The changes :func:`compute_pod_actions` asks for (the kubelet's ``podActions``)."""

    #: Stop every container and the sandbox of the pod.
    kill_pod: bool = False
    #: Create a new sandbox (after killing the pod); init containers start over.
    create_sandbox: bool = False
    #: The sandbox to reuse, or the one being replaced when ``create_sandbox``.
    sandbox_id: PodSandboxID | None = None
    #: The attempt number for the sandbox to create (or of the one in use).
    attempt: int = 0
    #: Indexes into ``spec.initContainers``, in the order to start them.
    init_containers_to_start: tuple[int, ...] = ()
    #: Indexes into ``spec.containers``, in the order to start them.
    containers_to_start: tuple[int, ...] = ()
    containers_to_kill: Mapping[ContainerID, ContainerToKill] = field(
        default_factory=dict, hash=False
    )
    #: Would be started, but the back-off predicate says not yet.
    init_containers_in_backoff: tuple[int, ...] = ()
    containers_in_backoff: tuple[int, ...] = ()
    #: Why, one sentence per decision, in the order they were taken.
    reasons: tuple[str, ...] = ()

    @property
    def is_noop(self) -> bool:
        return not (
            self.kill_pod
            or self.create_sandbox
            or self.init_containers_to_start
            or self.containers_to_start
            or self.containers_to_kill
        )

    def __str__(self) -> str:
        kills = {str(cid): info.name for cid, info in self.containers_to_kill.items()}
        return (
            f"KillPod={self.kill_pod} CreateSandbox={self.create_sandbox} "
            f"SandboxID={self.sandbox_id or ''} Attempt={self.attempt} "
            f"InitContainersToStart={list(self.init_containers_to_start)} "
            f"ContainersToStart={list(self.containers_to_start)} ContainersToKill={kills} "
            f"InBackoff={list(self.init_containers_in_backoff)}"
            f"/{list(self.containers_in_backoff)}"
        )


# --- small predicates, each one of the kubelet's helpers -----------------------------------


def network_namespace_for_pod(pod: Pod) -> NamespaceMode:
    """NODE for a ``hostNetwork`` pod, otherwise the pod's own (POD)."""
    return NamespaceMode.NODE if pod.spec.host_network else NamespaceMode.POD


def should_restart_on_failure(pod: Pod) -> bool:
    return pod.spec.restart_policy is not RestartPolicy.NEVER


def container_changed(container: Container, status: ContainerStatus) -> bool:
    """True when the running instance was created from a different spec."""
    return status.hash != hash_container(container)


def container_succeeded(container: Container, pod_status: PodStatus) -> bool:
    """The newest instance is not running and its exit code is 0."""
    status = pod_status.find_container_status_by_name(container.name)
    if status is None or status.state is ContainerState.RUNNING:
        return False
    return status.exit_code == 0


def is_init_container_failed(status: ContainerStatus) -> bool:
    """Exited non-zero, OOM-killed, or in an unknown state."""
    if status.reason == "OOMKilled":
        return True
    if status.state is ContainerState.EXITED and status.exit_code != 0:
        return True
    return status.state is ContainerState.UNKNOWN


def has_any_regular_container_created(pod: Pod, pod_status: PodStatus) -> bool:
    """Some regular container was created, so initialization finished at some point."""
    for container in pod.spec.containers:
        status = pod_status.find_container_status_by_name(container.name)
        if status is not None and status.state in (
            ContainerState.CREATED,
            ContainerState.RUNNING,
            ContainerState.EXITED,
        ):
            return True
    return False


def should_container_be_restarted(container: Container, pod: Pod, pod_status: PodStatus) -> bool:
    """Whether a regular container that is not running should be started (again)."""
    if pod.is_deleting:
        return False
    status = pod_status.find_container_status_by_name(container.name)
    if status is None:
        return True
    if status.state is ContainerState.RUNNING:
        return False
    if status.state in (ContainerState.UNKNOWN, ContainerState.CREATED):
        return True
    if pod.spec.restart_policy is RestartPolicy.NEVER:
        return False
    if pod.spec.restart_policy is RestartPolicy.ON_FAILURE:
        return status.exit_code != 0
    return True


@dataclass(frozen=True, slots=True)
class SandboxDecision:
    """The kubelet's ``PodSandboxChanged``: (changed, next attempt, sandbox id) and why."""

    changed: bool
    attempt: int
    sandbox_id: PodSandboxID | None
    reason: str


def pod_sandbox_changed(pod: Pod, pod_status: PodStatus) -> SandboxDecision:
    sandboxes = pod_status.sandboxes_newest_first()
    if not sandboxes:
        return SandboxDecision(True, 0, None, "pod has no sandbox yet: one is needed")
    latest = sandboxes[0]
    ready = sum(1 for s in sandboxes if s.state is SandboxState.READY)
    next_attempt = latest.attempt + 1
    if ready > 1:
        return SandboxDecision(
            True,
            next_attempt,
            latest.id,
            f"{ready} sandboxes are ready: a single new one is needed",
        )
    if latest.state is not SandboxState.READY:
        return SandboxDecision(
            True,
            next_attempt,
            latest.id,
            f"newest sandbox {latest.id} is not ready: a new one is needed",
        )
    wanted = network_namespace_for_pod(pod)
    if latest.network_namespace is not wanted:
        # As in the kubelet, the old sandbox's id is not carried along in this case.
        return SandboxDecision(
            True,
            next_attempt,
            None,
            f"sandbox {latest.id} uses network namespace {latest.network_namespace.value}, "
            f"the pod now wants {wanted.value}: a new sandbox is needed",
        )
    if not pod.spec.host_network and latest.ip == "":
        return SandboxDecision(
            True,
            next_attempt,
            latest.id,
            f"sandbox {latest.id} has a pod network but no IP address: a new one is needed",
        )
    return SandboxDecision(False, latest.attempt, latest.id, "")


# --- the decision --------------------------------------------------------------------------


@dataclass(slots=True)
class _Plan:
    """The mutable draft of a PodActions while the rules run."""

    kill_pod: bool = False
    create_sandbox: bool = False
    sandbox_id: PodSandboxID | None = None
    attempt: int = 0
    init_to_start: list[int] = field(default_factory=list)
    to_start: list[int] = field(default_factory=list)
    to_kill: dict[ContainerID, ContainerToKill] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def kill(
        self,
        status: ContainerStatus,
        container: Container,
        message: str,
        reason: KillReason = KillReason.NONE,
        *,
        init: bool = False,
    ) -> None:
        self.to_kill[status.id] = ContainerToKill(
            name=status.name, message=message, reason=reason, container=container, init=init
        )


@dataclass(frozen=True, slots=True)
class _Probes:
    liveness_failed: Set[str]
    startup_failed: Set[str]
    startup_succeeded: Set[str] | None

    def startup_pending(self, name: str) -> bool:
        return self.startup_succeeded is not None and name not in self.startup_succeeded


def compute_pod_actions(
    pod: Pod,
    status: PodStatus,
    *,
    backoff: Backoff | None = None,
    liveness_failed: Set[str] = frozenset(),
    startup_failed: Set[str] = frozenset(),
    startup_succeeded: Set[str] | None = None,
) -> PodActions:
    """Diff ``pod`` (desired) against ``status`` (observed) into the actions that reconcile them.

    ``liveness_failed`` and ``startup_failed`` name the containers whose *current*
    instance failed that probe (the prober's results). ``startup_succeeded`` names
    the containers whose current instance passed its startup probe; it gates the init
    container after a sidecar with a startup probe. ``None`` means "no prober results
    at hand": a running sidecar then counts as started. ``backoff(name)`` says whether a
    container that exited must still wait before it is started again.

    Meant for pods that are to keep running; a pod being terminated is killed by the
    executor without asking this function.
    """
    probes = _Probes(frozenset(liveness_failed), frozenset(startup_failed), startup_succeeded)
    plan = _Plan()
    sandbox = pod_sandbox_changed(pod, status)
    plan.kill_pod = plan.create_sandbox = sandbox.changed
    plan.sandbox_id = sandbox.sandbox_id
    plan.attempt = sandbox.attempt
    if sandbox.changed:
        plan.reasons.append(sandbox.reason)
        _plan_new_sandbox(pod, status, plan)
    else:
        _plan_in_sandbox(pod, status, plan, probes)
    return _freeze(pod, status, plan, backoff)


def _plan_new_sandbox(pod: Pod, status: PodStatus, plan: _Plan) -> None:
    if not should_restart_on_failure(pod) and plan.attempt != 0 and status.container_statuses:
        plan.create_sandbox = False
        plan.reasons.append(
            "restartPolicy is Never and the pod's containers already ran: "
            "no new sandbox, the pod is killed"
        )
        return
    to_start = [
        idx
        for idx, container in enumerate(pod.spec.containers)
        if not (
            pod.spec.restart_policy is RestartPolicy.ON_FAILURE
            and container_succeeded(container, status)
        )
    ]
    if not to_start and has_any_regular_container_created(pod, status):
        plan.create_sandbox = False
        plan.reasons.append(
            "every container already succeeded and initialization is done: "
            "no new sandbox, the pod is killed"
        )
        return
    if pod.spec.init_containers:
        plan.init_to_start = [0]
        first = pod.spec.init_containers[0].name
        plan.reasons.append(f"creating a sandbox: initialization begins with {first}")
        return
    plan.to_start = to_start
    names = ", ".join(pod.spec.containers[i].name for i in to_start)
    plan.reasons.append(f"creating a sandbox: then starting {names}")


def _plan_in_sandbox(pod: Pod, status: PodStatus, plan: _Plan, probes: _Probes) -> None:
    initialized = _plan_init_containers(pod, status, plan, probes)
    if plan.kill_pod or not initialized:
        return

    keep = 0
    for idx, container in enumerate(pod.spec.containers):
        name = container.name
        current = status.find_container_status_by_name(name)
        if current is None or current.state is not ContainerState.RUNNING:
            if should_container_be_restarted(container, pod, status):
                plan.to_start.append(idx)
                plan.reasons.append(_start_reason(container, current, pod))
                if current is not None and current.state is ContainerState.UNKNOWN:
                    plan.kill(
                        current,
                        container,
                        'Container is in "unknown" state, try killing it before restart',
                        KillReason.UNKNOWN,
                    )
            else:
                plan.reasons.append(_no_restart_reason(container, current, pod))
            continue

        # ``message`` is the kubelet's own (the Killing event shows it); ``why`` is for the log
        restart = should_restart_on_failure(pod)
        if container_changed(container, current):
            message = f"Container {name} definition changed"
            why = (
                f"container {name}'s spec changed "
                f"(hash {current.hash or '-'} -> {hash_container(container)})"
            )
            reason = KillReason.NONE
            restart = True
        elif name in probes.liveness_failed:
            message = f"Container {name} failed liveness probe"
            why = f"container {name} failed its liveness probe"
            reason = KillReason.LIVENESS_PROBE
        elif name in probes.startup_failed:
            message = f"Container {name} failed startup probe"
            why = f"container {name} failed its startup probe"
            reason = KillReason.STARTUP_PROBE
        else:
            keep += 1
            continue
        if restart:
            message += ", will be restarted"
            why += "; it will be started again"
            plan.to_start.append(idx)
        else:
            why += "; restartPolicy Never keeps it stopped"
        plan.kill(current, container, message, reason)
        plan.reasons.append(why)

    if keep == 0 and not plan.to_start:
        plan.kill_pod = True
        plan.init_to_start = []
        plan.reasons.append(
            "no container is running or due to start: the pod is done, killing it "
            "(sidecars are not restarted)"
        )


def _exit_text(status: ContainerStatus) -> str:
    text = f"exit code {status.exit_code}"
    return f"{text}, {status.reason}" if status.reason else text


def _start_reason(container: Container, current: ContainerStatus | None, pod: Pod) -> str:
    name = container.name
    if current is None:
        return f"container {name} has not been created yet: starting it"
    if current.state is ContainerState.CREATED:
        return f"container {name} was created but never started: starting it again"
    if current.state is ContainerState.UNKNOWN:
        return f"container {name} is in an unknown state: starting it again"
    return (
        f"container {name} exited with code {current.exit_code}: "
        f"restartPolicy {pod.spec.restart_policy.value} starts it again"
    )


def _no_restart_reason(container: Container, current: ContainerStatus | None, pod: Pod) -> str:
    name = container.name
    if pod.is_deleting:
        return f"container {name} is not running and the pod is being deleted: leaving it"
    code = current.exit_code if current is not None else 0
    return (
        f"container {name} exited with code {code}: "
        f"restartPolicy {pod.spec.restart_policy.value} leaves it stopped"
    )


def _plan_init_containers(pod: Pod, status: PodStatus, plan: _Plan, probes: _Probes) -> bool:
    """Init container and sidecar actions; True once the pod is initialized.

    Walks the init containers from the last to the first: the newest one with a status
    tells how far initialization got (earlier ones may have been garbage collected),
    and the earlier sidecars are then only kept running.
    """
    inits = pod.spec.init_containers
    if not inits:
        return True

    initialized = False
    for container in pod.spec.containers:
        current = status.find_container_status_by_name(container.name)
        # An EXITED regular container does not count: after a node reboot everything
        # has exited, and a fresh sandbox must initialize again.
        if current is not None and current.state in (
            ContainerState.CREATED,
            ContainerState.RUNNING,
        ):
            initialized = True
            break

    reached = initialized  # has initialization reached past the container looked at?
    restart_on_failure = should_restart_on_failure(pod)
    reasons: list[str] = []  # collected backwards, reported in spec order
    last = len(inits) - 1

    for i in range(last, -1, -1):
        container = inits[i]
        name = container.name
        current = status.find_container_status_by_name(name)
        sidecar = container.is_restartable

        if current is None:
            if reached and sidecar:
                plan.init_to_start.append(i)
                reasons.append(f"sidecar {name} has no container: starting it")
            continue
        if reached and not sidecar:
            continue  # a finished init container; only sidecars are kept running

        state = current.state
        if state is ContainerState.CREATED:
            plan.init_to_start.append(i)
            reasons.append(f"init container {name} was created but never started: starting it")
        elif state is ContainerState.RUNNING:
            if not sidecar:
                reasons.append(f"init container {name} is running: waiting for it to finish")
            else:
                started = _plan_running_sidecar(i, inits, current, plan, probes, reasons, reached)
                if started and i == last:
                    initialized = True
        elif state is ContainerState.EXITED:
            if sidecar:
                plan.init_to_start.append(i)
                reasons.append(
                    f"sidecar {name} exited with code {current.exit_code}: starting it again"
                )
            elif is_init_container_failed(current):
                if not restart_on_failure:
                    plan.kill_pod = True
                    plan.init_to_start = []
                    plan.reasons.extend(reversed(reasons))
                    plan.reasons.append(
                        f"init container {name} failed ({_exit_text(current)}) "
                        "and restartPolicy is Never: the pod has failed, killing it"
                    )
                    return False
                plan.init_to_start.append(i)
                reasons.append(
                    f"init container {name} failed ({_exit_text(current)}): running it again"
                )
            elif i == last:
                initialized = True
                reasons.append(f"init container {name} succeeded: initialization is done")
            else:
                plan.init_to_start.append(i + 1)
                reasons.append(f"init container {name} succeeded: starting {inits[i + 1].name}")
        else:  # UNKNOWN
            message = (
                f"init container {name} is in an unknown state: "
                "stopping it before it is started again"
            )
            if not sidecar and not restart_on_failure:
                plan.kill_pod = True
                plan.init_to_start = []
                plan.reasons.extend(reversed(reasons))
                plan.reasons.append(
                    f"init container {name} is in an unknown state and restartPolicy is "
                    "Never: the pod has failed, killing it"
                )
                return False
            plan.kill(
                current,
                container,
                'Init container is in "unknown" state, try killing it before restart',
                KillReason.UNKNOWN,
                init=True,
            )
            plan.init_to_start.append(i)
            reasons.append(message)

        reached = True

    if not reached:
        plan.init_to_start.append(0)
        reasons.append(f"starting the first init container, {inits[0].name}")

    plan.init_to_start.reverse()
    plan.reasons.extend(reversed(reasons))
    return initialized


def _plan_running_sidecar(
    i: int,
    inits: tuple[Container, ...],
    current: ContainerStatus,
    plan: _Plan,
    probes: _Probes,
    reasons: list[str],
    reached: bool,
) -> bool:
    """Actions for a running sidecar; True if it counts as started."""
    container = inits[i]
    name = container.name
    if container.startup_probe is not None:
        if name in probes.startup_failed:
            message = f"sidecar {name} failed its startup probe; it will be started again"
            killing = f"Init container {name} failed startup probe"
            plan.kill(current, container, killing, KillReason.STARTUP_PROBE, init=True)
            plan.init_to_start.append(i)
            reasons.append(message)
            return False
        if probes.startup_pending(name):
            reasons.append(f"sidecar {name} has not passed its startup probe yet: waiting")
            return False

    if i + 1 < len(inits) and not reached:
        plan.init_to_start.append(i + 1)
        reasons.append(f"sidecar {name} is running: starting {inits[i + 1].name}")

    if container_changed(container, current):
        message = f"sidecar {name}'s spec changed; it will be started again"
        plan.kill(current, container, f"Init container {name} definition changed", init=True)
        plan.init_to_start.append(i)
        reasons.append(message)
    elif container.liveness_probe is not None and name in probes.liveness_failed:
        message = f"sidecar {name} failed its liveness probe; it will be started again"
        killing = f"Init container {name} failed liveness probe"
        plan.kill(current, container, killing, KillReason.LIVENESS_PROBE, init=True)
        plan.init_to_start.append(i)
        reasons.append(message)
    return True


def _freeze(pod: Pod, status: PodStatus, plan: _Plan, backoff: Backoff | None) -> PodActions:
    """The final PodActions, with crash-loop back-off applied to the starts."""

    def waiting(container: Container) -> bool:
        if backoff is None:
            return False
        exited_before = any(
            s.name == container.name and s.state is ContainerState.EXITED
            for s in status.container_statuses
        )
        return exited_before and backoff(container.name)

    init_start: list[int] = []
    init_wait: list[int] = []
    for idx in plan.init_to_start:
        container = pod.spec.init_containers[idx]
        if waiting(container):
            init_wait.append(idx)
            plan.reasons.append(f"init container {container.name} is in back-off: not yet")
        else:
            init_start.append(idx)
    start: list[int] = []
    wait: list[int] = []
    for idx in plan.to_start:
        container = pod.spec.containers[idx]
        if waiting(container):
            wait.append(idx)
            plan.reasons.append(f"container {container.name} is in back-off: not yet")
        else:
            start.append(idx)
    return PodActions(
        kill_pod=plan.kill_pod,
        create_sandbox=plan.create_sandbox,
        sandbox_id=plan.sandbox_id,
        attempt=plan.attempt,
        init_containers_to_start=tuple(init_start),
        containers_to_start=tuple(start),
        containers_to_kill=dict(plan.to_kill),
        init_containers_in_backoff=tuple(init_wait),
        containers_in_backoff=tuple(wait),
        reasons=tuple(plan.reasons),
    )
