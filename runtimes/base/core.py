"""The CRI semantics every bundled runtime shares, whatever backend runs its containers.

The simulated, native and Docker-backed servers each keep only their backend
(memory, runc under conmon, dockerd); what the CRI itself decides lives here,
once, with the messages the kubelet and ``crictl`` users see:

* **lookup**: a sandbox or container by full id or unique id prefix, and the
  ``NotFound`` it is otherwise (:class:`Missing`);
* **list filters**: ListPodSandbox / ListContainers over a table of objects, a
  ``pod_sandbox_id`` prefix resolved as containerd and CRI-O resolve it;
* **idempotent stop and remove**: :func:`idempotent` turns "that object is not
  there" into success, as the CRI asks of StopPodSandbox, RemovePodSandbox,
  StopContainer and RemoveContainer;
* **preconditions**: a sandbox must be ready, a container created (to start) or
  running (to exec, attach, reopen its log), an exec must have a command;
* **exits**: the state an exited container records and its reason
  (``Completed``, ``Error``, ``OOMKilled``, ``StartError``).

Name reservation (a pod or container name held by one id) is in
:mod:`runtimes.base.names`.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Final, TypeVar, cast

from minikubelet.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from runtimes.base import model as m

#: What the messages call the two kinds of objects.
SANDBOX: Final = "pod sandbox"
CONTAINER: Final = "container"

#: Container status reasons, as containerd and CRI-O report them.
COMPLETED: Final = "Completed"
ERROR: Final = "Error"
OOM_KILLED: Final = "OOMKilled"
START_ERROR: Final = "StartError"

#: The exit code of a container that never started (128, as containerd records it).
EXIT_START_ERROR: Final = 128

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Coroutine[Any, Any, None]])


def new_id() -> str:
    """A fresh sandbox or container id: 64 hex digits, as containerd and CRI-O make them."""
    return secrets.token_hex(32)


# -- lookup ----------------------------------------------------------------------------------


class Missing(NotFound):
    """The sandbox or container ``object_id`` is not there (a NotFound that says which)."""

    def __init__(self, kind: str, object_id: str) -> None:
        super().__init__(f"{kind} {object_id!r} not found")
        self.kind = kind
        self.object_id = object_id


def could_be_id(key: str) -> bool:
    """Whether ``key`` may name an object at all: a full id, or a prefix that
    :func:`~runtimes.base.model.find_by_id` would try (for backends that look ids up
    elsewhere, such as dockerd)."""
    return m.MIN_ID_PREFIX <= len(key) <= m.ID_LENGTH


def lookup(table: Mapping[str, _T], object_id: str, kind: str) -> _T:
    """The object by full id or unique id prefix; :class:`Missing` otherwise."""
    found = m.find_by_id(table, object_id)
    if found is None:
        raise Missing(kind, object_id)
    return found


def get_sandbox(table: Mapping[str, m.PodSandbox], sandbox_id: str) -> m.PodSandbox:
    return lookup(table, sandbox_id, SANDBOX)


def get_container(table: Mapping[str, m.Container], container_id: str) -> m.Container:
    return lookup(table, container_id, CONTAINER)


# -- list filters ----------------------------------------------------------------------------


def filter_sandboxes(
    table: Mapping[str, m.PodSandbox],
    f: m.SandboxFilter,
    candidates: Iterable[m.PodSandbox] | None = None,
) -> list[m.PodSandbox]:
    """ListPodSandbox: the one sandbox the filter's id names, or else ``candidates``
    (all of ``table`` by default; a runtime may narrow them with an index), that match
    the filter's state and labels."""
    if f.id:
        found = m.find_by_id(table, f.id)
        pool: Iterable[m.PodSandbox] = [found] if found is not None else []
    else:
        pool = table.values() if candidates is None else candidates
    return [s for s in pool if m.sandbox_matches(s, f)]


def filter_containers(
    table: Mapping[str, m.Container],
    f: m.ContainerFilter,
    candidates: Iterable[m.Container] | None = None,
) -> list[m.Container]:
    """ListContainers, as :func:`filter_sandboxes`; resolve a ``pod_sandbox_id`` prefix
    first with :func:`resolve_sandbox_prefix`."""
    if f.id:
        found = m.find_by_id(table, f.id)
        pool: Iterable[m.Container] = [found] if found is not None else []
    else:
        pool = table.values() if candidates is None else candidates
    if f.state is None and not f.label_selector and not f.pod_sandbox_id:
        return list(pool)  # nothing to match: thousands of containers stay cheap
    return [c for c in pool if m.container_matches(c, f)]


def resolve_sandbox_prefix(
    f: m.ContainerFilter, sandboxes: Mapping[str, m.PodSandbox]
) -> m.ContainerFilter:
    """The filter with its ``pod_sandbox_id`` prefix replaced by the full id it names.

    containerd and CRI-O resolve it the way they resolve the container id; an id
    that names no sandbox is left as it is (and then matches only its exact self).
    """
    if not f.pod_sandbox_id or f.pod_sandbox_id in sandboxes:
        return f
    found = m.find_by_id(sandboxes, f.pod_sandbox_id)
    return f if found is None else replace(f, pod_sandbox_id=found.id)


# -- idempotent stop and remove ----------------------------------------------------------------


def idempotent(method: _F) -> _F:
    """Stop or remove ``object_id`` (the first argument): success when it is not there.

    The CRI asks this of StopPodSandbox, RemovePodSandbox, StopContainer and
    RemoveContainer: the kubelet retries them, and a second call must not fail.
    Only the :class:`Missing` of the object asked for is success; any other
    NotFound on the way (another object, the backend) still fails the call.
    """

    @functools.wraps(method)
    async def wrapper(self: object, object_id: str, *args: Any, **kwargs: Any) -> None:
        try:
            await method(self, object_id, *args, **kwargs)
        except Missing as exc:
            if exc.object_id != object_id:
                raise

    return cast(_F, wrapper)


# -- new records -------------------------------------------------------------------------------


def created_container(
    container_id: str,
    sandbox_id: str,
    spec: m.ContainerSpec,
    image: m.Image,
    image_name: str,
    *,
    created_at: int,
    log_path: str,
) -> m.Container:
    """The record of a container just created from ``image`` (found as ``image_name``)."""
    return m.Container(
        id=container_id,
        sandbox_id=sandbox_id,
        spec=spec,
        image_ref=image.id,
        image_name=image_name,
        repo_digest=image.repo_digests[0] if image.repo_digests else "",
        state=m.ContainerState.CREATED,
        created_at=created_at,
        log_path=log_path,
    )


# -- preconditions -------------------------------------------------------------------------


def sandbox_not_ready(sandbox_id: str) -> FailedPrecondition:
    return FailedPrecondition(f"{SANDBOX} {sandbox_id} is not ready")


def container_not_running(container_id: str) -> FailedPrecondition:
    return FailedPrecondition(f"{CONTAINER} {container_id} is not running")


def require_ready(sandbox: m.PodSandbox) -> m.PodSandbox:
    """The sandbox, if it is ready (containers are created and started only in one)."""
    if sandbox.state is not m.SandboxState.READY:
        raise sandbox_not_ready(sandbox.id)
    return sandbox


def require_running(container: m.Container) -> m.Container:
    """The container, if it runs (exec, attach, reopening its log)."""
    if container.state is not m.ContainerState.RUNNING:
        raise container_not_running(container.id)
    return container


def require_created(container: m.Container) -> m.Container:
    """The container, if it was created and never started (StartContainer)."""
    if container.state is not m.ContainerState.CREATED:
        raise FailedPrecondition(
            f"{CONTAINER} {container.id} is in state {container.state.name}, not CREATED"
        )
    return container


def require_serving(serving: bool, runtime: str) -> None:
    """A runtime whose background tasks (processes, log copiers) are not running yet
    cannot start containers."""
    if not serving:
        raise FailedPrecondition(f"the {runtime} runtime is not running")


def require_command(cmd: Sequence[str]) -> list[str]:
    """An exec's command, which must not be empty."""
    if not cmd:
        raise InvalidArgument("exec: empty command")
    return list(cmd)


def exec_timed_out(cmd: Sequence[str], timeout: int, container_id: str) -> DeadlineExceeded:
    """ExecSync's command outlived its timeout (the process is killed)."""
    return DeadlineExceeded(
        f"command {list(cmd)} timed out after {timeout}s in {CONTAINER} {container_id}"
    )


def image_not_pulled(image: str) -> NotFound:
    """CreateContainer with an image the runtime does not have: the kubelet pulls first."""
    return NotFound(f"image {image!r} not found: pull it first")


# -- exits ------------------------------------------------------------------------------------


def signal_exit_code(signal_number: int) -> int:
    """The exit code a shell (and the CRI) reports for a process a signal ended: 128 + N."""
    return 128 + signal_number


def exit_reason(exit_code: int, *, oom_killed: bool = False) -> str:
    """ContainerStatus.reason of an exited container, as containerd and CRI-O give it."""
    if oom_killed:
        return OOM_KILLED
    return COMPLETED if exit_code == 0 else ERROR


def mark_started(container: m.Container, started_at: int, pid: int) -> None:
    """Record that the container's process runs."""
    container.state = m.ContainerState.RUNNING
    container.started_at = started_at
    container.pid = pid
    container.generation += 1


def mark_exited(
    container: m.Container, exit_code: int, finished_at: int, *, oom_killed: bool = False
) -> None:
    """Record the container's exit: state, code, time and reason; it has no process."""
    container.state = m.ContainerState.EXITED
    container.exit_code = exit_code
    container.finished_at = finished_at
    container.reason = exit_reason(exit_code, oom_killed=oom_killed)
    container.pid = 0
    container.generation += 1


def has_exited(container: m.Container) -> bool:
    """Read after an await: another task may have recorded the exit meanwhile."""
    return container.state is m.ContainerState.EXITED


# -- log files -------------------------------------------------------------------------------


def create_log_file(path: str) -> None:
    """Create the container's log file (and its directory) so readers find it at once.

    Blocking: run it in a thread.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640))
